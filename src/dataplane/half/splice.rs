//! The splice path of a half: the ring reports readiness (POLL_ADD), the
//! worker splices through a pooled pipe ([`Io::Pump`]), and the half keeps
//! only what the pipe holds and what it waits for.
#![forbid(unsafe_code)]

use super::{CopyPath, Engine, Flow, Half, NO_LIMIT, Outcome};
use crate::dataplane::io::{Io, Pump, SinkState, SourceState};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wait {
    /// A pump is due (the worker runs it right after these actions).
    Pumping,
    /// POLLIN armed on the source.
    Readable,
    /// POLLOUT armed on the sink; the pipe holds bytes.
    Writable,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct SplicePath {
    /// Bytes in this direction's pipe (the pipe is pooled when this is 0).
    in_pipe: u32,
    wait: Wait,
}

impl Half {
    pub(super) fn enter_splice(&mut self, out: &mut Vec<Io>) {
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
            self.engine = Engine::Copy(CopyPath::new());
            // Never try the pipe pool again for this half.
            self.splice_after = u64::MAX;
            self.advance_copy(out);
        }
    }

    /// Readiness on the splice path: pump now.
    pub(super) fn splice_ready(&mut self, out: &mut Vec<Io>) {
        let Engine::Splice(s) = &mut self.engine else {
            return;
        };
        debug_assert_ne!(s.wait, Wait::Pumping, "readiness during a pump");
        // Errors and hang-ups show up as readiness; the splice reports them.
        s.wait = Wait::Pumping;
        out.push(Io::Pump {
            dir: self.dir,
            in_pipe: s.in_pipe,
            read: self.flow == Flow::Open && self.budget != 0,
            max: self.budget,
        });
    }

    /// The next message on the splice path: wait for the source.
    pub(super) fn splice_resume(&mut self, out: &mut Vec<Io>) {
        if let Engine::Splice(s) = &mut self.engine {
            s.wait = Wait::Readable;
            out.push(Io::PollIn(self.dir));
        }
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
        if self.budget != NO_LIMIT {
            self.budget = self.budget.saturating_sub(pump.read);
        }
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
        } else if self.budget == 0 {
            self.flow = Flow::Complete;
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
}
