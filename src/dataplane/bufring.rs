//! The worker's provided-buffer ring (IORING_REGISTER_PBUF_RING): the copy
//! path's multishot recvs take buffers from it, sends read them, and each is
//! given back once its send completed.

use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::IoUring;
use io_uring::types::BufRingEntry;

/// Buffer group id of the worker's only buffer ring.
pub const GROUP: u16 = 0;

pub struct BufRing {
    /// The ring of entries the kernel reads (page-aligned anonymous mapping).
    entries: *mut BufRingEntry,
    map_len: usize,
    count: u16,
    /// Our copy of the tail (the kernel reads it from the ring).
    tail: u16,
    /// The buffers themselves (anonymous mapping): written by the kernel,
    /// so only ever touched through raw pointers.
    memory: *mut u8,
    memory_len: usize,
    buf_size: u32,
    /// Buffers currently handed to the kernel or ready in the ring.
    available: u16,
}

impl BufRing {
    /// `count` buffers of `buf_size` bytes, registered with `ring`. The
    /// `BufRing` must outlive every op that may select from it, so the worker
    /// drops its ring first.
    pub fn register(ring: &IoUring, count: u16, buf_size: u32) -> io::Result<BufRing> {
        debug_assert!(count.is_power_of_two());
        let map_len = usize::from(count) * std::mem::size_of::<BufRingEntry>();
        let memory_len = usize::from(count) * buf_size as usize;
        let ptr = map(map_len)?;
        let memory = match map(memory_len) {
            Ok(m) => m,
            Err(e) => {
                // SAFETY: unmapping the mapping just made.
                unsafe { libc::munmap(ptr.cast(), map_len) };
                return Err(e);
            }
        };
        let mut this = BufRing {
            entries: ptr.cast(),
            map_len,
            count,
            tail: 0,
            memory,
            memory_len,
            buf_size,
            available: 0,
        };
        // SAFETY: the entries mapping is page-aligned, `count` entries long and
        // lives (with the buffers it points to) until `self` is dropped, which
        // the worker does only after the ring itself is gone.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(ptr as u64, count, GROUP, 0)?;
        }
        for bid in 0..count {
            this.push(bid);
        }
        this.publish();
        Ok(this)
    }

    fn push(&mut self, bid: u16) {
        let index = usize::from(self.tail & (self.count - 1));
        // SAFETY: index < count, inside the mapping; the kernel does not read
        // an entry beyond the published tail, so writing it races with nothing.
        let entry = unsafe { &mut *self.entries.add(index) };
        let offset = usize::from(bid) * self.buf_size as usize;
        entry.set_addr(self.memory as u64 + offset as u64);
        entry.set_len(self.buf_size);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        self.available += 1;
    }

    fn publish(&self) {
        // SAFETY: `entries` is the ring base; the tail field overlays the first
        // entry's reserved field, which the kernel reads atomically.
        let tail = unsafe { &*BufRingEntry::tail(self.entries).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }

    /// The kernel filled buffer `bid` (a recv completion named it).
    pub fn taken(&mut self) {
        self.available = self.available.saturating_sub(1);
    }

    /// Return buffer `bid` to the kernel.
    pub fn give_back(&mut self, bid: u16) {
        debug_assert!(bid < self.count);
        if bid < self.count {
            self.push(bid);
            self.publish();
        }
    }

    /// Buffers the kernel may select right now.
    pub fn available(&self) -> u16 {
        self.available
    }

    /// The address of byte `offset` of buffer `bid`: what a send reads.
    pub fn address(&self, bid: u16, offset: u32) -> *const u8 {
        debug_assert!(bid < self.count && offset < self.buf_size);
        let at = usize::from(bid) * self.buf_size as usize + offset as usize;
        self.memory.wrapping_add(at.min(self.memory_len))
    }
}

fn map(len: usize) -> io::Result<*mut u8> {
    // SAFETY: anonymous private mapping, no file; checked for MAP_FAILED below.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(ptr.cast())
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping made in `register`; the worker dropped
        // the ring before this, so the kernel no longer reads it.
        unsafe {
            libc::munmap(self.entries.cast(), self.map_len);
            libc::munmap(self.memory.cast(), self.memory_len);
        }
    }
}
