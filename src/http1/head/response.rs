//! The upstream response head: [`parse_response`] and [`ResponseHead`].

use std::time::Duration;

use super::{ResponseError, detail, framing_error, httparse_error, line_error};
use crate::http1::fields::{self, Fields, FramingError, Span};
use crate::http1::{BodyFraming, Version};

/// The most bytes a response head may take (Envoy's 80 KiB): beyond, the
/// response is refused (502 `UPE`).
pub const MAX_RESPONSE_HEAD: usize = 80 * 1024;

/// What the response answers, which decides its framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseContext {
    /// The request was HEAD: the response has no body whatever it says.
    pub head_request: bool,
    /// The version of the request sent upstream; a response to HTTP/1.0
    /// keeps the connection only with `Connection: keep-alive`.
    pub version: Version,
}

/// A parsed response head: an owned copy and ranges into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    fields: Fields,
    status: u16,
    reason: Span,
    version: Version,
    framing: BodyFraming,
    keep_alive: bool,
    head_request: bool,
    len: usize,
}

/// [`super::RequestScanner`] for response heads: finds the end of a head
/// in a buffer that grows between calls, judging each line once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResponseScanner {
    lines: fields::LineScanner,
}

impl ResponseScanner {
    pub fn new() -> Self {
        Self::default()
    }

    /// `Ok(true)`: `buf` holds a whole head, parse it; `Ok(false)`: need
    /// more bytes; `Err`: refuse, as [`parse_response`] would.
    pub fn scan(&mut self, buf: &[u8]) -> Result<bool, ResponseError> {
        match self.lines.scan(buf, MAX_RESPONSE_HEAD, false) {
            Ok(end) => Ok(end.is_some()),
            Err(e) => Err(ResponseError {
                detail: line_error(e).1,
            }),
        }
    }
}

/// Parse the response head at the start of `buf` (see
/// [`super::parse_request`] for the meaning of the result).
pub fn parse_response(
    buf: &[u8],
    request: ResponseContext,
) -> Result<Option<(ResponseHead, usize)>, ResponseError> {
    let refuse = |(_, detail): (u16, &'static str)| ResponseError { detail };
    let end = match fields::find_head_end(buf, MAX_RESPONSE_HEAD, false) {
        Ok(Some(end)) => end,
        Ok(None) => return Ok(None),
        Err(e) => return Err(refuse(line_error(e))),
    };
    let wire = &buf[..end];
    let mut storage = [httparse::EMPTY_HEADER; fields::MAX_FIELDS];
    let mut resp = httparse::Response::new(&mut storage);
    match resp.parse(wire) {
        Ok(httparse::Status::Complete(n)) if n == end => {}
        Ok(_) => {
            return Err(ResponseError {
                detail: detail::CODEC_ERROR,
            });
        }
        Err(e) => return Err(refuse(httparse_error(e))),
    }
    let (Some(minor), Some(status)) = (resp.version, resp.code) else {
        return Err(ResponseError {
            detail: detail::CODEC_ERROR,
        });
    };
    if !(100..=599).contains(&status) {
        return Err(ResponseError {
            detail: detail::INVALID_STATUS,
        });
    }
    // httparse blanks a reason with obs-text; keep the received one.
    let line_end = memchr::memchr(b'\r', wire).unwrap_or(0);
    let reason = Span::new(line_end.min("HTTP/1.1 200 ".len()), line_end);
    let fields = Fields::new(wire, resp.headers);
    let version = Version::from_minor(minor);
    let framing = response_framing(&fields, status, request.head_request)
        .map_err(|e| refuse(framing_error(e)))?;
    let persistent = match (request.version, version) {
        (Version::Http11, Version::Http11) => !fields.connection_has("close"),
        _ => !fields.connection_has("close") && fields.connection_has("keep-alive"),
    };
    // RFC 9112 §6.1: Transfer-Encoding on HTTP/1.0 is faulty framing; the
    // connection closes after this message.
    let faulty = version == Version::Http10 && fields.values("transfer-encoding").next().is_some();
    let keep_alive = persistent && !faulty && framing != BodyFraming::CloseDelimited;
    Ok(Some((
        ResponseHead {
            fields,
            status,
            reason,
            version,
            framing,
            keep_alive,
            head_request: request.head_request,
            len: end,
        },
        end,
    )))
}

/// RFC 9112 §6.3 for responses. A Transfer-Encoding whose final coding is
/// not chunked makes the body close-delimited (§6.3 rule 4).
fn response_framing(
    fields: &Fields,
    status: u16,
    head_request: bool,
) -> Result<BodyFraming, FramingError> {
    let framing = match fields::framing_fields(fields) {
        Ok(f) => f,
        Err(FramingError::UnsupportedEncoding) => return Ok(BodyFraming::CloseDelimited),
        Err(e) => return Err(e),
    };
    if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(BodyFraming::None);
    }
    Ok(match (framing.chunked, framing.content_length) {
        (true, _) => BodyFraming::Chunked,
        (false, Some(n)) => BodyFraming::Length(n),
        (false, None) => BodyFraming::CloseDelimited,
    })
}

impl ResponseHead {
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The reason phrase as received (may be empty).
    pub fn reason(&self) -> &[u8] {
        self.fields.get(self.reason)
    }

    pub fn version(&self) -> Version {
        self.version
    }

    pub fn framing(&self) -> BodyFraming {
        self.framing
    }

    /// May the upstream connection carry another request after this
    /// response? Never after a close-delimited body.
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    /// `Keep-Alive: timeout=N`: how long the upstream keeps an idle
    /// connection.
    pub fn keep_alive_timeout(&self) -> Option<Duration> {
        self.fields
            .values("keep-alive")
            .flat_map(fields::list_items)
            .find_map(|param| {
                let (name, value) = param.split_at(param.iter().position(|&b| b == b'=')?);
                if !fields::trim_ows(name).eq_ignore_ascii_case(b"timeout") {
                    return None;
                }
                let value = std::str::from_utf8(fields::trim_ows(&value[1..])).ok()?;
                value.parse::<u64>().ok().map(Duration::from_secs)
            })
    }

    /// A 1xx other than 101: the final response is still to come.
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }

    /// The response answers a HEAD request.
    pub fn is_head_response(&self) -> bool {
        self.head_request
    }

    /// The bytes the head took on the wire.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true: a head has at least its status line.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The fields, in order (framing and hop-by-hop ones included).
    pub fn fields(&self) -> &Fields {
        &self.fields
    }
}
