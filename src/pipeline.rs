//! A source's snapshot → load → compile: what `check`, start-up and every
//! reload do, off the data path. Where the documents came from is the
//! source's business (`src/source/`); this takes a snapshot and nothing else.
#![forbid(unsafe_code)]

use crate::config::{LoadOptions, load_documents};
use crate::diag::{Diagnostic, Diagnostics};
use crate::routing::{CompileOptions, RouteTable, compile};
use crate::source::Snapshot;

/// How to read and compile a snapshot.
#[derive(Debug, Clone, Default)]
pub struct Pipeline {
    pub load: LoadOptions,
    pub compile: CompileOptions,
}

/// The outcome of one build: a table when the configuration is valid, and
/// every diagnostic either way.
#[derive(Debug)]
pub struct Build {
    pub table: Option<RouteTable>,
    pub diagnostics: Diagnostics,
    /// Gateways read (a configuration with Gateways and no listener serves
    /// nothing: `check` says so as an error, `run` logs it as one).
    pub gateways: usize,
}

impl Build {
    /// Whether the configuration has Gateways and yet opens no listener.
    pub fn serves_nothing(&self) -> bool {
        self.gateways > 0 && self.table.as_ref().is_some_and(|t| t.listeners.is_empty())
    }
}

impl Pipeline {
    pub fn build(&self, snapshot: &Snapshot) -> Build {
        let loaded = load_documents(&snapshot.documents, &self.load);
        let gateways = loaded.manifests.gateways.len();
        let mut diagnostics = loaded.diagnostics;
        if diagnostics.has_errors() {
            return Build {
                table: None,
                diagnostics,
                gateways,
            };
        }
        let compiled = compile(&loaded.manifests, &self.compile);
        diagnostics.extend(compiled.diagnostics);
        if diagnostics.has_errors() {
            return Build {
                table: None,
                diagnostics,
                gateways,
            };
        }
        if compiled.table.listeners.is_empty() {
            diagnostics.push(Diagnostic::warning(
                "the configuration opens no listener: no selected Gateway has a server with a matching route",
            ));
        }
        Build {
            table: Some(compiled.table),
            diagnostics,
            gateways,
        }
    }
}
