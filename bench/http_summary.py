#!/usr/bin/env python3
"""Report of a bench/http.sh run: results.json (every run, medians, min and
max per target and test), summary.md (one table per figure group, each
target a column, ringway's ratio to the better of HAProxy and nginx, the
issue 15 targets met or not) and plots/*.svg.

    python3 bench/http_summary.py RESULTS_DIR
    python3 bench/http_summary.py --parse-h2load FILE --conns N   # one h2load report -> JSON

Standard library only; the bar charts are summarize.py's.
"""

import json
import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from summarize import fmt, svg_bars  # noqa: E402

PEERS = ("haproxy-http", "nginx")
TESTS = {
    "ka64": "keep-alive, 64 B (wrk)",
    "h2ka64": "keep-alive, 64 B (h2load --h1)",
    "close64": "Connection: close, 64 B (wrk)",
    "dl1m": "1 MiB downloads (wrk)",
    "dl64m": "64 MiB downloads (wrk)",
    "up1m": "1 MiB uploads (wrk POST)",
    "idle": "idle keep-alive client connections (bench/http_idle.py)",
}
# (key, path in a run's result, label, unit, better)
FIGURES = [
    ("rps", "requests_per_s", "requests/s", "req/s", "high"),
    ("p50", "latency.p50", "p50", "µs", "low"),
    ("p99", "latency.p99", "p99", "µs", "low"),
    ("p99_9", "latency.p99_9", "p99.9", "µs", "low"),
    ("mean", "latency.mean", "mean latency", "µs", "low"),
    ("cpu10k", "proxy_cpu_s_per_10k_requests", "proxy CPU-s per 10k requests", "CPU-s", "low"),
    ("cpugb", "proxy_cpu_s_per_gb", "proxy CPU-s per GB of body", "CPU-s", "low"),
    ("upstream", "upstream_conns_opened", "upstream connections opened", "conns", "low"),
    ("rss", "proxy_rss_kib_per_conn", "proxy RSS per idle connection", "KiB", "low"),
    ("dirty", "proxy_private_dirty_kib_per_conn", "proxy Private_Dirty per idle connection", "KiB", "low"),
    ("kslab", "kernel_slab_objects_kib_per_conn", "kernel slab objects per idle connection, whole machine", "KiB", "low"),
    ("tcpmem", "tcp_mem_kib_per_conn", "TCP socket memory per idle connection, whole machine", "KiB", "low"),
    ("slab", "slab_unreclaimable_kib_per_conn", "unreclaimable slab per idle connection, whole machine", "KiB", "low"),
    ("steal", "machine.steal_pct", "hypervisor steal", "%", "low"),
]
BULK = ("dl1m", "dl64m", "up1m")


def dig(obj, path):
    for part in path.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


TIME = re.compile(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)")


def seconds_us(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return None
    return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)]


def parse_h2load(text, conns):
    """h2load's text report as the JSON fields http.sh records."""
    out = {"client_conns": conns}
    m = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", text)
    r = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed", text)
    s = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    t = TIME.search(text)
    if not (m and r):
        return {"error": "h2load: no summary in its output"}
    out.update(seconds=float(m.group(1)), requests_per_s=float(m.group(2)),
               requests=int(r.group(4)), failed=int(r.group(5)))
    if t:
        out["latency"] = {"unit": "us", "min": seconds_us(t.group(1)), "max": seconds_us(t.group(2)),
                          "mean": seconds_us(t.group(3))}
    if out["requests"] == 0:
        out["error"] = "h2load: no request succeeded"
    elif s and int(s.group(3)) + int(s.group(4)) > 0:
        out["error"] = f"h2load: {s.group(3)} 4xx and {s.group(4)} 5xx responses"
    return out


def medians(runs):
    """{(target, test): {figure: (median, min, max, n)}}, errors left out."""
    by = {}
    for run in runs:
        res = run.get("result", {})
        if run.get("test") in ("skipped", "crash") or res.get("error"):
            continue
        by.setdefault((run["target"], run["test"]), []).append(res)
    out = {}
    for key, results in by.items():
        figs = {}
        for name, path, *_ in FIGURES:
            vals = [v for v in (dig(r, path) for r in results) if isinstance(v, (int, float))]
            if vals:
                figs[name] = (statistics.median(vals), min(vals), max(vals), len(vals))
        out[key] = figs
    return out


def best_peer(med, test, fig, better):
    vals = [(med[(p, test)][fig][0], p) for p in PEERS if fig in med.get((p, test), {})]
    if not vals:
        return None, None
    return (max if better == "high" else min)(vals)


def verdicts(med, ringways):
    """The issue 15 targets for each ringway target: (what, ratio, met)."""
    out = []
    for rw in ringways:
        def ratio(test, fig, better):
            peer, who = best_peer(med, test, fig, better)
            own = med.get((rw, test), {}).get(fig)
            if peer in (None, 0) or own is None:
                return None, who
            return own[0] / peer, who
        for test in BULK:
            r, who = ratio(test, "cpugb", "low")
            if r is not None:
                out.append((rw, f"CPU per GB, {TESTS[test]}: ≤ 0.6× {who}", r, r <= 0.6))
        r, who = ratio("ka64", "cpu10k", "low")
        p, pwho = ratio("ka64", "p99", "low")
        if r is not None:
            out.append((rw, f"CPU per 10k keep-alive requests (wrk): ≤ 0.8× {who}", r, r <= 0.8))
        if p is not None:
            out.append((rw, f"keep-alive p99 (wrk): no worse than {pwho}", p, p <= 1.0))
        r, who = ratio("close64", "rps", "high")
        if r is not None:
            out.append((rw, f"Connection: close req/s: ≥ 1× {who}", r, r >= 1.0))
    return out


def table(med, targets, test, ringways):
    cols = targets + [f"{rw} ÷ best peer" for rw in ringways]
    lines = [f"### {TESTS.get(test, test)}", "", "| figure | " + " | ".join(cols) + " |",
             "|---" * (len(cols) + 1) + "|"]
    for name, _, label, unit, better in FIGURES:
        cells = []
        for t in targets:
            f = med.get((t, test), {}).get(name)
            if f is None:
                cells.append("–")
            else:
                cells.append(fmt(f[0]) if f[3] < 2 or f[1] == f[2] else f"{fmt(f[0])} ({fmt(f[1])}–{fmt(f[2])})")
        for rw in ringways:
            peer, who = best_peer(med, test, name, better)
            own = med.get((rw, test), {}).get(name)
            ok = name not in ("steal", "upstream", "tcpmem", "slab") and peer not in (None, 0) and own is not None
            cells.append(f"{own[0] / peer:.2f} ({who})" if ok else "–")
        if any(c != "–" for c in cells):
            lines.append(f"| {label} ({unit}) | " + " | ".join(cells) + " |")
    return lines


def problems(runs):
    out = []
    for run in runs:
        res = run.get("result", {})
        where = f"{run.get('target')} round {run.get('round')} {run.get('test')}"
        if run.get("test") in ("skipped", "crash"):
            out.append(f"- {where}: {res.get('status')}")
        elif res.get("error"):
            out.append(f"- {where}: {res['error']}")
        elif (dig(res, "machine.steal_pct") or 0) > 5:
            out.append(f"- {where}: hypervisor steal {res['machine']['steal_pct']}% (rerun before quoting)")
    return out


def header(meta):
    s = meta.get("settings", {})
    rw = meta.get("ringway", {})
    lines = [f"# HTTP side by side (issue 15), {meta.get('date', '?')}", ""]
    if s.get("quick"):
        lines += ["**QUICK run (1 round, short measurements): a smoke test, not to quote.**", ""]
    if meta.get("note"):
        lines += [f"**{meta['note']}**", ""]
    lines += [
        f"- command: `{meta.get('invocation', 'bench/http.sh')}`",
        f"- ringway: `{rw.get('bin')}` commit {rw.get('commit')} (modified files: {rw.get('modified_files')}); bench commit {meta.get('bench_commit')}",
        f"- machine: {meta.get('cpu')}, {meta.get('nproc')} CPUs, kernel {meta.get('kernel')}; {meta.get('haproxy')}; {meta.get('nginx')}",
        f"- load average before {meta.get('loadavg_before')}, after {meta.get('loadavg_after')}",
        f"- {s.get('workers')} worker(s), pinning: {s.get('pinning')}; {s.get('rounds')} round(s) × {s.get('duration_s')} s; "
        f"small tests {s.get('wrk_connections')} connections, 1 MiB {s.get('big_connections')}, "
        f"64 MiB {s.get('huge_connections')}, idle {s.get('idle_connections')}",
        f"- clients: `{dig(meta, 'commands.wrk')}`; `{dig(meta, 'commands.h2load')}`",
        "- cells: median over rounds (min–max); ratios: ringway ÷ the better of HAProxy and nginx on that figure",
        "  (below 1 is better for CPU and latency, above 1 for requests/s). Upstream connections opened: the",
        "  backend's stub_status `accepts` delta over the run (for direct, the client's own connections).",
        "  CPU per GB: body bytes (downloads: every byte wrk read; uploads: requests × 1 MiB). Idle memory:",
        "  after − before ÷ connections; the kernel figures are machine-wide (client and backend sockets",
        "  included): compare a proxy with direct.",
        "",
    ]
    return lines


def main(d):
    d = Path(d)
    meta = json.loads((d / "meta.json").read_text())
    runs = [json.loads(line) for line in (d / "runs.jsonl").read_text().splitlines() if line.strip()]
    med = medians(runs)
    targets = [t for t in meta.get("settings", {}).get("targets", []) if any(k[0] == t for k in med)]
    tests = [t for t in meta.get("settings", {}).get("tests", []) if any(k[1] == t for k in med)]
    ringways = [t for t in targets if t.startswith("ringway")]
    lines = header(meta)
    v = verdicts(med, ringways)
    if v:
        lines += ["## Issue 15 targets", "", "| ringway target | target | ratio | met |", "|---|---|---|---|"]
        lines += [f"| {rw} | {what} | {r:.2f} | {'yes' if ok else '**no**'} |" for rw, what, r, ok in v]
        lines.append("")
    lines += ["## Figures", ""]
    plots = d / "plots"
    plots.mkdir(exist_ok=True)
    for test in tests:
        lines += table(med, targets, test, ringways) + [""]
        for name, _, label, unit, better in FIGURES:
            if name in ("steal", "p50", "p99_9", "mean"):
                continue
            rows = [(t, *med[(t, test)][name][:3]) for t in targets if name in med.get((t, test), {})]
            svg = svg_bars(f"{test}: {label}", unit, rows, better)
            if svg:
                (plots / f"{test}-{name}.svg").write_text(svg)
    p = problems(runs)
    lines += ["## Problems seen", ""] + (p or ["- none"]) + [""]
    (d / "summary.md").write_text("\n".join(lines))
    results = {"meta": meta, "runs": runs, "verdicts": [
        {"target": rw, "what": what, "ratio": r, "met": ok} for rw, what, r, ok in v],
        "medians": [{"target": t, "test": k, "figures": {n: {"median": f[0], "min": f[1], "max": f[2], "n": f[3]}
                                                        for n, f in figs.items()}}
                    for (t, k), figs in sorted(med.items())]}
    (d / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--parse-h2load":
        conns = int(sys.argv[4]) if len(sys.argv) >= 5 and sys.argv[3] == "--conns" else None
        print(json.dumps(parse_h2load(Path(sys.argv[2]).read_text(), conns)))
    elif len(sys.argv) == 2:
        main(sys.argv[1])
    else:
        sys.exit(__doc__)
