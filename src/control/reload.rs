//! Reload: load, validate and compile the whole configuration off the data
//! path, then hand the new table to `publish` (one atomic swap). On any
//! error the running table stays, every error is logged with its location,
//! and the failure is counted.

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
    /// One reload at a time: a SIGHUP and a POST /reload never interleave.
    busy: Mutex<()>,
}

impl Reloader {
    /// `generation` is the generation of the table already running.
    pub fn new(source: Source, generation: u64) -> Reloader {
        Reloader {
            source,
            generation: AtomicU64::new(generation),
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            busy: Mutex::new(()),
        }
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
        let _one_at_a_time = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
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
        let generation = self.generation() + 1;
        table.generation = generation;
        let (listeners, routes, clusters) = (
            table.listeners.len(),
            table.routes.len(),
            table.clusters.len(),
        );
        if let Err(e) = publish(table) {
            self.failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                ?trigger,
                generation = self.generation(),
                "reload failed: {e}; the running configuration stays"
            );
            return Err(vec![e]);
        }
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
        let reloader = Reloader::new(source(&file), 1);

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
}
