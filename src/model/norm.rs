//! Batch norm's state (scale, shift and running statistics) and its forward pass from
//! differentiable per-channel ops, so candle's graph has its first- and second-order
//! gradients; the executor's own passes are in `tape::norm`, the CPU's fused sweeps in `bn`.

use candle_core::{Result, Tensor, Var};

/// How batch norm behaves in a forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Batch statistics, and the running statistics are updated.
    Train,
    /// Batch statistics, running statistics left alone (sharpness estimation).
    Probe,
    /// Running statistics.
    Eval,
}

/// Batch norm over channels of an `[n, c, h, w]` tensor.
pub struct BatchNorm {
    pub gamma: Var,
    pub beta: Var,
    pub running_mean: Var,
    pub running_var: Var,
    pub momentum: f64,
    pub eps: f64,
}

impl BatchNorm {
    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let (mean, var) = self.stats(x, mode)?;
        // y = (x − mean)·(γ/√(var + ε)) + β
        let scale = (self.gamma.as_tensor() * (var + self.eps)?.sqrt()?.recip()?)?;
        let shift = (self.beta.as_tensor() - (&mean * &scale)?)?;
        super::conv::add_channel_bias(&super::conv::scale_channels(x, &scale)?, &shift)
    }

    /// The per-channel mean and variance the mode normalises with (`[C]` each); in training
    /// mode, also folds them into the running statistics.
    pub fn stats(&self, x: &Tensor, mode: Mode) -> Result<(Tensor, Tensor)> {
        let c = x.dim(1)?;
        Ok(if mode == Mode::Eval {
            (
                self.running_mean.as_tensor().clone(),
                self.running_var.as_tensor().clone(),
            )
        } else {
            // per-channel sums in one parallel pass each, and per-channel shifts and scales
            // whose gradients are channel sums too (candle's reductions over the batch and
            // pixel axes, in broadcast ops' backward passes, walk them with strided loops)
            let m = (x.elem_count() / c) as f64;
            let mean = (super::conv::channel_sum(x)? / m)?;
            let centred = super::conv::add_channel_bias(x, &mean.neg()?)?;
            let var = (super::conv::channel_sum(&centred.sqr()?)? / m)?;
            if mode == Mode::Train {
                self.update_running(&mean, &var, m)?;
            }
            (mean, var)
        })
    }

    /// Folds a batch's mean and biased variance over `m` values into the running statistics
    /// (the variance made unbiased first).
    pub fn update_running(&self, mean: &Tensor, var: &Tensor, m: f64) -> Result<()> {
        let unbiased = (var.detach() * (m / (m - 1.0).max(1.0)))?;
        let m = self.momentum;
        let rm = ((self.running_mean.as_tensor() * (1.0 - m))? + (mean.detach() * m)?)?;
        let rv = ((self.running_var.as_tensor() * (1.0 - m))? + (unbiased * m)?)?;
        self.running_mean.set(&rm)?;
        self.running_var.set(&rv)
    }
}
