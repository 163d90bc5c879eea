//! One request's exchange with its upstream connection, sans-io: the
//! request half (the head ringway wrote, then the body, bounded by its
//! framing), the response head read with single-shot recvs, then the
//! response half (the head ringway wrote, then the body, bounded the same
//! way). Bodies move through [`Half`], limited to the bytes left in their
//! message, so the next pipelined message is never read early; where a
//! body takes the splice path is `exchange/body.rs`.
#![forbid(unsafe_code)]

mod body;

pub(crate) use body::Body;

use crate::http1::chunked::ChunkedDecoder;
use crate::http1::head::{MAX_RESPONSE_HEAD, ResponseContext, ResponseHead, parse_response};

use super::super::half::{Flow, Half, Outcome};
use super::super::io::{Completion, Io, Pump};
use super::super::token::{Dir, Op};
use super::interim::Interim;

/// The response side of an exchange.
#[derive(Debug)]
pub(crate) enum Response {
    /// Reading the head: bytes so far; whether a single-shot recv is in
    /// flight.
    Head { input: Vec<u8>, reading: bool },
    /// Forwarding it.
    Body(ResponseBody),
}

#[derive(Debug)]
pub(crate) struct ResponseBody {
    pub body: Body,
    /// The upstream connection may carry another request after this one.
    pub reusable: bool,
    /// The server's `Keep-Alive: timeout`.
    pub server_timeout: Option<std::time::Duration>,
    /// Close-delimited: the upstream's FIN is its end.
    pub delimited: bool,
    /// An HTTP/1.0 client and a chunked response: the body is decoded and
    /// sent close-delimited.
    pub dechunk: Option<Box<Dechunk>>,
}

/// Most decoded bytes held for a 1.0 client before reading stops until
/// they are sent (one provided buffer's worth).
const DECHUNK_HOLD: usize = 64 * 1024;

/// A chunked response decoded for an HTTP/1.0 client: single-shot recvs
/// from the upstream, their payload copied out and sent as owned bytes by
/// one short-lived half after another. The copy path, on purpose: 1.0
/// clients are rare and a decoded body cannot splice.
#[derive(Debug)]
pub(crate) struct Dechunk {
    pub decoder: ChunkedDecoder,
    /// Decoded bytes waiting for the half in flight to finish.
    pub pending: Vec<u8>,
    /// A single-shot recv from the upstream is in flight.
    pub reading: bool,
    /// Bytes written by the halves before the current one.
    pub sent_before: u64,
}

impl ResponseBody {
    /// Bytes written to the client so far.
    pub fn moved(&self) -> u64 {
        self.body.half.moved() + self.dechunk.as_ref().map_or(0, |d| d.sent_before)
    }

    /// A de-chunked response: bytes from the upstream.
    fn dechunk_recv(&mut self, c: &Completion<'_>, out: &mut Vec<Io>) -> Event {
        let Some(d) = self.dechunk.as_mut() else {
            return Event::Continue;
        };
        d.reading = false;
        match (c.res, c.bid) {
            (n, Some(bid)) if n > 0 => {
                let pending = &mut d.pending;
                let fed = d
                    .decoder
                    .feed(c.data, &mut |piece| pending.extend_from_slice(piece));
                out.push(Io::GiveBack(bid));
                match fed {
                    // Bytes past the body were never asked for.
                    Ok(used) if used < c.data.len() => self.reusable = false,
                    Ok(_) => {}
                    Err(e) => return Event::BadResponse(e.detail()),
                }
            }
            (_, Some(bid)) => {
                out.push(Io::GiveBack(bid));
                return Event::UpstreamReset;
            }
            (e, None) if e == -libc::ENOBUFS => {
                out.push(Io::WaitBuffers(Dir::ToDownstream));
                return Event::Continue;
            }
            (_, None) => return Event::UpstreamReset,
        }
        self.dechunk_advance(out);
        Event::Active
    }

    /// Send what was decoded once the half in flight is done, and read on
    /// while little is held.
    fn dechunk_advance(&mut self, out: &mut Vec<Io>) {
        let Some(d) = self.dechunk.as_mut() else {
            return;
        };
        if self.body.half.flow() == Flow::Complete && !d.pending.is_empty() {
            d.sent_before += self.body.half.moved();
            let bytes = std::mem::take(&mut d.pending);
            self.body.half = Half::start_limited(Dir::ToDownstream, u64::MAX, bytes, Some(0), out);
        }
        if !d.reading && !d.decoder.is_done() && d.pending.len() < DECHUNK_HOLD {
            d.reading = true;
            out.push(Io::RecvOnce(Dir::ToDownstream));
        }
    }

    /// Everything went to the client.
    fn done(&self) -> bool {
        let half_done = self.body.chunks.is_none()
            && matches!(self.body.half.flow(), Flow::Complete | Flow::Done);
        match &self.dechunk {
            Some(d) => half_done && d.decoder.is_done() && d.pending.is_empty(),
            None => half_done,
        }
    }

    fn quiescent(&self) -> bool {
        self.body.half.is_quiescent() && self.dechunk.as_ref().is_none_or(|d| !d.reading)
    }
}

/// What a completion did to the exchange, for the session to act on.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Event {
    Continue,
    /// Bytes moved.
    Active,
    /// The upstream closed or failed before any response byte.
    UpstreamGone,
    /// An interim (1xx) head, for the session to relay or drop.
    Interim(Box<ResponseHead>),
    /// A complete response head (`consumed` bytes of the input were it).
    ResponseHead {
        head: Box<ResponseHead>,
        rest: Vec<u8>,
    },
    /// The upstream's response head is not one ringway forwards.
    BadResponse(&'static str),
    /// The client's body is malformed (a bad chunk).
    BadRequestBody(&'static str),
    /// Writing to a side failed, or a side reset mid-message.
    DownstreamReset,
    UpstreamReset,
}

/// A request in flight upstream.
#[derive(Debug)]
pub(crate) struct Exchange {
    /// It rides a keep-alive connection taken from the pool.
    pub reused: bool,
    pub request: Body,
    pub response: Response,
    /// Whether the request was HEAD, and its version (how the response is
    /// framed).
    pub context: ResponseContext,
    /// The upstream failed before any response byte, while something was
    /// still in flight on its socket: decided once that ended.
    pub gone: bool,
    /// Interim heads relayed to the client (`interim.rs`).
    pub interim: Option<Box<Interim>>,
}

impl Exchange {
    /// Start sending `request` (its outbox: ringway's head and the body
    /// bytes that came with it) and reading the response head.
    pub fn start(
        reused: bool,
        request: Body,
        context: ResponseContext,
        out: &mut Vec<Io>,
    ) -> Exchange {
        out.push(Io::RecvOnce(Dir::ToDownstream));
        Exchange {
            reused,
            request,
            response: Response::Head {
                input: Vec::new(),
                reading: true,
            },
            context,
            gone: false,
            interim: None,
        }
    }

    pub fn on_completion(&mut self, c: &Completion<'_>, out: &mut Vec<Io>) -> Event {
        match c.op {
            Op::Recv(Dir::ToUpstream) => match self.request.on_recv(c, out) {
                Ok(outcome) => from_outcome(outcome, Dir::ToUpstream),
                Err(detail) => Event::BadRequestBody(detail),
            },
            Op::Send(Dir::ToUpstream) => {
                from_outcome(self.request.on_send(c.res, out), Dir::ToUpstream)
            }
            Op::Readable(Dir::ToUpstream) | Op::Writable(Dir::ToUpstream) => {
                from_outcome(self.request.on_ready(c.res, out), Dir::ToUpstream)
            }
            Op::Shutdown(Dir::ToUpstream) => {
                self.request.half.on_shutdown();
                Event::Continue
            }
            Op::Recv(Dir::ToDownstream) => self.on_response_recv(c, out),
            Op::Send(Dir::ToDownstream) => match &mut self.response {
                Response::Body(r) => {
                    let event = from_outcome(r.body.on_send(c.res, out), Dir::ToDownstream);
                    r.dechunk_advance(out);
                    event
                }
                Response::Head { .. } => self.on_interim_sent(c.res, false, out),
            },
            Op::Readable(Dir::ToDownstream) | Op::Writable(Dir::ToDownstream) => {
                match &mut self.response {
                    Response::Body(r) => {
                        from_outcome(r.body.on_ready(c.res, out), Dir::ToDownstream)
                    }
                    Response::Head { .. } => self.on_interim_sent(c.res, true, out),
                }
            }
            Op::Shutdown(Dir::ToDownstream) => {
                if let Response::Body(r) = &mut self.response {
                    r.body.half.on_shutdown();
                }
                Event::Continue
            }
            Op::Connect | Op::ConnectTimeout | Op::Cancel(_) | Op::CancelRecv(_) => Event::Continue,
        }
    }

    fn on_response_recv(&mut self, c: &Completion<'_>, out: &mut Vec<Io>) -> Event {
        let (input, reading) = match &mut self.response {
            Response::Body(r) if r.dechunk.is_some() => return r.dechunk_recv(c, out),
            Response::Body(r) => {
                return match r.body.on_recv(c, out) {
                    Ok(outcome) => from_outcome(outcome, Dir::ToDownstream),
                    Err(detail) => Event::BadResponse(detail),
                };
            }
            Response::Head { input, reading } => (input, reading),
        };
        *reading = false;
        match (c.res, c.bid) {
            (n, Some(bid)) if n > 0 => {
                input.extend_from_slice(c.data);
                out.push(Io::GiveBack(bid));
            }
            (_, Some(bid)) => {
                out.push(Io::GiveBack(bid));
                return Event::UpstreamGone;
            }
            (e, None) if e == -libc::ENOBUFS => {
                out.push(Io::WaitBuffers(Dir::ToDownstream));
                return Event::Continue;
            }
            (_, None) if input.is_empty() => return Event::UpstreamGone,
            // Closed or failed mid-head.
            (_, None) => return Event::BadResponse("upstream_reset_mid_head"),
        }
        self.parse_response_head(out)
    }

    /// A send of interim heads to the client completed.
    fn on_interim_sent(&mut self, res: i32, ready: bool, out: &mut Vec<Io>) -> Event {
        match &mut self.interim {
            Some(i) => i.on_send(res, ready, out),
            None => Event::Continue,
        }
    }

    /// Nothing of the interim heads is in flight on the client's socket.
    pub fn interim_quiet(&self) -> bool {
        self.interim.as_ref().is_none_or(|i| i.quiet())
    }

    /// Parse what the head input holds: an interim (1xx) head goes to the
    /// session (which comes back here for the rest), a final head is
    /// handed to it with the bytes after it, or held while interim heads
    /// are still being sent.
    pub(crate) fn parse_response_head(&mut self, out: &mut Vec<Io>) -> Event {
        let Response::Head { input, reading } = &mut self.response else {
            return Event::Continue;
        };
        match parse_response(input, self.context) {
            Ok(Some((head, used))) if head.is_interim() => {
                input.drain(..used);
                Event::Interim(Box::new(head))
            }
            Ok(Some((head, used))) => {
                let rest = input.split_off(used);
                match &mut self.interim {
                    Some(i) if i.busy() => {
                        i.hold(head, rest);
                        Event::Active
                    }
                    _ => Event::ResponseHead {
                        head: Box::new(head),
                        rest,
                    },
                }
            }
            Ok(None) if input.len() < MAX_RESPONSE_HEAD => {
                *reading = true;
                out.push(Io::RecvOnce(Dir::ToDownstream));
                Event::Active
            }
            Ok(None) => Event::BadResponse("upstream_response_headers_too_large"),
            Err(e) => Event::BadResponse(e.detail),
        }
    }

    /// Bytes a completed body read past its message: the client's are the
    /// next pipelined request (handed back to the session with
    /// [`Io::Leftover`]); the upstream's were never asked for (given back,
    /// and the connection is not reused).
    /// Returns how many [`Io::Leftover`] it asked for.
    pub fn take_leftovers(&mut self, out: &mut Vec<Io>) -> u32 {
        let mut asked = 0;
        if self.request.is_complete() {
            for l in self.request.half.take_leftover() {
                out.push(Io::Leftover {
                    dir: Dir::ToUpstream,
                    bid: l.bid,
                    offset: l.offset,
                    len: l.len,
                });
                asked += 1;
            }
        }
        if let Response::Body(r) = &mut self.response {
            if r.body.is_complete() {
                for l in r.body.half.take_leftover() {
                    out.push(Io::GiveBack(l.bid));
                    r.reusable = false;
                }
            }
        }
        asked
    }

    /// The result of a pump on a body's splice path.
    pub fn on_pump(&mut self, dir: Dir, pump: Pump, out: &mut Vec<Io>) -> Event {
        let body = match (dir, &mut self.response) {
            (Dir::ToUpstream, _) => &mut self.request,
            (Dir::ToDownstream, Response::Body(r)) => &mut r.body,
            (Dir::ToDownstream, Response::Head { .. }) => return Event::Continue,
        };
        from_outcome(body.on_pump(pump, out), dir)
    }

    /// No pipe for a pump: the body goes back to copying.
    pub fn on_no_pipe(&mut self, dir: Dir, out: &mut Vec<Io>) {
        match (dir, &mut self.response) {
            (Dir::ToUpstream, _) => self.request.on_no_pipe(out),
            (Dir::ToDownstream, Response::Body(r)) => r.body.on_no_pipe(out),
            (Dir::ToDownstream, Response::Head { .. }) => {}
        }
    }

    /// A message cut short: the direction whose source ended (FIN) or
    /// reset before its body was through. A close-delimited response
    /// ending is its normal end, not this.
    pub fn broken(&self) -> Option<Dir> {
        let cut = |h: &Half, delimited: bool| match h.flow() {
            Flow::Resetting | Flow::Reset => true,
            Flow::Eof | Flow::ShuttingDown | Flow::Done => !delimited,
            Flow::Open | Flow::Complete => false,
        };
        if cut(&self.request.half, false) {
            return Some(Dir::ToUpstream);
        }
        match &self.response {
            Response::Body(r) if cut(&r.body.half, r.delimited) => Some(Dir::ToDownstream),
            _ => None,
        }
    }

    /// Buffers came back after an ENOBUFS on `dir`.
    pub fn on_buffers(&mut self, dir: Dir, out: &mut Vec<Io>) {
        match (dir, &mut self.response) {
            (Dir::ToUpstream, _) => self.request.on_buffers(out),
            (Dir::ToDownstream, Response::Body(r)) => match &mut r.dechunk {
                Some(d) => {
                    d.reading = true;
                    out.push(Io::RecvOnce(Dir::ToDownstream));
                }
                None => r.body.on_buffers(out),
            },
            (Dir::ToDownstream, Response::Head { reading, .. }) => {
                *reading = true;
                out.push(Io::RecvOnce(Dir::ToDownstream));
            }
        }
    }

    /// The response is forwarded entirely (or, close-delimited, to its end).
    pub fn response_done(&self) -> bool {
        match &self.response {
            Response::Body(r) => r.done(),
            Response::Head { .. } => false,
        }
    }

    /// What is left of the direction's outbox.
    pub fn outbox(&self, dir: Dir) -> Option<&[u8]> {
        match (dir, &self.response) {
            (Dir::ToUpstream, _) => self.request.half.outbox(),
            (Dir::ToDownstream, Response::Body(r)) => r.body.half.outbox(),
            (Dir::ToDownstream, Response::Head { .. }) => {
                self.interim.as_ref().and_then(|i| i.outbox())
            }
        }
    }

    /// Nothing of the exchange is in flight on the upstream socket: it may
    /// be given up (to the pool, closed, or replaced for a retry).
    pub fn upstream_quiet(&self) -> bool {
        let response_quiet = match &self.response {
            Response::Head { reading, .. } => !reading,
            Response::Body(r) => r.quiescent(),
        };
        self.request.half.is_quiescent() && response_quiet
    }

    /// Bytes written to the upstream and to the downstream.
    pub fn moved(&self) -> [u64; 2] {
        let down = match &self.response {
            Response::Body(r) => r.moved(),
            Response::Head { .. } => 0,
        };
        let interim = self.interim.as_ref().map_or(0, |i| i.moved());
        [self.request.half.moved(), down + interim]
    }

    /// Buffers held that no op in flight uses, and the ones being sent.
    pub fn buffers(&self) -> (Vec<u16>, [Option<u16>; 2]) {
        let mut idle = self.request.half.idle_buffers();
        let mut sending = [self.request.half.sending(), None];
        if let Response::Body(r) = &self.response {
            idle.extend(r.body.half.idle_buffers());
            sending[1] = r.body.half.sending();
        }
        (idle, sending)
    }
}

fn from_outcome(outcome: Outcome, dir: Dir) -> Event {
    match outcome {
        Outcome::Continue => Event::Continue,
        Outcome::Active => Event::Active,
        Outcome::Reset(side) => match side {
            super::super::token::Side::Downstream => Event::DownstreamReset,
            super::super::token::Side::Upstream if dir == Dir::ToUpstream => Event::UpstreamGone,
            super::super::token::Side::Upstream => Event::UpstreamReset,
        },
    }
}
