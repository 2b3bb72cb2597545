#!/usr/bin/env bash
# bench/replicas.sh — three signpost replicas on a three-member etcd cluster, against etcd
# itself and against the embedded store, in one run on one machine.
#
# Method
#   Setup. Three etcd members (Debian's etcd 3.4: `etcd --name eN --initial-cluster ...`, default
#   heartbeat 100 ms and election timeout 1 s, data dirs in the temp dir on its disk) and three
#   signpost replicas r1..r3 (`signpost serve --config FILE --node-name rN`, registry.backend =
#   "etcd", prefix /signpost/, member_ttl $MEMBER_TTL, timeout 2s), every listener on a free
#   127.0.0.1 port. During (1)-(2) and (4) nothing is pinned: the six servers and the load
#   generator share the machine's CPUs, as they would on one host. The load generator is
#   examples/replica_load.rs (raw HTTP/1.1 and DNS over tokio, the `etcd-client` crate for etcd;
#   it does not link signpost's library).
#   1. Registrations/s through signpost against raw etcd puts, $ROUNDS rounds alternating which
#      goes first, after a warm-up of 1,000 of each (not reported).
#      signpost: $N registrations (`rbR-NNNNN/iK`, $PER_SERVICE per service, distinct addresses)
#      by $CONNS keep-alive HTTP connections dealt round-robin over r1, r2, r3, one PUT in flight
#      each, each answered 200 (committed in etcd and in that replica's DNS). Raw etcd: the same
#      $N keys under /rawbench/ (same length as /signpost/), each value the bytes of signpost's
#      record of rb0-00000/i0 (from the warm-up), written by $CONNS tasks, one put in flight
#      each, over 3 etcd clients (one gRPC channel each, like one per replica) connected to
#      every member. Both
#      report completed writes/s over the run, latency p50/p99, the etcd revisions the run used
#      (one per transaction: writes per revision shows signpost's batching) and the CPU time the
#      etcd members and the replicas used (utime+stime from /proc/<pid>/stat) per write. The
#      figure is the median over rounds of each and the ratio signpost/etcd (target >= 0.7).
#      Each run also gives the share of the machine's CPU that other work took meanwhile (busy
#      time from /proc/stat minus the servers' and the load generator's own), to show noise.
#   2. Write → visible in another replica's DNS: $VIS_SAMPLES times, one after the other, a PUT
#      of a new service `vis-N` on r1, then `vis-N.service.internal` A asked of r2 over UDP in
#      a loop, one query outstanding, until the answer has the record; latency = that answer
#      minus the time the PUT was written. p50/p99/max (target p99 <= 50 ms).
#   Then the registry goes back under 4 MiB: a replica reads it whole in one etcd response when
#   it starts, and the gRPC client refuses a response over 4 MiB (~17,000 registrations of this
#   size), which (3)'s export and (4)'s restarts would meet. Every round's registrations but
#   round 1's are deleted with etcdctl (the replicas follow, as for any removal), and the raw keys.
#   3. DNS CPU per query, etcd backend against the embedded store with the same registrations:
#      the registry is copied out of etcd with `signpost export` and into a new embedded data
#      dir with `signpost import`; an embedded signpost serves it. dnsperf (UDP, EDNS(0), -c 4,
#      pinned to CPU $CLIENT_CPU) asks A of the registered services (100,000 names drawn
#      uniformly, fixed seed) at $DNS_RATE QPS for $DNS_SECONDS s; the server's utime+stime
#      over the run divided by the queries answered is its CPU µs/query. The measured server
#      (r2, or the embedded one) has every thread pinned to CPU $SERVER_CPU (`taskset -a -p`)
#      and SCHED_RR priority $RT_PRIO (as dnsperf) while measured, like bench/dns.sh; both were
#      started unpinned so they run the same number of threads. $DNS_ROUNDS rounds alternating
#      r2, embedded, after a 2 s warm-up of each. Each round's two runs are back to back, so
#      the figure is the median of the rounds' ratios (the host's speed drifts over minutes),
#      over the rounds where dnsperf sent >= 97 % of the rate and < 0.1 % was lost.
#   4. Failover after `kill -9`: the load generator serves a keep-alive HTTP target and records
#      every probe with the replica whose process holds the probing connection (found through
#      /proc/net/tcp and /proc/<pid>/fd); $CHECKS instances with HTTP checks (interval 1s,
#      timeout 500ms) are registered on r1; once every check has been probed twice in a row
#      by the same replica, one replica gets SIGKILL. A check moved when its last probe before
#      the kill came from the killed replica; its failover time is its first probe after the
#      kill (by a survivor). $FAILOVER_ROUNDS rounds: r3, r2, r3, ... killed in turn, each
#      restarted before the next round (it rejoins and takes its share back).
#      Reported: p50 and max over all moved checks (target max <= member_ttl + one interval).
#   A fsync probe (4 KiB write + fsync, 100 times) of the disk under the temp dir gives context
#   for (1): every etcd commit waits for an fsync of its log on each member.
#
# Usage
#   bench/replicas.sh                      # builds signpost and the load generator (release, --features etcd)
#   SIGNPOST_BIN=path bench/replicas.sh    # an existing signpost binary built with --features etcd
#   N=10000 PER_SERVICE=4 CONNS=64 ROUNDS=6 REG_SECONDS=120 VIS_SAMPLES=500 DNS_RATE=20000 \
#   DNS_SECONDS=10 DNS_ROUNDS=3 CHECKS=60 FAILOVER_ROUNDS=3 MEMBER_TTL=3s SERVER_CPU=0 CLIENT_CPU=1 \
#   RT_PRIO=10 bench/replicas.sh                        (the defaults; about 4 minutes)
# Output: a markdown table on stdout, also in bench/results/replicas-<date>.md (raw JSON lines
# in bench/results/replicas-<date>.jsonl, every probe of failover round F in
# bench/results/replicas-<date>-failover-F.tsv: path, ms from the kill, replica index). Needs etcd, etcdctl, dnsperf, taskset, python3
# (installed with apt-get when missing). Only 127.0.0.1; every step is bounded in time; every
# process the script started is stopped by its PID on exit.

set -euo pipefail

BUILT=""

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N=${N:-10000}
PER_SERVICE=${PER_SERVICE:-4}
CONNS=${CONNS:-64}
ROUNDS=${ROUNDS:-6}
REG_SECONDS=${REG_SECONDS:-120}
VIS_SAMPLES=${VIS_SAMPLES:-500}
DNS_RATE=${DNS_RATE:-20000}
DNS_SECONDS=${DNS_SECONDS:-10}
DNS_ROUNDS=${DNS_ROUNDS:-3}
CHECKS=${CHECKS:-60}
FAILOVER_ROUNDS=${FAILOVER_ROUNDS:-3}
MEMBER_TTL=${MEMBER_TTL:-3s}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
RESULTS_DIR=${RESULTS_DIR:-$ROOT/bench/results}
# RT_PRIO=N (default 10; 0 = off; root only): in (3) the measured server and dnsperf run under
# SCHED_RR priority N (chrt -r), as in bench/dns.sh, so other work on a shared machine does not
# take their CPU mid-run. Nothing else runs under it.
RT_PRIO=${RT_PRIO:-10}
chrt -r "$RT_PRIO" true 2>/dev/null || RT_PRIO=0

log() { printf '[replicas.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- tools -----------------------------------------------------------------------------------
export PATH="$PATH:/usr/sbin:/sbin"
need_pkgs=()
command -v etcd >/dev/null || need_pkgs+=(etcd-server)
command -v etcdctl >/dev/null || need_pkgs+=(etcd-client)
command -v dnsperf >/dev/null || need_pkgs+=(dnsperf)
command -v taskset >/dev/null || need_pkgs+=(util-linux)
command -v python3 >/dev/null || need_pkgs+=(python3)
[ -n "${SIGNPOST_BIN:-}" ] || command -v protoc >/dev/null || need_pkgs+=(protobuf-compiler)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    log "installing ${need_pkgs[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi
[ "$(nproc)" -ge 2 ] || log "warning: fewer than 2 CPUs; dnsperf and the server will share one"

if [ -z "${SIGNPOST_BIN:-}" ]; then
    log "building (cargo build --release --features etcd --bin signpost --example replica_load)"
    (cd "$ROOT" && cargo build --release --features etcd --bin signpost --example replica_load >&2)
    SIGNPOST_BIN=$ROOT/target/release/signpost; BUILT=1
else
    log "building the load generator (cargo build --release --features etcd --example replica_load)"
    (cd "$ROOT" && cargo build --release --features etcd --example replica_load >&2)
fi
LOAD=${REPLICA_LOAD_BIN:-$ROOT/target/release/examples/replica_load}
[ -x "$SIGNPOST_BIN" ] || die "no signpost binary at $SIGNPOST_BIN"

# --- temp dir, process bookkeeping --------------------------------------------------------------
T=$(mktemp -d "${TMPDIR:-/tmp}/signpost-replicas.XXXXXX")
PIDS=()   # every process started here, stopped by PID on exit
cleanup() {
    local rc=$? i p
    # Newest first: the replicas stop (and leave) while etcd still answers.
    for (( i = ${#PIDS[@]} - 1; i >= 0; i-- )); do
        p=${PIDS[i]}
        kill -TERM "$p" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
    done
    if [ -z "${KEEP_TMP:-}" ]; then rm -rf "$T"; else log "kept $T"; fi
    exit $rc
}
trap cleanup EXIT
# forget PID: a process that has exited and been waited for; its PID may be reused, so it is
# no longer ours to signal.
forget() {
    local keep=() p
    for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}
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

: >"$T/raw.jsonl"
record() { echo "$1" >>"$T/raw.jsonl"; }

# --- python helpers (CPU ticks, etcd revision, dnsperf, report) -----------------------------------
cat >"$T/helper.py" <<'PYEOF'
import json, os, random, re, subprocess, sys, time
CLK = os.sysconf("SC_CLK_TCK")

def ticks(pids):
    """utime+stime (all threads) of each PID, in seconds."""
    out = []
    for p in pids:
        try:
            with open("/proc/%s/stat" % p) as f:
                rest = f.read().rsplit(")", 1)[1].split()
            out.append((int(rest[11]) + int(rest[12])) / CLK)
        except OSError:
            out.append(0.0)
    return out

def cmd_ticks(args):
    print(json.dumps(ticks(args)))

def cmd_busy(args):
    """CPU seconds the whole machine spent busy (not idle, not in I/O wait), all CPUs."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    print((sum(v) - v[3] - v[4]) / CLK)

def cmd_queries(args):
    """A dnsperf query file: A of prefix-NNNNN.service.internal for each round's prefix."""
    path, services, prefixes = args[0], int(args[1]), args[2].split(",")
    rnd = random.Random(20261205)
    with open(path, "w") as f:
        for _ in range(100000):
            f.write("%s-%05d.service.internal A\n" % (rnd.choice(prefixes), rnd.randrange(services)))

def cmd_gone(args):
    """Waits (at most SECONDS) until NAME A is NXDOMAIN at 127.0.0.1:PORT."""
    import socket, struct
    port, name, seconds = int(args[0]), args[1], float(args[2])
    q = struct.pack(">HHHHHH", 7, 0, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\0" + struct.pack(">HH", 1, 1)
    deadline = time.monotonic() + seconds
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.5)
    while time.monotonic() < deadline:
        try:
            s.sendto(q, ("127.0.0.1", port)); m = s.recv(4096)
            if m[:2] == q[:2] and m[3] & 0xF == 3:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit("%s still answered at port %d after %ss" % (name, port, seconds))

def cmd_dnsperf(args):
    """dnsperf at a fixed rate against PORT; the server's CPU µs per answered query."""
    pid, port, qfile, rate, seconds, cpu, rt = args[0], args[1], args[2], args[3], int(args[4]), args[5], int(args[6])
    cmd = (["chrt", "-r", str(rt)] if rt > 0 else []) + ["taskset", "-c", cpu, "dnsperf", "-s", "127.0.0.1", "-p", port, "-d", qfile,
           "-l", str(seconds), "-c", "4", "-T", "1", "-q", "2000", "-t", "1", "-e", "-Q", rate]
    t0 = ticks([pid])[0]; w0 = time.monotonic()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=seconds + 30)
    wall = time.monotonic() - w0; t1 = ticks([pid])[0]
    out = p.stdout
    def num(label):
        m = re.search(r"%s:\s+([\d.]+)" % re.escape(label), out)
        if not m: raise SystemExit("dnsperf output lacks %r:\n%s" % (label, out))
        return float(m.group(1))
    sent, done, lost = num("Queries sent"), num("Queries completed"), num("Queries lost")
    noerror = int(re.search(r"NOERROR\s+(\d+)", out).group(1)) if "NOERROR" in out else 0
    # dnsperf could not offer the rate, or the server lost answers: other work took the CPU
    disturbed = sent < 0.97 * float(rate) * seconds or lost > 0.001 * sent
    print(json.dumps({"sent": int(sent), "completed": int(done), "lost": int(lost), "disturbed": disturbed,
                      "noerror": noerror, "qps": num("Queries per second"),
                      "server_cpu_s": round(t1 - t0, 3), "server_util": round((t1 - t0) / wall, 3),
                      "us_per_query": round(1e6 * (t1 - t0) / done, 3) if done else None}))

def cmd_report(args):
    import platform, statistics
    raw = [json.loads(l) for l in open(args[0])]
    meta = json.loads(args[1])
    get = lambda m: [r for r in raw if r.get("mode") == m]
    med = statistics.median
    fs = get("fsync")[0]
    sp = [r for r in get("register")]
    et = [r for r in get("etcd_put")]
    vis = get("visibility")[0]
    dns = get("dns")
    fo = get("failover")
    cpu = [l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")]
    print("# Replicas on etcd %s\n" % meta["stamp"])
    print("Machine: %s, %d CPUs, Linux %s (shared with other work: load average %s before, %s after); "
          "signpost git %s (%s); etcd %s. Command: `%s`.\n" % (
          cpu[0] if cpu else "?", os.cpu_count(), platform.release(), meta["load_before"],
          open("/proc/loadavg").read().split()[0], meta["rev"], meta["bin"], meta["etcd"], meta["command"]))
    print("Temp dir disk (etcd's data dirs): fsync of a 4 KiB write p50 %.2f ms, p99 %.2f ms.\n"
          % (fs["p50_ms"], fs["p99_ms"]))
    ok = lambda c: "yes" if c else "**no**"
    sp_rate, et_rate = med([r["per_second"] for r in sp]), med([r["per_second"] for r in et])
    ratio = sp_rate / et_rate if et_rate else 0
    per_w = lambda r, k: 1e6 * r[k] / max(1, r["done"])
    rows = [
        ("registrations/s through signpost (%d rounds × %d, %s connections over 3 replicas; median)"
         % (len(sp), meta["n"], meta["conns"]), "%.0f" % sp_rate, "", ""),
        ("raw etcd puts/s, same key/value size (%d + %d bytes) and concurrency (median)"
         % (et[0]["key_bytes"], et[0]["value_bytes"]), "%.0f" % et_rate, "", ""),
        ("ratio signpost / raw etcd", "%.2f" % ratio, "≥ 0.7", ok(ratio >= 0.7)),
        ("PUT latency p50 / p99, signpost (median of rounds)", "%.1f / %.1f ms" % (
            med([r["p50_us"] for r in sp]) / 1e3, med([r["p99_us"] for r in sp]) / 1e3), "", ""),
        ("put latency p50 / p99, raw etcd (median of rounds)", "%.1f / %.1f ms" % (
            med([r["p50_us"] for r in et]) / 1e3, med([r["p99_us"] for r in et]) / 1e3), "", ""),
        ("writes per etcd revision (transaction): signpost / raw", "%.1f / %.1f" % (
            med([r["done"] / max(1, r["revisions"]) for r in sp]), med([r["done"] / max(1, r["revisions"]) for r in et])), "", ""),
        ("etcd members' CPU µs per write: signpost / raw", "%.0f / %.0f" % (
            med([per_w(r, "etcd_cpu_s") for r in sp]), med([per_w(r, "etcd_cpu_s") for r in et])), "", ""),
        ("replicas' CPU µs per registration (all three)", "%.0f" % med([per_w(r, "replicas_cpu_s") for r in sp]), "", ""),
        ("CPU µs per write, etcd + replicas + load generator: signpost / raw", "%.0f / %.0f" % (
            med([1e6 * (r["etcd_cpu_s"] + r["replicas_cpu_s"] + r["load_cpu_s"]) / max(1, r["done"]) for r in sp]),
            med([1e6 * (r["etcd_cpu_s"] + r["replicas_cpu_s"] + r["load_cpu_s"]) / max(1, r["done"]) for r in et])), "", ""),
        ("CPUs these processes kept busy during the runs (of %d): signpost / raw" % os.cpu_count(), "%.2f / %.2f" % (
            med([(r["etcd_cpu_s"] + r["replicas_cpu_s"] + r["load_cpu_s"]) / r["seconds"] for r in sp]),
            med([(r["etcd_cpu_s"] + r["replicas_cpu_s"] + r["load_cpu_s"]) / r["seconds"] for r in et])), "", ""),
        ("write on r1 → visible in r2's DNS, p50 (%d samples)" % vis["ok"], "%.2f ms" % (vis["visible_p50_us"] / 1e3), "", ""),
        ("write on r1 → visible in r2's DNS, p99", "%.2f ms" % (vis["visible_p99_us"] / 1e3), "≤ 50 ms", ok(vis["visible_p99_us"] <= 50000)),
        ("write on r1 → visible in r2's DNS, max", "%.2f ms" % (vis["visible_max_us"] / 1e3), "", ""),
        ("PUT latency on r1, one at a time, p50 / p99", "%.2f / %.2f ms" % (vis["put_p50_us"] / 1e3, vis["put_p99_us"] / 1e3), "", ""),
    ]
    # The host's speed drifts over a minute, so each round's two runs (back to back) are
    # compared with each other, and the median taken over those ratios; a round with a
    # disturbed run is left out when clean rounds exist.
    rounds = {}
    for r in dns:
        rounds.setdefault(r["round"], {})[r["server"]] = r
    pairs = [(x["etcd"], x["embedded"]) for _, x in sorted(rounds.items()) if "etcd" in x and "embedded" in x]
    clean = [p for p in pairs if not (p[0].get("disturbed") or p[1].get("disturbed"))] or pairs
    if clean:
        e, m = med([p[0]["us_per_query"] for p in clean]), med([p[1]["us_per_query"] for p in clean])
        rows.append(("DNS server CPU µs/query at %s QPS: etcd replica / embedded (median of %d rounds)" % (meta["dns_rate"], len(clean)),
                     "%.2f / %.2f" % (e, m), "", ""))
        rows.append(("ratio etcd replica / embedded, median of the rounds' ratios (%s)" % ", ".join(
            "%.2f" % (p[0]["us_per_query"] / p[1]["us_per_query"]) for p in clean),
            "%.2f" % med([p[0]["us_per_query"] / p[1]["us_per_query"] for p in clean]), "within noise", ""))
    moved = sorted(x for r in fo for x in r["moved_ms"])
    if moved:
        p50 = moved[(len(moved) - 1) // 2] if len(moved) % 2 else (moved[len(moved) // 2 - 1] + moved[len(moved) // 2]) / 2
        limit = meta["ttl_ms"] + 1000
        rows.append(("failover after kill -9: checks moved (%d rounds, %d checks)" % (len(fo), meta["checks"]),
                     "%d" % len(moved), "", ""))
        rows.append(("failover: kill → first probe by a survivor, p50", "%.2f s" % (p50 / 1e3), "", ""))
        rows.append(("failover: kill → first probe by a survivor, max", "%.2f s" % (moved[-1] / 1e3),
                     "≤ %.0f s" % (limit / 1e3), ok(moved[-1] <= limit)))
    print("| figure | measured | target | met |")
    print("|---|---|---|---|")
    for r in rows:
        print("| %s | %s | %s | %s |" % r)
    print("\nRounds (writes/s, signpost / raw etcd; in brackets the share of the machine's CPU other "
          "work took during each run, approximate): " + "; ".join(
        "%.0f [%.0f %%] / %.0f [%.0f %%]" % (a["per_second"], 100 * a.get("other_cpu_share", 0), b["per_second"],
                                         100 * b.get("other_cpu_share", 0)) for a, b in zip(sp, et)) + ".")
    print("Errors: signpost %d, raw etcd %d; visibility samples failed: %d." % (
        sum(r["errors"] for r in sp), sum(r["errors"] for r in et), vis["failed"]))
    rs = get("registry_size")
    if rs:
        print("Registry in etcd after the registration rounds: %d keys, %.1f MB of keys and values; all but "
              "round 1's registrations were then deleted (see the method)." % (rs[0]["keys"], rs[0]["bytes"] / 1e6))
    keys, el = get("keys"), get("etcd_log")
    if keys:
        print("Health keys in etcd after the registrations (none have checks): %d." % keys[0]["health_keys"])
    if el:
        print("etcd's logs: %d warnings of late heartbeats, slow applies or slow fdatasync; "
              "leader elected %d times (1: only at start-up)." % (el[0]["warnings"], el[0]["leader_elections_seen"]))
    if dns:
        print("DNS runs in order (server: µs/query, answered/sent, server CPU; * = disturbed: dnsperf sent "
              "< 97 % of the rate or > 0.1 % lost; its round is left out when there are clean ones): " + "; ".join(
            "%s%s %.2f, %d/%d, %.0f %%" % (r["server"], "*" if r.get("disturbed") else "", r["us_per_query"] or -1,
                                           r["completed"], r["sent"], 100 * r["server_util"]) for r in dns) + ".")
    for r in fo:
        print("Failover round (killed r%d): owned before %s, moved %d (ms: %s), never probed after the kill %d, "
              "the others' first probe after the kill at most %d ms, settled %s."
              % (r["victim"] + 1, r["owned_before"], r["moved"], ", ".join(map(str, r["moved_ms"])),
                 r["never_probed_after"], r["others_first_probe_max_ms"], r["settled"]))

if __name__ == "__main__":
    globals()["cmd_" + sys.argv[1]](sys.argv[2:])
PYEOF
py() { python3 "$T/helper.py" "$@"; }
LOAD_BEFORE=$(cut -d' ' -f1 /proc/loadavg)

# --- fsync probe -------------------------------------------------------------------------------
FSYNC=$(python3 - "$T" <<'EOF'
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

# --- etcd ----------------------------------------------------------------------------------------
# Free ports are found by binding and releasing them, so another program on the machine can
# take one before etcd binds it: then that member exits, and the cluster is started again on
# new ports (3 attempts).
ETCD_PIDS=(); ENDPOINTS=()
ctl() { ETCDCTL_API=3 timeout 20 etcdctl --endpoints "$EPS" --command-timeout 10s "$@"; }
start_etcd() {  # returns 1 when a member exited or the cluster was not healthy within 30 s
    local i initial="" peers=() deadline=$(( SECONDS + 30 ))
    rm -rf "$T/etcd"
    for i in 0 1 2; do
        peers[i]=$(freeport)
        ENDPOINTS[i]="http://127.0.0.1:$(freeport)"
        initial+="${initial:+,}e$i=http://127.0.0.1:${peers[i]}"
    done
    EPS=$(IFS=,; echo "${ENDPOINTS[*]}")
    for i in 0 1 2; do
        etcd --name "e$i" --data-dir "$T/etcd/e$i" \
            --listen-client-urls "${ENDPOINTS[i]}" --advertise-client-urls "${ENDPOINTS[i]}" \
            --listen-peer-urls "http://127.0.0.1:${peers[i]}" --initial-advertise-peer-urls "http://127.0.0.1:${peers[i]}" \
            --initial-cluster "$initial" --initial-cluster-token "bench-$$-$SECONDS" --initial-cluster-state new \
            --log-level warn >"$T/e$i.log" 2>&1 &
        ETCD_PIDS[i]=$!; PIDS+=($!)
    done
    while [ "$SECONDS" -lt "$deadline" ]; do
        for i in 0 1 2; do
            kill -0 "${ETCD_PIDS[i]}" 2>/dev/null || { log "etcd e$i exited: $(grep -m1 -i -e error -e fatal "$T/e$i.log" | cut -c1-200)"; return 1; }
        done
        ETCDCTL_API=3 timeout 5 etcdctl --endpoints "$EPS" --command-timeout 2s endpoint health >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    log "etcd not healthy within 30 s"; return 1
}
stop_etcd() {
    local p
    for p in "${ETCD_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; forget "$p"; done
}
for attempt in 1 2 3; do
    start_etcd && break
    stop_etcd
    [ "$attempt" -lt 3 ] || die "etcd did not start in 3 attempts"
done
ETCD_VERSION=$(etcd --version | awk '/etcd Version/{print $3}')
log "etcd $ETCD_VERSION: $EPS"
revision() { ctl endpoint status -w json | python3 -c 'import json,sys; print(max(e["Status"]["header"]["revision"] for e in json.load(sys.stdin)))'; }

# --- replicas ------------------------------------------------------------------------------------
mkdir -p "$T/zones"
TTL_MS=$(python3 -c 'import sys; s=sys.argv[1]; print(int(float(s[:-2]) if s.endswith("ms") else float(s[:-1]) * 1000))' "$MEMBER_TTL")
cat >"$T/replica.toml" <<EOF
[dns]
listen = ["127.0.0.1:0"]
zones_dir = "$T/zones"
[http]
listen = "127.0.0.1:0"
[registry]
backend = "etcd"
[registry.etcd]
endpoints = [$(printf '"%s",' "${ENDPOINTS[@]}" | sed 's/,$//')]
prefix = "/signpost/"
member_ttl = "$MEMBER_TTL"
timeout = "2s"
EOF
cat >"$T/embedded.toml" <<EOF
[dns]
listen = ["127.0.0.1:0"]
zones_dir = "$T/zones"
[http]
listen = "127.0.0.1:0"
EOF

REP_PID=(); REP_HTTP=(); REP_DNS=()
# wait_ready LOGFILE PID: prints "DNS HTTP" from the ready line (30 s at most)
wait_ready() {
    for _ in $(seq 300); do
        if grep -q "signpost ready" "$1"; then
            grep "signpost ready" "$1" | tail -1 | sed -E 's/.*dns=([^ ]+).*http=([^ ]+).*/\1 \2/'
            return 0
        fi
        kill -0 "$2" 2>/dev/null || { tail -20 "$1" >&2; die "signpost ($1) exited"; }
        sleep 0.1
    done
    tail -20 "$1" >&2; die "signpost ($1) not ready within 30 s"
}
start_replica() {  # start_replica I (0-based): sets REP_PID/REP_HTTP/REP_DNS[I]
    local i=$1 log="$T/r$(( $1 + 1 )).log"
    : >"$log"
    RUST_LOG=info "$SIGNPOST_BIN" serve --config "$T/replica.toml" --node-name "r$(( i + 1 ))" >>"$log" 2>&1 &
    REP_PID[i]=$!; PIDS+=($!)
    local addrs
    addrs=$(wait_ready "$log" "${REP_PID[i]}")
    REP_DNS[i]=${addrs% *}; REP_HTTP[i]=${addrs#* }
    log "replica r$(( i + 1 )): pid ${REP_PID[i]}, dns ${REP_DNS[i]}, http ${REP_HTTP[i]}"
}
for i in 0 1 2; do start_replica "$i"; done
HTTPS=$(IFS=,; echo "${REP_HTTP[*]}")

# --- 1. registrations: signpost against raw etcd ---------------------------------------------------
# measure MODE PREFIX: one run of the load generator, with etcd revisions and CPU around it
measure() {
    local mode=$1 r=$2 rev0 rev1 t0 t1 b0 b1 out
    rev0=$(revision); t0=$(py ticks "${ETCD_PIDS[@]}" "${REP_PID[@]}"); b0=$(py busy)
    if [ "$mode" = signpost ]; then
        out=$(timeout $(( REG_SECONDS + 60 )) "$LOAD" register --http "$HTTPS" --to "$N" \
            --per-service "$PER_SERVICE" --conns "$CONNS" --deadline "$REG_SECONDS" --service-prefix "rb$r")
    else
        out=$(timeout $(( REG_SECONDS + 60 )) "$LOAD" etcd-put --endpoints "$EPS" --like /signpost/instances/rb0-00000/i0 \
            --key-prefix /rawbench/ --service-prefix "rb$r" --to "$N" --per-service "$PER_SERVICE" \
            --conns "$CONNS" --clients 3 --deadline "$REG_SECONDS")
    fi
    b1=$(py busy); t1=$(py ticks "${ETCD_PIDS[@]}" "${REP_PID[@]}"); rev1=$(revision)
    out=$(python3 -c 'import json,sys
r = json.loads(sys.argv[1]); a = json.loads(sys.argv[2]); b = json.loads(sys.argv[3])
d = [y - x for x, y in zip(a, b)]
r.update(round=int(sys.argv[4]), revisions=int(sys.argv[6]) - int(sys.argv[5]),
         etcd_cpu_s=round(sum(d[:3]), 3), replicas_cpu_s=round(sum(d[3:]), 3))
busy = float(sys.argv[8]) - float(sys.argv[7])
r["other_cpu_share"] = round(max(0.0, busy - sum(d) - r["load_cpu_s"]) / r["seconds"] / (__import__("os").cpu_count() or 1), 3)
print(json.dumps(r))' "$out" "$t0" "$t1" "$r" "$rev0" "$rev1" "$b0" "$b1")
    record "$out"
    log "round $r $mode: $out"
}
log "registrations: $ROUNDS rounds of $N through signpost and $N raw etcd puts, $CONNS in flight"
# Warm-up (not reported): connections, etcd's first commits; it also writes the record whose
# value the raw puts copy (rb0-00000/i0: the same length as every round's).
timeout 120 "$LOAD" register --http "$HTTPS" --to 1000 --per-service "$PER_SERVICE" --conns "$CONNS" \
    --deadline 60 --service-prefix rb0 >/dev/null
timeout 120 "$LOAD" etcd-put --endpoints "$EPS" --like /signpost/instances/rb0-00000/i0 --key-prefix /rawbench/ \
    --service-prefix rb0 --to 1000 --per-service "$PER_SERVICE" --conns "$CONNS" --deadline 60 >/dev/null
for r in $(seq "$ROUNDS"); do
    if [ $(( r % 2 )) -eq 1 ]; then measure signpost "$r"; measure etcd "$r"
    else measure etcd "$r"; measure signpost "$r"; fi
done
# (etcd 3.4's etcdctl has no --count-only; the JSON reply counts the whole range)
HEALTH_KEYS=$(ctl get /signpost/health/ --prefix --keys-only --limit 1 -w json | python3 -c 'import json,sys; print(json.load(sys.stdin).get("count", 0))')
record "{\"mode\":\"keys\",\"health_keys\":$HEALTH_KEYS}"

# --- 2. visibility across replicas -----------------------------------------------------------------
log "visibility: $VIS_SAMPLES samples, PUT on r1, DNS of r2"
VIS=$(timeout 600 "$LOAD" visibility --http "${REP_HTTP[0]}" --dns "${REP_DNS[1]}" --samples "$VIS_SAMPLES")
record "$VIS"
log "visibility: $VIS"

# --- the registry back under 4 MiB ------------------------------------------------------------------
# A replica reads the whole registry in one etcd response when it starts (and `export` does
# too), and the gRPC client refuses a response over 4 MiB (~17,000 registrations of this
# size): see BENCHMARKS.md. So before anything reads it whole (the export below, the replica
# restarted in the failover rounds), every round's registrations but round 1's are deleted
# (one etcd delete per round, followed by the replicas like any removal) and the raw keys go.
record "$(ctl get /signpost/ --prefix -w json | python3 -c 'import base64, json, sys
kvs = json.load(sys.stdin).get("kvs", [])
print(json.dumps({"mode": "registry_size", "keys": len(kvs),
                  "bytes": sum(len(base64.b64decode(k["key"])) + len(base64.b64decode(k.get("value", ""))) for k in kvs)}))')"
ctl del --prefix /rawbench/ >/dev/null
for r in 0 $(seq 2 "$ROUNDS"); do ctl del --prefix "/signpost/instances/rb$r-" >/dev/null; done
py gone "${REP_DNS[1]##*:}" "rb0-00000.service.internal" 10
[ "$ROUNDS" -lt 2 ] || py gone "${REP_DNS[1]##*:}" "rb$ROUNDS-00000.service.internal" 10

# --- 3. DNS CPU per query: etcd replica against embedded --------------------------------------------
if [ "$DNS_ROUNDS" -gt 0 ]; then
    log "DNS CPU: export from etcd, import into an embedded store"
    timeout 120 "$SIGNPOST_BIN" export --config "$T/replica.toml" >"$T/registry.jsonl"
    timeout 300 "$SIGNPOST_BIN" import "$T/registry.jsonl" --data-dir "$T/embedded-data" >&2
    RUST_LOG=info "$SIGNPOST_BIN" serve --config "$T/embedded.toml" --data-dir "$T/embedded-data" >"$T/embedded.log" 2>&1 &
    EMB_PID=$!; PIDS+=($!)
    addrs=$(wait_ready "$T/embedded.log" "$EMB_PID"); EMB_DNS=${addrs% *}
    log "embedded signpost: pid $EMB_PID, dns $EMB_DNS ($(wc -l <"$T/registry.jsonl") registrations)"
    py queries "$T/queries.txt" $(( N / PER_SERVICE )) rb1
    ALL_CPUS="0-$(( $(nproc) - 1 ))"
    dns_run() {  # dns_run NAME PID ADDR SECONDS: pinned (and SCHED_RR) while measured only
        taskset -a -p -c "$SERVER_CPU" "$2" >/dev/null
        [ "$RT_PRIO" -eq 0 ] || chrt -a -r -p "$RT_PRIO" "$2" >/dev/null
        local out
        out=$(py dnsperf "$2" "${3##*:}" "$T/queries.txt" "$DNS_RATE" "$4" "$CLIENT_CPU" "$RT_PRIO")
        [ "$RT_PRIO" -eq 0 ] || chrt -a -o -p 0 "$2" >/dev/null
        taskset -a -p -c "$ALL_CPUS" "$2" >/dev/null
        echo "$out"
    }
    dns_run etcd "${REP_PID[1]}" "${REP_DNS[1]}" 2 >/dev/null
    dns_run embedded "$EMB_PID" "$EMB_DNS" 2 >/dev/null
    for r in $(seq "$DNS_ROUNDS"); do
        for s in etcd embedded; do
            if [ "$s" = etcd ]; then out=$(dns_run etcd "${REP_PID[1]}" "${REP_DNS[1]}" "$DNS_SECONDS")
            else out=$(dns_run embedded "$EMB_PID" "$EMB_DNS" "$DNS_SECONDS"); fi
            out=$(python3 -c 'import json,sys; r = json.loads(sys.argv[1]); r.update(mode="dns", server=sys.argv[2], round=int(sys.argv[3])); print(json.dumps(r))' "$out" "$s" "$r")
            record "$out"
            log "DNS round $r $s: $out"
        done
    done
    kill -TERM "$EMB_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$EMB_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$EMB_PID" 2>/dev/null || true
    wait "$EMB_PID" 2>/dev/null || true
    forget "$EMB_PID"
fi

# --- 4. failover after kill -9 ------------------------------------------------------------------------
TARGET_PORT=$(freeport)
for f in $(seq "$FAILOVER_ROUNDS"); do
    victim=$(( 3 - ((f - 1) % 2) ))   # r3, then r2, r3, ...
    v=$(( victim - 1 ))
    log "failover round $f: $CHECKS checks, kill -9 r$victim (pid ${REP_PID[v]})"
    out=$(timeout 120 "$LOAD" failover --http "${REP_HTTP[0]}" --target-port "$TARGET_PORT" --checks "$CHECKS" \
        --pids "$(IFS=,; echo "${REP_PID[*]}")" --victim "$v" --interval 1s --observe 8 --settle 30 --dump "$T/failover-$f.tsv")
    wait "${REP_PID[v]}" 2>/dev/null || true
    forget "${REP_PID[v]}"
    out=$(python3 -c 'import json,sys; r = json.loads(sys.argv[1]); r["round"] = int(sys.argv[2]); print(json.dumps(r))' "$out" "$f")
    record "$out"
    log "failover round $f: $out"
    start_replica "$v"
done

# etcd's own complaints during the run (overload shows as late heartbeats and slow applies),
# and how many times a leader was elected (1 = no election after the first).
ETCD_WARN=$(cat "$T"/e*.log | grep -c -e "took too long" -e "failed to send out heartbeat" -e "slow fdatasync" || true)
ELECTIONS=$(cat "$T"/e*.log | grep "elected leader" | grep -o "at term [0-9]*" | sort -u | wc -l)
record "{\"mode\":\"etcd_log\",\"warnings\":$ETCD_WARN,\"leader_elections_seen\":$ELECTIONS}"

# --- report ------------------------------------------------------------------------------------------
STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
mkdir -p "$RESULTS_DIR"
GIT_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")
git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || GIT_REV="$GIT_REV+dirty"
[ -n "$BUILT" ] || GIT_REV="not built here; binary of $(date -u -r "$SIGNPOST_BIN" +%Y-%m-%dT%H:%MZ), checkout at $GIT_REV"
COMMAND="RT_PRIO=$RT_PRIO N=$N PER_SERVICE=$PER_SERVICE CONNS=$CONNS ROUNDS=$ROUNDS VIS_SAMPLES=$VIS_SAMPLES DNS_RATE=$DNS_RATE DNS_SECONDS=$DNS_SECONDS DNS_ROUNDS=$DNS_ROUNDS CHECKS=$CHECKS FAILOVER_ROUNDS=$FAILOVER_ROUNDS MEMBER_TTL=$MEMBER_TTL bench/replicas.sh"
META=$(python3 -c 'import json,sys; print(json.dumps(dict(zip(["stamp","rev","bin","etcd","load_before","command"], sys.argv[1:7]), n=int(sys.argv[7]), conns=sys.argv[8], dns_rate=sys.argv[9], ttl_ms=int(sys.argv[10]), checks=int(sys.argv[11]))))' \
    "$STAMP" "$GIT_REV" "$SIGNPOST_BIN" "$ETCD_VERSION" "$LOAD_BEFORE" "$COMMAND" "$N" "$CONNS" "$DNS_RATE" "$TTL_MS" "$CHECKS")
OUT="$RESULTS_DIR/replicas-$STAMP.md"
py report "$T/raw.jsonl" "$META" >"$OUT"
cp "$T/raw.jsonl" "$RESULTS_DIR/replicas-$STAMP.jsonl"
for f in "$T"/failover-*.tsv; do [ -e "$f" ] && cp "$f" "$RESULTS_DIR/replicas-$STAMP-$(basename "$f")"; done
cat "$OUT"
log "wrote $OUT and $RESULTS_DIR/replicas-$STAMP.jsonl"
