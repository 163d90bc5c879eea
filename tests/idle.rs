//! Idle connections cost no kernel thread and no pipe; many concurrent
//! connections all get through.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::{EchoBackend, PATIENCE, Ports, Ringway, connect, tcp_service};

fn echo_line(s: &TcpStream, line: &str) -> String {
    let mut w = s;
    w.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply).unwrap();
    reply
}

fn idle_connections_hold_no_thread_and_no_pipe(splice_after: &str) {
    let ports = Ports::new();
    let backend = EchoBackend::lines("one");
    let listen = ports.listener();
    let config = tcp_service(listen, &[backend.port], "");
    let Some(gw) = Ringway::start(&config, &["--workers", "2", "--splice-after", splice_after])
    else {
        return;
    };
    let pipes_at_start = gw.pipes();
    let conns: Vec<TcpStream> = (0..1000).map(|_| connect(listen)).collect();
    // Every connection is through to the backend (so its recvs or polls are armed).
    let deadline = Instant::now() + PATIENCE;
    while backend.accepted.load(std::sync::atomic::Ordering::Relaxed) < 1000 {
        assert!(
            Instant::now() < deadline,
            "{} of 1000 connections reached the backend",
            backend.accepted.load(std::sync::atomic::Ordering::Relaxed)
        );
        thread::sleep(Duration::from_millis(20));
    }
    // One round trip on a few, then everything idles.
    for s in conns.iter().step_by(100) {
        assert_eq!(echo_line(s, "ping"), "one ping\n");
    }
    // Long enough for pooled pipes to be closed after their last use.
    thread::sleep(Duration::from_millis(2500));
    let threads = gw.threads();
    let iou = threads.iter().filter(|t| t.starts_with("iou-wrk")).count();
    assert_eq!(
        iou, 0,
        "io-wq threads with 1,000 idle connections: {threads:?}"
    );
    assert_eq!(gw.pipes(), pipes_at_start, "pipes held by idle connections");
    // And they all still work.
    for s in conns.iter().step_by(50) {
        assert_eq!(echo_line(s, "pong"), "one pong\n");
    }
}

#[test]
fn a_thousand_idle_connections_create_no_io_wq_thread_and_hold_no_pipe() {
    idle_connections_hold_no_thread_and_no_pipe("262144");
}

#[test]
fn a_thousand_idle_connections_on_the_splice_path_create_no_io_wq_thread() {
    idle_connections_hold_no_thread_and_no_pipe("0");
}

#[test]
fn two_thousand_concurrent_connections_all_echo() {
    let ports = Ports::new();
    let backend = EchoBackend::lines("one");
    let listen = ports.listener();
    let config = tcp_service(listen, &[backend.port], "");
    let Some(_gw) = Ringway::start(&config, &[]) else {
        return;
    };
    let conns: Vec<TcpStream> = (0..2000).map(|_| connect(listen)).collect();
    let chunks: Vec<Vec<TcpStream>> = {
        let mut it = conns.into_iter();
        (0..8).map(|_| it.by_ref().take(250).collect()).collect()
    };
    let workers: Vec<_> = chunks
        .into_iter()
        .enumerate()
        .map(|(k, chunk)| {
            thread::spawn(move || {
                for (i, s) in chunk.iter().enumerate() {
                    let line = format!("c{k}-{i}");
                    assert_eq!(echo_line(s, &line), format!("one {line}\n"));
                }
                chunk.len()
            })
        })
        .collect();
    let total: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(total, 2000);
}

/// The most a round trip through the gateway to an echo backend can hold
/// before the client's writes must block: four sockets (client, gateway
/// downstream and upstream, backend), each with a receive and a send buffer
/// that autotune up to `tcp_rmem`/`tcp_wmem`'s maximum, plus two 1 MiB pipes
/// and slack for the backend's own buffer.
fn buffered_bound() -> usize {
    let max = |file: &str| -> usize {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/{file}"))
            .ok()
            .and_then(|t| t.split_whitespace().nth(2)?.parse().ok())
            .unwrap_or(8 << 20)
    };
    4 * (max("tcp_rmem") + max("tcp_wmem")) + (8 << 20)
}

/// A client that sends but never reads: every buffer on the way fills up,
/// and still no kernel thread is parked on its behalf.
fn a_client_that_never_reads_parks_no_io_wq_thread(splice_after: &str) {
    let ports = Ports::new();
    let echo = common::EchoBackend::raw();
    let listen = ports.listener();
    let config = tcp_service(listen, &[echo.port], "");
    let Some(gw) = Ringway::start(&config, &["--workers", "1", "--splice-after", splice_after])
    else {
        return;
    };
    let clients: Vec<TcpStream> = (0..4).map(|_| connect(listen)).collect();
    let cap = buffered_bound();
    let writers: Vec<_> = clients
        .iter()
        .map(|c| {
            let mut w = c.try_clone().unwrap();
            w.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
            thread::spawn(move || {
                let chunk = vec![7u8; 64 * 1024];
                let mut sent = 0usize;
                while sent < cap {
                    if w.write_all(&chunk).is_err() {
                        break;
                    }
                    sent += chunk.len();
                }
                sent
            })
        })
        .collect();
    for w in writers {
        let sent = w.join().unwrap();
        assert!(
            sent < cap,
            "backpressure never reached the client ({sent} bytes sent)"
        );
    }
    let threads = gw.threads();
    let iou = threads.iter().filter(|t| t.starts_with("iou-wrk")).count();
    assert_eq!(iou, 0, "io-wq threads while sinks are full: {threads:?}");
    // The gateway still serves others.
    let s = connect(listen);
    let mut w = &s;
    w.write_all(b"ping").unwrap();
    w.flush().unwrap();
    let mut buf = [0u8; 4];
    std::io::Read::read_exact(&mut &s, &mut buf).unwrap();
    assert_eq!(&buf, b"ping");
}

#[test]
fn a_client_that_never_reads_parks_no_io_wq_thread_on_the_copy_path() {
    a_client_that_never_reads_parks_no_io_wq_thread("never");
}

#[test]
fn a_client_that_never_reads_parks_no_io_wq_thread_on_the_splice_path() {
    a_client_that_never_reads_parks_no_io_wq_thread("0");
}
