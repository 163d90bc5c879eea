//! The only file that turns an [`Io`] into a ring operation (through
//! [`Submit`], which the worker's ring implements and the tests record),
//! and the owner of each slot's in-flight count, which decides when a
//! slot's memory (and the [`ConnectArgs`] a CONNECT reads) may be freed.
//! Its one `unsafe` is where those two meet: the ring calls whose memory
//! the in-flight count keeps alive.
#![deny(unsafe_code)]

use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use io_uring::types::Timespec;
use socket2::{SockAddr, Socket};

use super::bufring::BufRing;
use super::io::Io;
use super::ring::{RecvMode, Ring};
use super::slab::Key;
use super::token::{Op, Side, Token};

/// Memory the kernel reads when a CONNECT is submitted (stable address:
/// boxed in the slot, which is freed only with nothing in flight).
pub(super) struct ConnectArgs {
    pub(super) address: SockAddr,
    pub(super) timeout: Timespec,
}

impl Default for ConnectArgs {
    fn default() -> Self {
        ConnectArgs {
            address: SockAddr::from(SocketAddr::from(([0, 0, 0, 0], 0))),
            timeout: Timespec::new(),
        }
    }
}

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

#[allow(unsafe_code)]
impl Submit for Uring<'_> {
    fn recv(&mut self, fd: BorrowedFd<'_>, mode: RecvMode, limit: u32, token: u64) {
        self.ring.recv(fd, mode, limit, token);
    }
    fn send(&mut self, fd: BorrowedFd<'_>, bid: u16, offset: u32, len: u32, token: u64) {
        // SAFETY: a half sends only buffers it holds (a recv completion
        // named them) and gives one back only once the send's completion
        // arrived (`half.rs`; the Finished phase of `conn.rs` waits for it);
        // the slot, and so the half, is freed only with nothing in flight.
        unsafe { self.ring.send(fd, self.bufs, bid, offset, len, token) };
    }
    fn poll(&mut self, fd: BorrowedFd<'_>, events: i16, token: u64) {
        self.ring.poll(fd, events, token);
    }
    fn connect(&mut self, fd: BorrowedFd<'_>, args: &ConnectArgs, token: u64, timeout: u64) {
        // SAFETY: `args` is boxed in the slot (a stable address) and the
        // slot is freed only once its in-flight count, which
        // `submit_connect` raises by two for this pair, is back to zero.
        unsafe {
            self.ring
                .connect(fd, &args.address, &args.timeout, token, timeout);
        }
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
pub(super) fn sockets<'a>(
    downstream: &'a OwnedFd,
    upstream: Option<&'a Socket>,
) -> impl Fn(Side) -> Option<BorrowedFd<'a>> {
    move |side| match side {
        Side::Downstream => Some(downstream.as_fd()),
        Side::Upstream => upstream.map(AsFd::as_fd),
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
        | Io::Finish(_)
        | Io::Route
        | Io::Checkout { .. }
        | Io::Release(_)
        | Io::Leftover { .. }
        | Io::Report
        | Io::Reject { .. } => return false,
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
pub(super) fn cancel_all<'a>(
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

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    use super::*;
    use crate::dataplane::token::{Dir, Event, decode};

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
