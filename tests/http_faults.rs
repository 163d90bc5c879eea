//! Issue 13, faults: a route timeout (504 `UT`), retries past a dead
//! endpoint, every endpoint dead (503 `UF`), and `attempts: 0`; a slow
//! request head (408 at `--http-head-timeout`), an idle keep-alive client
//! (closed at `--http-idle-timeout`).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::http_gw::{destination_rule, gateway, service_entry, virtual_service};
use common::origin::{Origin, Response, read_response};
use common::{ConfigDir, Gate, PATIENCE, Ports, Ringway, access_log, until};

/// ringway on one worker for `*` on a reserved port, with subset `a` on
/// `endpoints` (in this order), DestinationRule `policy` and `routes` (the
/// `http:` list of VirtualService `svc`), its access log in JSON.
struct Faulty {
    _gw: Ringway,
    port: u16,
    log: PathBuf,
    _config: ConfigDir,
}

fn start(ports: &Ports, endpoints: &[u16], policy: &str, routes: &str) -> Option<Faulty> {
    start_with(ports, endpoints, policy, routes, &[])
}

/// [`start`] with more `ringway run` arguments.
fn start_with(
    ports: &Ports,
    endpoints: &[u16],
    policy: &str,
    routes: &str,
    more: &[&str],
) -> Option<Faulty> {
    let port = ports.listener();
    let endpoints: Vec<(u16, &str)> = endpoints.iter().map(|p| (*p, "a")).collect();
    let text = [
        gateway(port, &["*"]),
        service_entry(&endpoints),
        destination_rule(policy, &["a"]),
        virtual_service("svc", &["*"], routes),
    ]
    .join("---\n");
    let config = ConfigDir::new().file("svc.yaml", &text);
    let log = config.path().join("access.log");
    let mut args = vec![
        "--workers",
        "1",
        "--access-log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
    ];
    args.extend_from_slice(more);
    let gw = Ringway::start(&config, &args)?;
    Some(Faulty {
        _gw: gw,
        port,
        log,
        _config: config,
    })
}

/// `GET path` on a new connection: the response's status, waiting up to
/// [`PATIENCE`] for it.
fn get(port: u16, path: &str) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    let response = read_response(&mut BufReader::new(s)).unwrap();
    response
        .unwrap_or_else(|| panic!("no response to GET {path}"))
        .status
}

#[test]
fn a_route_timeout_of_1s_answers_504_ut_to_an_origin_that_takes_3s() {
    let ports = Ports::new();
    let slow = Origin::start(|r| {
        if r.target == "/slow" {
            std::thread::sleep(Duration::from_secs(3));
        }
        Response::ok("late")
    });
    let routes = "[{timeout: 1s, route: [{destination: {host: svc, subset: a}}]}]";
    let Some(gw) = start(&ports, &[slow.port], "", routes) else {
        return;
    };
    let started = Instant::now();
    assert_eq!(get(gw.port, "/slow"), 504);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_millis(2500),
        "answered after {took:?}"
    );
    assert_eq!(get(gw.port, "/fast"), 200);
    let lines = access_log(&gw.log, 2);
    assert_eq!(
        (
            lines[0]["response_code"].clone(),
            lines[0]["response_flags"].clone()
        ),
        (504.into(), "UT".into())
    );
    assert_eq!(lines[1]["response_code"], 200);
}

#[test]
fn a_dead_endpoint_beside_a_live_one_costs_no_request() {
    let ports = Ports::new();
    let dead = ports.closed();
    let live = Origin::start(|_| Response::ok("live"));
    let routes = "[{route: [{destination: {host: svc, subset: a}}]}]";
    let policy = "{loadBalancer: {simple: ROUND_ROBIN}}";
    let Some(gw) = start(&ports, &[dead, live.port], policy, routes) else {
        return;
    };
    let statuses: Vec<u16> = (0..20).map(|i| get(gw.port, &format!("/{i}"))).collect();
    assert_eq!(statuses, [200; 20]);
    assert_eq!(live.requests().len(), 20);
}

#[test]
fn every_endpoint_dead_answers_503_uf() {
    let ports = Ports::new();
    let (dead1, dead2) = (ports.closed(), ports.closed());
    let routes = "[{route: [{destination: {host: svc, subset: a}}]}]";
    let Some(gw) = start(&ports, &[dead1, dead2], "", routes) else {
        return;
    };
    assert_eq!(get(gw.port, "/"), 503);
    let line = &access_log(&gw.log, 1)[0];
    assert_eq!(line["response_code"], 503);
    let flags = line["response_flags"].as_str().unwrap();
    assert!(flags.split(',').any(|f| f == "UF"), "flags {flags}");
}

#[test]
fn retries_attempts_0_does_not_retry_a_dead_first_endpoint() {
    let ports = Ports::new();
    let dead = ports.closed();
    let live = Origin::start(|_| Response::ok("live"));
    let routes = "[{retries: {attempts: 0}, route: [{destination: {host: svc, subset: a}}]}]";
    let policy = "{loadBalancer: {simple: ROUND_ROBIN}}";
    let Some(gw) = start(&ports, &[dead, live.port], policy, routes) else {
        return;
    };
    let statuses: Vec<u16> = (0..10).map(|i| get(gw.port, &format!("/{i}"))).collect();
    let failed = statuses.iter().filter(|s| **s == 503).count();
    let served = statuses.iter().filter(|s| **s == 200).count();
    // Round robin over two endpoints sends some of ten requests to the
    // dead one: each of those fails, none is retried on the live one.
    assert!(failed >= 1, "{statuses:?}");
    assert_eq!(failed + served, 10, "{statuses:?}");
    assert_eq!(live.requests().len(), served);
    let lines = access_log(&gw.log, 10);
    let dead_host = format!("127.0.0.1:{dead}");
    for line in lines.iter().filter(|l| l["response_code"] == 503) {
        assert_eq!(line["upstream_host"], dead_host.as_str(), "{line}");
        assert_eq!(line["response_flags"], "UF", "{line}");
    }
}

#[test]
fn a_head_that_does_not_arrive_whole_in_time_gets_408_and_the_connection_closes() {
    let ports = Ports::new();
    let origin = Origin::start(|_| Response::ok("ok"));
    let routes = "[{route: [{destination: {host: svc, subset: a}}]}]";
    let more = ["--http-head-timeout", "1s"];
    let Some(gw) = start_with(&ports, &[origin.port], "", routes, &more) else {
        return;
    };
    // Slowloris: half a head, then nothing.
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: h\r\nX-Slow: ")
        .unwrap();
    let since = Instant::now();
    let mut read = BufReader::new(s);
    let response = read_response(&mut read).unwrap().expect("a 408");
    let waited = since.elapsed();
    assert_eq!(response.status, 408);
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    let connection = response
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .map(|(_, v)| v.as_str());
    assert_eq!(connection, Some("close"));
    assert!(
        read_response(&mut read).unwrap().is_none(),
        "closed after the 408"
    );
    assert!(origin.requests().is_empty(), "the origin saw nothing");
    let line = &access_log(&gw.log, 1)[0];
    assert_eq!(line["response_code"], 408, "{line}");
    assert_eq!(line["response_flags"], "DPE", "{line}");
}

#[test]
fn an_idle_keep_alive_client_connection_closes_at_the_idle_timeout() {
    let ports = Ports::new();
    let origin = Origin::start(|_| Response::ok("ok"));
    let routes = "[{route: [{destination: {host: svc, subset: a}}]}]";
    let more = ["--http-idle-timeout", "1s"];
    let Some(gw) = start_with(&ports, &[origin.port], "", routes, &more) else {
        return;
    };
    let s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut write = s.try_clone().unwrap();
    let mut read = BufReader::new(s);
    write
        .write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap();
    assert_eq!(
        read_response(&mut read)
            .unwrap()
            .expect("a response")
            .status,
        200
    );
    let since = Instant::now();
    assert!(
        read_response(&mut read).unwrap().is_none(),
        "closed while idle"
    );
    let waited = since.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
}

#[test]
fn retry_on_5xx_sends_the_request_again_and_the_default_policy_does_not() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let ports = Ports::new();
    // Every other request fails with 503, starting with the first.
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&seen);
    let flaky = Origin::start(move |_| {
        if counter.fetch_add(1, Ordering::Relaxed) % 2 == 0 {
            Response::status(503, "busy")
        } else {
            Response::ok("fine")
        }
    });
    let routes = "[{match: [{uri: {prefix: /retried}}], retries: {attempts: 2, retryOn: 5xx}, \
                  route: [{destination: {host: svc, subset: a}}]}, \
                  {route: [{destination: {host: svc, subset: a}}]}]";
    let Some(gw) = start(&ports, &[flaky.port], "", routes) else {
        return;
    };
    // retryOn 5xx: the 503 is dropped, the request goes again, 200.
    assert_eq!(get(gw.port, "/retried"), 200);
    assert_eq!(flaky.requests().len(), 2);
    // Istio's default policy retries connect failures only: the 503
    // reaches the client.
    assert_eq!(get(gw.port, "/plain"), 503);
    assert_eq!(flaky.requests().len(), 3);
}

#[test]
fn http2_max_requests_caps_the_requests_in_flight_to_a_cluster_with_503_uo() {
    use std::sync::atomic::Ordering;

    let ports = Ports::new();
    // The origin holds every request until the gate opens.
    let gate = Gate::default();
    let (slow, arrived) = Origin::gated("slow", &gate);
    let policy = "{connectionPool: {http: {http2MaxRequests: 1}}}";
    let routes = "[{route: [{destination: {host: svc, subset: a}}]}]";
    let Some(gw) = start(&ports, &[slow.port], policy, routes) else {
        return;
    };
    let port = gw.port;
    let first = std::thread::spawn(move || get(port, "/first"));
    until("the first request at the origin", || {
        arrived.load(Ordering::Relaxed) == 1
    });
    // The first is in flight until the gate opens: the second is over the
    // cap.
    assert_eq!(get(gw.port, "/second"), 503);
    gate.open();
    assert_eq!(first.join().unwrap(), 200);
    // The cap is given back when a request ends.
    assert_eq!(get(gw.port, "/third"), 200);
    let lines = access_log(&gw.log, 3);
    let flags: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["path"].as_str().unwrap(),
                l["response_flags"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(flags.contains(&("/second", "UO")), "{flags:?}");
    assert_eq!(slow.requests().len(), 2);
}
