//! Table-driven configuration fixtures (`config/testdata/`).
//!
//! - `config/testdata/invalid/<defect>.yaml`: an otherwise valid, complete
//!   configuration with exactly one defect, named by the file. Exactly one line
//!   carries an error marker saying where the error must point and what it
//!   must say:
//!
//!   ```text
//!   <yaml> # error: <field path as displayed, or -> | <substring of the message>
//!   # error-next-line: <field or -> | <substring>      (marker alone on a line)
//!   ```
//!
//!   The first form expects the error on the marker's own line. The second form
//!   is for defects where a trailing comment is impossible (an unterminated
//!   quote would swallow it) and expects the error on the line below. A field
//!   of `-` means the diagnostic has no field path.
//!
//!   Each invalid file, built alone, must be rejected (no table) with exactly
//!   one error whose file, line, document, field and message match the marker
//!   and which names its resource as `Kind namespace/name` (files whose defect
//!   makes the resource unidentifiable, such as invalid YAML, are exempt from
//!   the resource check).
//!
//! - `config/testdata/valid/<what-it-shows>.yaml`: complete configurations that
//!   must build with no error and no warning and open at least one listener.
//!
//! - `config/testdata/warned/<what-it-shows>.yaml`: valid Istio that must
//!   build and open a listener with exactly the warnings it marks, like an
//!   error (`# warning: <field> | <substring>`, or `# warning-next-line:`).
#![allow(clippy::unwrap_used)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use ringway::diag::{Diagnostic, Severity};
use ringway::pipeline::{Build, Pipeline};
use ringway::source::{ConfigSource as _, Files};

/// Fewer fixtures than this means the directory walk is broken.
const MIN_INVALID: usize = 20;
const MIN_VALID: usize = 6;
const MIN_WARNED: usize = 3;

/// Defects that leave no resource to name: the file is not YAML (or not
/// UTF-8), or the document has no kind or one that does not exist (its
/// error names it as written). Their error has no resource of a known kind.
fn resource_exempt(file_name: &str) -> bool {
    file_name.starts_with("invalid-yaml")
        || file_name == "invalid-utf8.yaml"
        || file_name == "missing-kind.yaml"
        || file_name == "misspelled-kind.yaml"
}

const KINDS: [&str; 5] = [
    "Gateway",
    "VirtualService",
    "DestinationRule",
    "ServiceEntry",
    "WorkloadEntry",
];

fn testdata(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config")
        .join("testdata")
        .join(sub)
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    files
}

fn build(path: &Path) -> Build {
    Pipeline::default().build(&Files::new(vec![path.to_owned()]).snapshot())
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// What one invalid fixture expects.
#[derive(Debug)]
struct Marker {
    /// 1-based line the error must point at.
    line: u32,
    /// 1-based YAML document holding that line.
    document: usize,
    /// Field path as displayed; `None` for `-`.
    field: Option<String>,
    /// Substring of the message.
    message: String,
}

const TRAILING: &str = "# error: ";
const NEXT_LINE: &str = "# error-next-line: ";
const WARNING: &str = "# warning: ";
const WARNING_NEXT_LINE: &str = "# warning-next-line: ";

fn parse_spec(spec: &str) -> Result<(Option<String>, String), String> {
    let (field, message) = spec
        .split_once(" | ")
        .ok_or_else(|| format!("marker {spec:?} is not `<field> | <message substring>`"))?;
    let field = field.trim();
    let message = message.trim();
    if field.is_empty() || message.is_empty() {
        return Err(format!("marker {spec:?} has an empty field or message"));
    }
    let field = (field != "-").then(|| field.to_owned());
    Ok((field, message.to_owned()))
}

/// Finds the single error marker of a fixture.
fn marker(path: &Path) -> Result<Marker, String> {
    marker_of(path, TRAILING, NEXT_LINE)
}

/// Finds the single marker (`trailing` or `next_line` form) of a fixture.
fn marker_of(path: &Path, trailing: &str, next_line: &str) -> Result<Marker, String> {
    let mut found = markers_of(path, trailing, next_line)?;
    if found.len() != 1 {
        return Err(format!(
            "expected exactly one {} marker, found {}",
            trailing.trim_start_matches("# ").trim_end_matches(": "),
            found.len()
        ));
    }
    Ok(found.remove(0))
}

/// Every marker (`trailing` or `next_line` form) of a fixture (the file may
/// hold invalid UTF-8 on purpose, so it is read as bytes).
fn markers_of(path: &Path, trailing: &str, next_line: &str) -> Result<Vec<Marker>, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let number = u32::try_from(i + 1).unwrap();
        if let Some(spec) = line.trim_start().strip_prefix(next_line) {
            found.push((number + 1, spec));
        } else if let Some(at) = line.find(trailing) {
            found.push((number, &line[at + trailing.len()..]));
        }
    }
    let mut markers = Vec::new();
    for (line, spec) in found {
        if line as usize > lines.len() {
            return Err("a next-line marker on the last line".to_owned());
        }
        let (field, message) = parse_spec(spec)?;
        // Documents are separated by `---` lines; none of the fixtures
        // starts with one.
        let document = 1 + lines[..line as usize - 1]
            .iter()
            .filter(|l| l.trim_end() == "---" || l.starts_with("--- "))
            .count();
        markers.push(Marker {
            line,
            document,
            field,
            message,
        });
    }
    Ok(markers)
}

/// `Kind namespace/name`.
fn well_formed_resource(resource: &str) -> bool {
    let Some((kind, rest)) = resource.split_once(' ') else {
        return false;
    };
    let Some((ns, name)) = rest.split_once('/') else {
        return false;
    };
    KINDS.contains(&kind) && !ns.is_empty() && !ns.contains(' ') && !name.is_empty()
}

fn listing(build: &Build) -> String {
    let mut out = String::new();
    for d in build.diagnostics.iter() {
        let _ = writeln!(out, "      {}: {d}", d.severity);
    }
    if out.is_empty() {
        out.push_str("      (no diagnostics)\n");
    }
    out
}

/// Every mismatch between one invalid fixture and what ringway reported.
fn check_invalid(path: &Path) -> Vec<String> {
    let name = file_name(path);
    let m = match marker(path) {
        Ok(m) => m,
        Err(e) => return vec![format!("bad fixture: {e}")],
    };
    let build = build(path);
    let mut problems = Vec::new();
    if build.table.is_some() {
        problems.push("the configuration was accepted (table is Some)".to_owned());
    }
    let errors: Vec<&Diagnostic> = build.diagnostics.errors().collect();
    if errors.len() != 1 {
        problems.push(format!("expected exactly 1 error, got {}", errors.len()));
    }
    // Compare with the error that points at the marked line if there is one,
    // else with the first error, so that the report says what differs.
    let chosen = errors
        .iter()
        .find(|d| d.location.as_ref().is_some_and(|l| l.line == m.line))
        .or_else(|| errors.first());
    if let Some(d) = chosen {
        match &d.location {
            None => problems.push("the error has no location (file and line)".to_owned()),
            Some(loc) => {
                if !loc.file.ends_with(name.as_str()) {
                    problems.push(format!("file is {:?}, expected …{name}", loc.file));
                }
                if loc.line != m.line {
                    problems.push(format!("line is {}, expected {}", loc.line, m.line));
                }
                if loc.document != m.document {
                    problems.push(format!(
                        "document is {}, expected {}",
                        loc.document, m.document
                    ));
                }
            }
        }
        if d.field != m.field {
            problems.push(format!("field is {:?}, expected {:?}", d.field, m.field));
        }
        if !d.message.contains(&m.message) {
            problems.push(format!(
                "message {:?} does not contain {:?}",
                d.message, m.message
            ));
        }
        if !resource_exempt(&name) {
            match &d.resource {
                None => problems.push(
                    "the error names no resource (expected `Kind namespace/name`)".to_owned(),
                ),
                Some(r) if !well_formed_resource(r) => {
                    problems.push(format!("resource {r:?} is not `Kind namespace/name`"))
                }
                Some(_) => {}
            }
        }
    }
    if !problems.is_empty() {
        problems.push(format!(
            "ringway reported:\n{}",
            listing(&build).trim_end_matches('\n')
        ));
    }
    problems
}

fn check_valid(path: &Path) -> Vec<String> {
    let build = build(path);
    let mut problems = Vec::new();
    let bad = build.diagnostics.count(Severity::Error) + build.diagnostics.count(Severity::Warning);
    match &build.table {
        None => problems.push("the configuration was rejected (table is None)".to_owned()),
        Some(table) if table.listeners.is_empty() => {
            problems.push("the configuration opens no listener".to_owned());
        }
        Some(_) => {}
    }
    if bad > 0 {
        problems.push(format!("{bad} error(s)/warning(s), expected none"));
    }
    if !problems.is_empty() {
        problems.push(format!(
            "ringway reported:\n{}",
            listing(&build).trim_end_matches('\n')
        ));
    }
    problems
}

/// A warned fixture: valid Istio that loads and serves, with exactly the
/// warnings its markers name (an accepted field ringway does not act on, a
/// feature refused only for the routes that reach it...).
fn check_warned(path: &Path) -> Vec<String> {
    let markers = match markers_of(path, WARNING, WARNING_NEXT_LINE) {
        Ok(m) if !m.is_empty() => m,
        Ok(_) => return vec!["bad fixture: no warning marker".to_owned()],
        Err(e) => return vec![format!("bad fixture: {e}")],
    };
    let build = build(path);
    let mut problems = Vec::new();
    match &build.table {
        None => problems.push("the configuration was rejected (table is None)".to_owned()),
        Some(table) if table.listeners.is_empty() => {
            problems.push("the configuration opens no listener".to_owned());
        }
        Some(_) => {}
    }
    let warnings: Vec<&Diagnostic> = build.diagnostics.warnings().collect();
    if warnings.len() != markers.len() {
        problems.push(format!(
            "expected {} warning(s), got {}",
            markers.len(),
            warnings.len()
        ));
    }
    for m in &markers {
        let found = warnings.iter().any(|d| {
            d.location.as_ref().map(|l| (l.line, l.document)) == Some((m.line, m.document))
                && d.field == m.field
                && d.message.contains(&m.message)
                && d.resource.as_deref().is_some_and(well_formed_resource)
        });
        if !found {
            problems.push(format!(
                "no warning at line {} (document {}) on {:?} saying {:?} with its resource",
                m.line, m.document, m.field, m.message
            ));
        }
    }
    if !problems.is_empty() {
        problems.push(format!(
            "ringway reported:\n{}",
            listing(&build).trim_end_matches('\n')
        ));
    }
    problems
}

fn report(kind: &str, results: Vec<(String, Vec<String>)>) -> Option<String> {
    let total = results.len();
    let failed: Vec<_> = results.into_iter().filter(|(_, p)| !p.is_empty()).collect();
    if failed.is_empty() {
        return None;
    }
    let mut out = format!("{} of {total} {kind} fixture(s) failed:\n", failed.len());
    for (name, problems) in &failed {
        let _ = writeln!(out, "  {name}:");
        for p in problems {
            let _ = writeln!(out, "    - {p}");
        }
    }
    Some(out)
}

#[test]
fn invalid_fixtures_are_rejected_with_one_located_error() {
    let files = yaml_files(&testdata("invalid"));
    assert!(
        files.len() >= MIN_INVALID,
        "found {} invalid fixtures in {}, expected at least {MIN_INVALID}",
        files.len(),
        testdata("invalid").display()
    );
    let results = files
        .iter()
        .map(|p| (file_name(p), check_invalid(p)))
        .collect();
    if let Some(failures) = report("invalid", results) {
        panic!("{failures}");
    }
}

#[test]
fn valid_fixtures_build_clean() {
    let files = yaml_files(&testdata("valid"));
    assert!(
        files.len() >= MIN_VALID,
        "found {} valid fixtures in {}, expected at least {MIN_VALID}",
        files.len(),
        testdata("valid").display()
    );
    let results = files
        .iter()
        .map(|p| (file_name(p), check_valid(p)))
        .collect();
    if let Some(failures) = report("valid", results) {
        panic!("{failures}");
    }
}

#[test]
fn warned_fixtures_load_with_their_one_warning() {
    let files = yaml_files(&testdata("warned"));
    assert!(
        files.len() >= MIN_WARNED,
        "found {} warned fixtures in {}, expected at least {MIN_WARNED}",
        files.len(),
        testdata("warned").display()
    );
    let results = files
        .iter()
        .map(|p| (file_name(p), check_warned(p)))
        .collect();
    if let Some(failures) = report("warned", results) {
        panic!("{failures}");
    }
}

/// The marker parser itself, so that a broken parser cannot pass every
/// fixture by finding nothing.
#[test]
fn marker_syntax() {
    assert_eq!(
        parse_spec("tcp[0].route[1].destination.subset | subset \"v3\" is not declared").unwrap(),
        (
            Some("tcp[0].route[1].destination.subset".to_owned()),
            "subset \"v3\" is not declared".to_owned()
        )
    );
    assert_eq!(
        parse_spec("- | invalid YAML").unwrap(),
        (None, "invalid YAML".to_owned())
    );
    assert!(parse_spec("no separator").is_err());
    assert!(parse_spec(" | empty field").is_err());
    assert!(well_formed_resource("VirtualService default/tcp-echo"));
    assert!(!well_formed_resource("DestinationRule (unnamed)"));
    assert!(!well_formed_resource("Service default/tcp-echo"));
}
