//! The TCP connection machine, sans-io: completions and ticks in, [`Io`]s
//! out. No syscalls and no clock here; the worker performs the I/O and
//! passes the time in. A TCP session opens it once its route is reserved.
//!
//! ```text
//! Connecting --connect ok--> Forwarding{to_upstream, to_downstream} --both halves Done--> Finished
//!     |  \--fail, attempts left--> Connecting (next endpoint)
//!     \--fail, none left / timer--> Finished        Forwarding --reset, timer--> Finished
//! ```
//! A side that resets while its half holds bytes read from it: those bytes
//! are written first, then the other side is reset once its socket has
//! sent them (`Flow::Resetting` → `Flow::Reset` → [`Io::CheckSent`]).
//! `Finished` emits [`Io::Finish`] once; the worker then cancels what is
//! still in flight and frees the slot only when nothing is.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use super::half::{Flow, Half, Outcome};
use super::io::{Close, CloseReason, Completion, Io, Limits, Pump};
use super::token::{Dir, Op, Side};

// Forwarding is inline on purpose: a connection lives in its slab slot for
// its whole life (never moved), and boxing it would cost an allocation per
// connection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Phase {
    /// CONNECT (attempt number `attempt`, from 1) is in flight.
    Connecting {
        attempt: u32,
        /// Bytes the session read before the connect (a ClientHello),
        /// sent upstream first.
        outbox: Vec<u8>,
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

#[derive(Debug)]
pub struct Connection {
    phase: Phase,
    limits: Limits,
    opened: Instant,
    last_active: Instant,
}

impl Connection {
    /// A connection whose route is reserved, opened at `opened` (the
    /// accept: the maximum duration counts from there): asks for the first
    /// connect. `outbox` (when not empty) goes upstream before anything
    /// the downstream sends next.
    pub fn open(
        limits: Limits,
        opened: Instant,
        now: Instant,
        outbox: Vec<u8>,
        out: &mut Vec<Io>,
    ) -> Connection {
        out.push(Io::Connect);
        Connection {
            phase: Phase::Connecting { attempt: 1, outbox },
            limits,
            opened,
            last_active: now,
        }
    }

    /// A connection whose upstream is already connected (an HTTP request
    /// upgraded to a tunnel, opened at `now`): forwarding at once, each
    /// half sending its outbox (`[to the upstream, to the downstream]`)
    /// before what it reads next.
    pub fn forwarding(
        limits: Limits,
        now: Instant,
        outboxes: [Vec<u8>; 2],
        out: &mut Vec<Io>,
    ) -> Connection {
        let [up, down] = outboxes;
        let halves = [
            Half::start_with_outbox(Dir::ToUpstream, limits.splice_after, up, out),
            Half::start_with_outbox(Dir::ToDownstream, limits.splice_after, down, out),
        ];
        Connection {
            phase: Phase::Forwarding { halves },
            limits,
            opened: now,
            last_active: now,
        }
    }

    /// What is left of the direction's outbox to send ([`Io::SendOwned`]).
    pub fn outbox(&self, dir: Dir) -> Option<&[u8]> {
        match &self.phase {
            Phase::Forwarding { halves } => halves[dir.index()].outbox(),
            Phase::Connecting { .. } | Phase::Finished { .. } => None,
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
            Phase::Connecting { .. } => [0, 0],
        }
    }

    /// How the connection ended, with every byte written, also by sends
    /// that completed after [`Io::Finish`]: final once nothing of it is
    /// in flight.
    pub fn close(&self) -> Option<Close> {
        match &self.phase {
            Phase::Finished { reason, moved, .. } => Some(Close {
                reason: *reason,
                to_upstream: moved[0],
                to_downstream: moved[1],
            }),
            Phase::Connecting { .. } | Phase::Forwarding { .. } => None,
        }
    }

    pub fn opened(&self) -> Instant {
        self.opened
    }

    pub fn on_completion(&mut self, c: Completion<'_>, now: Instant, out: &mut Vec<Io>) {
        match &mut self.phase {
            Phase::Connecting { attempt, outbox } => match c.op {
                Op::Connect if c.res >= 0 => {
                    out.push(Io::Connected);
                    let splice_after = self.limits.splice_after;
                    let to_upstream = Half::start_with_outbox(
                        Dir::ToUpstream,
                        splice_after,
                        std::mem::take(outbox),
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
                        out.push(Io::Connect);
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
                    out.push(Io::GiveBack(bid));
                }
                if let Op::Send(d) = c.op {
                    if let Some(bid) = sending[d.index()].take() {
                        out.push(Io::GiveBack(bid));
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
    pub fn on_connect_unavailable(&mut self, reason: CloseReason, out: &mut Vec<Io>) {
        if let Phase::Connecting { .. } = self.phase {
            self.finish(reason, out);
        }
    }

    /// The worker could not prepare the upstream (the PROXY header did not
    /// go out): the connection ends as an upstream reset.
    pub fn abort_upstream(&mut self, out: &mut Vec<Io>) {
        if let Phase::Forwarding { .. } = self.phase {
            out.push(Io::Abort(Side::Downstream));
            self.finish(CloseReason::UpstreamReset, out);
        }
    }

    /// The result of a pump the worker ran after [`Io::Pump`].
    pub fn on_pump(&mut self, dir: Dir, pump: Pump, now: Instant, out: &mut Vec<Io>) {
        if let Phase::Forwarding { halves } = &mut self.phase {
            let outcome = halves[dir.index()].on_pump(pump, out);
            self.after(outcome, now, out);
        }
    }

    /// The worker had no pipe for a pump: the direction goes back to copying.
    pub fn on_no_pipe(&mut self, dir: Dir, out: &mut Vec<Io>) {
        if let Phase::Forwarding { halves } = &mut self.phase {
            halves[dir.index()].on_no_pipe(out);
        }
    }

    /// Buffers came back to the ring after [`Io::WaitBuffers`].
    pub fn on_buffers(&mut self, dir: Dir, out: &mut Vec<Io>) {
        match &mut self.phase {
            Phase::Forwarding { halves } => halves[dir.index()].on_buffers(out),
            Phase::Connecting { .. } | Phase::Finished { .. } => {}
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
            Phase::Forwarding { halves } => {
                if halves.iter().any(|h| h.flow() == Flow::Reset) {
                    // CheckSent is asked again on every tick.
                    return Some(self.opened);
                }
                self.limits
                    .idle_timeout
                    .and_then(|idle| self.last_active.checked_add(idle))
            }
            Phase::Connecting { .. } => None,
        };
        let max = self.limits.max_duration.and_then(after);
        timer.into_iter().chain(max).min()
    }

    /// The sink of `dir` sent everything after its source reset
    /// ([`Io::CheckSent`]): the reset goes on to it.
    pub fn on_sent(&mut self, dir: Dir, out: &mut Vec<Io>) {
        if let Phase::Forwarding { halves } = &self.phase {
            if halves[dir.index()].flow() == Flow::Reset {
                out.push(Io::Abort(dir.sink()));
                self.finish(CloseReason::reset_by(dir.source()), out);
            }
        }
    }

    /// Timers: idle timeout (bytes either way count) and maximum duration;
    /// a reset waiting for its sink to send everything asks again.
    pub fn on_tick(&mut self, now: Instant, out: &mut Vec<Io>) {
        if self.is_finished() {
            return;
        }
        if let Phase::Forwarding { halves } = &self.phase {
            for h in halves {
                if h.flow() == Flow::Reset {
                    out.push(Io::CheckSent(h.dir()));
                }
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
    pub fn drain(&mut self, out: &mut Vec<Io>) {
        if !self.is_finished() {
            self.finish(CloseReason::Drained, out);
        }
    }

    /// Keep-open policy, and the end of the connection on a reset.
    fn after(&mut self, outcome: Outcome, now: Instant, out: &mut Vec<Io>) {
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
                    out.push(Io::Abort(side.other()));
                    self.finish(CloseReason::reset_by(side), out);
                    return;
                }
            }
        }
        for h in halves {
            if h.flow() == Flow::Reset {
                out.push(Io::CheckSent(h.dir()));
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
                | Flow::Reset
                | Flow::Complete,
                _,
            ) => {}
        }
    }

    fn finish(&mut self, reason: CloseReason, out: &mut Vec<Io>) {
        let (to_upstream, to_downstream, sending) = match &self.phase {
            Phase::Forwarding { halves } => {
                for bid in halves.iter().flat_map(Half::idle_buffers) {
                    out.push(Io::GiveBack(bid));
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
        self.phase = Phase::Finished {
            reason,
            sending,
            moved: [to_upstream, to_downstream],
        };
        out.push(Io::Finish(close));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::io::{SinkState, SourceState};

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
        out: Vec<Io>,
    }

    impl Sim {
        fn open(limits: Limits) -> Sim {
            let now = Instant::now();
            let mut out = Vec::new();
            let conn = Connection::open(limits, now, now, Vec::new(), &mut out);
            assert_eq!(out, vec![Io::Connect]);
            out.clear();
            Sim { conn, now, out }
        }

        fn forwarding(limits: Limits) -> Sim {
            let mut sim = Sim::open(limits);
            sim.complete(Op::Connect, 0);
            sim
        }

        fn complete(&mut self, op: Op, res: i32) -> Vec<Io> {
            self.feed(Completion {
                op,
                res,
                bid: None,
                data: &[],
                more: false,
            })
        }

        fn recv(&mut self, dir: Dir, len: i32, bid: u16, more: bool) -> Vec<Io> {
            self.feed(Completion {
                op: Op::Recv(dir),
                res: len,
                bid: Some(bid),
                data: &[],
                more,
            })
        }

        fn feed(&mut self, c: Completion<'_>) -> Vec<Io> {
            self.conn.on_completion(c, self.now, &mut self.out);
            std::mem::take(&mut self.out)
        }

        fn tick_after(&mut self, d: Duration) -> Vec<Io> {
            self.now += d;
            self.conn.on_tick(self.now, &mut self.out);
            std::mem::take(&mut self.out)
        }

        fn pump(&mut self, dir: Dir, pump: Pump) -> Vec<Io> {
            self.conn.on_pump(dir, pump, self.now, &mut self.out);
            std::mem::take(&mut self.out)
        }

        /// The sink of `dir` has sent everything ([`Io::CheckSent`]).
        fn sent(&mut self, dir: Dir) -> Vec<Io> {
            self.conn.on_sent(dir, &mut self.out);
            std::mem::take(&mut self.out)
        }
    }

    fn finish_reason(actions: &[Io]) -> Option<CloseReason> {
        actions.iter().find_map(|a| match a {
            Io::Finish(c) => Some(c.reason),
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
                Io::Connected,
                Io::Recv {
                    dir: UP,
                    buffers: 2
                },
                Io::Recv {
                    dir: DOWN,
                    buffers: 2
                }
            ]
        );
        // The linked timeout's cancellation changes nothing.
        assert!(
            sim.complete(Op::ConnectTimeout, -libc::ECANCELED)
                .is_empty()
        );
    }

    #[test]
    fn a_connection_built_forwarding_sends_its_outboxes_first() {
        let now = Instant::now();
        let mut out = Vec::new();
        let outboxes = [b"client".to_vec(), b"HTTP/1.1 101 x\r\n\r\n".to_vec()];
        let conn = Connection::forwarding(limits(), now, outboxes, &mut out);
        assert_eq!(out, vec![Io::SendOwned(UP), Io::SendOwned(DOWN)]);
        assert_eq!(conn.outbox(UP), Some(&b"client"[..]));
        assert_eq!(conn.outbox(DOWN), Some(&b"HTTP/1.1 101 x\r\n\r\n"[..]));
        let mut sim = Sim {
            conn,
            now,
            out: Vec::new(),
        };
        // Once sent, each half reads its source.
        let up = sim.complete(Op::Send(UP), 6);
        assert!(matches!(up[..], [Io::Recv { dir: UP, .. }]), "{up:?}");
        let down = sim.complete(Op::Send(DOWN), 18);
        assert!(matches!(down[..], [Io::Recv { dir: DOWN, .. }]), "{down:?}");
        assert_eq!(sim.conn.moved(), [6, 18]);
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
            assert_eq!(sim.complete(Op::Connect, case.res), vec![Io::Connect]);
            assert_eq!(sim.complete(Op::Connect, case.res), vec![Io::Connect]);
            let last = sim.complete(Op::Connect, case.res);
            assert_eq!(finish_reason(&last), Some(CloseReason::ConnectFailed));
            assert!(sim.conn.is_finished());
        }
    }

    #[test]
    fn partial_writes_send_the_rest_then_give_the_buffer_back() {
        let mut sim = Sim::forwarding(limits());
        let send = |offset, len| Io::Send {
            dir: UP,
            bid: 7,
            offset,
            len,
        };
        assert_eq!(sim.recv(UP, 1000, 7, true), vec![send(0, 1000)]);
        assert_eq!(sim.complete(Op::Send(UP), 1), vec![send(1, 999)]);
        assert_eq!(sim.complete(Op::Send(UP), 400), vec![send(401, 599)]);
        assert_eq!(sim.complete(Op::Send(UP), 599), vec![Io::GiveBack(7)]);
        // Both directions finish: the byte count is the sum of the partial sends.
        sim.complete(Op::Recv(UP), 0);
        sim.complete(Op::Shutdown(UP), 0);
        sim.complete(Op::Recv(DOWN), 0);
        let last = sim.complete(Op::Shutdown(DOWN), 0);
        assert_eq!(
            last,
            vec![Io::Finish(Close {
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
            vec![Io::PollOut(DOWN), Io::SinkStalled(DOWN)]
        );
        assert_eq!(
            sim.complete(Op::Writable(DOWN), libc::POLLOUT as i32),
            vec![Io::Send {
                dir: DOWN,
                bid: 2,
                offset: 200,
                len: 300
            }]
        );
        // Reported once only.
        assert_eq!(
            sim.complete(Op::Send(DOWN), -libc::EAGAIN),
            vec![Io::PollOut(DOWN)]
        );
        // Ending while waiting for POLLOUT gives the buffer back at once
        // (no send is reading it).
        let mut sim = Sim::forwarding(limits());
        sim.recv(DOWN, 500, 2, true);
        sim.complete(Op::Send(DOWN), -libc::EAGAIN);
        let a = sim.tick_after(Duration::from_secs(3600));
        assert!(a.contains(&Io::GiveBack(2)), "{a:?}");
    }

    #[test]
    fn one_send_in_flight_and_recv_cancelled_past_one_queued_buffer() {
        let mut sim = Sim::forwarding(limits());
        let a = sim.recv(UP, 100, 1, true);
        assert!(matches!(a[..], [Io::Send { bid: 1, .. }]));
        // A second buffer while the first is being sent: no second send, and
        // the recv is cancelled (backpressure: taken + one buffer).
        assert_eq!(sim.recv(UP, 100, 2, true), vec![Io::CancelRecv(UP)]);
        // A buffer the kernel had already filled still arrives, and waits.
        assert!(sim.recv(UP, 100, 3, true).is_empty());
        assert!(sim.complete(Op::Recv(UP), -libc::ECANCELED).is_empty());
        let a = sim.complete(Op::Send(UP), 100);
        assert_eq!(a[0], Io::GiveBack(1));
        assert!(matches!(a[1], Io::Send { bid: 2, .. }));
        assert_eq!(a.len(), 2, "still two queued: no re-arm yet: {a:?}");
        let a = sim.complete(Op::Send(UP), 100);
        assert_eq!(
            a,
            vec![
                Io::GiveBack(2),
                Io::Send {
                    dir: UP,
                    bid: 3,
                    offset: 0,
                    len: 100
                },
                Io::Recv {
                    dir: UP,
                    buffers: 1
                }
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
            vec![Io::GiveBack(4), Io::Shutdown(UP)]
        );
        assert!(sim.complete(Op::Shutdown(UP), 0).is_empty());
        // The other direction keeps flowing after the half-close.
        assert!(matches!(
            sim.recv(DOWN, 5, 9, true)[..],
            [Io::Send { dir: DOWN, .. }]
        ));
        assert_eq!(sim.complete(Op::Send(DOWN), 5), vec![Io::GiveBack(9)]);
        assert_eq!(sim.complete(Op::Recv(DOWN), 0), vec![Io::Shutdown(DOWN)]);
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
            assert_eq!(sim.complete(case.op, case.res), vec![Io::CheckSent(dir)]);
            let a = sim.sent(dir);
            assert_eq!(a[0], Io::Abort(case.abort));
            assert_eq!(finish_reason(&a), Some(case.reason));
        }
        // A send that fails names the sink.
        let mut sim = Sim::forwarding(limits());
        sim.recv(UP, 10, 1, true);
        let a = sim.complete(Op::Send(UP), -libc::EPIPE);
        assert_eq!(a[0], Io::Abort(Side::Downstream));
        assert_eq!(finish_reason(&a), Some(CloseReason::UpstreamReset));
    }

    #[test]
    fn a_source_that_resets_has_what_it_sent_forwarded_before_the_reset() {
        let mut sim = Sim::forwarding(limits());
        let a = sim.recv(DOWN, 10, 1, true);
        assert!(a.contains(&Io::Send {
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
            vec![Io::Send {
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
                Io::GiveBack(1),
                Io::Send {
                    dir: DOWN,
                    bid: 2,
                    offset: 0,
                    len: 20
                }
            ]
        );
        let a = sim.complete(Op::Send(DOWN), 20);
        assert_eq!(a, vec![Io::GiveBack(2), Io::CheckSent(DOWN)]);
        // Not sent by the kernel yet: asked again on each tick.
        assert_eq!(
            sim.tick_after(Duration::from_millis(100)),
            vec![Io::CheckSent(DOWN)]
        );
        let a = sim.sent(DOWN);
        assert_eq!(a[0], Io::Abort(Side::Downstream));
        assert!(a.contains(&Io::GiveBack(3)), "{a:?}");
        assert_eq!(
            a.last(),
            Some(&Io::Finish(Close {
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
        assert_eq!(a, vec![Io::PollOut(DOWN), Io::SinkStalled(DOWN)]);
        // The pipe is drained without reading the failed source again.
        assert_eq!(
            sim.complete(Op::Writable(DOWN), libc::POLLOUT as i32),
            vec![Io::Pump {
                dir: DOWN,
                in_pipe: 600,
                read: false,
                max: u64::MAX
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
        assert_eq!(a, vec![Io::CheckSent(DOWN)]);
        let a = sim.sent(DOWN);
        assert_eq!(a[0], Io::Abort(Side::Downstream));
        assert_eq!(
            a.last(),
            Some(&Io::Finish(Close {
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
        assert_eq!(sim.complete(Op::Send(UP), 10), vec![Io::GiveBack(1)]);
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
        assert!(a.contains(&Io::GiveBack(2)));
        assert!(!a.contains(&Io::GiveBack(1)));
        assert_eq!(finish_reason(&a), Some(CloseReason::IdleTimeout));
        assert_eq!(
            sim.complete(Op::Send(UP), -libc::ECANCELED),
            vec![Io::GiveBack(1)]
        );
        // Late recv completions after the end give their buffers back too.
        assert_eq!(sim.recv(DOWN, 10, 5, false), vec![Io::GiveBack(5)]);
    }

    #[test]
    fn the_next_deadline_is_the_earliest_timer_and_bytes_push_it_later() {
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
        // A reset waiting for its sink (due at once).
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
        assert_eq!(a, vec![Io::WaitBuffers(UP)]);
        sim.conn.on_buffers(UP, &mut sim.out);
        assert_eq!(
            std::mem::take(&mut sim.out),
            vec![Io::Recv {
                dir: UP,
                buffers: 2
            }]
        );
    }

    #[test]
    fn a_bulk_direction_moves_to_splice_after_its_threshold() {
        let mut sim = Sim::forwarding(Limits {
            splice_after: 100,
            ..limits()
        });
        sim.recv(UP, 100, 1, true);
        let a = sim.complete(Op::Send(UP), 100);
        assert_eq!(a, vec![Io::GiveBack(1), Io::CancelRecv(UP)]);
        let a = sim.complete(Op::Recv(UP), -libc::ECANCELED);
        assert_eq!(a, vec![Io::EnterSplice(UP), Io::PollIn(UP)]);
        // Under load the half is rarely empty when a send completes: it stops
        // receiving as soon as it is over the threshold, drains, then moves.
        let mut sim = Sim::forwarding(Limits {
            splice_after: 50,
            ..limits()
        });
        let a = sim.recv(UP, 100, 1, false);
        // One buffer queued (being sent): room for one more.
        assert_eq!(
            a[1],
            Io::Recv {
                dir: UP,
                buffers: 1
            }
        );
        let a = sim.complete(Op::Send(UP), 60);
        assert_eq!(
            a,
            vec![
                Io::Send {
                    dir: UP,
                    bid: 1,
                    offset: 60,
                    len: 40
                },
                Io::CancelRecv(UP)
            ]
        );
        assert!(
            sim.complete(Op::Recv(UP), -libc::ECANCELED).is_empty(),
            "no re-arm while draining"
        );
        let a = sim.complete(Op::Send(UP), 40);
        assert_eq!(
            a,
            vec![Io::GiveBack(1), Io::EnterSplice(UP), Io::PollIn(UP)]
        );
        // The other direction still copies.
        assert!(matches!(
            sim.recv(DOWN, 5, 2, true)[..],
            [Io::Send { dir: DOWN, .. }]
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
            vec![Io::Pump {
                dir: UP,
                in_pipe: 0,
                read: true,
                max: u64::MAX
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
        assert_eq!(a, vec![Io::PollOut(UP), Io::SinkStalled(UP)]);
        let a = sim.complete(Op::Writable(UP), libc::POLLOUT as i32);
        assert_eq!(
            a,
            vec![Io::Pump {
                dir: UP,
                in_pipe: 700,
                read: true,
                max: u64::MAX
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
        assert_eq!(a, vec![Io::Shutdown(UP)]);
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
            vec![Io::Finish(Close {
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
        assert_eq!(
            std::mem::take(&mut sim.out),
            vec![Io::Recv {
                dir: UP,
                buffers: 2
            }]
        );
        assert!(matches!(
            sim.recv(UP, 10, 3, true)[..],
            [Io::Send { bid: 3, .. }]
        ));
    }
}
