//! The training gradient by a reverse pass written by hand over the model's layers.
//!
//! `cross_entropy(forward(x), y).backward()` walks candle's graph, which starts every node's
//! gradient as a zero-filled tensor and adds each contribution into it: a memset and an add per
//! activation, single-threaded. For the layers whose backward passes we own (dense layers, our
//! convolutions and max pooling, ReLU) the reverse pass here calls the same backward ops in
//! order on detached tensors, with the softmax cross-entropy and its gradient fused in one pass
//! over the logits. It gives the gradients of the graph path up to the rounding of the loss
//! (tested); models it does not cover (other activations, average pooling, batch norm, other
//! devices) take the graph path. Second order (HVPs) always uses the graph.

use super::{Activation, Arch, Dense, Model, conv, linear, pool};
use candle_core::backprop::GradStore;
use candle_core::{DType, Result, Tensor};

/// Mean softmax cross-entropy of `logits: [n, k]` against class indices `y: [n]`, and its
/// gradient with respect to the logits, `(softmax − onehot)/n`, in one pass (f64 inside).
pub fn softmax_cross_entropy(logits: &Tensor, y: &Tensor) -> Result<(f64, Tensor)> {
    let (n, k) = logits.dims2()?;
    let labels = y.to_dtype(DType::U32)?.to_vec1::<u32>()?;
    if labels.len() != n {
        candle_core::bail!("cross-entropy: {} labels for {n} rows", labels.len());
    }
    let z = logits
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    let mut grad = vec![0f64; n * k];
    let mut total = 0f64;
    let inv_n = 1.0 / n.max(1) as f64;
    for ((row, g), &c) in z.chunks_exact(k).zip(grad.chunks_exact_mut(k)).zip(&labels) {
        let c = c as usize;
        if c >= k {
            candle_core::bail!("cross-entropy: label {c} for {k} classes");
        }
        let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mut s = 0f64;
        for (gi, &zi) in g.iter_mut().zip(row) {
            *gi = (zi - m).exp();
            s += *gi;
        }
        total += m + s.ln() - row[c];
        for gi in g.iter_mut() {
            *gi *= inv_n / s;
        }
        g[c] -= inv_n;
    }
    let grad = Tensor::from_vec(grad, (n, k), logits.device())?.to_dtype(logits.dtype())?;
    Ok((total * inv_n, grad))
}

/// Forward through a dense stack on detached parameters: the input and output of every layer
/// (ReLU between layers, none after the last).
fn stack_forward(layers: &[Dense], x: Tensor) -> Result<Vec<Tensor>> {
    let mut acts = Vec::with_capacity(layers.len() + 1);
    acts.push(x);
    for (i, l) in layers.iter().enumerate() {
        let relu = i + 1 < layers.len();
        let out = linear::affine(
            &acts[i],
            &l.w.as_tensor().detach(),
            &l.b.as_tensor().detach(),
            relu,
        )?;
        acts.push(out);
    }
    Ok(acts)
}

/// The reverse pass of [`stack_forward`] from the gradient of the last output; stores the
/// parameter gradients and returns the input's gradient when `want_input`.
fn stack_backward(
    layers: &[Dense],
    acts: &[Tensor],
    mut g: Tensor,
    want_input: bool,
    store: &mut GradStore,
) -> Result<Option<Tensor>> {
    for (i, l) in layers.iter().enumerate().rev() {
        let relu = i + 1 < layers.len();
        let w = l.w.as_tensor().detach();
        let want_x = i > 0 || want_input;
        let (gx, gw, gb) =
            linear::affine_back(&acts[i], &w, &acts[i + 1], &g, relu, [want_x, true, true])?;
        store.insert(l.w.as_tensor(), gw.expect("asked for"));
        store.insert(l.b.as_tensor(), gb.expect("asked for"));
        match gx {
            Some(gx) => g = gx,
            None => return Ok(None),
        }
    }
    Ok(Some(g))
}

impl Model {
    /// Whether [`Model::loss_grads`] takes the reverse pass written by hand.
    pub fn has_fast_grads(&self, x: &Tensor) -> bool {
        x.device().is_cpu()
            && matches!(x.dtype(), DType::F32 | DType::F64)
            && self.act == Activation::Relu
            && match &self.arch {
                Arch::Mlp { .. } => true,
                Arch::Cnn { max_pool, .. } => *max_pool,
                Arch::ResNet(_) => false,
            }
    }

    /// The mean cross-entropy of a training batch and the gradients of every parameter:
    /// what `cross_entropy(forward(x), y).backward()` gives, by the reverse pass written by
    /// hand where the model allows it (see the module docs) and by candle's graph otherwise.
    pub fn loss_grads(&self, x: &Tensor, y: &Tensor) -> Result<(f64, GradStore)> {
        if !self.has_fast_grads(x) {
            let loss = super::cross_entropy(&self.forward(x)?, y)?;
            let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            return Ok((value, loss.backward()?));
        }
        let mut store = GradStore::default();
        let x = self.sample_batch(&x.detach())?;
        let loss = match &self.arch {
            Arch::Mlp { layers } => {
                let acts = stack_forward(layers, x.flatten_from(1)?)?;
                let (loss, g) = softmax_cross_entropy(acts.last().expect("input"), y)?;
                stack_backward(layers, &acts, g, false, &mut store)?;
                loss
            }
            Arch::Cnn { convs, head, .. } => {
                // per stage: z = conv(h), p = pool(z), a = relu(p + b), as in `forward_mode`
                let mut ins = Vec::with_capacity(convs.len());
                let mut stages = Vec::with_capacity(convs.len());
                let mut h = x;
                for c in convs {
                    let z = conv::conv2d(&h, &c.w.as_tensor().detach(), 1, 1, 1)?;
                    let (p, maxima) = pool::max_pool2_keep(&z)?;
                    let a = linear::relu(&conv::add_channel_bias(&p, &c.b.as_tensor().detach())?)?;
                    ins.push(std::mem::replace(&mut h, a.clone()));
                    stages.push((z, maxima, a));
                }
                let shape = h.dims().to_vec();
                let acts = stack_forward(head, h.flatten_from(1)?)?;
                let (loss, g) = softmax_cross_entropy(acts.last().expect("input"), y)?;
                let mut g = stack_backward(head, &acts, g, true, &mut store)?
                    .expect("asked for")
                    .reshape(shape)?;
                for (i, (c, (z, maxima, a))) in convs.iter().zip(stages).enumerate().rev() {
                    let ga = linear::relu_back(&g, &a)?;
                    store.insert(c.b.as_tensor(), conv::channel_sum(&ga)?);
                    let gz = maxima.back(&ga, &z)?;
                    let w = c.w.as_tensor().detach();
                    let (gh, gw) = conv::conv2d_back(&ins[i], &w, &gz, (1, 1, 1), i > 0)?;
                    store.insert(c.w.as_tensor(), gw);
                    match gh {
                        Some(gh) => g = gh,
                        None => break,
                    }
                }
                loss
            }
            Arch::ResNet(_) => unreachable!("has_fast_grads"),
        };
        Ok((loss, store))
    }
}
