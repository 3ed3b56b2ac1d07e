//! Stage folders of recipe cases: `tests/cases/{parse,check}/{ok,err}/*.aht`,
//! `tests/cases/check/warn/*.aht` (recipes that check, with warnings), and
//! `tests/cases/data/err/*.aht`, recipes that check but whose first trial's data cannot load.
//!
//! Each file may start with header comments: `# expect: CODE` (err cases: at least one
//! diagnostic with that code) and `# set: PATH=VALUE` (passed as `--set`). Err cases have a
//! snapshot of their rendered diagnostics next to them (`NAME.stderr`); run with
//! `BLESS=1` to rewrite the snapshots.

use ahtsgd::check::{Options, check_file};
use ahtsgd::diagnostic::{Code, render};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn cases(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/cases")
        .join(dir);
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "aht"))
        .collect();
    out.sort();
    out
}

fn headers(path: &Path) -> (Vec<String>, Options) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut expect = Vec::new();
    let mut opts = Options::default();
    for line in text.lines().take_while(|l| l.starts_with('#')) {
        if let Some(code) = line.strip_prefix("# expect: ") {
            expect.push(code.trim().to_string());
        } else if let Some(set) = line.strip_prefix("# set: ") {
            opts.sets.push(set.to_string());
        }
    }
    (expect, opts)
}

/// Runs with the case's folder as the working directory so file names in snapshots are short.
fn check_case(path: &Path, opts: &Options) -> ahtsgd::check::Checked {
    // cargo runs tests from the package root: a relative path keeps snapshots portable
    let rel = path.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap();
    check_file(rel, opts)
}

fn run_ok(stage: &str) {
    let all = cases(&format!("{stage}/ok"));
    assert!(!all.is_empty());
    for path in all {
        let (_, opts) = headers(&path);
        let checked = check_case(&path, &opts);
        assert!(
            checked.diagnostics.is_empty(),
            "{}: expected no diagnostics\n{}",
            path.display(),
            render(&checked.diagnostics, &checked.sources, false)
        );
        assert!(checked.plan.is_some());
    }
}

fn run_err(stage: &str, seen: &mut BTreeSet<String>) {
    let root = env!("CARGO_MANIFEST_DIR");
    for path in cases(&format!("{stage}/err")) {
        let (expect, opts) = headers(&path);
        assert!(
            !expect.is_empty(),
            "{}: err cases need `# expect: CODE`",
            path.display()
        );
        let checked = check_case(&path, &opts);
        let codes: Vec<&str> = checked
            .diagnostics
            .iter()
            .map(|d| d.code.as_str())
            .collect();
        for e in &expect {
            assert!(
                codes.contains(&e.as_str()),
                "{}: expected {e}, got {codes:?}\n{}",
                path.display(),
                render(&checked.diagnostics, &checked.sources, false)
            );
            seen.insert(e.clone());
        }
        assert!(
            checked.plan.is_none(),
            "{}: errors must withhold the plan",
            path.display()
        );
        for d in &checked.diagnostics {
            let loc = d.location(&checked.sources);
            assert!(
                loc.is_some(),
                "{}: diagnostic without a location: {}",
                path.display(),
                d.message
            );
        }
        let rendered = render(&checked.diagnostics, &checked.sources, false).replace(root, "$ROOT");
        snapshot(&path, &rendered);
    }
}

/// Warning cases: a plan, only warnings, the expected codes among them, and a snapshot.
fn run_warn(seen: &mut BTreeSet<String>) {
    let root = env!("CARGO_MANIFEST_DIR");
    let all = cases("check/warn");
    assert!(!all.is_empty());
    for path in all {
        let (expect, opts) = headers(&path);
        let checked = check_case(&path, &opts);
        assert!(
            checked.plan.is_some() && !checked.has_errors(),
            "{}: warning cases must check\n{}",
            path.display(),
            render(&checked.diagnostics, &checked.sources, false)
        );
        for e in &expect {
            assert!(
                checked.diagnostics.iter().any(|d| d.code.as_str() == e),
                "{}: expected {e}",
                path.display()
            );
            seen.insert(e.clone());
        }
        let rendered = render(&checked.diagnostics, &checked.sources, false).replace(root, "$ROOT");
        snapshot(&path, &rendered);
    }
}

/// Whether a snapshot matches, writing it under `BLESS` (or when missing outside CI).
fn snapshot(path: &Path, rendered: &str) {
    let bless = std::env::var_os("BLESS").is_some();
    let snap = path.with_extension("stderr");
    if !bless && !snap.exists() && std::env::var_os("CI").is_some() {
        panic!(
            "{}: no snapshot {}; run the tests with BLESS=1 and commit it",
            path.display(),
            snap.display()
        );
    } else if bless || !snap.exists() {
        std::fs::write(&snap, rendered).unwrap();
    } else {
        let want = std::fs::read_to_string(&snap).unwrap();
        assert!(
            want == rendered,
            "{}: rendered diagnostics differ from the snapshot (BLESS=1 to accept)\n{want}\n{rendered}",
            path.display()
        );
    }
}

/// Data cases: the recipe checks, its data does not load, and the diagnostic has the data
/// code at the dataset's declaration.
fn run_data_err(seen: &mut BTreeSet<String>) {
    let root = env!("CARGO_MANIFEST_DIR");
    for path in cases("data/err") {
        let (expect, opts) = headers(&path);
        let checked = check_case(&path, &opts);
        assert!(
            !checked.has_errors(),
            "{}: data cases must check\n{}",
            path.display(),
            render(&checked.diagnostics, &checked.sources, false)
        );
        let plan = checked.plan.as_ref().unwrap();
        let trial = &plan.trials[0];
        let spec = ahtsgd::check::data::lower(trial.config.obj("data")).expect("a reader");
        let err = ahtsgd::data::load(&spec, 0)
            .err()
            .unwrap_or_else(|| panic!("{}: the data loaded", path.display()));
        let d = ahtsgd::train::RunError::Data(err).diagnostic(trial, plan);
        for e in &expect {
            assert_eq!(d.code.as_str(), e, "{}", path.display());
            seen.insert(e.clone());
        }
        assert!(d.location(&checked.sources).is_some());
        let rendered = render(&[d], &checked.sources, false).replace(root, "$ROOT");
        snapshot(&path, &rendered);
    }
}

#[test]
fn parse_ok_cases_have_no_diagnostics() {
    run_ok("parse");
}

#[test]
fn check_ok_cases_have_no_diagnostics() {
    run_ok("check");
}

#[test]
fn err_cases_report_their_codes_and_match_snapshots() {
    let mut seen = BTreeSet::new();
    run_err("parse", &mut seen);
    run_err("check", &mut seen);
    run_warn(&mut seen);
    run_data_err(&mut seen);
    let count = cases("parse/err").len() + cases("check/err").len();
    assert!(count >= 60, "only {count} error cases");
    // every recipe-level code has a case (data and run codes are covered by their own tests)
    let missing: Vec<&str> = Code::ALL
        .iter()
        .map(|c| c.as_str())
        .filter(|c| {
            // files that cannot be read, or are not UTF-8, and failures while training are
            // tested on the binary
            !c.starts_with("aht::run") && *c != "aht::load::io" && *c != "aht::load::encoding"
        })
        .filter(|c| !seen.contains(*c))
        .collect();
    assert!(
        missing.is_empty(),
        "codes without an error case: {missing:?}"
    );
}

#[test]
fn missing_file_is_an_io_diagnostic() {
    let checked = check_file(Path::new("no/such/recipe.aht"), &Options::default());
    assert_eq!(checked.diagnostics.len(), 1);
    assert_eq!(checked.diagnostics[0].code, Code::Io);
}
