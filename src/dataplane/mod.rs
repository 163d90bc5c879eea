//! The data plane (SPEC §3): one worker thread per core, each owning an
//! io_uring, its listening sockets and its connections. Workers share only
//! the current [`Plan`] (through an `ArcSwap`, loaded once per accepted
//! connection) and a few connection counters that move on open and close,
//! never per byte.

pub mod accept;
mod admission;
pub mod balancer;
pub mod budget;
pub mod bufring;
mod checkout;
pub mod conn;
mod connections;
mod context;
mod exec;
pub mod forward;
pub mod half;
pub mod http;
pub mod io;
pub mod listener;
pub mod listeners;
mod meter;
pub mod passthrough;
pub mod pipe;
pub mod plan;
pub mod pool;
pub mod proxy_protocol;
mod request_log;
pub mod ring;
pub mod session;
pub mod slab;
mod slot;
pub mod tcp;
pub mod timers;
pub mod token;
mod upstream;
pub mod wake;
pub mod worker;

use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;

pub use balancer::Ejection;
pub use plan::{Plan, Target};

/// Command-line knobs of the data plane.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Endpoints tried per connection (`--connect-attempts`).
    pub connect_attempts: u32,
    /// Open connections per process (`--max-connections`); `None`: derived
    /// from the open-file limit ([`budget::Budget`]).
    pub max_connections: Option<usize>,
    /// Bytes after which a direction moves to the splice path.
    pub splice_after: u64,
    /// HTTP bodies: a body of known length or a chunk with at least this
    /// many bytes left splices from its first byte, smaller ones are
    /// copied; a close-delimited response splices after this many bytes
    /// (`u64::MAX`: never).
    pub http_splice_threshold: u64,
    /// How the copy path receives; `None`: the best the kernel offers.
    pub recv_mode: Option<ring::RecvMode>,
    /// Size of each provided buffer of the copy path.
    pub buffer_size: u32,
    /// Requested size of splice pipes.
    pub pipe_size: usize,
    /// HTTP timeouts.
    pub http: http::HttpLimits,
}

impl Default for Settings {
    /// The measured defaults (see `forward.rs` and the README's sweep).
    fn default() -> Self {
        Settings {
            connect_attempts: 3,
            max_connections: None,
            splice_after: forward::SPLICE_AFTER_BYTES,
            http_splice_threshold: forward::HTTP_SPLICE_THRESHOLD,
            recv_mode: None,
            buffer_size: forward::BUFFER_SIZE,
            pipe_size: forward::PIPE_SIZE,
            http: http::HttpLimits::default(),
        }
    }
}

/// What the supervisor and the workers share.
#[derive(Debug)]
pub struct Shared {
    /// The current plan; workers read it through an `arc_swap::Cache`.
    pub plan: Arc<ArcSwap<Plan>>,
    pub settings: Settings,
    /// The connection cap and the pipes per worker.
    pub budget: budget::Budget,
    /// Open connections in the process.
    pub open: AtomicUsize,
    /// Set by the supervisor before it wakes the workers to stop.
    pub stop: AtomicBool,
    /// Set by the supervisor before it wakes the workers to drain: close
    /// the listeners, let open connections finish.
    pub draining: AtomicBool,
}

/// What one worker tells the control plane: the plan it serves, how many of
/// that plan's listeners it could not bind (`/ready`), and the endpoints it
/// has ejected (`/config_dump`). Written by the worker only when it takes a
/// plan or ejects an endpoint, never per connection or per byte.
#[derive(Debug, Default)]
pub struct WorkerStatus {
    report: Mutex<StatusReport>,
}

#[derive(Debug, Default, Clone)]
pub struct StatusReport {
    pub plan: Option<Arc<Plan>>,
    pub missing_listeners: usize,
    /// Listeners closed by `plan` whose accept the ring still holds (the
    /// kernel keeps such a socket listening until the cancel completes).
    pub closing_listeners: usize,
    pub ejections: Vec<Ejection>,
}

impl WorkerStatus {
    pub fn report(
        &self,
        plan: &Arc<Plan>,
        missing_listeners: usize,
        closing_listeners: usize,
        ejections: Vec<Ejection>,
    ) {
        *self.lock() = StatusReport {
            plan: Some(Arc::clone(plan)),
            missing_listeners,
            closing_listeners,
            ejections,
        };
    }

    /// A closed listener's accept has ended: `closing` are left.
    pub fn closing(&self, closing: usize) {
        self.lock().closing_listeners = closing;
    }

    pub fn ejected(&self, ejections: Vec<Ejection>) {
        self.lock().ejections = ejections;
    }

    pub fn snapshot(&self) -> StatusReport {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StatusReport> {
        self.report.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
