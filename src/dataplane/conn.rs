//! The connection state machine, sans-io: completions and ticks in,
//! [`Action`]s out. No syscalls and no clock here; the worker performs the
//! actions and passes the time in.
//!
//! ```text
//! Connecting --connect ok--> Forwarding{to_upstream, to_downstream} --both halves Done--> Finished
//!     |  \--fail, attempts left--> Connecting (next endpoint)
//!     \--fail, none left / timer--> Finished        Forwarding --reset, timer--> Finished
//! ```
//! `Finished` emits [`Action::Finish`] once; the worker then cancels what is
//! still in flight and frees the slot only when nothing is.

use std::time::{Duration, Instant};

use super::forward::Pump;
use super::half::{Flow, Half, Outcome};
use super::token::{Dir, Op, Side};

/// What the worker must do for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Close the previous upstream socket if any, pick an endpoint, open a
    /// socket and submit CONNECT linked to its timeout. When that is
    /// impossible the worker calls [`Connection::on_connect_unavailable`].
    Connect,
    /// The upstream accepted: count it for the endpoint.
    Connected,
    ArmRecv(Dir),
    CancelRecv(Dir),
    /// Send `len` bytes of buffer `bid` from `offset` to the direction's sink.
    Send {
        dir: Dir,
        bid: u16,
        offset: u32,
        len: u32,
    },
    /// Return a provided buffer to the ring.
    GiveBack(u16),
    /// The ring ran out of buffers: call [`Connection::on_buffers`] when some
    /// came back.
    WaitBuffers(Dir),
    /// Make both sockets non-blocking (the splice path needs it).
    EnterSplice(Dir),
    /// POLL_ADD POLLIN on the direction's source.
    Readable(Dir),
    /// POLL_ADD POLLOUT on the direction's sink.
    Writable(Dir),
    /// Run [`super::forward::pump`] now and report with [`Connection::on_pump`].
    Pump { dir: Dir, in_pipe: u32, read: bool },
    /// SHUTDOWN(SHUT_WR) on the direction's sink.
    Shutdown(Dir),
    /// Make the close of this socket send a RST (SO_LINGER 0).
    Abort(Side),
    /// The connection is over: cancel what is in flight, then close both
    /// sockets and free the slot once nothing is.
    Finish(Close),
}

/// Why a connection ended (the access log's termination flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Both directions finished (`-`).
    Done,
    /// No endpoint accepted the connection (`UF`).
    ConnectFailed,
    /// The cluster or the process is at its connection limit (`UO`).
    Overflow,
    /// The cluster has no usable endpoint (`UH`).
    NoHealthyUpstream,
    /// No route for this listener (`NR`).
    NoRoute,
    /// No bytes either way for the route's idle timeout (`IT`).
    IdleTimeout,
    /// The route's maximum connection duration passed (`MD`).
    MaxDuration,
    /// The process is stopping (`DR`).
    Drained,
    /// The downstream reset (`DC`).
    DownstreamReset,
    /// The upstream reset (`UC`).
    UpstreamReset,
}

impl CloseReason {
    /// The access log's termination flag.
    pub fn flag(self) -> &'static str {
        match self {
            CloseReason::Done => "-",
            CloseReason::ConnectFailed => "UF",
            CloseReason::Overflow => "UO",
            CloseReason::NoHealthyUpstream => "UH",
            CloseReason::NoRoute => "NR",
            CloseReason::IdleTimeout => "IT",
            CloseReason::MaxDuration => "MD",
            CloseReason::Drained => "DR",
            CloseReason::DownstreamReset => "DC",
            CloseReason::UpstreamReset => "UC",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close {
    pub reason: CloseReason,
    /// Bytes written to the upstream and to the downstream.
    pub to_upstream: u64,
    pub to_downstream: u64,
}

/// Per-connection limits, from the route, the cluster and the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub idle_timeout: Option<Duration>,
    pub max_duration: Option<Duration>,
    pub connect_attempts: u32,
    /// Bytes after which a direction moves to the splice path.
    pub splice_after: u64,
}

#[derive(Debug)]
enum Phase {
    /// CONNECT (attempt number `attempt`, from 1) is in flight.
    Connecting { attempt: u32 },
    Forwarding { halves: [Half; 2] },
    /// Over; `sending` are the buffers of sends still in flight, given back
    /// when those complete (never earlier: the kernel still reads them).
    Finished { sending: [Option<u16>; 2] },
}

/// The completion of one operation, as the worker decoded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    pub op: Op,
    pub res: i32,
    /// The provided buffer a recv filled.
    pub bid: Option<u16>,
    /// Whether a multishot op stays armed.
    pub more: bool,
}

#[derive(Debug)]
pub struct Connection {
    phase: Phase,
    limits: Limits,
    opened: Instant,
    last_active: Instant,
}

impl Connection {
    /// A connection just accepted: asks for the first connect.
    pub fn open(limits: Limits, now: Instant, out: &mut Vec<Action>) -> Connection {
        out.push(Action::Connect);
        Connection {
            phase: Phase::Connecting { attempt: 1 },
            limits,
            opened: now,
            last_active: now,
        }
    }

    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Finished { .. })
    }

    pub fn opened(&self) -> Instant {
        self.opened
    }

    pub fn on_completion(&mut self, c: Completion, now: Instant, out: &mut Vec<Action>) {
        match &mut self.phase {
            Phase::Connecting { attempt } => match c.op {
                Op::Connect if c.res >= 0 => {
                    out.push(Action::Connected);
                    let halves = Dir::BOTH.map(|d| Half::start(d, self.limits.splice_after, out));
                    self.phase = Phase::Forwarding { halves };
                    self.last_active = now;
                }
                Op::Connect => {
                    if *attempt < self.limits.connect_attempts {
                        *attempt += 1;
                        out.push(Action::Connect);
                    } else {
                        self.finish(CloseReason::ConnectFailed, out);
                    }
                }
                _ => {}
            },
            Phase::Forwarding { halves } => {
                let outcome = match c.op {
                    Op::Recv(d) => halves[d.index()].on_recv(c.res, c.bid, c.more, out),
                    Op::Send(d) => halves[d.index()].on_send(c.res, out),
                    Op::Readable(d) | Op::Writable(d) => halves[d.index()].on_ready(c.res, out),
                    Op::Shutdown(d) => {
                        halves[d.index()].on_shutdown();
                        Outcome::Continue
                    }
                    Op::Connect | Op::ConnectTimeout | Op::Cancel(_) | Op::CancelRecv(_) => {
                        Outcome::Continue
                    }
                };
                self.after(outcome, now, out);
            }
            Phase::Finished { sending, .. } => {
                if let Some(bid) = c.bid {
                    out.push(Action::GiveBack(bid));
                }
                if let Op::Send(d) = c.op {
                    if let Some(bid) = sending[d.index()].take() {
                        out.push(Action::GiveBack(bid));
                    }
                }
            }
        }
    }

    /// The worker could not start a connect (no usable endpoint, overflow,
    /// no descriptor).
    pub fn on_connect_unavailable(&mut self, reason: CloseReason, out: &mut Vec<Action>) {
        if let Phase::Connecting { .. } = self.phase {
            self.finish(reason, out);
        }
    }

    /// The result of a pump the worker ran after [`Action::Pump`].
    pub fn on_pump(&mut self, dir: Dir, pump: Pump, now: Instant, out: &mut Vec<Action>) {
        if let Phase::Forwarding { halves } = &mut self.phase {
            let outcome = halves[dir.index()].on_pump(pump, out);
            self.after(outcome, now, out);
        }
    }

    /// The worker had no pipe for a pump: the direction goes back to copying.
    pub fn on_no_pipe(&mut self, dir: Dir, out: &mut Vec<Action>) {
        if let Phase::Forwarding { halves } = &mut self.phase {
            halves[dir.index()].on_no_pipe(out);
        }
    }

    /// Buffers came back to the ring after [`Action::WaitBuffers`].
    pub fn on_buffers(&mut self, dir: Dir, out: &mut Vec<Action>) {
        if let Phase::Forwarding { halves } = &mut self.phase {
            halves[dir.index()].on_buffers(out);
        }
    }

    /// Timers: idle timeout (bytes either way count) and maximum duration.
    pub fn on_tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.is_finished() {
            return;
        }
        if let Some(max) = self.limits.max_duration {
            if now.saturating_duration_since(self.opened) >= max {
                self.finish(CloseReason::MaxDuration, out);
                return;
            }
        }
        if let (Some(idle), Phase::Forwarding { .. }) = (self.limits.idle_timeout, &self.phase) {
            if now.saturating_duration_since(self.last_active) >= idle {
                self.finish(CloseReason::IdleTimeout, out);
            }
        }
    }

    /// The process is stopping.
    pub fn drain(&mut self, out: &mut Vec<Action>) {
        if !self.is_finished() {
            self.finish(CloseReason::Drained, out);
        }
    }

    /// Keep-open policy, and the end of the connection on a reset.
    fn after(&mut self, outcome: Outcome, now: Instant, out: &mut Vec<Action>) {
        let Phase::Forwarding { halves } = &self.phase else {
            return;
        };
        match outcome {
            Outcome::Continue => {}
            Outcome::Active => self.last_active = now,
            Outcome::Reset(side) => {
                // A reset from one side resets the other.
                out.push(Action::Abort(side.other()));
                let reason = match side {
                    Side::Downstream => CloseReason::DownstreamReset,
                    Side::Upstream => CloseReason::UpstreamReset,
                };
                self.finish(reason, out);
                return;
            }
        }
        match (halves[0].flow(), halves[1].flow()) {
            (Flow::Done, Flow::Done) => self.finish(CloseReason::Done, out),
            (Flow::Open | Flow::Eof | Flow::ShuttingDown | Flow::Done, _) => {}
        }
    }

    fn finish(&mut self, reason: CloseReason, out: &mut Vec<Action>) {
        let (to_upstream, to_downstream, sending) = match &self.phase {
            Phase::Forwarding { halves } => {
                for bid in halves.iter().flat_map(Half::idle_buffers) {
                    out.push(Action::GiveBack(bid));
                }
                (
                    halves[0].moved(),
                    halves[1].moved(),
                    [halves[0].sending(), halves[1].sending()],
                )
            }
            Phase::Connecting { .. } | Phase::Finished { .. } => (0, 0, [None, None]),
        };
        let close = Close {
            reason,
            to_upstream,
            to_downstream,
        };
        self.phase = Phase::Finished { sending };
        out.push(Action::Finish(close));
    }
}
