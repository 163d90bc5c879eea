//! One worker: its ring, listening sockets and slab of connections. The run
//! loop submits, drains completions and dispatches them by token to the
//! session of the slot they name (`session.rs` decides what they mean;
//! `exec.rs` performs what it asks), ticks the timers, takes new plans,
//! and walks the worker's lifecycle (serving → draining or stopping).

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use socket2::SockRef;

use crate::accesslog::AccessLog;
use crate::metrics::WorkerHandle;
use crate::metrics::worker::add;

use super::accept::After;
use super::balancer::Balancer;
use super::bufring::BufRing;
use super::forward::{BUFFER_COUNT, PIPE_POOL_KEEP};
use super::io::{Completion, Io};
use super::listeners::Listeners;
pub use super::listeners::WorkerListener;
use super::meter::Meter;
use super::pipe::PipePool;
use super::ring::{Cqe, RecvMode, Ring, SetupError};
use super::session::Session;
use super::slab::{Key, Slab};
use super::slot::Slot;
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

/// Where a worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lifecycle {
    /// Accepting and serving.
    Serving,
    /// Listeners closed; the worker ends once its connections have.
    Draining,
    /// Told to stop: connections are closed (`DR`), then the worker ends.
    Stopping,
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
    pub(super) listeners: Listeners,
    pub(super) wake: Arc<WakeFd>,
    pub(super) slots: Slab<Slot>,
    pub(super) pipes: PipePool,
    /// Sessions waiting for provided buffers, in arrival order.
    pub(super) starved: VecDeque<(Key, Dir)>,
    cqes: Vec<Cqe>,
    /// The I/O being performed for one slot, and what its session asked
    /// for meanwhile.
    pub(super) actions: VecDeque<Io>,
    pub(super) scratch: Vec<Io>,
    /// Connection deadlines (`timers.rs`), and those due at this tick.
    timers: Timers,
    due: Vec<Due>,
    pub(super) lifecycle: Lifecycle,
    /// At most one EMFILE/ENFILE line per second.
    accept_errors: LogLimit,
    /// At most one "connection cap reached" line per second.
    pub(super) cap_reached: LogLimit,
    /// At most one "cannot open an upstream socket" line per second.
    pub(super) socket_errors: LogLimit,
    /// At most one "no route for this SNI" line per second.
    pub(super) sni_errors: LogLimit,
    next_pipe_trim: Instant,
    /// This worker's counters (a lock-free cache in front of the registry).
    pub(super) metrics: WorkerHandle,
    pub(super) access_log: AccessLog,
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
        let listeners = Listeners::new(listeners, |a| metrics.listener(a));
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
            listeners,
            wake,
            slots: Slab::default(),
            pipes,
            starved: VecDeque::new(),
            cqes: Vec::with_capacity(256),
            actions: VecDeque::new(),
            scratch: Vec::new(),
            timers: Timers::default(),
            due: Vec::new(),
            lifecycle: Lifecycle::Serving,
            accept_errors: LogLimit::default(),
            cap_reached: LogLimit::default(),
            socket_errors: LogLimit::default(),
            sni_errors: LogLimit::default(),
            next_pipe_trim: Instant::now() + PIPE_IDLE,
            metrics,
            access_log,
            status,
        })
    }

    /// Serve until told to stop and every connection is closed.
    pub fn run(mut self) -> Result<(), WorkerError> {
        self.ring.poll(self.wake.as_fd(), libc::POLLIN, token::WAKE);
        for i in 0..self.listeners.len() {
            self.steer(i);
        }
        let bound: Vec<bool> = self
            .plan
            .table
            .listeners
            .iter()
            .map(|l| self.listeners.find_open(l.address).is_some())
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
            if self.lifecycle != Lifecycle::Serving && self.slots.live() == 0 {
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
        if self.shared.stop.load(Ordering::Acquire) {
            self.stop();
            return;
        }
        if self.shared.draining.load(Ordering::Acquire) && self.lifecycle == Lifecycle::Serving {
            self.lifecycle = Lifecycle::Draining;
            for i in 0..self.listeners.len() {
                if self.listeners.get(i).is_some_and(|e| e.is_open()) {
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
        self.ring.poll(self.wake.as_fd(), libc::POLLIN, token::WAKE);
    }

    /// Told to stop: no more accepts, every connection closed (`DR`).
    fn stop(&mut self) {
        self.lifecycle = Lifecycle::Stopping;
        for i in 0..self.listeners.len() {
            self.wind_down(i, After::Stop);
        }
        for key in self.slots.keys() {
            if let Some(slot) = self.slots.get_mut(key) {
                slot.session.drain(&mut self.scratch);
                self.perform(key);
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
            let Some(entry) = self.listeners.get_mut(i).filter(|e| e.is_open()) else {
                continue;
            };
            let address = entry.listener.address;
            match plan
                .table
                .listeners
                .iter()
                .position(|l| l.address == address)
            {
                Some(index) => {
                    kept[index] = true;
                    entry.listener.index = index;
                    entry
                        .listener
                        .name
                        .clone_from(&plan.table.listeners[index].name);
                }
                None => self.close_listener(i),
            }
        }
        if self.lifecycle == Lifecycle::Serving {
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

    /// Bind listener `index` of `plan` and start accepting on it. False
    /// when it cannot be bound (logged by the caller).
    fn open_listener(&mut self, plan: &Plan, index: usize) -> bool {
        let l = &plan.table.listeners[index];
        let socket = match super::listener::bind(l.address) {
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
        let i = self.listeners.place(entry, gauge);
        self.steer(i);
        true
    }

    /// Tell the control plane which plan this worker serves, whether every
    /// listener of it is bound (`/ready`), and what it has ejected.
    fn report(&self, bound: &[bool]) {
        let missing = bound.iter().filter(|b| !**b).count();
        let ejections = self.balancer.ejections(Instant::now());
        self.status
            .report(&self.plan, missing, self.listeners.closing(), ejections);
    }

    fn close_listener(&mut self, i: usize) {
        self.wind_down(i, After::Stop);
        let Some(entry) = self.listeners.get_mut(i) else {
            return;
        };
        entry.listener.socket = None;
        if self.id == 0 && self.lifecycle == Lifecycle::Serving {
            tracing::info!(listener = %entry.listener.name, address = %entry.listener.address, generation = self.plan.table.generation, "listener closed: not in the new configuration");
        }
    }

    fn on_accept(&mut self, i: usize, cqe: Cqe) {
        let Some(entry) = self.listeners.get(i) else {
            return;
        };
        let open = entry.is_open();
        if !cqe.more() {
            self.accept_ended(i);
        }
        if cqe.res >= 0 {
            // SAFETY: a successful accept returns a new descriptor nobody else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(cqe.res) };
            if self.lifecycle == Lifecycle::Stopping || !open {
                drop(fd);
            } else {
                self.open(i, fd);
            }
        } else if cqe.res == -libc::EMFILE || cqe.res == -libc::ENFILE {
            self.accept_failed(i, cqe.res);
            self.pause_accepting(Instant::now() + ACCEPT_PAUSE);
            return;
        } else if cqe.res != -libc::ECANCELED {
            self.accept_failed(i, cqe.res);
        }
        self.steer(i);
    }

    /// An accept of entry `i` failed with `-res`: counted and logged (out
    /// of descriptors at most once a second).
    fn accept_failed(&mut self, i: usize, res: i32) {
        self.metrics.accept_error();
        let listener = self
            .listeners
            .get(i)
            .map_or("-", |e| e.listener.name.as_str());
        let error = io::Error::from_raw_os_error(-res);
        if res == -libc::EMFILE || res == -libc::ENFILE {
            if self.accept_errors.allow(Instant::now()) {
                tracing::warn!(worker = self.id, listener = %listener, error = %error, "accept: out of file descriptors; pausing accepting briefly (raise LimitNOFILE / ulimit -n, or lower --max-connections)");
            }
        } else {
            tracing::warn!(worker = self.id, listener = %listener, error = %error, "accept failed");
        }
    }

    /// A new downstream connection on listener entry `i`: a slot with the
    /// session its listener's kind calls for.
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
        let Some(entry) = self.listeners.get(i).filter(|e| e.is_open()) else {
            return;
        };
        let (listener, gauge) = (entry.listener.index, Arc::clone(&entry.gauge));
        let now = Instant::now();
        self.admit(now);
        let plan = Arc::clone(&self.plan);
        let session = Session::open(&plan, listener, now, &mut self.scratch);
        gauge.fetch_add(1, Ordering::Relaxed);
        let meter = Meter::new(gauge, now);
        let key = self
            .slots
            .insert(Slot::new(session, downstream, peer, listener, plan, meter));
        self.perform(key);
    }

    fn on_conn(&mut self, t: Token, cqe: Cqe) {
        let bid = cqe.buffer();
        if let Some(bid) = bid {
            self.bufs.taken(bid);
        }
        let key = Key {
            index: t.conn,
            generation: t.generation,
        };
        let Some(slot) = self.slots.get_mut(key) else {
            // Cannot happen while slots are freed only with nothing in flight;
            // never lose a buffer over it.
            debug_assert!(false, "completion for a freed slot: {t:?}");
            if let Some(bid) = bid {
                self.bufs.give_back(bid);
            }
            return;
        };
        if !cqe.more() {
            slot.inflight.completed();
        }
        if t.op == Op::ConnectTimeout && cqe.res == -libc::ETIME {
            if let Some(u) = &slot.upstream {
                let name = &slot.plan.table.cluster(u.cluster).name;
                add(&self.metrics.cluster(name).connect_timeouts, 1);
            }
        }
        let data = match (bid, u32::try_from(cqe.res)) {
            (Some(bid), Ok(len)) => self.bufs.filled(bid, len),
            _ => &[],
        };
        let completion = Completion {
            op: t.op,
            res: cqe.res,
            bid,
            data,
            more: cqe.more(),
        };
        slot.session
            .on_completion(completion, Instant::now(), &mut self.scratch);
        self.perform(key);
    }

    /// Sessions waiting for provided buffers get them back in arrival order.
    fn feed_starved(&mut self) {
        while self.bufs.available() > 0 {
            let Some((key, dir)) = self.starved.pop_front() else {
                return;
            };
            if let Some(slot) = self.slots.get_mut(key) {
                slot.session.on_buffers(dir, &mut self.scratch);
                self.perform(key);
            }
        }
    }

    /// Schedule the session's next deadline when it is earlier than the
    /// one it is scheduled at (a later one is found when that fires).
    pub(super) fn reschedule(&mut self, key: Key) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        let Some(next) = slot.session.next_deadline() else {
            return;
        };
        if slot.deadline.is_none_or(|d| next < d) {
            slot.deadline = Some(next);
            self.timers.schedule(Due {
                at: next,
                index: key.index,
                generation: key.generation,
            });
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
            let key = Key {
                index: d.index,
                generation: d.generation,
            };
            let Some(slot) = self.slots.get_mut(key).filter(|s| s.deadline == Some(d.at)) else {
                continue; // freed, reused or rescheduled since
            };
            slot.deadline = None;
            slot.session.on_tick(now, &mut self.scratch);
            self.perform(key);
        }
        self.due = due;
        let slots = &self.slots;
        self.timers.compact(slots.live(), |d| {
            let key = Key {
                index: d.index,
                generation: d.generation,
            };
            slots.get(key).is_some_and(|s| s.deadline == Some(d.at))
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
