//! Checking: AST -> [`Plan`], reporting every problem in one pass.
//!
//! ```
//! let checked = ahtsgd::check::check_text(
//!     "demo.aht",
//!     "dataset d = blobs {}\nmodel m = mlp { hidden = [8] }\noptimizer o = sgd { lr = 0.1 }\n\
//!      experiment e {\n  data = d, model = m, optimizer = o, epochs = 1, seed = sweep(0..3)\n}\n",
//!     &Default::default(),
//! );
//! assert!(checked.diagnostics.is_empty());
//! assert_eq!(checked.plan.unwrap().trials.len(), 3);
//! ```

pub mod data;
pub mod eval;
mod load;
pub mod model;
pub mod optimizer;
pub mod resolve;
pub mod schema;
pub mod suggest;

use std::collections::BTreeMap;
use std::path::Path;

use rand::{Rng, SeedableRng};

use crate::diagnostic::{Code, Diagnostic, Diagnostics};
use crate::plan::{ExperimentPlan, Plan, SignalExpr, Trial};
use crate::source::{FileId, SourceMap, Spanned};
use crate::syntax::ast::{Decl, DeclBody, DeclKind, Entry, Expr, ExprKind, Ident, Item, Module};

use eval::Env;
use resolve::{Injected, Resolver, Table, category_of, number_expr};
use schema::Category;

pub use load::Loaded;

/// How to check.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// `--set path=value` overrides, as written.
    pub sets: Vec<String>,
    /// Allow sweeps beyond an experiment's `max_trials`.
    pub allow_large: bool,
}

/// The result of checking: the sources (for rendering), the parsed files, the plan when
/// there were no errors, and every diagnostic.
#[derive(Debug)]
pub struct Checked {
    pub sources: SourceMap,
    pub modules: Vec<(FileId, Module)>,
    pub root: Option<FileId>,
    pub plan: Option<Plan>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Checked {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// The root recipe with its imports inlined: one self-contained recipe text that declares
    /// what the files declared (names are shared across files, so inlining keeps meaning). An
    /// imported file's `version` line is left out, the root's kept.
    pub fn inlined(&self) -> String {
        let mut out = String::new();
        for (id, _) in &self.modules {
            let f = self.sources.get(*id);
            let root = Some(*id) == self.root;
            if !root {
                out.push_str(&format!("# ---- imported from {}\n", f.name));
            }
            for line in f.text.lines() {
                let t = line.trim_start();
                let version = t.starts_with("version") && t[7..].trim_start().starts_with('=');
                if !t.starts_with("import ") && (root || !version) {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out
    }
}

/// The most trials any recipe may expand to, even with `--allow-large`.
pub const HARD_TRIAL_LIMIT: usize = 10_000_000;

/// Checks a recipe file and its imports.
pub fn check_file(path: &Path, opts: &Options) -> Checked {
    let mut diags = Diagnostics::default();
    let loaded = load::load_file(path, &mut diags);
    finish(loaded, opts, diags)
}

/// Checks recipe text; imports are resolved against the current folder.
pub fn check_text(name: &str, text: &str, opts: &Options) -> Checked {
    let mut diags = Diagnostics::default();
    let loaded = load::load_text(name, text, Path::new("."), &mut diags);
    finish(loaded, opts, diags)
}

/// Checks recipe text as if it were a file in `dir`: its imports are resolved there (an editor's
/// unsaved buffer of a file on disk).
pub fn check_text_at(name: &str, text: &str, dir: &Path, opts: &Options) -> Checked {
    let mut diags = Diagnostics::default();
    let loaded = load::load_text(name, text, dir, &mut diags);
    finish(loaded, opts, diags)
}

fn finish(mut loaded: Loaded, opts: &Options, mut diags: Diagnostics) -> Checked {
    let plan = check_loaded(&mut loaded, opts, &mut diags);
    let diagnostics = diags.finish();
    let plan = if diagnostics.iter().any(Diagnostic::is_error) {
        None
    } else {
        plan
    };
    Checked {
        sources: loaded.sources,
        modules: loaded.modules,
        root: loaded.root,
        plan,
        diagnostics,
    }
}

fn check_loaded(loaded: &mut Loaded, opts: &Options, diags: &mut Diagnostics) -> Option<Plan> {
    let modules = std::mem::take(&mut loaded.modules);
    let plan = check_modules(&modules, &mut loaded.sources, opts, diags);
    loaded.modules = modules;
    plan
}

fn check_modules(
    modules: &[(FileId, Module)],
    sources: &mut SourceMap,
    opts: &Options,
    diags: &mut Diagnostics,
) -> Option<Plan> {
    // versions and declarations
    let mut decls: BTreeMap<String, &Decl> = BTreeMap::new();
    let mut order: Vec<&Decl> = Vec::new();
    // the root file (loaded last) sets the version; an imported file may not ask for another
    let version_of = |m: &Module| {
        m.items.iter().find_map(|i| match i {
            Item::Version(v) => Some(v.clone()),
            _ => None,
        })
    };
    let root_version = modules.last().and_then(|(_, m)| version_of(m));
    let version = root_version
        .as_ref()
        .map_or(1, |v| v.node)
        .clamp(1, *schema::VERSIONS.last().expect("a version"));
    for (_, module) in modules {
        if let (Some(v), Some(root)) = (version_of(module), &root_version)
            && v.node != root.node
            && schema::VERSIONS.contains(&v.node)
        {
            diags.push(
                Diagnostic::error(
                    Code::Version,
                    format!(
                        "this file is language version {}, the recipe importing it version {}",
                        v.node, root.node
                    ),
                )
                .at(v.span, "another version")
                .related(root.span, "the recipe's version")
                .help("the recipe's own file sets the version for all it imports: give them the same `version` line"),
            );
        }
        let mut version_seen = None;
        for item in &module.items {
            match item {
                Item::Version(v) => {
                    if let Some(prev) = version_seen {
                        diags.push(
                            Diagnostic::error(Code::Duplicate, "the version is given twice")
                                .at(v.span, "again here")
                                .related(prev, "first here")
                                .help("keep one `version = 1` line"),
                        );
                    } else if !schema::VERSIONS.contains(&v.node) {
                        diags.push(
                            Diagnostic::error(
                                Code::Version,
                                format!("language version {} is not supported", v.node),
                            )
                            .at(v.span, "unknown version")
                            .help(
                                "this build reads `version = 1`, `version = 2` and `version = 3`",
                            ),
                        );
                    }
                    version_seen = Some(v.span);
                }
                Item::Decl(d) => {
                    if let Some(prev) = decls.get(&d.name.node) {
                        diags.push(
                            Diagnostic::error(Code::Duplicate, format!("`{}` is declared twice", d.name.node))
                                .at(d.name.span, "declared again here")
                                .related(prev.name.span, "first declared here")
                                .help("declaration names are shared by all kinds and imported files: rename one"),
                        );
                    } else {
                        decls.insert(d.name.node.clone(), d);
                        order.push(d);
                    }
                }
                Item::Import(_) => {}
            }
        }
    }
    let table = Table::new(decls);
    let mut r = Resolver::new(&table, sources);
    r.version = version;

    // --set
    let mut exp_sets: BTreeMap<String, Vec<(Vec<Ident>, Expr)>> = BTreeMap::new();
    for set in &opts.sets {
        if let Some((name, path, value)) = parse_set(r.sources, set, &table, diags) {
            let is_exp = table
                .decls
                .get(&name)
                .is_some_and(|d| d.kind.node == DeclKind::Experiment);
            let target = if is_exp {
                &mut exp_sets
            } else {
                &mut r.overrides
            };
            target.entry(name).or_default().push((path, value));
        }
    }

    // every declaration on its own, so unused ones are checked too
    for d in &order {
        let cat = category_of(d.kind.node);
        if cat == Category::Experiment {
            continue;
        }
        let env = Env {
            lr: (cat == Category::Schedule).then_some(0.1),
            signals: false,
            lr_missing: false,
        };
        r.decl(&d.name.node, &env);
    }

    let mut plan = Plan::default();
    for d in order.iter().filter(|d| d.kind.node == DeclKind::Experiment) {
        let start = plan.trials.len();
        expand_experiment(&mut r, d, exp_sets.get(&d.name.node), opts, &mut plan);
        plan.experiments.push(ExperimentPlan {
            name: d.name.node.clone(),
            span: d.name.span,
            trials: start..plan.trials.len(),
        });
    }
    if !r.diags.has_errors() {
        check_shapes(&plan, &mut r.diags);
    }
    let ok = !r.diags.has_errors();
    diags.0.append(&mut r.diags.0);
    ok.then_some(plan)
}

/// Lays out each trial's model for its data where the data's shape is known without reading
/// files, reporting the layers that do not fit. Each (model, data shape) pair once.
fn check_shapes(plan: &Plan, diags: &mut Diagnostics) {
    let mut seen = std::collections::HashSet::new();
    for t in &plan.trials {
        let (crate::plan::Val::Obj(m), crate::plan::Val::Obj(data)) =
            (t.config.get("model"), t.config.get("data"))
        else {
            continue;
        };
        let (Some(shape), Some(k)) = (model::sample_shape(data), model::classes(data)) else {
            continue;
        };
        if seen.insert((std::sync::Arc::as_ptr(m) as usize, shape.clone(), k))
            && let Err(d) = model::lower_for(m, &shape, k, model::tokens(data))
        {
            diags.push(d);
        }
    }
}

/// `name.path=value` -> declaration name, field path, parsed value.
fn parse_set(
    sources: &mut SourceMap,
    set: &str,
    table: &Table,
    diags: &mut Diagnostics,
) -> Option<(String, Vec<Ident>, Expr)> {
    let file = sources.add(format!("--set {set}"), None, set);
    let span_all = crate::source::Span::new(file, 0, set.len());
    let Some(eq) = set.find('=') else {
        diags.push(
            Diagnostic::error(Code::Set, format!("`--set {set}` has no `=`"))
                .at(span_all, "expected path=value")
                .help("write `--set experiment.epochs=1` or `--set aht.lr=0.1`"),
        );
        return None;
    };
    let mut parts = Vec::new();
    let mut at = 0;
    for part in set[..eq].split('.') {
        let span = crate::source::Span::new(file, at, at + part.len());
        let trimmed = part.trim();
        if trimmed.is_empty() || !trimmed.chars().all(|c| c.is_alphanumeric() || c == '_') {
            diags.push(
                Diagnostic::error(Code::Set, format!("`{part}` is not a name"))
                    .at(span, "bad path component")
                    .help("paths are names separated by dots: `decl.field.subfield`"),
            );
            return None;
        }
        parts.push(Spanned::new(trimmed.to_string(), span));
        at += part.len() + 1;
    }
    if parts.len() < 2 {
        diags.push(
            Diagnostic::error(Code::Set, "a --set path names a declaration and a field")
                .at(parts[0].span, "only one name")
                .help(format!(
                    "write `--set DECL.{}={}`",
                    parts[0].node,
                    &set[eq + 1..]
                )),
        );
        return None;
    }
    let name = parts.remove(0);
    if !table.decls.contains_key(&name.node) {
        diags.push(table.undeclared(
            Code::Set,
            &name,
            format!("`--set` names `{}`, which is not declared", name.node),
        ));
        return None;
    }
    let text = sources.get(file).text.clone();
    match crate::syntax::parse_value_at(file, &text, eq + 1) {
        Ok(v) => Some((name.node, parts, v)),
        Err(d) => {
            diags.push(d);
            None
        }
    }
}

fn site_path(exp: &str, path: &[Ident]) -> String {
    let dotted: Vec<&str> = path.iter().map(|p| p.node.as_str()).collect();
    if path.len() == 1 {
        format!("{exp}.{}", dotted[0])
    } else {
        dotted.join(".")
    }
}

fn expand_experiment(
    r: &mut Resolver,
    d: &Decl,
    sets: Option<&Vec<(Vec<Ident>, Expr)>>,
    opts: &Options,
    plan: &mut Plan,
) {
    let name = d.name.node.as_str();
    r.exp_overrides.clear();
    r.injected.clear();
    r.groups.clear();
    r.choices.clear();
    r.sites.clear();
    r.forget();
    let mut local = Diagnostics::default();
    let Some((kind, mut fields)) = r.table.merged(name, &mut local) else {
        r.diags.0.append(&mut local.0);
        return;
    };
    // dotted overrides, zip and random come from the experiment's own block(s)
    let mut chain = vec![d];
    while let DeclBody::Derive { base, .. } = &chain.last().expect("non-empty").body {
        match r.table.decls.get(&base.node) {
            Some(b)
                if !chain.iter().any(|c| c.name.node == b.name.node)
                    && b.kind.node == DeclKind::Experiment =>
            {
                chain.push(b)
            }
            _ => break,
        }
    }
    for decl in chain.iter().rev() {
        let Some(block) = decl.body.block() else {
            continue;
        };
        for entry in &block.entries {
            match entry {
                Entry::Field(f) if f.path.parts.len() > 1 => {
                    let target = &f.path.parts[0];
                    if r.table.decls.contains_key(&target.node) {
                        r.exp_overrides
                            .entry(target.node.clone())
                            .or_default()
                            .push((f.path.parts[1..].to_vec(), f.value.clone()));
                    } else {
                        local.push(r.table.undeclared(
                            Code::Path,
                            target,
                            format!("`{}` does not name a declaration", target.node),
                        ));
                    }
                }
                Entry::Zip { paths, span } => {
                    let group: Vec<String> =
                        paths.iter().map(|p| site_path(name, &p.parts)).collect();
                    if group.len() < 2 {
                        local.push(
                            Diagnostic::error(Code::Zip, "`zip` needs at least two fields")
                                .at(*span, "one field")
                                .help("zip pairs the sweeps of several fields: `zip(optimizer, seed)`"),
                        );
                    }
                    r.groups.push((group, *span));
                }
                Entry::Random { args, block, span } => {
                    let gid = usize::MAX - r.groups.len();
                    if let Some(sites) = random_sites(name, args, block, *span, &mut local) {
                        for (path, alts) in sites {
                            r.injected.insert(
                                path,
                                Injected {
                                    alts: std::rc::Rc::new(alts),
                                    group: gid,
                                },
                            );
                        }
                    }
                }
                _ => {}
            }
        }
    }
    for (path, value) in sets.into_iter().flatten() {
        resolve::apply_override(&mut fields, path, value.clone());
    }
    if local.has_errors() {
        r.diags.0.append(&mut local.0);
        return;
    }

    let mut state = Expansion {
        limit: None,
        exceeded: false,
        first: true,
        start: plan.trials.len(),
    };
    let choices = BTreeMap::new();
    dfs(r, d, kind, &fields, choices, &mut state, opts, plan);
    if state.exceeded {
        let limit = state.limit.unwrap_or(0);
        r.diags.push(
            Diagnostic::error(
                Code::TooManyTrials,
                format!("experiment `{name}` expands to more than {limit} trials"),
            )
            .at(d.name.span, "too many trials")
            .help(if opts.allow_large || limit >= HARD_TRIAL_LIMIT {
                format!("no recipe may exceed {HARD_TRIAL_LIMIT} trials: split the sweep")
            } else {
                "raise `max_trials` in the experiment, or pass --allow-large".into()
            }),
        );
    }
    // every zipped path must be a sweep
    for (group, span) in r.groups.clone() {
        for p in group {
            if !r.sites.contains_key(&p) {
                r.diags.push(
                    Diagnostic::error(Code::Zip, format!("`{p}` is zipped but is not a sweep"))
                        .at(span, "nothing to zip")
                        .help("zip names fields whose values are sweeps; use a plain name for the experiment's own fields (`seed`) and `decl.field` for others"),
                );
            }
        }
    }
}

struct Expansion {
    limit: Option<usize>,
    exceeded: bool,
    first: bool,
    /// The plan's trial count before this experiment's (summing the experiments' counts at
    /// each trial made the check quadratic in the number of experiments).
    start: usize,
}

#[allow(clippy::too_many_arguments)]
fn dfs(
    r: &mut Resolver,
    d: &Decl,
    kind: &'static schema::KindSpec,
    fields: &[resolve::FieldSrc],
    choices: BTreeMap<String, (usize, usize)>,
    st: &mut Expansion,
    opts: &Options,
    plan: &mut Plan,
) {
    if st.exceeded {
        return;
    }
    r.choices = choices;
    r.pending = None;
    r.picked.clear();
    r.read_sites.clear();
    let errors_before = r.diags.0.len();
    let obj = r.object(
        kind,
        fields.to_vec(),
        Some(d.name.node.clone()),
        &d.name.node,
        &Env::default(),
        d.name.span,
    );
    // warnings (a deprecated setting) do not stop the trial
    if r.diags.0[errors_before..].iter().any(Diagnostic::is_error) || obj.is_none() {
        return;
    }
    let obj = obj.expect("checked");
    if st.first {
        st.first = false;
        let limit = if opts.allow_large {
            HARD_TRIAL_LIMIT
        } else {
            (obj.f64("max_trials") as usize).min(HARD_TRIAL_LIMIT)
        };
        st.limit = Some(limit);
    }
    match r.pending.take() {
        None => {
            let count = plan.trials.len() - st.start;
            if count >= st.limit.unwrap_or(HARD_TRIAL_LIMIT) {
                st.exceeded = true;
                return;
            }
            plan.trials.push(Trial {
                index: plan.trials.len(),
                experiment: d.name.node.clone(),
                config: obj,
                choices: std::mem::take(&mut r.picked),
                version: r.version,
            });
        }
        Some((path, n)) => {
            let base = r.choices.clone();
            let members: Vec<String> = if let Some(g) = r.injected.get(&path).map(|i| i.group) {
                r.injected
                    .iter()
                    .filter(|(_, i)| i.group == g)
                    .map(|(p, _)| p.clone())
                    .collect()
            } else if let Some((g, _)) = r.groups.iter().find(|(g, _)| g.contains(&path)) {
                g.clone()
            } else {
                vec![path]
            };
            for i in 0..n {
                let mut c = base.clone();
                for m in &members {
                    c.insert(m.clone(), (i, n));
                }
                dfs(r, d, kind, fields, c, st, opts, plan);
                if st.exceeded {
                    return;
                }
            }
        }
    }
}

/// `random(n = 20, seed = 1) { path = distribution, ... }` -> sampled alternatives per path.
fn random_sites(
    exp: &str,
    args: &[crate::syntax::ast::Arg],
    block: &crate::syntax::ast::Block,
    span: crate::source::Span,
    diags: &mut Diagnostics,
) -> Option<Vec<(String, Vec<Expr>)>> {
    let mut n = None;
    let mut seed = 0u64;
    for a in args {
        let key = a.name.as_ref().map(|n| n.node.as_str());
        let v = match eval::eval(&a.value, &Env::default()) {
            Ok(SignalExpr::Const(v)) => v,
            Ok(_) => return None,
            Err(d) => {
                diags.push(d);
                return None;
            }
        };
        match key {
            Some("n") if eval::is_whole(v) && (1.0..=1e6).contains(&v) => n = Some(v as usize),
            Some("seed") if eval::is_whole(v) && v >= 0.0 => seed = v as u64,
            Some("n") | Some("seed") => {
                diags.push(
                    Diagnostic::error(
                        Code::Random,
                        format!(
                            "`{}` must be a whole number{}",
                            key.unwrap_or(""),
                            if key == Some("n") {
                                " from 1 to 1000000"
                            } else {
                                " ≥ 0"
                            }
                        ),
                    )
                    .at(a.value.span, "bad value")
                    .help("write `random(n = 20, seed = 1) { ... }`"),
                );
                return None;
            }
            _ => {
                diags.push(
                    Diagnostic::error(Code::Random, "`random` takes `n = COUNT` and `seed = SEED`")
                        .at(a.value.span, "unexpected argument")
                        .help("write `random(n = 20, seed = 1) { lr = loguniform(1e-3, 1e-1) }`"),
                );
                return None;
            }
        }
    }
    let Some(n) = n else {
        diags.push(
            Diagnostic::error(Code::Random, "`random` needs `n`, the number of samples")
                .at(span, "no n")
                .help("write `random(n = 20, seed = 1) { ... }`"),
        );
        return None;
    };
    let mut out = Vec::new();
    for (j, entry) in block.entries.iter().enumerate() {
        let Entry::Field(f) = entry else {
            diags.push(
                Diagnostic::error(Code::Random, "only fields go inside `random { }`")
                    .at(entry.span(), "not a field")
                    .help("write `path = uniform(a, b)`"),
            );
            continue;
        };
        let path = site_path(exp, &f.path.parts);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
            seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(j as u64),
        );
        let ExprKind::Call { name, args } = &f.value.node else {
            diags.push(random_dist_error(&f.value));
            continue;
        };
        let dist = name.node.as_str();
        if dist == "choice" {
            if args.is_empty() {
                diags.push(
                    Diagnostic::error(Code::Random, "`choice` needs at least one value")
                        .at(f.value.span, "empty")
                        .help("write `choice(a, b, c)`"),
                );
                continue;
            }
            out.push((
                path,
                (0..n)
                    .map(|_| args[rng.random_range(0..args.len())].value.clone())
                    .collect(),
            ));
            continue;
        }
        if !["uniform", "loguniform", "randint"].contains(&dist) {
            diags.push(random_dist_error(&f.value));
            continue;
        }
        let bounds: Vec<f64> = args
            .iter()
            .filter_map(|a| match eval::eval(&a.value, &Env::default()) {
                Ok(SignalExpr::Const(v)) => Some(v),
                _ => None,
            })
            .collect();
        let [lo, hi] = bounds[..] else {
            diags.push(
                Diagnostic::error(
                    Code::Arity,
                    format!("`{dist}` takes (low, high) as numbers"),
                )
                .at(f.value.span, "wrong arguments")
                .help(format!("write `{dist}(1e-3, 1e-1)`")),
            );
            continue;
        };
        if hi < lo
            || (dist == "loguniform" && lo <= 0.0)
            || (dist == "randint" && !(eval::is_whole(lo) && eval::is_whole(hi)))
        {
            diags.push(
                Diagnostic::error(Code::Range, format!("bad bounds for `{dist}`"))
                    .at(f.value.span, "bounds")
                    .help("need low ≤ high; loguniform needs positive bounds, randint whole ones"),
            );
            continue;
        }
        let alts = (0..n)
            .map(|_| match dist {
                "uniform" => number_expr(lo + (hi - lo) * rng.random::<f64>(), false, f.value.span),
                "loguniform" => number_expr(
                    (lo.ln() + (hi.ln() - lo.ln()) * rng.random::<f64>()).exp(),
                    false,
                    f.value.span,
                ),
                _ => number_expr(
                    rng.random_range(lo as i64..=hi as i64) as f64,
                    true,
                    f.value.span,
                ),
            })
            .collect();
        out.push((path, alts));
    }
    Some(out)
}

fn random_dist_error(e: &Expr) -> Diagnostic {
    Diagnostic::error(Code::Random, "a random-search field needs a distribution")
        .at(e.span, "not a distribution")
        .help("use `uniform(a, b)`, `loguniform(a, b)`, `randint(a, b)` or `choice(x, y, ...)`")
}
