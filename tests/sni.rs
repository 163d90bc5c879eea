//! TLS passthrough (SPEC §1.4), end to end: the ClientHello is read without
//! terminating TLS, routed by its SNI, and forwarded with the rest of the
//! stream, byte for byte.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use common::client_hello::{client_hello_bytes, client_hello_padded};
use common::{ConfigDir, EchoBackend, Ports, Ringway, connect, read_to_end, yaml};

/// Backends A (`db.example.com`), B (`*.example.com`) and C (`*`, when
/// `catch_all`), raw echo servers told apart by their accept counts.
struct Backends {
    a: EchoBackend,
    b: EchoBackend,
    c: EchoBackend,
}

impl Backends {
    fn start() -> Backends {
        Backends {
            a: EchoBackend::raw(),
            b: EchoBackend::raw(),
            c: EchoBackend::raw(),
        }
    }

    fn accepted(&self) -> [usize; 3] {
        [&self.a, &self.b, &self.c].map(|b| b.accepted.load(Ordering::Relaxed))
    }

    fn config(&self, listen: u16, catch_all: bool) -> ConfigDir {
        self.config_with(listen, catch_all, "")
    }

    /// `policy`: YAML for the DestinationRule's `trafficPolicy` (indented 4).
    fn config_with(&self, listen: u16, catch_all: bool, policy: &str) -> ConfigDir {
        let mut routes =
            yaml::tls_route("db.example.com", "a") + &yaml::tls_route("'*.example.com'", "b");
        if catch_all {
            routes += &yaml::tls_route("'*'", "c");
        }
        let text = yaml::join(&[
            yaml::gateway(&[], &[listen]),
            yaml::virtual_service("tls", &routes),
            yaml::destination_rule(policy, &["a", "b", "c"]),
            yaml::service_entry(&[(self.a.port, "a"), (self.b.port, "b"), (self.c.port, "c")]),
        ]);
        ConfigDir::new().file("sni.yaml", &text)
    }
}

/// Sends `hello` then `payload`, half-closes, reads everything back.
fn exchange(listen: u16, hello: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut s = connect(listen);
    s.write_all(hello).unwrap();
    s.write_all(payload).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let (data, end) = read_to_end(&mut s);
    end.unwrap();
    data
}

#[test]
fn the_most_specific_sni_route_gets_the_hello_and_the_rest_of_the_stream() {
    let ports = Ports::new();
    let backends = Backends::start();
    let listen = ports.listener();
    let Some(_gw) = Ringway::start(&backends.config(listen, true), &["--workers", "1"]) else {
        return;
    };
    struct Case {
        sni: Option<&'static str>,
        backend: usize,
    }
    let cases = [
        Case {
            sni: Some("db.example.com"),
            backend: 0,
        },
        Case {
            sni: Some("kafka.example.com"),
            backend: 1,
        },
        // Catch-all for an unknown name, and for a client without SNI.
        Case {
            sni: Some("other.org"),
            backend: 2,
        },
        Case {
            sni: None,
            backend: 2,
        },
    ];
    for case in cases {
        let before = backends.accepted();
        let hello = client_hello_bytes(case.sni, 16384);
        let payload = format!("after the hello for {:?}\n", case.sni).into_bytes();
        let echoed = exchange(listen, &hello, &payload);
        assert_eq!(
            echoed,
            [hello, payload].concat(),
            "{:?}: the hello then the rest",
            case.sni
        );
        let after = backends.accepted();
        let mut expected = before;
        expected[case.backend] += 1;
        assert_eq!(after, expected, "{:?} went to the wrong backend", case.sni);
    }
    // Bytes that are not a ClientHello are routed like a client without SNI.
    let request = b"GET / HTTP/1.1\r\nHost: db.example.com\r\n\r\n";
    assert_eq!(
        exchange(listen, request, b"body"),
        [request.as_slice(), b"body"].concat()
    );
    assert_eq!(backends.accepted(), [1, 1, 3]);
}

#[test]
fn a_hello_in_several_segments_and_a_bulk_stream_arrive_intact() {
    let ports = Ports::new();
    let backends = Backends::start();
    let listen = ports.listener();
    let Some(_gw) = Ringway::start(&backends.config(listen, true), &["--workers", "1"]) else {
        return;
    };
    // Several records, written a few bytes at a time with pauses.
    let hello = client_hello_bytes(Some("db.example.com"), 40);
    let mut s = connect(listen);
    s.set_nodelay(true).unwrap();
    for piece in hello.chunks(25) {
        s.write_all(piece).unwrap();
        thread::sleep(Duration::from_millis(30));
    }
    s.write_all(b"ping").unwrap();
    let mut back = vec![0u8; hello.len() + 4];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, [hello.as_slice(), b"ping"].concat());
    assert_eq!(backends.accepted(), [1, 0, 0]);
    drop(s);

    // A large stream after the hello: backpressure and the splice path.
    let hello = client_hello_bytes(Some("x.example.com"), 16384);
    let payload: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
    let mut s = connect(listen);
    let mut w = s.try_clone().unwrap();
    let sent = [hello, payload].concat();
    let to_send = sent.clone();
    let writer = thread::spawn(move || {
        w.write_all(&to_send).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
    });
    let (data, end) = read_to_end(&mut s);
    end.unwrap();
    writer.join().unwrap();
    assert!(data == sent, "{} bytes back of {}", data.len(), sent.len());
    assert_eq!(backends.accepted(), [1, 1, 0]);
}

#[test]
fn without_a_match_the_connection_is_closed_and_the_sni_logged() {
    let ports = Ports::new();
    let backends = Backends::start();
    let listen = ports.listener();
    let Some(gw) = Ringway::start(&backends.config(listen, false), &["--workers", "1"]) else {
        return;
    };
    let mut s = connect(listen);
    s.write_all(&client_hello_bytes(Some("unknown.org"), 16384))
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 16];
    // EOF or a reset; a timeout (WouldBlock) would fail here.
    match s.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("{n} bytes from a connection without a route"),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
            ),
            "not closed: {e}"
        ),
    }
    assert!(start.elapsed() < Duration::from_secs(1));
    let deadline = Instant::now() + Duration::from_secs(2);
    while !gw.logged("unknown.org") && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    let log = gw.log_text();
    assert!(
        log.contains("unknown.org") && log.contains("NR"),
        "log:\n{log}"
    );
    assert_eq!(backends.accepted(), [0, 0, 0]);
    // Without a catch-all, neither a client without SNI nor one that does
    // not speak TLS is forwarded.
    for first in [
        client_hello_bytes(None, 16384),
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
    ] {
        let mut s = connect(listen);
        s.write_all(&first).unwrap();
        let (data, _) = read_to_end(&mut s);
        assert!(data.is_empty());
    }
    assert_eq!(backends.accepted(), [0, 0, 0]);
    // Routing still works for names that match.
    let hello = client_hello_bytes(Some("db.example.com"), 16384);
    assert_eq!(
        exchange(listen, &hello, b"x"),
        [hello.as_slice(), b"x"].concat()
    );
}

#[test]
fn a_client_that_sends_no_hello_is_closed_after_the_read_timeout() {
    let ports = Ports::new();
    let backends = Backends::start();
    let listen = ports.listener();
    let Some(_gw) = Ringway::start(&backends.config(listen, true), &["--workers", "1"]) else {
        return;
    };
    let mut silent = connect(listen);
    // Half a hello is no better than none.
    let mut partial = connect(listen);
    let hello = client_hello_bytes(Some("db.example.com"), 16384);
    partial.write_all(&hello[..hello.len() / 2]).unwrap();
    let start = Instant::now();
    for s in [&mut silent, &mut partial] {
        s.set_read_timeout(Some(Duration::from_secs(7))).unwrap();
        let mut buf = [0u8; 16];
        let r = s.read(&mut buf);
        assert!(
            matches!(r, Ok(0))
                || r.as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "{r:?}"
        );
    }
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(4500) && waited < Duration::from_millis(6500),
        "closed after {waited:?}"
    );
    assert_eq!(backends.accepted(), [0, 0, 0]);
}

#[test]
fn the_proxy_header_goes_before_the_hello() {
    let ports = Ports::new();
    let backends = Backends::start();
    let listen = ports.listener();
    let policy = "    proxyProtocol:\n      version: V1\n";
    let config = backends.config_with(listen, true, policy);
    let Some(_gw) = Ringway::start(&config, &["--workers", "1"]) else {
        return;
    };
    let hello = client_hello_bytes(Some("db.example.com"), 16384);
    let mut s = connect(listen);
    let client_port = s.local_addr().unwrap().port();
    s.write_all(&hello).unwrap();
    s.write_all(b"rest").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let (data, end) = read_to_end(&mut s);
    end.unwrap();
    let header = format!("PROXY TCP4 127.0.0.1 127.0.0.1 {client_port} {listen}\r\n");
    assert!(
        data == [header.as_bytes(), &hello, b"rest"].concat(),
        "{:?}",
        String::from_utf8_lossy(&data)
    );
    assert_eq!(backends.accepted(), [1, 0, 0]);
}

#[test]
fn a_hello_above_16_kib_is_closed_not_sent_to_the_catch_all() {
    let ports = Ports::new();
    let backends = Backends::start();
    let listen = ports.listener();
    let Some(gw) = Ringway::start(&backends.config(listen, true), &["--workers", "1"]) else {
        return;
    };
    for record in [16384, 1000] {
        let hello = client_hello_padded(Some("db.example.com"), record, 17_000);
        let mut s = connect(listen);
        // Closed as soon as the size is known: the rest may not be taken.
        let _ = s.write_all(&hello);
        let (data, _) = read_to_end(&mut s);
        assert!(data.is_empty());
    }
    assert_eq!(backends.accepted(), [0, 0, 0]);
    common::until("the too-large line", || gw.logged("client_hello_too_large"));
    // A hello just under the limit is still routed by its name.
    let hello = client_hello_padded(Some("db.example.com"), 16384, 16_000);
    assert_eq!(
        exchange(listen, &hello, b"x"),
        [hello.as_slice(), b"x"].concat()
    );
    assert_eq!(backends.accepted(), [1, 0, 0]);
}

#[test]
fn the_access_log_sni_field_is_a_host_name_or_a_dash() {
    let ports = Ports::new();
    let backends = Backends::start();
    let listen = ports.listener();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let log_arg = log.to_string_lossy().into_owned();
    let args = ["--workers", "1", "--access-log", &log_arg];
    let Some(_gw) = Ringway::start(&backends.config(listen, true), &args) else {
        return;
    };
    let firsts = [
        client_hello_bytes(Some("db.example.com"), 16384),
        client_hello_bytes(None, 16384),
        client_hello_bytes(Some("evil name\tx"), 16384),
        client_hello_bytes(Some("a\"b"), 16384),
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        client_hello_padded(Some("db.example.com"), 16384, 17_000),
    ];
    for first in &firsts {
        let mut s = connect(listen);
        let _ = s.write_all(first);
        let _ = s.shutdown(Shutdown::Write);
        let _ = read_to_end(&mut s);
    }
    common::until("a line per connection", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() == firsts.len())
    });
    let text = std::fs::read_to_string(&log).unwrap();
    let fields: Vec<Vec<&str>> = text.lines().map(|l| l.split(' ').collect()).collect();
    let width = fields[0].len();
    let mut names = Vec::new();
    for line in &fields {
        assert_eq!(line.len(), width, "{text}");
        let sni = line[width - 2];
        assert!(
            sni == "-"
                || sni
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)),
            "{text}"
        );
        names.push(sni);
    }
    names.sort_unstable();
    assert_eq!(names, ["-", "-", "-", "-", "-", "db.example.com"], "{text}");
}
