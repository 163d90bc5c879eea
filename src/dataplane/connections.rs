//! A worker's connections: the slab of slots, the provided buffers and
//! pipes their bytes move through, their deadlines, and the loop that
//! performs what each session asks ([`Io`]) until it asks for nothing more:
//! ring operations through `exec.rs`, socket calls through the slot,
//! reservations through `admission.rs`, connects through `upstream.rs`.
//! Knows nothing of listeners; what a connection needs from them (room
//! under the cap was freed) is left in [`Connections::freed`] for the
//! worker.
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use crate::metrics::worker::add;

use super::admission;
use super::bufring::BufRing;
use super::checkout;
use super::context::Ctx;
use super::exec::{self, RecvConfig, Uring};
use super::forward;
use super::io::{CloseReason, Completion, Io};
use super::meter::Meter;
use super::pipe::PipePool;
use super::plan::Plan;
use super::pool::Pool;
use super::request_log;
use super::ring::{Cqe, Ring};
use super::session::Session;
use super::slab::{Key, Slab};
use super::slot::Slot;
use super::timers::{Due, Timers};
use super::token::{Dir, Op, Token};
use super::upstream;

/// Pooled pipes are closed after this long without use.
const PIPE_IDLE: Duration = Duration::from_secs(1);

pub(super) struct Connections {
    /// The provided buffers (the worker's ring, dropped first, may still
    /// select from them).
    pub(super) bufs: BufRing,
    recv: RecvConfig,
    slots: Slab<Slot>,
    pipes: PipePool,
    /// Sessions waiting for provided buffers, in arrival order.
    starved: VecDeque<(Key, Dir)>,
    /// The I/O being performed for one slot, and what its session asked
    /// for meanwhile.
    actions: VecDeque<Io>,
    scratch: Vec<Io>,
    /// Connection deadlines (`timers.rs`), and those due at this tick.
    timers: Timers,
    due: Vec<Due>,
    next_pipe_trim: Instant,
    /// Idle upstream HTTP connections.
    pool: Pool,
    /// A slot was freed since the worker last looked: there may be room
    /// under the connection cap to accept again.
    pub(super) freed: bool,
}

impl Connections {
    pub(super) fn new(bufs: BufRing, recv: RecvConfig, pipes: PipePool) -> Connections {
        Connections {
            bufs,
            recv,
            slots: Slab::default(),
            pipes,
            starved: VecDeque::new(),
            actions: VecDeque::new(),
            scratch: Vec::new(),
            timers: Timers::default(),
            due: Vec::new(),
            next_pipe_trim: Instant::now() + PIPE_IDLE,
            pool: Pool::default(),
            freed: false,
        }
    }

    /// Publish what the connections hold: provided buffers and lent pipes.
    pub(super) fn publish_held(&self, ctx: &Ctx) {
        let pipes = self.pipes.lent() as u64;
        ctx.metrics.held(u64::from(self.bufs.held()), pipes);
    }

    /// Open connections.
    pub(super) fn live(&self) -> usize {
        self.slots.live()
    }

    /// A connection accepted on listener `listener` of `plan` (its index in
    /// the table; `gauge` is its active-connections gauge): a slot with the
    /// session the listener's kind calls for.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn open(
        &mut self,
        ctx: &mut Ctx,
        ring: &mut Ring,
        plan: Arc<Plan>,
        listener: usize,
        gauge: Arc<AtomicI64>,
        downstream: OwnedFd,
        peer: SocketAddr,
    ) {
        let now = Instant::now();
        admission::admit(ctx, now);
        let settings = &ctx.shared.settings;
        let session = Session::open(&plan, listener, peer, settings, now, &mut self.scratch);
        gauge.fetch_add(1, Ordering::Relaxed);
        let meter = Meter::new(gauge);
        let slot = Slot::new(session, downstream, peer, listener, plan, meter);
        let key = self.slots.insert(slot);
        self.perform(ctx, ring, key);
    }

    /// A completion of one of a connection's operations.
    pub(super) fn on_completion(&mut self, ctx: &mut Ctx, ring: &mut Ring, t: Token, cqe: Cqe) {
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
                add(&ctx.metrics.cluster(name).connect_timeouts, 1);
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
        self.perform(ctx, ring, key);
    }

    /// Sessions waiting for provided buffers get them back in arrival order.
    pub(super) fn feed_starved(&mut self, ctx: &mut Ctx, ring: &mut Ring) {
        while self.bufs.available() > 0 {
            let Some((key, dir)) = self.starved.pop_front() else {
                return;
            };
            if let Some(slot) = self.slots.get_mut(key) {
                slot.session.on_buffers(dir, &mut self.scratch);
                self.perform(ctx, ring, key);
            }
        }
    }

    /// A new plan: idle upstream connections it no longer routes to close.
    pub(super) fn retain_pool(&mut self, ctx: &mut Ctx, plan: &Plan) {
        checkout::retain(ctx, &mut self.pool, plan);
    }

    /// The process started draining: sessions that can end at a message
    /// boundary do so ([`Session::wind_down`]).
    pub(super) fn wind_down(&mut self, ctx: &mut Ctx, ring: &mut Ring) {
        for key in self.slots.keys() {
            if let Some(slot) = self.slots.get_mut(key) {
                slot.session.wind_down(&mut self.scratch);
                self.perform(ctx, ring, key);
            }
        }
    }

    /// The worker stops: every session ends (`DR`).
    pub(super) fn drain_all(&mut self, ctx: &mut Ctx, ring: &mut Ring) {
        checkout::close_all(ctx, &mut self.pool);
        for key in self.slots.keys() {
            if let Some(slot) = self.slots.get_mut(key) {
                slot.session.drain(&mut self.scratch);
                self.perform(ctx, ring, key);
            }
        }
    }

    /// Timers: pooled pipes trimmed, and only the sessions whose deadline
    /// is due ticked (idle ones cost nothing).
    pub(super) fn tick(&mut self, ctx: &mut Ctx, ring: &mut Ring, now: Instant) {
        if now >= self.next_pipe_trim {
            self.pipes.trim();
            self.next_pipe_trim = now + PIPE_IDLE;
        }
        if !self.pool.is_empty() {
            checkout::expire(ctx, &mut self.pool, now);
        }
        let mut due = std::mem::take(&mut self.due);
        self.timers.take_due(now, &mut due);
        for d in due.drain(..) {
            let key = due_key(&d);
            let Some(slot) = self.slots.get_mut(key).filter(|s| s.deadline == Some(d.at)) else {
                continue; // freed, reused or rescheduled since
            };
            slot.deadline = None;
            slot.session.on_tick(now, &mut self.scratch);
            self.perform(ctx, ring, key);
        }
        self.due = due;
        let slots = &self.slots;
        self.timers.compact(slots.live(), |d| {
            slots
                .get(due_key(d))
                .is_some_and(|s| s.deadline == Some(d.at))
        });
    }

    /// Perform the I/O the session of `key` asked for (in `scratch`), and
    /// what follows from it, then count its bytes, schedule its deadline
    /// and free the slot if it is done.
    fn perform(&mut self, ctx: &mut Ctx, ring: &mut Ring, key: Key) {
        self.actions.extend(self.scratch.drain(..));
        while let Some(io) = self.actions.pop_front() {
            self.act(ctx, ring, key, io);
            self.actions.extend(self.scratch.drain(..));
        }
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        slot.meter.advance(slot.session.moved());
        self.reschedule(key);
        self.release_if_done(ctx, key);
    }

    fn act(&mut self, ctx: &mut Ctx, ring: &mut Ring, key: Key, io: Io) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        let mut uring = Uring {
            ring,
            bufs: &self.bufs,
        };
        let fds = exec::sockets(&slot.downstream, slot.upstream.as_ref().map(|u| &u.socket));
        if exec::submit_io(&mut uring, fds, &mut slot.inflight, key, io, self.recv) {
            return;
        }
        let out = &mut self.scratch;
        match io {
            Io::Reserve(route) => {
                let reserved = admission::reserve(ctx, &slot.plan, route, slot.peer);
                slot.session.on_reserved(reserved, Instant::now(), out);
            }
            Io::Connect => upstream::connect(ctx, &mut uring, slot, key, out),
            Io::Connected => upstream::connected(ctx, slot, out),
            Io::GiveBack(bid) => self.bufs.give_back(bid),
            Io::WaitBuffers(dir) => self.starved.push_back((key, dir)),
            Io::Pump {
                dir,
                in_pipe,
                read,
                max,
            } => {
                let written = pump(&mut self.pipes, slot, dir, in_pipe, read, max, out);
                ctx.metrics.spliced(dir.index(), written);
            }
            Io::Finish(_) => finish(ctx, &mut uring, slot, key),
            Io::Route => {
                let current = Arc::clone(&ctx.plan);
                let id = [ctx.random(), ctx.random()];
                let now = Instant::now();
                if let Some(plan) = slot.session.on_route(&current, id, now, out) {
                    slot.plan = plan;
                }
            }
            Io::Checkout { fresh } => {
                checkout::checkout(ctx, &mut self.pool, &mut uring, slot, key, fresh, out);
            }
            Io::Reject { status, detail } => request_log::reject(ctx, slot, status, detail),
            Io::Release(how) => checkout::release(ctx, &mut self.pool, slot, how),
            Io::Leftover {
                dir: _,
                bid,
                offset,
                len,
            } => {
                let data = self.bufs.filled(bid, offset + len);
                let data = data.get(offset as usize..).unwrap_or_default();
                slot.session.on_leftover(bid, data, Instant::now(), out);
            }
            Io::Report => request_log::report(ctx, slot),
            Io::SendOwned(_)
            | Io::EnterSplice(_)
            | Io::SinkStalled(_)
            | Io::Shutdown(_)
            | Io::CheckSent(_)
            | Io::Abort(_) => slot.socket_call(io, out),
            Io::Recv { .. }
            | Io::RecvOnce(_)
            | Io::CancelRecv(_)
            | Io::Send { .. }
            | Io::PollIn(_)
            | Io::PollOut(_) => {}
        }
    }

    /// Schedule the session's next deadline when it is earlier than the
    /// one it is scheduled at (a later one is found when that fires).
    fn reschedule(&mut self, key: Key) {
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

    /// Free a finished slot once no op of it is in flight.
    fn release_if_done(&mut self, ctx: &mut Ctx, key: Key) {
        let done = self
            .slots
            .get(key)
            .is_some_and(|s| s.session.is_finished() && s.inflight.is_idle());
        if let Some(slot) = done.then(|| self.slots.remove(key)).flatten() {
            admission::release(ctx, &mut self.pipes, slot);
            self.freed = true;
        }
    }
}

fn due_key(d: &Due) -> Key {
    Key {
        index: d.index,
        generation: d.generation,
    }
}

/// Splice the direction's bytes now, through its pipe or a pooled one.
fn pump(
    pipes: &mut PipePool,
    slot: &mut Slot,
    dir: Dir,
    in_pipe: u32,
    read: bool,
    max: u64,
    out: &mut Vec<Io>,
) -> u64 {
    let (Some(source), Some(sink)) = (slot.fd(dir.source()), slot.fd(dir.sink())) else {
        return 0;
    };
    let (source, sink) = (source.as_raw_fd(), sink.as_raw_fd());
    let Some(pipe) = slot.pipes[dir.index()].take().or_else(|| pipes.take()) else {
        slot.session.on_no_pipe(dir, out);
        return 0;
    };
    let result = forward::pump(&pipe, source, sink, in_pipe, read, max);
    if result.in_pipe == 0 {
        pipes.give_back(pipe);
    } else {
        slot.pipes[dir.index()] = Some(pipe);
    }
    slot.session.on_pump(dir, result, Instant::now(), out);
    result.written
}

/// The session is over ([`Io::Finish`]): a last failed attempt counts
/// against its endpoint, and what is in flight is cancelled. It is counted
/// and logged when freed, once sends that complete after the cancel have
/// been counted too.
fn finish(ctx: &mut Ctx, ring: &mut Uring<'_>, slot: &mut Slot, key: Key) {
    let last_attempt = slot
        .session
        .close()
        .filter(|c| c.reason == CloseReason::ConnectFailed)
        .and(slot.upstream.as_ref())
        .map(|u| (u.cluster, u.endpoint()));
    if let Some((cluster, endpoint)) = last_attempt {
        let plan = Arc::clone(&slot.plan);
        upstream::connect_failed(ctx, &plan, cluster, endpoint, Instant::now());
    }
    let fds = exec::sockets(&slot.downstream, slot.upstream.as_ref().map(|u| &u.socket));
    exec::cancel_all(ring, fds, &mut slot.inflight, key);
}
