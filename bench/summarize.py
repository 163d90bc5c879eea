#!/usr/bin/env python3
"""Summarise one bench/run.sh or bench/crosscheck.sh results directory
(standard library only).

Reads  DIR/meta.json and DIR/runs.jsonl (one result JSON per line; meta.json's
"kind" is "crosscheck" for crosscheck.sh, absent for run.sh).
Writes DIR/results.json (meta, every run, medians), DIR/summary.md (tables
with ratios to HAProxy-splice and to direct) and DIR/plots/*.svg.
"""
import json
import statistics
import sys
from pathlib import Path

# key, test, path in the loadgen JSON, label, unit, which way is better,
# whether a ratio to direct makes sense (direct has no proxy CPU or memory).
METRICS = [
    ("bulk1_gbit", "bulk1", ["gbit_per_s"], "bulk 1 stream", "Gbit/s", "high", True),
    ("bulk8_gbit", "bulk8", ["gbit_per_s"], "bulk 8 streams", "Gbit/s", "high", True),
    ("cpu_per_gb_1", "bulk1", ["proxy_cpu_s_per_gb"], "CPU/GB, 1 stream", "CPU-s/GB", "low", False),
    ("cpu_per_gb_8", "bulk8", ["proxy_cpu_s_per_gb"], "CPU/GB, 8 streams", "CPU-s/GB", "low", False),
    ("conns_per_s", "connrate", ["conns_per_s"], "new connections", "conn/s", "high", True),
    ("cpu_per_10k", "connrate", ["proxy_cpu_s_per_10k_conns"], "CPU/10k conns", "CPU-s", "low", False),
    ("connrate_p99", "connrate", ["latency", "p99"], "connect+rr p99", "us", "low", True),
    ("rr_per_s", "rr", ["requests_per_s"], "rr rate", "req/s", "high", True),
    ("rr_p50", "rr", ["latency", "p50"], "rr p50", "us", "low", True),
    ("rr_p99", "rr", ["latency", "p99"], "rr p99", "us", "low", True),
    ("rr_p999", "rr", ["latency", "p99_9"], "rr p99.9", "us", "low", True),
    ("rr_cpu_us", "rr", ["proxy_cpu_us_per_request"], "CPU/request", "CPU-us", "low", False),
    ("idle_rss_kib", "idle", ["proxy_rss_kib_per_conn"], "RSS/idle conn", "KiB", "low", False),
    ("idle_dirty_kib", "idle", ["proxy_private_dirty_kib_per_conn"], "Private_Dirty/idle conn", "KiB", "low", False),
]
# bench/crosscheck.sh: third-party clients (iperf3, wrk, redis-benchmark).
CROSS_METRICS = [
    ("iperf1_gbit", "iperf1", ["gbit_per_s"], "iperf3 1 stream", "Gbit/s", "high", True),
    ("iperf1_cpu", "iperf1", ["proxy_cpu_s_per_gb"], "iperf3 1 stream CPU/GB", "CPU-s/GB", "low", False),
    ("iperf8_gbit", "iperf8", ["gbit_per_s"], "iperf3 -P 8", "Gbit/s", "high", True),
    ("iperf8_cpu", "iperf8", ["proxy_cpu_s_per_gb"], "iperf3 -P 8 CPU/GB", "CPU-s/GB", "low", False),
    ("iperf1r_gbit", "iperf1r", ["gbit_per_s"], "iperf3 -R (download)", "Gbit/s", "high", True),
    ("iperf1r_cpu", "iperf1r", ["proxy_cpu_s_per_gb"], "iperf3 -R CPU/GB", "CPU-s/GB", "low", False),
    ("wrk64_rps", "wrk64", ["requests_per_s"], "wrk 64 B keep-alive", "req/s", "high", True),
    ("wrk64_p50", "wrk64", ["latency", "p50"], "wrk 64 B keep-alive p50", "us", "low", True),
    ("wrk64_p99", "wrk64", ["latency", "p99"], "wrk 64 B keep-alive p99", "us", "low", True),
    ("wrk64_cpu", "wrk64", ["proxy_cpu_s_per_10k_requests"], "wrk 64 B keep-alive CPU/10k req", "CPU-s", "low", False),
    ("wrk64close_rps", "wrk64close", ["requests_per_s"], "wrk 64 B Connection: close", "req/s", "high", True),
    ("wrk64close_p50", "wrk64close", ["latency", "p50"], "wrk 64 B close p50", "us", "low", True),
    ("wrk64close_p99", "wrk64close", ["latency", "p99"], "wrk 64 B close p99", "us", "low", True),
    ("wrk64close_cpu", "wrk64close", ["proxy_cpu_s_per_10k_requests"], "wrk 64 B close CPU/10k req", "CPU-s", "low", False),
    ("wrk1m_rps", "wrk1m", ["requests_per_s"], "wrk 1 MiB keep-alive requests", "req/s", "high", True),
    ("wrk1m_gbit", "wrk1m", ["gbit_per_s"], "wrk 1 MiB keep-alive throughput", "Gbit/s", "high", True),
    ("wrk1m_p99", "wrk1m", ["latency", "p99"], "wrk 1 MiB p99", "us", "low", True),
    ("wrk1m_cpu", "wrk1m", ["proxy_cpu_s_per_gb"], "wrk 1 MiB CPU/GB", "CPU-s/GB", "low", False),
    ("redis_set", "redis", ["set_ops_per_s"], "redis SET", "ops/s", "high", True),
    ("redis_get", "redis", ["get_ops_per_s"], "redis GET", "ops/s", "high", True),
    ("redis_set_p50", "redis", ["set_latency", "p50"], "redis SET p50", "us", "low", True),
    ("redis_set_p99", "redis", ["set_latency", "p99"], "redis SET p99", "us", "low", True),
    ("redis_get_p50", "redis", ["get_latency", "p50"], "redis GET p50", "us", "low", True),
    ("redis_get_p99", "redis", ["get_latency", "p99"], "redis GET p99", "us", "low", True),
    ("redis_cpu", "redis", ["proxy_cpu_s_per_10k_requests"], "redis CPU/10k ops", "CPU-s", "low", False),
    ("redis16_set", "redis16", ["set_ops_per_s"], "redis -P 16 SET", "ops/s", "high", True),
    ("redis16_get", "redis16", ["get_ops_per_s"], "redis -P 16 GET", "ops/s", "high", True),
    ("redis16_set_p99", "redis16", ["set_latency", "p99"], "redis -P 16 SET p99", "us", "low", True),
    ("redis16_get_p99", "redis16", ["get_latency", "p99"], "redis -P 16 GET p99", "us", "low", True),
    ("redis16_cpu", "redis16", ["proxy_cpu_s_per_10k_requests"], "redis -P 16 CPU/10k ops", "CPU-s", "low", False),
]
BASE = "haproxy-splice"
# Hypervisor steal (% of all CPUs' time during a run) above which a run is
# listed under "Problems seen".
STEAL_LIMIT = 5.0


def dig(obj, path):
    for p in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(p)
    return obj if isinstance(obj, (int, float)) and not isinstance(obj, bool) else None


def fmt(v):
    if v is None:
        return "–"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def svg_bars(title, unit, rows, better):
    """Horizontal bar chart: rows = [(label, median, lo, hi)]."""
    rows = [r for r in rows if r[1] is not None]
    if not rows:
        return None
    w, left, bar, gap, top = 640, 140, 22, 10, 40
    h = top + len(rows) * (bar + gap) + 20
    vmax = max(r[3] if r[3] is not None else r[1] for r in rows) or 1.0
    scale = (w - left - 90) / vmax
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="10" y="22" font-size="14" font-weight="bold">{title} ({unit}, {"higher" if better == "high" else "lower"} is better)</text>']
    for i, (label, med, lo, hi) in enumerate(rows):
        y = top + i * (bar + gap)
        color = "#c0392b" if label.startswith("ringway") else ("#7f8c8d" if label == "direct" else "#2980b9")
        out.append(f'<text x="{left - 6}" y="{y + bar * 0.7}" text-anchor="end">{label}</text>')
        out.append(f'<rect x="{left}" y="{y}" width="{max(med * scale, 1):.1f}" height="{bar}" fill="{color}"/>')
        if lo is not None and hi is not None and hi > lo:
            out.append(f'<line x1="{left + lo * scale:.1f}" x2="{left + hi * scale:.1f}" y1="{y + bar / 2}" y2="{y + bar / 2}" stroke="black"/>')
        out.append(f'<text x="{left + max(med, hi or med) * scale + 6:.1f}" y="{y + bar * 0.7}">{fmt(med)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def main(d):
    d = Path(d)
    meta = json.loads((d / "meta.json").read_text())
    runs = [json.loads(l) for l in (d / "runs.jsonl").read_text().splitlines() if l.strip()]
    targets = meta["settings"]["targets"]
    cross = meta.get("kind") == "crosscheck"
    metrics = CROSS_METRICS if cross else METRICS

    stats = {}
    for t in targets:
        stats[t] = {}
        for key, test, path, *_ in metrics:
            vals = [dig(r["result"], path) for r in runs if r["target"] == t and r["test"] == test]
            vals = [v for v in vals if v is not None]
            stats[t][key] = {
                "median": statistics.median(vals) if vals else None,
                "min": min(vals) if vals else None,
                "max": max(vals) if vals else None,
                "n": len(vals),
            }
        rs = [r for r in runs if r["target"] == t]
        stats[t]["iou_wrk_threads_max"] = max([dig(r["result"], ["proxy", "iou_wrk_threads"]) or 0 for r in rs] or [0])
        stats[t]["proxy_threads_max"] = max([dig(r["result"], ["proxy", "threads"]) or 0 for r in rs] or [0])
        steal = [dig(r["result"], ["machine", "steal_pct"]) for r in rs]
        steal = [v for v in steal if v is not None]
        stats[t]["steal_pct_max"] = max(steal) if steal else None
        problems = []
        for r in rs:
            res = r["result"]
            if r["test"] in ("skipped", "crash"):
                problems.append(f"round {r['round']}: {r['test']}: {res.get('status')}")
                continue
            errs = res.get("errors")
            if isinstance(errs, list) and errs:
                problems.append(f"round {r['round']} {r['test']}: {len(errs)} stream error(s): {errs[0]}")
            elif isinstance(errs, int) and errs:
                problems.append(f"round {r['round']} {r['test']}: {errs} failed connections ({res.get('last_error')})")
            if res.get("error"):
                problems.append(f"round {r['round']} {r['test']}: {res['error']}")
            st = dig(res, ["machine", "steal_pct"])
            if st is not None and st > STEAL_LIMIT:
                problems.append(f"round {r['round']} {r['test']}: the hypervisor stole {st:.0f}% of the CPUs' time during the run")
            if r["test"] == "idle" and res.get("alive_after_hold") is False:
                problems.append(f"round {r['round']} idle: connections dead after the hold")
        stats[t]["problems"] = problems

    def med(t, k):
        return stats.get(t, {}).get(k, {}).get("median")

    def ratio(t, base, k):
        a, b = med(t, k), med(base, k)
        return a / b if a is not None and b else None

    (d / "results.json").write_text(json.dumps({"meta": meta, "medians": stats, "runs": runs}, indent=1) + "\n")

    m = meta
    L = []
    title = "ringway cross-check with third-party clients" if cross else "ringway benchmark"
    if m.get("label"):
        title += f" ({m['label']})"
    L.append(f"# {title}: {m['date']}\n")
    if m["settings"]["quick"] or m.get("label"):
        L.append("> **Smoke run / quick settings: not a measurement to quote.** Check the load average below; "
                 "other work on the machine makes these figures noisy.\n")
    L.append(f"- Machine: {m['cpu']}, {m['nproc']} CPUs, {m['mem_total']}; kernel `{m['kernel']}`")
    L.append(f"- Load average before/after: {m['loadavg_before']} / {m['loadavg_after']}")
    rw = m["ringway"]
    L.append(f"- bench commit `{m['bench_commit']}`; ringway `{rw['bin']}` at commit `{rw['commit']}`"
             + (f" (uncommitted modified files in its tree at run time: {rw['modified_files']})" if str(rw["modified_files"]) != "0" else "")
             + (f"; note: {rw['note']}" if rw.get("note") else "")
             + f", status: {rw['status']}")
    L.append(f"- {m['haproxy']}; {m['nginx']}" + "".join(f"; {v}" for v in m.get("tools", {}).values()))
    s = m["settings"]
    if cross:
        L.append(f"- Command: `{m['invocation']}` (WORKERS={s['workers']}, pinning: {s['pinning']}, {s['rounds']} round(s), "
                 f"{s['duration_s']} s per iperf3/wrk run, redis-benchmark -n {s['redis_n']} / {s['redis_n_pipelined']} with -P 16)")
        L.append("- Clients, as run (`<port>` is the target's front port for that server; every client runs under "
                 "`loadgen exec`, which samples the proxy's CPU before it starts and 200 ms after it exits):")
        for name, c in m["commands"].items():
            L.append(f"  - {name}: `{c}`")
        L.append("- Throughput: iperf3's receiver-side sum (`end.sum_received`); wrk: its own requests/s and latency "
                 "percentiles (bench/wrk-report.lua); redis: redis-benchmark's --csv rps and percentiles. "
                 "CPU per 10k requests: redis counts SET+GET operations.")
    else:
        L.append(f"- WORKERS={s['workers']} (pinning: {s['pinning']}), {s['rounds']} round(s), {s['duration_s']} s per measurement, "
                 f"connrate {s['connrate_concurrency']} threads, rr {s['rr_connections']} connection(s) × {s['request_bytes']} B, "
                 f"idle {s['idle_conns']} connections")
    L.append("- Figures are medians over rounds. CPU = utime+stime of the proxy's processes from /proc/PID/stat "
             "(all threads, io_uring workers included) over the measured interval. GB = 10^9 bytes (CPU-s/GiB = ×1.074).\n")

    # Only the metrics this run measured.
    cols = [c for c in metrics if any(stats[t][c[0]]["n"] for t in targets)]
    L.append("## Medians\n")
    L.append("| metric | " + " | ".join(targets) + " |")
    L.append("|---" * (len(targets) + 1) + "|")
    for c in cols:
        L.append(f"| {c[3]} ({c[4]}) | " + " | ".join(fmt(med(t, c[0])) for t in targets) + " |")
    L.append("| iou-wrk threads (max seen) | " + " | ".join("–" if t == "direct" else str(stats[t]["iou_wrk_threads_max"]) for t in targets) + " |")
    if any(stats[t]["steal_pct_max"] is not None for t in targets):
        L.append("| CPU steal, worst run (%) | " + " | ".join(fmt(stats[t]["steal_pct_max"]) for t in targets) + " |")
    L.append("| proxy threads (max seen) | " + " | ".join("–" if t == "direct" else str(stats[t]["proxy_threads_max"]) for t in targets) + " |")

    for base, label, only_direct in ((BASE, "HAProxy with forced splice (`haproxy-splice`)", False), ("direct", "direct loopback", True)):
        if base not in targets:
            continue
        use = [c for c in cols if (c[6] or not only_direct)]
        others = [t for t in targets if t != base]
        L.append(f"\n## Ratio to {label}\n")
        L.append("Target ÷ " + base + ". Throughput and rates: above 1 is better. CPU, latency and memory: below 1 is better.\n")
        L.append("| metric | " + " | ".join(others) + " |")
        L.append("|---" * (len(others) + 1) + "|")
        for c in use:
            cells = []
            for t in others:
                r = ratio(t, base, c[0])
                cells.append(f"{r:.2f}×" if r is not None else "–")
            L.append(f"| {c[3]} | " + " | ".join(cells) + " |")

    L.append("\n## Spread (min–max over rounds)\n")
    L.append("| metric | " + " | ".join(targets) + " |")
    L.append("|---" * (len(targets) + 1) + "|")
    for c in cols:
        L.append(f"| {c[3]} | " + " | ".join(
            (f"{fmt(stats[t][c[0]]['min'])}–{fmt(stats[t][c[0]]['max'])}" if stats[t][c[0]]["n"] else "–") for t in targets) + " |")

    probs = [(t, p) for t in targets for p in stats[t]["problems"]]
    L.append("\n## Problems seen\n")
    if probs:
        for t, p in probs:
            L.append(f"- **{t}**: {p}")
    else:
        L.append("None: every run completed without errors.")
    L.append("\nPlots: `plots/*.svg`. Every run: `runs.jsonl` / `results.json`. Configs: `configs/`."
             + (" Client outputs: `raw/`." if cross else ""))
    (d / "summary.md").write_text("\n".join(L) + "\n")

    pd = d / "plots"
    pd.mkdir(exist_ok=True)
    for key, test, path, label, unit, better, _ in metrics:
        rows = [(t, med(t, key), stats[t][key]["min"], stats[t][key]["max"]) for t in targets]
        svg = svg_bars(label, unit, rows, better)
        if svg:
            (pd / f"{key}.svg").write_text(svg + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
