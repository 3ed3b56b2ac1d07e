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
        /// GPUs per task; the trials then run with `--device cuda`
        #[arg(long)]
        gpus: Option<usize>,
        /// The ahtsgd binary the tasks run [default: this one, by absolute path]
        #[arg(long, value_name = "PATH")]
        bin: Option<PathBuf>,
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
        /// GPUs per pod (`nvidia.com/gpu`); the trials then run with `--device cuda`
        #[arg(long)]
        gpus: Option<usize>,
        /// The ahtsgd binary inside the image [default: `ahtsgd` on the image's PATH]
        #[arg(long, value_name = "PATH")]
        bin: Option<PathBuf>,
        #[command(flatten)]
        recipe: super::RecipeArgs,
    },
}

/// The recipe checked and frozen for a launch, with its trial count.
fn frozen(
    file: &Path,
    recipe: &super::RecipeArgs,
) -> Result<(ahtsgd::plan::Plan, launch::Frozen), i32> {
    let opts = super::check::options(recipe);
    let checked = ahtsgd::check::check_file(file, &opts);
    if super::check::report(&checked, false) {
        return Err(1);
    }
    // compute nodes often have no internet: what they read must be fetched here first
    let plan = checked.plan.as_ref().expect("checked");
    let trials: Vec<&ahtsgd::plan::Trial> = plan.trials.iter().collect();
    let unfetched = super::data::unfetched(&trials);
    if !unfetched.is_empty() {
        for (kind, dir, missing) in &unfetched {
            eprintln!(
                "error: {}: dataset `{kind}` has `download = true` but {} {} not in {} yet; the tasks would download it on compute nodes, which often have no internet\n  help: fetch it here first: ahtsgd data fetch {kind} --to {}",
                file.display(),
                missing.join(", "),
                if missing.len() == 1 { "is" } else { "are" },
                dir.display(),
                dir.display()
            );
        }
        return Err(1);
    }
    match launch::freeze(&checked, &stem(file), &opts) {
        Ok(f) => Ok((checked.plan.expect("checked"), f)),
        Err(e) => {
            eprintln!("error: {}: {e}", file.display());
            Err(1)
        }
    }
}

fn stem(file: &Path) -> String {
    file.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The binary the tasks run: `--bin`, else this process's own, by absolute path.
fn program(bin: Option<PathBuf>) -> Result<String, i32> {
    let path = match bin {
        Some(b) => b,
        None => match std::env::current_exe().and_then(|p| p.canonicalize()) {
            Ok(p) => p,
            Err(e) => {
                eprintln!(
                    "error: cannot find the path of this program: {e}\n  help: name the binary the tasks should run with --bin PATH"
                );
                return Err(2);
            }
        },
    };
    Ok(path.display().to_string())
}

/// The command each task runs; with GPUs the trials run on CUDA.
fn task(
    program: String,
    recipe: PathBuf,
    out: PathBuf,
    args: &super::RecipeArgs,
    threads: usize,
    gpus: Option<usize>,
) -> Task {
    Task {
        program,
        recipe,
        out,
        sets: args.sets.clone(),
        allow_large: args.allow_large,
        threads,
        device: gpus.filter(|&g| g > 0).map(|_| "cuda".into()),
    }
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
            bin,
            recipe,
        } => {
            let (plan, frozen) = match frozen(&file, &recipe) {
                Ok(f) => f,
                Err(code) => return code,
            };
            let n = plan.trials.len();
            let program = match program(bin) {
                Ok(p) => p,
                Err(code) => return code,
            };
            // SLURM opens each task's log in the run directory before the task starts; the
            // tasks may start in another folder, so every path is absolute
            let out = match std::fs::create_dir_all(&out).and_then(|_| out.canonicalize()) {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("error: cannot create {}: {e}", out.display());
                    return 2;
                }
            };
            let recipe_path = match frozen.write(&out) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("error: {e}");
                    return 2;
                }
            };
            // so that `collect` can count the trials that never wrote a record
            if let Err(e) = ahtsgd::sweep::write_planned(&out, &plan, |_| true) {
                eprintln!("error: cannot write the plan into {}: {e}", out.display());
                return 2;
            }
            let task = task(program, recipe_path, out, &recipe, cpus_per_task, gpus);
            let job = launch::Slurm {
                name: stem(&file),
                trials: n,
                throttle,
                cpus_per_task,
                time,
                mem,
                partition,
                gpus,
                workdir: std::env::current_dir().ok(),
            };
            print!("{}", launch::slurm(&job, &task));
            0
        }
        LaunchCommand::K8s {
            file,
            out,
            image,
            parallelism,
            gpus,
            bin,
            recipe,
        } => {
            if !out.is_absolute() {
                eprintln!(
                    "error: --out {} is relative\n  help: for k8s, --out is where the run volume is mounted inside the container: give an absolute path such as /runs",
                    out.display()
                );
                return 2;
            }
            let (plan, frozen) = match frozen(&file, &recipe) {
                Ok(f) => f,
                Err(code) => return code,
            };
            let n = plan.trials.len();
            let program = bin.map_or("ahtsgd".into(), |b| b.display().to_string());
            // the recipe is the ConfigMap's copy, named by `launch::k8s`
            let task = task(program, PathBuf::new(), out, &recipe, 1, gpus);
            let job = launch::K8s {
                name: stem(&file),
                trials: n,
                image,
                parallelism,
                gpus,
            };
            print!("{}", launch::k8s(&job, &task, &frozen));
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
