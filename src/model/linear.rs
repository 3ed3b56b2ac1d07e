//! `x·wᵀ` as a custom op, so the backward pass skips the gradient of an input that needs none
//! (the data, for the first layer): candle's own matmul always computes both sides. The
//! backward is written with ordinary ops, so second-order gradients keep working.

use super::cpu::{f32_or_f64, view};
use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, WithDType,
};

struct Linear;

/// Tensors at least this large are split across threads by the elementwise ops here.
const PAR_MIN: usize = 1 << 15;

/// `x·wᵀ (+ b) (then max(·, 0))` into a fresh row-major buffer.
fn gemm_xwt<T: Kern + 'static>(
    x: &[T],
    lx: &Layout,
    w: &[T],
    lw: &Layout,
    bias: Option<(&[T], &Layout)>,
    relu: bool,
) -> Result<(Vec<T>, Shape)> {
    let (n, i) = lx.shape().dims2()?;
    let (o, i2) = lw.shape().dims2()?;
    if i != i2 {
        candle_core::bail!("linear: input has {i} features, weight expects {i2}");
    }
    let (sx, sw) = (lx.stride(), lw.stride());
    let mut dst = Vec::with_capacity(n * o);
    let read_dst = match bias {
        Some((b, lb)) => {
            if lb.dims() != [o] {
                candle_core::bail!("linear: bias of shape {:?} for {o} outputs", lb.dims());
            }
            let (start, stride) = (lb.start_offset(), lb.stride()[0]);
            let row: Vec<T> = (0..o).map(|j| b[start + j * stride]).collect();
            for _ in 0..n {
                dst.extend_from_slice(&row);
            }
            true
        }
        None => {
            dst.resize(n * o, T::zero());
            false
        }
    };
    let threads = candle_core::utils::get_num_threads();
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the pointers cover the tensors' layouts (offsets and strides from candle), and
    // dst is an n×o row-major buffer (initialised: it is read when it holds the bias).
    unsafe {
        gemm::gemm(
            n,
            o,
            i,
            dst.as_mut_ptr(),
            1,
            o as isize,
            read_dst,
            x[lx.start_offset()..].as_ptr(),
            sx[1] as isize,
            sx[0] as isize,
            // rhs (k = input feature, j = output) is wᵀ
            w[lw.start_offset()..].as_ptr(),
            sw[0] as isize,
            sw[1] as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            par,
        );
    }
    if relu {
        let clamp = |c: &mut [T]| clamp(c);
        if dst.len() >= PAR_MIN && threads > 1 {
            use rayon::prelude::*;
            dst.par_chunks_mut(PAR_MIN / 4).for_each(clamp);
        } else {
            clamp(&mut dst);
        }
    }
    Ok((dst, Shape::from((n, o))))
}

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "ahtsgd-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(w)) => {
                gemm_xwt(x, l1, w, l2, None, false).map(|(d, s)| (CpuStorage::F32(d), s))
            }
            (CpuStorage::F64(x), CpuStorage::F64(w)) => {
                gemm_xwt(x, l1, w, l2, None, false).map(|(d, s)| (CpuStorage::F64(d), s))
            }
            _ => candle_core::bail!("linear: f32 or f64 inputs of one type"),
        }
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let gx = if x.track_op() {
            Some(grad.matmul(w)?)
        } else {
            None
        };
        let gw = if w.track_op() {
            Some(grad.t()?.matmul(x)?)
        } else {
            None
        };
        Ok((gx, gw))
    }
}

/// `x·wᵀ` for `x: [n, in]`, `w: [out, in]`.
pub fn xwt(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() {
        x.apply_op2(w, Linear)
    } else {
        x.matmul(&w.t()?)
    }
}

/// A dense layer `x·wᵀ + b`, with ReLU fused when `relu`: one graph node instead of three, so
/// the backward pass makes one set of gradients instead of a zero-filled buffer and an add per
/// intermediate. The backward is written with ordinary ops and the two helpers below, whose own
/// backward passes are ordinary ops, so second-order gradients keep working.
struct Affine {
    relu: bool,
}

impl CustomOp3 for Affine {
    fn name(&self) -> &'static str {
        "ahtsgd-affine"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(w), CpuStorage::F32(b)) => {
                gemm_xwt(x, l1, w, l2, Some((b, l3)), self.relu)
                    .map(|(d, s)| (CpuStorage::F32(d), s))
            }
            (CpuStorage::F64(x), CpuStorage::F64(w), CpuStorage::F64(b)) => {
                gemm_xwt(x, l1, w, l2, Some((b, l3)), self.relu)
                    .map(|(d, s)| (CpuStorage::F64(d), s))
            }
            _ => candle_core::bail!("affine: f32 or f64 inputs of one type"),
        }
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let want = [x.track_op(), w.track_op(), b.track_op()];
        let g = affine_back(x, w, res, grad, self.relu, want)?;
        Ok((g.x, g.w, g.b))
    }
}

/// The reverse pass of a dense layer: the gradient of its pre-activation (`delta`) and of the
/// operands asked for.
pub(crate) struct AffineGrads {
    pub delta: Tensor,
    pub x: Option<Tensor>,
    pub w: Option<Tensor>,
    pub b: Option<Tensor>,
}

/// The gradients of a dense layer `res = act(x·wᵀ + b)` (ReLU when `relu`) from `grad`, the
/// gradient of `res`, for the operands marked in `want` (x, w, b), with differentiable ops.
pub(crate) fn affine_back(
    x: &Tensor,
    w: &Tensor,
    res: &Tensor,
    grad: &Tensor,
    relu: bool,
    want: [bool; 3],
) -> Result<AffineGrads> {
    let delta = if relu {
        relu_back(grad, res)?
    } else {
        grad.clone()
    };
    let gx = || want[0].then(|| delta.matmul(w)).transpose();
    let gw = || want[1].then(|| delta.t()?.matmul(x)).transpose();
    let (gx, gw) = both(&delta, gx, gw);
    let (gx, gw) = (gx?, gw?);
    let gb = if want[2] {
        Some(sum_rows(&delta)?)
    } else {
        None
    };
    Ok(AffineGrads {
        delta,
        x: gx,
        w: gw,
        b: gb,
    })
}

/// Two independent products: side by side on the CPU when there are threads to spare (each
/// still splits its own work as before, so the results are the same bits), one after the
/// other elsewhere. The MLP's products are small enough that a second thread helps more by
/// taking a whole product than by taking half of each; the step measured 2-8% faster on two
/// threads.
pub(crate) fn both<A: Send, B: Send>(
    on: &Tensor,
    a: impl FnOnce() -> A + Send,
    b: impl FnOnce() -> B + Send,
) -> (A, B) {
    if on.device().is_cpu() && rayon::current_num_threads() > 1 {
        rayon::join(a, b)
    } else {
        (a(), b())
    }
}

/// `grad` where the ReLU output `res` is positive, 0 elsewhere.
struct ReluBack;

/// Float types with branch-free kernels that vectorise (written per type: the generic
/// versions compiled to scalar code that selected between addresses).
trait Kern: WithDType {
    fn clamp(c: &mut [Self]);
    fn mask(out: &mut [Self], g: &[Self], r: &[Self]);
}

macro_rules! kern {
    ($t:ty) => {
        impl Kern for $t {
            #[inline(always)]
            fn clamp(c: &mut [$t]) {
                for v in c {
                    *v = v.max(0.0);
                }
            }
            #[inline(always)]
            fn mask(out: &mut [$t], g: &[$t], r: &[$t]) {
                for ((o, &g), &r) in out.iter_mut().zip(g).zip(r) {
                    *o = if r > 0.0 { g } else { 0.0 };
                }
            }
        }
    };
}
kern!(f32);
kern!(f64);

#[inline(always)]
fn clamp_kernel<T: Kern>(c: &mut [T]) {
    T::clamp(c)
}

#[inline(always)]
fn mask_kernel<T: Kern>(out: &mut [T], g: &[T], r: &[T]) {
    T::mask(out, g, r)
}

crate::simd::multiversion!(fn clamp<T: Kern>(c: &mut [T]) -> () = clamp_kernel);
crate::simd::multiversion!(fn mask<T: Kern>(out: &mut [T], g: &[T], r: &[T]) -> () = mask_kernel);

fn relu_back_slices<T: Kern>(g: &[T], lg: &Layout, r: &[T], lr: &Layout) -> Vec<T> {
    let (g, r) = (view(g, lg), view(r, lr));
    let mut out = vec![T::zero(); g.len()];
    if out.len() >= PAR_MIN && candle_core::utils::get_num_threads() > 1 {
        use rayon::prelude::*;
        out.par_chunks_mut(PAR_MIN / 4)
            .zip(g.par_chunks(PAR_MIN / 4).zip(r.par_chunks(PAR_MIN / 4)))
            .for_each(|(o, (g, r))| mask(o, g, r));
    } else {
        mask(&mut out, &g, &r);
    }
    out
}

impl CustomOp2 for ReluBack {
    fn name(&self) -> &'static str {
        "ahtsgd-relu-back"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if l1.dims() != l2.dims() {
            candle_core::bail!("relu-back: shapes {:?} and {:?}", l1.dims(), l2.dims());
        }
        let out = f32_or_f64!(self.name(), s1, s2, |g, r| relu_back_slices(g, l1, r, l2));
        Ok((out, l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        if l1.dims() != l2.dims() || s1.dtype() != s2.dtype() {
            candle_core::bail!("relu-back: operands {:?} and {:?}", l1.dims(), l2.dims());
        }
        let out = super::cuda::channels::relu_back((s1, l1), (s2, l2))?;
        Ok((out, l1.shape().clone()))
    }

    /// Linear in `grad` with the same mask; the mask itself has zero derivative (almost
    /// everywhere), so `res` gets none.
    fn bwd(
        &self,
        _grad: &Tensor,
        res: &Tensor,
        _out: &Tensor,
        g2: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(relu_back(g2, res)?), None))
    }
}

pub(crate) fn relu_back(grad: &Tensor, res: &Tensor) -> Result<Tensor> {
    if super::own_ops(grad) {
        grad.apply_op2(res, ReluBack)
    } else {
        grad * res.gt(0.0)?.to_dtype(res.dtype())?
    }
}

/// Column sums of a matrix `[n, o] -> [o]` (the bias gradient): one pass over the rows.
struct SumRows;

fn sum_rows_slices<T: WithDType>(a: &[T], l: &Layout, n: usize, o: usize) -> Vec<T> {
    let a = view(a, l);
    let mut out = vec![T::zero(); o];
    for row in a.chunks_exact(o.max(1)).take(n) {
        for (s, v) in out.iter_mut().zip(row) {
            *s += *v;
        }
    }
    out
}

impl CustomOp1 for SumRows {
    fn name(&self) -> &'static str {
        "ahtsgd-sum-rows"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, o) = l.shape().dims2()?;
        let out = match s {
            CpuStorage::F32(a) => CpuStorage::F32(sum_rows_slices(a, l, n, o)),
            CpuStorage::F64(a) => CpuStorage::F64(sum_rows_slices(a, l, n, o)),
            _ => candle_core::bail!("sum-rows: f32 or f64"),
        };
        Ok((out, Shape::from(o)))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (n, o) = arg.dims2()?;
        Ok(Some(grad.reshape((1, o))?.broadcast_as((n, o))?))
    }
}

pub(crate) fn sum_rows(a: &Tensor) -> Result<Tensor> {
    if a.device().is_cpu() {
        a.apply_op1(SumRows)
    } else {
        a.sum(0)
    }
}

/// `x·wᵀ + b` for `x: [n, in]`, `w: [out, in]`, `b: [out]`, with ReLU applied when `relu`.
pub fn affine(x: &Tensor, w: &Tensor, b: &Tensor, relu: bool) -> Result<Tensor> {
    if x.device().is_cpu() {
        x.apply_op3(w, b, Affine { relu })
    } else {
        let y = x.matmul(&w.t()?)?.broadcast_add(b)?;
        if relu { self::relu(&y) } else { Ok(y) }
    }
}

/// `max(x, 0)` whose gradient is 1 where the output is positive and 0 elsewhere (PyTorch's
/// convention at 0; candle's own `relu` passes the gradient at 0), in one pass each way.
struct Relu;

impl CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "ahtsgd-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        fn go<T: Kern>(a: &[T], l: &Layout) -> Vec<T> {
            // one pass from the input (no copy first), max(x, 0) with NaN giving 0 as `clamp`
            super::cpu::map_chunks(&view(a, l), PAR_MIN / 4, |_, xs, out| {
                for (o, &v) in out.iter_mut().zip(xs) {
                    o.write(if v > T::zero() { v } else { T::zero() });
                }
            })
        }
        let out = match s {
            CpuStorage::F32(a) => CpuStorage::F32(go(a, l)),
            CpuStorage::F64(a) => CpuStorage::F64(go(a, l)),
            _ => candle_core::bail!("relu: f32 or f64"),
        };
        Ok((out, l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        Ok((super::cuda::channels::relu(s, l)?, l.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(relu_back(grad, res)?))
    }
}

/// ReLU with the gradient convention of `Relu` on every device.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    if super::own_ops(x) {
        x.apply_op1(Relu)
    } else {
        x * x.gt(0.0)?.to_dtype(x.dtype())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    #[test]
    fn matches_matmul_and_its_gradients() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(
            &Tensor::arange(0f64, 24.0, &dev)
                .unwrap()
                .reshape((4, 6))
                .unwrap()
                .affine(0.1, -1.0)
                .unwrap(),
        )
        .unwrap();
        let w = Var::from_tensor(
            &Tensor::arange(0f64, 18.0, &dev)
                .unwrap()
                .reshape((3, 6))
                .unwrap()
                .affine(-0.05, 0.4)
                .unwrap(),
        )
        .unwrap();
        let ours = xwt(x.as_tensor(), w.as_tensor()).unwrap();
        let theirs = x.as_tensor().matmul(&w.as_tensor().t().unwrap()).unwrap();
        assert_eq!(
            ours.to_vec2::<f64>().unwrap(),
            theirs.to_vec2::<f64>().unwrap()
        );
        let g1 = ours.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = theirs.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&x, &w] {
            let (a, b) = (
                g1.get(v.as_tensor()).unwrap(),
                g2.get(v.as_tensor()).unwrap(),
            );
            assert_eq!(a.to_vec2::<f64>().unwrap(), b.to_vec2::<f64>().unwrap());
        }
        // a transposed (strided) input
        let xt = Tensor::arange(0f64, 24.0, &dev)
            .unwrap()
            .reshape((6, 4))
            .unwrap()
            .t()
            .unwrap();
        let a = xwt(&xt, w.as_tensor()).unwrap().to_vec2::<f64>().unwrap();
        let b = xt
            .matmul(&w.as_tensor().t().unwrap())
            .unwrap()
            .to_vec2::<f64>()
            .unwrap();
        assert_eq!(a, b);
        // data that needs no gradient gets none
        let data = Tensor::ones((4, 6), candle_core::DType::F64, &dev).unwrap();
        let g = xwt(&data, w.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(g.get(&data).is_none() && g.get(w.as_tensor()).is_some());
    }

    /// The fused layer against the same maths in candle's ops (ReLU as x·[x > 0]): values,
    /// gradients, and Hessian-vector products through a double backward.
    #[test]
    fn affine_matches_composed_ops_at_first_and_second_order() {
        crate::optim::enable_second_order();
        let dev = Device::Cpu;
        let var = |n: usize, shape: (usize, usize), a: f64, b: f64| {
            Var::from_tensor(
                &Tensor::arange(0f64, n as f64, &dev)
                    .unwrap()
                    .affine(a, b)
                    .unwrap()
                    .sin()
                    .unwrap()
                    .reshape(shape)
                    .unwrap(),
            )
            .unwrap()
        };
        let x = var(20, (4, 5), 0.7, 0.1);
        let w = var(15, (3, 5), 1.3, -0.4);
        let b = Var::from_tensor(&Tensor::new(&[0.1f64, -0.2, 0.05], &dev).unwrap()).unwrap();
        let vars = [&x, &w, &b];
        for relu_on in [false, true] {
            let ours = |x: &Tensor| affine(x, w.as_tensor(), b.as_tensor(), relu_on).unwrap();
            let theirs = |x: &Tensor| {
                let y = x
                    .matmul(&w.as_tensor().t().unwrap())
                    .unwrap()
                    .broadcast_add(b.as_tensor())
                    .unwrap();
                if relu_on {
                    (&y * y.gt(0.0).unwrap().to_dtype(DType::F64).unwrap()).unwrap()
                } else {
                    y
                }
            };
            let close = |a: &Tensor, b: &Tensor, what: &str| {
                let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
                let d = d.to_scalar::<f64>().unwrap();
                assert!(d < 1e-12, "{what} (relu {relu_on}): off by {d}");
            };
            close(&ours(x.as_tensor()), &theirs(x.as_tensor()), "values");
            // A loss whose gradient reaches the layer through mean (a broadcast gradient).
            let loss = |y: Tensor| y.sqr().unwrap().mean_all().unwrap();
            let g1 = loss(ours(x.as_tensor())).backward().unwrap();
            let g2 = loss(theirs(x.as_tensor())).backward().unwrap();
            for v in vars {
                close(
                    g1.get(v.as_tensor()).unwrap(),
                    g2.get(v.as_tensor()).unwrap(),
                    "gradient",
                );
            }
            // HVP: d/dθ (∇L · v) with v = 1 on every parameter.
            let hvp = |g: &candle_core::backprop::GradStore| {
                let mut dot = Tensor::new(0f64, &dev).unwrap();
                for v in vars {
                    dot = (dot + g.get(v.as_tensor()).unwrap().sum_all().unwrap()).unwrap();
                }
                dot.backward().unwrap()
            };
            let (h1, h2) = (hvp(&g1), hvp(&g2));
            // A missing second derivative is a zero one.
            let get = |h: &candle_core::backprop::GradStore, v: &Var| {
                h.get(v.as_tensor())
                    .cloned()
                    .unwrap_or_else(|| v.as_tensor().zeros_like().unwrap())
            };
            let mut nonzero = 0.0;
            for v in vars {
                let a = get(&h1, v);
                close(&a, &get(&h2, v), "HVP");
                nonzero += a
                    .abs()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap();
            }
            assert!(nonzero > 0.0, "the HVP is not trivially zero");
        }
    }

    #[test]
    fn relu_passes_no_gradient_at_zero_and_handles_strided_inputs() {
        let dev = Device::Cpu;
        let x =
            Var::from_tensor(&Tensor::new(&[[-1.0f64, 0.0], [2.0, 3.0]], &dev).unwrap()).unwrap();
        let g = relu(x.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert_eq!(
            g.get(x.as_tensor()).unwrap().to_vec2::<f64>().unwrap(),
            [[0.0, 0.0], [1.0, 1.0]]
        );
        // A transposed input is read in its logical order.
        let t = relu(&x.as_tensor().t().unwrap()).unwrap();
        assert_eq!(t.to_vec2::<f64>().unwrap(), [[0.0, 2.0], [0.0, 3.0]]);
        let s = sum_rows(&x.as_tensor().t().unwrap()).unwrap();
        assert_eq!(s.to_vec1::<f64>().unwrap(), [-1.0, 5.0]);
    }
}
