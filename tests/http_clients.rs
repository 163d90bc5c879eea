//! Issue 13, real HTTP/1.x clients nobody here wrote, through ringway to a
//! test origin on 127.0.0.1: curl (HTTP/1.0, keep-alive over several URLs,
//! chunked upload), wrk (keep-alive and `Connection: close`), ab -k
//! (HTTP/1.0 keep-alive) and h2load --h1. Each run is bounded in requests
//! or seconds. A missing tool fails the test, naming its Debian package
//! (`.ci/run` installs them).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::process::{Command, Output, Stdio};

use common::http_gw::{Site, curl_upload, virtual_service};
use common::origin::{Origin, Response};

/// The body every request gets: 16 bytes.
const BODY: &str = "0123456789abcdef";

fn site() -> Option<Site> {
    let origin = Origin::start(|r| match r.method.as_str() {
        "PUT" | "POST" => Response::ok(format!("{} bytes", r.body.len())),
        _ => Response::ok(BODY),
    });
    let vs = virtual_service(
        "svc",
        &["*"],
        "[{route: [{destination: {host: svc, subset: a}}]}]",
    );
    Site::with_origins(vec![("a", origin)], "", &[vs], &[])
}

/// Run `tool` (from Debian package `package`) with `args` to completion.
fn run(tool: &str, package: &str, args: &[&str]) -> Output {
    let out = Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{tool} did not run ({e}): install Debian package {package}"));
    assert!(out.status.success(), "{tool} {args:?} failed: {out:?}");
    out
}

/// `tool` (from `package`) with `args` and then the URL of `site`: its
/// standard output.
fn load(site: &Site, tool: &str, package: &str, args: &[&str]) -> String {
    let url = format!("http://127.0.0.1:{}/", site.port);
    let mut args = args.to_vec();
    args.push(&url);
    stdout(&run(tool, package, &args))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The number after `label` on the line that has it.
fn number_after(text: &str, label: &str) -> u64 {
    let line = text
        .lines()
        .find(|l| l.contains(label))
        .unwrap_or_else(|| panic!("no {label:?} in:\n{text}"));
    let rest = &line[line.find(label).unwrap() + label.len()..];
    rest.trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after {label:?} in {line:?}"))
}

#[test]
fn curl_http_1_0_then_three_urls_on_one_connection_reuse_the_upstream_connection() {
    let Some(site) = site() else {
        return;
    };
    let url = format!("http://127.0.0.1:{}/", site.port);
    let out = run(
        "curl",
        "curl",
        &[
            "-sS",
            "--max-time",
            "10",
            "--http1.0",
            "-w",
            " %{http_code}",
            &url,
        ],
    );
    assert_eq!(stdout(&out), format!("{BODY} 200"));
    assert_eq!(site.origin("a").requests()[0].version, "HTTP/1.1");

    // Three URLs on one client connection, one upstream connection.
    let before = site.origin("a").connections();
    let out = run(
        "curl",
        "curl",
        &[
            "-sS",
            "--max-time",
            "10",
            "-w",
            "%{num_connects}\n",
            &url,
            &url,
            &url,
        ],
    );
    assert_eq!(stdout(&out), format!("{BODY}1\n{BODY}0\n{BODY}0\n"));
    assert_eq!(site.origin("a").connections(), before);
}

#[test]
fn curl_chunked_upload_from_stdin() {
    let Some(site) = site() else {
        return;
    };
    let upload = vec![b'u'; 300_000];
    let out = curl_upload(site.port, "/", &upload, &[]);
    assert_eq!(stdout(&out), "300000 bytes");
    let put = site.origin("a").requests().pop().unwrap();
    assert_eq!(
        (put.method.as_str(), put.header("transfer-encoding")),
        ("PUT", Some("chunked"))
    );
}

/// wrk for 2 s on 8 connections: (requests it completed, its summary).
fn wrk(site: &Site, extra: &[&str]) -> (u64, String) {
    let mut args = vec!["-c8", "-t1", "-d2s", "--timeout", "5s"];
    args.extend_from_slice(extra);
    let text = load(site, "wrk", "wrk", &args);
    // "  1467 requests in 2.12s, 78.79KB read"
    let requests = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no request count in:\n{text}"));
    (requests, text)
}

#[test]
fn wrk_keep_alive_two_seconds_without_errors() {
    let Some(site) = site() else {
        return;
    };
    let (requests, text) = wrk(&site, &[]);
    let text_ok = !text.contains("Non-2xx") && !text.contains("Socket errors");
    assert!(text_ok && requests > 100, "{text}");
    let origin = site.origin("a");
    assert!(origin.requests().len() as u64 >= requests, "{text}");
    // Keep-alive both sides: at most one upstream connection per client one.
    assert!(
        origin.connections() <= 8,
        "{} upstream connections",
        origin.connections()
    );
}

#[test]
fn wrk_with_connection_close_two_seconds_without_errors() {
    let Some(site) = site() else {
        return;
    };
    let (requests, text) = wrk(&site, &["-H", "Connection: close"]);
    let text_ok = !text.contains("Non-2xx") && !text.contains("Socket errors");
    assert!(text_ok && requests > 50, "{text}");
    assert!(
        site.origin("a").requests().len() as u64 >= requests,
        "{text}"
    );
}

#[test]
fn ab_http_1_0_keep_alive_2000_requests_without_failures() {
    let Some(site) = site() else {
        return;
    };
    let args = ["-k", "-n", "2000", "-c", "8", "-s", "10"];
    let text = load(&site, "ab", "apache2-utils", &args);
    assert_eq!(number_after(&text, "Complete requests:"), 2000, "{text}");
    assert_eq!(number_after(&text, "Failed requests:"), 0, "{text}");
    assert_eq!(number_after(&text, "Keep-Alive requests:"), 2000, "{text}");
    assert_eq!(
        number_after(&text, "HTML transferred:"),
        2000 * BODY.len() as u64,
        "{text}"
    );
    assert!(!text.contains("Non-2xx"), "{text}");
    assert_eq!(site.origin("a").requests().len(), 2000);
}

#[test]
fn h2load_h1_2000_requests_without_errors() {
    let Some(site) = site() else {
        return;
    };
    let args = ["--h1", "-n", "2000", "-c", "8", "-T", "10"];
    let text = load(&site, "h2load", "nghttp2-client", &args);
    let summary = "requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, 0 errored, 0 timeout";
    assert!(text.contains(summary), "{text}");
    assert!(
        text.contains("status codes: 2000 2xx, 0 3xx, 0 4xx, 0 5xx"),
        "{text}"
    );
    assert_eq!(site.origin("a").requests().len(), 2000);
}
