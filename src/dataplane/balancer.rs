//! Per-worker choice of cluster (smooth weighted round robin over the route's
//! clusters) and of endpoint (the cluster's load-balancing policy). State is
//! per worker: LEAST_REQUEST counts the worker's own active connections.

use std::net::{IpAddr, SocketAddr};

use crate::routing::SmoothWrr;
use crate::routing::table::{ClusterId, LoadBalancer, RouteId};

use super::Plan;

#[derive(Debug)]
struct ClusterState {
    /// Connections this worker has open (or connecting) per endpoint.
    active: Vec<u32>,
    round_robin: SmoothWrr,
    /// Where LEAST_REQUEST starts looking, so ties rotate.
    next: usize,
}

#[derive(Debug)]
pub struct Balancer {
    routes: Vec<SmoothWrr>,
    clusters: Vec<ClusterState>,
    rng: u64,
}

impl Balancer {
    pub fn new(plan: &Plan, seed: u64) -> Balancer {
        Balancer {
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
                    round_robin: SmoothWrr::new(eps.iter().map(|e| e.weight)),
                    next: 0,
                })
                .collect(),
            rng: seed | 1,
        }
    }

    /// The cluster the next connection on `route` goes to.
    pub fn pick_cluster(&mut self, plan: &Plan, route: RouteId) -> Option<ClusterId> {
        let clusters = &plan.table.route(route).clusters;
        let wrr = self.routes.get_mut(route.0 as usize)?;
        clusters.get(wrr.pick()).map(|c| c.cluster)
    }

    /// An endpoint of `cluster` by its policy, preferring endpoints not in
    /// `tried` (a retry goes elsewhere when it can).
    pub fn pick_endpoint(
        &mut self,
        plan: &Plan,
        cluster: ClusterId,
        source: IpAddr,
        tried: &[usize],
    ) -> Option<usize> {
        let endpoints = plan.endpoints.get(cluster.0 as usize)?;
        if endpoints.is_empty() {
            return None;
        }
        let untried = |i: usize| !tried.contains(&i) && endpoints[i].weight > 0;
        let usable: &dyn Fn(usize) -> bool = if (0..endpoints.len()).any(untried) {
            &untried
        } else {
            &|i: usize| endpoints[i].weight > 0
        };
        let state = self.clusters.get_mut(cluster.0 as usize)?;
        let n = endpoints.len();
        match plan.table.cluster(cluster).policy.load_balancer {
            LoadBalancer::RoundRobin => state.round_robin.pick_where(usable),
            LoadBalancer::LeastRequest => {
                // Fewest active connections per unit of weight; ties rotate.
                let mut best: Option<usize> = None;
                for k in 0..n {
                    let i = (state.next + k) % n;
                    if !usable(i) {
                        continue;
                    }
                    let better = best.is_none_or(|b| {
                        u64::from(state.active[i]) * u64::from(endpoints[b].weight)
                            < u64::from(state.active[b]) * u64::from(endpoints[i].weight)
                    });
                    if better {
                        best = Some(i);
                    }
                }
                state.next = (state.next + 1) % n;
                best
            }
            LoadBalancer::Random => {
                let draw = xorshift(&mut self.rng);
                weighted(endpoints.iter().map(|e| e.weight), usable, draw)
            }
            LoadBalancer::SourceIpHash => {
                let draw = fnv1a(source);
                weighted(endpoints.iter().map(|e| e.weight), usable, draw)
            }
        }
    }

    pub fn opened(&mut self, cluster: ClusterId, endpoint: usize) {
        if let Some(a) = self.active_mut(cluster, endpoint) {
            *a += 1;
        }
    }

    pub fn closed(&mut self, cluster: ClusterId, endpoint: usize) {
        if let Some(a) = self.active_mut(cluster, endpoint) {
            *a = a.saturating_sub(1);
        }
    }

    fn active_mut(&mut self, cluster: ClusterId, endpoint: usize) -> Option<&mut u32> {
        self.clusters
            .get_mut(cluster.0 as usize)?
            .active
            .get_mut(endpoint)
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
    let bytes: Vec<u8> = match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// One resolved endpoint of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub address: SocketAddr,
    pub weight: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn source_hash_is_stable() {
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(fnv1a(ip), fnv1a(ip));
        assert_ne!(fnv1a(ip), fnv1a("10.1.2.4".parse().unwrap()));
    }
}
