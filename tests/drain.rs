//! Drain (SPEC §2, §4): SIGTERM stops accepting, /ready says 503, open
//! connections finish, then the process exits 0; a second signal stops at
//! once.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{EchoBackend, Ports, Ringway, chat, open, read_to_end, tcp_service, until};

const PATIENCE: Duration = Duration::from_secs(10);

fn status(port: u16, path: &str) -> u16 {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn sigterm_drains_open_connections_then_exits_0() {
    let ports = Ports::new();
    let echo = EchoBackend::lines("one");
    let (listen, admin) = (ports.listener(), ports.admin());
    let config = tcp_service(listen, &[echo.port], "");
    let address = format!("127.0.0.1:{admin}");
    let Some(mut gw) = Ringway::start(&config, &["--workers", "2", "--admin", &address]) else {
        return;
    };
    assert_eq!(status(admin, "/ready"), 200);
    let mut a = open(listen);
    let mut b = open(listen);
    assert_eq!(chat(&mut a, "x"), "one x");
    assert_eq!(chat(&mut b, "x"), "one x");

    gw.signal("TERM");
    until("/ready 503", || status(admin, "/ready") == 503);
    until("new connections refused", || {
        TcpStream::connect(("127.0.0.1", listen)).is_err()
    });
    // Open connections carry on.
    assert_eq!(chat(&mut a, "y"), "one y");
    assert_eq!(chat(&mut b, "y"), "one y");
    assert!(!gw.exited(), "exited with connections open");
    drop(a);
    assert_eq!(chat(&mut b, "z"), "one z");
    b.get_mut().shutdown(std::net::Shutdown::Write).unwrap();
    let (_, end) = read_to_end(b.get_mut());
    assert!(end.is_ok(), "{end:?}");
    let exit = gw.wait_exit();
    assert!(exit.success(), "{exit}");
}

#[test]
fn a_second_sigterm_closes_what_is_left_at_once() {
    let ports = Ports::new();
    let echo = EchoBackend::lines("one");
    let listen = ports.listener();
    let config = tcp_service(listen, &[echo.port], "");
    let Some(gw) = Ringway::start(&config, &["--workers", "1", "--drain-timeout", "60s"]) else {
        return;
    };
    let mut a = open(listen);
    assert_eq!(chat(&mut a, "x"), "one x");
    gw.signal("TERM");
    until("draining", || gw.logged("draining"));
    gw.signal("TERM");
    let (_, _) = read_to_end(a.get_mut());
    let exit = gw.wait_exit();
    assert!(exit.success(), "{exit}");
}

#[test]
fn the_drain_timeout_closes_what_is_left() {
    let ports = Ports::new();
    let echo = EchoBackend::lines("one");
    let listen = ports.listener();
    let config = tcp_service(listen, &[echo.port], "");
    let Some(gw) = Ringway::start(&config, &["--workers", "1", "--drain-timeout", "300ms"]) else {
        return;
    };
    let mut a = open(listen);
    assert_eq!(chat(&mut a, "x"), "one x");
    let started = Instant::now();
    gw.signal("TERM");
    let (_, _) = read_to_end(a.get_mut());
    assert!(started.elapsed() >= Duration::from_millis(250));
    let exit = gw.wait_exit();
    assert!(exit.success(), "{exit}");
}
