//! The operator's files → one text per resource, as the store keeps them.
//!
//! The files are read by the files source (the same directory rules as
//! `-c`) and loaded whole first, so that everything `check` would say about
//! a file (YAML errors, a resource defined twice in one file) is said with
//! the file's own lines. Each file is then cut at its document markers;
//! each piece is loaded alone to learn the one resource it defines. A piece
//! is loaded padded to its place in the file, so that diagnostics about it
//! (here and when the whole set is validated) point at the operator's line
//! and document.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::yaml;
use crate::config::{LoadOptions, Manifests, load_documents};
use crate::diag::{Diagnostic, Diagnostics, Location};
use crate::fleet::ResourceKey;
use crate::source::{ConfigSource as _, Content, Document, Files, Holds, Origin};

/// One resource read from the operator's files.
#[derive(Debug, Clone)]
pub struct Change {
    pub id: ResourceKey,
    /// The text stored under the resource's key: the lines of its document,
    /// without the `---` markers around it.
    pub text: Arc<[u8]>,
    pub file: PathBuf,
    /// The line of the file where the text starts.
    pub line: u32,
    /// The document's index in its file (1-based, as diagnostics count).
    pub document: usize,
}

impl Change {
    /// The text as the loader reads it: preceded by as many document
    /// markers and blank lines as stood before it in its file, so that
    /// every line and document number in a diagnostic is the file's.
    pub fn document(&self) -> Document {
        Document {
            origin: Origin::File(self.file.clone()),
            content: Content::Text(pad(&self.text, self.line, self.document).into()),
            // Once its key is known, the text is read as the instances
            // will read it from the store (namespace default included).
            holds: (!self.id.kind.is_empty()).then(|| Holds {
                kind: self.id.kind.clone(),
                namespace: self.id.namespace.clone(),
                name: self.id.name.clone(),
            }),
        }
    }

    /// `file:line`, for messages about the resource as a whole.
    pub fn place(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }
}

/// The resources of the files, and what was said reading them.
#[derive(Debug, Default)]
pub struct Read {
    /// In file order, one per key: a resource given twice keeps the place
    /// of its first definition and the text of its last (as `-c` files do).
    pub changes: Vec<Change>,
    pub diagnostics: Diagnostics,
}

/// Reads `paths` (files or directories of `*.yaml`/`*.yml`).
pub fn read_files(paths: &[PathBuf], options: &LoadOptions) -> Read {
    let snapshot = Files::new(paths.to_vec()).snapshot();
    let whole = load_documents(&snapshot.documents, options);
    if whole.diagnostics.has_errors() {
        return Read {
            changes: Vec::new(),
            diagnostics: whole.diagnostics,
        };
    }
    let mut read = Read::default();
    let mut place: HashMap<ResourceKey, usize> = HashMap::new();
    for document in &snapshot.documents {
        let (Origin::File(path), Content::Text(bytes)) = (&document.origin, &document.content)
        else {
            if let Content::Unread(d) = &document.content {
                read.diagnostics.push(d.clone());
            }
            continue;
        };
        // The whole load checked that every file is UTF-8 YAML.
        let Ok(text) = std::str::from_utf8(bytes) else {
            continue;
        };
        for change in file_changes(path, text, options, &mut read.diagnostics) {
            match place.get(&change.id) {
                Some(&at) => {
                    read.diagnostics.push(
                        Diagnostic::info(format!(
                            "{} replaces its definition at {} (the later one wins)",
                            change.id,
                            read.changes[at].place()
                        ))
                        .at(location(&change)),
                    );
                    read.changes[at] = change;
                }
                None => {
                    place.insert(change.id.clone(), read.changes.len());
                    read.changes.push(change);
                }
            }
        }
    }
    read
}

/// The resources of one file, one per document.
fn file_changes(
    path: &Path,
    text: &str,
    options: &LoadOptions,
    diagnostics: &mut Diagnostics,
) -> Vec<Change> {
    let Ok(documents) = yaml::parse(text, options.limits) else {
        return Vec::new();
    };
    let pieces = split(text);
    let mut changes = Vec::new();
    for doc in documents {
        let Some(root) = &doc.root else { continue };
        let Some(piece) = pieces.iter().rev().find(|p| p.line <= doc.line) else {
            continue;
        };
        let candidate = Change {
            id: ResourceKey {
                kind: String::new(),
                namespace: String::new(),
                name: String::new(),
            },
            text: piece.text.as_bytes().into(),
            file: path.to_owned(),
            line: piece.line,
            document: doc.index,
        };
        if let Some(kind) = list_kind(root) {
            diagnostics.push(
                Diagnostic::error(format!(
                    "this document is a {kind}; the store keeps one resource per key, so write \
                     one YAML document per resource (separated by ---)"
                ))
                .at(location(&candidate)),
            );
            continue;
        }
        let loaded = load_documents(&[candidate.document()], options);
        match ids(&loaded.manifests).as_slice() {
            [] => diagnostics.push(
                Diagnostic::info(
                    "skipped: it defines no resource ringway reads, so it is not stored",
                )
                .at(location(&candidate)),
            ),
            [id] => changes.push(Change {
                id: id.clone(),
                ..candidate
            }),
            many => diagnostics.push(
                Diagnostic::error(format!(
                    "this document defines {} resources; the store keeps one resource per key, \
                     so write one YAML document per resource (separated by ---)",
                    many.len()
                ))
                .at(location(&candidate)),
            ),
        }
    }
    changes
}

/// `List` (or `VirtualServiceList`...), when `root` is one with items:
/// what `kubectl get -o yaml` writes, which `-c` reads item by item but a
/// key cannot hold.
fn list_kind(root: &yaml::Node) -> Option<&str> {
    let kind = root.get("kind").and_then(yaml::Node::as_str)?;
    (kind.ends_with("List") && root.get("items").is_some()).then_some(kind)
}

fn location(change: &Change) -> Location {
    Location {
        file: change.file.display().to_string().into(),
        document: change.document,
        line: change.line,
    }
}

/// The keys of every resource loaded, in no particular order.
pub fn ids(manifests: &Manifests) -> Vec<ResourceKey> {
    fn key<T>(r: &crate::config::Resource<T>) -> ResourceKey {
        ResourceKey {
            kind: r.kind.as_str().to_owned(),
            namespace: r.namespace.clone(),
            name: r.name.clone(),
        }
    }
    let mut ids: Vec<ResourceKey> = manifests.gateways.iter().map(key).collect();
    ids.extend(manifests.virtual_services.iter().map(key));
    ids.extend(manifests.destination_rules.iter().map(key));
    ids.extend(manifests.service_entries.iter().map(key));
    ids.extend(manifests.workload_entries.iter().map(key));
    ids
}

/// A part of a file between document markers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Piece {
    /// The line where the part starts (1-based).
    line: u32,
    /// Its lines, each ending in a newline.
    text: String,
}

/// Cuts `text` at its document markers: a line `---` (which may carry a
/// comment, or content that then starts the next part) or `...`. The
/// markers themselves are dropped, so `ringway get -o yaml`, which writes
/// `--- # key ...` before each text, reads back to the same texts.
fn split(text: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut current = Piece {
        line: 1,
        text: String::new(),
    };
    for (i, raw) in text.split_inclusive('\n').enumerate() {
        let n = u32::try_from(i).unwrap_or(u32::MAX - 1) + 1;
        let line = raw.trim_end_matches(['\n', '\r']);
        let Some(rest) = marker(line) else {
            current.text.push_str(raw);
            continue;
        };
        pieces.push(std::mem::replace(
            &mut current,
            Piece {
                line: n + 1,
                text: String::new(),
            },
        ));
        let rest = rest.trim_start();
        if !rest.is_empty() && !rest.starts_with('#') {
            // `--- {kind: ...}`: the content belongs to the next part.
            current.line = n;
            current.text.push_str(rest);
            current.text.push('\n');
        }
    }
    if !current.text.is_empty() && !current.text.ends_with('\n') {
        current.text.push('\n');
    }
    pieces.push(current);
    pieces
}

/// What follows a document marker on its line, or `None` when `line` is
/// not one.
fn marker(line: &str) -> Option<&str> {
    for m in ["---", "..."] {
        if let Some(rest) = line.strip_prefix(m) {
            if rest.is_empty() || rest.starts_with([' ', '\t']) {
                return Some(if m == "---" { rest } else { "" });
            }
        }
    }
    None
}

/// `text` preceded by markers and blank lines so that it starts at `line`
/// as document `document`.
fn pad(text: &[u8], line: u32, document: usize) -> Vec<u8> {
    let before = usize::try_from(line.saturating_sub(1)).unwrap_or(0);
    let markers = document.min(before);
    let mut padded = Vec::with_capacity(before * 4 + text.len());
    for _ in 0..markers {
        padded.extend_from_slice(b"---\n");
    }
    padded.resize(padded.len() + (before - markers), b'\n');
    padded.extend_from_slice(text);
    padded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_drops_markers_and_keeps_lines() {
        let text = "# head\na: 1\n---\nb: 2\n\n--- # key x\nc: 3\n...\n--- {d: 4}\ne";
        let pieces = split(text);
        let seen: Vec<(u32, &str)> = pieces.iter().map(|p| (p.line, p.text.as_str())).collect();
        assert_eq!(
            seen,
            [
                (1, "# head\na: 1\n"),
                (4, "b: 2\n\n"),
                (7, "c: 3\n"),
                (9, ""),
                (9, "{d: 4}\ne\n"),
            ]
        );
        assert!(marker("----").is_none() && marker("--- x").is_some());
    }

    /// A piece loaded alone keeps the line and document number it has in
    /// its file.
    #[test]
    fn a_padded_piece_is_read_at_its_place_in_the_file() {
        let text = "a: 1\n---\nb: 2\n---\n\n\nc: [\n";
        let whole = yaml::parse(text, yaml::Limits::DEFAULT).expect_err("bad yaml");
        let piece = &split(text)[2];
        let padded = pad(piece.text.as_bytes(), piece.line, 3);
        let alone = yaml::parse(
            std::str::from_utf8(&padded).expect("utf-8"),
            yaml::Limits::DEFAULT,
        )
        .expect_err("bad yaml");
        assert_eq!((alone.line, alone.document), (whole.line, whole.document));
    }

    #[test]
    fn a_resource_in_two_files_keeps_its_first_place_and_last_text() {
        let dir = tempfile::tempdir().expect("dir");
        let vs = |weight: u32| {
            format!(
                "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: v\n\
                 spec:\n  hosts: [\"*\"]\n  tcp:\n  - route:\n    - destination:\n        host: a\n      weight: {weight}\n"
            )
        };
        let se = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: s\n\
                  spec:\n  hosts: [a]\n  resolution: STATIC\n  ports: [{number: 1, name: t, protocol: TCP}]\n  endpoints: [{address: 127.0.0.1}]\n";
        std::fs::write(dir.path().join("a.yaml"), format!("{}---\n{se}", vs(100))).expect("write");
        std::fs::write(
            dir.path().join("b.yaml"),
            vs(100).replace("host: a", "host: b"),
        )
        .expect("write");
        let read = read_files(&[dir.path().to_owned()], &LoadOptions::default());
        assert!(!read.diagnostics.has_errors(), "{:?}", read.diagnostics);
        let names: Vec<String> = read.changes.iter().map(|c| c.id.to_string()).collect();
        assert_eq!(
            names,
            ["VirtualService/default/v", "ServiceEntry/default/s"]
        );
        assert!(read.changes[0].file.ends_with("b.yaml"));
        assert_eq!(read.changes[1].line, 13);
        assert!(
            read.diagnostics
                .iter()
                .any(|d| d.message.contains("later one wins"))
        );
    }

    #[test]
    fn lists_are_refused_with_the_line_and_a_stored_resource_keeps_its_namespace() {
        let dir = tempfile::tempdir().expect("dir");
        let se = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: s\n\
                  spec:\n  hosts: [a]\n  resolution: STATIC\n  ports: [{number: 1, name: t, protocol: TCP}]\n  endpoints: [{address: 127.0.0.1}]\n";
        let indented: String = se
            .replace("name: s", "name: t")
            .lines()
            .map(|l| format!("  {l}\n"))
            .collect();
        let list = format!("apiVersion: v1\nkind: List\nitems:\n- {}", &indented[2..]);
        let file = dir.path().join("l.yaml");
        std::fs::write(&file, format!("{se}---\n{list}")).expect("write");
        let read = read_files(std::slice::from_ref(&file), &LoadOptions::default());
        let errors: Vec<String> = read.diagnostics.errors().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("l.yaml:11: this document is a List"),
            "{errors:?}"
        );

        // A resource without a namespace is stored under --namespace, and
        // the instances read it there (the key names it), whatever theirs.
        let prod = LoadOptions {
            namespace: "prod".into(),
            ..LoadOptions::default()
        };
        std::fs::write(&file, se).expect("write");
        let read = read_files(&[file], &prod);
        assert!(!read.diagnostics.has_errors(), "{:?}", read.diagnostics);
        let stored = read.changes[0].document();
        let loaded = load_documents(&[stored], &LoadOptions::default());
        assert!(!loaded.diagnostics.has_errors(), "{:?}", loaded.diagnostics);
        assert_eq!(loaded.manifests.service_entries[0].namespace, "prod");
        assert_eq!(read.changes[0].id.to_string(), "ServiceEntry/prod/s");
    }
}
