//! Records you can trust, through the real binary: a trial killed with SIGKILL and run again
//! continues to the bits of an uninterrupted run for every built-in model and optimizer; `eval`
//! gives the training loop's final figures; a trial never trains twice at once; reruns stay out
//! of the experiment's trials and say when they cannot be the same.

mod common;

use common::{ahtsgd, ahtsgd_env, read, write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Three models (an MLP, a CNN, a width-4 ResNet-18 with batch norm) × three optimizers (SGD
/// with momentum, adaptive AHTSGD with power iteration's warm start, Adam): nine trials of
/// 16 steps, checkpointed every 5.
const GRID: &str = "dataset d = mnist_mini { train_limit = 64, test_limit = 32 }
model mlp_m = mlp { hidden = [16] }
model cnn_m = cnn { channels = [4, 8] }
model res_m = resnet18 { width = 4 }
optimizer sgdm = sgd { lr = 0.05, momentum = 0.9 }
optimizer aht = ahtsgd { lr = 0.05, sigma = 0.01, alpha = adaptive { sharpness = power_iteration { iters = 3, every = 3 steps } } }
optimizer ad = adam { lr = 0.001 }
experiment e {
  data = d
  model = sweep(mlp_m, cnn_m, res_m)
  optimizer = sweep(sgdm, aht, ad)
  epochs = 2
  batch = 8
  eval_every = 4 steps
  log_every = 1 step
  checkpoint_every = 5 steps
}
";
const GRID_TRIALS: usize = 9;

fn json(p: impl AsRef<Path>) -> serde_json::Value {
    serde_json::from_str(&read(p)).unwrap()
}

fn trial(run: &Path, i: usize) -> PathBuf {
    run.join(format!("e/trial-{i:04}"))
}

/// `AHTSGD_KILL_AFTER=7` makes each trial that starts afresh die by SIGKILL at step 7, two
/// steps after its checkpoint at step 5 (so metrics written after the checkpoint are lost with
/// the process); each run of the same command resumes one trial and kills the next. The
/// records then equal those of an uninterrupted run, byte for byte.
#[test]
fn resume_after_kill_9_is_bitwise_for_every_model_and_optimizer() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "grid.aht", GRID);
    let whole = ahtsgd(
        &["run", "grid.aht", "--out", "whole", "--threads", "1"],
        tmp.path(),
    );
    assert!(
        whole.status.success(),
        "{}",
        String::from_utf8_lossy(&whole.stderr)
    );
    let mut killed = 0;
    loop {
        let o = ahtsgd_env(
            &[
                "run",
                "grid.aht",
                "--out",
                "cut",
                "--threads",
                "1",
                "--quiet",
            ],
            tmp.path(),
            &[("AHTSGD_KILL_AFTER", "7")],
        );
        if o.status.success() {
            break;
        }
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            o.status.signal(),
            Some(9),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        killed += 1;
        assert!(killed <= GRID_TRIALS, "more kills than trials");
    }
    assert_eq!(killed, GRID_TRIALS, "every trial was killed once");
    let (whole, cut) = (tmp.path().join("whole"), tmp.path().join("cut"));
    for i in 0..GRID_TRIALS {
        let s = json(trial(&cut, i).join("summary.json"));
        let what = format!("trial {i} ({}, {:?})", s["optimizer"], s["choices"]);
        assert_eq!(
            read(trial(&whole, i).join("metrics.jsonl")),
            read(trial(&cut, i).join("metrics.jsonl")),
            "{what}: the resumed run's metrics differ from the uninterrupted run's"
        );
        assert_eq!(s["status"], "completed", "{what}");
        assert_eq!(s["resumed_from"], serde_json::json!([5]), "{what}");
        assert_eq!(
            json(trial(&whole, i).join("summary.json"))["resumed_from"],
            serde_json::json!([]),
            "{what}: ran in one go"
        );
        // eval of the recorded trial gives the loop's final evaluation exactly (batch norm's
        // running statistics included)
        let e = ahtsgd(
            &["eval", &format!("cut/e/trial-{i:04}"), "--json"],
            tmp.path(),
        );
        assert!(e.status.success(), "{}", String::from_utf8_lossy(&e.stderr));
        let v: serde_json::Value = serde_json::from_slice(&e.stdout).unwrap();
        assert_eq!(v["test_accuracy"], s["final"]["test_accuracy"], "{what}");
        assert_eq!(v["test_loss"], s["final"]["test_loss"], "{what}");
        assert_eq!(v["warnings"], serde_json::json!([]), "{what}");
    }
}

/// A record written before buffers were saved evaluates with a warning that says so, rather
/// than passing off initial batch-norm statistics as the trained model's.
#[test]
fn eval_of_a_record_without_buffers_says_its_figures_are_not_the_trained_models() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "res.aht",
        &GRID
            .replace("sweep(mlp_m, cnn_m, res_m)", "res_m")
            .replace("sweep(sgdm, aht, ad)", "sgdm"),
    );
    assert!(
        ahtsgd(&["run", "res.aht", "--out", "r", "--quiet"], tmp.path())
            .status
            .success()
    );
    let fin = tmp
        .path()
        .join("r/e/trial-0000/checkpoints/final.safetensors");
    let dev = candle_core::Device::Cpu;
    let mut tensors = candle_core::safetensors::load(&fin, &dev).unwrap();
    let before = tensors.len();
    tensors.retain(|k, _| !k.contains("running_"));
    assert!(
        tensors.len() < before,
        "the final record holds the running statistics"
    );
    candle_core::safetensors::save(&tensors, &fin).unwrap();
    let e = ahtsgd(&["eval", "r/e/trial-0000", "--json"], tmp.path());
    assert!(e.status.success());
    let err = String::from_utf8_lossy(&e.stderr);
    assert!(
        err.contains("warning:")
            && err.contains("running_mean")
            && err.contains("not those of the trained model"),
        "{err}"
    );
}

/// Takes the lock of a trial folder as another process would, writing who holds it.
fn hold_lock(dir: &Path, pid: u32, host: &str) -> std::fs::File {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    std::fs::create_dir_all(dir).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(dir.join("lock"))
        .unwrap();
    // SAFETY: flock on a descriptor this function owns.
    assert_eq!(
        unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    write!(f, "pid {pid}\nhost {host}\n").unwrap();
    f
}

const PAIR: &str =
    "dataset d = blobs { classes = 3, features = 4, samples = 120, test_samples = 60 }
model m = mlp { hidden = [8], activation = tanh }
optimizer aht = ahtsgd { lr = 0.1, sigma = 0.01, alpha = 1.5 }
optimizer plain = sgd { lr = 0.1 }
experiment e {
  data = d
  model = m
  optimizer = sweep(aht, plain)
  epochs = 2
  batch = 16
  log_every = 1 step
  baseline = \"plain\"
}
";

#[test]
fn a_trial_locked_elsewhere_is_skipped_and_the_run_fails() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "pair.aht", PAIR);
    let held = hold_lock(&tmp.path().join("r/e/trial-0001"), 4242, "node7");
    let o = ahtsgd(&["run", "pair.aht", "--out", "r", "--quiet"], tmp.path());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("trial 0001: running elsewhere (pid 4242 on node7); skipped"),
        "{err}"
    );
    assert!(err.contains("run the same command again"), "{err}");
    assert!(tmp.path().join("r/e/trial-0000/summary.json").exists());
    assert!(!tmp.path().join("r/e/trial-0001/summary.json").exists());
    // --jobs: the child that finds the lock says so through the parent
    let par = ahtsgd(
        &["run", "pair.aht", "--out", "r", "--jobs", "2", "--quiet"],
        tmp.path(),
    );
    assert_eq!(par.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&par.stderr).contains("running elsewhere (pid 4242"));
    // --fresh does not take a held trial either
    let fresh = ahtsgd(
        &["run", "pair.aht", "--out", "r", "--fresh", "--trial", "1"],
        tmp.path(),
    );
    assert_eq!(fresh.status.code(), Some(1));
    drop(held);
    let o = ahtsgd(&["run", "pair.aht", "--out", "r", "--quiet"], tmp.path());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(tmp.path().join("r/e/trial-0001/summary.json").exists());
}

/// Ten trials long enough that a kill lands mid-sweep.
const SWEEP: &str = "dataset d = mnist_mini { train_limit = 600, test_limit = 100 }
model m = mlp { hidden = [16] }
optimizer aht = ahtsgd { lr = 0.1, sigma = 0.01, alpha = adaptive { sharpness = power_iteration { iters = 3, every = 5 steps } } }
optimizer plain = sgd { lr = 0.1 }
experiment e {
  data = d
  model = m
  optimizer = sweep(aht, plain)
  seed = sweep(0..5)
  epochs = 10
  batch = 8
  log_every = 1 step
  checkpoint_every = 20 steps
  baseline = \"plain\"
}
";
const SWEEP_TRIALS: usize = 10;

/// The processes whose command line names `needle` (zombies aside).
fn live_processes_naming(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        if !zombie && String::from_utf8_lossy(&cmd).contains(needle) {
            out.push(pid);
        }
    }
    out
}

/// kill -9 of the parent of a `--jobs 2` run alone: its children die with it, the same
/// command run again at once never has two processes train one trial (in the journal, a trial
/// is only ever finished by the process that started it last), and the results equal an
/// uninterrupted run.
#[test]
fn killing_the_parent_alone_leaves_no_orphans_and_no_trial_runs_twice() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "sweep.aht", SWEEP);
    let one = ahtsgd(
        &[
            "run",
            "sweep.aht",
            "--out",
            "one",
            "--jobs",
            "2",
            "--threads",
            "1",
        ],
        tmp.path(),
    );
    assert!(
        one.status.success(),
        "{}",
        String::from_utf8_lossy(&one.stderr)
    );
    let out = tmp.path().join("killed");
    let out_s = out.display().to_string();
    let args = [
        "run",
        "sweep.aht",
        "--out",
        &out_s,
        "--jobs",
        "2",
        "--threads",
        "1",
    ];
    let mut parent = Command::new(env!("CARGO_BIN_EXE_ahtsgd"))
        .args(args)
        .current_dir(tmp.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline
        && !(0..SWEEP_TRIALS).any(|i| trial(&out, i).join("checkpoints/latest.json").exists())
    {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    parent.kill().unwrap(); // SIGKILL to the parent alone
    let _ = parent.wait();
    let finished = (0..SWEEP_TRIALS)
        .filter(|&i| trial(&out, i).join("summary.json").exists())
        .count();
    assert!(
        finished < SWEEP_TRIALS,
        "the kill came after the sweep had finished"
    );
    // run again at once: a trial whose old process has not yet died is skipped, not doubled
    let mut tries = 0;
    loop {
        let o = ahtsgd(&args, tmp.path());
        if o.status.success() {
            break;
        }
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("running elsewhere"), "{err}");
        tries += 1;
        assert!(tries < 20, "trials stayed locked: {err}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // and the orphans are gone (they died with their parent, not after finishing)
    assert_eq!(live_processes_naming(&out_s), Vec::<u32>::new());
    let mut last_started: std::collections::HashMap<u64, u64> = Default::default();
    for line in read(out.join("journal.jsonl")).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let (t, pid) = (v["trial"].as_u64().unwrap(), v["pid"].as_u64().unwrap());
        if v["state"] == "started" {
            last_started.insert(t, pid);
        } else {
            assert_eq!(
                last_started.get(&t),
                Some(&pid),
                "trial {t} was finished by pid {pid} after another process had started it:\n{}",
                read(out.join("journal.jsonl"))
            );
        }
    }
    for i in 0..SWEEP_TRIALS {
        assert_eq!(
            read(trial(&tmp.path().join("one"), i).join("metrics.jsonl")),
            read(trial(&out, i).join("metrics.jsonl")),
            "trial {i}"
        );
    }
}

/// `rerun` writes under `<experiment>/reruns/`, never beside the trials, and `collect` counts
/// only numbered trial folders (a stray copy such as older builds' `trial-0000-rerun` too).
#[test]
fn reruns_are_not_counted_as_trials() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "pair.aht", PAIR);
    assert!(
        ahtsgd(&["run", "pair.aht", "--out", "r", "--quiet"], tmp.path())
            .status
            .success()
    );
    let runs_column = |csv: &str| -> Vec<String> {
        csv.lines()
            .skip(1)
            .map(|l| l.split(',').nth(2).unwrap().to_string())
            .collect()
    };
    let before = runs_column(&read(tmp.path().join("r/e/summary.csv")));
    assert_eq!(before, ["1", "1"]);
    for k in 1..=2 {
        let o = ahtsgd_env(
            &["rerun", "r/e/trial-0000"],
            tmp.path(),
            &[("RAYON_NUM_THREADS", "1")],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let said = String::from_utf8_lossy(&o.stdout);
        assert!(
            said.contains(&format!("r/e/reruns/trial-0000-{k}")),
            "{said}"
        );
        assert!(
            tmp.path()
                .join(format!("r/e/reruns/trial-0000-{k}/summary.json"))
                .exists()
        );
    }
    // an older layout's copy beside the trials
    let stray = tmp.path().join("r/e/trial-0000-rerun");
    std::fs::create_dir_all(&stray).unwrap();
    for f in ["summary.json", "metrics.jsonl", "resolved.aht"] {
        std::fs::copy(tmp.path().join("r/e/trial-0000").join(f), stray.join(f)).unwrap();
    }
    let c = ahtsgd(&["collect", "r"], tmp.path());
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
    assert_eq!(
        runs_column(&read(tmp.path().join("r/e/summary.csv"))),
        before
    );
    let rep = ahtsgd(&["report", "r"], tmp.path());
    assert!(
        rep.status.success(),
        "{}",
        String::from_utf8_lossy(&rep.stderr)
    );
    assert_eq!(
        runs_column(&read(tmp.path().join("r/e/summary.csv"))),
        before
    );
}

/// A record from another build: the rerun warns before it trains, and names the first metric
/// that differs, with both values, and the build difference as the likely cause.
#[test]
fn a_rerun_of_another_builds_record_says_so_and_names_the_first_differing_metric() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "pair.aht", PAIR);
    assert!(
        ahtsgd(
            &["run", "pair.aht", "--out", "r", "--threads", "1", "--quiet"],
            tmp.path()
        )
        .status
        .success()
    );
    let dir = tmp.path().join("r/e/trial-0000");
    let mut s = json(dir.join("summary.json"));
    s["ahtsgd_version"] = "0.0.1".into();
    write(&dir, "summary.json", &s.to_string());
    let same = ahtsgd_env(
        &["rerun", "r/e/trial-0000"],
        tmp.path(),
        &[("RAYON_NUM_THREADS", "1")],
    );
    let err = String::from_utf8_lossy(&same.stderr);
    assert!(
        err.contains("warning: the trial was recorded by ahtsgd 0.0.1, this is ahtsgd"),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&same.stdout).contains("identical"));
    // the third line's loss as another build might have written it
    let metrics = read(dir.join("metrics.jsonl"));
    let mut lines: Vec<String> = metrics.lines().map(String::from).collect();
    let mut third: serde_json::Value = serde_json::from_str(&lines[2]).unwrap();
    third["train_loss"] = 0.5.into();
    lines[2] = third.to_string();
    write(&dir, "metrics.jsonl", &(lines.join("\n") + "\n"));
    let o = ahtsgd_env(
        &["rerun", "r/e/trial-0000"],
        tmp.path(),
        &[("RAYON_NUM_THREADS", "1")],
    );
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        said.contains("first differs at line 3 (step 3): `train_loss` was 0.5 and is now")
            && said.contains("recorded by ahtsgd 0.0.1"),
        "{said}"
    );
}

fn run_pair(dir: &Path, out: &str, env: &[(&str, &str)]) -> std::process::Output {
    ahtsgd_env(
        &["run", "pair.aht", "--out", out, "--threads", "1", "--quiet"],
        dir,
        env,
    )
}

/// A damaged checkpoint is named, with what is wrong and what to do; the records stay.
#[test]
fn a_damaged_checkpoint_is_named_with_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "pair.aht",
        &PAIR.replace(
            "log_every = 1 step",
            "log_every = 1 step\n  checkpoint_every = 3 steps",
        ),
    );
    let cut = run_pair(tmp.path(), "r", &[("AHTSGD_STOP_AFTER", "8")]);
    assert_eq!(cut.status.code(), Some(130));
    let ck = tmp.path().join("r/e/trial-0000/checkpoints");
    let step: serde_json::Value = serde_json::from_str(&read(ck.join("latest.json"))).unwrap();
    let tensors = ck.join(format!("step-{}.safetensors", step["step"]));
    let bytes = std::fs::read(&tensors).unwrap();
    std::fs::write(&tensors, &bytes[..bytes.len() / 2]).unwrap();
    let o = run_pair(tmp.path(), "r", &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("step-{}.safetensors", step["step"]))
            && err.contains("truncated or damaged")
            && err.contains("--fresh"),
        "{err}"
    );
    std::fs::write(ck.join("latest.json"), "garbage").unwrap();
    let o = run_pair(tmp.path(), "r", &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("latest.json") && err.contains("damaged") && err.contains("--fresh"),
        "{err}"
    );
    assert!(
        tmp.path().join("r/e/trial-0000/metrics.jsonl").exists(),
        "records kept"
    );
    let fresh = ahtsgd(
        &["run", "pair.aht", "--out", "r", "--quiet", "--fresh"],
        tmp.path(),
    );
    assert!(
        fresh.status.success(),
        "{}",
        String::from_utf8_lossy(&fresh.stderr)
    );
}

/// A full disk (simulated: writes fail with ENOSPC after a budget) names the file and says
/// to free space and rerun; the rerun resumes to the numbers of an uninterrupted run.
#[test]
fn a_full_disk_says_to_free_space_and_the_rerun_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "pair.aht",
        &PAIR.replace(
            "log_every = 1 step",
            "log_every = 1 step\n  checkpoint_every = 3 steps",
        ),
    );
    assert!(run_pair(tmp.path(), "whole", &[]).status.success());
    let o = run_pair(tmp.path(), "r", &[("AHTSGD_FAIL_WRITES_AFTER", "6000")]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_ne!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains("No space left on device")
            && err.contains("cannot write")
            && err.contains("free some space and run the same command again"),
        "{err}"
    );
    assert!(!err.contains("candle:"), "{err}");
    let again = run_pair(tmp.path(), "r", &[]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    for t in ["trial-0000", "trial-0001"] {
        assert_eq!(
            read(tmp.path().join("whole/e").join(t).join("metrics.jsonl")),
            read(tmp.path().join("r/e").join(t).join("metrics.jsonl")),
            "{t}"
        );
    }
}

/// A truncated `.npy` names the file and says it is truncated, under the data code, at the
/// dataset's declaration.
#[test]
fn a_truncated_npy_file_is_named_at_the_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let arrays = tmp.path().join("arrays");
    std::fs::create_dir_all(&arrays).unwrap();
    let dev = candle_core::Device::Cpu;
    let x = candle_core::Tensor::zeros((20, 4), candle_core::DType::F32, &dev).unwrap();
    let y = candle_core::Tensor::zeros(20, candle_core::DType::U32, &dev).unwrap();
    for (n, t) in [
        ("x_train", &x),
        ("y_train", &y),
        ("x_test", &x),
        ("y_test", &y),
    ] {
        t.write_npy(arrays.join(format!("{n}.npy"))).unwrap();
    }
    let bytes = std::fs::read(arrays.join("x_train.npy")).unwrap();
    std::fs::write(arrays.join("x_train.npy"), &bytes[..bytes.len() - 40]).unwrap();
    write(
        tmp.path(),
        "a.aht",
        "dataset mine = arrays { path = \"arrays\" }\nexperiment e { data = mine, model = mlp {}, optimizer = sgd { lr = 0.1 }, epochs = 1 }\n",
    );
    let o = ahtsgd(&["run", "a.aht", "--out", "r"], tmp.path());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err.contains("aht::data::format")
            && err.contains("x_train.npy")
            && err.contains("truncated")
            && err.contains("a.aht:1:9"),
        "{err}"
    );
}

/// Small mistakes, each with one clear answer: eval of a path that does not exist, `--set`
/// shown as typed, `plan --experiment`, an optimizer without `lr` (one diagnostic, not one
/// per use of `lr` in its schedule's defaults), and nesting past the limit.
#[test]
fn small_mistakes_get_one_clear_answer() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "pair.aht", PAIR);
    let o = ahtsgd(&["eval", "runs/nothing/trial-0000"], tmp.path());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err.contains("runs/nothing/trial-0000 does not exist"),
        "{err}"
    );
    let o = ahtsgd(&["check", "pair.aht", "--set", "aht.lr=-1"], tmp.path());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--set aht.lr=-1") && !err.contains("#1"),
        "{err}"
    );
    let two =
        format!("{PAIR}experiment f {{ data = d, model = m, optimizer = plain, epochs = 1 }}\n");
    write(tmp.path(), "two.aht", &two);
    let o = ahtsgd(&["plan", "two.aht", "--experiment", "f"], tmp.path());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("experiment f — 1 trial") && !out.contains("experiment e"),
        "{out}"
    );
    let o = ahtsgd(&["plan", "two.aht", "--experiment", "g"], tmp.path());
    assert_eq!(o.status.code(), Some(2));
    write(
        tmp.path(),
        "nolr.aht",
        "version = 2\noptimizer o = ahtsgd { alpha = adaptive {} }\nexperiment e { data = blobs {}, model = mlp {}, optimizer = o, epochs = 1 }\n",
    );
    let o = ahtsgd(&["check", "--json", "nolr.aht"], tmp.path());
    let lines: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("aht::check::missing_field") && lines[0].contains("`lr`"));
    let deep = format!(
        "experiment e {{ data = blobs {{}}, model = mlp {{}}, optimizer = sgd {{ lr = {}1{} }}, epochs = 1 }}\n",
        "(".repeat(100_000),
        ")".repeat(100_000)
    );
    write(tmp.path(), "deep.aht", &deep);
    let o = ahtsgd(&["check", "deep.aht"], tmp.path());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("nest deeper than 256 levels"), "{err}");
}
