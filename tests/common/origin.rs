//! An HTTP/1.1 origin server for tests (std threads and a TcpListener, no
//! framework): it answers each request with what the test's closure says,
//! records every request's head (and body), and counts keep-alive reuse:
//! connections accepted, requests on each. [`read_response`] is the client
//! side's reader of one response.
//!
//! Framing it understands: requests with Content-Length or chunked bodies;
//! responses framed by Content-Length, chunked, or by closing the
//! connection. A connection stays open after a response unless the request
//! asked to close (`Connection: close`, or HTTP/1.0 without keep-alive) or
//! the response is close-delimited.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use super::Gate;

/// Longest request head the origin reads before giving up on a connection.
const MAX_HEAD: usize = 64 * 1024;

/// How a response's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Length,
    Chunked,
    /// No length: the body ends when the origin closes the connection.
    Close,
}

/// What the origin answers to one request.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub framing: Framing,
}

impl Response {
    /// 200 with `body`, framed by Content-Length.
    pub fn ok(body: impl Into<Vec<u8>>) -> Response {
        Response::status(200, body)
    }

    pub fn status(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: body.into(),
            framing: Framing::Length,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn framing(mut self, framing: Framing) -> Response {
        self.framing = framing;
        self
    }
}

/// A request as the origin received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub target: String,
    /// `HTTP/1.1`, `HTTP/1.0`.
    pub version: String,
    /// In order, names as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Which accepted connection it came on (0 = the first).
    pub connection: usize,
    /// Its place on that connection (0 = the first request).
    pub sequence: usize,
}

impl Request {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    fn wants_close(&self) -> bool {
        let connection = self.header("connection").map(str::to_ascii_lowercase);
        match self.version.as_str() {
            "HTTP/1.0" => connection.as_deref() != Some("keep-alive"),
            _ => connection.as_deref() == Some("close"),
        }
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

type Respond = dyn Fn(&Request) -> Response + Send + Sync;

#[derive(Default)]
struct Seen {
    requests: Vec<Request>,
    /// Requests served on each accepted connection, by accept order.
    per_connection: Vec<usize>,
}

/// The origin: listens on 127.0.0.1 until dropped.
pub struct Origin {
    pub port: u16,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
}

impl Origin {
    /// An origin that answers every request with `respond(request)`.
    pub fn start(respond: impl Fn(&Request) -> Response + Send + Sync + 'static) -> Origin {
        Origin::start_idle(Duration::from_secs(60), respond)
    }

    /// An origin that answers 200 `body` to every request once `gate`
    /// opens, and the count of requests that reached it (held or answered):
    /// a request in flight for as long as the test wants.
    pub fn gated(body: &'static str, gate: &Gate) -> (Origin, Arc<AtomicUsize>) {
        let arrived = Arc::new(AtomicUsize::new(0));
        let (count, gate) = (Arc::clone(&arrived), gate.clone());
        let origin = Origin::start(move |_| {
            count.fetch_add(1, Ordering::Relaxed);
            gate.wait();
            Response::ok(body)
        });
        (origin, arrived)
    }

    /// [`Origin::start`], closing a connection that stays `idle` between
    /// requests (as a server's keep-alive timeout does).
    pub fn start_idle(
        idle: Duration,
        respond: impl Fn(&Request) -> Response + Send + Sync + 'static,
    ) -> Origin {
        let listener = super::listen_any(1024);
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let respond: Arc<Respond> = Arc::new(respond);
        let (seen2, stop2) = (Arc::clone(&seen), Arc::clone(&stop));
        thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::Acquire) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let connection = {
                    let mut seen = seen2.lock().unwrap();
                    seen.per_connection.push(0);
                    seen.per_connection.len() - 1
                };
                let (seen, respond) = (Arc::clone(&seen2), Arc::clone(&respond));
                let _ = thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn(move || serve(conn, idle, connection, &seen, &*respond));
            }
        });
        Origin { port, seen, stop }
    }

    /// Every request so far, in the order they were read.
    pub fn requests(&self) -> Vec<Request> {
        self.seen.lock().unwrap().requests.clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.seen.lock().unwrap().per_connection.len()
    }

    /// Requests served on each connection, in accept order: `[3]` is one
    /// connection reused for three requests, `[1, 1, 1]` none reused.
    pub fn requests_per_connection(&self) -> Vec<usize> {
        self.seen.lock().unwrap().per_connection.clone()
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(
    conn: TcpStream,
    idle: Duration,
    connection: usize,
    seen: &Mutex<Seen>,
    respond: &Respond,
) {
    let _ = conn.set_read_timeout(Some(idle));
    let Ok(write) = conn.try_clone() else { return };
    let mut write = write;
    let mut read = BufReader::new(conn);
    for sequence in 0.. {
        let Ok(Some(request)) = read_request(&mut read, connection, sequence) else {
            break;
        };
        let response = respond(&request);
        let close = request.wants_close() || response.framing == Framing::Close;
        let bodiless = request.method == "HEAD";
        {
            let mut seen = seen.lock().unwrap();
            seen.per_connection[connection] += 1;
            seen.requests.push(request);
        }
        if write_response(&mut write, &response, close, bodiless).is_err() || close {
            break;
        }
    }
    let _ = write.shutdown(Shutdown::Write);
}

/// One request off `read`; `None` at a clean EOF before its first byte.
fn read_request(
    read: &mut BufReader<TcpStream>,
    connection: usize,
    sequence: usize,
) -> io::Result<Option<Request>> {
    let Some((start, headers)) = read_head(read)? else {
        return Ok(None);
    };
    let mut parts = start.splitn(3, ' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid(format!("bad request line {start:?}")));
    };
    let body = read_body(read, &headers, false)?;
    Ok(Some(Request {
        method: method.to_owned(),
        target: target.to_owned(),
        version: version.to_owned(),
        headers,
        body,
        connection,
        sequence,
    }))
}

/// Writes `r`; a response to HEAD (`bodiless`), a 1xx, 204 or 304 carries
/// its framing headers (none for 204) but never a body.
fn write_response(
    out: &mut TcpStream,
    r: &Response,
    close: bool,
    bodiless: bool,
) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", r.status, reason(r.status));
    for (name, value) in &r.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let no_body = bodiless || matches!(r.status, 100..=199 | 204 | 304);
    match r.framing {
        _ if r.status == 204 => {}
        Framing::Length => head.push_str(&format!("Content-Length: {}\r\n", r.body.len())),
        Framing::Chunked => head.push_str("Transfer-Encoding: chunked\r\n"),
        Framing::Close => {}
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    match r.framing {
        _ if no_body => {}
        Framing::Chunked => {
            // Two chunks when there is something to split: a reader must
            // join them.
            let half = r.body.len() / 2;
            for chunk in [&r.body[..half], &r.body[half..]] {
                if !chunk.is_empty() {
                    bytes.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                    bytes.extend_from_slice(chunk);
                    bytes.extend_from_slice(b"\r\n");
                }
            }
            bytes.extend_from_slice(b"0\r\n\r\n");
        }
        Framing::Length | Framing::Close => bytes.extend_from_slice(&r.body),
    }
    out.write_all(&bytes)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        304 => "Not Modified",
        301 => "Moved Permanently",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Other",
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// A message's start line and its headers, in order.
type Head = (String, Vec<(String, String)>);

/// The head of one message; `None` at EOF before any.
fn read_head(read: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut start = String::new();
    if read.read_line(&mut start)? == 0 {
        return Ok(None);
    }
    let mut size = start.len();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if read.read_line(&mut line)? == 0 {
            return Err(invalid("EOF inside a head".to_owned()));
        }
        size += line.len();
        if size > MAX_HEAD {
            return Err(invalid(format!("head longer than {MAX_HEAD} bytes")));
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(invalid(format!("bad header line {line:?}")));
        };
        headers.push((name.to_owned(), value.trim().to_owned()));
    }
    Ok(Some((
        start.trim_end_matches(['\r', '\n']).to_owned(),
        headers,
    )))
}

/// A body by the headers' framing; without Content-Length or chunked, empty
/// for a request and up to EOF for a response (`to_eof`).
fn read_body(
    read: &mut impl BufRead,
    headers: &[(String, String)],
    to_eof: bool,
) -> io::Result<Vec<u8>> {
    let chunked = header(headers, "transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().ends_with("chunked"));
    if chunked {
        let mut body = Vec::new();
        loop {
            let mut size = String::new();
            read.read_line(&mut size)?;
            let size = size.trim_end().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| invalid(format!("bad chunk size {size:?}")))?;
            if size == 0 {
                // Trailers (none expected), then the final CRLF.
                while read_line_bytes(read)? > 2 {}
                return Ok(body);
            }
            let start = body.len();
            body.resize(start + size, 0);
            read.read_exact(&mut body[start..])?;
            let mut crlf = [0u8; 2];
            read.read_exact(&mut crlf)?;
        }
    }
    if let Some(length) = header(headers, "content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| invalid(format!("bad Content-Length {length:?}")))?;
        let mut body = vec![0u8; length];
        read.read_exact(&mut body)?;
        return Ok(body);
    }
    let mut body = Vec::new();
    if to_eof {
        read.read_to_end(&mut body)?;
    }
    Ok(body)
}

fn read_line_bytes(read: &mut impl BufRead) -> io::Result<usize> {
    let mut line = Vec::new();
    read.read_until(b'\n', &mut line)
}

/// A response as a client read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// Read one response off a client connection (Content-Length, chunked or
/// close-delimited; the answer to HEAD needs [`read_response_head`]);
/// `None` at EOF before it.
pub fn read_response(read: &mut impl BufRead) -> io::Result<Option<Received>> {
    let Some(mut response) = read_response_head(read)? else {
        return Ok(None);
    };
    // A 1xx, 204 or 304 never has a body, whatever its headers say.
    if !matches!(response.status, 100..=199 | 204 | 304) {
        response.body = read_body(read, &response.headers, true)?;
    }
    Ok(Some(response))
}

/// Read one response head off a client connection, without its body (the
/// answer to HEAD, a 204 or a 304); `None` at EOF before it.
pub fn read_response_head(read: &mut impl BufRead) -> io::Result<Option<Received>> {
    let Some((start, headers)) = read_head(read)? else {
        return Ok(None);
    };
    let status = start
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(format!("bad status line {start:?}")))?;
    Ok(Some(Received {
        status,
        headers,
        body: Vec::new(),
    }))
}
