//! What a connection counts and logs: its share of the Istio TCP counters
//! while bytes move, and one close report when its slot is freed, built in
//! this one place for every way a connection ends (refused at once, never
//! routed, or forwarded for hours): counters by flag, the access-log
//! record, the debug line.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::{Instant, SystemTime};

use crate::accesslog::Record;
use crate::metrics::worker::{LabelKey, add};
use crate::metrics::{IstioLabels, TcpCounters, WorkerHandle};
use crate::routing::table::ClusterId;

use super::Plan;
use super::io::{Close, CloseReason};
use super::passthrough::ServerName;
use super::slot::Slot;
use super::worker::Worker;

/// A connection's share of the worker's counters.
pub(super) struct Meter {
    started: SystemTime,
    opened: Instant,
    /// Istio counters of the connected endpoint (flags `-`); `None` until
    /// the upstream connects.
    tcp: Option<Arc<TcpCounters>>,
    /// Bytes already added to `tcp`, per direction.
    reported: [u64; 2],
    /// The listener's active-connections gauge.
    pub(super) active: Arc<AtomicI64>,
}

impl Meter {
    pub(super) fn new(active: Arc<AtomicI64>, now: Instant) -> Meter {
        Meter {
            started: SystemTime::now(),
            opened: now,
            tcp: None,
            reported: [0, 0],
            active,
        }
    }

    /// The upstream accepted: the connection counts as opened for the
    /// endpoint's label set.
    pub(super) fn connected(
        &mut self,
        metrics: &mut WorkerHandle,
        plan: &Plan,
        cluster: ClusterId,
        endpoint: usize,
    ) {
        let tcp = counters(
            metrics,
            plan,
            Some(cluster),
            Some(endpoint),
            CloseReason::Done.flag(),
        );
        add(&tcp.opened, 1);
        self.tcp = Some(tcp);
    }

    /// Add the bytes written since the last call (`moved`: totals to the
    /// upstream and to the downstream) to the Istio counters.
    pub(super) fn advance(&mut self, moved: [u64; 2]) {
        let Some(tcp) = &self.tcp else {
            return;
        };
        let [up, down] = moved;
        let [old_up, old_down] = self.reported;
        if up > old_up {
            add(&tcp.received_bytes, up - old_up);
            self.reported[0] = up;
        }
        if down > old_down {
            add(&tcp.sent_bytes, down - old_down);
            self.reported[1] = down;
        }
    }

    /// The connection is over: the last bytes, and the close counted by its
    /// flag (a connection that never connected counts as opened and closed
    /// under the flag, as Envoy's TCP proxy does).
    fn closed(
        &mut self,
        metrics: &mut WorkerHandle,
        plan: &Plan,
        target: (Option<ClusterId>, Option<usize>),
        close: Close,
    ) {
        let flag = close.reason.flag();
        self.advance([close.to_upstream, close.to_downstream]);
        let (cluster, endpoint) = target;
        match &self.tcp {
            Some(tcp) if close.reason == CloseReason::Done => add(&tcp.closed, 1),
            Some(_) => add(&counters(metrics, plan, cluster, endpoint, flag).closed, 1),
            None => {
                let tcp = counters(metrics, plan, cluster, endpoint, flag);
                add(&tcp.opened, 1);
                add(&tcp.closed, 1);
            }
        }
    }
}

/// The Istio counters of a connection to endpoint `upstream` (an index
/// into `plan.endpoints`) of `cluster`, found without allocating once the
/// worker has seen that label set.
fn counters(
    metrics: &mut WorkerHandle,
    plan: &Plan,
    cluster: Option<ClusterId>,
    upstream: Option<usize>,
    flag: &'static str,
) -> Arc<TcpCounters> {
    let key = LabelKey {
        generation: plan.table.generation,
        cluster: cluster.map(|c| c.0),
        // The table endpoint (labels come from it), not the resolved
        // address: a DNS refresh keeps the generation and may reorder.
        endpoint: cluster
            .zip(upstream)
            .and_then(|(c, e)| plan.endpoints[c.0 as usize].get(e))
            .map(|t| t.source),
        response_flags: flag,
    };
    metrics.tcp_keyed(key, || labels(plan, cluster, upstream, flag))
}

/// The Istio labels of a connection to endpoint `upstream` (an index into
/// `plan.endpoints`) of `cluster`.
fn labels(
    plan: &Plan,
    cluster: Option<ClusterId>,
    upstream: Option<usize>,
    flag: &'static str,
) -> IstioLabels {
    let Some(cluster) = cluster else {
        return IstioLabels::unrouted(flag);
    };
    let c = plan.table.cluster(cluster);
    let endpoint = upstream
        .and_then(|e| plan.endpoints[cluster.0 as usize].get(e))
        .and_then(|t| c.endpoints.get(t.source));
    IstioLabels::new(c, endpoint, flag)
}

impl Worker {
    /// Count a connection that ended and log it: Istio counters (by its
    /// flag), the access log, the debug line, and why an SNI was not
    /// routed (at most one line per second).
    pub(super) fn report_close(&mut self, slot: &mut Slot, close: Close) {
        let flag = close.reason.flag();
        let plan = Arc::clone(&slot.plan);
        let reserved = slot.session.reserved();
        let cluster = reserved.map(|(_, c)| c);
        let endpoint = slot.upstream.as_ref().map(|u| u.endpoint);
        slot.meter
            .closed(&mut self.metrics, &plan, (cluster, endpoint), close);
        let listener = plan.table.listeners.get(slot.listener);
        let listener_name = listener.map_or("-", |l| l.name.as_str());
        let sni = slot.session.server_name();
        if close.reason == CloseReason::NoRoute {
            if let Some(name) = sni {
                self.sni_not_routed(listener_name, slot, name);
            }
        }
        let upstream_host = slot
            .upstream
            .as_ref()
            .map(|u| plan.endpoints[u.cluster.0 as usize][u.endpoint].address);
        let duration = slot.meter.opened.elapsed();
        if self.access_log.enabled() {
            self.access_log.log(&Record {
                start_time: slot.meter.started,
                duration,
                downstream_remote_address: slot.peer,
                downstream_local_address: listener.map_or(slot.peer, |l| l.address),
                requested_server_name: sni.and_then(ServerName::logged),
                upstream_cluster: cluster.map(|c| plan.table.cluster(c).name.as_str()),
                upstream_host,
                bytes_received: close.to_upstream,
                bytes_sent: close.to_downstream,
                response_flags: flag,
                generation: plan.table.generation,
            });
        }
        tracing::debug!(
            worker = self.id,
            downstream = %slot.peer,
            listener = %listener_name,
            sni = %sni.map_or_else(|| "-".to_owned(), ToString::to_string),
            route = %reserved.map_or("-", |(r, _)| plan.table.route(r).name.as_str()),
            cluster = %cluster.map_or("-", |c| plan.table.cluster(c).name.as_str()),
            upstream = ?upstream_host,
            to_upstream = close.to_upstream,
            to_downstream = close.to_downstream,
            duration_ms = duration.as_millis() as u64,
            generation = plan.table.generation,
            flag,
            "connection closed"
        );
    }

    /// A TLS passthrough connection closed `NR`: say why, at most once a
    /// second.
    fn sni_not_routed(&mut self, listener: &str, slot: &Slot, name: &ServerName) {
        if !self.sni_errors.allow(Instant::now()) {
            return;
        }
        let flag = CloseReason::NoRoute.flag();
        if *name == ServerName::TooLarge {
            tracing::info!(worker = self.id, listener = %listener, downstream = %slot.peer, flag, "ClientHello larger than 16 KiB (Envoy: client_hello_too_large): connection closed, not routed (at most one line per second)");
        } else {
            tracing::info!(worker = self.id, listener = %listener, downstream = %slot.peer, sni = %name, flag, "no route for this SNI; connection closed (at most one line per second)");
        }
    }
}
