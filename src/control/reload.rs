//! Reload: take a snapshot of the source, load, validate and compile the
//! whole configuration off the data path, then hand the new table to
//! `publish` (one atomic swap). On any error the running table stays, every
//! error is logged with its location, and the failure is counted. The first
//! table, at start-up, is built the same way ([`Reloader::start`]).
//!
//! A reload is also refused when it looks like a file caught half-written:
//! a file that holds nothing but white space (what `open(O_TRUNC)` leaves),
//! or a table that would close every listener. `--allow-empty-reload`
//! accepts both; a reload that closes some listeners is logged, listener by
//! listener.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::diag::{Diagnostics, Severity};
use crate::pipeline::{Build, Pipeline};
use crate::routing::RouteTable;
use crate::source::{ConfigSource, Origin, Snapshot};

/// Why a reload was asked for, for the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// SIGHUP.
    Signal,
    /// `POST /reload` on the admin endpoint.
    Admin,
    /// A watching source pushed a snapshot ([`Reloader::apply`]).
    Watch,
}

/// The first configuration is invalid: nothing to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the configuration is invalid ({errors} errors)")]
pub struct Invalid {
    pub errors: usize,
}

/// Builds every table the gateway serves, the first one included, from one
/// source, and numbers them: the generation lives here.
#[derive(Debug)]
pub struct Reloader {
    source: Arc<dyn ConfigSource>,
    pipeline: Pipeline,
    generation: AtomicU64,
    /// The revision of the snapshot last published.
    revision: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    /// `--allow-empty-reload`: accept blank files and a table without
    /// listeners.
    allow_empty: bool,
    /// The listeners of the table last published. Its lock also makes one
    /// reload at a time: a SIGHUP and a POST /reload never interleave.
    running: Mutex<Vec<Listening>>,
}

/// A listener as a reload compares them: by address, named for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listening {
    name: String,
    address: SocketAddr,
}

fn listening(table: &RouteTable) -> Vec<Listening> {
    table
        .listeners
        .iter()
        .map(|l| Listening {
            name: l.name.clone(),
            address: l.address,
        })
        .collect()
}

impl Reloader {
    /// Nothing is running yet: [`Reloader::start`] builds the first table.
    pub fn new(source: Arc<dyn ConfigSource>, pipeline: Pipeline) -> Reloader {
        Reloader {
            source,
            pipeline,
            generation: AtomicU64::new(0),
            revision: AtomicU64::new(0),
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            allow_empty: false,
            running: Mutex::new(Vec::new()),
        }
    }

    /// Accept a reload that reads a blank file or opens no listener
    /// (`--allow-empty-reload`).
    pub fn allow_empty(mut self, allow: bool) -> Reloader {
        self.allow_empty = allow;
        self
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// The revision of the snapshot the running table was built from.
    pub fn revision(&self) -> u64 {
        self.revision.load(Ordering::Relaxed)
    }

    /// What the source says about itself.
    pub fn source_state(&self) -> crate::source::SourceState {
        self.source.state()
    }

    pub fn succeeded(&self) -> u64 {
        self.succeeded.load(Ordering::Relaxed)
    }

    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Builds the first table (generation 1) and hands it to `publish`,
    /// which starts serving it. Every diagnostic is logged; a configuration
    /// with Gateways and no listener is logged as an error and served (it
    /// refuses every client until a reload opens a listener). Not counted
    /// as a reload, and nothing is guarded: nothing runs yet.
    pub fn start<T, E: From<Invalid>>(
        &self,
        publish: impl FnOnce(RouteTable) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let snapshot = self.source.snapshot();
        let build = self.pipeline.build(&snapshot);
        log_diagnostics(None, &build.diagnostics);
        if build.serves_nothing() {
            tracing::error!(
                gateways = build.gateways,
                "the configuration has Gateways but opens no listener: serving nothing until a reload \
                 opens one (clients get connection refused, as with Istio)"
            );
        }
        let Some(mut table) = build.table else {
            return Err(Invalid {
                errors: build.diagnostics.count(Severity::Error),
            }
            .into());
        };
        let next = listening(&table);
        let generation = self.generation() + 1;
        table.generation = generation;
        let served = publish(table)?;
        *running = next;
        self.generation.store(generation, Ordering::Relaxed);
        self.revision.store(snapshot.revision, Ordering::Relaxed);
        Ok(served)
    }

    /// Reads the source again (SIGHUP, `POST /reload`) and applies what it
    /// holds: see [`Reloader::apply`].
    pub fn reload(
        &self,
        trigger: Trigger,
        publish: impl FnOnce(RouteTable) -> Result<(), String>,
    ) -> Result<u64, Vec<String>> {
        let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let snapshot = self.source.snapshot();
        self.apply_locked(running, &snapshot, trigger, publish)
    }

    /// Builds the configuration of `snapshot` (one a watching source
    /// pushed, or one just read) and, when it is valid, publishes it as the
    /// next generation. `publish` may still refuse (a listener that cannot
    /// be bound, say); that too keeps the old table. Returns the new
    /// generation, or the errors, each naming its document and line.
    pub fn apply(
        &self,
        snapshot: &Snapshot,
        trigger: Trigger,
        publish: impl FnOnce(RouteTable) -> Result<(), String>,
    ) -> Result<u64, Vec<String>> {
        let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        self.apply_locked(running, snapshot, trigger, publish)
    }

    fn apply_locked(
        &self,
        mut running: std::sync::MutexGuard<'_, Vec<Listening>>,
        snapshot: &Snapshot,
        trigger: Trigger,
        publish: impl FnOnce(RouteTable) -> Result<(), String>,
    ) -> Result<u64, Vec<String>> {
        let build = self.pipeline.build(snapshot);
        log_diagnostics(Some(trigger), &build.diagnostics);
        let warnings = build.diagnostics.count(Severity::Warning);
        let mut table = self.valid(trigger, build)?;
        if let Err(e) = self.guard(snapshot.blank(), &table, &running) {
            return Err(self.refused(trigger, e));
        }
        let next = listening(&table);
        let generation = self.generation() + 1;
        table.generation = generation;
        let (listeners, routes, clusters) = (
            table.listeners.len(),
            table.routes.len(),
            table.clusters.len(),
        );
        if let Err(e) = publish(table) {
            return Err(self.refused(trigger, e));
        }
        for gone in running.iter().filter(|l| !next.contains(l)) {
            tracing::warn!(
                ?trigger,
                generation,
                listener = %gone.name,
                address = %gone.address,
                "reload closed a listener: new connections to it are refused"
            );
        }
        *running = next;
        self.generation.store(generation, Ordering::Relaxed);
        self.revision.store(snapshot.revision, Ordering::Relaxed);
        self.succeeded.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            ?trigger,
            generation,
            listeners,
            routes,
            clusters,
            warnings,
            "configuration reloaded"
        );
        Ok(generation)
    }

    /// The table of a valid build; otherwise counts and logs the failure
    /// and returns the errors.
    fn valid(&self, trigger: Trigger, build: Build) -> Result<RouteTable, Vec<String>> {
        if let Some(table) = build.table {
            return Ok(table);
        }
        self.failed.fetch_add(1, Ordering::Relaxed);
        let errors: Vec<String> = build
            .diagnostics
            .errors()
            .map(ToString::to_string)
            .collect();
        tracing::error!(
            ?trigger,
            errors = errors.len(),
            generation = self.generation(),
            "reload failed: the running configuration stays"
        );
        Err(errors)
    }

    /// Counts and logs a reload refused after its configuration compiled.
    fn refused(&self, trigger: Trigger, error: String) -> Vec<String> {
        self.failed.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            ?trigger,
            generation = self.generation(),
            "reload failed: {error}; the running configuration stays"
        );
        vec![error]
    }

    /// What a half-written file looks like: a blank file, or a table that
    /// closes every listener of a running one.
    fn guard<'a>(
        &self,
        mut blank: impl Iterator<Item = &'a Origin>,
        table: &RouteTable,
        running: &[Listening],
    ) -> Result<(), String> {
        if self.allow_empty {
            return Ok(());
        }
        if let Some(file) = blank.next() {
            return Err(format!(
                "{file} is empty (a file caught while being rewritten?); write the new configuration \
                 to a temporary file and rename it over the old one, or pass --allow-empty-reload \
                 to accept an empty file"
            ));
        }
        if table.listeners.is_empty() && !running.is_empty() {
            let names: Vec<String> = running
                .iter()
                .map(|l| format!("{} ({})", l.name, l.address))
                .collect();
            return Err(format!(
                "the new configuration opens no listener and would close all {}: {}; \
                 a half-written file? pass --allow-empty-reload to accept it",
                running.len(),
                names.join(", ")
            ));
        }
        Ok(())
    }
}

/// Every diagnostic of a build, at its severity; `None` is start-up.
fn log_diagnostics(trigger: Option<Trigger>, diagnostics: &Diagnostics) {
    for d in diagnostics.iter() {
        match (trigger, d.severity) {
            (None, Severity::Error) => tracing::error!("{d}"),
            (None, Severity::Warning) => tracing::warn!("{d}"),
            (None, Severity::Info) => tracing::info!("{d}"),
            (Some(trigger), Severity::Error) => tracing::error!(?trigger, "reload: {d}"),
            (Some(trigger), Severity::Warning) => tracing::warn!(?trigger, "reload: {d}"),
            (Some(trigger), Severity::Info) => tracing::info!(?trigger, "reload: {d}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::source::{Applied, Files, Memory};

    fn reloader(file: &Path) -> Reloader {
        Reloader::new(
            Arc::new(Files::new(vec![file.to_owned()])),
            Pipeline::default(),
        )
    }

    /// Starts `reloader` on its source; the first table.
    fn start(reloader: &Reloader) -> RouteTable {
        reloader.start(Ok::<_, Invalid>).expect("valid example")
    }

    #[test]
    fn a_bad_reload_keeps_the_old_generation_and_a_good_one_publishes_the_next() {
        let dir = std::env::temp_dir().join(format!("ringway-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("config.yaml");
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples");
        std::fs::copy(examples.join("kafka-rcmd.yaml"), &file).expect("copy");
        let reloader = reloader(&file);
        assert_eq!(start(&reloader).generation, 1);
        std::fs::write(&file, "kind: [").expect("write");

        let mut published = Vec::new();
        let errors = reloader.reload(Trigger::Admin, |t| {
            published.push(t.generation);
            Ok(())
        });
        let errors = errors.expect_err("invalid YAML");
        assert!(errors[0].contains("config.yaml:"), "{errors:?}");
        assert_eq!(
            (
                reloader.generation(),
                reloader.failed(),
                reloader.succeeded()
            ),
            (1, 1, 0)
        );

        std::fs::copy(examples.join("kafka-rcmd.yaml"), &file).expect("copy");
        assert_eq!(
            reloader.reload(Trigger::Signal, |t| {
                published.push(t.generation);
                Ok(())
            }),
            Ok(2)
        );
        assert_eq!(published, vec![2]);
        assert_eq!(
            (
                reloader.generation(),
                reloader.failed(),
                reloader.succeeded()
            ),
            (2, 1, 1)
        );

        let refused = reloader.reload(Trigger::Signal, |_| {
            Err("cannot bind 0.0.0.0:16354".to_owned())
        });
        assert_eq!(refused, Err(vec!["cannot bind 0.0.0.0:16354".to_owned()]));
        assert_eq!((reloader.generation(), reloader.failed()), (2, 2));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    /// A file that is being rewritten: a two-listener configuration, then
    /// every prefix of it that ends at a line (what a reader sees while a
    /// tool writes it in place), then the whole file again.
    #[test]
    fn a_half_written_file_never_closes_every_listener() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("config.yaml");
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples");
        let whole = std::fs::read_to_string(examples.join("kafka-rcmd.yaml")).expect("example");
        std::fs::write(&file, &whole).expect("write");
        let reloader = reloader(&file);
        let table = start(&reloader);
        assert_eq!(table.generation, 1);
        assert!(!table.listeners.is_empty());
        let mut closed_all = Vec::new();
        let mut refused = 0;
        let mut lines = 0;
        for (cut, _) in whole.match_indices('\n').chain([(0, "")]) {
            lines += 1;
            std::fs::write(&file, &whole[..cut]).expect("truncate");
            let mut listeners = None;
            match reloader.reload(Trigger::Signal, |t| {
                listeners = Some(t.listeners.len());
                Ok(())
            }) {
                Ok(_) if listeners == Some(0) => closed_all.push(cut),
                Ok(_) => {}
                Err(errors) => {
                    refused += 1;
                    if cut == 0 {
                        assert!(errors[0].contains("config.yaml is empty"), "{errors:?}");
                        assert!(errors[0].contains("rename"), "{errors:?}");
                    }
                }
            }
            std::fs::write(&file, &whole).expect("restore");
            reloader
                .reload(Trigger::Signal, |_| Ok(()))
                .expect("the whole file reloads");
        }
        assert!(lines > 10, "the example has {lines} lines");
        assert!(refused > 0);
        assert_eq!(
            closed_all,
            Vec::<usize>::new(),
            "prefixes that closed every listener"
        );
    }

    #[test]
    fn allow_empty_accepts_a_blank_file_and_no_listener() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("config.yaml");
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples");
        std::fs::copy(examples.join("kafka-rcmd.yaml"), &file).expect("copy");
        let strict = reloader(&file);
        start(&strict);
        std::fs::write(&file, "\n").expect("blank");
        let errors = strict
            .reload(Trigger::Admin, |_| Ok(()))
            .expect_err("blank");
        assert!(errors[0].contains("--allow-empty-reload"), "{errors:?}");
        assert_eq!(strict.failed(), 1);
        std::fs::copy(examples.join("kafka-rcmd.yaml"), &file).expect("copy");
        let lenient = reloader(&file).allow_empty(true);
        start(&lenient);
        std::fs::write(&file, "\n").expect("blank");
        assert!(lenient.reload(Trigger::Admin, |_| Ok(())).is_ok());
    }

    const BROKEN: &str = "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selectr: {istio: ingressgateway}
";

    fn kafka() -> String {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples");
        std::fs::read_to_string(examples.join("kafka-rcmd.yaml")).expect("example")
    }

    #[test]
    fn a_reload_takes_the_sources_next_revision_and_a_bad_one_names_its_document() {
        let kafka = kafka();
        let source = Arc::new(Memory::new(&[("kafka.yaml", &kafka)]));
        let reloader = Reloader::new(source.clone(), Pipeline::default());
        assert_eq!(start(&reloader).generation, 1);
        assert_eq!((reloader.generation(), reloader.revision()), (1, 1));

        assert_eq!(source.set(&[("kafka.yaml", &kafka)]), 2);
        assert_eq!(reloader.reload(Trigger::Signal, |_| Ok(())), Ok(2));
        assert_eq!((reloader.generation(), reloader.revision()), (2, 2));

        assert_eq!(
            source.set(&[("kafka.yaml", &kafka), ("broken.yaml", BROKEN)]),
            3
        );
        let mut published = false;
        let errors = reloader
            .reload(Trigger::Admin, |_| {
                published = true;
                Ok(())
            })
            .expect_err("unknown field");
        assert!(!published);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("broken.yaml:5: Gateway default/gw: selectr: unknown field"),
            "{errors:?}"
        );
        assert_eq!(
            (
                reloader.generation(),
                reloader.revision(),
                reloader.failed(),
                reloader.succeeded()
            ),
            (2, 2, 1, 1)
        );
    }

    /// A source that pushes (a watch) goes through the same checks.
    #[test]
    fn a_pushed_snapshot_is_applied_like_a_pulled_one() {
        let kafka = kafka();
        let source = Arc::new(Memory::new(&[("kafka.yaml", &kafka)]));
        let reloader = Arc::new(Reloader::new(source.clone(), Pipeline::default()));
        start(&reloader);
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let (to, seen) = (Arc::clone(&reloader), Arc::clone(&outcomes));
        source.watch(Box::new(move |snapshot| {
            let outcome = to.apply(&snapshot, Trigger::Watch, |_| Ok(()));
            seen.lock()
                .expect("outcomes")
                .push((snapshot.revision, outcome.clone()));
            Applied::from(outcome)
        }));
        source.set(&[("broken.yaml", BROKEN)]);
        source.set(&[("kafka.yaml", &kafka), ("also.yaml", "\n")]);
        source.set(&[("kafka.yaml", &kafka)]);
        let outcomes = outcomes.lock().expect("outcomes");
        let summary: Vec<(u64, Result<u64, usize>)> = outcomes
            .iter()
            .map(|(revision, outcome)| (*revision, outcome.clone().map_err(|e| e.len())))
            .collect();
        assert_eq!(summary, vec![(2, Err(1)), (3, Err(1)), (4, Ok(2))]);
        assert!(
            outcomes[1].1.clone().expect_err("blank")[0].contains("also.yaml is empty"),
            "{outcomes:?}"
        );
        assert_eq!((reloader.generation(), reloader.revision()), (2, 4));
    }
}
