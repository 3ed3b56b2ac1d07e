//! The language end to end: recipes, docs, formatting round trips, sweeps, robustness.

use ahtsgd::check::{Options, check_file, check_text};
use ahtsgd::diagnostic::render;
use ahtsgd::source::SourceMap;
use proptest::prelude::*;
use std::path::Path;

fn files(dir: &str, ext: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join(dir)];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == ext) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Plans of two recipe texts, compared by their resolved trials.
fn plan_fingerprint(name: &str, text: &str) -> Vec<String> {
    let checked = check_text(name, text, &Options::default());
    assert!(
        !checked.has_errors(),
        "{name}:\n{}",
        render(&checked.diagnostics, &checked.sources, false)
    );
    checked
        .plan
        .unwrap()
        .trials
        .iter()
        .map(|t| format!("{} {:?} {}", t.index, t.choices, t.resolved_source()))
        .collect()
}

fn format_text(text: &str) -> String {
    let mut sources = SourceMap::new();
    let id = sources.add("x.aht", None, text);
    let module = ahtsgd::syntax::parse(id, text).expect("parses");
    ahtsgd::fmt::format(&module, text)
}

#[test]
fn every_recipe_checks_and_is_formatted() {
    let recipes = files("recipes", "aht");
    assert!(!recipes.is_empty());
    for path in recipes {
        let checked = check_file(&path, &Options::default());
        assert!(
            !checked.has_errors(),
            "{}:\n{}",
            path.display(),
            render(&checked.diagnostics, &checked.sources, false)
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            format_text(&text),
            text,
            "{} is not in canonical format (run `ahtsgd fmt`)",
            path.display()
        );
    }
}

#[test]
fn quickstart_plans_ten_trials() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/quickstart.aht");
    let plan = check_file(&path, &Options::default())
        .plan
        .expect("quickstart checks");
    assert_eq!(plan.trials.len(), 10);
    let arms: Vec<&str> = plan
        .trials
        .iter()
        .map(|t| t.choices[0].1.as_str())
        .collect();
    assert_eq!(
        arms,
        ["aht"; 5]
            .into_iter()
            .chain(["plain"; 5])
            .collect::<Vec<_>>()
    );
    let seeds: Vec<f64> = plan.trials.iter().map(|t| t.config.f64("seed")).collect();
    assert_eq!(seeds, [0., 1., 2., 3., 4., 0., 1., 2., 3., 4.]);
}

#[test]
fn docs_blocks_check() {
    let mut count = 0;
    for path in files("docs", "md") {
        let text = std::fs::read_to_string(&path).unwrap();
        let mut rest = text.as_str();
        while let Some(start) = rest.find("```aht\n") {
            let body = &rest[start + 7..];
            let end = body.find("```").expect("closed block");
            let block = &body[..end];
            count += 1;
            let name = format!("{}#{count}", path.display());
            let checked = check_text(&name, block, &Options::default());
            assert!(
                !checked.has_errors(),
                "{name}:\n{}",
                render(&checked.diagnostics, &checked.sources, false)
            );
            rest = &body[end..];
        }
    }
    assert!(count >= 10, "docs hold only {count} aht blocks");
}

#[test]
fn formatting_is_idempotent_and_keeps_meaning_of_every_case() {
    for dir in ["tests/cases/parse/ok", "tests/cases/check/ok", "recipes"] {
        for path in files(dir, "aht") {
            let text = std::fs::read_to_string(&path).unwrap();
            let once = format_text(&text);
            let twice = format_text(&once);
            assert_eq!(once, twice, "{}: fmt is not idempotent", path.display());
            let comments = |t: &str| t.matches('#').count();
            assert_eq!(
                comments(&text),
                comments(&once),
                "{}: fmt lost a comment",
                path.display()
            );
            if dir != "tests/cases/parse/ok" && !text.contains("import") && !text.contains("# set:")
            {
                assert_eq!(
                    plan_fingerprint("a.aht", &text),
                    plan_fingerprint("b.aht", &once),
                    "{}: fmt changed the plan",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn fmt_puts_messy_input_into_canonical_form() {
    let messy = "model   m=mlp{hidden=[8,8,],activation=relu}   # keep me\n\n\n\noptimizer o = sgd {\n lr = 0.1 ,\n   momentum=0.9\n}\n";
    let want = "model m = mlp { hidden = [8, 8], activation = relu }  # keep me\n\noptimizer o = sgd {\n  lr = 0.1\n  momentum = 0.9\n}\n";
    assert_eq!(format_text(messy), want);
}

/// A list too long for its line is laid out one element per line, nested lists too, and a
/// comment written inside a list stays where it was (it used to move after the list).
#[test]
fn fmt_breaks_long_lists_and_keeps_comments_inside_them() {
    let messy = "model net = layers {\n  stack = [conv(16, 3, padding = 1), batch_norm, relu,  # the stem\n    # two blocks\n    repeat(2, [residual([conv(16, 3, padding = 1), batch_norm, relu, conv(16, 3, padding = 1, name = \"second\"), batch_norm]), relu]),\n    global_avg_pool, linear(classes)]\n}\n";
    let want = "model net = layers {
  stack = [
    conv(16, 3, padding = 1),
    batch_norm,
    relu,  # the stem
    # two blocks
    repeat(2, [
      residual([
        conv(16, 3, padding = 1),
        batch_norm,
        relu,
        conv(16, 3, padding = 1, name = \"second\"),
        batch_norm,
      ]),
      relu,
    ]),
    global_avg_pool,
    linear(classes),
  ]
}
";
    assert_eq!(format_text(messy), want);
    assert_eq!(format_text(want), want);
    // short lists stay on their line
    let short = "model m = layers { stack = [flatten, linear(8), relu, linear(classes)] }\n";
    assert_eq!(format_text(short), short);
}

#[test]
fn sweeps_expand_as_a_cartesian_product_in_source_order() {
    let text = "dataset d = blobs {}\nmodel m = mlp { hidden = [4] }\noptimizer o = sgd { lr = sweep(0.1, 0.2) }\nexperiment e { data = d, model = m, optimizer = o, epochs = 1, seed = sweep(0..3), batch = sweep(8, 16) }\n";
    let plan = check_text("s.aht", text, &Options::default()).plan.unwrap();
    assert_eq!(plan.trials.len(), 12);
    // experiment fields first in schema order (optimizer's lr is met when the optimizer is resolved)
    let first: Vec<(String, String)> = plan.trials[0].choices.clone();
    let paths: Vec<&str> = first.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, ["o.lr", "e.batch", "e.seed"]);
    let combos: std::collections::BTreeSet<String> = plan
        .trials
        .iter()
        .map(|t| format!("{:?}", t.choices))
        .collect();
    assert_eq!(combos.len(), 12, "every combination once");
}

#[test]
fn zip_pairs_and_random_search_is_seeded() {
    let text = "experiment e { data = blobs {}, model = mlp {}, optimizer = sgd { lr = 0.1 }, epochs = 1\n seed = sweep(1, 2, 3), batch = sweep(8, 16, 32), zip(seed, batch) }\n";
    let plan = check_text("z.aht", text, &Options::default()).plan.unwrap();
    let pairs: Vec<(f64, f64)> = plan
        .trials
        .iter()
        .map(|t| (t.config.f64("seed"), t.config.f64("batch")))
        .collect();
    assert_eq!(pairs, [(1., 8.), (2., 16.), (3., 32.)]);
    let r = "optimizer o = sgd { lr = 0.1 }\nexperiment e { data = blobs {}, model = mlp {}, optimizer = o, epochs = 1\n random(n = 5, seed = 3) { o.lr = loguniform(1e-3, 1e-1) } }\n";
    let lrs = |t: &str| -> Vec<f64> {
        check_text("r.aht", t, &Options::default())
            .plan
            .unwrap()
            .trials
            .iter()
            .map(|t| t.config.obj("optimizer").f64("lr"))
            .collect()
    };
    let a = lrs(r);
    assert_eq!(a.len(), 5);
    assert_eq!(a, lrs(r), "same seed, same samples");
    assert!(a.iter().all(|x| (1e-3..=1e-1).contains(x)));
    assert_ne!(a, lrs(&r.replace("seed = 3", "seed = 4")));
}

#[test]
fn schedule_lr_comes_from_the_optimizer_that_uses_it() {
    let text = "schedule s = adaptive {}\noptimizer a = ahtsgd { lr = 0.05, alpha = s }\noptimizer b = ahtsgd { lr = 0.5, alpha = s }\nexperiment e { data = blobs {}, model = mlp {}, optimizer = sweep(a, b), epochs = 1 }\n";
    let plan = check_text("l.aht", text, &Options::default()).plan.unwrap();
    let c: Vec<f64> = plan
        .trials
        .iter()
        .map(|t| t.config.obj("optimizer").obj("alpha").obj("map").f64("c"))
        .collect();
    assert!((c[0] - (1.0f64 / 0.05).ln()).abs() < 1e-12);
    assert!((c[1] - (1.0f64 / 0.5).ln()).abs() < 1e-12);
}

#[test]
fn set_overrides_are_type_checked_and_applied() {
    let text = "schedule s = adaptive {}\noptimizer o = ahtsgd { lr = 0.1, alpha = s }\nexperiment e { data = blobs {}, model = mlp {}, optimizer = o, epochs = 1 }\n";
    let opts = Options {
        sets: vec![
            "e.epochs=3".into(),
            "o.lr=0.2".into(),
            "s.sharpness.every=20 steps".into(),
        ],
        allow_large: false,
    };
    let plan = check_text("o.aht", text, &opts).plan.unwrap();
    let t = &plan.trials[0].config;
    assert_eq!(t.f64("epochs"), 3.0);
    assert_eq!(t.obj("optimizer").f64("lr"), 0.2);
    assert_eq!(
        t.obj("optimizer")
            .obj("alpha")
            .obj("sharpness")
            .f64("every"),
        20.0
    );
    let bad = Options {
        sets: vec!["s.sharpness.every=0.5 steps".into()],
        allow_large: false,
    };
    let checked = check_text("o.aht", text, &bad);
    assert!(
        checked
            .diagnostics
            .iter()
            .any(|d| d.code.as_str() == "aht::check::unit")
    );
}

#[test]
fn resolved_source_checks_and_gives_the_same_trial() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/quickstart.aht");
    let plan = check_file(&path, &Options::default()).plan.unwrap();
    for t in &plan.trials {
        let src = t.resolved_source();
        let again = check_text("resolved.aht", &src, &Options::default());
        assert!(
            !again.has_errors(),
            "{src}\n{}",
            render(&again.diagnostics, &again.sources, false)
        );
        let p2 = again.plan.unwrap();
        assert_eq!(p2.trials.len(), 1);
        assert_eq!(p2.trials[0].resolved_source(), src);
    }
}

#[test]
fn trial_limit_is_enforced_unless_allowed() {
    let text = "experiment e { data = blobs {}, model = mlp {}, optimizer = sgd { lr = 0.1 }, epochs = 1, seed = sweep(0..200), max_trials = 100 }\n";
    assert!(check_text("t.aht", text, &Options::default()).has_errors());
    let opts = Options {
        allow_large: true,
        ..Default::default()
    };
    assert_eq!(
        check_text("t.aht", text, &opts).plan.unwrap().trials.len(),
        200
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn parse_and_check_never_panic_on_arbitrary_text(s in "\\PC{0,200}") {
        let _ = check_text("p.aht", &s, &Options::default());
    }

    #[test]
    fn parse_and_check_never_panic_on_mutated_recipes(cut in 0usize..900, insert in "[ -~\n]{0,6}") {
        let base = include_str!("../recipes/quickstart.aht");
        let mut at = cut.min(base.len());
        while !base.is_char_boundary(at) { at -= 1; }
        let text = format!("{}{}{}", &base[..at], insert, &base[at..]);
        let checked = check_text("m.aht", &text, &Options::default());
        let _ = render(&checked.diagnostics, &checked.sources, false);
        if let Ok(module) = ahtsgd::syntax::parse(ahtsgd::source::FileId(0), &text) {
            let once = ahtsgd::fmt::format(&module, &text);
            prop_assert_eq!(format_text(&once), once);
        }
    }
}

#[test]
fn the_benchmark_recipe_is_a_real_canonical_recipe() {
    let text = ahtsgd::bench::big_recipe(1000);
    assert_eq!(text.lines().count(), 1000);
    let checked = check_text("big.aht", &text, &Options::default());
    assert!(
        !checked.has_errors(),
        "{}",
        render(&checked.diagnostics, &checked.sources, false)
    );
    assert!(checked.plan.unwrap().trials.len() > 90);
    assert_eq!(
        format_text(&text),
        text,
        "the benchmark recipe is in `fmt` layout"
    );
}

/// Regression: checking the other alternatives of a sweep of declarations must not make the
/// sweeps inside those declarations branch for every trial (it once gave 240 trials here).
#[test]
fn sweeps_inside_swept_declarations_expand_only_when_chosen() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/mnist_lr_robustness.aht");
    let plan = check_file(&path, &Options::default()).plan.expect("checks");
    assert_eq!(plan.trials.len(), 4 * 5 * 3);
    for t in &plan.trials {
        let opt = t.config.obj("optimizer").decl.clone().unwrap();
        let swept: Vec<&str> = t
            .choices
            .iter()
            .map(|(p, _)| p.as_str())
            .filter(|p| p.ends_with(".lr"))
            .collect();
        assert_eq!(
            swept,
            [format!("{opt}.lr")],
            "trial {} sweeps only its own optimizer's lr",
            t.index
        );
    }
}

/// Runs the binary on a file with a deadline: `None` when it had to be killed.
fn ahtsgd_within(args: &[&str], dir: &Path, secs: u64) -> Option<std::process::Output> {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ahtsgd"))
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().unwrap());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// A comment ended by a bare carriage return (old Mac line endings) once held the checker in
/// an endless loop (found by the `check` fuzz target); `check`, `check --json` and `fmt`
/// finish, and the comment ends at the `\r`.
#[test]
fn a_comment_ended_by_a_bare_carriage_return_is_checked_and_formatted() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("h.aht"), "# a\rmodel m = mlp {}\n").unwrap();
    for args in [
        &["check", "h.aht"][..],
        &["check", "--json", "h.aht"],
        &["fmt", "--check", "h.aht"],
    ] {
        let o = ahtsgd_within(args, tmp.path(), 10)
            .unwrap_or_else(|| panic!("`ahtsgd {}` did not finish", args.join(" ")));
        assert_ne!(o.status.code(), Some(101), "{args:?} panicked");
    }
    let o = ahtsgd_within(&["fmt", "h.aht"], tmp.path(), 10).unwrap();
    assert!(o.status.success());
    let formatted = std::fs::read_to_string(tmp.path().join("h.aht")).unwrap();
    assert_eq!(formatted, "# a\nmodel m = mlp {}\n");
}

/// A bare `\r` is a line break wherever lines and columns are given: the JSON location and
/// the rendered source.
#[test]
fn a_bare_carriage_return_is_a_line_break_in_diagnostics() {
    let checked = check_text("v.aht", "version = 1\rversion = 1\n", &Options::default());
    let d = &checked.diagnostics[0];
    let j = d.to_json(&checked.sources);
    let place = j.place.unwrap();
    assert_eq!((place.line, place.column), (2, 11));
    let shown = render(&checked.diagnostics, &checked.sources, false);
    assert!(
        shown.contains(" 1 │ version = 1") && shown.contains(" 2 │ version = 1"),
        "{shown}"
    );
    // \r\n stays one break
    let crlf = check_text(
        "w.aht",
        "version = 1\r\nversion = 1\r\n",
        &Options::default(),
    );
    let place = crlf.diagnostics[0].to_json(&crlf.sources).place.unwrap();
    assert_eq!(place.line, 2);
}

/// Random search draws fields left at their default, fields of a defaulted nested setting and
/// fields of a swept optimizer: `n` trials for each arm that reads a drawn field, each with its
/// own values, which `resolved.aht` writes out. (It had given one trial at the default.)
#[test]
fn random_search_draws_fields_left_at_their_default() {
    let text = "schedule adapt = adaptive {}
optimizer aht = ahtsgd { lr = 0.05, alpha = adapt }
optimizer plain = sgd { lr = 0.1 }
experiment e {
  data = blobs {}
  epochs = 1
  model = mlp { hidden = [8] }
  optimizer = sweep(aht, plain)
  random(n = 4, seed = 3) {
    aht.sigma = loguniform(1e-3, 1e-1)
    aht.weight_decay = uniform(0.0, 0.01)
    adapt.sharpness.iters = randint(5, 20)
    plain.momentum = choice(0.5, 0.9)
  }
}
";
    let checked = check_text("r.aht", text, &Options::default());
    assert!(
        !checked.has_errors(),
        "{}",
        render(&checked.diagnostics, &checked.sources, false)
    );
    let trials = checked.plan.unwrap().trials;
    let by = |opt: &str| -> Vec<_> {
        trials
            .iter()
            .filter(|t| t.config.obj("optimizer").decl.as_deref() == Some(opt))
            .collect()
    };
    let (aht, plain) = (by("aht"), by("plain"));
    assert_eq!((aht.len(), plain.len()), (4, 4), "n trials per arm");
    let choice = |t: &ahtsgd::plan::Trial, path: &str| -> f64 {
        t.choices
            .iter()
            .find(|(p, _)| p == path)
            .unwrap_or_else(|| panic!("trial {} has no `{path}`: {:?}", t.index, t.choices))
            .1
            .parse()
            .unwrap()
    };
    let mut sigmas = Vec::new();
    for t in &aht {
        let o = t.config.obj("optimizer");
        let sigma = choice(t, "aht.sigma");
        assert_eq!(o.f64("sigma"), sigma, "the drawn value is the one used");
        assert!((1e-3..=1e-1).contains(&sigma));
        let wd = choice(t, "aht.weight_decay");
        assert!((0.0..=0.01).contains(&wd) && o.f64("weight_decay") == wd);
        let iters = choice(t, "adapt.sharpness.iters");
        assert!(iters.fract() == 0.0 && (5.0..=20.0).contains(&iters));
        assert_eq!(o.obj("alpha").obj("sharpness").f64("iters"), iters);
        let resolved = t.resolved_source();
        assert!(
            resolved.contains(&format!("sigma = {sigma}"))
                && resolved.contains(&format!("iters = {iters}")),
            "{resolved}"
        );
        sigmas.push(sigma.to_bits());
    }
    sigmas.sort();
    sigmas.dedup();
    assert_eq!(sigmas.len(), 4, "each trial draws its own σ");
    for t in &plain {
        let m = choice(t, "plain.momentum");
        assert!(m == 0.5 || m == 0.9);
        assert_eq!(t.config.obj("optimizer").f64("momentum"), m);
    }
    // and `plan` on the binary lists them with their drawn values
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("r.aht"), text).unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_ahtsgd"))
        .args(["plan", "r.aht"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&o.stdout);
    assert!(listed.contains("experiment e — 8 trials"), "{listed}");
    assert_eq!(listed.matches("aht.sigma=").count(), 4, "{listed}");
}

/// Text that is not UTF-8 is located at its first bad byte, with the byte's value; a
/// byte-order mark at the start is accepted silently, and elsewhere it is named.
#[test]
fn encodings_are_diagnosed_at_the_byte_and_a_leading_bom_is_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let good = "experiment e { data = blobs {}, model = mlp {}, optimizer = sgd { lr = 0.1 }, epochs = 1 }\n";
    std::fs::write(tmp.path().join("bom.aht"), format!("\u{feff}{good}")).unwrap();
    let o = ahtsgd_within(&["check", "bom.aht"], tmp.path(), 10).unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut latin1 = b"# caf".to_vec();
    latin1.push(0xE9);
    latin1.extend(b"\nexperiment e {}\n");
    let mut bad = good.as_bytes().to_vec();
    bad.extend(b"model m = mlp { hidden = [8] } # na");
    bad.push(0xEF);
    bad.push(b'\n');
    for (name, bytes, line, col, byte) in [
        ("latin1.aht", latin1, 1, 6, "0xE9"),
        ("late.aht", bad, 2, 36, "0xEF"),
    ] {
        std::fs::write(tmp.path().join(name), bytes).unwrap();
        let o = ahtsgd_within(&["check", "--json", name], tmp.path(), 10).unwrap();
        assert_eq!(o.status.code(), Some(1));
        let d: serde_json::Value =
            serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().next().unwrap())
                .unwrap();
        assert_eq!(d["code"], "aht::load::encoding", "{d}");
        assert_eq!(
            (d["line"].as_u64(), d["column"].as_u64()),
            (Some(line), Some(col)),
            "{d}"
        );
        assert!(d["message"].as_str().unwrap().contains(byte), "{d}");
        assert!(d["help"].as_str().unwrap().contains("UTF-8"), "{d}");
    }
    // an import that is not UTF-8 is named too
    std::fs::write(tmp.path().join("main.aht"), "import \"latin1.aht\"\n").unwrap();
    let o = ahtsgd_within(&["check", "main.aht"], tmp.path(), 10).unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("aht::load::encoding") && err.contains("latin1.aht"),
        "{err}"
    );
    std::fs::write(
        tmp.path().join("mid.aht"),
        format!("{good}\u{feff}model m = mlp {{}}\n"),
    )
    .unwrap();
    let o = ahtsgd_within(&["check", "mid.aht"], tmp.path(), 10).unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("U+FEFF ZERO WIDTH NO-BREAK SPACE") && err.contains("mid.aht:2:1"),
        "{err}"
    );
}

/// A version-1 recipe that leaves the smoothing out keeps version 1's `ema = 0.05` (so its
/// numbers do not change) and is told about `half_life`; version 2 takes `half_life = 100
/// steps`; what a recipe writes is kept in either version, and `resolved.aht` says which.
#[test]
fn the_smoothing_default_follows_the_language_version() {
    let body = |smoothing: &str| {
        format!(
            "schedule s = adaptive {{ {smoothing} }}\n\
             experiment e {{ data = blobs {{}}, model = mlp {{}}, optimizer = ahtsgd {{ lr = 0.1, alpha = s }}, epochs = 1 }}\n"
        )
    };
    let resolved = |text: &str| {
        let c = check_text("v.aht", text, &Options::default());
        let warned = c
            .diagnostics
            .iter()
            .any(|d| d.code.as_str() == "aht::check::deprecated");
        (c.plan.unwrap().trials[0].resolved_source(), warned)
    };
    let (v1, warned) = resolved(&body(""));
    assert!(
        v1.contains("ema = 0.05") && !v1.contains("half_life"),
        "{v1}"
    );
    assert!(warned, "version 1's default is named as deprecated");
    let (v2, warned) = resolved(&format!("version = 2\n{}", body("")));
    assert!(v2.starts_with("version = 2\n"), "{v2}");
    assert!(
        v2.contains("half_life = 100 steps") && !v2.contains("ema ="),
        "{v2}"
    );
    assert!(!warned);
    let (kept, _) = resolved(&format!("version = 2\n{}", body("ema = 0.2")));
    assert!(
        kept.contains("ema = 0.2") && !kept.contains("half_life"),
        "{kept}"
    );
    let (written, warned) = resolved(&body("half_life = 2 epochs"));
    assert!(
        written.contains("half_life = 2 epochs") && !warned,
        "{written}"
    );
    // and a resolved version-1 record checks to the same trial under this build
    let again = check_text("resolved.aht", &v1, &Options::default());
    assert_eq!(again.plan.unwrap().trials[0].resolved_source(), v1);
}

/// The experiment's `tanh` is `system` in versions 1 and 2 and `portable` from version 3;
/// either may be written in any version; a version-2 record written before the field existed
/// (no `tanh` line) checks to `system`, the tanh it ran with.
#[test]
fn the_tanh_default_follows_the_language_version() {
    let body = |field: &str| {
        format!(
            "experiment e {{ data = blobs {{}}, model = mlp {{ activation = gelu }}, optimizer = sgd {{ lr = 0.1 }}, epochs = 1 {field} }}\n"
        )
    };
    let resolved = |text: &str| {
        let c = check_text("v.aht", text, &Options::default());
        assert!(c.diagnostics.is_empty(), "{:?}", c.diagnostics);
        c.plan.unwrap().trials[0].resolved_source()
    };
    for (version, want) in [
        ("", "system"),
        ("version = 2\n", "system"),
        ("version = 3\n", "portable"),
    ] {
        let r = resolved(&format!("{version}{}", body("")));
        assert!(r.contains(&format!("  tanh = {want}\n")), "{version}: {r}");
    }
    let r = resolved(&format!("version = 2\n{}", body(", tanh = portable")));
    assert!(r.contains("tanh = portable"), "{r}");
    let r = resolved(&format!("version = 3\n{}", body(", tanh = system")));
    assert!(r.contains("tanh = system"), "{r}");
    let v2 = resolved(&format!("version = 2\n{}", body("")));
    let before: String = v2
        .lines()
        .filter(|l| !l.contains("tanh ="))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(resolved(&before), v2);
    let c = check_text(
        "v.aht",
        &format!("version = 3\n{}", body(", tanh = libm")),
        &Options::default(),
    );
    assert!(c.plan.is_none() && !c.diagnostics.is_empty());
}
