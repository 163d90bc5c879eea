//! The gateway as the control plane sees it: readiness, counters, the plan
//! in use, reload and DNS refresh. Answers are typed ([`Readiness`],
//! [`ConfigDump`], [`ReloadOutcome`]); `admin.rs` renders them. Nothing here
//! knows HTTP, and nothing here touches a ring: workers are reached through
//! the plan's ArcSwap and their wake descriptors only.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use serde::{Serialize, Serializer};

use super::reload::{Reloader, Trigger};
use crate::accesslog::Counters as AccessLogCounters;
use crate::dataplane::listener;
use crate::dataplane::wake::WakeFd;
use crate::dataplane::{Plan, Shared, StatusReport, Target, WorkerStatus};
use crate::metrics::Identity;
use crate::metrics::{ProcessMetrics, WorkerMetrics};
use crate::resolve::{self, Resolver, SystemResolver};
use crate::routing::RouteTable;
use crate::source::{Snapshot, SourceState};

/// How long `POST /reload` waits for every worker to take the new plan
/// before it answers with what it knows. A worker takes a plan within one
/// pass of its event loop (microseconds); seconds mean a worker is stuck,
/// and an operator's script should hear so rather than hang.
pub const APPLY_WAIT: Duration = Duration::from_secs(5);

/// How often that wait looks at the workers' reports.
const APPLY_POLL: Duration = Duration::from_millis(1);

/// Whether `/ready` may answer 200, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Starting, or draining after SIGTERM/SIGINT.
    NotServing,
    /// Some workers have not taken the current plan yet (a reload or DNS
    /// refresh is being applied).
    Applying,
    /// Some listeners of the current plan could not be bound (summed over
    /// workers).
    Unbound {
        listeners: usize,
    },
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// Published, and every worker serves it.
    Applied { generation: u64 },
    /// Published, but when the wait ended only `applied` of `workers` had
    /// taken it.
    Applying {
        generation: u64,
        applied: usize,
        workers: usize,
    },
    /// Refused: the running configuration stays. Each error names its file
    /// and line, or the listener that could not be bound.
    Refused { errors: Vec<String> },
}

/// `/config_dump`: the compiled table in use and its endpoints as resolved
/// for the workers, with the passive health each worker holds.
#[derive(Debug, Serialize)]
pub struct ConfigDump {
    pub generation: u64,
    /// This gateway in Istio's metrics (the `source_*` labels).
    pub identity: Identity,
    #[serde(rename = "table", serialize_with = "table_of")]
    pub plan: Arc<Plan>,
    /// By cluster name.
    pub resolved_endpoints: BTreeMap<String, Vec<EndpointState>>,
    /// Where the configuration comes from, at which revision, how fresh.
    pub source: SourceState,
}

fn table_of<S: Serializer>(plan: &Arc<Plan>, s: S) -> Result<S::Ok, S::Error> {
    plan.table.serialize(s)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Healthy,
    /// Ejected by outlier detection on at least one worker.
    Ejected,
}

#[derive(Debug, Serialize)]
pub struct EndpointState {
    pub address: SocketAddr,
    pub weight: u32,
    pub health: Health,
    pub ejected_by_workers: Vec<usize>,
    pub ejection_remaining_ms: u64,
}

impl ConfigDump {
    /// `reports` are the workers' status reports, in worker order.
    pub fn new(
        plan: Arc<Plan>,
        identity: Identity,
        reports: &[StatusReport],
        now: Instant,
    ) -> ConfigDump {
        let resolved_endpoints = plan
            .table
            .clusters
            .iter()
            .zip(&plan.endpoints)
            .map(|(c, targets)| {
                let states = targets
                    .iter()
                    .map(|t| endpoint_state(&c.name, t, reports, now))
                    .collect();
                (c.name.clone(), states)
            })
            .collect();
        ConfigDump {
            generation: plan.table.generation,
            identity,
            plan,
            resolved_endpoints,
            source: SourceState::default(),
        }
    }
}

fn endpoint_state(
    cluster: &str,
    target: &Target,
    reports: &[StatusReport],
    now: Instant,
) -> EndpointState {
    let mut ejected_by_workers = Vec::new();
    let mut remaining = Duration::ZERO;
    for (worker, report) in reports.iter().enumerate() {
        let ejection = report
            .ejections
            .iter()
            .find(|e| *e.cluster == *cluster && e.address == target.address && e.until > now);
        if let Some(e) = ejection {
            ejected_by_workers.push(worker);
            remaining = remaining.max(e.until - now);
        }
    }
    EndpointState {
        address: target.address,
        weight: target.weight,
        health: match ejected_by_workers.is_empty() {
            true => Health::Healthy,
            false => Health::Ejected,
        },
        ejected_by_workers,
        ejection_remaining_ms: u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX),
    }
}

/// What the admin endpoint asks of the running gateway. [`Control`] is the
/// real one; tests of the admin server bring their own.
pub trait Admin: Send + Sync + 'static {
    fn readiness(&self) -> Readiness;
    /// Prometheus text exposition.
    fn metrics(&self) -> String;
    fn config_dump(&self) -> ConfigDump;
    /// Load, compile, resolve and publish, then wait (up to [`APPLY_WAIT`])
    /// for every worker to take the new plan. Blocks: never call it on the
    /// thread that answers `/ready`.
    fn reload(&self) -> ReloadOutcome;
}

/// The gateway as the control plane sees it.
pub struct Control {
    shared: Arc<Shared>,
    /// This gateway in Istio's metrics (the `source_*` labels).
    identity: Identity,
    /// Each worker's counters, read at scrape time.
    metrics: Vec<Arc<WorkerMetrics>>,
    /// Each worker's plan, unbound listeners and ejections.
    statuses: Vec<Arc<WorkerStatus>>,
    reloader: Reloader,
    /// The access log's drop counter.
    access_log: Arc<AccessLogCounters>,
    /// Serving and not draining (`/ready` also needs every worker on the
    /// current plan with every listener bound).
    serving: AtomicBool,
    wakes: Vec<Arc<WakeFd>>,
    /// Held while a new plan is published (reload, DNS refresh), so that a
    /// refresh never replaces a plan newer than the one it resolved. Never
    /// held while resolving.
    publish: Mutex<()>,
}

impl Control {
    pub fn new(
        shared: Arc<Shared>,
        metrics: Vec<Arc<WorkerMetrics>>,
        statuses: Vec<Arc<WorkerStatus>>,
        reloader: Reloader,
        wakes: Vec<Arc<WakeFd>>,
        access_log: Arc<AccessLogCounters>,
        identity: Identity,
    ) -> Control {
        Control {
            identity,
            shared,
            metrics,
            statuses,
            reloader,
            access_log,
            serving: AtomicBool::new(false),
            wakes,
            publish: Mutex::new(()),
        }
    }

    /// Serving (every worker started), or not (stopping, draining).
    pub fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Ordering::Release);
    }

    /// Build, resolve, publish, and wake every worker to take the new plan;
    /// returns without waiting for them. One at a time (the reloader's
    /// lock); the publish lock is held only for the swap itself.
    pub fn reload_with(&self, trigger: Trigger) -> Result<u64, Vec<String>> {
        self.reloader
            .reload(trigger, |table| self.publish_table(table))
    }

    /// The same for a snapshot a watching source pushed (etcd).
    pub fn apply_snapshot(&self, snapshot: &Snapshot) -> Result<u64, Vec<String>> {
        self.reloader
            .apply(snapshot, Trigger::Watch, |table| self.publish_table(table))
    }

    /// Workers that could not bind every listener of the current table,
    /// each with how many it misses (for a fleet's status key).
    pub fn unbound_listeners(&self) -> Vec<String> {
        self.statuses
            .iter()
            .enumerate()
            .filter_map(|(worker, s)| {
                let missing = s.snapshot().missing_listeners;
                (missing > 0).then(|| format!("worker {worker}: {missing} listeners unbound"))
            })
            .collect()
    }

    fn publish_table(&self, table: RouteTable) -> Result<(), String> {
        // A new address that cannot be bound refuses the whole reload
        // (the workers would each fail to bind it).
        let current = self.shared.plan.load();
        for l in &table.listeners {
            let known = current
                .table
                .listeners
                .iter()
                .any(|c| c.address == l.address);
            if !known {
                listener::probe(l.address).map_err(|e| {
                    format!(
                        "listener {} ({}): cannot bind: {e}; free the port or change the Gateway",
                        l.name, l.address
                    )
                })?;
            }
        }
        drop(current);
        // Resolving may take as long as the resolver does: no lock yet.
        let endpoints = resolve_logged(&table);
        let _publishing = self.publish.lock().unwrap_or_else(PoisonError::into_inner);
        let plan = Plan::new(table, endpoints, Some(&self.shared.plan.load()));
        self.shared.plan.store(Arc::new(plan));
        self.wake_workers();
        Ok(())
    }

    /// How many workers serve `generation` or a later one, of how many:
    /// with the listeners it added open, and the ones it dropped closed
    /// (their accepts ended, so that the kernel refuses connections).
    pub fn applied(&self, generation: u64) -> (usize, usize) {
        let applied = self
            .statuses
            .iter()
            .filter(|s| {
                let report = s.snapshot();
                report.closing_listeners == 0
                    && report
                        .plan
                        .is_some_and(|p| p.table.generation >= generation)
            })
            .count();
        (applied, self.statuses.len())
    }

    fn wake_workers(&self) {
        for wake in &self.wakes {
            if let Err(e) = wake.wake() {
                tracing::warn!(error = %e, "cannot wake a worker");
            }
        }
    }

    /// Resolve the current table's host names again; publish a plan with
    /// the same table (and generation) when an address changed. True when
    /// it published.
    pub fn refresh_dns(&self, resolver: &dyn Resolver) -> bool {
        let current = self.shared.plan.load_full();
        let Some((endpoints, warnings)) =
            resolve::refreshed(&current.table, &current.endpoints, resolver)
        else {
            tracing::debug!(
                generation = current.table.generation,
                "DNS refresh: no endpoint address changed"
            );
            return false;
        };
        let _publishing = self.publish.lock().unwrap_or_else(PoisonError::into_inner);
        if !Arc::ptr_eq(&self.shared.plan.load(), &current) {
            // A reload published meanwhile (and resolved its own names).
            return false;
        }
        for w in warnings.iter() {
            tracing::warn!("{w}");
        }
        let count: usize = endpoints.iter().map(Vec::len).sum();
        let plan = Plan::new(current.table.clone(), endpoints, Some(&current));
        self.shared.plan.store(Arc::new(plan));
        tracing::info!(
            generation = current.table.generation,
            endpoints = count,
            "endpoint addresses changed (DNS); new connections use them"
        );
        self.wake_workers();
        true
    }
}

impl Admin for Control {
    fn readiness(&self) -> Readiness {
        if !self.serving.load(Ordering::Acquire) {
            return Readiness::NotServing;
        }
        let current = self.shared.plan.load();
        let mut unbound = 0;
        for s in &self.statuses {
            let report = s.snapshot();
            if !report.plan.is_some_and(|p| Arc::ptr_eq(&p, &current)) {
                return Readiness::Applying;
            }
            unbound += report.missing_listeners;
        }
        match unbound {
            0 => Readiness::Ready,
            listeners => Readiness::Unbound { listeners },
        }
    }

    fn metrics(&self) -> String {
        let snapshots: Vec<_> = self.metrics.iter().map(|m| m.snapshot()).collect();
        let process = ProcessMetrics {
            generation: self.shared.plan.load().table.generation,
            reloads_success: self.reloader.succeeded(),
            reloads_failure: self.reloader.failed(),
            workers: self.metrics.len(),
            access_log_dropped: self.access_log.dropped(),
            source: self.reloader.source_state(),
        };
        crate::metrics::render(&process, &self.identity, &snapshots)
    }

    fn config_dump(&self) -> ConfigDump {
        let plan = self.shared.plan.load_full();
        let reports: Vec<_> = self.statuses.iter().map(|s| s.snapshot()).collect();
        let mut dump = ConfigDump::new(plan, self.identity.clone(), &reports, Instant::now());
        dump.source = self.reloader.source_state();
        dump
    }

    fn reload(&self) -> ReloadOutcome {
        let generation = match self.reload_with(Trigger::Admin) {
            Ok(generation) => generation,
            Err(errors) => return ReloadOutcome::Refused { errors },
        };
        let deadline = Instant::now() + APPLY_WAIT;
        loop {
            let (applied, workers) = self.applied(generation);
            if applied == workers {
                return ReloadOutcome::Applied { generation };
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    generation,
                    applied,
                    workers,
                    "reload published, but not every worker took it in time"
                );
                return ReloadOutcome::Applying {
                    generation,
                    applied,
                    workers,
                };
            }
            thread::sleep(APPLY_POLL);
        }
    }
}

/// `table`'s endpoints resolved with the system resolver (off the data
/// path), unresolvable names warned about.
pub fn resolve_logged(table: &RouteTable) -> Vec<Vec<Target>> {
    let (endpoints, warnings) = resolve::resolve_endpoints(table, &SystemResolver, None);
    for w in warnings.iter() {
        tracing::warn!("{w}");
    }
    endpoints
}
