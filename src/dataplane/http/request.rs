//! One HTTP request as a session carries it: its head, what routing decided
//! under the plan current when the head arrived, the upstream attempts, and
//! what the access log and Istio's metrics will say of it. Pure.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::http1::head::RequestHead;
use crate::http1::reply::{Reply, default_body, local_reply};
use crate::http1::write::{RequestEdits, write_request};
use crate::http1::{BodyFraming, Version};
use crate::routing::http::{
    HeaderOps, HttpRoute, HttpRouting, RequestView, RetryPolicy, RouteAction, RouteMatch,
};
use crate::routing::table::{ClusterId, ListenerRouting, RequestHashKey, RouteId};

use super::super::balancer::fnv1a_bytes;

use super::super::plan::Plan;
use super::super::pool::Held;

/// What routing decided for a request.
#[derive(Debug)]
pub(crate) enum Decision {
    /// Answer from ringway itself.
    Local(LocalAnswer),
    /// Forward to one of the route's weighted clusters (the request's
    /// `forwarding`).
    Forward,
}

/// A local answer: the status, Envoy's flag and details for the logs, and
/// what the reply carries.
#[derive(Debug, Clone)]
pub(crate) struct LocalAnswer {
    pub status: u16,
    pub flags: &'static str,
    pub details: &'static str,
    /// `None`: ringway's short text for the status (errors); `Some`: the
    /// route's (a `directResponse`, an empty redirect body).
    pub body: Option<Arc<[u8]>>,
    pub location: Option<String>,
}

impl LocalAnswer {
    pub(crate) fn error(status: u16, flags: &'static str, details: &'static str) -> LocalAnswer {
        LocalAnswer {
            status,
            flags,
            details,
            body: None,
            location: None,
        }
    }
}

/// No body.
fn empty() -> Arc<[u8]> {
    Arc::from(&[][..])
}

/// Where in the plan the request's route is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forwarding {
    pub listener: usize,
    pub vhost: usize,
    pub route: usize,
    /// The weighted clusters (a route of the table).
    pub clusters: RouteId,
}

/// A request held whole, as it went upstream.
#[derive(Debug, Clone)]
pub struct Replay {
    pub bytes: Vec<u8>,
    /// Of which ringway's head.
    pub head_len: u64,
}

/// The request a session is serving.
#[derive(Debug)]
pub struct Request {
    pub head: RequestHead,
    /// When its first byte arrived.
    pub started: Instant,
    pub started_at: SystemTime,
    /// `x-request-id` (generated: edge requests never keep the client's,
    /// as Envoy's `preserve_external_request_id: false`).
    pub id: String,
    pub forwarding: Option<Forwarding>,
    pub cluster: Option<ClusterId>,
    /// Endpoints tried (a retry goes elsewhere when it can).
    pub tried: Vec<usize>,
    /// Connects tried so far.
    pub attempts: u32,
    /// Retries so far (connect failures, retriable statuses, the
    /// keep-alive race).
    pub retries: u32,
    /// The reused keep-alive connection failed before any response byte
    /// and the request went again on a new connection (once).
    pub retried_on_fresh: bool,
    /// The head and body bytes sent upstream when the whole request came
    /// with its head (replayable on another connection); `None` when part
    /// of the body came from the client's socket.
    pub replay: Option<Replay>,
    pub status: u16,
    pub flags: &'static str,
    pub details: &'static str,
    /// Body bytes from the client and to the client.
    pub body_bytes: [u64; 2],
    /// Wire bytes (head and body) from the client and to the client.
    pub wire_bytes: [u64; 2],
    /// Request start to the upstream's response head.
    pub upstream_time: Option<Duration>,
    /// Its places under the cluster's caps ([`Cap`]: `http2MaxRequests`,
    /// and `maxRetries` once it is retried), given back when the request
    /// is dropped.
    pub caps: [Option<Held>; 2],
    /// A valid WebSocket handshake: forwarded with its Upgrade, and a 101
    /// makes the connection a tunnel.
    pub websocket: bool,
}

impl Request {
    pub(crate) fn new(head: RequestHead, started: Instant, id: [u64; 2]) -> Request {
        let wire = head.len() as u64;
        Request {
            head,
            started,
            started_at: SystemTime::now(),
            id: request_id(id),
            forwarding: None,
            cluster: None,
            tried: Vec::new(),
            attempts: 0,
            retries: 0,
            retried_on_fresh: false,
            replay: None,
            status: 0,
            flags: "-",
            details: "-",
            body_bytes: [0, 0],
            wire_bytes: [wire, 0],
            upstream_time: None,
            caps: [None, None],
            websocket: false,
        }
    }

    /// Route under `plan`, on its listener `listener`.
    pub(crate) fn route(&mut self, plan: &Plan, listener: usize) -> Decision {
        let not_found = || Decision::Local(LocalAnswer::error(404, "NR", "route_not_found"));
        let Some(ListenerRouting::Http { http }) =
            plan.table.listeners.get(listener).map(|l| &l.routing)
        else {
            return not_found();
        };
        let Some((vhost, route)) = find(http, &self.head) else {
            return not_found();
        };
        let r = &http.vhosts[vhost].routes[route];
        let port = plan.table.listeners[listener].address.port();
        match &r.action {
            RouteAction::Direct(d) => Decision::Local(LocalAnswer {
                status: d.status,
                flags: "-",
                details: "direct_response",
                body: Some(d.body.clone().unwrap_or_else(empty)),
                location: None,
            }),
            RouteAction::Redirect(redirect) => Decision::Local(LocalAnswer {
                status: redirect.code,
                flags: "-",
                details: "direct_response",
                body: Some(empty()),
                location: Some(redirect.location(&r.matcher, &self.head, port)),
            }),
            RouteAction::Forward(f) => {
                let forwarding = Forwarding {
                    listener,
                    vhost,
                    route,
                    clusters: f.route,
                };
                self.forwarding = Some(forwarding);
                Decision::Forward
            }
        }
    }

    /// The route the request took, under `plan`.
    pub(crate) fn http_route<'p>(&self, plan: &'p Plan) -> Option<&'p HttpRoute> {
        let f = self.forwarding?;
        match &plan.table.listeners.get(f.listener)?.routing {
            ListenerRouting::Http { http } => http.vhosts.get(f.vhost)?.routes.get(f.route),
            _ => None,
        }
    }

    /// The head ringway sends upstream for this request to `cluster`, then
    /// `body` (the body bytes that came with the head).
    pub(crate) fn upstream_head(
        &self,
        plan: &Plan,
        cluster: ClusterId,
        peer: SocketAddr,
        body: &[u8],
    ) -> Vec<u8> {
        let route = self.http_route(plan);
        let forward = route.and_then(|r| match &r.action {
            RouteAction::Forward(f) => Some(f),
            _ => None,
        });
        let destination = forward.and_then(|f| {
            let clusters = &plan.table.route(f.route).clusters;
            let i = clusters.iter().position(|c| c.cluster == cluster)?;
            f.destinations.get(i)
        });
        let mut ops: Vec<&HeaderOps> = Vec::with_capacity(2);
        if let Some(d) = destination {
            ops.push(&d.request);
        }
        if let Some(r) = route {
            ops.push(&r.headers.request);
        }
        let target = route.and_then(|r| r.rewritten_target(&self.head));
        let authority = forward
            .and_then(|f| f.rewrite.as_ref())
            .and_then(|rw| rw.authority.as_deref());
        let edits = RequestEdits {
            target: target.as_deref(),
            authority,
            peer: peer.ip(),
            request_id: &self.id,
            ops: &ops,
            close: false,
            upgrade: self.head.upgrade().filter(|_| self.websocket),
        };
        let mut out = Vec::with_capacity(self.head.len() + 256 + body.len());
        write_request(&self.head, &edits, &mut out);
        out.extend_from_slice(body);
        out
    }

    /// Response header operations for a response from `cluster`:
    /// destination level, then route level (Envoy's order: the most
    /// specific first).
    pub(crate) fn response_ops<'p>(&self, plan: &'p Plan) -> Vec<&'p HeaderOps> {
        let mut ops = Vec::with_capacity(2);
        let Some(route) = self.http_route(plan) else {
            return ops;
        };
        if let (RouteAction::Forward(f), Some(cluster)) = (&route.action, self.cluster) {
            let clusters = &plan.table.route(f.route).clusters;
            if let Some(d) = clusters
                .iter()
                .position(|c| c.cluster == cluster)
                .and_then(|i| f.destinations.get(i))
            {
                ops.push(&d.response);
            }
        }
        ops.push(&route.headers.response);
        ops
    }

    /// The hash of the request's `consistentHash` key, when it
    /// carries it: a header's value, a cookie's, a query parameter's.
    pub(crate) fn hash(&self, key: &RequestHashKey) -> Option<u64> {
        let head = &self.head;
        let value: Vec<u8> = match key {
            RequestHashKey::Header(name) => head.header(name)?.into_owned(),
            RequestHashKey::Cookie(name) => cookie(head, name)?.to_vec(),
            RequestHashKey::Query(name) => query_value(head.query()?, name)?.as_bytes().to_vec(),
        };
        Some(fnv1a_bytes(&value))
    }

    /// The route's retry policy (Istio's default when the rule has none).
    pub(crate) fn retry_policy<'p>(&self, plan: &'p Plan) -> Option<&'p RetryPolicy> {
        match &self.http_route(plan)?.action {
            RouteAction::Forward(f) => Some(&f.retries),
            _ => None,
        }
    }

    /// Whether a failed connect may be tried again (on another endpoint):
    /// retries left, and the policy retries connect failures (`5xx` and
    /// `reset` include them, as in Envoy).
    pub(crate) fn may_retry_connect(&self, plan: &Plan) -> bool {
        self.retry_policy(plan).is_some_and(|p| {
            self.retries < p.attempts && (p.on.connect_failure || p.on.server_error || p.on.reset)
        })
    }

    /// Whether the request is being sent again.
    pub(crate) fn is_retry(&self) -> bool {
        self.retries > 0 || self.retried_on_fresh
    }

    /// Whether a reset before any response byte (on a new connection, or
    /// after the keep-alive race's one retry) is retried: `retryOn` names
    /// `reset` or `5xx`, retries are left, and the whole request is held.
    pub(crate) fn may_retry_reset(&self, plan: &Plan) -> bool {
        self.replay.is_some()
            && self
                .retry_policy(plan)
                .is_some_and(|p| self.retries < p.attempts && (p.on.reset || p.on.server_error))
    }

    /// Whether a response with `status` is retried: the policy names it,
    /// retries are left, and the whole request is still held.
    pub(crate) fn may_retry_status(&self, plan: &Plan, status: u16) -> bool {
        if self.replay.is_none() {
            return false;
        }
        self.retry_policy(plan).is_some_and(|p| {
            let on = &p.on;
            self.retries < p.attempts
                && ((on.server_error && status >= 500)
                    || (on.gateway_error && (502..=504).contains(&status))
                    || on.status_codes.contains(&status))
        })
    }

    /// The route's `timeout`, if any.
    pub(crate) fn timeout(&self, plan: &Plan) -> Option<Duration> {
        match &self.http_route(plan)?.action {
            RouteAction::Forward(f) => f.timeout,
            _ => None,
        }
    }

    /// Whether the client asked to keep the connection open.
    pub(crate) fn keep_alive(&self) -> bool {
        self.head.keep_alive()
    }

    pub(crate) fn version(&self) -> Version {
        self.head.version()
    }

    /// How the request's body is framed, as its head says: none, a length,
    /// or chunked.
    pub(crate) fn framing(&self) -> BodyFraming {
        self.head.framing()
    }

    /// The local reply bytes for `answer` (`close`: the connection closes
    /// after it).
    pub(crate) fn local_reply(&mut self, answer: &LocalAnswer, close: bool) -> Vec<u8> {
        self.status = answer.status;
        self.flags = answer.flags;
        self.details = answer.details;
        let mut out = Vec::with_capacity(256);
        let body = answer.body.as_deref();
        let head_request = self.head.is_head_method();
        local_reply(
            answer.status,
            &Reply {
                version: self.head.version(),
                keep_alive: !close,
                body,
                content_type: body.filter(|b| !b.is_empty()).map(|_| "text/plain"),
                location: answer.location.as_deref(),
                extra: &[],
                head_request,
            },
            &mut out,
        );
        let body_len = body.map_or_else(|| default_body(answer.status).len(), <[u8]>::len);
        self.body_bytes[1] = if head_request { 0 } else { body_len as u64 };
        self.wire_bytes[1] = out.len() as u64;
        out
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'h>(head: &'h RequestHead, name: &str) -> Option<&'h [u8]> {
    head.fields()
        .values("cookie")
        .flat_map(|v| v.split(|b| *b == b';'))
        .map(<[u8]>::trim_ascii)
        .find_map(|pair| {
            let eq = pair.iter().position(|b| *b == b'=')?;
            (&pair[..eq] == name.as_bytes()).then(|| &pair[eq + 1..])
        })
}

/// The value of query parameter `name` (`?key` alone: empty).
fn query_value<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// The reply to a head ringway refused (no parsed head: HTTP/1.1, and
/// the connection closes after it).
pub(crate) fn bare_reply(answer: &LocalAnswer) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    local_reply(
        answer.status,
        &Reply {
            version: Version::Http11,
            keep_alive: false,
            body: None,
            content_type: None,
            location: None,
            extra: &[],
            head_request: false,
        },
        &mut out,
    );
    out
}

/// The (vhost, route) a request matches.
fn find(http: &HttpRouting, head: &RequestHead) -> Option<(usize, usize)> {
    let vhost = http.vhost(head.authority())?;
    let v = http.vhosts.iter().position(|x| std::ptr::eq(x, vhost))?;
    let r = vhost
        .routes
        .iter()
        .position(|r| matches(&r.matcher, head))?;
    Some((v, r))
}

fn matches(m: &RouteMatch, head: &RequestHead) -> bool {
    m.matches(head)
}

/// A UUIDv4 from 128 random bits, as Envoy's request-id extension writes
/// it.
fn request_id([a, b]: [u64; 2]) -> String {
    let a = (a & 0xFFFF_FFFF_FFFF_0FFF) | 0x0000_0000_0000_4000;
    let b = (b & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xFFFF,
        a & 0xFFFF,
        b >> 48,
        b & 0xFFFF_FFFF_FFFF
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_version_4_uuids() {
        let id = request_id([0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210]);
        assert_eq!(id, "01234567-89ab-4def-bedc-ba9876543210");
        assert_eq!(id.len(), 36);
    }
}
