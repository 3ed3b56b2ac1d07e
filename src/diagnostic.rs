//! Diagnostics: what went wrong, where, and how to fix it.
//!
//! The library returns [`Diagnostic`]s; the binary renders them (graphically with miette, or as
//! JSON for editors and CI). Every diagnostic has a stable [`Code`].

use crate::source::{SourceMap, Span};
use serde::Serialize;

macro_rules! codes {
    ($($(#[$doc:meta])* $variant:ident => $text:literal,)*) => {
        /// Stable diagnostic codes. The text form (`aht::check::unknown_field`) never changes
        /// once released, so tools may match on it.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Code {
            $($(#[$doc])* $variant,)*
        }

        impl Code {
            /// Every code, in declaration order.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $text,)*
                }
            }
        }
    };
}

codes! {
    /// `dataset = {`: the text does not follow the grammar.
    Syntax => "aht::parse::syntax",
    /// `lr = 1e999`: a number too large to represent.
    Number => "aht::parse::number",
    /// `model m = mlp {\u{a0}}`: a character that looks like the language's own but is not
    /// (a no-break space, an invisible character, a curly quote, a typographic dash).
    Character => "aht::parse::character",
    /// The recipe file cannot be read.
    Io => "aht::load::io",
    /// The recipe file is not UTF-8.
    Encoding => "aht::load::encoding",
    /// `import "missing.aht"`: the imported file does not exist.
    ImportMissing => "aht::load::import_missing",
    /// `a.aht` imports `b.aht`, which imports `a.aht`.
    ImportCycle => "aht::load::import_cycle",
    /// `version = 7`: a language version this build does not know.
    Version => "aht::check::version",
    /// Two declarations with the same name.
    Duplicate => "aht::check::duplicate",
    /// The same field twice in one block.
    DuplicateField => "aht::check::duplicate_field",
    /// `dataset d = mnist_tiny`: no such kind of dataset/model/schedule/optimizer.
    UnknownKind => "aht::check::unknown_kind",
    /// `data = mnsit`: no declaration or value by that name.
    UnknownName => "aht::check::unknown_name",
    /// `mlp { hiden = [8] }`: the kind has no such field.
    UnknownField => "aht::check::unknown_field",
    /// A required field is not given.
    MissingField => "aht::check::missing_field",
    /// `epochs = "five"`: a value of the wrong type.
    Type => "aht::check::type",
    /// `every = 2 epochs` where steps are needed, or `every = 0.5 steps`.
    Unit => "aht::check::unit",
    /// `lr = -0.1`, `alpha = 2.5`, `batch = 0`: a value outside its allowed range.
    Range => "aht::check::range",
    /// `data = mlp`: a declaration of the wrong kind.
    WrongDecl => "aht::check::wrong_decl",
    /// `model a = b with {}` where `b` is a dataset.
    DeriveKind => "aht::check::derive_kind",
    /// `model a = b with {}` and `model b = a with {}`.
    Cycle => "aht::check::cycle",
    /// `lr = lgo(2)`: no such function.
    UnknownFunction => "aht::check::unknown_function",
    /// `log(1, 2)`: wrong number or kind of arguments.
    Arity => "aht::check::arity",
    /// `lr = 0.1 * step`: a signal where a constant is needed.
    NotConstant => "aht::check::not_constant",
    /// `lr = 1 / 0`, `log(-1)`: arithmetic with no finite result.
    Arithmetic => "aht::check::arithmetic",
    /// `seed = sweep(3..3)`: a sweep with no values.
    SweepEmpty => "aht::check::sweep_empty",
    /// A recipe expanding to more trials than the limit.
    TooManyTrials => "aht::check::too_many_trials",
    /// `lr = 2 * sweep(1, 2)`: a sweep inside an expression or a list.
    SweepMisplaced => "aht::check::sweep_misplaced",
    /// `zip(seed)` where `seed` is not swept, or names an unknown field.
    Zip => "aht::check::zip",
    /// `zip(a, b)` where the sweeps of `a` and `b` differ in length.
    ZipLength => "aht::check::zip_length",
    /// `random(n = 0) { ... }`, or a field in it that is not a distribution.
    Random => "aht::check::random",
    /// `aht.lr = 0.1` outside an experiment, or a path through something that is not a declaration.
    Path => "aht::check::path",
    /// `--set` without `=`, or naming no declaration.
    Set => "aht::check::set",
    /// `linear(10)` on an image, a pool larger than its input, a residual whose branches
    /// differ: a layer stack that does not fit the shapes flowing through it.
    Shape => "aht::check::shape",
    /// A stack item that is not a layer (`stack = [3]`), a block call with positional
    /// arguments, or a parameter named like a layer kind.
    Layer => "aht::check::layer",
    /// `ema = 0.05` in an adaptive schedule, or the `trend` map: a setting kept for old recipes
    /// that has a better replacement (a warning).
    Deprecated => "aht::check::deprecated",
    /// `half_life` and `ema` in one schedule: two fields of which a kind takes one.
    Conflict => "aht::check::conflict",
    /// A data file that is missing, truncated or malformed.
    Data => "aht::data::format",
    /// A candle error while building or running a recipe node.
    Run => "aht::run::lower",
}

/// Severity of a diagnostic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One problem found in a recipe or its inputs.
#[derive(Clone, Debug)]
pub struct Diagnostic {
    pub code: Code,
    pub severity: Severity,
    pub message: String,
    pub span: Option<Span>,
    /// Text shown at the span.
    pub label: String,
    pub help: Option<String>,
    /// Other places that explain this one (the first declaration of a duplicate, say).
    pub related: Vec<(Span, String)>,
    /// A consequence of a mistake already reported (a use of an `lr` that is missing): kept
    /// from the user, who has one thing to fix.
    pub consequence: bool,
}

impl Diagnostic {
    pub fn error(code: Code, message: impl Into<String>) -> Self {
        Diagnostic {
            code,
            severity: Severity::Error,
            message: message.into(),
            span: None,
            label: String::new(),
            help: None,
            related: Vec::new(),
            consequence: false,
        }
    }

    /// Marks this as the consequence of a mistake already reported.
    pub fn consequence(mut self) -> Self {
        self.consequence = true;
        self
    }

    pub fn at(mut self, span: Span, label: impl Into<String>) -> Self {
        self.span = Some(span);
        self.label = label.into();
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn related(mut self, span: Span, label: impl Into<String>) -> Self {
        self.related.push((span, label.into()));
        self
    }

    pub fn warning(mut self) -> Self {
        self.severity = Severity::Warning;
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// `file:line:col` of the primary span.
    pub fn location(&self, sources: &SourceMap) -> Option<String> {
        let span = self.span?;
        let file = sources.get(span.file);
        let (line, col) = file.line_col(span.start as usize);
        Some(format!("{}:{line}:{col}", file.name))
    }

    /// The machine-readable form printed by `--json`.
    pub fn to_json(&self, sources: &SourceMap) -> JsonDiagnostic {
        let place = self.span.map(|span| {
            let file = sources.get(span.file);
            let (line, column) = file.line_col(span.start as usize);
            let (end_line, end_column) = file.line_col(span.end as usize);
            JsonPlace {
                file: file.name.clone(),
                line,
                column,
                end_line,
                end_column,
                start: span.start,
                end: span.end,
            }
        });
        JsonDiagnostic {
            code: self.code.as_str(),
            severity: self.severity,
            message: self.message.clone(),
            place,
            label: self.label.clone(),
            help: self.help.clone(),
        }
    }
}

/// A diagnostic as JSON.
#[derive(Debug, Serialize)]
pub struct JsonDiagnostic {
    pub code: &'static str,
    pub severity: Severity,
    pub message: String,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub place: Option<JsonPlace>,
    pub label: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

/// Where a JSON diagnostic points (1-based lines and columns; byte offsets).
#[derive(Debug, Serialize)]
pub struct JsonPlace {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub end_line: usize,
    pub end_column: usize,
    pub start: u32,
    pub end: u32,
}

/// Renders diagnostics for a terminal with miette (without colour when `color` is false).
pub fn render(diags: &[Diagnostic], sources: &SourceMap, color: bool) -> String {
    use miette::{
        GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteDiagnostic, NamedSource,
    };
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme).with_width(100);
    let mut out = String::new();
    for d in diags {
        let mut md = MietteDiagnostic::new(d.message.clone()).with_code(d.code.as_str());
        md = md.with_severity(match d.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        });
        if let Some(help) = &d.help {
            md = md.with_help(help.clone());
        }
        let report = if let Some(span) = d.span {
            md = md.with_label(LabeledSpan::new_primary_with_span(
                Some(d.label.clone()),
                span.range(),
            ));
            for (rel, label) in &d.related {
                if rel.file == span.file {
                    md =
                        md.with_label(LabeledSpan::new_with_span(Some(label.clone()), rel.range()));
                }
            }
            let file = sources.get(span.file);
            miette::Report::new(md)
                .with_source_code(NamedSource::new(file.name.clone(), file.display_text()))
        } else {
            miette::Report::new(md)
        };
        let mut text = String::new();
        if handler.render_report(&mut text, report.as_ref()).is_err() {
            text = format!("error[{}]: {}\n", d.code.as_str(), d.message);
        }
        for (rel, label) in &d.related {
            if Some(rel.file) != d.span.map(|s| s.file) {
                let file = sources.get(rel.file);
                let (line, col) = file.line_col(rel.start as usize);
                text.push_str(&format!("  note: {label} at {}:{line}:{col}\n", file.name));
            }
        }
        out.push_str(&text);
        out.push('\n');
    }
    out
}

/// A list of diagnostics with helpers for collecting them.
#[derive(Clone, Debug, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    pub fn has_errors(&self) -> bool {
        self.0.iter().any(Diagnostic::is_error)
    }

    /// Sorted by file and position, with exact repeats removed.
    pub fn finish(mut self) -> Vec<Diagnostic> {
        self.0
            .sort_by_key(|d| d.span.map(|s| (s.file, s.start, s.end)));
        self.0
            .dedup_by(|a, b| a.code == b.code && a.span == b.span && a.message == b.message);
        self.0
    }
}
