#!/usr/bin/env bash
# Where the time goes while one proxy forwards a bulk upload (issue 5).
# Same topology as run.sh with WORKERS=1: proxy on CPU 1, load generator and
# sink backend on CPU 0, 127.0.0.1 only, bounded durations; every process
# started here is stopped by PID.
#
#   bench/profile.sh OUTDIR
#
# Environment:
#   TARGETS [ringway haproxy-splice]  ringway | ringway-<label> (see RINGWAY_BINS) | haproxy-splice | direct
#   RINGWAY_BIN     the ringway binary for target "ringway"
#   RINGWAY_BINS    extra ringway binaries, "label=/path label2=/path2" -> targets ringway-label
#   STREAMS [1]     throughput streams;  DURATION [5] seconds per measurement
#   ROUNDS [3]      plain measurements per target (no perf running)
#   PERF [1]        1: one more measurement per target under
#                   `perf record -a -g -e cpu-clock` (both CPUs), reported per CPU
#   TRACE [0]       1: one more measurement per target recording the proxy's
#                   splice(2) sizes, io_uring_enter/epoll_wait calls and
#                   context switches (tracepoints, `perf record -p`), summarised
#                   by bench/tracesum.py
#   PROXY_CPU [1]   CPU the proxy is pinned to; 0 puts it on the load CPU, so
#                   that Gbit/s measures the proxy's cost per byte
#   BASE_PORT [24400]
# Per measurement it records: Gbit/s (loadgen), per-CPU busy time split into
# user/system/softirq (/proc/stat), TCP segments and ACK counters
# (/proc/net/snmp, /proc/net/netstat), context switches of the sink, the
# loadgen and the proxy.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${1:?usage: profile.sh OUTDIR}
mkdir -p "$OUT"
# perf.data files are large: kept outside the results directory.
PERFDIR=${PERFDIR:-/tmp/ringway-prof-data/$(basename "$OUT")}
mkdir -p "$PERFDIR"
TARGETS=${TARGETS:-"ringway haproxy-splice"}
STREAMS=${STREAMS:-1}
DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-3}
PERF=${PERF:-1}
TRACE=${TRACE:-0}
PROXY_CPU=${PROXY_CPU:-1}
BASE_PORT=${BASE_PORT:-24400}
RINGWAY_BINS=${RINGWAY_BINS:-}
BIN=$HERE/target/release
LOADGEN=$BIN/loadgen
SINK_PORT=$BASE_PORT
FRONT_PORT=$((BASE_PORT + 1))

LOG_TAG=profile.sh
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh" # log, PIDS, stop_pid, cleanup (on exit)

cargo build --release --quiet --manifest-path "$HERE/Cargo.toml"
WORK=$(mktemp -d /tmp/ringway-prof.XXXXXX)

cat >"$WORK/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 6000
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
  option splice-request
  option splice-response
listen sink
  bind 127.0.0.1:$FRONT_PORT
  server sink 127.0.0.1:$SINK_PORT
EOF
mkdir -p "$WORK/ringway"
cat >"$WORK/ringway/bench.yaml" <<EOF
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: bench-backends
spec:
  hosts:
  - bench-backends.bench.local
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - number: 9001
    name: tcp-sink
    protocol: TCP
  endpoints:
  - address: 127.0.0.1
    ports:
      tcp-sink: $SINK_PORT
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: bench-gateway
spec:
  selector:
    istio: ingressgateway
  servers:
  - bind: 127.0.0.1
    port:
      number: $FRONT_PORT
      name: tcp-sink
      protocol: TCP
    hosts:
    - "*"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bench
spec:
  hosts:
  - "*"
  gateways:
  - bench-gateway
  tcp:
  - match:
    - port: $FRONT_PORT
    route:
    - destination:
        host: bench-backends.bench.local
        port:
          number: 9001
EOF

declare -A RBIN
RBIN[ringway]=${RINGWAY_BIN:-}
declare -A RARGS
for v in $RINGWAY_BINS; do
  # label=/path/to/ringway[,--flag=value,...]
  IFS=, read -r -a parts <<<"${v#*=}"
  RBIN[ringway-${v%%=*}]=${parts[0]}
  RARGS[ringway-${v%%=*}]="${parts[*]:1}"
done

# Wait (up to 15 min) until nobody else benchmarks or compiles and both
# CPUs are at least 90% idle over 2 s; log what was seen.
wait_quiet() {
  local a b
  for _ in $(seq 90); do
    if ! pgrep -f 'run.sh|crosscheck.sh|loadgen|iperf3|wrk|redis-benchmark' >/dev/null && ! pgrep -x rustc >/dev/null; then
      a=$(awk '/^cpu /{print $5+$6, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat); sleep 2
      b=$(awk '/^cpu /{print $5+$6, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
      if python3 -c "import sys; a=list(map(int,'$a'.split())); b=list(map(int,'$b'.split())); sys.exit(0 if (b[0]-a[0])/(b[1]-a[1]) >= 0.9 else 1)"; then
        echo "$(date -u +%H:%M:%S) quiet; loadavg $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/quiet.log"; return 0
      fi
    fi
    echo "$(date -u +%H:%M:%S) busy; loadavg $(cut -d' ' -f1-3 /proc/loadavg); top: $(ps -eo pcpu,comm --sort=-pcpu | sed -n 2,4p | tr -s ' ' | tr '\n' ';')" >>"$OUT/quiet.log"
    sleep 8
  done
  echo "$(date -u +%H:%M:%S) gave up waiting; measuring anyway" >>"$OUT/quiet.log"
}

taskset -c 0 "$BIN/sink" --listen "127.0.0.1:$SINK_PORT" >"$WORK/sink.log" 2>&1 &
SINK_PID=$!
PIDS+=("$SINK_PID")
sleep 0.3

start_proxy() {
  PROXY_PID=""
  DEST=127.0.0.1:$FRONT_PORT
  case $1 in
    direct) DEST=127.0.0.1:$SINK_PORT; return 0 ;;
    haproxy-splice) taskset -c "$PROXY_CPU" haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/$1.log" 2>&1 & ;;
    ringway*)
      [[ -n ${RBIN[$1]:-} ]] || { log "no binary for $1"; exit 1; }
      # shellcheck disable=SC2086
      env RUST_LOG=warn taskset -c "$PROXY_CPU" "${RBIN[$1]}" run -c "$WORK/ringway" --workers 1 --admin off ${RARGS[$1]:-} >"$WORK/$1.log" 2>&1 & ;;
  esac
  PROXY_PID=$!
  PIDS+=("$PROXY_PID")
  for _ in $(seq 100); do
    taskset -c 0 "$LOADGEN" throughput --target "127.0.0.1:$FRONT_PORT" --duration 0.2 >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  log "$1 did not start"; tail -5 "$WORK/$1.log" >&2; exit 1
}

# per-CPU jiffies: user nice system idle iowait irq softirq
cpustat() { awk '/^cpu[01] /{print $1, $2+$3, $4, $5+$6, $7, $8}' /proc/stat | tr '\n' ' '; }
snmp() { # Tcp: InSegs OutSegs; TcpExt: a few ACK counters
  awk '/^Tcp:/{ if (!h) {for(i=1;i<=NF;i++) n[i]=$i; h=1} else {for(i=1;i<=NF;i++) if(n[i]=="InSegs"||n[i]=="OutSegs") printf "%s=%s ", n[i], $i} }' /proc/net/snmp
  awk '/^TcpExt:/{ if (!h) {for(i=1;i<=NF;i++) n[i]=$i; h=1} else {for(i=1;i<=NF;i++) if(n[i] ~ /^(DelayedACKs|TCPHPAcks|TCPPureAcks|TCPHPHits|TCPBacklogCoalesce|TCPRcvCoalesce|TCPOFOQueue|TCPAutoCorking|TCPWantZeroWindowAdv|TCPFromZeroWindowAdv|TCPToZeroWindowAdv|TCPOrigDataSent|PruneCalled|TCPRcvQDrop)$/) printf "%s=%s ", n[i], $i} }' /proc/net/netstat
}
csw() { # voluntary+nonvoluntary context switches of a process (all threads)
  local pid=$1 t v=0
  for t in /proc/"$pid"/task/*/status; do
    v=$((v + $(awk '/^(voluntary|nonvoluntary)_ctxt_switches/{s+=$2} END{print s+0}' "$t" 2>/dev/null || echo 0)))
  done
  echo "$v"
}

one() { # target round perf(0/1)
  local t=$1 r=$2 p=$3 tag=$1-r$2
  [[ $p == 1 ]] && tag=$1-perf
  [[ $p == 2 ]] && tag=$1-trace
  local c0 c1 s0 s1 k0 k1 x0 x1
  wait_quiet
  c0=$(cpustat); s0=$(snmp); k0=$(csw "$SINK_PID"); x0=0
  [[ -n $PROXY_PID ]] && x0=$(csw "$PROXY_PID")
  if [[ $p == 2 ]]; then
    perf record -q -e syscalls:sys_enter_splice,syscalls:sys_exit_splice,syscalls:sys_enter_io_uring_enter,syscalls:sys_enter_epoll_wait,sched:sched_switch \
      -p "$PROXY_PID" -o "$PERFDIR/$tag.perf.data" -- \
      taskset -c 0 "$LOADGEN" throughput --target "$DEST" --streams "$STREAMS" --duration "$DURATION" \
      >"$OUT/$tag.json" 2>>"$WORK/loadgen.err"
    python3 "$HERE/tracesum.py" "$PERFDIR/$tag.perf.data" "$(jq .bytes "$OUT/$tag.json")" >"$OUT/$tag.txt" 2>&1 || true
  elif [[ $p == 1 ]]; then
    perf record -q -a -g -e cpu-clock -F 2000 -o "$PERFDIR/$tag.perf.data" -- \
      taskset -c 0 "$LOADGEN" throughput --target "$DEST" --streams "$STREAMS" --duration "$DURATION" \
      >"$OUT/$tag.json" 2>>"$WORK/loadgen.err"
    python3 "$HERE/perfsum.py" "$PERFDIR/$tag.perf.data" "$(jq .bytes "$OUT/$tag.json")" 20 >"$OUT/$tag.perfsum.txt" 2>&1 || true
  else
    perf stat -a -A -x, -e context-switches,sched:sched_wakeup,irq:softirq_entry,net:net_dev_xmit -o "$OUT/$tag.stat" -- \
      taskset -c 0 "$LOADGEN" throughput --target "$DEST" --streams "$STREAMS" --duration "$DURATION" \
      ${PROXY_PID:+--watch-pid "$PROXY_PID"} >"$OUT/$tag.json" 2>>"$WORK/loadgen.err"
  fi
  c1=$(cpustat); s1=$(snmp); k1=$(csw "$SINK_PID"); x1=0
  [[ -n $PROXY_PID ]] && x1=$(csw "$PROXY_PID")
  python3 - "$OUT/$tag.json" "$c0" "$c1" "$s0" "$s1" "$k0" "$k1" "$x0" "$x1" "$t" "$r" "$p" >>"$OUT/profile.jsonl" <<'PY'
import json, sys
f, c0, c1, s0, s1, k0, k1, x0, x1, t, r, p = sys.argv[1:]
res = json.load(open(f))
def cpu(s):
    w = s.split(); d = {}
    for i in range(0, len(w), 6):
        d[w[i]] = dict(zip(["user", "system", "idle", "irq", "softirq"], map(int, w[i+1:i+6])))
    return d
a, b = cpu(c0), cpu(c1)
secs = res["seconds"]
hz = 100.0
out = {"target": t, "round": int(r), "perf": {"0": False, "1": "perf", "2": "trace"}[p], "gbit_per_s": res["gbit_per_s"], "bytes": res["bytes"],
       "proxy_cpu_s_per_gb": res.get("proxy_cpu_s_per_gb")}
for c in ("cpu0", "cpu1"):
    tot = sum(b[c][k] - a[c][k] for k in b[c])
    out[c] = {k: round((b[c][k] - a[c][k]) / tot, 3) for k in b[c]} if tot else {}
def kv(s): return {x.split("=")[0]: int(x.split("=")[1]) for x in s.split()}
sa, sb = kv(s0), kv(s1)
gb = res["bytes"] / 1e9
out["per_gb"] = {k: round((sb[k] - sa[k]) / gb) for k in sb} if gb else {}
out["per_gb"]["proxy_ctxsw"] = round((int(x1) - int(x0)) / gb) if gb else None
import os
st = f[:-5] + ".stat"
if os.path.exists(st):
    for line in open(st):
        w = line.strip().split(",")
        if len(w) > 3 and w[0].startswith("CPU") and w[1].replace(".", "").isdigit():
            out["per_gb"][w[0] + ":" + w[3].split(":")[-1]] = round(float(w[1]) / gb)
print(json.dumps(out))
PY
  tail -1 "$OUT/profile.jsonl" >&2
}

for t in $TARGETS; do
  log "target $t"
  start_proxy "$t"
  sleep 0.5
  for ((r = 1; r <= ROUNDS; r++)); do one "$t" "$r" 0; done
  [[ $PERF == 1 ]] && one "$t" 0 1
  [[ $TRACE == 1 ]] && one "$t" 0 2
  [[ -n $PROXY_PID ]] && stop_pid "$PROXY_PID"
done
cp "$WORK"/*.cfg "$WORK/ringway/bench.yaml" "$OUT/" 2>/dev/null || true
rm -rf "$WORK"
log "done: $OUT"
