//! Which parameters weight decay applies to.

use candle_core::Var;

/// The parameters weight decay applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Decay {
    /// Every parameter.
    #[default]
    All,
    /// Tensors of rank 2 and up: dense and convolution weights and embeddings, not biases or
    /// normalisation scales and shifts (vectors), as the common transformer recipes decay.
    WeightsOnly,
}

impl Decay {
    /// Whether `var` is decayed.
    pub fn applies_to(self, var: &Var) -> bool {
        match self {
            Decay::All => true,
            Decay::WeightsOnly => var.rank() >= 2,
        }
    }

    /// The weight decay `var` gets when the optimizer's is `weight_decay`.
    pub fn weight_decay(self, var: &Var, weight_decay: f64) -> f64 {
        if self.applies_to(var) {
            weight_decay
        } else {
            0.0
        }
    }
}
