//! HTTP/1.1 as a session, sans-io: requests read one after another from
//! the client's connection, each routed under the plan current when its
//! head arrived, forwarded on an upstream connection from the worker's
//! keep-alive pool (or answered by ringway itself), its response forwarded
//! back; then the next request, which may already be in the bytes read.
//!
//! ```text
//! ReadHead --head--> Routing --local answer--> Reply ------------------------------\
//!    ^                  \--forward--> Connecting --reused / connected--> Exchange --+--> Between (keep-alive)
//!    |                                   ^   \--fail, tries left: Release, Checkout |    or Finished
//!    \--- Between: the next head parsed from the input, or read -------------------/
//! ```
//! A request's bytes move through `exchange.rs` (bodies bounded by their
//! framing); what it decided is in `request.rs`. Everything a request
//! reports (Istio's request metrics, one access-log line) is handed to the
//! worker with [`Io::Report`] when it ends.
#![forbid(unsafe_code)]

mod current;
mod exchange;
mod interim;
pub mod request;
mod response;
mod tunnel;
mod upgrade;
mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::http1::BodyFraming;
use crate::http1::head::{RequestHead, RequestScanner, parse_request};

use super::Settings;
use super::half::{Flow, Half};
use super::io::{Close, CloseReason, Completion, Io};
use super::plan::Plan;
use super::token::{Dir, Op};
use exchange::{Exchange, Response};
pub use request::Request;
use request::{Decision, LocalAnswer};

/// Limits of an HTTP connection (README "HTTP routing": limits and
/// timeouts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// A request head must arrive whole within this from its first byte
    /// (408): the EDGE profile's request-headers timeout.
    pub head_timeout: Duration,
    /// No byte either way while a request is open (408 before the
    /// response, a reset after): the EDGE profile's stream idle timeout.
    pub stream_idle: Duration,
    /// A keep-alive client connection with no request open closes after
    /// this (Envoy's HTTP idle timeout).
    pub idle_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            head_timeout: Duration::from_secs(60),
            stream_idle: Duration::from_secs(300),
            idle_timeout: Duration::from_secs(3600),
        }
    }
}

#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Phase {
    /// Waiting for a request head: a single-shot recv is in flight.
    ReadHead,
    /// No recv in flight, between requests or between reads of a head: a
    /// request just ended and the next head is looked for in the input,
    /// bytes of the client's still come back from a body's half
    /// ([`Io::Leftover`]), or the ring had no buffer ([`Io::WaitBuffers`]).
    Between,
    /// [`Io::Route`] is out for the head parsed.
    Routing {
        head: Box<RequestHead>,
        started: Instant,
    },
    /// [`Io::Checkout`] is out, or a CONNECT is in flight.
    Connecting,
    Exchange(Box<Exchange>),
    /// A WebSocket request upgraded: the connection is a TCP tunnel, to
    /// its end (`tunnel.rs`).
    Tunnel(Box<tunnel::Tunnel>),
    /// Sending a local answer; `close`: the connection ends after it.
    /// (Boxed: the session of an idle connection stays small.)
    Reply {
        half: Box<Half>,
        close: bool,
    },
    Finished {
        reason: CloseReason,
        /// Buffers of sends still in flight, given back when they complete.
        sending: [Option<u16>; 2],
    },
}

/// One HTTP/1.1 client connection.
#[derive(Debug)]
pub struct HttpSession {
    /// The listener's address: its identity across plans.
    listener: SocketAddr,
    peer: SocketAddr,
    opened: Instant,
    limits: HttpLimits,
    /// Bytes left in a body (or a chunk) from which it splices
    /// ([`Settings::http_splice_threshold`]).
    splice_threshold: u64,
    /// Bytes after which a WebSocket tunnel's direction splices, as a TCP
    /// connection's does ([`Settings::splice_after`]).
    tunnel_splice_after: u64,
    /// The plan of the current (or last) request.
    plan: Arc<Plan>,
    /// Its listener's index in that plan.
    listener_index: usize,
    /// Bytes read from the client that no request took yet.
    input: Vec<u8>,
    /// [`Io::Leftover`]s asked for and not answered yet: bytes of the
    /// client's that belong in `input` before the next head is looked for.
    leftovers: u32,
    /// When the first byte of the head being read arrived.
    head_since: Option<Instant>,
    /// Where the end of that head was looked for so far.
    scanner: RequestScanner,
    phase: Phase,
    request: Option<Box<Request>>,
    /// A finished request, until the worker takes its report.
    done: Option<Box<Request>>,
    /// Close after the current response (drain, listener gone).
    closing: bool,
    last_active: Instant,
    /// Bytes written to the upstream and to the client by finished
    /// requests.
    moved: [u64; 2],
}

impl HttpSession {
    /// A connection accepted at `now` on listener `listener` of `plan`:
    /// reads its first request head.
    pub fn open(
        plan: Arc<Plan>,
        listener: usize,
        peer: SocketAddr,
        settings: &Settings,
        now: Instant,
        out: &mut Vec<Io>,
    ) -> HttpSession {
        let address = plan.table.listeners[listener].address;
        out.push(Io::RecvOnce(Dir::ToUpstream));
        HttpSession {
            listener: address,
            peer,
            opened: now,
            limits: settings.http,
            splice_threshold: settings.http_splice_threshold,
            tunnel_splice_after: settings.splice_after,
            plan,
            listener_index: listener,
            input: Vec::new(),
            leftovers: 0,
            head_since: None,
            scanner: RequestScanner::new(),
            phase: Phase::ReadHead,
            request: None,
            done: None,
            closing: false,
            last_active: now,
            moved: [0, 0],
        }
    }

    pub fn opened(&self) -> Instant {
        self.opened
    }

    pub fn on_completion(&mut self, c: Completion<'_>, now: Instant, out: &mut Vec<Io>) {
        match &mut self.phase {
            Phase::ReadHead => match c.op {
                Op::Recv(Dir::ToUpstream) => {
                    self.phase = Phase::Between;
                    self.on_head_bytes(&c, now, out);
                }
                _ => give_back(&c, out),
            },
            Phase::Between | Phase::Routing { .. } => give_back(&c, out),
            Phase::Connecting => match c.op {
                Op::Connect => self.on_connect(c.res, now, out),
                _ => give_back(&c, out),
            },
            Phase::Exchange(x) => {
                let event = x.on_completion(&c, out);
                self.on_event(event, now, out);
            }
            Phase::Tunnel(t) => {
                let from = out.len();
                t.conn.on_completion(c, now, out);
                self.after_tunnel(from, out);
            }
            Phase::Reply { half, close } => {
                let close = *close;
                match c.op {
                    Op::Send(Dir::ToDownstream) => {
                        if let super::half::Outcome::Reset(_) = half.on_send(c.res, out) {
                            return self.finish(CloseReason::DownstreamReset, out);
                        }
                    }
                    Op::Writable(Dir::ToDownstream) => {
                        half.on_ready(c.res, out);
                    }
                    _ => give_back(&c, out),
                }
                if half.flow() == Flow::Complete {
                    self.moved[1] += half.moved();
                    // Counted: the reply is over (nothing of it in flight).
                    self.phase = Phase::Between;
                    self.request_done(close, now, out);
                }
            }
            Phase::Finished { sending, .. } => {
                give_back(&c, out);
                if let Op::Send(d) = c.op {
                    if let Some(bid) = sending[d.index()].take() {
                        out.push(Io::GiveBack(bid));
                        if c.res > 0 {
                            self.moved[d.index()] += u64::from(c.res.unsigned_abs());
                        }
                    }
                }
            }
        }
    }

    /// Bytes of a request head arrived (or the client closed or failed).
    fn on_head_bytes(&mut self, c: &Completion<'_>, now: Instant, out: &mut Vec<Io>) {
        match (c.res, c.bid) {
            (n, Some(bid)) if n > 0 => {
                self.input.extend_from_slice(c.data);
                out.push(Io::GiveBack(bid));
                self.last_active = now;
                self.head_since.get_or_insert(now);
                self.parse_head(now, out);
            }
            (_, Some(bid)) => {
                out.push(Io::GiveBack(bid));
                self.finish(CloseReason::DownstreamReset, out);
            }
            (e, None) if e == -libc::ENOBUFS => out.push(Io::WaitBuffers(Dir::ToUpstream)),
            // The client closed between requests: the normal end of a
            // keep-alive connection.
            (0, None) if self.input.is_empty() => self.finish(CloseReason::Done, out),
            (_, None) => self.finish(CloseReason::DownstreamReset, out),
        }
    }

    /// Parse the head the input holds, or read more of it.
    fn parse_head(&mut self, now: Instant, out: &mut Vec<Io>) {
        if self.leftovers > 0 {
            // Bytes of the client's still come back from a body's half
            // ([`Io::Leftover`]): the head is looked for once they are in.
            self.phase = Phase::Between;
            return;
        }
        if self.input.is_empty() {
            self.phase = Phase::ReadHead;
            out.push(Io::RecvOnce(Dir::ToUpstream));
            return;
        }
        let started = *self.head_since.get_or_insert(now);
        // The scanner judges each new byte once: a head arriving in small
        // pieces costs what its size does.
        let whole = match self.scanner.scan(&self.input) {
            Ok(whole) => whole,
            Err(e) => return self.reject(e.status, e.detail, out),
        };
        if !whole {
            self.phase = Phase::ReadHead;
            out.push(Io::RecvOnce(Dir::ToUpstream));
            return;
        }
        self.scanner = RequestScanner::new();
        match parse_request(&self.input) {
            Ok(Some((head, used))) => {
                if let Err((status, detail)) = upgrade::classify(&head) {
                    return self.reject(status, detail, out);
                }
                self.input.drain(..used);
                self.head_since = None;
                self.phase = Phase::Routing {
                    head: Box::new(head),
                    started,
                };
                out.push(Io::Route);
            }
            Ok(None) => self.reject(431, "http1.headers_too_large", out),
            Err(e) => self.reject(e.status, e.detail, out),
        }
    }

    /// A head ringway refuses: the reply, then the connection closes
    /// (nothing behind a bad head is served). Logged as a request without
    /// a parsed head, with flag `DPE` (downstream protocol error). An
    /// HTTP/2 client gets what it can read instead of a reply: SETTINGS and
    /// GOAWAY `HTTP_1_1_REQUIRED`.
    fn reject(&mut self, status: u16, detail: &'static str, out: &mut Vec<Io>) {
        self.input.clear();
        out.push(Io::Reject { status, detail });
        let bytes = if detail == crate::http1::head::detail::H2_PREFACE {
            upgrade::h2_refusal()
        } else {
            request::bare_reply(&LocalAnswer::error(status, "DPE", detail))
        };
        self.phase = Phase::Reply {
            half: reply_half(bytes, out),
            close: true,
        };
    }

    /// [`Io::Route`]: the plan current now. A request runs under it when
    /// it still has this connection's listener; else under the plan the
    /// connection had, and the connection closes after the response.
    /// Returns the plan the request runs under.
    pub fn on_route(
        &mut self,
        current: &Arc<Plan>,
        id: [u64; 2],
        now: Instant,
        out: &mut Vec<Io>,
    ) -> Option<Arc<Plan>> {
        let Phase::Routing { .. } = self.phase else {
            return None;
        };
        let Phase::Routing { head, started } =
            std::mem::replace(&mut self.phase, Phase::Connecting)
        else {
            return None;
        };
        match current.table.listener_index(self.listener) {
            Some(index) => {
                self.plan = Arc::clone(current);
                self.listener_index = index;
            }
            None => self.closing = true,
        }
        let websocket = upgrade::wants_websocket(&head);
        let mut req = Box::new(Request::new(*head, started, id));
        req.websocket = websocket;
        let decision = req.route(&self.plan, self.listener_index);
        self.request = Some(req);
        match decision {
            Decision::Local(answer) => self.answer(&answer, now, out),
            Decision::Forward => out.push(Io::Checkout { fresh: false }),
        }
        Some(Arc::clone(&self.plan))
    }

    /// Answer the current request from ringway itself. Its body, when one
    /// is still to come, is not read: the connection closes after.
    fn answer(&mut self, answer: &LocalAnswer, _now: Instant, out: &mut Vec<Io>) {
        let Some(req) = self.request.as_mut() else {
            return;
        };
        let body_left = match req.framing() {
            BodyFraming::None => false,
            BodyFraming::Length(n) if n <= self.input.len() as u64 => {
                self.input.drain(..n as usize);
                false
            }
            _ => true,
        };
        let close = self.closing || body_left || !req.keep_alive();
        let bytes = req.local_reply(answer, close);
        self.phase = Phase::Reply {
            half: reply_half(bytes, out),
            close,
        };
    }

    /// Bytes of buffer `bid` a half read past its message: the start of
    /// the next request.
    pub fn on_leftover(&mut self, bid: u16, data: &[u8], now: Instant, out: &mut Vec<Io>) {
        self.input.extend_from_slice(data);
        out.push(Io::GiveBack(bid));
        self.leftovers = self.leftovers.saturating_sub(1);
        if self.leftovers == 0 && matches!(self.phase, Phase::Between) {
            self.parse_head(now, out);
        }
    }

    pub fn on_buffers(&mut self, dir: Dir, out: &mut Vec<Io>) {
        match &mut self.phase {
            Phase::Between if dir == Dir::ToUpstream => {
                self.phase = Phase::ReadHead;
                out.push(Io::RecvOnce(Dir::ToUpstream));
            }
            Phase::Exchange(x) => x.on_buffers(dir, out),
            Phase::Tunnel(t) => t.conn.on_buffers(dir, out),
            _ => {}
        }
    }

    /// The earliest instant a timer may fire.
    pub fn next_deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::ReadHead | Phase::Between => Some(match self.head_since {
                Some(since) => since + self.limits.head_timeout,
                None => self.last_active + self.limits.idle_timeout,
            }),
            Phase::Exchange(x) => {
                let idle = self.last_active + self.limits.stream_idle;
                let route = match (&x.response, &self.request) {
                    (Response::Head { .. }, Some(req)) => {
                        req.timeout(&self.plan).map(|t| req.started + t)
                    }
                    _ => None,
                };
                Some(route.map_or(idle, |r| r.min(idle)))
            }
            Phase::Tunnel(t) => t.conn.next_deadline(),
            Phase::Routing { .. }
            | Phase::Connecting
            | Phase::Reply { .. }
            | Phase::Finished { .. } => None,
        }
    }

    pub fn on_tick(&mut self, now: Instant, out: &mut Vec<Io>) {
        if let Phase::Tunnel(t) = &mut self.phase {
            let from = out.len();
            t.conn.on_tick(now, out);
            return self.after_tunnel(from, out);
        }
        let Some(deadline) = self.next_deadline() else {
            return;
        };
        if now < deadline {
            return;
        }
        match &self.phase {
            Phase::ReadHead | Phase::Between if self.head_since.is_some() => {
                self.reject(408, "request_header_timeout", out);
            }
            Phase::ReadHead | Phase::Between => self.finish(CloseReason::IdleTimeout, out),
            Phase::Exchange(x) => {
                let route_timeout = matches!(x.response, Response::Head { .. })
                    && self.request.as_ref().is_some_and(|r| {
                        r.timeout(&self.plan).is_some_and(|t| now >= r.started + t)
                    });
                if route_timeout {
                    self.upstream_failed(504, "UT", "response_timeout", now, out);
                } else if matches!(x.response, Response::Head { .. }) {
                    self.upstream_failed(408, "-", "stream_idle_timeout", now, out);
                } else {
                    self.finish(CloseReason::IdleTimeout, out);
                }
            }
            _ => {}
        }
    }

    /// The process started draining: an idle connection closes now, a
    /// busy one after its response (with `Connection: close`).
    pub fn wind_down(&mut self, out: &mut Vec<Io>) {
        self.closing = true;
        if let Phase::ReadHead | Phase::Between = self.phase {
            if self.head_since.is_none() && self.input.is_empty() {
                self.finish(CloseReason::Drained, out);
            }
        }
    }

    /// The process is stopping (the drain timeout passed): the connection
    /// ends now, a request in flight with it (`DR`).
    pub fn drain(&mut self, out: &mut Vec<Io>) {
        if let Some(req) = self.request.as_mut() {
            req.flags = "DR";
        }
        self.finish(CloseReason::Drained, out);
    }

    pub fn outbox(&self, dir: Dir) -> Option<&[u8]> {
        match &self.phase {
            Phase::Exchange(x) => x.outbox(dir),
            Phase::Reply { half, .. } if dir == Dir::ToDownstream => half.outbox(),
            Phase::Tunnel(t) => t.conn.outbox(dir),
            _ => None,
        }
    }

    pub fn moved(&self) -> [u64; 2] {
        match &self.phase {
            Phase::Tunnel(t) => {
                let m = t.conn.moved();
                [self.moved[0] + m[0], self.moved[1] + m[1]]
            }
            _ => self.moved,
        }
    }

    pub fn close(&self) -> Option<Close> {
        match &self.phase {
            Phase::Finished { reason, .. } => Some(Close {
                reason: *reason,
                to_upstream: self.moved[0],
                to_downstream: self.moved[1],
            }),
            Phase::Tunnel(t) => self.tunnel_close(t),
            _ => None,
        }
    }

    fn finish(&mut self, reason: CloseReason, out: &mut Vec<Io>) {
        if let Phase::Finished { .. } = self.phase {
            return;
        }
        if let Phase::Tunnel(t) = &mut self.phase {
            // Only the drain ends a tunnel from outside; it ends as a TCP
            // connection does.
            let from = out.len();
            t.conn.drain(out);
            return self.after_tunnel(from, out);
        }
        let mut sending = [None, None];
        match &self.phase {
            Phase::Exchange(x) => {
                let (idle, s) = x.buffers();
                for bid in idle {
                    out.push(Io::GiveBack(bid));
                }
                sending = s;
                let m = x.moved();
                self.moved[0] += m[0];
                self.moved[1] += m[1];
            }
            Phase::Reply { half, .. } => {
                for bid in half.idle_buffers() {
                    out.push(Io::GiveBack(bid));
                }
                self.moved[1] += half.moved();
            }
            _ => {}
        }
        if self.request.is_some() {
            self.report(out);
        }
        self.phase = Phase::Finished { reason, sending };
        out.push(Io::Finish(Close {
            reason,
            to_upstream: self.moved[0],
            to_downstream: self.moved[1],
        }));
    }
}

/// The half that sends a local reply (owned bytes) to the client, and
/// takes nothing from the upstream.
fn reply_half(bytes: Vec<u8>, out: &mut Vec<Io>) -> Box<Half> {
    Box::new(Half::start_limited(
        Dir::ToDownstream,
        u64::MAX,
        bytes,
        Some(0),
        out,
    ))
}

/// A completion's buffer nobody reads: back to the ring.
fn give_back(c: &Completion<'_>, out: &mut Vec<Io>) {
    if let Some(bid) = c.bid {
        out.push(Io::GiveBack(bid));
    }
}
