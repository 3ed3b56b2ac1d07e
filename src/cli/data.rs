//! `ahtsgd data check DIR` and `ahtsgd data fetch KIND`, and the fetching of `download = true`
//! datasets before a run.

use ahtsgd::data::fetch::{self, Progress};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};

#[derive(clap::Subcommand, Debug)]
pub enum DataCommand {
    /// Find the official datasets in a folder and the folders below it, verify their
    /// checksums and load them
    Check {
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Download a dataset's official files, verified against the published sums, and print
    /// the recipe line that uses them
    Fetch {
        #[arg(value_parser = ["mnist", "fashion_mnist", "cifar10", "svhn"])]
        dataset: String,
        /// Folder to fetch into (default: the cache folder `download = true` uses,
        /// $AHTSGD_CACHE or ~/.cache/ahtsgd, then the dataset's name)
        #[arg(long, value_name = "DIR")]
        to: Option<PathBuf>,
        /// A base URL to download from instead of the official locations, tried in the order
        /// given (repeatable; `{dataset}` in it stands for the dataset's name); also read from
        /// $AHTSGD_DATA_MIRRORS
        #[arg(long, value_name = "URL")]
        mirror: Vec<String>,
        /// No progress bar
        #[arg(long)]
        quiet: bool,
    },
}

pub fn run(cmd: DataCommand) -> i32 {
    let (dir, json) = match cmd {
        DataCommand::Check { dir, json } => (dir, json),
        DataCommand::Fetch {
            dataset,
            to,
            mirror,
            quiet,
        } => return fetch_command(&dataset, to, mirror, quiet),
    };
    if !dir.is_dir() {
        eprintln!("error: {} is not a folder", dir.display());
        return 2;
    }
    let found = ahtsgd::data::inspect_tree(&dir);
    if found.is_empty() {
        eprintln!(
            "{}: no MNIST/Fashion-MNIST IDX files, CIFAR-10 batches or SVHN .mat files found\n  help: the official file names are expected (train-images-idx3-ubyte[.gz], cifar-10-binary.tar.gz or data_batch_1.bin.., train_32x32.mat)",
            dir.display()
        );
        return 1;
    }
    let mut failed = false;
    for f in &found {
        failed |= f.result.is_err();
        if json {
            let result = match &f.result {
                Ok((a, b)) => serde_json::json!({"train": a, "test": b}),
                Err(e) => serde_json::json!({"error": e}),
            };
            println!(
                "{}",
                serde_json::json!({"dataset": f.dataset, "file": f.file, "checksum": f.checksum, "result": result})
            );
        } else {
            let result = match &f.result {
                Ok((a, b)) => format!("loads: {a} train / {b} test"),
                Err(e) => format!("does not load: {e}"),
            };
            println!(
                "{:<28} {}\n    {}; {}",
                f.dataset, f.file, f.checksum, result
            );
        }
    }
    i32::from(failed)
}

/// The sources to try: the mirrors given (flags, then the environment), or where none is
/// given, the official locations.
fn sources(kind: &str, mut mirrors: Vec<String>) -> Vec<String> {
    mirrors.extend(fetch::mirrors_from_env());
    if mirrors.is_empty() {
        fetch::remote(kind)
            .map(|r| r.canonical.iter().map(|s| s.to_string()).collect())
            .unwrap_or_default()
    } else {
        mirrors
    }
}

fn fetch_command(kind: &str, to: Option<PathBuf>, mirrors: Vec<String>, quiet: bool) -> i32 {
    let dir = to.unwrap_or_else(|| fetch::default_dir(kind));
    match download(kind, &dir, mirrors, quiet) {
        Ok(()) => {
            let shown = dir.display().to_string();
            println!(
                "dataset {kind} = {kind} {{ path = {} }}",
                serde_json::Value::String(shown)
            );
            if dir == fetch::default_dir(kind) {
                eprintln!(
                    "(this is the cache folder: `{kind} {{ download = true }}` without a path uses it too)"
                );
            }
            0
        }
        Err(()) => 1,
    }
}

/// Fetches `kind` into `dir` with a progress bar on a terminal (lines otherwise), saying what
/// was fetched; errors are printed.
fn download(kind: &str, dir: &Path, mirrors: Vec<String>, quiet: bool) -> Result<(), ()> {
    let sources = sources(kind, mirrors);
    let interactive = !quiet && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut bar: Option<ProgressBar> = None;
    let style = ProgressStyle::with_template(
        "{prefix} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    let say = |bar: &Option<ProgressBar>, line: String| match bar {
        Some(b) => b.suspend(|| eprintln!("{line}")),
        None => eprintln!("{line}"),
    };
    let result = fetch::fetch(kind, dir, &sources, &mut |p| match p {
        Progress::Waiting { lock } => say(
            &bar,
            format!(
                "waiting for another fetch into {} to finish ({} is locked)",
                dir.display(),
                lock.display()
            ),
        ),
        Progress::Present { file } => {
            if !quiet {
                say(
                    &bar,
                    format!("{file}: already there, matches its published sum"),
                );
            }
        }
        Progress::Started {
            file,
            url,
            offset,
            total,
        } => {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
            if interactive {
                let b = ProgressBar::new(total.unwrap_or(0));
                b.set_style(style.clone());
                b.set_prefix(file.to_string());
                b.set_position(offset);
                bar = Some(b);
            }
            if !quiet {
                let from = if offset > 0 {
                    format!(" (resuming at byte {offset})")
                } else {
                    String::new()
                };
                say(&bar, format!("{file}: downloading {url}{from}"));
            }
        }
        Progress::Advanced { done, .. } => {
            if let Some(b) = &bar {
                b.set_position(done);
            }
        }
        Progress::Failed { file, url, reason } => say(&bar, format!("{file}: {url}: {reason}")),
        Progress::Verified { file } => {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
            if !quiet {
                eprintln!("{file}: verified against the published SHA-256");
            }
        }
    });
    if let Some(b) = bar.take() {
        b.finish_and_clear();
    }
    match result {
        Ok(files) => {
            let new = files.iter().filter(|f| f.downloaded).count();
            let mut notes: Vec<&str> = files.iter().filter_map(|f| f.note.as_deref()).collect();
            notes.dedup();
            for note in notes {
                eprintln!("warning: {}: {note}", dir.display());
            }
            if !quiet {
                eprintln!(
                    "{kind}: {new} file{} downloaded, {} already there, in {}",
                    if new == 1 { "" } else { "s" },
                    files.len() - new,
                    dir.display()
                );
            }
            Ok(())
        }
        Err(e) => {
            let help = match &e {
                fetch::FetchError::AllFailed { .. } => format!(
                    "\n  help: check the network, or give a mirror that holds the files: --mirror URL (or ${})",
                    fetch::MIRRORS_VAR
                ),
                _ => String::new(),
            };
            eprintln!("error: fetching {kind}: {e}{help}");
            Err(())
        }
    }
}

/// The `download = true` datasets of these trials whose files are missing: (kind, folder,
/// missing files), each folder once (and looked at once, however many trials read it).
pub fn unfetched(
    trials: &[&ahtsgd::plan::Trial],
) -> Vec<(&'static str, PathBuf, Vec<&'static str>)> {
    let mut targets: Vec<(&'static str, PathBuf)> = Vec::new();
    for t in trials {
        if let Some(target) =
            ahtsgd::check::data::lower(t.config.obj("data")).and_then(|s| s.download_target())
            && !targets.contains(&target)
        {
            targets.push(target);
        }
    }
    targets
        .into_iter()
        .filter_map(|(kind, dir)| {
            let missing = fetch::missing(fetch::remote(kind)?, &dir);
            (!missing.is_empty()).then_some((kind, dir, missing))
        })
        .collect()
}

/// Fetches what the `download = true` datasets of these trials miss, before they start.
/// Returns false (having said why) when a fetch failed.
pub fn ensure_downloads(trials: &[&ahtsgd::plan::Trial], quiet: bool) -> bool {
    for (kind, dir, missing) in unfetched(trials) {
        eprintln!(
            "{kind} (download = true): fetching {} into {}",
            missing.join(", "),
            dir.display()
        );
        if download(kind, &dir, Vec::new(), quiet).is_err() {
            return false;
        }
    }
    true
}
