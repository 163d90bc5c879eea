//! Reload (SPEC §4): established connections keep their table, new ones
//! follow the new one at once, listeners come and go, a bad configuration
//! changes nothing.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{
    ConfigDir, EchoBackend, Ports, Ringway, chat, http, open, say, stream_until, until, yaml,
};

/// Route weights: everything to v1, or everything to v2.
const ONLY_V1: (u32, u32) = (100, 0);
const ONLY_V2: (u32, u32) = (0, 100);

/// TCP servers on `ports`, routed by `weights` to subsets v1 and v2 of a
/// service whose endpoints are `v1` (version v1) and `v2` (version v2).
fn yaml(ports: &[u16], weights: (u32, u32), v1: u16, v2: u16) -> String {
    let (w1, w2) = weights;
    yaml::join(&[
        yaml::gateway(ports, &[]),
        yaml::virtual_service("tcp", &yaml::tcp_route(&[("v1", w1), ("v2", w2)])),
        yaml::destination_rule("", &["v1", "v2"]),
        yaml::service_entry(&[(v1, "v1"), (v2, "v2")]),
    ])
}

fn start(config: &ConfigDir, admin: u16) -> Option<Ringway> {
    let address = format!("127.0.0.1:{admin}");
    Ringway::start(config, &["--workers", "2", "--admin", &address])
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn established_connections_survive_a_reload_that_flips_weights_and_removes_their_listener() {
    let ports = Ports::new();
    let (v1, v2) = (EchoBackend::lines("one"), EchoBackend::lines("two"));
    let (a, b, c, admin) = (
        ports.listener(),
        ports.listener(),
        ports.listener(),
        ports.admin(),
    );
    let config = ConfigDir::new().file("svc.yaml", &yaml(&[a, b], ONLY_V1, v1.port, v2.port));
    let Some(_gw) = start(&config, admin) else {
        return;
    };
    let mut on_a = open(a);
    let mut on_b = open(b);
    assert_eq!(chat(&mut on_a, "x"), "one x");
    assert_eq!(chat(&mut on_b, "x"), "one x");

    write(
        &config.path().join("svc.yaml"),
        &yaml(&[a, c], ONLY_V2, v1.port, v2.port),
    );
    let (status, body) = http(admin, "POST", "/reload");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"generation\": 2"), "{body}");
    // A new listener opens (each worker binds its own socket on wake).
    until("the new port to open", || {
        TcpStream::connect(("127.0.0.1", c)).is_ok()
    });
    assert_eq!(say(c, "new"), "two new");

    // New connections follow the new table at once.
    for i in 0..4 {
        assert_eq!(say(a, &format!("n{i}")), format!("two n{i}"));
    }
    // The established ones keep theirs, listener gone or not.
    assert_eq!(chat(&mut on_a, "y"), "one y");
    assert_eq!(chat(&mut on_b, "y"), "one y");
    // The removed port refuses new connections (once every worker woke).
    until("the removed port to refuse", || {
        TcpStream::connect(("127.0.0.1", b)).is_err()
    });
    assert_eq!(chat(&mut on_b, "z"), "one z");
}

#[test]
fn a_reload_whose_new_port_is_taken_is_refused() {
    let ports = Ports::new();
    let (v1, v2) = (EchoBackend::lines("one"), EchoBackend::lines("two"));
    let (a, admin) = (ports.listener(), ports.admin());
    let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let t = taken.local_addr().unwrap().port();
    let config = ConfigDir::new().file("svc.yaml", &yaml(&[a], ONLY_V1, v1.port, v2.port));
    let Some(_gw) = start(&config, admin) else {
        return;
    };
    write(
        &config.path().join("svc.yaml"),
        &yaml(&[a, t], ONLY_V2, v1.port, v2.port),
    );
    let (status, body) = http(admin, "POST", "/reload");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains(&format!(":{t}")), "{body}");
    assert_eq!(say(a, "old"), "one old");
    let (_, metrics) = http(admin, "GET", "/metrics");
    assert!(
        metrics.contains("ringway_config_reloads_total{result=\"failure\"} 1"),
        "{metrics}"
    );
}

#[test]
fn a_bad_configuration_keeps_the_last_good_table_and_says_where() {
    let ports = Ports::new();
    let (v1, v2) = (EchoBackend::lines("one"), EchoBackend::lines("two"));
    let (a, admin) = (ports.listener(), ports.admin());
    let good = yaml(&[a], ONLY_V1, v1.port, v2.port);
    let config = ConfigDir::new().file("svc.yaml", &good);
    let Some(gw) = start(&config, admin) else {
        return;
    };
    let file = config.path().join("svc.yaml");
    write(&file, &good.replace("  tcp:\n", "  tcp:\n   - oops: [\n"));
    let (status, body) = http(admin, "POST", "/reload");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("svc.yaml:"), "{body}");
    assert_eq!(say(a, "still"), "one still");
    let (_, metrics) = http(admin, "GET", "/metrics");
    assert!(
        metrics.contains("ringway_config_reloads_total{result=\"failure\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("ringway_config_generation 1"), "{metrics}");

    write(&file, &yaml(&[a], ONLY_V2, v1.port, v2.port));
    let (status, body) = http(admin, "POST", "/reload");
    assert_eq!(status, 200, "{body}");
    assert_eq!(say(a, "fixed"), "two fixed");

    // SIGHUP reloads too.
    write(&file, &good);
    // SAFETY: kill(2) on the child we spawned.
    unsafe {
        libc::kill(gw.pid() as i32, libc::SIGHUP);
    }
    until("SIGHUP to reload", || {
        http(admin, "GET", "/metrics")
            .1
            .contains("ringway_config_generation 3")
    });
    assert_eq!(say(a, "hup"), "one hup");
}

#[test]
fn a_storm_of_reloads_cuts_nothing_loses_nothing_and_leaks_nothing() {
    let ports = Ports::new();
    let (v1, v2) = (EchoBackend::raw(), EchoBackend::raw());
    let (a, b, admin) = (ports.listener(), ports.listener(), ports.admin());
    let config = ConfigDir::new().file("svc.yaml", &yaml(&[a], (80, 20), v1.port, v2.port));
    let Some(gw) = start(&config, admin) else {
        return;
    };
    let file = config.path().join("svc.yaml");
    let baseline = gw.open_fds();

    let done = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8u8)
        .map(|seed| {
            let done = Arc::clone(&done);
            std::thread::spawn(move || stream_until(a, seed, done))
        })
        .collect();
    // 100 reloads: the weights flip every time; listener b comes and goes.
    for i in 1..=100u32 {
        let (ports, weights): (&[u16], _) = match i % 2 {
            1 => (&[a, b], (20, 80)),
            _ => (&[a], (80, 20)),
        };
        write(&file, &yaml(ports, weights, v1.port, v2.port));
        let (status, body) = http(admin, "POST", "/reload");
        assert_eq!(status, 200, "reload {i}: {body}");
        assert!(
            body.contains(&format!("\"generation\": {}", i + 1)),
            "reload {i}: {body}"
        );
    }
    done.store(true, Ordering::Release);
    for (i, client) in clients.into_iter().enumerate() {
        let (sent, sent_hash, echoed_hash) = client.join().unwrap();
        assert!(sent >= 8 * 16 * 1024, "client {i} sent only {sent} bytes");
        assert_eq!(
            sent_hash, echoed_hash,
            "client {i}: sha256 of the echo differs"
        );
    }
    // New connections still work, and the listener of the last table is up.
    assert!(v1.accepted.load(Ordering::Relaxed) + v2.accepted.load(Ordering::Relaxed) >= 8);
    let (_, dump) = http(admin, "GET", "/config_dump");
    assert!(dump.contains("\"generation\": 101"), "{dump}");
    // Every descriptor of the storm is closed (pooled pipes within a second
    // or two of idleness): as many as before it.
    until("the descriptors of the storm to close", || {
        gw.open_fds() <= baseline
    });
    let (status, _) = http(admin, "GET", "/ready");
    assert_eq!(status, 200);
}

#[test]
fn ready_waits_until_every_listener_is_bound() {
    let ports = Ports::new();
    let (v1, v2) = (EchoBackend::lines("one"), EchoBackend::lines("two"));
    let (a, admin) = (ports.listener(), ports.admin());
    let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let t = taken.local_addr().unwrap().port();
    let config = ConfigDir::new().file("svc.yaml", &yaml(&[a, t], ONLY_V1, v1.port, v2.port));
    let Some(_gw) = start(&config, admin) else {
        return;
    };
    // Serving on a, but port t is someone else's: not ready.
    assert_eq!(say(a, "x"), "one x");
    assert_eq!(http(admin, "GET", "/ready").0, 503);
    // The port is freed; a reload binds it on every worker.
    drop(taken);
    let (status, body) = http(admin, "POST", "/reload");
    assert_eq!(status, 200, "{body}");
    until("/ready 200", || http(admin, "GET", "/ready").0 == 200);
    assert_eq!(say(t, "y"), "one y");
}
