//! Request and response heads: parsed over `httparse`, then held to
//! ringway's rules (CRLF only, no obs-fold, one trustworthy framing, one
//! Host, a target in a form ringway forwards), and kept as an owned copy
//! with byte ranges.
//!
//! A head is parsed from a buffer that may hold more (a body start, the
//! next pipelined request): `Ok(Some((head, consumed)))` says how many
//! bytes were the head; `Ok(None)` asks for more bytes and is only answered
//! while the buffer is under the limit.

mod request;
mod response;

pub use request::{MAX_REQUEST_HEAD, RequestHead, RequestScanner, parse_request};
pub use response::{
    MAX_RESPONSE_HEAD, ResponseContext, ResponseHead, ResponseScanner, parse_response,
};

use std::fmt;

use super::fields::{FramingError, LineError};

/// Why a request head was refused: the status of the local reply and an
/// Envoy-like detail (the access log's `%RESPONSE_CODE_DETAILS%`). The
/// connection closes after the reply: nothing behind a bad head is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestError {
    pub status: u16,
    pub detail: &'static str,
}

impl RequestError {
    const fn bad(detail: &'static str) -> Self {
        RequestError {
            status: 400,
            detail,
        }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.detail)
    }
}

impl std::error::Error for RequestError {}

/// Why an upstream response head was refused: the client gets 502 (`UPE`)
/// and the upstream connection is closed, never pooled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseError {
    pub detail: &'static str,
}

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "upstream response: {}", self.detail)
    }
}

impl std::error::Error for ResponseError {}

/// The details a refused head carries, for access logs and reject metrics.
pub mod detail {
    /// Malformed in a way no more specific detail names.
    pub const CODEC_ERROR: &str = "http1.codec_error";
    /// NUL, CR, LF, DEL or another control byte in a field; a field name
    /// that is not a token; a non-ASCII byte in the target.
    pub const INVALID_CHARACTERS: &str = "http1.invalid_characters";
    /// A line ended by `\n` alone.
    pub const BARE_LF: &str = "http1.bare_line_feed";
    /// A field line starting with whitespace (obsolete line folding).
    pub const OBS_FOLD: &str = "http1.obsolete_line_folding";
    /// `Name : value`.
    pub const SPACE_BEFORE_COLON: &str = "http1.space_before_colon";
    /// Head (start line included) over the limit: 431.
    pub const HEADERS_TOO_LARGE: &str = "http1.headers_too_large";
    /// More than 100 fields: 431.
    pub const TOO_MANY_HEADERS: &str = "http1.too_many_headers";
    /// A method with characters outside tchar.
    pub const INVALID_METHOD: &str = "http1.invalid_method";
    /// A request target ringway cannot forward.
    pub const INVALID_URL: &str = "http1.invalid_url";
    /// An `https://` absolute-form target on a plain-text listener.
    pub const INVALID_SCHEME: &str = "http1.invalid_scheme";
    /// `HTTP/x.y` other than 1.0 and 1.1: 505.
    pub const UNSUPPORTED_VERSION: &str = "http1.unsupported_version";
    /// The HTTP/2 connection preface (`PRI * HTTP/2.0`, h2c prior
    /// knowledge): 505, close.
    pub const H2_PREFACE: &str = "http1.http2_preface";
    /// Content-Length and Transfer-Encoding both present.
    pub const CONTENT_LENGTH_AND_CHUNKED: &str = "http1.content_length_and_chunked_not_allowed";
    /// Two Content-Length fields (even equal).
    pub const MULTIPLE_CONTENT_LENGTH: &str = "http1.multiple_content_length";
    /// A Content-Length that is not 1*DIGIT up to 2^63 − 1.
    pub const INVALID_CONTENT_LENGTH: &str = "http1.invalid_content_length";
    /// Transfer-Encoding with a coding other than a final `chunked`: 501.
    pub const INVALID_TRANSFER_ENCODING: &str = "http1.invalid_transfer_encoding";
    /// Transfer-Encoding empty, or `chunked` twice.
    pub const MALFORMED_TRANSFER_ENCODING: &str = "http1.malformed_transfer_encoding";
    /// Transfer-Encoding on an HTTP/1.0 request.
    pub const TRANSFER_ENCODING_ON_HTTP10: &str = "http1.transfer_encoding_on_http10";
    /// An HTTP/1.1 request without Host (Envoy's detail).
    pub const MISSING_HOST: &str = "missing_host_header";
    /// Two Host fields.
    pub const MULTIPLE_HOST: &str = "http1.multiple_host_header";
    /// A Host that is not `host[:port]`.
    pub const INVALID_HOST: &str = "http1.invalid_host";
    /// A response status outside 100..=599 or not three digits.
    pub const INVALID_STATUS: &str = "http1.invalid_status";
    /// An `Upgrade` other than `websocket` (or `h2c`, which is stripped):
    /// 403, close (Envoy's detail).
    pub const UPGRADE_FAILED: &str = "upgrade_failed";
    /// A WebSocket upgrade that is not a valid handshake (not GET, HTTP/1.0,
    /// no `Sec-WebSocket-Version`, a `Sec-WebSocket-Key` that is not 16
    /// bytes in base64): 400, close.
    pub const INVALID_WEBSOCKET: &str = "http1.invalid_websocket_handshake";
    /// CONNECT: ringway is no forward proxy; 405, close.
    pub const CONNECT: &str = "http1.connect_not_allowed";
}

fn line_error(e: LineError) -> (u16, &'static str) {
    match e {
        LineError::BareLf => (400, detail::BARE_LF),
        LineError::LoneCr => (400, detail::INVALID_CHARACTERS),
        LineError::ObsFold => (400, detail::OBS_FOLD),
        LineError::SpaceBeforeColon => (400, detail::SPACE_BEFORE_COLON),
        LineError::TooLarge => (431, detail::HEADERS_TOO_LARGE),
    }
}

fn framing_error(e: FramingError) -> (u16, &'static str) {
    match e {
        FramingError::BothLengthAndEncoding => (400, detail::CONTENT_LENGTH_AND_CHUNKED),
        FramingError::DuplicateContentLength => (400, detail::MULTIPLE_CONTENT_LENGTH),
        FramingError::InvalidContentLength => (400, detail::INVALID_CONTENT_LENGTH),
        FramingError::UnsupportedEncoding => (501, detail::INVALID_TRANSFER_ENCODING),
        FramingError::InvalidEncoding => (400, detail::MALFORMED_TRANSFER_ENCODING),
    }
}

/// httparse's errors that both heads share.
fn httparse_error(e: httparse::Error) -> (u16, &'static str) {
    match e {
        httparse::Error::HeaderName | httparse::Error::HeaderValue => {
            (400, detail::INVALID_CHARACTERS)
        }
        httparse::Error::TooManyHeaders => (431, detail::TOO_MANY_HEADERS),
        httparse::Error::Version => (505, detail::UNSUPPORTED_VERSION),
        httparse::Error::Status => (400, detail::INVALID_STATUS),
        httparse::Error::Token | httparse::Error::NewLine => (400, detail::CODEC_ERROR),
    }
}

/// `HTTP/<digit>.<digit>`: a version ringway can name, if not serve.
fn looks_like_version(v: &[u8]) -> bool {
    matches!(v, [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
        if major.is_ascii_digit() && minor.is_ascii_digit())
}
