//! Signals (SPEC §2, issue 9): SIGHUP, SIGTERM, SIGINT and SIGUSR1 are
//! taken by the supervisor alone, in every state: a second signal that
//! arrives while a reload is running (logrotate's SIGUSR1, a SIGTERM from
//! systemd) must never find a thread where its default action ends the
//! process.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{ConfigDir, EchoBackend, Ports, Ringway, http, stream_until, until, yaml};

/// The signals ringway acts on, as bits of /proc's `SigBlk` mask.
const STOP_SIGNALS: [(&str, i32); 4] = [
    ("SIGHUP", libc::SIGHUP),
    ("SIGINT", libc::SIGINT),
    ("SIGUSR1", libc::SIGUSR1),
    ("SIGTERM", libc::SIGTERM),
];

/// A raw-echo service on `port` (80/20 over two backends) and, to make every
/// reload take a while, `padding` unreferenced ServiceEntries.
fn config(port: u16, v1: u16, v2: u16, padding: usize) -> String {
    let mut documents = vec![
        yaml::gateway(&[port], &[]),
        yaml::virtual_service("tcp", &yaml::tcp_route(&[("v1", 80), ("v2", 20)])),
        yaml::destination_rule("", &["v1", "v2"]),
        yaml::service_entry(&[(v1, "v1"), (v2, "v2")]),
    ];
    for i in 0..padding {
        documents.push(format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: pad-{i}\n  \
             namespace: padding\nspec:\n  hosts:\n  - pad-{i}.padding.svc.cluster.local\n  \
             resolution: STATIC\n  ports:\n  - number: 9000\n    name: tcp\n    protocol: TCP\n  \
             endpoints:\n  - address: 127.0.0.{}\n    labels:\n      version: v1\n      \
             team: padding-team-{i}\n  - address: 127.0.1.{}\n    labels:\n      version: v2\n",
            1 + i % 250,
            1 + i % 250
        ));
    }
    yaml::join(&documents)
}

fn signal(gw: &Ringway, sig: i32) {
    // SAFETY: kill(2) on the child this test spawned.
    let sent = unsafe { libc::kill(gw.pid() as i32, sig) };
    assert_eq!(sent, 0, "kill: {}", std::io::Error::last_os_error());
}

/// Per thread of `pid` but the main one: (name, SigBlk mask). The main
/// thread (the supervisor) takes the signals with sigwait(2), during which
/// the kernel shows them unblocked.
fn blocked_masks(pid: u32) -> Vec<(String, u64)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        if task.file_name().to_str() == Some(&pid.to_string()) {
            continue;
        }
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
        };
        if let (Some(name), Some(mask)) = (field("Name:"), field("SigBlk:")) {
            threads.push((name, u64::from_str_radix(&mask, 16).unwrap()));
        }
    }
    threads
}

#[test]
fn every_thread_ringway_creates_blocks_the_signals_it_acts_on() {
    let ports = Ports::new();
    let (v1, v2) = (EchoBackend::raw(), EchoBackend::raw());
    let (port, admin) = (ports.listener(), ports.admin());
    let config = ConfigDir::new().file("svc.yaml", &config(port, v1.port, v2.port, 0));
    let log = config.path().join("access.log");
    let address = format!("127.0.0.1:{admin}");
    let Some(gw) = Ringway::start(
        &config,
        &[
            "--workers",
            "2",
            "--admin",
            &address,
            "--access-log",
            log.to_str().unwrap(),
            "--dns-refresh",
            "1s",
        ],
    ) else {
        return;
    };
    // Let every thread exist: the admin endpoint answers, a reload ran.
    assert_eq!(http(admin, "POST", "/reload").0, 200);
    let threads = blocked_masks(gw.pid());
    let names: Vec<&str> = threads.iter().map(|(n, _)| n.as_str()).collect();
    for expected in ["ringway-w0", "ringway-w1", "access-log"] {
        assert!(
            names.contains(&expected),
            "no {expected} thread in {names:?}"
        );
    }
    for (name, mask) in &threads {
        for (signal, number) in STOP_SIGNALS {
            assert!(
                mask & (1 << (number - 1)) != 0,
                "thread {name} does not block {signal} (SigBlk {mask:016x}); a {signal} it takes ends the process"
            );
        }
    }
}

/// Streams through `port` on `clients` connections until `done`; checks
/// every byte came back.
fn streams(port: u16, clients: u8, done: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<()>> {
    (0..clients)
        .map(|seed| {
            let done = Arc::clone(done);
            std::thread::spawn(move || {
                let (sent, sent_hash, echoed_hash) = stream_until(port, seed, done);
                assert!(sent > 0);
                assert_eq!(sent_hash, echoed_hash, "client {seed}: the echo differs");
            })
        })
        .collect()
}

/// Two workers on `text`, with an access log: (its directory, the log's
/// path, ringway).
fn with_access_log(text: &str) -> Option<(ConfigDir, std::path::PathBuf, Ringway)> {
    let config = ConfigDir::new().file("svc.yaml", text);
    let log = config.path().join("access.log");
    let gw = Ringway::start(
        &config,
        &["--workers", "2", "--access-log", log.to_str().unwrap()],
    )?;
    Some((config, log, gw))
}

fn access_log_lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

#[test]
fn a_reopen_or_a_stop_during_a_reload_loses_nothing() {
    let ports = Ports::new();
    let (v1, v2) = (EchoBackend::raw(), EchoBackend::raw());
    let port = ports.listener();
    // About 1 MB: each reload reads and compiles it for a while.
    let text = config(port, v1.port, v2.port, 2_400);
    assert!(text.len() > 900_000, "{} bytes", text.len());
    let Some((_config, log, mut gw)) = with_access_log(&text) else {
        return;
    };
    let done = Arc::new(AtomicBool::new(false));
    let clients = streams(port, 4, &done);
    // logrotate's postrotate while a reload runs, ten times.
    for round in 1..=10 {
        signal(&gw, libc::SIGHUP);
        std::thread::sleep(Duration::from_millis(20));
        signal(&gw, libc::SIGUSR1);
        std::thread::sleep(Duration::from_millis(30));
        assert!(
            !gw.exited(),
            "ringway died on SIGHUP + SIGUSR1, round {round}"
        );
        until(&format!("reload {round} to finish"), || {
            gw.log_text().matches("configuration reloaded").count() >= round
        });
    }
    // systemd's stop while a reload runs: a drain, not a death.
    signal(&gw, libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(20));
    signal(&gw, libc::SIGTERM);
    // The streams end on their own; the drain waits for them.
    std::thread::sleep(Duration::from_millis(200));
    done.store(true, Ordering::Release);
    for client in clients {
        client.join().unwrap();
    }
    let status = gw.wait_exit();
    assert!(
        status.success(),
        "ringway ended with {status} on SIGHUP + SIGTERM"
    );
    // One line per connection, none lost.
    assert_eq!(access_log_lines(&log), 4);
}

#[test]
fn a_storm_of_sighups_under_streaming_traffic_loses_nothing() {
    let ports = Ports::new();
    let (v1, v2) = (EchoBackend::raw(), EchoBackend::raw());
    let port = ports.listener();
    let Some((_config, log, mut gw)) = with_access_log(&config(port, v1.port, v2.port, 50)) else {
        return;
    };
    let done = Arc::new(AtomicBool::new(false));
    let clients = streams(port, 20, &done);
    for i in 0..1_000 {
        signal(&gw, libc::SIGHUP);
        if i % 100 == 0 {
            signal(&gw, libc::SIGUSR1);
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    assert!(!gw.exited(), "ringway died in the SIGHUP storm");
    done.store(true, Ordering::Release);
    for client in clients {
        client.join().unwrap();
    }
    until("a line per connection in the access log", || {
        access_log_lines(&log) == 20
    });
    signal(&gw, libc::SIGTERM);
    let status = gw.wait_exit();
    assert!(status.success(), "{status}");
    assert_eq!(access_log_lines(&log), 20);
}
