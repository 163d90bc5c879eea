//! The admin endpoint under abuse: out of descriptors, thousands of idle
//! connections, huge heads and URLs, a client that does not read, a reload
//! stuck in DNS, and an address reachable from the network. Probes
//! (`/ready`, `/healthz`) must keep answering through all of it.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::dns::SilentResolver;
use common::{
    ConfigDir, EchoBackend, PATIENCE, Ports, Ringway, connect, http, http_within,
    limit_descriptors, ringway_bin, tcp_service, until, yaml,
};

/// How long a probe may take on a busy, shared machine. Generous on
/// purpose: these tests are about never blocking, not about speed.
const PROMPTLY: Duration = Duration::from_secs(2);

fn admin_args(admin: u16) -> Vec<String> {
    ["--workers", "1", "--admin", &format!("127.0.0.1:{admin}")]
        .map(String::from)
        .to_vec()
}

fn start(config: &ConfigDir, args: &[String]) -> Option<Ringway> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Ringway::start(config, &args)
}

/// ringway (one worker) serving a TCP service, its admin endpoint ready.
struct Served {
    gw: Ringway,
    admin: u16,
    _backend: EchoBackend,
    _config: ConfigDir,
}

fn serve() -> Option<Served> {
    let ports = Ports::new();
    let backend = EchoBackend::lines("one");
    let (listen, admin) = (ports.listener(), ports.admin());
    let config = tcp_service(listen, &[backend.port], "");
    let gw = start(&config, &admin_args(admin))?;
    ready_promptly(admin);
    Some(Served {
        gw,
        admin,
        _backend: backend,
        _config: config,
    })
}

/// `/ready` answered 200 within [`PROMPTLY`].
fn ready_promptly(admin: u16) {
    let started = Instant::now();
    let answer = http_within(admin, "GET", "/ready", PROMPTLY);
    assert_eq!(
        answer.as_ref().map(|(status, _)| *status),
        Some(200),
        "/ready after {:?}: {answer:?}",
        started.elapsed()
    );
}

/// Raise this test process's soft descriptor limit to its hard limit (it
/// holds thousands of connections).
fn raise_own_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a struct we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
}

/// Resident memory of `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn the_admin_port_comes_back_after_running_out_of_descriptors() {
    let ports = Ports::new();
    let backend = EchoBackend::lines("one");
    let (listen, admin) = (ports.listener(), ports.admin());
    let config = tcp_service(listen, &[backend.port], "");
    let mut cmd = Command::new(ringway_bin());
    cmd.arg("run").arg("-c").arg(config.path());
    cmd.args(admin_args(admin));
    // The connection cap ringway derives from 64 descriptors would keep the
    // data plane from ever running out: an explicit cap above what the
    // descriptors allow lets it (as an operator's mistake would).
    cmd.args(["--max-connections", "1000"]);
    limit_descriptors(&mut cmd, 64);
    let Some(gw) = Ringway::spawn(cmd) else {
        return;
    };
    ready_promptly(admin);
    // Each connection costs ringway two descriptors: 60 exhaust 64.
    let held: Vec<TcpStream> = (0..60).map(|_| connect(listen)).collect();
    until("ringway to run out of descriptors", || gw.open_fds() >= 63);
    // Admin requests while no descriptor is free: they wait in the queue.
    for path in ["/ready", "/metrics"] {
        let _ = http_within(admin, "GET", path, Duration::from_millis(300));
    }
    drop(held);
    until("/ready to answer again", || {
        http_within(admin, "GET", "/ready", PROMPTLY).is_some_and(|(s, _)| s == 200)
    });
    let (status, metrics) = http(admin, "GET", "/metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("ringway_config_generation 1"), "{metrics}");
}

#[test]
fn thousands_of_idle_admin_connections_take_no_thread_and_a_bounded_number_of_descriptors() {
    raise_own_nofile_limit();
    let Some(served) = serve() else {
        return;
    };
    let (gw, admin) = (&served.gw, served.admin);
    let (threads, fds) = (gw.threads().len(), gw.open_fds());
    let target: SocketAddr = ([127, 0, 0, 1], admin).into();
    // Half of them send nothing, half the start of a head and no more.
    let idle: Vec<TcpStream> = (0..2000)
        .filter_map(|i| {
            let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(1)).ok()?;
            if i % 2 == 1 {
                let _ = s.write_all(b"GET /ready HTTP/1.1\r\nHost: x\r\nX-Slow: ");
            }
            Some(s)
        })
        .collect();
    assert!(idle.len() >= 1900, "only {} connected", idle.len());
    ready_promptly(admin);
    let (now_threads, now_fds) = (gw.threads().len(), gw.open_fds());
    // The blocking pool may have started a thread or two; nothing per
    // connection.
    assert!(
        now_threads <= threads + 2,
        "{threads} threads before, {now_threads} with {} idle connections",
        idle.len()
    );
    // At most the connection cap (64), whatever the number of clients.
    assert!(
        now_fds <= fds + 80,
        "{fds} descriptors before, {now_fds} with {} idle connections",
        idle.len()
    );
    assert_eq!(http(admin, "GET", "/healthz").0, 200);
}

/// Writes `head` (up to its end, or until the server stops reading), then
/// reads the answer: its status, or `None` when the connection was closed
/// without one.
fn send_head(admin: u16, head: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", admin)).unwrap();
    s.set_write_timeout(Some(PATIENCE)).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    for piece in head.chunks(64 * 1024) {
        if s.write_all(piece).is_err() {
            break;
        }
    }
    let mut text = Vec::new();
    let _ = s.read_to_end(&mut text);
    String::from_utf8_lossy(&text)
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
}

#[test]
fn huge_heads_and_urls_are_refused_and_memory_stays_bounded() {
    let Some(served) = serve() else {
        return;
    };
    let (gw, admin) = (&served.gw, served.admin);
    let before = rss_kib(gw.pid());

    // 64 MiB of headers on one connection.
    let mut head = b"GET /ready HTTP/1.1\r\nHost: x\r\n".to_vec();
    let line = format!("X-Filler: {}\r\n", "f".repeat(1000));
    while head.len() < 64 << 20 {
        head.extend_from_slice(line.as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    let status = send_head(admin, &head);
    assert!(matches!(status, None | Some(431)), "{status:?}");

    // A 1 MiB URL, and one just over the limit (8 KiB).
    let url = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "u".repeat(1 << 20));
    let status = send_head(admin, url.as_bytes());
    assert!(matches!(status, None | Some(414 | 431)), "{status:?}");
    let url = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "u".repeat(9 * 1024));
    assert_eq!(send_head(admin, url.as_bytes()), Some(414));

    let after = rss_kib(gw.pid());
    assert!(
        after < before + 32 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    ready_promptly(admin);
}

#[test]
fn a_client_that_does_not_read_its_config_dump_does_not_delay_ready() {
    let ports = Ports::new();
    // 20,000 endpoints: a /config_dump of several MiB, more than the
    // socket buffers of a client that does not read can hold.
    let listen = ports.listener();
    let admin = ports.admin();
    let endpoints: Vec<(u16, &str)> = (1..=20_000).map(|p| (p as u16, "v1")).collect();
    let text = yaml::join(&[
        yaml::gateway(&[listen], &[]),
        yaml::virtual_service("tcp", &yaml::tcp_route(&[("v1", 100)])),
        yaml::destination_rule("", &["v1"]),
        yaml::service_entry(&endpoints),
    ]);
    let config = ConfigDir::new().file("svc.yaml", &text);
    let Some(_gw) = start(&config, &admin_args(admin)) else {
        return;
    };
    let (status, dump) = http(admin, "GET", "/config_dump");
    assert_eq!(status, 200);
    assert!(
        dump.len() > 6 << 20,
        "the dump is only {} bytes",
        dump.len()
    );

    // Ask for it again with a small receive window, and never read.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let target: SocketAddr = ([127, 0, 0, 1], admin).into();
    socket.connect(&target.into()).unwrap();
    let mut stalled: TcpStream = socket.into();
    stalled
        .write_all(b"GET /config_dump HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    // Give the server time to fill the socket buffers and block.
    thread::sleep(Duration::from_millis(500));
    ready_promptly(admin);
    assert_eq!(
        http_within(admin, "GET", "/healthz", PROMPTLY).map(|a| a.0),
        Some(200)
    );
    drop(stalled);
}

/// TCP service `svc` on `listen` as in [`tcp_service`], plus a ServiceEntry
/// `stuck` whose endpoint is a host name (resolution DNS) and a route on
/// `dns_listen` to it.
fn with_a_dns_service(listen: u16, backend: u16, dns_listen: u16) -> String {
    let svc = std::fs::read_to_string(tcp_service(listen, &[backend], "").path().join("svc.yaml"))
        .unwrap();
    let stuck = format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: gw-stuck\nspec:\n  selector:\n    istio: ingressgateway\n  servers:\n  - port:\n      number: {dns_listen}\n      name: tcp-stuck\n      protocol: TCP\n    hosts:\n    - \"*\"\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: stuck\nspec:\n  hosts:\n  - \"*\"\n  gateways:\n  - gw-stuck\n  tcp:\n  - route:\n    - destination:\n        host: stuck.ringway.test\n        port:\n          number: 9000\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: stuck\nspec:\n  hosts:\n  - stuck.ringway.test\n  resolution: DNS\n  ports:\n  - number: 9000\n    name: tcp\n    protocol: TCP\n  endpoints:\n  - address: stuck.ringway.test\n"
    );
    yaml::join(&[svc, stuck])
}

#[test]
fn a_reload_stuck_in_dns_does_not_block_ready_or_healthz() {
    let ports = Ports::new();
    // The resolver never answers.
    let Some(resolver) = SilentResolver::start(5) else {
        return;
    };
    let backend = EchoBackend::lines("one");
    let (listen, dns_listen, admin) = (ports.listener(), ports.listener(), ports.admin());
    let config = tcp_service(listen, &[backend.port], "");
    let mut cmd = resolver.command(&ringway_bin());
    cmd.arg("run").arg("-c").arg(config.path());
    cmd.args(admin_args(admin));
    let Some(_gw) = Ringway::spawn(cmd) else {
        return;
    };
    ready_promptly(admin);
    std::fs::write(
        config.path().join("svc.yaml"),
        with_a_dns_service(listen, backend.port, dns_listen),
    )
    .unwrap();
    let reload = thread::spawn(move || {
        let started = Instant::now();
        let answer = http(admin, "POST", "/reload");
        (answer, started.elapsed())
    });
    until("the reload to ask the resolver", || resolver.queries() > 0);
    // A reload waits up to 2 s for the resolver (resolve.rs); a Kubernetes
    // probe gives up after 1 s by default.
    for path in ["/healthz", "/ready", "/metrics"] {
        let started = Instant::now();
        let answer = http_within(admin, "GET", path, Duration::from_secs(1));
        assert_eq!(
            answer.as_ref().map(|a| a.0),
            Some(200),
            "{path} while a reload waits for DNS, after {:?}: {answer:?}",
            started.elapsed()
        );
    }
    assert!(
        !reload.is_finished(),
        "the reload answered before the probes: the test proves nothing"
    );
    let ((status, body), took) = reload.join().unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(took >= Duration::from_secs(1), "{took:?}");
}

#[test]
fn a_removed_port_refuses_connections_as_soon_as_the_reload_has_answered() {
    let ports = Ports::new();
    let backend = EchoBackend::lines("one");
    let (a, b, admin) = (ports.listener(), ports.listener(), ports.admin());
    let both = tcp_service(a, &[backend.port], "");
    let text = |ports: &[u16]| {
        yaml::join(&[
            yaml::gateway(ports, &[]),
            yaml::virtual_service("tcp", &yaml::tcp_route(&[("v1", 100)])),
            yaml::destination_rule("", &["v1"]),
            yaml::service_entry(&[(backend.port, "v1")]),
        ])
    };
    let file = both.path().join("svc.yaml");
    std::fs::write(&file, text(&[a, b])).unwrap();
    let address = format!("127.0.0.1:{admin}");
    let Some(_gw) = Ringway::start(&both, &["--workers", "2", "--admin", &address]) else {
        return;
    };
    for round in 0..20 {
        std::fs::write(&file, text(&[a])).unwrap();
        let (status, body) = http(admin, "POST", "/reload");
        assert_eq!(status, 200, "{body}");
        assert!(
            TcpStream::connect(("127.0.0.1", b)).is_err(),
            "round {round}: the removed port still accepts after the reload answered"
        );
        std::fs::write(&file, text(&[a, b])).unwrap();
        let (status, body) = http(admin, "POST", "/reload");
        assert_eq!(status, 200, "{body}");
        assert!(
            TcpStream::connect(("127.0.0.1", b)).is_ok(),
            "round {round}: the added port refuses after the reload answered"
        );
    }
}

#[test]
fn an_admin_address_reachable_from_the_network_needs_admin_expose() {
    let ports = Ports::new();
    let backend = EchoBackend::lines("one");
    let (listen, admin) = (ports.listener(), ports.admin());
    let config = tcp_service(listen, &[backend.port], "");
    let exposed = format!("0.0.0.0:{admin}");
    let mut child = Command::new(ringway_bin())
        .arg("run")
        .arg("-c")
        .arg(config.path())
        .args(["--workers", "1", "--admin", &exposed])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ringway serves the admin endpoint on {exposed} without --admin-expose");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success(), "{status}: {stderr}");
    assert!(stderr.contains("--admin-expose"), "{stderr}");

    let Some(gw) = Ringway::start(
        &config,
        &["--workers", "1", "--admin", &exposed, "--admin-expose"],
    ) else {
        return;
    };
    assert!(gw.logged("reachable from the network"), "{}", gw.log_text());
    ready_promptly(admin);
}
