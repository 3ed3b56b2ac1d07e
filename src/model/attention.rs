//! Multi-head scaled dot-product attention between a layer's projections, from candle's
//! tensor ops (so it runs on every device and candle's graph differentiates it at every
//! order). Per sequence and head, with `Q`, `K`, `V` (`[t, d_h]`) and `c = 1/√d_h`:
//! `S = c·Q·Kᵀ` (entries after the diagonal at −∞ when causal), `P = softmax(S)` row by row,
//! and `O = P·V`.

use super::cpu::{f32_or_f64, map_chunks, view};
use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, D, DType, Device, Layout, Result, Shape, Tensor, WithDType,
};

/// `[n, t, 3·d]` (each token's query, key and value side by side) as three `[n, h, t, d/h]`.
pub fn split(u: &Tensor, heads: usize) -> Result<(Tensor, Tensor, Tensor)> {
    let (n, t, d3) = u.dims3()?;
    let dh = d3 / 3 / heads;
    let part = |i: usize| -> Result<Tensor> {
        u.narrow(2, i * heads * dh, heads * dh)?
            .reshape((n, t, heads, dh))?
            .transpose(1, 2)?
            .contiguous()
    };
    Ok((part(0)?, part(1)?, part(2)?))
}

/// `[n, h, t, d_h]` heads back as `[n, t, h·d_h]`.
pub fn merge(o: &Tensor) -> Result<Tensor> {
    let (n, h, t, dh) = o.dims4()?;
    o.transpose(1, 2)?.contiguous()?.reshape((n, t, h * dh))
}

/// `[t, t]`: 0 on and before the diagonal, −∞ after it.
pub fn causal_mask(t: usize, dtype: DType, dev: &Device) -> Result<Tensor> {
    let m: Vec<f64> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j > i { f64::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(m, (t, t), dev)?.to_dtype(dtype)
}

/// The softmax over the last axis (the row maximum subtracted, as a constant).
pub fn softmax(s: &Tensor) -> Result<Tensor> {
    let m = s.max_keepdim(D::Minus1)?.detach();
    let e = s.broadcast_sub(&m)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// The attention weights `P` of queries `q` and keys `k` (`[n, h, t, d_h]`): on the CPU one
/// pass over the scores (scale, mask and softmax; no graph, as the executor's passes and
/// evaluation need none), elsewhere candle's ops.
pub fn weights(q: &Tensor, k: &Tensor, causal: bool) -> Result<Tensor> {
    let (_, _, t, dh) = q.dims4()?;
    let scale = 1.0 / (dh as f64).sqrt();
    if runs_on_cpu(q) {
        return bmm(q, &k.t()?)?.apply_op1_no_bwd(&RowSoftmax { scale, causal });
    }
    let scores = q.matmul(&k.t()?)?;
    let s = (scores * scale)?;
    let s = if causal {
        s.broadcast_add(&causal_mask(t, s.dtype(), s.device())?)?
    } else {
        s
    };
    softmax(&s)
}

/// Attention from `[n, t, 3·d]` projections to `[n, t, d]`, differentiable by candle's graph.
pub fn attend(u: &Tensor, heads: usize, causal: bool) -> Result<Tensor> {
    let (q, k, v) = split(u, heads)?;
    merge(&weights(&q, &k, causal)?.matmul(&v)?)
}

fn runs_on_cpu(t: &Tensor) -> bool {
    t.device().is_cpu() && matches!(t.dtype(), DType::F32 | DType::F64)
}

/// `P ⊙ (x − rowsum(x ⊙ P))` over the last axis: the softmax's adjoint (and tangent) map at
/// the weights `p`, in one pass on the CPU.
pub fn through_softmax(p: &Tensor, x: &Tensor) -> Result<Tensor> {
    if runs_on_cpu(p) {
        return p.apply_op2_no_bwd(x, &ThroughSoftmax);
    }
    let r = (x * p)?.sum_keepdim(D::Minus1)?;
    p * x.broadcast_sub(&r)?
}

/// softmax(scale·s) over each row of `t` scores, entries after the diagonal 0 when causal
/// (row `r` is the query at position `r mod t`).
fn row_softmax<T>(s: &[T], t: usize, scale: T, causal: bool) -> Vec<T>
where
    T: num_traits::Float + Send + Sync,
{
    map_chunks(s, t, |r, src, row| {
        // the keys after the query's position are masked
        let live = if causal { r % t + 1 } else { t };
        let m = src[..live]
            .iter()
            .fold(T::neg_infinity(), |m, &v| m.max(v * scale));
        let mut sum = T::zero();
        for &v in &src[..live] {
            sum = sum + (v * scale - m).exp();
        }
        let inv = T::one() / sum;
        for (o, &v) in row[..live].iter_mut().zip(&src[..live]) {
            o.write((v * scale - m).exp() * inv);
        }
        for o in &mut row[live..] {
            o.write(T::zero());
        }
    })
}

/// `p ⊙ (x − rowsum(x ⊙ p))` over rows of `t`.
fn softmax_adjoint<T>(p: &[T], x: &[T], t: usize) -> Vec<T>
where
    T: num_traits::Float + Send + Sync + std::iter::Sum,
{
    map_chunks(p, t, |r, p, row| {
        let x = &x[r * t..(r + 1) * t];
        let dot: T = p.iter().zip(x).map(|(&a, &b)| a * b).sum();
        for ((o, &a), &b) in row.iter_mut().zip(p).zip(x) {
            o.write(a * (b - dot));
        }
    })
}

/// `a·b` for `[n, h, m, k]` by `[n, h, k, p]` (either a transposed view): candle's matmul
/// (no graph), except that on the CPU with more than one thread the `n·h` small products run
/// side by side, each on one thread, where candle runs them one after another and each is too
/// small to split. Each product is the same `gemm` call as candle's, so the same bits (tested).
pub fn bmm(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let threads = candle_core::utils::get_num_threads();
    if threads > 1
        && runs_on_cpu(a)
        && a.rank() == 4
        && b.rank() == 4
        && batch_stride(a.layout()).is_some()
        && batch_stride(b.layout()).is_some()
    {
        return a.apply_op2_no_bwd(b, &BatchedMatmul);
    }
    a.detach().matmul(&b.detach())
}

/// The step between batch items of a rank-4 layout whose two batch axes walk as one (as
/// candle's matmul reads them; an axis of one item may have any stride).
fn batch_stride(l: &Layout) -> Option<usize> {
    let (s, d) = (l.stride(), l.dims());
    if s[0] == s[1] * d[1] || d[0] == 1 {
        Some(s[1])
    } else if d[1] == 1 {
        Some(s[0])
    } else {
        None
    }
}

struct BatchedMatmul;

/// The shapes and strides of `[n, h, m, k]` by `[n, h, k, p]`, checked.
struct Products {
    items: usize,
    m: usize,
    k: usize,
    p: usize,
    /// (step between items, row stride, column stride) of each operand.
    a: (usize, isize, isize),
    b: (usize, isize, isize),
    offsets: (usize, usize),
    /// `[n, h, m, p]`.
    shape: Shape,
}

impl Products {
    fn of(la: &Layout, lb: &Layout) -> Result<Products> {
        let (n, h, m, k) = la.shape().dims4()?;
        let (n2, h2, k2, p) = lb.shape().dims4()?;
        if (n, h, k) != (n2, h2, k2) {
            candle_core::bail!("batched matmul: {:?} by {:?}", la.dims(), lb.dims());
        }
        let (Some(sa), Some(sb)) = (batch_stride(la), batch_stride(lb)) else {
            candle_core::bail!("batched matmul: batch axes not contiguous");
        };
        let strides = |l: &Layout, item| (item, l.stride()[2] as isize, l.stride()[3] as isize);
        Ok(Products {
            items: n * h,
            m,
            k,
            p,
            a: strides(la, sa),
            b: strides(lb, sb),
            offsets: (la.start_offset(), lb.start_offset()),
            shape: Shape::from((n, h, m, p)),
        })
    }

    fn run<T: WithDType + 'static>(&self, a: &[T], b: &[T]) -> Vec<T> {
        use rayon::prelude::*;
        let Products { m, k, p, .. } = *self;
        let (a, b) = (&a[self.offsets.0..], &b[self.offsets.1..]);
        let mut dst = vec![T::zero(); self.items * m * p];
        dst.par_chunks_mut((m * p).max(1))
            .enumerate()
            .for_each(|(step, d)| {
                // SAFETY: the pointers and strides come from the operands' layouts, checked
                // to hold n·h items of [m, k] and [k, p]; d is one row-major [m, p] item.
                unsafe {
                    gemm::gemm(
                        m,
                        p,
                        k,
                        d.as_mut_ptr(),
                        1,
                        p as isize,
                        false,
                        a[step * self.a.0..].as_ptr(),
                        self.a.2,
                        self.a.1,
                        b[step * self.b.0..].as_ptr(),
                        self.b.2,
                        self.b.1,
                        T::zero(),
                        T::one(),
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    )
                }
            });
        dst
    }
}

impl CustomOp2 for BatchedMatmul {
    fn name(&self) -> &'static str {
        "ahtsgd-batched-matmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let products = Products::of(l1, l2)?;
        let out = f32_or_f64!(self.name(), s1, s2, |a, b| products.run(a, b));
        Ok((out, products.shape))
    }
}

/// softmax(scale·s) over each row of the scores `s` (`[.., t, t]`), entries after the
/// diagonal 0 when causal.
struct RowSoftmax {
    scale: f64,
    causal: bool,
}

impl CustomOp1 for RowSoftmax {
    fn name(&self) -> &'static str {
        "ahtsgd-attention-softmax"
    }

    fn cpu_fwd(&self, st: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let t = l.dims()[l.dims().len() - 1];
        let (scale, causal) = (self.scale, self.causal);
        let out = match st {
            CpuStorage::F32(s) => {
                CpuStorage::F32(row_softmax(&view(s, l), t, scale as f32, causal))
            }
            CpuStorage::F64(s) => CpuStorage::F64(row_softmax(&view(s, l), t, scale, causal)),
            _ => candle_core::bail!("attention softmax: f32 or f64"),
        };
        Ok((out, l.shape().clone()))
    }
}

/// `p ⊙ (x − rowsum(x ⊙ p))`.
struct ThroughSoftmax;

impl CustomOp2 for ThroughSoftmax {
    fn name(&self) -> &'static str {
        "ahtsgd-softmax-adjoint"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let t = l1.dims()[l1.dims().len() - 1];
        let out = f32_or_f64!(self.name(), s1, s2, |p, x| softmax_adjoint(
            &view(p, l1),
            &view(x, l2),
            t
        ));
        Ok((out, l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The batched products side by side give candle's matmul bits, for the operand layouts
    /// attention uses (contiguous, and a transposed key or weight view), in f32 and f64.
    #[test]
    fn batched_products_are_candles_matmul() {
        let dev = Device::Cpu;
        let fill = |shape: (usize, usize, usize, usize), seed: usize| {
            let n = shape.0 * shape.1 * shape.2 * shape.3;
            let v: Vec<f64> = (0..n)
                .map(|i| (((i + seed) * 2_654_435_761) % 1000) as f64 / 250.0 - 2.0)
                .collect();
            Tensor::from_vec(v, shape, &dev).unwrap()
        };
        // [n, t, d] as split makes one head of it: [n, 1, t, d] through a transpose
        let one_head = |x: &Tensor| {
            let (n, _, t, d) = x.dims4().unwrap();
            let flat = x.narrow(1, 0, 1).unwrap().reshape((n, t, d)).unwrap();
            flat.reshape((n, t, 1, d)).unwrap().transpose(1, 2).unwrap()
        };
        for dtype in [DType::F32, DType::F64] {
            let q = fill((3, 4, 64, 32), 1).to_dtype(dtype).unwrap();
            let k = fill((3, 4, 64, 32), 2).to_dtype(dtype).unwrap();
            let p = fill((3, 4, 64, 64), 3).to_dtype(dtype).unwrap();
            for (a, b) in [
                (q.clone(), k.t().unwrap()),
                (p.clone(), k.clone()),
                (p.t().unwrap(), q.clone()),
                (q.clone(), fill((3, 4, 32, 5), 4).to_dtype(dtype).unwrap()),
                // one head, and one sequence, as `split` leaves them (a batch axis of one
                // item keeps another axis's stride)
                (one_head(&q), one_head(&k).t().unwrap()),
                (
                    q.narrow(0, 0, 1).unwrap(),
                    k.narrow(0, 1, 1).unwrap().t().unwrap(),
                ),
            ] {
                assert!(batch_stride(a.layout()).is_some() && batch_stride(b.layout()).is_some());
                let want = a.matmul(&b).unwrap();
                let got = a.apply_op2_no_bwd(&b, &BatchedMatmul).unwrap();
                assert_eq!(got.dims(), want.dims());
                let bits = |t: &Tensor| -> Vec<u64> {
                    let v = t.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
                    v.to_vec1::<f64>()
                        .unwrap()
                        .iter()
                        .map(|x| x.to_bits())
                        .collect()
                };
                assert_eq!(
                    bits(&got),
                    bits(&want),
                    "{dtype:?} {:?} x {:?}",
                    a.dims(),
                    b.dims()
                );
            }
        }
    }

    /// The CPU passes against candle's ops on the same scores, with and without the mask, in
    /// f64: the same to rounding.
    #[test]
    fn the_fused_softmax_and_its_adjoint_match_the_op_formulas() {
        let dev = Device::Cpu;
        let q = Tensor::randn(0f64, 1.0, (2, 3, 5, 4), &dev).unwrap();
        let k = Tensor::randn(0f64, 1.0, (2, 3, 5, 4), &dev).unwrap();
        let x = Tensor::randn(0f64, 1.0, (2, 3, 5, 5), &dev).unwrap();
        for causal in [false, true] {
            let p = weights(&q, &k, causal).unwrap();
            let mut s = (q.matmul(&k.t().unwrap()).unwrap() * 0.5).unwrap();
            if causal {
                s = s
                    .broadcast_add(&causal_mask(5, DType::F64, &dev).unwrap())
                    .unwrap();
            }
            let reference = softmax(&s).unwrap();
            let err = |a: &Tensor, b: &Tensor| {
                crate::optim::sharpness::max_abs(&(a - b).unwrap()).unwrap()
            };
            assert!(err(&p, &reference) < 1e-15, "causal {causal}");
            let r = (&x * &reference).unwrap().sum_keepdim(D::Minus1).unwrap();
            let adjoint = (&reference * x.broadcast_sub(&r).unwrap()).unwrap();
            assert!(err(&through_softmax(&p, &x).unwrap(), &adjoint) < 1e-15);
        }
    }
}
