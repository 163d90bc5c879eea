#!/usr/bin/env bash
# Cross-check with clients nobody on the team wrote: iperf3, wrk and
# redis-benchmark, each against its own server (iperf3 -s, an nginx serving
# static files, redis-server), directly and through HAProxy (forced splice
# and default), nginx stream and ringway, in the same rounds. The proxies use
# the same configuration writers as run.sh (bench/lib.sh). 127.0.0.1 only;
# every client run is killed at a deadline; every process started here is
# stopped by PID on exit.
#
#   bench/crosscheck.sh                  # full run, ~13 minutes
#   QUICK=1 bench/crosscheck.sh          # ~2 minutes, not to quote
#
# Environment (defaults in brackets):
#   WORKERS [1]       worker threads/processes for every proxy. With 1, proxies
#                     are pinned to CPU 1, clients and servers to CPU 0.
#   ROUNDS [3]        rounds; each round runs every target once, in rotated order.
#   QUICK [0]         1: ROUNDS=1, 2 s per measurement, a quarter of the redis requests.
#   DURATION [5]      seconds per iperf3 and wrk run (-t / -d).
#   TARGETS           [direct haproxy-splice haproxy-default nginx ringway]
#   TESTS             [iperf1 iperf8 iperf1r wrk64 wrk64close wrk1m redis redis16]
#   WRK_CONNS [32]    wrk connections (one wrk thread).
#   REDIS_N [100000]  requests per command for redis-benchmark without pipelining;
#   REDIS_N_PIPE [1000000] the same with -P 16;  REDIS_CLIENTS [50] (-c).
#   RINGWAY_BIN       ringway binary; default: cargo build --release --locked at the repo root.
#   RINGWAY_SRC, RINGWAY_COMMIT, HAPROXY_PIPESIZE: as in run.sh.
#   RESULTS_LABEL     suffix of the results directory name.
#   NO_INSTALL [0]    1: do not apt-get install anything.
#   BASE_PORT [24200] first of the 18 ports used on 127.0.0.1.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# The command as given (the knobs set in the environment), for the summary.
INVOCATION=""
for k in WORKERS ROUNDS QUICK DURATION TARGETS TESTS WRK_CONNS REDIS_N REDIS_N_PIPE REDIS_CLIENTS \
  RINGWAY_BIN RINGWAY_SRC RINGWAY_COMMIT HAPROXY_PIPESIZE RESULTS_LABEL NO_INSTALL BASE_PORT; do
  [[ -n ${!k:-} ]] && INVOCATION+="$k=${!k@Q} "
done
INVOCATION+="bench/crosscheck.sh"

LOG_TAG=crosscheck.sh
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$HERE/lib.sh"
common_settings
if [[ $QUICK == 1 ]]; then
  REDIS_N=${REDIS_N:-25000}
  REDIS_N_PIPE=${REDIS_N_PIPE:-250000}
fi
REDIS_N=${REDIS_N:-100000}
REDIS_N_PIPE=${REDIS_N_PIPE:-1000000}
TESTS=${TESTS:-"iperf1 iperf8 iperf1r wrk64 wrk64close wrk1m redis redis16"}
WRK_CONNS=${WRK_CONNS:-32}
REDIS_CLIENTS=${REDIS_CLIENTS:-50}
BASE_PORT=${BASE_PORT:-24200}
RINGWAY_VARIANTS=""
# A client run is killed after this many seconds (it normally ends by itself).
CLIENT_DEADLINE=$((DURATION + 60))
setup_pinning
install_proxies
need=()
command -v iperf3 >/dev/null || need+=(iperf3)
command -v wrk >/dev/null || need+=(wrk)
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-benchmark >/dev/null || need+=(redis-tools)
command -v curl >/dev/null || need+=(curl)
install_packages "${need[@]}"
for c in iperf3 wrk redis-server redis-benchmark redis-cli curl ss jq; do
  command -v "$c" >/dev/null || die "$c is not installed"
done
build_tools "$HERE" "$ROOT"

# ------------------------------------------------------------ configs
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
WORK=$(mktemp -d /tmp/ringway-xcheck.XXXXXX)
BACKENDS=(iperf http redis)
declare -A BACKEND_PORT=([iperf]=$BASE_PORT [http]=$((BASE_PORT + 1)) [redis]=$((BASE_PORT + 2)))
assign_fronts "$BASE_PORT" direct haproxy-splice haproxy-default nginx ringway
write_proxy_configs

# The HTTP backend: its own nginx (not the stream proxy), static files.
# nginx's workers run as nobody: the files must be readable by them.
chmod 711 "$WORK"
mkdir -p "$WORK/http/www" "$WORK/out" "$WORK/raw"
chmod 755 "$WORK/http" "$WORK/http/www"
head -c 64 /dev/zero | tr '\0' x >"$WORK/http/www/64.bin"
head -c 1048576 /dev/urandom >"$WORK/http/www/1m.bin"
chmod 644 "$WORK/http/www/"*.bin
cat >"$WORK/http/nginx.conf" <<EOF
worker_processes 1;
pid $WORK/http/nginx.pid;
error_log $WORK/http/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  default_type application/octet-stream;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000000;
  keepalive_timeout 75s;
  server {
    listen 127.0.0.1:${BACKEND_PORT[http]};
    root $WORK/http/www;
  }
}
EOF

# ------------------------------------------------------------ helpers
# listening PORT: true when something listens on 127.0.0.1:PORT.
listening() { [[ -n $(ss -Hltn "sport = :$1") ]]; }

# wait_listening PORT SECONDS
wait_listening() {
  local i
  for ((i = 0; i < $2 * 20; i++)); do listening "$1" && return 0; sleep 0.05; done
  return 1
}

# serving TARGET: the HTTP and redis routes answer and the proxy listens on
# the iperf port (no iperf3 server runs between tests), within 10 s.
serving() {
  local t=$1 i
  for ((i = 0; i < 100; i++)); do
    if { [[ $t == direct ]] || listening "${FRONT[$t/iperf]}"; } \
      && curl -sf --max-time 2 -o /dev/null "http://127.0.0.1:${FRONT[$t/http]}/64.bin" \
      && [[ $(timeout 2 redis-cli -h 127.0.0.1 -p "${FRONT[$t/redis]}" ping 2>/dev/null) == PONG ]]; then
      return 0
    fi
    sleep 0.1
  done
  return 1
}

# record TARGET ROUND TEST FIGURES-JSON: one line of runs.jsonl; the proxy's
# CPU and the client's exit status come from CLIENT_EXEC.
record() {
  local t=$1 r=$2 test=$3 figures=$4
  jq -c -n --arg t "$t" --argjson r "$r" --arg test "$test" --argjson f "$figures" --argjson x "$CLIENT_EXEC" --argjson m "$CLIENT_MACHINE" '
    ($x.proxy.cpu_s // null) as $cpu
    | ($f + {proxy: $x.proxy, client: ($x | del(.proxy)), machine: $m}) as $res
    | $res
    | if $cpu != null and (.bytes // 0) > 0 then .proxy_cpu_s_per_gb = $cpu / (.bytes / 1e9) else . end
    | if $cpu != null and (.requests // 0) > 0 then .proxy_cpu_s_per_10k_requests = $cpu / .requests * 1e4 else . end
    | if ($x.exit_code != 0 or $x.timed_out or $x.error) and (.error | not)
      then .error = "client exit code \($x.exit_code // "none")\(if $x.timed_out then ", killed at the deadline" else "" end)\($x.error // "" | if . != "" then ": " + . else "" end)"
      else . end
    | {target: $t, round: $r, test: $test, result: .}' >>"$RUNS"
  jq -r --arg t "$t" --arg test "$test" '.result | "  \($t) \($test): " + ([.gbit_per_s, .requests_per_s, .set_ops_per_s, .get_ops_per_s, .latency.p99, .proxy_cpu_s_per_gb, .proxy_cpu_s_per_10k_requests] | map(select(. != null) | (. * 1000 | round / 1000 | tostring)) | join(" "))
      + (if (.machine.steal_pct // 0) > 5 then "  (steal \(.machine.steal_pct)%)" else "" end) + (if .error then "  ERROR: \(.error)" else "" end)' <<<"$(tail -1 "$RUNS")" >&2
}

# iperf3: a fresh one-off server per run (a failed run cannot leave it busy).
run_iperf() {
  local t=$1 r=$2 test=$3 spid f; shift 3
  start "iperf3-server-$t-$r-$test" "${PIN_LOAD[@]}" iperf3 -s -1 -B 127.0.0.1 -p "${BACKEND_PORT[iperf]}"
  spid=$STARTED_PID
  wait_listening "${BACKEND_PORT[iperf]}" 10 || log "  iperf3 server did not listen"
  client "$t" "$r" "$test" iperf3 -c 127.0.0.1 -p "${FRONT[$t/iperf]}" -t "$DURATION" -J --connect-timeout 5000 "$@"
  stop_pid "$spid"
  # Receiver side, all streams: with -R the client is the receiver, and
  # iperf3's sum_received is still the receiving side's figure.
  f=$(jq -c '{bytes: .end.sum_received.bytes, seconds: .end.sum_received.seconds,
      gbit_per_s: (if .end.sum_received.bits_per_second then .end.sum_received.bits_per_second / 1e9 else null end),
      sender_gbit_per_s: (if .end.sum_sent.bits_per_second then .end.sum_sent.bits_per_second / 1e9 else null end),
      retransmits: .end.sum_sent.retransmits, streams: (.start.test_start.num_streams),
      reverse: (.start.test_start.reverse == 1)}
      + (if .error then {error: ("iperf3: " + .error)} else {} end)' "$CLIENT_OUT" 2>/dev/null) \
    || f='{"error":"iperf3 gave no JSON"}'
  jq 'del(.intervals)' "$CLIENT_OUT" >"$WORK/raw/$t-$r-$test.json" 2>/dev/null || cp "$CLIENT_OUT" "$WORK/raw/$t-$r-$test.json"
  record "$t" "$r" "$test" "$f"
}

run_wrk() {
  local t=$1 r=$2 test=$3 path=$4 f; shift 4
  client "$t" "$r" "$test" wrk -t1 -c"$WRK_CONNS" -d"${DURATION}s" --latency -s "$HERE/wrk-report.lua" "$@" \
    "http://127.0.0.1:${FRONT[$t/http]}/$path"
  cp "$CLIENT_OUT" "$WORK/raw/$t-$r-$test.txt"
  f=$(sed -n 's/^WRKJSON //p' "$CLIENT_OUT" | jq -c '
      (.socket_errors.connect + .socket_errors.read + .socket_errors.write + .socket_errors.timeout) as $se
      | {requests, bytes, seconds: (.duration_us / 1e6),
         requests_per_s: (.requests / (.duration_us / 1e6)),
         gbit_per_s: (.bytes * 8 / (.duration_us / 1e3) / 1e6),
         latency: {unit: "us", mean: .latency_us.mean, p50: .latency_us.p50, p90: .latency_us.p90, p99: .latency_us.p99, p99_9: .latency_us.p99_9, max: .latency_us.max},
         socket_errors, non_2xx_3xx}
      + (if .requests == 0 then {error: "wrk: no request completed"}
         elif .non_2xx_3xx > 0 then {error: "wrk: \(.non_2xx_3xx) non-2xx/3xx responses"} else {} end)
      + (if $se > 0 then {socket_errors_total: $se} else {} end)' 2>/dev/null)
  [[ -n $f ]] || f='{"error":"wrk gave no report"}'
  record "$t" "$r" "$test" "$f"
}

# redis-benchmark -t set,get: ops/s and latency per command from --csv.
run_redis() {
  local t=$1 r=$2 test=$3 n=$4 f; shift 4
  client "$t" "$r" "$test" redis-benchmark -h 127.0.0.1 -p "${FRONT[$t/redis]}" -t set,get -n "$n" -c "$REDIS_CLIENTS" -q --csv "$@"
  cp "$CLIENT_OUT" "$WORK/raw/$t-$r-$test.csv"
  f=$(jq -R -s -c --argjson n "$n" '
      [split("\n")[] | select(length > 0) | [scan("\"([^\"]*)\"") | .[0]]] as $rows
      | ($rows[0]) as $h
      | [$rows[1:][] | [$h, .] | transpose | map({(.[0]): .[1]}) | add] as $recs
      | ($recs | map({(.test): .}) | add // {}) as $by
      | {requests: (2 * $n)}
      + (reduce ("SET", "GET") as $c ({}; if $by[$c] then
          . + {("\($c | ascii_downcase)_ops_per_s"): ($by[$c].rps | tonumber),
               ("\($c | ascii_downcase)_latency"): {unit: "us",
                 avg: (($by[$c].avg_latency_ms // "null") | tonumber? * 1000),
                 p50: (($by[$c].p50_latency_ms // "null") | tonumber? * 1000),
                 p99: (($by[$c].p99_latency_ms // "null") | tonumber? * 1000),
                 max: (($by[$c].max_latency_ms // "null") | tonumber? * 1000)}}
          else . + {error: "redis-benchmark: no \($c) result"} end))' "$CLIENT_OUT" 2>/dev/null)
  [[ -n $f ]] || f='{"error":"redis-benchmark gave no CSV"}'
  record "$t" "$r" "$test" "$f"
}

# ------------------------------------------------------------ servers
log "work dir $WORK; WORKERS=$WORKERS ROUNDS=$ROUNDS DURATION=${DURATION}s REDIS_N=$REDIS_N REDIS_N_PIPE=$REDIS_N_PIPE"
log "targets: $TARGETS; tests: $TESTS"
start http-backend "${PIN_LOAD[@]}" nginx -e "$WORK/http/error.log" -p "$WORK/http" -c "$WORK/http/nginx.conf" -g 'daemon off;'
mkdir -p "$WORK/redis"
start redis-server "${PIN_LOAD[@]}" redis-server --port "${BACKEND_PORT[redis]}" --bind 127.0.0.1 --save '' --appendonly no \
  --daemonize no --dir "$WORK/redis"
serving direct || die "the HTTP or redis backend did not start (logs in $WORK)"

RUNS=$WORK/runs.jsonl
: >"$RUNS"
LOADAVG_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# tests TARGET ROUND
tests() {
  local t=$1 r=$2 test
  for test in $TESTS; do
    case $test in
      iperf1) run_iperf "$t" "$r" "$test" ;;
      iperf8) run_iperf "$t" "$r" "$test" -P 8 ;;
      iperf1r) run_iperf "$t" "$r" "$test" -R ;;
      wrk64) run_wrk "$t" "$r" "$test" 64.bin ;;
      wrk64close) run_wrk "$t" "$r" "$test" 64.bin -H 'Connection: close' ;;
      wrk1m) run_wrk "$t" "$r" "$test" 1m.bin ;;
      redis) run_redis "$t" "$r" "$test" "$REDIS_N" ;;
      redis16) run_redis "$t" "$r" "$test" "$REDIS_N_PIPE" -P 16 ;;
      *) die "unknown test $test" ;;
    esac
  done
}

run_rounds serving tests
LOADAVG_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ------------------------------------------------------------ results
results_dir crosscheck
cp "$WORK"/haproxy-*.cfg "$WORK/nginx.conf" "$OUT/configs/"
cp "$WORK/ringway/bench.yaml" "$OUT/configs/ringway.yaml"
cp "$WORK/http/nginx.conf" "$OUT/configs/http-backend-nginx.conf"
P='<port>'
machine_json | jq \
  --arg kind crosscheck --arg commit "$COMMIT" --arg invocation "$INVOCATION" \
  --arg workers "$WORKERS" --arg rounds "$ROUNDS" --arg duration "$DURATION" \
  --arg quick "$QUICK" --arg targets "$TARGETS" --arg tests "$TESTS" --arg pin "$PIN_DESC" \
  --arg wrkc "$WRK_CONNS" --arg rn "$REDIS_N" --arg rnp "$REDIS_N_PIPE" --arg rc "$REDIS_CLIENTS" \
  --arg iperf3 "$(iperf3 --version | head -1)" --arg wrk "$(wrk -v 2>&1 | head -1)" \
  --arg redis "$(redis-server --version)" --arg rb "$(redis-benchmark --version 2>&1 | head -1)" \
  --arg c_iperf "iperf3 -c 127.0.0.1 -p $P -t $DURATION -J --connect-timeout 5000 [-P 8 | -R]   (server: iperf3 -s -1 -B 127.0.0.1, fresh per run)" \
  --arg c_wrk "wrk -t1 -c$WRK_CONNS -d${DURATION}s --latency -s bench/wrk-report.lua [-H 'Connection: close'] http://127.0.0.1:$P/{64.bin|1m.bin}   (server: nginx, sendfile, keepalive_requests 100000000)" \
  --arg c_redis "redis-benchmark -h 127.0.0.1 -p $P -t set,get -n $REDIS_N -c $REDIS_CLIENTS -q --csv;  -P 16 with -n $REDIS_N_PIPE   (server: redis-server --save '' --appendonly no)" \
  '. + {kind:$kind, bench_commit:$commit, invocation:$invocation,
    tools:{iperf3:$iperf3, wrk:$wrk, redis_server:$redis, redis_benchmark:$rb},
    commands:{iperf3:$c_iperf, wrk:$c_wrk, redis_benchmark:$c_redis},
    settings:{workers:($workers|tonumber), rounds:($rounds|tonumber), duration_s:($duration|tonumber),
      quick:($quick=="1"), pinning:$pin, wrk_connections:($wrkc|tonumber), redis_n:($rn|tonumber), redis_n_pipelined:($rnp|tonumber),
      redis_clients:($rc|tonumber), targets:($targets|split(" ")), tests:($tests|split(" "))}}' >"$OUT/meta.json"
python3 "$HERE/summarize.py" "$OUT"
log "results in ${OUT#"$ROOT"/}"
cat "$OUT/summary.md"
