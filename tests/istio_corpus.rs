//! Issue 10: every valid Istio networking document loads.
//!
//! Reads the snapshot under `tests/corpus/` (collected from istio/istio and
//! istio/api by `scripts/istio-corpus.py`; commits in
//! `tests/corpus/SOURCES.txt`) and loads each document through
//! `config::load_str` and `routing::compile`.
//!
//! Each document is judged **alone**. The snapshot keeps each distinct
//! document once (many of Istio's test files repeat the same resource), so a
//! document has no single file to be judged with; and alone, an error is the
//! document's own. What a document refers to lives in other documents, often
//! in other files or only in a Go test, so errors of the reference kind (an
//! unknown destination host, an undeclared subset, a gateway that does not
//! exist, see [`REFERENCE_ERRORS`]) do not count. Every other error does:
//! YAML, schema, types, and what compile finds inside one resource.
//!
//! A rejected document must be listed in `tests/corpus/expected-rejections.txt`
//! with why: `istio-invalid: ...` (Istio rejects it too),
//! `ringway-difference: <name>` (a difference in the README's "Where ringway
//! differs from Istio, on purpose" table) or `ringway-bug: ...` (a valid
//! document wrongly rejected, known and to be fixed: issue 10 is not done
//! while one is listed; the summary line counts them). The test fails on a rejected
//! document not listed, on a listed document that now loads, on a panic, and
//! when the walk finds fewer documents than [`FLOOR`].

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use ringway::config::{LoadOptions, load_str};
use ringway::diag::Diagnostic;
use ringway::routing::{CompileOptions, compile};

/// Fewer documents than this means the walk or the split is broken.
const FLOOR: usize = 700;

/// Compile errors about what a document refers to, not about the document:
/// judged alone, every reference to another resource is dangling.
const REFERENCE_ERRORS: &[&str] = &[
    // destination host without a ServiceEntry
    "is not declared by any ServiceEntry",
    // subset without (or not in) a DestinationRule
    "subset \"",
    // VirtualService gateways: a Gateway of another document
    "is not defined in this configuration",
];

const ID_MARK: &str = "--- # id: ";

struct Document {
    id: String,
    text: String,
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// Every document of the snapshot, in file order.
fn documents() -> Vec<Document> {
    let mut files = Vec::new();
    for repo in ["istio", "api"] {
        let dir = corpus_dir().join(repo);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.extension().is_some_and(|e| e == "yaml") {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        let mut current: Option<Document> = None;
        for line in text.lines() {
            if let Some(id) = line.strip_prefix(ID_MARK) {
                docs.extend(current.take());
                current = Some(Document {
                    id: id.to_owned(),
                    text: String::new(),
                });
            } else if let Some(doc) = current.as_mut() {
                doc.text.push_str(line);
                doc.text.push('\n');
            }
        }
        docs.extend(current);
    }
    docs
}

/// The first error that counts against the document alone, if any.
fn judge(doc: &Document) -> Option<String> {
    let name = doc.id.rsplit('/').next().unwrap_or(&doc.id);
    let loaded = load_str(name, &doc.text, &LoadOptions::default());
    if let Some(e) = loaded.diagnostics.errors().next() {
        return Some(e.to_string());
    }
    let compiled = compile(&loaded.manifests, &CompileOptions::default());
    compiled
        .diagnostics
        .errors()
        .find(|d| !is_reference_error(d))
        .map(ToString::to_string)
}

fn is_reference_error(d: &Diagnostic) -> bool {
    REFERENCE_ERRORS.iter().any(|r| d.message.contains(r))
}

/// `id -> reason` from `expected-rejections.txt` (`# ` comments, blank lines).
fn expected() -> BTreeMap<String, String> {
    let path = corpus_dir().join("expected-rejections.txt");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (id, reason) = line
            .split_once(char::is_whitespace)
            .unwrap_or_else(|| panic!("expected-rejections.txt:{}: no reason", n + 1));
        let reason = reason.trim();
        assert!(
            ["istio-invalid: ", "ringway-difference: ", "ringway-bug: "]
                .iter()
                .any(|c| reason.starts_with(c)),
            "expected-rejections.txt:{}: reason must be `istio-invalid: why`, \
             `ringway-difference: name` or `ringway-bug: what`, got {reason:?}",
            n + 1
        );
        assert!(
            out.insert(id.to_owned(), reason.to_owned()).is_none(),
            "expected-rejections.txt:{}: {id} listed twice",
            n + 1
        );
    }
    out
}

/// `istio-invalid`, `ringway-bug`, or `ringway-difference: name`.
fn category(reason: &str) -> &str {
    for short in ["istio-invalid", "ringway-bug"] {
        if reason.starts_with(short) {
            return short;
        }
    }
    reason.split(" (").next().unwrap_or(reason)
}

#[test]
fn every_valid_istio_document_loads_and_no_document_panics_the_loader() {
    let docs = documents();
    assert!(
        docs.len() >= FLOOR,
        "found {} documents under {}, expected at least {FLOOR}: is the snapshot or its split broken?",
        docs.len(),
        corpus_dir().display()
    );
    let ids: BTreeSet<&str> = docs.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids.len(), docs.len(), "document ids are not unique");

    let expected = expected();
    let mut panics = Vec::new();
    let mut unexpected = Vec::new();
    let mut stale = Vec::new();
    let mut by_category: BTreeMap<&str, usize> = BTreeMap::new();
    let mut accepted = 0;
    for doc in &docs {
        let verdict = match catch_unwind(AssertUnwindSafe(|| judge(doc))) {
            Ok(v) => v,
            Err(_) => {
                panics.push(doc.id.clone());
                continue;
            }
        };
        match (verdict, expected.get(&doc.id)) {
            (None, None) => accepted += 1,
            (None, Some(_)) => stale.push(doc.id.clone()),
            (Some(_), Some(reason)) => *by_category.entry(category(reason)).or_default() += 1,
            (Some(error), None) => unexpected.push(format!("{}  # {error}", doc.id)),
        }
    }
    let unknown: Vec<&String> = expected
        .keys()
        .filter(|id| !ids.contains(id.as_str()))
        .collect();
    eprintln!(
        "istio corpus: {} documents, {accepted} accepted, rejected: {by_category:?}",
        docs.len()
    );
    assert!(panics.is_empty(), "the loader panicked on: {panics:#?}");
    assert!(
        unexpected.is_empty(),
        "{} valid-looking documents rejected (fix ringway, or list them in \
         expected-rejections.txt with `istio-invalid: why` or `ringway-difference: name`):\n{}",
        unexpected.len(),
        unexpected.join("\n")
    );
    assert!(
        stale.is_empty(),
        "listed in expected-rejections.txt but now load (remove them): {stale:#?}"
    );
    assert!(
        unknown.is_empty(),
        "listed in expected-rejections.txt but not in the snapshot: {unknown:#?}"
    );
}
