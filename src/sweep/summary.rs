//! `summary.md` and `summary.csv` of an experiment: every arm across seeds, and each arm paired
//! by seed with the baseline.

use super::stats::{self, Estimate};
use crate::train::record::Summary;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One arm (an optimizer) of an experiment.
#[derive(Clone, Debug)]
pub struct Arm {
    pub name: String,
    pub runs: usize,
    pub final_accuracy: Estimate,
    pub first_accuracy: Estimate,
    pub final_loss: Estimate,
    pub diverged: usize,
    pub wall_seconds: Estimate,
    /// Wall-clock seconds per epoch of completed trials (the overhead check).
    pub seconds_per_epoch: Estimate,
}

/// An arm against the baseline, paired by seed (final test accuracy, in points).
#[derive(Clone, Debug)]
pub struct Paired {
    pub arm: String,
    pub baseline: String,
    pub difference: Estimate,
    pub t_test_p: f64,
    pub wilcoxon_p: f64,
    /// Mean seconds per epoch of the arm over the baseline's (AHTSGD's overhead).
    pub time_ratio: f64,
}

/// The comparison of one experiment.
#[derive(Clone, Debug)]
pub struct Comparison {
    pub experiment: String,
    pub arms: Vec<Arm>,
    pub paired: Vec<Paired>,
}

fn pct(xs: impl Iterator<Item = f64>) -> Estimate {
    stats::estimate(&xs.map(|x| x * 100.0).collect::<Vec<_>>())
}

/// Summaries of one experiment's trials, compared (diverged trials count in the divergence
/// rate and not in the accuracy estimates).
pub fn compare(experiment: &str, summaries: &[&Summary], baseline: &str) -> Comparison {
    let mut by_arm: BTreeMap<String, Vec<&Summary>> = BTreeMap::new();
    for s in summaries {
        by_arm.entry(s.arm()).or_default().push(s);
    }
    let arms = by_arm
        .iter()
        .map(|(name, runs)| {
            let ok: Vec<&&Summary> = runs.iter().filter(|r| r.status == "completed").collect();
            Arm {
                name: name.clone(),
                runs: runs.len(),
                final_accuracy: pct(ok
                    .iter()
                    .filter_map(|r| r.final_.as_ref().map(|f| f.test_accuracy))),
                first_accuracy: pct(ok
                    .iter()
                    .filter_map(|r| r.evals.first().map(|f| f.test_accuracy))),
                final_loss: stats::estimate(
                    &ok.iter()
                        .filter_map(|r| r.final_.as_ref().map(|f| f.test_loss))
                        .collect::<Vec<_>>(),
                ),
                diverged: runs.iter().filter(|r| r.status == "diverged").count(),
                wall_seconds: stats::estimate(
                    &runs.iter().map(|r| r.wall_seconds).collect::<Vec<_>>(),
                ),
                seconds_per_epoch: per_epoch(&ok),
            }
        })
        .collect();
    let mut paired = Vec::new();
    let base_arms: Vec<(&String, &Vec<&Summary>)> = by_arm
        .iter()
        .filter(|(_, runs)| runs[0].optimizer == baseline)
        .collect();
    for (name, runs) in &by_arm {
        if runs[0].optimizer == baseline {
            continue;
        }
        // The baseline arm with the same sweep values (`lr=0.1` against `lr=0.1`), or the
        // only baseline arm when the baseline was not swept alongside.
        let ctx = runs[0].context();
        let base =
            base_arms
                .iter()
                .find(|(_, b)| b[0].context() == ctx)
                .or(if base_arms.len() == 1 {
                    base_arms.first()
                } else {
                    None
                });
        let Some((base_name, base)) = base else {
            continue;
        };
        let diffs: Vec<f64> = runs
            .iter()
            .filter_map(|r| {
                let b = base.iter().find(|b| b.seed == r.seed)?;
                Some((r.final_.as_ref()?.test_accuracy - b.final_.as_ref()?.test_accuracy) * 100.0)
            })
            .collect();
        if !diffs.is_empty() {
            paired.push(Paired {
                arm: name.clone(),
                baseline: base_name.to_string(),
                difference: stats::estimate(&diffs),
                t_test_p: stats::paired_t(&diffs),
                wilcoxon_p: stats::wilcoxon(&diffs),
                time_ratio: completed_per_epoch(runs) / completed_per_epoch(base),
            });
        }
    }
    Comparison {
        experiment: experiment.to_string(),
        arms,
        paired,
    }
}

/// Seconds per epoch of each run (runs with a final evaluation past epoch 0).
fn per_epoch(runs: &[&&Summary]) -> Estimate {
    stats::estimate(
        &runs
            .iter()
            .filter_map(|r| {
                let epochs = r.final_.as_ref()?.epoch;
                (epochs > 0.0).then(|| r.wall_seconds / epochs)
            })
            .collect::<Vec<_>>(),
    )
}

fn completed_per_epoch(runs: &[&Summary]) -> f64 {
    let ok: Vec<&&Summary> = runs.iter().filter(|r| r.status == "completed").collect();
    per_epoch(&ok).mean
}

fn ci(e: &Estimate) -> String {
    ci_with(e, |interval| interval)
}

/// Mean ± sd and the 95% interval with `2` decimals; `wrap` dresses the interval (the HTML
/// report greys it).
pub(crate) fn ci_with(e: &Estimate, wrap: impl Fn(String) -> String) -> String {
    if e.n == 0 {
        "–".into()
    } else if e.half_width.is_finite() {
        let interval = format!(
            "[{:.2}, {:.2}]",
            e.mean - e.half_width,
            e.mean + e.half_width
        );
        format!("{:.2} ± {:.2} {}", e.mean, e.sd, wrap(interval))
    } else {
        format!("{:.2}", e.mean)
    }
}

/// A p-value: 4 decimals, or scientific below 0.001.
pub(crate) fn pval(p: f64) -> String {
    if p < 1e-3 {
        format!("{p:.1e}")
    } else {
        format!("{p:.4}")
    }
}

impl Comparison {
    /// Markdown: the arms, then the paired comparisons.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "# {}\n\nMean ± sd [95% t interval] across seeds; accuracies in %.\n\n",
            self.experiment
        );
        out.push_str("| arm | runs | final test accuracy | first evaluation | final test loss | diverged | s/epoch |\n|---|---|---|---|---|---|---|\n");
        for a in &self.arms {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {}/{} | {:.2} |",
                a.name,
                a.runs,
                ci(&a.final_accuracy),
                ci(&a.first_accuracy),
                if a.final_loss.n == 0 {
                    "–".into()
                } else {
                    format!("{:.4}", a.final_loss.mean)
                },
                a.diverged,
                a.runs,
                a.seconds_per_epoch.mean
            );
        }
        if !self.paired.is_empty() {
            out.push_str("\nPaired by seed (final test accuracy, points; time: seconds per epoch over the baseline's):\n\n| arm − baseline | pairs | difference | t-test p | Wilcoxon p | time |\n|---|---|---|---|---|---|\n");
            for p in &self.paired {
                let _ = writeln!(
                    out,
                    "| {} − {} | {} | {} | {} | {} | {:.2}x |",
                    p.arm,
                    p.baseline,
                    p.difference.n,
                    ci(&p.difference),
                    pval(p.t_test_p),
                    pval(p.wilcoxon_p),
                    p.time_ratio
                );
            }
        }
        out
    }

    /// Writes `summary.md` and `summary.csv` into an experiment's folder, atomically.
    pub fn write(&self, dir: &std::path::Path) -> std::io::Result<()> {
        crate::fsutil::write_atomic(&dir.join("summary.md"), self.markdown().as_bytes())?;
        crate::fsutil::write_atomic(&dir.join("summary.csv"), self.csv().as_bytes())
    }

    /// CSV: one row per arm.
    pub fn csv(&self) -> String {
        let mut out = String::from(
            "experiment,arm,runs,final_accuracy_mean,final_accuracy_sd,final_accuracy_ci_low,final_accuracy_ci_high,first_accuracy_mean,first_accuracy_sd,final_loss_mean,diverged,wall_seconds_mean,seconds_per_epoch_mean,vs_baseline_difference,vs_baseline_t_test_p,vs_baseline_wilcoxon_p,vs_baseline_time_ratio\n",
        );
        for a in &self.arms {
            let p = self.paired.iter().find(|p| p.arm == a.name);
            let f = &a.final_accuracy;
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                self.experiment,
                a.name,
                a.runs,
                f.mean,
                f.sd,
                f.mean - f.half_width,
                f.mean + f.half_width,
                a.first_accuracy.mean,
                a.first_accuracy.sd,
                a.final_loss.mean,
                a.diverged,
                a.wall_seconds.mean,
                a.seconds_per_epoch.mean,
                p.map_or(String::new(), |p| p.difference.mean.to_string()),
                p.map_or(String::new(), |p| p.t_test_p.to_string()),
                p.map_or(String::new(), |p| p.wilcoxon_p.to_string()),
                p.map_or(String::new(), |p| p.time_ratio.to_string()),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::record::EvalPoint;

    fn run(opt: &str, lr: Option<&str>, seed: u64, acc: f64) -> Summary {
        let mut choices = vec![
            ("e.optimizer".to_string(), opt.to_string()),
            ("e.seed".to_string(), seed.to_string()),
        ];
        if let Some(lr) = lr {
            choices.insert(0, (format!("{opt}.lr"), lr.to_string()));
        }
        let p = EvalPoint {
            test_accuracy: acc,
            test_loss: 1.0 - acc,
            epoch: 1.0,
        };
        Summary {
            experiment: "e".into(),
            status: "completed".into(),
            wall_seconds: if opt == "aht" { 3.0 } else { 2.0 },
            seed,
            optimizer: opt.into(),
            final_: Some(p.clone()),
            evals: vec![p],
            choices,
            ..Default::default()
        }
    }

    #[test]
    fn arms_split_by_sweep_values_and_pair_with_the_matching_baseline() {
        let mut all = Vec::new();
        for seed in 0..3 {
            let s = seed as f64 / 100.0;
            all.push(run("aht", Some("0.1"), seed, 0.80 + s));
            all.push(run("aht", Some("1"), seed, 0.50 + s));
            all.push(run("plain", Some("0.1"), seed, 0.70 + 2.0 * s));
            all.push(run("plain", Some("1"), seed, 0.10));
        }
        let refs: Vec<&Summary> = all.iter().collect();
        let c = compare("e", &refs, "plain");
        let names: Vec<&str> = c.arms.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "aht (lr=0.1)",
                "aht (lr=1)",
                "plain (lr=0.1)",
                "plain (lr=1)"
            ]
        );
        assert_eq!(c.paired.len(), 2);
        let p = &c.paired[0];
        assert_eq!(
            (p.arm.as_str(), p.baseline.as_str()),
            ("aht (lr=0.1)", "plain (lr=0.1)")
        );
        // Differences by seed: 10, 9, 8 points.
        assert!((p.difference.mean - 9.0).abs() < 1e-9 && (p.difference.sd - 1.0).abs() < 1e-9);
        assert!(
            (p.time_ratio - 1.5).abs() < 1e-12,
            "3 s against 2 s per epoch"
        );
        assert_eq!(c.arms[0].seconds_per_epoch.mean, 3.0);
        let q = &c.paired[1];
        assert_eq!(q.baseline, "plain (lr=1)");
        assert!(
            (q.difference.mean - 41.0).abs() < 1e-9,
            "{}",
            q.difference.mean
        );

        // An unswept baseline pairs with every arm.
        let mut mixed: Vec<Summary> = (0..3).map(|s| run("aht", Some("0.1"), s, 0.9)).collect();
        mixed.extend((0..3).map(|s| run("plain", None, s, 0.5)));
        let refs: Vec<&Summary> = mixed.iter().collect();
        let c = compare("e", &refs, "plain");
        assert_eq!(c.paired.len(), 1);
        assert_eq!(c.paired[0].baseline, "plain");
        assert!((c.paired[0].difference.mean - 40.0).abs() < 1e-9);
    }
}
