//! `compile(&Manifests) -> RouteTable`: the only place names become indices.
//!
//! Pure: no I/O, no clock, no randomness. The decisions follow istiod's
//! gateway code (SPEC §1.2): one route per (bind, port), chosen from the first
//! VirtualService in creation order bound to the gateway whose hosts overlap
//! the server's, and within it the first `tcp` rule whose match passes.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::config::manifest::{
    GatewaySpec, Labels, RouteDestination, Server, TlsMode, VirtualServiceSpec,
};
use crate::config::{Manifests, Resource};
use crate::diag::{Diagnostic, Diagnostics, Severity};

use super::names::{GatewayRef, ServerHost, expand_host, resolve_gateway};
use super::policy::{RulePolicy, Unservable, compile_rule, default_route_timeouts, port_number};
use super::services::Registry;
use super::table::{
    Cluster, ClusterId, Listener, ListenerRouting, Route, RouteId, RouteTable, Service, SniTable,
    WeightedCluster,
};

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

    fn gateway_selected(&mut self, gw: &Resource<GatewaySpec>) -> bool {
        let Some(selector) = &gw.spec.selector else {
            return true;
        };
        if super::services::contains(&self.options.labels, selector) {
            return true;
        }
        self.push(gw.diag(
            Severity::Warning,
            "spec.selector",
            format!(
                "selector {} does not match this instance's labels {}; the gateway is ignored \
                 (run with --labels to change the instance's labels)",
                fmt_labels(selector),
                fmt_labels(&self.options.labels)
            ),
        ));
        false
    }

    /// Validates every server and decides which (bind, port) opens which kind
    /// of listener; conflicts are errors.
    fn plan_listeners(&mut self) -> Vec<Slot> {
        let mut plan: Vec<Slot> = Vec::new();
        for (g, gw) in self.m.gateways.iter().enumerate() {
            let selected = self.gateway_selected(gw);
            for (s, server) in gw.spec.servers.iter().enumerate() {
                let Some((address, tls)) = self.check_server(gw, s, server) else {
                    continue;
                };
                if !selected {
                    continue;
                }
                let existing = plan.iter_mut().find(|slot| slot.address == address);
                match (existing, tls) {
                    (None, false) => plan.push(Slot {
                        address,
                        kind: SlotKind::Tcp((g, s)),
                    }),
                    (None, true) => plan.push(Slot {
                        address,
                        kind: SlotKind::Tls(vec![(g, s)]),
                    }),
                    (
                        Some(Slot {
                            kind: SlotKind::Tls(servers),
                            ..
                        }),
                        true,
                    ) => servers.push((g, s)),
                    (Some(slot), _) => {
                        let (og, os) = match &slot.kind {
                            SlotKind::Tcp(r) => *r,
                            SlotKind::Tls(rs) => rs[0],
                        };
                        let other = &self.m.gateways[og];
                        let d = gw.diag(
                            Severity::Error,
                            &format!("spec.servers[{s}].port"),
                            format!(
                                "{address} is already served by {} servers[{os}] at {}; only one TCP server may \
                                 use a bind address and port (Istio would silently drop this one)",
                                other.id(),
                                other.origin.at(&format!("spec.servers[{os}]")),
                            ),
                        );
                        self.push(d);
                    }
                }
            }
        }
        plan
    }

    /// Checks one server; returns its address and whether it is TLS
    /// passthrough, or `None` when it opens no listener.
    fn check_server(
        &mut self,
        gw: &Resource<GatewaySpec>,
        s: usize,
        server: &Server,
    ) -> Option<(SocketAddr, bool)> {
        let path = format!("spec.servers[{s}]");
        let mut ok = true;
        let port = port_number(server.port.number);
        if port.is_none() {
            self.push(gw.diag(
                Severity::Error,
                &format!("{path}.port.number"),
                format!("port {} is out of range (1-65535)", server.port.number),
            ));
            ok = false;
        }
        if server.port.name.as_deref().is_none_or(str::is_empty) {
            self.push(gw.diag(
                Severity::Error,
                &format!("{path}.port.name"),
                "port.name is required (for example: tcp)",
            ));
            ok = false;
        } else if let Some(j) = gw.spec.servers[..s]
            .iter()
            .position(|o| o.port.name == server.port.name)
        {
            self.push(gw.diag(
                Severity::Error,
                &format!("{path}.port.name"),
                format!("duplicate port name {:?} (also servers[{j}]); port names must be unique in a Gateway", server.port.name.as_deref().unwrap_or_default()),
            ));
            ok = false;
        }
        if server.port.target_port.is_some() {
            self.push(gw.diag(
                Severity::Warning,
                &format!("{path}.port.targetPort"),
                "targetPort has no effect on a gateway server",
            ));
        }
        if server.default_endpoint.is_some() {
            self.push(gw.diag(
                Severity::Warning,
                &format!("{path}.defaultEndpoint"),
                "defaultEndpoint is not implemented (nor by Istio); it has no effect",
            ));
        }
        if server.hosts.is_empty() {
            self.push(gw.diag(
                Severity::Error,
                &format!("{path}.hosts"),
                "at least one host is required (\"*\" admits every VirtualService)",
            ));
            ok = false;
        }
        let ip = match server.bind.as_deref() {
            None | Some("") => Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            Some(bind) => match bind.parse::<IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    self.push(gw.diag(
                        Severity::Error,
                        &format!("{path}.bind"),
                        format!("bind {bind:?} is not an IP address (for example 0.0.0.0 or 127.0.0.1; unix sockets are not supported)"),
                    ));
                    None
                }
            },
        };
        let protocol = server.port.protocol.to_ascii_uppercase();
        let tls = match protocol.as_str() {
            "TCP" | "MONGO" | "MYSQL" | "REDIS" => {
                if server.tls.is_some() {
                    self.push(gw.diag(
                        Severity::Error,
                        &format!("{path}.tls"),
                        format!("a {protocol} server takes no tls block; for SNI routing use protocol TLS with tls.mode: PASSTHROUGH"),
                    ));
                    ok = false;
                }
                false
            }
            "TLS" | "HTTPS" => match server
                .tls
                .as_ref()
                .map(|t| t.mode.unwrap_or(TlsMode::Passthrough))
            {
                None => {
                    self.push(gw.diag(
                        Severity::Error,
                        &format!("{path}.tls"),
                        format!("a {protocol} server needs a tls block (ringway supports tls.mode: PASSTHROUGH)"),
                    ));
                    return None;
                }
                Some(TlsMode::Passthrough) => true,
                Some(TlsMode::AutoPassthrough) => {
                    self.push(gw.diag(
                        Severity::Warning,
                        &format!("{path}.tls.mode"),
                        format!(
                            "AUTO_PASSTHROUGH routes by the SNI of Istio's multi-network east-west traffic \
                             (outbound_.PORT_._.HOST names, without a VirtualService), which ringway does not \
                             do: no listener on port {}; for SNI routing with a VirtualService use PASSTHROUGH",
                            server.port.number
                        ),
                    ));
                    return None;
                }
                Some(mode) => {
                    self.push(gw.diag(
                        Severity::Warning,
                        &format!("{path}.tls.mode"),
                        format!("TLS termination ({}) is not supported yet: no listener on port {}; use PASSTHROUGH", tls_mode_name(mode), server.port.number),
                    ));
                    return None;
                }
            },
            "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB" => {
                self.push(gw.diag(
                    Severity::Warning,
                    &format!("{path}.port.protocol"),
                    format!(
                        "{protocol} servers are not supported yet: no listener on port {}",
                        server.port.number
                    ),
                ));
                return None;
            }
            _ => {
                self.push(gw.diag(
                    Severity::Error,
                    &format!("{path}.port.protocol"),
                    format!(
                        "unknown protocol {:?} (valid: TCP, TLS, HTTPS, MONGO, MYSQL, REDIS; HTTP, HTTP2, GRPC are not supported yet)",
                        server.port.protocol
                    ),
                ));
                return None;
            }
        };
        if tls {
            if let Some(t) = &server.tls {
                let termination_fields = [
                    t.server_certificate.is_some(),
                    t.private_key.is_some(),
                    t.ca_certificates.is_some(),
                    t.credential_name.is_some(),
                    t.credential_names.is_some(),
                    t.tls_certificates.is_some(),
                    t.min_protocol_version.is_some(),
                    t.max_protocol_version.is_some(),
                    t.cipher_suites.is_some(),
                    t.https_redirect.is_some(),
                    t.subject_alt_names.is_some(),
                    t.verify_certificate_spki.is_some(),
                    t.verify_certificate_hash.is_some(),
                    t.ca_crl.is_some(),
                    t.ca_cert_credential_name.is_some(),
                    t.insecure_skip_verify.is_some(),
                ];
                if termination_fields.into_iter().any(|f| f) {
                    self.push(gw.diag(
                        Severity::Warning,
                        &format!("{path}.tls"),
                        "certificate and protocol settings have no effect with mode PASSTHROUGH: TLS is not terminated",
                    ));
                }
            }
        }
        match (ok, ip, port) {
            (true, Some(ip), Some(port)) => Some((SocketAddr::new(ip, port), tls)),
            _ => None,
        }
    }

    fn listener(&mut self, slot: &Slot) {
        let address = slot.address;
        let name = format!("{}_{}", address.ip(), address.port());
        match &slot.kind {
            SlotKind::Tcp(server) => {
                let gw = &self.m.gateways[server.0];
                if let Some(route) = self.tcp_route(*server, address) {
                    self.table.listeners.push(Listener {
                        name,
                        address,
                        gateways: vec![format!("{}/{}", gw.namespace, gw.name)],
                        routing: ListenerRouting::Tcp { route },
                    });
                }
            }
            SlotKind::Tls(servers) => {
                let sni = self.sni_table(servers, address);
                if !sni.is_empty() {
                    let mut gateways: Vec<String> = servers
                        .iter()
                        .map(|(g, _)| {
                            format!(
                                "{}/{}",
                                self.m.gateways[*g].namespace, self.m.gateways[*g].name
                            )
                        })
                        .collect();
                    gateways.dedup();
                    self.table.listeners.push(Listener {
                        name,
                        address,
                        gateways,
                        routing: ListenerRouting::TlsPassthrough { sni },
                    });
                }
            }
        }
    }

    /// The gateways a VirtualService binds to (`None` entries are `mesh`).
    fn bound_gateways(&self, vs: &Resource<VirtualServiceSpec>) -> Vec<GatewayRef> {
        match &vs.spec.gateways {
            None => vec![GatewayRef::Mesh],
            Some(list) => list
                .iter()
                .map(|g| resolve_gateway(g, &vs.namespace))
                .collect(),
        }
    }

    fn binds_to(&self, vs: &Resource<VirtualServiceSpec>, gateway: &str) -> bool {
        self.bound_gateways(vs)
            .iter()
            .any(|g| matches!(g, GatewayRef::Gateway(id) if id == gateway))
    }

    fn hosts_admitted(
        &self,
        vs: &Resource<VirtualServiceSpec>,
        server: &Server,
        gw_ns: &str,
    ) -> bool {
        server
            .hosts
            .iter()
            .map(|h| ServerHost::parse(h, gw_ns))
            .any(|sh| {
                vs.spec
                    .hosts
                    .iter()
                    .map(|h| expand_host(h, &vs.namespace, &self.options.domain))
                    .any(|h| sh.admits(&vs.namespace, &h))
            })
    }

    /// Whether match blocks pass for a server port on a gateway; an empty
    /// list passes.
    fn passes<'a>(
        &self,
        vs: &Resource<VirtualServiceSpec>,
        matches: impl IntoIterator<Item = (Option<u32>, &'a [String])>,
        port: u16,
        gateway: &str,
    ) -> bool {
        let mut any = false;
        for (m_port, m_gateways) in matches {
            any = true;
            let port_ok = m_port.is_none_or(|p| p == u32::from(port));
            let gw_ok = m_gateways.is_empty()
                || m_gateways.iter().any(|g| {
                    resolve_gateway(g, &vs.namespace) == GatewayRef::Gateway(gateway.to_owned())
                });
            if port_ok && gw_ok {
                return true;
            }
        }
        !any
    }

    /// Picks the route of an opaque TCP server, or explains why there is none.
    fn tcp_route(&mut self, (g, s): ServerRef, address: SocketAddr) -> Option<RouteId> {
        let m = self.m;
        let gw = &m.gateways[g];
        let server = &gw.spec.servers[s];
        let gw_id = format!("{}/{}", gw.namespace, gw.name);
        let port = address.port();
        let mut winner: Option<(usize, usize)> = None;
        let mut reasons: Vec<String> = Vec::new();
        for (v, vs) in m.virtual_services.iter().enumerate() {
            let rule = vs.spec.tcp.iter().position(|r| {
                self.passes(
                    vs,
                    r.matches.iter().map(|m| (m.port, m.gateways.as_slice())),
                    port,
                    &gw_id,
                )
            });
            if !self.binds_to(vs, &gw_id) {
                if rule.is_some() && self.hosts_admitted(vs, server, &gw.namespace) {
                    let lists = match &vs.spec.gateways {
                        None => {
                            "gateways is not set, so it binds to mesh (sidecars) only".to_owned()
                        }
                        Some(list) => format!("it lists [{}]", list.join(", ")),
                    };
                    reasons.push(format!(
                        "{} does not list gateway {gw_id} ({lists})",
                        vs.id()
                    ));
                }
                continue;
            }
            if !self.hosts_admitted(vs, server, &gw.namespace) {
                reasons.push(format!(
                    "{} hosts [{}] match none of the server hosts [{}]",
                    vs.id(),
                    vs.spec.hosts.join(", "),
                    server.hosts.join(", ")
                ));
                continue;
            }
            if vs.spec.tcp.is_empty() {
                reasons.push(if vs.spec.http.is_some() {
                    format!("{} has http routes only, which never apply to a TCP server: write the route under tcp:", vs.id())
                } else {
                    format!("{} has no tcp routes", vs.id())
                });
                continue;
            }
            match (rule, winner) {
                (None, _) => {
                    let ports: Vec<String> = vs
                        .spec
                        .tcp
                        .iter()
                        .flat_map(|r| r.matches.iter().filter_map(|m| m.port))
                        .map(|p| p.to_string())
                        .collect();
                    reasons.push(format!(
                        "{} has no tcp rule matching port {port} on this gateway (its rules match port {})",
                        vs.id(),
                        if ports.is_empty() { "-".to_owned() } else { ports.join(", ") }
                    ));
                }
                (Some(r), None) => winner = Some((v, r)),
                (Some(r), Some((wv, wr))) => {
                    let w = &m.virtual_services[wv];
                    self.push(vs.diag(
                        Severity::Warning,
                        &format!("spec.tcp[{r}]"),
                        format!(
                            "also matches {address} on gateway {gw_id}, but {} tcp[{wr}] at {} routes that \
                             listener: it comes first in creation order (file order, then document order); \
                             raw TCP cannot be told apart by host",
                            w.id(),
                            w.origin
                        ),
                    ));
                }
            }
        }
        match winner {
            Some((v, r)) => self.route(v, Section::Tcp, r),
            None => {
                let why = if reasons.is_empty() {
                    format!("no VirtualService lists gateway {gw_id} with a tcp route")
                } else {
                    reasons.join("; ")
                };
                self.push(gw.diag(
                    Severity::Warning,
                    &format!("spec.servers[{s}]"),
                    format!("no listener on {address}: no VirtualService tcp route matches this server, so clients get connection refused (as with Istio): {why}"),
                ));
                None
            }
        }
    }

    /// Builds the SNI table of a TLS passthrough listener.
    fn sni_table(&mut self, servers: &[ServerRef], address: SocketAddr) -> SniTable {
        let m = self.m;
        let mut table = SniTable::default();
        let mut owners: HashMap<String, String> = HashMap::new();
        for &(g, s) in servers {
            let gw = &m.gateways[g];
            let server = &gw.spec.servers[s];
            let gw_id = format!("{}/{}", gw.namespace, gw.name);
            for (v, vs) in m.virtual_services.iter().enumerate() {
                if !self.binds_to(vs, &gw_id) || !self.hosts_admitted(vs, server, &gw.namespace) {
                    continue;
                }
                for (r, rule) in vs.spec.tls.iter().enumerate() {
                    for (mi, mb) in rule.matches.iter().enumerate() {
                        if !self.passes(
                            vs,
                            [(mb.port, mb.gateways.as_slice())],
                            address.port(),
                            &gw_id,
                        ) {
                            continue;
                        }
                        let Some(route) = self.route(v, Section::Tls, r) else {
                            continue;
                        };
                        for (k, sni) in mb.sni_hosts.iter().enumerate() {
                            let sni = sni.to_ascii_lowercase();
                            let here = format!("{} tls[{r}].match[{mi}]", vs.id());
                            if let Some(owner) = owners.get(&sni) {
                                // The same rule, reached again through a second
                                // server of this listener that admits it too.
                                if *owner == here {
                                    continue;
                                }
                                self.push(vs.diag(
                                    Severity::Warning,
                                    &format!("spec.tls[{r}].match[{mi}].sniHosts[{k}]"),
                                    format!("SNI {sni} on {address} is already routed by {owner}; this entry is skipped"),
                                ));
                                continue;
                            }
                            owners.insert(sni.clone(), here);
                            if sni == "*" {
                                table.catch_all = Some(route);
                            } else if let Some(suffix) = sni.strip_prefix('*') {
                                table.wildcard.push((suffix.to_owned(), route));
                            } else {
                                table.exact.insert(sni, route);
                            }
                        }
                    }
                }
            }
        }
        table
            .wildcard
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        if table.is_empty() {
            let (g, s) = servers[0];
            let gw = &m.gateways[g];
            self.push(gw.diag(
                Severity::Warning,
                &format!("spec.servers[{s}]"),
                format!(
                    "no listener on {address}: no VirtualService tls route with sniHosts matches this \
                     passthrough server, so clients get connection refused"
                ),
            ));
        }
        table
    }

    /// The route of rule `r` of a VirtualService section, compiled once.
    fn route(&mut self, v: usize, section: Section, r: usize) -> Option<RouteId> {
        if let Some(id) = self.routes.get(&(v, section, r)) {
            return *id;
        }
        let id = self.build_route(v, section, r).map(|route| {
            let id = RouteId(u32::try_from(self.table.routes.len()).unwrap_or(u32::MAX));
            self.table.routes.push(route);
            id
        });
        self.routes.insert((v, section, r), id);
        id
    }

    fn build_route(&mut self, v: usize, section: Section, r: usize) -> Option<Route> {
        let vs = &self.m.virtual_services[v];
        let dests: &[RouteDestination] = match section {
            Section::Tcp => &vs.spec.tcp[r].route,
            Section::Tls => &vs.spec.tls[r].route,
        };
        let path = format!("spec.{}[{r}]", section.name());
        if dests.is_empty() {
            self.push(vs.diag(
                Severity::Error,
                &format!("{path}.route"),
                "at least one destination is required",
            ));
            return None;
        }
        let mut weights: Vec<u32> = Vec::with_capacity(dests.len());
        let mut ok = true;
        for (i, d) in dests.iter().enumerate() {
            let w = d.weight.unwrap_or(0);
            match u32::try_from(w) {
                Ok(w) => weights.push(if dests.len() == 1 { 1 } else { w }),
                Err(_) => {
                    self.push(vs.diag(
                        Severity::Error,
                        &format!("{path}.route[{i}].weight"),
                        format!("weight {w} is out of range: weights are 0 or more (each destination gets weight / sum)"),
                    ));
                    ok = false;
                }
            }
        }
        if ok && weights.iter().all(|w| *w == 0) {
            self.push(vs.diag(
                Severity::Error,
                &format!("{path}.route"),
                "every destination has weight 0, so no connection could be routed; give at least one a weight above 0",
            ));
            ok = false;
        }
        let mut clusters = Vec::with_capacity(dests.len());
        for (i, d) in dests.iter().enumerate() {
            match self.cluster(vs, &format!("{path}.route[{i}].destination"), d) {
                Some(id) => clusters.push(id),
                None => ok = false,
            }
        }
        if !ok {
            return None;
        }
        let first_host = expand_host(
            &dests[0].destination.host,
            &vs.namespace,
            &self.options.domain,
        );
        let (idle_timeout, max_connection_duration) = match self.rules.get(&first_host) {
            Some((_, rule)) => rule.route_timeouts(),
            None => default_route_timeouts(),
        };
        Some(Route {
            name: format!("{}/{} {}[{r}]", vs.namespace, vs.name, section.name()),
            clusters: clusters
                .into_iter()
                .zip(weights)
                .filter(|(_, w)| *w > 0)
                .map(|(cluster, weight)| WeightedCluster { cluster, weight })
                .collect(),
            idle_timeout,
            max_connection_duration,
        })
    }

    /// Resolves a destination to its cluster, building the cluster once.
    fn cluster(
        &mut self,
        vs: &Resource<VirtualServiceSpec>,
        path: &str,
        d: &RouteDestination,
    ) -> Option<ClusterId> {
        let dest = &d.destination;
        if dest.host.is_empty() || dest.host == "*" {
            self.push(vs.diag(
                Severity::Error,
                &format!("{path}.host"),
                "host must name a service, for example tcp-echo",
            ));
            return None;
        }
        let host = expand_host(&dest.host, &vs.namespace, &self.options.domain);
        if self.registry.is_broken(&host) {
            return None;
        }
        let Some(se) = self.registry.get(&host) else {
            let known = self.registry.hosts();
            let hint = crate::diag::did_you_mean(&host, &known)
                .map(|h| format!(" Did you mean {h}?"))
                .unwrap_or_default();
            let listed = if known.is_empty() {
                "no ServiceEntry declares any host".to_owned()
            } else {
                format!(
                    "known: {}",
                    known.iter().take(8).copied().collect::<Vec<_>>().join(", ")
                )
            };
            self.push(vs.diag(
                Severity::Error,
                &format!("{path}.host"),
                format!("service {host} is not declared by any ServiceEntry ({listed}).{hint}"),
            ));
            return None;
        };
        use crate::config::manifest::Resolution;
        match se.spec.resolution {
            Some(Resolution::Static | Resolution::Dns | Resolution::DnsRoundRobin) => {}
            other => {
                let what = match other {
                    Some(Resolution::DynamicDns) => {
                        "DYNAMIC_DNS, which routes by request host and cannot serve raw TCP"
                            .to_owned()
                    }
                    Some(Resolution::None) => "NONE".to_owned(),
                    _ => "NONE (the default when unset)".to_owned(),
                };
                self.push(vs.diag(
                    Severity::Error,
                    &format!("{path}.host"),
                    format!(
                        "{} has resolution {what}; a gateway needs addresses to connect to: set resolution: STATIC or DNS with endpoints",
                        se.id()
                    ),
                ));
                return None;
            }
        }
        let ports: Vec<String> = se
            .spec
            .ports
            .iter()
            .map(|p| format!("{} ({})", p.number, p.name))
            .collect();
        let service_port = match dest.port.and_then(|p| p.number) {
            Some(n) => match se.spec.ports.iter().find(|p| p.number == n) {
                Some(p) => p,
                None => {
                    self.push(vs.diag(
                        Severity::Error,
                        &format!("{path}.port.number"),
                        format!(
                            "service {host} has no port {n} (ports: {})",
                            ports.join(", ")
                        ),
                    ));
                    return None;
                }
            },
            None if se.spec.ports.len() == 1 => &se.spec.ports[0],
            None => {
                self.push(vs.diag(
                    Severity::Error,
                    &format!("{path}.port"),
                    format!(
                        "port.number is required: service {host} has {} ports ({})",
                        se.spec.ports.len(),
                        if ports.is_empty() {
                            "none declared".to_owned()
                        } else {
                            ports.join(", ")
                        }
                    ),
                ));
                return None;
            }
        };
        let port = port_number(service_port.number)?;
        let rule = self.rules.get(&host).map(|(_, r)| r);
        let subset_labels = match &dest.subset {
            None => None,
            Some(name) => match rule.and_then(|r| r.subset(name).map(|s| (r, s))) {
                Some((_, s)) => Some(s.labels.clone()),
                None => {
                    let message = match rule {
                        Some(r) => format!(
                            "subset {name:?} is not declared by {} (declared: {})",
                            r.id,
                            if r.subsets.is_empty() {
                                "none".to_owned()
                            } else {
                                r.subset_names().join(", ")
                            }
                        ),
                        None => format!(
                            "subset {name:?} is not declared: no DestinationRule has host {host}"
                        ),
                    };
                    self.push(vs.diag(Severity::Error, &format!("{path}.subset"), message));
                    return None;
                }
            },
        };
        let name = format!(
            "outbound|{port}|{}|{host}",
            dest.subset.as_deref().unwrap_or("")
        );
        if let Some(id) = self.clusters.get(&name) {
            return Some(*id);
        }
        let unreachable = self.registry.unreachable(se, subset_labels.as_ref());
        if !unreachable.is_empty() {
            self.push(vs.diag(
                Severity::Error,
                &format!("{path}.host"),
                format!(
                    "{} has endpoints ringway cannot connect to: {}",
                    se.id(),
                    unreachable.join("; ")
                ),
            ));
            return None;
        }
        let endpoints = self
            .registry
            .endpoints(se, service_port, subset_labels.as_ref());
        if endpoints.is_empty() {
            let message = match (&dest.subset, &subset_labels) {
                (Some(subset), Some(labels)) => format!(
                    "subset {subset:?} (labels {}) selects no endpoint of {}",
                    fmt_labels(labels),
                    se.id()
                ),
                _ => format!("{} has no endpoints", se.id()),
            };
            self.push(vs.diag(Severity::Error, &format!("{path}.subset"), message));
            return None;
        }
        let policy = match rule.map(|r| r.cluster_policy(port, dest.subset.as_deref())) {
            None => super::table::ClusterPolicy::default(),
            Some(Ok(policy)) => policy,
            Some(Err(Unservable::TlsOrigination(mode))) => {
                let id = rule.map_or("", |r| r.id.as_str());
                self.push(vs.diag(
                    Severity::Error,
                    &format!("{path}.host"),
                    format!(
                        "{id} asks for TLS to {host} (tls.mode {}), and ringway does not originate TLS yet: \
                         it would send plaintext where Istio encrypts; set tls.mode DISABLE if the upstream \
                         speaks plaintext",
                        super::policy::tls_mode_name(mode)
                    ),
                ));
                return None;
            }
            Some(Err(Unservable::Passthrough)) => {
                let id = rule.map_or("", |r| r.id.as_str());
                self.push(vs.diag(
                    Severity::Error,
                    &format!("{path}.host"),
                    format!(
                        "{id} balances {host} with PASSTHROUGH, which forwards to the original destination: \
                         at a gateway that is the gateway itself; use ROUND_ROBIN, LEAST_REQUEST or RANDOM"
                    ),
                ));
                return None;
            }
        };
        let id = ClusterId(u32::try_from(self.table.clusters.len()).unwrap_or(u32::MAX));
        self.table.clusters.push(Cluster {
            name: name.clone(),
            service: Service {
                name: host.split('.').next().unwrap_or(&host).to_owned(),
                namespace: se.namespace.clone(),
                host,
            },
            port,
            subset: dest.subset.clone(),
            endpoints,
            policy,
        });
        self.clusters.insert(name, id);
        Some(id)
    }

    /// A VirtualService without hosts is a delegate (Istio): HTTP routes
    /// another VirtualService's `http[].delegate` hands over. Istio's rules
    /// for one: no gateways, no tcp or tls routes. Until ringway routes HTTP
    /// it is loaded and unused.
    fn check_delegate(&mut self, vs: &Resource<VirtualServiceSpec>) {
        let m = self.m;
        if vs.spec.http.is_none() || !vs.spec.tcp.is_empty() || !vs.spec.tls.is_empty() {
            self.push(vs.diag(
                Severity::Error,
                "spec.hosts",
                "at least one host is required (\"*\" binds to any gateway server host); \
                 only a delegate VirtualService, which holds http routes alone, has none",
            ));
            return;
        }
        if vs.spec.gateways.as_ref().is_some_and(|g| !g.is_empty()) {
            self.push(vs.diag(
                Severity::Error,
                "spec.gateways",
                "a delegate VirtualService (no hosts) cannot name gateways: the VirtualService \
                 that delegates to it is bound to them",
            ));
            return;
        }
        let referenced = m.virtual_services.iter().any(|parent| {
            parent.spec.http.iter().flatten().any(|route| {
                route.delegate.as_ref().is_some_and(|d| {
                    d.name == vs.name
                        && d.namespace.as_deref().unwrap_or(&parent.namespace) == vs.namespace
                })
            })
        });
        let why = match referenced {
            true => {
                "a delegate VirtualService: HTTP routing is not supported yet, so its routes are loaded and unused"
            }
            false => {
                "a delegate VirtualService (no hosts) that no VirtualService delegates to: it has no effect"
            }
        };
        self.push(vs.diag(Severity::Warning, "spec.hosts", why));
    }

    /// Structural checks and warnings for every VirtualService.
    fn check_virtual_services(&mut self) {
        let m = self.m;
        for vs in &m.virtual_services {
            if vs.spec.hosts.is_empty() {
                self.check_delegate(vs);
            }
            if vs.spec.tcp.is_empty() && vs.spec.tls.is_empty() && vs.spec.http.is_none() {
                self.push(vs.diag(
                    Severity::Error,
                    "spec",
                    "a VirtualService needs routes: write tcp: for TCP servers or tls: for TLS passthrough servers",
                ));
            }
            if vs.spec.export_to.is_some() {
                self.push(vs.diag(
                    Severity::Warning,
                    "spec.exportTo",
                    "exportTo is accepted but not applied: every resource is visible to ringway",
                ));
            }
            if vs.spec.http.is_some() && !vs.spec.tcp.is_empty() {
                self.push(vs.diag(
                    Severity::Warning,
                    "spec.http",
                    "http routes are not supported yet and are ignored",
                ));
            }
            for (i, g) in vs.spec.gateways.iter().flatten().enumerate() {
                if let GatewayRef::Gateway(id) = resolve_gateway(g, &vs.namespace) {
                    let known: Vec<String> = m
                        .gateways
                        .iter()
                        .map(|gw| format!("{}/{}", gw.namespace, gw.name))
                        .collect();
                    if !known.contains(&id) {
                        let names: Vec<&str> = known.iter().map(String::as_str).collect();
                        let hint = crate::diag::did_you_mean(&id, &names)
                            .map_or_else(String::new, |h| format!(", did you mean {h:?}?"));
                        // istioctl analyze: IST0101 ReferencedResourceNotFound.
                        self.push(vs.diag(
                            Severity::Error,
                            &format!("spec.gateways[{i}]"),
                            format!(
                                "gateway {id} is not defined in this configuration{hint} \
                                 (a gateway is named namespace/name, or name in the VirtualService's namespace)"
                            ),
                        ));
                    }
                }
            }
            for (r, rule) in vs.spec.tcp.iter().enumerate() {
                for (mi, mb) in rule.matches.iter().enumerate() {
                    let path = format!("spec.tcp[{r}].match[{mi}]");
                    self.check_match_port(vs, &path, mb.port);
                    self.ignored_match_fields(
                        vs,
                        &path,
                        [
                            ("destinationSubnets", mb.destination_subnets.is_some()),
                            ("sourceLabels", mb.source_labels.is_some()),
                            ("sourceNamespace", mb.source_namespace.is_some()),
                            ("sourceSubnet", mb.source_subnet.is_some()),
                        ],
                    );
                }
            }
            for (r, rule) in vs.spec.tls.iter().enumerate() {
                let path = format!("spec.tls[{r}]");
                if rule.matches.is_empty() {
                    self.push(vs.diag(
                        Severity::Error,
                        &format!("{path}.match"),
                        "a tls route needs at least one match with sniHosts",
                    ));
                }
                for (mi, mb) in rule.matches.iter().enumerate() {
                    let mpath = format!("{path}.match[{mi}]");
                    if mb.sni_hosts.is_empty() {
                        self.push(vs.diag(
                            Severity::Error,
                            &format!("{mpath}.sniHosts"),
                            "sniHosts is required: the SNI names this rule matches (\"*\" for any)",
                        ));
                    }
                    self.check_match_port(vs, &mpath, mb.port);
                    self.ignored_match_fields(
                        vs,
                        &mpath,
                        [
                            ("destinationSubnets", mb.destination_subnets.is_some()),
                            ("sourceLabels", mb.source_labels.is_some()),
                            ("sourceNamespace", mb.source_namespace.is_some()),
                        ],
                    );
                }
            }
            self.unreachable_rules(vs);
        }
    }

    fn check_match_port(
        &mut self,
        vs: &Resource<VirtualServiceSpec>,
        path: &str,
        port: Option<u32>,
    ) {
        if let Some(p) = port.filter(|p| port_number(*p).is_none()) {
            self.push(vs.diag(
                Severity::Error,
                &format!("{path}.port"),
                format!("port {p} is out of range (1-65535)"),
            ));
        }
    }

    fn ignored_match_fields<const N: usize>(
        &mut self,
        vs: &Resource<VirtualServiceSpec>,
        path: &str,
        fields: [(&str, bool); N],
    ) {
        for (field, present) in fields {
            if !present {
                continue;
            }
            let why = match field {
                "destinationSubnets" => "only works on sidecars; Istio ignores it on gateways too",
                "sourceSubnet" => "is not implemented by Istio",
                _ => {
                    "selects sidecar workloads, it is not a connection match; it does nothing on a gateway"
                }
            };
            self.push(vs.diag(
                Severity::Warning,
                &format!("{path}.{field}"),
                format!("{field} {why}"),
            ));
        }
    }

    /// Rules after a match-all rule, and match blocks repeating an earlier
    /// rule's, can never be chosen.
    fn unreachable_rules(&mut self, vs: &Resource<VirtualServiceSpec>) {
        let mut match_all: Option<usize> = None;
        let mut seen: Vec<(usize, usize, Option<u32>, Vec<String>)> = Vec::new();
        for (r, rule) in vs.spec.tcp.iter().enumerate() {
            if let Some(first) = match_all {
                self.push(vs.diag(
                    Severity::Warning,
                    &format!("spec.tcp[{r}]"),
                    format!("unreachable: tcp[{first}] before it matches every connection"),
                ));
                continue;
            }
            for (mi, mb) in rule.matches.iter().enumerate() {
                let mut gateways: Vec<String> = mb
                    .gateways
                    .iter()
                    .map(|g| format!("{:?}", resolve_gateway(g, &vs.namespace)))
                    .collect();
                gateways.sort();
                if let Some((pr, pm, _, _)) = seen
                    .iter()
                    .find(|(pr, _, p, g)| *pr != r && *p == mb.port && *g == gateways)
                {
                    self.push(vs.diag(
                        Severity::Warning,
                        &format!("spec.tcp[{r}].match[{mi}]"),
                        format!("never used: tcp[{pr}].match[{pm}] matches the same port and gateways and comes first"),
                    ));
                }
                seen.push((r, mi, mb.port, gateways));
            }
            if rule.matches.is_empty()
                || rule
                    .matches
                    .iter()
                    .any(|m| m.port.is_none() && m.gateways.is_empty())
            {
                match_all = Some(r);
            }
        }
    }

    /// Compiles the rules no listener chose, so their mistakes are reported
    /// too, for every VirtualService bound to a gateway of this instance.
    fn check_unused_rules(&mut self) {
        let m = self.m;
        let ours: Vec<String> = m
            .gateways
            .iter()
            .map(|g| format!("{}/{}", g.namespace, g.name))
            .collect();
        for (v, vs) in m.virtual_services.iter().enumerate() {
            if !ours.iter().any(|g| self.binds_to(vs, g)) {
                continue;
            }
            let sections = [
                (Section::Tcp, vs.spec.tcp.len()),
                (Section::Tls, vs.spec.tls.len()),
            ];
            for (section, n) in sections {
                for r in 0..n {
                    if !self.routes.contains_key(&(v, section, r)) {
                        // Validation only: a route no listener uses stays out of the table.
                        let _ = self.build_route(v, section, r);
                        self.routes.insert((v, section, r), None);
                    }
                }
            }
        }
    }
}

fn fmt_labels(labels: &Labels) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{{{}}}", pairs.join(","))
}

/// Istio's name of a server TLS mode, as the operator wrote it.
fn tls_mode_name(mode: TlsMode) -> &'static str {
    match mode {
        TlsMode::Passthrough => "PASSTHROUGH",
        TlsMode::Simple => "SIMPLE",
        TlsMode::Mutual => "MUTUAL",
        TlsMode::AutoPassthrough => "AUTO_PASSTHROUGH",
        TlsMode::IstioMutual => "ISTIO_MUTUAL",
        TlsMode::OptionalMutual => "OPTIONAL_MUTUAL",
    }
}
