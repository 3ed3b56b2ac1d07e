//! A document checked as the editor holds it, and its spans as protocol locations: the
//! document's own (after any byte-order mark, which the checker drops) and those of the files
//! it imports, each file's line index built once.

use super::position::LineIndex;
use super::uri::{path_of, uri_of};
use crate::check::Checked;
use crate::source::{FileId, Span};
use lsp_types::{Location, Uri};
use std::path::{Path, PathBuf};

/// The text of a byte-order mark.
pub const BOM: &str = "\u{feff}";

/// A checked document and what its spans need to become locations.
pub struct Document<'t> {
    pub checked: Checked,
    text: &'t str,
    /// The bytes of a byte-order mark the checker dropped from the document.
    shift: usize,
    /// Each file's URI (the document's, or an imported file's on disk) and line index.
    files: Vec<(FileId, Uri, LineIndex)>,
}

impl<'t> Document<'t> {
    /// Checks the text as the file `uri` names (imports are resolved beside it), or, for a
    /// document that is no file, in the working folder.
    pub fn check(uri: &'t Uri, text: &'t str) -> Document<'t> {
        let path = path_of(uri);
        let name = path.as_ref().and_then(|p| p.file_name()).map_or_else(
            || uri.as_str().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let dir = path
            .as_ref()
            .and_then(|p| p.parent())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let checked = crate::check::check_text_at(&name, text, &dir, &Default::default());
        let files = checked
            .sources
            .files()
            .filter_map(|(id, f)| {
                if Some(id) == checked.root {
                    Some((id, uri.clone(), LineIndex::new(text)))
                } else {
                    let u = uri_of(f.path.as_deref()?)?;
                    Some((id, u, LineIndex::new(&f.text)))
                }
            })
            .collect();
        Document {
            shift: if text.starts_with(BOM) { BOM.len() } else { 0 },
            checked,
            text,
            files,
        }
    }

    /// Where a span is, in protocol terms (`None` for a file that is not on disk).
    pub fn location(&self, span: Span) -> Option<Location> {
        let (id, uri, idx) = self.files.iter().find(|(id, _, _)| *id == span.file)?;
        let (start, end) = (span.start as usize, span.end as usize);
        let range = if Some(*id) == self.checked.root {
            idx.range(self.text, start + self.shift, end + self.shift)
        } else {
            let text = &self.checked.sources.get(*id).text;
            idx.range(text, start, end)
        };
        Some(Location::new(uri.clone(), range))
    }

    /// The offset in the checker's text of the document of a byte offset in the editor's.
    pub fn checker_offset(&self, offset: usize) -> Option<usize> {
        offset.checked_sub(self.shift)
    }

    /// Whether a span is in the document itself.
    pub fn is_root(&self, span: Span) -> bool {
        Some(span.file) == self.checked.root
    }
}
