//! Upgrades through ringway (README "HTTP routing": upgrades): a WebSocket
//! handshake becomes a TCP tunnel after the upstream's 101 (echo of 1 MiB
//! messages both ways, half-close and reset like TCP, logged and metered
//! with 101); other upgrades, CONNECT and the HTTP/2 preface are refused
//! and the connection closed; `h2c` is stripped and served as HTTP/1.1.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::http_gw::{Routed, Site, exchange, named, virtual_service};
use common::{access_log, listen_any, sample, wait_metrics};

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ROUTE: &str = "[{route: [{destination: {host: svc, subset: a}}]}]";

/// How the WebSocket backend ends a connection.
#[derive(Clone, Copy)]
enum End {
    /// Echo every message; on a Close frame, read to the client's FIN,
    /// then answer Close and close (the client half-closed first).
    AfterClientFin,
    /// Echo one message, then send "bye" and half-close; echo what still
    /// comes until the client's FIN.
    HalfCloseFirst,
    /// Echo one message, then reset the connection.
    Reset,
}

/// A WebSocket echo server: the request heads it read.
fn websocket_backend(end: End) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = listen_any(64);
    let port = listener.local_addr().unwrap().port();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&heads);
    thread::spawn(move || serve_websockets(listener, end, &seen));
    (port, heads)
}

fn serve_websockets(listener: TcpListener, end: End, seen: &Mutex<Vec<String>>) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { return };
        let mut read = BufReader::new(conn.try_clone().unwrap());
        let head = read_head(&mut read);
        seen.lock().unwrap().push(head.clone());
        let key = header(&head, "sec-websocket-key").unwrap_or_default();
        let mut write = conn;
        write!(
            write,
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            accept_key(&key)
        )
        .unwrap();
        echo(&mut read, &mut write, end);
    }
}

fn echo(read: &mut impl Read, write: &mut TcpStream, end: End) {
    let mut echoed = 0;
    while let Some((opcode, payload)) = read_frame(read) {
        if opcode == 8 {
            // The client's Close: its FIN follows; answer after it.
            let mut rest = Vec::new();
            let _ = read.read_to_end(&mut rest);
            let _ = write.write_all(&frame(8, &payload, None));
            return;
        }
        write.write_all(&frame(opcode, &payload, None)).unwrap();
        echoed += 1;
        match end {
            End::HalfCloseFirst if echoed == 1 => {
                write.write_all(&frame(1, b"bye", None)).unwrap();
                write.shutdown(Shutdown::Write).unwrap();
            }
            End::Reset => {
                socket2::SockRef::from(&*write)
                    .set_linger(Some(Duration::ZERO))
                    .unwrap();
                return;
            }
            _ => {}
        }
    }
}

/// Read a head up to its blank line.
fn read_head(read: &mut impl BufRead) -> String {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if read.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
            return head;
        }
        head.push_str(&line);
    }
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

/// One frame: (opcode, unmasked payload); `None` at EOF.
fn read_frame(read: &mut impl Read) -> Option<(u8, Vec<u8>)> {
    let mut two = [0u8; 2];
    read.read_exact(&mut two).ok()?;
    let opcode = two[0] & 0x0f;
    let masked = two[1] & 0x80 != 0;
    let len = match two[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            read.read_exact(&mut b).ok()?;
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            read.read_exact(&mut b).ok()?;
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    let mut mask = [0u8; 4];
    if masked {
        read.read_exact(&mut mask).ok()?;
    }
    let mut payload = vec![0u8; usize::try_from(len).ok()?];
    read.read_exact(&mut payload).ok()?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    Some((opcode, payload))
}

/// A final frame; `mask`: a client's.
fn frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    let bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(bit | n as u8),
        n if n <= 0xffff => {
            out.push(bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(m) => {
            out.extend_from_slice(&m);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// Sec-WebSocket-Accept for `key` (RFC 6455 §4.2.2).
fn accept_key(key: &str) -> String {
    let mut input = key.as_bytes().to_vec();
    input.extend_from_slice(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64(&sha1(&input))
}

/// SHA-1 (FIPS 180-4), here only to compute Sec-WebSocket-Accept: not
/// worth a dependency.
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for block in msg.chunks(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A827999),
                20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                _ => (b ^ c ^ d, 0xCA62C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            (e, d, c, b, a) = (d, c, b.rotate_left(30), a, t);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (i, x) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&x.to_be_bytes());
    }
    out
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn the_accept_key_is_rfc_6455s_example() {
    assert_eq!(accept_key(KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

/// Open a WebSocket through the gateway: the 101 head the client read.
fn handshake(port: u16) -> (BufReader<TcpStream>, TcpStream, String) {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut write = s.try_clone().unwrap();
    write!(
        write,
        "GET /chat HTTP/1.1\r\nHost: ws.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut read = BufReader::new(s);
    let head = read_head(&mut read);
    (read, write, head)
}

/// A WebSocket open through the gateway to a backend that ends as `end`
/// says: the client's reading and writing sides.
fn tunnel(end: End) -> Option<(Routed, BufReader<TcpStream>, TcpStream)> {
    let (backend, _) = websocket_backend(end);
    let gw = Routed::start(backend)?;
    let (read, write, head) = handshake(gw.port);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    Some((gw, read, write))
}

fn message(round: u8) -> Vec<u8> {
    (0..1024 * 1024)
        .map(|i: u32| (i % 251) as u8 ^ round)
        .collect()
}

#[test]
fn websocket_echo_of_1_mib_messages_both_ways() {
    let (backend, heads) = websocket_backend(End::AfterClientFin);
    let Some(gw) = Routed::start(backend) else {
        return;
    };
    let (mut read, mut write, head) = handshake(gw.port);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert_eq!(header(&head, "upgrade").as_deref(), Some("websocket"));
    assert_eq!(header(&head, "connection").as_deref(), Some("upgrade"));
    assert_eq!(header(&head, "sec-websocket-accept"), Some(accept_key(KEY)));
    for round in 0..4u8 {
        let m = message(round);
        write
            .write_all(&frame(2, &m, Some([1, 2, 3, round])))
            .unwrap();
        let (opcode, echoed) = read_frame(&mut read).unwrap();
        assert_eq!(opcode, 2);
        assert!(echoed == m, "round {round}: the echo differs");
    }
    // The backend saw the upgrade as sent, with ringway's own fields.
    let seen = heads.lock().unwrap()[0].clone();
    assert_eq!(header(&seen, "upgrade").as_deref(), Some("websocket"));
    assert_eq!(header(&seen, "connection").as_deref(), Some("upgrade"));
    assert_eq!(header(&seen, "sec-websocket-key").as_deref(), Some(KEY));
    assert!(header(&seen, "x-forwarded-for").is_some(), "{seen}");

    // The client closes first: Close, then FIN. The backend answers Close
    // only after that FIN reached it, so the answer travels a tunnel
    // half-closed the other way.
    write
        .write_all(&frame(8, &[3, 232], Some([9, 9, 9, 9])))
        .unwrap();
    write.shutdown(Shutdown::Write).unwrap();
    let (opcode, _) = read_frame(&mut read).unwrap();
    assert_eq!(opcode, 8, "the backend's Close");
    let mut rest = Vec::new();
    assert_eq!(read.read_to_end(&mut rest).unwrap(), 0, "then EOF");

    let lines = access_log(&gw.log, 1);
    assert_eq!(lines[0]["response_code"], 101);
    let received = lines[0]["bytes_received"].as_u64().unwrap();
    let sent = lines[0]["bytes_sent"].as_u64().unwrap();
    assert!(received > 4 * 1024 * 1024, "{}", lines[0]);
    assert!(sent > 4 * 1024 * 1024, "{}", lines[0]);
    let code = ["response_code=\"101\""];
    wait_metrics(gw.admin, |m| sample(m, "istio_requests_total", &code) == 1);
}

#[test]
fn the_upstream_half_closes_a_tunnel_then_the_client_does() {
    let Some((gw, mut read, mut write)) = tunnel(End::HalfCloseFirst) else {
        return;
    };
    write.write_all(&frame(1, b"hello", Some([7; 4]))).unwrap();
    assert_eq!(read_frame(&mut read).unwrap(), (1, b"hello".to_vec()));
    assert_eq!(read_frame(&mut read).unwrap(), (1, b"bye".to_vec()));
    assert!(read_frame(&mut read).is_none(), "the backend's FIN arrives");
    // The other way still carries bytes.
    write.write_all(&frame(1, b"still", Some([5; 4]))).unwrap();
    write.write_all(&frame(8, &[3, 232], Some([1; 4]))).unwrap();
    write.shutdown(Shutdown::Write).unwrap();
    let lines = access_log(&gw.log, 1);
    assert_eq!(lines[0]["response_code"], 101);
}

#[test]
fn an_upstream_reset_resets_the_tunnel() {
    let Some((gw, mut read, mut write)) = tunnel(End::Reset) else {
        return;
    };
    write.write_all(&frame(1, b"hello", Some([7; 4]))).unwrap();
    assert_eq!(read_frame(&mut read).unwrap(), (1, b"hello".to_vec()));
    let mut rest = Vec::new();
    let end = read.read_to_end(&mut rest);
    assert!(
        matches!(&end, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "{end:?}"
    );
    let lines = access_log(&gw.log, 1);
    assert_eq!(lines[0]["response_code"], 101);
}

/// A site whose origin `a` answers 200 to all, and what came back for
/// `bytes` written on one connection.
fn refused(bytes: &str) -> (Site, common::http_gw::Exchange) {
    let site = Site::with_origins(vec![("a", named("a"))], "", &[vs()], &[]).unwrap();
    let seen = exchange(site.port, bytes.as_bytes());
    (site, seen)
}

fn vs() -> String {
    virtual_service("vs", &["*"], ROUTE)
}

const NEXT: &str = "GET /next HTTP/1.1\r\nHost: a\r\n\r\n";

#[test]
fn other_upgrades_connect_and_bad_handshakes_are_refused_and_closed() {
    if !common::require_uring() {
        return;
    }
    struct Case {
        name: &'static str,
        head: String,
        status: u16,
    }
    let ws = |extra: &str| {
        format!(
            "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n{extra}\r\n"
        )
    };
    let cases = [
        Case {
            name: "Upgrade: foo",
            head: "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: foo\r\n\r\n".into(),
            status: 403,
        },
        Case {
            name: "no key",
            head: ws("Sec-WebSocket-Version: 13\r\n"),
            status: 400,
        },
        Case {
            name: "bad key",
            head: ws("Sec-WebSocket-Key: abc\r\nSec-WebSocket-Version: 13\r\n"),
            status: 400,
        },
        Case {
            name: "POST",
            head: ws(&format!(
                "Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n"
            ))
            .replacen("GET", "POST", 1),
            status: 400,
        },
        Case {
            name: "CONNECT",
            head: "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n".into(),
            status: 405,
        },
    ];
    for case in cases {
        let (site, seen) = refused(&format!("{}{NEXT}", case.head));
        assert_eq!(seen.statuses(), vec![case.status], "{}", case.name);
        assert!(seen.closed, "{}: the connection closes", case.name);
        assert_eq!(
            seen.responses[0].header("connection"),
            Some("close"),
            "{}",
            case.name
        );
        assert!(
            site.origin_requests().is_empty(),
            "{}: nothing forwarded",
            case.name
        );
        if case.status != 400 {
            let reason = match case.status {
                403 => "reason=\"upgrade_refused\"",
                _ => "reason=\"connect\"",
            };
            wait_metrics(site.admin, |m| {
                sample(m, "ringway_http_downstream_rejects_total", &[reason]) == 1
            });
        }
    }
}

#[test]
fn h2c_is_stripped_and_served_as_http_1_1() {
    let Some(site) = Site::with_origins(vec![("a", named("a"))], "", &[vs()], &[]) else {
        return;
    };
    let seen = exchange(
        site.port,
        b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\nGET /y HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\nConnection: upgrade\r\n\r\n",
    );
    assert_eq!(seen.statuses(), vec![200, 200]);
    let requests = site.origin_requests();
    assert_eq!(requests.len(), 2);
    for r in requests {
        assert_eq!(r.header("upgrade"), None);
        assert_eq!(r.header("http2-settings"), None);
        assert_eq!(r.header("connection"), None);
    }
}

/// The preface of an HTTP/2 client with prior knowledge, and its SETTINGS.
const H2_CLIENT: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

#[test]
fn the_http2_preface_gets_settings_and_goaway_http_1_1_required() {
    let Some(site) = Site::with_origins(vec![("a", named("a"))], "", &[vs()], &[]) else {
        return;
    };
    let mut s = TcpStream::connect(("127.0.0.1", site.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(H2_CLIENT).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert_eq!(&got[..9], &[0, 0, 0, 4, 0, 0, 0, 0, 0], "{got:?}");
    assert_eq!(got[12], 7, "GOAWAY: {got:?}");
    assert_eq!(&got[18..22], &[0, 0, 0, 0], "last stream 0");
    assert_eq!(&got[22..26], &[0, 0, 0, 0xd], "HTTP_1_1_REQUIRED");
    wait_metrics(site.admin, |m| {
        sample(
            m,
            "ringway_http_downstream_rejects_total",
            &["reason=\"h2_preface\""],
        ) == 1
    });

    // An HTTP/2 client says so.
    let url = format!("http://127.0.0.1:{}/", site.port);
    let nghttp = Command::new("nghttp")
        .args(["-v", &url])
        .output()
        .expect("nghttp runs: install Debian package nghttp2-client");
    let text = String::from_utf8_lossy(&nghttp.stdout);
    assert!(
        text.contains("error_code=HTTP_1_1_REQUIRED(0x0d)"),
        "nghttp said:\n{text}"
    );
    // curl 7.88 (observed) gives up with its framing-layer error (16), at
    // once, where a 505 in HTTP/1.1 would leave it waiting for a frame.
    let curl = Command::new("curl")
        .args(["-sS", "--http2-prior-knowledge", "--max-time", "10", &url])
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&curl.stderr);
    assert_eq!(curl.status.code(), Some(16), "curl said: {text}");
    assert!(text.contains("HTTP2 framing layer"), "curl said: {text}");
}
