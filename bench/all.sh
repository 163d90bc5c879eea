#!/usr/bin/env bash
# The whole comparison in one command: bench/run.sh (bulk, connection rate,
# request/response, idle memory) then bench/crosscheck.sh (iperf3, wrk,
# redis-benchmark), same proxies, same pinning. Each writes its own
# bench/results/<date>-<commit>-<label>/ directory; both honour the
# environment variables documented at the top of each script (WORKERS,
# ROUNDS, QUICK, TARGETS, RINGWAY_BIN, NO_INSTALL...). About 25 minutes.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
"$HERE/run.sh"
"$HERE/crosscheck.sh"
