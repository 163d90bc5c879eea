//! The compiled route table: what workers read. Immutable once built, every
//! name resolved to an index, no `Option` that "must be Some". Istio words
//! stay in `config/`; this module speaks listener, route, cluster, endpoint.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Serialize;

use super::http::HttpRouting;

/// Index of a route in [`RouteTable::routes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct RouteId(pub u32);

/// Index of a cluster in [`RouteTable::clusters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ClusterId(pub u32);

#[derive(Debug, Clone, Default, Serialize)]
pub struct RouteTable {
    /// Bumped by every successful reload; 0 for a table that was only checked.
    pub generation: u64,
    pub listeners: Vec<Listener>,
    pub routes: Vec<Route>,
    pub clusters: Vec<Cluster>,
}

impl RouteTable {
    pub fn route(&self, id: RouteId) -> &Route {
        &self.routes[id.0 as usize]
    }

    pub fn cluster(&self, id: ClusterId) -> &Cluster {
        &self.clusters[id.0 as usize]
    }

    pub fn listener(&self, address: SocketAddr) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.address == address)
    }

    /// The index of the listener on `address`.
    pub fn listener_index(&self, address: SocketAddr) -> Option<usize> {
        self.listeners.iter().position(|l| l.address == address)
    }

    pub fn cluster_by_name(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.name == name)
    }
}

/// One listening address and how its connections are routed.
#[derive(Debug, Clone, Serialize)]
pub struct Listener {
    /// `0.0.0.0_31400`, as Envoy names listeners.
    pub name: String,
    pub address: SocketAddr,
    /// The gateways (`namespace/name`) whose servers opened it.
    pub gateways: Vec<String>,
    pub routing: ListenerRouting,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "protocol")]
pub enum ListenerRouting {
    /// Opaque TCP: every connection takes the one route.
    Tcp { route: RouteId },
    /// TLS passthrough: the route is chosen by the ClientHello's SNI.
    TlsPassthrough { sni: SniTable },
    /// HTTP/1.1: every request is routed by its authority and match
    /// (`routing/http.rs`).
    Http { http: HttpRouting },
}

impl ListenerRouting {
    /// The route of a connection that asked for server name `sni` (`None`:
    /// no SNI, or not TLS): an opaque TCP listener's one route whatever it
    /// asked, a passthrough listener's by its SNI table.
    pub fn route_for_sni(&self, sni: Option<&str>) -> Option<RouteId> {
        match self {
            ListenerRouting::Tcp { route } => Some(*route),
            ListenerRouting::TlsPassthrough { sni: table } => table.lookup(sni),
            ListenerRouting::Http { .. } => None,
        }
    }
}

/// SNI → route, most specific first: exact names, then wildcard suffixes
/// longest first, then the catch-all `*` (which also takes clients that send
/// no SNI).
#[derive(Debug, Clone, Default, Serialize)]
pub struct SniTable {
    pub exact: BTreeMap<String, RouteId>,
    /// (`.example.com` for `*.example.com`, route), longest suffix first.
    pub wildcard: Vec<(String, RouteId)>,
    pub catch_all: Option<RouteId>,
}

impl SniTable {
    pub fn lookup(&self, sni: Option<&str>) -> Option<RouteId> {
        let Some(sni) = sni else {
            return self.catch_all;
        };
        let sni = sni.to_ascii_lowercase();
        if let Some(route) = self.exact.get(&sni) {
            return Some(*route);
        }
        self.wildcard
            .iter()
            .find(|(suffix, _)| sni.len() > suffix.len() && sni.ends_with(suffix.as_str()))
            .map(|(_, route)| *route)
            .or(self.catch_all)
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty() && self.catch_all.is_none()
    }
}

/// Where a connection goes: one cluster, or a weighted choice between several.
#[derive(Debug, Clone, Serialize)]
pub struct Route {
    /// `namespace/virtual-service tcp[0]`.
    pub name: String,
    /// Clusters with a weight above zero, in the order written.
    pub clusters: Vec<WeightedCluster>,
    /// No bytes either way for this long closes the connection; `None` = off.
    #[serde(serialize_with = "ser_opt_duration")]
    pub idle_timeout: Option<Duration>,
    /// The connection is closed this long after it was accepted; `None` = off.
    #[serde(serialize_with = "ser_opt_duration")]
    pub max_connection_duration: Option<Duration>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct WeightedCluster {
    pub cluster: ClusterId,
    pub weight: u32,
}

/// A service port (and subset): the set of endpoints a route sends to.
#[derive(Debug, Clone, Serialize)]
pub struct Cluster {
    /// `outbound|9000|v1|tcp-echo.default.svc.cluster.local`.
    pub name: String,
    pub service: Service,
    pub port: u16,
    pub subset: Option<String>,
    pub endpoints: Vec<Endpoint>,
    pub policy: ClusterPolicy,
}

/// The service a cluster belongs to, for metrics labels and logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Service {
    /// Fully qualified host: `tcp-echo.default.svc.cluster.local`.
    pub host: String,
    /// Short name: the host's first label.
    pub name: String,
    pub namespace: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    pub address: EndpointAddress,
    pub port: u16,
    /// Load-balancing weight inside the cluster (1 when unset).
    pub weight: u32,
    pub labels: BTreeMap<String, String>,
    /// Its workload in Istio's metrics (`destination_workload`): the
    /// WorkloadEntry's `service.istio.io/workload-name` label or name, or
    /// `<ServiceEntry>-<index>` for an inline endpoint, as istiod names
    /// them; `None` for a host resolved by DNS.
    pub workload: Option<String>,
    /// The namespace of that WorkloadEntry, or of the ServiceEntry
    /// (Istio's `destination_workload_namespace`).
    pub namespace: String,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.address {
            EndpointAddress::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            EndpointAddress::Ip(ip) => write!(f, "{ip}:{}", self.port),
            EndpointAddress::Hostname(host) | EndpointAddress::LogicalDns(host) => {
                write!(f, "{host}:{}", self.port)
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointAddress {
    Ip(IpAddr),
    /// Resolved off the data path (resolution DNS); every address it
    /// resolves to becomes an endpoint.
    Hostname(String),
    /// Resolved off the data path (resolution DNS_ROUND_ROBIN, Envoy's
    /// LOGICAL_DNS): only the first address a lookup returns is used.
    LogicalDns(String),
}

impl EndpointAddress {
    /// The host name to resolve, for the two DNS kinds.
    pub fn hostname(&self) -> Option<&str> {
        match self {
            EndpointAddress::Ip(_) => None,
            EndpointAddress::Hostname(host) | EndpointAddress::LogicalDns(host) => Some(host),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterPolicy {
    pub load_balancer: LoadBalancer,
    #[serde(serialize_with = "ser_duration")]
    pub connect_timeout: Duration,
    /// Open connections allowed to the whole cluster; more fail fast (`UO`).
    pub max_connections: u32,
    pub tcp_keepalive: Option<Keepalive>,
    pub outlier_detection: Option<OutlierDetection>,
    pub proxy_protocol: Option<ProxyProtocol>,
    /// `connectionPool.http`: the upstream keep-alive pool and request caps.
    pub http: HttpPoolPolicy,
    /// The request property hashed when `load_balancer` is
    /// [`LoadBalancer::RequestHash`].
    pub request_hash: Option<RequestHashKey>,
}

/// `connectionPool.http`, as HTTP routes apply it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HttpPoolPolicy {
    /// An upstream connection idle this long in the pool is closed
    /// (`idleTimeout`, Istio's default 1h); zero: never.
    #[serde(serialize_with = "ser_duration")]
    pub idle_timeout: Duration,
    /// Requests per upstream connection (`maxRequestsPerConnection`; 1 = no
    /// keep-alive); `None`: unlimited.
    pub max_requests_per_connection: Option<u32>,
    /// Requests waiting for an upstream connection (`http1MaxPendingRequests`).
    pub max_pending_requests: Option<u32>,
    /// Active requests to the cluster (`http2MaxRequests`); more fail fast (`UO`).
    pub max_requests: Option<u32>,
    /// Retries in flight to the cluster at once (`maxRetries`).
    pub max_retries: Option<u32>,
}

impl Default for HttpPoolPolicy {
    fn default() -> Self {
        HttpPoolPolicy {
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_requests_per_connection: None,
            max_pending_requests: None,
            max_requests: None,
            max_retries: None,
        }
    }
}

/// What a request is hashed by (`consistentHash.httpHeaderName`,
/// `httpCookie.name`, `httpQueryParameterName`). A request without it, and
/// every TCP connection, picks at random, as Envoy does when a hash policy
/// yields no hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestHashKey {
    /// Lowercase header name.
    Header(String),
    /// An existing cookie (ringway never sets one).
    Cookie(String),
    Query(String),
}

pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
pub const UNLIMITED_CONNECTIONS: u32 = u32::MAX;

impl Default for ClusterPolicy {
    fn default() -> Self {
        ClusterPolicy {
            load_balancer: LoadBalancer::LeastRequest,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_connections: UNLIMITED_CONNECTIONS,
            tcp_keepalive: None,
            outlier_detection: None,
            proxy_protocol: None,
            http: HttpPoolPolicy::default(),
            request_hash: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LoadBalancer {
    /// Fewest active connections (Istio's default, `LEAST_REQUEST`).
    LeastRequest,
    RoundRobin,
    Random,
    /// Consistent hash of the client's address (`consistentHash.useSourceIp`).
    SourceIpHash,
    /// Consistent hash of a request property ([`ClusterPolicy::request_hash`]);
    /// random where there is none (TCP connections).
    RequestHash,
}

/// SO_KEEPALIVE on the upstream socket; `None` fields keep the OS values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Keepalive {
    pub probes: Option<u32>,
    /// Whole seconds, as Istio truncates them.
    pub time_secs: Option<u32>,
    pub interval_secs: Option<u32>,
}

/// Passive health: connect failures and timeouts eject an endpoint; on
/// HTTP routes, 5xx responses (`consecutive_5xx`) and 502/503/504
/// (`consecutive_gateway_errors`) count too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OutlierDetection {
    /// For TCP: connect failures and timeouts in a row that eject, the
    /// lower of the two enabled thresholds below (both see the same events).
    pub consecutive_errors: u32,
    /// `consecutive5xxErrors` (Istio's default 5); `None`: 0, disabled.
    pub consecutive_5xx: Option<u32>,
    /// `consecutiveGatewayErrors`; `None`: unset or 0, disabled.
    pub consecutive_gateway_errors: Option<u32>,
    #[serde(serialize_with = "ser_duration")]
    pub interval: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub base_ejection_time: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub max_ejection_time: Duration,
    pub max_ejection_percent: u32,
    pub min_health_percent: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ProxyProtocol {
    V1,
    V2,
}

/// `1h`, `10s`, `250ms`: the way Istio users write durations.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    if ms % 1000 != 0 {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    if s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else if s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

fn ser_opt_duration<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => ser_duration(d, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sni_lookup_prefers_the_most_specific_name() {
        let mut table = SniTable::default();
        table.exact.insert("db.example.com".into(), RouteId(0));
        table.wildcard = vec![
            (".eu.example.com".into(), RouteId(1)),
            (".example.com".into(), RouteId(2)),
        ];
        struct Case {
            sni: Option<&'static str>,
            want: Option<RouteId>,
        }
        let cases = [
            Case {
                sni: Some("db.example.com"),
                want: Some(RouteId(0)),
            },
            Case {
                sni: Some("DB.Example.com"),
                want: Some(RouteId(0)),
            },
            Case {
                sni: Some("x.eu.example.com"),
                want: Some(RouteId(1)),
            },
            Case {
                sni: Some("x.example.com"),
                want: Some(RouteId(2)),
            },
            Case {
                sni: Some("example.com"),
                want: None,
            },
            Case {
                sni: Some("other.org"),
                want: None,
            },
            Case {
                sni: None,
                want: None,
            },
        ];
        for case in &cases {
            assert_eq!(table.lookup(case.sni), case.want, "sni {:?}", case.sni);
        }
        table.catch_all = Some(RouteId(3));
        assert_eq!(table.lookup(None), Some(RouteId(3)));
        assert_eq!(table.lookup(Some("other.org")), Some(RouteId(3)));
    }

    #[test]
    fn durations_format_as_istio_writes_them() {
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }
}
