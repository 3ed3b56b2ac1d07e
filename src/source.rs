//! Source files and byte spans.
//!
//! Every recipe file loaded for a run gets a [`FileId`] in a [`SourceMap`]; spans point into
//! those files so diagnostics can name `file:line:col` across imports.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Index of a file in a [`SourceMap`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FileId(pub u32);

/// A byte range `start..end` in one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Span {
    pub file: FileId,
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(file: FileId, start: usize, end: usize) -> Self {
        Span {
            file,
            start: start as u32,
            end: end as u32,
        }
    }

    /// The smallest span covering both (same file assumed).
    pub fn to(self, other: Span) -> Span {
        Span {
            file: self.file,
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }

    pub fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
}

/// A value with the span it was written at.
#[derive(Clone, Debug, PartialEq)]
pub struct Spanned<T> {
    pub node: T,
    pub span: Span,
}

impl<T> Spanned<T> {
    pub fn new(node: T, span: Span) -> Self {
        Spanned { node, span }
    }
}

/// One loaded source file.
#[derive(Clone, Debug)]
pub struct SourceFile {
    /// The name shown in diagnostics (the path as given, or `<set>` for `--set` values).
    pub name: String,
    /// The path on disk, when there is one.
    pub path: Option<PathBuf>,
    pub text: Arc<str>,
}

impl SourceFile {
    /// 1-based line and column (in characters) of a byte offset. Lines end at `\n`, `\r\n`
    /// or a bare `\r`, as the grammar reads them.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let bytes = self.text.as_bytes();
        let (mut line, mut line_start) = (1, 0);
        for (i, &b) in bytes[..offset].iter().enumerate() {
            let breaks = b == b'\n' || (b == b'\r' && bytes.get(i + 1) != Some(&b'\n'));
            if breaks {
                line += 1;
                line_start = i + 1;
            }
        }
        let col = self.text[line_start..offset].chars().count() + 1;
        (line, col)
    }

    /// The text as a renderer that knows only `\n` and `\r\n` should see it: every bare `\r`
    /// becomes `\n` (one byte for one, so spans still point where they did).
    pub fn display_text(&self) -> String {
        let bytes = self.text.as_bytes();
        let mut out = String::with_capacity(bytes.len());
        for (i, c) in self.text.char_indices() {
            if c == '\r' && bytes.get(i + 1) != Some(&b'\n') {
                out.push('\n');
            } else {
                out.push(c);
            }
        }
        out
    }
}

/// All files of one recipe (the root and its imports, plus command-line values).
#[derive(Clone, Debug, Default)]
pub struct SourceMap {
    files: Vec<SourceFile>,
}

impl SourceMap {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(
        &mut self,
        name: impl Into<String>,
        path: Option<&Path>,
        text: impl Into<Arc<str>>,
    ) -> FileId {
        self.files.push(SourceFile {
            name: name.into(),
            path: path.map(Path::to_path_buf),
            text: text.into(),
        });
        FileId(self.files.len() as u32 - 1)
    }

    pub fn get(&self, id: FileId) -> &SourceFile {
        &self.files[id.0 as usize]
    }

    /// The file loaded from `path`, if any.
    pub fn find(&self, path: &Path) -> Option<FileId> {
        self.files
            .iter()
            .position(|f| f.path.as_deref() == Some(path))
            .map(|i| FileId(i as u32))
    }

    pub fn files(&self) -> impl Iterator<Item = (FileId, &SourceFile)> {
        self.files
            .iter()
            .enumerate()
            .map(|(i, f)| (FileId(i as u32), f))
    }

    /// The text a span covers.
    pub fn snippet(&self, span: Span) -> &str {
        &self.get(span.file).text[span.range()]
    }
}
