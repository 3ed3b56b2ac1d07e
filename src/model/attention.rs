//! Multi-head scaled dot-product attention between a layer's projections, from candle's
//! tensor ops (so it runs on every device and candle's graph differentiates it at every
//! order). Per sequence and head, with `Q`, `K`, `V` (`[t, d_h]`) and `c = 1/√d_h`:
//! `S = c·Q·Kᵀ` (entries after the diagonal at −∞ when causal), `P = softmax(S)` row by row,
//! and `O = P·V`.

use super::cpu::view;
use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, D, DType, Device, Layout, Result, Shape, Tensor,
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
    let scores = q.matmul(&k.t()?)?;
    if runs_on_cpu(&scores) {
        return scores.apply_op1_no_bwd(&RowSoftmax { scale, causal });
    }
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

/// Rows of `t` entries at a time, in parallel.
fn rows<T: Copy + Send + Sync>(
    n: usize,
    t: usize,
    f: impl Fn(usize, &mut [T]) + Sync + Send,
    zero: T,
) -> Vec<T> {
    use rayon::prelude::*;
    let mut out = vec![zero; n];
    out.par_chunks_mut(t.max(1))
        .enumerate()
        .for_each(|(r, row)| f(r, row));
    out
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
        macro_rules! go {
            ($s:expr, $ty:ty) => {{
                let s = view($s, l);
                let scale = scale as $ty;
                rows(
                    s.len(),
                    t,
                    |r, row: &mut [$ty]| {
                        let src = &s[r * t..(r + 1) * t];
                        // the row's position among the queries: keys after it are masked
                        let live = if causal { r % t + 1 } else { t };
                        let mut m = <$ty>::NEG_INFINITY;
                        for &v in &src[..live] {
                            m = m.max(v * scale);
                        }
                        let mut sum = 0.0;
                        for (o, &v) in row[..live].iter_mut().zip(&src[..live]) {
                            *o = (v * scale - m).exp();
                            sum += *o;
                        }
                        let inv = 1.0 / sum;
                        row[..live].iter_mut().for_each(|o| *o *= inv);
                    },
                    0.0,
                )
            }};
        }
        let out = match st {
            CpuStorage::F32(s) => CpuStorage::F32(go!(s, f32)),
            CpuStorage::F64(s) => CpuStorage::F64(go!(s, f64)),
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
        macro_rules! go {
            ($p:expr, $x:expr, $ty:ty) => {{
                let (p, x) = (view($p, l1), view($x, l2));
                rows(
                    p.len(),
                    t,
                    |r, row: &mut [$ty]| {
                        let (p, x) = (&p[r * t..(r + 1) * t], &x[r * t..(r + 1) * t]);
                        let dot: $ty = p.iter().zip(x).map(|(a, b)| a * b).sum();
                        for ((o, &a), &b) in row.iter_mut().zip(p).zip(x) {
                            *o = a * (b - dot);
                        }
                    },
                    0.0,
                )
            }};
        }
        let out = match (s1, s2) {
            (CpuStorage::F32(p), CpuStorage::F32(x)) => CpuStorage::F32(go!(p, x, f32)),
            (CpuStorage::F64(p), CpuStorage::F64(x)) => CpuStorage::F64(go!(p, x, f64)),
            _ => candle_core::bail!("softmax adjoint: f32 or f64 operands of one type"),
        };
        Ok((out, l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
