//! AHTSGD and its baselines, usable from any candle program.
//!
//! Everything a recipe's run uses is here and takes no recipe: [`alpha`] (the α controllers,
//! smoothing per step with a half-life), [`estimate`] (the sharpness loop, reaching a model
//! through [`estimate::Curvature`]), [`lr`] (learning-rate schedules), [`signal`] (custom α
//! expressions) and [`config::OptimizerConfig`] (the whole description the recipe checker
//! builds from an optimizer declaration).
//!
//! ```
//! use ahtsgd::optim::{AhtSgd, ParamsAhtSgd, NoiseKind, alpha::AlphaSchedule};
//! use candle_core::{Device, Tensor, Var};
//! let w = Var::from_tensor(&Tensor::new(&[1.0f32, -2.0], &Device::Cpu)?)?;
//! let params = ParamsAhtSgd { lr: 0.1, sigma: 0.01, noise: NoiseKind::Stable(AlphaSchedule::Fixed(1.5)), ..Default::default() };
//! let mut opt = AhtSgd::new(vec![("w".to_string(), w.clone())], params)?;
//! let loss = w.as_tensor().sqr()?.sum_all()?;
//! let t = opt.step(&loss.backward()?, 0.0, 0.0)?;
//! assert!(t.alpha == 1.5 && t.noise_norm > 0.0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod adam;
pub mod alpha;
pub mod config;
pub mod decay;
pub mod estimate;
pub mod grad_clip;
mod lanes;
pub mod lr;
pub mod sgd;
pub mod sharpness;
pub mod signal;
pub mod stable;
#[cfg(feature = "cuda")]
mod stable_cuda;
pub mod update;

pub use decay::Decay;
pub use sgd::{
    AhtSgd, Base, Clip, NoiseKind, NoisePlacement, NoiseScale, OptimError, ParamsAhtSgd, Telemetry,
};
pub use sharpness::enable_second_order;
