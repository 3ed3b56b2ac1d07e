//! Layer norm's passes for the executor: over the last axis of each sample, per row `r`, with
//! `s = 1/√(σ²_r + ε)` and `x̂ = (x − μ_r)·s`, `y = γ·x̂ + β` (γ, β over the features).
//!
//! - Reverse, from `dy`: `dγ = Σ_rows dy·x̂`, `dβ = Σ_rows dy`, and with `u = dy·γ`,
//!   `dx = s·q`, `q = u − mean(u) − x̂·mean(u·x̂)` (means over a row);
//! - tangent: `R(x̂) = s·(Rx − mean Rx − x̂·mean(x̂·Rx))`, `R(s) = −s²·mean(x̂·Rx)`,
//!   `R(y) = γ·R(x̂) + vγ·x̂ + vβ`;
//! - second-order reverse: `R(dγ) = Σ R(dy)·x̂ + dy·R(x̂)`, `R(dβ) = Σ R(dy)`, and with
//!   `R(u) = R(dy)·γ + dy·vγ`, `R(dx) = R(s)·q + s·(R(u) − mean R(u) − R(x̂)·mean(u·x̂) −
//!   x̂·mean(R(u)·x̂ + u·R(x̂)))`.
//!
//! Built from candle's tensor ops, so it runs on every device.

use candle_core::backprop::GradStore;
use candle_core::{D, Result, Tensor, Var};

/// Layer norm as it ran.
pub(super) struct LayerNormRun {
    gamma: Var,
    beta: Var,
    xhat: Tensor,
    /// `s` per row, `[..., 1]`.
    invstd: Tensor,
    /// The gradient of the output, kept for the R-operator.
    dy: Option<Tensor>,
}

fn row_mean(t: &Tensor) -> Result<Tensor> {
    t.mean_keepdim(D::Minus1)
}

/// Σ over every axis but the last (a per-feature parameter's gradient): row by row in order,
/// as candle's `sum(0)` adds, without its index arithmetic per element.
fn feature_sum(t: &Tensor) -> Result<Tensor> {
    let f = t.dim(D::Minus1)?;
    crate::model::linear::sum_rows(&t.reshape(((), f))?)
}

pub(super) fn forward(
    gamma: &Var,
    beta: &Var,
    eps: f64,
    x: &Tensor,
) -> Result<(LayerNormRun, Tensor)> {
    let centred = x.broadcast_sub(&row_mean(x)?)?;
    let invstd = (row_mean(&centred.sqr()?)? + eps)?.sqrt()?.recip()?;
    let xhat = centred.broadcast_mul(&invstd)?;
    let y = xhat
        .broadcast_mul(&gamma.as_tensor().detach())?
        .broadcast_add(&beta.as_tensor().detach())?;
    let run = LayerNormRun {
        gamma: gamma.clone(),
        beta: beta.clone(),
        xhat,
        invstd,
        dy: None,
    };
    Ok((run, y))
}

impl LayerNormRun {
    /// `u − mean(u) − x̂·mean(u·x̂)` per row.
    fn project(&self, u: &Tensor) -> Result<Tensor> {
        let ux = row_mean(&(u * &self.xhat)?)?;
        u.broadcast_sub(&row_mean(u)?)?
            .sub(&self.xhat.broadcast_mul(&ux)?)
    }
}

impl super::Normalization for LayerNormRun {
    fn gamma(&self) -> &Var {
        &self.gamma
    }

    fn beta(&self) -> &Var {
        &self.beta
    }

    fn backward(
        &mut self,
        dy: &Tensor,
        want_x: bool,
        with_grads: bool,
        keep: bool,
        grads: &mut GradStore,
    ) -> Result<Option<Tensor>> {
        if with_grads {
            grads.insert(self.gamma.as_tensor(), feature_sum(&(dy * &self.xhat)?)?);
            grads.insert(self.beta.as_tensor(), feature_sum(dy)?);
        }
        let dx = if want_x {
            let u = dy.broadcast_mul(&self.gamma.as_tensor().detach())?;
            Some(self.project(&u)?.broadcast_mul(&self.invstd)?)
        } else {
            None
        };
        if keep {
            self.dy = Some(dy.clone());
        }
        Ok(dx)
    }

    fn tangent(
        &self,
        rx: Option<&Tensor>,
        vgamma: &Tensor,
        vbeta: &Tensor,
    ) -> Result<(Tensor, Option<(Tensor, Tensor)>)> {
        let from_params = self.xhat.broadcast_mul(vgamma)?.broadcast_add(vbeta)?;
        let Some(rx) = rx else {
            return Ok((from_params, None));
        };
        let c = row_mean(&(&self.xhat * rx)?)?;
        let rxhat = rx
            .broadcast_sub(&row_mean(rx)?)?
            .sub(&self.xhat.broadcast_mul(&c)?)?
            .broadcast_mul(&self.invstd)?;
        let rs = (self.invstd.sqr()? * c)?.neg()?;
        let gamma = self.gamma.as_tensor().detach();
        let ry = (rxhat.broadcast_mul(&gamma)? + from_params)?;
        Ok((ry, Some((rxhat, rs))))
    }

    fn tangent_back(
        &self,
        rdy: &Tensor,
        kept: Option<&(Tensor, Tensor)>,
        vgamma: &Tensor,
        want_x: bool,
    ) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let Some(dy) = &self.dy else {
            candle_core::bail!("H·v: layer norm's reverse pass did not keep its state");
        };
        let mut rdgamma = feature_sum(&(rdy * &self.xhat)?)?;
        if let Some((rxhat, _)) = kept {
            rdgamma = (rdgamma + feature_sum(&(dy * rxhat)?)?)?;
        }
        let rdbeta = feature_sum(rdy)?;
        if !want_x {
            return Ok((rdgamma, rdbeta, None));
        }
        let gamma = self.gamma.as_tensor().detach();
        let u = dy.broadcast_mul(&gamma)?;
        let ru = (rdy.broadcast_mul(&gamma)? + dy.broadcast_mul(vgamma)?)?;
        let mut rq = self.project(&ru)?;
        let mut out = None;
        if let Some((rxhat, rs)) = kept {
            // the terms through R(x̂): −R(x̂)·mean(u·x̂) − x̂·mean(u·R(x̂))
            let ux = row_mean(&(&u * &self.xhat)?)?;
            let urx = row_mean(&(&u * rxhat)?)?;
            rq = rq
                .sub(&rxhat.broadcast_mul(&ux)?)?
                .sub(&self.xhat.broadcast_mul(&urx)?)?;
            out = Some(self.project(&u)?.broadcast_mul(rs)?);
        }
        let mut rdx = rq.broadcast_mul(&self.invstd)?;
        if let Some(o) = out {
            rdx = (rdx + o)?;
        }
        Ok((rdgamma, rdbeta, Some(rdx)))
    }
}
