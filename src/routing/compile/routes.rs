//! Routes: which rule of which VirtualService routes a listener (the first
//! tcp rule in creation order for an opaque TCP server, the sniHosts of tls
//! rules for a TLS passthrough listener), chosen the way istiod chooses, and
//! each rule compiled once into a route of weighted clusters.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::config::Resource;
use crate::config::manifest::{Destination, RouteDestination, Server, VirtualServiceSpec};
use crate::diag::Severity;

use super::{Compiler, Section, ServerRef};
use crate::routing::names::{GatewayRef, ServerHost, expand_host, resolve_gateway};
use crate::routing::policy::default_route_timeouts;
use crate::routing::table::{Route, RouteId, SniTable, WeightedCluster};

impl Compiler<'_> {
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
        let mut winner: Option<(usize, usize)> = None;
        let mut reasons: Vec<String> = Vec::new();
        for (v, vs) in m.virtual_services.iter().enumerate() {
            let r = match self.tcp_rule(vs, server, &gw.namespace, &gw_id, address.port()) {
                Ok(r) => r,
                Err(reason) => {
                    reasons.extend(reason);
                    continue;
                }
            };
            let Some((wv, wr)) = winner else {
                winner = Some((v, r));
                continue;
            };
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
        if let Some((v, r)) = winner {
            return self.route(v, Section::Tcp, r);
        }
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

    /// The first tcp rule of `vs` that routes `port` of a server of gateway
    /// `gw_id`, or why `vs` routes none (`None` when not worth saying: it
    /// is not meant for this server at all).
    fn tcp_rule(
        &self,
        vs: &Resource<VirtualServiceSpec>,
        server: &Server,
        gw_namespace: &str,
        gw_id: &str,
        port: u16,
    ) -> Result<usize, Option<String>> {
        let rule = vs.spec.tcp.iter().position(|r| {
            self.passes(
                vs,
                r.matches.iter().map(|m| (m.port, m.gateways.as_slice())),
                port,
                gw_id,
            )
        });
        if !self.binds_to(vs, gw_id) {
            if rule.is_none() || !self.hosts_admitted(vs, server, gw_namespace) {
                return Err(None);
            }
            let lists = match &vs.spec.gateways {
                None => "gateways is not set, so it binds to mesh (sidecars) only".to_owned(),
                Some(list) => format!("it lists [{}]", list.join(", ")),
            };
            return Err(Some(format!(
                "{} does not list gateway {gw_id} ({lists})",
                vs.id()
            )));
        }
        if !self.hosts_admitted(vs, server, gw_namespace) {
            return Err(Some(format!(
                "{} hosts [{}] match none of the server hosts [{}]",
                vs.id(),
                vs.spec.hosts.join(", "),
                server.hosts.join(", ")
            )));
        }
        if vs.spec.tcp.is_empty() {
            return Err(Some(if vs.spec.http.is_some() {
                format!(
                    "{} has http routes only, which never apply to a TCP server: write the route under tcp:",
                    vs.id()
                )
            } else {
                format!("{} has no tcp routes", vs.id())
            }));
        }
        rule.ok_or_else(|| {
            let ports: Vec<String> = vs
                .spec
                .tcp
                .iter()
                .flat_map(|r| r.matches.iter().filter_map(|m| m.port))
                .map(|p| p.to_string())
                .collect();
            Some(format!(
                "{} has no tcp rule matching port {port} on this gateway (its rules match port {})",
                vs.id(),
                if ports.is_empty() {
                    "-".to_owned()
                } else {
                    ports.join(", ")
                }
            ))
        })
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

    /// The route of rule `r` of a VirtualService section, compiled once.
    pub(super) fn route(&mut self, v: usize, section: Section, r: usize) -> Option<RouteId> {
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

    pub(super) fn build_route(&mut self, v: usize, section: Section, r: usize) -> Option<Route> {
        let vs = &self.m.virtual_services[v];
        let dests: Vec<(Destination, Option<i64>)> = match section {
            Section::Tcp => pairs(&vs.spec.tcp[r].route),
            Section::Tls => pairs(&vs.spec.tls[r].route),
            Section::Http => vs.spec.http.as_deref().unwrap_or_default()[r]
                .route
                .iter()
                .map(|d| (d.destination.to_destination(), d.weight))
                .collect(),
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
        for (i, (_, weight)) in dests.iter().enumerate() {
            let w = weight.unwrap_or(0);
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
        for (i, (d, _)) in dests.iter().enumerate() {
            match self.cluster(vs, &format!("{path}.route[{i}].destination"), d) {
                Some(id) => clusters.push(id),
                None => ok = false,
            }
        }
        if !ok {
            return None;
        }
        let first_host = expand_host(&dests[0].0.host, &vs.namespace, &self.options.domain);
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
}

/// (destination, weight) of each entry of a tcp or tls route.
fn pairs(route: &[RouteDestination]) -> Vec<(Destination, Option<i64>)> {
    route
        .iter()
        .map(|d| (d.destination.clone(), d.weight))
        .collect()
}
