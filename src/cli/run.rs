//! `ahtsgd run`: check, then train every selected trial into the run directory.

use super::RecipeArgs;
use super::progress::{self, Board, Mode, Update};
use ahtsgd::check;
use ahtsgd::sweep::{
    self,
    jobs::{JobEvent, Jobs},
    journal,
    lock::{self, LockError, TrialLock},
};
use ahtsgd::train::{self, Event, record};
use indicatif::ProgressBar;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The recipe
    pub file: PathBuf,
    #[command(flatten)]
    pub recipe: RecipeArgs,
    /// Run only this experiment
    #[arg(long)]
    pub experiment: Option<String>,
    /// Run only these trials, by `plan` number: `3` or `2-5`
    #[arg(long, value_name = "N|A-B")]
    pub trial: Option<String>,
    /// Run only the trials whose number is i modulo n: `--shard 0/4`
    #[arg(long, value_name = "i/n")]
    pub shard: Option<String>,
    /// Run directory (default runs/<recipe stem>)
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// CPU threads (default: all cores)
    #[arg(long)]
    pub threads: Option<usize>,
    /// cpu, cuda or auto (overrides the recipe)
    #[arg(long, value_parser = ["cpu", "cuda", "auto"])]
    pub device: Option<String>,
    /// f32 or f64 (overrides the recipe)
    #[arg(long, value_parser = ["f32", "f64"])]
    pub dtype: Option<String>,
    /// No progress bars
    #[arg(long)]
    pub quiet: bool,
    /// Run this many trials at once, each in its own process with its share of the threads
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Start over: remove earlier records of the selected trials
    #[arg(long)]
    pub fresh: bool,
    /// Keep a --threads above the number of cores (otherwise capped at it)
    #[arg(long)]
    pub oversubscribe: bool,
    /// Also write TensorBoard event files here once the trials end (as `export tensorboard`)
    #[arg(long, value_name = "DIR")]
    pub tensorboard: Option<PathBuf>,
}

/// The run directory: `--out`, or `runs/<recipe stem>`.
fn out_dir(args: &RunArgs) -> PathBuf {
    args.out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(args.file.file_stem().unwrap_or_default()))
}

fn parse_trials(s: &str) -> Option<(usize, usize)> {
    match s.split_once('-') {
        Some((a, b)) => Some((a.trim().parse().ok()?, b.trim().parse().ok()?)),
        None => s.trim().parse().ok().map(|n| (n, n)),
    }
}

pub fn run(args: RunArgs) -> i32 {
    let tensorboard = args.tensorboard.clone();
    let out = out_dir(&args);
    let code = run_recipe(args);
    // Whatever ended the run (an interrupt, a failed trial), the records there are exported;
    // a recipe refused before any trial started left no run directory to export.
    match tensorboard {
        Some(tb) if code != 2 && out.is_dir() => code.max(super::export_tensorboard(&out, &tb)),
        _ => code,
    }
}

fn run_recipe(args: RunArgs) -> i32 {
    let opts = super::check::options(&args.recipe);
    let first = check::check_file(&args.file, &opts);
    if super::check::report(&first, args.recipe.json) {
        return 1;
    }
    // --device / --dtype apply to every experiment
    let mut opts = opts;
    for e in &first.plan.as_ref().expect("checked").experiments {
        if let Some(d) = &args.device {
            opts.sets.push(format!("{}.device={d}", e.name));
        }
        if let Some(d) = &args.dtype {
            opts.sets.push(format!("{}.dtype={d}", e.name));
        }
    }
    let checked = if opts.sets.len() > args.recipe.sets.len() {
        let again = check::check_file(&args.file, &opts);
        // only what the overrides add: the first check's warnings were said already
        if again.has_errors() && super::check::report(&again, args.recipe.json) {
            return 1;
        }
        again
    } else {
        first
    };
    let plan = checked.plan.as_ref().expect("checked");
    if let Err(code) = super::check::known_experiment(&args.file, plan, args.experiment.as_deref())
    {
        return code;
    }
    let range = match args.trial.as_deref().map(parse_trials) {
        None => (0, usize::MAX),
        Some(Some((a, b))) if a > b => {
            eprintln!(
                "error: --trial {a}-{b} is a reversed range: it selects nothing\n  help: write the smaller number first: --trial {b}-{a}"
            );
            return 2;
        }
        Some(Some(r)) => r,
        Some(None) => {
            eprintln!("error: --trial takes a number or a range like 2-5");
            return 2;
        }
    };
    let shard = match args.shard.as_deref().map(|s| {
        s.split_once('/').and_then(|(i, n)| {
            Some((
                i.trim().parse::<usize>().ok()?,
                n.trim().parse::<usize>().ok()?,
            ))
        })
    }) {
        None => None,
        Some(Some((i, n))) if n > 0 && i < n => Some((i, n)),
        Some(_) => {
            eprintln!("error: --shard takes i/n with 0 <= i < n, like 0/4");
            return 2;
        }
    };
    // candle keeps gradient graphs only if told before the first backward pass; set it now,
    // while this process has one thread, and only when a trial needs it (it slows others)
    if plan.trials.iter().any(train::needs_second_order) {
        ahtsgd::optim::enable_second_order();
    }
    let recipe_text = checked.inlined();
    let out = out_dir(&args);
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let _ = ctrlc::set_handler(|| train::STOP.store(true, std::sync::atomic::Ordering::Relaxed));
    let selected: Vec<_> = plan
        .trials
        .iter()
        .filter(|t| args.experiment.as_ref().is_none_or(|e| &t.experiment == e))
        .filter(|t| t.index >= range.0 && t.index <= range.1)
        .filter(|t| shard.is_none_or(|(i, n)| t.index % n == i))
        .collect();
    if selected.is_empty() {
        eprintln!(
            "error: no trials selected (the recipe has {} trials, numbered from 0)",
            plan.trials.len()
        );
        return 2;
    }
    // the children of --jobs find the files there; a failed fetch starts no trial
    if !super::data::ensure_downloads(&selected, args.quiet || args.recipe.json) {
        return 1;
    }
    if let Err(e) = std::fs::create_dir_all(&out) {
        eprintln!("error: cannot create {}: {e}", out.display());
        return 2;
    }
    let experiments: std::collections::BTreeSet<String> =
        selected.iter().map(|t| t.experiment.clone()).collect();
    // the whole plan of each experiment run, so summaries can count trials with no record
    if let Err(e) = sweep::write_planned(&out, plan, |x| experiments.contains(x)) {
        eprintln!("error: cannot write the plan into {}: {e}", out.display());
        return 2;
    }
    if args.jobs > 1 && selected.len() > 1 {
        return run_parallel(&args, &selected, &out, threads);
    }
    let mode = Mode::new(args.quiet, args.recipe.json);
    let mut failed = false;
    let mut skipped = 0;
    for t in selected {
        let dir = sweep::trial_dir(&out, &t.experiment, t.index);
        let resolved = t.resolved_source();
        // held until this trial's iteration ends (or this process dies)
        let _lock = match TrialLock::acquire(&dir) {
            Ok(l) => l,
            Err(LockError::Held(holder)) => {
                eprintln!(
                    "trial {:04}: running elsewhere ({holder}); skipped",
                    t.index
                );
                skipped += 1;
                continue;
            }
            Err(e) => {
                eprintln!("error: trial {}: {e}", t.index);
                failed = true;
                continue;
            }
        };
        if args.fresh {
            remove_records(&dir);
        }
        // a record (finished, interrupted or killed) is kept or continued only for this recipe
        if let Ok(old) = std::fs::read_to_string(dir.join("resolved.aht"))
            && !sweep::record_describes(&old, t)
        {
            eprintln!(
                "error: {} holds a different recipe for trial {} (resolved.aht differs: {})\n  help: use another --out, or --fresh to start this trial over",
                dir.display(),
                t.index,
                differing_fields(&dir, &resolved)
            );
            return 1;
        }
        if let Some(prev) = record::read_summary(&dir)
            && prev.status != "interrupted"
        {
            if args.recipe.json {
                let kept = Update::Kept {
                    status: prev.status.clone(),
                };
                println!("{}", kept.json(t.index));
            } else {
                eprintln!(
                    "trial {:04} ({}): kept ({})",
                    t.index, prev.optimizer, prev.status
                );
            }
            continue;
        }
        journal::append(&out, t.index, &t.experiment, "started");
        let bar = if mode == Mode::Bars {
            ProgressBar::new(1)
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(progress::trial_style());
        bar.set_prefix(trial_name(t));
        let mut steps = None;
        let mut on_event = |e: Event| {
            if let Event::Warning { message, .. } = &e {
                bar.suspend(|| eprintln!("warning: {message}"));
            }
            let Some((trial, update)) = Update::of(&e) else {
                return;
            };
            if let Update::Started { steps: n } | Update::Resumed { steps: n, .. } = update {
                steps = Some(n);
                bar.set_length(n);
            }
            match mode {
                Mode::Json => println!("{}", update.json(trial)),
                Mode::Lines => {
                    if let Some(l) = update.line(trial, steps) {
                        eprintln!("{l}");
                    }
                }
                Mode::Bars => {
                    if let Some(s) = update.step() {
                        bar.set_position(s);
                    }
                    if let Some(m) = update.message() {
                        bar.set_message(m);
                    }
                    if let Update::Resumed { step, .. } = update {
                        bar.suspend(|| eprintln!("trial {trial:04} resumed from step {step}"));
                    }
                }
                Mode::Quiet => {
                    // a resume is said however quiet: the run does not start where it seems to
                    if let Update::Resumed { step, .. } = update {
                        eprintln!("trial {trial:04} resumed from step {step}");
                    }
                }
            }
        };
        match train::run_trial(t, &recipe_text, &dir, threads, !args.fresh, &mut on_event) {
            Ok(s) => {
                bar.finish_and_clear();
                journal::append(&out, t.index, &t.experiment, &s.status);
                if !args.recipe.json {
                    eprintln!("{}", progress::end_line(&s));
                } else {
                    println!("{}", serde_json::to_string(&s).unwrap_or_default());
                }
                let stop = s.status == "interrupted";
                if stop {
                    eprintln!(
                        "interrupted: records so far are in {}; run the same command again to resume the trial from its last checkpoint",
                        out.display()
                    );
                    return 130;
                }
            }
            Err(e) => {
                bar.finish_and_clear();
                journal::append(&out, t.index, &t.experiment, "failed");
                let d = e.diagnostic(t, plan);
                eprint!(
                    "{}",
                    ahtsgd::diagnostic::render(&[d], &checked.sources, super::color())
                );
                failed = true;
            }
        }
    }
    if !args.recipe.json {
        print_table(&experiments, &out);
        eprintln!("records: {}", out.display());
    }
    if skipped > 0 {
        eprintln!(
            "error: {skipped} trial{} skipped because another process is training {}; run the same command again once {} finished",
            if skipped == 1 { " was" } else { "s were" },
            if skipped == 1 { "it" } else { "them" },
            if skipped == 1 { "it has" } else { "they have" },
        );
        return 1;
    }
    i32::from(failed)
}

/// Removes a trial folder's records for `--fresh`, all but the lock this process holds (a
/// removed lock file would let a second process lock a new one).
fn remove_records(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_name() == lock::FILE {
            continue;
        }
        let p = e.path();
        let _ = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
    }
}

fn differing_fields(dir: &Path, new: &str) -> String {
    let old = std::fs::read_to_string(dir.join("resolved.aht")).unwrap_or_default();
    let diffs: Vec<String> = new
        .lines()
        .filter(|l| !old.lines().any(|o| o == *l))
        .map(|l| l.trim().to_string())
        .take(5)
        .collect();
    if diffs.is_empty() {
        "unknown".into()
    } else {
        diffs.join("; ")
    }
}

/// Prints the comparison of each experiment that ran, over every record in its folder (other
/// shards' too), and writes `summary.md` and `summary.csv` beside its trials.
fn print_table(experiments: &std::collections::BTreeSet<String>, out: &Path) {
    let found = match sweep::finished(out) {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "warning: cannot read {} for the summaries: {e}",
                out.display()
            );
            return;
        }
    };
    for f in found.iter().filter(|f| experiments.contains(&f.experiment)) {
        let c = f.compare();
        println!("\n{}", c.markdown());
        if let Err(e) = c.write(&f.dir) {
            eprintln!(
                "warning: cannot write the summaries of {}: {e}",
                f.experiment
            );
        }
    }
}

/// The name of a trial's bar: number, optimizer, seed.
fn trial_name(t: &ahtsgd::plan::Trial) -> String {
    let opt = t.config.obj("optimizer");
    format!(
        "trial {:04} {} seed {}",
        t.index,
        opt.decl.clone().unwrap_or_else(|| opt.kind.into()),
        t.config.f64("seed")
    )
}

/// `--jobs N`: each trial in a child process (`run --trial I`) with threads/N threads, at most N
/// at a time; the children write the same records a single run would, and resume the same way.
fn run_parallel(
    args: &RunArgs,
    selected: &[&ahtsgd::plan::Trial],
    out: &Path,
    threads: usize,
) -> i32 {
    let program = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: cannot find this program to start the jobs: {e}");
            return 2;
        }
    };
    let per_job = if args.threads.is_some() {
        threads
    } else {
        (threads / args.jobs).max(1)
    };
    let mut child_args: Vec<std::ffi::OsString> = vec![
        "run".into(),
        args.file.clone().into(),
        "--out".into(),
        out.into(),
    ];
    // the children send their progress as JSON events on standard output
    child_args.extend([
        "--threads".into(),
        per_job.to_string().into(),
        "--quiet".into(),
        "--json".into(),
    ]);
    for set in &args.recipe.sets {
        child_args.extend(["--set".into(), set.into()]);
    }
    if args.recipe.allow_large {
        child_args.push("--allow-large".into());
    }
    if args.fresh {
        child_args.push("--fresh".into());
    }
    if args.oversubscribe {
        child_args.push("--oversubscribe".into());
    }
    if let Some(d) = &args.device {
        child_args.extend(["--device".into(), d.into()]);
    }
    if let Some(d) = &args.dtype {
        child_args.extend(["--dtype".into(), d.into()]);
    }
    let jobs = Jobs {
        program,
        args: child_args,
        trial_flag: "--trial".into(),
        jobs: args.jobs,
        threads_per_job: per_job,
    };
    let indices: Vec<usize> = selected.iter().map(|t| t.index).collect();
    let names = selected.iter().map(|t| (t.index, trial_name(t))).collect();
    let mut board = Board::new(Mode::new(args.quiet, args.recipe.json), names, args.jobs);
    let status = sweep::jobs::run(&jobs, &indices, &train::STOP, &mut |e| match e {
        JobEvent::NotStarted { trial, error } => {
            board.say(&format!("error: cannot start trial {trial}: {error}"));
        }
        JobEvent::Started { trial } => board.started(trial),
        JobEvent::Output { line, .. } => board.output(&line),
        JobEvent::Ended(end) => {
            let summary = selected
                .iter()
                .find(|t| t.index == end.trial)
                .and_then(|t| record::read_summary(&sweep::trial_dir(out, &t.experiment, t.index)));
            board.ended(end.trial, end.code, &end.stderr, summary.as_ref());
        }
    });
    board.finish();
    let summaries: Vec<record::Summary> = selected
        .iter()
        .filter_map(|t| record::read_summary(&sweep::trial_dir(out, &t.experiment, t.index)))
        .collect();
    if args.recipe.json {
        for s in &summaries {
            println!("{}", serde_json::to_string(s).unwrap_or_default());
        }
    } else {
        let experiments = selected.iter().map(|t| t.experiment.clone()).collect();
        print_table(&experiments, out);
        eprintln!("records: {}", out.display());
        if status == 130 {
            eprintln!(
                "interrupted: run the same command again to resume the interrupted trials from their last checkpoints"
            );
        }
    }
    status
}
