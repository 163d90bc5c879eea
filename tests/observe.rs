//! What an operator sees: the access log, the Prometheus counters, the admin
//! endpoint.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{EchoBackend, Ringway, connect, free_port, say, tcp_service};

const PATIENCE: Duration = Duration::from_secs(10);

/// The access log's JSON lines, once there are at least `n` of them.
fn wait_lines(path: &Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "expected {n} access log lines, have:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

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
    let logs = tempfile::tempdir().unwrap();
    let path = logs.path().join("access.log");
    let echo = EchoBackend::lines("one");
    let listen = free_port();
    let config = tcp_service(listen, &[echo.port], "");
    let Some(gw) = Ringway::start(&config, &log_args(&path, &[])) else {
        return;
    };
    assert_eq!(say(listen, "hello"), "one hello");
    let lines = wait_lines(&path, 1);
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
    let listen = free_port();
    let config = tcp_service(listen, &[free_port()], "");
    let Some(gw) = Ringway::start(&config, &log_args(&path, &["--connect-attempts", "1"])) else {
        return;
    };
    let mut s = connect(listen);
    let _ = common::read_to_end(&mut s);
    let lines = wait_lines(&path, 1);
    assert_eq!(lines[0]["response_flags"], "UF", "{lines:?}");
    assert!(gw.terminate().success());

    // An endpoint whose name does not resolve: UH.
    let path = logs.path().join("uh.log");
    let listen = free_port();
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
    let lines = wait_lines(&path, 1);
    assert_eq!(lines[0]["response_flags"], "UH", "{lines:?}");
}
