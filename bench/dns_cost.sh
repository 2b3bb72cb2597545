#!/usr/bin/env bash
# bench/dns_cost.sh — user-space instructions per DNS query of the whole server, plain
# rotation against routed answers: deterministic, so a change of a few instructions shows.
#
# Method
#   For each side (plain: equal weights, no dns.locality; routed: weights 1:3:96, zone
#   metadata, and a dns.locality holding the client, as bench/dns.sh's ROUTING=1), the
#   binary serves under valgrind's callgrind with instrumentation off; 1,000 services x 3
#   instances are registered over HTTP; then instrumentation goes on, dnsperf sends $QUERIES
#   queries for random services (20 outstanding) from 127.0.0.1, and it goes off again:
#   A queries, or with KIND=srv SRV queries (the service name and the RFC 2782 name, half
#   each, as bench/dns.sh's srv set).
#   So the count is every user-space instruction of every server thread while it answered
#   them (the UDP worker, the runtime's idle threads), none of the set-up, none of the kernel.
#   The report gives per query: the total of each side, their difference, and the functions
#   whose own count differs most (by source file and function, code inlined into a function
#   counted there). Where the time goes on a real CPU
#   (caches, branches) is bench/dns_ab.sh's to measure; this tells what the code does.
#
# Usage
#   SIGNPOST_BIN=target/release/signpost bench/dns_cost.sh
#   QUERIES=20000 TOP=20 KIND=srv SIGNPOST_BIN=... bench/dns_cost.sh
# Needs valgrind, dnsperf, curl, python3. Output: the report on stdout and in
# bench/results/dns-cost-<date>.md.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${SIGNPOST_BIN:-$ROOT/target/release/signpost}
QUERIES=${QUERIES:-20000}
KIND=${KIND:-a}
TOP=${TOP:-16}
for tool in valgrind callgrind_control callgrind_annotate dnsperf curl python3; do
    command -v "$tool" >/dev/null || {
        echo "dns_cost.sh: needs $tool (apt-get install -y valgrind dnsperf curl python3)" >&2
        exit 1
    }
done
T=$(mktemp -d /tmp/signpost-dns-cost.XXXXXX)
PID=""
cleanup() {
    [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

python3 - "$T/q.txt" "$QUERIES" "$KIND" <<'EOF'
import random, sys
r = random.Random(20261205)
with open(sys.argv[1], "w") as f:
    for _ in range(int(sys.argv[2])):
        n = r.randrange(1000)
        if sys.argv[3] == "srv":
            # As bench/dns.sh's srv set: the service name and the RFC 2782 name, half each.
            f.write(("svc-%04d.service.internal SRV\n" if r.random() < 0.5
                     else "_svc-%04d._tcp.service.internal SRV\n") % n)
        else:
            f.write("svc-%04d.service.internal A\n" % n)
EOF

side() {  # $1 = plain|routed; leaves $T/$1.out
    local s=$1 d=$T/$1
    mkdir -p "$d/zones"
    cat >"$d/signpost.toml" <<EOF
[dns]
domain = "internal."
ttl = 5
negative_ttl = 5
zones_dir = "$d/zones"
EOF
    if [ "$s" = routed ]; then
        cat "$ROOT/bench/routed-locality.toml" >>"$d/signpost.toml"
    fi
    local dns http
    dns=$(freeport) http=$(freeport)
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$d/cg.out" "$BIN" serve \
        --config "$d/signpost.toml" --dns-listen "127.0.0.1:$dns" --http-listen "127.0.0.1:$http" \
        --data-dir "$d/data" >"$d/log" 2>&1 &
    PID=$!
    for _ in $(seq 240); do
        curl -sf -o /dev/null "http://127.0.0.1:$http/v1/services" && break
        sleep 0.5
    done
    python3 - "$http" "$s" <<'EOF'
import http.client, json, sys
port, side = int(sys.argv[1]), sys.argv[2]
c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
for n in range(1000):
    for k in range(3):
        reg = {"address": "10.%d.%d.%d" % (n // 256, n % 256, 10 + k), "port": 8080 + k}
        if side == "routed":
            # The client's zone "a" holds i0 and i1: every answer places the client and
            # takes the zone's order, weighted in both parts (the costliest path).
            reg["weight"] = (1, 3, 96)[k]
            reg["meta"] = {"zone": "a" if k < 2 else "b"}
        c.request("PUT", "/v1/services/svc-%04d/instances/i%d" % (n, k), json.dumps(reg),
                  {"Content-Type": "application/json"})
        r = c.getresponse(); r.read()
        if r.status != 200:
            raise SystemExit("registration: HTTP %d" % r.status)
EOF
    sleep 1
    callgrind_control -i on "$PID" >/dev/null
    local completed
    completed=$(dnsperf -s 127.0.0.1 -p "$dns" -d "$T/q.txt" -n 1 -q 20 -t 10 -c 1 2>&1 |
        sed -n 's/.*Queries completed: *\([0-9]*\).*/\1/p')
    callgrind_control -i off "$PID" >/dev/null
    callgrind_control -d "$PID" >/dev/null
    kill "$PID"
    wait "$PID" 2>/dev/null || true
    PID=""
    [ "$completed" = "$QUERIES" ] || { echo "dns_cost.sh: $s: $completed of $QUERIES answered" >&2; exit 1; }
    # Self counts per function (inlined code counts where it was inlined), every function.
    callgrind_annotate --auto=no --inclusive=no --threshold=100 "$(ls "$d"/cg.out* | tail -1)" \
        >"$T/$s.out" 2>/dev/null
}

echo "[dns_cost.sh $(date +%H:%M:%S)] plain" >&2
side plain
echo "[dns_cost.sh $(date +%H:%M:%S)] routed" >&2
side routed
mkdir -p "$ROOT/bench/results"
STAMP=$(date -u +%Y-%m-%dT%H%MZ)
python3 - "$T/plain.out" "$T/routed.out" "$QUERIES" "$TOP" "$BIN" "$KIND" <<'EOF' | tee "$ROOT/bench/results/dns-cost-$STAMP.md"
import re, sys
plain, routed, n, top, binary, kind = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
def read(path):
    rows = {}
    for line in open(path):
        m = re.match(r"\s*([\d,]+) \([ \d.]+%\)\s+(.*)$", line)
        if m:
            rows[m.group(2).strip()] = rows.get(m.group(2).strip(), 0) + int(m.group(1).replace(",", ""))
    return rows
a, b = read(plain), read(routed)
total = lambda r: next(v for k, v in r.items() if k.startswith("PROGRAM TOTALS"))
print("# User-space instructions per DNS query, plain against routed\n")
print("`%s`, %d %s queries each, 1,000 services x 3 instances (bench/dns_cost.sh)\n" % (binary, n, kind.upper()))
print("| plain | routed | difference |\n|---:|---:|---:|")
print("| %.0f | %.0f | %+.0f (%+.1f %%) |\n" % (total(a) / n, total(b) / n, (total(b) - total(a)) / n,
                                          100.0 * (total(b) - total(a)) / total(a)))
print("Functions whose own count differs most, per query (source file: the function it is inlined into):\n")
print("| per query | function |\n|---:|---|")
diffs = [((b.get(k, 0) - a.get(k, 0)) / n, k) for k in set(a) | set(b) if not k.startswith("PROGRAM")]
for d, k in sorted(diffs, key=lambda x: -abs(x[0]))[:top]:
    print("| %+.1f | `%s` |" % (d, re.sub(r"\s*\[[^\]]*\]$", "", k)[:140]))
EOF
