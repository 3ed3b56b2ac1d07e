//! TensorBoard event files from a run directory's records.
//!
//! Each recorded trial becomes one TensorBoard run, `OUT/<experiment>/<arm>/seed-<seed>`, with
//! one event file of scalars at the steps `metrics.jsonl` logged them, and the HParams plugin's
//! session summaries (the trial's sweep values, its status); `OUT` itself holds the HParams
//! experiment (every swept setting and the final metrics), so TensorBoard's HParams tab compares
//! the trials. The framing and the event protocol buffers are the `tfrecord` crate's; the HParams
//! plugin's messages, which it does not have, are declared here with `prost` after
//! `tensorboard/plugins/hparams/{api,plugin_data}.proto`.
//!
//! Files are written whole under a fixed name per trial (`events.out.tfevents.<trial>.ahtsgd`)
//! and renamed into place, so exporting again replaces them instead of adding a second copy of
//! every curve.

use super::{Metric, ReportError, read_metrics};
use crate::sweep::{self, Finished};
use crate::train::record::Summary;
use prost::Message as _;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tfrecord::protobuf::{
    Event, Summary as TfSummary, SummaryMetadata, event, summary, summary_metadata,
};

/// Scalar tags, as TensorBoard groups them (by the part before `/`).
pub mod tag {
    pub const TRAIN_LOSS: &str = "loss/train";
    pub const TEST_LOSS: &str = "loss/test";
    pub const TEST_ACCURACY: &str = "accuracy/test";
    pub const ALPHA: &str = "alpha";
    /// Power iteration's estimate (the top eigenvalue of the Hessian).
    pub const LAMBDA_MAX: &str = "sharpness/lambda_max";
    /// Hutchinson's estimate, tr(H)/d.
    pub const MEAN_EIGENVALUE: &str = "sharpness/mean_eigenvalue";
    /// The smoothed estimate, exp of the logged log-EMA, in the estimate's units.
    pub const SMOOTHED: &str = "sharpness/smoothed";
    /// 2/lr, the Edge of Stability, where sharpness is estimated.
    pub const EDGE: &str = "sharpness/two_over_lr";
    pub const NOISE_NORM: &str = "noise_norm";
    pub const GRAD_NORM: &str = "grad_norm";
    pub const LR: &str = "lr";
    /// The last evaluation's figures, at the last step: the HParams tab's metrics.
    pub const FINAL_ACCURACY: &str = "final/test_accuracy";
    pub const FINAL_LOSS: &str = "final/test_loss";
}

/// What an export wrote.
#[derive(Clone, Debug, Default)]
pub struct Exported {
    /// One event file per trial.
    pub files: Vec<PathBuf>,
    /// Scalar values written, over all trials.
    pub scalars: usize,
}

/// Writes TensorBoard event files for every recorded trial of `run_dir` under `out`.
pub fn export(run_dir: &Path, out: &Path) -> Result<Exported, ReportError> {
    let experiments = sweep::finished(run_dir).map_err(super::io(run_dir))?;
    if experiments.is_empty() {
        return Err(ReportError::Empty(run_dir.display().to_string()));
    }
    let mut done = Exported::default();
    let mut hparams: BTreeMap<String, bool> = BTreeMap::new();
    for exp in &experiments {
        for (dir, s) in &exp.trials {
            let values = session_hparams(exp, s);
            for (k, v) in &values {
                let numeric = matches!(v.kind, Some(value::Kind::Number(_)));
                *hparams.entry(k.clone()).or_insert(numeric) &= numeric;
            }
            let metrics = read_metrics(dir)?;
            let run = out.join(run_name(exp, s));
            let path = run.join(format!("events.out.tfevents.{:04}.ahtsgd", s.trial));
            let events = trial_events(exp, s, &metrics, dir, values);
            done.scalars += events.iter().map(scalar_count).sum::<usize>();
            write_events(&path, &events)?;
            done.files.push(path);
        }
    }
    let experiment = experiment_event(&hparams);
    write_events(&out.join("events.out.tfevents.0.ahtsgd"), &experiment)?;
    Ok(done)
}

/// `<experiment>/<arm>/seed-<seed>`, each part kept to characters that are safe in a path.
pub fn run_name(exp: &Finished, s: &Summary) -> PathBuf {
    let clean = |t: &str| -> String {
        let mut out = String::new();
        for c in t.chars() {
            let keep = c.is_ascii_alphanumeric() || matches!(c, '.' | '=' | '-' | '_' | '+');
            match (keep, out.ends_with('_')) {
                (true, _) => out.push(c),
                (false, false) => out.push('_'),
                (false, true) => {}
            }
        }
        out.trim_matches('_').to_string()
    };
    PathBuf::from(clean(&exp.experiment))
        .join(clean(&s.arm()))
        .join(format!("seed-{}", s.seed))
}

fn scalar_count(e: &Event) -> usize {
    match &e.what {
        Some(event::What::Summary(s)) => s
            .value
            .iter()
            .filter(|v| matches!(v.value, Some(summary::value::Value::SimpleValue(_))))
            .count(),
        _ => 0,
    }
}

/// A trial's events: the file version, its HParams session start, its scalars step by step,
/// the final metrics and the session end.
fn trial_events(
    exp: &Finished,
    s: &Summary,
    metrics: &[Metric],
    dir: &Path,
    hparams: BTreeMap<String, Value>,
) -> Vec<Event> {
    let mean = super::mean_eigenvalue(dir, s);
    // Metrics carry no clock: the wall time of a step is spread over the trial's training time
    // at its mean rate (TensorBoard's "relative" axis then reads in seconds).
    let rate = if s.steps_per_s > 0.0 {
        s.steps_per_s
    } else {
        1.0
    };
    let wall = |step: u64| step as f64 / rate;
    let mut events = vec![version_event()];
    events.push(plugin_event(
        0,
        0.0,
        "_hparams_/session_start_info",
        HParamsPluginData {
            version: 0,
            data: Some(plugin_data::Data::SessionStartInfo(SessionStartInfo {
                hparams,
                group_name: format!("{}/{}", exp.experiment, s.arm()),
                start_time_secs: 0.0,
                ..Default::default()
            })),
        },
    ));
    for m in metrics {
        let mut values = Vec::new();
        let mut put = |tag: &str, v: Option<f64>| {
            if let Some(v) = v.filter(|v| v.is_finite()) {
                values.push(scalar(tag, v));
            }
        };
        put(tag::TRAIN_LOSS, m.train_loss);
        put(tag::TEST_LOSS, m.test_loss);
        put(tag::TEST_ACCURACY, m.test_accuracy);
        put(tag::ALPHA, m.alpha);
        let sharp = if mean {
            tag::MEAN_EIGENVALUE
        } else {
            tag::LAMBDA_MAX
        };
        put(sharp, m.lambda_max);
        put(tag::SMOOTHED, m.sharpness_ema.map(f64::exp));
        put(
            tag::EDGE,
            m.lambda_max.and(m.lr).filter(|l| *l > 0.0).map(|l| 2.0 / l),
        );
        put(tag::NOISE_NORM, m.noise_norm);
        put(tag::GRAD_NORM, m.grad_norm);
        put(tag::LR, m.lr);
        if !values.is_empty() {
            events.push(summary_event(m.step, wall(m.step), values));
        }
    }
    let last = metrics.last().map_or(s.steps, |m| m.step.max(s.steps));
    if let Some(f) = &s.final_ {
        events.push(summary_event(
            last,
            wall(last),
            vec![
                scalar(tag::FINAL_ACCURACY, f.test_accuracy),
                scalar(tag::FINAL_LOSS, f.test_loss),
            ],
        ));
    }
    let status = match s.status.as_str() {
        "completed" => Status::Success,
        "interrupted" => Status::Running,
        _ => Status::Failure,
    };
    events.push(plugin_event(
        last,
        wall(last),
        "_hparams_/session_end_info",
        HParamsPluginData {
            version: 0,
            data: Some(plugin_data::Data::SessionEndInfo(SessionEndInfo {
                status: status as i32,
                end_time_secs: wall(last),
            })),
        },
    ));
    events
}

/// The HParams of one trial: its experiment, optimizer, seed and sweep values (numbers where
/// they parse as numbers).
fn session_hparams(exp: &Finished, s: &Summary) -> BTreeMap<String, Value> {
    let text = |t: &str| Value {
        kind: Some(value::Kind::Text(t.to_string())),
    };
    let mut out = BTreeMap::new();
    out.insert("experiment".to_string(), text(&exp.experiment));
    out.insert("optimizer".to_string(), text(&s.optimizer));
    out.insert(
        "seed".to_string(),
        Value {
            kind: Some(value::Kind::Number(s.seed as f64)),
        },
    );
    for (k, v) in s.context() {
        let value = match v.parse::<f64>() {
            Ok(n) if n.is_finite() => Value {
                kind: Some(value::Kind::Number(n)),
            },
            _ => text(&v),
        };
        out.insert(k, value);
    }
    out
}

/// The HParams experiment: every setting seen (numeric or text) and the final metrics.
fn experiment_event(hparams: &BTreeMap<String, bool>) -> Vec<Event> {
    let infos = hparams
        .iter()
        .map(|(name, numeric)| HParamInfo {
            name: name.clone(),
            r#type: if *numeric {
                DataType::Float64
            } else {
                DataType::String
            } as i32,
            ..Default::default()
        })
        .collect();
    let metric = |t: &str| MetricInfo {
        name: Some(MetricName {
            group: String::new(),
            tag: t.to_string(),
        }),
        ..Default::default()
    };
    vec![
        version_event(),
        plugin_event(
            0,
            0.0,
            "_hparams_/experiment",
            HParamsPluginData {
                version: 0,
                data: Some(plugin_data::Data::Experiment(Experiment {
                    hparam_infos: infos,
                    metric_infos: vec![metric(tag::FINAL_ACCURACY), metric(tag::FINAL_LOSS)],
                    ..Default::default()
                })),
            },
        ),
    ]
}

fn version_event() -> Event {
    Event {
        wall_time: 0.0,
        step: 0,
        source_metadata: None,
        what: Some(event::What::FileVersion("brain.Event:2".into())),
    }
}

fn scalar(tag: &str, v: f64) -> summary::Value {
    summary::Value {
        tag: tag.to_string(),
        // TensorBoard's scalars are 32-bit floats.
        value: Some(summary::value::Value::SimpleValue(v as f32)),
        ..Default::default()
    }
}

fn summary_event(step: u64, wall_time: f64, value: Vec<summary::Value>) -> Event {
    Event {
        wall_time,
        step: step as i64,
        source_metadata: None,
        what: Some(event::What::Summary(TfSummary { value })),
    }
}

fn plugin_event(step: u64, wall_time: f64, tag: &str, data: HParamsPluginData) -> Event {
    summary_event(
        step,
        wall_time,
        vec![summary::Value {
            tag: tag.to_string(),
            metadata: Some(SummaryMetadata {
                plugin_data: Some(summary_metadata::PluginData {
                    plugin_name: "hparams".into(),
                    content: data.encode_to_vec(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }],
    )
}

/// Writes the events as one TFRecord file, whole, then renames it into place.
fn write_events(path: &Path, events: &[Event]) -> Result<(), ReportError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(super::io(dir))?;
    let mut bytes = Vec::new();
    {
        let mut w = tfrecord::EventWriter::from_writer(&mut bytes, Default::default())
            .map_err(|e| tb_err(path, e))?;
        for e in events {
            w.write_event(e.clone()).map_err(|e| tb_err(path, e))?;
        }
        w.flush().map_err(|e| tb_err(path, e))?;
    }
    crate::fsutil::write_atomic(path, &bytes).map_err(super::io(path))
}

fn tb_err(path: &Path, e: tfrecord::Error) -> ReportError {
    ReportError::Io {
        path: path.display().to_string(),
        source: std::io::Error::other(e.to_string()),
    }
}

// The HParams plugin's messages (tensorboard/plugins/hparams/plugin_data.proto and api.proto,
// and google/protobuf/struct.proto's Value), the fields this export writes.

#[derive(Clone, PartialEq, prost::Message)]
struct HParamsPluginData {
    #[prost(int32, tag = "1")]
    version: i32,
    #[prost(oneof = "plugin_data::Data", tags = "2, 3, 4")]
    data: Option<plugin_data::Data>,
}

mod plugin_data {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub(super) enum Data {
        #[prost(message, tag = "2")]
        Experiment(super::Experiment),
        #[prost(message, tag = "3")]
        SessionStartInfo(super::SessionStartInfo),
        #[prost(message, tag = "4")]
        SessionEndInfo(super::SessionEndInfo),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
struct Experiment {
    #[prost(string, tag = "1")]
    description: String,
    #[prost(string, tag = "2")]
    user: String,
    #[prost(double, tag = "3")]
    time_created_secs: f64,
    #[prost(message, repeated, tag = "4")]
    hparam_infos: Vec<HParamInfo>,
    #[prost(message, repeated, tag = "5")]
    metric_infos: Vec<MetricInfo>,
    #[prost(string, tag = "6")]
    name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
enum DataType {
    Unset = 0,
    String = 1,
    Bool = 2,
    Float64 = 3,
}

#[derive(Clone, PartialEq, prost::Message)]
struct HParamInfo {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    display_name: String,
    #[prost(string, tag = "3")]
    description: String,
    #[prost(enumeration = "DataType", tag = "4")]
    r#type: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct MetricName {
    #[prost(string, tag = "1")]
    group: String,
    #[prost(string, tag = "2")]
    tag: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct MetricInfo {
    #[prost(message, optional, tag = "1")]
    name: Option<MetricName>,
    #[prost(string, tag = "3")]
    display_name: String,
    #[prost(string, tag = "4")]
    description: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SessionStartInfo {
    // a BTreeMap, so the same trial encodes to the same bytes
    #[prost(btree_map = "string, message", tag = "1")]
    hparams: BTreeMap<String, Value>,
    #[prost(string, tag = "2")]
    model_uri: String,
    #[prost(string, tag = "3")]
    monitor_url: String,
    #[prost(string, tag = "4")]
    group_name: String,
    #[prost(double, tag = "5")]
    start_time_secs: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
enum Status {
    Unknown = 0,
    Success = 1,
    Failure = 2,
    Running = 3,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SessionEndInfo {
    #[prost(enumeration = "Status", tag = "1")]
    status: i32,
    #[prost(double, tag = "2")]
    end_time_secs: f64,
}

/// google.protobuf.Value, the two kinds written here (number_value, string_value).
#[derive(Clone, PartialEq, prost::Message)]
struct Value {
    #[prost(oneof = "value::Kind", tags = "2, 3")]
    kind: Option<value::Kind>,
}

mod value {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub(super) enum Kind {
        #[prost(double, tag = "2")]
        Number(f64),
        #[prost(string, tag = "3")]
        Text(String),
    }
}
