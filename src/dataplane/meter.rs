//! What a connection counts: its share of the Istio TCP counters while
//! bytes move, and its close by flag, the same way for every way a
//! connection ends (refused at once, never routed, or forwarded for
//! hours). `Slot::report_close` adds the access-log record and the debug
//! line.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::SystemTime;

use crate::metrics::worker::{LabelKey, Protocol, add};
use crate::metrics::{IstioLabels, TcpCounters, WorkerHandle};
use crate::routing::table::ClusterId;

use super::io::{Close, CloseReason};
use super::plan::Plan;

/// A connection's share of the worker's counters.
pub(super) struct Meter {
    started: SystemTime,
    /// Istio counters of the connected endpoint (flags `-`); `None` until
    /// the upstream connects.
    tcp: Option<Arc<TcpCounters>>,
    /// Bytes already added to `tcp`, per direction.
    reported: [u64; 2],
    /// The listener's active-connections gauge.
    pub(super) active: Arc<AtomicI64>,
}

impl Meter {
    pub(super) fn new(active: Arc<AtomicI64>) -> Meter {
        Meter {
            started: SystemTime::now(),
            tcp: None,
            reported: [0, 0],
            active,
        }
    }

    pub(super) fn started(&self) -> SystemTime {
        self.started
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
    pub(super) fn closed(
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
        protocol: Protocol::Tcp,
        generation: plan.table.generation,
        cluster: cluster.map(|c| c.0),
        // The table endpoint (labels come from it), not the resolved
        // address: a DNS refresh keeps the generation and may reorder.
        endpoint: cluster
            .zip(upstream)
            .and_then(|(c, e)| plan.endpoints[c.0 as usize].get(e))
            .map(|t| t.source),
        response_flags: flag,
        response_code: 0,
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
