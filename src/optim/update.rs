//! The fused parameter update: noise, clipping, weight decay, momentum and the step in one pass
//! over each parameter, in place, multi-threaded on the CPU; plain tensor ops elsewhere.

use super::stable;
use candle_core::{CpuStorage, DType, Layout, Result, Tensor, WithDType};
use rayon::prelude::*;
use std::cell::RefCell;

/// Elements per parallel chunk of the update loop.
const CHUNK: usize = 1 << 14;

/// Where noise comes from this step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Source {
    None,
    /// α-stable with this α, scale 1.
    Stable(f64),
    /// Standard normal (an α = 2 draw divided by √2).
    Normal,
}

/// Everything one parameter's update needs.
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    pub lr: f64,
    /// Noise scale after any √d scaling (normal noise: its standard deviation).
    pub sigma: f64,
    pub source: Source,
    /// Scale applied to the noise in the step: `None` adds it to the gradient,
    /// `Some(s)` subtracts s·noise after the gradient step (Lévy-step placement).
    pub levy_scale: Option<f64>,
    pub clip_coord: Option<f64>,
    pub clip_norm: Option<f64>,
    pub momentum: f64,
    pub nesterov: bool,
    pub weight_decay: f64,
    pub key: [u32; 2],
    pub step: u64,
}

/// What one parameter's update measured.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Stats {
    pub grad_sq: f64,
    pub noise_sq: f64,
    pub clipped: usize,
    pub count: usize,
    /// A gradient entry was not finite (nothing was changed).
    pub bad_grad: bool,
    /// An updated value was not finite.
    pub bad_value: bool,
}

/// Reusable per-parameter buffers.
#[derive(Debug, Default)]
pub struct State {
    pub momentum_f32: Vec<f32>,
    pub momentum_f64: Vec<f64>,
    /// The momentum buffer of the tensor-op path (devices other than the CPU).
    pub momentum_tensor: Option<Tensor>,
    pub noise_f32: Vec<f32>,
    pub noise_f64: Vec<f64>,
    /// Adam's first and second moments, where Adam is the base ([`apply_adam`]).
    pub adam_m: Option<Tensor>,
    pub adam_v: Option<Tensor>,
}

/// Partial sums of the f64 reductions: eight AVX-512 vectors, enough to hide the latency of
/// their additions (with two, the sums ran at a quarter of the adder's rate).
const LANES: usize = 64;

pub(crate) trait Elem:
    WithDType + num_traits::Float + Into<f64> + Send + Sync + Copy
{
    fn fill(alpha: f64, key: [u32; 2], step: u64, out: &mut [Self]);
    /// Draws `first..first + out.len()` on the calling thread (`first` even).
    fn fill_at(alpha: f64, key: [u32; 2], step: u64, first: u64, out: &mut [Self]);
    fn buffers(state: &mut State) -> (&mut Vec<Self>, &mut Vec<Self>);
    fn c(x: f64) -> Self {
        <Self as num_traits::NumCast>::from(x).unwrap_or_else(Self::nan)
    }
}

impl Elem for f32 {
    fn fill(alpha: f64, key: [u32; 2], step: u64, out: &mut [f32]) {
        stable::fill_f32(alpha, key, step, out);
    }
    fn fill_at(alpha: f64, key: [u32; 2], step: u64, first: u64, out: &mut [f32]) {
        stable::fill_f32_at(alpha, key, step, first, out);
    }
    fn buffers(s: &mut State) -> (&mut Vec<f32>, &mut Vec<f32>) {
        (&mut s.momentum_f32, &mut s.noise_f32)
    }
}

impl Elem for f64 {
    fn fill(alpha: f64, key: [u32; 2], step: u64, out: &mut [f64]) {
        stable::fill_f64(alpha, key, step, out);
    }
    fn fill_at(alpha: f64, key: [u32; 2], step: u64, first: u64, out: &mut [f64]) {
        stable::fill_f64_at(alpha, key, step, first, out);
    }
    fn buffers(s: &mut State) -> (&mut Vec<f64>, &mut Vec<f64>) {
        (&mut s.momentum_f64, &mut s.noise_f64)
    }
}

/// Σx² of a slice in f64, in parallel (non-finite entries make it non-finite); the chunks' sums
/// are added in chunk order, so any thread count gives the same bits.
fn sum_sq<T: Elem>(x: &[T]) -> f64 {
    in_order(x.par_chunks(CHUNK).map(chunk_sum_sq_best).collect())
}

/// Σ of per-chunk figures, in chunk order.
fn in_order(parts: Vec<f64>) -> f64 {
    parts.iter().sum()
}

/// Σa·b of two slices of the same length in f64, in parallel, the same bits on any thread count.
pub(crate) fn dot<T: Elem>(a: &[T], b: &[T]) -> f64 {
    debug_assert_eq!(a.len(), b.len());
    in_order(
        a.par_chunks(CHUNK)
            .zip(b.par_chunks(CHUNK))
            .map(|(x, y)| chunk_dot_best(x, y))
            .collect(),
    )
}

/// (Σa·b, Σa·a) of two slices of the same length in one pass, as [`dot`] computes each.
pub(crate) fn dot_and_sq<T: Elem>(a: &[T], b: &[T]) -> (f64, f64) {
    debug_assert_eq!(a.len(), b.len());
    let parts: Vec<(f64, f64)> = a
        .par_chunks(CHUNK)
        .zip(b.par_chunks(CHUNK))
        .map(|(x, y)| chunk_dot_and_sq_best(x, y))
        .collect();
    (
        in_order(parts.iter().map(|p| p.0).collect()),
        in_order(parts.iter().map(|p| p.1).collect()),
    )
}

#[inline(always)]
fn chunk_dot_and_sq<T: Elem>(a: &[T], b: &[T]) -> (f64, f64) {
    (chunk_dot(a, b), chunk_dot(a, a))
}

crate::simd::multiversion!(fn chunk_dot_and_sq_best<T: Elem>(a: &[T], b: &[T]) -> (f64, f64) = chunk_dot_and_sq);

/// Σa·b over one chunk with [`LANES`] independent partial sums in f64 (an in-order float sum
/// would not vectorise; products of f32 are exact), fed in pieces: every piece but the last has
/// a multiple of [`LANES`] elements, so element i of the chunk always lands in partial sum
/// i mod [`LANES`] and the pieces give the bits of the chunk fed at once.
struct DotAcc {
    acc: [f64; LANES],
    tail: f64,
}

impl DotAcc {
    #[inline(always)]
    fn new() -> Self {
        DotAcc {
            acc: [0.0; LANES],
            tail: 0.0,
        }
    }

    #[inline(always)]
    fn add<T: Elem>(&mut self, a: &[T], b: &[T]) {
        let (la, lb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
        // the remainder, in order (only the chunk's last piece has one)
        for (&x, &y) in la.remainder().iter().zip(lb.remainder()) {
            self.tail += x.into() * y.into();
        }
        for (x, y) in la.zip(lb) {
            for ((s, &u), &v) in self.acc.iter_mut().zip(x).zip(y) {
                *s += u.into() * v.into();
            }
        }
    }

    #[inline(always)]
    fn sum(&self) -> f64 {
        self.acc.iter().sum::<f64>() + self.tail
    }
}

/// Σa·b of one chunk (see [`DotAcc`]).
#[inline(always)]
fn chunk_dot<T: Elem>(a: &[T], b: &[T]) -> f64 {
    let mut acc = DotAcc::new();
    acc.add(a, b);
    acc.sum()
}

crate::simd::multiversion!(fn chunk_dot_best<T: Elem>(a: &[T], b: &[T]) -> f64 = chunk_dot);

/// Σx² of one chunk: [`chunk_dot`] of the chunk with itself.
#[inline(always)]
fn chunk_sum_sq<T: Elem>(c: &[T]) -> f64 {
    chunk_dot(c, c)
}

crate::simd::multiversion!(fn chunk_sum_sq_best<T: Elem>(c: &[T]) -> f64 = chunk_sum_sq);

/// The α and scale of the rule's noise draws, if it has noise.
fn noise_law(r: &Rule) -> Option<(f64, f64)> {
    match r.source {
        Source::None => None,
        Source::Stable(a) => Some((a, r.sigma)),
        Source::Normal => Some((2.0, r.sigma / std::f64::consts::SQRT_2)),
    }
}

/// Scales a chunk of draws by `k` and clips each to [lo, hi] when given; returns how many
/// were clipped.
#[inline(always)]
fn scale_clip<T: Elem>(c: &mut [T], k: T, clip: Option<(T, T)>) -> usize {
    match clip {
        None => {
            c.iter_mut().for_each(|x| *x *= k);
            0
        }
        Some((hi, lo)) => {
            let mut n = 0usize;
            for x in c.iter_mut() {
                let v = *x * k;
                n += usize::from(v > hi || v < lo);
                *x = num_traits::Float::max(num_traits::Float::min(v, hi), lo);
            }
            n
        }
    }
}

/// The per-coordinate clip bounds of a rule, in the parameter's type.
fn clip_bounds<T: Elem>(r: &Rule) -> Option<(T, T)> {
    r.clip_coord.map(|m| (T::c(m), T::c(-m)))
}

/// Fills `noise` for the rule (scaled and clipped) and returns (Σnoise², clipped count).
fn make_noise<T: Elem>(r: &Rule, noise: &mut Vec<T>, d: usize) -> (f64, usize) {
    let Some((alpha, scale)) = noise_law(r) else {
        return (0.0, 0);
    };
    noise.resize(d, T::zero());
    T::fill(alpha, r.key, r.step, noise);
    let (k, clip) = (T::c(scale), clip_bounds::<T>(r));
    let clipped = noise
        .par_chunks_mut(CHUNK)
        .map(|c| scale_clip(c, k, clip))
        .sum();
    let sq = sum_sq(noise);
    if let Some(m) = r.clip_norm {
        let norm = sq.sqrt();
        if norm > m {
            let k = T::c(m / norm);
            noise
                .par_chunks_mut(CHUNK)
                .for_each(|c| c.iter_mut().for_each(|x| *x *= k));
            return (m * m, d);
        }
    }
    (sq, clipped)
}

/// Scalars of one update, in the parameter's type (the CPU's pass and the CUDA kernel take
/// the same ones).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Coef<T> {
    pub(crate) lr: T,
    pub(crate) wd: T,
    /// 1 when noise joins the gradient, else 0.
    pub(crate) gn: T,
    /// Lévy-step scale of the noise after the step, else 0.
    pub(crate) ls: T,
    pub(crate) mu: T,
    /// The direction after momentum: c_dir·dir + c_buf·b (Nesterov: 1, μ; heavy ball: 0, 1).
    pub(crate) c_dir: T,
    pub(crate) c_buf: T,
}

impl<T: Elem> Coef<T> {
    fn of(r: &Rule) -> Self {
        let (gn, ls) = match r.levy_scale {
            None => (T::one(), T::zero()),
            Some(s) => (T::zero(), T::c(s)),
        };
        let mu = T::c(r.momentum);
        let (c_dir, c_buf) = if r.nesterov {
            (T::one(), mu)
        } else {
            (T::zero(), T::one())
        };
        Coef {
            lr: T::c(r.lr),
            wd: T::c(r.weight_decay),
            gn,
            ls,
            mu,
            c_dir,
            c_buf,
        }
    }
}

/// θ ← θ − lr·dir − ls·n with dir = g + λθ + gn·n, through momentum when `MOM`.
/// Branch-free so it vectorises; returns whether some new θ is not finite.
#[inline(always)]
fn step_loop<T: Elem, const MOM: bool, const NOISE: bool>(
    p: &mut [T],
    g: &[T],
    m: &mut [T],
    n: &[T],
    k: Coef<T>,
) -> bool {
    let mut bad = false;
    for i in 0..p.len() {
        let theta = p[i];
        let ni = if NOISE { n[i] } else { T::zero() };
        let mut dir = g[i] + k.wd * theta + k.gn * ni;
        if MOM {
            let b = k.mu * m[i] + dir;
            m[i] = b;
            dir = k.c_dir * dir + k.c_buf * b;
        }
        let new = theta - k.lr * dir - k.ls * ni;
        bad |= !new.is_finite();
        p[i] = new;
    }
    bad
}

/// A piece's noise: none, ready, or raw draws still to be scaled by `.1` and clipped, their
/// squares added to `.3`.
enum NoiseIn<'a, 'b, T> {
    None,
    Ready(&'a [T]),
    Raw(&'a mut [T], T, Option<(T, T)>, &'b mut DotAcc),
}

/// One piece of the update: the noise's scaling and clipping, then the step. Returns (some
/// new θ not finite, clipped count).
#[inline(always)]
fn chunk_kernel<T: Elem>(
    noise: NoiseIn<'_, '_, T>,
    p: &mut [T],
    g: &[T],
    m: &mut [T],
    k: Coef<T>,
    momentum: bool,
) -> (bool, usize) {
    let (n, clipped): (&[T], usize) = match noise {
        NoiseIn::None => (&[], 0),
        NoiseIn::Ready(n) => (n, 0),
        NoiseIn::Raw(n, scale, clip, acc) => {
            let clipped = scale_clip(n, scale, clip);
            acc.add(n, n);
            (n, clipped)
        }
    };
    let bad = match (momentum, !n.is_empty()) {
        (true, true) => step_loop::<T, true, true>(p, g, m, n, k),
        (true, false) => step_loop::<T, true, false>(p, g, m, n, k),
        (false, true) => step_loop::<T, false, true>(p, g, m, n, k),
        (false, false) => step_loop::<T, false, false>(p, g, m, n, k),
    };
    (bad, clipped)
}

crate::simd::multiversion!(fn chunk_kernel_best<T: Elem>(
    noise: NoiseIn<'_, '_, T>,
    p: &mut [T],
    g: &[T],
    m: &mut [T],
    k: Coef<T>,
    momentum: bool,
) -> (bool, usize) = chunk_kernel);

/// Elements per piece of a chunk whose noise is drawn as it goes: the draws stay in the L1
/// cache between the sampler writing them and the step reading them. A multiple of [`LANES`].
const PIECE: usize = 2048;
const _: () = assert!(PIECE.is_multiple_of(LANES));

fn update_slices<T: Elem>(r: &Rule, p: &mut [T], g: &[T], state: &mut State) -> Stats {
    let d = p.len();
    let mut st = Stats {
        count: d,
        ..Default::default()
    };
    st.grad_sq = sum_sq(g);
    if !st.grad_sq.is_finite() {
        st.bad_grad = true;
        return st;
    }
    let (mom, noise) = T::buffers(state);
    // Without a norm clip, each chunk's noise is drawn, scaled and clipped just before its
    // step, while it is in cache; a norm clip needs the whole noise vector first.
    let fused = noise_law(r).filter(|_| r.clip_norm.is_none());
    if fused.is_none() {
        let (noise_sq, clipped) = make_noise(r, noise, d);
        st.noise_sq = noise_sq;
        st.clipped = clipped;
    }
    let has_noise = r.source != Source::None;
    let with_momentum = r.momentum > 0.0;
    if with_momentum {
        mom.resize(d, T::zero());
    }
    let k = Coef::<T>::of(r);
    let noise: &[T] = if has_noise && fused.is_none() {
        noise
    } else {
        &[]
    };
    let clip = clip_bounds::<T>(r);
    // one chunk: (some new θ not finite, Σnoise², clipped count)
    let chunk = |buf: &mut Vec<T>, c: usize, pc: &mut [T], gc: &[T], mc: &mut [T]| {
        let Some((alpha, scale)) = fused else {
            let noise_in = if has_noise {
                NoiseIn::Ready(&noise[c * CHUNK..c * CHUNK + pc.len()])
            } else {
                NoiseIn::None
            };
            let (bad, clipped) = chunk_kernel_best(noise_in, pc, gc, mc, k, with_momentum);
            return (bad, 0.0, clipped);
        };
        // the noise drawn a piece at a time, each piece stepped while its draws are in cache
        let (mut acc, mut bad, mut clipped) = (DotAcc::new(), false, 0);
        buf.resize(PIECE.min(pc.len()), T::zero());
        for (i, (pp, gp)) in pc.chunks_mut(PIECE).zip(gc.chunks(PIECE)).enumerate() {
            let n = &mut buf[..pp.len()];
            T::fill_at(alpha, r.key, r.step, (c * CHUNK + i * PIECE) as u64, n);
            let mp: &mut [T] = if with_momentum {
                &mut mc[i * PIECE..i * PIECE + pp.len()]
            } else {
                &mut []
            };
            let noise_in = NoiseIn::Raw(n, T::c(scale), clip, &mut acc);
            let (b, cl) = chunk_kernel_best(noise_in, pp, gp, mp, k, with_momentum);
            bad |= b;
            clipped += cl;
        }
        (bad, acc.sum(), clipped)
    };
    let chunks = p.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK)).enumerate();
    let init = || Vec::with_capacity(if fused.is_some() { PIECE } else { 0 });
    // the chunks' figures in chunk order, so Σnoise² has the same bits on any thread count
    let parts: Vec<(bool, f64, usize)> = if with_momentum {
        chunks
            .zip(mom.par_chunks_mut(CHUNK))
            .map_init(init, |buf, ((c, (pc, gc)), mc)| chunk(buf, c, pc, gc, mc))
            .collect()
    } else {
        chunks
            .map_init(init, |buf, (c, (pc, gc))| chunk(buf, c, pc, gc, &mut []))
            .collect()
    };
    let bad = parts.iter().any(|p| p.0);
    let nsq = in_order(parts.iter().map(|p| p.1).collect());
    let clipped = parts.iter().map(|p| p.2).sum();
    if fused.is_some() {
        st.noise_sq = nsq;
        st.clipped = clipped;
    }
    st.bad_value = bad;
    st
}

/// The in-place CPU op.
struct Fused<'a> {
    rule: Rule,
    state: &'a RefCell<State>,
    stats: RefCell<Stats>,
}

fn contiguous<'s, T: WithDType>(s: &'s [T], l: &Layout) -> Result<&'s [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s[a..b]),
        None => candle_core::bail!("fused update needs contiguous tensors"),
    }
}

impl candle_core::InplaceOp2 for Fused<'_> {
    fn name(&self) -> &'static str {
        "ahtsgd-fused-update"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let mut state = self.state.borrow_mut();
        let stats = match (s1, s2) {
            (CpuStorage::F32(p), CpuStorage::F32(g)) => {
                let g = contiguous(g, l2)?;
                let (a, b) = l1
                    .contiguous_offsets()
                    .ok_or_else(|| candle_core::Error::Msg("parameter not contiguous".into()))?;
                run(&self.rule, &mut p[a..b], g, &mut state)
            }
            (CpuStorage::F64(p), CpuStorage::F64(g)) => {
                let g = contiguous(g, l2)?;
                let (a, b) = l1
                    .contiguous_offsets()
                    .ok_or_else(|| candle_core::Error::Msg("parameter not contiguous".into()))?;
                run(&self.rule, &mut p[a..b], g, &mut state)
            }
            _ => candle_core::bail!(
                "fused update supports f32 and f64 parameters with gradients of the same type"
            ),
        };
        *self.stats.borrow_mut() = stats;
        Ok(())
    }
}

fn run<T: Elem>(r: &Rule, p: &mut [T], g: &[T], state: &mut State) -> Stats {
    update_slices(r, p, g, state)
}

/// What one parameter's update measured: known at once (the CPU's fused pass), or still on
/// the parameter's device, to be read with every other parameter's in one transfer
/// ([`read`]): reading each number as it is made would wait for the device every time.
#[derive(Debug)]
pub enum Measured {
    Now(Stats),
    OnDevice {
        /// What the host already knows (the count; the noise's figures when drawn there).
        known: Stats,
        /// Figures on the device, in order: ‖g‖², a value finite exactly when every updated
        /// value is, then ‖noise‖² and the clipped count when the noise was made there.
        pending: Vec<Tensor>,
    },
}

/// The [`Stats`] of every update, in order, with one transfer from the device for all the
/// figures still there.
pub fn read(measured: Vec<Measured>) -> Result<Vec<Stats>> {
    let pending: Vec<Tensor> = measured
        .iter()
        .flat_map(|m| match m {
            Measured::Now(_) => &[][..],
            Measured::OnDevice { pending, .. } => &pending[..],
        })
        .map(|t| t.flatten_all()?.to_dtype(DType::F64))
        .collect::<Result<_>>()?;
    let values = if pending.is_empty() {
        Vec::new()
    } else {
        Tensor::cat(&pending, 0)?.to_vec1::<f64>()?
    };
    let mut at = values.into_iter();
    Ok(measured
        .into_iter()
        .map(|m| match m {
            Measured::Now(s) => s,
            Measured::OnDevice { mut known, pending } => {
                let count: usize = pending.iter().map(Tensor::elem_count).sum();
                let v: Vec<f64> = at.by_ref().take(count).collect();
                let get = |i: usize| v.get(i).copied().unwrap_or(f64::NAN);
                known.grad_sq = get(0);
                if count > 2 {
                    known.noise_sq = get(2);
                    known.clipped = get(3) as usize;
                }
                known.bad_grad = !known.grad_sq.is_finite();
                known.bad_value = !known.bad_grad && !get(1).is_finite();
                known
            }
        })
        .collect())
}

/// Updates one parameter in place and returns what it measured.
pub fn apply(rule: &Rule, param: &Tensor, grad: &Tensor, state: &RefCell<State>) -> Result<Stats> {
    let m = apply_deferred(rule, param, grad, state)?;
    Ok(read(vec![m])?.remove(0))
}

/// [`apply`], leaving what the update measured on the device where it was made.
///
/// On the CPU a non-finite gradient stops the update before the parameter changes; on other
/// devices that is known only when the figures are read, after the update.
pub fn apply_deferred(
    rule: &Rule,
    param: &Tensor,
    grad: &Tensor,
    state: &RefCell<State>,
) -> Result<Measured> {
    if param.device().is_cpu() && matches!(param.dtype(), DType::F32 | DType::F64) {
        let grad = grad.contiguous()?;
        let op = Fused {
            rule: *rule,
            state,
            stats: RefCell::new(Stats::default()),
        };
        param.inplace_op2(&grad, &op)?;
        return Ok(Measured::Now(*op.stats.borrow()));
    }
    apply_tensors(rule, param, grad, state)
}

/// Noise for an f32 parameter made on its own device: σ·ξ (or the normal source), clipped per
/// coordinate or by norm; returns the noise, its squared norm and the coordinates clipped, as
/// device scalars.
fn device_noise(r: &Rule, param: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    let (alpha, scale) = match r.source {
        Source::None => unreachable!("no noise asked for"),
        Source::Stable(a) => (a, r.sigma),
        Source::Normal => (2.0, r.sigma / std::f64::consts::SQRT_2),
    };
    let raw = stable::draw_tensor(alpha, r.key, r.step, param.shape(), param.device())?;
    let mut n = (raw * scale)?;
    let mut clipped = Tensor::zeros((), DType::F32, param.device())?;
    if let Some(m) = r.clip_coord {
        clipped = n.abs()?.gt(m)?.to_dtype(DType::F32)?.sum_all()?;
        n = n.clamp(-m, m)?;
    }
    let mut sq = n.sqr()?.sum_all()?;
    if let Some(m) = r.clip_norm {
        // the factor min(1, m/‖n‖) stays on the device
        let norm = sq.sqrt()?;
        let over = norm.gt(m)?.to_dtype(DType::F32)?;
        let factor = (norm.recip()? * m)?.minimum(1.0)?;
        n = n.broadcast_mul(&factor)?;
        sq = (sq * factor.sqr()?)?;
        clipped = (over * param.elem_count() as f64)?;
    }
    Ok((n, sq, clipped))
}

/// The noise of one parameter's update as a tensor on its device, scaled and clipped: made
/// there for an f32 parameter off the CPU (its squared norm and clipped count then stay there
/// too, returned second), else drawn on the host by the CPU's kernel for the dtype (the figures
/// go into `known`).
fn noise_tensor(
    rule: &Rule,
    param: &Tensor,
    state: &RefCell<State>,
    known: &mut Stats,
) -> Result<(Option<Tensor>, Option<[Tensor; 2]>)> {
    let d = param.elem_count();
    let mut noise_figures = None;
    let noise = if rule.source == Source::None {
        None
    } else if param.dtype() == DType::F32 && !param.device().is_cpu() {
        // drawn on the device by the CPU's f32 kernel, scaled and clipped there
        let (t, sq, clipped) = device_noise(rule, param)?;
        noise_figures = Some([sq, clipped]);
        Some(t)
    } else {
        // the same stream and kernel as the CPU path for this dtype, so devices agree
        let mut s = state.borrow_mut();
        let ((sq, clipped), t) = if param.dtype() == DType::F32 {
            let r = make_noise::<f32>(rule, &mut s.noise_f32, d);
            (
                r,
                Tensor::from_slice(&s.noise_f32, param.shape(), param.device())?,
            )
        } else {
            let r = make_noise::<f64>(rule, &mut s.noise_f64, d);
            (
                r,
                Tensor::from_slice(&s.noise_f64, param.shape(), param.device())?
                    .to_dtype(param.dtype())?,
            )
        };
        known.noise_sq = sq;
        known.clipped = clipped;
        Some(t)
    };
    Ok((noise, noise_figures))
}

/// The same update on other devices, its figures left there: on CUDA, one fused kernel for an
/// f32 parameter (noise drawn in place) unless the noise is clipped by norm; tensor ops
/// otherwise.
pub fn apply_tensors(
    rule: &Rule,
    param: &Tensor,
    grad: &Tensor,
    state: &RefCell<State>,
) -> Result<Measured> {
    #[cfg(feature = "cuda")]
    if param.device().is_cuda()
        && param.dtype() == DType::F32
        && grad.dtype() == DType::F32
        && rule.clip_norm.is_none()
        && param.is_contiguous()
        && param.layout().start_offset() == 0
        && grad.dims() == param.dims()
    {
        return cuda::apply(rule, param, grad, state);
    }
    let mut known = Stats {
        count: param.elem_count(),
        ..Default::default()
    };
    let mut pending = vec![grad.sqr()?.sum_all()?];
    let (noise, noise_figures) = noise_tensor(rule, param, state, &mut known)?;
    let mut dir = if rule.weight_decay != 0.0 {
        (grad + (param * rule.weight_decay)?)?
    } else {
        grad.clone()
    };
    if let (Some(n), None) = (&noise, rule.levy_scale) {
        dir = (dir + n)?;
    }
    if rule.momentum > 0.0 {
        // the momentum buffer lives next to the parameter, in its dtype
        let mut s = state.borrow_mut();
        let b_old = match s.momentum_tensor.take() {
            Some(b) => b,
            None => param.zeros_like()?,
        };
        let b = ((b_old * rule.momentum)? + &dir)?;
        s.momentum_tensor = Some(b.clone());
        dir = if rule.nesterov {
            (dir + (b * rule.momentum)?)?
        } else {
            b
        };
    }
    let mut new = (param - (dir * rule.lr)?)?;
    if let (Some(n), Some(s)) = (&noise, rule.levy_scale) {
        new = (new - (n * s)?)?;
    }
    // Σ of the new values: finite exactly when every value is (NaN propagates; f32 sums
    // overflow only for values near f32's largest)
    pending.push(new.sum_all()?);
    pending.extend(noise_figures.into_iter().flatten());
    param.slice_set(&new, 0, 0)?;
    Ok(Measured::OnDevice { known, pending })
}

/// Adam as the base of a noisy update: the moments' decays and the denominator guard.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamBase {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl Default for AdamBase {
    fn default() -> Self {
        AdamBase {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// One parameter's update with Adam as the base, on any device, in tensor ops. With n the
/// rule's noise and t = `rule.step` + 1:
///
/// ```text
/// gradient placement: g' = g + n        levy_step placement: g' = g
/// m ← β₁m + (1−β₁)g'    v ← β₂v + (1−β₂)g'²    m̂ = m/(1−β₁ᵗ)    v̂ = v/(1−β₂ᵗ)
/// θ ← θ·(1 − lr·λ) − lr·m̂/(√v̂ + ε)    (levy_step: then − s·n)
/// ```
///
/// λ is `rule.weight_decay`, decoupled as in AdamW; the rule's momentum is not used. With no
/// noise the operations are those of [`super::adam::AdamW`], in its order, so σ = 0 gives its
/// bits. On the CPU a non-finite gradient stops the update before the parameter changes.
pub fn apply_adam(
    rule: &Rule,
    base: AdamBase,
    param: &Tensor,
    grad: &Tensor,
    state: &RefCell<State>,
) -> Result<Measured> {
    let mut known = Stats {
        count: param.elem_count(),
        ..Default::default()
    };
    let grad_sq = grad.sqr()?.sum_all()?;
    if param.device().is_cpu() {
        known.grad_sq = grad_sq.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !known.grad_sq.is_finite() {
            known.bad_grad = true;
            return Ok(Measured::Now(known));
        }
    }
    let (noise, noise_figures) = noise_tensor(rule, param, state, &mut known)?;
    let g = match (&noise, rule.levy_scale) {
        (Some(n), None) => (grad + n)?,
        _ => grad.clone(),
    };
    let (first, second) = {
        let s = state.borrow();
        (s.adam_m.clone(), s.adam_v.clone())
    };
    let first = first.map_or_else(|| param.zeros_like(), Ok)?;
    let second = second.map_or_else(|| param.zeros_like(), Ok)?;
    let t = (rule.step + 1) as i32;
    let scale_m = 1f64 / (1f64 - base.beta1.powi(t));
    let scale_v = 1f64 / (1f64 - base.beta2.powi(t));
    let next_m = ((first * base.beta1)? + (&g * (1.0 - base.beta1))?)?;
    let next_v = ((second * base.beta2)? + (g.sqr()? * (1.0 - base.beta2))?)?;
    let m_hat = (&next_m * scale_m)?;
    let v_hat = (&next_v * scale_v)?;
    let decayed = (param * (1f64 - rule.lr * rule.weight_decay))?;
    let adjusted = (m_hat / (v_hat.sqrt()? + base.eps)?)?;
    let mut new = (decayed - (adjusted * rule.lr)?)?;
    if let (Some(n), Some(s)) = (&noise, rule.levy_scale) {
        new = (new - (n * s)?)?;
    }
    {
        let mut s = state.borrow_mut();
        s.adam_m = Some(next_m);
        s.adam_v = Some(next_v);
    }
    let new_sum = new.sum_all()?;
    param.slice_set(&new, 0, 0)?;
    if param.device().is_cpu() {
        // ‖g‖² and the noise's figures are on the host already; Σ of the new values is finite
        // exactly when every value is
        known.bad_value = !new_sum
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?
            .is_finite();
        return Ok(Measured::Now(known));
    }
    let mut pending = vec![grad_sq, new_sum];
    pending.extend(noise_figures.into_iter().flatten());
    Ok(Measured::OnDevice { known, pending })
}

/// The fused update on CUDA (`update_f32` in stable.cu).
#[cfg(feature = "cuda")]
mod cuda {
    use super::{Coef, Measured, Rule, State, Stats, clip_bounds, noise_law};
    use crate::optim::stable::Consts;
    use crate::optim::stable_cuda::{UpdateArgs, update, update_blocks};
    use candle_core::{
        CpuStorage, CudaStorage, DType, InplaceOp3, Layout, Result, Storage, Tensor,
    };
    use std::cell::RefCell;

    struct Op<'a> {
        args: UpdateArgs,
        n: usize,
        momentum: bool,
        /// The statistics buffer (the third operand when there is no momentum).
        stats: &'a Tensor,
    }

    impl InplaceOp3 for Op<'_> {
        fn name(&self) -> &'static str {
            "ahtsgd-update-cuda"
        }

        fn cpu_fwd(
            &self,
            _: &mut CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
        ) -> Result<()> {
            candle_core::bail!("{}: CUDA only", self.name())
        }

        fn cuda_fwd(
            &self,
            p: &mut CudaStorage,
            lp: &Layout,
            g: &CudaStorage,
            lg: &Layout,
            third: &CudaStorage,
            lt: &Layout,
        ) -> Result<()> {
            let fits = |l: &Layout| l.is_contiguous() && l.shape().elem_count() == self.n;
            if !fits(lp) || lp.start_offset() != 0 || !fits(lg) {
                candle_core::bail!("{}: operands must be contiguous", self.name());
            }
            let g = (g, lg.start_offset());
            if !self.momentum {
                return update(p, g, None, third, self.n, &self.args);
            }
            if !fits(lt) {
                candle_core::bail!("{}: the momentum buffer must be contiguous", self.name());
            }
            let (guard, _) = self.stats.storage_and_layout();
            let Storage::Cuda(stats) = &*guard else {
                candle_core::bail!("{}: statistics off the device", self.name());
            };
            update(
                p,
                g,
                Some((third, lt.start_offset())),
                stats,
                self.n,
                &self.args,
            )
        }
    }

    pub(super) fn apply(
        rule: &Rule,
        param: &Tensor,
        grad: &Tensor,
        state: &RefCell<State>,
    ) -> Result<Measured> {
        let n = param.elem_count();
        let grad = grad.contiguous()?;
        let stats = Tensor::zeros(4 + 4 * update_blocks(n) + 1, DType::F64, param.device())?;
        let args = UpdateArgs {
            key: rule.key,
            step: rule.step,
            noise: noise_law(rule).map(|(alpha, scale)| (Consts::new(alpha), scale as f32)),
            clip: clip_bounds::<f32>(rule),
            k: Coef::of(rule),
        };
        let momentum = rule.momentum > 0.0;
        let op = Op {
            args,
            n,
            momentum,
            stats: &stats,
        };
        if momentum {
            let b = match state.borrow_mut().momentum_tensor.take() {
                Some(b) => b.contiguous()?,
                None => param.zeros_like()?,
            };
            let done = param.inplace_op3(&grad, &b, &op);
            state.borrow_mut().momentum_tensor = Some(b);
            done?;
        } else {
            param.inplace_op3(&grad, &stats, &op)?;
        }
        Ok(Measured::OnDevice {
            known: Stats {
                count: n,
                ..Default::default()
            },
            pending: vec![stats.narrow(0, 0, 4)?],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn rule(
        source: Source,
        levy: Option<f64>,
        clip_coord: Option<f64>,
        clip_norm: Option<f64>,
    ) -> Rule {
        Rule {
            lr: 0.1,
            sigma: 0.3,
            source,
            levy_scale: levy,
            clip_coord,
            clip_norm,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 0.01,
            key: [1, 2],
            step: 3,
        }
    }

    /// The fused in-place kernel and the tensor-op path compute the same update.
    #[test]
    fn fused_and_tensor_paths_agree() {
        let dev = Device::Cpu;
        let n = 40_000; // more than one parallel chunk
        let init: Vec<f64> = (0..n)
            .map(|i| ((i * 37 % 101) as f64 - 50.0) / 50.0)
            .collect();
        let grad: Vec<f64> = (0..n)
            .map(|i| ((i * 13 % 29) as f64 - 14.0) / 7.0)
            .collect();
        let g = Tensor::from_slice(&grad, n, &dev).unwrap();
        for r in [
            rule(Source::Stable(1.3), None, None, None),
            rule(Source::Stable(1.7), Some(0.2), Some(0.5), None),
            rule(Source::Normal, None, None, Some(3.0)),
            rule(Source::None, None, None, None),
            Rule {
                momentum: 0.0,
                ..rule(Source::Stable(1.5), None, Some(0.4), None)
            },
        ] {
            let a = Var::from_slice(&init, n, &dev).unwrap();
            let b = Var::from_slice(&init, n, &dev).unwrap();
            let (sa, sb) = (RefCell::default(), RefCell::default());
            for _ in 0..3 {
                let x = apply(&r, a.as_tensor(), &g, &sa).unwrap();
                let y = apply_tensors(&r, b.as_tensor(), &g, &sb).unwrap();
                let y = read(vec![y]).unwrap().remove(0);
                assert_eq!(x.clipped, y.clipped, "{r:?}");
                assert!((x.noise_sq - y.noise_sq).abs() <= 1e-9 * x.noise_sq.max(1.0));
            }
            let diff = crate::optim::sharpness::max_abs(&(a.as_tensor() - b.as_tensor()).unwrap())
                .unwrap();
            assert!(diff < 1e-12, "{r:?}: {diff}");
            let moved = crate::optim::sharpness::max_abs(
                &(a.as_tensor() - Tensor::from_slice(&init, n, &dev).unwrap()).unwrap(),
            )
            .unwrap();
            assert!(moved > 0.0);
        }
    }

    /// Σx², the dots and an update's figures have the same bits on any thread count, and are
    /// the sums they claim to be.
    #[test]
    fn reductions_are_the_same_on_any_thread_count() {
        // many chunks whose sums differ by orders of magnitude, so that adding them in another
        // order changes the last bits
        let n = 37 * CHUNK + 77;
        let a: Vec<f32> = (0..n)
            .map(|i| {
                let scale = 10f32.powi((i / CHUNK % 7) as i32 * 2 - 6);
                ((i * 7919 % 1013) as f32 - 506.0) * scale
            })
            .collect();
        let b: Vec<f32> = (0..n)
            .map(|i| ((i * 104_729 % 997) as f32 - 498.0) * 3e-3)
            .collect();
        let g = Tensor::from_slice(&b, n, &Device::Cpu).unwrap();
        let r = Rule {
            momentum: 0.0,
            ..rule(Source::Stable(1.5), None, Some(0.5), None)
        };
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let p = Var::from_slice(&a, n, &Device::Cpu).unwrap();
                let st = apply(&r, p.as_tensor(), &g, &RefCell::default()).unwrap();
                let (d, sq) = dot_and_sq(&a, &b);
                [sum_sq(&a), dot(&a, &b), d, sq, st.grad_sq, st.noise_sq].map(f64::to_bits)
            })
        };
        let one = run(1);
        for threads in [2, 3, 7] {
            assert_eq!(run(threads), one, "{threads} threads");
        }
        let naive = |x: &[f32], y: &[f32]| -> f64 {
            x.iter()
                .zip(y)
                .map(|(&u, &v)| f64::from(u) * f64::from(v))
                .sum()
        };
        let close = |got: u64, want: f64| {
            let got = f64::from_bits(got);
            assert!((got - want).abs() <= 1e-12 * want.abs(), "{got} vs {want}");
        };
        close(one[0], naive(&a, &a));
        close(one[1], naive(&a, &b));
        close(one[2], naive(&a, &b));
        close(one[3], naive(&a, &a));
        close(one[4], naive(&b, &b));
        assert!(f64::from_bits(one[5]) > 0.0);
    }

    /// The fused pass draws, scales, clips and squares the noise a piece at a time; its Σn² is
    /// that of the noise it added, to the bit, as if each chunk were summed at once (pieces
    /// and chunks that end mid-way through the partial sums included).
    #[test]
    fn pieces_sum_the_noise_it_adds() {
        let dev = Device::Cpu;
        for n in [3 * CHUNK + 2 * PIECE + 77, PIECE - 5, 2 * CHUNK] {
            let a = Var::from_slice(&vec![0.0f32; n], n, &dev).unwrap();
            let g = Tensor::zeros(n, candle_core::DType::F32, &dev).unwrap();
            let r = Rule {
                momentum: 0.0,
                weight_decay: 0.0,
                lr: 1.0,
                ..rule(Source::Stable(1.2), None, Some(2.0), None)
            };
            let st = apply(&r, a.as_tensor(), &g, &RefCell::default()).unwrap();
            // θ = −noise
            let theta = a.as_tensor().to_vec1::<f32>().unwrap();
            assert_eq!(st.noise_sq.to_bits(), sum_sq(&theta).to_bits(), "n = {n}");
            let clipped = theta.iter().filter(|x| x.abs() == 2.0).count();
            assert_eq!(st.clipped, clipped, "n = {n}");
            assert!(clipped > 0 && clipped < n / 10, "n = {n}: {clipped}");
        }
    }

    #[test]
    fn f32_parameters_use_the_fast_stream() {
        let dev = Device::Cpu;
        let a = Var::from_slice(&[0.0f32; 64], 64, &dev).unwrap();
        let g = Tensor::zeros(64, candle_core::DType::F32, &dev).unwrap();
        let r = Rule {
            momentum: 0.0,
            weight_decay: 0.0,
            lr: 1.0,
            sigma: 1.0,
            ..rule(Source::Stable(1.5), None, None, None)
        };
        apply(&r, a.as_tensor(), &g, &RefCell::default()).unwrap();
        let got = a.as_tensor().to_vec1::<f32>().unwrap();
        for (i, v) in got.iter().enumerate() {
            assert_eq!(*v, -stable::draw_f32(1.5, [1, 2], 3, i as u64));
        }
    }
}
