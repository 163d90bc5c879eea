//! `compile(&Manifests) -> RouteTable`: the only place names become indices.
//!
//! Pure: no I/O, no clock, no randomness. The decisions follow istiod's
//! gateway code (SPEC §1.2): for TCP, one route per (bind, port), chosen from
//! the first VirtualService in creation order bound to the gateway whose
//! hosts overlap the server's, and within it the first `tcp` rule whose match
//! passes; for HTTP, virtual hosts and per-request routes as
//! `buildGatewayHTTPRouteConfig` builds them (`compile/http.rs`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;

use crate::config::Manifests;
use crate::config::manifest::Labels;
use crate::diag::{Diagnostic, Diagnostics, Severity};

use super::http::{Headers, RouteAction, RouteMatch};
use super::names::expand_host;
use super::policy::{RulePolicy, compile_rule};
use super::services::Registry;
use super::table::{ClusterId, RouteId, RouteTable};

mod checks;
mod clusters;
mod delegate;
mod http;
mod http_actions;
mod http_rules;
mod listeners;
mod routes;

pub const DEFAULT_DOMAIN: &str = "cluster.local";

#[derive(Debug, Clone)]
pub struct CompileOptions {
    /// Labels of this ringway instance, matched by Gateway selectors.
    pub labels: Labels,
    /// Domain suffix of short names: `name.namespace.svc.<domain>`.
    pub domain: String,
    /// The namespace this instance runs in, compared with HTTP match
    /// blocks' `sourceNamespace` (Istio compares the gateway pod's).
    pub namespace: String,
}

/// The namespace of Istio's ingress gateway.
pub const DEFAULT_INSTANCE_NAMESPACE: &str = "istio-system";

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            labels: Labels::from([("istio".to_owned(), "ingressgateway".to_owned())]),
            domain: DEFAULT_DOMAIN.to_owned(),
            namespace: DEFAULT_INSTANCE_NAMESPACE.to_owned(),
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
        effective: Vec::new(),
        http_actions: HashMap::new(),
        http_matches: HashMap::new(),
        diags,
    };
    c.index_rules();
    c.check_virtual_services();
    c.effective = c.merge_delegates();
    c.check_http_rules();
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
    Http,
}

impl Section {
    fn name(self) -> &'static str {
        match self {
            Section::Tcp => "tcp",
            Section::Tls => "tls",
            Section::Http => "http",
        }
    }
}

/// A server of a selected gateway: (gateway index, server index).
type ServerRef = (usize, usize);

enum SlotKind {
    Tcp(ServerRef),
    Tls(Vec<ServerRef>),
    /// Plain HTTP servers of one (bind, port), merged across Gateways.
    Http(Vec<ServerRef>),
}

/// What a server opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerKind {
    Tcp,
    Tls,
    Http,
}

impl ServerKind {
    fn name(self) -> &'static str {
        match self {
            ServerKind::Tcp => "TCP",
            ServerKind::Tls => "TLS passthrough",
            ServerKind::Http => "HTTP",
        }
    }
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
    /// The http rules of each VirtualService, delegates merged in.
    effective: Vec<Rc<Vec<delegate::EffectiveRule>>>,
    /// (virtual service, effective rule) → action, once compiled.
    http_actions: HashMap<(usize, usize), Option<(RouteAction, Headers)>>,
    /// (virtual service, effective rule, match block) → match, once compiled.
    http_matches: HashMap<(usize, usize, usize), Option<RouteMatch>>,
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
