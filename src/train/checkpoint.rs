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
    #[serde(default)]
    pub train_seconds: f64,
    #[serde(default)]
    pub sharpness_seconds: f64,
    #[serde(default)]
    pub eval_seconds: f64,
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

/// The latest checkpoint of a trial, if any.
pub fn load(
    trial_dir: &Path,
    device: &Device,
) -> candle_core::Result<Option<(HashMap<String, Tensor>, Meta)>> {
    let d = dir(trial_dir);
    let Ok(json) = std::fs::read(d.join("latest.json")) else {
        return Ok(None);
    };
    let meta: Meta = serde_json::from_slice(&json)
        .map_err(|e| candle_core::Error::Msg(format!("checkpoint metadata: {e}")))?;
    let tensors =
        candle_core::safetensors::load(d.join(format!("step-{}.safetensors", meta.step)), device)?;
    Ok(Some((tensors, meta)))
}

/// The final parameters of a completed trial (`checkpoints/final.safetensors`).
pub fn final_path(trial_dir: &Path) -> PathBuf {
    dir(trial_dir).join("final.safetensors")
}
