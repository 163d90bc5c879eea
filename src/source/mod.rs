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
}

/// Where a watching source hands the snapshots it pushes.
pub type Sink = Box<dyn Fn(Snapshot) + Send + Sync>;

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

/// One text of the configuration as a source holds it (a file; later a
/// store's key), which may hold several YAML documents.
#[derive(Debug, Clone)]
pub struct Document {
    pub origin: Origin,
    pub content: Content,
}

impl Document {
    /// A text handed over in memory, shown as `name` in diagnostics.
    pub fn memory(name: &str, text: &str) -> Document {
        Document {
            origin: Origin::Memory(name.into()),
            content: Content::Text(text.as_bytes().into()),
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
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Memory(name) => f.write_str(name),
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
