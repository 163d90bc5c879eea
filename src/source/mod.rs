//! Where the configuration comes from. A source hands over a [`Snapshot`]:
//! every document of the configuration at one revision, each with its
//! [`Origin`] so that diagnostics keep naming the file (or, later, the key)
//! and line. What happens next (load, compile, publish) is the same for
//! every source and lives in `pipeline.rs` and `control/reload.rs`.
//!
//! - `files.rs`: the paths given with `-c`, read again on every SIGHUP and
//!   `POST /reload`.
//! - `memory.rs`: documents handed over in memory (tests, `load_str`); it
//!   also pushes, as a watching source does.
//! - `crate::fleet::source`: keys of an etcd store, watched; every change
//!   is pushed as a whole snapshot.
#![forbid(unsafe_code)]

pub mod files;
pub mod memory;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::diag::Diagnostic;

pub use files::Files;
pub use memory::Memory;

/// The most bytes one document may hold: a larger one is refused before it
/// is read whole (files) or parsed.
pub const MAX_DOCUMENT_BYTES: usize = 16 << 20;

/// A source of configuration.
///
/// Two ways to hand a snapshot over, so that a source read when asked
/// (files, on SIGHUP) and one that is told about changes (a watch on a
/// store) fit the same reload path:
/// - pulled: [`ConfigSource::snapshot`], at start-up and on every SIGHUP
///   and `POST /reload`;
/// - pushed: [`ConfigSource::watch`], for a source that sees changes on its
///   own and hands each one over as a whole snapshot.
pub trait ConfigSource: fmt::Debug + Send + Sync {
    /// The whole configuration as the source holds it now, read again. A
    /// source that also watches answers with a full re-read (a resync),
    /// never with only what it last pushed.
    fn snapshot(&self) -> Snapshot;

    /// Hands each change the source sees on its own to `sink` as a whole
    /// snapshot, from then on, and returns at once. A source that is only
    /// read when asked keeps this default, which never calls `sink`.
    fn watch(&self, sink: Sink) {
        drop(sink);
    }

    /// Tells a source that reports on the gateway (a store's status key)
    /// how to learn which listeners could not be bound.
    fn probe(&self, probe: Probe) {
        drop(probe);
    }

    /// What the source says about itself (`/config_dump`, metrics).
    fn state(&self) -> SourceState {
        SourceState::default()
    }
}

/// Where a watching source hands the snapshots it pushes. The answer says
/// what became of the snapshot, for the source to report (a store's
/// status key).
pub type Sink = Box<dyn Fn(Snapshot) -> Applied + Send + Sync>;

/// Listeners of the running table that could not be bound, described.
pub type Probe = Box<dyn Fn() -> Vec<String> + Send + Sync>;

/// What became of a pushed snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Served from now on, as this generation.
    Published { generation: u64 },
    /// Refused: the running table stays. Each error names its document
    /// and line.
    Rejected { errors: Vec<String> },
}

impl From<Result<u64, Vec<String>>> for Applied {
    /// What [`crate::control::reload::Reloader::apply`] returns.
    fn from(outcome: Result<u64, Vec<String>>) -> Applied {
        match outcome {
            Ok(generation) => Applied::Published { generation },
            Err(errors) => Applied::Rejected { errors },
        }
    }
}

/// A source's own account of itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SourceState {
    /// `files`, `memory` or `etcd`.
    pub kind: &'static str,
    /// Where: the paths, or the etcd members and prefix.
    pub location: String,
    /// The revision of the configuration served (files: the read count).
    pub revision: u64,
    /// A store: every change up to this revision has been seen.
    pub synced_revision: u64,
    /// A store: reachable now.
    pub connected: bool,
    /// Serving a configuration that may be out of date (the store is
    /// unreachable, or the process started from its cache).
    pub stale: bool,
    /// Seconds since the Unix epoch of the last sync with the store; 0
    /// when never.
    pub last_sync_unix: u64,
    /// Full re-reads of the store, by reason (`initial`, `requested`,
    /// `compacted`, `revision_went_back`, `emptied`).
    pub resyncs: Vec<(&'static str, u64)>,
    /// Errors talking to the store, by reason.
    pub errors: Vec<(&'static str, u64)>,
    /// Snapshots the store pushed that were refused.
    pub rejected: u64,
}

/// Every document of a configuration at one revision, in the order that
/// decides which of two definitions of a resource wins (the later one, as
/// with a second `kubectl apply`).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Moves forward with every snapshot the source hands over: the count
    /// of reads for files, the store's revision for a store.
    pub revision: u64,
    pub documents: Vec<Document>,
}

impl Snapshot {
    /// The documents that hold nothing but white space: what
    /// `open(O_TRUNC)` leaves while a file is being rewritten.
    pub fn blank(&self) -> impl Iterator<Item = &Origin> {
        self.documents.iter().filter_map(|d| match &d.content {
            Content::Text(text) if is_blank(text) => Some(&d.origin),
            Content::Text(_) | Content::Unread(_) => None,
        })
    }
}

/// One text of the configuration as a source holds it (a file, a store's
/// key), which may hold several YAML documents.
#[derive(Debug, Clone)]
pub struct Document {
    pub origin: Origin,
    pub content: Content,
    /// A store keeps one resource per key: the text must define exactly
    /// this resource, nothing else (checked by the loader). `None` for a
    /// file, which may hold any number.
    pub holds: Option<Holds>,
}

/// The one resource a document must define.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holds {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl Document {
    /// A text handed over in memory, shown as `name` in diagnostics.
    pub fn memory(name: &str, text: &str) -> Document {
        Document {
            origin: Origin::Memory(name.into()),
            content: Content::Text(text.as_bytes().into()),
            holds: None,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Content {
    Text(Arc<[u8]>),
    /// The source named a document it could not read (or a directory that
    /// holds none); the diagnostic says why, where the document would have
    /// been, so that reports keep the order of the sources given.
    Unread(Diagnostic),
}

/// Where a document was read: what every diagnostic about it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A file given with `-c`, or found in a directory given there.
    File(PathBuf),
    /// A text handed over in memory, by the name it is shown under.
    Memory(Arc<str>),
    /// A key of an etcd store, at the revision it was last modified.
    Etcd { key: Arc<str>, revision: u64 },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Memory(name) => f.write_str(name),
            Origin::Etcd { key, revision } => write!(f, "etcd:{key}@{revision}"),
        }
    }
}

/// True when `bytes` hold nothing but white space.
pub fn is_blank(bytes: &[u8]) -> bool {
    bytes.iter().all(u8::is_ascii_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_means_only_white_space() {
        assert!(is_blank(b""));
        assert!(is_blank(b" \n\t\r\n"));
        assert!(!is_blank(b"# a comment\n"));
    }
}
