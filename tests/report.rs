//! `ahtsgd report` end to end: a real sweep, its plots, and the page opened in headless Chromium.

mod common;

use common::ahtsgd;
use std::path::{Path, PathBuf};
use std::process::Command;

const SWEEP: &str =
    "dataset d = blobs { classes = 3, features = 4, samples = 96, test_samples = 48 }
model m = mlp { hidden = [8], activation = tanh }
schedule s = adaptive { sharpness = power_iteration { iters = 4, every = 3 steps }, half_life = 3 steps }
schedule h = adaptive { sharpness = hutchinson { samples = 2, every = 3 steps }, half_life = 3 steps }
optimizer aht = ahtsgd { lr = 0.1, sigma = 0.01, alpha = s }
optimizer ahth = ahtsgd { lr = 0.1, sigma = 0.01, alpha = h }
optimizer plain = sgd { lr = 0.1 }
experiment grid {
  data = d
  model = m
  optimizer = sweep(aht, plain)
  aht.lr = sweep(0.05, 0.1)
  aht.sigma = sweep(0.01, 0.03)
  seed = sweep(0..2)
  epochs = 2
  batch = 16
  eval_every = 3 steps
  log_every = 1 step
  baseline = \"plain\"
}
experiment once {
  data = d, model = m, optimizer = sweep(ahth, plain), seed = sweep(0..3), epochs = 1, batch = 16
  eval_every = 1 epoch, log_every = 1 step, baseline = \"plain\"
}
experiment search {
  data = d, model = m, optimizer = aht, epochs = 1, batch = 16, log_every = 1 step
  random(n = 6, seed = 1) { aht.lr = loguniform(1e-3, 1e-1), aht.sigma = uniform(0.001, 0.05) }
}
";

/// The texts of an SVG's `<text>` elements with their x coordinates.
fn svg_texts(svg: &str) -> Vec<(f64, String)> {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| {
            let x = t.split("x=\"").nth(1)?.split('"').next()?.parse().ok()?;
            let body = t.split_once('>')?.1.split('<').next()?.trim();
            Some((x, body.to_string()))
        })
        .collect()
}

/// Whether a number's text has at most three significant digits.
fn three_digits(text: &str) -> bool {
    let mantissa = text.split(['e', 'E']).next().unwrap_or(text);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let digits = digits.trim_start_matches('0');
    // integers keep their trailing zeros (1230); decimals have none to drop
    let significant = if mantissa.contains('.') {
        digits.len()
    } else {
        digits.trim_end_matches('0').len()
    };
    significant <= 3
}

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|p| p.join(name))
                    .find(|p| p.is_file())
            })
        })
}

/// A copy of the page with a script that, once everything has loaded, writes how many images
/// decoded and how many summary rows exist into the DOM, which `--dump-dom` then prints.
fn harness(index: &Path) -> PathBuf {
    let page = std::fs::read_to_string(index).unwrap();
    let probe = r#"<script>window.addEventListener("load", () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  const rows = document.querySelectorAll("table.summary tbody tr").length;
  const paired = document.querySelectorAll("table.paired tbody tr").length;
  const d = document.createElement("div");
  d.id = "verdict";
  d.textContent = `images ${ok}/${imgs.length} rows ${rows} paired ${paired}`;
  document.body.appendChild(d);
});</script></body>"#;
    let out = index.with_file_name("harness.html");
    std::fs::write(&out, page.replace("</body>", probe)).unwrap();
    out
}

#[test]
fn report_draws_every_plot_and_the_page_loads_in_chromium() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("grid.aht"), SWEEP).unwrap();
    let run = ahtsgd(
        &["run", "grid.aht", "--out", "runs", "--jobs", "2", "--quiet"],
        tmp.path(),
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    // One cell of the grid not run yet (aht at lr 0.1, sigma 0.03: both seeds).
    let planned = std::fs::read_to_string(tmp.path().join("runs/grid/planned.json")).unwrap();
    let planned: serde_json::Value = serde_json::from_str(&planned).unwrap();
    let mut removed = 0;
    for t in planned["trials"].as_array().unwrap() {
        if t["arm"] == "aht (lr=0.1, sigma=0.03)" {
            let dir = tmp.path().join(format!(
                "runs/grid/trial-{:04}",
                t["trial"].as_u64().unwrap()
            ));
            std::fs::remove_dir_all(dir).unwrap();
            removed += 1;
        }
    }
    assert_eq!(removed, 2);
    let rep = ahtsgd(&["report", "runs"], tmp.path());
    assert!(
        rep.status.success(),
        "{}",
        String::from_utf8_lossy(&rep.stderr)
    );
    let dir = tmp.path().join("runs/report");
    let mut plots = 0;
    // Every experiment draws the seven line charts; the grid adds its heat map, the random
    // search its scatter plot.
    const CHARTS: [&str; 7] = [
        "accuracy",
        "test_loss",
        "train_loss",
        "alpha",
        "sharpness",
        "alpha_sharpness",
        "noise_norm",
    ];
    for (exp, extra) in [
        ("grid", Some("heatmap_aht")),
        ("once", None),
        ("search", Some("scatter_aht")),
    ] {
        let stems = CHARTS.iter().copied().chain(extra);
        for stem in stems {
            let png = std::fs::read(dir.join(format!("{exp}_{stem}.png")))
                .unwrap_or_else(|e| panic!("{exp}_{stem}.png: {e}"));
            assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{stem}.png is a PNG");
            let svg = std::fs::read_to_string(dir.join(format!("{exp}_{stem}.svg"))).unwrap();
            assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
            // Every number drawn has three significant digits at most.
            for (_, text) in svg_texts(&svg) {
                for word in text.split([' ', '(', ')', '=', ',', '[', ']']) {
                    if let Ok(v) = word.parse::<f64>() {
                        assert!(three_digits(word), "{exp}_{stem}: {word} in {text:?}");
                        // a tick meant to be 0 is not drawn as rounding residue (-5.55e-17)
                        assert!(v == 0.0 || v.abs() > 1e-15, "{exp}_{stem}: {word}");
                    }
                }
            }
            plots += 1;
        }
    }
    let svg = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    let sharp = svg("grid_sharpness.svg");
    assert!(
        sharp.contains("2/lr = 20\n") && sharp.contains("2/lr = 40\n"),
        "2/lr lines for both lrs"
    );
    let tracked = svg("grid_alpha_sharpness.svg");
    assert!(
        tracked.contains("λ_max = 2/lr")
            && tracked.contains("λ_max/(2/lr)")
            && tracked.contains(" α"),
        "α beside sharpness over 2/lr, with the Edge of Stability at 1"
    );
    // Legends sit right of the plot area (1200 px wide, 330 for the legend), not on the curves.
    let legend: Vec<(f64, String)> = svg_texts(&svg("grid_accuracy.svg"))
        .into_iter()
        .filter(|(_, t)| t.starts_with("aht (") || t == "plain")
        .collect();
    assert_eq!(legend.len(), 4, "{legend:?}");
    assert!(legend.iter().all(|(x, _)| *x > 870.0), "{legend:?}");
    // Bands of a mean accuracy with two seeds pass 0% and 100%: clipped, and the title says so.
    let acc = svg("grid_accuracy.svg");
    assert!(acc.contains("clipped to 0–100%"), "accuracy caption");
    // A single evaluation is drawn as a marker per arm.
    assert_eq!(svg("once_accuracy.svg").matches("<circle").count(), 2);
    // Hutchinson's estimate is named as a mean eigenvalue, power iteration's as λ_max.
    let once = svg("once_sharpness.svg");
    assert!(
        once.contains("mean eigenvalue") && !once.contains("λ_max ("),
        "Hutchinson's label"
    );
    assert!(svg("once_alpha_sharpness.svg").contains("mean eigenvalue/(2/lr)"));
    assert!(sharp.contains("λ_max (log scale)") && !sharp.contains("mean eigenvalue"));
    // The search's first estimates are negative (an indefinite Hessian at init): left off the
    // log axis, and its title says so.
    assert!(svg("search_sharpness.svg").contains("left off the log axis"));
    // α sitting at its bound: the axis fits the data instead of spanning [1, 2].
    // (the y axis's labels end at x = 72, left of the plot)
    let alpha_ticks: Vec<f64> = svg_texts(&svg("search_alpha.svg"))
        .iter()
        .filter(|(x, _)| *x < 80.0)
        .filter_map(|(_, t)| t.parse::<f64>().ok())
        .collect();
    assert!(
        alpha_ticks.iter().all(|v| (0.9..=1.1).contains(v)) && alpha_ticks.len() >= 3,
        "α ticks {alpha_ticks:?}"
    );
    // The grid's heat map names its sweeps and says which cell has no trial; the random
    // search is a scatter plot (one point per trial, no heat map).
    let heat = svg("grid_heatmap_aht.svg");
    assert!(
        heat.contains(">\nlr\n<") && heat.contains(">\nsigma\n<"),
        "heat map axes name the sweeps"
    );
    assert_eq!(heat.matches("no trial").count(), 1);
    assert!(!heat.contains("diverged"));
    assert!(!dir.join("search_heatmap_aht.png").exists());
    let scatter = svg("search_scatter_aht.svg");
    assert_eq!(
        scatter.matches("<circle").count(),
        12,
        "6 points, each with an outline"
    );
    assert!(scatter.contains("lr (log scale)"));

    let index = dir.join("index.html");
    let page = std::fs::read_to_string(&index).unwrap();
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no network"
    );
    assert_eq!(page.matches("<img ").count(), plots);
    // Arms split by their sweep values, each paired with the baseline; sampled values are
    // shown to three digits in the tables.
    assert!(page.contains("aht (lr=0.05, sigma=0.03)") && page.contains("− plain"));
    for cell in page.split("<td>").skip(1) {
        let cell = cell.split('<').next().unwrap();
        for word in cell.split([' ', '(', ')', '=', ',', '[', ']']) {
            if word.contains('.') && word.parse::<f64>().is_ok() {
                assert!(three_digits(word), "table cell {cell:?}");
            }
        }
    }

    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install chromium for this test"
        );
        eprintln!("skipped the browser check: no chromium on PATH");
        return;
    };
    let probe = harness(&index);
    let out = Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=10000",
            "--dump-dom",
        ])
        .arg(format!("file://{}", probe.display()))
        .output()
        .expect("chromium starts");
    let dom = String::from_utf8_lossy(&out.stdout);
    // rows: grid 5 arms, once 2, search 6; paired: grid 4 against plain, once 1
    let want = format!("<div id=\"verdict\">images {plots}/{plots} rows 13 paired 5</div>");
    assert!(
        dom.contains(&want),
        "chromium saw: {}\nstderr: {}",
        dom.lines()
            .find(|l| l.contains("verdict"))
            .unwrap_or("no verdict"),
        String::from_utf8_lossy(&out.stderr)
    );
    // A screenshot of the whole page, and every plot beside it, for a person to look at.
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts/report");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("page.png");
    let height = 800 + 560 * plots;
    let out = Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            &format!("--window-size=1280,{height}"),
            &format!("--screenshot={}", shot.display()),
        ])
        .arg(format!("file://{}", index.display()))
        .output()
        .expect("chromium starts");
    let png = std::fs::read(&shot).unwrap_or_else(|e| {
        panic!(
            "no screenshot ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "png") {
            std::fs::copy(&p, artifacts.join(p.file_name().unwrap())).unwrap();
        }
    }
}
