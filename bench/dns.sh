#!/usr/bin/env bash
# bench/dns.sh — DNS answer performance of signpost against Knot and NSD, on one machine.
#
# Method
#   Data. 1,000 services svc-0000..svc-0999 x 3 instances i0..i2 (address 10.<N/256>.<N%256>.<10+K>,
#   port 8080+K, weight 1, priority 0), registered through signpost's HTTP API by a python thread
#   pool (16 keep-alive connections). Knot and NSD serve a zone file generated from the same list:
#   zone internal. with SOA (minimum 5) and NS; per service svc-N.service.internal. A x3 and SRV x3
#   ("0 1 PORT iK.svc-N.instance.internal."), _svc-N._tcp.service.internal. SRV x3, and the instance
#   names iK.svc-N.instance.internal. A; every TTL 5. signpost gets the same apex (SOA/NS/ns A) as
#   its zones/internal.zone. Before measuring, a few questions are asked of every server and the
#   answer shapes (RCODE, AA, section counts, A addresses) are compared; differences are printed.
#   Query files (100,000 lines each, names drawn uniformly at random, fixed seed):
#     a     svc-N.service.internal A
#     srv   svc-N.service.internal SRV (half) and _svc-N._tcp.service.internal SRV (half)
#     mix   40% service A, 30% SRV (both forms), 20% instance A (iK.svc-N.instance.internal),
#           10% nosuch-N.service.internal A (NXDOMAIN)
#     nx    nosuch-N.service.internal A, all NXDOMAIN
#   Queries are UDP with EDNS(0) (dnsperf -e, as resolvers send; EDNS=0 for none), RD as dnsperf
#   sets it. Answers compare as follows (printed with every report): Knot's have the same sections
#   as signpost's; NSD (minimal-responses off, its default) adds the apex NS in the authority
#   section and ns.internal's A in the additional section of positive answers (with it on, NSD
#   drops the SRV targets' addresses instead, so the default is the closer match).
#
#   Servers. Each runs alone, pinned with `taskset -c $SERVER_CPU` (default 0), on a free
#   127.0.0.1 port, UDP: signpost `serve --dns-listen` (its worker counts follow the one CPU it is
#   allowed); knotd 3.x with udp-workers 1, tcp-workers 1, background-workers 1; nsd 4.x with
#   server-count 1, rrl-ratelimit 0 (and the whitelist rate 0), pid/db/xfrd/zonelist files in the
#   temp dir. dnsperf runs pinned with `taskset -c $CLIENT_CPU` (default 1), -c 4 clients, 1 thread,
#   -t 1 s timeout.
#
#   Per server x query file:
#   (1) highest QPS with < 0.1 % lost: a closed-loop probe (dnsperf unthrottled, -q 100, which
#       cannot overflow the server's socket) gives capacity C; then open-loop runs at offered rates
#       (-Q rate, -q 2000, -l $SEARCH_SECONDS) bisect between a failing and a passing rate, starting
#       at 0.97 C, for up to $SEARCH_STEPS runs or until the bracket is within 3 %. Pass = lost /
#       sent < 0.1 % and sent >= 97 % of the offered rate (else dnsperf, not the server, was the
#       limit: the row is marked "client-bound"). The figure is the completed QPS of the highest
#       passing run.
#   (2) CPU time per query at a fixed offered rate (a 40k, srv 20k, mix 10k, nx 40k) for
#       $FIXED_SECONDS s: utime+stime of the server's processes (all threads; for NSD its child
#       processes too) from /proc/<pid>/stat before and after the dnsperf run, divided by the
#       queries answered, in microseconds. Marked "overloaded" when more than 0.1 % were lost.
#   For the failing run just above each result, the drops counted on the server's socket
#   (/proc/net/udp) and elsewhere (the host's UDP RcvbufErrors minus those: dnsperf's sockets) say
#   whose receive buffer overflowed: "limit server" or "limit dnsperf" (then the figure is marked
#   as the client's limit). The server's CPU µs/query in the highest passing run is reported too.
#   Every run also records the dnsperf CPU use (rusage of the child), the server's CPU use and
#   how busy the server's CPU was with other processes (from /proc/stat), to show noise.
#   Server and dnsperf run under SCHED_RR priority $RT_PRIO (default 10, when allowed: chrt -r),
#   so other work on a shared machine cannot hold their CPU while they have work (RT throttling
#   still gives others 5 % of each second). With QUIET_WAIT=s the script waits (at most s seconds) before
#   each server start for the machine to be < 15 % busy. Figures taken while other processes used
#   > 10 % of the server's CPU are flagged.
#   Rounds: servers alternate signpost, knot, nsd, signpost, knot, nsd ... ($ROUNDS rounds, default
#   2); the report gives the median over rounds and the ratios signpost/Knot and signpost/NSD of
#   every figure, since absolute numbers on a shared machine drift.
#
# Usage
#   bench/dns.sh                       # builds target/release/signpost, full run (~12 min on 2 cores)
#   SIGNPOST_BIN=path bench/dns.sh     # an existing binary (any build)
#   RT_PRIO=10 EDNS=1 ROUTING=0 QUIET_WAIT=0 ROUNDS=3 FIXED_SECONDS=10 SEARCH_SECONDS=2 SEARCH_STEPS=5 SERVERS="signpost knot nsd" \
#   QUERY_SETS="a srv mix nx" SERVER_CPU=0 CLIENT_CPU=1 bench/dns.sh
# Output: a markdown table on stdout, also written to bench/results/dns-<date>.md, with the raw
# runs (one JSON object a line) in bench/results/dns-<date>.jsonl. Needs knotd, nsd, dnsperf,
# taskset, python3 (installed with apt-get when missing). Only 127.0.0.1; every load is bounded in
# time; all started processes are stopped on exit.

set -euo pipefail

BUILT=""

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${ROUNDS:-2}
SEARCH_SECONDS=${SEARCH_SECONDS:-2}
SEARCH_STEPS=${SEARCH_STEPS:-5}
FIXED_SECONDS=${FIXED_SECONDS:-10}
SERVERS=${SERVERS:-"signpost knot nsd"}
QUERY_SETS=${QUERY_SETS:-"a srv mix nx"}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
RESULTS_DIR=${RESULTS_DIR:-$ROOT/bench/results}
export EDNS=${EDNS:-1}        # dnsperf -e (EDNS(0)); 0 = plain DNS
# ROUTING=1: signpost's instances get weights 1:3:96 and zone metadata, and its config a
# dns.locality holding the client (CONTRACT §2 "Routing"), so every service answer takes the
# zone path with weighted schedules; ROUTING=weights: the weights alone; ROUTING=meta: the
# zone metadata alone (served as TXT at the instance names; equal weights, no dns.locality:
# plain rotation over the same registry as ROUTING=1); 0 (default): equal weights, no
# metadata, no locality (plain rotation).
export ROUTING=${ROUTING:-0}
# RT_PRIO=N (default 10; 0 = off; needs root, else off) runs the server and dnsperf under the
# SCHED_RR real-time policy at priority N (chrt -r): on a machine shared with other work (other
# cgroups get their fair share whatever the nice level) they then take their CPU when they need
# it. The kernel's RT throttling (sched_rt_runtime_us, 95 % by default) still leaves each CPU to
# others 5 % of the time. SCHED_RR rather than SCHED_FIFO: its time slices keep one thread of a
# process from starving the others.
RT_PRIO=${RT_PRIO:-10}
RT=(); if [ "$RT_PRIO" -gt 0 ] && chrt -r "$RT_PRIO" true 2>/dev/null; then RT=(chrt -r "$RT_PRIO"); else RT_PRIO=0; fi
QUIET_WAIT=${QUIET_WAIT:-0}

log() { printf '[dns.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- tools -----------------------------------------------------------------------------------
need_pkgs=()
command -v dnsperf >/dev/null || need_pkgs+=(dnsperf)
{ command -v knotd >/dev/null || [ -x /usr/sbin/knotd ]; } || need_pkgs+=(knot)
{ command -v nsd >/dev/null || [ -x /usr/sbin/nsd ]; } || need_pkgs+=(nsd)
command -v taskset >/dev/null || need_pkgs+=(util-linux)
command -v python3 >/dev/null || need_pkgs+=(python3)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    log "installing ${need_pkgs[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin:/sbin"
[ "$(nproc)" -ge 2 ] || log "warning: fewer than 2 CPUs; server and dnsperf will share one"

if [ -z "${SIGNPOST_BIN:-}" ]; then
    log "building signpost (cargo build --release --bin signpost)"
    (cd "$ROOT" && cargo build --release --bin signpost >&2)
    SIGNPOST_BIN=$ROOT/target/release/signpost; BUILT=1
fi
[ -x "$SIGNPOST_BIN" ] || die "no signpost binary at $SIGNPOST_BIN"

# --- temp dir, process bookkeeping --------------------------------------------------------------
T=$(mktemp -d "${TMPDIR:-/tmp}/signpost-dnsbench.XXXXXX")
PIDS=()
cleanup() {
    local rc=$?
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
    done
    if [ -z "${KEEP_TMP:-}" ]; then rm -rf "$T"; else log "kept $T"; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- python helper (generation, registration, dnsperf runs, CPU accounting, report) -----------
cat >"$T/bench.py" <<'PYEOF'
import concurrent.futures, http.client, json, os, random, re, socket, statistics, struct
import subprocess, sys, time

N_SVC, N_INST = 1000, 3
ROUTING = {"0": None}.get(os.environ.get("ROUTING", "0"), os.environ.get("ROUTING"))
FIXED = {"a": 40000, "srv": 20000, "mix": 10000, "nx": 40000}
LOSS_MAX = 0.001
CLK = os.sysconf("SC_CLK_TCK")

def svc(n): return "svc-%04d" % n
def addr(n, k): return "10.%d.%d.%d" % (n // 256, n % 256, 10 + k)
def port(k): return 8080 + k

APEX = """$ORIGIN internal.
$TTL 5
@   IN SOA ns.internal. hostmaster.internal. 2026112301 3600 600 86400 5
@   IN NS  ns.internal.
ns  IN A   127.0.0.1
"""

def gen(d):
    os.makedirs(d + "/sp-zones", exist_ok=True)
    with open(d + "/sp-zones/internal.zone", "w") as f:
        f.write(APEX)
    with open(d + "/internal.zone", "w") as f:
        f.write(APEX)
        for n in range(N_SVC):
            s = svc(n)
            for k in range(N_INST):
                f.write("%s.service IN A %s\n" % (s, addr(n, k)))
            for k in range(N_INST):
                f.write("%s.service IN SRV 0 1 %d i%d.%s.instance.internal.\n" % (s, port(k), k, s))
            for k in range(N_INST):
                f.write("_%s._tcp.service IN SRV 0 1 %d i%d.%s.instance.internal.\n" % (s, port(k), k, s))
            for k in range(N_INST):
                f.write("i%d.%s.instance IN A %s\n" % (k, s, addr(n, k)))
    rnd = random.Random(20261123)
    lines = 100000
    def srv_q():
        n = rnd.randrange(N_SVC)
        return ("%s.service.internal SRV" if rnd.random() < 0.5 else "_%s._tcp.service.internal SRV") % svc(n)
    def nx_q():
        return "nosuch-%d.service.internal A" % rnd.randrange(1000000)
    def mix_q():
        r = rnd.random()
        if r < 0.4: return "%s.service.internal A" % svc(rnd.randrange(N_SVC))
        if r < 0.7: return srv_q()
        if r < 0.9: return "i%d.%s.instance.internal A" % (rnd.randrange(N_INST), svc(rnd.randrange(N_SVC)))
        return nx_q()
    makers = {"a": lambda: "%s.service.internal A" % svc(rnd.randrange(N_SVC)),
              "srv": srv_q, "mix": mix_q, "nx": nx_q}
    for name, mk in makers.items():
        with open("%s/q-%s.txt" % (d, name), "w") as f:
            for _ in range(lines):
                f.write(mk() + "\n")

def register(http_port):
    jobs = [(n, k) for n in range(N_SVC) for k in range(N_INST)]
    def work(chunk):
        c = http.client.HTTPConnection("127.0.0.1", http_port, timeout=30)
        for n, k in chunk:
            reg = {"address": addr(n, k), "port": port(k), "weight": 1, "priority": 0}
            if ROUTING in ("1", "weights"):
                # Unequal weights (a canary at 1): a weighted schedule per set.
                reg["weight"] = (1, 3, 96)[k]
            if ROUTING in ("1", "meta"):
                # And zones: the client's zone "a" holds i0 and i1, so every service answer
                # places the client and takes the zone's order, weighted in both parts.
                reg["meta"] = {"zone": "a" if k < 2 else "b"}
            body = json.dumps(reg)
            c.request("PUT", "/v1/services/%s/instances/i%d" % (svc(n), k), body,
                      {"Content-Type": "application/json"})
            r = c.getresponse(); r.read()
            if r.status != 200:
                raise SystemExit("registration of %s/i%d: HTTP %d" % (svc(n), k, r.status))
        c.close()
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        list(ex.map(work, [jobs[i::16] for i in range(16)]))
    dt = time.monotonic() - t0
    c = http.client.HTTPConnection("127.0.0.1", http_port, timeout=30)
    c.request("GET", "/v1/services"); data = json.loads(c.getresponse().read())
    total = sum(s["passing"] for s in data["services"])
    print(json.dumps({"registered": len(jobs), "seconds": round(dt, 2),
                      "per_second": round(len(jobs) / dt), "passing": total}))
    if total != len(jobs):
        raise SystemExit("expected %d passing instances, the API lists %d" % (len(jobs), total))

# --- a tiny DNS client for readiness and answer-shape checks -----------------------------------
QT = {"A": 1, "NS": 2, "SOA": 6, "SRV": 33}
EDNS = os.environ.get("EDNS", "1") != "0"
def ask(dns_port, name, qtype, timeout=0.5):
    qid = random.randrange(65536)
    q = struct.pack(">HHHHHH", qid, 0, 1, 0, 0, 1 if EDNS else 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\0" + struct.pack(">HH", QT[qtype], 1)
    if EDNS:
        q += b"\0" + struct.pack(">HHIH", 41, 1232, 0, 0)  # OPT, payload 1232
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(q, ("127.0.0.1", dns_port))
        while True:
            m = s.recv(65535)
            if m[:2] == q[:2]: break
    finally:
        s.close()
    flags, qd, an, ns, ar = struct.unpack(">HHHHH", m[2:12])
    # walk the question and the answer section to collect A addresses
    def skip_name(i):
        while True:
            l = m[i]
            if l == 0: return i + 1
            if l & 0xC0 == 0xC0: return i + 2
            i += l + 1
    i = skip_name(12) + 4
    addrs = []
    for _ in range(an):
        i = skip_name(i)
        t, _c, _ttl, rdl = struct.unpack(">HHIH", m[i:i + 10]); i += 10
        if t == 1: addrs.append(socket.inet_ntoa(m[i:i + 4]))
        i += rdl
    return {"rcode": flags & 0xF, "aa": bool(flags & 0x400), "tc": bool(flags & 0x200),
            "an": an, "ns": ns, "ar": ar, "a": sorted(addrs), "size": len(m)}

def wait_ready(dns_port, seconds):
    deadline = time.monotonic() + seconds
    probe = "svc-0999.service.internal"
    while time.monotonic() < deadline:
        try:
            r = ask(dns_port, probe, "A", 0.2)
            if r["rcode"] == 0 and r["an"] == N_INST:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("server on port %d did not answer %s A with %d records within %ss"
                     % (dns_port, probe, N_INST, seconds))

def wait_http(http_port, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", http_port, timeout=1)
            c.request("GET", "/healthz")
            if c.getresponse().status == 200: return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("signpost's HTTP API on port %d did not answer /healthz within %ss" % (http_port, seconds))

SAMPLES = [("svc-0000.service.internal", "A"), ("svc-0500.service.internal", "SRV"),
           ("_svc-0999._tcp.service.internal", "SRV"), ("i1.svc-0123.instance.internal", "A"),
           ("nosuch-1.service.internal", "A"), ("internal", "SOA")]
def shape(dns_port):
    return {"%s %s" % (n, t): ask(dns_port, n, t) for n, t in SAMPLES}

# --- CPU accounting -----------------------------------------------------------------------------
def proc_stat(pid):
    with open("/proc/%d/stat" % pid) as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[1]), int(rest[11]) + int(rest[12])  # ppid, utime+stime (ticks)

def tree_ticks(root):
    """utime+stime of root and all its descendants (every thread of each is included)."""
    procs = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try: procs[int(d)] = proc_stat(int(d))
            except (OSError, IndexError): pass
    want, total, frontier = {root}, 0, [root]
    while frontier:
        p = frontier.pop()
        for q, (pp, _) in procs.items():
            if pp == p and q not in want:
                want.add(q); frontier.append(q)
    for p in want:
        if p in procs: total += procs[p][1]
    return total

def cpu_busy(cpu):
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu%d " % cpu):
                v = [int(x) for x in line.split()[1:]]
                return sum(v) - v[3] - v[4], sum(v)  # busy (not idle/iowait), total
    return 0, 1

def udp_drops(port):
    """(drops on sockets bound to 127.0.0.1:port, all UDP receive-buffer drops of the host)."""
    server = 0
    want = "0100007F:%04X" % port
    with open("/proc/net/udp") as f:
        next(f)
        for line in f:
            v = line.split()
            if v[1] == want:
                server += int(v[-1])
    total = 0
    with open("/proc/net/snmp") as f:
        rows = [l.split() for l in f if l.startswith("Udp:")]
    if len(rows) >= 2:
        total = int(rows[1][rows[0].index("RcvbufErrors")])
    return server, total

# --- dnsperf ------------------------------------------------------------------------------------
def dnsperf(cfg, qfile, seconds, rate, outstanding):
    cmd = (["chrt", "-r", str(cfg["rt_prio"])] if cfg["rt_prio"] else []) + \
          ["taskset", "-c", str(cfg["client_cpu"]), "dnsperf", "-s", "127.0.0.1",
           "-p", str(cfg["port"]), "-d", qfile, "-l", str(seconds), "-c", "4", "-T", "1",
           "-q", str(outstanding), "-t", "1"] + (["-e"] if cfg["edns"] else [])
    if rate: cmd += ["-Q", str(int(rate))]
    t0s, c0 = tree_ticks(cfg["pid"]), cpu_busy(cfg["server_cpu"])
    d0 = udp_drops(cfg["port"])
    w0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = p.communicate(timeout=seconds + 20)
    except subprocess.TimeoutExpired:
        p.kill(); p.communicate()
        sys.stderr.write("  dnsperf did not finish in %d s, killed: %s\n" % (seconds + 20, " ".join(cmd)))
        return None
    wall = time.monotonic() - w0
    t1s, c1 = tree_ticks(cfg["pid"]), cpu_busy(cfg["server_cpu"])
    d1 = udp_drops(cfg["port"])
    server_drops = d1[0] - d0[0]
    other_drops = max(0, (d1[1] - d0[1]) - server_drops)   # in practice dnsperf's sockets
    def num(label):
        m = re.search(r"%s:\s+([\d.]+)" % re.escape(label), out)
        if not m: raise SystemExit("dnsperf output lacks %r:\n%s" % (label, out))
        return float(m.group(1))
    sent, done, lost = num("Queries sent"), num("Queries completed"), num("Queries lost")
    rt = num("Run time (s)")
    rcodes = dict((k, int(v)) for k, v in re.findall(r"(NOERROR|NXDOMAIN|SERVFAIL|REFUSED|FORMERR|NOTIMP)\s+(\d+)", out))
    server_s = (t1s - t0s) / CLK
    busy = (c1[0] - c0[0]) / CLK
    return {"offered": rate, "outstanding": outstanding, "seconds": seconds,
            "sent": int(sent), "completed": int(done), "lost": int(lost),
            "loss": lost / sent if sent else 1.0, "qps": num("Queries per second"),
            "sent_qps": sent / rt if rt else 0.0, "run_time": rt, "rcodes": rcodes,
            "server_cpu_s": server_s, "server_util": server_s / wall,
            "other_util_on_server_cpu": max(0.0, busy - server_s) / wall,
            "us_per_query": 1e6 * server_s / done if done else None, "wall": wall,
            "server_socket_drops": server_drops, "client_socket_drops": other_drops}

def dnsperf_ru(cfg, qfile, seconds, rate, outstanding):
    """dnsperf() plus the client's own CPU use, from the rusage of the child."""
    for attempt in range(2):
        before = os.times()
        r = dnsperf(cfg, qfile, seconds, rate, outstanding)
        after = os.times()
        if r is not None:
            break
    else:
        raise SystemExit("dnsperf hung twice; giving up")
    cs = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    r["client_util"] = cs / r["wall"]
    return r

def passes(r):
    return r["loss"] < LOSS_MAX and (r["offered"] == 0 or r["sent_qps"] >= 0.97 * r["offered"])

def cell(cfg, qset, out):
    qfile = "%s/q-%s.txt" % (cfg["dir"], qset)
    ss, steps = cfg["search_seconds"], cfg["search_steps"]
    rec = {"server": cfg["server"], "round": cfg["round"], "qset": qset, "runs": []}
    probe = dnsperf_ru(cfg, qfile, ss, 0, 100)
    probe["kind"] = "probe"; rec["runs"].append(probe)
    cap = probe["qps"]
    best, lo, hi = None, None, None
    rate = 0.97 * cap
    client_bound = False
    for _ in range(steps):
        r = dnsperf_ru(cfg, qfile, ss, rate, 2000)
        r["kind"] = "search"; rec["runs"].append(r)
        ok = r["loss"] < LOSS_MAX
        if ok and r["sent_qps"] < 0.97 * rate:
            client_bound = True   # dnsperf could not offer the rate; the server kept up
            ok = True
        if ok:
            if best is None or r["qps"] > best["qps"]: best = r
            lo = rate
        else:
            hi = rate
        if ok and client_bound:
            break
        if hi is None: rate = lo * 1.10
        elif lo is None: rate = hi * 0.6 if hi > 0.6 * cap else hi * 0.5
        else: rate = (lo + hi) / 2
        if lo is not None and hi is not None and (hi - lo) / hi < 0.03:
            break
    if best is None:   # nothing passed: fall back to the closed-loop probe if it was clean
        best = probe if probe["loss"] < LOSS_MAX else None
    rec["max_qps"] = best["qps"] if best else 0.0
    rec["max_offered"] = best["offered"] if best else 0
    rec["max_server_util"] = best["server_util"] if best else None
    rec["max_client_util"] = best["client_util"] if best else None
    # Where were the queries lost in the failing run just above the result? (server's socket
    # buffer, or dnsperf's: then the client, not the server, set the limit)
    failing = [r for r in rec["runs"] if r["kind"] == "search" and r["loss"] >= LOSS_MAX]
    if failing:
        f0 = min(failing, key=lambda r: r["offered"])
        sd, cd = f0["server_socket_drops"], f0["client_socket_drops"]
        rec["limit"] = "server" if sd > cd else ("dnsperf" if cd > 0 else "timeouts")
        rec["limit_drops"] = [sd, cd]
        if cd > sd:
            client_bound = True
    else:
        rec["limit"] = "dnsperf" if client_bound else "untested"
    rec["client_bound"] = client_bound
    rec["max_us_per_query"] = best["us_per_query"] if best else None
    rec["probe_qps"] = cap
    fx = dnsperf_ru(cfg, qfile, cfg["fixed_seconds"], FIXED[qset], 2000)
    fx["kind"] = "fixed"; rec["runs"].append(fx)
    rec["fixed_rate"] = FIXED[qset]
    rec["us_per_query"] = fx["us_per_query"]
    rec["fixed_loss"] = fx["loss"]
    rec["fixed_overloaded"] = fx["loss"] >= LOSS_MAX or fx["sent_qps"] < 0.97 * FIXED[qset]
    rec["fixed_server_util"] = fx["server_util"]
    rec["rcodes"] = fx["rcodes"]
    with open(out, "a") as f:
        f.write(json.dumps(rec) + "\n")
    sys.stderr.write("  %-8s %-3s max %8.0f qps (server CPU %3.0f%%, dnsperf CPU %3.0f%%, limit %s)  "
                     "at %dk: %.2f us/query (server CPU %3.0f%%, loss %.3f%%, other load on its CPU %2.0f%%)\n"
                     % (cfg["server"], qset, rec["max_qps"], 100 * (rec["max_server_util"] or 0),
                        100 * (rec["max_client_util"] or 0), rec["limit"],
                        FIXED[qset] // 1000, fx["us_per_query"] or -1, 100 * fx["server_util"],
                        100 * fx["loss"], 100 * fx["other_util_on_server_cpu"]))

def quiet(max_wait):
    """Waits (at most max_wait s) until the machine's CPUs are < 15 % busy over a 1 s window."""
    def busy():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v) - v[3] - v[4], sum(v)
    t0 = time.monotonic()
    while True:
        b0 = busy(); time.sleep(1); b1 = busy()
        frac = (b1[0] - b0[0]) / max(1, b1[1] - b0[1])
        if frac < 0.15:
            return
        if time.monotonic() - t0 >= max_wait:
            sys.stderr.write("  (machine still %.0f %% busy with other work after %.0f s; going on)\n"
                             % (100 * frac, time.monotonic() - t0))
            return

# --- report -------------------------------------------------------------------------------------
def report(results, meta_path, shapes_path):
    recs = [json.loads(l) for l in open(results)]
    meta = json.load(open(meta_path))
    servers = [s for s in ["signpost", "knot", "nsd"] if any(r["server"] == s for r in recs)]
    qsets = [q for q in ["a", "srv", "mix", "nx"] if any(r["qset"] == q for r in recs)]
    label = {"a": "A", "srv": "SRV", "mix": "mix (10% NXDOMAIN)", "nx": "all NXDOMAIN"}
    name = {"signpost": "signpost", "knot": "Knot", "nsd": "NSD"}
    def med(s, q, key):
        v = [r[key] for r in recs if r["server"] == s and r["qset"] == q and r[key] is not None]
        return statistics.median(v) if v else None
    def flags(s, q, key):
        f = []
        rs = [r for r in recs if r["server"] == s and r["qset"] == q]
        if key == "max_qps" and any(r["client_bound"] for r in rs): f.append("c")
        if key == "us_per_query" and any(r["fixed_overloaded"] for r in rs): f.append("o")
        kinds = ("probe", "search") if key == "max_qps" else ("fixed",)
        if not meta.get("rt_prio") and any(x["other_util_on_server_cpu"] > 0.10 for r in rs for x in r["runs"] if x["kind"] in kinds):
            f.append("n")
        return ("<sup>" + ",".join(f) + "</sup>") if f else ""
    def ratio(a, b):
        return "%.2f" % (a / b) if a and b else "–"
    L = []
    L.append("Machine: %s, %s CPUs; %s; server on CPU %s, dnsperf on CPU %s%s; %s round(s); "
             "signpost %s." % (meta["cpu"], meta["nproc"], meta["kernel"], meta["server_cpu"],
                               meta["client_cpu"],
                               " (both SCHED_RR priority %d)" % meta["rt_prio"] if meta.get("rt_prio") else "",
                               meta["rounds"], meta["signpost"]))
    L.append("Load average before / after: %s / %s. Registration of 3,000 instances over HTTP: %s s (%s/s)."
             % (meta["load_before"], meta.get("load_after", "?"), meta["reg"]["seconds"], meta["reg"]["per_second"]))
    L.append("")
    hdr = "| query set | figure | " + " | ".join(name[s] for s in servers) + " | " + \
          " | ".join("signpost/%s" % name[s] for s in servers if s != "signpost") + " |"
    L.append(hdr)
    L.append("|" + "---|" * (2 + len(servers) + len([s for s in servers if s != "signpost"])))
    for q in qsets:
        for key, fig, fmt in [("max_qps", "max QPS, < 0.1 % lost", "%.0f"),
                              ("us_per_query", "server CPU µs/query at %dk QPS" % (FIXED[q] // 1000), "%.2f"),
                              ("max_us_per_query", "server CPU µs/query at max QPS", "%.2f"),
                              ("max_server_util", "server CPU at max QPS", "pct"),
                              ("max_client_util", "dnsperf CPU at max QPS", "pct")]:
            vals = {s: med(s, q, key) for s in servers}
            def f(v):
                if v is None: return "–"
                return "%.0f %%" % (100 * v) if fmt == "pct" else fmt % v
            cells = [f(vals[s]) + (flags(s, q, key) if key in ("max_qps", "us_per_query") else "") for s in servers]
            ratios = [ratio(vals.get("signpost"), vals[s]) for s in servers if s != "signpost"] \
                if fmt != "pct" else ["" for s in servers if s != "signpost"]
            L.append("| %s | %s | %s | %s |" % (label[q], fig, " | ".join(cells), " | ".join(ratios)))
        lim = {s: ", ".join(r["limit"] for r in sorted(recs, key=lambda r: r["round"]) if r["server"] == s and r["qset"] == q) for s in servers}
        L.append("| %s | losses just above max QPS were in (per round) | %s | %s |" % (label[q], " | ".join(lim[s] for s in servers),
                 " | ".join("" for s in servers if s != "signpost")))
    L.append("")
    L.append("Medians over rounds. Ratios: QPS below 1 and µs/query above 1 mean signpost is behind. "
             "<sup>c</sup> in at least one round dnsperf could not offer more, or the losses just above the "
             "figure were in dnsperf's socket buffer rather than the server's (the figure is the client's "
             "limit, not the server's; see the µs/query at max QPS for the server's side); <sup>o</sup> at the fixed rate more than 0.1 % was lost or dnsperf "
             "could not offer it in at least one round; <sup>n</sup> other processes used more than 10 % of "
             "the server's CPU while it ran (under RT_PRIO the server takes the CPU first; they use what "
             "it leaves, which shares caches but does not delay it).")
    def cost(s, a, b):
        x, y = med(s, a, "us_per_query"), med(s, b, "us_per_query")
        return "%.2f" % (x / y) if x and y else "–"
    L.append("")
    L.append("CPU per query, NXDOMAIN / A (at 40k each): " + ", ".join("%s %s" % (name[s], cost(s, "nx", "a")) for s in servers)
             + "; SRV / A: " + ", ".join("%s %s" % (name[s], cost(s, "srv", "a")) for s in servers) + ".")
    L.append("")
    L.append("Per round (max QPS / µs per query at the fixed rate / other processes' use of the server CPU during the fixed run):")
    L.append("")
    L.append("| server | query set | " + " | ".join("round %d" % (i + 1) for i in range(meta["rounds"])) + " |")
    L.append("|---|---|" + "---|" * meta["rounds"])
    for s in servers:
        for q in qsets:
            rs = sorted([r for r in recs if r["server"] == s and r["qset"] == q], key=lambda r: r["round"])
            cells = []
            for r in rs:
                fx = [x for x in r["runs"] if x["kind"] == "fixed"][0]
                cells.append("%.0f / %.2f / %.0f %%" % (r["max_qps"], r["us_per_query"] or -1,
                                                        100 * fx["other_util_on_server_cpu"]))
            L.append("| %s | %s | %s |" % (name[s], label[q], " | ".join(cells)))
    L.append("")
    # response codes at the fixed rate, as a sanity check that the servers answer alike
    L.append("Response codes in the fixed-rate runs (round 1): " + "; ".join(
        "%s %s %s" % (name[r["server"]], r["qset"], ",".join("%s %.1f%%" % (k, 100 * v / max(1, sum(r["rcodes"].values())))
                                                       for k, v in sorted(r["rcodes"].items())))
        for r in recs if r["round"] == 1))
    shapes = json.load(open(shapes_path))
    diffs = []
    base = shapes.get("signpost")
    for s, sh in shapes.items():
        if s == "signpost" or not base: continue
        for k, v in sh.items():
            b = base[k]
            d = [f for f in ("rcode", "aa", "tc", "an", "ns", "ar", "a") if v[f] != b[f]]
            if d:
                diffs.append("%s %s: %s" % (name[s], k, ", ".join("%s %s vs signpost %s" % (f, v[f], b[f]) for f in d)))
    L.append("")
    L.append("Answer shapes compared with signpost's (RCODE, AA, TC, section counts, A addresses): " +
             ("identical." if not diffs else "; ".join(diffs) + "."))
    L.append("Answer sizes (bytes, signpost / Knot / NSD): " + "; ".join(
        "%s %s" % (k, " / ".join(str(shapes[s][k]["size"]) for s in servers if s in shapes)) for k in base))
    print("\n".join(L))

def main():
    cmd = sys.argv[1]
    if cmd == "gen": gen(sys.argv[2])
    elif cmd == "register": register(int(sys.argv[2]))
    elif cmd == "wait": wait_ready(int(sys.argv[2]), float(sys.argv[3]))
    elif cmd == "wait-http": wait_http(int(sys.argv[2]), float(sys.argv[3]))
    elif cmd == "shape":
        path, server, p = sys.argv[2], sys.argv[3], int(sys.argv[4])
        d = json.load(open(path)) if os.path.exists(path) else {}
        d[server] = shape(p)
        json.dump(d, open(path, "w"))
    elif cmd == "cell":
        cfg = json.loads(sys.argv[2])
        cell(cfg, sys.argv[3], sys.argv[4])
    elif cmd == "freeport":
        while True:
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0))
            p = u.getsockname()[1]
            t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                t.bind(("127.0.0.1", p)); print(p); return
            except OSError:
                pass
            finally:
                u.close(); t.close()
    elif cmd == "quiet": quiet(float(sys.argv[2]))
    elif cmd == "report": report(sys.argv[2], sys.argv[3], sys.argv[4])
    else: raise SystemExit("unknown helper command " + cmd)

main()
PYEOF
py() { python3 "$T/bench.py" "$@"; }

log "temp dir $T; generating zone and query files"
py gen "$T"

# --- server start/stop ---------------------------------------------------------------------------
SERVER_PID=""
start_server() {  # $1 = signpost|knot|nsd [$2 = http: wait for the HTTP API only]; sets SERVER_PID, DNS_PORT
    local s=$1 ready=${2:-dns}
    DNS_PORT=$(py freeport)
    case $s in
    signpost)
        HTTP_PORT=$(py freeport)
        cat >"$T/signpost.toml" <<EOF
[dns]
domain = "internal."
ttl = 5
negative_ttl = 5
zones_dir = "$T/sp-zones"
EOF
        if [ "$ROUTING" = 1 ]; then
            # dnsperf's 127.0.0.1 is in zone a: every query places its client.
            cat "$ROOT/bench/routed-locality.toml" >>"$T/signpost.toml"
        fi
        "${RT[@]}" taskset -c "$SERVER_CPU" "$SIGNPOST_BIN" serve --config "$T/signpost.toml" \
            --dns-listen "127.0.0.1:$DNS_PORT" --http-listen "127.0.0.1:$HTTP_PORT" \
            --data-dir "$T/sp-data" >>"$T/signpost.log" 2>&1 &
        SERVER_PID=$!
        ;;
    knot)
        mkdir -p "$T/knot/db"
        cat >"$T/knot/knot.conf" <<EOF
server:
    rundir: "$T/knot"
    listen: 127.0.0.1@$DNS_PORT
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: "$T/knot/db"
log:
  - target: stderr
    any: warning
template:
  - id: default
    storage: "$T"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
zone:
  - domain: internal.
    file: "$T/internal.zone"
EOF
        "${RT[@]}" taskset -c "$SERVER_CPU" knotd -c "$T/knot/knot.conf" >>"$T/knot.log" 2>&1 &
        SERVER_PID=$!
        ;;
    nsd)
        mkdir -p "$T/nsd"
        cat >"$T/nsd/nsd.conf" <<EOF
server:
    server-count: 1
    ip-address: 127.0.0.1@$DNS_PORT
    port: $DNS_PORT
    do-ip6: no
    username: ""
    chroot: ""
    zonesdir: "$T"
    database: ""
    pidfile: "$T/nsd/nsd.pid"
    xfrdfile: "$T/nsd/xfrd.state"
    xfrdir: "$T/nsd"
    zonelistfile: "$T/nsd/zone.list"
    logfile: "$T/nsd/nsd.log"
    verbosity: 0
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
remote-control:
    control-enable: no
zone:
    name: internal.
    zonefile: "$T/internal.zone"
EOF
        "${RT[@]}" taskset -c "$SERVER_CPU" nsd -d -c "$T/nsd/nsd.conf" >>"$T/nsd.log" 2>&1 &
        SERVER_PID=$!
        ;;
    esac
    PIDS+=("$SERVER_PID")
    if [ "$ready" = http ]; then
        py wait-http "$HTTP_PORT" 30 || { tail -20 "$T/$s.log" >&2; die "signpost did not start"; }
    elif ! py wait "$DNS_PORT" 30; then
        tail -20 "$T/$s.log" >&2 || true
        die "$s did not become ready"
    fi
}
stop_server() {
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    local keep=(); for p in "${PIDS[@]}"; do [ "$p" = "$SERVER_PID" ] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# --- registration (once; later rounds load the same data dir) ----------------------------------
log "starting signpost and registering 1,000 services x 3 instances over HTTP"
HTTP_PORT=""
start_server signpost http
REG=$(taskset -c "$CLIENT_CPU" python3 "$T/bench.py" register "$HTTP_PORT")
log "registration: $REG"
stop_server

# --- metadata --------------------------------------------------------------------------------------
STAMP=$(date -u +%Y-%m-%dT%H%MZ)
mkdir -p "$RESULTS_DIR"
SP_VERSION=$("$SIGNPOST_BIN" --version 2>/dev/null | head -1 || echo "?")
GIT_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")
git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || GIT_REV="$GIT_REV+dirty"
[ -n "$BUILT" ] || GIT_REV="not built here; binary of $(date -u -r "$SIGNPOST_BIN" +%Y-%m-%dT%H:%MZ), checkout at $GIT_REV"
python3 - "$T/meta.json" <<EOF
import json, os, platform, subprocess, sys
cpu = [l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")]
json.dump({"cpu": cpu[0] if cpu else "?", "nproc": os.cpu_count(), "kernel": "Linux " + platform.release(),
           "server_cpu": "$SERVER_CPU", "client_cpu": "$CLIENT_CPU", "rounds": $ROUNDS, "rt_prio": $RT_PRIO,
           "signpost": "$SP_VERSION (git $GIT_REV, $SIGNPOST_BIN)",
           "load_before": open("/proc/loadavg").read().split()[0], "reg": json.loads('''$REG''')},
          open(sys.argv[1], "w"))
EOF

# --- the alternating rounds --------------------------------------------------------------------------
: >"$T/results.jsonl"
for round in $(seq "$ROUNDS"); do
    for s in $SERVERS; do
        py quiet "$QUIET_WAIT"
        log "round $round/$ROUNDS: $s"
        start_server "$s"
        [ "$round" -eq 1 ] && py shape "$T/shapes.json" "$s" "$DNS_PORT"
        cfg=$(printf '{"server":"%s","round":%d,"port":%d,"pid":%d,"dir":"%s","server_cpu":%d,"client_cpu":%d,"search_seconds":%s,"search_steps":%d,"fixed_seconds":%s,"edns":%d,"rt_prio":%d}' \
            "$s" "$round" "$DNS_PORT" "$SERVER_PID" "$T" "$SERVER_CPU" "$CLIENT_CPU" "$SEARCH_SECONDS" "$SEARCH_STEPS" "$FIXED_SECONDS" "$EDNS" "$RT_PRIO")
        for q in $QUERY_SETS; do
            py cell "$cfg" "$q" "$T/results.jsonl"
        done
        stop_server
    done
done

python3 - "$T/meta.json" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1])); m["load_after"] = open("/proc/loadavg").read().split()[0]
json.dump(m, open(sys.argv[1], "w"))
EOF
OUT="$RESULTS_DIR/dns-$STAMP.md"
{
    echo "# DNS benchmark $STAMP"
    echo
    echo "Command: \`RT_PRIO=$RT_PRIO EDNS=$EDNS ROUNDS=$ROUNDS SEARCH_SECONDS=$SEARCH_SECONDS SEARCH_STEPS=$SEARCH_STEPS FIXED_SECONDS=$FIXED_SECONDS bench/dns.sh\`"
    echo
    py report "$T/results.jsonl" "$T/meta.json" "$T/shapes.json"
} >"$OUT"
cp "$T/results.jsonl" "$RESULTS_DIR/dns-$STAMP.jsonl"
cat "$OUT"
log "wrote $OUT and $RESULTS_DIR/dns-$STAMP.jsonl"
