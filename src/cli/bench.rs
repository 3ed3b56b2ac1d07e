//! `ahtsgd bench`: each workload in its own process (so candle's gradient-graph switch and
//! the thread count apply to that workload alone), then a table or JSON lines.

use ahtsgd::bench::{self, BenchResult, Protocol, WORKLOADS};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Workloads to run (default: all); see the list with --list
    pub workloads: Vec<String>,
    /// CPU threads
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// cpu or cuda
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda"])]
    pub device: String,
    /// Timed calls per repetition
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// Repetitions (the median is reported)
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Untimed calls first
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    /// One JSON object per line
    #[arg(long)]
    pub json: bool,
    /// List the workloads and exit
    #[arg(long)]
    pub list: bool,
    /// Run one workload in this process (used internally)
    #[arg(long, hide = true)]
    pub one: Option<String>,
}

pub fn run(args: BenchArgs) -> i32 {
    if args.list {
        for (name, what) in WORKLOADS {
            println!("{name:<22} {what}");
        }
        return 0;
    }
    let protocol = Protocol {
        steps: args.steps,
        reps: args.reps.max(1),
        warmup: args.warmup,
    };
    if let Some(w) = &args.one {
        let dev = match ahtsgd::train::device(&args.device) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("error: {e}");
                return 2;
            }
        };
        // a test hook: this workload's process dies by SIGKILL, as the out-of-memory killer
        // would end it
        if std::env::var("AHTSGD_BENCH_KILL").is_ok_and(|k| k == *w) {
            // SAFETY: raise has no memory effects; the process ends here.
            unsafe { libc::raise(libc::SIGKILL) };
        }
        let result = super::on_pool(Some(args.threads), || {
            bench::run(w, &protocol, &dev, args.threads)
        });
        return match result {
            Ok(r) => {
                println!("{}", serde_json::to_string(&r).unwrap_or_default());
                0
            }
            Err(e) => {
                eprintln!("error: {w}: {e}");
                1
            }
        };
    }
    let selected: Vec<&str> = if args.workloads.is_empty() {
        bench::default_workloads(&args.device)
    } else {
        args.workloads.iter().map(String::as_str).collect()
    };
    if let Some(bad) = selected
        .iter()
        .find(|w| !WORKLOADS.iter().any(|(n, _)| n == *w))
    {
        let names: Vec<&str> = WORKLOADS.iter().map(|(n, _)| *n).collect();
        eprintln!(
            "error: unknown workload `{bad}`\n  help: {}",
            ahtsgd::check::suggest::help(bad, "workloads", names)
        );
        return 2;
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: cannot find this program to rerun it: {e}");
            return 2;
        }
    };
    let mut results: Vec<BenchResult> = Vec::new();
    let mut failures: Vec<(String, String)> = Vec::new();
    let mut failed = false;
    for w in selected {
        let mut cmd = std::process::Command::new(&exe);
        cmd.args([
            "bench",
            "--one",
            w,
            "--threads",
            &args.threads.to_string(),
            "--device",
            &args.device,
        ])
        .args([
            "--steps",
            &args.steps.to_string(),
            "--reps",
            &protocol.reps.to_string(),
            "--warmup",
            &args.warmup.to_string(),
        ])
        .env("RAYON_NUM_THREADS", args.threads.to_string());
        if bench::needs_second_order(w) {
            cmd.env("CANDLE_GRAD_DO_NOT_DETACH", "1");
        } else {
            cmd.env_remove("CANDLE_GRAD_DO_NOT_DETACH");
        }
        match cmd.output() {
            Ok(o) if o.status.success() => {
                match serde_json::from_slice::<serde_json::Value>(&o.stdout) {
                    Ok(v) => {
                        if args.json {
                            println!("{v}");
                        }
                        results.push(BenchResult {
                            workload: w.to_string(),
                            threads: args.threads,
                            device: args.device.clone(),
                            steps_per_s: v["steps_per_s"].as_f64().unwrap_or(0.0),
                            ms_per_step: v["ms_per_step"].as_f64().unwrap_or(0.0),
                            rates: Vec::new(),
                            vs_sgd: v["vs_sgd"].as_f64(),
                            peak_rss_mb: v["peak_rss_mb"].as_f64(),
                            call_peak_rss_mb: v["call_peak_rss_mb"].as_f64(),
                        });
                    }
                    Err(e) => {
                        eprintln!("error: {w}: unreadable result: {e}");
                        failed = true;
                    }
                }
            }
            Ok(o) => {
                eprint!("{}", String::from_utf8_lossy(&o.stderr));
                let cause = death(&o.status);
                eprintln!("error: {w} failed: {cause}");
                if args.json {
                    println!("{}", serde_json::json!({ "workload": w, "failed": cause }));
                }
                failures.push((w.to_string(), cause));
                failed = true;
            }
            Err(e) => {
                eprintln!("error: {w}: {e}");
                failed = true;
            }
        }
    }
    if !args.json {
        print_table(&results);
        for (w, cause) in &failures {
            println!("{w:<22} failed: {cause}");
        }
    }
    i32::from(failed)
}

/// Why a workload's process ended badly: its exit code, or the signal that killed it (SIGKILL
/// is most often the kernel's out-of-memory killer).
fn death(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(9)) => "killed by SIGKILL (most likely out of memory)".into(),
        (None, Some(s)) => format!("killed by signal {s}"),
        (None, None) => "ended without a status".into(),
    }
}

fn print_table(results: &[BenchResult]) {
    let base = |name: &str| {
        results
            .iter()
            .find(|r| r.workload == name)
            .map(|r| r.ms_per_step)
    };
    println!(
        "{:<22} {:>8} {:>14} {:>12} {:>16} {:>9}",
        "workload", "threads", "per second", "ms per call", "x its SGD step", "peak MB"
    );
    for r in results {
        let reference = if r.workload.starts_with("mlp-") {
            base("mlp-sgd")
        } else if r.workload.starts_with("cnn-") {
            base("cnn-sgd")
        } else if r.workload.starts_with("resnet18-") {
            base("resnet18-sgd")
        } else {
            None
        };
        // the paired ratio where the workload timed its SGD step beside itself
        let ratio = match (r.vs_sgd, reference) {
            (Some(v), _) => format!("{v:.2}"),
            (None, Some(b)) => format!("{:.2}", r.ms_per_step / b),
            (None, None) => String::from("-"),
        };
        // the workload's own calls where measured, else the whole process's
        let peak = r
            .call_peak_rss_mb
            .or(r.peak_rss_mb)
            .map_or("-".to_string(), |m| format!("{m:.0}"));
        println!(
            "{:<22} {:>8} {:>14.1} {:>12.3} {:>16} {:>9}",
            r.workload, r.threads, r.steps_per_s, r.ms_per_step, ratio, peak
        );
    }
}
