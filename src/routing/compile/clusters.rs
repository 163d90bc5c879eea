//! Rules → routes and destinations → clusters: a route's weighted clusters,
//! each resolved once against the ServiceEntry registry and the
//! DestinationRule policy of its host.

use crate::config::Resource;
use crate::config::manifest::{RouteDestination, VirtualServiceSpec};
use crate::diag::Severity;

use super::{Compiler, Section, fmt_labels};
use crate::routing::names::expand_host;
use crate::routing::policy::{Unservable, default_route_timeouts, port_number};
use crate::routing::table::{Cluster, ClusterId, Route, RouteId, Service, WeightedCluster};

impl Compiler<'_> {
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
    pub(super) fn cluster(
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
            None => crate::routing::table::ClusterPolicy::default(),
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
                        crate::routing::policy::tls_mode_name(mode)
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
}
