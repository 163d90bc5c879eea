//! The actions of an http rule, checked and compiled: `redirect`,
//! `directResponse`, `rewrite` and `retries`, with Istio's defaults.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Resource;
use crate::config::http::{DerivePort, HttpDirectResponse, HttpRedirect, HttpRetry, HttpRewrite};
use crate::config::manifest::VirtualServiceSpec;
use crate::diag::Severity;

use super::http_rules::{Push, build_regex};
use crate::routing::http::{
    DirectResponse, PathRedirect, Redirect, RedirectPort, RetryOn, RetryPolicy, Rewrite, UriRewrite,
};
use crate::routing::policy::port_number;

/// Istio's limit on a direct response body (`DefaultMaxDirectResponseBodySizeBytes`).
pub const MAX_DIRECT_RESPONSE_BODY: usize = 1 << 20;
/// Istio's retries when a rule sets none: 2, on connect failure.
pub const DEFAULT_RETRY_ATTEMPTS: u32 = 2;

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

pub(super) fn compile_redirect(
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

pub(super) fn compile_direct(
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
pub(super) fn compile_rewrite(
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
pub(super) fn compile_retries(
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
    // istiod's `ConvertPolicy`: a retries block without attempts (or with
    // 0) disables retries.
    let attempts = match r.attempts.map(u32::try_from) {
        None => 0,
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
}
