//! Getting a connection its upstream: pick an endpoint of the reserved
//! cluster, open the socket with the cluster's options, submit the CONNECT
//! (through `exec.rs`), count what happened to the endpoint, and write the
//! PROXY header once it accepted. The session decides when; this file
//! decides how.
#![forbid(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::types::Timespec;
use socket2::{SockAddr, SockRef, Socket, TcpKeepalive, Type};

use crate::metrics::worker::add;
use crate::routing::table::{ClusterId, Keepalive, ProxyProtocol};

use super::context::{ACCEPT_PAUSE, Ctx};
use super::exec::{self, Submit};
use super::io::{CloseReason, Io};
use super::plan::Plan;
use super::proxy_protocol;
use super::slab::Key;
use super::slot::{Slot, Upstream};

/// [`Io::Connect`]: open an upstream socket to the next endpoint of the
/// reserved cluster and submit its CONNECT.
pub(super) fn connect(
    ctx: &mut Ctx,
    ring: &mut impl Submit,
    slot: &mut Slot,
    key: Key,
    out: &mut Vec<Io>,
) {
    let now = Instant::now();
    let plan = Arc::clone(&slot.plan);
    if let Some(previous) = slot.upstream.take() {
        // Asked to connect again: the previous attempt failed.
        ctx.balancer
            .closed(&plan, previous.cluster, previous.endpoint());
        connect_failed(ctx, &plan, previous.cluster, previous.endpoint(), now);
    }
    let Some((_, cluster)) = slot.session.reserved() else {
        slot.session
            .on_connect_unavailable(CloseReason::NoRoute, out);
        return;
    };
    let tried = slot.session.tried();
    let Some(endpoint) = ctx
        .balancer
        .pick_endpoint(&plan, cluster, slot.peer.ip(), tried, now)
    else {
        let reason = if tried.is_empty() {
            CloseReason::NoHealthyUpstream
        } else {
            CloseReason::ConnectFailed
        };
        slot.session.on_connect_unavailable(reason, out);
        return;
    };
    slot.session.connecting_to(endpoint);
    if let Err(reason) = open(ctx, ring, slot, key, (cluster, endpoint), now) {
        slot.session.on_connect_unavailable(reason, out);
    }
}

/// Open a socket to `endpoint` of `cluster` (indices into `slot.plan`) with
/// the cluster's options and submit its CONNECT; the slot's upstream is
/// then that socket. The reason when no socket could be opened.
pub(super) fn open(
    ctx: &mut Ctx,
    ring: &mut impl Submit,
    slot: &mut Slot,
    key: Key,
    (cluster, endpoint): (ClusterId, usize),
    now: Instant,
) -> Result<(), CloseReason> {
    let plan = Arc::clone(&slot.plan);
    let target = plan.endpoints[cluster.0 as usize][endpoint];
    let policy = &plan.table.cluster(cluster).policy;
    let socket = match upstream_socket(target.address, policy.tcp_keepalive) {
        Ok(s) => s,
        Err(e) => return Err(socket_failed(ctx, target.address, &e, now)),
    };
    ctx.balancer.opened(&plan, cluster, endpoint);
    add(
        &ctx.metrics
            .cluster(&plan.table.cluster(cluster).name)
            .connect_attempts,
        1,
    );
    slot.connect.address = SockAddr::from(target.address);
    slot.connect.timeout = Timespec::from(policy.connect_timeout);
    exec::submit_connect(ring, socket.as_fd(), &slot.connect, key, &mut slot.inflight);
    slot.upstream = Some(Upstream {
        socket,
        cluster,
        endpoint: endpoint as u32,
        held: None,
        requests: 0,
    });
    Ok(())
}

/// No upstream socket for the slot's connect. Out of descriptors or socket
/// memory is ringway's own failure, not the upstream's: flagged OM, not
/// UF, and no more clients are taken for a moment.
fn socket_failed(ctx: &mut Ctx, address: SocketAddr, e: &io::Error, now: Instant) -> CloseReason {
    let local = matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    );
    let reason = if local {
        CloseReason::LocalResource
    } else {
        CloseReason::ConnectFailed
    };
    if ctx.socket_errors.allow(now) {
        tracing::warn!(worker = ctx.id, upstream = %address, error = %e, flag = reason.flag(), "cannot open an upstream socket; connection closed (at most one line per second; on EMFILE/ENFILE raise LimitNOFILE / ulimit -n or lower --max-connections)");
    }
    if local {
        ctx.pause_accepting = Some(now + ACCEPT_PAUSE);
    }
    reason
}

/// [`Io::Connected`]: the endpoint accepted; counted, and the cluster's
/// PROXY header written before any forwarded byte.
pub(super) fn connected(ctx: &mut Ctx, slot: &mut Slot, out: &mut Vec<Io>) {
    let Some(u) = &slot.upstream else {
        return;
    };
    let (cluster, endpoint) = (u.cluster, u.endpoint());
    ctx.balancer
        .connect_succeeded(&slot.plan, cluster, endpoint);
    if slot.session.counts_tcp() {
        slot.meter
            .connected(&mut ctx.metrics, &slot.plan, cluster, endpoint);
    }
    if let Some(version) = slot.plan.table.cluster(cluster).policy.proxy_protocol {
        if let Err(e) = send_proxy_header(slot, version) {
            tracing::debug!(worker = ctx.id, error = %e, "cannot send the PROXY header");
            slot.session.abort_upstream(out);
        }
    }
}

/// A connect to `endpoint` failed or timed out: counted, and the endpoint
/// ejected when that makes a streak (reported to `/config_dump`).
pub(super) fn connect_failed(
    ctx: &mut Ctx,
    plan: &Plan,
    cluster: ClusterId,
    endpoint: usize,
    now: Instant,
) {
    let ejected = ctx.balancer.connect_failed(plan, cluster, endpoint, now);
    let counters = ctx.metrics.cluster(&plan.table.cluster(cluster).name);
    add(&counters.connect_failures, 1);
    add(&counters.ejections, u64::from(ejected));
    if ejected {
        ctx.status.ejected(ctx.balancer.ejections(now));
    }
}

/// A blocking upstream socket with TCP_NODELAY and the cluster's keepalive.
fn upstream_socket(address: SocketAddr, keepalive: Option<Keepalive>) -> io::Result<Socket> {
    let socket = Socket::new(socket2::Domain::for_address(address), Type::STREAM, None)?;
    socket.set_tcp_nodelay(true)?;
    if let Some(k) = keepalive {
        let mut ka = TcpKeepalive::new();
        if let Some(t) = k.time_secs {
            ka = ka.with_time(Duration::from_secs(u64::from(t)));
        }
        if let Some(i) = k.interval_secs {
            ka = ka.with_interval(Duration::from_secs(u64::from(i)));
        }
        if let Some(p) = k.probes {
            ka = ka.with_retries(p);
        }
        socket.set_tcp_keepalive(&ka)?;
    }
    Ok(socket)
}

/// Write the PROXY protocol header on a just-connected upstream socket,
/// before any forwarded byte (no send of this connection can be in flight
/// yet). A fresh connection's send buffer is empty, so the non-blocking
/// send(2) of these few bytes completes at once; anything short of the
/// whole header is treated as an upstream failure.
fn send_proxy_header(slot: &Slot, version: ProxyProtocol) -> io::Result<()> {
    let Some(upstream) = &slot.upstream else {
        return Err(io::ErrorKind::NotConnected.into());
    };
    let local = SockRef::from(&slot.downstream)
        .local_addr()?
        .as_socket()
        .ok_or(io::ErrorKind::InvalidInput)?;
    let header = proxy_protocol::header(version, slot.peer, local);
    let sent = upstream
        .socket
        .send_with_flags(&header, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)?;
    if sent != header.len() {
        return Err(io::ErrorKind::WriteZero.into());
    }
    Ok(())
}
