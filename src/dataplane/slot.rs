//! One connection's slot in a worker's slab: its session (the protocol),
//! and what the worker keeps for it whatever the protocol: the sockets,
//! the memory the ring reads, the operations in flight, the pipes holding
//! its bytes, its meter and its deadline. Also the socket calls that never
//! block (shutdown, a non-blocking send of owned bytes, SO_LINGER,
//! SIOCOUTQ), done at once and reported as the completion they stand for,
//! and the close report when the slot is freed.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{SockRef, Socket};

use crate::accesslog::Record;
use crate::routing::table::ClusterId;

use super::context::Ctx;
use super::exec::{ConnectArgs, InFlight};
use super::forward;
use super::io::{Close, CloseReason, Completion, Io};
use super::meter::Meter;
use super::pipe::{self, OwnedPipe};
use super::plan::Plan;
use super::pool::Held;
use super::session::{ServerName, Session};
use super::token::{Dir, Op, Side};

/// Where a connection's upstream is.
pub(super) struct Upstream {
    pub(super) socket: Socket,
    pub(super) cluster: ClusterId,
    /// The endpoint's index in `plan.endpoints` (32 bits: a slot stays
    /// small).
    pub(super) endpoint: u32,
    /// HTTP: the connection's place under its cluster's `maxConnections`
    /// (it moves with the connection into the keep-alive pool; a TCP
    /// connection's is its session's reservation).
    pub(super) held: Option<Held>,
    /// HTTP: requests this connection carried before the current one.
    pub(super) requests: u32,
}

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

impl Upstream {
    /// The endpoint's index in `plan.endpoints[cluster]`.
    pub(super) fn endpoint(&self) -> usize {
        self.endpoint as usize
    }
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

    /// The address the client reached (a listener bound to 0.0.0.0 is
    /// reached on one of the host's addresses); the listener's, then the
    /// peer's, if the socket cannot say.
    pub(super) fn local_address(&self) -> SocketAddr {
        SockRef::from(&self.downstream)
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .or_else(|| {
                let listener = self.plan.table.listeners.get(self.listener);
                listener.map(|l| l.address)
            })
            .unwrap_or(self.peer)
    }

    /// A socket call `io` stands for, done now, reported to the session as
    /// the completion it stands for (where it has one).
    pub(super) fn socket_call(&mut self, io: Io, out: &mut Vec<Io>) {
        let at = Instant::now();
        match io {
            Io::SendOwned(dir) => {
                let res = self.send_owned(dir);
                self.session
                    .on_completion(Completion::done(Op::Send(dir), res), at, out);
            }
            Io::EnterSplice(dir) => {
                let ok = [Side::Downstream, Side::Upstream]
                    .iter()
                    .filter_map(|s| self.fd(*s))
                    .all(|fd| pipe::set_nonblocking(fd.as_raw_fd()).is_ok());
                if !ok {
                    self.session.on_no_pipe(dir, out);
                }
            }
            Io::SinkStalled(dir) => {
                if let (Dir::ToDownstream, Some(u)) = (dir, &self.upstream) {
                    let _ = u
                        .socket
                        .set_recv_buffer_size(forward::STALLED_UPSTREAM_RCVBUF);
                }
            }
            Io::Shutdown(dir) => {
                // shutdown(2) never blocks; IORING_OP_SHUTDOWN is forced to
                // io-wq by the kernel and would start an iou-wrk thread.
                let res = match self
                    .sock(dir.sink())
                    .map(|s| s.shutdown(std::net::Shutdown::Write))
                {
                    Some(Ok(())) => 0,
                    Some(Err(e)) => -e.raw_os_error().unwrap_or(libc::EIO),
                    None => -libc::ENOTCONN,
                };
                self.session
                    .on_completion(Completion::done(Op::Shutdown(dir), res), at, out);
            }
            Io::CheckSent(dir) => {
                let unsent = self.fd(dir.sink()).map_or(Ok(0), unsent_bytes);
                // Sent (or the socket is gone): the reset may follow.
                if !matches!(unsent, Ok(n) if n > 0) {
                    self.session.on_sent(dir, out);
                }
            }
            Io::Abort(side) => {
                if let Some(sock) = self.sock(side) {
                    let _ = sock.set_linger(Some(Duration::ZERO));
                }
            }
            _ => debug_assert!(false, "not a socket call: {io:?}"),
        }
    }

    /// Send what is left of the direction's outbox with a non-blocking
    /// send(2) (the bytes are copied into the socket buffer before it
    /// returns): the byte count, or a negated errno as a completion
    /// carries it.
    fn send_owned(&self, dir: Dir) -> i32 {
        let Some(bytes) = self.session.outbox(dir) else {
            return -libc::EINVAL;
        };
        let Some(sock) = self.sock(dir.sink()) else {
            return -libc::ENOTCONN;
        };
        match sock.send_with_flags(bytes, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) {
            Ok(n) => i32::try_from(n).unwrap_or(i32::MAX),
            Err(e) => -e.raw_os_error().unwrap_or(libc::EIO),
        }
    }

    /// Count a connection that ended and log it: Istio counters (by its
    /// flag), the access log, the debug line, and why an SNI was not
    /// routed (at most one line per second).
    pub(super) fn report_close(&mut self, ctx: &mut Ctx, close: Close) {
        let flag = close.reason.flag();
        let plan = &self.plan;
        let reserved = self.session.reserved();
        let cluster = reserved.map(|(_, c)| c);
        let endpoint = self.upstream.as_ref().map(|u| u.endpoint());
        self.meter
            .closed(&mut ctx.metrics, plan, (cluster, endpoint), close);
        let listener = plan.table.listeners.get(self.listener);
        let listener_name = listener.map_or("-", |l| l.name.as_str());
        let sni = self.session.server_name();
        if let (CloseReason::NoRoute, Some(name)) = (close.reason, sni) {
            if ctx.sni_errors.allow(Instant::now()) {
                sni_not_routed(ctx.id, listener_name, self.peer, name);
            }
        }
        let upstream_host = self
            .upstream
            .as_ref()
            .map(|u| plan.endpoints[u.cluster.0 as usize][u.endpoint()].address);
        let duration = self.session.opened().elapsed();
        if ctx.access_log.enabled() {
            ctx.access_log.log(&Record {
                start_time: self.meter.started(),
                duration,
                downstream_remote_address: self.peer,
                downstream_local_address: self.local_address(),
                requested_server_name: sni.and_then(ServerName::logged),
                upstream_cluster: cluster.map(|c| plan.table.cluster(c).name.as_str()),
                upstream_host,
                bytes_received: close.to_upstream,
                bytes_sent: close.to_downstream,
                response_flags: flag,
                generation: plan.table.generation,
            });
        }
        tracing::debug!(
            worker = ctx.id,
            downstream = %self.peer,
            listener = %listener_name,
            sni = %sni.map_or_else(|| "-".to_owned(), ToString::to_string),
            route = %reserved.map_or("-", |(r, _)| plan.table.route(r).name.as_str()),
            cluster = %cluster.map_or("-", |c| plan.table.cluster(c).name.as_str()),
            upstream = ?upstream_host,
            to_upstream = close.to_upstream,
            to_downstream = close.to_downstream,
            duration_ms = duration.as_millis() as u64,
            generation = plan.table.generation,
            flag,
            "connection closed"
        );
    }
}

/// Why a TLS passthrough connection closed `NR`.
fn sni_not_routed(worker: usize, listener: &str, peer: SocketAddr, name: &ServerName) {
    let flag = CloseReason::NoRoute.flag();
    if *name == ServerName::TooLarge {
        tracing::info!(worker, listener = %listener, downstream = %peer, flag, "ClientHello larger than 16 KiB (Envoy: client_hello_too_large): connection closed, not routed (at most one line per second)");
    } else {
        tracing::info!(worker, listener = %listener, downstream = %peer, sni = %name, flag, "no route for this SNI; connection closed (at most one line per second)");
    }
}

/// Bytes in a socket's send queue not yet acknowledged by the peer
/// (SIOCOUTQ): a reset (SO_LINGER 0) would discard them.
fn unsent_bytes(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut n: libc::c_int = 0;
    // SAFETY: ioctl(TIOCOUTQ, SIOCOUTQ for sockets) on a descriptor the
    // borrow keeps open writes one int into `n`.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCOUTQ, &mut n) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n.unsigned_abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every open connection holds one slot, idle ones included (README
    /// "Performance": memory per idle connection): growing it is a
    /// decision, not an accident. HTTP added 8 bytes (the upstream
    /// connection's place under `maxConnections` and its request count).
    #[test]
    fn a_slot_stays_small() {
        assert!(
            std::mem::size_of::<Slot>() <= 528,
            "{}",
            std::mem::size_of::<Slot>()
        );
        assert!(
            std::mem::size_of::<Session>() <= 344,
            "{}",
            std::mem::size_of::<Session>()
        );
    }
}
