//! Issue 13, malformed and smuggling requests at socket level (design note
//! §6.3): each case writes raw bytes on a new connection to ringway and
//! checks the statuses that come back, whether ringway closed the
//! connection, and how many requests reached the origin (exactly those a
//! strict parser sees).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use common::http_gw::{Site, exchange, virtual_service};
use common::origin::{Origin, Response};

struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    /// Statuses of the responses, in order (empty: none).
    statuses: Vec<u16>,
    closed: bool,
    /// Requests the origin reads.
    forwarded: usize,
    /// The defect may be found only after the head went upstream (the
    /// request arrives in several reads): then the upstream is reset and
    /// the client's connection closed without a response, which is
    /// accepted as well (still nothing forwarded).
    late: bool,
}

fn case(
    name: &'static str,
    bytes: impl Into<Vec<u8>>,
    statuses: &[u16],
    closed: bool,
    forwarded: usize,
) -> Case {
    Case {
        name,
        bytes: bytes.into(),
        statuses: statuses.to_vec(),
        closed,
        forwarded,
        late: false,
    }
}

/// Rejected with `status`, closed, nothing forwarded.
fn rejected(name: &'static str, bytes: impl Into<Vec<u8>>, status: u16) -> Case {
    case(name, bytes, &[status], true, 0)
}

fn get(fields: &str) -> String {
    format!("GET / HTTP/1.1\r\nHost: a\r\n{fields}\r\n")
}

fn post(fields: &str) -> String {
    format!("POST /u HTTP/1.1\r\nHost: a\r\n{fields}\r\n")
}

/// A chunked POST with `body` as its (raw) chunked body.
fn chunked(body: &str) -> String {
    post("Transfer-Encoding: chunked\r\n") + body
}

fn framing_cases() -> Vec<Case> {
    vec![
        rejected(
            "CL then TE",
            post("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n") + "0\r\n\r\n",
            400,
        ),
        rejected(
            "TE then CL",
            post("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n") + "0\r\n\r\n",
            400,
        ),
        rejected(
            "TE with space before colon",
            post("Transfer-Encoding : chunked\r\nContent-Length: 5\r\n"),
            400,
        ),
        rejected(
            "TE after a tab, with CL",
            post("Transfer-Encoding:\tchunked\r\nContent-Length: 5\r\n"),
            400,
        ),
        rejected(
            "TE chunked, identity with CL",
            post("Transfer-Encoding: chunked, identity\r\nContent-Length: 5\r\n"),
            400,
        ),
        rejected(
            "TE xchunked with CL",
            post("Transfer-Encoding: xchunked\r\nContent-Length: 5\r\n"),
            400,
        ),
        rejected("TE xchunked", post("Transfer-Encoding: xchunked\r\n"), 501),
        rejected(
            "TE gzip, chunked",
            post("Transfer-Encoding: gzip, chunked\r\n"),
            501,
        ),
        rejected(
            "TE on HTTP/1.0",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        rejected(
            "CL twice, equal",
            post("Content-Length: 5\r\nContent-Length: 5\r\n") + "hello",
            400,
        ),
        rejected(
            "CL twice, different",
            post("Content-Length: 5\r\nContent-Length: 6\r\n") + "hello!",
            400,
        ),
        rejected("CL +5", post("Content-Length: +5\r\n") + "hello", 400),
        rejected("CL -1", post("Content-Length: -1\r\n"), 400),
        rejected("CL 5 5", post("Content-Length: 5 5\r\n") + "hello", 400),
        rejected("CL 0x5", post("Content-Length: 0x5\r\n") + "hello", 400),
        rejected(
            "CL over 2^63",
            post("Content-Length: 9223372036854775808\r\n"),
            400,
        ),
    ]
}

fn character_cases() -> Vec<Case> {
    vec![
        rejected("obs-fold", get("X-A: b\r\n c\r\n"), 400),
        rejected(
            "space before colon",
            "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            400,
        ),
        rejected("NUL in value", get("X-A: b\0c\r\n"), 400),
        rejected("CR in value", get("X-A: b\rc\r\n"), 400),
        rejected("DEL in value", get("X-A: b\x7fc\r\n"), 400),
        rejected("NUL in name", get("X\0A: b\r\n"), 400),
        rejected("LF in name", get("X\nA: b\r\n"), 400),
        rejected("bare LF line ends", "GET / HTTP/1.1\nHost: a\n\n", 400),
        rejected(
            "bare LF ending the head",
            "GET / HTTP/1.1\r\nHost: a\r\n\n",
            400,
        ),
        rejected(
            "method outside token characters",
            "G(T / HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        rejected("HTTP/1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505),
        rejected(
            "HTTP/2.0 request line",
            "GET / HTTP/2.0\r\nHost: a\r\n\r\n",
            505,
        ),
    ]
}

fn chunk_cases() -> Vec<Case> {
    let big_trailer = format!("0\r\nX-T: {}\r\n\r\n", "t".repeat(61 * 1024));
    vec![
        rejected("empty chunk size", chunked("\r\nhello\r\n0\r\n\r\n"), 400),
        rejected("chunk size 0x5", chunked("0x5\r\nhello\r\n0\r\n\r\n"), 400),
        rejected(
            "17 hex digits",
            chunked("10000000000000005\r\nhello\r\n0\r\n\r\n"),
            400,
        ),
        rejected(
            "chunk line ending in bare LF",
            chunked("5;ext\nhello\r\n0\r\n\r\n"),
            400,
        ),
        rejected(
            "no CRLF after chunk data",
            chunked("5\r\nhelloXX0\r\n\r\n"),
            400,
        ),
        rejected(
            "chunk data longer than announced",
            chunked("3\r\nhello\r\n0\r\n\r\n"),
            400,
        ),
        Case {
            late: true,
            ..rejected("trailers over 60 KiB", chunked(&big_trailer), 400)
        },
        case(
            "chunk extension, well formed",
            chunked("5;ext=1\r\nhello\r\n0\r\n\r\n"),
            &[200],
            false,
            1,
        ),
    ]
}

fn limit_and_host_cases() -> Vec<Case> {
    let fields = |n: usize| (0..n).map(|i| format!("X-{i}: v\r\n")).collect::<String>();
    vec![
        rejected(
            "head over 60 KiB",
            get(&format!("X-Big: {}\r\n", "a".repeat(61 * 1024))),
            431,
        ),
        rejected("101 fields", get(&fields(100)), 431),
        case("100 fields", get(&fields(99)), &[200], false, 1),
        rejected(
            "1 MiB request line",
            format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(1 << 20)),
            431,
        ),
        rejected(
            "two Host fields",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            400,
        ),
        rejected("missing Host on 1.1", "GET / HTTP/1.1\r\n\r\n", 400),
        case(
            "missing Host on 1.0",
            "GET / HTTP/1.0\r\n\r\n",
            &[200],
            true,
            1,
        ),
        rejected(
            "https:// target",
            "GET https://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        case(
            "absolute-form with another Host",
            "GET http://b.example/p HTTP/1.1\r\nHost: a\r\n\r\n",
            &[200],
            false,
            1,
        ),
        case(
            "GET with a body by CL",
            get("Content-Length: 5\r\n") + "hello",
            &[200],
            false,
            1,
        ),
    ]
}

fn pipelining_cases() -> Vec<Case> {
    let next = "GET /next HTTP/1.1\r\nHost: a\r\n\r\n";
    vec![
        case(
            "request behind a 400",
            format!("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n{next}"),
            &[400],
            true,
            0,
        ),
        case(
            "request behind a CL.TE smuggling attempt",
            post("Content-Length: 4\r\nTransfer-Encoding: chunked\r\n") + "0\r\n\r\n" + next,
            &[400],
            true,
            0,
        ),
        case(
            "request behind Connection: close",
            format!("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n{next}"),
            &[200],
            true,
            1,
        ),
        case(
            "a body that looks like a request",
            post("Content-Length: 0\r\n") + next,
            &[200, 200],
            false,
            2,
        ),
        case(
            "a CL body holding a request",
            post(&format!("Content-Length: {}\r\n", next.len())) + next,
            &[200],
            false,
            1,
        ),
        case(
            "a chunked body holding a request",
            chunked(&format!("{:x}\r\n{next}\r\n0\r\n\r\n", next.len())),
            &[200],
            false,
            1,
        ),
    ]
}

#[test]
fn the_malformed_request_corpus_gets_exact_answers_and_forwards_only_what_a_strict_parser_sees() {
    let origin = Origin::start(|_| Response::ok("a"));
    let vs = virtual_service(
        "svc",
        &["*"],
        "[{route: [{destination: {host: svc, subset: a}}]}]",
    );
    let Some(site) = Site::with_origins(vec![("a", origin)], "", &[vs], &[]) else {
        return;
    };
    let cases: Vec<Case> = [
        framing_cases(),
        character_cases(),
        chunk_cases(),
        limit_and_host_cases(),
        pipelining_cases(),
    ]
    .into_iter()
    .flatten()
    .collect();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        let before = site.origin("a").requests().len();
        let seen = exchange(site.port, &c.bytes);
        let forwarded = site.origin("a").requests().len() - before;
        let got = (seen.statuses(), seen.closed, forwarded);
        let want = (c.statuses.clone(), c.closed, c.forwarded);
        let late = (Vec::new(), true, 0);
        if got != want && !(c.late && got == late) {
            failures.push(format!(
                "{}: want (statuses, closed, forwarded) {want:?}, got {got:?}",
                c.name
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
