//! The optimizer: SGD with optional α-stable (or Gaussian) noise, momentum and weight decay.
//!
//! Each step, for every parameter θ with gradient g (variables sorted by name), after the
//! whole gradient is clipped to norm `grad_clip` where one is set ([`super::grad_clip`]):
//! ```text
//! ξ ~ symmetric α-stable(α, 1), one per coordinate, from the stream keyed by (seed, name, step)
//! n = clip(σ' ξ)                 σ' = σ, or σ/√d with scale_by_dim
//! gradient placement: d = g + λθ + n ;  b = μ b + d ;  θ ← θ − lr · b
//! levy_step placement: d = g + λθ ;  b = μ b + d ;  θ ← θ − lr · b − lr^(1/α) · n
//! ```
//! Gaussian-noise SGD draws n ~ N(0, η/(1+t)^γ) instead. With [`Decay::WeightsOnly`], λ is 0
//! for parameters of rank below 2.

use super::Decay;
use super::alpha::{AlphaController, AlphaSchedule};
use super::signal::Signals;
use super::stable;
use super::update;
use candle_core::Var;
use candle_core::backprop::GradStore;
use std::cell::RefCell;

/// What noise the optimizer adds.
#[derive(Clone, Debug, PartialEq)]
pub enum NoiseKind {
    /// Plain SGD.
    None,
    /// α-stable noise with α from a schedule (AHTSGD; a fixed schedule is Lévy SGD).
    Stable(AlphaSchedule),
    /// Gaussian noise of variance η/(1+t)^γ (Neelakantan et al.'s "adding gradient noise").
    Gaussian { eta: f64, gamma: f64 },
}

/// Where the noise enters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum NoisePlacement {
    /// θ −= lr·(g + σξ)
    #[default]
    Gradient,
    /// θ −= lr·g + σ·lr^(1/α)·ξ
    LevyStep,
}

/// Noise clipping.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum Clip {
    #[default]
    None,
    /// Clamp each coordinate to [−max, max].
    Coordinate(f64),
    /// Rescale each parameter's noise to norm at most max.
    Norm(f64),
}

/// The update the noise is added to.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum Base {
    /// SGD with momentum (the update above).
    #[default]
    Sgd,
    /// Adam with decoupled weight decay ([`update::apply_adam`]): with gradient placement the
    /// noise enters the gradient before the moments, with levy_step it is added to Adam's step.
    Adam(update::AdamBase),
}

/// What the α-stable noise's scale σ is relative to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum NoiseScale {
    /// σ itself.
    #[default]
    Absolute,
    /// σ·‖g‖, ‖g‖ the norm of the whole gradient (every parameter) at this step.
    GradientNorm,
}

/// Every setting of the optimizer.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamsAhtSgd {
    pub lr: f64,
    pub sigma: f64,
    pub noise: NoiseKind,
    pub placement: NoisePlacement,
    /// Divide the α-stable noise's scale by √d, d the parameter tensor's element count
    /// (after `scale`: σ·‖g‖/√d with [`NoiseScale::GradientNorm`]).
    pub scale_by_dim: bool,
    pub scale: NoiseScale,
    pub clip: Clip,
    pub momentum: f64,
    pub nesterov: bool,
    pub weight_decay: f64,
    /// The parameters `weight_decay` applies to.
    pub decay: Decay,
    /// Rescale the whole gradient to this norm at most before the update (and the noise).
    pub grad_clip: Option<f64>,
    /// The update the noise is added to.
    pub base: Base,
    pub seed: u64,
}

impl Default for ParamsAhtSgd {
    fn default() -> Self {
        ParamsAhtSgd {
            lr: 0.01,
            sigma: 0.01,
            noise: NoiseKind::None,
            placement: NoisePlacement::Gradient,
            scale_by_dim: false,
            scale: NoiseScale::Absolute,
            clip: Clip::None,
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
            decay: Decay::All,
            grad_clip: None,
            base: Base::Sgd,
            seed: 0,
        }
    }
}

/// What one step did, for logging.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Telemetry {
    pub alpha: f64,
    pub lambda_max: Option<f64>,
    pub sharpness_ema: Option<f64>,
    /// The whole gradient's norm (before clipping, where `grad_clip` is set).
    pub grad_norm: f64,
    pub noise_norm: f64,
    /// Fraction of noise coordinates that clipping changed.
    pub noise_clipped: f64,
    pub lr: f64,
}

/// A step that could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum OptimError {
    /// NaN or Inf in a gradient, the noise or a parameter.
    #[error("step {step}: {what} of `{param}` is not finite")]
    NonFinite {
        step: u64,
        what: &'static str,
        param: String,
    },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// SGD with heavy-tailed noise.
pub struct AhtSgd {
    vars: Vec<(String, Var)>,
    /// Per-parameter buffers (momentum, noise scratch), reused every step.
    state: Vec<RefCell<update::State>>,
    keys: Vec<[u32; 2]>,
    pub params: ParamsAhtSgd,
    pub controller: Option<AlphaController>,
    step: u64,
}

impl AhtSgd {
    /// An optimizer over named variables (sorted by name for reproducible noise streams).
    pub fn new(mut vars: Vec<(String, Var)>, params: ParamsAhtSgd) -> candle_core::Result<Self> {
        vars.retain(|(_, v)| v.dtype().is_float());
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let controller = match &params.noise {
            NoiseKind::Stable(s) => Some(AlphaController::new(s.clone())),
            _ => None,
        };
        let keys = vars
            .iter()
            .map(|(n, _)| stable::stream_key(params.seed, n))
            .collect();
        Ok(AhtSgd {
            state: vars.iter().map(|_| RefCell::default()).collect(),
            keys,
            vars,
            params,
            controller,
            step: 0,
        })
    }

    /// From a candle-nn `VarMap` (names sorted; pass only trainable variables).
    pub fn from_varmap(map: &candle_nn::VarMap, params: ParamsAhtSgd) -> candle_core::Result<Self> {
        let vars = map
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("poisoned VarMap".into()))?
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Self::new(vars, params)
    }

    pub fn vars(&self) -> Vec<Var> {
        self.vars.iter().map(|(_, v)| v.clone()).collect()
    }

    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Momentum buffers as tensors named `momentum/<parameter>`, and with an Adam base its
    /// moments as `adam_m/<parameter>` and `adam_v/<parameter>` (for checkpoints).
    pub fn export_state(&self) -> candle_core::Result<Vec<(String, candle_core::Tensor)>> {
        let mut out = Vec::new();
        for ((name, var), st) in self.vars.iter().zip(&self.state) {
            let st = st.borrow();
            if matches!(self.params.base, Base::Adam(_)) {
                // a parameter no gradient has reached yet has zero moments, written out so
                // that a resume finds every parameter's
                for (prefix, moment) in [("adam_m", &st.adam_m), ("adam_v", &st.adam_v)] {
                    let t = match moment {
                        Some(t) => t.to_device(&candle_core::Device::Cpu)?,
                        None => var
                            .as_tensor()
                            .zeros_like()?
                            .to_device(&candle_core::Device::Cpu)?,
                    };
                    out.push((format!("{prefix}/{name}"), t));
                }
            }
            let t = if let Some(b) = &st.momentum_tensor {
                b.to_device(&candle_core::Device::Cpu)?
            } else if !st.momentum_f32.is_empty() {
                candle_core::Tensor::from_slice(
                    &st.momentum_f32,
                    var.shape(),
                    &candle_core::Device::Cpu,
                )?
            } else if !st.momentum_f64.is_empty() {
                candle_core::Tensor::from_slice(
                    &st.momentum_f64,
                    var.shape(),
                    &candle_core::Device::Cpu,
                )?
            } else {
                continue;
            };
            out.push((format!("momentum/{name}"), t));
        }
        Ok(out)
    }

    /// Continues from exported state at step `step`. With an Adam base every parameter's
    /// moments must be there (after the first step): a missing one would silently restart
    /// that parameter's averages.
    pub fn import_state(
        &mut self,
        tensors: &std::collections::HashMap<String, candle_core::Tensor>,
        step: u64,
    ) -> candle_core::Result<()> {
        for ((name, var), st) in self.vars.iter().zip(&self.state) {
            if matches!(self.params.base, Base::Adam(_)) && step > 0 {
                let mut st = st.borrow_mut();
                for prefix in ["adam_m", "adam_v"] {
                    let key = format!("{prefix}/{name}");
                    let t = tensors.get(&key).ok_or_else(|| {
                        candle_core::Error::Msg(format!("the checkpoint has no `{key}`"))
                    })?;
                    let t = t.to_dtype(var.dtype())?.reshape(var.shape())?;
                    let t = t.to_device(var.device())?;
                    if prefix == "adam_m" {
                        st.adam_m = Some(t);
                    } else {
                        st.adam_v = Some(t);
                    }
                }
            }
            if let Some(t) = tensors.get(&format!("momentum/{name}")) {
                let mut st = st.borrow_mut();
                if !var.device().is_cpu() {
                    // the tensor-op path keeps its buffer on the parameter's device
                    st.momentum_tensor = Some(
                        t.to_dtype(var.dtype())?
                            .reshape(var.shape())?
                            .to_device(var.device())?,
                    );
                    continue;
                }
                match t.dtype() {
                    candle_core::DType::F32 => st.momentum_f32 = t.flatten_all()?.to_vec1()?,
                    _ => {
                        st.momentum_f64 = t
                            .flatten_all()?
                            .to_dtype(candle_core::DType::F64)?
                            .to_vec1()?
                    }
                }
            }
        }
        self.step = step;
        Ok(())
    }

    /// Feeds a sharpness estimate, taken before the coming step, to the α controller.
    pub fn observe_sharpness(&mut self, lambda: f64) {
        let step = self.step;
        if let Some(c) = &mut self.controller {
            c.observe(lambda, step);
        }
    }

    /// α at the current step.
    pub fn alpha(&self, epoch: f64, progress: f64) -> f64 {
        match &self.controller {
            Some(c) => c.alpha(&Signals {
                step: self.step as f64,
                epoch,
                progress,
                ..Default::default()
            }),
            None => 2.0,
        }
    }

    /// The norm of the whole gradient, summed in f64 (on a device, read once).
    fn gradient_norm(&self, grads: &GradStore) -> candle_core::Result<f64> {
        let g: Vec<candle_core::Tensor> = self
            .vars
            .iter()
            .filter_map(|(_, v)| grads.get(v.as_tensor()).cloned())
            .collect();
        Ok(super::sharpness::dots(&[(&g, &g)])?[0].sqrt())
    }

    /// The update rule for parameter `i` at the current step; `scale` multiplies σ.
    fn rule(&self, i: usize, alpha: f64, scale: f64) -> update::Rule {
        let p = &self.params;
        let d = self.vars[i].1.elem_count() as f64;
        let (source, sigma) = match &p.noise {
            NoiseKind::None => (update::Source::None, 0.0),
            NoiseKind::Stable(_) => (
                update::Source::Stable(alpha),
                if p.scale_by_dim {
                    p.sigma * scale / d.sqrt()
                } else {
                    p.sigma * scale
                },
            ),
            NoiseKind::Gaussian { eta, gamma } => (
                update::Source::Normal,
                (eta / (1.0 + self.step as f64).powf(*gamma)).sqrt(),
            ),
        };
        let (clip_coord, clip_norm) = match p.clip {
            Clip::None => (None, None),
            Clip::Coordinate(m) => (Some(m), None),
            Clip::Norm(m) => (None, Some(m)),
        };
        update::Rule {
            lr: p.lr,
            sigma,
            source,
            levy_scale: (p.placement == NoisePlacement::LevyStep).then(|| p.lr.powf(1.0 / alpha)),
            clip_coord,
            clip_norm,
            momentum: p.momentum,
            nesterov: p.nesterov,
            weight_decay: p.decay.weight_decay(&self.vars[i].1, p.weight_decay),
            key: self.keys[i],
            step: self.step,
        }
    }

    fn non_finite(&self, what: &'static str, param: &str) -> OptimError {
        OptimError::NonFinite {
            step: self.step,
            what,
            param: param.to_string(),
        }
    }

    /// One update with learning rate `params.lr`; `epoch` and `progress` feed α schedules.
    pub fn step(
        &mut self,
        grads: &GradStore,
        epoch: f64,
        progress: f64,
    ) -> Result<Telemetry, OptimError> {
        let step = self.step;
        if let Some(c) = &mut self.controller {
            c.advance(step);
        }
        let alpha = self.alpha(epoch, progress);
        let before_clipping = super::grad_clip::clip_if(
            grads,
            self.vars.iter().map(|(_, v)| v),
            self.params.grad_clip,
        )?;
        let grads = super::grad_clip::Clipped::or(&before_clipping, grads);
        let scale = match (self.params.scale, &self.params.noise) {
            (NoiseScale::GradientNorm, NoiseKind::Stable(_)) => self.gradient_norm(grads)?,
            _ => 1.0,
        };
        let mut tel = Telemetry {
            alpha,
            lr: self.params.lr,
            ..Default::default()
        };
        if let Some(c) = &self.controller {
            tel.lambda_max = c.lambda_max;
            tel.sharpness_ema = c.sharpness_ema;
        }
        // a non-finite gradient stops the step before its parameter changes on the CPU (those
        // updated earlier in this step keep their update; the caller ends the run); on other
        // devices the figures are read once, after every parameter's update
        let (mut g2, mut n2, mut clipped, mut total) = (0.0, 0.0, 0usize, 0usize);
        let mut measured = Vec::with_capacity(self.vars.len());
        for (i, (name, var)) in self.vars.iter().enumerate() {
            let Some(grad) = grads.get(var.as_tensor()) else {
                continue;
            };
            let rule = self.rule(i, alpha, scale);
            let m = match self.params.base {
                Base::Sgd => update::apply_deferred(&rule, var.as_tensor(), grad, &self.state[i])?,
                Base::Adam(adam) => {
                    update::apply_adam(&rule, adam, var.as_tensor(), grad, &self.state[i])?
                }
            };
            if let update::Measured::Now(st) = &m {
                if st.bad_grad {
                    return Err(self.non_finite("the gradient", name));
                }
                if st.bad_value {
                    return Err(self.non_finite("the updated value", name));
                }
            }
            measured.push((name, m));
        }
        let (names, measured): (Vec<_>, Vec<_>) = measured.into_iter().unzip();
        for (name, st) in names.into_iter().zip(update::read(measured)?) {
            if st.bad_grad {
                return Err(self.non_finite("the gradient", name));
            }
            if st.bad_value {
                return Err(self.non_finite("the updated value", name));
            }
            g2 += st.grad_sq;
            n2 += st.noise_sq;
            clipped += st.clipped;
            total += st.count;
        }
        tel.grad_norm = before_clipping.map_or(g2.sqrt(), |c| c.norm);
        tel.noise_norm = n2.sqrt();
        tel.noise_clipped = if total == 0 {
            0.0
        } else {
            clipped as f64 / total as f64
        };
        self.step += 1;
        Ok(tel)
    }
}

impl candle_nn::Optimizer for AhtSgd {
    type Config = ParamsAhtSgd;

    fn new(vars: Vec<Var>, config: Self::Config) -> candle_core::Result<Self> {
        let named = vars
            .into_iter()
            .enumerate()
            .map(|(i, v)| (format!("{i:06}"), v))
            .collect();
        AhtSgd::new(named, config)
    }

    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        AhtSgd::step(self, grads, 0.0, 0.0)
            .map(|_| ())
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    }

    fn learning_rate(&self) -> f64 {
        self.params.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.params.lr = lr;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn var(v: &[f64]) -> Var {
        Var::from_tensor(&Tensor::new(v, &Device::Cpu).unwrap()).unwrap()
    }

    fn grads_of(w: &Var) -> GradStore {
        // loss = ½‖w‖², gradient w
        (w.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5)
            .unwrap()
            .backward()
            .unwrap()
    }

    #[test]
    fn plain_sgd_follows_the_gradient() {
        let w = var(&[1.0, -2.0]);
        let mut o = AhtSgd::new(
            vec![("w".into(), w.clone())],
            ParamsAhtSgd {
                lr: 0.1,
                ..Default::default()
            },
        )
        .unwrap();
        o.step(&grads_of(&w), 0.0, 0.0).unwrap();
        assert_eq!(w.as_tensor().to_vec1::<f64>().unwrap(), vec![0.9, -1.8]);
    }

    #[test]
    fn momentum_and_weight_decay_match_the_hand_computation() {
        // reference by hand: g = w, d = g + 0.5 w = 1.5 w; b1 = d; w1 = w - 0.1 b1 = 0.85 w
        // d2 = 1.5 * 0.85 w = 1.275 w; b2 = 0.9 * 1.5 w + 1.275 w = 2.625 w; w2 = 0.85 w - 0.2625 w
        let w = var(&[2.0]);
        let mut o = AhtSgd::new(
            vec![("w".into(), w.clone())],
            ParamsAhtSgd {
                lr: 0.1,
                momentum: 0.9,
                weight_decay: 0.5,
                ..Default::default()
            },
        )
        .unwrap();
        o.step(&grads_of(&w), 0.0, 0.0).unwrap();
        o.step(&grads_of(&w), 0.0, 0.0).unwrap();
        let got = w.as_tensor().to_vec1::<f64>().unwrap()[0];
        assert!((got - 2.0 * (0.85 - 0.2625)).abs() < 1e-12, "{got}");
    }

    #[test]
    fn noise_is_the_seeded_stable_stream_times_sigma() {
        let w = var(&[0.0; 8]);
        let params = ParamsAhtSgd {
            lr: 0.5,
            sigma: 0.1,
            noise: NoiseKind::Stable(AlphaSchedule::Fixed(1.5)),
            seed: 3,
            ..Default::default()
        };
        let mut o = AhtSgd::new(vec![("w".into(), w.clone())], params).unwrap();
        let tel = o.step(&grads_of(&w), 0.0, 0.0).unwrap();
        let mut xi = vec![0.0; 8];
        stable::fill_f64(1.5, stable::stream_key(3, "w"), 0, &mut xi);
        let want: Vec<f64> = xi.iter().map(|x| -0.5 * 0.1 * x).collect();
        assert_eq!(w.as_tensor().to_vec1::<f64>().unwrap(), want);
        assert_eq!(tel.alpha, 1.5);
        assert!(
            (tel.noise_norm - 0.1 * xi.iter().map(|x| x * x).sum::<f64>().sqrt()).abs() < 1e-12
        );
    }

    fn adam_base() -> update::AdamBase {
        update::AdamBase {
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
        }
    }

    /// With no noise (none, or σ = 0), an Adam base is AdamW, bit for bit over ten steps
    /// with a changing learning rate, weight decay included.
    #[test]
    fn adam_base_without_noise_is_adamw_to_the_bit() {
        use crate::optim::adam::{AdamW, ParamsAdamW};
        use crate::optim::grad_clip::reference::{loss, problem};
        for noise in [
            NoiseKind::None,
            NoiseKind::Stable(AlphaSchedule::Fixed(1.5)),
        ] {
            let (w, b, x) = problem();
            let (w2, b2, _) = problem();
            let mut ours = AhtSgd::new(
                vec![("w".into(), w.clone()), ("b".into(), b.clone())],
                ParamsAhtSgd {
                    lr: 0.01,
                    sigma: 0.0,
                    noise: noise.clone(),
                    weight_decay: 0.05,
                    base: Base::Adam(adam_base()),
                    ..Default::default()
                },
            )
            .unwrap();
            let params = ParamsAdamW {
                lr: 0.01,
                beta1: 0.9,
                beta2: 0.99,
                eps: 1e-8,
                weight_decay: 0.05,
            };
            let mut theirs = AdamW::new(
                vec![("w".into(), w2.clone()), ("b".into(), b2.clone())],
                params,
            )
            .unwrap();
            let bits = |v: &[&Var]| -> Vec<u32> {
                v.iter()
                    .flat_map(|v| {
                        let t = v.as_tensor().flatten_all().unwrap();
                        t.to_vec1::<f32>().unwrap().into_iter().map(f32::to_bits)
                    })
                    .collect()
            };
            for k in 0..10 {
                let lr = 0.01 / (1.0 + k as f64);
                ours.params.lr = lr;
                theirs.params.lr = lr;
                ours.step(&loss(&w, &b, &x).backward().unwrap(), 0.0, 0.0)
                    .unwrap();
                theirs
                    .step(&loss(&w2, &b2, &x).backward().unwrap())
                    .unwrap();
                assert_eq!(bits(&[&w, &b]), bits(&[&w2, &b2]), "{noise:?}, step {k}");
            }
        }
    }

    /// Two steps on ½‖θ‖² worked by hand in f64 from the noise stream itself: with gradient
    /// placement the noise enters the gradient before the moments; with levy_step it is added
    /// to Adam's step, scaled by lr^(1/α).
    #[test]
    fn adam_base_places_the_noise_as_documented() {
        let (alpha, sigma, lr, seed) = (1.5, 0.1, 0.05, 3);
        for placement in [NoisePlacement::Gradient, NoisePlacement::LevyStep] {
            let theta = var(&[1.0, -2.0, 0.5]);
            let mut o = AhtSgd::new(
                vec![("t".into(), theta.clone())],
                ParamsAhtSgd {
                    lr,
                    sigma,
                    placement,
                    noise: NoiseKind::Stable(AlphaSchedule::Fixed(alpha)),
                    base: Base::Adam(adam_base()),
                    seed,
                    ..Default::default()
                },
            )
            .unwrap();
            let mut want: Vec<f64> = vec![1.0, -2.0, 0.5];
            let (mut m, mut v) = (vec![0.0; 3], vec![0.0; 3]);
            let key = stable::stream_key(seed, "t");
            for step in 0..2u64 {
                let mut xi = vec![0.0; 3];
                stable::fill_f64(alpha, key, step, &mut xi);
                let t = step as i32 + 1;
                for i in 0..3 {
                    let n = sigma * xi[i];
                    let g = want[i]
                        + if placement == NoisePlacement::Gradient {
                            n
                        } else {
                            0.0
                        };
                    m[i] = 0.9 * m[i] + 0.1 * g;
                    v[i] = 0.99 * v[i] + 0.01 * g * g;
                    let m_hat = m[i] / (1.0 - 0.9f64.powi(t));
                    let v_hat = v[i] / (1.0 - 0.99f64.powi(t));
                    want[i] -= lr * m_hat / (v_hat.sqrt() + 1e-8);
                    if placement == NoisePlacement::LevyStep {
                        want[i] -= lr.powf(1.0 / alpha) * n;
                    }
                }
                let t = o.step(&grads_of(&theta), 0.0, 0.0).unwrap();
                assert!(t.noise_norm > 0.0);
            }
            let got: Vec<f64> = theta.as_tensor().to_vec1().unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-12, "{placement:?}: {got:?} vs {want:?}");
            }
        }
    }

    /// An Adam base's moments go into the checkpoint state: three steps, export, import into
    /// a fresh optimizer, three more give the bits of six in one go; a missing moment is an
    /// error naming it.
    #[test]
    fn adam_base_state_continues_exactly() {
        let params = ParamsAhtSgd {
            lr: 0.05,
            sigma: 0.1,
            noise: NoiseKind::Stable(AlphaSchedule::Fixed(1.7)),
            base: Base::Adam(adam_base()),
            seed: 5,
            ..Default::default()
        };
        let whole = var(&[1.0, -2.0, 0.5]);
        let mut a = AhtSgd::new(vec![("t".into(), whole.clone())], params.clone()).unwrap();
        for _ in 0..6 {
            a.step(&grads_of(&whole), 0.0, 0.0).unwrap();
        }
        let cut = var(&[1.0, -2.0, 0.5]);
        let mut b = AhtSgd::new(vec![("t".into(), cut.clone())], params.clone()).unwrap();
        for _ in 0..3 {
            b.step(&grads_of(&cut), 0.0, 0.0).unwrap();
        }
        let state: std::collections::HashMap<String, Tensor> =
            b.export_state().unwrap().into_iter().collect();
        assert!(state.contains_key("adam_m/t") && state.contains_key("adam_v/t"));
        // a parameter without a gradient has zero moments in the state
        let unused = var(&[4.0]);
        let idle = AhtSgd::new(
            vec![("t".into(), cut.clone()), ("u".into(), unused)],
            params.clone(),
        )
        .unwrap();
        let zeros: Vec<f64> = idle
            .export_state()
            .unwrap()
            .into_iter()
            .find(|(n, _)| n == "adam_v/u")
            .unwrap()
            .1
            .to_vec1()
            .unwrap();
        assert_eq!(zeros, [0.0]);
        let mut c = AhtSgd::new(vec![("t".into(), cut.clone())], params.clone()).unwrap();
        c.import_state(&state, 3).unwrap();
        for _ in 0..3 {
            c.step(&grads_of(&cut), 0.0, 0.0).unwrap();
        }
        let bits = |v: &Var| -> Vec<u64> {
            let values: Vec<f64> = v.as_tensor().to_vec1().unwrap();
            values.into_iter().map(f64::to_bits).collect()
        };
        assert_eq!(bits(&whole), bits(&cut));
        let mut partial = state.clone();
        partial.remove("adam_v/t");
        let mut d = AhtSgd::new(vec![("t".into(), cut.clone())], params).unwrap();
        let err = d.import_state(&partial, 3).unwrap_err().to_string();
        assert!(err.contains("adam_v/t"), "{err}");
    }

    /// Momentum 0.9, weight decay on the matrix only, the gradient clipped to norm 1:
    /// PyTorch's SGD with two parameter groups after `clip_grad_norm_` (figures in
    /// grad_clip::reference). The telemetry's norm is the one before clipping.
    #[test]
    fn weights_only_decay_and_clipping_match_pytorch() {
        use crate::optim::grad_clip::reference::{SGD, assert_matches, loss, problem};
        let (w, b, x) = problem();
        let mut o = AhtSgd::new(
            vec![("w".into(), w.clone()), ("b".into(), b.clone())],
            ParamsAhtSgd {
                lr: 0.05,
                momentum: 0.9,
                weight_decay: 0.1,
                decay: Decay::WeightsOnly,
                grad_clip: Some(1.0),
                ..Default::default()
            },
        )
        .unwrap();
        let norms: Vec<f64> = (0..3)
            .map(|_| {
                let grads = loss(&w, &b, &x).backward().unwrap();
                o.step(&grads, 0.0, 0.0).unwrap().grad_norm
            })
            .collect();
        assert_matches(&norms, &w, &b, &SGD);
    }

    /// The noise comes after clipping: with `gradient_norm` scale, a clipped step draws the
    /// noise of σ·max (the clipped gradient's norm), so it moves θ as an unclipped step on the
    /// pre-scaled gradient does, bit for bit with the same stream.
    #[test]
    fn noise_is_added_to_the_clipped_gradient() {
        let run = |clip: Option<f64>, scale_loss: f64| {
            let a = var(&[3.0, 4.0]);
            let mut o = AhtSgd::new(
                vec![("a".into(), a.clone())],
                ParamsAhtSgd {
                    lr: 0.1,
                    sigma: 0.5,
                    scale: NoiseScale::GradientNorm,
                    noise: NoiseKind::Stable(AlphaSchedule::Fixed(1.5)),
                    grad_clip: clip,
                    seed: 4,
                    ..Default::default()
                },
            )
            .unwrap();
            // loss = k·Σθ²/2: gradient k·θ, norm 5k
            let loss =
                (a.as_tensor().sqr().unwrap().sum_all().unwrap() * (scale_loss / 2.0)).unwrap();
            let t = o.step(&loss.backward().unwrap(), 0.0, 0.0).unwrap();
            let v: Vec<f64> = a.as_tensor().to_vec1().unwrap();
            (v, t.grad_norm)
        };
        // the gradient 10·θ, of norm 50, clipped to 5 is 10·θ·5/(50 + 1e-6): the unclipped
        // gradient of the loss with k = 10·5/(50 + 1e-6)
        let k = 10.0 * 5.0 / (50.0 + 1e-6);
        let (clipped, before) = run(Some(5.0), 10.0);
        let (direct, _) = run(None, k);
        assert!((before - 50.0).abs() < 1e-4, "{before}");
        for (c, d) in clipped.iter().zip(&direct) {
            assert!(
                (c - d).abs() <= 1e-12 * d.abs().max(1.0),
                "{clipped:?} vs {direct:?}"
            );
        }
        let (unclipped, _) = run(None, 10.0);
        assert!(
            clipped
                .iter()
                .zip(&unclipped)
                .any(|(c, u)| (c - u).abs() > 0.1)
        );
    }

    #[test]
    fn gradient_norm_scale_is_sigma_times_the_whole_gradient_norm() {
        // two tensors, gradient w: ‖g‖ = √(3² + 4² + 12²) = 13, so scale = gradient_norm with
        // σ = 0.01 must take the step absolute σ = 0.13 takes, same noise stream; with
        // scale_by_dim too, σ·‖g‖/√d per tensor
        for by_dim in [false, true] {
            let run = |scale: NoiseScale, sigma: f64| {
                let (a, b) = (var(&[3.0, 4.0]), var(&[12.0]));
                let mut o = AhtSgd::new(
                    vec![("a".into(), a.clone()), ("b".into(), b.clone())],
                    ParamsAhtSgd {
                        lr: 0.1,
                        sigma,
                        scale,
                        scale_by_dim: by_dim,
                        noise: NoiseKind::Stable(AlphaSchedule::Fixed(1.7)),
                        seed: 9,
                        ..Default::default()
                    },
                )
                .unwrap();
                let loss = ((a.as_tensor().sqr().unwrap().sum_all().unwrap()
                    + b.as_tensor().sqr().unwrap().sum_all().unwrap())
                .unwrap()
                    * 0.5)
                    .unwrap();
                let t = o.step(&loss.backward().unwrap(), 0.0, 0.0).unwrap();
                let mut out: Vec<f64> = a.as_tensor().to_vec1().unwrap();
                out.extend(b.as_tensor().to_vec1::<f64>().unwrap());
                (out, t.noise_norm)
            };
            let (relative, n1) = run(NoiseScale::GradientNorm, 0.01);
            let (absolute, n2) = run(NoiseScale::Absolute, 0.13);
            for (x, y) in relative.iter().zip(&absolute) {
                assert!(
                    (x - y).abs() < 1e-12,
                    "{by_dim}: {relative:?} vs {absolute:?}"
                );
            }
            assert!((n1 - n2).abs() < 1e-12 && n1 > 0.0);
        }
    }

    #[test]
    fn levy_step_scales_noise_by_lr_to_the_one_over_alpha() {
        let w = var(&[0.0; 4]);
        let params = ParamsAhtSgd {
            lr: 0.25,
            sigma: 1.0,
            noise: NoiseKind::Stable(AlphaSchedule::Fixed(2.0)),
            placement: NoisePlacement::LevyStep,
            ..Default::default()
        };
        let mut o = AhtSgd::new(vec![("w".into(), w.clone())], params).unwrap();
        o.step(&grads_of(&w), 0.0, 0.0).unwrap();
        let mut xi = vec![0.0; 4];
        stable::fill_f64(2.0, stable::stream_key(0, "w"), 0, &mut xi);
        let got = w.as_tensor().to_vec1::<f64>().unwrap();
        for (g, x) in got.iter().zip(&xi) {
            assert!((g + 0.5 * x).abs() < 1e-12, "lr^(1/2) = 0.5");
        }
    }

    #[test]
    fn clipping_bounds_the_noise() {
        let w = var(&vec![0.0; 1000]);
        let params = ParamsAhtSgd {
            lr: 1.0,
            sigma: 1.0,
            noise: NoiseKind::Stable(AlphaSchedule::Fixed(1.0)),
            clip: Clip::Coordinate(2.0),
            ..Default::default()
        };
        let mut o = AhtSgd::new(vec![("w".into(), w.clone())], params).unwrap();
        let tel = o.step(&grads_of(&w), 0.0, 0.0).unwrap();
        let got = w.as_tensor().to_vec1::<f64>().unwrap();
        assert!(got.iter().all(|x| x.abs() <= 2.0));
        // P(|Cauchy| > 2) = 1 − 2·atan(2)/π ≈ 0.295
        assert!(
            (tel.noise_clipped - 0.295).abs() < 0.05,
            "{}",
            tel.noise_clipped
        );
    }

    #[test]
    fn non_finite_gradients_are_reported_not_trained_on() {
        let w = var(&[1.0]);
        let mut o = AhtSgd::new(
            vec![("w".into(), w.clone())],
            ParamsAhtSgd {
                lr: 0.1,
                ..Default::default()
            },
        )
        .unwrap();
        let bad = (w.as_tensor() * f64::NAN)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let err = o.step(&bad, 0.0, 0.0).unwrap_err();
        assert!(
            matches!(err, OptimError::NonFinite { step: 0, .. }),
            "{err}"
        );
        assert_eq!(
            w.as_tensor().to_vec1::<f64>().unwrap(),
            vec![1.0],
            "unchanged"
        );
    }
}
