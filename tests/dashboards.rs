//! Istio's Grafana dashboards against ringway, end to end: Debian's
//! Prometheus (`/usr/bin/prometheus`, started here on its own port and
//! storage) scrapes `/stats/prometheus` every second while traffic flows:
//! TCP connections 80/20 through Istio's tcp-echo example, and HTTP
//! requests through seed 004 (an HTTP Gateway and a VirtualService 90/10
//! between front-tomcat's v1, answering 200, and v2, answering 503) plus
//! requests for a host nothing serves (404 NR). Then every TCP and HTTP
//! query (request volume, success rate, duration quantiles, request and
//! response sizes) of Istio's service, workload and mesh dashboards,
//! checked in with its variables resolved in `tests/dashboards/queries.json`
//! (from the Istio commit named there; `tests/dashboards/extract.py`
//! regenerates it), is evaluated through Prometheus's HTTP API and must
//! return exactly the series its legend expects, and each drop-down (the
//! variables' own queries) exactly the options expected; the counters and
//! histograms behind the panels are checked against the traffic's exact
//! numbers. `promtool check metrics` checks a scrape when present.
//!
//! Without Prometheus the test says so and passes, except under
//! RINGWAY_REQUIRE_URING=1 or CI, where it fails: `.ci/run` installs it.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::origin::{Origin, Response};
use common::{
    ConfigDir, EchoBackend, Ports, Ringway, connect, http, http_within, read_to_end, require_uring,
    say, tcp_echo,
};
use serde_json::Value;

const PROMETHEUS: &str = "/usr/bin/prometheus";
const SERVICE: &str = "tcp-echo.default.svc.cluster.local";
const CONNECTIONS: usize = 50;
/// Seed 004's host, and the requests sent to it.
const HOST: &str = "tomcat.istio.com";
const REQUESTS: usize = 100;
/// A host no VirtualService serves, and the requests sent to it (404 NR).
const OTHER_HOST: &str = "other.istio.com";
const NR: usize = 10;

/// Prometheus started by the test; killed (by its PID) and reaped on drop.
struct Prometheus {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(port: u16, admin: u16) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n- job_name: ringway\n  metrics_path: /stats/prometheus\n  \
                 static_configs:\n  - targets: ['127.0.0.1:{admin}']\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut p = Prometheus { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((200, _)) = http_within(port, "GET", "/-/ready", Duration::from_secs(2)) {
                return p;
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("prometheus exited ({status}):\n{}", p.log());
            }
            assert!(
                Instant::now() < deadline,
                "prometheus never ready:\n{}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query's result vector (`data.result`).
    fn query(&self, promql: &str) -> Vec<Value> {
        let path = format!("/api/v1/query?query={}", encode(promql));
        let (status, body) = http(self.port, "GET", &path);
        assert_eq!(status, 200, "{promql}\n{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "{promql}\n{body}");
        v["data"]["result"].as_array().unwrap().clone()
    }

    /// The sum of an instant query's sample values.
    fn total(&self, promql: &str) -> f64 {
        self.query(promql)
            .iter()
            .map(|s| s["value"][1].as_str().unwrap().parse::<f64>().unwrap())
            .sum()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encoding for a query-string value (RFC 3986 unreserved kept).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Grafana's legend: `{{ label }}` replaced by the series' value; `None`
/// when a label the legend names is missing or empty on the series.
fn legend(format: &str, metric: &Value) -> Option<String> {
    let mut out = String::new();
    let mut rest = format;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("}}")? + start;
        let name = rest[start + 2..end].trim();
        let value = metric[name].as_str().filter(|v| !v.is_empty())?;
        out.push_str(value);
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    Some(out)
}

fn prometheus_present() -> bool {
    if Path::new(PROMETHEUS).exists() {
        return true;
    }
    let why = format!(
        "{PROMETHEUS} is missing (Debian: apt-get install prometheus); \
         Istio's dashboards are not checked"
    );
    assert!(
        !require_uring() && std::env::var_os("CI").is_none(),
        "{why}"
    );
    eprintln!("SKIPPED: {why}");
    false
}

/// Waits until Prometheus has scraped every TCP connection closed and
/// every HTTP request counted, and then two more scrapes (irate needs two),
/// waited for by their timestamps rather than slept for.
fn wait_scraped(prom: &Prometheus) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let totals = [
        ("sum(istio_tcp_connections_closed_total)", CONNECTIONS),
        ("sum(istio_requests_total)", REQUESTS + NR),
    ];
    for (total, n) in totals {
        while prom.total(total) != n as f64 {
            assert!(
                Instant::now() < deadline,
                "prometheus never scraped {total} = {n}: {:?}\n{}",
                prom.query(total),
                prom.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let reached = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let last_scrape = "max(timestamp(istio_tcp_connections_closed_total))";
    while prom.total(last_scrape) < reached + 2.0 {
        assert!(
            Instant::now() < deadline,
            "no scrape after {reached}: {:?}",
            prom.query(last_scrape)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The numbers behind the TCP panels, exactly: the split and the bytes
/// ("hi\n" in, "one hi\n" / "two hi\n" out).
fn tcp_numbers(prom: &Prometheus, one: u32, two: u32) {
    for (workload, n) in [("tcp-echo-0", one), ("tcp-echo-1", two)] {
        let q = format!(
            "sum(istio_tcp_connections_opened_total{{destination_workload=\"{workload}\"}})"
        );
        assert_eq!(prom.total(&q), f64::from(n), "{q}");
    }
    let q = format!("sum(istio_tcp_received_bytes_total{{destination_service=\"{SERVICE}\"}})");
    assert_eq!(prom.total(&q), 3.0 * CONNECTIONS as f64, "{q}");
    let q = format!("sum(istio_tcp_sent_bytes_total{{destination_service=\"{SERVICE}\"}})");
    assert_eq!(prom.total(&q), 7.0 * CONNECTIONS as f64, "{q}");
}

/// The HTTP half of the traffic: seed 004's Gateway and VirtualService
/// (90/10 between subsets v1 and v2 of front-tomcat) on `listen`, v1
/// answering 200 and v2 503.
fn seed_004(config: ConfigDir, listen: u16, v1: &Origin, v2: &Origin) -> ConfigDir {
    let port = [("number: 80\n", format!("number: {listen}\n"))];
    config
        .example(
            "seed-004/00-service-entry.yaml",
            "30-front-tomcat-service-entry.yaml",
            &[
                ("18081", v1.port.to_string()),
                ("18082", v2.port.to_string()),
            ],
        )
        .example(
            "seed-004/20-front-tomcat-destinationrule.yaml",
            "31-front-tomcat-destinationrule.yaml",
            &[],
        )
        .example(
            "seed-004/30-front-tomcat-gateway.yaml",
            "32-front-tomcat-gateway.yaml",
            &port,
        )
        .example(
            "seed-004/40-front-tomcat-gateway-virtualservice.yaml",
            "33-gateway-front-tomcat.yaml",
            &[],
        )
}

/// What the HTTP clients sent and read for one destination workload.
#[derive(Debug, Default, PartialEq)]
struct Exchanged {
    requests: usize,
    /// Request bytes written (heads; no bodies).
    sent: usize,
    /// Response bytes read (heads and bodies).
    read: usize,
}

/// `GET /` with `Host: host` on a new connection the client asks to close:
/// the status, and the bytes written and read.
fn get(port: u16, host: &str) -> (u16, usize, usize) {
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let mut s = connect(port);
    s.write_all(request.as_bytes()).unwrap();
    let (response, end) = read_to_end(&mut s);
    end.unwrap();
    let text = String::from_utf8_lossy(&response);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("GET / for {host}: {text:?}"));
    (status, request.len(), response.len())
}

/// The HTTP traffic: [`REQUESTS`] for [`HOST`], split exactly 90/10 (smooth
/// weighted round robin on one worker) between v1's 200s and v2's 503s, and
/// [`NR`] for [`OTHER_HOST`], 404 NR; by destination workload as Istio
/// labels it.
fn http_traffic(port: u16) -> BTreeMap<&'static str, Exchanged> {
    let mut by: BTreeMap<&str, Exchanged> = BTreeMap::new();
    let hosts = std::iter::repeat_n(HOST, REQUESTS).chain(std::iter::repeat_n(OTHER_HOST, NR));
    for host in hosts {
        let (status, sent, read) = get(port, host);
        let workload = match (host, status) {
            (HOST, 200) => "front-tomcat-0",
            (HOST, 503) => "front-tomcat-1",
            (OTHER_HOST, 404) => "unknown",
            other => panic!("unexpected answer {other:?}"),
        };
        let seen = by.entry(workload).or_default();
        seen.requests += 1;
        seen.sent += sent;
        seen.read += read;
    }
    let requests: Vec<(&str, usize)> = by.iter().map(|(w, e)| (*w, e.requests)).collect();
    assert_eq!(
        requests,
        [
            ("front-tomcat-0", 90),
            ("front-tomcat-1", 10),
            ("unknown", NR)
        ]
    );
    by
}

/// The numbers behind the HTTP panels, exactly: each workload's requests
/// with their code and flags, each histogram's count, the request and
/// response bytes as the clients wrote and read them, and the one bucket
/// every request's size falls in (Envoy's buckets: ..., 50, 100, ...).
fn http_numbers(prom: &Prometheus, by: &BTreeMap<&str, Exchanged>) {
    let answers = [
        ("front-tomcat-0", "200", "-"),
        ("front-tomcat-1", "503", "-"),
        ("unknown", "404", "NR"),
    ];
    for (workload, code, flags) in answers {
        let seen = &by[workload];
        let n = seen.requests as f64;
        let q = format!(
            "sum(istio_requests_total{{destination_workload=\"{workload}\",\
             response_code=\"{code}\",response_flags=\"{flags}\",request_protocol=\"http\"}})"
        );
        assert_eq!(prom.total(&q), n, "{q}");
        let histograms = [
            ("istio_request_duration_milliseconds", None),
            ("istio_request_bytes", Some(seen.sent)),
            ("istio_response_bytes", Some(seen.read)),
        ];
        for (histogram, bytes) in histograms {
            let only = format!("{{destination_workload=\"{workload}\"}}");
            let q = format!("sum({histogram}_count{only})");
            assert_eq!(prom.total(&q), n, "{q}");
            if let Some(bytes) = bytes {
                let q = format!("sum({histogram}_sum{only})");
                assert_eq!(prom.total(&q), bytes as f64, "{q}");
            }
        }
    }
    let all = (REQUESTS + NR) as f64;
    for (le, n) in [("50", 0.0), ("100", all)] {
        let q = format!("sum(istio_request_bytes_bucket{{le=\"{le}\"}})");
        assert_eq!(prom.total(&q), n, "{q}");
    }
}

/// Every histogram series is cumulative: its buckets never decrease as
/// `le` grows, and `+Inf` holds its `_count`.
fn cumulative_histograms(prom: &Prometheus) {
    let histograms = [
        "istio_request_duration_milliseconds",
        "istio_request_bytes",
        "istio_response_bytes",
    ];
    for histogram in histograms {
        let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for s in prom.query(&format!("{histogram}_bucket")) {
            let mut labels = s["metric"].as_object().unwrap().clone();
            let le = labels.remove("le").unwrap();
            let le: f64 = le.as_str().unwrap().parse().unwrap();
            let n: f64 = s["value"][1].as_str().unwrap().parse().unwrap();
            let key = Value::Object(labels).to_string();
            series.entry(key).or_default().push((le, n));
        }
        assert_eq!(series.len(), 3, "{histogram}: {series:?}");
        for (labels, mut buckets) in series {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            let counts: Vec<f64> = buckets.iter().map(|b| b.1).collect();
            assert!(
                counts.windows(2).all(|w| w[0] <= w[1]),
                "{histogram} {labels}: {buckets:?}"
            );
            assert_eq!(
                buckets.last().unwrap().0,
                f64::INFINITY,
                "{histogram} {labels}"
            );
        }
        let q = format!("{histogram}_bucket{{le=\"+Inf\"}} != ignoring(le) {histogram}_count");
        assert_eq!(prom.query(&q), Vec::<Value>::new(), "{q}");
    }
}

#[test]
fn istios_dashboards_read_ringway_through_prometheus() {
    if !prometheus_present() {
        return;
    }
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/dashboards/queries.json"
        ))
        .unwrap(),
    )
    .unwrap();

    let ports = Ports::new();
    let (v1, v2) = (EchoBackend::lines("one"), EchoBackend::lines("two"));
    let tomcat_v1 = Origin::start(|_| Response::ok("v1"));
    let tomcat_v2 = Origin::start(|_| Response::status(503, "v2 unavailable"));
    let (listen, web_listen) = (ports.listener(), ports.listener());
    let admin = ports.admin();
    let web = ports.admin();
    let config = seed_004(
        tcp_echo(listen, &v1, &v2, true),
        web_listen,
        &tomcat_v1,
        &tomcat_v2,
    );
    let address = format!("127.0.0.1:{admin}");
    let Some(_gw) = Ringway::start(&config, &["--workers", "1", "--admin", &address]) else {
        return;
    };
    let prom = Prometheus::start(web, admin);

    let (one, two) = tcp_traffic(listen);
    let exchanged = http_traffic(web_listen);
    wait_scraped(&prom);
    tcp_numbers(&prom, one, two);
    http_numbers(&prom, &exchanged);
    cumulative_histograms(&prom);

    let mut failures = drop_downs(&prom, &file);
    failures.extend(panels(&prom, &file));
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // istio_build as the mesh dashboard's versions panel shows it.
    let build = prom.query("sum by (component,tag) (istio_build)");
    assert_eq!(build.len(), 1, "{build:?}");
    assert_eq!(
        build[0]["metric"]["tag"].as_str(),
        Some(env!("CARGO_PKG_VERSION"))
    );

    promtool_check(admin);
}

/// 50 connections, 80/20 between v1 (tcp-echo-0) and v2 (tcp-echo-1):
/// how many each answered.
fn tcp_traffic(listen: u16) -> (u32, u32) {
    let (mut one, mut two) = (0u32, 0u32);
    for _ in 0..CONNECTIONS {
        match say(listen, "hi").as_str() {
            "one hi" => one += 1,
            "two hi" => two += 1,
            other => panic!("unexpected reply {other:?}"),
        }
    }
    assert!(one > 0 && two > 0 && one > two, "one {one}, two {two}");
    (one, two)
}

/// The drop-downs: each variable offers exactly the expected options; what
/// differs, one line each.
fn drop_downs(prom: &Prometheus, file: &Value) -> Vec<String> {
    let mut failures = Vec::new();
    for o in file["options"].as_array().unwrap() {
        let got: BTreeSet<String> = prom
            .query(o["resolved"].as_str().unwrap())
            .iter()
            .flat_map(|s| {
                s["metric"]
                    .as_object()
                    .unwrap()
                    .values()
                    .map(|v| v.as_str().unwrap().to_owned())
                    .collect::<Vec<_>>()
            })
            .collect();
        let want: BTreeSet<String> = o["expect"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        if got != want {
            failures.push(format!(
                "{} ({}) variable ${}: options {got:?}, want {want:?}\n  {}",
                o["dashboard"],
                o["setup"],
                o["variable"].as_str().unwrap(),
                o["resolved"]
            ));
        }
    }
    failures
}

/// The panels: exactly the expected series, each with its legend; what
/// differs, one line each.
fn panels(prom: &Prometheus, file: &Value) -> Vec<String> {
    let mut failures = Vec::new();
    let mut lit = 0;
    for q in file["queries"].as_array().unwrap() {
        let expr = q["resolved"].as_str().unwrap();
        let result = prom.query(expr);
        let want = q["expect"].as_array().unwrap();
        let what = format!("{} / {} ({})", q["dashboard"], q["panel"], q["setup"]);
        if result.len() != want.len() {
            failures.push(format!(
                "{what}: {} series, want {}\n  {expr}\n  {result:?}",
                result.len(),
                want.len()
            ));
            continue;
        }
        for w in want {
            let found = result.iter().find(|s| {
                w.as_object()
                    .unwrap()
                    .iter()
                    .all(|(k, v)| s["metric"][k] == *v)
            });
            let Some(series) = found else {
                failures.push(format!("{what}: no series {w}\n  {expr}\n  {result:?}"));
                continue;
            };
            if legend(q["legend"].as_str().unwrap(), &series["metric"]).is_none() {
                failures.push(format!(
                    "{what}: legend {} blank for {}",
                    q["legend"], series["metric"]
                ));
            }
        }
        if !want.is_empty() {
            lit += 1;
        }
    }
    assert!(lit > 0);
    failures
}

/// promtool's own check of a scrape, when Debian's package brought it.
fn promtool_check(admin: u16) {
    if Path::new("/usr/bin/promtool").exists() {
        let (status, body) = http(admin, "GET", "/stats/prometheus");
        assert_eq!(status, 200);
        let mut check = Command::new("/usr/bin/promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        check
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        let out = check.wait_with_output().unwrap();
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Istio names its duration histogram in milliseconds, which
        // promtool's lint flags (exit status 3, one line per problem); the
        // dashboards query that name, so it is the one problem allowed, and
        // with HTTP traffic scraped it is reported.
        let istio_name = "istio_request_duration_milliseconds use base unit \"seconds\" instead of \"milliseconds\"";
        let lines: Vec<&str> = report.lines().map(str::trim).collect();
        assert_eq!(
            (out.status.code(), lines),
            (Some(3), vec![istio_name]),
            "promtool check metrics: {report}\n{body}"
        );
    }
}
