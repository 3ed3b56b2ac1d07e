//! Checks of the raw text before parsing, on the characters outside strings and comments
//! (inside them anything goes):
//! - characters that look like the language's own but are not (a no-break space, invisible
//!   characters, curly quotes, typographic dashes): editors and word processors put them in
//!   silently, and the grammar would only say that it expected something else, so they are
//!   named, with what to type instead;
//! - nesting deeper than [`MAX_NESTING`] brackets.

use crate::diagnostic::{Code, Diagnostic};
use crate::source::{FileId, Span};

/// (character, Unicode name, what to type instead).
const LOOKALIKES: &[(char, &str, &str)] = &[
    ('\u{00A0}', "NO-BREAK SPACE", "type a plain space"),
    ('\u{202F}', "NARROW NO-BREAK SPACE", "type a plain space"),
    ('\u{2007}', "FIGURE SPACE", "type a plain space"),
    ('\u{2009}', "THIN SPACE", "type a plain space"),
    ('\u{3000}', "IDEOGRAPHIC SPACE", "type a plain space"),
    ('\u{200B}', "ZERO WIDTH SPACE", "delete it: it is invisible"),
    (
        '\u{200C}',
        "ZERO WIDTH NON-JOINER",
        "delete it: it is invisible",
    ),
    (
        '\u{200D}',
        "ZERO WIDTH JOINER",
        "delete it: it is invisible",
    ),
    ('\u{2060}', "WORD JOINER", "delete it: it is invisible"),
    (
        '\u{FEFF}',
        "ZERO WIDTH NO-BREAK SPACE (a byte-order mark away from the start of the file)",
        "delete it: it is invisible",
    ),
    ('\u{00AD}', "SOFT HYPHEN", "delete it: it is invisible"),
    (
        '\u{201C}',
        "LEFT DOUBLE QUOTATION MARK",
        "type a straight double quote `\"`",
    ),
    (
        '\u{201D}',
        "RIGHT DOUBLE QUOTATION MARK",
        "type a straight double quote `\"`",
    ),
    (
        '\u{2018}',
        "LEFT SINGLE QUOTATION MARK",
        "strings take straight double quotes: `\"...\"`",
    ),
    (
        '\u{2019}',
        "RIGHT SINGLE QUOTATION MARK",
        "strings take straight double quotes: `\"...\"`",
    ),
    ('\u{2013}', "EN DASH", "type a hyphen-minus `-`"),
    ('\u{2014}', "EM DASH", "type a hyphen-minus `-`"),
    ('\u{2212}', "MINUS SIGN", "type a hyphen-minus `-`"),
];

/// The characters of `text` outside strings and comments, with their byte offsets. A string
/// or a comment also ends at a line break (`\n`, or `\r` alone or before `\n`).
fn code_chars(text: &str) -> impl Iterator<Item = (usize, char)> + '_ {
    let (mut in_string, mut in_comment, mut escaped) = (false, false, false);
    text.char_indices().filter(move |&(_, c)| {
        if in_comment {
            in_comment = c != '\n' && c != '\r';
            return false;
        }
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' | '\n' | '\r' => in_string = false,
                _ => {}
            }
            return false;
        }
        match c {
            '"' => in_string = true,
            '#' => in_comment = true,
            _ => return true,
        }
        false
    })
}

/// The first look-alike character outside strings and comments, as a diagnostic at it.
pub fn lookalike(file: FileId, text: &str) -> Option<Diagnostic> {
    let (i, c, name, instead) = code_chars(text).find_map(|(i, c)| {
        LOOKALIKES
            .iter()
            .find(|(l, _, _)| *l == c)
            .map(|(_, name, instead)| (i, c, name, instead))
    })?;
    let span = Span::new(file, i, i + c.len_utf8());
    Some(
        Diagnostic::error(
            Code::Character,
            format!(
                "`U+{:04X} {name}` where the recipe needs plain text",
                c as u32
            ),
        )
        .at(span, format!("U+{:04X} {name}", c as u32))
        .help(format!(
            "{instead} (an editor or word processor put this character here)"
        )),
    )
}

/// How deep `()`, `[]` and `{}` may nest. The parser, the checker and the formatter walk
/// nesting by recursion, so a limit keeps a pathological file from exhausting the stack; no
/// real recipe comes near it.
pub const MAX_NESTING: usize = 256;

/// The first bracket, outside strings and comments, that opens more than [`MAX_NESTING`] levels.
pub fn too_deep(file: FileId, text: &str) -> Option<Diagnostic> {
    let mut depth = 0usize;
    let (i, depth) = code_chars(text).find_map(|(i, c)| {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        (depth > MAX_NESTING).then_some((i, depth))
    })?;
    Some(
        Diagnostic::error(
            Code::Syntax,
            format!("brackets nest deeper than {MAX_NESTING} levels, the limit"),
        )
        .at(Span::new(file, i, i + 1), format!("level {depth}"))
        .help(format!("recipes nest `()`, `[]` and `{{}}` at most {MAX_NESTING} deep: write the value with fewer brackets")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(text: &str) -> Option<(String, u32)> {
        let mut sources = crate::source::SourceMap::new();
        let id = sources.add("t.aht", None, text);
        lookalike(id, text).map(|d| (d.message, d.span.unwrap().start))
    }

    #[test]
    fn lookalikes_are_named_where_they_are_outside_strings_and_comments() {
        let (msg, at) = found("model m = mlp {\u{00A0}hidden = [8] }").unwrap();
        assert_eq!(
            msg,
            "`U+00A0 NO-BREAK SPACE` where the recipe needs plain text"
        );
        assert_eq!(at, 15);
        assert!(
            found("lr = \u{2212}1")
                .unwrap()
                .0
                .contains("U+2212 MINUS SIGN")
        );
        assert!(
            found("path = \u{201C}x\u{201D}")
                .unwrap()
                .0
                .contains("U+201C")
        );
        assert_eq!(
            found("path = \"a\u{00A0}b \u{201C}\\\"\" # \u{2014} note"),
            None
        );
        assert_eq!(found("# \u{200B}\r lr = 1"), None);
        assert!(
            found("# c\r lr\u{200B} = 1").is_some(),
            "a bare \\r ends the comment"
        );
    }
}
