#!/usr/bin/env python3
"""Regenerates tests/dashboards/queries.json from an istio/istio checkout.

    tests/dashboards/extract.py /path/to/istio > tests/dashboards/queries.json

Every panel target of Istio's service, workload and mesh dashboards
(manifests/addons/dashboards/) whose expr reads istio_tcp_* or istio_build,
with its variables resolved the way Grafana resolves them for the setup of
tests/dashboards.rs (see RESOLUTIONS), and the series each must return.
"""
import json
import subprocess
import sys

ISTIO = sys.argv[1]
COMMIT = subprocess.check_output(["git", "-C", ISTIO, "rev-parse", "HEAD"], text=True).strip()
DIR = "manifests/addons/dashboards/"
SVC = "tcp-echo.default.svc.cluster.local"
GW = {"source_workload": "istio-ingressgateway", "source_workload_namespace": "istio-system"}

# $__rate_interval is max(4 x scrape interval, 1m-style step) in Grafana; the
# test scrapes every second and queries at once, so 30s holds ~30 samples.
RANGE = "30s"

# Variable values as Grafana fills the drop-downs for this setup (each
# variable's own query evaluated against ringway's series): Reporter
# ($qrep, a multi-value custom variable) = source only; an "All" variable
# with one option renders as that option; a variable whose query finds
# nothing (those pinned to reporter="destination") has no option and is
# rendered ".*" here (its panels are pinned to reporter="destination" too).
RESOLUTIONS = {
    "istio-service-dashboard.json": [
        ("service", {"qrep": "source", "service": SVC, "srcns": "istio-system",
                     "srcwl": "istio-ingressgateway", "srccluster": "Kubernetes",
                     "dstcluster": ".*", "dstns": ".*", "dstwl": ".*"}),
    ],
    "istio-workload-dashboard.json": [
        # The Namespace drop-down lists destination_workload_namespace only:
        # default; Workload then lists tcp-echo-0 and tcp-echo-1.
        ("tcp-echo-0", {"qrep": "source", "namespace": "default", "workload": "tcp-echo-0",
                        "srcns": "istio-system", "srcwl": "istio-ingressgateway", "dstsvc": ".*"}),
        ("tcp-echo-1", {"qrep": "source", "namespace": "default", "workload": "tcp-echo-1",
                        "srcns": "istio-system", "srcwl": "istio-ingressgateway", "dstsvc": ".*"}),
        # The gateway itself is not in the drop-downs (its namespace is no
        # destination namespace): typed into the URL,
        # ?var-namespace=istio-system&var-workload=istio-ingressgateway.
        ("gateway", {"qrep": "source", "namespace": "istio-system",
                     "workload": "istio-ingressgateway", "srcns": ".*", "srcwl": ".*",
                     "dstsvc": SVC}),
    ],
    "istio-mesh-dashboard.gen.json": [("mesh", {})],
}


def resolve(expr, values):
    out = expr.replace("$__rate_interval", RANGE)
    for name in sorted(values, key=len, reverse=True):
        out = out.replace("$" + name, values[name])
    assert "$" not in out, out
    return out


def expect(dash, setup, title, legend, expr):
    """The series (their legend labels) the query must return; [] = none."""
    if 'reporter="destination"' in expr or 'connection_security_policy="mutual_tls"' in expr:
        return []
    if "istio_build" in expr:
        return [{"component": "proxy"}]
    if dash == "istio-mesh-dashboard.gen.json":
        return [{"destination_workload": w, "destination_workload_namespace": "default",
                 "destination_service": SVC} for w in ("tcp-echo-0", "tcp-echo-1")]
    if dash == "istio-service-dashboard.json":
        if "by (source_workload" in expr:
            return [GW]
        return [{}]
    # workload dashboard
    if setup == "gateway":
        if "destination_workload=~" in expr:  # inbound: the gateway receives nothing
            return []
        if "by (destination_service)" in expr:
            return [{"destination_service": SVC}]
        return [{}]
    if "source_workload=~\"tcp-echo" in expr or "source_workload_namespace=~\"default" in expr:
        return []  # outbound from a backend: nothing
    if "by (source_workload" in expr:
        return [GW]
    return [{}]


def targets(panels):
    for p in panels:
        yield from targets(p.get("panels", []))
        for t in p.get("targets", []):
            e = t.get("expr", "")
            if "istio_tcp_" in e or "istio_build" in e:
                yield p.get("title"), t.get("legendFormat", ""), e


# The drop-downs: each query variable's PromQL (inside Grafana's
# query_result()), resolved for the setup, and the options it must offer
# (the values of the one label it groups by).
OPTIONS = {
    ("istio-service-dashboard.json", "service"): {
        "service": [SVC], "srccluster": ["Kubernetes"], "srcns": ["istio-system"],
        "srcwl": ["istio-ingressgateway"], "dstcluster": [], "dstns": [], "dstwl": []},
    ("istio-workload-dashboard.json", "tcp-echo-0"): {
        "namespace": ["default"], "workload": ["tcp-echo-0", "tcp-echo-1"],
        "srcns": ["istio-system"], "srcwl": ["istio-ingressgateway"], "dstsvc": []},
    ("istio-workload-dashboard.json", "tcp-echo-1"): {
        "srcns": ["istio-system"], "srcwl": ["istio-ingressgateway"], "dstsvc": []},
    ("istio-workload-dashboard.json", "gateway"): {
        "workload": ["istio-ingressgateway"], "srcns": [], "srcwl": [], "dstsvc": [SVC]},
}

queries = []
variables = {}
options = []
for dash, setups in RESOLUTIONS.items():
    d = json.loads(subprocess.check_output(
        ["git", "-C", ISTIO, "show", f"{COMMIT}:{DIR}{dash}"], text=True))
    variables[dash] = {v["name"]: v.get("query") for v in d.get("templating", {}).get("list", [])
                       if v.get("type") in ("query", "custom")}
    for setup, values in setups:
        for name, want in OPTIONS.get((dash, setup), {}).items():
            q = variables[dash][name]
            assert q.startswith("query_result(") and q.endswith(")"), q
            options.append({"dashboard": dash, "setup": setup, "variable": name,
                            "query": q, "resolved": resolve(q[len("query_result("):-1], values),
                            "expect": sorted(want)})
    for title, legend, expr in targets(d.get("panels", [])):
        for setup, values in setups:
            r = resolve(expr, values)
            queries.append({"dashboard": dash, "panel": title, "legend": legend,
                            "setup": setup, "expr": expr, "resolved": r,
                            "expect": expect(dash, setup, title, legend, r)})

json.dump({
    "source": f"github.com/istio/istio {DIR} at commit {COMMIT}",
    "commit": COMMIT,
    "range": f"$__rate_interval -> [{RANGE}]: Prometheus scrapes ringway every 1s",
    "variables": variables,
    "options": options,
    "queries": queries,
}, sys.stdout, indent=1, ensure_ascii=False)
print()
