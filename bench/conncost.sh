#!/usr/bin/env bash
# User and kernel CPU per new connection of one ringway binary, from
# /proc/PID/stat around a connrate run: the worker pinned to CPU 1, the echo
# backend and the load generator on CPU 0, 127.0.0.1 only, 5 s. Hardware
# counters are not available on this VM (perf stat reports them as not
# supported), so this splits CPU time instead: user time is ringway's own
# code, system time mostly the kernel's TCP stack.
#
#   bench/conncost.sh BIN LABEL [PORT_BASE]
#
# Run two binaries alternately a few times and compare medians, e.g.
#   for i in 1 2 3 4; do bench/conncost.sh new/ringway new; bench/conncost.sh old/ringway base; done
set -euo pipefail
BIN=$1 LABEL=$2 BASE=${3:-25100}
root=$(cd "$(dirname "$0")" && pwd)
cargo build --quiet --release --manifest-path "$root/Cargo.toml"
B=$root/target/release
W=$(mktemp -d)
trap 'kill ${R:-} ${E:-} 2>/dev/null || true; rm -rf "$W"' EXIT
cat >"$W/r.yaml" <<YAML
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: $((BASE + 10)), name: tcp, protocol: TCP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: echo}
spec:
  hosts: [echo.bench.internal]
  resolution: STATIC
  ports: [{number: 9000, name: tcp-echo, protocol: TCP}]
  endpoints: [{address: 127.0.0.1, ports: {tcp-echo: $BASE}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo}
spec:
  hosts: ["*"]
  gateways: [gw]
  tcp:
  - route:
    - destination: {host: echo.bench.internal, port: {number: 9000}}
YAML
taskset -c 0 "$B/echo" --listen "127.0.0.1:$BASE" >/dev/null & E=$!
RUST_LOG=warn taskset -c 1 "$BIN" run -c "$W/r.yaml" --workers 1 --admin off >"$W/log" 2>&1 & R=$!
taskset -c 0 "$B/loadgen" probe --target "127.0.0.1:$((BASE + 10))" --duration 5s >/dev/null
read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$R/stat")
taskset -c 0 "$B/loadgen" connrate --target "127.0.0.1:$((BASE + 10))" --concurrency 4 --size 64 --duration 5s >"$W/lg"
read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$R/stat")
conns=$(grep -o '"connections":[0-9]*' "$W/lg" | head -1 | cut -d: -f2)
tick=$(getconf CLK_TCK)
python3 -c "c=$conns; t=1e6/$tick; print('$LABEL conns %d user_us/conn %.2f sys_us/conn %.2f' % (c, ($u1-$u0)*t/c, ($s1-$s0)*t/c))"
