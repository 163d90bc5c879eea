#!/usr/bin/env bash
# HTTP side by side (issue 15): wrk and h2load --h1 against an nginx
# backend, directly and through HAProxy 2.6 `mode http`, nginx `proxy_pass`
# with upstream keepalive and ringway (an HTTP listener from a Gateway +
# VirtualService written here), in the same rounds, targets rotated every
# round. 127.0.0.1 only; every client run is killed at a deadline; every
# process started here is stopped by PID on exit.
#
#   bench/http.sh                  # full run: 3 rounds, ~9 minutes
#   QUICK=1 bench/http.sh          # 1 round, 2 s runs, ~2 minutes, not to quote
#   TARGETS="nginx ringway" TESTS="ka64 close64" bench/http.sh
#
# Environment (defaults in brackets):
#   WORKERS [1]        worker threads/processes for every proxy. With 1, proxies
#                      are pinned to CPU 1, clients and the backend to CPU 0.
#   ROUNDS [3]         rounds; each round runs every target once, in rotated order.
#   QUICK [0]          1: ROUNDS=1, 2 s per measurement.
#   DURATION [5]       seconds per wrk / h2load run.
#   TARGETS            [direct haproxy-http nginx ringway]
#   TESTS              [ka64 h2ka64 close64 dl1m dl64m up1m]; TESTS=idle alone (bench/http_idle.py,
#                      memory per idle keep-alive client connection)
#   WRK_CONNS [50]     connections of the small-response tests (one client thread).
#   BIG_CONNS [8]      connections of the 1 MiB download and upload tests.
#   HUGE_CONNS [2]     connections of the 64 MiB download test.
#   IDLE_CONNS [10000] idle keep-alive client connections of the idle test.
#   RINGWAY_BIN        ringway binary; default: cargo build --release --locked at the repo root.
#   RINGWAY_VARIANTS   extra ringway targets as in run.sh ("name=flag,flag" or
#                      "name=bin:/path[,flags]"); each becomes target ringway-<name>.
#   RINGWAY_SRC, RINGWAY_COMMIT: as in run.sh.
#   RESULTS_LABEL      suffix of the results directory name.
#   RESULTS_NOTE       a line for summary.md (e.g. "busy machine: two builds ran alongside").
#   NO_INSTALL [0]     1: do not apt-get install anything.
#   BASE_PORT [24500]  first of the ports used on 127.0.0.1 (backend, status, one per target).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
INVOCATION=""
for k in WORKERS ROUNDS QUICK DURATION TARGETS TESTS WRK_CONNS BIG_CONNS HUGE_CONNS IDLE_CONNS RINGWAY_BIN RINGWAY_VARIANTS \
  RINGWAY_SRC RINGWAY_COMMIT RESULTS_LABEL RESULTS_NOTE NO_INSTALL BASE_PORT; do
  [[ -n ${!k:-} ]] && INVOCATION+="$k=${!k@Q} "
done
INVOCATION+="bench/http.sh"

LOG_TAG=http.sh
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$HERE/lib.sh"
TARGETS=${TARGETS:-"direct haproxy-http nginx ringway"}
common_settings
TESTS=${TESTS:-"ka64 h2ka64 close64 dl1m dl64m up1m"}
WRK_CONNS=${WRK_CONNS:-50}
BIG_CONNS=${BIG_CONNS:-8}
HUGE_CONNS=${HUGE_CONNS:-2}
IDLE_CONNS=${IDLE_CONNS:-10000}
BASE_PORT=${BASE_PORT:-24500}
RINGWAY_VARIANTS=${RINGWAY_VARIANTS:-}
CLIENT_DEADLINE=$((DURATION + 60))
UPLOAD_BYTES=1048576
setup_pinning
install_proxies
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v curl >/dev/null || need+=(curl)
[[ -e /usr/lib/nginx/modules/ngx_http_echo_module.so ]] || need+=(libnginx-mod-http-echo)
install_packages "${need[@]}"
for c in wrk h2load curl jq haproxy nginx; do command -v "$c" >/dev/null || die "$c is not installed"; done
build_tools "$HERE" "$ROOT"
# ringway derives its connection cap from the descriptor limit (about 8,000
# under the sandbox's 20,000), counting two descriptors a connection; idle
# keep-alive clients hold one. The idle test raises it to HAProxy's maxconn
# below, which leaves no descriptor for splice pipes (budget.rs): ringway
# then copies every body, so that cap is set only when the idle test runs
# alone (`TESTS=idle`), never beside the body tests.
if [[ " $TESTS " == *" idle "* ]]; then
  [[ $TESTS == idle ]] || die "run TESTS=idle on its own: its connection cap leaves ringway no splice pipe for the other tests"
  RINGWAY_ADMIN+=(--max-connections $((IDLE_CONNS + 100)))
fi
for v in $RINGWAY_VARIANTS; do TARGETS+=" ringway-${v%%=*}"; done

# ------------------------------------------------------------ configs
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
WORK=$(mktemp -d /tmp/ringway-http.XXXXXX)
BACKENDS=(http)
declare -A BACKEND_PORT=([http]=$BASE_PORT)
STATUS_PORT=$((BASE_PORT + 1))
# shellcheck disable=SC2046
assign_fronts $((BASE_PORT + 1)) direct $(for t in $TARGETS; do [[ $t == direct ]] || echo "$t"; done)
FRONT[direct/http]=$BASE_PORT

haproxy_http_cfg() { # target
  cat >"$WORK/$1.cfg" <<EOF
global
  nbthread $WORKERS
  # Room for IDLE_CONNS idle clients; the sandbox's hard RLIMIT_NOFILE is
  # 20,000, below the 2 x maxconn HAProxy asks for by default.
  ulimit-n 20000
  maxconn $((IDLE_CONNS + 100))
  no strict-limits
defaults
  mode http
  option http-keep-alive
  http-reuse safe
  timeout connect 5s
  timeout client 1h
  timeout server 1h
  timeout http-keep-alive 1h
listen http
  bind 127.0.0.1:${FRONT[$1/http]}
  server backend 127.0.0.1:${BACKEND_PORT[http]}
EOF
}

# nginx proxy_pass with upstream keepalive. Bodies stream through memory:
# no request buffering and no temporary files (nginx's defaults would write
# 1 MiB uploads and slow readers' 64 MiB downloads to disk).
nginx_http_cfg() {
  mkdir -p "$WORK/nginx-tmp"
  cat >"$WORK/nginx.conf" <<EOF
worker_processes $WORKERS;
worker_rlimit_nofile 20000;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 12000; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx-tmp; proxy_temp_path $WORK/nginx-tmp;
  fastcgi_temp_path $WORK/nginx-tmp; uwsgi_temp_path $WORK/nginx-tmp; scgi_temp_path $WORK/nginx-tmp;
  keepalive_requests 100000000;
  keepalive_timeout 75s;
  client_max_body_size 0;
  upstream backend { server 127.0.0.1:${BACKEND_PORT[http]}; keepalive 64; keepalive_requests 100000000; }
  server {
    listen 127.0.0.1:${FRONT[nginx/http]};
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_request_buffering off;
      proxy_max_temp_file_size 0;
    }
  }
}
EOF
}

ringway_http_cfg() { # target
  mkdir -p "$WORK/$1"
  cat >"$WORK/$1/bench.yaml" <<EOF
# The bench's nginx backend as a static ServiceEntry, one Gateway with an
# HTTP server bound to 127.0.0.1, one VirtualService sending every request there.
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: web
spec:
  hosts: [web.bench.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1, ports: {http: ${BACKEND_PORT[http]}}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: bench-gateway
spec:
  selector: {istio: ingressgateway}
  servers:
  - bind: 127.0.0.1
    port: {number: ${FRONT[$1/http]}, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: web
spec:
  hosts: ["*"]
  gateways: [bench-gateway]
  http:
  - name: web
    route: [{destination: {host: web.bench.local, port: {number: 8080}}}]
EOF
}

for t in $TARGETS; do
  case $t in
    haproxy-http) haproxy_http_cfg "$t" ;;
    nginx) nginx_http_cfg ;;
    ringway | ringway-*) ringway_http_cfg "$t" ;;
    direct) ;;
    *) die "unknown target $t" ;;
  esac
done

# The backend: nginx serving files (sendfile) and discarding uploads (the
# echo module reads the body, then answers 204); stub_status on its own port
# counts the connections it accepted (the proxies' upstream connections).
chmod 711 "$WORK"
mkdir -p "$WORK/http/www" "$WORK/http/tmp" "$WORK/out" "$WORK/raw"
chmod 755 "$WORK/http" "$WORK/http/www"
chmod 777 "$WORK/http/tmp"
head -c 64 /dev/zero | tr '\0' x >"$WORK/http/www/64.bin"
head -c 1048576 /dev/urandom >"$WORK/http/www/1m.bin"
head -c 67108864 /dev/urandom >"$WORK/http/www/64m.bin"
chmod 644 "$WORK/http/www/"*.bin
cat >"$WORK/http/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_http_echo_module.so;
worker_processes 1;
worker_rlimit_nofile 20000;
pid $WORK/http/nginx.pid;
error_log $WORK/http/error.log warn;
events { worker_connections 12000; }
http {
  access_log off;
  default_type application/octet-stream;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000000;
  keepalive_timeout 75s;
  client_body_temp_path $WORK/http/tmp;
  server {
    listen 127.0.0.1:${BACKEND_PORT[http]};
    root $WORK/http/www;
    location = /upload { client_max_body_size 0; client_body_buffer_size 2m; echo_read_request_body; echo_status 204; }
  }
  server { listen 127.0.0.1:$STATUS_PORT; location = /status { stub_status; } }
}
EOF
# wrk script for uploads: the reporter plus a POST of UPLOAD_BYTES.
{
  cat "$HERE/wrk-report.lua"
  printf 'wrk.method = "POST"\nwrk.body = string.rep("u", %d)\nwrk.headers["Content-Type"] = "application/octet-stream"\n' "$UPLOAD_BYTES"
} >"$WORK/wrk-upload.lua"
head -c "$UPLOAD_BYTES" /dev/zero >"$WORK/upload.bin"

# ------------------------------------------------------------ helpers
# accepts: connections the backend accepted so far (stub_status), minus the
# status request itself.
accepts() {
  curl -sf --max-time 2 "http://127.0.0.1:$STATUS_PORT/status" | awk 'NR == 3 {print $1 - 1}'
}

# serving TARGET: a small file and an upload come back through it, within 10 s.
serving() {
  local i u="http://127.0.0.1:${FRONT[$1/http]}"
  for ((i = 0; i < 100; i++)); do
    if curl -sf --max-time 2 -o /dev/null "$u/64.bin" \
      && curl -sf --max-time 5 -o /dev/null --data-binary @"$WORK/upload.bin" "$u/upload"; then
      return 0
    fi
    sleep 0.1
  done
  return 1
}

# http_client TARGET ROUND TEST CMD...: lib.sh's client, plus the upstream
# connections the backend accepted meanwhile (CLIENT_UPSTREAM) and a copy of
# the client's output in raw/.
http_client() {
  local a0 a1
  a0=$(accepts || echo "")
  client "$@"
  a1=$(accepts || echo "")
  CLIENT_UPSTREAM=null
  [[ -n $a0 && -n $a1 ]] && CLIENT_UPSTREAM=$((a1 - a0))
  cp "$CLIENT_OUT" "$WORK/raw/$1-$2-$3.txt"
}

# record TARGET ROUND TEST BODY FIGURES-JSON: one line of runs.jsonl. BODY:
# bytes of body per request (uploads), "read" (downloads: every byte wrk
# read, partial responses included; heads are noise next to 1 MiB) or 0.
record() {
  local t=$1 r=$2 test=$3 body=$4 figures=$5
  jq -c -n --arg t "$t" --argjson r "$r" --arg test "$test" --argjson f "$figures" --argjson x "$CLIENT_EXEC" \
    --argjson m "$CLIENT_MACHINE" --argjson up "$CLIENT_UPSTREAM" --arg body "$body" '
    ($x.proxy.cpu_s // null) as $cpu
    | ($f + {proxy: $x.proxy, client: ($x | del(.proxy)), machine: $m, upstream_conns_opened: $up}) as $res
    | $res
    | .body_bytes = (if $body == "read" then (.bytes // 0) else (.requests // 0) * ($body | tonumber) end)
    | if $cpu != null and .body_bytes > 0 then .proxy_cpu_s_per_gb = $cpu / (.body_bytes / 1e9) else . end
    | if $cpu != null and (.requests // 0) > 0 then .proxy_cpu_s_per_10k_requests = $cpu / .requests * 1e4 else . end
    | if ($x.exit_code != 0 or $x.timed_out or $x.error) and (.error | not)
      then .error = "client exit code \($x.exit_code // "none")\(if $x.timed_out then ", killed at the deadline" else "" end)"
      else . end
    | {target: $t, round: $r, test: $test, result: .}' >>"$RUNS"
  jq -r --arg t "$t" --arg test "$test" '.result | "  \($t) \($test): " + ([.requests_per_s, .latency.p99, .proxy_cpu_s_per_10k_requests, .proxy_cpu_s_per_gb, .upstream_conns_opened] | map(select(. != null) | (. * 1000 | round / 1000 | tostring)) | join(" "))
      + (if (.machine.steal_pct // 0) > 5 then "  (steal \(.machine.steal_pct)%)" else "" end) + (if .error then "  ERROR: \(.error)" else "" end)' <<<"$(tail -1 "$RUNS")" >&2
}

# run_wrk TARGET ROUND TEST PATH BODY_BYTES CONNS WRK-ARGS...
run_wrk() {
  local t=$1 r=$2 test=$3 path=$4 body=$5 conns=$6 f; shift 6
  http_client "$t" "$r" "$test" wrk -t1 -c"$conns" -d"${DURATION}s" --latency "$@" "http://127.0.0.1:${FRONT[$t/http]}/$path"
  f=$(sed -n 's/^WRKJSON //p' "$CLIENT_OUT" | jq -c --argjson c "$conns" '
      (.socket_errors.connect + .socket_errors.read + .socket_errors.write + .socket_errors.timeout) as $se
      | {client_conns: $c, requests, bytes, seconds: (.duration_us / 1e6),
         requests_per_s: (.requests / (.duration_us / 1e6)),
         latency: {unit: "us", mean: .latency_us.mean, p50: .latency_us.p50, p90: .latency_us.p90, p99: .latency_us.p99, p99_9: .latency_us.p99_9, max: .latency_us.max},
         socket_errors, non_2xx_3xx}
      + (if .bytes == 0 then {error: "wrk: nothing read"}
         elif .non_2xx_3xx > 0 then {error: "wrk: \(.non_2xx_3xx) non-2xx/3xx responses"} else {} end)
      + (if $se > 0 then {socket_errors_total: $se} else {} end)' 2>/dev/null)
  [[ -n $f ]] || f='{"error":"wrk gave no report"}'
  record "$t" "$r" "$test" "$body" "$f"
}

# run_h2load TARGET ROUND TEST PATH: h2load --h1 (keep-alive); its report
# has no percentiles, only the mean time per request.
run_h2load() {
  local t=$1 r=$2 test=$3 path=$4 f
  http_client "$t" "$r" "$test" h2load --h1 -t1 -c"$WRK_CONNS" -D "$DURATION" "http://127.0.0.1:${FRONT[$t/http]}/$path"
  f=$(python3 "$HERE/http_summary.py" --parse-h2load "$CLIENT_OUT" --conns "$WRK_CONNS" 2>/dev/null) || f='{"error":"h2load gave no report"}'
  record "$t" "$r" "$test" 0 "$f"
}

# run_idle TARGET ROUND: IDLE_CONNS kept-alive connections held 2 s (http_idle.py).
run_idle() {
  local t=$1 r=$2 out a0 a1 m0 pid=()
  [[ -n $PROXY_PID ]] && pid=(--pid "$PROXY_PID")
  a0=$(accepts || echo "")
  m0=$(machine_sample)
  out=$("${PIN_LOAD[@]}" timeout 300 python3 "$HERE/http_idle.py" --port "${FRONT[$t/http]}" "${pid[@]}" \
    --conns "$IDLE_CONNS" --settle 2 2>>"$WORK/clients.err") || true
  [[ -n $out ]] || out='{"error":"http_idle.py gave no output"}'
  a1=$(accepts || echo "")
  printf '%s\n' "$out" >"$WORK/raw/$t-$r-idle.json"
  jq -c --arg t "$t" --argjson r "$r" --argjson m "$(machine_between "$m0" "$(machine_sample)")" \
    --argjson up "$([[ -n $a0 && -n $a1 ]] && echo $((a1 - a0)) || echo null)" \
    '{target: $t, round: $r, test: "idle", result: (. + {machine: $m, upstream_conns_opened: $up})}' <<<"$out" >>"$RUNS"
  jq -r --arg t "$t" '"  \($t) idle: rss \(.proxy_rss_kib_per_conn) KiB, kernel slab objects \(.kernel_slab_objects_kib_per_conn) KiB per connection" + (if .error then "  ERROR: \(.error)" else "" end)' <<<"$out" >&2
}

# ------------------------------------------------------------ run
log "work dir $WORK; WORKERS=$WORKERS ROUNDS=$ROUNDS DURATION=${DURATION}s"
log "targets: $TARGETS; tests: $TESTS"
start http-backend "${PIN_LOAD[@]}" nginx -e "$WORK/http/error.log" -p "$WORK/http" -c "$WORK/http/nginx.conf" -g 'daemon off;'
serving direct || die "the HTTP backend did not start (logs in $WORK)"

RUNS=$WORK/runs.jsonl
: >"$RUNS"
LOADAVG_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

tests() { # TARGET ROUND
  local t=$1 r=$2 test
  for test in $TESTS; do
    case $test in
      ka64) run_wrk "$t" "$r" "$test" 64.bin 0 "$WRK_CONNS" -s "$HERE/wrk-report.lua" ;;
      h2ka64) run_h2load "$t" "$r" "$test" 64.bin ;;
      close64) run_wrk "$t" "$r" "$test" 64.bin 0 "$WRK_CONNS" -s "$HERE/wrk-report.lua" -H 'Connection: close' ;;
      dl1m) run_wrk "$t" "$r" "$test" 1m.bin read "$BIG_CONNS" -s "$HERE/wrk-report.lua" ;;
      dl64m) run_wrk "$t" "$r" "$test" 64m.bin read "$HUGE_CONNS" -s "$HERE/wrk-report.lua" ;;
      idle) run_idle "$t" "$r" ;;
      up1m) run_wrk "$t" "$r" "$test" upload "$UPLOAD_BYTES" "$BIG_CONNS" -s "$WORK/wrk-upload.lua" ;;
      *) die "unknown test $test" ;;
    esac
  done
}

run_rounds serving tests
LOADAVG_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ------------------------------------------------------------ results
results_dir http
cp "$WORK"/*.cfg "$WORK/nginx.conf" "$OUT/configs/" 2>/dev/null || true
for t in $TARGETS; do [[ -f $WORK/$t/bench.yaml ]] && cp "$WORK/$t/bench.yaml" "$OUT/configs/$t.yaml"; done
cp "$WORK/http/nginx.conf" "$OUT/configs/http-backend-nginx.conf"
cp "$WORK/wrk-upload.lua" "$OUT/configs/"
P='<port>'
machine_json | jq \
  --arg kind http --arg commit "$COMMIT" --arg invocation "$INVOCATION" --arg note "${RESULTS_NOTE:-}" \
  --arg workers "$WORKERS" --arg rounds "$ROUNDS" --arg duration "$DURATION" \
  --arg quick "$QUICK" --arg targets "$TARGETS" --arg tests "$TESTS" --arg pin "$PIN_DESC" \
  --arg wrkc "$WRK_CONNS" --arg bigc "$BIG_CONNS" --arg hugec "$HUGE_CONNS" --arg idlec "$IDLE_CONNS" \
  --arg wrk "$(wrk -v 2>&1 | head -1)" --arg h2load "$(h2load --version 2>&1 | head -1)" \
   --arg c_wrk "wrk -t1 -c{$WRK_CONNS|$BIG_CONNS|$HUGE_CONNS} -d${DURATION}s --latency -s bench/wrk-report.lua [-H 'Connection: close'] http://127.0.0.1:$P/{64.bin|1m.bin|64m.bin}; uploads: -s wrk-upload.lua (POST of $UPLOAD_BYTES bytes to /upload)" \
  --arg c_h2load "h2load --h1 -t1 -c$WRK_CONNS -D $DURATION http://127.0.0.1:$P/64.bin" \
  '. + {kind:$kind, bench_commit:$commit, invocation:$invocation, note:$note,
    tools:{wrk:$wrk, h2load:$h2load}, commands:{wrk:$c_wrk, h2load:$c_h2load},
    settings:{workers:($workers|tonumber), rounds:($rounds|tonumber), duration_s:($duration|tonumber),
      quick:($quick=="1"), pinning:$pin, wrk_connections:($wrkc|tonumber), big_connections:($bigc|tonumber), huge_connections:($hugec|tonumber), idle_connections:($idlec|tonumber),
      targets:($targets|split(" ")), tests:($tests|split(" "))}}' >"$OUT/meta.json"
python3 "$HERE/http_summary.py" "$OUT"
log "results in ${OUT#"$ROOT"/}"
cat "$OUT/summary.md"
