//! DNS endpoints: a compiled table keeps ServiceEntry host names
//! ([`EndpointAddress::Hostname`]); before a table reaches the workers every
//! name is resolved and each address becomes an endpoint of its own. This
//! runs at load and again periodically, off the data path.
#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use crate::dataplane::Target;
use crate::diag::{Diagnostic, Diagnostics};
use crate::routing::RouteTable;
use crate::routing::table::EndpointAddress;

/// Turns a host name into addresses.
pub trait Resolver {
    fn resolve(&self, host: &str) -> io::Result<Vec<IpAddr>>;
}

/// The system resolver (`getaddrinfo`: /etc/hosts, then DNS).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve(&self, host: &str) -> io::Result<Vec<IpAddr>> {
        Ok((host, 0).to_socket_addrs()?.map(|a| a.ip()).collect())
    }
}

/// Whether any endpoint of `table` needs resolving.
pub fn has_hostnames(table: &RouteTable) -> bool {
    table
        .clusters
        .iter()
        .flat_map(|c| &c.endpoints)
        .any(|e| matches!(e.address, EndpointAddress::Hostname(_)))
}

/// Every cluster's endpoints as socket addresses, indexed like
/// `table.clusters`: an IP endpoint gives one target, a host name one target
/// per address it resolves to (same port and weight; an address already
/// present in the cluster is dropped). A name that does not resolve gives
/// no target, with a warning: its cluster may be left with none, and its
/// connections then fail as "no healthy upstream" (`UH`). With `last` (the
/// targets of this same table at the previous resolution), a name that does
/// not resolve now keeps its last addresses, as Envoy's DNS clusters do.
pub fn resolve_endpoints(
    table: &RouteTable,
    resolver: &dyn Resolver,
    last: Option<&[Vec<Target>]>,
) -> (Vec<Vec<Target>>, Diagnostics) {
    let mut diagnostics = Diagnostics::default();
    let endpoints = table
        .clusters
        .iter()
        .enumerate()
        .map(|(c, cluster)| {
            let kept = |source: usize| -> Vec<IpAddr> {
                last.and_then(|l| l.get(c))
                    .into_iter()
                    .flatten()
                    .filter(|t| t.source == source)
                    .map(|t| t.address.ip())
                    .collect()
            };
            let mut targets: Vec<Target> = Vec::with_capacity(cluster.endpoints.len());
            let mut seen: BTreeSet<SocketAddr> = BTreeSet::new();
            for (source, endpoint) in cluster.endpoints.iter().enumerate() {
                let addresses = match &endpoint.address {
                    EndpointAddress::Ip(ip) => vec![*ip],
                    EndpointAddress::Hostname(host) => match resolver.resolve(host) {
                        Ok(addresses) if !addresses.is_empty() => addresses,
                        Ok(_) => {
                            diagnostics.push(Diagnostic::warning(format!(
                                "cluster {}: {host} resolves to no address; {}",
                                cluster.name,
                                unresolved(last.is_some())
                            )));
                            kept(source)
                        }
                        Err(e) => {
                            diagnostics.push(Diagnostic::warning(format!(
                                "cluster {}: cannot resolve {host}: {e}; {}",
                                cluster.name,
                                unresolved(last.is_some())
                            )));
                            kept(source)
                        }
                    },
                };
                for ip in addresses {
                    let address = SocketAddr::new(ip, endpoint.port);
                    if seen.insert(address) {
                        targets.push(Target {
                            address,
                            weight: endpoint.weight,
                            source,
                        });
                    }
                }
            }
            targets
        })
        .collect();
    (endpoints, diagnostics)
}

fn unresolved(refreshing: bool) -> &'static str {
    match refreshing {
        true => "it keeps its last addresses",
        false => "it gives no endpoint until it resolves",
    }
}

/// The endpoints of `table` resolved again: `Some` only when they differ
/// from `current` (targets of this same table), with the warnings.
pub fn refreshed(
    table: &RouteTable,
    current: &[Vec<Target>],
    resolver: &dyn Resolver,
) -> Option<(Vec<Vec<Target>>, Diagnostics)> {
    if !has_hostnames(table) {
        return None;
    }
    let (endpoints, diagnostics) = resolve_endpoints(table, resolver, Some(current));
    (endpoints != current).then_some((endpoints, diagnostics))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::config::{LoadOptions, load_str};
    use crate::routing::{CompileOptions, compile};

    struct Fake(HashMap<&'static str, Vec<IpAddr>>);

    impl Resolver for Fake {
        fn resolve(&self, host: &str) -> io::Result<Vec<IpAddr>> {
            self.0
                .get(host)
                .cloned()
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such host"))
        }
    }

    fn table() -> RouteTable {
        let text = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db}
spec:
  hosts: [db.example.com]
  resolution: DNS
  ports: [{number: 5432, name: pg}]
  endpoints:
  - {address: primary.example.com, labels: {role: primary}}
  - {address: gone.example.com}
  - {address: 10.0.0.9}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  servers: [{port: {number: 5432, name: pg, protocol: TCP}, hosts: ['*']}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db}
spec:
  hosts: ['*']
  gateways: [gw]
  tcp: [{route: [{destination: {host: db.example.com}}]}]
";
        let loaded = load_str("dns.yaml", text, &LoadOptions::default());
        let compiled = compile(&loaded.manifests, &CompileOptions::default());
        assert!(
            !compiled.diagnostics.has_errors(),
            "{:?}",
            compiled.diagnostics
        );
        compiled.table
    }

    #[test]
    fn every_address_becomes_an_endpoint_and_failures_are_warned_about() {
        let table = table();
        assert!(has_hostnames(&table));
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let fake = Fake(HashMap::from([(
            "primary.example.com",
            vec![
                ip("10.0.0.1"),
                ip("10.0.0.2"),
                ip("10.0.0.1"),
                ip("10.0.0.9"),
            ],
        )]));
        let (resolved, diagnostics) = resolve_endpoints(&table, &fake, None);
        let cluster = &table.clusters[0];
        let endpoints: Vec<(String, Option<&str>)> = resolved[0]
            .iter()
            .map(|t| {
                let role = cluster.endpoints[t.source].labels.get("role");
                (t.address.to_string(), role.map(String::as_str))
            })
            .collect();
        // 10.0.0.9 is both an address of the name and an endpoint of its own:
        // it is one endpoint, the first seen.
        assert_eq!(
            endpoints,
            vec![
                ("10.0.0.1:5432".to_owned(), Some("primary")),
                ("10.0.0.2:5432".to_owned(), Some("primary")),
                ("10.0.0.9:5432".to_owned(), Some("primary")),
            ]
        );
        let messages: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
        assert_eq!(messages.len(), 1);
        assert!(
            messages[0].contains("cannot resolve gone.example.com"),
            "{messages:?}"
        );
    }

    #[test]
    fn a_refresh_reports_changes_and_keeps_addresses_of_names_that_fail() {
        let table = table();
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let resolver = |primary: &[&str], gone: &[&str]| {
            let mut answers = HashMap::new();
            if !primary.is_empty() {
                answers.insert(
                    "primary.example.com",
                    primary.iter().map(|a| ip(a)).collect(),
                );
            }
            if !gone.is_empty() {
                answers.insert("gone.example.com", gone.iter().map(|a| ip(a)).collect());
            }
            Fake(answers)
        };
        let addresses = |targets: &[Vec<Target>]| -> Vec<String> {
            targets[0].iter().map(|t| t.address.to_string()).collect()
        };
        let (first, _) = resolve_endpoints(&table, &resolver(&["10.0.0.1"], &["10.0.0.5"]), None);
        assert_eq!(
            addresses(&first),
            ["10.0.0.1:5432", "10.0.0.5:5432", "10.0.0.9:5432"]
        );
        // The same answers: nothing to publish.
        assert!(refreshed(&table, &first, &resolver(&["10.0.0.1"], &["10.0.0.5"])).is_none());
        // primary moved; gone fails to resolve and keeps 10.0.0.5.
        let (next, warnings) =
            refreshed(&table, &first, &resolver(&["10.0.0.2", "10.0.0.3"], &[])).expect("changed");
        assert_eq!(
            addresses(&next),
            [
                "10.0.0.2:5432",
                "10.0.0.3:5432",
                "10.0.0.5:5432",
                "10.0.0.9:5432"
            ]
        );
        let messages: Vec<String> = warnings.iter().map(ToString::to_string).collect();
        assert!(
            messages.len() == 1
                && messages[0].contains("gone.example.com")
                && messages[0].contains("keeps its last addresses"),
            "{messages:?}"
        );
    }

    #[test]
    fn the_system_resolver_reads_localhost() {
        let addresses = SystemResolver
            .resolve("localhost")
            .expect("localhost resolves");
        assert!(addresses.iter().any(IpAddr::is_loopback), "{addresses:?}");
    }
}
