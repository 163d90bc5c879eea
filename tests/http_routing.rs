//! Issue 13, HTTP routing at socket level: seed 004 verbatim with the real
//! `curl`, every match kind, every route action, virtual host precedence,
//! VirtualServices merged on one host, and the listener errors.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::process::Command;

use common::http_gw::{Site, destination_rule, gateway, named, service_entry, virtual_service};
use common::origin::{Origin, Response};
use common::{ConfigDir, Ports, Ringway, access_log, sample, wait_metrics};

/// `GET /` with `Host: tomcat.istio.com` by the real curl: (status, body).
fn curl(port: u16, host: &str) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}", "-H"])
        .arg(format!("Host:{host}"))
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .expect("curl runs (Debian package curl)");
    assert!(out.status.success(), "curl failed: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.to_owned(), body.to_owned())
}

#[test]
fn seed_004_splits_90_10_over_100_curl_requests_and_answers_other_hosts_404_nr() {
    let ports = Ports::new();
    let (listen, admin) = (ports.listener(), ports.admin());
    let v1 = named("v1");
    let v2 = named("v2");
    let port = [("number: 80\n", format!("number: {listen}\n"))];
    let config = ConfigDir::new()
        .example(
            "seed-004/00-service-entry.yaml",
            "00.yaml",
            &[
                ("18081", v1.port.to_string()),
                ("18082", v2.port.to_string()),
            ],
        )
        .example(
            "seed-004/10-front-tomcat-virtualservice.yaml",
            "10.yaml",
            &[],
        )
        .example(
            "seed-004/20-front-tomcat-destinationrule.yaml",
            "20.yaml",
            &[],
        )
        .example("seed-004/30-front-tomcat-gateway.yaml", "30.yaml", &port)
        .example(
            "seed-004/40-front-tomcat-gateway-virtualservice.yaml",
            "40.yaml",
            &[],
        );
    let log = config.path().join("access.log");
    let admin_addr = format!("127.0.0.1:{admin}");
    let args = [
        "--workers",
        "1",
        "--admin",
        &admin_addr,
        "--access-log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
    ];
    let Some(_gw) = Ringway::start(&config, &args) else {
        return;
    };

    let mut counts = (0, 0);
    for _ in 0..100 {
        match curl(listen, "tomcat.istio.com") {
            (code, body) if code == "200" && body == "v1" => counts.0 += 1,
            (code, body) if code == "200" && body == "v2" => counts.1 += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!(counts, (90, 10));

    // The host with the listener's port and in upper case match too.
    let with_port = format!("tomcat.istio.com:{listen}");
    for host in [with_port.as_str(), "TOMCAT.ISTIO.COM", "Tomcat.Istio.Com"] {
        let (code, body) = curl(listen, host);
        assert_eq!(code, "200", "{host}");
        assert!(body == "v1" || body == "v2", "{host}: {body}");
    }
    let served = v1.requests().len() + v2.requests().len();
    assert_eq!(served, 103);

    // Any other host: 404 NR, never forwarded.
    let (code, _) = curl(listen, "other.istio.com");
    assert_eq!(code, "404");
    assert_eq!(v1.requests().len() + v2.requests().len(), 103);
    let lines = access_log(&log, 104);
    let last = &lines[103];
    assert_eq!(last["response_code"], 404);
    assert_eq!(last["response_flags"], "NR");
    assert_eq!(last["authority"], "other.istio.com");
    assert_eq!(lines[0]["response_flags"], "-");
    assert_eq!(lines[0]["route_name"], "front-tomcat-route");
    let nr = [
        "response_code=\"404\"",
        "response_flags=\"NR\"",
        "destination_service=\"unknown\"",
    ];
    let metrics = wait_metrics(admin, |m| sample(m, "istio_requests_total", &nr) == 1);
    let ok = ["response_code=\"200\"", "response_flags=\"-\""];
    assert_eq!(sample(&metrics, "istio_requests_total", &ok), 103);
}

/// A request head: `start` ("GET /a") and header lines; `Host: h` unless
/// one is given.
fn req(start: &str, headers: &[&str]) -> String {
    let mut head = format!("{start} HTTP/1.1\r\n");
    if !headers
        .iter()
        .any(|h| h.to_ascii_lowercase().starts_with("host:"))
    {
        head.push_str("Host: h\r\n");
    }
    for h in headers {
        head.push_str(&format!("{h}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// A VirtualService on `*` whose first route has `matches` (a flow list)
/// and goes to origin `a`, and whose second goes to `b`: each of `hits`
/// must reach `a`, each of `misses` `b`.
fn match_case(matches: &str, hits: &[String], misses: &[String]) {
    let routes = format!(
        "[{{match: {matches}, route: [{{destination: {{host: svc, subset: a}}}}]}}, {{route: [{{destination: {{host: svc, subset: b}}}}]}}]"
    );
    let Some(site) = Site::start("", &[virtual_service("svc", &["*"], &routes)]) else {
        return;
    };
    for (want, requests) in [("a", hits), ("b", misses)] {
        for head in requests {
            let r = site.one(head);
            assert_eq!(
                (r.status, String::from_utf8_lossy(&r.body).as_ref()),
                (200, want),
                "{matches} for {head:?}"
            );
        }
    }
}

#[test]
fn uri_exact_matches_the_whole_path_only() {
    match_case(
        "[{uri: {exact: /api}}]",
        &[req("GET /api", &[]), req("GET /api?x=1", &[])],
        &[
            req("GET /api/", &[]),
            req("GET /apix", &[]),
            req("GET /API", &[]),
        ],
    );
}

#[test]
fn uri_prefix_matches_the_start_of_the_path() {
    match_case(
        "[{uri: {prefix: /api}}]",
        &[req("GET /api", &[]), req("GET /api/v1?x=1", &[])],
        &[
            req("GET /ap", &[]),
            req("GET /v1/api", &[]),
            req("GET /API", &[]),
        ],
    );
}

#[test]
fn uri_regex_must_match_the_whole_path() {
    match_case(
        "[{uri: {regex: \"/v[0-9]+/.*\"}}]",
        &[req("GET /v1/x", &[]), req("GET /v22/", &[])],
        &[
            req("GET /v1", &[]),
            req("GET /x/v1/x", &[]),
            req("GET /va/x", &[]),
        ],
    );
}

#[test]
fn ignore_uri_case_compares_exact_and_prefix_without_case() {
    match_case(
        "[{uri: {exact: /api}, ignoreUriCase: true}]",
        &[
            req("GET /api", &[]),
            req("GET /API", &[]),
            req("GET /aPi", &[]),
        ],
        &[req("GET /apix", &[])],
    );
    match_case(
        "[{uri: {prefix: /Img}, ignoreUriCase: true}]",
        &[req("GET /img/a.png", &[]), req("GET /IMG", &[])],
        &[req("GET /im", &[])],
    );
}

#[test]
fn method_matches() {
    match_case(
        "[{method: {exact: POST}}]",
        &[req("POST /", &["Content-Length: 0"])],
        &[req("GET /", &[]), req("PUT /", &["Content-Length: 0"])],
    );
}

#[test]
fn authority_matches_the_host_header() {
    match_case(
        "[{authority: {prefix: shop.}}]",
        &[req("GET /", &["Host: shop.example.com"])],
        &[
            req("GET /", &["Host: www.example.com"]),
            req("GET /", &["Host: xshop.example.com"]),
        ],
    );
}

#[test]
fn header_exact_prefix_regex_and_presence_match() {
    match_case(
        "[{headers: {x-env: {exact: canary}}}]",
        &[
            req("GET /", &["x-env: canary"]),
            req("GET /", &["X-Env: canary"]),
        ],
        &[
            req("GET /", &["x-env: Canary"]),
            req("GET /", &[]),
            req("GET /", &["x-env: canary2"]),
        ],
    );
    match_case(
        "[{headers: {x-env: {prefix: can}}}]",
        &[req("GET /", &["x-env: canary"])],
        &[req("GET /", &["x-env: prod"]), req("GET /", &[])],
    );
    match_case(
        "[{headers: {x-user: {regex: \"[a-z]+-[0-9]+\"}}}]",
        &[req("GET /", &["x-user: bob-42"])],
        &[
            req("GET /", &["x-user: bob-42x"]),
            req("GET /", &["x-user: 42"]),
        ],
    );
    match_case(
        "[{headers: {x-debug: {}}}]",
        &[
            req("GET /", &["x-debug: 1"]),
            req("GET /", &["x-debug: anything"]),
        ],
        &[req("GET /", &[]), req("GET /", &["x-debugger: 1"])],
    );
}

#[test]
fn without_headers_matches_a_missing_header_and_other_values() {
    match_case(
        "[{withoutHeaders: {x-env: {exact: canary}}}]",
        &[req("GET /", &[]), req("GET /", &["x-env: prod"])],
        &[req("GET /", &["x-env: canary"])],
    );
}

#[test]
fn query_params_match_values_and_a_bare_key() {
    match_case(
        "[{queryParams: {v: {exact: \"2\"}}}]",
        &[req("GET /?v=2", &[]), req("GET /p?a=1&v=2", &[])],
        &[
            req("GET /?v=22", &[]),
            req("GET /", &[]),
            req("GET /?w=2", &[]),
        ],
    );
    match_case(
        "[{queryParams: {debug: {exact: \"\"}}}]",
        &[req("GET /?debug", &[]), req("GET /?a=1&debug", &[])],
        &[req("GET /", &[]), req("GET /?nodebug", &[])],
    );
    match_case(
        "[{queryParams: {id: {regex: \"[0-9]+\"}}}]",
        &[req("GET /?id=123", &[])],
        &[req("GET /?id=12a", &[])],
    );
}

#[test]
fn match_blocks_are_ored_and_conditions_in_one_block_anded() {
    match_case(
        "[{uri: {exact: /x}}, {uri: {prefix: /y}, headers: {x-env: {exact: canary}}}]",
        &[req("GET /x", &[]), req("GET /y", &["x-env: canary"])],
        &[req("GET /y", &[]), req("GET /z", &["x-env: canary"])],
    );
}

/// One route with `action` (flow-style fields) on `*`, origins a and b.
fn action_site(action: &str) -> Option<Site> {
    let routes = format!("[{{{action}}}]");
    Site::start("", &[virtual_service("svc", &["*"], &routes)])
}

#[test]
fn redirect_codes_and_locations() {
    let cases: &[(&str, &str, u16, &str)] = &[
        (
            "redirect: {uri: /new}",
            "/old?q=1",
            301,
            "http://shop.example.com/new?q=1",
        ),
        (
            "redirect: {uri: /new, redirectCode: 302}",
            "/old",
            302,
            "http://shop.example.com/new",
        ),
        (
            "redirect: {authority: b.example.com, redirectCode: 308}",
            "/p",
            308,
            "http://b.example.com/p",
        ),
        (
            "redirect: {scheme: https, port: 8443}",
            "/p",
            301,
            "https://shop.example.com:8443/p",
        ),
        (
            "redirect: {scheme: https, derivePort: FROM_PROTOCOL_DEFAULT}",
            "/p",
            301,
            "https://shop.example.com/p",
        ),
        (
            "match: [{uri: {prefix: /old}}], redirect: {prefixRewrite: /new}",
            "/old/a/b",
            301,
            "http://shop.example.com/new/a/b",
        ),
    ];
    for (action, path, code, location) in cases {
        let Some(site) = action_site(action) else {
            return;
        };
        let r = site.get("shop.example.com", path);
        assert_eq!(
            (r.status, r.header("location")),
            (*code, Some(*location)),
            "{action}"
        );
        assert!(site.origin_requests().is_empty(), "{action}: forwarded");
    }
}

#[test]
fn redirect_derive_port_from_request_port_names_the_listener_port() {
    let Some(site) = action_site("redirect: {derivePort: FROM_REQUEST_PORT, uri: /x}") else {
        return;
    };
    let r = site.get("shop.example.com", "/");
    let want = format!("http://shop.example.com:{}/x", site.port);
    assert_eq!((r.status, r.header("location")), (301, Some(want.as_str())));
}

#[test]
fn direct_response_with_string_and_bytes_bodies() {
    let cases: &[(&str, u16, &[u8])] = &[
        (
            "directResponse: {status: 418, body: {string: \"teapot\\n\"}}",
            418,
            b"teapot\n",
        ),
        (
            "directResponse: {status: 200, body: {bytes: aGVsbG8=}}",
            200,
            b"hello",
        ),
        ("directResponse: {status: 503}", 503, b""),
    ];
    for (action, status, body) in cases {
        let Some(site) = action_site(action) else {
            return;
        };
        let r = site.get("h", "/");
        assert_eq!((r.status, r.body.as_slice()), (*status, *body), "{action}");
        assert!(site.origin_requests().is_empty(), "{action}: forwarded");
    }
}

#[test]
fn rewrite_uri_prefix_authority_and_regex_reach_the_origin() {
    let to_a = "route: [{destination: {host: svc, subset: a}}]";
    let cases: &[(String, &str, &str, &str)] = &[
        (
            format!("match: [{{uri: {{prefix: /old}}}}], rewrite: {{uri: /new}}, {to_a}"),
            "/old/x?q=1",
            "/new/x?q=1",
            "h",
        ),
        (
            format!(
                "match: [{{uri: {{exact: /a}}}}], rewrite: {{uri: /b, authority: backend.internal}}, {to_a}"
            ),
            "/a",
            "/b",
            "backend.internal",
        ),
        (
            format!(
                "rewrite: {{uriRegexRewrite: {{match: \"^/v1/(.*)$\", rewrite: \"/api/\\\\1\"}}}}, {to_a}"
            ),
            "/v1/users",
            "/api/users",
            "h",
        ),
    ];
    for (action, path, target, host) in cases {
        let Some(site) = action_site(action) else {
            return;
        };
        assert_eq!(site.get("h", path).status, 200, "{action}");
        let seen = site.origin("a").requests();
        assert_eq!(seen.len(), 1);
        assert_eq!(
            (seen[0].target.as_str(), seen[0].header("host")),
            (*target, Some(*host)),
            "{action}"
        );
    }
}

#[test]
fn header_operations_at_route_and_destination_level() {
    let origin = Origin::start(|_| {
        Response::ok("a")
            .header("x-drop", "1")
            .header("x-drop-dest", "1")
            .header("x-keep", "origin")
    });
    let routes = "[{headers: {request: {set: {x-set: route}, add: {x-add: route}, remove: [x-gone]}, response: {set: {x-keep: route}, add: {x-resp-add: route}, remove: [x-drop]}}, route: [{destination: {host: svc, subset: a}, headers: {request: {set: {x-dest: dest}, remove: [x-gone-dest]}, response: {add: {x-resp-dest: dest}, remove: [x-drop-dest]}}}]}]";
    let vs = virtual_service("svc", &["*"], routes);
    let Some(site) = Site::with_origins(vec![("a", origin)], "", &[vs], &[]) else {
        return;
    };
    let r = site.one(&req(
        "GET /",
        &[
            "x-set: client",
            "x-add: client",
            "x-gone: 1",
            "x-gone-dest: 1",
        ],
    ));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-keep"), Some("route"));
    assert_eq!(r.header("x-resp-add"), Some("route"));
    assert_eq!(r.header("x-resp-dest"), Some("dest"));
    assert_eq!((r.header("x-drop"), r.header("x-drop-dest")), (None, None));

    let seen = &site.origin("a").requests()[0];
    let values = |name: &str| -> Vec<&str> {
        seen.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(values("x-set"), ["route"]);
    assert_eq!(values("x-add"), ["client", "route"]);
    assert_eq!(values("x-dest"), ["dest"]);
    assert!(values("x-gone").is_empty() && values("x-gone-dest").is_empty());
}

#[test]
fn vhost_precedence_exact_then_longest_suffix_then_star() {
    let to = |s: &str| format!("[{{route: [{{destination: {{host: svc, subset: {s}}}}}]}}]");
    let vs = [
        virtual_service("exact", &["shop.example.com"], &to("a")),
        virtual_service("suffix", &["*.example.com"], &to("b")),
        virtual_service("longer", &["*.eu.example.com"], &to("c")),
        virtual_service("star", &["*"], &to("d")),
    ];
    let origins = vec![
        ("a", named("a")),
        ("b", named("b")),
        ("c", named("c")),
        ("d", named("d")),
    ];
    let Some(site) = Site::with_origins(origins, "", &vs, &[]) else {
        return;
    };
    for (host, want) in [
        ("shop.example.com", "a"),
        ("www.example.com", "b"),
        ("shop.eu.example.com", "c"),
        ("a.b.eu.example.com", "c"),
        ("example.com", "d"),
        ("other.org", "d"),
    ] {
        let r = site.get(host, "/");
        assert_eq!(
            (r.status, String::from_utf8_lossy(&r.body).as_ref()),
            (200, want),
            "{host}"
        );
    }
}

#[test]
fn two_virtual_services_on_one_host_move_the_first_ones_catch_all_last() {
    let first = virtual_service(
        "first",
        &["shop.example.com"],
        "[{route: [{destination: {host: svc, subset: a}}]}]",
    );
    let second = virtual_service(
        "second",
        &["shop.example.com"],
        "[{match: [{uri: {prefix: /b}}], route: [{destination: {host: svc, subset: b}}]}]",
    );
    let Some(site) = Site::start("", &[first, second]) else {
        return;
    };
    for (path, want) in [("/b", "b"), ("/b/x", "b"), ("/", "a"), ("/a", "a")] {
        let r = site.get("shop.example.com", path);
        assert_eq!(
            (r.status, String::from_utf8_lossy(&r.body).as_ref()),
            (200, want),
            "{path}"
        );
    }
}

#[test]
fn an_http_server_without_virtual_service_listens_and_answers_404() {
    let Some(site) = Site::start("", &[]) else {
        return;
    };
    let r = site.get("anything.example.com", "/");
    assert_eq!(r.status, 404);
    assert_eq!(r.header("server"), Some("ringway"));
    assert!(site.origin_requests().is_empty());
}

#[test]
fn tcp_and_http_servers_on_one_port_fail_check_naming_both() {
    let ports = Ports::new();
    let port = ports.listener();
    let origin = named("a");
    let gw = gateway(port, &["*"]).replace(
        "  servers:\n",
        &format!("  servers:\n  - port: {{number: {port}, name: tcp-raw, protocol: TCP}}\n    hosts: [\"*\"]\n"),
    );
    let text = [
        gw,
        service_entry(&[(origin.port, "a")]),
        destination_rule("", &["a"]),
    ]
    .join("---\n");
    let config = ConfigDir::new().file("gw.yaml", &text);
    let out = Command::new(common::ringway_bin())
        .args(["check", "-c"])
        .arg(config.path())
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{report}");
    let needles = [
        "servers[0]",
        "servers[1]",
        "TCP server",
        "HTTP server",
        "cannot share",
    ];
    for needle in needles.iter().copied().chain([format!(":{port}").as_str()]) {
        assert!(report.contains(needle), "no {needle:?} in:\n{report}");
    }
}
