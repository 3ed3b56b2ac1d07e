//! The tree-sitter grammar in `editors/tree-sitter-aht`, held to the interpreter's parser:
//! every recipe, documented block and accepted case parses without an error node, every
//! rejected parse case has one, and on those files and on many edits of them the two parsers
//! agree on whether the text is a recipe. The highlight query compiles and colours what it
//! says it does.

use ahtsgd::source::FileId;
use std::path::{Path, PathBuf};
use tree_sitter::{Language, Node, Parser, Query, QueryCursor, StreamingIterator, Tree};

fn language() -> Language {
    tree_sitter_aht::LANGUAGE.into()
}

fn tree(text: &str) -> Tree {
    let mut parser = Parser::new();
    parser
        .set_language(&language())
        .expect("grammar ABI matches the tree-sitter crate");
    parser
        .parse(text, None)
        .expect("a parser with a language always returns a tree")
}

/// The first error or missing node, as `line:column kind` (for messages).
fn first_error(node: Node) -> Option<String> {
    if node.is_error() || node.is_missing() {
        let at = node.start_position();
        return Some(format!(
            "{}:{} {}",
            at.row + 1,
            at.column + 1,
            node.to_sexp()
        ));
    }
    let mut walk = node.walk();
    let children: Vec<Node> = node.children(&mut walk).collect();
    children.into_iter().find_map(first_error)
}

/// Whether tree-sitter reads `text` as a recipe, and where it does not.
fn tree_sitter_verdict(text: &str) -> Result<(), String> {
    let tree = tree(text);
    let root = tree.root_node();
    match first_error(root) {
        Some(at) => Err(at),
        // A missing hidden token (a line break) leaves `has_error` set without a visible node.
        None if root.has_error() => Err("a missing token".into()),
        None => Ok(()),
    }
}

/// Whether the interpreter's parser reads `text` as a recipe (after the byte-order mark
/// that loading strips).
fn interpreter_verdict(text: &str) -> Result<(), String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    ahtsgd::syntax::parse(FileId(0), text)
        .map(|_| ())
        .map_err(|d| format!("{d:?}"))
}

fn files(dir: &str, ext: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    out.sort();
    out
}

/// `(name, text)` of every ```` ```aht ```` block in `docs/` and the README.
fn doc_blocks() -> Vec<(String, String)> {
    let mut pages = files("docs", "md");
    pages.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"));
    let mut out = Vec::new();
    for page in pages {
        let text = std::fs::read_to_string(&page).unwrap();
        let mut rest = text.as_str();
        while let Some(start) = rest.find("```aht\n") {
            let body = &rest[start + 7..];
            let end = body.find("```").expect("closed block");
            out.push((
                format!("{}#{}", page.display(), out.len() + 1),
                body[..end].to_string(),
            ));
            rest = &body[end..];
        }
    }
    out
}

/// `(name, text)` of the recipes and cases that must parse.
fn accepted() -> Vec<(String, String)> {
    let mut out = doc_blocks();
    for dir in [
        "recipes",
        "tests/cases/parse/ok",
        "tests/cases/check/ok",
        "tests/cases/check/warn",
    ] {
        for path in files(dir, "aht") {
            out.push((
                path.display().to_string(),
                std::fs::read_to_string(&path).unwrap(),
            ));
        }
    }
    out
}

#[test]
fn parses_every_recipe_doc_block_and_accepted_case() {
    let accepted = accepted();
    assert!(accepted.len() > 40, "only {} files found", accepted.len());
    let failures: Vec<String> = accepted
        .iter()
        .filter_map(|(name, text)| {
            tree_sitter_verdict(text)
                .err()
                .map(|e| format!("{name}: {e}"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "error nodes in:\n{}",
        failures.join("\n")
    );
}

#[test]
fn finds_an_error_in_every_rejected_parse_case() {
    let rejected = files("tests/cases/parse/err", "aht");
    assert!(rejected.len() >= 20, "only {} cases", rejected.len());
    for path in rejected {
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            interpreter_verdict(&text).is_err(),
            "{} parses",
            path.display()
        );
        assert!(
            tree_sitter_verdict(&text).is_err(),
            "{}: no error node",
            path.display()
        );
    }
}

#[test]
fn agrees_with_the_interpreter_on_every_case() {
    for dir in ["tests/cases/check/err", "tests/cases/data/err"] {
        for path in files(dir, "aht") {
            let text = std::fs::read_to_string(&path).unwrap();
            assert_eq!(
                tree_sitter_verdict(&text).is_ok(),
                interpreter_verdict(&text).is_ok(),
                "{}: tree-sitter {:?}, interpreter {:?}",
                path.display(),
                tree_sitter_verdict(&text),
                interpreter_verdict(&text)
            );
        }
    }
}

#[test]
fn numbers_too_large_for_the_interpreter_are_errors() {
    let midpoint = "179769313486231580793728971405303415079934132710037826936173778980444968\
        29276475094664901797758720709633028641669288791094655554785194040263065748867150582068\
        19089020007083836762738548458177115317644757302700698555713669596228429148198608349364\
        75292719074168444365510704342711559699508093042880177904174497792";
    let below = format!("{}1", &midpoint[..midpoint.len() - 1]);
    let literals = [
        "0".to_string(),
        "0.0".into(),
        "1e308".into(),
        "1e309".into(),
        "10e308".into(),
        "0.1e310".into(),
        "0.01e310".into(),
        "0.00017976931348623157e312".into(),
        "0.00017976931348623159e312".into(),
        "1.7976931348623157e308".into(),
        "1.7976931348623158e308".into(),
        "1.7976931348623159e308".into(),
        format!("{below}.0"),
        format!("{midpoint}.0"),
        format!("{midpoint}e0"),
        format!("{below}.99999"),
        format!("0.{midpoint}e309"),
        format!("0.{below}e309"),
        "1e-400".into(),
        "1e-1000000000000".into(),
        "1e1000000000000".into(),
        "9000000000000000".into(),
        "9000000000000001".into(),
        "0009000000000000000".into(),
        "90000000000000000".into(),
        "9000000000000001.0".into(),
        "99999999999999999999".into(),
        "1e".into(),
        "1.e5".into(),
        "1.5e+".into(),
        "2.5E+4".into(),
        "1e-3".into(),
        "1epochs".into(),
        "1 epochs".into(),
        "1..5".into(),
        "1.5..2".into(),
        ".5".into(),
        "5.".into(),
    ];
    let mut rejected = 0;
    for literal in &literals {
        let text = format!("experiment e {{ x = {literal} }}\n");
        let interpreter = interpreter_verdict(&text);
        rejected += interpreter.is_err() as usize;
        assert_eq!(
            tree_sitter_verdict(&text).is_ok(),
            interpreter.is_ok(),
            "`{literal}`: tree-sitter {:?}, interpreter {interpreter:?}",
            tree_sitter_verdict(&text)
        );
    }
    assert!(
        rejected >= 15,
        "only {rejected} literals rejected: the cases test nothing"
    );
    for (version, ok) in [
        ("18446744073709551615", true),
        ("018446744073709551615", true),
        ("18446744073709551616", false),
        ("1.5", false),
        ("1e3", false),
    ] {
        let text = format!("version = {version}\n");
        assert_eq!(
            interpreter_verdict(&text).is_ok(),
            ok,
            "version = {version}"
        );
        assert_eq!(
            tree_sitter_verdict(&text).is_ok(),
            ok,
            "version = {version}"
        );
    }
}

/// A deterministic stream of small numbers (a linear congruential generator).
struct Draws(u64);

impl Draws {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

#[test]
fn agrees_with_the_interpreter_on_edited_recipes() {
    // Edits a typist makes: a character deleted, or one of the language's own characters
    // (and a few others) typed at a random place.
    const TYPED: &[&str] = &[
        "\n", " ", ",", "=", "{", "}", "[", "]", "(", ")", ".", "..", "-", "*", "\"", "#", "e",
        "1", "x", "with", "true", "zip", "random", "steps", "model", "version", "\\", "\r",
    ];
    let mut draws = Draws(20261203);
    let mut disagreements = Vec::new();
    let mut rejected = 0;
    let sources = accepted();
    let edits = std::env::var("AHT_EDITS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3000);
    for _ in 0..edits {
        let (name, text) = &sources[draws.below(sources.len())];
        let boundaries: Vec<usize> = (0..=text.len())
            .filter(|&i| text.is_char_boundary(i))
            .collect();
        let at = boundaries[draws.below(boundaries.len())];
        let edited = if draws.below(3) == 0 && at < text.len() {
            let next = boundaries
                .iter()
                .find(|&&b| b > at)
                .copied()
                .unwrap_or(text.len());
            format!("{}{}", &text[..at], &text[next..])
        } else {
            format!(
                "{}{}{}",
                &text[..at],
                TYPED[draws.below(TYPED.len())],
                &text[at..]
            )
        };
        let interpreter = interpreter_verdict(&edited);
        rejected += interpreter.is_err() as usize;
        if tree_sitter_verdict(&edited).is_ok() != interpreter.is_ok() {
            disagreements.push(format!(
                "{name} at byte {at}: tree-sitter {:?}, interpreter {interpreter:?}\n{edited}",
                tree_sitter_verdict(&edited)
            ));
        }
    }
    assert!(
        rejected > edits / 4,
        "only {rejected} of {edits} edits broke the recipe"
    );
    assert!(
        disagreements.is_empty(),
        "{} disagreements; the first:\n{}",
        disagreements.len(),
        disagreements.first().map_or("", String::as_str)
    );
}

#[test]
fn agrees_with_the_interpreter_on_the_corners_of_the_grammar() {
    let snippets = [
        ("experiment e { zip(a.b, c) }", true),
        ("experiment e { zip(\n  a,\n  c,\n) }", true),
        ("experiment e { zip() }", false),
        ("experiment e { zip = 1, random = 2, zip.x = 3 }", true),
        ("experiment e { random(n = 2) { lr = 1 } }", true),
        ("experiment e { random(n = 2)\n{ lr = 1 } }", false),
        ("experiment e { x = model, y = steps, z = version }", true),
        ("experiment e { x = truex, y = with_x }", true),
        ("experiment e { with = 1 }", false),
        ("experiment e { x = 1 - -2 * (3 +\n 4) / 5 }", true),
        ("experiment e { x = 1\n+ 2 }", false),
        ("experiment e { x = (1..2) }", false),
        ("experiment e { x = [1..2, f(a = 1..2)] }", true),
        ("experiment e { x = 1..2..3 }", false),
        ("experiment e { x = f(a\n= 1) }", false),
        ("experiment e { x = f(1) { } }", false),
        ("experiment e { x = 5 epoch_count }", false),
        ("experiment e { x =\n\n 5steps }", true),
        ("experiment e { x = \"a\\tb\\\\\" # \"\n}", true),
        ("experiment e { , }", false),
        ("experiment e { x = 1,\n\n}", true),
        ("experiment e { x = 1\n, y = 2 }", false),
        ("model m = mlp\n{ }", false),
        ("model m =\nmlp", false),
        ("model m = mlp with\n{ }", false),
        ("model m = mlp with", false),
        ("models m = mlp", false),
        (
            "\u{feff}# a recipe\r\nmodel m = mlp\rmodel n = mlp\r\n",
            true,
        ),
        ("model m = mlp \u{feff}", false),
        ("", true),
        ("\n\n# only a comment", true),
        ("version = 1 import \"a.aht\"", false),
    ];
    for (text, ok) in snippets {
        assert_eq!(
            interpreter_verdict(text).is_ok(),
            ok,
            "interpreter on {text:?}"
        );
        assert_eq!(
            tree_sitter_verdict(text).is_ok(),
            ok,
            "tree-sitter on {text:?}"
        );
    }
}

/// The highlight captures of `text` under `source`, as `(captured text, capture name)`.
/// With `first_wins` (Helix), the first pattern that captures a node names it; otherwise
/// (Neovim, the tree-sitter CLI) the last does.
fn highlights(source: &str, text: &str, first_wins: bool) -> Vec<(String, String)> {
    let query = Query::new(&language(), source).expect("query compiles");
    let tree = tree(text);
    let mut cursor = QueryCursor::new();
    let mut captures = cursor.captures(&query, tree.root_node(), text.as_bytes());
    let mut named: Vec<(std::ops::Range<usize>, usize, String)> = Vec::new();
    while let Some((found, index)) = captures.next() {
        let capture = found.captures()[*index];
        let range = capture.node.byte_range();
        let name = query.capture_names()[capture.index as usize].to_string();
        let pattern = found.pattern_index;
        match named.iter_mut().find(|(r, _, _)| *r == range) {
            Some(entry) if (pattern < entry.1) == first_wins => *entry = (range, pattern, name),
            Some(_) => {}
            None => named.push((range, pattern, name)),
        }
    }
    named
        .into_iter()
        .map(|(range, _, name)| (text[range].to_string(), name))
        .collect()
}

const HIGHLIGHT_SAMPLE: &str = "version = 2\nimport \"common.aht\" # shared\n\
    model wide = mlp with { hidden = [64], dropout = true }\n\
    schedule s = adaptive { sharpness = power_iteration { every = 50 steps } }\n\
    experiment e { lr = log(1e-3, base = 10), zip(lr, seed), seed = 0..3 }\n";

fn assert_captures(source: &str, first_wins: bool, expected: &[(&str, &str)], roots: &[&str]) {
    let captured = highlights(source, HIGHLIGHT_SAMPLE, first_wins);
    for (token, capture) in expected {
        assert!(
            captured.iter().any(|(t, c)| t == token && c == capture),
            "`{token}` is not highlighted as @{capture}: {captured:?}"
        );
    }
    let query = Query::new(&language(), source).unwrap();
    for name in query.capture_names() {
        let root = name.split('.').next().unwrap();
        assert!(
            roots.contains(&root),
            "@{name} is not a capture the editor themes"
        );
    }
}

#[test]
fn highlight_query_colours_each_kind_of_token() {
    assert_captures(
        tree_sitter_aht::HIGHLIGHTS_QUERY,
        false,
        &[
            ("version", "keyword"),
            ("import", "keyword.import"),
            ("model", "keyword"),
            ("with", "keyword"),
            ("zip", "keyword"),
            ("schedule", "keyword"),
            ("\"common.aht\"", "string"),
            ("# shared", "comment"),
            ("2", "number"),
            ("64", "number"),
            ("1e-3", "number"),
            ("true", "boolean"),
            ("steps", "type.builtin"),
            ("wide", "type.definition"),
            ("mlp", "type"),
            ("power_iteration", "type"),
            ("hidden", "property"),
            ("log", "function.call"),
            ("base", "variable.parameter"),
            ("..", "operator"),
            ("{", "punctuation.bracket"),
        ],
        &[
            "comment",
            "string",
            "number",
            "boolean",
            "type",
            "keyword",
            "property",
            "variable",
            "function",
            "operator",
            "punctuation",
        ],
    );
}

#[test]
fn helix_highlight_query_colours_each_kind_of_token() {
    assert_captures(
        tree_sitter_aht::HELIX_HIGHLIGHTS_QUERY,
        true,
        &[
            ("version", "keyword"),
            ("import", "keyword.control.import"),
            ("model", "keyword"),
            ("with", "keyword"),
            ("\"common.aht\"", "string"),
            ("# shared", "comment"),
            ("2", "constant.numeric"),
            ("1e-3", "constant.numeric"),
            ("true", "constant.builtin.boolean"),
            ("steps", "type.builtin"),
            ("wide", "type"),
            ("power_iteration", "type"),
            ("hidden", "variable.other.member"),
            ("log", "function"),
            ("base", "variable.parameter"),
            ("..", "operator"),
            ("{", "punctuation.bracket"),
        ],
        &[
            "comment",
            "string",
            "constant",
            "type",
            "keyword",
            "variable",
            "function",
            "operator",
            "punctuation",
        ],
    );
}
