//! How bytes move, and the measured choice between the two ways
//! (design-notes/forwarding.md, SPEC §3).
//!
//! - Copy path, where every half starts: multishot recv into the worker's
//!   provided-buffer ring, ended by the kernel after the half's budget of
//!   bytes (backpressure), then one send in flight. No threads, no pipes.
//! - Splice path, for bulk halves: the ring only reports readiness (POLL_ADD)
//!   and the worker calls `splice(2)` itself with
//!   `SPLICE_F_MOVE|SPLICE_F_NONBLOCK` on `O_NONBLOCK` sockets, through a
//!   pipe from the worker's pool held only while it holds bytes.
//!
//! IORING_OP_SPLICE is never submitted on a socket: the kernel forces it to
//! io-wq, one blocked kernel thread per idle connection.

use std::io;
use std::os::fd::RawFd;

use super::io::{Pump, SinkState, SourceState};
use super::pipe::OwnedPipe;

/// A half moves to the splice path once it has written this many bytes:
/// the notes measured splice at 25-35% less CPU per GiB than recv/send for
/// bulk flows, and small interactive flows never pay for a pipe.
pub const SPLICE_AFTER_BYTES: u64 = 256 * 1024;

/// An HTTP body of known length, or a chunk, with at least this many bytes
/// left moves through the splice path from its first byte; smaller ones are
/// copied, and take no pipe. A close-delimited response moves to it after
/// this many bytes. Measured (`bench/http_sweep.sh`, one worker, nginx
/// static files, a loaded 2-CPU VM, `bench/results/2026-12-01-f299cef-
/// http-splice-sweep/`): proxy CPU per 1 MiB response 363-382 µs with 0 or
/// 64 KiB, 410 µs with 256 KiB, 881 µs copied; 256 KiB responses 182-191 µs
/// with 0 or 64 KiB, 265-285 µs copied; 16 and 64 KiB the same either way.
pub const HTTP_SPLICE_THRESHOLD: u64 = 64 * 1024;

/// Size of each provided buffer of the copy path. Measured (release build,
/// one worker, 4 GiB through loopback into a sink, a shared 2-CPU VM): with
/// unlimited multishot recv, 16 KiB buffers cost 0.92-1.37 CPU-s/GiB and
/// 64 KiB 0.65-0.84; with the byte-limited recv that keeps backpressure,
/// 64 KiB costs 0.84-1.24. The splice path: 0.14-0.21 (1 and 4 streams).
pub const BUFFER_SIZE: u32 = 64 * 1024;

/// Provided buffers per worker (a power of two, at most 32768): 32 MiB. Only
/// bytes in flight hold one (idle connections hold none); when the ring runs
/// dry a half waits for buffers to come back (ENOBUFS), it is not failed.
pub const BUFFER_COUNT: u16 = 512;

/// Requested pipe size (`F_SETPIPE_SZ`), capped by `fs.pipe-max-size`.
pub const PIPE_SIZE: usize = 1024 * 1024;

/// Empty pipes a worker keeps for reuse; more are closed when they drain.
/// Pipe capacity counts against `fs.pipe-user-pages-soft` (64 MiB per user
/// by default) whether used or not, so the pool stays small.
pub const PIPE_POOL_KEEP: usize = 8;

/// Receive buffer (SO_RCVBUF, which the kernel doubles and which ends its
/// autotuning) set on an upstream socket once the downstream it feeds has
/// pushed back. Measured with `bench/stalled_mem.py` (50 clients that never
/// read, upstreams that keep sending, one worker, `tcp_rmem` max 32 MiB,
/// `tcp_wmem` max 4 MiB): the upstream's receive queue held 11.5-13.5 MiB
/// per connection without the cap, 1.6-4.1 MiB with it; with the
/// downstream's send queue (3.7 MiB) ringway's sockets held 15.1-17.3 MiB
/// per stalled connection before, 5.2-7.8 MiB after, plus one full 1 MiB
/// pipe each on the splice path. It is not tighter because the window
/// already advertised is not taken back. 256 KiB (512 KiB of buffer) still
/// gives a 1 ms RTT upstream about 2 Gbit/s once the client reads again. The client side
/// (uploads to a slow upstream) is left autotuned: clients are far away
/// and a small window would cap their uploads for the rest of the
/// connection.
pub const STALLED_UPSTREAM_RCVBUF: usize = 256 * 1024;

/// Splice round trips (source → pipe → sink) per readiness event, so that
/// one bulk connection cannot starve the others on its worker.
const PUMP_ROUNDS: usize = 8;

/// Move bytes `source` → `pipe` → `sink` until the source has none, the sink
/// takes no more, `max` bytes were read, or the round budget is spent.
/// Never reads more than the pipe can hold beyond what the sink took
/// (backpressure).
pub fn pump(
    pipe: &OwnedPipe,
    source: RawFd,
    sink: RawFd,
    in_pipe: u32,
    read: bool,
    max: u64,
) -> Pump {
    let mut p = Pump {
        read: 0,
        written: 0,
        in_pipe,
        source: SourceState::Open,
        sink: SinkState::Ok,
    };
    let capacity = pipe.capacity();
    for _ in 0..PUMP_ROUNDS {
        let room = (capacity - (p.in_pipe as usize).min(capacity)) as u64;
        let want = room.min(max.saturating_sub(p.read));
        if read && p.source == SourceState::Open && want > 0 {
            match pipe.fill_from(source, want as usize) {
                Ok(0) => p.source = SourceState::Eof,
                Ok(n) => {
                    p.read += n as u64;
                    p.in_pipe += n as u32;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    p.source = SourceState::WouldBlock;
                }
                Err(_) => p.source = SourceState::Failed,
            }
        }
        if p.in_pipe > 0 {
            match pipe.drain_to(sink, p.in_pipe as usize) {
                Ok(n) => {
                    p.written += n as u64;
                    p.in_pipe -= n as u32;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    p.sink = SinkState::WouldBlock;
                    return p;
                }
                Err(_) => {
                    p.sink = SinkState::Failed;
                    return p;
                }
            }
        }
        let capped = p.read >= max;
        if (!read || capped || p.source != SourceState::Open) && p.in_pipe == 0 {
            return p;
        }
    }
    p
}
