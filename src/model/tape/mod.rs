//! The executor's own passes over a stack: a forward pass that keeps what each layer's reverse
//! pass needs, the reverse pass, and Pearlmutter's R-operator (each layer's tangent forward and
//! second-order reverse), so gradients and H·v need no graph and no double backward.
//!
//! A dense layer followed by ReLU runs as one fused layer, batch norm followed by ReLU as one
//! sweep, and a convolution with a bias followed by ReLU and 2x2 max pooling as one stage that
//! pools first (max pooling commutes with a per-channel bias and with ReLU, so the values are
//! the same on a quarter of the pixels): the ops in the order the built-in MLP, CNN and ResNets
//! ran them when each had passes of its own, so their numbers stayed the same bits
//! (`tests/golden`). A residual runs its body and its shortcut as stacks of their own.
//!
//! [`Run`] is the one place a layer kind's passes live: its forward ([`forward`]), reverse
//! ([`backward`]), tangent ([`tangents`]) and second-order reverse ([`tangents_back`]).

mod act;
mod attention;
mod layer_norm;
mod norm;
mod window;

use super::exec::{Node, from_rows, positions_for, token_rows};
use super::norm::Mode;
use super::pool::{self, Maxima};
use super::readout::Readout;
use super::spec::Activation;
use super::{conv, linear};
use crate::optim::sharpness::Hessian;
use candle_core::backprop::GradStore;
use candle_core::{D, Result, Tensor, TensorId, Var};
use std::collections::HashMap;

/// Whether `nodes[i..]` starts with a convolution with a bias, ReLU and 2x2 max pooling.
fn stage_at(nodes: &[Node], i: usize) -> bool {
    matches!(
        (&nodes[i], nodes.get(i + 1), nodes.get(i + 2)),
        (
            Node::Conv { b: Some(_), .. },
            Some(Node::Act(Activation::Relu, _)),
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
    /// On tokens (`[n, t, f]`), `x` and `y` are their `[n·t, f]` rows and `tokens` is
    /// `(n, t)`.
    Dense {
        w: Var,
        b: Option<Var>,
        x: Tensor,
        y: Tensor,
        relu: bool,
        delta: Option<Tensor>,
        tokens: Option<(usize, usize)>,
    },
    /// Row `i` of `w` added at position `i`; `(n, t)`: the input's sequences and positions.
    Positions {
        w: Var,
        n: usize,
        t: usize,
    },
    Attention(attention::AttentionRun),
    /// The mean over `t` positions.
    MeanOverTokens {
        t: usize,
    },
    /// `a = f(z)`; `da`: the gradient of `a`, kept where f'' is not zero. ReLU's `z` is its
    /// output (its passes read that alone). `t`: GELU's tanh(u), where its kernels ran.
    Act {
        act: Activation,
        z: Tensor,
        a: Tensor,
        t: Option<Tensor>,
        da: Option<Tensor>,
    },
    /// Every axis but the batch's into one; `dims`: the input's shape.
    Flatten {
        dims: Vec<usize>,
    },
    /// `z = conv(x, w) (+ b)`; `dz`: the gradient of `z` (recomputed by the batch norm that
    /// follows, where one does, rather than kept twice).
    Conv {
        w: Var,
        b: Option<Var>,
        x: Tensor,
        settings: conv::Settings,
        dz: Option<Tensor>,
    },
    /// `z = conv(h, w)`, `p = maxpool(z)`, `a = relu(p + b)`; `dz`: the gradient of `z`.
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
    MaxPool {
        x: Tensor,
        maxima: Maxima,
    },
    /// Any other pooling.
    Window(window::Window),
    /// The mean of each channel's pixels; `dims`: the input's `[N, C, H, W]`.
    GlobalAvgPool {
        dims: (usize, usize, usize, usize),
    },
    /// Batch norm (then ReLU when it fused one).
    Norm(norm::NormRun),
    /// Leaky ReLU; `d`: its derivative at the input (1 or the slope).
    LeakyRelu {
        d: Tensor,
    },
    LayerNorm(layer_norm::LayerNormRun),
    /// Dropout; `mask`: `1/(1 − p)` or 0 per value (None: off, in probe mode).
    Dropout {
        mask: Option<Tensor>,
    },
    /// The rows of `w` the token ids named; `ids`: those ids, flat; `input`: their
    /// `[batch, tokens]`. The output is linear in `w` and does not depend on anything
    /// differentiable before it, so each pass is a gather or a scatter-add of rows.
    Embedding {
        w: Var,
        ids: Tensor,
        input: (usize, usize),
    },
    /// The body's output plus the shortcut's (an empty shortcut: the input).
    Residual {
        body: Vec<Run>,
        shortcut: Vec<Run>,
    },
}

/// Adds `g` to the gradient `grads` holds for `w`: a tied weight meets two.
fn accumulate(grads: &mut GradStore, w: &Var, g: Tensor) -> Result<()> {
    let g = match grads.remove(w.as_tensor()) {
        Some(earlier) => (earlier + g)?,
        None => g,
    };
    grads.insert(w.as_tensor(), g);
    Ok(())
}

/// Adds `t` to H·v's entry `slot`: a tied weight meets two.
fn accumulate_entry(out: &mut [Option<Tensor>], slot: usize, t: Tensor) -> Result<()> {
    out[slot] = Some(match out[slot].take() {
        Some(earlier) => (earlier + t)?,
        None => t,
    });
    Ok(())
}

/// A positions table's gradient from `g` (`[n, t, dim]`): the sum over the batch, in the
/// table's first `t` rows.
fn position_rows(w: &Var, g: &Tensor) -> Result<Tensor> {
    let (n, t, f) = g.dims3()?;
    // the sum over the batch, sample by sample in order (as `sum(0)` adds)
    let rows = super::linear::sum_rows(&g.reshape((n, t * f))?)?.reshape((t, f))?;
    let (context, t) = (w.dim(0)?, rows.dim(0)?);
    if t == context {
        return Ok(rows);
    }
    let rest = Tensor::zeros((context - t, rows.dim(1)?), rows.dtype(), rows.device())?;
    Tensor::cat(&[&rows, &rest], 0)
}

/// `[vocab, dim]` zeros with the rows of `g` (`[batch, tokens, dim]`) added at the rows `ids`
/// names: the gradient of an embedding table.
fn scatter_rows(w: &Var, ids: &Tensor, g: &Tensor) -> Result<Tensor> {
    let dim = w.dim(1)?;
    let rows = g.reshape((ids.elem_count(), dim))?;
    Tensor::zeros(w.shape(), g.dtype(), g.device())?.index_add(ids, &rows, 0)
}

impl Run {
    fn has_params(&self) -> bool {
        match self {
            Run::Dense { .. }
            | Run::Conv { .. }
            | Run::Stage { .. }
            | Run::Norm(_)
            | Run::LayerNorm(_)
            | Run::Embedding { .. }
            | Run::Positions { .. } => true,
            Run::Residual { body, shortcut } => body.iter().chain(shortcut).any(Run::has_params),
            Run::Act { .. }
            | Run::Flatten { .. }
            | Run::MaxPool { .. }
            | Run::Window(_)
            | Run::GlobalAvgPool { .. }
            | Run::LeakyRelu { .. }
            | Run::Attention(_)
            | Run::MeanOverTokens { .. }
            | Run::Dropout { .. } => false,
        }
    }
}

/// A normalisation with a learned scale and shift (batch norm, layer norm): the passes the
/// tape calls on either.
trait Normalization {
    fn gamma(&self) -> &Var;
    fn beta(&self) -> &Var;
    /// The reverse pass from `g`: γ's and β's gradients when `with_grads`, what the
    /// R-operator needs kept when `keep`, the input's gradient when `want_x`.
    fn backward(
        &mut self,
        g: &Tensor,
        want_x: bool,
        with_grads: bool,
        keep: bool,
        grads: &mut GradStore,
    ) -> Result<Option<Tensor>>;
    /// The output's tangent from the input's (None: zero), with R(x̂) and R(s) where the
    /// input's tangent is not zero.
    fn tangent(
        &self,
        rx: Option<&Tensor>,
        vgamma: &Tensor,
        vbeta: &Tensor,
    ) -> Result<(Tensor, Option<(Tensor, Tensor)>)>;
    /// The second-order reverse: the tangents of γ's and β's gradients, and of the input's
    /// gradient when `want_x`.
    fn tangent_back(
        &self,
        rg: &Tensor,
        kept: Option<&(Tensor, Tensor)>,
        vgamma: &Tensor,
        want_x: bool,
    ) -> Result<(Tensor, Tensor, Option<Tensor>)>;
}

impl Run {
    fn normalization(&self) -> Option<&dyn Normalization> {
        match self {
            Run::Norm(r) => Some(r),
            Run::LayerNorm(r) => Some(r),
            _ => None,
        }
    }

    fn normalization_mut(&mut self) -> Option<&mut dyn Normalization> {
        match self {
            Run::Norm(r) => Some(r),
            Run::LayerNorm(r) => Some(r),
            _ => None,
        }
    }
}

fn kernel(w: &Var) -> Result<(usize, usize)> {
    let w = w.as_tensor();
    Ok((w.dim(2)?, w.dim(3)?))
}

fn spatial(x: &Tensor) -> Result<(usize, usize)> {
    Ok((x.dim(2)?, x.dim(3)?))
}

/// The index of the first run with parameters: the runs after it need their input's gradient.
fn first_with_params(runs: &[Run]) -> usize {
    runs.iter().position(Run::has_params).unwrap_or(runs.len())
}

/// The runs a reverse pass visits, last first, each with whether its input's gradient is
/// wanted: every run after the first with parameters, and the rest only when the stack's input
/// needs its gradient (`need_input`).
fn reverse_order(runs: &[Run], need_input: bool) -> impl Iterator<Item = (usize, bool)> + use<> {
    let first = first_with_params(runs);
    (0..runs.len())
        .rev()
        .take_while(move |&i| i >= first || need_input)
        .map(move |i| (i, need_input || i > first))
}

/// Whether a stack holds batch norm (directly or in a residual).
fn has_norm(nodes: &[Node]) -> bool {
    nodes.iter().any(|n| match n {
        Node::BatchNorm(_) => true,
        Node::Residual { body, shortcut } => has_norm(body) || has_norm(shortcut),
        _ => false,
    })
}

/// Runs `nodes` on `h`, keeping what the reverse pass needs (`step` keys dropout's masks);
/// returns the runs and the output.
fn forward(nodes: &[Node], mut h: Tensor, mode: Mode, step: u64) -> Result<(Vec<Run>, Tensor)> {
    let mut runs = Vec::with_capacity(nodes.len());
    let mut i = 0;
    while i < nodes.len() {
        let relu_next = matches!(nodes.get(i + 1), Some(Node::Act(Activation::Relu, _)));
        let mut used = 1;
        let run = match &nodes[i] {
            Node::Linear { w, b } => {
                let relu = b.is_some() && relu_next;
                let wt = w.as_tensor().detach();
                let (x, tokens) = token_rows(&h)?;
                let out = match b {
                    Some(b) => linear::affine(&x, &wt, &b.as_tensor().detach(), relu)?,
                    None => linear::xwt(&x, &wt)?,
                };
                if relu {
                    used = 2;
                }
                h = from_rows(out.clone(), tokens)?;
                Run::Dense {
                    w: w.clone(),
                    b: b.clone(),
                    x,
                    y: out,
                    relu,
                    delta: None,
                    tokens,
                }
            }
            Node::Positions { w } => {
                let rows = positions_for(&w.as_tensor().detach(), &h)?;
                let (n, t) = (h.dim(0)?, h.dim(1)?);
                h = h.broadcast_add(&rows)?;
                Run::Positions { w: w.clone(), n, t }
            }
            Node::Attend { heads, causal } => {
                let (run, out) = attention::forward(&h, *heads, *causal)?;
                h = out;
                Run::Attention(run)
            }
            Node::MeanOverTokens => {
                let t = h.dim(1)?;
                h = h.mean(1)?;
                Run::MeanOverTokens { t }
            }
            Node::Act(act, tanh) => {
                let (a, t) = if *act == Activation::Gelu && super::gelu::runs_on(&h) {
                    let (a, t) = super::gelu::forward_keep(&h, *tanh)?;
                    (a, Some(t))
                } else {
                    (act.apply(&h, *tanh)?, None)
                };
                let z = std::mem::replace(&mut h, a.clone());
                // ReLU's passes read its output alone: its input is not kept
                let z = if *act == Activation::Relu {
                    a.clone()
                } else {
                    z
                };
                Run::Act {
                    act: *act,
                    z,
                    a,
                    t,
                    da: None,
                }
            }
            Node::Flatten => {
                let dims = h.dims().to_vec();
                h = h.flatten_from(1)?;
                Run::Flatten { dims }
            }
            Node::Embedding { w, vocab } => {
                let input = h.dims2()?;
                let (out, ids) = super::exec::embed(&w.as_tensor().detach(), &h, *vocab)?;
                h = out;
                Run::Embedding {
                    w: w.clone(),
                    ids,
                    input,
                }
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
                match b {
                    Some(b) if stage_at(nodes, i) => {
                        let (p, maxima) = pool::max_pool2_keep(&z)?;
                        let a =
                            linear::relu(&conv::add_channel_bias(&p, &b.as_tensor().detach())?)?;
                        used = 3;
                        Run::Stage {
                            w: w.clone(),
                            b: b.clone(),
                            h: std::mem::replace(&mut h, a.clone()),
                            z,
                            maxima,
                            a,
                            settings,
                            dz: None,
                        }
                    }
                    _ => {
                        let z = match b {
                            Some(b) => conv::add_channel_bias(&z, &b.as_tensor().detach())?,
                            None => z,
                        };
                        Run::Conv {
                            w: w.clone(),
                            b: b.clone(),
                            x: std::mem::replace(&mut h, z),
                            settings,
                            dz: None,
                        }
                    }
                }
            }
            Node::Pool {
                max: true,
                k: 2,
                stride: 2,
            } => {
                let (p, maxima) = pool::max_pool2_keep(&h)?;
                Run::MaxPool {
                    x: std::mem::replace(&mut h, p),
                    maxima,
                }
            }
            Node::Pool { max, k, stride } => {
                let (pool, out) = window::forward(&h, *max, *k, *stride)?;
                h = out;
                Run::Window(pool)
            }
            Node::GlobalAvgPool => {
                let dims = h.dims4()?;
                h = h.mean(D::Minus1)?.mean(D::Minus1)?;
                Run::GlobalAvgPool { dims }
            }
            Node::BatchNorm(bn) => {
                let (run, out) = norm::forward(bn, &h, relu_next, mode)?;
                if relu_next {
                    used = 2;
                }
                h = out;
                Run::Norm(run)
            }
            Node::LeakyRelu(slope) => {
                // 1 where x > 0, the slope elsewhere
                let d = h
                    .gt(0.0)?
                    .to_dtype(h.dtype())?
                    .affine(1.0 - slope, *slope)?;
                h = (&h * &d)?;
                Run::LeakyRelu { d }
            }
            Node::LayerNorm { gamma, beta, eps } => {
                let (run, out) = layer_norm::forward(gamma, beta, *eps, &h)?;
                h = out;
                Run::LayerNorm(run)
            }
            Node::Dropout { p, key } => {
                let mask = match mode {
                    Mode::Train => {
                        let m = super::exec::dropout_mask(*p, *key, step, &h)?;
                        h = (&h * &m)?;
                        Some(m)
                    }
                    Mode::Probe | Mode::Eval => None,
                };
                Run::Dropout { mask }
            }
            Node::Residual { body, shortcut } => {
                let (body, hb) = forward(body, h.clone(), mode, step)?;
                let (shortcut, hs) = forward(shortcut, h, mode, step)?;
                h = (hb + hs)?;
                Run::Residual { body, shortcut }
            }
        };
        runs.push(run);
        i += used;
    }
    Ok((runs, h))
}

/// What the reverse pass does besides the input's gradient.
#[derive(Clone, Copy)]
struct Want {
    /// The parameters' gradients (H·v needs the layers' deltas alone).
    grads: bool,
    /// Each layer's deltas, for the R-operator.
    keep: bool,
}

/// The reverse pass over `runs` from `g`, the gradient of their output; the gradient of their
/// input when `need_input`.
fn backward(
    runs: &mut [Run],
    mut g: Tensor,
    need_input: bool,
    want: Want,
    grads: &mut GradStore,
) -> Result<Option<Tensor>> {
    for (i, want_x) in reverse_order(runs, need_input) {
        let keep = |t: Tensor| want.keep.then_some(t);
        // batch norm right after a convolution keeps what gives the convolution's delta
        let norm_next = matches!(runs.get(i + 1), Some(Run::Norm(_)));
        match &mut runs[i] {
            Run::Dense {
                w,
                b,
                x,
                y,
                relu,
                delta,
                tokens,
            } => {
                let wt = w.as_tensor().detach();
                let asked = [want_x, want.grads, want.grads && b.is_some()];
                let rows = token_rows(&g)?.0;
                let d = linear::affine_back(x, &wt, y, &rows, *relu, asked)?;
                if let Some(gw) = d.w {
                    accumulate(grads, w, gw)?;
                }
                if let (Some(b), Some(gb)) = (b, d.b) {
                    grads.insert(b.as_tensor(), gb);
                }
                if let Some(gx) = d.x {
                    g = from_rows(gx, *tokens)?;
                }
                *delta = keep(d.delta);
            }
            Run::Positions { w, .. } => {
                if want.grads {
                    grads.insert(w.as_tensor(), position_rows(w, &g)?);
                }
            }
            Run::Attention(run) => g = run.backward(&g, want.keep)?,
            Run::MeanOverTokens { t } => g = spread_tokens(&g, *t)?,
            Run::Act { act, z, a, t, da } => {
                let dz = act::back(*act, &g, z, a, t.as_ref())?;
                let d = std::mem::replace(&mut g, dz);
                // the second-order reverse reads it where f'' is not zero
                if *act != Activation::Relu {
                    *da = keep(d);
                }
            }
            Run::Flatten { dims } => g = g.reshape(dims.clone())?,
            Run::Embedding { w, ids, input } => {
                if want.grads {
                    accumulate(grads, w, scatter_rows(w, ids, &g)?)?;
                }
                if want_x {
                    // token ids are data: nothing before them has a gradient through them
                    g = Tensor::zeros(*input, g.dtype(), g.device())?;
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
                if want.grads {
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
                *dz = if norm_next { None } else { keep(d) };
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
                if want.grads {
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
                *dz = keep(d);
            }
            Run::MaxPool { x, maxima } => g = maxima.back(&g, x)?,
            Run::Window(pool) => g = pool.back(&g)?,
            Run::GlobalAvgPool { dims } => g = spread(&g, *dims)?,
            r @ (Run::Norm(_) | Run::LayerNorm(_)) => {
                let run = r.normalization_mut().expect("a normalisation");
                if let Some(dx) = run.backward(&g, want_x, want.grads, want.keep, grads)? {
                    g = dx;
                }
            }
            Run::LeakyRelu { d } => g = (&g * &*d)?,
            Run::Dropout { mask } => {
                if let Some(m) = mask {
                    g = (&g * &*m)?;
                }
            }
            Run::Residual { body, shortcut } => {
                let gb = backward(body, g.clone(), want_x, want, grads)?;
                let gs = backward(shortcut, g.clone(), want_x, want, grads)?;
                if let (Some(gb), Some(gs)) = (gb, gs) {
                    g = (gb + gs)?;
                }
            }
        }
    }
    Ok(need_input.then_some(g))
}

/// The adjoint of a mean over `t` positions: `g: [n, d]` spread evenly over them.
fn spread_tokens(g: &Tensor, t: usize) -> Result<Tensor> {
    let (n, d) = g.dims2()?;
    (g / t as f64)?
        .reshape((n, 1, d))?
        .broadcast_as((n, t, d))?
        .contiguous()
}

/// The adjoint of a global average pool: `g: [N, C]` spread evenly over each channel's pixels.
fn spread(g: &Tensor, (n, c, h, w): (usize, usize, usize, usize)) -> Result<Tensor> {
    (g / (h * w) as f64)?
        .reshape((n, c, 1, 1))?
        .broadcast_as((n, c, h, w))?
        .contiguous()
}

/// A forward and reverse pass over a batch.
pub struct Tape {
    runs: Vec<Run>,
    /// Which of the output's logits the loss read.
    readout: Readout,
    /// The softmax of the logits (kept for H·v).
    prob: Option<Tensor>,
    /// The mean loss, a scalar that may still be on the device.
    pub loss: Tensor,
    pub grads: GradStore,
}

impl Tape {
    /// The passes over a batch `x` (samples already in the model's input shape) with batch
    /// norm and dropout in `mode` (training or probe; `step` keys dropout's masks); the parameters' gradients only when `with_grads`,
    /// and what the R-operator needs only when not (H·v needs the layers' deltas alone).
    ///
    /// The loss and its gradient are computed on the host in f64, or on the device (CUDA)
    /// for stacks with batch norm: the built-in MLP and CNN and the built-in ResNets did so,
    /// and each keeps its numbers.
    pub fn run(
        nodes: &[Node],
        x: Tensor,
        y: &Tensor,
        with_grads: bool,
        mode: Mode,
        step: u64,
    ) -> Result<Tape> {
        let (mut runs, out) = forward(nodes, x, mode, step)?;
        let readout = Readout::of(&out, y)?;
        let (logits, y) = (readout.rows(&out)?, readout.labels(y)?);
        let (loss, g, prob) = if with_grads && has_norm(nodes) {
            let (loss, g) = super::grad::softmax_cross_entropy_deferred(&logits, &y)?;
            (loss, g, None)
        } else {
            let (loss, g, prob) = super::grad::softmax_xent(&logits, &y)?;
            let loss = Tensor::new(loss, &candle_core::Device::Cpu)?;
            (loss, g, Some(prob))
        };
        let g = readout.back(g)?;
        let mut grads = GradStore::default();
        let want = Want {
            grads: with_grads,
            keep: !with_grads,
        };
        backward(&mut runs, g, false, want, &mut grads)?;
        Ok(Tape {
            runs,
            readout,
            prob,
            loss,
            grads,
        })
    }
}

/// H·v's directions, looked up by parameter, and where each result goes.
struct Directions<'a> {
    v: &'a [Tensor],
    index: &'a HashMap<TensorId, usize>,
}

impl Directions<'_> {
    fn slot(&self, p: &Var) -> usize {
        self.index[&p.as_tensor().id()]
    }

    fn of(&self, p: &Var) -> &Tensor {
        &self.v[self.slot(p)]
    }
}

/// What the R-operator's forward pass leaves for one run's second-order reverse.
enum Tangent {
    /// The run's input tangent (None: zero).
    Input(Option<Tensor>),
    /// Batch or layer norm's R(x̂) and R(s) (None when its input's tangent is zero).
    Norm(Option<(Tensor, Tensor)>),
    Attention(Option<attention::AttentionTangent>),
    Residual {
        body: Vec<Tangent>,
        shortcut: Vec<Tangent>,
    },
}

impl Tangent {
    fn input(&self) -> Option<&Tensor> {
        match self {
            Tangent::Input(r) => r.as_ref(),
            _ => None,
        }
    }
}

fn add(a: Option<Tensor>, b: Option<Tensor>) -> Result<Option<Tensor>> {
    Ok(match (a, b) {
        (Some(a), Some(b)) => Some((a + b)?),
        (a, None) => a,
        (None, b) => b,
    })
}

/// The R-operator's forward pass over `runs` from their input's tangent `rh` (None: zero):
/// what each run's second-order reverse needs, and the output's tangent.
fn tangents(
    runs: &[Run],
    mut rh: Option<Tensor>,
    dir: &Directions,
) -> Result<(Vec<Tangent>, Option<Tensor>)> {
    let mut kept = Vec::with_capacity(runs.len());
    for r in runs {
        let (tangent, next) = match r {
            Run::Dense {
                w,
                b,
                x,
                y,
                relu,
                tokens,
                ..
            } => {
                let mut rz = match b {
                    Some(b) => linear::affine(x, dir.of(w), dir.of(b), false)?,
                    None => linear::xwt(x, dir.of(w))?,
                };
                let r_in = rh.take().map(|r| token_rows(&r).map(|r| r.0)).transpose()?;
                if let Some(r) = &r_in {
                    rz = (rz + linear::xwt(r, &w.as_tensor().detach())?)?;
                }
                let out = if *relu {
                    linear::relu_back(&rz, y)?
                } else {
                    rz
                };
                (Tangent::Input(r_in), Some(from_rows(out, *tokens)?))
            }
            Run::Positions { w, n, t } => {
                let rows = dir.of(w).narrow(0, 0, *t)?;
                let out = match &rh {
                    Some(r) => r.broadcast_add(&rows)?,
                    None => {
                        let d = rows.dim(1)?;
                        rows.unsqueeze(0)?.broadcast_as((*n, *t, d))?.contiguous()?
                    }
                };
                (Tangent::Input(None), Some(out))
            }
            Run::Attention(run) => {
                let (kept, out) = run.tangent(rh.as_ref())?;
                (Tangent::Attention(kept), out)
            }
            Run::MeanOverTokens { .. } => {
                let out = rh.as_ref().map(|r| r.mean(1)).transpose()?;
                (Tangent::Input(None), out)
            }
            Run::Act { act, z, a, t, .. } => {
                let out = rh
                    .as_ref()
                    .map(|r| act::back(*act, r, z, a, t.as_ref()))
                    .transpose()?;
                let r_in = rh.take().filter(|_| *act != Activation::Relu);
                (Tangent::Input(r_in), out)
            }
            Run::Flatten { .. } => {
                let out = rh.as_ref().map(|r| r.flatten_from(1)).transpose()?;
                (Tangent::Input(None), out)
            }
            Run::Embedding { w, ids, input } => {
                let rows = dir.of(w).index_select(ids, 0)?;
                let out = rows.reshape((input.0, input.1, w.dim(1)?))?;
                (Tangent::Input(None), Some(out))
            }
            Run::Conv {
                w, b, x, settings, ..
            } => {
                let (p, st, d) = *settings;
                let mut rz = conv::conv2d(x, dir.of(w), p, st, d)?;
                if let Some(b) = b {
                    rz = conv::add_channel_bias(&rz, dir.of(b))?;
                }
                if let Some(r) = &rh {
                    rz = (rz + conv::conv2d(r, &w.as_tensor().detach(), p, st, d)?)?;
                }
                (Tangent::Input(rh.take()), Some(rz))
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
                let mut rz = conv::conv2d(h, dir.of(w), p, st, d)?;
                if let Some(r) = &rh {
                    rz = (rz + conv::conv2d(r, &w.as_tensor().detach(), p, st, d)?)?;
                }
                let rp = maxima.select(&rz, z)?;
                let out = linear::relu_back(&conv::add_channel_bias(&rp, dir.of(b))?, a)?;
                (Tangent::Input(rh.take()), Some(out))
            }
            Run::MaxPool { x, maxima } => {
                let out = rh.as_ref().map(|r| maxima.select(r, x)).transpose()?;
                (Tangent::Input(None), out)
            }
            Run::Window(pool) => {
                let out = rh.as_ref().map(|r| pool.tangent(r)).transpose()?;
                (Tangent::Input(None), out)
            }
            Run::GlobalAvgPool { .. } => {
                let out = rh
                    .as_ref()
                    .map(|r| r.mean(D::Minus1)?.mean(D::Minus1))
                    .transpose()?;
                (Tangent::Input(None), out)
            }
            r @ (Run::Norm(_) | Run::LayerNorm(_)) => {
                let run = r.normalization().expect("a normalisation");
                let (out, kept) =
                    run.tangent(rh.as_ref(), dir.of(run.gamma()), dir.of(run.beta()))?;
                (Tangent::Norm(kept), Some(out))
            }
            Run::LeakyRelu { d } => {
                let out = rh.as_ref().map(|r| r * d).transpose()?;
                (Tangent::Input(None), out)
            }
            Run::Dropout { mask } => {
                let out = match (&rh, mask) {
                    (Some(r), Some(m)) => Some((r * m)?),
                    (r, None) => r.clone(),
                    (None, Some(_)) => None,
                };
                (Tangent::Input(None), out)
            }
            Run::Residual { body, shortcut } => {
                let (tb, rb) = tangents(body, rh.clone(), dir)?;
                let (ts, rs) = tangents(shortcut, rh.take(), dir)?;
                let t = Tangent::Residual {
                    body: tb,
                    shortcut: ts,
                };
                (t, add(rb, rs)?)
            }
        };
        kept.push(tangent);
        rh = next;
    }
    Ok((kept, rh))
}

/// The R-operator's second-order reverse over `runs` from `rg`, the tangent of their output's
/// gradient: each parameter's H·v entry into `out`, and the tangent of the input's gradient
/// when `need_input`.
fn tangents_back(
    runs: &[Run],
    kept: &[Tangent],
    mut rg: Tensor,
    need_input: bool,
    dir: &Directions,
    out: &mut [Option<Tensor>],
) -> Result<Option<Tensor>> {
    for (i, want_x) in reverse_order(runs, need_input) {
        let r_in = kept[i].input();
        match &runs[i] {
            Run::Dense {
                w,
                b,
                x,
                y,
                relu,
                delta,
                tokens,
            } => {
                let delta = saved(delta)?;
                let rows = token_rows(&rg)?.0;
                let rdelta = if *relu {
                    linear::relu_back(&rows, y)?
                } else {
                    rows
                };
                // the weight's tangent and the input's, side by side where threads allow
                let rw = || -> Result<Tensor> {
                    let rw = rdelta.t()?.matmul(x)?;
                    match r_in {
                        Some(r) => rw + delta.t()?.matmul(r)?,
                        None => Ok(rw),
                    }
                };
                let next = || -> Result<Option<Tensor>> {
                    if !want_x {
                        return Ok(None);
                    }
                    let wt = w.as_tensor().detach();
                    Ok(Some((rdelta.matmul(&wt)? + delta.matmul(dir.of(w))?)?))
                };
                let (rw, next) = linear::both(&rdelta, rw, next);
                accumulate_entry(out, dir.slot(w), rw?)?;
                if let Some(b) = b {
                    out[dir.slot(b)] = Some(linear::sum_rows(&rdelta)?);
                }
                if let Some(n) = next? {
                    rg = from_rows(n, *tokens)?;
                }
            }
            Run::Positions { w, .. } => out[dir.slot(w)] = Some(position_rows(w, &rg)?),
            Run::Attention(run) => {
                let Tangent::Attention(t) = &kept[i] else {
                    candle_core::bail!("H·v: attention without its tangents");
                };
                rg = run.tangent_back(&rg, t.as_ref())?;
            }
            Run::MeanOverTokens { t } => rg = spread_tokens(&rg, *t)?,
            Run::Act { act, z, a, t, da } => {
                // R(dz) = f'(z)·R(da) + f''(z)·R(z)·da
                let t = t.as_ref();
                let mut r = act::back(*act, &rg, z, a, t)?;
                if let (Some(rz), Some(f2)) = (r_in, act::second_derivative(*act, z, a, t)?) {
                    r = (r + (f2 * (rz * saved(da)?)?)?)?;
                }
                rg = r;
            }
            Run::Flatten { dims } => rg = rg.reshape(dims.clone())?,
            Run::Embedding { w, ids, input } => {
                accumulate_entry(out, dir.slot(w), scatter_rows(w, ids, &rg)?)?;
                if want_x {
                    rg = Tensor::zeros(*input, rg.dtype(), rg.device())?;
                }
            }
            Run::Conv {
                w,
                b,
                x,
                settings,
                dz,
            } => {
                let dz = match (dz, runs.get(i + 1)) {
                    (Some(dz), _) => dz.clone(),
                    (None, Some(Run::Norm(norm))) => norm.input_grad()?,
                    (None, _) => saved(dz)?.clone(),
                };
                let dz = &dz;
                if let Some(b) = b {
                    out[dir.slot(b)] = Some(conv::channel_sum(&rg)?);
                }
                let parts = ConvParts {
                    w,
                    x,
                    settings,
                    dz,
                    rx: r_in,
                };
                if let Some(n) = parts.tangent_back(&rg, dir, want_x, out)? {
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
                let dz = saved(dz)?;
                let rdp = linear::relu_back(&rg, a)?;
                out[dir.slot(b)] = Some(conv::channel_sum(&rdp)?);
                let rdz = maxima.back(&rdp, z)?;
                let parts = ConvParts {
                    w,
                    x: h,
                    settings,
                    dz,
                    rx: r_in,
                };
                if let Some(n) = parts.tangent_back(&rdz, dir, want_x, out)? {
                    rg = n;
                }
            }
            Run::MaxPool { x, maxima } => rg = maxima.back(&rg, x)?,
            Run::Window(pool) => rg = pool.back(&rg)?,
            Run::GlobalAvgPool { dims } => rg = spread(&rg, *dims)?,
            r @ (Run::Norm(_) | Run::LayerNorm(_)) => {
                let run = r.normalization().expect("a normalisation");
                let Tangent::Norm(k) = &kept[i] else {
                    candle_core::bail!("H·v: a normalisation without its tangents");
                };
                let (vg, gamma, beta) = (dir.of(run.gamma()), run.gamma(), run.beta());
                let (rdgamma, rdbeta, next) = run.tangent_back(&rg, k.as_ref(), vg, want_x)?;
                out[dir.slot(gamma)] = Some(rdgamma);
                out[dir.slot(beta)] = Some(rdbeta);
                if let Some(n) = next {
                    rg = n;
                }
            }
            // linear maps (locally): the second-order reverse is the reverse pass
            Run::LeakyRelu { d } => rg = (&rg * d)?,
            Run::Dropout { mask } => {
                if let Some(m) = mask {
                    rg = (&rg * m)?;
                }
            }
            Run::Residual { body, shortcut } => {
                let Tangent::Residual {
                    body: tb,
                    shortcut: ts,
                } = &kept[i]
                else {
                    candle_core::bail!("H·v: a residual without its tangents");
                };
                let rb = tangents_back(body, tb, rg.clone(), want_x, dir, out)?;
                let rs = tangents_back(shortcut, ts, rg.clone(), want_x, dir, out)?;
                if let (Some(rb), Some(rs)) = (rb, rs) {
                    rg = (rb + rs)?;
                }
            }
        }
    }
    Ok(need_input.then_some(rg))
}

fn saved(t: &Option<Tensor>) -> Result<&Tensor> {
    t.as_ref()
        .ok_or_else(|| candle_core::Error::Msg("H·v: the reverse pass kept no deltas".into()))
}

/// A convolution's operands for its second-order reverse.
struct ConvParts<'a> {
    w: &'a Var,
    x: &'a Tensor,
    settings: &'a conv::Settings,
    /// The gradient of its output.
    dz: &'a Tensor,
    /// Its input's tangent (None: zero).
    rx: Option<&'a Tensor>,
}

impl ConvParts<'_> {
    /// From `rdz` (the tangent of the output's gradient), the kernel's H·v entry into `out`,
    /// and the tangent of the input's gradient when `want_x`.
    fn tangent_back(
        &self,
        rdz: &Tensor,
        dir: &Directions,
        want_x: bool,
        out: &mut [Option<Tensor>],
    ) -> Result<Option<Tensor>> {
        let k = kernel(self.w)?;
        let mut rw = conv::conv2d_back_filter(self.x, rdz, k, *self.settings)?;
        if let Some(r) = self.rx {
            rw = (rw + conv::conv2d_back_filter(r, self.dz, k, *self.settings)?)?;
        }
        out[dir.slot(self.w)] = Some(rw);
        if !want_x {
            return Ok(None);
        }
        let hw = spatial(self.x)?;
        let wt = self.w.as_tensor().detach();
        Ok(Some(
            (conv::conv2d_back_data(rdz, &wt, hw, *self.settings)?
                + conv::conv2d_back_data(self.dz, dir.of(self.w), hw, *self.settings)?)?,
        ))
    }
}

/// H·v by the R-operator over a [`Tape`] (run with batch norm in probe mode).
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
        let dir = Directions {
            v,
            index: &self.index,
        };
        let runs = &self.tape.runs;
        let mut out: Vec<Option<Tensor>> = vec![None; self.count];
        let (kept, rz) = tangents(runs, None, &dir)?;
        // R of the logits' gradient: (diag(s) − s sᵀ)·R(z) / n, row by row
        let rz =
            rz.ok_or_else(|| candle_core::Error::Msg("H·v: a model without parameters".into()))?;
        let rz = self.tape.readout.rows(&rz)?;
        let Some(prob) = &self.tape.prob else {
            candle_core::bail!("H·v: the tape did not keep the softmax");
        };
        let n = rz.dim(0)? as f64;
        let sr = (prob * &rz)?;
        let rg = ((&sr - prob.broadcast_mul(&sr.sum_keepdim(1)?)?)? / n)?;
        let rg = self.tape.readout.back(rg)?;
        tangents_back(runs, &kept, rg, false, &dir, &mut out)?;
        out.into_iter()
            .enumerate()
            .map(|(i, t)| t.ok_or_else(|| candle_core::Error::Msg(format!("H·v: no entry {i}"))))
            .collect()
    }
}
