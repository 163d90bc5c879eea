//! The compiled HTTP routing of one listener: Istio's route configuration
//! `http.<port>` as istiod builds it for a gateway. Virtual hosts chosen by
//! the request's authority, routes chosen by their match, and what a route
//! does (forward to weighted clusters, redirect, answer directly). Pure: no
//! I/O, no clock; regexes are compiled once, with the table.
//!
//! The data plane reads a request through [`RequestView`] (implemented by
//! the HTTP/1.1 codec's request head), so this module knows nothing of
//! wire formats.
#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::table::RouteId;

/// What routing needs to know of a request. Names are lowercase; values are
/// as received.
pub trait RequestView {
    /// `GET`, as received (methods are case-sensitive).
    fn method(&self) -> &str;
    /// The path without its query string (`/a/b`), as forwarded before any
    /// rewrite.
    fn path(&self) -> &str;
    /// The query string without its `?`, if the target had one.
    fn query(&self) -> Option<&str>;
    /// The authority: the Host header (or the absolute-form target's
    /// authority), port included as received; `None` when absent (HTTP/1.0).
    fn authority(&self) -> Option<&str>;
    /// The value of header `name` (lowercase); several fields of that name
    /// are joined with `,` (the only case that allocates).
    fn header(&self, name: &str) -> Option<Cow<'_, [u8]>>;
}

/// One listener's virtual hosts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HttpRouting {
    /// Istio's route configuration name: `http.80` (`http.80.<bind>`).
    pub name: String,
    pub vhosts: Vec<VirtualHost>,
    /// Lowercase exact domain → index in `vhosts`.
    pub exact: BTreeMap<String, usize>,
    /// (`.istio.com` for `*.istio.com`, index), longest suffix first.
    pub wildcard: Vec<(String, usize)>,
    /// The `*` vhost.
    pub catch_all: Option<usize>,
}

impl HttpRouting {
    /// The virtual host for a request's authority: port ignored, case
    /// insensitive; exact, then the longest wildcard suffix, then `*`.
    /// `None`: 404 `NR`.
    pub fn vhost(&self, authority: Option<&str>) -> Option<&VirtualHost> {
        let host = authority.map(strip_port).map(str::to_ascii_lowercase);
        let index = match host {
            Some(host) => self.exact.get(&host).copied().or_else(|| {
                self.wildcard
                    .iter()
                    .find(|(suffix, _)| host.len() > suffix.len() && host.ends_with(suffix.as_str()))
                    .map(|(_, i)| *i)
            }),
            None => None,
        }
        .or(self.catch_all)?;
        self.vhosts.get(index)
    }
}

/// `host:port` → `host` (`[v6]:port` → `[v6]`).
fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .find(']')
            .map_or(authority, |end| &authority[..=end]);
    }
    match authority.rfind(':') {
        Some(colon) if authority[colon + 1..].bytes().all(|b| b.is_ascii_digit()) => {
            &authority[..colon]
        }
        _ => authority,
    }
}

/// One virtual host (`tomcat.istio.com:80`).
#[derive(Debug, Clone, Serialize)]
pub struct VirtualHost {
    /// `host:port`, as Envoy names it.
    pub name: String,
    /// The lowercase domains it answers.
    pub domains: Vec<String>,
    /// In the order they are tried; the first whose match passes wins.
    pub routes: Vec<HttpRoute>,
}

impl VirtualHost {
    /// The first route whose match passes, or `None` (404 `NR`).
    pub fn route(&self, req: &impl RequestView) -> Option<&HttpRoute> {
        self.routes.iter().find(|r| r.matcher.matches(req))
    }
}

/// One route: a match and what to do.
#[derive(Debug, Clone, Serialize)]
pub struct HttpRoute {
    /// Istio's route name (`http[].name`, with `.<match name>` when the
    /// match block has one); the access log's `%ROUTE_NAME%`. Empty when
    /// the rule has no name.
    pub name: String,
    /// Where it was written: `namespace/virtual-service http[0].match[1]`.
    pub source: String,
    pub matcher: RouteMatch,
    pub action: RouteAction,
    /// Header operations of the rule (`http[].headers`).
    pub headers: Headers,
}

/// The conditions of one match block (all must pass). An empty one
/// matches every request.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RouteMatch {
    pub uri: Option<StringMatch>,
    /// `ignoreUriCase` (exact and prefix only).
    pub ignore_uri_case: bool,
    pub method: Option<StringMatch>,
    pub authority: Option<StringMatch>,
    pub scheme: Option<StringMatch>,
    pub headers: Vec<HeaderMatch>,
    pub query_params: Vec<QueryMatch>,
}

impl RouteMatch {
    pub fn matches(&self, req: &impl RequestView) -> bool {
        if let Some(uri) = &self.uri {
            let hit = if self.ignore_uri_case {
                uri.matches_ignore_case(req.path())
            } else {
                uri.matches(req.path())
            };
            if !hit {
                return false;
            }
        }
        let fields = [
            (&self.method, Some(req.method())),
            (&self.authority, req.authority()),
            (&self.scheme, Some("http")),
        ];
        for (condition, value) in fields {
            if let Some(m) = condition {
                if !value.is_some_and(|v| m.matches(v)) {
                    return false;
                }
            }
        }
        self.headers.iter().all(|h| h.matches(req))
            && self.query_params.iter().all(|q| q.matches(req.query()))
    }
}

/// Istio's StringMatch. A regex matches the whole value (Envoy's
/// `safe_regex`), compiled anchored.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Regex(#[serde(serialize_with = "ser_regex")] Arc<regex::Regex>),
}

impl StringMatch {
    pub fn matches(&self, value: &str) -> bool {
        match self {
            StringMatch::Exact(s) => value == s,
            StringMatch::Prefix(s) => value.starts_with(s.as_str()),
            StringMatch::Regex(r) => r.is_match(value),
        }
    }

    /// `ignoreUriCase`: exact and prefix compared case-insensitively.
    pub fn matches_ignore_case(&self, value: &str) -> bool {
        match self {
            StringMatch::Exact(s) => value.eq_ignore_ascii_case(s),
            StringMatch::Prefix(s) => value
                .get(..s.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(s)),
            StringMatch::Regex(r) => r.is_match(value),
        }
    }
}

fn ser_regex<S: serde::Serializer>(r: &Arc<regex::Regex>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(r.as_str())
}

/// A header condition: `Some(match)` on its value, presence (`{}`), or
/// absence (`withoutHeaders`, a missing header counting as empty).
#[derive(Debug, Clone, Serialize)]
pub struct HeaderMatch {
    /// Lowercase.
    pub name: String,
    /// `None`: the header must be present (any value).
    pub value: Option<StringMatch>,
    /// `withoutHeaders`: the condition is negated.
    pub invert: bool,
}

impl HeaderMatch {
    fn matches(&self, req: &impl RequestView) -> bool {
        let value = req.header(&self.name);
        let hit = match (&self.value, value) {
            (None, value) => value.is_some(),
            // withoutHeaders: a missing header counts as empty (Envoy's
            // `treat_missing_header_as_empty`, as istiod sets it).
            (Some(m), None) => self.invert && m.matches(""),
            (Some(m), Some(v)) => std::str::from_utf8(&v).is_ok_and(|v| m.matches(v)),
        };
        hit != self.invert
    }
}

/// A query parameter condition (`exact: ""` matches `?key`).
#[derive(Debug, Clone, Serialize)]
pub struct QueryMatch {
    pub name: String,
    pub value: Option<StringMatch>,
}

impl QueryMatch {
    fn matches(&self, query: Option<&str>) -> bool {
        let Some(query) = query else {
            return false;
        };
        query.split('&').any(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            name == self.name && self.value.as_ref().is_none_or(|m| m.matches(value))
        })
    }
}

/// What a route does.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum RouteAction {
    Forward(Forward),
    Redirect(Redirect),
    Direct(DirectResponse),
}

/// Forward to one of weighted clusters.
#[derive(Debug, Clone, Serialize)]
pub struct Forward {
    /// The weighted clusters, as a [`super::table::Route`] of the table:
    /// the worker's smooth weighted round robin picks one per request, as
    /// for TCP connections.
    pub route: RouteId,
    /// Header operations of each destination, in the order of
    /// `table.route(route).clusters`.
    pub destinations: Vec<Headers>,
    pub rewrite: Option<Rewrite>,
    /// The route's `timeout`: request start to the end of the response
    /// head; `None` = off (Istio's default).
    pub timeout: Option<Duration>,
    pub retries: RetryPolicy,
}

/// `rewrite`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Rewrite {
    pub uri: Option<UriRewrite>,
    /// Replaces the Host header.
    pub authority: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UriRewrite {
    /// `rewrite.uri`: replaces the prefix the route matched (the whole
    /// path when it matched by exact or regex).
    Prefix(String),
    /// `uriRegexRewrite`: every match of the pattern in the path replaced.
    Regex {
        #[serde(serialize_with = "ser_regex")]
        pattern: Arc<regex::Regex>,
        substitution: String,
    },
}

/// `retries`, with Istio's default (2 attempts on connect failure) when
/// unset.
#[derive(Debug, Clone, Serialize)]
pub struct RetryPolicy {
    /// Retries after the first try; 0 = none.
    pub attempts: u32,
    pub per_try_timeout: Option<Duration>,
    pub on: RetryOn,
}

/// `retryOn`, as ringway applies it to HTTP/1.1.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RetryOn {
    pub connect_failure: bool,
    /// The upstream reset or closed before a complete response head.
    pub reset: bool,
    /// Any 5xx response (and a reset or timeout).
    pub server_error: bool,
    /// 502, 503, 504.
    pub gateway_error: bool,
    /// `retriable-status-codes` with numeric tokens.
    pub status_codes: Vec<u16>,
}

/// `redirect`.
#[derive(Debug, Clone, Serialize)]
pub struct Redirect {
    /// 301 (default), 302, 303, 307, 308.
    pub code: u16,
    pub scheme: Option<String>,
    pub authority: Option<String>,
    pub port: Option<RedirectPort>,
    pub path: Option<PathRedirect>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RedirectPort {
    Number(u16),
    /// `derivePort: FROM_PROTOCOL_DEFAULT`: 80 for http, 443 for https
    /// (omitted from the Location).
    FromProtocolDefault,
    /// `derivePort: FROM_REQUEST_PORT`.
    FromRequestPort,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathRedirect {
    /// `redirect.uri`: the whole path.
    Full(String),
    /// `redirect.prefixRewrite`... Istio has no such field; `uri` on a
    /// prefix match replaces only the matched prefix (Envoy
    /// `prefix_rewrite`).
    Prefix(String),
}

/// `directResponse`.
#[derive(Debug, Clone, Serialize)]
pub struct DirectResponse {
    pub status: u16,
    #[serde(skip)]
    pub body: Option<Arc<[u8]>>,
}

/// Header operations on requests and responses.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Headers {
    pub request: HeaderOps,
    pub response: HeaderOps,
}

/// `set` overwrites, `add` appends a field, `remove` drops every field of
/// the name. Names are lowercase.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HeaderOps {
    pub set: Vec<(String, String)>,
    pub add: Vec<(String, String)>,
    pub remove: Vec<String>,
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_ignored_in_host_matching() {
        assert_eq!(strip_port("tomcat.istio.com:18080"), "tomcat.istio.com");
        assert_eq!(strip_port("tomcat.istio.com"), "tomcat.istio.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
    }

    #[test]
    fn vhosts_are_chosen_exact_then_longest_suffix_then_catch_all() {
        let vhost = |name: &str| VirtualHost {
            name: name.to_owned(),
            domains: vec![name.to_owned()],
            routes: Vec::new(),
        };
        let routing = HttpRouting {
            name: "http.80".into(),
            vhosts: vec![
                vhost("tomcat.istio.com"),
                vhost("*.istio.com"),
                vhost("*.eu.istio.com"),
                vhost("*"),
            ],
            exact: BTreeMap::from([("tomcat.istio.com".to_owned(), 0)]),
            wildcard: vec![(".eu.istio.com".into(), 2), (".istio.com".into(), 1)],
            catch_all: Some(3),
        };
        let pick = |a: Option<&str>| routing.vhost(a).map(|v| v.name.as_str());
        assert_eq!(pick(Some("TOMCAT.istio.com:18080")), Some("tomcat.istio.com"));
        assert_eq!(pick(Some("a.eu.istio.com")), Some("*.eu.istio.com"));
        assert_eq!(pick(Some("a.istio.com")), Some("*.istio.com"));
        assert_eq!(pick(Some("istio.com")), Some("*"));
        assert_eq!(pick(None), Some("*"));
    }
}
