//! The checked recipe: every trial resolved, typed and numbered.
//!
//! A [`Plan`] is what `check` produces and what `run` consumes. It holds no candle types.
//! Trials are numbered from 0 across all experiments in the order `plan` prints them.

use crate::check::schema::Category;
use crate::source::Span;
use crate::syntax::ast::{BinOp, Unit};
use std::fmt::Write as _;
use std::sync::Arc;

/// A resolved value.
#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    /// A number; `true` when written (or computed) as a whole number.
    Num(f64, bool),
    Str(String),
    Bool(bool),
    /// An enum value such as `relu`.
    Name(String),
    Quantity(f64, Unit),
    List(Vec<Val>),
    Obj(Arc<Obj>),
    /// An expression over training signals (custom α).
    Expr(SignalExpr),
}

impl Val {
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Val::Num(v, _) => Some(*v),
            _ => None,
        }
    }

    /// Recipe text for this value.
    pub fn to_source(&self) -> String {
        let mut s = String::new();
        self.write(&mut s);
        s
    }

    fn write(&self, out: &mut String) {
        match self {
            Val::Num(v, int) => out.push_str(&fmt_num(*v, *int)),
            Val::Str(s) => {
                let _ = write!(out, "{s:?}");
            }
            Val::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Val::Name(n) => out.push_str(n),
            Val::Quantity(v, u) => {
                let _ = write!(out, "{} {}", fmt_num(*v, v.fract() == 0.0), u.name());
            }
            Val::List(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    v.write(out);
                }
                out.push(']');
            }
            Val::Obj(o) => o.write_inline(out),
            Val::Expr(e) => out.push_str(&expr_source(e)),
        }
    }
}

/// Formats a number so that parsing it gives the same value.
pub fn fmt_num(v: f64, int: bool) -> String {
    if int && v.fract() == 0.0 && v.abs() < 9e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:?}")
    }
}

/// A resolved object: a declaration or a nested setting, every field present.
#[derive(Clone, Debug, PartialEq)]
pub struct Obj {
    pub category: Category,
    pub kind: &'static str,
    /// The declaration it came from, if it was declared by name.
    pub decl: Option<String>,
    /// Fields in schema order.
    pub fields: Vec<(&'static str, Val)>,
    /// Where it was declared (for diagnostics raised while running it).
    pub span: Span,
}

impl Obj {
    pub fn get(&self, name: &str) -> &Val {
        self.fields
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
            .unwrap_or_else(|| {
                panic!(
                    "checked {} `{}` has no field `{name}`",
                    self.category.noun(),
                    self.kind
                )
            })
    }

    pub fn f64(&self, name: &str) -> f64 {
        match self.get(name) {
            Val::Num(v, _) | Val::Quantity(v, _) => *v,
            other => panic!("field `{name}` is not a number: {other:?}"),
        }
    }

    pub fn usize(&self, name: &str) -> usize {
        self.f64(name) as usize
    }

    pub fn bool(&self, name: &str) -> bool {
        matches!(self.get(name), Val::Bool(true))
    }

    pub fn str(&self, name: &str) -> &str {
        match self.get(name) {
            Val::Str(s) | Val::Name(s) => s,
            other => panic!("field `{name}` is not text: {other:?}"),
        }
    }

    pub fn obj(&self, name: &str) -> &Obj {
        match self.get(name) {
            Val::Obj(o) => o,
            other => panic!("field `{name}` is not an object: {other:?}"),
        }
    }

    pub fn quantity(&self, name: &str) -> (f64, Unit) {
        match self.get(name) {
            Val::Quantity(v, u) => (*v, *u),
            other => panic!("field `{name}` is not a quantity: {other:?}"),
        }
    }

    /// The objects of a list field (`layers`).
    pub fn obj_list(&self, name: &str) -> Vec<&Obj> {
        match self.get(name) {
            Val::List(items) => items
                .iter()
                .filter_map(|v| match v {
                    Val::Obj(o) => Some(&**o),
                    _ => None,
                })
                .collect(),
            other => panic!("field `{name}` is not a list: {other:?}"),
        }
    }

    /// The numbers of a list field.
    pub fn f64_list(&self, name: &str) -> Vec<f64> {
        match self.get(name) {
            Val::List(items) => items.iter().filter_map(Val::as_f64).collect(),
            other => panic!("field `{name}` is not a list: {other:?}"),
        }
    }

    pub fn usize_list(&self, name: &str) -> Vec<usize> {
        match self.get(name) {
            Val::List(items) => items
                .iter()
                .filter_map(Val::as_f64)
                .map(|v| v as usize)
                .collect(),
            other => panic!("field `{name}` is not a list: {other:?}"),
        }
    }

    /// `kind { a = 1, b = 2 }` on one line (or the bare kind when it has no fields).
    pub fn write_inline(&self, out: &mut String) {
        if let Some(decl) = &self.decl {
            out.push_str(decl);
            return;
        }
        out.push_str(self.kind);
        if self.fields.is_empty() {
            return;
        }
        out.push_str(" { ");
        for (i, (name, v)) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            let _ = write!(out, "{name} = ");
            v.write(out);
        }
        out.push_str(" }");
    }
}

pub use crate::optim::signal::{Func, Op, Signal, SignalExpr, Signals};

/// Recipe text of a signal expression, parenthesised only where precedence needs it.
pub fn expr_source(e: &SignalExpr) -> String {
    match e {
        SignalExpr::Const(v) => fmt_num(*v, v.fract() == 0.0),
        SignalExpr::Signal(s) => s.name().to_string(),
        SignalExpr::Neg(e) => format!("-{}", expr_source_prec(e, 3)),
        SignalExpr::Bin(op, a, b) => {
            let p = precedence(*op);
            format!(
                "{} {} {}",
                expr_source_prec(a, p),
                symbol(*op),
                expr_source_prec(b, p + 1)
            )
        }
        SignalExpr::Call(f, args) => {
            let args: Vec<String> = args.iter().map(expr_source).collect();
            format!("{}({})", f.name(), args.join(", "))
        }
    }
}

fn expr_source_prec(e: &SignalExpr, min: u8) -> String {
    match e {
        SignalExpr::Bin(op, ..) if precedence(*op) < min => format!("({})", expr_source(e)),
        SignalExpr::Const(v) if *v < 0.0 => format!("({})", expr_source(e)),
        _ => expr_source(e),
    }
}

fn precedence(op: Op) -> u8 {
    op_of(op).precedence()
}

fn symbol(op: Op) -> &'static str {
    op_of(op).symbol()
}

fn op_of(op: Op) -> BinOp {
    match op {
        Op::Add => BinOp::Add,
        Op::Sub => BinOp::Sub,
        Op::Mul => BinOp::Mul,
        Op::Div => BinOp::Div,
    }
}

/// The optimizer's operator for a recipe's.
pub fn op(b: BinOp) -> Op {
    match b {
        BinOp::Add => Op::Add,
        BinOp::Sub => Op::Sub,
        BinOp::Mul => Op::Mul,
        BinOp::Div => Op::Div,
    }
}

/// One trial: an experiment with every sweep value chosen.
#[derive(Clone, Debug)]
pub struct Trial {
    /// Number across the whole recipe, as `plan` prints it.
    pub index: usize,
    pub experiment: String,
    /// The experiment, resolved: `data`, `model`, `optimizer` are nested objects.
    pub config: Obj,
    /// The sweep values of this trial: (site path, value as recipe text), in expansion order.
    pub choices: Vec<(String, String)>,
    /// The recipe's language version.
    pub version: u64,
}

impl Trial {
    /// The trial as a recipe of its own with every default written out: `resolved.aht`.
    pub fn resolved_source(&self) -> String {
        let mut out = format!("version = {}\n\n", self.version);
        let mut seen = Vec::new();
        for (_, v) in &self.config.fields {
            if let Val::Obj(o) = v {
                write_decls(o, &mut out, &mut seen);
            }
        }
        let _ = writeln!(out, "experiment {} {{", self.experiment);
        for (name, v) in &self.config.fields {
            let _ = writeln!(out, "  {name} = {}", v.to_source());
        }
        out.push_str("}\n");
        out
    }
}

fn write_decls(o: &Obj, out: &mut String, seen: &mut Vec<String>) {
    for (_, v) in &o.fields {
        if let Val::Obj(inner) = v {
            write_decls(inner, out, seen);
        }
    }
    if let Some(decl) = &o.decl {
        if seen.contains(decl) {
            return;
        }
        seen.push(decl.clone());
        let keyword = match o.category {
            Category::Dataset => "dataset",
            Category::Model => "model",
            Category::Schedule => "schedule",
            Category::Optimizer => "optimizer",
            _ => return,
        };
        let _ = writeln!(out, "{keyword} {decl} = {} {{", o.kind);
        for (name, v) in &o.fields {
            let _ = writeln!(out, "  {name} = {}", v.to_source());
        }
        out.push_str("}\n\n");
    }
}

/// One experiment of the plan.
#[derive(Clone, Debug)]
pub struct ExperimentPlan {
    pub name: String,
    pub span: Span,
    /// Indices into [`Plan::trials`].
    pub trials: std::ops::Range<usize>,
}

/// The checked recipe.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub experiments: Vec<ExperimentPlan>,
    pub trials: Vec<Trial>,
}
