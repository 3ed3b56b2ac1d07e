//! Batch norm's passes for the executor, with batch statistics (training and probe mode): the
//! forward pass, the reverse pass, and the R-operator's tangent and second-order reverse.
//!
//! Per channel over its `m` values, with `s = 1/√(σ² + ε)` and `x̂ = (z − μ)·s`,
//! `y = γ·x̂ + β` (through a ReLU when one follows). From `dy`, the gradient of `γ·x̂ + β`:
//!
//! - `dβ = Σ dy`, `dγ = Σ dy·x̂`, `dz = γs·(dy − dβ/m − x̂·dγ/m)`;
//! - along a tangent `Rz` of the input: `R(x̂) = s·(Rz − mean Rz − x̂·mean(x̂·Rz))` and
//!   `R(s) = −s²·mean(x̂·Rz)`; `R(y) = γ·R(x̂) + vγ·x̂ + vβ`;
//! - and back: `R(dβ) = Σ R(dy)`, `R(dγ) = Σ R(dy)·x̂ + dy·R(x̂)`, and `R(dz)` the derivative
//!   of `dz`'s formula, with `γs` varying by `vγ·s + γ·R(s)`.
//!
//! On the CPU the training pass takes the fused sweeps of `bn` (the ops, in the order, of the
//! built-in ResNets' passes); on CUDA training takes the fused device kernels, and probe mode
//! (H·v) the per-channel ops, which run everywhere.

use crate::model::norm::{BatchNorm, Mode};
use crate::model::{bn, conv, linear};
use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};

/// Batch norm as it ran.
pub(super) struct NormRun {
    gamma: Var,
    beta: Var,
    relu: bool,
    /// The output, `[N, C, H, W]` (after the ReLU when `relu`).
    y: Tensor,
    saved: Saved,
    /// A `[N, F]` input's shape (it ran as `[N, F, 1, 1]`).
    flat: Option<Vec<usize>>,
    /// What the reverse pass leaves for the R-operator (kept only when asked).
    back: Option<Back>,
}

enum Saved {
    /// x̂ and `s` (`[C]`).
    Host { xhat: Tensor, invstd: Tensor },
    /// The input and the `[4, C]` stats of `bn::train_forward_device`.
    #[cfg(feature = "cuda")]
    Device { z: Tensor, stats: Tensor },
}

struct Back {
    /// The gradient of `γ·x̂ + β`.
    dy: Tensor,
    dgamma: Tensor,
    dbeta: Tensor,
}

/// The values each channel holds in a batch.
fn per_channel(t: &Tensor) -> Result<f64> {
    Ok((t.elem_count() / t.dim(1)?) as f64)
}

/// Each channel's mean and biased variance (`[C]` each).
fn moments(z: &Tensor) -> Result<(Tensor, Tensor)> {
    if z.device().is_cpu() {
        return bn::moments(z);
    }
    let m = per_channel(z)?;
    let mean = (conv::channel_sum(z)? / m)?;
    let centred = conv::add_channel_bias(z, &mean.neg()?)?;
    let var = (conv::channel_sum(&centred.sqr()?)? / m)?;
    Ok((mean, var))
}

/// `x·a[c] + b[c]`, through a ReLU when `relu`.
fn affine(x: &Tensor, a: &Tensor, b: &Tensor, relu: bool) -> Result<Tensor> {
    if x.device().is_cpu() {
        return bn::affine(x, a, b, relu);
    }
    let y = conv::add_channel_bias(&conv::scale_channels(x, a)?, b)?;
    if relu { linear::relu(&y) } else { Ok(y) }
}

/// Each channel's `Σa` and `Σa·b`.
fn dots(a: &Tensor, b: &Tensor) -> Result<(Tensor, Tensor)> {
    if a.device().is_cpu() {
        return bn::dots(a, b);
    }
    Ok((conv::channel_sum(a)?, conv::channel_sum(&(a * b)?)?))
}

/// `g·a[c] + x·b[c] + d[c]`.
fn combine(g: &Tensor, x: &Tensor, a: &Tensor, b: &Tensor, d: &Tensor) -> Result<Tensor> {
    if g.device().is_cpu() {
        return bn::combine(g, x, a, b, d);
    }
    let sum = (conv::scale_channels(g, a)? + conv::scale_channels(x, b)?)?;
    conv::add_channel_bias(&sum, d)
}

/// Runs `norm` on `x` with batch statistics (folded into the running statistics in training
/// mode), then a ReLU when `relu`.
pub(super) fn forward(
    norm: &BatchNorm,
    x: &Tensor,
    relu: bool,
    mode: Mode,
) -> Result<(NormRun, Tensor)> {
    if mode == Mode::Eval {
        candle_core::bail!("the executor's passes take batch statistics");
    }
    let flat = (x.rank() == 2).then(|| x.dims().to_vec());
    let z = match &flat {
        Some(d) => x.reshape((d[0], d[1], 1, 1))?,
        None => x.clone(),
    };
    let (gamma, beta) = (norm.gamma.clone(), norm.beta.clone());
    let (y, saved) = train_or_probe(norm, &z, relu, mode)?;
    let out = match &flat {
        Some(d) => y.reshape(d.as_slice())?,
        None => y.clone(),
    };
    let run = NormRun {
        gamma,
        beta,
        relu,
        y,
        saved,
        flat,
        back: None,
    };
    Ok((run, out))
}

fn train_or_probe(norm: &BatchNorm, z: &Tensor, relu: bool, mode: Mode) -> Result<(Tensor, Saved)> {
    #[cfg(feature = "cuda")]
    if z.device().is_cuda() && mode == Mode::Train {
        let (y, stats) = bn::train_forward_device(z, norm, relu)?;
        let z = z.clone();
        return Ok((y, Saved::Device { z, stats }));
    }
    let (mean, var) = moments(z)?;
    if mode == Mode::Train {
        norm.update_running(&mean, &var, per_channel(z)?)?;
    }
    let invstd = (var + norm.eps)?.sqrt()?.recip()?;
    let xhat = affine(z, &invstd, &(mean.neg()? * &invstd)?, false)?;
    let y = affine(
        &xhat,
        &norm.gamma.as_tensor().detach(),
        &norm.beta.as_tensor().detach(),
        relu,
    )?;
    Ok((y, Saved::Host { xhat, invstd }))
}

/// `dz = γs·(dy − dβ/m − x̂·dγ/m)`, in one pass.
fn input_grad(
    gamma: &Var,
    xhat: &Tensor,
    invstd: &Tensor,
    dy: &Tensor,
    dgamma: &Tensor,
    dbeta: &Tensor,
    m: f64,
) -> Result<Tensor> {
    let k = (gamma.as_tensor().detach() * invstd)?;
    let b = (&k * (dgamma / -m)?)?;
    let d = (&k * (dbeta / -m)?)?;
    combine(dy, xhat, &k, &b, &d)
}

impl NormRun {
    /// `t` as the layer ran it (`[N, C, H, W]`).
    fn to_run(&self, t: &Tensor) -> Result<Tensor> {
        match &self.flat {
            Some(_) => t.reshape((t.dim(0)?, t.dim(1)?, 1, 1)),
            None => Ok(t.clone()),
        }
    }

    /// `t` (`[N, C, H, W]`) in the layer's input shape.
    fn to_input(&self, t: Tensor) -> Result<Tensor> {
        match &self.flat {
            Some(d) => t.reshape(d.as_slice()),
            None => Ok(t),
        }
    }

    /// The input's gradient from what the reverse pass kept, the same bits as the reverse
    /// pass returned: a convolution before batch norm reads it rather than keeping its own
    /// copy.
    pub(super) fn input_grad(&self) -> Result<Tensor> {
        let (xhat, invstd) = self.host()?;
        let Some(back) = &self.back else {
            candle_core::bail!("H·v: batch norm's reverse pass did not keep its state");
        };
        let m = per_channel(&back.dy)?;
        let (dy, dgamma, dbeta) = (&back.dy, &back.dgamma, &back.dbeta);
        self.to_input(input_grad(&self.gamma, xhat, invstd, dy, dgamma, dbeta, m)?)
    }

    fn host(&self) -> Result<(&Tensor, &Tensor)> {
        match &self.saved {
            Saved::Host { xhat, invstd } => Ok((xhat, invstd)),
            #[cfg(feature = "cuda")]
            Saved::Device { .. } => {
                candle_core::bail!("H·v through batch norm needs its probe-mode pass")
            }
        }
    }
}

impl super::Normalization for NormRun {
    fn gamma(&self) -> &Var {
        &self.gamma
    }

    fn beta(&self) -> &Var {
        &self.beta
    }

    fn backward(
        &mut self,
        g: &Tensor,
        want_x: bool,
        with_grads: bool,
        keep: bool,
        grads: &mut GradStore,
    ) -> Result<Option<Tensor>> {
        let g = self.to_run(g)?;
        let dy = if self.relu {
            linear::relu_back(&g, &self.y)?
        } else {
            g
        };
        let (dz, dgamma, dbeta) = match &self.saved {
            Saved::Host { xhat, invstd } => {
                let m = per_channel(&dy)?;
                let (dbeta, dgamma) = dots(&dy, xhat)?;
                let dz = if want_x {
                    Some(input_grad(
                        &self.gamma,
                        xhat,
                        invstd,
                        &dy,
                        &dgamma,
                        &dbeta,
                        m,
                    )?)
                } else {
                    None
                };
                (dz, dgamma, dbeta)
            }
            #[cfg(feature = "cuda")]
            Saved::Device { z, stats } => {
                let (dz, dgamma, dbeta) = bn::train_backward_device(&dy, z, stats)?;
                (Some(dz), dgamma, dbeta)
            }
        };
        if with_grads {
            grads.insert(self.gamma.as_tensor(), dgamma.clone());
            grads.insert(self.beta.as_tensor(), dbeta.clone());
        }
        if keep {
            self.back = Some(Back { dy, dgamma, dbeta });
        }
        dz.map(|d| self.to_input(d)).transpose()
    }

    fn tangent(
        &self,
        rz: Option<&Tensor>,
        vgamma: &Tensor,
        vbeta: &Tensor,
    ) -> Result<(Tensor, Option<(Tensor, Tensor)>)> {
        let (xhat, invstd) = self.host()?;
        let (ry, kept) = match rz {
            Some(rz) => {
                let rz = self.to_run(rz)?;
                let m = per_channel(&rz)?;
                let (sum, dot) = dots(&rz, xhat)?;
                let (mean, c) = ((sum / m)?, (dot / m)?);
                // R(x̂) = s·Rz − s·mean(x̂·Rz)·x̂ − s·mean Rz
                let rxhat = combine(
                    &rz,
                    xhat,
                    invstd,
                    &(invstd * &c)?.neg()?,
                    &(invstd * &mean)?.neg()?,
                )?;
                let rs = (invstd.sqr()? * &c)?.neg()?;
                let gamma = self.gamma.as_tensor().detach();
                let ry = combine(&rxhat, xhat, &gamma, vgamma, vbeta)?;
                (ry, Some((rxhat, rs)))
            }
            None => (affine(xhat, vgamma, vbeta, false)?, None),
        };
        let ry = if self.relu {
            linear::relu_back(&ry, &self.y)?
        } else {
            ry
        };
        Ok((self.to_input(ry)?, kept))
    }

    fn tangent_back(
        &self,
        rg: &Tensor,
        kept: Option<&(Tensor, Tensor)>,
        vgamma: &Tensor,
        want_x: bool,
    ) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let (xhat, invstd) = self.host()?;
        let Some(back) = &self.back else {
            candle_core::bail!("H·v: batch norm's reverse pass did not keep its state");
        };
        let rg = self.to_run(rg)?;
        let rdy = if self.relu {
            linear::relu_back(&rg, &self.y)?
        } else {
            rg
        };
        let (rdbeta, mut rdgamma) = dots(&rdy, xhat)?;
        if let Some((rxhat, _)) = kept {
            rdgamma = (rdgamma + dots(&back.dy, rxhat)?.1)?;
        }
        if !want_x {
            return Ok((rdgamma, rdbeta, None));
        }
        let m = per_channel(&rdy)?;
        let gamma = self.gamma.as_tensor().detach();
        let k = (&gamma * invstd)?;
        // R(γs) = vγ·s + γ·R(s)
        let k1 = match kept {
            Some((_, rs)) => ((vgamma * invstd)? + (&gamma * rs)?)?,
            None => (vgamma * invstd)?,
        };
        // R(dz) = k·R(dy) + x̂·(−(k1·dγ + k·R(dγ))/m) − (k1·dβ + k·R(dβ))/m
        //       + k1·dy − R(x̂)·k·dγ/m
        let bx = (((&k1 * &back.dgamma)? + (&k * &rdgamma)?)? / -m)?;
        let d = (((&k1 * &back.dbeta)? + (&k * &rdbeta)?)? / -m)?;
        let r = combine(&rdy, xhat, &k, &bx, &d)?;
        let rest = match kept {
            Some((rxhat, _)) => {
                let kd = ((&k * &back.dgamma)? / -m)?;
                combine(&back.dy, rxhat, &k1, &kd, &k1.zeros_like()?)?
            }
            None => conv::scale_channels(&back.dy, &k1)?,
        };
        Ok((rdgamma, rdbeta, Some(self.to_input((r + rest)?)?)))
    }
}
