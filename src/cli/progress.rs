//! How `ahtsgd run` shows trials' progress: bars on a terminal, one line per event elsewhere,
//! JSON events with `--json`; and the JSON events the children of `--jobs` send their parent,
//! which the parent shows the same way.

use ahtsgd::train::{Event, record::Summary};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::time::Instant;

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Progress bars (standard error is a terminal).
    Bars,
    /// A line per event on standard error (a log file, a pipe).
    Lines,
    /// Only a line per trial that ends (`--quiet`).
    Quiet,
    /// JSON events on standard output (`--json`).
    Json,
}

impl Mode {
    pub fn new(quiet: bool, json: bool) -> Mode {
        if json {
            Mode::Json
        } else if quiet {
            Mode::Quiet
        } else if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            Mode::Bars
        } else {
            Mode::Lines
        }
    }
}

/// One trial's progress, as the events of `--json` carry it.
#[derive(Clone, Debug, PartialEq)]
pub enum Update {
    Started {
        steps: u64,
    },
    /// A trial of `steps` steps resumed from a checkpoint at `step`.
    Resumed {
        step: u64,
        steps: u64,
    },
    Step {
        step: u64,
        epoch: f64,
        loss: f64,
        alpha: f64,
    },
    Eval {
        step: u64,
        epoch: f64,
        test_loss: f64,
        test_accuracy: f64,
        /// Modular tasks: the accuracy on the training split.
        train_accuracy: Option<f64>,
        /// Language models: the test perplexity.
        test_perplexity: Option<f64>,
    },
    /// A finished record was kept instead of training.
    Kept {
        status: String,
    },
}

impl Update {
    /// The update an event of the trainer makes (`None` for a warning).
    pub fn of(e: &Event) -> Option<(usize, Update)> {
        Some(match e {
            Event::Started {
                trial,
                steps,
                resumed_from,
            } => match resumed_from {
                Some(step) => (
                    *trial,
                    Update::Resumed {
                        step: *step,
                        steps: *steps,
                    },
                ),
                None => (*trial, Update::Started { steps: *steps }),
            },
            Event::Warning { .. } => return None,
            Event::Step {
                trial,
                step,
                epoch,
                loss,
                alpha,
            } => (
                *trial,
                Update::Step {
                    step: *step,
                    epoch: *epoch,
                    loss: *loss,
                    alpha: *alpha,
                },
            ),
            Event::Evaluated {
                trial,
                step,
                epoch,
                scores,
            } => (
                *trial,
                Update::Eval {
                    step: *step,
                    epoch: *epoch,
                    test_loss: scores.test_loss,
                    test_accuracy: scores.test_accuracy,
                    train_accuracy: scores.train_accuracy,
                    test_perplexity: scores.test_perplexity,
                },
            ),
        })
    }

    /// The JSON event of `--json`.
    pub fn json(&self, trial: usize) -> serde_json::Value {
        use serde_json::json;
        match self {
            Update::Started { steps } => {
                json!({"event": "started", "trial": trial, "steps": steps})
            }
            Update::Resumed { step, steps } => {
                json!({"event": "resumed", "trial": trial, "step": step, "steps": steps})
            }
            Update::Step {
                step,
                epoch,
                loss,
                alpha,
            } => {
                json!({"event": "step", "trial": trial, "step": step, "epoch": epoch, "train_loss": loss, "alpha": alpha})
            }
            Update::Eval {
                step,
                epoch,
                test_loss,
                test_accuracy,
                train_accuracy,
                test_perplexity,
            } => {
                let mut e = json!({"event": "eval", "trial": trial, "step": step, "epoch": epoch, "test_loss": test_loss, "test_accuracy": test_accuracy});
                if let Some(a) = train_accuracy {
                    e["train_accuracy"] = json!(a);
                }
                if let Some(p) = test_perplexity {
                    e["test_perplexity"] = json!(p);
                }
                e
            }
            Update::Kept { status } => json!({"event": "kept", "trial": trial, "status": status}),
        }
    }

    /// Reads a line a child wrote: an event of [`Update::json`], or `None` for any other line
    /// (a child's summary, say).
    pub fn parse(line: &str) -> Option<(usize, Update)> {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        let trial = v.get("trial")?.as_u64()? as usize;
        let u = |k: &str| v.get(k).and_then(serde_json::Value::as_u64);
        let f = |k: &str| v.get(k).and_then(serde_json::Value::as_f64);
        let update = match v.get("event")?.as_str()? {
            "started" => Update::Started { steps: u("steps")? },
            "resumed" => Update::Resumed {
                step: u("step")?,
                steps: u("steps")?,
            },
            "step" => Update::Step {
                step: u("step")?,
                epoch: f("epoch")?,
                loss: f("train_loss")?,
                alpha: f("alpha")?,
            },
            "eval" => Update::Eval {
                step: u("step")?,
                epoch: f("epoch")?,
                test_loss: f("test_loss")?,
                test_accuracy: f("test_accuracy")?,
                train_accuracy: f("train_accuracy"),
                test_perplexity: f("test_perplexity"),
            },
            "kept" => Update::Kept {
                status: v.get("status")?.as_str()?.to_string(),
            },
            _ => return None,
        };
        Some((trial, update))
    }

    /// The step it reports, where it reports one.
    pub fn step(&self) -> Option<u64> {
        match self {
            Update::Resumed { step, .. }
            | Update::Step { step, .. }
            | Update::Eval { step, .. } => Some(*step),
            _ => None,
        }
    }

    /// The text beside a trial's bar.
    pub fn message(&self) -> Option<String> {
        match self {
            Update::Step {
                epoch, loss, alpha, ..
            } => Some(format!("epoch {epoch:.2} loss {loss:.4} α {alpha:.3}")),
            Update::Eval {
                test_accuracy,
                train_accuracy,
                ..
            } => Some(match train_accuracy {
                Some(train) => format!(
                    "train acc {:.2}% test acc {:.2}%",
                    train * 100.0,
                    test_accuracy * 100.0
                ),
                None => format!("test acc {:.2}%", test_accuracy * 100.0),
            }),
            _ => None,
        }
    }

    /// The line of [`Mode::Lines`] (`None` for an update that gets none).
    pub fn line(&self, trial: usize, steps: Option<u64>) -> Option<String> {
        let of = |step: u64| match steps {
            Some(n) => format!("{step}/{n}"),
            None => step.to_string(),
        };
        Some(match self {
            Update::Started { steps } => format!("trial {trial:04} started: {steps} steps"),
            Update::Resumed { step, .. } => format!("trial {trial:04} resumed from step {step}"),
            Update::Step { step, .. } => format!(
                "trial {trial:04} step {} {}",
                of(*step),
                self.message().unwrap_or_default()
            ),
            Update::Eval {
                step,
                test_loss,
                test_accuracy,
                train_accuracy,
                test_perplexity,
                ..
            } => {
                let mut line = format!(
                    "trial {trial:04} step {} test loss {test_loss:.4}",
                    of(*step)
                );
                if let Some(p) = test_perplexity {
                    line += &format!(" perplexity {p:.3}");
                }
                if let Some(a) = train_accuracy {
                    line += &format!(" train accuracy {:.2}%", a * 100.0);
                }
                line + &format!(" test accuracy {:.2}%", test_accuracy * 100.0)
            }
            Update::Kept { .. } => return None,
        })
    }
}

/// The style of a trial's bar.
pub fn trial_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// The line said when a trial ends.
pub fn end_line(s: &Summary) -> String {
    let acc = s
        .final_
        .as_ref()
        .map_or("-".into(), |f| format!("{:.2}%", f.test_accuracy * 100.0));
    format!(
        "trial {:04} ({}, seed {}): {} after {} steps, test accuracy {acc}, {:.1}s",
        s.trial, s.optimizer, s.seed, s.status, s.steps, s.wall_seconds
    )
}

/// A time left, as people read it: `45s`, `3m05s`, `2h10m`.
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

/// The time left for `queued` trials not started and the running ones (elapsed so far
/// given), `jobs` at a time, if each takes `mean` seconds (the mean of those finished).
pub fn eta(mean: f64, queued: usize, running_elapsed: &[f64], jobs: usize) -> f64 {
    let running: f64 = running_elapsed.iter().map(|e| (mean - e).max(0.0)).sum();
    (running + queued as f64 * mean) / jobs.max(1) as f64
}

/// What the parent of `--jobs` shows: a bar per running trial and an overall bar with the time
/// left (on a terminal), or lines.
pub struct Board {
    mode: Mode,
    multi: MultiProgress,
    overall: ProgressBar,
    bars: HashMap<usize, ProgressBar>,
    steps: HashMap<usize, u64>,
    started: HashMap<usize, Instant>,
    kept: Vec<usize>,
    /// Wall seconds of each trial that trained to its end.
    took: Vec<f64>,
    total: usize,
    done: usize,
    jobs: usize,
    /// The prefix of each trial's bar.
    names: HashMap<usize, String>,
}

impl Board {
    pub fn new(mode: Mode, names: HashMap<usize, String>, jobs: usize) -> Board {
        let multi = MultiProgress::with_draw_target(if mode == Mode::Bars {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        let total = names.len();
        let overall = multi.add(ProgressBar::new(total as u64));
        overall.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} trials {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        overall.set_prefix("all");
        overall.set_message("ETA after the first trial ends");
        Board {
            mode,
            multi,
            overall,
            bars: HashMap::new(),
            steps: HashMap::new(),
            started: HashMap::new(),
            kept: Vec::new(),
            took: Vec::new(),
            total,
            done: 0,
            jobs,
            names,
        }
    }

    /// Says a line above the bars (on standard error).
    pub fn say(&self, line: &str) {
        if self.mode == Mode::Bars {
            let _ = self.multi.println(line);
        } else {
            eprintln!("{line}");
        }
    }

    pub fn started(&mut self, trial: usize) {
        self.started.insert(trial, Instant::now());
        if self.mode == Mode::Bars {
            let bar = self.multi.insert_before(&self.overall, ProgressBar::new(1));
            bar.set_style(trial_style());
            bar.set_prefix(self.names.get(&trial).cloned().unwrap_or_default());
            self.bars.insert(trial, bar);
        }
    }

    /// A line a child wrote.
    pub fn output(&mut self, line: &str) {
        if self.mode == Mode::Json {
            // the events pass through as they come; the summaries are printed at the end
            if Update::parse(line).is_some() {
                println!("{line}");
            }
            return;
        }
        let Some((trial, update)) = Update::parse(line) else {
            return;
        };
        if let Update::Started { steps } | Update::Resumed { steps, .. } = update {
            self.steps.insert(trial, steps);
            if let Some(b) = self.bars.get(&trial) {
                b.set_length(steps);
            }
        }
        if let Update::Kept { status } = &update {
            self.kept.push(trial);
            let name = self.names.get(&trial).cloned().unwrap_or_default();
            self.say(&format!("{name}: kept ({status})"));
        }
        match self.mode {
            Mode::Bars => {
                if let Some(b) = self.bars.get(&trial) {
                    if let Some(s) = update.step() {
                        b.set_position(s);
                    }
                    if let Some(m) = update.message() {
                        b.set_message(m);
                    }
                }
                if let Update::Resumed { step, .. } = update {
                    self.say(&format!("trial {trial:04} resumed from step {step}"));
                }
            }
            Mode::Lines => {
                if let Some(l) = update.line(trial, self.steps.get(&trial).copied()) {
                    eprintln!("{l}");
                }
            }
            Mode::Quiet => {
                // a resume is said however quiet, as a one-process run says it
                if let Update::Resumed { step, .. } = update {
                    eprintln!("trial {trial:04} resumed from step {step}");
                }
            }
            Mode::Json => {}
        }
        self.update_eta();
    }

    /// A child ended: `summary` is its record's, where it wrote one.
    pub fn ended(
        &mut self,
        trial: usize,
        code: Option<i32>,
        stderr: &str,
        summary: Option<&Summary>,
    ) {
        self.done += 1;
        if let Some(b) = self.bars.remove(&trial) {
            b.finish_and_clear();
            self.multi.remove(&b);
        }
        let took = self
            .started
            .remove(&trial)
            .map(|t| t.elapsed().as_secs_f64());
        let kept = self.kept.contains(&trial);
        if self.mode != Mode::Json {
            for w in stderr.lines().filter(|l| l.starts_with("warning")) {
                self.say(&format!("trial {trial:04}: {w}"));
            }
        }
        match (code, summary) {
            (Some(0) | Some(130), Some(s)) => {
                if !kept && s.status == "completed" {
                    self.took.extend(took);
                }
                if self.mode != Mode::Json && !kept {
                    self.say(&format!("[{}/{}] {}", self.done, self.total, end_line(s)));
                }
            }
            _ => {
                // a failed trial's diagnostics, as the child rendered them
                let text: String = stderr
                    .lines()
                    .filter(|l| !l.starts_with("warning") && !l.starts_with("interrupted:"))
                    .map(|l| format!("{l}\n"))
                    .collect();
                let line = format!(
                    "[{}/{}] trial {trial:04} failed (exit {}){}",
                    self.done,
                    self.total,
                    code.map_or("by a signal".to_string(), |c| c.to_string()),
                    if text.trim().is_empty() {
                        String::new()
                    } else {
                        format!(":\n{}", text.trim_end())
                    }
                );
                self.say(&line);
            }
        }
        self.overall.set_position(self.done as u64);
        self.update_eta();
    }

    fn update_eta(&self) {
        if self.took.is_empty() || self.mode != Mode::Bars {
            return;
        }
        let mean = self.took.iter().sum::<f64>() / self.took.len() as f64;
        let running: Vec<f64> = self
            .started
            .values()
            .map(|t| t.elapsed().as_secs_f64())
            .collect();
        let queued = self.total.saturating_sub(self.done + running.len());
        self.overall.set_message(format!(
            "ETA {} (a trial takes {} on average)",
            duration(eta(mean, queued, &running, self.jobs)),
            duration(mean)
        ));
    }

    pub fn finish(&self) {
        self.overall.finish_and_clear();
        let _ = self.multi.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_update_reads_back_from_its_json() {
        let all = [
            Update::Started { steps: 120 },
            Update::Resumed {
                step: 40,
                steps: 120,
            },
            Update::Step {
                step: 50,
                epoch: 0.5,
                loss: 1.25,
                alpha: 1.75,
            },
            Update::Eval {
                step: 100,
                epoch: 1.0,
                test_loss: 0.5,
                test_accuracy: 0.875,
                train_accuracy: None,
                test_perplexity: None,
            },
            Update::Eval {
                step: 100,
                epoch: 1.0,
                test_loss: 0.5,
                test_accuracy: 0.875,
                train_accuracy: Some(1.0),
                test_perplexity: Some(1.5),
            },
            Update::Kept {
                status: "completed".into(),
            },
        ];
        for u in all {
            let line = u.json(7).to_string();
            assert_eq!(Update::parse(&line), Some((7, u)), "{line}");
        }
        // a summary, or any line that is not an event, is no update
        assert_eq!(
            Update::parse(r#"{"trial": 3, "status": "completed"}"#),
            None
        );
        assert_eq!(Update::parse("trial 0003 started"), None);
    }

    #[test]
    fn the_time_left_counts_queued_and_running_trials_over_the_jobs() {
        // 10 s a trial, 2 at a time: 4 queued (40 s) and two running for 4 s and 12 s (6 s
        // and 0 s left) is 46 s of work, 23 s on two jobs
        assert_eq!(eta(10.0, 4, &[4.0, 12.0], 2), 23.0);
        assert_eq!(eta(10.0, 0, &[], 2), 0.0);
        assert_eq!(duration(45.4), "45s");
        assert_eq!(duration(185.0), "3m05s");
        assert_eq!(duration(7800.0), "2h10m");
    }

    #[test]
    fn lines_give_the_step_out_of_the_trial_length() {
        let u = Update::Step {
            step: 50,
            epoch: 0.5,
            loss: 1.25,
            alpha: 1.75,
        };
        assert_eq!(
            u.line(3, Some(200)).unwrap(),
            "trial 0003 step 50/200 epoch 0.50 loss 1.2500 α 1.750"
        );
        assert_eq!(Update::Kept { status: "x".into() }.line(3, None), None);
    }
}
