//! Files and directories → [`Manifests`].
//!
//! Reads every path given with `-c` (a directory: its `*.yaml`/`*.yml` files,
//! sorted, not recursive), splits each file into YAML documents, keeps the
//! five Istio networking kinds and skips everything else with a note. A
//! resource read again from a later file replaces the earlier one (as a second
//! `kubectl apply` would) and keeps its place in creation order.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;

use super::de::{DeError, from_node};
use super::files;
use super::manifest::{
    DestinationRuleSpec, GatewaySpec, Labels, Metadata, ServiceEntrySpec, VirtualServiceSpec,
    WorkloadEntrySpec,
};
use super::yaml::{self, Limits, Node, Value};
use crate::diag::{Diagnostic, Diagnostics, Location, Severity, did_you_mean};

pub const API_GROUP: &str = "networking.istio.io";
pub const API_VERSIONS: [&str; 3] = ["v1", "v1beta1", "v1alpha3"];
pub const DEFAULT_NAMESPACE: &str = "default";

/// The five kinds ringway reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Gateway,
    VirtualService,
    DestinationRule,
    ServiceEntry,
    WorkloadEntry,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Gateway,
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::ServiceEntry,
        Kind::WorkloadEntry,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Gateway => "Gateway",
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::WorkloadEntry => "WorkloadEntry",
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Line numbers of every field of one document, by path from the document
/// root (`spec.tcp[0].route[1].destination.subset`).
#[derive(Debug, Default)]
pub struct LineIndex(BTreeMap<String, u32>);

impl LineIndex {
    fn build(root: &Node) -> LineIndex {
        let mut index = BTreeMap::new();
        let mut stack = vec![(String::new(), root)];
        while let Some((path, node)) = stack.pop() {
            match &node.value {
                Value::Map(entries) => {
                    for (k, v) in entries {
                        let key = k.as_str().unwrap_or("null");
                        let child = if path.is_empty() {
                            key.to_owned()
                        } else {
                            format!("{path}.{key}")
                        };
                        // A key's line is where the operator looks for the field.
                        index.insert(child.clone(), k.line);
                        stack.push((child, v));
                    }
                }
                Value::Seq(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let child = format!("{path}[{i}]");
                        index.insert(child.clone(), item.line);
                        stack.push((child, item));
                    }
                }
                Value::Null | Value::Scalar { .. } => {}
            }
        }
        LineIndex(index)
    }

    /// The line of `path`, or of its closest ancestor that was written.
    fn line(&self, path: &str) -> Option<u32> {
        let mut p = path;
        loop {
            if let Some(line) = self.0.get(p) {
                return Some(*line);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

/// Where a resource was read: file, document, and the lines of its fields.
#[derive(Debug, Clone)]
pub struct Origin {
    pub file: Arc<str>,
    /// 1-based document index inside the file.
    pub document: usize,
    /// Line where the document starts.
    pub line: u32,
    lines: Arc<LineIndex>,
}

impl Origin {
    /// The location of a field, by path from the document root.
    pub fn location(&self, path: &str) -> Location {
        Location {
            file: self.file.clone(),
            document: self.document,
            line: self.lines.line(path).unwrap_or(self.line),
        }
    }
}

impl Origin {
    /// `file:line` of a field, for messages that point at another resource.
    pub fn at(&self, path: &str) -> String {
        let loc = self.location(path);
        format!("{}:{}", loc.file, loc.line)
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{} (document {})",
            self.file, self.line, self.document
        )
    }
}

/// One resource of one kind, with its identity and where it came from.
#[derive(Debug, Clone)]
pub struct Resource<T> {
    pub kind: Kind,
    pub name: String,
    pub namespace: String,
    pub labels: Labels,
    pub spec: T,
    pub origin: Origin,
}

impl<T> Resource<T> {
    /// `VirtualService default/tcp-echo`.
    pub fn id(&self) -> String {
        format!("{} {}/{}", self.kind, self.namespace, self.name)
    }

    /// A diagnostic about the field at `path` (from the document root, for
    /// example `spec.tcp[0].route`); the message names file, line, resource and
    /// field.
    pub fn diag(&self, severity: Severity, path: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(severity, message)
            .at(self.origin.location(path))
            .resource(self.id())
            .field(display_path(path))
    }
}

/// `spec.tcp[0]` is shown as `tcp[0]`: everything the operator writes is under
/// `spec` unless it says `metadata`.
pub fn display_path(path: &str) -> &str {
    match path {
        "spec" => "",
        _ => path.strip_prefix("spec.").unwrap_or(path),
    }
}

/// Every resource of a configuration, each kind in creation order (file
/// order, then document order).
#[derive(Debug, Clone, Default)]
pub struct Manifests {
    pub gateways: Vec<Resource<GatewaySpec>>,
    pub virtual_services: Vec<Resource<VirtualServiceSpec>>,
    pub destination_rules: Vec<Resource<DestinationRuleSpec>>,
    pub service_entries: Vec<Resource<ServiceEntrySpec>>,
    pub workload_entries: Vec<Resource<WorkloadEntrySpec>>,
}

impl Manifests {
    pub fn len(&self) -> usize {
        self.gateways.len()
            + self.virtual_services.len()
            + self.destination_rules.len()
            + self.service_entries.len()
            + self.workload_entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Namespace of resources whose `metadata.namespace` is not set.
    pub namespace: String,
    pub limits: Limits,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            namespace: DEFAULT_NAMESPACE.to_owned(),
            limits: Limits::DEFAULT,
        }
    }
}

/// The result of loading: what was read, and everything worth telling.
#[derive(Debug, Default)]
pub struct Loaded {
    pub manifests: Manifests,
    pub diagnostics: Diagnostics,
    /// Files that held nothing but white space (what `open(O_TRUNC)`
    /// leaves while a file is being rewritten): a reload refuses them.
    pub blank_files: Vec<PathBuf>,
}

/// Loads every path. Errors do not stop the load: all files are read so that
/// one run reports every problem; the caller rejects the configuration when
/// `diagnostics.has_errors()`.
pub fn load(paths: &[PathBuf], options: &LoadOptions) -> Loaded {
    let mut loader = Loader {
        options,
        loaded: Loaded::default(),
        seen: HashMap::new(),
    };
    let limit = options.limits.max_file_bytes as u64;
    for path in paths {
        for file in loader.expand(path) {
            match files::read_bounded(&file, limit) {
                Ok(bytes) => {
                    if files::is_blank(&bytes) {
                        loader.loaded.blank_files.push(file.clone());
                    }
                    loader.file(&file, &bytes);
                }
                Err(e) => loader
                    .loaded
                    .diagnostics
                    .push(Diagnostic::error(e.to_string())),
            }
        }
    }
    loader.loaded
}

/// Loads one in-memory file (tests and fuzzing), named `name` in messages.
pub fn load_str(name: &str, text: &str, options: &LoadOptions) -> Loaded {
    let mut loader = Loader {
        options,
        loaded: Loaded::default(),
        seen: HashMap::new(),
    };
    loader.file(Path::new(name), text.as_bytes());
    loader.loaded
}

struct Loader<'a> {
    options: &'a LoadOptions,
    loaded: Loaded,
    /// (kind, namespace, name) → where it was read.
    seen: HashMap<(Kind, String, String), Origin>,
}

impl Loader<'_> {
    fn expand(&mut self, path: &Path) -> Vec<PathBuf> {
        if !path.is_dir() {
            return vec![path.to_owned()];
        }
        let listing = match files::list_dir(path) {
            Ok(listing) => listing,
            Err(e) => {
                self.loaded.diagnostics.push(Diagnostic::error(format!(
                    "cannot read directory {}: {e}",
                    path.display()
                )));
                return Vec::new();
            }
        };
        for note in listing.skipped {
            self.loaded.diagnostics.push(Diagnostic::warning(note));
        }
        if listing.files.is_empty() {
            self.loaded.diagnostics.push(Diagnostic::warning(format!(
                "directory {} holds no *.yaml or *.yml file",
                path.display()
            )));
        }
        listing.files
    }

    fn file(&mut self, path: &Path, bytes: &[u8]) {
        let name: Arc<str> = path.display().to_string().into();
        let text =
            match std::str::from_utf8(bytes) {
                Ok(text) => text,
                Err(e) => {
                    let line = bytes[..e.valid_up_to()]
                        .iter()
                        .filter(|b| **b == b'\n')
                        .count()
                        + 1;
                    self.loaded.diagnostics.push(
                        Diagnostic::error("the file is not valid UTF-8").at(Location {
                            file: name,
                            document: 1,
                            line: u32::try_from(line).unwrap_or(u32::MAX),
                        }),
                    );
                    return;
                }
            };
        let documents = match yaml::parse(text, self.options.limits) {
            Ok(documents) => documents,
            Err(e) => {
                self.loaded
                    .diagnostics
                    .push(Diagnostic::error(e.message).at(Location {
                        file: name,
                        document: e.document,
                        line: e.line,
                    }));
                return;
            }
        };
        let mut in_this_file: HashMap<(Kind, String, String), Origin> = HashMap::new();
        for doc in documents {
            let Some(root) = doc.root else { continue };
            let origin = Origin {
                file: name.clone(),
                document: doc.index,
                line: doc.line,
                lines: Arc::new(LineIndex::build(&root)),
            };
            if let Some(key) = self.document(&root, origin.clone()) {
                if let Some(first) = in_this_file.insert(key.clone(), origin.clone()) {
                    let (kind, ns, n) = &key;
                    self.loaded.diagnostics.push(
                        Diagnostic::error(format!(
                            "{kind} {ns}/{n} is defined twice in this file (first at line {}, document {}); \
                             give each resource its own name",
                            first.line, first.document
                        ))
                        .at(origin.location("metadata.name"))
                        .resource(format!("{kind} {ns}/{n}"))
                        .field("metadata.name"),
                    );
                }
            }
        }
    }

    /// Reads one document; returns the key of the resource it defined.
    fn document(&mut self, root: &Node, origin: Origin) -> Option<(Kind, String, String)> {
        let at = |path: &str| origin.location(path);
        let diags = &mut self.loaded.diagnostics;
        let Value::Map(entries) = &root.value else {
            diags.push(
                Diagnostic::error(format!(
                    "expected a mapping with apiVersion, kind, metadata and spec, found {}",
                    root.describe()
                ))
                .at(at("")),
            );
            return None;
        };
        let kind_text = root.get("kind").and_then(Node::as_str);
        let api_version = root.get("apiVersion").and_then(Node::as_str);
        let Some(kind_text) = kind_text else {
            diags.push(
                Diagnostic::error("kind is missing: every document needs apiVersion and kind")
                    .at(at(""))
                    .field("kind"),
            );
            return None;
        };
        // Named as well as the document allows, for every message below.
        let raw_meta = |key: &str| {
            root.get("metadata")
                .and_then(|m| m.get(key))
                .and_then(Node::as_str)
        };
        let raw_name = raw_meta("name").filter(|n| !n.is_empty());
        let namespace =
            raw_meta("namespace").map_or_else(|| self.options.namespace.clone(), str::to_owned);
        let id = format!(
            "{kind_text} {namespace}/{}",
            raw_name.unwrap_or("(unnamed)")
        );
        let Some(api_version) = api_version else {
            diags.push(
                Diagnostic::error(
                    "apiVersion is missing: every document needs apiVersion and kind",
                )
                .at(at(""))
                .resource(id)
                .field("apiVersion"),
            );
            return None;
        };
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let kind = match Kind::parse(kind_text) {
            Some(kind) if group == API_GROUP => kind,
            _ => {
                let why = if group == "gateway.networking.k8s.io" {
                    "Kubernetes Gateway API resources are not read; write an Istio Gateway and VirtualService"
                } else {
                    "not routing configuration"
                };
                diags.push(
                    Diagnostic::info(format!(
                        "skipping {kind_text} {} ({api_version}): {why}",
                        raw_name.unwrap_or("(unnamed)")
                    ))
                    .at(at("kind")),
                );
                return None;
            }
        };
        if !API_VERSIONS.contains(&version) {
            diags.push(
                Diagnostic::error(format!(
                    "apiVersion {api_version} is not supported for {kind} (valid: {})",
                    API_VERSIONS.map(|v| format!("{API_GROUP}/{v}")).join(", ")
                ))
                .at(at("apiVersion"))
                .resource(id)
                .field("apiVersion"),
            );
            return None;
        }
        const TOP: [&str; 5] = ["apiVersion", "kind", "metadata", "spec", "status"];
        let mut ok = true;
        for (key, _) in entries {
            let key_text = key.as_str().unwrap_or("null");
            if !TOP.contains(&key_text) {
                let hint = did_you_mean(key_text, &TOP).map_or_else(
                    || format!("; valid fields: {}", TOP.join(", ")),
                    |h| format!(", did you mean {h:?}?"),
                );
                diags.push(
                    Diagnostic::error(format!("unknown field {key_text:?}{hint}"))
                        .at(at(key_text))
                        .resource(id.clone())
                        .field(key_text),
                );
                ok = false;
            }
        }
        let metadata: Metadata = match root.entry("metadata") {
            Some((key, node)) => match from_node(node, "metadata", key.line) {
                Ok(m) => m,
                Err(e) => {
                    diags.push(de_diagnostic(e, &origin, &id));
                    return None;
                }
            },
            None => Metadata::default(),
        };
        let Some(name) = metadata.name.filter(|n| !n.is_empty()) else {
            diags.push(
                Diagnostic::error(format!(
                    "{kind} has no metadata.name; every resource needs a name"
                ))
                .at(at("metadata"))
                .resource(id)
                .field("metadata.name"),
            );
            return None;
        };
        if !ok {
            return None;
        }
        let head = Head {
            kind,
            name,
            namespace,
            labels: metadata.labels,
            origin,
        };
        let key = (kind, head.namespace.clone(), head.name.clone());
        let ok = match kind {
            Kind::Gateway => self.typed(root, head, |m| &mut m.gateways),
            Kind::VirtualService => self.typed(root, head, |m| &mut m.virtual_services),
            Kind::DestinationRule => self.typed(root, head, |m| &mut m.destination_rules),
            Kind::ServiceEntry => self.typed(root, head, |m| &mut m.service_entries),
            Kind::WorkloadEntry => self.typed(root, head, |m| &mut m.workload_entries),
        };
        ok.then_some(key)
    }

    /// Deserializes `spec` and stores the resource, replacing one with the
    /// same key read from an earlier file.
    fn typed<T: DeserializeOwned>(
        &mut self,
        root: &Node,
        head: Head,
        list: impl Fn(&mut Manifests) -> &mut Vec<Resource<T>>,
    ) -> bool {
        let id = format!("{} {}/{}", head.kind, head.namespace, head.name);
        let Some((spec_key, spec_node)) = root.entry("spec") else {
            self.loaded.diagnostics.push(
                Diagnostic::error(format!("{} has no spec", head.kind))
                    .at(head.origin.location(""))
                    .resource(id)
                    .field("spec"),
            );
            return false;
        };
        let spec: T = match from_node(spec_node, "spec", spec_key.line) {
            Ok(spec) => spec,
            Err(e) => {
                self.loaded
                    .diagnostics
                    .push(de_diagnostic(e, &head.origin, &id));
                return false;
            }
        };
        let key = (head.kind, head.namespace.clone(), head.name.clone());
        let resource = Resource {
            kind: head.kind,
            name: head.name,
            namespace: head.namespace,
            labels: head.labels,
            spec,
            origin: head.origin,
        };
        let origin = resource.origin.clone();
        let list = list(&mut self.loaded.manifests);
        match self.seen.get(&key) {
            Some(earlier) if earlier.file != origin.file => {
                self.loaded.diagnostics.push(
                    Diagnostic::info(format!(
                        "replaces the {} read from {earlier}, as a later kubectl apply would",
                        resource.kind
                    ))
                    .at(origin.location("metadata.name"))
                    .resource(id),
                );
                if let Some(slot) = list
                    .iter_mut()
                    .find(|r| r.name == resource.name && r.namespace == resource.namespace)
                {
                    *slot = resource;
                }
            }
            // Same file: reported by `file()`; the first definition stays.
            Some(_) => return true,
            None => list.push(resource),
        }
        self.seen.insert(key, origin);
        true
    }
}

struct Head {
    kind: Kind,
    name: String,
    namespace: String,
    labels: Labels,
    origin: Origin,
}

fn de_diagnostic(e: DeError, origin: &Origin, resource: &str) -> Diagnostic {
    let path = e.path.unwrap_or_default();
    let mut location = origin.location(&path);
    if let Some(line) = e.line {
        location.line = line;
    }
    Diagnostic::error(e.message)
        .at(location)
        .resource(resource)
        .field(display_path(&path))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GATEWAY: &str = "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: gw
spec:
  selector:
    istio: ingressgateway
  servers:
  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: ['*']
";

    fn messages(loaded: &Loaded) -> Vec<String> {
        loaded.diagnostics.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn reads_the_five_kinds_and_skips_the_rest() {
        let text = format!(
            "{GATEWAY}---\napiVersion: v1\nkind: Service\nmetadata: {{name: tcp-echo}}\nspec: {{}}\n---\n# nothing\n"
        );
        let loaded = load_str("gw.yaml", &text, &LoadOptions::default());
        assert_eq!(loaded.manifests.gateways.len(), 1);
        assert_eq!(loaded.manifests.gateways[0].namespace, "default");
        assert_eq!(
            messages(&loaded),
            vec![
                "gw.yaml:13: skipping Service tcp-echo (v1): not routing configuration (document 2)"
            ]
        );
    }

    #[test]
    fn unknown_field_names_file_line_resource_and_hint() {
        let text = GATEWAY.replace("    hosts:", "    hostz:");
        let loaded = load_str("gw.yaml", &text, &LoadOptions::default());
        assert_eq!(
            messages(&loaded),
            vec![
                "gw.yaml:10: Gateway default/gw: servers[0].hostz: unknown field \"hostz\", did you mean \"hosts\"? (document 1)"
            ]
        );
    }

    #[test]
    fn a_key_repeated_in_one_file_is_an_error() {
        let text = format!("{GATEWAY}---\n{GATEWAY}");
        let loaded = load_str("gw.yaml", &text, &LoadOptions::default());
        assert!(loaded.diagnostics.has_errors());
        assert_eq!(
            messages(&loaded),
            vec![
                "gw.yaml:15: Gateway default/gw: metadata.name: Gateway default/gw is defined twice in this file \
                  (first at line 1, document 1); give each resource its own name (document 2)"
            ]
        );
    }

    #[test]
    fn unsupported_api_version_is_an_error() {
        let text = GATEWAY.replace("networking.istio.io/v1", "networking.istio.io/v2");
        let loaded = load_str("gw.yaml", &text, &LoadOptions::default());
        assert!(loaded.diagnostics.has_errors());
        assert!(
            messages(&loaded)[0]
                .contains("valid: networking.istio.io/v1, networking.istio.io/v1beta1")
        );
    }

    #[test]
    fn line_index_falls_back_to_the_closest_written_ancestor() {
        let loaded = load_str("gw.yaml", GATEWAY, &LoadOptions::default());
        let gw = &loaded.manifests.gateways[0];
        assert_eq!(gw.origin.location("spec.servers[0].port.number").line, 9);
        assert_eq!(gw.origin.location("spec.servers[0].bind").line, 9);
        assert_eq!(gw.origin.location("spec.servers[0].hosts[0]").line, 10);
    }
}
