//! Who gets in, and what they hold while in: the process connection cap
//! (counted at accept; accepting itself stops at the cap, see `accept.rs`),
//! the reservation of a route (its cluster chosen by weight, counted
//! against the cluster's `maxConnections`), and the release of both when a
//! slot is freed.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::metrics::worker::add;
use crate::routing::table::RouteId;

use super::Plan;
use super::io::{CloseReason, Limits, Reservation};
use super::slab::Key;
use super::worker::Worker;

impl Worker {
    /// A connection was accepted: it counts against the process cap (and
    /// the moment it reaches the cap is counted and logged).
    pub(super) fn admit(&mut self, now: Instant) {
        let cap = self.shared.budget.max_connections;
        // Accepting stops at the cap (accept.rs); what the accepts in flight
        // took beyond it is served, its descriptors are in the budget.
        if self.shared.open.fetch_add(1, Ordering::Relaxed) + 1 == cap {
            self.metrics.cap_reached();
            if self.cap_reached.allow(now) {
                tracing::warn!(
                    worker = self.id,
                    max_connections = cap,
                    "connection cap reached: accepting paused, new clients wait in the listen backlog until connections close (at most one line per second; raise LimitNOFILE / ulimit -n or --max-connections for more)"
                );
            }
        }
    }

    /// [`super::io::Io::Reserve`] for the session of `key`.
    pub(super) fn reserve_for(&mut self, key: Key, route: RouteId) {
        let Some(slot) = self.slots.get(key) else {
            return;
        };
        let (plan, peer) = (std::sync::Arc::clone(&slot.plan), slot.peer);
        let reserved = self.reserve(&plan, route, peer);
        if let Some(slot) = self.slots.get_mut(key) {
            slot.session
                .on_reserved(reserved, Instant::now(), &mut self.scratch);
        }
    }

    /// Pick the route's cluster and count the connection against its limit;
    /// the connection's limits.
    fn reserve(
        &mut self,
        plan: &Plan,
        route: RouteId,
        peer: SocketAddr,
    ) -> Result<Reservation, CloseReason> {
        let Some(cluster) = self.balancer.pick_cluster(plan, route) else {
            return Err(CloseReason::NoHealthyUpstream);
        };
        let c = plan.table.cluster(cluster);
        let open = &plan.cluster_open[cluster.0 as usize];
        if open.fetch_add(1, Ordering::Relaxed) >= c.policy.max_connections {
            open.fetch_sub(1, Ordering::Relaxed);
            add(&self.metrics.cluster(&c.name).overflow, 1);
            tracing::debug!(worker = self.id, %peer, cluster = %c.name, flag = CloseReason::Overflow.flag(), "cluster connection limit reached");
            return Err(CloseReason::Overflow);
        }
        let r = plan.table.route(route);
        Ok(Reservation {
            cluster,
            limits: Limits {
                idle_timeout: r.idle_timeout,
                max_duration: r.max_connection_duration,
                connect_attempts: self.shared.settings.connect_attempts.max(1),
                splice_after: self.shared.settings.splice_after,
            },
        })
    }

    /// Free a finished slot once no op of it is in flight: its close is
    /// reported, and what it held (the endpoint, the cluster reservation,
    /// its place under the process cap, its listener's gauge, its pipes)
    /// released.
    pub(super) fn release_if_done(&mut self, key: Key) {
        let done = self
            .slots
            .get(key)
            .is_some_and(|s| s.session.is_finished() && s.inflight.is_idle());
        if !done {
            return;
        }
        let Some(mut slot) = self.slots.remove(key) else {
            return;
        };
        if let Some(close) = slot.session.close() {
            self.report_close(&mut slot, close);
        }
        if let Some(u) = &slot.upstream {
            self.balancer.closed(&slot.plan, u.cluster, u.endpoint);
        }
        if let Some((_, cluster)) = slot.session.reserved() {
            slot.plan.cluster_open[cluster.0 as usize].fetch_sub(1, Ordering::Relaxed);
        }
        self.shared.open.fetch_sub(1, Ordering::Relaxed);
        slot.meter.active.fetch_sub(1, Ordering::Relaxed);
        // Room under the connection cap: accept again if it had stopped.
        self.steer_all(Instant::now());
        for pipe in slot.pipes.into_iter().flatten() {
            // It still holds this connection's bytes: close it, never reuse it.
            drop(pipe);
            self.pipes.dropped();
        }
    }
}
