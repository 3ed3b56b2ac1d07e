//! What the language server says about a document: the checker's diagnostics, hover text and
//! completions read from the checker's schema, document symbols and formatting. Hover and
//! completion read the text around the cursor, not the syntax tree, so they work in a recipe
//! that is half typed and does not parse.

use super::document::{BOM, Document};
use super::position::LineIndex;
use crate::check::schema::{self, Category, FieldSpec, KindSpec, Ty};
use crate::diagnostic::Severity;
use crate::source::SourceMap;
use crate::syntax::ast::{DeclBody, DeclKind, Item};
use lsp_types::{
    CompletionItem, CompletionItemKind, DiagnosticRelatedInformation, DiagnosticSeverity,
    DocumentSymbol, Location, NumberOrString, Range, SymbolKind, TextEdit, Uri,
};

/// The checker's diagnostics of the document `uri` with this text, and of the files it
/// imports, by the URI of each file (the document's first).
pub fn diagnostics(uri: &Uri, text: &str) -> Vec<(Uri, Vec<lsp_types::Diagnostic>)> {
    let doc = Document::check(uri, text);
    let located = |s: crate::source::Span| doc.location(s).map(|l| (l.uri, l.range));
    let mut out: Vec<(Uri, Vec<lsp_types::Diagnostic>)> = vec![(uri.clone(), Vec::new())];
    for d in doc.checked.diagnostics.iter().filter(|d| !d.consequence) {
        let (target, range) = match d.span {
            Some(s) => match located(s) {
                Some(l) => l,
                None => continue,
            },
            None => (uri.clone(), Range::default()),
        };
        let mut message = d.message.clone();
        if !d.label.is_empty() && !d.message.contains(&d.label) {
            message.push_str(&format!(" ({})", d.label));
        }
        if let Some(h) = &d.help {
            message.push_str(&format!("\nhelp: {h}"));
        }
        let related: Vec<DiagnosticRelatedInformation> = d
            .related
            .iter()
            .filter_map(|(s, text)| {
                let (u, r) = located(*s)?;
                Some(DiagnosticRelatedInformation {
                    location: Location::new(u, r),
                    message: text.clone(),
                })
            })
            .collect();
        let diag = lsp_types::Diagnostic {
            range,
            severity: Some(match d.severity {
                Severity::Error => DiagnosticSeverity::ERROR,
                Severity::Warning => DiagnosticSeverity::WARNING,
            }),
            code: Some(NumberOrString::String(d.code.as_str().to_string())),
            source: Some("ahtsgd".into()),
            message,
            related_information: (!related.is_empty()).then_some(related),
            ..Default::default()
        };
        match out.iter_mut().find(|(u, _)| *u == target) {
            Some((_, list)) => list.push(diag),
            None => out.push((target, vec![diag])),
        }
    }
    out
}

/// The checker's did-you-mean suggestions for the mistakes that overlap `range`, as quick
/// fixes that replace the misspelled name.
pub fn quick_fixes(uri: &Uri, text: &str, range: Range) -> Vec<lsp_types::CodeAction> {
    let idx = LineIndex::new(text);
    let (from, to) = (idx.offset(text, range.start), idx.offset(text, range.end));
    let Some((_, found)) = diagnostics(uri, text).into_iter().next() else {
        return Vec::new();
    };
    found
        .into_iter()
        .filter_map(|d| {
            let (a, b) = (
                idx.offset(text, d.range.start),
                idx.offset(text, d.range.end),
            );
            if b < from || a > to {
                return None;
            }
            let help = d.message.split("\nhelp: ").nth(1)?;
            let name = help.strip_prefix("did you mean `")?.split('`').next()?;
            // only a name is replaced by a name
            let written = &text[a..b];
            if written.is_empty() || !written.chars().all(is_word) {
                return None;
            }
            let edit = TextEdit::new(d.range, name.to_string());
            Some(lsp_types::CodeAction {
                title: format!("Change `{written}` to `{name}`"),
                kind: Some(lsp_types::CodeActionKind::QUICKFIX),
                diagnostics: Some(vec![d]),
                edit: Some(lsp_types::WorkspaceEdit {
                    changes: Some([(uri.clone(), vec![edit])].into_iter().collect()),
                    ..Default::default()
                }),
                is_preferred: Some(true),
                ..Default::default()
            })
        })
        .collect()
}

/// The whole document formatted as `ahtsgd fmt` formats it (`None` when it does not parse,
/// or is formatted already).
pub fn format(text: &str) -> Option<Vec<TextEdit>> {
    let body = text.strip_prefix(BOM).unwrap_or(text);
    let mut sources = SourceMap::new();
    let id = sources.add("document", None, body);
    let module = crate::syntax::parse(id, body).ok()?;
    let formatted = crate::fmt::format(&module, body);
    if formatted == body {
        return None;
    }
    let idx = LineIndex::new(text);
    Some(vec![TextEdit::new(
        idx.range(text, 0, text.len()),
        formatted,
    )])
}

/// The declarations, with their kinds (an empty list when the text does not parse).
#[allow(deprecated)] // `DocumentSymbol::deprecated` must still be given
pub fn symbols(text: &str) -> Vec<DocumentSymbol> {
    let shift = if text.starts_with(BOM) { BOM.len() } else { 0 };
    let body = &text[shift..];
    let mut sources = SourceMap::new();
    let id = sources.add("document", None, body);
    let Ok(module) = crate::syntax::parse(id, body) else {
        return Vec::new();
    };
    let idx = LineIndex::new(text);
    let range =
        |s: crate::source::Span| idx.range(text, s.start as usize + shift, s.end as usize + shift);
    module
        .items
        .iter()
        .filter_map(|item| match item {
            Item::Decl(d) => Some(DocumentSymbol {
                name: d.name.node.clone(),
                detail: Some(match &d.body {
                    DeclBody::Construct { kind, .. } => {
                        format!("{} {}", d.kind.node.keyword(), kind.node)
                    }
                    DeclBody::Derive { base, .. } => {
                        format!("{} from {}", d.kind.node.keyword(), base.node)
                    }
                    DeclBody::Block(_) => d.kind.node.keyword().to_string(),
                }),
                kind: match d.kind.node {
                    DeclKind::Dataset => SymbolKind::STRUCT,
                    DeclKind::Model => SymbolKind::CLASS,
                    DeclKind::Schedule => SymbolKind::FUNCTION,
                    DeclKind::Optimizer => SymbolKind::OBJECT,
                    DeclKind::Experiment => SymbolKind::MODULE,
                },
                tags: None,
                deprecated: None,
                range: range(d.span),
                selection_range: range(d.name.span),
                children: None,
            }),
            _ => None,
        })
        .collect()
}

/// A declaration header found by reading lines: `dataset digits = mnist`.
struct DeclLine<'t> {
    keyword: DeclKind,
    name: &'t str,
    /// The kind constructed, or the declaration derived from (`with`).
    value: &'t str,
    derived: bool,
    line: &'t str,
}

fn decl_lines(text: &str) -> Vec<DeclLine<'_>> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let keyword = DeclKind::from_keyword(words.next()?)?;
            let rest = line.trim_start()[keyword.keyword().len()..].trim_start();
            let (name, rest) = split_word(rest);
            if name.is_empty() {
                return None;
            }
            if keyword == DeclKind::Experiment {
                return Some(DeclLine {
                    keyword,
                    name,
                    value: "experiment",
                    derived: false,
                    line: line.trim(),
                });
            }
            let rest = rest.trim_start().strip_prefix('=')?.trim_start();
            let (value, after) = split_word(rest);
            Some(DeclLine {
                keyword,
                name,
                value,
                derived: after.trim_start().starts_with("with"),
                line: line.trim(),
            })
        })
        .collect()
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The leading identifier of `s` and the rest.
fn split_word(s: &str) -> (&str, &str) {
    let end = s.find(|c| !is_word(c)).unwrap_or(s.len());
    (&s[..end], &s[end..])
}

/// Where the identifier that ends at `offset` starts (`offset` when none does).
fn word_start(text: &str, offset: usize) -> usize {
    text[..offset]
        .char_indices()
        .rev()
        .take_while(|(_, c)| is_word(*c))
        .last()
        .map_or(offset, |(i, _)| i)
}

/// The identifier before byte `end` of `text` (skipping spaces), with its start.
fn word_before(text: &str, end: usize) -> (&str, usize) {
    let t = text[..end].trim_end();
    let start = t
        .char_indices()
        .rev()
        .take_while(|(_, c)| is_word(*c))
        .last()
        .map_or(t.len(), |(i, _)| i);
    (&t[start..], start)
}

/// The declaration category of a keyword.
fn category(k: DeclKind) -> Category {
    crate::check::resolve::category_of(k)
}

/// A kind by name, in `prefer` when it has one there.
fn kind_named(name: &str, prefer: Option<Category>) -> Option<&'static KindSpec> {
    prefer
        .and_then(|c| schema::kind(c, name))
        .or_else(|| schema::KINDS.iter().find(|k| k.name == name))
}

/// The brackets open at `offset`, innermost last: (character, byte position). Strings and
/// comments are skipped, so their brackets do not count.
fn open_brackets(text: &str, offset: usize) -> Vec<(char, usize)> {
    let mut stack = Vec::new();
    let mut chars = text[..offset].char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => {
                let mut escaped = false;
                for (_, c) in chars.by_ref() {
                    match c {
                        '\\' if !escaped => escaped = true,
                        '"' if !escaped => break,
                        '\n' => break,
                        _ => escaped = false,
                    }
                }
            }
            '#' => {
                for (_, c) in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '{' | '(' | '[' => stack.push((c, i)),
            '}' | ')' | ']' => {
                stack.pop();
            }
            _ => {}
        }
    }
    stack
}

/// The kind whose fields are written inside the bracket opened at `at` (`{` of a block, `(`
/// of a call).
fn kind_of_opener(text: &str, open: char, at: usize) -> Option<&'static KindSpec> {
    let (w, start) = word_before(text, at);
    if w.is_empty() {
        return None;
    }
    let decls = decl_lines(text);
    if open == '{' {
        if w == "with" {
            let (base, _) = word_before(text, start);
            return decl_kind(&decls, base, 0);
        }
        let (before, _) = word_before(text, start);
        if before == "experiment" {
            return Some(schema::experiment());
        }
        // `dataset d = mnist {`: the keyword says the category
        let head = text[..start].trim_end();
        let prefer = head.strip_suffix('=').and_then(|h| {
            let (_, name_start) = word_before(h, h.len());
            let (kw, _) = word_before(h, name_start);
            DeclKind::from_keyword(kw).map(category)
        });
        return kind_named(w, prefer);
    }
    kind_named(w, Some(Category::Layer))
}

/// The kind a declared name stands for, following `with` derivations.
fn decl_kind(decls: &[DeclLine], name: &str, depth: usize) -> Option<&'static KindSpec> {
    let d = decls.iter().find(|d| d.name == name)?;
    if d.keyword == DeclKind::Experiment {
        return Some(schema::experiment());
    }
    if d.derived {
        return (depth < 16)
            .then(|| decl_kind(decls, d.value, depth + 1))
            .flatten();
    }
    schema::kind(category(d.keyword), d.value)
}

/// The field whose value is being written at `offset`, in the entries from byte `from` on:
/// the name before the `=` of the entry the cursor is in.
fn field_at(text: &str, from: usize, offset: usize) -> Option<&str> {
    let entry = &text[from..offset];
    let cut = entry.rfind([',', '\n', '{', '(']).map_or(0, |i| i + 1);
    let entry = &entry[cut..];
    let eq = entry.find('=')?;
    let (name, _) = word_before(entry, eq);
    (!name.is_empty()).then_some(name)
}

/// How a field's type reads in hover text.
fn describe(ty: &Ty) -> String {
    match ty {
        Ty::Int { min, max } if *max == i64::MAX => format!("a whole number ≥ {min}"),
        Ty::Int { min, max } => format!("a whole number in {min}..={max}"),
        Ty::Float { min, min_open, .. } => {
            format!("a number {} {min}", if *min_open { ">" } else { "≥" })
        }
        Ty::Bool => "`true` or `false`".into(),
        Ty::Str => "a string".into(),
        Ty::Enum(names) => format!(
            "one of {}",
            names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Ty::IntList { .. } => "a list of whole numbers".into(),
        Ty::FloatList { .. } => "a list of numbers".into(),
        Ty::ObjList(c) => format!("a list of {}s", c.noun()),
        Ty::Quantity { units, .. } => format!(
            "a quantity in {}",
            units
                .iter()
                .map(|u| u.name())
                .collect::<Vec<_>>()
                .join(" or ")
        ),
        Ty::Obj(c) => format!("a {}", c.noun()),
        Ty::Kernel => "a kernel size: a whole number or `[kh, kw]`".into(),
        Ty::Width => "a width: a whole number or `classes`".into(),
        Ty::Stack => "a stack of layers `[...]`".into(),
        Ty::Alpha => "an α schedule, or a number for a fixed α".into(),
        Ty::Signal => "an expression over training signals".into(),
    }
}

fn field_doc(kind: &KindSpec, f: &FieldSpec) -> String {
    let default = match f.default {
        Some(d) => format!("default `{d}`"),
        None => "required".into(),
    };
    format!(
        "**{}** — field of `{}` ({})\n\n{}\n\n{}; {default}",
        f.name,
        kind.name,
        kind.category.noun(),
        f.doc,
        describe(&f.ty)
    )
}

fn kind_doc(k: &KindSpec) -> String {
    let fields: Vec<String> = k
        .fields
        .iter()
        .map(|f| match f.default {
            Some(d) => format!("- `{}` = `{d}`: {}", f.name, f.doc),
            None => format!("- `{}` (required): {}", f.name, f.doc),
        })
        .collect();
    format!(
        "**{}** — {}\n\n{}\n\n{}",
        k.name,
        k.category.noun(),
        k.doc,
        fields.join("\n")
    )
}

/// The hover text at byte `offset`: a field's documentation and default, a kind's
/// documentation and fields, or a declared name's declaration.
pub fn hover(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let offset = (0..=offset).rev().find(|&i| text.is_char_boundary(i))?;
    let start = word_start(text, offset);
    let end = offset
        + text[offset..]
            .find(|c| !is_word(c))
            .unwrap_or(text.len() - offset);
    let word = &text[start..end];
    if word.is_empty() || word.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let after = text[end..].trim_start();
    let stack = open_brackets(text, start);
    // a field: `name =` inside a block or a call
    if after.starts_with('=')
        && let Some(&(open, at)) = stack.last()
        && let Some(kind) = kind_of_opener(text, open, at)
        && let Some(f) = kind.field(word)
    {
        return Some(field_doc(kind, f));
    }
    let decls = decl_lines(text);
    if let Some(d) = decls.iter().find(|d| d.name == word) {
        let head = text[..start].trim_end();
        let declaring = head.ends_with(d.keyword.keyword());
        if !declaring {
            return Some(format!(
                "{} `{}`\n\n```aht\n{}\n```",
                d.keyword.keyword(),
                d.name,
                d.line
            ));
        }
    }
    let matching: Vec<&KindSpec> = schema::KINDS.iter().filter(|k| k.name == word).collect();
    if !matching.is_empty() {
        return Some(
            matching
                .iter()
                .map(|k| kind_doc(k))
                .collect::<Vec<_>>()
                .join("\n\n---\n\n"),
        );
    }
    None
}

fn item(
    label: &str,
    kind: CompletionItemKind,
    detail: String,
    doc: Option<String>,
) -> CompletionItem {
    CompletionItem {
        label: label.to_string(),
        kind: Some(kind),
        detail: Some(detail),
        documentation: doc.map(|d| {
            lsp_types::Documentation::MarkupContent(lsp_types::MarkupContent {
                kind: lsp_types::MarkupKind::Markdown,
                value: d,
            })
        }),
        ..Default::default()
    }
}

/// The kinds of a category and the declarations of it, as completions.
fn values_of(cat: Category, text: &str) -> Vec<CompletionItem> {
    let mut out: Vec<CompletionItem> = decl_lines(text)
        .iter()
        .filter(|d| category(d.keyword) == cat && d.keyword != DeclKind::Experiment)
        .map(|d| {
            item(
                d.name,
                CompletionItemKind::VARIABLE,
                d.line.to_string(),
                None,
            )
        })
        .collect();
    out.extend(schema::kinds(cat).map(|k| {
        item(
            k.name,
            CompletionItemKind::CLASS,
            format!("{}: {}", cat.noun(), k.doc),
            Some(kind_doc(k)),
        )
    }));
    out
}

/// What can be written at byte `offset`: the fields of the block or call under the cursor, the
/// kinds and declared names a field takes, enum values, layer kinds in a stack, declaration
/// keywords at the top level.
pub fn completion(text: &str, offset: usize) -> Vec<CompletionItem> {
    let offset = offset.min(text.len());
    let Some(offset) = (0..=offset).rev().find(|&i| text.is_char_boundary(i)) else {
        return Vec::new();
    };
    // the word being typed is replaced by the completion: look before it
    let typed = word_start(text, offset);
    let before = text[..typed].trim_end();
    let stack = open_brackets(text, typed);
    let Some(&(open, at)) = stack.last() else {
        // top level: a declaration's kind after `keyword name =`, else a keyword
        if let Some(head) = before.strip_suffix('=') {
            let (_, name_start) = word_before(head, head.len());
            let (kw, _) = word_before(head, name_start);
            if let Some(k) = DeclKind::from_keyword(kw) {
                let mut out = values_of(category(k), text);
                out.retain(|i| i.kind == Some(CompletionItemKind::CLASS));
                return out;
            }
        }
        let mut out: Vec<CompletionItem> = DeclKind::ALL
            .iter()
            .map(|k| {
                item(
                    k.keyword(),
                    CompletionItemKind::KEYWORD,
                    format!("declare a {}", category(*k).noun()),
                    None,
                )
            })
            .collect();
        out.push(item(
            "import",
            CompletionItemKind::KEYWORD,
            "import another recipe file".into(),
            None,
        ));
        out.push(item(
            "version",
            CompletionItemKind::KEYWORD,
            "the language version".into(),
            None,
        ));
        return out;
    };
    // inside a list: a stack's layers, or a list of objects
    if open == '[' {
        let outer = stack.len().checked_sub(2).map(|i| stack[i]);
        let field = field_at(text, outer.map_or(0, |(_, p)| p + 1), at);
        let owner = outer.and_then(|(o, p)| kind_of_opener(text, o, p));
        return match owner.zip(field).and_then(|(k, f)| k.field(f)).map(|f| f.ty) {
            Some(Ty::Stack) => values_of(Category::Layer, text),
            Some(Ty::ObjList(c)) => values_of(c, text),
            Some(Ty::Obj(c)) => values_of(c, text),
            _ => Vec::new(),
        };
    }
    let owner = kind_of_opener(text, open, at);
    let entry_start = before
        .rfind([',', '\n', '{', '('])
        .map_or(0, |i| i + 1)
        .max(at + 1);
    let in_value = text[entry_start.min(typed)..typed].contains('=');
    if !in_value {
        let Some(k) = owner else { return Vec::new() };
        return k
            .fields
            .iter()
            .map(|f| {
                item(
                    f.name,
                    CompletionItemKind::FIELD,
                    format!("{}: {}", describe(&f.ty), f.doc),
                    Some(field_doc(k, f)),
                )
            })
            .collect();
    }
    let Some(f) = owner
        .zip(field_at(text, entry_start.min(typed), typed))
        .and_then(|(k, n)| k.field(n))
    else {
        return Vec::new();
    };
    match f.ty {
        Ty::Obj(c) | Ty::ObjList(c) => values_of(c, text),
        Ty::Alpha => values_of(Category::Schedule, text),
        Ty::Stack => values_of(Category::Layer, text),
        Ty::Enum(names) => names
            .iter()
            .map(|n| item(n, CompletionItemKind::ENUM_MEMBER, f.name.to_string(), None))
            .collect(),
        Ty::Bool => ["true", "false"]
            .iter()
            .map(|n| item(n, CompletionItemKind::VALUE, f.name.to_string(), None))
            .collect(),
        Ty::Width => vec![item(
            "classes",
            CompletionItemKind::VALUE,
            "the dataset's class count".into(),
            None,
        )],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECIPE: &str = "dataset digits = mnist { download = true }
model net = mlp { hidden = [64] }
optimizer base = sgd { lr = 0.1 }
optimizer fast = base with { momentum = 0.9 }
experiment e {
  data = digits
  model = net
  optimizer = fast
  epochs = 2
}
";

    fn labels(items: Vec<CompletionItem>) -> Vec<String> {
        items.into_iter().map(|i| i.label).collect()
    }

    fn has(l: &[String], name: &str) -> bool {
        l.iter().any(|x| x == name)
    }

    #[test]
    fn hover_gives_fields_kinds_and_declarations() {
        let at = |needle: &str| RECIPE.find(needle).unwrap() + 1;
        let h = hover(RECIPE, at("download")).unwrap();
        assert!(
            h.contains("field of `mnist`") && h.contains("default `false`"),
            "{h}"
        );
        let h = hover(RECIPE, at("mlp")).unwrap();
        assert!(
            h.contains("**mlp** — model") && h.contains("`hidden`"),
            "{h}"
        );
        let h = hover(RECIPE, at("digits\n")).unwrap();
        assert!(h.contains("dataset digits = mnist"), "{h}");
        // a field of a derived declaration is the base's kind's
        let h = hover(RECIPE, at("momentum")).unwrap();
        assert!(h.contains("field of `sgd`"), "{h}");
        let h = hover(RECIPE, at("epochs")).unwrap();
        assert!(h.contains("field of `experiment`"), "{h}");
        assert_eq!(hover(RECIPE, at("0.1")), None);
        assert_eq!(hover(RECIPE, RECIPE.len() + 10), None);
    }

    #[test]
    fn completion_offers_what_fits_under_the_cursor() {
        // fields of the block, in a recipe that no longer parses
        let text = "model net = mlp { hid";
        let l = labels(completion(text, text.len()));
        assert!(has(&l, "hidden") && has(&l, "activation"), "{l:?}");
        // after `=`: the kinds of the field's category and the declared names
        let text = format!("{RECIPE}experiment f {{\n  data = ");
        let l = labels(completion(&text, text.len()));
        assert!(
            has(&l, "digits") && has(&l, "mnist") && has(&l, "blobs"),
            "{l:?}"
        );
        assert!(!has(&l, "net"), "a model is no dataset: {l:?}");
        // enum values
        let text = "model net = mlp { activation = ";
        let l = labels(completion(text, text.len()));
        assert!(has(&l, "relu") && has(&l, "tanh"), "{l:?}");
        // a stack's layers
        let text = "model v = layers { stack = [conv(8, 3), ";
        let l = labels(completion(text, text.len()));
        assert!(has(&l, "relu") && has(&l, "linear"), "{l:?}");
        // a call's fields
        let text = "model v = layers { stack = [conv(8, 3, pad";
        let l = labels(completion(text, text.len()));
        assert!(has(&l, "padding"), "{l:?}");
        // top level
        let l = labels(completion("", 0));
        assert!(has(&l, "dataset") && has(&l, "experiment"), "{l:?}");
        let text = "dataset d = ";
        let l = labels(completion(text, text.len()));
        assert!(has(&l, "mnist") && !has(&l, "mlp"), "{l:?}");
        // brackets in comments and strings do not count
        let text = "# {\ndataset d = arrays { path = \"a{b\" }\n";
        let l = labels(completion(text, text.len()));
        assert!(has(&l, "dataset"), "{l:?}");
    }

    #[test]
    fn did_you_mean_is_a_quick_fix() {
        let uri: Uri = "untitled:q.aht".parse().unwrap();
        let text = "model net = mlp { hiden = [8] }\nexperiment e {\n  data = blobs {}\n  model = nett\n  optimizer = sgd { lr = 0.1 }\n  epochs = 1\n}\n";
        let whole = LineIndex::new(text).range(text, 0, text.len());
        let fixes = quick_fixes(&uri, text, whole);
        let titles: Vec<&str> = fixes.iter().map(|f| f.title.as_str()).collect();
        assert_eq!(
            titles,
            ["Change `hiden` to `hidden`", "Change `nett` to `net`"]
        );
        // applying both gives a recipe without errors
        let idx = LineIndex::new(text);
        let mut edits: Vec<(usize, usize, String)> = fixes
            .iter()
            .flat_map(|f| f.edit.as_ref().unwrap().changes.as_ref().unwrap()[&uri].clone())
            .map(|e| {
                (
                    idx.offset(text, e.range.start),
                    idx.offset(text, e.range.end),
                    e.new_text,
                )
            })
            .collect();
        edits.sort();
        let mut fixed = text.to_string();
        for (a, b, t) in edits.into_iter().rev() {
            fixed.replace_range(a..b, &t);
        }
        let c = crate::check::check_text("q.aht", &fixed, &Default::default());
        assert!(!c.has_errors(), "{fixed}");
        // only what overlaps the range asked about
        let first_line = LineIndex::new(text).range(text, 0, 25);
        assert_eq!(quick_fixes(&uri, text, first_line).len(), 1);
    }

    #[test]
    fn symbols_name_every_declaration_and_formatting_is_fmts() {
        let s = symbols(RECIPE);
        let names: Vec<&str> = s.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["digits", "net", "base", "fast", "e"]);
        assert_eq!(s[3].detail.as_deref(), Some("optimizer from base"));
        assert_eq!(s[0].selection_range.start, lsp_types::Position::new(0, 8));
        let messy = "model   net=mlp{hidden=[64]}\n";
        let edits = format(messy).unwrap();
        let mut sources = SourceMap::new();
        let id = sources.add("x", None, messy);
        let module = crate::syntax::parse(id, messy).unwrap();
        assert_eq!(edits[0].new_text, crate::fmt::format(&module, messy));
        assert_eq!(format(&edits[0].new_text), None, "formatted already");
        assert_eq!(format("model = {"), None, "does not parse");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]
        /// No text and no position makes any request fail: pieces of recipes, brackets,
        /// quotes and comments in any order, non-ASCII and every line break.
        #[test]
        fn no_document_and_no_position_panics(
            parts in proptest::collection::vec(proptest::sample::select(vec![
                "dataset ", "model ", "experiment ", "d", " = ", "mlp", "blobs", "layers", " {", "}",
                "[", "]", "(", ")", ",", "\"", "é𝛼", "# c", "\n", "\r\n", "\r", "with", "stack = [",
                "hidden", "=", "activation = ", "\u{feff}", " ", "0.5", "import \"x.aht\"",
            ]), 0..40),
            at in 0usize..400,
            line in 0u32..12,
            column in 0u32..80,
        ) {
            let text: String = parts.concat();
            let _ = hover(&text, at);
            let _ = completion(&text, at);
            let _ = symbols(&text);
            let _ = format(&text);
            let idx = LineIndex::new(&text);
            let off = idx.offset(&text, lsp_types::Position::new(line, column));
            proptest::prop_assert!(off <= text.len() && text.is_char_boundary(off));
            let _ = idx.position(&text, at);
            let uri: Uri = "untitled:fuzz".parse().unwrap();
            let _ = diagnostics(&uri, &text);
            let _ = crate::lsp::values::hover(&Document::check(&uri, &text), at);
        }
    }
}
