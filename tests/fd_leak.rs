//! Connections of every fate leave no descriptor behind: normal, retried
//! past a refusing endpoint, reset by the client, half-closed, reset by the
//! upstream.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener};
use std::thread;
use std::time::{Duration, Instant};

use common::{EchoBackend, Ports, Ringway, connect, read_to_end, tcp_service};

/// An upstream that resets every connection after reading a little.
fn resetting_upstream() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    thread::spawn(move || {
        for conn in l.incoming().flatten() {
            let mut buf = [0u8; 4];
            let mut c = conn;
            let _ = c.read(&mut buf);
            socket2::SockRef::from(&c)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(c);
        }
    });
    port
}

#[test]
fn no_descriptor_outlives_its_connection() {
    let ports = Ports::new();
    let echo = EchoBackend::raw();
    let refusing = ports.closed();
    let listen = ports.listener();
    let policy = "    loadBalancer:\n      simple: ROUND_ROBIN\n";
    let config = tcp_service(listen, &[refusing, echo.port], policy);
    let Some(gw) = Ringway::start(&config, &["--workers", "2"]) else {
        return;
    };
    let resetting = resetting_upstream();
    let listen2 = ports.listener();
    let config2 = tcp_service(listen2, &[resetting], "");
    let Some(gw2) = Ringway::start(&config2, &["--workers", "1"]) else {
        return;
    };
    let (base, base2) = (gw.open_fds(), gw2.open_fds());

    for i in 0..100 {
        let mut s = connect(listen);
        match i % 3 {
            // Normal: a round trip, then a half-close.
            0 => {
                s.write_all(b"hello").unwrap();
                let mut buf = [0u8; 5];
                s.read_exact(&mut buf).unwrap();
                s.shutdown(Shutdown::Write).unwrap();
                let _ = read_to_end(&mut s);
            }
            // The client resets mid-stream.
            1 => {
                s.write_all(&[1u8; 100_000]).unwrap();
                socket2::SockRef::from(&s)
                    .set_linger(Some(Duration::ZERO))
                    .unwrap();
                drop(s);
            }
            // The client vanishes without reading.
            _ => {
                s.write_all(b"bye").unwrap();
                drop(s);
            }
        }
    }
    for _ in 0..30 {
        let mut s = connect(listen2);
        let _ = s.write_all(b"data");
        let _ = read_to_end(&mut s);
    }
    // One more round trip: ringway has accepted everything before it.
    let mut last = connect(listen);
    last.write_all(b"last").unwrap();
    let mut buf = [0u8; 4];
    last.read_exact(&mut buf).unwrap();
    assert!(
        gw.open_fds() > base,
        "the open connection holds descriptors"
    );
    drop(last);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut stable = 0;
    loop {
        let (now, now2) = (gw.open_fds(), gw2.open_fds());
        stable = if now == base && now2 == base2 {
            stable + 1
        } else {
            0
        };
        if stable == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "descriptors: {base} -> {now} and {base2} -> {now2} after every connection closed"
        );
        thread::sleep(Duration::from_millis(100));
    }
}
