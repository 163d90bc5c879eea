//! Gateway servers → listeners: which gateways this instance serves, which
//! (bind, port) each server opens and of which kind (opaque TCP, TLS
//! passthrough, or plain HTTP, whose servers on one address merge);
//! `routes.rs` and `http.rs` pick what each one routes to.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::config::Resource;
use crate::config::manifest::{GatewaySpec, Server, ServerTls, TlsMode};
use crate::diag::Severity;

use super::{Compiler, ServerKind, ServerRef, Slot, SlotKind, fmt_labels};
use crate::routing::policy::port_number;
use crate::routing::table::{Listener, ListenerRouting};

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
                let Some((address, kind)) = self.check_server(gw, s, server) else {
                    continue;
                };
                if !selected {
                    continue;
                }
                self.place(&mut plan, address, kind, (g, s));
            }
        }
        plan
    }

    /// Puts a server in the slot of its address: plain HTTP servers share
    /// one (Istio's `mergeGateways`), TLS passthrough servers share one;
    /// any other pair is an error naming both.
    fn place(
        &mut self,
        plan: &mut Vec<Slot>,
        address: SocketAddr,
        kind: ServerKind,
        server: ServerRef,
    ) {
        let existing = plan.iter_mut().find(|slot| slot.address == address);
        let slot = match (existing, kind) {
            (None, ServerKind::Tcp) => SlotKind::Tcp(server),
            (None, ServerKind::Tls) => SlotKind::Tls(vec![server]),
            (None, ServerKind::Http) => SlotKind::Http(vec![server]),
            (
                Some(Slot {
                    kind: SlotKind::Tls(servers),
                    ..
                }),
                ServerKind::Tls,
            )
            | (
                Some(Slot {
                    kind: SlotKind::Http(servers),
                    ..
                }),
                ServerKind::Http,
            ) => {
                servers.push(server);
                return;
            }
            (Some(slot), _) => {
                let (other_kind, (og, os)) = match &slot.kind {
                    SlotKind::Tcp(r) => (ServerKind::Tcp, *r),
                    SlotKind::Tls(rs) => (ServerKind::Tls, rs[0]),
                    SlotKind::Http(rs) => (ServerKind::Http, rs[0]),
                };
                let why = if other_kind == ServerKind::Tcp && kind == ServerKind::Tcp {
                    "only one TCP server may use a bind address and port (Istio would silently drop this one)"
                        .to_owned()
                } else {
                    format!(
                        "{} {} server and {} {} server cannot share a bind address and port (Istio would \
                         drop one of them); move one to another port",
                        article(other_kind),
                        other_kind.name(),
                        article(kind),
                        kind.name()
                    )
                };
                let other = &self.m.gateways[og];
                let gw = &self.m.gateways[server.0];
                let d = gw.diag(
                    Severity::Error,
                    &format!("spec.servers[{}].port", server.1),
                    format!(
                        "{address} is already served by {} servers[{os}] at {}; {why}",
                        other.id(),
                        other.origin.at(&format!("spec.servers[{os}]")),
                    ),
                );
                self.push(d);
                return;
            }
        };
        plan.push(Slot {
            address,
            kind: slot,
        });
    }

    /// Checks one server; returns its address and what it opens, or
    /// `None` when it opens no listener.
    pub(super) fn check_server(
        &mut self,
        gw: &Resource<GatewaySpec>,
        s: usize,
        server: &Server,
    ) -> Option<(SocketAddr, ServerKind)> {
        let path = format!("spec.servers[{s}]");
        let port = self.server_port(gw, s, server, &path);
        self.warn_ignored_server_fields(gw, server, &path);
        let has_hosts = !server.hosts.is_empty();
        if !has_hosts {
            self.push(gw.diag(
                Severity::Error,
                &format!("{path}.hosts"),
                "at least one host is required (\"*\" admits every VirtualService)",
            ));
        }
        let ip = self.server_bind(gw, server, &path);
        let kind = self.server_protocol(gw, server, &path)?;
        match (kind, server.tls.as_ref()) {
            (ServerKind::Tls, Some(settings)) => {
                self.warn_termination_settings(gw, settings, &path)
            }
            (ServerKind::Http, Some(settings)) => self.warn_http_tls(gw, settings, &path),
            _ => {}
        }
        match (has_hosts, ip, port) {
            (true, Some(ip), Some(port)) => Some((SocketAddr::new(ip, port), kind)),
            _ => None,
        }
    }

    /// The server's port number, when it is in range and the port has a
    /// name no earlier server of the Gateway uses.
    fn server_port(
        &mut self,
        gw: &Resource<GatewaySpec>,
        s: usize,
        server: &Server,
        path: &str,
    ) -> Option<u16> {
        let port = port_number(server.port.number);
        if port.is_none() {
            self.push(gw.diag(
                Severity::Error,
                &format!("{path}.port.number"),
                format!("port {} is out of range (1-65535)", server.port.number),
            ));
        }
        if server.port.name.as_deref().is_none_or(str::is_empty) {
            self.push(gw.diag(
                Severity::Error,
                &format!("{path}.port.name"),
                "port.name is required (for example: tcp)",
            ));
            return None;
        }
        if let Some(j) = gw.spec.servers[..s]
            .iter()
            .position(|o| o.port.name == server.port.name)
        {
            self.push(gw.diag(
                Severity::Error,
                &format!("{path}.port.name"),
                format!("duplicate port name {:?} (also servers[{j}]); port names must be unique in a Gateway", server.port.name.as_deref().unwrap_or_default()),
            ));
            return None;
        }
        port
    }

    /// Warnings for server fields that have no effect on a gateway.
    fn warn_ignored_server_fields(
        &mut self,
        gw: &Resource<GatewaySpec>,
        server: &Server,
        path: &str,
    ) {
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
    }

    /// The address a server binds (0.0.0.0 when unset).
    fn server_bind(
        &mut self,
        gw: &Resource<GatewaySpec>,
        server: &Server,
        path: &str,
    ) -> Option<IpAddr> {
        let bind = match server.bind.as_deref() {
            None | Some("") => return Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            Some(bind) => bind,
        };
        let ip = bind.parse::<IpAddr>().ok();
        if ip.is_none() {
            self.push(gw.diag(
                Severity::Error,
                &format!("{path}.bind"),
                format!("bind {bind:?} is not an IP address (for example 0.0.0.0 or 127.0.0.1; unix sockets are not supported)"),
            ));
        }
        ip
    }

    /// What the server opens; `None` when its protocol or TLS mode opens no
    /// listener here.
    fn server_protocol(
        &mut self,
        gw: &Resource<GatewaySpec>,
        server: &Server,
        path: &str,
    ) -> Option<ServerKind> {
        let protocol = server.port.protocol.to_ascii_uppercase();
        let (field, message, severity) = match protocol.as_str() {
            "TCP" | "MONGO" | "MYSQL" | "REDIS" if server.tls.is_none() => {
                return Some(ServerKind::Tcp);
            }
            "HTTP" => return Some(ServerKind::Http),
            "TCP" | "MONGO" | "MYSQL" | "REDIS" => (
                "tls",
                format!(
                    "a {protocol} server takes no tls block; for SNI routing use protocol TLS with tls.mode: PASSTHROUGH"
                ),
                Severity::Error,
            ),
            "TLS" | "HTTPS" => {
                let mode = server
                    .tls
                    .as_ref()
                    .map(|t| t.mode.unwrap_or(TlsMode::Passthrough));
                match mode {
                    Some(TlsMode::Passthrough) => return Some(ServerKind::Tls),
                    None => (
                        "tls",
                        format!(
                            "a {protocol} server needs a tls block (ringway supports tls.mode: PASSTHROUGH)"
                        ),
                        Severity::Error,
                    ),
                    Some(TlsMode::AutoPassthrough) => (
                        "tls.mode",
                        format!(
                            "AUTO_PASSTHROUGH routes by the SNI of Istio's multi-network east-west traffic \
                             (outbound_.PORT_._.HOST names, without a VirtualService), which ringway does not \
                             do: no listener on port {}; for SNI routing with a VirtualService use PASSTHROUGH",
                            server.port.number
                        ),
                        Severity::Warning,
                    ),
                    Some(mode) => (
                        "tls.mode",
                        format!(
                            "TLS termination ({}) is not supported yet: no listener on port {}; use PASSTHROUGH",
                            tls_mode_name(mode),
                            server.port.number
                        ),
                        Severity::Warning,
                    ),
                }
            }
            "HTTP2" | "GRPC" | "GRPC-WEB" => (
                "port.protocol",
                format!(
                    "{protocol} servers are not supported until HTTP/2 exists: no listener on port {} \
                     (use protocol HTTP for HTTP/1.1 clients)",
                    server.port.number
                ),
                Severity::Warning,
            ),
            _ => (
                "port.protocol",
                format!(
                    "unknown protocol {:?} (valid: TCP, TLS, HTTPS, HTTP, MONGO, MYSQL, REDIS; HTTP2, GRPC are not supported yet)",
                    server.port.protocol
                ),
                Severity::Error,
            ),
        };
        self.push(gw.diag(severity, &format!("{path}.{field}"), message));
        None
    }

    /// A warning when a passthrough server sets what only termination uses.
    fn warn_termination_settings(&mut self, gw: &Resource<GatewaySpec>, t: &ServerTls, path: &str) {
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

    /// A warning for a `tls` block on a plain HTTP server: only
    /// `httpsRedirect` means something there, and ringway does not apply
    /// it until it terminates TLS.
    fn warn_http_tls(&mut self, gw: &Resource<GatewaySpec>, t: &ServerTls, path: &str) {
        let message = if t.https_redirect.is_some() {
            "httpsRedirect is accepted but not applied: requests are routed as plain HTTP \
             (the 301 to https comes with TLS termination, a later issue)"
        } else {
            "a tls block has no effect on a plain HTTP server; use protocol HTTPS for TLS"
        };
        self.push(gw.diag(Severity::Warning, &format!("{path}.tls"), message));
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
            SlotKind::Http(servers) => {
                let http = self.http_routing(servers, address);
                let gateways = self.gateway_ids(servers);
                self.table.listeners.push(Listener {
                    name,
                    address,
                    gateways,
                    routing: ListenerRouting::Http { http },
                });
            }
            SlotKind::Tls(servers) => {
                let sni = self.sni_table(servers, address);
                if !sni.is_empty() {
                    let gateways = self.gateway_ids(servers);
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
}

impl Compiler<'_> {
    /// `namespace/name` of the gateways of some servers, each once.
    fn gateway_ids(&self, servers: &[ServerRef]) -> Vec<String> {
        let mut gateways: Vec<String> = Vec::new();
        for (g, _) in servers {
            let gw = &self.m.gateways[*g];
            let id = format!("{}/{}", gw.namespace, gw.name);
            if !gateways.contains(&id) {
                gateways.push(id);
            }
        }
        gateways
    }
}

/// "a TCP server", "an HTTP server".
fn article(kind: ServerKind) -> &'static str {
    match kind {
        ServerKind::Http => "an",
        ServerKind::Tcp | ServerKind::Tls => "a",
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
