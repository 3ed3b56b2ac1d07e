//! The arithmetic of the sampler's f32 transform, on one number or on several vectors at once.
//!
//! The transform is written once, generic over [`Lanes`]. On `f32` it is the reference, which
//! the portable build vectorises by itself. On [`Zmm`] (AVX-512) and [`Ymm`] (AVX2) it runs
//! `N` vectors side by side, operation by operation: each step of the formula is issued for
//! all `N` vectors before the next, so the processor always has `N` independent operations at
//! hand. Left to the compiler, the AVX-512 loop held one vector at a time and waited on its
//! chains of dependent operations about a third of the time.
//!
//! Every method is one IEEE operation (or one integer operation) with the same rounding on
//! every side, so all give the same bits.

/// Numbers the transform computes with: `Self` holds f32 lanes, [`Lanes::I`] u32 lanes.
pub(crate) trait Lanes: Copy {
    type I: Copy;
    fn splat(x: f32) -> Self;
    fn splat_i(x: u32) -> Self::I;
    fn mul(self, b: Self) -> Self;
    fn sub(self, b: Self) -> Self;
    /// self·b + c, rounded once.
    fn fma(self, b: Self, c: Self) -> Self;
    /// c − self·b, rounded once.
    fn fnma(self, b: Self, c: Self) -> Self;
    fn div(self, b: Self) -> Self;
    /// `if self < b { self } else { b }`.
    fn min(self, b: Self) -> Self;
    fn to_bits(self) -> Self::I;
    fn from_bits(i: Self::I) -> Self;
    /// Lanes below 2³¹ as f32.
    fn from_u(i: Self::I) -> Self;
    /// The lanes shifted right by `S` as signed integers, as f32.
    fn sra_f<const S: u32>(i: Self::I) -> Self;
    fn shr<const S: u32>(i: Self::I) -> Self::I;
    fn shl<const S: u32>(i: Self::I) -> Self::I;
    fn and(a: Self::I, b: Self::I) -> Self::I;
    fn xor(a: Self::I, b: Self::I) -> Self::I;
    fn add_i(a: Self::I, b: Self::I) -> Self::I;
    fn sub_i(a: Self::I, b: Self::I) -> Self::I;
    fn min_i(a: Self::I, b: Self::I) -> Self::I;
}

impl Lanes for f32 {
    type I = u32;
    #[inline(always)]
    fn splat(x: f32) -> Self {
        x
    }
    #[inline(always)]
    fn splat_i(x: u32) -> u32 {
        x
    }
    #[inline(always)]
    fn mul(self, b: Self) -> Self {
        self * b
    }
    #[inline(always)]
    fn sub(self, b: Self) -> Self {
        self - b
    }
    #[inline(always)]
    fn fma(self, b: Self, c: Self) -> Self {
        self.mul_add(b, c)
    }
    #[inline(always)]
    fn fnma(self, b: Self, c: Self) -> Self {
        (-self).mul_add(b, c)
    }
    #[inline(always)]
    fn div(self, b: Self) -> Self {
        self / b
    }
    #[inline(always)]
    fn min(self, b: Self) -> Self {
        if self < b { self } else { b }
    }
    #[inline(always)]
    fn to_bits(self) -> u32 {
        f32::to_bits(self)
    }
    #[inline(always)]
    fn from_bits(i: u32) -> Self {
        f32::from_bits(i)
    }
    #[inline(always)]
    fn from_u(i: u32) -> Self {
        i as f32
    }
    #[inline(always)]
    fn sra_f<const S: u32>(i: u32) -> Self {
        (i as i32 >> S) as f32
    }
    #[inline(always)]
    fn shr<const S: u32>(i: u32) -> u32 {
        i >> S
    }
    #[inline(always)]
    fn shl<const S: u32>(i: u32) -> u32 {
        i << S
    }
    #[inline(always)]
    fn and(a: u32, b: u32) -> u32 {
        a & b
    }
    #[inline(always)]
    fn xor(a: u32, b: u32) -> u32 {
        a ^ b
    }
    #[inline(always)]
    fn add_i(a: u32, b: u32) -> u32 {
        a.wrapping_add(b)
    }
    #[inline(always)]
    fn sub_i(a: u32, b: u32) -> u32 {
        a.wrapping_sub(b)
    }
    #[inline(always)]
    fn min_i(a: u32, b: u32) -> u32 {
        a.min(b)
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use vector::{Ymm, YmmI, Zmm, ZmmI};

#[cfg(target_arch = "x86_64")]
mod vector {
    use super::Lanes;
    use std::arch::x86_64::{__m256, __m256i, __m512, __m512i};

    /// A shift count for the `s*_epi32` intrinsics (a constant: the compiler emits the
    /// immediate form; the immediate intrinsics take their count as `u32` in AVX-512 and `i32`
    /// in AVX2).
    #[inline(always)]
    fn count(s: u32) -> std::arch::x86_64::__m128i {
        // SAFETY: SSE2 is part of x86-64.
        unsafe { std::arch::x86_64::_mm_cvtsi32_si128(s as i32) }
    }

    /// One intrinsic per vector. The caller of every method runs with the vectors' instruction
    /// set enabled: the values exist only there (see [`Zmm`]).
    macro_rules! each {
        ($n:ident, |$l:ident| $e:expr) => {
            // SAFETY: the instruction set is enabled in the function these methods are inlined
            // into (the only place the vectors exist).
            std::array::from_fn::<_, $n, _>(|$l| unsafe { $e })
        };
    }

    /// [`Lanes`] on `N` vectors of one instruction set: `$p` names its intrinsics without
    /// their width prefix (the modules [`z`] and [`y`] below).
    macro_rules! lanes_on {
        ($doc:literal, $f:ident, $i:ident, $vf:ty, $vi:ty, $w:literal, $p:ident) => {
            #[doc = $doc]
            #[doc = ""]
            #[doc = "Only code compiled with that instruction set may hold one (the methods are"]
            #[doc = "inlined into it); `load` is unsafe for that reason."]
            #[derive(Clone, Copy)]
            pub(crate) struct $f<const N: usize>(pub(crate) [$vf; N]);

            /// The u32 lanes of the same vectors.
            #[derive(Clone, Copy)]
            pub(crate) struct $i<const N: usize>(pub(crate) [$vi; N]);

            impl<const N: usize> $i<N> {
                /// # Safety
                /// The instruction set must be available, and `p` valid for reading
                #[doc = concat!("`", $w, "·N` u32.")]
                #[inline(always)]
                pub(crate) unsafe fn load(p: *const u32) -> Self {
                    $i(each!(N, |l| $p::loadu_si(p.add($w * l).cast())))
                }
            }

            impl<const N: usize> $f<N> {
                /// # Safety
                /// The instruction set must be available, and `p` valid for writing
                #[doc = concat!("`", $w, "·N` f32.")]
                #[inline(always)]
                pub(crate) unsafe fn store(self, p: *mut f32) {
                    for (l, v) in self.0.iter().enumerate() {
                        // SAFETY: as the caller promised.
                        unsafe { $p::storeu_ps(p.add($w * l), *v) };
                    }
                }
            }

            impl<const N: usize> Lanes for $f<N> {
                type I = $i<N>;
                #[inline(always)]
                fn splat(x: f32) -> Self {
                    $f(each!(N, |_l| $p::set1_ps(x)))
                }
                #[inline(always)]
                fn splat_i(x: u32) -> $i<N> {
                    $i(each!(N, |_l| $p::set1_epi32(x as i32)))
                }
                #[inline(always)]
                fn mul(self, b: Self) -> Self {
                    $f(each!(N, |l| $p::mul_ps(self.0[l], b.0[l])))
                }
                #[inline(always)]
                fn sub(self, b: Self) -> Self {
                    $f(each!(N, |l| $p::sub_ps(self.0[l], b.0[l])))
                }
                #[inline(always)]
                fn fma(self, b: Self, c: Self) -> Self {
                    $f(each!(N, |l| $p::fmadd_ps(self.0[l], b.0[l], c.0[l])))
                }
                #[inline(always)]
                fn fnma(self, b: Self, c: Self) -> Self {
                    $f(each!(N, |l| $p::fnmadd_ps(self.0[l], b.0[l], c.0[l])))
                }
                #[inline(always)]
                fn div(self, b: Self) -> Self {
                    $f(each!(N, |l| $p::div_ps(self.0[l], b.0[l])))
                }
                #[inline(always)]
                fn min(self, b: Self) -> Self {
                    // vminps gives the first operand where it is less, else the second
                    $f(each!(N, |l| $p::min_ps(self.0[l], b.0[l])))
                }
                #[inline(always)]
                fn to_bits(self) -> $i<N> {
                    $i(each!(N, |l| $p::castps_si(self.0[l])))
                }
                #[inline(always)]
                fn from_bits(i: $i<N>) -> Self {
                    $f(each!(N, |l| $p::castsi_ps(i.0[l])))
                }
                #[inline(always)]
                fn from_u(i: $i<N>) -> Self {
                    $f(each!(N, |l| $p::cvtepi32_ps(i.0[l])))
                }
                #[inline(always)]
                fn sra_f<const S: u32>(i: $i<N>) -> Self {
                    $f(each!(N, |l| $p::cvtepi32_ps($p::sra_epi32(
                        i.0[l],
                        count(S)
                    ))))
                }
                #[inline(always)]
                fn shr<const S: u32>(i: $i<N>) -> $i<N> {
                    $i(each!(N, |l| $p::srl_epi32(i.0[l], count(S))))
                }
                #[inline(always)]
                fn shl<const S: u32>(i: $i<N>) -> $i<N> {
                    $i(each!(N, |l| $p::sll_epi32(i.0[l], count(S))))
                }
                #[inline(always)]
                fn and(a: $i<N>, b: $i<N>) -> $i<N> {
                    $i(each!(N, |l| $p::and_si(a.0[l], b.0[l])))
                }
                #[inline(always)]
                fn xor(a: $i<N>, b: $i<N>) -> $i<N> {
                    $i(each!(N, |l| $p::xor_si(a.0[l], b.0[l])))
                }
                #[inline(always)]
                fn add_i(a: $i<N>, b: $i<N>) -> $i<N> {
                    $i(each!(N, |l| $p::add_epi32(a.0[l], b.0[l])))
                }
                #[inline(always)]
                fn sub_i(a: $i<N>, b: $i<N>) -> $i<N> {
                    $i(each!(N, |l| $p::sub_epi32(a.0[l], b.0[l])))
                }
                #[inline(always)]
                fn min_i(a: $i<N>, b: $i<N>) -> $i<N> {
                    $i(each!(N, |l| $p::min_epu32(a.0[l], b.0[l])))
                }
            }
        };
    }

    /// The AVX-512 intrinsics the transform uses, without their prefix.
    mod z {
        pub(super) use std::arch::x86_64::{
            _mm512_add_epi32 as add_epi32, _mm512_and_si512 as and_si,
            _mm512_castps_si512 as castps_si, _mm512_castsi512_ps as castsi_ps,
            _mm512_cvtepi32_ps as cvtepi32_ps, _mm512_div_ps as div_ps,
            _mm512_fmadd_ps as fmadd_ps, _mm512_fnmadd_ps as fnmadd_ps,
            _mm512_loadu_si512 as loadu_si, _mm512_min_epu32 as min_epu32, _mm512_min_ps as min_ps,
            _mm512_mul_ps as mul_ps, _mm512_set1_epi32 as set1_epi32, _mm512_set1_ps as set1_ps,
            _mm512_sll_epi32 as sll_epi32, _mm512_sra_epi32 as sra_epi32,
            _mm512_srl_epi32 as srl_epi32, _mm512_storeu_ps as storeu_ps,
            _mm512_sub_epi32 as sub_epi32, _mm512_sub_ps as sub_ps, _mm512_xor_si512 as xor_si,
        };
    }

    /// The AVX2 and FMA intrinsics the transform uses, without their prefix.
    mod y {
        pub(super) use std::arch::x86_64::{
            _mm256_add_epi32 as add_epi32, _mm256_and_si256 as and_si,
            _mm256_castps_si256 as castps_si, _mm256_castsi256_ps as castsi_ps,
            _mm256_cvtepi32_ps as cvtepi32_ps, _mm256_div_ps as div_ps,
            _mm256_fmadd_ps as fmadd_ps, _mm256_fnmadd_ps as fnmadd_ps,
            _mm256_loadu_si256 as loadu_si, _mm256_min_epu32 as min_epu32, _mm256_min_ps as min_ps,
            _mm256_mul_ps as mul_ps, _mm256_set1_epi32 as set1_epi32, _mm256_set1_ps as set1_ps,
            _mm256_sll_epi32 as sll_epi32, _mm256_sra_epi32 as sra_epi32,
            _mm256_srl_epi32 as srl_epi32, _mm256_storeu_ps as storeu_ps,
            _mm256_sub_epi32 as sub_epi32, _mm256_sub_ps as sub_ps, _mm256_xor_si256 as xor_si,
        };
    }

    lanes_on!(
        "`N` AVX-512 vectors of f32.",
        Zmm,
        ZmmI,
        __m512,
        __m512i,
        16,
        z
    );
    lanes_on!("`N` AVX2 vectors of f32.", Ymm, YmmI, __m256, __m256i, 8, y);
}
