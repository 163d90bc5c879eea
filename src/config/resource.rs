//! What a loaded resource is: the kinds ringway reads, a resource with its
//! origin (file, document, and the line of every field path, so that every
//! later stage can point at a line), and the manifests of a whole
//! configuration in creation order.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use super::manifest::{
    DestinationRuleSpec, GatewaySpec, Labels, ServiceEntrySpec, VirtualServiceSpec,
    WorkloadEntrySpec,
};
use super::yaml::{Node, Value};
use crate::diag::{Diagnostic, Location, Severity};

pub const API_GROUP: &str = "networking.istio.io";
pub const API_VERSIONS: [&str; 3] = ["v1", "v1beta1", "v1alpha3"];
pub const DEFAULT_NAMESPACE: &str = "default";

/// The other kinds of Istio's networking group: they configure sidecars, not
/// a gateway's routing, and are skipped with a note.
pub const MESH_KINDS: [&str; 4] = ["Sidecar", "EnvoyFilter", "WorkloadGroup", "ProxyConfig"];

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

    pub(super) fn parse(s: &str) -> Option<Kind> {
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
    pub(super) fn build(root: &Node) -> LineIndex {
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
    pub(super) lines: Arc<LineIndex>,
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
