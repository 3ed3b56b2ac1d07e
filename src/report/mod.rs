//! `ahtsgd report`: plots (PNG and SVG) and a self-contained `index.html` for a run directory.
//!
//! Reads what `run` wrote (each trial's `summary.json` and `metrics.jsonl`), aggregates each arm
//! across seeds (mean and 95% t band), and draws: test accuracy and loss per evaluation, training
//! loss per step, α, λ_max (or Hutchinson's mean eigenvalue) with its EMA and the 2/lr line,
//! the noise norm, and final accuracy over two swept numbers: a heat map for a grid, a
//! scatter plot for a random search. Numbers on plots have three significant digits.

pub mod html;
pub mod plot;
pub mod tensorboard;

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
    /// Modular tasks: accuracy on the whole training split.
    pub train_accuracy: Option<f64>,
    /// Language models: e^test_loss.
    pub test_perplexity: Option<f64>,
    pub alpha: Option<f64>,
    pub lambda_max: Option<f64>,
    pub sharpness_ema: Option<f64>,
    pub noise_norm: Option<f64>,
    pub grad_norm: Option<f64>,
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
    /// Its `lambda_max` is Hutchinson's mean eigenvalue, not the top one.
    mean_eigenvalue: bool,
}

/// Whether a trial's sharpness figures are Hutchinson's mean eigenvalue: its summary says, or
/// for records from before the summary kept it, its `resolved.aht` (written by `run`, one
/// canonical line per field) names the estimator.
fn mean_eigenvalue(dir: &Path, s: &crate::train::record::Summary) -> bool {
    match s.sharpness_estimator.as_str() {
        "" => std::fs::read_to_string(dir.join("resolved.aht"))
            .is_ok_and(|text| text.contains("sharpness = hutchinson")),
        name => name == "hutchinson",
    }
}

/// Clips every band of `curves` to [lo, hi] (a mean's t interval of an accuracy can reach
/// past 0% or 100% with few seeds); whether any was clipped.
fn clip_bands(curves: &mut [Curve], lo: f64, hi: f64) -> bool {
    let mut clipped = false;
    for p in curves.iter_mut().flat_map(|c| c.points.iter_mut()) {
        if let Some((a, b)) = p.band {
            clipped |= a < lo || b > hi;
            p.band = Some((a.max(lo), b.min(hi)));
        }
    }
    clipped
}

/// The caption's note when bands were clipped.
const CLIPPED: &str = " (95% bands clipped to 0–100%)";

/// The plots of one experiment, ready to draw.
#[derive(Clone, Debug)]
pub struct Figures {
    pub charts: Vec<plot::Chart>,
    pub heatmaps: Vec<plot::HeatMap>,
    pub scatters: Vec<plot::Scatter>,
}

/// Builds the charts of one experiment from its trials' metrics.
pub fn figures(exp: &Finished) -> Result<Figures, ReportError> {
    let mut trials = Vec::new();
    for (dir, s) in &exp.trials {
        trials.push(TrialMetrics {
            arm: plot::short_numbers(&s.arm()),
            summary: s,
            metrics: read_metrics(dir)?,
            mean_eigenvalue: mean_eigenvalue(dir, s),
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
    let mut accuracy = curves(&|m| Some((m.epoch, m.test_accuracy? * 100.0)));
    let clipped = clip_bands(&mut accuracy, 0.0, 100.0);
    let mut charts = vec![
        plot::Chart::new(
            "accuracy",
            &format!(
                "{name}: test accuracy{}",
                if clipped { CLIPPED } else { "" }
            ),
            "epoch",
            "test accuracy (%)",
            accuracy,
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
    // token data: training accuracy beside the test accuracy (grokking is the gap between
    // them), and perplexity for language models; absent on other data
    let mut train_accuracy = curves(&|m| Some((m.step as f64, m.train_accuracy? * 100.0)));
    if !train_accuracy.is_empty() {
        let clipped = clip_bands(&mut train_accuracy, 0.0, 100.0);
        let mut test_by_step = curves(&|m| Some((m.step as f64, m.test_accuracy? * 100.0)));
        clip_bands(&mut test_by_step, 0.0, 100.0);
        for c in &mut test_by_step {
            c.label = format!("{} (test)", c.label);
        }
        for c in &mut train_accuracy {
            c.label = format!("{} (train)", c.label);
        }
        train_accuracy.extend(test_by_step);
        charts.push(plot::Chart::new(
            "train_accuracy",
            &format!(
                "{name}: training and test accuracy{}",
                if clipped { CLIPPED } else { "" }
            ),
            "step",
            "accuracy (%)",
            train_accuracy,
        ));
    }
    let perplexity = curves(&|m| Some((m.step as f64, m.test_perplexity?)));
    if !perplexity.is_empty() {
        charts.push(plot::Chart::new(
            "test_perplexity",
            &format!("{name}: test perplexity"),
            "step",
            "perplexity (e^nats per token)",
            perplexity,
        ));
    }
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
        chart.min_pad = 0.05;
        charts.push(chart);
    }
    // Hutchinson's estimate is a mean eigenvalue: named as what it is, apart from λ_max.
    let means: std::collections::BTreeSet<&str> = trials
        .iter()
        .filter(|t| t.mean_eigenvalue)
        .map(|t| t.arm.as_str())
        .collect();
    let what = |arm: &str| {
        if means.contains(arm) {
            "mean eigenvalue"
        } else {
            "λ_max"
        }
    };
    let has_max = trials
        .iter()
        .any(|t| !t.mean_eigenvalue && t.metrics.iter().any(|m| m.lambda_max.is_some()));
    let measured = match (has_max, !means.is_empty()) {
        (true, true) => "λ_max or mean eigenvalue",
        (false, true) => "mean eigenvalue (Hutchinson)",
        _ => "λ_max",
    };
    let mut sharp = curves(&|m| Some((m.step as f64, m.lambda_max?)));
    for c in &mut sharp {
        c.label = format!("{} {}", c.label, what(&c.label));
    }
    let mut ema = curves(&|m| Some((m.step as f64, m.sharpness_ema?.exp())));
    for c in &mut ema {
        c.label = format!("{} EMA", c.label);
    }
    if !sharp.is_empty() {
        let n = sharp.len();
        sharp.extend(ema);
        // A negative estimate (power iteration's largest-magnitude eigenvalue can be) has no
        // place on a log axis: left out, and the title says how many.
        let negative = trials
            .iter()
            .flat_map(|t| &t.metrics)
            .filter(|m| m.lambda_max.is_some_and(|l| l <= 0.0))
            .count();
        let note = if negative > 0 {
            format!(" ({negative} logged values ≤ 0 left off the log axis)")
        } else {
            String::new()
        };
        let mut chart = plot::Chart::new(
            "sharpness",
            &format!("{name}: sharpness{note}"),
            "step",
            &format!("{measured} (log scale)"),
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
            c.label = format!("{} {}/(2/lr)", c.label, what(&c.label));
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
            &format!("α (solid), {measured}/(2/lr) (dashed)"),
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
    let (heatmaps, scatters) = sensitivity(exp, &trials);
    Ok(Figures {
        charts,
        heatmaps,
        scatters,
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
    let mut curves = curves;
    let clipped = clip_bands(&mut curves, 0.0, 100.0);
    let mut chart = plot::Chart::new(
        "response",
        &format!(
            "{}: final test accuracy against {key}{}",
            exp.experiment,
            if clipped { CLIPPED } else { "" }
        ),
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

/// For each optimizer whose arms differ in exactly two numeric sweep values, final accuracy
/// over them: a heat map of cell means where the trials fill at least half of a grid (a grid
/// sweep, perhaps not all run yet: an empty cell says so), otherwise a scatter plot of the
/// sampled values (a random search, whose values are all distinct).
fn sensitivity(
    exp: &Finished,
    trials: &[TrialMetrics],
) -> (Vec<plot::HeatMap>, Vec<plot::Scatter>) {
    let mut by_opt: BTreeMap<&str, Vec<&TrialMetrics>> = BTreeMap::new();
    for t in trials {
        by_opt.entry(&t.summary.optimizer).or_default().push(t);
    }
    let (mut maps, mut scatters) = (Vec::new(), Vec::new());
    for (opt, runs) in by_opt {
        let ctx = runs[0].summary.context();
        if ctx.len() != 2 || runs.iter().any(|t| t.summary.context().len() != 2) {
            continue;
        }
        let keys = (ctx[0].0.clone(), ctx[1].0.clone());
        let mut points = Vec::new();
        for t in &runs {
            let c = t.summary.context();
            let (Ok(a), Ok(b)) = (c[0].1.parse::<f64>(), c[1].1.parse::<f64>()) else {
                points.clear();
                break;
            };
            let acc = t
                .summary
                .final_
                .as_ref()
                .filter(|_| t.summary.status == "completed")
                .map_or(f64::NAN, |f| f.test_accuracy * 100.0);
            points.push((a, b, acc));
        }
        if points.is_empty() {
            continue;
        }
        let mut cells: BTreeMap<(u64, u64), (f64, f64, Vec<f64>)> = BTreeMap::new();
        for &(a, b, acc) in &points {
            cells
                .entry((a.to_bits(), b.to_bits()))
                .or_insert((a, b, Vec::new()))
                .2
                .push(acc);
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
        let title = format!("{}: {opt}, final test accuracy (%)", exp.experiment);
        if 2 * cells.len() < xs.len() * ys.len() {
            let log = |i: usize| {
                let vals = points.iter().map(|p| if i == 0 { p.0 } else { p.1 });
                let lo = vals.clone().fold(f64::MAX, f64::min);
                let hi = vals.fold(f64::MIN, f64::max);
                lo > 0.0 && hi / lo >= 10.0
            };
            let label = |k: &str, log: bool| {
                if log {
                    format!("{k} (log scale)")
                } else {
                    k.to_string()
                }
            };
            scatters.push(plot::Scatter {
                file: format!("scatter_{opt}"),
                title,
                x_label: label(&keys.0, log(0)),
                y_label: label(&keys.1, log(1)),
                value_label: "final test accuracy (%)".into(),
                log_x: log(0),
                log_y: log(1),
                points,
            });
            continue;
        }
        let mut values = vec![vec![None; xs.len()]; ys.len()];
        for (a, b, accs) in cells.values() {
            let i = xs.iter().position(|x| x == a).expect("collected");
            let j = ys.iter().position(|y| y == b).expect("collected");
            // A diverged seed makes the cell's mean NaN: shown as "diverged", not hidden.
            values[j][i] = Some(accs.iter().sum::<f64>() / accs.len() as f64);
        }
        maps.push(plot::HeatMap {
            file: format!("heatmap_{opt}"),
            title,
            x_label: keys.0,
            y_label: keys.1,
            xs,
            ys,
            values,
        });
    }
    (maps, scatters)
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
        for sc in &figs.scatters {
            let stem = format!("{}_{}", exp.experiment, sc.file);
            let (png, svg) = plot::draw(sc, out, &stem)?;
            pngs.push((sc.title.clone(), png.clone(), svg.clone()));
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

    #[test]
    fn accuracy_bands_are_clipped_to_what_is_possible() {
        // two seeds at 10% and 90%: mean 50, t(0.975, 1) = 12.706 -> ±508, far past 0 and 100
        let mut c = [aggregate("a", &[vec![(1.0, 10.0)], vec![(1.0, 90.0)]])];
        let (lo, hi) = c[0].points[0].band.unwrap();
        assert!(lo < -400.0 && hi > 500.0);
        assert!(clip_bands(&mut c, 0.0, 100.0));
        assert_eq!(c[0].points[0].band, Some((0.0, 100.0)));
        assert_eq!(c[0].points[0].mean, 50.0, "the mean is not moved");
        // a band inside the range is left as it is, and nothing is said
        let mut c = [aggregate("b", &[vec![(1.0, 50.0)], vec![(1.0, 51.0)]])];
        let before = c[0].points[0].band;
        assert!(!clip_bands(&mut c, 0.0, 100.0));
        assert_eq!(c[0].points[0].band, before);
    }
}
