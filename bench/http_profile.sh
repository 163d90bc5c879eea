#!/usr/bin/env bash
# Where each HTTP proxy's CPU goes per request (issue 15's "profile where
# ringway misses", issue 17's split): wrk (CPU 0) against an nginx backend
# returning a 23-byte body (CPU 0), through ringway's HTTP listener, nginx
# proxy_pass with upstream keepalive and HAProxy 2.6 `mode http`
# (`http-reuse safe`), each with one worker pinned to CPU 1. For each proxy
# and workload: one plain run (req/s, proxy CPU from /proc/PID/stat), then
# one under `perf record -g -p PID` whose samples bench/cpusplit.py sorts
# into user / alloc / io_uring / syscall / sched / wakeup / tcp, scaled to
# the proxy's measured CPU per request. 127.0.0.1 only; bounded; every
# process started here is stopped by PID.
#
#   bench/http_profile.sh OUTDIR
#
# Environment: RINGWAY_BIN [target/release/ringway], DURATION [5] seconds,
# CONNS [32], WORKLOADS ["keepalive close"], TARGETS ["ringway nginx haproxy"],
# BASE_PORT [24500].
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${1:?usage: http_profile.sh OUTDIR}
RW=${RINGWAY_BIN:-$HERE/../target/release/ringway}
DURATION=${DURATION:-5}
CONNS=${CONNS:-32}
WORKLOADS=${WORKLOADS:-"keepalive close"}
TARGETS=${TARGETS:-"ringway nginx haproxy"}
BASE=${BASE_PORT:-24500}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d /tmp/ringway-http-profile.XXXXXX)
PERFDIR=${PERFDIR:-/tmp/ringway-prof-data/$(basename "$OUT")}
mkdir -p "$PERFDIR"

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

BACKEND=$BASE
declare -A PORT=([ringway]=$((BASE + 1)) [nginx]=$((BASE + 2)) [haproxy]=$((BASE + 3)))
temps="client_body_temp_path $WORK; proxy_temp_path $WORK; fastcgi_temp_path $WORK; uwsgi_temp_path $WORK; scgi_temp_path $WORK;"

cat >"$WORK/backend.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/backend.pid;
error_log $WORK/backend-error.log;
events { worker_connections 4096; }
http {
  access_log off; $temps
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$BACKEND; location / { return 200 "hello from the backend\n"; } }
}
EOF
cat >"$WORK/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/proxy.pid;
error_log $WORK/proxy-error.log;
events { worker_connections 4096; }
http {
  access_log off; $temps
  keepalive_requests 1000000;
  upstream backend { server 127.0.0.1:$BACKEND; keepalive 64; }
  server {
    listen 127.0.0.1:${PORT[nginx]};
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
EOF
cat >"$WORK/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 6000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
  http-reuse safe
frontend f
  bind 127.0.0.1:${PORT[haproxy]}
  default_backend b
backend b
  server s1 127.0.0.1:$BACKEND
EOF
cat >"$WORK/ringway.yaml" <<EOF
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: ${PORT[ringway]}, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - name: web
    route: [{destination: {host: web.default.svc.cluster.local}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web}
spec:
  hosts: [web.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1, ports: {http: $BACKEND}}]
EOF
cp "$WORK"/backend.conf "$WORK"/nginx.conf "$WORK"/haproxy.cfg "$WORK"/ringway.yaml "$OUT/"

taskset -c 0 nginx -c "$WORK/backend.conf" >/dev/null 2>&1 &
pids+=($!)
taskset -c 1 nginx -c "$WORK/nginx.conf" >/dev/null 2>&1 &
pids+=($!)
nginx_master=$!
taskset -c 1 haproxy -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
pids+=($!)
haproxy_pid=$!
taskset -c 1 "$RW" run -c "$WORK/ringway.yaml" --workers 1 --admin off >"$WORK/ringway.log" 2>&1 &
pids+=($!)
ringway_pid=$!
sleep 2
nginx_pid=$(pgrep -P "$nginx_master" -f "nginx: worker process" | head -1)
declare -A PID=([ringway]=$ringway_pid [nginx]=$nginx_pid [haproxy]=$haproxy_pid)

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
steal_pct() { # steal share of all CPU time between two /proc/stat samples
  awk -v a="$1" -v b="$2" 'BEGIN{split(a,x," "); split(b,y," "); t=0; for(i=1;i<=8;i++) t+=y[i]-x[i]; printf "%.1f", (t > 0 ? (y[8]-x[8])*100/t : 0)}'
}
cpustat() { awk '/^cpu /{print $2,$3,$4,$5,$6,$7,$8,$9}' /proc/stat; }
hz=$(getconf CLK_TCK)

echo "# $(date -u +%FT%TZ) $(git -C "$HERE" rev-parse --short HEAD) $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$OUT/results.txt"
echo "workload target run req_per_s cpu_us_per_req steal_pct" | tee -a "$OUT/results.txt"
for w in $WORKLOADS; do
  hdr=(-H 'Host: web.example.com')
  [[ $w == close ]] && hdr+=(-H 'Connection: close')
  for t in $TARGETS; do
    pid=${PID[$t]}
    for run in plain perf; do
      perfpid=""
      if [[ $run == perf ]]; then
        perf record -F 999 -g -p "$pid" -o "$PERFDIR/$w-$t.data" -- sleep "$DURATION" >/dev/null 2>&1 &
        perfpid=$!
        sleep 0.2
      fi
      c0=$(cpu_ticks "$pid"); s0=$(cpustat)
      wrk_out=$(timeout $((DURATION + 20)) taskset -c 0 wrk -t1 -c"$CONNS" -d"${DURATION}s" "${hdr[@]}" "http://127.0.0.1:${PORT[$t]}/")
      c1=$(cpu_ticks "$pid"); s1=$(cpustat)
      [[ -z $perfpid ]] || wait "$perfpid" || true
      echo "$wrk_out" >"$OUT/wrk-$w-$t-$run.txt"
      reqs=$(echo "$wrk_out" | awk '/requests in/{print $1}')
      rps=$(echo "$wrk_out" | awk '/Requests\/sec/{print $2}')
      us=$(awk -v a="$c0" -v b="$c1" -v n="$reqs" -v hz="$hz" 'BEGIN{printf "%.2f", (b-a)/hz/n*1e6}')
      echo "$w $t $run $rps $us $(steal_pct "$s0" "$s1")" | tee -a "$OUT/results.txt"
      if [[ $run == perf ]]; then
        secs=$(awk -v a="$c0" -v b="$c1" -v hz="$hz" 'BEGIN{print (b-a)/hz}')
        python3 "$HERE/cpusplit.py" "$PERFDIR/$w-$t.data" "$secs" "$reqs" "$w $t" | tee -a "$OUT/split.txt"
      fi
    done
  done
done
