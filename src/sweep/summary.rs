//! `summary.md` and `summary.csv` of an experiment: every arm across seeds, and each arm paired
//! by seed with the baseline.

use super::stats::{self, Estimate};
use crate::train::record::Summary;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One arm (an optimizer with its sweep values) of an experiment.
///
/// The rule for unfinished trials, the same in every table: means, intervals and paired tests
/// use finished trials only (status `completed`); diverged, interrupted and missing trials
/// (missing: in the plan, with no record) are counted, each on its own.
#[derive(Clone, Debug)]
pub struct Arm {
    pub name: String,
    pub finished: usize,
    pub diverged: usize,
    pub interrupted: usize,
    /// `None` when the run directory does not say what the plan had (no `planned.json`).
    pub missing: Option<usize>,
    /// Finished trials that learnt nothing ([`Summary::did_not_learn`]); they count in the
    /// means, as results.
    pub did_not_learn: usize,
    pub final_accuracy: Estimate,
    pub first_accuracy: Estimate,
    pub final_loss: Estimate,
    pub wall_seconds: Estimate,
    /// Seconds of training per epoch of finished trials, sharpness estimation included and
    /// evaluation and loading left out (the overhead check).
    pub seconds_per_epoch: Estimate,
    /// Final accuracy on the training split, where evaluations record it (modular tasks).
    pub train_accuracy: Estimate,
    /// Final test perplexity, where evaluations record it (language models).
    pub perplexity: Estimate,
    /// For trials that record training accuracy: the step at which each finished trial first
    /// reached [`TARGET_ACCURACY`] on the test split (`None`: not within its steps), and the
    /// most steps any of them ran.
    pub reaching: Vec<Option<u64>>,
    pub max_steps: u64,
}

/// The test accuracy whose first step the summaries report for grokking runs.
pub const TARGET_ACCURACY: f64 = 0.99;

/// An arm against the baseline, paired by seed (final test accuracy, in points), over the
/// seeds that both finished.
#[derive(Clone, Debug)]
pub struct Paired {
    pub arm: String,
    pub baseline: String,
    pub difference: Estimate,
    pub t_test_p: f64,
    pub wilcoxon_p: f64,
    /// Mean training seconds per epoch of the arm over the baseline's (AHTSGD's overhead).
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

fn finished(s: &Summary) -> bool {
    s.status == "completed"
}

/// Summaries of one experiment's trials, compared under the rule of [`Arm`]. `planned`, the
/// trials of the plan, gives the missing counts (arms with no record at all appear too).
pub fn compare(
    experiment: &str,
    summaries: &[&Summary],
    baseline: &str,
    planned: Option<&[super::Planned]>,
) -> Comparison {
    let mut by_arm: BTreeMap<String, Vec<&Summary>> = BTreeMap::new();
    for s in summaries {
        by_arm.entry(s.arm()).or_default().push(s);
    }
    let recorded: std::collections::BTreeSet<usize> = summaries.iter().map(|s| s.trial).collect();
    let mut missing: BTreeMap<String, usize> = BTreeMap::new();
    for p in planned.into_iter().flatten() {
        let m = missing.entry(p.arm.clone()).or_default();
        if !recorded.contains(&p.trial) {
            *m += 1;
        }
        by_arm.entry(p.arm.clone()).or_default();
    }
    let arms = by_arm
        .iter()
        .map(|(name, runs)| {
            let ok: Vec<&Summary> = runs.iter().copied().filter(|r| finished(r)).collect();
            let count = |status: &str| runs.iter().filter(|r| r.status == status).count();
            Arm {
                name: name.clone(),
                finished: ok.len(),
                diverged: count("diverged"),
                interrupted: count("interrupted"),
                missing: planned.map(|_| missing.get(name).copied().unwrap_or(0)),
                did_not_learn: ok.iter().filter(|r| r.did_not_learn()).count(),
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
                wall_seconds: stats::estimate(
                    &ok.iter().map(|r| r.wall_seconds).collect::<Vec<_>>(),
                ),
                seconds_per_epoch: per_epoch(&ok),
                train_accuracy: pct(ok
                    .iter()
                    .filter_map(|r| r.final_.as_ref().and_then(|f| f.train_accuracy))),
                perplexity: stats::estimate(
                    &ok.iter()
                        .filter_map(|r| r.final_.as_ref().and_then(|f| f.test_perplexity))
                        .collect::<Vec<_>>(),
                ),
                reaching: ok
                    .iter()
                    .filter(|r| {
                        r.final_
                            .as_ref()
                            .is_some_and(|f| f.train_accuracy.is_some())
                    })
                    .map(|r| r.step_reaching(TARGET_ACCURACY))
                    .collect(),
                max_steps: ok.iter().map(|r| r.steps).max().unwrap_or(0),
            }
        })
        .collect();
    let mut paired = Vec::new();
    let base_arms: Vec<(&String, &Vec<&Summary>)> = by_arm
        .iter()
        .filter(|(name, runs)| arm_optimizer(name, runs) == baseline)
        .collect();
    for (name, runs) in &by_arm {
        if arm_optimizer(name, runs) == baseline {
            continue;
        }
        // The baseline arm with the same sweep values (`lr=0.1` against `lr=0.1`), or the
        // only baseline arm when the baseline was not swept alongside.
        let ctx = runs.first().map(|r| r.context());
        let base = base_arms
            .iter()
            .find(|(_, b)| ctx.is_some() && b.first().map(|r| r.context()) == ctx)
            .or(if base_arms.len() == 1 {
                base_arms.first()
            } else {
                None
            });
        let Some((base_name, base)) = base else {
            continue;
        };
        // a pair only where both arms finished that seed
        let diffs: Vec<f64> = runs
            .iter()
            .filter(|r| finished(r))
            .filter_map(|r| {
                let b = base.iter().find(|b| b.seed == r.seed && finished(b))?;
                Some((r.final_.as_ref()?.test_accuracy - b.final_.as_ref()?.test_accuracy) * 100.0)
            })
            .collect();
        paired.push(Paired {
            arm: name.clone(),
            baseline: base_name.to_string(),
            difference: stats::estimate(&diffs),
            t_test_p: stats::paired_t(&diffs),
            wilcoxon_p: stats::wilcoxon(&diffs),
            time_ratio: mean_or_nan(&per_epoch(&finished_only(runs)))
                / mean_or_nan(&per_epoch(&finished_only(base))),
        });
    }
    Comparison {
        experiment: experiment.to_string(),
        arms,
        paired,
    }
}

/// The optimizer of an arm: its records' (or, with none, the name's first word).
fn arm_optimizer<'a>(name: &'a str, runs: &'a [&Summary]) -> &'a str {
    match runs.first() {
        Some(r) => &r.optimizer,
        None => name.split(" (").next().unwrap_or(name),
    }
}

fn finished_only<'a>(runs: &[&'a Summary]) -> Vec<&'a Summary> {
    runs.iter().copied().filter(|r| finished(r)).collect()
}

fn mean_or_nan(e: &Estimate) -> f64 {
    if e.n == 0 { f64::NAN } else { e.mean }
}

/// Training seconds per epoch of each run that took a step.
fn per_epoch(runs: &[&Summary]) -> Estimate {
    stats::estimate(
        &runs
            .iter()
            .filter_map(|r| r.train_seconds_per_epoch())
            .collect::<Vec<_>>(),
    )
}

/// The middle of sorted `xs` (the mean of the two middle ones for an even count).
fn median(xs: &[u64]) -> u64 {
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2
    }
}

/// Mean ± sd and the 95% interval with 2 decimals.
fn ci(e: &Estimate) -> String {
    if e.n == 0 {
        "–".into()
    } else if e.half_width.is_finite() {
        let interval = format!(
            "[{:.2}, {:.2}]",
            e.mean - e.half_width,
            e.mean + e.half_width
        );
        format!("{:.2} ± {:.2} {interval}", e.mean, e.sd)
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

impl Arm {
    /// The cells of the arm table, formatted (also used by the HTML report).
    pub fn cells(&self) -> Vec<String> {
        let none = self.finished == 0;
        let stat = |e: &Estimate| {
            if none {
                "no finished trial".to_string()
            } else {
                ci(e)
            }
        };
        let mut notes = Vec::new();
        if self.did_not_learn > 0 {
            notes.push(format!(
                "{} of {} did not learn",
                self.did_not_learn, self.finished
            ));
        }
        if self.missing.is_none() {
            notes.push("missing unknown: no planned.json".into());
        }
        if self.train_accuracy.n > 0 {
            notes.push(format!("final train accuracy {}", ci(&self.train_accuracy)));
        }
        if !self.reaching.is_empty() {
            let mut steps: Vec<u64> = self.reaching.iter().flatten().copied().collect();
            steps.sort_unstable();
            let target = TARGET_ACCURACY * 100.0;
            let late = self.reaching.len() - steps.len();
            if !steps.is_empty() {
                notes.push(format!(
                    "{target}% test accuracy reached by {} of {} (median step {})",
                    steps.len(),
                    self.reaching.len(),
                    median(&steps)
                ));
            }
            if late > 0 {
                notes.push(format!(
                    "{late} of {} did not reach {target}% test accuracy within {} steps",
                    self.reaching.len(),
                    self.max_steps
                ));
            }
        }
        if self.perplexity.n > 0 {
            notes.push(format!("final test perplexity {}", ci(&self.perplexity)));
        }
        vec![
            self.name.clone(),
            self.finished.to_string(),
            self.diverged.to_string(),
            self.interrupted.to_string(),
            self.missing.map_or("?".into(), |m| m.to_string()),
            stat(&self.final_accuracy),
            stat(&self.first_accuracy),
            if none || self.final_loss.n == 0 {
                "–".into()
            } else {
                format!("{:.4}", self.final_loss.mean)
            },
            if self.seconds_per_epoch.n == 0 {
                "–".into()
            } else {
                format!("{:.2}", self.seconds_per_epoch.mean)
            },
            notes.join("; "),
        ]
    }
}

impl Paired {
    /// The cells of the paired table, formatted (also used by the HTML report).
    pub fn cells(&self) -> Vec<String> {
        let none = self.difference.n == 0;
        vec![
            format!("{} − {}", self.arm, self.baseline),
            self.difference.n.to_string(),
            if none {
                "no seed finished in both arms".into()
            } else {
                ci(&self.difference)
            },
            if none {
                "–".into()
            } else {
                pval(self.t_test_p)
            },
            if none {
                "–".into()
            } else {
                pval(self.wilcoxon_p)
            },
            if self.time_ratio.is_finite() {
                format!("{:.2}x", self.time_ratio)
            } else {
                "–".into()
            },
        ]
    }
}

/// Column heads of the arm table.
pub const ARM_HEADS: [&str; 10] = [
    "arm",
    "finished",
    "diverged",
    "interrupted",
    "missing",
    "final test accuracy",
    "first evaluation",
    "final test loss",
    "s/epoch",
    "notes",
];

/// Column heads of the paired table.
pub const PAIRED_HEADS: [&str; 6] = [
    "arm − baseline",
    "pairs",
    "difference",
    "t-test p",
    "Wilcoxon p",
    "time",
];

/// What the tables mean, in words (the markdown and the HTML report say the same).
pub const ARM_NOTE: &str = "Mean ± sd [95% t interval] over finished trials; accuracies in %. Diverged, interrupted and missing (planned, no record) trials are counted apart and left out of every figure. s/epoch: training seconds per epoch, sharpness estimation included, evaluation and loading left out. \"did not learn\": final training loss within 1% of the first and test accuracy within 2 points of chance.";

/// What the paired table means.
pub const PAIRED_NOTE: &str = "Paired by seed over seeds that finished in both arms (final test accuracy, points): mean ± sd [95% t interval], paired t-test and exact Wilcoxon signed-rank p-values; time: training seconds per epoch over the baseline's.";

fn markdown_row(cells: &[String]) -> String {
    format!("| {} |\n", cells.join(" | "))
}

impl Comparison {
    /// Markdown: the arms, then the paired comparisons.
    pub fn markdown(&self) -> String {
        let mut out = format!("# {}\n\n{ARM_NOTE}\n\n", self.experiment);
        let heads: Vec<String> = ARM_HEADS.iter().map(|h| h.to_string()).collect();
        out.push_str(&markdown_row(&heads));
        out.push_str(&markdown_row(&vec!["---".to_string(); heads.len()]));
        for a in &self.arms {
            out.push_str(&markdown_row(&a.cells()));
        }
        if !self.paired.is_empty() {
            let _ = write!(out, "\n{PAIRED_NOTE}\n\n");
            let heads: Vec<String> = PAIRED_HEADS.iter().map(|h| h.to_string()).collect();
            out.push_str(&markdown_row(&heads));
            out.push_str(&markdown_row(&vec!["---".to_string(); heads.len()]));
            for p in &self.paired {
                out.push_str(&markdown_row(&p.cells()));
            }
        }
        out
    }

    /// Writes `summary.md` and `summary.csv` into an experiment's folder, atomically.
    pub fn write(&self, dir: &std::path::Path) -> std::io::Result<()> {
        crate::fsutil::write_atomic(&dir.join("summary.md"), self.markdown().as_bytes())?;
        crate::fsutil::write_atomic(&dir.join("summary.csv"), self.csv().as_bytes())
    }

    /// CSV: one row per arm (figures over finished trials; `missing` empty when unknown).
    pub fn csv(&self) -> String {
        let mut out = String::from(
            "experiment,arm,finished,diverged,interrupted,missing,did_not_learn,final_accuracy_mean,final_accuracy_sd,final_accuracy_ci_low,final_accuracy_ci_high,first_accuracy_mean,first_accuracy_sd,final_loss_mean,wall_seconds_mean,train_seconds_per_epoch_mean,vs_baseline_pairs,vs_baseline_difference,vs_baseline_t_test_p,vs_baseline_wilcoxon_p,vs_baseline_time_ratio\n",
        );
        for a in &self.arms {
            let p = self.paired.iter().find(|p| p.arm == a.name);
            let f = &a.final_accuracy;
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                self.experiment,
                a.name,
                a.finished,
                a.diverged,
                a.interrupted,
                a.missing.map_or(String::new(), |m| m.to_string()),
                a.did_not_learn,
                f.mean,
                f.sd,
                f.mean - f.half_width,
                f.mean + f.half_width,
                a.first_accuracy.mean,
                a.first_accuracy.sd,
                a.final_loss.mean,
                a.wall_seconds.mean,
                a.seconds_per_epoch.mean,
                p.map_or(String::new(), |p| p.difference.n.to_string()),
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
            ..Default::default()
        };
        Summary {
            experiment: "e".into(),
            status: "completed".into(),
            wall_seconds: 100.0,
            time: crate::train::record::TimeSplit {
                train_seconds: if opt == "aht" { 3.0 } else { 2.0 },
                ..Default::default()
            },
            steps: 10,
            steps_per_epoch: 10,
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
        let c = compare("e", &refs, "plain", None);
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
            "3 s against 2 s of training per epoch (wall-clock time, evaluation included, is 100 s)"
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
        let c = compare("e", &refs, "plain", None);
        assert_eq!(c.paired.len(), 1);
        assert_eq!(c.paired[0].baseline, "plain");
        assert!((c.paired[0].difference.mean - 40.0).abs() < 1e-9);
    }

    fn with_status(mut s: Summary, status: &str) -> Summary {
        s.status = status.into();
        s
    }

    /// The one rule: figures over finished trials, a pair only where both arms finished the
    /// seed, separate counts of each kind of unfinished trial (missing from the plan), and an
    /// arm with nothing finished said in words in both tables.
    #[test]
    fn unfinished_trials_are_counted_apart_and_left_out_of_every_figure() {
        let mut all = vec![
            run("aht", None, 0, 0.9),
            run("aht", None, 1, 0.8),
            with_status(run("aht", None, 2, 0.1), "diverged"),
            with_status(run("aht", None, 3, 0.2), "interrupted"),
            run("plain", None, 0, 0.7),
            with_status(run("plain", None, 1, 0.3), "diverged"),
            run("plain", None, 2, 0.6),
            run("plain", None, 3, 0.6),
            with_status(run("lev", None, 0, 0.1), "diverged"),
        ];
        for (i, s) in all.iter_mut().enumerate() {
            s.trial = i;
        }
        let mut planned: Vec<super::super::Planned> = all
            .iter()
            .map(|s| super::super::Planned {
                trial: s.trial,
                arm: s.arm(),
                seed: s.seed,
            })
            .collect();
        // two planned trials never wrote a record
        planned.push(super::super::Planned {
            trial: 9,
            arm: "aht".into(),
            seed: 4,
        });
        planned.push(super::super::Planned {
            trial: 10,
            arm: "lev".into(),
            seed: 1,
        });
        let refs: Vec<&Summary> = all.iter().collect();
        let c = compare("e", &refs, "plain", Some(&planned));
        let arm = |n: &str| c.arms.iter().find(|a| a.name == n).unwrap();
        let aht = arm("aht");
        assert_eq!(
            (aht.finished, aht.diverged, aht.interrupted, aht.missing),
            (2, 1, 1, Some(1))
        );
        assert!(
            (aht.final_accuracy.mean - 85.0).abs() < 1e-9,
            "finished only"
        );
        let lev = arm("lev");
        assert_eq!((lev.finished, lev.diverged, lev.missing), (0, 1, Some(1)));
        assert_eq!(lev.cells()[5], "no finished trial");
        assert_eq!(lev.cells()[8], "–", "no s/epoch without a finished trial");
        // aht and plain both finished seed 0 only: one pair, 20 points
        let p = c.paired.iter().find(|p| p.arm == "aht").unwrap();
        assert_eq!(p.difference.n, 1);
        assert!((p.difference.mean - 20.0).abs() < 1e-9);
        let q = c.paired.iter().find(|p| p.arm == "lev").unwrap();
        assert_eq!(q.cells()[2], "no seed finished in both arms");
        let md = c.markdown();
        assert!(
            md.contains("| lev − plain | 0 | no seed finished in both arms |"),
            "{md}"
        );
        // without planned.json, missing is unknown, and said so
        let c = compare("e", &refs, "plain", None);
        assert_eq!(c.arms[0].missing, None);
        assert!(c.arms[0].cells()[9].contains("no planned.json"));
    }

    /// A grokking run's evaluations: test accuracy at each 100 steps, training accuracy 1.
    fn grokking(seed: u64, accuracies: &[f64]) -> Summary {
        let mut r = run("adamw", None, seed, 0.0);
        r.steps_per_epoch = 10;
        r.evals = accuracies
            .iter()
            .enumerate()
            .map(|(i, &a)| EvalPoint {
                test_accuracy: a,
                epoch: (i as f64 + 1.0) * 10.0,
                train_accuracy: Some(1.0),
                ..Default::default()
            })
            .collect();
        r.final_ = r.evals.last().cloned();
        r.steps = 100 * accuracies.len() as u64;
        r
    }

    #[test]
    fn grokking_runs_say_when_they_reached_99_percent_and_which_did_not() {
        // seed 0 reaches 99% at its third evaluation (step 300), seed 1 at its second (200),
        // seed 2 never within its 400 steps
        let runs = [
            grokking(0, &[0.1, 0.5, 0.995, 1.0]),
            grokking(1, &[0.2, 0.99, 1.0, 1.0]),
            grokking(2, &[0.1, 0.2, 0.3, 0.6]),
        ];
        assert_eq!(runs[0].step_reaching(0.99), Some(300));
        assert_eq!(runs[2].step_reaching(0.99), None);
        let refs: Vec<&Summary> = runs.iter().collect();
        let c = compare("e", &refs, "adamw", None);
        let notes = &c.arms[0].cells()[9];
        assert!(
            notes.contains("99% test accuracy reached by 2 of 3 (median step 250)"),
            "{notes}"
        );
        assert!(
            notes.contains("1 of 3 did not reach 99% test accuracy within 400 steps"),
            "{notes}"
        );
        assert!(notes.contains("final train accuracy 100.00"), "{notes}");
        // image runs record no training accuracy, and their notes say nothing of it
        let plain = [run("plain", None, 0, 0.9)];
        let refs: Vec<&Summary> = plain.iter().collect();
        let notes = &compare("e", &refs, "plain", None).arms[0].cells()[9];
        assert!(
            !notes.contains("train accuracy") && !notes.contains("99%"),
            "{notes}"
        );
    }

    #[test]
    fn a_trial_that_learnt_nothing_is_flagged() {
        let mut flat = run("aht", None, 0, 0.105);
        flat.classes = 10;
        flat.first_train_loss = Some(2.31);
        flat.last_train_loss = Some(2.295);
        assert!(flat.did_not_learn());
        let mut learnt = flat.clone();
        learnt.last_train_loss = Some(1.9);
        assert!(!learnt.did_not_learn(), "the loss fell");
        let mut lucky = flat.clone();
        lucky.final_ = Some(EvalPoint {
            test_accuracy: 0.2,
            ..Default::default()
        });
        assert!(!lucky.did_not_learn(), "well above chance");
        let refs = [&flat, &learnt];
        let c = compare("e", &refs, "plain", None);
        assert_eq!(c.arms[0].did_not_learn, 1);
        assert!(c.arms[0].cells()[9].contains("1 of 2 did not learn"));
    }
}
