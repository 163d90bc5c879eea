#!/usr/bin/env bash
# Sweep of ringway's HTTP splice threshold (hidden flag
# --http-splice-threshold): Content-Length responses of 16 KiB, 64 KiB,
# 256 KiB, 1 MiB and 16 MiB from nginx serving static files, through one
# ringway worker pinned to CPU 1 (nginx and wrk on CPU 0), keep-alive, for
# each threshold; proxy CPU per request from /proc/PID/stat, req/s from
# wrk, machine steal and load average around each measurement. Medians of
# ROUNDS rounds (thresholds rotated every round) in summary.md.
#
# 127.0.0.1 only; every process it starts is stopped by PID; each
# measurement lasts DURATION seconds.
#
#   bench/http_sweep.sh                      # 3 rounds, 3 s each, ~5 min
#   ROUNDS=1 DURATION=2 bench/http_sweep.sh  # a quick look
#
# Knobs: ROUNDS (3), DURATION (3), CONNS (wrk connections, 4),
# THRESHOLDS ("never 0 65536 262144"), SIZES ("16k 64k 256k 1m 16m"),
# RINGWAY_BIN (target/release/ringway), BASE_PORT (19400), OUT (results dir).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-3}
CONNS=${CONNS:-4}
THRESHOLDS=${THRESHOLDS:-"never 0 65536 262144"}
SIZES=${SIZES:-"16k 64k 256k 1m 16m"}
RINGWAY_BIN=${RINGWAY_BIN:-$ROOT/target/release/ringway}
BASE_PORT=${BASE_PORT:-19400}
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD)
OUT=${OUT:-$ROOT/bench/results/$(date -u +%Y-%m-%d)-$COMMIT-http-splice-sweep}
NGINX_PORT=$BASE_PORT
PROXY_PORT=$((BASE_PORT + 1))
ADMIN_PORT=$((BASE_PORT + 2))
TCK=$(getconf CLK_TCK)

PIDS=()
stop_pid() {
  local pid=$1 p keep=()
  if [[ -d /proc/$pid ]]; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do [[ -d /proc/$pid ]] || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done 2>/dev/null || true
  rm -rf "$WORK"
}
WORK=$(mktemp -d)
trap cleanup EXIT
mkdir -p "$OUT"

log() { printf '[http_sweep %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

bytes_of() {
  case $1 in
    *k) echo $((${1%k} * 1024)) ;;
    *m) echo $((${1%m} * 1024 * 1024)) ;;
    *) echo "$1" ;;
  esac
}

# ---------------------------------------------------------------- nginx
mkdir -p "$WORK/www" "$WORK/nginx/logs"
chmod 755 "$WORK"
for s in $SIZES; do
  head -c "$(bytes_of "$s")" /dev/urandom >"$WORK/www/$s"
done
chmod -R a+rX "$WORK/www"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    root $WORK/www;
  }
}
EOF
taskset -c 0 nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' &
PIDS+=($!)

# -------------------------------------------------------------- ringway
mkdir -p "$WORK/rw"
cat >"$WORK/rw/site.yaml" <<EOF
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: gw
spec:
  selector:
    istio: ingressgateway
  servers:
  - port: {number: $PROXY_PORT, name: http-$PROXY_PORT, protocol: HTTP}
    bind: 127.0.0.1
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: svc
spec:
  hosts: [svc.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9000, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1, ports: {http: $NGINX_PORT}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: svc
spec:
  hosts: ["*"]
  gateways: [gw]
  http: [{route: [{destination: {host: svc}}]}]
EOF

wait_ready() { # URL
  for _ in $(seq 100); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
machine() { grep '^cpu ' /proc/stat; }
steal_pct() { # BEFORE AFTER
  awk -v a="$1" -v b="$2" 'BEGIN {
    split(a, x); split(b, y); t = 0
    for (i = 2; i <= 9; i++) t += y[i] - x[i]
    if (t <= 0) t = 1
    printf "%.1f", (y[9] - x[9]) * 100 / t
  }'
}

wait_ready "http://127.0.0.1:$NGINX_PORT/16k" || {
  log "nginx did not serve: $(cat "$WORK/nginx/logs/error.log" 2>/dev/null)"
  exit 1
}

RAW=$OUT/raw.tsv
printf 'round\tthreshold\tsize\trequests\treq_per_s\tproxy_cpu_s\tcpu_us_per_req\tsteal_pct\tload1\n' >"$RAW"
read -r -a TS <<<"$THRESHOLDS"
for round in $(seq "$ROUNDS"); do
  for i in "${!TS[@]}"; do
    t=${TS[$(((i + round - 1) % ${#TS[@]}))]}
    RUST_LOG=warn taskset -c 1 "$RINGWAY_BIN" run -c "$WORK/rw" --workers 1 \
      --admin "127.0.0.1:$ADMIN_PORT" --http-splice-threshold "$t" \
      2>"$WORK/ringway-$round-$t.log" &
    rw=$!
    PIDS+=("$rw")
    wait_ready "http://127.0.0.1:$PROXY_PORT/16k" || { log "ringway did not serve (T=$t)"; exit 1; }
    for s in $SIZES; do
      # Warm the connections and the pipe pool.
      taskset -c 0 wrk -t1 -c"$CONNS" -d1s "http://127.0.0.1:$PROXY_PORT/$s" >/dev/null
      m0=$(machine)
      c0=$(cpu_ticks "$rw")
      report=$(taskset -c 0 wrk -t1 -c"$CONNS" -d"${DURATION}s" "http://127.0.0.1:$PROXY_PORT/$s")
      c1=$(cpu_ticks "$rw")
      m1=$(machine)
      n=$(awk '/requests in/ {print $1}' <<<"$report")
      rps=$(awk '/Requests\/sec/ {print $2}' <<<"$report")
      errors=$(grep -c 'Non-2xx\|Socket errors' <<<"$report" || true)
      [[ $errors == 0 ]] || log "wrk reported errors at T=$t size=$s: $report"
      cpu=$(awk -v d=$((c1 - c0)) -v k="$TCK" 'BEGIN {printf "%.2f", d / k}')
      per=$(awk -v d=$((c1 - c0)) -v k="$TCK" -v n="$n" 'BEGIN {printf "%.1f", d / k / n * 1e6}')
      load=$(cut -d' ' -f1 /proc/loadavg)
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$t" "$s" "$n" "$rps" "$cpu" "$per" \
        "$(steal_pct "$m0" "$m1")" "$load" >>"$RAW"
      log "round $round T=$t $s: $rps req/s, $per us CPU/req"
    done
    curl -fsS "http://127.0.0.1:$ADMIN_PORT/metrics" | grep '^ringway_spliced_bytes_total' \
      >"$OUT/spliced-$round-$t.txt" || true
    stop_pid "$rw"
  done
done

python3 - "$RAW" "$OUT/summary.md" "$COMMIT" "$ROUNDS" "$DURATION" "$CONNS" <<'EOF'
import csv, statistics, sys
raw, out, commit, rounds, duration, conns = sys.argv[1:]
rows = list(csv.DictReader(open(raw), delimiter="\t"))
ts = list(dict.fromkeys(r["threshold"] for r in rows))
sizes = list(dict.fromkeys(r["size"] for r in rows))
def med(t, s, k):
    v = [float(r[k]) for r in rows if r["threshold"] == t and r["size"] == s]
    return statistics.median(v) if v else float("nan")
lines = [f"# HTTP splice threshold sweep ({commit})", "",
         f"Content-Length responses from nginx (static files, sendfile) through one ringway worker "
         f"pinned to CPU 1; wrk -t1 -c{conns} and nginx on CPU 0; keep-alive; {duration} s per "
         f"measurement, medians of {rounds} rounds. Proxy CPU = utime+stime of ringway per request.", "",
         "## Proxy CPU per request (µs), median", "",
         "| size | " + " | ".join(f"T={t}" for t in ts) + " |",
         "|---|" + "---|" * len(ts)]
for s in sizes:
    lines.append(f"| {s} | " + " | ".join(f"{med(t, s, 'cpu_us_per_req'):.1f}" for t in ts) + " |")
lines += ["", "## Requests per second, median", "",
          "| size | " + " | ".join(f"T={t}" for t in ts) + " |",
          "|---|" + "---|" * len(ts)]
for s in sizes:
    lines.append(f"| {s} | " + " | ".join(f"{med(t, s, 'req_per_s'):.0f}" for t in ts) + " |")
steal = [float(r["steal_pct"]) for r in rows]
load = [float(r["load1"]) for r in rows]
lines += ["", f"Machine steal during measurements: median {statistics.median(steal):.1f} %, "
          f"max {max(steal):.1f} %. Load average (1 min): median {statistics.median(load):.2f}, "
          f"min {min(load):.2f}, max {max(load):.2f} (2 CPUs, shared with other builds).", ""]
open(out, "w").write("\n".join(lines))
print("\n".join(lines))
EOF
log "results in $OUT"
