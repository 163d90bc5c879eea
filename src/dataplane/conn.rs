//! The connection state machine, sans-io: completions and ticks in,
//! [`Action`]s out. No syscalls and no clock here; the worker performs the
//! actions and passes the time in.
//!
//! ```text
//! ReadingHello --hello complete--> (Route) --routed--> Connecting    (TLS passthrough only)
//!     \--timeout, EOF, reset, no route--> Finished
//! Connecting --connect ok--> Forwarding{to_upstream, to_downstream} --both halves Done--> Finished
//!     |  \--fail, attempts left--> Connecting (next endpoint)
//!     \--fail, none left / timer--> Finished        Forwarding --reset, timer--> Finished
//! ```
//! A side that resets while its half holds bytes read from it: those bytes
//! are written first, then the other side is reset once its socket has
//! sent them (`Flow::Resetting` → `Flow::Reset` → [`Action::CheckSent`]).
//! `Finished` emits [`Action::Finish`] once; the worker then cancels what is
//! still in flight and frees the slot only when nothing is.

use std::time::{Duration, Instant};

use crate::sni::{self, Peek};

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
    /// The direction's sink pushed back (a full socket) for the first time:
    /// the worker may cap what the source socket holds in the kernel
    /// meanwhile (`forward::STALLED_UPSTREAM_RCVBUF`).
    SinkStalled(Dir),
    /// Run [`super::forward::pump`] now and report with [`Connection::on_pump`].
    Pump {
        dir: Dir,
        in_pipe: u32,
        read: bool,
    },
    /// SHUTDOWN(SHUT_WR) on the direction's sink.
    Shutdown(Dir),
    /// The direction's source reset and everything read from it was
    /// written: call [`Connection::on_sent`] once the sink's socket has sent
    /// it all (SIOCOUTQ 0); asked again on every tick until then.
    CheckSent(Dir),
    /// Make the close of this socket send a RST (SO_LINGER 0).
    Abort(Side),
    /// The connection is over: cancel what is in flight, then close both
    /// sockets and free the slot once nothing is.
    Finish(Close),
    /// TLS passthrough: submit one single-shot recv of the downstream into a
    /// provided buffer (token `Op::Recv(Dir::ToUpstream)`).
    RecvHello,
    /// Pass `len` bytes of buffer `bid` to [`Connection::on_hello_bytes`],
    /// then give the buffer back.
    TakeHello {
        bid: u16,
        len: u32,
    },
    /// The ClientHello is read: look up [`Connection::server_name`] in the
    /// listener's SNI table, then call [`Connection::on_routed`] or
    /// [`Connection::on_route_failed`].
    Route,
    /// Send what is left of the direction's prefix (the bytes read before
    /// routing) with a non-blocking send(2) now, and report it as an
    /// `Op::Send(dir)` completion (nothing stays in flight).
    SendPrefix(Dir),
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
    /// ringway itself ran out of a resource for the connection: no
    /// descriptor (EMFILE/ENFILE) or socket memory for its upstream socket
    /// (`OM`, Envoy's flag for the proxy protecting itself; HAProxy logs
    /// `R`, "a resource on the proxy has been exhausted").
    LocalResource,
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
            CloseReason::LocalResource => "OM",
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

/// How long a TLS passthrough connection may take to send its ClientHello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// What the ClientHello said about the server name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerName {
    Name(String),
    /// A ClientHello without SNI.
    Absent,
    /// Not a TLS ClientHello: routed like a client without SNI.
    NotTls(&'static str),
    /// A ClientHello larger than [`sni::MAX_CLIENT_HELLO`]: closed, never
    /// routed.
    TooLarge,
}

impl ServerName {
    /// The name to look up in an SNI table.
    pub fn lookup_key(&self) -> Option<&str> {
        match self {
            ServerName::Name(n) => Some(n),
            ServerName::Absent | ServerName::NotTls(_) | ServerName::TooLarge => None,
        }
    }

    /// The name for the access log's SNI field: a host name (never spaces
    /// or control characters, see `sni.rs`), or `None` for `-`.
    pub fn logged(&self) -> Option<&str> {
        match self {
            ServerName::Name(n) => Some(n),
            ServerName::Absent | ServerName::NotTls(_) | ServerName::TooLarge => None,
        }
    }
}

impl std::fmt::Display for ServerName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerName::Name(n) => f.write_str(n),
            ServerName::Absent => f.write_str("(no SNI)"),
            ServerName::NotTls(why) => write!(f, "(not TLS: {why})"),
            ServerName::TooLarge => f.write_str("(ClientHello too large)"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HelloRecv {
    /// The single-shot recv is in flight.
    Armed,
    /// Its buffer is being copied ([`Action::TakeHello`]).
    Taking,
    /// The buffer ring ran dry; waiting for buffers.
    Starved,
}

#[derive(Debug)]
enum Phase {
    /// TLS passthrough: reading the ClientHello; `hello` holds every byte
    /// read so far (at most [`sni::MAX_CLIENT_HELLO`] plus one buffer).
    ReadingHello {
        hello: Vec<u8>,
        recv: HelloRecv,
    },
    /// The ClientHello is complete; the worker is routing it.
    Routing {
        hello: Vec<u8>,
        name: ServerName,
    },
    /// CONNECT (attempt number `attempt`, from 1) is in flight.
    Connecting {
        attempt: u32,
        /// Bytes read before the connect, sent upstream first.
        prefix: Vec<u8>,
    },
    Forwarding {
        halves: [Half; 2],
    },
    /// Over; `sending` are the buffers of sends still in flight, given back
    /// when those complete (never earlier: the kernel still reads them).
    /// `moved` keeps counting what those sends wrote.
    Finished {
        reason: CloseReason,
        sending: [Option<u16>; 2],
        moved: [u64; 2],
    },
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
            phase: Phase::Connecting {
                attempt: 1,
                prefix: Vec::new(),
            },
            limits,
            opened: now,
            last_active: now,
        }
    }

    /// A connection just accepted on a TLS passthrough listener: reads the
    /// ClientHello first. `limits` apply until [`Connection::on_routed`]
    /// replaces them with the route's.
    pub fn open_tls(limits: Limits, now: Instant, out: &mut Vec<Action>) -> Connection {
        out.push(Action::RecvHello);
        Connection {
            phase: Phase::ReadingHello {
                hello: Vec::new(),
                recv: HelloRecv::Armed,
            },
            limits,
            opened: now,
            last_active: now,
        }
    }

    /// The server name of a ClientHello being routed ([`Action::Route`]).
    pub fn server_name(&self) -> Option<&ServerName> {
        match &self.phase {
            Phase::Routing { name, .. } => Some(name),
            Phase::ReadingHello { .. }
            | Phase::Connecting { .. }
            | Phase::Forwarding { .. }
            | Phase::Finished { .. } => None,
        }
    }

    /// Bytes of a ClientHello (copied out of a provided buffer).
    pub fn on_hello_bytes(&mut self, bytes: &[u8], out: &mut Vec<Action>) {
        let Phase::ReadingHello { hello, recv } = &mut self.phase else {
            return;
        };
        hello.extend_from_slice(bytes);
        let name = match sni::peek(hello) {
            Peek::NeedMore(_) => {
                *recv = HelloRecv::Armed;
                out.push(Action::RecvHello);
                return;
            }
            Peek::ServerName(Some(n)) => ServerName::Name(n),
            Peek::ServerName(None) => ServerName::Absent,
            Peek::NotTls(why) => ServerName::NotTls(why),
            Peek::TooLarge => ServerName::TooLarge,
        };
        let hello = std::mem::take(hello);
        self.phase = Phase::Routing { hello, name };
        out.push(Action::Route);
    }

    /// The worker routed the ClientHello: connect with the route's limits;
    /// the bytes read go upstream first.
    pub fn on_routed(&mut self, limits: Limits, out: &mut Vec<Action>) {
        let Phase::Routing { hello, .. } = &mut self.phase else {
            return;
        };
        let prefix = std::mem::take(hello);
        self.limits = limits;
        self.phase = Phase::Connecting { attempt: 1, prefix };
        out.push(Action::Connect);
    }

    /// The worker could not route the ClientHello (no match, overflow, no
    /// healthy upstream).
    pub fn on_route_failed(&mut self, reason: CloseReason, out: &mut Vec<Action>) {
        if let Phase::Routing { .. } = self.phase {
            self.finish(reason, out);
        }
    }

    /// What is left of the direction's prefix to send ([`Action::SendPrefix`]).
    pub fn prefix(&self, dir: Dir) -> Option<&[u8]> {
        match &self.phase {
            Phase::Forwarding { halves } => halves[dir.index()].prefix(),
            Phase::ReadingHello { .. }
            | Phase::Routing { .. }
            | Phase::Connecting { .. }
            | Phase::Finished { .. } => None,
        }
    }

    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Finished { .. })
    }

    /// Bytes written so far to the upstream and to the downstream.
    pub fn moved(&self) -> [u64; 2] {
        match &self.phase {
            Phase::Forwarding { halves } => [halves[0].moved(), halves[1].moved()],
            Phase::Finished { moved, .. } => *moved,
            Phase::ReadingHello { .. } | Phase::Routing { .. } | Phase::Connecting { .. } => [0, 0],
        }
    }

    /// How the connection ended, with every byte written, also by sends
    /// that completed after [`Action::Finish`]: final once nothing of it is
    /// in flight.
    pub fn close(&self) -> Option<Close> {
        match &self.phase {
            Phase::Finished { reason, moved, .. } => Some(Close {
                reason: *reason,
                to_upstream: moved[0],
                to_downstream: moved[1],
            }),
            Phase::ReadingHello { .. }
            | Phase::Routing { .. }
            | Phase::Connecting { .. }
            | Phase::Forwarding { .. } => None,
        }
    }

    pub fn opened(&self) -> Instant {
        self.opened
    }

    pub fn on_completion(&mut self, c: Completion, now: Instant, out: &mut Vec<Action>) {
        match &mut self.phase {
            Phase::ReadingHello { recv, .. } => {
                if c.op != Op::Recv(Dir::ToUpstream) {
                    return;
                }
                match (c.res, c.bid) {
                    (n, Some(bid)) if n > 0 => {
                        *recv = HelloRecv::Taking;
                        self.last_active = now;
                        out.push(Action::TakeHello {
                            bid,
                            len: n.unsigned_abs(),
                        });
                    }
                    (_, Some(bid)) => {
                        out.push(Action::GiveBack(bid));
                        out.push(Action::RecvHello);
                    }
                    // The client left before its ClientHello was complete.
                    (0, None) => self.finish(CloseReason::Done, out),
                    (e, None) if e == -libc::ENOBUFS => {
                        *recv = HelloRecv::Starved;
                        out.push(Action::WaitBuffers(Dir::ToUpstream));
                    }
                    (e, None) if e == -libc::EAGAIN || e == -libc::EINTR => {
                        out.push(Action::RecvHello);
                    }
                    (_, None) => self.finish(CloseReason::DownstreamReset, out),
                }
            }
            Phase::Routing { .. } => {
                debug_assert!(false, "completion while routing: {c:?}");
                if let Some(bid) = c.bid {
                    out.push(Action::GiveBack(bid));
                }
            }
            Phase::Connecting { attempt, prefix } => match c.op {
                Op::Connect if c.res >= 0 => {
                    out.push(Action::Connected);
                    let splice_after = self.limits.splice_after;
                    let to_upstream = Half::start_with_prefix(
                        Dir::ToUpstream,
                        splice_after,
                        std::mem::take(prefix),
                        out,
                    );
                    let to_downstream = Half::start(Dir::ToDownstream, splice_after, out);
                    let halves = [to_upstream, to_downstream];
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
            Phase::Finished { sending, moved, .. } => {
                if let Some(bid) = c.bid {
                    out.push(Action::GiveBack(bid));
                }
                if let Op::Send(d) = c.op {
                    if let Some(bid) = sending[d.index()].take() {
                        out.push(Action::GiveBack(bid));
                        // Written before the cancel reached it: counted.
                        if c.res > 0 {
                            moved[d.index()] += u64::from(c.res.unsigned_abs());
                        }
                    }
                }
            }
        }
    }

    /// The worker could not start a connect (no usable endpoint, overflow,
    /// no descriptor: [`CloseReason::LocalResource`]).
    pub fn on_connect_unavailable(&mut self, reason: CloseReason, out: &mut Vec<Action>) {
        if let Phase::Connecting { .. } = self.phase {
            self.finish(reason, out);
        }
    }

    /// The worker could not prepare the upstream (the PROXY header did not
    /// go out): the connection ends as an upstream reset.
    pub fn abort_upstream(&mut self, out: &mut Vec<Action>) {
        if let Phase::Forwarding { .. } = self.phase {
            out.push(Action::Abort(Side::Downstream));
            self.finish(CloseReason::UpstreamReset, out);
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

    /// How many buffers the direction may still receive before its sink
    /// takes some (the byte limit of its next recv).
    pub fn recv_budget(&self, dir: Dir) -> u32 {
        match &self.phase {
            Phase::Forwarding { halves } => halves[dir.index()].recv_budget(),
            Phase::ReadingHello { .. }
            | Phase::Routing { .. }
            | Phase::Connecting { .. }
            | Phase::Finished { .. } => 1,
        }
    }

    /// Buffers came back to the ring after [`Action::WaitBuffers`].
    pub fn on_buffers(&mut self, dir: Dir, out: &mut Vec<Action>) {
        match &mut self.phase {
            Phase::Forwarding { halves } => halves[dir.index()].on_buffers(out),
            Phase::ReadingHello { recv, .. } if *recv == HelloRecv::Starved => {
                *recv = HelloRecv::Armed;
                out.push(Action::RecvHello);
            }
            Phase::ReadingHello { .. }
            | Phase::Routing { .. }
            | Phase::Connecting { .. }
            | Phase::Finished { .. } => {}
        }
    }

    /// The earliest instant at which [`Connection::on_tick`] may have
    /// something to do (an instant already past: at the next tick), or
    /// `None` when no timer applies. Bytes moving only push it later, so a
    /// caller that keeps the instant it got may wake up early, never late.
    pub fn next_deadline(&self) -> Option<Instant> {
        let after = |d: Duration| self.opened.checked_add(d);
        let timer = match &self.phase {
            Phase::Finished { .. } => return None,
            Phase::ReadingHello { .. } => after(HELLO_TIMEOUT),
            Phase::Forwarding { halves } => {
                if halves.iter().any(|h| h.flow() == Flow::Reset) {
                    // CheckSent is asked again on every tick.
                    return Some(self.opened);
                }
                self.limits
                    .idle_timeout
                    .and_then(|idle| self.last_active.checked_add(idle))
            }
            Phase::Routing { .. } | Phase::Connecting { .. } => None,
        };
        let max = self.limits.max_duration.and_then(after);
        timer.into_iter().chain(max).min()
    }

    /// The sink of `dir` sent everything after its source reset
    /// ([`Action::CheckSent`]): the reset goes on to it.
    pub fn on_sent(&mut self, dir: Dir, out: &mut Vec<Action>) {
        if let Phase::Forwarding { halves } = &self.phase {
            if halves[dir.index()].flow() == Flow::Reset {
                out.push(Action::Abort(dir.sink()));
                self.finish(reset_by(dir.source()), out);
            }
        }
    }

    /// Timers: idle timeout (bytes either way count) and maximum duration;
    /// a reset waiting for its sink to send everything asks again.
    pub fn on_tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.is_finished() {
            return;
        }
        if let Phase::Forwarding { halves } = &self.phase {
            for h in halves {
                if h.flow() == Flow::Reset {
                    out.push(Action::CheckSent(h.dir()));
                }
            }
        }
        if let Phase::ReadingHello { .. } = self.phase {
            if now.saturating_duration_since(self.opened) >= HELLO_TIMEOUT {
                self.finish(CloseReason::IdleTimeout, out);
                return;
            }
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
                // Writing to a side that reset fails too; the half reading
                // that side is forwarding what it read, then resets the
                // other. Otherwise a reset from one side resets the other.
                let reader = halves[Dir::reading(side).index()].flow();
                if !matches!(reader, Flow::Resetting | Flow::Reset) {
                    out.push(Action::Abort(side.other()));
                    self.finish(reset_by(side), out);
                    return;
                }
            }
        }
        for h in halves {
            if h.flow() == Flow::Reset {
                out.push(Action::CheckSent(h.dir()));
            }
        }
        match (halves[0].flow(), halves[1].flow()) {
            (Flow::Done, Flow::Done) => self.finish(CloseReason::Done, out),
            (
                Flow::Open
                | Flow::Eof
                | Flow::ShuttingDown
                | Flow::Done
                | Flow::Resetting
                | Flow::Reset,
                _,
            ) => {}
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
            Phase::ReadingHello { .. }
            | Phase::Routing { .. }
            | Phase::Connecting { .. }
            | Phase::Finished { .. } => (0, 0, [None, None]),
        };
        let close = Close {
            reason,
            to_upstream,
            to_downstream,
        };
        self.phase = Phase::Finished {
            reason,
            sending,
            moved: [to_upstream, to_downstream],
        };
        out.push(Action::Finish(close));
    }
}

/// The close reason of a reset by `side`.
fn reset_by(side: Side) -> CloseReason {
    match side {
        Side::Downstream => CloseReason::DownstreamReset,
        Side::Upstream => CloseReason::UpstreamReset,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::forward::{SinkState, SourceState};

    const UP: Dir = Dir::ToUpstream;
    const DOWN: Dir = Dir::ToDownstream;

    fn limits() -> Limits {
        Limits {
            idle_timeout: Some(Duration::from_secs(60)),
            max_duration: None,
            connect_attempts: 3,
            splice_after: u64::MAX,
        }
    }

    /// A connection driven by hand: completions in, actions checked.
    struct Sim {
        conn: Connection,
        now: Instant,
        out: Vec<Action>,
    }

    impl Sim {
        fn open(limits: Limits) -> Sim {
            let now = Instant::now();
            let mut out = Vec::new();
            let conn = Connection::open(limits, now, &mut out);
            assert_eq!(out, vec![Action::Connect]);
            out.clear();
            Sim { conn, now, out }
        }

        fn forwarding(limits: Limits) -> Sim {
            let mut sim = Sim::open(limits);
            sim.complete(Op::Connect, 0);
            sim
        }

        fn complete(&mut self, op: Op, res: i32) -> Vec<Action> {
            self.feed(Completion {
                op,
                res,
                bid: None,
                more: false,
            })
        }

        fn recv(&mut self, dir: Dir, len: i32, bid: u16, more: bool) -> Vec<Action> {
            self.feed(Completion {
                op: Op::Recv(dir),
                res: len,
                bid: Some(bid),
                more,
            })
        }

        fn feed(&mut self, c: Completion) -> Vec<Action> {
            self.conn.on_completion(c, self.now, &mut self.out);
            std::mem::take(&mut self.out)
        }

        fn tick_after(&mut self, d: Duration) -> Vec<Action> {
            self.now += d;
            self.conn.on_tick(self.now, &mut self.out);
            std::mem::take(&mut self.out)
        }

        fn pump(&mut self, dir: Dir, pump: Pump) -> Vec<Action> {
            self.conn.on_pump(dir, pump, self.now, &mut self.out);
            std::mem::take(&mut self.out)
        }

        /// The sink of `dir` has sent everything ([`Action::CheckSent`]).
        fn sent(&mut self, dir: Dir) -> Vec<Action> {
            self.conn.on_sent(dir, &mut self.out);
            std::mem::take(&mut self.out)
        }
    }

    fn finish_reason(actions: &[Action]) -> Option<CloseReason> {
        actions.iter().find_map(|a| match a {
            Action::Finish(c) => Some(c.reason),
            _ => None,
        })
    }

    #[test]
    fn a_connect_success_arms_both_directions() {
        let mut sim = Sim::open(limits());
        let actions = sim.complete(Op::Connect, 0);
        assert_eq!(
            actions,
            vec![
                Action::Connected,
                Action::ArmRecv(UP),
                Action::ArmRecv(DOWN)
            ]
        );
        // The linked timeout's cancellation changes nothing.
        assert!(
            sim.complete(Op::ConnectTimeout, -libc::ECANCELED)
                .is_empty()
        );
    }

    #[test]
    fn failed_connects_retry_up_to_the_attempt_limit() {
        struct Case {
            res: i32,
        }
        for case in [
            Case {
                res: -libc::ECONNREFUSED,
            },
            // A linked timeout cancels the connect.
            Case {
                res: -libc::ECANCELED,
            },
        ] {
            let mut sim = Sim::open(limits());
            assert_eq!(sim.complete(Op::Connect, case.res), vec![Action::Connect]);
            assert_eq!(sim.complete(Op::Connect, case.res), vec![Action::Connect]);
            let last = sim.complete(Op::Connect, case.res);
            assert_eq!(finish_reason(&last), Some(CloseReason::ConnectFailed));
            assert!(sim.conn.is_finished());
        }
    }

    #[test]
    fn partial_writes_send_the_rest_then_give_the_buffer_back() {
        let mut sim = Sim::forwarding(limits());
        let send = |offset, len| Action::Send {
            dir: UP,
            bid: 7,
            offset,
            len,
        };
        assert_eq!(sim.recv(UP, 1000, 7, true), vec![send(0, 1000)]);
        assert_eq!(sim.complete(Op::Send(UP), 1), vec![send(1, 999)]);
        assert_eq!(sim.complete(Op::Send(UP), 400), vec![send(401, 599)]);
        assert_eq!(sim.complete(Op::Send(UP), 599), vec![Action::GiveBack(7)]);
        // Both directions finish: the byte count is the sum of the partial sends.
        sim.complete(Op::Recv(UP), 0);
        sim.complete(Op::Shutdown(UP), 0);
        sim.complete(Op::Recv(DOWN), 0);
        let last = sim.complete(Op::Shutdown(DOWN), 0);
        assert_eq!(
            last,
            vec![Action::Finish(Close {
                reason: CloseReason::Done,
                to_upstream: 1000,
                to_downstream: 0,
            })]
        );
    }

    #[test]
    fn a_full_sink_is_polled_then_sent_the_rest() {
        let mut sim = Sim::forwarding(limits());
        sim.recv(DOWN, 500, 2, true);
        sim.complete(Op::Send(DOWN), 200);
        // MSG_DONTWAIT: the full sink answers EAGAIN instead of parking a
        // thread; the first push-back is reported (the worker caps the
        // upstream's receive buffer).
        assert_eq!(
            sim.complete(Op::Send(DOWN), -libc::EAGAIN),
            vec![Action::Writable(DOWN), Action::SinkStalled(DOWN)]
        );
        assert_eq!(
            sim.complete(Op::Writable(DOWN), libc::POLLOUT as i32),
            vec![Action::Send {
                dir: DOWN,
                bid: 2,
                offset: 200,
                len: 300
            }]
        );
        // Reported once only.
        assert_eq!(
            sim.complete(Op::Send(DOWN), -libc::EAGAIN),
            vec![Action::Writable(DOWN)]
        );
        // Ending while waiting for POLLOUT gives the buffer back at once
        // (no send is reading it).
        let mut sim = Sim::forwarding(limits());
        sim.recv(DOWN, 500, 2, true);
        sim.complete(Op::Send(DOWN), -libc::EAGAIN);
        let a = sim.tick_after(Duration::from_secs(3600));
        assert!(a.contains(&Action::GiveBack(2)), "{a:?}");
    }

    #[test]
    fn one_send_in_flight_and_recv_cancelled_past_one_queued_buffer() {
        let mut sim = Sim::forwarding(limits());
        let a = sim.recv(UP, 100, 1, true);
        assert!(matches!(a[..], [Action::Send { bid: 1, .. }]));
        // A second buffer while the first is being sent: no second send, and
        // the recv is cancelled (backpressure: taken + one buffer).
        assert_eq!(sim.recv(UP, 100, 2, true), vec![Action::CancelRecv(UP)]);
        // A buffer the kernel had already filled still arrives, and waits.
        assert!(sim.recv(UP, 100, 3, true).is_empty());
        assert!(sim.complete(Op::Recv(UP), -libc::ECANCELED).is_empty());
        let a = sim.complete(Op::Send(UP), 100);
        assert_eq!(a[0], Action::GiveBack(1));
        assert!(matches!(a[1], Action::Send { bid: 2, .. }));
        assert_eq!(a.len(), 2, "still two queued: no re-arm yet: {a:?}");
        let a = sim.complete(Op::Send(UP), 100);
        assert_eq!(
            a,
            vec![
                Action::GiveBack(2),
                Action::Send {
                    dir: UP,
                    bid: 3,
                    offset: 0,
                    len: 100
                },
                Action::ArmRecv(UP)
            ]
        );
    }

    #[test]
    fn eof_is_forwarded_as_shutdown_only_after_the_data() {
        let mut sim = Sim::forwarding(limits());
        sim.recv(UP, 10, 4, true);
        // FIN while the send is in flight: no shutdown yet.
        assert!(sim.complete(Op::Recv(UP), 0).is_empty());
        assert_eq!(
            sim.complete(Op::Send(UP), 10),
            vec![Action::GiveBack(4), Action::Shutdown(UP)]
        );
        assert!(sim.complete(Op::Shutdown(UP), 0).is_empty());
        // The other direction keeps flowing after the half-close.
        assert!(matches!(
            sim.recv(DOWN, 5, 9, true)[..],
            [Action::Send { dir: DOWN, .. }]
        ));
        assert_eq!(sim.complete(Op::Send(DOWN), 5), vec![Action::GiveBack(9)]);
        assert_eq!(
            sim.complete(Op::Recv(DOWN), 0),
            vec![Action::Shutdown(DOWN)]
        );
        let last = sim.complete(Op::Shutdown(DOWN), 0);
        assert_eq!(finish_reason(&last), Some(CloseReason::Done));
    }

    #[test]
    fn a_reset_on_one_side_resets_the_other() {
        struct Case {
            op: Op,
            res: i32,
            abort: Side,
            reason: CloseReason,
        }
        let cases = [
            Case {
                op: Op::Recv(UP),
                res: -libc::ECONNRESET,
                abort: Side::Upstream,
                reason: CloseReason::DownstreamReset,
            },
            Case {
                op: Op::Recv(DOWN),
                res: -libc::ECONNRESET,
                abort: Side::Downstream,
                reason: CloseReason::UpstreamReset,
            },
        ];
        for case in cases {
            let mut sim = Sim::forwarding(limits());
            let Op::Recv(dir) = case.op else {
                unreachable!()
            };
            // Nothing held: the reset waits only for the kernel to send
            // what the other socket holds.
            assert_eq!(
                sim.complete(case.op, case.res),
                vec![Action::CheckSent(dir)]
            );
            let a = sim.sent(dir);
            assert_eq!(a[0], Action::Abort(case.abort));
            assert_eq!(finish_reason(&a), Some(case.reason));
        }
        // A send that fails names the sink.
        let mut sim = Sim::forwarding(limits());
        sim.recv(UP, 10, 1, true);
        let a = sim.complete(Op::Send(UP), -libc::EPIPE);
        assert_eq!(a[0], Action::Abort(Side::Downstream));
        assert_eq!(finish_reason(&a), Some(CloseReason::UpstreamReset));
    }

    #[test]
    fn a_source_that_resets_has_what_it_sent_forwarded_before_the_reset() {
        let mut sim = Sim::forwarding(limits());
        let a = sim.recv(DOWN, 10, 1, true);
        assert!(a.contains(&Action::Send {
            dir: DOWN,
            bid: 1,
            offset: 0,
            len: 10
        }));
        sim.recv(DOWN, 20, 2, true);
        // The upstream resets with 30 bytes held: nothing ends yet.
        let a = sim.complete(Op::Recv(DOWN), -libc::ECONNRESET);
        assert_eq!(a, vec![]);
        // Writes toward the reset upstream fail; that changes nothing.
        sim.recv(UP, 5, 3, true);
        assert_eq!(sim.complete(Op::Send(UP), -libc::EPIPE), vec![]);
        // The held bytes go to the client, partial writes included.
        assert_eq!(
            sim.complete(Op::Send(DOWN), 4),
            vec![Action::Send {
                dir: DOWN,
                bid: 1,
                offset: 4,
                len: 6
            }]
        );
        let a = sim.complete(Op::Send(DOWN), 6);
        assert_eq!(
            a,
            vec![
                Action::GiveBack(1),
                Action::Send {
                    dir: DOWN,
                    bid: 2,
                    offset: 0,
                    len: 20
                }
            ]
        );
        let a = sim.complete(Op::Send(DOWN), 20);
        assert_eq!(a, vec![Action::GiveBack(2), Action::CheckSent(DOWN)]);
        // Not sent by the kernel yet: asked again on each tick.
        assert_eq!(
            sim.tick_after(Duration::from_millis(100)),
            vec![Action::CheckSent(DOWN)]
        );
        let a = sim.sent(DOWN);
        assert_eq!(a[0], Action::Abort(Side::Downstream));
        assert!(a.contains(&Action::GiveBack(3)), "{a:?}");
        assert_eq!(
            a.last(),
            Some(&Action::Finish(Close {
                reason: CloseReason::UpstreamReset,
                to_upstream: 0,
                to_downstream: 30,
            }))
        );
    }

    #[test]
    fn a_splice_source_that_resets_has_its_pipe_drained_first() {
        let mut sim = Sim::forwarding(Limits {
            splice_after: 0,
            ..limits()
        });
        sim.complete(Op::Readable(DOWN), libc::POLLIN as i32);
        let a = sim.pump(
            DOWN,
            Pump {
                read: 1000,
                written: 400,
                in_pipe: 600,
                source: SourceState::Failed,
                sink: SinkState::WouldBlock,
            },
        );
        assert_eq!(a, vec![Action::Writable(DOWN), Action::SinkStalled(DOWN)]);
        // The pipe is drained without reading the failed source again.
        assert_eq!(
            sim.complete(Op::Writable(DOWN), libc::POLLOUT as i32),
            vec![Action::Pump {
                dir: DOWN,
                in_pipe: 600,
                read: false
            }]
        );
        let a = sim.pump(
            DOWN,
            Pump {
                read: 0,
                written: 600,
                in_pipe: 0,
                source: SourceState::Open,
                sink: SinkState::Ok,
            },
        );
        assert_eq!(a, vec![Action::CheckSent(DOWN)]);
        let a = sim.sent(DOWN);
        assert_eq!(a[0], Action::Abort(Side::Downstream));
        assert_eq!(
            a.last(),
            Some(&Action::Finish(Close {
                reason: CloseReason::UpstreamReset,
                to_upstream: 0,
                to_downstream: 1000,
            }))
        );
    }

    #[test]
    fn a_send_that_completes_after_the_end_is_counted() {
        let mut sim = Sim::forwarding(limits());
        sim.recv(UP, 10, 1, true);
        let a = sim.tick_after(Duration::from_secs(3600));
        assert_eq!(finish_reason(&a), Some(CloseReason::IdleTimeout));
        assert_eq!(sim.conn.close().map(|c| c.to_upstream), Some(0));
        // The send had written its bytes before the cancel reached it.
        assert_eq!(sim.complete(Op::Send(UP), 10), vec![Action::GiveBack(1)]);
        assert_eq!(
            sim.conn.close(),
            Some(Close {
                reason: CloseReason::IdleTimeout,
                to_upstream: 10,
                to_downstream: 0,
            })
        );
    }

    #[test]
    fn a_buffer_being_sent_is_given_back_only_when_its_send_completes() {
        let mut sim = Sim::forwarding(limits());
        sim.recv(UP, 10, 1, true);
        sim.recv(UP, 10, 2, true);
        let a = sim.tick_after(Duration::from_secs(3600));
        // Buffer 2 is idle: back at once. Buffer 1 is still read by the kernel.
        assert!(a.contains(&Action::GiveBack(2)));
        assert!(!a.contains(&Action::GiveBack(1)));
        assert_eq!(finish_reason(&a), Some(CloseReason::IdleTimeout));
        assert_eq!(
            sim.complete(Op::Send(UP), -libc::ECANCELED),
            vec![Action::GiveBack(1)]
        );
        // Late recv completions after the end give their buffers back too.
        assert_eq!(sim.recv(DOWN, 10, 5, false), vec![Action::GiveBack(5)]);
    }

    #[test]
    fn the_next_deadline_is_the_earliest_timer_and_bytes_push_it_later() {
        let t0 = Instant::now();
        let secs = Duration::from_secs;
        let mut sim = Sim::forwarding(Limits {
            idle_timeout: Some(secs(60)),
            max_duration: Some(secs(100)),
            ..limits()
        });
        let opened = sim.now;
        assert_eq!(sim.conn.next_deadline(), Some(opened + secs(60)));
        sim.now = opened + secs(50);
        sim.recv(UP, 10, 1, true);
        // The idle timer moved past the maximum duration.
        assert_eq!(sim.conn.next_deadline(), Some(opened + secs(100)));
        assert!(sim.tick_after(secs(49)).is_empty());
        assert_eq!(
            finish_reason(&sim.tick_after(secs(1))),
            Some(CloseReason::MaxDuration)
        );
        assert_eq!(sim.conn.next_deadline(), None);
        // No timer at all: nothing to schedule.
        let sim = Sim::forwarding(Limits {
            idle_timeout: None,
            ..limits()
        });
        assert_eq!(sim.conn.next_deadline(), None);
        // The ClientHello timeout, and a reset waiting for its sink (due at once).
        let mut out = Vec::new();
        let tls = Connection::open_tls(limits(), t0, &mut out);
        assert_eq!(tls.next_deadline(), Some(t0 + HELLO_TIMEOUT));
        let mut sim = Sim::forwarding(limits());
        sim.complete(Op::Recv(DOWN), -libc::ECONNRESET);
        assert!(sim.conn.next_deadline().is_some_and(|d| d <= sim.now));
    }

    #[test]
    fn idle_timeout_counts_bytes_either_way() {
        let mut sim = Sim::forwarding(limits());
        assert!(sim.tick_after(Duration::from_secs(50)).is_empty());
        sim.recv(DOWN, 1, 1, true);
        assert!(
            sim.tick_after(Duration::from_secs(50)).is_empty(),
            "activity reset the timer"
        );
        let a = sim.tick_after(Duration::from_secs(11));
        assert_eq!(finish_reason(&a), Some(CloseReason::IdleTimeout));
        assert!(
            sim.tick_after(Duration::from_secs(100)).is_empty(),
            "finished once"
        );
    }

    #[test]
    fn max_duration_ends_even_a_busy_connection() {
        let mut sim = Sim::forwarding(Limits {
            max_duration: Some(Duration::from_secs(5)),
            ..limits()
        });
        for bid in 0..4 {
            sim.recv(UP, 1, bid, true);
            sim.complete(Op::Send(UP), 1);
            assert!(sim.tick_after(Duration::from_secs(1)).is_empty());
        }
        let a = sim.tick_after(Duration::from_secs(1));
        assert_eq!(finish_reason(&a), Some(CloseReason::MaxDuration));
    }

    #[test]
    fn an_empty_buffer_ring_waits_for_buffers_then_rearms() {
        let mut sim = Sim::forwarding(limits());
        let a = sim.complete(Op::Recv(UP), -libc::ENOBUFS);
        assert_eq!(a, vec![Action::WaitBuffers(UP)]);
        sim.conn.on_buffers(UP, &mut sim.out);
        assert_eq!(std::mem::take(&mut sim.out), vec![Action::ArmRecv(UP)]);
    }

    #[test]
    fn a_bulk_direction_moves_to_splice_after_its_threshold() {
        let mut sim = Sim::forwarding(Limits {
            splice_after: 100,
            ..limits()
        });
        sim.recv(UP, 100, 1, true);
        let a = sim.complete(Op::Send(UP), 100);
        assert_eq!(a, vec![Action::GiveBack(1), Action::CancelRecv(UP)]);
        let a = sim.complete(Op::Recv(UP), -libc::ECANCELED);
        assert_eq!(a, vec![Action::EnterSplice(UP), Action::Readable(UP)]);
        // Under load the half is rarely empty when a send completes: it stops
        // receiving as soon as it is over the threshold, drains, then moves.
        let mut sim = Sim::forwarding(Limits {
            splice_after: 50,
            ..limits()
        });
        let a = sim.recv(UP, 100, 1, false);
        assert_eq!(a[1], Action::ArmRecv(UP));
        let a = sim.complete(Op::Send(UP), 60);
        assert_eq!(
            a,
            vec![
                Action::Send {
                    dir: UP,
                    bid: 1,
                    offset: 60,
                    len: 40
                },
                Action::CancelRecv(UP)
            ]
        );
        assert!(
            sim.complete(Op::Recv(UP), -libc::ECANCELED).is_empty(),
            "no re-arm while draining"
        );
        let a = sim.complete(Op::Send(UP), 40);
        assert_eq!(
            a,
            vec![
                Action::GiveBack(1),
                Action::EnterSplice(UP),
                Action::Readable(UP)
            ]
        );
        // The other direction still copies.
        assert!(matches!(
            sim.recv(DOWN, 5, 2, true)[..],
            [Action::Send { dir: DOWN, .. }]
        ));
    }

    #[test]
    fn the_splice_path_waits_for_the_sink_and_half_closes_after_draining() {
        let mut sim = Sim::forwarding(Limits {
            splice_after: 0,
            ..limits()
        });
        let a = sim.complete(Op::Readable(UP), libc::POLLIN as i32);
        assert_eq!(
            a,
            vec![Action::Pump {
                dir: UP,
                in_pipe: 0,
                read: true
            }]
        );
        // Partial: the sink took 300 of 1000 and is full.
        let a = sim.pump(
            UP,
            Pump {
                read: 1000,
                written: 300,
                in_pipe: 700,
                source: SourceState::Open,
                sink: SinkState::WouldBlock,
            },
        );
        assert_eq!(a, vec![Action::Writable(UP), Action::SinkStalled(UP)]);
        let a = sim.complete(Op::Writable(UP), libc::POLLOUT as i32);
        assert_eq!(
            a,
            vec![Action::Pump {
                dir: UP,
                in_pipe: 700,
                read: true
            }]
        );
        // The rest goes out and the source ends: shutdown only now.
        let a = sim.pump(
            UP,
            Pump {
                read: 0,
                written: 700,
                in_pipe: 0,
                source: SourceState::Eof,
                sink: SinkState::Ok,
            },
        );
        assert_eq!(a, vec![Action::Shutdown(UP)]);
        sim.complete(Op::Shutdown(UP), 0);
        sim.complete(Op::Readable(DOWN), libc::POLLIN as i32);
        sim.pump(
            DOWN,
            Pump {
                read: 0,
                written: 0,
                in_pipe: 0,
                source: SourceState::Eof,
                sink: SinkState::Ok,
            },
        );
        let last = sim.complete(Op::Shutdown(DOWN), 0);
        assert_eq!(
            last,
            vec![Action::Finish(Close {
                reason: CloseReason::Done,
                to_upstream: 1000,
                to_downstream: 0,
            })]
        );
    }

    #[test]
    fn no_pipe_means_the_direction_keeps_copying() {
        let mut sim = Sim::forwarding(Limits {
            splice_after: 0,
            ..limits()
        });
        sim.complete(Op::Readable(UP), libc::POLLIN as i32);
        sim.conn.on_no_pipe(UP, &mut sim.out);
        assert_eq!(std::mem::take(&mut sim.out), vec![Action::ArmRecv(UP)]);
        assert!(matches!(
            sim.recv(UP, 10, 3, true)[..],
            [Action::Send { bid: 3, .. }]
        ));
    }

    // ------------------------------------------------ TLS passthrough

    use crate::sni::client_hello::client_hello_bytes;

    impl Sim {
        fn open_tls() -> Sim {
            let now = Instant::now();
            let mut out = Vec::new();
            let conn = Connection::open_tls(limits(), now, &mut out);
            assert_eq!(out, vec![Action::RecvHello]);
            Sim {
                conn,
                now,
                out: Vec::new(),
            }
        }

        /// One recv of `bytes` into buffer `bid`, performed the way the
        /// worker does: TakeHello copies, then the buffer goes back.
        fn hello_segment(&mut self, bytes: &[u8], bid: u16) -> Vec<Action> {
            let a = self.recv(UP, bytes.len() as i32, bid, false);
            assert_eq!(
                a,
                vec![Action::TakeHello {
                    bid,
                    len: bytes.len() as u32
                }]
            );
            self.conn.on_hello_bytes(bytes, &mut self.out);
            std::mem::take(&mut self.out)
        }
    }

    #[test]
    fn a_split_hello_is_read_routed_then_sent_upstream_first() {
        let hello = client_hello_bytes(Some("db.example.com"), 40);
        let mut sim = Sim::open_tls();
        let mut pieces = hello.chunks(30).peekable();
        let mut bid = 0;
        while let Some(piece) = pieces.next() {
            let a = sim.hello_segment(piece, bid);
            if pieces.peek().is_some() {
                assert_eq!(a, vec![Action::RecvHello], "more needed");
                assert_eq!(sim.conn.server_name(), None);
            } else {
                assert_eq!(a, vec![Action::Route]);
            }
            bid += 1;
        }
        assert_eq!(
            sim.conn.server_name(),
            Some(&ServerName::Name("db.example.com".into()))
        );
        sim.conn.on_routed(limits(), &mut sim.out);
        assert_eq!(std::mem::take(&mut sim.out), vec![Action::Connect]);
        // A failed attempt keeps the bytes for the next one.
        assert_eq!(
            sim.complete(Op::Connect, -libc::ECONNREFUSED),
            vec![Action::Connect]
        );
        let a = sim.complete(Op::Connect, 0);
        assert_eq!(
            a,
            vec![
                Action::Connected,
                Action::SendPrefix(UP),
                Action::ArmRecv(DOWN)
            ],
            "no recv from the client before its hello is out"
        );
        assert_eq!(sim.conn.prefix(UP), Some(hello.as_slice()));
        assert_eq!(sim.conn.prefix(DOWN), None);
        // Partial send, then a full sink, then the rest.
        assert_eq!(sim.complete(Op::Send(UP), 10), vec![Action::SendPrefix(UP)]);
        assert_eq!(sim.conn.prefix(UP), Some(&hello[10..]));
        assert_eq!(
            sim.complete(Op::Send(UP), -libc::EAGAIN),
            vec![Action::Writable(UP), Action::SinkStalled(UP)]
        );
        assert_eq!(
            sim.complete(Op::Writable(UP), libc::POLLOUT as i32),
            vec![Action::SendPrefix(UP)]
        );
        let rest = (hello.len() - 10) as i32;
        assert_eq!(sim.complete(Op::Send(UP), rest), vec![Action::ArmRecv(UP)]);
        assert_eq!(sim.conn.prefix(UP), None);
        // What follows is forwarded as usual, after the hello.
        assert!(matches!(
            sim.recv(UP, 4, 9, true)[..],
            [Action::Send { bid: 9, .. }]
        ));
        assert_eq!(sim.complete(Op::Send(UP), 4), vec![Action::GiveBack(9)]);
        // The client half-closes: FIN forwarded; then the upstream ends.
        assert_eq!(sim.complete(Op::Recv(UP), 0), vec![Action::Shutdown(UP)]);
        sim.complete(Op::Shutdown(UP), 0);
        sim.complete(Op::Recv(DOWN), 0);
        let last = sim.complete(Op::Shutdown(DOWN), 0);
        assert_eq!(
            last,
            vec![Action::Finish(Close {
                reason: CloseReason::Done,
                to_upstream: hello.len() as u64 + 4,
                to_downstream: 0,
            })]
        );
    }

    #[test]
    fn a_fin_right_after_the_hello_is_forwarded_after_it() {
        let mut hello = client_hello_bytes(None, 16384);
        hello.extend_from_slice(b"early data");
        let mut sim = Sim::open_tls();
        assert_eq!(sim.hello_segment(&hello, 1), vec![Action::Route]);
        assert_eq!(sim.conn.server_name(), Some(&ServerName::Absent));
        sim.conn.on_routed(limits(), &mut sim.out);
        sim.out.clear();
        sim.complete(Op::Connect, 0);
        assert_eq!(
            sim.conn.prefix(UP),
            Some(hello.as_slice()),
            "all bytes read"
        );
        assert_eq!(
            sim.complete(Op::Send(UP), hello.len() as i32),
            vec![Action::ArmRecv(UP)]
        );
        assert_eq!(sim.complete(Op::Recv(UP), 0), vec![Action::Shutdown(UP)]);
    }

    #[test]
    fn a_prefix_goes_out_before_a_splice_only_half_moves_to_splice() {
        let hello = client_hello_bytes(Some("a.example.com"), 16384);
        let mut sim = Sim::open_tls();
        sim.hello_segment(&hello, 1);
        sim.conn.on_routed(
            Limits {
                splice_after: 0,
                ..limits()
            },
            &mut sim.out,
        );
        sim.out.clear();
        let a = sim.complete(Op::Connect, 0);
        assert_eq!(
            a,
            vec![
                Action::Connected,
                Action::SendPrefix(UP),
                Action::EnterSplice(DOWN),
                Action::Readable(DOWN)
            ]
        );
        assert_eq!(
            sim.complete(Op::Send(UP), hello.len() as i32),
            vec![Action::EnterSplice(UP), Action::Readable(UP)]
        );
    }

    #[test]
    fn the_hello_read_times_out_after_five_seconds() {
        let mut sim = Sim::open_tls();
        let hello = client_hello_bytes(Some("db.example.com"), 16384);
        assert_eq!(sim.hello_segment(&hello[..20], 3), vec![Action::RecvHello]);
        assert!(sim.tick_after(Duration::from_millis(4900)).is_empty());
        let a = sim.tick_after(Duration::from_millis(100));
        assert_eq!(
            a,
            vec![Action::Finish(Close {
                reason: CloseReason::IdleTimeout,
                to_upstream: 0,
                to_downstream: 0,
            })]
        );
        // The recv still in flight is cancelled; a buffer it filled goes back.
        assert_eq!(sim.recv(UP, 7, 4, false), vec![Action::GiveBack(4)]);
        assert!(sim.complete(Op::Recv(UP), -libc::ECANCELED).is_empty());
    }

    #[test]
    fn hello_read_failures_end_the_connection() {
        struct Case {
            res: i32,
            reason: CloseReason,
        }
        for case in [
            Case {
                res: 0,
                reason: CloseReason::Done,
            },
            Case {
                res: -libc::ECONNRESET,
                reason: CloseReason::DownstreamReset,
            },
        ] {
            let mut sim = Sim::open_tls();
            let a = sim.complete(Op::Recv(UP), case.res);
            assert_eq!(finish_reason(&a), Some(case.reason));
        }
        // An empty ring: wait, then read again.
        let mut sim = Sim::open_tls();
        assert_eq!(
            sim.complete(Op::Recv(UP), -libc::ENOBUFS),
            vec![Action::WaitBuffers(UP)]
        );
        sim.conn.on_buffers(UP, &mut sim.out);
        assert_eq!(std::mem::take(&mut sim.out), vec![Action::RecvHello]);
        // Stopping while reading.
        sim.conn.drain(&mut sim.out);
        assert_eq!(
            finish_reason(&std::mem::take(&mut sim.out)),
            Some(CloseReason::Drained)
        );
    }

    #[test]
    fn not_tls_is_routed_like_no_sni_and_no_route_closes_with_nr() {
        let mut sim = Sim::open_tls();
        assert_eq!(
            sim.hello_segment(b"GET / HTTP/1.1\r\n\r\n", 0),
            vec![Action::Route]
        );
        let name = sim.conn.server_name().cloned();
        assert!(matches!(name, Some(ServerName::NotTls(_))), "{name:?}");
        assert_eq!(name.as_ref().and_then(ServerName::lookup_key), None);
        sim.conn.on_route_failed(CloseReason::NoRoute, &mut sim.out);
        let a = std::mem::take(&mut sim.out);
        assert_eq!(finish_reason(&a), Some(CloseReason::NoRoute));
        assert_eq!(CloseReason::NoRoute.flag(), "NR");
    }
}
