//! `ahtsgd fmt`: one canonical layout, comments kept.
//!
//! Blocks written on one line stay on one line when they fit in 100 columns and hold no
//! comments; others get one field per line, indented by two spaces. Declarations are separated
//! by one blank line; single blank lines inside blocks are kept. Formatting is idempotent and
//! never changes meaning (tests compare the plans before and after).

use crate::source::Spanned;
use crate::syntax::ast::*;

const WIDTH: usize = 100;

/// Formats a parsed module; `text` is the source it was parsed from (for comments and layout).
pub fn format(module: &Module, text: &str) -> String {
    let mut p = Printer {
        out: String::new(),
        text,
        comments: module.comments.clone(),
        next: 0,
        indent: 0,
    };
    let mut prev: Option<(&Item, bool)> = None;
    for item in &module.items {
        let start = item_span(item).start as usize;
        let at = p.out.len();
        let first = prev.is_none();
        p.own_line_comments(start, first);
        let body = p.out.len();
        match item {
            Item::Version(v) => p.out.push_str(&format!("version = {}", v.node)),
            Item::Import(s) => p.out.push_str(&format!("import {}", quote(&s.node))),
            Item::Decl(d) => p.decl(d),
        }
        let one_line = !p.out[body..].contains('\n');
        p.trailing_comment(item_span(item).end as usize);
        p.out.push('\n');
        if let Some((prev, prev_one_line)) = prev {
            let blank = match (prev, item) {
                (Item::Import(_), Item::Import(_)) => false,
                // one-line declarations of one kind may stay together
                (Item::Decl(a), Item::Decl(b)) => {
                    a.kind.node != b.kind.node
                        || p.blank_before(start)
                        || !prev_one_line
                        || !one_line
                        || body != at
                }
                _ => true,
            };
            // the comments before the item may have kept a blank line already
            if blank && !p.out[..at].ends_with("\n\n") && !p.out[at..].starts_with('\n') {
                p.out.insert(at, '\n');
            }
        }
        prev = Some((item, one_line));
    }
    if p.next < p.comments.len() {
        if !p.out.is_empty() {
            p.out.push('\n');
        }
        p.own_line_comments(text.len() + 1, true);
    }
    p.out
}

fn item_span(item: &Item) -> crate::source::Span {
    match item {
        Item::Version(v) => v.span,
        Item::Import(s) => s.span,
        Item::Decl(d) => d.span,
    }
}

struct Printer<'a> {
    out: String,
    text: &'a str,
    comments: Vec<Spanned<String>>,
    next: usize,
    indent: usize,
}

impl Printer<'_> {
    fn pad(&mut self) {
        for _ in 0..self.indent {
            self.out.push_str("  ");
        }
    }

    /// Comments that start before `pos`, each on its own line (blank lines between kept once).
    fn own_line_comments(&mut self, pos: usize, first: bool) {
        let mut last_end: Option<usize> = None;
        while self.next < self.comments.len()
            && (self.comments[self.next].span.start as usize) < pos
        {
            let c = self.comments[self.next].clone();
            if let Some(e) = last_end {
                if self.text[e..c.span.start as usize].matches('\n').count() > 1 {
                    self.out.push('\n');
                }
            } else if !first
                && self.blank_before(c.span.start as usize)
                && !self.out.ends_with("\n\n")
                && !self.out.ends_with("{\n")
            {
                self.out.push('\n');
            }
            self.pad();
            self.out.push_str(&c.node);
            self.out.push('\n');
            last_end = Some(c.span.end as usize);
            self.next += 1;
        }
        if let Some(e) = last_end
            && pos <= self.text.len()
            && self.text[e..pos.min(self.text.len())].matches('\n').count() > 1
            && !first
        {
            self.out.push('\n');
        }
    }

    /// A comment on the same line right after `end`.
    fn trailing_comment(&mut self, end: usize) {
        if let Some(c) = self.comments.get(self.next) {
            let start = c.span.start as usize;
            if start >= end && !self.text[end..start].contains('\n') {
                self.out.push_str("  ");
                self.out.push_str(&c.node);
                self.next += 1;
            }
        }
    }

    fn has_comments_in(&self, start: usize, end: usize) -> bool {
        self.comments[self.next..]
            .iter()
            .any(|c| (c.span.start as usize) >= start && (c.span.start as usize) < end)
    }

    fn blank_before(&self, pos: usize) -> bool {
        let before = &self.text[..pos];
        let trimmed = before.trim_end_matches([' ', '\t']);
        trimmed.ends_with("\n\n") || trimmed.ends_with("\n\r\n")
    }

    fn decl(&mut self, d: &Decl) {
        self.out.push_str(d.kind.node.keyword());
        self.out.push(' ');
        self.out.push_str(&d.name.node);
        match &d.body {
            DeclBody::Construct { kind, block } => {
                self.out.push_str(" = ");
                self.out.push_str(&kind.node);
                if let Some(b) = block {
                    self.out.push(' ');
                    self.block(b);
                }
            }
            DeclBody::Derive { base, block } => {
                self.out.push_str(&format!(" = {} with ", base.node));
                self.block(block);
            }
            DeclBody::Block(b) => {
                self.out.push(' ');
                self.block(b);
            }
        }
    }

    fn block(&mut self, b: &Block) {
        let (start, end) = (b.span.start as usize, b.span.end as usize);
        if b.entries.is_empty() && !self.has_comments_in(start, end) {
            self.out.push_str("{}");
            return;
        }
        let one_line = !self.text[start..end].contains('\n') && !self.has_comments_in(start, end);
        if one_line {
            let inline = block_inline(b);
            let line_start = self.out.rfind('\n').map_or(0, |i| i + 1);
            if self.out.len() - line_start + inline.len() <= WIDTH {
                self.out.push_str(&inline);
                return;
            }
        }
        self.out.push_str("{\n");
        self.indent += 1;
        for (i, e) in b.entries.iter().enumerate() {
            let s = e.span().start as usize;
            if i > 0
                && self.blank_before(s)
                && !self.comment_between(b.entries[i - 1].span().end as usize, s)
            {
                self.out.push('\n');
            }
            self.own_line_comments(s, i == 0);
            self.pad();
            self.entry(e);
            self.trailing_comment(e.span().end as usize);
            self.out.push('\n');
        }
        self.own_line_comments(end, false);
        self.indent -= 1;
        self.pad();
        self.out.push('}');
    }

    fn comment_between(&self, a: usize, b: usize) -> bool {
        self.comments[self.next..]
            .iter()
            .any(|c| (c.span.start as usize) >= a && (c.span.start as usize) < b)
    }

    fn entry(&mut self, e: &Entry) {
        match e {
            Entry::Field(f) => {
                self.out.push_str(&f.path.dotted());
                self.out.push_str(" = ");
                self.expr(&f.value);
            }
            Entry::Random { args, block, .. } => {
                self.out
                    .push_str(&format!("random({}) ", args_inline(args)));
                self.block(block);
            }
            Entry::Zip { .. } => self.out.push_str(&entry_inline(e)),
        }
    }

    fn expr(&mut self, e: &Expr) {
        let (start, end) = (e.span.start as usize, e.span.end as usize);
        let inline = expr_inline(e);
        let line_start = self.out.rfind('\n').map_or(0, |i| i + 1);
        let fits = self.out.len() - line_start + inline.len() <= WIDTH;
        let keep = fits && !self.has_comments_in(start, end);
        match &e.node {
            ExprKind::Object { kind, block } => {
                self.out.push_str(&kind.node);
                self.out.push(' ');
                self.block(block);
            }
            // a list too long for its line, or with comments inside: one element per line
            ExprKind::List(items) if !items.is_empty() && !keep => {
                self.out.push_str("[\n");
                self.indent += 1;
                for (i, item) in items.iter().enumerate() {
                    self.own_line_comments(item.span.start as usize, i == 0);
                    self.pad();
                    self.expr(item);
                    self.out.push(',');
                    // a comment after several elements on one source line belongs to the last
                    let next = items
                        .get(i + 1)
                        .map_or(usize::MAX, |n| n.span.start as usize);
                    if self
                        .comments
                        .get(self.next)
                        .is_some_and(|c| (c.span.start as usize) < next)
                    {
                        self.trailing_comment(item.span.end as usize);
                    }
                    self.out.push('\n');
                }
                self.own_line_comments(end, false);
                self.indent -= 1;
                self.pad();
                self.out.push(']');
            }
            // a call too long for its line: its arguments inline, long lists broken up
            ExprKind::Call { name, args } if !keep => {
                self.out.push_str(&name.node);
                self.out.push('(');
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        self.out.push_str(", ");
                    }
                    if let Some(n) = &a.name {
                        self.out.push_str(&n.node);
                        self.out.push_str(" = ");
                    }
                    self.expr(&a.value);
                }
                self.out.push(')');
            }
            _ => self.out.push_str(&inline),
        }
    }
}

fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn args_inline(args: &[Arg]) -> String {
    args.iter()
        .map(|a| match &a.name {
            Some(n) => format!("{} = {}", n.node, expr_inline(&a.value)),
            None => expr_inline(&a.value),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A block on one line: `{}` or `{ a = 1, b = 2 }`.
fn block_inline(block: &Block) -> String {
    if block.entries.is_empty() {
        "{}".to_string()
    } else {
        let entries: Vec<String> = block.entries.iter().map(entry_inline).collect();
        format!("{{ {} }}", entries.join(", "))
    }
}

/// One block entry on one line.
fn entry_inline(e: &Entry) -> String {
    match e {
        Entry::Field(f) => format!("{} = {}", f.path.dotted(), expr_inline(&f.value)),
        Entry::Zip { paths, .. } => {
            format!(
                "zip({})",
                paths
                    .iter()
                    .map(Path::dotted)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
        Entry::Random { args, block, .. } => {
            format!("random({}) {}", args_inline(args), block_inline(block))
        }
    }
}

/// An expression on one line.
pub fn expr_inline(e: &Expr) -> String {
    match &e.node {
        ExprKind::Number { text, .. } => text.clone(),
        ExprKind::Str(s) => quote(s),
        ExprKind::Bool(b) => b.to_string(),
        ExprKind::Quantity { value, text, unit } => {
            let name = match (unit, *value == 1.0) {
                (Unit::Steps, true) => "step",
                (Unit::Epochs, true) => "epoch",
                (u, false) => u.name(),
            };
            format!("{text} {name}")
        }
        ExprKind::Ref(n) => n.clone(),
        ExprKind::List(items) => format!(
            "[{}]",
            items.iter().map(expr_inline).collect::<Vec<_>>().join(", ")
        ),
        ExprKind::Object { kind, block } => format!("{} {}", kind.node, block_inline(block)),
        ExprKind::Call { name, args } => format!("{}({})", name.node, args_inline(args)),
        ExprKind::Neg(x) => format!("-{}", expr_inline(x)),
        ExprKind::Binary { op, lhs, rhs } => {
            format!("{} {} {}", expr_inline(lhs), op.symbol(), expr_inline(rhs))
        }
        ExprKind::Range(a, b) => format!("{}..{}", expr_inline(a), expr_inline(b)),
        ExprKind::Paren(x) => format!("({})", expr_inline(x)),
    }
}
