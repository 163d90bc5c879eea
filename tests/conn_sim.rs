//! Seeded simulation of the sessions (`dataplane::session`, driving
//! `dataplane::conn`) through the data plane's I/O vocabulary
//! (`dataplane::io`) against a model kernel and a model worker: completions arrive in random order with random
//! sizes (partial sends, bursts of recvs, cancellations that race data,
//! empty buffer rings, resets, timers), and invariants are checked after
//! every step. A source that resets has every byte read from it written
//! before the other side is reset, and the bytes counted at the end are
//! exactly those written. A timer never acts before the deadline the
//! connection announced (the worker ticks only connections that are due).
//! Connects succeed, are refused, or time out (the CONNECT cancelled by its
//! linked timeout, both completions in either order); reservations and
//! connects may be refused by the worker. Half the runs start on a TLS
//! passthrough listener: the ClientHello is read in random segments from
//! the completions' bytes, routed by the listener's SNI table, and must
//! reach the upstream first. `RINGWAY_SIM_SEED=<n>` replays one run;
//! `RINGWAY_SIM_VERBOSE=1` prints how each run ended.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringway::config::{LoadOptions, load_str};
use ringway::dataplane::half::MAX_QUEUED_BUFFERS;
use ringway::dataplane::io::{
    Close, CloseReason, Completion, Io, Limits, Pump, Reservation, SinkState, SourceState,
};
use ringway::dataplane::session::Session;
use ringway::dataplane::{Plan, Settings};

const PEER: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40000);
use ringway::dataplane::token::{Dir, Op};
use ringway::routing::table::ClusterId;
use ringway::routing::{CompileOptions, compile};

#[path = "common/client_hello.rs"]
mod client_hello;

const BUFFERS: u16 = 8;
const BUFFER_SIZE: u32 = 4096;
const PIPE: u32 = 16384;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum RecvOp {
    Idle,
    Armed,
    /// Cancel requested: at most one more data completion may race it.
    Cancelling {
        raced: bool,
    },
}

/// What the model kernel knows about one direction.
struct Side {
    recv: RecvOp,
    cancel_in_flight: bool,
    send: Option<(u16, u32, u32)>,
    poll: Option<Op>,
    /// Bytes the source will still produce before its FIN.
    source_left: u64,
    source_total: u64,
    eof_delivered: bool,
    read: u64,
    delivered: u64,
    in_pipe: u32,
    shut: bool,
    starved: bool,
    /// The recv in flight is the single-shot ClientHello recv.
    single: bool,
    /// The source reset (a recv or a pump failed reading it).
    source_reset: bool,
    /// The sink pushed back (SinkStalled was emitted).
    stalled: bool,
}

/// A compiled plan from one of the bundled examples.
fn plan(example: &str) -> Arc<Plan> {
    let path = format!(
        "{}/config/testdata/valid/{example}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let loaded = load_str(&path, &text, &LoadOptions::default());
    assert!(!loaded.diagnostics.has_errors(), "{:?}", loaded.diagnostics);
    let compiled = compile(&loaded.manifests, &CompileOptions::default());
    assert!(!compiled.diagnostics.has_errors());
    let endpoints = compiled.table.clusters.iter().map(|_| Vec::new()).collect();
    Arc::new(Plan::new(compiled.table, endpoints, None))
}

struct Model {
    rng: Rng,
    conn: Session,
    now: Instant,
    free: Vec<u16>,
    held: HashMap<u16, Dir>,
    sides: [Side; 2],
    /// The CONNECT in flight and how it will end: 0 (accepted), refused,
    /// or cancelled by its linked timeout.
    connecting: Option<i32>,
    /// Linked timeouts in flight (each completes once: -ETIME when it
    /// fired, -ECANCELED when its CONNECT ended first).
    timers: Vec<i32>,
    /// A reservation was asked for (at most once per session).
    reserved: bool,
    finished: Option<Close>,
    /// Bytes written each way when the connection finished.
    delivered_at_finish: [u64; 2],
    /// A send failed (the model reset a sink).
    sink_failed: bool,
    log: Vec<String>,
    /// TLS passthrough: the downstream's bytes (a ClientHello, or not TLS,
    /// then zeros).
    tls: Option<Vec<u8>>,
    /// The limits a reservation gives.
    limits: Limits,
}

impl Model {
    fn new(seed: u64) -> Model {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let splice_after = match rng.below(3) {
            0 => 0,
            1 => rng.below(20_000),
            _ => u64::MAX,
        };
        let limits = Limits {
            idle_timeout: Some(Duration::from_secs(30)),
            max_duration: None,
            connect_attempts: 3,
            splice_after,
        };
        let mut side = || {
            let total = rng.below(60_000);
            Side {
                recv: RecvOp::Idle,
                cancel_in_flight: false,
                send: None,
                poll: None,
                source_left: total,
                source_total: total,
                eof_delivered: false,
                read: 0,
                delivered: 0,
                in_pipe: 0,
                shut: false,
                starved: false,
                single: false,
                source_reset: false,
                stalled: false,
            }
        };
        let mut sides = [side(), side()];
        let tls = rng.chance(50).then(|| {
            let mut first = match rng.below(10) {
                0 => b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
                1 => client_hello::client_hello_bytes(None, 16384),
                _ => client_hello::client_hello_bytes(
                    Some("db.example.com"),
                    [7, 40, 100, 16384][rng.below(4) as usize],
                ),
            };
            let up = &mut sides[0];
            up.source_total += first.len() as u64;
            up.source_left = up.source_total;
            first.resize(up.source_total as usize, 0);
            first
        });
        let now = Instant::now();
        let mut out = Vec::new();
        let example = if tls.is_some() {
            "tls-passthrough-sni-hosts.yaml"
        } else {
            "tcp-echo-80-20-service-entry.yaml"
        };
        let conn = Session::open(&plan(example), 0, PEER, &Settings::default(), now, &mut out);
        let mut m = Model {
            rng,
            conn,
            now,
            free: (0..BUFFERS).collect(),
            held: HashMap::new(),
            sides,
            connecting: None,
            timers: Vec::new(),
            reserved: false,
            finished: None,
            delivered_at_finish: [0, 0],
            sink_failed: false,
            log: vec![format!("splice_after={splice_after} tls={}", tls.is_some())],
            tls,
            limits,
        };
        m.apply(out);
        m
    }

    fn feed(&mut self, c: Completion<'_>) {
        self.log.push(format!("{c:?}"));
        let mut out = Vec::new();
        self.conn.on_completion(c, self.now, &mut out);
        self.apply(out);
    }

    fn done(op: Op, res: i32) -> Completion<'static> {
        Completion::done(op, res)
    }

    /// Perform the connection's actions the way the worker would, checking
    /// every rule the worker relies on.
    fn apply(&mut self, actions: Vec<Io>) {
        let mut queue: std::collections::VecDeque<Io> = actions.into();
        while let Some(a) = queue.pop_front() {
            self.log.push(format!("  -> {a:?}"));
            if self.finished.is_some() {
                assert!(matches!(a, Io::GiveBack(_)), "{a:?} after Finish");
            }
            let mut out = Vec::new();
            match a {
                Io::Reserve(_) => {
                    assert!(!self.reserved, "reserved twice");
                    self.reserved = true;
                    if let Some(bytes) = &self.tls {
                        let read = self.sides[0].read as usize;
                        assert!(read > 0 && read <= bytes.len(), "routed before the hello");
                    }
                    let answer = match self.rng.below(20) {
                        0 => Err(CloseReason::Overflow),
                        1 => Err(CloseReason::NoHealthyUpstream),
                        _ => Ok(Reservation {
                            cluster: ClusterId(0),
                            limits: self.limits,
                        }),
                    };
                    self.conn.on_reserved(answer, self.now, &mut out);
                }
                Io::Connect => {
                    assert!(self.reserved, "connect before a reservation");
                    assert!(self.connecting.is_none(), "two connects in flight");
                    // The worker may find no endpoint or no descriptor.
                    if self.rng.chance(3) {
                        self.conn
                            .on_connect_unavailable(CloseReason::LocalResource, &mut out);
                    } else {
                        let res = match self.rng.below(10) {
                            0..=1 => -libc::ECONNREFUSED,
                            2 => -libc::ECANCELED, // the linked timeout fired
                            _ => 0,
                        };
                        self.connecting = Some(res);
                        self.timers.push(if res == -libc::ECANCELED {
                            -libc::ETIME
                        } else {
                            -libc::ECANCELED
                        });
                    }
                }
                Io::Connected | Io::EnterSplice(_) | Io::Abort(_) => {}
                Io::SinkStalled(d) => {
                    let s = &mut self.sides[d.index()];
                    assert!(!s.stalled, "{a:?} twice");
                    s.stalled = true;
                }
                Io::Recv { dir: d, buffers } => {
                    assert!(buffers >= 1 && buffers as usize <= MAX_QUEUED_BUFFERS);
                    let s = &mut self.sides[d.index()];
                    assert_eq!(s.recv, RecvOp::Idle, "recv armed twice on {d:?}");
                    assert!(!s.eof_delivered, "recv after EOF on {d:?}");
                    assert!(!s.source_reset, "recv after a reset on {d:?}");
                    s.recv = RecvOp::Armed;
                    s.single = false;
                }
                Io::CancelRecv(d) => {
                    let s = &mut self.sides[d.index()];
                    assert!(!s.cancel_in_flight);
                    s.cancel_in_flight = true;
                    if s.recv == RecvOp::Armed {
                        s.recv = RecvOp::Cancelling { raced: false };
                    }
                }
                Io::Send {
                    dir,
                    bid,
                    offset,
                    len,
                } => {
                    assert_eq!(
                        self.held.get(&bid),
                        Some(&dir),
                        "send of a buffer {dir:?} does not hold"
                    );
                    let s = &mut self.sides[dir.index()];
                    assert!(s.send.is_none(), "two sends in flight on {dir:?}");
                    assert!(len > 0 && offset + len <= BUFFER_SIZE);
                    s.send = Some((bid, offset, len));
                }
                Io::GiveBack(bid) => {
                    assert!(
                        self.held.remove(&bid).is_some(),
                        "buffer {bid} given back twice"
                    );
                    for s in &self.sides {
                        assert!(
                            s.send.is_none_or(|(b, ..)| b != bid),
                            "buffer {bid} given back mid-send"
                        );
                    }
                    self.free.push(bid);
                }
                Io::WaitBuffers(d) => self.sides[d.index()].starved = true,
                Io::PollIn(d) | Io::PollOut(d) => {
                    let s = &mut self.sides[d.index()];
                    assert!(s.poll.is_none(), "two polls on {d:?}");
                    s.poll = Some(if matches!(a, Io::PollIn(_)) {
                        Op::Readable(d)
                    } else {
                        Op::Writable(d)
                    });
                }
                Io::Pump {
                    dir,
                    in_pipe,
                    read,
                    max,
                } => {
                    assert_eq!(max, u64::MAX, "TCP pumps are not capped");
                    let pump = self.pump(dir, in_pipe, read);
                    self.log.push(format!("  pump {pump:?}"));
                    self.conn.on_pump(dir, pump, self.now, &mut out);
                }
                Io::Shutdown(d) => {
                    let s = &mut self.sides[d.index()];
                    assert!(!s.shut);
                    assert_eq!(
                        s.delivered, s.read,
                        "{d:?} shut down before its bytes were written"
                    );
                    s.shut = true;
                    self.conn
                        .on_completion(Self::done(Op::Shutdown(d), 0), self.now, &mut out);
                }
                Io::RecvOnce(d) => {
                    assert!(self.tls.is_some(), "{a:?} on a TCP connection");
                    assert_eq!(d, Dir::ToUpstream);
                    let s = &mut self.sides[0];
                    assert_eq!(s.recv, RecvOp::Idle, "hello recv armed twice");
                    s.recv = RecvOp::Armed;
                    s.single = true;
                }
                Io::SendOwned(d) => {
                    assert_eq!(d, Dir::ToUpstream);
                    let Some(bytes) = &self.tls else {
                        panic!("{a:?} on a TCP connection");
                    };
                    let s = &self.sides[0];
                    assert!(s.send.is_none() && s.recv == RecvOp::Idle);
                    let prefix = self.conn.outbox(d).expect("an outbox to send");
                    assert!(
                        prefix == &bytes[s.delivered as usize..s.read as usize],
                        "the prefix is every byte read and not yet sent"
                    );
                    let len = prefix.len() as u64;
                    let res = if self.rng.chance(1) {
                        -libc::EPIPE
                    } else if self.rng.chance(15) {
                        -libc::EAGAIN
                    } else if self.rng.chance(40) {
                        1 + self.rng.below(len) as i32
                    } else {
                        len as i32
                    };
                    if res > 0 {
                        self.sides[0].delivered += res as u64;
                    }
                    self.sink_failed |= res == -libc::EPIPE;
                    self.conn
                        .on_completion(Self::done(Op::Send(d), res), self.now, &mut out);
                }
                Io::CheckSent(d) => {
                    let s = &self.sides[d.index()];
                    assert!(s.source_reset, "{a:?} without a reset");
                    assert_eq!(
                        s.delivered, s.read,
                        "{d:?} asks to reset before its bytes were written"
                    );
                    // The kernel sent it all now, or later (asked again).
                    if self.rng.chance(50) {
                        self.conn.on_sent(d, &mut out);
                    }
                }
                Io::Finish(close) => {
                    assert!(self.finished.is_none(), "finished twice");
                    self.finished = Some(close);
                    self.delivered_at_finish = [self.sides[0].delivered, self.sides[1].delivered];
                }
                Io::Route
                | Io::Checkout { .. }
                | Io::Release(_)
                | Io::Leftover { .. }
                | Io::Report
                | Io::Reject { .. } => panic!("{a:?} from a TCP or TLS passthrough session"),
            }
            queue.extend(out);
        }
        for d in Dir::BOTH {
            let queued = self.held.values().filter(|h| **h == d).count();
            assert!(
                queued <= MAX_QUEUED_BUFFERS + 1,
                "{queued} buffers queued on {d:?}: no backpressure"
            );
        }
    }

    fn pump(&mut self, dir: Dir, in_pipe: u32, read: bool) -> Pump {
        let rng = &mut self.rng;
        let s = &mut self.sides[dir.index()];
        assert_eq!(in_pipe, s.in_pipe, "pipe accounting");
        let mut p = Pump {
            read: 0,
            written: 0,
            in_pipe,
            source: SourceState::Open,
            sink: SinkState::Ok,
        };
        if read {
            assert!(!s.source_reset, "pump read {dir:?} after its reset");
            if s.source_left == 0 {
                p.source = SourceState::Eof;
            } else if rng.chance(2) {
                // Reset after some bytes (still in the pipe).
                let n = rng.below(u64::from(PIPE - in_pipe)).min(s.source_left);
                s.source_left -= n;
                s.read += n;
                p.read = n;
                p.in_pipe += n as u32;
                p.source = SourceState::Failed;
                s.source_reset = true;
            } else {
                let n = (1 + rng.below(u64::from(PIPE - in_pipe))).min(s.source_left);
                s.source_left -= n;
                s.read += n;
                p.read = n;
                p.in_pipe += n as u32;
                p.source = if rng.chance(50) {
                    SourceState::WouldBlock
                } else {
                    SourceState::Open
                };
            }
        }
        if p.in_pipe > 0 {
            let n = if rng.chance(30) {
                rng.below(u64::from(p.in_pipe))
            } else {
                u64::from(p.in_pipe)
            };
            p.written = n;
            p.in_pipe -= n as u32;
            s.delivered += n;
            if p.in_pipe > 0 {
                p.sink = SinkState::WouldBlock;
            }
        }
        s.in_pipe = p.in_pipe;
        p
    }

    fn in_flight(&self) -> bool {
        self.connecting.is_some()
            || !self.timers.is_empty()
            || self.sides.iter().any(|s| {
                s.recv != RecvOp::Idle || s.cancel_in_flight || s.send.is_some() || s.poll.is_some()
            })
    }

    /// One random completion or timer.
    fn step(&mut self) {
        let d = Dir::BOTH[self.rng.below(2) as usize];
        let i = d.index();
        match self.rng.below(8) {
            0 if self.connecting.is_some() && (self.timers.is_empty() || self.rng.chance(50)) => {
                let res = match self.connecting.take() {
                    // The worker cancelled it when the session finished.
                    Some(_) if self.finished.is_some() => -libc::ECANCELED,
                    Some(res) => res,
                    None => return,
                };
                self.feed(Self::done(Op::Connect, res));
            }
            0 if !self.timers.is_empty() => {
                let Some(res) = self.timers.pop() else {
                    return;
                };
                self.feed(Self::done(Op::ConnectTimeout, res));
            }
            1 | 2 if self.sides[i].recv != RecvOp::Idle => self.recv(d),
            3 if self.sides[i].cancel_in_flight => {
                if self.sides[i].recv != RecvOp::Idle {
                    self.sides[i].recv = RecvOp::Idle;
                    self.feed(Self::done(Op::Recv(d), -libc::ECANCELED));
                }
                self.sides[i].cancel_in_flight = false;
                self.feed(Self::done(Op::CancelRecv(d), 0));
            }
            4 | 5 if self.sides[i].send.is_some() => {
                let Some((_, _, len)) = self.sides[i].send.take() else {
                    return;
                };
                let res = if self.finished.is_some() && self.rng.chance(50) {
                    -libc::ECANCELED
                } else if self.rng.chance(1) {
                    -libc::EPIPE
                } else if self.rng.chance(15) {
                    -libc::EAGAIN
                } else if self.rng.chance(40) {
                    1 + self.rng.below(u64::from(len)) as i32
                } else {
                    len as i32
                };
                if res > 0 {
                    self.sides[i].delivered += res as u64;
                }
                self.sink_failed |= res == -libc::EPIPE;
                self.feed(Self::done(Op::Send(d), res));
            }
            6 if self.sides[i].poll.is_some() => {
                let Some(op) = self.sides[i].poll.take() else {
                    return;
                };
                let res = if self.finished.is_some() {
                    -libc::ECANCELED
                } else {
                    1
                };
                self.feed(Self::done(op, res));
            }
            7 => {
                if self.sides[i].starved && !self.free.is_empty() {
                    self.sides[i].starved = false;
                    let mut out = Vec::new();
                    self.conn.on_buffers(d, &mut out);
                    self.apply(out);
                } else {
                    let span = if self.rng.chance(2) { 40_000 } else { 2_000 };
                    self.now += Duration::from_millis(self.rng.below(span));
                    let deadline = self.conn.next_deadline();
                    let mut out = Vec::new();
                    self.conn.on_tick(self.now, &mut out);
                    // The worker ticks a connection only at its deadline:
                    // a timer never acts before the deadline it announced.
                    assert!(
                        out.is_empty() || deadline.is_some_and(|d| d <= self.now),
                        "{out:?} at a tick before the deadline {deadline:?}"
                    );
                    self.apply(out);
                }
            }
            _ => {}
        }
    }

    fn recv(&mut self, d: Dir) {
        let i = d.index();
        let after_finish = self.finished.is_some();
        let s = &mut self.sides[i];
        if let RecvOp::Cancelling { raced: true } = s.recv {
            return; // only the cancellation itself may come now
        }
        if after_finish {
            s.recv = RecvOp::Idle;
            self.feed(Self::done(Op::Recv(d), -libc::ECANCELED));
            return;
        }
        if self.rng.chance(1) {
            s.recv = RecvOp::Idle;
            s.source_reset = !s.single;
            self.feed(Self::done(Op::Recv(d), -libc::ECONNRESET));
            return;
        }
        if s.source_left == 0 {
            s.recv = RecvOp::Idle;
            s.eof_delivered = true;
            self.feed(Self::done(Op::Recv(d), 0));
            return;
        }
        let Some(bid) = self.free.pop() else {
            s.recv = RecvOp::Idle;
            self.feed(Self::done(Op::Recv(d), -libc::ENOBUFS));
            return;
        };
        let n = (1 + self.rng.below(u64::from(BUFFER_SIZE))).min(s.source_left);
        s.source_left -= n;
        s.read += n;
        let more = match s.recv {
            _ if s.single => {
                s.recv = RecvOp::Idle;
                false
            }
            RecvOp::Cancelling { .. } => {
                s.recv = RecvOp::Cancelling { raced: true };
                true
            }
            _ if self.rng.chance(10) => {
                s.recv = RecvOp::Idle;
                false
            }
            _ => true,
        };
        self.held.insert(bid, d);
        // The bytes the buffer holds: the ClientHello's where the session
        // reads them, zeros elsewhere (halves forward buffers unread).
        let start = (s.read - n) as usize;
        let data = match &self.tls {
            Some(bytes) if i == 0 => bytes[start..start + n as usize].to_vec(),
            _ => vec![0; n as usize],
        };
        self.feed(Completion {
            op: Op::Recv(d),
            res: n as i32,
            bid: Some(bid),
            data: &data,
            more,
        });
    }
}

fn run(seed: u64) {
    let mut m = Model::new(seed);
    let mut steps = 0;
    while (m.finished.is_none() || m.in_flight()) && steps < 50_000 {
        m.step();
        steps += 1;
    }
    let report = || {
        format!(
            "seed {seed}, last events:\n{}",
            m.log[m.log.len().saturating_sub(40)..].join("\n")
        )
    };
    let Some(close) = m.finished else {
        panic!("not finished after {steps} steps; {}", report());
    };
    assert!(!m.in_flight(), "ops still in flight; {}", report());
    assert!(
        m.held.is_empty(),
        "buffers never given back: {:?}; {}",
        m.held,
        report()
    );
    if std::env::var("RINGWAY_SIM_VERBOSE").is_ok() {
        eprintln!(
            "seed {seed}: {:?} after {steps} steps, {} events, splice {}",
            close.reason,
            m.log.len(),
            m.log[0]
        );
    }
    // Exact counts: what was written, sends completing after the end included.
    let last = m.conn.close().expect("a close");
    assert_eq!(last.reason, close.reason);
    assert_eq!(
        [last.to_upstream, last.to_downstream],
        [m.sides[0].delivered, m.sides[1].delivered],
        "bytes counted; {}",
        report()
    );
    assert_eq!(
        [close.to_upstream, close.to_downstream],
        m.delivered_at_finish,
        "bytes at the finish; {}",
        report()
    );
    // A reset that no sink failure and no timer overtook: every byte read
    // from the side that reset was written to the other first.
    let reset = match close.reason {
        CloseReason::UpstreamReset => Some(Dir::ToDownstream),
        CloseReason::DownstreamReset => Some(Dir::ToUpstream),
        _ => None,
    };
    if let Some(d) = reset.filter(|_| !m.sink_failed) {
        let s = &m.sides[d.index()];
        assert!(s.source_reset, "{d:?} reset without a reset; {}", report());
        assert_eq!(s.delivered, s.read, "{d:?} lost bytes; {}", report());
    }
    if close.reason == CloseReason::Done {
        for (d, s) in Dir::BOTH.iter().zip(&m.sides) {
            assert_eq!(
                s.delivered,
                s.source_total,
                "{d:?} lost bytes; {}",
                report()
            );
        }
        assert_eq!(close.to_upstream, m.sides[0].source_total, "{}", report());
        assert_eq!(close.to_downstream, m.sides[1].source_total, "{}", report());
    }
}

#[test]
fn seeded_simulation_keeps_every_invariant() {
    if let Ok(seed) = std::env::var("RINGWAY_SIM_SEED") {
        run(seed.parse().expect("RINGWAY_SIM_SEED is a number"));
        return;
    }
    for seed in 1..=500 {
        run(seed);
    }
}
