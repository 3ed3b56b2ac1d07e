//! Attention's passes for the executor, between its two projections (which run as dense
//! layers). Per sequence and head, with `S = c·Q·Kᵀ`, `P = softmax(S)`, `O = P·V`
//! (see [`crate::model::attention`]) and `rowsum` the sum over a row kept as a column:
//!
//! - reverse, from `dO`: `dV = Pᵀ·dO`, `dP = dO·Vᵀ`, `dS = P ⊙ (dP − rowsum(dP ⊙ P))`,
//!   `dQ = c·dS·K`, `dK = c·dSᵀ·Q`;
//! - tangent, from `RQ`, `RK`, `RV`: `RS = c·(RQ·Kᵀ + Q·RKᵀ)`,
//!   `RP = P ⊙ (RS − rowsum(P ⊙ RS))`, `RO = RP·V + P·RV`;
//! - second-order reverse, from `R(dO)`: `R(dV) = RPᵀ·dO + Pᵀ·R(dO)`,
//!   `R(dP) = R(dO)·Vᵀ + dO·RVᵀ`, `R(dS) = RP ⊙ (dP − r) + P ⊙ (R(dP) − rowsum(R(dP) ⊙ P +
//!   dP ⊙ RP))` with `r = rowsum(dP ⊙ P)`, `R(dQ) = c·(R(dS)·K + dS·RK)`,
//!   `R(dK) = c·(R(dS)ᵀ·Q + dSᵀ·RQ)`.
//!
//! Masked entries have `P = 0`, so `RP`, `dS` and `R(dS)` are 0 there whatever `S` was.

use crate::model::attention::{bmm, merge, split, through_softmax, weights};
use candle_core::{D, Result, Tensor};

/// Attention as it ran.
pub(super) struct AttentionRun {
    heads: usize,
    /// `c = 1/√d_h`.
    scale: f64,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    p: Tensor,
    /// What the reverse pass leaves for the R-operator: `dO`, `dP` and `dS`.
    kept: Option<(Tensor, Tensor, Tensor)>,
}

/// The input's tangents, split by head, and `RP` (None: the input's tangent is zero).
pub(super) struct AttentionTangent {
    rq: Tensor,
    rk: Tensor,
    rv: Tensor,
    rp: Tensor,
}

fn rowsum(t: &Tensor) -> Result<Tensor> {
    t.sum_keepdim(D::Minus1)
}

/// `[n, h, t, d_h]` query, key and value parts as `[n, t, 3·d]`.
fn join(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    Tensor::cat(&[&merge(q)?, &merge(k)?, &merge(v)?], 2)
}

/// `[n, t, d]` (a gradient or tangent of the output) split by head.
fn heads_of(g: &Tensor, heads: usize) -> Result<Tensor> {
    let (n, t, d) = g.dims3()?;
    g.reshape((n, t, heads, d / heads))?
        .transpose(1, 2)?
        .contiguous()
}

pub(super) fn forward(u: &Tensor, heads: usize, causal: bool) -> Result<(AttentionRun, Tensor)> {
    let (q, k, v) = split(u, heads)?;
    let p = weights(&q, &k, causal)?;
    let o = merge(&bmm(&p, &v)?)?;
    let scale = 1.0 / (q.dim(3)? as f64).sqrt();
    let run = AttentionRun {
        heads,
        scale,
        q,
        k,
        v,
        p,
        kept: None,
    };
    Ok((run, o))
}

impl AttentionRun {
    /// `P ⊙ (x − rowsum(x ⊙ P))`: the softmax's adjoint (and tangent) map.
    fn through_softmax(&self, x: &Tensor) -> Result<Tensor> {
        through_softmax(&self.p, x)
    }

    /// The gradient of the input from `g`, the output's; keeps what the R-operator needs when
    /// `keep`.
    pub(super) fn backward(&mut self, g: &Tensor, keep: bool) -> Result<Tensor> {
        let d_o = heads_of(g, self.heads)?;
        let dv = bmm(&self.p.t()?, &d_o)?;
        let dp = bmm(&d_o, &self.v.t()?)?;
        let ds = self.through_softmax(&dp)?;
        let dq = (bmm(&ds, &self.k)? * self.scale)?;
        let dk = (bmm(&ds.t()?, &self.q)? * self.scale)?;
        let du = join(&dq, &dk, &dv)?;
        if keep {
            self.kept = Some((d_o, dp, ds));
        }
        Ok(du)
    }

    /// The output's tangent from the input's `ru` (None: zero), and what the second-order
    /// reverse needs.
    pub(super) fn tangent(
        &self,
        ru: Option<&Tensor>,
    ) -> Result<(Option<AttentionTangent>, Option<Tensor>)> {
        let Some(ru) = ru else {
            return Ok((None, None));
        };
        let (rq, rk, rv) = split(ru, self.heads)?;
        let rs = ((bmm(&rq, &self.k.t()?)? + bmm(&self.q, &rk.t()?)?)? * self.scale)?;
        let rp = self.through_softmax(&rs)?;
        let ro = (bmm(&rp, &self.v)? + bmm(&self.p, &rv)?)?;
        Ok((Some(AttentionTangent { rq, rk, rv, rp }), Some(merge(&ro)?)))
    }

    /// The tangent of the input's gradient from `rg`, the tangent of the output's.
    pub(super) fn tangent_back(
        &self,
        rg: &Tensor,
        tangent: Option<&AttentionTangent>,
    ) -> Result<Tensor> {
        let Some((d_o, dp, ds)) = &self.kept else {
            candle_core::bail!("H·v: the reverse pass kept no attention deltas");
        };
        let rd_o = heads_of(rg, self.heads)?;
        let mut rdv = bmm(&self.p.t()?, &rd_o)?;
        let mut rdp = bmm(&rd_o, &self.v.t()?)?;
        if let Some(t) = tangent {
            rdv = (rdv + bmm(&t.rp.t()?, d_o)?)?;
            rdp = (rdp + bmm(d_o, &t.rv.t()?)?)?;
        }
        let mut rds = self.through_softmax(&rdp)?;
        if let Some(t) = tangent {
            // RP ⊙ (dP − r) − P ⊙ rowsum(dP ⊙ RP)
            let r = rowsum(&(dp * &self.p)?)?;
            let extra = ((&t.rp * dp.broadcast_sub(&r)?)?
                - self.p.broadcast_mul(&rowsum(&(dp * &t.rp)?)?)?)?;
            rds = (rds + extra)?;
        }
        let mut rdq = bmm(&rds, &self.k)?;
        let mut rdk = bmm(&rds.t()?, &self.q)?;
        if let Some(t) = tangent {
            rdq = (rdq + bmm(ds, &t.rk)?)?;
            rdk = (rdk + bmm(&ds.t()?, &t.rq)?)?;
        }
        join(&(rdq * self.scale)?, &(rdk * self.scale)?, &rdv)
    }
}
