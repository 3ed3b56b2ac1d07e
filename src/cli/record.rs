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
    /// Where to write the new record (default: the trial folder's name with `-rerun`)
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The single trial of a recorded `resolved.aht`, with extra `--set`s.
fn recorded_trial(dir: &Path, sets: Vec<String>) -> Result<ahtsgd::plan::Trial, i32> {
    let path = dir.join("resolved.aht");
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
    match train::evaluate_recorded(&trial, &args.trial_dir) {
        Ok((loss, acc, n)) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"test_loss": loss, "test_accuracy": acc, "samples": n})
                );
            } else {
                println!(
                    "test loss {loss:.4}, test accuracy {:.2}% on {n} samples",
                    acc * 100.0
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

pub fn rerun(args: RerunArgs) -> i32 {
    let trial = match recorded_trial(&args.trial_dir, Vec::new()) {
        Ok(t) => t,
        Err(code) => return code,
    };
    if train::needs_second_order(&trial) {
        ahtsgd::optim::enable_second_order();
    }
    let out = args.out.unwrap_or_else(|| {
        let name = args
            .trial_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        args.trial_dir.with_file_name(format!("{name}-rerun"))
    });
    let recipe = std::fs::read_to_string(args.trial_dir.join("recipe.aht")).unwrap_or_default();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    match train::run_trial(&trial, &recipe, &out, threads, false, &mut |_| {}) {
        Ok(s) => {
            let a =
                std::fs::read_to_string(args.trial_dir.join("metrics.jsonl")).unwrap_or_default();
            let b = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap_or_default();
            let verdict = match a.lines().zip(b.lines()).position(|(x, y)| x != y) {
                None if a.lines().count() == b.lines().count() => {
                    "metrics.jsonl identical to the original".to_string()
                }
                None => "metrics.jsonl has a different length than the original".to_string(),
                Some(i) => {
                    let kernel = ahtsgd::train::record::read_summary(&args.trial_dir)
                        .map(|o| o.noise_kernel)
                        .unwrap_or_default();
                    let cause = if kernel == ahtsgd::optim::stable::KERNEL {
                        "another thread count or build?".to_string()
                    } else {
                        format!(
                            "the original's noise was drawn with kernel `{}`, this build's is `{}`",
                            if kernel.is_empty() { "older" } else { &kernel },
                            ahtsgd::optim::stable::KERNEL
                        )
                    };
                    format!("metrics.jsonl first differs at line {} ({cause})", i + 1)
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
