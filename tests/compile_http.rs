//! Issue 13, configuration: HTTP servers, virtual hosts and routes as
//! istiod builds them for a gateway. YAML in, compiled table (or the
//! diagnostic with its exact location) out.

use std::borrow::Cow;
use std::time::Duration;

use ringway::diag::Severity;
use ringway::routing::CompileOptions;
use ringway::routing::http::{
    HttpRoute, HttpRouting, PathRedirect, RedirectPort, RequestView, RetryOn, RouteAction,
    UriRewrite,
};
use ringway::routing::table::ListenerRouting;
use ringway::source::ConfigSource as _;

mod compile_support;
use compile_support::{Outcome, build, build_with, config, line_of};

/// front-tomcat v1 and v2 on this host, as in seed 004, plus a second
/// service for routes that need another destination.
const REGISTRY: &str = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: front-tomcat}
spec:
  hosts: [front-tomcat.default.svc.cluster.local]
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  endpoints:
  - {address: 127.0.0.1, ports: {http: 18081}, labels: {version: v1}}
  - {address: 127.0.0.1, ports: {http: 18082}, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: front-tomcat}
spec:
  host: front-tomcat
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
  - port: {number: 18080, name: http, protocol: HTTP}
    hosts: ['*']
";

const V1: &str = "outbound|8080|v1|front-tomcat.default.svc.cluster.local";
const V2: &str = "outbound|8080|v2|front-tomcat.default.svc.cluster.local";

impl Outcome {
    /// The HTTP routing of the listener on `port`.
    fn http(&self, port: u16) -> &HttpRouting {
        let l = self
            .table()
            .listeners
            .iter()
            .find(|l| l.address.port() == port)
            .unwrap_or_else(|| panic!("no listener on {port}"));
        match &l.routing {
            ListenerRouting::Http { http } => http,
            other => panic!("not an HTTP listener: {other:?}"),
        }
    }

    /// The route a request gets on the listener on `port`.
    fn route(&self, port: u16, req: &Req) -> Option<&HttpRoute> {
        self.http(port).vhost(req.authority)?.route(req)
    }

    /// (cluster, weight) of a forwarding route.
    fn split(&self, route: &HttpRoute) -> Vec<(String, u32)> {
        let RouteAction::Forward(f) = &route.action else {
            panic!("not a forward: {:?}", route.action)
        };
        let t = self.table();
        t.route(f.route)
            .clusters
            .iter()
            .map(|wc| (t.cluster(wc.cluster).name.clone(), wc.weight))
            .collect()
    }
}

fn vs(name: &str, body: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}}}\nspec:\n{body}"
    )
}

/// A request as the HTTP codec presents it.
#[derive(Default)]
struct Req {
    method: &'static str,
    path: &'static str,
    query: Option<&'static str>,
    authority: Option<&'static str>,
    headers: Vec<(&'static str, &'static str)>,
}

fn get(host: &'static str, target: &'static str) -> Req {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    Req {
        method: "GET",
        path,
        query,
        authority: Some(host),
        headers: Vec::new(),
    }
}

impl RequestView for Req {
    fn method(&self) -> &str {
        self.method
    }
    fn path(&self) -> &str {
        self.path
    }
    fn query(&self) -> Option<&str> {
        self.query
    }
    fn authority(&self) -> Option<&str> {
        self.authority
    }
    fn header(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| Cow::Borrowed(v.as_bytes()))
    }
}

const SIMPLE_ROUTE: &str =
    "  http:\n  - route: [{destination: {host: front-tomcat, subset: v1}}]\n";

// ---------------------------------------------------------------- seed 004

#[test]
fn seed_004_verbatim_compiles_to_one_vhost_and_the_90_10_route() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/seed-004");
    let source = ringway::source::Files::new(vec![dir]);
    let build = ringway::pipeline::Pipeline::default().build(&source.snapshot());
    let t = build.table.as_ref().expect("valid");
    assert_eq!(t.listeners.len(), 1);
    let l = &t.listeners[0];
    assert_eq!(l.name, "0.0.0.0_80");
    assert_eq!(l.gateways, ["default/front-tomcat-gateway"]);
    let ListenerRouting::Http { http } = &l.routing else {
        panic!("http listener")
    };
    assert_eq!(http.name, "http.80");
    assert_eq!(http.vhosts.len(), 1);
    let vhost = &http.vhosts[0];
    assert_eq!(vhost.name, "tomcat.istio.com:80");
    assert_eq!(vhost.domains, ["tomcat.istio.com"]);
    assert_eq!(vhost.routes.len(), 1);
    let route = &vhost.routes[0];
    assert_eq!(route.name, "front-tomcat-route");
    let RouteAction::Forward(f) = &route.action else {
        panic!("forward")
    };
    let r = t.route(f.route);
    assert_eq!(r.name, "default/gateway-front-tomcat http[0]");
    let split: Vec<(&str, u32)> = r
        .clusters
        .iter()
        .map(|wc| (t.cluster(wc.cluster).name.as_str(), wc.weight))
        .collect();
    assert_eq!(split, [(V1, 90), (V2, 10)]);
    assert_eq!(f.timeout, None);
    assert_eq!(f.retries.attempts, 2);
    assert_eq!(
        f.retries.on,
        RetryOn {
            connect_failure: true,
            ..RetryOn::default()
        }
    );
    // Host matching ignores the port and case; any other host gets 404.
    for host in [
        "tomcat.istio.com",
        "tomcat.istio.com:32000",
        "TOMCAT.istio.com",
    ] {
        assert!(http.vhost(Some(host)).is_some(), "{host}");
    }
    assert!(http.vhost(Some("bill.istio.com")).is_none());
    // The tutorial's mesh-only VirtualService is reported, not applied.
    let warnings: Vec<String> = build
        .diagnostics
        .warnings()
        .map(ToString::to_string)
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(
        warnings[0].contains("VirtualService default/front-tomcat: gateways:")
            && warnings[0].contains("binds to mesh (sidecars) only"),
        "{}",
        warnings[0]
    );
}

// ---------------------------------------------------------------- listeners

#[test]
fn an_http_server_without_a_virtual_service_opens_and_answers_404_with_a_warning() {
    let text = config(&[REGISTRY, GATEWAY]);
    let out = build(&text);
    let http = out.http(18080);
    assert_eq!(http.name, "http.18080");
    assert_eq!(http.vhosts.len(), 1);
    assert_eq!(http.vhosts[0].name, "blackhole:18080");
    assert!(http.vhosts[0].routes.is_empty());
    assert!(out.route(18080, &get("anything", "/")).is_none());
    let w = out.only(Severity::Warning);
    assert_eq!(w.resource.as_deref(), Some("Gateway default/gw"));
    assert_eq!(w.field.as_deref(), Some("servers[0]"));
    assert_eq!(
        w.location.as_ref().map(|l| l.line),
        Some(line_of(&text, "  - port: {number: 18080"))
    );
    assert!(
        w.message
            .contains("0.0.0.0:18080 opens and answers every request with 404"),
        "{w}"
    );
}

#[test]
fn http_servers_on_one_port_merge_across_gateways() {
    let second = GATEWAY
        .replace("name: gw}", "name: gw2}")
        .replace("hosts: ['*']", "hosts: [bill.istio.com]");
    let first = GATEWAY.replace("hosts: ['*']", "hosts: [tomcat.istio.com]");
    let a = vs(
        "a",
        &format!("  hosts: [tomcat.istio.com]\n  gateways: [gw]\n{SIMPLE_ROUTE}"),
    );
    let b = vs(
        "b",
        &format!("  hosts: [bill.istio.com]\n  gateways: [gw2]\n{SIMPLE_ROUTE}"),
    );
    let out = build(&config(&[REGISTRY, &first, &second, &a, &b]));
    let t = out.table();
    assert_eq!(t.listeners.len(), 1);
    assert_eq!(t.listeners[0].gateways, ["default/gw", "default/gw2"]);
    let names: Vec<&str> = out
        .http(18080)
        .vhosts
        .iter()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(names, ["tomcat.istio.com:18080", "bill.istio.com:18080"]);
}

#[test]
fn a_tcp_and_an_http_server_on_one_port_are_an_error_naming_both() {
    let tcp = GATEWAY
        .replace("name: gw}", "name: db}")
        .replace("name: http, protocol: HTTP", "name: tcp, protocol: TCP");
    let out = build(&config(&[REGISTRY, GATEWAY, &tcp]));
    assert!(out.table.is_none());
    let e = out.only(Severity::Error);
    assert_eq!(e.resource.as_deref(), Some("Gateway default/db"));
    assert_eq!(e.field.as_deref(), Some("servers[0].port"));
    assert!(
        e.message
            .contains("0.0.0.0:18080 is already served by Gateway default/gw servers[0]")
            && e.message
                .contains("an HTTP server and a TCP server cannot share"),
        "{e}"
    );
}

#[test]
fn http2_and_grpc_servers_open_no_listener_with_a_warning() {
    for protocol in ["HTTP2", "GRPC", "GRPC-WEB"] {
        let gw = GATEWAY.replace("protocol: HTTP}", &format!("protocol: {protocol}}}"));
        let out = build(&config(&[REGISTRY, &gw]));
        assert!(out.table().listeners.is_empty(), "{protocol}");
        let w = out.only(Severity::Warning);
        assert_eq!(w.field.as_deref(), Some("servers[0].port.protocol"));
        assert!(
            w.message.contains("not supported until HTTP/2 exists"),
            "{w}"
        );
    }
}

#[test]
fn a_bound_http_server_takes_the_bind_address_into_the_route_config_name() {
    let gw = GATEWAY.replace("  - port:", "  - bind: 127.0.0.1\n    port:");
    let route = vs(
        "a",
        &format!("  hosts: ['*']\n  gateways: [gw]\n{SIMPLE_ROUTE}"),
    );
    let out = build(&config(&[REGISTRY, &gw, &route]));
    assert_eq!(out.table().listeners[0].name, "127.0.0.1_18080");
    assert_eq!(out.http(18080).name, "http.18080.127.0.0.1");
}

// ---------------------------------------------------------------- virtual hosts

#[test]
fn hosts_are_the_more_specific_of_each_server_and_virtual_service_pair() {
    struct Case {
        server: &'static str,
        vs: &'static str,
        vhosts: &'static [&'static str],
    }
    let cases = [
        Case {
            server: "'*.istio.com'",
            vs: "tomcat.istio.com",
            vhosts: &["tomcat.istio.com:18080"],
        },
        Case {
            server: "tomcat.istio.com",
            vs: "'*'",
            vhosts: &["tomcat.istio.com:18080"],
        },
        Case {
            server: "'*'",
            vs: "'*.istio.com'",
            vhosts: &["*.istio.com:18080"],
        },
        Case {
            server: "other/tomcat.istio.com",
            vs: "tomcat.istio.com",
            vhosts: &["blackhole:18080"],
        },
        Case {
            server: "./Tomcat.Istio.com",
            vs: "tomcat.istio.com",
            vhosts: &["tomcat.istio.com:18080"],
        },
    ];
    for case in cases {
        let gw = GATEWAY.replace("hosts: ['*']", &format!("hosts: [{}]", case.server));
        let route = vs(
            "a",
            &format!("  hosts: [{}]\n  gateways: [gw]\n{SIMPLE_ROUTE}", case.vs),
        );
        let out = build(&config(&[REGISTRY, &gw, &route]));
        let names: Vec<&str> = out
            .http(18080)
            .vhosts
            .iter()
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(
            names, case.vhosts,
            "server {} × vs {}",
            case.server, case.vs
        );
    }
}

#[test]
fn vhost_choice_is_exact_then_longest_wildcard_then_star() {
    let route = |name: &str, host: &str, subset: &str| {
        vs(
            name,
            &format!(
                "  hosts: ['{host}']\n  gateways: [gw]\n  http:\n  - name: {name}\n    route: [{{destination: {{host: front-tomcat, subset: {subset}}}}}]\n"
            ),
        )
    };
    let out = build(&config(&[
        REGISTRY,
        GATEWAY,
        &route("star", "*", "v1"),
        &route("wide", "*.istio.com", "v1"),
        &route("eu", "*.eu.istio.com", "v2"),
        &route("exact", "tomcat.eu.istio.com", "v2"),
    ]));
    for (host, want) in [
        ("tomcat.eu.istio.com", "exact"),
        ("bill.eu.istio.com:18080", "eu"),
        ("bill.istio.com", "wide"),
        ("example.org", "star"),
    ] {
        let got = out.route(18080, &get(host, "/")).map(|r| r.name.as_str());
        assert_eq!(got, Some(want), "{host}");
    }
}

#[test]
fn a_second_virtual_service_appends_and_catch_alls_move_last() {
    let first = vs(
        "first",
        "  hosts: [tomcat.istio.com]\n  gateways: [gw]\n  http:\n  - name: all\n    route: [{destination: {host: front-tomcat, subset: v1}}]\n",
    );
    let second = vs(
        "second",
        "  hosts: [tomcat.istio.com]\n  gateways: [gw]\n  http:\n  - name: api\n    match: [{uri: {prefix: /api}}]\n    route: [{destination: {host: front-tomcat, subset: v2}}]\n",
    );
    let out = build(&config(&[REGISTRY, GATEWAY, &first, &second]));
    let http = out.http(18080);
    assert_eq!(http.vhosts.len(), 1);
    let names: Vec<&str> = http.vhosts[0]
        .routes
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(names, ["api", "all"]);
    assert_eq!(
        out.route(18080, &get("tomcat.istio.com", "/api/x"))
            .map(|r| r.name.as_str()),
        Some("api")
    );
    assert_eq!(
        out.route(18080, &get("tomcat.istio.com", "/"))
            .map(|r| r.name.as_str()),
        Some("all")
    );
}

#[test]
fn routes_of_one_virtual_service_stop_after_its_first_catch_all() {
    let route = vs(
        "a",
        "  hosts: ['*']\n  gateways: [gw]\n  http:\n  - name: first\n    match: [{uri: {prefix: /x}}, {uri: {regex: '.*'}}, {uri: {exact: /never}}]\n    route: [{destination: {host: front-tomcat, subset: v1}}]\n  - name: second\n    route: [{destination: {host: front-tomcat, subset: v2}}]\n",
    );
    let out = build(&config(&[REGISTRY, GATEWAY, &route]));
    let sources: Vec<&str> = out.http(18080).vhosts[0]
        .routes
        .iter()
        .map(|r| r.source.as_str())
        .collect();
    assert_eq!(
        sources,
        ["default/a http[0].match[0]", "default/a http[0].match[1]"]
    );
    let w = out.only(Severity::Warning);
    assert_eq!(w.field.as_deref(), Some("http[1]"));
    assert!(
        w.message.contains(
            "unreachable: VirtualService default/a http[0] before it matches every request"
        ),
        "{w}"
    );
}

// ---------------------------------------------------------------- matches

#[test]
fn each_match_kind_is_compiled_and_decides_requests() {
    let route = vs(
        "a",
        "  hosts: ['*']\n  gateways: [gw]\n  http:
  - name: r
    match:
    - {name: exact, uri: {exact: /exact}}
    - {name: nocase, uri: {prefix: /CaSe}, ignoreUriCase: true}
    - {name: regex, uri: {regex: '/items/[0-9]+'}}
    - {name: post, method: {exact: POST}}
    - {name: authority, authority: {prefix: api.}}
    - {name: header, headers: {X-User: {exact: jason}}}
    - {name: present, headers: {x-canary: {}}}
    - {name: star, headers: {x-star: {regex: '*'}}}
    - {name: without, uri: {prefix: /w}, withoutHeaders: {x-debug: {}}}
    - {name: query, queryParams: {v: {exact: '2'}}}
    route: [{destination: {host: front-tomcat, subset: v2}}]
  - name: rest
    route: [{destination: {host: front-tomcat, subset: v1}}]
",
    );
    let out = build(&config(&[REGISTRY, GATEWAY, &route]));
    assert!(
        out.messages(Severity::Warning).is_empty(),
        "{:?}",
        out.messages(Severity::Warning)
    );
    let cases: [(Req, &str); 13] = [
        (get("h", "/exact"), "r.exact"),
        (get("h", "/exact/more"), "rest"),
        (get("h", "/case/x"), "r.nocase"),
        (get("h", "/items/42"), "r.regex"),
        (get("h", "/items/42x"), "rest"),
        (
            Req {
                method: "POST",
                ..get("h", "/p")
            },
            "r.post",
        ),
        (get("api.example.com", "/p"), "r.authority"),
        (
            Req {
                headers: vec![("x-user", "jason")],
                ..get("h", "/p")
            },
            "r.header",
        ),
        (
            Req {
                headers: vec![("x-canary", "")],
                ..get("h", "/p")
            },
            "r.present",
        ),
        (
            Req {
                headers: vec![("x-star", "anything")],
                ..get("h", "/p")
            },
            "r.star",
        ),
        (get("h", "/w"), "r.without"),
        (
            Req {
                headers: vec![("x-debug", "1")],
                ..get("h", "/w")
            },
            "rest",
        ),
        (get("h", "/p?a=1&v=2"), "r.query"),
    ];
    for (req, want) in cases {
        let got = out.route(18080, &req).map(|r| r.name.as_str());
        assert_eq!(
            got,
            Some(want),
            "{} {}?{:?}",
            req.method,
            req.path,
            req.query
        );
    }
}

#[test]
fn port_gateways_and_source_selectors_are_decided_at_compile_time() {
    let second = GATEWAY
        .replace("name: gw}", "name: gw2}")
        .replace("18080", "18081");
    let route = vs(
        "a",
        "  hosts: ['*']\n  gateways: [gw, gw2]\n  http:
  - name: p
    match: [{port: 18081}]
    route: [{destination: {host: front-tomcat, subset: v2}}]
  - name: g
    match: [{gateways: [gw], uri: {prefix: /g}}]
    route: [{destination: {host: front-tomcat, subset: v2}}]
  - name: labels
    match: [{sourceLabels: {istio: ingressgateway}, uri: {prefix: /l}}]
    route: [{destination: {host: front-tomcat, subset: v2}}]
  - name: other-ns
    match: [{sourceNamespace: default, uri: {prefix: /n}}]
    route: [{destination: {host: front-tomcat, subset: v2}}]
  - name: rest
    route: [{destination: {host: front-tomcat, subset: v1}}]
",
    );
    let out = build(&config(&[REGISTRY, GATEWAY, &second, &route]));
    let names = |port| -> Vec<String> {
        out.http(port).vhosts[0]
            .routes
            .iter()
            .map(|r| r.name.clone())
            .collect()
    };
    // This instance runs in istio-system with label istio=ingressgateway.
    assert_eq!(names(18080), ["g", "labels", "rest"]);
    assert_eq!(names(18081), ["p"]);
    let elsewhere = CompileOptions {
        namespace: "default".into(),
        ..CompileOptions::default()
    };
    let out = build_with(&config(&[REGISTRY, GATEWAY, &second, &route]), &elsewhere);
    let names: Vec<&str> = out.http(18080).vhosts[0]
        .routes
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(names, ["g", "labels", "other-ns", "rest"]);
}

#[test]
fn header_keys_are_lowercased_and_pseudo_header_keys_are_ignored_with_a_warning() {
    let route = vs(
        "a",
        "  hosts: ['*']\n  gateways: [gw]\n  http:\n  - match: [{headers: {X-Team: {exact: a}, method: {exact: GET}}}]\n    route: [{destination: {host: front-tomcat, subset: v1}}]\n",
    );
    let text = config(&[REGISTRY, GATEWAY, &route]);
    let out = build(&text);
    let m = &out.http(18080).vhosts[0].routes[0].matcher;
    let keys: Vec<&str> = m.headers.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(keys, ["x-team"]);
    let w = out.only(Severity::Warning);
    assert_eq!(w.field.as_deref(), Some("http[0].match[0].headers.method"));
    assert!(
        w.message.contains("use the match's own method field"),
        "{w}"
    );
}

#[test]
fn a_bad_regex_is_an_error_naming_its_field_and_line() {
    let route = vs(
        "a",
        "  hosts: ['*']\n  gateways: [gw]\n  http:\n  - match:\n    - uri:\n        regex: '/items/(['\n    route: [{destination: {host: front-tomcat, subset: v1}}]\n",
    );
    let text = config(&[REGISTRY, GATEWAY, &route]);
    let out = build(&text);
    assert!(out.table.is_none());
    let e = out.only(Severity::Error);
    assert_eq!(e.field.as_deref(), Some("http[0].match[0].uri.regex"));
    assert_eq!(
        e.location.as_ref().map(|l| l.line),
        Some(line_of(&text, "regex: '/items/(["))
    );
    assert!(e.message.starts_with("bad regex \"/items/([\""), "{e}");
}

// ---------------------------------------------------------------- actions

#[test]
fn forward_settings_compile_as_istio_sets_them() {
    let route = vs(
        "a",
        "  hosts: ['*']\n  gateways: [gw]\n  http:
  - name: r
    match: [{uri: {prefix: /api/}}]
    rewrite: {uri: /v2/, authority: backend.internal}
    timeout: 5s
    retries: {attempts: 3, perTryTimeout: 2s, retryOn: 'gateway-error,reset,503,refused-stream'}
    headers:
      request: {set: {X-Gateway: ringway}, remove: [Cookie]}
      response: {add: {X-Served-By: gw}}
    route:
    - {destination: {host: front-tomcat, subset: v1}, weight: 100, headers: {request: {set: {x-version: v1}}}}
    - {destination: {host: front-tomcat, subset: v2}, weight: 0, headers: {request: {set: {x-version: v2}}}}
  - name: off
    timeout: 0s
    retries: {attempts: 0}
    route: [{destination: {host: front-tomcat, subset: v1}}]
",
    );
    let out = build(&config(&[REGISTRY, GATEWAY, &route]));
    let routes = &out.http(18080).vhosts[0].routes;
    let RouteAction::Forward(f) = &routes[0].action else {
        panic!("forward")
    };
    assert_eq!(out.split(&routes[0]), [(V1.to_owned(), 100)]);
    assert_eq!(f.destinations.len(), 1);
    assert_eq!(
        f.destinations[0].request.set,
        [("x-version".to_owned(), "v1".to_owned())]
    );
    assert!(
        matches!(f.rewrite.as_ref().and_then(|r| r.uri.as_ref()), Some(UriRewrite::Prefix(p)) if p == "/v2/")
    );
    assert_eq!(
        f.rewrite.as_ref().and_then(|r| r.authority.as_deref()),
        Some("backend.internal")
    );
    assert_eq!(f.timeout, Some(Duration::from_secs(5)));
    assert_eq!(f.retries.attempts, 3);
    assert_eq!(f.retries.per_try_timeout, Some(Duration::from_secs(2)));
    assert_eq!(
        f.retries.on,
        RetryOn {
            reset: true,
            gateway_error: true,
            status_codes: vec![503],
            ..RetryOn::default()
        }
    );
    assert_eq!(
        routes[0].headers.request.set,
        [("x-gateway".to_owned(), "ringway".to_owned())]
    );
    assert_eq!(routes[0].headers.request.remove, ["cookie"]);
    assert_eq!(
        routes[0].headers.response.add,
        [("x-served-by".to_owned(), "gw".to_owned())]
    );
    let req = get("h", "/api/users?id=7");
    assert_eq!(
        routes[0].rewritten_target(&req).as_deref(),
        Some("/v2/users?id=7")
    );
    let RouteAction::Forward(off) = &routes[1].action else {
        panic!("forward")
    };
    assert_eq!((off.timeout, off.retries.attempts), (None, 0));
    // refused-stream is accepted with a note: it never fires on HTTP/1.1.
    let info = out.messages(Severity::Info);
    assert!(
        info.iter()
            .any(|m| m.contains("refused-stream accepted; never fires on an HTTP/1.1 upstream")),
        "{info:?}"
    );
}

#[test]
fn redirects_and_direct_responses_compile_with_istio_defaults() {
    let route = vs(
        "a",
        "  hosts: ['*']\n  gateways: [gw]\n  http:
  - match: [{uri: {prefix: /old/}}]
    redirect: {prefixRewrite: /new/}
  - match: [{uri: {exact: /moved}}]
    redirect: {uri: /here, authority: example.com, scheme: https, derivePort: FROM_REQUEST_PORT, redirectCode: 308}
  - match: [{uri: {exact: /health}}]
    directResponse: {status: 200, body: {string: ok}}
  - match: [{uri: {exact: /bytes}}]
    directResponse: {status: 503, body: {bytes: aGVsbG8=}}
",
    );
    let out = build(&config(&[REGISTRY, GATEWAY, &route]));
    let routes = &out.http(18080).vhosts[0].routes;
    let RouteAction::Redirect(r) = &routes[0].action else {
        panic!("redirect")
    };
    assert_eq!(r.code, 301);
    assert!(matches!(&r.path, Some(PathRedirect::Prefix(p)) if p == "/new/"));
    let req = get("tomcat.istio.com:18080", "/old/page?x=1");
    assert_eq!(
        r.location(&routes[0].matcher, &req, 18080),
        "http://tomcat.istio.com:18080/new/page?x=1"
    );
    let RouteAction::Redirect(r) = &routes[1].action else {
        panic!("redirect")
    };
    assert_eq!((r.code, r.port), (308, Some(RedirectPort::FromRequestPort)));
    assert_eq!(
        r.location(&routes[1].matcher, &get("h", "/moved"), 18080),
        "https://example.com:18080/here"
    );
    let RouteAction::Direct(d) = &routes[2].action else {
        panic!("direct")
    };
    assert_eq!((d.status, d.body.as_deref()), (200, Some(&b"ok"[..])));
    let RouteAction::Direct(d) = &routes[3].action else {
        panic!("direct")
    };
    assert_eq!((d.status, d.body.as_deref()), (503, Some(&b"hello"[..])));
}

#[test]
fn invalid_actions_are_errors_naming_the_field_and_what_is_valid() {
    struct Case {
        rule: &'static str,
        field: &'static str,
        says: &'static str,
    }
    let big = format!("'{}'", "x".repeat((1 << 20) + 1));
    let cases = [
        Case {
            rule: "redirect: {uri: /a, redirectCode: 200}",
            field: "http[0].redirect.redirectCode",
            says: "valid: 301, 302, 303, 307, 308",
        },
        Case {
            rule: "directResponse: {status: 99}",
            field: "http[0].directResponse.status",
            says: "out of range (200-599)",
        },
        Case {
            rule: "directResponse: {status: 200, body: {bytes: '***'}}",
            field: "http[0].directResponse.body.bytes",
            says: "not base64",
        },
        Case {
            rule: "directResponse: {status: 200, body: {string: BIG}}",
            field: "http[0].directResponse.body",
            says: "at most 1048576 bytes",
        },
        Case {
            rule: "retries: {retryOn: 'sometimes'}\n    route: [{destination: {host: front-tomcat, subset: v1}}]",
            field: "http[0].retries.retryOn",
            says: "\"sometimes\" is not a retry condition",
        },
        Case {
            rule: "rewrite: {uriRegexRewrite: {match: '(', rewrite: /}}\n    route: [{destination: {host: front-tomcat, subset: v1}}]",
            field: "http[0].rewrite.uriRegexRewrite.match",
            says: "bad regex",
        },
        Case {
            rule: "redirect: {uri: /a}\n    route: [{destination: {host: front-tomcat, subset: v1}}]",
            field: "http[0]",
            says: "exactly one of route, redirect, directResponse or delegate (it has route, redirect)",
        },
    ];
    for case in cases {
        let rule = case.rule.replace("BIG", &big);
        let route = vs(
            "a",
            &format!("  hosts: ['*']\n  gateways: [gw]\n  http:\n  - {rule}\n"),
        );
        let out = build(&config(&[REGISTRY, GATEWAY, &route]));
        assert!(out.table.is_none(), "{}", case.field);
        let e = out.only(Severity::Error);
        assert_eq!(e.field.as_deref(), Some(case.field), "{e}");
        assert!(e.message.contains(case.says), "{e}");
    }
}

#[test]
fn fault_mirror_and_cors_are_accepted_not_applied() {
    let route = vs(
        "a",
        "  hosts: ['*']\n  gateways: [gw]\n  http:\n  - corsPolicy: {allowOrigins: [{exact: a}]}\n    mirror: {host: front-tomcat}\n    route: [{destination: {host: front-tomcat, subset: v1}}]\n",
    );
    let out = build(&config(&[REGISTRY, GATEWAY, &route]));
    let fields: Vec<Option<&str>> = out
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Warning)
        .map(|d| d.field.as_deref())
        .collect();
    assert_eq!(fields, [Some("http[0].mirror"), Some("http[0].corsPolicy")]);
    assert!(
        out.messages(Severity::Warning)
            .iter()
            .all(|m| m.contains("accepted, not applied"))
    );
}

// ---------------------------------------------------------------- delegate

const DELEGATE: &str = "  http:
  - name: v1
    match: [{uri: {prefix: /reviews/v1}}]
    route: [{destination: {host: front-tomcat, subset: v1}}]
  - name: clash
    match: [{uri: {prefix: /ratings}}]
    route: [{destination: {host: front-tomcat, subset: v1}}]
  - name: rest
    route: [{destination: {host: front-tomcat, subset: v2}}]
";

#[test]
fn a_delegate_is_merged_under_its_root_match_as_istio_does() {
    let root = vs(
        "root",
        "  hosts: ['*']\n  gateways: [gw]\n  http:\n  - name: reviews\n    match: [{uri: {prefix: /reviews}, headers: {x-team: {exact: a}}}]\n    timeout: 3s\n    delegate: {name: reviews}\n",
    );
    let text = config(&[REGISTRY, GATEWAY, &root, &vs("reviews", DELEGATE)]);
    let out = build(&text);
    let routes = &out.http(18080).vhosts[0].routes;
    let names: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["reviews-v1", "reviews-rest"]);
    // The merged rest rule carries the root's match and timeout.
    let with_team = Req {
        headers: vec![("x-team", "a")],
        ..get("h", "/reviews/x")
    };
    assert_eq!(
        out.route(18080, &with_team).map(|r| r.name.as_str()),
        Some("reviews-rest")
    );
    assert!(out.route(18080, &get("h", "/reviews/x")).is_none());
    let RouteAction::Forward(f) = &routes[1].action else {
        panic!("forward")
    };
    assert_eq!(f.timeout, Some(Duration::from_secs(3)));
    assert_eq!(out.split(&routes[1]), [(V2.to_owned(), 1)]);
    // A delegate rule outside the root's match never applies: Istio drops it.
    let w = out.only(Severity::Warning);
    assert_eq!(
        w.resource.as_deref(),
        Some("VirtualService default/reviews")
    );
    assert_eq!(w.field.as_deref(), Some("http[1].match"));
    assert!(
        w.message
            .contains("never applies through VirtualService default/root http[0]"),
        "{w}"
    );
}

#[test]
fn a_missing_delegate_is_an_error() {
    let root = vs(
        "root",
        "  hosts: ['*']\n  gateways: [gw]\n  http:\n  - delegate: {name: nowhere, namespace: team}\n",
    );
    let text = config(&[REGISTRY, GATEWAY, &root]);
    let out = build(&text);
    let e = out.only(Severity::Error);
    assert_eq!(e.field.as_deref(), Some("http[0].delegate"));
    assert_eq!(
        e.location.as_ref().map(|l| l.line),
        Some(line_of(&text, "delegate: {name: nowhere"))
    );
    assert!(
        e.message
            .contains("delegate VirtualService team/nowhere is not defined"),
        "{e}"
    );
}

// ---------------------------------------------------------------- DestinationRule

fn with_policy(policy: &str) -> String {
    let rule = format!(
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: front-tomcat}}
spec:
  host: front-tomcat
  trafficPolicy:
{policy}  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
"
    );
    let registry = REGISTRY
        .split("---\n")
        .next()
        .unwrap_or_default()
        .to_owned();
    let route = vs(
        "a",
        &format!("  hosts: ['*']\n  gateways: [gw]\n{SIMPLE_ROUTE}"),
    );
    config(&[&registry, &rule, GATEWAY, &route])
}

#[test]
fn connection_pool_http_settings_reach_the_cluster() {
    let out = build(&with_policy(
        "    connectionPool:
      http:
        idleTimeout: 30s
        maxRequestsPerConnection: 1
        http1MaxPendingRequests: 64
        http2MaxRequests: 100
        maxRetries: 3
        h2UpgradePolicy: UPGRADE
",
    ));
    let c = out.table().cluster_by_name(V1).expect("cluster");
    let http = c.policy.http;
    assert_eq!(http.idle_timeout, Duration::from_secs(30));
    assert_eq!(http.max_requests_per_connection, Some(1));
    assert_eq!(http.max_pending_requests, Some(64));
    assert_eq!(http.max_requests, Some(100));
    assert_eq!(http.max_retries, Some(3));
    let w = out.only(Severity::Warning);
    assert_eq!(
        w.field.as_deref(),
        Some("trafficPolicy.connectionPool.http.h2UpgradePolicy")
    );
    assert!(
        w.message.contains("no effect until ringway speaks HTTP/2"),
        "{w}"
    );
    // Unset: Istio's defaults.
    let out = build(&with_policy(
        "    connectionPool: {tcp: {maxConnections: 10}}\n",
    ));
    let http = out
        .table()
        .cluster_by_name(V1)
        .expect("cluster")
        .policy
        .http;
    assert_eq!(http.idle_timeout, Duration::from_secs(3600));
    assert_eq!(http.max_requests_per_connection, None);
}

#[test]
fn consistent_hash_keys_select_the_request_hash() {
    use ringway::routing::table::{LoadBalancer, RequestHashKey};
    for (hash, key) in [
        (
            "{httpHeaderName: X-User}",
            RequestHashKey::Header("x-user".into()),
        ),
        (
            "{httpCookie: {name: session}}",
            RequestHashKey::Cookie("session".into()),
        ),
        (
            "{httpQueryParameterName: user}",
            RequestHashKey::Query("user".into()),
        ),
    ] {
        let out = build(&with_policy(&format!(
            "    loadBalancer: {{consistentHash: {hash}}}\n"
        )));
        let p = &out.table().cluster_by_name(V1).expect("cluster").policy;
        assert_eq!(
            (p.load_balancer, p.request_hash.as_ref()),
            (LoadBalancer::RequestHash, Some(&key)),
            "{hash}"
        );
        assert!(
            out.messages(Severity::Warning).is_empty(),
            "{:?}",
            out.messages(Severity::Warning)
        );
    }
    let out = build(&with_policy(
        "    loadBalancer: {consistentHash: {httpHeaderName: x-user, useSourceIp: true}}\n",
    ));
    let e = out.only(Severity::Error);
    assert_eq!(
        e.field.as_deref(),
        Some("trafficPolicy.loadBalancer.consistentHash")
    );
    assert!(
        e.message
            .contains("set one hash key, not several (httpHeaderName, useSourceIp)"),
        "{e}"
    );
}

#[test]
fn outlier_detection_keeps_both_http_thresholds_and_the_tcp_one() {
    // (consecutive5xxErrors, consecutiveGatewayErrors) → (5xx, gateway, TCP).
    let cases = [
        ((7, 3), (Some(7), Some(3), 3)),
        ((0, 4), (None, Some(4), 4)),
        ((6, 0), (Some(6), None, 6)),
    ];
    for ((five, gateway), want) in cases {
        let out = build(&with_policy(&format!(
            "    outlierDetection: {{consecutive5xxErrors: {five}, consecutiveGatewayErrors: {gateway}}}\n"
        )));
        let c = out.table().cluster_by_name(V1).expect("cluster");
        let o = c.policy.outlier_detection.expect("set");
        let got = (
            o.consecutive_5xx,
            o.consecutive_gateway_errors,
            o.consecutive_errors,
        );
        assert_eq!(got, want, "{five}, {gateway}");
    }
}

#[test]
fn a_retries_block_without_attempts_disables_retries_as_istiod_does() {
    let route = vs(
        "a",
        "  hosts: ['*']\n  gateways: [gw]\n  http:\n  - retries: {perTryTimeout: 1s}\n    route: [{destination: {host: front-tomcat, subset: v1}}]\n",
    );
    let out = build(&config(&[REGISTRY, GATEWAY, &route]));
    let RouteAction::Forward(f) = &out.http(18080).vhosts[0].routes[0].action else {
        panic!("forward")
    };
    assert_eq!(f.retries.attempts, 0);
}
