#!/usr/bin/env bash
# Health-check benchmark (method and figures: BENCHMARKS.md, "Health checking").
#
# Method: builds the release binary and the `health_bench` example, then runs the example
# against the real `signpost serve` child process. The example starts N HTTP targets on
# 127.0.0.1 (one listener each, in one or more helper processes so each stays under the
# open-file limit), registers N instances with an HTTP check on their target (100 per
# service), waits until all pass, restarts signpost to see the start-up spread of the first
# probes, then measures over a window: signpost's CPU (utime+stime from /proc/<pid>/stat) per
# second and per probe, its RSS, the probe rate against N/interval, the spread of probe
# arrival times modulo the interval (10 buckets) and per-target gaps; finally flips random
# targets to 503 and polls DNS until their addresses are gone, against the bound
# interval × failures_before_critical + timeout. All traffic stays on 127.0.0.1.
#
# Usage: bench/health.sh [health_bench flags…]   e.g. --count 2000 --measure 10
# Defaults: --count 10000 --interval 1s --timeout 500ms --failures 1 --measure 20
#           --fail 50 --rounds 3 --poll 5ms
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --bin signpost --example health_bench

# Each target costs about two descriptors in the target process and one in signpost.
# Raise the limit as far as allowed (a container may cap the hard limit below 65536).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
echo "open-file limit: $(ulimit -n); $(nproc) CPUs; $(uname -sr)"

exec target/release/examples/health_bench --bin target/release/signpost "$@"
