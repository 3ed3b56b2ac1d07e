//! Running trials: lowering a checked trial to candle, training it, and recording everything.
//!
//! The library reports progress through [`Event`]s; the binary renders them.

pub mod lower;
pub mod record;

use crate::data::{self, Dataset};
use crate::model::{self, Model};
use crate::optim::{self, AhtSgd, OptimError, sharpness};
use crate::plan::Trial;
use candle_core::{DType, Device, Tensor};
use lower::Estimator;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use record::{MetricLine, Recorder, Summary, TimingLine};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// What the caller hears while a trial runs.
#[derive(Clone, Debug)]
pub enum Event {
    Started {
        trial: usize,
        steps: u64,
    },
    Step {
        trial: usize,
        step: u64,
        epoch: usize,
        loss: f64,
        alpha: f64,
    },
    Evaluated {
        trial: usize,
        step: u64,
        epoch: usize,
        test_loss: f64,
        test_accuracy: f64,
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
    buf.clear();
    let mut ys = Vec::with_capacity(idx.len());
    for &i in idx {
        buf.extend_from_slice(&x[i * len..(i + 1) * len]);
        ys.push(y[i]);
    }
    let mut shape = vec![idx.len()];
    shape.extend(&d.sample_shape);
    let xt = Tensor::from_slice(buf, shape, dev)?.to_dtype(dtype)?;
    let yt = Tensor::from_vec(ys, idx.len(), dev)?;
    Ok((xt, yt))
}

/// Test loss and accuracy over the evaluation split.
fn evaluate(
    d: &Dataset,
    m: &Model,
    dtype: DType,
    dev: &Device,
    buf: &mut Vec<f32>,
) -> candle_core::Result<(f64, f64)> {
    let n = d.test_len();
    if n == 0 {
        return Ok((f64::NAN, 0.0));
    }
    let (mut loss, mut correct) = (0.0, 0usize);
    let idx: Vec<usize> = (0..n).collect();
    for chunk in idx.chunks(1000) {
        let (x, y) = batch_tensor(d, &d.test_x, &d.test_y, chunk, dtype, dev, buf)?;
        let logits = m.forward(&x)?;
        loss += model::cross_entropy(&logits, &y)?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?
            * chunk.len() as f64;
        correct += model::correct(&logits, &y)?;
    }
    Ok((loss / n as f64, correct as f64 / n as f64))
}

enum Opt {
    Noisy(Box<AhtSgd>),
    Adam(candle_nn::AdamW),
}

/// Trains one trial into `dir` (its run-record folder), returning its summary.
pub fn run_trial(
    trial: &Trial,
    recipe_text: &str,
    dir: &Path,
    threads: usize,
    on_event: &mut dyn FnMut(Event),
) -> Result<Summary, RunError> {
    let c = &trial.config;
    let started = Instant::now();
    let seed = c.f64("seed") as u64;
    let dev = device(c.str("device"))?;
    let dtype = if c.str("dtype") == "f64" {
        DType::F64
    } else {
        DType::F32
    };
    let resolved = trial.resolved_source();
    let mut rec = Recorder::create(dir, recipe_text, &resolved)?;
    let data = data::load(c.obj("data"), seed)?;
    let model = Model::build(
        c.obj("model"),
        &data.sample_shape,
        data.classes,
        dtype,
        &dev,
        seed,
    )?;
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
    let lowered = lower::optimizer(c.obj("optimizer"), seed, steps_per_epoch);
    if lowered.estimator.is_some() {
        sharpness::enable_second_order();
    }
    let mut opt = match &lowered.adam {
        Some(p) => Opt::Adam(<candle_nn::AdamW as candle_nn::Optimizer>::new(
            model.vars(),
            p.clone(),
        )?),
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
    let (eval_every, log_every) = (interval("eval_every"), interval("log_every"));
    let diverge_loss = c.f64("diverge_loss");
    on_event(Event::Started {
        trial: trial.index,
        steps: total_steps,
    });

    let mut summary = Summary::new(trial, &resolved, threads, &dev, dtype);
    let mut buf = Vec::new();
    let mut warm: Option<Vec<Tensor>> = None;
    let mut probe: Option<(Tensor, Tensor)> = None;
    let mut step: u64 = 0;
    let mut last_timing = (Instant::now(), 0u64);
    let mut status: Result<(), (u64, String)> = Ok(());
    'train: for epoch in 0..epochs {
        let mut order: Vec<usize> = (0..data.train_len()).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(
            seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64),
        ));
        for idx in order.chunks_exact(batch) {
            if step >= total_steps {
                break 'train;
            }
            if STOP.load(Ordering::Relaxed) {
                summary.status = "interrupted".into();
                break 'train;
            }
            let (x, y) = batch_tensor(
                &data,
                &data.train_x,
                &data.train_y,
                idx,
                dtype,
                &dev,
                &mut buf,
            )?;
            let lr = lowered.lr.at(step, total_steps);
            let progress = step as f64 / total_steps.max(1) as f64;
            let epoch_f = epoch as f64 + (step % steps_per_epoch) as f64 / steps_per_epoch as f64;
            // sharpness, when due, on the current batch or a fixed probe batch
            if let (Some(est), Opt::Noisy(o)) = (&lowered.estimator, &mut opt) {
                let (every, is_probe) = match est {
                    Estimator::PowerIteration { every, probe, .. }
                    | Estimator::Hutchinson { every, probe, .. } => (*every, *probe),
                };
                if step.is_multiple_of(every) {
                    if is_probe && probe.is_none() {
                        probe = Some((x.clone(), y.clone()));
                    }
                    let (px, py) = if is_probe {
                        probe.clone().expect("set above")
                    } else {
                        (x.clone(), y.clone())
                    };
                    let loss = model::cross_entropy(&model.forward(&px)?, &py)?;
                    let vars = model.vars();
                    let lambda = match est {
                        Estimator::PowerIteration { iters, tol, .. } => {
                            let r = sharpness::power_iteration(
                                &loss,
                                &vars,
                                *iters,
                                *tol,
                                warm.take(),
                                seed ^ step,
                            )?;
                            warm = Some(r.vector);
                            r.lambda
                        }
                        Estimator::Hutchinson { samples, .. } => {
                            sharpness::hutchinson(&loss, &vars, *samples, seed ^ step)?
                        }
                    };
                    if lambda.is_finite() {
                        o.observe_sharpness(lambda);
                    }
                }
            }
            let logits = model.forward(&x)?;
            let loss_t = model::cross_entropy(&logits, &y)?;
            let loss = loss_t.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !loss.is_finite() || loss > diverge_loss {
                status = Err((
                    step,
                    if loss.is_finite() {
                        format!("training loss {loss:.3e} above diverge_loss {diverge_loss:e}")
                    } else {
                        "training loss is not finite".into()
                    },
                ));
                break 'train;
            }
            let grads = loss_t.backward()?;
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
                    candle_nn::Optimizer::set_learning_rate(a, lr);
                    candle_nn::Optimizer::step(a, &grads)?;
                    optim::Telemetry {
                        alpha: 2.0,
                        lr,
                        ..Default::default()
                    }
                }
            };
            step += 1;
            if step.is_multiple_of(log_every) || step == 1 {
                rec.metric(&MetricLine::train(step, epoch_f, loss, &tel))?;
                on_event(Event::Step {
                    trial: trial.index,
                    step,
                    epoch,
                    loss,
                    alpha: tel.alpha,
                });
            }
            if step.is_multiple_of(eval_every) || step == total_steps {
                let (tl, ta) = evaluate(&data, &model, dtype, &dev, &mut buf)?;
                let ep = step as f64 / steps_per_epoch as f64;
                rec.metric(&MetricLine::eval(step, ep, tl, ta))?;
                summary.observe_eval(ep, tl, ta);
                on_event(Event::Evaluated {
                    trial: trial.index,
                    step,
                    epoch,
                    test_loss: tl,
                    test_accuracy: ta,
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
        }
    }
    if let Err((at, cause)) = status {
        summary.status = "diverged".into();
        summary.diverged_at_step = Some(at);
        summary.cause = Some(cause);
    }
    summary.steps = step;
    summary.wall_seconds = started.elapsed().as_secs_f64();
    summary.steps_per_s = step as f64 / summary.wall_seconds.max(1e-9);
    rec.finish(&summary)?;
    Ok(summary)
}
