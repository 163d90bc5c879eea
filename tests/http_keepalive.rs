//! Issue 13, connections: client keep-alive, the upstream keep-alive pool
//! (reuse, the idle-close race, `maxRequestsPerConnection`), pipelining,
//! HTTP/1.0, `Connection: close`, bodies in every framing, and the
//! bodiless responses that keep a connection reusable.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::http_gw::{Site, curl_upload, exchange, virtual_service};
use common::origin::{Framing, Origin, Response, read_response, read_response_head};
use common::{PATIENCE, sample, wait_metrics};
use sha2::{Digest as _, Sha256};

/// Every request to subset `a`.
fn all_to_a() -> String {
    virtual_service(
        "svc",
        &["*"],
        "[{route: [{destination: {host: svc, subset: a}}]}]",
    )
}

/// Origin `a` answering `GET <target>` with the target as its body.
fn echo_target() -> Origin {
    Origin::start(|r| Response::ok(r.target.clone()))
}

/// A client connection and its reader.
fn client(port: u16) -> (TcpStream, BufReader<TcpStream>) {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let read = BufReader::new(s.try_clone().unwrap());
    (s, read)
}

/// `n` bytes that are not all alike.
fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn sha(bytes: &[u8]) -> Vec<u8> {
    Sha256::digest(bytes).to_vec()
}

#[test]
fn a_thousand_requests_on_one_client_connection_use_one_upstream_connection() {
    let Some(site) = Site::with_origins(vec![("a", echo_target())], "", &[all_to_a()], &[]) else {
        return;
    };
    let (mut s, mut read) = client(site.port);
    for i in 0..1000 {
        write!(s, "GET /r{i} HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
        let r = read_response(&mut read).unwrap().unwrap();
        assert_eq!((r.status, r.body), (200, format!("/r{i}").into_bytes()));
    }
    let origin = site.origin("a");
    assert_eq!(origin.connections(), 1);
    assert_eq!(origin.requests_per_connection(), [1000]);
    let reused = ["result=\"reused\""];
    let metrics = wait_metrics(site.admin, |m| {
        sample(m, "ringway_upstream_pool_reuse_total", &reused) >= 999
    });
    assert_eq!(
        sample(&metrics, "ringway_upstream_pool_reuse_total", &reused),
        999
    );
}

#[test]
fn an_origin_closing_idle_connections_after_a_second_gives_no_5xx() {
    // The keep-alive race: the origin closes a connection idle for ~1 s,
    // and the client's next request comes ~1 s after the last.
    let origin = Origin::start_idle(Duration::from_millis(1000), |_| Response::ok("a"));
    let Some(site) = Site::with_origins(vec![("a", origin)], "", &[all_to_a()], &[]) else {
        return;
    };
    let (mut s, mut read) = client(site.port);
    let mut statuses = Vec::new();
    let started = Instant::now();
    let mut i = 0u32;
    while started.elapsed() < Duration::from_secs(10) {
        // 990..1010 ms: both sides of the origin's timeout.
        std::thread::sleep(Duration::from_millis(990 + u64::from(i % 5) * 5));
        write!(s, "GET /{i} HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
        statuses.push(read_response(&mut read).unwrap().unwrap().status);
        i += 1;
    }
    assert!(statuses.len() >= 9, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(site.origin("a").requests().len(), statuses.len());
}

#[test]
fn max_requests_per_connection_1_opens_one_upstream_connection_per_request() {
    let policy = "{connectionPool: {http: {maxRequestsPerConnection: 1}}}";
    let Some(site) = Site::with_origins(vec![("a", echo_target())], policy, &[all_to_a()], &[])
    else {
        return;
    };
    let (mut s, mut read) = client(site.port);
    for i in 0..5 {
        write!(s, "GET /{i} HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
        assert_eq!(read_response(&mut read).unwrap().unwrap().status, 200);
    }
    assert_eq!(site.origin("a").requests_per_connection(), [1, 1, 1, 1, 1]);
}

#[test]
fn sixty_four_pipelined_requests_in_one_write_get_64_responses_in_order() {
    let Some(site) = Site::with_origins(vec![("a", echo_target())], "", &[all_to_a()], &[]) else {
        return;
    };
    let requests: String = (0..64)
        .map(|i| format!("GET /p{i} HTTP/1.1\r\nHost: h\r\n\r\n"))
        .collect();
    let seen = exchange(site.port, requests.as_bytes());
    let bodies: Vec<String> = seen
        .responses
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    let want: Vec<String> = (0..64).map(|i| format!("/p{i}")).collect();
    assert_eq!(bodies, want);
    assert!(!seen.closed);
}

#[test]
fn a_request_pipelined_behind_a_malformed_one_is_never_served() {
    let Some(site) = Site::with_origins(vec![("a", echo_target())], "", &[all_to_a()], &[]) else {
        return;
    };
    let bytes = "GET /bad HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nGET /second HTTP/1.1\r\nHost: h\r\n\r\n";
    let seen = exchange(site.port, bytes.as_bytes());
    assert_eq!((seen.statuses(), seen.closed), (vec![400], true));
    assert!(site.origin_requests().is_empty());
}

#[test]
fn http_1_0_closes_unless_it_asks_for_keep_alive() {
    let Some(site) = Site::with_origins(vec![("a", echo_target())], "", &[all_to_a()], &[]) else {
        return;
    };
    let plain = exchange(site.port, b"GET /one HTTP/1.0\r\nHost: h\r\n\r\n");
    assert_eq!((plain.statuses(), plain.closed), (vec![200], true));

    let two = "GET /k1 HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\nGET /k2 HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n";
    let kept = exchange(site.port, two.as_bytes());
    assert_eq!((kept.statuses(), kept.closed), (vec![200, 200], false));
    assert_eq!(kept.responses[0].header("connection"), Some("keep-alive"));
    assert_eq!(kept.responses[1].body, b"/k2");
}

#[test]
fn connection_close_from_the_client_closes_after_the_response() {
    let Some(site) = Site::with_origins(vec![("a", echo_target())], "", &[all_to_a()], &[]) else {
        return;
    };
    let bytes = "GET /c HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET /after HTTP/1.1\r\nHost: h\r\n\r\n";
    let seen = exchange(site.port, bytes.as_bytes());
    assert_eq!((seen.statuses(), seen.closed), (vec![200], true));
    assert_eq!(seen.responses[0].header("connection"), Some("close"));
    let targets: Vec<String> = site
        .origin_requests()
        .into_iter()
        .map(|r| r.target)
        .collect();
    assert_eq!(targets, ["/c"]);
}

/// Origin `a` answering with the sha256 of the request body, or 1 MiB in
/// the framing the path names.
fn bodies() -> Origin {
    Origin::start(|r| {
        let mib = payload(1 << 20);
        match r.target.as_str() {
            "/chunked" => Response::ok(mib).framing(Framing::Chunked),
            "/close" => Response::ok(mib).framing(Framing::Close),
            "/length" => Response::ok(mib),
            _ => Response::ok(format!("{:x?}", sha(&r.body))),
        }
    })
}

#[test]
fn a_1_mib_content_length_upload_reaches_the_origin_whole() {
    let Some(site) = Site::with_origins(vec![("a", bodies())], "", &[all_to_a()], &[]) else {
        return;
    };
    let body = payload(1 << 20);
    let (mut s, mut read) = client(site.port);
    write!(
        s,
        "POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(&body).unwrap();
    let r = read_response(&mut read).unwrap().unwrap();
    assert_eq!(
        (r.status, r.body),
        (200, format!("{:x?}", sha(&body)).into_bytes())
    );
    assert_eq!(site.origin("a").requests()[0].body.len(), 1 << 20);
}

#[test]
fn a_chunked_upload_by_curl_reaches_the_origin_whole() {
    let Some(site) = Site::with_origins(vec![("a", bodies())], "", &[all_to_a()], &[]) else {
        return;
    };
    let body = payload(1 << 20);
    let chunked = ["-H", "Transfer-Encoding: chunked"];
    let out = curl_upload(site.port, "/up", &body, &chunked);
    assert_eq!(out.stdout, format!("{:x?}", sha(&body)).into_bytes());
    let seen = &site.origin("a").requests()[0];
    assert_eq!(seen.method, "PUT");
    assert_eq!(seen.header("transfer-encoding"), Some("chunked"));
}

#[test]
fn one_mib_responses_in_every_framing_reach_the_client_whole() {
    let Some(site) = Site::with_origins(vec![("a", bodies())], "", &[all_to_a()], &[]) else {
        return;
    };
    let want = sha(&payload(1 << 20));
    let (mut s, mut read) = client(site.port);
    for path in ["/length", "/chunked", "/close"] {
        write!(s, "GET {path} HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
        let r = read_response(&mut read).unwrap().unwrap();
        assert_eq!((r.status, r.body.len()), (200, 1 << 20), "{path}");
        assert_eq!(sha(&r.body), want, "{path}");
    }
    // The close-delimited response ended the client connection too.
    assert_eq!(read_response(&mut read).unwrap(), None);
}

#[test]
fn an_http_1_0_client_gets_a_chunked_response_de_chunked_and_close_delimited() {
    let Some(site) = Site::with_origins(vec![("a", bodies())], "", &[all_to_a()], &[]) else {
        return;
    };
    let (mut s, mut read) = client(site.port);
    s.write_all(b"GET /chunked HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    let r = read_response(&mut read).unwrap().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), None, "never chunked to 1.0");
    assert_eq!(r.header("content-length"), None);
    assert_eq!(
        r.header("connection"),
        Some("close"),
        "asked keep-alive, but the body ends at the close"
    );
    assert_eq!(sha(&r.body), sha(&payload(1 << 20)));
    assert_eq!(read_response(&mut read).unwrap(), None, "closed after it");
}

#[test]
fn head_204_and_304_keep_the_connection_reusable() {
    let origin = Origin::start(|r| match r.target.as_str() {
        "/204" => Response::status(204, ""),
        "/304" => Response::status(304, "").header("ETag", "\"x\""),
        _ => Response::ok("twelve bytes"),
    });
    let Some(site) = Site::with_origins(vec![("a", origin)], "", &[all_to_a()], &[]) else {
        return;
    };
    let (mut s, mut read) = client(site.port);
    s.write_all(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    let head = read_response_head(&mut read).unwrap().unwrap();
    assert_eq!(
        (head.status, head.header("content-length")),
        (200, Some("12"))
    );
    for (path, status) in [("/204", 204), ("/304", 304)] {
        write!(s, "GET {path} HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
        let r = read_response(&mut read).unwrap().unwrap();
        assert_eq!((r.status, r.body.len()), (status, 0), "{path}");
    }
    s.write_all(b"GET /after HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap();
    let after = read_response(&mut read).unwrap().unwrap();
    assert_eq!((after.status, after.body), (200, b"twelve bytes".to_vec()));
    assert_eq!(site.origin("a").requests_per_connection(), [4]);
}
