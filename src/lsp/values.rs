//! What the checker computed for the text under the cursor: the value of a field's expression in
//! each trial where it is evaluated, and how many trials a sweep or an experiment makes.
//!
//! The values come from the checked plan, not from evaluating the text again: a field written
//! once can hold different values in different places (a schedule's `sigma = 0.1 * lr` under two
//! optimizers, a base declaration's field in a derived one, a swept `lr`), and the plan holds
//! each trial's objects as the trainer will see them. So these hovers exist only for documents
//! that check without errors.

use super::document::Document;
use crate::check::resolve::sweep_alternatives;
use crate::plan::{Obj, Plan, Trial, Val};
use crate::syntax::ast::{Block, Decl, DeclBody, Entry, Expr, ExprKind, Item};
use std::collections::BTreeMap;

/// The most distinct values a hover lists before it says how many more there are.
const MOST_LISTED: usize = 12;

/// Markdown for what the plan holds at a byte offset of the document, if anything.
pub fn hover(doc: &Document, offset: usize) -> Option<String> {
    let plan = doc.checked.plan.as_ref()?;
    let offset = doc.checker_offset(offset)? as u32;
    let root = doc.checked.root?;
    let decls: BTreeMap<&str, &Decl> = doc
        .checked
        .modules
        .iter()
        .flat_map(|(_, m)| &m.items)
        .filter_map(|i| match i {
            Item::Decl(d) => Some((d.name.node.as_str(), d)),
            _ => None,
        })
        .collect();
    let module = &doc.checked.modules.iter().find(|(id, _)| *id == root)?.1;
    let decl = module.items.iter().find_map(|i| match i {
        Item::Decl(d) if d.span.start <= offset && offset < d.span.end => Some(d),
        _ => None,
    })?;
    let ctx = Context { plan, decls };
    if decl.name.span.start <= offset && offset <= decl.name.span.end {
        return ctx.experiment_size(&decl.name.node);
    }
    let block = decl.body.block()?;
    let site = find_field(block, offset, Vec::new())?;
    let mut out = String::new();
    if let Some(Ok(alts)) = sweep_alternatives(site.value) {
        out.push_str(&format!(
            "**sweep** of `{}`: {} value{}\n\n",
            site.path.join("."),
            alts.len(),
            plural(alts.len())
        ));
        for e in ctx.experiments_reading(decl, &site) {
            if let Some(size) = ctx.experiment_size(e) {
                out.push_str(&size);
                out.push_str("\n\n");
            }
        }
    }
    let values = ctx.values(decl, &site);
    if !values.is_empty() {
        out.push_str(&render_values(&site.path.join("."), &values, plan));
    }
    (!out.is_empty()).then(|| out.trim_end().to_string())
}

/// A field whose value holds the cursor, and its path from the declaration.
struct Site<'a> {
    path: Vec<String>,
    value: &'a Expr,
}

/// The innermost field of a block whose value contains `offset`, descending into nested
/// settings (`map = sigmoid { v = 4.0 }` gives `map.v`).
fn find_field<'a>(block: &'a Block, offset: u32, prefix: Vec<String>) -> Option<Site<'a>> {
    for entry in &block.entries {
        match entry {
            Entry::Field(f) if f.value.span.start <= offset && offset <= f.value.span.end => {
                let mut path = prefix.clone();
                path.extend(f.path.parts.iter().map(|p| p.node.clone()));
                if let ExprKind::Object { block, .. } = &f.value.node
                    && let Some(inner) = find_field(block, offset, path.clone())
                {
                    return Some(inner);
                }
                return Some(Site {
                    path,
                    value: &f.value,
                });
            }
            Entry::Random { block, span, .. } if span.start <= offset && offset < span.end => {
                return find_field(block, offset, prefix);
            }
            _ => {}
        }
    }
    None
}

struct Context<'p, 'm> {
    plan: &'p Plan,
    decls: BTreeMap<&'m str, &'m Decl>,
}

impl Context<'_, '_> {
    /// "experiment `e`: 12 trials (4 to 15)", for an experiment's name.
    fn experiment_size(&self, name: &str) -> Option<String> {
        let e = self.plan.experiments.iter().find(|e| e.name == name)?;
        let n = e.trials.len();
        Some(match n {
            0 => format!("experiment `{name}`: no trials"),
            1 => format!("experiment `{name}`: 1 trial (trial {})", e.trials.start),
            _ => format!(
                "experiment `{name}`: {n} trials ({} to {})",
                e.trials.start,
                e.trials.end - 1
            ),
        })
    }

    /// The experiments in whose trials the field is read.
    fn experiments_reading(&self, decl: &Decl, site: &Site) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for t in &self.plan.trials {
            if !out.contains(&t.experiment.as_str()) && !self.objects(t, decl, site).is_empty() {
                out.push(&t.experiment);
            }
        }
        out
    }

    /// The field's value in each trial, by trial index (a trial that reads it in two places
    /// with different values appears under both).
    fn values(&self, decl: &Decl, site: &Site) -> Vec<(String, Vec<usize>)> {
        let mut by_value: Vec<(String, Vec<usize>)> = Vec::new();
        for t in &self.plan.trials {
            for obj in self.objects(t, decl, site) {
                let Some(v) = follow(obj, self.field_path(decl, site)) else {
                    continue;
                };
                let text = render(v);
                match by_value.iter_mut().find(|(s, _)| *s == text) {
                    Some((_, trials)) => {
                        if trials.last() != Some(&t.index) {
                            trials.push(t.index)
                        }
                    }
                    None => by_value.push((text, vec![t.index])),
                }
            }
        }
        by_value
    }

    /// The path from the object [`objects`](Self::objects) gives to the field: in an
    /// experiment, a dotted `aht.lr` is read from the `aht` objects, so `lr`.
    fn field_path<'s>(&self, decl: &Decl, site: &'s Site) -> &'s [String] {
        if is_experiment(decl)
            && site.path.len() > 1
            && self.decls.contains_key(site.path[0].as_str())
        {
            &site.path[1..]
        } else {
            &site.path
        }
    }

    /// The objects of a trial whose field the site's text gives.
    fn objects<'t>(&self, t: &'t Trial, decl: &Decl, site: &Site) -> Vec<&'t Obj> {
        let chain = self.chain(&t.experiment);
        if is_experiment(decl) {
            let Some(at) = chain.iter().position(|d| d.name.node == decl.name.node) else {
                return Vec::new();
            };
            // a derived experiment that sets the same field again reads its own text
            if chain[..at].iter().any(|d| overrides(d, &site.path)) {
                return Vec::new();
            }
            if site.path.len() > 1 && self.decls.contains_key(site.path[0].as_str()) {
                let target = site.path[0].as_str();
                let mut out = Vec::new();
                collect(
                    &t.config,
                    &mut |o| o.decl.as_deref() == Some(target),
                    &mut out,
                );
                return out;
            }
            return vec![&t.config];
        }
        let name = decl.name.node.as_str();
        let mut out = Vec::new();
        collect(
            &t.config,
            &mut |o| {
                let Some(d) = o.decl.as_deref() else {
                    return false;
                };
                // the experiment's dotted overrides of this declaration's field win
                let overridden = chain.iter().any(|e| overrides_dotted(e, d, &site.path));
                !overridden && self.draws_from(d, name, &site.path)
            },
            &mut out,
        );
        out
    }

    /// Whether declaration `d` takes the field at `path` from `source`'s text: it is `source`,
    /// or derives from it without setting the field on the way.
    fn draws_from(&self, d: &str, source: &str, path: &[String]) -> bool {
        let mut d = d;
        for _ in 0..=self.decls.len() {
            if d == source {
                return true;
            }
            let Some(&decl) = self.decls.get(d) else {
                return false;
            };
            if overrides(decl, path) {
                return false;
            }
            match &decl.body {
                DeclBody::Derive { base, .. } => d = &base.node,
                _ => return false,
            }
        }
        false
    }

    /// An experiment and the experiments it derives from, itself first.
    fn chain(&self, experiment: &str) -> Vec<&Decl> {
        let mut out: Vec<&Decl> = Vec::new();
        let mut at = self.decls.get(experiment).copied();
        while let Some(d) = at {
            if out.iter().any(|o| o.name.node == d.name.node) {
                break;
            }
            out.push(d);
            at = match &d.body {
                DeclBody::Derive { base, .. } => self.decls.get(base.node.as_str()).copied(),
                _ => None,
            };
        }
        out
    }
}

fn is_experiment(d: &Decl) -> bool {
    d.kind.node == crate::syntax::ast::DeclKind::Experiment
}

/// Whether a declaration's own block sets the field at `path` (or a field holding it).
fn overrides(d: &Decl, path: &[String]) -> bool {
    d.body.block().is_some_and(|b| {
        fields(b)
            .any(|parts| parts.len() <= path.len() && parts.iter().zip(path).all(|(a, b)| a == b))
    })
}

/// Whether an experiment's block sets `decl.path` with a dotted field.
fn overrides_dotted(e: &Decl, decl: &str, path: &[String]) -> bool {
    e.body.block().is_some_and(|b| {
        fields(b).any(|parts| {
            parts.len() > 1
                && parts[0] == decl
                && parts.len() - 1 <= path.len()
                && parts[1..].iter().zip(path).all(|(a, b)| a == b)
        })
    })
}

/// The field paths a block sets, those of its `random` blocks included.
fn fields(b: &Block) -> impl Iterator<Item = Vec<String>> + '_ {
    b.entries.iter().flat_map(|e| -> Vec<Vec<String>> {
        match e {
            Entry::Field(f) => vec![f.path.parts.iter().map(|p| p.node.clone()).collect()],
            Entry::Random { block, .. } => fields(block).collect(),
            Entry::Zip { .. } => Vec::new(),
        }
    })
}

/// Every object under `o` (itself included) that `pick` accepts.
fn collect<'t>(o: &'t Obj, pick: &mut dyn FnMut(&Obj) -> bool, out: &mut Vec<&'t Obj>) {
    if pick(o) {
        out.push(o);
    }
    for (_, v) in &o.fields {
        collect_val(v, pick, out);
    }
}

fn collect_val<'t>(v: &'t Val, pick: &mut dyn FnMut(&Obj) -> bool, out: &mut Vec<&'t Obj>) {
    match v {
        Val::Obj(o) => collect(o, pick, out),
        Val::List(items) => items.iter().for_each(|i| collect_val(i, pick, out)),
        _ => {}
    }
}

/// The value at a field path inside an object.
fn follow<'t>(o: &'t Obj, path: &[String]) -> Option<&'t Val> {
    let (first, rest) = path.split_first()?;
    let v = &o.fields.iter().find(|(n, _)| n == first)?.1;
    match (rest.is_empty(), v) {
        (true, v) => Some(v),
        (false, Val::Obj(inner)) => follow(inner, rest),
        _ => None,
    }
}

/// A value as recipe text, a declared object by its name, long text cut.
fn render(v: &Val) -> String {
    let text = match v {
        Val::Obj(o) => match &o.decl {
            Some(d) => d.clone(),
            None => v.to_source(),
        },
        _ => v.to_source(),
    };
    if text.chars().count() > 80 {
        let cut: String = text.chars().take(77).collect();
        format!("{cut}…")
    } else {
        text
    }
}

fn render_values(field: &str, values: &[(String, Vec<usize>)], plan: &Plan) -> String {
    let mut out = format!("**`{field}`** in each trial:\n");
    for (text, trials) in values.iter().take(MOST_LISTED) {
        out.push_str(&format!("- `{text}`: {}\n", trial_list(trials, plan)));
    }
    if values.len() > MOST_LISTED {
        out.push_str(&format!(
            "- and {} other values\n",
            values.len() - MOST_LISTED
        ));
    }
    out
}

/// "trials 0 to 3 and 7 of `e`", by experiment, consecutive trials as ranges.
fn trial_list(trials: &[usize], plan: &Plan) -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in &plan.experiments {
        let mine: Vec<usize> = trials
            .iter()
            .copied()
            .filter(|t| e.trials.contains(t))
            .collect();
        if mine.is_empty() {
            continue;
        }
        let all = mine.len() == e.trials.len();
        let mut runs: Vec<String> = Vec::new();
        let mut i = 0;
        while i < mine.len() {
            let mut j = i;
            while j + 1 < mine.len() && mine[j + 1] == mine[j] + 1 {
                j += 1;
            }
            runs.push(if j == i {
                mine[i].to_string()
            } else {
                format!("{} to {}", mine[i], mine[j])
            });
            i = j + 1;
        }
        let n = mine.len();
        parts.push(if all && n > 1 {
            format!("all {n} trials of `{}`", e.name)
        } else {
            format!("trial{} {} of `{}`", plural(n), runs.join(", "), e.name)
        });
    }
    parts.join("; ")
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lsp_types::Uri;
    use std::str::FromStr;

    // `b` and `c` derive from `a`; the schedule's `c` reads each optimizer's `lr`; `f` derives
    // from `e`, sets its own optimizer and overrides `a.lr`, which `c` (a derivation, not `a`)
    // does not see. Trial numbers as `ahtsgd plan` prints them: `e` 0-3 (a, a, b, b), `f` 4-5.
    const RECIPE: &str = "dataset digits = mnist_mini {}
model net = mlp { hidden = [8] }
schedule s = adaptive { map = sigmoid { v = 4.0, c = log(1 / lr) } }
optimizer a = ahtsgd { lr = 0.1, sigma = 0.01, alpha = s }
optimizer b = a with { lr = 0.2 }
optimizer c = a with { sigma = 0.02 }
experiment e {
  data = digits
  model = net
  optimizer = sweep(a, b)
  seed = sweep(0..2)
  epochs = 1
}
experiment f = e with { optimizer = c, a.lr = 0.5 }
";

    fn hover_at(text: &str, needle: &str) -> Option<String> {
        let uri = Uri::from_str("untitled:values.aht").unwrap();
        let doc = Document::check(&uri, text);
        hover(&doc, text.find(needle).unwrap() + 1)
    }

    #[test]
    fn a_field_gives_its_value_in_each_trial_that_reads_its_text() {
        // `b` sets its own lr; `c` takes `a`'s
        let h = hover_at(RECIPE, "0.1,").unwrap();
        assert_eq!(
            h,
            "**`lr`** in each trial:\n- `0.1`: trials 0 to 1 of `e`; all 2 trials of `f`"
        );
        let h = hover_at(RECIPE, "0.2").unwrap();
        assert_eq!(h, "**`lr`** in each trial:\n- `0.2`: trials 2 to 3 of `e`");
        // c's own sigma, and a's sigma where c does not replace it
        let h = hover_at(RECIPE, "0.01").unwrap();
        assert!(h.ends_with("- `0.01`: all 4 trials of `e`"), "{h}");
    }

    #[test]
    fn a_schedules_expression_of_lr_has_a_value_per_optimizer() {
        // log(1 / 0.1) and log(1 / 0.2), as f64 computes them
        let h = hover_at(RECIPE, "log(1").unwrap();
        let (ten, five) = ((1.0f64 / 0.1).ln(), (1.0f64 / 0.2).ln());
        assert_eq!(
            h,
            format!(
                "**`map.c`** in each trial:\n- `{ten:?}`: trials 0 to 1 of `e`; all 2 trials of `f`\n- `{five:?}`: trials 2 to 3 of `e`"
            )
        );
        // a nested setting's constant
        let h = hover_at(RECIPE, "4.0").unwrap();
        assert!(
            h.contains("`map.v`")
                && h.contains("- `4.0`: all 4 trials of `e`; all 2 trials of `f`"),
            "{h}"
        );
    }

    #[test]
    fn a_sweep_says_how_many_values_and_trials() {
        let h = hover_at(RECIPE, "sweep(a").unwrap();
        assert_eq!(
            h,
            "**sweep** of `optimizer`: 2 values\n\nexperiment `e`: 4 trials (0 to 3)\n\n\
             **`optimizer`** in each trial:\n- `a`: trials 0 to 1 of `e`\n- `b`: trials 2 to 3 of `e`"
        );
        // `f` inherits `e`'s seed sweep
        let h = hover_at(RECIPE, "sweep(0").unwrap();
        assert!(
            h.starts_with("**sweep** of `seed`: 2 values\n\nexperiment `e`: 4 trials (0 to 3)\n\nexperiment `f`: 2 trials (4 to 5)"),
            "{h}"
        );
        assert!(
            h.contains("- `0`: trials 0, 2 of `e`; trial 4 of `f`"),
            "{h}"
        );
        assert_eq!(
            hover_at(RECIPE, "f =").unwrap(),
            "experiment `f`: 2 trials (4 to 5)"
        );
    }

    #[test]
    fn every_offset_of_a_checked_recipe_and_past_its_end_is_answered() {
        let uri = Uri::from_str("untitled:values.aht").unwrap();
        let text = format!("\u{feff}# é𝛼\n{RECIPE}");
        let doc = Document::check(&uri, &text);
        let answered = (0..text.len() + 5)
            .filter(|&at| hover(&doc, at).is_some())
            .count();
        assert!(answered > 50, "{answered}");
    }

    #[test]
    fn nothing_where_no_trial_reads_the_text_or_the_recipe_has_errors() {
        // f's `a.lr` applies to `a` objects, and f's trials use `c`
        assert_eq!(hover_at(RECIPE, "0.5"), None);
        // outside any field's value
        assert_eq!(hover_at(RECIPE, "dataset"), None);
        let broken = RECIPE.replace("hidden", "hiden");
        assert_eq!(hover_at(&broken, "0.2"), None);
    }
}
