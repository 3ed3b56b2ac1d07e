//! Checking a model's gradients and Hessian-vector products against central finite
//! differences, for models written in a recipe: along random directions v, one parameter
//! tensor at a time, `g·v` against `(L(θ+εv) − L(θ−εv))/2ε` and `H·v` against
//! `(g(θ+εv) − g(θ−εv))/2ε`, in f64.
//!
//! The loss is the one H·v differentiates: batch norm with batch statistics (probe mode) and
//! dropout off; the training gradient (dropout on, its mask fixed by the step) is checked
//! against its own loss too. A direction whose ±ε step crosses a kink (a ReLU input near 0, a
//! max-pool tie) shows as forward and backward differences that disagree at first order:
//! such a direction is drawn again, on a new batch, rather than reported.

use super::{Model, cross_entropy, norm::Mode};
use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The worst relative errors found for one parameter tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorErrors {
    pub name: String,
    /// The gradient with dropout off (probe mode), the one H·v differentiates.
    pub grad: f64,
    /// The training gradient (dropout on, at a fixed step).
    pub train_grad: f64,
    pub hvp: f64,
}

/// What [`check`] found.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub tensors: Vec<TensorErrors>,
    /// Directions (each with a new batch) drawn again because they crossed a kink.
    pub resampled: usize,
    /// Directions reported although every draw crossed a kink (their errors say little).
    pub at_kinks: usize,
}

impl Report {
    /// The worst error of each kind over every tensor: (gradient, training gradient, H·v).
    pub fn worst(&self) -> (f64, f64, f64) {
        self.tensors.iter().fold((0.0, 0.0, 0.0), |w, t| {
            (w.0.max(t.grad), w.1.max(t.train_grad), w.2.max(t.hvp))
        })
    }
}

/// Settings of [`check`].
#[derive(Clone, Debug)]
pub struct Options {
    /// Random directions per parameter tensor.
    pub directions: usize,
    /// The finite-difference step (relative to the direction, whose entries lie in [−1, 1]).
    pub eps: f64,
    /// Times a direction that crosses a kink is drawn again before its errors are reported
    /// as they are.
    pub resamples: usize,
    /// Errors at most this count as agreeing when telling a kink from an error.
    pub tolerance: f64,
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            directions: 2,
            eps: 1e-7,
            resamples: 5,
            tolerance: 1e-4,
            seed: 0,
        }
    }
}

/// `|a − b|` over the larger of the two magnitudes, or over `floor` for values smaller (a
/// gradient that is zero in exact arithmetic, such as a bias before batch norm, meets finite
/// differences' rounding there).
fn relative(a: &Tensor, b: &Tensor, floor: f64) -> Result<f64> {
    let err = max_abs(&(a - b)?)?;
    Ok(err / max_abs(a)?.max(max_abs(b)?).max(floor))
}

fn scalar_relative(a: f64, b: f64, floor: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(floor)
}

fn max_abs(t: &Tensor) -> Result<f64> {
    crate::optim::sharpness::max_abs(t)
}

/// Below this, magnitudes count as this (relative errors become absolute ones): central
/// differences in f64 at ε = 1e-7 carry about 1e-8 of rounding, so a gradient that is zero
/// in exact arithmetic would otherwise show that noise as a relative error of 1.
const FLOOR: f64 = 1e-3;

fn dot(gs: &GradStore, vars: &[Var], v: &[Tensor]) -> Result<f64> {
    let mut s = 0.0;
    for (p, d) in vars.iter().zip(v) {
        if let Some(g) = gs.get(p.as_tensor()) {
            s += (g * d)?.sum_all()?.to_scalar::<f64>()?;
        }
    }
    Ok(s)
}

fn shift(vars: &[Var], v: &[Tensor], k: f64) -> Result<()> {
    for (p, d) in vars.iter().zip(v) {
        p.set(&(p.as_tensor() + d.affine(k, 0.0)?)?)?;
    }
    Ok(())
}

fn every_grad(vars: &[Var], gs: &GradStore) -> Result<Vec<Tensor>> {
    vars.iter()
        .map(|p| match gs.get(p.as_tensor()) {
            Some(g) => Ok(g.clone()),
            None => p.as_tensor().zeros_like(),
        })
        .collect()
}

/// A direction that moves parameter tensor `i` alone, entries uniform in [−1, 1].
fn direction(vars: &[Var], i: usize, rng: &mut ChaCha8Rng) -> Result<Vec<Tensor>> {
    vars.iter()
        .enumerate()
        .map(|(j, q)| {
            if j == i {
                let d: Vec<f64> = (0..q.elem_count())
                    .map(|_| rng.random::<f64>() * 2.0 - 1.0)
                    .collect();
                Tensor::from_vec(d, q.shape(), q.device())
            } else {
                q.as_tensor().zeros_like()
            }
        })
        .collect()
}

/// The errors along one direction on one batch, and whether a kink lies within ε: there
/// the forward and backward differences disagree at first order (on a smooth loss they
/// differ by O(ε)).
fn along(
    m: &Model,
    x: &Tensor,
    y: &Tensor,
    v: &[Tensor],
    o: &Options,
) -> Result<((f64, f64, f64), bool)> {
    let vars = m.vars();
    let loss = |mode: Mode| -> Result<f64> {
        cross_entropy(&m.forward_mode(x, mode)?, y)?.to_scalar::<f64>()
    };
    let probe = || -> Result<Vec<Tensor>> { every_grad(&vars, &m.probe_loss_grads(x, y)?.1) };
    let (l0, t0) = (loss(Mode::Probe)?, loss(Mode::Train)?);
    let gs = m.probe_loss_grads(x, y)?.1;
    let g0 = every_grad(&vars, &gs)?;
    let (_, train) = m.loss_grads(x, y)?;
    let hv = m.hessian(x, y)?.hvp(v)?;
    let eps = o.eps;
    shift(&vars, v, eps)?;
    let (lp, tp, gp) = (loss(Mode::Probe)?, loss(Mode::Train)?, probe()?);
    shift(&vars, v, -2.0 * eps)?;
    let (lm, tm, gm) = (loss(Mode::Probe)?, loss(Mode::Train)?, probe()?);
    shift(&vars, v, eps)?;
    let (gv, tv) = (dot(&gs, &vars, v)?, dot(&train, &vars, v)?);
    let grad = scalar_relative(gv, (lp - lm) / (2.0 * eps), FLOOR);
    let train_grad = scalar_relative(tv, (tp - tm) / (2.0 * eps), FLOOR);
    let mut hvp: f64 = 0.0;
    let mut kink = scalar_relative((lp - l0) / eps, (l0 - lm) / eps, FLOOR) > o.tolerance
        || scalar_relative((tp - t0) / eps, (t0 - tm) / eps, FLOOR) > o.tolerance;
    for (((h, p), q), c) in hv.iter().zip(&gp).zip(&gm).zip(&g0) {
        let fd = ((p - q)? / (2.0 * eps))?;
        hvp = hvp.max(relative(h, &fd, FLOOR)?);
        let (fwd, back) = (((p - c)? / eps)?, ((c - q)? / eps)?);
        kink |= relative(&fwd, &back, FLOOR)? > o.tolerance;
    }
    Ok(((grad, train_grad, hvp), kink))
}

/// Checks `m` (built in f64) on batches drawn by `batch` (its argument counts the batches
/// drawn, from 0): each direction at a kink is drawn again, with a new batch, up to
/// `o.resamples` times.
pub fn check(
    m: &Model,
    mut batch: impl FnMut(usize) -> Result<(Tensor, Tensor)>,
    o: &Options,
) -> Result<Report> {
    let mut rng = ChaCha8Rng::seed_from_u64(o.seed);
    let vars = m.vars();
    let mut drawn = 0;
    let (mut x, mut y) = batch(drawn)?;
    let mut resampled = 0;
    let mut at_kinks = 0;
    let mut tensors = Vec::with_capacity(m.params.len());
    for (i, (name, _)) in m.params.iter().enumerate() {
        let mut errs = TensorErrors {
            name: name.clone(),
            grad: 0.0,
            train_grad: 0.0,
            hvp: 0.0,
        };
        for _ in 0..o.directions {
            let mut tries = 0;
            let e = loop {
                let v = direction(&vars, i, &mut rng)?;
                // dropout's masks are those of a step of their own for each batch
                m.set_step(drawn as u64);
                let (e, kink) = along(m, &x, &y, &v, o)?;
                if !kink {
                    break e;
                }
                if tries >= o.resamples {
                    at_kinks += 1;
                    break e;
                }
                tries += 1;
                resampled += 1;
                drawn += 1;
                (x, y) = batch(drawn)?;
            };
            errs.grad = errs.grad.max(e.0);
            errs.train_grad = errs.train_grad.max(e.1);
            errs.hvp = errs.hvp.max(e.2);
        }
        tensors.push(errs);
    }
    Ok(Report {
        tensors,
        resampled,
        at_kinks,
    })
}

/// `n` random sequences of `context` token ids uniform below `vocab` (as f64, the form a
/// token dataset's samples take) with labels uniform over the vocabulary: one per sequence,
/// or one per position when `every_position`.
pub fn token_batch(
    context: usize,
    vocab: usize,
    n: usize,
    every_position: bool,
    seed: u64,
) -> Result<(Tensor, Tensor)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let xs: Vec<f64> = (0..n * context)
        .map(|_| rng.random_range(0..vocab.max(1)) as f64)
        .collect();
    let per = if every_position { context } else { 1 };
    let ys: Vec<u32> = (0..n * per)
        .map(|_| rng.random_range(0..vocab.max(1) as u32))
        .collect();
    let dev = candle_core::Device::Cpu;
    let y = Tensor::new(ys, &dev)?;
    let y = if every_position {
        y.reshape((n, context))?
    } else {
        y
    };
    Ok((Tensor::from_vec(xs, (n, context), &dev)?, y))
}

/// `n` random inputs of `shape` (standard normal) with labels uniform over `classes`, f64.
pub fn synthetic_batch(
    shape: &[usize],
    classes: usize,
    n: usize,
    seed: u64,
) -> Result<(Tensor, Tensor)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let per: usize = shape.iter().product();
    let xs: Vec<f64> = (0..n * per)
        .map(|_| rng.sample::<f64, _>(rand_distr::StandardNormal))
        .collect();
    let ys: Vec<u32> = (0..n)
        .map(|_| rng.random_range(0..classes.max(1) as u32))
        .collect();
    let mut full = vec![n];
    full.extend(shape);
    let dev = candle_core::Device::Cpu;
    Ok((Tensor::from_vec(xs, full, &dev)?, Tensor::new(ys, &dev)?))
}
