#!/usr/bin/env bash
# What CI runs, and what to run before a commit: formatting, lints, every test.
# The io_uring tests must not skip here (RINGWAY_REQUIRE_URING=1).
set -euo pipefail
cd "$(dirname "$0")/.."
export RINGWAY_REQUIRE_URING="${RINGWAY_REQUIRE_URING:-1}"
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked --release
# The bench's load generator and backends: a smoke test, not a benchmark.
cargo test --locked --manifest-path bench/Cargo.toml
