//! The model kernel and worker an HTTP session runs against: a client
//! socket, upstream connections (each with a model server behind it), a
//! provided-buffer ring, pipes, a keep-alive pool, and every [`Io`]
//! performed the way `connections.rs` and `checkout.rs` perform it, with
//! the rules the worker relies on asserted as they are used.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use ringway::dataplane::Plan;
use ringway::dataplane::balancer::Balancer;
use ringway::dataplane::half::MAX_QUEUED_BUFFERS;
use ringway::dataplane::http::request::Request;
use ringway::dataplane::io::{
    Checkout, Close, CloseReason, Completion, Io, Pump, Release, SinkState, SourceState,
};
use ringway::dataplane::session::Session;
use ringway::dataplane::token::{Dir, Op};
use ringway::routing::table::ClusterId;

use super::Rng;
use super::traffic::{ClientRequest, Framing, Message};

pub const BUFFERS: u16 = 8;
pub const PIPE: usize = 16384;
pub const PEER: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40000);

/// The far end of one socket.
#[derive(Debug, Default)]
pub struct Peer {
    /// Bytes the session wrote to it.
    pub rx: Vec<u8>,
    /// Bytes it wrote (the session reads them from `read` on).
    pub tx: Vec<u8>,
    pub read: usize,
    /// It sent its FIN after `tx`.
    pub fin: bool,
    /// The session shut its sink down (SHUT_WR) or closed the socket.
    pub rx_closed: bool,
}

impl Peer {
    pub fn available(&self) -> usize {
        self.tx.len() - self.read
    }
}

/// What becomes of an upstream connection put in the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Still open when taken again.
    Alive,
    /// The server closed it while idle; the pool's peek sees it (stale).
    ClosedSeen,
    /// The server closed it as it was taken: the request sent on it fails
    /// before any response byte (the keep-alive race).
    ClosedUnseen,
}

#[derive(Debug)]
pub struct UpConn {
    pub peer: Peer,
    pub endpoint: (ClusterId, usize),
    /// The CONNECT completed successfully.
    pub connected: bool,
    /// Dead on reuse: receives nothing, answers nothing.
    pub dead: bool,
    /// Bytes of `peer.rx` the server parsed into requests.
    pub parsed: usize,
    /// The client's responses complete when the first byte of the request
    /// being received arrived (`None`: no request started).
    pub started_with: Option<usize>,
}

/// The socket an operation is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sock {
    Client,
    Up(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pending {
    Recv {
        dir: Dir,
        sock: Sock,
        left: u32,
        cancelled: bool,
    },
    CancelRecv(Dir),
    Send {
        dir: Dir,
        sock: Sock,
        bid: u16,
        offset: u32,
        len: u32,
    },
    Poll {
        op: Op,
        sock: Sock,
    },
    Connect {
        conn: usize,
        res: i32,
    },
    ConnectTimeout(i32),
}

/// A fault injected into request `k` that may change its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// A reused connection died under it.
    DeadReuse,
    /// The worker refused a checkout (overflow).
    Overflow,
    /// A connect was refused or timed out.
    ConnectFailed,
}

pub struct World {
    pub rng: Rng,
    pub session: Session,
    pub plan: Arc<Plan>,
    pub balancer: Balancer,
    pub now: Instant,
    pub buffer_size: u32,
    pub free: Vec<u16>,
    /// Buffers the session holds, with their bytes.
    pub held: HashMap<u16, Vec<u8>>,
    pub starved: [bool; 2],
    pub client: Peer,
    pub conns: Vec<UpConn>,
    /// The upstream connection the session is using.
    pub cur: Option<usize>,
    pub pool: HashMap<(ClusterId, usize), Vec<(usize, Fate)>>,
    pub pending: Vec<Pending>,
    pub pipes: [Vec<u8>; 2],
    pub finished: Option<Close>,
    pub reports: Vec<Request>,
    /// Requests routed so far (the one being served is `routes - 1`).
    pub routes: usize,
    pub faults: Vec<(usize, Fault)>,
    pub log: Vec<String>,
    /// The client's requests, and how many it wrote so far.
    pub requests: Vec<ClientRequest>,
    pub released: usize,
    /// What an upstream answers to each request.
    pub answers: Vec<(Vec<u8>, Framing, bool)>,
    /// Each request as an upstream server received it, and on which
    /// connection.
    pub served: Vec<Option<(Message, usize)>>,
    /// The client's stream when last parsed: its length, the end of its
    /// last complete response, and how many there were.
    pub client_seen: (usize, usize, usize),
    /// Cancelled recvs may complete after later events (io_uring does not
    /// order completions of different ops; in practice the kernel
    /// cancels a recv at submission).
    pub late_cancels: bool,
    /// Pooled connections may die unseen (the keep-alive race).
    pub unseen_closes: bool,
    /// Pumps that read bytes of a chunked body (a chunk's data spliced).
    pub spliced_chunks: usize,
}

impl World {
    pub fn send_sock(&self, dir: Dir) -> Sock {
        match dir {
            Dir::ToUpstream => Sock::Up(self.cur.expect("a send upstream without a connection")),
            Dir::ToDownstream => Sock::Client,
        }
    }

    pub fn recv_sock(&self, dir: Dir) -> Sock {
        match dir {
            Dir::ToUpstream => Sock::Client,
            Dir::ToDownstream => Sock::Up(self.cur.expect("a recv upstream without a connection")),
        }
    }

    pub fn peer(&mut self, sock: Sock) -> &mut Peer {
        match sock {
            Sock::Client => &mut self.client,
            Sock::Up(i) => &mut self.conns[i].peer,
        }
    }

    fn assert_usable(&self, sock: Sock, what: &Io) {
        if let Sock::Up(i) = sock {
            let c = &self.conns[i];
            assert!(c.connected, "{what:?} on an upstream socket not connected");
            assert_eq!(self.cur, Some(i), "{what:?} on a released upstream socket");
        }
    }

    /// Feed one completion and perform what follows.
    pub fn feed(&mut self, c: Completion<'_>) {
        self.log.push(format!(
            "{:?} res={} bid={:?} len={} more={}",
            c.op,
            c.res,
            c.bid,
            c.data.len(),
            c.more
        ));
        let mut out = Vec::new();
        self.session.on_completion(c, self.now, &mut out);
        self.apply(out);
    }

    /// Perform the session's actions the way the worker would.
    pub fn apply(&mut self, actions: Vec<Io>) {
        let mut queue: std::collections::VecDeque<Io> = actions.into();
        while let Some(io) = queue.pop_front() {
            self.log.push(format!("  -> {io:?}"));
            if self.finished.is_some() {
                assert!(matches!(io, Io::GiveBack(_)), "{io:?} after Finish");
            }
            let mut out = Vec::new();
            self.act(io, &mut out);
            queue.extend(out);
        }
        let queued = self.held.len();
        assert!(
            queued <= 2 * (MAX_QUEUED_BUFFERS + 1) + 2,
            "{queued} buffers held: no backpressure"
        );
    }

    fn act(&mut self, io: Io, out: &mut Vec<Io>) {
        match io {
            Io::Route => {
                self.routes += 1;
                let id = [self.rng.bits(), self.rng.bits()];
                let plan = Arc::clone(&self.plan);
                let under = self.session.on_route(&plan, id, self.now, out);
                assert!(under.is_some(), "Route answered by no request");
            }
            Io::Checkout { fresh } => self.checkout(fresh, out),
            Io::Release(how) => self.release(how),
            Io::Connected => {
                let i = self.cur.expect("Connected without a connection");
                assert!(
                    self.conns[i].connected,
                    "Connected before the CONNECT completed"
                );
            }
            Io::RecvOnce(_)
            | Io::Recv { .. }
            | Io::CancelRecv(_)
            | Io::Send { .. }
            | Io::PollIn(_)
            | Io::PollOut(_) => self.submit(io),
            Io::GiveBack(_) | Io::Leftover { .. } => self.buffer(io, out),
            Io::SendOwned(dir) => self.send_owned(dir, out),
            Io::WaitBuffers(dir) => self.starved[dir.index()] = true,
            Io::EnterSplice(dir) => {
                let sock = self.send_sock(dir);
                self.assert_usable(sock, &io);
            }
            Io::Pump {
                dir,
                in_pipe,
                read,
                max,
            } => {
                let pump = self.pump(dir, in_pipe, read, max);
                self.log.push(format!("  pump {pump:?}"));
                self.session.on_pump(dir, pump, self.now, out);
            }
            Io::Shutdown(dir) => {
                let sock = self.send_sock(dir);
                let p = self.peer(sock);
                assert!(!p.rx_closed, "{dir:?} shut down twice");
                p.rx_closed = true;
                self.session
                    .on_completion(Completion::done(Op::Shutdown(dir), 0), self.now, out);
            }
            Io::CheckSent(dir) => self.session.on_sent(dir, out),
            Io::Report => {
                let r = self
                    .session
                    .take_report()
                    .expect("Report without a request");
                self.reports.push(*r);
            }
            Io::Finish(close) => {
                assert!(self.finished.is_none(), "finished twice");
                self.finished = Some(close);
            }
            Io::Reserve(_) | Io::Connect => panic!("{io:?} from an HTTP session"),
            Io::SinkStalled(_) | Io::Abort(_) | Io::Reject { .. } => {}
        }
    }

    /// A ring operation: in flight until the kernel completes it.
    fn submit(&mut self, io: Io) {
        match io {
            Io::RecvOnce(dir) | Io::Recv { dir, .. } => {
                let left = match io {
                    Io::Recv { buffers, .. } => {
                        assert!(buffers >= 1 && buffers as usize <= MAX_QUEUED_BUFFERS);
                        buffers
                    }
                    _ => 1,
                };
                let sock = self.recv_sock(dir);
                self.assert_usable(sock, &io);
                assert!(
                    !self
                        .pending
                        .iter()
                        .any(|p| matches!(p, Pending::Recv { dir: d, .. } if *d == dir)),
                    "two recvs in flight on {dir:?}"
                );
                self.pending.push(Pending::Recv {
                    dir,
                    sock,
                    left,
                    cancelled: false,
                });
            }
            Io::CancelRecv(dir) => {
                for p in &mut self.pending {
                    if let Pending::Recv {
                        dir: d, cancelled, ..
                    } = p
                    {
                        if *d == dir {
                            *cancelled = true;
                        }
                    }
                }
                // A cancel of an earlier recv may still be in flight (the
                // worker counts ops, it does not name them).
                self.pending.push(Pending::CancelRecv(dir));
            }
            Io::Send {
                dir,
                bid,
                offset,
                len,
            } => self.arm_send(dir, bid, offset, len),
            Io::PollIn(dir) | Io::PollOut(dir) => {
                let (op, sock) = match io {
                    Io::PollIn(_) => (Op::Readable(dir), self.recv_sock(dir)),
                    _ => (Op::Writable(dir), self.send_sock(dir)),
                };
                self.assert_usable(sock, &io);
                assert!(
                    !self
                        .pending
                        .iter()
                        .any(|p| matches!(p, Pending::Poll { op: o, .. } if *o == op)),
                    "two polls {op:?}"
                );
                self.pending.push(Pending::Poll { op, sock });
            }
            _ => unreachable!("{io:?} is not a ring operation"),
        }
    }

    /// A send of `len` bytes of buffer `bid` from `offset`.
    fn arm_send(&mut self, dir: Dir, bid: u16, offset: u32, len: u32) {
        let io = Io::Send {
            dir,
            bid,
            offset,
            len,
        };
        let sock = self.send_sock(dir);
        self.assert_usable(sock, &io);
        let bytes = self
            .held
            .get(&bid)
            .unwrap_or_else(|| panic!("send of buffer {bid} not held"));
        assert!(
            len > 0 && (offset + len) as usize <= bytes.len(),
            "send past the buffer's bytes"
        );
        assert!(
            !self
                .pending
                .iter()
                .any(|p| matches!(p, Pending::Send { dir: d, .. } if *d == dir)),
            "two sends in flight on {dir:?}"
        );
        self.pending.push(Pending::Send {
            dir,
            sock,
            bid,
            offset,
            len,
        });
    }

    /// A provided buffer given back, or handed back as leftover bytes.
    fn buffer(&mut self, io: Io, out: &mut Vec<Io>) {
        match io {
            Io::GiveBack(bid) => {
                assert!(
                    self.held.remove(&bid).is_some(),
                    "buffer {bid} given back twice (or never taken)"
                );
                assert!(
                    !self
                        .pending
                        .iter()
                        .any(|p| matches!(p, Pending::Send { bid: b, .. } if *b == bid)),
                    "buffer {bid} given back mid-send"
                );
                self.free.push(bid);
            }
            Io::Leftover {
                dir: _,
                bid,
                offset,
                len,
            } => {
                let bytes = self
                    .held
                    .get(&bid)
                    .unwrap_or_else(|| panic!("leftover of buffer {bid} not held"));
                let data = bytes[offset as usize..(offset + len) as usize].to_vec();
                self.session.on_leftover(bid, &data, self.now, out);
            }
            _ => unreachable!("{io:?} is not about a buffer"),
        }
    }

    /// [`Io::Checkout`] as `checkout.rs` performs it.
    fn checkout(&mut self, fresh: bool, out: &mut Vec<Io>) {
        assert!(
            self.cur.is_none(),
            "checkout while holding connection {:?}",
            self.cur
        );
        let k = self.routes.saturating_sub(1);
        let (route, cluster) = self.session.target().expect("checkout without a target");
        let Some(cluster) = cluster.or_else(|| self.balancer.pick_cluster(&self.plan, route))
        else {
            return self
                .session
                .on_checkout(Err(CloseReason::NoHealthyUpstream), self.now, out);
        };
        self.session.on_cluster(cluster);
        let tried = self.session.tried().to_vec();
        let Some(endpoint) =
            self.balancer
                .pick_endpoint(&self.plan, cluster, PEER.ip(), &tried, self.now)
        else {
            let r = if tried.is_empty() {
                CloseReason::NoHealthyUpstream
            } else {
                CloseReason::ConnectFailed
            };
            return self.session.on_checkout(Err(r), self.now, out);
        };
        // Two endpoints per cluster: a retry goes to the other one.
        assert!(
            tried.len() >= 2 || !tried.contains(&endpoint),
            "endpoint {endpoint} tried again while another was left ({tried:?})"
        );
        self.session.connecting_to(endpoint);
        if !fresh {
            let idle = self.pool.entry((cluster, endpoint)).or_default();
            while let Some((i, fate)) = idle.pop() {
                if fate == Fate::ClosedSeen {
                    self.log.push(format!("  pool: connection {i} stale"));
                    continue;
                }
                self.conns[i].dead = fate == Fate::ClosedUnseen;
                if self.conns[i].dead {
                    self.faults.push((k, Fault::DeadReuse));
                }
                self.log
                    .push(format!("  pool: reuse connection {i} ({fate:?})"));
                self.cur = Some(i);
                let reused = Checkout {
                    cluster,
                    reused: true,
                };
                return self.session.on_checkout(Ok(reused), self.now, out);
            }
        }
        if self.rng.chance(2) {
            self.faults.push((k, Fault::Overflow));
            return self
                .session
                .on_checkout(Err(CloseReason::Overflow), self.now, out);
        }
        self.connect(cluster, endpoint, k);
        let connecting = Checkout {
            cluster,
            reused: false,
        };
        self.session.on_checkout(Ok(connecting), self.now, out);
    }

    /// A new connection to `endpoint` of `cluster` for request `k`: its
    /// CONNECT and linked timeout go in flight, the CONNECT to succeed,
    /// be refused, or be cancelled by the timeout.
    fn connect(&mut self, cluster: ClusterId, endpoint: usize, k: usize) {
        let i = self.conns.len();
        self.conns.push(UpConn {
            peer: Peer::default(),
            endpoint: (cluster, endpoint),
            connected: false,
            dead: false,
            parsed: 0,
            started_with: None,
        });
        let res = match self.rng.below(40) {
            0..=2 => -libc::ECONNREFUSED,
            3 => -libc::ECANCELED,
            _ => 0,
        };
        if res != 0 {
            self.faults.push((k, Fault::ConnectFailed));
        }
        self.log
            .push(format!("  connect {i} to {endpoint} of {cluster:?}: {res}"));
        self.cur = Some(i);
        self.pending.push(Pending::Connect { conn: i, res });
        self.pending
            .push(Pending::ConnectTimeout(if res == -libc::ECANCELED {
                -libc::ETIME
            } else {
                -libc::ECANCELED
            }));
    }

    /// [`Io::Release`]: nothing of the connection may be in flight.
    fn release(&mut self, how: Release) {
        let i = self.cur.take().expect("Release without a connection");
        for p in &self.pending {
            let on_it = match *p {
                Pending::Recv { sock, .. }
                | Pending::Send { sock, .. }
                | Pending::Poll { sock, .. } => sock == Sock::Up(i),
                Pending::Connect { conn, .. } => conn == i,
                Pending::CancelRecv(_) | Pending::ConnectTimeout(_) => false,
            };
            assert!(
                !on_it,
                "Release({how:?}) of connection {i} with {p:?} in flight"
            );
        }
        assert!(
            self.pipes[0].is_empty() && self.pipes[1].is_empty(),
            "Release with bytes in a pipe"
        );
        let conn = &mut self.conns[i];
        conn.peer.rx_closed = true;
        if let Release::Pool { .. } = how {
            assert!(conn.connected && !conn.dead, "a failed connection pooled");
            assert!(
                !conn.peer.fin,
                "connection {i} pooled after its server closed it"
            );
            assert_eq!(
                conn.peer.available(),
                0,
                "connection {i} pooled with unread bytes"
            );
            conn.peer.rx_closed = false;
            let fate = match self.rng.below(10) {
                0 => Fate::ClosedSeen,
                1 if self.unseen_closes => Fate::ClosedUnseen,
                _ => Fate::Alive,
            };
            self.pool.entry(conn.endpoint).or_default().push((i, fate));
        }
    }

    /// [`Io::SendOwned`]: a non-blocking send(2) of the outbox, now.
    fn send_owned(&mut self, dir: Dir, out: &mut Vec<Io>) {
        let sock = self.send_sock(dir);
        self.assert_usable(sock, &Io::SendOwned(dir));
        let bytes = self
            .session
            .outbox(dir)
            .expect("SendOwned without an outbox")
            .to_vec();
        assert!(!bytes.is_empty(), "an empty outbox sent");
        let res = self.write(sock, &bytes);
        self.session
            .on_completion(Completion::done(Op::Send(dir), res), self.now, out);
    }

    /// The kernel takes some of `bytes` for `sock`'s peer (or pushes back).
    pub fn write(&mut self, sock: Sock, bytes: &[u8]) -> i32 {
        if let Sock::Up(i) = sock {
            if self.conns[i].dead && !self.conns[i].peer.rx.is_empty() && self.rng.chance(50) {
                return -libc::EPIPE;
            }
        }
        let n = if self.rng.chance(10) {
            return -libc::EAGAIN;
        } else if self.rng.chance(40) {
            1 + self.rng.below(bytes.len() as u64 - 1) as usize
        } else {
            bytes.len()
        };
        let p = self.peer(sock);
        assert!(!p.rx_closed, "a write to {sock:?} after it was closed");
        p.rx.extend_from_slice(&bytes[..n]);
        if let Sock::Up(i) = sock {
            self.serve(i);
        }
        n as i32
    }

    /// The splice path's pump through the direction's model pipe.
    fn pump(&mut self, dir: Dir, in_pipe: u32, read: bool, max: u64) -> Pump {
        assert_eq!(
            in_pipe as usize,
            self.pipes[dir.index()].len(),
            "pipe accounting"
        );
        let (from, to) = (self.recv_sock(dir), self.send_sock(dir));
        let mut p = Pump {
            read: 0,
            written: 0,
            in_pipe,
            source: SourceState::Open,
            sink: SinkState::Ok,
        };
        if read {
            let room = (PIPE - in_pipe as usize) as u64;
            let want = (1 + self.rng.below(room)).min(max);
            let src = self.peer(from);
            let n = (src.available() as u64).min(want) as usize;
            let bytes = src.tx[src.read..src.read + n].to_vec();
            src.read += n;
            let chunked = n > 0 && in_chunked_message(&src.tx, src.read - n);
            p.source = if n == 0 && src.fin {
                SourceState::Eof
            } else if src.available() == 0 {
                SourceState::WouldBlock
            } else {
                SourceState::Open
            };
            self.pipes[dir.index()].extend_from_slice(&bytes);
            p.read = n as u64;
            if chunked {
                self.spliced_chunks += 1;
            }
        }
        let held = self.pipes[dir.index()].len();
        if held > 0 {
            let n = if self.rng.chance(30) {
                self.rng.below(held as u64) as usize
            } else {
                held
            };
            let bytes: Vec<u8> = self.pipes[dir.index()].drain(..n).collect();
            let sink = self.peer(to);
            assert!(!sink.rx_closed, "a pump into {to:?} after it was closed");
            sink.rx.extend_from_slice(&bytes);
            if let Sock::Up(i) = to {
                self.serve(i);
            }
            p.written = n as u64;
            if n < held {
                p.sink = SinkState::WouldBlock;
            }
        }
        p.in_pipe = self.pipes[dir.index()].len() as u32;
        p
    }
}

/// Whether byte `at` of a stream of whole messages (the client's
/// requests, or an upstream's responses) lies in a chunked message.
fn in_chunked_message(stream: &[u8], at: usize) -> bool {
    let ends = super::traffic::requests_in(stream)
        .or_else(|_| super::traffic::responses_in(stream, true))
        .unwrap_or_default();
    let mut start = 0;
    for m in ends {
        if at < m.end {
            let message = &stream[start..m.end];
            return message
                .windows(26)
                .any(|w| w == b"transfer-encoding: chunked");
        }
        start = m.end;
    }
    false
}
