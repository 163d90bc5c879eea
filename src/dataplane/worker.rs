//! One worker: its ring, listening sockets and slab of connections. The run
//! loop submits, drains completions and dispatches them by token; what a
//! completion means for a connection is decided in `conn.rs`, and this file
//! only performs the resulting actions.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use io_uring::types::Timespec;
use socket2::{SockAddr, SockRef, Socket, TcpKeepalive, Type};

use crate::routing::table::{ClusterId, ListenerRouting, RouteId};

use super::balancer::Balancer;
use super::bufring::BufRing;
use super::conn::{Action, Close, CloseReason, Completion, Connection, Limits};
use super::forward::{self, BUFFER_COUNT, BUFFER_SIZE, PIPE_POOL_KEEP, PIPE_SIZE};
use super::pipe::{self, OwnedPipe, PipePool};
use super::ring::{Cqe, Ring, SetupError};
use super::token::{self, Dir, Event, Op, Side, Token};
use super::wake::WakeFd;
use super::{Plan, Shared};

/// How often timers (idle, max duration, paused listeners) are checked.
const TICK: Duration = Duration::from_millis(100);

/// Pooled pipes are closed after this long without use.
const PIPE_IDLE: Duration = Duration::from_secs(1);

/// How long a listener stays paused after EMFILE/ENFILE on accept.
const ACCEPT_PAUSE: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error("cannot set up the provided-buffer ring: {0}; remedy: run on Linux 6.0 or later")]
    BufRing(io::Error),
    #[error("io_uring wait failed: {0}")]
    Ring(io::Error),
}

/// A listening socket of this worker.
pub struct WorkerListener {
    pub socket: Socket,
    /// Index into the table's listeners.
    pub index: usize,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accepting {
    Armed,
    /// EMFILE/ENFILE: re-armed at this instant.
    Paused(Instant),
    Stopped,
}

/// Where a connection's upstream is.
struct Upstream {
    socket: Socket,
    cluster: ClusterId,
    endpoint: usize,
}

/// Memory the kernel reads when the CONNECT is submitted (stable address).
struct ConnectArgs {
    address: SockAddr,
    timeout: Timespec,
}

struct Slot {
    generation: u32,
    conn: Connection,
    downstream: OwnedFd,
    peer: SocketAddr,
    listener: usize,
    plan: Arc<Plan>,
    route: RouteId,
    cluster: ClusterId,
    upstream: Option<Upstream>,
    /// Endpoints tried so far (a retry prefers another one).
    tried: Vec<usize>,
    connect: Box<ConnectArgs>,
    /// Operations submitted and not finally completed.
    inflight: u32,
    /// Pipes holding bytes, per direction.
    pipes: [Option<OwnedPipe>; 2],
}

impl Slot {
    fn fd(&self, side: Side) -> Option<RawFd> {
        match side {
            Side::Downstream => Some(self.downstream.as_raw_fd()),
            Side::Upstream => self.upstream.as_ref().map(|u| u.socket.as_raw_fd()),
        }
    }

    fn token(&self, index: u32, op: Op) -> u64 {
        Token::new(index, self.generation, op).user_data()
    }
}

pub struct Worker {
    id: usize,
    // Field order matters: the ring is dropped before the buffer ring its
    // ops may still select from.
    ring: Ring,
    bufs: BufRing,
    shared: Arc<Shared>,
    plan: Arc<Plan>,
    balancer: Balancer,
    listeners: Vec<WorkerListener>,
    accepting: Vec<Accepting>,
    wake: Arc<WakeFd>,
    slots: Vec<Option<Slot>>,
    generations: Vec<u32>,
    free: Vec<u32>,
    live: usize,
    pipes: PipePool,
    starved: VecDeque<(u32, u32, Dir)>,
    cqes: Vec<Cqe>,
    actions: VecDeque<Action>,
    scratch: Vec<Action>,
    stopping: bool,
    last_accept_error_log: Option<Instant>,
    next_pipe_trim: Instant,
}

impl Worker {
    /// Set up the worker's ring on the calling thread (which must run it).
    pub fn new(
        id: usize,
        shared: Arc<Shared>,
        listeners: Vec<WorkerListener>,
        wake: Arc<WakeFd>,
    ) -> Result<Worker, WorkerError> {
        let ring = Ring::new()?;
        let bufs = ring
            .buf_ring(BUFFER_COUNT, BUFFER_SIZE)
            .map_err(WorkerError::BufRing)?;
        let plan = shared.plan.load_full();
        let seed =
            (id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(std::process::id());
        Ok(Worker {
            id,
            ring,
            bufs,
            balancer: Balancer::new(&plan, seed),
            plan,
            shared,
            accepting: vec![Accepting::Stopped; listeners.len()],
            listeners,
            wake,
            slots: Vec::new(),
            generations: Vec::new(),
            free: Vec::new(),
            live: 0,
            pipes: PipePool::new(PIPE_SIZE, PIPE_POOL_KEEP),
            starved: VecDeque::new(),
            cqes: Vec::with_capacity(256),
            actions: VecDeque::new(),
            scratch: Vec::new(),
            stopping: false,
            last_accept_error_log: None,
            next_pipe_trim: Instant::now() + PIPE_IDLE,
        })
    }

    /// Serve until told to stop and every connection is closed.
    pub fn run(mut self) -> Result<(), WorkerError> {
        self.ring.poll(self.wake.raw(), libc::POLLIN, token::WAKE);
        for i in 0..self.listeners.len() {
            self.arm_accept(i);
        }
        let mut next_tick = Instant::now() + TICK;
        loop {
            self.ring.submit_and_wait(TICK).map_err(WorkerError::Ring)?;
            self.cqes.clear();
            self.ring.drain(&mut self.cqes);
            let cqes = std::mem::take(&mut self.cqes);
            for cqe in &cqes {
                self.dispatch(*cqe);
            }
            self.cqes = cqes;
            self.feed_starved();
            let now = Instant::now();
            if now >= next_tick {
                self.tick(now);
                next_tick = now + TICK;
            }
            if self.stopping && self.live == 0 {
                return Ok(());
            }
        }
    }

    fn dispatch(&mut self, cqe: Cqe) {
        match token::decode(cqe.user_data) {
            Event::Wake => self.on_wake(),
            Event::StopAccept => {}
            Event::Accept { listener } => self.on_accept(listener as usize, cqe),
            Event::Conn(t) => self.on_conn(t, cqe),
            Event::Unknown(u) => tracing::warn!(
                worker = self.id,
                user_data = u,
                "completion with an unknown token"
            ),
        }
    }

    fn on_wake(&mut self) {
        self.wake.drain();
        if !self.shared.stop.load(Ordering::Acquire) {
            self.ring.poll(self.wake.raw(), libc::POLLIN, token::WAKE);
            return;
        }
        self.stopping = true;
        for i in 0..self.listeners.len() {
            if self.accepting[i] == Accepting::Armed {
                self.ring
                    .cancel(token::accept(i as u32), token::STOP_ACCEPT);
            }
            self.accepting[i] = Accepting::Stopped;
        }
        for index in 0..self.slots.len() {
            if let Some(slot) = &mut self.slots[index] {
                slot.conn.drain(&mut self.scratch);
                self.perform(index as u32);
            }
        }
    }

    fn arm_accept(&mut self, i: usize) {
        let fd = self.listeners[i].socket.as_raw_fd();
        self.ring.accept_multi(fd, token::accept(i as u32));
        self.accepting[i] = Accepting::Armed;
    }

    fn on_accept(&mut self, i: usize, cqe: Cqe) {
        if i >= self.listeners.len() {
            return;
        }
        if cqe.res >= 0 {
            // SAFETY: a successful accept returns a new descriptor nobody else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(cqe.res) };
            if self.stopping {
                drop(fd);
            } else {
                self.open(i, fd);
            }
        } else if cqe.res == -libc::EMFILE || cqe.res == -libc::ENFILE {
            let now = Instant::now();
            if self
                .last_accept_error_log
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
            {
                self.last_accept_error_log = Some(now);
                tracing::warn!(
                    worker = self.id,
                    listener = %self.listeners[i].name,
                    error = %io::Error::from_raw_os_error(-cqe.res),
                    "accept: out of file descriptors; pausing this listener briefly (raise LimitNOFILE / ulimit -n)"
                );
            }
            if self.accepting[i] == Accepting::Armed {
                if cqe.more() {
                    self.ring
                        .cancel(token::accept(i as u32), token::STOP_ACCEPT);
                }
                self.accepting[i] = Accepting::Paused(now + ACCEPT_PAUSE);
            }
            return;
        } else if cqe.res != -libc::ECANCELED {
            tracing::warn!(
                worker = self.id,
                listener = %self.listeners[i].name,
                error = %io::Error::from_raw_os_error(-cqe.res),
                "accept failed"
            );
        }
        // A multishot accept that ended is re-armed unless the listener is
        // paused or stopped on purpose.
        if !cqe.more() && self.accepting[i] == Accepting::Armed {
            self.arm_accept(i);
        }
    }

    /// A new downstream connection on listener `i`.
    fn open(&mut self, i: usize, downstream: OwnedFd) {
        let sock = SockRef::from(&downstream);
        let _ = sock.set_tcp_nodelay(true);
        let peer = sock
            .peer_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .unwrap_or(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0));
        // The connection keeps the table it started with.
        let plan = self.shared.plan.load_full();
        if !Arc::ptr_eq(&plan, &self.plan) {
            self.balancer = Balancer::new(&plan, self.id as u64);
            self.plan = Arc::clone(&plan);
        }
        let listener = &self.listeners[i];
        let Some(route) = plan
            .table
            .listeners
            .get(listener.index)
            .and_then(|l| match &l.routing {
                ListenerRouting::Tcp { route } => Some(*route),
                ListenerRouting::TlsPassthrough { .. } => None,
            })
        else {
            tracing::debug!(worker = self.id, %peer, flag = CloseReason::NoRoute.flag(), "no route");
            return;
        };
        let max = self.shared.settings.max_connections.unwrap_or(usize::MAX);
        if self.shared.open.fetch_add(1, Ordering::Relaxed) >= max {
            self.shared.open.fetch_sub(1, Ordering::Relaxed);
            tracing::debug!(worker = self.id, %peer, flag = CloseReason::Overflow.flag(), "process connection limit reached");
            return;
        }
        let Some(cluster) = self.balancer.pick_cluster(&plan, route) else {
            self.shared.open.fetch_sub(1, Ordering::Relaxed);
            return;
        };
        let max_cluster = plan.table.cluster(cluster).policy.max_connections;
        let open = &plan.cluster_open[cluster.0 as usize];
        if open.fetch_add(1, Ordering::Relaxed) >= max_cluster {
            open.fetch_sub(1, Ordering::Relaxed);
            self.shared.open.fetch_sub(1, Ordering::Relaxed);
            tracing::debug!(worker = self.id, %peer, cluster = %plan.table.cluster(cluster).name, flag = CloseReason::Overflow.flag(), "cluster connection limit reached");
            return;
        }
        let r = plan.table.route(route);
        let limits = Limits {
            idle_timeout: r.idle_timeout,
            max_duration: r.max_connection_duration,
            connect_attempts: self.shared.settings.connect_attempts.max(1),
            splice_after: self.shared.settings.splice_after,
        };
        let conn = Connection::open(limits, Instant::now(), &mut self.scratch);
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.slots.push(None);
                self.generations.push(0);
                (self.slots.len() - 1) as u32
            }
        };
        let generation = self.generations[index as usize].wrapping_add(1);
        self.generations[index as usize] = generation;
        self.slots[index as usize] = Some(Slot {
            generation,
            conn,
            downstream,
            peer,
            listener: i,
            plan,
            route,
            cluster,
            upstream: None,
            tried: Vec::new(),
            connect: Box::new(ConnectArgs {
                address: SockAddr::from(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)),
                timeout: Timespec::new(),
            }),
            inflight: 0,
            pipes: [None, None],
        });
        self.live += 1;
        self.perform(index);
    }

    fn on_conn(&mut self, t: Token, cqe: Cqe) {
        let bid = cqe.buffer();
        if bid.is_some() {
            self.bufs.taken();
        }
        let slot = self
            .slots
            .get_mut(t.conn as usize)
            .and_then(Option::as_mut)
            .filter(|s| s.generation & ((1 << token::GENERATION_BITS) - 1) == t.generation);
        let Some(slot) = slot else {
            // Cannot happen while slots are freed only with nothing in flight;
            // never lose a buffer over it.
            debug_assert!(false, "completion for a freed slot: {t:?}");
            if let Some(bid) = bid {
                self.bufs.give_back(bid);
            }
            return;
        };
        if !cqe.more() {
            slot.inflight = slot.inflight.saturating_sub(1);
        }
        let completion = Completion {
            op: t.op,
            res: cqe.res,
            bid,
            more: cqe.more(),
        };
        slot.conn
            .on_completion(completion, Instant::now(), &mut self.scratch);
        self.perform(t.conn);
    }

    /// Perform the actions the connection emitted (into `scratch`), and
    /// those that follow from them, then free the slot if it is done.
    fn perform(&mut self, index: u32) {
        self.actions.extend(self.scratch.drain(..));
        while let Some(action) = self.actions.pop_front() {
            self.act(index, action);
            self.actions.extend(self.scratch.drain(..));
        }
        self.release_if_done(index);
    }

    fn act(&mut self, index: u32, action: Action) {
        let Some(slot) = self.slots.get_mut(index as usize).and_then(Option::as_mut) else {
            return;
        };
        match action {
            Action::Connect => self.connect(index),
            Action::Connected => {}
            Action::ArmRecv(dir) => {
                if let Some(fd) = slot.fd(dir.source()) {
                    self.ring.recv_multi(fd, slot.token(index, Op::Recv(dir)));
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
        }
    }

    /// Open an upstream socket to the next endpoint and submit its CONNECT.
    fn connect(&mut self, index: u32) {
        let Some(slot) = self.slots.get_mut(index as usize).and_then(Option::as_mut) else {
            return;
        };
        if let Some(previous) = slot.upstream.take() {
            self.balancer.closed(previous.cluster, previous.endpoint);
        }
        let plan = Arc::clone(&slot.plan);
        let cluster = slot.cluster;
        let Some(endpoint) =
            self.balancer
                .pick_endpoint(&plan, cluster, slot.peer.ip(), &slot.tried)
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
                tracing::warn!(worker = self.id, upstream = %target.address, error = %e, "cannot open an upstream socket");
                slot.conn
                    .on_connect_unavailable(CloseReason::ConnectFailed, &mut self.scratch);
                return;
            }
        };
        self.balancer.opened(cluster, endpoint);
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

    fn finish(&mut self, index: u32, close: Close) {
        let Some(slot) = self.slots.get_mut(index as usize).and_then(Option::as_mut) else {
            return;
        };
        tracing::debug!(
            worker = self.id,
            downstream = %slot.peer,
            listener = %self.listeners[slot.listener].name,
            route = %slot.plan.table.route(slot.route).name,
            cluster = %slot.plan.table.cluster(slot.cluster).name,
            upstream = ?slot.upstream.as_ref().map(|u| slot.plan.endpoints[u.cluster.0 as usize][u.endpoint].address),
            to_upstream = close.to_upstream,
            to_downstream = close.to_downstream,
            duration_ms = slot.conn.opened().elapsed().as_millis() as u64,
            generation = slot.plan.table.generation,
            flag = close.reason.flag(),
            "connection closed"
        );
        if slot.inflight > 0 {
            for side in [Side::Downstream, Side::Upstream] {
                if let Some(fd) = slot.fd(side) {
                    self.ring.cancel_fd(fd, slot.token(index, Op::Cancel(side)));
                    slot.inflight += 1;
                }
            }
        }
    }

    /// Free a finished slot once no op of it is in flight.
    fn release_if_done(&mut self, index: u32) {
        let done = self
            .slots
            .get(index as usize)
            .and_then(Option::as_ref)
            .is_some_and(|s| s.conn.is_finished() && s.inflight == 0);
        if !done {
            return;
        }
        let Some(slot) = self.slots[index as usize].take() else {
            return;
        };
        if let Some(u) = &slot.upstream {
            self.balancer.closed(u.cluster, u.endpoint);
        }
        slot.plan.cluster_open[slot.cluster.0 as usize].fetch_sub(1, Ordering::Relaxed);
        self.shared.open.fetch_sub(1, Ordering::Relaxed);
        for pipe in slot.pipes.into_iter().flatten() {
            // It still holds this connection's bytes: close it, never reuse it.
            drop(pipe);
            self.pipes.dropped();
        }
        self.free.push(index);
        self.live -= 1;
    }

    /// Halves waiting for provided buffers get them back in arrival order.
    fn feed_starved(&mut self) {
        while self.bufs.available() > 0 {
            let Some((index, generation, dir)) = self.starved.pop_front() else {
                return;
            };
            if let Some(slot) = self.slots.get_mut(index as usize).and_then(Option::as_mut) {
                if slot.generation == generation {
                    slot.conn.on_buffers(dir, &mut self.scratch);
                    self.perform(index);
                }
            }
        }
    }

    fn tick(&mut self, now: Instant) {
        if now >= self.next_pipe_trim {
            self.pipes.trim();
            self.next_pipe_trim = now + PIPE_IDLE;
        }
        for i in 0..self.accepting.len() {
            if let Accepting::Paused(until) = self.accepting[i] {
                if now >= until && !self.stopping {
                    self.arm_accept(i);
                }
            }
        }
        for index in 0..self.slots.len() {
            if let Some(slot) = &mut self.slots[index] {
                slot.conn.on_tick(now, &mut self.scratch);
                if !self.scratch.is_empty() {
                    self.perform(index as u32);
                }
            }
        }
    }
}

/// A blocking upstream socket with TCP_NODELAY and the cluster's keepalive.
fn upstream_socket(
    address: SocketAddr,
    keepalive: Option<crate::routing::table::Keepalive>,
) -> io::Result<Socket> {
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
