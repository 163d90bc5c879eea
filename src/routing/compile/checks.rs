//! Checks of every VirtualService that do not depend on a listener: its
//! shape (delegates, routes), its gateways, its match blocks, and rules no
//! connection can reach.

use crate::config::Resource;
use crate::config::manifest::VirtualServiceSpec;
use crate::diag::Severity;

use super::{Compiler, Section};
use crate::routing::names::{GatewayRef, resolve_gateway};
use crate::routing::policy::port_number;

impl Compiler<'_> {
    /// A VirtualService without hosts is a delegate (Istio): HTTP routes
    /// another VirtualService's `http[].delegate` hands over. Istio's rules
    /// for one: no gateways, no tcp or tls routes. Its rules apply through
    /// the root that names it (`delegate.rs`).
    pub(super) fn check_delegate(&mut self, vs: &Resource<VirtualServiceSpec>) {
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
        if !referenced {
            self.push(vs.diag(
                Severity::Warning,
                "spec.hosts",
                "a delegate VirtualService (no hosts) that no VirtualService delegates to: it has no effect",
            ));
        }
    }

    /// Structural checks and warnings for every VirtualService.
    pub(super) fn check_virtual_services(&mut self) {
        for vs in &self.m.virtual_services {
            if vs.spec.hosts.is_empty() {
                self.check_delegate(vs);
            }
            self.check_sections(vs);
            self.check_gateway_refs(vs);
            self.check_tcp_matches(vs);
            self.check_tls_matches(vs);
            self.unreachable_rules(vs);
        }
    }

    /// A VirtualService needs routes; fields accepted and not applied.
    fn check_sections(&mut self, vs: &Resource<VirtualServiceSpec>) {
        if vs.spec.tcp.is_empty() && vs.spec.tls.is_empty() && vs.spec.http.is_none() {
            self.push(vs.diag(
                Severity::Error,
                "spec",
                "a VirtualService needs routes: write http: for HTTP servers, tcp: for TCP servers or tls: for TLS passthrough servers",
            ));
        }
        if vs.spec.export_to.is_some() {
            self.push(vs.diag(
                Severity::Warning,
                "spec.exportTo",
                "exportTo is accepted but not applied: every resource is visible to ringway",
            ));
        }
    }

    /// Every gateway a VirtualService names must be defined.
    fn check_gateway_refs(&mut self, vs: &Resource<VirtualServiceSpec>) {
        let m = self.m;
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
    }

    /// The match blocks of tcp rules: ports, and fields that do nothing here.
    fn check_tcp_matches(&mut self, vs: &Resource<VirtualServiceSpec>) {
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
    }

    /// The match blocks of tls rules: sniHosts required, ports, and fields
    /// that do nothing here.
    fn check_tls_matches(&mut self, vs: &Resource<VirtualServiceSpec>) {
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
    }

    pub(super) fn check_match_port(
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

    pub(super) fn ignored_match_fields<const N: usize>(
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
    pub(super) fn unreachable_rules(&mut self, vs: &Resource<VirtualServiceSpec>) {
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
    pub(super) fn check_unused_rules(&mut self) {
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
