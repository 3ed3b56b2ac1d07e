//! pest parse tree -> typed AST, one function per grammar rule.

use super::ast::*;
use crate::diagnostic::{Code, Diagnostic};
use crate::source::{FileId, Span, Spanned};
use pest::Parser as _;
use pest::iterators::Pair;
use pest::pratt_parser::{Assoc, Op, PrattParser};
use std::sync::OnceLock;

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/aht.pest"]
struct Grammar;

/// Parses one recipe file. Syntax errors come back as a diagnostic pointing at the first
/// place where the text stops following the grammar.
pub fn parse(file: FileId, text: &str) -> Result<Module, Diagnostic> {
    if let Some(d) = super::chars::lookalike(file, text) {
        return Err(d);
    }
    if let Some(d) = super::chars::too_deep(file, text) {
        return Err(d);
    }
    let mut pairs = parse_rule(Rule::file, text).map_err(|e| syntax_error(file, text, e))?;
    let root = pairs.next().expect("the file rule always produces a pair");
    let comments = scan_comments(file, text);
    let cx = Cx {
        file,
        offset: 0,
        text,
        comments: comments
            .iter()
            .map(|c| (c.span.start as usize, c.span.end as usize))
            .collect(),
    };
    let mut items = Vec::new();
    for pair in root.into_inner() {
        match pair.as_rule() {
            Rule::version => items.push(cx.version(pair)?),
            Rule::import => {
                let span = cx.span(&pair);
                let s = cx.string(pair.into_inner().next().unwrap());
                items.push(Item::Import(Spanned::new(s, span)));
            }
            Rule::decl => items.push(Item::Decl(cx.decl(pair)?)),
            _ => {}
        }
    }
    Ok(Module { items, comments })
}

/// Parses a lone value (used for defaults and by `--set path=value`).
pub fn parse_value(file: FileId, text: &str) -> Result<Expr, Diagnostic> {
    parse_value_at(file, text, 0)
}

/// Parses the value that starts at byte `start` of `text` and runs to its end.
pub fn parse_value_at(file: FileId, text: &str, start: usize) -> Result<Expr, Diagnostic> {
    let sub = &text[start..];
    let shifted = |mut d: Diagnostic| {
        if let Some(s) = &mut d.span {
            s.start += start as u32;
            s.end += start as u32;
        }
        d
    };
    if let Some(d) = super::chars::too_deep(file, sub) {
        return Err(shifted(d));
    }
    let mut pairs =
        parse_rule(Rule::value, sub).map_err(|e| shifted(syntax_error(file, sub, e)))?;
    let pair = pairs.next().expect("value parsed");
    if pair.as_span().end() != sub.trim_end().len() {
        let at = start + pair.as_span().end();
        return Err(
            Diagnostic::error(Code::Syntax, "unexpected text after the value")
                .at(Span::new(file, at, text.len()), "not part of the value")
                .help("quote strings and write quantities as `50 steps`"),
        );
    }
    Cx {
        file,
        offset: start,
        text: sub,
        comments: Vec::new(),
    }
    .value(pair)
}

/// Parses fast; only when the text fails is it parsed again with pest's attempt tracking,
/// which names what was expected but costs several times the parse. The tracking switch is
/// global, so detailed re-parses take turns under a lock (a fast parse that overlaps one is
/// merely slower).
fn parse_rule(
    rule: Rule,
    text: &str,
) -> Result<pest::iterators::Pairs<'_, Rule>, pest::error::Error<Rule>> {
    static DETAILED: std::sync::Mutex<()> = std::sync::Mutex::new(());
    Grammar::parse(rule, text).map_err(|_| {
        let _turn = DETAILED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        pest::set_error_detail(true);
        let e = Grammar::parse(rule, text).expect_err("failed once, fails again");
        pest::set_error_detail(false);
        e
    })
}

struct Cx<'t> {
    file: FileId,
    /// Added to every span (values parsed out of a longer text).
    offset: usize,
    text: &'t str,
    /// Comment byte ranges in text order, to keep them out of the spans of what precedes them.
    comments: Vec<(usize, usize)>,
}

type Result<T, E = Diagnostic> = std::result::Result<T, E>;

fn pratt() -> &'static PrattParser<Rule> {
    static P: OnceLock<PrattParser<Rule>> = OnceLock::new();
    P.get_or_init(|| {
        PrattParser::new()
            .op(Op::infix(Rule::add, Assoc::Left) | Op::infix(Rule::sub, Assoc::Left))
            .op(Op::infix(Rule::mul, Assoc::Left) | Op::infix(Rule::div, Assoc::Left))
            .op(Op::prefix(Rule::neg))
    })
}

impl Cx<'_> {
    /// The span of a pair without the blanks and comments pest lets trail into it.
    fn span(&self, pair: &Pair<Rule>) -> Span {
        let s = pair.as_span();
        let mut end = s.end();
        loop {
            let trimmed = s.start() + self.text[s.start()..end].trim_end().len();
            // comments are in text order and never overlap: the one that could hold `trimmed`
            // is the last to start before it
            let before = self.comments.partition_point(|(cs, _)| *cs < trimmed);
            end = match before
                .checked_sub(1)
                .map(|i| &self.comments[i])
                .filter(|(_, ce)| trimmed <= *ce)
            {
                // each step must shorten the span, or a comment reaching back before the
                // pair would hold the loop forever
                Some((cs, _)) if (*cs).max(s.start()) < end => (*cs).max(s.start()),
                _ => {
                    end = trimmed;
                    break;
                }
            };
        }
        Span::new(self.file, s.start() + self.offset, end + self.offset)
    }

    fn ident(&self, pair: Pair<Rule>) -> Ident {
        Spanned::new(pair.as_str().to_string(), self.span(&pair))
    }

    fn version(&self, pair: Pair<Rule>) -> Result<Item> {
        let int = pair.into_inner().next().unwrap();
        let span = self.span(&int);
        let n = int.as_str().parse::<u64>().map_err(|_| {
            Diagnostic::error(Code::Number, "version number too large").at(span, "not a version")
        })?;
        Ok(Item::Version(Spanned::new(n, span)))
    }

    fn decl(&self, pair: Pair<Rule>) -> Result<Decl> {
        let span = self.span(&pair);
        let mut inner = pair.into_inner();
        let kw = inner.next().unwrap();
        let kind = Spanned::new(
            DeclKind::from_keyword(kw.as_str().trim()).expect("grammar only admits keywords"),
            self.span(&kw),
        );
        let name = self.ident(inner.next().unwrap());
        let body_pair = inner.next().unwrap();
        let body = match body_pair.as_rule() {
            Rule::derive => {
                let mut it = body_pair.into_inner();
                let base = self.ident(it.next().unwrap());
                let block = self.block(it.next().unwrap())?;
                DeclBody::Derive { base, block }
            }
            Rule::construct => {
                let mut it = body_pair.into_inner();
                let kind = self.ident(it.next().unwrap());
                let block = it.next().map(|b| self.block(b)).transpose()?;
                DeclBody::Construct { kind, block }
            }
            _ => DeclBody::Block(self.block(body_pair)?),
        };
        Ok(Decl {
            kind,
            name,
            body,
            span,
        })
    }

    fn block(&self, pair: Pair<Rule>) -> Result<Block> {
        let span = self.span(&pair);
        let mut entries = Vec::new();
        for p in pair.into_inner() {
            let espan = self.span(&p);
            match p.as_rule() {
                Rule::field => entries.push(Entry::Field(self.field(p)?)),
                Rule::zip => {
                    let paths = p.into_inner().map(|q| self.path(q)).collect();
                    entries.push(Entry::Zip { paths, span: espan });
                }
                Rule::random => {
                    let mut it = p.into_inner();
                    let args = self.arguments(it.next().unwrap())?;
                    let block = self.block(it.next().unwrap())?;
                    entries.push(Entry::Random {
                        args,
                        block,
                        span: espan,
                    });
                }
                _ => unreachable!("block holds entries only"),
            }
        }
        Ok(Block { entries, span })
    }

    fn path(&self, pair: Pair<Rule>) -> Path {
        let span = self.span(&pair);
        Path {
            parts: pair.into_inner().map(|p| self.ident(p)).collect(),
            span,
        }
    }

    fn field(&self, pair: Pair<Rule>) -> Result<Field> {
        let span = self.span(&pair);
        let mut it = pair.into_inner();
        let path = self.path(it.next().unwrap());
        let value = self.value(it.next().unwrap())?;
        Ok(Field { path, value, span })
    }

    fn value(&self, pair: Pair<Rule>) -> Result<Expr> {
        let span = self.span(&pair);
        let mut it = pair.into_inner();
        let lo = self.expr(it.next().unwrap())?;
        match it.next() {
            Some(hi) => {
                let hi = self.expr(hi)?;
                Ok(Spanned::new(
                    ExprKind::Range(Box::new(lo), Box::new(hi)),
                    span,
                ))
            }
            None => Ok(lo),
        }
    }

    fn expr(&self, pair: Pair<Rule>) -> Result<Expr> {
        pratt()
            .map_primary(|p| self.primary(p))
            .map_prefix(|op, rhs| {
                let rhs = rhs?;
                let span = self.span(&op).to(rhs.span);
                Ok(Spanned::new(ExprKind::Neg(Box::new(rhs)), span))
            })
            .map_infix(|lhs, op, rhs| {
                let (lhs, rhs) = (lhs?, rhs?);
                let op = match op.as_rule() {
                    Rule::add => BinOp::Add,
                    Rule::sub => BinOp::Sub,
                    Rule::mul => BinOp::Mul,
                    _ => BinOp::Div,
                };
                let span = lhs.span.to(rhs.span);
                Ok(Spanned::new(
                    ExprKind::Binary {
                        op,
                        lhs: Box::new(lhs),
                        rhs: Box::new(rhs),
                    },
                    span,
                ))
            })
            .parse(pair.into_inner())
    }

    fn number(&self, pair: &Pair<Rule>) -> Result<(f64, String, bool)> {
        let text = pair.as_str().to_string();
        let value: f64 = text.parse().map_err(|_| {
            Diagnostic::error(Code::Number, "malformed number").at(self.span(pair), "here")
        })?;
        if !value.is_finite() {
            return Err(Diagnostic::error(
                Code::Number,
                format!("`{text}` is too large to represent"),
            )
            .at(self.span(pair), "overflows a 64-bit float")
            .help("numbers must be below about 1.8e308"));
        }
        let integer = !text.contains(['.', 'e', 'E']);
        if integer && value > 9.0e15 {
            return Err(Diagnostic::error(
                Code::Number,
                format!("`{text}` is too large for a whole number"),
            )
            .at(self.span(pair), "larger than 2^53")
            .help("whole numbers must be exactly representable (below 9e15)"));
        }
        Ok((value, text, integer))
    }

    fn primary(&self, pair: Pair<Rule>) -> Result<Expr> {
        let span = self.span(&pair);
        let kind = match pair.as_rule() {
            Rule::numeric => {
                let mut it = pair.into_inner();
                let num = it.next().unwrap();
                let (value, text, integer) = self.number(&num)?;
                match it.next() {
                    None => ExprKind::Number {
                        value,
                        text,
                        integer,
                    },
                    Some(unit) => {
                        let unit = match unit.as_str() {
                            "step" | "steps" => Unit::Steps,
                            _ => Unit::Epochs,
                        };
                        ExprKind::Quantity { value, text, unit }
                    }
                }
            }
            Rule::string => ExprKind::Str(self.string(pair)),
            Rule::boolean => ExprKind::Bool(pair.as_str() == "true"),
            Rule::list => ExprKind::List(
                pair.into_inner()
                    .map(|p| self.value(p))
                    .collect::<Result<_>>()?,
            ),
            Rule::named => {
                let mut it = pair.into_inner();
                let name = self.ident(it.next().unwrap());
                match it.next() {
                    None => ExprKind::Ref(name.node),
                    Some(p) if p.as_rule() == Rule::arguments => ExprKind::Call {
                        name,
                        args: self.arguments(p)?,
                    },
                    Some(p) => ExprKind::Object {
                        kind: name,
                        block: self.block(p)?,
                    },
                }
            }
            Rule::paren => ExprKind::Paren(Box::new(self.expr(pair.into_inner().next().unwrap())?)),
            Rule::expr => return self.expr(pair),
            r => unreachable!("not a primary: {r:?}"),
        };
        Ok(Spanned::new(kind, span))
    }

    fn arguments(&self, pair: Pair<Rule>) -> Result<Vec<Arg>> {
        pair.into_inner()
            .map(|arg| {
                let inner = arg.into_inner().next().unwrap();
                if inner.as_rule() == Rule::named_argument {
                    let mut it = inner.into_inner();
                    let name = self.ident(it.next().unwrap());
                    let value = self.value(it.next().unwrap())?;
                    Ok(Arg {
                        name: Some(name),
                        value,
                    })
                } else {
                    Ok(Arg {
                        name: None,
                        value: self.value(inner)?,
                    })
                }
            })
            .collect()
    }

    fn string(&self, pair: Pair<Rule>) -> String {
        let raw = pair.into_inner().next().map_or("", |p| p.as_str());
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some(other) => out.push(other),
                    None => {}
                }
            } else {
                out.push(c);
            }
        }
        out
    }
}

/// Finds every `#` comment outside strings.
fn scan_comments(file: FileId, text: &str) -> Vec<Spanned<String>> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut in_string = false;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_string => i += 1,
            b'"' => in_string = !in_string,
            b'\n' | b'\r' => in_string = false,
            b'#' if !in_string => {
                // a comment ends at any line break the grammar knows: \n, \r\n or a bare \r
                let end = text[i..].find(['\n', '\r']).map_or(text.len(), |n| i + n);
                let end_trim = i + text[i..end].trim_end().len();
                out.push(Spanned::new(
                    text[i..end_trim].to_string(),
                    Span::new(file, i, end_trim),
                ));
                i = end;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// What a grammar rule is called in messages.
fn human(rule: Rule) -> Option<&'static str> {
    Some(match rule {
        Rule::EOI => "end of file",
        Rule::item | Rule::decl | Rule::version | Rule::import | Rule::decl_keyword => {
            "a declaration (`dataset`, `model`, `schedule`, `optimizer`, `experiment`), `import` or `version`"
        }
        Rule::ident | Rule::path => "a name",
        Rule::block => "`{`",
        Rule::entry | Rule::field | Rule::zip | Rule::random => "a field (`name = value`)",
        Rule::value
        | Rule::expr
        | Rule::primary
        | Rule::paren
        | Rule::list
        | Rule::named
        | Rule::numeric
        | Rule::boolean
        | Rule::neg => "a value",
        Rule::separator => "a comma or a line break",
        Rule::derive | Rule::construct => "`=`",
        Rule::number | Rule::integer => "a number",
        Rule::string | Rule::string_inner => "a string",
        Rule::add | Rule::sub | Rule::mul | Rule::div | Rule::infix => "an operator",
        Rule::unit => "a unit (`steps`, `epochs`)",
        Rule::arguments | Rule::argument | Rule::named_argument => "an argument",
        Rule::nl | Rule::nls => "a line break",
        _ => return None,
    })
}

/// A literal token pest expected, as users write it (`}`, `=`); `None` for whitespace and
/// character ranges, which the rule names already cover.
fn token_name(t: &str) -> Option<String> {
    match t {
        "\n" | "\r\n" | "\r" | " " | "\t" | "#" | "BUILTIN_RULE" => None,
        t if t.contains("..") && t.len() == 4 => None,
        t if t.len() == 1 && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => None,
        t => Some(format!("`{t}`")),
    }
}

fn syntax_error(file: FileId, text: &str, e: pest::error::Error<Rule>) -> Diagnostic {
    let (start, end) = match e.location {
        pest::error::InputLocation::Pos(p) => (p, p),
        pest::error::InputLocation::Span((s, e)) => (s, e),
    };
    let mut expected: Vec<String> = Vec::new();
    if let pest::error::ErrorVariant::ParsingError { positives, .. } = &e.variant {
        for r in positives {
            if let Some(h) = human(*r) {
                expected.push(h.to_string());
            }
        }
    }
    if let Some(attempts) = e.parse_attempts() {
        for t in attempts.expected_tokens() {
            if let Some(n) = token_name(&t.to_string()) {
                expected.push(n);
            }
        }
        for stack in attempts.call_stacks() {
            if let Some(h) = stack.parent.and_then(human) {
                expected.push(h.to_string());
            }
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    expected.retain(|x| seen.insert(x.clone()));
    // say the general thing once instead of every token it covers
    let has = |e: &Vec<String>, p: &str| e.iter().any(|x| x.starts_with(p));
    expected.retain(|x| x != "`..`" && x != "`.`");
    if has(&expected, "an operator") {
        expected.retain(|x| !["`*`", "`+`", "`-`", "`/`"].contains(&x.as_str()));
    }
    if has(&expected, "a unit") {
        expected.retain(|x| !["`step`", "`steps`", "`epoch`", "`epochs`"].contains(&x.as_str()));
    }
    if has(&expected, "a field") {
        expected.retain(|x| {
            !["a name", "`random`", "`zip`"].contains(&x.as_str()) && !x.starts_with("an operator")
        });
    }
    if has(&expected, "a value") {
        expected.retain(|x| {
            ![
                "`(`", "`[`", "`\"`", "`true`", "`false`", "`-`", "a number", "a name", "a string",
            ]
            .contains(&x.as_str())
        });
    }
    let found = describe_found(text, start);
    let list = join_or(&expected);
    let message = if list.is_empty() {
        format!("unexpected {found}")
    } else {
        format!("expected {list}, found {found}")
    };
    let label = if list.is_empty() {
        "unexpected".to_string()
    } else {
        format!("expected {}", join_or(&expected[..expected.len().min(3)]))
    };
    let end = if end > start {
        end
    } else {
        (start + next_char_len(text, start)).min(text.len())
    };
    Diagnostic::error(Code::Syntax, message)
        .at(Span::new(file, start, end), label)
        .help(syntax_help(text, start, &expected))
}

fn next_char_len(text: &str, at: usize) -> usize {
    text[at..].chars().next().map_or(0, char::len_utf8)
}

fn describe_found(text: &str, at: usize) -> String {
    match text[at..].chars().next() {
        None => "end of file".to_string(),
        Some('\n') | Some('\r') => "a line break".to_string(),
        Some(c) if c.is_alphanumeric() || c == '_' => {
            let word: String = text[at..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            format!("`{word}`")
        }
        Some(c) => format!("`{c}`"),
    }
}

fn join_or(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

fn syntax_help(text: &str, at: usize, expected: &[String]) -> String {
    let next = text[at..].chars().next();
    let word: String = text[at..]
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    if DeclKind::from_keyword(&word).is_some()
        && expected
            .iter()
            .any(|e| e.starts_with("a field") || e == "`=`" || e == "`}`")
    {
        return "a `}` may be missing before this declaration".into();
    }
    if expected
        .iter()
        .any(|e| e == "`}`" || e.starts_with("a comma"))
        && next.is_some_and(|c| c.is_alphabetic())
    {
        return "separate fields with a comma or a line break".into();
    }
    if next == Some('"') && expected.iter().any(|e| e == "a value") {
        return "strings end on the line they start: close the quote".into();
    }
    if expected.iter().any(|e| e == "a value") {
        return "a value is a number, string, `true`/`false`, name, list `[..]`, range `a..b`, quantity `50 steps` or call `f(..)`".into();
    }
    if expected.iter().any(|e| e.starts_with("a declaration")) {
        return "top-level items go one per line: `version = 1`, `import \"file.aht\"` or a declaration such as `model m = mlp { hidden = [64] }`".into();
    }
    "see docs/language.md for the syntax".into()
}
