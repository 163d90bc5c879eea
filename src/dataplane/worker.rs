//! One worker: its ring, listening sockets and slab of connections. The run
//! loop submits, drains completions and dispatches them by token to the
//! session of the slot they name (`session.rs` decides what they mean;
//! `exec.rs` performs what it asks), ticks the timers, takes new plans,
//! and walks the worker's lifecycle (serving → draining or stopping).

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

use super::accept::{After, Room};
use super::balancer::Balancer;
use super::connections::Connections;
use super::context::{ACCEPT_PAUSE, Ctx, LogLimit};
use super::exec::RecvConfig;
use super::forward::{BUFFER_COUNT, PIPE_POOL_KEEP};
use super::listeners::Listeners;
pub use super::listeners::WorkerListener;
use super::pipe::PipePool;
use super::plan::Plan;
use super::ring::{Cqe, Ring, SetupError};
use super::token::{self, Event};
use super::wake::WakeFd;
use super::{Shared, WorkerStatus};

/// How often timers (idle, max duration, paused listeners, room under the
/// connection cap freed by other workers) are checked.
const TICK: Duration = Duration::from_millis(100);

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
enum Lifecycle {
    /// Accepting and serving.
    Serving,
    /// Listeners closed; the worker ends once its connections have.
    Draining,
    /// Told to stop: connections are closed (`DR`), then the worker ends.
    Stopping,
}

pub struct Worker {
    id: usize,
    // Field order matters: the ring is dropped before the buffer ring (in
    // `conns`) its ops may still select from.
    ring: Ring,
    conns: Connections,
    ctx: Ctx,
    /// The cache that tells cheaply whether a newer plan than `ctx.plan`
    /// was published.
    plans: arc_swap::Cache<Arc<ArcSwap<Plan>>, Arc<Plan>>,
    listeners: Listeners,
    wake: Arc<WakeFd>,
    lifecycle: Lifecycle,
    /// At most one EMFILE/ENFILE line per second.
    accept_errors: LogLimit,
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
        let mode = match shared.settings.recv_mode {
            Some(mode) => mode,
            None => ring
                .probe_recv_limit(&mut bufs)
                .map_err(WorkerError::Ring)?,
        };
        if id == 0 {
            tracing::info!(recv_mode = ?mode, "copy path receive mode");
        }
        let pipes = PipePool::new(
            shared.settings.pipe_size,
            PIPE_POOL_KEEP,
            shared.budget.pipes_per_worker,
        );
        let recv = RecvConfig {
            mode,
            buffer_size: shared.settings.buffer_size,
        };
        let mut plans = arc_swap::Cache::new(Arc::clone(&shared.plan));
        let plan = Arc::clone(plans.load());
        let listeners = Listeners::new(listeners, |a| metrics.listener(a));
        let seed =
            (id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(std::process::id());
        let ctx = Ctx {
            id,
            balancer: Balancer::new(&plan, seed),
            plan,
            rng: seed | 1,
            shared,
            metrics,
            access_log,
            status,
            cap_reached: LogLimit::default(),
            socket_errors: LogLimit::default(),
            sni_errors: LogLimit::default(),
            pause_accepting: None,
        };
        let worker = Worker {
            id,
            ring,
            conns: Connections::new(bufs, recv, pipes),
            ctx,
            plans,
            listeners,
            wake,
            lifecycle: Lifecycle::Serving,
            accept_errors: LogLimit::default(),
        };
        // Reported before the supervisor hears the worker is ready, so that
        // `/ready` never sees a started worker without its plan.
        let bound: Vec<bool> = worker
            .ctx
            .plan
            .table
            .listeners
            .iter()
            .map(|l| worker.listeners.find_open(l.address).is_some())
            .collect();
        worker.report(&bound);
        Ok(worker)
    }

    /// Serve until told to stop and every connection is closed.
    pub fn run(mut self) -> Result<(), WorkerError> {
        self.ring.poll(self.wake.as_fd(), libc::POLLIN, token::WAKE);
        for i in 0..self.listeners.len() {
            self.steer(i);
        }
        let mut cqes = Vec::with_capacity(256);
        let mut next_tick = Instant::now() + TICK;
        loop {
            self.ring.submit_and_wait(TICK).map_err(WorkerError::Ring)?;
            cqes.clear();
            self.ring.drain(&mut cqes);
            for cqe in &cqes {
                self.dispatch(*cqe);
            }
            self.conns.feed_starved(&mut self.ctx, &mut self.ring);
            self.after_connections();
            self.conns.publish_held(&self.ctx);
            let now = Instant::now();
            if now >= next_tick {
                self.conns.tick(&mut self.ctx, &mut self.ring, now);
                self.after_connections();
                self.steer_all(now);
                next_tick = now + TICK;
            }
            if self.lifecycle != Lifecycle::Serving && self.conns.live() == 0 {
                return Ok(());
            }
        }
    }

    fn dispatch(&mut self, cqe: Cqe) {
        match token::decode(cqe.user_data) {
            Event::Wake => self.on_wake(),
            Event::StopAccept => {}
            Event::Accept { listener } => self.on_accept(listener as usize, cqe),
            Event::Conn(t) => {
                self.conns
                    .on_completion(&mut self.ctx, &mut self.ring, t, cqe);
                self.after_connections();
            }
            // No upstream socket outlives its connection yet (the pool
            // comes with HTTP keep-alive): nothing submits these.
            Event::Pool { .. } | Event::Unknown(_) => tracing::warn!(
                worker = self.id,
                user_data = cqe.user_data,
                "completion with an unknown token"
            ),
        }
    }

    /// What connections asked of the listeners: a pause after ringway ran
    /// out of descriptors, or accepting again now that slots were freed.
    fn after_connections(&mut self) {
        if let Some(until) = self.ctx.pause_accepting.take() {
            self.listeners.pause(&mut self.ring, until);
        }
        if std::mem::take(&mut self.conns.freed) {
            self.steer_all(Instant::now());
        }
    }

    /// The room under the process connection cap.
    fn room(&self) -> Room {
        let budget = &self.ctx.shared.budget;
        let open = self.ctx.shared.open.load(Ordering::Relaxed);
        Room {
            free: budget.max_connections.saturating_sub(open),
            burst: budget
                .burst_per_listener
                .saturating_mul(self.listeners.listening()),
        }
    }

    /// Steer listener entry `i`'s accepts (only while serving).
    fn steer(&mut self, i: usize) {
        if self.lifecycle == Lifecycle::Serving {
            let room = self.room();
            self.listeners.steer(i, &mut self.ring, room);
        }
    }

    fn steer_all(&mut self, now: Instant) {
        if self.lifecycle == Lifecycle::Serving {
            let room = self.room();
            self.listeners.steer_all(&mut self.ring, room, now);
        }
    }

    fn on_wake(&mut self) {
        self.wake.drain();
        if self.ctx.shared.stop.load(Ordering::Acquire) {
            self.stop();
            return;
        }
        if self.ctx.shared.draining.load(Ordering::Acquire) && self.lifecycle == Lifecycle::Serving
        {
            self.lifecycle = Lifecycle::Draining;
            for i in 0..self.listeners.len() {
                if self.listeners.get(i).is_some_and(|e| e.is_open()) {
                    self.close_listener(i);
                }
            }
            self.conns.wind_down(&mut self.ctx, &mut self.ring);
            if self.id == 0 {
                tracing::info!(
                    open = self.ctx.shared.open.load(Ordering::Relaxed),
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
            self.listeners.wind_down(i, &mut self.ring, After::Stop);
        }
        self.conns.drain_all(&mut self.ctx, &mut self.ring);
    }

    /// Take a newly published plan: listeners for addresses it no longer
    /// has are closed, listeners for new addresses opened, the others keep
    /// their sockets. Connections keep the plan they started with.
    fn refresh_plan(&mut self) {
        let current = self.plans.load();
        if Arc::ptr_eq(current, &self.ctx.plan) {
            return;
        }
        self.ctx.plan = Arc::clone(current);
        self.ctx.balancer = Balancer::succeed(&self.ctx.balancer, &self.ctx.plan);
        let plan = Arc::clone(&self.ctx.plan);
        self.conns.retain_pool(&mut self.ctx, &plan);
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
        let gauge = self.ctx.metrics.listener(l.address);
        let i = self.listeners.place(entry, gauge);
        self.steer(i);
        true
    }

    /// Tell the control plane which plan this worker serves, whether every
    /// listener of it is bound (`/ready`), and what it has ejected.
    fn report(&self, bound: &[bool]) {
        let missing = bound.iter().filter(|b| !**b).count();
        let ejections = self.ctx.balancer.ejections(Instant::now());
        self.ctx
            .status
            .report(&self.ctx.plan, missing, self.listeners.closing(), ejections);
    }

    fn close_listener(&mut self, i: usize) {
        self.listeners.wind_down(i, &mut self.ring, After::Stop);
        let Some(entry) = self.listeners.get_mut(i) else {
            return;
        };
        entry.listener.socket = None;
        if self.id == 0 && self.lifecycle == Lifecycle::Serving {
            tracing::info!(listener = %entry.listener.name, address = %entry.listener.address, generation = self.ctx.plan.table.generation, "listener closed: not in the new configuration");
        }
    }

    fn on_accept(&mut self, i: usize, cqe: Cqe) {
        let Some(entry) = self.listeners.get(i) else {
            return;
        };
        let open = entry.is_open();
        if !cqe.more() && self.listeners.accept_ended(i) {
            // A closed listener stopped accepting: tell the control plane,
            // whose reload answer waits for it.
            self.ctx.status.closing(self.listeners.closing());
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
            let until = Instant::now() + ACCEPT_PAUSE;
            self.listeners.pause(&mut self.ring, until);
            return;
        } else if cqe.res != -libc::ECANCELED {
            self.accept_failed(i, cqe.res);
        }
        self.steer(i);
    }

    /// An accept of entry `i` failed with `-res`: counted and logged (out
    /// of descriptors at most once a second).
    fn accept_failed(&mut self, i: usize, res: i32) {
        self.ctx.metrics.accept_error();
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

    /// A new downstream connection on listener entry `i`.
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
        let plan = Arc::clone(&self.ctx.plan);
        self.conns.open(
            &mut self.ctx,
            &mut self.ring,
            plan,
            listener,
            gauge,
            downstream,
            peer,
        );
        self.after_connections();
    }
}
