//! Multi-head scaled dot-product attention between a layer's projections, from candle's
//! tensor ops (so it runs on every device and candle's graph differentiates it at every
//! order). Per sequence and head, with `Q`, `K`, `V` (`[t, d_h]`) and `c = 1/√d_h`:
//! `S = c·Q·Kᵀ` (entries after the diagonal at −∞ when causal), `P = softmax(S)` row by row,
//! and `O = P·V`.

use candle_core::{D, DType, Device, Result, Tensor};

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

/// The attention weights `P` of queries `q` and keys `k` (`[n, h, t, d_h]`).
pub fn weights(q: &Tensor, k: &Tensor, causal: bool) -> Result<Tensor> {
    let (_, _, t, dh) = q.dims4()?;
    let s = (q.matmul(&k.t()?)? * (1.0 / (dh as f64).sqrt()))?;
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
