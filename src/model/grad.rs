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
    if let Some(&c) = labels.iter().find(|&&c| c as usize >= k) {
        candle_core::bail!("cross-entropy: label {c} for {k} classes");
    }
    match logits.dtype() {
        DType::F32 if logits.device().is_cpu() => xent_cpu::<f32>(logits, &labels),
        DType::F64 if logits.device().is_cpu() => xent_cpu::<f64>(logits, &labels),
        _ => xent_serial(logits, &labels),
    }
}

/// [`xent_rows`] on CPU logits of type `T`, as tensors.
fn xent_cpu<T: candle_core::WithDType>(
    logits: &Tensor,
    labels: &[u32],
) -> Result<(f64, Tensor, Tensor)> {
    let (n, k) = logits.dims2()?;
    let dev = logits.device();
    let (loss, grad, prob) = xent_rows(&logits.flatten_all()?.to_vec1::<T>()?, labels, k);
    Ok((
        loss,
        Tensor::from_vec(grad, (n, k), dev)?,
        Tensor::from_vec(prob, (n, k), dev)?,
    ))
}

/// [`softmax_xent`] through f64 copies of the logits, row after row (devices other than the
/// CPU); labels checked.
fn xent_serial(logits: &Tensor, labels: &[u32]) -> Result<(f64, Tensor, Tensor)> {
    let (n, k) = logits.dims2()?;
    let z = logits
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    let mut prob = vec![0f64; n * k];
    let mut total = 0f64;
    for ((row, p), &c) in z.chunks_exact(k).zip(prob.chunks_exact_mut(k)).zip(labels) {
        let c = c as usize;
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

/// [`softmax_xent`] on the CPU: rows in parallel, each through the f64 operations of the
/// serial loop in the same order, the rows' losses added in row order, the results rounded
/// to the logits' type as `to_dtype` rounds: the same bits, without the conversions' copies.
fn xent_rows<T: candle_core::WithDType>(
    z: &[T],
    labels: &[u32],
    k: usize,
) -> (f64, Vec<T>, Vec<T>) {
    use rayon::prelude::*;
    let n = labels.len();
    let inv_n = 1.0 / n.max(1) as f64;
    let mut grad = vec![T::zero(); n * k];
    let mut prob = vec![T::zero(); n * k];
    // rows per task: enough work to outweigh the hand-off
    let rows = (8192 / k.max(1)).max(1);
    let mut terms = vec![0f64; n];
    terms
        .par_chunks_mut(rows)
        .zip(grad.par_chunks_mut(rows * k))
        .zip(prob.par_chunks_mut(rows * k))
        .zip(z.par_chunks(rows * k))
        .zip(labels.par_chunks(rows))
        .for_each(|((((terms, grad), prob), z), labels)| {
            let mut p = vec![0f64; k];
            for ((((term, g), q), row), &c) in terms
                .iter_mut()
                .zip(grad.chunks_exact_mut(k))
                .zip(prob.chunks_exact_mut(k))
                .zip(z.chunks_exact(k))
                .zip(labels)
            {
                let m = row
                    .iter()
                    .map(|v| v.to_f64())
                    .fold(f64::NEG_INFINITY, f64::max);
                let mut s = 0f64;
                for (pi, zi) in p.iter_mut().zip(row) {
                    *pi = (zi.to_f64() - m).exp();
                    s += *pi;
                }
                *term = m + s.ln() - row[c as usize].to_f64();
                for ((g, q), pi) in g.iter_mut().zip(q.iter_mut()).zip(&mut p) {
                    *pi /= s;
                    *q = T::from_f64(*pi);
                    *g = T::from_f64(*pi * inv_n);
                }
                g[c as usize] = T::from_f64(p[c as usize] * inv_n - inv_n);
            }
        });
    let total = terms.iter().fold(0f64, |t, &x| t + x);
    (total * inv_n, grad, prob)
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The parallel CPU loss gives the serial loop's bits: the loss, the gradient and the
    /// softmax, in f32 and f64, over more rows than one task takes.
    #[test]
    fn parallel_cross_entropy_is_the_serial_loop() {
        let (n, k) = (700, 37);
        let z: Vec<f64> = (0..n * k)
            .map(|i| ((i * 7919) % 1013) as f64 / 37.0 - 13.0)
            .collect();
        let labels: Vec<u32> = (0..n).map(|i| (i * 31 % k) as u32).collect();
        let y = Tensor::new(labels.as_slice(), &Device::Cpu).unwrap();
        for dtype in [DType::F32, DType::F64] {
            let logits = Tensor::from_vec(z.clone(), (n, k), &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let (loss, grad, prob) = softmax_xent(&logits, &y).unwrap();
            let (want, wgrad, wprob) = xent_serial(&logits, &labels).unwrap();
            assert_eq!(loss.to_bits(), want.to_bits(), "{dtype:?} loss");
            let bits = |t: &Tensor| -> Vec<u64> {
                let v = t.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
                v.to_vec1::<f64>()
                    .unwrap()
                    .iter()
                    .map(|x| x.to_bits())
                    .collect()
            };
            assert_eq!(bits(&grad), bits(&wgrad), "{dtype:?} gradient");
            assert_eq!(bits(&prob), bits(&wprob), "{dtype:?} softmax");
            assert_eq!(grad.dtype(), dtype);
        }
        let bad = Tensor::new(&[0u32, 40], &Device::Cpu).unwrap();
        let two = Tensor::zeros((2, k), DType::F32, &Device::Cpu).unwrap();
        let err = softmax_xent(&two, &bad).unwrap_err().to_string();
        assert!(err.contains("label 40 for 37 classes"), "{err}");
    }
}
