//! Byte offsets against the protocol's positions: a line and a column in UTF-16 code units,
//! lines ending at `\n`, `\r\n` or a bare `\r` (as the grammar reads them, and as the protocol
//! says). Positions past a line's end or past the text's end are clamped, never a panic.

use lsp_types::{Position, Range};

/// Where each line of a text starts.
#[derive(Clone, Debug)]
pub struct LineIndex {
    starts: Vec<usize>,
    len: usize,
}

impl LineIndex {
    pub fn new(text: &str) -> LineIndex {
        let bytes = text.as_bytes();
        let mut starts = vec![0];
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\n' => starts.push(i + 1),
                b'\r' if bytes.get(i + 1) == Some(&b'\n') => {
                    starts.push(i + 2);
                    i += 1;
                }
                b'\r' => starts.push(i + 1),
                _ => {}
            }
            i += 1;
        }
        LineIndex {
            starts,
            len: text.len(),
        }
    }

    /// The end of line `line`'s content (before its line break).
    fn line_end(&self, text: &str, line: usize) -> usize {
        match self.starts.get(line + 1) {
            Some(&next) if text[..next].ends_with("\r\n") => next - 2,
            Some(&next) => next - 1,
            None => self.len,
        }
    }

    /// The position of byte `offset` (clamped to the text, and back to a character boundary).
    pub fn position(&self, text: &str, offset: usize) -> Position {
        let mut offset = offset.min(self.len);
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.starts.partition_point(|&s| s <= offset) - 1;
        let col: usize = text[self.starts[line]..offset]
            .chars()
            .map(char::len_utf16)
            .sum();
        Position::new(line as u32, col as u32)
    }

    /// The byte offset of `pos`: a line past the last is the end of the text, a column past
    /// the line's end is its end, a column inside a character that takes two UTF-16 units is
    /// the character's start.
    pub fn offset(&self, text: &str, pos: Position) -> usize {
        let line = pos.line as usize;
        if line >= self.starts.len() {
            return self.len;
        }
        let start = self.starts[line];
        let end = self.line_end(text, line);
        let mut units = 0usize;
        for (i, c) in text[start..end].char_indices() {
            let next = units + c.len_utf16();
            if next > pos.character as usize {
                return start + i;
            }
            units = next;
        }
        end
    }

    pub fn range(&self, text: &str, start: usize, end: usize) -> Range {
        Range::new(self.position(text, start), self.position(text, end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_count_utf16_units_and_every_line_break_counts() {
        // é is one UTF-16 unit (two bytes), 𝛼 two units (four bytes)
        let text = "a = \"é𝛼\"\r\nb\rc\n";
        let idx = LineIndex::new(text);
        let b = text.find('b').unwrap();
        assert_eq!(idx.position(text, b), Position::new(1, 0));
        assert_eq!(
            idx.position(text, text.find('c').unwrap()),
            Position::new(2, 0)
        );
        let closing = text.rfind('"').unwrap();
        // a, space, =, space, ", é, 𝛼 (2) = 8 units before the closing quote
        assert_eq!(idx.position(text, closing), Position::new(0, 8));
        assert_eq!(idx.offset(text, Position::new(0, 8)), closing);
        // the middle of 𝛼 is its start
        let alpha = text.find('𝛼').unwrap();
        assert_eq!(idx.offset(text, Position::new(0, 7)), alpha);
        // every offset that starts a character goes there and back (but the `\n` of a
        // `\r\n`, which is inside one line break)
        for (i, _) in text
            .char_indices()
            .filter(|&(i, c)| !(c == '\n' && text[..i].ends_with('\r')))
        {
            assert_eq!(idx.offset(text, idx.position(text, i)), i, "{i}");
        }
    }

    #[test]
    fn positions_past_the_end_are_clamped() {
        let text = "ab\ncd";
        let idx = LineIndex::new(text);
        assert_eq!(
            idx.offset(text, Position::new(0, 99)),
            2,
            "the end of line 0"
        );
        assert_eq!(idx.offset(text, Position::new(7, 0)), text.len());
        assert_eq!(idx.position(text, 99), Position::new(1, 2));
        let crlf = "ab\r\ncd";
        let idx = LineIndex::new(crlf);
        assert_eq!(
            idx.offset(crlf, Position::new(0, 99)),
            2,
            "before the \\r\\n"
        );
        let empty = "";
        let idx = LineIndex::new(empty);
        assert_eq!(idx.offset(empty, Position::new(3, 3)), 0);
        assert_eq!(idx.position(empty, 5), Position::new(0, 0));
    }
}
