//! Sharpness: Hessian-vector products by double backward, power iteration for λ_max, and
//! Hutchinson's trace estimate.
//!
//! candle keeps the graph of gradients only when `CANDLE_GRAD_DO_NOT_DETACH=1` is set before
//! the first backward pass of a thread; [`enable_second_order`] sets it. Without it the
//! second-order terms are silently dropped, so [`hvp`] checks and refuses.

use candle_core::{Result, Tensor, Var};

/// Turns on candle's gradient graphs (needed for HVPs). Call before any backward pass,
/// ideally first thing in `main`, while the process has a single thread.
pub fn enable_second_order() {
    if std::env::var("CANDLE_GRAD_DO_NOT_DETACH").as_deref() != Ok("1") {
        // SAFETY: called at start-up before other threads read or write the environment.
        unsafe { std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1") };
    }
}

/// Gradients of `loss` with respect to `vars`, with their graphs kept for a second backward.
pub fn grads_with_graph(loss: &Tensor, vars: &[Var]) -> Result<Vec<Tensor>> {
    let store = loss.backward()?;
    vars.iter()
        .map(|v| match store.get(v.as_tensor()) {
            Some(g) => Ok(g.clone()),
            None => v.as_tensor().zeros_like(),
        })
        .collect()
}

/// H·v from gradients that keep their graph: the gradient of Σ⟨g_i, v_i⟩.
pub fn hvp_from_grads(grads: &[Tensor], vars: &[Var], v: &[Tensor]) -> Result<Vec<Tensor>> {
    let mut dot: Option<Tensor> = None;
    for (g, vi) in grads.iter().zip(v) {
        let term = (g * vi.detach())?.sum_all()?;
        dot = Some(match dot {
            None => term,
            Some(d) => (d + term)?,
        });
    }
    let dot = dot.ok_or_else(|| candle_core::Error::Msg("no parameters".into()))?;
    let store = dot.backward()?;
    let out: Vec<Tensor> = vars
        .iter()
        .map(|var| match store.get(var.as_tensor()) {
            Some(h) => Ok(h.detach()),
            None => var.as_tensor().zeros_like(),
        })
        .collect::<Result<_>>()?;
    Ok(out)
}

/// Hessian-vector products of one loss at fixed parameters, the directions and results in the
/// order of the parameters it was made for.
pub trait Hessian {
    fn hvp(&mut self, v: &[Tensor]) -> Result<Vec<Tensor>>;
}

/// H·v by double backward through candle's graph (any model, any device).
pub struct GraphHessian {
    grads: Vec<Tensor>,
    vars: Vec<Var>,
}

impl GraphHessian {
    /// Keeps the gradient graph of `loss` with respect to `vars`.
    pub fn new(loss: &Tensor, vars: &[Var]) -> Result<Self> {
        if std::env::var("CANDLE_GRAD_DO_NOT_DETACH").as_deref() != Ok("1") {
            candle_core::bail!(
                "Hessian-vector products need CANDLE_GRAD_DO_NOT_DETACH=1 (call optim::enable_second_order first)"
            );
        }
        Ok(GraphHessian {
            grads: grads_with_graph(loss, vars)?,
            vars: vars.to_vec(),
        })
    }
}

impl Hessian for GraphHessian {
    fn hvp(&mut self, v: &[Tensor]) -> Result<Vec<Tensor>> {
        hvp_from_grads(&self.grads, &self.vars, v)
    }
}

/// H·v of `loss` at the current parameters.
pub fn hvp(loss: &Tensor, vars: &[Var], v: &[Tensor]) -> Result<Vec<Tensor>> {
    GraphHessian::new(loss, vars)?.hvp(v)
}

fn dot(a: &[Tensor], b: &[Tensor]) -> Result<f64> {
    let mut s = 0.0;
    for (x, y) in a.iter().zip(b) {
        s += match cpu_dot(x, y) {
            Some(d) => d,
            None => (x * y)?
                .sum_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?,
        };
    }
    Ok(s)
}

/// (Σhv·v, Σhv·hv) over parameter lists: on the CPU in one pass over each pair.
fn rayleigh(hv: &[Tensor], v: &[Tensor]) -> Result<(f64, f64)> {
    let mut sums = (0.0, 0.0);
    for (x, y) in hv.iter().zip(v) {
        let (a, b) = match cpu_dot_and_sq(x, y) {
            Some(d) => d,
            None => {
                let d = dots(&[
                    (std::slice::from_ref(x), std::slice::from_ref(y)),
                    (std::slice::from_ref(x), std::slice::from_ref(x)),
                ])?;
                (d[0], d[1])
            }
        };
        sums = (sums.0 + a, sums.1 + b);
    }
    Ok(sums)
}

/// The elements of two contiguous CPU tensors of one float type and size.
enum Pair<'a> {
    F32(&'a [f32], &'a [f32]),
    F64(&'a [f64], &'a [f64]),
}

/// `f` over the elements of two contiguous CPU tensors of one float type (f32 or f64) and
/// size; `None` for anything else. The same tensor twice is locked once.
fn with_pair<R>(x: &Tensor, y: &Tensor, f: impl FnOnce(Pair) -> R) -> Option<R> {
    use candle_core::{CpuStorage as C, Storage as S};
    let (sx, lx) = x.storage_and_layout();
    let (a0, a1) = lx.contiguous_offsets()?;
    let pair = |sy: &S, (b0, b1): (usize, usize)| match (&*sx, sy) {
        (S::Cpu(C::F32(u)), S::Cpu(C::F32(v))) if a1 - a0 == b1 - b0 => {
            Some(f(Pair::F32(&u[a0..a1], &v[b0..b1])))
        }
        (S::Cpu(C::F64(u)), S::Cpu(C::F64(v))) if a1 - a0 == b1 - b0 => {
            Some(f(Pair::F64(&u[a0..a1], &v[b0..b1])))
        }
        _ => None,
    };
    if x.id() == y.id() {
        return pair(&sx, (a0, a1));
    }
    let (sy, ly) = y.storage_and_layout();
    pair(&sy, ly.contiguous_offsets()?)
}

/// Σx·y of two CPU tensors in one pass in f64, with no product tensor.
fn cpu_dot(x: &Tensor, y: &Tensor) -> Option<f64> {
    use super::update::dot;
    with_pair(x, y, |p| match p {
        Pair::F32(u, v) => dot(u, v),
        Pair::F64(u, v) => dot(u, v),
    })
}

/// (Σx·y, Σx·x) of two CPU tensors in one pass.
fn cpu_dot_and_sq(x: &Tensor, y: &Tensor) -> Option<(f64, f64)> {
    use super::update::dot_and_sq;
    with_pair(x, y, |p| match p {
        Pair::F32(u, v) => dot_and_sq(u, v),
        Pair::F64(u, v) => dot_and_sq(u, v),
    })
}

/// Σa·b over parameter lists as an f64 scalar tensor, left where the tensors are.
fn device_dot(a: &[Tensor], b: &[Tensor]) -> Result<Tensor> {
    let parts = a
        .iter()
        .zip(b)
        .map(|(x, y)| {
            (x * y)?
                .sum_all()?
                .to_dtype(candle_core::DType::F64)?
                .reshape(1)
        })
        .collect::<Result<Vec<_>>>()?;
    Tensor::cat(&parts, 0)?.sum_all()
}

/// Σa·b for each pair of parameter lists: on the CPU one number at a time; elsewhere summed on
/// the device and read in one transfer (each read waits for the device).
pub(crate) fn dots(pairs: &[(&[Tensor], &[Tensor])]) -> Result<Vec<f64>> {
    let on_cpu = pairs
        .iter()
        .all(|(a, _)| a.iter().all(|t| t.device().is_cpu()));
    if on_cpu {
        return pairs.iter().map(|(a, b)| dot(a, b)).collect();
    }
    let sums = pairs
        .iter()
        .map(|(a, b)| device_dot(a, b)?.reshape(1))
        .collect::<Result<Vec<_>>>()?;
    Tensor::cat(&sums, 0)?.to_vec1::<f64>()
}

/// k·x: on the CPU in parallel (candle's `affine` runs on one thread), in place when
/// `in_place` (for tensors nothing else holds: a product just made, a fresh draw; one pass
/// over memory where a new tensor reads one and writes another), else in a copy; elsewhere
/// candle's `affine`.
pub(crate) fn scaled(a: &[Tensor], k: f64, in_place: bool) -> Result<Vec<Tensor>> {
    a.iter()
        .map(|x| {
            if !(x.device().is_cpu() && x.is_contiguous()) {
                return x.affine(k, 0.0);
            }
            let x = if in_place { x.clone() } else { x.copy()? };
            x.inplace_op1(&ScaleInPlace(k))?;
            Ok(x)
        })
        .collect()
}

/// Multiplies a contiguous f32 or f64 CPU tensor by a constant, in place.
struct ScaleInPlace(f64);

impl candle_core::InplaceOp1 for ScaleInPlace {
    fn name(&self) -> &'static str {
        "ahtsgd-scale"
    }

    fn cpu_fwd(&self, s: &mut candle_core::CpuStorage, l: &candle_core::Layout) -> Result<()> {
        use candle_core::CpuStorage as C;
        let Some((a, b)) = l.contiguous_offsets() else {
            candle_core::bail!("scale: a contiguous tensor");
        };
        match s {
            C::F32(v) => scale_slice(&mut v[a..b], self.0 as f32),
            C::F64(v) => scale_slice(&mut v[a..b], self.0),
            _ => candle_core::bail!("scale: f32 or f64"),
        }
        Ok(())
    }
}

/// v ← k·v in parallel chunks (candle's `affine` runs on one thread).
fn scale_slice<T: num_traits::Float + Send + Sync>(v: &mut [T], k: T) {
    use rayon::prelude::*;
    v.par_chunks_mut(1 << 14)
        .for_each(|c| c.iter_mut().for_each(|e| *e = *e * k));
}

/// Random vector with entries ±1 (Rademacher) or normal, shaped like `vars`: draw `draw` of
/// the run's probe streams, one per variable, from the α = 2 sampler (N(0, 2); the scale does
/// not matter to a direction, and the signs are fair coins). Filled in parallel, a few
/// nanoseconds an entry, on the variables' device (a GPU draws the CPU's numbers itself).
fn random_like(vars: &[Var], seed: u64, draw: u64, rademacher: bool) -> Result<Vec<Tensor>> {
    use super::stable;
    vars.iter()
        .enumerate()
        .map(|(i, v)| {
            let t = v.as_tensor();
            let key = stable::stream_key(seed, &format!("sharpness-probe/{i}"));
            // signs: −1 where the draw is negative, else 1 (on the host in place, elsewhere
            // by tensor ops on the device's draws)
            let x = if rademacher && t.device().is_cpu() {
                let mut data = vec![0f32; t.elem_count()];
                stable::fill_f32(2.0, key, draw, &mut data);
                data.iter_mut()
                    .for_each(|x| *x = if *x < 0.0 { -1.0 } else { 1.0 });
                Tensor::from_vec(data, t.shape(), t.device())?
            } else {
                let x = stable::draw_tensor(2.0, key, draw, t.shape(), t.device())?;
                if rademacher {
                    x.ge(0f32)?
                        .to_dtype(candle_core::DType::F32)?
                        .affine(2.0, -1.0)?
                } else {
                    x
                }
            };
            x.to_dtype(t.dtype())
        })
        .collect()
}

/// Result of a power iteration.
#[derive(Clone, Debug)]
pub struct PowerIteration {
    /// The estimate of the top eigenvalue (largest in magnitude).
    pub lambda: f64,
    pub iterations: usize,
    /// The final unit vector (reuse it to warm-start the next call).
    pub vector: Vec<Tensor>,
}

/// Top Hessian eigenvalue by power iteration: v ← Hv/‖Hv‖ until the Rayleigh quotient changes
/// by less than `tol` (relative) or `max_iters` is reached. `warm` restarts from a previous vector.
pub fn power_iteration(
    loss: &Tensor,
    vars: &[Var],
    max_iters: usize,
    tol: f64,
    warm: Option<Vec<Tensor>>,
    seed: u64,
) -> Result<PowerIteration> {
    let mut h = GraphHessian::new(loss, vars)?;
    power_iteration_with(&mut h, vars, max_iters, tol, warm, seed)
}

/// [`power_iteration`] with any source of Hessian-vector products; `vars` gives the shapes.
pub fn power_iteration_with(
    h: &mut dyn Hessian,
    vars: &[Var],
    max_iters: usize,
    tol: f64,
    warm: Option<Vec<Tensor>>,
    seed: u64,
) -> Result<PowerIteration> {
    let (mut v, fresh) = match warm {
        Some(w) if w.len() == vars.len() => (w, false),
        _ => (random_like(vars, seed, 0, false)?, true),
    };
    let norm = dots(&[(&v, &v)])?[0].sqrt().max(1e-30);
    // a warm start may be the caller's own vector, not to be changed
    v = scaled(&v, 1.0 / norm, fresh)?;
    if tol <= 0.0 && !vars.iter().all(|x| x.device().is_cpu()) {
        return fixed_count_on_device(h, v, max_iters.max(1));
    }
    let mut lambda = 0.0;
    let mut iterations = 0;
    for i in 0..max_iters.max(1) {
        let hv = h.hvp(&v)?;
        let (new_lambda, sq) = rayleigh(&hv, &v)?;
        let norm = sq.sqrt();
        iterations = i + 1;
        if !new_lambda.is_finite() || !norm.is_finite() {
            candle_core::bail!("the Hessian-vector product is not finite");
        }
        if norm < 1e-30 {
            lambda = 0.0;
            break;
        }
        v = scaled(&hv, 1.0 / norm, true)?;
        let converged = i > 0 && (new_lambda - lambda).abs() <= tol * new_lambda.abs().max(1e-12);
        lambda = new_lambda;
        if converged {
            break;
        }
    }
    Ok(PowerIteration {
        lambda,
        iterations,
        vector: v,
    })
}

/// Power iteration for a fixed count (no tolerance) with the vectors on a device: the norms
/// and the Rayleigh quotient stay there, and are read once at the end, so the device never
/// waits for the host between products. A zero product leaves a zero vector (λ = 0), as the
/// CPU's loop stops with λ = 0.
fn fixed_count_on_device(
    h: &mut dyn Hessian,
    mut v: Vec<Tensor>,
    iters: usize,
) -> Result<PowerIteration> {
    let mut last = None;
    for _ in 0..iters {
        let hv = h.hvp(&v)?;
        let lambda = device_dot(&hv, &v)?;
        let norm = device_dot(&hv, &hv)?.sqrt()?;
        // 1/‖Hv‖ once, in the parameters' type
        let dt = hv.first().map_or(candle_core::DType::F64, Tensor::dtype);
        let inv = norm.maximum(1e-30)?.recip()?.to_dtype(dt)?;
        v = hv
            .iter()
            .map(|x| match x.dtype() {
                d if d == dt => x.broadcast_mul(&inv),
                d => x.broadcast_mul(&inv.to_dtype(d)?),
            })
            .collect::<Result<_>>()?;
        last = Some(Tensor::stack(&[lambda, norm], 0)?);
    }
    let read = last.expect("one iteration at least").to_vec1::<f64>()?;
    let (lambda, norm) = (read[0], read[1]);
    if !lambda.is_finite() || !norm.is_finite() {
        candle_core::bail!("the Hessian-vector product is not finite");
    }
    Ok(PowerIteration {
        lambda: if norm < 1e-30 { 0.0 } else { lambda },
        iterations: iters,
        vector: v,
    })
}

/// Hutchinson's estimate of tr(H) divided by the parameter count (a mean eigenvalue).
pub fn hutchinson(loss: &Tensor, vars: &[Var], samples: usize, seed: u64) -> Result<f64> {
    hutchinson_with(&mut GraphHessian::new(loss, vars)?, vars, samples, seed)
}

/// [`hutchinson`] with any source of Hessian-vector products; `vars` gives the shapes.
pub fn hutchinson_with(
    h: &mut dyn Hessian,
    vars: &[Var],
    samples: usize,
    seed: u64,
) -> Result<f64> {
    let count: usize = vars.iter().map(|v| v.as_tensor().elem_count()).sum();
    let mut total = 0.0;
    for draw in 0..samples.max(1) {
        let z = random_like(vars, seed, draw as u64, true)?;
        let hz = h.hvp(&z)?;
        total += dots(&[(&hz, &z)])?[0];
    }
    Ok(total / samples.max(1) as f64 / count.max(1) as f64)
}

/// The largest absolute entry of a tensor, in f64 (for numerical checks).
pub fn max_abs(t: &Tensor) -> Result<f64> {
    t.abs()?
        .flatten_all()?
        .max(0)?
        .to_dtype(candle_core::DType::F64)?
        .to_scalar::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// f(x) = ½ xᵀAx with A = diag(1, 3, 7) rotated: eigenvalues known exactly.
    #[allow(clippy::needless_range_loop)]
    fn quadratic() -> (Var, Tensor) {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::new(&[0.3f64, -0.2, 0.5], &dev).unwrap()).unwrap();
        // A = Q diag(1,3,7) Qᵀ for a fixed orthogonal Q (a Householder reflection)
        let u = [1.0f64, 2.0, 2.0];
        let nu: f64 = u.iter().map(|x| x * x).sum();
        let d = [1.0, 3.0, 7.0];
        let mut a = [[0.0f64; 3]; 3];
        let q = |i: usize, j: usize| (if i == j { 1.0 } else { 0.0 }) - 2.0 * u[i] * u[j] / nu;
        for i in 0..3 {
            for j in 0..3 {
                a[i][j] = (0..3).map(|k| q(i, k) * d[k] * q(j, k)).sum();
            }
        }
        let a = Tensor::new(&a, &dev).unwrap();
        (x, a)
    }

    fn quad_loss(x: &Var, a: &Tensor) -> Tensor {
        let xc = x.as_tensor().unsqueeze(1).unwrap();
        (xc.t()
            .unwrap()
            .matmul(&a.matmul(&xc).unwrap())
            .unwrap()
            .sum_all()
            .unwrap()
            * 0.5)
            .unwrap()
    }

    #[test]
    fn hvp_of_a_quadratic_is_a_times_v() {
        enable_second_order();
        let (x, a) = quadratic();
        let v = Tensor::new(&[1.0f64, -1.0, 0.5], &Device::Cpu).unwrap();
        let hv = hvp(
            &quad_loss(&x, &a),
            std::slice::from_ref(&x),
            std::slice::from_ref(&v),
        )
        .unwrap();
        let want = a
            .matmul(&v.unsqueeze(1).unwrap())
            .unwrap()
            .squeeze(1)
            .unwrap();
        let err = (hv[0].clone() - want)
            .unwrap()
            .abs()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(err < 1e-12, "{err}");
    }

    #[test]
    fn power_iteration_finds_the_top_eigenvalue() {
        enable_second_order();
        let (x, a) = quadratic();
        let r = power_iteration(
            &quad_loss(&x, &a),
            std::slice::from_ref(&x),
            200,
            1e-10,
            None,
            1,
        )
        .unwrap();
        assert!((r.lambda - 7.0).abs() < 1e-6, "{}", r.lambda);
        // warm start converges at once, and leaves the caller's vector as it was (the products
        // are scaled in place; a warm start must not be)
        let warm: Vec<Tensor> = r.vector.iter().map(|t| (t * 3.0).unwrap()).collect();
        let before = warm[0].to_vec1::<f64>().unwrap();
        let again = power_iteration(
            &quad_loss(&x, &a),
            std::slice::from_ref(&x),
            200,
            1e-10,
            Some(warm.clone()),
            2,
        )
        .unwrap();
        assert!(again.iterations <= 3, "{}", again.iterations);
        assert_eq!(warm[0].to_vec1::<f64>().unwrap(), before);
    }

    /// The device form of a fixed-count power iteration (sums kept as tensors, read once) is
    /// the host loop's, whatever the device; here on the CPU. A zero Hessian gives λ = 0.
    #[test]
    fn fixed_count_iteration_keeps_the_host_loops_numbers() {
        enable_second_order();
        let (x, a) = quadratic();
        let vars = std::slice::from_ref(&x);
        let loss = quad_loss(&x, &a);
        let start = Tensor::new(&[0.2f64, 0.9, -0.4], &Device::Cpu).unwrap();
        let host = power_iteration_with(
            &mut GraphHessian::new(&loss, vars).unwrap(),
            vars,
            12,
            0.0,
            Some(vec![start.clone()]),
            0,
        )
        .unwrap();
        let norm = start.sqr().unwrap().sum_all().unwrap().sqrt().unwrap();
        let unit = start.broadcast_div(&norm).unwrap();
        let device =
            fixed_count_on_device(&mut GraphHessian::new(&loss, vars).unwrap(), vec![unit], 12)
                .unwrap();
        assert_eq!(device.iterations, 12);
        assert!(
            (device.lambda - host.lambda).abs() < 1e-12,
            "{} {}",
            device.lambda,
            host.lambda
        );
        assert!(device.lambda > 6.9 && device.lambda <= 7.0 + 1e-12);
        let zero = (a.zeros_like().unwrap(), x);
        let flat = fixed_count_on_device(
            &mut GraphHessian::new(&quad_loss(&zero.1, &zero.0), std::slice::from_ref(&zero.1))
                .unwrap(),
            vec![Tensor::new(&[1.0f64, 0.0, 0.0], &Device::Cpu).unwrap()],
            3,
        )
        .unwrap();
        assert_eq!(flat.lambda, 0.0);
    }

    #[test]
    fn hutchinson_estimates_the_mean_eigenvalue() {
        enable_second_order();
        let (x, a) = quadratic();
        // for a 3x3 matrix, Rademacher probes average to tr(A)/3 = 11/3
        let m = hutchinson(&quad_loss(&x, &a), std::slice::from_ref(&x), 4000, 3).unwrap();
        assert!((m - 11.0 / 3.0).abs() < 0.15, "{m}");
    }

    #[test]
    fn mlp_hvp_matches_finite_differences_of_gradients() {
        enable_second_order();
        let dev = Device::Cpu;
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mk = |r: &mut ChaCha8Rng, shape: &[usize]| {
            let n: usize = shape.iter().product();
            let d: Vec<f64> = (0..n).map(|_| r.random::<f64>() - 0.5).collect();
            Var::from_tensor(&Tensor::from_vec(d, shape, &dev).unwrap()).unwrap()
        };
        let w1 = mk(&mut rng, &[5, 4]);
        let w2 = mk(&mut rng, &[3, 5]);
        let x = mk(&mut rng, &[6, 4]).as_tensor().clone();
        let y = Tensor::new(&[0u32, 1, 2, 0, 1, 2], &dev).unwrap();
        let vars = vec![w1.clone(), w2.clone()];
        let loss_at = |w1: &Tensor, w2: &Tensor| {
            let h = x.matmul(&w1.t().unwrap()).unwrap().tanh().unwrap();
            let logits = h.matmul(&w2.t().unwrap()).unwrap();
            candle_nn::loss::cross_entropy(&logits, &y).unwrap()
        };
        let v = vec![
            mk(&mut rng, &[5, 4]).as_tensor().clone(),
            mk(&mut rng, &[3, 5]).as_tensor().clone(),
        ];
        let hv = hvp(&loss_at(w1.as_tensor(), w2.as_tensor()), &vars, &v).unwrap();
        // central differences of the gradient along v
        let eps = 1e-5;
        let grad_at = |k: f64| {
            let a = Var::from_tensor(&(w1.as_tensor() + v[0].affine(k, 0.0).unwrap()).unwrap())
                .unwrap();
            let b = Var::from_tensor(&(w2.as_tensor() + v[1].affine(k, 0.0).unwrap()).unwrap())
                .unwrap();
            let g = loss_at(a.as_tensor(), b.as_tensor()).backward().unwrap();
            vec![
                g.get(a.as_tensor()).unwrap().detach(),
                g.get(b.as_tensor()).unwrap().detach(),
            ]
        };
        let (gp, gm) = (grad_at(eps), grad_at(-eps));
        for i in 0..2 {
            let fd = ((&gp[i] - &gm[i]).unwrap() / (2.0 * eps)).unwrap();
            let err = max_abs(&(&hv[i] - &fd).unwrap()).unwrap();
            let scale = max_abs(&fd).unwrap();
            assert!(
                err < 1e-6 * scale.max(1.0),
                "param {i}: {err} vs scale {scale}"
            );
        }
    }
}
