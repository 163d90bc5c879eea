//! HTTP under reload and drain (issue 13): each request follows the table
//! current when its head arrives, a keep-alive connection included, and no
//! request is lost across a reload; SIGTERM lets the request in flight
//! finish (its response says `Connection: close`) and closes idle
//! keep-alive connections at once.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::origin::{Origin, Response, read_response};
use common::{ConfigDir, Gate, PATIENCE, Ports, Ringway, http, sample, until, wait_metrics};

/// An HTTP gateway on `listen` for host `shop.example.com`, weighted
/// between subsets v1 and v2 of a service whose endpoints are `v1` and
/// `v2`.
fn config(listen: u16, weights: (u32, u32), v1: u16, v2: u16) -> String {
    let (w1, w2) = weights;
    format!(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {listen}, name: http, protocol: HTTP}}
    hosts: [shop.example.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: shop}}
spec:
  hosts: [shop.example.com]
  gateways: [gw]
  http:
  - name: shop
    route:
    - destination: {{host: shop.default.svc.cluster.local, subset: v1}}
      weight: {w1}
    - destination: {{host: shop.default.svc.cluster.local, subset: v2}}
      weight: {w2}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: shop}}
spec:
  host: shop.default.svc.cluster.local
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: shop}}
spec:
  hosts: [shop.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {v1}}}, labels: {{version: v1}}}}
  - {{address: 127.0.0.1, ports: {{http: {v2}}}, labels: {{version: v2}}}}
"
    )
}

/// An origin answering `name` to every request, after `delay`.
fn origin(name: &'static str, delay: Duration) -> Origin {
    Origin::start(move |_| {
        thread::sleep(delay);
        Response::ok(name)
    })
}

/// One keep-alive client connection.
struct Client {
    write: TcpStream,
    read: BufReader<TcpStream>,
}

impl Client {
    fn connect(port: u16) -> Client {
        let write = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write.set_read_timeout(Some(PATIENCE)).unwrap();
        let read = BufReader::new(write.try_clone().unwrap());
        Client { write, read }
    }

    /// `GET /` for shop.example.com: status, body, `connection` header.
    fn get(&mut self) -> (u16, String, Option<String>) {
        self.write
            .write_all(b"GET / HTTP/1.1\r\nHost: shop.example.com\r\n\r\n")
            .unwrap();
        let r = read_response(&mut self.read).unwrap().expect("a response");
        let connection = r
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("connection"))
            .map(|(_, v)| v.to_ascii_lowercase());
        (r.status, String::from_utf8(r.body).unwrap(), connection)
    }
}

fn reload(admin: u16) {
    let (status, body) = http(admin, "POST", "/reload");
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_reload_flips_weights_for_the_next_request_on_the_same_keep_alive_connection() {
    let ports = Ports::new();
    let (listen, admin) = (ports.listener(), ports.admin());
    let (v1, v2) = (origin("v1", Duration::ZERO), origin("v2", Duration::ZERO));
    let dir = ConfigDir::new().file("shop.yaml", &config(listen, (100, 0), v1.port, v2.port));
    let address = format!("127.0.0.1:{admin}");
    let Some(_gw) = Ringway::start(&dir, &["--workers", "2", "--admin", &address]) else {
        return;
    };
    // Keep-alive traffic on 4 connections throughout, counting every
    // answer: none may be lost or fail across the reloads.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let traffic: Vec<_> = (0..4)
        .map(|_| {
            let (stop, answered) = (Arc::clone(&stop), Arc::clone(&answered));
            thread::spawn(move || {
                let mut c = Client::connect(listen);
                while !stop.load(Ordering::Relaxed) {
                    let (status, body, _) = c.get();
                    assert_eq!(status, 200, "{body}");
                    assert!(body == "v1" || body == "v2", "{body}");
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let mut mine = Client::connect(listen);
    assert_eq!(mine.get().1, "v1");
    for (round, (weights, want)) in [((0, 100), "v2"), ((100, 0), "v1"), ((0, 100), "v2")]
        .into_iter()
        .enumerate()
    {
        std::fs::write(
            dir.path().join("shop.yaml"),
            config(listen, weights, v1.port, v2.port),
        )
        .unwrap();
        reload(admin);
        // The very next request on the same connection follows the new
        // table.
        let (status, body, connection) = mine.get();
        assert_eq!((status, body.as_str()), (200, want), "round {round}");
        assert_ne!(connection.as_deref(), Some("close"), "round {round}");
    }
    stop.store(true, Ordering::Relaxed);
    for t in traffic {
        t.join().unwrap();
    }
    assert!(answered.load(Ordering::Relaxed) > 0);
}

#[test]
fn sigterm_lets_the_request_in_flight_finish_and_closes_idle_keep_alive_connections() {
    let ports = Ports::new();
    let (listen, admin) = (ports.listener(), ports.admin());
    // The origin holds every request until the gate opens.
    let gate = Gate::default();
    let (slow, arrived) = Origin::gated("v1", &gate);
    let dir = ConfigDir::new().file("shop.yaml", &config(listen, (100, 0), slow.port, slow.port));
    let address = format!("127.0.0.1:{admin}");
    let args = [
        "--workers",
        "1",
        "--drain-timeout",
        "20s",
        "--admin",
        &address,
    ];
    let Some(gw) = Ringway::start(&dir, &args) else {
        return;
    };
    // An idle keep-alive connection, and one with a request in flight.
    let mut idle = TcpStream::connect(("127.0.0.1", listen)).unwrap();
    idle.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut busy = Client::connect(listen);
    busy.write
        .write_all(b"GET / HTTP/1.1\r\nHost: shop.example.com\r\n\r\n")
        .unwrap();
    until("the request at the origin", || {
        arrived.load(Ordering::Relaxed) == 1
    });
    // Both connections accepted: the idle one is ringway's, not the
    // listen backlog's.
    wait_metrics(admin, |m| {
        sample(m, "ringway_downstream_connections_active", &[]) == 2
    });
    let since = Instant::now();
    gw.signal("TERM");
    // The idle one closes at once, without a byte.
    let mut byte = [0u8; 1];
    assert_eq!(
        idle.read(&mut byte).unwrap(),
        0,
        "idle keep-alive connection closed"
    );
    assert!(
        since.elapsed() < Duration::from_secs(1),
        "{:?}",
        since.elapsed()
    );
    // The busy one gets its whole response, which closes the connection.
    gate.open();
    let r = read_response(&mut busy.read)
        .unwrap()
        .expect("the response in flight");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"v1"[..]));
    let connection = r
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .map(|(_, v)| v.to_ascii_lowercase());
    assert_eq!(connection.as_deref(), Some("close"));
    assert_eq!(
        busy.read.read(&mut byte).unwrap(),
        0,
        "closed after the response"
    );
    let status = gw.wait_exit();
    assert!(status.success(), "{status}");
}
