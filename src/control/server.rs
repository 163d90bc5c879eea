//! The admin endpoint's transport: hyper (HTTP/1.1) on a current-thread
//! tokio runtime, on a thread of its own named `admin`. One task per
//! connection, no thread per connection; what can block (a reload, a large
//! `/config_dump`) runs on the runtime's small blocking pool, so `/ready`
//! and `/healthz` are answered within milliseconds whatever else is going
//! on. Workers never see tokio. Every limit is a named const below.
//!
//! Threads created here inherit the signal mask of the thread that calls
//! [`AdminServer::start`]: the stop signals stay blocked in them.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::thread;
use std::time::{Duration, Instant};

use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};

use super::admin::{self, Reloads};
use super::state::Admin;

/// Admin connections served at once. Probes, a Prometheus scraper or two
/// and an operator's curl need a handful; 64 leaves room for retries while
/// keeping the admin endpoint's share of descriptors small and fixed. At
/// the cap a new connection takes the slot of the connection that has
/// waited longest for a request (nginx reuses idle connections the same
/// way); when every slot is answering, new connections wait in the accept
/// queue (as HAProxy leaves them at `maxconn`).
pub const MAX_CONNECTIONS: usize = 64;
/// Request head (request line and headers), and so the read buffer of a
/// connection. Admin requests are a few hundred bytes; 16 KiB is the
/// largest head nginx accepts by default (4 × 8 KiB lines less its slack)
/// and bounds the memory of [`MAX_CONNECTIONS`] heads to 1 MiB. Above it:
/// 431, and the connection closes.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Header lines in a request head: Envoy's default `max_headers_count`.
pub const MAX_HEADERS: usize = 100;
/// Request target (path and query). Admin paths are short; 8 KiB is
/// nginx's limit for one request line. Above it: 414.
pub const MAX_URL_BYTES: usize = 8 * 1024;
/// How long a connection may wait for (the rest of) a request head, the
/// first or the next on a kept-alive connection. Probes and scrapers send
/// theirs at once; a client that does not is closed after this.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an answer may take to reach the kernel once it is ready. A
/// multi-megabyte `/config_dump` to a local client takes milliseconds; a
/// client that does not read is closed after this.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Answers go out in pieces of this size, so that an answer counts as sent
/// only once (nearly) all of it is in the kernel.
const BODY_CHUNK: usize = 64 * 1024;
/// Connections the kernel may queue while every slot is answering.
const ACCEPT_BACKLOG: i32 = 1024;
/// After an accept error (EMFILE, ENFILE, ENOBUFS...): wait this long, then
/// try again. The connection stays queued meanwhile.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At most one log line per this, however many accepts fail.
const ACCEPT_ERROR_LOG_EVERY: Duration = Duration::from_secs(1);
/// Threads of the blocking pool: a reload (one at a time) and a
/// `/config_dump` side by side.
const BLOCKING_THREADS: usize = 2;
/// A connection whose answer is being computed has no deadline of its own
/// (a reload waits for the resolver and the workers, both bounded); its
/// phase is looked at again this often.
const WORKING_RECHECK: Duration = Duration::from_secs(1);
/// How long stopping waits for a blocking task (a reload) to finish.
const SHUTDOWN_WAIT: Duration = Duration::from_millis(500);

/// A running admin server; `stop` (or drop) ends its thread.
pub struct AdminServer {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
    pub address: SocketAddr,
}

impl AdminServer {
    /// Bind `address` and serve `admin` on it from a new thread `admin`.
    pub fn start(address: SocketAddr, admin: Arc<dyn Admin>) -> io::Result<AdminServer> {
        let listener = bind(address)?;
        let address = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .max_blocking_threads(BLOCKING_THREADS)
            .thread_name("admin-blocking")
            .build()?;
        let (stop, stopped) = oneshot::channel();
        let thread = thread::Builder::new().name("admin".into()).spawn(move || {
            runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => accept_loop(listener, admin, stopped).await,
                    Err(e) => {
                        tracing::error!(error = %e, "admin endpoint: cannot register its socket")
                    }
                }
            });
            runtime.shutdown_timeout(SHUTDOWN_WAIT);
        })?;
        tracing::info!(%address, "admin endpoint listening");
        Ok(AdminServer {
            stop: Some(stop),
            thread: Some(thread),
            address,
        })
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
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

fn bind(address: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())?;
    socket.listen(ACCEPT_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

async fn accept_loop(
    listener: TcpListener,
    admin: Arc<dyn Admin>,
    mut stopped: oneshot::Receiver<()>,
) {
    let slots = Arc::new(Slots::default());
    let reloads = Arc::new(Reloads::default());
    let mut errors = AcceptErrors::default();
    loop {
        let stream = match race(&mut stopped, listener.accept()).await {
            Either::Left(_) => return,
            Either::Right(Ok((stream, _))) => stream,
            Either::Right(Err(e)) => {
                errors.failed(&e);
                let backoff = tokio::time::sleep(ACCEPT_BACKOFF);
                if let Either::Left(_) = race(&mut stopped, backoff).await {
                    return;
                }
                continue;
            }
        };
        errors.recovered();
        // At the cap: free the slot of the longest-waiting idle connection,
        // or wait for an answer to finish.
        while slots.len() >= MAX_CONNECTIONS {
            let freed = slots.freed.notified();
            slots.evict_longest_waiting();
            if let Either::Left(_) = race(&mut stopped, freed).await {
                return;
            }
        }
        let (id, evict) = slots.open();
        let task = Connection {
            id,
            evict,
            slots: Arc::clone(&slots),
            admin: Arc::clone(&admin),
            reloads: Arc::clone(&reloads),
        };
        tokio::spawn(task.serve(stream));
    }
}

/// Accept failures, logged at most once per [`ACCEPT_ERROR_LOG_EVERY`].
#[derive(Default)]
struct AcceptErrors {
    last_line: Option<Instant>,
    unlogged: u64,
    /// A failure was logged and no success since: the next success says
    /// so (once).
    logged: bool,
}

impl AcceptErrors {
    fn failed(&mut self, e: &io::Error) {
        self.unlogged += 1;
        let now = Instant::now();
        if self
            .last_line
            .is_some_and(|t| now.duration_since(t) < ACCEPT_ERROR_LOG_EVERY)
        {
            return;
        }
        let hint = match e.raw_os_error() {
            Some(libc::EMFILE | libc::ENFILE) => {
                "out of descriptors: raise the open-file limit (LimitNOFILE, ulimit -n) or lower --max-connections"
            }
            _ => "retrying",
        };
        tracing::error!(error = %e, failures = self.unlogged, backoff_ms = ACCEPT_BACKOFF.as_millis() as u64, "admin endpoint cannot accept; {hint}");
        self.last_line = Some(now);
        self.unlogged = 0;
        self.logged = true;
    }

    fn recovered(&mut self) {
        if self.logged {
            self.logged = false;
            tracing::info!("admin endpoint accepts again");
        }
    }
}

/// Where a connection is in its request/answer cycle; each phase but
/// `Working` has a deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a request head (the first, or the next).
    Waiting { since: Instant },
    /// Its answer is being computed.
    Working,
    /// Its answer is being written.
    Writing { since: Instant },
}

impl Phase {
    fn deadline(self, now: Instant) -> Instant {
        match self {
            Phase::Waiting { since } => since + IDLE_TIMEOUT,
            Phase::Working => now + WORKING_RECHECK,
            Phase::Writing { since } => since + WRITE_TIMEOUT,
        }
    }
}

struct Slot {
    phase: Phase,
    evict: Arc<Notify>,
    evicting: bool,
}

/// The open admin connections, by id (ids only grow).
#[derive(Default)]
struct Slots {
    table: Mutex<BTreeMap<u64, Slot>>,
    next: std::sync::atomic::AtomicU64,
    /// Signalled whenever a connection ends.
    freed: Notify,
}

impl Slots {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Slot>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    fn open(&self) -> (u64, Arc<Notify>) {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let evict = Arc::new(Notify::new());
        let slot = Slot {
            phase: Phase::Waiting {
                since: Instant::now(),
            },
            evict: Arc::clone(&evict),
            evicting: false,
        };
        self.lock().insert(id, slot);
        (id, evict)
    }

    fn set(&self, id: u64, phase: Phase) {
        if let Some(slot) = self.lock().get_mut(&id) {
            slot.phase = phase;
        }
    }

    fn deadline(&self, id: u64, now: Instant) -> Instant {
        self.lock()
            .get(&id)
            .map_or(now, |slot| slot.phase.deadline(now))
    }

    /// An eviction reached a connection that has meanwhile received a
    /// request: it stays, and the acceptor picks again. True when spared.
    fn spare_if_busy(&self, id: u64) -> bool {
        let mut table = self.lock();
        let Some(slot) = table.get_mut(&id) else {
            return false;
        };
        if let Phase::Waiting { .. } = slot.phase {
            return false;
        }
        slot.evicting = false;
        drop(table);
        self.freed.notify_one();
        true
    }

    fn close(&self, id: u64) {
        self.lock().remove(&id);
        self.freed.notify_one();
    }

    /// Close the connection that has waited longest for a request (unless
    /// one is already closing). A connection that is answering is never
    /// picked.
    fn evict_longest_waiting(&self) {
        let mut table = self.lock();
        if table.values().any(|s| s.evicting) {
            return;
        }
        let longest = table
            .values_mut()
            .filter_map(|s| match s.phase {
                Phase::Waiting { since } => Some((since, s)),
                Phase::Working | Phase::Writing { .. } => None,
            })
            .min_by_key(|(since, _)| *since);
        if let Some((_, slot)) = longest {
            slot.evicting = true;
            slot.evict.notify_one();
        }
    }
}

/// One admin connection's task.
struct Connection {
    id: u64,
    evict: Arc<Notify>,
    slots: Arc<Slots>,
    admin: Arc<dyn Admin>,
    reloads: Arc<Reloads>,
}

impl Connection {
    async fn serve(self, stream: TcpStream) {
        let (id, slots) = (self.id, Arc::clone(&self.slots));
        let evict = Arc::clone(&self.evict);
        let mut builder = http1::Builder::new();
        builder
            .max_buf_size(MAX_HEAD_BYTES)
            .max_header_size(MAX_HEAD_BYTES)
            .max_headers(MAX_HEADERS)
            .header_read_timeout(None);
        let this = Arc::new(self);
        let service = service_fn(move |request| Arc::clone(&this).answer(request));
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let mut conn = pin!(conn);
        loop {
            let timer = tokio::time::sleep_until(slots.deadline(id, Instant::now()).into());
            match race(conn.as_mut(), race(evict.notified(), timer)).await {
                Either::Left(Ok(())) => break,
                Either::Left(Err(e)) => {
                    tracing::debug!(error = %e, "admin connection closed");
                    break;
                }
                Either::Right(Either::Left(())) => {
                    // No request in progress: its slot goes to a newcomer.
                    // (hyper's graceful shutdown would wait for the rest of
                    // a head begun, a slow client's leverage.)
                    if slots.spare_if_busy(id) {
                        continue;
                    }
                    tracing::debug!("admin connection closed: its slot was needed");
                    break;
                }
                Either::Right(Either::Right(())) => {
                    if slots.deadline(id, Instant::now()) <= Instant::now() {
                        tracing::debug!("admin connection closed: timed out");
                        break;
                    }
                }
            }
        }
        slots.close(id);
    }

    async fn answer(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> Result<Response<Answer>, Infallible> {
        self.slots.set(self.id, Phase::Working);
        let uri = request.uri();
        let target = uri.path_and_query().map_or(0, |p| p.as_str().len())
            + uri.authority().map_or(0, |a| a.as_str().len());
        let reply = admin::answer(
            request.method(),
            uri.path(),
            target,
            &self.admin,
            &self.reloads,
        )
        .await;
        self.slots.set(
            self.id,
            Phase::Writing {
                since: Instant::now(),
            },
        );
        let mut response = Response::new(Answer {
            body: reply.body,
            sent: Some(Sent {
                id: self.id,
                slots: Arc::clone(&self.slots),
            }),
        });
        *response.status_mut() = reply.status;
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(reply.content_type));
        Ok(response)
    }
}

/// An answer's body, handed to hyper in [`BODY_CHUNK`] pieces.
struct Answer {
    body: Bytes,
    sent: Option<Sent>,
}

/// Dropped once the whole body was handed over: the connection waits for
/// its next request.
struct Sent {
    id: u64,
    slots: Arc<Slots>,
}

impl Drop for Sent {
    fn drop(&mut self) {
        let since = Instant::now();
        self.slots.set(self.id, Phase::Waiting { since });
    }
}

impl Body for Answer {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.body.is_empty() {
            this.sent = None;
            return Poll::Ready(None);
        }
        let piece = this.body.split_to(this.body.len().min(BODY_CHUNK));
        Poll::Ready(Some(Ok(Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.body.len() as u64)
    }
}

enum Either<A, B> {
    Left(A),
    Right(B),
}

/// Whichever of `a` and `b` finishes first (`a` when both are ready).
async fn race<A: Future, B: Future>(a: A, b: B) -> Either<A::Output, B::Output> {
    let (mut a, mut b) = (pin!(a), pin!(b));
    poll_fn(|cx| {
        if let Poll::Ready(x) = a.as_mut().poll(cx) {
            return Poll::Ready(Either::Left(x));
        }
        b.as_mut().poll(cx).map(Either::Right)
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use super::*;
    use crate::control::state::{ConfigDump, Readiness, ReloadOutcome};
    use crate::dataplane::Plan;
    use crate::routing::RouteTable;

    #[derive(Default)]
    struct Fake {
        ready: AtomicBool,
        generation: AtomicU64,
    }

    impl Admin for Fake {
        fn readiness(&self) -> Readiness {
            match self.ready.load(Ordering::Relaxed) {
                true => Readiness::Ready,
                false => Readiness::NotServing,
            }
        }
        fn metrics(&self) -> String {
            "ringway_workers 2\n".to_owned()
        }
        fn config_dump(&self) -> ConfigDump {
            let table = RouteTable {
                generation: 7,
                ..RouteTable::default()
            };
            ConfigDump::new(
                Arc::new(Plan::new(table, Vec::new(), None)),
                crate::metrics::Identity::default(),
                &[],
                Instant::now(),
            )
        }
        fn reload(&self) -> ReloadOutcome {
            match self.generation.fetch_add(1, Ordering::Relaxed) {
                0 => ReloadOutcome::Refused {
                    errors: vec!["bad.yaml:3: invalid YAML".to_owned()],
                },
                g => ReloadOutcome::Applied { generation: g + 1 },
            }
        }
    }

    fn http(address: SocketAddr, request: &str) -> (u16, String) {
        let mut s = std::net::TcpStream::connect(address).expect("connect");
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
        let (status, dump) = get(a, "/config_dump");
        assert_eq!(status, 200);
        assert!(dump.contains("\"generation\": 7"), "{dump}");
        assert_eq!(get(a, "/nope").0, 404);
        assert_eq!(get(a, "/reload").0, 405);
        assert_eq!(get(a, &format!("/{}", "a".repeat(MAX_URL_BYTES))).0, 414);
        let huge = format!(
            "GET /ready HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "b".repeat(MAX_HEAD_BYTES)
        );
        assert_eq!(http(a, &huge).0, 431);
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

    #[test]
    fn at_the_cap_the_longest_waiting_connection_is_asked_to_close_never_one_answering() {
        let slots = Slots::default();
        let (a, evict_a) = slots.open();
        let (b, evict_b) = slots.open();
        let (c, evict_c) = slots.open();
        let t0 = Instant::now();
        slots.set(a, Phase::Working);
        slots.set(b, Phase::Waiting { since: t0 });
        slots.set(
            c,
            Phase::Waiting {
                since: t0 + Duration::from_secs(1),
            },
        );
        slots.evict_longest_waiting();
        // One eviction at a time: c stays until b has gone.
        slots.evict_longest_waiting();
        let picked = |n: &Notify| {
            let notified = pin!(n.notified());
            notified.enable()
        };
        assert_eq!(
            (picked(&evict_a), picked(&evict_b), picked(&evict_c)),
            (false, true, false)
        );
        slots.close(b);
        slots.set(c, Phase::Writing { since: t0 });
        slots.evict_longest_waiting();
        assert!(!picked(&evict_c), "c is answering");
        assert_eq!(slots.len(), 2);
    }

    #[test]
    fn every_phase_but_working_has_a_deadline() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(100);
        assert_eq!(
            Phase::Waiting { since: t0 }.deadline(later),
            t0 + IDLE_TIMEOUT
        );
        assert_eq!(
            Phase::Writing { since: t0 }.deadline(later),
            t0 + WRITE_TIMEOUT
        );
        assert_eq!(Phase::Working.deadline(later), later + WORKING_RECHECK);
    }
}
