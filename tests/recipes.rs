//! The paper's recipes run end to end for a few steps at tiny width on generated data files in
//! the official layouts (their full runs need the real datasets).

use std::path::Path;
use std::process::Command;

fn idx_images(n: u32, seed: u8) -> Vec<u8> {
    let mut v = Vec::new();
    for x in [0x803u32, n, 28, 28] {
        v.extend(x.to_be_bytes());
    }
    v.extend((0..n as usize * 784).map(|i| (i as u8).wrapping_mul(seed)));
    v
}

fn idx_labels(n: u32) -> Vec<u8> {
    let mut v = Vec::new();
    for x in [0x801u32, n] {
        v.extend(x.to_be_bytes());
    }
    v.extend((0..n).map(|i| (i % 10) as u8));
    v
}

fn run(recipe: &str, sets: &[String], dir: &Path) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ahtsgd"));
    cmd.arg("run")
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("recipes")
                .join(recipe),
        )
        .args(["--out", "r", "--quiet", "--trial", "0-1"]);
    for s in sets {
        cmd.args(["--set", s]);
    }
    let o = cmd.current_dir(dir).output().unwrap();
    assert!(
        o.status.success(),
        "{recipe}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let runs = std::fs::read_dir(dir.join("r"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .count();
    assert_eq!(runs, 1, "{recipe}: one experiment folder");
}

#[test]
fn mnist_zero_init_runs_on_idx_files() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("mnist");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("train-images-idx3-ubyte"), idx_images(64, 7)).unwrap();
    std::fs::write(data.join("train-labels-idx1-ubyte"), idx_labels(64)).unwrap();
    std::fs::write(data.join("t10k-images-idx3-ubyte"), idx_images(20, 3)).unwrap();
    std::fs::write(data.join("t10k-labels-idx1-ubyte"), idx_labels(20)).unwrap();
    let sets = [
        format!("mnist_full.path=\"{}\"", data.display()),
        "zero_mlp.hidden=[8]".into(),
        "zero_init.batch=16".into(),
        "zero_init.max_steps=3".into(),
    ];
    run("mnist_zero_init.aht", &sets, tmp.path());
}

#[test]
fn svhn_recipe_runs_on_mat_files() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("svhn");
    std::fs::create_dir(&data).unwrap();
    for f in ["train_32x32.mat", "test_32x32.mat"] {
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data/svhn-scipy")
                .join(f),
            data.join(f),
        )
        .unwrap();
    }
    let sets = [
        format!("svhn_digits.path=\"{}\"", data.display()),
        "small_cnn.channels=[2]".into(),
        "small_cnn.hidden=[4]".into(),
        "adaptive_vs_annealed.batch=2".into(),
        "adaptive_vs_annealed.max_steps=2".into(),
    ];
    run("svhn_adaptive_vs_annealed.aht", &sets, tmp.path());
}

#[test]
fn cifar_resnet_recipe_runs_on_binary_batches() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("cifar");
    std::fs::create_dir(&data).unwrap();
    let batch = |n: usize| -> Vec<u8> {
        (0..n)
            .flat_map(|i| {
                std::iter::once((i % 10) as u8).chain((0..3072).map(move |p| ((p + i) % 251) as u8))
            })
            .collect()
    };
    for f in [
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
    ] {
        std::fs::write(data.join(f), batch(4)).unwrap();
    }
    std::fs::write(data.join("test_batch.bin"), batch(6)).unwrap();
    let sets = [
        format!("cifar.path=\"{}\"", data.display()),
        "net.width=2".into(),
        "resnet_sharpness.batch=4".into(),
        "resnet_sharpness.max_steps=2".into(),
        "resnet_sharpness.device=cpu".into(),
        "tracked.sharpness.iters=2".into(),
    ];
    run("cifar10_resnet_sharpness.aht", &sets, tmp.path());
}

/// The sequence recipes need no files: the modular task is generated and the char LM reads
/// the bundled sonnets. A few steps at small width, AdamW and AHTSGD trials both (the second
/// estimating sharpness by H·v through attention).
#[test]
fn grokking_and_charlm_recipes_run_without_files() {
    let tmp = tempfile::tempdir().unwrap();
    let grok = [
        "gpt.dim=16".to_string(),
        "gpt.heads=2".into(),
        "grokking.max_steps=3".into(),
        "grokking.eval_every=2 steps".into(),
        "grokking.optimizer=aht".into(),
        "aht.alpha.sharpness.every=2 steps".into(),
    ];
    run("grokking.aht", &grok, tmp.path());
    let lm = [
        "gpt.dim=16".to_string(),
        "gpt.heads=2".into(),
        "sonnets.context=16".into(),
        "charlm.batch=8".into(),
        "charlm.max_steps=3".into(),
        "charlm.eval_every=2 steps".into(),
        "charlm.optimizer=aht".into(),
        "aht.alpha.sharpness.every=2 steps".into(),
    ];
    let tmp = tempfile::tempdir().unwrap();
    run("charlm.aht", &lm, tmp.path());
}
