//! Start-up and shutdown, on the main thread: the first table from the
//! `Reloader` (source → snapshot → load → compile) → resolve → bind →
//! spawn pinned workers → wait for signals (`main` blocked them before any
//! thread existed; only this thread takes them, with `sigwait`): SIGHUP
//! reloads, SIGUSR1 reopens the access log, SIGTERM/SIGINT drain or stop →
//! wake workers → join. Never touches a ring (beyond the start-up probe
//! that turns "no io_uring" into one line).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::accesslog::AccessLog;
use crate::control::admin::{self, Exposed, Exposure};
use crate::control::reload::{Invalid, Reloader, Trigger};
use crate::control::server::AdminServer;
use crate::control::state::{self, Admin, Control};
use crate::dataplane::budget::Budget;
use crate::dataplane::listener;
use crate::dataplane::ring::{Ring, SetupError};
use crate::dataplane::wake::WakeFd;
use crate::dataplane::worker::{Worker, WorkerListener};
use crate::dataplane::{Plan, Settings, Shared, WorkerStatus};
use crate::metrics::Identity;
use crate::metrics::{WorkerHandle, WorkerMetrics};
use crate::pipeline::Pipeline;
use crate::process;
use crate::resolve::SystemResolver;
use crate::routing::RouteTable;
use crate::source::{Applied, ConfigSource};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    InvalidConfig(#[from] Invalid),
    #[error(transparent)]
    Uring(#[from] SetupError),
    #[error("no listener could be bound (see the lines above for why)")]
    NoListener,
    #[error("cannot start worker {worker}: {message}")]
    Worker { worker: usize, message: String },
    #[error(
        "cannot start the admin endpoint on {address}: {message}; pick a free address with --admin ADDR or --admin off"
    )]
    Admin {
        address: SocketAddr,
        message: String,
    },
    #[error(transparent)]
    AdminExposed(#[from] Exposed),
    #[error("a worker failed; see the error above")]
    WorkerFailed,
}

/// What `ringway run` was asked to do.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub source: Arc<dyn ConfigSource>,
    pub pipeline: Pipeline,
    pub workers: Option<usize>,
    pub settings: Settings,
    /// Cloned into every worker (`AccessLog::off()` writes nothing).
    pub access_log: AccessLog,
    /// The admin endpoint's address (`--admin`); `None` = off.
    pub admin: Option<SocketAddr>,
    /// Serve the admin endpoint on an address reachable from the network
    /// (`--admin-expose`).
    pub admin_expose: bool,
    /// How long SIGTERM waits for open connections (`--drain-timeout`).
    pub drain_timeout: Duration,
    /// How often endpoint host names are resolved again (`--dns-refresh`).
    pub dns_refresh: Duration,
    /// Accept a reload that reads a blank file or closes every listener
    /// (`--allow-empty-reload`).
    pub allow_empty_reload: bool,
    /// This gateway in Istio's metrics (the `source_*` labels).
    pub identity: Identity,
}

/// A running gateway (used by `run`, and by `demo` which also needs to know
/// when the listeners are up).
pub struct Gateway {
    shared: Arc<Shared>,
    wakes: Vec<Arc<WakeFd>>,
    threads: Vec<thread::JoinHandle<()>>,
    failed: Arc<AtomicBool>,
    access_log: AccessLog,
    /// What the admin endpoint and the signals act on.
    pub control: Arc<Control>,
    /// The DNS refresh thread; dropping the sender ends it.
    dns: Option<(mpsc::Sender<()>, thread::JoinHandle<()>)>,
}

/// Run until SIGTERM or SIGINT.
pub fn run(options: &RunOptions) -> Result<(), RunError> {
    if let Some(address) = options.admin {
        if admin::exposure(address, options.admin_expose)? == Exposure::Network {
            tracing::warn!(%address, "{}", admin::EXPOSED_WARNING);
        }
    }
    process::block_stop_signals();
    let gateway = start(options)?;
    let admin = match options.admin {
        None => None,
        Some(address) => {
            let control: Arc<dyn Admin> = gateway.control.clone();
            match AdminServer::start(address, control) {
                Ok(server) => Some(server),
                Err(e) => {
                    let _ = gateway.stop();
                    return Err(RunError::Admin {
                        address,
                        message: e.to_string(),
                    });
                }
            }
        }
    };
    let result = serve(&gateway);
    if result.is_ok() {
        drain(&gateway, options.drain_timeout);
    }
    if let Some(admin) = admin {
        admin.stop();
    }
    result?;
    gateway.stop()
}

/// Close the listeners and wait for open connections, up to `timeout` or
/// a second SIGTERM/SIGINT; the caller then closes what is left.
fn drain(gateway: &Gateway, timeout: Duration) {
    if gateway.failed.load(Ordering::Acquire) {
        // A worker failed and asked to stop: no drain.
        return;
    }
    gateway.shared.draining.store(true, Ordering::Release);
    for wake in &gateway.wakes {
        if let Err(e) = wake.wake() {
            tracing::warn!(error = %e, "cannot wake a worker");
        }
    }
    let deadline = Instant::now() + timeout;
    loop {
        if gateway.threads.iter().all(thread::JoinHandle::is_finished) {
            tracing::info!("drained: every connection finished");
            return;
        }
        let now = Instant::now();
        if now >= deadline {
            tracing::info!(
                open = gateway.shared.open.load(Ordering::Relaxed),
                "drain timeout: closing the connections left"
            );
            return;
        }
        match process::wait_intent_for((deadline - now).min(DRAIN_POLL)) {
            Some(process::Intent::Stop(signal)) => {
                tracing::info!(signal, "second stop signal: closing every connection now");
                return;
            }
            Some(process::Intent::ReopenLog) => gateway.access_log.reopen(),
            Some(process::Intent::Reload) => {
                tracing::warn!("SIGHUP while draining: not reloading");
            }
            None => {}
        }
    }
}

/// How often a drain checks whether the workers are done.
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// Act on signals until one asks to stop.
fn serve(gateway: &Gateway) -> Result<(), RunError> {
    loop {
        match process::wait_intent() {
            process::Intent::Stop(signal) => {
                tracing::info!(signal, "stopping");
                gateway.control.set_serving(false);
                return Ok(());
            }
            process::Intent::ReopenLog => {
                gateway.access_log.reopen();
                tracing::info!("reopening the access log");
            }
            process::Intent::Reload => {
                // Success and failure are logged by the reloader.
                let _ = gateway.control.reload_with(Trigger::Signal);
            }
        }
    }
}

/// Load, bind and start the workers; returns once every worker is serving.
/// The first table comes from the same [`Reloader`] as every later one.
pub fn start(options: &RunOptions) -> Result<Gateway, RunError> {
    let reloader = Reloader::new(Arc::clone(&options.source), options.pipeline.clone())
        .allow_empty(options.allow_empty_reload);
    let first = reloader.start(|table| prepare(table, options))?;
    let bound = first.bound;
    let (spawned, ready) = spawn_workers(first, options)?;
    let workers = spawned.wakes.len();
    let mut gateway = Gateway {
        shared: Arc::clone(&spawned.shared),
        wakes: spawned.wakes.clone(),
        threads: spawned.threads,
        failed: spawned.failed,
        access_log: options.access_log.clone(),
        control: Arc::new(Control::new(
            spawned.shared,
            spawned.metrics,
            spawned.statuses,
            reloader,
            spawned.wakes,
            options.access_log.counters(),
            options.identity.clone(),
        )),
        dns: None,
    };
    for id in 0..workers {
        let error = match ready.recv() {
            Ok(Ok(())) => continue,
            Ok(Err(message)) => RunError::Worker {
                worker: id,
                message,
            },
            Err(_) => RunError::WorkerFailed,
        };
        let _ = gateway.stop();
        return Err(error);
    }
    gateway.control.set_serving(true);
    tracing::info!(workers, listeners = bound, "serving");
    attach_source(&gateway.control, options.source.as_ref());
    gateway.dns = spawn_dns_refresh(&gateway.control, options.dns_refresh);
    Ok(gateway)
}

/// From now on, every snapshot a watching source (etcd) pushes goes
/// through the same reload path as SIGHUP. The source holds the control
/// only weakly: the control holds the source (through its reloader).
fn attach_source(control: &Arc<Control>, source: &dyn ConfigSource) {
    let to = Arc::downgrade(control);
    source.watch(Box::new(move |snapshot| match to.upgrade() {
        Some(control) => Applied::from(control.apply_snapshot(&snapshot)),
        None => Applied::Rejected {
            errors: vec!["the gateway is stopping".to_owned()],
        },
    }));
    let to = Arc::downgrade(control);
    source.probe(Box::new(move || {
        to.upgrade()
            .map(|control| control.unbound_listeners())
            .unwrap_or_default()
    }));
}

/// The first plan, its listeners bound for every worker, and what the
/// workers share: everything the workers need before they start.
struct Prepared {
    shared: Arc<Shared>,
    /// By worker.
    listeners: Vec<Vec<WorkerListener>>,
    cores: Vec<core_affinity::CoreId>,
    /// Listeners bound.
    bound: usize,
}

/// Raise the open-file limit, probe io_uring, resolve the first table's
/// endpoints, bind its listeners and derive the connection cap.
fn prepare(table: RouteTable, options: &RunOptions) -> Result<Prepared, RunError> {
    let nofile = raise_nofile_limit();
    process::ignore_sigpipe();
    Ring::probe()?;
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let workers = options.workers.unwrap_or_else(|| cores.len().max(1)).max(1);
    let endpoints = state::resolve_logged(&table);
    let plan = Plan::new(table, endpoints, None);
    let listeners = bind_all(&plan.table, workers);
    // A configuration that opens no listener is valid (Istio parity: clients
    // are refused) and keeps the process up; listeners that exist but none
    // of which could be bound are an operational error.
    let bound = listeners.first().map_or(0, Vec::len);
    if bound == 0 && !plan.table.listeners.is_empty() {
        return Err(RunError::NoListener);
    }
    let budget = Budget::derive(
        nofile,
        options.settings.max_connections,
        workers,
        plan.table.listeners.len(),
    );
    budget.log();
    let shared = Arc::new(Shared {
        plan: Arc::new(ArcSwap::from_pointee(plan)),
        settings: options.settings,
        budget,
        open: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        draining: AtomicBool::new(false),
    });
    Ok(Prepared {
        shared,
        listeners,
        cores,
        bound,
    })
}

/// The open-file limit after raising it to the hard limit, if known.
fn raise_nofile_limit() -> Option<u64> {
    match process::raise_nofile_limit() {
        Ok((old, new)) => {
            if old != new {
                tracing::info!(old, new, "raised the open-file limit to the hard limit");
            }
            Some(new)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
            None
        }
    }
}

/// The worker threads, started; each reports on the returned receiver once
/// it serves (or why it cannot).
struct Spawned {
    shared: Arc<Shared>,
    wakes: Vec<Arc<WakeFd>>,
    threads: Vec<thread::JoinHandle<()>>,
    metrics: Vec<Arc<WorkerMetrics>>,
    statuses: Vec<Arc<WorkerStatus>>,
    failed: Arc<AtomicBool>,
}

/// One pinned thread per worker, each with its listeners.
fn spawn_workers(
    prepared: Prepared,
    options: &RunOptions,
) -> Result<(Spawned, mpsc::Receiver<Result<(), String>>), RunError> {
    let workers = prepared.listeners.len();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let mut spawned = Spawned {
        shared: prepared.shared,
        wakes: Vec::with_capacity(workers),
        threads: Vec::with_capacity(workers),
        metrics: Vec::with_capacity(workers),
        statuses: (0..workers).map(|_| Arc::default()).collect(),
        failed: Arc::new(AtomicBool::new(false)),
    };
    let cores = prepared.cores;
    for (id, own) in prepared.listeners.into_iter().enumerate() {
        let wake = Arc::new(WakeFd::new().map_err(|e| RunError::Worker {
            worker: id,
            message: e.to_string(),
        })?);
        spawned.wakes.push(Arc::clone(&wake));
        let core = cores.get(id % cores.len().max(1)).copied();
        let counters = WorkerMetrics::new();
        spawned.metrics.push(Arc::clone(&counters));
        let parts = Parts {
            shared: Arc::clone(&spawned.shared),
            listeners: own,
            wake,
            metrics: counters,
            access_log: options.access_log.clone(),
            status: Arc::clone(&spawned.statuses[id]),
        };
        let ready = ready_tx.clone();
        let failed = Arc::clone(&spawned.failed);
        let thread = thread::Builder::new()
            .name(format!("ringway-w{id}"))
            .spawn(move || worker_main(id, core, parts, ready, failed))
            .map_err(|e| RunError::Worker {
                worker: id,
                message: e.to_string(),
            })?;
        spawned.threads.push(thread);
    }
    Ok((spawned, ready_rx))
}

/// What a worker thread is started with.
struct Parts {
    shared: Arc<Shared>,
    listeners: Vec<WorkerListener>,
    wake: Arc<WakeFd>,
    /// Wrapped in a `WorkerHandle` on the worker's own thread.
    metrics: Arc<WorkerMetrics>,
    access_log: AccessLog,
    status: Arc<WorkerStatus>,
}

fn worker_main(
    id: usize,
    core: Option<core_affinity::CoreId>,
    parts: Parts,
    ready: mpsc::Sender<Result<(), String>>,
    failed: Arc<AtomicBool>,
) {
    if let Some(core) = core {
        if !core_affinity::set_for_current(core) {
            tracing::warn!(
                worker = id,
                core = core.id,
                "cannot pin the worker to its CPU"
            );
        }
    }
    run_with(id, parts, ready, failed);
}

fn run_with(
    id: usize,
    parts: Parts,
    ready: mpsc::Sender<Result<(), String>>,
    failed: Arc<AtomicBool>,
) {
    let _span = tracing::info_span!("worker", worker = id).entered();
    let worker = match Worker::new(
        id,
        parts.shared,
        parts.listeners,
        parts.wake,
        WorkerHandle::new(parts.metrics),
        parts.access_log,
        parts.status,
    ) {
        Ok(w) => w,
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    if let Err(e) = worker.run() {
        tracing::error!(worker = id, error = %e, "worker failed");
        failed.store(true, Ordering::Release);
        process::request_stop();
    }
}

impl Gateway {
    /// Stop accepting, close every connection, join the workers.
    pub fn stop(mut self) -> Result<(), RunError> {
        if let Some((stop, thread)) = self.dns.take() {
            drop(stop);
            let _ = thread.join();
        }
        self.shared.stop.store(true, Ordering::Release);
        for wake in &self.wakes {
            if let Err(e) = wake.wake() {
                tracing::warn!(error = %e, "cannot wake a worker");
            }
        }
        for t in self.threads {
            let _ = t.join();
        }
        if self.failed.load(Ordering::Acquire) {
            return Err(RunError::WorkerFailed);
        }
        Ok(())
    }
}

/// Every `every`, resolve the table's host names again (only when it has
/// some); ends when the returned sender is dropped.
fn spawn_dns_refresh(
    control: &Arc<Control>,
    every: Duration,
) -> Option<(mpsc::Sender<()>, thread::JoinHandle<()>)> {
    if every.is_zero() {
        return None;
    }
    let (stop, stopped) = mpsc::channel::<()>();
    let control = Arc::clone(control);
    let thread = thread::Builder::new()
        .name("dns-refresh".into())
        .spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                control.refresh_dns(&SystemResolver);
            }
        });
    match thread {
        Ok(thread) => Some((stop, thread)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the DNS refresh thread; host names are resolved at load and reload only");
            None
        }
    }
}

/// One SO_REUSEPORT socket per worker for every listener that can be served;
/// one log line per listener bound or skipped. Returns the sockets by worker.
fn bind_all(table: &RouteTable, workers: usize) -> Vec<Vec<WorkerListener>> {
    let mut by_worker: Vec<Vec<WorkerListener>> = (0..workers).map(|_| Vec::new()).collect();
    for (index, l) in table.listeners.iter().enumerate() {
        let mut sockets = Vec::with_capacity(workers);
        let mut error = None;
        for _ in 0..workers {
            match listener::bind(l.address) {
                Ok(s) => sockets.push(s),
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = error {
            tracing::error!(listener = %l.name, address = %l.address, error = %e, "listener skipped: cannot bind");
            continue;
        }
        tracing::info!(listener = %l.name, address = %l.address, gateways = ?l.gateways, workers, "listener bound");
        for (w, socket) in sockets.into_iter().enumerate() {
            by_worker[w].push(WorkerListener {
                socket: Some(socket),
                address: l.address,
                index,
                name: l.name.clone(),
            });
        }
    }
    by_worker
}
