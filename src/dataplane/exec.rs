//! The executor: performs what a session asks ([`Io`]) for the slot it
//! belongs to. This is the only file that turns an `Io` into a ring
//! operation (through [`Submit`], which `Ring` implements and the tests
//! record), and it owns each slot's in-flight count, which decides when a
//! slot's memory may be freed. Socket calls that never block (splice,
//! shutdown, a non-blocking send of owned bytes, SIOCOUTQ) run here at
//! once and report back as the completion they stand for.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use super::bufring::BufRing;
use super::forward;
use super::io::{Completion, Io};
use super::pipe;
use super::ring::{RecvMode, Ring};
use super::slab::Key;
use super::slot::Slot;
use super::token::{Dir, Op, Side, Token};
use super::upstream::{ConnectArgs, Upstream};
use super::worker::Worker;

/// The ring operations the data plane submits for connections.
pub(super) trait Submit {
    /// Receive into the provided-buffer ring, at most `limit` bytes
    /// (`mode`: multishot ended at the limit, or one buffer).
    fn recv(&mut self, fd: BorrowedFd<'_>, mode: RecvMode, limit: u32, token: u64);
    /// Send `len` bytes of provided buffer `bid` from `offset`.
    fn send(&mut self, fd: BorrowedFd<'_>, bid: u16, offset: u32, len: u32, token: u64);
    /// One-shot POLL_ADD for `events`.
    fn poll(&mut self, fd: BorrowedFd<'_>, events: i16, token: u64);
    /// CONNECT to `args.address`, linked to a timeout of `args.timeout`.
    fn connect(&mut self, fd: BorrowedFd<'_>, args: &ConnectArgs, token: u64, timeout: u64);
    /// Cancel the op submitted with `target`.
    fn cancel(&mut self, target: u64, token: u64);
    /// Cancel every op on `fd`.
    fn cancel_fd(&mut self, fd: BorrowedFd<'_>, token: u64);
}

/// The worker's ring with the buffer ring its sends read.
pub(super) struct Uring<'a> {
    pub(super) ring: &'a mut Ring,
    pub(super) bufs: &'a BufRing,
}

impl Submit for Uring<'_> {
    fn recv(&mut self, fd: BorrowedFd<'_>, mode: RecvMode, limit: u32, token: u64) {
        self.ring.recv(fd, mode, limit, token);
    }
    fn send(&mut self, fd: BorrowedFd<'_>, bid: u16, offset: u32, len: u32, token: u64) {
        self.ring.send(fd, self.bufs, bid, offset, len, token);
    }
    fn poll(&mut self, fd: BorrowedFd<'_>, events: i16, token: u64) {
        self.ring.poll(fd, events, token);
    }
    fn connect(&mut self, fd: BorrowedFd<'_>, args: &ConnectArgs, token: u64, timeout: u64) {
        self.ring
            .connect(fd, &args.address, &args.timeout, token, timeout);
    }
    fn cancel(&mut self, target: u64, token: u64) {
        self.ring.cancel(target, token);
    }
    fn cancel_fd(&mut self, fd: BorrowedFd<'_>, token: u64) {
        self.ring.cancel_fd(fd, token);
    }
}

/// Operations of one slot submitted and not finally completed (a
/// multishot op counts once, until its last completion). The slot, and the
/// memory the kernel reads for it, is freed only at zero.
#[derive(Debug, Default)]
pub(super) struct InFlight(u32);

impl InFlight {
    fn submitted(&mut self, n: u32) {
        self.0 += n;
    }

    /// A final completion (one without IORING_CQE_F_MORE) arrived.
    pub(super) fn completed(&mut self) {
        // An undercount would free memory the kernel still reads.
        debug_assert!(self.0 > 0, "a completion with nothing in flight");
        self.0 = self.0.saturating_sub(1);
    }

    pub(super) fn is_idle(&self) -> bool {
        self.0 == 0
    }
}

/// How the copy path receives.
#[derive(Debug, Clone, Copy)]
pub(super) struct RecvConfig {
    pub(super) mode: RecvMode,
    pub(super) buffer_size: u32,
}

/// A slot's sockets by side, borrowed apart from the rest of the slot.
fn sockets<'a>(
    downstream: &'a OwnedFd,
    upstream: Option<&'a Upstream>,
) -> impl Fn(Side) -> Option<BorrowedFd<'a>> {
    move |side| match side {
        Side::Downstream => Some(downstream.as_fd()),
        Side::Upstream => upstream.map(|u| u.socket.as_fd()),
    }
}

fn token(key: Key, op: Op) -> u64 {
    Token::new(key.index, key.generation, op).user_data()
}

/// Submit the ring operation `io` stands for, for slot `key` with sockets
/// `fd` (by side); false when `io` is not a ring operation. An operation on
/// a socket the slot does not have (yet) is not submitted.
pub(super) fn submit_io<'a>(
    ring: &mut impl Submit,
    fd: impl Fn(Side) -> Option<BorrowedFd<'a>>,
    inflight: &mut InFlight,
    key: Key,
    io: Io,
    recv: RecvConfig,
) -> bool {
    match io {
        Io::Recv { dir, buffers } => {
            if let Some(fd) = fd(dir.source()) {
                let limit = buffers.saturating_mul(recv.buffer_size);
                ring.recv(fd, recv.mode, limit, token(key, Op::Recv(dir)));
                inflight.submitted(1);
            }
        }
        Io::RecvOnce(dir) => {
            if let Some(fd) = fd(dir.source()) {
                // One buffer per op: nothing is received past it until the
                // session asks again.
                ring.recv(fd, RecvMode::Single, 0, token(key, Op::Recv(dir)));
                inflight.submitted(1);
            }
        }
        Io::CancelRecv(dir) => {
            ring.cancel(token(key, Op::Recv(dir)), token(key, Op::CancelRecv(dir)));
            inflight.submitted(1);
        }
        Io::Send {
            dir,
            bid,
            offset,
            len,
        } => {
            if let Some(fd) = fd(dir.sink()) {
                ring.send(fd, bid, offset, len, token(key, Op::Send(dir)));
                inflight.submitted(1);
            }
        }
        Io::PollIn(dir) => {
            if let Some(fd) = fd(dir.source()) {
                ring.poll(fd, libc::POLLIN, token(key, Op::Readable(dir)));
                inflight.submitted(1);
            }
        }
        Io::PollOut(dir) => {
            if let Some(fd) = fd(dir.sink()) {
                ring.poll(fd, libc::POLLOUT, token(key, Op::Writable(dir)));
                inflight.submitted(1);
            }
        }
        Io::Reserve(_)
        | Io::Connect
        | Io::Connected
        | Io::SendOwned(_)
        | Io::GiveBack(_)
        | Io::WaitBuffers(_)
        | Io::EnterSplice(_)
        | Io::SinkStalled(_)
        | Io::Pump { .. }
        | Io::Shutdown(_)
        | Io::CheckSent(_)
        | Io::Abort(_)
        | Io::Finish(_) => return false,
    }
    true
}

/// Submit the CONNECT of slot `key` on `fd` (and its linked timeout).
pub(super) fn submit_connect(
    ring: &mut impl Submit,
    fd: BorrowedFd<'_>,
    args: &ConnectArgs,
    key: Key,
    inflight: &mut InFlight,
) {
    ring.connect(
        fd,
        args,
        token(key, Op::Connect),
        token(key, Op::ConnectTimeout),
    );
    inflight.submitted(2);
}

/// Cancel everything slot `key` has in flight on its sockets.
fn cancel_all<'a>(
    ring: &mut impl Submit,
    fd: impl Fn(Side) -> Option<BorrowedFd<'a>>,
    inflight: &mut InFlight,
    key: Key,
) {
    if inflight.is_idle() {
        return;
    }
    for side in [Side::Downstream, Side::Upstream] {
        if let Some(fd) = fd(side) {
            ring.cancel_fd(fd, token(key, Op::Cancel(side)));
            inflight.submitted(1);
        }
    }
}

impl Worker {
    /// Perform the I/O the session of `key` asked for (in `scratch`), and
    /// what follows from it, then count its bytes, schedule its deadline
    /// and free the slot if it is done.
    pub(super) fn perform(&mut self, key: Key) {
        self.actions.extend(self.scratch.drain(..));
        while let Some(io) = self.actions.pop_front() {
            self.act(key, io);
            self.actions.extend(self.scratch.drain(..));
        }
        if let Some(slot) = self.slots.get_mut(key) {
            let moved = slot.session.moved();
            slot.meter.advance(moved);
        }
        self.reschedule(key);
        self.release_if_done(key);
    }

    fn act(&mut self, key: Key, io: Io) {
        let recv = RecvConfig {
            mode: self.recv_mode,
            buffer_size: self.shared.settings.buffer_size,
        };
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        let mut uring = Uring {
            ring: &mut self.ring,
            bufs: &self.bufs,
        };
        let fds = sockets(&slot.downstream, slot.upstream.as_ref());
        if submit_io(&mut uring, fds, &mut slot.inflight, key, io, recv) {
            return;
        }
        match io {
            Io::Reserve(route) => self.reserve_for(key, route),
            Io::Connect => self.connect(key),
            Io::Connected => self.connected(key),
            Io::GiveBack(bid) => self.bufs.give_back(bid),
            Io::WaitBuffers(dir) => self.starved.push_back((key, dir)),
            Io::Pump {
                dir,
                in_pipe,
                read,
                max,
            } => self.pump(key, dir, in_pipe, read, max),
            Io::Finish(_) => self.finish(key),
            Io::SendOwned(_)
            | Io::EnterSplice(_)
            | Io::SinkStalled(_)
            | Io::Shutdown(_)
            | Io::CheckSent(_)
            | Io::Abort(_) => now(slot, io, &mut self.scratch),
            Io::Recv { .. }
            | Io::RecvOnce(_)
            | Io::CancelRecv(_)
            | Io::Send { .. }
            | Io::PollIn(_)
            | Io::PollOut(_) => {}
        }
    }

    /// Splice the direction's bytes now, through its pipe or a pooled one.
    fn pump(&mut self, key: Key, dir: Dir, in_pipe: u32, read: bool, max: u64) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        let (Some(source), Some(sink)) = (slot.fd(dir.source()), slot.fd(dir.sink())) else {
            return;
        };
        let (source, sink) = (source.as_raw_fd(), sink.as_raw_fd());
        let Some(pipe) = slot.pipes[dir.index()].take().or_else(|| self.pipes.take()) else {
            slot.session.on_no_pipe(dir, &mut self.scratch);
            return;
        };
        let result = forward::pump(&pipe, source, sink, in_pipe, read, max);
        if result.in_pipe == 0 {
            self.pipes.give_back(pipe);
        } else {
            slot.pipes[dir.index()] = Some(pipe);
        }
        slot.session
            .on_pump(dir, result, Instant::now(), &mut self.scratch);
    }

    /// The session is over ([`Io::Finish`]): a last failed attempt counts
    /// against its endpoint, and what is in flight is cancelled. It is
    /// counted and logged when freed, once sends that complete after the
    /// cancel have been counted too.
    fn finish(&mut self, key: Key) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        let last_attempt = slot
            .session
            .close()
            .filter(|c| c.reason == super::io::CloseReason::ConnectFailed)
            .and(slot.upstream.as_ref())
            .map(|u| (u.cluster, u.endpoint));
        if let Some((cluster, endpoint)) = last_attempt {
            let plan = std::sync::Arc::clone(&slot.plan);
            self.connect_failed(&plan, cluster, endpoint, Instant::now());
        }
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        let mut uring = Uring {
            ring: &mut self.ring,
            bufs: &self.bufs,
        };
        let fds = sockets(&slot.downstream, slot.upstream.as_ref());
        cancel_all(&mut uring, fds, &mut slot.inflight, key);
    }
}

/// Socket calls that complete at once, reported to the session as the
/// completion they stand for (where they have one).
fn now(slot: &mut Slot, io: Io, out: &mut Vec<Io>) {
    let at = Instant::now();
    match io {
        Io::SendOwned(dir) => {
            let res = send_owned(slot, dir);
            slot.session
                .on_completion(Completion::done(Op::Send(dir), res), at, out);
        }
        Io::EnterSplice(dir) => {
            let ok = [Side::Downstream, Side::Upstream]
                .iter()
                .filter_map(|s| slot.fd(*s))
                .all(|fd| pipe::set_nonblocking(fd.as_raw_fd()).is_ok());
            if !ok {
                slot.session.on_no_pipe(dir, out);
            }
        }
        Io::SinkStalled(dir) => {
            if let (Dir::ToDownstream, Some(u)) = (dir, &slot.upstream) {
                let _ = u
                    .socket
                    .set_recv_buffer_size(forward::STALLED_UPSTREAM_RCVBUF);
            }
        }
        Io::Shutdown(dir) => {
            // shutdown(2) never blocks; IORING_OP_SHUTDOWN is forced to
            // io-wq by the kernel and would start an iou-wrk thread.
            let res = match slot
                .sock(dir.sink())
                .map(|s| s.shutdown(std::net::Shutdown::Write))
            {
                Some(Ok(())) => 0,
                Some(Err(e)) => -e.raw_os_error().unwrap_or(libc::EIO),
                None => -libc::ENOTCONN,
            };
            slot.session
                .on_completion(Completion::done(Op::Shutdown(dir), res), at, out);
        }
        Io::CheckSent(dir) => {
            let unsent = slot.fd(dir.sink()).map_or(Ok(0), unsent_bytes);
            // Sent (or the socket is gone): the reset may follow.
            if !matches!(unsent, Ok(n) if n > 0) {
                slot.session.on_sent(dir, out);
            }
        }
        Io::Abort(side) => {
            if let Some(sock) = slot.sock(side) {
                let _ = sock.set_linger(Some(Duration::ZERO));
            }
        }
        _ => debug_assert!(false, "not a socket call: {io:?}"),
    }
}

/// Send what is left of the direction's outbox with a non-blocking
/// send(2) (the bytes are copied into the socket buffer before it
/// returns): the byte count, or a negated errno as a completion carries it.
fn send_owned(slot: &Slot, dir: Dir) -> i32 {
    let Some(bytes) = slot.session.outbox(dir) else {
        return -libc::EINVAL;
    };
    let Some(sock) = slot.sock(dir.sink()) else {
        return -libc::ENOTCONN;
    };
    match sock.send_with_flags(bytes, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) {
        Ok(n) => i32::try_from(n).unwrap_or(i32::MAX),
        Err(e) => -e.raw_os_error().unwrap_or(libc::EIO),
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
    use std::os::unix::net::UnixStream;

    use super::*;
    use crate::dataplane::token::{Event, decode};

    /// What was submitted, by operation and descriptor.
    #[derive(Debug, PartialEq, Eq)]
    enum Sub {
        Recv(i32, RecvMode, u32, Event),
        Send(i32, u16, u32, u32, Event),
        Poll(i32, i16, Event),
        Cancel(Event, Event),
        CancelFd(i32, Event),
        Connect(i32, Event, Event),
    }

    #[derive(Default)]
    struct Recorder(Vec<Sub>);

    impl Submit for Recorder {
        fn recv(&mut self, fd: BorrowedFd<'_>, mode: RecvMode, limit: u32, token: u64) {
            self.0
                .push(Sub::Recv(fd.as_raw_fd(), mode, limit, decode(token)));
        }
        fn send(&mut self, fd: BorrowedFd<'_>, bid: u16, offset: u32, len: u32, token: u64) {
            self.0
                .push(Sub::Send(fd.as_raw_fd(), bid, offset, len, decode(token)));
        }
        fn poll(&mut self, fd: BorrowedFd<'_>, events: i16, token: u64) {
            self.0
                .push(Sub::Poll(fd.as_raw_fd(), events, decode(token)));
        }
        fn connect(&mut self, fd: BorrowedFd<'_>, _: &ConnectArgs, token: u64, timeout: u64) {
            self.0
                .push(Sub::Connect(fd.as_raw_fd(), decode(token), decode(timeout)));
        }
        fn cancel(&mut self, target: u64, token: u64) {
            self.0.push(Sub::Cancel(decode(target), decode(token)));
        }
        fn cancel_fd(&mut self, fd: BorrowedFd<'_>, token: u64) {
            self.0.push(Sub::CancelFd(fd.as_raw_fd(), decode(token)));
        }
    }

    const KEY: Key = Key {
        index: 3,
        generation: 9,
    };
    const RECV: RecvConfig = RecvConfig {
        mode: RecvMode::MultishotLimited,
        buffer_size: 65536,
    };

    fn ev(op: Op) -> Event {
        Event::Conn(Token::new(KEY.index, KEY.generation, op))
    }

    #[test]
    fn each_ring_io_is_one_submission_on_the_right_socket_and_counted() {
        let (down, up) = UnixStream::pair().expect("a socket pair");
        let (d, u) = (down.as_raw_fd(), up.as_raw_fd());
        let fds = |side| match side {
            Side::Downstream => Some(down.as_fd()),
            Side::Upstream => Some(up.as_fd()),
        };
        let mut ring = Recorder::default();
        let mut inflight = InFlight::default();
        let (to_up, to_down) = (Dir::ToUpstream, Dir::ToDownstream);
        let ios = [
            Io::Recv {
                dir: to_up,
                buffers: 2,
            },
            Io::RecvOnce(to_up),
            Io::Send {
                dir: to_up,
                bid: 7,
                offset: 10,
                len: 90,
            },
            Io::PollIn(to_down),
            Io::PollOut(to_down),
            Io::CancelRecv(to_down),
        ];
        for io in ios {
            assert!(
                submit_io(&mut ring, fds, &mut inflight, KEY, io, RECV),
                "{io:?}"
            );
        }
        assert_eq!(
            ring.0,
            vec![
                // A recv reads the source, limited to its buffers' bytes.
                Sub::Recv(d, RecvMode::MultishotLimited, 131072, ev(Op::Recv(to_up))),
                Sub::Recv(d, RecvMode::Single, 0, ev(Op::Recv(to_up))),
                // A send writes the sink.
                Sub::Send(u, 7, 10, 90, ev(Op::Send(to_up))),
                Sub::Poll(u, libc::POLLIN, ev(Op::Readable(to_down))),
                Sub::Poll(d, libc::POLLOUT, ev(Op::Writable(to_down))),
                Sub::Cancel(ev(Op::Recv(to_down)), ev(Op::CancelRecv(to_down))),
            ]
        );
        assert_eq!(inflight.0, 6);
        ring.0.clear();
        // A connect is two ops: the CONNECT and its linked timeout.
        submit_connect(
            &mut ring,
            up.as_fd(),
            &ConnectArgs::default(),
            KEY,
            &mut inflight,
        );
        assert_eq!(
            ring.0,
            vec![Sub::Connect(u, ev(Op::Connect), ev(Op::ConnectTimeout))]
        );
        assert_eq!(inflight.0, 8);
        ring.0.clear();
        cancel_all(&mut ring, fds, &mut inflight, KEY);
        assert_eq!(
            ring.0,
            vec![
                Sub::CancelFd(d, ev(Op::Cancel(Side::Downstream))),
                Sub::CancelFd(u, ev(Op::Cancel(Side::Upstream))),
            ]
        );
        assert_eq!(inflight.0, 10);
        for _ in 0..10 {
            inflight.completed();
        }
        assert!(inflight.is_idle());
    }

    #[test]
    fn nothing_is_submitted_on_a_socket_the_slot_does_not_have() {
        let (down, _up) = UnixStream::pair().expect("a socket pair");
        let fds = |side| match side {
            Side::Downstream => Some(down.as_fd()),
            Side::Upstream => None,
        };
        let mut ring = Recorder::default();
        let mut inflight = InFlight::default();
        let send = Io::Send {
            dir: Dir::ToUpstream,
            bid: 1,
            offset: 0,
            len: 1,
        };
        assert!(submit_io(&mut ring, fds, &mut inflight, KEY, send, RECV));
        assert!(ring.0.is_empty());
        assert!(inflight.is_idle(), "nothing counted that was not submitted");
        // An idle slot has nothing to cancel.
        cancel_all(&mut ring, fds, &mut inflight, KEY);
        assert!(ring.0.is_empty());
    }

    #[test]
    fn socket_calls_and_worker_steps_are_not_ring_operations() {
        let mut ring = Recorder::default();
        let mut inflight = InFlight::default();
        for io in [
            Io::Connect,
            Io::GiveBack(1),
            Io::Shutdown(Dir::ToUpstream),
            Io::SendOwned(Dir::ToUpstream),
            Io::Abort(Side::Upstream),
        ] {
            assert!(!submit_io(
                &mut ring,
                |_| None,
                &mut inflight,
                KEY,
                io,
                RECV
            ));
        }
        assert!(ring.0.is_empty() && inflight.is_idle());
    }
}
