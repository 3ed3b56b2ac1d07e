//! Activations' derivatives for the executor's passes: the first for the reverse pass and the
//! tangent map, the second for the R-operator's second-order reverse.

use crate::model::linear;
use crate::model::spec::Activation;
use candle_core::{Result, Tensor};

/// `g·f'(z)`: the gradient of an activation's input from its output's.
pub(super) fn back(act: Activation, g: &Tensor, z: &Tensor, a: &Tensor) -> Result<Tensor> {
    match act {
        Activation::Relu => linear::relu_back(g, a),
        _ => g * derivative(act, z, a)?,
    }
}

const GELU_C: f64 = 0.797_884_560_802_865_4; // √(2/π)
const GELU_K: f64 = 0.044715;

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

/// `f''(z)`.
pub(super) fn second_derivative(act: Activation, z: &Tensor, a: &Tensor) -> Result<Option<Tensor>> {
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
