#!/usr/bin/env bash
# bench/dns_ab.sh — DNS CPU per query of two signpost binaries, side by side in one sitting.
#
# Method
#   bench/dns.sh (its header has the data, query sets, pinning and CPU accounting) is run with
#   SERVERS=signpost ROUNDS=1 for binary A, then binary B, then B again, then A, ... ($ROUNDS
#   times each, in the order A B, B A, A B, ...), so drift on a shared machine hits both
#   alike, whichever way it goes. Each run registers the same 1,000 services x 3 instances,
#   then per query set takes a closed-loop probe and the fixed-rate run
#   (a 40k, srv 20k, mix 10k, nx 40k QPS for $FIXED_SECONDS s) whose server CPU time per
#   answered query (utime + stime of every thread, /proc/<pid>/stat) is the figure. The
#   max-QPS search is skipped (SEARCH_STEPS=0): this compares cost, not capacity. The report
#   gives, per query set, every round's µs/query for A and B, their medians and B/A, the
#   medians of the quiet runs alone (other processes < 10 % of the server's CPU), and a
#   load-adjusted difference: a least-squares fit of µs/query = c + k·(other load) + d·[B],
#   d with its standard error, since on a shared machine the CPU per query grows with the
#   other load on the server's core (its caches) far more than any small change moves it.
#
#   With B_ROUTING=1 (or =weights) side B runs with that ROUTING (dns.sh: weights 1:3:96,
#   and with 1 zone metadata and a dns.locality holding the client), so A=B=one binary
#   compares routed answers against plain rotation. A_ROUTING likewise for side A:
#   A_ROUTING=meta gives A the same registry as B_ROUTING=1 (the zone metadata, which is
#   served as TXT at each instance name) without weights or dns.locality, so the difference
#   is the routing alone.
#
# Usage
#   A=path/to/before B=path/to/after bench/dns_ab.sh
#   A=target/release/signpost B=target/release/signpost B_ROUTING=1 bench/dns_ab.sh
#   A=target/release/signpost B=target/release/signpost A_ROUTING=meta B_ROUTING=1 bench/dns_ab.sh
#   ROUNDS=5 FIXED_SECONDS=10 QUERY_SETS="a srv mix nx" QUIET_WAIT=30 A=... B=... bench/dns_ab.sh
#   REPORT=bench/results/ab-<date> bench/dns_ab.sh    # the report of an earlier run again
# Output: a markdown table on stdout and in bench/results/dns-ab-<date>.md; each run's own
# report and raw JSON lines in bench/results/ab-<date>/<A|B>-<round>/.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -n "${REPORT:-}" ]; then
    DIR=$(cd "$REPORT" && pwd)
    STAMP=${DIR##*/ab-}
    ROUNDS=$(find "$DIR" -maxdepth 1 -name 'A-*' | wc -l)
    A=${A:-A} B=${B:-B}
else
    : "${A:?A=binary before}" "${B:?B=binary after}"
    ROUNDS=${ROUNDS:-5}
    export FIXED_SECONDS=${FIXED_SECONDS:-10}
    export QUERY_SETS=${QUERY_SETS:-"a srv mix nx"}
    STAMP=$(date -u +%Y-%m-%dT%H%MZ)
    DIR=$ROOT/bench/results/ab-$STAMP
    mkdir -p "$DIR"
    for round in $(seq "$ROUNDS"); do
        # A, B in odd rounds and B, A in even ones: a drift that grows through the run (the
        # machine's other work) then favours neither side, where always running B second
        # would put it on B.
        order="A B"; [ $((round % 2)) = 0 ] && order="B A"
        for side in $order; do
            bin=${!side}
            echo "[dns_ab.sh $(date +%H:%M:%S)] round $round/$ROUNDS: $side ($bin)" >&2
            routing=${A_ROUTING:-0}; [ "$side" = B ] && routing=${B_ROUTING:-0}
            ROUTING=$routing RESULTS_DIR=$DIR/$side-$round SIGNPOST_BIN=$bin SERVERS=signpost \
                ROUNDS=1 SEARCH_STEPS=0 "$ROOT/bench/dns.sh" >/dev/null
        done
    done
fi
python3 - "$DIR" "$A" "$B" "$ROUNDS" >"$ROOT/bench/results/dns-ab-$STAMP.md" <<'EOF'
import glob, json, statistics, sys
d, a, b, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
fig = {}   # (side, qset) -> [us/query per round]
other = {}  # (side, qset) -> [other load on the server CPU per round]
for side in "AB":
    for r in range(1, rounds + 1):
        for path in glob.glob("%s/%s-%d/*.jsonl" % (d, side, r)):
            for line in open(path):
                rec = json.loads(line)
                fig.setdefault((side, rec["qset"]), []).append(rec["us_per_query"])
                fx = [x for x in rec["runs"] if x["kind"] == "fixed"][0]
                other.setdefault((side, rec["qset"]), []).append(fx.get("other_util_on_server_cpu", 0))
print("# DNS CPU per query, A/B, %s\n" % d.rsplit("/", 1)[1][3:])
import os
modes = {"1": " (ROUTING=1: weights 1:3:96, zone metadata, dns.locality holding the client)",
         "weights": " (ROUTING=weights: weights 1:3:96)",
         "meta": " (ROUTING=meta: zone metadata, equal weights, no dns.locality)"}
print("A: `%s`%s  \nB: `%s`%s  \n%d rounds, alternated A, B, B, A, A, B, ...\n"
      % (a, modes.get(os.environ.get("A_ROUTING", ""), ""), b,
         modes.get(os.environ.get("B_ROUTING", ""), ""), rounds))
print("| query set | A µs/query (rounds) | B µs/query (rounds) | A median | B median | B/A |")
print("|---|---|---|---|---|---|")
for q in ["a", "srv", "mix", "nx"]:
    if ("A", q) not in fig:
        continue
    fa, fb = fig[("A", q)], fig[("B", q)]
    ma, mb = statistics.median(fa), statistics.median(fb)
    print("| %s | %s | %s | %.2f | %.2f | %.3f |" % (q, " / ".join("%.2f" % x for x in fa),
          " / ".join("%.2f" % x for x in fb), ma, mb, mb / ma))
def fit(rows):
    """Least squares of us = c + k*load + d*isB; returns (c, k, d, se(d))."""
    X = [[1.0, o, b] for o, b, u in rows]
    y = [u for o, b, u in rows]
    n = 3
    A = [[sum(x[i] * x[j] for x in X) for j in range(n)] for i in range(n)]
    def solve(M, v):
        M = [r[:] + [v[i]] for i, r in enumerate(M)]
        for c in range(n):
            p = max(range(c, n), key=lambda r: abs(M[r][c])); M[c], M[p] = M[p], M[c]
            for r in range(n):
                if r != c:
                    f = M[r][c] / M[c][c]
                    M[r] = [x - f * z for x, z in zip(M[r], M[c])]
        return [M[i][n] / M[i][i] for i in range(n)]
    c = solve(A, [sum(x[i] * t for x, t in zip(X, y)) for i in range(n)])
    res = [t - sum(ci * xi for ci, xi in zip(c, x)) for x, t in zip(X, y)]
    s2 = sum(r * r for r in res) / max(1, len(X) - n)
    var_d = solve(A, [0.0, 0.0, 1.0])[2] * s2
    return c[0], c[1], c[2], var_d ** 0.5
print("\n| query set | quiet runs A (median) | quiet runs B (median) | fit: µs/query at no other load | B − A, load-adjusted |")
print("|---|---|---|---|---|")
for q in ["a", "srv", "mix", "nx"]:
    if ("A", q) not in fig:
        continue
    qa = [u for u, o in zip(fig[("A", q)], other[("A", q)]) if o < 0.10]
    qb = [u for u, o in zip(fig[("B", q)], other[("B", q)]) if o < 0.10]
    med = lambda v: "%d (%.2f)" % (len(v), statistics.median(v)) if v else "0"
    rows = [(o, 0.0, u) for u, o in zip(fig[("A", q)], other[("A", q)])] + \
           [(o, 1.0, u) for u, o in zip(fig[("B", q)], other[("B", q)])]
    if len({round(o, 4) for o, b, u in rows}) < 2:
        # No other load in any run (a quiet machine): nothing to adjust for, and the fit's
        # load column would be singular. B - A of the means, with its standard error.
        ua = [u for o, b, u in rows if b == 0.0]
        ub = [u for o, b, u in rows if b == 1.0]
        c, k, dd = statistics.mean(ua), 0.0, statistics.mean(ub) - statistics.mean(ua)
        se = (statistics.pvariance(ua) / len(ua) + statistics.pvariance(ub) / len(ub)) ** 0.5
    else:
        c, k, dd, se = fit(rows)
    print("| %s | %s | %s | %.2f (+%.2f per 10 %% other load) | %+.2f µs (± %.2f) = %+.1f %% |"
          % (q, med(qa), med(qb), c, k * 0.1, dd, se, 100 * dd / c))
print("\nOther load on the server's CPU during each fixed-rate run (%):\n")
for q in ["a", "srv", "mix", "nx"]:
    if ("A", q) in other:
        print("- %s: A %s; B %s" % (q, " / ".join("%.0f" % (100 * x) for x in other[("A", q)]),
              " / ".join("%.0f" % (100 * x) for x in other[("B", q)])))
EOF
cat "$ROOT/bench/results/dns-ab-$STAMP.md"
