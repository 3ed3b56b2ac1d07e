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

/// The recorded trials of one experiment in a run directory.
#[derive(Clone, Debug)]
pub struct Finished {
    pub experiment: String,
    /// `DIR/<experiment>`.
    pub dir: PathBuf,
    /// The experiment's `baseline` arm, read from a trial's `resolved.aht` (empty if none).
    pub baseline: String,
    /// Trial folders with their summaries (finished, diverged or interrupted), in trial order.
    pub trials: Vec<(PathBuf, Summary)>,
    /// The trials the plan has (`planned.json`), when the run wrote it.
    pub planned: Option<Vec<Planned>>,
}

impl Finished {
    pub fn summaries(&self) -> Vec<&Summary> {
        self.trials.iter().map(|(_, s)| s).collect()
    }

    /// The comparison of `summary.md`.
    pub fn compare(&self) -> summary::Comparison {
        summary::compare(
            &self.experiment,
            &self.summaries(),
            &self.baseline,
            self.planned.as_deref(),
        )
    }
}

/// One trial of the plan, as `planned.json` lists it: enough to say which arm lacks a record.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Planned {
    pub trial: usize,
    pub arm: String,
    pub seed: u64,
}

/// The file, in an experiment's folder, that lists the trials its plan has.
pub const PLANNED: &str = "planned.json";

/// Writes `DIR/<experiment>/planned.json` for every experiment of `plan` that `keep` selects,
/// listing all of its trials (also those this process will not run: shards and array tasks
/// share the folder), so that summaries can count the trials with no record.
pub fn write_planned(
    run_dir: &Path,
    plan: &crate::plan::Plan,
    keep: impl Fn(&str) -> bool,
) -> std::io::Result<()> {
    let mut by_exp: std::collections::BTreeMap<&str, PlannedFile> = Default::default();
    for t in &plan.trials {
        if !keep(&t.experiment) {
            continue;
        }
        let opt = t.config.obj("optimizer");
        let optimizer = opt.decl.clone().unwrap_or_else(|| opt.kind.to_string());
        let file = by_exp.entry(&t.experiment).or_insert_with(|| PlannedFile {
            baseline: t.config.str("baseline").to_string(),
            trials: Vec::new(),
        });
        file.trials.push(Planned {
            trial: t.index,
            arm: record::arm(&t.experiment, &optimizer, &t.choices),
            seed: t.config.f64("seed") as u64,
        });
    }
    for (exp, file) in by_exp {
        let dir = run_dir.join(exp);
        std::fs::create_dir_all(&dir)?;
        let json = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
        crate::fsutil::write_atomic(&dir.join(PLANNED), &json)?;
    }
    Ok(())
}

/// `planned.json`: the experiment's baseline and trials.
#[derive(serde::Serialize, serde::Deserialize)]
struct PlannedFile {
    baseline: String,
    trials: Vec<Planned>,
}

fn read_planned(exp_dir: &Path) -> Option<PlannedFile> {
    serde_json::from_slice(&std::fs::read(exp_dir.join(PLANNED)).ok()?).ok()
}

/// Every experiment under a run directory with a recorded trial (a numbered trial folder
/// holding `summary.json`) or a `planned.json`, in name order. Written by `run`, `--jobs`, shards or array
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
        let planned = read_planned(&e);
        if trials.is_empty() && planned.is_none() {
            continue;
        }
        let baseline = match (&planned, trials.first()) {
            (Some(p), _) => p.baseline.clone(),
            (None, Some((first, _))) => {
                let checked =
                    crate::check::check_file(&first.join("resolved.aht"), &Default::default());
                checked
                    .plan
                    .map(|p| p.trials[0].config.str("baseline").to_string())
                    .unwrap_or_default()
            }
            (None, None) => String::new(),
        };
        out.push(Finished {
            experiment: e
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            dir: e,
            baseline,
            trials,
            planned: planned.map(|p| p.trials),
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

/// Whether a trial folder's recorded `resolved.aht` (`old`) describes `trial`: the same text,
/// or, written by an earlier build, the same trial once this build's checker has resolved it
/// again. A field added since with a default that keeps the old meaning is written out in
/// this build's `resolved.aht` and was not in the old one; the trial is still the one that ran.
pub fn record_describes(old: &str, trial: &crate::plan::Trial) -> bool {
    let new = trial.resolved_source();
    if old == new {
        return true;
    }
    let again = crate::check::check_text("resolved.aht", old, &Default::default());
    again
        .plan
        .is_some_and(|p| p.trials.len() == 1 && p.trials[0].resolved_source() == new)
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
