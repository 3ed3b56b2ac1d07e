//! Batch norm's passes over `[N, C, H, W]` activations for the layer executor's passes on the
//! CPU, each fused into one sweep: the per-channel mean and variance (two reads, nothing
//! written), the normalisation and the affine map (one write each, the ReLU folded in where
//! one follows), the channel sums of the backward pass (one read of two tensors) and the
//! input gradient (one write). Built from per-channel ops, the same layer took ten writes
//! forward and five backward.
//!
//! Sums go plane by plane in parallel (16 partial sums each, so they vectorise), then each
//! channel's planes are added in image order: the same bits whatever the thread count.
//! These ops have no backward pass; the graph path (`norm::BatchNorm::forward`) keeps the
//! differentiable form. On CUDA the training pass takes `train_forward_device` and
//! `train_backward_device` instead: the same layer in eight kernels (`cuda::channels`), with
//! the coefficients left on the device.

use super::cpu::view;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

/// Per-plane work is split in tasks of about this many elements.
const TASK: usize = 1 << 14;

/// Σ f(x) over a plane with 16 partial sums.
#[inline(always)]
fn plane_sum<T: WithDType>(p: &[T], f: impl Fn(T) -> T) -> T {
    let mut acc = [T::zero(); 16];
    let mut lanes = p.chunks_exact(16);
    for l in &mut lanes {
        for (s, v) in acc.iter_mut().zip(l) {
            *s += f(*v);
        }
    }
    let mut t = T::zero();
    for v in lanes.remainder() {
        t += f(*v);
    }
    acc.iter().fold(t, |s, v| s + *v)
}

/// Σ a·b over two planes with 16 partial sums.
#[inline(always)]
fn plane_dot<T: WithDType>(a: &[T], b: &[T]) -> T {
    let mut acc = [T::zero(); 16];
    let (mut la, mut lb) = (a.chunks_exact(16), b.chunks_exact(16));
    for (x, y) in (&mut la).zip(&mut lb) {
        for ((s, u), v) in acc.iter_mut().zip(x).zip(y) {
            *s += *u * *v;
        }
    }
    let mut t = T::zero();
    for (u, v) in la.remainder().iter().zip(lb.remainder()) {
        t += *u * *v;
    }
    acc.iter().fold(t, |s, v| s + *v)
}

/// Each plane's Σx, or Σ(x − m)² with `m` its channel's entry of `centre`.
#[inline(always)]
fn plane_sums_kernel<T: WithDType>(x: &[T], plane: usize, centre: Option<&[T]>) -> Vec<T> {
    x.par_chunks(plane)
        .enumerate()
        .map(|(k, p)| match centre {
            None => plane_sum(p, |v| v),
            Some(m) => {
                let m = m[k % m.len()];
                plane_sum(p, |v| (v - m) * (v - m))
            }
        })
        .collect()
}

crate::simd::multiversion!(fn plane_sums<T: WithDType>(x: &[T], plane: usize, centre: Option<&[T]>) -> Vec<T> = plane_sums_kernel);

/// Adds the plane sums of each channel in image order.
fn per_channel<T: WithDType>(planes: &[T], c: usize) -> Vec<T> {
    let mut out = vec![T::zero(); c];
    for (k, v) in planes.iter().enumerate() {
        out[k % c] += *v;
    }
    out
}

/// Each channel's Σx (or Σ(x − centre)²) over `x: [N, C, H, W]` given row-major, planes of
/// `plane` elements: the same bits whatever the thread count.
pub(super) fn channel_sums<T: WithDType>(
    x: &[T],
    c: usize,
    plane: usize,
    centre: Option<&[T]>,
) -> Vec<T> {
    per_channel(&plane_sums(x, plane.max(1), centre), c)
}

/// The dims of an NCHW tensor as (channels, plane size).
fn channels(l: &Layout) -> Result<(usize, usize)> {
    let (_, c, h, w) = l.shape().dims4()?;
    Ok((c, h * w))
}

/// [`channels`] of two operands that must have one shape.
fn channels2(op: &str, l1: &Layout, l2: &Layout) -> Result<(usize, usize)> {
    if l1.dims() != l2.dims() {
        candle_core::bail!("{op}: operands {:?} and {:?}", l1.dims(), l2.dims());
    }
    channels(l1)
}

/// `[2, C]`: each channel's mean and (biased) variance, the variance from the deviations.
struct Moments;

impl CustomOp1 for Moments {
    fn name(&self) -> &'static str {
        "ahtsgd-bn-moments"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (c, plane) = channels(l)?;
        fn go<T: WithDType>(x: &[T], l: &Layout, c: usize, plane: usize) -> Vec<T> {
            let x = view(x, l);
            let m = T::from_f64((x.len() / c.max(1)) as f64);
            let mean: Vec<T> = channel_sums(&x, c, plane, None)
                .into_iter()
                .map(|s| s / m)
                .collect();
            let var = channel_sums(&x, c, plane, Some(&mean))
                .into_iter()
                .map(|s| s / m);
            mean.iter().copied().chain(var).collect()
        }
        let out = match s {
            CpuStorage::F32(x) => CpuStorage::F32(go(x, l, c, plane)),
            CpuStorage::F64(x) => CpuStorage::F64(go(x, l, c, plane)),
            _ => candle_core::bail!("batch-norm moments: f32 or f64"),
        };
        Ok((out, Shape::from((2, c))))
    }
}

/// Each channel's mean and biased variance (`[C]` each).
pub(crate) fn moments(x: &Tensor) -> Result<(Tensor, Tensor)> {
    let mv = x.apply_op1_no_bwd(&Moments)?;
    Ok((mv.get(0)?, mv.get(1)?))
}

/// `[2, C]`: each channel's Σdy and Σdy·x̂.
struct Dots;

impl CustomOp2 for Dots {
    fn name(&self) -> &'static str {
        "ahtsgd-bn-dots"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (c, plane) = channels2(self.name(), l1, l2)?;
        fn go<T: WithDType>(
            g: &[T],
            lg: &Layout,
            x: &[T],
            lx: &Layout,
            c: usize,
            plane: usize,
        ) -> Vec<T> {
            let (g, x) = (view(g, lg), view(x, lx));
            let sum = channel_sums(&g, c, plane, None);
            let plane = plane.max(1);
            let dots: Vec<T> = g
                .par_chunks(plane)
                .zip(x.par_chunks(plane))
                .map(|(a, b)| dot_best(a, b))
                .collect();
            sum.into_iter().chain(per_channel(&dots, c)).collect()
        }
        let out = super::cpu::f32_or_f64!(self.name(), s1, s2, |g, x| go(g, l1, x, l2, c, plane));
        Ok((out, Shape::from((2, c))))
    }
}

crate::simd::multiversion!(fn dot_best<T: WithDType>(a: &[T], b: &[T]) -> T = plane_dot);

/// Each channel's Σdy and Σdy·x̂ (`[C]` each).
pub(crate) fn dots(dy: &Tensor, xhat: &Tensor) -> Result<(Tensor, Tensor)> {
    let sd = dy.apply_op2_no_bwd(xhat, &Dots)?;
    Ok((sd.get(0)?, sd.get(1)?))
}

/// `out = x·a[c] + b[c]`, then max(·, 0) when `relu` (NaN giving 0, as the ReLU op does).
#[inline(always)]
fn affine_kernel<T: WithDType>(
    x: &[T],
    out: &mut [std::mem::MaybeUninit<T>],
    a: T,
    b: T,
    relu: bool,
) {
    if relu {
        for (o, &v) in out.iter_mut().zip(x) {
            let y = v * a + b;
            o.write(if y > T::zero() { y } else { T::zero() });
        }
    } else {
        for (o, &v) in out.iter_mut().zip(x) {
            o.write(v * a + b);
        }
    }
}

crate::simd::multiversion!(fn affine_best<T: WithDType>(
    x: &[T],
    out: &mut [std::mem::MaybeUninit<T>],
    a: T,
    b: T,
    relu: bool,
) -> () = affine_kernel);

/// `out = g·a[c] + x·b[c] + d[c]`.
#[inline(always)]
fn combine_kernel<T: WithDType>(
    g: &[T],
    x: &[T],
    out: &mut [std::mem::MaybeUninit<T>],
    k: (T, T, T),
) {
    for ((o, &u), &v) in out.iter_mut().zip(g).zip(x) {
        o.write(u * k.0 + v * k.1 + k.2);
    }
}

crate::simd::multiversion!(fn combine_best<T: WithDType>(
    g: &[T],
    x: &[T],
    out: &mut [std::mem::MaybeUninit<T>],
    k: (T, T, T),
) -> () = combine_kernel);

/// Plane-wise maps: `Affine` is x·a + b (ReLU optional), `Combine` is g·a + x·b + d, with
/// per-channel coefficients.
#[derive(Clone)]
enum PlaneMap {
    Affine {
        a: Vec<f64>,
        b: Vec<f64>,
        relu: bool,
    },
    Combine {
        a: Vec<f64>,
        b: Vec<f64>,
        d: Vec<f64>,
    },
}

impl PlaneMap {
    fn run<T: WithDType>(&self, x: &[T], g: Option<&[T]>, plane: usize) -> Vec<T> {
        let plane = plane.max(1);
        let per = (TASK / plane).max(1);
        let at = |v: &[f64], k: usize| T::from_f64(v[k % v.len()]);
        let first = g.unwrap_or(x);
        super::cpu::map_chunks(first, plane * per, |t, fs, out| {
            for (k, op) in out.chunks_mut(plane).enumerate() {
                let ch = t * per + k;
                let lo = ch * plane;
                let xs = &x[lo..lo + op.len()];
                match self {
                    PlaneMap::Affine { a, b, relu } => {
                        affine_best(xs, op, at(a, ch), at(b, ch), *relu)
                    }
                    PlaneMap::Combine { a, b, d } => {
                        let gs = &fs[k * plane..k * plane + op.len()];
                        combine_best(gs, xs, op, (at(a, ch), at(b, ch), at(d, ch)))
                    }
                }
            }
        })
    }
}

impl CustomOp1 for PlaneMap {
    fn name(&self) -> &'static str {
        "ahtsgd-bn-affine"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (_, plane) = channels(l)?;
        let out = match s {
            CpuStorage::F32(x) => CpuStorage::F32(self.run(&view(x, l), None, plane)),
            CpuStorage::F64(x) => CpuStorage::F64(self.run(&view(x, l), None, plane)),
            _ => candle_core::bail!("batch-norm affine: f32 or f64"),
        };
        Ok((out, l.shape().clone()))
    }
}

impl CustomOp2 for PlaneMap {
    fn name(&self) -> &'static str {
        "ahtsgd-bn-input-gradient"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, plane) = channels2(CustomOp2::name(self), l1, l2)?;
        let out = super::cpu::f32_or_f64!(CustomOp2::name(self), s1, s2, |g, x| {
            self.run(&view(x, l2), Some(&view(g, l1)), plane)
        });
        Ok((out, l1.shape().clone()))
    }
}

fn values(t: &Tensor) -> Result<Vec<f64>> {
    t.to_dtype(candle_core::DType::F64)?.to_vec1()
}

/// `x·a[c] + b[c]` (`a`, `b` of shape `[C]`), through a ReLU when `relu`.
pub(crate) fn affine(x: &Tensor, a: &Tensor, b: &Tensor, relu: bool) -> Result<Tensor> {
    x.apply_op1_no_bwd(&PlaneMap::Affine {
        a: values(a)?,
        b: values(b)?,
        relu,
    })
}

/// `g·a[c] + x·b[c] + d[c]` (each coefficient `[C]`).
pub(crate) fn combine(
    g: &Tensor,
    x: &Tensor,
    a: &Tensor,
    b: &Tensor,
    d: &Tensor,
) -> Result<Tensor> {
    g.apply_op2_no_bwd(
        x,
        &PlaneMap::Combine {
            a: values(a)?,
            b: values(b)?,
            d: values(d)?,
        },
    )
}

/// Batch norm in training mode on CUDA, fused: the batch statistics and the coefficients in
/// four kernels (the running statistics updated in the last), then `y = z·a + b` (through a
/// ReLU when `relu`) in one. Returns `y` and the `[4, C]` stats the reverse pass needs (mean,
/// 1/σ, a = γ/σ, b); `z` itself is kept rather than the normalised x̂.
#[cfg(feature = "cuda")]
pub(crate) fn train_forward_device(
    z: &Tensor,
    bn: &super::norm::BatchNorm,
    relu: bool,
) -> Result<(Tensor, Tensor)> {
    let stats = z.apply_op3_no_bwd(
        &bn.gamma.as_tensor().detach(),
        &bn.beta.as_tensor().detach(),
        &device::TrainStats {
            running_mean: bn.running_mean.as_tensor().clone(),
            running_var: bn.running_var.as_tensor().clone(),
            momentum: bn.momentum,
            eps: bn.eps,
        },
    )?;
    let y = z.apply_op3_no_bwd(&stats.get(2)?, &stats.get(3)?, &device::Affine(relu))?;
    Ok((y, stats))
}

/// The reverse pass of [`train_forward_device`] from `dy`: (dz, dγ, dβ), in three kernels.
#[cfg(feature = "cuda")]
pub(crate) fn train_backward_device(
    dy: &Tensor,
    z: &Tensor,
    stats: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    let k = dy.apply_op3_no_bwd(z, stats, &device::BackCoefs)?;
    let dz = dy.apply_op3_no_bwd(z, &k.narrow(0, 2, 3)?, &device::Combine)?;
    Ok((dz, k.get(0)?, k.get(1)?))
}

/// The fused training-mode passes on CUDA, their coefficients left on the device (the CPU's
/// ops read theirs into the op; on a GPU that would wait for the device).
#[cfg(feature = "cuda")]
mod device {
    use crate::model::cuda::channels;
    use candle_core::{CudaStorage, CustomOp3, Layout, Result, Shape, Storage, Tensor};

    pub(super) struct Affine(pub(super) bool);
    pub(super) struct Combine;
    /// (z, γ, β) → `[4, C]`, the running statistics updated in place.
    pub(super) struct TrainStats {
        pub(super) running_mean: Tensor,
        pub(super) running_var: Tensor,
        pub(super) momentum: f64,
        pub(super) eps: f64,
    }
    /// (dy, z, stats) → `[5, C]`: dγ, dβ, and the input gradient's coefficients.
    pub(super) struct BackCoefs;

    impl CustomOp3 for TrainStats {
        fn name(&self) -> &'static str {
            "ahtsgd-bn-train-stats"
        }

        crate::cuda::cuda_only!(_, _, _; "CUDA only");

        fn cuda_fwd(
            &self,
            s1: &CudaStorage,
            l1: &Layout,
            s2: &CudaStorage,
            l2: &Layout,
            s3: &CudaStorage,
            l3: &Layout,
        ) -> Result<(CudaStorage, Shape)> {
            let (c, _) = super::channels(l1)?;
            let (gm, lm) = self.running_mean.storage_and_layout();
            let (gv, lv) = self.running_var.storage_and_layout();
            let (Storage::Cuda(rm), Storage::Cuda(rv)) = (&*gm, &*gv) else {
                candle_core::bail!("{}: running statistics off the device", self.name());
            };
            let packed = |l: &Layout| l.is_contiguous() && l.start_offset() == 0 && l.dims() == [c];
            if !packed(lm) || !packed(lv) {
                candle_core::bail!("{}: running statistics {:?}", self.name(), lm.dims());
            }
            let out = channels::bn_train_stats(
                (s1, l1),
                (s2, l2),
                (s3, l3),
                (rm, rv),
                self.momentum,
                self.eps,
            )?;
            Ok((out, Shape::from((4, c))))
        }
    }

    impl CustomOp3 for BackCoefs {
        fn name(&self) -> &'static str {
            "ahtsgd-bn-back-coefficients"
        }

        crate::cuda::cuda_only!(_, _, _; "CUDA only");

        fn cuda_fwd(
            &self,
            s1: &CudaStorage,
            l1: &Layout,
            s2: &CudaStorage,
            l2: &Layout,
            s3: &CudaStorage,
            l3: &Layout,
        ) -> Result<(CudaStorage, Shape)> {
            let (c, _) = super::channels(l1)?;
            let out = channels::bn_back_coefs((s1, l1), (s2, l2), (s3, l3))?;
            Ok((out, Shape::from((5, c))))
        }
    }

    impl CustomOp3 for Affine {
        fn name(&self) -> &'static str {
            "ahtsgd-bn-affine-device"
        }

        crate::cuda::cuda_only!(_, _, _; "CUDA only");

        fn cuda_fwd(
            &self,
            s1: &CudaStorage,
            l1: &Layout,
            s2: &CudaStorage,
            l2: &Layout,
            s3: &CudaStorage,
            l3: &Layout,
        ) -> Result<(CudaStorage, Shape)> {
            let (c, _) = super::channels(l1)?;
            if l2.dims() != [c] || l3.dims() != [c] {
                candle_core::bail!(
                    "batch-norm affine: coefficients {:?}, {:?}",
                    l2.dims(),
                    l3.dims()
                );
            }
            let out = crate::model::cuda::channels::affine(
                (s1, l1),
                Some((s2, l2)),
                Some((s3, l3)),
                self.0,
            )?;
            Ok((out, l1.shape().clone()))
        }
    }

    impl CustomOp3 for Combine {
        fn name(&self) -> &'static str {
            "ahtsgd-bn-input-gradient-device"
        }

        crate::cuda::cuda_only!(_, _, _; "CUDA only");

        fn cuda_fwd(
            &self,
            s1: &CudaStorage,
            l1: &Layout,
            s2: &CudaStorage,
            l2: &Layout,
            s3: &CudaStorage,
            l3: &Layout,
        ) -> Result<(CudaStorage, Shape)> {
            super::channels2(self.name(), l1, l2)?;
            let out = channels::combine((s1, l1), (s2, l2), (s3, l3))?;
            Ok((out, l1.shape().clone()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{D, DType, Device};

    fn tensor(shape: &[usize], seed: u64, dtype: DType) -> Tensor {
        use rand::{Rng, SeedableRng};
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f64> = (0..n).map(|_| r.random_range(-2.0..3.0)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }

    fn close(a: &Tensor, b: &Tensor, tol: f64) {
        let d = (a.to_dtype(DType::F64).unwrap() - b.to_dtype(DType::F64).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(d < tol, "max difference {d}");
    }

    /// Per-channel statistics by candle's reductions, as `[C]`.
    fn by_channel(t: &Tensor) -> Tensor {
        t.sum(D::Minus1)
            .unwrap()
            .sum(D::Minus1)
            .unwrap()
            .sum(0)
            .unwrap()
    }

    #[test]
    fn fused_passes_match_candle_ops() {
        // planes of 15 (a partial lane group) and of 64, in both float types
        for (shape, dtype, tol) in [
            ([3, 4, 3, 5], DType::F64, 1e-12),
            ([5, 3, 8, 8], DType::F32, 1e-4),
        ] {
            let x = tensor(&shape, 1, dtype);
            let g = tensor(&shape, 2, dtype);
            let c = shape[1];
            let m = (x.elem_count() / c) as f64;
            let (mean, var) = moments(&x).unwrap();
            let want_mean = (by_channel(&x) / m).unwrap();
            close(&mean, &want_mean, tol);
            let centred = x
                .broadcast_sub(&want_mean.reshape((1, c, 1, 1)).unwrap())
                .unwrap();
            close(
                &var,
                &(by_channel(&centred.sqr().unwrap()) / m).unwrap(),
                tol,
            );

            let a = tensor(&[c], 3, dtype);
            let b = tensor(&[c], 4, dtype);
            let d = tensor(&[c], 5, dtype);
            let bc = |v: &Tensor| v.reshape((1, c, 1, 1)).unwrap();
            let lin = x
                .broadcast_mul(&bc(&a))
                .unwrap()
                .broadcast_add(&bc(&b))
                .unwrap();
            close(&affine(&x, &a, &b, false).unwrap(), &lin, tol);
            close(
                &affine(&x, &a, &b, true).unwrap(),
                &lin.relu().unwrap(),
                tol,
            );

            let (sum, dot) = dots(&g, &x).unwrap();
            close(&sum, &by_channel(&g), tol * 10.0);
            close(&dot, &by_channel(&(&g * &x).unwrap()), tol * 10.0);

            let want = ((g.broadcast_mul(&bc(&a)).unwrap() + x.broadcast_mul(&bc(&b)).unwrap())
                .unwrap())
            .broadcast_add(&bc(&d))
            .unwrap();
            close(&combine(&g, &x, &a, &b, &d).unwrap(), &want, tol);
        }
    }

    #[test]
    fn sums_do_not_depend_on_the_thread_count() {
        let x = tensor(&[16, 3, 9, 9], 7, DType::F32);
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let (m, v) = moments(&x).unwrap();
                let (s, d) = dots(&x, &x).unwrap();
                [m, v, s, d].map(|t| t.to_vec1::<f32>().unwrap())
            })
        };
        assert_eq!(run(1), run(3));
    }
}
