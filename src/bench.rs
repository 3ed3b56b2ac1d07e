//! Reference workloads for `ahtsgd bench`, matching PyTorch's scripts in `benches/reference/`:
//! f32, batch 128, synthetic learnable data, a fixed pool of 16 batches cycled.
//!
//! Protocol: `warmup` untimed calls, then `reps` repetitions of `steps` calls each; the
//! headline is the median rate over repetitions. A workload measured against its model's SGD
//! step (an AHTSGD step, an H·v, power iteration) times that SGD step too, in the same process
//! and in alternation with its own repetitions (A B, B A, A B, ...), and reports the median of
//! the per-pair ratios: on a shared machine whose speed drifts, a ratio of two medians taken
//! minutes apart in different processes is far noisier than the ratio of neighbours.

use crate::check::{Options, check_text};
use crate::model::{self, Model};
use crate::optim::alpha::{AlphaSchedule, Smoothing};
use crate::optim::{AhtSgd, NoiseKind, ParamsAhtSgd, sharpness, stable};
use crate::plan::Obj;
use candle_core::{DType, Device, Result, Tensor};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// The VGG-style net of `docs/language.md` and `recipes/vgg.aht`, as `bench` times it.
const VGG: &str = "layers { stack = [conv(32, 3, padding = 1), batch_norm, relu, conv(32, 3, padding = 1), batch_norm, relu, max_pool(2), dropout(0.25), flatten, linear(128), relu, dropout(0.5), linear(classes)], init = kaiming }";

/// Every workload, in the order `ahtsgd bench` runs them.
pub const WORKLOADS: &[(&str, &str)] = &[
    ("mlp-sgd", "MLP 784-256-256-10 ReLU, SGD step"),
    (
        "mlp-ahtsgd-fixed",
        "the same with α-stable noise, α = 1.5, σ = 0.01, every step",
    ),
    (
        "mlp-ahtsgd-adaptive",
        "adaptive AHTSGD: power iteration of 10 HVPs every 50 steps",
    ),
    (
        "mlp-hvp",
        "one Hessian-vector product (forward and reverse pass, then the R-operator pass)",
    ),
    (
        "mlp-hvp-graph",
        "one Hessian-vector product by double backward through candle's graph",
    ),
    ("mlp-power-iter", "power iteration, 10 HVPs on one batch"),
    (
        "mlp-sgd-run",
        "the MLP SGD step through the whole interpreter (data pipeline, logging, records)",
    ),
    (
        "cnn-sgd",
        "CNN conv32-pool-conv64-pool-linear on 3x32x32, SGD step",
    ),
    ("cnn-hvp", "one Hessian-vector product of the CNN"),
    (
        "vgg-sgd",
        "VGG-style net (docs/language.md: conv32-bn-relu x2, pool, dropout, linear128) on 3x32x32, SGD step",
    ),
    ("vgg-hvp", "one Hessian-vector product of the VGG-style net"),
    (
        "resnet18-sgd",
        "CIFAR ResNet-18 (width 64), SGD step (not run on the CPU unless named)",
    ),
    (
        "resnet18-grads",
        "CIFAR ResNet-18: the forward and reverse passes alone, no update",
    ),
    (
        "resnet18-ahtsgd-fixed",
        "CIFAR ResNet-18, AHTSGD step with fixed α = 1.5, σ = 0.01",
    ),
    (
        "resnet18-hvp",
        "CIFAR ResNet-18: one Hessian-vector product (forward and reverse pass, then the R-operator pass)",
    ),
    (
        "resnet18-power-iter",
        "CIFAR ResNet-18: power iteration, 10 HVPs on one batch",
    ),
    (
        "resnet50-sgd",
        "CIFAR ResNet-50 (width 64), SGD step (not run on the CPU unless named)",
    ),
    (
        "gpt-sgd",
        "transformer { blocks = 2, dim = 128, heads = 4 } on 64 windows of 64 bytes (vocabulary 256), loss at every position, SGD step",
    ),
    (
        "gpt-hvp",
        "one Hessian-vector product of the transformer (forward and reverse pass, then the R-operator pass)",
    ),
    (
        "gpt-power-iter",
        "the transformer: power iteration, 10 HVPs on one batch",
    ),
    (
        "sampler",
        "10^7 α-stable draws, α = 1.5, f32 (rate in draws/s)",
    ),
    ("check-1000", "check a 1,000-line recipe"),
    (
        "lsp-change-1000",
        "the language server: a change of a 1,000-line recipe to its published diagnostics (ratio: to a plain check, timed beside it)",
    ),
    ("expand-100k", "check and expand a 100,000-trial sweep"),
];

/// Whether a workload needs candle's gradient graphs (`CANDLE_GRAD_DO_NOT_DETACH=1`).
pub fn needs_second_order(workload: &str) -> bool {
    matches!(
        workload,
        "mlp-ahtsgd-adaptive"
            | "mlp-hvp"
            | "mlp-hvp-graph"
            | "mlp-power-iter"
            | "cnn-hvp"
            | "resnet18-hvp"
            | "gpt-hvp"
            | "gpt-power-iter"
    )
}

/// Workloads run when none are named: everything, except the ResNets on the CPU.
pub fn default_workloads(device: &str) -> Vec<&'static str> {
    WORKLOADS
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| device != "cpu" || !n.starts_with("resnet"))
        .collect()
}

/// How to time.
#[derive(Clone, Debug)]
pub struct Protocol {
    pub steps: usize,
    pub reps: usize,
    pub warmup: usize,
}

/// One workload's figures.
#[derive(Clone, Debug, Serialize)]
pub struct BenchResult {
    pub workload: String,
    pub threads: usize,
    pub device: String,
    /// Calls per second (draws per second for `sampler`).
    pub steps_per_s: f64,
    pub ms_per_step: f64,
    pub rates: Vec<f64>,
    /// Time per call over the SGD step of the same model, paired repetition by repetition
    /// (the median of the ratios); `None` for the SGD steps themselves and workloads without one.
    pub vs_sgd: Option<f64>,
    /// The process's peak resident memory (the workload runs in a process of its own).
    pub peak_rss_mb: Option<f64>,
    /// The peak resident memory over the workload's own timed repetitions (the peak reset
    /// before each), leaving out the SGD step timed beside it; `None` where /proc cannot
    /// reset it.
    pub call_peak_rss_mb: Option<f64>,
}

/// The highest peak resident memory over the workload's own repetitions, as f64 bits (0:
/// none measured); each workload runs in a process of its own.
static CALL_PEAK: AtomicU64 = AtomicU64::new(0);

/// `f()`, with the process's peak resident memory reset before and read after into
/// [`CALL_PEAK`] (Linux: writing 5 to `clear_refs` resets `VmHWM`).
fn peak_measured<T>(f: impl FnOnce() -> T) -> T {
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let out = f();
    if let (true, Some(mb)) = (reset, peak_rss_mb()) {
        // positive floats order as their bits do
        CALL_PEAK.fetch_max(mb.to_bits(), Ordering::Relaxed);
    }
    out
}

/// This process's peak resident set in MB (`VmHWM`; `None` where /proc does not say).
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The trial configuration of an experiment on the model `text`, in the newest language
/// version (so `tanh` and `gelu` compute tanh with the portable kernel).
fn spec(text: &str) -> Obj {
    let version = crate::check::schema::VERSIONS.last().expect("a version");
    let src = format!(
        "version = {version}\nmodel m = {text}\nexperiment e {{ data = arrays {{ path = \"-\" }}, model = m, optimizer = sgd {{ lr = 0.1 }}, epochs = 1 }}\n"
    );
    check_text("bench.aht", &src, &Options::default())
        .plan
        .expect("bench models check")
        .trials[0]
        .config
        .clone()
}

/// 16 batches of 128 with labels from a random linear teacher.
fn batches(shape: &[usize], dev: &Device) -> Result<Vec<(Tensor, Tensor)>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1234);
    let d: usize = shape.iter().product();
    let teacher: Vec<f32> = (0..d * 10)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    let teacher = Tensor::from_vec(teacher, (d, 10), dev)?;
    (0..16)
        .map(|_| {
            let x: Vec<f32> = (0..128 * d)
                .map(|_| StandardNormal.sample(&mut rng))
                .collect();
            let mut full = vec![128];
            full.extend(shape);
            let x = Tensor::from_vec(x, full, dev)?;
            let y = x.flatten_from(1)?.matmul(&teacher)?.argmax(1)?;
            Ok((x, y))
        })
        .collect()
}

/// Bytes per window of the GPT workloads.
const GPT_CONTEXT: usize = 64;

/// 16 batches of 64 windows of random bytes, with a random next byte at every position.
fn token_batches(dev: &Device) -> Result<Vec<(Tensor, Tensor)>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1234);
    let n = 64 * GPT_CONTEXT;
    (0..16)
        .map(|_| {
            let x: Vec<f32> = (0..n).map(|_| rng.random_range(0..256u32) as f32).collect();
            let y: Vec<u32> = (0..n).map(|_| rng.random_range(0..256u32)).collect();
            Ok((
                Tensor::from_vec(x, (64, GPT_CONTEXT), dev)?,
                Tensor::from_vec(y, (64, GPT_CONTEXT), dev)?,
            ))
        })
        .collect()
}

fn time(p: &Protocol, dev: &Device, call: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
    Ok(time_paired(p, dev, call, None::<fn() -> Result<()>>)?.0)
}

/// One repetition: calls per second.
fn rate(p: &Protocol, dev: &Device, call: &mut impl FnMut() -> Result<()>) -> Result<f64> {
    let t = Instant::now();
    for _ in 0..p.steps {
        call()?;
    }
    // device work is asynchronous: wait for it before reading the clock
    dev.synchronize()?;
    Ok(p.steps as f64 / t.elapsed().as_secs_f64())
}

/// Times `call`, and `base` (if any) in alternation with it: the rates of each, repetition by
/// repetition.
fn time_paired(
    p: &Protocol,
    dev: &Device,
    mut call: impl FnMut() -> Result<()>,
    mut base: Option<impl FnMut() -> Result<()>>,
) -> Result<(Vec<f64>, Vec<f64>)> {
    for _ in 0..p.warmup {
        call()?;
        if let Some(b) = base.as_mut() {
            b()?;
        }
    }
    dev.synchronize()?;
    let (mut rates, mut base_rates) = (Vec::with_capacity(p.reps), Vec::with_capacity(p.reps));
    for r in 0..p.reps {
        match base.as_mut() {
            // alternate which goes first, so a steady drift favours neither
            Some(b) if r % 2 == 1 => {
                base_rates.push(rate(p, dev, b)?);
                rates.push(peak_measured(|| rate(p, dev, &mut call))?);
            }
            Some(b) => {
                rates.push(peak_measured(|| rate(p, dev, &mut call))?);
                base_rates.push(rate(p, dev, b)?);
            }
            None => rates.push(peak_measured(|| rate(p, dev, &mut call))?),
        }
    }
    Ok((rates, base_rates))
}

/// Time per call over the base's, repetition by repetition (the rates are calls per second):
/// the median of the pairs' ratios, or `None` without a base.
fn paired_ratio(rates: &[f64], base_rates: &[f64]) -> Option<f64> {
    (!base_rates.is_empty())
        .then(|| median(rates.iter().zip(base_rates).map(|(r, b)| b / r).collect()))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs one workload.
pub fn run(workload: &str, p: &Protocol, dev: &Device, threads: usize) -> Result<BenchResult> {
    let mut base_rates = Vec::new();
    let rates = match workload {
        "sampler" => {
            const N: usize = 10_000_000;
            let mut out = vec![0.0f32; if dev.is_cpu() { N } else { 0 }];
            let shape = candle_core::Shape::from(N);
            let key = stable::stream_key(0, "bench");
            let mut step = 0;
            time(
                &Protocol {
                    steps: 1,
                    ..p.clone()
                },
                dev,
                || {
                    if dev.is_cpu() {
                        stable::fill_f32(1.5, key, step, &mut out);
                    } else {
                        // into device memory by the device's own kernel
                        stable::draw_tensor(1.5, key, step, &shape, dev)?;
                    }
                    step += 1;
                    Ok(())
                },
            )?
            .into_iter()
            .map(|r| r * N as f64)
            .collect()
        }
        "mlp-sgd-run" => {
            // the reference MLP on synthetic data through `run_trial`: everything but the CLI
            let steps = (p.warmup + p.steps) as u64;
            let src = format!(
                "experiment e {{ data = blobs {{ classes = 10, features = 784, samples = 4096, test_samples = 128, seed = 1 }}, model = mlp {{ hidden = [256, 256] }}, optimizer = sgd {{ lr = 0.1 }}, epochs = 1000, batch = 128, max_steps = {steps}, eval_every = 1000000 steps, checkpoint_every = 1000000 steps, device = {} }}\n",
                if dev.is_cpu() { "cpu" } else { "cuda" }
            );
            let plan = check_text("run.aht", &src, &Options::default())
                .plan
                .expect("bench recipe checks");
            let mut rates = Vec::new();
            for _ in 0..p.reps {
                let dir = std::env::temp_dir().join(format!("ahtsgd-bench-{}", std::process::id()));
                let t = Instant::now();
                let mut first_timed: Option<Instant> = None;
                let warm = p.warmup as u64;
                let s = crate::train::run_trial(
                    &plan.trials[0],
                    &src,
                    &dir,
                    threads,
                    false,
                    &mut |e| {
                        if let crate::train::Event::Step { step, .. } = e
                            && step >= warm
                            && first_timed.is_none()
                        {
                            first_timed = Some(Instant::now());
                        }
                    },
                )
                .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
                let _ = std::fs::remove_dir_all(&dir);
                let start = first_timed.unwrap_or(t);
                rates.push((s.steps - warm.min(s.steps)) as f64 / start.elapsed().as_secs_f64());
            }
            rates
        }
        "check-1000" => {
            let text = big_recipe(1000);
            time(p, dev, || {
                let c = check_text("big.aht", &text, &Options::default());
                assert!(!c.has_errors());
                Ok(())
            })?
        }
        "lsp-change-1000" => {
            let (rates, base) = lsp_round_trips(p, dev)?;
            base_rates = base;
            rates
        }
        "expand-100k" => {
            let text = "optimizer o = sgd { lr = 0.1 }\nexperiment e { data = blobs {}, model = mlp {}, optimizer = o, epochs = 1, max_trials = 200000\n  seed = sweep(0..100), batch = sweep(1..101), o.lr = logspace(1e-3, 1e-1, 10) }\n";
            time(
                &Protocol {
                    steps: 1,
                    ..p.clone()
                },
                dev,
                || {
                    let c = check_text("sweep.aht", text, &Options::default());
                    assert_eq!(c.plan.map(|p| p.trials.len()), Some(100_000));
                    Ok(())
                },
            )?
        }
        w => {
            let (model_text, shape): (&str, &[usize]) = if w.starts_with("cnn") {
                (
                    "cnn { channels = [32, 64], hidden = [], init = default }",
                    &[3, 32, 32],
                )
            } else if w.starts_with("vgg") {
                (VGG, &[3, 32, 32])
            } else if w.starts_with("resnet18") {
                ("resnet18 { width = 64 }", &[3, 32, 32])
            } else if w.starts_with("resnet50") {
                ("resnet50 { width = 64 }", &[3, 32, 32])
            } else if w.starts_with("gpt") {
                (
                    "transformer { blocks = 2, dim = 128, heads = 4, mlp = 4 }",
                    &[GPT_CONTEXT],
                )
            } else {
                ("mlp { hidden = [256, 256], init = default }", &[784])
            };
            let gpt = w.starts_with("gpt");
            let (classes, tokens) = if gpt {
                let t = crate::check::model::Tokens {
                    vocab: 256,
                    every_position: true,
                };
                (256, Some(t))
            } else {
                (10, None)
            };
            let config = spec(model_text);
            let mut lowered =
                crate::check::model::lower_for(config.obj("model"), shape, classes, tokens)
                    .map_err(|d| candle_core::Error::Msg(d.message))?;
            lowered.tanh = crate::check::model::tanh(&config);
            let m = &Model::build(&lowered, DType::F32, dev, 0)
                .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
            let data = if gpt {
                token_batches(dev)?
            } else {
                batches(shape, dev)?
            };
            let i = std::cell::Cell::new(0usize);
            let next = || {
                i.set((i.get() + 1) % data.len());
                data[i.get()].clone()
            };
            let noise = match w {
                "mlp-ahtsgd-fixed" | "resnet18-ahtsgd-fixed" => {
                    NoiseKind::Stable(AlphaSchedule::Fixed(1.5))
                }
                "mlp-ahtsgd-adaptive" => NoiseKind::Stable(AlphaSchedule::Adaptive {
                    smoothing: Smoothing::PerEstimate { rate: 0.05 },
                    map: crate::optim::alpha::AlphaMap::Sigmoid {
                        v: 4.0,
                        c: 10f64.ln(),
                    },
                    initial: 1.0,
                }),
                _ => NoiseKind::None,
            };
            let mut opt = AhtSgd::new(
                m.params.clone(),
                ParamsAhtSgd {
                    lr: 0.1,
                    sigma: 0.01,
                    noise,
                    ..Default::default()
                },
            )?;
            let vars = m.vars();
            let mut step = 0u64;
            // the model's SGD step, timed beside every workload but the SGD steps themselves
            let base = if w.ends_with("-sgd") {
                None
            } else {
                let mut sgd = AhtSgd::new(
                    m.params.clone(),
                    ParamsAhtSgd {
                        lr: 0.1,
                        sigma: 0.01,
                        noise: NoiseKind::None,
                        ..Default::default()
                    },
                )?;
                Some(move || {
                    let (x, y) = next();
                    let (_, grads) = m.loss_grads_deferred(&x, &y)?;
                    sgd.step(&grads, 0.0, 0.0)
                        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
                    Ok(())
                })
            };
            let (rates, paired) = match w {
                "resnet18-grads" => time_paired(
                    p,
                    dev,
                    || {
                        let (x, y) = next();
                        m.loss_grads_deferred(&x, &y)?;
                        Ok(())
                    },
                    base,
                )?,
                "mlp-hvp" | "cnn-hvp" | "mlp-hvp-graph" | "resnet18-hvp" | "vgg-hvp"
                | "gpt-hvp" => time_paired(
                    p,
                    dev,
                    || {
                        let (x, y) = next();
                        let v: Vec<Tensor> = vars
                            .iter()
                            .map(|v| v.as_tensor().ones_like())
                            .collect::<Result<_>>()?;
                        if w == "mlp-hvp-graph" {
                            let loss = model::cross_entropy(&m.forward(&x)?, &y)?;
                            sharpness::hvp(&loss, &vars, &v)?;
                        } else {
                            m.hessian(&x, &y)?.hvp(&v)?;
                        }
                        Ok(())
                    },
                    base,
                )?,
                "mlp-power-iter" | "resnet18-power-iter" | "gpt-power-iter" => time_paired(
                    p,
                    dev,
                    || {
                        let (x, y) = next();
                        let mut h = m.hessian(&x, &y)?;
                        sharpness::power_iteration_with(h.as_mut(), &vars, 10, 0.0, None, 0)?;
                        Ok(())
                    },
                    base,
                )?,
                _ => time_paired(
                    p,
                    dev,
                    || {
                        let (x, y) = next();
                        if w == "mlp-ahtsgd-adaptive" && step.is_multiple_of(50) {
                            let mut h = m.hessian(&x, &y)?;
                            let r = sharpness::power_iteration_with(
                                h.as_mut(),
                                &vars,
                                10,
                                0.0,
                                None,
                                step,
                            )?;
                            opt.observe_sharpness(r.lambda);
                        }
                        let (_, grads) = m.loss_grads_deferred(&x, &y)?;
                        opt.step(&grads, 0.0, 0.0)
                            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
                        step += 1;
                        Ok(())
                    },
                    base,
                )?,
            };
            base_rates = paired;
            rates
        }
    };
    let rates = finite(rates);
    let vs_sgd = paired_ratio(&rates, &base_rates);
    Ok(BenchResult::new(workload, threads, dev, rates, vs_sgd))
}

/// Rates with any that is not finite counted as 0.
fn finite(mut rates: Vec<f64>) -> Vec<f64> {
    rates
        .iter_mut()
        .for_each(|r| *r = if r.is_finite() { *r } else { 0.0 });
    rates
}

impl BenchResult {
    /// A workload's figures from its rates (calls per second) and its paired ratios, with
    /// this process's peak memory.
    fn new(
        workload: &str,
        threads: usize,
        dev: &Device,
        rates: Vec<f64>,
        vs_sgd: Option<f64>,
    ) -> BenchResult {
        let med = median(rates.clone());
        BenchResult {
            workload: workload.to_string(),
            threads,
            device: if dev.is_cpu() {
                "cpu".into()
            } else {
                "cuda".into()
            },
            steps_per_s: med,
            ms_per_step: 1000.0 / med,
            rates,
            vs_sgd,
            peak_rss_mb: peak_rss_mb(),
            call_peak_rss_mb: match CALL_PEAK.load(Ordering::Relaxed) {
                0 => None,
                bits => Some(f64::from_bits(bits)),
            },
        }
    }
}

/// The language server on an in-memory connection: each call changes one field of a 1,000-line
/// recipe and waits for its diagnostics; a plain check of the same text is timed beside it.
fn lsp_round_trips(p: &Protocol, dev: &Device) -> Result<(Vec<f64>, Vec<f64>)> {
    use lsp_server::{Connection, Message, Notification, Request, RequestId};
    let fail = |what: &str| candle_core::Error::Msg(format!("lsp bench: {what}"));
    let text = big_recipe(1000);
    let other = text.replacen("epochs = 2", "epochs = 3", 1);
    let (client, server) = Connection::memory();
    let served = std::thread::spawn(move || crate::lsp::serve(&server).is_ok());
    let send = |m: Message| {
        client
            .sender
            .send(m)
            .map_err(|_| fail("the server is gone"))
    };
    let uri = "untitled:big.aht";
    send(Message::Request(Request::new(
        RequestId::from(1),
        "initialize".into(),
        serde_json::json!({"capabilities": {}}),
    )))?;
    let wait = |want: &dyn Fn(&Message) -> bool| -> Result<()> {
        loop {
            let m = client
                .receiver
                .recv()
                .map_err(|_| fail("the server closed the connection"))?;
            if want(&m) {
                return Ok(());
            }
        }
    };
    wait(&|m| matches!(m, Message::Response(_)))?;
    let published = |m: &Message| matches!(m, Message::Notification(n) if n.method == "textDocument/publishDiagnostics");
    send(Message::Notification(Notification::new(
        "initialized".into(),
        serde_json::json!({}),
    )))?;
    send(Message::Notification(Notification::new(
        "textDocument/didOpen".into(),
        serde_json::json!({"textDocument": {"uri": uri, "languageId": "aht", "version": 1, "text": text}}),
    )))?;
    wait(&published)?;
    let mut version = 1;
    let timed = time_paired(
        p,
        dev,
        || {
            version += 1;
            let now = if version % 2 == 0 { &other } else { &text };
            send(Message::Notification(Notification::new(
                "textDocument/didChange".into(),
                serde_json::json!({"textDocument": {"uri": uri, "version": version}, "contentChanges": [{"text": now}]}),
            )))?;
            wait(&published)
        },
        Some(|| {
            let c = check_text("big.aht", &text, &Options::default());
            assert!(!c.has_errors());
            Ok(())
        }),
    )?;
    send(Message::Request(Request::new(
        RequestId::from(2),
        "shutdown".into(),
        serde_json::Value::Null,
    )))?;
    wait(&|m| matches!(m, Message::Response(_)))?;
    send(Message::Notification(Notification::new(
        "exit".into(),
        serde_json::Value::Null,
    )))?;
    drop(client);
    served.join().map_err(|_| fail("the server failed"))?;
    Ok(timed)
}

/// A recipe of `lines` lines in the canonical layout (one field per line, as `ahtsgd fmt`
/// writes it): groups of a model, a schedule, an optimizer and an experiment.
pub fn big_recipe(lines: usize) -> String {
    let mut out = String::new();
    let mut i = 0;
    while out.lines().count() + 30 <= lines {
        out.push_str(&format!(
            "# group {i}\nmodel m{i} = mlp {{\n  hidden = [{}, 16]\n  activation = relu\n  init = kaiming\n}}\n\n\
             schedule s{i} = adaptive {{\n  sharpness = power_iteration {{ iters = 10, every = 25 steps }}\n  ema = 0.05\n  map = sigmoid {{ v = 4, c = log(1 / lr) }}\n}}\n\n\
             optimizer o{i} = ahtsgd {{\n  lr = 0.01 * {}\n  sigma = 0.01\n  alpha = s{i}\n  clip = coordinate(1.0)\n}}\n\n\
             experiment e{i} {{\n  data = blobs {{ classes = 3 }}\n  model = m{i}\n  optimizer = o{i}\n  epochs = 2\n  batch = 64\n  seed = sweep(0..3)\n}}\n\n",
            8 + i,
            1 + i % 5
        ));
        i += 1;
    }
    while out.lines().count() < lines {
        out.push_str("# padding\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// The workload and its base run the same number of calls, alternating which goes first.
    #[test]
    fn paired_timing_alternates_its_repetitions() {
        let log = RefCell::new(String::new());
        let p = Protocol {
            steps: 2,
            reps: 4,
            warmup: 1,
        };
        let (a, b) = time_paired(
            &p,
            &Device::Cpu,
            || {
                log.borrow_mut().push('a');
                Ok(())
            },
            Some(|| {
                log.borrow_mut().push('b');
                Ok(())
            }),
        )
        .unwrap();
        assert_eq!((a.len(), b.len()), (4, 4));
        assert_eq!(*log.borrow(), "ab aabb bbaa aabb bbaa".replace(' ', ""));
        assert!(a.iter().chain(&b).all(|r| *r > 0.0));
    }

    #[test]
    fn the_paired_ratio_is_the_median_of_time_ratios() {
        // time ratios 2, 1.5 and 3: the median is 2
        assert_eq!(
            paired_ratio(&[10.0, 20.0, 5.0], &[20.0, 30.0, 15.0]),
            Some(2.0)
        );
        assert_eq!(paired_ratio(&[10.0], &[]), None);
    }
}
