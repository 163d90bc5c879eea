//! What an HTTP request reports when it ends ([`Io::Report`]): Istio's
//! request metrics under the labels of the endpoint it reached (or
//! `unknown` when it was never routed), one access-log line in Istio's
//! format, and a debug line; and what a refused head counts
//! ([`Io::Reject`]).
//!
//! [`Io::Report`]: super::io::Io::Report
//! [`Io::Reject`]: super::io::Io::Reject
#![forbid(unsafe_code)]

use socket2::SockRef;

use crate::accesslog::HttpRecord;
use crate::http1::head::detail;
use crate::metrics::worker::{LabelKey, Protocol, add};
use crate::metrics::{HttpSample, IstioLabels, Reject};

use crate::routing::table::ClusterId;

use super::context::Ctx;
use super::plan::Plan;
use super::slot::Slot;

/// Count and log the request the slot's session just finished.
pub(super) fn report(ctx: &mut Ctx, slot: &mut Slot) {
    let Some(req) = slot.session.take_report() else {
        return;
    };
    let plan = &slot.plan;
    let cluster = req.cluster;
    // The endpoint it reached: the upstream the slot holds for it, if
    // the request was still on it.
    let endpoint = slot
        .upstream
        .as_ref()
        .filter(|u| Some(u.cluster) == cluster)
        .map(|u| u.endpoint)
        .or_else(|| req.tried.last().copied());
    let table_endpoint =
        cluster.and_then(|c| endpoint.and_then(|e| plan.endpoints[c.0 as usize].get(e)));
    let key = LabelKey {
        protocol: Protocol::Http,
        generation: plan.table.generation,
        cluster: cluster.map(|c| c.0),
        endpoint: table_endpoint.map(|t| t.source),
        response_flags: req.flags,
        response_code: req.status,
    };
    let labels = || match cluster {
        Some(c) => {
            let c = plan.table.cluster(c);
            let e = table_endpoint.and_then(|t| c.endpoints.get(t.source));
            IstioLabels::new(c, e, req.flags).for_request(req.status)
        }
        None => IstioLabels::unrouted(req.flags).for_request(req.status),
    };
    if let (Some(name), true) = (cluster_name_of(plan, cluster), req.retries > 0) {
        add(&ctx.metrics.cluster(name).retries, u64::from(req.retries));
    }
    if let (Some(c), Some(e), "via_upstream") = (cluster, endpoint, req.details) {
        outlier(ctx, plan, (c, e), req.status);
    }
    let duration = req.started.elapsed();
    ctx.metrics.http_request(
        key,
        labels,
        &HttpSample {
            duration,
            request_bytes: req.wire_bytes[0],
            response_bytes: req.wire_bytes[1],
        },
    );
    let upstream_host = cluster
        .zip(endpoint)
        .and_then(|(c, e)| plan.endpoints[c.0 as usize].get(e))
        .map(|t| t.address);
    let route_name = req.http_route(plan).map(|r| r.name.as_str());
    let cluster_name = cluster.map(|c| plan.table.cluster(c).name.as_str());
    if ctx.access_log.enabled() {
        let local = SockRef::from(&slot.downstream)
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .unwrap_or(slot.peer);
        let text = |name: &str| {
            req.head
                .first_value(name)
                .and_then(|v| std::str::from_utf8(v).ok())
        };
        ctx.access_log.log_http(&HttpRecord {
            start_time: req.started_at,
            duration,
            method: req.head.method(),
            path: req.head.target(),
            protocol: req.version().as_str(),
            response_code: req.status,
            response_flags: req.flags,
            response_code_details: req.details,
            bytes_received: req.body_bytes[0],
            bytes_sent: req.body_bytes[1],
            upstream_service_time: req.upstream_time,
            x_forwarded_for: text("x-forwarded-for"),
            user_agent: text("user-agent"),
            request_id: Some(req.id.as_str()),
            authority: req.head.authority(),
            upstream_host,
            upstream_cluster: cluster_name,
            upstream_local_address: None,
            downstream_local_address: local,
            downstream_remote_address: slot.peer,
            route_name: route_name.filter(|n| !n.is_empty()),
            generation: plan.table.generation,
        });
    }
    tracing::debug!(
        worker = ctx.id,
        downstream = %slot.peer,
        method = req.head.method(),
        path = req.head.target(),
        status = req.status,
        flags = req.flags,
        details = req.details,
        cluster = cluster_name.unwrap_or("-"),
        upstream = ?upstream_host,
        duration_ms = duration.as_millis() as u64,
        "request"
    );
}

/// Passive health from responses: a 5xx (or, when only
/// `consecutiveGatewayErrors` is set, a 502, 503 or 504) continues the
/// endpoint's error streak, as a failed connect does; any other response
/// ends it.
fn outlier(ctx: &mut Ctx, plan: &Plan, (cluster, endpoint): (ClusterId, usize), status: u16) {
    let Some(policy) = plan.table.cluster(cluster).policy.outlier_detection else {
        return;
    };
    let counts = if policy.consecutive_5xx.is_some() {
        status >= 500
    } else {
        (502..=504).contains(&status)
    };
    if !counts {
        ctx.balancer.connect_succeeded(plan, cluster, endpoint);
        return;
    }
    let now = std::time::Instant::now();
    if ctx.balancer.connect_failed(plan, cluster, endpoint, now) {
        add(&ctx.metrics.cluster(&plan.table.cluster(cluster).name).ejections, 1);
        ctx.status.ejected(ctx.balancer.ejections(now));
    }
}

fn cluster_name_of(plan: &Plan, cluster: Option<ClusterId>) -> Option<&str> {
    cluster.map(|c| plan.table.cluster(c).name.as_str())
}

/// A request head ringway refused.
pub(super) fn reject(ctx: &mut Ctx, slot: &Slot, status: u16, detail: &'static str) {
    let reason = match (status, detail) {
        (408, _) => Reject::HeaderTimeout,
        (431, _) => Reject::HeadTooLarge,
        (501, _) => Reject::NotImplemented,
        (_, detail::H2_PREFACE) => Reject::H2Preface,
        (505, _) => Reject::BadVersion,
        (_, detail::MISSING_HOST) => Reject::MissingHost,
        (
            _,
            detail::CONTENT_LENGTH_AND_CHUNKED
            | detail::MULTIPLE_CONTENT_LENGTH
            | detail::INVALID_CONTENT_LENGTH
            | detail::MALFORMED_TRANSFER_ENCODING
            | detail::TRANSFER_ENCODING_ON_HTTP10,
        ) => Reject::BadFraming,
        (_, d) if d.contains("chunk") => Reject::BadFraming,
        _ => Reject::Malformed,
    };
    ctx.metrics.http_reject(reason);
    tracing::debug!(worker = ctx.id, downstream = %slot.peer, status, detail, "request refused");
}
