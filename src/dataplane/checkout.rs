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

use crate::routing::table::{ClusterId, ClusterPolicy};

use super::context::Ctx;
use super::exec::Submit;
use super::io::{Cap, Checkout, CloseReason, Io, Release};
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
    let result = target(ctx, slot).and_then(|(cluster, endpoint)| {
        let reused = !fresh && reuse(ctx, pool, slot, (cluster, endpoint));
        if !reused {
            connect(ctx, ring, slot, key, (cluster, endpoint))?;
        }
        Ok(Checkout { cluster, reused })
    });
    slot.session.on_checkout(result, Instant::now(), out);
}

/// The request's cluster (picked by weight the first time: smooth weighted
/// round robin per worker; its retries stay in it), its place under the
/// cluster's active-request cap, and an endpoint by the cluster's policy
/// (another one than those tried, when there is one).
fn target(ctx: &mut Ctx, slot: &mut Slot) -> Result<(ClusterId, usize), CloseReason> {
    let plan = Arc::clone(&slot.plan);
    let (route, cluster) = slot.session.target().ok_or(CloseReason::NoRoute)?;
    let cluster = cluster
        .or_else(|| ctx.balancer.pick_cluster(&plan, route))
        .ok_or(CloseReason::NoHealthyUpstream)?;
    slot.session.on_cluster(cluster);
    let c = plan.table.cluster(cluster);
    let http = &c.policy.http;
    let caps = [
        (
            Cap::Requests,
            &plan.cluster_requests,
            http.max_requests,
            true,
        ),
        (
            Cap::Retries,
            &plan.cluster_retries,
            http.max_retries,
            slot.session.is_retry(),
        ),
    ];
    for (cap, counters, max, applies) in caps {
        let (Some(max), true) = (max, applies) else {
            continue;
        };
        if slot.session.holds_cap(cap) {
            continue;
        }
        let Some(held) = Held::acquire(&counters[cluster.0 as usize], max) else {
            add(&ctx.metrics.cluster(&c.name).overflow, 1);
            return Err(CloseReason::Overflow);
        };
        slot.session.hold_cap(cap, held);
    }
    let tried = slot.session.tried();
    let hash = c.policy.request_hash.as_ref();
    let hash = hash.and_then(|key| slot.session.request_hash(key));
    let source = (slot.peer.ip(), hash);
    let now = Instant::now();
    let Some(endpoint) = ctx
        .balancer
        .pick_endpoint_hashed(&plan, cluster, source, tried, now)
    else {
        return Err(if tried.is_empty() {
            CloseReason::NoHealthyUpstream
        } else {
            CloseReason::ConnectFailed
        });
    };
    slot.session.connecting_to(endpoint);
    Ok((cluster, endpoint))
}

/// The warmest live idle connection to the endpoint, if the pool has one:
/// it becomes the slot's upstream.
fn reuse(
    ctx: &mut Ctx,
    pool: &mut Pool,
    slot: &mut Slot,
    (cluster, endpoint): (ClusterId, usize),
) -> bool {
    let plan = Arc::clone(&slot.plan);
    let Some(key) = plan.endpoint_key(cluster, endpoint) else {
        return false;
    };
    let counters = ctx.metrics.cluster(key.cluster);
    let taken = pool.take(key, Instant::now(), |why| {
        add(&counters.pool_stale, 1);
        counters.pool_idle.fetch_sub(1, Ordering::Relaxed);
        tracing::trace!(cluster = %key.cluster, endpoint = %key.address, ?why, "idle upstream connection not reused");
    });
    let Some(idle) = taken else {
        return false;
    };
    counters.pool_idle.fetch_sub(1, Ordering::Relaxed);
    add(&counters.pool_reused, 1);
    ctx.balancer.opened(&plan, cluster, endpoint);
    slot.upstream = Some(Upstream {
        socket: idle.socket,
        cluster,
        endpoint: endpoint as u32,
        held: idle.held,
        requests: idle.requests,
    });
    true
}

/// A new connection to the endpoint, counted against the cluster's
/// `maxConnections` for as long as it stays open.
fn connect(
    ctx: &mut Ctx,
    ring: &mut impl Submit,
    slot: &mut Slot,
    key: Key,
    (cluster, endpoint): (ClusterId, usize),
) -> Result<(), CloseReason> {
    let plan = Arc::clone(&slot.plan);
    let c = plan.table.cluster(cluster);
    let counters = ctx.metrics.cluster(&c.name);
    let open = &plan.cluster_open[cluster.0 as usize];
    let Some(held) = Held::acquire(open, c.policy.max_connections) else {
        add(&counters.overflow, 1);
        return Err(CloseReason::Overflow);
    };
    add(&counters.pool_new, 1);
    upstream::open(ctx, ring, slot, key, (cluster, endpoint), Instant::now())?;
    if let Some(u) = &mut slot.upstream {
        u.held = Some(held);
    }
    Ok(())
}

/// [`Io::Release`]: the request is done with its upstream connection. No
/// operation of it is in flight (the session asks only then).
pub(super) fn release(ctx: &mut Ctx, pool: &mut Pool, slot: &mut Slot, how: Release) {
    let Some(mut u) = slot.upstream.take() else {
        return;
    };
    let now = Instant::now();
    let plan = Arc::clone(&slot.plan);
    ctx.balancer.closed(&plan, u.cluster, u.endpoint());
    u.requests += 1;
    let server_timeout = match how {
        Release::ConnectFailed => {
            upstream::connect_failed(ctx, &plan, u.cluster, u.endpoint(), now);
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
    let Some(key) = plan.endpoint_key(u.cluster, u.endpoint()) else {
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
