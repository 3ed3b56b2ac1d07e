//! Models written in the recipe, through the real binary: `recipes/layers.aht` checks, plans
//! with shapes and trains; `ahtsgd show` prints each built-in kind as a `layers` recipe that
//! lays out the same model; a killed `layers` trial resumes to the bits of an uninterrupted one.

mod common;

use common::{ahtsgd, ahtsgd_env, read, write};
use std::path::Path;

fn recipe(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("recipes")
        .join(name)
        .display()
        .to_string()
}

fn ok(o: &std::process::Output) -> String {
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The parameter count `plan` prints for trial 0 of a recipe.
fn parameters(plan: &str) -> usize {
    let at = plan.find(" parameters)").expect("a parameter count");
    let start = plan[..at].rfind('(').expect("an opening parenthesis") + 1;
    plan[start..at].parse().unwrap()
}

#[test]
fn layers_recipe_plans_with_shapes_and_trains() {
    let tmp = tempfile::tempdir().unwrap();
    let plan = ok(&ahtsgd(
        &["plan", "--layers", &recipe("layers.aht")],
        tmp.path(),
    ));
    // the small ResNet on 28x28 MNIST: shapes through the residual blocks, down to the head
    for row in [
        "residual2.shortcut.conv0",
        "32x14x14",
        "global_avg_pool0                  global_avg_pool  32",
        "fc                                linear           10",
    ] {
        assert!(plan.contains(row), "no `{row}` in\n{plan}");
    }
    let json = ok(&ahtsgd(
        &["plan", "--layers", "--json", &recipe("layers.aht")],
        tmp.path(),
    ));
    let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    let layers = first["layers"].as_array().unwrap();
    assert_eq!(layers.last().unwrap()["output"], serde_json::json!([10]));
    let total: u64 = layers
        .iter()
        .map(|l| l["parameters"].as_u64().unwrap())
        .sum();
    assert_eq!(first["parameters"].as_u64(), Some(total));

    ok(&ahtsgd(
        &[
            "run",
            &recipe("layers.aht"),
            "--out",
            "r",
            "--quiet",
            "--set",
            "small.max_steps=3",
            "--set",
            "resnet18.max_steps=2",
        ],
        tmp.path(),
    ));
    for (i, exp) in ["small", "resnet18"].into_iter().enumerate() {
        let s: serde_json::Value = serde_json::from_str(&read(
            tmp.path()
                .join(format!("r/{exp}/trial-{i:04}/summary.json")),
        ))
        .unwrap();
        assert!(
            s["final"]["test_loss"].as_f64().is_some_and(f64::is_finite),
            "{exp}: {s}"
        );
    }
}

#[test]
fn resnet18_written_as_layers_has_the_built_in_parameter_count() {
    let tmp = tempfile::tempdir().unwrap();
    let text = read(recipe("layers.aht"));
    let decls: String = text
        .lines()
        .skip_while(|l| !l.starts_with("model conv_bn"))
        .take_while(|l| !l.starts_with("optimizer"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        decls.lines().count() < 40,
        "the ResNet-18 recipe is {} lines",
        decls.lines().count()
    );
    let exp = |model: &str| {
        format!(
            "{decls}\nexperiment e {{ data = cifar10 {{ path = \"x\" }}, model = {model}, optimizer = sgd {{ lr = 0.1 }}, epochs = 1 }}\n"
        )
    };
    write(tmp.path(), "a.aht", &exp("resnet18_layers"));
    write(tmp.path(), "b.aht", &exp("resnet18 {}"));
    let a = parameters(&ok(&ahtsgd(&["plan", "a.aht"], tmp.path())));
    let b = parameters(&ok(&ahtsgd(&["plan", "b.aht"], tmp.path())));
    assert_eq!(a, b);
    assert_eq!(b, 11_173_962, "torchvision-style CIFAR ResNet-18");
}

#[test]
fn show_prints_each_built_in_as_a_layers_recipe_with_its_names() {
    let tmp = tempfile::tempdir().unwrap();
    for (model, names) in [
        ("mlp", &["\"fc0\"", "\"fc1\"", "linear(classes"][..]),
        (
            "cnn { channels = [4, 8], hidden = [16] }",
            &["\"conv1\"", "max_pool(2", "\"fc1\""],
        ),
        (
            "resnet18 { width = 16 }",
            &[
                "\"stem\"",
                "\"stem.bn\"",
                "\"layer2.0\"",
                "\"shortcut.bn\"",
                "\"fc\"",
            ],
        ),
        ("resnet50 { width = 4 }", &["\"conv3\"", "\"layer4.2\""]),
    ] {
        let shown = ok(&ahtsgd(&["show", model, "--name", "net"], tmp.path()));
        for n in names {
            assert!(shown.contains(n), "{model}: no {n} in\n{shown}");
        }
        // the printed recipe checks and has the built-in's parameters, layer by layer
        let exp = |m: &str| {
            format!(
                "experiment e {{ data = cifar10 {{ path = \"x\" }}, model = {m}, optimizer = sgd {{ lr = 0.1 }}, epochs = 1 }}\n"
            )
        };
        write(tmp.path(), "shown.aht", &format!("{shown}{}", exp("net")));
        write(tmp.path(), "builtin.aht", &exp(model));
        let table = |f: &str| -> Vec<serde_json::Value> {
            let out = ok(&ahtsgd(&["plan", "--layers", "--json", f], tmp.path()));
            let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
            v["layers"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|l| l["parameters"].as_u64() > Some(0))
                .map(|l| serde_json::json!([l["name"], l["shape"], l["init"], l["bias_init"]]))
                .collect()
        };
        assert_eq!(table("shown.aht"), table("builtin.aht"), "{model}");
    }
    let bad = ahtsgd(&["show", "mlpp"], tmp.path());
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("did you mean `mlp`"), "{err}");
}

/// A `layers` model with batch norm, killed after a checkpoint and run again, continues to
/// the same bits as a run that was never interrupted.
#[test]
fn killed_layers_trial_resumes_bitwise() {
    let recipe = "dataset d = mnist_mini { train_limit = 64, test_limit = 32 }
model block = layers { width = 4, stack = [conv(width, 3, padding = 1), batch_norm, relu] }
model net = layers { stack = [block(width = 3), residual(block(width = 3)), max_pool(2), flatten, linear(classes)] }
experiment e {
  data = d
  model = net
  optimizer = sgd { lr = 0.05, momentum = 0.9 }
  epochs = 2
  batch = 8
  log_every = 1 step
  checkpoint_every = 5 steps
}
";
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "r.aht", recipe);
    ok(&ahtsgd(
        &["run", "r.aht", "--out", "whole", "--quiet"],
        tmp.path(),
    ));
    let killed = ahtsgd_env(
        &["run", "r.aht", "--out", "cut", "--quiet"],
        tmp.path(),
        &[("AHTSGD_KILL_AFTER", "7")],
    );
    assert!(!killed.status.success(), "the kill hook stops the run");
    ok(&ahtsgd(
        &["run", "r.aht", "--out", "cut", "--quiet"],
        tmp.path(),
    ));
    let metrics = |d: &str| read(tmp.path().join(format!("{d}/e/trial-0000/metrics.jsonl")));
    assert_eq!(metrics("whole"), metrics("cut"));
    let s: serde_json::Value =
        serde_json::from_str(&read(tmp.path().join("cut/e/trial-0000/summary.json"))).unwrap();
    assert_eq!(s["resumed_from"], serde_json::json!([5]));
}

/// The built-in MLP, CNN and ResNet give the numbers they gave when each had passes written
/// by hand for its architecture: `tests/golden/passes.metrics.jsonl` is what
/// `tests/golden/passes.aht` logged through those passes (at the commit that retired them),
/// and every model now runs through the layer executor. The MLP and CNN take H·v by the
/// R-operator for adaptive α, as they did; the ResNet trains under a fixed α, since its H·v
/// was then a double backward through candle's graph (the same product by other ops).
#[test]
fn built_in_kinds_keep_the_numbers_of_their_hand_written_passes() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let tmp = tempfile::tempdir().unwrap();
    ok(&ahtsgd(
        &[
            "run",
            &golden.join("passes.aht").display().to_string(),
            "--out",
            "r",
            "--quiet",
        ],
        tmp.path(),
    ));
    let mut logged = String::new();
    for (i, exp) in ["mlp", "cnn", "resnet"].into_iter().enumerate() {
        let m = read(
            tmp.path()
                .join(format!("r/{exp}/trial-{i:04}/metrics.jsonl")),
        );
        assert!(m.lines().count() >= 3, "{exp}: {m}");
        logged.push_str(&m);
    }
    // Bitwise on the machine that recorded them; on another CPU the GEMM crate picks other
    // kernels and cache-sized blocks for some products (AVX-512 or not, the L1's size), which
    // moves the last bits of f32 sums. Every field must be there, whole numbers equal, and
    // every other number within 2e-6 relative of the record: far below what a wrong pass
    // gives (a dropped term moves losses in the third digit within a step). The ResNet is
    // compared over its first 4 steps only: at width 4 and batch 16, batch norm's near-empty
    // channels grow a 1e-7 difference 10^4-fold within two more steps, so across CPUs its
    // later numbers differ as any two chaotic runs do.
    let expected = read(golden.join("passes.metrics.jsonl"));
    assert_eq!(logged.lines().count(), expected.lines().count());
    let resnet_from = logged.lines().count()
        - read(tmp.path().join("r/resnet/trial-0002/metrics.jsonl"))
            .lines()
            .count();
    let mut worst = (0.0f64, String::new());
    for (n, (a, b)) in logged.lines().zip(expected.lines()).enumerate() {
        if n >= resnet_from
            && serde_json::from_str::<serde_json::Value>(b).unwrap()["step"].as_u64() > Some(4)
        {
            continue;
        }
        let (a, b): (serde_json::Value, serde_json::Value) = (
            serde_json::from_str(a).unwrap(),
            serde_json::from_str(b).unwrap(),
        );
        let (a, b) = (a.as_object().unwrap(), b.as_object().unwrap());
        assert_eq!(
            a.keys().collect::<Vec<_>>(),
            b.keys().collect::<Vec<_>>(),
            "line {}",
            n + 1
        );
        for (k, want) in b {
            let got = &a[k];
            if want.is_u64() || want.is_i64() || !want.is_number() {
                assert_eq!(got, want, "line {} `{k}`", n + 1);
                continue;
            }
            let (x, y) = (got.as_f64().unwrap(), want.as_f64().unwrap());
            let rel = (x - y).abs() / y.abs().max(1e-12);
            if rel > worst.0 {
                worst = (rel, format!("line {} `{k}`: {x} against {y}", n + 1));
            }
        }
    }
    assert!(worst.0 <= 2e-6, "{}", worst.1);
}

/// The VGG recipe (batch norm, max pooling, dropout) checks, plans with shapes and trains;
/// a run killed after a checkpoint continues to the bits of one that was never interrupted,
/// dropout's masks included, with sharpness estimated (dropout off) along the way.
#[test]
fn vgg_recipe_with_dropout_trains_and_resumes_bitwise() {
    let tmp = tempfile::tempdir().unwrap();
    let plan = ok(&ahtsgd(
        &["plan", "--layers", &recipe("vgg.aht")],
        tmp.path(),
    ));
    for row in ["dropout0", "32x14x14", "dropout1"] {
        assert!(plan.contains(row), "no `{row}` in\n{plan}");
    }
    let args = |out: &'static str| -> Vec<String> {
        [
            "run",
            &recipe("vgg.aht"),
            "--out",
            out,
            "--quiet",
            "--trial",
            "0",
            "--set",
            "vgg_mnist.max_steps=7",
            "--set",
            "vgg_mnist.log_every=1 step",
            "--set",
            "vgg_mnist.checkpoint_every=3 steps",
            "--set",
            "follow.sharpness=power_iteration { iters = 3, every = 2 steps }",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let run = |out: &'static str, env: &[(&str, &str)]| {
        let a = args(out);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        ahtsgd_env(&a, tmp.path(), env)
    };
    ok(&run("whole", &[]));
    assert!(!run("cut", &[("AHTSGD_KILL_AFTER", "5")]).status.success());
    ok(&run("cut", &[]));
    let metrics = |d: &str| {
        read(
            tmp.path()
                .join(format!("{d}/vgg_mnist/trial-0000/metrics.jsonl")),
        )
    };
    assert!(metrics("whole").lines().count() >= 7);
    assert_eq!(metrics("whole"), metrics("cut"));
    // and `rerun` from the record trains it again to the same numbers
    let rerun = ok(&ahtsgd(
        &["rerun", "whole/vgg_mnist/trial-0000"],
        tmp.path(),
    ));
    assert!(
        rerun.contains("metrics.jsonl identical to the original"),
        "{rerun}"
    );
}

/// `ahtsgd gradcheck --synthetic` passes on every recipe in `recipes/` at small widths (the
/// zero-initialised ones with another `init`: weights all zero put every ReLU input at its
/// kink, where finite differences say nothing), and a recipe added without an entry here
/// fails this test.
#[test]
fn gradcheck_passes_on_every_recipe_at_small_widths() {
    let cases: &[(&str, &[&str])] = &[
        (
            "charlm.aht",
            &["gpt.dim=8", "gpt.heads=2", "sonnets.context=6"],
        ),
        ("cifar10_resnet_sharpness.aht", &["net.width=2"]),
        (
            "controller_grid.aht",
            &[
                "zero.hidden=[8, 6]",
                "zero.init=default",
                "kaiming.hidden=[8, 6]",
            ],
        ),
        ("grokking.aht", &["gpt.dim=8", "gpt.heads=2"]),
        ("layers.aht", &["resnet18_layers.width=2"]),
        ("mnist_lr_robustness.aht", &["mlp.hidden=[8]"]),
        (
            "mnist_zero_init.aht",
            &["zero_mlp.hidden=[8, 6]", "zero_mlp.init=default"],
        ),
        (
            "paper_claims.aht",
            &[
                "zero.hidden=[8, 6]",
                "zero.init=default",
                "kaiming.hidden=[8, 6]",
            ],
        ),
        ("quickstart.aht", &["mlp.hidden=[8, 6]", "mlp.init=default"]),
        (
            "sensitivity.aht",
            &["mlp.hidden=[8, 6]", "mlp.init=default"],
        ),
        (
            "svhn_adaptive_vs_annealed.aht",
            &["small_cnn.channels=[2, 3]", "small_cnn.hidden=[5]"],
        ),
        ("vgg.aht", &[]),
    ];
    let mut listed: Vec<&str> = cases.iter().map(|(r, _)| *r).collect();
    let mut present: Vec<String> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".aht"))
            .collect();
    listed.sort();
    present.sort();
    assert_eq!(listed, present, "every recipe has a gradcheck case");
    let tmp = tempfile::tempdir().unwrap();
    for (name, sets) in cases {
        let path = recipe(name);
        let mut args = vec!["gradcheck", path.as_str(), "--synthetic", "--json"];
        for s in *sets {
            args.extend(["--set", s]);
        }
        let out = ok(&ahtsgd(&args, tmp.path()));
        for line in out.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["ok"], true, "{name}: {line}");
            assert!(
                v["tensors"].as_array().is_some_and(|t| !t.is_empty()),
                "{line}"
            );
        }
    }
    // weights all zero: every direction crosses a kink, and the check says it failed
    let zero = ahtsgd(
        &[
            "gradcheck",
            &recipe("quickstart.aht"),
            "--synthetic",
            "--set",
            "mlp.hidden=[8, 6]",
        ],
        tmp.path(),
    );
    let said = String::from_utf8_lossy(&zero.stdout);
    assert_eq!(zero.status.code(), Some(1), "{said}");
    assert!(
        said.contains("FAILED") && said.contains("crossed a kink"),
        "{said}"
    );
    // an `arrays` dataset without `shape` and `classes` cannot be checked on random inputs
    write(
        tmp.path(),
        "a.aht",
        "experiment e { data = arrays { path = \"x.npz\" }, model = mlp {}, optimizer = sgd { lr = 0.1 }, epochs = 1 }\n",
    );
    let no_shape = ahtsgd(&["gradcheck", "a.aht", "--synthetic"], tmp.path());
    let err = String::from_utf8_lossy(&no_shape.stderr);
    assert!(
        !no_shape.status.success() && err.contains("shape = [..]"),
        "{err}"
    );
}
