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
#                    (name=arg,arg...; each becomes target ringway-<name>);
#                    "base=bin:/path/to/ringway" runs another binary (an older
#                    commit) side by side with this one.
#   CONNRATE_CONC [4] connrate client threads;  RR_CONNS [1] rr connections;
#   RR_SIZE [64]      rr/connrate request bytes.
#   HAPROXY_PIPESIZE  tune.pipesize for HAProxy (default: HAProxy's default).
#   RESULTS_LABEL     suffix of the results directory name (e.g. smoke).
#   NO_INSTALL [0]    1: do not apt-get install anything.
#   BASE_PORT [24100] first of the 12 ports used on 127.0.0.1.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
LOG_TAG=run.sh
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$HERE/lib.sh"
common_settings
IDLE_CONNS=${IDLE_CONNS:-5000}
TESTS=${TESTS:-"bulk1 bulk8 connrate rr idle"}
CONNRATE_CONC=${CONNRATE_CONC:-4}
RR_CONNS=${RR_CONNS:-1}
RR_SIZE=${RR_SIZE:-64}
BASE_PORT=${BASE_PORT:-24100}
RINGWAY_VARIANTS=${RINGWAY_VARIANTS:-}
setup_pinning
install_proxies
build_tools "$HERE" "$ROOT"
for v in $RINGWAY_VARIANTS; do TARGETS+=" ringway-${v%%=*}"; done

# ------------------------------------------------------------ configs
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
WORK=$(mktemp -d /tmp/ringway-bench.XXXXXX)
BACKENDS=(echo sink)
declare -A BACKEND_PORT=([echo]=$BASE_PORT [sink]=$((BASE_PORT + 1)))
ECHO_PORT=${BACKEND_PORT[echo]}
SINK_PORT=${BACKEND_PORT[sink]}
# Per target: echo front = base+2+2i, sink front = base+3+2i.
# shellcheck disable=SC2046
assign_fronts "$BASE_PORT" direct haproxy-splice haproxy-default nginx ringway $(for v in $RINGWAY_VARIANTS; do echo "ringway-${v%%=*}"; done)
write_proxy_configs

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
  local out m0
  m0=$(machine_sample)
  out=$("${PIN_LOAD[@]}" "$LOADGEN" "$@" "${watch[@]}" 2>>"$WORK/loadgen.err") || log "  $t $test: loadgen reported a failure"
  [[ -n $out ]] || out='{"error":"no output"}'
  jq -c --arg t "$t" --argjson r "$r" --arg test "$test" --argjson m "$(machine_between "$m0" "$(machine_sample)")" \
    '{target:$t, round:$r, test:$test} + {result:(. + {machine:$m})}' <<<"$out" >>"$RUNS"
  printf '%s\n' "$out" | jq -r --arg t "$t" --arg test "$test" \
    '"  \($t) \($test): " + ([.gbit_per_s, .conns_per_s, .requests_per_s, .proxy_cpu_s_per_gb, .proxy_cpu_s_per_10k_conns, .latency.p99, .proxy_rss_kib_per_conn] | map(select(. != null) | (. * 1000 | round / 1000 | tostring)) | join(" "))' >&2
}

# serving TARGET: a 1-byte echo and a short upload come back through it.
serving() {
  "${PIN_LOAD[@]}" "$LOADGEN" probe --target "127.0.0.1:${FRONT[$1/echo]}" --duration 10 >/dev/null \
    && "${PIN_LOAD[@]}" "$LOADGEN" throughput --target "127.0.0.1:${FRONT[$1/sink]}" --duration 0.2 >/dev/null
}

# tests TARGET ROUND
tests() {
  local t=$1 r=$2 test e=127.0.0.1:${FRONT[$1/echo]} s=127.0.0.1:${FRONT[$1/sink]}
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
}

run_rounds serving tests
LOADAVG_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ------------------------------------------------------------ results
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
OUT=$HERE/results/$(date -u +%Y-%m-%d-%H%M)-$COMMIT${RESULTS_LABEL:+-$RESULTS_LABEL}
mkdir -p "$OUT/configs"
cp "$RUNS" "$OUT/runs.jsonl"
cp "$WORK"/haproxy-*.cfg "$WORK/nginx.conf" "$OUT/configs/"
cp "$WORK/ringway/bench.yaml" "$OUT/configs/ringway.yaml"
machine_json | jq \
  --arg commit "$COMMIT" \
  --arg workers "$WORKERS" --arg rounds "$ROUNDS" --arg duration "$DURATION" --arg idle "$IDLE_CONNS" \
  --arg quick "$QUICK" --arg targets "$TARGETS" \
  --arg pin "$PIN_DESC" \
  --arg tests "$TESTS" --arg conc "$CONNRATE_CONC" --arg rrc "$RR_CONNS" --arg size "$RR_SIZE" \
  '. + {bench_commit:$commit,
    settings:{workers:($workers|tonumber), rounds:($rounds|tonumber), duration_s:($duration|tonumber), idle_conns:($idle|tonumber),
      quick:($quick=="1"), pinning:$pin, connrate_concurrency:($conc|tonumber), rr_connections:($rrc|tonumber), request_bytes:($size|tonumber), targets:($targets|split(" ")), tests:($tests|split(" "))}}' >"$OUT/meta.json"
python3 "$HERE/summarize.py" "$OUT"
log "results in ${OUT#"$ROOT"/}"
cat "$OUT/summary.md"
