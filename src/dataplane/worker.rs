//! One worker: its ring, listening sockets and slab of connections. The run
//! loop submits, drains completions and dispatches them by token; what a
//! completion means for a connection is decided in `conn.rs`, and this file
//! only performs the resulting actions.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use io_uring::types::Timespec;
use socket2::{SockAddr, SockRef, Socket};

use crate::accesslog::{AccessLog, Record};
use crate::metrics::WorkerHandle;
use crate::metrics::worker::add;
use crate::routing::table::{ClusterId, ListenerRouting, RouteId};

use super::accept::{Accepting, After};
use super::balancer::Balancer;
use super::bufring::BufRing;
use super::conn::{Action, CloseReason, Completion, Connection, Limits};
use super::forward::{BUFFER_COUNT, PIPE_POOL_KEEP};
use super::listener;
use super::pipe::PipePool;
use super::ring::{Cqe, RecvMode, Ring, SetupError};
use super::slot::{ConnectArgs, Meter, Slot, counters};
use super::timers::{Due, Timers};
use super::token::{self, Dir, Event, Op, Token};
use super::wake::WakeFd;
use super::{Plan, Shared, WorkerStatus};

/// How often timers (idle, max duration, paused listeners, room under the
/// connection cap freed by other workers) are checked.
const TICK: Duration = Duration::from_millis(100);

/// Pooled pipes are closed after this long without use.
const PIPE_IDLE: Duration = Duration::from_secs(1);

/// How long accepting stays paused after EMFILE/ENFILE (on accept, or on an
/// upstream socket).
pub(super) const ACCEPT_PAUSE: Duration = Duration::from_millis(200);

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
    /// `None` once a reload removed the listener (its entry stays, so that
    /// accept tokens keep their meaning).
    pub socket: Option<Socket>,
    pub address: SocketAddr,
    /// Index into the current table's listeners.
    pub index: usize,
    pub name: String,
}

/// How a connection accepted on a listener is routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Routing {
    Route(RouteId),
    /// TLS passthrough: once its ClientHello is read, by the SNI.
    BySni,
}

pub struct Worker {
    pub(super) id: usize,
    // Field order matters: the ring is dropped before the buffer ring its
    // ops may still select from.
    pub(super) ring: Ring,
    pub(super) bufs: BufRing,
    pub(super) recv_mode: RecvMode,
    pub(super) shared: Arc<Shared>,
    /// The plan as of the last accept, and the cache that tells cheaply
    /// whether a newer one was published.
    pub(super) plan: Arc<Plan>,
    plans: arc_swap::Cache<Arc<ArcSwap<Plan>>, Arc<Plan>>,
    pub(super) balancer: Balancer,
    pub(super) listeners: Vec<WorkerListener>,
    /// The accepts of each listener entry (`accept.rs`).
    pub(super) accepting: Vec<Accepting>,
    pub(super) wake: Arc<WakeFd>,
    pub(super) slots: Vec<Option<Slot>>,
    pub(super) generations: Vec<u32>,
    pub(super) free: Vec<u32>,
    pub(super) live: usize,
    pub(super) pipes: PipePool,
    pub(super) starved: VecDeque<(u32, u32, Dir)>,
    pub(super) cqes: Vec<Cqe>,
    pub(super) actions: VecDeque<Action>,
    pub(super) scratch: Vec<Action>,
    /// Connection deadlines (`timers.rs`), and those due at this tick.
    pub(super) timers: Timers,
    due: Vec<Due>,
    pub(super) stopping: bool,
    /// Listeners closed; the worker ends once its connections have.
    pub(super) draining: bool,
    /// At most one EMFILE/ENFILE line per second.
    pub(super) accept_errors: LogLimit,
    /// At most one "connection cap reached" line per second.
    cap_reached: LogLimit,
    /// At most one "cannot open an upstream socket" line per second.
    pub(super) socket_errors: LogLimit,
    /// At most one "no route for this SNI" line per second.
    pub(super) sni_errors: LogLimit,
    pub(super) next_pipe_trim: Instant,
    /// This worker's counters (a lock-free cache in front of the registry).
    pub(super) metrics: WorkerHandle,
    pub(super) access_log: AccessLog,
    /// Active-connections gauge of each listener (indexed like `listeners`).
    gauges: Vec<Arc<AtomicI64>>,
    /// What this worker reports to the control plane.
    pub(super) status: Arc<WorkerStatus>,
}

impl Worker {
    /// Set up the worker's ring on the calling thread (which must run it).
    pub fn new(
        id: usize,
        shared: Arc<Shared>,
        listeners: Vec<WorkerListener>,
        wake: Arc<WakeFd>,
        mut metrics: WorkerHandle,
        access_log: AccessLog,
        status: Arc<WorkerStatus>,
    ) -> Result<Worker, WorkerError> {
        let mut ring = Ring::new()?;
        let mut bufs = ring
            .buf_ring(BUFFER_COUNT, shared.settings.buffer_size)
            .map_err(WorkerError::BufRing)?;
        let recv_mode = match shared.settings.recv_mode {
            Some(mode) => mode,
            None => ring
                .probe_recv_limit(&mut bufs)
                .map_err(WorkerError::Ring)?,
        };
        if id == 0 {
            tracing::info!(?recv_mode, "copy path receive mode");
        }
        let pipes = PipePool::new(
            shared.settings.pipe_size,
            PIPE_POOL_KEEP,
            shared.budget.pipes_per_worker,
        );
        let mut plans = arc_swap::Cache::new(Arc::clone(&shared.plan));
        let plan = Arc::clone(plans.load());
        let gauges = listeners
            .iter()
            .map(|l| metrics.listener(l.address))
            .collect();
        let seed =
            (id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(std::process::id());
        Ok(Worker {
            id,
            ring,
            bufs,
            recv_mode,
            balancer: Balancer::new(&plan, seed),
            plan,
            plans,
            shared,
            accepting: vec![Accepting::Idle; listeners.len()],
            listeners,
            wake,
            slots: Vec::new(),
            generations: Vec::new(),
            free: Vec::new(),
            live: 0,
            pipes,
            starved: VecDeque::new(),
            cqes: Vec::with_capacity(256),
            actions: VecDeque::new(),
            scratch: Vec::new(),
            timers: Timers::default(),
            due: Vec::new(),
            stopping: false,
            draining: false,
            accept_errors: LogLimit::default(),
            cap_reached: LogLimit::default(),
            socket_errors: LogLimit::default(),
            sni_errors: LogLimit::default(),
            next_pipe_trim: Instant::now() + PIPE_IDLE,
            metrics,
            access_log,
            gauges,
            status,
        })
    }

    /// Serve until told to stop and every connection is closed.
    pub fn run(mut self) -> Result<(), WorkerError> {
        self.ring.poll(self.wake.raw(), libc::POLLIN, token::WAKE);
        for i in 0..self.listeners.len() {
            self.steer(i);
        }
        let bound: Vec<bool> = self
            .plan
            .table
            .listeners
            .iter()
            .map(|l| {
                self.listeners
                    .iter()
                    .any(|w| w.address == l.address && w.socket.is_some())
            })
            .collect();
        self.report(&bound);
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
            if (self.stopping || self.draining) && self.live == 0 {
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
            if self.shared.draining.load(Ordering::Acquire) && !self.draining {
                self.draining = true;
                for i in 0..self.listeners.len() {
                    if self.listeners[i].socket.is_some() {
                        self.close_listener(i);
                    }
                }
                if self.id == 0 {
                    tracing::info!(
                        open = self.shared.open.load(Ordering::Relaxed),
                        "draining: listeners closed, waiting for open connections"
                    );
                }
            }
            self.refresh_plan();
            self.ring.poll(self.wake.raw(), libc::POLLIN, token::WAKE);
            return;
        }
        self.stopping = true;
        for i in 0..self.listeners.len() {
            self.wind_down(i, After::Stop);
        }
        for index in 0..self.slots.len() {
            if let Some(slot) = &mut self.slots[index] {
                slot.conn.drain(&mut self.scratch);
                self.perform(index as u32);
            }
        }
    }

    /// Take a newly published plan: listeners for addresses it no longer
    /// has are closed, listeners for new addresses opened, the others keep
    /// their sockets. Connections keep the plan they started with.
    fn refresh_plan(&mut self) {
        let current = self.plans.load();
        if Arc::ptr_eq(current, &self.plan) {
            return;
        }
        self.plan = Arc::clone(current);
        self.balancer = Balancer::succeed(&self.balancer, &self.plan);
        let plan = Arc::clone(&self.plan);
        let mut kept = vec![false; plan.table.listeners.len()];
        for i in 0..self.listeners.len() {
            if self.listeners[i].socket.is_none() {
                continue;
            }
            let address = self.listeners[i].address;
            match plan
                .table
                .listeners
                .iter()
                .position(|l| l.address == address)
            {
                Some(index) => {
                    kept[index] = true;
                    self.listeners[i].index = index;
                    self.listeners[i]
                        .name
                        .clone_from(&plan.table.listeners[index].name);
                }
                None => self.close_listener(i),
            }
        }
        if !(self.stopping || self.draining) {
            for (index, l) in plan.table.listeners.iter().enumerate() {
                if !kept[index] {
                    kept[index] = self.open_listener(&plan, index);
                    if !kept[index] {
                        tracing::error!(worker = self.id, listener = %l.name, address = %l.address, "listener skipped: cannot bind; free the port and reload");
                    }
                }
            }
        }
        self.report(&kept);
    }

    /// Bind listener `index` of `plan` and start accepting on it, in an
    /// entry a closed listener left (once its accept has completed) or a
    /// new one. False when it cannot be bound (logged by the caller).
    fn open_listener(&mut self, plan: &Plan, index: usize) -> bool {
        let l = &plan.table.listeners[index];
        let socket = match listener::bind(l.address) {
            Ok(socket) => socket,
            Err(e) => {
                tracing::debug!(worker = self.id, address = %l.address, error = %e, "bind failed");
                return false;
            }
        };
        if self.id == 0 {
            tracing::info!(listener = %l.name, address = %l.address, generation = plan.table.generation, "listener opened");
        }
        let entry = WorkerListener {
            socket: Some(socket),
            address: l.address,
            index,
            name: l.name.clone(),
        };
        let gauge = self.metrics.listener(l.address);
        let free = (0..self.listeners.len()).find(|&i| {
            self.listeners[i].socket.is_none() && self.accepting[i] == Accepting::Stopped
        });
        let i = match free {
            Some(i) => {
                self.listeners[i] = entry;
                self.gauges[i] = gauge;
                i
            }
            None => {
                self.listeners.push(entry);
                self.accepting.push(Accepting::Stopped);
                self.gauges.push(gauge);
                self.listeners.len() - 1
            }
        };
        self.accepting[i] = Accepting::Idle;
        self.steer(i);
        true
    }

    /// Tell the control plane which plan this worker serves, whether every
    /// listener of it is bound (`/ready`), and what it has ejected.
    fn report(&self, bound: &[bool]) {
        let missing = bound.iter().filter(|b| !**b).count();
        let ejections = self.balancer.ejections(Instant::now());
        self.status
            .report(&self.plan, missing, self.closing(), ejections);
    }

    /// Closed listener entries whose accepts are still being cancelled
    /// (`POST /reload` answers once none is left).
    pub(super) fn closing(&self) -> usize {
        self.accepting
            .iter()
            .filter(|a| {
                matches!(
                    a,
                    Accepting::Cancelling {
                        then: After::Stop,
                        ..
                    }
                )
            })
            .count()
    }

    fn close_listener(&mut self, i: usize) {
        self.wind_down(i, After::Stop);
        self.listeners[i].socket = None;
        if self.id == 0 && !self.draining {
            tracing::info!(listener = %self.listeners[i].name, address = %self.listeners[i].address, generation = self.plan.table.generation, "listener closed: not in the new configuration");
        }
    }

    fn on_accept(&mut self, i: usize, cqe: Cqe) {
        if i >= self.listeners.len() {
            return;
        }
        if !cqe.more() {
            self.accept_ended(i);
        }
        if cqe.res >= 0 {
            // SAFETY: a successful accept returns a new descriptor nobody else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(cqe.res) };
            if self.stopping || self.listeners[i].socket.is_none() {
                drop(fd);
            } else {
                self.open(i, fd);
            }
        } else if cqe.res == -libc::EMFILE || cqe.res == -libc::ENFILE {
            self.metrics.accept_error();
            let now = Instant::now();
            if self.accept_errors.allow(now) {
                tracing::warn!(
                    worker = self.id,
                    listener = %self.listeners[i].name,
                    error = %io::Error::from_raw_os_error(-cqe.res),
                    "accept: out of file descriptors; pausing accepting briefly (raise LimitNOFILE / ulimit -n, or lower --max-connections)"
                );
            }
            self.pause_accepting(now + ACCEPT_PAUSE);
            return;
        } else if cqe.res != -libc::ECANCELED {
            self.metrics.accept_error();
            tracing::warn!(
                worker = self.id,
                listener = %self.listeners[i].name,
                error = %io::Error::from_raw_os_error(-cqe.res),
                "accept failed"
            );
        }
        self.steer(i);
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
        self.refresh_plan();
        if self.listeners[i].socket.is_none() {
            return;
        }
        let plan = Arc::clone(&self.plan);
        let listener = &self.listeners[i];
        let routing = plan
            .table
            .listeners
            .get(listener.index)
            .map(|l| match &l.routing {
                ListenerRouting::Tcp { route } => Routing::Route(*route),
                ListenerRouting::TlsPassthrough { .. } => Routing::BySni,
            });
        let Some(routing) = routing else {
            tracing::debug!(worker = self.id, %peer, flag = CloseReason::NoRoute.flag(), "no route");
            self.refused(i, &plan, peer, CloseReason::NoRoute);
            return;
        };
        // Accepting stops at the cap (accept.rs); what the accepts in flight
        // took beyond it is served, its descriptors are in the budget.
        let cap = self.shared.budget.max_connections;
        let now = Instant::now();
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
        let (conn, target) = match routing {
            Routing::Route(route) => match self.reserve(&plan, route, peer) {
                Ok((cluster, limits)) => (
                    Connection::open(limits, now, &mut self.scratch),
                    Some((route, cluster)),
                ),
                Err(reason) => {
                    self.shared.open.fetch_sub(1, Ordering::Relaxed);
                    self.refused(i, &plan, peer, reason);
                    return;
                }
            },
            Routing::BySni => {
                let limits = Limits {
                    idle_timeout: None,
                    max_duration: None,
                    connect_attempts: self.shared.settings.connect_attempts.max(1),
                    splice_after: self.shared.settings.splice_after,
                };
                (Connection::open_tls(limits, now, &mut self.scratch), None)
            }
        };
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
            table_listener: self.listeners[i].index,
            plan,
            target,
            sni: None,
            upstream: None,
            tried: Vec::new(),
            connect: Box::new(ConnectArgs {
                address: SockAddr::from(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)),
                timeout: Timespec::new(),
            }),
            inflight: 0,
            pipes: [None, None],
            deadline: None,
            meter: Meter {
                started: SystemTime::now(),
                tcp: None,
                reported: [0, 0],
                active: Arc::clone(&self.gauges[i]),
            },
        });
        self.gauges[i].fetch_add(1, Ordering::Relaxed);
        self.live += 1;
        self.perform(index);
    }

    /// A connection closed before it had a slot: counted and logged with
    /// its flag.
    fn refused(&mut self, i: usize, plan: &Plan, peer: SocketAddr, reason: CloseReason) {
        let flag = reason.flag();
        let tcp = counters(&mut self.metrics, plan, None, None, flag);
        add(&tcp.opened, 1);
        add(&tcp.closed, 1);
        if self.access_log.enabled() {
            let local = plan
                .table
                .listeners
                .get(self.listeners[i].index)
                .map_or(peer, |l| l.address);
            self.access_log.log(&Record {
                start_time: SystemTime::now(),
                duration: Duration::ZERO,
                downstream_remote_address: peer,
                downstream_local_address: local,
                requested_server_name: None,
                upstream_cluster: None,
                upstream_host: None,
                bytes_received: 0,
                bytes_sent: 0,
                response_flags: flag,
                generation: plan.table.generation,
            });
        }
    }

    /// Pick the route's cluster and count the connection against its limit;
    /// the connection's limits. The process limit is counted by the caller.
    pub(super) fn reserve(
        &mut self,
        plan: &Plan,
        route: RouteId,
        peer: SocketAddr,
    ) -> Result<(ClusterId, Limits), CloseReason> {
        let Some(cluster) = self.balancer.pick_cluster(plan, route) else {
            return Err(CloseReason::NoHealthyUpstream);
        };
        let max_cluster = plan.table.cluster(cluster).policy.max_connections;
        let open = &plan.cluster_open[cluster.0 as usize];
        if open.fetch_add(1, Ordering::Relaxed) >= max_cluster {
            open.fetch_sub(1, Ordering::Relaxed);
            let name = &plan.table.cluster(cluster).name;
            add(&self.metrics.cluster(name).overflow, 1);
            tracing::debug!(worker = self.id, %peer, cluster = %plan.table.cluster(cluster).name, flag = CloseReason::Overflow.flag(), "cluster connection limit reached");
            return Err(CloseReason::Overflow);
        }
        let r = plan.table.route(route);
        Ok((
            cluster,
            Limits {
                idle_timeout: r.idle_timeout,
                max_duration: r.max_connection_duration,
                connect_attempts: self.shared.settings.connect_attempts.max(1),
                splice_after: self.shared.settings.splice_after,
            },
        ))
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
        if t.op == Op::ConnectTimeout && cqe.res == -libc::ETIME {
            if let Some(u) = &slot.upstream {
                let name = &slot.plan.table.cluster(u.cluster).name;
                add(&self.metrics.cluster(name).connect_timeouts, 1);
            }
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
        self.advance_bytes(index);
        self.reschedule(index);
        self.release_if_done(index);
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
        self.steer_all(now);
        // Only the connections with a deadline due: idle ones cost nothing.
        let mut due = std::mem::take(&mut self.due);
        self.timers.take_due(now, &mut due);
        for d in due.drain(..) {
            let slot = self
                .slots
                .get_mut(d.index as usize)
                .and_then(Option::as_mut)
                .filter(|s| s.generation == d.generation && s.deadline == Some(d.at));
            let Some(slot) = slot else {
                continue; // freed, reused or rescheduled since
            };
            slot.deadline = None;
            slot.conn.on_tick(now, &mut self.scratch);
            self.perform(d.index);
        }
        self.due = due;
        let slots = &self.slots;
        self.timers.compact(self.live, |d| {
            slots
                .get(d.index as usize)
                .and_then(Option::as_ref)
                .is_some_and(|s| s.generation == d.generation && s.deadline == Some(d.at))
        });
    }
}

/// Lets one log line through per second (errors that could otherwise flood
/// the log once per connection).
#[derive(Debug, Default)]
pub(super) struct LogLimit {
    last: Option<Instant>,
}

impl LogLimit {
    pub(super) fn allow(&mut self, now: Instant) -> bool {
        let allowed = self
            .last
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1));
        if allowed {
            self.last = Some(now);
        }
        allowed
    }
}
