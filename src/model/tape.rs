//! The executor's own passes over a stack: a forward pass that keeps what each layer's reverse
//! pass needs, the reverse pass, and Pearlmutter's R-operator (each layer's tangent forward and
//! second-order reverse), so gradients and H·v need no graph and no double backward.
//!
//! A dense layer followed by ReLU runs as one fused layer, and a convolution with a bias
//! followed by ReLU and 2x2 max pooling as one stage that pools first (max pooling commutes
//! with a per-channel bias and with ReLU, so the values are the same on a quarter of the
//! pixels): the ops in the order the built-in MLP's and CNN's hand-written passes had, so their
//! results are the same bits. Layers these passes do not cover yet send the whole model to
//! candle's graph ([`supports`]).

use super::exec::Node;
use super::pool::{self, Maxima};
use super::spec::Activation;
use super::{conv, linear};
use crate::optim::sharpness::Hessian;
use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, TensorId, Var};
use std::collections::HashMap;

/// Whether every node of `nodes` has its passes here.
pub fn supports(nodes: &[Node]) -> bool {
    nodes.iter().all(|n| {
        matches!(
            n,
            Node::Linear { .. }
                | Node::Act(_)
                | Node::Flatten
                | Node::Conv { .. }
                | Node::Pool {
                    max: true,
                    k: 2,
                    stride: 2
                }
        )
    })
}

/// Whether `nodes[i..]` starts with a convolution with a bias, ReLU and 2x2 max pooling.
fn stage_at(nodes: &[Node], i: usize) -> bool {
    matches!(
        (&nodes[i], nodes.get(i + 1), nodes.get(i + 2)),
        (
            Node::Conv { b: Some(_), .. },
            Some(Node::Act(Activation::Relu)),
            Some(Node::Pool {
                max: true,
                k: 2,
                stride: 2
            })
        )
    )
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
    /// `z = conv(x, w) (+ b)`; `dz`: the gradient of `z`.
    Conv {
        w: Var,
        b: Option<Var>,
        x: Tensor,
        settings: conv::Settings,
        dz: Option<Tensor>,
    },
    /// `z = conv(h, w)`, `p = maxpool(z)`, `a = relu(p + b)`; `dp`, `dz`: the gradients of
    /// `p + b` and of `z`.
    Stage {
        w: Var,
        b: Var,
        h: Tensor,
        z: Tensor,
        maxima: Maxima,
        a: Tensor,
        settings: conv::Settings,
        dz: Option<Tensor>,
    },
    /// 2x2 max pooling of `x`.
    MaxPool { x: Tensor, maxima: Maxima },
}

fn kernel(w: &Var) -> Result<(usize, usize)> {
    let w = w.as_tensor();
    Ok((w.dim(2)?, w.dim(3)?))
}

fn spatial(x: &Tensor) -> Result<(usize, usize)> {
    Ok((x.dim(2)?, x.dim(3)?))
}

/// A forward and reverse pass over a batch.
pub struct Tape {
    runs: Vec<Run>,
    prob: Tensor,
    pub loss: f64,
    pub grads: GradStore,
}

/// The index of the first run with parameters: the runs after it need their input's gradient.
fn first_with_params(runs: &[Run]) -> usize {
    runs.iter()
        .position(|r| matches!(r, Run::Dense { .. } | Run::Conv { .. } | Run::Stage { .. }))
        .unwrap_or(runs.len())
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
                Node::Conv {
                    w,
                    b,
                    stride,
                    padding,
                } => {
                    let settings = (*padding, *stride, 1);
                    let wt = w.as_tensor().detach();
                    let z = conv::conv2d(&h, &wt, settings.0, settings.1, settings.2)?;
                    if let (true, Some(b)) = (stage_at(nodes, i), b) {
                        let (p, maxima) = pool::max_pool2_keep(&z)?;
                        let a =
                            linear::relu(&conv::add_channel_bias(&p, &b.as_tensor().detach())?)?;
                        runs.push(Run::Stage {
                            w: w.clone(),
                            b: b.clone(),
                            h: std::mem::replace(&mut h, a.clone()),
                            z,
                            maxima,
                            a,
                            settings,
                            dz: None,
                        });
                        i += 3;
                        continue;
                    }
                    let z = match b {
                        Some(b) => conv::add_channel_bias(&z, &b.as_tensor().detach())?,
                        None => z,
                    };
                    runs.push(Run::Conv {
                        w: w.clone(),
                        b: b.clone(),
                        x: std::mem::replace(&mut h, z),
                        settings,
                        dz: None,
                    });
                }
                Node::Pool {
                    max: true,
                    k: 2,
                    stride: 2,
                } => {
                    let (p, maxima) = pool::max_pool2_keep(&h)?;
                    runs.push(Run::MaxPool {
                        x: std::mem::replace(&mut h, p),
                        maxima,
                    });
                }
                _ => candle_core::bail!("the executor's passes do not cover this layer yet"),
            }
            i += 1;
        }
        let (loss, mut g, prob) = super::grad::softmax_xent(&h, y)?;
        let mut grads = GradStore::default();
        let first = first_with_params(&runs);
        for i in (0..runs.len()).rev() {
            let want_x = i > first;
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
                Run::Conv {
                    w,
                    b,
                    x,
                    settings,
                    dz,
                } => {
                    let wt = w.as_tensor().detach();
                    if with_grads {
                        if let Some(b) = b {
                            grads.insert(b.as_tensor(), conv::channel_sum(&g)?);
                        }
                        grads.insert(
                            w.as_tensor(),
                            conv::conv2d_back_filter(x, &g, kernel(w)?, *settings)?,
                        );
                    }
                    let d = if want_x {
                        let dx = conv::conv2d_back_data(&g, &wt, spatial(x)?, *settings)?;
                        std::mem::replace(&mut g, dx)
                    } else {
                        g.clone()
                    };
                    *dz = Some(d);
                }
                Run::Stage {
                    w,
                    b,
                    h,
                    z,
                    maxima,
                    a,
                    settings,
                    dz,
                } => {
                    let dp = linear::relu_back(&g, a)?;
                    let d = maxima.back(&dp, z)?;
                    if with_grads {
                        grads.insert(b.as_tensor(), conv::channel_sum(&dp)?);
                        grads.insert(
                            w.as_tensor(),
                            conv::conv2d_back_filter(h, &d, kernel(w)?, *settings)?,
                        );
                    }
                    if want_x {
                        let wt = w.as_tensor().detach();
                        g = conv::conv2d_back_data(&d, &wt, spatial(h)?, *settings)?;
                    }
                    *dz = Some(d);
                }
                Run::MaxPool { x, maxima } => {
                    if want_x {
                        g = maxima.back(&g, x)?;
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

impl RopHessian {
    /// A convolution's second-order reverse: from `rdz` (the tangent of its output's
    /// gradient), the tangents of its kernel's and bias's gradients into `out`, and of its
    /// input's gradient when `want_x`. `dz` is its output's gradient, `rx` its input's tangent.
    #[allow(clippy::too_many_arguments)]
    fn conv_tangents(
        &self,
        w: &Var,
        b: Option<&Var>,
        x: &Tensor,
        settings: &conv::Settings,
        dz: &Tensor,
        rdz: &Tensor,
        rx: &Option<Tensor>,
        vw: &Tensor,
        want_x: bool,
        out: &mut [Option<Tensor>],
    ) -> Result<Option<Tensor>> {
        let k = kernel(w)?;
        if let Some(b) = b {
            out[self.index[&b.as_tensor().id()]] = Some(conv::channel_sum(rdz)?);
        }
        let mut rw = conv::conv2d_back_filter(x, rdz, k, *settings)?;
        if let Some(r) = rx {
            rw = (rw + conv::conv2d_back_filter(r, dz, k, *settings)?)?;
        }
        out[self.index[&w.as_tensor().id()]] = Some(rw);
        if !want_x {
            return Ok(None);
        }
        let hw = spatial(x)?;
        let wt = w.as_tensor().detach();
        Ok(Some(
            (conv::conv2d_back_data(rdz, &wt, hw, *settings)?
                + conv::conv2d_back_data(dz, vw, hw, *settings)?)?,
        ))
    }
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
                Run::Conv {
                    w, b, x, settings, ..
                } => {
                    let (p, st, d) = *settings;
                    let mut rz = conv::conv2d(x, dir(w), p, st, d)?;
                    if let Some(b) = b {
                        rz = conv::add_channel_bias(&rz, dir(b))?;
                    }
                    if let Some(r) = &rh {
                        rz = (rz + conv::conv2d(r, &w.as_tensor().detach(), p, st, d)?)?;
                    }
                    Some(rz)
                }
                Run::Stage {
                    w,
                    b,
                    h,
                    z,
                    maxima,
                    a,
                    settings,
                    ..
                } => {
                    let (p, st, d) = *settings;
                    let mut rz = conv::conv2d(h, dir(w), p, st, d)?;
                    if let Some(r) = &rh {
                        rz = (rz + conv::conv2d(r, &w.as_tensor().detach(), p, st, d)?)?;
                    }
                    let rp = maxima.select(&rz, z)?;
                    Some(linear::relu_back(&conv::add_channel_bias(&rp, dir(b))?, a)?)
                }
                Run::MaxPool { x, maxima } => {
                    rh.as_ref().map(|r| maxima.select(r, x)).transpose()?
                }
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
        let first = first_with_params(runs);
        for i in (0..runs.len()).rev() {
            let want_x = i > first;
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
                Run::Conv {
                    w,
                    b,
                    x,
                    settings,
                    dz,
                } => {
                    let dz = dz.as_ref().expect("the reverse pass ran");
                    if let Some(n) = self.conv_tangents(
                        w,
                        b.as_ref(),
                        x,
                        settings,
                        dz,
                        &rg,
                        &r_in[i],
                        dir(w),
                        want_x,
                        &mut out,
                    )? {
                        rg = n;
                    }
                }
                Run::Stage {
                    w,
                    b,
                    h,
                    z,
                    maxima,
                    a,
                    settings,
                    dz,
                } => {
                    let dz = dz.as_ref().expect("the reverse pass ran");
                    let rdp = linear::relu_back(&rg, a)?;
                    out[self.index[&b.as_tensor().id()]] = Some(conv::channel_sum(&rdp)?);
                    let rdz = maxima.back(&rdp, z)?;
                    if let Some(n) = self.conv_tangents(
                        w,
                        None,
                        h,
                        settings,
                        dz,
                        &rdz,
                        &r_in[i],
                        dir(w),
                        want_x,
                        &mut out,
                    )? {
                        rg = n;
                    }
                }
                Run::MaxPool { x, maxima } => {
                    if want_x {
                        rg = maxima.back(&rg, x)?;
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
