//! ahtsgd's own tanh, for `tanh = portable`: IEEE additions, multiplications and one division
//! per element, with no fused multiply-add and no call into the C library, so an input gives
//! the same bits on every CPU, instruction set and operating system, and a loop of it
//! vectorises. The C library's `tanhf` is a scalar call whose last bits differ between
//! libraries (and which took a third of a transformer step through GELU).
//!
//! For `|x| < 0.55`: `x + x·s·P(s)`, `s = x²`, `P` a Chebyshev fit of `(tanh x − x)/x³` on
//! `s ∈ [0, 0.3025]` (degree 5 for f32, 10 for f64; mpmath's `chebyfit` at 60 digits, fit
//! error 3.8e-10 and 7.7e-18). Otherwise `1 − 2/(e^{2|x|} + 1)` with `e^y = 2^k·e^r`,
//! `k = round(y/ln 2)`, `r = y − k·ln 2` in two parts (Cody and Waite: `k·ln2_hi` is exact),
//! `e^r` by its Taylor polynomial (degree 7 for f32, 13 for f64, truncation below 0.15 ulp),
//! `2^k` built from its exponent bits; `2|x|` is capped where tanh has rounded to 1. The sign
//! is copied back, so tanh is odd to the bit; `tanh(±0) = ±0`, `tanh(±∞) = ±1`, NaN stays NaN.
//!
//! Error against the exact tanh: at most 2 ulp in f32 over every input (checked exhaustively
//! against the f64 tanh) and at most 3 ulp in f64 (sampled), tested below.

use super::cpu::view;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

/// The portable tanh of a CPU tensor of f32 or f64 (elements in parallel chunks, each
/// vectorised for the widest instruction set).
pub fn apply(x: &Tensor) -> Result<Tensor> {
    x.detach().apply_op1_no_bwd(&Op)
}

struct Op;

#[inline(always)]
fn chunk<T: PortableTanh>(x: &[T], out: &mut [std::mem::MaybeUninit<T>]) {
    for (o, &v) in out.iter_mut().zip(x) {
        o.write(v.portable_tanh());
    }
}

crate::simd::multiversion!(fn chunk_best<T: PortableTanh>(x: &[T], out: &mut [std::mem::MaybeUninit<T>]) -> () = chunk);

impl CustomOp1 for Op {
    fn name(&self) -> &'static str {
        "ahtsgd-tanh"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        fn go<T: PortableTanh + Send + Sync>(x: &[T], l: &Layout) -> Vec<T> {
            super::cpu::map_chunks(&view(x, l), 1 << 13, |_, x, o| chunk_best(x, o))
        }
        let out = super::cpu::f32_or_f64!(self.name(), s, |x| go(x, l));
        Ok((out, l.shape().clone()))
    }
}

/// A float type with a portable tanh.
pub trait PortableTanh: Copy {
    /// tanh of `self`, as the module docs describe.
    fn portable_tanh(self) -> Self;
}

macro_rules! portable_tanh {
    ($t:ty, $mantissa:expr, $bias:expr, $magic:expr, $cap:expr,
     ln2 = ($hi:expr, $lo:expr), small = $small:expr, exp_degree = $deg:expr) => {
        impl PortableTanh for $t {
            #[inline(always)]
            fn portable_tanh(self) -> $t {
                const SMALL: &[$t] = &$small;
                // e^r's Taylor polynomial, highest power first: 1/j! for j = deg down to 0
                // (the factorials are exact in the type)
                const EXP: [$t; $deg + 1] = {
                    let mut c = [1.0; $deg + 1];
                    let (mut factorial, mut j): ($t, usize) = (1.0, 1);
                    while j <= $deg {
                        factorial *= j as $t;
                        c[$deg - j] = 1.0 / factorial;
                        j += 1;
                    }
                    c
                };
                // 1.5·2^mantissa: adding it rounds a small non-negative value to an integer,
                // which then sits in the low bits
                const MAGIC: $t = $magic;
                let x = self;
                let a = x.abs();
                let s = a * a;
                let mut p = SMALL[0];
                for &c in &SMALL[1..] {
                    p = p * s + c;
                }
                let small = a + (a * s) * p;
                let y = a + a;
                let y = if y < $cap { y } else { $cap };
                let shifted = y * std::f64::consts::LOG2_E as $t + MAGIC;
                let k = shifted - MAGIC;
                let r = (y - k * $hi) - k * $lo;
                let mut e = EXP[0];
                for &c in &EXP[1..] {
                    e = e * r + c;
                }
                // k + bias in the exponent field: 2^k
                let scale = <$t>::from_bits(
                    shifted
                        .to_bits()
                        .wrapping_sub(MAGIC.to_bits())
                        .wrapping_add($bias)
                        << $mantissa,
                );
                let big = 1.0 - 2.0 / (e * scale + 1.0);
                let m = if a < 0.55 { small } else { big };
                let m = if x.is_nan() { x } else { m };
                m.copysign(x)
            }
        }
    };
}

portable_tanh!(
    f32,
    23,
    127,
    12_582_912.0,
    40.0,
    ln2 = (0.693_145_75, 1.428_606_8e-6),
    small = [
        2.526_390_6e-3,
        -8.526_333e-3,
        2.181_845e-2,
        -5.396_47e-2,
        1.333_332_4e-1,
        -3.333_333_4e-1,
    ],
    exp_degree = 7
);

portable_tanh!(
    f64,
    52,
    1023,
    6_755_399_441_055_744.0,
    80.0,
    ln2 = (6.931_471_803_691_238e-1, 1.908_214_929_270_587_7e-10),
    small = [
        -2.060_276_537_636_634e-5,
        8.511_313_685_577_671e-5,
        -2.346_347_410_887_237e-4,
        5.889_360_520_074_057e-4,
        -1.455_661_830_100_716e-3,
        3.592_110_378_689_024e-3,
        -8.863_234_397_814_355e-3,
        2.186_948_849_366_694_4e-2,
        -5.396_825_396_743_401_6e-2,
        1.333_333_333_333_271_4e-1,
        -3.333_333_333_333_333e-1,
    ],
    exp_degree = 13
);

#[cfg(test)]
mod tests {
    use super::PortableTanh;

    /// Distance in ulps between two finite floats of one sign (or zero).
    fn ulps32(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    /// The f64 tanh, correctly rounded to f32 but for ties within its own error, as the
    /// reference; f32 inputs spread over every exponent (one in 61 of all positive floats).
    #[test]
    fn f32_within_two_ulp_of_the_f64_tanh() {
        let mut worst = (0, 0.0f32);
        for bits in (0..0x7f80_0000u32).step_by(61) {
            let x = f32::from_bits(bits);
            let got = x.portable_tanh();
            let want = (x as f64).tanh() as f32;
            let d = ulps32(got, want);
            if d > worst.0 {
                worst = (d, x);
            }
            assert_eq!(
                (-x).portable_tanh().to_bits(),
                (-got).to_bits(),
                "odd at {x}"
            );
        }
        assert!(worst.0 <= 2, "{} ulp at {}", worst.0, worst.1);
    }

    /// Every positive f32, against the f64 tanh: `cargo test --release -- --ignored`.
    #[test]
    #[ignore = "every f32: a minute in release"]
    fn f32_within_two_ulp_everywhere() {
        let mut worst = (0, 0.0f32);
        for bits in 0..0x7f80_0000u32 {
            let x = f32::from_bits(bits);
            let d = ulps32(x.portable_tanh(), (x as f64).tanh() as f32);
            if d > worst.0 {
                worst = (d, x);
            }
        }
        assert!(worst.0 <= 2, "{} ulp at {}", worst.0, worst.1);
    }

    /// f64 against the C library's tanh (within 1 ulp of the exact value in glibc) and a table
    /// of exact values (mpmath, 50 digits, rounded to f64).
    #[test]
    fn f64_within_three_ulp() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut worst = (0u64, 0.0f64);
        for _ in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // exponents from 2^-40 to 2^6
            let x = f64::from_bits((state >> 12) | ((1023 - 40 + (state % 46)) << 52));
            let d = (x.portable_tanh().to_bits() as i64 - x.tanh().to_bits() as i64).unsigned_abs();
            if d > worst.0 {
                worst = (d, x);
            }
        }
        assert!(worst.0 <= 3, "{} ulp at {}", worst.0, worst.1);
        // mpmath.tanh(mpf(x)) at 50 digits, then float(): the exact value rounded to f64
        for (x, want) in [
            (1e-300, 1e-300),
            (1e-08, 1e-08),
            (0.001, 0.000_999_999_666_666_8),
            (0.1, 0.099_667_994_624_955_82),
            (0.3, 0.291_312_612_451_590_9),
            (0.5, 0.462_117_157_260_009_74),
            (0.549, 0.499_770_356_604_621_1),
            (0.55, 0.500_520_211_190_235_3),
            (0.551, 0.501_269_315_516_868_2),
            (0.7, 0.604_367_777_117_163_5),
            (1.0, 0.761_594_155_955_764_9),
            (1.5, 0.905_148_253_644_866_4),
            (2.0, 0.964_027_580_075_816_9),
            (3.0, 0.995_054_753_686_730_5),
            (5.0, 0.999_909_204_262_595_1),
            (8.0, 0.999_999_774_929_675_8),
            (12.0, 0.999_999_999_924_497_3),
            (18.0, 0.999_999_999_999_999_6),
            (19.5, 1.0),
        ] {
            let d =
                (f64::portable_tanh(x).to_bits() as i64 - f64::to_bits(want) as i64).unsigned_abs();
            assert!(d <= 2, "tanh({x}): {d} ulp from {want}");
        }
    }

    /// The tensor op (parallel chunks, vectorised for this CPU) gives the bits of the scalar
    /// function compiled for the baseline, in f32 and f64, on a strided view too.
    #[test]
    fn op_matches_the_scalar_function() {
        use candle_core::{Device, Tensor};
        let v: Vec<f64> = (0..30_000)
            .map(|i| (i as f64 - 15_000.0) * 7.3e-4)
            .collect();
        let x = Tensor::new(v.as_slice(), &Device::Cpu).unwrap();
        let got = super::apply(&x).unwrap().to_vec1::<f64>().unwrap();
        for (g, &x) in got.iter().zip(&v) {
            assert_eq!(
                g.to_bits(),
                std::hint::black_box(x).portable_tanh().to_bits()
            );
        }
        let x32 = x
            .to_dtype(candle_core::DType::F32)
            .unwrap()
            .reshape((100, 300))
            .unwrap();
        let xt = x32.t().unwrap();
        let got = super::apply(&xt)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let want = xt.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (g, x) in got.iter().zip(want) {
            assert_eq!(
                g.to_bits(),
                std::hint::black_box(x).portable_tanh().to_bits()
            );
        }
    }

    #[test]
    fn special_values() {
        for (x, want) in [
            (0.0f32, 0.0f32),
            (-0.0, -0.0),
            (f32::INFINITY, 1.0),
            (f32::NEG_INFINITY, -1.0),
            (20.0, 1.0),
            (f32::MIN_POSITIVE / 4.0, f32::MIN_POSITIVE / 4.0),
        ] {
            assert_eq!(x.portable_tanh().to_bits(), want.to_bits(), "tanh({x})");
        }
        assert!(f32::NAN.portable_tanh().is_nan());
        assert!(f64::NAN.portable_tanh().is_nan());
        assert_eq!(f64::INFINITY.portable_tanh(), 1.0);
        assert_eq!((-0.0f64).portable_tanh().to_bits(), (-0.0f64).to_bits());
    }
}
