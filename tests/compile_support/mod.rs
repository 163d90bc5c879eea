//! What the compile tests (`compile.rs`, `compile_http.rs`) share: YAML in,
//! the compiled table and every diagnostic out.
#![allow(dead_code)] // each test binary uses its own subset of the helpers

use ringway::config::{LoadOptions, load_str};
use ringway::diag::{Diagnostic, Severity};
use ringway::routing::table::RouteTable;
use ringway::routing::{CompileOptions, compile};

pub struct Outcome {
    pub table: Option<RouteTable>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Outcome {
    pub fn table(&self) -> &RouteTable {
        match &self.table {
            Some(t) => t,
            None => panic!(
                "configuration rejected: {:#?}",
                self.messages(Severity::Error)
            ),
        }
    }

    pub fn messages(&self, severity: Severity) -> Vec<String> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == severity)
            .map(ToString::to_string)
            .collect()
    }

    /// The one diagnostic of `severity`; fails on none or several.
    pub fn only(&self, severity: Severity) -> &Diagnostic {
        let found: Vec<&Diagnostic> = self
            .diagnostics
            .iter()
            .filter(|d| d.severity == severity)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "expected one {severity}, got {:#?}",
            self.diagnostics
        );
        found[0]
    }
}

pub fn build_with(text: &str, options: &CompileOptions) -> Outcome {
    let loaded = load_str("test.yaml", text, &LoadOptions::default());
    let mut diagnostics = loaded.diagnostics.0;
    if diagnostics.iter().any(Diagnostic::is_error) {
        return Outcome {
            table: None,
            diagnostics,
        };
    }
    let compiled = compile(&loaded.manifests, options);
    let rejected = compiled.diagnostics.has_errors();
    diagnostics.extend(compiled.diagnostics.0);
    Outcome {
        table: (!rejected).then_some(compiled.table),
        diagnostics,
    }
}

pub fn build(text: &str) -> Outcome {
    build_with(text, &CompileOptions::default())
}

pub fn config(parts: &[&str]) -> String {
    parts.join("---\n")
}

/// The line (1-based) of the first line of `text` containing `needle`.
pub fn line_of(text: &str, needle: &str) -> u32 {
    let i = text
        .lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in text"));
    u32::try_from(i + 1).expect("small")
}
