//! `ahtsgd report` end to end: a real sweep, its plots, and the page opened in headless Chromium.

mod common;

use common::ahtsgd;
use std::path::{Path, PathBuf};
use std::process::Command;

const SWEEP: &str =
    "dataset d = blobs { classes = 3, features = 4, samples = 96, test_samples = 48 }
model m = mlp { hidden = [8], activation = tanh }
schedule s = adaptive { sharpness = power_iteration { iters = 4, every = 3 steps }, half_life = 3 steps }
optimizer aht = ahtsgd { lr = 0.1, sigma = 0.01, alpha = s }
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
";

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
    let rep = ahtsgd(&["report", "runs"], tmp.path());
    assert!(
        rep.status.success(),
        "{}",
        String::from_utf8_lossy(&rep.stderr)
    );
    let dir = tmp.path().join("runs/report");
    for stem in [
        "accuracy",
        "test_loss",
        "train_loss",
        "alpha",
        "sharpness",
        "alpha_sharpness",
        "noise_norm",
        "heatmap_aht",
    ] {
        let png = std::fs::read(dir.join(format!("grid_{stem}.png")))
            .unwrap_or_else(|e| panic!("{stem}.png: {e}"));
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{stem}.png is a PNG");
        let svg = std::fs::read_to_string(dir.join(format!("grid_{stem}.svg"))).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    }
    let sharp = std::fs::read_to_string(dir.join("grid_sharpness.svg")).unwrap();
    assert!(
        sharp.contains("2/lr = 20\n") && sharp.contains("2/lr = 40\n"),
        "2/lr lines for both lrs"
    );
    let tracked = std::fs::read_to_string(dir.join("grid_alpha_sharpness.svg")).unwrap();
    assert!(
        tracked.contains("λ_max = 2/lr")
            && tracked.contains("λ_max/(2/lr)")
            && tracked.contains(" α"),
        "α beside sharpness over 2/lr, with the Edge of Stability at 1"
    );
    let heat = std::fs::read_to_string(dir.join("grid_heatmap_aht.svg")).unwrap();
    assert!(
        heat.contains(">\nlr\n<") && heat.contains(">\nsigma\n<"),
        "heat map axes name the sweeps"
    );

    let index = dir.join("index.html");
    let page = std::fs::read_to_string(&index).unwrap();
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no network"
    );
    assert_eq!(page.matches("<img ").count(), 8);
    // Arms split by their sweep values, each paired with the baseline.
    assert!(page.contains("aht (lr=0.05, sigma=0.03)") && page.contains("− plain"));

    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install chromium for this test"
        );
        eprintln!("skipped the browser check: no chromium on PATH");
        return;
    };
    let probe = harness(&index);
    let out = Command::new(browser)
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
    assert!(
        dom.contains("<div id=\"verdict\">images 8/8 rows 5 paired 4</div>"),
        "chromium saw: {}\nstderr: {}",
        dom.lines()
            .find(|l| l.contains("verdict"))
            .unwrap_or("no verdict"),
        String::from_utf8_lossy(&out.stderr)
    );
}
