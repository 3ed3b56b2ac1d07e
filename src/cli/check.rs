//! `ahtsgd check`, `fmt` and `plan`.

use super::RecipeArgs;
use ahtsgd::check::model as lowering;
use ahtsgd::check::{self, Checked, Options};
use ahtsgd::diagnostic;
use ahtsgd::model::spec::LayerRow;
use ahtsgd::plan::Plan;
use std::path::{Path, PathBuf};

pub fn options(args: &RecipeArgs) -> Options {
    Options {
        sets: args.sets.clone(),
        allow_large: args.allow_large,
    }
}

/// Prints a checked recipe's diagnostics; returns whether it had errors.
pub fn report(checked: &Checked, json: bool) -> bool {
    if json {
        for d in &checked.diagnostics {
            println!(
                "{}",
                serde_json::to_string(&d.to_json(&checked.sources)).unwrap_or_default()
            );
        }
    } else if !checked.diagnostics.is_empty() {
        eprint!(
            "{}",
            diagnostic::render(&checked.diagnostics, &checked.sources, super::color())
        );
    }
    checked.has_errors()
}

pub fn check(files: &[PathBuf], args: &RecipeArgs) -> i32 {
    let mut failed = false;
    for file in files {
        let checked = check::check_file(file, &options(args));
        if report(&checked, args.json) {
            failed = true;
            let n = checked.diagnostics.iter().filter(|d| d.is_error()).count();
            if !args.json {
                eprintln!(
                    "{}: {n} error{}",
                    file.display(),
                    if n == 1 { "" } else { "s" }
                );
            }
            continue;
        }
        let plan = checked.plan.as_ref().expect("no errors means a plan");
        if args.json {
            let summary = serde_json::json!({
                "file": file.display().to_string(),
                "ok": true,
                "experiments": plan.experiments.iter().map(|e| serde_json::json!({"name": e.name, "trials": e.trials.len()})).collect::<Vec<_>>(),
                "trials": plan.trials.len(),
            });
            println!("{summary}");
        } else {
            let mut exps: Vec<String> = plan
                .experiments
                .iter()
                .take(5)
                .map(|e| format!("{} ({})", e.name, plural(e.trials.len(), "trial")))
                .collect();
            if plan.experiments.len() > 5 {
                exps.push(format!("and {} more", plan.experiments.len() - 5));
            }
            println!(
                "{}: ok, {}: {}; {}",
                file.display(),
                plural(plan.experiments.len(), "experiment"),
                exps.join(", "),
                plural(plan.trials.len(), "trial")
            );
        }
    }
    i32::from(failed)
}

pub fn fmt(files: &[PathBuf], check_only: bool) -> i32 {
    let mut status = 0;
    for file in files {
        match format_file(file) {
            Err(code) => status = status.max(code),
            Ok((original, formatted)) => {
                if original == formatted {
                    continue;
                }
                if check_only {
                    println!("{}: not formatted", file.display());
                    status = status.max(1);
                } else if let Err(e) = ahtsgd::fsutil::write_atomic(file, formatted.as_bytes()) {
                    eprintln!("error: cannot write {}: {e}", file.display());
                    status = 2;
                } else {
                    println!("formatted {}", file.display());
                }
            }
        }
    }
    status
}

fn format_file(file: &Path) -> Result<(String, String), i32> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        eprintln!("error: cannot read {}: {e}", file.display());
        2
    })?;
    let mut sources = ahtsgd::source::SourceMap::new();
    let id = sources.add(file.display().to_string(), Some(file), text.as_str());
    match ahtsgd::syntax::parse(id, &text) {
        Ok(module) => Ok((text.clone(), ahtsgd::fmt::format(&module, &text))),
        Err(d) => {
            eprint!("{}", diagnostic::render(&[d], &sources, super::color()));
            Err(1)
        }
    }
}

/// Whether `--experiment NAME` names one of the plan's experiments (saying which it has if
/// not); `Err` holds the exit code.
pub fn known_experiment(file: &Path, plan: &Plan, name: Option<&str>) -> Result<(), i32> {
    match name {
        Some(e) if !plan.experiments.iter().any(|x| x.name == e) => {
            eprintln!(
                "error: no experiment `{e}` in {}; it has: {}",
                file.display(),
                plan.experiments
                    .iter()
                    .map(|x| x.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Err(2)
        }
        _ => Ok(()),
    }
}

pub fn plan(file: &Path, args: &RecipeArgs, show_layers: bool, only: Option<&str>) -> i32 {
    let checked = check::check_file(file, &options(args));
    if report(&checked, args.json) {
        return 1;
    }
    let plan = checked.plan.as_ref().expect("no errors means a plan");
    if let Err(code) = known_experiment(file, plan, only) {
        return code;
    }
    for exp in plan
        .experiments
        .iter()
        .filter(|x| only.is_none_or(|e| x.name == e))
    {
        if !args.json {
            println!(
                "experiment {} — {} trial{}",
                exp.name,
                exp.trials.len(),
                if exp.trials.len() == 1 { "" } else { "s" }
            );
        }
        let mut tables: Vec<(String, Option<Vec<LayerRow>>)> = Vec::new();
        for t in &plan.trials[exp.trials.clone()] {
            let c = &t.config;
            let name = |f: &str| match c.get(f) {
                ahtsgd::plan::Val::Obj(o) => o.decl.clone().unwrap_or_else(|| o.kind.to_string()),
                v => v.to_source(),
            };
            let data = c.obj("data");
            let model = c.obj("model");
            let table = lowering::sample_shape(data)
                .zip(lowering::classes(data))
                .and_then(|(shape, k)| {
                    lowering::lower_for(model, &shape, k, lowering::tokens(data)).ok()
                })
                .and_then(|spec| spec.table().ok());
            let params = table
                .as_ref()
                .map(|rows| rows.iter().map(|r| r.parameters).sum::<usize>());
            let label = format!("model {} on data {}", name("model"), name("data"));
            if show_layers && !args.json && !tables.iter().any(|(l, _)| *l == label) {
                tables.push((label, table.clone()));
            }
            if args.json {
                let settings: serde_json::Map<String, serde_json::Value> = c
                    .fields
                    .iter()
                    .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_source())))
                    .collect();
                let mut line = serde_json::json!({
                    "trial": t.index,
                    "experiment": t.experiment,
                    "parameters": params,
                    "choices": t.choices.iter().map(|(p, v)| serde_json::json!({"path": p, "value": v})).collect::<Vec<_>>(),
                    "settings": settings,
                });
                if show_layers {
                    line["layers"] = serde_json::to_value(&table).expect("plain data");
                }
                println!("{line}");
            } else {
                let choices: Vec<String> =
                    t.choices.iter().map(|(p, v)| format!("{p}={v}")).collect();
                println!(
                    "  trial {:04}  data={} model={}{} optimizer={} epochs={} batch={} seed={}{}",
                    t.index,
                    name("data"),
                    name("model"),
                    params.map_or(String::new(), |p| format!(" ({p} parameters)")),
                    name("optimizer"),
                    c.get("epochs").to_source(),
                    c.get("batch").to_source(),
                    c.get("seed").to_source(),
                    if choices.is_empty() {
                        String::new()
                    } else {
                        format!("  [{}]", choices.join(", "))
                    }
                );
            }
        }
        for (label, table) in tables {
            print_layers(&label, table.as_deref());
        }
    }
    0
}

fn print_layers(label: &str, rows: Option<&[LayerRow]>) {
    let Some(rows) = rows else {
        println!("  {label}: layers known once the data is loaded (`arrays`) or the model fits it");
        return;
    };
    let total: usize = rows.iter().map(|r| r.parameters).sum();
    let trained = rows.iter().filter(|r| r.parameters > 0).count();
    println!(
        "  {label}: {} layers ({trained} with parameters), {total} parameters",
        rows.len()
    );
    let dims = |s: &[usize]| {
        s.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("x")
    };
    let mut cells: Vec<[String; 6]> = vec![[
        "layer".into(),
        "kind".into(),
        "output".into(),
        "weight".into(),
        "params".into(),
        "init".into(),
    ]];
    cells.extend(rows.iter().map(|r| {
        let init = match (&r.init, &r.bias_init) {
            (Some(i), Some(b)) => format!("{i}, bias {b}"),
            (Some(i), None) => i.clone(),
            _ => String::new(),
        };
        [
            format!("{}{}", "  ".repeat(r.depth), r.name),
            r.kind.to_string(),
            dims(&r.output),
            dims(&r.shape),
            r.parameters.to_string(),
            init,
        ]
    }));
    let width = |i: usize| {
        cells
            .iter()
            .map(|c| c[i].chars().count())
            .max()
            .unwrap_or(0)
    };
    let (w0, w1, w2, w3, w4) = (width(0), width(1), width(2), width(3), width(4));
    for [name, kind, out, shape, params, init] in &cells {
        let line = format!(
            "    {name:<w0$}  {kind:<w1$}  {out:<w2$}  {shape:<w3$}  {params:>w4$}  {init}"
        );
        println!("{}", line.trim_end());
    }
}

/// `ahtsgd show MODEL`: the model as a `layers` declaration.
pub fn show(model: &str, name: &str) -> i32 {
    let text = format!(
        "model {name} = {model}\nexperiment show {{ data = arrays {{ path = \"-\" }}, model = {name}, optimizer = sgd {{ lr = 1 }}, epochs = 1 }}\n"
    );
    let checked = check::check_text("<show>", &text, &Options::default());
    let Some(plan) = &checked.plan else {
        eprint!(
            "{}",
            diagnostic::render(&checked.diagnostics, &checked.sources, super::color())
        );
        return 1;
    };
    let obj = plan.trials[0].config.obj("model");
    match lowering::describe(
        obj,
        &[],
        lowering::SYMBOLIC_CLASSES,
        Some(lowering::Tokens {
            vocab: lowering::SYMBOLIC_CLASSES,
            every_position: false,
        }),
    ) {
        Ok(spec) => {
            print!("{}", spec.to_recipe(name));
            0
        }
        Err(e) => {
            eprintln!("error: {}\n  help: {}", e.message, e.help);
            1
        }
    }
}

/// "1 trial", "3 trials".
pub fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
