//! Activations' derivatives for the executor's passes: the first for the reverse pass and the
//! tangent map, the second for the R-operator's second-order reverse.

use crate::model::linear;
use crate::model::spec::Activation;
use candle_core::{Result, Tensor};

/// `g·f'(z)`: the gradient of an activation's input from its output's; `t`: GELU's kept
/// tanh(u), where its kernels ran.
pub(super) fn back(
    act: Activation,
    g: &Tensor,
    z: &Tensor,
    a: &Tensor,
    t: Option<&Tensor>,
) -> Result<Tensor> {
    match (act, t) {
        (Activation::Relu, _) => linear::relu_back(g, a),
        (Activation::Gelu, Some(t)) => g * crate::model::gelu::derivative(z, t)?,
        _ => g * derivative(act, z, a)?,
    }
}

use crate::model::gelu::{C as GELU_C, K as GELU_K};

/// `f'(z)`, from the input `z` and the output `a = f(z)`.
fn derivative(act: Activation, z: &Tensor, a: &Tensor) -> Result<Tensor> {
    match act {
        Activation::Relu => a.gt(0.0)?.to_dtype(a.dtype()),
        // 1 − a²
        Activation::Tanh => 1.0 - a.sqr()?,
        // s(1 − s)
        Activation::Sigmoid => a * (1.0 - a)?,
        // s + z·s(1 − s)
        Activation::Silu => {
            let s = crate::model::sigmoid(z)?;
            let ds = (&s * (1.0 - &s)?)?;
            s + (z * ds)?
        }
        Activation::Gelu => {
            let (t, du) = gelu_parts(z)?;
            let sech2 = (1.0 - t.sqr()?)?;
            ((t + 1.0)? * 0.5)? + ((z * 0.5)? * (sech2 * du)?)?
        }
    }
}

/// tanh(u) and u' for GELU's `u = c(z + k z³)`.
fn gelu_parts(z: &Tensor) -> Result<(Tensor, Tensor)> {
    let u = ((z + (z.powf(3.0)? * GELU_K)?)? * GELU_C)?;
    let du = (((z.sqr()? * (3.0 * GELU_K))? + 1.0)? * GELU_C)?;
    Ok((u.tanh()?, du))
}

/// `f''(z)`; `t` as for [`back`].
pub(super) fn second_derivative(
    act: Activation,
    z: &Tensor,
    a: &Tensor,
    t: Option<&Tensor>,
) -> Result<Option<Tensor>> {
    if let (Activation::Gelu, Some(t)) = (act, t) {
        return crate::model::gelu::second_derivative(z, t).map(Some);
    }
    Ok(Some(match act {
        Activation::Relu => return Ok(None),
        // −2a(1 − a²)
        Activation::Tanh => ((a * -2.0)? * (1.0 - a.sqr()?)?)?,
        // s(1 − s)(1 − 2s)
        Activation::Sigmoid => {
            let ds = (a * (1.0 - a)?)?;
            (ds * (1.0 - (a * 2.0)?)?)?
        }
        // s(1 − s)(2 + z(1 − 2s))
        Activation::Silu => {
            let s = crate::model::sigmoid(z)?;
            let ds = (&s * (1.0 - &s)?)?;
            let one_minus_2s = (1.0 - (&s * 2.0)?)?;
            (ds * ((z * one_minus_2s)? + 2.0)?)?
        }
        // (1 − t²)·u' − z·t(1 − t²)·u'² + ½z(1 − t²)·u''
        Activation::Gelu => {
            let (t, du) = gelu_parts(z)?;
            let sech2 = (1.0 - t.sqr()?)?;
            let ddu = (z * (6.0 * GELU_K * GELU_C))?;
            let a1 = (&sech2 * &du)?;
            let a2 = ((z * &t)? * (&sech2 * du.sqr()?)?)?;
            let a3 = ((z * 0.5)? * (&sech2 * ddu)?)?;
            ((a1 - a2)? + a3)?
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Tanh;
    use crate::model::tanh::PortableTanh;
    use candle_core::{DType, Device};

    /// Portable GELU: the kernel (vectorised for this CPU) gives the bits of the scalar
    /// formula `½z(1 + tanh(c(z + k·z·z·z)))` with the portable tanh compiled for the
    /// baseline, keeps that tanh, and lies within 4 ulp of the C library's GELU (f32).
    #[test]
    fn portable_gelu_is_the_scalar_formula() {
        let v: Vec<f32> = (0..20_001).map(|i| -12.0 + 0.0012 * i as f32).collect();
        let z = Tensor::new(v.as_slice(), &Device::Cpu).unwrap();
        let (a, t) = crate::model::gelu::forward_keep(&z, Tanh::Portable).unwrap();
        let (a, t) = (a.to_vec1::<f32>().unwrap(), t.to_vec1::<f32>().unwrap());
        let system = Activation::Gelu.apply(&z, Tanh::System).unwrap();
        let system = system.to_vec1::<f32>().unwrap();
        let via_apply = Activation::Gelu.apply(&z, Tanh::Portable).unwrap();
        assert_eq!(via_apply.to_vec1::<f32>().unwrap(), a);
        let (k, c) = (GELU_K as f32, GELU_C as f32);
        for (i, &x) in v.iter().enumerate() {
            let tt = std::hint::black_box((x + (x * x * x) * k + 0.0) * c + 0.0).portable_tanh();
            let want = (x * 0.5 + 0.0) * (tt * 1.0 + 1.0);
            assert_eq!(t[i].to_bits(), tt.to_bits(), "tanh at {x}");
            assert_eq!(a[i].to_bits(), want.to_bits(), "gelu at {x}");
            let ulps = (a[i].to_bits() as i64 - system[i].to_bits() as i64).abs();
            assert!(
                ulps <= 4 || (a[i] - system[i]).abs() < 1e-7,
                "{x}: {} vs {}",
                a[i],
                system[i]
            );
        }
    }

    /// GELU's CPU kernels give the same bits as the candle-op formulas they replace, in f32
    /// and f64, over values from −12 to 12 (both tails, the kink-free middle) and zeros.
    #[test]
    fn gelu_kernels_match_the_op_formulas_bit_for_bit() {
        for dtype in [DType::F32, DType::F64] {
            let mut v: Vec<f64> = (0..4001).map(|i| -12.0 + 0.006 * i as f64).collect();
            v.extend([0.0, -0.0, 1e-30, -1e-30, 37.5, -37.5]);
            let z = Tensor::new(v.as_slice(), &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let bits = |t: &Tensor| -> Vec<u64> {
                t.to_dtype(DType::F64)
                    .unwrap()
                    .to_vec1::<f64>()
                    .unwrap()
                    .iter()
                    .map(|x| x.to_bits())
                    .collect()
            };
            let a = Activation::Gelu.apply(&z, Tanh::System).unwrap();
            let (ka, kt) = crate::model::gelu::forward_keep(&z, Tanh::System).unwrap();
            assert_eq!(bits(&ka), bits(&a), "{dtype:?} forward");
            assert_eq!(
                bits(&kt),
                bits(&gelu_parts(&z).unwrap().0),
                "{dtype:?} tanh"
            );
            let g = z.ones_like().unwrap();
            assert_eq!(
                bits(&back(Activation::Gelu, &g, &z, &a, Some(&kt)).unwrap()),
                bits(&back(Activation::Gelu, &g, &z, &a, None).unwrap()),
                "{dtype:?} derivative"
            );
            let second = |t| {
                second_derivative(Activation::Gelu, &z, &a, t)
                    .unwrap()
                    .unwrap()
            };
            assert_eq!(
                bits(&second(Some(&kt))),
                bits(&second(None)),
                "{dtype:?} second"
            );
        }
    }
}
