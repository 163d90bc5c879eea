//! One direction of a connection (downstream → upstream, or back), written
//! once and instantiated twice. Sans-io: completions in, [`Io`]s out.
//!
//! A half starts on the copy path (multishot recv into the worker's buffer
//! ring, one send in flight) and, once it has moved
//! `splice_after` bytes ([`Half::start`]), moves to the splice path (readiness
//! from the ring, `splice(2)` by the worker through a pooled pipe).
#![forbid(unsafe_code)]

mod splice;

use std::collections::VecDeque;

use super::io::Io;
use super::token::{Dir, Side};
use splice::SplicePath;

/// Buffers received but not yet fully sent, beyond which the multishot recv
/// is cancelled: the one being sent plus one more (backpressure).
pub const MAX_QUEUED_BUFFERS: usize = 2;

/// Where the half's stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// The source may deliver more bytes.
    Open,
    /// The source ended (FIN); what was read is still being written.
    Eof,
    /// SHUTDOWN(SHUT_WR) of the sink is in flight.
    ShuttingDown,
    /// Nothing more will move this way.
    Done,
    /// The source reset; what was read from it is still being written.
    Resetting,
    /// The source reset and everything read from it was written: the sink
    /// is reset once its socket has sent it all (a reset discards what the
    /// kernel has not sent yet).
    Reset,
    /// The half forwarded exactly its byte limit ([`Half::start_limited`]):
    /// nothing is in flight, the source stays open (the next message may
    /// follow), and what arrived past the limit waits in
    /// [`Half::take_leftover`].
    Complete,
}

/// Bytes received past a half's byte limit: `len` bytes of provided buffer
/// `bid` from `offset`. Whoever takes them ([`Half::take_leftover`]) owns
/// the buffer and gives it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leftover {
    pub bid: u16,
    pub offset: u32,
    pub len: u32,
}

/// A received provided buffer, and how much of it was sent already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Chunk {
    bid: u16,
    len: u32,
    sent: u32,
    /// The buffer also holds bytes past the half's limit (a [`Leftover`]
    /// names it): it is not given back when this chunk is sent.
    shared: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recv {
    /// No recv in flight.
    Idle,
    /// A multishot recv is in flight.
    Armed,
    /// The multishot recv is being cancelled (backpressure or promotion).
    Cancelling,
    /// The buffer ring ran dry (ENOBUFS); waiting for buffers to come back.
    Starved,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Send {
    Idle,
    /// The front chunk is being sent.
    InFlight,
    /// The sink was full (EAGAIN: sends carry MSG_DONTWAIT so that the kernel
    /// never hands them to an io-wq thread); POLLOUT is armed on it.
    SinkFull,
}

/// Bytes the connection owns, sent before anything received by the half:
/// today a ClientHello read before routing (and what came with it); heads,
/// local replies and TLS records next. Sent with a synchronous non-blocking
/// send(2) ([`Io::SendOwned`]), so no op ever reads this memory.
#[derive(Debug)]
struct Outbox {
    bytes: Vec<u8>,
    sent: usize,
}

#[derive(Debug)]
struct CopyPath {
    recv: Recv,
    send: Send,
    /// While `Some`, the half sends it first and does not receive.
    outbox: Option<Outbox>,
    queue: VecDeque<Chunk>,
}

#[derive(Debug)]
enum Engine {
    Copy(CopyPath),
    Splice(SplicePath),
}

/// What a completion did to the half, beyond the actions it emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Keep going.
    Continue,
    /// Bytes moved (the connection is not idle).
    Active,
    /// Writing to this side failed (reset, broken pipe). A source that
    /// fails is not an outcome: the half forwards what it read first
    /// ([`Flow::Resetting`]).
    Reset(Side),
}

/// Whether the sink has pushed back (a full socket) yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pushback {
    Never,
    /// [`Io::SinkStalled`] was emitted.
    Seen,
}

#[derive(Debug)]
pub struct Half {
    dir: Dir,
    flow: Flow,
    engine: Engine,
    pushback: Pushback,
    /// Bytes written to the sink.
    moved: u64,
    /// Bytes after which the half moves to the splice path.
    splice_after: u64,
    /// Bytes the half may still take from its source ([`NO_LIMIT`]: to
    /// the end of the stream).
    budget: u64,
    /// What arrived past the limit. Boxed on purpose (8 bytes instead of a
    /// `Vec`'s 24): only limited halves ever have any, and every idle
    /// connection holds two halves.
    #[allow(clippy::box_collection)]
    leftover: Option<Box<Vec<Leftover>>>,
}

impl Half {
    /// A half that starts moving bytes: emits its first actions.
    pub fn start(dir: Dir, splice_after: u64, out: &mut Vec<Io>) -> Half {
        Half::start_with_outbox(dir, splice_after, Vec::new(), out)
    }

    /// A half that first sends `outbox` (when not empty), then moves bytes.
    pub fn start_with_outbox(
        dir: Dir,
        splice_after: u64,
        outbox: Vec<u8>,
        out: &mut Vec<Io>,
    ) -> Half {
        Half::start_limited(dir, splice_after, outbox, None, out)
    }

    /// A half that sends `outbox`, then forwards at most `limit` bytes of
    /// its source (an HTTP body of known length, say) and stops there
    /// ([`Flow::Complete`]); `None`: to the end of the stream.
    pub fn start_limited(
        dir: Dir,
        splice_after: u64,
        outbox: Vec<u8>,
        limit: Option<u64>,
        out: &mut Vec<Io>,
    ) -> Half {
        let outbox = (!outbox.is_empty()).then_some(Outbox {
            bytes: outbox,
            sent: 0,
        });
        let has_outbox = outbox.is_some();
        let mut half = Half {
            dir,
            flow: Flow::Open,
            engine: Engine::Copy(CopyPath {
                recv: Recv::Idle,
                send: Send::Idle,
                outbox,
                queue: VecDeque::with_capacity(MAX_QUEUED_BUFFERS + 1),
            }),
            moved: 0,
            splice_after,
            pushback: Pushback::Never,
            budget: limit.unwrap_or(NO_LIMIT),
            leftover: None,
        };
        if splice_after == 0 && !has_outbox {
            half.enter_splice(out);
        } else {
            half.advance_copy(out);
        }
        half
    }

    pub fn flow(&self) -> Flow {
        self.flow
    }

    pub fn dir(&self) -> Dir {
        self.dir
    }

    pub fn moved(&self) -> u64 {
        self.moved
    }

    /// What is left of the outbox to send.
    pub fn outbox(&self) -> Option<&[u8]> {
        match &self.engine {
            Engine::Copy(CopyPath {
                outbox: Some(p), ..
            }) => p.bytes.get(p.sent..),
            Engine::Copy(_) | Engine::Splice(_) => None,
        }
    }

    pub fn is_splicing(&self) -> bool {
        matches!(self.engine, Engine::Splice(_))
    }

    /// A multishot recv completion: `bid` is the provided buffer it filled,
    /// `more` whether the recv stays armed.
    pub fn on_recv(
        &mut self,
        res: i32,
        bid: Option<u16>,
        more: bool,
        out: &mut Vec<Io>,
    ) -> Outcome {
        let Engine::Copy(copy) = &mut self.engine else {
            // A recv can only be in flight on the copy path.
            if let Some(bid) = bid {
                out.push(Io::GiveBack(bid));
            }
            return Outcome::Continue;
        };
        if !more {
            copy.recv = match copy.recv {
                Recv::Starved => Recv::Starved,
                _ => Recv::Idle,
            };
        }
        let outcome = match (res, bid) {
            (n, Some(bid)) if n > 0 => {
                if self.flow == Flow::Open {
                    // Up to the limit; the rest of the buffer is leftover.
                    let take = n.unsigned_abs().min(clamp(self.budget));
                    take_received(copy, &mut self.leftover, (bid, n.unsigned_abs()), take);
                    if self.budget != NO_LIMIT {
                        self.budget -= u64::from(take);
                    }
                } else {
                    debug_assert!(false, "recv data after EOF");
                    out.push(Io::GiveBack(bid));
                }
                Outcome::Active
            }
            (_, Some(bid)) => {
                out.push(Io::GiveBack(bid));
                Outcome::Continue
            }
            // A FIN past the limit ends the stream after the message,
            // not the message: the half completes, and whoever reads the
            // source next sees the end again (a recv returns 0 once more).
            (0, None) if self.budget == 0 => Outcome::Continue,
            (0, None) => {
                if self.flow == Flow::Open {
                    self.flow = Flow::Eof;
                }
                Outcome::Continue
            }
            (e, None) if e == -libc::ENOBUFS => {
                copy.recv = Recv::Starved;
                out.push(Io::WaitBuffers(self.dir));
                Outcome::Continue
            }
            // Cancelled (backpressure, promotion), or a non-blocking socket
            // with nothing to read: re-armed below when wanted.
            (e, None) if e == -libc::ECANCELED || e == -libc::EAGAIN => Outcome::Continue,
            // The source reset: what it sent before is still forwarded.
            (_, None) => {
                if self.flow == Flow::Open {
                    self.flow = Flow::Resetting;
                }
                Outcome::Continue
            }
        };
        self.advance_copy(out);
        outcome
    }

    /// Buffers came back to the ring after an ENOBUFS.
    pub fn on_buffers(&mut self, out: &mut Vec<Io>) {
        if let Engine::Copy(copy) = &mut self.engine {
            if copy.recv == Recv::Starved {
                copy.recv = Recv::Idle;
                self.advance_copy(out);
            }
        }
    }

    /// A send completion: `res` bytes of the front chunk were taken.
    pub fn on_send(&mut self, res: i32, out: &mut Vec<Io>) -> Outcome {
        let Engine::Copy(copy) = &mut self.engine else {
            debug_assert!(false, "send completion on the splice path");
            return Outcome::Continue;
        };
        if res == -libc::EAGAIN {
            copy.send = Send::SinkFull;
            out.push(Io::PollOut(self.dir));
            self.pushed_back(out);
            return Outcome::Continue;
        }
        copy.send = Send::Idle;
        if res <= 0 {
            return Outcome::Reset(self.dir.sink());
        }
        let n = res.unsigned_abs();
        if let Some(outbox) = &mut copy.outbox {
            outbox.sent += n as usize;
            self.moved += u64::from(n);
            if outbox.sent >= outbox.bytes.len() {
                copy.outbox = None;
            }
            self.advance_copy(out);
            return Outcome::Active;
        }
        let Some(front) = copy.queue.front_mut() else {
            debug_assert!(false, "send completion without a chunk");
            return Outcome::Continue;
        };
        front.sent += n;
        self.moved += u64::from(n);
        if front.sent >= front.len {
            if !front.shared {
                out.push(Io::GiveBack(front.bid));
            }
            copy.queue.pop_front();
        }
        self.advance_copy(out);
        Outcome::Active
    }

    /// The copy path's next step: send, re-arm, cancel for backpressure or
    /// promotion, shut down after EOF, or move to the splice path.
    fn advance_copy(&mut self, out: &mut Vec<Io>) {
        let dir = self.dir;
        let wants_splice = self.moved >= self.splice_after;
        let Engine::Copy(copy) = &mut self.engine else {
            return;
        };
        if copy.outbox.is_some() {
            // Nothing is received before the outbox is out.
            if copy.send == Send::Idle {
                copy.send = Send::InFlight;
                out.push(Io::SendOwned(dir));
            }
            return;
        }
        if copy.send == Send::Idle {
            if let Some(front) = copy.queue.front() {
                copy.send = Send::InFlight;
                out.push(Io::Send {
                    dir,
                    bid: front.bid,
                    offset: front.sent,
                    len: front.len - front.sent,
                });
            }
        }
        match self.flow {
            Flow::Open if self.budget == 0 => {
                // The limit is reached: receive no more, and complete once
                // what was taken is out.
                match copy.recv {
                    Recv::Armed => {
                        copy.recv = Recv::Cancelling;
                        out.push(Io::CancelRecv(dir));
                    }
                    Recv::Idle if copy.queue.is_empty() && copy.send == Send::Idle => {
                        self.flow = Flow::Complete;
                    }
                    Recv::Idle | Recv::Cancelling => {}
                    // Waiting for buffers it no longer needs.
                    Recv::Starved => copy.recv = Recv::Idle,
                }
                return;
            }
            Flow::Open => {}
            Flow::Eof => {
                if copy.queue.is_empty() && copy.send == Send::Idle && copy.recv == Recv::Idle {
                    self.flow = Flow::ShuttingDown;
                    out.push(Io::Shutdown(dir));
                }
                return;
            }
            Flow::Resetting => {
                if copy.queue.is_empty() && copy.send == Send::Idle {
                    self.flow = Flow::Reset;
                }
                return;
            }
            Flow::ShuttingDown | Flow::Done | Flow::Reset | Flow::Complete => return,
        }
        let drained = copy.queue.is_empty() && copy.send == Send::Idle;
        match copy.recv {
            // A bulk half stops receiving at once, so that what it holds can
            // drain and it can move to the splice path.
            Recv::Armed if copy.queue.len() >= MAX_QUEUED_BUFFERS || wants_splice => {
                copy.recv = Recv::Cancelling;
                out.push(Io::CancelRecv(dir));
            }
            Recv::Idle if wants_splice && drained => self.enter_splice(out),
            Recv::Idle if wants_splice => {}
            Recv::Idle if copy.queue.len() < MAX_QUEUED_BUFFERS => {
                copy.recv = Recv::Armed;
                // What keeps the half within "the sink took everything but
                // one buffer".
                let buffers = MAX_QUEUED_BUFFERS.saturating_sub(copy.queue.len()).max(1) as u32;
                out.push(Io::Recv { dir, buffers });
            }
            Recv::Idle | Recv::Armed | Recv::Cancelling | Recv::Starved => {}
        }
    }

    /// A readiness completion (POLLIN on the source or POLLOUT on the sink).
    pub fn on_ready(&mut self, res: i32, out: &mut Vec<Io>) -> Outcome {
        if res == -libc::ECANCELED {
            return Outcome::Continue;
        }
        match &mut self.engine {
            Engine::Splice(_) => self.splice_ready(out),
            Engine::Copy(copy) => {
                // The full sink can take bytes again: send the rest.
                if copy.send == Send::SinkFull {
                    copy.send = Send::Idle;
                    self.advance_copy(out);
                }
            }
        }
        Outcome::Continue
    }

    /// The sink is full: the first time, tell the worker
    /// ([`Io::SinkStalled`]).
    fn pushed_back(&mut self, out: &mut Vec<Io>) {
        if self.pushback == Pushback::Never {
            self.pushback = Pushback::Seen;
            out.push(Io::SinkStalled(self.dir));
        }
    }

    /// SHUTDOWN(SHUT_WR) of the sink completed (an error means the sink is
    /// gone already: nothing more to do either way).
    pub fn on_shutdown(&mut self) {
        self.flow = Flow::Done;
    }

    /// The buffer of the send in flight, if any.
    pub fn sending(&self) -> Option<u16> {
        match &self.engine {
            Engine::Copy(CopyPath {
                send: Send::InFlight,
                outbox: None,
                queue,
                ..
            }) => queue.front().map(|c| c.bid),
            Engine::Copy(_) | Engine::Splice(_) => None,
        }
    }

    /// Buffers this half holds that no op in flight uses (given back at once
    /// when the connection ends): queued chunks but the one being sent, and
    /// leftovers (a buffer split by the limit is named once, by its leftover).
    pub fn idle_buffers(&self) -> Vec<u16> {
        let sending = self.sending();
        let queued = match &self.engine {
            Engine::Copy(copy) => copy
                .queue
                .iter()
                .skip(usize::from(sending.is_some()))
                .filter(|c| !c.shared)
                .map(|c| c.bid)
                .collect(),
            Engine::Splice(_) => Vec::new(),
        };
        let leftover = self
            .leftover
            .iter()
            .flat_map(|l| l.iter())
            .map(|l| l.bid)
            .filter(|bid| Some(*bid) != sending);
        queued.into_iter().chain(leftover).collect()
    }

    /// What arrived past the limit, once the half is [`Flow::Complete`]:
    /// the caller owns those buffers now.
    pub fn take_leftover(&mut self) -> Vec<Leftover> {
        debug_assert_eq!(self.flow, Flow::Complete, "leftover taken mid-message");
        self.leftover.take().map_or_else(Vec::new, |l| *l)
    }

    /// After [`Flow::Complete`]: forward the next `limit` bytes of the
    /// source (`None`: to the end of the stream), leftovers taken or not.
    pub fn resume(&mut self, limit: Option<u64>, out: &mut Vec<Io>) {
        if self.flow != Flow::Complete {
            return;
        }
        self.budget = limit.unwrap_or(NO_LIMIT);
        self.flow = Flow::Open;
        match &mut self.engine {
            Engine::Copy(_) => self.advance_copy(out),
            Engine::Splice(_) => self.splice_resume(out),
        }
    }

    /// From the next byte received on, take at most `limit` more bytes of
    /// the source (`None`: no limit): a chunked HTTP body whose end was
    /// just found in the bytes about to be handed to [`Half::on_recv`].
    /// Only on the copy path (a scanned body never splices).
    pub fn limit_next(&mut self, limit: Option<u64>) {
        debug_assert!(!self.is_splicing(), "a scanned body on the splice path");
        self.budget = limit.unwrap_or(NO_LIMIT);
    }

    /// The half forwarded its whole limit: every byte taken was written,
    /// and nothing more will be taken, though the cancel of its receive may
    /// still be on its way back ([`Flow::Complete`] follows then).
    pub fn is_through(&self) -> bool {
        if self.flow == Flow::Complete {
            return true;
        }
        match &self.engine {
            Engine::Copy(copy) => {
                self.flow == Flow::Open
                    && self.budget == 0
                    && copy.queue.is_empty()
                    && copy.send == Send::Idle
                    && copy.outbox.is_none()
            }
            Engine::Splice(_) => false,
        }
    }

    /// Nothing of the half is in flight and nothing more will be: its
    /// sockets may be given up (an HTTP exchange that ends early).
    pub fn is_quiescent(&self) -> bool {
        // Through its limit, or shut down after the end of its stream:
        // nothing of it is in flight either way.
        if matches!(self.flow, Flow::Complete | Flow::Done) {
            return true;
        }
        match &self.engine {
            Engine::Copy(copy) => {
                copy.recv == Recv::Idle && copy.send == Send::Idle && copy.queue.is_empty()
            }
            Engine::Splice(_) => false,
        }
    }

    /// Queue `bytes` the connection owns (a head, a local reply) to go out
    /// before anything the half receives next, with [`Io::SendOwned`].
    /// Only between messages: the half holds no received bytes.
    pub fn push_outbox(&mut self, bytes: &[u8], out: &mut Vec<Io>) {
        let Engine::Copy(copy) = &mut self.engine else {
            debug_assert!(false, "an outbox on the splice path");
            return;
        };
        debug_assert!(copy.queue.is_empty(), "an outbox behind received bytes");
        match &mut copy.outbox {
            Some(o) => o.bytes.extend_from_slice(bytes),
            None => {
                copy.outbox = Some(Outbox {
                    bytes: bytes.to_vec(),
                    sent: 0,
                });
            }
        }
        self.advance_copy(out);
    }
}

/// Queue the first `take` bytes of the `n` received in buffer `bid`; the
/// rest is leftover (past the half's limit).
#[allow(clippy::box_collection)]
fn take_received(
    copy: &mut CopyPath,
    leftover: &mut Option<Box<Vec<Leftover>>>,
    (bid, n): (u16, u32),
    take: u32,
) {
    if take < n {
        leftover.get_or_insert_default().push(Leftover {
            bid,
            offset: take,
            len: n - take,
        });
    }
    if take > 0 {
        copy.queue.push_back(Chunk {
            bid,
            len: take,
            sent: 0,
            shared: take < n,
        });
    }
}

/// The budget of a half without a byte limit (no stream reaches it).
const NO_LIMIT: u64 = u64::MAX;

/// A byte count as a buffer length (a limit beyond 4 GiB caps nothing in
/// one buffer).
fn clamp(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::io::{Pump, SinkState, SourceState};

    const UP: Dir = Dir::ToUpstream;

    fn limited(limit: u64, splice_after: u64) -> (Half, Vec<Io>) {
        let mut out = Vec::new();
        let half = Half::start_limited(UP, splice_after, Vec::new(), Some(limit), &mut out);
        (half, out)
    }

    #[test]
    fn a_buffer_split_by_the_limit_sends_its_head_and_keeps_the_rest() {
        let (mut h, out) = limited(100, u64::MAX);
        assert_eq!(
            out,
            vec![Io::Recv {
                dir: UP,
                buffers: 2
            }]
        );
        let mut out = Vec::new();
        // 60 bytes, then 70 of which 40 are within the limit.
        h.on_recv(60, Some(1), true, &mut out);
        assert_eq!(
            out,
            vec![Io::Send {
                dir: UP,
                bid: 1,
                offset: 0,
                len: 60
            }]
        );
        out.clear();
        h.on_recv(70, Some(2), true, &mut out);
        assert_eq!(
            out,
            vec![Io::CancelRecv(UP)],
            "the limit is reached: no more recv"
        );
        out.clear();
        h.on_send(60, &mut out);
        assert_eq!(
            out,
            vec![
                Io::GiveBack(1),
                Io::Send {
                    dir: UP,
                    bid: 2,
                    offset: 0,
                    len: 40
                }
            ]
        );
        out.clear();
        // At finish now: buffer 2 is being sent, so it is not idle.
        assert!(h.idle_buffers().is_empty());
        h.on_send(40, &mut out);
        assert!(
            out.is_empty(),
            "the split buffer is not given back: {out:?}"
        );
        assert_eq!(h.moved(), 100);
        assert_eq!(h.flow(), Flow::Open, "the cancel is still in flight");
        h.on_recv(-libc::ECANCELED, None, false, &mut out);
        assert_eq!(h.flow(), Flow::Complete);
        assert_eq!(h.idle_buffers(), vec![2], "a finish would give it back");
        assert_eq!(
            h.take_leftover(),
            vec![Leftover {
                bid: 2,
                offset: 40,
                len: 30
            }]
        );
        assert!(h.idle_buffers().is_empty(), "the caller owns it now");
        // The next message: a limit of 5.
        h.resume(Some(5), &mut out);
        assert_eq!(
            out,
            vec![Io::Recv {
                dir: UP,
                buffers: 2
            }]
        );
    }

    #[test]
    fn a_recv_past_the_limit_is_all_leftover() {
        let (mut h, _) = limited(10, u64::MAX);
        let mut out = Vec::new();
        h.on_recv(10, Some(1), true, &mut out);
        out.clear();
        // The multishot recv delivered once more before the cancel.
        h.on_recv(8, Some(2), true, &mut out);
        assert!(!out.iter().any(|io| matches!(io, Io::Send { bid: 2, .. })));
        assert_eq!(h.idle_buffers(), vec![2]);
        h.on_send(10, &mut out);
        h.on_recv(-libc::ECANCELED, None, false, &mut out);
        assert_eq!(h.flow(), Flow::Complete);
        assert_eq!(
            h.take_leftover(),
            vec![Leftover {
                bid: 2,
                offset: 0,
                len: 8
            }]
        );
        assert!(out.contains(&Io::GiveBack(1)));
        assert!(!out.contains(&Io::GiveBack(2)));
    }

    #[test]
    fn the_splice_path_pumps_at_most_the_limit_then_completes() {
        let (mut h, out) = limited(1000, 0);
        assert_eq!(out, vec![Io::EnterSplice(UP), Io::PollIn(UP)]);
        let mut out = Vec::new();
        h.on_ready(1, &mut out);
        assert_eq!(
            out,
            vec![Io::Pump {
                dir: UP,
                in_pipe: 0,
                read: true,
                max: 1000
            }]
        );
        out.clear();
        let pump = |read, written, in_pipe| Pump {
            read,
            written,
            in_pipe,
            source: SourceState::Open,
            sink: if in_pipe > 0 {
                SinkState::WouldBlock
            } else {
                SinkState::Ok
            },
        };
        h.on_pump(pump(600, 600, 0), &mut out);
        assert_eq!(out, vec![Io::PollIn(UP)]);
        out.clear();
        h.on_ready(1, &mut out);
        assert_eq!(
            out,
            vec![Io::Pump {
                dir: UP,
                in_pipe: 0,
                read: true,
                max: 400
            }]
        );
        out.clear();
        // The last 400 read; 100 still in the pipe: wait for the sink.
        h.on_pump(pump(400, 300, 100), &mut out);
        assert_eq!(out, vec![Io::PollOut(UP), Io::SinkStalled(UP)]);
        out.clear();
        h.on_ready(4, &mut out);
        assert_eq!(
            out,
            vec![Io::Pump {
                dir: UP,
                in_pipe: 100,
                read: false,
                max: 0
            }]
        );
        out.clear();
        h.on_pump(pump(0, 100, 0), &mut out);
        assert!(out.is_empty());
        assert_eq!((h.flow(), h.moved()), (Flow::Complete, 1000));
        h.resume(None, &mut out);
        assert_eq!(out, vec![Io::PollIn(UP)]);
    }

    #[test]
    fn an_outbox_pushed_between_messages_goes_out_before_what_follows() {
        let (mut h, _) = limited(0, u64::MAX);
        assert_eq!(h.flow(), Flow::Complete, "nothing to forward");
        let mut out = Vec::new();
        h.push_outbox(b"HTTP/1.1 200 OK\r\n\r\n", &mut out);
        assert_eq!(out, vec![Io::SendOwned(UP)]);
        assert_eq!(h.outbox(), Some(&b"HTTP/1.1 200 OK\r\n\r\n"[..]));
        out.clear();
        h.on_send(19, &mut out);
        assert!(out.is_empty());
        assert_eq!(h.outbox(), None);
        assert_eq!(h.moved(), 19);
        h.resume(Some(3), &mut out);
        assert_eq!(
            out,
            vec![Io::Recv {
                dir: UP,
                buffers: 2
            }]
        );
    }

    /// Seeded runs of a limited half against a model kernel: random recv
    /// sizes, partial and refused sends, cancels that race data, the splice
    /// path with a sink that takes part of the pipe. Every run forwards
    /// exactly its limit, hands back every byte past it as leftover, and
    /// never gives a buffer back twice or loses one.
    #[test]
    fn seeded_limited_halves_forward_exactly_their_limit() {
        for seed in 1..=400u64 {
            let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut next = move |n: u64| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % n.max(1)
            };
            let limit = next(40_000);
            let splice_after = [0, next(20_000), u64::MAX][next(3) as usize];
            let mut out = Vec::new();
            let mut h = Half::start_limited(UP, splice_after, Vec::new(), Some(limit), &mut out);
            let (mut armed, mut sending, mut polled) = (false, None::<u32>, false);
            let mut starved = false;
            let (mut read, mut in_pipe) = (0u64, 0u32);
            let mut held: Vec<u16> = Vec::new();
            let mut free: Vec<u16> = (0..8).collect();
            let mut steps = 0;
            while h.flow() != Flow::Complete {
                steps += 1;
                assert!(steps < 100_000, "seed {seed}: stuck");
                let mut more = Vec::new();
                for io in std::mem::take(&mut out) {
                    match io {
                        Io::Recv { .. } => armed = true,
                        Io::CancelRecv(_) => {}
                        Io::Send { len, .. } => sending = Some(len),
                        Io::GiveBack(bid) => {
                            let i = held.iter().position(|b| *b == bid);
                            assert!(i.is_some(), "seed {seed}: {bid} given back twice");
                            held.swap_remove(i.unwrap_or(0));
                            free.push(bid);
                        }
                        Io::PollIn(_) | Io::PollOut(_) => polled = true,
                        Io::Pump { read: r, max, .. } => {
                            let want = if r { next(20_000).min(max) } else { 0 };
                            read += want;
                            let total = in_pipe + want as u32;
                            let written = if next(3) == 0 {
                                next(u64::from(total)) as u32
                            } else {
                                total
                            };
                            in_pipe = total - written;
                            let p = Pump {
                                read: want,
                                written: u64::from(written),
                                in_pipe,
                                source: SourceState::WouldBlock,
                                sink: if in_pipe > 0 {
                                    SinkState::WouldBlock
                                } else {
                                    SinkState::Ok
                                },
                            };
                            h.on_pump(p, &mut more);
                        }
                        Io::WaitBuffers(_) => starved = true,
                        Io::EnterSplice(_) | Io::SinkStalled(_) => {}
                        other => panic!("seed {seed}: unexpected {other:?}"),
                    }
                }
                if !more.is_empty() {
                    out = more;
                    continue;
                }
                match next(3) {
                    0 if armed => {
                        let Some(bid) = free.pop() else {
                            armed = false;
                            h.on_recv(-libc::ENOBUFS, None, false, &mut out);
                            continue;
                        };
                        let n = 1 + next(4096) as i32;
                        read += n as u64;
                        held.push(bid);
                        let more = next(5) != 0;
                        armed = more;
                        h.on_recv(n, Some(bid), more, &mut out);
                    }
                    0 if starved && !free.is_empty() => {
                        starved = false;
                        h.on_buffers(&mut out);
                    }
                    0 => {}
                    1 if sending.is_some() => {
                        let len = sending.take().unwrap_or(0);
                        let res = match next(6) {
                            0 => -libc::EAGAIN,
                            1 => 1 + next(u64::from(len)) as i32,
                            _ => len as i32,
                        };
                        h.on_send(res, &mut out);
                    }
                    _ if polled => {
                        polled = false;
                        h.on_ready(1, &mut out);
                    }
                    _ if armed && !h.is_splicing() && h.budget == 0 => {
                        // The cancel of a recv that got nothing more.
                        armed = false;
                        h.on_recv(-libc::ECANCELED, None, false, &mut out);
                    }
                    _ if armed && next(4) == 0 && h.moved() >= splice_after => {
                        armed = false;
                        h.on_recv(-libc::ECANCELED, None, false, &mut out);
                    }
                    _ => {}
                }
            }
            assert_eq!(h.moved(), limit, "seed {seed}: forwarded exactly the limit");
            let leftover = h.take_leftover();
            let past: u64 = leftover.iter().map(|l| u64::from(l.len)).sum();
            assert_eq!(
                read - limit,
                past,
                "seed {seed}: every byte past the limit kept"
            );
            for l in &leftover {
                let i = held.iter().position(|b| *b == l.bid);
                assert!(i.is_some(), "seed {seed}: leftover in a buffer not held");
                held.swap_remove(i.unwrap_or(0));
            }
            assert!(held.is_empty(), "seed {seed}: buffers lost: {held:?}");
        }
    }
}
