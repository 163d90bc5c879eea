//! The service registry ringway compiles against: ServiceEntries (and the
//! WorkloadEntries they select), validated once and indexed by host.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use crate::config::manifest::{
    Labels, Resolution, ServiceEntrySpec, ServicePort, WorkloadEntrySpec,
};
use crate::config::{Manifests, Resource};
use crate::diag::{Diagnostics, Severity};

use super::names::expand_host;
use super::policy::port_number;
use super::table::{Endpoint, EndpointAddress};

/// ServiceEntries by fully qualified host.
pub struct Registry<'m> {
    m: &'m Manifests,
    hosts: HashMap<String, usize>,
    /// ServiceEntries with errors of their own: destinations naming them
    /// fail without repeating those errors.
    broken: HashSet<usize>,
}

impl<'m> Registry<'m> {
    /// Validates every ServiceEntry and WorkloadEntry and indexes the hosts.
    pub fn build(m: &'m Manifests, domain: &str, diags: &mut Diagnostics) -> Registry<'m> {
        let mut hosts: HashMap<String, usize> = HashMap::new();
        let mut broken = HashSet::new();
        for (i, se) in m.service_entries.iter().enumerate() {
            let before = diags.count(Severity::Error);
            check_service_entry(se, diags);
            if diags.count(Severity::Error) > before {
                broken.insert(i);
            }
            for (h, host) in se.spec.hosts.iter().enumerate() {
                if host == "*" || host.is_empty() {
                    continue;
                }
                // ringway expands a dotless ServiceEntry host like any short
                // name (Istio does not: istio#36864).
                let fqdn = expand_host(host, &se.namespace, domain);
                if let Some(&first) = hosts.get(&fqdn) {
                    let other = &m.service_entries[first];
                    if first != i {
                        diags.push(se.diag(
                            Severity::Error,
                            &format!("spec.hosts[{h}]"),
                            format!(
                                "host {fqdn} is also declared by {} at {}; declare each host in one ServiceEntry",
                                other.id(),
                                other.origin
                            ),
                        ));
                    }
                    continue;
                }
                hosts.insert(fqdn, i);
            }
        }
        for we in &m.workload_entries {
            check_workload(we, &we.spec, "spec", None, diags);
        }
        Registry { m, hosts, broken }
    }

    pub fn get(&self, fqdn: &str) -> Option<&'m Resource<ServiceEntrySpec>> {
        self.hosts.get(fqdn).map(|i| &self.m.service_entries[*i])
    }

    /// Whether the ServiceEntry of `fqdn` was reported invalid already.
    pub fn is_broken(&self, fqdn: &str) -> bool {
        self.hosts
            .get(fqdn)
            .is_some_and(|i| self.broken.contains(i))
    }

    /// Known hosts, sorted, for "known: ..." hints.
    pub fn hosts(&self) -> Vec<&str> {
        let mut hosts: Vec<&str> = self.hosts.keys().map(String::as_str).collect();
        hosts.sort_unstable();
        hosts
    }

    /// The workloads of `se` (its endpoints, or the WorkloadEntries its
    /// selector picks) whose labels include `subset`'s.
    fn selected(
        &self,
        se: &'m Resource<ServiceEntrySpec>,
        subset: Option<&Labels>,
    ) -> Vec<Workload<'m>> {
        let workloads: Vec<Workload<'m>> = match &se.spec.workload_selector {
            Some(selector) if se.spec.endpoints.is_empty() => self
                .m
                .workload_entries
                .iter()
                .filter(|we| {
                    we.namespace == se.namespace && contains(&we.spec.labels, &selector.labels)
                })
                .map(|we| Workload {
                    // istiod: the service.istio.io/workload-name label, else
                    // the WorkloadEntry's name.
                    name: we
                        .spec
                        .labels
                        .get(WORKLOAD_NAME_LABEL)
                        .unwrap_or(&we.name)
                        .clone(),
                    namespace: &we.namespace,
                    spec: &we.spec,
                })
                .collect(),
            // istiod names inline endpoints `<ServiceEntry>-<index>`.
            _ => se
                .spec
                .endpoints
                .iter()
                .enumerate()
                .map(|(i, spec)| Workload {
                    name: format!("{}-{i}", se.name),
                    namespace: &se.namespace,
                    spec,
                })
                .collect(),
        };
        workloads
            .into_iter()
            .filter(|w| subset.is_none_or(|s| contains(&w.spec.labels, s)))
            .collect()
    }

    /// The workloads of `se` (for `subset`) that ringway cannot connect to,
    /// described: a unix domain socket, or no address (an endpoint Istio
    /// reaches through another network's gateway).
    pub fn unreachable(
        &self,
        se: &'m Resource<ServiceEntrySpec>,
        subset: Option<&Labels>,
    ) -> Vec<String> {
        self.selected(se, subset)
            .into_iter()
            .map(|w| w.spec)
            .filter_map(|w| match w.address.as_deref() {
                Some(a) if a.starts_with("unix://") => {
                    Some(format!("{a} (unix domain sockets are not supported)"))
                }
                None | Some("") => Some(format!(
                    "an endpoint without address on network {:?} (reached through that network's gateway in Istio)",
                    w.network.as_deref().unwrap_or("")
                )),
                Some(_) => None,
            })
            .collect()
    }

    /// The endpoints of `se` for `port` whose labels include `subset`'s.
    pub fn endpoints(
        &self,
        se: &Resource<ServiceEntrySpec>,
        port: &ServicePort,
        subset: Option<&Labels>,
    ) -> Vec<Endpoint> {
        let workloads = self.selected(se, subset);
        let target = port
            .target_port
            .and_then(port_number)
            .or_else(|| port_number(port.number))
            .unwrap_or(0);
        let mut endpoints: Vec<Endpoint> = workloads
            .into_iter()
            .filter_map(
                |Workload {
                     name,
                     namespace,
                     spec: w,
                 }| {
                    let address = endpoint_address(w.address.as_deref()?)?;
                    let port = w
                        .ports
                        .get(&port.name)
                        .copied()
                        .and_then(port_number)
                        .unwrap_or(target);
                    let weight = w.weight.filter(|w| *w > 0).unwrap_or(1);
                    Some(Endpoint {
                        address,
                        port,
                        weight,
                        labels: w.labels.clone(),
                        workload: Some(name),
                        namespace: namespace.to_owned(),
                    })
                },
            )
            .collect();
        let is_dns = matches!(
            se.spec.resolution,
            Some(Resolution::Dns | Resolution::DnsRoundRobin)
        );
        if is_dns
            && se.spec.endpoints.is_empty()
            && se.spec.workload_selector.is_none()
            && subset.is_none()
        {
            // DNS without endpoints: the hosts themselves are resolved.
            endpoints = se
                .spec
                .hosts
                .iter()
                .filter(|h| !h.starts_with('*'))
                .map(|h| Endpoint {
                    address: EndpointAddress::Hostname(h.clone()),
                    port: target,
                    weight: 1,
                    labels: Labels::new(),
                    workload: None,
                    namespace: se.namespace.clone(),
                })
                .collect();
        }
        if se.spec.resolution == Some(Resolution::DnsRoundRobin) {
            for e in &mut endpoints {
                if let EndpointAddress::Hostname(host) = &e.address {
                    e.address = EndpointAddress::LogicalDns(host.clone());
                }
            }
        }
        endpoints
    }
}

/// The WorkloadEntry label istiod takes a workload's name from.
const WORKLOAD_NAME_LABEL: &str = "service.istio.io/workload-name";

/// One workload of a ServiceEntry: an inline endpoint or a WorkloadEntry
/// its selector picked, with the name and namespace Istio's metrics give it.
struct Workload<'m> {
    name: String,
    namespace: &'m str,
    spec: &'m WorkloadEntrySpec,
}

/// Whether `labels` holds every pair of `selector`.
pub fn contains(labels: &Labels, selector: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn endpoint_address(address: &str) -> Option<EndpointAddress> {
    if address.starts_with("unix://") || address.is_empty() {
        return None;
    }
    Some(match address.parse::<IpAddr>() {
        Ok(ip) => EndpointAddress::Ip(ip),
        Err(_) => EndpointAddress::Hostname(address.to_owned()),
    })
}

fn check_service_entry(se: &Resource<ServiceEntrySpec>, diags: &mut Diagnostics) {
    let spec = &se.spec;
    let error = |path: &str, msg: String| se.diag(Severity::Error, path, msg);
    if spec.hosts.is_empty() {
        diags.push(error(
            "spec.hosts",
            "at least one host is required".to_owned(),
        ));
    }
    if spec.resolution == Some(Resolution::DnsRoundRobin) && spec.endpoints.len() > 1 {
        // Istio's validation: "there must only be 0 or 1 endpoint for
        // resolution mode DNS_ROUND_ROBIN".
        diags.push(error(
            "spec.endpoints",
            format!(
                "resolution DNS_ROUND_ROBIN takes at most one endpoint (it has {}), as in Istio: \
                 it connects to the first address of one name; use resolution: DNS to balance over several",
                spec.endpoints.len()
            ),
        ));
    }
    for (i, host) in spec.hosts.iter().enumerate() {
        if host == "*" || host.is_empty() {
            diags.push(error(
                &format!("spec.hosts[{i}]"),
                format!(
                    "host {host:?} is not allowed: name the service, for example tcp-echo.default.svc.cluster.local"
                ),
            ));
        }
    }
    check_service_ports(se, diags);
    if !spec.endpoints.is_empty() && spec.workload_selector.is_some() {
        diags.push(error(
            "spec.workloadSelector",
            "set either endpoints or workloadSelector, not both".to_owned(),
        ));
    }
    if matches!(spec.resolution, None | Some(Resolution::None)) && !spec.endpoints.is_empty() {
        diags.push(error(
            "spec.resolution",
            "endpoints need resolution STATIC (IP addresses) or DNS (host names); NONE, the default, takes none".to_owned(),
        ));
    }
    let names: Vec<&str> = spec.ports.iter().map(|p| p.name.as_str()).collect();
    for (i, ep) in spec.endpoints.iter().enumerate() {
        check_workload(
            se,
            ep,
            &format!("spec.endpoints[{i}]"),
            Some((&names, spec.resolution)),
            diags,
        );
    }
    warn_unapplied_fields(se, diags);
}

/// A ServiceEntry's ports: numbers in range, names given, both unique.
fn check_service_ports(se: &Resource<ServiceEntrySpec>, diags: &mut Diagnostics) {
    let spec = &se.spec;
    let mut error = |path: &str, msg: String| diags.push(se.diag(Severity::Error, path, msg));
    for (i, port) in spec.ports.iter().enumerate() {
        let path = format!("spec.ports[{i}]");
        if port_number(port.number).is_none() {
            error(
                &format!("{path}.number"),
                format!("port {} is out of range (1-65535)", port.number),
            );
        }
        if let Some(t) = port.target_port.filter(|t| port_number(*t).is_none()) {
            error(
                &format!("{path}.targetPort"),
                format!("targetPort {t} is out of range (1-65535)"),
            );
        }
        if port.name.is_empty() {
            error(
                &format!("{path}.name"),
                "every port needs a name (endpoint port maps refer to it)".to_owned(),
            );
        }
        if let Some(j) = spec.ports[..i]
            .iter()
            .position(|p| p.name == port.name && !port.name.is_empty())
        {
            error(
                &format!("{path}.name"),
                format!("duplicate port name {:?} (also ports[{j}])", port.name),
            );
        }
        if let Some(j) = spec.ports[..i].iter().position(|p| p.number == port.number) {
            error(
                &format!("{path}.number"),
                format!("duplicate port number {} (also ports[{j}])", port.number),
            );
        }
    }
}

/// Warnings for ServiceEntry fields accepted and not applied.
fn warn_unapplied_fields(se: &Resource<ServiceEntrySpec>, diags: &mut Diagnostics) {
    let spec = &se.spec;
    for (field, present) in [
        ("addresses", spec.addresses.is_some()),
        ("exportTo", spec.export_to.is_some()),
        ("subjectAltNames", spec.subject_alt_names.is_some()),
    ] {
        if present {
            diags.push(se.diag(
                Severity::Warning,
                &format!("spec.{field}"),
                format!("{field} is accepted but has no effect at ringway's gateway"),
            ));
        }
    }
}

/// Checks one endpoint (inline in a ServiceEntry, or a WorkloadEntry's spec).
fn check_workload<T>(
    res: &Resource<T>,
    w: &WorkloadEntrySpec,
    path: &str,
    service: Option<(&[&str], Option<Resolution>)>,
    diags: &mut Diagnostics,
) {
    // Valid Istio that ringway cannot connect to: a warning here, an error
    // for a route that reaches it (`Registry::unreachable`).
    match w.address.as_deref() {
        None | Some("") if w.network.is_some() => diags.push(res.diag(
            Severity::Warning,
            &format!("{path}.address"),
            "an endpoint without address is reached through its network's gateway in Istio; \
             ringway cannot connect to it, so a route to it is refused",
        )),
        None | Some("") => diags.push(res.diag(
            Severity::Error,
            &format!("{path}.address"),
            "address is required (or network, for an endpoint behind another network's gateway)",
        )),
        Some(a) if a.starts_with("unix://") => diags.push(res.diag(
            Severity::Warning,
            &format!("{path}.address"),
            "unix domain socket endpoints are not supported: a route to this endpoint is refused; \
             use an IP address or host name to serve it",
        )),
        Some(a) => {
            let is_static = service.is_some_and(|(_, r)| r == Some(Resolution::Static));
            if is_static && a.parse::<IpAddr>().is_err() {
                diags.push(res.diag(
                    Severity::Error,
                    &format!("{path}.address"),
                    format!("{a:?} is not an IP address; resolution STATIC needs IPs (use resolution: DNS for host names)"),
                ));
            }
        }
    }
    for (name, port) in &w.ports {
        let ppath = format!("{path}.ports.{name}");
        if port_number(*port).is_none() {
            diags.push(res.diag(
                Severity::Error,
                &ppath,
                format!("port {port} is out of range (1-65535)"),
            ));
        }
        if let Some((names, _)) = service {
            if !names.contains(&name.as_str()) {
                diags.push(res.diag(
                    Severity::Error,
                    &ppath,
                    format!(
                        "{name:?} is not a port name of this ServiceEntry (ports: {})",
                        names.join(", ")
                    ),
                ));
            }
        }
    }
    for (field, present) in [
        ("network", w.network.is_some()),
        ("locality", w.locality.is_some()),
        ("serviceAccount", w.service_account.is_some()),
    ] {
        if present {
            diags.push(res.diag(
                Severity::Warning,
                &format!("{path}.{field}"),
                format!("{field} is accepted but not implemented by ringway; it has no effect"),
            ));
        }
    }
}
