#!/usr/bin/env bash
# Side-by-side benchmark: direct loopback, HAProxy (mode tcp, forced splice
# and default), nginx stream and ringway, measured in the same rounds with
# the same load generator and the same backends. 127.0.0.1 only; every run
# is bounded in time; every process started here is stopped by PID on exit.
#
#   bench/run.sh                                   # full run, ~10 minutes
#   QUICK=1 bench/run.sh                           # ~2 minutes
#   RINGWAY_BIN=/path/to/ringway bench/run.sh      # measure that binary
#
# Environment (defaults in brackets):
#   WORKERS [1]      worker threads/processes for every proxy. With 1, proxies
#                    are pinned to CPU 1 and load generator + backends to CPU 0.
#   ROUNDS [3]       rounds; each round runs every target once, in rotated order.
#   QUICK [0]        1: ROUNDS=1 and 2 s per measurement.
#   DURATION [5]     seconds per throughput/connrate/rr measurement.
#   IDLE_CONNS [5000] connections held for the idle-memory figure.
#   TARGETS          [direct haproxy-splice haproxy-default nginx ringway]
#   TESTS            [bulk1 bulk8 connrate rr idle] (a subset for sweeps)
#   RINGWAY_BIN      ringway binary; default: cargo build --release at the repo root.
#   RINGWAY_SRC      its source tree (for the commit label); default: the git
#                    tree containing RINGWAY_BIN.  RINGWAY_COMMIT overrides.
#   RINGWAY_VARIANTS extra ringway targets, e.g.
#                    "copy=--splice-after=never splice0=--splice-after=0"
#                    (name=arg,arg...; each becomes target ringway-<name>).
#   CONNRATE_CONC [4] connrate client threads;  RR_CONNS [1] rr connections;
#   RR_SIZE [64]      rr/connrate request bytes.
#   HAPROXY_PIPESIZE  tune.pipesize for HAProxy (default: HAProxy's default).
#   RESULTS_LABEL     suffix of the results directory name (e.g. smoke).
#   NO_INSTALL [0]    1: do not apt-get install anything.
#   BASE_PORT [24100] first of the 12 ports used on 127.0.0.1.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
WORKERS=${WORKERS:-1}
QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
  ROUNDS=${ROUNDS:-1}
  DURATION=${DURATION:-2}
else
  ROUNDS=${ROUNDS:-3}
  DURATION=${DURATION:-5}
fi
IDLE_CONNS=${IDLE_CONNS:-5000}
TARGETS=${TARGETS:-"direct haproxy-splice haproxy-default nginx ringway"}
TESTS=${TESTS:-"bulk1 bulk8 connrate rr idle"}
CONNRATE_CONC=${CONNRATE_CONC:-4}
RR_CONNS=${RR_CONNS:-1}
RR_SIZE=${RR_SIZE:-64}
BASE_PORT=${BASE_PORT:-24100}
RINGWAY_VARIANTS=${RINGWAY_VARIANTS:-}

log() { printf '[run.sh %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ------------------------------------------------------------ processes
PIDS=()
cleanup() {
  local pid kids kid
  for pid in "${PIDS[@]}"; do
    [[ -d /proc/$pid ]] || continue
    # Children first (nginx workers), by PID.
    kids=$(cat /proc/"$pid"/task/*/children 2>/dev/null || true)
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do [[ -d /proc/$pid ]] || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    for kid in $kids; do kill -KILL "$kid" 2>/dev/null || true; done
    wait "$pid" 2>/dev/null || true
  done
  PIDS=()
  [[ -n ${WORK:-} && -d ${WORK:-} && ${KEEP_WORK:-0} != 1 ]] && rm -rf "$WORK"
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# stop_pid PID: stop one process we started, and its children, by PID.
stop_pid() {
  local pid=$1 kids kid
  kids=$(cat /proc/"$pid"/task/*/children 2>/dev/null || true)
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do [[ -d /proc/$pid ]] || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  for kid in $kids; do kill -KILL "$kid" 2>/dev/null || true; done
  wait "$pid" 2>/dev/null || true
  local keep=()
  for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

PIN_PROXY=()
PIN_LOAD=()
if [[ $WORKERS == 1 ]]; then
  [[ $(nproc --all) -ge 2 ]] || die "WORKERS=1 pinning needs 2 CPUs"
  PIN_PROXY=(taskset -c 1)
  PIN_LOAD=(taskset -c 0)
fi

# start NAME CMD...: background, logs in $WORK/NAME.log, sets STARTED_PID.
start() {
  local name=$1; shift
  "$@" >"$WORK/$name.log" 2>&1 &
  STARTED_PID=$!
  PIDS+=("$STARTED_PID")
}

# ------------------------------------------------------------ install
need_install=()
command -v haproxy >/dev/null || need_install+=(haproxy)
command -v nginx >/dev/null || need_install+=(nginx-light)
[[ -e /usr/lib/nginx/modules/ngx_stream_module.so ]] || need_install+=(libnginx-mod-stream)
if [[ ${#need_install[@]} -gt 0 && ${NO_INSTALL:-0} != 1 ]]; then
  log "installing ${need_install[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Packages must not start their own services (nginx would take port 80):
  # use a policy-rc.d only if the system has none, and remove only ours.
  ours_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; ours_policy=1
  fi
  if ! apt-get install -y -q "${need_install[@]}" >/dev/null 2>&1; then
    apt-get update -q >/dev/null
    apt-get install -y -q "${need_install[@]}" >/dev/null
  fi
  [[ $ours_policy == 1 ]] && rm -f /usr/sbin/policy-rc.d
fi
for t in $TARGETS; do
  case $t in
    haproxy-*) command -v haproxy >/dev/null || die "haproxy is not installed" ;;
    nginx) command -v nginx >/dev/null || die "nginx is not installed" ;;
  esac
done

# ------------------------------------------------------------ build
log "building the load generator"
cargo build --release --quiet --manifest-path "$HERE/Cargo.toml"
BIN=$HERE/target/release
LOADGEN=$BIN/loadgen

RINGWAY_STATUS=ok
if [[ -z ${RINGWAY_BIN:-} ]]; then
  log "building ringway at $ROOT"
  (cd "$ROOT" && cargo build --release --quiet) || RINGWAY_STATUS="build failed"
  RINGWAY_BIN=$ROOT/target/release/ringway
fi
if [[ $RINGWAY_STATUS == ok ]] && ! "$RINGWAY_BIN" run --help >/dev/null 2>&1; then
  RINGWAY_STATUS="pending: $RINGWAY_BIN has no 'run' command yet"
fi
# The source tree the binary came from (for the commit it is labelled with).
RINGWAY_COMMIT_GIVEN=${RINGWAY_COMMIT:-}
RINGWAY_SRC=${RINGWAY_SRC:-$(git -C "$(dirname "$RINGWAY_BIN")" rev-parse --show-toplevel 2>/dev/null || true)}
RINGWAY_COMMIT=${RINGWAY_COMMIT:-$( [[ -n $RINGWAY_SRC ]] && git -C "$RINGWAY_SRC" rev-parse --short HEAD 2>/dev/null || echo unknown)}
RINGWAY_DIRTY=0
if [[ -n ${RINGWAY_COMMIT_GIVEN:-} ]]; then
  RINGWAY_DIRTY="not checked (RINGWAY_COMMIT given)"
elif [[ -n $RINGWAY_SRC ]]; then
  RINGWAY_DIRTY=$(git -C "$RINGWAY_SRC" status --porcelain --untracked-files=no 2>/dev/null | wc -l)
fi
RINGWAY_ADMIN=()
if [[ $RINGWAY_STATUS == ok ]] && "$RINGWAY_BIN" run --help 2>&1 | grep -q -- '--admin'; then
  RINGWAY_ADMIN=(--admin off)
fi
for v in $RINGWAY_VARIANTS; do TARGETS+=" ringway-${v%%=*}"; done
log "ringway: $RINGWAY_BIN ($RINGWAY_STATUS, commit $RINGWAY_COMMIT, modified files: $RINGWAY_DIRTY)"

# ------------------------------------------------------------ configs
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
WORK=$(mktemp -d /tmp/ringway-bench.XXXXXX)
ECHO_PORT=$BASE_PORT
SINK_PORT=$((BASE_PORT + 1))
# Per target: echo front = base+2+2i, sink front = base+3+2i.
declare -A FRONT_ECHO FRONT_SINK
i=0
for t in direct haproxy-splice haproxy-default nginx ringway $(for v in $RINGWAY_VARIANTS; do echo "ringway-${v%%=*}"; done); do
  FRONT_ECHO[$t]=$((BASE_PORT + 2 + 2 * i))
  FRONT_SINK[$t]=$((BASE_PORT + 3 + 2 * i))
  i=$((i + 1))
done
FRONT_ECHO[direct]=$ECHO_PORT
FRONT_SINK[direct]=$SINK_PORT

haproxy_cfg() { # name splice(0/1)
  local f=$WORK/$1.cfg
  {
    echo "global"
    echo "  nbthread $WORKERS"
    echo "  maxconn 6000"
    [[ -n ${HAPROXY_PIPESIZE:-} ]] && echo "  tune.pipesize $HAPROXY_PIPESIZE"
    echo "defaults"
    echo "  mode tcp"
    echo "  timeout connect 5s"
    echo "  timeout client 1h"
    echo "  timeout server 1h"
    if [[ $2 == 1 ]]; then
      echo "  option splice-request"
      echo "  option splice-response"
    fi
    echo "listen echo"
    echo "  bind 127.0.0.1:${FRONT_ECHO[$1]}"
    echo "  server echo 127.0.0.1:$ECHO_PORT"
    echo "listen sink"
    echo "  bind 127.0.0.1:${FRONT_SINK[$1]}"
    echo "  server sink 127.0.0.1:$SINK_PORT"
  } >"$f"
}
haproxy_cfg haproxy-splice 1
haproxy_cfg haproxy-default 0

cat >"$WORK/nginx.conf" <<EOF
worker_processes $WORKERS;
worker_rlimit_nofile 20000;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
events { worker_connections 12000; }
stream {
  # Forward a client's FIN as a half-close like HAProxy and ringway do
  # (nginx otherwise ends the session, and the sink's byte count is lost).
  proxy_half_close on;
  server { listen 127.0.0.1:${FRONT_ECHO[nginx]}; proxy_pass 127.0.0.1:$ECHO_PORT; }
  server { listen 127.0.0.1:${FRONT_SINK[nginx]}; proxy_pass 127.0.0.1:$SINK_PORT; }
}
EOF

ringway_cfg() { # target-name
  local d=$WORK/$1
  mkdir -p "$d"
  cat >"$d/bench.yaml" <<EOF
# Bench backends as a static ServiceEntry; one Gateway with two TCP servers
# bound to 127.0.0.1; one VirtualService routing each port to its backend.
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
  - number: 9000
    name: tcp-echo
    protocol: TCP
  - number: 9001
    name: tcp-sink
    protocol: TCP
  endpoints:
  - address: 127.0.0.1
    ports:
      tcp-echo: $ECHO_PORT
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
      number: ${FRONT_ECHO[$1]}
      name: tcp-echo
      protocol: TCP
    hosts:
    - "*"
  - bind: 127.0.0.1
    port:
      number: ${FRONT_SINK[$1]}
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
    - port: ${FRONT_ECHO[$1]}
    route:
    - destination:
        host: bench-backends.bench.local
        port:
          number: 9000
  - match:
    - port: ${FRONT_SINK[$1]}
    route:
    - destination:
        host: bench-backends.bench.local
        port:
          number: 9001
EOF
}
ringway_cfg ringway
for v in $RINGWAY_VARIANTS; do ringway_cfg "ringway-${v%%=*}"; done

# start_proxy TARGET: sets PROXY_PID ("" for direct); returns 1 when the
# target cannot run (ringway pending).
start_proxy() {
  local t=$1 args=()
  PROXY_PID=""
  case $t in
    direct) return 0 ;;
    haproxy-*) start "$t" "${PIN_PROXY[@]}" haproxy -db -f "$WORK/$t.cfg" ;;
    nginx) start nginx "${PIN_PROXY[@]}" nginx -e "$WORK/nginx-error.log" -p "$WORK" -c "$WORK/nginx.conf" -g 'daemon off;' ;;
    ringway|ringway-*)
      [[ $RINGWAY_STATUS == ok ]] || return 1
      if [[ $t != ringway ]]; then
        for v in $RINGWAY_VARIANTS; do
          [[ ringway-${v%%=*} == "$t" ]] && IFS=, read -r -a args <<<"${v#*=}"
        done
      fi
      start "$t" env RUST_LOG=warn "${PIN_PROXY[@]}" "$RINGWAY_BIN" run -c "$WORK/$t" --workers "$WORKERS" "${RINGWAY_ADMIN[@]}" "${args[@]}" ;;
    *) die "unknown target $t" ;;
  esac
  PROXY_PID=$STARTED_PID
  # `env` and `taskset` exec, so the PID is the proxy's own.
}

# ------------------------------------------------------------ run
log "work dir $WORK; WORKERS=$WORKERS ROUNDS=$ROUNDS DURATION=${DURATION}s IDLE_CONNS=$IDLE_CONNS"
log "targets: $TARGETS; tests: $TESTS"
start echo "${PIN_LOAD[@]}" "$BIN/echo" --listen "127.0.0.1:$ECHO_PORT"
start sink "${PIN_LOAD[@]}" "$BIN/sink" --listen "127.0.0.1:$SINK_PORT"
"${PIN_LOAD[@]}" "$LOADGEN" probe --target "127.0.0.1:$ECHO_PORT" --duration 10 >/dev/null || die "echo backend did not start"

RUNS=$WORK/runs.jsonl
: >"$RUNS"
LOADAVG_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# measure TARGET ROUND TEST loadgen-args...: one loadgen run, one JSONL line.
measure() {
  local t=$1 r=$2 test=$3; shift 3
  local watch=()
  [[ -n $PROXY_PID ]] && watch=(--watch-pid "$PROXY_PID")
  local out
  out=$("${PIN_LOAD[@]}" "$LOADGEN" "$@" "${watch[@]}" 2>>"$WORK/loadgen.err") || log "  $t $test: loadgen reported a failure"
  [[ -n $out ]] || out='{"error":"no output"}'
  jq -c --arg t "$t" --argjson r "$r" --arg test "$test" '{target:$t, round:$r, test:$test} + {result:.}' <<<"$out" >>"$RUNS"
  printf '%s\n' "$out" | jq -r --arg t "$t" --arg test "$test" \
    '"  \($t) \($test): " + ([.gbit_per_s, .conns_per_s, .requests_per_s, .proxy_cpu_s_per_gb, .proxy_cpu_s_per_10k_conns, .latency.p99, .proxy_rss_kib_per_conn] | map(select(. != null) | (. * 1000 | round / 1000 | tostring)) | join(" "))' >&2
}

read -r -a TLIST <<<"$TARGETS"
N=${#TLIST[@]}
for ((r = 1; r <= ROUNDS; r++)); do
  log "round $r/$ROUNDS"
  for ((k = 0; k < N; k++)); do
    t=${TLIST[$(((k + r - 1) % N))]}
    if ! start_proxy "$t"; then
      jq -nc --arg t "$t" --argjson r "$r" --arg s "$RINGWAY_STATUS" '{target:$t, round:$r, test:"skipped", result:{status:$s}}' >>"$RUNS"
      log "  $t: skipped ($RINGWAY_STATUS)"
      continue
    fi
    e=127.0.0.1:${FRONT_ECHO[$t]}
    s=127.0.0.1:${FRONT_SINK[$t]}
    if ! "${PIN_LOAD[@]}" "$LOADGEN" probe --target "$e" --duration 10 >/dev/null \
      || ! "${PIN_LOAD[@]}" "$LOADGEN" throughput --target "$s" --duration 0.2 >/dev/null; then
      log "  $t: not serving after 10 s; log:"; tail -5 "$WORK/$t.log" >&2 || true
      jq -nc --arg t "$t" --argjson r "$r" '{target:$t, round:$r, test:"skipped", result:{status:"did not start"}}' >>"$RUNS"
      [[ -n $PROXY_PID ]] && stop_pid "$PROXY_PID"
      continue
    fi
    sleep 0.5
    for test in $TESTS; do
      case $test in
        bulk1) measure "$t" "$r" bulk1 throughput --target "$s" --streams 1 --duration "$DURATION" ;;
        bulk8) measure "$t" "$r" bulk8 throughput --target "$s" --streams 8 --duration "$DURATION" ;;
        connrate) measure "$t" "$r" connrate connrate --target "$e" --concurrency "$CONNRATE_CONC" --size "$RR_SIZE" --duration "$DURATION" ;;
        rr) measure "$t" "$r" rr rr --target "$e" --connections "$RR_CONNS" --size "$RR_SIZE" --duration "$DURATION" ;;
        idle) measure "$t" "$r" idle idle --target "$e" --count "$IDLE_CONNS" --settle 2s --duration 60 ;;
        *) die "unknown test $test" ;;
      esac
    done
    if [[ -n $PROXY_PID ]]; then
      if [[ ! -d /proc/$PROXY_PID ]]; then
        log "  $t: the proxy DIED during the round; log:"; tail -20 "$WORK/$t.log" >&2 || true
        jq -nc --arg t "$t" --argjson r "$r" '{target:$t, round:$r, test:"crash", result:{status:"proxy exited"}}' >>"$RUNS"
      fi
      stop_pid "$PROXY_PID"
    fi
  done
done
LOADAVG_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ------------------------------------------------------------ results
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
OUT=$HERE/results/$(date -u +%Y-%m-%d-%H%M)-$COMMIT${RESULTS_LABEL:+-$RESULTS_LABEL}
mkdir -p "$OUT/configs"
cp "$RUNS" "$OUT/runs.jsonl"
cp "$WORK"/haproxy-*.cfg "$WORK/nginx.conf" "$OUT/configs/"
cp "$WORK/ringway/bench.yaml" "$OUT/configs/ringway.yaml"
jq -n \
  --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  --arg kernel "$(uname -r)" --arg nproc "$(nproc)" \
  --arg cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')" \
  --arg mem "$(grep MemTotal /proc/meminfo | awk '{print $2" kB"}')" \
  --arg commit "$COMMIT" --arg ringway_bin "$RINGWAY_BIN" --arg ringway_commit "$RINGWAY_COMMIT" \
  --arg ringway_dirty "$RINGWAY_DIRTY" --arg ringway_status "$RINGWAY_STATUS" \
  --arg haproxy "$(haproxy -v 2>/dev/null | head -1)" --arg nginx "$(nginx -v 2>&1)" \
  --arg workers "$WORKERS" --arg rounds "$ROUNDS" --arg duration "$DURATION" --arg idle "$IDLE_CONNS" \
  --arg quick "$QUICK" --arg runlabel "${RESULTS_LABEL:-}" --arg targets "$TARGETS" \
  --arg variants "$RINGWAY_VARIANTS" --arg pin "$([[ $WORKERS == 1 ]] && echo 'proxy CPU 1, load+backends CPU 0' || echo none)" \
  --arg tests "$TESTS" --arg conc "$CONNRATE_CONC" --arg rrc "$RR_CONNS" --arg size "$RR_SIZE" \
  --arg la0 "$LOADAVG_BEFORE" --arg la1 "$LOADAVG_AFTER" \
  '{date:$date, kernel:$kernel, nproc:($nproc|tonumber), cpu:$cpu, mem_total:$mem,
    bench_commit:$commit, ringway:{bin:$ringway_bin, commit:$ringway_commit, modified_files:$ringway_dirty, status:$ringway_status, variants:$variants},
    haproxy:$haproxy, nginx:$nginx,
    settings:{workers:($workers|tonumber), rounds:($rounds|tonumber), duration_s:($duration|tonumber), idle_conns:($idle|tonumber),
      quick:($quick=="1"), pinning:$pin, connrate_concurrency:($conc|tonumber), rr_connections:($rrc|tonumber), request_bytes:($size|tonumber), targets:($targets|split(" ")), tests:($tests|split(" "))},
    label:$runlabel, loadavg_before:$la0, loadavg_after:$la1}' >"$OUT/meta.json"
python3 "$HERE/summarize.py" "$OUT"
log "results in ${OUT#"$ROOT"/}"
cat "$OUT/summary.md"
