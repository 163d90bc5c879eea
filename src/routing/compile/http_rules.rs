//! One http rule → what the data plane runs: its match blocks as
//! [`RouteMatch`]es (regexes compiled here, once) and its action (forward,
//! redirect, direct response) with header operations, as istiod's
//! `TranslateRoute` builds them. Every mistake names its field.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Resource;
use crate::config::http::{
    DerivePort, HeaderOperations, HeadersSpec, HttpDirectResponse, HttpRedirect, HttpRetry,
    HttpRewrite, StringMatchSpec,
};
use crate::config::manifest::{HttpMatch, VirtualServiceSpec};
use crate::diag::Severity;

use super::delegate::EffectiveRule;
use super::{Compiler, Section};
use crate::routing::http::{
    DirectResponse, Forward, HeaderMatch, HeaderOps, Headers, PathRedirect, QueryMatch, Redirect,
    RedirectPort, RetryOn, RetryPolicy, Rewrite, RouteAction, RouteMatch, StringMatch, UriRewrite,
};
use crate::routing::policy::port_number;

/// Istio's limit on a direct response body (`DefaultMaxDirectResponseBodySizeBytes`).
pub const MAX_DIRECT_RESPONSE_BODY: usize = 1 << 20;
/// Istio's retries when a rule sets none: 2, on connect failure.
pub const DEFAULT_RETRY_ATTEMPTS: u32 = 2;
/// The compiled size limit of one regex (the `regex` crate's default is 10 MiB).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// The regex retry tokens that exist in Envoy but never fire on HTTP/1.1
/// (HTTP/2 and gRPC conditions) or that ringway does not apply.
const INERT_RETRY_ON: [&str; 11] = [
    "refused-stream",
    "unavailable",
    "cancelled",
    "resource-exhausted",
    "deadline-exceeded",
    "internal",
    "retriable-4xx",
    "retriable-headers",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "reset-before-request",
];

impl Compiler<'_> {
    /// The match block `k` of an effective rule, compiled (once per table);
    /// `None` when it is invalid (errors pushed).
    pub(super) fn http_match(
        &mut self,
        root: usize,
        e: usize,
        k: usize,
        rule: &EffectiveRule,
    ) -> Option<RouteMatch> {
        if let Some(done) = self.http_matches.get(&(root, e, k)) {
            return done.clone();
        }
        let (src, path) = &rule.match_sources[k];
        let vs = &self.m.virtual_services[*src];
        let compiled = compile_match(vs, path, &rule.rule.matches[k], &mut |d| self.diags.push(d));
        self.http_matches.insert((root, e, k), compiled.clone());
        compiled
    }

    /// The action and header operations of an effective rule (once per
    /// table); `None` when invalid (errors pushed).
    pub(super) fn http_action(
        &mut self,
        root: usize,
        e: usize,
        rule: &EffectiveRule,
    ) -> Option<(RouteAction, Headers)> {
        if let Some(done) = self.http_actions.get(&(root, e)) {
            return done.clone();
        }
        let built = self.build_http_action(rule);
        self.http_actions.insert((root, e), built.clone());
        built
    }

    fn build_http_action(&mut self, er: &EffectiveRule) -> Option<(RouteAction, Headers)> {
        let vs = &self.m.virtual_services[er.owner];
        let rule = &er.rule;
        let path = format!("spec.http[{}]", er.index);
        let mut push = |d| self.diags.push(d);
        let actions = [
            ("route", !rule.route.is_empty()),
            ("redirect", rule.redirect.is_some()),
            ("directResponse", rule.direct_response.is_some()),
        ];
        let set: Vec<&str> = actions.iter().filter(|a| a.1).map(|a| a.0).collect();
        if set.len() != 1 {
            push(vs.diag(
                Severity::Error,
                &path,
                format!(
                    "an http rule needs exactly one of route, redirect, directResponse or delegate (it has {})",
                    if set.is_empty() { "none".to_owned() } else { set.join(", ") }
                ),
            ));
            return None;
        }
        for (field, present) in rule.ignored_fields() {
            if present {
                push(vs.diag(
                    Severity::Warning,
                    &format!("{path}.{field}"),
                    format!("{field} is accepted, not applied: ringway does not implement it yet"),
                ));
            }
        }
        let headers = header_ops(
            vs,
            &format!("{path}.headers"),
            rule.headers.as_ref(),
            &mut push,
        );
        if let Some(redirect) = &rule.redirect {
            let r = compile_redirect(vs, &format!("{path}.redirect"), redirect, &mut push)?;
            return Some((RouteAction::Redirect(r), headers));
        }
        if let Some(direct) = &rule.direct_response {
            let d = compile_direct(vs, &format!("{path}.directResponse"), direct, &mut push)?;
            return Some((RouteAction::Direct(d), headers));
        }
        let destinations: Vec<Headers> = rule
            .route
            .iter()
            .enumerate()
            .filter(|(_, d)| rule.route.len() == 1 || d.weight.unwrap_or(0) > 0)
            .map(|(i, d)| {
                header_ops(
                    vs,
                    &format!("{path}.route[{i}].headers"),
                    d.headers.as_ref(),
                    &mut push,
                )
            })
            .collect();
        // `None`: invalid; `Some(None)`: no rewrite.
        let rewrite = match &rule.rewrite {
            None => Some(None),
            Some(r) => compile_rewrite(vs, &format!("{path}.rewrite"), r, &mut push).map(Some),
        };
        let timeout = rule.timeout.map(|d| d.0).filter(|d| !d.is_zero());
        let retries = compile_retries(
            vs,
            &format!("{path}.retries"),
            rule.retries.as_ref(),
            &mut push,
        );
        let route = self.route(er.owner, Section::Http, er.index)?;
        Some((
            RouteAction::Forward(Forward {
                route,
                destinations,
                rewrite: rewrite?,
                timeout,
                retries: retries?,
            }),
            headers,
        ))
    }
}

type Push<'a> = dyn FnMut(crate::diag::Diagnostic) + 'a;

/// One match block → [`RouteMatch`]; `None` when a condition is invalid.
fn compile_match(
    vs: &Resource<VirtualServiceSpec>,
    path: &str,
    mb: &HttpMatch,
    push: &mut Push<'_>,
) -> Option<RouteMatch> {
    let mut ok = true;
    let mut field =
        |name: &str, spec: &Option<StringMatchSpec>, ok: &mut bool| -> Option<StringMatch> {
            let spec = spec.as_ref()?;
            match string_match(vs, &format!("{path}.{name}"), spec, push) {
                Ok(m) => m,
                Err(()) => {
                    *ok = false;
                    None
                }
            }
        };
    let uri = field("uri", &mb.uri, &mut ok);
    let method = field("method", &mb.method, &mut ok);
    let authority = field("authority", &mb.authority, &mut ok);
    let scheme = field("scheme", &mb.scheme, &mut ok);
    let mut headers = Vec::new();
    for (key, spec, invert, section) in mb
        .headers
        .iter()
        .map(|(k, s)| (k, s, false, "headers"))
        .chain(
            mb.without_headers
                .iter()
                .map(|(k, s)| (k, s, true, "withoutHeaders")),
        )
    {
        let fpath = format!("{path}.{section}.{key}");
        let name = key.to_ascii_lowercase();
        if ["uri", "scheme", "method", "authority"].contains(&name.as_str()) {
            push(vs.diag(
                Severity::Warning,
                &fpath,
                format!(
                    "header {name:?} is ignored (as Istio does): use the match's own {name} field"
                ),
            ));
            continue;
        }
        match string_match(vs, &fpath, spec, push) {
            Ok(value) => headers.push(HeaderMatch {
                name,
                value,
                invert,
            }),
            Err(()) => ok = false,
        }
    }
    let mut query_params = Vec::new();
    for (key, spec) in &mb.query_params {
        match string_match(vs, &format!("{path}.queryParams.{key}"), spec, push) {
            Ok(value) => query_params.push(QueryMatch {
                name: key.clone(),
                value,
            }),
            Err(()) => ok = false,
        }
    }
    if let Some(p) = mb.port.filter(|p| port_number(*p).is_none()) {
        push(vs.diag(
            Severity::Error,
            &format!("{path}.port"),
            format!("port {p} is out of range (1-65535)"),
        ));
        ok = false;
    }
    if mb.stat_prefix.is_some() {
        push(vs.diag(
            Severity::Warning,
            &format!("{path}.statPrefix"),
            "statPrefix names Envoy statistics; it has no effect in ringway",
        ));
    }
    ok.then_some(RouteMatch {
        uri,
        ignore_uri_case: mb.ignore_uri_case.unwrap_or(false),
        method,
        authority,
        scheme,
        headers,
        query_params,
    })
}

/// Istio's StringMatch: `Ok(None)` when none of exact, prefix, regex is
/// set (a presence check for headers and query parameters, no condition
/// for uri, method, authority and scheme).
fn string_match(
    vs: &Resource<VirtualServiceSpec>,
    path: &str,
    spec: &StringMatchSpec,
    push: &mut Push<'_>,
) -> Result<Option<StringMatch>, ()> {
    let kinds = [&spec.exact, &spec.prefix, &spec.regex];
    if kinds.iter().filter(|k| k.is_some()).count() > 1 {
        push(vs.diag(
            Severity::Error,
            path,
            "set one of exact, prefix or regex, not several",
        ));
        return Err(());
    }
    if let Some(e) = &spec.exact {
        return Ok(Some(StringMatch::Exact(e.clone())));
    }
    if let Some(p) = &spec.prefix {
        return Ok(Some(StringMatch::Prefix(p.clone())));
    }
    let Some(re) = &spec.regex else {
        return Ok(None);
    };
    match anchored_regex(re) {
        Ok(r) => Ok(Some(StringMatch::Regex(r))),
        Err(why) => {
            push(vs.diag(
                Severity::Error,
                &format!("{path}.regex"),
                format!("bad regex {re:?}: {why} (RE2 syntax, matched against the whole value)"),
            ));
            Err(())
        }
    }
}

/// Compiles `re` to match a whole value, as Envoy's `safe_regex` does.
pub(super) fn anchored_regex(re: &str) -> Result<Arc<regex::Regex>, String> {
    build_regex(&format!("^(?:{re})$"))
}

fn build_regex(re: &str) -> Result<Arc<regex::Regex>, String> {
    regex::RegexBuilder::new(re)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map(Arc::new)
        .map_err(|e| match e {
            regex::Error::Syntax(s) => s.lines().last().unwrap_or("syntax error").trim().to_owned(),
            regex::Error::CompiledTooBig(limit) => {
                format!("compiles to more than {limit} bytes; simplify it")
            }
            other => other.to_string(),
        })
}

/// `headers`: set and add keep their order (map order), names lowercase.
fn header_ops(
    vs: &Resource<VirtualServiceSpec>,
    path: &str,
    spec: Option<&HeadersSpec>,
    push: &mut Push<'_>,
) -> Headers {
    let Some(spec) = spec else {
        return Headers::default();
    };
    let ops = |side: &Option<HeaderOperations>, push: &mut Push<'_>, field: &str| {
        let Some(side) = side else {
            return HeaderOps::default();
        };
        let lower = |m: &std::collections::BTreeMap<String, String>| {
            m.iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect()
        };
        let ops = HeaderOps {
            set: lower(&side.set),
            add: lower(&side.add),
            remove: side.remove.iter().map(|k| k.to_ascii_lowercase()).collect(),
        };
        for (name, _) in ops.set.iter().chain(&ops.add) {
            if name.is_empty() || !name.bytes().all(is_token_byte) {
                push(vs.diag(
                    Severity::Error,
                    &format!("{path}.{field}"),
                    format!(
                        "{name:?} is not a valid header name (letters, digits and !#$%&'*+-.^_`|~)"
                    ),
                ));
            }
        }
        ops
    };
    Headers {
        request: ops(&spec.request, push, "request"),
        response: ops(&spec.response, push, "response"),
    }
}

/// RFC 9110 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn compile_redirect(
    vs: &Resource<VirtualServiceSpec>,
    path: &str,
    r: &HttpRedirect,
    push: &mut Push<'_>,
) -> Option<Redirect> {
    let mut ok = true;
    let code = match r.redirect_code {
        None => 301,
        Some(c @ (301 | 302 | 303 | 307 | 308)) => u16::try_from(c).unwrap_or(301),
        Some(c) => {
            push(vs.diag(
                Severity::Error,
                &format!("{path}.redirectCode"),
                format!("redirectCode {c} is not a redirect (valid: 301, 302, 303, 307, 308)"),
            ));
            ok = false;
            301
        }
    };
    let port = match (r.port, r.derive_port) {
        (Some(_), Some(_)) => {
            push(vs.diag(
                Severity::Error,
                &format!("{path}.derivePort"),
                "set port or derivePort, not both",
            ));
            ok = false;
            None
        }
        (Some(p), None) => match port_number(p) {
            Some(p) => Some(RedirectPort::Number(p)),
            None => {
                push(vs.diag(
                    Severity::Error,
                    &format!("{path}.port"),
                    format!("port {p} is out of range (1-65535)"),
                ));
                ok = false;
                None
            }
        },
        (None, Some(DerivePort::FromProtocolDefault)) => Some(RedirectPort::FromProtocolDefault),
        (None, Some(DerivePort::FromRequestPort)) => Some(RedirectPort::FromRequestPort),
        (None, None) => None,
    };
    let path_redirect = match (&r.uri, &r.prefix_rewrite) {
        (Some(_), Some(_)) => {
            push(vs.diag(
                Severity::Error,
                &format!("{path}.prefixRewrite"),
                "set uri or prefixRewrite, not both",
            ));
            ok = false;
            None
        }
        (Some(uri), None) => Some(PathRedirect::Full(uri.clone())),
        (None, Some(prefix)) => Some(PathRedirect::Prefix(prefix.clone())),
        (None, None) => None,
    };
    ok.then(|| Redirect {
        code,
        scheme: r.scheme.clone().filter(|s| !s.is_empty()),
        authority: r.authority.clone().filter(|s| !s.is_empty()),
        port,
        path: path_redirect,
    })
}

fn compile_direct(
    vs: &Resource<VirtualServiceSpec>,
    path: &str,
    d: &HttpDirectResponse,
    push: &mut Push<'_>,
) -> Option<DirectResponse> {
    let status = u16::try_from(d.status)
        .ok()
        .filter(|s| (200..=599).contains(s));
    if status.is_none() {
        push(vs.diag(
            Severity::Error,
            &format!("{path}.status"),
            format!("status {} is out of range (200-599)", d.status),
        ));
    }
    let body: Option<Vec<u8>> = match d.body.as_ref().map(|b| (&b.string, &b.bytes)) {
        None | Some((None, None)) => None,
        Some((Some(_), Some(_))) => {
            push(vs.diag(
                Severity::Error,
                &format!("{path}.body"),
                "set body.string or body.bytes, not both",
            ));
            return None;
        }
        Some((Some(s), None)) => Some(s.clone().into_bytes()),
        Some((None, Some(b))) => match decode_base64(b) {
            Ok(bytes) => Some(bytes),
            Err(why) => {
                push(vs.diag(
                    Severity::Error,
                    &format!("{path}.body.bytes"),
                    format!("body.bytes is not base64: {why}"),
                ));
                return None;
            }
        },
    };
    if let Some(len) = body
        .as_ref()
        .map(Vec::len)
        .filter(|l| *l > MAX_DIRECT_RESPONSE_BODY)
    {
        push(vs.diag(
            Severity::Error,
            &format!("{path}.body"),
            format!("body is {len} bytes; a direct response body is at most {MAX_DIRECT_RESPONSE_BODY} bytes (1 MiB, as Istio)"),
        ));
        return None;
    }
    Some(DirectResponse {
        status: status?,
        body: body.map(Arc::from),
    })
}

/// `rewrite`; `None` inside when a regex is invalid.
fn compile_rewrite(
    vs: &Resource<VirtualServiceSpec>,
    path: &str,
    r: &HttpRewrite,
    push: &mut Push<'_>,
) -> Option<Rewrite> {
    let uri = match (&r.uri, &r.uri_regex_rewrite) {
        (Some(_), Some(_)) => {
            push(vs.diag(
                Severity::Error,
                &format!("{path}.uriRegexRewrite"),
                "set uri or uriRegexRewrite, not both",
            ));
            return None;
        }
        (Some(uri), None) => Some(UriRewrite::Prefix(uri.clone())),
        (None, Some(rr)) => match build_regex(&rr.pattern) {
            Ok(pattern) => Some(UriRewrite::Regex {
                pattern,
                substitution: envoy_substitution(&rr.rewrite),
            }),
            Err(why) => {
                push(vs.diag(
                    Severity::Error,
                    &format!("{path}.uriRegexRewrite.match"),
                    format!("bad regex {:?}: {why} (RE2 syntax)", rr.pattern),
                ));
                return None;
            }
        },
        (None, None) => None,
    };
    Some(Rewrite {
        uri,
        authority: r.authority.clone().filter(|a| !a.is_empty()),
    })
}

/// Envoy's `\1` capture references in a regex substitution, as the regex
/// crate writes them (`${1}`); a literal `$` is escaped.
fn envoy_substitution(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' if chars.peek().is_some_and(char::is_ascii_digit) => {
                let mut n = String::new();
                while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                    n.push(d);
                    chars.next();
                }
                out.push_str(&format!("${{{n}}}"));
            }
            c => out.push(c),
        }
    }
    out
}

/// `retries`, or Istio's default; `None` on an error.
fn compile_retries(
    vs: &Resource<VirtualServiceSpec>,
    path: &str,
    r: Option<&HttpRetry>,
    push: &mut Push<'_>,
) -> Option<RetryPolicy> {
    let default_on = RetryOn {
        connect_failure: true,
        ..RetryOn::default()
    };
    let Some(r) = r else {
        return Some(RetryPolicy {
            attempts: DEFAULT_RETRY_ATTEMPTS,
            per_try_timeout: None,
            on: default_on,
        });
    };
    for (field, present) in [
        ("retryRemoteLocalities", r.retry_remote_localities.is_some()),
        ("backoff", r.backoff.is_some()),
    ] {
        if present {
            push(vs.diag(
                Severity::Warning,
                &format!("{path}.{field}"),
                format!("{field} is accepted, not applied"),
            ));
        }
    }
    let attempts = match r.attempts.map(u32::try_from) {
        None => DEFAULT_RETRY_ATTEMPTS,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            push(vs.diag(
                Severity::Error,
                &format!("{path}.attempts"),
                "attempts must be 0 (no retries) or more",
            ));
            return None;
        }
    };
    let per_try_timeout = r.per_try_timeout.map(|d| d.0);
    if per_try_timeout.is_some_and(|d| d < Duration::from_millis(1)) {
        push(vs.diag(
            Severity::Error,
            &format!("{path}.perTryTimeout"),
            "perTryTimeout must be at least 1ms",
        ));
        return None;
    }
    let on = match r.retry_on.as_deref().filter(|s| !s.trim().is_empty()) {
        None => default_on,
        Some(text) => retry_on(vs, &format!("{path}.retryOn"), text, push)?,
    };
    Some(RetryPolicy {
        attempts,
        per_try_timeout,
        on,
    })
}

/// Parses `retryOn`: Envoy's HTTP conditions and numeric status codes.
fn retry_on(
    vs: &Resource<VirtualServiceSpec>,
    path: &str,
    text: &str,
    push: &mut Push<'_>,
) -> Option<RetryOn> {
    let mut on = RetryOn::default();
    let mut inert = Vec::new();
    for token in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        match token {
            "connect-failure" => on.connect_failure = true,
            "reset" => on.reset = true,
            "5xx" => on.server_error = true,
            "gateway-error" => on.gateway_error = true,
            "retriable-status-codes" => {}
            t if INERT_RETRY_ON.contains(&t) => inert.push(t),
            t => match t.parse::<u16>() {
                Ok(code) if (100..=599).contains(&code) => on.status_codes.push(code),
                _ => {
                    push(vs.diag(
                        Severity::Error,
                        path,
                        format!(
                            "{t:?} is not a retry condition (valid: connect-failure, reset, 5xx, gateway-error, \
                             retriable-status-codes, or a status code such as 503)"
                        ),
                    ));
                    return None;
                }
            },
        }
    }
    if !inert.is_empty() {
        push(vs.diag(
            Severity::Info,
            path,
            format!(
                "{} accepted; never fires on an HTTP/1.1 upstream",
                inert.join(", ")
            ),
        ));
    }
    Some(on)
}

/// Standard base64 (padding optional), as protobuf's JSON mapping of `bytes`.
fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    let body = text.trim_end_matches('=');
    if text.len() - body.len() > 2 {
        return Err("too much padding".to_owned());
    }
    for (i, c) in body.bytes().enumerate() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return Err(format!("byte {i} ({:?}) is not a base64 digit", c as char)),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).unwrap_or(0));
        }
    }
    if bits >= 6 {
        return Err("truncated (a length of 4n+1 digits)".to_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_padded_unpadded_and_rejects_junk() {
        assert_eq!(decode_base64("aGVsbG8=").as_deref(), Ok(&b"hello"[..]));
        assert_eq!(decode_base64("aGVsbG8").as_deref(), Ok(&b"hello"[..]));
        assert_eq!(decode_base64("").as_deref(), Ok(&b""[..]));
        assert!(decode_base64("aGV*").is_err());
        assert!(decode_base64("a").is_err());
    }

    #[test]
    fn envoy_capture_references_become_regex_crate_ones() {
        assert_eq!(envoy_substitution(r"/v2/\1/x"), "/v2/${1}/x");
        assert_eq!(envoy_substitution(r"\12$"), "${12}$$");
        assert_eq!(envoy_substitution("/plain"), "/plain");
    }

    #[test]
    fn regexes_are_anchored_and_bad_ones_explained() {
        let r = anchored_regex(r"\d+").expect("valid");
        assert!(r.is_match("123") && !r.is_match("a123"));
        let err = anchored_regex("(").expect_err("invalid");
        assert!(err.contains("unclosed group"), "{err}");
    }
}
