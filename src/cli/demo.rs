//! `ringway demo`: Istio's tcp-echo traffic-shifting tutorial on one
//! machine with nothing else installed. Starts two built-in tcp-echo
//! backends (v1 answers `one <line>`, v2 `two <line>`, like Istio's sample
//! server), runs the gateway on the bundled example (80% v1, 20% v2), sends
//! 20 connections, prints the split, and keeps serving until Ctrl-C.
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
const FILES: [(&str, &str); 3] = [
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
];

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
        "cannot start the built-in tcp-echo backend on 127.0.0.1:{port}: {source} (is another demo running?)"
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
    let _ = writeln!(
        out,
        "\nstill serving: try `nc 127.0.0.1 {GATEWAY_PORT}` and type a line; Ctrl-C stops.\n"
    );
    drop(out);
    process::wait_stop_signal();
    gateway.stop()?;
    Ok(())
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
