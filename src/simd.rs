//! The best vector instruction set for a kernel, chosen at run time.
//!
//! The crate is compiled for the baseline x86-64 (SSE2), so that the binary runs anywhere; the
//! GEMMs and the sampler detect AVX2 and AVX-512 themselves. The crate's `multiversion!` macro
//! gives the element-wise kernels the same: one copy of a kernel per instruction set, each
//! compiled with its features, the best one run. Rust never contracts a multiply and an add
//! into an FMA on its own, so the results are the same bits on every instruction set (a
//! tested property: `AHTSGD_SIMD` picks a narrower set, see [`level`]).

/// Which vector instruction set to compile a kernel for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Avx512,
    Avx2,
    Baseline,
}

/// The widest instruction set this CPU has, or a narrower one named by the environment
/// variable `AHTSGD_SIMD` (`avx2` or `baseline`), to measure or check the other kernels on one
/// machine. Decided once; later calls are a load.
#[inline(always)]
pub fn level() -> Level {
    static LEVEL: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        let detected = detect();
        match std::env::var(ENV).as_deref() {
            Ok("baseline") => Level::Baseline,
            Ok("avx2") if detected != Level::Baseline => Level::Avx2,
            _ => detected,
        }
    })
}

/// The environment variable that caps [`level`].
pub const ENV: &str = "AHTSGD_SIMD";

/// The values [`ENV`] may take.
pub const ENV_VALUES: [&str; 3] = ["avx512", "avx2", "baseline"];

fn detect() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512vl")
        {
            return Level::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Level::Avx2;
        }
    }
    Level::Baseline
}

/// Defines `$name`, which runs the `#[inline(always)]` function `$kernel` compiled for
/// [`level`]: one copy per instruction set, each a `#[target_feature]` function into which the
/// kernel is inlined.
macro_rules! multiversion {
    ($vis:vis fn $name:ident<$t:ident: $bound:path>($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty = $kernel:ident) => {
        $vis fn $name<$t: $bound>($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512dq,avx512vl,avx2,fma")]
            fn avx512<$t: $bound>($($arg: $ty),*) -> $ret {
                $kernel($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            fn avx2<$t: $bound>($($arg: $ty),*) -> $ret {
                $kernel($($arg),*)
            }
            match $crate::simd::level() {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the features were detected at run time.
                $crate::simd::Level::Avx512 => unsafe { avx512($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above.
                $crate::simd::Level::Avx2 => unsafe { avx2($($arg),*) },
                _ => $kernel($($arg),*),
            }
        }
    };
}
pub(crate) use multiversion;
