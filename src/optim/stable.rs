//! Symmetric α-stable noise by Chambers–Mallows–Stuck.
//!
//! For U ~ Uniform(−π/2, π/2) and W ~ Exp(1), independent,
//! X = sin(αU) / cos(U)^(1/α) · (cos((1−α)U) / W)^((1−α)/α) has characteristic function
//! exp(−|t|^α). The formula is exact at α = 2 (X = 2 sin(U)·√W ~ N(0, 2)) and at α = 1
//! (tan U, Cauchy), so one branch-free expression serves all of [1, 2].
//!
//! **Streams.** Uniforms come from Philox4x32-10 (Salmon et al., SC'11), a counter-based
//! generator: draw `i` of stream `(key, step)` is a pure function of `(key, step, i)`, so chunks
//! can be filled in any order on any number of threads (or a GPU) with identical results.
//! Each Philox block gives four 32-bit words: two draws.
//!
//! **Kernels.** [`cms`] is the f64 reference. [`fill_f32`] is the fast path: f32 arithmetic with
//! polynomial sin/log/exp written branch-free, with the angles near ±π/2 rewritten as small
//! arguments (π·min(u, 1−u)) so the heavy tails keep their relative accuracy. It agrees with
//! [`cms`] on the same uniforms to 1e-5 relative (tested; about 5e-7 seen). Its transform,
//! `cms_lanes`, is written once over `Lanes`: the portable and AVX2 builds vectorise it on
//! `f32` by themselves, and the AVX-512 kernel runs it on eight vectors at once.

use super::lanes::Lanes;
#[cfg(target_arch = "x86_64")]
use super::lanes::{Ymm, YmmI, Zmm, ZmmI};
use rayon::prelude::*;

/// Draws per parallel chunk (a multiple of 16).
const CHUNK: usize = 1 << 15;

/// The generator and the f32 kernel's arithmetic, named for run records: the name changes
/// whenever the f32 draws' bits change, so a record says which draws it was made with.
pub const KERNEL: &str = "philox4x32-10 cms-f32/2";

/// A stream key from a run's seed and a name (a parameter's, say).
pub fn stream_key(seed: u64, name: &str) -> [u32; 2] {
    // FNV-1a then SplitMix64: stable across platforms and Rust versions
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let k = splitmix(h ^ splitmix(seed));
    [k as u32, (k >> 32) as u32]
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Philox4x32's multipliers and key increments (Salmon et al., SC'11), shared by every kernel.
const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;
/// Rounds: the generator's published default.
const ROUNDS: usize = 10;

/// Philox4x32-10, one block.
#[inline(always)]
pub fn philox(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut c, mut k) = (ctr, key);
    for _ in 0..ROUNDS {
        let p0 = u64::from(M0) * u64::from(c[0]);
        let p1 = u64::from(M1) * u64::from(c[2]);
        c = [
            (p1 >> 32) as u32 ^ c[1] ^ k[0],
            p1 as u32,
            (p0 >> 32) as u32 ^ c[3] ^ k[1],
            p0 as u32,
        ];
        k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
    }
    c
}

/// The four words of block `j` of stream `(key, step)`.
#[inline(always)]
fn block(key: [u32; 2], step: u64, j: u64) -> [u32; 4] {
    philox(
        [j as u32, (j >> 32) as u32, step as u32, (step >> 32) as u32],
        key,
    )
}

/// A uniform in the open interval (0, 1) from 32 bits.
#[inline(always)]
fn open01_f64(bits: u32) -> f64 {
    (f64::from(bits) + 0.5) * (1.0 / 4_294_967_296.0)
}

/// One symmetric α-stable draw in f64 from two uniforms in (0, 1); `alpha` in [1, 2].
pub fn cms(alpha: f64, u1: f64, u2: f64) -> f64 {
    use std::f64::consts::{FRAC_PI_2, PI};
    let u = (u1 - 0.5) * PI;
    let w = -u2.ln();
    let x = if alpha == 1.0 {
        u.tan()
    } else if alpha == 2.0 {
        2.0 * u.sin() * w.sqrt()
    } else {
        // cos U = sin(π·min(u1, 1 − u1)) keeps its relative accuracy near ±π/2
        let cos_u = (PI * u1.min(1.0 - u1)).sin();
        let _ = FRAC_PI_2;
        (alpha * u).sin() / cos_u.powf(1.0 / alpha)
            * (((1.0 - alpha) * u).cos() / w).powf((1.0 - alpha) / alpha)
    };
    if x.is_finite() { x } else { 0.0 }
}

/// `count` draws in f64 (the reference path; `ahtsgd sample` uses it).
pub fn sample(alpha: f64, seed: u64, count: usize) -> Vec<f64> {
    let mut v = vec![0.0; count];
    fill_f64(alpha, stream_key(seed, "sample"), 0, &mut v);
    v
}

/// Fills `out` with draws `0..out.len()` of stream `(key, step)` using the f64 reference kernel.
pub fn fill_f64(alpha: f64, key: [u32; 2], step: u64, out: &mut [f64]) {
    assert!(
        (1.0..=2.0).contains(&alpha),
        "α must lie in [1, 2], got {alpha}"
    );
    out.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| fill_f64_at(alpha, key, step, (c * CHUNK) as u64, chunk));
}

/// Fills `out` with draws `first..first + out.len()` of stream `(key, step)`, f64 reference
/// kernel, on the calling thread.
pub(crate) fn fill_f64_at(alpha: f64, key: [u32; 2], step: u64, first: u64, out: &mut [f64]) {
    for (i, x) in out.iter_mut().enumerate() {
        let d = first + i as u64;
        let b = block(key, step, d / 2);
        let (w1, w2) = if d.is_multiple_of(2) {
            (b[0], b[1])
        } else {
            (b[2], b[3])
        };
        *x = cms(alpha, open01_f64(w1), open01_f64(w2));
    }
}

/// Fills `out` with draws `first..first + out.len()` of stream `(key, step)`, fast f32
/// kernel, on the calling thread; `first` is even.
pub(crate) fn fill_f32_at(alpha: f64, key: [u32; 2], step: u64, first: u64, out: &mut [f32]) {
    fill_chunk_best(Consts::new(alpha), key, step, first, out);
}

// ------------------------------------------------------------------------ fast f32 kernel

/// Constants of the fast kernel for one α (also passed to the CUDA kernel).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Consts {
    pub(crate) alpha: f32,
    pub(crate) ratio: f32,  // (1 − α)/α
    pub(crate) a_head: f32, // (2 − α)·π/2
}

impl Consts {
    pub(crate) fn new(alpha: f64) -> Self {
        Consts {
            alpha: alpha as f32,
            ratio: ((1.0 - alpha) / alpha) as f32,
            a_head: ((2.0 - alpha) * std::f64::consts::FRAC_PI_2) as f32,
        }
    }
}

/// sin(x) for x in [0, π/2]: x + x³·P(x²), P a degree-3 minimax fit of (sin x − x)/x³
/// weighted for relative error (6e-9 before f32 rounding, 8e-8 after, as good as the degree-11
/// Taylor series with one multiply-add fewer).
#[inline(always)]
fn sin_q<L: Lanes>(x: L) -> L {
    let c = L::splat;
    let x2 = x.mul(x);
    let p = c(2.605_78e-6).fma(x2, c(-1.980_960_2e-4));
    let p = p.fma(x2, c(8.333_066_5e-3));
    let p = p.fma(x2, c(-1.666_666e-1));
    x.mul(x2).fma(p, x)
}

/// ln(x) for positive normal x: the exponent, plus ln(m) for the mantissa m in [√½, √2) as
/// (m − 1)·q(m − 1), q a degree-8 least-squares fit on Chebyshev nodes (error < 1e-8 before f32
/// rounding) evaluated by Estrin's scheme: the kernel is bound by the latency of its chains of
/// dependent operations more than by their count, and Estrin's chain is half of Horner's.
#[inline(always)]
fn ln<L: Lanes>(x: L) -> L {
    let c = L::splat;
    // mantissa in [√½, √2): subtract the bits of √½ before splitting
    let sqrt_half = L::splat_i(0x3f35_04f3);
    let t = L::sub_i(x.to_bits(), sqrt_half);
    let e = L::sra_f::<23>(t);
    let m = L::from_bits(L::add_i(L::and(t, L::splat_i(0x007f_ffff)), sqrt_half));
    let y = m.sub(c(1.0));
    let y2 = y.mul(y);
    let y4 = y2.mul(y2);
    let a0 = c(-0.499_999_88).fma(y, c(0.999_999_974));
    let a1 = c(-0.250_021_55).fma(y, c(0.333_341_84));
    let a2 = c(-0.165_606_96).fma(y, c(0.199_569_78));
    let a3 = c(-0.143_773_3).fma(y, c(0.149_490_95));
    let b0 = a1.fma(y2, a0);
    let b1 = a3.fma(y2, a2);
    let q = c(0.087_439_453).fma(y4, b1).fma(y4, b0);
    e.fma(c(std::f32::consts::LN_2), y.mul(q))
}

/// exp(y) for |y| < 2²¹ − 127 whose result is a normal number (the kernel's arguments stay
/// within ±20).
#[inline(always)]
fn exp<L: Lanes>(y: L) -> L {
    let c = L::splat;
    // n = y/ln 2 to the nearest integer (ties to even) by adding 1.5·2²³ in one rounding; the
    // bits of the sum then hold n, ready to become 2ⁿ
    let shifted = y.fma(c(std::f32::consts::LOG2_E), c(12_582_912.0));
    let n = shifted.sub(c(12_582_912.0));
    // r = y − n·ln 2 with ln 2 split in two (Cody–Waite), |r| ≤ ln 2/2
    let r = n.fnma(c(0.693_145_75), y);
    let r = n.fnma(c(1.428_606_8e-6), r);
    // 1 + r·S(r), S a degree-4 minimax fit of (eʳ − 1)/r for relative error (9e-8), evaluated
    // by Estrin's scheme (a shorter chain of dependent operations than Horner's)
    let r2 = r.mul(r);
    let s01 = c(4.999_915e-1).fma(r, c(9.999_997e-1));
    let s23 = c(4.189_793e-2).fma(r, c(1.666_763_6e-1));
    let p = c(8.290_316e-3).fma(r2, s23).fma(r2, s01).fma(r, c(1.0));
    // 2ⁿ: the bits of n + 1.5·2²³ are 0x4b40_0000 + n
    let bias = L::splat_i(127u32.wrapping_sub(0x4b40_0000));
    p.mul(L::from_bits(L::shl::<23>(L::add_i(
        shifted.to_bits(),
        bias,
    ))))
}

/// One draw from two 32-bit words (or lanes of them), branch-free. The polynomials use fused
/// multiply-adds, correctly rounded on every CPU (an instruction where FMA is detected,
/// software otherwise), so every build draws the same bits.
#[inline(always)]
fn cms_lanes<L: Lanes>(k: Consts, w1: L::I, w2: L::I) -> L {
    use std::f32::consts::PI;
    let c = L::splat;
    // π/2²⁴ and π/2²⁵ (exact: powers of two)
    const PI_24: f32 = PI / 16_777_216.0;
    const PI_25: f32 = PI / 33_554_432.0;
    let (i1, i2) = (L::shr::<8>(w1), L::shr::<9>(w2));
    // 23 bits for the exponential's uniform: u2 = (i2 + ½)/2²³, exact in f32 even near 1
    let u2 = L::from_u(i2).fma(c(1.0 / 8_388_608.0), c(1.0 / 16_777_216.0));
    // with lo = min(i1, 2²⁴ − 1 − i1): t = π/2 − |U| = π(lo + ½)/2²⁴ > 0 and
    // |U| = π(2²⁴ − 1 − 2·lo)/2²⁵, each one rounding of an exact value, so t keeps its
    // relative accuracy near ±π/2 and |U| near 0
    let lo = L::from_u(L::min_i(i1, L::sub_i(L::splat_i((1 << 24) - 1), i1)));
    let t = lo.fma(c(PI_24), c(PI_25));
    let abs_u = c(PI_25).mul(lo.fma(c(-2.0), c(16_777_215.0)));
    let cos_u = sin_q(t);
    // sin(α|U|): α|U| lies in [0, π); the upper half reflects to π − α|U| = (2−α)π/2 + αt
    let (alpha, a_head) = (c(k.alpha), c(k.a_head));
    let sin_a = sin_q(alpha.mul(abs_u).min(alpha.fma(t, a_head)));
    // cos((α−1)|U|) = sin(π/2 − (α−1)|U|) = sin((2−α)π/2 + (α−1)t), an argument in (0, π/2]
    let cos_b = sin_q(c(k.alpha - 1.0).fma(t, a_head));
    // cos U^(−1/α) = cos U^(ratio − 1), so with q = 1/(W·cos U),
    // |X| = sin(α|U|)·W·q · (cos((α−1)U)·q)^ratio: one logarithm and one division fewer than
    // the formula as written. ln U2 = −W is used as it comes, so the product is −|X|.
    let ln_u2 = ln(u2);
    let q = c(-1.0).div(ln_u2.mul(cos_u));
    let minus_abs = sin_a
        .mul(ln_u2)
        .mul(q)
        .mul(exp(c(k.ratio).mul(ln(cos_b.mul(q)))));
    // X < 0 where U < 0, that is where the top bit of w1 is clear
    L::from_bits(L::xor(
        minus_abs.to_bits(),
        L::and(w1, L::splat_i(0x8000_0000)),
    ))
}

/// One draw from two 32-bit words.
#[inline(always)]
fn cms_fast(k: Consts, w1: u32, w2: u32) -> f32 {
    cms_lanes::<f32>(k, w1, w2)
}

/// Philox blocks computed together, lane by lane (so the rounds vectorise).
const LANES: usize = 16;

#[inline(always)]
fn philox_lanes(
    key: [u32; 2],
    step: u64,
    j0: u64,
    w1: &mut [u32; 2 * LANES],
    w2: &mut [u32; 2 * LANES],
) {
    let mut c0 = [0u32; LANES];
    let mut c1 = [0u32; LANES];
    let mut c2 = [step as u32; LANES];
    let mut c3 = [(step >> 32) as u32; LANES];
    for l in 0..LANES {
        let j = j0 + l as u64;
        c0[l] = j as u32;
        c1[l] = (j >> 32) as u32;
    }
    let (mut k0, mut k1) = (key[0], key[1]);
    for _ in 0..ROUNDS {
        for l in 0..LANES {
            let p0 = u64::from(M0) * u64::from(c0[l]);
            let p1 = u64::from(M1) * u64::from(c2[l]);
            let n0 = (p1 >> 32) as u32 ^ c1[l] ^ k0;
            let n2 = (p0 >> 32) as u32 ^ c3[l] ^ k1;
            c1[l] = p1 as u32;
            c3[l] = p0 as u32;
            c0[l] = n0;
            c2[l] = n2;
        }
        k0 = k0.wrapping_add(W0);
        k1 = k1.wrapping_add(W1);
    }
    // block j gives draws 2j (words 0, 1) and 2j + 1 (words 2, 3)
    for l in 0..LANES {
        w1[2 * l] = c0[l];
        w2[2 * l] = c1[l];
        w1[2 * l + 1] = c2[l];
        w2[2 * l + 1] = c3[l];
    }
}

/// The transform of one group of 2·[`LANES`] draws: words of U, words of W, the draws to
/// write. A trait with inlined methods, not a closure: a closure the compiler leaves out of
/// line is compiled without the caller's instruction set (and its fused multiply-adds become
/// software calls).
trait Transform {
    /// The words of draws `2·j0..2·(j0 + LANES)` in draw order: U's in `w1`, W's in `w2`.
    #[inline(always)]
    fn philox(
        key: [u32; 2],
        step: u64,
        j0: u64,
        w1: &mut [u32; 2 * LANES],
        w2: &mut [u32; 2 * LANES],
    ) {
        philox_lanes(key, step, j0, w1, w2);
    }
    fn group(k: Consts, w1: &[u32; 2 * LANES], w2: &[u32; 2 * LANES], out: &mut [f32]);
}

/// The portable transform, which the compiler vectorises.
struct Portable;

impl Transform for Portable {
    #[inline(always)]
    fn group(k: Consts, w1: &[u32; 2 * LANES], w2: &[u32; 2 * LANES], out: &mut [f32]) {
        for ((x, a), b) in out.iter_mut().zip(w1).zip(w2) {
            *x = cms_fast(k, *a, *b);
        }
    }
}

/// The transform on four AVX2 vectors side by side ([`Ymm`]); only for code compiled with
/// AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
struct Avx2;

#[cfg(target_arch = "x86_64")]
impl Transform for Avx2 {
    /// Philox with AVX2 intrinsics, eight blocks a vector, two vectors: each 32×32→64-bit
    /// product from two `vpmuludq`, two in-lane shuffles and two blends (the compiler's own
    /// vectorisation of [`philox_lanes`] took about four times as long).
    #[inline(always)]
    fn philox(
        key: [u32; 2],
        step: u64,
        j0: u64,
        w1: &mut [u32; 2 * LANES],
        w2: &mut [u32; 2 * LANES],
    ) {
        use std::arch::x86_64::*;
        // SAFETY: only `fill_chunk_avx2`, compiled with AVX2, uses this; the loads and stores
        // stay within the arrays (two vectors of 8 u32 each).
        unsafe {
            let (mut lo, mut hi) = ([0u32; LANES], [0u32; LANES]);
            for l in 0..LANES {
                let j = j0 + l as u64;
                (lo[l], hi[l]) = (j as u32, (j >> 32) as u32);
            }
            let load =
                |a: &[u32; LANES], h: usize| _mm256_loadu_si256(a.as_ptr().add(8 * h).cast());
            let m0 = _mm256_set1_epi32(M0 as i32);
            let m1 = _mm256_set1_epi32(M1 as i32);
            // (hi, lo) of the products a·m lane by lane: even lanes from one vpmuludq, odd
            // lanes from another on the shifted words
            let mulhilo = |a: __m256i, m: __m256i| {
                let even = _mm256_mul_epu32(a, m);
                let odd = _mm256_mul_epu32(_mm256_srli_epi64::<32>(a), m);
                let hi = _mm256_blend_epi32::<0xAA>(_mm256_shuffle_epi32::<0xF5>(even), odd);
                let lo = _mm256_blend_epi32::<0xAA>(even, _mm256_shuffle_epi32::<0xA0>(odd));
                (hi, lo)
            };
            let mut c: [[__m256i; 4]; 2] = std::array::from_fn(|h| {
                [
                    load(&lo, h),
                    load(&hi, h),
                    _mm256_set1_epi32(step as u32 as i32),
                    _mm256_set1_epi32((step >> 32) as u32 as i32),
                ]
            });
            let (mut k0, mut k1) = (key[0], key[1]);
            for _ in 0..ROUNDS {
                let (kk0, kk1) = (_mm256_set1_epi32(k0 as i32), _mm256_set1_epi32(k1 as i32));
                for cv in &mut c {
                    let (h0, l0) = mulhilo(cv[0], m0);
                    let (h1, l1) = mulhilo(cv[2], m1);
                    *cv = [
                        _mm256_xor_si256(_mm256_xor_si256(h1, cv[1]), kk0),
                        l1,
                        _mm256_xor_si256(_mm256_xor_si256(h0, cv[3]), kk1),
                        l0,
                    ];
                }
                k0 = k0.wrapping_add(W0);
                k1 = k1.wrapping_add(W1);
            }
            // draw order: block b gives draw 2b words 0 and 1, and draw 2b + 1 words 2 and 3
            for (h, cv) in c.iter().enumerate() {
                for (dst, (e, o)) in [(&mut *w1, (cv[0], cv[2])), (&mut *w2, (cv[1], cv[3]))] {
                    let (a, b) = (_mm256_unpacklo_epi32(e, o), _mm256_unpackhi_epi32(e, o));
                    let p = dst.as_mut_ptr().add(16 * h);
                    _mm256_storeu_si256(p.cast(), _mm256_permute2x128_si256::<0x20>(a, b));
                    _mm256_storeu_si256(p.add(8).cast(), _mm256_permute2x128_si256::<0x31>(a, b));
                }
            }
        }
    }

    #[inline(always)]
    fn group(k: Consts, w1: &[u32; 2 * LANES], w2: &[u32; 2 * LANES], out: &mut [f32]) {
        // SAFETY: only `fill_chunk_avx2`, compiled with AVX2 and FMA, uses this; the words
        // and `out` hold 2·LANES = 4·8 lanes.
        unsafe {
            let (a, b) = (YmmI::<4>::load(w1.as_ptr()), YmmI::<4>::load(w2.as_ptr()));
            cms_lanes::<Ymm<4>>(k, a, b).store(out.as_mut_ptr());
        }
    }
}

/// Draws `first..first + out.len()` group by group: Philox for 2·[`LANES`] draws, then the
/// transform `T`; the remainder one by one.
#[inline(always)]
fn fill_groups<T: Transform>(k: Consts, key: [u32; 2], step: u64, first: u64, out: &mut [f32]) {
    debug_assert!(first.is_multiple_of(2));
    let mut groups = out.chunks_exact_mut(2 * LANES);
    let mut j = first / 2;
    let (mut w1, mut w2) = ([0u32; 2 * LANES], [0u32; 2 * LANES]);
    for group in &mut groups {
        T::philox(key, step, j, &mut w1, &mut w2);
        T::group(k, &w1, &w2, group);
        j += LANES as u64;
    }
    for (i, x) in groups.into_remainder().iter_mut().enumerate() {
        let b = block(key, step, j + (i / 2) as u64);
        *x = if i % 2 == 0 {
            cms_fast(k, b[0], b[1])
        } else {
            cms_fast(k, b[2], b[3])
        };
    }
}

/// The portable kernel.
#[inline(always)]
fn fill_chunk(k: Consts, key: [u32; 2], step: u64, first: u64, out: &mut [f32]) {
    fill_groups::<Portable>(k, key, step, first, out);
}

/// The AVX2 kernel: Philox as [`fill_chunk`] has it (the compiler vectorises its rounds), the
/// transform [`cms_lanes`] on four vectors of eight side by side ([`Ymm`]), so it draws the
/// bits of [`fill_chunk`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn fill_chunk_avx2(k: Consts, key: [u32; 2], step: u64, first: u64, out: &mut [f32]) {
    fill_groups::<Avx2>(k, key, step, first, out);
}

/// The AVX-512 kernel: the Philox rounds written with intrinsics (16 blocks per vector, the
/// 32×32→64 products from two `vpmuludq` and two masked shuffles), then the transform,
/// [`cms_lanes`] on eight vectors side by side ([`Zmm`]), so it draws the bits of
/// [`fill_chunk`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512vl,avx2,fma")]
fn fill_chunk_avx512(k: Consts, key: [u32; 2], step: u64, first: u64, out: &mut [f32]) {
    use std::arch::x86_64::*;
    debug_assert!(first.is_multiple_of(2));
    // (hi, lo) of the 32×32-bit products a·m, lane by lane
    let mulhilo = |a: __m512i, m: __m512i| {
        let even = _mm512_mul_epu32(a, m);
        let odd = _mm512_mul_epu32(_mm512_srli_epi64::<32>(a), m);
        // even lanes take the upper words of `even`, odd lanes the lower words of `odd`
        let hi = _mm512_mask_shuffle_epi32::<0xF5>(odd, 0x5555, even);
        let lo = _mm512_mask_shuffle_epi32::<0xA0>(even, 0xAAAA, odd);
        (hi, lo)
    };
    // V vectors of 16 blocks at a time, so the dependent chains of the rounds and of the
    // polynomials interleave
    const V: usize = 4;
    const BLOCKS: usize = V * LANES;
    let iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let m0 = _mm512_set1_epi32(M0 as i32);
    let m1 = _mm512_set1_epi32(M1 as i32);
    // even draws take lanes 0..8 and odd draws lanes 0..8 in turn, then 8..16
    let lo_idx = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let hi_idx = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    let mut groups = out.chunks_exact_mut(2 * BLOCKS);
    let mut j = first / 2;
    // the words of each group's draws: U's (w1) and W's (w2), even draws then odd ones
    let (mut w1, mut w2) = ([0u32; 2 * BLOCKS], [0u32; 2 * BLOCKS]);
    let mut draws = [0f32; 2 * BLOCKS];
    for group in &mut groups {
        let mut c: [[__m512i; 4]; V] = [[_mm512_setzero_si512(); 4]; V];
        for (v, cv) in c.iter_mut().enumerate() {
            let first = j + (v * LANES) as u64;
            let base = _mm512_set1_epi32(first as u32 as i32);
            let lo = _mm512_add_epi32(base, iota);
            // the carry into the high word where the low word wrapped
            let high = _mm512_set1_epi32((first >> 32) as u32 as i32);
            let wrapped = _mm512_cmplt_epu32_mask(lo, base);
            *cv = [
                lo,
                _mm512_mask_add_epi32(high, wrapped, high, _mm512_set1_epi32(1)),
                _mm512_set1_epi32(step as u32 as i32),
                _mm512_set1_epi32((step >> 32) as u32 as i32),
            ];
        }
        let (mut k0, mut k1) = (key[0], key[1]);
        for _ in 0..ROUNDS {
            let (kk0, kk1) = (_mm512_set1_epi32(k0 as i32), _mm512_set1_epi32(k1 as i32));
            for cv in &mut c {
                let (h0, l0) = mulhilo(cv[0], m0);
                let (h1, l1) = mulhilo(cv[2], m1);
                *cv = [
                    _mm512_ternarylogic_epi32::<0x96>(h1, cv[1], kk0),
                    l1,
                    _mm512_ternarylogic_epi32::<0x96>(h0, cv[3], kk1),
                    l0,
                ];
            }
            k0 = k0.wrapping_add(W0);
            k1 = k1.wrapping_add(W1);
        }
        for (v, cv) in c.iter().enumerate() {
            // block b gives draw 2b words 0 and 1, and draw 2b + 1 words 2 and 3
            let (p1, p2) = (w1.as_mut_ptr(), w2.as_mut_ptr());
            for (x, dst) in
                cv.iter()
                    .zip([p1, p2, p1.wrapping_add(BLOCKS), p2.wrapping_add(BLOCKS)])
            {
                // SAFETY: `dst` points to BLOCKS u32 of `w1` or `w2`, and (v + 1)·16 <= BLOCKS;
                // unaligned stores.
                unsafe { _mm512_storeu_si512(dst.add(v * LANES).cast(), *x) };
            }
        }
        // all 128 draws side by side, eight vectors, each step for all of them before the next
        // SAFETY: AVX-512F is enabled here; `w1`, `w2` and `draws` hold 2·BLOCKS = 8·16 lanes.
        unsafe {
            let (a, b) = (ZmmI::<8>::load(w1.as_ptr()), ZmmI::<8>::load(w2.as_ptr()));
            cms_lanes::<Zmm<8>>(k, a, b).store(draws.as_mut_ptr());
        }
        for v in 0..V {
            // SAFETY: `draws` holds 2V vectors of 16 f32, the even draws then the odd, and
            // `group` 2V; unaligned loads and stores.
            unsafe {
                let e = _mm512_loadu_ps(draws.as_ptr().add(v * LANES));
                let o = _mm512_loadu_ps(draws.as_ptr().add(BLOCKS + v * LANES));
                let dst = group.as_mut_ptr().add(2 * v * LANES);
                _mm512_storeu_ps(dst, _mm512_permutex2var_ps(e, lo_idx, o));
                _mm512_storeu_ps(dst.add(LANES), _mm512_permutex2var_ps(e, hi_idx, o));
            }
        }
        j += BLOCKS as u64;
    }
    fill_chunk(k, key, step, 2 * j, groups.into_remainder());
}

fn fill_chunk_best(k: Consts, key: [u32; 2], step: u64, first: u64, out: &mut [f32]) {
    match crate::simd::level() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the features were detected at run time.
        crate::simd::Level::Avx512 => unsafe { fill_chunk_avx512(k, key, step, first, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        crate::simd::Level::Avx2 => unsafe { fill_chunk_avx2(k, key, step, first, out) },
        _ => fill_chunk(k, key, step, first, out),
    }
}

/// Fills `out` with draws `0..out.len()` of stream `(key, step)`, fast f32 kernel, in parallel.
pub fn fill_f32(alpha: f64, key: [u32; 2], step: u64, out: &mut [f32]) {
    assert!(
        (1.0..=2.0).contains(&alpha),
        "α must lie in [1, 2], got {alpha}"
    );
    let k = Consts::new(alpha);
    if out.len() <= CHUNK {
        fill_chunk_best(k, key, step, 0, out);
    } else {
        out.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(c, chunk)| fill_chunk_best(k, key, step, (c * CHUNK) as u64, chunk));
    }
}

/// Draw `i` of a stream with the fast kernel, computed alone (for tests and GPU cross-checks).
pub fn draw_f32(alpha: f64, key: [u32; 2], step: u64, i: u64) -> f32 {
    let b = block(key, step, i / 2);
    let k = Consts::new(alpha);
    if i.is_multiple_of(2) {
        cms_fast(k, b[0], b[1])
    } else {
        cms_fast(k, b[2], b[3])
    }
}

/// Fills an f32 tensor in place with draws `0..n` of stream `(key, step)` (the f32 kernel).
struct StableFill {
    alpha: f64,
    key: [u32; 2],
    step: u64,
}

impl candle_core::InplaceOp1 for StableFill {
    fn name(&self) -> &'static str {
        "ahtsgd-stable-fill"
    }

    fn cpu_fwd(
        &self,
        s: &mut candle_core::CpuStorage,
        l: &candle_core::Layout,
    ) -> candle_core::Result<()> {
        match (s, l.contiguous_offsets()) {
            (candle_core::CpuStorage::F32(v), Some((a, b))) => {
                fill_f32(self.alpha, self.key, self.step, &mut v[a..b]);
                Ok(())
            }
            _ => candle_core::bail!("stable fill: a contiguous f32 tensor"),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &mut candle_core::CudaStorage,
        l: &candle_core::Layout,
    ) -> candle_core::Result<()> {
        super::stable_cuda::fill(s, l, Consts::new(self.alpha), self.key, self.step)
    }
}

/// Draws `0..n` of stream `(key, step)` as an f32 tensor of `shape` on `dev`, made on the device
/// itself (a CUDA kernel on GPUs). The numbers are the CPU's; if the device kernel cannot run
/// (no NVRTC), they are drawn on the host and copied.
pub fn draw_tensor(
    alpha: f64,
    key: [u32; 2],
    step: u64,
    shape: &candle_core::Shape,
    dev: &candle_core::Device,
) -> candle_core::Result<candle_core::Tensor> {
    let host = || {
        let mut v = vec![0f32; shape.elem_count()];
        fill_f32(alpha, key, step, &mut v);
        candle_core::Tensor::from_vec(v, shape, dev)
    };
    if dev.is_cpu() {
        return host();
    }
    let t = candle_core::Tensor::zeros(shape, candle_core::DType::F32, dev)?;
    match t.inplace_op1(&StableFill { alpha, key, step }) {
        Ok(()) => Ok(t),
        Err(_) => host(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast(alpha: f64, seed: u64, n: usize) -> Vec<f64> {
        let mut v = vec![0.0f32; n];
        fill_f32(alpha, stream_key(seed, "t"), 0, &mut v);
        v.into_iter().map(f64::from).collect()
    }

    /// Known-answer vectors of Philox4x32-10 from the Random123 distribution (kat_vectors).
    #[test]
    fn philox_matches_the_published_known_answers() {
        assert_eq!(
            philox([0; 4], [0; 2]),
            [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]
        );
        assert_eq!(
            philox([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]
        );
        assert_eq!(
            philox(
                [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344],
                [0xa409_3822, 0x299f_31d0]
            ),
            [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1]
        );
    }

    fn ecf(x: &[f64], t: f64) -> f64 {
        x.iter().map(|v| (t * v).cos()).sum::<f64>() / x.len() as f64
    }

    #[test]
    fn characteristic_function_matches_exp_minus_t_to_the_alpha() {
        let n = 200_000;
        for alpha in [1.0, 1.2, 1.5, 1.8, 2.0] {
            for x in [sample(alpha, 42, n), fast(alpha, 42, n)] {
                for t in [0.25, 0.5, 1.0, 2.0] {
                    let want = (-f64::powf(t, alpha)).exp();
                    let got = ecf(&x, t);
                    // the standard error of a mean of cosines is at most 1/sqrt(n) ≈ 0.0022
                    assert!(
                        (got - want).abs() < 0.01,
                        "α={alpha} t={t}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn draws_are_symmetric() {
        for alpha in [1.0, 1.5, 2.0] {
            for x in [sample(alpha, 7, 100_000), fast(alpha, 7, 100_000)] {
                let pos = x.iter().filter(|v| **v > 0.0).count() as f64 / x.len() as f64;
                assert!((pos - 0.5).abs() < 0.006, "α={alpha}: P(X>0) = {pos}");
                let s: f64 = x.iter().map(|v| v.sin()).sum::<f64>() / x.len() as f64;
                assert!(s.abs() < 0.01, "α={alpha}: E sin X = {s}");
            }
        }
    }

    #[test]
    fn alpha_two_is_gaussian_with_variance_two() {
        for x in [sample(2.0, 3, 400_000), fast(2.0, 3, 400_000)] {
            let mean = x.iter().sum::<f64>() / x.len() as f64;
            let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / x.len() as f64;
            // sd of the sample variance: 2·sqrt(2/n) ≈ 0.0045
            assert!((var - 2.0).abs() < 0.03, "variance {var}");
            assert!(mean.abs() < 0.01);
        }
    }

    /// Reference quantiles of the standard symmetric α-stable law (β = 0, scale 1), computed
    /// outside this code with scipy 1.17.1:
    /// `[round(float(scipy.stats.levy_stable.ppf(p, a, 0)), 5) for p in (0.75, 0.9, 0.95)]`
    /// gave α=1.2: 0.98154, 2.47963, 4.36868; α=1.5: 0.96893, 2.06146, 3.05194;
    /// α=1.8: 0.95976, 1.8803, 2.50488. α = 1 is Cauchy, tan(π(p − 1/2)); α = 2 is N(0, 2),
    /// √2·Φ⁻¹(p).
    #[test]
    fn quantiles_match_an_independent_reference() {
        let refs: [(f64, [f64; 3]); 5] = [
            (1.0, [1.0, 3.077_683_537, 6.313_751_515]),
            (1.2, [0.98154, 2.47963, 4.36868]),
            (1.5, [0.96893, 2.06146, 3.05194]),
            (1.8, [0.95976, 1.8803, 2.50488]),
            (2.0, [0.953_872_443, 1.812_387_669, 2.326_174_185]),
        ];
        for (alpha, q) in refs {
            for mut x in [sample(alpha, 11, 200_000), fast(alpha, 11, 200_000)] {
                x.sort_by(f64::total_cmp);
                for (p, want) in [0.75, 0.9, 0.95].into_iter().zip(q) {
                    let got = x[(p * x.len() as f64) as usize];
                    assert!(
                        (got - want).abs() / want < 0.02,
                        "α={alpha} p={p}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn fast_kernel_agrees_with_the_reference_on_the_same_uniforms() {
        let key = stream_key(1, "x");
        let mut worst = 0.0f64;
        for alpha in [1.0, 1.1, 1.5, 1.9, 2.0] {
            for i in 0..20_000u64 {
                let b = block(key, 0, i);
                // the fast kernel uses the top 24 bits of the first word, 23 of the second
                let u1 = ((b[0] >> 8) as f64 + 0.5) / 16_777_216.0;
                let u2 = ((b[1] >> 9) as f64 + 0.5) / 8_388_608.0;
                let want = cms(alpha, u1, u2);
                let got = f64::from(cms_fast(Consts::new(alpha), b[0], b[1]));
                let rel = (got - want).abs() / want.abs().max(1e-3);
                worst = worst.max(rel);
                assert!(rel < 1e-5, "α={alpha} i={i}: {got} vs {want}");
            }
        }
        assert!(worst > 0.0);
    }

    #[test]
    fn streams_are_reproducible_and_independent_of_chunking() {
        let key = stream_key(5, "layer.weight");
        let n = 3 * CHUNK + 21;
        let mut a = vec![0.0f32; n];
        fill_f32(1.5, key, 9, &mut a);
        let single: Vec<f32> = (0..n as u64).map(|i| draw_f32(1.5, key, 9, i)).collect();
        assert_eq!(a, single);
        let mut c = vec![0.0f32; n];
        fill_f32(1.5, stream_key(5, "layer.bias"), 9, &mut c);
        assert_ne!(a, c, "different names give different streams");
        let mut d = vec![0.0f32; n];
        fill_f32(1.5, key, 10, &mut d);
        assert_ne!(a, d, "different steps give different streams");
    }

    /// Every kernel this CPU can run draws the same bits as the portable one, also where the
    /// low word of the block counter wraps inside a vector.
    #[test]
    fn every_instruction_set_draws_the_same_bits() {
        let key = stream_key(3, "w");
        let wrap = 2 * ((1u64 << 32) - 40);
        for (first, n) in [(0u64, 1000usize), (wrap, 333), (2 * 12_345, 130)] {
            for alpha in [1.0, 1.37, 2.0] {
                let k = Consts::new(alpha);
                let mut want = vec![0f32; n];
                fill_chunk(k, key, 4, first, &mut want);
                let single: Vec<f32> = (0..n as u64)
                    .map(|i| draw_f32(alpha, key, 4, first + i))
                    .collect();
                assert_eq!(want, single, "α={alpha} first={first}");
                #[cfg(target_arch = "x86_64")]
                {
                    let mut got = vec![0f32; n];
                    if std::arch::is_x86_feature_detected!("avx2")
                        && std::arch::is_x86_feature_detected!("fma")
                    {
                        // SAFETY: the features were detected.
                        unsafe { fill_chunk_avx2(k, key, 4, first, &mut got) };
                        assert_eq!(got, want, "AVX2, α={alpha} first={first}");
                    }
                    if crate::simd::level() == crate::simd::Level::Avx512 {
                        // SAFETY: as above.
                        unsafe { fill_chunk_avx512(k, key, 4, first, &mut got) };
                        assert_eq!(got, want, "AVX-512, α={alpha} first={first}");
                    }
                }
            }
        }
    }

    #[test]
    fn extreme_uniforms_stay_finite() {
        for alpha in [1.0, 1.01, 1.5, 1.99, 2.0] {
            for (w1, w2) in [(0, 0), (u32::MAX, u32::MAX), (0, u32::MAX), (u32::MAX, 0)] {
                assert!(cms(alpha, open01_f64(w1), open01_f64(w2)).is_finite());
                assert!(cms_fast(Consts::new(alpha), w1, w2).is_finite());
            }
        }
    }
}
