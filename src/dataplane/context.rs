//! What every part of a worker's connection handling shares: the worker's
//! identity and settings, its balancer, counters, access log and status
//! report, the log-line limits, and what a connection asks of the worker's
//! listeners (a pause after EMFILE). Passed by `&mut` to the functions that
//! need it; nothing here knows the worker or the ring.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::accesslog::AccessLog;
use crate::metrics::WorkerHandle;

use super::balancer::Balancer;
use super::plan::Plan;
use super::{Shared, WorkerStatus};

/// How long accepting stays paused after EMFILE/ENFILE (on accept, or on an
/// upstream socket).
pub const ACCEPT_PAUSE: Duration = Duration::from_millis(200);

pub(super) struct Ctx {
    pub(super) id: usize,
    pub(super) shared: Arc<Shared>,
    pub(super) balancer: Balancer,
    /// The plan as of the worker's last look (each accept, each wake-up):
    /// new connections and each HTTP request start under it.
    pub(super) plan: Arc<Plan>,
    /// xorshift state: request ids.
    pub(super) rng: u64,
    /// This worker's counters (a lock-free cache in front of the registry).
    pub(super) metrics: WorkerHandle,
    pub(super) access_log: AccessLog,
    /// What this worker reports to the control plane.
    pub(super) status: Arc<WorkerStatus>,
    /// At most one "connection cap reached" line per second.
    pub(super) cap_reached: LogLimit,
    /// At most one "cannot open an upstream socket" line per second.
    pub(super) socket_errors: LogLimit,
    /// At most one "no route for this SNI" line per second.
    pub(super) sni_errors: LogLimit,
    /// Set when ringway ran out of descriptors for a connection: the worker
    /// stops accepting until then.
    pub(super) pause_accepting: Option<Instant>,
}

impl Ctx {
    /// 64 random bits (xorshift64: request ids, not secrets).
    pub(super) fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

/// Lets one log line through per second (errors that could otherwise flood
/// the log once per connection).
#[derive(Debug, Default)]
pub(super) struct LogLimit {
    last: Option<Instant>,
}

impl LogLimit {
    pub(super) fn allow(&mut self, now: Instant) -> bool {
        let allowed = self
            .last
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1));
        if allowed {
            self.last = Some(now);
        }
        allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_second() {
        let t0 = Instant::now();
        let mut limit = LogLimit::default();
        assert!(limit.allow(t0));
        assert!(!limit.allow(t0 + Duration::from_millis(999)));
        assert!(limit.allow(t0 + Duration::from_secs(1)));
    }
}
