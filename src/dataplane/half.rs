//! One direction of a connection (downstream → upstream, or back), written
//! once and instantiated twice. Sans-io: completions in, [`Io`]s out.
//!
//! A half starts on the copy path (multishot recv into the worker's buffer
//! ring, one send in flight) and, once it has moved
//! `splice_after` bytes ([`Half::start`]), moves to the splice path (readiness
//! from the ring, `splice(2)` by the worker through a pooled pipe).
#![forbid(unsafe_code)]

mod copy;
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

impl CopyPath {
    /// Nothing received, nothing in flight.
    fn new() -> CopyPath {
        CopyPath {
            recv: Recv::Idle,
            send: Send::Idle,
            outbox: None,
            queue: VecDeque::with_capacity(MAX_QUEUED_BUFFERS + 1),
        }
    }
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
    /// Only on the copy path: a scanned body splices only what the limit
    /// bounds ([`Half::splice_next`]).
    pub fn limit_next(&mut self, limit: Option<u64>) {
        debug_assert!(!self.is_splicing(), "a scanned body on the splice path");
        self.budget = limit.unwrap_or(NO_LIMIT);
    }

    /// On the copy path: move to the splice path as soon as what the half
    /// holds is sent (`true`), or stay on the copy path (`false`). A
    /// chunked body asks for it when a large chunk's data is what is left
    /// under the half's limit ([`Half::limit_next`]), and takes it back
    /// when a buffer received meanwhile crossed the chunk's end.
    pub fn splice_next(&mut self, splice: bool) {
        debug_assert!(!self.is_splicing(), "asked to splice on the splice path");
        self.splice_after = if splice { 0 } else { u64::MAX };
    }

    /// After [`Flow::Complete`]: forward the next `limit` bytes of the
    /// source on the copy path (`None`: to the end of the stream), from
    /// either path; the pipe is empty at a completion. A chunked body goes
    /// back to copying after a spliced chunk, to read the chunk's CRLF and
    /// the next size line.
    pub fn resume_copy(&mut self, limit: Option<u64>, out: &mut Vec<Io>) {
        if self.flow != Flow::Complete {
            return;
        }
        debug_assert!(self.leftover.is_none(), "leftover left behind");
        self.splice_after = u64::MAX;
        if self.is_splicing() {
            self.engine = Engine::Copy(CopyPath::new());
        }
        self.resume(limit, out);
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
}

/// The budget of a half without a byte limit (no stream reaches it).
pub(super) const NO_LIMIT: u64 = u64::MAX;

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

    fn pumped(read: u64, written: u64) -> Pump {
        Pump {
            read,
            written,
            in_pipe: 0,
            source: SourceState::Open,
            sink: SinkState::Ok,
        }
    }

    /// An unlimited half on the copy path receives a buffer of 40 bytes
    /// that leaves 60 of a large chunk's data to come, as a chunked body
    /// hands it over: limited to the chunk's end and asked to splice.
    fn chunk_of_100_after_40() -> (Half, Vec<Io>) {
        let mut out = Vec::new();
        let mut h = Half::start_limited(UP, u64::MAX, Vec::new(), None, &mut out);
        out.clear();
        h.limit_next(Some(100));
        h.splice_next(true);
        h.on_recv(40, Some(1), true, &mut out);
        (h, out)
    }

    #[test]
    fn a_large_chunk_splices_exactly_its_data_then_copying_resumes() {
        let (mut h, mut out) = chunk_of_100_after_40();
        assert_eq!(
            out,
            vec![
                Io::Send {
                    dir: UP,
                    bid: 1,
                    offset: 0,
                    len: 40
                },
                Io::CancelRecv(UP)
            ]
        );
        out.clear();
        h.on_send(40, &mut out);
        assert_eq!(out, vec![Io::GiveBack(1)], "the cancel is still in flight");
        out.clear();
        h.on_recv(-libc::ECANCELED, None, false, &mut out);
        assert_eq!(out, vec![Io::EnterSplice(UP), Io::PollIn(UP)]);
        out.clear();
        h.on_ready(1, &mut out);
        assert_eq!(
            out,
            vec![Io::Pump {
                dir: UP,
                in_pipe: 0,
                read: true,
                max: 60
            }],
            "a splice bounded by the chunk's data left"
        );
        out.clear();
        h.on_pump(pumped(60, 60), &mut out);
        assert_eq!((h.flow(), h.moved()), (Flow::Complete, 100));
        assert!(h.take_leftover().is_empty());
        h.resume_copy(None, &mut out);
        assert!(!h.is_splicing(), "back to copying for the chunk's CRLF");
        assert_eq!(
            out,
            vec![Io::Recv {
                dir: UP,
                buffers: 2
            }]
        );
        out.clear();
        h.on_recv(5000, Some(2), true, &mut out);
        assert!(
            matches!(out.as_slice(), [Io::Send { len: 5000, .. }]),
            "unlimited again: {out:?}"
        );
    }

    #[test]
    fn a_splice_asked_for_is_taken_back_when_a_buffer_crosses_the_chunk() {
        let (mut h, mut out) = chunk_of_100_after_40();
        out.clear();
        // The multishot recv delivered past the chunk's end before its
        // cancel: the decoder saw it all, so the half takes it all.
        h.limit_next(None);
        h.splice_next(false);
        h.on_recv(300, Some(2), true, &mut out);
        h.on_send(40, &mut out);
        h.on_send(300, &mut out);
        h.on_recv(-libc::ECANCELED, None, false, &mut out);
        assert!(!h.is_splicing());
        assert!(!out.contains(&Io::EnterSplice(UP)), "{out:?}");
        assert_eq!(
            out.last(),
            Some(&Io::Recv {
                dir: UP,
                buffers: 2
            })
        );
        assert_eq!((h.flow(), h.moved()), (Flow::Open, 340));
        assert!(h.leftover.is_none());
    }

    /// Found by the HTTP simulation (seed 5142 with large chunks): the ring
    /// ran dry just as a chunk's half stopped receiving to splice, and the
    /// half waited for buffers it no longer needed.
    #[test]
    fn a_half_bound_for_splice_does_not_wait_for_buffers() {
        let (mut h, mut out) = chunk_of_100_after_40();
        out.clear();
        h.on_send(40, &mut out);
        out.clear();
        h.on_recv(-libc::ENOBUFS, None, false, &mut out);
        assert_eq!(
            out,
            vec![Io::WaitBuffers(UP), Io::EnterSplice(UP), Io::PollIn(UP)]
        );
        // Buffers coming back later change nothing.
        out.clear();
        h.on_buffers(&mut out);
        assert!(out.is_empty(), "{out:?}");
        assert!(h.is_splicing());
    }

    /// Found by the HTTP simulation (seed 5142): the ring ran dry as the
    /// recv of a half through its limit was being cancelled, with nothing
    /// left to send: the half must complete then, not wait for buffers.
    #[test]
    fn a_half_through_its_limit_completes_when_the_ring_runs_dry() {
        let (mut h, _) = limited(7, u64::MAX);
        let mut out = Vec::new();
        h.on_recv(7, Some(1), true, &mut out);
        assert!(out.contains(&Io::CancelRecv(UP)));
        h.on_send(7, &mut out);
        assert_eq!(h.flow(), Flow::Open, "the cancel is on its way");
        out.clear();
        h.on_recv(-libc::ENOBUFS, None, false, &mut out);
        assert_eq!(h.flow(), Flow::Complete);
    }

    #[test]
    fn a_body_refused_a_pipe_completes_its_limit_on_the_copy_path() {
        let (mut h, out) = limited(1000, 0);
        assert_eq!(out, vec![Io::EnterSplice(UP), Io::PollIn(UP)]);
        let mut out = Vec::new();
        h.on_ready(1, &mut out);
        out.clear();
        h.on_no_pipe(&mut out);
        assert!(!h.is_splicing());
        h.on_recv(1000, Some(3), true, &mut out);
        h.on_send(1000, &mut out);
        h.on_recv(-libc::ECANCELED, None, false, &mut out);
        assert_eq!((h.flow(), h.moved()), (Flow::Complete, 1000));
        out.clear();
        h.resume_copy(Some(10), &mut out);
        assert_eq!(
            out,
            vec![Io::Recv {
                dir: UP,
                buffers: 2
            }]
        );
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
