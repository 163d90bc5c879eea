//! Documents of a source's snapshot → [`Manifests`].
//!
//! Splits each text (a file) into YAML documents, keeps the five Istio
//! networking kinds and skips everything else with a note. A resource read
//! again from a later file replaces the earlier one (as a second `kubectl
//! apply` would) and keeps its place in creation order.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use super::de::{DeError, from_node};
use super::manifest::{Labels, Metadata};
use super::schema;
use super::yaml::{self, Limits, Node, Value};

pub use super::resource::{
    API_GROUP, API_VERSIONS, DEFAULT_NAMESPACE, Kind, LineIndex, MESH_KINDS, Manifests, Origin,
    Resource, display_path,
};
use crate::diag::{Diagnostic, Diagnostics, Location, Severity, did_you_mean};
use crate::source::{self, Content, Document};

mod holds;

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
}

/// Loads every document, in order. Errors do not stop the load: every
/// document is read so that one run reports every problem; the caller
/// rejects the configuration when `diagnostics.has_errors()`.
pub fn load_documents(documents: &[Document], options: &LoadOptions) -> Loaded {
    let mut loader = Loader {
        options,
        namespace: options.namespace.clone(),
        loaded: Loaded::default(),
        seen: HashMap::new(),
    };
    for document in documents {
        match &document.content {
            Content::Text(bytes) => {
                loader.namespace = match &document.holds {
                    Some(holds) => holds.namespace.clone(),
                    None => options.namespace.clone(),
                };
                let errors = loader.loaded.diagnostics.count(Severity::Error);
                let defined = loader.file(&document.origin, bytes);
                if let Some(holds) = &document.holds {
                    let had_errors = loader.loaded.diagnostics.count(Severity::Error) > errors;
                    if let Some(d) = holds::check(&document.origin, holds, &defined, had_errors) {
                        loader.loaded.diagnostics.push(d);
                    }
                }
            }
            Content::Unread(diagnostic) => loader.loaded.diagnostics.push(diagnostic.clone()),
        }
    }
    loader.loaded
}

/// Loads one in-memory text (tests and fuzzing), named `name` in messages.
pub fn load_str(name: &str, text: &str, options: &LoadOptions) -> Loaded {
    load_documents(&[Document::memory(name, text)], options)
}

struct Loader<'a> {
    options: &'a LoadOptions,
    /// The namespace of a resource that sets none, in the document being
    /// read: `--namespace`, or the namespace its store key names (every
    /// instance reads a stored resource the same, whatever its own
    /// `--namespace`).
    namespace: String,
    loaded: Loaded,
    /// (kind, namespace, name) → where it was read.
    seen: HashMap<(Kind, String, String), Origin>,
}

impl Loader<'_> {
    /// Reads one text: its YAML documents, or the List items they hold.
    /// Returns the keys of the resources it defined.
    fn file(&mut self, from: &source::Origin, bytes: &[u8]) -> Vec<(Kind, String, String)> {
        let name: Arc<str> = from.to_string().into();
        let Some(documents) = self.parse(&name, bytes) else {
            return Vec::new();
        };
        let mut in_this_file: HashMap<(Kind, String, String), Origin> = HashMap::new();
        for doc in documents {
            let Some(root) = &doc.root else { continue };
            if !doc.duplicates.is_empty() {
                // YAML forbids a repeated key; which value was meant is
                // unknown, so the document is not read.
                self.duplicate_keys(&name, &doc, root);
                continue;
            }
            for (resource, line) in self.resources(&name, &doc, root) {
                let origin = Origin {
                    file: name.clone(),
                    document: doc.index,
                    line,
                    lines: Arc::new(LineIndex::build(&resource)),
                };
                self.resource(&resource, origin, &mut in_this_file);
            }
        }
        let mut defined: Vec<_> = in_this_file.into_keys().collect();
        defined.sort();
        defined
    }

    /// The YAML documents of a text, or `None` when it is not UTF-8 or not
    /// YAML (said at the line of the mistake).
    fn parse(&mut self, name: &Arc<str>, bytes: &[u8]) -> Option<Vec<yaml::Document>> {
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
                            file: name.clone(),
                            document: 1,
                            line: u32::try_from(line).unwrap_or(u32::MAX),
                        }),
                    );
                    return None;
                }
            };
        match yaml::parse(text, self.options.limits) {
            Ok(documents) => Some(documents),
            Err(e) => {
                self.loaded
                    .diagnostics
                    .push(Diagnostic::error(e.message).at(Location {
                        file: name.clone(),
                        document: e.document,
                        line: e.line,
                    }));
                None
            }
        }
    }

    /// One error per repeated key of `doc`, naming its resource and field.
    fn duplicate_keys(&mut self, name: &Arc<str>, doc: &yaml::Document, root: &Node) {
        let id = self.resource_id(root);
        for d in &doc.duplicates {
            self.loaded.diagnostics.push(
                Diagnostic::error(format!(
                    "duplicate key {:?} (first at line {}); YAML forbids repeating a key: keep one",
                    d.key, d.first_line
                ))
                .at(Location {
                    file: name.clone(),
                    document: doc.index,
                    line: d.line,
                })
                .resource(id.clone())
                .field(display_path(&d.path)),
            );
        }
    }

    /// The resources a document holds, each with its line: the document
    /// itself, or the items of a List.
    fn resources<'n>(
        &mut self,
        name: &Arc<str>,
        doc: &yaml::Document,
        root: &'n Node,
    ) -> Vec<(Cow<'n, Node>, u32)> {
        // `kubectl get vs,dr -o yaml` writes a `List` (or a
        // `VirtualServiceList`...): its items are the documents.
        let Some(items) = list_items(root) else {
            return vec![(Cow::Borrowed(root), doc.line)];
        };
        self.loaded.diagnostics.push(
            Diagnostic::info(format!(
                "reading the {} items of a {}",
                items.len(),
                root.get("kind").and_then(Node::as_str).unwrap_or("List")
            ))
            .at(Location {
                file: name.clone(),
                document: doc.index,
                line: doc.line,
            }),
        );
        items
            .into_iter()
            .map(|item| {
                let line = item.line;
                (item, line)
            })
            .collect()
    }

    /// `Kind namespace/name` of a document, as far as it says.
    fn resource_id(&self, root: &Node) -> String {
        let meta = |key: &str| {
            root.get("metadata")
                .and_then(|m| m.get(key))
                .and_then(Node::as_str)
        };
        format!(
            "{} {}/{}",
            root.get("kind")
                .and_then(Node::as_str)
                .unwrap_or("(no kind)"),
            meta("namespace").unwrap_or(&self.namespace),
            meta("name")
                .filter(|n| !n.is_empty())
                .unwrap_or("(unnamed)")
        )
    }

    /// Reads one resource (a document, or an item of a List) and reports a
    /// second definition of its key in the same file.
    fn resource(
        &mut self,
        root: &Node,
        origin: Origin,
        in_this_file: &mut HashMap<(Kind, String, String), Origin>,
    ) {
        if let Some(key) = self.document(root, origin.clone()) {
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

    /// Reads one document; returns the key of the resource it defined.
    fn document(&mut self, root: &Node, origin: Origin) -> Option<(Kind, String, String)> {
        let Value::Map(entries) = &root.value else {
            self.loaded.diagnostics.push(
                Diagnostic::error(format!(
                    "expected a mapping with apiVersion, kind, metadata and spec, found {}",
                    root.describe()
                ))
                .at(origin.location("")),
            );
            return None;
        };
        let header = self.header(root, &origin)?;
        let fields_known = self.top_level_fields(entries, &origin, &header.id);
        let metadata: Metadata = match root.entry("metadata") {
            Some((key, node)) => match from_node(node, "metadata", key.line) {
                Ok(m) => m,
                Err(e) => {
                    let d = de_diagnostic(e, &origin, &header.id);
                    self.loaded.diagnostics.push(d);
                    return None;
                }
            },
            None => Metadata::default(),
        };
        let Some(name) = metadata.name.filter(|n| !n.is_empty()) else {
            self.loaded.diagnostics.push(
                Diagnostic::error(format!(
                    "{} has no metadata.name; every resource needs a name",
                    header.kind
                ))
                .at(origin.location("metadata"))
                .resource(header.id)
                .field("metadata.name"),
            );
            return None;
        };
        if !fields_known {
            return None;
        }
        let kind = header.kind;
        let head = Head {
            kind,
            name,
            namespace: header.namespace,
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

    /// The kind and namespace a document declares, and its name as far as
    /// it says (for every message about it); `None` when it has no kind or
    /// apiVersion, or one ringway does not read (skipped with a note, or an
    /// error when it is a networking kind that does not exist).
    fn header(&mut self, root: &Node, origin: &Origin) -> Option<Header> {
        let Some(kind_text) = root.get("kind").and_then(Node::as_str) else {
            self.loaded.diagnostics.push(
                Diagnostic::error("kind is missing: every document needs apiVersion and kind")
                    .at(origin.location(""))
                    .field("kind"),
            );
            return None;
        };
        let raw_meta = |key: &str| {
            root.get("metadata")
                .and_then(|m| m.get(key))
                .and_then(Node::as_str)
        };
        let raw_name = raw_meta("name").filter(|n| !n.is_empty());
        let namespace = raw_meta("namespace").map_or_else(|| self.namespace.clone(), str::to_owned);
        let id = format!(
            "{kind_text} {namespace}/{}",
            raw_name.unwrap_or("(unnamed)")
        );
        let Some(api_version) = root.get("apiVersion").and_then(Node::as_str) else {
            self.loaded.diagnostics.push(
                Diagnostic::error(
                    "apiVersion is missing: every document needs apiVersion and kind",
                )
                .at(origin.location(""))
                .resource(id)
                .field("apiVersion"),
            );
            return None;
        };
        let declared = Declared {
            kind: kind_text,
            api_version,
            name: raw_name,
        };
        let kind = self.kind(&declared, origin, &id)?;
        Some(Header {
            kind,
            namespace,
            id,
        })
    }

    /// The kind of a document with its apiVersion checked: `None` with an
    /// error for an unknown networking kind or version, with a note for
    /// every other group's kinds (skipped).
    fn kind(&mut self, declared: &Declared, origin: &Origin, id: &str) -> Option<Kind> {
        let at = |path: &str| origin.location(path);
        let (kind_text, api_version) = (declared.kind, declared.api_version);
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let diags = &mut self.loaded.diagnostics;
        let kind = match Kind::parse(kind_text) {
            Some(kind) if group == API_GROUP => kind,
            None if group == API_GROUP && !MESH_KINDS.contains(&kind_text) => {
                let names: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
                let hint = did_you_mean(kind_text, &names)
                    .map_or_else(String::new, |h| format!(", did you mean {h:?}?"));
                diags.push(
                    Diagnostic::error(format!(
                        "unknown kind {kind_text:?} in {API_GROUP}{hint} (ringway reads {}; {} are skipped)",
                        names.join(", "),
                        MESH_KINDS.join(", ")
                    ))
                    .at(at("kind"))
                    .resource(id)
                    .field("kind"),
                );
                return None;
            }
            _ => {
                let why = if group == "gateway.networking.k8s.io" {
                    "Kubernetes Gateway API resources are not read; write an Istio Gateway and VirtualService"
                } else if group == API_GROUP {
                    "it configures sidecars, not a gateway's routing"
                } else {
                    "not routing configuration"
                };
                diags.push(
                    Diagnostic::info(format!(
                        "skipping {kind_text} {} ({api_version}): {why}",
                        declared.name.unwrap_or("(unnamed)")
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
        Some(kind)
    }

    /// An error for each top-level key other than apiVersion, kind,
    /// metadata, spec and status; true when there is none.
    fn top_level_fields(&mut self, entries: &[(Node, Node)], origin: &Origin, id: &str) -> bool {
        const TOP: [&str; 5] = ["apiVersion", "kind", "metadata", "spec", "status"];
        let mut ok = true;
        for (key, _) in entries {
            let key_text = key.as_str().unwrap_or("null");
            if !TOP.contains(&key_text) {
                let hint = did_you_mean(key_text, &TOP).map_or_else(
                    || format!("; valid fields: {}", TOP.join(", ")),
                    |h| format!(", did you mean {h:?}?"),
                );
                self.loaded.diagnostics.push(
                    Diagnostic::error(format!("unknown field {key_text:?}{hint}"))
                        .at(origin.location(key_text))
                        .resource(id)
                        .field(key_text),
                );
                ok = false;
            }
        }
        ok
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
        // Every unknown field, bad enum value or number of the whole spec,
        // the parts ringway acts on and the parts it only accepts.
        let problems = schema::check(spec_node, head.kind.as_str(), "spec");
        if !problems.is_empty() {
            for e in problems {
                self.loaded
                    .diagnostics
                    .push(de_diagnostic(e, &head.origin, &id));
            }
            return false;
        }
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

/// What a document says it is, as written.
struct Declared<'a> {
    kind: &'a str,
    api_version: &'a str,
    name: Option<&'a str>,
}

/// A document's kind and namespace, and how messages name it
/// (`Kind namespace/name`, as far as it says).
struct Header {
    kind: Kind,
    namespace: String,
    id: String,
}

struct Head {
    kind: Kind,
    name: String,
    namespace: String,
    labels: Labels,
    origin: Origin,
}

/// The items of a List document: `kind: List` (apiVersion v1), which is
/// what `kubectl get gw,vs,dr,se -o yaml` writes, or a list of one
/// networking kind (`VirtualServiceList`), whose items may leave out their
/// apiVersion and kind. `None` for any other document.
fn list_items(root: &Node) -> Option<Vec<Cow<'_, Node>>> {
    let kind = root.get("kind")?.as_str()?;
    let api_version = root.get("apiVersion").and_then(Node::as_str).unwrap_or("");
    let typed = match kind {
        "List" if api_version == "v1" => None,
        _ => {
            let item = kind.strip_suffix("List")?;
            Kind::parse(item)?;
            api_version
                .starts_with(&format!("{API_GROUP}/"))
                .then_some(())?;
            Some(item)
        }
    };
    let items = match &root.get("items")?.value {
        Value::Seq(items) => items.as_slice(),
        _ => &[],
    };
    Some(
        items
            .iter()
            .map(|item| match (typed, &item.value) {
                (Some(kind), Value::Map(entries)) if item.get("kind").is_none() => {
                    let scalar = |text: &str| Node {
                        value: Value::Scalar {
                            text: text.to_owned(),
                            plain: true,
                        },
                        line: item.line,
                    };
                    let mut filled = vec![
                        (scalar("apiVersion"), scalar(api_version)),
                        (scalar("kind"), scalar(kind)),
                    ];
                    filled.extend(
                        entries
                            .iter()
                            .filter(|(k, _)| k.as_str() != Some("apiVersion"))
                            .cloned(),
                    );
                    Cow::Owned(Node {
                        value: Value::Map(filled),
                        line: item.line,
                    })
                }
                _ => Cow::Borrowed(item),
            })
            .collect(),
    )
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
