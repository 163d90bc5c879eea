//! How Istio names resolve: short hosts, gateway references, host overlap.

use std::net::IpAddr;

/// Expands a service host the way istiod does: `*` and IPs stay, a name with
/// a dot is taken literally, a dotless short name becomes
/// `name.<namespace>.svc.<domain>`.
pub fn expand_host(host: &str, namespace: &str, domain: &str) -> String {
    if host == "*" || host.contains('.') || host.parse::<IpAddr>().is_ok() {
        host.to_owned()
    } else {
        format!("{host}.{namespace}.svc.{domain}")
    }
}

/// A reference to a gateway from a VirtualService, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayRef {
    /// The reserved `mesh`: sidecars, never a gateway.
    Mesh,
    /// `namespace/name`.
    Gateway(String),
}

/// Resolves `name`, `./name`, `ns/name` and the legacy `name.ns[.svc.domain]`
/// against the namespace of the VirtualService that wrote it.
pub fn resolve_gateway(reference: &str, namespace: &str) -> GatewayRef {
    if reference == "mesh" {
        return GatewayRef::Mesh;
    }
    if let Some(name) = reference.strip_prefix("./") {
        return GatewayRef::Gateway(format!("{namespace}/{name}"));
    }
    if reference.contains('/') {
        return GatewayRef::Gateway(reference.to_owned());
    }
    match reference.split_once('.') {
        Some((name, rest)) => {
            let ns = rest.split('.').next().unwrap_or(namespace);
            GatewayRef::Gateway(format!("{ns}/{name}"))
        }
        None => GatewayRef::Gateway(format!("{namespace}/{reference}")),
    }
}

/// Whether two host patterns can name the same host: `*` overlaps all,
/// `*.example.com` overlaps `a.example.com` and `*.b.example.com`.
pub fn hosts_overlap(a: &str, b: &str) -> bool {
    if a == "*" || b == "*" {
        return true;
    }
    let a = a.to_ascii_lowercase();
    let b = b.to_ascii_lowercase();
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (None, None) => a == b,
        (Some(sa), None) => b.ends_with(sa) && b.len() > sa.len(),
        (None, Some(sb)) => a.ends_with(sb) && a.len() > sb.len(),
        (Some(sa), Some(sb)) => sa.ends_with(sb) || sb.ends_with(sa),
    }
}

/// Whether every host `a` names is also named by `b` (istiod's
/// `Name.SubsetOf`): `*` holds all, `*.example.com` holds `a.example.com`
/// and `*.b.example.com`; hosts compare case-insensitively.
pub fn host_subset_of(a: &str, b: &str) -> bool {
    if b == "*" {
        return true;
    }
    if a == "*" {
        return false;
    }
    let (a, b) = (a.to_ascii_lowercase(), b.to_ascii_lowercase());
    match b.strip_prefix('*') {
        Some(suffix) => a.strip_prefix('*').unwrap_or(&a).ends_with(suffix),
        None => a == b,
    }
}

/// A Gateway server host: `[namespace/]dnsName`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerHost {
    /// `None`: VirtualServices of any namespace may bind.
    pub namespace: Option<String>,
    pub host: String,
}

impl ServerHost {
    /// Parses `host`, `*/host`, `./host` (the gateway's namespace) and `ns/host`.
    pub fn parse(text: &str, gateway_namespace: &str) -> ServerHost {
        match text.split_once('/') {
            Some(("*", host)) => ServerHost {
                namespace: None,
                host: host.to_owned(),
            },
            Some((".", host)) => ServerHost {
                namespace: Some(gateway_namespace.to_owned()),
                host: host.to_owned(),
            },
            Some((ns, host)) => ServerHost {
                namespace: Some(ns.to_owned()),
                host: host.to_owned(),
            },
            None => ServerHost {
                namespace: None,
                host: text.to_owned(),
            },
        }
    }

    /// Whether a VirtualService in `namespace` with host `vs_host` may bind.
    pub fn admits(&self, namespace: &str, vs_host: &str) -> bool {
        self.namespace.as_deref().is_none_or(|ns| ns == namespace)
            && hosts_overlap(&self.host, vs_host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_subsets_follow_istiod() {
        struct Case {
            a: &'static str,
            b: &'static str,
            want: bool,
        }
        let cases = [
            Case {
                a: "tomcat.istio.com",
                b: "*",
                want: true,
            },
            Case {
                a: "*",
                b: "tomcat.istio.com",
                want: false,
            },
            Case {
                a: "tomcat.istio.com",
                b: "*.istio.com",
                want: true,
            },
            Case {
                a: "*.eu.istio.com",
                b: "*.istio.com",
                want: true,
            },
            Case {
                a: "*.istio.com",
                b: "*.eu.istio.com",
                want: false,
            },
            Case {
                a: "istio.com",
                b: "*.istio.com",
                want: false,
            },
            Case {
                a: "Tomcat.istio.com",
                b: "tomcat.istio.com",
                want: true,
            },
        ];
        for case in cases {
            assert_eq!(
                host_subset_of(case.a, case.b),
                case.want,
                "{} in {}",
                case.a,
                case.b
            );
        }
    }

    #[test]
    fn hosts_expand_like_istiod() {
        struct Case {
            host: &'static str,
            want: &'static str,
        }
        let cases = [
            Case {
                host: "tcp-echo",
                want: "tcp-echo.default.svc.cluster.local",
            },
            Case {
                host: "tcp-echo.default",
                want: "tcp-echo.default",
            },
            Case {
                host: "kafka.rcmd.svc.cluster.local",
                want: "kafka.rcmd.svc.cluster.local",
            },
            Case {
                host: "*",
                want: "*",
            },
            Case {
                host: "10.0.0.1",
                want: "10.0.0.1",
            },
            Case {
                host: "::1",
                want: "::1",
            },
        ];
        for case in cases {
            assert_eq!(
                expand_host(case.host, "default", "cluster.local"),
                case.want,
                "host {}",
                case.host
            );
        }
    }

    #[test]
    fn gateway_references_resolve_against_the_rule_namespace() {
        struct Case {
            reference: &'static str,
            want: GatewayRef,
        }
        let gw = |s: &str| GatewayRef::Gateway(s.to_owned());
        let cases = [
            Case {
                reference: "gw",
                want: gw("rcmd/gw"),
            },
            Case {
                reference: "./gw",
                want: gw("rcmd/gw"),
            },
            Case {
                reference: "istio-system/gw",
                want: gw("istio-system/gw"),
            },
            Case {
                reference: "gw.istio-system.svc.cluster.local",
                want: gw("istio-system/gw"),
            },
            Case {
                reference: "mesh",
                want: GatewayRef::Mesh,
            },
        ];
        for case in cases {
            assert_eq!(
                resolve_gateway(case.reference, "rcmd"),
                case.want,
                "reference {}",
                case.reference
            );
        }
    }

    #[test]
    fn host_overlap_follows_wildcards() {
        struct Case {
            a: &'static str,
            b: &'static str,
            want: bool,
        }
        let cases = [
            Case {
                a: "*",
                b: "anything.example.com",
                want: true,
            },
            Case {
                a: "*.rcmd.testing.mpengine",
                b: "kafka-broker0.rcmd.testing.mpengine",
                want: true,
            },
            Case {
                a: "*.example.com",
                b: "example.com",
                want: false,
            },
            Case {
                a: "*.example.com",
                b: "*.a.example.com",
                want: true,
            },
            Case {
                a: "a.example.com",
                b: "b.example.com",
                want: false,
            },
            Case {
                a: "A.example.com",
                b: "a.example.com",
                want: true,
            },
        ];
        for case in cases {
            assert_eq!(
                hosts_overlap(case.a, case.b),
                case.want,
                "{} ~ {}",
                case.a,
                case.b
            );
            assert_eq!(
                hosts_overlap(case.b, case.a),
                case.want,
                "{} ~ {}",
                case.b,
                case.a
            );
        }
    }

    #[test]
    fn server_hosts_may_restrict_the_namespace() {
        let any = ServerHost::parse("*", "istio-system");
        assert!(any.admits("default", "*"));
        let own = ServerHost::parse("./*", "istio-system");
        assert!(own.admits("istio-system", "x.example.com"));
        assert!(!own.admits("default", "x.example.com"));
        let other = ServerHost::parse("rcmd/*.rcmd.testing.mpengine", "istio-system");
        assert!(other.admits("rcmd", "kafka-broker0.rcmd.testing.mpengine"));
        assert!(!other.admits("default", "kafka-broker0.rcmd.testing.mpengine"));
    }
}
