//! Per-worker choice of cluster (smooth weighted round robin over the route's
//! clusters) and of endpoint (the cluster's load-balancing policy, skipping
//! ejected endpoints). State is per worker: LEAST_REQUEST counts the
//! worker's own active connections, and outlier detection counts the
//! worker's own connect failures (so with N workers an endpoint is ejected
//! by each worker that sees it fail). Time is passed in.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use crate::routing::SmoothWrr;
use crate::routing::table::{ClusterId, LoadBalancer, RouteId};

use super::plan::{EndpointKey, Plan, Target};

/// Passive health of one endpoint, as this worker saw it.
#[derive(Debug, Clone, Copy, Default)]
struct Health {
    /// Connect failures (refused, reset, timed out) since the last success.
    failures: u32,
    /// Ejected until then.
    ejected_until: Option<Instant>,
    /// Ejections so far (each one lasts longer).
    ejections: u32,
}

impl Health {
    fn ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|t| now < t)
    }
}

#[derive(Debug)]
struct ClusterState {
    /// Connections this worker has open (or connecting) per endpoint.
    active: Vec<u32>,
    health: Vec<Health>,
    round_robin: SmoothWrr,
    /// Where LEAST_REQUEST starts looking, so ties rotate.
    next: usize,
}

/// An endpoint this worker has ejected, for `/config_dump`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ejection {
    pub cluster: Arc<str>,
    pub address: SocketAddr,
    pub until: Instant,
    /// How many times this worker has ejected it.
    pub ejections: u32,
}

/// Balancing state for one plan. Calls about a connection of an older plan
/// (it keeps the table it started with) are translated to this plan's
/// endpoints by cluster name and address, so health and active counts
/// follow the endpoint, not its index, across reloads.
#[derive(Debug)]
pub struct Balancer {
    /// The plan the state below is indexed by (held, so its address is a
    /// stable identity).
    plan: Arc<Plan>,
    by_name: HashMap<Arc<str>, usize>,
    routes: Vec<SmoothWrr>,
    clusters: Vec<ClusterState>,
    rng: u64,
    /// Reused by `pick_endpoint` (no allocation per connection).
    view: Vec<(bool, u32)>,
}

impl Balancer {
    pub fn new(plan: &Arc<Plan>, seed: u64) -> Balancer {
        Balancer {
            plan: Arc::clone(plan),
            by_name: plan
                .table
                .clusters
                .iter()
                .enumerate()
                .map(|(i, c)| (Arc::from(c.name.as_str()), i))
                .collect(),
            routes: plan
                .table
                .routes
                .iter()
                .map(|r| SmoothWrr::new(r.clusters.iter().map(|c| c.weight)))
                .collect(),
            clusters: plan
                .endpoints
                .iter()
                .map(|eps| ClusterState {
                    active: vec![0; eps.len()],
                    health: vec![Health::default(); eps.len()],
                    round_robin: SmoothWrr::new(eps.iter().map(|e| e.weight)),
                    next: 0,
                })
                .collect(),
            rng: seed | 1,
            view: Vec::new(),
        }
    }

    /// The state for `plan`, taking over `previous`'s health and active
    /// counts for every endpoint both plans have (same cluster name and
    /// address): a reload or a DNS refresh forgets no ejection.
    pub fn succeed(previous: &Balancer, plan: &Arc<Plan>) -> Balancer {
        let mut next = Balancer::new(plan, previous.rng);
        for (c, state) in next.clusters.iter_mut().enumerate() {
            for e in 0..plan.endpoints[c].len() {
                let key = plan.endpoint_key(ClusterId(c as u32), e);
                if let Some((pc, pe)) = key.and_then(|k| previous.find(k)) {
                    let old = &previous.clusters[pc];
                    state.health[e] = old.health[pe];
                    state.active[e] = old.active[pe];
                }
            }
        }
        next
    }

    /// `(cluster, endpoint)` of this plan for an endpoint of any plan.
    fn find(&self, key: EndpointKey<'_>) -> Option<(usize, usize)> {
        let c = *self.by_name.get(key.cluster)?;
        let e = self.plan.endpoints[c]
            .iter()
            .position(|t| t.address == key.address)?;
        Some((c, e))
    }

    fn current(&self, plan: &Plan) -> bool {
        std::ptr::eq(plan, Arc::as_ptr(&self.plan))
    }

    /// Where endpoint `endpoint` of `cluster` in `plan` lives in this state.
    fn locate(&self, plan: &Plan, cluster: ClusterId, endpoint: usize) -> Option<(usize, usize)> {
        if self.current(plan) {
            return Some((cluster.0 as usize, endpoint));
        }
        self.find(plan.endpoint_key(cluster, endpoint)?)
    }

    fn health_mut(
        &mut self,
        plan: &Plan,
        cluster: ClusterId,
        endpoint: usize,
    ) -> Option<&mut Health> {
        let (c, e) = self.locate(plan, cluster, endpoint)?;
        self.clusters.get_mut(c)?.health.get_mut(e)
    }

    fn active_mut(&mut self, plan: &Plan, cluster: ClusterId, endpoint: usize) -> Option<&mut u32> {
        let (c, e) = self.locate(plan, cluster, endpoint)?;
        self.clusters.get_mut(c)?.active.get_mut(e)
    }

    /// The cluster the next connection on `route` goes to. A route of an
    /// older plan (a TLS connection whose ClientHello came after a reload)
    /// draws by weight.
    pub fn pick_cluster(&mut self, plan: &Plan, route: RouteId) -> Option<ClusterId> {
        let clusters = &plan.table.route(route).clusters;
        let pick = if self.current(plan) {
            self.routes.get_mut(route.0 as usize)?.pick()
        } else {
            let draw = xorshift(&mut self.rng);
            weighted(clusters.iter().map(|c| c.weight), &|_| true, draw)?
        };
        clusters.get(pick).map(|c| c.cluster)
    }

    /// An endpoint of `cluster` by its policy, preferring endpoints not in
    /// `tried` (a retry goes elsewhere when it can).
    pub fn pick_endpoint(
        &mut self,
        plan: &Plan,
        cluster: ClusterId,
        source: IpAddr,
        tried: &[usize],
        now: Instant,
    ) -> Option<usize> {
        self.pick_endpoint_hashed(plan, cluster, (source, None), tried, now)
    }

    /// [`Balancer::pick_endpoint`] for an HTTP request that carries
    /// `hash`, the hash of its `consistentHash` key (header, cookie or
    /// query parameter) when it has one.
    pub fn pick_endpoint_hashed(
        &mut self,
        plan: &Plan,
        cluster: ClusterId,
        (source, hash): (IpAddr, Option<u64>),
        tried: &[usize],
        now: Instant,
    ) -> Option<usize> {
        let endpoints = plan.endpoints.get(cluster.0 as usize)?;
        if endpoints.is_empty() {
            return None;
        }
        let policy = plan.table.cluster(cluster).policy.outlier_detection;
        // (ejected, active) of each endpoint, wherever this state keeps it.
        let mut view = std::mem::take(&mut self.view);
        view.clear();
        view.extend(
            (0..endpoints.len()).map(|e| match self.locate(plan, cluster, e) {
                Some((c, i)) => {
                    let state = &self.clusters[c];
                    (state.health[i].ejected(now), state.active[i])
                }
                None => (false, 0),
            }),
        );
        // Envoy's panic mode, which Istio enables only through
        // minHealthPercent (its healthy panic threshold): below that share
        // of healthy endpoints, ejections are ignored. At 0, the default,
        // panic mode is off: with every endpoint ejected nothing is usable,
        // and the connection closes at once with `UH`.
        let healthy = view.iter().filter(|(ejected, _)| !ejected).count();
        let min_health = policy.map_or(0, |o| o.min_health_percent as usize);
        let honour_ejections = healthy * 100 >= min_health * endpoints.len();
        let healthy_at = |i: usize| !(honour_ejections && view[i].0);
        let untried = |i: usize| !tried.contains(&i) && endpoints[i].weight > 0 && healthy_at(i);
        let any_healthy = |i: usize| endpoints[i].weight > 0 && healthy_at(i);
        let usable: &dyn Fn(usize) -> bool = if (0..endpoints.len()).any(untried) {
            &untried
        } else {
            &any_healthy
        };
        let n = endpoints.len();
        let current = self.current(plan);
        let weights = endpoints.iter().map(|e| e.weight);
        let picked = match plan.table.cluster(cluster).policy.load_balancer {
            LoadBalancer::RoundRobin if current => self.clusters[cluster.0 as usize]
                .round_robin
                .pick_where(usable),
            LoadBalancer::LeastRequest => {
                // Fewest active connections per unit of weight; ties rotate.
                let start = match current {
                    true => {
                        let state = &mut self.clusters[cluster.0 as usize];
                        let start = state.next;
                        state.next = (state.next + 1) % n;
                        start
                    }
                    false => xorshift(&mut self.rng) as usize % n,
                };
                least_request(&view, endpoints, usable, start)
            }
            LoadBalancer::RequestHash if hash.is_some() => {
                weighted(weights, usable, hash.unwrap_or_default())
            }
            // Round robin over an older plan's endpoints draws by weight.
            // A request hash without its key (and on a TCP connection):
            // random, as Envoy.
            LoadBalancer::RoundRobin | LoadBalancer::Random | LoadBalancer::RequestHash => {
                let draw = xorshift(&mut self.rng);
                weighted(weights, usable, draw)
            }
            LoadBalancer::SourceIpHash => weighted(weights, usable, fnv1a(source)),
        };
        self.view = view;
        picked
    }

    /// The endpoint accepted a connection: its failure streak ends.
    pub fn connect_succeeded(&mut self, plan: &Plan, cluster: ClusterId, endpoint: usize) {
        if let Some(h) = self.health_mut(plan, cluster, endpoint) {
            h.failures = 0;
        }
    }

    /// A connect to the endpoint failed or timed out: count it, and eject
    /// the endpoint once the streak reaches the cluster's outlier threshold
    /// (baseEjectionTime x ejections so far, capped), unless that would
    /// eject more than maxEjectionPercent of the cluster (one endpoint may
    /// always be ejected, as in Envoy). True when this ejected it.
    pub fn connect_failed(
        &mut self,
        plan: &Plan,
        cluster: ClusterId,
        endpoint: usize,
        now: Instant,
    ) -> bool {
        let Some(policy) = plan.table.cluster(cluster).policy.outlier_detection else {
            return false;
        };
        let Some((c, e)) = self.locate(plan, cluster, endpoint) else {
            return false;
        };
        let state = &mut self.clusters[c];
        let n = state.health.len();
        let already = state.health.iter().filter(|h| h.ejected(now)).count();
        let h = &mut state.health[e];
        h.failures += 1;
        if h.failures < policy.consecutive_errors || h.ejected(now) {
            return false;
        }
        let allowed = (n * policy.max_ejection_percent as usize / 100).max(1);
        if already >= allowed {
            return false;
        }
        h.ejections += 1;
        let time = policy
            .base_ejection_time
            .saturating_mul(h.ejections)
            .min(policy.max_ejection_time);
        h.ejected_until = Some(now + time);
        h.failures = 0;
        true
    }

    pub fn opened(&mut self, plan: &Plan, cluster: ClusterId, endpoint: usize) {
        if let Some(a) = self.active_mut(plan, cluster, endpoint) {
            *a += 1;
        }
    }

    pub fn closed(&mut self, plan: &Plan, cluster: ClusterId, endpoint: usize) {
        if let Some(a) = self.active_mut(plan, cluster, endpoint) {
            *a = a.saturating_sub(1);
        }
    }

    /// The endpoints this worker holds ejected at `now`.
    pub fn ejections(&self, now: Instant) -> Vec<Ejection> {
        let mut out = Vec::new();
        for (c, state) in self.clusters.iter().enumerate() {
            for (e, h) in state.health.iter().enumerate() {
                if let Some(until) = h.ejected_until.filter(|_| h.ejected(now)) {
                    out.push(Ejection {
                        cluster: Arc::from(self.plan.table.clusters[c].name.as_str()),
                        address: self.plan.endpoints[c][e].address,
                        until,
                        ejections: h.ejections,
                    });
                }
            }
        }
        out
    }
}

/// The endpoint a `draw` lands on, by weight, among the usable ones.
fn weighted(
    weights: impl Iterator<Item = u32> + Clone,
    usable: &dyn Fn(usize) -> bool,
    draw: u64,
) -> Option<usize> {
    let total: u64 = weights
        .clone()
        .enumerate()
        .filter(|(i, _)| usable(*i))
        .map(|(_, w)| u64::from(w))
        .sum();
    if total == 0 {
        return None;
    }
    let mut point = draw % total;
    for (i, w) in weights.enumerate().filter(|(i, _)| usable(*i)) {
        if point < u64::from(w) {
            return Some(i);
        }
        point -= u64::from(w);
    }
    None
}

fn xorshift(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

fn fnv1a(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => fnv1a_bytes(&v4.octets()),
        IpAddr::V6(v6) => fnv1a_bytes(&v6.octets()),
    }
}

/// FNV-1a of `bytes`: a consistent-hash key's value.
pub fn fnv1a_bytes(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The usable endpoint with the fewest active connections (`view[i].1`)
/// per unit of weight, looking from `start` so that ties rotate.
fn least_request(
    view: &[(bool, u32)],
    endpoints: &[Target],
    usable: &dyn Fn(usize) -> bool,
    start: usize,
) -> Option<usize> {
    let n = endpoints.len();
    let mut best: Option<usize> = None;
    for i in (0..n).map(|k| (start + k) % n).filter(|&i| usable(i)) {
        let better = best.is_none_or(|b| {
            u64::from(view[i].1) * u64::from(endpoints[b].weight)
                < u64::from(view[b].1) * u64::from(endpoints[i].weight)
        });
        if better {
            best = Some(i);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::plan::Target;

    #[test]
    fn weighted_draws_respect_weights_and_usability() {
        let w = [1u32, 3];
        let all = |_: usize| true;
        let counts = (0..4u64).fold([0; 2], |mut c, d| {
            c[weighted(w.iter().copied(), &all, d).unwrap()] += 1;
            c
        });
        assert_eq!(counts, [1, 3]);
        let not_first = |i: usize| i != 0;
        assert_eq!(weighted(w.iter().copied(), &not_first, 0), Some(1));
        assert_eq!(weighted(w.iter().copied(), &|_| false, 0), None);
    }

    use std::time::Duration;

    use crate::routing::RouteTable;
    use crate::routing::table::{Cluster, ClusterPolicy, OutlierDetection, Service};

    /// One cluster of `n` endpoints with `lb` and `outlier`.
    fn plan(n: usize, lb: LoadBalancer, outlier: Option<OutlierDetection>) -> Arc<Plan> {
        let cluster = Cluster {
            name: "outbound|9000||svc.default.svc.cluster.local".into(),
            service: Service {
                host: "svc.default.svc.cluster.local".into(),
                name: "svc".into(),
                namespace: "default".into(),
            },
            port: 9000,
            subset: None,
            endpoints: Vec::new(),
            policy: ClusterPolicy {
                load_balancer: lb,
                outlier_detection: outlier,
                ..ClusterPolicy::default()
            },
        };
        let table = RouteTable {
            clusters: vec![cluster],
            ..RouteTable::default()
        };
        let endpoints = (0..n)
            .map(|i| Target {
                source: i,
                address: SocketAddr::from(([127, 0, 0, 1], 10_000 + i as u16)),
                weight: 1,
            })
            .collect();
        Arc::new(Plan::new(table, vec![endpoints], None))
    }

    fn outlier(max_ejection_percent: u32, min_health_percent: u32) -> OutlierDetection {
        OutlierDetection {
            consecutive_errors: 2,
            consecutive_5xx: Some(2),
            consecutive_gateway_errors: None,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent,
            min_health_percent,
        }
    }

    const C: ClusterId = ClusterId(0);
    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn consecutive_connect_failures_eject_an_endpoint_for_a_growing_time() {
        let policy = outlier(100, 0);
        let p = plan(2, LoadBalancer::RoundRobin, Some(policy));
        let mut b = Balancer::new(&p, 1);
        let t0 = Instant::now();
        b.connect_failed(&p, C, 0, t0);
        let picks: Vec<_> = (0..4)
            .map(|_| b.pick_endpoint(&p, C, LOCAL, &[], t0))
            .collect();
        assert_eq!(
            picks,
            [Some(0), Some(1), Some(0), Some(1)],
            "one failure ejects nothing"
        );
        b.connect_failed(&p, C, 0, t0);
        let picks: Vec<_> = (0..4)
            .map(|_| b.pick_endpoint(&p, C, LOCAL, &[], t0))
            .collect();
        assert_eq!(picks, [Some(1); 4], "two in a row eject endpoint 0");
        // Back after baseEjectionTime; the second ejection lasts twice as long.
        let t1 = t0 + Duration::from_secs(30);
        assert!((0..2).any(|_| b.pick_endpoint(&p, C, LOCAL, &[], t1) == Some(0)));
        b.connect_failed(&p, C, 0, t1);
        b.connect_failed(&p, C, 0, t1);
        let t2 = t1 + Duration::from_secs(59);
        assert!((0..4).all(|_| b.pick_endpoint(&p, C, LOCAL, &[], t2) == Some(1)));
        let t3 = t1 + Duration::from_secs(60);
        assert!((0..2).any(|_| b.pick_endpoint(&p, C, LOCAL, &[], t3) == Some(0)));
    }

    #[test]
    fn a_success_ends_the_failure_streak() {
        let policy = outlier(100, 0);
        let p = plan(2, LoadBalancer::RoundRobin, Some(policy));
        let mut b = Balancer::new(&p, 1);
        let t0 = Instant::now();
        b.connect_failed(&p, C, 0, t0);
        b.connect_succeeded(&p, C, 0);
        b.connect_failed(&p, C, 0, t0);
        let picks: Vec<_> = (0..2)
            .map(|_| b.pick_endpoint(&p, C, LOCAL, &[], t0))
            .collect();
        assert_eq!(picks, [Some(0), Some(1)]);
    }

    #[test]
    fn ejection_respects_max_ejection_and_min_health_percent() {
        struct Case {
            max_ejection_percent: u32,
            min_health_percent: u32,
            /// Endpoints still picked after all four failed twice.
            want_picked: usize,
        }
        let cases = [
            // 10% of 4 rounds down to 0, but one may always be ejected.
            Case {
                max_ejection_percent: 10,
                min_health_percent: 0,
                want_picked: 3,
            },
            Case {
                max_ejection_percent: 50,
                min_health_percent: 0,
                want_picked: 2,
            },
            // All four ejected, panic mode off (Istio's default): none.
            Case {
                max_ejection_percent: 100,
                min_health_percent: 0,
                want_picked: 0,
            },
            // All four ejected, panic mode below 1% healthy: all picked.
            Case {
                max_ejection_percent: 100,
                min_health_percent: 1,
                want_picked: 4,
            },
            // Half ejected is below 60% healthy: panic mode, all picked.
            Case {
                max_ejection_percent: 50,
                min_health_percent: 60,
                want_picked: 4,
            },
        ];
        for case in cases {
            let policy = outlier(case.max_ejection_percent, case.min_health_percent);
            let p = plan(4, LoadBalancer::RoundRobin, Some(policy));
            let mut b = Balancer::new(&p, 1);
            let t0 = Instant::now();
            for e in 0..4 {
                b.connect_failed(&p, C, e, t0);
                b.connect_failed(&p, C, e, t0);
            }
            let mut picked: Vec<usize> = (0..8)
                .filter_map(|_| b.pick_endpoint(&p, C, LOCAL, &[], t0))
                .collect();
            picked.sort_unstable();
            picked.dedup();
            assert_eq!(
                picked.len(),
                case.want_picked,
                "max {}% min health {}%: {picked:?}",
                case.max_ejection_percent,
                case.min_health_percent
            );
        }
    }

    #[test]
    fn without_outlier_detection_failures_eject_nothing() {
        let p = plan(2, LoadBalancer::RoundRobin, None);
        let mut b = Balancer::new(&p, 1);
        let t0 = Instant::now();
        for _ in 0..10 {
            b.connect_failed(&p, C, 0, t0);
        }
        let picks: Vec<_> = (0..2)
            .map(|_| b.pick_endpoint(&p, C, LOCAL, &[], t0))
            .collect();
        assert_eq!(picks, [Some(0), Some(1)]);
    }

    /// The same cluster with its endpoints in reverse order and one more
    /// (what a reload or a DNS refresh may publish).
    fn reordered(p: &Plan) -> Arc<Plan> {
        let mut endpoints = p.endpoints[0].clone();
        endpoints.reverse();
        endpoints.push(Target {
            source: 0,
            address: SocketAddr::from(([127, 0, 0, 1], 10_999)),
            weight: 1,
        });
        Arc::new(Plan::new(p.table.clone(), vec![endpoints], Some(p)))
    }

    #[test]
    fn a_new_plan_keeps_ejections_and_active_counts_by_address() {
        let policy = outlier(100, 0);
        let old = plan(2, LoadBalancer::LeastRequest, Some(policy));
        let mut b = Balancer::new(&old, 1);
        let t0 = Instant::now();
        b.connect_failed(&old, C, 0, t0);
        b.connect_failed(&old, C, 0, t0);
        b.opened(&old, C, 1);
        let new = reordered(&old);
        assert!(Arc::ptr_eq(&old.cluster_open[0], &new.cluster_open[0]));
        let mut b = Balancer::succeed(&b, &new);
        // New order: [10001, 10000, 10999]; 10000 is still ejected, 10001
        // still has one connection, so LEAST_REQUEST picks 10999.
        let ejected: Vec<SocketAddr> = b.ejections(t0).iter().map(|e| e.address).collect();
        assert_eq!(ejected, [SocketAddr::from(([127, 0, 0, 1], 10_000))]);
        assert_eq!(b.pick_endpoint(&new, C, LOCAL, &[], t0), Some(2));
        // The connection of the old plan closes: counted off 10001 (new
        // index 0), found by address.
        b.closed(&old, C, 1);
        let picks: Vec<_> = (0..4)
            .filter_map(|_| b.pick_endpoint(&new, C, LOCAL, &[], t0))
            .collect();
        assert!(picks.contains(&0) && !picks.contains(&1), "{picks:?}");
        // A retry of an old-plan connection avoids the ejected endpoint too.
        for _ in 0..8 {
            assert_eq!(b.pick_endpoint(&old, C, LOCAL, &[], t0), Some(1));
        }
    }

    #[test]
    fn source_hash_is_stable() {
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(fnv1a(ip), fnv1a(ip));
        assert_ne!(fnv1a(ip), fnv1a("10.1.2.4".parse().unwrap()));
    }
}
