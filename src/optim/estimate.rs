//! The sharpness-estimation loop: every K steps, λ from Hessian-vector products on the current
//! batch or a fixed probe batch, power iteration warm-started from its last vector.
//!
//! The loop reaches the model through [`Curvature`], which a model implements; nothing here
//! knows what a model is.

use candle_core::{Result, Tensor, Var};

use super::sharpness::{self, Hessian};

/// How sharpness is measured.
#[derive(Clone, Debug, PartialEq)]
pub enum Estimator {
    /// λ_max by power iteration: at most `iters` products, stopping when the Rayleigh quotient
    /// changes by less than `tol` (relative).
    PowerIteration {
        iters: usize,
        tol: f64,
        every: u64,
        probe: bool,
    },
    /// tr(H)/d from `samples` Rademacher probes: a mean eigenvalue.
    Hutchinson {
        samples: usize,
        every: u64,
        probe: bool,
    },
}

impl Estimator {
    /// Steps between estimates.
    pub fn every(&self) -> u64 {
        match self {
            Estimator::PowerIteration { every, .. } | Estimator::Hutchinson { every, .. } => {
                (*every).max(1)
            }
        }
    }

    /// Whether estimates use a fixed probe batch rather than the current one.
    pub fn on_probe(&self) -> bool {
        match self {
            Estimator::PowerIteration { probe, .. } | Estimator::Hutchinson { probe, .. } => *probe,
        }
    }

    /// What an estimate is, as records name it: `power_iteration` (λ_max) or `hutchinson` (a
    /// mean eigenvalue).
    pub fn name(&self) -> &'static str {
        match self {
            Estimator::PowerIteration { .. } => "power_iteration",
            Estimator::Hutchinson { .. } => "hutchinson",
        }
    }

    /// Whether an estimate is due before the update of step `step`.
    pub fn due(&self, step: u64) -> bool {
        step.is_multiple_of(self.every())
    }
}

/// What the loop needs of a model: Hessian-vector products of its loss on a batch, and the
/// variables they act on (in the order of the products' directions).
pub trait Curvature {
    fn hessian(&self, x: &Tensor, y: &Tensor) -> Result<Box<dyn Hessian + '_>>;
    fn variables(&self) -> Vec<Var>;
}

/// An [`Estimator`] with its state: power iteration's last vector and the seed of its draws.
pub struct SharpnessLoop {
    pub estimator: Estimator,
    seed: u64,
    /// Power iteration's last unit vector, to start the next estimate from (checkpointed).
    pub warm: Option<Vec<Tensor>>,
}

impl SharpnessLoop {
    pub fn new(estimator: Estimator, seed: u64) -> Self {
        SharpnessLoop {
            estimator,
            seed,
            warm: None,
        }
    }

    /// One estimate of sharpness on the batch `(x, y)` before the update of step `step`; its
    /// random start and probes are drawn from `seed ^ step`.
    pub fn estimate(
        &mut self,
        model: &dyn Curvature,
        x: &Tensor,
        y: &Tensor,
        step: u64,
    ) -> Result<f64> {
        let mut hessian = model.hessian(x, y)?;
        let vars = model.variables();
        match &self.estimator {
            Estimator::PowerIteration { iters, tol, .. } => {
                let r = sharpness::power_iteration_with(
                    hessian.as_mut(),
                    &vars,
                    *iters,
                    *tol,
                    self.warm.take(),
                    self.seed ^ step,
                )?;
                self.warm = Some(r.vector);
                Ok(r.lambda)
            }
            Estimator::Hutchinson { samples, .. } => {
                sharpness::hutchinson_with(hessian.as_mut(), &vars, *samples, self.seed ^ step)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// A quadratic ½ xᵀAx with A = diag(d): its Hessian is A whatever the batch.
    struct Quadratic {
        w: Var,
        d: Vec<f64>,
    }

    struct Diagonal(Tensor);

    impl Hessian for Diagonal {
        fn hvp(&mut self, v: &[Tensor]) -> Result<Vec<Tensor>> {
            Ok(vec![v[0].mul(&self.0)?])
        }
    }

    impl Curvature for Quadratic {
        fn hessian(&self, _x: &Tensor, _y: &Tensor) -> Result<Box<dyn Hessian + '_>> {
            Ok(Box::new(Diagonal(Tensor::new(
                self.d.as_slice(),
                &Device::Cpu,
            )?)))
        }
        fn variables(&self) -> Vec<Var> {
            vec![self.w.clone()]
        }
    }

    #[test]
    fn loop_estimates_the_top_and_the_mean_eigenvalue_through_the_trait() -> Result<()> {
        let q = Quadratic {
            w: Var::zeros(4, DType::F64, &Device::Cpu)?,
            d: vec![3.0, -1.0, 0.5, 7.0],
        };
        let none = Tensor::zeros(1, DType::F64, &Device::Cpu)?;
        let mut power = SharpnessLoop::new(
            Estimator::PowerIteration {
                iters: 200,
                tol: 1e-12,
                every: 50,
                probe: false,
            },
            3,
        );
        let lambda = power.estimate(&q, &none, &none, 0)?;
        assert!((lambda - 7.0).abs() < 1e-6, "{lambda}");
        assert!(
            power.warm.is_some(),
            "keeps its vector for the next estimate"
        );
        // Rademacher probes z give zᵀAz = tr(A) exactly for a diagonal A
        let mut trace = SharpnessLoop::new(
            Estimator::Hutchinson {
                samples: 3,
                every: 10,
                probe: true,
            },
            3,
        );
        let mean = trace.estimate(&q, &none, &none, 10)?;
        assert!((mean - 9.5 / 4.0).abs() < 1e-12, "{mean}");
        assert!(trace.estimator.due(20) && !trace.estimator.due(25));
        assert!(trace.estimator.on_probe());
        Ok(())
    }
}
