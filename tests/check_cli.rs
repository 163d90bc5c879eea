//! `ringway check` as an operator runs it: exit codes 0 / 1 / 2, the text
//! report and the JSON report.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn example(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config")
        .join(rel)
}

fn check(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ringway"))
        .arg("check")
        .args(args)
        .output()
        .expect("run ringway")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_valid_configuration_exits_0_and_prints_listeners_routes_clusters_and_endpoints() {
    let dir = example("examples/tcp-echo");
    let out = check(&["-c", dir.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let text = stdout(&out);
    for needle in [
        "0.0.0.0:31400",
        "default/tcp-echo tcp[0]",
        "80%",
        "20%",
        "outbound|9000|v1|tcp-echo.default.svc.cluster.local",
        "127.0.0.1:29000",
        "valid: 1 listener(s), 1 route(s), 2 cluster(s), 2 endpoint(s); 0 warning(s)",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[test]
fn an_invalid_configuration_exits_1_and_names_file_line_resource_and_field() {
    let file = example("testdata/invalid/undeclared-subset.yaml");
    let out = check(&["-c", file.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let error = text
        .lines()
        .find(|l| l.starts_with("error: "))
        .expect("an error line");
    assert!(error.contains("undeclared-subset.yaml:"), "{error}");
    assert!(
        error.contains(
            "VirtualService default/tcp-echo: tcp[0].route[1].destination.subset: subset \"v3\""
        ),
        "{error}"
    );
    assert!(text.contains("invalid: 1 error(s)"), "{text}");
}

#[test]
fn strict_fails_on_warnings() {
    let dir = tempdir();
    let file = dir.join("gw.yaml");
    let text = std::fs::read_to_string(example("examples/kafka-rcmd.yaml")).expect("example")
        + "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: k, namespace: rcmd}\n\
           spec:\n  host: kafka-broker0\n  exportTo: ['.']\n";
    std::fs::write(&file, text).expect("write");
    let path = file.to_str().expect("utf-8");
    assert_eq!(check(&["-c", path]).status.code(), Some(0));
    let strict = check(&["-c", path, "--strict"]);
    assert_eq!(strict.status.code(), Some(1));
    assert!(stdout(&strict).contains("warning: "), "{}", stdout(&strict));
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(check(&[]).status.code(), Some(2), "no -c");
    assert_eq!(
        check(&["-c", "x.yaml", "--output", "xml"]).status.code(),
        Some(2)
    );
    assert_eq!(
        check(&["-c", "x.yaml", "--labels", "novalue"])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn a_missing_file_is_an_error_not_a_crash() {
    let out = check(&["-c", "/nonexistent/ringway.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("cannot read /nonexistent/ringway.yaml"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn json_output_is_machine_readable() {
    let dir = example("examples/tcp-echo");
    let out = check(&["-c", dir.to_str().expect("utf-8"), "--output", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["valid"], true);
    assert_eq!(v["errors"], 0);
    let listener = &v["table"]["listeners"][0];
    assert_eq!(listener["address"], "0.0.0.0:31400");
    assert_eq!(listener["routing"]["protocol"], "tcp");
    let route =
        &v["table"]["routes"][listener["routing"]["route"].as_u64().expect("route index") as usize];
    assert_eq!(route["clusters"][0]["weight"], 80);
    assert_eq!(route["idle_timeout"], "1h");
    assert_eq!(
        v["table"]["clusters"][0]["policy"]["load_balancer"],
        "LEAST_REQUEST"
    );
    assert_eq!(v["diagnostics"][0]["severity"], "info");

    let bad = example("testdata/invalid/negative-weight.yaml");
    let out = check(&["-c", bad.to_str().expect("utf-8"), "--output", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["valid"], false);
    assert_eq!(v["table"], serde_json::Value::Null);
    let e = &v["diagnostics"][0];
    assert_eq!(e["severity"], "error");
    assert!(e["location"]["line"].as_u64().is_some_and(|l| l > 0));
    assert_eq!(e["resource"], "VirtualService default/tcp-echo");
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ringway-check-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).expect("tempdir");
    dir
}

/// Gateways that open no listener serve nothing: `check` fails, unless the
/// files are a part of a configuration (`--partial`).
#[test]
fn gateways_that_open_no_listener_fail_check_unless_partial() {
    let file = example("examples/tcp-echo/10-tcp-echo-all-v1.yaml");
    let dir = tempfile::tempdir().expect("dir");
    // The tutorial's Gateway alone: no VirtualService binds it.
    let text = std::fs::read_to_string(&file).expect("example");
    let gateway = text.split("---").next().expect("gateway document");
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, gateway).expect("write");
    let out = check(&["-c", path.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("has 1 Gateway(s) and opens no listener: it would serve nothing"),
        "{}",
        stdout(&out)
    );
    let out = check(&["--partial", "-c", path.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

/// Seed 004: the HTTP table shows listener → virtual host → route, its
/// match, action and weighted clusters; the tutorial's mesh-only
/// VirtualService is a warning with its file and line.
#[test]
fn an_http_configuration_prints_listeners_vhosts_routes_and_shares() {
    let dir = example("examples/seed-004");
    let out = check(&["-c", dir.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[..3],
        [
            "HTTP LISTENER       VHOST                ROUTE               MATCH  ACTION              WEIGHT  CLUSTER",
            "0.0.0.0:80 http.80  tomcat.istio.com:80  front-tomcat-route  *      forward, retries 2  90%     outbound|8080|v1|front-tomcat.default.svc.cluster.local",
            "                                                                                        10%     outbound|8080|v2|front-tomcat.default.svc.cluster.local",
        ]
    );
    let warning = lines
        .iter()
        .find(|l| l.starts_with("warning: "))
        .expect("a warning");
    assert!(
        warning.contains(
            "10-front-tomcat-virtualservice.yaml:9: VirtualService default/front-tomcat: gateways: gateways is not set"
        ),
        "{warning}"
    );
    assert!(
        text.contains(
            "valid: 1 listener(s), 1 route(s), 2 cluster(s), 2 endpoint(s); 1 warning(s)"
        ),
        "{text}"
    );
}
