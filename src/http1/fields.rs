//! What request and response heads share: finding the end of a head with
//! CRLF-only line ends (httparse alone accepts bare `\n`), the owned copy
//! of the head with byte ranges of its fields, and the framing headers
//! (Content-Length, Transfer-Encoding, Connection) read once.

use memchr::{memchr, memchr2};

/// The most fields a head may carry (Envoy's and HAProxy's default).
pub(crate) const MAX_FIELDS: usize = 100;

/// A range of the owned head bytes; heads are far below 4 GiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Self {
        Span {
            start: u32::try_from(start).unwrap_or(u32::MAX),
            end: u32::try_from(end).unwrap_or(u32::MAX),
        }
    }

    /// The range of `part` inside `whole` (`part` borrowed from `whole`).
    pub fn of(whole: &[u8], part: &[u8]) -> Self {
        let start = (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize);
        Span::new(start, start + part.len())
    }
}

/// One header field: name and value (OWS trimmed), as ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Field {
    pub name: Span,
    pub value: Span,
}

/// The fields of a parsed head: an owned copy of the head's bytes and the
/// range of every field's name and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    pub(crate) bytes: Vec<u8>,
    pub(crate) list: Vec<Field>,
}

impl Fields {
    /// Copy `wire` (a whole head) and keep where httparse found each field.
    pub(crate) fn new(wire: &[u8], headers: &[httparse::Header<'_>]) -> Self {
        let list = headers
            .iter()
            .map(|h| Field {
                name: Span::of(wire, h.name.as_bytes()),
                value: Span::of(wire, h.value),
            })
            .collect();
        Fields {
            bytes: wire.to_vec(),
            list,
        }
    }

    pub(crate) fn get(&self, span: Span) -> &[u8] {
        self.bytes
            .get(span.start as usize..span.end as usize)
            .unwrap_or_default()
    }

    /// Names are tokens (checked by httparse), so always ASCII.
    pub(crate) fn str(&self, span: Span) -> &str {
        std::str::from_utf8(self.get(span)).unwrap_or_default()
    }

    /// Every field in order: (name as received, value, OWS trimmed).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.list
            .iter()
            .map(|f| (self.str(f.name), self.get(f.value)))
    }

    /// The values of every field named `name` (case-insensitive), in order.
    pub fn values<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a [u8]> {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The first value of field `name` (any case).
    pub fn first(&self, name: &str) -> Option<&[u8]> {
        self.values(name).next()
    }

    /// How many fields.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The names `Connection` nominates as hop-by-hop.
    pub(crate) fn connection_tokens(&self) -> impl Iterator<Item = &[u8]> {
        self.values("connection").flat_map(list_items)
    }

    /// Does any `Connection` field list `token`?
    pub(crate) fn connection_has(&self, token: &str) -> bool {
        self.values("connection")
            .flat_map(list_items)
            .any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
    }
}

/// The items of a comma-separated field value, OWS trimmed, empty ones
/// skipped (RFC 9110 §5.6.1).
pub(crate) fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|t| !t.is_empty())
}

pub(crate) fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// `host[:port]` (reg-name, IPv4 or `[IP-literal]`): no userinfo, no path,
/// no whitespace (RFC 3986 §3.2.2).
pub(crate) fn is_authority(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%:[]".contains(&b))
}

/// tchar (RFC 9110 §5.6.2).
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Why a head's lines are not well formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineError {
    /// A `\n` without the `\r` before it.
    BareLf,
    /// A `\r` not followed by `\n`.
    LoneCr,
    /// A field line starting with SP or HTAB (RFC 9112 §5.2).
    ObsFold,
    /// Whitespace between a field name and its colon (RFC 9112 §5.1).
    SpaceBeforeColon,
    /// The head is longer than the limit.
    TooLarge,
}

/// Where a head ends: `Ok(None)` while incomplete and under `limit`,
/// `Ok(Some(end))` with `end` the offset just past the empty line. With
/// `skip_empty_lines`, empty lines before the first line are skipped (RFC
/// 9112 §2.2, for requests) and count toward the limit.
pub(crate) fn find_head_end(
    buf: &[u8],
    limit: usize,
    skip_empty_lines: bool,
) -> Result<Option<usize>, LineError> {
    LineScanner::default().scan(buf, limit, skip_empty_lines)
}

/// [`find_head_end`] over a buffer that only grows between calls: lines
/// already judged are not scanned again, so a head arriving in many small
/// reads costs O(n), not O(n²).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LineScanner {
    /// Where the first line not yet judged starts.
    pos: usize,
    first_line: bool,
}

impl Default for LineScanner {
    fn default() -> Self {
        LineScanner {
            pos: 0,
            first_line: true,
        }
    }
}

impl LineScanner {
    pub fn scan(
        &mut self,
        buf: &[u8],
        limit: usize,
        skip_empty_lines: bool,
    ) -> Result<Option<usize>, LineError> {
        // CR and LF are judged in the order they come, so that a prefix of
        // a head is refused for the same reason as the whole head.
        while let Some(at) =
            memchr2(b'\r', b'\n', buf.get(self.pos..).unwrap_or_default()).map(|i| self.pos + i)
        {
            if buf[at] == b'\n' {
                return Err(LineError::BareLf);
            }
            match buf.get(at + 1) {
                None => break,
                Some(b'\n') => {}
                Some(_) => return Err(LineError::LoneCr),
            }
            let line = &buf[self.pos..at];
            let next = at + 2;
            if next > limit {
                return Err(LineError::TooLarge);
            }
            if line.is_empty() {
                if !(self.first_line && skip_empty_lines) {
                    return Ok(Some(next));
                }
            } else if self.first_line {
                self.first_line = false;
            } else {
                check_field_line(line)?;
            }
            self.pos = next;
        }
        if buf.len() > limit {
            return Err(LineError::TooLarge);
        }
        Ok(None)
    }
}

fn check_field_line(line: &[u8]) -> Result<(), LineError> {
    if matches!(line.first(), Some(b' ' | b'\t')) {
        return Err(LineError::ObsFold);
    }
    match memchr(b':', line) {
        Some(colon) if colon > 0 && matches!(line[colon - 1], b' ' | b'\t') => {
            Err(LineError::SpaceBeforeColon)
        }
        _ => Ok(()),
    }
}

/// The framing headers of a head, before the request/response rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct FramingFields {
    pub content_length: Option<u64>,
    /// A Transfer-Encoding field was present.
    pub transfer_encoding: bool,
    /// Transfer-Encoding is exactly one `chunked` coding.
    pub chunked: bool,
}

/// Why the framing headers cannot be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FramingError {
    BothLengthAndEncoding,
    DuplicateContentLength,
    InvalidContentLength,
    /// Transfer-Encoding with a coding other than one final `chunked`.
    UnsupportedEncoding,
    /// Transfer-Encoding empty or naming `chunked` twice.
    InvalidEncoding,
}

/// The largest Content-Length accepted: 2^63 − 1, as Envoy.
const MAX_CONTENT_LENGTH: u64 = i64::MAX as u64;

pub(crate) fn framing_fields(fields: &Fields) -> Result<FramingFields, FramingError> {
    let mut out = FramingFields::default();
    let mut codings = 0usize;
    let mut chunked_last = false;
    let mut chunked_seen = 0usize;
    for (name, value) in fields.iter() {
        if name.eq_ignore_ascii_case("content-length") {
            if out.content_length.is_some() {
                return Err(FramingError::DuplicateContentLength);
            }
            out.content_length = Some(parse_content_length(value)?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            out.transfer_encoding = true;
            for coding in list_items(value) {
                codings += 1;
                chunked_last = coding.eq_ignore_ascii_case(b"chunked");
                chunked_seen += usize::from(chunked_last);
            }
        }
    }
    if out.transfer_encoding {
        if out.content_length.is_some() {
            return Err(FramingError::BothLengthAndEncoding);
        }
        if codings == 0 || chunked_seen > 1 {
            return Err(FramingError::InvalidEncoding);
        }
        if !chunked_last || codings > 1 {
            return Err(FramingError::UnsupportedEncoding);
        }
        out.chunked = true;
    }
    Ok(out)
}

/// `1*DIGIT` up to 2^63 − 1: no sign, no space, no list, no hex.
fn parse_content_length(value: &[u8]) -> Result<u64, FramingError> {
    if value.is_empty() {
        return Err(FramingError::InvalidContentLength);
    }
    value.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return Err(FramingError::InvalidContentLength);
        }
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
            .filter(|&n| n <= MAX_CONTENT_LENGTH)
            .ok_or(FramingError::InvalidContentLength)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_is_digits_only_up_to_two_to_the_63() {
        struct Case {
            value: &'static str,
            want: Result<u64, FramingError>,
        }
        let bad = Err(FramingError::InvalidContentLength);
        let cases = [
            Case {
                value: "0",
                want: Ok(0),
            },
            Case {
                value: "005",
                want: Ok(5),
            },
            Case {
                value: "9223372036854775807",
                want: Ok(i64::MAX as u64),
            },
            Case {
                value: "9223372036854775808",
                want: bad,
            },
            Case {
                value: "99999999999999999999999",
                want: bad,
            },
            Case {
                value: "+5",
                want: bad,
            },
            Case {
                value: "-1",
                want: bad,
            },
            Case {
                value: "5 5",
                want: bad,
            },
            Case {
                value: "5,5",
                want: bad,
            },
            Case {
                value: "0x5",
                want: bad,
            },
            Case {
                value: "",
                want: bad,
            },
        ];
        for case in cases {
            assert_eq!(
                parse_content_length(case.value.as_bytes()),
                case.want,
                "{:?}",
                case.value
            );
        }
    }

    #[test]
    fn head_end_needs_crlf_lines_and_honours_the_limit() {
        struct Case {
            buf: &'static [u8],
            limit: usize,
            want: Result<Option<usize>, LineError>,
        }
        let cases = [
            Case {
                buf: b"GET / HTTP/1.1\r\nA: b\r\n\r\nX",
                limit: 100,
                want: Ok(Some(24)),
            },
            Case {
                buf: b"\r\n\r\nGET / HTTP/1.1\r\n\r\n",
                limit: 100,
                want: Ok(Some(22)),
            },
            Case {
                buf: b"GET / HTTP/1.1\r\nA: b\r\n",
                limit: 100,
                want: Ok(None),
            },
            Case {
                buf: b"GET / HTTP/1.1\r\nA: b\r",
                limit: 100,
                want: Ok(None),
            },
            Case {
                buf: b"GET / HTTP/1.1\nA: b\r\n\r\n",
                limit: 100,
                want: Err(LineError::BareLf),
            },
            Case {
                buf: b"GET / HTTP/1.1\r\nA: b\n",
                limit: 100,
                want: Err(LineError::BareLf),
            },
            Case {
                buf: b"GET / HTTP/1.1\r\nA: \rb",
                limit: 100,
                want: Err(LineError::LoneCr),
            },
            Case {
                buf: b"GET / HTTP/1.1\r\nA: b\r\n c\r\n",
                limit: 100,
                want: Err(LineError::ObsFold),
            },
            Case {
                buf: b"GET / HTTP/1.1\r\nA : b\r\n",
                limit: 100,
                want: Err(LineError::SpaceBeforeColon),
            },
            Case {
                buf: b"GET / HTTP/1.1\r\n\r\n",
                limit: 17,
                want: Err(LineError::TooLarge),
            },
            Case {
                buf: b"GET / HTTP/1.1\r\n\r\n",
                limit: 18,
                want: Ok(Some(18)),
            },
            Case {
                buf: b"GET /aaaaaaaaaaaaaaaaaaaa",
                limit: 10,
                want: Err(LineError::TooLarge),
            },
        ];
        for case in cases {
            let skip = true;
            assert_eq!(
                find_head_end(case.buf, case.limit, skip),
                case.want,
                "{:?}",
                String::from_utf8_lossy(case.buf)
            );
        }
    }
}
