//! Destinations → clusters: each destination of a route resolved once
//! against the ServiceEntry registry and the DestinationRule policy of its
//! host.

use crate::config::Resource;
use crate::config::manifest::{
    Destination, Labels, Resolution, ServiceEntrySpec, ServicePort, VirtualServiceSpec,
};
use crate::diag::Severity;

use super::{Compiler, fmt_labels};
use crate::routing::names::expand_host;
use crate::routing::policy::{Unservable, port_number};
use crate::routing::table::{Cluster, ClusterId, ClusterPolicy, Endpoint, Service};

impl<'m> Compiler<'m> {
    /// Resolves a destination to its cluster, building the cluster once.
    pub(super) fn cluster(
        &mut self,
        vs: &Resource<VirtualServiceSpec>,
        path: &str,
        dest: &Destination,
    ) -> Option<ClusterId> {
        let (host, se) = self.service(vs, path, &dest.host)?;
        let number = dest.port.and_then(|p| p.number);
        let service_port = self.service_port(vs, path, &host, se, number)?;
        let port = port_number(service_port.number)?;
        let subset = dest.subset.as_deref();
        let subset_labels = match subset {
            None => None,
            Some(name) => Some(self.subset_labels(vs, path, &host, name)?),
        };
        let name = format!("outbound|{port}|{}|{host}", subset.unwrap_or(""));
        if let Some(id) = self.clusters.get(&name) {
            return Some(*id);
        }
        let endpoints = self.endpoints(vs, path, se, service_port, subset, subset_labels)?;
        let policy = self.cluster_policy(vs, path, &host, port, subset)?;
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

    /// The ServiceEntry declaring a destination host (expanded), when it
    /// has addresses to connect to.
    fn service(
        &mut self,
        vs: &Resource<VirtualServiceSpec>,
        path: &str,
        written: &str,
    ) -> Option<(String, &'m Resource<ServiceEntrySpec>)> {
        if written.is_empty() || written == "*" {
            self.push(vs.diag(
                Severity::Error,
                &format!("{path}.host"),
                "host must name a service, for example tcp-echo",
            ));
            return None;
        }
        let host = expand_host(written, &vs.namespace, &self.options.domain);
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
        let what = match se.spec.resolution {
            Some(Resolution::Static | Resolution::Dns | Resolution::DnsRoundRobin) => {
                return Some((host, se));
            }
            Some(Resolution::DynamicDns) => {
                "DYNAMIC_DNS, which routes by request host and cannot serve raw TCP".to_owned()
            }
            Some(Resolution::None) => "NONE".to_owned(),
            None => "NONE (the default when unset)".to_owned(),
        };
        self.push(vs.diag(
            Severity::Error,
            &format!("{path}.host"),
            format!(
                "{} has resolution {what}; a gateway needs addresses to connect to: set resolution: STATIC or DNS with endpoints",
                se.id()
            ),
        ));
        None
    }

    /// The service port a destination names (`number`), or the only one.
    fn service_port(
        &mut self,
        vs: &Resource<VirtualServiceSpec>,
        path: &str,
        host: &str,
        se: &'m Resource<ServiceEntrySpec>,
        number: Option<u32>,
    ) -> Option<&'m ServicePort> {
        let ports: Vec<String> = se
            .spec
            .ports
            .iter()
            .map(|p| format!("{} ({})", p.number, p.name))
            .collect();
        match number {
            Some(n) => {
                let found = se.spec.ports.iter().find(|p| p.number == n);
                if found.is_none() {
                    self.push(vs.diag(
                        Severity::Error,
                        &format!("{path}.port.number"),
                        format!(
                            "service {host} has no port {n} (ports: {})",
                            ports.join(", ")
                        ),
                    ));
                }
                found
            }
            None if se.spec.ports.len() == 1 => Some(&se.spec.ports[0]),
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
                None
            }
        }
    }

    /// The labels of subset `name` of `host`'s DestinationRule.
    fn subset_labels(
        &mut self,
        vs: &Resource<VirtualServiceSpec>,
        path: &str,
        host: &str,
        name: &str,
    ) -> Option<Labels> {
        let rule = self.rules.get(host).map(|(_, r)| r);
        if let Some(s) = rule.and_then(|r| r.subset(name)) {
            return Some(s.labels.clone());
        }
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
            None => format!("subset {name:?} is not declared: no DestinationRule has host {host}"),
        };
        self.push(vs.diag(Severity::Error, &format!("{path}.subset"), message));
        None
    }

    /// The endpoints of a service port (and subset): `None` when some
    /// cannot be connected to, or none is selected.
    fn endpoints(
        &mut self,
        vs: &Resource<VirtualServiceSpec>,
        path: &str,
        se: &'m Resource<ServiceEntrySpec>,
        service_port: &ServicePort,
        subset: Option<&str>,
        subset_labels: Option<Labels>,
    ) -> Option<Vec<Endpoint>> {
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
        if !endpoints.is_empty() {
            return Some(endpoints);
        }
        let message = match (subset, &subset_labels) {
            (Some(subset), Some(labels)) => format!(
                "subset {subset:?} (labels {}) selects no endpoint of {}",
                fmt_labels(labels),
                se.id()
            ),
            _ => format!("{} has no endpoints", se.id()),
        };
        self.push(vs.diag(Severity::Error, &format!("{path}.subset"), message));
        None
    }

    /// The policy of `host`'s DestinationRule for this port and subset
    /// (defaults without one); `None` when it asks for what ringway cannot
    /// serve.
    fn cluster_policy(
        &mut self,
        vs: &Resource<VirtualServiceSpec>,
        path: &str,
        host: &str,
        port: u16,
        subset: Option<&str>,
    ) -> Option<ClusterPolicy> {
        let Some((_, rule)) = self.rules.get(host) else {
            return Some(ClusterPolicy::default());
        };
        let message = match rule.cluster_policy(port, subset) {
            Ok(policy) => return Some(policy),
            Err(Unservable::TlsOrigination(mode)) => format!(
                "{} asks for TLS to {host} (tls.mode {}), and ringway does not originate TLS yet: \
                 it would send plaintext where Istio encrypts; set tls.mode DISABLE if the upstream \
                 speaks plaintext",
                rule.id,
                crate::routing::policy::tls_mode_name(mode)
            ),
            Err(Unservable::Passthrough) => format!(
                "{} balances {host} with PASSTHROUGH, which forwards to the original destination: \
                 at a gateway that is the gateway itself; use ROUND_ROBIN, LEAST_REQUEST or RANDOM",
                rule.id
            ),
        };
        self.push(vs.diag(Severity::Error, &format!("{path}.host"), message));
        None
    }
}
