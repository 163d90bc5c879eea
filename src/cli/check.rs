//! `ringway check`: the compiled table as a readable report (or JSON), then
//! every diagnostic, then a one-line verdict.

use std::fmt::Write as _;

use serde::Serialize;

use crate::diag::{Diagnostic, Diagnostics, Severity};
use crate::pipeline::Build;
use crate::routing::RouteTable;
use crate::routing::http::{PathRedirect, RouteAction, RouteMatch, StringMatch, UriRewrite};
use crate::routing::table::{ListenerRouting, RouteId, format_duration};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// `check` of a whole configuration: one that has Gateways and opens no
/// listener serves nothing, which is an error here (`run` logs it and keeps
/// running, as Istio does). `--partial` checks a part of a configuration,
/// where that is expected.
pub fn require_listeners(build: &mut Build) {
    if build.serves_nothing() {
        build.diagnostics.push(Diagnostic::error(format!(
            "the configuration has {} Gateway(s) and opens no listener: it would serve nothing \
             (see the warnings above for each server); pass --partial to check a part of a configuration",
            build.gateways
        )));
        build.table = None;
    }
}

/// Exit status of `check`: 0 valid, 1 invalid (or warnings with `--strict`).
pub fn exit_code(build: &Build, strict: bool) -> i32 {
    let failed =
        build.table.is_none() || (strict && build.diagnostics.count(Severity::Warning) > 0);
    i32::from(failed)
}

pub fn render(build: &Build, output: Output, strict: bool) -> String {
    match output {
        Output::Text => render_text(build, strict),
        Output::Json => render_json(build, strict),
    }
}

#[derive(Serialize)]
struct JsonReport<'a> {
    valid: bool,
    errors: usize,
    warnings: usize,
    table: Option<&'a RouteTable>,
    diagnostics: &'a Diagnostics,
}

fn render_json(build: &Build, strict: bool) -> String {
    let report = JsonReport {
        valid: exit_code(build, strict) == 0,
        errors: build.diagnostics.count(Severity::Error),
        warnings: build.diagnostics.count(Severity::Warning),
        table: build.table.as_ref(),
        diagnostics: &build.diagnostics,
    };
    let mut text =
        serde_json::to_string_pretty(&report).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}

fn render_text(build: &Build, strict: bool) -> String {
    let mut out = String::new();
    if let Some(table) = &build.table {
        let http = table
            .listeners
            .iter()
            .filter(|l| matches!(l.routing, ListenerRouting::Http { .. }))
            .count();
        if http < table.listeners.len() || http == 0 {
            listeners_table(table, &mut out);
            out.push('\n');
        }
        if http > 0 {
            http_table(table, &mut out);
            out.push('\n');
        }
        clusters_table(table, &mut out);
    }
    if !build.diagnostics.0.is_empty() {
        if build.table.is_some() {
            out.push('\n');
        }
        for d in build.diagnostics.iter() {
            let _ = writeln!(out, "{}: {d}", d.severity);
        }
    }
    let errors = build.diagnostics.count(Severity::Error);
    let warnings = build.diagnostics.count(Severity::Warning);
    let verdict = match &build.table {
        Some(t) if exit_code(build, strict) == 0 => format!(
            "valid: {} listener(s), {} route(s), {} cluster(s), {} endpoint(s); {warnings} warning(s)",
            t.listeners.len(),
            t.routes.len(),
            t.clusters.len(),
            t.clusters.iter().map(|c| c.endpoints.len()).sum::<usize>()
        ),
        Some(_) => format!("invalid: {warnings} warning(s) with --strict"),
        None => format!(
            "invalid: {errors} error(s), {warnings} warning(s); the configuration is rejected"
        ),
    };
    let _ = writeln!(out, "\n{verdict}");
    out
}

fn listeners_table(table: &RouteTable, out: &mut String) {
    let mut rows = vec![row([
        "LISTENER", "PROTOCOL", "SNI", "ROUTE", "WEIGHT", "CLUSTER", "TIMEOUTS",
    ])];
    for l in &table.listeners {
        let entries: Vec<(String, RouteId)> = match &l.routing {
            ListenerRouting::Tcp { route } => vec![("-".to_owned(), *route)],
            ListenerRouting::TlsPassthrough { sni } => sni
                .exact
                .iter()
                .map(|(name, r)| (name.clone(), *r))
                .chain(
                    sni.wildcard
                        .iter()
                        .map(|(suffix, r)| (format!("*{suffix}"), *r)),
                )
                .chain(sni.catch_all.map(|r| ("*".to_owned(), r)))
                .collect(),
            // Printed by the HTTP table.
            ListenerRouting::Http { .. } => Vec::new(),
        };
        let protocol = match l.routing {
            ListenerRouting::Tcp { .. } => "tcp",
            ListenerRouting::TlsPassthrough { .. } => "tls-passthrough",
            ListenerRouting::Http { .. } => "http",
        };
        let mut first_row = true;
        for (sni, route_id) in entries {
            let route = table.route(route_id);
            let shares = shares(
                &route
                    .clusters
                    .iter()
                    .map(|c| u64::from(c.weight))
                    .collect::<Vec<_>>(),
            );
            let timeouts = format!(
                "idle {}, max {}",
                route.idle_timeout.map_or("off".to_owned(), format_duration),
                route
                    .max_connection_duration
                    .map_or("none".to_owned(), format_duration)
            );
            for (i, wc) in route.clusters.iter().enumerate() {
                let share = shares[i].clone();
                rows.push(row([
                    if first_row {
                        l.address.to_string()
                    } else {
                        String::new()
                    },
                    if first_row {
                        protocol.to_owned()
                    } else {
                        String::new()
                    },
                    if i == 0 { sni.clone() } else { String::new() },
                    if i == 0 {
                        route.name.clone()
                    } else {
                        String::new()
                    },
                    share,
                    table.cluster(wc.cluster).name.clone(),
                    if i == 0 {
                        timeouts.clone()
                    } else {
                        String::new()
                    },
                ]));
                first_row = false;
            }
        }
    }
    columns(&rows, out);
}

/// HTTP listeners → virtual hosts → routes: match, action, and for a
/// forward its weighted clusters.
fn http_table(table: &RouteTable, out: &mut String) {
    let mut rows = vec![row([
        "HTTP LISTENER",
        "VHOST",
        "ROUTE",
        "MATCH",
        "ACTION",
        "WEIGHT",
        "CLUSTER",
    ])];
    for l in &table.listeners {
        let ListenerRouting::Http { http } = &l.routing else {
            continue;
        };
        let mut listener = format!("{} {}", l.address, http.name);
        for vhost in &http.vhosts {
            let mut vhost_name = vhost.name.clone();
            if vhost.routes.is_empty() {
                rows.push(row([
                    std::mem::take(&mut listener),
                    std::mem::take(&mut vhost_name),
                    "-".to_owned(),
                    "*".to_owned(),
                    "404 NR".to_owned(),
                    String::new(),
                    String::new(),
                ]));
            }
            for route in &vhost.routes {
                let name = if route.name.is_empty() {
                    &route.source
                } else {
                    &route.name
                };
                let lead = [
                    std::mem::take(&mut listener),
                    std::mem::take(&mut vhost_name),
                    name.clone(),
                    match_summary(&route.matcher),
                    action_summary(&route.action),
                ];
                let clusters = match &route.action {
                    RouteAction::Forward(f) => {
                        let r = table.route(f.route);
                        let weights: Vec<u64> =
                            r.clusters.iter().map(|c| u64::from(c.weight)).collect();
                        shares(&weights)
                            .into_iter()
                            .zip(&r.clusters)
                            .map(|(share, wc)| (share, table.cluster(wc.cluster).name.clone()))
                            .collect()
                    }
                    _ => vec![(String::new(), String::new())],
                };
                for (i, (share, cluster)) in clusters.into_iter().enumerate() {
                    let [a, b, c, d, e] = if i == 0 {
                        lead.clone()
                    } else {
                        Default::default()
                    };
                    rows.push(row([a, b, c, d, e, share, cluster]));
                }
            }
        }
    }
    columns(&rows, out);
}

/// `uri prefix /api, method exact GET, header x-user exact jason`; `*`
/// for a block that matches everything.
fn match_summary(m: &RouteMatch) -> String {
    let sm = |m: &StringMatch| match m {
        StringMatch::Exact(s) => format!("exact {s}"),
        StringMatch::Prefix(s) => format!("prefix {s}"),
        StringMatch::Regex(r) => {
            let re = r.as_str();
            format!(
                "regex {}",
                re.strip_prefix("^(?:")
                    .and_then(|r| r.strip_suffix(")$"))
                    .unwrap_or(re)
            )
        }
    };
    let mut parts: Vec<String> = Vec::new();
    for (field, value) in [
        ("uri", &m.uri),
        ("method", &m.method),
        ("authority", &m.authority),
        ("scheme", &m.scheme),
    ] {
        if let Some(v) = value {
            let case = if field == "uri" && m.ignore_uri_case {
                " (any case)"
            } else {
                ""
            };
            parts.push(format!("{field} {}{case}", sm(v)));
        }
    }
    for h in &m.headers {
        let not = if h.invert { "without " } else { "" };
        let value = h.value.as_ref().map_or_else(|| "present".to_owned(), sm);
        parts.push(format!("{not}header {} {value}", h.name));
    }
    for q in &m.query_params {
        let value = q.value.as_ref().map_or_else(|| "present".to_owned(), sm);
        parts.push(format!("query {} {value}", q.name));
    }
    if parts.is_empty() {
        "*".to_owned()
    } else {
        parts.join(", ")
    }
}

/// `forward, timeout 5s, retries 2`; `redirect 301 https`; `direct 503`.
fn action_summary(action: &RouteAction) -> String {
    match action {
        RouteAction::Forward(f) => {
            let mut parts = vec!["forward".to_owned()];
            if let Some(uri) = f.rewrite.as_ref().and_then(|r| r.uri.as_ref()) {
                parts.push(match uri {
                    UriRewrite::Prefix(p) => format!("rewrite {p}"),
                    UriRewrite::Regex {
                        pattern,
                        substitution,
                    } => {
                        format!("rewrite {} -> {substitution}", pattern.as_str())
                    }
                });
            }
            if let Some(a) = f.rewrite.as_ref().and_then(|r| r.authority.as_ref()) {
                parts.push(format!("authority {a}"));
            }
            if let Some(t) = f.timeout {
                parts.push(format!("timeout {}", format_duration(t)));
            }
            parts.push(format!("retries {}", f.retries.attempts));
            parts.join(", ")
        }
        RouteAction::Redirect(r) => {
            let mut parts = vec![format!("redirect {}", r.code)];
            parts.extend(r.scheme.as_ref().map(|s| format!("scheme {s}")));
            parts.extend(r.authority.as_ref().map(|a| format!("authority {a}")));
            parts.extend(r.path.as_ref().map(|p| match p {
                PathRedirect::Full(u) => format!("uri {u}"),
                PathRedirect::Prefix(u) => format!("prefix {u}"),
            }));
            parts.join(", ")
        }
        RouteAction::Direct(d) => format!(
            "direct {}{}",
            d.status,
            d.body
                .as_ref()
                .map_or_else(String::new, |b| format!(" ({} bytes)", b.len()))
        ),
    }
}

/// A route's weights as percentages that add up to 100: whole when every
/// share is exact (80% / 20%), else to a tenth, the tenths left by rounding
/// down going to the largest remainders (1:2 → 33.3% / 66.7%,
/// 1:1:1 → 33.4% / 33.3% / 33.3%).
fn shares(weights: &[u64]) -> Vec<String> {
    let total: u64 = weights.iter().sum();
    if total == 0 {
        return weights.iter().map(|_| "0%".to_owned()).collect();
    }
    if weights.iter().all(|w| (w * 100) % total == 0) {
        return weights
            .iter()
            .map(|w| format!("{}%", w * 100 / total))
            .collect();
    }
    let mut tenths: Vec<u64> = weights.iter().map(|w| w * 1000 / total).collect();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse((weights[i] * 1000) % total));
    let missing = 1000 - tenths.iter().sum::<u64>();
    for &i in order.iter().take(usize::try_from(missing).unwrap_or(0)) {
        tenths[i] += 1;
    }
    tenths
        .iter()
        .map(|t| format!("{}.{}%", t / 10, t % 10))
        .collect()
}

fn clusters_table(table: &RouteTable, out: &mut String) {
    let mut rows = vec![row([
        "CLUSTER", "LB", "CONNECT", "MAX CONN", "ENDPOINT", "WEIGHT", "LABELS",
    ])];
    for c in &table.clusters {
        let p = &c.policy;
        let lb = serde_json::to_value(p.load_balancer)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        for (i, e) in c.endpoints.iter().enumerate() {
            let labels: Vec<String> = e.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            rows.push(row([
                if i == 0 {
                    c.name.clone()
                } else {
                    String::new()
                },
                if i == 0 { lb.clone() } else { String::new() },
                if i == 0 {
                    format_duration(p.connect_timeout)
                } else {
                    String::new()
                },
                if i == 0 {
                    if p.max_connections == u32::MAX {
                        "-".to_owned()
                    } else {
                        p.max_connections.to_string()
                    }
                } else {
                    String::new()
                },
                e.to_string(),
                e.weight.to_string(),
                labels.join(","),
            ]));
        }
    }
    columns(&rows, out);
}

fn row<const N: usize>(cells: [impl Into<String>; N]) -> Vec<String> {
    cells.into_iter().map(Into::into).collect()
}

fn columns(rows: &[Vec<String>], out: &mut String) {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[i]);
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

#[cfg(test)]
mod share_tests {
    use super::shares;

    #[test]
    fn shares_are_exact_or_to_a_tenth_and_add_up_to_100() {
        struct Case {
            weights: &'static [u64],
            shown: &'static [&'static str],
        }
        for case in [
            Case {
                weights: &[80, 20],
                shown: &["80%", "20%"],
            },
            Case {
                weights: &[1, 2],
                shown: &["33.3%", "66.7%"],
            },
            Case {
                weights: &[1, 1, 1],
                shown: &["33.4%", "33.3%", "33.3%"],
            },
            Case {
                weights: &[90, 10],
                shown: &["90%", "10%"],
            },
            Case {
                weights: &[0],
                shown: &["0%"],
            },
        ] {
            assert_eq!(shares(case.weights), case.shown, "{:?}", case.weights);
        }
    }
}
