#!/usr/bin/env bash
# bench/soak.sh — signpost under a steady mixed load for minutes: does anything keep growing?
#
# Method
#   One signpost, pinned with `taskset -c $SERVER_CPU` (default 0), data dir on the disk of the
#   temp dir ($SOAK_DATA_DIR to choose another), HTTP and DNS on free 127.0.0.1 ports. The load
#   generator is examples/soak_load.rs (raw HTTP/1.1 and DNS over tokio; it does not link
#   signpost's library), pinned with `taskset -c $CLIENT_CPU` (default 1), under SCHED_RR
#   priority $RT_PRIO (default 10, when allowed) so other work on a shared machine does not
#   hold back its clock; the server runs at normal priority ($SERVER_RT_PRIO, default 0 = off;
#   bench/scale.sh says why).
#   1. Seed: $SERVICES (1,000) services `soak-NNNN` × $PER_SERVICE (3) instances over HTTP,
#      every PUT answered 200.
#   2. Soak, for $SOAK_SECONDS (600 s), all at once, each at a steady rate (open loop: a slow
#      answer does not slow the offered load; a client more than 100 ms (DNS) or 1 s (writes)
#      behind skips that backlog and counts it as "skipped"):
#      - DNS: $DNS_QPS (5,000) UDP queries/s over $DNS_SOCKETS (2) sockets, EDNS 1232, no
#        recursion: 40 % service A, 30 % SRV (a third in `_svc._tcp` form), 20 % instance A,
#        10 % NXDOMAIN. An answer must be NOERROR with records (NXDOMAIN for the 10 %), else it
#        is "unexpected"; a query unanswered after $DNS_TIMEOUT (1 s) is "lost".
#      - Churn: $CHURN_PER_SEC (200) writes/s over $CHURN_CONNS (8) keep-alive connections:
#        half re-register a seeded instance with a new address, tags and metadata, a quarter
#        register a short-lived instance `tmp-N` in a seeded service, a quarter deregister the
#        one registered $EPHEMERAL (250) registrations earlier; so the registry stays at
#        SERVICES × PER_SERVICE + EPHEMERAL instances. A PUT must answer 200 and a DELETE 204:
#        any other status, a timeout (5 s) or a broken connection counts as a write error.
#      - Watchers: $WATCHERS (100) clients, each long-polling one seeded service with
#        `GET /v1/services/<svc>?index=N&wait=...` of $POLL_WAIT (2 s) in a loop, N from the
#        last answer's X-Signpost-Index, closing its connection and opening a new one every
#        3-6 polls. A return before the wait is "woken" (its service changed); a non-200 or
#        broken poll is a poll error.
#      - One-shot clients: $ONESHOT_PER_SEC (5) per second, each on a new connection: GET
#        /healthz or a service and read the answer (200 expected); or send GET /v1/services and
#        close without reading; or send half a request head and close.
#   3. Sampling: before the load, every $SAMPLE_SECONDS (10 s), and once at the end (after the
#      load stopped, every client connection was closed and the last queries expired), one
#      row: the server's VmRSS and VmHWM, Threads (/proc/<pid>/status), open files (entries of
#      /proc/<pid>/fd), CPU % of one core over the interval (utime + stime of /proc/<pid>/stat),
#      the data dir's size (apparent bytes, as `du -sb`), and the interval's counts: DNS
#      queries sent / answered / lost / unexpected and their p99, writes ok / errors and their
#      p99, long-poll returns (woken), watcher connections opened, one-shot clients ok / errors.
#   4. The server is stopped with SIGTERM: time to exit and exit status; WARN/ERROR lines of
#      its log are counted.
#   What counts as a leak: a figure still growing over the last half of the run. For each of
#   RSS, open files, threads and data dir size, the least-squares slope over the samples of the
#   last half (t >= T/2) is reported per minute; the figure is flagged "still growing" when
#   that slope exceeds its limit ($RSS_DRIFT_LIMIT 0.5 MB/min, $FD_DRIFT_LIMIT 0.5/min,
#   $THREAD_DRIFT_LIMIT 0.5/min, $DATA_DRIFT_LIMIT 1 MB/min) AND its last row under load is above
#   every sample of the first half. With the registry, the connections and the rates all
#   bounded, a healthy server levels off: a warm-up (allocator arenas, buffers, the store
#   growing to its working size) rises in the first half and stops, and a sawtooth (log
#   segments written and retired, connections coming and going) does not stay above the first
#   half; a leak of memory, descriptors (connections never closed), threads (tasks never
#   ended) or disk (log never retired) keeps rising. Open files are also compared between the
#   first row (before any client) and the last (every client gone): more at the end is a
#   connection or file the server did not release. A short run cannot tell a slow warm-up
#   from a leak: judge with the default 10 minutes or more. Errors of any kind, unexpected DNS
#   answers and lost queries are reported alongside; they are not expected at these rates.
#
# Usage
#   bench/soak.sh                    # builds signpost and the load generator (release)
#   SIGNPOST_BIN=path bench/soak.sh  # an existing signpost binary (any build)
#   SOAK_SECONDS=600 SAMPLE_SECONDS=10 SERVICES=1000 PER_SERVICE=3 DNS_QPS=5000 DNS_SOCKETS=2 \
#   DNS_TIMEOUT=1 CHURN_PER_SEC=200 CHURN_CONNS=8 EPHEMERAL=250 WATCHERS=100 POLL_WAIT=2 \
#   ONESHOT_PER_SEC=5 SERVER_CPU=0 CLIENT_CPU=1 RT_PRIO=10 SERVER_RT_PRIO=0 \
#   SOAK_DATA_DIR=/dev/shm/x KEEP_TMP=1 bench/soak.sh
# Output: a markdown table (one row per sample) and a summary on stdout, also in
# bench/results/soak-<date>.md (raw JSON lines in bench/results/soak-<date>.jsonl); progress on
# stderr. Only 127.0.0.1; every step is bounded in time (the soak by SOAK_SECONDS + 60 s); the
# server is stopped on exit. Exit status 1 when the server died during the run.

set -euo pipefail

BUILT=""

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SOAK_SECONDS=${SOAK_SECONDS:-600}
SAMPLE_SECONDS=${SAMPLE_SECONDS:-10}
SERVICES=${SERVICES:-1000}
PER_SERVICE=${PER_SERVICE:-3}
DNS_QPS=${DNS_QPS:-5000}
DNS_SOCKETS=${DNS_SOCKETS:-2}
DNS_TIMEOUT=${DNS_TIMEOUT:-1}
CHURN_PER_SEC=${CHURN_PER_SEC:-200}
CHURN_CONNS=${CHURN_CONNS:-8}
EPHEMERAL=${EPHEMERAL:-250}
WATCHERS=${WATCHERS:-100}
POLL_WAIT=${POLL_WAIT:-2}
ONESHOT_PER_SEC=${ONESHOT_PER_SEC:-5}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
RSS_DRIFT_LIMIT=${RSS_DRIFT_LIMIT:-0.5}
FD_DRIFT_LIMIT=${FD_DRIFT_LIMIT:-0.5}
THREAD_DRIFT_LIMIT=${THREAD_DRIFT_LIMIT:-0.5}
DATA_DRIFT_LIMIT=${DATA_DRIFT_LIMIT:-1}
RESULTS_DIR=${RESULTS_DIR:-$ROOT/bench/results}
# RT_PRIO=N (default 10; 0 = off; root only) runs the load generator under SCHED_RR
# priority N (chrt -r). SERVER_RT_PRIO=N does the same for the server (default 0).
RT_PRIO=${RT_PRIO:-10}
RT=(); if [ "$RT_PRIO" -gt 0 ] && chrt -r "$RT_PRIO" true 2>/dev/null; then RT=(chrt -r "$RT_PRIO"); else RT_PRIO=0; fi
SERVER_RT_PRIO=${SERVER_RT_PRIO:-0}
SRT=(); if [ "$SERVER_RT_PRIO" -gt 0 ] && chrt -r "$SERVER_RT_PRIO" true 2>/dev/null; then SRT=(chrt -r "$SERVER_RT_PRIO"); else SERVER_RT_PRIO=0; fi
export SOAK_SECONDS SAMPLE_SECONDS SERVICES PER_SERVICE DNS_QPS DNS_SOCKETS DNS_TIMEOUT CHURN_PER_SEC \
    CHURN_CONNS EPHEMERAL WATCHERS POLL_WAIT ONESHOT_PER_SEC SERVER_CPU CLIENT_CPU RT_PRIO SERVER_RT_PRIO \
    RSS_DRIFT_LIMIT FD_DRIFT_LIMIT THREAD_DRIFT_LIMIT DATA_DRIFT_LIMIT

log() { printf '[soak.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v taskset >/dev/null || die "taskset (util-linux) is needed"
command -v python3 >/dev/null || die "python3 is needed"
for v in SOAK_SECONDS SAMPLE_SECONDS SERVICES PER_SERVICE DNS_SOCKETS CHURN_CONNS EPHEMERAL WATCHERS; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number (got ${!v})"
done
[ "$SOAK_SECONDS" -gt 0 ] && [ "$SAMPLE_SECONDS" -gt 0 ] || die "SOAK_SECONDS and SAMPLE_SECONDS must be > 0"

log "building (cargo build --release${SIGNPOST_BIN:+, load generator only})"
if [ -z "${SIGNPOST_BIN:-}" ]; then
    (cd "$ROOT" && cargo build --release --bin signpost --example soak_load >&2)
    SIGNPOST_BIN=$ROOT/target/release/signpost; BUILT=1
else
    (cd "$ROOT" && cargo build --release --example soak_load >&2)
fi
LOAD=${SOAK_LOAD_BIN:-$ROOT/target/release/examples/soak_load}
[ -x "$SIGNPOST_BIN" ] || die "no signpost binary at $SIGNPOST_BIN"
[ -x "$LOAD" ] || die "no load generator at $LOAD"

T=$(mktemp -d "${TMPDIR:-/tmp}/signpost-soak.XXXXXX")
DATA=${SOAK_DATA_DIR:-$T/data}
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
        [ -z "${SOAK_DATA_DIR:-}" ] || rm -rf "$SOAK_DATA_DIR"
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
mkdir -p "$T/zones" "$DATA"
cat >"$T/signpost.toml" <<EOF
[dns]
domain = "internal."
zones_dir = "$T/zones"
EOF

: >"$T/raw.jsonl"
record() { echo "$1" >>"$T/raw.jsonl"; }
record "$(python3 -c 'import json, os
keys = "SOAK_SECONDS SAMPLE_SECONDS SERVICES PER_SERVICE DNS_QPS DNS_SOCKETS DNS_TIMEOUT CHURN_PER_SEC CHURN_CONNS EPHEMERAL WATCHERS POLL_WAIT ONESHOT_PER_SEC SERVER_CPU CLIENT_CPU RT_PRIO SERVER_RT_PRIO".split()
print(json.dumps(dict(mode="config", **{k.lower(): os.environ[k] for k in keys})))')"

# --- server ------------------------------------------------------------------------------------------
"${SRT[@]}" taskset -c "$SERVER_CPU" "$SIGNPOST_BIN" serve --config "$T/signpost.toml" \
    --dns-listen "127.0.0.1:$DNS_PORT" --http-listen "127.0.0.1:$HTTP_PORT" \
    --data-dir "$DATA" >>"$T/signpost.log" 2>&1 &
SERVER_PID=$!
R=$("${RT[@]}" taskset -c "$CLIENT_CPU" "$LOAD" ready --http "127.0.0.1:$HTTP_PORT" --dns "127.0.0.1:$DNS_PORT" --timeout 30) \
    || { tail -20 "$T/signpost.log" >&2; die "the server did not come up: $R"; }
record "$R"
# taskset and chrt exec the server, so $SERVER_PID is signpost's own pid
[ "$(readlink "/proc/$SERVER_PID/exe")" = "$(readlink -f "$SIGNPOST_BIN")" ] \
    || die "pid $SERVER_PID is $(readlink "/proc/$SERVER_PID/exe"), not $SIGNPOST_BIN"

# --- 1. seed -----------------------------------------------------------------------------------------
log "seeding $SERVICES services × $PER_SERVICE instances"
SEED=$("${RT[@]}" taskset -c "$CLIENT_CPU" timeout 300 "$LOAD" seed --http "127.0.0.1:$HTTP_PORT" \
    --services "$SERVICES" --per-service "$PER_SERVICE" --conns 8) || die "seeding failed: $SEED"
record "$SEED"
log "seed: $SEED"

# --- 2-3. soak and samples ---------------------------------------------------------------------------
log "soak: ${SOAK_SECONDS}s, DNS $DNS_QPS/s, churn $CHURN_PER_SEC/s, $WATCHERS watchers, $ONESHOT_PER_SEC one-shot clients/s, a row every ${SAMPLE_SECONDS}s"
RUN_RC=0
"${RT[@]}" taskset -c "$CLIENT_CPU" timeout $((SOAK_SECONDS + 60)) "$LOAD" run \
    --http "127.0.0.1:$HTTP_PORT" --dns "127.0.0.1:$DNS_PORT" --pid "$SERVER_PID" --data-dir "$DATA" \
    --seconds "$SOAK_SECONDS" --sample "$SAMPLE_SECONDS" --services "$SERVICES" --per-service "$PER_SERVICE" \
    --qps "$DNS_QPS" --dns-sockets "$DNS_SOCKETS" --dns-timeout "$DNS_TIMEOUT" --churn "$CHURN_PER_SEC" \
    --churn-conns "$CHURN_CONNS" --ephemeral "$EPHEMERAL" --watchers "$WATCHERS" --wait "$POLL_WAIT" \
    --oneshot "$ONESHOT_PER_SEC" >>"$T/raw.jsonl" || RUN_RC=$?

# --- 4. stop -----------------------------------------------------------------------------------------
ALIVE=false; STOP_MS=null; EXIT=null
if kill -0 "$SERVER_PID" 2>/dev/null; then
    ALIVE=true
    S0=$(date +%s%N)
    kill -TERM "$SERVER_PID"
    for _ in $(seq 300); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.05; done
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        log "the server did not stop within 15 s of SIGTERM: killed"
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    else
        STOP_MS=$(( ($(date +%s%N) - S0) / 1000000 ))
    fi
fi
set +e; wait "$SERVER_PID" 2>/dev/null; EXIT=$?; set -e
SERVER_PID=""
WARNS=$(grep -cE '\b(WARN|ERROR)\b' "$T/signpost.log" || true)
record "{\"mode\":\"stop\",\"alive_at_end\":$ALIVE,\"stop_ms\":$STOP_MS,\"exit\":$EXIT,\"load_exit\":$RUN_RC,\"log_warn_error_lines\":$WARNS}"
grep -E '\b(WARN|ERROR)\b' "$T/signpost.log" | head -5 | python3 -c 'import json, sys
for l in sys.stdin: print(json.dumps({"mode": "log", "line": l.rstrip()[:300]}))' >>"$T/raw.jsonl" || true

# --- report ------------------------------------------------------------------------------------------
STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)  # seconds: runs back to back must not overwrite each other
mkdir -p "$RESULTS_DIR"
GIT_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")
git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || GIT_REV="$GIT_REV+dirty"
[ -n "$BUILT" ] || GIT_REV="not built here; binary of $(date -u -r "$SIGNPOST_BIN" +%Y-%m-%dT%H:%MZ), checkout at $GIT_REV"
OUT="$RESULTS_DIR/soak-$STAMP.md"
python3 - "$T/raw.jsonl" "$GIT_REV" "$SIGNPOST_BIN" "$STAMP" >"$OUT" <<'EOF'
import json, os, platform, sys
raw = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rev, binp, stamp = sys.argv[2], sys.argv[3], sys.argv[4]
get = lambda m: [r for r in raw if r["mode"] == m]
cfg, seed, stop = get("config")[0], get("seed")[0], get("stop")[0]
rows = [r for r in get("sample") if "rss_kb" in r]
total = (get("total") or [None])[0]
env = lambda k: float(os.environ[k])
cpu = [l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")]
mb = lambda kb: kb / 1024

print("# Soak benchmark %s\n" % stamp)
print("Machine: %s, %d CPUs, Linux %s; signpost git %s (%s); server on CPU %s, load generator on CPU %s; "
      "SCHED_RR priority: load generator %s, server %s (0 = off); load average at the end %s.\n"
      % (cpu[0] if cpu else "?", os.cpu_count(), platform.release(), rev, binp, cfg["server_cpu"],
         cfg["client_cpu"], cfg["rt_prio"], cfg["server_rt_prio"], open("/proc/loadavg").read().split()[0]))
print("Load: %s s; registry %s services × %s instances seeded (%s/s) + %s short-lived; DNS %s queries/s "
      "(%s sockets, lost after %s s); churn %s writes/s (%s connections); %s watchers (wait %s s, "
      "reconnecting every 3-6 polls); %s one-shot clients/s; a row every %s s.\n"
      % (cfg["soak_seconds"], cfg["services"], cfg["per_service"], seed["per_second"], cfg["ephemeral"],
         cfg["dns_qps"], cfg["dns_sockets"], cfg["dns_timeout"], cfg["churn_per_sec"], cfg["churn_conns"],
         cfg["watchers"], cfg["poll_wait"], cfg["oneshot_per_sec"], cfg["sample_seconds"]))

if not rows:
    print("**No sample of the server was taken.**")
    sys.exit(0)
ms = lambda us: "–" if us is None else "%.2f" % (us / 1e3)
print("| t (s) | RSS MB | HWM MB | open files | threads | data MB | CPU % | DNS sent | answered | lost | unexpected | DNS p99 ms "
      "| writes ok | write errors | write p99 ms | long-poll returns (woken) | poll errors | watcher connects | one-shot ok / errors |")
print("|" + "---|" * 19)
for r in rows:
    print("| %s | %.1f | %.1f | %d | %d | %.2f | %s | %d | %d | %d | %d | %s | %d | %d | %s | %d (%d) | %d | %d | %d / %d |" % (
        "%.0f%s" % (r["at_s"], " (after)" if r.get("after_load") else ""), mb(r["rss_kb"]), mb(r["hwm_kb"]), r["fds"], r["threads"], r["data_bytes"] / 1e6,
        "–" if r["cpu_pct"] is None else r["cpu_pct"], r["dns_sent"], r["dns_answered"], r["dns_lost"],
        r["dns_unexpected"], ms(r["dns_p99_us"]), r["writes_ok"], r["write_errors"], ms(r["write_p99_us"]),
        r["polls"], r["polls_woken"], r["poll_errors"], r["reconnects"], r["oneshot_ok"], r["oneshot_errors"]))

# drift is judged on the rows under load; the row after it (clients gone) is compared apart
loaded = [r for r in rows if not r.get("after_load")] or rows
end = loaded[-1]["at_s"]
first, second = [r for r in loaded if r["at_s"] < end / 2], [r for r in loaded if r["at_s"] >= end / 2]
def slope(key, scale):  # least squares over the last half, per minute
    pts = [(r["at_s"] / 60, r[key] * scale) for r in second]
    if len(pts) < 2:
        return None
    mx, my = sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts)
    den = sum((x - mx) ** 2 for x, _ in pts)
    return None if den == 0 else sum((x - mx) * (y - my) for x, y in pts) / den
metrics = [("RSS (VmRSS)", "rss_kb", 1 / 1024, "MB", env("RSS_DRIFT_LIMIT")),
           ("open files", "fds", 1, "", env("FD_DRIFT_LIMIT")),
           ("threads", "threads", 1, "", env("THREAD_DRIFT_LIMIT")),
           ("data dir", "data_bytes", 1 / 1e6, "MB", env("DATA_DRIFT_LIMIT"))]
growing = []
print("\n## Summary\n")
print("First: before the load (after seeding); last: %s. " % ("after it, every client gone; (after) in the table"
      if rows[-1].get("after_load") else "the last row before the server was found gone") +
      "Drift: least squares over the rows under load from t = %.0f s (%d rows).\n" % (end / 2, len(second)))
print("| figure | first | last | max | drift over the last half | limit | still growing |")
print("|---|---|---|---|---|---|---|")
for name, key, scale, unit, limit in metrics:
    vals = [r[key] * scale for r in rows]
    s = slope(key, scale)
    grow = s is not None and s > limit and bool(first) and loaded[-1][key] * scale > max(r[key] * scale for r in first)
    if grow:
        growing.append(name)
    fmt = "%.1f" if unit else "%.0f"
    u = (" " + unit) if unit else ""
    print("| %s | %s%s | %s%s | %s%s | %s | %s%s/min | %s |" % (
        name, fmt % vals[0], u, fmt % vals[-1], u, fmt % max(vals), u,
        "n/a" if s is None else "%+.3f%s/min" % (s, u), limit, u, "**yes**" if grow else "no"))
base, after = rows[0]["fds"], rows[-1]["fds"]
if rows[-1].get("after_load"):
    print("| open files before the load → after it (every client gone) | %d | %d | | %s | | |" % (
        base, after, "same" if after <= base else "**%+d** (connections or files still open)" % (after - base)))
print("| peak RSS (VmHWM) | %.1f MB | %.1f MB | | | | |" % (mb(rows[0]["hwm_kb"]), mb(rows[-1]["hwm_kb"])))
cpus = [r["cpu_pct"] for r in rows if r["cpu_pct"] is not None]
if cpus:
    print("| server CPU, %% of one core | | %.1f | %.1f | | | |" % (cpus[-1], max(cpus)))

t = total or {k: sum(r.get(k, 0) for r in get("sample")) for k in ("dns_sent", "dns_answered", "dns_lost", "dns_unexpected",
    "dns_truncated", "dns_late", "dns_skipped", "writes_ok", "write_errors", "writes_skipped", "polls", "polls_woken",
    "poll_errors", "reconnects", "oneshot_ok", "oneshot_errors")}
pc = lambda a, b: "%.3f %%" % (100 * a / b) if b else "–"
errors = t["write_errors"] + t["poll_errors"] + t["oneshot_errors"] + t["dns_unexpected"]
# the load ran for SOAK_SECONDS, or until the server was found gone
run_s = float(cfg["soak_seconds"]) if stop["alive_at_end"] else max((total or rows[-1])["seconds" if total else "at_s"], 1e-3)
print()
print("- Errors: **%d** in all (write errors %d, poll errors %d, one-shot errors %d, unexpected DNS answers %d)."
      % (errors, t["write_errors"], t["poll_errors"], t["oneshot_errors"], t["dns_unexpected"]))
print("- DNS: %d sent (%.0f/s), %d answered, **%d lost (%s)**, %d answered after being counted lost, %d truncated, "
      "%d not sent (the client behind)%s." % (t["dns_sent"], t["dns_sent"] / run_s, t["dns_answered"], t["dns_lost"],
      pc(t["dns_lost"], t["dns_sent"]), t["dns_late"], t["dns_truncated"], t["dns_skipped"],
      "; latency p50 / p99 / p99.9 %s / %s / %s ms" % (ms(t["dns_p50_us"]), ms(t["dns_p99_us"]), ms(t["dns_p999_us"])) if total else ""))
print("- Writes: %d answered as expected (%.0f/s), %d errors, %d not sent (the client behind)%s." % (
      t["writes_ok"], t["writes_ok"] / run_s, t["write_errors"], t["writes_skipped"],
      "; latency p50 / p99 / p99.9 %s / %s / %s ms" % (ms(t["write_p50_us"]), ms(t["write_p99_us"]), ms(t["write_p999_us"])) if total else ""))
print("- Long-polls: %d returns, %d of them woken by a change of their service; %d watcher connections opened; "
      "one-shot clients: %d ok, %d errors." % (t["polls"], t["polls_woken"], t["reconnects"], t["oneshot_ok"], t["oneshot_errors"]))
print("- Server: %s, exit status %s; %d WARN/ERROR log lines%s." % (
      ("alive at the end; SIGTERM → exit in %s ms" % stop["stop_ms"] if stop["stop_ms"] is not None
       else "alive at the end; **still running 15 s after SIGTERM** (killed)") if stop["alive_at_end"] else "**gone before the end**",
      stop["exit"], stop["log_warn_error_lines"], "".join("\n  - `%s`" % l["line"] for l in get("log"))))
if not stop["alive_at_end"] or stop["exit"] != 0:
    verdict = "**the server did not survive the run cleanly**"
elif growing:
    verdict = "**still growing over the last half: %s** (a leak, unless the run was too short to level off%s)" % (
        ", ".join(growing), "; this one, under 5 minutes, is too short to tell" if run_s < 300 else "")
else:
    verdict = "nothing still growing over the last half"
print("\nVerdict: %s; %d errors; %s of DNS queries lost." % (verdict, errors, pc(t["dns_lost"], t["dns_sent"])))
EOF
cp "$T/raw.jsonl" "$RESULTS_DIR/soak-$STAMP.jsonl"
cat "$OUT"
log "wrote $OUT and $RESULTS_DIR/soak-$STAMP.jsonl"
[ "$ALIVE" = true ] || die "the server died during the run (log: $(tail -3 "$T/signpost.log" 2>/dev/null | tr '\n' ' '))"
