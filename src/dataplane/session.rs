//! A downstream connection as its listener's protocol sees it, sans-io:
//! [`Session::open`] is the one place in the data plane that looks at a
//! listener's routing kind. Every session speaks the vocabulary of `io.rs`,
//! so the worker performs what it asks without knowing the protocol.
//!
//! - [`TcpSession`]: opaque TCP. Asks for its route's reservation, then
//!   runs one [`Connection`] to one upstream (with its retries).
//! - [`SniSession`]: TLS passthrough. Reads the ClientHello, looks its SNI
//!   up in the listener's table, then becomes a [`TcpSession`] whose first
//!   bytes upstream are the ones it read.
//!
//! A protocol to come (HTTP) is a new variant and a new module beside
//! these, not a branch through them.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Instant;

use crate::routing::table::{ClusterId, ListenerRouting, RouteId};

use super::Plan;
use super::conn::Connection;
use super::io::{Close, CloseReason, Completion, Io, Pump, Reservation};
pub use super::passthrough::{HELLO_TIMEOUT, ServerName, SniSession};
use super::token::Dir;

/// One downstream connection's protocol state.
#[derive(Debug)]
pub enum Session {
    Tcp(TcpSession),
    Sni(SniSession),
}

impl Session {
    /// The session for a connection accepted at `now` on listener
    /// `listener` of `plan` (an index into `plan.table.listeners`), with
    /// its first I/O in `out`. A listener the plan no longer has ends the
    /// connection with `NR`.
    pub fn open(plan: &Arc<Plan>, listener: usize, now: Instant, out: &mut Vec<Io>) -> Session {
        match plan.table.listeners.get(listener).map(|l| &l.routing) {
            Some(ListenerRouting::Tcp { route }) => {
                Session::Tcp(TcpSession::open(*route, now, Vec::new(), out))
            }
            Some(ListenerRouting::TlsPassthrough { .. }) => {
                Session::Sni(SniSession::open(Arc::clone(plan), listener, now, out))
            }
            None => Session::Tcp(TcpSession::refused(CloseReason::NoRoute, now, out)),
        }
    }

    /// The TCP forwarding of this session, once it has one.
    fn tcp(&self) -> Option<&TcpSession> {
        match self {
            Session::Tcp(t) => Some(t),
            Session::Sni(s) => s.routed(),
        }
    }

    fn tcp_mut(&mut self) -> Option<&mut TcpSession> {
        match self {
            Session::Tcp(t) => Some(t),
            Session::Sni(s) => s.routed_mut(),
        }
    }

    /// The connection of an open session.
    fn conn_mut(&mut self) -> Option<&mut Connection> {
        self.tcp_mut().and_then(TcpSession::conn_mut)
    }

    pub fn on_completion(&mut self, c: Completion<'_>, now: Instant, out: &mut Vec<Io>) {
        match self {
            Session::Tcp(t) => t.on_completion(c, now, out),
            Session::Sni(s) => s.on_completion(c, now, out),
        }
    }

    /// The answer to [`Io::Reserve`].
    pub fn on_reserved(
        &mut self,
        reserved: Result<Reservation, CloseReason>,
        now: Instant,
        out: &mut Vec<Io>,
    ) {
        if let Some(t) = self.tcp_mut() {
            t.on_reserved(reserved, now, out);
        }
    }

    /// The worker could not start a connect (no usable endpoint, overflow,
    /// no descriptor: [`CloseReason::LocalResource`]).
    pub fn on_connect_unavailable(&mut self, reason: CloseReason, out: &mut Vec<Io>) {
        if let Some(c) = self.conn_mut() {
            c.on_connect_unavailable(reason, out);
        }
    }

    /// The worker could not prepare the upstream (the PROXY header did not
    /// go out): the connection ends as an upstream reset.
    pub fn abort_upstream(&mut self, out: &mut Vec<Io>) {
        if let Some(c) = self.conn_mut() {
            c.abort_upstream(out);
        }
    }

    /// The result of a pump the worker ran after [`Io::Pump`].
    pub fn on_pump(&mut self, dir: Dir, pump: Pump, now: Instant, out: &mut Vec<Io>) {
        if let Some(c) = self.conn_mut() {
            c.on_pump(dir, pump, now, out);
        }
    }

    /// The worker had no pipe for a pump: the direction goes back to copying.
    pub fn on_no_pipe(&mut self, dir: Dir, out: &mut Vec<Io>) {
        if let Some(c) = self.conn_mut() {
            c.on_no_pipe(dir, out);
        }
    }

    /// Buffers came back to the ring after [`Io::WaitBuffers`].
    pub fn on_buffers(&mut self, dir: Dir, out: &mut Vec<Io>) {
        match self {
            Session::Tcp(t) => t.on_buffers(dir, out),
            Session::Sni(s) => s.on_buffers(dir, out),
        }
    }

    /// The sink of `dir` sent everything after its source reset
    /// ([`Io::CheckSent`]).
    pub fn on_sent(&mut self, dir: Dir, out: &mut Vec<Io>) {
        if let Some(c) = self.conn_mut() {
            c.on_sent(dir, out);
        }
    }

    /// Timers; see [`Session::next_deadline`].
    pub fn on_tick(&mut self, now: Instant, out: &mut Vec<Io>) {
        match self {
            Session::Tcp(t) => t.on_tick(now, out),
            Session::Sni(s) => s.on_tick(now, out),
        }
    }

    /// The earliest instant at which [`Session::on_tick`] may have
    /// something to do, or `None`. A caller that keeps the instant it got
    /// may wake up early, never late.
    pub fn next_deadline(&self) -> Option<Instant> {
        match self {
            Session::Tcp(t) => t.next_deadline(),
            Session::Sni(s) => s.next_deadline(),
        }
    }

    /// The process is stopping.
    pub fn drain(&mut self, out: &mut Vec<Io>) {
        match self {
            Session::Tcp(t) => t.drain(out),
            Session::Sni(s) => s.drain(out),
        }
    }

    /// What is left of the direction's outbox to send ([`Io::SendOwned`]).
    pub fn outbox(&self, dir: Dir) -> Option<&[u8]> {
        self.tcp()
            .and_then(|t| t.conn())
            .and_then(|c| c.outbox(dir))
    }

    pub fn is_finished(&self) -> bool {
        self.close().is_some()
    }

    /// Bytes written so far to the upstream and to the downstream.
    pub fn moved(&self) -> [u64; 2] {
        self.tcp()
            .and_then(|t| t.conn())
            .map_or([0, 0], Connection::moved)
    }

    /// How the connection ended, once it has; final once nothing of it is
    /// in flight (sends completing after [`Io::Finish`] still count).
    pub fn close(&self) -> Option<Close> {
        match self {
            Session::Tcp(t) => t.close(),
            Session::Sni(s) => s.close(),
        }
    }

    /// The route and the cluster reserved for it (counted in
    /// `plan.cluster_open` until the slot is freed).
    pub fn reserved(&self) -> Option<(RouteId, ClusterId)> {
        self.tcp().and_then(TcpSession::reserved)
    }

    /// Endpoints of the reserved cluster tried so far (a retry prefers
    /// another one).
    pub fn tried(&self) -> &[usize] {
        self.tcp().map_or(&[], TcpSession::tried)
    }

    /// The worker picked `endpoint` for the next connect.
    pub fn connecting_to(&mut self, endpoint: usize) {
        if let Some(t) = self.tcp_mut() {
            t.connecting_to(endpoint);
        }
    }

    /// TLS passthrough: the server name the ClientHello asked for.
    pub fn server_name(&self) -> Option<&ServerName> {
        match self {
            Session::Tcp(_) => None,
            Session::Sni(s) => s.server_name(),
        }
    }
}

/// Opaque TCP: one route, one upstream connection at a time.
#[derive(Debug)]
pub struct TcpSession {
    /// When the connection was accepted.
    opened: Instant,
    state: TcpState,
}

// The forwarding state is inline on purpose: a session lives in its slab
// slot for its whole life (never moved), and boxing it would cost an
// allocation per connection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum TcpState {
    /// [`Io::Reserve`] is out; `outbox` holds bytes read before routing.
    Reserving { route: RouteId, outbox: Vec<u8> },
    Open {
        route: RouteId,
        cluster: ClusterId,
        tried: Vec<usize>,
        conn: Connection,
    },
    /// Ended before any upstream was tried.
    Refused(CloseReason),
}

impl TcpSession {
    /// A session for `route`, opened at `opened`; `outbox` goes upstream
    /// first. Asks for the route's reservation.
    pub fn open(route: RouteId, opened: Instant, outbox: Vec<u8>, out: &mut Vec<Io>) -> TcpSession {
        out.push(Io::Reserve(route));
        TcpSession {
            opened,
            state: TcpState::Reserving { route, outbox },
        }
    }

    /// A session that ends at once, with `reason`.
    fn refused(reason: CloseReason, opened: Instant, out: &mut Vec<Io>) -> TcpSession {
        out.push(Io::Finish(Close::empty(reason)));
        TcpSession {
            opened,
            state: TcpState::Refused(reason),
        }
    }

    fn conn(&self) -> Option<&Connection> {
        match &self.state {
            TcpState::Open { conn, .. } => Some(conn),
            TcpState::Reserving { .. } | TcpState::Refused(_) => None,
        }
    }

    fn conn_mut(&mut self) -> Option<&mut Connection> {
        match &mut self.state {
            TcpState::Open { conn, .. } => Some(conn),
            TcpState::Reserving { .. } | TcpState::Refused(_) => None,
        }
    }

    pub fn on_reserved(
        &mut self,
        reserved: Result<Reservation, CloseReason>,
        now: Instant,
        out: &mut Vec<Io>,
    ) {
        let TcpState::Reserving { route, outbox } = &mut self.state else {
            return;
        };
        self.state = match reserved {
            Ok(r) => {
                let outbox = std::mem::take(outbox);
                TcpState::Open {
                    route: *route,
                    cluster: r.cluster,
                    tried: Vec::new(),
                    conn: Connection::open(r.limits, self.opened, now, outbox, out),
                }
            }
            Err(reason) => {
                out.push(Io::Finish(Close::empty(reason)));
                TcpState::Refused(reason)
            }
        };
    }

    pub fn on_completion(&mut self, c: Completion<'_>, now: Instant, out: &mut Vec<Io>) {
        match &mut self.state {
            TcpState::Open { conn, .. } => conn.on_completion(c, now, out),
            TcpState::Reserving { .. } | TcpState::Refused(_) => {
                // Nothing of a TCP session is in flight before it connects.
                debug_assert!(false, "completion before a connect: {c:?}");
                if let Some(bid) = c.bid {
                    out.push(Io::GiveBack(bid));
                }
            }
        }
    }

    pub fn on_buffers(&mut self, dir: Dir, out: &mut Vec<Io>) {
        if let Some(c) = self.conn_mut() {
            c.on_buffers(dir, out);
        }
    }

    pub fn on_tick(&mut self, now: Instant, out: &mut Vec<Io>) {
        if let Some(c) = self.conn_mut() {
            c.on_tick(now, out);
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.conn().and_then(Connection::next_deadline)
    }

    pub fn drain(&mut self, out: &mut Vec<Io>) {
        match &mut self.state {
            TcpState::Open { conn, .. } => conn.drain(out),
            TcpState::Reserving { .. } => {
                out.push(Io::Finish(Close::empty(CloseReason::Drained)));
                self.state = TcpState::Refused(CloseReason::Drained);
            }
            TcpState::Refused(_) => {}
        }
    }

    pub fn close(&self) -> Option<Close> {
        match &self.state {
            TcpState::Open { conn, .. } => conn.close(),
            TcpState::Reserving { .. } => None,
            TcpState::Refused(reason) => Some(Close::empty(*reason)),
        }
    }

    pub fn reserved(&self) -> Option<(RouteId, ClusterId)> {
        match &self.state {
            TcpState::Open { route, cluster, .. } => Some((*route, *cluster)),
            TcpState::Reserving { .. } | TcpState::Refused(_) => None,
        }
    }

    pub fn tried(&self) -> &[usize] {
        match &self.state {
            TcpState::Open { tried, .. } => tried,
            TcpState::Reserving { .. } | TcpState::Refused(_) => &[],
        }
    }

    pub fn connecting_to(&mut self, endpoint: usize) {
        if let TcpState::Open { tried, .. } = &mut self.state {
            tried.push(endpoint);
        }
    }
}
