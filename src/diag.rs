//! Diagnostics: the errors, warnings and notes that loading and compiling a
//! configuration produce. Every one names where it comes from (file, line,
//! document), what it is about (`Kind namespace/name`) and the field path, so
//! an operator can go straight to the line.
#![forbid(unsafe_code)]

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

/// How bad a diagnostic is. Errors reject the whole configuration; warnings
/// let it apply (and fail `check --strict`); notes are informational.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// Where a diagnostic points: a file, the 1-based index of the YAML document
/// inside it, and the 1-based line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    pub file: Arc<str>,
    pub document: usize,
    pub line: u32,
}

/// One message about the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// `Kind namespace/name`, when the message is about one resource.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Field path inside the resource, relative to `spec` for spec fields
    /// (`tcp[0].route[1].destination.subset`), or from the document root
    /// otherwise (`metadata.name`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
}

impl Diagnostic {
    pub fn new(severity: Severity, message: impl Into<String>) -> Self {
        Diagnostic {
            severity,
            location: None,
            resource: None,
            field: None,
            message: message.into(),
        }
    }

    pub fn error(message: impl Into<String>) -> Self {
        Self::new(Severity::Error, message)
    }

    pub fn warning(message: impl Into<String>) -> Self {
        Self::new(Severity::Warning, message)
    }

    pub fn info(message: impl Into<String>) -> Self {
        Self::new(Severity::Info, message)
    }

    pub fn at(mut self, location: Location) -> Self {
        self.location = Some(location);
        self
    }

    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.resource = Some(resource.into());
        self
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        let field = field.into();
        self.field = (!field.is_empty()).then_some(field);
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// `config/vs.yaml:14: VirtualService default/tcp-echo: tcp[0].route[1].destination.subset: <message> (document 2)`
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(loc) = &self.location {
            write!(f, "{}:{}: ", loc.file, loc.line)?;
        }
        if let Some(resource) = &self.resource {
            write!(f, "{resource}: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(loc) = &self.location {
            write!(f, " (document {})", loc.document)?;
        }
        Ok(())
    }
}

/// All diagnostics of one load or compile, in the order they were found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }

    pub fn has_errors(&self) -> bool {
        self.0.iter().any(Diagnostic::is_error)
    }

    pub fn count(&self, severity: Severity) -> usize {
        self.0.iter().filter(|d| d.severity == severity).count()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter()
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.is_error())
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.severity == Severity::Warning)
    }
}

/// The closest candidate to `input`, for "did you mean" hints: a case or
/// snake_case/camelCase difference, or an edit distance of at most 2 (1 for
/// short words).
pub fn did_you_mean<'a>(input: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let folded = fold(input);
    if let Some(hit) = candidates.iter().find(|c| fold(c) == folded) {
        return Some(hit);
    }
    let limit = if input.len() <= 4 { 1 } else { 2 };
    candidates
        .iter()
        .map(|c| {
            (
                edit_distance(&input.to_ascii_lowercase(), &c.to_ascii_lowercase()),
                *c,
            )
        })
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn fold(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Optimal string alignment distance: insertions, deletions, substitutions
/// and adjacent transpositions (`nmae` → `name`) each cost one.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_you_mean_cases() {
        struct Case {
            input: &'static str,
            want: Option<&'static str>,
        }
        let candidates = ["connectTimeout", "maxConnections", "idleTimeout", "port"];
        let cases = [
            Case {
                input: "connect_timeout",
                want: Some("connectTimeout"),
            },
            Case {
                input: "conectTimeout",
                want: Some("connectTimeout"),
            },
            Case {
                input: "MaxConnections",
                want: Some("maxConnections"),
            },
            Case {
                input: "prot",
                want: Some("port"),
            },
            Case {
                input: "xyz",
                want: None,
            },
            Case {
                input: "pot",
                want: Some("port"),
            },
            Case {
                input: "something",
                want: None,
            },
        ];
        for case in cases {
            assert_eq!(
                did_you_mean(case.input, &candidates),
                case.want,
                "input {}",
                case.input
            );
        }
    }

    #[test]
    fn display_names_file_line_resource_field_and_document() {
        let d = Diagnostic::error("subset \"v3\" is not declared")
            .at(Location {
                file: "config/vs.yaml".into(),
                document: 2,
                line: 14,
            })
            .resource("VirtualService default/tcp-echo")
            .field("tcp[0].route[1].destination.subset");
        assert_eq!(
            d.to_string(),
            "config/vs.yaml:14: VirtualService default/tcp-echo: tcp[0].route[1].destination.subset: \
             subset \"v3\" is not declared (document 2)"
        );
    }
}
