//! Loading a recipe: the root file and, transitively, its imports.

use crate::diagnostic::{Code, Diagnostic, Diagnostics};
use crate::source::{FileId, SourceMap, Span};
use crate::syntax::{self, ast::Item, ast::Module};
use std::path::{Path, PathBuf};

/// Every file of a recipe, parsed (files with syntax errors are left out).
#[derive(Debug, Default)]
pub struct Loaded {
    pub sources: SourceMap,
    /// Parsed modules in load order: imports before the files that import them.
    pub modules: Vec<(FileId, Module)>,
    /// The root file.
    pub root: Option<FileId>,
}

/// Loads `path` and its imports.
pub fn load_file(path: &Path, diags: &mut Diagnostics) -> Loaded {
    let mut loaded = Loaded::default();
    match std::fs::read(path) {
        Ok(bytes) => {
            let canon = canonical(path);
            let (text, bad) = decode(bytes);
            let id = loaded
                .sources
                .add(path.display().to_string(), Some(&canon), text);
            loaded.root = Some(id);
            match bad {
                Some(at) => diags.push(not_utf8(&loaded.sources, id, at)),
                None => visit(&mut loaded, id, &mut vec![id], diags),
            }
        }
        Err(e) => diags.push(
            Diagnostic::error(Code::Io, format!("cannot read `{}`: {e}", path.display()))
                .help("check the path; recipes are `.aht` files"),
        ),
    }
    loaded
}

/// Loads recipe text that is not on disk; imports resolve against `base_dir`.
pub fn load_text(name: &str, text: &str, base_dir: &Path, diags: &mut Diagnostics) -> Loaded {
    let mut loaded = Loaded::default();
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let pseudo = base_dir.join(name);
    let id = loaded.sources.add(name, Some(&pseudo), text);
    loaded.root = Some(id);
    visit(&mut loaded, id, &mut vec![id], diags);
    loaded
}

/// A file's text: a byte-order mark at the start dropped (editors on Windows write one), and
/// for bytes that are not UTF-8, the text with replacement characters and the offset of the
/// first bad byte with its value.
fn decode(mut bytes: Vec<u8>) -> (String, Option<(usize, u8)>) {
    if bytes.starts_with(b"\xEF\xBB\xBF") {
        bytes.drain(..3);
    }
    match String::from_utf8(bytes) {
        Ok(text) => (text, None),
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let byte = e.as_bytes()[at];
            (
                String::from_utf8_lossy(e.as_bytes()).into_owned(),
                Some((at, byte)),
            )
        }
    }
}

/// The diagnostic for a file that is not UTF-8, at its first bad byte (the lossy text keeps
/// the bytes before it, so the offset holds).
fn not_utf8(sources: &SourceMap, id: FileId, (at, byte): (usize, u8)) -> Diagnostic {
    let file = sources.get(id);
    let (line, col) = file.line_col(at);
    let end = file.text[at..]
        .chars()
        .next()
        .map_or(at, |c| at + c.len_utf8());
    Diagnostic::error(
        Code::Encoding,
        format!(
            "`{}` is not UTF-8: byte 0x{byte:02X} at line {line}, column {col}",
            file.name
        ),
    )
    .at(Span::new(id, at, end), format!("byte 0x{byte:02X}"))
    .help("save the file as UTF-8 (recipes are UTF-8 text; a Latin-1 `é` is one such byte)")
}

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

fn visit(loaded: &mut Loaded, id: FileId, stack: &mut Vec<FileId>, diags: &mut Diagnostics) {
    let text = loaded.sources.get(id).text.clone();
    let module = match syntax::parse(id, &text) {
        Ok(m) => m,
        Err(d) => {
            diags.push(d);
            return;
        }
    };
    let dir = loaded
        .sources
        .get(id)
        .path
        .as_ref()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    for item in &module.items {
        let Item::Import(target) = item else { continue };
        let span: Span = target.span;
        let path = dir.join(&target.node);
        let canon = canonical(&path);
        if let Some(existing) = loaded.sources.find(&canon) {
            if stack.contains(&existing) {
                let chain: Vec<String> = stack
                    .iter()
                    .chain(std::iter::once(&existing))
                    .map(|f| loaded.sources.get(*f).name.clone())
                    .collect();
                diags.push(
                    Diagnostic::error(
                        Code::ImportCycle,
                        format!("import cycle: {}", chain.join(" -> ")),
                    )
                    .at(span, "imports a file that is still being loaded")
                    .help("move the shared declarations into a third file that both import"),
                );
            }
            continue;
        }
        match std::fs::read(&canon) {
            Ok(bytes) => {
                let (text, bad) = decode(bytes);
                // shown relative to how the importing file was named, not as an absolute path
                let shown = Path::new(&loaded.sources.get(id).name)
                    .parent()
                    .map(|p| p.join(&target.node))
                    .unwrap_or_else(|| PathBuf::from(&target.node));
                let name = shown.display().to_string();
                let child = loaded.sources.add(name, Some(&canon), text);
                if let Some(at) = bad {
                    diags.push(not_utf8(&loaded.sources, child, at));
                    continue;
                }
                stack.push(child);
                visit(loaded, child, stack, diags);
                stack.pop();
            }
            Err(e) => diags.push(
                Diagnostic::error(
                    Code::ImportMissing,
                    format!("cannot import `{}`: {e}", target.node),
                )
                .at(span, "no such file")
                .help(format!(
                    "imports are relative to the importing file's folder ({})",
                    Path::new(&loaded.sources.get(id).name)
                        .parent()
                        .filter(|p| !p.as_os_str().is_empty())
                        .unwrap_or(Path::new("."))
                        .display()
                )),
            ),
        }
    }
    loaded.modules.push((id, module));
}
