//! The Istio networking model, field for field as the operator wrote it.
//!
//! Every struct denies unknown fields. Fields ringway accepts but does not act
//! on are typed [`Ignored`] (present or not); the compiler warns about them.
//! Istio's YAML names stay in this module: `routing/` speaks ringway words.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::de::{self, IgnoredAny};
use serde::{Deserialize, Deserializer};

/// A field ringway accepts without acting on it; `Some` when it was written.
pub type Ignored = Option<IgnoredAny>;

pub type Labels = BTreeMap<String, String>;

pub use super::http::{
    Delegate, HttpCookie, HttpMatch, HttpRoute, HttpRouteDestination, HttpSettings,
};

// ---------------------------------------------------------------- Gateway

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GatewaySpec {
    /// `None` (absent) selects every gateway instance.
    pub selector: Option<Labels>,
    #[serde(default)]
    pub servers: Vec<Server>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Server {
    pub port: ServerPort,
    pub bind: Option<String>,
    #[serde(default)]
    pub hosts: Vec<String>,
    pub tls: Option<ServerTls>,
    pub name: Option<String>,
    pub default_endpoint: Ignored,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServerPort {
    pub number: u32,
    pub protocol: String,
    pub name: Option<String>,
    pub target_port: Ignored,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServerTls {
    pub mode: Option<TlsMode>,
    pub https_redirect: Ignored,
    pub server_certificate: Ignored,
    pub private_key: Ignored,
    pub ca_certificates: Ignored,
    pub ca_crl: Ignored,
    pub credential_name: Ignored,
    pub credential_names: Ignored,
    pub tls_certificates: Ignored,
    pub subject_alt_names: Ignored,
    pub verify_certificate_spki: Ignored,
    pub verify_certificate_hash: Ignored,
    pub min_protocol_version: Ignored,
    pub max_protocol_version: Ignored,
    pub cipher_suites: Ignored,
    pub ca_cert_credential_name: Ignored,
    pub insecure_skip_verify: Ignored,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TlsMode {
    Passthrough,
    Simple,
    Mutual,
    AutoPassthrough,
    IstioMutual,
    OptionalMutual,
}

// ---------------------------------------------------------------- VirtualService

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VirtualServiceSpec {
    #[serde(default)]
    pub hosts: Vec<String>,
    /// `None` (absent) means `["mesh"]`: sidecars only, never a gateway.
    pub gateways: Option<Vec<String>>,
    pub http: Option<Vec<HttpRoute>>,
    #[serde(default)]
    pub tcp: Vec<TcpRoute>,
    #[serde(default)]
    pub tls: Vec<TlsRoute>,
    pub export_to: Ignored,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TcpRoute {
    #[serde(default, rename = "match")]
    pub matches: Vec<L4Match>,
    #[serde(default)]
    pub route: Vec<RouteDestination>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct L4Match {
    pub port: Option<u32>,
    #[serde(default)]
    pub gateways: Vec<String>,
    pub destination_subnets: Ignored,
    pub source_labels: Ignored,
    pub source_namespace: Ignored,
    pub source_subnet: Ignored,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsRoute {
    #[serde(default, rename = "match")]
    pub matches: Vec<TlsMatch>,
    #[serde(default)]
    pub route: Vec<RouteDestination>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsMatch {
    #[serde(default)]
    pub sni_hosts: Vec<String>,
    pub port: Option<u32>,
    #[serde(default)]
    pub gateways: Vec<String>,
    pub destination_subnets: Ignored,
    pub source_labels: Ignored,
    pub source_namespace: Ignored,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteDestination {
    pub destination: Destination,
    /// Signed so that a negative weight gets its own message.
    pub weight: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Destination {
    pub host: String,
    pub subset: Option<String>,
    pub port: Option<PortSelector>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PortSelector {
    pub number: Option<u32>,
}

// ---------------------------------------------------------------- DestinationRule

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DestinationRuleSpec {
    pub host: String,
    pub traffic_policy: Option<TrafficPolicy>,
    #[serde(default)]
    pub subsets: Vec<Subset>,
    pub export_to: Ignored,
    pub workload_selector: Ignored,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Subset {
    pub name: String,
    #[serde(default)]
    pub labels: Labels,
    pub traffic_policy: Option<TrafficPolicy>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TrafficPolicy {
    pub load_balancer: Option<LoadBalancer>,
    pub connection_pool: Option<ConnectionPool>,
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default)]
    pub port_level_settings: Vec<PortTrafficPolicy>,
    pub proxy_protocol: Option<ProxyProtocol>,
    pub tls: Option<ClientTls>,
    pub tunnel: Ignored,
    pub retry_budget: Ignored,
}

/// `trafficPolicy.tls`: how the gateway talks to the upstream (Istio's
/// ClientTLSSettings). ringway reads the mode: anything but DISABLE asks
/// for TLS origination, which it does not do yet.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClientTls {
    pub mode: Option<ClientTlsMode>,
    pub client_certificate: Ignored,
    pub private_key: Ignored,
    pub ca_certificates: Ignored,
    pub credential_name: Ignored,
    pub subject_alt_names: Ignored,
    pub sni: Ignored,
    pub insecure_skip_verify: Ignored,
    pub ca_crl: Ignored,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClientTlsMode {
    Disable,
    Simple,
    Mutual,
    IstioMutual,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PortTrafficPolicy {
    pub port: Option<PortSelector>,
    pub load_balancer: Option<LoadBalancer>,
    pub connection_pool: Option<ConnectionPool>,
    pub outlier_detection: Option<OutlierDetection>,
    pub tls: Option<ClientTls>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LoadBalancer {
    pub simple: Option<SimpleLb>,
    pub consistent_hash: Option<ConsistentHash>,
    pub locality_lb_setting: Ignored,
    pub zone_aware_lb_setting: Ignored,
    pub warmup: Ignored,
    pub warmup_duration_secs: Ignored,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SimpleLb {
    Unspecified,
    LeastConn,
    Random,
    Passthrough,
    RoundRobin,
    LeastRequest,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConsistentHash {
    pub use_source_ip: Option<bool>,
    pub http_header_name: Option<String>,
    pub http_cookie: Option<HttpCookie>,
    pub http_query_parameter_name: Option<String>,
    pub ring_hash: Ignored,
    pub maglev: Ignored,
    pub minimum_ring_size: Ignored,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConnectionPool {
    pub tcp: Option<TcpSettings>,
    pub http: Option<HttpSettings>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TcpSettings {
    /// Signed so that a negative value gets its own message.
    pub max_connections: Option<i64>,
    pub connect_timeout: Option<GoDuration>,
    pub tcp_keepalive: Option<TcpKeepalive>,
    pub max_connection_duration: Option<GoDuration>,
    pub idle_timeout: Option<GoDuration>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TcpKeepalive {
    pub probes: Option<u32>,
    pub time: Option<GoDuration>,
    pub interval: Option<GoDuration>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OutlierDetection {
    #[serde(rename = "consecutive5xxErrors")]
    pub consecutive_5xx_errors: Option<u32>,
    pub consecutive_gateway_errors: Option<u32>,
    pub interval: Option<GoDuration>,
    pub base_ejection_time: Option<GoDuration>,
    pub max_ejection_percent: Option<i64>,
    pub min_health_percent: Option<i64>,
    pub consecutive_errors: Ignored,
    pub split_external_local_origin_errors: Ignored,
    pub consecutive_local_origin_failures: Ignored,
    pub outlier_detection_http_error_codes: Ignored,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProxyProtocol {
    pub version: Option<ProxyVersion>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ProxyVersion {
    V1,
    V2,
}

// ---------------------------------------------------------------- ServiceEntry, WorkloadEntry

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceEntrySpec {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    /// Istio's default when absent is NONE.
    pub resolution: Option<Resolution>,
    #[serde(default)]
    pub endpoints: Vec<WorkloadEntrySpec>,
    pub workload_selector: Option<WorkloadSelector>,
    pub addresses: Ignored,
    pub location: Ignored,
    pub export_to: Ignored,
    pub subject_alt_names: Ignored,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServicePort {
    pub number: u32,
    pub name: String,
    pub protocol: Option<String>,
    pub target_port: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    None,
    Static,
    Dns,
    DnsRoundRobin,
    DynamicDns,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadEntrySpec {
    pub address: Option<String>,
    #[serde(default)]
    pub ports: BTreeMap<String, u32>,
    #[serde(default)]
    pub labels: Labels,
    pub weight: Option<u32>,
    pub network: Option<String>,
    pub locality: Ignored,
    pub service_account: Ignored,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadSelector {
    #[serde(default)]
    pub labels: Labels,
}

// ---------------------------------------------------------------- metadata

/// Kubernetes object metadata. Fields a `kubectl get -o yaml` dump carries
/// are accepted and ignored, so such dumps load as they are.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    pub name: Option<String>,
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: Labels,
    pub annotations: Ignored,
    pub creation_timestamp: Ignored,
    pub deletion_timestamp: Ignored,
    pub deletion_grace_period_seconds: Ignored,
    pub finalizers: Ignored,
    pub generate_name: Ignored,
    pub generation: Ignored,
    pub managed_fields: Ignored,
    pub owner_references: Ignored,
    pub resource_version: Ignored,
    pub self_link: Ignored,
    pub uid: Ignored,
}

// ---------------------------------------------------------------- durations

/// A duration as Istio writes it: Go syntax (`10s`, `1h30m`, `500ms`, `1.5s`),
/// or a bare number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoDuration(pub Duration);

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = GoDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 10s, 500ms or 1h30m")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<GoDuration, E> {
                parse_duration(s).map(GoDuration).map_err(E::custom)
            }
            /// Only `0` may be written without a unit, as in Go.
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<GoDuration, E> {
                if v == 0 {
                    return Ok(GoDuration(Duration::ZERO));
                }
                Err(E::custom(format!(
                    "bad duration {v}: missing unit (valid: {v}s, {v}ms, {v}m)"
                )))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<GoDuration, E> {
                Err(E::custom(format!(
                    "bad duration {v}: missing unit (valid: {v}s, {v}ms)"
                )))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Parses Go's `time.ParseDuration` syntax, without negative values.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = |why: &str| format!("bad duration {s:?}: {why} (valid: 10s, 500ms, 1m30s, 1h)");
    if s.starts_with('-') {
        return Err(bad("durations cannot be negative"));
    }
    let body = s.strip_prefix('+').unwrap_or(s);
    if body == "0" {
        return Ok(Duration::ZERO);
    }
    if body.is_empty() {
        return Err(bad("empty"));
    }
    let mut total = 0f64;
    let mut rest = body;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(bad("expected a number"));
        }
        let value: f64 = rest[..num_len]
            .parse()
            .map_err(|_| bad("malformed number"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(bad("missing unit")),
            other => return Err(bad(&format!("unknown unit {other:?}"))),
        };
        rest = &rest[unit_len..];
        total += value * scale;
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad("out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        struct Case {
            input: &'static str,
            want: Result<Duration, ()>,
        }
        let cases = [
            Case {
                input: "10s",
                want: Ok(Duration::from_secs(10)),
            },
            Case {
                input: "0s",
                want: Ok(Duration::ZERO),
            },
            Case {
                input: "0",
                want: Ok(Duration::ZERO),
            },
            Case {
                input: "1h30m",
                want: Ok(Duration::from_secs(5400)),
            },
            Case {
                input: "500ms",
                want: Ok(Duration::from_millis(500)),
            },
            Case {
                input: "1.5s",
                want: Ok(Duration::from_millis(1500)),
            },
            Case {
                input: "-1s",
                want: Err(()),
            },
            Case {
                input: "10",
                want: Err(()),
            },
            Case {
                input: "10 s",
                want: Err(()),
            },
            Case {
                input: "10d",
                want: Err(()),
            },
            Case {
                input: "s",
                want: Err(()),
            },
        ];
        for case in cases {
            assert_eq!(
                parse_duration(case.input).map_err(|_| ()),
                case.want,
                "input {:?}",
                case.input
            );
        }
    }
}
