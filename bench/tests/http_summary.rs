//! bench/http_summary.py on a made-up run: h2load's report parsed, medians
//! over rounds, ratios to the better peer, the issue 15 verdicts, errors and
//! steal listed, plots written. Needs python3 (standard library only).

use std::path::{Path, PathBuf};
use std::process::Command;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("http_summary.py")
}

const H2LOAD: &str = "finished in 2.00s, 30000.50 req/s, 3.52MB/s
requests: 60001 total, 60051 started, 60001 done, 60001 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 60001 2xx, 0 3xx, 0 4xx, 0 5xx
                     min         max         mean         sd        +/- sd
time for request:       98us     12.40ms      1.65ms       0.52ms    70.00%
";

#[test]
fn h2load_report_becomes_the_recorded_fields() {
    let dir = std::env::temp_dir().join(format!("http-summary-h2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("h2load.txt");
    std::fs::write(&file, H2LOAD).unwrap();
    let out = Command::new("python3")
        .arg(script())
        .args(["--parse-h2load", file.to_str().unwrap(), "--conns", "50"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["requests"], 60001, "{v}");
    assert_eq!(v["requests_per_s"], 30000.5, "{v}");
    assert_eq!(v["latency"]["mean"], 1650.0, "{v}");
    assert_eq!(v["latency"]["max"], 12400.0, "{v}");
    assert!(v.get("error").is_none(), "{v}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// One runs.jsonl line.
fn run(
    target: &str,
    round: u32,
    test: &str,
    rps: f64,
    cpu10k: f64,
    cpugb: f64,
    p99: f64,
) -> String {
    serde_json::json!({"target": target, "round": round, "test": test, "result": {
        "requests_per_s": rps, "proxy_cpu_s_per_10k_requests": cpu10k, "proxy_cpu_s_per_gb": cpugb,
        "latency": {"p50": p99 / 2.0, "p99": p99, "p99_9": p99 * 2.0}, "upstream_conns_opened": 50,
        "machine": {"steal_pct": if round == 2 && target == "nginx" { 9.0 } else { 0.5 }}}})
    .to_string()
}

#[test]
fn summary_has_medians_ratios_verdicts_and_problems() {
    let dir = std::env::temp_dir().join(format!("http-summary-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let meta = serde_json::json!({"date": "2026-12-01T08:00:00Z", "note": "busy machine",
        "settings": {"targets": ["direct", "haproxy-http", "nginx", "ringway"], "tests": ["ka64", "close64", "dl64m"],
                     "rounds": 3, "quick": false}});
    std::fs::write(dir.join("meta.json"), meta.to_string()).unwrap();
    let mut lines = Vec::new();
    for r in 1..=3 {
        let k = f64::from(r);
        lines.push(run("haproxy-http", r, "ka64", 30000.0, 0.30, 0.0, 2000.0));
        lines.push(run(
            "nginx",
            r,
            "ka64",
            31000.0 + k,
            0.20 + k / 100.0,
            0.0,
            1900.0,
        ));
        lines.push(run("ringway", r, "ka64", 33000.0, 0.15, 0.0, 1800.0));
        lines.push(run("haproxy-http", r, "close64", 9000.0, 1.0, 0.0, 9000.0));
        lines.push(run("nginx", r, "close64", 10000.0, 1.0, 0.0, 9000.0));
        lines.push(run("ringway", r, "close64", 8000.0, 0.9, 0.0, 9000.0));
        lines.push(run("haproxy-http", r, "dl64m", 10.0, 50.0, 0.5, 1e6));
        lines.push(run("nginx", r, "dl64m", 10.0, 50.0, 0.8, 1e6));
        lines.push(run("ringway", r, "dl64m", 10.0, 50.0, 0.25, 1e6));
    }
    lines.push(
        r#"{"target":"direct","round":1,"test":"ka64","result":{"error":"wrk: nothing read"}}"#
            .into(),
    );
    std::fs::write(dir.join("runs.jsonl"), lines.join("\n")).unwrap();
    let out = Command::new("python3")
        .arg(script())
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let md = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    // nginx's medians: 0.22 CPU-s per 10k (rounds 0.21, 0.22, 0.23); ringway 0.15 -> 0.68.
    assert!(
        md.contains(
            "| ringway | CPU per 10k keep-alive requests (wrk): ≤ 0.8× nginx | 0.68 | yes |"
        ),
        "{md}"
    );
    assert!(
        md.contains("| ringway | keep-alive p99 (wrk): no worse than nginx | 0.95 | yes |"),
        "{md}"
    );
    assert!(
        md.contains("| ringway | Connection: close req/s: ≥ 1× nginx | 0.80 | **no** |"),
        "{md}"
    );
    assert!(
        md.contains(
            "| ringway | CPU per GB, 64 MiB downloads (wrk): ≤ 0.6× haproxy-http | 0.50 | yes |"
        ),
        "{md}"
    );
    assert!(md.contains("**busy machine**"), "{md}");
    assert!(
        md.contains("- direct round 1 ka64: wrk: nothing read"),
        "{md}"
    );
    assert!(
        md.contains("- nginx round 2 ka64: hypervisor steal 9.0%"),
        "{md}"
    );
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["verdicts"].as_array().unwrap().len(), 4);
    assert!(dir.join("plots/ka64-cpu10k.svg").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
