//! `ahtsgd eval` and `ahtsgd rerun`: commands on a recorded trial folder.

use ahtsgd::check::{self, Options};
use ahtsgd::train;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// A trial folder: RUN_DIR/<experiment>/trial-NNNN
    pub trial_dir: PathBuf,
    /// Evaluate on another dataset, written as in a recipe: `mnist { path = "data/mnist" }`
    #[arg(long)]
    pub data: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct RerunArgs {
    /// A trial folder: RUN_DIR/<experiment>/trial-NNNN
    pub trial_dir: PathBuf,
    /// Where to write the new record (default: RUN_DIR/<experiment>/reruns/trial-NNNN-K, where
    /// summaries never take it for a trial)
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// A trial folder of a language model: RUN_DIR/<experiment>/trial-NNNN
    pub trial_dir: PathBuf,
    /// The text the model continues
    #[arg(long, default_value = "")]
    pub prompt: String,
    /// Bytes to generate
    #[arg(long, default_value_t = 200)]
    pub tokens: usize,
    /// Sampling temperature (0: the most likely byte each time)
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Seed of the draws
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// The single trial of a recorded `resolved.aht`, with extra `--set`s.
fn recorded_trial(dir: &Path, sets: Vec<String>) -> Result<ahtsgd::plan::Trial, i32> {
    let path = dir.join("resolved.aht");
    if !dir.exists() {
        eprintln!(
            "error: {} does not exist\n  help: pass a trial folder, RUN_DIR/<experiment>/trial-NNNN (`ls RUN_DIR/*/` lists them)",
            dir.display()
        );
        return Err(2);
    }
    if !path.exists() {
        eprintln!(
            "error: {} is not a trial folder (no resolved.aht)\n  help: pass RUN_DIR/<experiment>/trial-NNNN",
            dir.display()
        );
        return Err(2);
    }
    let checked = check::check_file(
        &path,
        &Options {
            sets,
            allow_large: false,
        },
    );
    if super::check::report(&checked, false) {
        return Err(1);
    }
    let plan = checked.plan.expect("checked");
    plan.trials.into_iter().next().ok_or(1)
}

pub fn eval(args: EvalArgs) -> i32 {
    let sets = match &args.data {
        None => Vec::new(),
        Some(d) => match recorded_trial(&args.trial_dir, Vec::new()) {
            Ok(t) => vec![format!("{}.data={d}", t.experiment)],
            Err(code) => return code,
        },
    };
    let trial = match recorded_trial(&args.trial_dir, sets) {
        Ok(t) => t,
        Err(code) => return code,
    };
    if !super::data::ensure_downloads(&[&trial], args.json) {
        return 1;
    }
    match train::evaluate_recorded(&trial, &args.trial_dir) {
        Ok(e) => {
            for w in &e.warnings {
                eprintln!("warning: {}: {w}", args.trial_dir.display());
            }
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"test_loss": e.test_loss, "test_accuracy": e.test_accuracy, "samples": e.samples, "warnings": e.warnings})
                );
            } else {
                println!(
                    "test loss {:.4}, test accuracy {:.2}% on {} samples",
                    e.test_loss,
                    e.test_accuracy * 100.0,
                    e.samples
                );
            }
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

pub fn generate(args: &GenerateArgs) -> i32 {
    let trial = match recorded_trial(&args.trial_dir, Vec::new()) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let sampling = train::generate::Sampling {
        tokens: args.tokens,
        temperature: args.temperature,
        seed: args.seed,
    };
    match train::generate::generate(&trial, &args.trial_dir, args.prompt.as_bytes(), &sampling) {
        Ok(bytes) => {
            let mut text = args.prompt.clone().into_bytes();
            text.extend(bytes);
            // bytes the model wrote that are not UTF-8 show as U+FFFD
            println!("{}", String::from_utf8_lossy(&text));
            0
        }
        Err(e) => {
            eprintln!("error: {}: {e}", args.trial_dir.display());
            1
        }
    }
}

pub fn rerun(args: RerunArgs) -> i32 {
    let trial = match recorded_trial(&args.trial_dir, Vec::new()) {
        Ok(t) => t,
        Err(code) => return code,
    };
    if !super::data::ensure_downloads(&[&trial], false) {
        return 1;
    }
    if train::needs_second_order(&trial) {
        ahtsgd::optim::enable_second_order();
    }
    let original = train::record::read_summary(&args.trial_dir);
    // what could make the numbers differ, said before the time is spent
    match &original {
        None => eprintln!(
            "warning: {} has no summary.json (the trial did not finish), so the build it ran on is unknown",
            args.trial_dir.display()
        ),
        Some(o) => {
            for w in build_differences(o) {
                eprintln!("warning: {w}; the rerun may not give the recorded numbers");
            }
        }
    }
    let out = args
        .out
        .unwrap_or_else(|| ahtsgd::sweep::rerun_dir(&args.trial_dir));
    let recipe = std::fs::read_to_string(args.trial_dir.join("recipe.aht")).unwrap_or_default();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    match train::run_trial(&trial, &recipe, &out, threads, false, &mut |_| {}) {
        Ok(s) => {
            let a =
                std::fs::read_to_string(args.trial_dir.join("metrics.jsonl")).unwrap_or_default();
            let b = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap_or_default();
            let verdict = match train::record::first_difference(&a, &b) {
                None => "metrics.jsonl identical to the original".to_string(),
                Some(d) => {
                    let causes = original.as_ref().map(build_differences).unwrap_or_default();
                    let cause = if causes.is_empty() {
                        format!(
                            "same build and kernel: another thread count ({} then, {} now) or machine?",
                            original.as_ref().map_or(0, |o| o.threads),
                            s.threads
                        )
                    } else {
                        causes.join("; ")
                    };
                    format!("metrics.jsonl first differs at {d} ({cause})")
                }
            };
            println!(
                "{}: {}, {} steps; {verdict}",
                out.display(),
                s.status,
                s.steps
            );
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// How the build that wrote a record differs from this one, in words (empty when it does not).
fn build_differences(original: &train::record::Summary) -> Vec<String> {
    let mut out = Vec::new();
    let this = env!("CARGO_PKG_VERSION");
    if original.ahtsgd_version != this {
        out.push(format!(
            "the trial was recorded by ahtsgd {}, this is ahtsgd {this}",
            original.ahtsgd_version
        ));
    }
    let kernel = ahtsgd::optim::stable::KERNEL;
    if original.noise_kernel != kernel {
        out.push(format!(
            "the original's noise was drawn with kernel `{}`, this build's is `{kernel}`",
            if original.noise_kernel.is_empty() {
                "older"
            } else {
                &original.noise_kernel
            }
        ));
    }
    out
}
