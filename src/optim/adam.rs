//! AdamW with its state in the open, so a checkpoint can hold the moments and the step count.
//!
//! The update is candle-nn's `AdamW`, operation for operation (decoupled weight decay, bias
//! corrections 1/(1-β^t)), so a trial gives the numbers it gave when candle-nn's optimizer ran
//! it; a test holds the two to the bit. Two options come on top: the parameters weight decay
//! applies to ([`Decay`]), and clipping the whole gradient's norm before the moments see it
//! ([`super::grad_clip`]).

use candle_core::backprop::GradStore;
use candle_core::{Device, Result, Tensor, Var};
use std::collections::HashMap;

pub use candle_nn::ParamsAdamW;

use super::Decay;

struct Moments {
    name: String,
    var: Var,
    first: Var,
    second: Var,
}

/// AdamW over named parameters.
pub struct AdamW {
    vars: Vec<Moments>,
    /// The settings; `lr` may be changed between steps (schedules).
    pub params: ParamsAdamW,
    /// The parameters `params.weight_decay` applies to.
    pub decay: Decay,
    /// Rescale the whole gradient to this norm at most before each step.
    pub grad_clip: Option<f64>,
    step: u64,
}

impl AdamW {
    /// AdamW over `vars` with zero moments.
    pub fn new(vars: Vec<(String, Var)>, params: ParamsAdamW) -> Result<Self> {
        let vars = vars
            .into_iter()
            .filter(|(_, v)| v.dtype().is_float())
            .map(|(name, var)| {
                let zeros = || Var::zeros(var.shape(), var.dtype(), var.device());
                Ok(Moments {
                    first: zeros()?,
                    second: zeros()?,
                    name,
                    var,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AdamW {
            vars,
            params,
            decay: Decay::All,
            grad_clip: None,
            step: 0,
        })
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// One update from `grads`; parameters without a gradient are left as they are. Returns
    /// the whole gradient's norm (before clipping, where `grad_clip` is set).
    pub fn step(&mut self, grads: &GradStore) -> Result<f64> {
        let vars = || self.vars.iter().map(|m| &m.var);
        let clipped = super::grad_clip::clip_if(grads, vars(), self.grad_clip)?;
        let norm = match &clipped {
            Some(c) => c.norm,
            None => super::grad_clip::grad_norm(grads, vars())?,
        };
        let grads = super::grad_clip::Clipped::or(&clipped, grads);
        self.step += 1;
        let p = &self.params;
        let (beta1, beta2) = (p.beta1, p.beta2);
        let t = self.step as i32;
        let scale_m = 1f64 / (1f64 - beta1.powi(t));
        let scale_v = 1f64 / (1f64 - beta2.powi(t));
        for m in &self.vars {
            let Some(g) = grads.get(&m.var) else { continue };
            let next_m = ((m.first.as_tensor() * beta1)? + (g * (1.0 - beta1))?)?;
            let next_v = ((m.second.as_tensor() * beta2)? + (g.sqr()? * (1.0 - beta2))?)?;
            let m_hat = (&next_m * scale_m)?;
            let v_hat = (&next_v * scale_v)?;
            let weight_decay = self.decay.weight_decay(&m.var, p.weight_decay);
            let decayed = (m.var.as_tensor() * (1f64 - p.lr * weight_decay))?;
            let adjusted = (m_hat / (v_hat.sqrt()? + p.eps)?)?;
            let next = (decayed - (adjusted * p.lr)?)?;
            m.first.set(&next_m)?;
            m.second.set(&next_v)?;
            m.var.set(&next)?;
        }
        Ok(norm)
    }

    /// The moments as `adam_m/<name>` and `adam_v/<name>`, on the host.
    pub fn export_state(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::with_capacity(2 * self.vars.len());
        for m in &self.vars {
            out.push((
                format!("adam_m/{}", m.name),
                m.first.as_tensor().to_device(&Device::Cpu)?,
            ));
            out.push((
                format!("adam_v/{}", m.name),
                m.second.as_tensor().to_device(&Device::Cpu)?,
            ));
        }
        Ok(out)
    }

    /// Continues from exported moments after `step` steps. Every parameter's moments must be
    /// there: a missing one would silently restart that parameter's averages.
    pub fn import_state(&mut self, tensors: &HashMap<String, Tensor>, step: u64) -> Result<()> {
        for m in &self.vars {
            for (prefix, var) in [("adam_m", &m.first), ("adam_v", &m.second)] {
                let key = format!("{prefix}/{}", m.name);
                let t = tensors.get(&key).ok_or_else(|| {
                    candle_core::Error::Msg(format!("the checkpoint has no `{key}`"))
                })?;
                var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
            }
        }
        self.step = step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::Optimizer;

    fn problem() -> (Vec<(String, Var)>, Tensor) {
        let dev = Device::Cpu;
        let w = Tensor::rand(-1f32, 1.0, (5, 3), &dev).unwrap();
        let b = Tensor::rand(-1f32, 1.0, 3, &dev).unwrap();
        let x = Tensor::rand(-1f32, 1.0, (7, 5), &dev).unwrap();
        (
            vec![
                ("w".into(), Var::from_tensor(&w).unwrap()),
                ("b".into(), Var::from_tensor(&b).unwrap()),
            ],
            x,
        )
    }

    fn loss(vars: &[(String, Var)], x: &Tensor) -> Tensor {
        x.matmul(vars[0].1.as_tensor())
            .unwrap()
            .broadcast_add(vars[1].1.as_tensor())
            .unwrap()
            .tanh()
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
    }

    fn copy(vars: &[(String, Var)]) -> Vec<(String, Var)> {
        vars.iter()
            .map(|(n, v)| {
                (
                    n.clone(),
                    Var::from_tensor(&v.as_tensor().copy().unwrap()).unwrap(),
                )
            })
            .collect()
    }

    fn bits(vars: &[(String, Var)]) -> Vec<u32> {
        vars.iter()
            .flat_map(|(_, v)| {
                v.as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
                    .into_iter()
                    .map(f32::to_bits)
            })
            .collect()
    }

    const PARAMS: ParamsAdamW = ParamsAdamW {
        lr: 0.01,
        beta1: 0.9,
        beta2: 0.99,
        eps: 1e-8,
        weight_decay: 0.05,
    };

    /// The reference is candle-nn's own AdamW: the same bits after ten steps with a changing
    /// learning rate.
    #[test]
    fn matches_candle_nn_adamw_to_the_bit() {
        let (ours, x) = problem();
        let theirs = copy(&ours);
        let mut a = AdamW::new(ours.clone(), PARAMS).unwrap();
        let mut b =
            candle_nn::AdamW::new(theirs.iter().map(|(_, v)| v.clone()).collect(), PARAMS).unwrap();
        for k in 0..10 {
            let lr = 0.01 / (1.0 + k as f64);
            a.params.lr = lr;
            b.set_learning_rate(lr);
            a.step(&loss(&ours, &x).backward().unwrap()).unwrap();
            b.step(&loss(&theirs, &x).backward().unwrap()).unwrap();
            assert_eq!(bits(&ours), bits(&theirs), "step {k}");
        }
        assert_eq!(a.steps(), 10);
    }

    /// Weight decay on the matrix only and the gradient clipped to norm 1: PyTorch's AdamW
    /// with two parameter groups after `clip_grad_norm_` (figures in grad_clip::reference).
    #[test]
    fn weights_only_decay_and_clipping_match_pytorch() {
        use crate::optim::grad_clip::reference::{ADAMW, assert_matches, loss, problem};
        let (w, b, x) = problem();
        let params = ParamsAdamW {
            lr: 0.05,
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
            weight_decay: 0.1,
        };
        let mut a = AdamW::new(
            vec![("w".into(), w.clone()), ("b".into(), b.clone())],
            params,
        )
        .unwrap();
        a.decay = Decay::WeightsOnly;
        a.grad_clip = Some(1.0);
        let norms: Vec<f64> = (0..3)
            .map(|_| a.step(&loss(&w, &b, &x).backward().unwrap()).unwrap())
            .collect();
        assert_matches(&norms, &w, &b, &ADAMW);
    }

    /// Without `grad_clip` the step still reports the gradient's norm: PyTorch's first-step
    /// norm on the reference problem (the gradient before any update does not depend on
    /// clipping), where it was once written as 0.
    #[test]
    fn the_gradient_norm_is_reported_without_clipping() {
        use crate::optim::grad_clip::reference::{ADAMW, loss, problem};
        let (w, b, x) = problem();
        let mut a = AdamW::new(
            vec![("w".into(), w.clone()), ("b".into(), b.clone())],
            ParamsAdamW::default(),
        )
        .unwrap();
        let norm = a.step(&loss(&w, &b, &x).backward().unwrap()).unwrap();
        assert!(
            (norm - ADAMW.norms[0]).abs() < 1e-4 * ADAMW.norms[0],
            "{norm}"
        );
        let second = a.step(&loss(&w, &b, &x).backward().unwrap()).unwrap();
        assert!(second > 0.0 && second != norm, "{second}");
    }

    /// Five steps, export, a fresh optimizer imports at step 5, five more: the bits of ten
    /// steps in one go. Without the step count the bias corrections would differ.
    #[test]
    fn exported_state_continues_exactly() {
        let (whole, x) = problem();
        let cut = copy(&whole);
        let mut a = AdamW::new(whole.clone(), PARAMS).unwrap();
        for _ in 0..10 {
            a.step(&loss(&whole, &x).backward().unwrap()).unwrap();
        }
        let mut b = AdamW::new(cut.clone(), PARAMS).unwrap();
        for _ in 0..5 {
            b.step(&loss(&cut, &x).backward().unwrap()).unwrap();
        }
        let state: HashMap<String, Tensor> = b.export_state().unwrap().into_iter().collect();
        assert_eq!(state.len(), 4);
        let mut c = AdamW::new(cut.clone(), PARAMS).unwrap();
        c.import_state(&state, b.steps()).unwrap();
        for _ in 0..5 {
            c.step(&loss(&cut, &x).backward().unwrap()).unwrap();
        }
        assert_eq!(bits(&whole), bits(&cut));
        let mut d = AdamW::new(cut.clone(), PARAMS).unwrap();
        let mut partial = state.clone();
        partial.remove("adam_v/b");
        let err = d.import_state(&partial, 5).unwrap_err().to_string();
        assert!(err.contains("adam_v/b"), "{err}");
    }
}
