//! The malformed-message corpus of the design note (§6.3): every request
//! and response case with its exact status, detail and consumed bytes.

use super::BodyFraming;
use super::head::{ResponseContext, detail, parse_request, parse_response};
use super::{Version, head::RequestError};

#[derive(Debug, PartialEq, Eq)]
enum Want {
    /// A head of `consumed` bytes with this framing.
    Accept {
        consumed: usize,
        framing: BodyFraming,
    },
    Reject(u16, &'static str),
    Incomplete,
}

use Want::{Accept, Incomplete, Reject};

struct Case {
    name: &'static str,
    input: Vec<u8>,
    want: Want,
}

fn case(name: &'static str, input: impl AsRef<[u8]>, want: Want) -> Case {
    Case {
        name,
        input: input.as_ref().to_vec(),
        want,
    }
}

/// `GET / HTTP/1.1`, Host and the given field lines.
fn get(fields: &str) -> String {
    format!("GET / HTTP/1.1\r\nHost: a\r\n{fields}\r\n")
}

fn post(fields: &str) -> String {
    format!("POST /u HTTP/1.1\r\nHost: a\r\n{fields}\r\n")
}

fn accept(input: &str, framing: BodyFraming) -> Want {
    Accept {
        consumed: input.len(),
        framing,
    }
}

/// Field defects refused alike in a request (400) and a response (502).
const FIELD_DEFECTS: [(&str, &str, &str); 7] = [
    (
        "CL then TE",
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        detail::CONTENT_LENGTH_AND_CHUNKED,
    ),
    (
        "CL twice, equal",
        "Content-Length: 5\r\nContent-Length: 5\r\n",
        detail::MULTIPLE_CONTENT_LENGTH,
    ),
    (
        "CL -1",
        "Content-Length: -1\r\n",
        detail::INVALID_CONTENT_LENGTH,
    ),
    (
        "TE chunked twice",
        "Transfer-Encoding: chunked, chunked\r\n",
        detail::MALFORMED_TRANSFER_ENCODING,
    ),
    ("obs-fold", "X-A: b\r\n c\r\n", detail::OBS_FOLD),
    (
        "space before colon",
        "X-A : b\r\n",
        detail::SPACE_BEFORE_COLON,
    ),
    ("NUL in value", "X-A: b\0c\r\n", detail::INVALID_CHARACTERS),
];

#[rustfmt::skip]
fn request_cases() -> Vec<Case> {
    let bad = |d| Reject(400, d);
    let huge_field = get(&format!("X-Big: {}\r\n", "a".repeat(60 * 1024)));
    let fields = |n: usize| (0..n).map(|i| format!("X-{i}: v\r\n")).collect::<String>();
    let ok_pipelined = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n";
    let absolute = "GET http://b.example:8080/p?q HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut cases = vec![
        // Content-Length with Transfer-Encoding, in every disguise.
        case("TE then CL", post("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n"), bad(detail::CONTENT_LENGTH_AND_CHUNKED)),
        case("TE with space before colon", post("Transfer-Encoding : chunked\r\nContent-Length: 5\r\n"), bad(detail::SPACE_BEFORE_COLON)),
        case("TE value after a tab, with CL", post("Transfer-Encoding:\tchunked\r\nContent-Length: 5\r\n"), bad(detail::CONTENT_LENGTH_AND_CHUNKED)),
        case("TE chunked, identity with CL", post("Transfer-Encoding: chunked, identity\r\nContent-Length: 5\r\n"), bad(detail::CONTENT_LENGTH_AND_CHUNKED)),
        case("TE xchunked with CL", post("Transfer-Encoding: xchunked\r\nContent-Length: 5\r\n"), bad(detail::CONTENT_LENGTH_AND_CHUNKED)),
        // Transfer-Encoding alone.
        case("TE chunked, identity", post("Transfer-Encoding: chunked, identity\r\n"), Reject(501, detail::INVALID_TRANSFER_ENCODING)),
        case("TE xchunked", post("Transfer-Encoding: xchunked\r\n"), Reject(501, detail::INVALID_TRANSFER_ENCODING)),
        case("TE identity", post("Transfer-Encoding: identity\r\n"), Reject(501, detail::INVALID_TRANSFER_ENCODING)),
        case("TE gzip, chunked", post("Transfer-Encoding: gzip, chunked\r\n"), Reject(501, detail::INVALID_TRANSFER_ENCODING)),
        case("TE gzip then TE chunked", post("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"), Reject(501, detail::INVALID_TRANSFER_ENCODING)),
        case("TE empty", post("Transfer-Encoding: \r\n"), bad(detail::MALFORMED_TRANSFER_ENCODING)),
        case("TE on HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", bad(detail::TRANSFER_ENCODING_ON_HTTP10)),
        case("TE CHUNKED, any case", post("Transfer-Encoding: CHUNKED\r\n"), accept(&post("Transfer-Encoding: CHUNKED\r\n"), BodyFraming::Chunked)),
        // Content-Length.
        case("CL twice, different", post("Content-Length: 5\r\nContent-Length: 6\r\n"), bad(detail::MULTIPLE_CONTENT_LENGTH)),
        case("CL list 5, 5", post("Content-Length: 5, 5\r\n"), bad(detail::INVALID_CONTENT_LENGTH)),
        case("CL +5", post("Content-Length: +5\r\n"), bad(detail::INVALID_CONTENT_LENGTH)),
        case("CL 5 5", post("Content-Length: 5 5\r\n"), bad(detail::INVALID_CONTENT_LENGTH)),
        case("CL 0x5", post("Content-Length: 0x5\r\n"), bad(detail::INVALID_CONTENT_LENGTH)),
        case("CL 2^63", post("Content-Length: 9223372036854775808\r\n"), bad(detail::INVALID_CONTENT_LENGTH)),
        case("CL 2^64", post("Content-Length: 18446744073709551616\r\n"), bad(detail::INVALID_CONTENT_LENGTH)),
        case("CL empty", post("Content-Length: \r\n"), bad(detail::INVALID_CONTENT_LENGTH)),
        case("GET with a body by CL", get("Content-Length: 5\r\n") + "hello", Accept { consumed: get("Content-Length: 5\r\n").len(), framing: BodyFraming::Length(5) }),
        // Lines and characters.
        case("obs-fold by tab", get("X-A: b\r\n\tc\r\n"), bad(detail::OBS_FOLD)),
        case("space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", bad(detail::SPACE_BEFORE_COLON)),
        case("CR in value", get("X-A: b\rc\r\n"), bad(detail::INVALID_CHARACTERS)),
        case("LF in value", get("X-A: b\nc\r\n"), bad(detail::BARE_LF)),
        case("DEL in value", get("X-A: b\x7fc\r\n"), bad(detail::INVALID_CHARACTERS)),
        case("control byte in value", get("X-A: b\x01c\r\n"), bad(detail::INVALID_CHARACTERS)),
        case("NUL in name", get("X\0A: b\r\n"), bad(detail::INVALID_CHARACTERS)),
        case("DEL in name", get("X\x7fA: b\r\n"), bad(detail::INVALID_CHARACTERS)),
        case("separator in name", get("X(A): b\r\n"), bad(detail::INVALID_CHARACTERS)),
        case("empty name", get(": b\r\n"), bad(detail::INVALID_CHARACTERS)),
        case("field without colon", get("X-A\r\n"), bad(detail::INVALID_CHARACTERS)),
        case("bare LF line ends", "GET / HTTP/1.1\nHost: a\n\n", bad(detail::BARE_LF)),
        case("bare LF ending the head", "GET / HTTP/1.1\r\nHost: a\r\n\n", bad(detail::BARE_LF)),
        case("bare LF seen before the head ends", "GET / HTTP/1.1\nHo", bad(detail::BARE_LF)),
        case("CR inside the request line", "GET /\r HTTP/1.1\r\nHost: a\r\n\r\n", bad(detail::INVALID_CHARACTERS)),
        // Limits.
        case("head over 60 KiB", huge_field, Reject(431, detail::HEADERS_TOO_LARGE)),
        case("incomplete head over 60 KiB", format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(61 * 1024)), Reject(431, detail::HEADERS_TOO_LARGE)),
        case("1 MiB request line", format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(1024 * 1024)), Reject(431, detail::HEADERS_TOO_LARGE)),
        case("101 fields", get(&fields(100)), Reject(431, detail::TOO_MANY_HEADERS)),
        case("100 fields", get(&fields(99)), accept(&get(&fields(99)), BodyFraming::None)),
        // Host and target.
        case("two Host fields", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", bad(detail::MULTIPLE_HOST)),
        case("missing Host on 1.1", "GET / HTTP/1.1\r\n\r\n", bad(detail::MISSING_HOST)),
        case("missing Host on 1.0", "GET / HTTP/1.0\r\n\r\n", accept("GET / HTTP/1.0\r\n\r\n", BodyFraming::None)),
        case("Host with userinfo", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", bad(detail::INVALID_HOST)),
        case("Host with a path", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", bad(detail::INVALID_HOST)),
        case("absolute-form, other Host", absolute, accept(absolute, BodyFraming::None)),
        case("https:// target", "GET https://a/ HTTP/1.1\r\nHost: a\r\n\r\n", bad(detail::INVALID_SCHEME)),
        case("ftp:// target", "GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n", bad(detail::INVALID_URL)),
        case("absolute-form with userinfo", "GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n", bad(detail::INVALID_URL)),
        case("absolute-form without authority", "GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", bad(detail::INVALID_URL)),
        case("relative target", "GET a/b HTTP/1.1\r\nHost: a\r\n\r\n", bad(detail::INVALID_URL)),
        case("* for GET", "GET * HTTP/1.1\r\nHost: a\r\n\r\n", bad(detail::INVALID_URL)),
        case("* for OPTIONS", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", accept("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", BodyFraming::None)),
        case("CONNECT authority-form", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", accept("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", BodyFraming::None)),
        case("non-ASCII target", "GET /\u{e9} HTTP/1.1\r\nHost: a\r\n\r\n", bad(detail::INVALID_URL)),
        case("fragment in target", "GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", bad(detail::INVALID_URL)),
        case("bad percent-escape", "GET /a%zz HTTP/1.1\r\nHost: a\r\n\r\n", bad(detail::INVALID_URL)),
        case("two spaces in the request line", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", bad(detail::INVALID_URL)),
        case("space after the version", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", bad(detail::CODEC_ERROR)),
        // Methods and versions.
        case("method with (", "G(T / HTTP/1.1\r\nHost: a\r\n\r\n", bad(detail::INVALID_METHOD)),
        case("method with a quote", "G\"T / HTTP/1.1\r\nHost: a\r\n\r\n", bad(detail::INVALID_METHOD)),
        case("method with NUL", "G\0T / HTTP/1.1\r\nHost: a\r\n\r\n", bad(detail::INVALID_METHOD)),
        case("HTTP/1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", Reject(505, detail::UNSUPPORTED_VERSION)),
        case("HTTP/2.0 request line", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", Reject(505, detail::UNSUPPORTED_VERSION)),
        case("HTTP/1.2 after an empty line", "\r\nGET / HTTP/1.2\r\nHost: a\r\n\r\n", Reject(505, detail::UNSUPPORTED_VERSION)),
        case("HTTP/0.9", "GET / HTTP/0.9\r\n\r\n", Reject(505, detail::UNSUPPORTED_VERSION)),
        case("h2c prior-knowledge preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Reject(505, detail::H2_PREFACE)),
        case("lower-case version", "GET / http/1.1\r\nHost: a\r\n\r\n", bad(detail::CODEC_ERROR)),
        // Pipelining and partial heads.
        case("two pipelined requests", format!("{ok_pipelined}GET /2 HTTP/1.1\r\nHost: a\r\n\r\n"), accept(ok_pipelined, BodyFraming::None)),
        case("request pipelined behind a bad one", post("Content-Length: +5\r\n") + ok_pipelined, bad(detail::INVALID_CONTENT_LENGTH)),
        case("empty lines before the request line", "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", accept("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", BodyFraming::None)),
        case("head without its empty line", "GET / HTTP/1.1\r\nHost: a\r\n", Incomplete),
        case("head ending in CR", "GET / HTTP/1.1\r\nHost: a\r\n\r", Incomplete),
        case("start of the h2 preface", "PRI * HTTP/2", Incomplete),
    ];
    let shared = FIELD_DEFECTS.iter().map(|&(name, fields, d)| case(name, post(fields), bad(d)));
    cases.extend(shared);
    cases
}

/// A parse result as a [`Want`], checking that `len()` is what was consumed.
fn outcome<H, E>(
    parsed: Result<Option<(H, usize)>, E>,
    head: impl Fn(&H) -> (usize, BodyFraming),
    reject: impl Fn(E) -> Want,
) -> Want {
    match parsed {
        Ok(Some((parsed, consumed))) => {
            let (len, framing) = head(&parsed);
            assert_eq!(len, consumed);
            Accept { consumed, framing }
        }
        Ok(None) => Incomplete,
        Err(e) => reject(e),
    }
}

fn outcome_of_request(input: &[u8]) -> Want {
    outcome(
        parse_request(input),
        |h| (h.len(), h.framing()),
        |RequestError { status, detail }| Reject(status, detail),
    )
}

#[test]
fn the_request_corpus_gets_exact_statuses_and_details() {
    let cases = request_cases();
    assert_eq!(cases.len(), 83);
    for case in cases {
        assert_eq!(outcome_of_request(&case.input), case.want, "{}", case.name);
    }
}

#[rustfmt::skip]
fn response_cases() -> Vec<Case> {
    let bad = |d| Reject(502, d);
    let resp = |fields: &str| format!("HTTP/1.1 200 OK\r\n{fields}\r\n");
    let fields = |n: usize| (0..n).map(|i| format!("X-{i}: v\r\n")).collect::<String>();
    let mut cases = vec![
        case("bare LF", "HTTP/1.1 200 OK\nContent-Length: 0\n\n", bad(detail::BARE_LF)),
        case("head over 80 KiB", resp(&format!("X-Big: {}\r\n", "a".repeat(80 * 1024))), bad(detail::HEADERS_TOO_LARGE)),
        case("101 fields", resp(&fields(101)), bad(detail::TOO_MANY_HEADERS)),
        case("status 99", "HTTP/1.1 99 X\r\n\r\n", bad(detail::INVALID_STATUS)),
        case("status 600", "HTTP/1.1 600 X\r\n\r\n", bad(detail::INVALID_STATUS)),
        case("status 2000", "HTTP/1.1 2000 OK\r\n\r\n", bad(detail::INVALID_STATUS)),
        case("status abc", "HTTP/1.1 abc OK\r\n\r\n", bad(detail::INVALID_STATUS)),
        case("HTTP/2.0 status line", "HTTP/2.0 200 OK\r\n\r\n", bad(detail::UNSUPPORTED_VERSION)),
        case("bytes after a body (empty line first)", "\r\nHTTP/1.1 200 OK\r\n\r\n", bad(detail::CODEC_ERROR)),
        case("CL body", resp("Content-Length: 5\r\n") + "hello", Accept { consumed: resp("Content-Length: 5\r\n").len(), framing: BodyFraming::Length(5) }),
        case("chunked body", resp("Transfer-Encoding: chunked\r\n"), accept(&resp("Transfer-Encoding: chunked\r\n"), BodyFraming::Chunked)),
        case("no framing: until close", resp(""), accept(&resp(""), BodyFraming::CloseDelimited)),
        case("final coding gzip: until close", resp("Transfer-Encoding: chunked, gzip\r\n"), accept(&resp("Transfer-Encoding: chunked, gzip\r\n"), BodyFraming::CloseDelimited)),
        case("204 with CL", "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", accept("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", BodyFraming::None)),
        case("304", "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", accept("HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", BodyFraming::None)),
        case("100 Continue", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n", accept("HTTP/1.1 100 Continue\r\n\r\n", BodyFraming::None)),
        case("incomplete", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n", Incomplete),
    ];
    let shared = FIELD_DEFECTS.iter().map(|&(name, fields, d)| case(name, resp(fields), bad(d)));
    cases.extend(shared);
    cases
}

fn outcome_of_response(input: &[u8], head_request: bool) -> Want {
    let context = ResponseContext {
        head_request,
        version: Version::Http11,
    };
    outcome(
        parse_response(input, context),
        |h| (h.len(), h.framing()),
        |e| Reject(502, e.detail),
    )
}

#[test]
fn the_response_corpus_gets_exact_details() {
    let cases = response_cases();
    assert_eq!(cases.len(), 24);
    for case in cases {
        assert_eq!(
            outcome_of_response(&case.input, false),
            case.want,
            "{}",
            case.name
        );
    }
}

#[test]
fn a_response_to_head_has_no_body_whatever_it_says() {
    let input = b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n";
    let want = Accept {
        consumed: input.len(),
        framing: BodyFraming::None,
    };
    assert_eq!(outcome_of_response(input, true), want);
}
