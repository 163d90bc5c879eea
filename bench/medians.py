#!/usr/bin/env python3
"""medians.py [--max-steal PCT] DIR...: medians (min-max, n) per target of
bulk1/bulk8 Gbit/s and CPU-s/GB, connrate conn/s and CPU-s per 10k, rr
p50/p99/p99.9, and crosscheck.sh's rates, over the runs.jsonl of run.sh or
crosscheck.sh result directories (e.g. the
per-round directories written by rounds.sh). With --max-steal, runs during
which the hypervisor stole PCT% or more of the CPUs' time are left out."""
import json, statistics, sys, collections
args = sys.argv[1:]
max_steal = None
if args[:1] == ["--max-steal"]:
    max_steal, args = float(args[1]), args[2:]
# crosscheck.sh tests: (result key, metric name).
CROSSCHECK = {
    "iperf1": [("gbit_per_s", "Gbit/s")], "iperf8": [("gbit_per_s", "Gbit/s")],
    "iperf1r": [("gbit_per_s", "Gbit/s")],
    "wrk64": [("requests_per_s", "req/s")], "wrk64close": [("requests_per_s", "req/s")],
    "wrk1m": [("gbit_per_s", "Gbit/s")],
    "redis": [("set_ops_per_s", "SET/s"), ("get_ops_per_s", "GET/s")],
    "redis16": [("set_ops_per_s", "SET/s"), ("get_ops_per_s", "GET/s")],
}
v = collections.defaultdict(list)
for d in args:
    for line in open(f"{d}/runs.jsonl"):
        r = json.loads(line); t, test, res = r["target"], r["test"], r["result"]
        steal = (res.get("machine") or {}).get("steal_pct", 0)
        if max_steal is not None and steal >= max_steal:
            continue
        if test in CROSSCHECK:
            for key, name in CROSSCHECK[test]:
                v[(t, f"{test} {name}")].append(res.get(key))
            continue
        if test == "connrate":
            v[(t, "connrate conn/s")].append(res.get("conns_per_s"))
            v[(t, "connrate CPU-s/10k")].append(res.get("proxy_cpu_s_per_10k_conns"))
        elif test in ("bulk1", "bulk8"):
            v[(t, test + " Gbit/s")].append(res.get("gbit_per_s"))
            v[(t, test + " CPU-s/GB")].append(res.get("proxy_cpu_s_per_gb"))
        elif test == "rr":
            lat = res.get("latency", {})
            for p in ("p50", "p99", "p99_9"):
                v[(t, "rr " + p.replace("_", ".") + " us")].append(lat.get(p))
            v[(t, "rr CPU-us/req")].append(res.get("proxy_cpu_us_per_request"))
targets = sorted({t for t, _ in v}, key=lambda t: (t != "haproxy-splice", t))
metrics = ["bulk1 Gbit/s", "bulk8 Gbit/s", "bulk1 CPU-s/GB", "bulk8 CPU-s/GB", "connrate conn/s", "connrate CPU-s/10k", "rr p50 us", "rr p99 us", "rr p99.9 us", "rr CPU-us/req"]
metrics += [f"{test} {name}" for test, pairs in CROSSCHECK.items() for _, name in pairs]
print("| metric | " + " | ".join(targets) + " |")
print("|---" * (len(targets) + 1) + "|")
def f(x): return f"{x:.3g}" if x < 1000 else f"{x:,.0f}"
for m in metrics:
    row = []
    for t in targets:
        xs = [x for x in v.get((t, m), []) if x is not None]
        row.append(f"{f(statistics.median(xs))} ({f(min(xs))}–{f(max(xs))}, n={len(xs)})" if xs else "–")
    if any(r != "–" for r in row):
        print(f"| {m} | " + " | ".join(row) + " |")
