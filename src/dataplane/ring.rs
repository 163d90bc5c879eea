//! The worker's io_uring: the only caller of push and submit. Builds every
//! SQE the data plane uses, keeps a backlog when the SQ is full (linked
//! pairs stay together), and copies completions out for dispatch.

use std::collections::VecDeque;
use std::io::{self, Write as _};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use io_uring::squeue::{Entry, Flags};
use io_uring::types::{CancelBuilder, Fd, SubmitArgs, Timespec};
use io_uring::{IoUring, cqueue, opcode};

use super::bufring::{self, BufRing};

/// SQ entries per worker ring (the CQ is twice as large, and the kernel keeps
/// overflowed completions rather than dropping them).
pub const SQ_ENTRIES: u32 = 1024;

/// Bounded and unbounded io-wq workers allowed per ring: a safety net, since
/// nothing ringway submits should block in io-wq.
pub const IOWQ_MAX_WORKERS: [u32; 2] = [2, 2];

/// Why io_uring could not be set up, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(
        "io_uring is not permitted ({0}): the kernel.io_uring_disabled sysctl or a seccomp profile blocks it; \
         remedy: `sysctl -w kernel.io_uring_disabled=0`, or run the container with a seccomp profile that allows \
         io_uring_setup, io_uring_enter and io_uring_register"
    )]
    NotPermitted(io::Error),
    #[error(
        "io_uring is not available ({0}): the kernel lacks it or was built without it; remedy: run on Linux 6.1 or later with CONFIG_IO_URING=y"
    )]
    Unsupported(io::Error),
    #[error(
        "io_uring setup failed ({0}); remedy: check `ulimit -l` (locked memory) and the kernel version (6.1 or later)"
    )]
    Other(io::Error),
}

impl SetupError {
    fn classify(e: io::Error) -> SetupError {
        match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => SetupError::NotPermitted(e),
            Some(libc::ENOSYS) => SetupError::Unsupported(e),
            _ => SetupError::Other(e),
        }
    }
}

/// How the copy path receives (decided by [`Ring::probe_recv_limit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvMode {
    /// Multishot recv ended by the kernel after a byte limit.
    MultishotLimited,
    /// One recv (one buffer) per op.
    Single,
}

/// user_data of the startup probe's ops (never a connection token: the
/// reserved slab index).
const PROBE: u64 = u64::MAX;
const PROBE_CANCEL: u64 = u64::MAX - 1;

/// IORING_RECV_MULTISHOT (sqe->ioprio of IORING_OP_RECV).
const RECV_MULTISHOT: u16 = 1 << 1;

/// Byte offset of `optlen` in `struct io_uring_sqe` (the union with
/// `splice_fd_in` and `file_index`): the multishot recv's total limit.
const SQE_OPTLEN_OFFSET: usize = 44;
const SQE_SIZE: usize = 64;
const _: () = assert!(std::mem::size_of::<Entry>() == SQE_SIZE);

/// A multishot recv from the buffer ring that the kernel ends after `limit`
/// bytes. io-uring 0.7 has no setter for `optlen`, so it is written into
/// the SQE's bytes.
fn multishot_recv(fd: RawFd, limit: u32) -> Entry {
    let e = opcode::Recv::new(Fd(fd), std::ptr::null_mut(), 0)
        .ioprio(RECV_MULTISHOT)
        .buf_group(bufring::GROUP)
        .build()
        .flags(Flags::BUFFER_SELECT);
    let mut raw = sqe_bytes(e);
    raw[SQE_OPTLEN_OFFSET..SQE_OPTLEN_OFFSET + 4].copy_from_slice(&limit.to_ne_bytes());
    // SAFETY: `Entry` is `#[repr(transparent)]` over `io_uring_sqe`, a
    // 64-byte struct of integers and unions of integers (size asserted
    // above): every bit pattern is a valid value, so any 64 bytes are one.
    unsafe { std::mem::transmute::<[u8; SQE_SIZE], Entry>(raw) }
}

/// The 64 bytes of an SQE.
fn sqe_bytes(e: Entry) -> [u8; SQE_SIZE] {
    // SAFETY: reading an SQE as bytes needs every byte initialised: the
    // io-uring crate builds each entry from `mem::zeroed()` and then sets
    // fields, so padding and unused union bytes are zeros, never
    // uninitialised; the sizes match (asserted above).
    unsafe { std::mem::transmute::<Entry, [u8; SQE_SIZE]>(e) }
}

/// A completion copied out of the CQ.
#[derive(Debug, Clone, Copy)]
pub struct Cqe {
    pub user_data: u64,
    pub res: i32,
    pub flags: u32,
}

impl Cqe {
    pub fn more(&self) -> bool {
        cqueue::more(self.flags)
    }

    pub fn buffer(&self) -> Option<u16> {
        cqueue::buffer_select(self.flags)
    }
}

/// One SQE, or a pair linked with IOSQE_IO_LINK that must be pushed together.
#[derive(Debug)]
enum Pending {
    One(Entry),
    Linked(Entry, Entry),
}

pub struct Ring {
    ring: IoUring,
    backlog: VecDeque<Pending>,
}

impl Ring {
    /// A ring with SINGLE_ISSUER|DEFER_TASKRUN (on the calling thread, which
    /// must be the one that submits) and capped io-wq workers.
    pub fn new() -> Result<Ring, SetupError> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_cqsize(SQ_ENTRIES * 4)
            .build(SQ_ENTRIES)
            .or_else(|e| {
                // Kernels before 6.1 lack DEFER_TASKRUN: cooperative task
                // running is the next best thing.
                if e.raw_os_error() != Some(libc::EINVAL) {
                    return Err(e);
                }
                IoUring::builder()
                    .setup_coop_taskrun()
                    .setup_cqsize(SQ_ENTRIES * 4)
                    .build(SQ_ENTRIES)
            })
            .map_err(SetupError::classify)?;
        let mut max = IOWQ_MAX_WORKERS;
        ring.submitter()
            .register_iowq_max_workers(&mut max)
            .map_err(SetupError::classify)?;
        Ok(Ring {
            ring,
            backlog: VecDeque::new(),
        })
    }

    /// Check at startup, off the workers, that a ring can be set up at all.
    pub fn probe() -> Result<(), SetupError> {
        IoUring::new(8).map(drop).map_err(SetupError::classify)
    }

    pub fn buf_ring(&self, count: u16, size: u32) -> io::Result<BufRing> {
        BufRing::register(&self.ring, count, size)
    }

    fn push(&mut self, p: Pending) {
        if !self.backlog.is_empty() || !self.try_push(&p) {
            self.backlog.push_back(p);
        }
    }

    fn try_push(&mut self, p: &Pending) -> bool {
        let mut sq = self.ring.submission();
        let free = sq.capacity() - sq.len();
        // SAFETY: every entry built below points only at memory that outlives
        // the op: provided buffers (the BufRing outlives the ring), per-slot
        // boxed addresses and timespecs (a slot is freed only when no op of
        // it is in flight or queued here). Pointers read at submit time (sockaddr, timespec) stay valid
        // while the entry waits in the backlog for the same reason.
        unsafe {
            match p {
                Pending::One(e) if free >= 1 => sq.push(e).is_ok(),
                Pending::Linked(a, b) if free >= 2 => {
                    sq.push_multiple(&[a.clone(), b.clone()]).is_ok()
                }
                Pending::One(_) | Pending::Linked(..) => false,
            }
        }
    }

    fn flush_backlog(&mut self) {
        while let Some(p) = self.backlog.pop_front() {
            if !self.try_push(&p) {
                self.backlog.push_front(p);
                break;
            }
        }
    }

    /// Submit what is queued and wait for at least one completion or
    /// `timeout`. EINTR, EBUSY, EAGAIN and ETIME are not errors.
    pub fn submit_and_wait(&mut self, timeout: Duration) -> io::Result<()> {
        loop {
            self.flush_backlog();
            let ts = Timespec::from(timeout);
            let args = SubmitArgs::new().timespec(&ts);
            let want = usize::from(self.backlog.is_empty());
            match self.ring.submitter().submit_with_args(want, &args) {
                Ok(_) => {}
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR | libc::EBUSY | libc::EAGAIN | libc::ETIME) => {}
                    _ => return Err(e),
                },
            }
            if self.backlog.is_empty() || !self.ring.completion().is_empty() {
                return Ok(());
            }
        }
    }

    /// Move every ready completion into `out`.
    pub fn drain(&mut self, out: &mut Vec<Cqe>) {
        let mut cq = self.ring.completion();
        cq.sync();
        out.extend(cq.map(|c| Cqe {
            user_data: c.user_data(),
            res: c.result(),
            flags: c.flags(),
        }));
    }

    pub fn accept_multi(&mut self, listener: BorrowedFd<'_>, token: u64) {
        let e = opcode::AcceptMulti::new(Fd(listener.as_raw_fd()))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(token);
        self.push(Pending::One(e));
    }

    /// One single-shot accept (near the connection cap, where each accept
    /// may take only one connection).
    pub fn accept_once(&mut self, listener: BorrowedFd<'_>, token: u64) {
        let e = opcode::Accept::new(
            Fd(listener.as_raw_fd()),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
        .flags(libc::SOCK_CLOEXEC)
        .build()
        .user_data(token);
        self.push(Pending::One(e));
    }

    /// Receive into the provided-buffer ring, taking at most `limit` bytes:
    /// a multishot recv that the kernel ends once `limit` bytes arrived
    /// (IORING_RECV_MSHOT_LIM, Linux 6.17+) when `mode` allows, else one
    /// buffer's worth per op. Without the limit a multishot recv keeps
    /// filling buffers (up to 32 per wake-up, then again) while the sink is
    /// stuck: backpressure would be lost.
    pub fn recv(&mut self, fd: BorrowedFd<'_>, mode: RecvMode, limit: u32, token: u64) {
        let fd = fd.as_raw_fd();
        let e = match mode {
            RecvMode::MultishotLimited => multishot_recv(fd, limit).user_data(token),
            RecvMode::Single => opcode::Recv::new(Fd(fd), std::ptr::null_mut(), 0)
                .buf_group(bufring::GROUP)
                .build()
                .flags(Flags::BUFFER_SELECT)
                .user_data(token),
        };
        self.push(Pending::One(e));
    }

    /// Find out whether this kernel ends a multishot recv at a byte limit:
    /// on a socket pair holding 8 bytes, a recv limited to 4 must complete
    /// with 4 bytes and without IORING_CQE_F_MORE.
    pub fn probe_recv_limit(&mut self, bufs: &mut BufRing) -> io::Result<RecvMode> {
        let (a, b) = std::os::unix::net::UnixStream::pair()?;
        (&a).write_all(&[0u8; 8])?;
        self.push(Pending::One(
            multishot_recv(b.as_raw_fd(), 4).user_data(PROBE),
        ));
        let mut cqes = Vec::new();
        let mut mode = None;
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        loop {
            self.submit_and_wait(Duration::from_millis(100))?;
            self.drain(&mut cqes);
            let mut ended = false;
            for c in cqes.drain(..) {
                if let Some(bid) = c.buffer() {
                    bufs.taken(bid);
                    bufs.give_back(bid);
                }
                if c.user_data != PROBE {
                    continue;
                }
                if mode.is_none() {
                    let limited = c.res > 0 && !c.more();
                    mode = Some(if limited {
                        RecvMode::MultishotLimited
                    } else {
                        RecvMode::Single
                    });
                    if c.more() {
                        // The limit was ignored: stop the recv.
                        self.cancel(PROBE, PROBE_CANCEL);
                    }
                }
                ended |= !c.more();
            }
            if ended || std::time::Instant::now() >= deadline {
                break;
            }
        }
        drop((a, b));
        Ok(mode.unwrap_or(RecvMode::Single))
    }

    /// Send `len` bytes of provided buffer `bid` from `offset`.
    ///
    /// # Safety
    ///
    /// The kernel reads the buffer until the send completes: `bid` must be
    /// a buffer user space holds (a completion named it) and must not be
    /// given back before this send's completion arrives.
    pub unsafe fn send(
        &mut self,
        fd: BorrowedFd<'_>,
        bufs: &BufRing,
        bid: u16,
        offset: u32,
        len: u32,
        token: u64,
    ) {
        let e = opcode::Send::new(Fd(fd.as_raw_fd()), bufs.address(bid, offset, len), len)
            // MSG_DONTWAIT: a full socket completes with EAGAIN (the worker
            // then polls it) instead of being punted to an io-wq thread that
            // blocks until the peer reads.
            .flags(libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
            .build()
            .user_data(token);
        self.push(Pending::One(e));
    }

    /// CONNECT linked to a LINK_TIMEOUT.
    ///
    /// # Safety
    ///
    /// The kernel reads `addr` and `timeout` when the pair is submitted,
    /// which may be at a later `submit_and_wait` (a full SQ keeps them in
    /// the backlog): both must stay at their address until the CONNECT and
    /// its timeout have completed.
    pub unsafe fn connect(
        &mut self,
        fd: BorrowedFd<'_>,
        addr: &socket2::SockAddr,
        timeout: &Timespec,
        token: u64,
        timeout_token: u64,
    ) {
        let connect = opcode::Connect::new(Fd(fd.as_raw_fd()), addr.as_ptr().cast(), addr.len())
            .build()
            .flags(Flags::IO_LINK)
            .user_data(token);
        let timer = opcode::LinkTimeout::new(timeout)
            .build()
            .user_data(timeout_token);
        self.push(Pending::Linked(connect, timer));
    }

    /// One-shot POLL_ADD for `events` (POLLIN or POLLOUT).
    pub fn poll(&mut self, fd: BorrowedFd<'_>, events: i16, token: u64) {
        let e = opcode::PollAdd::new(Fd(fd.as_raw_fd()), events as u16 as u32)
            .build()
            .user_data(token);
        self.push(Pending::One(e));
    }

    /// Cancel every op on `fd`.
    pub fn cancel_fd(&mut self, fd: BorrowedFd<'_>, token: u64) {
        let e = opcode::AsyncCancel2::new(CancelBuilder::fd(Fd(fd.as_raw_fd())).all())
            .build()
            .user_data(token);
        self.push(Pending::One(e));
    }

    /// Cancel the op submitted with `target`.
    pub fn cancel(&mut self, target: u64, token: u64) {
        let e = opcode::AsyncCancel::new(target).build().user_data(token);
        self.push(Pending::One(e));
    }

    /// Cancel every op submitted with `target`.
    pub fn cancel_all(&mut self, target: u64, token: u64) {
        let e = opcode::AsyncCancel2::new(CancelBuilder::user_data(target).all())
            .build()
            .user_data(token);
        self.push(Pending::One(e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recv_limit_is_written_where_the_kernel_reads_optlen() {
        // optlen shares its 4 bytes with splice_fd_in in `io_uring_sqe`:
        // the crate's own Splice builder writes fd_in there (the SQE's fd
        // is fd_out), which pins the offset the limit patch uses to the
        // crate's layout.
        let splice = opcode::Splice::new(Fd(0x1234_5678), -1, Fd(1), -1, 0).build();
        let raw = sqe_bytes(splice);
        assert_eq!(
            raw[SQE_OPTLEN_OFFSET..SQE_OPTLEN_OFFSET + 4],
            0x1234_5678i32.to_ne_bytes()
        );
        // The patch writes the limit there and nothing else changes.
        let plain = sqe_bytes(multishot_recv(7, 0));
        let limited = sqe_bytes(multishot_recv(7, 0xA1B2_C3D4));
        assert_eq!(
            limited[SQE_OPTLEN_OFFSET..SQE_OPTLEN_OFFSET + 4],
            0xA1B2_C3D4u32.to_ne_bytes()
        );
        for (i, (a, b)) in plain.iter().zip(limited.iter()).enumerate() {
            if !(SQE_OPTLEN_OFFSET..SQE_OPTLEN_OFFSET + 4).contains(&i) {
                assert_eq!(a, b, "byte {i} changed");
            }
        }
        assert_eq!(limited[0], opcode::Recv::CODE, "still a recv");
    }
}
