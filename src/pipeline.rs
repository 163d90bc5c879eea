//! Load and compile a whole configuration: what `check`, startup and every
//! reload do, off the data path.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use crate::config::{LoadOptions, load};
use crate::diag::{Diagnostic, Diagnostics};
use crate::routing::{CompileOptions, RouteTable, compile};

/// Where the configuration comes from and how to read it.
#[derive(Debug, Clone)]
pub struct Source {
    pub paths: Vec<PathBuf>,
    pub load: LoadOptions,
    pub compile: CompileOptions,
}

/// The outcome of one build: a table when the configuration is valid, and
/// every diagnostic either way.
#[derive(Debug)]
pub struct Build {
    pub table: Option<RouteTable>,
    pub diagnostics: Diagnostics,
    /// Files that held nothing but white space (see [`crate::config::Loaded`]).
    pub blank_files: Vec<PathBuf>,
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

impl Source {
    pub fn build(&self) -> Build {
        let loaded = load(&self.paths, &self.load);
        let blank_files = loaded.blank_files;
        let gateways = loaded.manifests.gateways.len();
        let mut diagnostics = loaded.diagnostics;
        if diagnostics.has_errors() {
            return Build {
                table: None,
                diagnostics,
                blank_files,
                gateways,
            };
        }
        let compiled = compile(&loaded.manifests, &self.compile);
        diagnostics.extend(compiled.diagnostics);
        if diagnostics.has_errors() {
            return Build {
                table: None,
                diagnostics,
                blank_files,
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
            blank_files,
            gateways,
        }
    }
}
