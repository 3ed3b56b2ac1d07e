//! Command-line interface. Only this module prints.

mod check;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "ahtsgd", version, about = "Adaptive heavy-tailed SGD: check, format, plan and run .aht recipes")]
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
    /// List the trials a recipe expands to, without running anything
    Plan {
        file: PathBuf,
        #[command(flatten)]
        args: RecipeArgs,
    },
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
    match cli.command {
        Command::Check { files, args } => check::check(&files, &args),
        Command::Fmt { files, check } => check::fmt(&files, check),
        Command::Plan { file, args } => check::plan(&file, &args),
    }
}

/// Whether stderr is a terminal that wants colour.
pub fn color() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}
