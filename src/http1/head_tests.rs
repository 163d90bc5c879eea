//! What a parsed head tells: target parts, authority, keep-alive, Expect,
//! Upgrade, fields; the response's framing decisions and keep-alive hints.

use std::borrow::Cow;
use std::time::Duration;

use super::head::{RequestHead, ResponseContext, ResponseHead, parse_request, parse_response};
use super::{BodyFraming, Version};
use crate::routing::http::RequestView;

fn request(input: &str) -> RequestHead {
    match parse_request(input.as_bytes()) {
        Ok(Some((head, _))) => head,
        other => panic!("{input:?}: {other:?}"),
    }
}

fn response(input: &str, head_request: bool, version: Version) -> ResponseHead {
    let context = ResponseContext {
        head_request,
        version,
    };
    match parse_response(input.as_bytes(), context) {
        Ok(Some((head, _))) => head,
        other => panic!("{input:?}: {other:?}"),
    }
}

#[test]
fn targets_split_into_normalised_path_query_and_authority() {
    struct Case {
        line: &'static str,
        path: &'static str,
        query: Option<&'static str>,
        authority: Option<&'static str>,
    }
    let cases = [
        Case {
            line: "GET /a/b?x=1&y HTTP/1.1",
            path: "/a/b",
            query: Some("x=1&y"),
            authority: Some("h.example:80"),
        },
        Case {
            line: "GET /a/../b/./c HTTP/1.1",
            path: "/b/c",
            query: None,
            authority: Some("h.example:80"),
        },
        Case {
            line: "GET /%2e%2e/admin?%2e HTTP/1.1",
            path: "/admin",
            query: Some("%2e"),
            authority: Some("h.example:80"),
        },
        Case {
            line: "GET /a%2Fb HTTP/1.1",
            path: "/a%2Fb",
            query: None,
            authority: Some("h.example:80"),
        },
        Case {
            line: "GET /? HTTP/1.1",
            path: "/",
            query: Some(""),
            authority: Some("h.example:80"),
        },
        Case {
            line: "GET http://Other.example:8080/p/../q?z HTTP/1.1",
            path: "/q",
            query: Some("z"),
            authority: Some("Other.example:8080"),
        },
        Case {
            line: "GET HTTP://other.example HTTP/1.1",
            path: "/",
            query: None,
            authority: Some("other.example"),
        },
        Case {
            line: "GET http://other.example?z HTTP/1.1",
            path: "/",
            query: Some("z"),
            authority: Some("other.example"),
        },
        Case {
            line: "OPTIONS * HTTP/1.1",
            path: "*",
            query: None,
            authority: Some("h.example:80"),
        },
        Case {
            line: "CONNECT db.example:5432 HTTP/1.1",
            path: "",
            query: None,
            authority: Some("db.example:5432"),
        },
    ];
    for case in cases {
        let head = request(&format!("{}\r\nHost: h.example:80\r\n\r\n", case.line));
        assert_eq!(head.path(), case.path, "{}", case.line);
        assert_eq!(head.query(), case.query, "{}", case.line);
        assert_eq!(head.authority(), case.authority, "{}", case.line);
        assert_eq!(
            head.target(),
            case.line.split(' ').nth(1).unwrap_or_default()
        );
    }
}

#[test]
fn an_http10_request_may_have_no_authority() {
    let head = request("GET / HTTP/1.0\r\n\r\n");
    assert_eq!(head.authority(), None);
    let head = request("GET / HTTP/1.1\r\nHost:\r\n\r\n");
    assert_eq!(head.authority(), None);
}

#[test]
fn keep_alive_follows_the_version_and_connection() {
    let cases = [
        ("HTTP/1.1", "", true),
        ("HTTP/1.1", "Connection: close\r\n", false),
        ("HTTP/1.1", "Connection: keep-alive, Close\r\n", false),
        ("HTTP/1.1", "Connection: x\r\nConnection: close\r\n", false),
        ("HTTP/1.0", "", false),
        ("HTTP/1.0", "Connection: Keep-Alive\r\n", true),
        ("HTTP/1.0", "Connection: keep-alive, close\r\n", false),
    ];
    for (version, fields, want) in cases {
        let head = request(&format!("GET / {version}\r\nHost: a\r\n{fields}\r\n"));
        assert_eq!(head.keep_alive(), want, "{version} {fields:?}");
    }
}

#[test]
fn expect_and_upgrade_are_read_on_http11_only() {
    let head =
        request("PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n");
    assert!(head.expect_continue());
    assert_eq!(head.framing(), BodyFraming::Length(3));
    let head = request("PUT / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n");
    assert!(!head.expect_continue());

    let head =
        request("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    assert_eq!(head.upgrade(), Some(&b"websocket"[..]));
    let head = request("GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n");
    assert_eq!(head.upgrade(), None, "Upgrade not nominated by Connection");
    let head = request("GET /ws HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n");
    assert_eq!(head.upgrade(), None);
}

#[test]
fn fields_are_kept_in_order_and_joined_for_routing() {
    let head =
        request("HEAD / HTTP/1.1\r\nHost: a\r\nX-Tag: one\r\nx-tag: two \r\nAccept: */*\r\n\r\n");
    assert!(head.is_head_method());
    assert_eq!(head.method(), "HEAD");
    let fields: Vec<(&str, &[u8])> = head.fields().iter().collect();
    assert_eq!(
        fields,
        [
            ("Host", &b"a"[..]),
            ("X-Tag", b"one"),
            ("x-tag", b"two"),
            ("Accept", b"*/*")
        ]
    );
    assert_eq!(head.fields().first("X-TAG"), Some(&b"one"[..]));
    assert_eq!(head.fields().values("x-tag").count(), 2);
    assert_eq!(
        RequestView::header(&head, "x-tag"),
        Some(Cow::Owned(b"one,two".to_vec()))
    );
    assert_eq!(
        RequestView::header(&head, "accept"),
        Some(Cow::Borrowed(&b"*/*"[..]))
    );
    assert_eq!(RequestView::header(&head, "cookie"), None);
    assert_eq!(RequestView::path(&head), "/");
    assert_eq!(RequestView::authority(&head), Some("a"));
}

#[test]
fn response_framing_and_keep_alive() {
    struct Case {
        head: &'static str,
        head_request: bool,
        request_version: Version,
        framing: BodyFraming,
        keep_alive: bool,
    }
    let v11 = Version::Http11;
    let cases = [
        Case {
            head: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
            head_request: false,
            request_version: v11,
            framing: BodyFraming::Length(5),
            keep_alive: true,
        },
        Case {
            head: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
            head_request: true,
            request_version: v11,
            framing: BodyFraming::None,
            keep_alive: true,
        },
        Case {
            head: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            head_request: false,
            request_version: v11,
            framing: BodyFraming::Chunked,
            keep_alive: true,
        },
        Case {
            head: "HTTP/1.1 200 OK\r\n\r\n",
            head_request: false,
            request_version: v11,
            framing: BodyFraming::CloseDelimited,
            keep_alive: false,
        },
        Case {
            head: "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            head_request: false,
            request_version: v11,
            framing: BodyFraming::Length(0),
            keep_alive: false,
        },
        Case {
            head: "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
            head_request: false,
            request_version: v11,
            framing: BodyFraming::Length(0),
            keep_alive: false,
        },
        Case {
            head: "HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n",
            head_request: false,
            request_version: v11,
            framing: BodyFraming::Length(0),
            keep_alive: true,
        },
        Case {
            head: "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n",
            head_request: false,
            request_version: v11,
            framing: BodyFraming::Chunked,
            keep_alive: false,
        },
        Case {
            head: "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            head_request: false,
            request_version: Version::Http10,
            framing: BodyFraming::Length(0),
            keep_alive: false,
        },
        Case {
            head: "HTTP/1.1 204 No Content\r\n\r\n",
            head_request: false,
            request_version: v11,
            framing: BodyFraming::None,
            keep_alive: true,
        },
        Case {
            head: "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
            head_request: false,
            request_version: v11,
            framing: BodyFraming::None,
            keep_alive: true,
        },
        Case {
            head: "HTTP/1.1 100 Continue\r\n\r\n",
            head_request: false,
            request_version: v11,
            framing: BodyFraming::None,
            keep_alive: true,
        },
    ];
    for case in cases {
        let head = response(case.head, case.head_request, case.request_version);
        assert_eq!(head.framing(), case.framing, "{:?}", case.head);
        assert_eq!(head.keep_alive(), case.keep_alive, "{:?}", case.head);
    }
}

#[test]
fn interim_responses_and_keep_alive_timeouts() {
    let interim = |status: &str| {
        response(
            &format!("HTTP/1.1 {status}\r\n\r\n"),
            false,
            Version::Http11,
        )
        .is_interim()
    };
    assert!(interim("100 Continue"));
    assert!(interim("103 Early Hints"));
    assert!(!interim("101 Switching Protocols"));
    assert!(!interim("200 OK"));

    let timeout = |field: &str| {
        let head = response(
            &format!("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n{field}\r\n"),
            false,
            Version::Http11,
        );
        head.keep_alive_timeout()
    };
    assert_eq!(
        timeout("Keep-Alive: timeout=5, max=1000\r\n"),
        Some(Duration::from_secs(5))
    );
    assert_eq!(
        timeout("Keep-Alive: max=10, Timeout = 30\r\n"),
        Some(Duration::from_secs(30))
    );
    assert_eq!(timeout("Keep-Alive: timeout=x\r\n"), None);
    assert_eq!(timeout(""), None);
}

#[test]
fn response_reason_is_kept_as_received() {
    let head = response(
        "HTTP/1.1 404 Nicht gefunden\r\nContent-Length: 0\r\n\r\n",
        false,
        Version::Http11,
    );
    assert_eq!(
        (head.status(), head.reason()),
        (404, &b"Nicht gefunden"[..])
    );
    assert_eq!(head.version(), Version::Http11);
    let head = response("HTTP/1.0 200\r\n\r\n", false, Version::Http11);
    assert_eq!((head.status(), head.reason()), (200, &b""[..]));
}

#[test]
fn a_scanner_fed_one_byte_at_a_time_finds_the_end_of_a_59_kib_head() {
    let fields: String = (0..98)
        .map(|i| format!("X-{i:02}: {}\r\n", "v".repeat(600)))
        .collect();
    let text = format!("GET / HTTP/1.1\r\nHost: a\r\n{fields}\r\nbody");
    let head_len = text.len() - "body".len();
    let mut scanner = super::head::RequestScanner::new();
    let first_whole =
        (1..=text.len()).find(|&end| scanner.scan(&text.as_bytes()[..end]) != Ok(false));
    assert_eq!(first_whole, Some(head_len));
    assert_eq!(scanner.scan(text.as_bytes()), Ok(true));
    let parsed = parse_request(text.as_bytes()).map(|p| p.map(|(h, n)| (h.fields().len(), n)));
    assert_eq!(parsed, Ok(Some((99, head_len))));
}
