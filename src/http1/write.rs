//! The heads ringway writes: the request it sends upstream and the
//! response head it sends downstream. Both are re-serialised from the
//! parsed head (never the received bytes): hop-by-hop fields removed,
//! framing written from [`BodyFraming`], then the route's header
//! operations.

use std::borrow::Cow;
use std::io::Write as _;
use std::net::IpAddr;

use super::fields::{is_authority, is_tchar};
use super::head::{RequestHead, ResponseHead};
use super::{BodyFraming, Version};
use crate::routing::http::HeaderOps;

/// What ringway changes in a request it forwards.
#[derive(Debug, Clone, Copy)]
pub struct RequestEdits<'a> {
    /// The rewritten path and query (`/v2/x?y`), bytes a target cannot
    /// hold percent-encoded; `None`: the normalised path and the received
    /// query.
    pub target: Option<&'a str>,
    /// The rewritten Host; `None` (or a value that is not `host[:port]`,
    /// which the compiler refuses): the request's authority.
    pub authority: Option<&'a str>,
    /// The downstream peer, appended to `x-forwarded-for`.
    pub peer: IpAddr,
    /// The generated `x-request-id`.
    pub request_id: &'a str,
    /// Header operations in the order they apply (route, then
    /// destination): each removes, then sets, then adds.
    pub ops: &'a [&'a HeaderOps],
    /// Ask the upstream to close after this request.
    pub close: bool,
    /// A WebSocket handshake: this `Upgrade` value is kept, with
    /// `Connection: upgrade` (every other upgrade is dropped as hop-by-hop).
    pub upgrade: Option<&'a [u8]>,
}

/// What ringway decides about a response head it forwards.
#[derive(Debug, Clone, Copy)]
pub struct ResponseEdits<'a> {
    /// The client's version: the status line is written in it.
    pub version: Version,
    /// Keep the downstream connection after this response.
    pub keep_alive: bool,
    /// The client cannot take chunked (HTTP/1.0): the body is decoded and
    /// close-delimited, so no framing field is written and the connection
    /// closes.
    pub dechunk: bool,
    /// Response header operations, in order.
    pub ops: &'a [&'a HeaderOps],
}

/// Fields that belong to one connection (RFC 9110 §7.6.1) plus the
/// framing fields ringway writes itself.
pub(crate) const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "upgrade",
    "transfer-encoding",
    "content-length",
];

/// Request fields ringway writes itself, replacing the received ones, and
/// `HTTP2-Settings`, which belongs to an `h2c` upgrade ringway never
/// forwards (RFC 7540 §3.2.1: connection-specific).
pub(crate) const REQUEST_OWN: [&str; 5] = [
    "host",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-request-id",
    "http2-settings",
];

/// Write the upstream request for `head` into `out`.
pub fn write_request(head: &RequestHead, edits: &RequestEdits<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(head.method().as_bytes());
    out.push(b' ');
    match edits.target {
        Some(target) => write_escaped_target(target, out),
        None => write_default_target(head, out),
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");

    let rewritten = edits.authority.filter(|a| is_authority(a.as_bytes()));
    let authority = rewritten.or(head.authority()).unwrap_or_default();
    let mut list = FieldList::default();
    list.push("host", Cow::Borrowed(authority.as_bytes()));
    let nominated: Vec<&[u8]> = head.fields().connection_tokens().collect();
    for (name, value) in head.fields().iter() {
        if !is_hop_by_hop(name, &nominated)
            && !REQUEST_OWN.iter().any(|o| name.eq_ignore_ascii_case(o))
        {
            list.push(name, Cow::Borrowed(value));
        }
    }
    list.push_framing(head.framing(), true);
    let mut xff: Vec<u8> = Vec::new();
    for value in head.fields().values("x-forwarded-for") {
        xff.extend_from_slice(value);
        xff.extend_from_slice(b", ");
    }
    // Writing into a Vec cannot fail.
    let _ = write!(xff, "{}", edits.peer);
    list.push("x-forwarded-for", Cow::Owned(xff));
    list.push("x-forwarded-proto", Cow::Borrowed(b"http"));
    list.push("x-request-id", Cow::Borrowed(edits.request_id.as_bytes()));
    for ops in edits.ops {
        list.apply(ops);
    }
    if edits.close {
        list.push("connection", Cow::Borrowed(b"close"));
    } else if let Some(upgrade) = edits.upgrade {
        list.push("connection", Cow::Borrowed(b"upgrade"));
        list.push("upgrade", Cow::Borrowed(upgrade));
    }
    list.write(out);
}

/// A rewritten target with the bytes a request-target cannot hold
/// (controls, space, `#`, non-ASCII) percent-encoded, so that no rewrite
/// can split the request line; an empty one is `/`.
fn write_escaped_target(target: &str, out: &mut Vec<u8>) {
    if target.is_empty() {
        out.push(b'/');
    }
    for &b in target.as_bytes() {
        if (0x21..=0x7e).contains(&b) && b != b'#' {
            out.push(b);
        } else {
            // Writing into a Vec cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// The normalised path and received query; `*`; CONNECT's authority.
fn write_default_target(head: &RequestHead, out: &mut Vec<u8>) {
    if head.method() == "CONNECT" {
        out.extend_from_slice(head.authority().unwrap_or_default().as_bytes());
        return;
    }
    out.extend_from_slice(head.path().as_bytes());
    if let Some(query) = head.query() {
        out.push(b'?');
        out.extend_from_slice(query.as_bytes());
    }
}

/// Write the downstream response head for `head` into `out`.
pub fn write_response(head: &ResponseHead, edits: &ResponseEdits<'_>, out: &mut Vec<u8>) {
    debug_assert!(
        !(edits.version == Version::Http10
            && head.framing() == BodyFraming::Chunked
            && !edits.dechunk),
        "a chunked body is never sent to an HTTP/1.0 client"
    );
    out.extend_from_slice(edits.version.as_str().as_bytes());
    // Writing into a Vec cannot fail.
    let _ = write!(out, " {} ", head.status());
    match head.reason() {
        [] => out.extend_from_slice(reason_phrase(head.status()).as_bytes()),
        reason => out.extend_from_slice(reason),
    }
    out.extend_from_slice(b"\r\n");

    let nominated: Vec<&[u8]> = head.fields().connection_tokens().collect();
    let mut list = FieldList::default();
    for (name, value) in head.fields().iter() {
        if !is_hop_by_hop(name, &nominated) {
            list.push(name, Cow::Borrowed(value));
        }
    }
    let no_body_length = head.is_head_response() || head.status() == 304;
    match head.framing() {
        BodyFraming::None if no_body_length => {
            if let Some(length) = head.fields().first("content-length") {
                list.push("content-length", Cow::Borrowed(length));
            }
        }
        framing => list.push_framing(framing, !edits.dechunk),
    }
    for ops in edits.ops {
        list.apply(ops);
    }
    let close = !edits.keep_alive || edits.dechunk || head.framing() == BodyFraming::CloseDelimited;
    if head.status() == 101 {
        // Switching to the protocol the request asked for (ringway only
        // lets a WebSocket handshake get here): the connection leaves HTTP.
        list.push("connection", Cow::Borrowed(b"upgrade"));
        if let Some(upgrade) = head.fields().first("upgrade") {
            list.push("upgrade", Cow::Borrowed(upgrade));
        }
    } else if !head.is_interim() {
        if close {
            list.push("connection", Cow::Borrowed(b"close"));
        } else if edits.version == Version::Http10 {
            list.push("connection", Cow::Borrowed(b"keep-alive"));
        }
    }
    list.write(out);
}

fn is_hop_by_hop(name: &str, nominated: &[&[u8]]) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
        || nominated
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name.as_bytes()))
}

/// The fields of a head being written, in order.
#[derive(Default)]
struct FieldList<'a> {
    fields: Vec<(&'a str, Cow<'a, [u8]>)>,
}

impl<'a> FieldList<'a> {
    fn push(&mut self, name: &'a str, value: Cow<'a, [u8]>) {
        self.fields.push((name, value));
    }

    fn push_framing(&mut self, framing: BodyFraming, chunked: bool) {
        match framing {
            BodyFraming::Length(n) => {
                self.push("content-length", Cow::Owned(n.to_string().into_bytes()))
            }
            BodyFraming::Chunked if chunked => {
                self.push("transfer-encoding", Cow::Borrowed(b"chunked"))
            }
            BodyFraming::Chunked | BodyFraming::None | BodyFraming::CloseDelimited => {}
        }
    }

    /// Remove, then set (replace every field of the name), then add. Ops
    /// on hop-by-hop or framing fields, and ops that are not a token and a
    /// field value, are ignored: they would change how the message is
    /// framed (the compiler refuses them; this is the last guard).
    fn apply(&mut self, ops: &'a HeaderOps) {
        let allowed = |name: &str| is_field_name(name) && !is_hop_by_hop(name, &[]);
        // Host may be set (Istio's authority rewrite) but never removed.
        let removable = |name: &str| allowed(name) && !name.eq_ignore_ascii_case("host");
        for name in ops.remove.iter().filter(|n| removable(n)) {
            self.fields.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        }
        for (name, value) in &ops.set {
            if allowed(name) && is_field_value(value) {
                self.fields.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
                self.push(name, Cow::Borrowed(value.as_bytes()));
            }
        }
        for (name, value) in &ops.add {
            if allowed(name) && is_field_value(value) {
                self.push(name, Cow::Borrowed(value.as_bytes()));
            }
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        for (name, value) in &self.fields {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }
}

fn is_field_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(is_tchar)
}

fn is_field_value(value: &str) -> bool {
    value.bytes().all(|b| b == b'\t' || b >= 0x20 && b != 0x7f)
}

/// The reason phrase ringway writes when the upstream sent none, and in
/// local replies.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}
