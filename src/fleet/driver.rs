//! The `config-source` thread's loop: performs what the watch state
//! machine (`watch.rs`) asks (reads, watches, back-offs), feeds it what
//! etcd says, keeps the status key alive (`registration.rs`), and hands sets over
//! (`source.rs`). Everything arrives as a [`Command`] on one channel (the
//! watch stream's reader task, the timers, the callers, the sink thread),
//! so the loop is a plain `recv` and the state has one owner.
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use etcd_client::{EventType, WatchOptions, WatchRequestSender, WatchResponse};
use tokio::sync::mpsc;

use super::keys::Keys;
use super::members::{CALL_TIMEOUT, EtcdError, Members, describe};
use super::registration::Registration;
use super::source::{Outcome, Pending, Rendezvous, Shared, SourceConfig, table_hash};
use super::status::MAX_ERRORS;
use super::store::{self, StoreSet, Stored};
use super::watch::{Action, Event, Jitter, Publication, Reason, Response, Watch};
use crate::source::Applied;

/// How often the watch asks etcd for a progress notification (etcd 3.4's
/// own default interval is 10 minutes): it keeps `R` current on a quiet
/// prefix, so a compaction rarely forces a resync (APISIX #12514).
pub const PROGRESS_EVERY: Duration = Duration::from_secs(30);
/// How often the loop looks at its clocks (progress, keep-alive).
const TICK: Duration = Duration::from_millis(500);

/// What reaches the loop.
pub(super) enum Command {
    /// SIGHUP or `POST /reload`: read everything, answer the caller.
    Resync(Arc<Rendezvous>),
    /// The sink thread's answer.
    Outcome(Outcome),
    /// A sink was set: the first set is served from now on.
    Watching,
    /// What the watch stream `epoch` said.
    Stream {
        epoch: u64,
        item: Result<Option<WatchResponse>, etcd_client::Error>,
    },
    /// The back-off `epoch` has passed.
    Timer {
        epoch: u64,
    },
    Tick,
    Stop,
}

/// The open watch stream.
struct Stream {
    member: usize,
    sender: WatchRequestSender,
    reader: tokio::task::JoinHandle<()>,
    asked_progress: Instant,
    /// When the stream last said anything.
    heard: Instant,
}

pub(super) struct Driver {
    members: Members,
    keys: Keys,
    watch: Watch,
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
    receiver: mpsc::UnboundedReceiver<Command>,
    /// The caller waiting for a set (the first snapshot, a SIGHUP).
    waiting: Option<Arc<Rendezvous>>,
    /// Whether `waiting` is the first snapshot (it waits out its whole
    /// time-out rather than take "etcd unreachable" at the first failure).
    waiting_initial: bool,
    /// The set the first snapshot took: cached once a sink is set (the
    /// supervisor sets one only after that set is served).
    initial_set: Option<Publication>,
    stream: Option<Stream>,
    epoch: u64,
    timer_epoch: u64,
    /// The status key under its lease.
    registration: Registration,
    cache: Option<PathBuf>,
}

impl Driver {
    pub fn new(
        members: Members,
        keys: Keys,
        config: &SourceConfig,
        shared: Arc<Shared>,
        commands: mpsc::UnboundedSender<Command>,
        receiver: mpsc::UnboundedReceiver<Command>,
        initial: Arc<Rendezvous>,
    ) -> Driver {
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id());
        let registration = Registration::new(&keys, &config.instance_id, config.status_ttl);
        let mut watch = Watch::new(Jitter::new(seed));
        // A cache holding resources means the store was populated: an
        // empty store without its fence at start-up is then lost, not
        // served (the first snapshot serves the cache instead).
        if let Some(Ok(Some(cached))) = config
            .cache
            .as_deref()
            .map(|p| super::cache::read(p, &keys))
        {
            watch.serve_instead(&cached.set);
        }
        Driver {
            members,
            keys,
            watch,
            shared,
            commands,
            receiver,
            waiting: Some(initial),
            waiting_initial: true,
            initial_set: None,
            stream: None,
            epoch: 0,
            timer_epoch: 0,
            registration,
            cache: config.cache.clone(),
        }
    }

    /// The loop, until [`Command::Stop`] (or every sender is gone).
    pub async fn run(mut self) {
        let ticks = self.commands.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(TICK);
            loop {
                interval.tick().await;
                if ticks.send(Command::Tick).is_err() {
                    return;
                }
            }
        });
        let actions = self.watch.start();
        self.act(actions).await;
        while let Some(command) = self.receiver.recv().await {
            let actions = match command {
                Command::Stop => break,
                Command::Resync(caller) => {
                    if let Some(earlier) = self.waiting.replace(caller) {
                        if !self.waiting_initial {
                            // Two reloads at once: the earlier one takes the last set.
                            let _ = earlier.give(None);
                        }
                    }
                    self.waiting_initial = false;
                    self.timer_epoch += 1;
                    self.watch.request_resync()
                }
                Command::Outcome(outcome) => {
                    self.on_outcome(outcome);
                    Vec::new()
                }
                Command::Watching => {
                    self.on_watching();
                    Vec::new()
                }
                Command::Stream { epoch, item } => self.on_stream(epoch, item),
                Command::Timer { epoch } if epoch == self.timer_epoch => self.watch.on_timer(),
                Command::Timer { .. } => Vec::new(),
                Command::Tick => self.on_tick().await,
            };
            self.act(actions).await;
            if self.shared.report().connected {
                self.registration
                    .flush(&mut self.members, &self.shared)
                    .await;
            }
        }
        self.close_stream();
        self.registration.revoke(&mut self.members).await;
    }

    async fn act(&mut self, actions: Vec<Action>) {
        let mut queue: VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            tracing::trace!(?action, "act");
            // Counted before a caller is answered: it may look at once.
            self.report_counts();
            let more = match action {
                Action::Read { reason } => self.read(reason).await,
                Action::Watch { from } => self.open_stream(from).await,
                Action::Backoff(delay) => {
                    self.arm_timer(delay);
                    Vec::new()
                }
                Action::Publish(publication) => self.hand_over(publication),
                Action::Answer { set, changed } => self.answer(set, changed),
                Action::Synced { revision } => {
                    self.synced(revision);
                    Vec::new()
                }
                Action::Lost { error } => {
                    tracing::error!(source = %self.location(), "{error}");
                    Vec::new()
                }
            };
            queue.extend(more);
        }
        self.report_counts();
    }

    fn report_counts(&self) {
        let mut report = self.shared.report();
        report.resyncs = self.watch.resyncs();
        report.errors = self.watch.errors();
    }

    async fn read(&mut self, reason: Reason) -> Vec<Action> {
        self.close_stream();
        match store::read(&mut self.members, &self.keys, None).await {
            Ok(set) => {
                tracing::info!(
                    source = %self.location(),
                    reason = reason.label(),
                    revision = set.revision,
                    resources = set.resources.len(),
                    "read the whole configuration"
                );
                self.watch.on_read(set)
            }
            Err(e) => {
                self.failed(&e);
                self.watch.on_read_failed()
            }
        }
    }

    async fn open_stream(&mut self, from: u64) -> Vec<Action> {
        self.close_stream();
        let (member, mut client) = match self.members.stream_client().await {
            Ok(found) => found,
            Err(e) => {
                self.failed(&e);
                return self.watch.on_stream_error();
            }
        };
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(i64::try_from(from).unwrap_or(i64::MAX))
            .with_progress_notify()
            .with_prev_key();
        let opened = tokio::time::timeout(
            CALL_TIMEOUT,
            client.watch(self.keys.config(), Some(options)),
        )
        .await;
        let stream = match opened {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::warn!(source = %self.location(), member = %self.members.endpoints()[member], "cannot watch: {}", describe(&e));
                self.members.failed(member);
                self.disconnected();
                return self.watch.on_stream_error();
            }
            Err(_) => {
                tracing::warn!(source = %self.location(), member = %self.members.endpoints()[member], "cannot watch: no answer within {CALL_TIMEOUT:?}");
                self.members.failed(member);
                self.disconnected();
                return self.watch.on_stream_error();
            }
        };
        let (mut sender, mut responses) = stream.split();
        // Answered once every event up to now was sent: the first sync.
        let _ = sender.request_progress().await;
        self.epoch += 1;
        let (epoch, commands) = (self.epoch, self.commands.clone());
        let reader = tokio::spawn(async move {
            loop {
                let item = responses.message().await;
                let end = !matches!(item, Ok(Some(_)));
                if commands.send(Command::Stream { epoch, item }).is_err() || end {
                    return;
                }
            }
        });
        tracing::debug!(source = %self.location(), member = %self.members.endpoints()[member], from, "watching");
        self.stream = Some(Stream {
            member,
            sender,
            reader,
            asked_progress: Instant::now(),
            heard: Instant::now(),
        });
        Vec::new()
    }

    fn close_stream(&mut self) {
        if let Some(stream) = self.stream.take() {
            stream.reader.abort();
        }
        self.epoch += 1;
    }

    fn on_stream(
        &mut self,
        epoch: u64,
        item: Result<Option<WatchResponse>, etcd_client::Error>,
    ) -> Vec<Action> {
        if epoch != self.epoch {
            return Vec::new();
        }
        let member = self.stream.as_ref().map_or(0, |s| s.member);
        if let Some(stream) = &mut self.stream {
            stream.heard = Instant::now();
        }
        let response = match item {
            Ok(Some(response)) => response,
            Ok(None) | Err(_) => {
                let why = match &item {
                    Err(e) => describe(e),
                    _ => "the stream ended".into(),
                };
                tracing::warn!(source = %self.location(), member = %self.members.endpoints()[member], "watch broke: {why}");
                self.members.failed(member);
                self.close_stream();
                self.disconnected();
                return self.watch.on_stream_error();
            }
        };
        let (revision, cluster_id) = response.header().map_or((0, 0), |h| {
            (u64::try_from(h.revision()).unwrap_or(0), h.cluster_id())
        });
        tracing::debug!(
            revision,
            created = response.created(),
            canceled = response.canceled(),
            events = response.events().len(),
            "watch response"
        );
        if response.canceled() {
            let compact = u64::try_from(response.compact_revision()).unwrap_or(0);
            tracing::warn!(source = %self.location(), compact_revision = compact, "watch canceled by etcd: {}", response.cancel_reason());
            if compact == 0 {
                self.members.failed(member);
            }
            self.close_stream();
            return self.watch.on_canceled(compact);
        }
        if response.created() {
            return self.watch.on_created(revision, cluster_id);
        }
        let events = response
            .events()
            .iter()
            .filter_map(|e| self.event(e))
            .collect();
        self.watch.on_response(Response {
            revision,
            cluster_id,
            events,
        })
    }

    fn event(&self, event: &etcd_client::Event) -> Option<Event> {
        let kv = event.kv()?;
        Some(match event.event_type() {
            EventType::Put => Event::Put(Stored::from_kv(&self.keys, kv)),
            EventType::Delete => Event::Delete {
                key: String::from_utf8_lossy(kv.key()).into_owned(),
                revision: u64::try_from(kv.mod_revision()).unwrap_or(0),
            },
        })
    }

    fn arm_timer(&mut self, delay: Duration) {
        self.timer_epoch += 1;
        let (epoch, commands) = (self.timer_epoch, self.commands.clone());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = commands.send(Command::Timer { epoch });
        });
    }

    /// Into the slot for the sink, or to the first snapshot if it still
    /// waits (etcd answered late, within its time-out).
    fn hand_over(&mut self, publication: Publication) -> Vec<Action> {
        tracing::debug!(
            revision = publication.set.revision,
            config_revision = publication.config_revision,
            resources = publication.set.resources.len(),
            "handing over"
        );
        self.shared.report().last_set = Some(publication.set.clone());
        if let Some(waiting) = self.waiting.take_if(|_| self.waiting_initial) {
            match self.give(&waiting, &publication) {
                Ok(()) => {
                    self.taken(publication);
                    return Vec::new();
                }
                Err(served) => {
                    if let Some(actions) = self.served_instead(served) {
                        return actions;
                    }
                }
            }
        }
        self.shared.slot.put(Pending {
            set: publication.set,
            config_revision: publication.config_revision,
        });
        Vec::new()
    }

    /// The first snapshot gave up waiting and served its cache (or, with
    /// `None`, nothing): the store is compared with that from now on.
    fn served_instead(&mut self, served: Option<Box<StoreSet>>) -> Option<Vec<Action>> {
        self.waiting_initial = false;
        served.map(|set| self.watch.serve_instead(&set))
    }

    fn answer(&mut self, set: Option<Publication>, changed: bool) -> Vec<Action> {
        let Some(waiting) = self.waiting.take() else {
            return match set {
                Some(p) if changed => self.hand_over(p),
                _ => Vec::new(),
            };
        };
        let Some(publication) = set else {
            if self.waiting_initial && waiting.waiting() {
                // The first snapshot waits out its time-out: a later read may answer.
                self.waiting = Some(waiting);
                return Vec::new();
            }
            return match waiting.give(None) {
                Err(served) if self.waiting_initial => {
                    self.served_instead(served).unwrap_or_default()
                }
                _ => Vec::new(),
            };
        };
        self.shared.report().last_set = Some(publication.set.clone());
        match self.give(&waiting, &publication) {
            Ok(()) => {
                self.taken(publication);
                Vec::new()
            }
            Err(served) if self.waiting_initial => match self.served_instead(served) {
                Some(actions) => actions,
                None if changed => self.hand_over(publication),
                None => Vec::new(),
            },
            Err(_) if changed => self.hand_over(publication),
            Err(_) => Vec::new(),
        }
    }

    /// A caller took `publication` to serve it.
    fn taken(&mut self, publication: Publication) {
        if self.waiting_initial {
            self.waiting_initial = false;
            self.initial_set = Some(publication);
        }
        self.registration.dirty = true;
    }

    /// Hands `publication` to a waiting caller. The first snapshot's
    /// serving is recorded before the caller wakes: it may look at
    /// `state()` at once.
    fn give(
        &self,
        waiting: &Rendezvous,
        publication: &Publication,
    ) -> Result<(), Option<Box<StoreSet>>> {
        let snapshot = Some(publication.set.snapshot());
        if !self.waiting_initial {
            return waiting.give_with(snapshot, || ());
        }
        waiting.give_with(snapshot, || {
            let mut report = self.shared.report();
            report.status.generation = report.status.generation.max(1);
            report.status.applied_revision = publication.config_revision;
            report.status.table_hash = table_hash(&publication.set);
        })
    }

    fn on_watching(&mut self) {
        if let Some(p) = self.initial_set.take() {
            self.write_cache(&p.set, p.config_revision);
        }
    }

    fn on_outcome(&mut self, outcome: Outcome) {
        let Outcome { pending, applied } = outcome;
        let mut report = self.shared.report();
        match applied {
            Applied::Published { generation } => {
                report.status.generation = generation;
                report.status.applied_revision = pending.config_revision;
                report.status.table_hash = table_hash(&pending.set);
                if report.status.rejected_revision <= pending.config_revision {
                    // Only a refusal newer than what is served is news.
                    report.status.rejected_revision = 0;
                    report.status.errors.clear();
                }
                drop(report);
                self.write_cache(&pending.set, pending.config_revision);
            }
            Applied::Rejected { errors } => {
                tracing::error!(source = %report.location, revision = pending.config_revision, errors = errors.len(), "the store's configuration was rejected: the running table stays");
                report.rejected += 1;
                report.status.rejected_revision = pending.config_revision;
                report.status.errors = errors.into_iter().take(MAX_ERRORS).collect();
            }
        }
        self.registration.dirty = true;
    }

    fn write_cache(&self, set: &StoreSet, config_revision: u64) {
        if let Some(path) = &self.cache {
            if let Err(e) = super::cache::write(path, &self.keys, set, config_revision) {
                tracing::warn!("{e}");
            }
        }
    }

    fn synced(&mut self, revision: u64) {
        let mut report = self.shared.report();
        let moved = report.status.synced_revision != revision || !report.connected;
        report.status.synced_revision = revision;
        report.status.stale = false;
        report.connected = true;
        report.last_sync = Some(SystemTime::now());
        self.registration.dirty |= moved;
    }

    /// A read or a watch failed; unreachable makes the set stale.
    fn failed(&mut self, error: &EtcdError) {
        tracing::warn!(source = %self.location(), "{error}");
        if !error.reached() {
            self.disconnected();
        }
    }

    /// The watch is down: what is served may be out of date until the
    /// next sync, which re-puts the status key.
    fn disconnected(&mut self) {
        let mut report = self.shared.report();
        report.connected = false;
        report.status.stale = true;
        self.registration.dirty = true;
    }

    fn location(&self) -> String {
        self.shared.report().location.clone()
    }

    /// Progress requests, a watch gone silent, the lease's keep-alive.
    async fn on_tick(&mut self) -> Vec<Action> {
        if let Some(stream) = &mut self.stream {
            if stream.heard.elapsed() >= 2 * PROGRESS_EVERY {
                // Two progress requests unanswered: a stream that silently
                // stopped (APISIX #13067's case). Watch again from R + 1:
                // nothing is skipped.
                let member = stream.member;
                tracing::warn!(source = %self.location(), member = %self.members.endpoints()[member], "the watch has been silent for {:?}: watching again", 2 * PROGRESS_EVERY);
                self.members.failed(member);
                self.close_stream();
                return self.watch.on_stream_error();
            }
            if stream.asked_progress.elapsed() >= PROGRESS_EVERY {
                stream.asked_progress = Instant::now();
                let _ = stream.sender.request_progress().await;
            }
        }
        if !self.shared.report().connected {
            return Vec::new();
        }
        self.registration
            .tick(&mut self.members, &self.shared)
            .await;
        Vec::new()
    }
}
