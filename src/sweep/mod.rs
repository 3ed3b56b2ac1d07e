//! Sweeps: the trials of a run directory and how they are run (the journal, child processes,
//! cluster launchers), comparisons across seeds and the summary files of an experiment.

pub mod jobs;
pub mod journal;
pub mod launch;
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

/// Every experiment under a run directory with at least one finished trial (a trial folder
/// holding `summary.json`), in name order. Written by `run`, `--jobs`, shards or array jobs.
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
