#!/usr/bin/env bash
# Idle cost of Consul blocking queries (method and figures: BENCHMARKS.md, "Consul watches").
#
# Method: builds the release binary and runs bench/consul_watch.py against a real
# `signpost serve` child process on loopback ports: signpost's CPU (utime+stime from
# /proc/<pid>/stat) over equal windows with no request, with 1,000 blocking
# `/v1/health/service/web` queries parked, with those watches while another service changes,
# and with the same changes and no watch; then one change of `web` and the time until every
# watch has answered. `http.max_watchers` and `http.max_connections` are raised above the
# watch count in the benchmark's config.
#
# Usage: bench/consul_watch.sh [--watches 1000] [--window 10] [--changes 100]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin signpost
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
echo "$(nproc) CPUs; $(uname -sr)"
exec python3 bench/consul_watch.py --bin target/release/signpost "$@"
