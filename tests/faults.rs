//! Upstreams that refuse, vanish, die mid-stream or never answer a SYN.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{Behavior, EchoBackend, Ports, Ringway, connect, http, read_to_end, say, tcp_service};

#[test]
fn a_refusing_endpoint_next_to_a_live_one_fails_no_connection() {
    let ports = Ports::new();
    let live = EchoBackend::lines("one");
    let refusing = ports.closed();
    let listen = ports.listener();
    let policy = "    loadBalancer:\n      simple: ROUND_ROBIN\n";
    let config = tcp_service(listen, &[refusing, live.port], policy);
    let Some(_gw) = Ringway::start(&config, &["--workers", "1"]) else {
        return;
    };
    for i in 0..20 {
        assert_eq!(say(listen, &format!("n{i}")), format!("one n{i}"));
    }
}

#[test]
fn the_only_endpoint_down_closes_the_client_within_a_second() {
    let ports = Ports::new();
    let down = ports.closed();
    let listen = ports.listener();
    let config = tcp_service(listen, &[down], "");
    let Some(_gw) = Ringway::start(&config, &["--workers", "1"]) else {
        return;
    };
    let started = Instant::now();
    let mut s = connect(listen);
    let (data, _) = read_to_end(&mut s);
    assert!(data.is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "closed after {:?}",
        started.elapsed()
    );
}

#[test]
fn upstream_dying_mid_stream_gives_the_client_eof() {
    let ports = Ports::new();
    let backend = EchoBackend::start(Behavior::CloseAfter(5));
    let listen = ports.listener();
    let config = tcp_service(listen, &[backend.port], "");
    let Some(_gw) = Ringway::start(&config, &["--workers", "1"]) else {
        return;
    };
    let mut s = connect(listen);
    s.write_all(b"12345").unwrap();
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "EOF expected");
}

#[test]
fn connect_timeout_against_a_blackhole_closes_the_client() {
    let ports = Ports::new();
    let hole = common::blackhole();
    let listen = ports.listener();
    let policy = "    connectionPool:\n      tcp:\n        connectTimeout: 300ms\n";
    let config = tcp_service(listen, &[hole.port], policy);
    let Some(gw) = Ringway::start(&config, &["--workers", "1", "--connect-attempts", "2"]) else {
        return;
    };
    let started = Instant::now();
    let mut s = connect(listen);
    let (data, _) = read_to_end(&mut s);
    let took = started.elapsed();
    assert!(data.is_empty());
    assert!(
        took >= Duration::from_millis(550) && took < Duration::from_secs(3),
        "two attempts of 300ms each, closed after {took:?}"
    );
    let iou = gw
        .threads()
        .iter()
        .filter(|t| t.starts_with("iou-wrk"))
        .count();
    assert_eq!(iou, 0, "a pending CONNECT parked an io-wq thread");
}

#[test]
fn idle_timeout_closes_an_idle_connection() {
    let ports = Ports::new();
    let backend = EchoBackend::lines("one");
    let listen = ports.listener();
    let policy = "    connectionPool:\n      tcp:\n        idleTimeout: 1s\n";
    let config = tcp_service(listen, &[backend.port], policy);
    let Some(_gw) = Ringway::start(&config, &["--workers", "1"]) else {
        return;
    };
    let mut s = connect(listen);
    s.write_all(b"x\n").unwrap();
    let started = Instant::now();
    let (data, _) = read_to_end(&mut s);
    let took = started.elapsed();
    assert_eq!(data, b"one x\n");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
}

#[test]
fn max_connection_duration_closes_a_busy_connection() {
    let ports = Ports::new();
    let backend = EchoBackend::lines("one");
    let listen = ports.listener();
    let policy = "    connectionPool:\n      tcp:\n        maxConnectionDuration: 1s\n";
    let config = tcp_service(listen, &[backend.port], policy);
    let Some(_gw) = Ringway::start(&config, &["--workers", "1"]) else {
        return;
    };
    let mut s = connect(listen);
    let started = Instant::now();
    // Keep it busy: the idle timer must not be what closes it.
    let closed = loop {
        if s.write_all(b"x\n").is_err() {
            break started.elapsed();
        }
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break started.elapsed(),
            Ok(_) => {}
        }
        assert!(started.elapsed() < Duration::from_secs(5), "never closed");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        closed >= Duration::from_millis(900),
        "closed after {closed:?}"
    );
}

#[test]
fn an_upstream_reset_resets_the_client() {
    let ports = Ports::new();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf).unwrap();
        socket2::SockRef::from(&c)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(c);
    });
    let listen = ports.listener();
    let config = tcp_service(listen, &[port], "");
    let Some(_gw) = Ringway::start(&config, &["--workers", "1"]) else {
        return;
    };
    let mut s = connect(listen);
    s.write_all(b"12345").unwrap();
    let (_, end) = read_to_end(&mut s);
    let e = end.expect_err("a reset, not a clean EOF");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
}

#[test]
fn a_client_reset_resets_the_upstream() {
    let ports = Ports::new();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (read_tx, read_rx) = std::sync::mpsc::channel();
    let (end_tx, end_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf).unwrap();
        read_tx.send(()).unwrap();
        let (_, end) = read_to_end(&mut c);
        let _ = end_tx.send(end.map_err(|e| e.kind()));
    });
    let listen = ports.listener();
    let config = tcp_service(listen, &[port], "");
    let Some(_gw) = Ringway::start(&config, &["--workers", "1"]) else {
        return;
    };
    let mut s = connect(listen);
    s.write_all(b"12345").unwrap();
    read_rx.recv_timeout(common::PATIENCE).unwrap();
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(s);
    let end = end_rx
        .recv_timeout(Duration::from_secs(2))
        .expect("the upstream never noticed the client's reset");
    assert_eq!(end, Err(std::io::ErrorKind::ConnectionReset));
}

/// One line through the gateway, or None when the connection is closed
/// without a reply.
fn try_say(port: u16, line: &str) -> Option<String> {
    let mut s = connect(port);
    s.write_all(format!("{line}\n").as_bytes()).ok()?;
    let mut reply = String::new();
    match std::io::BufRead::read_line(&mut std::io::BufReader::new(s), &mut reply) {
        Ok(n) if n > 0 => Some(reply.trim_end().to_owned()),
        _ => None,
    }
}

#[test]
fn outlier_detection_ejects_a_refusing_endpoint() {
    let ports = Ports::new();
    let live = EchoBackend::lines("one");
    let refusing = ports.closed();
    let listen = ports.listener();
    let policy = "    loadBalancer:\n      simple: ROUND_ROBIN\n    outlierDetection:\n      consecutive5xxErrors: 1\n      interval: 1s\n      baseEjectionTime: 30s\n      maxEjectionPercent: 100\n";
    let config = tcp_service(listen, &[refusing, live.port], policy);
    let admin = ports.admin();
    let address = format!("127.0.0.1:{admin}");
    let args = [
        "--workers",
        "1",
        "--connect-attempts",
        "1",
        "--admin",
        &address,
    ];
    let Some(gw) = Ringway::start(&config, &args) else {
        return;
    };
    let replies: Vec<Option<String>> = (0..10).map(|i| try_say(listen, &format!("n{i}"))).collect();
    // Round robin tries the refusing endpoint first; after that one failure
    // it is ejected and every other connection goes to the live one.
    assert_eq!(replies[0], None, "{replies:?}");
    for (i, r) in replies.iter().enumerate().skip(1) {
        assert_eq!(
            r.as_deref(),
            Some(format!("one n{i}").as_str()),
            "{replies:?}"
        );
    }
    // /config_dump shows which endpoint is out, and for how long.
    let (_, dump) = http(admin, "GET", "/config_dump");
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    let endpoints = &dump["resolved_endpoints"]["outbound|9000|v1|svc.default.svc.cluster.local"];
    let health = |port: u16| {
        let e = endpoints
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["address"] == format!("127.0.0.1:{port}"))
            .unwrap();
        (
            e["health"].as_str().unwrap().to_owned(),
            e["ejected_by_workers"].clone(),
        )
    };
    assert_eq!(
        health(refusing),
        ("ejected".to_owned(), serde_json::json!([0])),
        "{endpoints}"
    );
    assert_eq!(
        health(live.port),
        ("healthy".to_owned(), serde_json::json!([])),
        "{endpoints}"
    );
    let remaining = endpoints[0]["ejection_remaining_ms"].as_u64().unwrap();
    assert!(remaining > 20_000 && remaining <= 30_000, "{endpoints}");
    // A reload keeps the ejection: still no connection fails.
    gw.signal("HUP");
    // Published (generation 2) and taken by every worker (/ready 200).
    common::until("the reload to reach every worker", || {
        http(admin, "GET", "/metrics")
            .1
            .contains("ringway_config_generation 2")
            && http(admin, "GET", "/ready").0 == 200
    });
    for i in 0..4 {
        assert_eq!(
            try_say(listen, &format!("r{i}")).as_deref(),
            Some(format!("one r{i}").as_str())
        );
    }
}

/// Every endpoint ejected, with Istio's default `minHealthPercent` (0:
/// panic mode off): a connection closes at once with `UH`, and no endpoint
/// is tried. Envoy answers the same way ("no healthy upstream").
#[test]
fn every_endpoint_ejected_closes_with_uh_and_tries_none() {
    let ports = Ports::new();
    let (a, b) = (ports.closed(), ports.closed());
    let listen = ports.listener();
    let admin = ports.admin();
    let policy = "    loadBalancer:\n      simple: ROUND_ROBIN\n    outlierDetection:\n      consecutive5xxErrors: 1\n      interval: 1s\n      baseEjectionTime: 30s\n      maxEjectionPercent: 100\n";
    let config = tcp_service(listen, &[a, b], policy);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let (admin_address, log_arg) = (
        format!("127.0.0.1:{admin}"),
        log.to_string_lossy().into_owned(),
    );
    let args = [
        "--workers",
        "1",
        "--connect-attempts",
        "2",
        "--admin",
        &admin_address,
        "--access-log",
        &log_arg,
        "--log-format",
        "json",
    ];
    let Some(_gw) = Ringway::start(&config, &args) else {
        return;
    };
    // The first client: both endpoints refuse (UF), and each is ejected.
    assert_eq!(try_say(listen, "first"), None);
    let attempts =
        |metrics: &str| common::sample(metrics, "ringway_upstream_connect_attempts_total", &[]);
    let metrics = common::wait_metrics(admin, |m| attempts(m) == 2);
    assert_eq!(attempts(&metrics), 2, "{metrics}");
    // The next ones find nothing healthy: closed at once, nothing tried.
    let started = Instant::now();
    for i in 0..3 {
        assert_eq!(try_say(listen, &format!("n{i}")), None);
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let lines = common::access_log(&log, 4);
    let flags: Vec<&str> = lines
        .iter()
        .map(|l| l["response_flags"].as_str().unwrap())
        .collect();
    assert_eq!(flags, ["UF", "UH", "UH", "UH"], "{lines:?}");
    // The listener binds 0.0.0.0; the log names the address the client
    // reached, as Envoy does.
    for l in &lines {
        assert_eq!(
            l["downstream_local_address"],
            format!("127.0.0.1:{listen}"),
            "{l}"
        );
    }
    let metrics = common::wait_metrics(admin, |m| {
        common::sample(
            m,
            "istio_tcp_connections_closed_total",
            &["response_flags=\"UH\""],
        ) == 3
    });
    assert_eq!(
        attempts(&metrics),
        2,
        "no endpoint was tried again: {metrics}"
    );
}

/// The same with `minHealthPercent: 50`: below half healthy, panic mode
/// ignores the ejections, so every connection tries the endpoints again.
#[test]
fn min_health_percent_turns_on_panic_mode_below_its_share() {
    let ports = Ports::new();
    let (a, b) = (ports.closed(), ports.closed());
    let listen = ports.listener();
    let admin = ports.admin();
    let policy = "    loadBalancer:\n      simple: ROUND_ROBIN\n    outlierDetection:\n      consecutive5xxErrors: 1\n      interval: 1s\n      baseEjectionTime: 30s\n      maxEjectionPercent: 100\n      minHealthPercent: 50\n";
    let config = tcp_service(listen, &[a, b], policy);
    let admin_address = format!("127.0.0.1:{admin}");
    let args = [
        "--workers",
        "1",
        "--connect-attempts",
        "2",
        "--admin",
        &admin_address,
    ];
    let Some(_gw) = Ringway::start(&config, &args) else {
        return;
    };
    for i in 0..3 {
        assert_eq!(try_say(listen, &format!("n{i}")), None);
    }
    let attempts =
        |metrics: &str| common::sample(metrics, "ringway_upstream_connect_attempts_total", &[]);
    let metrics = common::wait_metrics(admin, |m| attempts(m) == 6);
    assert_eq!(
        attempts(&metrics),
        6,
        "two attempts per connection: {metrics}"
    );
    assert_eq!(
        common::sample(
            &metrics,
            "istio_tcp_connections_closed_total",
            &["response_flags=\"UF\""]
        ),
        3
    );
}

#[test]
fn without_outlier_detection_round_robin_keeps_trying_the_refusing_endpoint() {
    let ports = Ports::new();
    let live = EchoBackend::lines("one");
    let refusing = ports.closed();
    let listen = ports.listener();
    let policy = "    loadBalancer:\n      simple: ROUND_ROBIN\n";
    let config = tcp_service(listen, &[refusing, live.port], policy);
    let args = ["--workers", "1", "--connect-attempts", "1"];
    let Some(_gw) = Ringway::start(&config, &args) else {
        return;
    };
    let failed = (0..10)
        .filter(|i| try_say(listen, &format!("n{i}")).is_none())
        .count();
    assert_eq!(failed, 5);
}

/// Bytes a socket has not had acknowledged yet (SIOCOUTQ).
fn unacked(s: &std::net::TcpStream) -> i32 {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: ioctl(TIOCOUTQ) on an open socket writes one int.
    unsafe { libc::ioctl(s.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    n
}

/// An upstream that answers each request with `RESPONSE` bytes, waits until
/// ringway's kernel has acknowledged all of them, then resets (SO_LINGER 0).
fn respond_then_reset() -> u16 {
    let l = common::listen_any(128);
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { return };
            std::thread::spawn(move || {
                let mut request = [0u8; 5];
                if c.read_exact(&mut request).is_err() {
                    return;
                }
                let body: Vec<u8> = (0..RESPONSE).map(|i| (i % 251) as u8).collect();
                if c.write_all(&body).is_err() {
                    return;
                }
                let deadline = Instant::now() + common::PATIENCE;
                while unacked(&c) > 0 && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
                socket2::SockRef::from(&c)
                    .set_linger(Some(Duration::ZERO))
                    .unwrap();
            });
        }
    });
    port
}

const RESPONSE: usize = 100_000;

#[test]
fn an_upstream_reset_after_its_response_loses_no_byte_and_counts_them_all() {
    let ports = Ports::new();
    let upstream = respond_then_reset();
    for path in [&["--splice-after", "never"][..], &["--splice-after", "0"]] {
        let listen = ports.listener();
        let admin = ports.admin();
        let config = tcp_service(listen, &[upstream], "");
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        let admin_address = format!("127.0.0.1:{admin}");
        let mut args = vec![
            "--workers",
            "1",
            "--admin",
            &admin_address,
            "--log-format",
            "json",
        ];
        args.extend_from_slice(path);
        let log_arg = log.to_string_lossy().into_owned();
        args.extend_from_slice(&["--access-log", &log_arg]);
        let Some(_gw) = Ringway::start(&config, &args) else {
            return;
        };
        const CLIENTS: usize = 20;
        for i in 0..CLIENTS {
            // Every other client has a small receive buffer and reads late, so
            // that ringway still holds unsent bytes when the reset arrives.
            let slow = i % 2 == 1;
            let socket =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            if slow {
                socket.set_recv_buffer_size(4096).unwrap();
            }
            let address: std::net::SocketAddr = ([127, 0, 0, 1], listen).into();
            socket.connect(&address.into()).unwrap();
            let mut s: std::net::TcpStream = socket.into();
            s.set_read_timeout(Some(common::PATIENCE)).unwrap();
            s.write_all(b"hello").unwrap();
            if slow {
                std::thread::sleep(Duration::from_millis(300));
            }
            let (data, end) = read_to_end(&mut s);
            assert_eq!(data.len(), RESPONSE, "client {i} {path:?}: {end:?}");
            assert!(data.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
            let e = end.expect_err("the reset is propagated after the bytes");
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
        }
        common::until("an access-log line per client", || {
            std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() == CLIENTS)
        });
        for line in std::fs::read_to_string(&log).unwrap().lines() {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(record["response_flags"], "UC", "{line}");
            assert_eq!(record["bytes_sent"], RESPONSE, "{line}");
            assert_eq!(record["bytes_received"], 5, "{line}");
        }
        let (_, metrics) = http(admin, "GET", "/metrics");
        let sent: u64 = metrics
            .lines()
            .filter(|l| l.starts_with("istio_tcp_sent_bytes_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        assert_eq!(sent, (CLIENTS * RESPONSE) as u64, "{metrics}");
    }
}
