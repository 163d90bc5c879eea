#!/usr/bin/env python3
"""Regenerates tests/dashboards/queries.json from an istio/istio checkout.

    tests/dashboards/extract.py /path/to/istio > tests/dashboards/queries.json

Every panel target of Istio's service, workload and mesh dashboards
(manifests/addons/dashboards/) whose expr reads istio_tcp_*, the HTTP
metrics (istio_requests_total, istio_request_duration_milliseconds,
istio_request_bytes, istio_response_bytes) or istio_build, with its
variables resolved the way Grafana resolves them for each setup of
tests/dashboards.rs (see RESOLUTIONS), and the series each must return.

The traffic of tests/dashboards.rs: TCP connections 80/20 to tcp-echo's
v1 and v2 (workloads tcp-echo-0, tcp-echo-1), and HTTP requests (seed 004)
90/10 to front-tomcat's v1, answering 200 (front-tomcat-0), and v2,
answering 503 (front-tomcat-1), plus requests for a host no VirtualService
serves: 404 NR, destination_service "unknown" (workload "unknown" in
namespace "unknown"), as Istio reports them.
"""
import json
import subprocess
import sys

ISTIO = sys.argv[1]
COMMIT = subprocess.check_output(["git", "-C", ISTIO, "rev-parse", "HEAD"], text=True).strip()
DIR = "manifests/addons/dashboards/"
SVC = "tcp-echo.default.svc.cluster.local"
WEB = "front-tomcat.default.svc.cluster.local"
UNKNOWN = "unknown"
GW = {"source_workload": "istio-ingressgateway", "source_workload_namespace": "istio-system"}

# $__rate_interval is max(4 x scrape interval, 1m-style step) in Grafana; the
# test scrapes every second and queries at once, so 30s holds ~30 samples.
RANGE = "30s"

# Variable values as Grafana fills the drop-downs for this setup (each
# variable's own query evaluated against ringway's series): Reporter
# ($qrep, a multi-value custom variable) = source only; an "All" variable
# with one option renders as that option; a variable whose query finds
# nothing (those pinned to reporter="destination") has no option and is
# rendered ".*" here (its panels are pinned to reporter="destination" too);
# a drop-down with several options is set to the one the setup looks at.
SOURCES = {"qrep": "source", "srcns": "istio-system", "srcwl": "istio-ingressgateway"}
SERVICE_VIEW = dict(SOURCES, srccluster="Kubernetes", dstcluster=".*", dstns=".*", dstwl=".*")
BACKEND_VIEW = dict(SOURCES, namespace="default", dstsvc=".*")
GATEWAY_VIEW = {"qrep": "source", "namespace": "istio-system",
                "workload": "istio-ingressgateway", "srcns": ".*", "srcwl": ".*"}
RESOLUTIONS = {
    "istio-service-dashboard.json": [
        ("service", dict(SERVICE_VIEW, service=SVC)),
        ("front-tomcat", dict(SERVICE_VIEW, service=WEB)),
        ("unknown", dict(SERVICE_VIEW, service=UNKNOWN)),
    ],
    "istio-workload-dashboard.json": [
        # The Namespace drop-down lists destination_workload_namespace:
        # default and unknown (the 404s); Workload in default then lists
        # front-tomcat-0, front-tomcat-1, tcp-echo-0 and tcp-echo-1.
        ("tcp-echo-0", dict(BACKEND_VIEW, workload="tcp-echo-0")),
        ("tcp-echo-1", dict(BACKEND_VIEW, workload="tcp-echo-1")),
        ("front-tomcat-0", dict(BACKEND_VIEW, workload="front-tomcat-0")),
        ("front-tomcat-1", dict(BACKEND_VIEW, workload="front-tomcat-1")),
        # The gateway itself is not in the drop-downs (its namespace is no
        # destination namespace): typed into the URL,
        # ?var-namespace=istio-system&var-workload=istio-ingressgateway,
        # then one destination service picked.
        ("gateway", dict(GATEWAY_VIEW, dstsvc=SVC)),
        ("gateway-front-tomcat", dict(GATEWAY_VIEW, dstsvc=WEB)),
    ],
    "istio-mesh-dashboard.gen.json": [("mesh", {})],
}

# What each setup's selection saw: TCP connections, or HTTP requests with
# these response codes.
TCP = None
SEEN = {
    "service": TCP, "front-tomcat": ["200", "503"], "unknown": ["404"],
    "tcp-echo-0": TCP, "tcp-echo-1": TCP,
    "front-tomcat-0": ["200"], "front-tomcat-1": ["503"],
    "gateway": TCP, "gateway-front-tomcat": ["200", "503"],
}
# The mesh dashboard's HTTP workloads (destination_workload, namespace,
# service) and the codes each answered.
MESH_HTTP = [("front-tomcat-0", "default", WEB, ["200"]),
             ("front-tomcat-1", "default", WEB, ["503"]),
             (UNKNOWN, UNKNOWN, UNKNOWN, ["404"])]


def resolve(expr, values):
    out = expr.replace("$__rate_interval", RANGE)
    for name in sorted(values, key=len, reverse=True):
        out = out.replace("$" + name, values[name])
    assert "$" not in out, out
    return out


def is_http(expr):
    return any(m in expr for m in ("istio_requests_total", "istio_request_duration_",
                                   "istio_request_bytes", "istio_response_bytes"))


def succeeds(codes):
    return any(not c.startswith("5") for c in codes)


def expect(dash, setup, title, legend, expr):
    """The series (their legend labels) the query must return; [] = none."""
    if ('reporter="destination"' in expr or 'connection_security_policy="mutual_tls"' in expr
            or 'destination_principal=~"spiffe' in expr):
        return []
    if "istio_build" in expr:
        return [{"component": "proxy"}]
    if dash == "istio-mesh-dashboard.gen.json":
        return expect_mesh(expr)
    seen = SEEN[setup]
    gateway = dash == "istio-workload-dashboard.json" and setup.startswith("gateway")
    if gateway and "destination_service=~" not in expr:
        # the gateway's outbound totals: all it sent, whatever $dstsvc is
        assert "destination_workload=~" in expr or " by (" not in expr, expr
        return [] if "destination_workload=~" in expr else [{}]
    if is_http(expr) != (seen is not TCP):
        return []
    codes = seen or []
    if "response_code!~" in expr and not succeeds(codes):
        return []  # a non-5xx ratio over a selection of 5xx only: no data
    if not gateway:
        if setup.startswith(("tcp-echo", "front-tomcat-")) and (
                'source_workload=~"' + setup in expr
                or 'source_workload_namespace=~"default' in expr):
            return []  # outbound from a backend: nothing
        if "by (source_workload" in expr:
            return by_code(GW, codes, expr)
        return [{}]
    # the gateway's own workload dashboard, outbound to $dstsvc
    if "destination_workload=~" in expr:  # inbound: the gateway receives nothing
        return []
    dstsvc = SVC if seen is TCP else WEB
    if "by (destination_service" in expr:
        return by_code({"destination_service": dstsvc}, codes, expr)
    return [{}]


def by_code(labels, codes, expr):
    """One series per response code when the query groups by it."""
    if "response_code)" in expr:
        return [dict(labels, response_code=c) for c in codes]
    return [labels]


def expect_mesh(expr):
    if not is_http(expr):
        return [{"destination_workload": w, "destination_workload_namespace": "default",
                 "destination_service": SVC} for w in ("tcp-echo-0", "tcp-echo-1")]
    if "label_join(" not in expr:
        return [{}]  # the totals: volume, success rate, 4xxs, 5xxs
    rows = MESH_HTTP
    if 'response_code!~"5' in expr:  # success rate: workloads with a non-5xx
        rows = [r for r in rows if succeeds(r[3])]
    with_service = "destination_service)" in expr
    return [dict({"destination_workload": w, "destination_workload_namespace": ns},
                 **({"destination_service": svc} if with_service else {}))
            for w, ns, svc, _ in rows]


def targets(panels):
    for p in panels:
        yield from targets(p.get("panels", []))
        for t in p.get("targets", []):
            e = t.get("expr", "")
            if "istio_tcp_" in e or "istio_build" in e or is_http(e):
                yield p.get("title"), t.get("legendFormat", ""), e


# The drop-downs: each query variable's PromQL (inside Grafana's
# query_result()), resolved for the setup, and the options it must offer
# (the values of the one label it groups by).
EVERY_SERVICE = [SVC, WEB, UNKNOWN]
GATEWAY_SOURCE = {"srcns": ["istio-system"], "srcwl": ["istio-ingressgateway"]}
SERVICE_OPTIONS = dict(GATEWAY_SOURCE, srccluster=["Kubernetes"], dstcluster=[], dstns=[],
                       dstwl=[])
BACKEND_OPTIONS = dict(GATEWAY_SOURCE, dstsvc=[])
OPTIONS = {
    ("istio-service-dashboard.json", "service"): dict(SERVICE_OPTIONS, service=EVERY_SERVICE),
    ("istio-service-dashboard.json", "front-tomcat"): SERVICE_OPTIONS,
    ("istio-service-dashboard.json", "unknown"): SERVICE_OPTIONS,
    ("istio-workload-dashboard.json", "tcp-echo-0"): dict(
        BACKEND_OPTIONS, namespace=["default", UNKNOWN],
        workload=["front-tomcat-0", "front-tomcat-1", "tcp-echo-0", "tcp-echo-1"]),
    ("istio-workload-dashboard.json", "tcp-echo-1"): BACKEND_OPTIONS,
    ("istio-workload-dashboard.json", "front-tomcat-0"): BACKEND_OPTIONS,
    ("istio-workload-dashboard.json", "front-tomcat-1"): BACKEND_OPTIONS,
    ("istio-workload-dashboard.json", "gateway"): {
        "workload": ["istio-ingressgateway"], "srcns": [], "srcwl": [], "dstsvc": EVERY_SERVICE},
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
