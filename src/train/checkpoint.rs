//! Checkpoints: parameters, optimizer state, the α controller and the records so far, written
//! atomically, so an interrupted trial continues to exactly the numbers of an uninterrupted one.
//! Tensors are named `param/<name>`, `buffer/<name>` (batch norm's running statistics),
//! `momentum/<name>`, `adam_m/<name>`, `adam_v/<name>` and `warm/<i>` (power iteration's start).
//! (Shuffling and noise are keyed by epoch and step, so nothing else needs saving.)

use super::record::EvalPoint;
use crate::optim::alpha::ControllerState;
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What a checkpoint holds besides tensors.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Meta {
    pub step: u64,
    pub controller: Option<ControllerState>,
    pub evals: Vec<EvalPoint>,
    pub best: Option<EvalPoint>,
    pub wall_seconds: f64,
    /// The steps earlier runs of this trial resumed from, in order.
    #[serde(default)]
    pub resumed_from: Vec<u64>,
    /// Seconds spent so far in training steps, sharpness estimation and evaluation.
    #[serde(flatten)]
    pub time: super::record::TimeSplit,
    /// The training loss at the first step.
    #[serde(default)]
    pub first_train_loss: Option<f64>,
}

fn dir(trial_dir: &Path) -> PathBuf {
    trial_dir.join("checkpoints")
}

/// Writes `checkpoints/latest.{safetensors,json}` (tensors first, metadata last, each renamed
/// into place, so a reader never sees a half-written pair).
pub fn save(
    trial_dir: &Path,
    tensors: &HashMap<String, Tensor>,
    meta: &Meta,
) -> candle_core::Result<()> {
    let d = dir(trial_dir);
    std::fs::create_dir_all(&d)?;
    let tmp = d.join(".latest.safetensors.tmp");
    candle_core::safetensors::save(tensors, &tmp)?;
    std::fs::rename(&tmp, d.join(format!("step-{}.safetensors", meta.step)))?;
    let json =
        serde_json::to_vec_pretty(meta).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    crate::fsutil::write_atomic(&d.join("latest.json"), &json)?;
    // older tensor files are no longer referenced
    if let Ok(entries) = std::fs::read_dir(&d) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("step-") && name != format!("step-{}.safetensors", meta.step) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}

/// Why a checkpoint could not be read: the file, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {what}")]
pub struct CheckpointError {
    pub file: String,
    pub what: String,
}

/// A checkpoint's tensors, by name, and its metadata.
pub type Loaded = (HashMap<String, Tensor>, Meta);

/// The latest checkpoint of a trial, if any.
pub fn load(trial_dir: &Path, device: &Device) -> Result<Option<Loaded>, CheckpointError> {
    let d = dir(trial_dir);
    let meta_path = d.join("latest.json");
    let Ok(json) = std::fs::read(&meta_path) else {
        return Ok(None);
    };
    let meta: Meta = serde_json::from_slice(&json).map_err(|e| CheckpointError {
        file: meta_path.display().to_string(),
        what: format!("not a checkpoint's metadata ({e}); the file is damaged"),
    })?;
    let tensors_path = d.join(format!("step-{}.safetensors", meta.step));
    let tensors =
        candle_core::safetensors::load(&tensors_path, device).map_err(|e| CheckpointError {
            file: tensors_path.display().to_string(),
            what: if tensors_path.exists() {
                format!("cannot be read as safetensors ({e}); it is truncated or damaged")
            } else {
                format!("is missing, though latest.json names step {}", meta.step)
            },
        })?;
    Ok(Some((tensors, meta)))
}

/// The final parameters of a completed trial (`checkpoints/final.safetensors`).
pub fn final_path(trial_dir: &Path) -> PathBuf {
    dir(trial_dir).join("final.safetensors")
}

/// The bytes the tensors take, about what their file will.
pub fn bytes(tensors: &HashMap<String, Tensor>) -> usize {
    tensors
        .values()
        .map(|t| t.elem_count() * t.dtype().size_in_bytes())
        .sum()
}

/// The I/O error inside a candle error (so a full disk is seen as one), or the error as text.
pub fn io_error(e: candle_core::Error) -> std::io::Error {
    match e {
        candle_core::Error::Io(io) => io,
        other => std::io::Error::other(other.to_string()),
    }
}
