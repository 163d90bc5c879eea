//! Prometheus text exposition: the sum of every worker's counters, plus the
//! process-wide figures the control thread keeps.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use super::http::{HistogramTotals, HttpTotals, Reject};
use super::identity::{Identity, UNKNOWN};
use super::names::*;
use super::worker::{ClusterTotals, IstioLabels, Protocol, TcpTotals, WorkerSnapshot};

/// Figures kept outside the workers.
#[derive(Debug, Clone, Default)]
pub struct ProcessMetrics {
    pub generation: u64,
    pub reloads_success: u64,
    pub reloads_failure: u64,
    pub workers: usize,
    pub access_log_dropped: u64,
    /// Where the configuration comes from, and how fresh it is.
    pub source: crate::source::SourceState,
}

/// Every worker's counters summed.
#[derive(Default)]
struct Sums<'a> {
    tcp: BTreeMap<&'a IstioLabels, TcpTotals>,
    http: BTreeMap<&'a IstioLabels, HttpTotals>,
    clusters: BTreeMap<&'a Arc<str>, ClusterTotals>,
    listeners: BTreeMap<SocketAddr, i64>,
    accept_errors: u64,
    cap_reached: u64,
    spliced_bytes: [u64; 2],
    rejects: [u64; Reject::ALL.len()],
    held: [u64; 2],
}

impl<'a> Sums<'a> {
    fn of(workers: &'a [WorkerSnapshot]) -> Sums<'a> {
        let mut sums = Sums::default();
        for w in workers {
            for (labels, totals) in &w.tcp {
                *sums.tcp.entry(labels).or_default() += *totals;
            }
            for (labels, totals) in &w.http {
                *sums.http.entry(labels).or_default() += *totals;
            }
            for (name, totals) in &w.clusters {
                *sums.clusters.entry(name).or_default() += *totals;
            }
            for (address, active) in &w.listeners {
                *sums.listeners.entry(*address).or_default() += active;
            }
            sums.accept_errors += w.accept_errors;
            sums.cap_reached += w.cap_reached;
            for (sum, n) in sums.spliced_bytes.iter_mut().zip(w.spliced_bytes) {
                *sum += n;
            }
            sums.held[0] += w.buffers_held;
            sums.held[1] += w.pipes_held;
            for (sum, n) in sums.rejects.iter_mut().zip(w.rejects) {
                *sum += n;
            }
        }
        sums
    }
}

pub fn render(process: &ProcessMetrics, identity: &Identity, workers: &[WorkerSnapshot]) -> String {
    let sums = Sums::of(workers);
    let mut out = String::new();
    istio_tcp(&mut out, identity, &sums.tcp);
    istio_http(&mut out, identity, &sums.http);
    process_figures(&mut out, process);
    downstream(&mut out, &sums);
    clusters(&mut out, &sums.clusters);
    out
}

/// Istio's labels of one label set, in the order Istio's stats filter
/// (`istio_stats.cc`) writes them: 23 for TCP; HTTP adds `response_code`
/// and `grpc_response_status` (empty: not gRPC) after `request_protocol`,
/// which TCP series never carry. A gateway reports as `source` and sees no
/// peer metadata from backends without sidecars: principals and the
/// security policy are `unknown`, as Istio writes them then.
fn istio_label_set(identity: &Identity, l: &IstioLabels) -> String {
    let code = l.response_code.to_string();
    let http: &[(&str, &str)] = match l.request_protocol {
        Protocol::Tcp => &[],
        Protocol::Http => &[("response_code", &code), ("grpc_response_status", "")],
    };
    let destination: [(&str, &str); 21] = [
        ("reporter", "source"),
        ("source_workload", &identity.workload),
        ("source_canonical_service", &identity.canonical_service),
        ("source_canonical_revision", &identity.canonical_revision),
        ("source_workload_namespace", &identity.workload_namespace),
        ("source_principal", UNKNOWN),
        ("source_app", &identity.app),
        ("source_version", &identity.version),
        ("source_cluster", &identity.cluster),
        ("destination_workload", &l.destination_workload),
        (
            "destination_workload_namespace",
            &l.destination_workload_namespace,
        ),
        ("destination_principal", UNKNOWN),
        ("destination_app", &l.destination_app),
        ("destination_version", &l.destination_version),
        ("destination_service", &l.destination_service),
        (
            "destination_canonical_service",
            &l.destination_canonical_service,
        ),
        (
            "destination_canonical_revision",
            &l.destination_canonical_revision,
        ),
        ("destination_service_name", &l.destination_service_name),
        (
            "destination_service_namespace",
            &l.destination_service_namespace,
        ),
        // Endpoints are in this gateway's cluster (istiod writes its own
        // cluster ID into every endpoint's metadata).
        ("destination_cluster", &identity.cluster),
        ("request_protocol", l.request_protocol.label()),
    ];
    let flags = [
        ("response_flags", l.response_flags),
        ("connection_security_policy", UNKNOWN),
    ];
    let pairs = destination.iter().chain(http).chain(&flags);
    let mut text = String::new();
    for (i, (name, value)) in pairs.enumerate() {
        let comma = if i == 0 { "" } else { "," };
        let _ = write!(text, "{comma}{name}=\"{}\"", escape(value));
    }
    text
}

/// Istio's TCP series, one line per label set.
fn istio_tcp(out: &mut String, identity: &Identity, tcp: &BTreeMap<&IstioLabels, TcpTotals>) {
    let label_sets: Vec<String> = tcp.keys().map(|l| istio_label_set(identity, l)).collect();
    type Value = fn(&TcpTotals) -> u64;
    let series: [(&str, &str, Value); 4] = [
        (
            ISTIO_TCP_CONNECTIONS_OPENED,
            "Connections opened, per destination.",
            |t| t.opened,
        ),
        (
            ISTIO_TCP_CONNECTIONS_CLOSED,
            "Connections closed, per destination and response flags.",
            |t| t.closed,
        ),
        (
            ISTIO_TCP_RECEIVED_BYTES,
            "Bytes received from downstream (the request direction).",
            |t| t.received_bytes,
        ),
        (
            ISTIO_TCP_SENT_BYTES,
            "Bytes sent to downstream (the response direction).",
            |t| t.sent_bytes,
        ),
    ];
    for (name, help, value) in series {
        header(out, name, help, "counter");
        for (labels, totals) in label_sets.iter().zip(tcp.values()) {
            let _ = writeln!(out, "{name}{{{labels}}} {}", value(totals));
        }
    }
}

/// Istio's HTTP series: the request counter, then the three histograms,
/// one block of lines per label set.
fn istio_http(out: &mut String, identity: &Identity, http: &BTreeMap<&IstioLabels, HttpTotals>) {
    let label_sets: Vec<String> = http.keys().map(|l| istio_label_set(identity, l)).collect();
    header(
        out,
        ISTIO_REQUESTS,
        "HTTP requests, per destination, response code and response flags.",
        "counter",
    );
    for (labels, totals) in label_sets.iter().zip(http.values()) {
        let _ = writeln!(out, "{ISTIO_REQUESTS}{{{labels}}} {}", totals.requests);
    }
    type Value = fn(&HttpTotals) -> &HistogramTotals;
    let histograms: [(&str, &str, Value); 3] = [
        (
            ISTIO_REQUEST_DURATION,
            "Request durations in milliseconds, from the request head to the end of the response.",
            |t| &t.duration,
        ),
        (
            ISTIO_REQUEST_BYTES,
            "Request sizes in bytes as received (head and body).",
            |t| &t.request_bytes,
        ),
        (
            ISTIO_RESPONSE_BYTES,
            "Response sizes in bytes as sent (head and body).",
            |t| &t.response_bytes,
        ),
    ];
    for (name, help, value) in histograms {
        header(out, name, help, "histogram");
        for (labels, totals) in label_sets.iter().zip(http.values()) {
            histogram(out, name, labels, value(totals));
        }
    }
}

/// One histogram's lines as Envoy's Prometheus exposition writes them:
/// cumulative `_bucket` lines, `+Inf`, `_sum`, `_count`.
fn histogram(out: &mut String, name: &str, labels: &str, h: &HistogramTotals) {
    for (le, count) in h.cumulative() {
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {count}");
    }
    let count = h.count();
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum);
    let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
}

/// What the control thread keeps: the build, generation, reloads,
/// workers, dropped access-log lines.
fn process_figures(out: &mut String, process: &ProcessMetrics) {
    header(
        out,
        ISTIO_BUILD,
        "Istio component build: ringway reports as a proxy, tagged with its version.",
        "gauge",
    );
    let _ = writeln!(
        out,
        "{ISTIO_BUILD}{{component=\"proxy\",tag=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    header(
        out,
        CONFIG_GENERATION,
        "Generation of the route table in use.",
        "gauge",
    );
    let _ = writeln!(out, "{CONFIG_GENERATION} {}", process.generation);
    header(
        out,
        CONFIG_RELOADS,
        "Configuration reloads, by result.",
        "counter",
    );
    let _ = writeln!(
        out,
        "{CONFIG_RELOADS}{{result=\"success\"}} {}",
        process.reloads_success
    );
    let _ = writeln!(
        out,
        "{CONFIG_RELOADS}{{result=\"failure\"}} {}",
        process.reloads_failure
    );
    header(out, WORKERS, "Worker threads.", "gauge");
    let _ = writeln!(out, "{WORKERS} {}", process.workers);
    header(
        out,
        ACCESS_LOG_DROPPED,
        "Access-log lines dropped: the writer's queue was full (--access-log-queue).",
        "counter",
    );
    let _ = writeln!(out, "{ACCESS_LOG_DROPPED} {}", process.access_log_dropped);
    source_figures(out, &process.source);
}

/// The configuration source: its revision for every kind; for a store
/// (etcd), how connected and how fresh.
fn source_figures(out: &mut String, source: &crate::source::SourceState) {
    header(
        out,
        CONFIG_SOURCE_REVISION,
        "Revision of the configuration served (etcd: store revision; files: reads).",
        "gauge",
    );
    let _ = writeln!(
        out,
        "{CONFIG_SOURCE_REVISION}{{source=\"{}\"}} {}",
        source.kind, source.revision
    );
    if source.kind == "etcd" {
        store_figures(out, source);
    }
}

/// A store's connection, freshness, resyncs, errors and rejections.
fn store_figures(out: &mut String, source: &crate::source::SourceState) {
    let gauges = [
        (
            CONFIG_SOURCE_SYNCED_REVISION,
            "Every store change up to this revision has been seen.",
            source.synced_revision,
        ),
        (
            CONFIG_SOURCE_CONNECTED,
            "1 while the store answers.",
            u64::from(source.connected),
        ),
        (
            CONFIG_SOURCE_STALE,
            "1 while the configuration served may be out of date (store unreachable, or started from the cache).",
            u64::from(source.stale),
        ),
        (
            CONFIG_SOURCE_LAST_SYNC,
            "Unix time of the last sync with the store.",
            source.last_sync_unix,
        ),
    ];
    for (name, help, value) in gauges {
        header(out, name, help, "gauge");
        let _ = writeln!(out, "{name} {value}");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let staleness = if source.last_sync_unix == 0 {
        0
    } else {
        now.saturating_sub(source.last_sync_unix)
    };
    header(
        out,
        CONFIG_SOURCE_STALE_SECONDS,
        "Seconds since the last sync with the store.",
        "gauge",
    );
    let _ = writeln!(out, "{CONFIG_SOURCE_STALE_SECONDS} {staleness}");
    for (name, help, counts) in [
        (
            CONFIG_SOURCE_RESYNCS,
            "Full re-reads of the store, by reason.",
            &source.resyncs,
        ),
        (
            CONFIG_SOURCE_ERRORS,
            "Errors talking to the store, by reason.",
            &source.errors,
        ),
    ] {
        header(out, name, help, "counter");
        for (reason, n) in counts {
            let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {n}");
        }
    }
    header(
        out,
        CONFIG_SOURCE_REJECTED,
        "Store revisions whose configuration was refused (the running table stayed).",
        "counter",
    );
    let _ = writeln!(out, "{CONFIG_SOURCE_REJECTED} {}", source.rejected);
}

/// Open connections per listener, accept errors, the cap.
fn downstream(out: &mut String, sums: &Sums<'_>) {
    header(
        out,
        DOWNSTREAM_CONNECTIONS_ACTIVE,
        "Open downstream connections, per listener.",
        "gauge",
    );
    for (address, active) in &sums.listeners {
        let _ = writeln!(
            out,
            "{DOWNSTREAM_CONNECTIONS_ACTIVE}{{listener=\"{address}\"}} {active}"
        );
    }
    header(
        out,
        DOWNSTREAM_ACCEPT_ERRORS,
        "accept() failures (EMFILE, ENFILE...).",
        "counter",
    );
    let _ = writeln!(out, "{DOWNSTREAM_ACCEPT_ERRORS} {}", sums.accept_errors);
    header(
        out,
        DOWNSTREAM_CAP_REACHED,
        "Times the process reached its connection cap (--max-connections, or derived from the open-file limit) and stopped accepting; clients waited in the listen backlog.",
        "counter",
    );
    let _ = writeln!(out, "{DOWNSTREAM_CAP_REACHED} {}", sums.cap_reached);
    let held = [
        (
            WORKER_BUFFERS_HELD,
            "Provided buffers user space holds (received, not yet sent on), all workers.",
        ),
        (
            WORKER_PIPES_HELD,
            "Pipes taken from the workers' pipe pools and held by connections.",
        ),
    ];
    for ((name, help), n) in held.into_iter().zip(sums.held) {
        header(out, name, help, "gauge");
        let _ = writeln!(out, "{name} {n}");
    }
    header(
        out,
        SPLICED_BYTES,
        "Bytes written by splice(2) (the zero-copy path), all protocols, per direction.",
        "counter",
    );
    for (direction, n) in ["upstream", "downstream"].iter().zip(sums.spliced_bytes) {
        let _ = writeln!(out, "{SPLICED_BYTES}{{direction=\"{direction}\"}} {n}");
    }
    header(
        out,
        HTTP_DOWNSTREAM_REJECTS,
        "HTTP requests refused before routing, per reason (malformed, bad_framing, missing_host, head_too_large, header_timeout, not_implemented, bad_version, h2_preface, upgrade_refused, connect).",
        "counter",
    );
    for (reason, n) in Reject::ALL.iter().zip(sums.rejects) {
        let _ = writeln!(
            out,
            "{HTTP_DOWNSTREAM_REJECTS}{{reason=\"{}\"}} {n}",
            reason.label()
        );
    }
}

/// ringway's per-cluster counters.
fn clusters(out: &mut String, clusters: &BTreeMap<&Arc<str>, ClusterTotals>) {
    type Value = fn(&ClusterTotals) -> u64;
    let series: [(&str, &str, Value); 6] = [
        (
            UPSTREAM_CONNECT_ATTEMPTS,
            "Upstream connect attempts, per cluster.",
            |c| c.connect_attempts,
        ),
        (
            UPSTREAM_CONNECT_FAILURES,
            "Upstream connects refused or reset, per cluster.",
            |c| c.connect_failures,
        ),
        (
            UPSTREAM_CONNECT_TIMEOUTS,
            "Upstream connects that timed out, per cluster.",
            |c| c.connect_timeouts,
        ),
        (
            UPSTREAM_OVERFLOW,
            "Connections refused by maxConnections (UO), per cluster.",
            |c| c.overflow,
        ),
        (
            UPSTREAM_EJECTIONS,
            "Endpoints ejected by outlier detection, per cluster.",
            |c| c.ejections,
        ),
        (
            HTTP_RETRIES,
            "HTTP requests sent again to a cluster (a reused connection failed before any response byte, or retryOn).",
            |c| c.retries,
        ),
    ];
    for (name, help, value) in series {
        header(out, name, help, "counter");
        for (cluster, totals) in clusters {
            let _ = writeln!(
                out,
                "{name}{{cluster=\"{}\"}} {}",
                escape(cluster),
                value(totals)
            );
        }
    }
    pools(out, clusters);
}

/// The upstream keep-alive pools, per cluster.
fn pools(out: &mut String, clusters: &BTreeMap<&Arc<str>, ClusterTotals>) {
    header(
        out,
        UPSTREAM_POOL_IDLE,
        "Idle upstream connections in the workers' keep-alive pools, per cluster.",
        "gauge",
    );
    for (cluster, totals) in clusters {
        let _ = writeln!(
            out,
            "{UPSTREAM_POOL_IDLE}{{cluster=\"{}\"}} {}",
            escape(cluster),
            totals.pool_idle
        );
    }
    header(
        out,
        UPSTREAM_POOL_REUSE,
        "Upstream connections taken for HTTP requests, per cluster: reused (idle in the pool), new (none idle), stale (pooled but found closed).",
        "counter",
    );
    for (cluster, totals) in clusters {
        let results = [
            ("reused", totals.pool_reused),
            ("new", totals.pool_new),
            ("stale", totals.pool_stale),
        ];
        for (result, n) in results {
            let _ = writeln!(
                out,
                "{UPSTREAM_POOL_REUSE}{{cluster=\"{}\",result=\"{result}\"}} {n}",
                escape(cluster)
            );
        }
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value: backslash, double quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::metrics::HttpSample;
    use crate::metrics::worker::{LabelKey, WorkerHandle, WorkerMetrics, add};

    fn labels(version: &str, flags: &'static str) -> IstioLabels {
        IstioLabels {
            request_protocol: crate::metrics::Protocol::Tcp,
            destination_workload: Arc::from(format!("tcp-echo-{version}").as_str()),
            destination_workload_namespace: Arc::from("default"),
            destination_canonical_service: Arc::from("tcp-echo"),
            destination_canonical_revision: Arc::from(version),
            destination_service: Arc::from("tcp-echo.default.svc.cluster.local"),
            destination_service_name: Arc::from("tcp-echo"),
            destination_service_namespace: Arc::from("default"),
            destination_version: Arc::from(version),
            destination_app: Arc::from("tcp-echo"),
            response_flags: flags,
            response_code: 0,
        }
    }

    #[test]
    fn workers_are_summed_per_label_set() {
        let shared: Vec<Arc<WorkerMetrics>> = (0..2).map(|_| WorkerMetrics::new()).collect();
        for (i, w) in shared.iter().enumerate() {
            let mut h = WorkerHandle::new(w.clone());
            let v1 = h.tcp(&labels("v1", "-"));
            add(&v1.opened, 20);
            add(&v1.closed, 20);
            add(&v1.received_bytes, 100 * (i as u64 + 1));
            let uf = h.tcp(&labels("v2", "UF"));
            add(&uf.closed, 1);
            add(
                &h.cluster("outbound|9000|v2|tcp-echo.default.svc.cluster.local")
                    .connect_failures,
                3,
            );
            h.listener("0.0.0.0:31400".parse().expect("addr"))
                .fetch_add(2, Ordering::Relaxed);
            // A second lookup finds the same block through the local cache.
            assert!(Arc::ptr_eq(&v1, &h.tcp(&labels("v1", "-"))));
        }
        let snapshots: Vec<_> = shared.iter().map(|w| w.snapshot()).collect();
        let text = render(
            &ProcessMetrics {
                generation: 3,
                reloads_success: 2,
                reloads_failure: 1,
                workers: 2,
                access_log_dropped: 7,
                source: crate::source::SourceState {
                    kind: "etcd",
                    revision: 12,
                    synced_revision: 14,
                    connected: true,
                    resyncs: vec![("compacted", 1)],
                    ..crate::source::SourceState::default()
                },
            },
            &Identity::default(),
            &snapshots,
        );
        for figure in [
            "ringway_config_source_revision{source=\"etcd\"} 12",
            "ringway_config_source_synced_revision 14",
            "ringway_config_source_connected 1",
            "ringway_config_source_stale 0",
            "ringway_config_source_resyncs_total{reason=\"compacted\"} 1",
            "ringway_config_source_rejected_total 0",
        ] {
            assert!(text.lines().any(|l| l == figure), "no {figure} in\n{text}");
        }
        let line = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
                .to_owned()
        };
        // Istio's 23 labels, in the order its stats filter writes them.
        assert_eq!(
            line("istio_tcp_connections_opened_total{"),
            "istio_tcp_connections_opened_total{reporter=\"source\",\
             source_workload=\"istio-ingressgateway\",source_canonical_service=\"istio-ingressgateway\",\
             source_canonical_revision=\"latest\",source_workload_namespace=\"istio-system\",\
             source_principal=\"unknown\",source_app=\"unknown\",source_version=\"unknown\",\
             source_cluster=\"Kubernetes\",destination_workload=\"tcp-echo-v1\",\
             destination_workload_namespace=\"default\",destination_principal=\"unknown\",\
             destination_app=\"tcp-echo\",destination_version=\"v1\",\
             destination_service=\"tcp-echo.default.svc.cluster.local\",\
             destination_canonical_service=\"tcp-echo\",destination_canonical_revision=\"v1\",\
             destination_service_name=\"tcp-echo\",destination_service_namespace=\"default\",\
             destination_cluster=\"Kubernetes\",request_protocol=\"tcp\",response_flags=\"-\",\
             connection_security_policy=\"unknown\"} 40"
        );
        let received = line("istio_tcp_received_bytes_total{");
        assert!(
            received.contains("destination_version=\"v1\""),
            "{received}"
        );
        assert!(received.ends_with("} 300"), "{received}");
        assert!(text.contains("response_flags=\"UF\",connection_security_policy=\"unknown\"} 2"));
        assert!(text.contains("ringway_config_generation 3"));
        assert_eq!(
            line("istio_build{"),
            format!(
                "istio_build{{component=\"proxy\",tag=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )
        );
        assert!(text.contains("ringway_access_log_dropped_total 7"));
        assert!(text.contains("ringway_config_reloads_total{result=\"failure\"} 1"));
        assert!(
            text.contains("ringway_downstream_connections_active{listener=\"0.0.0.0:31400\"} 4")
        );
        assert!(text.contains("ringway_upstream_connect_failures_total{cluster=\"outbound|9000|v2|tcp-echo.default.svc.cluster.local\"} 6"));
        assert!(text.contains("# TYPE istio_tcp_sent_bytes_total counter"));
    }

    /// Istio's 25 labels of an HTTP series to the v1 endpoint, answered
    /// with `code`, with `flags`.
    fn http_label_set(code: u16, flags: &str) -> String {
        format!(
            "reporter=\"source\",source_workload=\"istio-ingressgateway\",\
             source_canonical_service=\"istio-ingressgateway\",source_canonical_revision=\"latest\",\
             source_workload_namespace=\"istio-system\",source_principal=\"unknown\",\
             source_app=\"unknown\",source_version=\"unknown\",source_cluster=\"Kubernetes\",\
             destination_workload=\"tcp-echo-v1\",destination_workload_namespace=\"default\",\
             destination_principal=\"unknown\",destination_app=\"tcp-echo\",\
             destination_version=\"v1\",destination_service=\"tcp-echo.default.svc.cluster.local\",\
             destination_canonical_service=\"tcp-echo\",destination_canonical_revision=\"v1\",\
             destination_service_name=\"tcp-echo\",destination_service_namespace=\"default\",\
             destination_cluster=\"Kubernetes\",request_protocol=\"http\",\
             response_code=\"{code}\",grpc_response_status=\"\",response_flags=\"{flags}\",\
             connection_security_policy=\"unknown\""
        )
    }

    fn key(code: u16, flags: &'static str) -> LabelKey {
        LabelKey {
            protocol: Protocol::Http,
            generation: 1,
            cluster: Some(0),
            endpoint: Some(0),
            response_flags: flags,
            response_code: code,
        }
    }

    fn sample(millis: u64, request_bytes: u64, response_bytes: u64) -> HttpSample {
        HttpSample {
            duration: std::time::Duration::from_millis(millis),
            request_bytes,
            response_bytes,
        }
    }

    /// Two workers: the first served two 200s (3 ms and 700 ms) and a 404
    /// `NR`, the second one 200 (3 ms), one reject, one retry.
    fn two_workers_of_http() -> String {
        let shared: Vec<Arc<WorkerMetrics>> = (0..2).map(|_| WorkerMetrics::new()).collect();
        let mut first = WorkerHandle::new(shared[0].clone());
        let ok = || labels("v1", "-").for_request(200);
        first.http_request(key(200, "-"), ok, &sample(3, 78, 1_240));
        first.http_request(key(200, "-"), ok, &sample(700, 5_000, 100));
        let nr = LabelKey {
            cluster: None,
            endpoint: None,
            ..key(404, "NR")
        };
        first.http_request(
            nr,
            || IstioLabels::unrouted("NR").for_request(404),
            &sample(0, 60, 90),
        );
        let pool = first.cluster("outbound|8080|v1|front-tomcat.default.svc.cluster.local");
        add(&pool.pool_new, 1);
        add(&pool.pool_reused, 1);
        pool.pool_idle.fetch_add(1, Ordering::Relaxed);
        let mut second = WorkerHandle::new(shared[1].clone());
        second.http_request(key(200, "-"), ok, &sample(3, 78, 1_240));
        second.http_reject(Reject::BadFraming);
        let pool = second.cluster("outbound|8080|v1|front-tomcat.default.svc.cluster.local");
        add(&pool.retries, 1);
        add(&pool.pool_stale, 1);
        let snapshots: Vec<_> = shared.iter().map(|w| w.snapshot()).collect();
        render(&ProcessMetrics::default(), &Identity::default(), &snapshots)
    }

    #[test]
    fn http_requests_are_counted_with_istios_http_labels() {
        let text = two_workers_of_http();
        let requests: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("istio_requests_total{"))
            .collect();
        assert_eq!(
            requests,
            [
                format!("istio_requests_total{{{}}} 3", http_label_set(200, "-")),
                "istio_requests_total{reporter=\"source\",source_workload=\"istio-ingressgateway\",\
                 source_canonical_service=\"istio-ingressgateway\",source_canonical_revision=\"latest\",\
                 source_workload_namespace=\"istio-system\",source_principal=\"unknown\",\
                 source_app=\"unknown\",source_version=\"unknown\",source_cluster=\"Kubernetes\",\
                 destination_workload=\"unknown\",destination_workload_namespace=\"unknown\",\
                 destination_principal=\"unknown\",destination_app=\"unknown\",\
                 destination_version=\"unknown\",destination_service=\"unknown\",\
                 destination_canonical_service=\"unknown\",destination_canonical_revision=\"latest\",\
                 destination_service_name=\"unknown\",destination_service_namespace=\"unknown\",\
                 destination_cluster=\"Kubernetes\",request_protocol=\"http\",\
                 response_code=\"404\",grpc_response_status=\"\",response_flags=\"NR\",\
                 connection_security_policy=\"unknown\"} 1"
                    .to_owned(),
            ]
        );
        assert!(text.contains("# TYPE istio_requests_total counter\n"));
    }

    #[test]
    fn http_histograms_have_envoys_cumulative_buckets_sum_and_count() {
        let text = two_workers_of_http();
        let labels = http_label_set(200, "-");
        let block: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.starts_with("istio_request_duration_milliseconds_") && l.contains(&labels)
            })
            .collect();
        let bucket = |le: &str, n: u64| {
            format!("istio_request_duration_milliseconds_bucket{{{labels},le=\"{le}\"}} {n}")
        };
        // 3 ms twice (summed over both workers), 700 ms once.
        let mut expected: Vec<String> = [
            ("0.5", 0),
            ("1", 0),
            ("5", 2),
            ("10", 2),
            ("25", 2),
            ("50", 2),
            ("100", 2),
            ("250", 2),
            ("500", 2),
        ]
        .iter()
        .map(|(le, n)| bucket(le, *n))
        .collect();
        for le in [
            "1000", "2500", "5000", "10000", "30000", "60000", "300000", "600000", "1800000",
            "3600000", "+Inf",
        ] {
            expected.push(bucket(le, 3));
        }
        expected.push(format!(
            "istio_request_duration_milliseconds_sum{{{labels}}} 706"
        ));
        expected.push(format!(
            "istio_request_duration_milliseconds_count{{{labels}}} 3"
        ));
        assert_eq!(block, expected);
        assert!(text.contains("# TYPE istio_request_duration_milliseconds histogram\n"));
        // Sizes: 78 + 5000 + 78 bytes received, 1240 + 100 + 1240 sent.
        let line = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix) && l.contains(&labels))
                .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
                .to_owned()
        };
        assert_eq!(
            line("istio_request_bytes_bucket{"),
            format!("istio_request_bytes_bucket{{{labels},le=\"0.5\"}} 0")
        );
        assert_eq!(
            line("istio_request_bytes_sum{"),
            format!("istio_request_bytes_sum{{{labels}}} 5156")
        );
        assert_eq!(
            line("istio_response_bytes_sum{"),
            format!("istio_response_bytes_sum{{{labels}}} 2580")
        );
        assert!(text.contains(&format!(
            "istio_response_bytes_bucket{{{labels},le=\"100\"}} 1\n\
             istio_response_bytes_bucket{{{labels},le=\"250\"}} 1\n\
             istio_response_bytes_bucket{{{labels},le=\"500\"}} 1\n\
             istio_response_bytes_bucket{{{labels},le=\"1000\"}} 1\n\
             istio_response_bytes_bucket{{{labels},le=\"2500\"}} 3\n"
        )));
    }

    #[test]
    fn rejects_pools_and_retries_are_summed_per_reason_and_cluster() {
        let text = two_workers_of_http();
        let lines = |prefix: &str| -> Vec<&str> {
            text.lines().filter(|l| l.starts_with(prefix)).collect()
        };
        assert_eq!(
            lines("ringway_http_downstream_rejects_total{"),
            [
                "ringway_http_downstream_rejects_total{reason=\"malformed\"} 0",
                "ringway_http_downstream_rejects_total{reason=\"bad_framing\"} 1",
                "ringway_http_downstream_rejects_total{reason=\"missing_host\"} 0",
                "ringway_http_downstream_rejects_total{reason=\"head_too_large\"} 0",
                "ringway_http_downstream_rejects_total{reason=\"header_timeout\"} 0",
                "ringway_http_downstream_rejects_total{reason=\"not_implemented\"} 0",
                "ringway_http_downstream_rejects_total{reason=\"bad_version\"} 0",
                "ringway_http_downstream_rejects_total{reason=\"h2_preface\"} 0",
                "ringway_http_downstream_rejects_total{reason=\"upgrade_refused\"} 0",
                "ringway_http_downstream_rejects_total{reason=\"connect\"} 0",
            ]
        );
        let cluster = "cluster=\"outbound|8080|v1|front-tomcat.default.svc.cluster.local\"";
        assert_eq!(
            lines("ringway_upstream_pool_idle{"),
            [format!("ringway_upstream_pool_idle{{{cluster}}} 1")]
        );
        assert_eq!(
            lines("ringway_upstream_pool_reuse_total{"),
            [
                format!("ringway_upstream_pool_reuse_total{{{cluster},result=\"reused\"}} 1"),
                format!("ringway_upstream_pool_reuse_total{{{cluster},result=\"new\"}} 1"),
                format!("ringway_upstream_pool_reuse_total{{{cluster},result=\"stale\"}} 1"),
            ]
        );
        assert_eq!(
            lines("ringway_http_retries_total{"),
            [format!("ringway_http_retries_total{{{cluster}}} 1")]
        );
        assert!(text.contains("# TYPE ringway_upstream_pool_idle gauge\n"));
    }

    #[test]
    fn held_buffers_and_pipes_are_gauges_summed_over_workers() {
        let shared: Vec<Arc<WorkerMetrics>> = (0..2).map(|_| WorkerMetrics::new()).collect();
        WorkerHandle::new(shared[0].clone()).held(3, 1);
        let second = WorkerHandle::new(shared[1].clone());
        second.held(9, 9);
        second.held(2, 0);
        let snapshots: Vec<_> = shared.iter().map(|w| w.snapshot()).collect();
        let text = render(&ProcessMetrics::default(), &Identity::default(), &snapshots);
        assert!(
            text.contains(
                "# TYPE ringway_worker_buffers_held gauge\nringway_worker_buffers_held 5\n"
            )
        );
        assert!(
            text.contains("# TYPE ringway_worker_pipes_held gauge\nringway_worker_pipes_held 1\n")
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
