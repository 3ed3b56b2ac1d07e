//! Running a stack of layers: each [`Node`] owns its parameters and buffers and computes its
//! forward pass from differentiable ops (candle's graph gives its gradient and, by double
//! backward, H·v).

use super::norm::{BatchNorm, Mode};
use super::spec::{Activation, Tanh};
use super::{conv, linear, pool2};
use candle_core::{D, Result, Tensor, Var};

/// One built layer.
pub enum Node {
    Linear {
        w: Var,
        b: Option<Var>,
    },
    Conv {
        w: Var,
        b: Option<Var>,
        stride: usize,
        padding: usize,
    },
    Pool {
        max: bool,
        k: usize,
        stride: usize,
    },
    GlobalAvgPool,
    Flatten,
    BatchNorm(BatchNorm),
    /// An activation, and how its tanh is computed (`tanh` and `gelu`).
    Act(Activation, Tanh),
    LeakyRelu(f64),
    LayerNorm {
        gamma: Var,
        beta: Var,
        eps: f64,
    },
    /// `key`: the layer's mask stream (from the model's seed and the layer's name).
    Dropout {
        p: f64,
        key: [u32; 2],
    },
    /// Row `id` of `w` (`[vocab, dim]`) for each token id of the input.
    Embedding {
        w: Var,
        vocab: usize,
    },
    /// `x` plus the first rows of `w` (`[context, dim]`), one per position.
    Positions {
        w: Var,
    },
    /// Attention between an attention layer's two projections (which are `Linear` nodes
    /// before and after this one).
    Attend {
        heads: usize,
        causal: bool,
    },
    MeanOverTokens,
    Residual {
        body: Vec<Node>,
        shortcut: Vec<Node>,
    },
}

/// `[n, t, f]` as `[n·t, f]` rows, with `(n, t)` to shape an output back; other ranks as
/// they are.
pub fn token_rows(x: &Tensor) -> Result<(Tensor, Option<(usize, usize)>)> {
    match *x.dims() {
        [n, t, f] => Ok((x.reshape((n * t, f))?, Some((n, t)))),
        _ => Ok((x.clone(), None)),
    }
}

/// `[n·t, f]` rows back as `[n, t, f]` when they were tokens.
pub fn from_rows(y: Tensor, tokens: Option<(usize, usize)>) -> Result<Tensor> {
    match tokens {
        Some((n, t)) => {
            let f = y.dim(1)?;
            y.reshape((n, t, f))
        }
        None => Ok(y),
    }
}

/// The first `x.dim(1)` rows of a positions table, to add to `x` (`[n, t, dim]`).
pub fn positions_for(w: &Tensor, x: &Tensor) -> Result<Tensor> {
    let t = x.dim(1)?;
    if t > w.dim(0)? {
        candle_core::bail!(
            "a sequence of {t} tokens is longer than the {} positions the model learned",
            w.dim(0)?
        );
    }
    w.narrow(0, 0, t)
}

/// The rows of `table` (`[vocab, dim]`) that the token ids `x` (`[batch, tokens]`, ids as
/// floats) name, as `[batch, tokens, dim]`, and the ids as a flat `u32` tensor. An id that is
/// not a whole number below `vocab` is an error.
pub fn embed(table: &Tensor, x: &Tensor, vocab: usize) -> Result<(Tensor, Tensor)> {
    let (n, t) = x.dims2()?;
    let ids = x.flatten_all()?.to_dtype(candle_core::DType::F64)?;
    let values = ids.to_vec1::<f64>()?;
    if let Some(bad) = values
        .iter()
        .find(|&&v| !(v >= 0.0 && v < vocab as f64 && v.fract() == 0.0))
    {
        candle_core::bail!("token id {bad} is not one of the {vocab} ids the embedding has");
    }
    let ids = ids.to_dtype(candle_core::DType::U32)?;
    let rows = table.index_select(&ids, 0)?;
    let dim = table.dim(1)?;
    Ok((rows.reshape((n, t, dim))?, ids))
}

/// Runs `nodes` in order; `step` keys dropout's masks in training mode.
pub fn forward(nodes: &[Node], x: &Tensor, mode: Mode, step: u64) -> Result<Tensor> {
    let mut h = x.clone();
    let mut i = 0;
    while i < nodes.len() {
        // a linear layer and the ReLU after it are one graph node (as in the built-in MLP)
        if let (Node::Linear { w, b: Some(b) }, Some(Node::Act(Activation::Relu, _))) =
            (&nodes[i], nodes.get(i + 1))
        {
            let (rows, tokens) = token_rows(&h)?;
            h = from_rows(
                linear::affine(&rows, w.as_tensor(), b.as_tensor(), true)?,
                tokens,
            )?;
            i += 2;
            continue;
        }
        h = nodes[i].forward(&h, mode, step)?;
        i += 1;
    }
    Ok(h)
}

impl Node {
    fn forward(&self, x: &Tensor, mode: Mode, step: u64) -> Result<Tensor> {
        match self {
            Node::Linear { w, b } => {
                let (rows, tokens) = token_rows(x)?;
                let y = match b {
                    Some(b) => linear::affine(&rows, w.as_tensor(), b.as_tensor(), false)?,
                    None => linear::xwt(&rows, w.as_tensor())?,
                };
                from_rows(y, tokens)
            }
            Node::Positions { w } => x.broadcast_add(&positions_for(w.as_tensor(), x)?),
            Node::Attend { heads, causal } => super::attention::attend(x, *heads, *causal),
            Node::MeanOverTokens => x.mean(1),
            Node::Conv {
                w,
                b,
                stride,
                padding,
            } => {
                let z = conv::conv2d(x, w.as_tensor(), *padding, *stride, 1)?;
                match b {
                    Some(b) => conv::add_channel_bias(&z, b.as_tensor()),
                    None => Ok(z),
                }
            }
            Node::Pool { max, k, stride } => pool(x, *max, *k, *stride),
            Node::GlobalAvgPool => x.mean(D::Minus1)?.mean(D::Minus1),
            Node::Flatten => x.flatten_from(1),
            Node::BatchNorm(bn) => {
                if x.rank() == 2 {
                    let (n, f) = x.dims2()?;
                    bn.forward(&x.reshape((n, f, 1, 1))?, mode)?.reshape((n, f))
                } else {
                    bn.forward(x, mode)
                }
            }
            Node::Act(a, tanh) => a.apply(x, *tanh),
            Node::LeakyRelu(slope) => x.maximum(&(x * *slope)?),
            Node::Embedding { w, vocab } => Ok(embed(w.as_tensor(), x, *vocab)?.0),
            Node::LayerNorm { gamma, beta, eps } => {
                let mean = x.mean_keepdim(D::Minus1)?;
                let centred = x.broadcast_sub(&mean)?;
                let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
                let xhat = centred.broadcast_mul(&(var + *eps)?.sqrt()?.recip()?)?;
                xhat.broadcast_mul(gamma.as_tensor())?
                    .broadcast_add(beta.as_tensor())
            }
            Node::Dropout { p, key } => match mode {
                Mode::Train => x * dropout_mask(*p, *key, step, x)?,
                Mode::Probe | Mode::Eval => Ok(x.clone()),
            },
            Node::Residual { body, shortcut } => {
                let b = forward(body, x, mode, step)?;
                let s = forward(shortcut, x, mode, step)?;
                b + s
            }
        }
    }
}

/// Dropout's mask for a tensor shaped like `like` at a training step: each entry `1/(1 − p)`
/// where the uniform of its counter (Philox4x32-10, stream `key`, block `step`, the entry's
/// index) is at least `p`, else 0. The same layer, seed and step give the same mask on every
/// machine and thread count, so reruns and resumes are bit for bit.
pub fn dropout_mask(p: f64, key: [u32; 2], step: u64, like: &Tensor) -> Result<Tensor> {
    let n = like.elem_count();
    let scale = 1.0 / (1.0 - p);
    let mask: Vec<f64> = (0..n.div_ceil(4))
        .flat_map(|j| {
            let j = j as u64;
            let words = crate::optim::stable::philox(
                [j as u32, (j >> 32) as u32, step as u32, (step >> 32) as u32],
                key,
            );
            words.map(|w| {
                let u = (f64::from(w) + 0.5) / 4_294_967_296.0;
                if u >= p { scale } else { 0.0 }
            })
        })
        .take(n)
        .collect();
    Tensor::from_vec(mask, like.shape(), like.device())?.to_dtype(like.dtype())
}

/// k x k pooling with a stride: the 2x2 case by the pooling op, others as the maximum (or
/// mean) of k² strided views, each gathered by index (differentiable at every order).
fn pool(x: &Tensor, max: bool, k: usize, stride: usize) -> Result<Tensor> {
    if k == 2 && stride == 2 {
        return pool2(x, max);
    }
    let (_, _, h, w) = x.dims4()?;
    let (oh, ow) = ((h - k) / stride + 1, (w - k) / stride + 1);
    let dev = x.device();
    let mut acc: Option<Tensor> = None;
    for di in 0..k {
        let rows: Vec<u32> = (0..oh).map(|i| (i * stride + di) as u32).collect();
        let rows = Tensor::new(rows.as_slice(), dev)?;
        let xr = x.index_select(&rows, 2)?;
        for dj in 0..k {
            let cols: Vec<u32> = (0..ow).map(|j| (j * stride + dj) as u32).collect();
            let cols = Tensor::new(cols.as_slice(), dev)?;
            let v = xr.index_select(&cols, 3)?;
            acc = Some(match acc {
                None => v,
                Some(a) if max => a.maximum(&v)?,
                Some(a) => (a + v)?,
            });
        }
    }
    let acc = acc.expect("k ≥ 1");
    if max { Ok(acc) } else { acc / (k * k) as f64 }
}
