//! Each mode for a fraction of a second against the built-in backends, plus
//! the loopback-only rule through the real binary. Whole file: a few seconds.

use ringway_bench::backend::Backend;
use ringway_bench::modes::{self, Common, Direction};
use std::process::Command;
use std::time::Duration;

fn common(b: &Backend, count: Option<u64>) -> Common {
    Common {
        target: b.addr,
        duration: Duration::from_millis(300),
        count,
        watch: Some(std::process::id()),
    }
}

#[test]
fn throughput_every_direction() {
    let sink = Backend::sink("127.0.0.1:0".parse().unwrap()).unwrap();
    for (dir, streams) in [
        (Direction::Up, 1),
        (Direction::Down, 2),
        (Direction::Both, 2),
    ] {
        let r = modes::throughput(&common(&sink, None), streams, dir, 64 * 1024);
        assert_eq!(r["errors"].as_array().unwrap().len(), 0, "{r}");
        assert!(r["gbit_per_s"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["seconds"].as_f64().unwrap() < 5.0, "{r}");
        assert!(r["proxy"]["cpu_s"].as_f64().is_some(), "{r}");
        match dir {
            Direction::Up => assert!(
                r["bytes_up"].as_u64().unwrap() > 0 && r["bytes_down"] == 0,
                "{r}"
            ),
            Direction::Down => assert!(
                r["bytes_down"].as_u64().unwrap() > 0 && r["bytes_up"] == 0,
                "{r}"
            ),
            Direction::Both => assert!(
                r["bytes_down"].as_u64().unwrap() > 0 && r["bytes_up"].as_u64().unwrap() > 0,
                "{r}"
            ),
        }
    }
}

#[test]
fn connrate_rr_idle_probe() {
    let echo = Backend::echo("127.0.0.1:0".parse().unwrap()).unwrap();
    let r = modes::connrate(&common(&echo, None), 2, 64);
    assert!(r["connections"].as_u64().unwrap() > 10, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    assert!(r["latency"]["p99"].as_f64().unwrap() > 0.0, "{r}");

    // --count bounds the run before the deadline.
    let r = modes::connrate(&common(&echo, Some(25)), 3, 16);
    assert_eq!(r["connections"], 25, "{r}");

    let r = modes::rr(&common(&echo, None), 2, 100);
    assert!(r["requests"].as_u64().unwrap() > 10, "{r}");
    assert_eq!(r["errors"].as_array().unwrap().len(), 0, "{r}");
    let l = &r["latency"];
    assert!(
        l["p50"].as_f64() <= l["p99"].as_f64() && l["p99"].as_f64() <= l["p99_9"].as_f64(),
        "{r}"
    );

    let mut c = common(&echo, Some(200));
    c.duration = Duration::from_secs(5);
    let r = modes::idle(&c, Duration::from_millis(100));
    assert_eq!(r["connections"], 200, "{r}");
    assert_eq!(r["alive_after_hold"], true, "{r}");
    assert!(r["proxy_rss_kib_per_conn"].as_f64().is_some(), "{r}");

    let r = modes::probe(&common(&echo, None));
    assert_eq!(r["ok"], true, "{r}");
}

#[test]
fn probe_times_out_on_a_closed_port() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = Common {
        target: format!("127.0.0.1:{port}").parse().unwrap(),
        duration: Duration::from_millis(200),
        count: None,
        watch: None,
    };
    assert_eq!(modes::probe(&c)["ok"], false);
}

#[test]
fn binary_refuses_other_addresses_and_runs_a_mode() {
    let bin = env!("CARGO_BIN_EXE_loadgen");
    for t in ["10.0.0.1:80", "[::1]:80", "0.0.0.0:80", "127.0.0.2:80"] {
        let out = Command::new(bin)
            .args(["rr", "--target", t, "--duration", "0.1"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{t}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("refusing"),
            "{t}"
        );
    }
    let echo = Backend::echo("127.0.0.1:0".parse().unwrap()).unwrap();
    let out = Command::new(bin)
        .args([
            "rr",
            "--target",
            &echo.addr.to_string(),
            "--duration",
            "200ms",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["mode"], "rr");
    let out = Command::new(bin)
        .args(["rr", "--target", "127.0.0.1:1", "--bogus", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn exec_runs_a_client_charges_cpu_and_enforces_the_deadline() {
    let bin = env!("CARGO_BIN_EXE_loadgen");
    let dir = std::env::temp_dir().join(format!("loadgen-exec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out_file = dir.join("out.txt");
    let me = std::process::id().to_string();
    let out = Command::new(bin)
        .args([
            "exec",
            "--output",
            out_file.to_str().unwrap(),
            "--watch-pid",
            &me,
            "--",
            "echo",
            "hello",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["exit_code"], 0, "{v}");
    assert!(v["proxy"]["cpu_s"].as_f64().is_some(), "{v}");
    assert_eq!(std::fs::read_to_string(&out_file).unwrap(), "hello\n");

    let out = Command::new(bin)
        .args([
            "exec",
            "--output",
            out_file.to_str().unwrap(),
            "--duration",
            "300ms",
            "--",
            "sleep",
            "10",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["timed_out"], true, "{v}");
    assert!(v["seconds"].as_f64().unwrap() < 5.0, "{v}");
    let out = Command::new(bin)
        .args(["exec", "--output", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).ok();
}
