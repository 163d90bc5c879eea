//! HTTP listeners: istiod's `buildGatewayHTTPRouteConfig`. For each server
//! of the listener, each VirtualService bound to its gateway (creation
//! order) whose hosts meet the server's gives one virtual host per host of
//! the intersection; a second VirtualService for a host appends its routes;
//! catch-all routes then move to the end of each virtual host. A listener
//! without any virtual host answers 404 to everything (Istio's blackhole).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use crate::config::Resource;
use crate::config::manifest::{HttpMatch, Server, VirtualServiceSpec};
use crate::diag::Severity;

use super::delegate::EffectiveRule;
use super::{Compiler, ServerRef};
use crate::routing::http::{HttpRoute, HttpRouting, RouteMatch, StringMatch, VirtualHost};
use crate::routing::names::{GatewayRef, ServerHost, expand_host, host_subset_of, resolve_gateway};

impl Compiler<'_> {
    /// The virtual hosts of one HTTP listener.
    pub(super) fn http_routing(
        &mut self,
        servers: &[ServerRef],
        address: SocketAddr,
    ) -> HttpRouting {
        let m = self.m;
        let port = address.port();
        let mut vhosts: Vec<VirtualHost> = Vec::new();
        let mut by_host: HashMap<String, usize> = HashMap::new();
        let mut appended: HashSet<(usize, usize)> = HashSet::new();
        for &(g, s) in servers {
            let gw = &m.gateways[g];
            let server = &gw.spec.servers[s];
            let gw_id = format!("{}/{}", gw.namespace, gw.name);
            let mut bound = false;
            for (v, vs) in m.virtual_services.iter().enumerate() {
                if vs.spec.hosts.is_empty() || !self.binds_to(vs, &gw_id) {
                    continue;
                }
                let hosts = self.intersect_hosts(vs, server, &gw.namespace);
                if hosts.is_empty() {
                    continue;
                }
                let routes = self.vs_http_routes(v, port, &gw_id);
                if routes.is_empty() {
                    continue;
                }
                bound = true;
                for host in hosts {
                    let i = *by_host.entry(host.clone()).or_insert_with(|| {
                        vhosts.push(VirtualHost {
                            name: format!("{host}:{port}"),
                            domains: vec![host],
                            routes: Vec::new(),
                        });
                        vhosts.len() - 1
                    });
                    if appended.insert((i, v)) {
                        vhosts[i].routes.extend(routes.iter().cloned());
                    }
                }
            }
            if !bound {
                self.push(gw.diag(
                    Severity::Warning,
                    &format!("spec.servers[{s}]"),
                    format!(
                        "no VirtualService http route is bound to this server: {address} opens and answers \
                         every request with 404 (Istio's blackhole virtual host); bind one with \
                         gateways: [{gw_id}] and a host among [{}]",
                        server.hosts.join(", ")
                    ),
                ));
            }
        }
        for vhost in &mut vhosts {
            let (mut rest, catch_alls): (Vec<HttpRoute>, Vec<HttpRoute>) = vhost
                .routes
                .drain(..)
                .partition(|r| !is_catch_all(&r.matcher));
            rest.extend(catch_alls);
            vhost.routes = rest;
        }
        if vhosts.is_empty() {
            vhosts.push(VirtualHost {
                name: format!("blackhole:{port}"),
                domains: vec!["*".to_owned()],
                routes: Vec::new(),
            });
        }
        let bind = address.ip();
        let name = if bind.is_unspecified() {
            format!("http.{port}")
        } else {
            format!("http.{port}.{bind}")
        };
        index_vhosts(name, vhosts)
    }

    /// Server hosts ∩ VirtualService hosts, keeping the more specific of
    /// each overlapping pair (istiod's `host.Names.Intersection`), lowercase.
    fn intersect_hosts(
        &self,
        vs: &Resource<VirtualServiceSpec>,
        server: &Server,
        gw_namespace: &str,
    ) -> Vec<String> {
        let server_hosts: Vec<String> = server
            .hosts
            .iter()
            .map(|h| ServerHost::parse(h, gw_namespace))
            .filter(|sh| sh.namespace.as_deref().is_none_or(|ns| ns == vs.namespace))
            .map(|sh| sh.host.to_ascii_lowercase())
            .collect();
        let vs_hosts: Vec<String> = vs
            .spec
            .hosts
            .iter()
            .map(|h| expand_host(h, &vs.namespace, &self.options.domain).to_ascii_lowercase())
            .collect();
        let mut out: Vec<String> = Vec::new();
        for sh in &server_hosts {
            for vh in &vs_hosts {
                let keep = if host_subset_of(sh, vh) {
                    sh
                } else if host_subset_of(vh, sh) {
                    vh
                } else {
                    continue;
                };
                if !out.contains(keep) {
                    out.push(keep.clone());
                }
            }
        }
        out
    }

    /// The routes VirtualService `v` gives a server on `port` of gateway
    /// `gw_id`: one per (rule, match block) that applies here, stopping after
    /// the first catch-all (istiod's `BuildHTTPRoutesForVirtualService`).
    fn vs_http_routes(&mut self, v: usize, port: u16, gw_id: &str) -> Vec<HttpRoute> {
        let rules = self.effective[v].clone();
        let namespace = &self.m.virtual_services[v].namespace;
        let mut out = Vec::new();
        for (e, er) in rules.iter().enumerate() {
            let Some((action, headers)) = self.http_action(v, e, er) else {
                continue;
            };
            let owner = &self.m.virtual_services[er.owner];
            let rule_name = er.rule.name.clone().unwrap_or_default();
            if er.rule.matches.is_empty() {
                out.push(HttpRoute {
                    name: rule_name,
                    source: format!("{}/{} http[{}]", owner.namespace, owner.name, er.index),
                    matcher: RouteMatch::default(),
                    action,
                    headers,
                });
                break;
            }
            for (k, mb) in er.rule.matches.iter().enumerate() {
                let applies = mb.port.is_none_or(|p| p == u32::from(port))
                    && (mb.gateways.is_empty()
                        || mb.gateways.iter().any(|g| {
                            resolve_gateway(g, namespace) == GatewayRef::Gateway(gw_id.to_owned())
                        }))
                    && crate::routing::services::contains(&self.options.labels, &mb.source_labels)
                    && mb
                        .source_namespace
                        .as_deref()
                        .is_none_or(|ns| ns.is_empty() || ns == self.options.namespace);
                if !applies {
                    continue;
                }
                let Some(matcher) = self.http_match(v, e, k, er) else {
                    continue;
                };
                let name = match mb.name.as_deref().filter(|n| !n.is_empty()) {
                    Some(n) => format!("{rule_name}.{n}"),
                    None => rule_name.clone(),
                };
                let catch_all = is_catch_all(&matcher);
                out.push(HttpRoute {
                    name,
                    source: format!(
                        "{}/{} http[{}].match[{k}]",
                        owner.namespace, owner.name, er.index
                    ),
                    matcher,
                    action: action.clone(),
                    headers: headers.clone(),
                });
                if catch_all {
                    return out;
                }
            }
        }
        out
    }

    /// Checks of http rules that hold whatever listener they reach:
    /// mesh-only VirtualServices, and every rule of a VirtualService bound
    /// to a gateway with an HTTP server compiled once, so that its mistakes
    /// are reported even where no match block applies.
    pub(super) fn check_http_rules(&mut self) {
        let m = self.m;
        for (v, vs) in m.virtual_services.iter().enumerate() {
            if vs.spec.http.is_none() || vs.spec.hosts.is_empty() {
                continue;
            }
            let gateways = self.bound_gateways(vs);
            if gateways.iter().all(|g| *g == GatewayRef::Mesh) {
                self.push(vs.diag(
                    Severity::Warning,
                    "spec.gateways",
                    "gateways is not set, so it binds to mesh (sidecars) only: its http routes never apply \
                     to a gateway such as ringway (add gateways: [<gateway name>] to route through one)",
                ));
                continue;
            }
            let serves_http = gateways.iter().any(|g| {
                m.gateways.iter().any(|gw| {
                    *g == GatewayRef::Gateway(format!("{}/{}", gw.namespace, gw.name))
                        && gw
                            .spec
                            .servers
                            .iter()
                            .any(|s| s.port.protocol.eq_ignore_ascii_case("HTTP"))
                })
            });
            if !serves_http {
                continue;
            }
            let rules = self.effective[v].clone();
            for (e, er) in rules.iter().enumerate() {
                let _ = self.http_action(v, e, er);
                for k in 0..er.rule.matches.len() {
                    let _ = self.http_match(v, e, k, er);
                }
            }
            self.unreachable_http_rules(&rules);
        }
    }

    /// Rules after one that matches every request on every server are never
    /// used: istiod stops at that rule.
    fn unreachable_http_rules(&mut self, rules: &[EffectiveRule]) {
        let Some(first) = rules.iter().position(|er| {
            er.rule.matches.is_empty() || er.rule.matches.iter().any(matches_everything)
        }) else {
            return;
        };
        let m = self.m;
        let winner = &rules[first];
        for er in &rules[first + 1..] {
            let owner = &m.virtual_services[er.owner];
            let by = &m.virtual_services[winner.owner];
            self.push(owner.diag(
                Severity::Warning,
                &format!("spec.http[{}]", er.index),
                format!(
                    "unreachable: {} http[{}] before it matches every request",
                    by.id(),
                    winner.index
                ),
            ));
        }
    }
}

/// A match block that passes every request on every server: a catch-all
/// uri and no other condition, not even a compile-time one.
fn matches_everything(mb: &HttpMatch) -> bool {
    let uri = match &mb.uri {
        None => true,
        Some(u) => {
            let prefix = u.prefix.as_deref() == Some("/") && u.exact.is_none() && u.regex.is_none();
            let regex = u.regex.as_deref() == Some(".*") && u.exact.is_none() && u.prefix.is_none();
            let empty = u.exact.is_none() && u.prefix.is_none() && u.regex.is_none();
            prefix || regex || empty
        }
    };
    uri && mb.method.is_none()
        && mb.authority.is_none()
        && mb.scheme.is_none()
        && mb.headers.is_empty()
        && mb.without_headers.is_empty()
        && mb.query_params.is_empty()
        && mb.port.is_none()
        && mb.gateways.is_empty()
        && mb.source_labels.is_empty()
        && mb.source_namespace.as_deref().is_none_or(str::is_empty)
}

/// istiod's `IsCatchAllRoute`: uri prefix `/` (or none) or regex `.*`, and
/// no other condition.
fn is_catch_all(m: &RouteMatch) -> bool {
    let uri = match &m.uri {
        None => true,
        Some(StringMatch::Prefix(p)) => p == "/",
        Some(StringMatch::Regex(r)) => r.as_str() == "^(?:.*)$",
        Some(StringMatch::Exact(_)) => false,
    };
    uri && m.method.is_none()
        && m.authority.is_none()
        && m.scheme.is_none()
        && m.headers.is_empty()
        && m.query_params.is_empty()
}

/// Fills the lookup indices: exact domains, wildcard suffixes longest
/// first, and `*`.
fn index_vhosts(name: String, vhosts: Vec<VirtualHost>) -> HttpRouting {
    let mut routing = HttpRouting {
        name,
        ..HttpRouting::default()
    };
    for (i, vhost) in vhosts.iter().enumerate() {
        for domain in &vhost.domains {
            if domain == "*" {
                routing.catch_all = Some(i);
            } else if let Some(suffix) = domain.strip_prefix('*') {
                routing.wildcard.push((suffix.to_owned(), i));
            } else {
                routing.exact.insert(domain.clone(), i);
            }
        }
    }
    routing
        .wildcard
        .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
    routing.vhosts = vhosts;
    routing
}
