//! Command-line front ends: argument types shared by the subcommands, and
//! the `check` report.

pub mod check;
pub mod demo;
pub mod fleet;

use std::path::PathBuf;

use clap::Args;

use crate::config::LoadOptions;
use crate::config::manifest::Labels;
use crate::pipeline::Pipeline;
use crate::routing::CompileOptions;
use crate::source::Files;

/// Where the configuration is and how to read it (`run` and `check`).
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// A manifest file, or a directory of *.yaml/*.yml files (not recursive).
    /// Repeatable: later files replace resources of the same kind,
    /// namespace and name.
    #[arg(short = 'c', long = "config", value_name = "PATH", required = true)]
    pub config: Vec<PathBuf>,
    /// This instance's labels, matched by Gateway selectors.
    #[arg(long, value_name = "k=v,...", default_value = "istio=ingressgateway", value_parser = parse_labels)]
    pub labels: Labels,
    /// Namespace of resources that do not set metadata.namespace.
    #[arg(long, value_name = "NS", default_value = crate::config::load::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Domain suffix of short names: name.namespace.svc.<domain>.
    #[arg(long, value_name = "DOMAIN", default_value = crate::routing::compile::DEFAULT_DOMAIN)]
    pub domain: String,
    /// This gateway's namespace: Istio's metrics (source_workload_namespace)
    /// and VirtualService `sourceNamespace` matches.
    #[arg(long, value_name = "NS", default_value = crate::metrics::Identity::NAMESPACE)]
    pub workload_namespace: String,
}

impl ConfigArgs {
    /// The files given with `-c`.
    pub fn source(&self) -> Files {
        Files::new(self.config.clone())
    }

    /// How to load and compile them.
    pub fn pipeline(&self) -> Pipeline {
        Pipeline {
            load: LoadOptions {
                namespace: self.namespace.clone(),
                ..LoadOptions::default()
            },
            compile: CompileOptions {
                labels: self.labels.clone(),
                domain: self.domain.clone(),
                namespace: self.workload_namespace.clone(),
            },
        }
    }
}

/// `istio=ingressgateway,zone=a` → labels; an empty string is no labels.
pub fn parse_labels(text: &str) -> Result<Labels, String> {
    let mut labels = Labels::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or_else(|| {
            format!("label {pair:?} is not key=value (for example istio=ingressgateway)")
        })?;
        if k.is_empty() {
            return Err(format!("label {pair:?} has an empty key"));
        }
        labels.insert(k.to_owned(), v.to_owned());
    }
    Ok(labels)
}
