//! Command-line front ends: argument types shared by the subcommands, and
//! the `check` report.

pub mod check;
pub mod demo;
pub mod fleet;

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use crate::config::LoadOptions;
use crate::config::manifest::Labels;
use crate::fleet::source::{EtcdSource, SourceConfig};
use crate::fleet::{EtcdArgs, Target, target::TargetError};
use crate::pipeline::Pipeline;
use crate::routing::CompileOptions;
use crate::source::{ConfigSource, Files, Snapshot};

/// Where the configuration is and how to read it (`run` and `check`).
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// A manifest file, or a directory of *.yaml/*.yml files (not recursive).
    /// Repeatable: later files replace resources of the same kind,
    /// namespace and name.
    #[arg(
        short = 'c',
        long = "config",
        value_name = "PATH",
        required_unless_present = "config_source",
        conflicts_with = "config_source"
    )]
    pub config: Vec<PathBuf>,
    /// The configuration of a fleet, in etcd:
    /// etcd://HOST:PORT[,HOST:PORT...]/PREFIX (etcds:// for TLS). Watched:
    /// every change applies within milliseconds. Instead of -c.
    #[arg(long, value_name = "URL")]
    pub config_source: Option<String>,
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// This instance's labels, matched by Gateway selectors.
    #[arg(long, value_name = "k=v,...", default_value = "istio=ingressgateway", value_parser = parse_labels)]
    pub labels: Labels,
    #[command(flatten)]
    pub compile: CompileArgs,
}

/// `run` with `--config-source etcd://...`: who this instance is in the
/// fleet, and what it does while etcd is away.
#[derive(Debug, Clone, Args)]
pub struct FleetRunArgs {
    /// This instance's name in the fleet (its status key); several
    /// instances on one host need different ones. Default: the host name.
    #[arg(long, value_name = "ID")]
    pub instance_id: Option<String>,
    /// Where to keep the last configuration applied, so that a restart
    /// while etcd is unreachable serves it (marked stale).
    #[arg(long, value_name = "PATH")]
    pub config_cache: Option<PathBuf>,
    /// How long start-up waits for etcd before falling back to the cache.
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = crate::config::manifest::parse_duration)]
    pub etcd_startup_timeout: std::time::Duration,
    /// The lease of this instance's status key: an instance that stops
    /// renewing it (dead, partitioned) drops out of `ringway status` after
    /// this.
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = crate::config::manifest::parse_duration)]
    pub status_ttl: std::time::Duration,
}

/// How documents are read and compiled: `run` and `check` (with their own
/// `--labels`), `apply` and `delete` (for every label set the fleet
/// registered).
#[derive(Debug, Clone, Args)]
pub struct CompileArgs {
    /// Namespace of resources that do not set metadata.namespace.
    #[arg(long, value_name = "NS", default_value = crate::config::load::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Domain suffix of short names: name.namespace.svc.<domain>.
    #[arg(long, value_name = "DOMAIN", default_value = crate::routing::compile::DEFAULT_DOMAIN)]
    pub domain: String,
    /// The gateway's namespace: Istio's metrics (source_workload_namespace)
    /// and VirtualService `sourceNamespace` matches.
    #[arg(long, value_name = "NS", default_value = crate::metrics::Identity::NAMESPACE)]
    pub workload_namespace: String,
}

impl CompileArgs {
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            namespace: self.namespace.clone(),
            ..LoadOptions::default()
        }
    }

    /// The pipeline an instance with `labels` runs.
    pub fn pipeline(&self, labels: &Labels) -> Pipeline {
        Pipeline {
            load: self.load_options(),
            compile: CompileOptions {
                labels: labels.clone(),
                domain: self.domain.clone(),
                namespace: self.workload_namespace.clone(),
            },
        }
    }
}

/// Where `-c` or `--config-source` says the configuration is.
#[derive(Debug, Clone)]
pub enum Location {
    Files(Vec<PathBuf>),
    Etcd(Target),
}

impl ConfigArgs {
    /// `-c PATH...`, `--config-source file:PATH`, or an etcd URL.
    pub fn location(&self) -> Result<Location, TargetError> {
        match &self.config_source {
            None => Ok(Location::Files(self.config.clone())),
            Some(text) => match text.strip_prefix("file:") {
                Some(path) => Ok(Location::Files(vec![path.into()])),
                None => Target::parse(text).map(Location::Etcd),
            },
        }
    }

    /// The source `run` serves from: the files, or the etcd store, watched
    /// (its threads start here; the first snapshot waits for etcd or the
    /// cache).
    pub fn run_source(&self, fleet: &FleetRunArgs) -> Result<Arc<dyn ConfigSource>, String> {
        match self.location().map_err(|e| e.to_string())? {
            Location::Files(paths) => Ok(Arc::new(Files::new(paths))),
            Location::Etcd(target) => {
                let instance = fleet
                    .instance_id
                    .clone()
                    .unwrap_or_else(crate::fleet::host_name);
                let mut config = SourceConfig::new(target, self.etcd.clone(), instance);
                config.labels = self
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",");
                config.cache.clone_from(&fleet.config_cache);
                config.startup_timeout = fleet.etcd_startup_timeout;
                config.status_ttl = fleet.status_ttl;
                let source: Arc<dyn ConfigSource> =
                    EtcdSource::start(config).map_err(|e| e.to_string())?;
                Ok(source)
            }
        }
    }

    /// The whole configuration, read once: the files, or the store at its
    /// current revision (`check`).
    pub fn read_once(&self) -> Result<Snapshot, String> {
        match self.location().map_err(|e| e.to_string())? {
            Location::Files(paths) => Ok(Files::new(paths).snapshot()),
            Location::Etcd(target) => crate::fleet::read_once(&target, &self.etcd)
                .map(|set| set.snapshot())
                .map_err(|e| e.to_string()),
        }
    }

    /// How to load and compile them.
    pub fn pipeline(&self) -> Pipeline {
        self.compile.pipeline(&self.labels)
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
