#!/usr/bin/env python3
"""Issue 14's figures: a fleet of two ringway instances on a 3-member etcd.

Starts Debian's etcd (3 members on 127.0.0.1, data in a temporary
directory), two `ringway run --config-source etcd://...` instances (one
worker each, `--labels fleet=a|b`, JSON logs), then makes N applies, each
flipping the weights of one VirtualService, and measures:

- apply: the wall time of `ringway apply` (process start, read at one
  revision, validate for every registered label set, one transaction);
- apply start -> instance a / b serving the new table, and -> both
  ("fleet"): from the "configuration reloaded" line each instance logs
  after its atomic swap (its JSON timestamp, same host clock);
- txn acknowledged (apply returned) -> both serving (negative when the
  watch delivered before the apply process had exited);

optionally with R extra resources in the store (ServiceEntries, applied in
batches under etcd's 128-operation transaction limit), and the time from
killing the leader to the next successful apply (K kills).

Writes results.json and summary.md to --out, with the machine's CPU count
and the hypervisor steal seen during the run. Every process it starts is
stopped by PID on exit.

    bench/fleet.py --applies 300 --resources 1000 --kills 5 --out bench/results/DIR
"""

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROCS = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd, log):
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=open(log, "w"))
    PROCS.append(p)
    return p


def stop_all():
    for p in PROCS:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait()


def steal():
    with open("/proc/stat") as f:
        fields = f.readline().split()
    return int(fields[8]) if len(fields) > 8 else 0


class Etcd:
    def __init__(self, work):
        self.work = work
        self.members = [(f"m{i}", free_port(), free_port()) for i in range(3)]
        self.cluster = ",".join(f"{n}=http://127.0.0.1:{peer}" for n, _, peer in self.members)
        self.procs = [None] * 3
        for i in range(3):
            self.spawn(i)
        self.wait_healthy()

    def spawn(self, i):
        name, client, peer = self.members[i]
        self.procs[i] = start([
            "/usr/bin/etcd", "--name", name, "--data-dir", str(self.work / name),
            "--listen-client-urls", f"http://127.0.0.1:{client}",
            "--advertise-client-urls", f"http://127.0.0.1:{client}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", self.cluster, "--initial-cluster-state", "new",
            "--heartbeat-interval", "50", "--election-timeout", "500",
        ], self.work / f"{name}.log")

    def endpoints(self):
        return ",".join(f"127.0.0.1:{c}" for _, c, _ in self.members)

    def ctl(self, *args):
        live = ",".join(f"127.0.0.1:{c}" for i, (_, c, _) in enumerate(self.members)
                        if self.procs[i] and self.procs[i].poll() is None)
        return subprocess.run(["/usr/bin/etcdctl", "--endpoints", live, *args],
                              env={**os.environ, "ETCDCTL_API": "3"},
                              capture_output=True, text=True, timeout=20)

    def wait_healthy(self):
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.ctl("endpoint", "health").returncode == 0 and self.leader() is not None:
                return
            time.sleep(0.1)
        sys.exit("etcd did not become healthy")

    def leader(self):
        out = self.ctl("endpoint", "status", "-w", "json")
        try:
            for s in json.loads(out.stdout):
                if s["Status"]["leader"] == s["Status"]["header"]["member_id"]:
                    port = int(s["Endpoint"].rsplit(":", 1)[1])
                    return next(i for i, (_, c, _) in enumerate(self.members) if c == port)
        except (ValueError, KeyError, StopIteration):
            return None
        return None

    def kill(self, i):
        self.procs[i].send_signal(signal.SIGKILL)
        self.procs[i].wait()
        self.procs[i] = None


def config(listen, weights, extra):
    gateways = "---\n".join(
        f"apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: gw-{n}\nspec:\n"
        f"  selector:\n    fleet: {n}\n  servers:\n  - port:\n      number: {p}\n      name: tcp\n"
        f"      protocol: TCP\n    hosts:\n    - \"*\"\n" for n, p in zip("ab", listen))
    dest = lambda subset, w: (f"    - destination:\n        host: svc\n        port:\n          number: 9000\n"
                              f"        subset: {subset}\n      weight: {w}\n")
    route = ("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: svc\nspec:\n"
             "  hosts:\n  - \"*\"\n  gateways:\n  - gw-a\n  - gw-b\n  tcp:\n  - route:\n"
             + dest("v1", weights[0]) + dest("v2", weights[1]))
    backends = ("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: svc\nspec:\n"
                "  host: svc\n  subsets:\n  - name: v1\n    labels:\n      version: v1\n  - name: v2\n"
                "    labels:\n      version: v2\n---\n"
                "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: svc\nspec:\n"
                "  hosts:\n  - svc.default.svc.cluster.local\n  resolution: STATIC\n  ports:\n"
                "  - number: 9000\n    name: tcp\n    protocol: TCP\n  endpoints:\n"
                "  - address: 127.0.0.1\n    ports:\n      tcp: 19000\n    labels:\n      version: v1\n"
                "  - address: 127.0.0.1\n    ports:\n      tcp: 29000\n    labels:\n      version: v2\n")
    return {"gateways.yaml": gateways, "route.yaml": route, "backends.yaml": backends, **extra}


def write(dir_, files):
    for p in dir_.glob("*.yaml"):
        p.unlink()
    for name, text in files.items():
        (dir_ / name).write_text(text)


def filler(first, n):
    """n ServiceEntries, one file: resources that every compile carries."""
    docs = [f"apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: se-{k}\nspec:\n"
            f"  hosts:\n  - se-{k}.example.internal\n  resolution: STATIC\n  ports:\n"
            f"  - number: 9000\n    name: tcp\n    protocol: TCP\n  endpoints:\n  - address: 127.0.0.1\n"
            for k in range(first, first + n)]
    return "---\n".join(docs)


def reloads(log, needle="configuration reloaded"):
    """Timestamps (epoch seconds) of every line with `needle` (JSON logs)."""
    out = []
    try:
        text = Path(log).read_text()
    except OSError:
        return out
    for line in text.splitlines():
        if needle not in line:
            continue
        try:
            ts = json.loads(line)["timestamp"]
        except (ValueError, KeyError):
            continue
        out.append(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp())
    return out


def pct(values, p):
    values = sorted(values)
    if not values:
        return float("nan")
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


def summary(name, values_ms):
    return {"name": name, "n": len(values_ms), "p50": pct(values_ms, 50), "p99": pct(values_ms, 99),
            "max": max(values_ms) if values_ms else float("nan"),
            "median": statistics.median(values_ms) if values_ms else float("nan")}


def compactions(args, etcd, rw, prefix, listen, cfg, extra, work):
    """A third instance watching through member 2 only: kill that member,
    apply three times, compact past it, bring it back; the instance's watch
    is cancelled as compacted and it reads everything again. Measured from
    its "watch canceled" line to its next "configuration reloaded" line."""
    if not args.compactions:
        return []
    only = f"etcd://127.0.0.1:{etcd.members[2][1]}{prefix}"
    url = f"etcd://{etcd.endpoints()}{prefix}"
    log = work / "ringway-c.log"
    start([rw, "run", "--config-source", only, "--instance-id", "c", "--labels", "fleet=c",
           "--workers", "1", "--admin", "off", "--log-format", "json"], log)
    deadline = time.time() + 30
    while "serving" not in (log.read_text() if log.exists() else ""):
        if time.time() > deadline:
            sys.exit("instance c did not start")
        time.sleep(0.05)
    rows = []
    for k in range(args.compactions):
        cancels = len(reloads(log, "watch canceled"))
        done = len(reloads(log))
        etcd.kill(2)
        for j in range(3):
            w = (k * 13 + j * 29) % 101
            write(cfg, config(listen, (w, 100 - w), extra))
            subprocess.run([rw, "apply", "--config-source", url, "-f", str(cfg)], check=True, capture_output=True)
        rev = json.loads(etcd.ctl("get", "-w", "json", "/").stdout)["header"]["revision"]
        etcd.ctl("compact", str(rev), "--physical")
        etcd.spawn(2)
        etcd.wait_healthy()
        deadline = time.time() + 30
        while len(reloads(log, "watch canceled")) <= cancels or len(reloads(log)) <= done:
            if time.time() > deadline:
                sys.exit("instance c did not resync after compaction")
            time.sleep(0.01)
        cancel = reloads(log, "watch canceled")[cancels]
        reload = next(t for t in reloads(log)[done:] if t >= cancel)
        rows.append({"resync": reload - cancel})
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--applies", type=int, default=300)
    ap.add_argument("--resources", type=int, default=0, help="extra ServiceEntries in the store")
    ap.add_argument("--kills", type=int, default=0, help="leader kills, each followed by applies until one succeeds")
    ap.add_argument("--compactions", type=int, default=0,
                    help="times a third instance, on one member only, is compacted past and resyncs")
    ap.add_argument("--interval", type=float, default=0.05, help="seconds between applies")
    ap.add_argument("--out", required=True)
    ap.add_argument("--ringway", default=str(ROOT / "target/release/ringway"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ringway-fleet-"))
    try:
        run(args, out, work)
    finally:
        stop_all()
        subprocess.run(["rm", "-rf", str(work)])


def run(args, out, work):
    etcd = Etcd(work)
    prefix = "/ringway/bench"
    url = f"etcd://{etcd.endpoints()}{prefix}"
    rw = args.ringway
    listen = [free_port(), free_port()]
    cfg = work / "config"
    cfg.mkdir()
    extra = {}
    for first in range(0, args.resources, 120):
        n = min(120, args.resources - first)
        extra[f"filler-{first:05}.yaml"] = filler(first, n)
        write(cfg, config(listen, (100, 0), extra))
        subprocess.run([rw, "apply", "--config-source", url, "-f", str(cfg)], check=True,
                       capture_output=True)
    write(cfg, config(listen, (100, 0), extra))
    subprocess.run([rw, "apply", "--config-source", url, "-f", str(cfg)], check=True, capture_output=True)
    logs = []
    for name in "ab":
        log = work / f"ringway-{name}.log"
        logs.append(log)
        start([rw, "run", "--config-source", url, "--instance-id", name, "--labels", f"fleet={name}",
               "--workers", "1", "--admin", "off", "--log-format", "json"], log)
    deadline = time.time() + 30
    while not all("serving" in Path(l).read_text() for l in logs if Path(l).exists()) or len(logs) < 2:
        if time.time() > deadline:
            sys.exit("the instances did not start")
        time.sleep(0.05)
    time.sleep(0.5)
    steal0, t_start = steal(), time.time()
    rows = []
    for k in range(args.applies):
        w = (k * 7) % 101
        write(cfg, config(listen, (w, 100 - w), extra))
        before = [len(reloads(l)) for l in logs]
        t0 = time.time()
        res = subprocess.run([rw, "apply", "--config-source", url, "-f", str(cfg)], capture_output=True, text=True)
        t1 = time.time()
        if res.returncode != 0 or "applied at revision" not in res.stdout:
            rows.append({"k": k, "failed": res.stdout + res.stderr})
            continue
        published = []
        deadline = time.time() + 10
        for i, l in enumerate(logs):
            while True:
                seen = reloads(l)
                if len(seen) > before[i]:
                    published.append(seen[before[i]])
                    break
                if time.time() > deadline:
                    sys.exit(f"instance {'ab'[i]} did not publish apply {k}")
                time.sleep(0.001)
        rows.append({"k": k, "apply": t1 - t0, "a": published[0] - t0, "b": published[1] - t0,
                     "fleet": max(published) - t0, "ack": max(published) - t1})
        time.sleep(args.interval)
    kill_rows = []
    for _ in range(args.kills):
        leader = etcd.leader()
        etcd.kill(leader)
        t0 = time.time()
        tries = 0
        while True:
            tries += 1
            w = int(time.time() * 1000) % 101
            write(cfg, config(listen, (w, 100 - w), extra))
            res = subprocess.run([rw, "apply", "--config-source", url, "-f", str(cfg)], capture_output=True, text=True)
            if res.returncode == 0:
                break
            if time.time() - t0 > 30:
                sys.exit("no apply succeeded within 30 s of a leader kill")
        kill_rows.append({"kill_to_apply": time.time() - t0, "tries": tries})
        etcd.spawn(leader)
        etcd.wait_healthy()
    compaction_rows = compactions(args, etcd, rw, prefix, listen, cfg, extra, work)
    t_end, steal1 = time.time(), steal()
    ok = [r for r in rows if "failed" not in r]
    ms = lambda key: [r[key] * 1000 for r in ok]
    result = {
        "applies": args.applies, "failed": len(rows) - len(ok), "resources": args.resources + 5,
        "cpus": os.cpu_count(), "steal_percent": 100 * (steal1 - steal0) / os.sysconf("SC_CLK_TCK")
        / max(1e-9, (t_end - t_start) * os.cpu_count()),
        "figures": [summary(n, ms(k)) for n, k in [
            ("apply (ringway apply wall time)", "apply"), ("apply start -> a serving", "a"),
            ("apply start -> b serving", "b"), ("apply start -> both serving", "fleet"),
            ("apply returned -> both serving", "ack")]],
        "kills": kill_rows, "compactions": compaction_rows, "rows": rows,
    }
    (out / "results.json").write_text(json.dumps(result, indent=1))
    lines = [f"# fleet: {args.applies} applies, {args.resources + 5} resources in the store",
             "", f"{os.cpu_count()} CPUs; hypervisor steal during the run: {result['steal_percent']:.1f}%;"
             f" failed applies: {result['failed']}", "",
             "| figure (ms) | n | p50 | p99 | max |", "|---|---|---|---|---|"]
    for f in result["figures"]:
        lines.append(f"| {f['name']} | {f['n']} | {f['p50']:.2f} | {f['p99']:.2f} | {f['max']:.2f} |")
    if kill_rows:
        lines += ["", "| leader kill -> next successful apply (ms) | tries |", "|---|---|"]
        lines += [f"| {r['kill_to_apply'] * 1000:.0f} | {r['tries']} |" for r in kill_rows]
    if compaction_rows:
        lines += ["", "| compaction cancel -> resynced and serving (ms) |", "|---|"]
        lines += [f"| {r['resync'] * 1000:.1f} |" for r in compaction_rows]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
