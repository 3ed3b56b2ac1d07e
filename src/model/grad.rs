//! Training gradients and Hessian-vector products by passes written by hand over the layers.
//!
//! `cross_entropy(forward(x), y).backward()` walks candle's graph, which starts every node's
//! gradient as a zero-filled tensor and adds each contribution into it: a memset and an add per
//! activation, single-threaded; a double backward does the same over a graph twice the size.
//! For the layers whose derivatives we own (dense layers, our convolutions, max pooling, ReLU)
//! the passes here call the same ops in order on detached tensors:
//!
//! - the gradient: a forward pass that keeps each layer's input and output, the softmax
//!   cross-entropy and its gradient in one pass over the logits, and the reverse pass;
//! - H·v by the R-operator (Pearlmutter 1994): the directional derivative of that forward and
//!   reverse pass along v, reusing the stored activations and deltas. ReLU and the pooling
//!   maxima are locally fixed, so only the products with weights and the softmax contribute.
//!   It costs about one more forward and reverse pass per product, where a double backward
//!   through the graph costs two.
//!
//! Both match the graph path to rounding (tested). Models they do not cover (other
//! activations, average pooling, batch norm, other devices) take the graph path.

use super::resnet::{Block, ConvBn, ResNet};
use super::{Activation, Arch, Dense, Model, bn, conv, linear, pool};
use crate::optim::sharpness::{GraphHessian, Hessian};
use candle_core::backprop::GradStore;
use candle_core::{D, DType, Result, Tensor, TensorId};
use std::collections::HashMap;

/// The convolutions' padding, stride and dilation in the CNN.
const SAME: conv::Settings = (1, 1, 1);

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

/// One convolution stage of the CNN as it ran: `z = conv(h, w)`, `p = pool(z)`,
/// `a = relu(p + b)`.
struct Stage {
    h: Tensor,
    z: Tensor,
    maxima: pool::Maxima,
    a: Tensor,
}

/// A forward and reverse pass, kept for Hessian-vector products.
struct Tape<'m> {
    convs: &'m [Dense],
    head: &'m [Dense],
    stages: Vec<Stage>,
    /// The shape of the last stage's output (the head's input before flattening).
    map_shape: Vec<usize>,
    /// The head's activations: its input, then each layer's output (the logits last).
    acts: Vec<Tensor>,
    prob: Tensor,
    loss: f64,
    /// Per head layer, the gradient of its pre-activation (its output's, masked by ReLU).
    head_delta: Vec<Tensor>,
    /// Per stage, the gradient of `p + b` and of `z`.
    stage_delta: Vec<(Tensor, Tensor)>,
    grads: GradStore,
}

fn detached(d: &Dense) -> (Tensor, Tensor) {
    (d.w.as_tensor().detach(), d.b.as_tensor().detach())
}

impl<'m> Tape<'m> {
    /// The passes over a batch; the parameters' gradients only when `with_grads` (H·v needs
    /// the pre-activations' gradients alone, which saves the kernel-gradient products).
    fn run(
        convs: &'m [Dense],
        head: &'m [Dense],
        x: Tensor,
        y: &Tensor,
        with_grads: bool,
    ) -> Result<Self> {
        let mut stages = Vec::with_capacity(convs.len());
        let mut h = x;
        for c in convs {
            let (w, b) = detached(c);
            let z = conv::conv2d(&h, &w, SAME.0, SAME.1, SAME.2)?;
            let (p, maxima) = pool::max_pool2_keep(&z)?;
            let a = linear::relu(&conv::add_channel_bias(&p, &b)?)?;
            stages.push(Stage {
                h: std::mem::replace(&mut h, a.clone()),
                z,
                maxima,
                a,
            });
        }
        let map_shape = h.dims().to_vec();
        let mut acts = Vec::with_capacity(head.len() + 1);
        acts.push(h.flatten_from(1)?);
        for (i, l) in head.iter().enumerate() {
            let (w, b) = detached(l);
            let out = linear::affine(&acts[i], &w, &b, i + 1 < head.len())?;
            acts.push(out);
        }
        let (loss, mut g, prob) = softmax_xent(acts.last().expect("an input"), y)?;
        let mut grads = GradStore::default();
        // the head, last layer first
        let mut head_delta = Vec::with_capacity(head.len());
        for (i, l) in head.iter().enumerate().rev() {
            let want_x = i > 0 || !stages.is_empty();
            let (w, relu) = (l.w.as_tensor().detach(), i + 1 < head.len());
            let want = [want_x, with_grads, with_grads];
            let d = linear::affine_back(&acts[i], &w, &acts[i + 1], &g, relu, want)?;
            if let (Some(gw), Some(gb)) = (d.w, d.b) {
                grads.insert(l.w.as_tensor(), gw);
                grads.insert(l.b.as_tensor(), gb);
            }
            if let Some(gx) = d.x {
                g = gx;
            }
            head_delta.push(d.delta);
        }
        head_delta.reverse();
        // the stages, last first
        let mut stage_delta = Vec::with_capacity(stages.len());
        if !stages.is_empty() {
            g = g.reshape(map_shape.clone())?;
        }
        for (i, (c, s)) in convs.iter().zip(&stages).enumerate().rev() {
            let dp = linear::relu_back(&g, &s.a)?;
            let dz = s.maxima.back(&dp, &s.z)?;
            let w = c.w.as_tensor().detach();
            if with_grads {
                grads.insert(c.b.as_tensor(), conv::channel_sum(&dp)?);
                let k = (w.dim(2)?, w.dim(3)?);
                grads.insert(
                    c.w.as_tensor(),
                    conv::conv2d_back_filter(&s.h, &dz, k, SAME)?,
                );
            }
            if i > 0 {
                let hw = (s.h.dim(2)?, s.h.dim(3)?);
                g = conv::conv2d_back_data(&dz, &w, hw, SAME)?;
            }
            stage_delta.push((dp, dz));
        }
        stage_delta.reverse();
        Ok(Tape {
            convs,
            head,
            stages,
            map_shape,
            acts,
            prob,
            loss,
            head_delta,
            stage_delta,
            grads,
        })
    }
}

/// H·v by the R-operator over a [`Tape`].
struct RopHessian<'m> {
    tape: Tape<'m>,
    /// Each parameter's position in the model's parameter order.
    index: HashMap<TensorId, usize>,
    count: usize,
}

impl RopHessian<'_> {
    /// `v`'s entries for a layer's weight and bias.
    fn dir<'v>(&self, v: &'v [Tensor], d: &Dense) -> (&'v Tensor, &'v Tensor) {
        (
            &v[self.index[&d.w.as_tensor().id()]],
            &v[self.index[&d.b.as_tensor().id()]],
        )
    }
}

impl Hessian for RopHessian<'_> {
    fn hvp(&mut self, v: &[Tensor]) -> Result<Vec<Tensor>> {
        if v.len() != self.count {
            candle_core::bail!("H·v: {} directions for {} parameters", v.len(), self.count);
        }
        let t = &self.tape;
        let mut out: Vec<Option<Tensor>> = vec![None; self.count];
        // forward tangents: R(h) of each stage's input, then of the head's activations
        let mut rh: Option<Tensor> = None;
        let mut stage_rh = Vec::with_capacity(t.stages.len());
        for (c, s) in t.convs.iter().zip(&t.stages) {
            let (vw, vb) = self.dir(v, c);
            let w = c.w.as_tensor().detach();
            let mut rz = conv::conv2d(&s.h, vw, SAME.0, SAME.1, SAME.2)?;
            if let Some(r) = &rh {
                rz = (rz + conv::conv2d(r, &w, SAME.0, SAME.1, SAME.2)?)?;
            }
            let rp = s.maxima.select(&rz, &s.z)?;
            let ra = linear::relu_back(&conv::add_channel_bias(&rp, vb)?, &s.a)?;
            stage_rh.push(rh.replace(ra));
        }
        let mut ra: Vec<Option<Tensor>> = Vec::with_capacity(t.head.len() + 1);
        ra.push(rh.map(|r| r.flatten_from(1)).transpose()?);
        for (i, l) in t.head.iter().enumerate() {
            let (vw, vb) = self.dir(v, l);
            let mut rz = linear::affine(&t.acts[i], vw, vb, false)?;
            if let Some(r) = &ra[i] {
                rz = (rz + linear::xwt(r, &l.w.as_tensor().detach())?)?;
            }
            ra.push(Some(if i + 1 < t.head.len() {
                linear::relu_back(&rz, &t.acts[i + 1])?
            } else {
                rz
            }));
        }
        // R of the logits' gradient: (diag(s) − s sᵀ)·R(z) / n, row by row
        let rz = ra.last().cloned().flatten().expect("the logits' tangent");
        let n = rz.dim(0)? as f64;
        let sr = (&t.prob * &rz)?;
        let mut rg = ((&sr - t.prob.broadcast_mul(&sr.sum_keepdim(1)?)?)? / n)?;
        // reverse tangents
        for (i, l) in t.head.iter().enumerate().rev() {
            let delta = &t.head_delta[i];
            let rdelta = if i + 1 < t.head.len() {
                linear::relu_back(&rg, &t.acts[i + 1])?
            } else {
                rg.clone()
            };
            // the weight's tangent and the input's, side by side where threads allow
            let rw = || -> Result<Tensor> {
                let rw = rdelta.t()?.matmul(&t.acts[i])?;
                match &ra[i] {
                    Some(r) => rw + delta.t()?.matmul(r)?,
                    None => Ok(rw),
                }
            };
            let next = || -> Result<Option<Tensor>> {
                if i == 0 && t.stages.is_empty() {
                    return Ok(None);
                }
                let (vw, _) = self.dir(v, l);
                Ok(Some(
                    (rdelta.matmul(&l.w.as_tensor().detach())? + delta.matmul(vw)?)?,
                ))
            };
            let (rw, next) = linear::both(&rdelta, rw, next);
            out[self.index[&l.w.as_tensor().id()]] = Some(rw?);
            out[self.index[&l.b.as_tensor().id()]] = Some(linear::sum_rows(&rdelta)?);
            if let Some(n) = next? {
                rg = n;
            }
        }
        if !t.stages.is_empty() {
            rg = rg.reshape(t.map_shape.clone())?;
        }
        for (i, (c, s)) in t.convs.iter().zip(&t.stages).enumerate().rev() {
            let (_, dz) = &t.stage_delta[i];
            let rdp = linear::relu_back(&rg, &s.a)?;
            out[self.index[&c.b.as_tensor().id()]] = Some(conv::channel_sum(&rdp)?);
            let rdz = s.maxima.back(&rdp, &s.z)?;
            let w = c.w.as_tensor().detach();
            let k = (w.dim(2)?, w.dim(3)?);
            let mut rw = conv::conv2d_back_filter(&s.h, &rdz, k, SAME)?;
            if let Some(r) = &stage_rh[i] {
                rw = (rw + conv::conv2d_back_filter(r, dz, k, SAME)?)?;
            }
            out[self.index[&c.w.as_tensor().id()]] = Some(rw);
            if i > 0 {
                let (vw, _) = self.dir(v, c);
                let hw = (s.h.dim(2)?, s.h.dim(3)?);
                rg = (conv::conv2d_back_data(&rdz, &w, hw, SAME)?
                    + conv::conv2d_back_data(dz, vw, hw, SAME)?)?;
            }
        }
        out.into_iter()
            .enumerate()
            .map(|(i, t)| t.ok_or_else(|| candle_core::Error::Msg(format!("H·v: no entry {i}"))))
            .collect()
    }
}

impl Model {
    /// Whether [`Model::loss_grads`] takes the reverse pass written by hand (the ResNets on
    /// the CPU and CUDA, and wherever [`Model::has_rop`]).
    pub fn has_fast_grads(&self, x: &Tensor) -> bool {
        (matches!(self.arch, Arch::ResNet(_)) && super::own_ops(x)) || self.has_rop(x)
    }

    /// The executor's passes over a stack on a batch, where its ops run (see [`own_ops`]).
    ///
    /// [`own_ops`]: super::own_ops
    fn stack_tape(
        &self,
        x: &Tensor,
        y: &Tensor,
        with_grads: bool,
    ) -> Result<Option<super::tape::Tape>> {
        match &self.arch {
            Arch::Stack(nodes) if super::own_ops(x) => {
                let x = self.sample_batch(&x.detach())?;
                let mode = if with_grads {
                    super::resnet::Mode::Train
                } else {
                    super::resnet::Mode::Probe
                };
                Ok(Some(super::tape::Tape::run(nodes, x, y, with_grads, mode)?))
            }
            _ => Ok(None),
        }
    }

    /// Whether [`Model::hessian`] takes the R-operator pass written by hand (on the CPU and
    /// CUDA): MLPs, and CNNs with max pooling; ReLU only.
    pub fn has_rop(&self, x: &Tensor) -> bool {
        if let Arch::Stack(_) = &self.arch {
            return super::own_ops(x);
        }
        super::own_ops(x)
            && self.act == Activation::Relu
            && match &self.arch {
                Arch::Mlp { .. } => true,
                Arch::Cnn { max_pool, .. } => *max_pool,
                Arch::ResNet(_) | Arch::Stack(_) => false,
            }
    }

    /// The layers of a model with hand-written passes: convolution stages and dense head.
    fn parts(&self) -> (&[Dense], &[Dense]) {
        match &self.arch {
            Arch::Mlp { layers } => (&[], layers),
            Arch::Cnn { convs, head, .. } => (convs, head),
            Arch::ResNet(_) | Arch::Stack(_) => (&[], &[]),
        }
    }

    fn tape(&self, x: &Tensor, y: &Tensor, with_grads: bool) -> Result<Tape<'_>> {
        let (convs, head) = self.parts();
        let x = self.sample_batch(&x.detach())?;
        let x = if convs.is_empty() {
            x.flatten_from(1)?
        } else {
            x
        };
        Tape::run(convs, head, x, y, with_grads)
    }

    /// The mean cross-entropy of a training batch and the gradients of every parameter:
    /// what `cross_entropy(forward(x), y).backward()` gives, by the pass written by hand where
    /// the model allows it (see the module docs) and by candle's graph otherwise.
    pub fn loss_grads(&self, x: &Tensor, y: &Tensor) -> Result<(f64, GradStore)> {
        let (loss, grads) = self.loss_grads_deferred(x, y)?;
        Ok((loss.to_dtype(DType::F64)?.to_scalar::<f64>()?, grads))
    }

    /// [`Model::loss_grads`] with the loss as a scalar tensor, which may still be on the device
    /// (the ResNets' pass on CUDA): reading it at once would wait for the device between the
    /// forward and the reverse pass.
    pub fn loss_grads_deferred(&self, x: &Tensor, y: &Tensor) -> Result<(Tensor, GradStore)> {
        if !self.has_fast_grads(x) {
            let loss = super::cross_entropy(&self.forward(x)?, y)?;
            let grads = loss.backward()?;
            return Ok((loss.detach(), grads));
        }
        if let Arch::ResNet(net) = &self.arch {
            return self.resnet_loss_grads(net, x, y);
        }
        if let Some(t) = self.stack_tape(x, y, true)? {
            return Ok((t.loss, t.grads));
        }
        let t = self.tape(x, y, true)?;
        Ok((Tensor::new(t.loss, &candle_core::Device::Cpu)?, t.grads))
    }

    /// Hessian-vector products of the mean cross-entropy of a batch (batch norm in probe
    /// mode), with directions and results in the order of [`Model::vars`]: by the R-operator
    /// where the model allows it, by double backward through candle's graph otherwise (which
    /// needs [`crate::optim::enable_second_order`]).
    pub fn hessian(&self, x: &Tensor, y: &Tensor) -> Result<Box<dyn Hessian + '_>> {
        if !self.has_rop(x) {
            let logits = self.forward_mode(x, super::resnet::Mode::Probe)?;
            let loss = super::cross_entropy(&logits, y)?;
            return Ok(Box::new(GraphHessian::new(&loss, &self.vars())?));
        }
        let index: HashMap<TensorId, usize> = self
            .params
            .iter()
            .enumerate()
            .map(|(i, (_, v))| (v.as_tensor().id(), i))
            .collect();
        if let Some(tape) = self.stack_tape(x, y, false)? {
            return Ok(Box::new(super::tape::RopHessian {
                tape,
                index,
                count: self.params.len(),
            }));
        }
        Ok(Box::new(RopHessian {
            tape: self.tape(x, y, false)?,
            index,
            count: self.params.len(),
        }))
    }
}

// ------------------------------------------------------------------------ ResNets

/// A convolution with batch norm as it ran (training mode): the input and what batch norm's
/// reverse pass needs.
struct ConvBnRun {
    x: Tensor,
    saved: Saved,
}

enum Saved {
    /// The normalised pre-activation x̂ and `1/√(var + ε)` (the CPU's passes).
    Host { xhat: Tensor, invstd: Tensor },
    /// The convolution's output and the `[4, C]` stats of `bn::train_forward_device`.
    #[cfg(feature = "cuda")]
    Device { z: Tensor, stats: Tensor },
}

/// The convolution and its batch norm (training mode, running statistics updated), then a
/// ReLU when `relu`, each batch-norm pass fused into one sweep (`bn`).
fn convbn_forward(c: &ConvBn, x: &Tensor, relu: bool) -> Result<(Tensor, ConvBnRun)> {
    let w = c.w.as_tensor().detach();
    let z = conv::conv2d(x, &w, c.padding, c.stride, 1)?;
    #[cfg(feature = "cuda")]
    if z.device().is_cuda() {
        let (y, stats) = bn::train_forward_device(&z, &c.bn, relu)?;
        let saved = Saved::Device { z, stats };
        return Ok((
            y,
            ConvBnRun {
                x: x.clone(),
                saved,
            },
        ));
    }
    let (mean, var) = bn::moments(&z)?;
    c.bn.update_running(&mean, &var, (z.elem_count() / z.dim(1)?) as f64)?;
    let invstd = (var + c.bn.eps)?.sqrt()?.recip()?;
    let xhat = bn::affine(&z, &invstd, &(mean.neg()? * &invstd)?, false)?;
    let y = bn::affine(
        &xhat,
        &c.bn.gamma.as_tensor().detach(),
        &c.bn.beta.as_tensor().detach(),
        relu,
    )?;
    let saved = Saved::Host { xhat, invstd };
    Ok((
        y,
        ConvBnRun {
            x: x.clone(),
            saved,
        },
    ))
}

/// The reverse pass of a convolution with batch norm from `dy`; stores the gradients of the
/// kernel, γ and β and returns the input's gradient when `want_x`.
fn convbn_backward(
    c: &ConvBn,
    r: &ConvBnRun,
    dy: &Tensor,
    want_x: bool,
    grads: &mut GradStore,
) -> Result<Option<Tensor>> {
    let (dz, dgamma, dbeta) = match &r.saved {
        Saved::Host { xhat, invstd } => {
            let m = (dy.elem_count() / dy.dim(1)?) as f64;
            let (dbeta, dgamma) = bn::dots(dy, xhat)?;
            // dz = γ·invstd·(dy − dβ/m − xhat·dγ/m), in one pass
            let k = (c.bn.gamma.as_tensor().detach() * invstd)?;
            let dz = bn::combine(
                dy,
                xhat,
                &k,
                &(&k * (&dgamma / -m)?)?,
                &(&k * (&dbeta / -m)?)?,
            )?;
            (dz, dgamma, dbeta)
        }
        #[cfg(feature = "cuda")]
        Saved::Device { z, stats } => bn::train_backward_device(dy, z, stats)?,
    };
    grads.insert(c.bn.gamma.as_tensor(), dgamma);
    grads.insert(c.bn.beta.as_tensor(), dbeta);
    let w = c.w.as_tensor().detach();
    let settings = (c.padding, c.stride, 1);
    let k = (w.dim(2)?, w.dim(3)?);
    grads.insert(
        c.w.as_tensor(),
        conv::conv2d_back_filter(&r.x, &dz, k, settings)?,
    );
    if !want_x {
        return Ok(None);
    }
    let hw = (r.x.dim(2)?, r.x.dim(3)?);
    Ok(Some(conv::conv2d_back_data(&dz, &w, hw, settings)?))
}

/// One residual block as it ran.
struct BlockRun {
    convs: Vec<ConvBnRun>,
    /// The ReLU outputs between the block's convolutions.
    inner: Vec<Tensor>,
    shortcut: Option<ConvBnRun>,
    out: Tensor,
}

fn block_forward(b: &Block, x: &Tensor) -> Result<BlockRun> {
    let mut h = x.clone();
    let (mut convs, mut inner) = (Vec::new(), Vec::new());
    for (i, c) in b.convs.iter().enumerate() {
        let inside = i + 1 < b.convs.len();
        let (y, run) = convbn_forward(c, &h, inside)?;
        convs.push(run);
        if inside {
            inner.push(y.clone());
        }
        h = y;
    }
    let (skip, shortcut) = match &b.shortcut {
        Some(s) => {
            let (y, run) = convbn_forward(s, x, false)?;
            (y, Some(run))
        }
        None => (x.clone(), None),
    };
    let out = linear::relu(&(h + skip)?)?;
    Ok(BlockRun {
        convs,
        inner,
        shortcut,
        out,
    })
}

fn block_backward(
    b: &Block,
    r: &BlockRun,
    dout: &Tensor,
    want_x: bool,
    grads: &mut GradStore,
) -> Result<Option<Tensor>> {
    let dsum = linear::relu_back(dout, &r.out)?;
    let mut g = dsum.clone();
    for (i, (c, run)) in b.convs.iter().zip(&r.convs).enumerate().rev() {
        if i + 1 < b.convs.len() {
            g = linear::relu_back(&g, &r.inner[i])?;
        }
        match convbn_backward(c, run, &g, i > 0 || want_x, grads)? {
            Some(dx) => g = dx,
            None => return Ok(None),
        }
    }
    let dskip = match (&b.shortcut, &r.shortcut) {
        (Some(s), Some(run)) => convbn_backward(s, run, &dsum, true, grads)?.expect("asked for"),
        _ => dsum,
    };
    Ok(Some((g + dskip)?))
}

impl Model {
    /// The loss and gradients of a ResNet batch (batch norm in training mode, running
    /// statistics updated) by the reverse pass written by hand.
    fn resnet_loss_grads(
        &self,
        net: &ResNet,
        x: &Tensor,
        y: &Tensor,
    ) -> Result<(Tensor, GradStore)> {
        let x = self.sample_batch(&x.detach())?;
        let mut grads = GradStore::default();
        let (mut h, stem) = convbn_forward(&net.stem, &x, true)?;
        let stem_out = h.clone();
        let mut runs = Vec::with_capacity(net.blocks.len());
        for b in &net.blocks {
            let r = block_forward(b, &h)?;
            h = r.out.clone();
            runs.push(r);
        }
        let (n, c, hh, ww) = h.dims4()?;
        let pooled = h.mean(D::Minus1)?.mean(D::Minus1)?;
        let (fw, fb) = (net.fc_w.as_tensor().detach(), net.fc_b.as_tensor().detach());
        let logits = linear::affine(&pooled, &fw, &fb, false)?;
        let (loss, dlogits) = softmax_cross_entropy_deferred(&logits, y)?;
        grads.insert(net.fc_w.as_tensor(), dlogits.t()?.matmul(&pooled)?);
        grads.insert(net.fc_b.as_tensor(), linear::sum_rows(&dlogits)?);
        let dpooled = (dlogits.matmul(&fw)? / (hh * ww) as f64)?;
        let mut g = dpooled
            .reshape((n, c, 1, 1))?
            .broadcast_as((n, c, hh, ww))?
            .contiguous()?;
        for (b, r) in net.blocks.iter().zip(&runs).rev() {
            g = block_backward(b, r, &g, true, &mut grads)?.expect("asked for");
        }
        let g = linear::relu_back(&g, &stem_out)?;
        convbn_backward(&net.stem, &stem, &g, false, &mut grads)?;
        Ok((loss, grads))
    }
}
