//! TensorBoard event files, read back by the official `tensorboard` Python package.
//!
//! The reader is `tests/tensorboard/read_events.py`, run with the Python found in
//! `AHTSGD_TENSORBOARD_PYTHON`, else `target/tensorboard-venv/bin/python` (which `.ci/run` makes
//! with a pinned `tensorboard` from PyPI). Without one the test is skipped, except with `CI` set,
//! where it fails.

mod common;

use common::{ahtsgd, read};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const RECIPE: &str =
    "dataset d = blobs { classes = 3, features = 4, samples = 96, test_samples = 48 }
model m = mlp { hidden = [8], activation = tanh }
schedule s = adaptive { sharpness = power_iteration { iters = 4, every = 3 steps }, half_life = 3 steps }
schedule h = adaptive { sharpness = hutchinson { samples = 2, every = 3 steps }, half_life = 3 steps }
optimizer aht = ahtsgd { lr = 0.1, sigma = 0.01, alpha = s }
optimizer ahth = ahtsgd { lr = 0.1, sigma = 0.01, alpha = h }
optimizer plain = sgd { lr = 0.1 }
experiment grid {
  data = d, model = m, optimizer = sweep(aht, plain), aht.sigma = sweep(0.01, 0.03)
  seed = sweep(0..2), epochs = 2, batch = 16, eval_every = 3 steps, log_every = 1 step
}
experiment trace {
  data = d, model = m, optimizer = ahth, epochs = 1, batch = 16, log_every = 2 steps
}
";

fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("AHTSGD_TENSORBOARD_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tensorboard-venv/bin/python");
    venv.is_file().then_some(venv)
}

fn read_back(python: &Path, logdir: &Path) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tensorboard/read_events.py");
    let out = Command::new(python)
        .arg(script)
        .arg(logdir)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "the tensorboard reader failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the reader prints JSON")
}

/// Every event file under `dir`, by path relative to it, with its size and a hash of its bytes.
fn event_files(dir: &Path) -> Vec<(PathBuf, usize, u64)> {
    fn walk(root: &Path, p: &Path, out: &mut Vec<(PathBuf, usize, u64)>) {
        for e in std::fs::read_dir(p).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else if p.to_string_lossy().contains("tfevents") {
                let bytes = std::fs::read(&p).unwrap();
                let mut h = std::collections::hash_map::DefaultHasher::new();
                std::hash::Hash::hash(&bytes, &mut h);
                out.push((
                    p.strip_prefix(root).unwrap().to_path_buf(),
                    bytes.len(),
                    std::hash::Hasher::finish(&h),
                ));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn event_files_hold_every_metric_and_the_hparams() {
    let Some(python) = python() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install tensorboard (see .ci/run)"
        );
        eprintln!("skipped: no Python with tensorboard (see tests/tensorboard.rs)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("tb.aht"), RECIPE).unwrap();
    let run = ahtsgd(
        &[
            "run",
            "tb.aht",
            "--out",
            "runs",
            "--quiet",
            "--tensorboard",
            "tb",
        ],
        tmp.path(),
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let got = read_back(&python, &tmp.path().join("tb"));
    let runs = got["runs"].as_object().unwrap();
    // grid: 2 sigmas x 2 seeds of aht, 2 seeds of plain; trace: 1
    assert_eq!(runs.len(), 7, "{:?}", runs.keys().collect::<Vec<_>>());
    let mut trials = Vec::new();
    for exp in ["grid", "trace"] {
        for e in std::fs::read_dir(tmp.path().join("runs").join(exp)).unwrap() {
            let p = e.unwrap().path();
            if p.join("summary.json").is_file() {
                trials.push(p);
            }
        }
    }
    assert_eq!(trials.len(), 7);
    let mut compared = 0;
    for trial in &trials {
        let summary: Value = serde_json::from_str(&read(trial.join("summary.json"))).unwrap();
        let exp = summary["experiment"].as_str().unwrap();
        let seed = summary["seed"].as_u64().unwrap();
        let sigma = summary["choices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c[0] == "aht.sigma")
            .map(|c| c[1].as_str().unwrap().parse::<f64>().unwrap());
        // The run whose HParams session is this trial's: experiment, optimizer, seed, sigma.
        let name = runs
            .iter()
            .find(|(_, r)| {
                let hp = &r["hparams"];
                hp["experiment"] == exp
                    && hp["optimizer"] == summary["optimizer"]
                    && hp["seed"].as_f64() == Some(seed as f64)
                    && hp["sigma"].as_f64() == sigma
            })
            .map(|(k, _)| k)
            .unwrap_or_else(|| panic!("no run for {}", trial.display()));
        // named after the experiment, the arm and the seed
        assert!(
            name.starts_with(&format!("{exp}/")) && name.ends_with(&format!("/seed-{seed}")),
            "{name}"
        );
        let run = &runs[name];
        // Every logged value is there at its step, as a 32-bit float.
        let hutchinson = summary["sharpness_estimator"] == "hutchinson";
        let sharp = if hutchinson {
            "sharpness/mean_eigenvalue"
        } else {
            "sharpness/lambda_max"
        };
        let mut want: std::collections::BTreeMap<String, Vec<(u64, f64)>> = Default::default();
        for line in read(trial.join("metrics.jsonl")).lines() {
            let m: Value = serde_json::from_str(line).unwrap();
            let step = m["step"].as_u64().unwrap();
            for (field, tag) in [
                ("train_loss", "loss/train"),
                ("test_loss", "loss/test"),
                ("test_accuracy", "accuracy/test"),
                ("alpha", "alpha"),
                ("lambda_max", sharp),
                ("noise_norm", "noise_norm"),
                ("grad_norm", "grad_norm"),
                ("lr", "lr"),
            ] {
                if let Some(v) = m[field].as_f64() {
                    want.entry(tag.into()).or_default().push((step, v));
                }
            }
            if let Some(v) = m["sharpness_ema"].as_f64() {
                want.entry("sharpness/smoothed".into())
                    .or_default()
                    .push((step, v.exp()));
            }
            if let (Some(_), Some(lr)) = (m["lambda_max"].as_f64(), m["lr"].as_f64()) {
                want.entry("sharpness/two_over_lr".into())
                    .or_default()
                    .push((step, 2.0 / lr));
            }
        }
        let fin = &summary["final"];
        let last = summary["steps"].as_u64().unwrap();
        want.entry("final/test_accuracy".into())
            .or_default()
            .push((last, fin["test_accuracy"].as_f64().unwrap()));
        want.entry("final/test_loss".into())
            .or_default()
            .push((last, fin["test_loss"].as_f64().unwrap()));
        let scalars = run["scalars"].as_object().unwrap();
        let mut tags: Vec<&String> = scalars.keys().collect();
        tags.sort();
        assert_eq!(
            tags,
            want.keys().collect::<Vec<_>>(),
            "{name}: the tags are the logged fields"
        );
        for (tag, points) in &want {
            let seen: Vec<(u64, f64)> = scalars[tag]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p[0].as_u64().unwrap(), p[1].as_f64().unwrap()))
                .collect();
            assert_eq!(seen.len(), points.len(), "{name} {tag}");
            for ((s1, v1), (s2, v2)) in seen.iter().zip(points) {
                assert_eq!(s1, s2, "{name} {tag}");
                assert_eq!(*v1, *v2 as f32 as f64, "{name} {tag} at step {s1}");
                compared += 1;
            }
        }
        // The HParams session: the trial's sweep values, grouped by arm, ended well.
        // (matched on above: experiment, optimizer, seed and sigma)
        assert!(
            run["group"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{exp}/"))
        );
        assert_eq!(run["status"], 1, "STATUS_SUCCESS");
    }
    assert!(compared > 300, "{compared} scalars compared");
    // The experiment lists every setting and the final metrics.
    let e = &got["experiment"];
    assert_eq!(e["hparams"]["sigma"], "DATA_TYPE_FLOAT64");
    assert_eq!(e["hparams"]["seed"], "DATA_TYPE_FLOAT64");
    assert_eq!(e["hparams"]["optimizer"], "DATA_TYPE_STRING");
    assert_eq!(
        e["metrics"],
        serde_json::json!(["final/test_accuracy", "final/test_loss"])
    );

    // Exporting the records again gives the same files, replaced rather than added to.
    let before = event_files(&tmp.path().join("tb"));
    let again = ahtsgd(
        &["export", "tensorboard", "runs", "--out", "tb"],
        tmp.path(),
    );
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(event_files(&tmp.path().join("tb")), before);
    // The default place is beside the records.
    let default = ahtsgd(&["export", "tensorboard", "runs"], tmp.path());
    assert!(default.status.success());
    assert_eq!(event_files(&tmp.path().join("runs/tensorboard")), before);
    // A folder with no records is an error that says so.
    let empty = ahtsgd(&["export", "tensorboard", "nothing-here"], tmp.path());
    assert_eq!(empty.status.code(), Some(1));
}
