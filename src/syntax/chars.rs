//! Characters that look like the language's own but are not: a no-break space, invisible
//! characters, curly quotes, typographic dashes. Editors and word processors put them in
//! silently, and the grammar would only say that it expected something else, so they are
//! named before parsing, with what to type instead. Inside strings and comments anything goes.

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

/// The first look-alike character outside strings and comments, as a diagnostic at it.
pub fn lookalike(file: FileId, text: &str) -> Option<Diagnostic> {
    let mut in_string = false;
    let mut in_comment = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if in_comment {
            in_comment = c != '\n' && c != '\r';
            continue;
        }
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' | '\n' | '\r' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '#' => in_comment = true,
            _ => {
                if let Some((_, name, instead)) = LOOKALIKES.iter().find(|(l, _, _)| *l == c) {
                    let span = Span::new(file, i, i + c.len_utf8());
                    return Some(
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
                    );
                }
            }
        }
    }
    None
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
