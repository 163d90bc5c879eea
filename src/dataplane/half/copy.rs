//! The copy path of a half: multishot recv into the worker's provided
//! buffers, one send in flight, backpressure by cancelling the recv, and
//! the move to the splice path once the half wants it.
#![forbid(unsafe_code)]

use super::{
    Chunk, CopyPath, Engine, Flow, Half, Leftover, MAX_QUEUED_BUFFERS, NO_LIMIT, Outbox, Outcome,
    Recv, Send,
};
use crate::dataplane::io::Io;
use crate::dataplane::token::Dir;

impl Half {
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
    pub(super) fn advance_copy(&mut self, out: &mut Vec<Io>) {
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
                if at_limit(copy, dir, out) {
                    self.flow = Flow::Complete;
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
            // A half bound for the splice path no longer waits for buffers
            // (the ring ran dry as it stopped receiving).
            Recv::Idle | Recv::Starved if wants_splice && drained => self.enter_splice(out),
            Recv::Idle if wants_splice => {}
            Recv::Starved if wants_splice => copy.recv = Recv::Idle,
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

/// A byte count as a buffer length (a limit beyond 4 GiB caps nothing in
/// one buffer).
fn clamp(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The limit is reached: receive no more, and complete (true) once what
/// was taken is out.
fn at_limit(copy: &mut CopyPath, dir: Dir, out: &mut Vec<Io>) -> bool {
    match copy.recv {
        Recv::Armed => {
            copy.recv = Recv::Cancelling;
            out.push(Io::CancelRecv(dir));
        }
        // Starved: waiting for buffers it no longer needs (the ring ran
        // dry as the recv was being cancelled).
        Recv::Idle | Recv::Starved if copy.queue.is_empty() && copy.send == Send::Idle => {
            copy.recv = Recv::Idle;
            return true;
        }
        Recv::Starved => copy.recv = Recv::Idle,
        Recv::Idle | Recv::Cancelling => {}
    }
    false
}
