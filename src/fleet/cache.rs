//! The last good set on disk (`--config-cache PATH`), so that an instance
//! restarted while etcd is unreachable serves what it served before,
//! marked stale, instead of nothing.
//!
//! Written after every publish, atomically: a temporary file in the same
//! directory, fsync, rename over the old one, fsync of the directory. A
//! crash leaves the old file or the new one, never half of one.
//!
//! Format (JSON, one object; texts as strings, exactly as in the store):
//! ```json
//! {"format": "ringway-config-cache/1",
//!  "prefix": "/ringway/prod",
//!  "revision": 1245,
//!  "config_revision": 1240,
//!  "documents": [
//!    {"key": "/ringway/prod/v1/config/Gateway/default/gw",
//!     "text": "apiVersion: ...", "create_revision": 12, "mod_revision": 1240}]}
//! ```
//! `documents` are in creation order. A cache written for another prefix
//! is refused: it is another fleet's configuration.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::keys::Keys;
use super::store::{StoreSet, Stored};

/// The `format` of the files this version writes and reads.
pub const FORMAT: &str = "ringway-config-cache/1";

/// The cache file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("--config-cache {}: {reason}", path.display())]
pub struct CacheError {
    pub path: PathBuf,
    pub reason: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    format: String,
    prefix: String,
    revision: u64,
    config_revision: u64,
    documents: Vec<CachedDocument>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CachedDocument {
    key: String,
    text: String,
    create_revision: u64,
    mod_revision: u64,
}

/// What a cache file holds.
#[derive(Debug, Clone)]
pub struct Cached {
    pub set: StoreSet,
    pub config_revision: u64,
}

/// Replaces the cache at `path` with `set` (atomically).
pub fn write(
    path: &Path,
    keys: &Keys,
    set: &StoreSet,
    config_revision: u64,
) -> Result<(), CacheError> {
    let fail = |what: &str, e: std::io::Error| CacheError {
        path: path.to_owned(),
        reason: format!("{what}: {e}"),
    };
    let file = File {
        format: FORMAT.into(),
        prefix: keys.prefix().into(),
        revision: set.revision,
        config_revision,
        documents: set
            .resources
            .iter()
            .map(|r| CachedDocument {
                key: r.key.clone(),
                text: String::from_utf8_lossy(&r.text).into_owned(),
                create_revision: r.create_revision,
                mod_revision: r.mod_revision,
            })
            .collect(),
    };
    let bytes = serde_json::to_vec(&file).map_err(|e| CacheError {
        path: path.to_owned(),
        reason: format!("cannot encode: {e}"),
    })?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| fail("cannot create its directory", e))?;
    let name = path.file_name().map_or_else(
        || "config-cache".into(),
        |n| n.to_string_lossy().into_owned(),
    );
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut out = std::fs::File::create(&temp)?;
        out.write_all(&bytes)?;
        out.sync_all()?;
        std::fs::rename(&temp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(fail(
            "cannot write it (the old cache, if any, is intact)",
            e,
        ));
    }
    Ok(())
}

/// Reads the cache at `path`: `None` when there is no such file.
pub fn read(path: &Path, keys: &Keys) -> Result<Option<Cached>, CacheError> {
    let fail = |reason: String| CacheError {
        path: path.to_owned(),
        reason,
    };
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fail(format!("cannot read it: {e}"))),
    };
    let file: File = serde_json::from_slice(&bytes).map_err(|e| {
        fail(format!(
            "not a ringway config cache ({e}); expected the JSON {FORMAT} that ringway run \
             writes: remove the file to start without it"
        ))
    })?;
    if file.format != FORMAT {
        return Err(fail(format!(
            "format {:?}, this ringway reads {FORMAT:?}: remove the file to start without it",
            file.format
        )));
    }
    if file.prefix != keys.prefix() {
        return Err(fail(format!(
            "written for the prefix {:?}, this instance reads {:?}: give each fleet its own cache",
            file.prefix,
            keys.prefix()
        )));
    }
    let resources = file
        .documents
        .into_iter()
        .map(|d| Stored {
            id: keys.parse_resource(d.key.as_bytes()),
            key: d.key,
            text: d.text.into_bytes().into(),
            create_revision: d.create_revision,
            mod_revision: d.mod_revision,
        })
        .collect();
    Ok(Some(Cached {
        set: StoreSet {
            revision: file.revision,
            commit_revision: 0,
            commit: None,
            resources,
        },
        config_revision: file.config_revision,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> StoreSet {
        let keys = Keys::new("/ringway/prod");
        let stored = |name: &str, text: &str, create: u64| Stored {
            key: format!("/ringway/prod/v1/config/Gateway/default/{name}"),
            id: keys.parse_resource(
                format!("/ringway/prod/v1/config/Gateway/default/{name}").as_bytes(),
            ),
            text: text.as_bytes().into(),
            create_revision: create,
            mod_revision: create + 1,
        };
        StoreSet {
            revision: 9,
            commit_revision: 0,
            commit: None,
            resources: vec![
                stored("b", "kind: Gateway # b\n", 3),
                stored("a", "ä: 1\n", 5),
            ],
        }
    }

    #[test]
    fn a_written_cache_reads_back_whole_and_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/cache.json");
        let keys = Keys::new("/ringway/prod");
        assert!(read(&path, &keys).expect("absent is fine").is_none());
        write(&path, &keys, &set(), 8).expect("write");
        let cached = read(&path, &keys).expect("read").expect("present");
        assert_eq!(cached.config_revision, 8);
        assert_eq!(cached.set.revision, 9);
        assert_eq!(cached.set.resources, set().resources);
        // Written again over it: no temporary file is left beside it.
        write(&path, &keys, &StoreSet::default(), 10).expect("rewrite");
        let names: Vec<_> = std::fs::read_dir(path.parent().expect("dir"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["cache.json"]);
        assert!(
            read(&path, &keys)
                .expect("read")
                .expect("present")
                .set
                .resources
                .is_empty()
        );
    }

    #[test]
    fn a_corrupt_or_foreign_cache_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cache.json");
        let keys = Keys::new("/ringway/prod");
        struct Case {
            content: &'static str,
            says: &'static str,
        }
        for case in [
            Case {
                content: "{\"format\": \"ringway-config-cache/1\", \"revi",
                says: "remove the file",
            },
            Case {
                content: "",
                says: "not a ringway config cache",
            },
            Case {
                content: r#"{"format":"other/9","prefix":"/ringway/prod","revision":1,"config_revision":1,"documents":[]}"#,
                says: "format \"other/9\"",
            },
            Case {
                content: r#"{"format":"ringway-config-cache/1","prefix":"/elsewhere","revision":1,"config_revision":1,"documents":[]}"#,
                says: "give each fleet its own cache",
            },
        ] {
            std::fs::write(&path, case.content).expect("write");
            let e = read(&path, &keys).expect_err(case.content).to_string();
            assert!(e.contains(&path.display().to_string()), "{e}");
            assert!(e.contains(case.says), "{e}");
        }
    }

    #[test]
    fn a_write_that_cannot_happen_keeps_the_old_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = Keys::new("/ringway/prod");
        // The cache's path is a directory: the rename fails.
        let path = dir.path().join("taken");
        std::fs::create_dir(&path).expect("mkdir");
        std::fs::write(path.join("inside"), "x").expect("write");
        let e = write(&path, &keys, &set(), 1).expect_err("a directory is in the way");
        assert!(
            e.to_string().contains("the old cache, if any, is intact"),
            "{e}"
        );
        let left: Vec<_> = std::fs::read_dir(dir.path()).expect("list").collect();
        assert_eq!(left.len(), 1, "the temporary file was removed");
    }
}
