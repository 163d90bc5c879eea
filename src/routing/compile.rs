//! `compile(&Manifests) -> RouteTable`: the only place names become indices.
//!
//! Pure: no I/O, no clock, no randomness. The decisions follow istiod's
//! gateway code (SPEC §1.2): one route per (bind, port), chosen from the first
//! VirtualService in creation order bound to the gateway whose hosts overlap
//! the server's, and within it the first `tcp` rule whose match passes.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::config::Manifests;
use crate::config::manifest::Labels;
use crate::diag::{Diagnostic, Diagnostics, Severity};

use super::names::expand_host;
use super::policy::{RulePolicy, compile_rule};
use super::services::Registry;
use super::table::{ClusterId, RouteId, RouteTable};

mod checks;
mod clusters;
mod listeners;
mod routes;

pub const DEFAULT_DOMAIN: &str = "cluster.local";

#[derive(Debug, Clone)]
pub struct CompileOptions {
    /// Labels of this ringway instance, matched by Gateway selectors.
    pub labels: Labels,
    /// Domain suffix of short names: `name.namespace.svc.<domain>`.
    pub domain: String,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            labels: Labels::from([("istio".to_owned(), "ingressgateway".to_owned())]),
            domain: DEFAULT_DOMAIN.to_owned(),
        }
    }
}

/// The compiled table and everything worth telling about it. The table must
/// not be used when `diagnostics.has_errors()`.
#[derive(Debug)]
pub struct Compiled {
    pub table: RouteTable,
    pub diagnostics: Diagnostics,
}

pub fn compile(manifests: &Manifests, options: &CompileOptions) -> Compiled {
    let mut diags = Diagnostics::default();
    let registry = Registry::build(manifests, &options.domain, &mut diags);
    let mut c = Compiler {
        m: manifests,
        options,
        rules: HashMap::new(),
        registry,
        table: RouteTable::default(),
        clusters: HashMap::new(),
        routes: HashMap::new(),
        diags,
    };
    c.index_rules();
    c.check_virtual_services();
    let plan = c.plan_listeners();
    for slot in &plan {
        c.listener(slot);
    }
    c.check_unused_rules();
    Compiled {
        table: c.table,
        diagnostics: c.diags,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Section {
    Tcp,
    Tls,
}

impl Section {
    fn name(self) -> &'static str {
        match self {
            Section::Tcp => "tcp",
            Section::Tls => "tls",
        }
    }
}

/// A server of a selected gateway: (gateway index, server index).
type ServerRef = (usize, usize);

enum SlotKind {
    Tcp(ServerRef),
    Tls(Vec<ServerRef>),
}

struct Slot {
    address: SocketAddr,
    kind: SlotKind,
}

struct Compiler<'m> {
    m: &'m Manifests,
    options: &'m CompileOptions,
    registry: Registry<'m>,
    /// DestinationRules by expanded host.
    rules: HashMap<String, (usize, RulePolicy)>,
    table: RouteTable,
    clusters: HashMap<String, ClusterId>,
    /// (virtual service, section, rule) → route, once compiled.
    routes: HashMap<(usize, Section, usize), Option<RouteId>>,
    diags: Diagnostics,
}

impl<'m> Compiler<'m> {
    fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    fn index_rules(&mut self) {
        for (i, dr) in self.m.destination_rules.iter().enumerate() {
            let policy = compile_rule(dr, &mut self.diags);
            if dr.spec.host.is_empty() {
                self.push(dr.diag(Severity::Error, "spec.host", "host is required"));
                continue;
            }
            let host = expand_host(&dr.spec.host, &dr.namespace, &self.options.domain);
            if let Some((first, _)) = self.rules.get(&host) {
                let other = &self.m.destination_rules[*first];
                self.push(dr.diag(
                    Severity::Error,
                    "spec.host",
                    format!(
                        "host {host} already has {} at {}; put all subsets and policies of a host in one DestinationRule",
                        other.id(),
                        other.origin
                    ),
                ));
                continue;
            }
            self.rules.insert(host, (i, policy));
        }
    }
}

fn fmt_labels(labels: &Labels) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{{{}}}", pairs.join(","))
}
