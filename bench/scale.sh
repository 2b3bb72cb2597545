#!/usr/bin/env bash
# bench/scale.sh — signpost's writes and its size at 100,000 instances.
#
# Method
#   One signpost, pinned with `taskset -c $SERVER_CPU` (default 0), data dir on the disk of the
#   temp dir ($SCALE_DATA_DIR to choose another), HTTP and DNS on free 127.0.0.1 ports. The load
#   generator is examples/scale_load.rs (raw HTTP/1.1 and DNS over tokio; it does not link
#   signpost's library), pinned with `taskset -c $CLIENT_CPU` (default 1), under SCHED_RR
#   priority $RT_PRIO (default 10, when allowed) so other work on a shared machine yields to it.
#   The server runs at normal priority ($SERVER_RT_PRIO, default 0 = off): under SCHED_RR it
#   would starve the kernel's block-I/O worker of its CPU (kworker/N:*H runs at normal
#   priority), so every fdatasync would wait for the server to go idle before its flush is
#   issued; `perf sched timehist` showed that worker waiting 1.4-1.6 ms per commit and the CPU
#   idle ~19 % of the run in I/O wait. A server is not run that way in production.
#   1. Registration throughput over HTTP: instances 0..$INSTANCES (default 100,000) as
#      $PER_SERVICE (4) instances per service `scale-NNNNN`, distinct 10.x.y.z addresses, by
#      $CONNS (64) keep-alive connections with one PUT in flight each, each PUT answered 200
#      (durable, in DNS). Reported: registrations/s overall and per 10,000, PUT latency p50/p99.
#      Bounded by $REG_SECONDS (300 s): if the deadline hits, everything after runs with the
#      number reached, and the report says so.
#   2. RSS (VmRSS, VmHWM from /proc/<pid>/status) of that server after the registrations.
#   3. Registration-to-DNS visibility at that size: $VIS_SAMPLES (1,000) times, one after the
#      other, a PUT of a new service `vis-N` is written and `vis-N.service.internal` A is asked
#      over UDP in a loop (one query outstanding) until an answer has records; latency = first
#      such answer - PUT written. p50/p99/max, and the PUT's own latency.
#   4. Start-up time: the server is stopped (SIGTERM) and started $STARTS (3) times on that data
#      dir; start-up = exec until /healthz answers 200 and until DNS answers the last registered
#      service with records (polled every 1 ms); RSS 2 s after it is ready. Medians.
#   A fsync probe of the data dir's disk (4 KiB write + fsync, 100 times) gives context for (1).
#   Targets (the issue's): >= 20,000 registrations/s, p99 visibility <= 1 ms, RSS <= 200 MB and
#   start-up <= 1 s at 100,000 instances.
#
# Usage
#   bench/scale.sh                    # builds signpost and the load generator (release)
#   SIGNPOST_BIN=path bench/scale.sh  # an existing signpost binary (any build)
#   INSTANCES=100000 PER_SERVICE=4 CONNS=64 REG_SECONDS=300 VIS_SAMPLES=1000 STARTS=3 \
#   SERVER_CPU=0 CLIENT_CPU=1 RT_PRIO=10 SERVER_RT_PRIO=0 SCALE_DATA_DIR=/dev/shm/x bench/scale.sh
# Output: a markdown table on stdout, also in bench/results/scale-<date>.md (raw JSON lines in
# bench/results/scale-<date>.jsonl). Only 127.0.0.1; every step is bounded in time; the server
# is stopped on exit.

set -euo pipefail

BUILT=""

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
INSTANCES=${INSTANCES:-100000}
PER_SERVICE=${PER_SERVICE:-4}
CONNS=${CONNS:-64}
REG_SECONDS=${REG_SECONDS:-300}
VIS_SAMPLES=${VIS_SAMPLES:-1000}
STARTS=${STARTS:-3}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
RESULTS_DIR=${RESULTS_DIR:-$ROOT/bench/results}
# RT_PRIO=N (default 10; 0 = off; root only) runs the load generator under SCHED_RR
# priority N (chrt -r), so other work on a shared machine cannot hold its CPU (see dns.sh).
# SERVER_RT_PRIO=N does the same for the server (default 0: see Method for why not).
RT_PRIO=${RT_PRIO:-10}
RT=(); if [ "$RT_PRIO" -gt 0 ] && chrt -r "$RT_PRIO" true 2>/dev/null; then RT=(chrt -r "$RT_PRIO"); else RT_PRIO=0; fi
SERVER_RT_PRIO=${SERVER_RT_PRIO:-0}
SRT=(); if [ "$SERVER_RT_PRIO" -gt 0 ] && chrt -r "$SERVER_RT_PRIO" true 2>/dev/null; then SRT=(chrt -r "$SERVER_RT_PRIO"); else SERVER_RT_PRIO=0; fi

log() { printf '[scale.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v taskset >/dev/null || die "taskset (util-linux) is needed"
command -v python3 >/dev/null || die "python3 is needed"

log "building (cargo build --release${SIGNPOST_BIN:+, load generator only})"
if [ -z "${SIGNPOST_BIN:-}" ]; then
    (cd "$ROOT" && cargo build --release --bin signpost --example scale_load >&2)
    SIGNPOST_BIN=$ROOT/target/release/signpost; BUILT=1
else
    (cd "$ROOT" && cargo build --release --example scale_load >&2)
fi
LOAD=${SCALE_LOAD_BIN:-$ROOT/target/release/examples/scale_load}
[ -x "$SIGNPOST_BIN" ] || die "no signpost binary at $SIGNPOST_BIN"

T=$(mktemp -d "${TMPDIR:-/tmp}/signpost-scale.XXXXXX")
DATA=${SCALE_DATA_DIR:-$T/data}
SERVER_PID=""
cleanup() {
    local rc=$?
    if [ -n "$SERVER_PID" ]; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    if [ -z "${KEEP_TMP:-}" ]; then
        rm -rf "$T"
        [ -z "${SCALE_DATA_DIR:-}" ] || rm -rf "$SCALE_DATA_DIR"
    else
        log "kept $T"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

freeport() {
    python3 -c 'import socket
while True:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0)); p = u.getsockname()[1]
    t = socket.socket()
    try:
        t.bind(("127.0.0.1", p)); print(p); break
    except OSError: pass
    finally: u.close(); t.close()'
}
DNS_PORT=$(freeport); HTTP_PORT=$(freeport)
mkdir -p "$T/zones"
cat >"$T/signpost.toml" <<EOF
[dns]
domain = "internal."
zones_dir = "$T/zones"
EOF

start_server() {  # sets SERVER_PID and START_NS
    START_NS=$(date +%s%N)
    "${SRT[@]}" taskset -c "$SERVER_CPU" "$SIGNPOST_BIN" serve --config "$T/signpost.toml" \
        --dns-listen "127.0.0.1:$DNS_PORT" --http-listen "127.0.0.1:$HTTP_PORT" \
        --data-dir "$DATA" >>"$T/signpost.log" 2>&1 &
    SERVER_PID=$!
}
stop_server() {
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 600); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}
rss() {  # "VmRSS_kB VmHWM_kB" of the server
    awk '/^VmRSS/{r=$2} /^VmHWM/{h=$2} END{print r, h}' "/proc/$SERVER_PID/status"
}

: >"$T/raw.jsonl"
record() { echo "$1" >>"$T/raw.jsonl"; }

# --- fsync probe -------------------------------------------------------------------------------------
mkdir -p "$DATA"
FSYNC=$(python3 - "$DATA" <<'EOF'
import os, statistics, sys, time
p = os.path.join(sys.argv[1], "fsync-probe")
fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o600); t = []
for i in range(100):
    os.pwrite(fd, os.urandom(4096), (i % 16) * 4096); s = time.perf_counter(); os.fsync(fd); t.append(time.perf_counter() - s)
os.close(fd); os.unlink(p); t.sort()
print('{"mode":"fsync","p50_ms":%.3f,"p99_ms":%.3f}' % (1e3 * statistics.median(t), 1e3 * t[98]))
EOF
)
record "$FSYNC"
log "fsync probe: $FSYNC"

# --- 1. registrations --------------------------------------------------------------------------------
start_server
R=$("${RT[@]}" taskset -c "$CLIENT_CPU" "$LOAD" ready --http "127.0.0.1:$HTTP_PORT" --dns "127.0.0.1:$DNS_PORT" --timeout 30)
record "$R"
log "registering $INSTANCES instances over HTTP ($CONNS connections, at most $REG_SECONDS s)"
REG=$("${RT[@]}" taskset -c "$CLIENT_CPU" "$LOAD" register --http "127.0.0.1:$HTTP_PORT" --to "$INSTANCES" \
    --per-service "$PER_SERVICE" --conns "$CONNS" --deadline "$REG_SECONDS" --slice 10000)
record "$REG"
log "registration: $REG"
REACHED=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["registered"])' "$REG")
[ "$REACHED" -gt 0 ] || die "no registration succeeded"
read -r RSS_KB HWM_KB < <(rss)
record "{\"mode\":\"rss_after_registration\",\"rss_kb\":$RSS_KB,\"hwm_kb\":$HWM_KB}"

# --- 3. visibility -----------------------------------------------------------------------------------
log "visibility: $VIS_SAMPLES samples"
VIS=$("${RT[@]}" taskset -c "$CLIENT_CPU" timeout 600 "$LOAD" visibility --http "127.0.0.1:$HTTP_PORT" \
    --dns "127.0.0.1:$DNS_PORT" --samples "$VIS_SAMPLES")
record "$VIS"
log "visibility: $VIS"

# --- 4. start-up -------------------------------------------------------------------------------------
# a service near the end of the registered range (workers take numbers in order; the margin
# covers PUTs that failed near the deadline)
LAST=$(( REACHED - 1 - CONNS )); [ "$LAST" -ge 0 ] || LAST=0
LAST_SVC=$(printf 'scale-%05d' $(( LAST / PER_SERVICE )))
stop_server
for i in $(seq "$STARTS"); do
    start_server
    R=$("${RT[@]}" taskset -c "$CLIENT_CPU" "$LOAD" ready --http "127.0.0.1:$HTTP_PORT" --dns "127.0.0.1:$DNS_PORT" \
        --name "$LAST_SVC.service.internal" --timeout 120)
    sleep 2
    read -r RSS_KB HWM_KB < <(rss)
    record "$(python3 -c 'import json,sys
r = json.loads(sys.argv[1]); t0 = int(sys.argv[2])
ms = lambda v: None if v is None else round((v - t0) / 1e6, 1)
print(json.dumps({"mode": "startup", "http_ms": ms(r["http_ns"]), "dns_ms": ms(r["dns_ns"]),
                  "rss_kb": int(sys.argv[3]), "hwm_kb": int(sys.argv[4])}))' "$R" "$START_NS" "$RSS_KB" "$HWM_KB")"
    log "start $i: $(tail -1 "$T/raw.jsonl")"
    stop_server
done
DB_BYTES=$(du -sb "$DATA" | cut -f1)
record "{\"mode\":\"store\",\"bytes\":$DB_BYTES}"

# --- report ------------------------------------------------------------------------------------------
STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)  # seconds: runs back to back must not overwrite each other
mkdir -p "$RESULTS_DIR"
GIT_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")
git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || GIT_REV="$GIT_REV+dirty"
[ -n "$BUILT" ] || GIT_REV="not built here; binary of $(date -u -r "$SIGNPOST_BIN" +%Y-%m-%dT%H:%MZ), checkout at $GIT_REV"
OUT="$RESULTS_DIR/scale-$STAMP.md"
RT_PRIO=$RT_PRIO SERVER_RT_PRIO=$SERVER_RT_PRIO python3 - "$T/raw.jsonl" "$INSTANCES" "$PER_SERVICE" "$CONNS" "$GIT_REV" "$SIGNPOST_BIN" "$STAMP" >"$OUT" <<'EOF'
import json, os, platform, statistics, sys
raw = [json.loads(l) for l in open(sys.argv[1])]
want, per, conns, rev, binp, stamp = int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6], sys.argv[7]
get = lambda m: [r for r in raw if r["mode"] == m]
reg, vis, fs = get("register")[0], get("visibility")[0], get("fsync")[0]
ra, st, store = get("rss_after_registration")[0], get("startup"), get("store")[0]
med = lambda k: statistics.median([s[k] for s in st if s[k] is not None]) if any(s[k] is not None for s in st) else None
cpu = [l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")]
n = reg["registered"]
print("# Scale benchmark %s\n" % stamp)
print("Machine: %s, %d CPUs, Linux %s; signpost git %s (%s); server on CPU %s, load generator on CPU %s; "
      "SCHED_RR priority: load generator %s, server %s (0 = off); load average at the end %s." % (cpu[0] if cpu else "?", os.cpu_count(), platform.release(), rev, binp,
      os.environ.get("SERVER_CPU", "0"), os.environ.get("CLIENT_CPU", "1"), os.environ.get("RT_PRIO", "0"), os.environ.get("SERVER_RT_PRIO", "0"), open("/proc/loadavg").read().split()[0]))
print("Data dir disk: fsync of a 4 KiB write p50 %.2f ms, p99 %.2f ms. Store size after the run: %.1f MB.\n"
      % (fs["p50_ms"], fs["p99_ms"], store["bytes"] / 1e6))
if n < want:
    print("**The registration deadline hit: %d of %d instances were registered; every figure below is at %d.**\n" % (n, want, n))
ok = lambda c: "yes" if c else "**no**"
rows = []
rows.append(("registrations/s over HTTP (%s connections), 0 → %d" % (conns, n), "%.0f" % reg["per_second"], "≥ 20,000", ok(reg["per_second"] >= 20000)))
rows.append(("PUT latency p50 / p99 during the load", "%.1f / %.1f ms" % (reg["put_p50_us"] / 1e3, reg["put_p99_us"] / 1e3), "", ""))
rows.append(("registration → DNS visibility p50 (%d samples at %d)" % (vis["ok"], n), "%.3f ms" % (vis["visible_p50_us"] / 1e3), "", ""))
rows.append(("registration → DNS visibility p99", "%.3f ms" % (vis["visible_p99_us"] / 1e3), "≤ 1 ms", ok(vis["visible_p99_us"] <= 1000)))
rows.append(("registration → DNS visibility max", "%.3f ms" % (vis["visible_max_us"] / 1e3), "", ""))
rows.append(("PUT latency p50 / p99, one at a time", "%.3f / %.3f ms" % (vis["put_p50_us"] / 1e3, vis["put_p99_us"] / 1e3), "", ""))
rss = med("rss_kb")
rows.append(("RSS after restart with %d instances (VmRSS, median)" % (n + vis["ok"]), "%.1f MB" % (rss / 1024), "≤ 200 MB", ok(rss / 1024 <= 200)))
rows.append(("peak RSS after restart (VmHWM, median)", "%.1f MB" % (med("hwm_kb") / 1024), "", ""))
rows.append(("RSS after the registrations over HTTP (VmRSS / VmHWM)", "%.1f / %.1f MB" % (ra["rss_kb"] / 1024, ra["hwm_kb"] / 1024), "", ""))
d, h = med("dns_ms"), med("http_ms")
rows.append(("start-up: exec → /healthz 200 (median of %d)" % len(st), "%s ms" % h, "", ""))
rows.append(("start-up: exec → DNS answers a registered name (median of %d)" % len(st), "%s ms" % d, "≤ 1 s", ok(d is not None and d <= 1000)))
print("| figure | measured | target | met |")
print("|---|---|---|---|")
for r in rows:
    print("| %s | %s | %s | %s |" % r)
print("\nRegistrations/s per 10,000 (registry size at the end of the slice → rate): " +
      ", ".join("%dk %s" % (s["upto"] // 1000, s["per_second"]) for s in reg["slices"]) + ".")
print("Start-ups (exec → HTTP / DNS, ms; RSS MB): " + "; ".join("%s / %s; %.1f" % (s["http_ms"], s["dns_ms"], s["rss_kb"] / 1024) for s in st) + ".")
print("Visibility: %d of %d answers with the new name came before the PUT's 200 was read; %d samples failed."
      % (vis["visible_before_2xx"], vis["ok"], vis["failed"]))
EOF
cp "$T/raw.jsonl" "$RESULTS_DIR/scale-$STAMP.jsonl"
cat "$OUT"
log "wrote $OUT and $RESULTS_DIR/scale-$STAMP.jsonl"
