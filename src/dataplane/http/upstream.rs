//! The upstream side of a request, for the session: an upstream
//! connection from the worker (`Io::Checkout`: the pool, or a CONNECT and
//! its retries), the exchange on it, and what its failures become (a retry
//! on a new connection, a local 503 / 502 / 504, or the end of the client's
//! connection when part of a response already reached it).
#![forbid(unsafe_code)]

use std::time::Instant;

use crate::http1::chunked::ChunkedDecoder;
use crate::http1::head::ResponseContext;
use crate::http1::{BodyFraming, Version};

use super::super::io::{Checkout, CloseReason, Io, Pump, Release};
use super::super::token::{Dir, Side};
use super::exchange::{Body, Event, Exchange, Response};
use super::request::{LocalAnswer, Replay};
use super::{HttpSession, Phase};

/// What of a request's body came with its head (`input`), and how the
/// rest is bounded: (bytes in `input`, bytes still to come (`None`: a
/// chunked body whose end is not in them yet), the decoder then).
fn body_in_input(
    framing: BodyFraming,
    input: &[u8],
) -> Result<(usize, Option<u64>, Option<ChunkedDecoder>), &'static str> {
    Ok(match framing {
        BodyFraming::Length(n) => {
            let k = n.min(input.len() as u64);
            (k as usize, Some(n - k), None)
        }
        BodyFraming::Chunked => {
            let mut decoder = ChunkedDecoder::new();
            let used = decoder.feed(input, &mut |_| {}).map_err(|e| e.detail())?;
            if decoder.is_done() {
                (used, Some(0), None)
            } else {
                (used, None, Some(decoder))
            }
        }
        BodyFraming::None | BodyFraming::CloseDelimited => (0, Some(0), None),
    })
}

impl HttpSession {
    /// The answer to [`Io::Checkout`].
    pub fn on_checkout(
        &mut self,
        r: Result<Checkout, CloseReason>,
        now: Instant,
        out: &mut Vec<Io>,
    ) {
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
    pub(super) fn upstream_unavailable(
        &mut self,
        reason: CloseReason,
        now: Instant,
        out: &mut Vec<Io>,
    ) {
        let details = match reason {
            CloseReason::NoHealthyUpstream => "no_healthy_upstream",
            CloseReason::Overflow => "upstream_overflow",
            CloseReason::LocalResource => "local_resource_exhausted",
            _ => "upstream_reset_before_response_started{connection_failure}",
        };
        self.answer(&LocalAnswer::error(503, reason.flag(), details), now, out);
    }

    /// A CONNECT completed.
    pub(super) fn on_connect(&mut self, res: i32, now: Instant, out: &mut Vec<Io>) {
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
    pub(super) fn start_exchange(&mut self, reused: bool, now: Instant, out: &mut Vec<Io>) {
        let Some(req) = self.request.as_mut() else {
            return;
        };
        let Some(cluster) = req.cluster else {
            return;
        };
        let (bytes, head_len, limit, chunks) = match &req.replay {
            // A retry: the request exactly as it went the first time.
            Some(replay) => (replay.bytes.clone(), replay.head_len, Some(0), None),
            None => {
                let (in_buffer, limit, chunks) = match body_in_input(req.framing(), &self.input) {
                    Ok(start) => start,
                    Err(detail) => {
                        let answer = LocalAnswer::error(400, "DPE", detail);
                        self.closing = true;
                        return self.answer(&answer, now, out);
                    }
                };
                let bytes =
                    req.upstream_head(&self.plan, cluster, self.peer, &self.input[..in_buffer]);
                let head_len = (bytes.len() - in_buffer) as u64;
                self.input.drain(..in_buffer);
                // The whole request is held: it can go again.
                req.replay = (limit == Some(0)).then(|| Replay {
                    bytes: bytes.clone(),
                    head_len,
                });
                (bytes, head_len, limit, chunks)
            }
        };
        let body = Body::start(
            Dir::ToUpstream,
            (bytes, head_len),
            limit,
            chunks,
            self.splice_threshold,
            out,
        );
        let context = ResponseContext {
            head_request: req.head.is_head_method(),
            // The upstream speaks HTTP/1.1 whatever the client does:
            // ringway always sends it 1.1.
            version: Version::Http11,
        };
        self.last_active = now;
        self.phase = Phase::Exchange(Box::new(Exchange::start(reused, body, context, out)));
    }

    /// What an exchange completion means for the request.
    pub(super) fn on_event(&mut self, event: Event, now: Instant, out: &mut Vec<Io>) {
        match event {
            Event::Continue => {}
            Event::Active => self.last_active = now,
            Event::Interim(head) => return self.relay_interim(*head, now, out),
            Event::ResponseHead { head, rest } => {
                self.last_active = now;
                self.start_response(*head, rest, now, out);
            }
            Event::UpstreamGone => self.upstream_gone(now, out),
            Event::BadResponse(detail) => self.upstream_failed(502, "UPE", detail, now, out),
            Event::BadRequestBody(detail) => {
                // Found after the head went upstream: the upstream is reset
                // (a server must not take the truncated request for a whole
                // one), and the client's connection closed.
                if let Some(req) = self.request.as_mut() {
                    req.flags = "DPE";
                    req.details = detail;
                }
                out.push(Io::Reject {
                    status: 400,
                    detail,
                });
                out.push(Io::Abort(Side::Upstream));
                self.finish(CloseReason::DownstreamReset, out);
            }
            Event::DownstreamReset => self.finish(CloseReason::DownstreamReset, out),
            Event::UpstreamReset => {
                if let Some(req) = self.request.as_mut() {
                    req.flags = "UC";
                    req.details = "upstream_reset_after_response_started";
                }
                out.push(Io::Abort(Side::Downstream));
                self.finish(CloseReason::UpstreamReset, out);
            }
        }
        if let Phase::Exchange(x) = &mut self.phase {
            self.leftovers += x.take_leftovers(out);
            if x.gone && x.upstream_quiet() && matches!(x.response, Response::Head { .. }) {
                // The upstream failed earlier; what was in flight on its
                // socket has ended.
                return self.upstream_gone(now, out);
            }
        }
        self.after_exchange(now, out);
    }

    /// The upstream closed or failed before any response byte. A reused
    /// keep-alive connection (the server closed it as the request went
    /// out: the keep-alive race) is retried once on a new connection when
    /// the whole request is still held; otherwise 503 `UC`.
    pub(super) fn upstream_gone(&mut self, now: Instant, out: &mut Vec<Io>) {
        let Phase::Exchange(x) = &mut self.phase else {
            return;
        };
        x.gone = true;
        let x = &*x;
        let Some(req) = self.request.as_ref() else {
            return;
        };
        // The keep-alive race: once, on a new connection, whatever the
        // policy; then as `retryOn: reset` (or `5xx`) says.
        let race = x.reused && req.replay.is_some() && !req.retried_on_fresh;
        let replayable = race || req.may_retry_reset(&self.plan);
        let head_pending = matches!(x.response, Response::Head { reading: true, .. });
        if !x.upstream_quiet() && (replayable || (x.request.half.is_quiescent() && head_pending)) {
            // Something is still in flight on the dead upstream socket (the
            // receive of the response head, a send waiting for room): the
            // peer is gone, so it ends at once, and its completion brings
            // the failure back here, quiet then.
            return;
        }
        if replayable && x.upstream_quiet() {
            // What went to the dead connection was written all the same.
            self.moved[0] += x.moved()[0];
            out.push(Io::Release(Release::Close));
            if let Some(req) = self.request.as_mut() {
                if race {
                    req.retried_on_fresh = true;
                } else {
                    req.retries += 1;
                }
            }
            self.phase = Phase::Connecting;
            out.push(Io::Checkout { fresh: race });
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
    pub(super) fn upstream_failed(
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
        // A local answer needs a client that got nothing of the response
        // and a request half with nothing in flight.
        let answerable = matches!(x.response, Response::Head { .. })
            && x.request.half.is_quiescent()
            && x.interim_quiet();
        let upstream_quiet = x.upstream_quiet();
        let read_through = x.request.is_complete();
        let moved = x.moved();
        if !answerable {
            if let Some(req) = self.request.as_mut() {
                req.status = 0;
                req.flags = flags;
                req.details = details;
            }
            out.push(Io::Abort(Side::Downstream));
            return self.finish(CloseReason::UpstreamReset, out);
        }
        self.moved[0] += moved[0];
        if upstream_quiet {
            out.push(Io::Release(Release::Close));
        } else {
            // The receive of the response head is still in flight on the
            // upstream socket: it stays with the connection, which closes
            // after the answer (nothing is pooled).
            self.closing = true;
        }
        // The client connection goes on only when its request body was
        // read through.
        self.closing |= !read_through;
        self.answer(&LocalAnswer::error(status, flags, details), now, out);
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
        match &mut self.phase {
            Phase::Exchange(x) => {
                let event = x.on_pump(dir, pump, out);
                self.on_event(event, now, out);
            }
            Phase::Tunnel(t) => {
                let from = out.len();
                t.conn.on_pump(dir, pump, now, out);
                self.after_tunnel(from, out);
            }
            _ => {}
        }
    }

    /// No pipe for a body's pump: it goes back to copying.
    pub fn on_no_pipe(&mut self, dir: Dir, out: &mut Vec<Io>) {
        match &mut self.phase {
            Phase::Exchange(x) => x.on_no_pipe(dir, out),
            Phase::Tunnel(t) => t.conn.on_no_pipe(dir, out),
            _ => {}
        }
    }
}
