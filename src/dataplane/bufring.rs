//! The worker's provided-buffer ring (IORING_REGISTER_PBUF_RING): the copy
//! path's multishot recvs take buffers from it, sends read them, and each is
//! given back once its send completed.
//!
//! A buffer is the kernel's from the moment it is pushed into the ring
//! until a completion names it ([`BufRing::taken`]), then ours until
//! [`BufRing::give_back`]. A bitmap tracks which: a buffer given back twice
//! would be handed to two recvs at once, so a give-back of a buffer the
//! kernel owns is refused (and a debug build stops there), and the bytes of
//! a buffer are readable ([`BufRing::filled`]) only while it is ours.

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
    /// Buffers user space holds (bits set in `ours`).
    held: u16,
    /// One bit per buffer: set while user space holds it (a completion
    /// named it and it was not given back yet).
    ours: Vec<u64>,
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
            held: 0,
            ours: vec![0; usize::from(count).div_ceil(64)],
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
        // an entry beyond the published tail, so writing it races with
        // nothing. At most `count` buffers are in the ring at once (each bid
        // is pushed only while the bitmap says user space holds it), so the
        // entry being written is never one the kernel has yet to consume.
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

    fn is_ours(&self, bid: u16) -> bool {
        let (word, bit) = (usize::from(bid) / 64, u32::from(bid) % 64);
        self.ours.get(word).is_some_and(|w| w & (1 << bit) != 0)
    }

    fn set_ours(&mut self, bid: u16, ours: bool) {
        let (word, bit) = (usize::from(bid) / 64, u32::from(bid) % 64);
        if let Some(w) = self.ours.get_mut(word) {
            if ours {
                *w |= 1 << bit;
            } else {
                *w &= !(1 << bit);
            }
        }
    }

    /// The kernel filled buffer `bid` (a recv completion named it): it is
    /// ours until given back.
    pub fn taken(&mut self, bid: u16) {
        debug_assert!(
            bid < self.count && !self.is_ours(bid),
            "buffer {bid} taken twice"
        );
        self.held += u16::from(bid < self.count && !self.is_ours(bid));
        self.set_ours(bid, true);
        self.available = self.available.saturating_sub(1);
    }

    /// Return buffer `bid` to the kernel. A buffer the kernel already owns
    /// is not pushed again (it would be handed to two recvs).
    pub fn give_back(&mut self, bid: u16) {
        debug_assert!(self.is_ours(bid), "buffer {bid} given back twice");
        if bid < self.count && self.is_ours(bid) {
            self.set_ours(bid, false);
            self.held -= 1;
            self.push(bid);
            self.publish();
        }
    }

    /// The first `len` bytes of buffer `bid`, which a completion named and
    /// which is not given back yet (empty otherwise). The borrow ends
    /// before the buffer can go back: `give_back` takes `&mut self`.
    pub fn filled(&self, bid: u16, len: u32) -> &[u8] {
        if !self.is_ours(bid) {
            debug_assert!(false, "reading buffer {bid}, which the kernel owns");
            return &[];
        }
        let len = len.min(self.buf_size) as usize;
        let start = usize::from(bid) * self.buf_size as usize;
        // SAFETY: `bid < count` (it is ours), so `start + len` lies inside
        // the buffer mapping, which lives as long as `self`. The kernel
        // wrote these bytes before posting the completion that made the
        // buffer ours and writes it again only after `give_back` pushed it,
        // which the shared borrow of `self` rules out while the slice lives.
        unsafe { std::slice::from_raw_parts(self.memory.add(start), len) }
    }

    /// Buffers user space holds right now (taken and not given back).
    pub fn held(&self) -> u16 {
        self.held
    }

    /// Buffers the kernel may select right now.
    pub fn available(&self) -> u16 {
        self.available
    }

    /// The address of byte `offset` of buffer `bid`: what a send of `len`
    /// bytes reads (the buffer must be ours until that send completes).
    pub fn address(&self, bid: u16, offset: u32, len: u32) -> *const u8 {
        debug_assert!(
            self.is_ours(bid),
            "sending buffer {bid}, which the kernel owns"
        );
        debug_assert!(bid < self.count && offset < self.buf_size);
        debug_assert!(u64::from(offset) + u64::from(len) <= u64::from(self.buf_size));
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
