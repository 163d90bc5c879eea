//! A sans-io HTTP/1.1 codec with ringway's own strictness: heads parsed
//! over `httparse` into byte ranges of one owned copy, checked against the
//! smuggling and malformed-message cases the design note lists (§4, §6.3);
//! a strict incremental chunk decoder; the heads ringway writes upstream
//! and downstream (re-serialised, never forwarded raw); local replies.
//!
//! - [`head`]: [`head::parse_request`], [`head::parse_response`] and their
//!   errors; what is accepted and rejected is in `docs/http/codec.md`.
//! - [`chunked`]: [`chunked::ChunkedDecoder`], which stops exactly at the
//!   end of a chunked body.
//! - [`mod@write`]: [`write::write_request`], [`write::write_response`].
//! - [`reply`]: [`reply::local_reply`] (404 `NR`, 400, 431, 503, ...).
//! - [`date`]: the IMF-fixdate of the `date` header.
//!
//! No I/O, no `dataplane`: bytes in, decisions and bytes out.
#![forbid(unsafe_code)]

pub mod chunked;
pub mod date;
pub mod head;
pub mod reply;
pub mod write;

mod fields;
mod path;

pub use fields::Fields;

use std::fmt;

/// The protocol version of a message. Anything else is rejected (505).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    Http10,
    Http11,
}

impl Version {
    /// `HTTP/1.0` or `HTTP/1.1`, as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }

    fn from_minor(minor: u8) -> Self {
        if minor == 0 {
            Version::Http10
        } else {
            Version::Http11
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the body of a message ends (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body: a request without Content-Length or Transfer-Encoding; a
    /// response to HEAD, a 1xx, 204 or 304.
    None,
    /// Exactly this many bytes (`Content-Length`).
    Length(u64),
    /// `Transfer-Encoding: chunked`: decode with
    /// [`chunked::ChunkedDecoder`].
    Chunked,
    /// Until the upstream closes (responses only): the connection is never
    /// reused.
    CloseDelimited,
}

#[cfg(test)]
mod corpus_tests;
#[cfg(test)]
mod head_tests;
#[cfg(test)]
mod prop_tests;
#[cfg(test)]
mod write_tests;
