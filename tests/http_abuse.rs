//! Issue 15, overload and abuse: a slowloris head ends at the head timeout
//! holding at most one buffer; idle keep-alive client connections hold no
//! buffer and no pipe (`ringway_worker_buffers_held`,
//! `ringway_worker_pipes_held`); a client that pipelines requests for large
//! responses without reading is bounded.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::http_gw::{Site, virtual_service};
use common::origin::{Origin, Response, read_response};
use common::{PATIENCE, http, sample, wait_metrics};

const BUFFERS: &str = "ringway_worker_buffers_held";
const PIPES: &str = "ringway_worker_pipes_held";

/// Every request to subset `a`.
fn all_to_a() -> String {
    virtual_service(
        "svc",
        &["*"],
        "[{route: [{destination: {host: svc, subset: a}}]}]",
    )
}

/// ringway on one worker in front of `origin` (subset `a`), with `args`.
fn site(origin: Origin, args: &[&str]) -> Option<Site> {
    Site::with_origins(vec![("a", origin)], "", &[all_to_a()], args)
}

/// The two gauges, read once.
fn held(admin: u16) -> (u64, u64) {
    let (status, body) = http(admin, "GET", "/metrics");
    assert_eq!(status, 200);
    (sample(&body, BUFFERS, &[]), sample(&body, PIPES, &[]))
}

fn client(port: u16) -> (TcpStream, BufReader<TcpStream>) {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let read = BufReader::new(s.try_clone().unwrap());
    (s, read)
}

/// One GET on a kept-alive connection, and its body.
fn get(s: &mut TcpStream, read: &mut BufReader<TcpStream>, path: &str) -> Vec<u8> {
    write!(s, "GET {path} HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    let r = read_response(read).unwrap().expect("a response");
    assert_eq!(r.status, 200);
    r.body
}

#[test]
fn slowloris_gets_408_at_the_head_timeout_holding_at_most_one_buffer() {
    let origin = Origin::start(|_| Response::ok("ok"));
    let Some(site) = site(origin, &["--http-head-timeout", "3s"]) else {
        return;
    };
    let (mut s, mut read) = client(site.port);
    let head = b"GET / HTTP/1.1\r\nHost: h\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let since = Instant::now();
    let mut most = 0;
    // One byte a second until ringway gives up (a write fails once it closed).
    for byte in head.iter().take(6) {
        if s.write_all(&[*byte]).is_err() {
            break;
        }
        let (buffers, pipes) = held(site.admin);
        most = most.max(buffers);
        assert_eq!(pipes, 0, "no pipe for a head");
        thread::sleep(Duration::from_secs(1));
        if since.elapsed() > Duration::from_millis(2500) {
            break;
        }
    }
    assert!(most <= 1, "a dribbling head held {most} buffers");
    let response = read_response(&mut read).unwrap().expect("a 408");
    let waited = since.elapsed();
    assert_eq!(response.status, 408);
    assert_eq!(response.header("connection"), Some("close"));
    assert!(
        waited >= Duration::from_millis(2900) && waited < Duration::from_secs(8),
        "408 after {waited:?}"
    );
    assert!(
        read_response(&mut read).unwrap().is_none(),
        "closed after it"
    );
    wait_metrics(site.admin, |m| sample(m, BUFFERS, &[]) == 0);
    assert!(site.origin("a").requests().is_empty());
}

/// Raise this process's soft descriptor limit to at least `want`.
fn raise_nofile(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
}

#[test]
fn two_thousand_idle_keep_alive_connections_hold_no_buffer_and_no_pipe() {
    raise_nofile(8192);
    let origin = Origin::start(|r| Response::ok(r.target.clone()));
    let Some(site) = site(origin, &[]) else {
        return;
    };
    let mut conns: Vec<(TcpStream, BufReader<TcpStream>)> = (0..2000)
        .map(|i| {
            let (mut s, mut read) = client(site.port);
            assert_eq!(
                get(&mut s, &mut read, &format!("/c{i}")),
                format!("/c{i}").as_bytes()
            );
            (s, read)
        })
        .collect();
    let metrics = wait_metrics(site.admin, |m| {
        sample(m, "ringway_downstream_connections_active", &[]) >= 2000
    });
    assert_eq!(
        (sample(&metrics, BUFFERS, &[]), sample(&metrics, PIPES, &[])),
        (0, 0),
        "idle connections hold nothing"
    );
    // Still nothing a while later, with every connection still open.
    thread::sleep(Duration::from_secs(1));
    assert_eq!(held(site.admin), (0, 0));
    for (i, (s, read)) in conns.iter_mut().enumerate().step_by(97) {
        let path = format!("/again{i}");
        assert_eq!(get(s, read, &path), path.as_bytes());
    }
    assert_eq!(held(site.admin), (0, 0));
}

/// Body of the response to `target`: the target, then filler up to `len`.
fn big_body(target: &str, len: usize) -> Vec<u8> {
    let mut body = target.as_bytes().to_vec();
    body.resize(len, b'.');
    body
}

#[test]
fn a_client_pipelining_without_reading_is_bounded_and_then_served_in_order() {
    const REQUESTS: usize = 128;
    const RESPONSE: usize = 4 << 20;
    const UPLOAD: usize = 64 << 10;
    let origin = Origin::start(|r| Response::ok(big_body(&r.target, RESPONSE)));
    let Some(site) = site(origin, &[]) else {
        return;
    };
    let (s, mut read) = client(site.port);
    // The writer pipelines every request (each with a 64 KiB body) and
    // counts what it got through; it blocks once the buffers are full.
    let written = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (mut s, written) = (s.try_clone().unwrap(), Arc::clone(&written));
        thread::spawn(move || {
            let body = vec![b'b'; UPLOAD];
            for i in 0..REQUESTS {
                let head =
                    format!("POST /r{i} HTTP/1.1\r\nHost: h\r\nContent-Length: {UPLOAD}\r\n\r\n");
                s.write_all(head.as_bytes()).unwrap();
                s.write_all(&body).unwrap();
                written.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // While the client does not read: the writer stalls short of the end,
    // and the origin has seen only a few requests.
    let mut last = usize::MAX;
    let deadline = Instant::now() + PATIENCE;
    loop {
        thread::sleep(Duration::from_millis(500));
        let now = written.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        assert!(Instant::now() < deadline, "the writer never stalled");
        last = now;
    }
    assert!(
        last < REQUESTS,
        "every request went through unread responses"
    );
    let seen = site.origin("a").requests().len();
    assert!(
        seen <= 8,
        "the origin saw {seen} requests while the client read nothing"
    );
    // Now read: every response, in order.
    for i in 0..REQUESTS {
        let r = read_response(&mut read).unwrap().expect("a response");
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), RESPONSE);
        let target = format!("/r{i}");
        assert_eq!(
            &r.body[..target.len()],
            target.as_bytes(),
            "response {i} out of order"
        );
    }
    writer.join().unwrap();
    assert_eq!(site.origin("a").requests().len(), REQUESTS);
    let mut rest = [0u8; 1];
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    assert!(read.read(&mut rest).is_err(), "nothing more to read");
}
