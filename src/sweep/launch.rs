//! Cluster launchers: an sbatch array script and a Kubernetes Indexed Job manifest that run a
//! recipe's trials, one per task, by their `plan` number.

use std::path::{Path, PathBuf};

/// The `ahtsgd run` command one task runs.
#[derive(Clone, Debug)]
pub struct Task {
    pub recipe: PathBuf,
    pub out: PathBuf,
    /// `--set` overrides, as given.
    pub sets: Vec<String>,
    pub allow_large: bool,
    pub threads: usize,
}

impl Task {
    /// The shell command of the task whose trial number is the shell expression `index`.
    pub fn command(&self, index: &str) -> String {
        let mut cmd = format!(
            "ahtsgd run {} --trial {index} --out {} --threads {} --quiet",
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
        cmd
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
}

/// The Indexed Job manifest: one completion per trial, the run directory on a volume.
pub fn k8s(job: &K8s, task: &Task) -> String {
    let n = job.trials;
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: ahtsgd-{}\nspec:\n  completionMode: Indexed\n  completions: {n}\n  parallelism: {}\n  backoffLimit: {}\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n        - name: trial\n          image: {}\n          command: [\"/bin/sh\", \"-c\", {:?}]\n          resources:\n            requests:\n              cpu: \"1\"\n          volumeMounts:\n            - name: runs\n              mountPath: {}\n      volumes:\n        - name: runs\n          persistentVolumeClaim:\n            claimName: ahtsgd-runs\n",
        job.name.to_lowercase().replace('_', "-"),
        job.parallelism.unwrap_or(n.min(16)),
        n * 2,
        job.image,
        task.command("\"$JOB_COMPLETION_INDEX\""),
        task.out.display()
    )
}
