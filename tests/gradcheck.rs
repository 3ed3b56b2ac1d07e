//! Random valid stacks of every layer kind, each checked by `model::gradcheck` against
//! finite differences: gradients (with dropout off and on) and H·v, on random inputs. 24
//! cases from a fixed seed; `GRADCHECK_CASES=N` runs more (300 passed when it was written).

use ahtsgd::check::{Options as CheckOptions, check_text};
use ahtsgd::model::Model;
use ahtsgd::model::gradcheck::{self, Options};
use candle_core::{DType, Device};
use proptest::prelude::*;

/// One layer of a random stack, written for a sample of `shape`, and the shape after it;
/// `None` where the kind does not fit.
fn layer(
    kind: u8,
    width: usize,
    k: usize,
    stride: usize,
    shape: &[usize],
) -> Option<(String, Vec<usize>)> {
    let image = shape.len() == 3;
    Some(match kind % 12 {
        0 if image => {
            let (h, w) = (shape[1], shape[2]);
            let pad = k / 2;
            if h + 2 * pad < k || w + 2 * pad < k {
                return None;
            }
            let out = |n: usize| (n + 2 * pad - k) / stride + 1;
            (
                format!("conv({width}, {k}, stride = {stride}, padding = {pad})"),
                vec![width, out(h), out(w)],
            )
        }
        1 if image && shape[1] >= k && shape[2] >= k => (
            format!("max_pool({k}, stride = {stride})"),
            vec![
                shape[0],
                (shape[1] - k) / stride + 1,
                (shape[2] - k) / stride + 1,
            ],
        ),
        2 if image && shape[1] >= 2 && shape[2] >= 2 => (
            "avg_pool(2)".into(),
            vec![shape[0], shape[1] / 2, shape[2] / 2],
        ),
        3 => ("batch_norm".into(), shape.to_vec()),
        4 if !image => ("layer_norm".into(), shape.to_vec()),
        5 => ("tanh".into(), shape.to_vec()),
        6 => ("leaky_relu(0.2)".into(), shape.to_vec()),
        7 => ("dropout(0.3)".into(), shape.to_vec()),
        8 if !image => (format!("linear({width})"), vec![width]),
        9 if image => ("global_avg_pool".into(), vec![shape[0]]),
        10 => ("silu".into(), shape.to_vec()),
        11 => {
            let body = if image {
                format!("[conv({}, 3, padding = 1), batch_norm, gelu]", shape[0])
            } else {
                format!("[linear({}), sigmoid]", shape[0])
            };
            (format!("residual({body})"), shape.to_vec())
        }
        _ => return None,
    })
}

fn stack(choices: &[(u8, usize, usize, usize)]) -> String {
    let mut shape = vec![2, 6, 6];
    let mut layers = Vec::new();
    for &(kind, width, k, stride) in choices {
        if let Some((text, next)) = layer(kind, width, k, stride, &shape) {
            layers.push(text);
            shape = next;
        }
    }
    if shape.len() == 3 {
        layers.push("flatten".into());
    }
    layers.push("linear(classes)".into());
    format!("[{}]", layers.join(", "))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: std::env::var("GRADCHECK_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24), rng_seed: proptest::test_runner::RngSeed::Fixed(2026), failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn random_stacks_pass_gradcheck(
        choices in prop::collection::vec((0u8..12, 2usize..5, 1usize..4, 1usize..3), 1..6),
        seed in 0u64..1000,
    ) {
        let stack = stack(&choices);
        let text = format!(
            "model m = layers {{ stack = {stack} }}\nexperiment e {{ data = arrays {{ path = \"-\", shape = [2, 6, 6], classes = 3 }}, model = m, optimizer = sgd {{ lr = 0.1 }}, epochs = 1 }}\n"
        );
        let checked = check_text("random.aht", &text, &CheckOptions::default());
        let plan = checked.plan.expect("random stacks are valid by construction");
        let spec = ahtsgd::check::model::lower(plan.trials[0].config.obj("model"), &[2, 6, 6], 3)
            .expect("lays out");
        let m = Model::build(&spec, DType::F64, &Device::Cpu, seed).unwrap();
        let o = Options { seed, ..Options::default() };
        let r = gradcheck::check(
            &m,
            |i| gradcheck::synthetic_batch(&[2, 6, 6], 3, 4, seed * 100 + i as u64),
            &o,
        )
        .unwrap();
        let (g, t, h) = r.worst();
        prop_assert!(g <= 1e-4 && t <= 1e-4 && h <= 1e-4, "{stack}: {g:e} {t:e} {h:e} ({:?})", r);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: std::env::var("GRADCHECK_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(12), rng_seed: proptest::test_runner::RngSeed::Fixed(2027), failure_persistence: None, ..ProptestConfig::default() })]
    /// An embedding of token ids, then random flat layers: its table's gradient is a
    /// scatter-add of rows and its H·v part a gather, both against finite differences.
    #[test]
    fn token_stacks_pass_gradcheck(
        dim in 2usize..5,
        choices in prop::collection::vec((0u8..12, 2usize..5), 0..4),
        seed in 0u64..1000,
    ) {
        let mut shape = vec![4 * dim];
        let mut layers = vec![format!("embedding({dim})"), "flatten".into()];
        for &(kind, width) in &choices {
            if let Some((text, next)) = layer(kind, width, 1, 1, &shape) {
                layers.push(text);
                shape = next;
            }
        }
        layers.push("linear(vocab)".into());
        let stack = layers.join(", ");
        let text = format!(
            "version = 2\nmodel m = layers {{ stack = [{stack}] }}\nexperiment e {{ data = modular {{ p = 5 }}, model = m, optimizer = sgd {{ lr = 0.1 }}, epochs = 1 }}\n"
        );
        let checked = check_text("tokens.aht", &text, &CheckOptions::default());
        let plan = checked.plan.expect("token stacks are valid by construction");
        let spec = ahtsgd::check::model::lower_for(plan.trials[0].config.obj("model"), &[4], 7, Some(ahtsgd::check::model::Tokens { vocab: 7, every_position: false }))
            .expect("lays out");
        let m = Model::build(&spec, DType::F64, &Device::Cpu, seed).unwrap();
        let o = Options { seed, ..Options::default() };
        let r = gradcheck::check(&m, |i| gradcheck::token_batch(4, 7, 6, false, seed * 100 + i as u64), &o)
            .unwrap();
        let (g, t, h) = r.worst();
        prop_assert!(g <= 1e-4 && t <= 1e-4 && h <= 1e-4, "{stack}: {g:e} {t:e} {h:e} ({:?})", r);
    }
}

/// One layer of a random sequence stack on `[tokens, dim]`, which keeps that shape.
fn token_layer(kind: u8, dim: usize, heads: usize) -> String {
    match kind % 7 {
        0 => format!("residual([layer_norm, attention({heads})])"),
        1 => format!("attention({heads}, causal = false)"),
        2 => format!(
            "residual([layer_norm, linear({}), gelu, linear({dim})])",
            2 * dim
        ),
        3 => "layer_norm".into(),
        4 => format!("attention({heads}, bias = false)"),
        5 => "tanh".into(),
        _ => format!("linear({dim})"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: std::env::var("GRADCHECK_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(12), rng_seed: proptest::test_runner::RngSeed::Fixed(2028), failure_persistence: None, ..ProptestConfig::default() })]
    /// Random transformer-like stacks (embedding, positions, attention with and without the
    /// causal mask and biases, per-token linear and layer norm, GELU), read out at the last
    /// position, at every position, through a mean over tokens, or by a tied output layer:
    /// gradients and H·v against finite differences.
    #[test]
    fn sequence_stacks_pass_gradcheck(
        heads in 1usize..3,
        per_head in 1usize..3,
        choices in prop::collection::vec(0u8..7, 1..4),
        ending in 0u8..4,
        seed in 0u64..1000,
    ) {
        let dim = heads * per_head;
        let mut layers = vec![format!("embedding({dim})"), format!("positions({dim})")];
        layers.extend(choices.iter().map(|&k| token_layer(k, dim, heads)));
        let every_position = ending == 1;
        layers.push(match ending {
            0 | 1 => "linear(vocab)".into(),
            2 => "mean_over_tokens, linear(vocab)".into(),
            _ => "layer_norm, linear(vocab, tie = true)".into(),
        });
        let stack = layers.join(", ");
        let text = format!(
            "version = 2\nmodel m = layers {{ stack = [{stack}] }}\nexperiment e {{ data = modular {{ p = 5 }}, model = m, optimizer = sgd {{ lr = 0.1 }}, epochs = 1 }}\n"
        );
        let checked = check_text("seq.aht", &text, &CheckOptions::default());
        let plan = checked.plan.unwrap_or_else(|| panic!("{stack}: {:?}", checked.diagnostics));
        let tokens = ahtsgd::check::model::Tokens { vocab: 7, every_position };
        let spec = ahtsgd::check::model::lower_for(plan.trials[0].config.obj("model"), &[4], 7, Some(tokens))
            .expect("lays out");
        let m = Model::build(&spec, DType::F64, &Device::Cpu, seed).unwrap();
        let o = Options { seed, ..Options::default() };
        let r = gradcheck::check(&m, |i| gradcheck::token_batch(4, 7, 3, every_position, seed * 100 + i as u64), &o)
            .unwrap();
        let (g, t, h) = r.worst();
        prop_assert!(g <= 1e-4 && t <= 1e-4 && h <= 1e-4, "{stack}: {g:e} {t:e} {h:e} ({:?})", r);
    }
}
