//! Sampling text from a recorded byte-level language model (a trial on `text` data): the
//! prompt's bytes, then one byte at a time from the softmax of the model's logits at the last
//! position (divided by the temperature), each step reading at most the model's context.

use super::{RunError, device, dtype_of, model_spec_for, restore_recorded};
use crate::model::{Model, norm::Mode};
use crate::plan::Trial;
use candle_core::{D, DType, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;

/// How to sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// Bytes to generate after the prompt.
    pub tokens: usize,
    /// Logits are divided by it; 0 takes the most likely byte each time.
    pub temperature: f64,
    /// Seed of the draws: the same model, prompt and seed give the same text.
    pub seed: u64,
}

/// The bytes a recorded language model writes after `prompt` (the prompt not included).
pub fn generate(
    trial: &Trial,
    dir: &Path,
    prompt: &[u8],
    s: &Sampling,
) -> Result<Vec<u8>, RunError> {
    let c = &trial.config;
    let data = c.obj("data");
    if data.kind != "text" {
        return Err(RunError::Generate(format!(
            "the trial trained on `{}` data; text is sampled from a language model trained on `text` data",
            data.kind
        )));
    }
    if !(s.temperature >= 0.0 && s.temperature.is_finite()) {
        return Err(RunError::Generate(format!(
            "temperature {} must be 0 (the most likely byte) or more",
            s.temperature
        )));
    }
    let dev = device(c.str("device"))?;
    let dtype = dtype_of(c);
    let context = data.usize("context");
    let model = Model::build(&model_spec_for(c, &[context], 256)?, dtype, &dev, 0)?;
    restore_recorded(&model, dir, dtype, &dev)?;
    let mut rng = ChaCha8Rng::seed_from_u64(s.seed);
    let mut text: Vec<u8> = prompt.to_vec();
    if text.is_empty() {
        // a model reads at least one byte: an empty prompt starts from a newline
        text.push(b'\n');
    }
    let mut out = Vec::with_capacity(s.tokens);
    for _ in 0..s.tokens {
        let window = &text[text.len().saturating_sub(context)..];
        let ids: Vec<f32> = window.iter().map(|&b| f32::from(b)).collect();
        let x = Tensor::from_vec(ids, (1, window.len()), &dev)?.to_dtype(dtype)?;
        let logits = model.forward_mode(&x, Mode::Eval)?;
        let last = logits
            .narrow(1, window.len() - 1, 1)?
            .flatten_all()?
            .to_dtype(DType::F64)?;
        let byte = if s.temperature == 0.0 {
            last.argmax(D::Minus1)?.to_scalar::<u32>()? as u8
        } else {
            draw(&last.to_vec1::<f64>()?, s.temperature, &mut rng)
        };
        text.push(byte);
        out.push(byte);
    }
    Ok(out)
}

/// A byte drawn from `softmax(logits / temperature)` by inverting its cumulative sum.
fn draw(logits: &[f64], temperature: f64, rng: &mut ChaCha8Rng) -> u8 {
    let m = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = logits
        .iter()
        .map(|&z| ((z - m) / temperature).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut u = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if u < *w {
            return i as u8;
        }
        u -= w;
    }
    (weights.len() - 1) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Draws follow softmax(z / T): a chi-square test of 20,000 draws over four bytes (fixed
    /// seed), and a low temperature concentrates them on the largest logit.
    #[test]
    fn draws_follow_the_tempered_softmax() {
        let logits = [0.0, 1.0, 2.0, -1.0];
        let t = 1.5;
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let n = 20_000;
        let mut counts = [0usize; 4];
        for _ in 0..n {
            counts[draw(&logits, t, &mut rng) as usize] += 1;
        }
        let w: Vec<f64> = logits.iter().map(|z| (z / t).exp()).collect();
        let total: f64 = w.iter().sum();
        let chi2: f64 = counts
            .iter()
            .zip(&w)
            .map(|(&c, wi)| {
                let e = n as f64 * wi / total;
                (c as f64 - e).powi(2) / e
            })
            .sum();
        // 3 degrees of freedom: the 0.999 quantile is 16.27
        assert!(chi2 < 16.27, "chi-square {chi2}: {counts:?}");
        let cold = (0..1000)
            .filter(|_| draw(&logits, 0.05, &mut rng) == 2)
            .count();
        assert!(cold > 990, "{cold}");
    }
}
