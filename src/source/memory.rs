//! A source held in memory: documents handed over by the program itself
//! (tests). Every [`Memory::set`] moves the revision and pushes the new
//! snapshot to the watcher, if one is set, the way a store's watch does.

use std::sync::{Mutex, PoisonError};

use super::{ConfigSource, Document, Sink, Snapshot};

#[derive(Default)]
pub struct Memory {
    current: Mutex<Snapshot>,
    watcher: Mutex<Option<Sink>>,
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memory")
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

impl Memory {
    /// A source holding `documents` (`(name, text)`, in order) at revision 1.
    pub fn new(documents: &[(&str, &str)]) -> Memory {
        let memory = Memory::default();
        memory.replace(documents);
        memory
    }

    /// Replaces every document, at the next revision, and returns it. The
    /// watcher, if any, gets the new snapshot before this returns.
    pub fn set(&self, documents: &[(&str, &str)]) -> u64 {
        let snapshot = self.replace(documents);
        let revision = snapshot.revision;
        let watcher = self.watcher.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sink) = watcher.as_ref() {
            sink(snapshot);
        }
        revision
    }

    fn replace(&self, documents: &[(&str, &str)]) -> Snapshot {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        *current = Snapshot {
            revision: current.revision + 1,
            documents: documents
                .iter()
                .map(|(name, text)| Document::memory(name, text))
                .collect(),
        };
        current.clone()
    }
}

impl ConfigSource for Memory {
    fn snapshot(&self) -> Snapshot {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn watch(&self, sink: Sink) {
        *self.watcher.lock().unwrap_or_else(PoisonError::into_inner) = Some(sink);
    }
}
