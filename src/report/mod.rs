//! `ahtsgd report`: plots (PNG and SVG) and a self-contained `index.html` for a run directory.
//!
//! Reads what `run` wrote (each trial's `summary.json` and `metrics.jsonl`), aggregates each arm
//! across seeds (mean and 95% t band), and draws: test accuracy and loss per evaluation, training
//! loss per step, α, λ_max with its EMA and the 2/lr line, the noise norm, and a heat map of
//! final accuracy for arms that differ in two swept numbers.

pub mod html;
pub mod plot;

use crate::sweep::{self, Finished, stats};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A report that could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}: no finished trials found (run a recipe into it first)")]
    Empty(String),
    #[error("plot {file}: {problem}")]
    Plot { file: String, problem: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ReportError + '_ {
    move |source| ReportError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// One line of `metrics.jsonl`, as far as the report uses it.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Metric {
    pub step: u64,
    pub epoch: f64,
    pub train_loss: Option<f64>,
    pub test_loss: Option<f64>,
    pub test_accuracy: Option<f64>,
    pub alpha: Option<f64>,
    pub lambda_max: Option<f64>,
    pub sharpness_ema: Option<f64>,
    pub noise_norm: Option<f64>,
    pub lr: Option<f64>,
}

/// Reads a trial's `metrics.jsonl`; lines that do not parse (a torn last line) are skipped.
pub fn read_metrics(trial: &Path) -> Result<Vec<Metric>, ReportError> {
    let path = trial.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// A curve of one arm: at each x, the mean across seeds and the 95% t band (when ≥ 2 seeds).
#[derive(Clone, Debug, PartialEq)]
pub struct Curve {
    pub label: String,
    pub points: Vec<Point>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    pub x: f64,
    pub mean: f64,
    /// (low, high) of the 95% t interval of the mean; `None` with one seed.
    pub band: Option<(f64, f64)>,
}

/// Aggregates per-seed series `(x, y)` into a mean curve with t bands; x values are matched
/// exactly (steps, or the epochs of evaluations, are the same across seeds of one arm).
pub fn aggregate(label: &str, runs: &[Vec<(f64, f64)>]) -> Curve {
    let mut at: BTreeMap<i64, (f64, Vec<f64>)> = BTreeMap::new();
    for run in runs {
        for &(x, y) in run {
            if y.is_finite() {
                at.entry((x * 1e6).round() as i64)
                    .or_insert((x, Vec::new()))
                    .1
                    .push(y);
            }
        }
    }
    let points = at
        .into_values()
        .map(|(x, ys)| {
            let e = stats::estimate(&ys);
            Point {
                x,
                mean: e.mean,
                band: e
                    .half_width
                    .is_finite()
                    .then_some((e.mean - e.half_width, e.mean + e.half_width)),
            }
        })
        .collect();
    Curve {
        label: label.to_string(),
        points,
    }
}

/// A finished trial with its metrics.
struct TrialMetrics<'a> {
    arm: String,
    summary: &'a crate::train::record::Summary,
    metrics: Vec<Metric>,
}

/// The plots of one experiment, ready to draw.
#[derive(Clone, Debug)]
pub struct Figures {
    pub charts: Vec<plot::Chart>,
    pub heatmaps: Vec<plot::HeatMap>,
}

/// Builds the charts of one experiment from its trials' metrics.
pub fn figures(exp: &Finished) -> Result<Figures, ReportError> {
    let mut trials = Vec::new();
    for (dir, s) in &exp.trials {
        trials.push(TrialMetrics {
            arm: s.arm(),
            summary: s,
            metrics: read_metrics(dir)?,
        });
    }
    let mut arms: BTreeMap<&str, Vec<&TrialMetrics>> = BTreeMap::new();
    for t in &trials {
        arms.entry(&t.arm).or_default().push(t);
    }
    let curves = |f: &dyn Fn(&Metric) -> Option<(f64, f64)>| -> Vec<Curve> {
        arms.iter()
            .map(|(arm, runs)| {
                let series: Vec<Vec<(f64, f64)>> = runs
                    .iter()
                    .map(|t| t.metrics.iter().filter_map(f).collect())
                    .collect();
                aggregate(arm, &series)
            })
            .filter(|c| !c.points.is_empty())
            .collect()
    };
    let name = &exp.experiment;
    let mut charts = vec![
        plot::Chart::new(
            "accuracy",
            &format!("{name}: test accuracy"),
            "epoch",
            "test accuracy (%)",
            curves(&|m| Some((m.epoch, m.test_accuracy? * 100.0))),
        ),
        plot::Chart::new(
            "test_loss",
            &format!("{name}: test loss"),
            "epoch",
            "test loss",
            curves(&|m| Some((m.epoch, m.test_loss?))),
        ),
        plot::Chart::new(
            "train_loss",
            &format!("{name}: training loss"),
            "step",
            "training loss",
            curves(&|m| Some((m.step as f64, m.train_loss?))),
        ),
    ];
    // α only where it moves or differs from 2 (plain SGD reports 2: Gaussian, no noise).
    let alpha: Vec<Curve> = curves(&|m| Some((m.step as f64, m.alpha?)))
        .into_iter()
        .filter(|c| c.points.iter().any(|p| (p.mean - 2.0).abs() > 1e-9))
        .collect();
    if !alpha.is_empty() {
        let mut chart = plot::Chart::new(
            "alpha",
            &format!("{name}: tail index α"),
            "step",
            "α",
            alpha,
        );
        chart.y_range = Some((0.95, 2.05));
        charts.push(chart);
    }
    let mut sharp = curves(&|m| Some((m.step as f64, m.lambda_max?)));
    for c in &mut sharp {
        c.label = format!("{} λ_max", c.label);
    }
    let mut ema = curves(&|m| Some((m.step as f64, m.sharpness_ema?.exp())));
    for c in &mut ema {
        c.label = format!("{} EMA", c.label);
    }
    if !sharp.is_empty() {
        let n = sharp.len();
        sharp.extend(ema);
        let mut chart = plot::Chart::new(
            "sharpness",
            &format!("{name}: sharpness"),
            "step",
            "λ_max (log scale)",
            sharp,
        );
        chart.log_y = true;
        chart.dashed_from = Some(n);
        let mut lrs: Vec<f64> = trials
            .iter()
            .filter(|t| t.metrics.iter().any(|m| m.lambda_max.is_some()))
            .filter_map(|t| t.metrics.iter().find_map(|m| m.lr))
            .collect();
        lrs.sort_by(f64::total_cmp);
        lrs.dedup();
        for lr in lrs {
            chart
                .hlines
                .push((2.0 / lr, format!("2/lr = {}", plot::tick(2.0 / lr))));
        }
        charts.push(chart);
    }
    // α beside sharpness measured against the Edge of Stability (λ_max·lr/2 = 1 at λ = 2/lr),
    // for the arms that estimate sharpness: does α follow it?
    let tracked: Vec<Curve> = curves(&|m| {
        m.lambda_max?;
        Some((m.step as f64, m.alpha?))
    });
    let mut relative = curves(&|m| Some((m.step as f64, m.lambda_max? * m.lr? / 2.0)));
    if !tracked.is_empty() && !relative.is_empty() {
        for c in &mut relative {
            c.label = format!("{} λ_max/(2/lr)", c.label);
        }
        let n = tracked.len();
        let mut both = tracked;
        for c in &mut both {
            c.label = format!("{} α", c.label);
        }
        both.extend(relative);
        let mut chart = plot::Chart::new(
            "alpha_sharpness",
            &format!("{name}: α against sharpness at the Edge of Stability"),
            "step",
            "α (solid), λ_max/(2/lr) (dashed)",
            both,
        );
        chart.dashed_from = Some(n);
        chart.hlines.push((1.0, "λ_max = 2/lr".into()));
        charts.push(chart);
    }
    let noise: Vec<Curve> = curves(&|m| Some((m.step as f64, m.noise_norm?)))
        .into_iter()
        .filter(|c| c.points.iter().any(|p| p.mean > 0.0))
        .collect();
    if !noise.is_empty() {
        charts.push(plot::Chart::new(
            "noise_norm",
            &format!("{name}: noise norm"),
            "step",
            "‖noise‖",
            noise,
        ));
    }
    if let Some(chart) = response(exp) {
        charts.insert(0, chart);
    }
    charts.retain(|c| !c.curves.is_empty());
    Ok(Figures {
        charts,
        heatmaps: heatmaps(exp, &trials),
    })
}

/// Final test accuracy against a setting swept for every optimizer (a learning-rate sweep):
/// one curve per optimizer, the setting on a log axis when it spans a factor of 10 or more.
fn response(exp: &Finished) -> Option<plot::Chart> {
    let mut key = None;
    let mut by_opt: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    for (_, s) in &exp.trials {
        let ctx = s.context();
        let [(k, v)] = &ctx[..] else { return None };
        if key.get_or_insert_with(|| k.clone()) != k {
            return None;
        }
        let x: f64 = v.parse().ok()?;
        let acc = match (&s.final_, s.status.as_str()) {
            (Some(f), "completed") => f.test_accuracy * 100.0,
            _ => f64::NAN,
        };
        by_opt.entry(&s.optimizer).or_default().push((x, acc));
    }
    let key = key?;
    let xs: Vec<f64> = by_opt.values().flatten().map(|p| p.0).collect();
    let (lo, hi) = xs
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    let distinct = {
        let mut v = xs.clone();
        v.sort_by(f64::total_cmp);
        v.dedup();
        v.len()
    };
    if distinct < 3 {
        return None;
    }
    let log = lo > 0.0 && hi / lo >= 10.0;
    let curves = by_opt
        .into_iter()
        .map(|(opt, pts)| {
            let pts: Vec<(f64, f64)> = pts
                .into_iter()
                .map(|(x, y)| (if log { x.log10() } else { x }, y))
                .collect();
            aggregate(opt, &[pts])
        })
        .collect::<Vec<_>>();
    // `aggregate` over one list pools the seeds that share an x, which is what is wanted here.
    let mut chart = plot::Chart::new(
        "response",
        &format!("{}: final test accuracy against {key}", exp.experiment),
        &if log {
            format!("{key} (log scale)")
        } else {
            key.clone()
        },
        "final test accuracy (%)",
        curves,
    );
    chart.log_x = log;
    Some(chart)
}

/// For each optimizer whose arms differ in exactly two numeric sweep values: mean final
/// accuracy over the grid (a sensitivity map).
fn heatmaps(exp: &Finished, trials: &[TrialMetrics]) -> Vec<plot::HeatMap> {
    let mut by_opt: BTreeMap<&str, Vec<&TrialMetrics>> = BTreeMap::new();
    for t in trials {
        by_opt.entry(&t.summary.optimizer).or_default().push(t);
    }
    let mut out = Vec::new();
    for (opt, runs) in by_opt {
        let ctx = runs[0].summary.context();
        if ctx.len() != 2 || runs.iter().any(|t| t.summary.context().len() != 2) {
            continue;
        }
        let keys = (ctx[0].0.clone(), ctx[1].0.clone());
        let mut cells: BTreeMap<(u64, u64), (f64, f64, Vec<f64>)> = BTreeMap::new();
        let mut numeric = true;
        for t in &runs {
            let c = t.summary.context();
            let (Ok(a), Ok(b)) = (c[0].1.parse::<f64>(), c[1].1.parse::<f64>()) else {
                numeric = false;
                break;
            };
            let acc = t
                .summary
                .final_
                .as_ref()
                .filter(|_| t.summary.status == "completed")
                .map_or(f64::NAN, |f| f.test_accuracy * 100.0);
            cells
                .entry((a.to_bits(), b.to_bits()))
                .or_insert((a, b, Vec::new()))
                .2
                .push(acc);
        }
        if !numeric {
            continue;
        }
        let mut xs: Vec<f64> = cells.values().map(|c| c.0).collect();
        let mut ys: Vec<f64> = cells.values().map(|c| c.1).collect();
        for v in [&mut xs, &mut ys] {
            v.sort_by(f64::total_cmp);
            v.dedup();
        }
        if xs.len() < 2 || ys.len() < 2 {
            continue;
        }
        let mut values = vec![vec![f64::NAN; xs.len()]; ys.len()];
        for (a, b, accs) in cells.values() {
            let i = xs.iter().position(|x| x == a).expect("collected");
            let j = ys.iter().position(|y| y == b).expect("collected");
            // A diverged seed makes the cell's mean NaN: shown as "diverged", not hidden.
            values[j][i] = accs.iter().sum::<f64>() / accs.len() as f64;
        }
        out.push(plot::HeatMap {
            file: format!("heatmap_{opt}"),
            title: format!("{}: {opt}, final test accuracy (%)", exp.experiment),
            x_label: keys.0,
            y_label: keys.1,
            xs,
            ys,
            values,
        });
    }
    out
}

/// What `write` produced.
#[derive(Clone, Debug)]
pub struct Written {
    pub index: PathBuf,
    pub images: Vec<PathBuf>,
}

/// Writes the report of a run directory into `out` (PNG and SVG per plot, and `index.html`
/// with the PNGs embedded so it can be moved or mailed alone).
pub fn write(dir: &Path, out: &Path) -> Result<Written, ReportError> {
    let experiments = sweep::finished(dir).map_err(io(dir))?;
    if experiments.is_empty() {
        return Err(ReportError::Empty(dir.display().to_string()));
    }
    std::fs::create_dir_all(out).map_err(io(out))?;
    let mut images = Vec::new();
    let mut sections = Vec::new();
    for exp in &experiments {
        let figs = figures(exp)?;
        let mut pngs = Vec::new();
        for chart in &figs.charts {
            let stem = format!("{}_{}", exp.experiment, chart.file);
            let (png, svg) = plot::draw(chart, out, &stem)?;
            pngs.push((chart.title.clone(), png.clone(), svg.clone()));
            images.extend([png, svg]);
        }
        for map in &figs.heatmaps {
            let stem = format!("{}_{}", exp.experiment, map.file);
            let (png, svg) = plot::draw(map, out, &stem)?;
            pngs.push((map.title.clone(), png.clone(), svg.clone()));
            images.extend([png, svg]);
        }
        sections.push(html::Section {
            comparison: exp.compare(),
            trials: exp.trials.len(),
            images: pngs,
        });
    }
    let index = out.join("index.html");
    let page = html::page(dir, &sections)?;
    crate::fsutil::write_atomic(&index, page.as_bytes()).map_err(io(&index))?;
    Ok(Written { index, images })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregation_gives_means_and_t_bands_by_x() {
        let c = aggregate(
            "a",
            &[
                vec![(1.0, 1.0), (2.0, 10.0)],
                vec![(1.0, 3.0), (2.0, 20.0)],
                vec![(1.0, 2.0), (3.0, f64::NAN)],
            ],
        );
        assert_eq!(c.points.len(), 2, "the NaN at x = 3 is dropped");
        let p = c.points[0];
        assert_eq!((p.x, p.mean), (1.0, 2.0));
        // sd 1, n 3: t(0.975, 2) = 4.302653 -> half-width 4.302653 / √3 = 2.484138.
        let (lo, hi) = p.band.unwrap();
        assert!((hi - 2.0 - 2.484138).abs() < 1e-5 && (2.0 - lo - 2.484138).abs() < 1e-5);
        assert_eq!(c.points[1].mean, 15.0);
        // Negative x (log10 of a learning rate) keep their own points.
        let c = aggregate(
            "b",
            &[vec![(-2.0, 1.0), (-1.5, 2.0), (-2.0, 3.0), (0.0, 4.0)]],
        );
        let got: Vec<(f64, f64)> = c.points.iter().map(|p| (p.x, p.mean)).collect();
        assert_eq!(got, [(-2.0, 2.0), (-1.5, 2.0), (0.0, 4.0)]);
    }
}
