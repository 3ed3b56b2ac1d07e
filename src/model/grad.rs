//! Training gradients and Hessian-vector products of a built model, and the loss they start
//! from.
//!
//! `cross_entropy(forward(x), y).backward()` walks candle's graph, which starts every node's
//! gradient as a zero-filled tensor and adds each contribution into it: a memset and an add per
//! activation, single-threaded; a double backward does the same over a graph twice the size.
//! Where our ops run (the CPU, and CUDA in a CUDA build, in f32 or f64) the layer executor's
//! passes (`tape`) call the same ops in order on detached tensors instead:
//!
//! - the gradient: a forward pass that keeps what each layer's reverse pass needs, the softmax
//!   cross-entropy and its gradient in one pass over the logits, and the reverse pass;
//! - H·v by the R-operator (Pearlmutter 1994): the directional derivative of that forward and
//!   reverse pass along v, reusing the stored activations and deltas: about twice an SGD
//!   step's products per H·v, where a double backward through the graph costs more and keeps
//!   the whole graph alive.
//!
//! Both match the graph to rounding (tested). Elsewhere the graph computes both.

use super::{Model, norm, tape};
use crate::optim::sharpness::{GraphHessian, Hessian};
use candle_core::backprop::GradStore;
use candle_core::{DType, Result, Tensor, TensorId};
use std::collections::HashMap;

/// Mean softmax cross-entropy of `logits: [n, k]` against class indices `y: [n]`, its
/// gradient with respect to the logits, `(softmax − onehot)/n`, and the softmax, in one pass
/// (f64 inside).
pub(super) fn softmax_xent(logits: &Tensor, y: &Tensor) -> Result<(f64, Tensor, Tensor)> {
    let (n, k) = logits.dims2()?;
    let labels = y.to_dtype(DType::U32)?.to_vec1::<u32>()?;
    if labels.len() != n {
        candle_core::bail!("cross-entropy: {} labels for {n} rows", labels.len());
    }
    let z = logits
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    let mut prob = vec![0f64; n * k];
    let mut total = 0f64;
    for ((row, p), &c) in z.chunks_exact(k).zip(prob.chunks_exact_mut(k)).zip(&labels) {
        let c = c as usize;
        if c >= k {
            candle_core::bail!("cross-entropy: label {c} for {k} classes");
        }
        let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mut s = 0f64;
        for (pi, &zi) in p.iter_mut().zip(row) {
            *pi = (zi - m).exp();
            s += *pi;
        }
        total += m + s.ln() - row[c];
        p.iter_mut().for_each(|pi| *pi /= s);
    }
    let inv_n = 1.0 / n.max(1) as f64;
    let mut grad: Vec<f64> = prob.iter().map(|p| p * inv_n).collect();
    for (i, &c) in labels.iter().enumerate() {
        grad[i * k + c as usize] -= inv_n;
    }
    let (dev, dt) = (logits.device(), logits.dtype());
    let grad = Tensor::from_vec(grad, (n, k), dev)?.to_dtype(dt)?;
    let prob = Tensor::from_vec(prob, (n, k), dev)?.to_dtype(dt)?;
    Ok((total * inv_n, grad, prob))
}

/// Mean softmax cross-entropy of `logits: [n, k]` against class indices `y: [n]` and its
/// gradient with respect to the logits, `(softmax − onehot)/n`, in one pass (f64 inside).
pub fn softmax_cross_entropy(logits: &Tensor, y: &Tensor) -> Result<(f64, Tensor)> {
    let (loss, grad, _) = softmax_xent(logits, y)?;
    Ok((loss, grad))
}

/// [`softmax_cross_entropy`] with the loss as a scalar tensor, left on the logits' device: on
/// CUDA one kernel makes both, so nothing waits for the device; elsewhere the host computes
/// them. A label out of range gives a NaN loss on CUDA (an error elsewhere).
pub(super) fn softmax_cross_entropy_deferred(
    logits: &Tensor,
    y: &Tensor,
) -> Result<(Tensor, Tensor)> {
    #[cfg(feature = "cuda")]
    if logits.device().is_cuda() && matches!(logits.dtype(), DType::F32 | DType::F64) {
        let (n, k) = logits.dims2()?;
        let y = if y.dtype() == DType::U32 {
            y.clone()
        } else {
            y.to_dtype(DType::U32)?
        };
        let out = logits.apply_op2_no_bwd(&y.contiguous()?, &device::SoftmaxXent)?;
        let grad = out.narrow(0, 0, n * k)?.reshape((n, k))?;
        let loss = (out.narrow(0, n * k, n)?.to_dtype(DType::F64)?.sum_all()? / n.max(1) as f64)?;
        return Ok((loss, grad));
    }
    let (loss, grad) = softmax_cross_entropy(logits, y)?;
    Ok((Tensor::new(loss, &candle_core::Device::Cpu)?, grad))
}

#[cfg(feature = "cuda")]
mod device {
    use candle_core::{CudaStorage, CustomOp2, Layout, Result, Shape};

    /// `[n·k + n]`: the gradient of the mean softmax cross-entropy, then each row's loss.
    pub(super) struct SoftmaxXent;

    impl CustomOp2 for SoftmaxXent {
        fn name(&self) -> &'static str {
            "ahtsgd-softmax-xent"
        }

        crate::cuda::cuda_only!(_, _; "the CPU computes it on the host");

        fn cuda_fwd(
            &self,
            s1: &CudaStorage,
            l1: &Layout,
            s2: &CudaStorage,
            l2: &Layout,
        ) -> Result<(CudaStorage, Shape)> {
            let (n, k) = l1.shape().dims2()?;
            let out = crate::model::cuda::channels::softmax_xent((s1, l1), (s2, l2))?;
            Ok((out, Shape::from(n * k + n)))
        }
    }
}

impl Model {
    /// Whether [`Model::loss_grads`] and [`Model::hessian`] take the layer executor's passes
    /// on `x`'s device and dtype (see [`super::own_ops`]) rather than candle's graph.
    pub fn has_own_passes(&self, x: &Tensor) -> bool {
        super::own_ops(x)
    }

    /// The executor's passes over a batch, with batch norm in training mode for gradients and
    /// in probe mode for H·v.
    fn tape(&self, x: &Tensor, y: &Tensor, with_grads: bool) -> Result<tape::Tape> {
        let x = self.sample_batch(&x.detach())?;
        let mode = if with_grads {
            norm::Mode::Train
        } else {
            norm::Mode::Probe
        };
        tape::Tape::run(&self.nodes, x, y, with_grads, mode, self.step())
    }

    /// The mean cross-entropy of a training batch and the gradients of every parameter:
    /// what `cross_entropy(forward(x), y).backward()` gives, by the executor's passes where
    /// they run and by candle's graph otherwise (see the module docs).
    pub fn loss_grads(&self, x: &Tensor, y: &Tensor) -> Result<(f64, GradStore)> {
        let (loss, grads) = self.loss_grads_deferred(x, y)?;
        Ok((loss.to_dtype(DType::F64)?.to_scalar::<f64>()?, grads))
    }

    /// [`Model::loss_grads`] with the loss as a scalar tensor, which may still be on the device
    /// (models with batch norm on CUDA): reading it at once would wait for the device between
    /// the forward and the reverse pass.
    pub fn loss_grads_deferred(&self, x: &Tensor, y: &Tensor) -> Result<(Tensor, GradStore)> {
        if !self.has_own_passes(x) {
            let loss = super::cross_entropy(&self.forward(x)?, y)?;
            let grads = loss.backward()?;
            return Ok((loss.detach(), grads));
        }
        let t = self.tape(x, y, true)?;
        Ok((t.loss, t.grads))
    }

    /// The loss and gradients [`Model::hessian`] differentiates: batch norm in probe mode
    /// (batch statistics, running statistics untouched) and dropout off.
    pub fn probe_loss_grads(&self, x: &Tensor, y: &Tensor) -> Result<(f64, GradStore)> {
        let (loss, grads) = if self.has_own_passes(x) {
            let x = self.sample_batch(&x.detach())?;
            let t = tape::Tape::run(&self.nodes, x, y, true, norm::Mode::Probe, self.step())?;
            (t.loss, t.grads)
        } else {
            let loss = super::cross_entropy(&self.forward_mode(x, norm::Mode::Probe)?, y)?;
            let grads = loss.backward()?;
            (loss, grads)
        };
        Ok((loss.to_dtype(DType::F64)?.to_scalar::<f64>()?, grads))
    }

    /// Hessian-vector products of the mean cross-entropy of a batch (batch norm in probe
    /// mode), with directions and results in the order of [`Model::vars`]: by the R-operator
    /// where the executor's passes run, by double backward through candle's graph otherwise
    /// (which needs [`crate::optim::enable_second_order`]).
    pub fn hessian(&self, x: &Tensor, y: &Tensor) -> Result<Box<dyn Hessian + '_>> {
        if !self.has_own_passes(x) {
            let logits = self.forward_mode(x, norm::Mode::Probe)?;
            let loss = super::cross_entropy(&logits, y)?;
            return Ok(Box::new(GraphHessian::new(&loss, &self.vars())?));
        }
        let index: HashMap<TensorId, usize> = self
            .params
            .iter()
            .enumerate()
            .map(|(i, (_, v))| (v.as_tensor().id(), i))
            .collect();
        Ok(Box::new(tape::RopHessian {
            tape: self.tape(x, y, false)?,
            index,
            count: self.params.len(),
        }))
    }
}

/// The sharpness loop reaches a model through this.
impl crate::optim::estimate::Curvature for Model {
    fn hessian(&self, x: &Tensor, y: &Tensor) -> Result<Box<dyn Hessian + '_>> {
        Model::hessian(self, x, y)
    }

    fn variables(&self) -> Vec<candle_core::Var> {
        self.vars()
    }
}
