#!/usr/bin/env bash
# Run bench/run.sh one round at a time (ROUNDS=1 each), each round only once
# the machine is quiet (no other benchmark or rustc, both CPUs >= 90% idle
# over 2 s; polls up to 15 min), with `top` sampled every 2 s during the round
# so that rounds disturbed by other work can be told apart afterwards.
#   N=3 LABEL=name bench/rounds.sh        (other variables go to run.sh)
# Writes bench/results/<date>-<commit>-<LABEL>-rK/ per round and
# /tmp/ringway-rounds-<LABEL>-rK.top.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
N=${N:-3}; LABEL=${LABEL:?LABEL=name}
# Keep this script's own report (quiet waits, steal, foreign CPU) too.
exec 2> >(tee -a "/tmp/ringway-rounds-$LABEL.log" >&2)
quiet() {
  local a b
  for _ in $(seq 90); do
    if ! pgrep -f 'run.sh|crosscheck.sh|loadgen|iperf3|wrk|redis-benchmark' >/dev/null && ! pgrep -x rustc >/dev/null; then
      a=$(awk '/^cpu /{print $5+$6, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat); sleep 2
      b=$(awk '/^cpu /{print $5+$6, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
      python3 -c "import sys; a=list(map(int,'$a'.split())); b=list(map(int,'$b'.split())); sys.exit(0 if (b[0]-a[0])/(b[1]-a[1]) >= 0.9 else 1)" && return 0
    fi
    sleep 8
  done
  echo "rounds.sh: still busy after 15 min; measuring anyway" >&2
}
for ((k = 1; k <= N; k++)); do
  quiet
  echo "rounds.sh: round $k starts $(date -u +%H:%M:%S), loadavg $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  top -b -d 2 -w 200 -o %CPU >"/tmp/ringway-rounds-$LABEL-r$k.top" 2>/dev/null &
  TOP=$!
  S0=$(awk '/^cpu /{print $9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
  ROUNDS=1 RESULTS_LABEL=$LABEL-r$k "$HERE/run.sh" >"/tmp/ringway-rounds-$LABEL-r$k.log" 2>&1 || echo "rounds.sh: run.sh failed in round $k" >&2
  kill "$TOP" 2>/dev/null || true; wait "$TOP" 2>/dev/null || true
  S1=$(awk '/^cpu /{print $9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
  python3 -c "a=list(map(int,'$S0'.split())); b=list(map(int,'$S1'.split())); print(f'rounds.sh: steal (host took the vCPUs) {100*(b[0]-a[0])/(b[1]-a[1]):.1f}% of CPU time during the round')" >&2
  # Other commands above 10% CPU in any 2-s sample during the round:
  awk '/^ *PID/{getline; for(i=0;i<6;i++){ if ($9+0 >= 10 && $12 !~ /^(loadgen|sink|echo|haproxy|ringway-w0|ringway|top|perf|run.sh|jq|python3)$/) print "rounds.sh: foreign", $12, $9 "%"; if (!getline) break } }' "/tmp/ringway-rounds-$LABEL-r$k.top" | sort | uniq -c | sort -rn | head -5 >&2
  echo "rounds.sh: round $k ends $(date -u +%H:%M:%S), loadavg $(cut -d' ' -f1-3 /proc/loadavg)" >&2
done
