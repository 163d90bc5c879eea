//! Metrics: names ([`names`]), the single-writer counters each worker owns
//! ([`worker`]), and the Prometheus text a scrape sums from them
//! ([`render`]). Nothing on the data path takes a lock or shares a cache
//! line with another worker.
#![forbid(unsafe_code)]

pub mod http;
pub mod identity;
pub mod names;
pub mod render;
pub mod worker;

pub use http::{HttpSample, HttpTotals, Reject};
pub use identity::Identity;
pub use render::{ProcessMetrics, render};
pub use worker::{
    ClusterCounters, ClusterTotals, IstioLabels, LabelKey, Protocol, TcpCounters, TcpTotals,
    WorkerHandle, WorkerMetrics,
};
