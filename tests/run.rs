//! `ahtsgd run` end to end, through the real binary.

mod common;

use common::{ahtsgd, ahtsgd_env, read, write};
use std::path::Path;
use std::process::Command;

const TINY: &str =
    "dataset d = blobs { classes = 3, features = 4, samples = 120, test_samples = 60 }
model m = mlp { hidden = [8], activation = tanh }
schedule s = adaptive { sharpness = power_iteration { iters = 5, every = 4 steps } }
optimizer aht = ahtsgd { lr = 0.1, sigma = 0.01, alpha = s }
optimizer plain = sgd { lr = 0.1 }
experiment e {
  data = d
  model = m
  optimizer = sweep(aht, plain)
  epochs = 2
  batch = 16
  eval_every = 4 steps
  log_every = 1 step
  baseline = \"plain\"
}
";

#[test]
fn same_recipe_and_seed_give_identical_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "tiny.aht", TINY);
    for out in ["a", "b"] {
        let o = ahtsgd(
            &["run", "tiny.aht", "--out", out, "--threads", "1"],
            tmp.path(),
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    for trial in ["trial-0000", "trial-0001"] {
        let a = read(tmp.path().join("a/e").join(trial).join("metrics.jsonl"));
        let b = read(tmp.path().join("b/e").join(trial).join("metrics.jsonl"));
        assert!(a.lines().count() > 8);
        assert_eq!(a, b, "{trial}: metrics differ between identical runs");
    }
    let m = read(tmp.path().join("a/e/trial-0000/metrics.jsonl"));
    assert!(
        m.contains("\"lambda_max\"") && m.contains("\"alpha\"") && m.contains("\"test_accuracy\"")
    );
    let s: serde_json::Value =
        serde_json::from_str(&read(tmp.path().join("a/e/trial-0000/summary.json"))).unwrap();
    assert_eq!(s["status"], "completed");
    assert_eq!(s["steps"], 14, "7 full batches of 16 per epoch");
    assert_eq!(s["resolved_hash"].as_str().unwrap().len(), 64);
    let resolved = read(tmp.path().join("a/e/trial-0000/resolved.aht"));
    let checked = ahtsgd::check::check_text("resolved.aht", &resolved, &Default::default());
    assert!(!checked.has_errors(), "resolved.aht must be a valid recipe");
}

#[test]
fn finished_trials_are_kept_and_changed_recipes_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "tiny.aht", TINY);
    let o = ahtsgd(&["run", "tiny.aht", "--out", "r"], tmp.path());
    assert!(o.status.success());
    let before = read(tmp.path().join("r/e/trial-0001/metrics.jsonl"));
    let again = ahtsgd(&["run", "tiny.aht", "--out", "r"], tmp.path());
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("kept"));
    assert_eq!(
        before,
        read(tmp.path().join("r/e/trial-0001/metrics.jsonl"))
    );
    let journal = read(tmp.path().join("r/journal.jsonl"));
    assert_eq!(
        journal
            .lines()
            .filter(|l| l.contains("\"completed\""))
            .count(),
        2
    );
    let changed = ahtsgd(
        &["run", "tiny.aht", "--out", "r", "--set", "plain.lr=0.2"],
        tmp.path(),
    );
    assert_eq!(changed.status.code(), Some(1));
    let err = String::from_utf8_lossy(&changed.stderr);
    assert!(err.contains("lr = 0.2") && err.contains("--fresh"), "{err}");
}

#[test]
fn divergence_is_a_result_not_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "hot.aht",
        &TINY
            .replace(
                "optimizer plain = sgd { lr = 0.1 }",
                "optimizer plain = sgd { lr = 1e4 }",
            )
            .replace("epochs = 2", "epochs = 2\n  diverge_loss = 50"),
    );
    let o = ahtsgd(
        &["run", "hot.aht", "--out", "r", "--trial", "1"],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: serde_json::Value =
        serde_json::from_str(&read(tmp.path().join("r/e/trial-0001/summary.json"))).unwrap();
    assert_eq!(s["status"], "diverged");
    assert!(s["diverged_at_step"].as_u64().is_some());
    assert!(s["cause"].as_str().unwrap().contains("loss"));
}

#[test]
fn set_and_trial_selection_apply() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "tiny.aht", TINY);
    let o = ahtsgd(
        &[
            "run",
            "tiny.aht",
            "--out",
            "r",
            "--trial",
            "1",
            "--set",
            "e.epochs=1",
        ],
        tmp.path(),
    );
    assert!(o.status.success());
    assert!(!tmp.path().join("r/e/trial-0000").exists());
    let s: serde_json::Value =
        serde_json::from_str(&read(tmp.path().join("r/e/trial-0001/summary.json"))).unwrap();
    assert_eq!(s["steps"], 7);
}

#[test]
fn cuda_in_a_cpu_build_says_how_to_build_it() {
    if cfg!(feature = "cuda") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "tiny.aht", TINY);
    let o = ahtsgd(
        &[
            "run", "tiny.aht", "--out", "r", "--trial", "1", "--device", "cuda",
        ],
        tmp.path(),
    );
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--features cuda") && err.contains("tiny.aht:"),
        "{err}"
    );
}

#[test]
fn check_reports_every_error_with_locations_and_exit_1() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "bad.aht",
        "model m = mlp { hiden = [8] }\noptimizer o = sgd { lr = -1 }\n",
    );
    let o = ahtsgd(&["check", "bad.aht"], tmp.path());
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad.aht:1:17") && err.contains("bad.aht:2:26"),
        "{err}"
    );
    let j = ahtsgd(&["check", "--json", "bad.aht"], tmp.path());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&j.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["code"], "aht::check::unknown_field");
    assert_eq!(lines[0]["line"], 1);
}

#[test]
fn plain_sgd_trains_the_mlp_on_the_bundled_data_above_85_percent() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "mnist.aht",
        "experiment e { data = mnist_mini {}, model = mlp { hidden = [128] }, optimizer = sgd { lr = 0.1 }, epochs = 3, batch = 64 }\n",
    );
    let o = ahtsgd(&["run", "mnist.aht", "--out", "r"], tmp.path());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: serde_json::Value =
        serde_json::from_str(&read(tmp.path().join("r/e/trial-0000/summary.json"))).unwrap();
    let acc = s["final"]["test_accuracy"].as_f64().unwrap();
    assert!(acc > 0.85, "test accuracy {acc}");
}

#[test]
fn sample_writes_reproducible_draws() {
    let tmp = tempfile::tempdir().unwrap();
    let a = ahtsgd(
        &["sample", "--alpha", "1.5", "--count", "5", "--seed", "2"],
        tmp.path(),
    );
    let b = ahtsgd(
        &["sample", "--alpha", "1.5", "--count", "5", "--seed", "2"],
        tmp.path(),
    );
    assert_eq!(a.stdout, b.stdout);
    assert_eq!(String::from_utf8_lossy(&a.stdout).lines().count(), 5);
    let o = ahtsgd(
        &[
            "sample", "--alpha", "1.5", "--count", "100", "--out", "x.npy",
        ],
        tmp.path(),
    );
    assert!(o.status.success());
    let bytes = std::fs::read(tmp.path().join("x.npy")).unwrap();
    assert!(bytes.starts_with(b"\x93NUMPY"));
    assert_eq!(bytes.len() % 64, (800 % 64), "header padded to 64 bytes");
    let bad = ahtsgd(&["sample", "--alpha", "2.5"], tmp.path());
    assert_eq!(bad.status.code(), Some(2));
}

/// [`TINY`] with a checkpoint every 3 steps.
fn tiny_checkpointed() -> String {
    TINY.replace(
        "log_every = 1 step",
        "log_every = 1 step\n  checkpoint_every = 3 steps",
    )
}

/// An interrupted trial (the Ctrl-C path, triggered after a fixed step by a test hook) leaves a
/// checkpoint; running the same command again finishes it with exactly the numbers of an
/// uninterrupted run.
#[test]
fn interrupted_trials_resume_to_identical_results() {
    let tmp = tempfile::tempdir().unwrap();
    // the stop comes at step 8, between two checkpoints
    write(tmp.path(), "tiny.aht", &tiny_checkpointed());
    let whole = ahtsgd(
        &["run", "tiny.aht", "--out", "whole", "--threads", "1"],
        tmp.path(),
    );
    assert!(whole.status.success());
    let cut = ahtsgd_env(
        &["run", "tiny.aht", "--out", "cut", "--threads", "1"],
        tmp.path(),
        &[("AHTSGD_STOP_AFTER", "8")],
    );
    assert_eq!(
        cut.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&cut.stderr)
    );
    assert!(String::from_utf8_lossy(&cut.stderr).contains("run the same command again"));
    let s: serde_json::Value =
        serde_json::from_str(&read(tmp.path().join("cut/e/trial-0000/summary.json"))).unwrap();
    assert_eq!(s["status"], "interrupted");
    assert!(
        tmp.path()
            .join("cut/e/trial-0000/checkpoints/latest.json")
            .exists()
    );
    let resumed = ahtsgd(
        &["run", "tiny.aht", "--out", "cut", "--threads", "1"],
        tmp.path(),
    );
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    for trial in ["trial-0000", "trial-0001"] {
        let a = read(tmp.path().join("whole/e").join(trial).join("metrics.jsonl"));
        let b = read(tmp.path().join("cut/e").join(trial).join("metrics.jsonl"));
        assert_eq!(
            a, b,
            "{trial}: resumed run differs from the uninterrupted one"
        );
    }
    let s: serde_json::Value =
        serde_json::from_str(&read(tmp.path().join("cut/e/trial-0000/summary.json"))).unwrap();
    assert_eq!(s["status"], "completed");
    // and the resumed run says where it continued from: the checkpoint the interrupt wrote
    let from = s["resumed_from"][0].as_u64().unwrap();
    assert_eq!(from, 8);
    let said = String::from_utf8_lossy(&resumed.stderr);
    assert!(
        said.contains(&format!("trial 0000 resumed from step {from}\n")),
        "{said}"
    );
}

/// A record written by an earlier build, whose `resolved.aht` lacks a field added since (its
/// default keeps the old meaning), is the same trial: the run resumes it to the numbers of an
/// uninterrupted run. A record whose written values differ is refused, naming them.
#[test]
fn a_record_from_before_a_new_default_resumes_and_a_changed_one_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "tiny.aht", &tiny_checkpointed());
    let run = |out: &str, env: &[(&str, &str)]| {
        ahtsgd_env(
            &[
                "run",
                "tiny.aht",
                "--out",
                out,
                "--threads",
                "1",
                "--trial",
                "0",
            ],
            tmp.path(),
            env,
        )
    };
    assert!(run("whole", &[]).status.success());
    assert_eq!(
        run("cut", &[("AHTSGD_STOP_AFTER", "8")]).status.code(),
        Some(130)
    );
    let resolved = tmp.path().join("cut/e/trial-0000/resolved.aht");
    let text = read(&resolved);
    let older: String = text
        .lines()
        .filter(|l| l.trim() != "label_noise = 0")
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        older.len() < text.len(),
        "a defaulted field to leave out:\n{text}"
    );
    write(tmp.path(), "cut/e/trial-0000/resolved.aht", &older);
    let resumed = run("cut", &[]);
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert_eq!(
        read(tmp.path().join("whole/e/trial-0000/metrics.jsonl")),
        read(tmp.path().join("cut/e/trial-0000/metrics.jsonl"))
    );
    // the same record with another learning rate is another trial
    assert!(run("other", &[("AHTSGD_STOP_AFTER", "8")]).status.code() == Some(130));
    let other = read(tmp.path().join("other/e/trial-0000/resolved.aht"));
    assert!(other.contains("lr = 0.1\n"), "{other}");
    write(
        tmp.path(),
        "other/e/trial-0000/resolved.aht",
        &other.replacen("lr = 0.1\n", "lr = 0.2\n", 1),
    );
    let refused = run("other", &[]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success()
            && err.contains("holds a different recipe")
            && err.contains("lr = 0.1"),
        "{err}"
    );
}

#[test]
fn eval_and_rerun_work_on_a_recorded_trial() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "tiny.aht", TINY);
    assert!(
        ahtsgd(
            &["run", "tiny.aht", "--out", "r", "--threads", "1"],
            tmp.path()
        )
        .status
        .success()
    );
    let s: serde_json::Value =
        serde_json::from_str(&read(tmp.path().join("r/e/trial-0001/summary.json"))).unwrap();
    let e = ahtsgd(&["eval", "r/e/trial-0001", "--json"], tmp.path());
    assert!(e.status.success(), "{}", String::from_utf8_lossy(&e.stderr));
    let v: serde_json::Value = serde_json::from_slice(&e.stdout).unwrap();
    assert_eq!(
        v["test_accuracy"], s["final"]["test_accuracy"],
        "eval reproduces the final evaluation"
    );
    // another dataset: the same task with a different test-set size
    let other = ahtsgd(
        &[
            "eval",
            "r/e/trial-0001",
            "--json",
            "--data",
            "blobs { classes = 3, features = 4, samples = 120, test_samples = 30 }",
        ],
        tmp.path(),
    );
    assert!(
        other.status.success(),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&other.stdout).unwrap();
    assert_eq!(v["samples"], 30);
    let wrong = ahtsgd(
        &["eval", "r/e/trial-0001", "--data", "blobs { features = 7 }"],
        tmp.path(),
    );
    assert_eq!(wrong.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("fc0.weight"));
    let again = ahtsgd_env(
        &["rerun", "r/e/trial-0000", "--out", "again"],
        tmp.path(),
        &[("RAYON_NUM_THREADS", "1")],
    );
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("identical"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    // a record whose noise came from another kernel: the rerun's verdict names both
    assert!(s["noise_kernel"].as_str().is_some_and(|k| !k.is_empty()));
    let dir = tmp.path().join("r/e/trial-0000");
    let mut summary: serde_json::Value =
        serde_json::from_str(&read(dir.join("summary.json"))).unwrap();
    summary["noise_kernel"] = "cms-f32/0".into();
    write(&dir, "summary.json", &summary.to_string());
    let metrics = read(dir.join("metrics.jsonl"));
    let (_, rest) = metrics.split_once('\n').unwrap();
    write(&dir, "metrics.jsonl", &format!("{{}}\n{rest}"));
    let other = ahtsgd_env(
        &["rerun", "r/e/trial-0000", "--out", "again2"],
        tmp.path(),
        &[("RAYON_NUM_THREADS", "1")],
    );
    let said = String::from_utf8_lossy(&other.stdout);
    assert!(
        said.contains("differs at line 1") && said.contains("`cms-f32/0`"),
        "{said}"
    );
}

#[test]
fn a_model_that_does_not_fit_its_data_is_a_diagnostic_at_the_model() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "bad.aht",
        "dataset d = blobs { features = 5 }\nmodel conv = cnn { channels = [4] }\nexperiment e { data = d, model = conv, optimizer = sgd { lr = 0.1 }, epochs = 1 }\n",
    );
    let o = ahtsgd(&["run", "bad.aht", "--out", "r"], tmp.path());
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("aht::check::shape") && err.contains("bad.aht:2:7") && err.contains("[5]"),
        "{err}"
    );
}

#[test]
fn a_closed_pipe_ends_output_quietly() {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_ahtsgd"))
        .args(["sample", "--alpha", "1.5", "--count", "5000000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 64];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap(); // then the pipe closes
    let out = child.wait_with_output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    assert_ne!(out.status.code(), Some(101));
}

/// Two optimizers × five seeds on the bundled MNIST subset (cut to 600 training images).
const SWEEP: &str = "dataset d = mnist_mini { train_limit = 600, test_limit = 100 }
model m = mlp { hidden = [16] }
optimizer aht = ahtsgd { lr = 0.1, sigma = 0.01, alpha = adaptive { sharpness = power_iteration { iters = 3, every = 5 steps } } }
optimizer plain = sgd { lr = 0.1 }
experiment e {
  data = d
  model = m
  optimizer = sweep(aht, plain)
  seed = sweep(0..5)
  epochs = 20
  batch = 8
  log_every = 1 step
  checkpoint_every = 20 steps
  baseline = \"plain\"
}
";
const SWEEP_TRIALS: usize = 10;

fn all_metrics(dir: &Path) -> Vec<String> {
    (0..SWEEP_TRIALS)
        .map(|i| read(dir.join(format!("e/trial-{i:04}/metrics.jsonl"))))
        .collect()
}

/// `--jobs 2` gives the records a one-by-one run gives; after `kill -9` of the whole sweep
/// (parent and children) mid-way, the same command finishes it with the same results.
#[test]
fn parallel_sweeps_match_and_survive_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "sweep.aht", SWEEP);
    let one = ahtsgd(
        &["run", "sweep.aht", "--out", "one", "--threads", "1"],
        tmp.path(),
    );
    assert!(
        one.status.success(),
        "{}",
        String::from_utf8_lossy(&one.stderr)
    );
    let par = ahtsgd(
        &[
            "run",
            "sweep.aht",
            "--out",
            "par",
            "--jobs",
            "2",
            "--threads",
            "1",
        ],
        tmp.path(),
    );
    assert!(
        par.status.success(),
        "{}",
        String::from_utf8_lossy(&par.stderr)
    );
    assert!(
        String::from_utf8_lossy(&par.stdout).contains("aht − plain"),
        "the paired table is printed"
    );
    assert_eq!(
        all_metrics(&tmp.path().join("one")),
        all_metrics(&tmp.path().join("par"))
    );

    use std::os::unix::process::CommandExt;
    let mut child = Command::new(env!("CARGO_BIN_EXE_ahtsgd"))
        .args([
            "run",
            "sweep.aht",
            "--out",
            "killed",
            "--jobs",
            "2",
            "--threads",
            "1",
        ])
        .current_dir(tmp.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    // wait until some trial has checkpointed, then kill the whole group
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        let any = (0..SWEEP_TRIALS).any(|i| {
            tmp.path()
                .join(format!("killed/e/trial-{i:04}/checkpoints/latest.json"))
                .exists()
        });
        if any {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let pgid = child.id();
    let killed = Command::new("kill")
        .args(["-s", "KILL", "--", &format!("-{pgid}")])
        .status()
        .unwrap();
    assert!(killed.success());
    let _ = child.wait();
    let finished = (0..SWEEP_TRIALS)
        .filter(|i| {
            tmp.path()
                .join(format!("killed/e/trial-{i:04}/summary.json"))
                .exists()
        })
        .count();
    assert!(
        finished < SWEEP_TRIALS,
        "the kill came after the sweep had finished"
    );
    let again = ahtsgd(
        &[
            "run",
            "sweep.aht",
            "--out",
            "killed",
            "--jobs",
            "2",
            "--threads",
            "1",
        ],
        tmp.path(),
    );
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(
        all_metrics(&tmp.path().join("one")),
        all_metrics(&tmp.path().join("killed")),
        "resumed sweep equals the uninterrupted one"
    );
}

/// The SLURM script's task command, run here for every array index as SLURM would (no cluster
/// in this test), fills a shared run directory; `collect` then gives the same comparison as a
/// local `--jobs 2` run; `--shard` splits the trials the same way.
#[test]
fn array_job_tasks_and_shards_reproduce_a_local_sweep() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "sweep.aht",
        &SWEEP.replace("epochs = 20", "epochs = 2"),
    );
    let local = ahtsgd(
        &[
            "run",
            "sweep.aht",
            "--out",
            "local",
            "--jobs",
            "2",
            "--threads",
            "1",
        ],
        tmp.path(),
    );
    assert!(local.status.success());
    let script = ahtsgd(
        &[
            "launch",
            "slurm",
            "sweep.aht",
            "--out",
            "shared",
            "--throttle",
            "3",
        ],
        tmp.path(),
    );
    let script = String::from_utf8(script.stdout).unwrap();
    assert!(
        script.contains("#SBATCH --array=0-9%3") && script.contains("#SBATCH --cpus-per-task=1"),
        "{script}"
    );
    // the task runs this binary by absolute path, on the recipe frozen in the run directory
    let bin = Path::new(env!("CARGO_BIN_EXE_ahtsgd"))
        .canonicalize()
        .unwrap();
    let task = script
        .lines()
        .find(|l| l.contains("--trial"))
        .unwrap()
        .to_string();
    assert!(
        task.starts_with(&format!("'{}' run '", bin.display())),
        "{task}"
    );
    let shared = tmp.path().canonicalize().unwrap().join("shared");
    assert!(
        task.contains(&format!("'{}/launch/sweep-", shared.display())),
        "{task}"
    );
    // editing the recipe after launch changes nothing queued
    write(
        tmp.path(),
        "sweep.aht",
        &SWEEP
            .replace("epochs = 20", "epochs = 2")
            .replace("lr = 0.1 }", "lr = 0.3 }"),
    );
    // no `ahtsgd` on PATH, and another working folder
    let elsewhere = tempfile::tempdir().unwrap();
    for i in 0..SWEEP_TRIALS {
        let o = Command::new("bash")
            .args(["-c", &task])
            .env("SLURM_ARRAY_TASK_ID", i.to_string())
            .env("PATH", "/usr/bin:/bin")
            .current_dir(elsewhere.path())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "task {i}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    write(
        tmp.path(),
        "sweep.aht",
        &SWEEP.replace("epochs = 20", "epochs = 2"),
    );
    let c = ahtsgd(&["collect", "shared"], tmp.path());
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
    assert_eq!(
        all_metrics(&tmp.path().join("local")),
        all_metrics(&tmp.path().join("shared"))
    );
    assert_eq!(
        read(tmp.path().join("local/e/summary.csv")).lines().count(),
        read(tmp.path().join("shared/e/summary.csv"))
            .lines()
            .count()
    );
    for shard in ["0/2", "1/2"] {
        assert!(
            ahtsgd(
                &[
                    "run",
                    "sweep.aht",
                    "--out",
                    "sharded",
                    "--shard",
                    shard,
                    "--threads",
                    "1"
                ],
                tmp.path()
            )
            .status
            .success()
        );
    }
    assert_eq!(
        all_metrics(&tmp.path().join("local")),
        all_metrics(&tmp.path().join("sharded"))
    );
    let k8s = String::from_utf8(
        ahtsgd(
            &["launch", "k8s", "sweep.aht", "--out", "/runs"],
            tmp.path(),
        )
        .stdout,
    )
    .unwrap();
    assert!(
        k8s.contains("completionMode: Indexed")
            && k8s.contains("completions: 10")
            && k8s.contains("JOB_COMPLETION_INDEX")
            && k8s.contains("'ahtsgd' run '/etc/ahtsgd/sweep-")
            && !k8s.contains("--device"),
        "{k8s}"
    );
    // the recipe travels in a ConfigMap, mounted where the command reads it
    let (config, job) = k8s.split_once("\n---\n").unwrap();
    assert!(config.contains("kind: ConfigMap") && job.contains("configMap:"));
    let body: String = config
        .lines()
        .skip_while(|l| !l.ends_with(": |"))
        .skip(1)
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    assert_eq!(body, read(tmp.path().join("sweep.aht")));
    assert!(
        ahtsgd(&["launch", "k8s", "sweep.aht", "--out", "runs"], tmp.path())
            .status
            .code()
            == Some(2),
        "a relative --out is refused for k8s"
    );
}

/// `--gpus` selects the CUDA device in both launchers; `--bin` names the binary the tasks run.
#[test]
fn launchers_select_the_gpu_and_the_binary() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "tiny.aht", TINY);
    let slurm = ahtsgd(
        &[
            "launch",
            "slurm",
            "tiny.aht",
            "--out",
            "r",
            "--gpus",
            "1",
            "--bin",
            "/opt/ahtsgd/bin/ahtsgd",
        ],
        tmp.path(),
    );
    let s = String::from_utf8_lossy(&slurm.stdout);
    assert!(
        s.contains("#SBATCH --gpus=1")
            && s.contains("'/opt/ahtsgd/bin/ahtsgd' run ")
            && s.contains(" --device cuda"),
        "{s}"
    );
    let k8s = ahtsgd(
        &["launch", "k8s", "tiny.aht", "--out", "/runs", "--gpus", "2"],
        tmp.path(),
    );
    let k = String::from_utf8_lossy(&k8s.stdout);
    assert!(
        k.contains("nvidia.com/gpu: 2") && k.contains(" --device cuda"),
        "{k}"
    );
}

/// A recipe with imports is frozen as one self-contained file that gives the same trials.
#[test]
fn a_launched_recipe_with_imports_is_frozen_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let (lib, main) = TINY.split_at(TINY.find("experiment").unwrap());
    // version 2: a version-1 recipe's warnings would name the two files differently
    write(tmp.path(), "lib.aht", &format!("version = 2\n{lib}"));
    write(
        tmp.path(),
        "main.aht",
        &format!("version = 2\nimport \"lib.aht\"\n{main}"),
    );
    let script = ahtsgd(&["launch", "slurm", "main.aht", "--out", "r"], tmp.path());
    assert!(
        script.status.success(),
        "{}",
        String::from_utf8_lossy(&script.stderr)
    );
    let frozen: Vec<_> = std::fs::read_dir(tmp.path().join("r/launch"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(frozen.len(), 1);
    let text = read(&frozen[0]);
    assert!(
        !text.lines().any(|l| l.starts_with("import ")) && text.contains("model m = mlp"),
        "{text}"
    );
    let a = ahtsgd(&["plan", "main.aht", "--json"], tmp.path());
    let b = ahtsgd(&["plan", frozen[0].to_str().unwrap(), "--json"], tmp.path());
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    assert_eq!(a.stdout, b.stdout);
}

/// The same run on every instruction set this machine has (`AHTSGD_SIMD` caps the one used)
/// records the same metrics, bit for bit: the sampler's kernels and the fused update agree.
/// The layers are wide enough for the vector kernels' full groups of draws, not only their
/// remainders.
#[test]
fn every_instruction_set_trains_to_the_same_bits() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = "dataset d = blobs { classes = 3, features = 16, samples = 96, test_samples = 32 }
model m = mlp { hidden = [64] }
optimizer aht = ahtsgd { lr = 0.1, sigma = 0.01, alpha = fixed(1.4), clip = coordinate(0.05) }
experiment e { data = d, model = m, optimizer = aht, epochs = 1, batch = 16, log_every = 1 step }
";
    write(tmp.path(), "isa.aht", recipe);
    let run = |out: &str, env: &[(&str, &str)]| {
        let o = ahtsgd_env(
            &["run", "isa.aht", "--out", out, "--threads", "2", "--quiet"],
            tmp.path(),
            env,
        );
        assert!(
            o.status.success(),
            "{env:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        read(tmp.path().join(out).join("e/trial-0000/metrics.jsonl"))
    };
    let best = run("best", &[]);
    assert!(best.contains("\"noise_norm\""), "{best}");
    assert_eq!(run("avx2", &[("AHTSGD_SIMD", "avx2")]), best, "AVX2");
    assert_eq!(
        run("baseline", &[("AHTSGD_SIMD", "baseline")]),
        best,
        "baseline x86-64"
    );
    let o = ahtsgd_env(
        &["check", "isa.aht"],
        tmp.path(),
        &[("AHTSGD_SIMD", "avx3")],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("use one of avx512, avx2, baseline"));
}

/// Flags that cannot mean what they say: a thread count above the cores is capped with a
/// warning (it had run for minutes without output), `--jobs 0` and a reversed `--trial`
/// range are refused with the fix.
#[test]
fn impossible_run_flags_are_capped_or_refused() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "tiny.aht", TINY);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let many = ahtsgd(
        &[
            "run",
            "tiny.aht",
            "--out",
            "r",
            "--trial",
            "1",
            "--threads",
            "2000",
        ],
        tmp.path(),
    );
    let err = String::from_utf8_lossy(&many.stderr);
    assert!(many.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "warning: --threads 2000 is more than this machine's {cores} cores; using {cores}"
        )),
        "{err}"
    );
    let s: serde_json::Value =
        serde_json::from_str(&read(tmp.path().join("r/e/trial-0001/summary.json"))).unwrap();
    assert_eq!(s["threads"], cores);
    let o = ahtsgd(
        &["run", "tiny.aht", "--out", "r", "--jobs", "0"],
        tmp.path(),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--jobs 0 runs nothing"));
    let o = ahtsgd(
        &["run", "tiny.aht", "--out", "r", "--trial", "5-2"],
        tmp.path(),
    );
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("reversed") && err.contains("--trial 2-5"),
        "{err}"
    );
}

/// Summaries under one rule, on the binary: a partly run sweep counts its missing trials
/// (`collect` too), an arm whose every trial diverged says so in words and stays in the paired
/// table, and the time per epoch is training time (sharpness included), split out in
/// `summary.json` from evaluation.
#[test]
fn summaries_count_unfinished_trials_apart_and_time_training_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = "dataset d = blobs { classes = 3, features = 4, samples = 120, test_samples = 60 }
model m = mlp { hidden = [8], activation = tanh }
optimizer aht = ahtsgd { lr = 0.1, sigma = 0.01, alpha = adaptive { sharpness = power_iteration { iters = 3, every = 2 steps } } }
optimizer hot = sgd { lr = 1e4 }
optimizer plain = sgd { lr = 0.1 }
experiment e {
  data = d
  model = m
  optimizer = sweep(aht, hot, plain)
  seed = sweep(0..2)
  epochs = 2
  batch = 16
  eval_every = 1 step
  diverge_loss = 50
  baseline = \"plain\"
}
";
    write(tmp.path(), "s.aht", recipe);
    // trials 0-3: aht's two seeds, hot's two; plain (4, 5) not run
    let o = ahtsgd(
        &[
            "run",
            "s.aht",
            "--out",
            "r",
            "--trial",
            "0-3",
            "--threads",
            "1",
        ],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let md = read(tmp.path().join("r/e/summary.md"));
    assert!(
        md.contains("| aht | 2 | 0 | 0 | 0 |")
            && md.contains("| hot | 0 | 2 | 0 | 0 | no finished trial |")
            && md.contains("| plain | 0 | 0 | 0 | 2 | no finished trial |"),
        "{md}"
    );
    assert!(
        md.contains("| hot − plain | 0 | no seed finished in both arms |"),
        "{md}"
    );
    // collect says the same of the shared folder
    std::fs::remove_file(tmp.path().join("r/e/summary.md")).unwrap();
    let c = ahtsgd(&["collect", "r"], tmp.path());
    assert!(c.status.success());
    assert_eq!(read(tmp.path().join("r/e/summary.md")), md);
    // the rest of the sweep: every pair of aht and plain finished
    let o = ahtsgd(
        &["run", "s.aht", "--out", "r", "--threads", "1"],
        tmp.path(),
    );
    assert!(o.status.success());
    let md = read(tmp.path().join("r/e/summary.md"));
    assert!(
        md.contains("| plain | 2 | 0 | 0 | 0 |") && md.contains("| aht − plain | 2 |"),
        "{md}"
    );
    let s: serde_json::Value =
        serde_json::from_str(&read(tmp.path().join("r/e/trial-0000/summary.json"))).unwrap();
    let (train, sharp, eval) = (
        s["train_seconds"].as_f64().unwrap(),
        s["sharpness_seconds"].as_f64().unwrap(),
        s["eval_seconds"].as_f64().unwrap(),
    );
    assert!(train > 0.0 && sharp > 0.0 && eval > 0.0, "{s}");
    assert!(train + sharp + eval <= s["wall_seconds"].as_f64().unwrap());
    let epochs = s["steps"].as_f64().unwrap() / s["steps_per_epoch"].as_f64().unwrap();
    assert_eq!(epochs, 2.0);
    let csv = read(tmp.path().join("r/e/summary.csv"));
    let head: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = head
        .iter()
        .position(|h| *h == "train_seconds_per_epoch_mean")
        .unwrap();
    let aht = csv.lines().find(|l| l.starts_with("e,aht,")).unwrap();
    let per_epoch: f64 = aht.split(',').nth(col).unwrap().parse().unwrap();
    let s1: serde_json::Value =
        serde_json::from_str(&read(tmp.path().join("r/e/trial-0001/summary.json"))).unwrap();
    let each = |s: &serde_json::Value| {
        (s["train_seconds"].as_f64().unwrap() + s["sharpness_seconds"].as_f64().unwrap()) / 2.0
    };
    assert!(
        (per_epoch - (each(&s) + each(&s1)) / 2.0).abs() < 1e-9,
        "{per_epoch}"
    );
}

/// `bench --json` gives each workload's peak memory; a workload whose process is killed is
/// reported as failed with its cause, the others still run, and the exit is non-zero.
#[test]
fn bench_reports_peak_memory_and_a_killed_workload() {
    let tmp = tempfile::tempdir().unwrap();
    let o = ahtsgd_env(
        &[
            "bench", "mlp-sgd", "sampler", "--json", "--steps", "2", "--reps", "1", "--warmup", "0",
        ],
        tmp.path(),
        &[("AHTSGD_BENCH_KILL", "sampler")],
    );
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0]["workload"], "mlp-sgd");
    assert!(
        lines[0]["peak_rss_mb"].as_f64().is_some_and(|m| m > 1.0),
        "{out}"
    );
    assert_eq!(lines[1]["workload"], "sampler");
    let cause = lines[1]["failed"].as_str().unwrap();
    assert!(
        cause.contains("SIGKILL") && cause.contains("out of memory"),
        "{cause}"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("sampler failed"), "{err}");
}

/// `--json` prints a step event at every logged step and an evaluation event at every
/// evaluation, with the figures and epoch numbers of `metrics.jsonl` and `summary.json`.
#[test]
fn json_events_match_the_records() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "tiny.aht", TINY);
    let o = ahtsgd(
        &[
            "run",
            "tiny.aht",
            "--out",
            "r",
            "--threads",
            "1",
            "--json",
            "--trial",
            "0",
        ],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v.get("event").is_some())
        .collect();
    let of = |kind: &str| -> Vec<&serde_json::Value> {
        events.iter().filter(|e| e["event"] == kind).collect()
    };
    let metrics: Vec<serde_json::Value> = read(tmp.path().join("r/e/trial-0000/metrics.jsonl"))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let train: Vec<&serde_json::Value> = metrics
        .iter()
        .filter(|m| m.get("train_loss").is_some())
        .collect();
    let steps = of("step");
    assert_eq!(steps.len(), train.len(), "one step event per logged step");
    for (e, m) in steps.iter().zip(&train) {
        assert_eq!(e["step"], m["step"]);
        assert_eq!(e["epoch"], m["epoch"]);
        assert_eq!(e["train_loss"], m["train_loss"]);
        assert_eq!(e["alpha"], m["alpha"]);
    }
    let summary: serde_json::Value =
        serde_json::from_str(&read(tmp.path().join("r/e/trial-0000/summary.json"))).unwrap();
    let evals = of("eval");
    let recorded = summary["evals"].as_array().unwrap();
    assert_eq!(evals.len(), recorded.len());
    for (e, r) in evals.iter().zip(recorded) {
        // epochs completed, as the summary counts them (the last evaluation is epoch 2)
        assert_eq!(e["epoch"], r["epoch"]);
        assert_eq!(e["test_accuracy"], r["test_accuracy"]);
    }
    assert_eq!(evals.last().unwrap()["epoch"].as_f64(), Some(2.0));
}

/// `--jobs 2` without a terminal: the parent prints each child's progress as it comes, one
/// line per logged step and evaluation with the step out of the trial's length, then a line
/// per trial that ends; with `--json` it passes the children's events on, the same events a
/// one-process run prints, and a second run's kept trials are events too.
#[test]
fn parallel_runs_show_each_trials_progress() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "tiny.aht", TINY);
    let o = ahtsgd(
        &[
            "run",
            "tiny.aht",
            "--out",
            "r",
            "--jobs",
            "2",
            "--threads",
            "2",
        ],
        tmp.path(),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    for trial in 0..2 {
        let metrics = read(
            tmp.path()
                .join(format!("r/e/trial-{trial:04}/metrics.jsonl")),
        );
        let logged = metrics.lines().filter(|l| l.contains("train_loss")).count();
        let steps: Vec<&str> = err
            .lines()
            .filter(|l| l.starts_with(&format!("trial {trial:04} step ")) && l.contains(" loss "))
            .filter(|l| !l.contains("test loss"))
            .collect();
        let summary: serde_json::Value = serde_json::from_str(&read(
            tmp.path()
                .join(format!("r/e/trial-{trial:04}/summary.json")),
        ))
        .unwrap();
        let n = summary["steps"].as_u64().unwrap();
        assert_eq!(steps.len(), logged, "one line per logged step:\n{err}");
        assert!(steps[0].contains(&format!("step 1/{n} ")), "{}", steps[0]);
        assert!(
            err.contains(&format!("trial {trial:04} step {n}/{n} test loss")),
            "{err}"
        );
    }
    assert_eq!(
        err.lines().filter(|l| l.starts_with("[")).count(),
        2,
        "{err}"
    );
    assert!(err.contains("[2/2] trial 000"), "{err}");

    let json = |out: &str| {
        let o = ahtsgd(
            &[
                "run",
                "tiny.aht",
                "--out",
                out,
                "--jobs",
                "2",
                "--threads",
                "2",
                "--json",
            ],
            tmp.path(),
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    let events = |all: &[serde_json::Value], trial: u64| -> Vec<serde_json::Value> {
        all.iter()
            .filter(|v| v.get("event").is_some() && v["trial"] == trial)
            .cloned()
            .collect()
    };
    let par = json("j");
    let one = ahtsgd(
        &["run", "tiny.aht", "--out", "k", "--threads", "2", "--json"],
        tmp.path(),
    );
    let one: Vec<serde_json::Value> = String::from_utf8_lossy(&one.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for trial in 0..2 {
        let p = events(&par, trial);
        assert_eq!(p, events(&one, trial), "trial {trial}");
        assert_eq!(p[0]["event"], "started");
        let summary: serde_json::Value = serde_json::from_str(&read(
            tmp.path()
                .join(format!("j/e/trial-{trial:04}/summary.json")),
        ))
        .unwrap();
        assert_eq!(p[0]["steps"], summary["steps"]);
    }
    // the summaries follow the events, one per trial
    assert_eq!(par.iter().filter(|v| v.get("status").is_some()).count(), 2);
    let again = json("j");
    let kept: Vec<_> = again.iter().filter(|v| v["event"] == "kept").collect();
    assert_eq!(kept.len(), 2, "{again:?}");
    assert_eq!(kept[0]["status"], "completed");
}

/// The parent of `--jobs` shows a child's progress while the child trains, not when it ends:
/// its first step event arrives before the trial has written its summary.
#[test]
fn parallel_progress_arrives_while_the_trials_run() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let long = TINY
        .replace("samples = 120", "samples = 4000")
        .replace("epochs = 2", "epochs = 40")
        .replace("hidden = [8]", "hidden = [256]");
    write(tmp.path(), "long.aht", &long);
    let mut child = Command::new(env!("CARGO_BIN_EXE_ahtsgd"))
        .args([
            "run",
            "long.aht",
            "--out",
            "r",
            "--jobs",
            "2",
            "--threads",
            "2",
            "--json",
        ])
        .current_dir(tmp.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut seen = None;
    for line in stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        if v["event"] == "step" {
            let trial = v["trial"].as_u64().unwrap();
            let summary = tmp
                .path()
                .join(format!("r/e/trial-{trial:04}/summary.json"));
            seen = Some((v["step"].as_u64().unwrap(), summary.exists()));
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let (step, finished) = seen.expect("a step event");
    assert_eq!(step, 1);
    assert!(!finished, "the event came only after the trial had ended");
}

/// `adamw` is `adam` under its usual name; `grad_clip` and `decay` reach the trainer: a bound
/// the gradient never reaches changes nothing, a tight one changes the run and the metrics
/// carry the norm before clipping, and decaying weights only differs from decaying all.
#[test]
fn optimizer_options_reach_the_trainer() {
    let recipe = "dataset d = blobs { classes = 3, features = 4, samples = 120, test_samples = 60 }
model m = mlp { hidden = [8], activation = tanh }
optimizer adam_ = adam { lr = 0.01, weight_decay = 0.5 }
optimizer adamw_ = adamw { lr = 0.01, weight_decay = 0.5 }
optimizer loose = adamw { lr = 0.01, weight_decay = 0.5, grad_clip = norm(1e9) }
optimizer tight = adamw { lr = 0.01, weight_decay = 0.5, grad_clip = norm(0.01) }
optimizer weights = adamw { lr = 0.01, weight_decay = 0.5, decay = weights_only }
optimizer sgd_tight = sgd { lr = 0.1, grad_clip = norm(0.01) }
optimizer sgd_ = sgd { lr = 0.1 }
experiment e {
  data = d
  model = m
  optimizer = sweep(adam_, adamw_, loose, tight, weights, sgd_tight, sgd_)
  epochs = 2
  batch = 16
  eval_every = 7 steps
  log_every = 1 step
}
";
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "opts.aht", recipe);
    let o = ahtsgd(
        &["run", "opts.aht", "--out", "r", "--threads", "1"],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines = |trial: usize| -> Vec<serde_json::Value> {
        read(
            tmp.path()
                .join(format!("r/e/trial-{trial:04}/metrics.jsonl")),
        )
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
    };
    let field = |trial: usize, name: &str| -> Vec<f64> {
        lines(trial)
            .iter()
            .filter_map(|l| l[name].as_f64())
            .collect()
    };
    let losses = |trial: usize| field(trial, "train_loss");
    assert_eq!(losses(0).len(), 14);
    assert_eq!(losses(0), losses(1), "adam and adamw differ");
    assert_eq!(field(0, "test_loss"), field(1, "test_loss"));
    assert_eq!(
        losses(1),
        losses(2),
        "a bound never reached changed the run"
    );
    assert_ne!(losses(1), losses(3), "a tight bound changed nothing");
    assert_ne!(losses(1), losses(4), "weights_only decayed every parameter");
    assert_ne!(losses(5), losses(6), "sgd's tight bound changed nothing");
    let norms = field(3, "grad_norm");
    assert_eq!(norms.len(), 14);
    assert!(
        norms.iter().all(|n| *n > 0.01),
        "norms before clipping: {norms:?}"
    );
    // Adam without a bound logs the gradient's norm too (it once wrote 0), the norm a bound
    // never reached reports
    let unclipped = field(0, "grad_norm");
    assert!(unclipped.iter().all(|n| *n > 0.01), "{unclipped:?}");
    assert_eq!(unclipped, field(2, "grad_norm"));
    let resolved = read(tmp.path().join("r/e/trial-0003/resolved.aht"));
    assert!(resolved.contains("grad_clip = norm"), "{resolved}");
}

/// Heavy-tailed noise on an Adam base, with clipping and weights-only decay, resumes from a
/// checkpoint to the numbers of an uninterrupted run: Adam's moments are in the checkpoint.
#[test]
fn an_adam_base_resumes_to_identical_results() {
    let recipe = "dataset d = blobs { classes = 3, features = 4, samples = 120, test_samples = 60 }
model m = mlp { hidden = [8], activation = tanh }
optimizer aht = ahtsgd {
  lr = 0.01, sigma = 0.01, alpha = 1.6, base = adam { beta2 = 0.99 }
  weight_decay = 0.01, decay = weights_only, grad_clip = norm(1.0)
}
experiment e { data = d, model = m, optimizer = aht, epochs = 2, batch = 16, log_every = 1 step, checkpoint_every = 3 steps }
";
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "adam.aht", recipe);
    let run = |out: &str, stop: Option<&str>| {
        let args = ["run", "adam.aht", "--out", out, "--threads", "1"];
        match stop {
            Some(at) => ahtsgd_env(&args, tmp.path(), &[("AHTSGD_STOP_AFTER", at)]),
            None => ahtsgd(&args, tmp.path()),
        }
    };
    let whole = run("whole", None);
    assert!(
        whole.status.success(),
        "{}",
        String::from_utf8_lossy(&whole.stderr)
    );
    assert_eq!(run("cut", Some("8")).status.code(), Some(130));
    let resumed = run("cut", None);
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let metrics = |out: &str| read(tmp.path().join(out).join("e/trial-0000/metrics.jsonl"));
    assert!(metrics("whole").lines().count() >= 14);
    assert_eq!(metrics("whole"), metrics("cut"), "the resumed run differs");
    let s: serde_json::Value =
        serde_json::from_str(&read(tmp.path().join("cut/e/trial-0000/summary.json"))).unwrap();
    assert_eq!(s["resumed_from"][0].as_u64(), Some(8));
}

/// Modular addition (p = 23, 70% of the pairs for training) on an embedding and an MLP with
/// AdamW: the run generalises to the held-out pairs (91% here when it was written; chance is
/// 1/25), the same from the same seed.
#[test]
fn a_modular_task_trains_on_an_embedding() {
    let recipe = "version = 2
dataset modadd = modular { p = 23, train_fraction = 0.7 }
model net = layers { stack = [embedding(16), flatten, linear(64), relu, linear(vocab)] }
optimizer opt = adamw { lr = 0.01, weight_decay = 0.1 }
experiment e { data = modadd, model = net, optimizer = opt, epochs = 300, batch = 16, eval_every = 1000 steps, log_every = 100 steps }
";
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "mod.aht", recipe);
    for out in ["a", "b"] {
        let o = ahtsgd(
            &["run", "mod.aht", "--out", out, "--threads", "1"],
            tmp.path(),
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let metrics = |out: &str| read(tmp.path().join(out).join("e/trial-0000/metrics.jsonl"));
    assert_eq!(metrics("a"), metrics("b"));
    let s: serde_json::Value =
        serde_json::from_str(&read(tmp.path().join("a/e/trial-0000/summary.json"))).unwrap();
    let accuracy = s["final"]["test_accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.5, "test accuracy {accuracy}: {s}");
    // 529 pairs, 370 for training: 23 full batches of 16 per epoch
    assert_eq!(s["steps"], 300 * 23);
    let train = s["final"]["train_accuracy"].as_f64().unwrap();
    assert!(train >= accuracy, "training {train} below test {accuracy}");
    // the report draws training beside test accuracy for token data (and no perplexity)
    let o = ahtsgd(&["report", "a"], tmp.path());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let svg = read(tmp.path().join("a/report/e_train_accuracy.svg"));
    assert!(
        svg.contains("net (train)") || svg.contains("(train)"),
        "{svg:.300}"
    );
    assert!(!tmp.path().join("a/report/e_test_perplexity.svg").exists());
}

/// A byte-level transformer on a small text file: the loss falls and the test perplexity is
/// recorded as e^test_loss; the same seed gives the same metrics; `generate` samples from the
/// trained model, the same text from the same seed, the most likely bytes at temperature 0,
/// and says what to do on a trial that is not a language model or a folder that is not a
/// trial.
#[test]
fn a_char_transformer_trains_on_text_and_generates() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus: String = (0..60)
        .map(|i| format!("the cat sat on the mat {i}. "))
        .collect();
    write(tmp.path(), "corpus.txt", &corpus);
    let recipe = "version = 2
dataset txt = text { path = \"corpus.txt\", context = 16, validation = 0.2 }
model gpt = transformer { blocks = 1, dim = 16, heads = 2, mlp = 2 }
experiment lm { data = txt, model = gpt, optimizer = adamw { lr = 1e-2 }, epochs = 4, batch = 8, eval_every = 10 steps, log_every = 1 steps }
";
    write(tmp.path(), "lm.aht", recipe);
    for out in ["a", "b"] {
        let o = ahtsgd(
            &["run", "lm.aht", "--out", out, "--threads", "1", "--quiet"],
            tmp.path(),
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let metrics = |out: &str| read(tmp.path().join(out).join("lm/trial-0000/metrics.jsonl"));
    assert_eq!(metrics("a"), metrics("b"));
    let lines: Vec<serde_json::Value> = metrics("a")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let train: Vec<f64> = lines
        .iter()
        .filter_map(|l| l["train_loss"].as_f64())
        .collect();
    // 256 bytes at first (ln 256 = 5.55 nats), well below that after four epochs
    assert!(train[0] > 4.5 && *train.last().unwrap() < 2.5, "{train:?}");
    let s: serde_json::Value =
        serde_json::from_str(&read(tmp.path().join("a/lm/trial-0000/summary.json"))).unwrap();
    let fin = &s["final"];
    let (loss, ppl) = (
        fin["test_loss"].as_f64().unwrap(),
        fin["test_perplexity"].as_f64().unwrap(),
    );
    assert!((ppl - loss.exp()).abs() < 1e-9 * ppl, "{fin}");
    assert!(fin.get("train_accuracy").is_none(), "{fin}");
    let o = ahtsgd(&["report", "a"], tmp.path());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(tmp.path().join("a/report/lm_test_perplexity.svg").exists());
    assert!(!tmp.path().join("a/report/lm_train_accuracy.svg").exists());
    // 1,728 bytes, 80% for training: (1382 - 17) / 16 + 1 = 86 windows, 10 full batches of 8
    assert_eq!(s["steps_per_epoch"], 10);

    // gradcheck on the file's own windows, a label at every position
    let o = ahtsgd(&["gradcheck", "lm.aht", "--batch", "2"], tmp.path());
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );

    let trial = "a/lm/trial-0000";
    let sample = |extra: &[&str]| {
        let mut args = vec!["generate", trial, "--prompt", "the cat", "--tokens", "40"];
        args.extend_from_slice(extra);
        ahtsgd(&args, tmp.path())
    };
    let one = sample(&["--seed", "1"]);
    assert!(
        one.status.success(),
        "{}",
        String::from_utf8_lossy(&one.stderr)
    );
    let text = String::from_utf8_lossy(&one.stdout).to_string();
    assert!(text.starts_with("the cat"), "{text}");
    assert_eq!(
        text.trim_end_matches('\n').len(),
        "the cat".len() + 40,
        "{text:?}"
    );
    assert_eq!(
        sample(&["--seed", "1"]).stdout,
        one.stdout,
        "same seed, same text"
    );
    let cold = sample(&["--temperature", "0"]);
    assert_eq!(
        cold.stdout,
        sample(&["--temperature", "0", "--seed", "9"]).stdout
    );
    // what the corpus repeats is what a trained model continues with
    let cold = String::from_utf8_lossy(&cold.stdout).to_string();
    assert!(
        cold.contains(" sat ") || cold.contains(" on ") || cold.contains(" the "),
        "{cold:?}"
    );

    let o = ahtsgd(&["generate", "nowhere"], tmp.path());
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not exist"));
    let modular = "version = 2
experiment m { data = modular { p = 5 }, model = layers { stack = [embedding(4), flatten, linear(vocab)] }, optimizer = sgd { lr = 0.1 }, epochs = 1, batch = 4 }
";
    write(tmp.path(), "m.aht", modular);
    let o = ahtsgd(&["run", "m.aht", "--out", "m", "--quiet"], tmp.path());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = ahtsgd(&["generate", "m/m/trial-0000"], tmp.path());
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("`modular` data") && err.contains("`text` data"),
        "{err}"
    );
}

/// Text files that cannot make a window: an empty file and one shorter than a window stop
/// the trial with the file named and what to change; a model that does not predict every
/// position is a check-time error.
#[test]
fn text_data_errors_name_the_file_and_what_to_change() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "empty.txt", "");
    write(tmp.path(), "short.txt", "tiny");
    for (file, says) in [
        ("empty.txt", "is empty"),
        ("short.txt", "has 4 bytes"),
        ("absent.txt", "absent.txt"),
    ] {
        let recipe = format!(
            "version = 2\nexperiment e {{ data = text {{ path = \"{file}\", context = 8 }}, model = transformer {{ blocks = 1, dim = 8, heads = 2 }}, optimizer = sgd {{ lr = 0.1 }}, epochs = 1 }}\n"
        );
        write(tmp.path(), "t.aht", &recipe);
        let o = ahtsgd(&["run", "t.aht", "--out", "r", "--quiet"], tmp.path());
        assert!(!o.status.success(), "{file}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(file) && err.contains(says), "{file}: {err}");
    }
    let recipe = "version = 2\nexperiment e { data = text { context = 8 }, model = layers { stack = [embedding(8), mean_over_tokens, linear(vocab)] }, optimizer = sgd { lr = 0.1 }, epochs = 1 }\n";
    write(tmp.path(), "t.aht", recipe);
    let o = ahtsgd(&["check", "t.aht"], tmp.path());
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("a target at each of its 8 positions") && err.contains("t.aht"),
        "{err}"
    );
}

/// `tanh = portable` (version 3's default) trains a GELU and tanh network to the same bits on
/// every instruction set, close to the C library's numbers; a version-2 recipe keeps the C
/// library's tanh, which `--set e.tanh=system` gives a version-3 recipe bit for bit.
#[test]
fn the_portable_tanh_is_version_3s_and_old_recipes_keep_theirs() {
    let tmp = tempfile::tempdir().unwrap();
    let body = "dataset d = blobs { classes = 3, features = 16, samples = 96, test_samples = 32 }
model m = layers { stack = [linear(48), gelu, linear(32), tanh, linear(classes)] }
experiment e { data = d, model = m, optimizer = sgd { lr = 0.2 }, epochs = 2, batch = 16, log_every = 1 step }
";
    write(tmp.path(), "v2.aht", &format!("version = 2\n{body}"));
    write(tmp.path(), "v3.aht", &format!("version = 3\n{body}"));
    let run = |file: &str, out: &str, extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["run", file, "--out", out, "--threads", "2", "--quiet"];
        args.extend(extra);
        let o = ahtsgd_env(&args, tmp.path(), env);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let trial = tmp.path().join(out).join("e/trial-0000");
        (
            read(trial.join("metrics.jsonl")),
            read(trial.join("resolved.aht")),
        )
    };
    let (system, resolved) = run("v2.aht", "v2", &[], &[]);
    assert!(resolved.contains("tanh = system"), "{resolved}");
    let (set, _) = run("v3.aht", "v3-system", &["--set", "e.tanh=system"], &[]);
    assert_eq!(set, system, "--set e.tanh=system on version 3");
    let (portable, resolved) = run("v3.aht", "v3", &[], &[]);
    assert!(resolved.contains("tanh = portable"), "{resolved}");
    assert_ne!(portable, system, "another tanh, other last bits");
    let (baseline, _) = run("v3.aht", "v3-baseline", &[], &[("AHTSGD_SIMD", "baseline")]);
    assert_eq!(
        baseline, portable,
        "baseline x86-64 against this CPU's widest kernels"
    );
    let losses = |m: &str| -> Vec<f64> {
        m.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["train_loss"].as_f64())
            .collect()
    };
    let (a, b) = (losses(&system), losses(&portable));
    assert!(a.len() >= 10 && a.len() == b.len(), "{system}");
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-4 * x.abs(), "losses {x} and {y}");
    }
}
