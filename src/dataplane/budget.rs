//! The descriptor budget: how many connections the process may hold open
//! and how many splice pipes each worker may hold, derived from
//! RLIMIT_NOFILE (after the raise to the hard limit) unless
//! `--max-connections` says otherwise. Pure arithmetic: the supervisor reads
//! the limit and logs the result.
//!
//! Where a descriptor goes:
//! - a connection: 2 (downstream and upstream sockets);
//! - a splice pipe: 2, held by a bulk direction only while it holds bytes;
//!   as HAProxy's `maxpipes` defaults to `maxconn/4`, the derived budget
//!   gives one connection in four a pipe, so a connection costs 2.5;
//! - each worker: its ring and its wake eventfd (2), and per listener its
//!   listening socket plus the connections its accepts may take beyond the
//!   cap before they stop (2 × [`ACCEPT_BATCH`]);
//! - [`RESERVE`] for the rest of the process.
#![forbid(unsafe_code)]

use std::fmt;

use super::listener;

/// Descriptors kept for what is neither a connection, a pipe nor a worker's
/// own: stdio, the admin endpoint's listener and connections, the access
/// log, the files a reload reads, DNS lookups. On a tiny limit, a quarter of
/// the limit instead.
pub const RESERVE: u64 = 64;

/// Per worker: its ring and its wake eventfd.
const PER_WORKER: u64 = 2;

/// Single-shot accepts a worker keeps in flight per listener near the cap.
/// Each may take one connection beyond the cap before it is cancelled, so
/// the budget holds 2 descriptors for each.
pub const ACCEPT_BATCH: u16 = 8;

/// Where the cap came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// From RLIMIT_NOFILE.
    Derived { nofile: u64 },
    /// `--max-connections`; `needed` descriptors against a limit of `nofile`.
    Explicit { nofile: Option<u64>, needed: u64 },
    /// The limit is unknown and no cap was given.
    Unlimited,
}

/// The process connection cap and the per-worker pipe limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Open connections per process; accepting stops there.
    pub max_connections: usize,
    /// Splice pipes a worker may hold (lent and pooled).
    pub pipes_per_worker: usize,
    /// Descriptors kept for everything but connections and pipes.
    pub reserved: u64,
    /// Connections the multishot accepts of one listener (one socket per
    /// worker) may take in one go: every socket's full listen backlog.
    /// Below this much room per listener under the cap, accepts are
    /// single-shot.
    pub burst_per_listener: usize,
    pub source: Source,
}

impl Budget {
    /// The budget for `workers` workers serving `listeners` listeners under
    /// a descriptor limit of `nofile` (`None`: unknown), with the operator's
    /// `--max-connections` if given.
    pub fn derive(
        nofile: Option<u64>,
        explicit: Option<usize>,
        workers: usize,
        listeners: usize,
    ) -> Budget {
        let workers64 = workers.max(1) as u64;
        let per_listener = 1 + 2 * u64::from(ACCEPT_BATCH);
        let own = workers64 * (PER_WORKER + listeners as u64 * per_listener);
        let fixed = nofile.map_or(RESERVE, |n| RESERVE.min(n / 4));
        let reserved = fixed + own;
        let available = nofile.map(|n| n.saturating_sub(reserved));
        let per_worker = |pipes: u64| usize::try_from(pipes / workers64).unwrap_or(usize::MAX);
        let burst_per_listener = workers.max(1) * (listener::BACKLOG.unsigned_abs() as usize + 1);
        match (explicit, available) {
            (Some(max), available) => {
                let max64 = max as u64;
                // Pipes for one connection in four, as far as descriptors allow.
                let room = available.map_or(u64::MAX, |a| a.saturating_sub(2 * max64) / 2);
                Budget {
                    max_connections: max,
                    pipes_per_worker: per_worker((max64 / 4).min(room)),
                    reserved,
                    burst_per_listener,
                    source: Source::Explicit {
                        nofile,
                        needed: reserved.saturating_add(max64.saturating_mul(2)),
                    },
                }
            }
            (None, Some(available)) => {
                // 2 descriptors per connection and a 2-descriptor pipe for
                // one in four: available = 2.5 × cap.
                let cap = (available * 2 / 5).max(1);
                Budget {
                    max_connections: usize::try_from(cap).unwrap_or(usize::MAX),
                    pipes_per_worker: per_worker(cap / 4),
                    reserved,
                    burst_per_listener,
                    source: Source::Derived {
                        nofile: nofile.unwrap_or_default(),
                    },
                }
            }
            (None, None) => Budget {
                max_connections: usize::MAX,
                pipes_per_worker: usize::MAX,
                reserved,
                burst_per_listener,
                source: Source::Unlimited,
            },
        }
    }

    /// `--max-connections` asks for more descriptors than the limit allows.
    pub fn exceeds_limit(&self) -> bool {
        matches!(self.source, Source::Explicit { nofile: Some(n), needed } if needed > n)
    }

    /// The start-up line: the cap and how it was reached.
    pub fn log(&self) {
        if self.exceeds_limit() {
            tracing::warn!(
                max_connections = self.max_connections,
                "connection cap: {self}; connections beyond what descriptors allow are closed \
                 (flag OM) and accepting pauses; raise LimitNOFILE / ulimit -n or lower --max-connections"
            );
        } else if self.source == Source::Unlimited {
            tracing::warn!("connection cap: {self}; set --max-connections");
        } else {
            tracing::info!(
                max_connections = self.max_connections,
                pipes_per_worker = self.pipes_per_worker,
                "connection cap: {self}"
            );
        }
    }
}

impl fmt::Display for Budget {
    /// How the cap was reached, for the start-up line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.source {
            Source::Derived { nofile } => write!(
                f,
                "derived from the open-file limit {nofile}: ({nofile} - {} reserved) / 2.5 \
                 (2 descriptors per connection, and a 2-descriptor splice pipe for one in four)",
                self.reserved
            ),
            Source::Explicit {
                nofile: Some(n),
                needed,
            } => write!(
                f,
                "--max-connections; needs about {needed} descriptors of the open-file limit {n}"
            ),
            Source::Explicit { nofile: None, .. } => {
                f.write_str("--max-connections; the open-file limit is unknown")
            }
            Source::Unlimited => f.write_str("none: the open-file limit is unknown"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_follows_the_descriptor_limit() {
        struct Case {
            nofile: Option<u64>,
            explicit: Option<usize>,
            workers: usize,
            listeners: usize,
            cap: usize,
            pipes_per_worker: usize,
            exceeds: bool,
        }
        for case in [
            // 20000 - (64 + 2 × (2 + 17)) = 19898; × 2/5 = 7959; a quarter of
            // that in pipes, split over two workers.
            Case {
                nofile: Some(20_000),
                explicit: None,
                workers: 2,
                listeners: 1,
                cap: 7959,
                pipes_per_worker: 994,
                exceeds: false,
            },
            // A tiny limit: the fixed reserve shrinks to a quarter of it.
            Case {
                nofile: Some(128),
                explicit: None,
                workers: 1,
                listeners: 1,
                cap: 30,
                pipes_per_worker: 7,
                exceeds: false,
            },
            // Nothing left after the reserve: still one connection.
            Case {
                nofile: Some(16),
                explicit: None,
                workers: 4,
                listeners: 2,
                cap: 1,
                pipes_per_worker: 0,
                exceeds: false,
            },
            // An explicit cap wins; pipes get what descriptors are left.
            Case {
                nofile: Some(1024),
                explicit: Some(400),
                workers: 2,
                listeners: 1,
                cap: 400,
                pipes_per_worker: 30,
                exceeds: false,
            },
            Case {
                nofile: Some(1024),
                explicit: Some(10_000),
                workers: 2,
                listeners: 1,
                cap: 10_000,
                pipes_per_worker: 0,
                exceeds: true,
            },
            Case {
                nofile: None,
                explicit: None,
                workers: 2,
                listeners: 1,
                cap: usize::MAX,
                pipes_per_worker: usize::MAX,
                exceeds: false,
            },
        ] {
            let b = Budget::derive(case.nofile, case.explicit, case.workers, case.listeners);
            assert_eq!(b.max_connections, case.cap, "{b:?}");
            assert_eq!(b.pipes_per_worker, case.pipes_per_worker, "{b:?}");
            assert_eq!(b.exceeds_limit(), case.exceeds, "{b:?}");
            if let Some(n) = case.nofile {
                if !case.exceeds && case.cap > 1 {
                    let used = b.reserved
                        + 2 * b.max_connections as u64
                        + 2 * (b.pipes_per_worker * case.workers) as u64;
                    assert!(used <= n, "{used} descriptors of {n}: {b:?}");
                }
            }
        }
    }
}
