//! Destinations → clusters: each destination of a route resolved once
//! against the ServiceEntry registry and the DestinationRule policy of its
//! host.

use crate::config::Resource;
use crate::config::manifest::{RouteDestination, VirtualServiceSpec};
use crate::diag::Severity;

use super::{Compiler, fmt_labels};
use crate::routing::names::expand_host;
use crate::routing::policy::{Unservable, port_number};
use crate::routing::table::{Cluster, ClusterId, Service};

impl Compiler<'_> {
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
