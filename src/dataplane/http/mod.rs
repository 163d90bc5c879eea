//! HTTP/1.1 as a session, sans-io: requests read one after another from
//! the client's connection, each routed under the plan current when its
//! head arrived, forwarded on an upstream connection from the worker's
//! keep-alive pool (or answered by ringway itself), its response forwarded
//! back; then the next request, which may already be in the bytes read.
//!
//! ```text
//! ReadHead --head--> Routing --local answer--> Reply ------------------------------\
//!    ^                  \--forward--> Connecting --reused / connected--> Exchange --+--> ReadHead (keep-alive)
//!    |                                   ^   \--fail, tries left: Release, Checkout |    or Finished
//!    \-----------------------------------+------------------------------------------/
//! ```
//! A request's bytes move through `exchange.rs` (bodies bounded by their
//! framing); what it decided is in `request.rs`. Everything a request
//! reports (Istio's request metrics, one access-log line) is handed to the
//! worker with [`Io::Report`] when it ends.
#![forbid(unsafe_code)]

mod exchange;
pub mod request;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::http1::{BodyFraming, Version};
use crate::http1::chunked::ChunkedDecoder;
use crate::http1::head::{MAX_REQUEST_HEAD, RequestHead, ResponseContext, ResponseHead, parse_request};
use crate::http1::write::{ResponseEdits, write_response};
use crate::routing::http::RequestView;
use crate::routing::table::{ClusterId, RequestHashKey, RouteId};

use super::balancer::fnv1a_bytes;

use super::half::{Flow, Half};
use super::io::{Checkout, Close, CloseReason, Completion, Io, Pump, Release};
use super::plan::Plan;
use super::token::{Dir, Op};
use exchange::{Body, Event, Exchange, Response, ResponseBody};
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
    /// Bytes after which a body of known length moves to the splice path.
    pub splice_after: u64,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            head_timeout: Duration::from_secs(60),
            stream_idle: Duration::from_secs(300),
            idle_timeout: Duration::from_secs(3600),
            splice_after: super::forward::SPLICE_AFTER_BYTES,
        }
    }
}

#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Phase {
    /// Waiting for a request head; a single-shot recv is in flight when
    /// `reading`.
    ReadHead { reading: bool },
    /// [`Io::Route`] is out for the head parsed.
    Routing { head: Box<RequestHead>, started: Instant },
    /// [`Io::Checkout`] is out, or a CONNECT is in flight.
    Connecting,
    Exchange(Box<Exchange>),
    /// Sending a local answer; `close`: the connection ends after it.
    Reply { half: Half, close: bool },
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
    /// The plan of the current (or last) request.
    plan: Arc<Plan>,
    /// Its listener's index in that plan.
    listener_index: usize,
    /// Bytes read from the client that no request took yet.
    input: Vec<u8>,
    /// When the first byte of the head being read arrived.
    head_since: Option<Instant>,
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
        limits: HttpLimits,
        now: Instant,
        out: &mut Vec<Io>,
    ) -> HttpSession {
        let address = plan.table.listeners[listener].address;
        out.push(Io::RecvOnce(Dir::ToUpstream));
        HttpSession {
            listener: address,
            peer,
            opened: now,
            limits,
            plan,
            listener_index: listener,
            input: Vec::new(),
            head_since: None,
            phase: Phase::ReadHead { reading: true },
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
            Phase::ReadHead { reading } => match c.op {
                Op::Recv(Dir::ToUpstream) => {
                    *reading = false;
                    self.on_head_bytes(&c, now, out);
                }
                _ => give_back(&c, out),
            },
            Phase::Routing { .. } => give_back(&c, out),
            Phase::Connecting => match c.op {
                Op::Connect => self.on_connect(c.res, now, out),
                _ => give_back(&c, out),
            },
            Phase::Exchange(x) => {
                let event = x.on_completion(&c, out);
                self.on_event(event, now, out);
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
        if self.input.is_empty() {
            self.phase = Phase::ReadHead { reading: true };
            out.push(Io::RecvOnce(Dir::ToUpstream));
            return;
        }
        let started = self.head_since.unwrap_or(now);
        match parse_request(&self.input) {
            Ok(Some((head, used))) => {
                self.input.drain(..used);
                self.head_since = None;
                self.phase = Phase::Routing {
                    head: Box::new(head),
                    started,
                };
                out.push(Io::Route);
            }
            Ok(None) if self.input.len() < MAX_REQUEST_HEAD => {
                self.phase = Phase::ReadHead { reading: true };
                out.push(Io::RecvOnce(Dir::ToUpstream));
            }
            Ok(None) => self.reject(431, "http1.headers_too_large", started, out),
            Err(e) => self.reject(e.status, e.detail, started, out),
        }
    }

    /// A head ringway refuses: the reply, then the connection closes
    /// (nothing behind a bad head is served). Logged as a request without
    /// a parsed head, with flag `DPE` (downstream protocol error).
    fn reject(&mut self, status: u16, detail: &'static str, started: Instant, out: &mut Vec<Io>) {
        self.input.clear();
        out.push(Io::Reject { status, detail });
        let answer = LocalAnswer::error(status, "DPE", detail);
        let bytes = request::bare_reply(&answer, started);
        self.phase = Phase::Reply {
            half: Half::start_limited(Dir::ToDownstream, u64::MAX, bytes, Some(0), out),
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
        let mut req = Box::new(Request::new(*head, started, id));
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
            half: Half::start_limited(Dir::ToDownstream, u64::MAX, bytes, Some(0), out),
            close,
        };
    }

    /// The answer to [`Io::Checkout`].
    pub fn on_checkout(&mut self, r: Result<Checkout, CloseReason>, now: Instant, out: &mut Vec<Io>) {
        let Phase::Connecting = self.phase else {
            return;
        };
        match r {
            Ok(Checkout { cluster, reused }) => {
                if let Some(req) = self.request.as_mut() {
                    req.cluster = Some(cluster);
                    req.attempts += u32::from(!reused);
                }
                if reused {
                    self.start_exchange(true, now, out);
                }
            }
            Err(reason) => self.upstream_unavailable(reason, now, out),
        }
    }

    /// No upstream connection for the request: 503 with the reason's flag.
    fn upstream_unavailable(&mut self, reason: CloseReason, now: Instant, out: &mut Vec<Io>) {
        let details = match reason {
            CloseReason::NoHealthyUpstream => "no_healthy_upstream",
            CloseReason::Overflow => "upstream_overflow",
            CloseReason::LocalResource => "local_resource_exhausted",
            _ => "upstream_reset_before_response_started{connection_failure}",
        };
        self.answer(&LocalAnswer::error(503, reason.flag(), details), now, out);
    }

    /// A CONNECT completed.
    fn on_connect(&mut self, res: i32, now: Instant, out: &mut Vec<Io>) {
        if res >= 0 {
            out.push(Io::Connected);
            return self.start_exchange(false, now, out);
        }
        out.push(Io::Release(Release::ConnectFailed));
        let retry = self
            .request
            .as_ref()
            .is_some_and(|r| r.may_retry_connect(&self.plan));
        match self.request.as_mut() {
            Some(req) if retry => {
                req.retries += 1;
                out.push(Io::Checkout { fresh: false });
            }
            Some(req) => {
                // Envoy flags an exhausted retry budget too.
                let flags = if req.retries > 0 { "UF,URX" } else { "UF" };
                let details = "upstream_reset_before_response_started{connection_failure}";
                self.answer(&LocalAnswer::error(503, flags, details), now, out);
            }
            None => self.finish(CloseReason::ConnectFailed, out),
        }
    }

    /// The upstream connection is ready: write the request head and what
    /// of the body came with it, then forward the rest.
    fn start_exchange(&mut self, reused: bool, now: Instant, out: &mut Vec<Io>) {
        let Some(req) = self.request.as_mut() else {
            return;
        };
        let Some(cluster) = req.cluster else {
            return;
        };
        let framing = req.framing();
        let (in_buffer, limit, chunks) = match framing {
            BodyFraming::Length(n) => {
                let k = n.min(self.input.len() as u64);
                (k as usize, Some(n - k), None)
            }
            BodyFraming::Chunked => {
                let mut decoder = ChunkedDecoder::new();
                match decoder.feed(&self.input, &mut |_| {}) {
                    Ok(used) if decoder.is_done() => (used, Some(0), None),
                    Ok(used) => (used, None, Some(decoder)),
                    Err(e) => {
                        let answer = LocalAnswer::error(400, "DPE", e.detail());
                        self.closing = true;
                        return self.answer(&answer, now, out);
                    }
                }
            }
            BodyFraming::None | BodyFraming::CloseDelimited => (0, Some(0), None),
        };
        let bytes = req.upstream_head(&self.plan, cluster, self.peer, &self.input[..in_buffer]);
        let head_len = (bytes.len() - in_buffer) as u64;
        self.input.drain(..in_buffer);
        req.replay = (limit == Some(0)).then(|| bytes.clone());
        let splice_after = if chunks.is_some() {
            u64::MAX
        } else {
            self.limits.splice_after
        };
        let half = Half::start_limited(Dir::ToUpstream, splice_after, bytes, limit, out);
        let context = ResponseContext {
            head_request: req.head.is_head_method(),
            version: req.version(),
        };
        let body = Body {
            half,
            chunks,
            head_len,
        };
        self.last_active = now;
        self.phase = Phase::Exchange(Box::new(Exchange::start(reused, body, context, out)));
    }

    /// What an exchange completion means for the request.
    fn on_event(&mut self, event: Event, now: Instant, out: &mut Vec<Io>) {
        match event {
            Event::Continue => {}
            Event::Active => self.last_active = now,
            Event::ResponseHead { head, rest } => {
                self.last_active = now;
                self.start_response(*head, rest, now, out);
            }
            Event::UpstreamGone => self.upstream_gone(now, out),
            Event::BadResponse(detail) => self.upstream_failed(502, "UPE", detail, now, out),
            Event::BadRequestBody(detail) => {
                out.push(Io::Reject { status: 400, detail });
                self.finish(CloseReason::DownstreamReset, out);
            }
            Event::DownstreamReset => self.finish(CloseReason::DownstreamReset, out),
            Event::UpstreamReset => {
                if let Some(req) = self.request.as_mut() {
                    req.flags = "UC";
                    req.details = "upstream_reset_after_response_started";
                }
                out.push(Io::Abort(super::token::Side::Downstream));
                self.finish(CloseReason::UpstreamReset, out);
            }
        }
        if let Phase::Exchange(x) = &mut self.phase {
            x.take_leftovers(out);
        }
        self.after_exchange(now, out);
    }

    /// The upstream closed or failed before any response byte. A reused
    /// keep-alive connection (the server closed it as the request went
    /// out: the keep-alive race) is retried once on a new connection when
    /// the whole request is still held; otherwise 503 `UC`.
    fn upstream_gone(&mut self, now: Instant, out: &mut Vec<Io>) {
        let Phase::Exchange(x) = &self.phase else {
            return;
        };
        let retry = x.reused
            && x.upstream_quiet()
            && self
                .request
                .as_ref()
                .is_some_and(|r| r.replay.is_some() && !r.retried_on_fresh);
        if retry {
            out.push(Io::Release(Release::Close));
            if let Some(req) = self.request.as_mut() {
                req.retried_on_fresh = true;
            }
            self.phase = Phase::Connecting;
            out.push(Io::Checkout { fresh: true });
            return;
        }
        self.upstream_failed(
            503,
            "UC",
            "upstream_reset_before_response_started{connection_termination}",
            now,
            out,
        );
    }

    /// The exchange cannot go on: a local answer when nothing of the
    /// response reached the client and the upstream socket is quiet (the
    /// upstream connection is closed, never pooled), else the connection
    /// ends.
    fn upstream_failed(
        &mut self,
        status: u16,
        flags: &'static str,
        details: &'static str,
        now: Instant,
        out: &mut Vec<Io>,
    ) {
        let Phase::Exchange(x) = &self.phase else {
            return;
        };
        let quiet = x.upstream_quiet() && matches!(x.response, Response::Head { .. });
        let moved = x.moved();
        if !quiet {
            if let Some(req) = self.request.as_mut() {
                req.status = 0;
                req.flags = flags;
                req.details = details;
            }
            out.push(Io::Abort(super::token::Side::Downstream));
            return self.finish(CloseReason::UpstreamReset, out);
        }
        self.moved[0] += moved[0];
        out.push(Io::Release(Release::Close));
        // Whether the request body was read through: the client
        // connection can go on only then.
        let read_through = matches!(&self.phase, Phase::Exchange(x) if x.request.is_complete());
        if !read_through {
            self.closing = true;
        }
        self.answer(&LocalAnswer::error(status, flags, details), now, out);
    }

    /// The response head arrived: ringway's head for the client, then the
    /// body, bounded by its framing.
    fn start_response(&mut self, head: ResponseHead, rest: Vec<u8>, now: Instant, out: &mut Vec<Io>) {
        let quiet = matches!(&self.phase, Phase::Exchange(x) if x.upstream_quiet());
        if let Some(req) = self.request.as_mut().filter(|r| quiet && r.may_retry_status(&self.plan, head.status())) {
            // `retryOn` names this status and the whole request is held:
            // the response is dropped with its connection, and the request
            // goes again (another endpoint when there is one).
            req.retries += 1;
            req.status = head.status();
            out.push(Io::Release(Release::Close));
            self.phase = Phase::Connecting;
            out.push(Io::Checkout { fresh: false });
            return;
        }
        let Some(req) = self.request.as_mut() else {
            return;
        };
        req.upstream_time = Some(now.saturating_duration_since(req.started));
        req.status = head.status();
        req.details = "via_upstream";
        let framing = head.framing();
        // A 1.0 client never gets chunked: the body is decoded for it.
        let dechunk = framing == BodyFraming::Chunked && req.version() == Version::Http10;
        let mut decoded = Vec::new();
        let (in_buffer, limit, chunks, delimited) = match framing {
            BodyFraming::None => (0, Some(0), None, false),
            BodyFraming::Length(n) => {
                let k = n.min(rest.len() as u64);
                (k as usize, Some(n - k), None, false)
            }
            BodyFraming::Chunked => {
                let mut decoder = ChunkedDecoder::new();
                match decoder.feed(&rest, &mut |piece| {
                    if dechunk {
                        decoded.extend_from_slice(piece);
                    }
                }) {
                    Ok(used) if decoder.is_done() => (used, Some(0), None, false),
                    Ok(used) => (used, None, Some(decoder), false),
                    Err(e) => return self.upstream_failed(502, "UPE", e.detail(), now, out),
                }
            }
            BodyFraming::CloseDelimited => (rest.len(), None, None, true),
        };
        let request_complete =
            matches!(&self.phase, Phase::Exchange(x) if x.request.is_complete());
        // The client's connection goes on only where both sides allow it
        // and the next response can be framed.
        let keep_alive =
            req.keep_alive() && !self.closing && !delimited && !dechunk && request_complete;
        if !keep_alive {
            self.closing = true;
        }
        let ops = req.response_ops(&self.plan);
        let mut bytes = Vec::with_capacity(head.len() + 64 + in_buffer);
        write_response(
            &head,
            &ResponseEdits {
                version: req.version(),
                keep_alive,
                ops: &ops,
                dechunk,
            },
            &mut bytes,
        );
        let head_len = bytes.len() as u64;
        if dechunk {
            bytes.extend_from_slice(&decoded);
        } else {
            bytes.extend_from_slice(&rest[..in_buffer]);
        }
        // Bytes past the response are not the upstream's to send: the
        // connection is not reused.
        let clean = rest.len() == in_buffer;
        let reusable = head.keep_alive() && clean && !delimited;
        let server_timeout = head.keep_alive_timeout();
        let splice_after = if chunks.is_some() {
            u64::MAX
        } else {
            self.limits.splice_after
        };
        let (limit, chunks, dechunker) = match chunks {
            Some(decoder) if dechunk => {
                out.push(Io::RecvOnce(Dir::ToDownstream));
                let d = exchange::Dechunk {
                    decoder,
                    pending: Vec::new(),
                    reading: true,
                    sent_before: 0,
                };
                (Some(0), None, Some(Box::new(d)))
            }
            chunks => (limit, chunks, None),
        };
        let half = Half::start_limited(Dir::ToDownstream, splice_after, bytes, limit, out);
        if let Phase::Exchange(x) = &mut self.phase {
            x.response = Response::Body(ResponseBody {
                body: Body {
                    half,
                    chunks,
                    head_len,
                },
                reusable,
                server_timeout,
                delimited,
                dechunk: dechunker,
            });
        }
    }

    /// After each exchange event: the request ends once its response went
    /// through (and its body did, or the connection closes anyway).
    fn after_exchange(&mut self, now: Instant, out: &mut Vec<Io>) {
        let Phase::Exchange(x) = &self.phase else {
            return;
        };
        match x.broken() {
            Some(Dir::ToUpstream) => return self.finish(CloseReason::DownstreamReset, out),
            Some(Dir::ToDownstream) => {
                if let Some(req) = self.request.as_mut() {
                    req.flags = "UC";
                    req.details = "upstream_reset_after_response_started";
                }
                out.push(Io::Abort(super::token::Side::Downstream));
                return self.finish(CloseReason::UpstreamReset, out);
            }
            None => {}
        }
        if !x.response_done() {
            return;
        }
        let moved = x.moved();
        let request_complete = x.request.is_complete();
        let Response::Body(r) = &x.response else {
            return;
        };
        let (reusable, server_timeout) = (r.reusable, r.server_timeout);
        let bodies = [x.request.body_moved(), r.body.body_moved()];
        if let Some(req) = self.request.as_mut() {
            req.body_bytes = [req.body_bytes[0] + bodies[0], bodies[1]];
            req.wire_bytes[0] += bodies[0];
            req.wire_bytes[1] = moved[1];
        }
        if !request_complete || !x.upstream_quiet() {
            // The server answered before the request body went through:
            // the connection closes (its upstream with it).
            self.report(out);
            return self.finish(CloseReason::Done, out);
        }
        self.moved[0] += moved[0];
        self.moved[1] += moved[1];
        let how = if reusable {
            Release::Pool { server_timeout }
        } else {
            Release::Close
        };
        out.push(Io::Release(how));
        let close = self.closing;
        self.request_done(close, now, out);
    }

    /// The request is over: reported, then the next one (maybe already in
    /// the input), or the end of the connection.
    fn request_done(&mut self, close: bool, now: Instant, out: &mut Vec<Io>) {
        self.report(out);
        if close || self.closing {
            return self.finish(CloseReason::Done, out);
        }
        self.last_active = now;
        self.parse_head(now, out);
    }

    fn report(&mut self, out: &mut Vec<Io>) {
        if let Some(req) = self.request.take() {
            self.done = Some(req);
            out.push(Io::Report);
        }
    }

    /// The finished request the worker reports ([`Io::Report`]).
    pub fn take_report(&mut self) -> Option<Box<Request>> {
        self.done.take()
    }

    /// The plan of the current request.
    pub fn plan(&self) -> &Arc<Plan> {
        &self.plan
    }

    /// The PROXY header could not be written on a new connection: the
    /// request fails as an upstream reset.
    pub fn abort_upstream(&mut self, out: &mut Vec<Io>) {
        if let Phase::Exchange(_) = self.phase {
            if let Some(req) = self.request.as_mut() {
                req.flags = "UC";
            }
            self.finish(CloseReason::UpstreamReset, out);
        }
    }

    /// The result of a pump on a body's splice path.
    pub fn on_pump(&mut self, dir: Dir, pump: Pump, now: Instant, out: &mut Vec<Io>) {
        if let Phase::Exchange(x) = &mut self.phase {
            let event = x.on_pump(dir, pump, out);
            self.on_event(event, now, out);
        }
    }

    /// No pipe for a body's pump: it goes back to copying.
    pub fn on_no_pipe(&mut self, dir: Dir, out: &mut Vec<Io>) {
        if let Phase::Exchange(x) = &mut self.phase {
            x.on_no_pipe(dir, out);
        }
    }

    /// The hash of the current request's `consistentHash` key, when it
    /// carries it: a header's value, a cookie's, a query parameter's.
    pub fn request_hash(&self, key: &RequestHashKey) -> Option<u64> {
        let head = &self.request.as_ref()?.head;
        let value: Vec<u8> = match key {
            RequestHashKey::Header(name) => head.header(name)?.into_owned(),
            RequestHashKey::Cookie(name) => cookie(head, name)?.to_vec(),
            RequestHashKey::Query(name) => query_value(head.query()?, name)?.as_bytes().to_vec(),
        };
        Some(fnv1a_bytes(&value))
    }

    /// The worker picked the current request's cluster.
    pub fn on_cluster(&mut self, cluster: ClusterId) {
        if let Some(r) = self.request.as_mut() {
            r.cluster = Some(cluster);
        }
    }

    /// The route and cluster the current request goes to.
    pub fn target(&self) -> Option<(RouteId, Option<ClusterId>)> {
        let req = self.request.as_ref()?;
        Some((req.forwarding?.clusters, req.cluster))
    }

    pub fn tried(&self) -> &[usize] {
        self.request.as_ref().map_or(&[], |r| &r.tried)
    }

    pub fn connecting_to(&mut self, endpoint: usize) {
        if let Some(r) = self.request.as_mut() {
            r.tried.push(endpoint);
        }
    }

    /// Bytes `len` of buffer `bid` a half read past its message.
    pub fn on_leftover(&mut self, _dir: Dir, bid: u16, data: &[u8], out: &mut Vec<Io>) {
        self.input.extend_from_slice(data);
        out.push(Io::GiveBack(bid));
    }

    pub fn on_buffers(&mut self, dir: Dir, out: &mut Vec<Io>) {
        match &mut self.phase {
            Phase::ReadHead { reading } if dir == Dir::ToUpstream => {
                *reading = true;
                out.push(Io::RecvOnce(Dir::ToUpstream));
            }
            Phase::Exchange(x) => x.on_buffers(dir, out),
            _ => {}
        }
    }

    /// The earliest instant a timer may fire.
    pub fn next_deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::ReadHead { .. } => Some(match self.head_since {
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
            Phase::Routing { .. } | Phase::Connecting | Phase::Reply { .. } | Phase::Finished { .. } => {
                None
            }
        }
    }

    pub fn on_tick(&mut self, now: Instant, out: &mut Vec<Io>) {
        let Some(deadline) = self.next_deadline() else {
            return;
        };
        if now < deadline {
            return;
        }
        match &self.phase {
            Phase::ReadHead { .. } if self.head_since.is_some() => {
                let started = self.head_since.unwrap_or(now);
                self.reject(408, "request_header_timeout", started, out);
            }
            Phase::ReadHead { .. } => self.finish(CloseReason::IdleTimeout, out),
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

    /// The process is stopping: an idle connection closes now, a busy one
    /// after its response (with `Connection: close`).
    pub fn drain(&mut self, out: &mut Vec<Io>) {
        self.closing = true;
        if let Phase::ReadHead { .. } = self.phase {
            if self.head_since.is_none() {
                self.finish(CloseReason::Drained, out);
            }
        }
    }

    pub fn outbox(&self, dir: Dir) -> Option<&[u8]> {
        match &self.phase {
            Phase::Exchange(x) => x.outbox(dir),
            Phase::Reply { half, .. } if dir == Dir::ToDownstream => half.outbox(),
            _ => None,
        }
    }

    pub fn moved(&self) -> [u64; 2] {
        self.moved
    }

    pub fn close(&self) -> Option<Close> {
        match &self.phase {
            Phase::Finished { reason, .. } => Some(Close {
                reason: *reason,
                to_upstream: self.moved[0],
                to_downstream: self.moved[1],
            }),
            _ => None,
        }
    }

    fn finish(&mut self, reason: CloseReason, out: &mut Vec<Io>) {
        if let Phase::Finished { .. } = self.phase {
            return;
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

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'h>(head: &'h RequestHead, name: &str) -> Option<&'h [u8]> {
    head.values("cookie")
        .flat_map(|v| v.split(|b| *b == b';'))
        .map(<[u8]>::trim_ascii)
        .find_map(|pair| {
            let eq = pair.iter().position(|b| *b == b'=')?;
            (&pair[..eq] == name.as_bytes()).then(|| &pair[eq + 1..])
        })
}

/// The value of query parameter `name` (`?key` alone: empty).
fn query_value<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// A completion's buffer nobody reads: back to the ring.
fn give_back(c: &Completion<'_>, out: &mut Vec<Io>) {
    if let Some(bid) = c.bid {
        out.push(Io::GiveBack(bid));
    }
}
