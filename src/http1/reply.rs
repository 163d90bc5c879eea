//! Replies ringway writes itself: 404 `NR`, 400/408/431/501/505 for bad
//! requests, 502/503/504 for upstream failures, redirects and
//! `directResponse`.

use std::io::Write as _;
use std::time::SystemTime;

use super::Version;
use super::date::imf_fixdate_cached;
use super::write::reason_phrase;

/// How to write one local reply.
#[derive(Debug, Clone, Copy)]
pub struct Reply<'a> {
    /// The client's version: the status line is written in it.
    pub version: Version,
    /// Keep the connection after the reply (`connection: keep-alive`), else
    /// `connection: close`.
    pub keep_alive: bool,
    /// `None`: the short default text of the status for 4xx and 5xx (see
    /// [`default_body`]) and nothing for others; `Some(b"")`: an empty body
    /// (Istio's `directResponse` without body, redirects).
    pub body: Option<&'a [u8]>,
    /// The `content-type` of `body`; the default text is `text/plain`.
    pub content_type: Option<&'a str>,
    /// The `location` of a redirect.
    pub location: Option<&'a str>,
    /// More fields (response header operations of the route); names must
    /// be tokens and values field values, others are skipped.
    pub extra: &'a [(&'a str, &'a str)],
    /// The request was HEAD: `content-length` as for GET, no body bytes.
    pub head_request: bool,
}

/// Write the reply with `status` into `out`, dated now.
pub fn local_reply(status: u16, reply: &Reply<'_>, out: &mut Vec<u8>) {
    local_reply_at(status, reply, SystemTime::now(), out);
}

/// [`local_reply`] dated `now`.
pub fn local_reply_at(status: u16, reply: &Reply<'_>, now: SystemTime, out: &mut Vec<u8>) {
    out.extend_from_slice(reply.version.as_str().as_bytes());
    // Writing into a Vec cannot fail.
    let _ = write!(out, " {status} {}\r\n", reason_phrase(status));
    out.extend_from_slice(b"server: ringway\r\ndate: ");
    out.extend_from_slice(&imf_fixdate_cached(now));
    out.extend_from_slice(b"\r\n");
    let no_body = (100..200).contains(&status) || status == 204 || status == 304;
    let body = match reply.body {
        _ if no_body => &b""[..],
        Some(body) => body,
        None => default_body(status),
    };
    let content_type = match reply.body {
        None if !body.is_empty() => Some("text/plain"),
        _ => reply.content_type,
    };
    if let Some(content_type) = content_type.filter(|v| is_value(v)) {
        field(out, "content-type", content_type);
    }
    if !no_body {
        let _ = write!(out, "content-length: {}\r\n", body.len());
    }
    if let Some(location) = reply.location.filter(|v| is_value(v)) {
        field(out, "location", location);
    }
    for (name, value) in reply.extra {
        if !name.is_empty() && name.bytes().all(super::fields::is_tchar) && is_value(value) {
            field(out, name, value);
        }
    }
    let connection = if reply.keep_alive {
        "keep-alive"
    } else {
        "close"
    };
    field(out, "connection", connection);
    out.extend_from_slice(b"\r\n");
    if !reply.head_request {
        out.extend_from_slice(body);
    }
}

/// The short text ringway answers with when a 4xx or 5xx has no body of
/// its own (`no route\n` for 404); empty for other statuses.
pub fn default_body(status: u16) -> &'static [u8] {
    match status {
        400 => b"bad request\n",
        403 => b"forbidden\n",
        404 => b"no route\n",
        405 => b"method not allowed\n",
        408 => b"request timeout\n",
        413 => b"request body too large\n",
        426 => b"upgrade required\n",
        431 => b"request header fields too large\n",
        501 => b"not implemented\n",
        502 => b"bad gateway\n",
        503 => b"no healthy upstream\n",
        504 => b"upstream request timeout\n",
        505 => b"http version not supported\n",
        _ if (400..500).contains(&status) => b"request refused\n",
        _ if (500..600).contains(&status) => b"server error\n",
        _ => b"",
    }
}

fn field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn is_value(value: &str) -> bool {
    value.bytes().all(|b| b == b'\t' || b >= 0x20 && b != 0x7f)
}
