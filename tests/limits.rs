//! Connection limits, load-balancing policies, descriptor exhaustion and
//! stopping on SIGTERM.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    Behavior, ConfigDir, EchoBackend, Gate, Ports, Ringway, connect, http, limit_descriptors,
    read_to_end, say, tcp_service, until,
};

fn echo(s: &TcpStream, line: &str) -> String {
    let mut w = s;
    w.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply).unwrap();
    reply.trim_end().to_owned()
}

/// The first word of each reply, counted.
fn split(replies: &[String]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for r in replies {
        *counts
            .entry(r.split(' ').next().unwrap_or("").to_owned())
            .or_default() += 1;
    }
    counts
}

#[test]
fn cluster_max_connections_fails_fast_beyond_the_limit() {
    let ports = Ports::new();
    let backend = EchoBackend::lines("one");
    let listen = ports.listener();
    let policy = "    connectionPool:\n      tcp:\n        maxConnections: 2\n";
    let config = tcp_service(listen, &[backend.port], policy);
    let Some(_gw) = Ringway::start(&config, &["--workers", "2"]) else {
        return;
    };
    let a = connect(listen);
    let b = connect(listen);
    assert_eq!(echo(&a, "a"), "one a");
    assert_eq!(echo(&b, "b"), "one b");
    let started = Instant::now();
    let mut c = connect(listen);
    let (data, _) = read_to_end(&mut c);
    assert!(data.is_empty(), "the third connection is closed (UO)");
    assert!(started.elapsed() < Duration::from_secs(1));
    drop(a);
    // Once one closes, there is room again.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let d = connect(listen);
        let mut w = &d;
        w.write_all(b"d\n").unwrap();
        let mut reply = String::new();
        if BufReader::new(&d)
            .read_line(&mut reply)
            .is_ok_and(|n| n > 0)
        {
            assert_eq!(reply, "one d\n");
            break;
        }
        assert!(Instant::now() < deadline, "no room after a close");
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(echo(&b, "b2"), "one b2");
}

#[test]
fn at_the_process_cap_new_clients_wait_in_the_backlog() {
    let ports = Ports::new();
    let backend = EchoBackend::lines("one");
    let listen = ports.listener();
    let config = tcp_service(listen, &[backend.port], "");
    let admin = ports.admin();
    let address = format!("127.0.0.1:{admin}");
    let args = [
        "--workers",
        "1",
        "--max-connections",
        "1",
        "--admin",
        &address,
    ];
    let Some(gw) = Ringway::start(&config, &args) else {
        return;
    };
    assert!(
        gw.logged("connection cap: --max-connections"),
        "{}",
        gw.log_text()
    );
    let a = connect(listen);
    assert_eq!(echo(&a, "a"), "one a");
    // The second client is not accepted (nor closed) while the first is open.
    let b = connect(listen);
    (&b).write_all(b"b\n").unwrap();
    b.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut reply = String::new();
    let waited = BufReader::new(&b).read_line(&mut reply);
    assert!(
        waited
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "{waited:?} {reply:?}"
    );
    assert_eq!(echo(&a, "a2"), "one a2");
    drop(a);
    // Once the first closes, the second is served.
    b.set_read_timeout(Some(common::PATIENCE)).unwrap();
    BufReader::new(&b).read_line(&mut reply).unwrap();
    assert_eq!(reply, "one b\n");
    let (_, metrics) = http(admin, "GET", "/metrics");
    assert!(
        metrics.contains("\nringway_downstream_cap_reached_total 2\n"),
        "{metrics}"
    );
    assert!(!metrics.contains("response_flags=\"UO\""), "{metrics}");
}

/// Two endpoints answering "one" and "two" under `policy`; 20 connections
/// held open at once; returns how many each got.
fn split_under(policy: &str) -> Option<BTreeMap<String, usize>> {
    let ports = Ports::new();
    let (e1, e2) = (EchoBackend::lines("one"), EchoBackend::lines("two"));
    let listen = ports.listener();
    let config = tcp_service(listen, &[e1.port, e2.port], policy);
    let _gw = Ringway::start(&config, &["--workers", "1"])?;
    let conns: Vec<TcpStream> = (0..20).map(|_| connect(listen)).collect();
    let replies: Vec<String> = conns.iter().map(|s| echo(s, "x")).collect();
    Some(split(&replies))
}

#[test]
fn least_request_spreads_open_connections_evenly() {
    let Some(counts) = split_under("") else {
        return;
    };
    assert_eq!(counts.get("one"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("two"), Some(&10), "{counts:?}");
}

#[test]
fn round_robin_alternates() {
    let Some(counts) = split_under("    loadBalancer:\n      simple: ROUND_ROBIN\n") else {
        return;
    };
    assert_eq!(
        (counts.get("one"), counts.get("two")),
        (Some(&10), Some(&10)),
        "{counts:?}"
    );
}

#[test]
fn random_uses_both_endpoints() {
    let Some(counts) = split_under("    loadBalancer:\n      simple: RANDOM\n") else {
        return;
    };
    assert_eq!(counts.values().sum::<usize>(), 20);
    assert_eq!(counts.len(), 2, "20 random draws hit both: {counts:?}");
}

#[test]
fn source_ip_hash_keeps_one_client_on_one_endpoint() {
    let policy = "    loadBalancer:\n      consistentHash:\n        useSourceIp: true\n";
    let Some(counts) = split_under(policy) else {
        return;
    };
    assert_eq!(counts.len(), 1, "{counts:?}");
    assert_eq!(counts.values().sum::<usize>(), 20);
}

/// CPU seconds the process used so far (utime + stime).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_comm.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// ringway with a hard (and so soft) open-file limit, one worker and an
/// access log, in front of an upstream that holds every connection until
/// its gate opens.
struct Starved {
    gw: Ringway,
    gate: Gate,
    backend: EchoBackend,
    listen: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

fn starved(nofile: u64, args: &[&str]) -> Option<Starved> {
    let ports = Ports::new();
    let gate = Gate::default();
    let backend = EchoBackend::start(Behavior::Gated("one".into(), gate.clone()));
    let listen = ports.listener();
    let config = tcp_service(listen, &[backend.port], "");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringway"));
    cmd.args(["run", "--workers", "1", "--admin", "off", "--access-log"])
        .arg(&log)
        .arg("-c")
        .arg(config.path())
        .args(args);
    limit_descriptors(&mut cmd, nofile);
    Some(Starved {
        gw: Ringway::spawn(cmd)?,
        gate,
        backend,
        listen,
        log,
        _dir: dir,
    })
}

/// CPU seconds ringway uses over `d`.
fn cpu_over(gw: &Ringway, d: Duration) -> f64 {
    let before = cpu_seconds(gw.pid());
    thread::sleep(d);
    cpu_seconds(gw.pid()) - before
}

/// `n` clients connected to `port`, each having sent one line.
fn queue_clients(port: u16, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            let s = connect(port);
            (&s).write_all(format!("c{i}\n").as_bytes()).unwrap();
            s
        })
        .collect()
}

/// Each client's reply, read in turn, each client closed once answered
/// (which frees its place for the clients queued behind it).
fn replies(clients: Vec<TcpStream>) -> Vec<String> {
    clients
        .into_iter()
        .map(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let (data, _) = read_to_end(&mut s);
            String::from_utf8_lossy(&data).trim_end().to_owned()
        })
        .collect()
}

/// Access-log lines per response flag (the field after the `0`).
fn flags(log: &Path) -> BTreeMap<String, usize> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        let flag = line.split(' ').nth(5).unwrap_or("?").to_owned();
        *counts.entry(flag).or_default() += 1;
    }
    counts
}

#[test]
fn short_of_descriptors_queued_clients_wait_and_are_all_served() {
    // 128 descriptors: a cap of 30 connections (budget.rs).
    let Some(t) = starved(128, &[]) else {
        return;
    };
    assert!(
        t.gw.logged("connection cap: derived from the open-file limit 128"),
        "{}",
        t.gw.log_text()
    );
    let clients = queue_clients(t.listen, 300);
    until("the cap's worth of connections upstream", || {
        t.backend.accepted.load(Ordering::Relaxed) >= 30
    });
    // The upstream holds them; the rest wait in the backlog, not reset, and
    // ringway does not spin.
    let used = cpu_over(&t.gw, Duration::from_millis(1500));
    assert!(used < 0.3, "ringway used {used} CPU-s while at its cap");
    assert_eq!(t.backend.accepted.load(Ordering::Relaxed), 30);
    assert!(t.gw.open_fds() < 128, "{} descriptors", t.gw.open_fds());
    assert!(
        !t.gw.logged("out of file descriptors"),
        "{}",
        t.gw.log_text()
    );
    t.gate.open();
    let replies = replies(clients);
    let served = replies
        .iter()
        .enumerate()
        .filter(|(i, r)| **r == format!("one c{i}"))
        .count();
    assert_eq!(served, 300, "{:?}", &replies);
    until("300 access-log lines", || {
        flags(&t.log).values().sum::<usize>() == 300
    });
    assert_eq!(flags(&t.log).get("-"), Some(&300), "{:?}", flags(&t.log));
}

#[test]
fn an_explicit_cap_beyond_the_descriptors_closes_as_om_not_uf_and_recovers() {
    let Some(t) = starved(64, &["--max-connections", "1000"]) else {
        return;
    };
    assert!(t.gw.logged("raise LimitNOFILE"), "{}", t.gw.log_text());
    let clients = queue_clients(t.listen, 60);
    thread::sleep(Duration::from_millis(500));
    let used = cpu_over(&t.gw, Duration::from_secs(2));
    assert!(
        used < 0.5,
        "ringway spun at {used} CPU-s over 2 s with no descriptors"
    );
    let warnings = t
        .gw
        .log_text()
        .lines()
        .filter(|l| {
            l.contains("out of file descriptors") || l.contains("cannot open an upstream socket")
        })
        .count();
    assert!(
        (1..=6).contains(&warnings),
        "{warnings} EMFILE warnings in ~2.5 s"
    );
    t.gate.open();
    let replies = replies(clients);
    let served = replies.iter().filter(|r| r.starts_with("one c")).count();
    until("60 access-log lines", || {
        flags(&t.log).values().sum::<usize>() == 60
    });
    let counts = flags(&t.log);
    // Those ringway had no descriptor for are its own failure, not the upstream's.
    assert_eq!(counts.get("UF"), None, "{counts:?}");
    assert_eq!(counts.get("-"), Some(&served), "{counts:?}");
    assert_eq!(
        counts.get("OM").copied().unwrap_or(0),
        60 - served,
        "{counts:?}"
    );
    // Descriptors are back: new connections are served again.
    assert_eq!(say(t.listen, "back"), "one back");
}

#[test]
fn sigterm_stops_cleanly_with_connections_open() {
    let ports = Ports::new();
    let backend = EchoBackend::lines("one");
    let listen = ports.listener();
    let config = tcp_service(listen, &[backend.port], "");
    let Some(gw) = Ringway::start(&config, &["--workers", "2", "--drain-timeout", "200ms"]) else {
        return;
    };
    let open = connect(listen);
    assert_eq!(echo(&open, "hi"), "one hi");
    assert_eq!(say(listen, "again"), "one again");
    let status = gw.terminate();
    assert!(status.success(), "exit status {status}");
    let mut open = open;
    let (_, _) = read_to_end(&mut open);
}

#[test]
fn invalid_configuration_prints_every_error_and_exits_non_zero() {
    let config = ConfigDir::new().file(
        "bad.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: vs\nspec:\n  hosts: [\"*\"]\n  gateways: [gw]\n  tcp:\n  - route:\n    - destination:\n        host: nowhere\n        port:\n          number: 1\n        subsett: v1\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_ringway"))
        .args(["run", "-c"])
        .arg(config.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.yaml"), "{stderr}");
    assert!(stderr.contains("subsett"), "{stderr}");
}

/// The keepalive timer of ringway's upstream socket towards `port`, from
/// /proc/net/tcp: (timer kind, clock ticks until it fires).
fn upstream_timer(port: u16) -> Option<(u32, u64)> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let remote_port = u16::from_str_radix(f[2].rsplit(':').next()?, 16).ok()?;
        if remote_port != port || f[3] != "01" {
            return None;
        }
        let (kind, when) = f[5].split_once(':')?;
        Some((
            u32::from_str_radix(kind, 16).ok()?,
            u64::from_str_radix(when, 16).ok()?,
        ))
    })
}

#[test]
fn tcp_keepalive_is_set_on_the_upstream_socket() {
    let ports = Ports::new();
    let backend = EchoBackend::lines("one");
    let listen = ports.listener();
    let policy = "    connectionPool:\n      tcp:\n        tcpKeepalive:\n          time: 30s\n          interval: 5s\n          probes: 3\n";
    let config = tcp_service(listen, &[backend.port], policy);
    let Some(_gw) = Ringway::start(&config, &["--workers", "1"]) else {
        return;
    };
    let s = connect(listen);
    assert_eq!(echo(&s, "k"), "one k");
    let (kind, when) = upstream_timer(backend.port).expect("ringway's upstream socket");
    assert_eq!(kind, 2, "keepalive timer armed");
    assert!(
        (2000..=3000).contains(&when),
        "fires in {when} ticks, want about 30 s"
    );
}
