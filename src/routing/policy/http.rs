//! The HTTP parts of a DestinationRule policy: `connectionPool.http` and
//! the request hash keys of `consistentHash`.

use std::time::Duration;

use crate::config::manifest::{ConsistentHash, HttpSettings};

use super::Checker;
use crate::routing::table::{DEFAULT_IDLE_TIMEOUT, HttpPoolPolicy, RequestHashKey};

/// `connectionPool.http`, validated; `None` fields keep Istio's defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HttpPool {
    pub idle_timeout: Option<Duration>,
    pub max_requests_per_connection: Option<u32>,
    pub max_pending_requests: Option<u32>,
    pub max_requests: Option<u32>,
    pub max_retries: Option<u32>,
}

impl HttpPool {
    /// The compiled policy: 1h idle timeout unless set (`0s`: never).
    pub fn policy(&self) -> HttpPoolPolicy {
        HttpPoolPolicy {
            idle_timeout: self.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT),
            max_requests_per_connection: self.max_requests_per_connection,
            max_pending_requests: self.max_pending_requests,
            max_requests: self.max_requests,
            max_retries: self.max_retries,
        }
    }
}

impl Checker<'_> {
    pub(super) fn http_pool(&mut self, h: &HttpSettings, path: &str) -> HttpPool {
        for (field, present) in h.no_effect_fields() {
            if present {
                self.ignored(
                    &format!("{path}.{field}"),
                    format!("{field} concerns HTTP/2 upstreams; it has no effect until ringway speaks HTTP/2"),
                );
            }
        }
        // Istio's int32 limits: 0 (or unset) keeps the default, unlimited.
        let mut limit = |field: &str, value: Option<i64>| -> Option<u32> {
            let v = value?;
            match u32::try_from(v) {
                Ok(0) => None,
                Ok(n) if i32::try_from(n).is_ok() => Some(n),
                _ => {
                    self.error(
                        &format!("{path}.{field}"),
                        format!(
                            "{field} {v} is out of range: expected 0 (unlimited) to {}",
                            i32::MAX
                        ),
                    );
                    None
                }
            }
        };
        HttpPool {
            max_requests_per_connection: limit(
                "maxRequestsPerConnection",
                h.max_requests_per_connection,
            ),
            max_pending_requests: limit("http1MaxPendingRequests", h.http1_max_pending_requests),
            max_requests: limit("http2MaxRequests", h.http2_max_requests),
            max_retries: limit("maxRetries", h.max_retries),
            idle_timeout: h.idle_timeout.map(|d| d.0),
        }
    }

    /// The request property a `consistentHash` names: `Some(None)` for
    /// none (source IP or no key), `None` after an error.
    pub(super) fn request_hash_key(
        &mut self,
        hash: &ConsistentHash,
        path: &str,
    ) -> Option<Option<RequestHashKey>> {
        let mut keys: Vec<(&str, RequestHashKey)> = Vec::new();
        if let Some(name) = &hash.http_header_name {
            keys.push((
                "httpHeaderName",
                RequestHashKey::Header(name.to_ascii_lowercase()),
            ));
        }
        if let Some(cookie) = &hash.http_cookie {
            if cookie.ttl.is_some() || cookie.path.is_some() || cookie.attributes.is_some() {
                self.ignored(
                    &format!("{path}.httpCookie"),
                    "httpCookie ttl, path and attributes are accepted, not applied: ringway hashes an \
                     existing cookie and never sets one (a request without it picks at random)",
                );
            }
            keys.push(("httpCookie", RequestHashKey::Cookie(cookie.name.clone())));
        }
        if let Some(name) = &hash.http_query_parameter_name {
            keys.push((
                "httpQueryParameterName",
                RequestHashKey::Query(name.clone()),
            ));
        }
        let source_ip = hash.use_source_ip == Some(true);
        if keys.len() + usize::from(source_ip) > 1 {
            let mut names: Vec<&str> = keys.iter().map(|(n, _)| *n).collect();
            if source_ip {
                names.push("useSourceIp");
            }
            self.error(
                path,
                format!("set one hash key, not several ({})", names.join(", ")),
            );
            return None;
        }
        let key = keys.pop().map(|(_, k)| k);
        let empty = matches!(
            &key,
            Some(RequestHashKey::Header(n) | RequestHashKey::Cookie(n) | RequestHashKey::Query(n)) if n.is_empty()
        );
        if empty {
            self.error(
                path,
                "the hash key name is empty: name a header, cookie or query parameter",
            );
            return None;
        }
        Some(key)
    }
}
