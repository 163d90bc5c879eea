//! `ringway run --config-source etcd://...`: the configuration read from
//! etcd and watched, as a [`ConfigSource`].
//!
//! One thread, `config-source`, runs a current-thread tokio runtime that
//! owns everything etcd: the members (with fail-over), the watch stream,
//! the lease and the status key. The state machine in `watch.rs` decides;
//! the driver (`driver.rs`) performs. Workers never see any of it.
//!
//! Sets are handed over two ways:
//! - pulled ([`ConfigSource::snapshot`]): the first call waits up to the
//!   start-up timeout for the first read, else serves the cache (stale),
//!   else a snapshot whose one document says why there is nothing (the
//!   process exits, as with an invalid `-c`). Later calls (SIGHUP,
//!   `POST /reload`) force a full read and return its set, or the last one
//!   seen when etcd is down.
//! - pushed ([`ConfigSource::watch`]): every change goes to the sink on a
//!   thread of its own, `config-sink`, never on the runtime (the sink
//!   compiles and resolves host names: it blocks). A latest-wins slot sits
//!   between them: a burst of changes while one compiles coalesces, and the
//!   newest set always wins. The sink's answer goes back to the runtime,
//!   which writes the cache (after a publish) and the status key.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;

use super::cache;
use super::driver::{Command, Driver};
use super::keys::Keys;
use super::members::{EtcdError, Members};
use super::status::InstanceStatus;
use super::store::StoreSet;
use super::target::{EtcdArgs, Target};
use crate::diag::Diagnostic;
use crate::source::{
    Applied, ConfigSource, Content, Document, Origin, Probe, Sink, Snapshot, SourceState,
};

/// How long the first snapshot waits for etcd before the cache is served.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(5);
/// The status key's lease: an instance gone this long leaves the fleet.
pub const DEFAULT_STATUS_TTL: Duration = Duration::from_secs(10);

/// What `run` tells the source.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub target: Target,
    pub etcd: EtcdArgs,
    /// The status key's name (`--instance-id`, default the host name).
    pub instance_id: String,
    /// `--labels`, `k=v,...`, reported in the status key.
    pub labels: String,
    /// `--config-cache PATH`.
    pub cache: Option<PathBuf>,
    pub startup_timeout: Duration,
    pub status_ttl: Duration,
}

impl SourceConfig {
    /// The defaults for everything but where and who.
    pub fn new(target: Target, etcd: EtcdArgs, instance_id: String) -> SourceConfig {
        SourceConfig {
            target,
            etcd,
            instance_id,
            labels: String::new(),
            cache: None,
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
            status_ttl: DEFAULT_STATUS_TTL,
        }
    }
}

/// The etcd source. Dropping it (or [`EtcdSource::stop`]) ends its
/// threads and revokes its lease, so `ringway status` drops the instance
/// at once.
pub struct EtcdSource {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    keys: Keys,
    cache: Option<PathBuf>,
    startup_timeout: Duration,
    /// The first snapshot was taken (the next ones are resyncs).
    started: AtomicBool,
    initial: Arc<Rendezvous>,
}

impl std::fmt::Debug for EtcdSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdSource")
            .field("location", &self.location())
            .finish_non_exhaustive()
    }
}

/// What the runtime, the sink thread and the callers share.
pub(super) struct Shared {
    pub report: Mutex<Report>,
    pub slot: Slot,
    pub probe: Mutex<Option<Probe>>,
}

impl Shared {
    pub fn report(&self) -> std::sync::MutexGuard<'_, Report> {
        self.report.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What `state()` and the status key say.
#[derive(Debug, Default)]
pub(super) struct Report {
    pub status: InstanceStatus,
    pub location: String,
    pub connected: bool,
    pub last_sync: Option<SystemTime>,
    pub resyncs: Vec<(&'static str, u64)>,
    pub errors: Vec<(&'static str, u64)>,
    pub rejected: u64,
    /// The last set handed over: what a SIGHUP gets while etcd is down.
    pub last_set: Option<StoreSet>,
}

impl EtcdSource {
    /// Checks the flags (certificates, password file), then starts the
    /// `config-source` and `config-sink` threads; the first read begins at
    /// once. Fails only for what no retry would fix.
    pub fn start(config: SourceConfig) -> Result<Arc<EtcdSource>, EtcdError> {
        let members = Members::new(&config.target, &config.etcd)?;
        let keys = Keys::new(&config.target.prefix);
        let location = format!(
            "etcd://{}{}",
            config
                .target
                .endpoints
                .iter()
                .map(|e| e.split_once("://").map_or(e.as_str(), |(_, rest)| rest))
                .collect::<Vec<_>>()
                .join(","),
            keys.prefix()
        );
        let shared = Arc::new(Shared {
            report: Mutex::new(Report {
                status: first_status(&config),
                location,
                ..Report::default()
            }),
            slot: Slot::default(),
            probe: Mutex::new(None),
        });
        let (commands, receiver) = mpsc::unbounded_channel();
        let initial = Arc::new(Rendezvous::default());
        let runtime = super::runtime().map_err(|e| {
            EtcdError::Setup(format!("cannot start the config-source runtime: {e}"))
        })?;
        let driver = Driver::new(
            members,
            keys.clone(),
            &config,
            shared.clone(),
            commands.clone(),
            receiver,
            initial.clone(),
        );
        let spawn = |name: &str, body: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(body)
                .map_err(|e| EtcdError::Setup(format!("cannot start the {name} thread: {e}")))
        };
        let source_thread = spawn(
            "config-source",
            Box::new(move || runtime.block_on(driver.run())),
        )?;
        let sink_shared = shared.clone();
        let sink_commands = commands.clone();
        let sink_thread = spawn(
            "config-sink",
            Box::new(move || hand_over(&sink_shared, &sink_commands)),
        )?;
        Ok(Arc::new(EtcdSource {
            shared,
            commands,
            threads: Mutex::new(vec![source_thread, sink_thread]),
            keys,
            cache: config.cache,
            startup_timeout: config.startup_timeout,
            started: AtomicBool::new(false),
            initial,
        }))
    }

    /// Tells the source how to find the listeners this host could not bind
    /// (reported in the status key).
    pub fn set_probe(&self, probe: Probe) {
        *self
            .shared
            .probe
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(probe);
    }

    /// Ends both threads; the lease is revoked first (bounded by a
    /// second). Idempotent. Call it at shutdown: a sink that holds the
    /// reloader, which holds this source, is a cycle that keeps `Drop`
    /// from ever running.
    pub fn stop(&self) {
        let _ = self.commands.send(Command::Stop);
        self.shared.slot.stop();
        let threads =
            std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner));
        for thread in threads {
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }

    fn location(&self) -> String {
        self.shared.report().location.clone()
    }

    /// The first snapshot: the first read, or the cache, or nothing.
    fn first_snapshot(&self) -> Snapshot {
        let cached = self
            .cache
            .as_deref()
            .map(|path| cache::read(path, &self.keys));
        let fallback = match &cached {
            Some(Ok(Some(c))) => Some(c.set.clone()),
            _ => None,
        };
        if let Some(snapshot) = self.initial.wait(self.startup_timeout, fallback) {
            return snapshot;
        }
        let location = self.location();
        match cached {
            Some(Ok(Some(c))) => {
                tracing::warn!(
                    source = %location,
                    revision = c.set.revision,
                    "etcd did not answer within {:?}: serving the cached set, marked stale, until it does",
                    self.startup_timeout
                );
                let mut report = self.shared.report();
                report.status.stale = true;
                report.status.applied_revision = c.config_revision;
                report.status.table_hash = table_hash(&c.set);
                report.last_set = Some(c.set.clone());
                c.set.snapshot()
            }
            Some(Err(e)) => unreadable(&location, self.startup_timeout, &e.to_string()),
            Some(Ok(None)) | None => unreadable(
                &location,
                self.startup_timeout,
                "no cache to start from (--config-cache names none, or it does not exist yet)",
            ),
        }
    }
}

/// The snapshot that says why there is nothing to serve.
fn unreadable(location: &str, waited: Duration, why: &str) -> Snapshot {
    Snapshot {
        revision: 0,
        documents: vec![Document {
            origin: Origin::Memory(location.into()),
            content: Content::Unread(Diagnostic::error(format!(
                "{location}: etcd did not answer within {waited:?} and there is nothing else to \
                 serve: {why}; start etcd (or fix --config-source), or give --config-cache a \
                 file a previous run wrote"
            ))),
            holds: None,
        }],
    }
}

impl Drop for EtcdSource {
    fn drop(&mut self) {
        self.stop();
    }
}

impl ConfigSource for EtcdSource {
    fn snapshot(&self) -> Snapshot {
        if !self.started.swap(true, Ordering::SeqCst) {
            return self.first_snapshot();
        }
        let asked = Arc::new(Rendezvous::default());
        if self.commands.send(Command::Resync(asked.clone())).is_ok() {
            if let Some(snapshot) = asked.wait(self.startup_timeout, None) {
                return snapshot;
            }
        }
        let report = self.shared.report();
        tracing::warn!(
            source = %report.location,
            "etcd could not be read: the reload uses the last set seen (revision {})",
            report.last_set.as_ref().map_or(0, |s| s.revision)
        );
        report
            .last_set
            .as_ref()
            .map(StoreSet::snapshot)
            .unwrap_or_default()
    }

    fn watch(&self, sink: Sink) {
        self.shared.slot.set_sink(sink);
        let _ = self.commands.send(Command::Watching);
    }

    fn probe(&self, probe: Probe) {
        self.set_probe(probe);
    }

    fn state(&self) -> SourceState {
        let report = self.shared.report();
        SourceState {
            kind: "etcd",
            location: report.location.clone(),
            revision: report.status.applied_revision,
            synced_revision: report.status.synced_revision,
            connected: report.connected,
            stale: report.status.stale,
            last_sync_unix: report.last_sync.map_or(0, |t| {
                t.duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
            }),
            resyncs: report.resyncs.clone(),
            errors: report.errors.clone(),
            rejected: report.rejected,
        }
    }
}

/// A caller waiting for one set (the first snapshot, a SIGHUP's), and
/// the runtime answering it; whoever comes second learns what the first
/// did.
#[derive(Debug, Default)]
pub(super) struct Rendezvous {
    reply: Mutex<Reply>,
    ready: Condvar,
}

#[derive(Debug, Default)]
enum Reply {
    #[default]
    Waiting,
    Ready(Snapshot),
    /// etcd could not be read.
    Failed,
    /// The caller stopped waiting and served this (its cache) instead.
    Gone(Option<StoreSet>),
}

impl Rendezvous {
    /// Hands `snapshot` to the caller; `Err` with what it served instead
    /// when it stopped waiting.
    pub fn give(&self, snapshot: Option<Snapshot>) -> Result<(), Option<Box<StoreSet>>> {
        self.give_with(snapshot, || ())
    }

    /// [`Rendezvous::give`], running `taken` first when the caller still
    /// waits (before it can wake).
    pub fn give_with(
        &self,
        snapshot: Option<Snapshot>,
        taken: impl FnOnce(),
    ) -> Result<(), Option<Box<StoreSet>>> {
        let mut reply = self.reply.lock().unwrap_or_else(PoisonError::into_inner);
        match &mut *reply {
            Reply::Waiting => {
                taken();
                *reply = snapshot.map_or(Reply::Failed, Reply::Ready);
                self.ready.notify_all();
                Ok(())
            }
            Reply::Gone(served) => Err(served.take().map(Box::new)),
            Reply::Ready(_) | Reply::Failed => Err(None),
        }
    }

    /// Whether the caller still waits.
    pub fn waiting(&self) -> bool {
        matches!(
            *self.reply.lock().unwrap_or_else(PoisonError::into_inner),
            Reply::Waiting
        )
    }

    /// Waits up to `timeout` for the set; on a time-out or a failed read,
    /// leaves `instead` (what the caller will serve) for the runtime.
    fn wait(&self, timeout: Duration, instead: Option<StoreSet>) -> Option<Snapshot> {
        let deadline = Instant::now() + timeout;
        let mut reply = self.reply.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            match std::mem::take(&mut *reply) {
                Reply::Ready(snapshot) => return Some(snapshot),
                Reply::Failed => return None,
                Reply::Gone(_) | Reply::Waiting => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                *reply = Reply::Gone(instead);
                return None;
            }
            reply = self
                .ready
                .wait_timeout(reply, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// A set handed to the sink, and what the runtime needs of it afterwards.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    pub set: StoreSet,
    pub config_revision: u64,
}

/// The sink's answer about a [`Pending`].
#[derive(Debug)]
pub(super) struct Outcome {
    pub pending: Pending,
    pub applied: Applied,
}

/// The latest-wins slot between the runtime and the sink thread.
#[derive(Default)]
pub(super) struct Slot {
    inner: Mutex<SlotInner>,
    changed: Condvar,
}

#[derive(Default)]
struct SlotInner {
    pending: Option<Pending>,
    sink: Option<Arc<Sink>>,
    stop: bool,
}

impl Slot {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces whatever waits in the slot: the newest set wins.
    pub fn put(&self, pending: Pending) {
        self.lock().pending = Some(pending);
        self.changed.notify_all();
    }

    fn set_sink(&self, sink: Sink) {
        self.lock().sink = Some(Arc::new(sink));
        self.changed.notify_all();
    }

    fn stop(&self) {
        self.lock().stop = true;
        self.changed.notify_all();
    }

    /// The next set and the sink to give it to; `None` once stopped.
    fn next(&self) -> Option<(Pending, Arc<Sink>)> {
        let mut inner = self.lock();
        loop {
            if inner.stop {
                return None;
            }
            if let (Some(sink), true) = (&inner.sink, inner.pending.is_some()) {
                let sink = sink.clone();
                return inner.pending.take().map(|p| (p, sink));
            }
            inner = self
                .changed
                .wait(inner)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// The `config-sink` thread: each set to the sink, its answer back.
fn hand_over(shared: &Shared, commands: &mpsc::UnboundedSender<Command>) {
    while let Some((pending, sink)) = shared.slot.next() {
        let applied = sink(pending.set.snapshot());
        tracing::debug!(
            revision = pending.set.revision,
            ?applied,
            "the sink answered"
        );
        if commands
            .send(Command::Outcome(Outcome { pending, applied }))
            .is_err()
        {
            return;
        }
    }
}

/// The status key's fields known at start.
fn first_status(config: &SourceConfig) -> InstanceStatus {
    InstanceStatus {
        instance: config.instance_id.clone(),
        host: super::host_name(),
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").into(),
        labels: config.labels.clone(),
        started: crate::accesslog::rfc3339(SystemTime::now()),
        ..InstanceStatus::default()
    }
}

/// FNV-1a 64 over every document's key and text, in order, as hex: equal
/// for two instances serving the same set.
pub fn table_hash(set: &StoreSet) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for r in &set.resources {
        for byte in r
            .key
            .bytes()
            .chain([0])
            .chain(r.text.iter().copied())
            .chain([0])
        {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_hash_is_fnv1a_and_sees_keys_texts_and_order() {
        assert_eq!(table_hash(&StoreSet::default()), "cbf29ce484222325");
        let stored = |key: &str, text: &str| super::super::store::Stored {
            key: key.into(),
            id: None,
            text: text.as_bytes().into(),
            create_revision: 1,
            mod_revision: 1,
        };
        let set = |resources| StoreSet {
            resources,
            ..StoreSet::default()
        };
        let ab = table_hash(&set(vec![stored("a", "x"), stored("b", "y")]));
        assert_eq!(
            ab,
            table_hash(&set(vec![stored("a", "x"), stored("b", "y")]))
        );
        assert_ne!(
            ab,
            table_hash(&set(vec![stored("b", "y"), stored("a", "x")]))
        );
        assert_ne!(
            ab,
            table_hash(&set(vec![stored("a", "xb"), stored("", "y")]))
        );
    }

    #[test]
    fn a_rendezvous_answers_once_and_tells_the_late_side() {
        let r = Rendezvous::default();
        assert!(r.give(Some(Snapshot::default())).is_ok());
        assert!(r.wait(Duration::ZERO, None).is_some());
        let r = Rendezvous::default();
        assert!(
            r.wait(Duration::from_millis(1), Some(StoreSet::default()))
                .is_none()
        );
        assert!(matches!(r.give(Some(Snapshot::default())), Err(Some(_))));
        let r = Rendezvous::default();
        assert!(r.give(None).is_ok());
        assert!(
            r.wait(Duration::from_secs(5), None).is_none(),
            "a failed read answers at once"
        );
    }
}
