//! Sweeps: the trials of a run directory and how they are run (the journal, child processes,
//! cluster launchers), comparisons across seeds and the summary files of an experiment.

pub mod jobs;
pub mod journal;
pub mod launch;
pub mod lock;
pub mod stats;
pub mod summary;

use crate::train::record::{self, Summary};
use std::path::{Path, PathBuf};

/// The finished trials of one experiment in a run directory.
#[derive(Clone, Debug)]
pub struct Finished {
    pub experiment: String,
    /// `DIR/<experiment>`.
    pub dir: PathBuf,
    /// The experiment's `baseline` arm, read from a trial's `resolved.aht` (empty if none).
    pub baseline: String,
    /// Trial folders with their summaries, in trial order.
    pub trials: Vec<(PathBuf, Summary)>,
}

impl Finished {
    pub fn summaries(&self) -> Vec<&Summary> {
        self.trials.iter().map(|(_, s)| s).collect()
    }

    /// The comparison of `summary.md`.
    pub fn compare(&self) -> summary::Comparison {
        summary::compare(&self.experiment, &self.summaries(), &self.baseline)
    }
}

/// Every experiment under a run directory with at least one finished trial (a numbered trial
/// folder holding `summary.json`), in name order. Written by `run`, `--jobs`, shards or array
/// jobs. Other folders (`reruns`, a `report`, copies) are not trials of the experiment and are
/// not counted.
pub fn finished(dir: &Path) -> std::io::Result<Vec<Finished>> {
    let mut out = Vec::new();
    let mut experiments: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    experiments.sort();
    for e in experiments {
        let mut trials: Vec<PathBuf> = std::fs::read_dir(&e)?
            .flatten()
            .filter(|t| trial_number(&t.file_name().to_string_lossy()).is_some())
            .map(|t| t.path())
            .filter(|p| p.join("summary.json").exists())
            .collect();
        trials.sort();
        let trials: Vec<(PathBuf, Summary)> = trials
            .into_iter()
            .filter_map(|t| record::read_summary(&t).map(|s| (t, s)))
            .collect();
        let Some((first, _)) = trials.first() else {
            continue;
        };
        let checked = crate::check::check_file(&first.join("resolved.aht"), &Default::default());
        let baseline = checked
            .plan
            .map(|p| p.trials[0].config.str("baseline").to_string())
            .unwrap_or_default();
        out.push(Finished {
            experiment: e
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            dir: e,
            baseline,
            trials,
        });
    }
    Ok(out)
}

/// The record folder of trial `index` of `experiment`: `RUN_DIR/<experiment>/trial-NNNN`.
pub fn trial_dir(run_dir: &Path, experiment: &str, index: usize) -> PathBuf {
    run_dir.join(experiment).join(format!("trial-{index:04}"))
}

/// The number of a trial folder's name (`trial-0012` -> 12); `None` for any other name.
pub fn trial_number(name: &str) -> Option<usize> {
    let digits = name.strip_prefix("trial-")?;
    if digits.len() < 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Where `ahtsgd rerun` writes a rerun of a trial folder by default:
/// `RUN_DIR/<experiment>/reruns/trial-NNNN-K`, with the first K not yet taken, so that reruns
/// are never taken for trials of the experiment.
pub fn rerun_dir(trial_dir: &Path) -> PathBuf {
    let name = trial_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "trial".into());
    let parent = trial_dir.parent().unwrap_or(Path::new("."));
    let reruns = parent.join("reruns");
    (1..)
        .map(|k| reruns.join(format!("{name}-{k}")))
        .find(|p| !p.exists())
        .expect("an unused name")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_numbered_folders_are_trials() {
        assert_eq!(trial_number("trial-0000"), Some(0));
        assert_eq!(trial_number("trial-12345"), Some(12345));
        for other in [
            "trial-0000-rerun",
            "trial-12",
            "reruns",
            "trial-00a1",
            "trial-",
        ] {
            assert_eq!(trial_number(other), None, "{other}");
        }
    }

    #[test]
    fn reruns_go_beside_the_trials_under_reruns_and_never_overwrite() {
        let tmp = tempfile::tempdir().unwrap();
        let trial = tmp.path().join("e/trial-0003");
        let first = rerun_dir(&trial);
        assert_eq!(first, tmp.path().join("e/reruns/trial-0003-1"));
        std::fs::create_dir_all(&first).unwrap();
        assert_eq!(rerun_dir(&trial), tmp.path().join("e/reruns/trial-0003-2"));
    }
}
