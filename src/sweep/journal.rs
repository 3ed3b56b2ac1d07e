//! The run directory's journal (`journal.jsonl`): one line each time a trial starts or ends,
//! appended in one write and synced, so concurrent writers do not interleave and a crash
//! leaves at most a missing last line.

use std::io::Write;
use std::path::Path;

/// The journal's file name inside a run directory.
pub const FILE: &str = "journal.jsonl";

/// Appends `{"trial", "experiment", "state", "pid", "host"}` to the run directory's journal,
/// naming the process that wrote it. A journal that cannot be written does not stop a trial:
/// the trial's own records are what count.
pub fn append(run_dir: &Path, trial: usize, experiment: &str, state: &str) {
    let line = serde_json::json!({
        "trial": trial,
        "experiment": experiment,
        "state": state,
        "pid": std::process::id(),
        "host": super::lock::host(),
    });
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(run_dir.join(FILE))
    {
        // one write call per line: `writeln!` formats in pieces, one write each, and pieces
        // from processes appending at once interleave into lines that are not JSON
        let _ = f.write_all(format!("{line}\n").as_bytes());
        let _ = f.sync_all();
    }
}
