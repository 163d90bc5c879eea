//! `http[].delegate`: istiod's `mergeVirtualServicesIfNeeded`. A root rule
//! that delegates hands its match to every rule of the delegate
//! VirtualService (found by name, in the root's namespace unless the
//! delegate names one); each delegate rule's match must fall inside one of
//! the root's matches, or that rule is dropped (Istio drops it silently;
//! ringway warns). A delegate binds to no gateway by itself.

use std::collections::BTreeMap;
use std::rc::Rc;

use crate::config::http::StringMatchSpec;
use crate::config::manifest::{HttpMatch, HttpRoute};
use crate::diag::Severity;

use super::Compiler;

/// One http rule as it applies to a root VirtualService: its own rule, or
/// a delegate's rule merged with the root rule that delegates to it.
#[derive(Debug, Clone)]
pub(super) struct EffectiveRule {
    /// The VirtualService that wrote the rule (the delegate, for a merged
    /// rule): its destinations and diagnostics belong to it.
    pub owner: usize,
    /// The rule's index in the owner's `http`.
    pub index: usize,
    pub rule: HttpRoute,
    /// For each match block of `rule`: the VirtualService and path that
    /// wrote it.
    pub match_sources: Vec<(usize, String)>,
}

impl Compiler<'_> {
    /// The effective http rules of every VirtualService (empty for a
    /// delegate, which applies only through its root).
    pub(super) fn merge_delegates(&mut self) -> Vec<Rc<Vec<EffectiveRule>>> {
        let m = self.m;
        let mut all = Vec::with_capacity(m.virtual_services.len());
        for (v, vs) in m.virtual_services.iter().enumerate() {
            let mut out = Vec::new();
            if !vs.spec.hosts.is_empty() {
                for (i, rule) in vs.spec.http.iter().flatten().enumerate() {
                    if rule.delegate.is_some() {
                        out.extend(self.delegated(v, i, rule));
                    } else {
                        out.push(own_rule(v, i, rule));
                    }
                }
            }
            all.push(Rc::new(out));
        }
        all
    }

    /// The rules of the delegate that root rule `i` of VirtualService `v`
    /// names, merged with it.
    fn delegated(&mut self, v: usize, i: usize, root: &HttpRoute) -> Vec<EffectiveRule> {
        let m = self.m;
        let vs = &m.virtual_services[v];
        let path = format!("spec.http[{i}]");
        let Some(delegate) = &root.delegate else {
            return Vec::new();
        };
        if !root.route.is_empty() || root.redirect.is_some() || root.direct_response.is_some() {
            self.push(vs.diag(
                Severity::Error,
                &format!("{path}.delegate"),
                "a rule with delegate cannot also set route, redirect or directResponse: the delegate's rules decide",
            ));
            return Vec::new();
        }
        let namespace = delegate.namespace.as_deref().unwrap_or(&vs.namespace);
        let found = m
            .virtual_services
            .iter()
            .position(|d| d.name == delegate.name && d.namespace == namespace);
        let Some(d) = found else {
            self.push(vs.diag(
                Severity::Error,
                &format!("{path}.delegate"),
                format!(
                    "delegate VirtualService {namespace}/{} is not defined in this configuration \
                     (Istio would drop this rule and answer 404)",
                    delegate.name
                ),
            ));
            return Vec::new();
        };
        let dvs = &m.virtual_services[d];
        if !dvs.spec.hosts.is_empty() {
            self.push(vs.diag(
                Severity::Error,
                &format!("{path}.delegate"),
                format!(
                    "{} has hosts, so it is not a delegate: a delegate VirtualService has no hosts and no gateways",
                    dvs.id()
                ),
            ));
            return Vec::new();
        }
        let mut out = Vec::new();
        for (j, leaf) in dvs.spec.http.iter().flatten().enumerate() {
            let lpath = format!("spec.http[{j}]");
            if leaf.delegate.is_some() {
                self.push(dvs.diag(
                    Severity::Error,
                    &format!("{lpath}.delegate"),
                    "a delegate VirtualService cannot delegate again (Istio allows one level)",
                ));
                continue;
            }
            match merge_rule(root, leaf, (v, &path), (d, &lpath)) {
                Some((rule, match_sources)) => out.push(EffectiveRule {
                    owner: d,
                    index: j,
                    rule,
                    match_sources,
                }),
                None => self.push(dvs.diag(
                    Severity::Warning,
                    &format!("{lpath}.match"),
                    format!(
                        "never applies through {} http[{i}]: each match of a delegated rule must fall inside one \
                         of the root rule's matches (same uri, method, authority, scheme; exact inside exact or \
                         prefix; prefix inside prefix; no regex), so Istio drops this rule",
                        vs.id()
                    ),
                )),
            }
        }
        out
    }
}

/// A root VirtualService's own rule.
fn own_rule(v: usize, i: usize, rule: &HttpRoute) -> EffectiveRule {
    EffectiveRule {
        owner: v,
        index: i,
        rule: rule.clone(),
        match_sources: (0..rule.matches.len())
            .map(|j| (v, format!("spec.http[{i}].match[{j}]")))
            .collect(),
    }
}

type MergedRule = (HttpRoute, Vec<(usize, String)>);

/// istiod's `mergeHTTPRoute`: the delegate's rule, with the root's match
/// combined into each of its matches and the root's settings where the
/// delegate has none. `None` on a match conflict.
fn merge_rule(
    root: &HttpRoute,
    leaf: &HttpRoute,
    (rv, rpath): (usize, &str),
    (dv, dpath): (usize, &str),
) -> Option<MergedRule> {
    let mut merged = leaf.clone();
    let mut sources = Vec::new();
    if root.matches.is_empty() {
        sources = (0..leaf.matches.len())
            .map(|j| (dv, format!("{dpath}.match[{j}]")))
            .collect();
    } else if leaf.matches.is_empty() {
        merged.matches = root.matches.clone();
        sources = (0..root.matches.len())
            .map(|j| (rv, format!("{rpath}.match[{j}]")))
            .collect();
    } else {
        merged.matches = Vec::new();
        for (j, sub) in leaf.matches.iter().enumerate() {
            let before = merged.matches.len();
            for parent in root.matches.iter().filter(|p| !has_conflict(p, sub)) {
                merged.matches.push(merge_match(parent, sub));
                sources.push((dv, format!("{dpath}.match[{j}]")));
            }
            if merged.matches.len() == before {
                return None;
            }
        }
    }
    merged.name = match (&root.name, &leaf.name) {
        (Some(r), Some(l)) if !r.is_empty() && !l.is_empty() => Some(format!("{r}-{l}")),
        (r, None) => r.clone(),
        (_, l) => l.clone(),
    };
    inherit(&mut merged.rewrite, &root.rewrite);
    inherit(&mut merged.timeout, &root.timeout);
    inherit(&mut merged.retries, &root.retries);
    inherit(&mut merged.headers, &root.headers);
    inherit(&mut merged.direct_response, &root.direct_response);
    merged.fault = merged.fault.or(root.fault);
    merged.mirror = merged.mirror.or(root.mirror);
    merged.mirrors = merged.mirrors.or(root.mirrors);
    merged.mirror_percent = merged.mirror_percent.or(root.mirror_percent);
    merged.mirror_percentage = merged.mirror_percentage.or(root.mirror_percentage);
    merged.cors_policy = merged.cors_policy.or(root.cors_policy);
    Some((merged, sources))
}

/// The root's value where the delegate has none.
fn inherit<T: Clone>(mine: &mut Option<T>, theirs: &Option<T>) {
    if mine.is_none() {
        mine.clone_from(theirs);
    }
}

/// A StringMatch kind when set and not empty.
fn set(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// istiod's `mergeHTTPMatchRequest`: the delegate's conditions, the root's
/// where the delegate has none; maps merged with the delegate's winning.
fn merge_match(root: &HttpMatch, leaf: &HttpMatch) -> HttpMatch {
    let mut out = leaf.clone();
    out.name = match (&root.name, &leaf.name) {
        (Some(r), Some(l)) if !r.is_empty() && !l.is_empty() => Some(format!("{r}-{l}")),
        (r, None) => r.clone(),
        (_, l) => l.clone(),
    };
    for (mine, theirs) in [
        (&mut out.uri, &root.uri),
        (&mut out.scheme, &root.scheme),
        (&mut out.method, &root.method),
        (&mut out.authority, &root.authority),
    ] {
        if mine.is_none() {
            mine.clone_from(theirs);
        }
    }
    let under = |theirs: &BTreeMap<String, StringMatchSpec>, mine: &mut BTreeMap<_, _>| {
        for (k, v) in theirs {
            mine.entry(k.clone()).or_insert_with(|| v.clone());
        }
    };
    under(&root.headers, &mut out.headers);
    under(&root.without_headers, &mut out.without_headers);
    under(&root.query_params, &mut out.query_params);
    for (k, v) in &root.source_labels {
        out.source_labels
            .entry(k.clone())
            .or_insert_with(|| v.clone());
    }
    out.port = out.port.filter(|p| *p != 0).or(root.port);
    if out.source_namespace.as_deref().is_none_or(str::is_empty) {
        out.source_namespace.clone_from(&root.source_namespace);
    }
    if out.gateways.is_empty() {
        out.gateways.clone_from(&root.gateways);
    }
    if out.ignore_uri_case.is_none() {
        out.ignore_uri_case = root.ignore_uri_case;
    }
    out
}

/// istiod's `hasConflict`: whether a delegate match cannot fall inside a
/// root match.
fn has_conflict(root: &HttpMatch, leaf: &HttpMatch) -> bool {
    let pairs = [
        (&root.uri, &leaf.uri),
        (&root.scheme, &leaf.scheme),
        (&root.method, &leaf.method),
        (&root.authority, &leaf.authority),
    ];
    if pairs
        .iter()
        .any(|(r, l)| string_match_conflict(r.as_ref(), l.as_ref()))
    {
        return true;
    }
    let maps = [
        (&root.headers, &leaf.headers),
        (&root.without_headers, &leaf.without_headers),
        (&root.query_params, &leaf.query_params),
    ];
    if maps.iter().any(|(r, l)| {
        l.iter()
            .any(|(k, lv)| string_match_conflict(r.get(k), Some(lv)))
    }) {
        return true;
    }
    let ports = (root.port.unwrap_or(0), leaf.port.unwrap_or(0));
    let namespaces = (
        root.source_namespace.as_deref().unwrap_or(""),
        leaf.source_namespace.as_deref().unwrap_or(""),
    );
    root.ignore_uri_case.unwrap_or(false) != leaf.ignore_uri_case.unwrap_or(false)
        || (ports.0 > 0 && ports.1 > 0 && ports.0 != ports.1)
        || leaf
            .source_labels
            .iter()
            .any(|(k, v)| root.source_labels.get(k).is_some_and(|r| r != v))
        || (!namespaces.0.is_empty() && !namespaces.1.is_empty() && namespaces.0 != namespaces.1)
        || (!root.gateways.is_empty() && leaf.gateways.iter().any(|g| !root.gateways.contains(g)))
}

/// istiod's `stringMatchConflict`: none when either side is unset; a regex
/// always conflicts; exact must equal exact; a prefix admits an exact or a
/// longer prefix that starts with it.
fn string_match_conflict(root: Option<&StringMatchSpec>, leaf: Option<&StringMatchSpec>) -> bool {
    let (Some(root), Some(leaf)) = (root, leaf) else {
        return false;
    };
    if set(&root.regex).is_some() || set(&leaf.regex).is_some() {
        return true;
    }
    if let Some(exact) = set(&root.exact) {
        return set(&leaf.prefix).is_some() || set(&leaf.exact) != Some(exact);
    }
    if let Some(prefix) = set(&root.prefix) {
        if let Some(p) = set(&leaf.prefix) {
            return !p.starts_with(prefix);
        }
        if let Some(e) = set(&leaf.exact) {
            return !e.starts_with(prefix);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(p: &str) -> Option<StringMatchSpec> {
        Some(StringMatchSpec {
            prefix: Some(p.to_owned()),
            ..StringMatchSpec::default()
        })
    }

    fn exact(p: &str) -> Option<StringMatchSpec> {
        Some(StringMatchSpec {
            exact: Some(p.to_owned()),
            ..StringMatchSpec::default()
        })
    }

    #[test]
    fn string_matches_conflict_as_istiod_decides() {
        struct Case {
            root: Option<StringMatchSpec>,
            leaf: Option<StringMatchSpec>,
            conflict: bool,
        }
        let regex = Some(StringMatchSpec {
            regex: Some("/a.*".into()),
            ..StringMatchSpec::default()
        });
        let cases = [
            Case {
                root: None,
                leaf: prefix("/a"),
                conflict: false,
            },
            Case {
                root: prefix("/a"),
                leaf: prefix("/a/b"),
                conflict: false,
            },
            Case {
                root: prefix("/a"),
                leaf: exact("/a/x"),
                conflict: false,
            },
            Case {
                root: prefix("/a"),
                leaf: prefix("/b"),
                conflict: true,
            },
            Case {
                root: exact("/a"),
                leaf: exact("/a"),
                conflict: false,
            },
            Case {
                root: exact("/a"),
                leaf: prefix("/a"),
                conflict: true,
            },
            Case {
                root: regex.clone(),
                leaf: exact("/a"),
                conflict: true,
            },
            Case {
                root: prefix("/a"),
                leaf: regex,
                conflict: true,
            },
        ];
        for (i, case) in cases.iter().enumerate() {
            assert_eq!(
                string_match_conflict(case.root.as_ref(), case.leaf.as_ref()),
                case.conflict,
                "case {i}"
            );
        }
    }

    #[test]
    fn a_merged_match_takes_the_roots_conditions_where_the_delegate_has_none() {
        let root = HttpMatch {
            name: Some("r".into()),
            uri: prefix("/api"),
            headers: BTreeMap::from([("x-team".to_owned(), StringMatchSpec::default())]),
            port: Some(80),
            ..HttpMatch::default()
        };
        let leaf = HttpMatch {
            name: Some("l".into()),
            uri: prefix("/api/v1"),
            method: exact("GET"),
            ..HttpMatch::default()
        };
        assert!(!has_conflict(&root, &leaf));
        let merged = merge_match(&root, &leaf);
        assert_eq!(merged.name.as_deref(), Some("r-l"));
        assert_eq!(merged.uri, prefix("/api/v1"));
        assert_eq!(merged.method, exact("GET"));
        assert_eq!(merged.port, Some(80));
        assert_eq!(merged.headers.len(), 1);
    }
}
