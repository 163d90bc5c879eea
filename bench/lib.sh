# shellcheck shell=bash disable=SC2034  # globals set here are used by the scripts that source this file
# Shared by bench/run.sh, bench/crosscheck.sh and bench/http.sh (sourced, not run):
# logging, the processes we start and their cleanup, CPU pinning, package
# installation, the ringway binary and its commit, the proxy configurations
# (HAProxy, nginx stream, ringway) and start_proxy.
#
# The sourcing script sets, before calling the functions below:
#   LOG_TAG        prefix of log lines (e.g. run.sh)
#   WORKERS        worker threads/processes for every proxy
#   WORK           temporary directory (configs, logs); removed on exit
#   BACKENDS       array of backend names, e.g. (echo sink)
#   BACKEND_PORT   associative array: backend name -> port on 127.0.0.1
# and calls assign_fronts to get FRONT[target/backend] (the port a target
# listens on for that backend; for `direct`, the backend's own port).

# common_settings: the knobs run.sh and crosscheck.sh share, with their
# defaults (QUICK=1: one round of 2 s measurements).
common_settings() {
  WORKERS=${WORKERS:-1}
  QUICK=${QUICK:-0}
  if [[ $QUICK == 1 ]]; then
    ROUNDS=${ROUNDS:-1}
    DURATION=${DURATION:-2}
  else
    ROUNDS=${ROUNDS:-3}
    DURATION=${DURATION:-5}
  fi
  TARGETS=${TARGETS:-"direct haproxy-splice haproxy-default nginx ringway"}
}

log() { printf '[%s %s] %s\n' "${LOG_TAG:-bench}" "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ------------------------------------------------------------ processes
PIDS=()

# stop_pid PID: stop one process we started, and its children, by PID
# (SIGTERM, SIGKILL after 5 s; nginx's workers are found through
# /proc/PID/task/*/children).
stop_pid() {
  local pid=$1 kids kid p keep=()
  if [[ -d /proc/$pid ]]; then
    kids=$(cat /proc/"$pid"/task/*/children 2>/dev/null || true)
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do [[ -d /proc/$pid ]] || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    for kid in $kids; do kill -KILL "$kid" 2>/dev/null || true; done
  fi
  wait "$pid" 2>/dev/null || true
  for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  PIDS=()
  [[ -n ${WORK:-} && -d ${WORK:-} && ${KEEP_WORK:-0} != 1 ]] && rm -rf "$WORK"
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME CMD...: background, logs in $WORK/NAME.log, sets STARTED_PID.
start() {
  local name=$1; shift
  "$@" >"$WORK/$name.log" 2>&1 &
  STARTED_PID=$!
  PIDS+=("$STARTED_PID")
}

# With one worker, proxies run on CPU 1 and everything else on CPU 0.
setup_pinning() {
  PIN_PROXY=()
  PIN_LOAD=()
  PIN_DESC=none
  if [[ $WORKERS == 1 ]]; then
    [[ $(nproc --all) -ge 2 ]] || die "WORKERS=1 pinning needs 2 CPUs"
    PIN_PROXY=(taskset -c 1)
    PIN_LOAD=(taskset -c 0)
    PIN_DESC="proxy CPU 1, load+backends CPU 0"
  fi
}

# ------------------------------------------------------------ install
# install_packages PKG...: apt-get install unless NO_INSTALL=1, without
# letting the packages start their services (nginx would take port 80,
# redis-server 6379): use a policy-rc.d only if the system has none, and
# remove only ours.
install_packages() {
  [[ $# -gt 0 && ${NO_INSTALL:-0} != 1 ]] || return 0
  log "installing $*"
  export DEBIAN_FRONTEND=noninteractive
  local ours_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; ours_policy=1
  fi
  if ! apt-get install -y -q "$@" >/dev/null 2>&1; then
    apt-get update -q >/dev/null
    apt-get install -y -q "$@" >/dev/null
  fi
  [[ $ours_policy == 1 ]] && rm -f /usr/sbin/policy-rc.d
  return 0
}

# Packages the proxy targets need, by command; then check TARGETS can run.
install_proxies() {
  local need=() t
  command -v haproxy >/dev/null || need+=(haproxy)
  command -v nginx >/dev/null || need+=(nginx-light)
  [[ -e /usr/lib/nginx/modules/ngx_stream_module.so ]] || need+=(libnginx-mod-stream)
  install_packages "${need[@]}"
  for t in $TARGETS; do
    case $t in
      haproxy-*) command -v haproxy >/dev/null || die "haproxy is not installed" ;;
      nginx) command -v nginx >/dev/null || die "nginx is not installed" ;;
    esac
  done
}

# ------------------------------------------------------------ build
# Builds the load generator (LOADGEN, BIN) and finds ringway: sets
# RINGWAY_BIN, RINGWAY_STATUS, RINGWAY_COMMIT, RINGWAY_DIRTY, RINGWAY_ADMIN.
build_tools() {
  local here=$1 root=$2
  log "building the load generator"
  cargo build --release --quiet --locked --manifest-path "$here/Cargo.toml"
  BIN=$here/target/release
  LOADGEN=$BIN/loadgen

  RINGWAY_STATUS=ok
  if [[ -z ${RINGWAY_BIN:-} ]]; then
    log "building ringway at $root"
    (cd "$root" && cargo build --release --quiet --locked) || RINGWAY_STATUS="build failed"
    RINGWAY_BIN=$root/target/release/ringway
  fi
  if [[ $RINGWAY_STATUS == ok ]] && ! "$RINGWAY_BIN" run --help >/dev/null 2>&1; then
    RINGWAY_STATUS="pending: $RINGWAY_BIN has no 'run' command yet"
  fi
  # The source tree the binary came from (for the commit it is labelled with).
  local given=${RINGWAY_COMMIT:-}
  RINGWAY_SRC=${RINGWAY_SRC:-$(git -C "$(dirname "$RINGWAY_BIN")" rev-parse --show-toplevel 2>/dev/null || true)}
  # The last commit that changed ringway itself (anything outside bench/), so
  # that a commit of bench scripts alone does not relabel the same ringway;
  # modified files in bench/ do not count either.
  if [[ -z ${RINGWAY_COMMIT:-} && -n $RINGWAY_SRC ]]; then
    RINGWAY_COMMIT=$(git -C "$RINGWAY_SRC" log -1 --format=%h HEAD -- . ':(exclude)bench' 2>/dev/null || true)
  fi
  RINGWAY_COMMIT=${RINGWAY_COMMIT:-unknown}
  RINGWAY_DIRTY=0
  if [[ -n $given ]]; then
    RINGWAY_DIRTY="not checked (RINGWAY_COMMIT given)"
  elif [[ -n $RINGWAY_SRC ]]; then
    RINGWAY_DIRTY=$(git -C "$RINGWAY_SRC" status --porcelain --untracked-files=no -- . ':(exclude)bench' 2>/dev/null | wc -l)
  fi
  RINGWAY_ADMIN=()
  if [[ $RINGWAY_STATUS == ok ]] && "$RINGWAY_BIN" run --help 2>&1 | grep -q -- '--admin'; then
    RINGWAY_ADMIN=(--admin off)
  fi
  log "ringway: $RINGWAY_BIN ($RINGWAY_STATUS, commit $RINGWAY_COMMIT, modified files: $RINGWAY_DIRTY)"
}

# ------------------------------------------------------------ configs
# assign_fronts BASE TARGET...: with n backends, target i listens for
# backend j on BASE + n + n*i + j (the backends are on BASE .. BASE+n-1).
declare -A FRONT
assign_fronts() {
  local base=$1 n=${#BACKENDS[@]} i=0 j t; shift
  for t in "$@"; do
    for ((j = 0; j < n; j++)); do
      FRONT[$t/${BACKENDS[$j]}]=$((base + n + n * i + j))
    done
    i=$((i + 1))
  done
  for ((j = 0; j < n; j++)); do FRONT[direct/${BACKENDS[$j]}]=${BACKEND_PORT[${BACKENDS[$j]}]}; done
}

haproxy_cfg() { # name splice(0/1)
  local f=$WORK/$1.cfg b
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
    for b in "${BACKENDS[@]}"; do
      echo "listen $b"
      echo "  bind 127.0.0.1:${FRONT[$1/$b]}"
      echo "  server $b 127.0.0.1:${BACKEND_PORT[$b]}"
    done
  } >"$f"
}

nginx_stream_cfg() {
  local b
  {
    cat <<EOF
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
EOF
    for b in "${BACKENDS[@]}"; do
      echo "  server { listen 127.0.0.1:${FRONT[nginx/$b]}; proxy_pass 127.0.0.1:${BACKEND_PORT[$b]}; }"
    done
    echo "}"
  } >"$WORK/nginx.conf"
}

ringway_cfg() { # target-name
  local d=$WORK/$1 b j n=${#BACKENDS[@]}
  mkdir -p "$d"
  {
    cat <<EOF
# Bench backends as a static ServiceEntry; one Gateway with a TCP server per
# backend bound to 127.0.0.1; one VirtualService routing each port to its backend.
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
EOF
    for ((j = 0; j < n; j++)); do
      printf '  - number: %s\n    name: tcp-%s\n    protocol: TCP\n' $((9000 + j)) "${BACKENDS[$j]}"
    done
    printf '  endpoints:\n  - address: 127.0.0.1\n    ports:\n'
    for b in "${BACKENDS[@]}"; do printf '      tcp-%s: %s\n' "$b" "${BACKEND_PORT[$b]}"; done
    cat <<EOF
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: bench-gateway
spec:
  selector:
    istio: ingressgateway
  servers:
EOF
    for b in "${BACKENDS[@]}"; do
      printf '  - bind: 127.0.0.1\n    port:\n      number: %s\n      name: tcp-%s\n      protocol: TCP\n    hosts:\n    - "*"\n' \
        "${FRONT[$1/$b]}" "$b"
    done
    cat <<EOF
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
EOF
    for ((j = 0; j < n; j++)); do
      printf '  - match:\n    - port: %s\n    route:\n    - destination:\n        host: bench-backends.bench.local\n        port:\n          number: %s\n' \
        "${FRONT[$1/${BACKENDS[$j]}]}" $((9000 + j))
    done
  } >"$d/bench.yaml"
}

# write_proxy_configs: every proxy target's configuration into $WORK.
write_proxy_configs() {
  local v
  haproxy_cfg haproxy-splice 1
  haproxy_cfg haproxy-default 0
  nginx_stream_cfg
  ringway_cfg ringway
  for v in ${RINGWAY_VARIANTS:-}; do ringway_cfg "ringway-${v%%=*}"; done
}

# start_proxy TARGET: sets PROXY_PID ("" for direct); returns 1 when the
# target cannot run (ringway pending).
start_proxy() {
  local t=$1 args=() v
  PROXY_PID=""
  case $t in
    direct) return 0 ;;
    haproxy-*) start "$t" "${PIN_PROXY[@]}" haproxy -db -f "$WORK/$t.cfg" ;;
    nginx) start nginx "${PIN_PROXY[@]}" nginx -e "$WORK/nginx-error.log" -p "$WORK" -c "$WORK/nginx.conf" -g 'daemon off;' ;;
    ringway|ringway-*)
      [[ $RINGWAY_STATUS == ok ]] || return 1
      local bin=$RINGWAY_BIN
      if [[ $t != ringway ]]; then
        for v in ${RINGWAY_VARIANTS:-}; do
          [[ ringway-${v%%=*} == "$t" ]] && IFS=, read -r -a args <<<"${v#*=}"
        done
        # A variant may name another binary first: name=bin:/path[,flags...]
        # (an older commit measured side by side with this one).
        if [[ ${args[0]:-} == bin:* ]]; then
          bin=${args[0]#bin:}
          args=("${args[@]:1}")
        fi
      fi
      start "$t" env RUST_LOG=warn "${PIN_PROXY[@]}" "$bin" run -c "$WORK/$t" --workers "$WORKERS" "${RINGWAY_ADMIN[@]}" "${args[@]}" ;;
    *) die "unknown target $t" ;;
  esac
  PROXY_PID=$STARTED_PID
  # `env` and `taskset` exec, so the PID is the proxy's own.
}

# ------------------------------------------------------------ machine
# On a virtual machine the hypervisor may take CPU time away (steal) in the
# middle of a run; such a run measures the host, not the proxy. Every
# measurement records the share of all CPUs' time that was stolen (and spent
# waiting for I/O) while it ran: machine_sample before, machine_between after.
machine_sample() { grep '^cpu ' /proc/stat; }
machine_between() { # BEFORE AFTER -> {"steal_pct":..,"iowait_pct":..}
  awk -v a="$1" -v b="$2" 'BEGIN {
    split(a, x); split(b, y); t = 0
    for (i = 2; i <= 9; i++) t += y[i] - x[i]   # user .. steal (guest is inside user)
    if (t <= 0) t = 1
    printf "{\"steal_pct\":%.1f,\"iowait_pct\":%.1f}", (y[9] - x[9]) * 100 / t, (y[6] - x[6]) * 100 / t
  }'
}

# client TARGET ROUND TEST CMD...: run one client through loadgen exec (which
# watches the proxy's CPU and enforces CLIENT_DEADLINE), for crosscheck.sh and
# http.sh. Sets CLIENT_OUT (the client's stdout), CLIENT_EXEC (loadgen's JSON)
# and CLIENT_MACHINE (steal).
client() {
  local t=$1 r=$2 test=$3 m0; shift 3
  local watch=()
  [[ -n $PROXY_PID ]] && watch=(--watch-pid "$PROXY_PID")
  CLIENT_OUT=$WORK/out/$t-$r-$test.out
  m0=$(machine_sample)
  CLIENT_EXEC=$("${PIN_LOAD[@]}" "$LOADGEN" exec --output "$CLIENT_OUT" --duration "$CLIENT_DEADLINE" "${watch[@]}" -- "$@" \
    2>>"$WORK/clients.err") || true
  CLIENT_MACHINE=$(machine_between "$m0" "$(machine_sample)")
  [[ -n $CLIENT_EXEC ]] || CLIENT_EXEC='{"error":"loadgen exec gave no output"}'
}

# ------------------------------------------------------------ rounds
# run_rounds SERVING_FN TESTS_FN: ROUNDS rounds over TARGETS, the order
# rotated by one every round. For each target: start_proxy, then
# `SERVING_FN TARGET` (true once the proxy serves; it bounds its own wait),
# then `TESTS_FN TARGET ROUND`, then the proxy is stopped. A target that
# cannot start, does not serve or dies during its tests gets a "skipped" or
# "crash" line in $RUNS.
run_rounds() {
  local serving=$1 tests=$2 r k t n tl
  read -r -a tl <<<"$TARGETS"
  n=${#tl[@]}
  for ((r = 1; r <= ROUNDS; r++)); do
    log "round $r/$ROUNDS"
    for ((k = 0; k < n; k++)); do
      t=${tl[$(((k + r - 1) % n))]}
      if ! start_proxy "$t"; then
        jq -nc --arg t "$t" --argjson r "$r" --arg s "$RINGWAY_STATUS" '{target:$t, round:$r, test:"skipped", result:{status:$s}}' >>"$RUNS"
        log "  $t: skipped ($RINGWAY_STATUS)"
        continue
      fi
      if ! "$serving" "$t"; then
        log "  $t: not serving after 10 s; log:"; tail -5 "$WORK/$t.log" >&2 || true
        jq -nc --arg t "$t" --argjson r "$r" '{target:$t, round:$r, test:"skipped", result:{status:"did not start"}}' >>"$RUNS"
        [[ -n $PROXY_PID ]] && stop_pid "$PROXY_PID"
        continue
      fi
      sleep 0.5
      "$tests" "$t" "$r"
      if [[ -n $PROXY_PID ]]; then
        if [[ ! -d /proc/$PROXY_PID ]]; then
          log "  $t: the proxy DIED during the round; log:"; tail -20 "$WORK/$t.log" >&2 || true
          jq -nc --arg t "$t" --argjson r "$r" '{target:$t, round:$r, test:"crash", result:{status:"proxy exited"}}' >>"$RUNS"
        fi
        stop_pid "$PROXY_PID"
      fi
    done
  done
}

# ------------------------------------------------------------ results
# results_dir KIND: sets COMMIT (this tree's HEAD) and OUT, creates
# results/<UTC date>-<ringway commit>-KIND[-label]/ with configs/ and raw/,
# and copies $RUNS and $WORK/raw/ into it.
results_dir() {
  COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  OUT=$HERE/results/$(date -u +%Y-%m-%d-%H%M)-$RINGWAY_COMMIT-$1${RESULTS_LABEL:+-$RESULTS_LABEL}
  mkdir -p "$OUT/configs" "$OUT/raw"
  cp "$RUNS" "$OUT/runs.jsonl"
  cp "$WORK"/raw/* "$OUT/raw/" 2>/dev/null || true
}

# machine_json: the fields of meta.json every results directory has.
machine_json() {
  jq -n \
    --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    --arg kernel "$(uname -r)" --arg nproc "$(nproc)" \
    --arg cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')" \
    --arg mem "$(grep MemTotal /proc/meminfo | awk '{print $2" kB"}')" \
    --arg ringway_bin "$RINGWAY_BIN" --arg ringway_commit "$RINGWAY_COMMIT" \
    --arg ringway_dirty "$RINGWAY_DIRTY" --arg ringway_status "$RINGWAY_STATUS" \
    --arg variants "${RINGWAY_VARIANTS:-}" \
    --arg haproxy "$(haproxy -v 2>/dev/null | head -1)" --arg nginx "$(nginx -v 2>&1)" \
    --arg la0 "$LOADAVG_BEFORE" --arg la1 "$LOADAVG_AFTER" --arg runlabel "${RESULTS_LABEL:-}" \
    '{date:$date, kernel:$kernel, nproc:($nproc|tonumber), cpu:$cpu, mem_total:$mem,
      ringway:{bin:$ringway_bin, commit:$ringway_commit, modified_files:$ringway_dirty, status:$ringway_status, variants:$variants},
      haproxy:$haproxy, nginx:$nginx, label:$runlabel, loadavg_before:$la0, loadavg_after:$la1}'
}
