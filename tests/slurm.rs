//! `ahtsgd launch slurm` on a real one-node SLURM cluster (munge, slurmctld, slurmd started by
//! `tests/slurm/cluster.sh` under a temporary folder): the generated array job runs a sweep into
//! a shared run directory, `ahtsgd collect` merges it, and the records equal a local `--jobs 2`
//! run. With `CI` set, a cluster that cannot start fails the test; elsewhere it is skipped with
//! the reason.

mod common;

use common::read;
use std::path::{Path, PathBuf};
use std::process::Command;

const SWEEP: &str =
    "dataset d = blobs { classes = 3, features = 4, samples = 96, test_samples = 48 }
model m = mlp { hidden = [8], activation = tanh }
optimizer aht = ahtsgd { lr = 0.1, sigma = 0.01, alpha = 1.5 }
optimizer plain = sgd { lr = 0.1 }
experiment e {
  data = d
  model = m
  optimizer = sweep(aht, plain)
  seed = sweep(0..2)
  epochs = 2
  batch = 16
  eval_every = 3 steps
  log_every = 1 step
  baseline = \"plain\"
}
";

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ahtsgd"))
}

/// The cluster's daemons, stopped when dropped (also when the test fails).
struct Cluster {
    script: PathBuf,
    dir: PathBuf,
    conf: String,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(&self.script)
            .arg("stop")
            .arg(&self.dir)
            .output();
    }
}

fn start(dir: &Path) -> Result<Cluster, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slurm/cluster.sh");
    let out = Command::new(&script)
        .arg("start")
        .arg(dir)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.lines().find_map(|l| l.strip_prefix("SLURM_CONF=")) {
        Some(conf) if out.status.success() => Ok(Cluster {
            script,
            dir: dir.to_path_buf(),
            conf: conf.to_string(),
        }),
        _ => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

#[test]
fn array_job_on_a_real_cluster_matches_a_local_run() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = match start(&tmp.path().join("cluster")) {
        Ok(c) => c,
        Err(why) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI: the SLURM cluster did not start:\n{why}"
            );
            eprintln!("skipped: the SLURM cluster did not start here:\n{why}");
            return;
        }
    };
    let work = tmp.path();
    std::fs::write(work.join("sweep.aht"), SWEEP).unwrap();
    // the job script runs the binary by absolute path: no `ahtsgd` on the tasks' PATH
    let path = "/usr/local/bin:/usr/bin:/bin";
    assert!(!Path::new("/usr/local/bin/ahtsgd").exists() && !Path::new("/usr/bin/ahtsgd").exists());
    let shared = work.join("shared");
    let script = Command::new(bin())
        .args(["launch", "slurm", "sweep.aht", "--out"])
        .arg(&shared)
        .current_dir(work)
        .output()
        .unwrap();
    assert!(
        script.status.success(),
        "{}",
        String::from_utf8_lossy(&script.stderr)
    );
    std::fs::write(work.join("job.sh"), &script.stdout).unwrap();
    let sbatch = Command::new("sbatch")
        .args(["--wait", "job.sh"])
        .env("SLURM_CONF", &cluster.conf)
        .env("PATH", path)
        .current_dir(work)
        .output()
        .unwrap();
    let logs: Vec<String> = std::fs::read_dir(&shared)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("slurm-"))
        .map(|e| read(e.path()))
        .collect();
    assert!(
        sbatch.status.success(),
        "sbatch: {}{}\ntask logs:\n{}",
        String::from_utf8_lossy(&sbatch.stdout),
        String::from_utf8_lossy(&sbatch.stderr),
        logs.join("\n")
    );
    assert_eq!(logs.len(), 4, "one log per array task");

    let collect = Command::new(bin())
        .arg("collect")
        .arg(&shared)
        .output()
        .unwrap();
    assert!(
        collect.status.success(),
        "{}",
        String::from_utf8_lossy(&collect.stderr)
    );
    assert!(String::from_utf8_lossy(&collect.stdout).contains("aht − plain"));

    let local = Command::new(bin())
        .args([
            "run",
            "sweep.aht",
            "--out",
            "local",
            "--jobs",
            "2",
            "--quiet",
        ])
        .current_dir(work)
        .output()
        .unwrap();
    assert!(
        local.status.success(),
        "{}",
        String::from_utf8_lossy(&local.stderr)
    );
    for t in 0..4 {
        let trial = format!("e/trial-{t:04}/metrics.jsonl");
        assert_eq!(
            read(shared.join(&trial)),
            read(work.join("local").join(&trial)),
            "{trial}: the cluster's records differ from the local run's"
        );
    }
    // The merged summary's numbers equal the local one's (only wall times may differ).
    let numbers = |p: PathBuf| -> Vec<String> {
        read(p)
            .lines()
            .map(|l| l.split(',').take(10).collect::<Vec<_>>().join(","))
            .collect()
    };
    assert_eq!(
        numbers(shared.join("e/summary.csv")),
        numbers(work.join("local/e/summary.csv"))
    );
}
