//! An HTTP request's upstream connection: taken from the worker's
//! keep-alive pool when an idle one to the chosen endpoint is alive, else
//! opened (counted against the cluster's `maxConnections` for as long as
//! it stays open, idle in the pool included); and given back to the pool,
//! or closed, when the request is done with it. The session decides when
//! ([`Io::Checkout`], [`Io::Release`]); this file decides how.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::metrics::worker::add;

use crate::routing::table::ClusterPolicy;

use super::context::Ctx;
use super::exec::Submit;
use super::io::{Checkout, CloseReason, Io, Release};
use super::pool::{Held, Idle, Pool};
use super::slab::Key;
use super::slot::{Slot, Upstream};
use super::upstream;

/// How much sooner than the server's `Keep-Alive: timeout` an idle
/// connection is closed, so that ringway never sends on a connection the
/// server is closing (Pingora and the design note: one second).
const SERVER_TIMEOUT_MARGIN: Duration = Duration::from_secs(1);

/// An idle timeout of zero (`idleTimeout: 0s`) disables it.
const NEVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// [`Io::Checkout`]: an endpoint of the session's target cluster by the
/// cluster's policy (another one than those tried, when there is one),
/// then its warmest idle connection or a new one.
pub(super) fn checkout(
    ctx: &mut Ctx,
    pool: &mut Pool,
    ring: &mut impl Submit,
    slot: &mut Slot,
    key: Key,
    fresh: bool,
    out: &mut Vec<Io>,
) {
    let now = Instant::now();
    let plan = Arc::clone(&slot.plan);
    let answer = |slot: &mut Slot, r: Result<Checkout, CloseReason>, out: &mut Vec<Io>| {
        slot.session.on_checkout(r, Instant::now(), out);
    };
    let Some((route, cluster)) = slot.session.target() else {
        return answer(slot, Err(CloseReason::NoRoute), out);
    };
    // The route's cluster by weight (smooth weighted round robin per
    // worker), once per request: its retries stay in that cluster.
    let Some(cluster) = cluster.or_else(|| ctx.balancer.pick_cluster(&plan, route)) else {
        return answer(slot, Err(CloseReason::NoHealthyUpstream), out);
    };
    slot.session.on_cluster(cluster);
    let tried = slot.session.tried();
    let hash = plan.table.cluster(cluster).policy.request_hash.as_ref();
    let hash = hash.and_then(|key| slot.session.request_hash(key));
    let picked =
        ctx.balancer
            .pick_endpoint_hashed(&plan, cluster, (slot.peer.ip(), hash), tried, now);
    let Some(endpoint) = picked else {
        let reason = if tried.is_empty() {
            CloseReason::NoHealthyUpstream
        } else {
            CloseReason::ConnectFailed
        };
        return answer(slot, Err(reason), out);
    };
    slot.session.connecting_to(endpoint);
    let c = plan.table.cluster(cluster);
    let counters = ctx.metrics.cluster(&c.name);
    if let Some(key) = plan.endpoint_key(cluster, endpoint).filter(|_| !fresh) {
        let taken = pool.take(key, now, |why| {
            add(&counters.pool_stale, 1);
            counters.pool_idle.fetch_sub(1, Ordering::Relaxed);
            tracing::trace!(cluster = %key.cluster, endpoint = %key.address, ?why, "idle upstream connection not reused");
        });
        if let Some(idle) = taken {
            counters.pool_idle.fetch_sub(1, Ordering::Relaxed);
            add(&counters.pool_reused, 1);
            ctx.balancer.opened(&plan, cluster, endpoint);
            slot.upstream = Some(Upstream {
                socket: idle.socket,
                cluster,
                endpoint,
                held: idle.held,
                requests: idle.requests,
            });
            let reused = Checkout {
                cluster,
                reused: true,
            };
            return answer(slot, Ok(reused), out);
        }
    }
    let open = &plan.cluster_open[cluster.0 as usize];
    let Some(held) = Held::acquire(open, c.policy.max_connections) else {
        add(&counters.overflow, 1);
        return answer(slot, Err(CloseReason::Overflow), out);
    };
    add(&counters.pool_new, 1);
    match upstream::open(ctx, ring, slot, key, (cluster, endpoint), now) {
        Ok(()) => {
            if let Some(u) = &mut slot.upstream {
                u.held = Some(held);
            }
            let connecting = Checkout {
                cluster,
                reused: false,
            };
            answer(slot, Ok(connecting), out);
        }
        Err(reason) => answer(slot, Err(reason), out),
    }
}

/// [`Io::Release`]: the request is done with its upstream connection. No
/// operation of it is in flight (the session asks only then).
pub(super) fn release(ctx: &mut Ctx, pool: &mut Pool, slot: &mut Slot, how: Release) {
    let Some(mut u) = slot.upstream.take() else {
        return;
    };
    let now = Instant::now();
    let plan = Arc::clone(&slot.plan);
    ctx.balancer.closed(&plan, u.cluster, u.endpoint);
    u.requests += 1;
    let server_timeout = match how {
        Release::ConnectFailed => {
            upstream::connect_failed(ctx, &plan, u.cluster, u.endpoint, now);
            return;
        }
        Release::Close => return,
        Release::Pool { server_timeout } => server_timeout,
    };
    let c = plan.table.cluster(u.cluster);
    let (idle_timeout, max_requests) = pool_policy(&c.policy);
    if c.policy.proxy_protocol.is_some() || max_requests.is_some_and(|max| u.requests >= max) {
        return;
    }
    let server = server_timeout.map(|t| t.saturating_sub(SERVER_TIMEOUT_MARGIN));
    // Neither side limits it: a year stands for never.
    let idle = match (idle_timeout, server) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b).unwrap_or(NEVER),
    };
    let Some(key) = plan.endpoint_key(u.cluster, u.endpoint) else {
        return;
    };
    if idle.is_zero() {
        return;
    }
    let conn = Idle {
        socket: u.socket,
        held: u.held,
        requests: u.requests,
        expires: now + idle,
    };
    if pool.put(key, conn) {
        let counters = ctx.metrics.cluster(key.cluster);
        counters.pool_idle.fetch_add(1, Ordering::Relaxed);
    }
}

/// A new plan: idle connections to clusters or endpoints it dropped are
/// closed.
pub(super) fn retain(ctx: &mut Ctx, pool: &mut Pool, plan: &super::plan::Plan) {
    pool.retain(plan, |cluster, n| {
        let counters = ctx.metrics.cluster(cluster);
        counters.pool_idle.fetch_sub(n as i64, Ordering::Relaxed);
    });
}

/// The worker stops: every idle connection is closed.
pub(super) fn close_all(ctx: &mut Ctx, pool: &mut Pool) {
    pool.clear(|cluster, n| {
        let counters = ctx.metrics.cluster(cluster);
        counters.pool_idle.fetch_sub(n as i64, Ordering::Relaxed);
    });
}

/// The worker's tick: idle connections past their timeout are closed.
pub(super) fn expire(ctx: &mut Ctx, pool: &mut Pool, now: Instant) {
    pool.expire(now, |cluster, n| {
        let counters = ctx.metrics.cluster(cluster);
        counters.pool_idle.fetch_sub(n as i64, Ordering::Relaxed);
    });
}

/// The cluster's keep-alive idle timeout (`None`: never) and its requests
/// per connection (DestinationRule `connectionPool.http`).
fn pool_policy(policy: &ClusterPolicy) -> (Option<Duration>, Option<u32>) {
    let http = &policy.http;
    let idle = Some(http.idle_timeout).filter(|t| !t.is_zero());
    (idle, http.max_requests_per_connection)
}
