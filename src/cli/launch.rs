//! `ahtsgd launch slurm|k8s` (scripts that run a recipe's trials as array or indexed jobs, one
//! trial per task by its `plan` number) and `ahtsgd collect` (the summaries of a shared run
//! directory).

use ahtsgd::sweep::launch::{self, Task};
use std::path::{Path, PathBuf};

#[derive(clap::Subcommand, Debug)]
pub enum LaunchCommand {
    /// An sbatch job-array script on standard output
    Slurm {
        file: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// At most this many array tasks at once (`%` throttle)
        #[arg(long)]
        throttle: Option<usize>,
        #[arg(long, default_value_t = 1)]
        cpus_per_task: usize,
        #[arg(long)]
        time: Option<String>,
        #[arg(long)]
        mem: Option<String>,
        #[arg(long)]
        partition: Option<String>,
        #[arg(long)]
        gpus: Option<usize>,
        #[command(flatten)]
        recipe: super::RecipeArgs,
    },
    /// A Kubernetes Indexed Job manifest on standard output
    K8s {
        file: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "ahtsgd:latest")]
        image: String,
        #[arg(long)]
        parallelism: Option<usize>,
        #[command(flatten)]
        recipe: super::RecipeArgs,
    },
}

fn trial_count(file: &Path, recipe: &super::RecipeArgs) -> Result<usize, i32> {
    let checked = ahtsgd::check::check_file(file, &super::check::options(recipe));
    if super::check::report(&checked, false) {
        return Err(1);
    }
    Ok(checked.plan.map_or(0, |p| p.trials.len()))
}

fn stem(file: &Path) -> String {
    file.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub fn launch(cmd: LaunchCommand) -> i32 {
    match cmd {
        LaunchCommand::Slurm {
            file,
            out,
            throttle,
            cpus_per_task,
            time,
            mem,
            partition,
            gpus,
            recipe,
        } => {
            let n = match trial_count(&file, &recipe) {
                Ok(n) => n,
                Err(code) => return code,
            };
            // SLURM opens each task's log in the run directory before the task starts.
            if let Err(e) = std::fs::create_dir_all(&out) {
                eprintln!("error: cannot create {}: {e}", out.display());
                return 2;
            }
            let task = Task {
                recipe: file.clone(),
                out,
                sets: recipe.sets.clone(),
                allow_large: recipe.allow_large,
                threads: cpus_per_task,
            };
            let job = launch::Slurm {
                name: stem(&file),
                trials: n,
                throttle,
                cpus_per_task,
                time,
                mem,
                partition,
                gpus,
            };
            print!("{}", launch::slurm(&job, &task));
            0
        }
        LaunchCommand::K8s {
            file,
            out,
            image,
            parallelism,
            recipe,
        } => {
            let n = match trial_count(&file, &recipe) {
                Ok(n) => n,
                Err(code) => return code,
            };
            let task = Task {
                recipe: file.clone(),
                out,
                sets: recipe.sets.clone(),
                allow_large: recipe.allow_large,
                threads: 1,
            };
            let job = launch::K8s {
                name: stem(&file),
                trials: n,
                image,
                parallelism,
            };
            print!("{}", launch::k8s(&job, &task));
            0
        }
    }
}

/// Writes `summary.md` and `summary.csv` for every experiment under a run directory filled by
/// separate processes (array jobs, shards).
pub fn collect(dir: &Path) -> i32 {
    let experiments = match ahtsgd::sweep::finished(dir) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", dir.display());
            return 2;
        }
    };
    if experiments.is_empty() {
        eprintln!("{}: no finished trials found", dir.display());
        return 1;
    }
    for f in &experiments {
        let c = f.compare();
        println!("{}", c.markdown());
        if let Err(err) = c.write(&f.dir) {
            eprintln!(
                "error: cannot write the summaries of {}: {err}",
                f.experiment
            );
            return 1;
        }
    }
    0
}
