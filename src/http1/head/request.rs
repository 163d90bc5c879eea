//! The request head: [`parse_request`] and [`RequestHead`].

use std::borrow::Cow;

use super::{RequestError, detail, framing_error, httparse_error, line_error, looks_like_version};
use crate::http1::fields::{self, Fields, Span, is_authority};
use crate::http1::{BodyFraming, Version, path};
use crate::routing::http::RequestView;

/// The most bytes a request head may take, request line included (Envoy's
/// `max_request_headers_kb` default): beyond, 431.
pub const MAX_REQUEST_HEAD: usize = 60 * 1024;

/// The HTTP/2 connection preface's first line (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// A parsed request head: an owned copy of its bytes (with the normalised
/// path appended when normalisation changed it) and ranges into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    fields: Fields,
    method: Span,
    target: Span,
    path: Span,
    query: Option<Span>,
    authority: Option<Span>,
    upgrade: Option<Span>,
    version: Version,
    framing: BodyFraming,
    keep_alive: bool,
    expect_continue: bool,
    len: usize,
}

/// Parse the request head at the start of `buf`.
///
/// `Ok(None)`: incomplete, and `buf` is still under [`MAX_REQUEST_HEAD`].
/// `Ok(Some((head, consumed)))`: the head took `buf[..consumed]`; what
/// follows is body or the next request. `Err`: answer `status` and close.
pub fn parse_request(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, RequestError> {
    if buf.starts_with(H2_PREFACE) {
        return Err(RequestError {
            status: 505,
            detail: detail::H2_PREFACE,
        });
    }
    let end = match fields::find_head_end(buf, MAX_REQUEST_HEAD, true) {
        Ok(Some(end)) => end,
        Ok(None) => return Ok(None),
        Err(e) => return Err(error(line_error(e))),
    };
    let wire = &buf[..end];
    let mut storage = [httparse::EMPTY_HEADER; fields::MAX_FIELDS];
    let mut req = httparse::Request::new(&mut storage);
    match req.parse(wire) {
        Ok(httparse::Status::Complete(n)) if n == end => {}
        Ok(_) => return Err(RequestError::bad(detail::CODEC_ERROR)),
        Err(e) => return Err(request_line_error(e, &req, wire)),
    }
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(RequestError::bad(detail::CODEC_ERROR));
    };
    let mut head = RequestHead {
        fields: Fields::new(wire, req.headers),
        method: Span::of(wire, method.as_bytes()),
        target: Span::of(wire, target.as_bytes()),
        path: Span::default(),
        query: None,
        authority: None,
        upgrade: None,
        version: Version::from_minor(minor),
        framing: BodyFraming::None,
        keep_alive: false,
        expect_continue: false,
        len: end,
    };
    head.read_target()?;
    head.read_host()?;
    head.read_framing()?;
    head.read_connection();
    Ok(Some((head, end)))
}

/// Finds the end of a request head in a buffer that grows between calls
/// (bytes appended, never changed), judging each line once: call
/// [`parse_request`] when it says the head is whole.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestScanner {
    lines: fields::LineScanner,
}

impl RequestScanner {
    pub fn new() -> Self {
        Self::default()
    }

    /// `Ok(true)`: `buf` holds a whole head (or the HTTP/2 preface), parse
    /// it; `Ok(false)`: need more bytes; `Err`: refuse, as
    /// [`parse_request`] would.
    pub fn scan(&mut self, buf: &[u8]) -> Result<bool, RequestError> {
        if buf.starts_with(H2_PREFACE) {
            return Ok(true);
        }
        match self.lines.scan(buf, MAX_REQUEST_HEAD, true) {
            Ok(end) => Ok(end.is_some()),
            Err(e) => Err(error(line_error(e))),
        }
    }
}

fn error((status, detail): (u16, &'static str)) -> RequestError {
    RequestError { status, detail }
}

/// httparse stopped in the request line or a field: say which part.
fn request_line_error(
    e: httparse::Error,
    req: &httparse::Request<'_, '_>,
    wire: &[u8],
) -> RequestError {
    match e {
        httparse::Error::Token if req.method.is_none() => RequestError::bad(detail::INVALID_METHOD),
        httparse::Error::Token => RequestError::bad(detail::INVALID_URL),
        httparse::Error::Version => {
            let mut lines = wire.split(|&b| b == b'\r' || b == b'\n');
            let line = lines.find(|l| !l.is_empty()).unwrap_or_default();
            let version = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
            if looks_like_version(version) {
                error(httparse_error(e))
            } else {
                RequestError::bad(detail::CODEC_ERROR)
            }
        }
        other => error(httparse_error(other)),
    }
}

impl RequestHead {
    /// Classify the target (origin, absolute, authority or asterisk form),
    /// check its bytes, and set path, query and the target's authority.
    /// A normalised path that differs from the received one is appended to
    /// the owned bytes.
    fn read_target(&mut self) -> Result<(), RequestError> {
        let mut bytes = std::mem::take(&mut self.fields.bytes);
        let result = self.split_target(&mut bytes);
        self.fields.bytes = bytes;
        result
    }

    fn split_target(&mut self, bytes: &mut Vec<u8>) -> Result<(), RequestError> {
        let start = self.target.start as usize;
        let target = bytes
            .get(start..self.target.end as usize)
            .unwrap_or_default();
        let method = bytes
            .get(self.method.start as usize..self.method.end as usize)
            .unwrap_or_default();
        if target
            .iter()
            .any(|&b| !(0x21..=0x7e).contains(&b) || b == b'#')
        {
            return Err(RequestError::bad(detail::INVALID_URL));
        }
        if target == b"*" {
            if method != b"OPTIONS" {
                return Err(RequestError::bad(detail::INVALID_URL));
            }
            self.path = self.target;
            return Ok(());
        }
        if method == b"CONNECT" {
            if !is_authority(target) || !target.contains(&b':') {
                return Err(RequestError::bad(detail::INVALID_URL));
            }
            self.authority = Some(self.target);
            self.path = Span::new(start, start);
            return Ok(());
        }
        let origin = if target.starts_with(b"/") {
            0
        } else {
            self.read_absolute_form(target)?
        };
        let (path_end, query) = match target[origin..].iter().position(|&b| b == b'?') {
            Some(q) => (
                origin + q,
                Some(Span::new(start + origin + q + 1, start + target.len())),
            ),
            None => (target.len(), None),
        };
        self.query = query;
        let raw_path = std::str::from_utf8(&target[origin..path_end]).unwrap_or_default();
        let raw_path = if raw_path.is_empty() { "/" } else { raw_path };
        let normalized = match path::normalize(raw_path) {
            Err(path::InvalidEscape) => return Err(RequestError::bad(detail::INVALID_URL)),
            Ok(Cow::Borrowed(p)) if p.len() == path_end - origin => {
                self.path = Span::new(start + origin, start + path_end);
                return Ok(());
            }
            Ok(normalized) => normalized.into_owned(),
        };
        let at = bytes.len();
        bytes.extend_from_slice(normalized.as_bytes());
        self.path = Span::new(at, bytes.len());
        Ok(())
    }

    /// `http://authority[/path][?query]`: the authority replaces Host (RFC
    /// 9112 §3.2.2). Returns where the path starts in the target.
    fn read_absolute_form(&mut self, target: &[u8]) -> Result<usize, RequestError> {
        let scheme_end = target
            .windows(3)
            .position(|w| w == b"://")
            .ok_or(RequestError::bad(detail::INVALID_URL))?;
        let scheme = &target[..scheme_end];
        if scheme.eq_ignore_ascii_case(b"https") {
            return Err(RequestError::bad(detail::INVALID_SCHEME));
        }
        if !scheme.eq_ignore_ascii_case(b"http") {
            return Err(RequestError::bad(detail::INVALID_URL));
        }
        let auth_start = scheme_end + 3;
        let auth_len = target[auth_start..]
            .iter()
            .position(|&b| b == b'/' || b == b'?')
            .unwrap_or(target.len() - auth_start);
        let authority = &target[auth_start..auth_start + auth_len];
        if authority.is_empty() || !is_authority(authority) {
            return Err(RequestError::bad(detail::INVALID_URL));
        }
        let start = self.target.start as usize + auth_start;
        self.authority = Some(Span::new(start, start + auth_len));
        Ok(auth_start + auth_len)
    }

    fn read_host(&mut self) -> Result<(), RequestError> {
        let mut hosts = self
            .fields
            .list
            .iter()
            .filter(|f| self.fields.str(f.name).eq_ignore_ascii_case("host"));
        let host = hosts.next().map(|f| f.value);
        if hosts.next().is_some() {
            return Err(RequestError::bad(detail::MULTIPLE_HOST));
        }
        match host {
            None if self.version == Version::Http11 => Err(RequestError::bad(detail::MISSING_HOST)),
            None => Ok(()),
            Some(value) if !is_authority(self.fields.get(value)) => {
                Err(RequestError::bad(detail::INVALID_HOST))
            }
            Some(value) => {
                if self.authority.is_none() && value.start < value.end {
                    self.authority = Some(value);
                }
                Ok(())
            }
        }
    }

    fn read_framing(&mut self) -> Result<(), RequestError> {
        if self.version == Version::Http10
            && self.fields.values("transfer-encoding").next().is_some()
        {
            return Err(RequestError::bad(detail::TRANSFER_ENCODING_ON_HTTP10));
        }
        let framing = fields::framing_fields(&self.fields).map_err(|e| error(framing_error(e)))?;
        self.framing = match (framing.chunked, framing.content_length) {
            (true, _) => BodyFraming::Chunked,
            (false, Some(n)) => BodyFraming::Length(n),
            (false, None) => BodyFraming::None,
        };
        Ok(())
    }

    fn read_connection(&mut self) {
        let close = self.fields.connection_has("close");
        self.keep_alive = match self.version {
            Version::Http11 => !close,
            Version::Http10 => !close && self.fields.connection_has("keep-alive"),
        };
        let http11 = self.version == Version::Http11;
        self.expect_continue = http11
            && self
                .fields
                .values("expect")
                .any(|v| v.eq_ignore_ascii_case(b"100-continue"));
        if http11 && self.fields.connection_has("upgrade") {
            self.upgrade = self
                .fields
                .list
                .iter()
                .find(|f| self.fields.str(f.name).eq_ignore_ascii_case("upgrade"))
                .map(|f| f.value);
        }
    }

    /// The method, as received (`GET`; methods are case-sensitive).
    pub fn method(&self) -> &str {
        self.fields.str(self.method)
    }

    /// The request target as received (`/a/../b?x`, `http://h/p`, `*`).
    pub fn target(&self) -> &str {
        self.fields.str(self.target)
    }

    /// The normalised path without query (`/b`); `*` for `OPTIONS *`,
    /// empty for CONNECT.
    pub fn path(&self) -> &str {
        self.fields.str(self.path)
    }

    /// The query without its `?`, if the target had one.
    pub fn query(&self) -> Option<&str> {
        self.query.map(|q| self.fields.str(q))
    }

    /// The absolute-form target's authority, else the Host header; `None`
    /// when neither (HTTP/1.0 without Host) or Host is empty.
    pub fn authority(&self) -> Option<&str> {
        self.authority.map(|a| self.fields.str(a))
    }

    pub fn version(&self) -> Version {
        self.version
    }

    pub fn framing(&self) -> BodyFraming {
        self.framing
    }

    /// HTTP/1.1: unless `Connection: close`; HTTP/1.0: only with
    /// `Connection: keep-alive`.
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    /// `Expect: 100-continue` on an HTTP/1.1 request.
    pub fn expect_continue(&self) -> bool {
        self.expect_continue
    }

    /// The Upgrade field's value (`websocket`) of an HTTP/1.1 request whose
    /// Connection lists `upgrade`.
    pub fn upgrade(&self) -> Option<&[u8]> {
        self.upgrade.map(|u| self.fields.get(u))
    }

    pub fn is_head_method(&self) -> bool {
        self.method() == "HEAD"
    }

    /// The bytes the head took on the wire (leading empty lines included).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true: a head has at least its request line.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The fields, in order (Host, framing and hop-by-hop ones included).
    pub fn fields(&self) -> &Fields {
        &self.fields
    }
}

impl RequestView for RequestHead {
    fn method(&self) -> &str {
        RequestHead::method(self)
    }

    fn path(&self) -> &str {
        RequestHead::path(self)
    }

    fn query(&self) -> Option<&str> {
        RequestHead::query(self)
    }

    fn authority(&self) -> Option<&str> {
        RequestHead::authority(self)
    }

    fn header(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        let mut values = self.fields.values(name);
        let first = values.next()?;
        let Some(second) = values.next() else {
            return Some(Cow::Borrowed(first));
        };
        let mut joined = [first, second].join(&b","[..]);
        for value in values {
            joined.push(b',');
            joined.extend_from_slice(value);
        }
        Some(Cow::Owned(joined))
    }
}
