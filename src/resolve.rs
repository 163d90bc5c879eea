//! DNS endpoints: a compiled table keeps ServiceEntry host names
//! ([`EndpointAddress::Hostname`]); before a table reaches the workers every
//! name is resolved and each address becomes an endpoint of its own. This
//! runs at load and again periodically, off the data path.
#![forbid(unsafe_code)]

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use crate::dataplane::Target;
use crate::diag::{Diagnostic, Diagnostics};
use crate::routing::RouteTable;
use crate::routing::table::EndpointAddress;

/// Turns host names into addresses.
pub trait Resolver {
    fn resolve(&self, host: &str) -> io::Result<Vec<IpAddr>>;

    /// Every name of `hosts`, answers in the same order. The default asks
    /// one after the other; the system resolver asks all at once and gives
    /// up on slow names.
    fn resolve_all(&self, hosts: &[&str]) -> Vec<io::Result<Vec<IpAddr>>> {
        hosts.iter().map(|h| self.resolve(h)).collect()
    }
}

/// `getaddrinfo` (/etc/hosts, then DNS), one name at a time, blocking for
/// as long as the C library's own retries take (about 10 s for a name
/// server that does not answer).
#[derive(Debug, Clone, Copy, Default)]
pub struct Getaddrinfo;

impl Resolver for Getaddrinfo {
    fn resolve(&self, host: &str) -> io::Result<Vec<IpAddr>> {
        Ok((host, 0).to_socket_addrs()?.map(|a| a.ip()).collect())
    }
}

/// How long one round of lookups (start-up, a reload, a refresh) waits for
/// its names. A name server that answers does so in milliseconds; one that
/// does not would hold the C library for about 10 s per name. A name not
/// answered in time gives no endpoint until a later refresh resolves it.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// Lookup threads in one round.
const LOOKUP_THREADS: usize = 8;

/// Lookups still blocked in the C library, across rounds: past this,
/// a round does not start more threads (their names wait for the next).
const MAX_PENDING: usize = 32;

/// The system resolver: `getaddrinfo` on a few threads at once, each round
/// bounded by [`LOOKUP_TIMEOUT`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve(&self, host: &str) -> io::Result<Vec<IpAddr>> {
        let mut answers = self.resolve_all(&[host]);
        answers.pop().unwrap_or_else(|| Ok(Vec::new()))
    }

    fn resolve_all(&self, hosts: &[&str]) -> Vec<io::Result<Vec<IpAddr>>> {
        static SYSTEM: OnceLock<Parallel<Getaddrinfo>> = OnceLock::new();
        SYSTEM
            .get_or_init(|| Parallel::new(Getaddrinfo, LOOKUP_TIMEOUT, MAX_PENDING))
            .resolve_all(hosts)
    }
}

/// Asks a blocking resolver for many names at once on a few threads, and
/// answers after `timeout` whatever happened: a name still being looked up
/// then fails with `TimedOut` (its thread ends on its own when the C
/// library gives up). Threads still blocked from earlier rounds count
/// against `max_pending`, so a silent name server cannot pile them up.
#[derive(Debug)]
pub struct Parallel<R> {
    inner: R,
    timeout: Duration,
    max_pending: usize,
    pending: Arc<AtomicUsize>,
}

impl<R: Resolver + Clone + Send + 'static> Parallel<R> {
    pub fn new(inner: R, timeout: Duration, max_pending: usize) -> Parallel<R> {
        Parallel {
            inner,
            timeout,
            max_pending,
            pending: Arc::default(),
        }
    }

    /// Starts up to `wanted` lookup threads taking names from `queue`.
    fn spawn(
        &self,
        wanted: usize,
        queue: &Arc<Mutex<VecDeque<(usize, String)>>>,
        answers: &mpsc::Sender<(usize, io::Result<Vec<IpAddr>>)>,
        over: &Arc<AtomicBool>,
    ) {
        for _ in 0..wanted {
            if self.pending.fetch_add(1, Ordering::AcqRel) >= self.max_pending {
                self.pending.fetch_sub(1, Ordering::AcqRel);
                return;
            }
            let (inner, queue, answers, over, pending) = (
                self.inner.clone(),
                Arc::clone(queue),
                answers.clone(),
                Arc::clone(over),
                Arc::clone(&self.pending),
            );
            let spawned = thread::Builder::new()
                .name("dns-lookup".into())
                .spawn(move || {
                    loop {
                        if over.load(Ordering::Acquire) {
                            break;
                        }
                        let next = queue
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .pop_front();
                        let Some((i, host)) = next else { break };
                        if answers.send((i, inner.resolve(&host))).is_err() {
                            break;
                        }
                    }
                    pending.fetch_sub(1, Ordering::AcqRel);
                });
            if spawned.is_err() {
                self.pending.fetch_sub(1, Ordering::AcqRel);
                return;
            }
        }
    }
}

impl<R: Resolver + Clone + Send + 'static> Resolver for Parallel<R> {
    fn resolve(&self, host: &str) -> io::Result<Vec<IpAddr>> {
        let mut answers = self.resolve_all(&[host]);
        answers.pop().unwrap_or_else(|| Ok(Vec::new()))
    }

    fn resolve_all(&self, hosts: &[&str]) -> Vec<io::Result<Vec<IpAddr>>> {
        let mut results: Vec<Option<io::Result<Vec<IpAddr>>>> =
            hosts.iter().map(|_| None).collect();
        if hosts.is_empty() {
            return Vec::new();
        }
        let queue = Arc::new(Mutex::new(
            hosts
                .iter()
                .enumerate()
                .map(|(i, h)| (i, (*h).to_owned()))
                .collect::<VecDeque<_>>(),
        ));
        let over = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        self.spawn(hosts.len().min(LOOKUP_THREADS), &queue, &tx, &over);
        drop(tx);
        let deadline = Instant::now() + self.timeout;
        let mut left = hosts.len();
        while left > 0 {
            let wait = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok((i, answer)) => {
                    if let Some(slot) = results.get_mut(i) {
                        if slot.is_none() {
                            left -= 1;
                        }
                        *slot = Some(answer);
                    }
                }
                // Timed out, or every thread ended (none could start).
                Err(_) => break,
            }
        }
        over.store(true, Ordering::Release);
        let timeout = self.timeout;
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "no answer within {} ms (is the name server in /etc/resolv.conf reachable?)",
                            timeout.as_millis()
                        ),
                    ))
                })
            })
            .collect()
    }
}

/// Whether any endpoint of `table` needs resolving.
pub fn has_hostnames(table: &RouteTable) -> bool {
    table
        .clusters
        .iter()
        .flat_map(|c| &c.endpoints)
        .any(|e| e.address.hostname().is_some())
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
    let mut names: Vec<&str> = table
        .clusters
        .iter()
        .flat_map(|c| &c.endpoints)
        .filter_map(|e| e.address.hostname())
        .collect();
    names.sort_unstable();
    names.dedup();
    let answers: HashMap<&str, io::Result<Vec<IpAddr>>> = names
        .iter()
        .copied()
        .zip(resolver.resolve_all(&names))
        .collect();
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
                // DNS_ROUND_ROBIN uses the first address a lookup returns.
                let first_only = matches!(endpoint.address, EndpointAddress::LogicalDns(_));
                let addresses = match &endpoint.address {
                    EndpointAddress::Ip(ip) => vec![*ip],
                    EndpointAddress::Hostname(host) | EndpointAddress::LogicalDns(host) => {
                        match answers.get(host.as_str()) {
                            Some(Ok(addresses)) if !addresses.is_empty() => {
                                let take = if first_only { 1 } else { addresses.len() };
                                addresses[..take].to_vec()
                            }
                            Some(Ok(_)) | None => {
                                diagnostics.push(Diagnostic::warning(format!(
                                    "cluster {}: {host} resolves to no address; {}",
                                    cluster.name,
                                    unresolved(last.is_some())
                                )));
                                kept(source)
                            }
                            Some(Err(e)) => {
                                diagnostics.push(Diagnostic::warning(format!(
                                    "cluster {}: cannot resolve {host}: {e}; {}",
                                    cluster.name,
                                    unresolved(last.is_some())
                                )));
                                kept(source)
                            }
                        }
                    }
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
        false => "it gives no endpoint until a DNS refresh (--dns-refresh) resolves it",
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

    /// A ServiceEntry `db.example.com` resolved by `resolution` with
    /// `endpoints` (YAML flow list items), behind a TCP gateway on 5432.
    fn table_with(resolution: &str, endpoints: &str) -> RouteTable {
        let text = format!(
            "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: db}}
spec:
  hosts: [db.example.com]
  resolution: {resolution}
  ports: [{{number: 5432, name: pg}}]
  endpoints: [{endpoints}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  servers: [{{port: {{number: 5432, name: pg, protocol: TCP}}, hosts: ['*']}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: db}}
spec:
  hosts: ['*']
  gateways: [gw]
  tcp: [{{route: [{{destination: {{host: db.example.com}}}}]}}]
"
        );
        let loaded = load_str("dns.yaml", &text, &LoadOptions::default());
        let compiled = compile(&loaded.manifests, &CompileOptions::default());
        assert!(
            !compiled.diagnostics.has_errors(),
            "{:?}",
            compiled.diagnostics
        );
        compiled.table
    }

    fn table() -> RouteTable {
        table_with(
            "DNS",
            "{address: primary.example.com, labels: {role: primary}}, {address: gone.example.com}, {address: 10.0.0.9}",
        )
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
    fn dns_round_robin_uses_the_first_address_of_its_name() {
        let table = table_with("DNS_ROUND_ROBIN", "{address: primary.example.com}");
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let fake = Fake(HashMap::from([(
            "primary.example.com",
            vec![ip("10.0.0.3"), ip("10.0.0.1"), ip("10.0.0.2")],
        )]));
        let (resolved, _) = resolve_endpoints(&table, &fake, None);
        let addresses: Vec<String> = resolved[0].iter().map(|t| t.address.to_string()).collect();
        assert_eq!(addresses, ["10.0.0.3:5432"]);
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

    /// Answers `fast*` names at once; `silent*` names block until the test
    /// opens the gate (a name server that does not answer).
    #[derive(Clone)]
    struct Gate(Arc<(Mutex<bool>, std::sync::Condvar)>);

    impl Resolver for Gate {
        fn resolve(&self, host: &str) -> io::Result<Vec<IpAddr>> {
            if host.starts_with("silent") {
                let (open, cv) = &*self.0;
                let mut open = open.lock().expect("lock");
                while !*open {
                    open = cv.wait(open).expect("wait");
                }
            }
            Ok(vec![IpAddr::from([10, 0, 0, 7])])
        }
    }

    impl Gate {
        fn open(&self) {
            *self.0.0.lock().expect("lock") = true;
            self.0.1.notify_all();
        }
    }

    #[test]
    fn a_silent_name_costs_one_timeout_and_blocks_no_other_name() {
        let gate = Gate(Arc::default());
        let parallel = Parallel::new(gate.clone(), Duration::from_millis(300), 4);
        let names = ["silent-a", "fast-1", "silent-b", "fast-2", "fast-3"];
        let started = Instant::now();
        let answers = parallel.resolve_all(&names);
        let took = started.elapsed();
        // Generous bound: five names, two that never answer, one timeout.
        assert!(took < Duration::from_secs(5), "{took:?}");
        assert!(took >= Duration::from_millis(300), "{took:?}");
        let ok: Vec<bool> = answers.iter().map(Result::is_ok).collect();
        assert_eq!(ok, [false, true, false, true, true]);
        let e = answers[0].as_ref().expect_err("silent");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("no answer within 300 ms"), "{e}");
        // The two stuck lookups count against the cap of four: a second
        // round gets two threads, which still answer fast names.
        assert_eq!(parallel.pending.load(Ordering::Acquire), 2);
        let again = parallel.resolve_all(&["fast-4", "silent-c", "fast-5"]);
        assert!(again[0].is_ok() && again[2].is_ok(), "{again:?}");
        gate.open();
        until_zero(&parallel.pending);
    }

    #[test]
    fn with_every_thread_stuck_a_round_fails_fast_and_recovers() {
        let gate = Gate(Arc::default());
        let parallel = Parallel::new(gate.clone(), Duration::from_millis(100), 2);
        let stuck = parallel.resolve_all(&["silent-1", "silent-2"]);
        assert!(stuck.iter().all(Result::is_err));
        // No thread can start: every name fails (after the timeout at most).
        let started = Instant::now();
        let none = parallel.resolve_all(&["fast-1"]);
        assert!(none[0].is_err());
        assert!(started.elapsed() < Duration::from_secs(5));
        gate.open();
        until_zero(&parallel.pending);
        assert!(parallel.resolve_all(&["fast-1"])[0].is_ok());
    }

    fn until_zero(pending: &AtomicUsize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while pending.load(Ordering::Acquire) != 0 {
            assert!(Instant::now() < deadline, "lookup threads did not end");
            thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn the_system_resolver_reads_localhost() {
        let addresses = SystemResolver
            .resolve("localhost")
            .expect("localhost resolves");
        assert!(addresses.iter().any(IpAddr::is_loopback), "{addresses:?}");
    }
}
