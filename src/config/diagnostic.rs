//! Errors that point at the file: every configuration error carries `file:line:col`.
//!
//! Syntax and type errors come from the TOML parser with a byte span; errors found while
//! checking values name a path of keys (`groups[2].agents[0].extension`) that is looked up in the
//! parsed document, so the checks themselves stay free of span bookkeeping.

use std::fmt;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// One located error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file, as the admin named it.
    pub origin: String,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    /// What is wrong, and what to write instead.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.origin, self.line, self.column, self.message
        )
    }
}

/// One step of a path into the document. Keys are the field names of the raw model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(&'static str),
    Index(usize),
}

impl From<&'static str> for Seg {
    fn from(key: &'static str) -> Seg {
        Seg::Key(key)
    }
}

impl From<usize> for Seg {
    fn from(index: usize) -> Self {
        Seg::Index(index)
    }
}

/// A path followed by more steps.
pub(crate) fn join(at: &[Seg], more: &[Seg]) -> Vec<Seg> {
    at.iter().chain(more).copied().collect()
}

/// A path into the document: `keys!["groups", 2, "agents", 0, "extension"]`.
macro_rules! keys {
    ($($seg:expr),* $(,)?) => {
        &[$($crate::config::diagnostic::Seg::from($seg)),*]
    };
}
pub(crate) use keys;

/// The parsed document and its text, to turn spans and paths into diagnostics.
pub(crate) struct Source<'a> {
    origin: &'a str,
    text: &'a str,
    root: &'a Spanned<DeTable<'a>>,
    diagnostics: Vec<Diagnostic>,
}

impl<'a> Source<'a> {
    /// The file the configuration came from, as given.
    pub(crate) fn origin(&self) -> &str {
        self.origin
    }

    pub(crate) fn new(origin: &'a str, text: &'a str, root: &'a Spanned<DeTable<'a>>) -> Self {
        Source {
            origin,
            text,
            root,
            diagnostics: Vec::new(),
        }
    }

    /// Records an error at the value a path names, or at the nearest enclosing value that
    /// exists when the path's end is missing from the file.
    pub(crate) fn error(&mut self, path: &[Seg], message: impl Into<String>) {
        let span = self.span_of(path);
        self.error_at(span, message);
    }

    /// Records an error at a byte span.
    pub(crate) fn error_at(&mut self, span: Range<usize>, message: impl Into<String>) {
        let diagnostic = locate(self.origin, self.text, span.start, message.into());
        self.diagnostics.push(diagnostic);
    }

    /// Records a TOML parse or type error.
    pub(crate) fn toml_error(&mut self, error: &toml::de::Error) {
        let start = error.span().map_or(0, |s| s.start);
        let diagnostic = locate(self.origin, self.text, start, toml_message(error));
        self.diagnostics.push(diagnostic);
    }

    /// Whether any error was recorded.
    pub(crate) fn has_errors(&self) -> bool {
        !self.diagnostics.is_empty()
    }

    /// The errors in file order.
    pub(crate) fn into_diagnostics(mut self) -> Vec<Diagnostic> {
        self.diagnostics.sort_by_key(|d| (d.line, d.column));
        self.diagnostics.dedup();
        self.diagnostics
    }

    fn span_of(&self, path: &[Seg]) -> Range<usize> {
        let mut span = self.root.span();
        let mut value: Option<&DeValue<'_>> = None;
        let mut table: Option<&DeTable<'_>> = Some(self.root.get_ref());
        for seg in path {
            let next = match (seg, table, value) {
                (Seg::Key(key), Some(t), _) => {
                    t.iter().find(|(k, _)| k.get_ref() == key).map(|(_, v)| v)
                }
                (Seg::Index(i), _, Some(DeValue::Array(items))) => items.get(*i),
                _ => None,
            };
            let Some(next) = next else { break };
            span = next.span();
            value = Some(next.get_ref());
            table = next.get_ref().as_table();
        }
        span
    }
}

/// Turns a byte offset into a 1-based line and character column.
pub(crate) fn locate(origin: &str, text: &str, offset: usize, message: String) -> Diagnostic {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    Diagnostic {
        origin: origin.to_owned(),
        line,
        column,
        message,
    }
}

/// Whether the error is a key the raw model does not have (`deny_unknown_fields`).
pub(crate) fn is_unknown_key(error: &toml::de::Error) -> bool {
    error.message().trim_start().starts_with("unknown field")
}

/// The parser's message on one line, without its excerpt of the file.
fn toml_message(error: &toml::de::Error) -> String {
    let message = error.message().trim().replace('\n', "; ");
    if is_unknown_key(error) {
        format!("{message}; remove it or check its spelling")
    } else {
        message
    }
}
