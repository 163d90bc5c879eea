//! One connection's slot in a worker's slab, and how the worker performs
//! the actions `conn.rs` asks for: submitting ring operations, moving bytes
//! with splice, opening upstream sockets, and freeing the slot only once no
//! operation of it is in flight.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use io_uring::types::Timespec;
use socket2::{SockAddr, SockRef, Socket, TcpKeepalive, Type};

use crate::accesslog::Record;
use crate::metrics::worker::LabelKey;
use crate::metrics::worker::add;
use crate::metrics::{IstioLabels, TcpCounters, WorkerHandle};
use crate::routing::table::{ClusterId, Keepalive, ListenerRouting, ProxyProtocol, RouteId};

use super::Plan;
use super::conn::{Action, Close, CloseReason, Completion, Connection, ServerName};
use super::forward;
use super::pipe::{self, OwnedPipe};
use super::proxy_protocol;
use super::ring::RecvMode;
use super::timers::Due;
use super::token::{Dir, Op, Side, Token};
use super::worker::{ACCEPT_PAUSE, Worker};

/// Where a connection's upstream is.
pub(super) struct Upstream {
    pub(super) socket: Socket,
    pub(super) cluster: ClusterId,
    pub(super) endpoint: usize,
}

/// Memory the kernel reads when the CONNECT is submitted (stable address).
pub(super) struct ConnectArgs {
    pub(super) address: SockAddr,
    pub(super) timeout: Timespec,
}

pub(super) struct Slot {
    pub(super) generation: u32,
    pub(super) conn: Connection,
    pub(super) downstream: OwnedFd,
    pub(super) peer: SocketAddr,
    /// The listener's index in `plan.table.listeners`.
    pub(super) table_listener: usize,
    pub(super) plan: Arc<Plan>,
    /// The route and its cluster (counted in `plan.cluster_open`); `None`
    /// while a TLS passthrough connection is reading its ClientHello.
    pub(super) target: Option<(RouteId, ClusterId)>,
    /// TLS passthrough: the server name the ClientHello asked for.
    pub(super) sni: Option<ServerName>,
    pub(super) upstream: Option<Upstream>,
    /// Endpoints tried so far (a retry prefers another one).
    pub(super) tried: Vec<usize>,
    pub(super) connect: Box<ConnectArgs>,
    /// Operations submitted and not finally completed.
    pub(super) inflight: u32,
    /// Pipes holding bytes, per direction.
    pub(super) pipes: [Option<OwnedPipe>; 2],
    pub(super) meter: Meter,
    /// The instant this slot is scheduled at in the worker's timers.
    pub(super) deadline: Option<Instant>,
}

/// A connection's share of the worker's counters.
pub(super) struct Meter {
    pub(super) started: SystemTime,
    /// Istio counters of the connected endpoint (flags `-`); `None` until
    /// the upstream connects.
    pub(super) tcp: Option<Arc<TcpCounters>>,
    /// Bytes already added to `tcp`, per direction.
    pub(super) reported: [u64; 2],
    /// The listener's active-connections gauge.
    pub(super) active: Arc<AtomicI64>,
}

/// The Istio counters of a connection to endpoint `upstream` (an index
/// into `plan.endpoints`) of `cluster`, found without allocating once the
/// worker has seen that label set.
pub(super) fn counters(
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

impl Slot {
    pub(super) fn fd(&self, side: Side) -> Option<RawFd> {
        match side {
            Side::Downstream => Some(self.downstream.as_raw_fd()),
            Side::Upstream => self.upstream.as_ref().map(|u| u.socket.as_raw_fd()),
        }
    }

    pub(super) fn token(&self, index: u32, op: Op) -> u64 {
        Token::new(index, self.generation, op).user_data()
    }
}

impl Worker {
    pub(super) fn act(&mut self, index: u32, action: Action) {
        let Some(slot) = self.slots.get_mut(index as usize).and_then(Option::as_mut) else {
            return;
        };
        match action {
            Action::Connect => self.connect(index),
            Action::Connected => {
                if let Some(u) = &slot.upstream {
                    self.balancer
                        .connect_succeeded(&slot.plan, u.cluster, u.endpoint);
                    let tcp = counters(
                        &mut self.metrics,
                        &slot.plan,
                        Some(u.cluster),
                        Some(u.endpoint),
                        CloseReason::Done.flag(),
                    );
                    add(&tcp.opened, 1);
                    slot.meter.tcp = Some(tcp);
                    if let Some(version) = slot.plan.table.cluster(u.cluster).policy.proxy_protocol
                    {
                        if let Err(e) = send_proxy_header(slot, version) {
                            tracing::debug!(worker = self.id, error = %e, "cannot send the PROXY header");
                            slot.conn.abort_upstream(&mut self.scratch);
                        }
                    }
                }
            }
            Action::ArmRecv(dir) => {
                if let Some(fd) = slot.fd(dir.source()) {
                    let limit = slot.conn.recv_budget(dir) * self.shared.settings.buffer_size;
                    let token = slot.token(index, Op::Recv(dir));
                    self.ring.recv(fd, self.recv_mode, limit, token);
                    slot.inflight += 1;
                }
            }
            Action::CancelRecv(dir) => {
                self.ring.cancel(
                    slot.token(index, Op::Recv(dir)),
                    slot.token(index, Op::CancelRecv(dir)),
                );
                slot.inflight += 1;
            }
            Action::Send {
                dir,
                bid,
                offset,
                len,
            } => {
                if let Some(fd) = slot.fd(dir.sink()) {
                    let token = slot.token(index, Op::Send(dir));
                    self.ring.send(fd, &self.bufs, bid, offset, len, token);
                    slot.inflight += 1;
                }
            }
            Action::GiveBack(bid) => self.bufs.give_back(bid),
            Action::WaitBuffers(dir) => self.starved.push_back((index, slot.generation, dir)),
            Action::SinkStalled(dir) => {
                if let (Dir::ToDownstream, Some(u)) = (dir, &slot.upstream) {
                    let _ = u
                        .socket
                        .set_recv_buffer_size(forward::STALLED_UPSTREAM_RCVBUF);
                }
            }
            Action::EnterSplice(dir) => {
                let ok = [Side::Downstream, Side::Upstream]
                    .iter()
                    .filter_map(|s| slot.fd(*s))
                    .all(|fd| pipe::set_nonblocking(fd).is_ok());
                if !ok {
                    slot.conn.on_no_pipe(dir, &mut self.scratch);
                }
            }
            Action::Readable(dir) => {
                if let Some(fd) = slot.fd(dir.source()) {
                    self.ring
                        .poll(fd, libc::POLLIN, slot.token(index, Op::Readable(dir)));
                    slot.inflight += 1;
                }
            }
            Action::Writable(dir) => {
                if let Some(fd) = slot.fd(dir.sink()) {
                    self.ring
                        .poll(fd, libc::POLLOUT, slot.token(index, Op::Writable(dir)));
                    slot.inflight += 1;
                }
            }
            Action::Pump { dir, in_pipe, read } => {
                let (Some(source), Some(sink)) = (slot.fd(dir.source()), slot.fd(dir.sink()))
                else {
                    return;
                };
                let Some(pipe) = slot.pipes[dir.index()].take().or_else(|| self.pipes.take())
                else {
                    slot.conn.on_no_pipe(dir, &mut self.scratch);
                    return;
                };
                let result = forward::pump(&pipe, source, sink, in_pipe, read);
                if result.in_pipe == 0 {
                    self.pipes.give_back(pipe);
                } else {
                    slot.pipes[dir.index()] = Some(pipe);
                }
                slot.conn
                    .on_pump(dir, result, Instant::now(), &mut self.scratch);
            }
            Action::Shutdown(dir) => {
                // shutdown(2) never blocks; IORING_OP_SHUTDOWN is forced to
                // io-wq by the kernel and would start an iou-wrk thread.
                let sock = match (dir.sink(), &slot.upstream) {
                    (Side::Downstream, _) => Some(SockRef::from(&slot.downstream)),
                    (Side::Upstream, Some(u)) => Some(SockRef::from(&u.socket)),
                    (Side::Upstream, None) => None,
                };
                let res = match sock.map(|s| s.shutdown(std::net::Shutdown::Write)) {
                    Some(Ok(())) => 0,
                    Some(Err(e)) => -e.raw_os_error().unwrap_or(libc::EIO),
                    None => -libc::ENOTCONN,
                };
                let done = Completion {
                    op: Op::Shutdown(dir),
                    res,
                    bid: None,
                    more: false,
                };
                slot.conn
                    .on_completion(done, Instant::now(), &mut self.scratch);
            }
            Action::CheckSent(dir) => {
                let unsent = slot.fd(dir.sink()).map_or(Ok(0), unsent_bytes);
                // Sent (or the socket is gone): the reset may follow.
                if !matches!(unsent, Ok(n) if n > 0) {
                    slot.conn.on_sent(dir, &mut self.scratch);
                }
            }
            Action::Abort(side) => {
                let sock = match (side, &slot.upstream) {
                    (Side::Downstream, _) => Some(SockRef::from(&slot.downstream)),
                    (Side::Upstream, Some(u)) => Some(SockRef::from(&u.socket)),
                    (Side::Upstream, None) => None,
                };
                if let Some(sock) = sock {
                    let _ = sock.set_linger(Some(Duration::ZERO));
                }
            }
            Action::Finish(close) => self.finish(index, close),
            Action::RecvHello => {
                let fd = slot.downstream.as_raw_fd();
                let token = slot.token(index, Op::Recv(Dir::ToUpstream));
                // One buffer per op: nothing is received past the hello
                // until the connection asks again.
                self.ring.recv(fd, RecvMode::Single, 0, token);
                slot.inflight += 1;
            }
            Action::TakeHello { bid, len } => {
                let len = len.min(self.shared.settings.buffer_size) as usize;
                // SAFETY: the recv that filled buffer `bid` with `len` bytes
                // has completed and the buffer is not back in the ring yet:
                // nothing writes it while this slice lives.
                let bytes = unsafe { std::slice::from_raw_parts(self.bufs.address(bid, 0), len) };
                slot.conn.on_hello_bytes(bytes, &mut self.scratch);
                self.bufs.give_back(bid);
            }
            Action::Route => self.route_hello(index),
            Action::SendPrefix(dir) => {
                let res = send_prefix(slot, dir);
                let done = Completion {
                    op: Op::Send(dir),
                    res,
                    bid: None,
                    more: false,
                };
                slot.conn
                    .on_completion(done, Instant::now(), &mut self.scratch);
            }
        }
    }

    /// Route a TLS passthrough connection by the SNI of its ClientHello.
    fn route_hello(&mut self, index: u32) {
        let Some(slot) = self.slots.get_mut(index as usize).and_then(Option::as_mut) else {
            return;
        };
        let Some(name) = slot.conn.server_name().cloned() else {
            return;
        };
        slot.sni = Some(name.clone());
        let plan = Arc::clone(&slot.plan);
        let listener = plan
            .table
            .listeners
            .get(slot.table_listener)
            .map_or("-", |l| l.name.as_str());
        if name == ServerName::TooLarge {
            if self.sni_errors.allow(Instant::now()) {
                tracing::info!(worker = self.id, listener = %listener, downstream = %slot.peer, flag = CloseReason::NoRoute.flag(), "ClientHello larger than 16 KiB (Envoy: client_hello_too_large): connection closed, not routed (at most one line per second)");
            }
            slot.conn
                .on_route_failed(CloseReason::NoRoute, &mut self.scratch);
            return;
        }
        let route = plan
            .table
            .listeners
            .get(slot.table_listener)
            .and_then(|l| match &l.routing {
                ListenerRouting::TlsPassthrough { sni } => sni.lookup(name.lookup_key()),
                ListenerRouting::Tcp { route } => Some(*route),
            });
        let Some(route) = route else {
            if self.sni_errors.allow(Instant::now()) {
                tracing::info!(worker = self.id, listener = %listener, downstream = %slot.peer, sni = %name, flag = CloseReason::NoRoute.flag(), "no route for this SNI; connection closed (at most one line per second)");
            }
            slot.conn
                .on_route_failed(CloseReason::NoRoute, &mut self.scratch);
            return;
        };
        tracing::debug!(worker = self.id, downstream = %slot.peer, sni = %name, route = %plan.table.route(route).name, "SNI routed");
        let peer = slot.peer;
        match self.reserve(&plan, route, peer) {
            Ok((cluster, limits)) => {
                if let Some(slot) = self.slots.get_mut(index as usize).and_then(Option::as_mut) {
                    slot.target = Some((route, cluster));
                    slot.conn.on_routed(limits, &mut self.scratch);
                }
            }
            Err(reason) => {
                if let Some(slot) = self.slots.get_mut(index as usize).and_then(Option::as_mut) {
                    slot.conn.on_route_failed(reason, &mut self.scratch);
                }
            }
        }
    }

    /// A connect to `endpoint` failed or timed out: counted, and the
    /// endpoint ejected when that makes a streak (reported to `/config_dump`).
    fn connect_failed(&mut self, plan: &Plan, cluster: ClusterId, endpoint: usize, now: Instant) {
        let ejected = self.balancer.connect_failed(plan, cluster, endpoint, now);
        let counters = self.metrics.cluster(&plan.table.cluster(cluster).name);
        add(&counters.connect_failures, 1);
        add(&counters.ejections, u64::from(ejected));
        if ejected {
            self.status.ejected(self.balancer.ejections(now));
        }
    }

    /// Open an upstream socket to the next endpoint and submit its CONNECT.
    pub(super) fn connect(&mut self, index: u32) {
        let Some(slot) = self.slots.get_mut(index as usize).and_then(Option::as_mut) else {
            return;
        };
        let plan = Arc::clone(&slot.plan);
        let now = Instant::now();
        if let Some(previous) = slot.upstream.take() {
            // Asked to connect again: the previous attempt failed.
            self.balancer
                .closed(&plan, previous.cluster, previous.endpoint);
            self.connect_failed(&plan, previous.cluster, previous.endpoint, now);
        }
        let Some(slot) = self.slots.get_mut(index as usize).and_then(Option::as_mut) else {
            return;
        };
        let Some((_, cluster)) = slot.target else {
            slot.conn
                .on_connect_unavailable(CloseReason::NoRoute, &mut self.scratch);
            return;
        };
        let Some(endpoint) =
            self.balancer
                .pick_endpoint(&plan, cluster, slot.peer.ip(), &slot.tried, now)
        else {
            let reason = if slot.tried.is_empty() {
                CloseReason::NoHealthyUpstream
            } else {
                CloseReason::ConnectFailed
            };
            slot.conn.on_connect_unavailable(reason, &mut self.scratch);
            return;
        };
        slot.tried.push(endpoint);
        let target = plan.endpoints[cluster.0 as usize][endpoint];
        let policy = &plan.table.cluster(cluster).policy;
        let socket = match upstream_socket(target.address, policy.tcp_keepalive) {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors or socket memory is ringway's own
                // failure, not the upstream's: flagged OM, not UF, and no
                // more clients are taken for a moment.
                let local = matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                );
                let reason = if local {
                    CloseReason::LocalResource
                } else {
                    CloseReason::ConnectFailed
                };
                if self.socket_errors.allow(now) {
                    tracing::warn!(worker = self.id, upstream = %target.address, error = %e, flag = reason.flag(), "cannot open an upstream socket; connection closed (at most one line per second; on EMFILE/ENFILE raise LimitNOFILE / ulimit -n or lower --max-connections)");
                }
                slot.conn.on_connect_unavailable(reason, &mut self.scratch);
                if local {
                    self.pause_accepting(now + ACCEPT_PAUSE);
                }
                return;
            }
        };
        self.balancer.opened(&plan, cluster, endpoint);
        add(
            &self
                .metrics
                .cluster(&plan.table.cluster(cluster).name)
                .connect_attempts,
            1,
        );
        slot.connect.address = SockAddr::from(target.address);
        slot.connect.timeout = Timespec::from(policy.connect_timeout);
        self.ring.connect(
            socket.as_raw_fd(),
            &slot.connect.address,
            &slot.connect.timeout,
            slot.token(index, Op::Connect),
            slot.token(index, Op::ConnectTimeout),
        );
        slot.inflight += 2;
        slot.upstream = Some(Upstream {
            socket,
            cluster,
            endpoint,
        });
    }

    /// The connection emitted [`Action::Finish`]: a last failed attempt
    /// counts against its endpoint, and what is in flight is cancelled. It
    /// is counted and logged when freed ([`Worker::release_if_done`]), once
    /// sends that complete after the cancel have been counted too.
    pub(super) fn finish(&mut self, index: u32, close: Close) {
        let Some(slot) = self.slots.get_mut(index as usize).and_then(Option::as_mut) else {
            return;
        };
        if close.reason == CloseReason::ConnectFailed {
            // The last attempt failed too.
            if let Some(u) = &slot.upstream {
                let (plan, cluster, endpoint) = (Arc::clone(&slot.plan), u.cluster, u.endpoint);
                self.connect_failed(&plan, cluster, endpoint, Instant::now());
            }
        }
        let Some(slot) = self.slots.get_mut(index as usize).and_then(Option::as_mut) else {
            return;
        };
        if slot.inflight > 0 {
            for side in [Side::Downstream, Side::Upstream] {
                if let Some(fd) = slot.fd(side) {
                    self.ring.cancel_fd(fd, slot.token(index, Op::Cancel(side)));
                    slot.inflight += 1;
                }
            }
        }
    }

    /// Count a connection that ended and log it: Istio counters (by its
    /// flag), the access log, the debug line.
    fn account(&mut self, slot: &mut Slot, close: Close) {
        let flag = close.reason.flag();
        let cluster = slot.target.map(|(_, c)| c);
        let endpoint = slot.upstream.as_ref().map(|u| u.endpoint);
        match &slot.meter.tcp {
            Some(tcp) => {
                let [up, down] = slot.meter.reported;
                add(&tcp.received_bytes, close.to_upstream.saturating_sub(up));
                add(&tcp.sent_bytes, close.to_downstream.saturating_sub(down));
                slot.meter.reported = [close.to_upstream, close.to_downstream];
                let closed = if close.reason == CloseReason::Done {
                    Arc::clone(tcp)
                } else {
                    counters(&mut self.metrics, &slot.plan, cluster, endpoint, flag)
                };
                add(&closed.closed, 1);
            }
            None => {
                let tcp = counters(&mut self.metrics, &slot.plan, cluster, endpoint, flag);
                add(&tcp.opened, 1);
                add(&tcp.closed, 1);
            }
        }
        if self.access_log.enabled() {
            let listener = slot.table_listener;
            let sni = slot.sni.as_ref().and_then(ServerName::logged);
            self.access_log.log(&Record {
                start_time: slot.meter.started,
                duration: slot.conn.opened().elapsed(),
                downstream_remote_address: slot.peer,
                downstream_local_address: slot
                    .plan
                    .table
                    .listeners
                    .get(listener)
                    .map_or(slot.peer, |l| l.address),
                requested_server_name: sni,
                upstream_cluster: cluster.map(|c| slot.plan.table.cluster(c).name.as_str()),
                upstream_host: slot
                    .upstream
                    .as_ref()
                    .map(|u| slot.plan.endpoints[u.cluster.0 as usize][u.endpoint].address),
                bytes_received: close.to_upstream,
                bytes_sent: close.to_downstream,
                response_flags: flag,
                generation: slot.plan.table.generation,
            });
        }
        tracing::debug!(
            worker = self.id,
            downstream = %slot.peer,
            listener = %slot.plan.table.listeners.get(slot.table_listener).map_or("-", |l| l.name.as_str()),
            sni = %slot.sni.as_ref().map_or_else(|| "-".to_owned(), ToString::to_string),
            route = %slot.target.map_or("-", |(r, _)| slot.plan.table.route(r).name.as_str()),
            cluster = %slot.target.map_or("-", |(_, c)| slot.plan.table.cluster(c).name.as_str()),
            upstream = ?slot.upstream.as_ref().map(|u| slot.plan.endpoints[u.cluster.0 as usize][u.endpoint].address),
            to_upstream = close.to_upstream,
            to_downstream = close.to_downstream,
            duration_ms = slot.conn.opened().elapsed().as_millis() as u64,
            generation = slot.plan.table.generation,
            flag,
            "connection closed"
        );
    }

    /// Add the bytes written since the last call to the Istio counters.
    pub(super) fn advance_bytes(&mut self, index: u32) {
        let Some(slot) = self.slots.get_mut(index as usize).and_then(Option::as_mut) else {
            return;
        };
        let Some(tcp) = &slot.meter.tcp else {
            return;
        };
        let [up, down] = slot.conn.moved();
        let [old_up, old_down] = slot.meter.reported;
        if up > old_up {
            add(&tcp.received_bytes, up - old_up);
            slot.meter.reported[0] = up;
        }
        if down > old_down {
            add(&tcp.sent_bytes, down - old_down);
            slot.meter.reported[1] = down;
        }
    }

    /// Schedule the connection's next deadline when it is earlier than the
    /// one it is scheduled at (a later one is found when that fires).
    pub(super) fn reschedule(&mut self, index: u32) {
        let Some(slot) = self.slots.get_mut(index as usize).and_then(Option::as_mut) else {
            return;
        };
        let Some(next) = slot.conn.next_deadline() else {
            return;
        };
        if slot.deadline.is_none_or(|d| next < d) {
            slot.deadline = Some(next);
            self.timers.schedule(Due {
                at: next,
                index,
                generation: slot.generation,
            });
        }
    }

    /// Free a finished slot once no op of it is in flight.
    pub(super) fn release_if_done(&mut self, index: u32) {
        let done = self
            .slots
            .get(index as usize)
            .and_then(Option::as_ref)
            .is_some_and(|s| s.conn.is_finished() && s.inflight == 0);
        if !done {
            return;
        }
        let Some(mut slot) = self.slots[index as usize].take() else {
            return;
        };
        if let Some(close) = slot.conn.close() {
            self.account(&mut slot, close);
        }
        if let Some(u) = &slot.upstream {
            self.balancer.closed(&slot.plan, u.cluster, u.endpoint);
        }
        if let Some((_, cluster)) = slot.target {
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
        self.free.push(index);
        self.live -= 1;
    }
}

/// Bytes in a socket's send queue not yet acknowledged by the peer
/// (SIOCOUTQ): a reset (SO_LINGER 0) would discard them.
fn unsent_bytes(fd: RawFd) -> io::Result<u32> {
    let mut n: libc::c_int = 0;
    // SAFETY: ioctl(TIOCOUTQ, SIOCOUTQ for sockets) on a descriptor the slot
    // keeps open writes one int into `n`.
    if unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n.unsigned_abs())
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

/// Send what is left of the direction's prefix with a non-blocking send(2)
/// (the bytes are copied into the socket buffer before it returns): the
/// byte count, or a negated errno as a completion would carry it.
fn send_prefix(slot: &Slot, dir: Dir) -> i32 {
    let Some(bytes) = slot.conn.prefix(dir) else {
        return -libc::EINVAL;
    };
    let sock = match (dir.sink(), &slot.upstream) {
        (Side::Downstream, _) => SockRef::from(&slot.downstream),
        (Side::Upstream, Some(u)) => SockRef::from(&u.socket),
        (Side::Upstream, None) => return -libc::ENOTCONN,
    };
    match sock.send_with_flags(bytes, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) {
        Ok(n) => i32::try_from(n).unwrap_or(i32::MAX),
        Err(e) => -e.raw_os_error().unwrap_or(libc::EIO),
    }
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
