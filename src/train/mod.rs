//! Running trials: lowering a checked trial to candle, training it, and recording everything.
//!
//! The library reports progress through [`Event`]s; the binary renders them.

pub mod checkpoint;
pub mod generate;
pub mod record;

use crate::data::{self, Dataset};
use crate::diagnostic::{Code, Diagnostic};
use crate::fsutil;
use crate::model::norm::Mode;
use crate::model::{self, Model};
use crate::optim::{self, AhtSgd, OptimError, sharpness};
use crate::plan::Trial;
use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
pub use record::Scores;
use record::{MetricLine, Recorder, Summary, TimingLine};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// The floating-point type a trial's `dtype` names.
fn dtype_of(c: &crate::plan::Obj) -> DType {
    if c.str("dtype") == "f64" {
        DType::F64
    } else {
        DType::F32
    }
}

/// The typed description of a trial's dataset.
fn data_spec(c: &crate::plan::Obj) -> Result<data::DataSpec, data::DataError> {
    let o = c.obj("data");
    crate::check::data::lower(o).ok_or_else(|| {
        data::DataError::Unsupported(format!(
            "the `{}` reader is not available in this build",
            o.kind
        ))
    })
}

/// The typed model for the loaded data: its stack, names and shapes.
fn model_spec(c: &crate::plan::Obj, data: &Dataset) -> Result<model::ModelSpec, model::ModelError> {
    model_spec_for(c, &data.sample_shape, data.classes)
}

/// [`model_spec`] for samples of `shape` and `classes` classes.
fn model_spec_for(
    c: &crate::plan::Obj,
    shape: &[usize],
    classes: usize,
) -> Result<model::ModelSpec, model::ModelError> {
    crate::check::model::lower_trial(c, shape, classes).map_err(|d| {
        model::ModelError::Shape(match d.help {
            Some(h) => format!("{} ({h})", d.message),
            None => d.message,
        })
    })
}

/// What the caller hears while a trial runs.
#[derive(Clone, Debug)]
pub enum Event {
    /// Something the user should know that did not stop the trial (a checksum mismatch).
    Warning { trial: usize, message: String },
    Started {
        trial: usize,
        steps: u64,
        /// The checkpoint's step when the trial continues from one.
        resumed_from: Option<u64>,
    },
    /// A logged training step; `epoch` is as `metrics.jsonl` writes it (epochs done before it).
    Step {
        trial: usize,
        step: u64,
        epoch: f64,
        loss: f64,
        alpha: f64,
    },
    /// An evaluation; `epoch` is epochs completed, as `metrics.jsonl` and `summary.json` write it.
    Evaluated {
        trial: usize,
        step: u64,
        epoch: f64,
        scores: Scores,
    },
}

/// Why a trial could not run (as opposed to a trial that diverged, which is a result).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("data: {0}")]
    Data(#[from] data::DataError),
    #[error("model: {0}")]
    Model(#[from] model::ModelError),
    #[error("device: {0}")]
    Device(String),
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("writing the run record: {0}")]
    Io(#[from] std::io::Error),
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    #[error("checkpoint {0}")]
    BadCheckpoint(#[from] checkpoint::CheckpointError),
    #[error("{0}")]
    Write(#[from] record::WriteError),
    #[error("generate: {0}")]
    Generate(String),
}

impl RunError {
    /// The diagnostic of a trial that could not run, at the declaration it concerns (the
    /// dataset, the model or the experiment), saying what to do.
    pub fn diagnostic(&self, trial: &Trial, plan: &crate::plan::Plan) -> Diagnostic {
        let (code, node, help) = match self {
            RunError::Data(_) => (
                Code::Data,
                "data",
                "fix or replace the file named above (`ahtsgd data check DIR` checks a folder), or the dataset's fields".to_string(),
            ),
            RunError::Model(_) => (
                Code::Run,
                "model",
                "fix the model or the data; other trials are unaffected".to_string(),
            ),
            RunError::BadCheckpoint(_) | RunError::Checkpoint(_) => (
                Code::Run,
                "experiment",
                "`--fresh` restarts this trial from step 0 (its records are removed: copy the trial folder first to keep them)".to_string(),
            ),
            RunError::Write(w) if w.disk_full() => (
                Code::Run,
                "experiment",
                "free some space and run the same command again: the trial resumes from its last checkpoint".to_string(),
            ),
            RunError::Write(_) => (
                Code::Run,
                "experiment",
                "make the run directory writable (or give another --out) and run the same command again".to_string(),
            ),
            _ => (
                Code::Run,
                "experiment",
                "fix the recipe or the data; other trials are unaffected".to_string(),
            ),
        };
        let span = match trial.config.fields.iter().find(|(n, _)| *n == node) {
            Some((_, crate::plan::Val::Obj(o))) => o.span,
            _ => plan
                .experiments
                .iter()
                .find(|x| x.name == trial.experiment)
                .map(|x| x.span)
                .unwrap_or_default(),
        };
        let label = match node {
            "data" => "while loading this dataset",
            "model" => "while building this model",
            _ => "while running this experiment",
        };
        Diagnostic::error(code, format!("trial {} failed: {self}", trial.index))
            .at(span, label)
            .help(help)
    }
}

/// Set from a Ctrl-C handler: the trial stops after the current step and records what it has.
pub static STOP: AtomicBool = AtomicBool::new(false);

/// The device a trial asks for.
pub fn device(name: &str) -> Result<Device, RunError> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" | "auto" => {
            #[cfg(feature = "cuda")]
            {
                match Device::new_cuda(0) {
                    Ok(d) => return Ok(d),
                    Err(e) if name == "cuda" => {
                        return Err(RunError::Device(format!("no usable CUDA device: {e}")));
                    }
                    Err(_) => return Ok(Device::Cpu),
                }
            }
            #[allow(unreachable_code)]
            if name == "auto" {
                Ok(Device::Cpu)
            } else {
                Err(RunError::Device("this build has no CUDA support: rebuild with `cargo build --release --features cuda` (see docs/gpu.md)".into()))
            }
        }
        other => Err(RunError::Device(format!("unknown device `{other}`"))),
    }
}

fn batch_tensor(
    d: &Dataset,
    x: &[f32],
    y: &[u32],
    idx: &[usize],
    dtype: DType,
    dev: &Device,
    buf: &mut Vec<f32>,
) -> candle_core::Result<(Tensor, Tensor)> {
    let len = d.sample_len();
    let k = d.labels_per_sample;
    buf.clear();
    let mut ys = Vec::with_capacity(idx.len() * k);
    for &i in idx {
        buf.extend_from_slice(&x[i * len..(i + 1) * len]);
        ys.extend_from_slice(&y[i * k..(i + 1) * k]);
    }
    let mut shape = vec![idx.len()];
    shape.extend(&d.sample_shape);
    let xt = Tensor::from_slice(buf, shape, dev)?.to_dtype(dtype)?;
    let yt = if k == 1 {
        Tensor::from_vec(ys, idx.len(), dev)?
    } else {
        Tensor::from_vec(ys, (idx.len(), k), dev)?
    };
    Ok((xt, yt))
}

/// A training batch with random crops (and flips when `flip`).
#[allow(clippy::too_many_arguments)]
fn train_batch_augmented(
    d: &Dataset,
    idx: &[usize],
    flip: bool,
    rng: &mut ChaCha8Rng,
    dtype: DType,
    dev: &Device,
    buf: &mut Vec<f32>,
) -> candle_core::Result<(Tensor, Tensor)> {
    let len = d.sample_len();
    buf.clear();
    for &i in idx {
        buf.extend_from_slice(&d.train_x[i * len..(i + 1) * len]);
    }
    if let [c, h, w] = d.sample_shape[..] {
        data::augment(buf, [idx.len(), c, h, w], 4, flip, rng);
    }
    let mut shape = vec![idx.len()];
    shape.extend(&d.sample_shape);
    let x = Tensor::from_slice(buf, shape, dev)?.to_dtype(dtype)?;
    let y = Tensor::from_vec(
        idx.iter().map(|&i| d.train_y[i]).collect::<Vec<u32>>(),
        idx.len(),
        dev,
    )?;
    Ok((x, y))
}

/// Mean loss and accuracy over one split (`x`, `y`), in chunks.
fn split_scores(
    d: &Dataset,
    (x, y): (&[f32], &[u32]),
    m: &Model,
    dtype: DType,
    dev: &Device,
    buf: &mut Vec<f32>,
) -> candle_core::Result<(f64, f64)> {
    let k = d.labels_per_sample.max(1);
    let n = y.len() / k;
    if n == 0 {
        return Ok((f64::NAN, 0.0));
    }
    let (mut loss, mut correct) = (0.0, 0usize);
    let idx: Vec<usize> = (0..n).collect();
    // about a thousand rows of logits at a time (sequences of many positions in fewer)
    for chunk in idx.chunks((1000 / k).max(16)) {
        let (xt, yt) = batch_tensor(d, x, y, chunk, dtype, dev, buf)?;
        let logits = m.forward_mode(&xt, Mode::Eval)?;
        loss += model::cross_entropy(&logits, &yt)?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?
            * chunk.len() as f64;
        correct += model::correct(&logits, &yt)?;
    }
    Ok((loss / n as f64, correct as f64 / (n * k) as f64))
}

/// The scores of an evaluation: test loss and accuracy; the training split's accuracy where
/// `train_accuracy`; the perplexity for data with a label at every position.
fn evaluate(
    d: &Dataset,
    m: &Model,
    train_accuracy: bool,
    dtype: DType,
    dev: &Device,
    buf: &mut Vec<f32>,
) -> candle_core::Result<Scores> {
    let (test_loss, test_accuracy) = split_scores(d, (&d.test_x, &d.test_y), m, dtype, dev, buf)?;
    let train_accuracy = if train_accuracy {
        Some(split_scores(d, (&d.train_x, &d.train_y), m, dtype, dev, buf)?.1)
    } else {
        None
    };
    Ok(Scores {
        test_loss,
        test_accuracy,
        train_accuracy,
        test_perplexity: (d.labels_per_sample > 1).then(|| test_loss.exp()),
    })
}

enum Opt {
    Noisy(Box<AhtSgd>),
    Adam(optim::adam::AdamW),
}

/// Trains one trial into `dir` (its run-record folder), returning its summary.
pub fn run_trial(
    trial: &Trial,
    recipe_text: &str,
    dir: &Path,
    threads: usize,
    resume: bool,
    on_event: &mut dyn FnMut(Event),
) -> Result<Summary, RunError> {
    let c = &trial.config;
    let started = Instant::now();
    let seed = c.f64("seed") as u64;
    let dev = device(c.str("device"))?;
    let dtype = dtype_of(c);
    let resolved = trial.resolved_source();
    let data_spec = data_spec(c)?;
    let data = data::load(&data_spec, seed)?;
    for w in &data.warnings {
        on_event(Event::Warning {
            trial: trial.index,
            message: w.clone(),
        });
    }
    let model = Model::build(&model_spec(c, &data)?, dtype, &dev, seed)?;
    let batch = c.usize("batch").min(data.train_len().max(1));
    // a last, partial batch is dropped: a handful of samples at full learning rate gives a
    // noisy step at every epoch boundary (visible as a dip in test accuracy)
    let steps_per_epoch = (data.train_len() / batch).max(1) as u64;
    let epochs = c.usize("epochs");
    let max_steps = c.f64("max_steps") as u64;
    let total_steps = if max_steps > 0 {
        max_steps.min(steps_per_epoch * epochs as u64)
    } else {
        steps_per_epoch * epochs as u64
    };
    let lowered = crate::check::optimizer::lower(c.obj("optimizer"), seed, steps_per_epoch);
    let restored = if resume {
        checkpoint::load(dir, &dev)?
    } else {
        None
    };
    let mut rec = Recorder::create(
        dir,
        recipe_text,
        &resolved,
        restored.as_ref().map(|(_, m)| m.step),
    )?;
    if lowered.estimator.is_some() {
        sharpness::enable_second_order();
    }
    let mut opt = match &lowered.adam {
        Some(p) => {
            let mut adam = optim::adam::AdamW::new(model.params.clone(), p.clone())?;
            adam.decay = lowered.params.decay;
            adam.grad_clip = lowered.params.grad_clip;
            Opt::Adam(adam)
        }
        None => Opt::Noisy(Box::new(AhtSgd::new(
            model.params.clone(),
            lowered.params.clone(),
        )?)),
    };
    let interval = |name: &str| -> u64 {
        let (v, u) = c.quantity(name);
        match u {
            crate::syntax::ast::Unit::Steps => v as u64,
            crate::syntax::ast::Unit::Epochs => (v as u64) * steps_per_epoch,
        }
        .max(1)
    };
    let (eval_every, log_every, checkpoint_every) = (
        interval("eval_every"),
        interval("log_every"),
        interval("checkpoint_every"),
    );
    // a testing hook: behave as if Ctrl-C came after this many steps
    let stop_after: Option<u64> = std::env::var("AHTSGD_STOP_AFTER")
        .ok()
        .and_then(|v| v.parse().ok());
    // another: die by SIGKILL at this step, as `kill -9` would, in a trial that started afresh
    // (a resumed one passes the step again)
    let kill_after: Option<u64> = std::env::var("AHTSGD_KILL_AFTER")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|_| restored.is_none());
    let diverge_loss = c.f64("diverge_loss");
    // the modular tasks' accuracy on the training split, whose gap to the test split's is
    // grokking
    let train_accuracy = matches!(data_spec.source, data::Source::Modular { .. });
    // augmentation for 32x32 images: crop with 4 pixels of padding, plus flips except for digits
    let augment = data_spec.augment.map(|a| a.flip);
    on_event(Event::Started {
        trial: trial.index,
        steps: total_steps,
        resumed_from: restored.as_ref().map(|(_, meta)| meta.step),
    });

    let mut summary = Summary::new(trial, &resolved, threads, &dev, dtype);
    let mut buf = Vec::new();
    let mut sharp = lowered
        .estimator
        .clone()
        .map(|e| optim::estimate::SharpnessLoop::new(e, seed));
    let mut step: u64 = 0;
    let mut wall_before = 0.0;
    if let Some((tensors, meta)) = &restored {
        restore(&model, &mut opt, &mut sharp, tensors, meta)?;
        step = meta.step;
        wall_before = meta.wall_seconds;
        summary.evals = meta.evals.clone();
        summary.best = meta.best.clone();
        summary.final_ = meta.evals.last().cloned();
        summary.resumed_from = meta.resumed_from.clone();
        summary.resumed_from.push(meta.step);
        summary.time = meta.time;
        summary.first_train_loss = meta.first_train_loss;
    }
    summary.steps_per_epoch = steps_per_epoch;
    summary.classes = data.classes;
    if let Some(e) = &lowered.estimator {
        summary.sharpness_estimator = e.name().into();
    }
    let order_of = |epoch: usize| {
        let mut order: Vec<usize> = (0..data.train_len()).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(
            seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64),
        ));
        order
    };
    // the probe batch is the first batch of the first epoch, whenever the run started
    let probe = match &sharp {
        Some(l) if l.estimator.on_probe() => Some(batch_tensor(
            &data,
            &data.train_x,
            &data.train_y,
            &order_of(0)[..batch],
            dtype,
            &dev,
            &mut buf,
        )?),
        _ => None,
    };
    let mut last_timing = (Instant::now(), step);
    let mut status: Result<(), (u64, String)> = Ok(());
    let first_epoch = (step / steps_per_epoch) as usize;
    'train: for epoch in first_epoch..epochs {
        let order = order_of(epoch);
        let skip = if epoch == first_epoch {
            (step % steps_per_epoch) as usize
        } else {
            0
        };
        for idx in order.chunks_exact(batch).skip(skip) {
            if step >= total_steps {
                break 'train;
            }
            if stop_after == Some(step) {
                STOP.store(true, Ordering::Relaxed);
            }
            if kill_after == Some(step) {
                // SAFETY: raise has no memory effects; the process ends here.
                unsafe { libc::raise(libc::SIGKILL) };
            }
            if STOP.load(Ordering::Relaxed) {
                summary.status = "interrupted".into();
                rec.flush()?;
                save_checkpoint(
                    dir,
                    &model,
                    &opt,
                    sharp.as_ref().and_then(|l| l.warm.as_deref()),
                    &summary,
                    step,
                    wall_before + started.elapsed().as_secs_f64(),
                )?;
                break 'train;
            }
            let batch_started = Instant::now();
            let (x, y) = if let Some(flip) = augment {
                let mut rng = ChaCha8Rng::seed_from_u64(
                    seed ^ step.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xa06,
                );
                train_batch_augmented(&data, idx, flip, &mut rng, dtype, &dev, &mut buf)?
            } else {
                batch_tensor(
                    &data,
                    &data.train_x,
                    &data.train_y,
                    idx,
                    dtype,
                    &dev,
                    &mut buf,
                )?
            };
            let lr = lowered.lr.at(step, total_steps);
            let progress = step as f64 / total_steps.max(1) as f64;
            let epoch_f = epoch as f64 + (step % steps_per_epoch) as f64 / steps_per_epoch as f64;
            // sharpness, when due, on the current batch or a fixed probe batch
            let sharpness_started = Instant::now();
            if let (Some(l), Opt::Noisy(o)) = (&mut sharp, &mut opt)
                && l.estimator.due(step)
            {
                let (px, py) = match &probe {
                    Some(p) => p.clone(),
                    None => (x.clone(), y.clone()),
                };
                let lambda = l.estimate(&model, &px, &py, step)?;
                if lambda.is_finite() {
                    o.observe_sharpness(lambda);
                }
            }
            let step_started = Instant::now();
            summary.time.sharpness_seconds +=
                step_started.duration_since(sharpness_started).as_secs_f64();
            let diverged = |loss: f64| {
                if !loss.is_finite() {
                    Some("training loss is not finite".to_string())
                } else if loss > diverge_loss {
                    Some(format!(
                        "training loss {loss:.3e} above diverge_loss {diverge_loss:e}"
                    ))
                } else {
                    None
                }
            };
            // the loss is checked before the update where it is already on the host; on a GPU
            // reading it here would wait for the device between the passes, so it is read
            // (and checked) once the update is queued
            // dropout's masks are keyed by the step, so a resumed run draws the same ones
            model.set_step(step);
            let (loss_t, grads) = model.loss_grads_deferred(&x, &y)?;
            let early = loss_t.device().is_cpu();
            let mut loss = f64::NAN;
            if early {
                loss = loss_t.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                if let Some(why) = diverged(loss) {
                    status = Err((step, why));
                    break 'train;
                }
            }
            let tel = match &mut opt {
                Opt::Noisy(o) => {
                    o.params.lr = lr;
                    match o.step(&grads, epoch_f, progress) {
                        Ok(t) => t,
                        Err(OptimError::Candle(e)) => return Err(e.into()),
                        Err(e) => {
                            status = Err((step, e.to_string()));
                            break 'train;
                        }
                    }
                }
                Opt::Adam(a) => {
                    a.params.lr = lr;
                    let grad_norm = a.step(&grads)?;
                    optim::Telemetry {
                        alpha: 2.0,
                        lr,
                        grad_norm,
                        ..Default::default()
                    }
                }
            };
            if !early {
                loss = loss_t.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                if let Some(why) = diverged(loss) {
                    status = Err((step, why));
                    break 'train;
                }
            }
            step += 1;
            // the batch was built before the sharpness estimate; its time counts as training
            summary.time.train_seconds += (Instant::now() - step_started).as_secs_f64()
                + (sharpness_started - batch_started).as_secs_f64();
            if summary.first_train_loss.is_none() {
                summary.first_train_loss = Some(loss);
            }
            summary.last_train_loss = Some(loss);
            if step.is_multiple_of(log_every) || step == 1 {
                rec.metric(&MetricLine::train(step, epoch_f, loss, &tel))?;
                on_event(Event::Step {
                    trial: trial.index,
                    step,
                    epoch: epoch_f,
                    loss,
                    alpha: tel.alpha,
                });
            }
            if step.is_multiple_of(eval_every) || step == total_steps {
                let eval_started = Instant::now();
                let scores = evaluate(&data, &model, train_accuracy, dtype, &dev, &mut buf)?;
                summary.time.eval_seconds += eval_started.elapsed().as_secs_f64();
                let ep = step as f64 / steps_per_epoch as f64;
                rec.metric(&MetricLine::eval(step, ep, &scores))?;
                summary.observe_eval(ep, &scores);
                on_event(Event::Evaluated {
                    trial: trial.index,
                    step,
                    epoch: ep,
                    scores,
                });
                let now = Instant::now();
                let dt = now.duration_since(last_timing.0).as_secs_f64();
                rec.timing(&TimingLine {
                    step,
                    wall_seconds: started.elapsed().as_secs_f64(),
                    steps_per_s: (step - last_timing.1) as f64 / dt.max(1e-9),
                })?;
                last_timing = (now, step);
            }
            if step.is_multiple_of(checkpoint_every) && step < total_steps {
                rec.flush()?;
                save_checkpoint(
                    dir,
                    &model,
                    &opt,
                    sharp.as_ref().and_then(|l| l.warm.as_deref()),
                    &summary,
                    step,
                    wall_before + started.elapsed().as_secs_f64(),
                )?;
            }
        }
    }
    if let Err((at, cause)) = status {
        summary.status = "diverged".into();
        summary.diverged_at_step = Some(at);
        summary.cause = Some(cause);
    }
    summary.steps = step;
    summary.wall_seconds = wall_before + started.elapsed().as_secs_f64();
    summary.steps_per_s = step as f64 / summary.wall_seconds.max(1e-9);
    if summary.status == "completed" {
        // parameters and buffers under their own names (they never share one), as a state
        // dict holds them
        let params: HashMap<String, Tensor> = model
            .params
            .iter()
            .chain(&model.buffers)
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        let fin = checkpoint::final_path(dir);
        let tmp = dir.join("checkpoints/.final.tmp");
        std::fs::create_dir_all(dir.join("checkpoints"))
            .and_then(|_| fsutil::charge(checkpoint::bytes(&params)))
            .map_err(|e| record::WriteError::new(&fin, e))?;
        candle_core::safetensors::save(&params, &tmp)
            .map_err(|e| record::WriteError::new(&fin, checkpoint::io_error(e)))?;
        std::fs::rename(&tmp, &fin).map_err(|e| record::WriteError::new(&fin, e))?;
    }
    rec.finish(&summary)?;
    Ok(summary)
}

/// Saves parameters (`param/<name>`), buffers such as batch norm's running statistics
/// (`buffer/<name>`), optimizer state, the power-iteration vector and the records so far.
#[allow(clippy::too_many_arguments)]
fn save_checkpoint(
    dir: &Path,
    model: &Model,
    opt: &Opt,
    warm: Option<&[Tensor]>,
    summary: &Summary,
    step: u64,
    wall: f64,
) -> Result<(), RunError> {
    let mut tensors: HashMap<String, Tensor> = model
        .params
        .iter()
        .map(|(n, v)| (format!("param/{n}"), v.as_tensor().clone()))
        .chain(
            model
                .buffers
                .iter()
                .map(|(n, v)| (format!("buffer/{n}"), v.as_tensor().clone())),
        )
        .collect();
    let mut controller = None;
    match opt {
        Opt::Noisy(o) => {
            tensors.extend(o.export_state()?);
            controller = o.controller.as_ref().map(|c| c.snapshot());
        }
        Opt::Adam(a) => tensors.extend(a.export_state()?),
    }
    for (i, t) in warm.unwrap_or_default().iter().enumerate() {
        tensors.insert(format!("warm/{i:04}"), t.clone());
    }
    let meta = checkpoint::Meta {
        step,
        controller,
        evals: summary.evals.clone(),
        best: summary.best.clone(),
        wall_seconds: wall,
        resumed_from: summary.resumed_from.clone(),
        time: summary.time,
        first_train_loss: summary.first_train_loss,
    };
    let file = dir.join("checkpoints");
    fsutil::charge(checkpoint::bytes(&tensors)).map_err(|e| record::WriteError::new(&file, e))?;
    checkpoint::save(dir, &tensors, &meta)
        .map_err(|e| record::WriteError::new(&file, checkpoint::io_error(e)))?;
    Ok(())
}

/// Puts a trial back where a checkpoint left it.
fn restore(
    model: &Model,
    opt: &mut Opt,
    sharp: &mut Option<optim::estimate::SharpnessLoop>,
    tensors: &HashMap<String, Tensor>,
    meta: &checkpoint::Meta,
) -> Result<(), RunError> {
    let lacks = |what: &str, name: &str| {
        RunError::Checkpoint(format!("the checkpoint lacks {what} `{name}`"))
    };
    for (name, var) in &model.params {
        let t = tensors
            .get(&format!("param/{name}"))
            .ok_or_else(|| lacks("parameter", name))?;
        var.set(&t.to_dtype(var.dtype())?)?;
    }
    for (name, var) in &model.buffers {
        let t = tensors
            .get(&format!("buffer/{name}"))
            .ok_or_else(|| lacks("buffer", name))?;
        var.set(&t.to_dtype(var.dtype())?)?;
    }
    match opt {
        Opt::Noisy(o) => {
            o.import_state(tensors, meta.step)?;
            if let (Some(c), Some(s)) = (o.controller.as_mut(), meta.controller.as_ref()) {
                c.restore(s);
            }
        }
        Opt::Adam(a) => a
            .import_state(tensors, meta.step)
            .map_err(|e| RunError::Checkpoint(e.to_string()))?,
    }
    let mut w: Vec<(&String, &Tensor)> = tensors
        .iter()
        .filter(|(k, _)| k.starts_with("warm/"))
        .collect();
    w.sort_by(|a, b| a.0.cmp(b.0));
    if let (false, Some(l)) = (w.is_empty(), sharp.as_mut()) {
        l.warm = Some(w.into_iter().map(|(_, t)| t.clone()).collect());
    }
    Ok(())
}

/// Whether a trial estimates sharpness (and so needs candle's gradient graphs).
pub fn needs_second_order(trial: &Trial) -> bool {
    let o = trial.config.obj("optimizer");
    o.kind == "ahtsgd" && {
        let a = o.obj("alpha");
        matches!(a.kind, "adaptive" | "custom") && a.obj("sharpness").kind != "none"
    }
}

/// What `evaluate_recorded` found.
#[derive(Clone, Debug)]
pub struct Evaluation {
    pub test_loss: f64,
    pub test_accuracy: f64,
    pub samples: usize,
    /// Why the figures may not be those of the trained model (a record from before buffers
    /// were saved).
    pub warnings: Vec<String>,
}

/// Test loss, accuracy and sample count of a recorded trial's final (or latest) parameters and
/// buffers, on the dataset of `trial` (which may differ from the one it trained on).
pub fn evaluate_recorded(trial: &Trial, dir: &Path) -> Result<Evaluation, RunError> {
    let c = &trial.config;
    let dev = device(c.str("device"))?;
    let dtype = dtype_of(c);
    let data = data::load(&data_spec(c)?, c.f64("seed") as u64)?;
    let model = Model::build(&model_spec(c, &data)?, dtype, &dev, 0)?;
    let warnings = restore_recorded(&model, dir, dtype, &dev)?;
    let mut buf = Vec::new();
    let scores = evaluate(&data, &model, false, dtype, &dev, &mut buf)?;
    Ok(Evaluation {
        test_loss: scores.test_loss,
        test_accuracy: scores.test_accuracy,
        samples: data.test_len(),
        warnings,
    })
}

/// Sets `model`'s parameters and buffers to those a trial folder recorded: its final ones, or
/// its latest checkpoint's. Returns what the caller should be warned of.
fn restore_recorded(
    model: &Model,
    dir: &Path,
    dtype: DType,
    dev: &Device,
) -> Result<Vec<String>, RunError> {
    let final_path = checkpoint::final_path(dir);
    let (tensors, param_prefix, buffer_prefix) = if final_path.exists() {
        (candle_core::safetensors::load(&final_path, dev)?, "", "")
    } else {
        match checkpoint::load(dir, dev)? {
            Some((t, _)) => (t, "param/", "buffer/"),
            None => {
                return Err(RunError::Checkpoint(format!(
                    "{} has no checkpoint to evaluate",
                    dir.display()
                )));
            }
        }
    };
    for (name, var) in &model.params {
        let t = tensors
            .get(&format!("{param_prefix}{name}"))
            .ok_or_else(|| {
                RunError::Checkpoint(format!(
                    "the checkpoint has no parameter `{name}`: was the model changed?"
                ))
            })?;
        if t.shape() != var.shape() {
            return Err(RunError::Checkpoint(format!(
                "parameter `{name}` is {:?} in the checkpoint but {:?} for this data",
                t.dims(),
                var.dims()
            )));
        }
        var.set(&t.to_dtype(dtype)?)?;
    }
    let mut missing = Vec::new();
    for (name, var) in &model.buffers {
        match tensors.get(&format!("{buffer_prefix}{name}")) {
            Some(t) => var.set(&t.to_dtype(dtype)?)?,
            None => missing.push(name.as_str()),
        }
    }
    let mut warnings = Vec::new();
    if !missing.is_empty() {
        warnings.push(format!(
            "the record holds no {} (it was written before buffers were saved): these use their initial values, so the figures are not those of the trained model; rerun the trial to evaluate it",
            missing.join(", ")
        ));
    }
    Ok(warnings)
}
