//! What workers serve: a compiled route table with every cluster's
//! endpoints resolved to socket addresses. Immutable once published; each
//! connection keeps the plan it was accepted under.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use crate::routing::RouteTable;
use crate::routing::table::ClusterId;

/// An endpoint's identity across plans: its cluster's name and its resolved
/// address. A reload or a DNS refresh rebuilds every index; what belongs to
/// an endpoint (health, ejections, active counts, and idle upstream
/// connections once there is a pool) follows it by this key. Metrics key
/// their label sets differently on purpose: by the table endpoint the
/// labels come from, which a DNS refresh keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EndpointKey<'a> {
    pub cluster: &'a str,
    pub address: SocketAddr,
}

/// The compiled table plus what the workers need beside it: every cluster's
/// endpoints resolved to socket addresses (DNS names resolved off the data
/// path), the per-cluster open-connection counters of `maxConnections` and
/// active-request counters of `http2MaxRequests`.
#[derive(Debug)]
pub struct Plan {
    pub table: RouteTable,
    /// Indexed like `table.clusters`.
    pub endpoints: Vec<Vec<Target>>,
    /// Indexed like `table.clusters`: open connections across all workers.
    /// A cluster keeps its counter across reloads and re-resolutions (by
    /// name), so connections of an older plan still count against it.
    pub cluster_open: Vec<Arc<AtomicU32>>,
    /// Indexed like `table.clusters`: HTTP requests in flight across all
    /// workers (`http2MaxRequests`), kept across reloads like
    /// `cluster_open`.
    pub cluster_requests: Vec<Arc<AtomicU32>>,
    /// Indexed like `table.clusters`: HTTP requests being retried across
    /// all workers (`maxRetries`), kept across reloads likewise.
    pub cluster_retries: Vec<Arc<AtomicU32>>,
}

impl Plan {
    /// The plan for `table` with its resolved `endpoints`, taking over
    /// `previous`'s open-connection counters for the clusters it keeps.
    pub fn new(table: RouteTable, endpoints: Vec<Vec<Target>>, previous: Option<&Plan>) -> Plan {
        let carried = |of: fn(&Plan) -> &Vec<Arc<AtomicU32>>| -> Vec<Arc<AtomicU32>> {
            table
                .clusters
                .iter()
                .map(|c| {
                    previous
                        .and_then(|p| of(p).get(p.cluster_index(&c.name)?).cloned())
                        .unwrap_or_default()
                })
                .collect()
        };
        let cluster_open = carried(|p| &p.cluster_open);
        let cluster_requests = carried(|p| &p.cluster_requests);
        let cluster_retries = carried(|p| &p.cluster_retries);
        Plan {
            table,
            endpoints,
            cluster_open,
            cluster_requests,
            cluster_retries,
        }
    }
}

impl Plan {
    /// The index of the cluster named `name`.
    pub fn cluster_index(&self, name: &str) -> Option<usize> {
        self.table.clusters.iter().position(|c| c.name == name)
    }

    /// The identity of endpoint `endpoint` (an index into `endpoints`) of
    /// `cluster`.
    pub fn endpoint_key(&self, cluster: ClusterId, endpoint: usize) -> Option<EndpointKey<'_>> {
        let c = cluster.0 as usize;
        let target = self.endpoints.get(c)?.get(endpoint)?;
        Some(EndpointKey {
            cluster: &self.table.clusters.get(c)?.name,
            address: target.address,
        })
    }
}

/// One resolved endpoint of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub address: SocketAddr,
    pub weight: u32,
    /// Index of the table endpoint it was resolved from (its labels).
    pub source: usize,
}
