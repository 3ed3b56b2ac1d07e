//! α controllers: fixed, annealed, adaptive (sharpness-driven) and custom.

use crate::plan::{SignalExpr, Signals};

/// Shape of an annealing curve from 0 to 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Shape {
    Linear,
    Cosine,
    /// Logistic of steepness k centred at the middle, rescaled to run exactly from 0 to 1.
    Sigmoid(f64),
}

impl Shape {
    /// The curve at progress t in [0, 1].
    pub fn at(self, t: f64) -> f64 {
        let t = t.clamp(0.0, 1.0);
        match self {
            Shape::Linear => t,
            Shape::Cosine => 0.5 * (1.0 - (std::f64::consts::PI * t).cos()),
            Shape::Sigmoid(k) => {
                let s = |x: f64| 1.0 / (1.0 + (-k * (x - 0.5)).exp());
                (s(t) - s(0.0)) / (s(1.0) - s(0.0))
            }
        }
    }
}

/// How smoothed sharpness becomes α.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AlphaMap {
    /// α = 1 + sigmoid(v · (s̄ − c)), s̄ the EMA of log-sharpness.
    Sigmoid { v: f64, c: f64 },
    /// α = 2 − sigmoid(v · (r̄ − c)), r̄ the EMA (rate `ema`) of the relative change of sharpness:
    /// heavy tails while sharpness rises, α → 2 once it is flat.
    Trend { v: f64, c: f64, ema: f64 },
}

/// A schedule for α.
#[derive(Clone, Debug, PartialEq)]
pub enum AlphaSchedule {
    Fixed(f64),
    /// From `from` to `to` over `over_steps` steps along `shape`.
    Annealed {
        from: f64,
        to: f64,
        over_steps: f64,
        shape: Shape,
    },
    /// Driven by the EMA (rate `ema`) of log-sharpness through `map`; `initial` before the first estimate.
    Adaptive {
        ema: f64,
        map: AlphaMap,
        initial: f64,
    },
    /// An expression over signals, clamped to [1, 2].
    Custom {
        expr: SignalExpr,
        ema: f64,
    },
}

/// The learned state of an [`AlphaController`].
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ControllerState {
    pub sharpness_ema: Option<f64>,
    pub lambda_max: Option<f64>,
    pub trend_ema: f64,
}

/// Tracks the sharpness signals and gives α at each step.
#[derive(Clone, Debug)]
pub struct AlphaController {
    pub schedule: AlphaSchedule,
    /// EMA of log λ (None before the first estimate).
    pub sharpness_ema: Option<f64>,
    /// The latest raw estimate.
    pub lambda_max: Option<f64>,
    trend_ema: f64,
}

impl AlphaController {
    pub fn new(schedule: AlphaSchedule) -> Self {
        AlphaController {
            schedule,
            sharpness_ema: None,
            lambda_max: None,
            trend_ema: 0.0,
        }
    }

    /// What the controller has learned so far (for checkpoints).
    pub fn snapshot(&self) -> ControllerState {
        ControllerState {
            sharpness_ema: self.sharpness_ema,
            lambda_max: self.lambda_max,
            trend_ema: self.trend_ema,
        }
    }

    /// Continues from a snapshot.
    pub fn restore(&mut self, s: &ControllerState) {
        self.sharpness_ema = s.sharpness_ema;
        self.lambda_max = s.lambda_max;
        self.trend_ema = s.trend_ema;
    }

    /// Records a new sharpness estimate.
    pub fn observe(&mut self, lambda: f64) {
        let rate = match &self.schedule {
            AlphaSchedule::Adaptive { ema, .. } | AlphaSchedule::Custom { ema, .. } => *ema,
            _ => 0.05,
        };
        let log_l = lambda.max(1e-12).ln();
        if let (
            Some(prev),
            AlphaSchedule::Adaptive {
                map: AlphaMap::Trend { ema, .. },
                ..
            },
        ) = (self.lambda_max, &self.schedule)
        {
            let rel = (lambda - prev) / prev.abs().max(1e-12);
            self.trend_ema = (1.0 - ema) * self.trend_ema + ema * rel;
        }
        self.sharpness_ema = Some(match self.sharpness_ema {
            None => log_l,
            Some(s) => (1.0 - rate) * s + rate * log_l,
        });
        self.lambda_max = Some(lambda);
    }

    /// α for the given signals (step, epoch, progress), clamped to [1, 2].
    pub fn alpha(&self, signals: &Signals) -> f64 {
        let a = match &self.schedule {
            AlphaSchedule::Fixed(a) => *a,
            AlphaSchedule::Annealed {
                from,
                to,
                over_steps,
                shape,
            } => {
                let t = if *over_steps <= 0.0 {
                    1.0
                } else {
                    signals.step / over_steps
                };
                from + (to - from) * shape.at(t)
            }
            AlphaSchedule::Adaptive { map, initial, .. } => match (self.sharpness_ema, map) {
                (None, _) => *initial,
                (Some(s), AlphaMap::Sigmoid { v, c }) => 1.0 + sigmoid(v * (s - c)),
                (Some(_), AlphaMap::Trend { v, c, .. }) => 2.0 - sigmoid(v * (self.trend_ema - c)),
            },
            AlphaSchedule::Custom { expr, .. } => {
                let s = Signals {
                    lambda_max: self.lambda_max.unwrap_or(0.0),
                    sharpness_ema: self.sharpness_ema.unwrap_or(0.0),
                    ..*signals
                };
                expr.eval(&s)
            }
        };
        if a.is_finite() {
            a.clamp(1.0, 2.0)
        } else {
            2.0
        }
    }

    /// Whether this schedule reads sharpness.
    pub fn needs_sharpness(&self) -> bool {
        matches!(
            self.schedule,
            AlphaSchedule::Adaptive { .. } | AlphaSchedule::Custom { .. }
        )
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_step(c: &AlphaController, step: f64) -> f64 {
        c.alpha(&Signals {
            step,
            ..Default::default()
        })
    }

    #[test]
    fn shapes_run_from_zero_to_one() {
        for s in [Shape::Linear, Shape::Cosine, Shape::Sigmoid(8.0)] {
            assert!(
                s.at(0.0).abs() < 1e-12 && (s.at(1.0) - 1.0).abs() < 1e-12,
                "{s:?}"
            );
            assert!((s.at(0.5) - 0.5).abs() < 1e-12, "{s:?} is symmetric");
            assert!(s.at(0.3) < s.at(0.4));
        }
    }

    #[test]
    fn annealing_reaches_its_target_and_stays() {
        let c = AlphaController::new(AlphaSchedule::Annealed {
            from: 1.2,
            to: 2.0,
            over_steps: 100.0,
            shape: Shape::Linear,
        });
        assert!((at_step(&c, 0.0) - 1.2).abs() < 1e-12);
        assert!((at_step(&c, 50.0) - 1.6).abs() < 1e-12);
        assert_eq!(at_step(&c, 500.0), 2.0);
    }

    #[test]
    fn adaptive_default_reading_follows_the_edge_of_stability() {
        // lr = 0.05: the Edge of Stability is 2/lr = 40; c = log(1/lr) = log 20
        let lr: f64 = 0.05;
        let sched = AlphaSchedule::Adaptive {
            ema: 1.0,
            map: AlphaMap::Sigmoid {
                v: 4.0,
                c: (1.0 / lr).ln(),
            },
            initial: 1.0,
        };
        let mut c = AlphaController::new(sched);
        assert_eq!(at_step(&c, 0.0), 1.0);
        c.observe(2.0 / lr / 4.0); // a quarter of the threshold
        assert!(
            (at_step(&c, 0.0) - 1.0588).abs() < 1e-3,
            "{}",
            at_step(&c, 0.0)
        );
        c.observe(2.0 / lr / 2.0); // half
        assert!((at_step(&c, 0.0) - 1.5).abs() < 1e-12);
        c.observe(2.0 / lr); // on the plateau
        assert!((at_step(&c, 0.0) - 1.9412).abs() < 1e-3);
    }

    #[test]
    fn ema_smooths_log_sharpness() {
        let mut c = AlphaController::new(AlphaSchedule::Adaptive {
            ema: 0.5,
            map: AlphaMap::Sigmoid { v: 1.0, c: 0.0 },
            initial: 1.0,
        });
        c.observe(1.0);
        c.observe(std::f64::consts::E.powi(2));
        assert!((c.sharpness_ema.unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn trend_map_gives_heavy_tails_while_sharpness_rises() {
        let mut c = AlphaController::new(AlphaSchedule::Adaptive {
            ema: 0.1,
            map: AlphaMap::Trend {
                v: 50.0,
                c: 0.0,
                ema: 0.5,
            },
            initial: 1.0,
        });
        for l in [1.0, 2.0, 4.0, 8.0] {
            c.observe(l);
        }
        let rising = at_step(&c, 0.0);
        for _ in 0..20 {
            c.observe(8.0);
        }
        let flat = at_step(&c, 0.0);
        assert!(rising < 1.05 && flat > 1.45, "rising {rising}, flat {flat}");
    }
}
