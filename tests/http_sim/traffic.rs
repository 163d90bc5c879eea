//! The HTTP traffic of a simulated client connection: the requests a
//! client sends (random bodies and framings), the responses its upstreams
//! answer with, and parsers that cut a received byte stream back into
//! messages with the codec (`ringway::http1`).

use ringway::http1::BodyFraming;
use ringway::http1::chunked::ChunkedDecoder;
use ringway::http1::head::{ResponseContext, parse_request, parse_response};

use super::Rng;

/// Where a request goes, and so what answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The seed's route: one of the upstreams answers.
    Upstream,
    /// A host no virtual host serves: ringway's 404 `NR`.
    UnknownHost,
    /// A path the direct-response variant answers itself.
    Direct,
}

/// One request as the client writes it.
#[derive(Debug, Clone)]
pub struct ClientRequest {
    pub kind: Kind,
    pub method: &'static str,
    pub path: String,
    /// The body bytes as framed on the wire (chunk sizes and all).
    pub body: Vec<u8>,
    /// The whole request: head, then body.
    pub wire: Vec<u8>,
    /// Written in the same burst as the request before it (pipelined).
    pub pipelined: bool,
    /// `Connection: close`.
    pub close: bool,
}

impl ClientRequest {
    pub fn has_body(&self) -> bool {
        !self.body.is_empty()
    }
}

/// A chunked body of `payload` in random chunk sizes, with chunk
/// extensions and trailers now and then; `large`: a quarter of the chunks
/// up to 8,000 bytes (past a small splice threshold).
pub fn chunked(rng: &mut Rng, payload: &[u8], large: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < payload.len() {
        let max = if large && rng.chance(25) { 8000 } else { 700 };
        let n = (1 + rng.below(max) as usize).min(payload.len() - at);
        out.extend_from_slice(format!("{n:x}").as_bytes());
        if rng.chance(20) {
            out.extend_from_slice(b";ext=\"v\"");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&payload[at..at + n]);
        out.extend_from_slice(b"\r\n");
        at += n;
    }
    out.extend_from_slice(b"0\r\n");
    if rng.chance(25) {
        out.extend_from_slice(b"x-checksum: 42\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Random bytes of a body (printable, so a trace stays readable).
pub fn payload(rng: &mut Rng, max: u64) -> Vec<u8> {
    let len = rng.below(max + 1) as usize;
    (0..len)
        .map(|i| b'a' + ((i as u64 + rng.below(3)) % 26) as u8)
        .collect()
}

/// The client's `n` requests. `direct`: the plan has the direct-response
/// route, and some requests ask for it; `large`: some bodies up to
/// 20,000 bytes, in large chunks too.
pub fn client_requests(rng: &mut Rng, n: usize, direct: bool, large: bool) -> Vec<ClientRequest> {
    (0..n)
        .map(|k| {
            let kind = match rng.below(12) {
                0 => Kind::UnknownHost,
                1 | 2 if direct => Kind::Direct,
                _ => Kind::Upstream,
            };
            let host = match kind {
                Kind::UnknownHost => "nowhere.example.com",
                Kind::Upstream | Kind::Direct => "tomcat.istio.com",
            };
            let path = match kind {
                Kind::Direct => format!("/direct/r{k}"),
                Kind::Upstream | Kind::UnknownHost => format!("/r{k}"),
            };
            let close = k + 1 == n && rng.chance(30);
            let mut head = String::new();
            // A local answer to a request whose body is still to come
            // closes the connection: most of them have none.
            let local = kind != Kind::Upstream;
            let (method, body) = match rng.below(3) {
                _ if local && rng.chance(75) => ("GET", Vec::new()),
                0 => ("GET", Vec::new()),
                1 => {
                    let body = payload(rng, if large { 20_000 } else { 3000 });
                    head.push_str(&format!("content-length: {}\r\n", body.len()));
                    ("POST", body)
                }
                _ => {
                    let p = payload(rng, if large { 20_000 } else { 3000 });
                    head.push_str("transfer-encoding: chunked\r\n");
                    ("PUT", chunked(rng, &p, large))
                }
            };
            if close {
                head.push_str("connection: close\r\n");
            }
            let mut wire =
                format!("{method} {path} HTTP/1.1\r\nhost: {host}\r\nx-seq: {k}\r\n{head}\r\n")
                    .into_bytes();
            wire.extend_from_slice(&body);
            ClientRequest {
                kind,
                method,
                path,
                body,
                wire,
                pipelined: k > 0 && rng.chance(30),
                close,
            }
        })
        .collect()
}

/// How an upstream frames a response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Length,
    Chunked,
    /// Until the upstream closes (only ever the last response).
    Close,
}

/// What an upstream answers to request `k`: the response, its framing,
/// and whether the server closes the connection after it.
/// `large`: responses in large chunks too.
pub fn upstream_response(
    rng: &mut Rng,
    k: usize,
    last: bool,
    large: bool,
) -> (Vec<u8>, Framing, bool) {
    let status = [200, 200, 201, 404, 500][rng.below(5) as usize];
    let framing = match rng.below(10) {
        0 if last => Framing::Close,
        0..=5 => Framing::Length,
        _ => Framing::Chunked,
    };
    let big = rng.chance(10);
    let p = payload(rng, if big { 40_000 } else { 2_500 });
    let closes = framing == Framing::Close || rng.chance(10);
    let mut wire = Vec::new();
    // Interim heads first (relayed to 1.1 clients, dropped for 1.0), for
    // one answer in five: chosen by `k`, not drawn, so that every seed's
    // other choices stay what they were before interim heads came in.
    if k % 5 == 2 {
        wire.extend_from_slice(b"HTTP/1.1 100 Continue\r\nx-interim: 1\r\n\r\n");
        if k % 10 == 7 {
            wire.extend_from_slice(b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n");
        }
    }
    wire.extend_from_slice(format!("HTTP/1.1 {status} X\r\nx-answer: {k}\r\n").as_bytes());
    if closes && framing != Framing::Close {
        wire.extend_from_slice(b"connection: close\r\n");
    }
    let body = match framing {
        Framing::Length => {
            wire.extend_from_slice(format!("content-length: {}\r\n", p.len()).as_bytes());
            p
        }
        Framing::Chunked => {
            wire.extend_from_slice(b"transfer-encoding: chunked\r\n");
            chunked(rng, &p, large)
        }
        Framing::Close => p,
    };
    wire.extend_from_slice(b"\r\n");
    wire.extend_from_slice(&body);
    (wire, framing, closes)
}

/// A message read back from a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Request: "METHOD path"; response: the status.
    pub start: String,
    /// `x-seq` (requests) or `x-answer` (responses), when present.
    pub seq: Option<usize>,
    pub body: Vec<u8>,
    /// Bytes of the stream up to the message's end.
    pub end: usize,
}

/// How many bytes of `buf` a body of `framing` takes, once all there.
fn body_len(framing: BodyFraming, buf: &[u8], eof: bool) -> Result<Option<usize>, String> {
    match framing {
        BodyFraming::None => Ok(Some(0)),
        BodyFraming::Length(n) => Ok((buf.len() as u64 >= n).then_some(n as usize)),
        BodyFraming::Chunked => {
            let mut d = ChunkedDecoder::new();
            let used = d
                .feed(buf, &mut |_| {})
                .map_err(|e| e.detail().to_string())?;
            Ok(d.is_done().then_some(used))
        }
        BodyFraming::CloseDelimited => Ok(eof.then_some(buf.len())),
    }
}

fn seq_of<'a>(mut values: impl Iterator<Item = &'a [u8]>) -> Option<usize> {
    std::str::from_utf8(values.next()?).ok()?.parse().ok()
}

/// The complete requests at the start of `stream`, and where the parsed
/// part ends.
pub fn requests_in(stream: &[u8]) -> Result<Vec<Message>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < stream.len() {
        let Some((head, used)) = parse_request(&stream[at..]).map_err(|e| e.detail.to_string())?
        else {
            break;
        };
        let rest = &stream[at + used..];
        let Some(n) = body_len(head.framing(), rest, false)? else {
            break;
        };
        at += used + n;
        out.push(Message {
            start: format!("{} {}", head.method(), head.target()),
            seq: seq_of(head.fields().values("x-seq")),
            body: rest[..n].to_vec(),
            end: at,
        });
    }
    Ok(out)
}

/// The complete responses at the start of `stream` (`eof`: the stream
/// ended, which ends a close-delimited body); interim heads skipped.
pub fn responses_in(stream: &[u8], eof: bool) -> Result<Vec<Message>, String> {
    let context = ResponseContext {
        head_request: false,
        version: ringway::http1::Version::Http11,
    };
    let mut out = Vec::new();
    let mut at = 0;
    while at < stream.len() {
        let Some((head, used)) =
            parse_response(&stream[at..], context).map_err(|e| e.detail.to_string())?
        else {
            break;
        };
        if head.is_interim() {
            // Interim heads are not responses: the final one follows.
            at += used;
            continue;
        }
        let rest = &stream[at + used..];
        let Some(n) = body_len(head.framing(), rest, eof)? else {
            break;
        };
        at += used + n;
        out.push(Message {
            start: head.status().to_string(),
            seq: seq_of(head.fields().values("x-answer")),
            body: rest[..n].to_vec(),
            end: at,
        });
    }
    Ok(out)
}
