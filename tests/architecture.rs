//! The layering rules of `src/`, checked on the source text: a module that starts importing
//! what its layer must not fails here, not in review.

use std::path::{Path, PathBuf};

fn sources(dir: &str) -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                out.push((p, text));
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir);
    let mut out = Vec::new();
    walk(&root, &mut out);
    assert!(!out.is_empty(), "no sources under {}", root.display());
    out
}

/// Lines of code (comments dropped) that mention any of `needles`.
fn offending(dir: &str, needles: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for (path, text) in sources(dir) {
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if needles.iter().any(|x| code.contains(x)) {
                found.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
            }
        }
    }
    found
}

#[test]
fn the_optimizer_stands_alone() {
    let found = offending(
        "optim",
        &[
            "crate::plan",
            "crate::check",
            "crate::syntax",
            "crate::model",
            "crate::train",
            "crate::sweep",
            "crate::report",
        ],
    );
    assert!(
        found.is_empty(),
        "optim imports a recipe or model layer:\n{}",
        found.join("\n")
    );
}

/// The checker may name the model's typed descriptions (`model::spec`, plain data), never the
/// modules that build or run tensors.
#[test]
fn syntax_and_check_touch_no_tensors_or_devices() {
    for dir in ["syntax", "check"] {
        let found: Vec<String> = offending(
            dir,
            &[
                "Tensor",
                "Device",
                "candle_core",
                "crate::model",
                "crate::train",
                "crate::data::load",
            ],
        )
        .into_iter()
        .filter(|l| !l.contains("crate::model::spec"))
        .collect();
        assert!(
            found.is_empty(),
            "{dir} reaches tensors:\n{}",
            found.join("\n")
        );
    }
}

#[test]
fn syntax_knows_nothing_of_checking() {
    let found = offending("syntax", &["crate::check", "crate::plan", "crate::optim"]);
    assert!(found.is_empty(), "{}", found.join("\n"));
}
