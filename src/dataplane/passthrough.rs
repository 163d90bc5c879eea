//! TLS passthrough, sans-io: read the ClientHello (one single-shot recv at a
//! time, reassembled in the session's own input buffer), look its SNI up in
//! the listener's table, then hand the connection to a [`TcpSession`] whose
//! first bytes upstream are every byte read.
//!
//! ```text
//! Reading --hello complete, SNI routed--> Routed(TcpSession: Reserve, Connect, ...)
//!    \--timeout, EOF, reset, too large, no route--> Closed
//! ```
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sni::{self, Peek};

use super::io::{Close, CloseReason, Completion, Io};
use super::plan::Plan;
use super::tcp::TcpSession;
use super::token::{Dir, Op};

/// How long a TLS passthrough connection may take to send its ClientHello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// What the ClientHello said about the server name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerName {
    Name(String),
    /// A ClientHello without SNI.
    Absent,
    /// Not a TLS ClientHello: routed like a client without SNI.
    NotTls(&'static str),
    /// A ClientHello larger than [`sni::MAX_CLIENT_HELLO`]: closed, never
    /// routed.
    TooLarge,
}

impl ServerName {
    /// The name to look up in an SNI table.
    pub fn lookup_key(&self) -> Option<&str> {
        match self {
            ServerName::Name(n) => Some(n),
            ServerName::Absent | ServerName::NotTls(_) | ServerName::TooLarge => None,
        }
    }

    /// The name for the access log's SNI field: a host name (never spaces
    /// or control characters, see `sni.rs`), or `None` for `-`.
    pub fn logged(&self) -> Option<&str> {
        self.lookup_key()
    }
}

impl std::fmt::Display for ServerName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerName::Name(n) => f.write_str(n),
            ServerName::Absent => f.write_str("(no SNI)"),
            ServerName::NotTls(why) => write!(f, "(not TLS: {why})"),
            ServerName::TooLarge => f.write_str("(ClientHello too large)"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HelloRecv {
    /// The single-shot recv is in flight.
    Armed,
    /// The buffer ring ran dry; waiting for buffers.
    Starved,
}

// The forwarding state is inline on purpose: a session lives in its slab
// slot for its whole life (never moved), and boxing it would cost an
// allocation per connection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum State {
    /// Reading the ClientHello; `input` holds every byte read so far (at
    /// most [`sni::MAX_CLIENT_HELLO`] plus one buffer).
    /// `opened`: when the connection was accepted.
    /// `plan` and `listener` name the SNI table to route by.
    Reading {
        input: Vec<u8>,
        recv: HelloRecv,
        opened: Instant,
        plan: Arc<Plan>,
        listener: usize,
    },
    Routed(TcpSession),
    /// Ended before it was routed; a buffer a recv still in flight fills
    /// goes straight back.
    Closed {
        reason: CloseReason,
        opened: Instant,
    },
}

#[derive(Debug)]
pub struct SniSession {
    /// The plan the connection was accepted under, for its SNI table.
    /// Boxed: it outlives the ClientHello (the access log names it), and
    /// every session of every listener has room for a `SniSession`.
    name: Option<Box<ServerName>>,
    state: State,
}

impl SniSession {
    /// A connection accepted at `now` on TLS passthrough listener
    /// `listener` of `plan`: reads the ClientHello first.
    pub fn open(plan: Arc<Plan>, listener: usize, now: Instant, out: &mut Vec<Io>) -> SniSession {
        out.push(Io::RecvOnce(Dir::ToUpstream));
        SniSession {
            name: None,
            state: State::Reading {
                input: Vec::new(),
                recv: HelloRecv::Armed,
                opened: now,
                plan,
                listener,
            },
        }
    }

    /// The server name, once the ClientHello is read.
    pub fn server_name(&self) -> Option<&ServerName> {
        self.name.as_deref()
    }

    /// When the connection was accepted.
    pub fn opened(&self) -> Instant {
        match &self.state {
            State::Reading { opened, .. } | State::Closed { opened, .. } => *opened,
            State::Routed(t) => t.opened(),
        }
    }

    pub fn routed(&self) -> Option<&TcpSession> {
        match &self.state {
            State::Routed(t) => Some(t),
            State::Reading { .. } | State::Closed { .. } => None,
        }
    }

    pub fn routed_mut(&mut self) -> Option<&mut TcpSession> {
        match &mut self.state {
            State::Routed(t) => Some(t),
            State::Reading { .. } | State::Closed { .. } => None,
        }
    }

    pub fn on_completion(&mut self, c: Completion<'_>, now: Instant, out: &mut Vec<Io>) {
        match &mut self.state {
            State::Routed(t) => t.on_completion(c, now, out),
            State::Closed { .. } => {
                if let Some(bid) = c.bid {
                    out.push(Io::GiveBack(bid));
                }
            }
            State::Reading { input, recv, .. } => {
                if c.op != Op::Recv(Dir::ToUpstream) {
                    return;
                }
                match (c.res, c.bid) {
                    (n, Some(bid)) if n > 0 => {
                        input.extend_from_slice(c.data);
                        out.push(Io::GiveBack(bid));
                        self.hello_read(out);
                    }
                    (_, Some(bid)) => {
                        out.push(Io::GiveBack(bid));
                        out.push(Io::RecvOnce(Dir::ToUpstream));
                    }
                    // The client left before its ClientHello was complete.
                    (0, None) => self.end(CloseReason::Done, out),
                    (e, None) if e == -libc::ENOBUFS => {
                        *recv = HelloRecv::Starved;
                        out.push(Io::WaitBuffers(Dir::ToUpstream));
                    }
                    (e, None) if e == -libc::EAGAIN || e == -libc::EINTR => {
                        out.push(Io::RecvOnce(Dir::ToUpstream));
                    }
                    (_, None) => self.end(CloseReason::DownstreamReset, out),
                }
            }
        }
    }

    /// Bytes arrived: read on, or route the complete ClientHello.
    fn hello_read(&mut self, out: &mut Vec<Io>) {
        let State::Reading {
            input,
            recv,
            opened,
            plan,
            listener,
        } = &mut self.state
        else {
            return;
        };
        let name = match sni::peek(input) {
            Peek::NeedMore(_) => {
                *recv = HelloRecv::Armed;
                out.push(Io::RecvOnce(Dir::ToUpstream));
                return;
            }
            Peek::ServerName(Some(n)) => ServerName::Name(n),
            Peek::ServerName(None) => ServerName::Absent,
            Peek::NotTls(why) => ServerName::NotTls(why),
            Peek::TooLarge => ServerName::TooLarge,
        };
        let (input, opened) = (std::mem::take(input), *opened);
        let route = match (&name, plan.table.listeners.get(*listener)) {
            (ServerName::TooLarge, _) | (_, None) => None,
            (_, Some(l)) => l.routing.route_for_sni(name.lookup_key()),
        };
        self.name = Some(Box::new(name));
        match route {
            Some(route) => {
                self.state = State::Routed(TcpSession::open(route, opened, input, out));
            }
            None => self.end(CloseReason::NoRoute, out),
        }
    }

    pub fn on_buffers(&mut self, dir: Dir, out: &mut Vec<Io>) {
        match &mut self.state {
            State::Routed(t) => t.on_buffers(dir, out),
            State::Reading { recv, .. } if *recv == HelloRecv::Starved => {
                *recv = HelloRecv::Armed;
                out.push(Io::RecvOnce(Dir::ToUpstream));
            }
            State::Reading { .. } | State::Closed { .. } => {}
        }
    }

    pub fn on_tick(&mut self, now: Instant, out: &mut Vec<Io>) {
        match &mut self.state {
            State::Routed(t) => t.on_tick(now, out),
            State::Reading { opened, .. } => {
                if now.saturating_duration_since(*opened) >= HELLO_TIMEOUT {
                    self.end(CloseReason::IdleTimeout, out);
                }
            }
            State::Closed { .. } => {}
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        match &self.state {
            State::Routed(t) => t.next_deadline(),
            State::Reading { opened, .. } => opened.checked_add(HELLO_TIMEOUT),
            State::Closed { .. } => None,
        }
    }

    pub fn drain(&mut self, out: &mut Vec<Io>) {
        match &mut self.state {
            State::Routed(t) => t.drain(out),
            State::Reading { .. } => self.end(CloseReason::Drained, out),
            State::Closed { .. } => {}
        }
    }

    pub fn close(&self) -> Option<Close> {
        match &self.state {
            State::Routed(t) => t.close(),
            State::Reading { .. } => None,
            State::Closed { reason, .. } => Some(Close::empty(*reason)),
        }
    }

    fn end(&mut self, reason: CloseReason, out: &mut Vec<Io>) {
        let opened = self.opened();
        self.state = State::Closed { reason, opened };
        out.push(Io::Finish(Close::empty(reason)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LoadOptions, load_str};
    use crate::dataplane::Settings;
    use crate::dataplane::io::{Limits, Reservation};
    use crate::dataplane::session::Session;
    use crate::routing::table::{ClusterId, ListenerRouting};
    use crate::routing::{CompileOptions, compile};
    use crate::sni::client_hello::{client_hello_bytes, client_hello_padded};

    const UP: Dir = Dir::ToUpstream;
    const DOWN: Dir = Dir::ToDownstream;
    const PEER: std::net::SocketAddr =
        std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40000);

    /// The bundled passthrough example: exact names, a wildcard and (with
    /// `catch_all`) `*`, which also takes clients without SNI.
    fn plan(catch_all: bool) -> Arc<Plan> {
        let mut text =
            include_str!("../../config/testdata/valid/tls-passthrough-sni-hosts.yaml").to_owned();
        if !catch_all {
            text = text.replacen(
                "      - \"*\"\n    route",
                "      - \"*.example.net\"\n    route",
                1,
            );
        }
        let loaded = load_str("passthrough.yaml", &text, &LoadOptions::default());
        assert!(!loaded.diagnostics.has_errors(), "{:?}", loaded.diagnostics);
        let compiled = compile(&loaded.manifests, &CompileOptions::default());
        assert!(
            !compiled.diagnostics.has_errors(),
            "{:?}",
            compiled.diagnostics
        );
        let table = compiled.table;
        let endpoints = table.clusters.iter().map(|_| Vec::new()).collect();
        Arc::new(Plan::new(table, endpoints, None))
    }

    fn limits() -> Limits {
        Limits {
            idle_timeout: None,
            max_duration: None,
            connect_attempts: 3,
            splice_after: u64::MAX,
        }
    }

    struct Sim {
        session: Session,
        now: Instant,
        out: Vec<Io>,
    }

    impl Sim {
        fn open(plan: &Arc<Plan>) -> Sim {
            let now = Instant::now();
            let mut out = Vec::new();
            let session = Session::open(plan, 0, PEER, &Settings::default(), now, &mut out);
            assert!(matches!(session, Session::Sni(_)));
            assert_eq!(out, vec![Io::RecvOnce(UP)]);
            Sim {
                session,
                now,
                out: Vec::new(),
            }
        }

        fn feed(&mut self, c: Completion<'_>) -> Vec<Io> {
            self.session.on_completion(c, self.now, &mut self.out);
            std::mem::take(&mut self.out)
        }

        fn complete(&mut self, op: Op, res: i32) -> Vec<Io> {
            self.feed(Completion::done(op, res))
        }

        /// One recv of `bytes` into buffer `bid`: the session reads them
        /// from the completion and gives the buffer back at once.
        fn segment(&mut self, bytes: &[u8], bid: u16) -> Vec<Io> {
            let a = self.feed(Completion {
                op: Op::Recv(UP),
                res: bytes.len() as i32,
                bid: Some(bid),
                data: bytes,
                more: false,
            });
            assert_eq!(a.first(), Some(&Io::GiveBack(bid)), "{a:?}");
            a[1..].to_vec()
        }

        fn reserved(&mut self, r: Result<Reservation, CloseReason>) -> Vec<Io> {
            self.session.on_reserved(r, self.now, &mut self.out);
            std::mem::take(&mut self.out)
        }

        fn tick_after(&mut self, d: Duration) -> Vec<Io> {
            self.now += d;
            self.session.on_tick(self.now, &mut self.out);
            std::mem::take(&mut self.out)
        }
    }

    fn finish(reason: CloseReason) -> Vec<Io> {
        vec![Io::Finish(Close::empty(reason))]
    }

    fn route_of(plan: &Plan, sni: Option<&str>) -> crate::routing::table::RouteId {
        let ListenerRouting::TlsPassthrough { sni: table } = &plan.table.listeners[0].routing
        else {
            panic!("not a passthrough listener");
        };
        table.lookup(sni).expect("a route")
    }

    #[test]
    fn a_split_hello_is_read_routed_reserved_then_sent_upstream_first() {
        let plan = plan(true);
        let hello = client_hello_bytes(Some("echo.example.com"), 40);
        let mut sim = Sim::open(&plan);
        let mut pieces = hello.chunks(30).peekable();
        let mut bid = 0;
        let mut last = Vec::new();
        while let Some(piece) = pieces.next() {
            last = sim.segment(piece, bid);
            if pieces.peek().is_some() {
                assert_eq!(last, vec![Io::RecvOnce(UP)], "more needed");
                assert_eq!(sim.session.server_name(), None);
            }
            bid += 1;
        }
        // The exact name wins over the wildcard and the catch-all.
        let route = route_of(&plan, Some("echo.example.com"));
        assert_eq!(last, vec![Io::Reserve(route)]);
        assert_eq!(
            sim.session.server_name(),
            Some(&ServerName::Name("echo.example.com".into()))
        );
        let cluster = ClusterId(0);
        let a = sim.reserved(Ok(Reservation {
            cluster,
            limits: limits(),
        }));
        assert_eq!(a, vec![Io::Connect]);
        assert_eq!(sim.session.reserved(), Some((route, cluster)));
        // A failed attempt keeps the bytes for the next one.
        sim.session.connecting_to(0);
        assert_eq!(
            sim.complete(Op::Connect, -libc::ECONNREFUSED),
            vec![Io::Connect]
        );
        sim.session.connecting_to(1);
        assert_eq!(sim.session.tried(), &[0, 1]);
        let a = sim.complete(Op::Connect, 0);
        assert_eq!(
            a,
            vec![
                Io::Connected,
                Io::SendOwned(UP),
                Io::Recv {
                    dir: DOWN,
                    buffers: 2
                }
            ],
            "no recv from the client before its hello is out"
        );
        assert_eq!(sim.session.outbox(UP), Some(hello.as_slice()));
        assert_eq!(sim.session.outbox(DOWN), None);
        // Partial send, then a full sink, then the rest.
        assert_eq!(sim.complete(Op::Send(UP), 10), vec![Io::SendOwned(UP)]);
        assert_eq!(sim.session.outbox(UP), Some(&hello[10..]));
        assert_eq!(
            sim.complete(Op::Send(UP), -libc::EAGAIN),
            vec![Io::PollOut(UP), Io::SinkStalled(UP)]
        );
        assert_eq!(
            sim.complete(Op::Writable(UP), libc::POLLOUT as i32),
            vec![Io::SendOwned(UP)]
        );
        let rest = (hello.len() - 10) as i32;
        assert_eq!(
            sim.complete(Op::Send(UP), rest),
            vec![Io::Recv {
                dir: UP,
                buffers: 2
            }]
        );
        assert_eq!(sim.session.outbox(UP), None);
        // The client half-closes: FIN forwarded; then the upstream ends.
        assert_eq!(sim.complete(Op::Recv(UP), 0), vec![Io::Shutdown(UP)]);
        sim.complete(Op::Shutdown(UP), 0);
        sim.complete(Op::Recv(DOWN), 0);
        let last = sim.complete(Op::Shutdown(DOWN), 0);
        assert_eq!(
            last,
            vec![Io::Finish(Close {
                reason: CloseReason::Done,
                to_upstream: hello.len() as u64,
                to_downstream: 0,
            })]
        );
        assert_eq!(sim.session.moved(), [hello.len() as u64, 0]);
    }

    #[test]
    fn early_data_after_the_hello_goes_upstream_with_it() {
        let plan = plan(true);
        let mut hello = client_hello_bytes(None, 16384);
        hello.extend_from_slice(b"early data");
        let mut sim = Sim::open(&plan);
        // No SNI: the catch-all.
        let a = sim.segment(&hello, 1);
        assert_eq!(a, vec![Io::Reserve(route_of(&plan, None))]);
        assert_eq!(sim.session.server_name(), Some(&ServerName::Absent));
        sim.reserved(Ok(Reservation {
            cluster: ClusterId(0),
            limits: limits(),
        }));
        sim.complete(Op::Connect, 0);
        assert_eq!(
            sim.session.outbox(UP),
            Some(hello.as_slice()),
            "all bytes read"
        );
    }

    #[test]
    fn a_refused_reservation_ends_with_its_flag_and_nothing_moved() {
        for reason in [CloseReason::Overflow, CloseReason::NoHealthyUpstream] {
            let plan = plan(true);
            let mut sim = Sim::open(&plan);
            sim.segment(&client_hello_bytes(Some("a.example.com"), 16384), 1);
            assert_eq!(sim.reserved(Err(reason)), finish(reason));
            assert_eq!(sim.session.close(), Some(Close::empty(reason)));
            assert_eq!(sim.session.reserved(), None, "nothing to release");
        }
    }

    #[test]
    fn no_route_too_large_and_not_tls_close_with_nr() {
        let strict = plan(false);
        // An SNI no rule names, a client without SNI, a client that is not
        // TLS (routed like one without SNI): no catch-all, so NR.
        for bytes in [
            client_hello_bytes(Some("other.example.org"), 16384),
            client_hello_bytes(None, 16384),
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ] {
            let mut sim = Sim::open(&strict);
            assert_eq!(sim.segment(&bytes, 2), finish(CloseReason::NoRoute));
            assert!(sim.session.server_name().is_some());
        }
        // A ClientHello over 16 KiB is never routed, even with a catch-all.
        let mut sim = Sim::open(&plan(true));
        let huge = client_hello_padded(Some("echo.example.com"), 16384, 17 * 1024);
        let mut out = Vec::new();
        for (i, piece) in huge.chunks(4096).enumerate() {
            out = sim.segment(piece, i as u16);
            if out != vec![Io::RecvOnce(UP)] {
                break;
            }
        }
        assert_eq!(out, finish(CloseReason::NoRoute));
        assert_eq!(sim.session.server_name(), Some(&ServerName::TooLarge));
        assert_eq!(CloseReason::NoRoute.flag(), "NR");
        // A buffer a late recv fills goes straight back.
        let a = sim.feed(Completion {
            op: Op::Recv(UP),
            res: 3,
            bid: Some(9),
            data: b"abc",
            more: false,
        });
        assert_eq!(a, vec![Io::GiveBack(9)]);
    }

    #[test]
    fn the_hello_read_times_out_after_five_seconds() {
        let plan = plan(true);
        let mut sim = Sim::open(&plan);
        assert_eq!(sim.session.next_deadline(), Some(sim.now + HELLO_TIMEOUT));
        let hello = client_hello_bytes(Some("echo.example.com"), 16384);
        assert_eq!(sim.segment(&hello[..20], 3), vec![Io::RecvOnce(UP)]);
        assert!(sim.tick_after(Duration::from_millis(4900)).is_empty());
        assert_eq!(
            sim.tick_after(Duration::from_millis(100)),
            finish(CloseReason::IdleTimeout)
        );
        assert_eq!(sim.session.next_deadline(), None);
        assert!(sim.complete(Op::Recv(UP), -libc::ECANCELED).is_empty());
    }

    #[test]
    fn hello_read_failures_end_the_connection() {
        let plan = plan(true);
        for (res, reason) in [
            (0, CloseReason::Done),
            (-libc::ECONNRESET, CloseReason::DownstreamReset),
        ] {
            let mut sim = Sim::open(&plan);
            assert_eq!(sim.complete(Op::Recv(UP), res), finish(reason));
        }
        // An empty ring: wait, then read again.
        let mut sim = Sim::open(&plan);
        assert_eq!(
            sim.complete(Op::Recv(UP), -libc::ENOBUFS),
            vec![Io::WaitBuffers(UP)]
        );
        sim.session.on_buffers(UP, &mut sim.out);
        assert_eq!(std::mem::take(&mut sim.out), vec![Io::RecvOnce(UP)]);
        // Stopping while reading.
        sim.session.drain(&mut sim.out);
        assert_eq!(std::mem::take(&mut sim.out), finish(CloseReason::Drained));
    }
}
