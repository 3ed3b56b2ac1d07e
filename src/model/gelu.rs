//! GELU (tanh approximation) on the CPU in single passes that keep `t = tanh(u)`,
//! `u = c·(z + k·z³)`, for the derivatives, so the reverse pass and the R-operator evaluate no
//! power or tanh again. Each element goes through the same f32 (or f64) operations, in the
//! same order, as the candle-op formulas in [`crate::model::Activation::apply`] and the tape's
//! derivatives (candle's `x * s` is `x·s + 0`, `x + s` is `x·1 + s`, `s − x` is `x·(−1) + s`),
//! so the values are the same bits (tested). With [`Tanh::Portable`] the cube is `z·z·z` and
//! tanh is [`crate::model::tanh`]'s, vectorised for the CPU's widest instruction set.

use super::cpu::{f32_or_f64, view};
use super::spec::Tanh;
use super::tanh::PortableTanh;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, WithDType};

/// `k` of GELU's cubic term.
pub const K: f64 = 0.044715;
/// `c = √(2/π)`.
pub const C: f64 = 0.797_884_560_802_865_4;

/// The float operations the kernels need, per type.
trait Float: WithDType + num_traits::Float + PortableTanh {
    /// candle's affine: `v·mul + add` with the constants rounded to the type first.
    #[inline(always)]
    fn aff(self, mul: f64, add: f64) -> Self {
        self * Self::from_f64(mul) + Self::from_f64(add)
    }
}

impl Float for f32 {}
impl Float for f64 {}

/// `(a, t)`: GELU of `z` and `tanh(u)`, as `Activation::apply` computes them.
#[inline(always)]
fn forward<T: Float>(z: T) -> (T, T) {
    let cube = z.powf(T::from_f64(3.0));
    let inner = (z + cube.aff(K, 0.0)).aff((2.0 / std::f64::consts::PI).sqrt(), 0.0);
    let t = inner.tanh();
    (z.aff(0.5, 0.0) * t.aff(1.0, 1.0), t)
}

/// [`forward`] with `z·z·z` and the portable tanh.
#[inline(always)]
fn forward_portable<T: Float>(z: T) -> (T, T) {
    let cube = z * z * z;
    let inner = (z + cube.aff(K, 0.0)).aff((2.0 / std::f64::consts::PI).sqrt(), 0.0);
    let t = inner.portable_tanh();
    (z.aff(0.5, 0.0) * t.aff(1.0, 1.0), t)
}

#[inline(always)]
fn forward_portable_chunk<T: Float>(x: &[T], a: &mut [T], t: &mut [T]) {
    for ((a, t), &z) in a.iter_mut().zip(t.iter_mut()).zip(x) {
        (*a, *t) = forward_portable(z);
    }
}

crate::simd::multiversion!(fn forward_portable_best<T: Float>(x: &[T], a: &mut [T], t: &mut [T]) -> () = forward_portable_chunk);

/// `u' = c·(1 + 3k·z²)`, as the tape's `gelu_parts` computes it.
#[inline(always)]
fn du<T: Float>(z: T) -> T {
    (z * z).aff(3.0 * K, 0.0).aff(1.0, 1.0).aff(C, 0.0)
}

/// `f'(z) = ½(1 + t) + ½z·(1 − t²)·u'`.
#[inline(always)]
fn first<T: Float>(z: T, t: T) -> T {
    let sech2 = (t * t).aff(-1.0, 1.0);
    t.aff(1.0, 1.0).aff(0.5, 0.0) + z.aff(0.5, 0.0) * (sech2 * du(z))
}

/// `f''(z) = (1 − t²)·u' − z·t·(1 − t²)·u'² + ½z·(1 − t²)·u''`, `u'' = 6kc·z`.
#[inline(always)]
fn second<T: Float>(z: T, t: T) -> T {
    let sech2 = (t * t).aff(-1.0, 1.0);
    let d = du(z);
    let ddu = z.aff(6.0 * K * C, 0.0);
    let a1 = sech2 * d;
    let a2 = (z * t) * (sech2 * (d * d));
    let a3 = z.aff(0.5, 0.0) * (sech2 * ddu);
    (a1 - a2) + a3
}

/// Elements per parallel chunk.
const CHUNK: usize = 1 << 13;

struct Forward(Tanh);

impl CustomOp1 for Forward {
    fn name(&self) -> &'static str {
        "ahtsgd-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let portable = self.0 == Tanh::Portable;
        fn go<T: Float>(x: &[T], l: &Layout, portable: bool) -> Vec<T> {
            use rayon::prelude::*;
            let x = view(x, l);
            let n = x.len();
            let mut out = vec![T::zero(); 2 * n];
            let (a, t) = out.split_at_mut(n);
            a.par_chunks_mut(CHUNK)
                .zip(t.par_chunks_mut(CHUNK))
                .zip(x.par_chunks(CHUNK))
                .for_each(|((a, t), x)| {
                    if portable {
                        forward_portable_best(x, a, t);
                    } else {
                        for ((a, t), &z) in a.iter_mut().zip(t.iter_mut()).zip(x) {
                            (*a, *t) = forward(z);
                        }
                    }
                });
            out
        }
        let out = f32_or_f64!(self.name(), s, |x| go(x, l, portable));
        let mut dims = vec![2];
        dims.extend(l.dims());
        Ok((out, Shape::from(dims)))
    }
}

/// `f'` (`second`: `f''`) from `z` and `t`.
struct Derivative {
    second: bool,
}

impl CustomOp2 for Derivative {
    fn name(&self) -> &'static str {
        "ahtsgd-gelu-derivative"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let second = self.second;
        let out = f32_or_f64!(self.name(), s1, s2, |z, t| pair(
            &view(z, l1),
            &view(t, l2),
            second
        ));
        Ok((out, l1.shape().clone()))
    }
}

type Out<T> = [std::mem::MaybeUninit<T>];

#[inline(always)]
fn first_chunk<T: Float>(z: &[T], t: &[T], o: &mut Out<T>) {
    for ((o, &z), &t) in o.iter_mut().zip(z).zip(t) {
        o.write(first(z, t));
    }
}

#[inline(always)]
fn second_chunk<T: Float>(z: &[T], t: &[T], o: &mut Out<T>) {
    for ((o, &z), &t) in o.iter_mut().zip(z).zip(t) {
        o.write(second(z, t));
    }
}

// IEEE additions and multiplications alone: the same bits on every instruction set
crate::simd::multiversion!(fn first_best<T: Float>(z: &[T], t: &[T], o: &mut Out<T>) -> () = first_chunk);
crate::simd::multiversion!(fn second_best<T: Float>(z: &[T], t: &[T], o: &mut Out<T>) -> () = second_chunk);

fn pair<T: Float>(z: &[T], t: &[T], second: bool) -> Vec<T> {
    super::cpu::map_chunks(z, CHUNK, |i, z, o| {
        let t = &t[i * CHUNK..];
        if second {
            second_best(z, t, o);
        } else {
            first_best(z, t, o);
        }
    })
}

/// Whether the kernels run on `z` (a CPU tensor of f32 or f64).
pub fn runs_on(z: &Tensor) -> bool {
    z.device().is_cpu() && matches!(z.dtype(), candle_core::DType::F32 | candle_core::DType::F64)
}

/// GELU of `z` and `t = tanh(u)`, in one pass (CPU, f32 or f64), tanh as `tanh` says.
pub fn forward_keep(z: &Tensor, tanh: Tanh) -> Result<(Tensor, Tensor)> {
    let both = z.detach().apply_op1_no_bwd(&Forward(tanh))?;
    Ok((both.get(0)?, both.get(1)?))
}

/// `f'(z)` from `z` and the kept `t`.
pub fn derivative(z: &Tensor, t: &Tensor) -> Result<Tensor> {
    z.apply_op2_no_bwd(t, &Derivative { second: false })
}

/// `f''(z)` from `z` and the kept `t`.
pub fn second_derivative(z: &Tensor, t: &Tensor) -> Result<Tensor> {
    z.apply_op2_no_bwd(t, &Derivative { second: true })
}
