//! `ahtsgd launch slurm|k8s` (scripts that run a recipe's trials as array or indexed jobs, one
//! trial per task by its `plan` number) and `ahtsgd collect` (the summaries of a shared run
//! directory).

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

fn task_command(
    file: &Path,
    out: &Path,
    recipe: &super::RecipeArgs,
    index: &str,
    threads: usize,
) -> String {
    let mut cmd = format!(
        "ahtsgd run {} --trial {index} --out {} --threads {threads} --quiet",
        shell(file),
        shell(out)
    );
    for s in &recipe.sets {
        cmd.push_str(&format!(" --set {}", shell(Path::new(s))));
    }
    if recipe.allow_large {
        cmd.push_str(" --allow-large");
    }
    cmd
}

fn shell(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
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
            let mut s = String::from("#!/bin/bash\n");
            s.push_str(&format!(
                "#SBATCH --job-name=ahtsgd-{}\n",
                file.file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ));
            s.push_str(&format!(
                "#SBATCH --array=0-{}{}\n",
                n.saturating_sub(1),
                throttle.map_or(String::new(), |t| format!("%{t}"))
            ));
            s.push_str(&format!("#SBATCH --cpus-per-task={cpus_per_task}\n"));
            for (flag, v) in [("time", time), ("mem", mem), ("partition", partition)] {
                if let Some(v) = v {
                    s.push_str(&format!("#SBATCH --{flag}={v}\n"));
                }
            }
            if let Some(g) = gpus {
                s.push_str(&format!("#SBATCH --gpus={g}\n"));
            }
            s.push_str(&format!(
                "#SBATCH --output={}/slurm-%A_%a.log\n\n",
                out.display()
            ));
            s.push_str(
                "# one trial per array task, by its `ahtsgd plan` number; rerunning resumes\n",
            );
            s.push_str(&format!(
                "{}\n",
                task_command(
                    &file,
                    &out,
                    &recipe,
                    "\"$SLURM_ARRAY_TASK_ID\"",
                    cpus_per_task
                )
            ));
            print!("{s}");
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
            let cmd = task_command(&file, &out, &recipe, "\"$JOB_COMPLETION_INDEX\"", 1);
            let name = file
                .file_stem()
                .map(|s| s.to_string_lossy().to_lowercase().replace('_', "-"))
                .unwrap_or_default();
            print!(
                "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: ahtsgd-{name}\nspec:\n  completionMode: Indexed\n  completions: {n}\n  parallelism: {}\n  backoffLimit: {}\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n        - name: trial\n          image: {image}\n          command: [\"/bin/sh\", \"-c\", {:?}]\n          resources:\n            requests:\n              cpu: \"1\"\n          volumeMounts:\n            - name: runs\n              mountPath: {}\n      volumes:\n        - name: runs\n          persistentVolumeClaim:\n            claimName: ahtsgd-runs\n",
                parallelism.unwrap_or(n.min(16)),
                n * 2,
                cmd,
                out.display()
            );
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
