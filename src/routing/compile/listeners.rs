//! Gateway servers → listeners: which gateways this instance serves, which
//! (bind, port) each server opens, and the route (TCP) or SNI table (TLS
//! passthrough) of each, chosen the way istiod chooses.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::config::Resource;
use crate::config::manifest::{GatewaySpec, Server, TlsMode, VirtualServiceSpec};
use crate::diag::Severity;

use super::{Compiler, Section, ServerRef, Slot, SlotKind, fmt_labels};
use crate::routing::names::{GatewayRef, ServerHost, expand_host, resolve_gateway};
use crate::routing::policy::port_number;
use crate::routing::table::{Listener, ListenerRouting, RouteId, SniTable};

impl Compiler<'_> {
    pub(super) fn gateway_selected(&mut self, gw: &Resource<GatewaySpec>) -> bool {
        let Some(selector) = &gw.spec.selector else {
            return true;
        };
        if crate::routing::services::contains(&self.options.labels, selector) {
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
    pub(super) fn plan_listeners(&mut self) -> Vec<Slot> {
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
    pub(super) fn check_server(
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

    pub(super) fn listener(&mut self, slot: &Slot) {
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
    pub(super) fn bound_gateways(&self, vs: &Resource<VirtualServiceSpec>) -> Vec<GatewayRef> {
        match &vs.spec.gateways {
            None => vec![GatewayRef::Mesh],
            Some(list) => list
                .iter()
                .map(|g| resolve_gateway(g, &vs.namespace))
                .collect(),
        }
    }

    pub(super) fn binds_to(&self, vs: &Resource<VirtualServiceSpec>, gateway: &str) -> bool {
        self.bound_gateways(vs)
            .iter()
            .any(|g| matches!(g, GatewayRef::Gateway(id) if id == gateway))
    }

    pub(super) fn hosts_admitted(
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
    pub(super) fn passes<'a>(
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
    pub(super) fn tcp_route(&mut self, (g, s): ServerRef, address: SocketAddr) -> Option<RouteId> {
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
    pub(super) fn sni_table(&mut self, servers: &[ServerRef], address: SocketAddr) -> SniTable {
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
