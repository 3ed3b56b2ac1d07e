//! The arithmetic of the sampler's f32 transform, on one number or on several AVX-512 vectors
//! at once.
//!
//! The transform is written once, generic over [`Lanes`]. On `f32` it is the reference that the
//! portable and AVX2 builds vectorise by themselves. On [`Zmm`] it runs `N` vectors of 16
//! lanes side by side, operation by operation: each step of the formula is issued for all `N`
//! vectors before the next, so the processor always has `N` independent operations at hand.
//! Left to the compiler, the AVX-512 loop held one vector at a time and waited on its chains
//! of dependent operations about a third of the time.
//!
//! Every method is one IEEE operation (or one integer operation) with the same rounding on
//! both sides, so both give the same bits.

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
pub(crate) use zmm::{Zmm, ZmmI};

#[cfg(target_arch = "x86_64")]
mod zmm {
    use super::Lanes;
    use std::arch::x86_64::*;

    /// `N` AVX-512 vectors of f32. Only code compiled with AVX-512 enabled may make one (the
    /// methods are inlined into it); [`Zmm::load`] is unsafe for that reason.
    #[derive(Clone, Copy)]
    pub(crate) struct Zmm<const N: usize>(pub(crate) [__m512; N]);

    /// `N` AVX-512 vectors of u32.
    #[derive(Clone, Copy)]
    pub(crate) struct ZmmI<const N: usize>(pub(crate) [__m512i; N]);

    /// One intrinsic per vector. The caller of every method runs with AVX-512 enabled: the
    /// values exist only there (see [`Zmm`]).
    macro_rules! each {
        ($n:ident, |$l:ident| $e:expr) => {
            // SAFETY: AVX-512F is enabled in the function these methods are inlined into.
            std::array::from_fn::<_, $n, _>(|$l| unsafe { $e })
        };
    }

    impl<const N: usize> ZmmI<N> {
        /// # Safety
        /// AVX-512F must be available, and `p` valid for reading `16·N` u32.
        #[inline(always)]
        pub(crate) unsafe fn load(p: *const u32) -> Self {
            ZmmI(each!(N, |l| _mm512_loadu_si512(p.add(16 * l).cast())))
        }
    }

    impl<const N: usize> Zmm<N> {
        /// # Safety
        /// AVX-512F must be available, and `p` valid for writing `16·N` f32.
        #[inline(always)]
        pub(crate) unsafe fn store(self, p: *mut f32) {
            for (l, v) in self.0.iter().enumerate() {
                // SAFETY: as the caller promised.
                unsafe { _mm512_storeu_ps(p.add(16 * l), *v) };
            }
        }
    }

    impl<const N: usize> Lanes for Zmm<N> {
        type I = ZmmI<N>;
        #[inline(always)]
        fn splat(x: f32) -> Self {
            Zmm(each!(N, |_l| _mm512_set1_ps(x)))
        }
        #[inline(always)]
        fn splat_i(x: u32) -> ZmmI<N> {
            ZmmI(each!(N, |_l| _mm512_set1_epi32(x as i32)))
        }
        #[inline(always)]
        fn mul(self, b: Self) -> Self {
            Zmm(each!(N, |l| _mm512_mul_ps(self.0[l], b.0[l])))
        }
        #[inline(always)]
        fn sub(self, b: Self) -> Self {
            Zmm(each!(N, |l| _mm512_sub_ps(self.0[l], b.0[l])))
        }
        #[inline(always)]
        fn fma(self, b: Self, c: Self) -> Self {
            Zmm(each!(N, |l| _mm512_fmadd_ps(self.0[l], b.0[l], c.0[l])))
        }
        #[inline(always)]
        fn fnma(self, b: Self, c: Self) -> Self {
            Zmm(each!(N, |l| _mm512_fnmadd_ps(self.0[l], b.0[l], c.0[l])))
        }
        #[inline(always)]
        fn div(self, b: Self) -> Self {
            Zmm(each!(N, |l| _mm512_div_ps(self.0[l], b.0[l])))
        }
        #[inline(always)]
        fn min(self, b: Self) -> Self {
            // vminps gives the first operand where it is less, else the second
            Zmm(each!(N, |l| _mm512_min_ps(self.0[l], b.0[l])))
        }
        #[inline(always)]
        fn to_bits(self) -> ZmmI<N> {
            ZmmI(each!(N, |l| _mm512_castps_si512(self.0[l])))
        }
        #[inline(always)]
        fn from_bits(i: ZmmI<N>) -> Self {
            Zmm(each!(N, |l| _mm512_castsi512_ps(i.0[l])))
        }
        #[inline(always)]
        fn from_u(i: ZmmI<N>) -> Self {
            Zmm(each!(N, |l| _mm512_cvtepi32_ps(i.0[l])))
        }
        #[inline(always)]
        fn sra_f<const S: u32>(i: ZmmI<N>) -> Self {
            Zmm(each!(N, |l| _mm512_cvtepi32_ps(_mm512_srai_epi32::<S>(
                i.0[l]
            ))))
        }
        #[inline(always)]
        fn shr<const S: u32>(i: ZmmI<N>) -> ZmmI<N> {
            ZmmI(each!(N, |l| _mm512_srli_epi32::<S>(i.0[l])))
        }
        #[inline(always)]
        fn shl<const S: u32>(i: ZmmI<N>) -> ZmmI<N> {
            ZmmI(each!(N, |l| _mm512_slli_epi32::<S>(i.0[l])))
        }
        #[inline(always)]
        fn and(a: ZmmI<N>, b: ZmmI<N>) -> ZmmI<N> {
            ZmmI(each!(N, |l| _mm512_and_si512(a.0[l], b.0[l])))
        }
        #[inline(always)]
        fn xor(a: ZmmI<N>, b: ZmmI<N>) -> ZmmI<N> {
            ZmmI(each!(N, |l| _mm512_xor_si512(a.0[l], b.0[l])))
        }
        #[inline(always)]
        fn add_i(a: ZmmI<N>, b: ZmmI<N>) -> ZmmI<N> {
            ZmmI(each!(N, |l| _mm512_add_epi32(a.0[l], b.0[l])))
        }
        #[inline(always)]
        fn sub_i(a: ZmmI<N>, b: ZmmI<N>) -> ZmmI<N> {
            ZmmI(each!(N, |l| _mm512_sub_epi32(a.0[l], b.0[l])))
        }
        #[inline(always)]
        fn min_i(a: ZmmI<N>, b: ZmmI<N>) -> ZmmI<N> {
            ZmmI(each!(N, |l| _mm512_min_epu32(a.0[l], b.0[l])))
        }
    }
}
