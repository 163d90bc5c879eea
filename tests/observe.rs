//! What an operator sees: the access log, the Prometheus counters, the admin
//! endpoint.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use std::io::{Read, Write};

use common::{
    EchoBackend, PATIENCE, Ports, Ringway, access_log, connect, http, sample, say, tcp_echo,
    tcp_service, until, wait_metrics,
};

fn log_args<'a>(path: &'a Path, more: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--workers",
        "1",
        "--access-log",
        path.to_str().unwrap(),
        "--log-format",
        "json",
    ];
    args.extend_from_slice(more);
    args
}

#[test]
fn access_log_has_one_line_per_connection_with_its_flag() {
    let ports = Ports::new();
    let logs = tempfile::tempdir().unwrap();
    let path = logs.path().join("access.log");
    let echo = EchoBackend::lines("one");
    let listen = ports.listener();
    let config = tcp_service(listen, &[echo.port], "");
    let Some(gw) = Ringway::start(&config, &log_args(&path, &[])) else {
        return;
    };
    assert_eq!(say(listen, "hello"), "one hello");
    let lines = access_log(&path, 1);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert_eq!(line["response_flags"], "-", "{line}");
    assert_eq!(line["bytes_received"], 6, "{line}");
    assert_eq!(line["bytes_sent"], 10, "{line}");
    assert_eq!(
        line["upstream_host"],
        format!("127.0.0.1:{}", echo.port),
        "{line}"
    );
    assert!(gw.terminate().success());

    // A refusing endpoint: UF.
    let path = logs.path().join("uf.log");
    let listen = ports.listener();
    let config = tcp_service(listen, &[ports.closed()], "");
    let Some(gw) = Ringway::start(&config, &log_args(&path, &["--connect-attempts", "1"])) else {
        return;
    };
    let mut s = connect(listen);
    let _ = common::read_to_end(&mut s);
    let lines = access_log(&path, 1);
    assert_eq!(lines[0]["response_flags"], "UF", "{lines:?}");
    assert!(gw.terminate().success());

    // An endpoint whose name does not resolve: UH.
    let path = logs.path().join("uh.log");
    let listen = ports.listener();
    let config = tcp_service(listen, &[echo.port], "");
    let file = config.path().join("svc.yaml");
    let yaml = std::fs::read_to_string(&file)
        .unwrap()
        .replace("address: 127.0.0.1", "address: ringway-test.invalid")
        .replace("resolution: STATIC", "resolution: DNS");
    std::fs::write(&file, yaml).unwrap();
    let Some(_gw) = Ringway::start(&config, &log_args(&path, &[])) else {
        return;
    };
    let mut s = connect(listen);
    let _ = common::read_to_end(&mut s);
    let lines = access_log(&path, 1);
    assert_eq!(lines[0]["response_flags"], "UH", "{lines:?}");
}

#[test]
fn istio_counters_split_50_connections_80_20_with_exact_bytes() {
    let ports = Ports::new();
    let (v1, v2) = (EchoBackend::lines("one"), EchoBackend::lines("two"));
    let listen = ports.listener();
    let admin = ports.admin();
    let config = tcp_echo(listen, &v1, &v2, true);
    let address = format!("127.0.0.1:{admin}");
    let Some(_gw) = Ringway::start(&config, &["--workers", "1", "--admin", &address]) else {
        return;
    };
    for i in 0..50 {
        let reply = say(listen, "hi");
        assert!(reply == "one hi" || reply == "two hi", "{i}: {reply}");
    }
    let closed = "istio_tcp_connections_closed_total";
    let m = wait_metrics(admin, |m| sample(m, closed, &[]) == 50);
    let opened = "istio_tcp_connections_opened_total";
    let (v1l, v2l) = ("destination_version=\"v1\"", "destination_version=\"v2\"");
    let ok = "response_flags=\"-\"";
    assert_eq!(sample(&m, opened, &[v1l, ok]), 40, "{m}");
    assert_eq!(sample(&m, opened, &[v2l, ok]), 10, "{m}");
    assert_eq!(sample(&m, closed, &[]), 50, "{m}");
    // "hi\n" up, "one hi\n" or "two hi\n" down.
    assert_eq!(
        sample(&m, "istio_tcp_received_bytes_total", &[v1l]),
        40 * 3,
        "{m}"
    );
    assert_eq!(
        sample(&m, "istio_tcp_received_bytes_total", &[v2l]),
        10 * 3,
        "{m}"
    );
    assert_eq!(
        sample(&m, "istio_tcp_sent_bytes_total", &[v1l]),
        40 * 7,
        "{m}"
    );
    assert_eq!(
        sample(&m, "istio_tcp_sent_bytes_total", &[v2l]),
        10 * 7,
        "{m}"
    );
    assert!(m.contains("reporter=\"source\""), "{m}");
}

/// Every `istio_*` TCP series carries Istio's 23 labels, in the order
/// Istio's stats filter writes them, with the values a gateway reports as
/// `source`: its own identity (flags) on the source side, the endpoint's
/// workload, namespace and canonical service on the destination side.
#[test]
fn every_istio_series_carries_istios_23_labels() {
    let ports = Ports::new();
    let (v1, v2) = (EchoBackend::lines("one"), EchoBackend::lines("two"));
    let listen = ports.listener();
    let admin = ports.admin();
    let config = tcp_echo(listen, &v1, &v2, true);
    let address = format!("127.0.0.1:{admin}");
    let args = [
        "--workers",
        "1",
        "--admin",
        &address,
        "--workload-name",
        "edge-gw",
        "--cluster-id",
        "east",
        "--labels",
        "istio=ingressgateway,app=edge,version=3",
    ];
    let Some(_gw) = Ringway::start(&config, &args) else {
        return;
    };
    for _ in 0..5 {
        say(listen, "hi");
    }
    let closed = "istio_tcp_connections_closed_total";
    let m = wait_metrics(admin, |m| sample(m, closed, &[]) == 5);
    let names = [
        "reporter",
        "source_workload",
        "source_canonical_service",
        "source_canonical_revision",
        "source_workload_namespace",
        "source_principal",
        "source_app",
        "source_version",
        "source_cluster",
        "destination_workload",
        "destination_workload_namespace",
        "destination_principal",
        "destination_app",
        "destination_version",
        "destination_service",
        "destination_canonical_service",
        "destination_canonical_revision",
        "destination_service_name",
        "destination_service_namespace",
        "destination_cluster",
        "request_protocol",
        "response_flags",
        "connection_security_policy",
    ];
    let series: Vec<&str> = m.lines().filter(|l| l.starts_with("istio_tcp_")).collect();
    assert!(series.len() >= 4, "{m}");
    for line in &series {
        let labels = &line[line.find('{').unwrap() + 1..line.rfind('}').unwrap()];
        let pairs: Vec<(&str, &str)> = labels
            .split("\",")
            .map(|p| {
                let (k, v) = p.split_once("=\"").unwrap();
                (k, v.trim_end_matches('"'))
            })
            .collect();
        let keys: Vec<&str> = pairs.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, names, "{line}");
        let get = |k: &str| pairs.iter().find(|(n, _)| *n == k).unwrap().1;
        for (k, want) in [
            ("reporter", "source"),
            ("source_workload", "edge-gw"),
            ("source_canonical_service", "edge"),
            ("source_canonical_revision", "3"),
            ("source_workload_namespace", "istio-system"),
            ("source_principal", "unknown"),
            ("source_app", "edge"),
            ("source_version", "3"),
            ("source_cluster", "east"),
            ("destination_workload_namespace", "default"),
            ("destination_principal", "unknown"),
            ("destination_app", "tcp-echo"),
            ("destination_service", "tcp-echo.default.svc.cluster.local"),
            ("destination_canonical_service", "tcp-echo"),
            ("destination_service_name", "tcp-echo"),
            ("destination_service_namespace", "default"),
            ("destination_cluster", "east"),
            ("request_protocol", "tcp"),
            ("response_flags", "-"),
            ("connection_security_policy", "unknown"),
        ] {
            assert_eq!(get(k), want, "{k} in {line}");
        }
        // v1 and v2 apart, by workload and canonical revision.
        let version = get("destination_version");
        assert!(version == "v1" || version == "v2", "{line}");
        assert_eq!(get("destination_canonical_revision"), version, "{line}");
        let index = if version == "v1" { 0 } else { 1 };
        assert_eq!(
            get("destination_workload"),
            format!("tcp-echo-{index}"),
            "{line}"
        );
    }
    // The identity is in /config_dump too.
    let (_, dump) = common::http(admin, "GET", "/config_dump");
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    assert_eq!(dump["identity"]["workload"], "edge-gw", "{dump}");
    assert_eq!(dump["identity"]["cluster"], "east", "{dump}");
    // The mesh dashboard's versions panel.
    assert!(
        m.lines()
            .any(|l| l.starts_with("istio_build{component=\"proxy\",tag=\"")),
        "{m}"
    );
}

#[test]
fn bytes_advance_while_the_connection_is_open() {
    let ports = Ports::new();
    let echo = EchoBackend::lines("one");
    let listen = ports.listener();
    let admin = ports.admin();
    let config = tcp_service(listen, &[echo.port], "");
    let address = format!("127.0.0.1:{admin}");
    let Some(_gw) = Ringway::start(&config, &["--workers", "1", "--admin", &address]) else {
        return;
    };
    let mut s = connect(listen);
    s.write_all(b"hello\n").unwrap();
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply).unwrap();
    let m = wait_metrics(admin, |m| {
        sample(m, "istio_tcp_received_bytes_total", &[]) == 6
            && sample(m, "istio_tcp_sent_bytes_total", &[]) == 10
    });
    assert_eq!(
        sample(&m, "istio_tcp_connections_opened_total", &[]),
        1,
        "{m}"
    );
    assert_eq!(
        sample(&m, "istio_tcp_connections_closed_total", &[]),
        0,
        "{m}"
    );
    drop(s);
}

#[test]
fn admin_endpoint_answers() {
    let ports = Ports::new();
    let echo = EchoBackend::lines("one");
    let listen = ports.listener();
    let admin = ports.admin();
    let config = tcp_service(listen, &[echo.port], "");
    let address = format!("127.0.0.1:{admin}");
    let Some(_gw) = Ringway::start(&config, &["--workers", "1", "--admin", &address]) else {
        return;
    };
    assert_eq!(http(admin, "GET", "/ready"), (200, "ready\n".to_owned()));
    assert_eq!(http(admin, "GET", "/healthz").0, 200);
    let (status, prom) = http(admin, "GET", "/stats/prometheus");
    assert_eq!(status, 200);
    assert!(prom.contains("ringway_config_generation 1"), "{prom}");
    let (status, dump) = http(admin, "GET", "/config_dump");
    assert_eq!(status, 200);
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    assert_eq!(dump["generation"], 1, "{dump}");
    assert!(
        dump.to_string().contains("svc.default.svc.cluster.local"),
        "{dump}"
    );
    assert_eq!(
        dump["resolved_endpoints"]["outbound|9000|v1|svc.default.svc.cluster.local"][0]["address"],
        format!("127.0.0.1:{}", echo.port),
        "{dump}"
    );
    assert_eq!(http(admin, "GET", "/nope").0, 404);
}

#[test]
fn dns_endpoints_are_resolved_and_refreshed_off_the_data_path() {
    let ports = Ports::new();
    let echo = EchoBackend::lines("one");
    let (listen, admin) = (ports.listener(), ports.admin());
    let config = tcp_service(listen, &[echo.port], "");
    let file = config.path().join("svc.yaml");
    let yaml = std::fs::read_to_string(&file)
        .unwrap()
        .replace("address: 127.0.0.1", "address: localhost")
        .replace("resolution: STATIC", "resolution: DNS");
    std::fs::write(&file, yaml).unwrap();
    let address = format!("127.0.0.1:{admin}");
    let args = [
        "--workers",
        "1",
        "--admin",
        &address,
        "--dns-refresh",
        "50ms",
    ];
    // Each refresh that changes nothing says so at debug level.
    let mut cmd = Ringway::command(&config, &args);
    cmd.env("RUST_LOG", "info,ringway=debug");
    let Some(gw) = Ringway::spawn(cmd) else {
        return;
    };
    assert_eq!(say(listen, "a"), "one a");
    let (_, dump) = http(admin, "GET", "/config_dump");
    assert!(
        dump.contains(&format!("\"127.0.0.1:{}\"", echo.port)),
        "{dump}"
    );
    // Ten refreshes, counted, resolve the same answers: nothing new is
    // published (same generation, no "changed" line), and connections
    // keep going where they went.
    let unchanged = "DNS refresh: no endpoint address changed";
    until("ten DNS refreshes", || gw.count_logged(unchanged) >= 10);
    assert!(
        !gw.logged("endpoint addresses changed"),
        "{}",
        gw.log_text()
    );
    let (_, dump) = http(admin, "GET", "/config_dump");
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    assert_eq!(dump["generation"], 1, "{dump}");
    assert_eq!(say(listen, "b"), "one b");
}

#[test]
fn ringway_counters_count_connects_failures_ejections_and_active_connections() {
    let ports = Ports::new();
    let echo = EchoBackend::lines("one");
    let (listen, admin) = (ports.listener(), ports.admin());
    let policy = "    loadBalancer:\n      simple: ROUND_ROBIN\n    outlierDetection:\n      consecutive5xxErrors: 1\n      interval: 1s\n      baseEjectionTime: 30s\n      maxEjectionPercent: 50\n";
    let config = tcp_service(listen, &[ports.closed(), echo.port], policy);
    let address = format!("127.0.0.1:{admin}");
    let Some(_gw) = Ringway::start(&config, &["--workers", "1", "--admin", &address]) else {
        return;
    };
    // Round robin: the refusing endpoint fails once and is ejected; the
    // retry and every later connection reach the live one.
    for i in 0..3 {
        assert_eq!(say(listen, &format!("m{i}")), format!("one m{i}"));
    }
    let mut open = connect(listen);
    open.write_all(b"hold\n").unwrap();
    let mut reply = [0u8; 9];
    open.read_exact(&mut reply).unwrap();
    let active = "ringway_downstream_connections_active";
    let m = wait_metrics(admin, |m| sample(m, active, &[]) == 1);
    assert_eq!(
        sample(&m, "ringway_upstream_connect_attempts_total", &[]),
        5,
        "{m}"
    );
    assert_eq!(
        sample(&m, "ringway_upstream_connect_failures_total", &[]),
        1,
        "{m}"
    );
    assert_eq!(
        sample(&m, "ringway_upstream_ejections_total", &[]),
        1,
        "{m}"
    );
    drop(open);
    wait_metrics(admin, |m| sample(m, active, &[]) == 0);
}

#[test]
fn connect_timeouts_are_counted() {
    let ports = Ports::new();
    let blackhole = common::blackhole();
    let hole = blackhole.port;
    let (listen, admin) = (ports.listener(), ports.admin());
    let policy = "    connectionPool:\n      tcp:\n        connectTimeout: 200ms\n";
    let config = tcp_service(listen, &[hole], policy);
    let address = format!("127.0.0.1:{admin}");
    let Some(_gw) = Ringway::start(
        &config,
        &[
            "--workers",
            "1",
            "--connect-attempts",
            "2",
            "--admin",
            &address,
        ],
    ) else {
        return;
    };
    let mut s = connect(listen);
    let _ = common::read_to_end(&mut s);
    let m = wait_metrics(admin, |m| {
        sample(
            m,
            "istio_tcp_connections_closed_total",
            &["response_flags=\"UF\""],
        ) == 1
    });
    assert_eq!(
        sample(&m, "ringway_upstream_connect_timeouts_total", &[]),
        2,
        "{m}"
    );
    assert_eq!(
        sample(&m, "ringway_upstream_connect_attempts_total", &[]),
        2,
        "{m}"
    );
}

#[test]
fn sigusr1_reopens_the_access_log_and_text_is_the_default_format() {
    let ports = Ports::new();
    let logs = tempfile::tempdir().unwrap();
    let path = logs.path().join("access.log");
    let rotated = logs.path().join("access.log.1");
    let echo = EchoBackend::lines("one");
    let listen = ports.listener();
    let config = tcp_service(listen, &[echo.port], "");
    let args = ["--workers", "1", "--access-log", path.to_str().unwrap()];
    let Some(gw) = Ringway::start(&config, &args) else {
        return;
    };
    let wait_text = |p: &Path, needle: &str| {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{needle:?} never in {p:?}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    assert_eq!(say(listen, "a"), "one a");
    let text = wait_text(&path, " - ");
    assert!(text.starts_with('['), "not the text format: {text}");
    assert!(text.contains("\"- - -\" 0 - "), "{text}");
    std::fs::rename(&path, &rotated).unwrap();
    gw.signal("USR1");
    common::until("the reopen to be logged", || {
        gw.logged("reopening the access log")
    });
    assert_eq!(say(listen, "b"), "one b");
    let text = wait_text(&path, "outbound|9000|v1|svc.default.svc.cluster.local");
    assert_eq!(text.lines().count(), 1, "{text}");
    assert_eq!(
        std::fs::read_to_string(&rotated).unwrap().lines().count(),
        1
    );
}

#[test]
fn a_stalled_access_log_reader_costs_bounded_memory_and_never_blocks_exit() {
    let ports = Ports::new();
    let echo = EchoBackend::lines("one");
    let (listen, admin) = (ports.listener(), ports.admin());
    let config = tcp_service(listen, &[echo.port], "");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ringway"));
    let address = format!("127.0.0.1:{admin}");
    cmd.arg("run").arg("-c").arg(config.path()).args([
        "--workers",
        "1",
        "--admin",
        &address,
        "--access-log",
        "-",
        "--access-log-queue",
        "100",
    ]);
    // Standard output is a pipe nobody reads: it fills (64 KiB), then the
    // writer blocks in write(2) for good.
    let Some(gw) = Ringway::spawn_with_stdout(cmd, std::process::Stdio::piped()) else {
        return;
    };
    let rss = || -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", gw.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap()
    };
    for i in 0..1_000 {
        assert_eq!(say(listen, &format!("{i}")), format!("one {i}"));
    }
    let first = rss();
    for i in 0..4_000 {
        assert_eq!(say(listen, &format!("{i}")), format!("one {i}"));
    }
    let text = wait_metrics(admin, |m| {
        sample(m, "ringway_access_log_dropped_total", &[]) > 4_000
    });
    // At most the pipe's 64 KiB and the writer's 8 KiB buffer (lines are
    // over 150 bytes: under 550 lines) and the queue of 100 were kept:
    // every other line was dropped and counted, none waited for.
    let dropped = sample(&text, "ringway_access_log_dropped_total", &[]);
    assert!(dropped >= 5_000 - 550 - 100 - 1, "{dropped} dropped");
    // 4,000 more lines (about 1 MB) grew nothing: they were not queued.
    let second = rss();
    assert!(second < first + 400, "VmRSS {first} kB -> {second} kB");
    // SIGTERM ends the process although the writer never returns (the
    // exit is waited for with the tests' usual patience).
    let status = gw.terminate();
    assert!(status.success(), "{status}");
}
