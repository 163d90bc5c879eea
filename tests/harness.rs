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

#[test]
fn the_origin_records_heads_and_counts_keep_alive_reuse_through_ringway() {
    use common::origin::{Framing, Origin, Response, read_response};
    use std::io::{BufReader, Write};
    let ports = Ports::new();
    let origin = Origin::start(|request| match request.target.as_str() {
        "/chunked" => Response::ok("two chunks joined").framing(Framing::Chunked),
        "/gone" => Response::status(404, "no such thing\n").header("X-Origin", "test"),
        "/last" => Response::ok("until EOF").framing(Framing::Close),
        _ => Response::ok(format!("{} {}\n", request.method, request.target)),
    });
    let listen = ports.listener();
    let config = tcp_service(listen, &[origin.port], "");
    let Some(_gw) = Ringway::start(&config, &["--workers", "1"]) else {
        return;
    };

    // Connection 1: three requests, the first two pipelined in one write,
    // the second with a body.
    let mut s = common::connect(listen);
    s.write_all(
        b"GET /a HTTP/1.1\r\nHost: svc\r\nX-Test: one\r\n\r\n\
          POST /b HTTP/1.1\r\nHost: svc\r\nContent-Length: 3\r\n\r\nxyz",
    )
    .unwrap();
    let mut read = BufReader::new(s.try_clone().unwrap());
    let a = read_response(&mut read).unwrap().unwrap();
    assert_eq!((a.status, a.body.as_slice()), (200, &b"GET /a\n"[..]));
    let b = read_response(&mut read).unwrap().unwrap();
    assert_eq!((b.status, b.body.as_slice()), (200, &b"POST /b\n"[..]));
    s.write_all(b"GET /chunked HTTP/1.1\r\nHost: svc\r\n\r\n")
        .unwrap();
    let c = read_response(&mut read).unwrap().unwrap();
    assert_eq!(c.header("transfer-encoding"), Some("chunked"));
    assert_eq!(c.body, b"two chunks joined");
    // Connection 2: asks to close; the origin says so and closes.
    let mut s2 = common::connect(listen);
    s2.write_all(b"GET /gone HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut read2 = BufReader::new(s2.try_clone().unwrap());
    let gone = read_response(&mut read2).unwrap().unwrap();
    assert_eq!(gone.status, 404);
    assert_eq!(gone.header("connection"), Some("close"));
    assert_eq!(gone.header("x-origin"), Some("test"));
    assert_eq!(read_response(&mut read2).unwrap(), None, "closed after");
    // Connection 1 again: a close-delimited response ends it.
    s.write_all(b"GET /last HTTP/1.1\r\nHost: svc\r\n\r\n")
        .unwrap();
    let last = read_response(&mut read).unwrap().unwrap();
    assert_eq!(last.body, b"until EOF");

    assert_eq!(origin.connections(), 2);
    assert_eq!(origin.requests_per_connection(), vec![4, 1]);
    let requests = origin.requests();
    let seen: Vec<_> = requests
        .iter()
        .map(|r| {
            (
                r.method.as_str(),
                r.target.as_str(),
                r.connection,
                r.sequence,
            )
        })
        .collect();
    // Connection 2's request may be read before connection 1's third.
    let mut expected = vec![
        ("GET", "/a", 0, 0),
        ("POST", "/b", 0, 1),
        ("GET", "/chunked", 0, 2),
        ("GET", "/gone", 1, 0),
        ("GET", "/last", 0, 3),
    ];
    let mut sorted = seen.clone();
    sorted.sort_by_key(|r| (r.2, r.3));
    expected.sort_by_key(|r| (r.2, r.3));
    assert_eq!(sorted, expected, "{requests:?}");
    let first = &requests[0];
    assert_eq!(first.version, "HTTP/1.1");
    assert_eq!(
        first.headers,
        vec![
            ("Host".to_owned(), "svc".to_owned()),
            ("X-Test".to_owned(), "one".to_owned())
        ]
    );
    assert_eq!(first.header("x-test"), Some("one"));
    let post = requests.iter().find(|r| r.method == "POST").unwrap();
    assert_eq!(post.body, b"xyz");
}

#[test]
fn the_tls_client_verifies_openssl_s_server_through_sni_routing() {
    use common::tls::{OpensslServer, TestCa, chat, connect, tls_error};
    let ports = Ports::new();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("ringway test CA");
    let a = ca.leaf(&["a.ringway.test"]).write(&ca, dir.path(), "a");
    let b = ca.leaf(&["b.ringway.test"]).write(&ca, dir.path(), "b");
    // The PEM files as openssl reads them: each leaf chains to the CA.
    for files in [&a, &b] {
        let out = std::process::Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(&files.ca)
            .arg(&files.cert)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let Some(server) = OpensslServer::start(ports.admin(), &a, "b.ringway.test", &b) else {
        return;
    };
    let trusting = ca.client_config();

    // Straight to s_server: SNI b gets b's certificate, SNI a gets a's.
    for sni in ["a.ringway.test", "b.ringway.test"] {
        let mut tls = connect(server.port, sni, &trusting).unwrap();
        assert_eq!(chat(&mut tls, "hello").unwrap(), "olleh", "{sni}");
    }
    // The client verifies: a name the certificate does not carry, or a CA
    // it does not trust, fails the handshake.
    let wrong_name = connect(server.port, "c.ringway.test", &trusting).unwrap_err();
    assert!(
        matches!(
            tls_error(&wrong_name),
            Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                    | rustls::CertificateError::NotValidForNameContext { .. }
            ))
        ),
        "{wrong_name:?}"
    );
    let stranger = TestCa::new("another CA").client_config();
    let untrusted = connect(server.port, "a.ringway.test", &stranger).unwrap_err();
    assert!(
        matches!(
            tls_error(&untrusted),
            Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer
            ))
        ),
        "{untrusted:?}"
    );

    // Through ringway's TLS passthrough, routed by SNI: the client still
    // verifies s_server's certificate for the name it asked for.
    let listen = ports.listener();
    let text = common::yaml::join(&[
        common::yaml::gateway(&[], &[listen]),
        common::yaml::virtual_service("tls", &common::yaml::tls_route("b.ringway.test", "v1")),
        common::yaml::destination_rule("", &["v1"]),
        common::yaml::service_entry(&[(server.port, "v1")]),
    ]);
    let config = common::ConfigDir::new().file("svc.yaml", &text);
    let Some(_gw) = Ringway::start(&config, &["--workers", "1"]) else {
        return;
    };
    let mut tls = connect(listen, "b.ringway.test", &trusting).unwrap();
    assert_eq!(
        chat(&mut tls, "through ringway").unwrap(),
        "yawgnir hguorht"
    );
    // No route for a.ringway.test on this listener: closed before any
    // certificate.
    let refused = connect(listen, "a.ringway.test", &trusting).unwrap_err();
    assert!(tls_error(&refused).is_none(), "{refused:?}");
}

/// The etcd harness (issue 14's tests stand on it): a real three-member
/// cluster on 127.0.0.1 answers through any member, keeps answering with
/// its leader killed, and takes the member back on its data.
#[test]
fn a_three_member_etcd_cluster_survives_its_leader_and_takes_it_back() {
    let ports = Ports::new();
    let mut etcd = common::etcd::Etcd::start(&ports, 3);
    let put = etcd.etcdctl(&["put", "/ringway/v1/commit", "1"]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let leader = etcd.leader().expect("a leader");
    etcd.kill(leader);
    // A new leader is elected among the two left, and writes go on.
    common::until("a new etcd leader", || {
        etcd.leader().is_some_and(|l| l != leader)
    });
    let put = etcd.etcdctl(&["put", "/ringway/v1/commit", "2"]);
    assert!(
        put.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&put.stderr),
        etcd.logs()
    );
    etcd.restart(leader);
    // The restarted member catches up with the write it missed and
    // serves it from its own copy (a serializable read).
    let port = etcd.client_port(leader);
    let read = || {
        let get = std::process::Command::new("/usr/bin/etcdctl")
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &format!("127.0.0.1:{port}"),
                "get",
                "--print-value-only",
            ])
            .args(["--consistency", "s", "/ringway/v1/commit"])
            .output()
            .expect("etcdctl");
        String::from_utf8_lossy(&get.stdout).trim().to_owned()
    };
    common::until("the restarted member to serve the write it missed", || {
        read() == "2"
    });
}
