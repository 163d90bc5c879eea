//! Pipes for the splice path: `OwnedPipe` (both ends closed on drop) and the
//! per-worker pool that lends them only while bytes are in flight.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A non-blocking pipe, grown with `F_SETPIPE_SZ` where allowed.
#[derive(Debug)]
pub struct OwnedPipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

impl OwnedPipe {
    /// A pipe of `size` bytes, or of what `fs.pipe-max-size` and the
    /// per-user pipe budget allow.
    pub fn new(size: usize) -> io::Result<OwnedPipe> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let want = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
        // SAFETY: fcntl on an open descriptor; F_SETPIPE_SZ takes an int.
        let grown = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, want) };
        let capacity = if grown > 0 {
            grown as usize
        } else {
            // SAFETY: fcntl on an open descriptor; F_GETPIPE_SZ takes no argument.
            let current = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) };
            usize::try_from(current).unwrap_or(4096).max(4096)
        };
        Ok(OwnedPipe {
            read,
            write,
            capacity,
        })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// `splice(2)` up to `max` bytes from the socket `source` into the pipe.
    pub fn fill_from(&self, source: RawFd, max: usize) -> io::Result<usize> {
        splice(source, self.write.as_raw_fd(), max)
    }

    /// `splice(2)` up to `len` bytes from the pipe into the socket `sink`.
    pub fn drain_to(&self, sink: RawFd, len: usize) -> io::Result<usize> {
        splice(self.read.as_raw_fd(), sink, len)
    }
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
    loop {
        // SAFETY: plain splice(2) between two descriptors the caller keeps open;
        // null offsets (neither end is seekable).
        let n = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                flags,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Set `O_NONBLOCK` on a socket (the splice path needs it: `SPLICE_F_NONBLOCK`
/// only governs the pipe side).
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl F_GETFL/F_SETFL on a descriptor the caller keeps open.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::O_NONBLOCK != 0 {
        return Ok(());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Pipes a worker lends to splicing halves.
#[derive(Debug)]
pub struct PipePool {
    free: Vec<OwnedPipe>,
    size: usize,
    keep: usize,
    /// Pipes this pool may own at once, lent or kept (the descriptor budget).
    limit: usize,
    /// Pipes lent out right now.
    lent: usize,
    /// Pipes taken since the last [`trim`](PipePool::trim).
    taken: u64,
}

impl PipePool {
    pub fn new(size: usize, keep: usize, limit: usize) -> PipePool {
        PipePool {
            free: Vec::with_capacity(keep.min(limit)),
            size,
            keep,
            limit,
            lent: 0,
            taken: 0,
        }
    }

    /// A pipe, from the pool or new; `None` when `limit` pipes are lent or
    /// the system refuses one (descriptor or pipe budget exhausted): the
    /// half keeps copying.
    pub fn take(&mut self) -> Option<OwnedPipe> {
        let pipe = match self.free.pop() {
            Some(p) => p,
            None if self.lent >= self.limit => return None,
            None => OwnedPipe::new(self.size).ok()?,
        };
        self.lent += 1;
        self.taken += 1;
        Some(pipe)
    }

    /// Give back an empty pipe (a pipe that still holds bytes must be dropped
    /// instead: those bytes belong to another connection).
    pub fn give_back(&mut self, pipe: OwnedPipe) {
        self.lent = self.lent.saturating_sub(1);
        if self.free.len() < self.keep {
            self.free.push(pipe);
        }
    }

    /// Forget a pipe that was dropped while lent.
    pub fn dropped(&mut self) {
        self.lent = self.lent.saturating_sub(1);
    }

    pub fn lent(&self) -> usize {
        self.lent
    }

    /// Called periodically: when no pipe was taken since the last call,
    /// close the pooled ones (their capacity counts against the per-user
    /// pipe budget even when empty).
    pub fn trim(&mut self) {
        if self.taken == 0 {
            self.free.clear();
        }
        self.taken = 0;
    }
}
