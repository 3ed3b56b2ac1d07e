//! Layer stacks: `stack = [conv(width, 3), batch_norm, relu, repeat(2, [...]), basic(width = 8)]`.
//!
//! A stack resolves to a flat list of layer objects with every number written out: the
//! enclosing declaration's parameters are substituted, `repeat` is unrolled and a block call
//! (a `layers` declaration used inside a stack) is spliced in with its own parameters, so what
//! a recorded `resolved.aht` holds is the stack that ran. `classes` stays a name until the
//! dataset is known.

use std::sync::Arc;

use super::{FieldSrc, Resolver, apply_override, number_expr, sweep_alternatives};
use crate::check::eval::{Env, is_whole};
use crate::check::schema::{self, Category, FieldSpec, SIGNALS, Ty};
use crate::check::suggest;
use crate::diagnostic::{Code, Diagnostic};
use crate::plan::{Obj, Val};
use crate::source::{Span, Spanned};
use crate::syntax::ast::{Arg, Expr, ExprKind, Ident};

/// The most layers one stack may unroll to.
pub const MAX_LAYERS: usize = 10_000;

/// Names a `layers` parameter may not take: they mean something else inside a stack.
const RESERVED: &[&str] = &["classes", "vocab", "repeat", "identity"];

/// The parameter's type: any finite number.
const PARAMETER: FieldSpec = FieldSpec {
    name: "parameter",
    ty: Ty::Float {
        min: f64::NEG_INFINITY,
        max: f64::INFINITY,
        min_open: false,
    },
    default: None,
    doc: "a number the stack can name",
};

/// Whether a kind takes parameters besides its fields (`layers`).
pub fn takes_parameters(kind: &schema::KindSpec) -> bool {
    kind.category == Category::Model && kind.name == "layers"
}

/// Why `name` cannot be a parameter or a `layers` declaration, if it cannot.
pub fn reserved(name: &str) -> Option<String> {
    if schema::kind(Category::Layer, name).is_some() {
        return Some(format!("`{name}` is a layer kind"));
    }
    if RESERVED.contains(&name) || SIGNALS.contains(&name) {
        return Some(format!("`{name}` has a meaning of its own inside a stack"));
    }
    None
}

/// Replaces every bare name in `scope` by its number.
fn substitute(e: &mut Expr, scope: &[(String, f64, bool)]) {
    match &mut e.node {
        ExprKind::Ref(n) => {
            if let Some((_, v, int)) = scope.iter().find(|(p, ..)| p == n) {
                *e = number_expr(*v, *int, e.span);
            }
        }
        ExprKind::Neg(x) | ExprKind::Paren(x) => substitute(x, scope),
        ExprKind::Binary { lhs, rhs, .. } | ExprKind::Range(lhs, rhs) => {
            substitute(lhs, scope);
            substitute(rhs, scope);
        }
        ExprKind::List(xs) => xs.iter_mut().for_each(|x| substitute(x, scope)),
        ExprKind::Call { args, .. } => args
            .iter_mut()
            .for_each(|a| substitute(&mut a.value, scope)),
        ExprKind::Object { .. } => {}
        _ => {}
    }
}

/// The first bare name inside a numeric expression (after substitution: an unknown one).
fn first_name(e: &Expr) -> Option<(&str, Span)> {
    match &e.node {
        ExprKind::Ref(n) => Some((n, e.span)),
        ExprKind::Neg(x) | ExprKind::Paren(x) => first_name(x),
        ExprKind::Binary { lhs, rhs, .. } => first_name(lhs).or_else(|| first_name(rhs)),
        ExprKind::Call { args, .. } => args.iter().find_map(|a| first_name(&a.value)),
        _ => None,
    }
}

/// Whether an expression holds a sweep anywhere.
fn has_sweep(e: &Expr) -> bool {
    if sweep_alternatives(e).is_some() {
        return true;
    }
    match &e.node {
        ExprKind::Neg(x) | ExprKind::Paren(x) => has_sweep(x),
        ExprKind::Binary { lhs, rhs, .. } => has_sweep(lhs) || has_sweep(rhs),
        _ => false,
    }
}

impl Resolver<'_, '_> {
    /// The parameters of a `layers` object: its fields that are not the kind's, each a
    /// number (sweeps allowed). Reports bad names; `None` when one is wrong.
    pub(super) fn parameters(
        &mut self,
        kind: &'static schema::KindSpec,
        fields: &[FieldSrc],
        prefix: &str,
        env: &Env,
    ) -> Option<Vec<(String, f64, bool)>> {
        let mut ok = true;
        let mut out = Vec::new();
        for f in fields.iter().filter(|f| kind.field(&f.name.node).is_none()) {
            if let Some(why) = reserved(&f.name.node) {
                ok = false;
                self.report(
                    Diagnostic::error(
                        Code::Layer,
                        format!("`{}` cannot be a parameter: {why}", f.name.node),
                    )
                    .at(f.name.span, "reserved here")
                    .help("rename the parameter (`width`, `depth`, `channels`, ...)"),
                );
                continue;
            }
            let Some(value) = &f.value else { continue };
            let path = format!("{prefix}.{}", f.name.node);
            let expr = {
                let mut e = value.clone();
                substitute(&mut e, &out);
                e
            };
            match self.field(&path, &expr, &PARAMETER, f.nested.clone(), env) {
                Some(Val::Num(v, int)) => out.push((f.name.node.clone(), v, int)),
                Some(_) => {}
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// A stack: a list of layers, or one block call or layer standing for a list.
    pub(super) fn stack(&mut self, expr: &Expr, env: &Env, path: &str) -> Option<Val> {
        let mut out = Vec::new();
        let ok = match &expr.node {
            ExprKind::Ref(n) if n == "identity" => true,
            ExprKind::List(items) => {
                let mut ok = true;
                for item in items {
                    ok &= self.stack_item(item, env, path, &mut out);
                }
                ok
            }
            _ => self.stack_item(expr, env, path, &mut out),
        };
        ok.then_some(Val::List(out))
    }

    fn too_many(&mut self, span: Span) -> bool {
        self.report(
            Diagnostic::error(
                Code::Layer,
                format!("the stack unrolls to more than {MAX_LAYERS} layers"),
            )
            .at(span, "too many layers")
            .help("lower the `repeat` counts"),
        );
        false
    }

    /// One item of a stack, appended to `out`: false when it was reported as wrong.
    fn stack_item(&mut self, item: &Expr, env: &Env, path: &str, out: &mut Vec<Val>) -> bool {
        if out.len() > MAX_LAYERS {
            return self.too_many(item.span);
        }
        let mut item = item.clone();
        if let Some(frame) = self.scope.last() {
            substitute(&mut item, frame);
        }
        match &item.node {
            ExprKind::Ref(name) => {
                if let Some(kind) = schema::kind(Category::Layer, name) {
                    return self.layer(kind, Vec::new(), env, path, item.span, out);
                }
                if self.is_block(name) {
                    let ident = Spanned::new(name.clone(), item.span);
                    return self.block_call(&ident, &[], env, out);
                }
                self.not_a_layer(name, item.span)
            }
            ExprKind::Call { name, args } => {
                if name.node == "repeat" {
                    return self.repeat(args, item.span, env, path, out);
                }
                if let Some(kind) = schema::kind(Category::Layer, &name.node) {
                    if let Some(a) = args.iter().find(|a| has_sweep(&a.value)) {
                        self.report(
                            Diagnostic::error(
                                Code::SweepMisplaced,
                                "a sweep cannot stand inside a stack",
                            )
                            .at(a.value.span, "swept here")
                            .help("sweep a parameter of the declaration instead: `width = sweep(16, 32)` and `conv(width, 3)`"),
                        );
                        return false;
                    }
                    let Some(fields) = self.call_fields(kind, args) else {
                        return false;
                    };
                    return self.layer(kind, fields, env, path, item.span, out);
                }
                if self.is_block(&name.node) {
                    return self.block_call(name, args, env, out);
                }
                self.not_a_layer(&name.node, name.span)
            }
            ExprKind::Object { kind, block } => {
                let Some(k) = schema::kind(Category::Layer, &kind.node) else {
                    return self.not_a_layer(&kind.node, kind.span);
                };
                let mut d = std::mem::take(&mut self.diags);
                let fields = super::block_fields(block, false, &mut d);
                self.diags = d;
                self.layer(k, fields, env, path, item.span, out)
            }
            ExprKind::List(items) => {
                let mut ok = true;
                for i in items {
                    ok &= self.stack_item(i, env, path, out);
                }
                ok
            }
            _ => {
                self.report(
                    Diagnostic::error(
                        Code::Layer,
                        format!(
                            "{} is not a layer",
                            match &item.node {
                                ExprKind::Number { .. } => "a number",
                                ExprKind::Str(_) => "a string",
                                _ => "this expression",
                            }
                        ),
                    )
                    .at(item.span, "not a layer")
                    .help("a stack lists layers such as `linear(64)`, `relu`, `conv(16, 3)`, `repeat(2, [...])` or `layers` declarations"),
                );
                false
            }
        }
    }

    fn is_block(&self, name: &str) -> bool {
        self.table
            .decls
            .get(name)
            .is_some_and(|d| super::category_of(d.kind.node) == Category::Model)
    }

    fn not_a_layer(&mut self, name: &str, span: Span) -> bool {
        let frame: Vec<String> = self
            .scope
            .last()
            .map(|f| f.iter().map(|(n, ..)| n.clone()).collect())
            .unwrap_or_default();
        let mut candidates: Vec<&str> = schema::kinds(Category::Layer).map(|k| k.name).collect();
        candidates.push("repeat");
        candidates.extend(self.table.names_of(Category::Model));
        let msg = if frame.iter().any(|p| p == name) {
            format!("`{name}` is a parameter (a number), not a layer")
        } else {
            format!("unknown layer `{name}`")
        };
        self.report(
            Diagnostic::error(Code::UnknownName, msg)
                .at(span, "not a layer")
                .help(suggest::help(
                    name,
                    "layer kinds and `layers` declarations",
                    candidates,
                )),
        );
        false
    }

    /// A layer of a built-in kind.
    fn layer(
        &mut self,
        kind: &'static schema::KindSpec,
        fields: Vec<FieldSrc>,
        env: &Env,
        path: &str,
        span: Span,
        out: &mut Vec<Val>,
    ) -> bool {
        match self.object(kind, fields, None, path, env, span) {
            Some(o) => {
                out.push(Val::Obj(Arc::new(o)));
                true
            }
            None => false,
        }
    }

    /// `repeat(n, BODY)`: BODY's layers n times.
    fn repeat(
        &mut self,
        args: &[Arg],
        span: Span,
        env: &Env,
        path: &str,
        out: &mut Vec<Val>,
    ) -> bool {
        let usage = "write `repeat(n, [layers...])` or `repeat(n, block)`";
        let (n, body) = match args {
            [n, body]
                if n.name.as_ref().is_none_or(|x| x.node == "n")
                    && body.name.as_ref().is_none_or(|x| x.node == "body") =>
            {
                (&n.value, &body.value)
            }
            _ => {
                self.report(
                    Diagnostic::error(Code::Arity, "`repeat` takes a count and a body")
                        .at(span, "here")
                        .help(usage),
                );
                return false;
            }
        };
        if let Some((name, at)) = first_name(n) {
            let name = name.to_string();
            return self.unknown_number(&name, at);
        }
        let Some(count) = self.number(n, env) else {
            return false;
        };
        if !is_whole(count) || count < 0.0 {
            self.report(
                Diagnostic::error(
                    Code::Range,
                    format!("`repeat` count {count} is not a whole number ≥ 0"),
                )
                .at(n.span, "not a count")
                .help(usage),
            );
            return false;
        }
        let mut once = Vec::new();
        let ok = match &body.node {
            ExprKind::List(items) => {
                let mut ok = true;
                for item in items {
                    ok &= self.stack_item(item, env, path, &mut once);
                }
                ok
            }
            _ => self.stack_item(body, env, path, &mut once),
        };
        if !ok {
            return false;
        }
        if (out.len() + once.len() * count as usize) > MAX_LAYERS
            || (count > MAX_LAYERS as f64 && !once.is_empty())
        {
            return self.too_many(span);
        }
        for _ in 0..count as usize {
            out.extend(once.iter().cloned());
        }
        true
    }

    /// An unknown name inside a layer's numeric argument.
    pub(super) fn unknown_number(&mut self, name: &str, span: Span) -> bool {
        let mut candidates: Vec<String> = self
            .scope
            .last()
            .map(|f| f.iter().map(|(n, ..)| n.clone()).collect())
            .unwrap_or_default();
        candidates.push("classes".into());
        candidates.push("vocab".into());
        self.report(
            Diagnostic::error(
                Code::UnknownName,
                format!("unknown name `{name}` in a layer's argument"),
            )
            .at(span, "not a parameter")
            .help(suggest::help(
                name,
                "parameters of the declaration",
                candidates.iter().map(String::as_str),
            )),
        );
        false
    }

    /// A `layers` declaration used inside a stack, with named overrides of its parameters:
    /// its layers spliced into `out`.
    fn block_call(&mut self, name: &Ident, args: &[Arg], env: &Env, out: &mut Vec<Val>) -> bool {
        if let Some(at) = self.blocks.iter().position(|b| *b == name.node) {
            let mut chain = self.blocks[at..].to_vec();
            chain.push(name.node.clone());
            self.report(
                Diagnostic::error(
                    Code::Cycle,
                    format!("`{}` contains itself: {}", name.node, chain.join(" -> ")),
                )
                .at(name.span, "used inside itself here")
                .help("a block may use other blocks, but none of them may lead back to it"),
            );
            return false;
        }
        let (kind, mut fields) = {
            let mut d = std::mem::take(&mut self.diags);
            let m = self.table.merged(&name.node, &mut d);
            self.diags = d;
            match m {
                Some(m) => m,
                None => return false,
            }
        };
        if !takes_parameters(kind) {
            self.report(
                Diagnostic::error(
                    Code::Layer,
                    format!(
                        "`{}` is a `{}` model; only `layers` models can be used inside a stack",
                        name.node, kind.name
                    ),
                )
                .at(name.span, "not a `layers` model")
                .help(format!(
                    "`ahtsgd show {}` prints it as a `layers` model you can declare and use",
                    kind.name
                ))
                .related(self.table.decls[&name.node].name.span, "declared here"),
            );
            return false;
        }
        for (p, value) in self
            .overrides
            .get(&name.node)
            .into_iter()
            .flatten()
            .chain(self.exp_overrides.get(&name.node).into_iter().flatten())
            .cloned()
            .collect::<Vec<_>>()
        {
            apply_override(&mut fields, &p, value);
        }
        let params: Vec<String> = fields
            .iter()
            .filter(|f| kind.field(&f.name.node).is_none())
            .map(|f| f.name.node.clone())
            .collect();
        let mut ok = true;
        for arg in args {
            let Some(arg_name) = &arg.name else {
                self.report(
                    Diagnostic::error(
                        Code::Layer,
                        format!("a block call takes named arguments only: `{}`", name.node),
                    )
                    .at(arg.value.span, "positional")
                    .help(format!(
                        "name the parameter: `{}({} = ...)`",
                        name.node,
                        params.first().map_or("width", String::as_str)
                    )),
                );
                ok = false;
                continue;
            };
            if !params.contains(&arg_name.node) {
                self.report(
                    Diagnostic::error(
                        Code::UnknownField,
                        format!("`{}` has no parameter `{}`", name.node, arg_name.node),
                    )
                    .at(arg_name.span, "unknown parameter")
                    .help(suggest::help(
                        &arg_name.node,
                        &format!("parameters of `{}`", name.node),
                        params.iter().map(String::as_str),
                    )),
                );
                ok = false;
                continue;
            }
            apply_override(
                &mut fields,
                std::slice::from_ref(arg_name),
                arg.value.clone(),
            );
        }
        if !ok {
            return false;
        }
        let explicit = |f: &str| fields.iter().any(|x| x.name.node == f);
        let (init_set, bias_set) = (explicit("init"), explicit("bias_init"));
        if let Some(l) = fields.iter().find(|f| f.name.node == "layers") {
            self.report(
                Diagnostic::error(
                    Code::Layer,
                    format!("`{}` sets `layers` overrides, which apply to a whole model", name.node),
                )
                .at(l.name.span, "used as a block")
                .help("move the overrides to the model that uses this block (its layers are named there)"),
            );
            return false;
        }
        self.blocks.push(name.node.clone());
        let decl_span = self.table.decls[&name.node].name.span;
        let obj = self.object(
            kind,
            fields,
            Some(name.node.clone()),
            &name.node,
            env,
            decl_span,
        );
        self.blocks.pop();
        let Some(obj) = obj else { return false };
        let Val::List(items) = obj.get("stack") else {
            return false;
        };
        for item in items {
            let Val::Obj(layer) = item else { continue };
            let mut layer = (**layer).clone();
            // the block's own initialisation is inherited by its layers that set none
            for (field, set) in [("init", init_set), ("bias_init", bias_set)] {
                if !set {
                    continue;
                }
                let inherited = obj.get(field).clone();
                if let Some((_, v)) = layer.fields.iter_mut().find(|(n, _)| *n == field)
                    && matches!(v, Val::Obj(o) if o.kind == "inherit")
                {
                    *v = inherited;
                }
            }
            out.push(Val::Obj(Arc::new(layer)));
        }
        if out.len() > MAX_LAYERS {
            return self.too_many(name.span);
        }
        true
    }

    /// A kernel size: `3` or `[3, 5]`.
    pub(super) fn kernel(&mut self, expr: &Expr, env: &Env, path: &str) -> Option<Val> {
        let whole = Ty::Int {
            min: 1,
            max: 1 << 16,
        };
        match &expr.node {
            ExprKind::List(items) if items.len() == 2 => {
                let a = self.convert(&items[0], whole, Vec::new(), env, path)?;
                let b = self.convert(&items[1], whole, Vec::new(), env, path)?;
                Some(Val::List(vec![a, b]))
            }
            ExprKind::List(_) => {
                self.report(
                    Diagnostic::error(Code::Type, "a kernel is one size or two: `3` or `[3, 5]`")
                        .at(expr.span, "expected [height, width]")
                        .help("write `kernel = 3` for a square kernel, `[kh, kw]` otherwise"),
                );
                None
            }
            _ => self.numeric(expr, whole, env, path),
        }
    }

    /// A width: a whole number, `classes`, or `vocab` (a token dataset's vocabulary).
    pub(super) fn width(&mut self, expr: &Expr, env: &Env, path: &str) -> Option<Val> {
        if let ExprKind::Ref(n) = &expr.node
            && (n == "classes" || n == "vocab")
        {
            return Some(Val::Name(n.clone()));
        }
        self.numeric(
            expr,
            Ty::Int {
                min: 1,
                max: 1 << 24,
            },
            env,
            path,
        )
    }

    /// A number inside a stack, where a leftover bare name is an unknown parameter.
    pub(super) fn numeric(&mut self, expr: &Expr, ty: Ty, env: &Env, path: &str) -> Option<Val> {
        if !self.scope.is_empty()
            && let Some((name, span)) = first_name(expr)
            && name != "lr"
            && !SIGNALS.contains(&name)
        {
            let name = name.to_string();
            self.unknown_number(&name, span);
            return None;
        }
        self.convert(expr, ty, Vec::new(), env, path)
    }
}

/// The layer objects of a resolved stack value.
pub fn layers(v: &Val) -> Vec<&Obj> {
    match v {
        Val::List(items) => items
            .iter()
            .filter_map(|i| match i {
                Val::Obj(o) => Some(&**o),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}
