//! Drain (SPEC §2, §4; README "Drain"): SIGTERM stops accepting, /ready
//! says 503, open connections finish, then the process exits 0; at the
//! drain timeout, or on a second signal, what is left is closed (access-log
//! flag `DR`) and the process exits 0.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::io::ErrorKind;
use std::net::TcpStream;
use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use common::{
    ConfigDir, EchoBackend, PATIENCE, Ports, Ringway, access_log, chat, http_within, listening,
    open, read_to_end, sample, tcp_service, until, wait_metrics,
};

/// Well below any drain timeout used here: how soon "at once" must be.
const PROMPTLY: Duration = Duration::from_secs(3);

/// `/ready`'s status, 0 when the admin endpoint does not answer.
fn ready(admin: u16) -> u16 {
    http_within(admin, "GET", "/ready", PATIENCE).map_or(0, |(status, _)| status)
}

/// ringway on one TCP service to `echo`, with an admin endpoint on `admin`,
/// a JSON access log at `log`, and `--drain-timeout timeout`.
fn start(
    ports: &Ports,
    echo: &EchoBackend,
    workers: &str,
    timeout: &str,
    log: &Path,
) -> Option<(Ringway, ConfigDir, u16, u16)> {
    let (listen, admin) = (ports.listener(), ports.admin());
    let config = tcp_service(listen, &[echo.port], "");
    let address = format!("127.0.0.1:{admin}");
    let args = [
        "--workers",
        workers,
        "--admin",
        &address,
        "--drain-timeout",
        timeout,
        "--access-log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
    ];
    let gw = Ringway::start(&config, &args)?;
    Some((gw, config, listen, admin))
}

/// Wait for the exit status and how long it took from `since`.
fn exit_after(gw: Ringway, since: Instant) -> (ExitStatus, Duration) {
    let status = gw.wait_exit();
    (status, since.elapsed())
}

/// The access log's lines once ringway has exited: exactly `n` of them.
fn exactly(log: &Path, n: usize) -> Vec<serde_json::Value> {
    let lines = access_log(log, n);
    assert_eq!(lines.len(), n, "{lines:?}");
    lines
}

#[test]
fn sigterm_drains_open_connections_then_exits_0() {
    let ports = Ports::new();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let echo = EchoBackend::lines("one");
    let Some((mut gw, _config, listen, admin)) = start(&ports, &echo, "2", "60s", &log) else {
        return;
    };
    assert_eq!(ready(admin), 200);
    let mut a = open(listen);
    let mut b = open(listen);
    assert_eq!(chat(&mut a, "x"), "one x");
    assert_eq!(chat(&mut b, "x"), "one x");
    let opened = "istio_tcp_connections_opened_total";
    let active = "ringway_downstream_connections_active";
    wait_metrics(admin, |m| {
        sample(m, opened, &[]) == 2 && sample(m, active, &[]) == 2
    });

    assert_eq!(listening(listen), 2, "one listening socket per worker");
    gw.signal("TERM");
    until("/ready 503", || ready(admin) == 503);
    until("both workers to close their listeners", || {
        listening(listen) == 0
    });
    let refused = TcpStream::connect(("127.0.0.1", listen)).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
    // Open connections carry on, both ways, byte for byte.
    assert_eq!(chat(&mut a, "y"), "one y");
    assert_eq!(chat(&mut b, "y"), "one y");
    assert!(!gw.exited(), "exited with connections open");
    drop(a);
    let closed = "istio_tcp_connections_closed_total";
    // The two are written at different moments: wait for both.
    let m = wait_metrics(admin, |m| {
        sample(m, closed, &[]) == 1 && sample(m, active, &[]) == 1
    });
    assert_eq!(sample(&m, opened, &[]), 2, "{m}");
    assert!(!gw.exited(), "exited with a connection open");
    assert_eq!(chat(&mut b, "z"), "one z");
    b.get_mut().shutdown(std::net::Shutdown::Write).unwrap();
    let (rest, end) = read_to_end(b.get_mut());
    assert!(end.is_ok(), "{end:?}");
    assert_eq!(rest, b"", "nothing after the last reply");

    // The last connection has finished: the process exits at once, not at
    // the 60 s timeout.
    let finished = Instant::now();
    let (status, took) = exit_after(gw, finished);
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(took < PROMPTLY, "exited {took:?} after the last connection");
    // Both finished on their own: no DR; every byte counted each way.
    let mut lines = exactly(&log, 2);
    lines.sort_by_key(|l| l["bytes_received"].as_u64());
    let (a, b) = (&lines[0], &lines[1]);
    assert_eq!(a["response_flags"], "-", "{a}");
    assert_eq!(b["response_flags"], "-", "{b}");
    assert_eq!(
        (&a["bytes_received"], &a["bytes_sent"]),
        (&4.into(), &12.into()),
        "{a}"
    );
    assert_eq!(
        (&b["bytes_received"], &b["bytes_sent"]),
        (&6.into(), &18.into()),
        "{b}"
    );
    assert_eq!(echo.accepted.load(std::sync::atomic::Ordering::Relaxed), 2);
}

#[test]
fn a_second_sigterm_closes_what_is_left_at_once() {
    let ports = Ports::new();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let echo = EchoBackend::lines("one");
    let Some((gw, _config, listen, admin)) = start(&ports, &echo, "1", "60s", &log) else {
        return;
    };
    let mut a = open(listen);
    assert_eq!(chat(&mut a, "x"), "one x");
    gw.signal("TERM");
    until("/ready 503", || ready(admin) == 503);
    assert_eq!(chat(&mut a, "y"), "one y");
    let second = Instant::now();
    gw.signal("TERM");
    let (rest, _) = read_to_end(a.get_mut());
    let closed = second.elapsed();
    assert_eq!(rest, b"", "nothing after the last reply");
    assert!(closed < PROMPTLY, "closed {closed:?} after the second TERM");
    let (status, took) = exit_after(gw, second);
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(took < PROMPTLY, "exited {took:?} after the second TERM");
    let lines = exactly(&log, 1);
    let line = &lines[0];
    assert_eq!(line["response_flags"], "DR", "{line}");
    assert_eq!(line["bytes_received"], 4, "{line}");
    assert_eq!(line["bytes_sent"], 12, "{line}");
}

#[test]
fn the_drain_timeout_closes_what_is_left() {
    let ports = Ports::new();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let echo = EchoBackend::lines("one");
    let Some((gw, _config, listen, _admin)) = start(&ports, &echo, "1", "300ms", &log) else {
        return;
    };
    let (mut a, mut b) = (open(listen), open(listen));
    assert_eq!(chat(&mut a, "x"), "one x");
    assert_eq!(chat(&mut b, "xy"), "one xy");
    let started = Instant::now();
    gw.signal("TERM");
    for s in [&mut a, &mut b] {
        let (rest, _) = read_to_end(s.get_mut());
        assert_eq!(rest, b"", "nothing after the last reply");
    }
    let closed = started.elapsed();
    assert!(
        closed >= Duration::from_millis(250),
        "closed after {closed:?}, before the 300 ms drain timeout"
    );
    assert!(
        closed < Duration::from_millis(300) + PROMPTLY,
        "closed {closed:?} after TERM, long past the 300 ms drain timeout"
    );
    let (status, took) = exit_after(gw, started);
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(
        took < Duration::from_millis(300) + PROMPTLY,
        "exited {took:?} after TERM"
    );
    let mut lines = exactly(&log, 2);
    lines.sort_by_key(|l| l["bytes_received"].as_u64());
    for (line, (up, down)) in lines.iter().zip([(2, 6), (3, 7)]) {
        assert_eq!(line["response_flags"], "DR", "{line}");
        assert_eq!(line["bytes_received"], up, "{line}");
        assert_eq!(line["bytes_sent"], down, "{line}");
    }
}
