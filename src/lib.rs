//! ringway: a TCP gateway for a Linux host, driven by Istio networking
//! manifests.
//!
//! - [`source`]: where the configuration comes from (files today), as
//!   snapshots of documents.
//! - [`config`]: the manifests as written (model + YAML loading).
//! - [`routing`]: the pure compiler from manifests to an immutable
//!   [`routing::RouteTable`], and the per-worker pickers.
//! - [`diag`]: errors and warnings that name file, line, resource and field.
//! - [`dataplane`]: the io_uring workers that forward connections.
//! - [`supervisor`]: startup, workers, signals, shutdown.
//! - [`control`], [`metrics`], [`accesslog`]: admin endpoint, reload,
//!   Prometheus metrics and the access log.

pub mod accesslog;
pub mod cli;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod diag;
pub mod fleet;
pub mod http1;
pub mod metrics;
pub mod pipeline;
pub mod process;
pub mod resolve;
pub mod routing;
pub mod sni;
pub mod source;
pub mod supervisor;
