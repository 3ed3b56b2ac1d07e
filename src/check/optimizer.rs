//! An optimizer declaration, resolved, as the typed description the trainer runs.

use crate::optim::alpha::{AlphaMap, AlphaSchedule, Shape, Smoothing};
use crate::optim::config::OptimizerConfig;
use crate::optim::estimate::Estimator;
use crate::optim::lr::{LrKind, LrSchedule};
use crate::optim::update::AdamBase;
use crate::optim::{Base, Clip, Decay, NoiseKind, NoisePlacement, NoiseScale, ParamsAhtSgd};
use crate::plan::{Obj, Val};
use crate::syntax::ast::Unit;

fn steps_of(v: (f64, Unit), steps_per_epoch: u64) -> f64 {
    match v.1 {
        Unit::Steps => v.0,
        Unit::Epochs => v.0 * steps_per_epoch as f64,
    }
}

/// The optimizer of a trial's resolved settings, with spans in epochs turned into steps.
pub fn lower(o: &Obj, seed: u64, steps_per_epoch: u64) -> OptimizerConfig {
    let lr_obj = o.obj("lr_schedule");
    let kind = match lr_obj.kind {
        "step" => LrKind::Step {
            every_steps: steps_of(lr_obj.quantity("every"), steps_per_epoch),
            factor: lr_obj.f64("factor"),
        },
        "cosine" => LrKind::Cosine {
            min: lr_obj.f64("min"),
        },
        _ => LrKind::Constant,
    };
    let lr = LrSchedule {
        base: o.f64("lr"),
        kind,
        warmup_steps: steps_of(o.quantity("warmup"), steps_per_epoch),
    };
    let mut params = ParamsAhtSgd {
        lr: lr.base,
        seed,
        ..Default::default()
    };
    let has = |f: &str| o.fields.iter().any(|(n, _)| *n == f);
    if has("momentum") {
        params.momentum = o.f64("momentum");
    }
    if has("weight_decay") {
        params.weight_decay = o.f64("weight_decay");
    }
    if has("decay") && o.str("decay") == "weights_only" {
        params.decay = Decay::WeightsOnly;
    }
    if has("grad_clip") {
        let c = o.obj("grad_clip");
        if c.kind == "norm" {
            params.grad_clip = Some(c.f64("max"));
        }
    }
    if has("base") {
        let b = o.obj("base");
        if b.kind == "adam" {
            params.base = Base::Adam(AdamBase {
                beta1: b.f64("beta1"),
                beta2: b.f64("beta2"),
                eps: b.f64("eps"),
            });
        }
    }
    if has("nesterov") {
        params.nesterov = o.bool("nesterov");
    }
    if has("noise") {
        params.placement = if o.str("noise") == "levy_step" {
            NoisePlacement::LevyStep
        } else {
            NoisePlacement::Gradient
        };
    }
    if has("clip") {
        let c = o.obj("clip");
        params.clip = match c.kind {
            "coordinate" => Clip::Coordinate(c.f64("max")),
            "norm" => Clip::Norm(c.f64("max")),
            _ => Clip::None,
        };
    }
    if has("sigma") {
        params.sigma = o.f64("sigma");
    }
    if has("scale") && o.str("scale") == "gradient_norm" {
        params.scale = NoiseScale::GradientNorm;
    }
    if has("scale_by_dim") {
        params.scale_by_dim = o.bool("scale_by_dim");
    }
    let mut estimator = None;
    let mut adam = None;
    params.noise = match o.kind {
        "ahtsgd" => {
            let (s, e) = schedule(o.obj("alpha"), steps_per_epoch);
            estimator = e;
            NoiseKind::Stable(s)
        }
        "levy_sgd" => NoiseKind::Stable(AlphaSchedule::Fixed(o.f64("alpha"))),
        "gaussian_sgd" => NoiseKind::Gaussian {
            eta: o.f64("eta"),
            gamma: o.f64("gamma"),
        },
        "adam" | "adamw" => {
            adam = Some(candle_nn::ParamsAdamW {
                lr: lr.base,
                beta1: o.f64("beta1"),
                beta2: o.f64("beta2"),
                eps: o.f64("eps"),
                weight_decay: o.f64("weight_decay"),
            });
            NoiseKind::None
        }
        _ => NoiseKind::None,
    };
    OptimizerConfig {
        params,
        adam,
        lr,
        estimator,
    }
}

/// An α schedule object -> schedule and sharpness estimator.
fn schedule(s: &Obj, steps_per_epoch: u64) -> (AlphaSchedule, Option<Estimator>) {
    let est = |s: &Obj| -> Option<Estimator> {
        let e = s.obj("sharpness");
        let probe = || e.str("batch") == "probe";
        match e.kind {
            "power_iteration" => Some(Estimator::PowerIteration {
                iters: e.usize("iters"),
                tol: e.f64("tol"),
                every: e.f64("every") as u64,
                probe: probe(),
            }),
            "hutchinson" => Some(Estimator::Hutchinson {
                samples: e.usize("samples"),
                every: e.f64("every") as u64,
                probe: probe(),
            }),
            _ => None,
        }
    };
    // the checker leaves exactly one of the two in the object
    let smoothing = |s: &Obj| {
        if s.fields.iter().any(|(n, _)| *n == "half_life") {
            Smoothing::HalfLife {
                steps: steps_of(s.quantity("half_life"), steps_per_epoch),
            }
        } else {
            Smoothing::PerEstimate { rate: s.f64("ema") }
        }
    };
    match s.kind {
        "fixed" => (AlphaSchedule::Fixed(s.f64("alpha")), None),
        "annealed" => {
            let shape = s.obj("shape");
            let shape = match shape.kind {
                "cosine" => Shape::Cosine,
                "sigmoid" => Shape::Sigmoid(shape.f64("k")),
                _ => Shape::Linear,
            };
            (
                AlphaSchedule::Annealed {
                    from: s.f64("from"),
                    to: s.f64("to"),
                    over_steps: steps_of(s.quantity("over"), steps_per_epoch),
                    shape,
                },
                None,
            )
        }
        "adaptive" => {
            let m = s.obj("map");
            let map = match m.kind {
                "trend" => AlphaMap::Trend {
                    v: m.f64("v"),
                    c: m.f64("c"),
                    ema: m.f64("ema"),
                },
                "settling" => AlphaMap::Settling {
                    window: steps_of(m.quantity("window"), steps_per_epoch),
                    tolerance: m.f64("tolerance"),
                },
                _ => AlphaMap::Sigmoid {
                    v: m.f64("v"),
                    c: m.f64("c"),
                },
            };
            (
                AlphaSchedule::Adaptive {
                    smoothing: smoothing(s),
                    map,
                    initial: s.f64("initial"),
                },
                est(s),
            )
        }
        _ => {
            let expr = match s.get("alpha") {
                Val::Expr(e) => e.clone(),
                _ => crate::plan::SignalExpr::Const(2.0),
            };
            (
                AlphaSchedule::Custom {
                    expr,
                    smoothing: smoothing(s),
                },
                est(s),
            )
        }
    }
}
