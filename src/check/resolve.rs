//! Resolution: declarations + overrides + defaults -> typed objects, one trial at a time.
//!
//! A [`Resolver`] walks an experiment and everything it references. Each sweep it meets is a
//! *site* named by its path (`aht.lr`, `zero_init.seed`); the choices made so far pick one
//! alternative per site, and the first unchosen site is reported back so the caller can branch
//! on it. Expansion is therefore a depth-first walk whose order follows the source, never a
//! hash map's.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::Arc;

use crate::diagnostic::{Code, Diagnostic, Diagnostics};
use crate::plan::{Obj, SignalExpr, Val};
use crate::source::{SourceMap, Span, Spanned};
use crate::syntax::ast::{Arg, Block, Decl, DeclBody, DeclKind, Entry, Expr, ExprKind, Ident};

use super::eval::{self, Env, is_whole};
use super::schema::{self, Category, FieldSpec, KindSpec, SWEEPS, Ty};
use super::suggest;

mod stack;
pub use stack::{MAX_LAYERS, layers as stack_layers};

/// A field as written, with deeper overrides (`a.b = ..`) attached.
#[derive(Clone, Debug)]
pub struct FieldSrc {
    pub name: Ident,
    pub value: Option<Expr>,
    pub nested: Vec<(Vec<Ident>, Expr)>,
}

/// Override paths below a declaration: (field path, value).
pub type Overrides = Vec<(Vec<Ident>, Expr)>;

pub fn category_of(kind: DeclKind) -> Category {
    match kind {
        DeclKind::Dataset => Category::Dataset,
        DeclKind::Model => Category::Model,
        DeclKind::Schedule => Category::Schedule,
        DeclKind::Optimizer => Category::Optimizer,
        DeclKind::Experiment => Category::Experiment,
    }
}

/// A declaration's kind and fields after its `with` chain.
pub type Merged = (&'static KindSpec, Vec<FieldSrc>);

/// The declarations of a recipe, by name.
pub struct Table<'m> {
    pub decls: BTreeMap<String, &'m Decl>,
    /// Declarations after following `with` chains: kind and merged fields.
    merged: RefCell<HashMap<String, Option<Merged>>>,
}

impl<'m> Table<'m> {
    pub fn new(decls: BTreeMap<String, &'m Decl>) -> Self {
        Table {
            decls,
            merged: RefCell::default(),
        }
    }

    /// "`name` is not declared", with the closest declaration as a hint.
    pub fn undeclared(&self, code: Code, name: &Ident, message: String) -> Diagnostic {
        Diagnostic::error(code, message)
            .at(name.span, "not declared")
            .help(suggest::help(
                &name.node,
                "declarations",
                self.decls.keys().map(String::as_str),
            ))
    }

    pub fn names_of(&self, cat: Category) -> Vec<&str> {
        self.decls
            .iter()
            .filter(|(_, d)| category_of(d.kind.node) == cat)
            .map(|(n, _)| n.as_str())
            .collect()
    }

    /// The kind and the fields of a declaration after its `with` chain.
    pub fn merged(
        &self,
        name: &str,
        diags: &mut Diagnostics,
    ) -> Option<(&'static KindSpec, Vec<FieldSrc>)> {
        if let Some(m) = self.merged.borrow().get(name) {
            return m.clone();
        }
        let m = self.merge(name, &mut Vec::new(), diags);
        self.merged.borrow_mut().insert(name.to_string(), m.clone());
        m
    }

    fn merge(
        &self,
        name: &str,
        chain: &mut Vec<String>,
        diags: &mut Diagnostics,
    ) -> Option<(&'static KindSpec, Vec<FieldSrc>)> {
        let decl = *self.decls.get(name)?;
        let cat = category_of(decl.kind.node);
        chain.push(name.to_string());
        let out = match &decl.body {
            DeclBody::Block(block) => {
                if cat != Category::Experiment {
                    diags.push(
                        Diagnostic::error(
                            Code::MissingField,
                            format!("{} `{name}` needs a kind", cat.noun()),
                        )
                        .at(decl.name.span, "no kind given")
                        .help(format!(
                            "write `{} {name} = KIND {{ ... }}`; kinds: {}",
                            decl.kind.node.keyword(),
                            kind_list(cat)
                        )),
                    );
                    None
                } else {
                    Some((schema::experiment(), block_fields(block, true, diags)))
                }
            }
            DeclBody::Construct { kind, block } => {
                if cat == Category::Experiment {
                    diags.push(
                        Diagnostic::error(Code::Syntax, "experiments have no kind")
                            .at(kind.span, "not allowed here")
                            .help(format!("write `experiment {name} {{ ... }}`, or `experiment {name} = other with {{ ... }}` to extend one")),
                    );
                    None
                } else {
                    match schema::kind(cat, &kind.node) {
                        Some(k) => Some((
                            k,
                            block
                                .as_ref()
                                .map(|b| block_fields(b, false, diags))
                                .unwrap_or_default(),
                        )),
                        None => {
                            let mut d = Diagnostic::error(
                                Code::UnknownKind,
                                format!("unknown {} kind `{}`", cat.noun(), kind.node),
                            )
                            .at(kind.span, "no such kind");
                            if let Some(other) = self
                                .decls
                                .get(&kind.node)
                                .filter(|o| category_of(o.kind.node) == cat)
                            {
                                d = d
                                    .help(format!("`{}` is a declaration: to extend it write `= {} with {{ ... }}`", kind.node, kind.node))
                                    .related(other.name.span, "declared here");
                            } else {
                                d = d.help(suggest::help(
                                    &kind.node,
                                    &format!("{} kinds", cat.noun()),
                                    schema::kinds(cat).map(|k| k.name),
                                ));
                            }
                            diags.push(d);
                            None
                        }
                    }
                }
            }
            DeclBody::Derive { base, block } => {
                if chain.contains(&base.node) {
                    diags.push(
                        Diagnostic::error(Code::Cycle, format!("`{name}` extends itself: {} -> {}", chain.join(" -> "), base.node))
                            .at(base.span, "cycle closes here")
                            .help("a declaration may extend another only if that one does not lead back to it"),
                    );
                    None
                } else {
                    match self.decls.get(&base.node) {
                        None => {
                            diags.push(
                                Diagnostic::error(
                                    Code::UnknownName,
                                    format!(
                                        "`{name}` extends `{}`, which is not declared",
                                        base.node
                                    ),
                                )
                                .at(base.span, "not declared")
                                .help(suggest::help(
                                    &base.node,
                                    &format!("{} declarations", cat.noun()),
                                    self.names_of(cat),
                                )),
                            );
                            None
                        }
                        Some(b) if category_of(b.kind.node) != cat => {
                            diags.push(
                                Diagnostic::error(
                                    Code::DeriveKind,
                                    format!(
                                        "a {} cannot extend the {} `{}`",
                                        cat.noun(),
                                        category_of(b.kind.node).noun(),
                                        base.node
                                    ),
                                )
                                .at(base.span, format!("this is a {}", b.kind.node.keyword()))
                                .related(b.name.span, "declared here")
                                .help(suggest::help(
                                    &base.node,
                                    &format!("{} declarations", cat.noun()),
                                    self.names_of(cat),
                                )),
                            );
                            None
                        }
                        Some(_) => self.merge(&base.node, chain, diags).map(|(k, mut fields)| {
                            for f in block_fields(block, cat == Category::Experiment, diags) {
                                apply_field(&mut fields, f);
                            }
                            (k, fields)
                        }),
                    }
                }
            }
        };
        chain.pop();
        out
    }
}

fn kind_list(cat: Category) -> String {
    schema::kinds(cat)
        .map(|k| format!("`{}`", k.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Replaces or adds a field (overrides from `with`).
fn apply_field(fields: &mut Vec<FieldSrc>, f: FieldSrc) {
    match fields.iter_mut().find(|x| x.name.node == f.name.node) {
        Some(existing) => {
            if f.value.is_some() {
                existing.value = f.value;
                existing.name = f.name;
                existing.nested.clear();
            }
            existing.nested.extend(f.nested);
        }
        None => fields.push(f),
    }
}

/// Applies an override path to a list of fields.
pub fn apply_override(fields: &mut Vec<FieldSrc>, path: &[Ident], value: Expr) {
    let (first, rest) = path.split_first().expect("paths are non-empty");
    if rest.is_empty() {
        apply_field(
            fields,
            FieldSrc {
                name: first.clone(),
                value: Some(value),
                nested: Vec::new(),
            },
        );
    } else {
        apply_field(
            fields,
            FieldSrc {
                name: first.clone(),
                value: None,
                nested: vec![(rest.to_vec(), value)],
            },
        );
    }
}

/// The plain fields of a block (single-name paths); duplicates are reported.
/// Dotted paths, `zip` and `random` are only allowed in experiments, which read them separately.
fn block_fields(block: &Block, experiment: bool, diags: &mut Diagnostics) -> Vec<FieldSrc> {
    let mut out: Vec<FieldSrc> = Vec::new();
    for entry in &block.entries {
        match entry {
            Entry::Field(f) if f.path.parts.len() == 1 => {
                let name = &f.path.parts[0];
                if let Some(prev) = out.iter().find(|x| x.name.node == name.node) {
                    diags.push(
                        Diagnostic::error(
                            Code::DuplicateField,
                            format!("field `{}` is given twice", name.node),
                        )
                        .at(name.span, "given again here")
                        .related(prev.name.span, "first given here")
                        .help("remove one of them"),
                    );
                    continue;
                }
                out.push(FieldSrc {
                    name: name.clone(),
                    value: Some(f.value.clone()),
                    nested: Vec::new(),
                });
            }
            Entry::Field(f) if !experiment => diags.push(
                Diagnostic::error(
                    Code::Path,
                    format!(
                        "`{}`: dotted paths are only allowed in experiments",
                        f.path.dotted()
                    ),
                )
                .at(f.path.span, "dotted path")
                .help(format!(
                    "set the nested field inside its block: `{} = kind {{ {} = ... }}`",
                    f.path.parts[0].node, f.path.parts[1].node
                )),
            ),
            Entry::Zip { span, .. } | Entry::Random { span, .. } if !experiment => diags.push(
                Diagnostic::error(
                    Code::Path,
                    "`zip` and `random` are only allowed in experiments",
                )
                .at(*span, "not in an experiment")
                .help("move this into the experiment that sweeps these fields"),
            ),
            _ => {}
        }
    }
    out
}

/// A sweep site's alternatives and the group (zip or random) it belongs to.
#[derive(Clone, Debug)]
pub struct Injected {
    pub alts: Rc<Vec<Expr>>,
    pub group: usize,
}

/// A resolved declaration and what it depended on.
struct Memo {
    obj: Arc<Obj>,
    /// The sites it read and the choices they had.
    sites: Vec<(String, (usize, usize))>,
    /// What it added to `picked`.
    picked: Vec<(String, String)>,
}

/// Where the walk stands with one trial.
pub struct Resolver<'t, 'm> {
    pub table: &'t Table<'m>,
    pub sources: &'t mut SourceMap,
    pub diags: Diagnostics,
    /// `--set` overrides of declarations, by declaration name.
    pub overrides: BTreeMap<String, Overrides>,
    /// Overrides written inside the current experiment (`aht.lr = ...`).
    pub exp_overrides: BTreeMap<String, Overrides>,
    /// Random-search sites of the current experiment.
    pub injected: BTreeMap<String, Injected>,
    /// Zip groups: paths and the span of the `zip`.
    pub groups: Vec<(Vec<String>, Span)>,
    /// Chosen alternatives: site -> (index, length of the group's sweep).
    pub choices: BTreeMap<String, (usize, usize)>,
    /// The first site met that has no choice yet: (path, number of alternatives).
    pub pending: Option<(String, usize)>,
    /// Values picked at sites in this walk, in order.
    pub picked: Vec<(String, String)>,
    /// Sites whose every alternative has been checked.
    pub checked: BTreeSet<String>,
    /// Every site met, with its number of alternatives.
    pub sites: BTreeMap<String, usize>,
    defaults: HashMap<&'static str, Option<Expr>>,
    /// Resolved declarations by (name, learning rate bits), with the sweep choices they read.
    memo: HashMap<(String, Option<u64>), Vec<Memo>>,
    /// Sweep sites read in this walk, in order.
    pub read_sites: Vec<String>,
    /// Converted defaults: (field spec address, learning rate bits, span) -> value.
    default_vals: HashMap<(usize, Option<u64>, Span), Val>,
    /// Alternatives of each sweep met, by the sweep's span (they depend on nothing else).
    alternatives: HashMap<Span, Rc<Vec<Expr>>>,
    /// When set, problems are not reported (used while checking alternatives twice).
    quiet: bool,
    /// The parameters of the `layers` declarations being resolved, innermost last.
    scope: Vec<Vec<(String, f64, bool)>>,
    /// The block calls being resolved, outermost first (to name a cycle).
    blocks: Vec<String>,
    /// The recipe's language version: some defaults depend on it.
    pub version: u64,
}

impl<'t, 'm> Resolver<'t, 'm> {
    pub fn new(table: &'t Table<'m>, sources: &'t mut SourceMap) -> Self {
        Resolver {
            table,
            sources,
            diags: Diagnostics::default(),
            overrides: BTreeMap::new(),
            exp_overrides: BTreeMap::new(),
            injected: BTreeMap::new(),
            groups: Vec::new(),
            choices: BTreeMap::new(),
            pending: None,
            picked: Vec::new(),
            checked: BTreeSet::new(),
            sites: BTreeMap::new(),
            defaults: HashMap::new(),
            memo: HashMap::new(),
            read_sites: Vec::new(),
            default_vals: HashMap::new(),
            alternatives: HashMap::new(),
            quiet: false,
            scope: Vec::new(),
            blocks: Vec::new(),
            version: 1,
        }
    }

    fn report(&mut self, d: Diagnostic) {
        if !self.quiet && !d.consequence {
            self.diags.push(d);
        }
    }

    /// A field's default in this recipe's language version.
    fn default_text(&self, kind: &KindSpec, spec: &FieldSpec) -> Option<&'static str> {
        schema::VERSIONED_DEFAULTS
            .iter()
            .find(|(c, k, f, since, _)| {
                *c == kind.category && *k == kind.name && *f == spec.name && self.version < *since
            })
            .map(|&(.., old)| old)
            .or(spec.default)
    }

    fn default_expr(&mut self, text: &'static str) -> Option<Expr> {
        if let Some(e) = self.defaults.get(text) {
            return e.clone();
        }
        let id = self.sources.add(format!("<default `{text}`>"), None, text);
        let parsed = crate::syntax::parse_value(id, text).ok();
        self.defaults.insert(text, parsed.clone());
        parsed
    }

    /// Resolves a declaration by name (with `--set` and experiment overrides applied),
    /// reusing an earlier result when the sweep sites it read have the same choices now.
    pub fn decl(&mut self, name: &str, env: &Env) -> Option<Arc<Obj>> {
        let key = (name.to_string(), env.lr.map(f64::to_bits));
        if let Some(entries) = self.memo.get(&key) {
            let hit = entries
                .iter()
                .find(|m| m.sites.iter().all(|(p, c)| self.choices.get(p) == Some(c)));
            if let Some(m) = hit {
                let (obj, picked) = (m.obj.clone(), m.picked.clone());
                self.read_sites
                    .extend(m.sites.iter().map(|(p, _)| p.clone()));
                self.picked.extend(picked);
                return Some(obj);
            }
        }
        let (read_from, picked_from, diags_before) =
            (self.read_sites.len(), self.picked.len(), self.diags.0.len());
        let had_pending = self.pending.is_some();
        let obj = Arc::new(self.decl_fresh(name, env)?);
        // a result that left a site unchosen or reported a problem is not reusable
        if !had_pending && self.pending.is_none() && self.diags.0.len() == diags_before {
            let sites = self.read_sites[read_from..]
                .iter()
                .filter_map(|p| self.choices.get(p).map(|c| (p.clone(), *c)))
                .collect();
            let picked = self.picked[picked_from..].to_vec();
            self.memo.entry(key).or_default().push(Memo {
                obj: obj.clone(),
                sites,
                picked,
            });
        }
        Some(obj)
    }

    /// Forgets reusable results (when the overrides in force change).
    pub fn forget(&mut self) {
        self.memo.clear();
        self.alternatives.clear();
    }

    /// Resolves a declaration without looking at earlier results.
    fn decl_fresh(&mut self, name: &str, env: &Env) -> Option<Obj> {
        let (kind, mut fields) = {
            let mut d = std::mem::take(&mut self.diags);
            let m = self.table.merged(name, &mut d);
            self.diags = d;
            m?
        };
        for (path, value) in self
            .overrides
            .get(name)
            .into_iter()
            .flatten()
            .chain(self.exp_overrides.get(name).into_iter().flatten())
        {
            apply_override(&mut fields, path, value.clone());
        }
        let decl = self.table.decls[name];
        let span = decl.name.span;
        self.object(kind, fields, Some(name.to_string()), name, env, span)
    }

    /// Builds an object of a kind from its fields, filling defaults.
    pub fn object(
        &mut self,
        kind: &'static KindSpec,
        fields: Vec<FieldSrc>,
        decl: Option<String>,
        prefix: &str,
        env: &Env,
        span: Span,
    ) -> Option<Obj> {
        let mut ok = true;
        let parameters = stack::takes_parameters(kind);
        for f in &fields {
            if kind.field(&f.name.node).is_none() && !parameters {
                ok = false;
                let where_ = if kind.category == Category::Experiment {
                    "experiments".to_string()
                } else {
                    format!("`{}`", kind.name)
                };
                self.report(
                    Diagnostic::error(
                        Code::UnknownField,
                        format!(
                            "{where_} {} no field `{}`",
                            if kind.category == Category::Experiment {
                                "have"
                            } else {
                                "has"
                            },
                            f.name.node
                        ),
                    )
                    .at(f.name.span, "unknown field")
                    .help(
                        if kind.category == Category::Dataset
                            && schema::COMMON_DATA.iter().any(|c| c.name == f.name.node)
                        {
                            format!(
                                "`{}` is an image setting; `{}` makes token ids, which are not normalised, augmented or relabelled: remove it",
                                f.name.node, kind.name
                            )
                        } else {
                            suggest::help(
                                &f.name.node,
                                &format!("fields of {where_}"),
                                kind.fields.iter().map(|x| x.name),
                            )
                        },
                    ),
                );
            }
        }
        let mut env = *env;
        let mut order: Vec<&'static FieldSpec> = kind.fields.iter().collect();
        // the learning rate first: the rest of an optimizer (and its α schedule) may use it
        if kind.category == Category::Optimizer {
            order.sort_by_key(|f| f.name != "lr");
        }
        let mut values: Vec<(&'static str, Val)> = Vec::with_capacity(order.len());
        if parameters {
            // older recipes may name other models `conv`; a `layers` model is used by name
            // inside stacks, where that name is the layer kind's
            if let Some(name) = &decl
                && let Some(why) = stack::reserved(name)
            {
                self.report(
                    Diagnostic::error(
                        Code::Layer,
                        format!("a `layers` model cannot be named `{name}`: {why}"),
                    )
                    .at(self.table.decls.get(name.as_str()).map_or(span, |d| d.name.span), "reserved name")
                    .help("blocks are used by name inside stacks, so rename it (`block`, `my_relu`, ...)"),
                );
                return None;
            }
            match self.parameters(kind, &fields, prefix, &env) {
                Some(frame) => self.scope.push(frame),
                None => return None,
            }
        }
        ok &= self.object_fields(
            kind,
            &fields,
            order,
            &decl,
            prefix,
            &mut env,
            span,
            &mut values,
        );
        if parameters {
            self.scope.pop();
        }
        if !ok {
            return None;
        }
        values.sort_by_key(|(n, _)| kind.fields.iter().position(|f| f.name == *n));
        if kind.category == Category::Schedule && kind.name == "adaptive" {
            self.adaptive_map(&values)?;
        }
        if kind.category == Category::Optimizer && kind.name == "ahtsgd" {
            self.adam_base(&values)?;
        }
        Some(Obj {
            category: kind.category,
            kind: kind.name,
            decl,
            fields: values,
            span,
        })
    }

    /// The fields of an object in `order`, into `values`; false when one had a problem.
    #[allow(clippy::too_many_arguments)]
    fn object_fields(
        &mut self,
        kind: &'static KindSpec,
        fields: &[FieldSrc],
        order: Vec<&'static FieldSpec>,
        decl: &Option<String>,
        prefix: &str,
        env: &mut Env,
        span: Span,
        values: &mut Vec<(&'static str, Val)>,
    ) -> bool {
        let mut ok = true;
        let left_out = match self.one_of(kind, fields, prefix, span) {
            Ok(f) => f,
            Err(()) => {
                ok = false;
                None
            }
        };
        for spec in order {
            if left_out == Some(spec.name) {
                continue;
            }
            let src = fields.iter().find(|f| f.name.node == spec.name);
            let nested = src.map(|s| s.nested.clone()).unwrap_or_default();
            let path = format!("{prefix}.{}", spec.name);
            // defaults hold no sweeps: their value depends only on the kind, the learning rate
            // and where they are reported, so each is converted once; but random search may
            // draw a field left at its default, or one inside a defaulted setting, and such a
            // value is the trial's own
            let drawn = self.injected.keys().any(|p| {
                p.strip_prefix(path.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
            });
            let default_key = (src.is_none() && nested.is_empty() && !drawn).then(|| {
                (
                    std::ptr::from_ref(spec) as usize,
                    env.lr.map(f64::to_bits),
                    span,
                )
            });
            if let Some(v) = default_key.and_then(|k| self.default_vals.get(&k)) {
                values.push((spec.name, v.clone()));
                continue;
            }
            let default = self.default_text(kind, spec);
            // a default that names another field of the kind takes that field's value
            if src.is_none()
                && let Some(text) = default
                && let Some((_, v)) = values.iter().find(|(n, _)| *n == text)
            {
                values.push((spec.name, v.clone()));
                continue;
            }
            let expr = match src.and_then(|s| s.value.clone()) {
                Some(e) => e,
                None => match default {
                    Some(text) => match self.default_expr(text) {
                        Some(mut e) => {
                            respan(&mut e, span);
                            e
                        }
                        None => continue,
                    },
                    // a downloaded dataset without a path goes to the cache folder (the
                    // empty path stands for it until the data layer resolves it)
                    None if spec.name == "path"
                        && values
                            .iter()
                            .any(|(n, v)| *n == "download" && *v == Val::Bool(true)) =>
                    {
                        values.push((spec.name, Val::Str(String::new())));
                        continue;
                    }
                    None => {
                        ok = false;
                        self.report(
                            Diagnostic::error(
                                Code::MissingField,
                                format!(
                                    "{} `{}` needs `{}`",
                                    kind.category.noun(),
                                    decl.as_deref().unwrap_or(kind.name),
                                    spec.name
                                ),
                            )
                            .at(span, format!("`{}` missing", spec.name))
                            .help(format!("add `{} = ...`: {}", spec.name, spec.doc)),
                        );
                        env.lr_missing |= spec.name == "lr";
                        continue;
                    }
                },
            };
            match self.field(&path, &expr, spec, nested, env) {
                Some(v) => {
                    if spec.name == "lr" {
                        env.lr = v.as_f64();
                    }
                    if let Some(k) = default_key {
                        self.default_vals.insert(k, v.clone());
                    }
                    values.push((spec.name, v));
                }
                None => {
                    env.lr_missing |= spec.name == "lr";
                    ok = false;
                }
            }
        }
        ok
    }

    /// An Adam base has its own momentum (β₁): heavy-ball momentum or Nesterov's on top of it
    /// is refused rather than silently ignored.
    fn adam_base(&mut self, values: &[(&'static str, Val)]) -> Option<()> {
        let get = |name: &str| values.iter().find(|(n, _)| *n == name).map(|(_, v)| v);
        let Some(Val::Obj(base)) = get("base") else {
            return Some(());
        };
        if base.kind != "adam" {
            return Some(());
        }
        let momentum = get("momentum").and_then(Val::as_f64).unwrap_or(0.0);
        let nesterov = matches!(get("nesterov"), Some(Val::Bool(true)));
        if momentum == 0.0 && !nesterov {
            return Some(());
        }
        let field = if momentum != 0.0 {
            "momentum"
        } else {
            "nesterov"
        };
        self.report(
            Diagnostic::error(
                Code::Conflict,
                format!("`{field}` does not apply with `base = adam`: Adam's first moment is its momentum"),
            )
            .at(base.span, "Adam is the base")
            .help(format!("remove `{field}` and set Adam's `beta1` in `base = adam {{ beta1 = 0.9 }}`, or use `base = sgd`")),
        );
        None
    }

    /// An adaptive schedule's map against its smoothing: `settling` needs per-step smoothing;
    /// `trend` is deprecated.
    fn adaptive_map(&mut self, values: &[(&'static str, Val)]) -> Option<()> {
        let Some(Val::Obj(map)) = values.iter().find(|(n, _)| *n == "map").map(|(_, v)| v) else {
            return Some(());
        };
        let per_estimate = values.iter().any(|(n, _)| *n == "ema");
        match map.kind {
            "settling" if per_estimate => {
                self.report(
                    Diagnostic::error(
                        Code::Conflict,
                        "the `settling` map needs log-sharpness smoothed per training step",
                    )
                    .at(map.span, "measures settling in steps")
                    .help("write `half_life = 100 steps` in this schedule instead of `ema`"),
                );
                None
            }
            "trend" => {
                self.report(
                    Diagnostic::error(
                        Code::Deprecated,
                        "the `trend` map is deprecated: noisy estimates keep its relative change away from 0, so α stays near 1",
                    )
                    .warning()
                    .at(map.span, "trend")
                    .help("write `map = settling` (heavy tails while sharpness moves, α → 2 once it is flat); `trend` keeps its old meaning so this recipe's numbers do not change"),
                );
                Some(())
            }
            _ => Some(()),
        }
    }

    /// For a kind that takes one of two fields (`schema::ONE_OF`), the one it leaves out: the
    /// other when one is written, else the one this language version does not default to.
    /// `Err` when both are written (reported). Old smoothing settings get a warning.
    fn one_of(
        &mut self,
        kind: &'static KindSpec,
        fields: &[FieldSrc],
        prefix: &str,
        span: Span,
    ) -> Result<Option<&'static str>, ()> {
        let Some(&(_, _, newer, older)) = schema::ONE_OF
            .iter()
            .find(|o| o.0 == kind.category && o.1 == kind.name)
        else {
            return Ok(None);
        };
        let written = |name: &str| {
            let path = format!("{prefix}.{name}");
            fields
                .iter()
                .find(|f| f.name.node == name)
                .map(|f| f.name.span)
                .or_else(|| self.injected.contains_key(&path).then_some(span))
        };
        match (written(newer), written(older)) {
            (Some(a), Some(b)) => {
                self.report(
                    Diagnostic::error(
                        Code::Conflict,
                        format!("`{}` takes `{newer}` or `{older}`, not both", kind.name),
                    )
                    .at(b, format!("`{older}` here"))
                    .related(a, format!("`{newer}` here"))
                    .help(format!("keep `{newer}`: it smooths per training step; `{older}` is kept only for old recipes")),
                );
                Err(())
            }
            (Some(_), None) => Ok(Some(older)),
            (None, Some(at)) => {
                self.report(
                    Diagnostic::error(
                        Code::Deprecated,
                        format!("`{older}` smooths log-sharpness once per estimate and is deprecated"),
                    )
                    .warning()
                    .at(at, "a rate per estimate")
                    .help(format!("write `{newer} = 100 steps` (per training step; a step change is 95% followed after 4.3 half-lives); `{older}` keeps its old meaning so this recipe's numbers do not change")),
                );
                Ok(Some(newer))
            }
            (None, None) if self.version >= 2 => Ok(Some(older)),
            (None, None) => {
                self.report(
                    Diagnostic::error(
                        Code::Deprecated,
                        format!("this `{}` schedule smooths log-sharpness once per estimate (`{older} = 0.05`, the version-1 default)", kind.name),
                    )
                    .warning()
                    .at(span, "smoothed per estimate")
                    .help(format!("its α follows sharpness only after about 20 estimates; write `{newer} = 100 steps`, or `version = 2`, where `{newer}` is the default")),
                );
                Ok(Some(newer))
            }
        }
    }

    /// One field: picks a sweep alternative if the value is a sweep, then converts it.
    fn field(
        &mut self,
        path: &str,
        expr: &Expr,
        spec: &FieldSpec,
        nested: Overrides,
        env: &Env,
    ) -> Option<Val> {
        let alts: Rc<Vec<Expr>> = if let Some(inj) = self.injected.get(path) {
            inj.alts.clone()
        } else if let Some(a) = self.alternatives.get(&expr.span) {
            a.clone()
        } else {
            match sweep_alternatives(expr) {
                None => return self.convert(expr, spec.ty, nested, env, path),
                Some(Ok(a)) => {
                    let a = Rc::new(a);
                    self.alternatives.insert(expr.span, a.clone());
                    a
                }
                Some(Err(d)) => {
                    self.report(d);
                    return None;
                }
            }
        };
        if alts.is_empty() {
            self.report(
                Diagnostic::error(
                    Code::SweepEmpty,
                    format!("the sweep of `{path}` has no values"),
                )
                .at(expr.span, "expands to nothing")
                .help("a range `a..b` stops before b: `0..5` is 0, 1, 2, 3, 4"),
            );
            return None;
        }
        if !self.sites.contains_key(path) {
            self.sites.insert(path.to_string(), alts.len());
        }
        self.read_sites.push(path.to_string());
        if !self.checked.contains(path) {
            self.checked.insert(path.to_string());
            // checking the other alternatives reports their problems, but must not choose the
            // next sweep to branch on, nor count as values picked for this trial
            let saved = (
                self.pending.take(),
                self.picked.len(),
                self.read_sites.len(),
            );
            for alt in alts.iter().skip(1) {
                self.convert(alt, spec.ty, nested.clone(), env, path);
            }
            self.pending = saved.0;
            self.picked.truncate(saved.1);
            self.read_sites.truncate(saved.2);
        }
        let idx = match self.choices.get(path) {
            Some(&(i, n)) => {
                if n != alts.len() {
                    let span = self
                        .groups
                        .iter()
                        .find(|(p, _)| p.iter().any(|x| x == path))
                        .map(|(_, s)| *s)
                        .unwrap_or(expr.span);
                    self.report(
                        Diagnostic::error(Code::ZipLength, format!("zipped sweeps differ in length: `{path}` has {} values, its partner {n}", alts.len()))
                            .at(span, "zipped here")
                            .related(expr.span, "this sweep")
                            .help("zipped sweeps vary together, so they need the same number of values"),
                    );
                    return None;
                }
                i
            }
            None => {
                if self.pending.is_none() {
                    self.pending = Some((path.to_string(), alts.len()));
                }
                0
            }
        };
        let v = self.convert(&alts[idx], spec.ty, nested, env, path)?;
        if self.choices.contains_key(path) {
            self.picked.push((path.to_string(), v.to_source()));
        }
        Some(v)
    }

    /// Converts one (non-sweep) expression to a value of type `ty`.
    pub fn convert(
        &mut self,
        expr: &Expr,
        ty: Ty,
        nested: Overrides,
        env: &Env,
        path: &str,
    ) -> Option<Val> {
        if let ExprKind::Call { name, .. } = &expr.node
            && SWEEPS.contains(&name.node.as_str())
            && !matches!(ty, Ty::Obj(_))
        {
            self.report(eval::sweep_misplaced(expr));
            return None;
        }
        if !nested.is_empty() && !matches!(ty, Ty::Obj(_) | Ty::Alpha) {
            let (p, _) = &nested[0];
            self.report(
                Diagnostic::error(
                    Code::Path,
                    format!(
                        "`{path}` is not a block, so `{}` cannot be set inside it",
                        p[0].node
                    ),
                )
                .at(p[0].span, "no fields here")
                .help(format!("set `{path}` itself")),
            );
            return None;
        }
        let field = path.rsplit('.').next().unwrap_or(path);
        // inside a stack, a bare name left after the parameters were substituted is unknown
        let leftover = match &expr.node {
            ExprKind::Ref(n)
                if !self.scope.is_empty()
                    && n != "lr"
                    && !schema::SIGNALS.contains(&n.as_str()) =>
            {
                Some(n.clone())
            }
            _ => None,
        };
        match ty {
            Ty::Kernel => self.kernel(expr, env, path),
            Ty::Width => self.width(expr, env, path),
            Ty::Stack => self.stack(expr, env, path),
            Ty::Int { .. } | Ty::Float { .. } if leftover.is_some() => {
                let n = leftover.unwrap_or_default();
                self.unknown_number(&n, expr.span);
                None
            }
            Ty::Int { .. } | Ty::Float { .. } if !is_numeric(expr) => {
                self.report(type_error(
                    expr,
                    field,
                    if matches!(ty, Ty::Int { .. }) {
                        "a whole number"
                    } else {
                        "a number"
                    },
                    describe(expr),
                ));
                None
            }
            Ty::Int { min, max } => {
                let v = self.number(expr, env)?;
                if !is_whole(v) {
                    self.report(type_error(expr, field, "a whole number", &format!("{v}")));
                    return None;
                }
                if v < min as f64 || v > max as f64 {
                    self.report(range_error(expr, field, v, &int_range(min, max)));
                    return None;
                }
                Some(Val::Num(v, true))
            }
            Ty::Float { min, max, min_open } => {
                let v = self.number(expr, env)?;
                let below = if min_open { v <= min } else { v < min };
                if below || v > max {
                    self.report(range_error(
                        expr,
                        field,
                        v,
                        &float_range(min, max, min_open),
                    ));
                    return None;
                }
                Some(Val::Num(
                    v,
                    is_whole(v) && matches!(expr.node, ExprKind::Number { integer: true, .. }),
                ))
            }
            Ty::Bool => match &expr.node {
                ExprKind::Bool(b) => Some(Val::Bool(*b)),
                _ => {
                    self.report(type_error(expr, field, "`true` or `false`", describe(expr)));
                    None
                }
            },
            Ty::Str => match &expr.node {
                ExprKind::Str(s) => Some(Val::Str(s.clone())),
                _ => {
                    self.report(type_error(
                        expr,
                        field,
                        "a string in double quotes",
                        describe(expr),
                    ));
                    None
                }
            },
            Ty::Enum(options) => match &expr.node {
                ExprKind::Ref(n) if options.contains(&n.as_str()) => Some(Val::Name(n.clone())),
                ExprKind::Ref(n) => {
                    self.report(
                        Diagnostic::error(
                            Code::UnknownName,
                            format!("`{n}` is not a valid `{field}`"),
                        )
                        .at(expr.span, "unknown value")
                        .help(suggest::help(
                            n,
                            "values",
                            options.iter().copied(),
                        )),
                    );
                    None
                }
                _ => {
                    let list = options
                        .iter()
                        .map(|o| format!("`{o}`"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    self.report(type_error(
                        expr,
                        field,
                        &format!("one of {list}"),
                        describe(expr),
                    ));
                    None
                }
            },
            Ty::IntList { min } => match &expr.node {
                ExprKind::List(items) => {
                    let mut out = Vec::new();
                    for item in items {
                        let v = self.convert(
                            item,
                            Ty::Int {
                                min,
                                max: i32::MAX as i64,
                            },
                            Vec::new(),
                            env,
                            path,
                        )?;
                        out.push(v);
                    }
                    Some(Val::List(out))
                }
                _ => {
                    self.report(type_error(
                        expr,
                        field,
                        "a list of whole numbers like `[256, 256]`",
                        describe(expr),
                    ));
                    None
                }
            },
            Ty::FloatList { min, min_open } => match &expr.node {
                ExprKind::List(items) => {
                    let mut out = Vec::new();
                    for item in items {
                        let v = self.convert(
                            item,
                            Ty::Float {
                                min,
                                max: f64::INFINITY,
                                min_open,
                            },
                            Vec::new(),
                            env,
                            path,
                        )?;
                        out.push(v);
                    }
                    Some(Val::List(out))
                }
                _ => {
                    self.report(type_error(
                        expr,
                        field,
                        "a list of numbers like `[0.5, 0.5, 0.5]`",
                        describe(expr),
                    ));
                    None
                }
            },
            Ty::ObjList(cat) => match &expr.node {
                ExprKind::List(items) => {
                    let mut out = Vec::new();
                    for item in items {
                        out.push(self.convert(item, Ty::Obj(cat), Vec::new(), env, path)?);
                    }
                    Some(Val::List(out))
                }
                _ => {
                    self.report(type_error(
                        expr,
                        field,
                        &format!("a list of {}s in `[...]`", cat.noun()),
                        describe(expr),
                    ));
                    None
                }
            },
            Ty::Quantity { units, whole, min } => match &expr.node {
                ExprKind::Quantity { value, unit, .. } => {
                    if !units.contains(unit) {
                        let allowed = units
                            .iter()
                            .map(|u| u.name())
                            .collect::<Vec<_>>()
                            .join(" or ");
                        self.report(
                            Diagnostic::error(
                                Code::Unit,
                                format!("`{field}` is counted in {allowed}, not {}", unit.name()),
                            )
                            .at(expr.span, "wrong unit")
                            .help(format!("write e.g. `{field} = 50 {}`", units[0].name())),
                        );
                        return None;
                    }
                    if whole && !is_whole(*value) {
                        self.report(
                            Diagnostic::error(
                                Code::Unit,
                                format!("`{field}` needs a whole number of {}", unit.name()),
                            )
                            .at(expr.span, "not whole")
                            .help(format!(
                                "write `{} {}`",
                                value.round().max(1.0),
                                unit.name()
                            )),
                        );
                        return None;
                    }
                    if *value < min {
                        self.report(range_error(
                            expr,
                            field,
                            *value,
                            &format!("at least {min} {}", unit.name()),
                        ));
                        return None;
                    }
                    Some(Val::Quantity(*value, *unit))
                }
                ExprKind::Number { text, .. } => {
                    self.report(
                        Diagnostic::error(Code::Unit, format!("`{field}` needs a unit"))
                            .at(expr.span, "a bare number")
                            .help(format!("write `{text} {}`", units[0].name())),
                    );
                    None
                }
                _ => {
                    self.report(type_error(
                        expr,
                        field,
                        "a quantity like `50 steps` or `2 epochs`",
                        describe(expr),
                    ));
                    None
                }
            },
            Ty::Signal => {
                let env = Env {
                    lr: env.lr.or(Some(0.1)),
                    signals: true,
                    lr_missing: false,
                };
                match eval::eval(expr, &env) {
                    Ok(e) => Some(Val::Expr(e)),
                    Err(d) => {
                        self.report(d);
                        None
                    }
                }
            }
            Ty::Alpha => match &expr.node {
                ExprKind::Number { .. }
                | ExprKind::Neg(_)
                | ExprKind::Binary { .. }
                | ExprKind::Paren(_) => {
                    let fixed = schema::kind(Category::Schedule, "fixed").expect("fixed exists");
                    let f = FieldSrc {
                        name: Spanned::new("alpha".into(), expr.span),
                        value: Some(expr.clone()),
                        nested: Vec::new(),
                    };
                    self.object(fixed, vec![f], None, path, env, expr.span)
                        .map(|o| Val::Obj(Arc::new(o)))
                }
                _ => self.convert(expr, Ty::Obj(Category::Schedule), nested, env, path),
            },
            Ty::Obj(cat) => self.obj_value(expr, cat, nested, env, path),
        }
    }

    fn obj_value(
        &mut self,
        expr: &Expr,
        cat: Category,
        nested: Overrides,
        env: &Env,
        path: &str,
    ) -> Option<Val> {
        let declarable = matches!(
            cat,
            Category::Dataset | Category::Model | Category::Schedule | Category::Optimizer
        );
        let (kind_name, mut fields): (&Ident, Vec<FieldSrc>) = match &expr.node {
            ExprKind::Ref(name) => {
                if let Some(decl) = self.table.decls.get(name) {
                    let dcat = category_of(decl.kind.node);
                    if declarable && dcat == cat {
                        if !nested.is_empty() {
                            let mut o = self.exp_overrides.clone();
                            o.entry(name.clone()).or_default().extend(nested);
                            let saved = std::mem::replace(&mut self.exp_overrides, o);
                            let r = self.decl_fresh(name, env);
                            self.exp_overrides = saved;
                            return r.map(|o| Val::Obj(Arc::new(o)));
                        }
                        return self.decl(name, env).map(Val::Obj);
                    }
                    if dcat != cat && schema::kind(cat, name).is_none() {
                        self.report(
                            Diagnostic::error(
                                Code::WrongDecl,
                                format!(
                                    "`{name}` is {}, but `{}` needs {}",
                                    a(dcat.noun()),
                                    last(path),
                                    a(cat.noun())
                                ),
                            )
                            .at(expr.span, format!("a {}", decl.kind.node.keyword()))
                            .related(decl.name.span, "declared here")
                            .help(suggest::help(
                                name,
                                &format!("{} declarations", cat.noun()),
                                self.table.names_of(cat),
                            )),
                        );
                        return None;
                    }
                }
                let Some(kind) = schema::kind(cat, name) else {
                    let mut candidates: Vec<&str> = if declarable {
                        self.table.names_of(cat)
                    } else {
                        Vec::new()
                    };
                    candidates.extend(schema::kinds(cat).map(|k| k.name));
                    let what = if declarable {
                        format!("{} declarations and kinds", cat.noun())
                    } else {
                        format!("{} kinds", cat.noun())
                    };
                    self.report(
                        Diagnostic::error(
                            Code::UnknownName,
                            format!("unknown {} `{name}`", cat.noun()),
                        )
                        .at(expr.span, "not declared")
                        .help(suggest::help(name, &what, candidates)),
                    );
                    return None;
                };
                let mut fields = Vec::new();
                for (p, v) in nested {
                    apply_override(&mut fields, &p, v);
                }
                return self
                    .object(kind, fields, None, path, env, expr.span)
                    .map(|o| Val::Obj(Arc::new(o)));
            }
            ExprKind::Call { name, args } => {
                let Some(kind) = schema::kind(cat, &name.node) else {
                    return self.unknown_kind(name, cat);
                };
                let fields = self.call_fields(kind, args)?;
                (name, fields)
            }
            ExprKind::Object { kind, block } => {
                if schema::kind(cat, &kind.node).is_none() {
                    return self.unknown_kind(kind, cat);
                }
                let mut d = std::mem::take(&mut self.diags);
                let fields = block_fields(block, false, &mut d);
                self.diags = d;
                (kind, fields)
            }
            _ => {
                self.report(type_error(expr, last(path), &a(cat.noun()), describe(expr)));
                return None;
            }
        };
        let kind = schema::kind(cat, &kind_name.node).expect("checked above");
        for (p, v) in nested {
            apply_override(&mut fields, &p, v);
        }
        self.object(kind, fields, None, path, env, expr.span)
            .map(|o| Val::Obj(Arc::new(o)))
    }

    fn unknown_kind(&mut self, name: &Ident, cat: Category) -> Option<Val> {
        self.report(
            Diagnostic::error(
                Code::UnknownKind,
                format!("unknown {} `{}`", cat.noun(), name.node),
            )
            .at(name.span, "no such kind")
            .help(suggest::help(
                &name.node,
                &format!("{} kinds", cat.noun()),
                schema::kinds(cat).map(|k| k.name),
            )),
        );
        None
    }

    /// `sigmoid(8)`, `norm(max = 10)`: arguments map to fields in order or by name.
    fn call_fields(&mut self, kind: &'static KindSpec, args: &[Arg]) -> Option<Vec<FieldSrc>> {
        let mut out = Vec::new();
        for (i, arg) in args.iter().enumerate() {
            let name = match &arg.name {
                Some(n) => n.clone(),
                None => match kind.fields.get(i) {
                    Some(f) => Spanned::new(f.name.to_string(), arg.value.span),
                    None => {
                        self.report(
                            Diagnostic::error(
                                Code::Arity,
                                format!("`{}` takes {} argument(s)", kind.name, kind.fields.len()),
                            )
                            .at(arg.value.span, "extra argument")
                            .help(format!(
                                "`{}` takes: {}",
                                kind.name,
                                kind.fields
                                    .iter()
                                    .map(|f| f.name)
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )),
                        );
                        return None;
                    }
                },
            };
            out.push(FieldSrc {
                name,
                value: Some(arg.value.clone()),
                nested: Vec::new(),
            });
        }
        Some(out)
    }

    fn number(&mut self, expr: &Expr, env: &Env) -> Option<f64> {
        match eval::eval(
            expr,
            &Env {
                signals: false,
                ..*env
            },
        ) {
            Ok(SignalExpr::Const(v)) => Some(v),
            Ok(_) => None,
            Err(d) => {
                self.report(d);
                None
            }
        }
    }
}

/// "a model", "an optimizer".
fn a(noun: &str) -> String {
    if noun.starts_with(['a', 'e', 'i', 'o', 'u', 'α']) {
        format!("an {noun}")
    } else {
        format!("a {noun}")
    }
}

fn last(path: &str) -> &str {
    path.rsplit('.').next().unwrap_or(path)
}

fn respan(e: &mut Expr, span: Span) {
    e.span = span;
    match &mut e.node {
        ExprKind::Neg(x) | ExprKind::Paren(x) => respan(x, span),
        ExprKind::Binary { lhs, rhs, .. } | ExprKind::Range(lhs, rhs) => {
            respan(lhs, span);
            respan(rhs, span);
        }
        ExprKind::List(xs) => xs.iter_mut().for_each(|x| respan(x, span)),
        ExprKind::Call { name, args } => {
            name.span = span;
            args.iter_mut().for_each(|a| respan(&mut a.value, span));
        }
        _ => {}
    }
}

fn is_numeric(expr: &Expr) -> bool {
    matches!(
        expr.node,
        ExprKind::Number { .. }
            | ExprKind::Neg(_)
            | ExprKind::Binary { .. }
            | ExprKind::Paren(_)
            | ExprKind::Ref(_)
            | ExprKind::Call { .. }
    )
}

fn describe(expr: &Expr) -> &'static str {
    match &expr.node {
        ExprKind::Number { .. } => "a number",
        ExprKind::Str(_) => "a string",
        ExprKind::Bool(_) => "a boolean",
        ExprKind::Quantity { .. } => "a quantity",
        ExprKind::Ref(_) => "a name",
        ExprKind::List(_) => "a list",
        ExprKind::Object { .. } => "a block",
        ExprKind::Call { .. } => "a call",
        ExprKind::Range(..) => "a range",
        _ => "an expression",
    }
}

fn type_error(expr: &Expr, field: &str, want: &str, got: &str) -> Diagnostic {
    let help = if got == "a list" && !want.contains("list") {
        // a list where one value goes is most often meant as a sweep
        format!(
            "to run one trial per value, write `{field} = sweep(...)` with the values (see docs/language.md, Experiments and sweeps)"
        )
    } else {
        format!("see docs/language.md for what `{field}` takes")
    };
    Diagnostic::error(Code::Type, format!("`{field}` must be {want}, found {got}"))
        .at(expr.span, format!("expected {want}"))
        .help(help)
}

fn range_error(expr: &Expr, field: &str, v: f64, range: &str) -> Diagnostic {
    Diagnostic::error(Code::Range, format!("`{field}` = {v} is out of range"))
        .at(expr.span, format!("must be {range}"))
        .help(format!("choose a value {range}"))
}

fn int_range(min: i64, max: i64) -> String {
    if max >= i32::MAX as i64 {
        format!("at least {min}")
    } else {
        format!("between {min} and {max}")
    }
}

fn float_range(min: f64, max: f64, open: bool) -> String {
    match (min.is_finite(), max.is_finite()) {
        (true, true) => format!("in {}{min}, {max}]", if open { "(" } else { "[" }),
        (true, false) => {
            if open {
                format!("greater than {min}")
            } else {
                format!("at least {min}")
            }
        }
        _ => format!("at most {max}"),
    }
}

/// The alternatives of a sweep value, or `None` if the value is not a sweep.
pub fn sweep_alternatives(expr: &Expr) -> Option<Result<Vec<Expr>, Diagnostic>> {
    let ExprKind::Call { name, args } = &expr.node else {
        if let ExprKind::Range(..) = expr.node {
            return Some(Err(Diagnostic::error(
                Code::SweepMisplaced,
                "a bare range is not a value",
            )
            .at(expr.span, "range")
            .help("write `sweep(0..5)` to run one trial per value")));
        }
        return None;
    };
    match name.node.as_str() {
        "sweep" => {
            let mut out = Vec::new();
            if let Some(a) = args.iter().find(|a| a.name.is_some()) {
                return Some(Err(Diagnostic::error(
                    Code::Arity,
                    "`sweep` takes values, not named arguments",
                )
                .at(a.value.span, "named argument")
                .help("write `sweep(a, b, c)`")));
            }
            for a in args {
                match &a.value.node {
                    ExprKind::Range(lo, hi) => match (
                        eval::eval(lo, &Env::default()),
                        eval::eval(hi, &Env::default()),
                    ) {
                        (Ok(SignalExpr::Const(l)), Ok(SignalExpr::Const(h)))
                            if is_whole(l) && is_whole(h) =>
                        {
                            if h - l > 10_000_000.0 {
                                return Some(Err(Diagnostic::error(
                                    Code::TooManyTrials,
                                    "range too long",
                                )
                                .at(a.value.span, "over 10 million values")
                                .help("use a shorter range")));
                            }
                            let mut i = l;
                            while i < h {
                                out.push(number_expr(i, true, a.value.span));
                                i += 1.0;
                            }
                        }
                        (Err(d), _) | (_, Err(d)) => return Some(Err(d)),
                        _ => {
                            return Some(Err(Diagnostic::error(Code::Type, "range bounds must be whole numbers")
                                .at(a.value.span, "not whole numbers")
                                .help("write e.g. `0..5`; for evenly spaced reals use `linspace(a, b, n)`")));
                        }
                    },
                    ExprKind::Call { name, .. }
                        if name.node == "logspace" || name.node == "linspace" =>
                    {
                        match sweep_alternatives(&a.value)? {
                            Ok(xs) => out.extend(xs),
                            Err(d) => return Some(Err(d)),
                        }
                    }
                    ExprKind::Call { name, .. } if name.node == "sweep" => {
                        return Some(Err(Diagnostic::error(
                            Code::SweepMisplaced,
                            "sweeps do not nest",
                        )
                        .at(a.value.span, "inner sweep")
                        .help("list the values in one `sweep(...)`")));
                    }
                    _ => out.push(a.value.clone()),
                }
            }
            Some(Ok(out))
        }
        "logspace" | "linspace" => {
            let log = name.node == "logspace";
            if args.len() != 3 || args.iter().any(|a| a.name.is_some()) {
                return Some(Err(Diagnostic::error(
                    Code::Arity,
                    format!("`{}` takes (from, to, count)", name.node),
                )
                .at(expr.span, "wrong arguments")
                .help(format!("write `{}(1e-3, 1e-1, 5)`", name.node))));
            }
            let mut v = [0.0; 3];
            for (i, a) in args.iter().enumerate() {
                match eval::eval(&a.value, &Env::default()) {
                    Ok(SignalExpr::Const(x)) => v[i] = x,
                    Ok(_) => return None,
                    Err(d) => return Some(Err(d)),
                }
            }
            let [from, to, n] = v;
            if !is_whole(n) || !(0.0..=10_000_000.0).contains(&n) {
                return Some(Err(Diagnostic::error(
                    Code::Range,
                    "the count must be a whole number between 0 and 10 million",
                )
                .at(args[2].value.span, "not a count")
                .help("the third argument is how many values")));
            }
            if log && (from <= 0.0 || to <= 0.0) {
                return Some(Err(Diagnostic::error(
                    Code::Range,
                    "logspace needs positive bounds",
                )
                .at(expr.span, "bound not positive")
                .help("use linspace for ranges through zero")));
            }
            let n = n as usize;
            let out = (0..n)
                .map(|i| {
                    let t = if n == 1 {
                        0.0
                    } else {
                        i as f64 / (n - 1) as f64
                    };
                    let x = if log {
                        (from.ln() + t * (to.ln() - from.ln())).exp()
                    } else {
                        from + t * (to - from)
                    };
                    let x = if i + 1 == n && n > 1 { to } else { x };
                    number_expr(round_sig(x), false, expr.span)
                })
                .collect();
            Some(Ok(out))
        }
        _ => None,
    }
}

/// Rounds to 12 significant digits so generated values print cleanly.
fn round_sig(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let digits = 12 - x.abs().log10().ceil() as i32;
    let p = 10f64.powi(digits);
    (x * p).round() / p
}

pub fn number_expr(v: f64, integer: bool, span: Span) -> Expr {
    let text = crate::plan::fmt_num(v, integer);
    Spanned::new(
        ExprKind::Number {
            value: v,
            text,
            integer: integer && is_whole(v),
        },
        span,
    )
}
