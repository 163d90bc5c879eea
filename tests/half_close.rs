//! Half-close both ways: a FIN from one side reaches the other once what was
//! read has been written, and the other direction keeps flowing. Every test
//! also reads the connection's access-log line: one line, no flag, and the
//! exact bytes each way.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{
    ConfigDir, EchoBackend, PATIENCE, Ports, Ringway, access_log, connect, read_to_end, tcp_service,
};

/// ringway on one worker in front of one upstream, with a JSON access log;
/// holds what the test needs until it ends.
struct Gateway {
    gw: Ringway,
    listen: u16,
    log: PathBuf,
    _logs: tempfile::TempDir,
    _config: ConfigDir,
    _ports: Ports,
}

impl Gateway {
    fn start(upstream: u16) -> Option<Gateway> {
        let ports = Ports::new();
        let logs = tempfile::tempdir().unwrap();
        let log = logs.path().join("access.log");
        let listen = ports.listener();
        let config = tcp_service(listen, &[upstream], "");
        let args = [
            "--workers",
            "1",
            "--access-log",
            log.to_str().unwrap(),
            "--log-format",
            "json",
        ];
        let gw = Ringway::start(&config, &args)?;
        Some(Gateway {
            gw,
            listen,
            log,
            _logs: logs,
            _config: config,
            _ports: ports,
        })
    }

    /// Stop ringway (so the access log is complete) and check its one
    /// line: no flag, `up` bytes downstream→upstream, `down` bytes back.
    fn one_clean_line(self, up: usize, down: usize) {
        let status = self.gw.terminate();
        assert_eq!(status.code(), Some(0), "{status}");
        let lines = access_log(&self.log, 1);
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = &lines[0];
        assert_eq!(line["response_flags"], "-", "{line}");
        assert_eq!(line["bytes_received"], up, "{line}");
        assert_eq!(line["bytes_sent"], down, "{line}");
    }
}

/// What `conn` sends until its EOF, and whether it ended with a FIN (`Ok`)
/// or an error (a reset).
fn until_eof(conn: &mut TcpStream) -> (Vec<u8>, Result<(), ErrorKind>) {
    let (bytes, end) = read_to_end(conn);
    (bytes, end.map_err(|e| e.kind()))
}

/// An upstream that serves one connection with `serve`, and sends back
/// what the closure returns.
fn upstream<T: Send + 'static>(
    serve: impl FnOnce(TcpStream) -> T + Send + 'static,
) -> (u16, mpsc::Receiver<T>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let (conn, _) = l.accept().unwrap();
        conn.set_read_timeout(Some(PATIENCE)).unwrap();
        let _ = tx.send(serve(conn));
    });
    (port, rx)
}

#[test]
fn client_fin_after_its_line_still_gets_the_reply() {
    // `(date; sleep 1) | nc host port`, and nc closing its write side at once.
    let backend = EchoBackend::lines("one");
    let Some(gw) = Gateway::start(backend.port) else {
        return;
    };
    let mut s = connect(gw.listen);
    let line = b"Sun Nov 22 03:00:00 UTC 2026\n";
    s.write_all(line).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    // The backend answers, sees the FIN and closes: the reply, then EOF.
    let (reply, end) = read_to_end(&mut s);
    assert!(end.is_ok(), "clean EOF expected, got {end:?}");
    assert_eq!(
        String::from_utf8_lossy(&reply),
        "one Sun Nov 22 03:00:00 UTC 2026\n"
    );
    gw.one_clean_line(line.len(), reply.len());
}

#[test]
fn client_that_sends_then_waits_before_fin_gets_the_reply() {
    // The upstream reads to EOF, then answers with what it got: its reply
    // can only come after the client's FIN has reached it.
    let (port, got) = upstream(|mut conn| {
        let (request, end) = until_eof(&mut conn);
        conn.write_all(format!("got {} bytes\n", request.len()).as_bytes())
            .unwrap();
        (request, end)
    });
    let Some(gw) = Gateway::start(port) else {
        return;
    };
    let mut s = connect(gw.listen);
    s.write_all(b"date\n").unwrap();
    thread::sleep(Duration::from_millis(300));
    s.write_all(b"time\n").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let (reply, end) = read_to_end(&mut s);
    assert!(end.is_ok(), "clean EOF expected, got {end:?}");
    assert_eq!(String::from_utf8_lossy(&reply), "got 10 bytes\n");
    let (request, end) = got.recv_timeout(PATIENCE).unwrap();
    assert_eq!(request, b"date\ntime\n");
    assert_eq!(end, Ok(()), "the upstream saw a FIN, not a reset");
    gw.one_clean_line(10, reply.len());
}

#[test]
fn upstream_fin_reaches_the_client_which_can_still_send() {
    // The upstream says hello, closes its write side, and keeps reading.
    let (port, got) = upstream(|mut conn| {
        conn.write_all(b"hello\n").unwrap();
        conn.shutdown(Shutdown::Write).unwrap();
        let (rest, end) = until_eof(&mut conn);
        (rest, end)
    });
    let Some(gw) = Gateway::start(port) else {
        return;
    };
    let s = connect(gw.listen);
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "hello\n");
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "the upstream FIN arrives as EOF");
    // The client's direction still flows, in pieces, after that EOF.
    let mut s = s;
    s.write_all(b"still ").unwrap();
    thread::sleep(Duration::from_millis(100));
    s.write_all(b"here\n").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let (got, end) = got
        .recv_timeout(PATIENCE)
        .expect("upstream saw the client's bytes and FIN");
    assert_eq!(got, b"still here\n");
    assert_eq!(end, Ok(()), "the upstream saw a FIN, not a reset");
    gw.one_clean_line(11, 6);
}

/// 1 MiB that is not a repetition of a short pattern.
fn payload() -> Vec<u8> {
    (0u32..1 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

#[test]
fn a_bulk_response_flows_after_the_client_fin() {
    // The client sends its request and FIN; the upstream reads to EOF and
    // only then sends 1 MiB (past the splice threshold) and closes.
    let (port, got) = upstream(|mut conn| {
        let (request, end) = until_eof(&mut conn);
        conn.write_all(&payload()).unwrap();
        (request, end)
    });
    let Some(gw) = Gateway::start(port) else {
        return;
    };
    let mut s = connect(gw.listen);
    s.write_all(b"GET everything\n").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let (reply, end) = read_to_end(&mut s);
    assert!(end.is_ok(), "clean EOF expected, got {end:?}");
    assert_eq!(reply.len(), 1 << 20);
    assert!(reply == payload(), "the 1 MiB arrived altered");
    let (request, end) = got.recv_timeout(PATIENCE).unwrap();
    assert_eq!(request, b"GET everything\n");
    assert_eq!(end, Ok(()));
    gw.one_clean_line(15, 1 << 20);
}

#[test]
fn a_bulk_request_flows_after_the_upstream_fin() {
    // The mirror image: the upstream answers at once and closes its write
    // side; the client then sends 1 MiB, which must all arrive before its
    // FIN does.
    let (port, got) = upstream(|mut conn| {
        conn.write_all(b"send it\n").unwrap();
        conn.shutdown(Shutdown::Write).unwrap();
        let (request, end) = until_eof(&mut conn);
        (request, end)
    });
    let Some(gw) = Gateway::start(port) else {
        return;
    };
    let mut s = connect(gw.listen);
    let (reply, end) = read_to_end(&mut s);
    assert!(end.is_ok(), "clean EOF expected, got {end:?}");
    assert_eq!(reply, b"send it\n");
    s.write_all(&payload()).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let (request, end) = got.recv_timeout(PATIENCE).unwrap();
    assert_eq!(end, Ok(()), "the upstream saw a FIN, not a reset");
    assert_eq!(request.len(), 1 << 20);
    assert!(request == payload(), "the 1 MiB arrived altered");
    gw.one_clean_line(1 << 20, 8);
}
