//! Reload: load, validate and compile the whole configuration off the data
//! path, then hand the new table to `publish` (one atomic swap). On any
//! error the running table stays, every error is logged with its location,
//! and the failure is counted.
//!
//! A reload is also refused when it looks like a file caught half-written:
//! a file that holds nothing but white space (what `open(O_TRUNC)` leaves),
//! or a table that would close every listener. `--allow-empty-reload`
//! accepts both; a reload that closes some listeners is logged, listener by
//! listener.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::diag::Severity;
use crate::pipeline::Source;
use crate::routing::RouteTable;

/// Why a reload was asked for, for the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// SIGHUP.
    Signal,
    /// `POST /reload` on the admin endpoint.
    Admin,
}

#[derive(Debug)]
pub struct Reloader {
    source: Source,
    generation: AtomicU64,
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
    /// `running` is the table already serving.
    pub fn new(source: Source, running: &RouteTable) -> Reloader {
        Reloader {
            source,
            generation: AtomicU64::new(running.generation),
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            allow_empty: false,
            running: Mutex::new(listening(running)),
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

    pub fn succeeded(&self) -> u64 {
        self.succeeded.load(Ordering::Relaxed)
    }

    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Builds the configuration again and, when it is valid, publishes it
    /// as the next generation. `publish` may still refuse (a listener that
    /// cannot be bound, say); that too keeps the old table. Returns the new
    /// generation, or the errors.
    pub fn reload(
        &self,
        trigger: Trigger,
        publish: impl FnOnce(RouteTable) -> Result<(), String>,
    ) -> Result<u64, Vec<String>> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let build = self.source.build();
        for d in build.diagnostics.iter() {
            match d.severity {
                Severity::Error => tracing::error!(?trigger, "reload: {d}"),
                Severity::Warning => tracing::warn!(?trigger, "reload: {d}"),
                Severity::Info => tracing::info!(?trigger, "reload: {d}"),
            }
        }
        let warnings = build.diagnostics.count(Severity::Warning);
        let Some(mut table) = build.table else {
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
            return Err(errors);
        };
        if let Err(e) = self.guard(&build.blank_files, &table, &running) {
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
    fn guard(
        &self,
        blank: &[std::path::PathBuf],
        table: &RouteTable,
        running: &[Listening],
    ) -> Result<(), String> {
        if self.allow_empty {
            return Ok(());
        }
        if let Some(file) = blank.first() {
            return Err(format!(
                "{} is empty (a file caught while being rewritten?); write the new configuration \
                 to a temporary file and rename it over the old one, or pass --allow-empty-reload \
                 to accept an empty file",
                file.display()
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::LoadOptions;
    use crate::routing::CompileOptions;

    fn source(file: &Path) -> Source {
        Source {
            paths: vec![file.to_owned()],
            load: LoadOptions::default(),
            compile: CompileOptions::default(),
        }
    }

    #[test]
    fn a_bad_reload_keeps_the_old_generation_and_a_good_one_publishes_the_next() {
        let dir = std::env::temp_dir().join(format!("ringway-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("config.yaml");
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples");
        std::fs::write(&file, "kind: [").expect("write");
        let running = RouteTable {
            generation: 1,
            ..RouteTable::default()
        };
        let reloader = Reloader::new(source(&file), &running);

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
        let mut table = source(&file).build().table.expect("valid example");
        table.generation = 1;
        assert!(!table.listeners.is_empty());
        let reloader = Reloader::new(source(&file), &table);
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
        let table = source(&file).build().table.expect("valid example");
        std::fs::write(&file, "\n").expect("blank");
        let strict = Reloader::new(source(&file), &table);
        let errors = strict
            .reload(Trigger::Admin, |_| Ok(()))
            .expect_err("blank");
        assert!(errors[0].contains("--allow-empty-reload"), "{errors:?}");
        assert_eq!(strict.failed(), 1);
        let lenient = Reloader::new(source(&file), &table).allow_empty(true);
        assert!(lenient.reload(Trigger::Admin, |_| Ok(())).is_ok());
    }
}
