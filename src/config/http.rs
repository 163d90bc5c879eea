//! The VirtualService `http:` model (Istio's HTTPRoute and what it holds),
//! field for field as the operator wrote it. Fields ringway accepts without
//! applying them are [`Ignored`]; the compiler warns about them.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::manifest::{Destination, GoDuration, Ignored, Labels, PortSelector};

/// One `http[]` rule.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRoute {
    pub name: Option<String>,
    #[serde(default, rename = "match")]
    pub matches: Vec<HttpMatch>,
    #[serde(default)]
    pub route: Vec<HttpRouteDestination>,
    pub redirect: Option<HttpRedirect>,
    pub direct_response: Option<HttpDirectResponse>,
    pub delegate: Option<Delegate>,
    pub rewrite: Option<HttpRewrite>,
    pub timeout: Option<GoDuration>,
    pub retries: Option<HttpRetry>,
    pub headers: Option<HeadersSpec>,
    pub fault: Ignored,
    pub mirror: Ignored,
    pub mirrors: Ignored,
    pub mirror_percent: Ignored,
    pub mirror_percentage: Ignored,
    pub cors_policy: Ignored,
}

impl HttpRoute {
    /// The fields accepted and not applied, with their Istio names.
    pub fn ignored_fields(&self) -> [(&'static str, bool); 6] {
        [
            ("fault", self.fault.is_some()),
            ("mirror", self.mirror.is_some()),
            ("mirrors", self.mirrors.is_some()),
            ("mirrorPercent", self.mirror_percent.is_some()),
            ("mirrorPercentage", self.mirror_percentage.is_some()),
            ("corsPolicy", self.cors_policy.is_some()),
        ]
    }
}

/// `http[].delegate`: the VirtualService that holds this route's rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Delegate {
    pub name: String,
    pub namespace: Option<String>,
}

/// Istio's HTTPMatchRequest: AND inside a block.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpMatch {
    pub name: Option<String>,
    pub uri: Option<StringMatchSpec>,
    pub scheme: Option<StringMatchSpec>,
    pub method: Option<StringMatchSpec>,
    pub authority: Option<StringMatchSpec>,
    #[serde(default)]
    pub headers: BTreeMap<String, StringMatchSpec>,
    #[serde(default)]
    pub without_headers: BTreeMap<String, StringMatchSpec>,
    #[serde(default)]
    pub query_params: BTreeMap<String, StringMatchSpec>,
    pub port: Option<u32>,
    #[serde(default)]
    pub source_labels: Labels,
    #[serde(default)]
    pub gateways: Vec<String>,
    pub ignore_uri_case: Option<bool>,
    pub source_namespace: Option<String>,
    pub stat_prefix: Option<String>,
}

/// Istio's StringMatch: one of exact, prefix, regex; none of them is a
/// presence check (headers and query parameters only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StringMatchSpec {
    pub exact: Option<String>,
    pub prefix: Option<String>,
    pub regex: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRouteDestination {
    pub destination: HttpDestination,
    /// Signed so that a negative weight gets its own message.
    pub weight: Option<i64>,
    pub headers: Option<HeadersSpec>,
}

/// An http route's destination. Istio's Gateway API translation writes
/// `destination: {}` for a backend it cannot resolve (Istio then answers
/// 500), so `host` may be absent here; the compiler says what is wrong
/// when such a route is used.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpDestination {
    #[serde(default)]
    pub host: String,
    pub subset: Option<String>,
    pub port: Option<PortSelector>,
}

impl HttpDestination {
    /// The same destination as tcp and tls routes write it.
    pub fn to_destination(&self) -> Destination {
        Destination {
            host: self.host.clone(),
            subset: self.subset.clone(),
            port: self.port,
        }
    }
}

/// `headers`: operations on the request and on the response.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HeadersSpec {
    pub request: Option<HeaderOperations>,
    pub response: Option<HeaderOperations>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HeaderOperations {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRedirect {
    pub uri: Option<String>,
    pub authority: Option<String>,
    pub port: Option<u32>,
    pub derive_port: Option<DerivePort>,
    pub scheme: Option<String>,
    pub redirect_code: Option<u32>,
    pub prefix_rewrite: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DerivePort {
    FromProtocolDefault,
    FromRequestPort,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpDirectResponse {
    pub status: u32,
    pub body: Option<HttpBody>,
}

/// `string`, or `bytes` (base64, as protobuf's JSON mapping writes them).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpBody {
    pub string: Option<String>,
    pub bytes: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRewrite {
    pub uri: Option<String>,
    pub authority: Option<String>,
    pub uri_regex_rewrite: Option<RegexRewrite>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegexRewrite {
    #[serde(rename = "match")]
    pub pattern: String,
    pub rewrite: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRetry {
    /// Signed so that a negative count gets its own message.
    pub attempts: Option<i64>,
    pub per_try_timeout: Option<GoDuration>,
    pub retry_on: Option<String>,
    pub retry_remote_localities: Ignored,
    pub retry_ignore_previous_hosts: Ignored,
    pub backoff: Ignored,
}

/// DestinationRule `connectionPool.http`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpSettings {
    /// Signed so that a negative value gets its own message.
    pub http1_max_pending_requests: Option<i64>,
    pub http2_max_requests: Option<i64>,
    pub max_requests_per_connection: Option<i64>,
    pub max_retries: Option<i64>,
    pub idle_timeout: Option<GoDuration>,
    pub h2_upgrade_policy: Ignored,
    pub use_client_protocol: Ignored,
    pub max_concurrent_streams: Ignored,
    pub http2_keep_alive: Ignored,
}

impl HttpSettings {
    /// The fields that only concern HTTP/2, with their Istio names.
    pub fn no_effect_fields(&self) -> [(&'static str, bool); 4] {
        [
            ("h2UpgradePolicy", self.h2_upgrade_policy.is_some()),
            ("useClientProtocol", self.use_client_protocol.is_some()),
            (
                "maxConcurrentStreams",
                self.max_concurrent_streams.is_some(),
            ),
            ("http2KeepAlive", self.http2_keep_alive.is_some()),
        ]
    }
}

/// `consistentHash.httpCookie`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpCookie {
    pub name: String,
    pub path: Ignored,
    pub ttl: Ignored,
    pub attributes: Ignored,
}
