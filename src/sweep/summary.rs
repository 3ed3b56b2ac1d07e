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
}

/// An arm against the baseline, paired by seed (final test accuracy, in points).
#[derive(Clone, Debug)]
pub struct Paired {
    pub arm: String,
    pub baseline: String,
    pub difference: Estimate,
    pub t_test_p: f64,
    pub wilcoxon_p: f64,
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
    let mut by_arm: BTreeMap<&str, Vec<&Summary>> = BTreeMap::new();
    for s in summaries {
        by_arm.entry(&s.optimizer).or_default().push(s);
    }
    let arms = by_arm
        .iter()
        .map(|(name, runs)| {
            let ok: Vec<&&Summary> = runs.iter().filter(|r| r.status == "completed").collect();
            Arm {
                name: name.to_string(),
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
            }
        })
        .collect();
    let mut paired = Vec::new();
    if let Some(base) = by_arm.get(baseline) {
        for (name, runs) in &by_arm {
            if *name == baseline {
                continue;
            }
            let diffs: Vec<f64> = runs
                .iter()
                .filter_map(|r| {
                    let b = base.iter().find(|b| b.seed == r.seed)?;
                    Some(
                        (r.final_.as_ref()?.test_accuracy - b.final_.as_ref()?.test_accuracy)
                            * 100.0,
                    )
                })
                .collect();
            if !diffs.is_empty() {
                paired.push(Paired {
                    arm: name.to_string(),
                    baseline: baseline.to_string(),
                    difference: stats::estimate(&diffs),
                    t_test_p: stats::paired_t(&diffs),
                    wilcoxon_p: stats::wilcoxon(&diffs),
                });
            }
        }
    }
    Comparison {
        experiment: experiment.to_string(),
        arms,
        paired,
    }
}

fn ci(e: &Estimate) -> String {
    if e.n == 0 {
        "–".into()
    } else if e.half_width.is_finite() {
        format!(
            "{:.2} ± {:.2} [{:.2}, {:.2}]",
            e.mean,
            e.sd,
            e.mean - e.half_width,
            e.mean + e.half_width
        )
    } else {
        format!("{:.2}", e.mean)
    }
}

fn pval(p: f64) -> String {
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
        out.push_str("| arm | runs | final test accuracy | first evaluation | final test loss | diverged | wall s |\n|---|---|---|---|---|---|---|\n");
        for a in &self.arms {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {}/{} | {:.1} |",
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
                a.wall_seconds.mean
            );
        }
        if !self.paired.is_empty() {
            out.push_str("\nPaired by seed (final test accuracy, points):\n\n| arm − baseline | pairs | difference | t-test p | Wilcoxon p |\n|---|---|---|---|---|\n");
            for p in &self.paired {
                let _ = writeln!(
                    out,
                    "| {} − {} | {} | {} | {} | {} |",
                    p.arm,
                    p.baseline,
                    p.difference.n,
                    ci(&p.difference),
                    pval(p.t_test_p),
                    pval(p.wilcoxon_p)
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
            "experiment,arm,runs,final_accuracy_mean,final_accuracy_sd,final_accuracy_ci_low,final_accuracy_ci_high,first_accuracy_mean,first_accuracy_sd,final_loss_mean,diverged,wall_seconds_mean,vs_baseline_difference,vs_baseline_t_test_p,vs_baseline_wilcoxon_p\n",
        );
        for a in &self.arms {
            let p = self.paired.iter().find(|p| p.arm == a.name);
            let f = &a.final_accuracy;
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
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
                p.map_or(String::new(), |p| p.difference.mean.to_string()),
                p.map_or(String::new(), |p| p.t_test_p.to_string()),
                p.map_or(String::new(), |p| p.wilcoxon_p.to_string()),
            );
        }
        out
    }
}
