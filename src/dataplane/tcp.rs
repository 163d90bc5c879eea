//! Opaque TCP as a session: ask for the route's reservation, then run one
//! [`Connection`] to one upstream at a time (with its retries), keeping
//! what belongs to the route and to each attempt (the cluster, the
//! endpoints tried). TLS passthrough hands over to one once routed.
#![forbid(unsafe_code)]

use std::time::Instant;

use crate::routing::table::{ClusterId, RouteId};

use super::conn::Connection;
use super::io::{Close, CloseReason, Completion, Io, Reservation};
use super::token::Dir;

/// Opaque TCP: one route, one upstream connection at a time.
#[derive(Debug)]
pub struct TcpSession {
    state: TcpState,
}

// The forwarding state is inline on purpose: a session lives in its slab
// slot for its whole life (never moved), and boxing it would cost an
// allocation per connection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum TcpState {
    /// [`Io::Reserve`] is out; `outbox` holds bytes read before routing.
    /// `opened`: when the connection was accepted (its maximum duration
    /// counts from there).
    Reserving {
        route: RouteId,
        outbox: Vec<u8>,
        opened: Instant,
    },
    Open {
        route: RouteId,
        cluster: ClusterId,
        tried: Vec<usize>,
        conn: Connection,
    },
    /// Ended before any upstream was tried.
    Refused {
        reason: CloseReason,
        opened: Instant,
    },
}

impl TcpSession {
    /// A session for `route`, opened at `opened`; `outbox` goes upstream
    /// first. Asks for the route's reservation.
    pub fn open(route: RouteId, opened: Instant, outbox: Vec<u8>, out: &mut Vec<Io>) -> TcpSession {
        out.push(Io::Reserve(route));
        TcpSession {
            state: TcpState::Reserving {
                route,
                outbox,
                opened,
            },
        }
    }

    /// A session that ends at once, with `reason`.
    pub fn refused(reason: CloseReason, opened: Instant, out: &mut Vec<Io>) -> TcpSession {
        out.push(Io::Finish(Close::empty(reason)));
        TcpSession {
            state: TcpState::Refused { reason, opened },
        }
    }

    pub fn conn(&self) -> Option<&Connection> {
        match &self.state {
            TcpState::Open { conn, .. } => Some(conn),
            TcpState::Reserving { .. } | TcpState::Refused { .. } => None,
        }
    }

    pub fn conn_mut(&mut self) -> Option<&mut Connection> {
        match &mut self.state {
            TcpState::Open { conn, .. } => Some(conn),
            TcpState::Reserving { .. } | TcpState::Refused { .. } => None,
        }
    }

    pub fn on_reserved(
        &mut self,
        reserved: Result<Reservation, CloseReason>,
        now: Instant,
        out: &mut Vec<Io>,
    ) {
        let TcpState::Reserving {
            route,
            outbox,
            opened,
        } = &mut self.state
        else {
            return;
        };
        self.state = match reserved {
            Ok(r) => {
                let outbox = std::mem::take(outbox);
                TcpState::Open {
                    route: *route,
                    cluster: r.cluster,
                    tried: Vec::new(),
                    conn: Connection::open(r.limits, *opened, now, outbox, out),
                }
            }
            Err(reason) => {
                out.push(Io::Finish(Close::empty(reason)));
                TcpState::Refused {
                    reason,
                    opened: *opened,
                }
            }
        };
    }

    pub fn on_completion(&mut self, c: Completion<'_>, now: Instant, out: &mut Vec<Io>) {
        match &mut self.state {
            TcpState::Open { conn, .. } => conn.on_completion(c, now, out),
            TcpState::Reserving { .. } | TcpState::Refused { .. } => {
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
            TcpState::Reserving { opened, .. } => {
                out.push(Io::Finish(Close::empty(CloseReason::Drained)));
                self.state = TcpState::Refused {
                    reason: CloseReason::Drained,
                    opened: *opened,
                };
            }
            TcpState::Refused { .. } => {}
        }
    }

    pub fn close(&self) -> Option<Close> {
        match &self.state {
            TcpState::Open { conn, .. } => conn.close(),
            TcpState::Reserving { .. } => None,
            TcpState::Refused { reason, .. } => Some(Close::empty(*reason)),
        }
    }

    /// When the connection was accepted.
    pub fn opened(&self) -> Instant {
        match &self.state {
            TcpState::Reserving { opened, .. } | TcpState::Refused { opened, .. } => *opened,
            TcpState::Open { conn, .. } => conn.opened(),
        }
    }

    pub fn reserved(&self) -> Option<(RouteId, ClusterId)> {
        match &self.state {
            TcpState::Open { route, cluster, .. } => Some((*route, *cluster)),
            TcpState::Reserving { .. } | TcpState::Refused { .. } => None,
        }
    }

    pub fn tried(&self) -> &[usize] {
        match &self.state {
            TcpState::Open { tried, .. } => tried,
            TcpState::Reserving { .. } | TcpState::Refused { .. } => &[],
        }
    }

    pub fn connecting_to(&mut self, endpoint: usize) {
        if let TcpState::Open { tried, .. } = &mut self.state {
            tried.push(endpoint);
        }
    }
}
