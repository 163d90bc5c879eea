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

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::routing::table::{ClusterId, ListenerRouting, RouteId};

use super::Settings;
use super::conn::Connection;
pub use super::http::HttpSession;
use super::http::Request;
use super::io::{Cap, Checkout, Close, CloseReason, Completion, Io, Pump, Reservation};
pub use super::passthrough::{HELLO_TIMEOUT, ServerName, SniSession};
use super::plan::Plan;
pub use super::tcp::TcpSession;
use super::token::Dir;

/// One downstream connection's protocol state.
#[derive(Debug)]
pub enum Session {
    Tcp(TcpSession),
    Sni(SniSession),
    Http(HttpSession),
}

impl Session {
    /// The session for a connection accepted at `now` on listener
    /// `listener` of `plan` (an index into `plan.table.listeners`), with
    /// its first I/O in `out`. A listener the plan no longer has ends the
    /// connection with `NR`.
    pub fn open(
        plan: &Arc<Plan>,
        listener: usize,
        peer: SocketAddr,
        settings: &Settings,
        now: Instant,
        out: &mut Vec<Io>,
    ) -> Session {
        match plan.table.listeners.get(listener).map(|l| &l.routing) {
            Some(ListenerRouting::Tcp { route }) => {
                Session::Tcp(TcpSession::open(*route, now, Vec::new(), out))
            }
            Some(ListenerRouting::TlsPassthrough { .. }) => {
                Session::Sni(SniSession::open(Arc::clone(plan), listener, now, out))
            }
            Some(ListenerRouting::Http { .. }) => Session::Http(HttpSession::open(
                Arc::clone(plan),
                listener,
                peer,
                settings,
                now,
                out,
            )),
            None => Session::Tcp(TcpSession::refused(CloseReason::NoRoute, now, out)),
        }
    }

    /// Whether the connection counts in Istio's TCP metrics and gets a
    /// connection access-log line (HTTP counts and logs each request).
    pub fn counts_tcp(&self) -> bool {
        !matches!(self, Session::Http(_))
    }

    fn http_mut(&mut self) -> Option<&mut HttpSession> {
        match self {
            Session::Http(h) => Some(h),
            Session::Tcp(_) | Session::Sni(_) => None,
        }
    }

    /// HTTP: [`Io::Route`] answered with the plan current now; the plan
    /// the request runs under.
    pub fn on_route(
        &mut self,
        current: &Arc<Plan>,
        id: [u64; 2],
        now: Instant,
        out: &mut Vec<Io>,
    ) -> Option<Arc<Plan>> {
        self.http_mut()?.on_route(current, id, now, out)
    }

    /// HTTP: the worker picked the request's cluster.
    pub fn on_cluster(&mut self, cluster: ClusterId) {
        if let Some(h) = self.http_mut() {
            h.on_cluster(cluster);
        }
    }

    /// HTTP: the answer to [`Io::Checkout`].
    pub fn on_checkout(
        &mut self,
        r: Result<Checkout, CloseReason>,
        now: Instant,
        out: &mut Vec<Io>,
    ) {
        if let Some(h) = self.http_mut() {
            h.on_checkout(r, now, out);
        }
    }

    /// HTTP: whether the current request holds its place under `cap`.
    pub fn holds_cap(&self, cap: Cap) -> bool {
        matches!(self, Session::Http(h) if h.holds_cap(cap))
    }

    /// HTTP: the current request's place under `cap`.
    pub fn hold_cap(&mut self, cap: Cap, held: super::pool::Held) {
        if let Some(h) = self.http_mut() {
            h.hold_cap(cap, held);
        }
    }

    /// HTTP: whether the current request is being sent again.
    pub fn is_retry(&self) -> bool {
        matches!(self, Session::Http(h) if h.is_retry())
    }

    /// HTTP: the hash of the current request's `consistentHash` key.
    pub fn request_hash(&self, key: &crate::routing::table::RequestHashKey) -> Option<u64> {
        match self {
            Session::Http(h) => h.request_hash(key),
            Session::Tcp(_) | Session::Sni(_) => None,
        }
    }

    /// HTTP: the route and (once picked) the cluster of the current request.
    pub fn target(&self) -> Option<(RouteId, Option<ClusterId>)> {
        match self {
            Session::Http(h) => h.target(),
            Session::Tcp(_) | Session::Sni(_) => None,
        }
    }

    /// HTTP: bytes a half read past its message ([`Io::Leftover`]).
    pub fn on_leftover(&mut self, bid: u16, data: &[u8], now: Instant, out: &mut Vec<Io>) {
        match self.http_mut() {
            Some(h) => h.on_leftover(bid, data, now, out),
            None => out.push(Io::GiveBack(bid)),
        }
    }

    /// HTTP: the request that just ended ([`Io::Report`]).
    pub fn take_report(&mut self) -> Option<Box<Request>> {
        self.http_mut()?.take_report()
    }

    /// The TCP forwarding of this session, once it has one.
    fn tcp(&self) -> Option<&TcpSession> {
        match self {
            Session::Tcp(t) => Some(t),
            Session::Sni(s) => s.routed(),
            Session::Http(_) => None,
        }
    }

    fn tcp_mut(&mut self) -> Option<&mut TcpSession> {
        match self {
            Session::Tcp(t) => Some(t),
            Session::Sni(s) => s.routed_mut(),
            Session::Http(_) => None,
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
            Session::Http(h) => h.on_completion(c, now, out),
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
        if let Some(h) = self.http_mut() {
            h.abort_upstream(out);
        }
    }

    /// The result of a pump the worker ran after [`Io::Pump`].
    pub fn on_pump(&mut self, dir: Dir, pump: Pump, now: Instant, out: &mut Vec<Io>) {
        if let Some(c) = self.conn_mut() {
            c.on_pump(dir, pump, now, out);
        }
        if let Some(h) = self.http_mut() {
            h.on_pump(dir, pump, now, out);
        }
    }

    /// The worker had no pipe for a pump: the direction goes back to copying.
    pub fn on_no_pipe(&mut self, dir: Dir, out: &mut Vec<Io>) {
        if let Some(c) = self.conn_mut() {
            c.on_no_pipe(dir, out);
        }
        if let Some(h) = self.http_mut() {
            h.on_no_pipe(dir, out);
        }
    }

    /// Buffers came back to the ring after [`Io::WaitBuffers`].
    pub fn on_buffers(&mut self, dir: Dir, out: &mut Vec<Io>) {
        match self {
            Session::Tcp(t) => t.on_buffers(dir, out),
            Session::Sni(s) => s.on_buffers(dir, out),
            Session::Http(h) => h.on_buffers(dir, out),
        }
    }

    /// The sink of `dir` sent everything after its source reset
    /// ([`Io::CheckSent`]).
    pub fn on_sent(&mut self, dir: Dir, out: &mut Vec<Io>) {
        if let Some(c) = self.conn_mut() {
            c.on_sent(dir, out);
        }
        if let Some(h) = self.http_mut() {
            h.on_sent(dir, out);
        }
    }

    /// Timers; see [`Session::next_deadline`].
    pub fn on_tick(&mut self, now: Instant, out: &mut Vec<Io>) {
        match self {
            Session::Tcp(t) => t.on_tick(now, out),
            Session::Sni(s) => s.on_tick(now, out),
            Session::Http(h) => h.on_tick(now, out),
        }
    }

    /// The earliest instant at which [`Session::on_tick`] may have
    /// something to do, or `None`. A caller that keeps the instant it got
    /// may wake up early, never late.
    pub fn next_deadline(&self) -> Option<Instant> {
        match self {
            Session::Tcp(t) => t.next_deadline(),
            Session::Sni(s) => s.next_deadline(),
            Session::Http(h) => h.next_deadline(),
        }
    }

    /// The process is stopping.
    pub fn drain(&mut self, out: &mut Vec<Io>) {
        match self {
            Session::Tcp(t) => t.drain(out),
            Session::Sni(s) => s.drain(out),
            Session::Http(h) => h.drain(out),
        }
    }

    /// The process started draining (SIGTERM): a protocol with requests
    /// ends its connections at their next boundary (HTTP: idle keep-alive
    /// connections at once, busy ones after their response). TCP
    /// connections run on until they end or the drain timeout.
    pub fn wind_down(&mut self, out: &mut Vec<Io>) {
        if let Some(h) = self.http_mut() {
            h.wind_down(out);
        }
    }

    /// What is left of the direction's outbox to send ([`Io::SendOwned`]).
    pub fn outbox(&self, dir: Dir) -> Option<&[u8]> {
        if let Session::Http(h) = self {
            return h.outbox(dir);
        }
        self.tcp()
            .and_then(|t| t.conn())
            .and_then(|c| c.outbox(dir))
    }

    pub fn is_finished(&self) -> bool {
        self.close().is_some()
    }

    /// Bytes written so far to the upstream and to the downstream.
    pub fn moved(&self) -> [u64; 2] {
        if let Session::Http(h) = self {
            return h.moved();
        }
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
            Session::Http(h) => h.close(),
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
        if let Session::Http(h) = self {
            return h.tried();
        }
        self.tcp().map_or(&[], TcpSession::tried)
    }

    /// The worker picked `endpoint` for the next connect.
    pub fn connecting_to(&mut self, endpoint: usize) {
        if let Some(t) = self.tcp_mut() {
            t.connecting_to(endpoint);
        }
        if let Some(h) = self.http_mut() {
            h.connecting_to(endpoint);
        }
    }

    /// When the connection was accepted.
    pub fn opened(&self) -> Instant {
        match self {
            Session::Tcp(t) => t.opened(),
            Session::Sni(s) => s.opened(),
            Session::Http(h) => h.opened(),
        }
    }

    /// TLS passthrough: the server name the ClientHello asked for.
    pub fn server_name(&self) -> Option<&ServerName> {
        match self {
            Session::Tcp(_) | Session::Http(_) => None,
            Session::Sni(s) => s.server_name(),
        }
    }
}
