//! Clipping the whole gradient's norm before an update, as PyTorch's `clip_grad_norm_`:
//! every parameter's gradient is multiplied by `min(1, max / (‖g‖ + 1e-6))`, ‖g‖ the norm of
//! all of them together. The optimizers apply it before anything else reads the gradient
//! (weight decay, momentum, Adam's moments, the noise's `gradient_norm` scale).

use super::sharpness::{dots, scaled};
use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};

/// What clipping a gradient did.
pub struct Clipped {
    /// The rescaled gradients of the parameters, or `None` where they are left as they are
    /// (the norm within the bound, or not finite: the update then reports the bad gradient).
    pub grads: Option<GradStore>,
    /// ‖g‖ before clipping.
    pub norm: f64,
}

/// The factor a gradient of norm `norm` is multiplied by under the bound `max`.
pub fn factor(norm: f64, max: f64) -> f64 {
    (max / (norm + 1e-6)).min(1.0)
}

impl Clipped {
    /// The gradients an update reads: the rescaled ones where clipping changed them, else
    /// `grads`.
    pub fn or<'a>(clipped: &'a Option<Clipped>, grads: &'a GradStore) -> &'a GradStore {
        clipped
            .as_ref()
            .and_then(|c| c.grads.as_ref())
            .unwrap_or(grads)
    }
}

/// [`clip_grad_norm`] where a bound is set (`None`: no clipping).
pub fn clip_if<'a>(
    grads: &GradStore,
    vars: impl IntoIterator<Item = &'a Var>,
    max: Option<f64>,
) -> Result<Option<Clipped>> {
    max.map(|m| clip_grad_norm(grads, vars, m)).transpose()
}

/// ‖g‖ of the gradients of `vars` in `grads` together (the norm [`clip_grad_norm`] bounds).
pub fn grad_norm<'a>(grads: &GradStore, vars: impl IntoIterator<Item = &'a Var>) -> Result<f64> {
    let tensors: Vec<Tensor> = vars
        .into_iter()
        .filter_map(|v| grads.get(v.as_tensor()).cloned())
        .collect();
    norm(&tensors)
}

/// ‖g‖ of `tensors` together.
fn norm(tensors: &[Tensor]) -> Result<f64> {
    Ok(dots(&[(tensors, tensors)])?[0].sqrt())
}

/// The gradients of `vars` in `grads`, rescaled together to norm at most `max`.
pub fn clip_grad_norm<'a>(
    grads: &GradStore,
    vars: impl IntoIterator<Item = &'a Var>,
    max: f64,
) -> Result<Clipped> {
    let (vars, tensors): (Vec<&Var>, Vec<Tensor>) = vars
        .into_iter()
        .filter_map(|v| grads.get(v.as_tensor()).map(|g| (v, g.clone())))
        .unzip();
    let norm = norm(&tensors)?;
    let k = factor(norm, max);
    if !(norm.is_finite() && k < 1.0) {
        return Ok(Clipped { grads: None, norm });
    }
    let mut out = GradStore::default();
    for (var, g) in vars.into_iter().zip(scaled(&tensors, k, false)?) {
        out.insert(var.as_tensor(), g);
    }
    Ok(Clipped {
        grads: Some(out),
        norm,
    })
}

/// A small problem with reference figures from PyTorch, for the optimizers' tests of
/// clipping and of weight decay on weights only: w (2×3) and b (3), loss
/// `4·Σ tanh(x·w + b)²` on a fixed x (4×2). The figures come from this script, run with
/// PyTorch 2.15.0 (float32):
///
/// ```text
/// x = torch.tensor([[0.5, -1.0], [1.5, 0.25], [-0.75, 2.0], [1.0, 1.0]])
/// w = torch.tensor([[0.3, -0.2, 0.1], [0.4, 0.25, -0.5]], requires_grad=True)
/// b = torch.tensor([0.05, -0.1, 0.2], requires_grad=True)
/// groups = [{'params': [w], 'weight_decay': 0.1}, {'params': [b], 'weight_decay': 0.0}]
/// opt = torch.optim.AdamW(groups, lr=0.05, betas=(0.9, 0.99), eps=1e-8)
/// #   or torch.optim.SGD(groups, lr=0.05, momentum=0.9)
/// for _ in range(3):
///     opt.zero_grad()
///     (torch.tanh(x @ w + b) ** 2).sum().mul(4).backward()
///     norms.append(torch.nn.utils.clip_grad_norm_([w, b], 1.0).item())
///     opt.step()
/// ```
#[cfg(test)]
pub(crate) mod reference {
    use candle_core::{Device, Tensor, Var};

    /// (w, b) at their starting values, and x.
    pub fn problem() -> (Var, Var, Tensor) {
        let dev = Device::Cpu;
        let w = Tensor::new(&[[0.3f32, -0.2, 0.1], [0.4, 0.25, -0.5]], &dev).unwrap();
        let b = Tensor::new(&[0.05f32, -0.1, 0.2], &dev).unwrap();
        let x = Tensor::new(
            &[[0.5f32, -1.0], [1.5, 0.25], [-0.75, 2.0], [1.0, 1.0]],
            &dev,
        );
        (
            Var::from_tensor(&w).unwrap(),
            Var::from_tensor(&b).unwrap(),
            x.unwrap(),
        )
    }

    pub fn loss(w: &Var, b: &Var, x: &Tensor) -> Tensor {
        let z = x
            .matmul(w.as_tensor())
            .unwrap()
            .broadcast_add(b.as_tensor());
        (z.unwrap().tanh().unwrap().sqr().unwrap().sum_all().unwrap() * 4.0).unwrap()
    }

    /// The gradient norms before clipping at the three steps, then w and b after them.
    pub struct Figures {
        pub norms: [f64; 3],
        pub w: [f64; 6],
        pub b: [f64; 3],
    }

    pub const ADAMW: Figures = Figures {
        norms: [21.263479232788086, 20.26725959777832, 18.185184478759766],
        w: [
            0.14672689139842987,
            -0.050461214035749435,
            -0.04890159144997597,
            0.24467866122722626,
            0.0970395877957344,
            -0.3430979251861572,
        ],
        b: [
            -0.09968823194503784,
            0.026419326663017273,
            0.20832091569900513,
        ],
    };

    pub const SGD: Figures = Figures {
        norms: [21.263479232788086, 21.048053741455078, 20.014415740966797],
        w: [
            0.2307831346988678,
            -0.09894739091396332,
            0.03454745188355446,
            0.23881033062934875,
            0.14223237335681915,
            -0.35384121537208557,
        ],
        b: [
            -0.05098075792193413,
            -0.06903623044490814,
            0.19584107398986816,
        ],
    };

    /// Asserts the norms and final values, to float32 round-off over three steps.
    pub fn assert_matches(norms: &[f64], w: &Var, b: &Var, want: &Figures) {
        for (got, want) in norms.iter().zip(want.norms) {
            assert!(
                (got - want).abs() < 1e-5 * want,
                "norms {norms:?} vs {:?}",
                want
            );
        }
        let values = |v: &Var| {
            v.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        for (got, want) in values(w)
            .iter()
            .zip(want.w)
            .chain(values(b).iter().zip(want.b))
        {
            assert!(
                (*got as f64 - want).abs() < 2e-6,
                "{got} vs PyTorch's {want}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn var(values: &[f32]) -> Var {
        Var::from_tensor(&Tensor::new(values, &Device::Cpu).unwrap()).unwrap()
    }

    fn values(grads: &GradStore, v: &Var) -> Vec<f32> {
        grads.get(v.as_tensor()).unwrap().to_vec1().unwrap()
    }

    /// Gradients (3, 4) and (12): ‖g‖ = 13 by hand. Under max = 6.5 each is multiplied by
    /// 6.5 / (13 + 1e-6); under 13 + 1e-5 nothing changes. PyTorch 2.15.0, float32, the same
    /// tensors (`a = [1.5, 2.0]`, `b = [6.0]`, loss `(a**2).sum() + (b**2).sum()`), then
    /// `torch.nn.utils.clip_grad_norm_([a, b], 6.5)`: norm 13.0, gradients
    /// [1.4999998807907104, 1.9999998807907104] and [5.999999523162842].
    #[test]
    fn rescales_the_whole_gradient_as_pytorch_does() {
        let (a, b) = (var(&[1.5, 2.0]), var(&[6.0]));
        let loss = (a.as_tensor().sqr().unwrap().sum_all().unwrap()
            + b.as_tensor().sqr().unwrap().sum_all().unwrap())
        .unwrap();
        // d/dθ of θ² is 2θ: gradients (3, 4) and (12)
        let grads = loss.backward().unwrap();
        let clipped = clip_grad_norm(&grads, [&a, &b], 6.5).unwrap();
        assert!((clipped.norm - 13.0).abs() < 1e-6, "{}", clipped.norm);
        let k = 6.5 / (13.0 + 1e-6);
        let out = clipped.grads.expect("clipped");
        let got: Vec<f32> = values(&out, &a)
            .into_iter()
            .chain(values(&out, &b))
            .collect();
        let want = [3.0 * k, 4.0 * k, 12.0 * k];
        for (g, w) in got.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
        let torch = [
            1.4999998807907104_f64,
            1.9999998807907104,
            5.999999523162842,
        ];
        for (g, t) in got.iter().zip(torch) {
            assert!(
                (*g as f64 - t).abs() <= 2.0 * f32::EPSILON as f64 * t,
                "{got:?} vs torch {torch:?}"
            );
        }
        let within = clip_grad_norm(&grads, [&a, &b], 13.0 + 1e-5).unwrap();
        assert!(within.grads.is_none());
        assert!((within.norm - 13.0).abs() < 1e-6);
    }

    #[test]
    fn a_gradient_that_is_not_finite_is_left_for_the_update_to_report() {
        let a = var(&[1.0, 2.0]);
        let loss = (a.as_tensor().sqr().unwrap().sum_all().unwrap() * f64::INFINITY).unwrap();
        let grads = loss.backward().unwrap();
        let clipped = clip_grad_norm(&grads, [&a], 1.0).unwrap();
        assert!(!clipped.norm.is_finite());
        assert!(clipped.grads.is_none());
    }
}
