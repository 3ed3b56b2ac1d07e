//! Arithmetic in recipes: constants folded at check time, training signals kept symbolic.

use crate::diagnostic::{Code, Diagnostic};
use crate::plan::{Func, Signal, SignalExpr, op};
use crate::syntax::ast::{BinOp, Expr, ExprKind};

use super::schema::{SIGNALS, SWEEPS};
use super::suggest;

/// What names mean while evaluating.
#[derive(Clone, Copy, Debug, Default)]
pub struct Env {
    /// The learning rate of the optimizer being resolved, if any.
    pub lr: Option<f64>,
    /// Whether training signals (step, lambda_max, ...) may appear.
    pub signals: bool,
    /// The optimizer being resolved should have a learning rate but its `lr` is missing or
    /// wrong (already reported): uses of `lr` fail without a diagnostic of their own.
    pub lr_missing: bool,
}

/// Evaluates a numeric expression. With `env.signals` the result may depend on signals;
/// otherwise it is a constant or an error.
pub fn eval(expr: &Expr, env: &Env) -> Result<SignalExpr, Diagnostic> {
    let out = match &expr.node {
        ExprKind::Number { value, .. } => SignalExpr::Const(*value),
        ExprKind::Paren(e) => eval(e, env)?,
        ExprKind::Neg(e) => match eval(e, env)? {
            SignalExpr::Const(v) => SignalExpr::Const(-v),
            other => SignalExpr::Neg(Box::new(other)),
        },
        ExprKind::Binary { op: bop, lhs, rhs } => {
            let (a, b) = (eval(lhs, env)?, eval(rhs, env)?);
            match (&a, &b) {
                (SignalExpr::Const(x), SignalExpr::Const(y)) => {
                    if *bop == BinOp::Div && *y == 0.0 {
                        return Err(Diagnostic::error(Code::Arithmetic, "division by zero")
                            .at(rhs.span, "this is 0")
                            .help("check the divisor"));
                    }
                    finite(op(*bop).apply(*x, *y), expr)?
                }
                _ => SignalExpr::Bin(op(*bop), Box::new(a), Box::new(b)),
            }
        }
        ExprKind::Ref(name) => {
            if name == "lr" {
                match env.lr {
                    Some(lr) => SignalExpr::Const(lr),
                    None => {
                        let d = Diagnostic::error(
                            Code::NotConstant,
                            "`lr` is only known inside a schedule or optimizer",
                        )
                        .at(expr.span, "no learning rate here")
                        .help("use a number, or move this into a schedule used by an optimizer");
                        return Err(if env.lr_missing { d.consequence() } else { d });
                    }
                }
            } else if let Some(sig) = Signal::from_name(name) {
                if !env.signals {
                    return Err(Diagnostic::error(
                        Code::NotConstant,
                        format!("`{name}` is a training signal, not a constant"),
                    )
                    .at(expr.span, "changes during training")
                    .help("signals may appear only in `custom { alpha = ... }` schedules"));
                }
                SignalExpr::Signal(sig)
            } else {
                let candidates: Vec<&str> = if env.signals {
                    SIGNALS.to_vec()
                } else {
                    vec!["lr"]
                };
                return Err(Diagnostic::error(
                    Code::UnknownName,
                    format!("unknown name `{name}` in an expression"),
                )
                .at(expr.span, "not a number or signal")
                .help(suggest::help(
                    name,
                    "names usable here",
                    candidates.iter().copied(),
                )));
            }
        }
        ExprKind::Call { name, args } => {
            if SWEEPS.contains(&name.node.as_str()) {
                return Err(sweep_misplaced(expr));
            }
            let Some(func) = Func::from_name(&name.node) else {
                return Err(Diagnostic::error(
                    Code::UnknownFunction,
                    format!("unknown function `{}`", name.node),
                )
                .at(name.span, "no such function")
                .help(suggest::help(
                    &name.node,
                    "functions",
                    Func::ALL.iter().map(|f| f.name()),
                )));
            };
            let arity = func.arity();
            if args.len() != arity || args.iter().any(|a| a.name.is_some()) {
                return Err(Diagnostic::error(
                    Code::Arity,
                    format!(
                        "`{}` takes {arity} positional argument(s), got {}",
                        name.node,
                        args.len()
                    ),
                )
                .at(expr.span, "wrong arguments")
                .help(format!(
                    "write `{}({})`",
                    name.node,
                    vec!["x"; arity].join(", ")
                )));
            }
            let vals = args
                .iter()
                .map(|a| eval(&a.value, env))
                .collect::<Result<Vec<_>, _>>()?;
            if vals.iter().all(|v| matches!(v, SignalExpr::Const(_))) {
                let xs: Vec<f64> = vals
                    .iter()
                    .map(|v| {
                        if let SignalExpr::Const(x) = v {
                            *x
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let r = func.apply(&xs);
                if !r.is_finite() {
                    return Err(Diagnostic::error(
                        Code::Arithmetic,
                        format!("`{}` has no finite value here", snippet(expr)),
                    )
                    .at(
                        expr.span,
                        format!(
                            "{}({}) is not finite",
                            name.node,
                            xs.iter()
                                .map(|x| x.to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )
                    .help("log and sqrt need positive arguments"));
                }
                SignalExpr::Const(r)
            } else {
                SignalExpr::Call(func, vals)
            }
        }
        ExprKind::Range(..) => {
            return Err(Diagnostic::error(
                Code::SweepMisplaced,
                "a range is only allowed inside `sweep(...)`",
            )
            .at(expr.span, "range here")
            .help("write `sweep(0..5)` to run one trial per value"));
        }
        _ => {
            return Err(Diagnostic::error(Code::Type, "expected a number")
                .at(expr.span, "not a number")
                .help("arithmetic works on numbers: `+ - * /`, `log`, `exp`, `sqrt`, `min`, `max`, `pow`"));
        }
    };
    Ok(out)
}

fn finite(v: f64, expr: &Expr) -> Result<SignalExpr, Diagnostic> {
    if v.is_finite() {
        Ok(SignalExpr::Const(v))
    } else {
        Err(
            Diagnostic::error(Code::Arithmetic, "the result is not a finite number")
                .at(expr.span, "overflows")
                .help("keep values below about 1.8e308"),
        )
    }
}

fn snippet(expr: &Expr) -> String {
    match &expr.node {
        ExprKind::Call { name, .. } => format!("{}(..)", name.node),
        _ => "expression".into(),
    }
}

pub fn sweep_misplaced(expr: &Expr) -> Diagnostic {
    Diagnostic::error(Code::SweepMisplaced, "a sweep must be the whole value of a field")
        .at(expr.span, "sweep inside an expression or list")
        .help("move the sweep outward, e.g. `lr = sweep(0.1, 0.2)` instead of `lr = 2 * sweep(0.05, 0.1)`")
}

/// Whether an expression is numeric and whole.
pub fn is_whole(v: f64) -> bool {
    v.fract() == 0.0 && v.abs() < 9e15
}
