//! Reload (SPEC §4): established connections keep their table, new ones
//! follow the new one at once, listeners come and go, a bad configuration
//! changes nothing.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{ConfigDir, EchoBackend, Ringway, free_port, say};

const PATIENCE: Duration = Duration::from_secs(10);

/// Two TCP servers (`ports`) routed to subset `subset` of a service whose
/// endpoints are `v1` (version v1) and `v2` (version v2).
fn yaml(ports: &[u16], subset: &str, v1: u16, v2: u16) -> String {
    let servers: String = ports
        .iter()
        .map(|p| {
            format!("  - port:\n      number: {p}\n      name: tcp-{p}\n      protocol: TCP\n    hosts:\n    - \"*\"\n")
        })
        .collect();
    format!(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: gw
spec:
  selector:
    istio: ingressgateway
  servers:
{servers}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: svc
spec:
  hosts:
  - \"*\"
  gateways:
  - gw
  tcp:
  - route:
    - destination:
        host: svc
        port:
          number: 9000
        subset: {subset}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: svc
spec:
  host: svc
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: svc
spec:
  hosts:
  - svc.default.svc.cluster.local
  resolution: STATIC
  ports:
  - number: 9000
    name: tcp
    protocol: TCP
  endpoints:
  - address: 127.0.0.1
    ports:
      tcp: {v1}
    labels:
      version: v1
  - address: 127.0.0.1
    ports:
      tcp: {v2}
    labels:
      version: v2
"
    )
}

/// An HTTP/1.0 request to the admin endpoint: (status, body).
fn http(port: u16, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(s, "{method} {path} HTTP/1.0\r\nContent-Length: 0\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    (status, body)
}

/// One line over an open connection.
fn chat(s: &mut BufReader<TcpStream>, line: &str) -> String {
    s.get_mut()
        .write_all(format!("{line}\n").as_bytes())
        .unwrap();
    let mut reply = String::new();
    s.read_line(&mut reply).unwrap();
    reply.trim_end().to_owned()
}

fn open(port: u16) -> BufReader<TcpStream> {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    BufReader::new(s)
}

fn start(config: &ConfigDir, admin: u16) -> Option<Ringway> {
    let address = format!("127.0.0.1:{admin}");
    Ringway::start(config, &["--workers", "2", "--admin", &address])
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn established_connections_survive_a_reload_that_reroutes_and_removes_their_listener() {
    let (v1, v2) = (EchoBackend::lines("one"), EchoBackend::lines("two"));
    let (a, b, c, admin) = (free_port(), free_port(), free_port(), free_port());
    let config = ConfigDir::new().file("svc.yaml", &yaml(&[a, b], "v1", v1.port, v2.port));
    let Some(_gw) = start(&config, admin) else {
        return;
    };
    let mut on_a = open(a);
    let mut on_b = open(b);
    assert_eq!(chat(&mut on_a, "x"), "one x");
    assert_eq!(chat(&mut on_b, "x"), "one x");

    write(
        &config.path().join("svc.yaml"),
        &yaml(&[a, c], "v2", v1.port, v2.port),
    );
    let (status, body) = http(admin, "POST", "/reload");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"generation\": 2"), "{body}");
    // A new listener opens (each worker binds its own socket on wake).
    let deadline = Instant::now() + PATIENCE;
    while TcpStream::connect(("127.0.0.1", c)).is_err() {
        assert!(Instant::now() < deadline, "port {c} never opened");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(say(c, "new"), "two new");

    // New connections follow the new table at once.
    for i in 0..4 {
        assert_eq!(say(a, &format!("n{i}")), format!("two n{i}"));
    }
    // The established ones keep theirs, listener gone or not.
    assert_eq!(chat(&mut on_a, "y"), "one y");
    assert_eq!(chat(&mut on_b, "y"), "one y");
    // The removed port refuses new connections (once every worker woke).
    let deadline = Instant::now() + PATIENCE;
    while TcpStream::connect(("127.0.0.1", b)).is_ok() {
        assert!(Instant::now() < deadline, "port {b} still accepts");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(chat(&mut on_b, "z"), "one z");
}

#[test]
fn a_reload_whose_new_port_is_taken_is_refused() {
    let (v1, v2) = (EchoBackend::lines("one"), EchoBackend::lines("two"));
    let (a, admin) = (free_port(), free_port());
    let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let t = taken.local_addr().unwrap().port();
    let config = ConfigDir::new().file("svc.yaml", &yaml(&[a], "v1", v1.port, v2.port));
    let Some(_gw) = start(&config, admin) else {
        return;
    };
    write(
        &config.path().join("svc.yaml"),
        &yaml(&[a, t], "v2", v1.port, v2.port),
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
    let (v1, v2) = (EchoBackend::lines("one"), EchoBackend::lines("two"));
    let (a, admin) = (free_port(), free_port());
    let good = yaml(&[a], "v1", v1.port, v2.port);
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

    write(&file, &yaml(&[a], "v2", v1.port, v2.port));
    let (status, body) = http(admin, "POST", "/reload");
    assert_eq!(status, 200, "{body}");
    assert_eq!(say(a, "fixed"), "two fixed");

    // SIGHUP reloads too.
    write(&file, &good);
    // SAFETY: kill(2) on the child we spawned.
    unsafe {
        libc::kill(gw.pid() as i32, libc::SIGHUP);
    }
    let deadline = Instant::now() + PATIENCE;
    while !http(admin, "GET", "/metrics")
        .1
        .contains("ringway_config_generation 3")
    {
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(say(a, "hup"), "one hup");
}
