//! The response side of a request, for the session: the upstream's head
//! becomes ringway's head for the client (or, when `retryOn` names its
//! status and the whole request is held, the request goes again), its body
//! is forwarded bounded by its framing (de-chunked for an HTTP/1.0 client),
//! and once both messages went through the request ends: the upstream
//! connection back to the pool or closed, the next request, or the end.
#![forbid(unsafe_code)]

use std::time::Instant;

use crate::http1::chunked::{ChunkError, ChunkedDecoder};
use crate::http1::head::ResponseHead;
use crate::http1::write::{ResponseEdits, write_response};
use crate::http1::{BodyFraming, Version};

use super::super::io::{CloseReason, Io, Release};
use super::super::token::{Dir, Side};
use super::exchange::{Body, Dechunk, Response, ResponseBody};
use super::{HttpSession, Phase};

/// Where a response's body stands once its head is parsed: what of it
/// came with the head, and how the rest is bounded.
struct BodyStart {
    /// Bytes after the head that belong to the body.
    in_buffer: usize,
    /// Bytes still to come (`None`: to the end, or a chunked body still
    /// being decoded).
    limit: Option<u64>,
    /// A chunked body whose end is not in the bytes yet.
    chunks: Option<ChunkedDecoder>,
    /// Close-delimited.
    delimited: bool,
    /// The payload of the chunks in `in_buffer`, when de-chunking.
    decoded: Vec<u8>,
}

/// The body's start from the bytes `rest` that followed the head.
fn body_start(framing: BodyFraming, rest: &[u8], dechunk: bool) -> Result<BodyStart, ChunkError> {
    let mut start = BodyStart {
        in_buffer: 0,
        limit: Some(0),
        chunks: None,
        delimited: false,
        decoded: Vec::new(),
    };
    match framing {
        BodyFraming::None => {}
        BodyFraming::Length(n) => {
            let k = n.min(rest.len() as u64);
            start.in_buffer = k as usize;
            start.limit = Some(n - k);
        }
        BodyFraming::Chunked => {
            let mut decoder = ChunkedDecoder::new();
            let decoded = &mut start.decoded;
            start.in_buffer = decoder.feed(rest, &mut |piece| {
                if dechunk {
                    decoded.extend_from_slice(piece);
                }
            })?;
            if !decoder.is_done() {
                start.limit = None;
                start.chunks = Some(decoder);
            }
        }
        BodyFraming::CloseDelimited => {
            start.in_buffer = rest.len();
            start.limit = None;
            start.delimited = true;
        }
    }
    Ok(start)
}

impl HttpSession {
    /// `retryOn` names the status and the whole request is held (and the
    /// upstream socket is quiet): the response is dropped with its
    /// connection, and the request goes again (another endpoint when there
    /// is one). True when it does.
    fn retry_status(&mut self, status: u16, out: &mut Vec<Io>) -> bool {
        let Phase::Exchange(x) = &self.phase else {
            return false;
        };
        let (quiet, sent) = (x.upstream_quiet(), x.moved()[0]);
        let plan = &self.plan;
        let Some(req) = self
            .request
            .as_mut()
            .filter(|r| quiet && r.may_retry_status(plan, status))
        else {
            return false;
        };
        req.retries += 1;
        req.status = status;
        self.moved[0] += sent;
        out.push(Io::Release(Release::Close));
        self.phase = Phase::Connecting;
        out.push(Io::Checkout { fresh: false });
        true
    }

    /// The response head arrived: ringway's head for the client, then the
    /// body, bounded by its framing.
    pub(super) fn start_response(
        &mut self,
        head: ResponseHead,
        rest: Vec<u8>,
        now: Instant,
        out: &mut Vec<Io>,
    ) {
        if head.status() == 101 {
            return self.start_tunnel(head, rest, now, out);
        }
        if self.retry_status(head.status(), out) {
            return;
        }
        let Some(req) = self.request.as_mut() else {
            return;
        };
        req.upstream_time = Some(now.saturating_duration_since(req.started));
        req.status = head.status();
        req.details = "via_upstream";
        // A 1.0 client never gets chunked: the body is decoded for it.
        let dechunk = head.framing() == BodyFraming::Chunked && req.version() == Version::Http10;
        let start = match body_start(head.framing(), &rest, dechunk) {
            Ok(start) => start,
            Err(e) => return self.upstream_failed(502, "UPE", e.detail(), now, out),
        };
        let request_complete = matches!(&self.phase, Phase::Exchange(x) if x.request.is_through());
        // The client's connection goes on only where both sides allow it
        // and the next response can be framed.
        let keep_alive =
            req.keep_alive() && !self.closing && !start.delimited && !dechunk && request_complete;
        self.closing |= !keep_alive;
        let ops = req.response_ops(&self.plan);
        let mut bytes = Vec::with_capacity(head.len() + 64 + start.in_buffer);
        let edits = ResponseEdits {
            version: req.version(),
            keep_alive,
            ops: &ops,
            dechunk,
        };
        write_response(&head, &edits, &mut bytes);
        let head_len = bytes.len() as u64;
        if dechunk {
            bytes.extend_from_slice(&start.decoded);
        } else {
            bytes.extend_from_slice(&rest[..start.in_buffer]);
        }
        // Bytes past the response are not the upstream's to send: the
        // connection is not reused.
        let clean = rest.len() == start.in_buffer;
        let reusable = head.keep_alive() && clean && !start.delimited;
        self.forward_response(bytes, head_len, start, dechunk, out);
        if let Phase::Exchange(x) = &mut self.phase {
            if let Response::Body(r) = &mut x.response {
                r.reusable = reusable;
                r.server_timeout = head.keep_alive_timeout();
            }
        }
    }

    /// Start the response's half: `bytes` (ringway's head of `head_len`
    /// bytes and what of the body came with it), then the rest.
    fn forward_response(
        &mut self,
        bytes: Vec<u8>,
        head_len: u64,
        start: BodyStart,
        dechunk: bool,
        out: &mut Vec<Io>,
    ) {
        let (limit, chunks, dechunker) = match start.chunks {
            Some(decoder) if dechunk => {
                out.push(Io::RecvOnce(Dir::ToDownstream));
                let d = Dechunk {
                    decoder,
                    pending: Vec::new(),
                    reading: true,
                    sent_before: 0,
                };
                (Some(0), None, Some(Box::new(d)))
            }
            chunks => (start.limit, chunks, None),
        };
        let body = Body::start(
            Dir::ToDownstream,
            (bytes, head_len),
            limit,
            chunks,
            self.splice_threshold,
            out,
        );
        if let Phase::Exchange(x) = &mut self.phase {
            x.response = Response::Body(ResponseBody {
                body,
                reusable: false,
                server_timeout: None,
                delimited: start.delimited,
                dechunk: dechunker,
            });
        }
    }

    /// After each exchange event: the request ends once its response went
    /// through (and its body did, or the connection closes anyway).
    pub(super) fn after_exchange(&mut self, now: Instant, out: &mut Vec<Io>) {
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
                out.push(Io::Abort(Side::Downstream));
                return self.finish(CloseReason::UpstreamReset, out);
            }
            None => {}
        }
        if !x.response_done() {
            return;
        }
        let through = x.request.is_through();
        if through && !(x.request.is_complete() && x.upstream_quiet()) {
            // Every byte went both ways; the cancel of a receive is still
            // on its way back: the request ends when it is.
            return;
        }
        let moved = x.moved();
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
        if !through {
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
        // Counted: the exchange is over (nothing of it in flight).
        self.phase = Phase::Between;
        let close = self.closing;
        self.request_done(close, now, out);
    }

    /// The request is over: reported, then the next one (maybe already in
    /// the input), or the end of the connection.
    pub(super) fn request_done(&mut self, close: bool, now: Instant, out: &mut Vec<Io>) {
        self.report(out);
        if close || self.closing {
            return self.finish(CloseReason::Done, out);
        }
        self.last_active = now;
        self.parse_head(now, out);
    }

    pub(super) fn report(&mut self, out: &mut Vec<Io>) {
        if let Some(req) = self.request.take() {
            self.done = Some(req);
            out.push(Io::Report);
        }
    }
}
