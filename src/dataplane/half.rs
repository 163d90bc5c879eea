//! One direction of a connection (downstream → upstream, or back), written
//! once and instantiated twice. Sans-io: completions in, [`Io`]s out.
//!
//! A half starts on the copy path (multishot recv into the worker's buffer
//! ring, one send in flight) and, once it has moved
//! `splice_after` bytes ([`Half::start`]), moves to the splice path (readiness
//! from the ring, `splice(2)` by the worker through a pooled pipe).
#![forbid(unsafe_code)]

use std::collections::VecDeque;

use super::io::{Io, Pump, SinkState, SourceState};
use super::token::{Dir, Side};

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
}

/// A received provided buffer, and how much of it was sent already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Chunk {
    bid: u16,
    len: u32,
    sent: u32,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// A pump is due (the worker runs it right after these actions).
    Pumping,
    /// POLLIN armed on the source.
    Readable,
    /// POLLOUT armed on the sink; the pipe holds bytes.
    Writable,
}

#[derive(Debug, Clone, Copy)]
struct SplicePath {
    /// Bytes in this direction's pipe (the pipe is pooled when this is 0).
    in_pipe: u32,
    wait: Wait,
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
                    copy.queue.push_back(Chunk {
                        bid,
                        len: n.unsigned_abs(),
                        sent: 0,
                    });
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
            out.push(Io::GiveBack(front.bid));
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
            Flow::ShuttingDown | Flow::Done | Flow::Reset => return,
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

    fn enter_splice(&mut self, out: &mut Vec<Io>) {
        self.engine = Engine::Splice(SplicePath {
            in_pipe: 0,
            wait: Wait::Readable,
        });
        out.push(Io::EnterSplice(self.dir));
        out.push(Io::PollIn(self.dir));
    }

    /// The worker found no pipe for a pump: go back to copying.
    pub fn on_no_pipe(&mut self, out: &mut Vec<Io>) {
        if let Engine::Splice(s) = self.engine {
            debug_assert_eq!(s.in_pipe, 0);
            self.engine = Engine::Copy(CopyPath {
                recv: Recv::Idle,
                send: Send::Idle,
                outbox: None,
                queue: VecDeque::with_capacity(MAX_QUEUED_BUFFERS + 1),
            });
            // Never try the pipe pool again for this half.
            self.splice_after = u64::MAX;
            self.advance_copy(out);
        }
    }

    /// A readiness completion (POLLIN on the source or POLLOUT on the sink).
    pub fn on_ready(&mut self, res: i32, out: &mut Vec<Io>) -> Outcome {
        if res == -libc::ECANCELED {
            return Outcome::Continue;
        }
        let s = match &mut self.engine {
            Engine::Splice(s) => s,
            Engine::Copy(copy) => {
                // The full sink can take bytes again: send the rest.
                if copy.send == Send::SinkFull {
                    copy.send = Send::Idle;
                    self.advance_copy(out);
                }
                return Outcome::Continue;
            }
        };
        debug_assert_ne!(s.wait, Wait::Pumping, "readiness during a pump");
        // Errors and hang-ups show up as readiness; the splice reports them.
        s.wait = Wait::Pumping;
        out.push(Io::Pump {
            dir: self.dir,
            in_pipe: s.in_pipe,
            read: self.flow == Flow::Open,
            max: u64::MAX,
        });
        Outcome::Continue
    }

    /// The result of a pump the worker ran for this half.
    pub fn on_pump(&mut self, pump: Pump, out: &mut Vec<Io>) -> Outcome {
        let dir = self.dir;
        let Engine::Splice(s) = &mut self.engine else {
            debug_assert!(false, "pump on the copy path");
            return Outcome::Continue;
        };
        s.in_pipe = pump.in_pipe;
        self.moved += pump.written;
        let moved_any = pump.read > 0 || pump.written > 0;
        if let SinkState::Failed = pump.sink {
            return Outcome::Reset(dir.sink());
        }
        let full = pump.sink == SinkState::WouldBlock;
        // A source that reset still has what it sent forwarded.
        let reset = pump.source == SourceState::Failed || self.flow == Flow::Resetting;
        let eof = pump.source == SourceState::Eof || self.flow == Flow::Eof;
        if s.in_pipe > 0 {
            // The sink is full (or the pump yielded): wait until it takes more.
            s.wait = Wait::Writable;
            out.push(Io::PollOut(dir));
            if reset {
                self.flow = Flow::Resetting;
            } else if eof {
                self.flow = Flow::Eof;
            }
        } else if reset {
            self.flow = Flow::Reset;
        } else if eof {
            self.flow = Flow::ShuttingDown;
            out.push(Io::Shutdown(dir));
        } else {
            s.wait = Wait::Readable;
            out.push(Io::PollIn(dir));
        }
        if full {
            self.pushed_back(out);
        }
        if moved_any {
            Outcome::Active
        } else {
            Outcome::Continue
        }
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
    /// when the connection ends).
    pub fn idle_buffers(&self) -> impl Iterator<Item = u16> + '_ {
        let (skip, queue) = match &self.engine {
            Engine::Copy(copy) => (
                usize::from(copy.send == Send::InFlight && copy.outbox.is_none()),
                Some(copy.queue.iter().map(|c| c.bid)),
            ),
            Engine::Splice(_) => (0, None),
        };
        queue.into_iter().flatten().skip(skip)
    }
}
