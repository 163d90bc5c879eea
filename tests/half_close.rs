//! Half-close both ways: a FIN from one side reaches the other once what was
//! read has been written, and the other direction keeps flowing.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{EchoBackend, PATIENCE, Ports, Ringway, connect, read_to_end, tcp_service};

#[test]
fn client_fin_after_its_line_still_gets_the_reply() {
    let ports = Ports::new();
    // `(date; sleep 1) | nc host port`, and nc closing its write side at once.
    let backend = EchoBackend::lines("one");
    let listen = ports.listener();
    let config = tcp_service(listen, &[backend.port], "");
    let Some(_gw) = Ringway::start(&config, &["--workers", "1"]) else {
        return;
    };
    let mut s = connect(listen);
    s.write_all(b"Sun Nov 22 03:00:00 UTC 2026\n").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let (reply, end) = read_to_end(&mut s);
    assert!(end.is_ok(), "clean EOF expected, got {end:?}");
    assert_eq!(
        String::from_utf8_lossy(&reply),
        "one Sun Nov 22 03:00:00 UTC 2026\n"
    );
}

#[test]
fn client_that_sends_then_waits_before_fin_gets_the_reply() {
    let ports = Ports::new();
    let backend = EchoBackend::lines("one");
    let listen = ports.listener();
    let config = tcp_service(listen, &[backend.port], "");
    let Some(_gw) = Ringway::start(&config, &["--workers", "1"]) else {
        return;
    };
    let mut s = connect(listen);
    s.write_all(b"date\n").unwrap();
    thread::sleep(Duration::from_millis(300));
    s.shutdown(Shutdown::Write).unwrap();
    let (reply, _) = read_to_end(&mut s);
    assert_eq!(String::from_utf8_lossy(&reply), "one date\n");
}

#[test]
fn upstream_fin_reaches_the_client_which_can_still_send() {
    let ports = Ports::new();
    // The upstream says hello, closes its write side, and keeps reading.
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = upstream.local_addr().unwrap().port();
    let (got_tx, got_rx) = mpsc::channel();
    thread::spawn(move || {
        let (mut conn, _) = upstream.accept().unwrap();
        conn.write_all(b"hello\n").unwrap();
        conn.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        let _ = conn.read_to_end(&mut rest);
        let _ = got_tx.send(rest);
    });
    let listen = ports.listener();
    let config = tcp_service(listen, &[port], "");
    let Some(_gw) = Ringway::start(&config, &["--workers", "1"]) else {
        return;
    };
    let s = connect(listen);
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "hello\n");
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "the upstream FIN arrives as EOF");
    let mut s = s;
    s.write_all(b"still here\n").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let got = got_rx
        .recv_timeout(PATIENCE)
        .expect("upstream saw the client's bytes and FIN");
    assert_eq!(got, b"still here\n");
}
