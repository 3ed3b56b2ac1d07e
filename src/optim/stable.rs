//! Symmetric α-stable noise by Chambers–Mallows–Stuck.
//!
//! For U ~ Uniform(−π/2, π/2) and W ~ Exp(1), independent,
//! X = sin(αU) / cos(U)^(1/α) · (cos((1−α)U) / W)^((1−α)/α) has characteristic function
//! exp(−|t|^α). The formula is exact at α = 2 (X = 2 sin(U)·√W ~ N(0, 2)); at α = 1 we use
//! its limit tan(U) (Cauchy). Draws are computed in f64.
//!
//! Streams are portable: ChaCha8 keyed by (seed, stream key), one ChaCha stream per `stream`
//! number (the training step), with every draw at a fixed word position, so a parallel fill
//! gives the same numbers as a sequential one whatever the thread count.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::f64::consts::FRAC_PI_2;

/// Draws per parallel chunk.
const CHUNK: usize = 1 << 14;
/// ChaCha words (u32) consumed per draw: two u64.
const WORDS_PER_DRAW: u128 = 4;

/// A key for a noise stream: the run's seed mixed with a name (a parameter's, say).
pub fn stream_key(seed: u64, name: &str) -> [u8; 32] {
    // FNV-1a: stable across platforms and Rust versions, unlike `DefaultHasher`
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&h.to_le_bytes());
    key[16..24].copy_from_slice(&splitmix(seed ^ h).to_le_bytes());
    key[24..].copy_from_slice(&splitmix(h.rotate_left(17) ^ 0x5851_f42d_4c95_7f2d).to_le_bytes());
    key
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform draw in the open interval (0, 1).
#[inline]
fn open01(bits: u64) -> f64 {
    ((bits >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64)
}

/// One symmetric α-stable draw from two uniform bit patterns. `alpha` must lie in [1, 2].
#[inline]
pub fn cms(alpha: f64, b1: u64, b2: u64) -> f64 {
    let mut u = (open01(b1) - 0.5) * std::f64::consts::PI;
    if u.abs() >= FRAC_PI_2 {
        // rounding can land on ±π/2; keep U strictly inside
        u = u.signum() * f64::from_bits(FRAC_PI_2.to_bits() - 1);
    }
    let w = -open01(b2).ln(); // > 0
    let x = if alpha == 1.0 {
        u.tan()
    } else if alpha == 2.0 {
        2.0 * u.sin() * w.sqrt()
    } else {
        let cos_u = u.cos().max(f64::MIN_POSITIVE);
        (alpha * u).sin() / cos_u.powf(1.0 / alpha)
            * (((1.0 - alpha) * u).cos() / w).powf((1.0 - alpha) / alpha)
    };
    if x.is_finite() { x } else { 0.0 }
}

/// Fills `out` with α-stable draws (scale 1) from stream `stream` of `key`.
pub fn fill(alpha: f64, key: [u8; 32], stream: u64, out: &mut [f64]) {
    assert!(
        (1.0..=2.0).contains(&alpha),
        "α must lie in [1, 2], got {alpha}"
    );
    let work = |(i, chunk): (usize, &mut [f64])| {
        let mut rng = ChaCha8Rng::from_seed(key);
        rng.set_stream(stream);
        rng.set_word_pos((i * CHUNK) as u128 * WORDS_PER_DRAW);
        for x in chunk.iter_mut() {
            let b1 = rng.next_u64();
            let b2 = rng.next_u64();
            *x = cms(alpha, b1, b2);
        }
    };
    if out.len() > CHUNK {
        out.par_chunks_mut(CHUNK).enumerate().for_each(work);
    } else {
        out.chunks_mut(CHUNK).enumerate().for_each(work);
    }
}

/// `count` draws as a vector (the `ahtsgd sample` command uses this).
pub fn sample(alpha: f64, seed: u64, count: usize) -> Vec<f64> {
    let mut v = vec![0.0; count];
    fill(alpha, stream_key(seed, "sample"), 0, &mut v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ecf(x: &[f64], t: f64) -> f64 {
        x.iter().map(|v| (t * v).cos()).sum::<f64>() / x.len() as f64
    }

    #[test]
    fn characteristic_function_matches_exp_minus_t_to_the_alpha() {
        let n = 200_000;
        for alpha in [1.0, 1.2, 1.5, 1.8, 2.0] {
            let x = sample(alpha, 42, n);
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

    #[test]
    fn draws_are_symmetric() {
        for alpha in [1.0, 1.5, 2.0] {
            let x = sample(alpha, 7, 100_000);
            let pos = x.iter().filter(|v| **v > 0.0).count() as f64 / x.len() as f64;
            assert!((pos - 0.5).abs() < 0.006, "α={alpha}: P(X>0) = {pos}");
            // the imaginary part of the characteristic function vanishes
            let s: f64 = x.iter().map(|v| v.sin()).sum::<f64>() / x.len() as f64;
            assert!(s.abs() < 0.01, "α={alpha}: E sin X = {s}");
        }
    }

    #[test]
    fn alpha_two_is_gaussian_with_variance_two() {
        let x = sample(2.0, 3, 400_000);
        let mean = x.iter().sum::<f64>() / x.len() as f64;
        let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / x.len() as f64;
        // sd of the sample variance: 2·sqrt(2/n) ≈ 0.0045
        assert!((var - 2.0).abs() < 0.03, "variance {var}");
        assert!(mean.abs() < 0.01);
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
            let mut x = sample(alpha, 11, 200_000);
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

    #[test]
    fn streams_are_reproducible_and_independent_of_chunking() {
        let key = stream_key(5, "layer.weight");
        let mut a = vec![0.0; 3 * CHUNK + 17];
        fill(1.5, key, 9, &mut a);
        // sequential reference: one generator, draws in order
        let mut rng = ChaCha8Rng::from_seed(key);
        rng.set_stream(9);
        let b: Vec<f64> = (0..a.len())
            .map(|_| cms(1.5, rng.next_u64(), rng.next_u64()))
            .collect();
        assert_eq!(a, b);
        let mut c = vec![0.0; a.len()];
        fill(1.5, stream_key(5, "layer.bias"), 9, &mut c);
        assert_ne!(a, c, "different names give different streams");
    }

    #[test]
    fn extreme_uniforms_stay_finite() {
        for alpha in [1.0, 1.01, 1.5, 1.99, 2.0] {
            for (b1, b2) in [(0, 0), (u64::MAX, u64::MAX), (0, u64::MAX), (u64::MAX, 0)] {
                assert!(cms(alpha, b1, b2).is_finite());
            }
        }
    }
}
