//! What an HTTP request reports when it ends ([`Io::Report`]): Istio's
//! request metrics under the labels of the endpoint it reached (or
//! `unknown` when it was never routed), one access-log line in Istio's
//! format, and a debug line; and what a refused head counts
//! ([`Io::Reject`]).
//!
//! [`Io::Report`]: super::io::Io::Report
//! [`Io::Reject`]: super::io::Io::Reject
#![forbid(unsafe_code)]

use crate::accesslog::HttpRecord;
use crate::http1::head::detail;
use crate::metrics::worker::{LabelKey, Protocol, add};
use crate::metrics::{HttpSample, IstioLabels, Reject};

use crate::routing::table::ClusterId;

use super::context::Ctx;
use super::http::Request;
use super::plan::Plan;
use super::slot::Slot;

/// Count and log the request the slot's session just finished.
pub(super) fn report(ctx: &mut Ctx, slot: &mut Slot) {
    let Some(req) = slot.session.take_report() else {
        return;
    };
    // The endpoint it reached: the last one it tried.
    let endpoint = req.cluster.zip(req.tried.last().copied());
    count(ctx, &slot.plan, &req, endpoint);
    if ctx.access_log.enabled() {
        log(ctx, slot, &req, endpoint);
    }
    tracing::debug!(
        worker = ctx.id,
        downstream = %slot.peer,
        method = req.head.method(),
        path = req.head.target(),
        status = req.status,
        flags = req.flags,
        details = req.details,
        cluster = cluster_name_of(&slot.plan, req.cluster).unwrap_or("-"),
        duration_ms = req.started.elapsed().as_millis() as u64,
        "request"
    );
}

/// Istio's request metrics under the labels of the endpoint it reached
/// (`unknown` when never routed), its retries, and what its response says
/// of the endpoint's health.
fn count(ctx: &mut Ctx, plan: &Plan, req: &Request, endpoint: Option<(ClusterId, usize)>) {
    let target = endpoint.and_then(|(c, e)| plan.endpoints[c.0 as usize].get(e));
    let key = LabelKey {
        protocol: Protocol::Http,
        generation: plan.table.generation,
        cluster: req.cluster.map(|c| c.0),
        endpoint: target.map(|t| t.source),
        response_flags: req.flags,
        response_code: req.status,
    };
    let labels = || match req.cluster {
        Some(c) => {
            let c = plan.table.cluster(c);
            let e = target.and_then(|t| c.endpoints.get(t.source));
            IstioLabels::new(c, e, req.flags).for_request(req.status)
        }
        None => IstioLabels::unrouted(req.flags).for_request(req.status),
    };
    let sample = HttpSample {
        duration: req.started.elapsed(),
        request_bytes: req.wire_bytes[0],
        response_bytes: req.wire_bytes[1],
    };
    ctx.metrics.http_request(key, labels, &sample);
    // The keep-alive race's retry counts as one.
    let retries = req.retries + u32::from(req.retried_on_fresh);
    if let (Some(name), true) = (cluster_name_of(plan, req.cluster), retries > 0) {
        add(&ctx.metrics.cluster(name).retries, u64::from(retries));
    }
    if let (Some(target), "via_upstream") = (endpoint, req.details) {
        outlier(ctx, plan, target, req.status);
    }
}

/// One access-log line in Istio's format.
fn log(ctx: &mut Ctx, slot: &Slot, req: &Request, endpoint: Option<(ClusterId, usize)>) {
    let plan = &slot.plan;
    let upstream_host = endpoint
        .and_then(|(c, e)| plan.endpoints[c.0 as usize].get(e))
        .map(|t| t.address);
    let text = |name: &str| {
        req.head
            .fields()
            .first(name)
            .and_then(|v| std::str::from_utf8(v).ok())
    };
    ctx.access_log.log_http(&HttpRecord {
        start_time: req.started_at,
        duration: req.started.elapsed(),
        method: req.head.method(),
        path: req.head.target(),
        protocol: req.version().as_str(),
        bytes_received: req.body_bytes[0],
        bytes_sent: req.body_bytes[1],
        upstream_service_time: req.upstream_time,
        x_forwarded_for: text("x-forwarded-for"),
        user_agent: text("user-agent"),
        request_id: Some(req.id.as_str()),
        authority: req.head.authority(),
        upstream_host,
        upstream_cluster: cluster_name_of(plan, req.cluster),
        route_name: req
            .http_route(plan)
            .map(|r| r.name.as_str())
            .filter(|n| !n.is_empty()),
        ..record(slot, req.status, req.flags, req.details)
    });
}

/// The access-log record of a response sent to the slot's client, with
/// the connection's addresses and generation and no request (a refused
/// head has none): [`log`] adds the request's fields.
fn record<'a>(slot: &Slot, status: u16, flags: &'static str, details: &'a str) -> HttpRecord<'a> {
    HttpRecord {
        start_time: std::time::SystemTime::now(),
        duration: std::time::Duration::ZERO,
        method: "",
        path: "",
        protocol: "HTTP/1.1",
        response_code: status,
        response_flags: flags,
        response_code_details: details,
        bytes_received: 0,
        bytes_sent: 0,
        upstream_service_time: None,
        x_forwarded_for: None,
        user_agent: None,
        request_id: None,
        authority: None,
        upstream_host: None,
        upstream_cluster: None,
        upstream_local_address: None,
        downstream_local_address: slot.local_address(),
        downstream_remote_address: slot.peer,
        route_name: None,
        generation: slot.plan.table.generation,
    }
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
        add(
            &ctx.metrics
                .cluster(&plan.table.cluster(cluster).name)
                .ejections,
            1,
        );
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
        (_, detail::UPGRADE_FAILED) => Reject::UpgradeRefused,
        (_, detail::CONNECT) => Reject::Connect,
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
    // Counted and logged as a request, as Envoy does for the local reply
    // to a head it cannot parse: flag `DPE`, no destination.
    let flags = "DPE";
    let plan = &slot.plan;
    let key = LabelKey {
        protocol: Protocol::Http,
        generation: plan.table.generation,
        cluster: None,
        endpoint: None,
        response_flags: flags,
        response_code: status,
    };
    let body = crate::http1::reply::default_body(status).len() as u64;
    let sample = HttpSample {
        duration: std::time::Duration::ZERO,
        request_bytes: 0,
        response_bytes: body,
    };
    let labels = || IstioLabels::unrouted(flags).for_request(status);
    ctx.metrics.http_request(key, labels, &sample);
    if ctx.access_log.enabled() {
        ctx.access_log.log_http(&HttpRecord {
            bytes_sent: body,
            ..record(slot, status, flags, detail)
        });
    }
    tracing::debug!(worker = ctx.id, downstream = %slot.peer, status, detail, "request refused");
}
