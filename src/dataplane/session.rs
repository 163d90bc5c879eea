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

use super::conn::Connection;
use super::io::{Close, CloseReason, Completion, Io, Pump, Reservation};
pub use super::passthrough::{HELLO_TIMEOUT, ServerName, SniSession};
use super::plan::Plan;
pub use super::tcp::TcpSession;
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
            // HTTP sessions: issue 13, data plane stream.
            Some(ListenerRouting::Http { .. }) | None => {
                Session::Tcp(TcpSession::refused(CloseReason::NoRoute, now, out))
            }
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

    /// When the connection was accepted.
    pub fn opened(&self) -> Instant {
        match self {
            Session::Tcp(t) => t.opened(),
            Session::Sni(s) => s.opened(),
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
