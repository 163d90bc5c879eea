//! A WebSocket request the upstream accepted (`101 Switching Protocols`):
//! the client's connection leaves HTTP and becomes a TCP tunnel to that
//! upstream connection, on the same forwarding halves as a TCP route
//! ([`Connection`]: half-close, resets, splice after
//! [`Settings::splice_after`](super::super::Settings)). The upstream
//! connection is never pooled again: it closes with the tunnel, and its
//! cluster accounting ends when the worker frees the slot.
//!
//! ```text
//! Exchange --101 to a WebSocket request--> Tunnel{Connection::forwarding(
//!     to the upstream: client bytes read after the head,
//!     to the client:   ringway's 101 head + upstream bytes after it)} --both halves Done, reset, idle--> over
//! ```
//! The request is reported once, when the tunnel ends: status 101, the
//! bytes each way, its duration the tunnel's life (as Envoy logs a
//! WebSocket stream). The idle timeout is the HTTP stream idle timeout.
#![forbid(unsafe_code)]

use std::time::Instant;

use crate::http1::Version;
use crate::http1::head::ResponseHead;
use crate::http1::write::{ResponseEdits, write_response};

use super::super::conn::Connection;
use super::super::io::{Close, Io, Limits};
use super::super::token::Dir;
use super::{HttpSession, Phase};

/// The tunnel of an upgraded request.
#[derive(Debug)]
pub(crate) struct Tunnel {
    pub conn: Connection,
    /// The 101 head ringway wrote (the first bytes to the client).
    head_len: u64,
}

impl HttpSession {
    /// A 101 arrived. To a WebSocket request whose head went out whole
    /// (nothing of the exchange in flight): the tunnel starts. Otherwise
    /// it is a response ringway cannot forward: 502 `UPE`.
    pub(super) fn start_tunnel(
        &mut self,
        head: ResponseHead,
        rest: Vec<u8>,
        now: Instant,
        out: &mut Vec<Io>,
    ) {
        let Phase::Exchange(x) = &self.phase else {
            return;
        };
        let websocket = self.request.as_ref().is_some_and(|r| r.websocket);
        let settled = x.request.is_complete() && x.upstream_quiet() && self.leftovers == 0;
        if !websocket || !settled {
            let detail = match websocket {
                true => "upgrade_before_request_sent",
                false => "unexpected_101",
            };
            return self.upstream_failed(502, "UPE", detail, now, out);
        }
        let (idle, _) = x.buffers();
        for bid in idle {
            out.push(Io::GiveBack(bid));
        }
        let sent = x.moved();
        self.moved[0] += sent[0];
        self.moved[1] += sent[1];
        let Some(req) = self.request.as_mut() else {
            return;
        };
        req.upstream_time = Some(now.saturating_duration_since(req.started));
        req.status = 101;
        req.details = "via_upstream";
        let ops = req.response_ops(&self.plan);
        let mut to_client = Vec::with_capacity(head.len() + 64 + rest.len());
        let edits = ResponseEdits {
            version: Version::Http11,
            keep_alive: true,
            ops: &ops,
            dechunk: false,
        };
        write_response(&head, &edits, &mut to_client);
        let head_len = to_client.len() as u64;
        to_client.extend_from_slice(&rest);
        let limits = Limits {
            idle_timeout: Some(self.limits.stream_idle),
            max_duration: None,
            connect_attempts: 1,
            splice_after: self.tunnel_splice_after,
        };
        let to_upstream = std::mem::take(&mut self.input);
        let conn = Connection::forwarding(limits, now, [to_upstream, to_client], out);
        self.last_active = now;
        self.phase = Phase::Tunnel(Box::new(Tunnel { conn, head_len }));
    }

    /// After the tunnel's connection acted (its [`Io`]s pushed from
    /// `from` on): once it is over, the session's [`Io::Finish`] counts
    /// the bytes of earlier requests too, and the request is reported.
    pub(super) fn after_tunnel(&mut self, from: usize, out: &mut Vec<Io>) {
        let Phase::Tunnel(t) = &self.phase else {
            return;
        };
        let Some(close) = t.conn.close() else {
            return;
        };
        for io in &mut out[from..] {
            if let Io::Finish(c) = io {
                c.to_upstream += self.moved[0];
                c.to_downstream += self.moved[1];
            }
        }
        let head_len = t.head_len;
        if let Some(req) = self.request.as_mut() {
            req.wire_bytes[0] += close.to_upstream;
            req.wire_bytes[1] = close.to_downstream;
            req.body_bytes = [
                close.to_upstream,
                close.to_downstream.saturating_sub(head_len),
            ];
        }
        self.report(out);
    }

    /// The tunnel's close, with the bytes of the requests before it.
    pub(super) fn tunnel_close(&self, t: &Tunnel) -> Option<Close> {
        t.conn.close().map(|c| Close {
            reason: c.reason,
            to_upstream: c.to_upstream + self.moved[0],
            to_downstream: c.to_downstream + self.moved[1],
        })
    }

    /// The sink of `dir` sent everything after its source reset
    /// ([`Io::CheckSent`]): only a tunnel waits for that.
    pub fn on_sent(&mut self, dir: Dir, out: &mut Vec<Io>) {
        let from = out.len();
        if let Phase::Tunnel(t) = &mut self.phase {
            t.conn.on_sent(dir, out);
        }
        self.after_tunnel(from, out);
    }
}
