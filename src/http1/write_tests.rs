//! The heads ringway writes, byte for byte, and its local replies.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, UNIX_EPOCH};

use super::head::{RequestHead, ResponseContext, ResponseHead, parse_request, parse_response};
use super::reply::{Reply, local_reply_at};
use super::write::{RequestEdits, ResponseEdits, write_request, write_response};
use super::{BodyFraming, Version};
use crate::routing::http::HeaderOps;

const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7));

fn request(input: &str) -> RequestHead {
    match parse_request(input.as_bytes()) {
        Ok(Some((head, _))) => head,
        other => panic!("{input:?}: {other:?}"),
    }
}

fn response(input: &str, head_request: bool) -> ResponseHead {
    let context = ResponseContext {
        head_request,
        version: Version::Http11,
    };
    match parse_response(input.as_bytes(), context) {
        Ok(Some((head, _))) => head,
        other => panic!("{input:?}: {other:?}"),
    }
}

fn edits<'a>(ops: &'a [&'a HeaderOps]) -> RequestEdits<'a> {
    RequestEdits {
        target: None,
        authority: None,
        peer: PEER,
        request_id: "rid-1",
        ops,
        close: false,
        upgrade: None,
    }
}

fn written_request(head: &RequestHead, edits: &RequestEdits<'_>) -> String {
    let mut out = Vec::new();
    write_request(head, edits, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn a_forwarded_request_is_reserialised_without_hop_by_hop_fields() {
    let head = request(concat!(
        "POST http://api.example/a/./b?q=1 HTTP/1.1\r\n",
        "Host: ignored.example\r\n",
        "Connection: keep-alive, X-Secret\r\n",
        "Keep-Alive: timeout=5\r\n",
        "Proxy-Connection: keep-alive\r\n",
        "TE: trailers\r\n",
        "X-Secret: s\r\n",
        "Transfer-Encoding: chunked\r\n",
        "X-Forwarded-For: 192.0.2.1\r\n",
        "x-forwarded-for: 192.0.2.2\r\n",
        "X-Forwarded-Proto: https\r\n",
        "X-Request-Id: client-chosen\r\n",
        "User-Agent: curl/8\r\n",
        "\r\n",
    ));
    let want = concat!(
        "POST /a/b?q=1 HTTP/1.1\r\n",
        "host: api.example\r\n",
        "User-Agent: curl/8\r\n",
        "transfer-encoding: chunked\r\n",
        "x-forwarded-for: 192.0.2.1, 192.0.2.2, 10.0.0.7\r\n",
        "x-forwarded-proto: http\r\n",
        "x-request-id: rid-1\r\n",
        "\r\n",
    );
    assert_eq!(written_request(&head, &edits(&[])), want);
}

#[test]
fn rewrites_header_ops_and_close_apply_in_order() {
    let head = request(concat!(
        "GET /old?x HTTP/1.0\r\n",
        "Host: a.example\r\n",
        "Content-Length: 3\r\n",
        "X-Drop: 1\r\n",
        "X-Keep: 1\r\n",
        "X-Set: old\r\n",
        "\r\n",
    ));
    let route = HeaderOps {
        set: vec![
            ("x-set".into(), "new".into()),
            ("content-length".into(), "999".into()),
        ],
        add: vec![
            ("x-add".into(), "a1".into()),
            ("x-bad".into(), "a\r\nb".into()),
        ],
        remove: vec!["x-drop".into(), "connection".into(), "host".into()],
    };
    let destination = HeaderOps {
        set: vec![],
        add: vec![("x-add".into(), "a2".into())],
        remove: vec!["x-keep".into()],
    };
    let ops = [&route, &destination];
    let edits = RequestEdits {
        target: Some("/new/x?y"),
        authority: Some("b.example:8080"),
        peer: IpAddr::V6(Ipv6Addr::LOCALHOST),
        close: true,
        ..edits(&ops)
    };
    let want = concat!(
        "GET /new/x?y HTTP/1.1\r\n",
        "host: b.example:8080\r\n",
        "content-length: 3\r\n",
        "x-forwarded-for: ::1\r\n",
        "x-forwarded-proto: http\r\n",
        "x-request-id: rid-1\r\n",
        "x-set: new\r\n",
        "x-add: a1\r\n",
        "x-add: a2\r\n",
        "connection: close\r\n",
        "\r\n",
    );
    assert_eq!(written_request(&head, &edits), want);
}

#[test]
fn an_http10_request_without_host_gets_an_empty_host() {
    let head = request("GET / HTTP/1.0\r\n\r\n");
    let want = "GET / HTTP/1.1\r\nhost: \r\nx-forwarded-for: 10.0.0.7\r\nx-forwarded-proto: http\r\nx-request-id: rid-1\r\n\r\n";
    assert_eq!(written_request(&head, &edits(&[])), want);
}

fn written_response(head: &ResponseHead, edits: &ResponseEdits<'_>) -> String {
    let mut out = Vec::new();
    write_response(head, edits, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn response_heads_follow_the_client_version_and_keep_alive() {
    struct Case {
        upstream: &'static str,
        head_request: bool,
        version: Version,
        keep_alive: bool,
        dechunk: bool,
        want: &'static str,
    }
    let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nServer: app\r\n\r\n";
    let cases = [
        Case {
            upstream: chunked,
            head_request: false,
            version: Version::Http11,
            keep_alive: true,
            dechunk: false,
            want: "HTTP/1.1 200 OK\r\nServer: app\r\ntransfer-encoding: chunked\r\n\r\n",
        },
        Case {
            upstream: chunked,
            head_request: false,
            version: Version::Http10,
            keep_alive: true,
            dechunk: true,
            want: "HTTP/1.0 200 OK\r\nServer: app\r\nconnection: close\r\n\r\n",
        },
        Case {
            upstream: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
            head_request: false,
            version: Version::Http10,
            keep_alive: true,
            dechunk: false,
            want: "HTTP/1.0 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\n",
        },
        Case {
            upstream: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
            head_request: false,
            version: Version::Http11,
            keep_alive: false,
            dechunk: false,
            want: "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n",
        },
        Case {
            upstream: "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n",
            head_request: true,
            version: Version::Http11,
            keep_alive: true,
            dechunk: false,
            want: "HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n",
        },
        Case {
            upstream: "HTTP/1.0 200 OK\r\n\r\n",
            head_request: false,
            version: Version::Http11,
            keep_alive: true,
            dechunk: false,
            want: "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n",
        },
        Case {
            upstream: "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
            head_request: false,
            version: Version::Http11,
            keep_alive: true,
            dechunk: false,
            want: "HTTP/1.1 204 No Content\r\n\r\n",
        },
        Case {
            upstream: "HTTP/1.1 100\r\n\r\n",
            head_request: false,
            version: Version::Http11,
            keep_alive: false,
            dechunk: false,
            want: "HTTP/1.1 100 Continue\r\n\r\n",
        },
    ];
    for case in cases {
        let head = response(case.upstream, case.head_request);
        let edits = ResponseEdits {
            version: case.version,
            keep_alive: case.keep_alive,
            dechunk: case.dechunk,
            ops: &[],
        };
        assert_eq!(
            written_response(&head, &edits),
            case.want,
            "{:?}",
            case.upstream
        );
    }
}

#[test]
fn response_header_ops_apply() {
    let head = response(
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nServer: app\r\nX-Internal: 1\r\n\r\n",
        false,
    );
    let ops = HeaderOps {
        set: vec![("server".into(), "edge".into())],
        add: vec![("x-served-by".into(), "ringway".into())],
        remove: vec!["x-internal".into()],
    };
    let edits = ResponseEdits {
        version: Version::Http11,
        keep_alive: true,
        dechunk: false,
        ops: &[&ops],
    };
    let want =
        "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nserver: edge\r\nx-served-by: ringway\r\n\r\n";
    assert_eq!(written_response(&head, &edits), want);
}

fn reply(status: u16, reply: &Reply<'_>) -> String {
    let mut out = Vec::new();
    let now = UNIX_EPOCH + Duration::from_secs(784_111_777);
    local_reply_at(status, reply, now, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

const DEFAULT: Reply<'static> = Reply {
    version: Version::Http11,
    keep_alive: true,
    body: None,
    content_type: None,
    location: None,
    extra: &[],
    head_request: false,
};

#[test]
fn local_replies_carry_server_date_length_and_a_short_body() {
    let date = "date: Sun, 06 Nov 1994 08:49:37 GMT\r\n";
    let cases: [(u16, Reply<'static>, String); 6] = [
        (
            404,
            DEFAULT,
            format!(
                "HTTP/1.1 404 Not Found\r\nserver: ringway\r\n{date}content-type: text/plain\r\ncontent-length: 9\r\nconnection: keep-alive\r\n\r\nno route\n"
            ),
        ),
        (
            431,
            Reply {
                keep_alive: false,
                version: Version::Http10,
                ..DEFAULT
            },
            format!(
                "HTTP/1.0 431 Request Header Fields Too Large\r\nserver: ringway\r\n{date}content-type: text/plain\r\ncontent-length: 32\r\nconnection: close\r\n\r\nrequest header fields too large\n"
            ),
        ),
        (
            301,
            Reply {
                body: Some(b""),
                location: Some("https://a.example/x"),
                ..DEFAULT
            },
            format!(
                "HTTP/1.1 301 Moved Permanently\r\nserver: ringway\r\n{date}content-length: 0\r\nlocation: https://a.example/x\r\nconnection: keep-alive\r\n\r\n"
            ),
        ),
        (
            200,
            Reply {
                body: Some(b"{}"),
                content_type: Some("application/json"),
                extra: &[("x-a", "1"), ("bad name", "2"), ("x-b", "a\nb")],
                ..DEFAULT
            },
            format!(
                "HTTP/1.1 200 OK\r\nserver: ringway\r\n{date}content-type: application/json\r\ncontent-length: 2\r\nx-a: 1\r\nconnection: keep-alive\r\n\r\n{{}}"
            ),
        ),
        (
            503,
            Reply {
                head_request: true,
                ..DEFAULT
            },
            format!(
                "HTTP/1.1 503 Service Unavailable\r\nserver: ringway\r\n{date}content-type: text/plain\r\ncontent-length: 20\r\nconnection: keep-alive\r\n\r\n"
            ),
        ),
        (
            204,
            Reply {
                body: Some(b"ignored"),
                ..DEFAULT
            },
            format!(
                "HTTP/1.1 204 No Content\r\nserver: ringway\r\n{date}connection: keep-alive\r\n\r\n"
            ),
        ),
    ];
    for (status, r, want) in cases {
        assert_eq!(reply(status, &r), want, "{status}");
    }
}

#[test]
fn every_local_reply_parses_back_with_its_status_and_length() {
    for status in [
        400, 403, 404, 405, 408, 413, 426, 431, 500, 501, 502, 503, 504, 505, 418, 599,
    ] {
        let text = reply(status, &DEFAULT);
        let parsed = response(&text, false);
        assert_eq!(parsed.status(), status);
        let body = super::reply::default_body(status);
        assert!(!body.is_empty(), "{status}");
        assert_eq!(parsed.framing(), BodyFraming::Length(body.len() as u64));
        assert_eq!(&text.as_bytes()[parsed.len()..], body);
    }
}

#[test]
fn a_rewrite_cannot_split_the_request_line_or_inject_a_field() {
    let head = request("GET /a HTTP/1.1\r\nHost: a.example\r\n\r\n");
    let cases = [
        (
            Some("/x y\r\nX-Evil: 1"),
            Some("b.example\r\nX-Evil: 1"),
            "GET /x%20y%0D%0AX-Evil:%201 HTTP/1.1\r\nhost: a.example\r\n",
        ),
        (
            Some("/caf\u{e9}#top"),
            None,
            "GET /caf%C3%A9%23top HTTP/1.1\r\nhost: a.example\r\n",
        ),
        (
            Some(""),
            Some("[::1]:8080"),
            "GET / HTTP/1.1\r\nhost: [::1]:8080\r\n",
        ),
    ];
    for (target, authority, want) in cases {
        let edits = RequestEdits {
            target,
            authority,
            ..edits(&[])
        };
        let written = written_request(&head, &edits);
        assert!(written.starts_with(want), "{written:?}");
        assert!(
            matches!(parse_request(written.as_bytes()), Ok(Some(_))),
            "{written:?}"
        );
    }
}
