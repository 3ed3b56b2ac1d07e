//! `ahtsgd gradcheck`: a recipe's models against finite differences.

use super::RecipeArgs;
use super::check::{known_experiment, options, report};
use ahtsgd::model::gradcheck::{self, Options};
use ahtsgd::model::{Model, ModelSpec};
use candle_core::{DType, Device, Tensor};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct GradcheckArgs {
    pub file: PathBuf,
    #[command(flatten)]
    pub recipe: RecipeArgs,
    /// Check only this experiment's model (default: every experiment's)
    #[arg(long)]
    pub experiment: Option<String>,
    /// Random inputs of the dataset's shape instead of its files (runs without data)
    #[arg(long)]
    pub synthetic: bool,
    /// Samples in the batch
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// The largest relative error that passes
    #[arg(long, default_value_t = 1e-4)]
    pub tolerance: f64,
    /// The finite-difference step (smaller crosses fewer kinks, at more rounding)
    #[arg(long, default_value_t = 1e-7)]
    pub eps: f64,
}

/// The first `n` training samples after `skip`, wrapping around, in f64.
fn data_batch(
    d: &ahtsgd::data::Dataset,
    n: usize,
    skip: usize,
) -> candle_core::Result<(Tensor, Tensor)> {
    let per = d.sample_len();
    let labels = d.labels_per_sample.max(1);
    let total = d.train_len().max(1);
    let mut xs = Vec::with_capacity(n * per);
    let mut ys = Vec::with_capacity(n * labels);
    for k in 0..n {
        let i = (skip + k) % total;
        xs.extend(
            d.train_x[i * per..(i + 1) * per]
                .iter()
                .map(|&v| f64::from(v)),
        );
        ys.extend_from_slice(&d.train_y[i * labels..(i + 1) * labels]);
    }
    let mut shape = vec![n];
    shape.extend(&d.sample_shape);
    let dev = Device::Cpu;
    let y = Tensor::new(ys, &dev)?;
    // a label at every position: `[n, positions]`, as training reads them
    let y = if labels > 1 {
        y.reshape((n, labels))?
    } else {
        y
    };
    Ok((Tensor::from_vec(xs, shape, &dev)?, y))
}

enum Inputs {
    Synthetic { shape: Vec<usize>, classes: usize },
    Data(Box<ahtsgd::data::Dataset>),
}

/// The inputs of one trial's model, or what to tell the user.
fn inputs(file: &Path, trial: &ahtsgd::plan::Trial, synthetic: bool) -> Result<Inputs, String> {
    let data = trial.config.obj("data");
    if synthetic {
        let lowering =
            ahtsgd::check::model::sample_shape(data).zip(ahtsgd::check::model::classes(data));
        return match lowering {
            Some((shape, classes)) => Ok(Inputs::Synthetic { shape, classes }),
            None => Err(format!(
                "{}: experiment `{}`: the `{}` dataset does not say its sample shape and classes without its files\n  help: give it `shape = [..]` and `classes = N`, or leave out --synthetic",
                file.display(),
                trial.experiment,
                data.kind
            )),
        };
    }
    let spec = ahtsgd::check::data::lower(data)
        .ok_or_else(|| format!("the `{}` reader is not available in this build", data.kind))?;
    ahtsgd::data::load(&spec, trial.config.f64("seed") as u64)
        .map(|d| Inputs::Data(Box::new(d)))
        .map_err(|e| {
            format!(
                "{}: experiment `{}`: {e}\n  help: fix the data, or check on random inputs with --synthetic",
                file.display(),
                trial.experiment
            )
        })
}

pub fn gradcheck(args: &GradcheckArgs) -> i32 {
    if !(args.eps > 0.0 && args.eps < 1.0) {
        eprintln!(
            "error: --eps {} is not a step\n  help: give a value in (0, 1), such as 1e-7",
            args.eps
        );
        return 2;
    }
    if args.batch == 0 {
        eprintln!("error: --batch 0 has no samples\n  help: give --batch 1 or more");
        return 2;
    }
    let checked = ahtsgd::check::check_file(&args.file, &options(&args.recipe));
    if report(&checked, args.recipe.json) {
        return 1;
    }
    let plan = checked.plan.as_ref().expect("no errors means a plan");
    if let Err(code) = known_experiment(&args.file, plan, args.experiment.as_deref()) {
        return code;
    }
    let mut failed = false;
    for exp in plan
        .experiments
        .iter()
        .filter(|x| args.experiment.as_deref().is_none_or(|e| x.name == e))
    {
        let trial = &plan.trials[exp.trials.start];
        let inputs = match inputs(&args.file, trial, args.synthetic) {
            Ok(i) => i,
            Err(e) => {
                eprintln!("error: {e}");
                return 1;
            }
        };
        let (shape, classes) = match &inputs {
            Inputs::Synthetic { shape, classes } => (shape.clone(), *classes),
            Inputs::Data(d) => (d.sample_shape.clone(), d.classes),
        };
        let tokens = ahtsgd::check::model::tokens(trial.config.obj("data"));
        let spec: ModelSpec =
            match ahtsgd::check::model::lower_trial(&trial.config, &shape, classes) {
                Ok(s) => s,
                Err(d) => {
                    eprintln!("error: experiment `{}`: {}", exp.name, d.message);
                    return 1;
                }
            };
        let result = Model::build(&spec, DType::F64, &Device::Cpu, 0)
            .map_err(|e| e.to_string())
            .and_then(|m| {
                let n = args.batch;
                let batch = |attempt: usize| match &inputs {
                    Inputs::Synthetic { shape, classes } if tokens.is_some() => {
                        let every = tokens.is_some_and(|t| t.every_position);
                        gradcheck::token_batch(shape[0], *classes, n, every, attempt as u64)
                    }
                    Inputs::Synthetic { shape, classes } => {
                        gradcheck::synthetic_batch(shape, *classes, n, attempt as u64)
                    }
                    Inputs::Data(d) => data_batch(d, n, attempt * n),
                };
                let o = Options {
                    tolerance: args.tolerance,
                    eps: args.eps,
                    ..Options::default()
                };
                gradcheck::check(&m, batch, &o).map_err(|e| e.to_string())
            });
        let r = match result {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: experiment `{}`: {e}", exp.name);
                return 1;
            }
        };
        let (g, t, h) = r.worst();
        let ok = g <= args.tolerance && t <= args.tolerance && h <= args.tolerance;
        failed |= !ok;
        if args.recipe.json {
            let tensors: Vec<_> = r
                .tensors
                .iter()
                .map(|e| {
                    serde_json::json!({"name": e.name, "grad": e.grad, "train_grad": e.train_grad, "hvp": e.hvp})
                })
                .collect();
            println!(
                "{}",
                serde_json::json!({"experiment": exp.name, "tensors": tensors, "worst": {"grad": g, "train_grad": t, "hvp": h}, "tolerance": args.tolerance, "resampled": r.resampled, "at_kinks": r.at_kinks, "ok": ok})
            );
            continue;
        }
        println!(
            "experiment {} — model {} ({} inputs, batch {}), worst relative errors:",
            exp.name,
            spec.kind,
            if args.synthetic { "random" } else { "data" },
            args.batch
        );
        println!(
            "  {:<32} {:>10} {:>10} {:>10}",
            "tensor", "gradient", "training", "H·v"
        );
        for e in &r.tensors {
            println!(
                "  {:<32} {:>10.2e} {:>10.2e} {:>10.2e}",
                e.name, e.grad, e.train_grad, e.hvp
            );
        }
        println!(
            "  worst {g:.2e} / {t:.2e} / {h:.2e} against tolerance {:.0e}: {}{}",
            args.tolerance,
            if ok { "ok" } else { "FAILED" },
            if r.resampled > 0 {
                format!(" ({} directions across a kink drawn again)", r.resampled)
            } else {
                String::new()
            }
        );
        if r.at_kinks > 0 {
            println!(
                "  {} direction{} crossed a kink on every draw, where finite differences say little: a ReLU input or max-pool tie within ε (try a smaller --eps), or weights all zero, which put every ReLU input at 0 (check with another `init`)",
                r.at_kinks,
                if r.at_kinks == 1 { "" } else { "s" }
            );
        }
    }
    i32::from(failed)
}
