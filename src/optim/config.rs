//! A whole optimizer as a run uses it.

use super::ParamsAhtSgd;
use super::estimate::Estimator;
use super::lr::LrSchedule;

/// The update's settings (noise, α schedule, clipping, momentum), Adam's where the optimizer
/// is Adam, the learning-rate schedule and how sharpness is estimated. The recipe checker
/// builds one from an optimizer declaration; a library user builds one directly.
#[derive(Clone, Debug)]
pub struct OptimizerConfig {
    pub params: ParamsAhtSgd,
    pub adam: Option<candle_nn::ParamsAdamW>,
    pub lr: LrSchedule,
    pub estimator: Option<Estimator>,
}
