//! Cluster launchers: an sbatch array script and a Kubernetes Indexed Job manifest that run a
//! recipe's trials, one per task, by their `plan` number.
//!
//! A task runs the binary that wrote the script (by absolute path, or the one named with
//! `--bin`) on a copy of the recipe frozen at launch, with its imports inlined: editing the
//! recipe after launch cannot change what queued tasks run. The SLURM copy lies in the run
//! directory (`launch/`); the Kubernetes copy travels in a ConfigMap beside the Job.

use crate::check::{self, Checked};
use std::path::{Path, PathBuf};

/// The `ahtsgd run` command one task runs.
#[derive(Clone, Debug)]
pub struct Task {
    /// The program, as the task's shell finds it: an absolute path, or a name on its `PATH`.
    pub program: String,
    pub recipe: PathBuf,
    pub out: PathBuf,
    /// `--set` overrides, as given.
    pub sets: Vec<String>,
    pub allow_large: bool,
    pub threads: usize,
    /// `--device` for every trial (`cuda` when the job asks for GPUs).
    pub device: Option<String>,
}

impl Task {
    /// The shell command of the task whose trial number is the shell expression `index`.
    pub fn command(&self, index: &str) -> String {
        let mut cmd = format!(
            "{} run {} --trial {index} --out {} --threads {} --quiet",
            quote(Path::new(&self.program)),
            quote(&self.recipe),
            quote(&self.out),
            self.threads
        );
        for s in &self.sets {
            cmd.push_str(&format!(" --set {}", quote(Path::new(s))));
        }
        if self.allow_large {
            cmd.push_str(" --allow-large");
        }
        if let Some(d) = &self.device {
            cmd.push_str(&format!(" --device {d}"));
        }
        cmd
    }
}

/// A recipe frozen for a launch: self-contained text and the name it is kept under.
#[derive(Clone, Debug)]
pub struct Frozen {
    /// `<stem>-<first 12 hex digits of its SHA-256>.aht`.
    pub file_name: String,
    pub text: String,
}

/// Why a recipe could not be frozen.
#[derive(Debug, thiserror::Error)]
pub enum FreezeError {
    #[error("cannot write the frozen recipe {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "the recipe with its imports inlined does not give the same trials ({0}); launch from a recipe without imports"
    )]
    Differs(String),
}

/// Freezes a checked recipe: its imports inlined, checked again with the same options, and
/// refused unless every trial resolves to the same text as from the original files.
pub fn freeze(checked: &Checked, stem: &str, opts: &check::Options) -> Result<Frozen, FreezeError> {
    let text = checked.inlined();
    let hash = crate::train::record::sha256(&text);
    let file_name = format!("{stem}-{}.aht", &hash[..12]);
    let again = check::check_text(&file_name, &text, opts);
    let resolved = |c: &Checked| -> Vec<String> {
        c.plan
            .iter()
            .flat_map(|p| p.trials.iter().map(|t| t.resolved_source()))
            .collect()
    };
    if again.has_errors() {
        return Err(FreezeError::Differs("it does not check".into()));
    }
    let (a, b) = (resolved(checked), resolved(&again));
    if a != b {
        return Err(FreezeError::Differs(format!(
            "{} trials from the files, {} from the inlined text",
            a.len(),
            b.len()
        )));
    }
    Ok(Frozen { file_name, text })
}

impl Frozen {
    /// Writes the copy into `RUN_DIR/launch/` (an identical copy already there is kept) and
    /// returns its path.
    pub fn write(&self, run_dir: &Path) -> Result<PathBuf, FreezeError> {
        let path = run_dir.join("launch").join(&self.file_name);
        let io = |source| FreezeError::Io {
            path: path.display().to_string(),
            source,
        };
        if std::fs::read_to_string(&path).is_ok_and(|t| t == self.text) {
            return Ok(path);
        }
        std::fs::create_dir_all(run_dir.join("launch")).map_err(io)?;
        crate::fsutil::write_atomic(&path, self.text.as_bytes()).map_err(io)?;
        Ok(path)
    }
}

/// A word for the shell, in single quotes.
fn quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// The settings of an sbatch array job.
#[derive(Clone, Debug, Default)]
pub struct Slurm {
    /// The job's name (`ahtsgd-<name>`).
    pub name: String,
    pub trials: usize,
    /// At most this many array tasks at once (`%` throttle).
    pub throttle: Option<usize>,
    pub cpus_per_task: usize,
    pub time: Option<String>,
    pub mem: Option<String>,
    pub partition: Option<String>,
    pub gpus: Option<usize>,
    /// The tasks' working folder (`--chdir`): where `launch` ran, so that the recipe's data
    /// paths, relative to the working folder, name the same files.
    pub workdir: Option<PathBuf>,
}

/// The sbatch script: one array task per trial, each task's log in the run directory.
pub fn slurm(job: &Slurm, task: &Task) -> String {
    let mut s = String::from("#!/bin/bash\n");
    s.push_str(&format!("#SBATCH --job-name=ahtsgd-{}\n", job.name));
    s.push_str(&format!(
        "#SBATCH --array=0-{}{}\n",
        job.trials.saturating_sub(1),
        job.throttle.map_or(String::new(), |t| format!("%{t}"))
    ));
    s.push_str(&format!("#SBATCH --cpus-per-task={}\n", job.cpus_per_task));
    for (flag, v) in [
        ("time", &job.time),
        ("mem", &job.mem),
        ("partition", &job.partition),
    ] {
        if let Some(v) = v {
            s.push_str(&format!("#SBATCH --{flag}={v}\n"));
        }
    }
    if let Some(g) = job.gpus {
        s.push_str(&format!("#SBATCH --gpus={g}\n"));
    }
    if let Some(w) = &job.workdir {
        s.push_str(&format!("#SBATCH --chdir={}\n", w.display()));
    }
    s.push_str(&format!(
        "#SBATCH --output={}/slurm-%A_%a.log\n\n",
        task.out.display()
    ));
    s.push_str("# one trial per array task, by its `ahtsgd plan` number; rerunning resumes\n");
    s.push_str(&format!("{}\n", task.command("\"$SLURM_ARRAY_TASK_ID\"")));
    s
}

/// The settings of a Kubernetes Indexed Job.
#[derive(Clone, Debug, Default)]
pub struct K8s {
    /// The job's name (`ahtsgd-<name>`, lower case).
    pub name: String,
    pub trials: usize,
    pub image: String,
    pub parallelism: Option<usize>,
    /// GPUs per pod (`nvidia.com/gpu`).
    pub gpus: Option<usize>,
}

/// Where the ConfigMap holding the frozen recipe is mounted in each pod.
pub const K8S_RECIPE_DIR: &str = "/etc/ahtsgd";

/// A ConfigMap with the frozen recipe, then the Indexed Job: one completion per trial, the
/// recipe from the ConfigMap, the run directory on a volume. `task.recipe` is ignored: the
/// task reads the ConfigMap's copy.
pub fn k8s(job: &K8s, task: &Task, recipe: &Frozen) -> String {
    let n = job.trials;
    let name = job.name.to_lowercase().replace('_', "-");
    let hash = recipe
        .file_name
        .rsplit('-')
        .next()
        .unwrap_or_default()
        .trim_end_matches(".aht");
    let config = format!("ahtsgd-{name}-{hash}");
    let task = Task {
        recipe: Path::new(K8S_RECIPE_DIR).join(&recipe.file_name),
        ..task.clone()
    };
    let indented: String = recipe.text.lines().map(|l| format!("    {l}\n")).collect();
    let gpu = job.gpus.map_or(String::new(), |g| {
        format!("            limits:\n              nvidia.com/gpu: {g}\n")
    });
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {config}\ndata:\n  {}: |\n{indented}---\napiVersion: batch/v1\nkind: Job\nmetadata:\n  name: ahtsgd-{name}\nspec:\n  completionMode: Indexed\n  completions: {n}\n  parallelism: {}\n  backoffLimit: {}\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n        - name: trial\n          image: {}\n          command: [\"/bin/sh\", \"-c\", {:?}]\n          resources:\n            requests:\n              cpu: \"1\"\n{gpu}          volumeMounts:\n            - name: runs\n              mountPath: {}\n            - name: recipe\n              mountPath: {K8S_RECIPE_DIR}\n              readOnly: true\n      volumes:\n        - name: runs\n          persistentVolumeClaim:\n            claimName: ahtsgd-runs\n        - name: recipe\n          configMap:\n            name: {config}\n",
        recipe.file_name,
        job.parallelism.unwrap_or(n.min(16)),
        n * 2,
        job.image,
        task.command("\"$JOB_COMPLETION_INDEX\""),
        task.out.display()
    )
}
