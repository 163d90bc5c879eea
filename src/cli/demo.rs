//! `ringway demo`: two Istio tutorials on one machine with nothing else
//! installed. Istio's tcp-echo traffic shifting: two built-in tcp-echo
//! backends (v1 answers `one <line>`, v2 `two <line>`, like Istio's sample
//! server), the gateway on the bundled example (80% v1, 20% v2), 20
//! connections and their split. Seed 004's HTTP gateway: two built-in HTTP
//! backends standing for front-tomcat v1 and v2, the tutorial's Gateway,
//! VirtualService (90/10) and DestinationRule on port 18080 instead of 80,
//! 20 requests with `Host: tomcat.istio.com` and their split, and one with
//! another host (404). Then it keeps serving until Ctrl-C.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::dataplane::Settings;
use crate::pipeline::Pipeline;
use crate::process;
use crate::source::Files;
use crate::supervisor::{self, RunOptions};

/// The bundled example (config/examples/tcp-echo), compiled in so the demo
/// runs from anywhere.
const FILES: [(&str, &str); 8] = [
    (
        "00-service-entry.yaml",
        include_str!("../../config/examples/tcp-echo/00-service-entry.yaml"),
    ),
    (
        "10-tcp-echo-all-v1.yaml",
        include_str!("../../config/examples/tcp-echo/10-tcp-echo-all-v1.yaml"),
    ),
    (
        "20-tcp-echo-20-v2.yaml",
        include_str!("../../config/examples/tcp-echo/20-tcp-echo-20-v2.yaml"),
    ),
    (
        "seed-004-00-service-entry.yaml",
        include_str!("../../config/examples/seed-004/00-service-entry.yaml"),
    ),
    (
        "seed-004-10-front-tomcat-virtualservice.yaml",
        include_str!("../../config/examples/seed-004/10-front-tomcat-virtualservice.yaml"),
    ),
    (
        "seed-004-20-front-tomcat-destinationrule.yaml",
        include_str!("../../config/examples/seed-004/20-front-tomcat-destinationrule.yaml"),
    ),
    (
        "seed-004-30-front-tomcat-gateway.yaml",
        include_str!("../../config/examples/seed-004/30-front-tomcat-gateway.yaml"),
    ),
    (
        "seed-004-40-front-tomcat-gateway-virtualservice.yaml",
        include_str!("../../config/examples/seed-004/40-front-tomcat-gateway-virtualservice.yaml"),
    ),
];

/// The seed 004 Gateway's port 80 needs privileges: the demo serves it on
/// this one instead.
pub const HTTP_GATEWAY_PORT: u16 = 18080;

/// The seed 004 example's endpoints (its ServiceEntry) and what they
/// answer.
const HTTP_BACKENDS: [(u16, &str); 2] = [(18081, "v1"), (18082, "v2")];

/// Requests the demo sends to the HTTP gateway.
const REQUESTS: usize = 20;

/// Where the example's endpoints listen (its ServiceEntry) and what they answer.
const BACKENDS: [(u16, &str); 4] = [
    (19000, "one"),
    (19001, "one"),
    (29000, "two"),
    (29001, "two"),
];

/// The example gateway's port.
pub const GATEWAY_PORT: u16 = 31400;

/// Connections the demo sends before it hands over to the user.
const CONNECTIONS: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(
        "cannot start a built-in backend on 127.0.0.1:{port}: {source} (is another demo running?)"
    )]
    Backend { port: u16, source: std::io::Error },
    #[error("cannot write the bundled example to {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Run(#[from] supervisor::RunError),
    #[error("demo connection {n} failed: {source}")]
    Client { n: usize, source: std::io::Error },
}

pub fn run(workers: usize) -> Result<(), DemoError> {
    process::block_stop_signals();
    for (port, prefix) in BACKENDS {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .map_err(|source| DemoError::Backend { port, source })?;
        thread::spawn(move || serve_echo(listener, prefix));
    }
    for (port, version) in HTTP_BACKENDS {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .map_err(|source| DemoError::Backend { port, source })?;
        thread::spawn(move || serve_http(listener, version));
    }
    let dir = std::env::temp_dir().join(format!("ringway-demo-{}", std::process::id()));
    let written = write_example(&dir);
    let result = written.and_then(|()| demo(&dir, workers));
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn write_example(dir: &std::path::Path) -> Result<(), DemoError> {
    std::fs::create_dir_all(dir).map_err(|source| DemoError::Write {
        path: dir.to_owned(),
        source,
    })?;
    for (name, text) in FILES {
        let path = dir.join(name);
        let text = if name.ends_with("gateway.yaml") {
            text.replace("number: 80\n", &format!("number: {HTTP_GATEWAY_PORT}\n"))
        } else {
            text.to_owned()
        };
        std::fs::write(&path, text).map_err(|source| DemoError::Write { path, source })?;
    }
    Ok(())
}

fn demo(dir: &std::path::Path, workers: usize) -> Result<(), DemoError> {
    let options = RunOptions {
        source: Arc::new(Files::new(vec![dir.to_owned()])),
        pipeline: Pipeline::default(),
        workers: Some(workers),
        settings: Settings::default(),
        access_log: crate::accesslog::AccessLog::off(),
        admin: None,
        admin_expose: false,
        drain_timeout: std::time::Duration::ZERO,
        dns_refresh: std::time::Duration::ZERO,
        allow_empty_reload: false,
        identity: crate::metrics::Identity::default(),
    };
    let gateway = supervisor::start(&options)?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "\nringway demo: tcp-echo v1 (\"one\") on :19000, v2 (\"two\") on :29000; gateway on :{GATEWAY_PORT}, 80% v1 / 20% v2\n"
    );
    let mut ones = 0;
    let mut twos = 0;
    for n in 1..=CONNECTIONS {
        let reply = say(n).map_err(|source| DemoError::Client { n, source })?;
        match reply.split(' ').next() {
            Some("one") => ones += 1,
            Some("two") => twos += 1,
            _ => {}
        }
        let _ = writeln!(out, "  connection {n:>2}: {reply}");
    }
    let pct = |k: usize| k * 100 / CONNECTIONS;
    let _ = writeln!(
        out,
        "\nsplit over {CONNECTIONS} connections: one (v1) {ones} = {}%, two (v2) {twos} = {}%",
        pct(ones),
        pct(twos)
    );
    http_demo(&mut out)?;
    let _ = writeln!(
        out,
        "\nstill serving: try `nc 127.0.0.1 {GATEWAY_PORT}` and type a line, or \
         `curl -H Host:tomcat.istio.com 127.0.0.1:{HTTP_GATEWAY_PORT}/`; Ctrl-C stops.\n"
    );
    drop(out);
    process::wait_stop_signal();
    gateway.stop()?;
    Ok(())
}

/// Seed 004: 20 requests for `tomcat.istio.com` and their split, then one
/// for a host no VirtualService names.
fn http_demo(out: &mut impl Write) -> Result<(), DemoError> {
    let _ = writeln!(
        out,
        "\nseed 004: front-tomcat v1 on :18081, v2 on :18082; HTTP gateway on :{HTTP_GATEWAY_PORT} \
         for tomcat.istio.com, 90% v1 / 10% v2\n"
    );
    let mut counts = [0usize; 2];
    for n in 1..=REQUESTS {
        let (status, body) =
            get("tomcat.istio.com").map_err(|source| DemoError::Client { n, source })?;
        match body.as_str() {
            "front-tomcat v1" => counts[0] += 1,
            "front-tomcat v2" => counts[1] += 1,
            _ => {}
        }
        let _ = writeln!(out, "  request {n:>2}: {status} {body}");
    }
    let pct = |k: usize| k * 100 / REQUESTS;
    let _ = writeln!(
        out,
        "\nsplit over {REQUESTS} requests: v1 {} = {}%, v2 {} = {}%",
        counts[0],
        pct(counts[0]),
        counts[1],
        pct(counts[1])
    );
    let n = REQUESTS + 1;
    let (status, _) = get("other.example.com").map_err(|source| DemoError::Client { n, source })?;
    let _ = writeln!(out, "another host (other.example.com): {status}");
    Ok(())
}

/// `GET /` with `Host: host` on a connection of its own: the status line's
/// code and the body.
fn get(host: &str) -> std::io::Result<(String, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], HTTP_GATEWAY_PORT));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut response = String::new();
    std::io::Read::read_to_string(&mut s, &mut response)?;
    let status = response.split(' ').nth(1).unwrap_or_default().to_owned();
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .trim_end()
        .to_owned();
    Ok((status, body))
}

/// A small HTTP/1.1 server standing for the tutorial's Tomcat: every
/// request (no body expected) gets `front-tomcat <version>`, keep-alive
/// unless the client asked to close.
fn serve_http(listener: TcpListener, version: &'static str) {
    for conn in listener.incoming().flatten() {
        thread::spawn(move || {
            let Ok(read) = conn.try_clone() else { return };
            let mut conn = conn;
            let mut lines = BufReader::new(read);
            loop {
                let mut close = false;
                let mut line = String::new();
                let mut first = true;
                loop {
                    line.clear();
                    match lines.read_line(&mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    if line == "\r\n" {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    close |= lower.starts_with("connection:") && lower.contains("close");
                    close |= first && lower.ends_with("http/1.0\r\n");
                    first = false;
                }
                let body = format!("front-tomcat {version}\n");
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                if conn.write_all(reply.as_bytes()).is_err() || close {
                    let _ = conn.shutdown(Shutdown::Write);
                    return;
                }
            }
        });
    }
}

fn say(n: usize) -> std::io::Result<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], GATEWAY_PORT));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(format!("hello from connection {n}\n").as_bytes())?;
    s.shutdown(Shutdown::Write)?;
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply)?;
    Ok(reply.trim_end().to_owned())
}

/// Istio's tcp-echo server: every line is answered with `<prefix> <line>`.
fn serve_echo(listener: TcpListener, prefix: &'static str) {
    for conn in listener.incoming().flatten() {
        thread::spawn(move || {
            let Ok(read) = conn.try_clone() else { return };
            let mut conn = conn;
            for line in BufReader::new(read).lines() {
                let Ok(line) = line else { break };
                if conn
                    .write_all(format!("{prefix} {line}\n").as_bytes())
                    .is_err()
                {
                    break;
                }
            }
            let _ = conn.shutdown(Shutdown::Write);
        });
    }
}
