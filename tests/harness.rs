//! The shared helpers of `tests/common` against real peers: what the other
//! tests take for granted about them is checked here.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream};

use common::{Binder, EchoBackend, Ports, Ringway, http, reservation, say, tcp_service};

/// What binding 127.0.0.1:`port` gives each kind of other binder while
/// the port is held: Ok, or the error kind.
fn others_binding(port: u16) -> Vec<(&'static str, Result<(), ErrorKind>)> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let plain = || {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        s.bind(&addr.into())?;
        s.listen(16)
    };
    let std_listener = || TcpListener::bind(addr).map(drop);
    let reuse_address = || {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        s.set_reuse_address(true)?;
        s.bind(&addr.into())?;
        s.listen(16)
    };
    vec![
        ("no option", plain().map_err(|e| e.kind())),
        ("std TcpListener", std_listener().map_err(|e| e.kind())),
        ("SO_REUSEADDR", reuse_address().map_err(|e| e.kind())),
    ]
}

#[test]
fn a_listener_reservation_refuses_other_binders_and_lets_ringway_serve_on_it() {
    let ports = Ports::new();
    let listen = ports.listener();
    for (binder, result) in others_binding(listen) {
        assert_eq!(
            result,
            Err(ErrorKind::AddrInUse),
            "{binder} bound a held port"
        );
    }
    // Nothing listens on it yet: a connection is refused, not queued.
    let refused = TcpStream::connect(("127.0.0.1", listen)).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);

    // ringway binds it (two workers: two SO_REUSEPORT sockets beside the
    // reservation) and every connection reaches ringway, none the
    // reservation.
    let echo = EchoBackend::lines("one");
    let config = tcp_service(listen, &[echo.port], "");
    let Some(_gw) = Ringway::start(&config, &["--workers", "2"]) else {
        return;
    };
    for i in 0..20 {
        assert_eq!(say(listen, &format!("x{i}")), format!("one x{i}"));
    }
    // Still held against everyone else while ringway serves.
    for (binder, result) in others_binding(listen) {
        assert_eq!(
            result,
            Err(ErrorKind::AddrInUse),
            "{binder} bound a held port"
        );
    }
}

#[test]
fn an_admin_reservation_refuses_plain_binders_and_lets_the_admin_endpoint_serve_on_it() {
    let ports = Ports::new();
    let (listen, admin) = (ports.listener(), ports.admin());
    let binders = others_binding(admin);
    assert_eq!(
        binders[0].1,
        Err(ErrorKind::AddrInUse),
        "a plain bind took it"
    );
    let echo = EchoBackend::lines("one");
    let config = tcp_service(listen, &[echo.port], "");
    let address = format!("127.0.0.1:{admin}");
    let Some(_gw) = Ringway::start(&config, &["--workers", "1", "--admin", &address]) else {
        return;
    };
    // Ringway::start waited for /ready: it answers 200 at once.
    assert_eq!(http(admin, "GET", "/ready"), (200, "ready\n".to_owned()));
    assert_eq!(say(listen, "x"), "one x");
}

#[test]
fn a_closed_reservation_refuses_connections_and_every_binder() {
    let ports = Ports::new();
    let closed = ports.closed();
    for (binder, result) in others_binding(closed) {
        assert_eq!(
            result,
            Err(ErrorKind::AddrInUse),
            "{binder} bound a held port"
        );
    }
    // Not even a binder with ringway's options.
    let ringway_like = || {
        let s = reservation(Binder::Listener, closed)?;
        s.set_reuse_address(true)?;
        s.listen(16)
    };
    assert_eq!(
        ringway_like().map_err(|e| e.kind()),
        Err(ErrorKind::AddrInUse)
    );
    let refused = TcpStream::connect(("127.0.0.1", closed)).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
}

#[test]
fn a_reservation_ends_with_its_ports() {
    let ports = Ports::new();
    let (listen, admin, closed) = (ports.listener(), ports.admin(), ports.closed());
    assert!(TcpListener::bind(("127.0.0.1", listen)).is_err());
    drop(ports);
    for port in [listen, admin, closed] {
        TcpListener::bind(("127.0.0.1", port)).unwrap();
    }
}
