//! One http rule → what the data plane runs: its match blocks as
//! [`RouteMatch`]es (regexes compiled here, once) and its action (forward,
//! redirect, direct response) with header operations, as istiod's
//! `TranslateRoute` builds them. Every mistake names its field.

use std::sync::Arc;

use crate::config::Resource;
use crate::config::http::{HeaderOperations, HeadersSpec, StringMatchSpec};
use crate::config::manifest::{HttpMatch, VirtualServiceSpec};
use crate::diag::Severity;

use super::delegate::EffectiveRule;
use super::http_actions::{compile_direct, compile_redirect, compile_retries, compile_rewrite};
use super::{Compiler, Section};
use crate::routing::http::{
    Forward, HeaderMatch, HeaderOps, Headers, QueryMatch, RouteAction, RouteMatch, StringMatch,
};
use crate::routing::policy::port_number;

/// The compiled size limit of one regex (the `regex` crate's default is 10 MiB).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

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
        if !one_action(vs, &path, rule, &mut push) {
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

pub(super) type Push<'a> = dyn FnMut(crate::diag::Diagnostic) + 'a;

/// Whether a rule sets exactly one of route, redirect, directResponse
/// (a delegate was merged away before); an error when not.
fn one_action(
    vs: &Resource<VirtualServiceSpec>,
    path: &str,
    rule: &crate::config::manifest::HttpRoute,
    push: &mut Push<'_>,
) -> bool {
    let actions = [
        ("route", !rule.route.is_empty()),
        ("redirect", rule.redirect.is_some()),
        ("directResponse", rule.direct_response.is_some()),
    ];
    let set: Vec<&str> = actions.iter().filter(|a| a.1).map(|a| a.0).collect();
    if set.len() != 1 {
        push(vs.diag(
                Severity::Error,
                path,
                format!(
                    "an http rule needs exactly one of route, redirect, directResponse or delegate (it has {})",
                    if set.is_empty() { "none".to_owned() } else { set.join(", ") }
                ),
            ));
        return false;
    }
    true
}

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
    let headers = header_matches(vs, path, mb, push, &mut ok);
    let mut query_params = Vec::new();
    for (key, spec) in &mb.query_params {
        match presence_or_match(vs, &format!("{path}.queryParams.{key}"), spec, push) {
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

/// The `headers` and `withoutHeaders` conditions of a match block; `ok`
/// turns false when one is invalid.
fn header_matches(
    vs: &Resource<VirtualServiceSpec>,
    path: &str,
    mb: &HttpMatch,
    push: &mut Push<'_>,
    ok: &mut bool,
) -> Vec<HeaderMatch> {
    let mut headers = Vec::new();
    let conditions = mb
        .headers
        .iter()
        .map(|(k, s)| (k, s, false, "headers"))
        .chain(
            mb.without_headers
                .iter()
                .map(|(k, s)| (k, s, true, "withoutHeaders")),
        );
    for (key, spec, invert, section) in conditions {
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
        match presence_or_match(vs, &fpath, spec, push) {
            Ok(value) => headers.push(HeaderMatch {
                name,
                value,
                invert,
            }),
            Err(()) => *ok = false,
        }
    }
    headers
}

/// A header or query parameter condition: `Ok(None)` is a presence check,
/// written `{}` or `regex: "*"` (istiod's `canBeConvertedToPresentMatch`:
/// `*` is not RE2, it means "any value").
fn presence_or_match(
    vs: &Resource<VirtualServiceSpec>,
    path: &str,
    spec: &StringMatchSpec,
    push: &mut Push<'_>,
) -> Result<Option<StringMatch>, ()> {
    if spec.regex.as_deref() == Some("*") && spec.exact.is_none() && spec.prefix.is_none() {
        return Ok(None);
    }
    string_match(vs, path, spec, push)
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

pub(super) fn build_regex(re: &str) -> Result<Arc<regex::Regex>, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regexes_are_anchored_and_bad_ones_explained() {
        let r = anchored_regex(r"\d+").expect("valid");
        assert!(r.is_match("123") && !r.is_match("a123"));
        let err = anchored_regex("(").expect_err("invalid");
        assert!(err.contains("unclosed group"), "{err}");
    }
}
