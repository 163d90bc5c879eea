//! SPEC §1.2 and §1.3, one case per rule: YAML in, compiled decision (or
//! diagnostic with its exact location) out.

use std::time::Duration;

use ringway::diag::Severity;
use ringway::routing::CompileOptions;
use ringway::routing::table::{EndpointAddress, ListenerRouting, LoadBalancer, ProxyProtocol};
use ringway::source::ConfigSource as _;

mod compile_support;
use compile_support::{Outcome, build, build_with, config, line_of};

/// The tcp-echo service: two versions on this host, and their subsets.
const REGISTRY: &str = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: tcp-echo}
spec:
  hosts: [tcp-echo.default.svc.cluster.local]
  resolution: STATIC
  ports:
  - {number: 9000, name: tcp, protocol: TCP}
  - {number: 9001, name: tcp-other, protocol: TCP, targetPort: 9101}
  endpoints:
  - address: 127.0.0.1
    ports: {tcp: 19000}
    labels: {app: tcp-echo, version: v1}
  - address: 127.0.0.2
    labels: {app: tcp-echo, version: v2}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: tcp-echo}
spec:
  host: tcp-echo
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
";

const GATEWAY: &str = "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: ['*']
";

impl Outcome {
    /// Weights by cluster name of the route of the listener on `port`.
    fn split(&self, port: u16) -> Vec<(String, u32)> {
        let t = self.table();
        let l = t
            .listeners
            .iter()
            .find(|l| l.address.port() == port)
            .unwrap_or_else(|| panic!("no listener on {port}"));
        let ListenerRouting::Tcp { route } = l.routing else {
            panic!("not a TCP listener")
        };
        t.route(route)
            .clusters
            .iter()
            .map(|wc| (t.cluster(wc.cluster).name.clone(), wc.weight))
            .collect()
    }
}

fn vs(body: &str) -> String {
    format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\n{body}")
}

const V1: &str = "outbound|9000|v1|tcp-echo.default.svc.cluster.local";
const V2: &str = "outbound|9000|v2|tcp-echo.default.svc.cluster.local";

const ROUTE_V1: &str = "metadata: {name: tcp-echo}
spec:
  hosts: ['*']
  gateways: [gw]
  tcp:
  - match: [{port: 31400}]
    route:
    - destination: {host: tcp-echo, port: {number: 9000}, subset: v1}
";

// ---------------------------------------------------------------- Gateway

#[test]
fn a_tcp_server_with_a_bound_route_opens_a_listener_on_its_port() {
    let out = build(&config(&[REGISTRY, GATEWAY, &vs(ROUTE_V1)]));
    let t = out.table();
    assert_eq!(t.listeners.len(), 1);
    assert_eq!(t.listeners[0].address.to_string(), "0.0.0.0:31400");
    assert_eq!(t.listeners[0].name, "0.0.0.0_31400");
    assert_eq!(out.split(31400), vec![(V1.to_owned(), 1)]);
    assert!(
        out.messages(Severity::Warning).is_empty(),
        "{:?}",
        out.messages(Severity::Warning)
    );
}

#[test]
fn bind_sets_the_listening_address() {
    let gw = GATEWAY.replace("  - port:", "  - bind: 127.0.0.1\n    port:");
    let out = build(&config(&[REGISTRY, &gw, &vs(ROUTE_V1)]));
    assert_eq!(
        out.table().listeners[0].address.to_string(),
        "127.0.0.1:31400"
    );
}

#[test]
fn opaque_protocols_mongo_mysql_redis_are_tcp() {
    for protocol in ["MONGO", "MYSQL", "REDIS", "tcp"] {
        let gw = GATEWAY.replace("protocol: TCP", &format!("protocol: {protocol}"));
        let out = build(&config(&[REGISTRY, &gw, &vs(ROUTE_V1)]));
        assert_eq!(out.table().listeners.len(), 1, "protocol {protocol}");
    }
}

#[test]
fn a_gateway_whose_selector_does_not_match_is_ignored_with_both_label_sets_named() {
    let gw = GATEWAY.replace("istio: ingressgateway", "istio: eastwest");
    let text = config(&[REGISTRY, &gw, &vs(ROUTE_V1)]);
    let out = build(&text);
    assert!(out.table().listeners.is_empty());
    let w = out.only(Severity::Warning);
    assert_eq!(
        w.location.as_ref().map(|l| l.line),
        Some(line_of(&text, "selector: {istio: eastwest}"))
    );
    assert!(
        w.message.contains("{istio=eastwest}") && w.message.contains("{istio=ingressgateway}"),
        "{w}"
    );
    let labels = CompileOptions {
        labels: [("istio".into(), "eastwest".into())].into(),
        ..CompileOptions::default()
    };
    assert_eq!(build_with(&text, &labels).table().listeners.len(), 1);
}

#[test]
fn http2_servers_and_tls_termination_open_no_listener_with_a_warning() {
    for (server, needle) in [
        (
            "port: {number: 31400, name: http2, protocol: HTTP2}",
            "HTTP2 servers are not supported until HTTP/2 exists",
        ),
        (
            "port: {number: 31400, name: grpc, protocol: GRPC}",
            "GRPC servers are not supported until HTTP/2 exists",
        ),
        (
            "port: {number: 31400, name: tls, protocol: TLS}\n    tls: {mode: SIMPLE, credentialName: c}",
            "TLS termination",
        ),
    ] {
        let gw = GATEWAY.replace("port: {number: 31400, name: tcp, protocol: TCP}", server);
        let out = build(&config(&[REGISTRY, &gw, &vs(ROUTE_V1)]));
        assert!(out.table().listeners.is_empty());
        assert!(
            out.messages(Severity::Warning)
                .iter()
                .any(|m| m.contains(needle)),
            "{:?}",
            out.messages(Severity::Warning)
        );
    }
}

#[test]
fn two_tcp_servers_on_one_address_are_an_error_naming_both() {
    let gw2 = GATEWAY.replace("name: gw}", "name: gw2}");
    let text = config(&[REGISTRY, GATEWAY, &gw2, &vs(ROUTE_V1)]);
    let out = build(&text);
    assert!(out.table.is_none());
    let e = out.only(Severity::Error);
    assert_eq!(e.resource.as_deref(), Some("Gateway default/gw2"));
    assert_eq!(e.field.as_deref(), Some("servers[0].port"));
    assert!(
        e.message.contains("Gateway default/gw servers[0]") && e.message.contains("0.0.0.0:31400"),
        "{e}"
    );
}

// ---------------------------------------------------------------- VirtualService binding and rule choice

#[test]
fn gateway_references_resolve_by_name_and_namespace() {
    for gateways in [
        "[gw]",
        "[default/gw]",
        "[./gw]",
        "[gw.default.svc.cluster.local]",
    ] {
        let route = ROUTE_V1.replace("gateways: [gw]", &format!("gateways: {gateways}"));
        let out = build(&config(&[REGISTRY, GATEWAY, &vs(&route)]));
        assert_eq!(out.table().listeners.len(), 1, "gateways {gateways}");
    }
}

#[test]
fn server_host_namespace_prefixes_restrict_which_virtual_services_bind() {
    struct Case {
        server_host: &'static str,
        binds: bool,
    }
    let cases = [
        Case {
            server_host: "'*'",
            binds: true,
        },
        Case {
            server_host: "'*/*'",
            binds: true,
        },
        Case {
            server_host: "'default/*'",
            binds: true,
        },
        Case {
            server_host: "'./*'",
            binds: true,
        },
        Case {
            server_host: "'other/*'",
            binds: false,
        },
    ];
    for case in cases {
        let gw = GATEWAY.replace("hosts: ['*']", &format!("hosts: [{}]", case.server_host));
        let out = build(&config(&[REGISTRY, &gw, &vs(ROUTE_V1)]));
        assert_eq!(
            out.table().listeners.len() == 1,
            case.binds,
            "server host {}",
            case.server_host
        );
    }
}

#[test]
fn virtual_service_hosts_only_decide_eligibility_against_server_hosts() {
    let gw = GATEWAY.replace("hosts: ['*']", "hosts: ['*.rcmd.testing.mpengine']");
    let route = ROUTE_V1.replace(
        "hosts: ['*']",
        "hosts: [kafka-broker0.rcmd.testing.mpengine]",
    );
    assert_eq!(
        build(&config(&[REGISTRY, &gw, &vs(&route)]))
            .table()
            .listeners
            .len(),
        1
    );
    let other = ROUTE_V1.replace("hosts: ['*']", "hosts: [kafka.other.example]");
    let out = build(&config(&[REGISTRY, &gw, &vs(&other)]));
    assert!(out.table().listeners.is_empty());
    assert!(out.messages(Severity::Warning)[0].contains("match none of the server hosts"));
}

#[test]
fn the_first_virtual_service_in_creation_order_wins_and_the_others_are_told() {
    let second = ROUTE_V1
        .replace("name: tcp-echo}", "name: later}")
        .replace("subset: v1", "subset: v2");
    let text = config(&[REGISTRY, GATEWAY, &vs(ROUTE_V1), &vs(&second)]);
    let out = build(&text);
    assert_eq!(out.split(31400), vec![(V1.to_owned(), 1)]);
    let w = out.only(Severity::Warning);
    assert_eq!(w.resource.as_deref(), Some("VirtualService default/later"));
    assert_eq!(w.field.as_deref(), Some("tcp[0]"));
    assert!(
        w.message.contains("VirtualService default/tcp-echo tcp[0]"),
        "{w}"
    );
}

#[test]
fn the_first_rule_whose_match_passes_is_the_route_of_the_listener() {
    let route = "metadata: {name: tcp-echo}
spec:
  hosts: ['*']
  gateways: [gw]
  tcp:
  - match: [{port: 31401}]
    route: [{destination: {host: tcp-echo, port: {number: 9000}, subset: v2}}]
  - match: [{port: 31400, gateways: [other]}, {port: 31400, gateways: [gw]}]
    route: [{destination: {host: tcp-echo, port: {number: 9000}, subset: v1}}]
  - route: [{destination: {host: tcp-echo, port: {number: 9000}, subset: v2}}]
";
    let out = build(&config(&[REGISTRY, GATEWAY, &vs(route)]));
    assert_eq!(out.split(31400), vec![(V1.to_owned(), 1)]);
}

#[test]
fn an_empty_match_passes() {
    let route = ROUTE_V1.replace("  - match: [{port: 31400}]\n    route:", "  - route:");
    assert_eq!(
        build(&config(&[REGISTRY, GATEWAY, &vs(&route)])).split(31400),
        vec![(V1.to_owned(), 1)]
    );
}

#[test]
fn no_matching_rule_means_no_listener_and_a_warning_that_says_why() {
    struct Case {
        name: &'static str,
        route: String,
        why: &'static str,
    }
    let cases = [
        Case {
            name: "http routes only",
            route: "metadata: {name: tcp-echo}\nspec:\n  hosts: ['*']\n  gateways: [gw]\n  http:\n  - route: [{destination: {host: tcp-echo}}]\n".to_owned(),
            why: "has http routes only",
        },
        Case {
            name: "does not list the gateway",
            route: ROUTE_V1.replace("gateways: [gw]", "gateways: [other]"),
            why: "does not list gateway default/gw",
        },
        Case {
            name: "gateways unset binds to mesh",
            route: ROUTE_V1.replace("  gateways: [gw]\n", ""),
            why: "binds to mesh (sidecars) only",
        },
        Case {
            name: "ports differ",
            route: ROUTE_V1.replace("port: 31400", "port: 31401"),
            why: "no tcp rule matching port 31400 on this gateway (its rules match port 31401)",
        },
    ];
    // A gateway for another instance (its selector does not match ours).
    let other = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: other}\nspec:\n  \
                 selector: {istio: egressgateway}\n  servers:\n  - port: {number: 31400, name: tcp, protocol: TCP}\n    \
                 hosts: ['*']\n";
    for case in cases {
        let text = config(&[REGISTRY, GATEWAY, &vs(&case.route), other]);
        let out = build(&text);
        assert!(out.table().listeners.is_empty(), "{}", case.name);
        let w = out
            .diagnostics
            .iter()
            .find(|d| d.resource.as_deref() == Some("Gateway default/gw"))
            .unwrap_or_else(|| {
                panic!(
                    "{}: no warning on the gateway: {:#?}",
                    case.name, out.diagnostics
                )
            });
        assert_eq!(w.severity, Severity::Warning);
        assert_eq!(w.field.as_deref(), Some("servers[0]"), "{}", case.name);
        assert_eq!(
            w.location.as_ref().map(|l| l.line),
            Some(line_of(&text, "  - port: {number: 31400")),
            "{}",
            case.name
        );
        assert!(
            w.message.contains("no listener on 0.0.0.0:31400"),
            "{}: {w}",
            case.name
        );
        assert!(w.message.contains(case.why), "{}: {w}", case.name);
    }
}

#[test]
fn l4_match_fields_that_do_nothing_on_a_gateway_are_warned_about() {
    let route = ROUTE_V1.replace(
        "  - match: [{port: 31400}]",
        "  - match:\n    - port: 31400\n      destinationSubnets: [10.0.0.0/8]\n      sourceLabels: {app: a}\n      sourceNamespace: x\n      sourceSubnet: 10.0.0.0/8",
    );
    let text = config(&[REGISTRY, GATEWAY, &vs(&route)]);
    let out = build(&text);
    let fields: Vec<Option<&str>> = out.diagnostics.iter().map(|d| d.field.as_deref()).collect();
    assert_eq!(
        fields,
        vec![
            Some("tcp[0].match[0].destinationSubnets"),
            Some("tcp[0].match[0].sourceLabels"),
            Some("tcp[0].match[0].sourceNamespace"),
            Some("tcp[0].match[0].sourceSubnet"),
        ]
    );
    assert!(
        out.diagnostics
            .iter()
            .all(|d| d.severity == Severity::Warning)
    );
    assert_eq!(
        out.diagnostics[0].location.as_ref().map(|l| l.line),
        Some(line_of(&text, "destinationSubnets"))
    );
    assert_eq!(out.table().listeners.len(), 1);
}

#[test]
fn unreachable_rules_are_warned_about() {
    let route = "metadata: {name: tcp-echo}
spec:
  hosts: ['*']
  gateways: [gw]
  tcp:
  - match: [{port: 31400}]
    route: [{destination: {host: tcp-echo, port: {number: 9000}, subset: v1}}]
  - match: [{port: 31400}]
    route: [{destination: {host: tcp-echo, port: {number: 9000}, subset: v2}}]
  - route: [{destination: {host: tcp-echo, port: {number: 9000}, subset: v1}}]
  - route: [{destination: {host: tcp-echo, port: {number: 9000}, subset: v2}}]
";
    let out = build(&config(&[REGISTRY, GATEWAY, &vs(route)]));
    let warnings: Vec<(Option<&str>, &str)> = out
        .diagnostics
        .iter()
        .map(|d| (d.field.as_deref(), d.message.as_str()))
        .collect();
    assert_eq!(
        warnings,
        vec![
            (
                Some("tcp[1].match[0]"),
                "never used: tcp[0].match[0] matches the same port and gateways and comes first"
            ),
            (
                Some("tcp[3]"),
                "unreachable: tcp[2] before it matches every connection"
            ),
        ]
    );
}

// ---------------------------------------------------------------- destinations and weights

#[test]
fn weights_split_by_share_and_zero_weight_gets_nothing() {
    let route = |weights: [&str; 2]| {
        format!(
            "metadata: {{name: tcp-echo}}
spec:
  hosts: ['*']
  gateways: [gw]
  tcp:
  - route:
    - destination: {{host: tcp-echo, port: {{number: 9000}}, subset: v1}}
      {}
    - destination: {{host: tcp-echo, port: {{number: 9000}}, subset: v2}}
      {}
",
            weights[0], weights[1]
        )
    };
    let out = build(&config(&[
        REGISTRY,
        GATEWAY,
        &vs(&route(["weight: 80", "weight: 20"])),
    ]));
    assert_eq!(
        out.split(31400),
        vec![(V1.to_owned(), 80), (V2.to_owned(), 20)]
    );
    let out = build(&config(&[
        REGISTRY,
        GATEWAY,
        &vs(&route(["weight: 550", "weight: 500"])),
    ]));
    assert_eq!(
        out.split(31400),
        vec![(V1.to_owned(), 550), (V2.to_owned(), 500)]
    );
    let out = build(&config(&[
        REGISTRY,
        GATEWAY,
        &vs(&route(["weight: 100", "weight: 0"])),
    ]));
    assert_eq!(out.split(31400), vec![(V1.to_owned(), 100)]);
    let out = build(&config(&[
        REGISTRY,
        GATEWAY,
        &vs(&route(["weight: 5", ""])),
    ]));
    assert_eq!(out.split(31400), vec![(V1.to_owned(), 5)]);

    let text = config(&[REGISTRY, GATEWAY, &vs(&route(["weight: 0", "weight: 0"]))]);
    let e = build(&text);
    let e = e.only(Severity::Error);
    assert_eq!(e.field.as_deref(), Some("tcp[0].route"));
    assert!(e.message.contains("every destination has weight 0"), "{e}");

    let text = config(&[REGISTRY, GATEWAY, &vs(&route(["weight: -5", "weight: 20"]))]);
    let out = build(&text);
    let e = out.only(Severity::Error);
    assert_eq!(e.field.as_deref(), Some("tcp[0].route[0].weight"));
    assert_eq!(
        e.location.as_ref().map(|l| l.line),
        Some(line_of(&text, "weight: -5"))
    );
}

#[test]
fn a_single_destination_gets_everything_whatever_its_weight() {
    let route = ROUTE_V1.replace("subset: v1}", "subset: v1}\n      weight: 0");
    assert_eq!(
        build(&config(&[REGISTRY, GATEWAY, &vs(&route)])).split(31400),
        vec![(V1.to_owned(), 1)]
    );
}

#[test]
fn short_names_expand_in_the_rule_namespace_and_dotted_names_are_literal() {
    let literal = ROUTE_V1.replace(
        "host: tcp-echo,",
        "host: tcp-echo.default.svc.cluster.local,",
    );
    assert_eq!(
        build(&config(&[REGISTRY, GATEWAY, &vs(&literal)])).split(31400),
        vec![(V1.to_owned(), 1)]
    );
    let half = ROUTE_V1.replace("host: tcp-echo,", "host: tcp-echo.default,");
    let text = config(&[REGISTRY, GATEWAY, &vs(&half)]);
    let out = build(&text);
    let e = out.only(Severity::Error);
    assert_eq!(e.field.as_deref(), Some("tcp[0].route[0].destination.host"));
    assert!(
        e.message
            .contains("service tcp-echo.default is not declared by any ServiceEntry"),
        "{e}"
    );
    assert!(
        e.message
            .contains("known: tcp-echo.default.svc.cluster.local"),
        "{e}"
    );
}

#[test]
fn a_dotless_service_entry_host_expands_like_any_short_name() {
    let registry = REGISTRY.replace(
        "hosts: [tcp-echo.default.svc.cluster.local]",
        "hosts: [tcp-echo]",
    );
    assert_eq!(
        build(&config(&[&registry, GATEWAY, &vs(ROUTE_V1)])).split(31400),
        vec![(V1.to_owned(), 1)]
    );
}

#[test]
fn the_destination_port_may_be_omitted_only_for_single_port_services() {
    let route = ROUTE_V1.replace(" port: {number: 9000},", "");
    let text = config(&[REGISTRY, GATEWAY, &vs(&route)]);
    let out = build(&text);
    let e = out.only(Severity::Error);
    assert_eq!(e.field.as_deref(), Some("tcp[0].route[0].destination.port"));
    assert!(
        e.message.contains(
            "service tcp-echo.default.svc.cluster.local has 2 ports (9000 (tcp), 9001 (tcp-other))"
        ),
        "{e}"
    );

    let single = REGISTRY.replace(
        "  - {number: 9001, name: tcp-other, protocol: TCP, targetPort: 9101}\n",
        "",
    );
    assert_eq!(
        build(&config(&[&single, GATEWAY, &vs(&route)])).split(31400),
        vec![(V1.to_owned(), 1)]
    );
}

#[test]
fn destination_errors_name_the_exact_field_and_what_is_valid() {
    struct Case {
        from: &'static str,
        to: &'static str,
        field: &'static str,
        message: &'static str,
    }
    let cases = [
        Case {
            from: "subset: v1",
            to: "subset: v3",
            field: "tcp[0].route[0].destination.subset",
            message: "subset \"v3\" is not declared by DestinationRule default/tcp-echo (declared: v1, v2)",
        },
        Case {
            from: "number: 9000",
            to: "number: 9002",
            field: "tcp[0].route[0].destination.port.number",
            message: "service tcp-echo.default.svc.cluster.local has no port 9002 (ports: 9000 (tcp), 9001 (tcp-other))",
        },
    ];
    for case in cases {
        let text = config(&[
            REGISTRY,
            GATEWAY,
            &vs(&ROUTE_V1.replace(case.from, case.to)),
        ]);
        let out = build(&text);
        let e = out.only(Severity::Error);
        assert_eq!(e.field.as_deref(), Some(case.field));
        assert_eq!(e.message, case.message);
        assert_eq!(
            e.resource.as_deref(),
            Some("VirtualService default/tcp-echo")
        );
        assert_eq!(
            e.location.as_ref().map(|l| (l.file.as_ref(), l.line)),
            Some(("test.yaml", line_of(&text, case.to)))
        );
    }
}

#[test]
fn a_subset_that_selects_no_endpoint_is_an_error() {
    let registry = REGISTRY.replace(
        "- {name: v2, labels: {version: v2}}",
        "- {name: v2, labels: {version: v9}}",
    );
    let route = ROUTE_V1.replace("subset: v1", "subset: v2");
    let out = build(&config(&[&registry, GATEWAY, &vs(&route)]));
    let e = out.only(Severity::Error);
    assert_eq!(
        e.message,
        "subset \"v2\" (labels {version=v9}) selects no endpoint of ServiceEntry default/tcp-echo"
    );
}

#[test]
fn resolution_none_cannot_be_a_gateway_destination() {
    let registry = REGISTRY
        .replace("  resolution: STATIC\n", "")
        .replace("  endpoints:", "  endpointz:");
    // Without endpoints and resolution, the ServiceEntry is NONE by default.
    let registry = registry
        .split("  endpointz:")
        .next()
        .expect("prefix")
        .to_owned()
        + &REGISTRY[REGISTRY.find("---").expect("DR")..];
    let out = build(&config(&[&registry, GATEWAY, &vs(ROUTE_V1)]));
    let e = out.only(Severity::Error);
    assert!(
        e.message
            .contains("has resolution NONE (the default when unset)"),
        "{e}"
    );
}

// ---------------------------------------------------------------- endpoints

#[test]
fn endpoint_ports_come_from_the_port_map_then_target_port_then_number() {
    let route = ROUTE_V1.replace("number: 9000}, subset: v1", "number: 9001}");
    let out = build(&config(&[REGISTRY, GATEWAY, &vs(&route)]));
    let t = out.table();
    let c = t
        .cluster_by_name("outbound|9001||tcp-echo.default.svc.cluster.local")
        .expect("cluster");
    let eps: Vec<String> = c.endpoints.iter().map(ToString::to_string).collect();
    assert_eq!(eps, vec!["127.0.0.1:9101", "127.0.0.2:9101"]);
    let c = t.cluster_by_name(V1);
    assert!(c.is_none(), "only used clusters are built");
    let out = build(&config(&[REGISTRY, GATEWAY, &vs(ROUTE_V1)]));
    let eps: Vec<String> = out
        .table()
        .cluster_by_name(V1)
        .expect("v1")
        .endpoints
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(eps, vec!["127.0.0.1:19000"]);
    let plain = REGISTRY
        .replace("targetPort: 9101", "name2: x")
        .replace(", name2: x", "");
    let out = build(&config(&[&plain, GATEWAY, &vs(&route)]));
    let c = out
        .table()
        .cluster_by_name("outbound|9001||tcp-echo.default.svc.cluster.local")
        .expect("cluster");
    assert_eq!(c.endpoints[0].to_string(), "127.0.0.1:9001");
}

#[test]
fn workload_entries_are_selected_by_labels_in_the_same_namespace() {
    let registry = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: tcp-echo}
spec:
  hosts: [tcp-echo.default.svc.cluster.local]
  resolution: STATIC
  ports: [{number: 9000, name: tcp, protocol: TCP}]
  workloadSelector: {labels: {app: tcp-echo}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: one}
spec: {address: 10.0.0.11, labels: {app: tcp-echo, version: v1}, weight: 3}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: two}
spec: {address: 10.0.0.12, labels: {app: tcp-echo, version: v2}, ports: {tcp: 9999}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: elsewhere, namespace: other}
spec: {address: 10.0.0.13, labels: {app: tcp-echo, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: tcp-echo}
spec:
  host: tcp-echo
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
";
    let route = "metadata: {name: tcp-echo}
spec:
  hosts: ['*']
  gateways: [gw]
  tcp:
  - route:
    - {destination: {host: tcp-echo, subset: v1}, weight: 50}
    - {destination: {host: tcp-echo, subset: v2}, weight: 50}
";
    let out = build(&config(&[registry, GATEWAY, &vs(route)]));
    let t = out.table();
    let v1 = t.cluster_by_name(V1).expect("v1");
    assert_eq!(
        v1.endpoints
            .iter()
            .map(|e| (e.to_string(), e.weight))
            .collect::<Vec<_>>(),
        vec![("10.0.0.11:9000".to_owned(), 3)]
    );
    let v2 = t.cluster_by_name(V2).expect("v2");
    assert_eq!(v2.endpoints[0].to_string(), "10.0.0.12:9999");
    assert_eq!(
        v2.endpoints[0].labels.get("version").map(String::as_str),
        Some("v2")
    );
}

#[test]
fn dns_service_entries_keep_host_names_for_resolution_off_the_data_path() {
    let registry = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: data}
spec:
  hosts: [db.example.com]
  resolution: DNS
  ports: [{number: 5432, name: tcp-pg, protocol: TCP}]
";
    let route = "metadata: {name: db, namespace: data}
spec:
  hosts: ['*']
  gateways: [default/gw]
  tcp:
  - route: [{destination: {host: db.example.com}}]
";
    let out = build(&config(&[registry, GATEWAY, &vs(route)]));
    let c = out
        .table()
        .cluster_by_name("outbound|5432||db.example.com")
        .expect("cluster");
    assert_eq!(
        c.endpoints[0].address,
        EndpointAddress::Hostname("db.example.com".into())
    );
    assert_eq!(c.endpoints[0].port, 5432);
    assert_eq!(c.service.namespace, "data");
    assert_eq!(c.service.name, "db");
}

// ---------------------------------------------------------------- DestinationRule policies

#[test]
fn istio_defaults_apply_when_no_policy_is_written() {
    let out = build(&config(&[REGISTRY, GATEWAY, &vs(ROUTE_V1)]));
    let t = out.table();
    let c = t.cluster_by_name(V1).expect("v1");
    assert_eq!(c.policy.load_balancer, LoadBalancer::LeastRequest);
    assert_eq!(c.policy.connect_timeout, Duration::from_secs(10));
    assert_eq!(c.policy.max_connections, u32::MAX);
    assert_eq!(c.policy.outlier_detection, None);
    assert_eq!(t.routes[0].idle_timeout, Some(Duration::from_secs(3600)));
    assert_eq!(t.routes[0].max_connection_duration, None);
}

const POLICY_DR: &str = "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: tcp-echo}
spec:
  host: tcp-echo
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    connectionPool:
      tcp:
        maxConnections: 100
        connectTimeout: 250ms
        idleTimeout: 0s
        maxConnectionDuration: 1h
        tcpKeepalive: {probes: 3, time: 7200.5s, interval: 75s}
    outlierDetection: {consecutive5xxErrors: 2, baseEjectionTime: 1m}
    proxyProtocol: {version: V2}
    portLevelSettings:
    - port: {number: 9001}
      loadBalancer: {simple: RANDOM}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      loadBalancer:
        consistentHash: {useSourceIp: true}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      connectionPool: {tcp: {connectTimeout: 1s}}
      portLevelSettings:
      - port: {number: 9000}
        outlierDetection: {consecutive5xxErrors: 0, consecutiveGatewayErrors: 7}
";

#[test]
fn subset_and_port_level_policies_replace_whole_blocks() {
    let registry = REGISTRY.split("---").next().expect("SE").to_owned();
    let route = "metadata: {name: tcp-echo}
spec:
  hosts: ['*']
  gateways: [gw]
  tcp:
  - route:
    - {destination: {host: tcp-echo, port: {number: 9000}, subset: v1}, weight: 1}
    - {destination: {host: tcp-echo, port: {number: 9000}, subset: v2}, weight: 1}
    - {destination: {host: tcp-echo, port: {number: 9001}}, weight: 1}
";
    let out = build(&config(&[&registry, POLICY_DR, GATEWAY, &vs(route)]));
    let t = out.table();

    // Subset v1 replaces loadBalancer only; the rest is the top level.
    let v1 = &t.cluster_by_name(V1).expect("v1").policy;
    assert_eq!(v1.load_balancer, LoadBalancer::SourceIpHash);
    assert_eq!(v1.connect_timeout, Duration::from_millis(250));
    assert_eq!(v1.max_connections, 100);
    let keepalive = v1.tcp_keepalive.expect("keepalive");
    assert_eq!(
        (
            keepalive.probes,
            keepalive.time_secs,
            keepalive.interval_secs
        ),
        (Some(3), Some(7200), Some(75))
    );
    assert_eq!(
        v1.outlier_detection
            .map(|o| (o.consecutive_errors, o.base_ejection_time)),
        Some((2, Duration::from_secs(60)))
    );
    assert_eq!(v1.proxy_protocol, Some(ProxyProtocol::V2));

    // Subset v2 replaces the whole connectionPool (maxConnections back to
    // unlimited), and its port level replaces every block for port 9000.
    let v2 = &t.cluster_by_name(V2).expect("v2").policy;
    assert_eq!(v2.load_balancer, LoadBalancer::LeastRequest);
    assert_eq!(v2.connect_timeout, Duration::from_secs(10));
    assert_eq!(v2.max_connections, u32::MAX);
    assert_eq!(
        v2.outlier_detection
            .map(|o| (o.consecutive_errors, o.interval)),
        Some((7, Duration::from_secs(10)))
    );

    // Top-level port level for 9001: loadBalancer RANDOM, the pool and
    // outlier blocks it leaves out go back to defaults.
    let p9001 = &t
        .cluster_by_name("outbound|9001||tcp-echo.default.svc.cluster.local")
        .expect("9001")
        .policy;
    assert_eq!(p9001.load_balancer, LoadBalancer::Random);
    assert_eq!(p9001.max_connections, u32::MAX);
    assert_eq!(p9001.outlier_detection, None);
    assert_eq!(p9001.proxy_protocol, Some(ProxyProtocol::V2));

    // Route timeouts come from the first destination's top-level policy.
    assert_eq!(
        t.routes[0].idle_timeout, None,
        "idleTimeout: 0s turns it off"
    );
    assert_eq!(
        t.routes[0].max_connection_duration,
        Some(Duration::from_secs(3600))
    );
    assert!(
        out.messages(Severity::Warning).is_empty(),
        "{:?}",
        out.messages(Severity::Warning)
    );
}

#[test]
fn policy_errors_and_unimplemented_fields_are_located() {
    struct Case {
        from: &'static str,
        to: &'static str,
        severity: Severity,
        field: &'static str,
    }
    let cases = [
        Case {
            from: "maxConnections: 100",
            to: "maxConnections: -1",
            severity: Severity::Error,
            field: "trafficPolicy.connectionPool.tcp.maxConnections",
        },
        Case {
            from: "connectTimeout: 250ms",
            to: "connectTimeout: 10",
            severity: Severity::Error,
            field: "trafficPolicy.connectionPool.tcp.connectTimeout",
        },
        Case {
            from: "connectTimeout: 250ms",
            to: "connectTimeout: 10 minutes",
            severity: Severity::Error,
            field: "trafficPolicy.connectionPool.tcp.connectTimeout",
        },
        Case {
            from: "simple: ROUND_ROBIN}",
            to: "simple: ROUND_ROBIN, warmup: {duration: 10s}}",
            severity: Severity::Warning,
            field: "trafficPolicy.loadBalancer.warmup",
        },
        Case {
            from: "simple: ROUND_ROBIN}",
            to: "simple: ROUND_ROBN}",
            severity: Severity::Error,
            field: "trafficPolicy.loadBalancer.simple",
        },
    ];
    let registry = REGISTRY.split("---").next().expect("SE").to_owned();
    for case in cases {
        let dr = POLICY_DR.replace(case.from, case.to);
        let text = config(&[&registry, &dr, GATEWAY, &vs(ROUTE_V1)]);
        let out = build(&text);
        let d = out.only(case.severity);
        assert_eq!(d.field.as_deref(), Some(case.field), "{}: {d}", case.to);
        assert_eq!(
            d.resource.as_deref(),
            Some("DestinationRule default/tcp-echo")
        );
        assert_eq!(
            d.location.as_ref().map(|l| l.line),
            Some(line_of(&text, case.to)),
            "{}",
            case.to
        );
    }
}

#[test]
fn unknown_fields_suggest_the_right_name() {
    let dr = POLICY_DR.replace("connectTimeout: 250ms", "connect_timeout: 250ms");
    let registry = REGISTRY.split("---").next().expect("SE").to_owned();
    let text = config(&[&registry, &dr, GATEWAY, &vs(ROUTE_V1)]);
    let out = build(&text);
    let e = out.only(Severity::Error);
    assert_eq!(
        e.to_string(),
        format!(
            "test.yaml:{}: DestinationRule default/tcp-echo: trafficPolicy.connectionPool.tcp.connect_timeout: \
             unknown field \"connect_timeout\", did you mean \"connectTimeout\"? (document 2)",
            line_of(&text, "connect_timeout")
        )
    );
}

// ---------------------------------------------------------------- TLS passthrough

/// Gateway `gw` (selecting this instance) with `servers` (YAML list items).
fn gateway_with(servers: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\nspec:\n  \
         selector: {{istio: ingressgateway}}\n  servers:\n{servers}"
    )
}

#[test]
fn tls_passthrough_routes_by_the_most_specific_sni() {
    let gw = &gateway_with(
        "  - port: {number: 443, name: tls, protocol: TLS}
    tls: {mode: PASSTHROUGH}
    hosts: ['*']
",
    );
    let route = "metadata: {name: sni}
spec:
  hosts: ['*']
  gateways: [gw]
  tls:
  - match: [{sniHosts: ['*'], port: 443}]
    route: [{destination: {host: tcp-echo, port: {number: 9000}, subset: v2}}]
  - match: [{sniHosts: [db.example.com, '*.example.com']}]
    route: [{destination: {host: tcp-echo, port: {number: 9000}, subset: v1}}]
  - match: [{sniHosts: [db.example.com]}]
    route: [{destination: {host: tcp-echo, port: {number: 9000}, subset: v2}}]
";
    let text = config(&[REGISTRY, gw, &vs(route)]);
    let out = build(&text);
    let t = out.table();
    let ListenerRouting::TlsPassthrough { sni } = &t.listeners[0].routing else {
        panic!("not TLS")
    };
    let cluster_of = |name: Option<&str>| {
        sni.lookup(name)
            .map(|r| t.cluster(t.route(r).clusters[0].cluster).name.clone())
    };
    assert_eq!(cluster_of(Some("db.example.com")).as_deref(), Some(V1));
    assert_eq!(cluster_of(Some("x.example.com")).as_deref(), Some(V1));
    assert_eq!(cluster_of(Some("other.org")).as_deref(), Some(V2));
    assert_eq!(
        cluster_of(None).as_deref(),
        Some(V2),
        "* also takes clients without SNI"
    );
    let w = out.only(Severity::Warning);
    assert_eq!(w.field.as_deref(), Some("tls[2].match[0].sniHosts[0]"));
    assert!(
        w.message
            .contains("already routed by VirtualService default/sni tls[1].match[0]"),
        "{w}"
    );
}

/// Two passthrough servers on one port whose hosts both admit one
/// VirtualService: its rules are routed once, with no warning that it
/// conflicts with itself (`--strict` accepts it).
#[test]
fn two_passthrough_servers_admitting_one_virtual_service_do_not_conflict() {
    let gw = &gateway_with(
        "  - port: {number: 443, name: tls-a, protocol: TLS}
    tls: {mode: PASSTHROUGH}
    hosts: ['a.example.com', 'shared.example.com']
  - port: {number: 443, name: tls-b, protocol: TLS}
    tls: {mode: PASSTHROUGH}
    hosts: ['b.example.com', 'shared.example.com']
",
    );
    let route = "metadata: {name: sni}
spec:
  hosts: [shared.example.com]
  gateways: [gw]
  tls:
  - match: [{sniHosts: [shared.example.com]}]
    route: [{destination: {host: tcp-echo, port: {number: 9000}, subset: v1}}]
";
    let out = build(&config(&[REGISTRY, gw, &vs(route)]));
    assert_eq!(out.table().listeners.len(), 1);
    assert!(
        out.messages(Severity::Warning).is_empty(),
        "{:?}",
        out.messages(Severity::Warning)
    );
}

// ---------------------------------------------------------------- loading

/// What `check -c PATH...` builds.
fn build_files(paths: &[std::path::PathBuf]) -> ringway::pipeline::Build {
    let source = ringway::source::Files::new(paths.to_vec());
    ringway::pipeline::Pipeline::default().build(&source.snapshot())
}

#[test]
fn the_tutorial_files_plus_a_service_entry_compile_to_the_80_20_split() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/tcp-echo");
    let paths = vec![
        dir.join("00-service-entry.yaml"),
        dir.join("10-tcp-echo-all-v1.yaml"),
        dir.join("20-tcp-echo-20-v2.yaml"),
    ];
    let build = build_files(&paths);
    let t = build.table.as_ref().expect("valid");
    assert_eq!(t.listeners.len(), 1);
    assert_eq!(t.listeners[0].address.to_string(), "0.0.0.0:31400");
    let ListenerRouting::Tcp { route } = t.listeners[0].routing else {
        panic!("tcp")
    };
    let split: Vec<(String, u32)> = t
        .route(route)
        .clusters
        .iter()
        .map(|c| (t.cluster(c.cluster).name.clone(), c.weight))
        .collect();
    assert_eq!(split, vec![(V1.to_owned(), 80), (V2.to_owned(), 20)]);
    let infos: Vec<String> = build.diagnostics.iter().map(ToString::to_string).collect();
    assert_eq!(infos.len(), 1, "{infos:?}");
    assert!(
        infos[0].contains("replaces the VirtualService read from"),
        "{infos:?}"
    );

    // Without the second file, everything goes to v1.
    let build = build_files(&paths[..2]);
    let t = build.table.as_ref().expect("valid");
    let ListenerRouting::Tcp { route } = t.listeners[0].routing else {
        panic!("tcp")
    };
    assert_eq!(t.route(route).clusters.len(), 1);
    assert_eq!(t.cluster(t.route(route).clusters[0].cluster).name, V1);
}

#[test]
fn the_bundled_tutorial_copies_match_the_istio_samples() {
    let ours = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/tcp-echo");
    let upstream =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/istio-samples/tcp-echo");
    if !upstream.is_dir() {
        eprintln!(
            "SKIP: {} is not present; cannot compare the bundled copies",
            upstream.display()
        );
        return;
    }
    for (copy, original) in [
        ("10-tcp-echo-all-v1.yaml", "tcp-echo-all-v1.yaml"),
        ("20-tcp-echo-20-v2.yaml", "tcp-echo-20-v2.yaml"),
    ] {
        let a = std::fs::read(ours.join(copy)).expect("copy");
        let b = std::fs::read(upstream.join(original)).expect("original");
        assert_eq!(a, b, "{copy} differs from the Istio sample {original}");
    }
}

#[test]
fn every_bundled_example_checks_clean() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("examples") {
        let path = entry.expect("entry").path();
        let build = build_files(std::slice::from_ref(&path));
        let problems: Vec<String> = build
            .diagnostics
            .iter()
            .filter(|d| d.severity >= Severity::Warning)
            .map(ToString::to_string)
            .collect();
        // Seed 004 keeps the tutorial's mesh-only VirtualService, to show
        // the trap: that one warning, and no other, is expected there.
        let expected: &[&str] = match path.file_name().and_then(|n| n.to_str()) {
            Some("seed-004") => {
                &["VirtualService default/front-tomcat: gateways: gateways is not set"]
            }
            _ => &[],
        };
        assert_eq!(
            problems.len(),
            expected.len(),
            "{}: {problems:#?}",
            path.display()
        );
        for (problem, want) in problems.iter().zip(expected) {
            assert!(problem.contains(want), "{}: {problem}", path.display());
        }
        assert!(
            build
                .table
                .as_ref()
                .is_some_and(|t| !t.listeners.is_empty()),
            "{}",
            path.display()
        );
        checked += 1;
    }
    assert!(
        checked >= 3,
        "found only {checked} examples in {}",
        dir.display()
    );
}

// ---------------------------------------------------------------- Istio API fidelity (issue 10)

/// Fields of today's istio/api protos load (with the warning every
/// accepted-but-unimplemented field gets), and inside blocks ringway does
/// not act on, a typo is still an error: every unknown field of the
/// document is reported, each with its line.
#[test]
fn current_api_fields_load_and_every_typo_anywhere_is_an_error() {
    let gateway = "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: ['*']
  - port: {number: 443, name: tls, protocol: TLS}
    hosts: ['*.example.com']
    tls: {mode: PASSTHROUGH, caCertCredentialName: ca, insecureSkipVerify: true}
";
    let rule = "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: tcp-echo}
spec:
  host: tcp-echo
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
      zoneAwareLbSetting: {enabled: true, minClusterSize: 3}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
";
    let registry = REGISTRY.split("---\n").next().expect("service entry");
    let out = build(&config(&[gateway, registry, rule, &vs(ROUTE_V1)]));
    assert!(
        out.messages(Severity::Error).is_empty(),
        "{:?}",
        out.messages(Severity::Error)
    );
    for field in ["zoneAwareLbSetting", "tls"] {
        assert!(
            out.messages(Severity::Warning)
                .iter()
                .any(|w| w.contains(field)),
            "no warning about {field}: {:?}",
            out.messages(Severity::Warning)
        );
    }

    let typos = rule.replace("enabled: true", "enabeld: true").replace(
        "  trafficPolicy:\n",
        "  trafficPolicy:\n    tls: {mode: DISABLE, snii: db}\n",
    );
    let text = config(&[gateway, registry, &typos, &vs(ROUTE_V1)]);
    let out = build(&text);
    let errors = out.messages(Severity::Error);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].contains(&format!("test.yaml:{}:", line_of(&text, "snii")))
            && errors[0].contains("trafficPolicy.tls.snii")
            && errors[0].contains("did you mean \"sni\"?"),
        "{errors:?}"
    );
    assert!(
        errors[1].contains(&format!("test.yaml:{}:", line_of(&text, "enabeld")))
            && errors[1].contains("unknown field \"enabeld\", did you mean \"enabled\"?"),
        "{errors:?}"
    );
}

/// A delegate VirtualService (no hosts, http routes only, named by another
/// VirtualService's `http[].delegate`) is valid Istio: it applies through
/// its root only (`tests/compile_http.rs` has the merge), and the rest of
/// the configuration serves.
#[test]
fn a_delegate_virtual_service_applies_through_its_root_only() {
    let parent = vs("metadata: {name: tcp-echo}
spec:
  hosts: ['*']
  gateways: [gw]
  http:
  - match: [{uri: {prefix: /reviews}}]
    delegate: {name: reviews, namespace: default}
  tcp:
  - match: [{port: 31400}]
    route:
    - destination: {host: tcp-echo, port: {number: 9000}, subset: v1}
");
    let child = vs("metadata: {name: reviews}
spec:
  http:
  - route:
    - destination: {host: reviews.default.svc.cluster.local}
");
    let out = build(&config(&[GATEWAY, REGISTRY, &parent, &child]));
    assert_eq!(out.split(31400)[0].0, V1);
    assert!(
        out.messages(Severity::Warning).is_empty(),
        "{:?}",
        out.messages(Severity::Warning)
    );
    // Not referenced: it has no effect, and says so.
    let orphan = child.replace("name: reviews", "name: orphan");
    let out = build(&config(&[GATEWAY, REGISTRY, &vs(ROUTE_V1), &orphan]));
    assert!(
        out.messages(Severity::Warning)
            .iter()
            .any(|w| w.contains("that no VirtualService delegates to")),
        "{:?}",
        out.messages(Severity::Warning)
    );
    // Istio's rules for delegates: no gateways, no tcp routes.
    let bound = child.replace("spec:\n", "spec:\n  gateways: [gw]\n");
    let out = build(&config(&[GATEWAY, REGISTRY, &parent, &bound]));
    assert!(
        out.only(Severity::Error)
            .to_string()
            .contains("a delegate VirtualService (no hosts) cannot name gateways"),
        "{:?}",
        out.diagnostics
    );
}

/// A VirtualService bound to a gateway that no file defines serves nothing:
/// an error (istioctl analyze's IST0101), with a did-you-mean.
#[test]
fn a_virtual_service_naming_an_undefined_gateway_is_an_error() {
    let route = ROUTE_V1.replace("gateways: [gw]", "gateways: [gww]");
    let text = config(&[REGISTRY, GATEWAY, &vs(&route)]);
    let out = build(&text);
    let e = out.only(Severity::Error).to_string();
    assert!(
        e.contains(&format!("test.yaml:{}:", line_of(&text, "gateways: [gww]")))
            && e.contains("gateways[0]: gateway default/gww is not defined in this configuration, did you mean \"default/gw\"?"),
        "{e}"
    );
}

/// Valid Istio that ringway cannot serve (PASSTHROUGH load balancing, TLS
/// origination, a unix-socket endpoint, an endpoint reached through another
/// network's gateway) is a warning where it is declared, and an error only
/// for a route that reaches it: never plaintext where Istio encrypts.
#[test]
fn unservable_features_are_errors_only_for_the_routes_that_use_them() {
    let service_entry = |endpoint: &str| {
        format!(
            "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: tcp-echo}}
spec:
  hosts: [tcp-echo.default.svc.cluster.local]
  resolution: STATIC
  ports: [{{number: 9000, name: tcp, protocol: TCP}}]
  endpoints:
  - {{address: 127.0.0.1, labels: {{version: v1}}}}
  - {endpoint}
"
        )
    };
    let rule = |v2_policy: &str| {
        format!(
            "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: tcp-echo}}
spec:
  host: tcp-echo
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}{v2_policy}}}
"
        )
    };
    let to_v2 = ROUTE_V1.replace("subset: v1", "subset: v2");
    struct Case {
        name: &'static str,
        endpoint: &'static str,
        v2_policy: &'static str,
        warning: &'static str,
        error: &'static str,
    }
    for case in [
        Case {
            name: "PASSTHROUGH",
            endpoint: "{address: 127.0.0.2, labels: {version: v2}}",
            v2_policy: ", trafficPolicy: {loadBalancer: {simple: PASSTHROUGH}}",
            warning: "PASSTHROUGH forwards to the original destination",
            error: "DestinationRule default/tcp-echo balances tcp-echo.default.svc.cluster.local with PASSTHROUGH",
        },
        Case {
            name: "TLS origination",
            endpoint: "{address: 127.0.0.2, labels: {version: v2}}",
            v2_policy: ", trafficPolicy: {tls: {mode: SIMPLE, sni: echo.example.com}}",
            warning: "TLS origination (SIMPLE) is not implemented yet",
            error: "asks for TLS to tcp-echo.default.svc.cluster.local (tls.mode SIMPLE)",
        },
        Case {
            name: "unix socket",
            endpoint: "{address: unix:///var/run/echo.sock, labels: {version: v2}}",
            v2_policy: "",
            warning: "unix domain socket endpoints are not supported",
            error: "unix:///var/run/echo.sock (unix domain sockets are not supported)",
        },
        Case {
            name: "other network",
            endpoint: "{network: west, labels: {version: v2}}",
            v2_policy: "",
            warning: "an endpoint without address is reached through its network's gateway",
            error: "an endpoint without address on network \"west\"",
        },
    ] {
        let registry = service_entry(case.endpoint);
        let dr = rule(case.v2_policy);
        // Nothing routes to v2: it loads, with a warning.
        let out = build(&config(&[GATEWAY, &registry, &dr, &vs(ROUTE_V1)]));
        assert!(
            out.table.is_some(),
            "{}: {:?}",
            case.name,
            out.messages(Severity::Error)
        );
        assert!(
            out.messages(Severity::Warning)
                .iter()
                .any(|w| w.contains(case.warning)),
            "{}: {:?}",
            case.name,
            out.messages(Severity::Warning)
        );
        // A route to v2: an error at the route.
        let out = build(&config(&[GATEWAY, &registry, &dr, &vs(&to_v2)]));
        let e = out.only(Severity::Error).to_string();
        assert!(
            e.contains("VirtualService default/tcp-echo: tcp[0].route[0].destination.host")
                && e.contains(case.error),
            "{}: {e}",
            case.name
        );
    }
}

/// AUTO_PASSTHROUGH is Istio's east-west SNI routing, not TLS termination:
/// its warning says what it is.
#[test]
fn auto_passthrough_is_named_for_what_it_is() {
    let gw = GATEWAY.replace(
        "  - port: {number: 31400, name: tcp, protocol: TCP}\n    hosts: ['*']\n",
        "  - port: {number: 15443, name: tls, protocol: TLS}\n    tls: {mode: AUTO_PASSTHROUGH}\n    hosts: ['*.local']\n",
    );
    let out = build(&config(&[REGISTRY, &gw]));
    let w = out.only(Severity::Warning).to_string();
    assert!(
        w.contains("AUTO_PASSTHROUGH routes by the SNI of Istio's multi-network east-west traffic")
            && !w.contains("termination"),
        "{w}"
    );
}
