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
                    .find(|(suffix, _)| {
                        host.len() > suffix.len() && host.ends_with(suffix.as_str())
                    })
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

impl HttpRoute {
    /// The request target to forward when the route rewrites the path:
    /// the new path, plus `?query` when the request had one. `None`: the
    /// path is forwarded unchanged.
    ///
    /// `rewrite.uri` replaces the prefix the route matched (Envoy's
    /// `prefix_rewrite`); a route matched by exact path or regex has the
    /// whole path replaced, and one with no uri condition matched the
    /// prefix `/`. `uriRegexRewrite` replaces every match of its pattern.
    pub fn rewritten_target(&self, req: &impl RequestView) -> Option<String> {
        let RouteAction::Forward(forward) = &self.action else {
            return None;
        };
        let path = req.path();
        let new_path = match forward.rewrite.as_ref()?.uri.as_ref()? {
            UriRewrite::Prefix(replacement) => {
                let rest = match &self.matcher.uri {
                    None => path.strip_prefix('/').unwrap_or(path),
                    Some(StringMatch::Prefix(prefix)) => path.get(prefix.len()..).unwrap_or(""),
                    Some(StringMatch::Exact(_) | StringMatch::Regex(_)) => "",
                };
                format!("{replacement}{rest}")
            }
            UriRewrite::Regex {
                pattern,
                substitution,
            } => pattern
                .replace_all(path, substitution.as_str())
                .into_owned(),
        };
        Some(match req.query() {
            Some(query) => format!("{new_path}?{query}"),
            None => new_path,
        })
    }
}

impl Redirect {
    /// The `Location` of the redirect, as Envoy builds it: scheme `http`
    /// unless set; the authority set, else the request's host (its port
    /// dropped when a port is set, or when the scheme changes and the port
    /// was 80); `:port` when one is set and it is not the scheme's default;
    /// the path replaced whole (`uri`) or by prefix (`prefixRewrite`, the
    /// whole path when the route did not match by prefix); the request's
    /// query kept unless the new path carries one.
    pub fn location(
        &self,
        matcher: &RouteMatch,
        req: &impl RequestView,
        listener_port: u16,
    ) -> String {
        let scheme = self.scheme.as_deref().unwrap_or("http");
        let port = match self.port {
            None | Some(RedirectPort::FromProtocolDefault) => None,
            Some(RedirectPort::Number(p)) => Some(p),
            Some(RedirectPort::FromRequestPort) => Some(listener_port),
        };
        let host = match &self.authority {
            Some(authority) => authority.as_str(),
            None => {
                let authority = req.authority().unwrap_or("");
                let host = strip_port(authority);
                let request_port = &authority[host.len()..];
                let drop_port = port.is_some() || (scheme != "http" && request_port == ":80");
                if drop_port { host } else { authority }
            }
        };
        let port = port
            .filter(|p| *p != default_port(scheme))
            .map_or_else(String::new, |p| format!(":{p}"));
        let (path, own_query) = match &self.path {
            None => (req.path().to_owned(), false),
            Some(PathRedirect::Full(uri)) => (uri.clone(), uri.contains('?')),
            Some(PathRedirect::Prefix(replacement)) => {
                let path = req.path();
                let rest = match &matcher.uri {
                    None => path.strip_prefix('/').unwrap_or(path),
                    Some(StringMatch::Prefix(prefix)) => path.get(prefix.len()..).unwrap_or(""),
                    Some(StringMatch::Exact(_) | StringMatch::Regex(_)) => "",
                };
                (format!("{replacement}{rest}"), false)
            }
        };
        let query = match req.query() {
            Some(q) if !own_query => format!("?{q}"),
            _ => String::new(),
        };
        format!("{scheme}://{host}{port}{path}{query}")
    }
}

/// 443 for https, 80 for anything else.
fn default_port(scheme: &str) -> u16 {
    if scheme.eq_ignore_ascii_case("https") {
        443
    } else {
        80
    }
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
        // Envoy tests the first value of the parameter only.
        let first = query.split('&').find_map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (name == self.name).then_some(value)
        });
        first.is_some_and(|value| self.value.as_ref().is_none_or(|m| m.matches(value)))
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
    /// `derivePort: FROM_PROTOCOL_DEFAULT`: no port of its own, Envoy's
    /// default (istiod sets none): the request's, unless the scheme changes
    /// from a request on port 80.
    FromProtocolDefault,
    /// `derivePort: FROM_REQUEST_PORT`.
    FromRequestPort,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathRedirect {
    /// `redirect.uri`: the whole path (and the query, if it has one).
    Full(String),
    /// `redirect.prefixRewrite`: replaces the prefix the route matched
    /// (Envoy `prefix_rewrite`).
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
        assert_eq!(
            pick(Some("TOMCAT.istio.com:18080")),
            Some("tomcat.istio.com")
        );
        assert_eq!(pick(Some("a.eu.istio.com")), Some("*.eu.istio.com"));
        assert_eq!(pick(Some("a.istio.com")), Some("*.istio.com"));
        assert_eq!(pick(Some("istio.com")), Some("*"));
        assert_eq!(pick(None), Some("*"));
    }

    /// A request as the codec would present it.
    struct Req {
        method: &'static str,
        path: &'static str,
        query: Option<&'static str>,
        authority: Option<&'static str>,
        headers: Vec<(&'static str, &'static str)>,
    }

    fn get(target: &'static str, authority: &'static str) -> Req {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        Req {
            method: "GET",
            path,
            query,
            authority: Some(authority),
            headers: Vec::new(),
        }
    }

    impl RequestView for Req {
        fn method(&self) -> &str {
            self.method
        }
        fn path(&self) -> &str {
            self.path
        }
        fn query(&self) -> Option<&str> {
            self.query
        }
        fn authority(&self) -> Option<&str> {
            self.authority
        }
        fn header(&self, name: &str) -> Option<Cow<'_, [u8]>> {
            let values: Vec<&str> = self
                .headers
                .iter()
                .filter(|(n, _)| *n == name)
                .map(|(_, v)| *v)
                .collect();
            match values.as_slice() {
                [] => None,
                [one] => Some(Cow::Borrowed(one.as_bytes())),
                many => Some(Cow::Owned(many.join(",").into_bytes())),
            }
        }
    }

    fn regex(re: &str) -> StringMatch {
        StringMatch::Regex(Arc::new(
            regex::Regex::new(&format!("^(?:{re})$")).expect("valid"),
        ))
    }

    fn forward_with(uri: Option<StringMatch>, rewrite: UriRewrite) -> HttpRoute {
        HttpRoute {
            name: String::new(),
            source: String::new(),
            matcher: RouteMatch {
                uri,
                ..RouteMatch::default()
            },
            action: RouteAction::Forward(Forward {
                route: RouteId(0),
                destinations: Vec::new(),
                rewrite: Some(Rewrite {
                    uri: Some(rewrite),
                    authority: None,
                }),
                timeout: None,
                retries: RetryPolicy {
                    attempts: 2,
                    per_try_timeout: None,
                    on: RetryOn::default(),
                },
            }),
            headers: Headers::default(),
        }
    }

    #[test]
    fn rewrites_replace_the_matched_prefix_or_the_whole_path() {
        struct Case {
            uri: Option<StringMatch>,
            rewrite: UriRewrite,
            target: &'static str,
            want: Option<&'static str>,
        }
        let prefix = |p: &str| UriRewrite::Prefix(p.to_owned());
        let cases = [
            Case {
                uri: Some(StringMatch::Prefix("/api/".into())),
                rewrite: prefix("/v2/"),
                target: "/api/users?id=1",
                want: Some("/v2/users?id=1"),
            },
            Case {
                uri: Some(StringMatch::Exact("/old".into())),
                rewrite: prefix("/new"),
                target: "/old",
                want: Some("/new"),
            },
            Case {
                uri: Some(regex("/r/.*")),
                rewrite: prefix("/x"),
                target: "/r/abc",
                want: Some("/x"),
            },
            Case {
                uri: None,
                rewrite: prefix("/base/"),
                target: "/a",
                want: Some("/base/a"),
            },
            Case {
                uri: Some(StringMatch::Prefix("/".into())),
                rewrite: UriRewrite::Regex {
                    pattern: Arc::new(regex::Regex::new("^/service/([^/]+)(/.*)$").expect("valid")),
                    substitution: "${2}/instance/${1}".into(),
                },
                target: "/service/foo/v1/api?q",
                want: Some("/v1/api/instance/foo?q"),
            },
        ];
        for case in cases {
            let route = forward_with(case.uri, case.rewrite);
            assert_eq!(
                route.rewritten_target(&get(case.target, "h")).as_deref(),
                case.want,
                "target {}",
                case.target
            );
        }
        let mut plain = forward_with(None, prefix("/x"));
        if let RouteAction::Forward(f) = &mut plain.action {
            f.rewrite = None;
        }
        assert_eq!(plain.rewritten_target(&get("/a", "h")), None);
    }

    #[test]
    fn redirect_locations_follow_envoy() {
        struct Case {
            redirect: Redirect,
            matcher: Option<StringMatch>,
            target: &'static str,
            authority: &'static str,
            want: &'static str,
        }
        let redirect = |scheme: Option<&str>, authority: Option<&str>, port, path| Redirect {
            code: 301,
            scheme: scheme.map(str::to_owned),
            authority: authority.map(str::to_owned),
            port,
            path,
        };
        let cases = [
            Case {
                redirect: redirect(None, None, None, Some(PathRedirect::Full("/new".into()))),
                matcher: None,
                target: "/old?a=1",
                authority: "tomcat.istio.com:8080",
                want: "http://tomcat.istio.com:8080/new?a=1",
            },
            Case {
                redirect: redirect(
                    None,
                    None,
                    None,
                    Some(PathRedirect::Full("/new?b=2".into())),
                ),
                matcher: None,
                target: "/old?a=1",
                authority: "h",
                want: "http://h/new?b=2",
            },
            Case {
                redirect: redirect(Some("https"), None, None, None),
                matcher: None,
                target: "/p",
                authority: "h:80",
                want: "https://h/p",
            },
            Case {
                redirect: redirect(Some("https"), None, None, None),
                matcher: None,
                target: "/p",
                authority: "h:8080",
                want: "https://h:8080/p",
            },
            Case {
                redirect: redirect(
                    None,
                    Some("other.com"),
                    Some(RedirectPort::Number(8443)),
                    None,
                ),
                matcher: None,
                target: "/p",
                authority: "h",
                want: "http://other.com:8443/p",
            },
            Case {
                redirect: redirect(None, None, Some(RedirectPort::FromRequestPort), None),
                matcher: None,
                target: "/p",
                authority: "h:9999",
                want: "http://h:18080/p",
            },
            Case {
                redirect: redirect(
                    Some("https"),
                    None,
                    Some(RedirectPort::FromProtocolDefault),
                    None,
                ),
                matcher: None,
                target: "/p",
                authority: "h:80",
                want: "https://h/p",
            },
            Case {
                redirect: redirect(None, None, Some(RedirectPort::FromProtocolDefault), None),
                matcher: None,
                target: "/p",
                authority: "h:18080",
                want: "http://h:18080/p",
            },
            Case {
                redirect: redirect(None, None, Some(RedirectPort::Number(80)), None),
                matcher: None,
                target: "/p",
                authority: "h:18080",
                want: "http://h/p",
            },
            Case {
                redirect: redirect(None, None, None, Some(PathRedirect::Prefix("/v2/".into()))),
                matcher: Some(StringMatch::Prefix("/v1/".into())),
                target: "/v1/items?x",
                authority: "h",
                want: "http://h/v2/items?x",
            },
            Case {
                redirect: redirect(None, None, None, Some(PathRedirect::Prefix("/all".into()))),
                matcher: Some(StringMatch::Exact("/one".into())),
                target: "/one",
                authority: "h",
                want: "http://h/all",
            },
        ];
        for (i, case) in cases.iter().enumerate() {
            let matcher = RouteMatch {
                uri: case.matcher.clone(),
                ..RouteMatch::default()
            };
            assert_eq!(
                case.redirect
                    .location(&matcher, &get(case.target, case.authority), 18080),
                case.want,
                "case {i}"
            );
        }
    }

    #[test]
    fn each_match_kind_decides_as_envoy() {
        struct Case {
            matcher: RouteMatch,
            req: Req,
            want: bool,
        }
        let header = |name: &str, value: Option<StringMatch>, invert| HeaderMatch {
            name: name.to_owned(),
            value,
            invert,
        };
        let with_header = |target, h: Vec<(&'static str, &'static str)>| Req {
            headers: h,
            ..get(target, "h")
        };
        let uri = |m: StringMatch| RouteMatch {
            uri: Some(m),
            ..RouteMatch::default()
        };
        let headers = |h: Vec<HeaderMatch>| RouteMatch {
            headers: h,
            ..RouteMatch::default()
        };
        let query = |name: &str, value: Option<StringMatch>| RouteMatch {
            query_params: vec![QueryMatch {
                name: name.to_owned(),
                value,
            }],
            ..RouteMatch::default()
        };
        let cases = [
            Case {
                matcher: uri(StringMatch::Exact("/a".into())),
                req: get("/a", "h"),
                want: true,
            },
            Case {
                matcher: uri(StringMatch::Exact("/a".into())),
                req: get("/a/b", "h"),
                want: false,
            },
            Case {
                matcher: uri(StringMatch::Prefix("/foo".into())),
                req: get("/foobar", "h"),
                want: true,
            },
            Case {
                matcher: uri(regex(r"/\d+")),
                req: get("/123", "h"),
                want: true,
            },
            Case {
                matcher: uri(regex(r"\d+")),
                req: get("/a123", "h"),
                want: false,
            },
            Case {
                matcher: RouteMatch {
                    ignore_uri_case: true,
                    ..uri(StringMatch::Prefix("/API".into()))
                },
                req: get("/api/x", "h"),
                want: true,
            },
            Case {
                matcher: RouteMatch {
                    method: Some(StringMatch::Exact("POST".into())),
                    ..RouteMatch::default()
                },
                req: get("/", "h"),
                want: false,
            },
            Case {
                matcher: RouteMatch {
                    authority: Some(StringMatch::Prefix("tomcat.".into())),
                    ..RouteMatch::default()
                },
                req: get("/", "tomcat.istio.com:80"),
                want: true,
            },
            Case {
                matcher: RouteMatch {
                    scheme: Some(StringMatch::Exact("https".into())),
                    ..RouteMatch::default()
                },
                req: get("/", "h"),
                want: false,
            },
            Case {
                matcher: headers(vec![header(
                    "x-user",
                    Some(StringMatch::Exact("jason".into())),
                    false,
                )]),
                req: with_header("/", vec![("x-user", "jason")]),
                want: true,
            },
            Case {
                matcher: headers(vec![header("x-user", None, false)]),
                req: with_header("/", vec![]),
                want: false,
            },
            Case {
                matcher: headers(vec![header(
                    "x-user",
                    Some(StringMatch::Exact("a,b".into())),
                    false,
                )]),
                req: with_header("/", vec![("x-user", "a"), ("x-user", "b")]),
                want: true,
            },
            Case {
                matcher: headers(vec![header("x-debug", None, true)]),
                req: with_header("/", vec![("x-debug", "1")]),
                want: false,
            },
            Case {
                matcher: headers(vec![header(
                    "x-env",
                    Some(StringMatch::Prefix("".into())),
                    true,
                )]),
                req: with_header("/", vec![]),
                want: false,
            },
            Case {
                matcher: headers(vec![header(
                    "x-env",
                    Some(StringMatch::Exact("prod".into())),
                    true,
                )]),
                req: with_header("/", vec![]),
                want: true,
            },
            Case {
                matcher: query("debug", Some(StringMatch::Exact(String::new()))),
                req: get("/?debug", "h"),
                want: true,
            },
            Case {
                matcher: query("v", Some(StringMatch::Exact("2".into()))),
                req: get("/?a=1&v=2", "h"),
                want: true,
            },
            Case {
                matcher: query("v", None),
                req: get("/", "h"),
                want: false,
            },
            // Envoy looks at the first value of a repeated parameter only.
            Case {
                matcher: query("v", Some(StringMatch::Exact("2".into()))),
                req: get("/?v=1&v=2", "h"),
                want: false,
            },
        ];
        for (i, case) in cases.iter().enumerate() {
            assert_eq!(case.matcher.matches(&case.req), case.want, "case {i}");
        }
    }
}
