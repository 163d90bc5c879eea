//! Per-worker counters. Each worker is the only writer of its counters
//! (relaxed atomics on cache-line-aligned blocks); the admin thread reads
//! them at scrape time. A worker finds a counter block through its own
//! [`WorkerHandle`] cache; the shared registry's lock is taken only the first
//! time a label set appears on that worker.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use crate::routing::table::{Cluster, Endpoint};

use super::http::{HttpCounters, HttpSample, HttpTotals, Reject};
use super::identity::{LATEST, UNKNOWN, canonical_revision, canonical_service};

/// Istio's `request_protocol`: what a label set counts (a TCP connection,
/// or an HTTP request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Http,
}

impl Protocol {
    /// The label value, as Istio writes it.
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Http => "http",
        }
    }
}

/// The labels of Istio's metrics that vary per label set. The `source_*`
/// side is the gateway itself ([`super::Identity`]), the same for every
/// series, and so are `reporter` (`source`) and what a gateway without
/// sidecars behind it cannot know (principals, the destination cluster,
/// the connection's security policy): `render.rs` adds those.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IstioLabels {
    pub request_protocol: Protocol,
    /// The WorkloadEntry an endpoint came from, else `unknown`.
    pub destination_workload: Arc<str>,
    /// That WorkloadEntry's namespace, or the ServiceEntry's.
    pub destination_workload_namespace: Arc<str>,
    pub destination_canonical_service: Arc<str>,
    pub destination_canonical_revision: Arc<str>,
    pub destination_service: Arc<str>,
    pub destination_service_name: Arc<str>,
    pub destination_service_namespace: Arc<str>,
    pub destination_version: Arc<str>,
    pub destination_app: Arc<str>,
    /// Envoy-style response flags: `-`, `UF`, `UO`, `UH`, `NR`...
    pub response_flags: &'static str,
    /// The HTTP status sent downstream; 0 when none was (and for TCP, whose
    /// series have no `response_code` label).
    pub response_code: u16,
}

impl IstioLabels {
    /// Labels of a connection to `endpoint` of `cluster` (`unknown` where
    /// the endpoint has no `version` or `app` label, as Istio writes it).
    pub fn new(
        cluster: &Cluster,
        endpoint: Option<&Endpoint>,
        response_flags: &'static str,
    ) -> IstioLabels {
        let label = |key: &str| -> Arc<str> {
            endpoint
                .and_then(|e| e.labels.get(key))
                .map_or_else(|| Arc::from(UNKNOWN), |v| Arc::from(v.as_str()))
        };
        let no_labels = std::collections::BTreeMap::new();
        let labels = endpoint.map_or(&no_labels, |e| &e.labels);
        let workload = endpoint.and_then(|e| e.workload.as_deref());
        let namespace = endpoint.map_or(cluster.service.namespace.as_str(), |e| &e.namespace);
        IstioLabels {
            request_protocol: Protocol::Tcp,
            destination_workload: Arc::from(workload.unwrap_or(UNKNOWN)),
            destination_workload_namespace: Arc::from(namespace),
            destination_canonical_service: Arc::from(canonical_service(labels, workload)),
            destination_canonical_revision: Arc::from(canonical_revision(labels)),
            destination_service: Arc::from(cluster.service.host.as_str()),
            destination_service_name: Arc::from(cluster.service.name.as_str()),
            destination_service_namespace: Arc::from(cluster.service.namespace.as_str()),
            destination_version: label("version"),
            destination_app: label("app"),
            response_flags,
            response_code: 0,
        }
    }

    /// The same destination counted as an HTTP request answered with
    /// `response_code` (0: no response was sent).
    pub fn for_request(self, response_code: u16) -> IstioLabels {
        IstioLabels {
            request_protocol: Protocol::Http,
            response_code,
            ..self
        }
    }

    /// Labels of a connection that was never routed to a service (`NR`).
    pub fn unrouted(response_flags: &'static str) -> IstioLabels {
        let unknown: Arc<str> = Arc::from(UNKNOWN);
        IstioLabels {
            request_protocol: Protocol::Tcp,
            destination_workload: unknown.clone(),
            destination_workload_namespace: unknown.clone(),
            destination_canonical_service: unknown.clone(),
            destination_canonical_revision: Arc::from(LATEST),
            destination_service: unknown.clone(),
            destination_service_name: unknown.clone(),
            destination_service_namespace: unknown.clone(),
            destination_version: unknown.clone(),
            destination_app: unknown,
            response_flags,
            response_code: 0,
        }
    }
}

/// Which label set a connection's or a request's counters have, without
/// building it: the table generation, the cluster and table-endpoint
/// indices in that table (the endpoint the labels come from, not the
/// resolved address: a DNS refresh keeps the generation), the response
/// flags and, for HTTP, the status (0 for TCP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LabelKey {
    pub protocol: Protocol,
    pub generation: u64,
    pub cluster: Option<u32>,
    pub endpoint: Option<usize>,
    pub response_flags: &'static str,
    pub response_code: u16,
}

/// Istio's four TCP counters for one label set, as a scrape reads them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TcpTotals {
    pub opened: u64,
    pub closed: u64,
    /// Downstream → upstream.
    pub received_bytes: u64,
    /// Upstream → downstream.
    pub sent_bytes: u64,
}

impl std::ops::AddAssign for TcpTotals {
    fn add_assign(&mut self, o: TcpTotals) {
        self.opened += o.opened;
        self.closed += o.closed;
        self.received_bytes += o.received_bytes;
        self.sent_bytes += o.sent_bytes;
    }
}

/// ringway's counters for one cluster, as a scrape reads them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ClusterTotals {
    pub connect_attempts: u64,
    pub connect_failures: u64,
    pub connect_timeouts: u64,
    pub overflow: u64,
    pub ejections: u64,
    /// Idle upstream connections in the keep-alive pools (a gauge).
    pub pool_idle: i64,
    pub pool_reused: u64,
    pub pool_new: u64,
    pub pool_stale: u64,
    pub retries: u64,
}

impl std::ops::AddAssign for ClusterTotals {
    fn add_assign(&mut self, o: ClusterTotals) {
        self.connect_attempts += o.connect_attempts;
        self.connect_failures += o.connect_failures;
        self.connect_timeouts += o.connect_timeouts;
        self.overflow += o.overflow;
        self.ejections += o.ejections;
        self.pool_idle += o.pool_idle;
        self.pool_reused += o.pool_reused;
        self.pool_new += o.pool_new;
        self.pool_stale += o.pool_stale;
        self.retries += o.retries;
    }
}

/// Istio's four TCP counters for one label set.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct TcpCounters {
    pub opened: AtomicU64,
    pub closed: AtomicU64,
    /// Downstream → upstream.
    pub received_bytes: AtomicU64,
    /// Upstream → downstream.
    pub sent_bytes: AtomicU64,
}

/// ringway's own counters for one cluster.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct ClusterCounters {
    pub connect_attempts: AtomicU64,
    pub connect_failures: AtomicU64,
    pub connect_timeouts: AtomicU64,
    pub overflow: AtomicU64,
    pub ejections: AtomicU64,
    /// Idle connections in this worker's keep-alive pool: +1 when one is
    /// put back, -1 when it is taken or closed.
    pub pool_idle: AtomicI64,
    /// A request rode an idle pooled connection.
    pub pool_reused: AtomicU64,
    /// A request needed a new connection (none idle).
    pub pool_new: AtomicU64,
    /// A pooled connection was found closed or unusable when taken.
    pub pool_stale: AtomicU64,
    /// Requests sent again (reused connection failed, `retryOn`).
    pub retries: AtomicU64,
}

impl ClusterCounters {
    fn totals(&self) -> ClusterTotals {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ClusterTotals {
            connect_attempts: load(&self.connect_attempts),
            connect_failures: load(&self.connect_failures),
            connect_timeouts: load(&self.connect_timeouts),
            overflow: load(&self.overflow),
            ejections: load(&self.ejections),
            pool_idle: self.pool_idle.load(Ordering::Relaxed),
            pool_reused: load(&self.pool_reused),
            pool_new: load(&self.pool_new),
            pool_stale: load(&self.pool_stale),
            retries: load(&self.retries),
        }
    }
}

/// Adds `n` to a counter this thread alone writes.
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// The counters of one worker, as the admin thread sees them.
#[derive(Debug, Default)]
pub struct WorkerMetrics {
    tcp: RwLock<HashMap<IstioLabels, Arc<TcpCounters>>>,
    http: RwLock<HashMap<IstioLabels, Arc<HttpCounters>>>,
    clusters: RwLock<HashMap<Arc<str>, Arc<ClusterCounters>>>,
    listeners: RwLock<HashMap<SocketAddr, Arc<AtomicI64>>>,
    pub accept_errors: AtomicU64,
    pub cap_reached: AtomicU64,
    /// Bytes written by splice: to upstreams, to downstreams.
    spliced_bytes: [AtomicU64; 2],
    /// Per [`Reject`], in the order of [`Reject::ALL`].
    rejects: [AtomicU64; Reject::ALL.len()],
    /// Gauges: provided buffers and pooled pipes the worker holds.
    buffers_held: AtomicU64,
    pipes_held: AtomicU64,
}

impl WorkerMetrics {
    pub fn new() -> Arc<WorkerMetrics> {
        Arc::new(WorkerMetrics::default())
    }

    /// A consistent copy for rendering.
    pub fn snapshot(&self) -> WorkerSnapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WorkerSnapshot {
            tcp: read(&self.tcp)
                .iter()
                .map(|(k, c)| {
                    let totals = TcpTotals {
                        opened: load(&c.opened),
                        closed: load(&c.closed),
                        received_bytes: load(&c.received_bytes),
                        sent_bytes: load(&c.sent_bytes),
                    };
                    (k.clone(), totals)
                })
                .collect(),
            http: read(&self.http)
                .iter()
                .map(|(k, c)| (k.clone(), c.totals()))
                .collect(),
            clusters: read(&self.clusters)
                .iter()
                .map(|(k, c)| (k.clone(), c.totals()))
                .collect(),
            listeners: read(&self.listeners)
                .iter()
                .map(|(k, g)| (*k, g.load(Ordering::Relaxed)))
                .collect(),
            accept_errors: load(&self.accept_errors),
            cap_reached: load(&self.cap_reached),
            spliced_bytes: std::array::from_fn(|i| load(&self.spliced_bytes[i])),
            rejects: std::array::from_fn(|i| load(&self.rejects[i])),
            buffers_held: load(&self.buffers_held),
            pipes_held: load(&self.pipes_held),
        }
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn entry<K: std::hash::Hash + Eq + Clone, V: Default>(
    lock: &RwLock<HashMap<K, Arc<V>>>,
    key: &K,
) -> Arc<V> {
    if let Some(v) = read(lock).get(key) {
        return v.clone();
    }
    let mut map = lock.write().unwrap_or_else(PoisonError::into_inner);
    map.entry(key.clone()).or_default().clone()
}

/// What a worker's counters held at one instant.
#[derive(Debug, Default, Clone)]
pub struct WorkerSnapshot {
    pub tcp: Vec<(IstioLabels, TcpTotals)>,
    pub http: Vec<(IstioLabels, HttpTotals)>,
    pub clusters: Vec<(Arc<str>, ClusterTotals)>,
    pub listeners: Vec<(SocketAddr, i64)>,
    pub accept_errors: u64,
    pub cap_reached: u64,
    /// Bytes written by splice: to upstreams, to downstreams.
    pub spliced_bytes: [u64; 2],
    /// Per [`Reject`], in the order of [`Reject::ALL`].
    pub rejects: [u64; Reject::ALL.len()],
    pub buffers_held: u64,
    pub pipes_held: u64,
}

/// A front of label-set lookups keyed by [`LabelKey`], for one table
/// generation: keys of older generations are dropped when a newer one
/// appears (a connection or request of an older table still finds its
/// counters through its labels, just not through this cache).
#[derive(Debug)]
struct Keyed<V> {
    generation: u64,
    map: HashMap<LabelKey, Arc<V>>,
}

impl<V> Default for Keyed<V> {
    fn default() -> Keyed<V> {
        Keyed {
            generation: 0,
            map: HashMap::new(),
        }
    }
}

impl<V> Keyed<V> {
    /// The counters of `key`, or those `find` returns (remembered when the
    /// key is of the newest generation seen).
    fn get(&mut self, key: LabelKey, find: impl FnOnce() -> Arc<V>) -> Arc<V> {
        if key.generation > self.generation {
            self.map.clear();
            self.generation = key.generation;
        }
        if let Some(c) = self.map.get(&key) {
            return c.clone();
        }
        let c = find();
        if key.generation == self.generation {
            self.map.insert(key, c.clone());
        }
        c
    }
}

/// A worker's own door to its counters: a lock-free cache in front of the
/// shared registry. Owned by the worker thread.
#[derive(Debug)]
pub struct WorkerHandle {
    shared: Arc<WorkerMetrics>,
    tcp: HashMap<IstioLabels, Arc<TcpCounters>>,
    /// Allocation-free front of `tcp`.
    tcp_keyed: Keyed<TcpCounters>,
    http: HashMap<IstioLabels, Arc<HttpCounters>>,
    /// Allocation-free front of `http`.
    http_keyed: Keyed<HttpCounters>,
    clusters: HashMap<Arc<str>, Arc<ClusterCounters>>,
    listeners: HashMap<SocketAddr, Arc<AtomicI64>>,
}

impl WorkerHandle {
    pub fn new(shared: Arc<WorkerMetrics>) -> WorkerHandle {
        WorkerHandle {
            shared,
            tcp: HashMap::new(),
            tcp_keyed: Keyed::default(),
            http: HashMap::new(),
            http_keyed: Keyed::default(),
            clusters: HashMap::new(),
            listeners: HashMap::new(),
        }
    }

    /// The counters of the label set `key` stands for; `labels` builds it
    /// (five strings) only the first time this worker sees the key. Keys of
    /// older generations are dropped when a newer one appears; a connection
    /// of an older table still finds its counters through `labels`.
    pub fn tcp_keyed(
        &mut self,
        key: LabelKey,
        labels: impl FnOnce() -> IstioLabels,
    ) -> Arc<TcpCounters> {
        let (keyed, tcp, shared) = (&mut self.tcp_keyed, &mut self.tcp, &self.shared.tcp);
        keyed.get(key, || local(tcp, shared, &labels()))
    }

    pub fn tcp(&mut self, labels: &IstioLabels) -> Arc<TcpCounters> {
        local(&mut self.tcp, &self.shared.tcp, labels)
    }

    /// Counts one finished HTTP request in Istio's series of the label set
    /// `key` stands for (`labels` builds it, with
    /// [`IstioLabels::for_request`], only the first time this worker sees
    /// the key in the newest generation): `istio_requests_total` and the
    /// duration, request-size and response-size histograms.
    pub fn http_request(
        &mut self,
        key: LabelKey,
        labels: impl FnOnce() -> IstioLabels,
        sample: &HttpSample,
    ) {
        let (keyed, http, shared) = (&mut self.http_keyed, &mut self.http, &self.shared.http);
        keyed
            .get(key, || local(http, shared, &labels()))
            .record(sample);
    }

    /// A request refused before routing (`ringway_http_downstream_rejects_total`).
    pub fn http_reject(&self, reason: Reject) {
        add(&self.shared.rejects[reason.index()], 1);
    }

    pub fn cluster(&mut self, name: &str) -> Arc<ClusterCounters> {
        if let Some(c) = self.clusters.get(name) {
            return c.clone();
        }
        let key: Arc<str> = Arc::from(name);
        let c = entry(&self.shared.clusters, &key);
        self.clusters.insert(key, c.clone());
        c
    }

    /// The active-connections gauge of a listener.
    pub fn listener(&mut self, address: SocketAddr) -> Arc<AtomicI64> {
        if let Some(g) = self.listeners.get(&address) {
            return g.clone();
        }
        let g = entry(&self.shared.listeners, &address);
        self.listeners.insert(address, g.clone());
        g
    }

    pub fn accept_error(&self) {
        add(&self.shared.accept_errors, 1);
    }

    /// The process reached its connection cap (this worker's accept
    /// took the last connection under it).
    pub fn cap_reached(&self) {
        add(&self.shared.cap_reached, 1);
    }

    /// `n` bytes written by splice in direction `dir` (0: to the
    /// upstream, 1: to the downstream).
    pub fn spliced(&self, dir: usize, n: u64) {
        if let Some(counter) = self.shared.spliced_bytes.get(dir).filter(|_| n > 0) {
            add(counter, n);
        }
    }

    /// The provided buffers and the pipes this worker's connections hold now.
    pub fn held(&self, buffers: u64, pipes: u64) {
        self.shared.buffers_held.store(buffers, Ordering::Relaxed);
        self.shared.pipes_held.store(pipes, Ordering::Relaxed);
    }
}

/// The counters of `labels`: from the worker's own cache, else from the
/// shared registry (created there the first time any worker needs them).
fn local<V: Default>(
    cache: &mut HashMap<IstioLabels, Arc<V>>,
    shared: &RwLock<HashMap<IstioLabels, Arc<V>>>,
    labels: &IstioLabels,
) -> Arc<V> {
    if let Some(c) = cache.get(labels) {
        return c.clone();
    }
    let c = entry(shared, labels);
    cache.insert(labels.clone(), c.clone());
    c
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::config::{LoadOptions, load_str};
    use crate::routing::{CompileOptions, RouteTable, compile};

    fn table(example: &str, text: &str) -> RouteTable {
        let loaded = load_str(example, text, &LoadOptions::default());
        assert!(!loaded.diagnostics.has_errors(), "{:?}", loaded.diagnostics);
        let compiled = compile(&loaded.manifests, &CompileOptions::default());
        assert!(
            !compiled.diagnostics.has_errors(),
            "{:?}",
            compiled.diagnostics
        );
        compiled.table
    }

    /// The destination labels of each endpoint of every cluster named
    /// `...|subset|...`, as (workload, namespace, canonical service, revision).
    fn destinations(t: &RouteTable, subset: &str) -> Vec<[String; 4]> {
        let c = t
            .clusters
            .iter()
            .find(|c| c.name.contains(&format!("|{subset}|")))
            .expect("the subset's cluster");
        c.endpoints
            .iter()
            .map(|e| {
                let l = IstioLabels::new(c, Some(e), "-");
                [
                    l.destination_workload.to_string(),
                    l.destination_workload_namespace.to_string(),
                    l.destination_canonical_service.to_string(),
                    l.destination_canonical_revision.to_string(),
                ]
            })
            .collect()
    }

    #[test]
    fn destination_labels_follow_istiods_endpoint_metadata() {
        let s = |v: [&str; 4]| v.map(str::to_owned);
        // WorkloadEntries: their names, their namespace; canonical service
        // and revision from app and version.
        let we = table(
            "we.yaml",
            include_str!(
                "../../config/testdata/valid/workload-entries-selected-by-service-entry.yaml"
            ),
        );
        assert_eq!(
            destinations(&we, "v1"),
            [s(["tcp-echo-v1", "default", "tcp-echo", "v1"])]
        );
        // A service.istio.io/workload-name label names the workload, and
        // canonical labels win over app and version.
        let text = include_str!("../../config/testdata/valid/workload-entries-selected-by-service-entry.yaml")
            .replacen(
                "    app: tcp-echo\n    version: v2\n",
                "    app: tcp-echo\n    version: v2\n    service.istio.io/workload-name: echo-fleet\n    service.istio.io/canonical-name: echo\n    service.istio.io/canonical-revision: r2\n",
                1,
            );
        assert_eq!(
            destinations(&table("we.yaml", &text), "v2"),
            [s(["echo-fleet", "default", "echo", "r2"])]
        );
        // Inline endpoints: `<ServiceEntry>-<index>`, the ServiceEntry's
        // namespace; without app or version labels, the workload name and
        // `latest`.
        let inline = include_str!("../../config/testdata/valid/tcp-echo-80-20-service-entry.yaml");
        let t = table("se.yaml", inline);
        assert_eq!(
            destinations(&t, "v2"),
            [s(["tcp-echo-1", "default", "tcp-echo", "v2"])]
        );
        let bare = inline.replace(
            "      app: tcp-echo\n      version: v1\n",
            "      version: v1\n",
        );
        let t = table("se.yaml", &bare);
        assert_eq!(
            destinations(&t, "v1"),
            [s(["tcp-echo-0", "default", "tcp-echo-0", "v1"])]
        );
        // Never routed: unknown, latest.
        let l = IstioLabels::unrouted("NR");
        assert_eq!(
            (&*l.destination_workload, &*l.destination_canonical_revision),
            ("unknown", "latest")
        );
    }

    fn labels(version: &str) -> IstioLabels {
        IstioLabels {
            destination_version: Arc::from(version),
            ..IstioLabels::unrouted("-")
        }
    }

    #[test]
    fn keyed_lookups_build_labels_once_per_generation() {
        let mut h = WorkerHandle::new(WorkerMetrics::new());
        let built = Cell::new(0);
        let key = |generation| LabelKey {
            protocol: Protocol::Tcp,
            generation,
            cluster: Some(0),
            endpoint: Some(1),
            response_flags: "-",
            response_code: 0,
        };
        let get = |h: &mut WorkerHandle, g: u64| {
            h.tcp_keyed(key(g), || {
                built.set(built.get() + 1);
                labels("v1")
            })
        };
        let first = get(&mut h, 1);
        let again = get(&mut h, 1);
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(built.get(), 1, "the second lookup must not build labels");
        // A new generation starts over, and lands on the same counters.
        let next = get(&mut h, 2);
        assert!(Arc::ptr_eq(&first, &next));
        assert_eq!(built.get(), 2);
        // An older generation still resolves, through the labels.
        let old = get(&mut h, 1);
        assert!(Arc::ptr_eq(&first, &old));
        assert_eq!(built.get(), 3);
    }

    #[test]
    fn http_requests_build_labels_once_per_key_and_count_per_code() {
        let shared = WorkerMetrics::new();
        let mut h = WorkerHandle::new(shared.clone());
        let built = Cell::new(0);
        let sample = HttpSample {
            duration: std::time::Duration::from_micros(2_900),
            request_bytes: 78,
            response_bytes: 1_240,
        };
        let key = |code| LabelKey {
            protocol: Protocol::Http,
            generation: 4,
            cluster: Some(0),
            endpoint: Some(0),
            response_flags: "-",
            response_code: code,
        };
        for code in [200, 200, 503] {
            h.http_request(
                key(code),
                || {
                    built.set(built.get() + 1);
                    labels("v1").for_request(code)
                },
                &sample,
            );
        }
        assert_eq!(built.get(), 2, "one label set per code");
        let mut snapshot = shared.snapshot().http;
        snapshot.sort_by_key(|(l, _)| l.response_code);
        let counted: Vec<(Protocol, u16, u64, u64)> = snapshot
            .iter()
            .map(|(l, t)| {
                let h = t.duration;
                (l.request_protocol, l.response_code, t.requests, h.sum)
            })
            .collect();
        // 2.9 ms is recorded as 2, as Istio truncates to milliseconds.
        assert_eq!(
            counted,
            [(Protocol::Http, 200, 2, 4), (Protocol::Http, 503, 1, 2)]
        );
        h.http_reject(Reject::HeaderTimeout);
        let rejects = shared.snapshot().rejects;
        assert_eq!(rejects[Reject::HeaderTimeout.index()], 1);
        assert_eq!(rejects.iter().sum::<u64>(), 1);
    }
}
