//! Command-line interface. Only this module prints.

mod bench;
mod check;
mod data;
mod gradcheck;
mod launch;
mod progress;
mod record;
mod run;

use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};

#[derive(Parser, Debug)]
#[command(
    name = "ahtsgd",
    version,
    about = "Adaptive heavy-tailed SGD: check, format, plan and run .aht recipes"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Options shared by the commands that read recipes.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RecipeArgs {
    /// Override a field: `--set experiment.epochs=1`, `--set aht.lr=0.1`
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub sets: Vec<String>,
    /// Allow sweeps larger than the experiment's `max_trials`
    #[arg(long)]
    pub allow_large: bool,
    /// Print machine-readable JSON (one object per line)
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check recipes and report every problem
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        args: RecipeArgs,
    },
    /// Rewrite recipes in the canonical style
    Fmt {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Report unformatted files instead of rewriting them
        #[arg(long)]
        check: bool,
    },
    /// Time the reference workloads (see --list)
    Bench(bench::BenchArgs),
    /// Scripts that run a recipe's trials on a cluster (SLURM array, Kubernetes Indexed Job)
    #[command(subcommand)]
    Launch(launch::LaunchCommand),
    /// Summaries of a run directory filled by separate jobs
    Collect { dir: PathBuf },
    /// Plots (PNG, SVG) and a self-contained index.html for a run directory
    Report {
        /// The run directory (`--out` of `run`)
        dir: PathBuf,
        /// Where to write the report [default: DIR/report]
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Datasets on disk
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Write a run directory's records in another tool's format
    #[command(subcommand)]
    Export(ExportCommand),
    /// Check a recipe's models' gradients and Hessian-vector products against finite differences
    Gradcheck(gradcheck::GradcheckArgs),
    /// A language server for editors, over standard input and output (docs/editors.md)
    Lsp {
        /// Accepted for clients that pass it; standard input and output are the only transport
        #[arg(long)]
        stdio: bool,
    },
    /// Evaluate a recorded trial's parameters (on its own test split or another dataset)
    Eval(record::EvalArgs),
    /// Run a recorded trial again from its resolved.aht and compare the metrics
    Rerun(record::RerunArgs),
    /// Sample text from a recorded language model (a trial on `text` data)
    Generate(record::GenerateArgs),
    /// Train every trial of a recipe and record the results
    Run(run::RunArgs),
    /// Write α-stable draws (one per line, or .npy with --out)
    Sample {
        /// Tail index in [1, 2]
        #[arg(long)]
        alpha: f64,
        /// Number of draws
        #[arg(long, default_value_t = 10)]
        count: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Write a .npy file (float64) instead of text
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print a model as the `layers` recipe it stands for: `show mlp`, `show 'resnet18 { width = 16 }'`
    Show {
        /// A model kind with optional fields, as a recipe writes it after `model NAME =`
        model: String,
        /// The name to declare it under
        #[arg(long, default_value = "net")]
        name: String,
    },
    /// List the trials a recipe expands to, without running anything
    Plan {
        file: PathBuf,
        #[command(flatten)]
        args: RecipeArgs,
        /// Also list each model's layers: shapes, parameter counts, initialisations
        #[arg(long)]
        layers: bool,
        /// List only this experiment's trials
        #[arg(long)]
        experiment: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ExportCommand {
    /// TensorBoard event files: one run per trial (experiment/arm/seed), scalars and HParams
    Tensorboard {
        /// The run directory (`--out` of `run`)
        dir: PathBuf,
        /// Where to write the event files [default: DIR/tensorboard]
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Writes the TensorBoard files of a run directory and says where; the exit code.
fn export_tensorboard(dir: &Path, out: &Path) -> i32 {
    match ahtsgd::report::tensorboard::export(dir, out) {
        Ok(done) => {
            eprintln!(
                "wrote {} TensorBoard runs ({} scalars) under {}; view with `tensorboard --logdir {}`",
                done.files.len(),
                done.scalars,
                out.display(),
                out.display()
            );
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// Runs the command line and returns the exit code.
pub fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    if let Ok(v) = std::env::var(ahtsgd::simd::ENV)
        && !ahtsgd::simd::ENV_VALUES.contains(&v.as_str())
    {
        eprintln!(
            "error: {}={v:?} names no instruction set\n  help: use one of {}, or unset it",
            ahtsgd::simd::ENV,
            ahtsgd::simd::ENV_VALUES.join(", ")
        );
        return 2;
    }
    match cli.command {
        Command::Check { files, args } => check::check(&files, &args),
        Command::Fmt { files, check } => check::fmt(&files, check),
        Command::Plan {
            file,
            args,
            layers,
            experiment,
        } => check::plan(&file, &args, layers, experiment.as_deref()),
        Command::Show { model, name } => check::show(&model, &name),
        Command::Bench(args) => bench::run(args),
        Command::Eval(args) => record::eval(args),
        Command::Generate(args) => record::generate(&args),
        Command::Gradcheck(args) => gradcheck::gradcheck(&args),
        Command::Lsp { .. } => lsp(),
        Command::Data(cmd) => data::run(cmd),
        Command::Launch(cmd) => launch::launch(cmd),
        Command::Collect { dir } => launch::collect(&dir),
        Command::Report { dir, out } => {
            let out = out.unwrap_or_else(|| dir.join("report"));
            match ahtsgd::report::write(&dir, &out) {
                Ok(w) => {
                    println!(
                        "wrote {} ({} plots as PNG and SVG)",
                        w.index.display(),
                        w.images.len() / 2
                    );
                    0
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    1
                }
            }
        }
        Command::Export(ExportCommand::Tensorboard { dir, out }) => {
            let out = out.unwrap_or_else(|| dir.join("tensorboard"));
            export_tensorboard(&dir, &out)
        }
        Command::Rerun(args) => record::rerun(args),
        Command::Run(mut args) => {
            if args.jobs == 0 {
                eprintln!("error: --jobs 0 runs nothing\n  help: give --jobs 1 or more");
                return 2;
            }
            if args.threads == Some(0) {
                eprintln!(
                    "error: --threads 0 cannot train\n  help: give --threads 1 or more, or leave it out to use every core"
                );
                return 2;
            }
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            if let Some(n) = args.threads
                && n > cores
                && !args.oversubscribe
            {
                eprintln!(
                    "warning: --threads {n} is more than this machine's {cores} cores; using {cores} (--oversubscribe keeps {n})"
                );
                args.threads = Some(cores);
            }
            if let Some(n) = args.threads {
                // SAFETY: no other thread exists yet; candle's GEMM and rayon read this at start.
                unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
            }
            let threads = args.threads;
            on_pool(threads, || run::run(args))
        }
        Command::Sample {
            alpha,
            count,
            seed,
            out,
        } => sample(alpha, count, seed, out),
    }
}

/// Runs `f` on a worker of a pool of `threads` threads (default: rayon's choice). The parallel
/// loops of the kernels and the GEMMs then start on the calling thread, which takes part;
/// called from outside a pool, each would wait for a sleeping worker to wake (an MLP's power
/// iteration on two threads ran no faster than on one).
pub(crate) fn on_pool<R: Send>(threads: Option<usize>, f: impl FnOnce() -> R + Send) -> R {
    let mut b = rayon::ThreadPoolBuilder::new();
    if let Some(n) = threads {
        b = b.num_threads(n.max(1));
    }
    match b.build() {
        Ok(pool) => pool.install(f),
        Err(_) => f(),
    }
}

/// Whether stderr is a terminal that wants colour.
pub fn color() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

fn sample(alpha: f64, count: usize, seed: u64, out: Option<PathBuf>) -> i32 {
    if !(1.0..=2.0).contains(&alpha) {
        eprintln!(
            "error: --alpha {alpha} is outside [1, 2]\n  help: the tail index of a symmetric α-stable law used here lies in [1, 2]"
        );
        return 2;
    }
    let draws = ahtsgd::optim::stable::sample(alpha, seed, count);
    match out {
        Some(path) => {
            let header =
                format!("{{'descr': '<f8', 'fortran_order': False, 'shape': ({count},), }}");
            let pad = 64 - (10 + header.len() + 1) % 64;
            let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
            let hlen = (header.len() + pad + 1) as u16;
            bytes.extend(hlen.to_le_bytes());
            bytes.extend(header.as_bytes());
            bytes.extend(std::iter::repeat_n(b' ', pad));
            bytes.push(b'\n');
            for d in draws {
                bytes.extend(d.to_le_bytes());
            }
            if let Err(e) = ahtsgd::fsutil::write_atomic(&path, &bytes) {
                eprintln!("error: cannot write {}: {e}", path.display());
                return 2;
            }
            0
        }
        None => {
            use std::io::Write;
            let mut o = std::io::BufWriter::new(std::io::stdout().lock());
            for d in draws {
                let _ = writeln!(o, "{d:e}");
            }
            0
        }
    }
}

/// `ahtsgd lsp`: serves one editor over standard input and output until it exits.
fn lsp() -> i32 {
    let (conn, io) = lsp_server::Connection::stdio();
    let served = ahtsgd::lsp::serve(&conn);
    drop(conn);
    let joined = io.join();
    match served
        .map_err(|e| e.to_string())
        .and(joined.map_err(|e| e.to_string()))
    {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: the language server's connection failed: {e}");
            1
        }
    }
}
