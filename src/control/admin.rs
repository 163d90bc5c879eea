//! The admin endpoint (`--admin`, default 127.0.0.1:15000): readiness,
//! health, Prometheus metrics, the compiled table, and reload. Served by a
//! small HTTP library on its own thread, never on a worker ring.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;

use serde::Serialize;
use tiny_http::{Header, Method, Request, Response, Server};

/// What the admin endpoint asks of the running gateway.
pub trait Admin: Send + Sync + 'static {
    /// Every listener is bound and the gateway is not draining.
    fn ready(&self) -> bool;
    /// Prometheus text exposition.
    fn metrics(&self) -> String;
    /// The compiled table in use, with endpoint health, as JSON.
    fn config_dump(&self) -> String;
    /// Loads, compiles and publishes the configuration: the new generation,
    /// or every error (each naming its file and line).
    fn reload(&self) -> Result<u64, Vec<String>>;
}

/// A running admin server; `stop` (or drop) ends its thread.
pub struct AdminServer {
    server: Arc<Server>,
    thread: Option<thread::JoinHandle<()>>,
    pub address: SocketAddr,
}

impl AdminServer {
    pub fn start(address: SocketAddr, admin: Arc<dyn Admin>) -> io::Result<AdminServer> {
        let server = Arc::new(Server::http(address).map_err(io::Error::other)?);
        let address = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| io::Error::other("admin address is not IP"))?;
        let serving = server.clone();
        let thread = thread::Builder::new().name("admin".into()).spawn(move || {
            for request in serving.incoming_requests() {
                respond(request, admin.as_ref());
            }
        })?;
        tracing::info!(%address, "admin endpoint listening");
        Ok(AdminServer {
            server,
            thread: Some(thread),
            address,
        })
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[derive(Serialize)]
struct ReloadOk {
    generation: u64,
}

#[derive(Serialize)]
struct ReloadFailed {
    errors: Vec<String>,
}

fn respond(request: Request, admin: &dyn Admin) {
    let path = request.url().split('?').next().unwrap_or("").to_owned();
    let method = request.method().clone();
    let (status, content_type, body) = match (&method, path.as_str()) {
        (Method::Get | Method::Head, "/ready") => match admin.ready() {
            true => (200, TEXT, "ready\n".to_owned()),
            false => (503, TEXT, "not ready\n".to_owned()),
        },
        (Method::Get | Method::Head, "/healthz") => (200, TEXT, "ok\n".to_owned()),
        (Method::Get | Method::Head, "/metrics" | "/stats/prometheus") => (200, PROMETHEUS, admin.metrics()),
        (Method::Get | Method::Head, "/config_dump") => (200, JSON, admin.config_dump()),
        (Method::Post, "/reload") => match admin.reload() {
            Ok(generation) => (200, JSON, json(&ReloadOk { generation })),
            Err(errors) => (400, JSON, json(&ReloadFailed { errors })),
        },
        (_, "/ready" | "/healthz" | "/metrics" | "/stats/prometheus" | "/config_dump" | "/reload") => {
            (405, TEXT, format!("{method} is not allowed on {path}\n"))
        }
        _ => (
            404,
            TEXT,
            "not found; try /ready, /healthz, /metrics, /stats/prometheus, /config_dump, POST /reload\n".to_owned(),
        ),
    };
    let mut response = Response::from_string(body).with_status_code(status);
    if let Ok(header) = Header::from_bytes("Content-Type", content_type) {
        response = response.with_header(header);
    }
    let _ = request.respond(response);
}

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";
const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

fn json<T: Serialize>(value: &T) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use super::*;

    #[derive(Default)]
    struct Fake {
        ready: AtomicBool,
        generation: AtomicU64,
    }

    impl Admin for Fake {
        fn ready(&self) -> bool {
            self.ready.load(Ordering::Relaxed)
        }
        fn metrics(&self) -> String {
            "ringway_workers 2\n".to_owned()
        }
        fn config_dump(&self) -> String {
            "{\"generation\": 1}".to_owned()
        }
        fn reload(&self) -> Result<u64, Vec<String>> {
            match self.generation.fetch_add(1, Ordering::Relaxed) {
                0 => Err(vec!["bad.yaml:3: invalid YAML".to_owned()]),
                g => Ok(g + 1),
            }
        }
    }

    fn http(address: SocketAddr, request: &str) -> (u16, String) {
        let mut s = TcpStream::connect(address).expect("connect");
        s.write_all(request.as_bytes()).expect("write");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("read");
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("status");
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
        (status, body)
    }

    fn get(address: SocketAddr, path: &str) -> (u16, String) {
        http(
            address,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        )
    }

    #[test]
    fn serves_every_endpoint() {
        let fake = Arc::new(Fake::default());
        let server =
            AdminServer::start("127.0.0.1:0".parse().expect("addr"), fake.clone()).expect("start");
        let a = server.address;
        assert_eq!(get(a, "/ready"), (503, "not ready\n".to_owned()));
        fake.ready.store(true, Ordering::Relaxed);
        assert_eq!(get(a, "/ready"), (200, "ready\n".to_owned()));
        assert_eq!(get(a, "/healthz").0, 200);
        assert_eq!(get(a, "/metrics"), (200, "ringway_workers 2\n".to_owned()));
        assert_eq!(get(a, "/stats/prometheus").0, 200);
        assert_eq!(get(a, "/config_dump").1, "{\"generation\": 1}");
        assert_eq!(get(a, "/nope").0, 404);
        assert_eq!(get(a, "/reload").0, 405);
        let post =
            "POST /reload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        let (status, body) = http(a, post);
        assert_eq!(status, 400);
        assert!(body.contains("bad.yaml:3: invalid YAML"), "{body}");
        let (status, body) = http(a, post);
        assert_eq!(status, 200);
        assert!(body.contains("\"generation\": 2"), "{body}");
        server.stop();
    }
}
