//! The report's `index.html`: the summary tables and every plot, with the PNGs embedded as
//! data URLs so the page needs nothing else (no network, no neighbouring files).

use super::ReportError;
use crate::sweep::summary::{self, Comparison};
use base64::Engine as _;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One experiment's part of the page.
pub struct Section {
    pub comparison: Comparison,
    pub trials: usize,
    /// (title, PNG path, SVG path) of each plot.
    pub images: Vec<(String, PathBuf, PathBuf)>,
}

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'DejaVu Sans',sans-serif;margin:2em auto;max-width:1000px;color:#222;padding:0 1em}\
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}\
table{border-collapse:collapse;margin:1em 0;font-size:.92em}th,td{border:1px solid #ddd;padding:.35em .6em;text-align:right}\
th:first-child,td:first-child{text-align:left}th{background:#f5f5f5}.ci{color:#777}\
figure{margin:1.5em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.9em;color:#555}\
.note{color:#555;font-size:.92em}";

/// The whole page.
pub fn page(run_dir: &Path, sections: &[Section]) -> Result<String, ReportError> {
    let mut out = String::new();
    let title = format!("ahtsgd report: {}", run_dir.display());
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=en>\n<head>\n<meta charset=utf-8>\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n<p class=note>Each curve is an arm's mean across seeds; the shaded band is the 95% t interval of that mean. Accuracies are in %. Every plot is also written next to this page as PNG and SVG.</p>\n",
        escape(&title),
        escape(&title)
    );
    for s in sections {
        let c = &s.comparison;
        let id = escape(&c.experiment);
        let row = |cells: Vec<String>, tag: &str| -> String {
            let cells: String = cells
                .iter()
                .map(|c| format!("<{tag}>{}</{tag}>", escape(&super::plot::short_numbers(c))))
                .collect();
            format!("<tr>{cells}</tr>\n")
        };
        let heads = |h: &[&str]| row(h.iter().map(|x| x.to_string()).collect(), "th");
        let _ = write!(
            out,
            "<section id=\"{id}\">\n<h2>{id}</h2>\n<p class=note>{} recorded trials. {}</p>\n<table class=summary>\n<thead>{}</thead>\n<tbody>\n",
            s.trials,
            escape(summary::ARM_NOTE),
            heads(&summary::ARM_HEADS)
        );
        for a in &c.arms {
            out.push_str(&row(a.cells(), "td"));
        }
        out.push_str("</tbody>\n</table>\n");
        if !c.paired.is_empty() {
            let _ = write!(
                out,
                "<p class=note>{}</p>\n<table class=paired>\n<thead>{}</thead>\n<tbody>\n",
                escape(summary::PAIRED_NOTE),
                heads(&summary::PAIRED_HEADS)
            );
            for p in &c.paired {
                out.push_str(&row(p.cells(), "td"));
            }
            out.push_str("</tbody>\n</table>\n");
        }
        for (title, png, svg) in &s.images {
            let bytes = std::fs::read(png).map_err(|source| ReportError::Io {
                path: png.display().to_string(),
                source,
            })?;
            let data = base64::engine::general_purpose::STANDARD.encode(bytes);
            let svg_name = svg
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let _ = write!(
                out,
                "<figure>\n<img alt=\"{}\" src=\"data:image/png;base64,{data}\">\n<figcaption>{} (<a href=\"{}\">SVG</a>)</figcaption>\n</figure>\n",
                escape(title),
                escape(title),
                escape(&svg_name)
            );
        }
        out.push_str("</section>\n");
    }
    out.push_str("</body>\n</html>\n");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("a<b & \"c\" 'd'>"),
            "a&lt;b &amp; &quot;c&quot; &#39;d&#39;&gt;"
        );
    }
}
