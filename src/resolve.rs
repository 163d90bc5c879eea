//! DNS endpoints: a compiled table keeps ServiceEntry host names
//! ([`EndpointAddress::Hostname`]); before a table reaches the workers every
//! name is resolved and each address becomes an endpoint of its own. This
//! runs at load and again periodically, off the data path.
#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, ToSocketAddrs};

use crate::diag::{Diagnostic, Diagnostics};
use crate::routing::RouteTable;
use crate::routing::table::{Endpoint, EndpointAddress};

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

/// A copy of `table` where every host-name endpoint is replaced by one
/// endpoint per address it resolves to (same port, weight and labels,
/// duplicates dropped). A name that does not resolve contributes no
/// endpoint, with a warning: its cluster may be left with none, and its
/// connections then fail as "no healthy upstream" (`UH`).
pub fn resolve_table(table: &RouteTable, resolver: &dyn Resolver) -> (RouteTable, Diagnostics) {
    let mut diagnostics = Diagnostics::default();
    let mut resolved = table.clone();
    for cluster in &mut resolved.clusters {
        let mut endpoints: Vec<Endpoint> = Vec::with_capacity(cluster.endpoints.len());
        let mut seen: BTreeSet<(IpAddr, u16)> = BTreeSet::new();
        for endpoint in &cluster.endpoints {
            let addresses = match &endpoint.address {
                EndpointAddress::Ip(ip) => vec![*ip],
                EndpointAddress::Hostname(host) => match resolver.resolve(host) {
                    Ok(addresses) if !addresses.is_empty() => addresses,
                    Ok(_) => {
                        diagnostics.push(Diagnostic::warning(format!(
                            "cluster {}: {host} resolves to no address; it gives no endpoint until it does",
                            cluster.name
                        )));
                        Vec::new()
                    }
                    Err(e) => {
                        diagnostics.push(Diagnostic::warning(format!(
                            "cluster {}: cannot resolve {host}: {e}; it gives no endpoint until it resolves",
                            cluster.name
                        )));
                        Vec::new()
                    }
                },
            };
            for ip in addresses {
                if seen.insert((ip, endpoint.port)) {
                    endpoints.push(Endpoint {
                        address: EndpointAddress::Ip(ip),
                        ..endpoint.clone()
                    });
                }
            }
        }
        cluster.endpoints = endpoints;
    }
    (resolved, diagnostics)
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
        let (resolved, diagnostics) = resolve_table(&table, &fake);
        assert!(!has_hostnames(&resolved));
        let endpoints: Vec<(String, Option<&str>)> = resolved.clusters[0]
            .endpoints
            .iter()
            .map(|e| (e.to_string(), e.labels.get("role").map(String::as_str)))
            .collect();
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
    fn the_system_resolver_reads_localhost() {
        let addresses = SystemResolver
            .resolve("localhost")
            .expect("localhost resolves");
        assert!(addresses.iter().any(IpAddr::is_loopback), "{addresses:?}");
    }
}
