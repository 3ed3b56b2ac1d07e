//! The executor's own passes over a stack: a forward pass that keeps what each layer's reverse
//! pass needs, the reverse pass, and Pearlmutter's R-operator (each layer's tangent forward and
//! second-order reverse), so gradients and H·v need no graph and no double backward.
//!
//! A dense layer followed by ReLU runs as one fused layer, with the same ops in the same order
//! as the MLP's hand-written passes had (so its results are the same bits). Layers these
//! passes do not cover yet send the whole model to candle's graph ([`supports`]).

use super::exec::Node;
use super::linear;
use super::spec::Activation;
use crate::optim::sharpness::Hessian;
use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, TensorId, Var};
use std::collections::HashMap;

/// Whether every node of `nodes` has its passes here.
pub fn supports(nodes: &[Node]) -> bool {
    nodes
        .iter()
        .all(|n| matches!(n, Node::Linear { .. } | Node::Act(_) | Node::Flatten))
}

/// One layer as it ran.
enum Run {
    /// `y = x·wᵀ (+ b)`, then ReLU when `relu`; `delta`: the gradient of the pre-activation.
    Dense {
        w: Var,
        b: Option<Var>,
        x: Tensor,
        y: Tensor,
        relu: bool,
        delta: Option<Tensor>,
    },
    /// `a = f(z)`; `da`: the gradient of `a`.
    Act {
        act: Activation,
        z: Tensor,
        a: Tensor,
        da: Option<Tensor>,
    },
    /// Every axis but the batch's into one; `dims`: the input's shape.
    Flatten { dims: Vec<usize> },
}

/// A forward and reverse pass over a batch.
pub struct Tape {
    runs: Vec<Run>,
    prob: Tensor,
    pub loss: f64,
    pub grads: GradStore,
}

/// Whether run `i` has a parameter before it (so the gradient of its input is needed).
fn params_before(runs: &[Run], i: usize) -> bool {
    runs[..i].iter().any(|r| matches!(r, Run::Dense { .. }))
}

impl Tape {
    /// The passes over a batch `x` (samples already in the model's input shape); the
    /// parameters' gradients only when `with_grads` (H·v needs the pre-activations' alone).
    pub fn run(nodes: &[Node], x: Tensor, y: &Tensor, with_grads: bool) -> Result<Tape> {
        let mut runs = Vec::with_capacity(nodes.len());
        let mut h = x;
        let mut i = 0;
        while i < nodes.len() {
            match &nodes[i] {
                Node::Linear { w, b } => {
                    let relu = b.is_some()
                        && matches!(nodes.get(i + 1), Some(Node::Act(Activation::Relu)));
                    let wt = w.as_tensor().detach();
                    let out = match b {
                        Some(b) => linear::affine(&h, &wt, &b.as_tensor().detach(), relu)?,
                        None => linear::xwt(&h, &wt)?,
                    };
                    runs.push(Run::Dense {
                        w: w.clone(),
                        b: b.clone(),
                        x: std::mem::replace(&mut h, out.clone()),
                        y: out,
                        relu,
                        delta: None,
                    });
                    i += if relu { 2 } else { 1 };
                    continue;
                }
                Node::Act(act) => {
                    let a = act.apply(&h)?;
                    runs.push(Run::Act {
                        act: *act,
                        z: std::mem::replace(&mut h, a.clone()),
                        a,
                        da: None,
                    });
                }
                Node::Flatten => {
                    let dims = h.dims().to_vec();
                    h = h.flatten_from(1)?;
                    runs.push(Run::Flatten { dims });
                }
                _ => candle_core::bail!("the executor's passes do not cover this layer yet"),
            }
            i += 1;
        }
        let (loss, mut g, prob) = super::grad::softmax_xent(&h, y)?;
        let mut grads = GradStore::default();
        for i in (0..runs.len()).rev() {
            let want_x = params_before(&runs, i);
            match &mut runs[i] {
                Run::Dense {
                    w,
                    b,
                    x,
                    y,
                    relu,
                    delta,
                } => {
                    let wt = w.as_tensor().detach();
                    let want = [want_x, with_grads, with_grads && b.is_some()];
                    let d = linear::affine_back(x, &wt, y, &g, *relu, want)?;
                    if let Some(gw) = d.w {
                        grads.insert(w.as_tensor(), gw);
                    }
                    if let (Some(b), Some(gb)) = (b, d.b) {
                        grads.insert(b.as_tensor(), gb);
                    }
                    if let Some(gx) = d.x {
                        g = gx;
                    }
                    *delta = Some(d.delta);
                }
                Run::Act { act, z, a, da } => {
                    if want_x {
                        let dz = back(*act, &g, z, a)?;
                        *da = Some(std::mem::replace(&mut g, dz));
                    }
                }
                Run::Flatten { dims } => {
                    if want_x {
                        g = g.reshape(dims.clone())?;
                    }
                }
            }
        }
        Ok(Tape {
            runs,
            prob,
            loss,
            grads,
        })
    }
}

/// `g·f'(z)`: the gradient of an activation's input from its output's.
fn back(act: Activation, g: &Tensor, z: &Tensor, a: &Tensor) -> Result<Tensor> {
    match act {
        Activation::Relu => linear::relu_back(g, a),
        _ => g * derivative(act, z, a)?,
    }
}

const GELU_C: f64 = 0.797_884_560_802_865_4; // √(2/π)
const GELU_K: f64 = 0.044715;

/// `f'(z)`, from the input `z` and the output `a = f(z)`.
fn derivative(act: Activation, z: &Tensor, a: &Tensor) -> Result<Tensor> {
    match act {
        Activation::Relu => a.gt(0.0)?.to_dtype(a.dtype()),
        // 1 − a²
        Activation::Tanh => 1.0 - a.sqr()?,
        // s(1 − s)
        Activation::Sigmoid => a * (1.0 - a)?,
        // s + z·s(1 − s)
        Activation::Silu => {
            let s = super::sigmoid(z)?;
            let ds = (&s * (1.0 - &s)?)?;
            s + (z * ds)?
        }
        Activation::Gelu => {
            let (t, du) = gelu_parts(z)?;
            let sech2 = (1.0 - t.sqr()?)?;
            ((t + 1.0)? * 0.5)? + ((z * 0.5)? * (sech2 * du)?)?
        }
    }
}

/// tanh(u) and u' for GELU's `u = c(z + k z³)`.
fn gelu_parts(z: &Tensor) -> Result<(Tensor, Tensor)> {
    let u = ((z + (z.powf(3.0)? * GELU_K)?)? * GELU_C)?;
    let du = (((z.sqr()? * (3.0 * GELU_K))? + 1.0)? * GELU_C)?;
    Ok((u.tanh()?, du))
}

/// `f''(z)`.
fn second_derivative(act: Activation, z: &Tensor, a: &Tensor) -> Result<Option<Tensor>> {
    Ok(Some(match act {
        Activation::Relu => return Ok(None),
        // −2a(1 − a²)
        Activation::Tanh => ((a * -2.0)? * (1.0 - a.sqr()?)?)?,
        // s(1 − s)(1 − 2s)
        Activation::Sigmoid => {
            let ds = (a * (1.0 - a)?)?;
            (ds * (1.0 - (a * 2.0)?)?)?
        }
        // s(1 − s)(2 + z(1 − 2s))
        Activation::Silu => {
            let s = super::sigmoid(z)?;
            let ds = (&s * (1.0 - &s)?)?;
            let one_minus_2s = (1.0 - (&s * 2.0)?)?;
            (ds * ((z * one_minus_2s)? + 2.0)?)?
        }
        // (1 − t²)·u' − z·t(1 − t²)·u'² + ½z(1 − t²)·u''
        Activation::Gelu => {
            let (t, du) = gelu_parts(z)?;
            let sech2 = (1.0 - t.sqr()?)?;
            let ddu = (z * (6.0 * GELU_K * GELU_C))?;
            let a1 = (&sech2 * &du)?;
            let a2 = ((z * &t)? * (&sech2 * du.sqr()?)?)?;
            let a3 = ((z * 0.5)? * (&sech2 * ddu)?)?;
            ((a1 - a2)? + a3)?
        }
    }))
}

/// H·v by the R-operator over a [`Tape`].
pub struct RopHessian {
    pub tape: Tape,
    /// Each parameter's position in the model's parameter order.
    pub index: HashMap<TensorId, usize>,
    pub count: usize,
}

impl Hessian for RopHessian {
    fn hvp(&mut self, v: &[Tensor]) -> Result<Vec<Tensor>> {
        if v.len() != self.count {
            candle_core::bail!("H·v: {} directions for {} parameters", v.len(), self.count);
        }
        let dir = |p: &Var| &v[self.index[&p.as_tensor().id()]];
        let runs = &self.tape.runs;
        let mut out: Vec<Option<Tensor>> = vec![None; self.count];
        // forward tangents: each run's input tangent (None: zero), then the logits'
        let mut rh: Option<Tensor> = None;
        let mut r_in: Vec<Option<Tensor>> = Vec::with_capacity(runs.len());
        for r in runs {
            let next = match r {
                Run::Dense {
                    w, b, x, y, relu, ..
                } => {
                    let mut rz = match b {
                        Some(b) => linear::affine(x, dir(w), dir(b), false)?,
                        None => linear::xwt(x, dir(w))?,
                    };
                    if let Some(r) = &rh {
                        rz = (rz + linear::xwt(r, &w.as_tensor().detach())?)?;
                    }
                    Some(if *relu {
                        linear::relu_back(&rz, y)?
                    } else {
                        rz
                    })
                }
                Run::Act { act, z, a, .. } => {
                    rh.as_ref().map(|r| back(*act, r, z, a)).transpose()?
                }
                Run::Flatten { .. } => rh.as_ref().map(|r| r.flatten_from(1)).transpose()?,
            };
            r_in.push(std::mem::replace(&mut rh, next));
        }
        // R of the logits' gradient: (diag(s) − s sᵀ)·R(z) / n, row by row
        let rz =
            rh.ok_or_else(|| candle_core::Error::Msg("H·v: a model without parameters".into()))?;
        let prob = &self.tape.prob;
        let n = rz.dim(0)? as f64;
        let sr = (prob * &rz)?;
        let mut rg = ((&sr - prob.broadcast_mul(&sr.sum_keepdim(1)?)?)? / n)?;
        // reverse tangents
        for i in (0..runs.len()).rev() {
            let want_x = params_before(runs, i);
            match &runs[i] {
                Run::Dense {
                    w,
                    b,
                    x,
                    y,
                    relu,
                    delta,
                } => {
                    let delta = delta.as_ref().expect("the reverse pass ran");
                    let rdelta = if *relu {
                        linear::relu_back(&rg, y)?
                    } else {
                        rg.clone()
                    };
                    // the weight's tangent and the input's, side by side where threads allow
                    let rw = || -> Result<Tensor> {
                        let rw = rdelta.t()?.matmul(x)?;
                        match &r_in[i] {
                            Some(r) => rw + delta.t()?.matmul(r)?,
                            None => Ok(rw),
                        }
                    };
                    let next = || -> Result<Option<Tensor>> {
                        if !want_x {
                            return Ok(None);
                        }
                        let wt = w.as_tensor().detach();
                        Ok(Some((rdelta.matmul(&wt)? + delta.matmul(dir(w))?)?))
                    };
                    let (rw, next) = linear::both(&rdelta, rw, next);
                    out[self.index[&w.as_tensor().id()]] = Some(rw?);
                    if let Some(b) = b {
                        out[self.index[&b.as_tensor().id()]] = Some(linear::sum_rows(&rdelta)?);
                    }
                    if let Some(n) = next? {
                        rg = n;
                    }
                }
                Run::Act { act, z, a, da } => {
                    if !want_x {
                        continue;
                    }
                    // R(dz) = f'(z)·R(da) + f''(z)·R(z)·da
                    let mut r = back(*act, &rg, z, a)?;
                    if let (Some(rz), Some(da), Some(f2)) =
                        (&r_in[i], da, second_derivative(*act, z, a)?)
                    {
                        r = (r + (f2 * (rz * da)?)?)?;
                    }
                    rg = r;
                }
                Run::Flatten { dims } => {
                    if want_x {
                        rg = rg.reshape(dims.clone())?;
                    }
                }
            }
        }
        out.into_iter()
            .enumerate()
            .map(|(i, t)| t.ok_or_else(|| candle_core::Error::Msg(format!("H·v: no entry {i}"))))
            .collect()
    }
}
