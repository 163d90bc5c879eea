//! One connection's slot in a worker's slab: its session (the protocol),
//! and what the worker keeps for it whatever the protocol: the sockets,
//! the memory the ring reads, the operations in flight, the pipes holding
//! its bytes, its meter and its deadline.

use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Instant;

use socket2::SockRef;

use super::Plan;
use super::exec::InFlight;
use super::meter::Meter;
use super::pipe::OwnedPipe;
use super::session::Session;
use super::token::Side;
use super::upstream::{ConnectArgs, Upstream};

pub(super) struct Slot {
    pub(super) session: Session,
    pub(super) downstream: OwnedFd,
    pub(super) peer: SocketAddr,
    /// The listener's index in `plan.table.listeners`.
    pub(super) listener: usize,
    /// The plan the connection was accepted under (kept for its life).
    pub(super) plan: Arc<Plan>,
    pub(super) upstream: Option<Upstream>,
    pub(super) connect: Box<ConnectArgs>,
    pub(super) inflight: InFlight,
    /// Pipes holding bytes, per direction.
    pub(super) pipes: [Option<OwnedPipe>; 2],
    pub(super) meter: Meter,
    /// The instant this slot is scheduled at in the worker's timers.
    pub(super) deadline: Option<Instant>,
}

impl Slot {
    pub(super) fn new(
        session: Session,
        downstream: OwnedFd,
        peer: SocketAddr,
        listener: usize,
        plan: Arc<Plan>,
        meter: Meter,
    ) -> Slot {
        Slot {
            session,
            downstream,
            peer,
            listener,
            plan,
            upstream: None,
            connect: Box::default(),
            inflight: InFlight::default(),
            pipes: [None, None],
            meter,
            deadline: None,
        }
    }

    /// The socket of `side` (none before the upstream's is opened).
    pub(super) fn fd(&self, side: Side) -> Option<BorrowedFd<'_>> {
        match side {
            Side::Downstream => Some(self.downstream.as_fd()),
            Side::Upstream => self.upstream.as_ref().map(|u| u.socket.as_fd()),
        }
    }

    pub(super) fn sock(&self, side: Side) -> Option<SockRef<'_>> {
        match side {
            Side::Downstream => Some(SockRef::from(&self.downstream)),
            Side::Upstream => self.upstream.as_ref().map(|u| SockRef::from(&u.socket)),
        }
    }
}
