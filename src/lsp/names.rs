//! Declarations and their uses, across a document and the files it imports: go to definition,
//! find references and rename. A use is a name in a value (`data = digits`), the base of a
//! derivation (`fast = base with {...}`), the first part of a dotted experiment path
//! (`aht.sigma = ...`, in a field or a `zip(...)`), and the name inside `baseline = "plain"`.

use super::document::Document;
use crate::source::{FileId, Span};
use crate::syntax::ast::{Block, DeclBody, Entry, Expr, ExprKind, Item, Module, Path};
use lsp_types::{Location, Range, TextEdit, Uri, WorkspaceEdit};
use std::collections::{HashMap, HashSet};

/// One occurrence of a declared name.
#[derive(Clone, Debug, PartialEq)]
pub struct Occurrence {
    pub name: String,
    pub span: Span,
    /// The declaration itself (`dataset digits = ...`).
    pub declares: bool,
}

/// Every occurrence of a name declared in any of `modules`.
pub fn occurrences(modules: &[(FileId, Module)]) -> Vec<Occurrence> {
    let declared: HashSet<&str> = modules
        .iter()
        .flat_map(|(_, m)| &m.items)
        .filter_map(|i| match i {
            Item::Decl(d) => Some(d.name.node.as_str()),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    let mut push = |name: &str, span: Span, declares: bool| {
        if declared.contains(name) {
            out.push(Occurrence {
                name: name.to_string(),
                span,
                declares,
            });
        }
    };
    for (_, m) in modules {
        for item in &m.items {
            let Item::Decl(d) = item else { continue };
            push(&d.name.node, d.name.span, true);
            match &d.body {
                DeclBody::Construct { block, .. } => {
                    if let Some(b) = block {
                        block_uses(b, &mut push);
                    }
                }
                DeclBody::Derive { base, block } => {
                    push(&base.node, base.span, false);
                    block_uses(block, &mut push);
                }
                DeclBody::Block(b) => block_uses(b, &mut push),
            }
        }
    }
    out
}

fn path_use(p: &Path, push: &mut impl FnMut(&str, Span, bool)) {
    if p.parts.len() > 1 {
        push(&p.parts[0].node, p.parts[0].span, false);
    }
}

fn block_uses(b: &Block, push: &mut impl FnMut(&str, Span, bool)) {
    for e in &b.entries {
        match e {
            Entry::Field(f) => {
                path_use(&f.path, push);
                if f.path.dotted() == "baseline"
                    && let ExprKind::Str(s) = &f.value.node
                {
                    // the name between the quotes
                    let v = f.value.span;
                    if (v.end - v.start) as usize == s.len() + 2 {
                        push(
                            s,
                            Span::new(v.file, v.start as usize + 1, v.end as usize - 1),
                            false,
                        );
                    }
                }
                expr_uses(&f.value, push);
            }
            Entry::Zip { paths, .. } => {
                for p in paths {
                    path_use(p, push);
                }
            }
            Entry::Random { args, block, .. } => {
                for a in args {
                    expr_uses(&a.value, push);
                }
                block_uses(block, push);
            }
        }
    }
}

fn expr_uses(e: &Expr, push: &mut impl FnMut(&str, Span, bool)) {
    match &e.node {
        ExprKind::Ref(name) => push(name, e.span, false),
        ExprKind::List(items) => items.iter().for_each(|i| expr_uses(i, push)),
        ExprKind::Object { block, .. } => block_uses(block, push),
        ExprKind::Call { args, .. } => args.iter().for_each(|a| expr_uses(&a.value, push)),
        ExprKind::Neg(x) | ExprKind::Paren(x) => expr_uses(x, push),
        ExprKind::Binary { lhs, rhs, .. } | ExprKind::Range(lhs, rhs) => {
            expr_uses(lhs, push);
            expr_uses(rhs, push);
        }
        _ => {}
    }
}

/// The occurrence under byte `offset` of the document.
fn at<'o>(doc: &Document, all: &'o [Occurrence], offset: usize) -> Option<&'o Occurrence> {
    let offset = doc.checker_offset(offset)?;
    all.iter().find(|o| {
        doc.is_root(o.span) && (o.span.start as usize) <= offset && offset <= o.span.end as usize
    })
}

/// Where the name under the cursor is declared.
pub fn definition(uri: &Uri, text: &str, offset: usize) -> Option<Location> {
    let doc = Document::check(uri, text);
    let all = occurrences(&doc.checked.modules);
    let here = at(&doc, &all, offset)?;
    let decl = all.iter().find(|o| o.declares && o.name == here.name)?;
    doc.location(decl.span)
}

/// Every place the name under the cursor is used (and declared, with `declaration`).
pub fn references(uri: &Uri, text: &str, offset: usize, declaration: bool) -> Vec<Location> {
    let doc = Document::check(uri, text);
    let all = occurrences(&doc.checked.modules);
    let Some(here) = at(&doc, &all, offset) else {
        return Vec::new();
    };
    all.iter()
        .filter(|o| o.name == here.name && (declaration || !o.declares))
        .filter_map(|o| doc.location(o.span))
        .collect()
}

/// Why a rename is refused.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum RenameError {
    #[error("no declared name here")]
    NoName,
    #[error("`{0}` is not a name: use letters, digits and `_`, not starting with a digit")]
    NotAName(String),
    #[error("`{0}` is a keyword")]
    Keyword(String),
    #[error("`{0}` is declared already")]
    Taken(String),
}

const KEYWORDS: &[&str] = &[
    "dataset",
    "model",
    "schedule",
    "optimizer",
    "experiment",
    "import",
    "version",
    "with",
    "sweep",
    "zip",
    "random",
    "true",
    "false",
    "steps",
    "epochs",
    "step",
    "epoch",
];

/// The edits that rename the name under the cursor everywhere it is declared and used.
// lsp-types keys a WorkspaceEdit's changes by Uri, whose hash and equality read its text only
#[allow(clippy::mutable_key_type)]
pub fn rename(
    uri: &Uri,
    text: &str,
    offset: usize,
    new_name: &str,
) -> Result<WorkspaceEdit, RenameError> {
    let mut chars = new_name.chars();
    let ok = chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_');
    if !ok {
        return Err(RenameError::NotAName(new_name.into()));
    }
    if KEYWORDS.contains(&new_name) {
        return Err(RenameError::Keyword(new_name.into()));
    }
    let doc = Document::check(uri, text);
    let all = occurrences(&doc.checked.modules);
    let here = at(&doc, &all, offset).ok_or(RenameError::NoName)?;
    if new_name != here.name && all.iter().any(|o| o.declares && o.name == new_name) {
        return Err(RenameError::Taken(new_name.into()));
    }
    let mut changes: HashMap<Uri, Vec<TextEdit>> = HashMap::new();
    for o in all.iter().filter(|o| o.name == here.name) {
        if let Some(l) = doc.location(o.span) {
            changes
                .entry(l.uri)
                .or_default()
                .push(TextEdit::new(l.range, new_name.to_string()));
        }
    }
    Ok(WorkspaceEdit {
        changes: Some(changes),
        ..Default::default()
    })
}

/// The range of the name under the cursor, for `prepareRename`.
pub fn name_range(uri: &Uri, text: &str, offset: usize) -> Option<Range> {
    let doc = Document::check(uri, text);
    let all = occurrences(&doc.checked.modules);
    let here = at(&doc, &all, offset)?;
    doc.location(here.span).map(|l| l.range)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsp::position::LineIndex;
    use std::str::FromStr;

    const RECIPE: &str = "optimizer plain = sgd { lr = 0.1 }
optimizer aht = ahtsgd { lr = 0.1 }
optimizer fast = plain with { momentum = 0.9 }
experiment e {
  data = blobs {}
  model = mlp {}
  optimizer = sweep(aht, plain, fast)
  aht.sigma = sweep(0.01, 0.02)
  epochs = 1
  baseline = \"plain\"
}
";

    fn uri() -> Uri {
        Uri::from_str("untitled:r.aht").unwrap()
    }

    fn ranges(locs: &[Location]) -> Vec<(u32, u32, u32)> {
        let mut v: Vec<_> = locs
            .iter()
            .map(|l| {
                (
                    l.range.start.line,
                    l.range.start.character,
                    l.range.end.character,
                )
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn every_use_is_found_from_any_of_them() {
        // from the use in the sweep
        let at = RECIPE.find("plain, fast").unwrap() + 2;
        let refs = references(&uri(), RECIPE, at, true);
        // declared on line 0, derived from on line 2, swept on line 6, baseline on line 9
        assert_eq!(
            ranges(&refs),
            [(0, 10, 15), (2, 17, 22), (6, 25, 30), (9, 14, 19)]
        );
        let without = references(&uri(), RECIPE, at, false);
        assert_eq!(without.len(), 3);
        let d = definition(&uri(), RECIPE, RECIPE.find("\"plain\"").unwrap() + 3).unwrap();
        assert_eq!(d.range.start, lsp_types::Position::new(0, 10));
        // the dotted path's first part is a use of `aht`
        let at = RECIPE.find("aht.sigma").unwrap();
        assert_eq!(
            ranges(&references(&uri(), RECIPE, at, true)),
            [(1, 10, 13), (6, 20, 23), (7, 2, 5)]
        );
        // a kind is no declared name
        assert!(definition(&uri(), RECIPE, RECIPE.find("sgd").unwrap()).is_none());
    }

    #[test]
    fn renaming_edits_every_occurrence_and_refuses_what_would_break() {
        let at = RECIPE.find("plain").unwrap() + 1;
        let edit = rename(&uri(), RECIPE, at, "base").unwrap();
        let edits = &edit.changes.unwrap()[&uri()];
        assert_eq!(edits.len(), 4);
        // applied from the end, the recipe checks with the new name and the same plan
        let idx = LineIndex::new(RECIPE);
        let mut spans: Vec<(usize, usize)> = edits
            .iter()
            .map(|e| {
                (
                    idx.offset(RECIPE, e.range.start),
                    idx.offset(RECIPE, e.range.end),
                )
            })
            .collect();
        spans.sort();
        let mut renamed = RECIPE.to_string();
        for (a, b) in spans.into_iter().rev() {
            renamed.replace_range(a..b, "base");
        }
        let before = crate::check::check_text("r.aht", RECIPE, &Default::default());
        let after = crate::check::check_text("r.aht", &renamed, &Default::default());
        assert!(!after.has_errors(), "{renamed}");
        assert_eq!(
            before.plan.unwrap().trials.len(),
            after.plan.unwrap().trials.len()
        );
        assert!(!renamed.contains("plain"));
        assert_eq!(
            rename(&uri(), RECIPE, at, "aht"),
            Err(RenameError::Taken("aht".into()))
        );
        assert_eq!(
            rename(&uri(), RECIPE, at, "2fast"),
            Err(RenameError::NotAName("2fast".into()))
        );
        assert_eq!(
            rename(&uri(), RECIPE, at, "model"),
            Err(RenameError::Keyword("model".into()))
        );
        assert_eq!(
            rename(&uri(), RECIPE, RECIPE.find("0.1").unwrap(), "x"),
            Err(RenameError::NoName)
        );
    }
}
