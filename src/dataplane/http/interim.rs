//! Interim responses (1xx other than 101: `100 Continue`, `103 Early
//! Hints`) on their way to the client while the final head is still being
//! read: ringway writes each one (hop-by-hop fields removed) and sends it
//! as owned bytes; an HTTP/1.0 client gets none (RFC 9110 §15.2). A final
//! head that arrives while an interim one is still being sent waits for
//! it: the response's half starts only once nothing of the interim is in
//! flight.
#![forbid(unsafe_code)]

use std::time::Instant;

use crate::http1::Version;
use crate::http1::head::ResponseHead;
use crate::http1::write::{ResponseEdits, write_response};

use super::super::half::{Flow, Half, Outcome};
use super::super::io::Io;
use super::super::token::Side;
use super::exchange::Event;
use super::{HttpSession, Phase, reply_half};

/// Interim heads sent to the client during one exchange.
#[derive(Debug)]
pub(crate) struct Interim {
    /// Sending the current heads (owned bytes).
    half: Box<Half>,
    /// Heads written while the half was busy.
    queued: Vec<u8>,
    /// Bytes sent by the halves before the current one.
    sent_before: u64,
    /// A final head (and the bytes after it) that arrived while an interim
    /// head was still being sent.
    held: Option<(Box<ResponseHead>, Vec<u8>)>,
}

impl Interim {
    fn start(bytes: Vec<u8>, out: &mut Vec<Io>) -> Interim {
        Interim {
            half: reply_half(bytes, out),
            queued: Vec::new(),
            sent_before: 0,
            held: None,
        }
    }

    fn push(&mut self, bytes: Vec<u8>, out: &mut Vec<Io>) {
        self.queued.extend_from_slice(&bytes);
        self.advance(out);
    }

    /// The next heads once the half in flight is done.
    fn advance(&mut self, out: &mut Vec<Io>) {
        if self.half.flow() == Flow::Complete && !self.queued.is_empty() {
            self.sent_before += self.half.moved();
            self.half = reply_half(std::mem::take(&mut self.queued), out);
        }
    }

    /// Something of the interim heads is still to send or in flight.
    pub fn busy(&self) -> bool {
        self.half.flow() != Flow::Complete || !self.queued.is_empty()
    }

    /// Nothing of it is in flight on the client's socket.
    pub fn quiet(&self) -> bool {
        self.half.is_quiescent()
    }

    pub fn moved(&self) -> u64 {
        self.sent_before + self.half.moved()
    }

    pub fn outbox(&self) -> Option<&[u8]> {
        self.half.outbox()
    }

    /// Keep a final head until the interim heads are sent.
    pub fn hold(&mut self, head: ResponseHead, rest: Vec<u8>) {
        self.held = Some((Box::new(head), rest));
    }

    /// A send (or the readiness to send) completed: the next heads, or,
    /// once all are sent, the final head that waited.
    pub fn on_send(&mut self, res: i32, ready: bool, out: &mut Vec<Io>) -> Event {
        let outcome = match ready {
            true => self.half.on_ready(res, out),
            false => self.half.on_send(res, out),
        };
        if let Outcome::Reset(Side::Downstream) = outcome {
            return Event::DownstreamReset;
        }
        self.advance(out);
        match self.held.take() {
            Some((head, rest)) if !self.busy() => Event::ResponseHead { head, rest },
            held => {
                self.held = held;
                Event::Active
            }
        }
    }
}

impl HttpSession {
    /// The upstream sent an interim head: relayed to an HTTP/1.1 client,
    /// dropped for a 1.0 one; then the rest of the response head input.
    pub(super) fn relay_interim(&mut self, head: ResponseHead, now: Instant, out: &mut Vec<Io>) {
        self.last_active = now;
        let relay = self
            .request
            .as_ref()
            .is_some_and(|r| r.version() == Version::Http11);
        let Phase::Exchange(x) = &mut self.phase else {
            return;
        };
        if relay {
            let mut bytes = Vec::with_capacity(head.len());
            let edits = ResponseEdits {
                version: Version::Http11,
                keep_alive: true,
                ops: &[],
                dechunk: false,
            };
            write_response(&head, &edits, &mut bytes);
            match &mut x.interim {
                Some(i) => i.push(bytes, out),
                None => x.interim = Some(Box::new(Interim::start(bytes, out))),
            }
        }
        let next = x.parse_response_head(out);
        self.on_event(next, now, out);
    }
}
