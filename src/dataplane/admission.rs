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

use super::context::Ctx;
use super::io::{CloseReason, Limits, Reservation};
use super::pipe::PipePool;
use super::plan::Plan;
use super::slot::Slot;

/// A connection was accepted: it counts against the process cap (and the
/// moment it reaches the cap is counted and logged).
pub(super) fn admit(ctx: &mut Ctx, now: Instant) {
    let cap = ctx.shared.budget.max_connections;
    // Accepting stops at the cap (accept.rs); what the accepts in flight
    // took beyond it is served, its descriptors are in the budget.
    if ctx.shared.open.fetch_add(1, Ordering::Relaxed) + 1 == cap {
        ctx.metrics.cap_reached();
        if ctx.cap_reached.allow(now) {
            tracing::warn!(
                worker = ctx.id,
                max_connections = cap,
                "connection cap reached: accepting paused, new clients wait in the listen backlog until connections close (at most one line per second; raise LimitNOFILE / ulimit -n or --max-connections for more)"
            );
        }
    }
}

/// Pick the route's cluster and count the connection against its limit;
/// the connection's limits.
pub(super) fn reserve(
    ctx: &mut Ctx,
    plan: &Plan,
    route: RouteId,
    peer: SocketAddr,
) -> Result<Reservation, CloseReason> {
    let Some(cluster) = ctx.balancer.pick_cluster(plan, route) else {
        return Err(CloseReason::NoHealthyUpstream);
    };
    let c = plan.table.cluster(cluster);
    let open = &plan.cluster_open[cluster.0 as usize];
    if open.fetch_add(1, Ordering::Relaxed) >= c.policy.max_connections {
        open.fetch_sub(1, Ordering::Relaxed);
        add(&ctx.metrics.cluster(&c.name).overflow, 1);
        tracing::debug!(worker = ctx.id, %peer, cluster = %c.name, flag = CloseReason::Overflow.flag(), "cluster connection limit reached");
        return Err(CloseReason::Overflow);
    }
    let r = plan.table.route(route);
    Ok(Reservation {
        cluster,
        limits: Limits {
            idle_timeout: r.idle_timeout,
            max_duration: r.max_connection_duration,
            connect_attempts: ctx.shared.settings.connect_attempts.max(1),
            splice_after: ctx.shared.settings.splice_after,
        },
    })
}

/// A finished slot with nothing in flight: its close is reported, and
/// what it held (the endpoint, the cluster reservation, its place under
/// the process cap, its listener's gauge, its pipes) released.
pub(super) fn release(ctx: &mut Ctx, pipes: &mut PipePool, mut slot: Slot) {
    if let Some(close) = slot.session.close().filter(|_| slot.session.counts_tcp()) {
        slot.report_close(ctx, close);
    }
    if let Some(u) = &slot.upstream {
        ctx.balancer.closed(&slot.plan, u.cluster, u.endpoint());
    }
    if let Some((_, cluster)) = slot.session.reserved() {
        slot.plan.cluster_open[cluster.0 as usize].fetch_sub(1, Ordering::Relaxed);
    }
    ctx.shared.open.fetch_sub(1, Ordering::Relaxed);
    slot.meter.active.fetch_sub(1, Ordering::Relaxed);
    for pipe in slot.pipes.into_iter().flatten() {
        // It still holds this connection's bytes: close it, never reuse it.
        drop(pipe);
        pipes.dropped();
    }
}
