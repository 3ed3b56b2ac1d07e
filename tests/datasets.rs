//! `ahtsgd data check` through the real binary: sums keyed by dataset kind and taken of the
//! uncompressed content, and datasets found below the folder given.

mod common;

use common::ahtsgd;
use std::io::{Read, Write};
use std::path::Path;

const STEMS: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The README's `ahtsgd data check data/` finds the bundled subset one folder down and calls
/// it what it is (it had found nothing, and `data/mnist-mini` itself had been reported as
/// differing from the published sums).
#[test]
fn the_readme_data_check_finds_the_bundled_subset() {
    let o = ahtsgd(&["data", "check", "data/"], root());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        out.matches("matches the bundled MNIST subset's SHA-256; loads: 5000 train / 1000 test")
            .count(),
        4,
        "{out}"
    );
}

/// The same content compressed again, or not compressed, is still the subset; one flipped
/// byte is not.
#[test]
fn idx_files_are_judged_by_their_content() {
    let tmp = tempfile::tempdir().unwrap();
    let (again, raw, damaged) = (
        tmp.path().join("a/again"),
        tmp.path().join("b/raw"),
        tmp.path().join("c"),
    );
    for d in [&again, &raw, &damaged] {
        std::fs::create_dir_all(d).unwrap();
    }
    for stem in STEMS {
        let gz = std::fs::read(root().join(format!("data/mnist-mini/{stem}.gz"))).unwrap();
        let mut content = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut content)
            .unwrap();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&content).unwrap();
        std::fs::write(again.join(format!("{stem}.gz")), enc.finish().unwrap()).unwrap();
        std::fs::write(raw.join(stem), &content).unwrap();
        if stem == "t10k-labels-idx1-ubyte" {
            let last = content.len() - 1;
            content[last] = (content[last] + 1) % 10;
        }
        std::fs::write(damaged.join(stem), &content).unwrap();
    }
    let o = ahtsgd(&["data", "check", "--json", "."], tmp.path());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.len(),
        12,
        "three folders of four files, two levels down"
    );
    for l in &lines {
        let file = l["file"].as_str().unwrap();
        let checksum = l["checksum"].as_str().unwrap();
        if file.contains("c/t10k-labels") {
            assert!(checksum.contains("differs"), "{file}: {checksum}");
        } else {
            assert_eq!(
                checksum, "matches the bundled MNIST subset's SHA-256",
                "{file}"
            );
        }
    }
}

/// Fashion-MNIST's official files (Debian's `dataset-fashion-mnist` package, which `.ci/run`
/// installs) match Fashion-MNIST's sums; they had been compared with MNIST's `.gz` sums,
/// which share the file names, and reported as differing. `verify = strict` loads them.
#[test]
fn fashion_mnist_is_checked_against_its_own_sums() {
    let dir = Path::new("/usr/share/datasets/fashion-mnist");
    if !dir.join("t10k-labels-idx1-ubyte.gz").exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI: Debian's dataset-fashion-mnist is not installed"
        );
        eprintln!("skipped: install Debian's dataset-fashion-mnist to run this test");
        return;
    }
    let o = ahtsgd(&["data", "check", dir.to_str().unwrap()], root());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert_eq!(
        out.matches("matches Fashion-MNIST's published SHA-256; loads: 60000 train / 10000 test")
            .count(),
        4,
        "{out}"
    );
    assert!(!out.contains("differs"), "{out}");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("f.aht"),
        format!(
            "experiment e {{ data = fashion_mnist {{ path = \"{}\", verify = strict, train_limit = 100, test_limit = 100 }}, model = mlp {{ hidden = [8] }}, optimizer = sgd {{ lr = 0.1 }}, epochs = 1, batch = 50 }}\n",
            dir.display()
        ),
    )
    .unwrap();
    let run = ahtsgd(&["run", "f.aht", "--out", "r", "--quiet"], tmp.path());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success() && !err.contains("warning"), "{err}");
}
