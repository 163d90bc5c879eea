#!/usr/bin/env bash
# HTTP keep-alive smoke, side by side in one run: wrk -t1 -c32 -d5s (CPU 0)
# against nginx returning a 23-byte body (CPU 0), directly, through ringway
# as HTTP (1 worker, CPU 1), through ringway as opaque TCP (same worker), and
# through nginx proxy_pass with upstream keepalive (1 worker, CPU 1).
# Proxy CPU = utime+stime of the proxy process over the run. 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")"
RW=${RINGWAY_BIN:?}
ROUNDS=${ROUNDS:-3}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
taskset -c 0 nginx -c "$PWD/nginx-backend.conf" >/dev/null 2>&1 & pids+=($!)
taskset -c 1 nginx -c "$PWD/nginx-proxy.conf" >/dev/null 2>&1 & pids+=($!)
taskset -c 1 "$RW" run -c ringway.yaml --workers 1 --admin off >ringway.log 2>&1 & pids+=($!)
rw=$!
sleep 2
proxy_pid=$(pgrep -f "nginx: worker process" -P "$(cat proxy.pid)" | head -1)
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
steal() { awk '/^cpu /{print $9}' /proc/stat; }
hz=$(getconf CLK_TCK)
echo "target round req_per_s cpu_s_per_10k_req steal_pct"
for r in $(seq 1 "$ROUNDS"); do
  for t in direct ringway-http ringway-tcp nginx-http; do
    case $t in
      direct) port=24301; pid="";;
      ringway-http) port=24302; pid=$rw;;
      ringway-tcp) port=24303; pid=$rw;;
      nginx-http) port=24304; pid=$proxy_pid;;
    esac
    c0=0; [[ -n $pid ]] && c0=$(cpu "$pid")
    s0=$(steal); t0=$(awk '/^cpu /{s=0; for(i=2;i<=NF;i++) s+=$i; print s}' /proc/stat)
    out=$(timeout 30 taskset -c 0 wrk -t1 -c32 -d5s -H 'Host: web.example.com' "http://127.0.0.1:$port/")
    c1=0; [[ -n $pid ]] && c1=$(cpu "$pid")
    s1=$(steal); t1=$(awk '/^cpu /{s=0; for(i=2;i<=NF;i++) s+=$i; print s}' /proc/stat)
    rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
    reqs=$(echo "$out" | awk '/requests in/{print $1}')
    errs=$(echo "$out" | grep -E "Non-2xx|Socket errors" || true)
    [[ -z $errs ]] || echo "# $t: $errs"
    cpu10k=$(awk -v a="$c0" -v b="$c1" -v n="$reqs" -v hz="$hz" 'BEGIN{ if (n>0) printf "%.4f", (b-a)/hz/n*10000; else print "-" }')
    st=$(awk -v a="$s0" -v b="$s1" -v x="$t0" -v y="$t1" 'BEGIN{ printf "%.1f", (b-a)*100/(y-x) }')
    echo "$t $r $rps $cpu10k $st"
  done
done
