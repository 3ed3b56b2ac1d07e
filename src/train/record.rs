//! The run record of one trial: recipe.aht, resolved.aht, metrics.jsonl, timing.jsonl, summary.json.

use crate::optim::Telemetry;
use crate::plan::Trial;
use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One line of metrics.jsonl (fields absent when they do not apply).
#[derive(Serialize, Default)]
pub struct MetricLine {
    pub step: u64,
    pub epoch: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_accuracy: Option<f64>,
    /// On the whole training split (modular tasks: the gap to the test accuracy is grokking).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_accuracy: Option<f64>,
    /// `exp(test_loss)`, the test loss being nats per token (language models).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_perplexity: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lambda_max: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sharpness_ema: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grad_norm: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noise_norm: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noise_clipped: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
}

impl MetricLine {
    pub fn train(step: u64, epoch: f64, loss: f64, t: &Telemetry) -> Self {
        MetricLine {
            step,
            epoch,
            train_loss: Some(loss),
            alpha: Some(t.alpha),
            lambda_max: t.lambda_max,
            sharpness_ema: t.sharpness_ema,
            grad_norm: Some(t.grad_norm),
            noise_norm: Some(t.noise_norm),
            noise_clipped: Some(t.noise_clipped),
            lr: Some(t.lr),
            ..Default::default()
        }
    }

    pub fn eval(step: u64, epoch: f64, s: &Scores) -> Self {
        MetricLine {
            step,
            epoch,
            test_loss: Some(s.test_loss),
            test_accuracy: Some(s.test_accuracy),
            train_accuracy: s.train_accuracy,
            test_perplexity: s.test_perplexity,
            ..Default::default()
        }
    }
}

/// What an evaluation measured.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Scores {
    /// Mean cross-entropy per row read (per token, for a language model), in nats.
    pub test_loss: f64,
    /// Over the rows read (every position, for a language model).
    pub test_accuracy: f64,
    /// On the whole training split, where the data asks for it (modular tasks).
    pub train_accuracy: Option<f64>,
    /// `exp(test_loss)`, for data with a target at every position.
    pub test_perplexity: Option<f64>,
}

/// One line of timing.jsonl.
#[derive(Serialize)]
pub struct TimingLine {
    pub step: u64,
    pub wall_seconds: f64,
    pub steps_per_s: f64,
}

/// Test metrics at one evaluation.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct EvalPoint {
    pub test_accuracy: f64,
    pub test_loss: f64,
    pub epoch: f64,
    /// See [`Scores`]; absent for data without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_accuracy: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_perplexity: Option<f64>,
}

/// Seconds a trial spent in each part of its work (kept across resumes, in the checkpoint).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq)]
pub struct TimeSplit {
    /// Training steps (batches, passes and updates), sharpness aside.
    #[serde(default)]
    pub train_seconds: f64,
    /// Estimating sharpness (power iteration, Hutchinson).
    #[serde(default)]
    pub sharpness_seconds: f64,
    /// Evaluating on the test split.
    #[serde(default)]
    pub eval_seconds: f64,
}

/// summary.json
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Summary {
    pub experiment: String,
    pub trial: usize,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diverged_at_step: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    pub seed: u64,
    pub threads: usize,
    pub device: String,
    pub dtype: String,
    pub optimizer: String,
    #[serde(rename = "final")]
    pub final_: Option<EvalPoint>,
    pub best: Option<EvalPoint>,
    /// Evaluations in order (for early-epoch comparisons).
    pub evals: Vec<EvalPoint>,
    pub steps: u64,
    pub resolved_hash: String,
    pub ahtsgd_version: String,
    pub candle_version: String,
    /// The α-stable kernel the noise was drawn with ([`crate::optim::stable::KERNEL`]); empty
    /// in records from builds before it was kept.
    #[serde(default)]
    pub noise_kernel: String,
    /// Wall-clock seconds from start to end, loading and evaluation included.
    pub wall_seconds: f64,
    pub steps_per_s: f64,
    /// Where the time went: training, sharpness estimation, evaluation.
    #[serde(flatten)]
    pub time: TimeSplit,
    /// Optimizer steps in an epoch (full batches).
    #[serde(default)]
    pub steps_per_epoch: u64,
    /// Classes of the task (for the "did not learn" rule: chance accuracy is 1/classes).
    #[serde(default)]
    pub classes: usize,
    /// Training loss at the first step and at the last.
    #[serde(default)]
    pub first_train_loss: Option<f64>,
    #[serde(default)]
    pub last_train_loss: Option<f64>,
    /// The steps this trial was resumed from, in order (empty for a trial that ran in one go).
    #[serde(default)]
    pub resumed_from: Vec<u64>,
    /// The trial's sweep values, (site path, recipe text), as `plan` lists them.
    #[serde(default)]
    pub choices: Vec<(String, String)>,
    /// What `lambda_max` in `metrics.jsonl` measures: `power_iteration` (the top eigenvalue)
    /// or `hutchinson` (the mean eigenvalue tr(H)/d); empty without sharpness estimation and
    /// in records from before it was kept (the report then reads `resolved.aht`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sharpness_estimator: String,
}

impl Summary {
    /// The sweep values that make this trial's arm (see [`context`]).
    pub fn context(&self) -> Vec<(String, String)> {
        context(&self.experiment, &self.optimizer, &self.choices)
    }

    /// The arm's name (see [`arm`]).
    pub fn arm(&self) -> String {
        arm(&self.experiment, &self.optimizer, &self.choices)
    }

    pub fn new(trial: &Trial, resolved: &str, threads: usize, dev: &Device, dtype: DType) -> Self {
        let opt = trial.config.obj("optimizer");
        Summary {
            experiment: trial.experiment.clone(),
            trial: trial.index,
            status: "completed".into(),
            seed: trial.config.f64("seed") as u64,
            threads,
            device: if dev.is_cpu() {
                "cpu".into()
            } else {
                "cuda".into()
            },
            dtype: format!("{dtype:?}").to_lowercase(),
            optimizer: opt.decl.clone().unwrap_or_else(|| opt.kind.to_string()),
            resolved_hash: sha256(resolved),
            ahtsgd_version: env!("CARGO_PKG_VERSION").into(),
            candle_version: "0.11".into(),
            noise_kernel: crate::optim::stable::KERNEL.into(),
            choices: trial.choices.clone(),
            ..Default::default()
        }
    }

    /// Seconds of training per epoch, sharpness estimation included and evaluation and loading
    /// left out; `None` before any step. Records from before the split was kept fall back to
    /// wall-clock seconds over epochs.
    pub fn train_seconds_per_epoch(&self) -> Option<f64> {
        if self.steps == 0 {
            return None;
        }
        let t = &self.time;
        if self.steps_per_epoch > 0 && t.train_seconds > 0.0 {
            let epochs = self.steps as f64 / self.steps_per_epoch as f64;
            return Some((t.train_seconds + t.sharpness_seconds) / epochs);
        }
        let epochs = self.final_.as_ref()?.epoch;
        (epochs > 0.0).then(|| self.wall_seconds / epochs)
    }

    /// A finished trial that learnt nothing: its last training loss within 1% of its first and
    /// its final test accuracy within 2 points of chance (1/classes). A result, not a success.
    pub fn did_not_learn(&self) -> bool {
        let (Some(first), Some(last), Some(fin)) = (
            self.first_train_loss,
            self.last_train_loss,
            self.final_.as_ref(),
        ) else {
            return false;
        };
        self.status == "completed"
            && self.classes > 0
            && (last - first).abs() <= 0.01 * first.abs()
            && (fin.test_accuracy - 1.0 / self.classes as f64).abs() <= 0.02
    }

    /// The first step at which an evaluation's test accuracy reached `target` (a fraction),
    /// if one did.
    pub fn step_reaching(&self, target: f64) -> Option<u64> {
        self.evals
            .iter()
            .find(|e| e.test_accuracy >= target)
            .map(|e| (e.epoch * self.steps_per_epoch as f64).round() as u64)
    }

    pub fn observe_eval(&mut self, epoch: f64, s: &Scores) {
        let acc = s.test_accuracy;
        let p = EvalPoint {
            test_accuracy: acc,
            test_loss: s.test_loss,
            epoch,
            train_accuracy: s.train_accuracy,
            test_perplexity: s.test_perplexity,
        };
        if self.best.as_ref().is_none_or(|b| acc > b.test_accuracy) {
            self.best = Some(p.clone());
        }
        self.final_ = Some(p.clone());
        self.evals.push(p);
    }
}

/// The sweep values that make a trial's arm: every choice but the seed and the optimizer,
/// keyed by path with a leading optimizer or experiment name dropped (`aht.lr` -> `lr`), so arms
/// of different optimizers line up for pairing.
pub fn context(
    experiment: &str,
    optimizer: &str,
    choices: &[(String, String)],
) -> Vec<(String, String)> {
    let seed = format!("{experiment}.seed");
    let opt = format!("{experiment}.optimizer");
    choices
        .iter()
        .filter(|(p, _)| *p != seed && *p != opt)
        .map(|(p, v)| {
            let key = [optimizer, experiment]
                .iter()
                .find_map(|d| p.strip_prefix(d).and_then(|r| r.strip_prefix('.')))
                .unwrap_or(p);
            (key.to_string(), v.clone())
        })
        .collect()
}

/// An arm's name: the optimizer, with the rest of its sweep values: `aht (lr=0.1)`.
pub fn arm(experiment: &str, optimizer: &str, choices: &[(String, String)]) -> String {
    let ctx = context(experiment, optimizer, choices);
    if ctx.is_empty() {
        return optimizer.to_string();
    }
    let parts: Vec<String> = ctx.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{optimizer} ({})", parts.join(", "))
}

pub fn sha256(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A record file that could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {file}: {source}")]
pub struct WriteError {
    pub file: String,
    pub source: std::io::Error,
}

impl WriteError {
    pub fn new(file: &Path, source: std::io::Error) -> Self {
        WriteError {
            file: file.display().to_string(),
            source,
        }
    }

    fn at(file: &Path) -> impl FnOnce(std::io::Error) -> WriteError + '_ {
        move |source| WriteError {
            file: file.display().to_string(),
            source,
        }
    }

    /// Whether the disk (or a quota) is full.
    pub fn disk_full(&self) -> bool {
        self.source.raw_os_error() == Some(libc::ENOSPC)
            || self.source.raw_os_error() == Some(libc::EDQUOT)
    }
}

/// Writes one trial's folder.
pub struct Recorder {
    dir: PathBuf,
    metrics: std::io::BufWriter<std::fs::File>,
    timing: std::io::BufWriter<std::fs::File>,
}

impl Recorder {
    /// Starts the records of a trial; with `resume_at`, keeps the lines up to that step and
    /// appends after them (what came after the checkpoint is written again, identically).
    pub fn create(
        dir: &Path,
        recipe: &str,
        resolved: &str,
        resume_at: Option<u64>,
    ) -> Result<Self, WriteError> {
        std::fs::create_dir_all(dir).map_err(WriteError::at(dir))?;
        for (name, text) in [("recipe.aht", recipe), ("resolved.aht", resolved)] {
            let path = dir.join(name);
            crate::fsutil::write_atomic(&path, text.as_bytes()).map_err(WriteError::at(&path))?;
        }
        let open = |n: &str| -> Result<std::io::BufWriter<std::fs::File>, WriteError> {
            let path = dir.join(n);
            let kept: String = match resume_at {
                Some(step) => std::fs::read_to_string(&path)
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| {
                        serde_json::from_str::<serde_json::Value>(l)
                            .ok()
                            .and_then(|v| v["step"].as_u64())
                            .is_some_and(|s| s <= step)
                    })
                    .map(|l| format!("{l}\n"))
                    .collect(),
                None => String::new(),
            };
            crate::fsutil::write_atomic(&path, kept.as_bytes()).map_err(WriteError::at(&path))?;
            let f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(WriteError::at(&path))?;
            Ok(std::io::BufWriter::new(f))
        };
        Ok(Recorder {
            dir: dir.to_path_buf(),
            metrics: open("metrics.jsonl")?,
            timing: open("timing.jsonl")?,
        })
    }

    fn line(
        out: &mut std::io::BufWriter<std::fs::File>,
        path: &Path,
        value: &impl Serialize,
    ) -> Result<(), WriteError> {
        let mut text = serde_json::to_string(value)
            .map_err(std::io::Error::other)
            .map_err(WriteError::at(path))?;
        text.push('\n');
        crate::fsutil::charge(text.len()).map_err(WriteError::at(path))?;
        out.write_all(text.as_bytes()).map_err(WriteError::at(path))
    }

    pub fn metric(&mut self, m: &MetricLine) -> Result<(), WriteError> {
        Self::line(&mut self.metrics, &self.dir.join("metrics.jsonl"), m)
    }

    pub fn timing(&mut self, t: &TimingLine) -> Result<(), WriteError> {
        Self::line(&mut self.timing, &self.dir.join("timing.jsonl"), t)
    }

    /// Pushes buffered lines to disk (before a checkpoint, so records and checkpoint agree).
    pub fn flush(&mut self) -> Result<(), WriteError> {
        self.metrics
            .flush()
            .map_err(WriteError::at(&self.dir.join("metrics.jsonl")))?;
        self.timing
            .flush()
            .map_err(WriteError::at(&self.dir.join("timing.jsonl")))
    }

    pub fn finish(mut self, s: &Summary) -> Result<(), WriteError> {
        self.flush()?;
        let path = self.dir.join("summary.json");
        let json = serde_json::to_string_pretty(s)
            .map_err(std::io::Error::other)
            .map_err(WriteError::at(&path))?;
        crate::fsutil::write_atomic(&path, json.as_bytes()).map_err(WriteError::at(&path))
    }
}

/// The summary of a finished trial in `dir`, if there is one.
pub fn read_summary(dir: &Path) -> Option<Summary> {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).ok()?).ok()
}

/// Where two `metrics.jsonl` texts first part.
#[derive(Clone, Debug, PartialEq)]
pub enum MetricDifference {
    /// Line `line` (from 1), at `step`, differs first in `field` (`None` when only the set of
    /// fields differs or a line is not JSON); the values as written.
    Value {
        line: usize,
        step: Option<u64>,
        field: Option<String>,
        old: Option<String>,
        new: Option<String>,
    },
    /// One ends where the other goes on: after `common` equal lines.
    Length {
        common: usize,
        old: usize,
        new: usize,
    },
}

impl std::fmt::Display for MetricDifference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetricDifference::Value {
                line,
                step,
                field,
                old,
                new,
            } => {
                write!(f, "line {line}")?;
                if let Some(s) = step {
                    write!(f, " (step {s})")?;
                }
                match field {
                    Some(name) => write!(
                        f,
                        ": `{name}` was {} and is now {}",
                        old.as_deref().unwrap_or("absent"),
                        new.as_deref().unwrap_or("absent")
                    ),
                    None => write!(f, ": the lines differ"),
                }
            }
            MetricDifference::Length { common, old, new } => write!(
                f,
                "the first {common} lines agree, then the original has {old} lines and the rerun {new}"
            ),
        }
    }
}

/// The first difference between two `metrics.jsonl` texts, `None` when they are identical.
pub fn first_difference(old: &str, new: &str) -> Option<MetricDifference> {
    let (a, b): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    let Some(i) = a.iter().zip(&b).position(|(x, y)| x != y) else {
        return (a.len() != b.len()).then_some(MetricDifference::Length {
            common: a.len().min(b.len()),
            old: a.len(),
            new: b.len(),
        });
    };
    let parse = |l: &str| serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(l);
    let (x, y) = (parse(a[i]).ok(), parse(b[i]).ok());
    let step = x
        .as_ref()
        .or(y.as_ref())
        .and_then(|m| m.get("step"))
        .and_then(|s| s.as_u64());
    let mut field = None;
    if let (Some(x), Some(y)) = (&x, &y) {
        // in the order the old line wrote them, then fields only the new one has
        let names = x.keys().chain(y.keys().filter(|k| !x.contains_key(*k)));
        field = names
            .into_iter()
            .find(|k| x.get(*k) != y.get(*k))
            .map(|k| (k.clone(), x.get(k), y.get(k)));
    }
    let text = |v: Option<&serde_json::Value>| v.map(|v| v.to_string());
    Some(MetricDifference::Value {
        line: i + 1,
        step,
        old: field.as_ref().and_then(|f| text(f.1)),
        new: field.as_ref().and_then(|f| text(f.2)),
        field: field.map(|f| f.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_differing_metric_is_named_with_both_values() {
        let a = "{\"step\":1,\"train_loss\":1.0,\"alpha\":1.5}\n{\"step\":2,\"train_loss\":0.9,\"alpha\":1.5}\n";
        let b = "{\"step\":1,\"train_loss\":1.0,\"alpha\":1.5}\n{\"step\":2,\"train_loss\":0.9,\"alpha\":1.6}\n";
        assert_eq!(first_difference(a, a), None);
        let d = first_difference(a, b).unwrap();
        assert_eq!(
            d,
            MetricDifference::Value {
                line: 2,
                step: Some(2),
                field: Some("alpha".into()),
                old: Some("1.5".into()),
                new: Some("1.6".into()),
            }
        );
        assert_eq!(
            d.to_string(),
            "line 2 (step 2): `alpha` was 1.5 and is now 1.6"
        );
        let c = "{\"step\":1,\"train_loss\":1.0,\"alpha\":1.5}\n";
        assert_eq!(
            first_difference(a, c),
            Some(MetricDifference::Length {
                common: 1,
                old: 2,
                new: 1
            })
        );
        let extra = "{\"step\":1,\"train_loss\":1.0,\"alpha\":1.5,\"lr\":0.1}\n";
        assert!(
            first_difference(c, extra)
                .unwrap()
                .to_string()
                .contains("`lr` was absent and is now 0.1")
        );
    }
}
