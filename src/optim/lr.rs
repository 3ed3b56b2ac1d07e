//! Learning rate over a run: constant, step decay or cosine, with linear warmup.

/// Learning rate over the run.
#[derive(Clone, Debug, PartialEq)]
pub struct LrSchedule {
    pub base: f64,
    pub kind: LrKind,
    /// Steps over which the rate rises linearly to its scheduled value (0: none).
    pub warmup_steps: f64,
}

/// The shape of a learning-rate schedule.
#[derive(Clone, Debug, PartialEq)]
pub enum LrKind {
    Constant,
    /// Multiplied by `factor` every `every_steps` steps.
    Step {
        every_steps: f64,
        factor: f64,
    },
    /// Half a cosine from `base` down to `min` over the whole run.
    Cosine {
        min: f64,
    },
}

impl LrSchedule {
    /// A constant rate.
    pub fn constant(base: f64) -> Self {
        LrSchedule {
            base,
            kind: LrKind::Constant,
            warmup_steps: 0.0,
        }
    }

    /// The rate at `step` of a run of `total_steps`.
    pub fn at(&self, step: u64, total_steps: u64) -> f64 {
        let s = step as f64;
        let lr = match &self.kind {
            LrKind::Constant => self.base,
            LrKind::Step {
                every_steps,
                factor,
            } => self.base * factor.powf((s / every_steps.max(1.0)).floor()),
            LrKind::Cosine { min } => {
                let t = (s / total_steps.max(1) as f64).min(1.0);
                min + 0.5 * (self.base - min) * (1.0 + (std::f64::consts::PI * t).cos())
            }
        };
        if self.warmup_steps > 0.0 && s < self.warmup_steps {
            lr * (s + 1.0) / self.warmup_steps
        } else {
            lr
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_against_hand_values() {
        let step = LrSchedule {
            base: 0.1,
            kind: LrKind::Step {
                every_steps: 10.0,
                factor: 0.5,
            },
            warmup_steps: 0.0,
        };
        assert_eq!(step.at(9, 100), 0.1);
        assert_eq!(step.at(10, 100), 0.05);
        assert_eq!(step.at(25, 100), 0.025);
        let cosine = LrSchedule {
            base: 1.0,
            kind: LrKind::Cosine { min: 0.0 },
            warmup_steps: 4.0,
        };
        assert!((cosine.at(50, 100) - 0.5).abs() < 1e-12);
        assert_eq!(cosine.at(100, 100), 0.0);
        // warmup: (s + 1)/4 of the scheduled value for the first 4 steps
        let scheduled = 0.5 * (1.0 + (std::f64::consts::PI / 100.0).cos());
        assert!((cosine.at(1, 100) - 0.5 * scheduled).abs() < 1e-12);
        assert_eq!(LrSchedule::constant(0.3).at(7, 10), 0.3);
    }
}
