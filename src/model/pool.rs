//! 2x2 max pooling (stride 2) as custom ops, on the CPU and CUDA: the forward pass, the gradient
//! routed to each window's first maximum, and its adjoint (gathering at the maxima). Each op's
//! backward is another of them with the window maxima taken from the pooled input, so
//! second-order gradients work. One pass each way, where pooling by reshape costs a compare, a
//! cast and a multiply over the whole input in its backward pass. Other devices pool by reshape.

use super::cpu::view;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;
use std::sync::{Arc, OnceLock};

/// Which cell of each 2x2 window holds its first maximum (0: top left, 1: top right,
/// 2: bottom left, 3: bottom right), one byte per output cell, planes in order.
type Codes = Arc<Vec<u8>>;

/// Planes per parallel task: enough work to pay for the split.
fn planes_per_task(planes: usize, plane: usize) -> usize {
    let threads = candle_core::utils::get_num_threads().max(1);
    planes
        .div_ceil(threads * 4)
        .max((1 << 14) / plane.max(1))
        .max(1)
}

crate::simd::multiversion!(fn plane_codes<T: WithDType>(
    x: &[T],
    w: usize,
    code: &mut [u8],
    out: &mut [T],
) -> () = plane_codes_kernel);

/// The window codes of one plane `x: [h, w]` into `code: [h/2 · w/2]`, and the maxima into
/// `out`. Branch-free selects, so random data does not cost mispredictions.
#[inline(always)]
fn plane_codes_kernel<T: WithDType>(x: &[T], w: usize, code: &mut [u8], out: &mut [T]) {
    let ow = w / 2;
    for (y, row) in code.chunks_mut(ow.max(1)).enumerate() {
        let (r0, r1) = (&x[2 * y * w..], &x[(2 * y + 1) * w..]);
        for (xx, c) in row.iter_mut().enumerate() {
            let (a, b, d, e) = (r0[2 * xx], r0[2 * xx + 1], r1[2 * xx], r1[2 * xx + 1]);
            let (mut best, mut k) = (a, 0u8);
            if b > best {
                best = b;
                k = 1;
            }
            if d > best {
                best = d;
                k = 2;
            }
            if e > best {
                best = e;
                k = 3;
            }
            *c = k;
            out[y * ow + xx] = best;
        }
    }
}

/// Window codes and maxima of `x: [planes, h, w]`, in parallel.
fn codes_of<T: WithDType>(x: &[T], planes: usize, h: usize, w: usize) -> (Vec<u8>, Vec<T>) {
    let (plane, oplane) = (h * w, (h / 2) * (w / 2));
    let mut code = vec![0u8; planes * oplane];
    let mut out = vec![T::zero(); planes * oplane];
    if oplane == 0 {
        return (code, out);
    }
    let per = planes_per_task(planes, plane);
    x.par_chunks(plane * per)
        .zip(code.par_chunks_mut(oplane * per))
        .zip(out.par_chunks_mut(oplane * per))
        .for_each(|((xs, cs), os)| {
            for ((xp, cp), op) in xs
                .chunks(plane)
                .zip(cs.chunks_mut(oplane))
                .zip(os.chunks_mut(oplane))
            {
                plane_codes(xp, w, cp, op);
            }
        });
    (code, out)
}

/// The input index, within the two input rows of width `w` under an output row, of output
/// column `x` whose window code is `k`.
#[inline(always)]
fn cell(x: usize, k: u8, w: usize) -> usize {
    let k = usize::from(k);
    (k >> 1) * w + 2 * x + (k & 1)
}

/// Places `g: [planes, h/2, w/2]` at the coded cells of `[planes, h, w]`, zeros elsewhere.
fn scatter<T: WithDType>(g: &[T], code: &[u8], planes: usize, h: usize, w: usize) -> Vec<T> {
    let (plane, oplane, ow) = (h * w, (h / 2) * (w / 2), w / 2);
    let mut out = vec![T::zero(); planes * plane];
    if oplane == 0 {
        return out;
    }
    let per = planes_per_task(planes, plane);
    out.par_chunks_mut(plane * per)
        .zip(
            g.par_chunks(oplane * per)
                .zip(code.par_chunks(oplane * per)),
        )
        .for_each(|(o, (g, c))| {
            for ((op, gp), cp) in o
                .chunks_mut(plane)
                .zip(g.chunks(oplane))
                .zip(c.chunks(oplane))
            {
                for (y, (gr, cr)) in gp.chunks(ow).zip(cp.chunks(ow)).enumerate() {
                    let row = &mut op[2 * y * w..(2 * y + 2) * w];
                    for (x, (&v, &k)) in gr.iter().zip(cr).enumerate() {
                        row[cell(x, k, w)] = v;
                    }
                }
            }
        });
    out
}

/// Reads `u: [planes, h, w]` at the coded cells: `[planes, h/2, w/2]`.
fn gather<T: WithDType>(u: &[T], code: &[u8], planes: usize, h: usize, w: usize) -> Vec<T> {
    let (plane, oplane, ow) = (h * w, (h / 2) * (w / 2), w / 2);
    let mut out = vec![T::zero(); planes * oplane];
    if oplane == 0 {
        return out;
    }
    let per = planes_per_task(planes, plane);
    out.par_chunks_mut(oplane * per)
        .zip(u.par_chunks(plane * per).zip(code.par_chunks(oplane * per)))
        .for_each(|(o, (u, c))| {
            for ((op, up), cp) in o
                .chunks_mut(oplane)
                .zip(u.chunks(plane))
                .zip(c.chunks(oplane))
            {
                for (y, (or, cr)) in op.chunks_mut(ow).zip(cp.chunks(ow)).enumerate() {
                    let row = &up[2 * y * w..(2 * y + 2) * w];
                    for (x, (v, &k)) in or.iter_mut().zip(cr).enumerate() {
                        *v = row[cell(x, k, w)];
                    }
                }
            }
        });
    out
}

fn dims(l: &Layout) -> Result<(usize, usize, usize, usize)> {
    l.shape().dims4()
}

/// The window codes of the pooled input, computed once by the forward pass and shared by the
/// backward ops of every order (they are a function of the input alone).
#[derive(Clone, Default)]
struct Shared(Arc<OnceLock<Codes>>);

impl Shared {
    /// The codes, from the cache or computed from `x`.
    fn get<T: WithDType>(&self, x: &[T], l: &Layout) -> Result<Codes> {
        if let Some(c) = self.0.get() {
            return Ok(c.clone());
        }
        let (n, c, h, w) = dims(l)?;
        let (code, _) = codes_of(&view(x, l), n * c, h, w);
        Ok(self.0.get_or_init(|| Arc::new(code)).clone())
    }
}

/// Max over each 2x2 window.
struct MaxPool(Shared);
/// Moves values between the pooled shape and the input's, at the maxima of `x: [N, C, H, W]`
/// (its second operand); the two ways are each other's adjoints.
#[derive(Clone)]
struct Route(Way, Shared);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    /// `[N, C, H/2, W/2]` values placed at the maxima, zeros elsewhere: `[N, C, H, W]`.
    Scatter,
    /// `[N, C, H, W]` values read at the maxima: `[N, C, H/2, W/2]`.
    Gather,
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "ahtsgd-max-pool2"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = dims(l)?;
        let cache = &self.0.0;
        fn go<T: WithDType>(
            x: &[T],
            l: &Layout,
            dims: (usize, usize, usize),
            cache: &OnceLock<Codes>,
        ) -> Vec<T> {
            let (planes, h, w) = dims;
            let (code, out) = codes_of(&view(x, l), planes, h, w);
            let _ = cache.set(Arc::new(code));
            out
        }
        let out = match s {
            CpuStorage::F32(x) => CpuStorage::F32(go(x, l, (n * c, h, w), cache)),
            CpuStorage::F64(x) => CpuStorage::F64(go(x, l, (n * c, h, w), cache)),
            _ => candle_core::bail!("max-pool: f32 or f64"),
        };
        Ok((out, Shape::from((n, c, h / 2, w / 2))))
    }

    /// On CUDA each op finds a window's first maximum again from `x` (four compares), so
    /// nothing is cached.
    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (n, c, h, w) = dims(l)?;
        let out = super::cuda::channels::pool2((s, l), None, 0)?;
        Ok((out, Shape::from((n, c, h / 2, w / 2))))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(g.apply_op2(x, Route(Way::Scatter, self.0.clone()))?))
    }
}

impl Route {
    /// The input `x`'s dims (the second operand's) and the output's shape, with the first
    /// operand checked against the shape this way takes.
    fn shapes(&self, l1: &Layout, l2: &Layout) -> Result<((usize, usize, usize, usize), Shape)> {
        use candle_core::CustomOp2;
        let (n, c, h, w) = dims(l2)?;
        let pooled = (n, c, h / 2, w / 2);
        let (from, to) = match self.0 {
            Way::Scatter => (pooled, (n, c, h, w)),
            Way::Gather => ((n, c, h, w), pooled),
        };
        if dims(l1)? != from {
            candle_core::bail!(
                "{}: {:?} for an input {:?}",
                self.name(),
                l1.dims(),
                l2.dims()
            );
        }
        Ok(((n, c, h, w), Shape::from(to)))
    }
}

impl CustomOp2 for Route {
    fn name(&self) -> &'static str {
        match self.0 {
            Way::Scatter => "ahtsgd-max-pool2-scatter",
            Way::Gather => "ahtsgd-max-pool2-gather",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let ((n, c, h, w), to) = self.shapes(l1, l2)?;
        fn go<T: WithDType>(
            r: &Route,
            a: &[T],
            l1: &Layout,
            x: &[T],
            l2: &Layout,
            (planes, h, w): (usize, usize, usize),
        ) -> Result<Vec<T>> {
            let code = r.1.get(x, l2)?;
            Ok(match r.0 {
                Way::Scatter => scatter(&view(a, l1), &code, planes, h, w),
                Way::Gather => gather(&view(a, l1), &code, planes, h, w),
            })
        }
        let geom = (n * c, h, w);
        let out = match (s1, s2) {
            (CpuStorage::F32(a), CpuStorage::F32(x)) => {
                CpuStorage::F32(go(self, a, l1, x, l2, geom)?)
            }
            (CpuStorage::F64(a), CpuStorage::F64(x)) => {
                CpuStorage::F64(go(self, a, l1, x, l2, geom)?)
            }
            _ => candle_core::bail!("{}: f32 or f64 operands of one type", self.name()),
        };
        Ok((out, to))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (_, to) = self.shapes(l1, l2)?;
        let way = match self.0 {
            Way::Scatter => 1,
            Way::Gather => 2,
        };
        let out = super::cuda::channels::pool2((s2, l2), Some((s1, l1)), way)?;
        Ok((out, to))
    }

    /// Linear in the routed values, whose adjoint routes the other way at the same maxima;
    /// the maxima themselves do not move under small changes of `x` (almost everywhere), so
    /// `x` gets none.
    fn bwd(
        &self,
        _a: &Tensor,
        x: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let other = match self.0 {
            Way::Scatter => Way::Gather,
            Way::Gather => Way::Scatter,
        };
        Ok((Some(g.apply_op2(x, Route(other, self.1.clone()))?), None))
    }
}

/// 2x2 max pooling with stride 2 (odd trailing rows and columns dropped), `[N, C, H, W]`.
pub fn max_pool2(x: &Tensor) -> Result<Tensor> {
    x.apply_op1(MaxPool(Shared::default()))
}

/// The maxima a pooling found, for the layer executor's reverse pass and tangent map.
pub(crate) struct Maxima(Shared);

impl Maxima {
    /// The gradient of the pooled input `x` from `g`, the gradient of the pooled output.
    pub(crate) fn back(&self, g: &Tensor, x: &Tensor) -> Result<Tensor> {
        g.apply_op2(x, Route(Way::Scatter, self.0.clone()))
    }

    /// `u`, shaped like the pooled input `x`, read at the maxima (the pooling's tangent map).
    pub(crate) fn select(&self, u: &Tensor, x: &Tensor) -> Result<Tensor> {
        u.apply_op2(x, Route(Way::Gather, self.0.clone()))
    }
}

/// [`max_pool2`] (CPU) that also returns where the maxima were.
pub(crate) fn max_pool2_keep(x: &Tensor) -> Result<(Tensor, Maxima)> {
    let shared = Shared::default();
    let y = x.apply_op1(MaxPool(shared.clone()))?;
    Ok((y, Maxima(shared)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Against pooling by reshape (candle's max, which is correct when there are no ties):
    /// values, gradients and HVPs, on an odd-sized input and on one large enough to be split
    /// across threads.
    #[test]
    fn matches_pooling_by_reshape_at_first_and_second_order() {
        crate::optim::enable_second_order();
        for dims in [(2, 3, 5, 7), (3, 40, 34, 33)] {
            against_reshape(dims);
        }
    }

    fn against_reshape((n, c, h, w): (usize, usize, usize, usize)) {
        // distinct values in a scrambled order, so every window has one maximum
        let vals: Vec<f64> = (0..n * c * h * w)
            .map(|i| ((i * 7919 % 100_003) as f64) / 5000.0 - 2.0)
            .collect();
        let x = Var::from_vec(vals, (n, c, h, w), &Device::Cpu).unwrap();
        let by_reshape = |x: &Tensor| {
            x.narrow(2, 0, h / 2 * 2)
                .unwrap()
                .narrow(3, 0, w / 2 * 2)
                .unwrap()
                .reshape((n, c, h / 2, 2, w / 2, 2))
                .unwrap()
                .max(5)
                .unwrap()
                .max(3)
                .unwrap()
        };
        let diff =
            |a: &Tensor, b: &Tensor| crate::optim::sharpness::max_abs(&(a - b).unwrap()).unwrap();
        let (yo, yt) = (max_pool2(x.as_tensor()).unwrap(), by_reshape(x.as_tensor()));
        assert_eq!(diff(&yo, &yt), 0.0);
        let loss = |y: Tensor| y.powf(3.0).unwrap().mean_all().unwrap();
        let (go, gt) = (loss(yo).backward().unwrap(), loss(yt).backward().unwrap());
        let (a, b) = (
            go.get(x.as_tensor()).unwrap(),
            gt.get(x.as_tensor()).unwrap(),
        );
        assert!(diff(a, b) < 1e-15);
        let ho = a.sum_all().unwrap().backward().unwrap();
        let ht = b.sum_all().unwrap().backward().unwrap();
        let (ha, hb) = (
            ho.get(x.as_tensor()).unwrap(),
            ht.get(x.as_tensor()).unwrap(),
        );
        assert!(diff(ha, hb) < 1e-12);
        assert!(
            ha.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
                > 0.0
        );
    }

    /// With ties (a ReLU's zeros), the whole gradient goes to one element of the window.
    #[test]
    fn ties_route_the_gradient_once() {
        let x = Var::from_vec(vec![0.0f64; 4], (1, 1, 2, 2), &Device::Cpu).unwrap();
        let g = max_pool2(x.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gx: Vec<f64> = g
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(gx, [1.0, 0.0, 0.0, 0.0]);
    }
}
