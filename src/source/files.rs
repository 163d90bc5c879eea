//! The files source: the paths given with `-c`, read whole again for every
//! snapshot (start-up, SIGHUP, `POST /reload`). A directory stands for its
//! `*.yaml`/`*.yml` files, sorted, not recursive.
//!
//! Which files a `-c PATH` names, and reading each one safely: a size
//! checked before reading, never more than the limit plus one byte read,
//! nothing but regular files (a FIFO would block a reload forever,
//! `/dev/zero` would fill memory), and a word about every `*.yaml` entry of
//! a directory that is skipped (a dangling or looping symlink, a socket).

use std::fs::OpenOptions;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{ConfigSource, Content, Document, MAX_DOCUMENT_BYTES, Origin, Snapshot};
use crate::diag::Diagnostic;

/// The paths given with `-c`; each snapshot reads them again.
#[derive(Debug)]
pub struct Files {
    paths: Vec<PathBuf>,
    limit: u64,
    /// Snapshots taken so far: the revision of the next one is this plus one.
    reads: AtomicU64,
}

impl Files {
    pub fn new(paths: Vec<PathBuf>) -> Files {
        Files {
            paths,
            limit: MAX_DOCUMENT_BYTES as u64,
            reads: AtomicU64::new(0),
        }
    }
}

impl ConfigSource for Files {
    /// Every file, in the order given (a directory's files sorted in its
    /// place). A file that cannot be read, a directory entry skipped and a
    /// directory that holds no file take the place of their documents, so
    /// that one run reports every problem in the order the paths were given.
    fn snapshot(&self) -> Snapshot {
        let revision = self.reads.fetch_add(1, Ordering::Relaxed) + 1;
        let mut documents = Vec::new();
        for path in &self.paths {
            for file in expand(path, &mut documents) {
                let content = match read_bounded(&file, self.limit) {
                    Ok(bytes) => Content::Text(bytes.into()),
                    Err(e) => Content::Unread(Diagnostic::error(e.to_string())),
                };
                documents.push(Document {
                    origin: Origin::File(file),
                    content,
                    holds: None,
                });
            }
        }
        Snapshot {
            revision,
            documents,
        }
    }

    fn state(&self) -> super::SourceState {
        super::SourceState {
            kind: "files",
            location: self
                .paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(","),
            revision: self.reads.load(Ordering::Relaxed),
            ..super::SourceState::default()
        }
    }
}

/// The files `path` names: itself, or a directory's files. What a
/// directory leaves out is pushed to `documents` as unread, in its place.
fn expand(path: &Path, documents: &mut Vec<Document>) -> Vec<PathBuf> {
    if !path.is_dir() {
        return vec![path.to_owned()];
    }
    let unread = |origin: PathBuf, diagnostic| Document {
        origin: Origin::File(origin),
        content: Content::Unread(diagnostic),
        holds: None,
    };
    let listing = match list_dir(path) {
        Ok(listing) => listing,
        Err(e) => {
            documents.push(unread(
                path.to_owned(),
                Diagnostic::error(format!("cannot read directory {}: {e}", path.display())),
            ));
            return Vec::new();
        }
    };
    for note in listing.skipped {
        documents.push(unread(path.to_owned(), Diagnostic::warning(note)));
    }
    if listing.files.is_empty() {
        documents.push(unread(
            path.to_owned(),
            Diagnostic::warning(format!(
                "directory {} holds no *.yaml or *.yml file",
                path.display()
            )),
        ));
    }
    listing.files
}

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error(
        "{path} is {kind}, not a regular file; ringway reads configuration only from regular files"
    )]
    NotRegular { path: String, kind: &'static str },
    #[error(
        "{path} is {size} bytes, more than the limit of {limit} bytes; split it into several files in one directory"
    )]
    TooLarge { path: String, size: u64, limit: u64 },
}

/// Reads `path` whole when it is a regular file of at most `limit` bytes.
/// The file is opened without blocking (a FIFO opened for reading would wait
/// for a writer) and checked through its descriptor, so a file swapped
/// after a look by name is still checked; at most `limit + 1` bytes are
/// read, in case it grows while being read.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    let shown = || path.display().to_string();
    let io = |source| ReadError::Io {
        path: shown(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    let kind = meta.file_type();
    if !kind.is_file() {
        return Err(ReadError::NotRegular {
            path: shown(),
            kind: kind_name(&kind),
        });
    }
    if meta.len() > limit {
        return Err(ReadError::TooLarge {
            path: shown(),
            size: meta.len(),
            limit,
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    let read = Read::by_ref(&mut { file })
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes);
    read.map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge {
            path: shown(),
            size: bytes.len() as u64,
            limit,
        });
    }
    Ok(bytes)
}

fn kind_name(kind: &std::fs::FileType) -> &'static str {
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO (named pipe)"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// The files a directory contributes (its `*.yaml` and `*.yml` entries,
/// sorted, not recursive), and a note for each such entry that is skipped.
pub struct Listing {
    pub files: Vec<PathBuf>,
    pub skipped: Vec<String>,
}

/// Lists `dir`. Entries whose name does not end in `.yaml`/`.yml` are not
/// looked at; those that do but cannot be read as a file are named in
/// `skipped` with the reason, so that a symlink left dangling by a
/// deployment tool does not silently drop a Gateway.
pub fn list_dir(dir: &Path) -> io::Result<Listing> {
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let Ok(entry) = entry else { continue };
        let path = entry.path();
        let yaml = path
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml");
        if !yaml {
            continue;
        }
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => files.push(path),
            Ok(meta) if meta.is_dir() => {
                skipped.push(format!(
                    "{} is a directory; directories are not read recursively",
                    path.display()
                ));
            }
            Ok(meta) => skipped.push(format!(
                "{} is {}, not a regular file; skipped",
                path.display(),
                kind_name(&meta.file_type())
            )),
            Err(e) => skipped.push(symlink_problem(&path, &e)),
        }
    }
    files.sort();
    skipped.sort();
    Ok(Listing { files, skipped })
}

fn symlink_problem(path: &Path, error: &io::Error) -> String {
    let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    let target = std::fs::read_link(path)
        .map(|t| t.display().to_string())
        .unwrap_or_default();
    match (is_link, error.raw_os_error()) {
        (true, Some(libc::ELOOP)) => format!(
            "{} is a symlink that loops (-> {target}); skipped",
            path.display()
        ),
        (true, Some(libc::ENOENT)) => format!(
            "{} is a dangling symlink (-> {target}, which does not exist); skipped",
            path.display()
        ),
        _ => format!("{}: {error}; skipped", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn reads_a_regular_file_up_to_the_limit_and_not_a_byte_more() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("a.yaml");
        std::fs::write(&file, b"12345678").expect("write");
        assert_eq!(read_bounded(&file, 8).expect("read"), b"12345678");
        let e = read_bounded(&file, 7).expect_err("too large");
        assert!(
            e.to_string().contains("8 bytes, more than the limit of 7"),
            "{e}"
        );
    }

    #[test]
    fn refuses_devices_fifos_and_directories_without_blocking() {
        let dir = tempfile::tempdir().expect("dir");
        let fifo = dir.path().join("f.yaml");
        // A FIFO with no writer: a blocking open would never return.
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo {}", fifo.display());
        struct Case {
            path: PathBuf,
            kind: &'static str,
        }
        for case in [
            Case {
                path: fifo.clone(),
                kind: "a FIFO",
            },
            Case {
                path: "/dev/zero".into(),
                kind: "a character device",
            },
            Case {
                path: dir.path().to_owned(),
                kind: "a directory",
            },
        ] {
            let e = read_bounded(&case.path, 1 << 20).expect_err("not regular");
            assert!(e.to_string().contains(case.kind), "{e}");
        }
    }

    #[test]
    fn a_listing_names_dangling_and_looping_symlinks() {
        let dir = tempfile::tempdir().expect("dir");
        let d = dir.path();
        std::fs::write(d.join("b.yaml"), "x").expect("write");
        std::fs::write(d.join("a.yml"), "x").expect("write");
        std::fs::write(d.join("notes.txt"), "x").expect("write");
        symlink(d.join("gone.yaml"), d.join("dangling.yaml")).expect("symlink");
        symlink(d.join("loop2.yaml"), d.join("loop1.yaml")).expect("symlink");
        symlink(d.join("loop1.yaml"), d.join("loop2.yaml")).expect("symlink");
        symlink(d.join("b.yaml"), d.join("c.yaml")).expect("symlink");
        let listing = list_dir(d).expect("list");
        let names: Vec<_> = listing
            .files
            .iter()
            .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.yml", "b.yaml", "c.yaml"]);
        assert_eq!(listing.skipped.len(), 3, "{:?}", listing.skipped);
        assert!(listing.skipped[0].contains("dangling.yaml is a dangling symlink"));
        assert!(listing.skipped[1].contains("loop1.yaml is a symlink that loops"));
        assert!(listing.skipped[2].contains("loop2.yaml is a symlink that loops"));
    }

    /// A snapshot keeps the order of the paths given: a directory's files
    /// sorted in its place, and what could not be read where it would have
    /// been. Each snapshot is the next revision.
    #[test]
    fn a_snapshot_keeps_the_order_of_the_paths_and_moves_the_revision() {
        let dir = tempfile::tempdir().expect("dir");
        let d = dir.path();
        let conf = d.join("conf");
        std::fs::create_dir(&conf).expect("mkdir");
        std::fs::write(conf.join("b.yaml"), "b").expect("write");
        std::fs::write(conf.join("a.yaml"), "a").expect("write");
        symlink(conf.join("gone.yaml"), conf.join("dangling.yaml")).expect("symlink");
        std::fs::create_dir(d.join("empty")).expect("mkdir");
        std::fs::write(d.join("first.yaml"), "first").expect("write");
        let files = Files::new(vec![
            d.join("first.yaml"),
            conf.clone(),
            d.join("missing.yaml"),
            d.join("empty"),
        ]);
        let snapshot = files.snapshot();
        assert_eq!(snapshot.revision, 1);
        let seen: Vec<String> = snapshot
            .documents
            .iter()
            .map(|doc| match &doc.content {
                Content::Text(text) => {
                    format!("{} = {}", doc.origin, String::from_utf8_lossy(text))
                }
                Content::Unread(d) => format!("{:?} {d}", d.severity),
            })
            .collect();
        let shown = |p: &Path| p.display().to_string();
        assert_eq!(seen.len(), 6, "{seen:#?}");
        assert_eq!(seen[0], format!("{} = first", shown(&d.join("first.yaml"))));
        assert!(seen[1].starts_with("Warning ") && seen[1].contains("dangling symlink"));
        assert_eq!(seen[2], format!("{} = a", shown(&conf.join("a.yaml"))));
        assert_eq!(seen[3], format!("{} = b", shown(&conf.join("b.yaml"))));
        assert!(seen[4].starts_with("Error cannot read ") && seen[4].contains("missing.yaml"));
        assert!(seen[5].starts_with("Warning ") && seen[5].contains("holds no *.yaml"));
        assert_eq!(files.snapshot().revision, 2);
    }
}
