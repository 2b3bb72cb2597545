//! Load generator for `bench/soak.sh`: a steady mixed load held for minutes against one
//! signpost process, with that process sampled from `/proc` at a fixed period, so a leak of
//! memory, file descriptors, threads or disk shows as a trend in the samples. It speaks raw
//! HTTP/1.1 and DNS over tokio sockets and does not use signpost's library, so it builds
//! against any version of it.
//!
//!     cargo build --release --example soak_load
//!     soak_load ready --http 127.0.0.1:8500 --dns 127.0.0.1:8600 --timeout 30
//!     soak_load seed --http 127.0.0.1:8500 --services 1000 --per-service 3 --conns 8
//!     soak_load run --http 127.0.0.1:8500 --dns 127.0.0.1:8600 --pid 1234 --data-dir DIR \
//!         --seconds 600 --sample 10 --services 1000 --per-service 3 --qps 5000 \
//!         --churn 200 --ephemeral 250 --watchers 100 --wait 2 --oneshot 5
//!
//! Each mode prints JSON lines on stdout.
//! - `ready`: polls `/healthz` until 200 and the DNS port until it answers anything.
//! - `seed`: instances `i0..i{per-1}` of services `soak-0000..`, keep-alive connections with
//!   one PUT in flight each; every PUT must answer 200.
//! - `run`, for `seconds`, all at once:
//!   - DNS: `qps` UDP queries per second (EDNS, 1232 bytes, no recursion) spread over
//!     `dns-sockets` sockets, open loop: 40 % `soak-N.service` A, 30 % SRV (half of them in
//!     the `_soak-N._tcp` form), 20 % `iK.soak-N.instance` A, 10 % `nope-N.service` A. An
//!     answer must be NOERROR with records (NXDOMAIN for `nope-`), else it is `unexpected`;
//!     a query unanswered after `dns-timeout` seconds is `lost` (counted when it expires).
//!   - churn: `churn` writes per second over `churn-conns` keep-alive connections, open loop.
//!     Write number `op` is, by `op % 4`: 0 and 1 a re-registration of a seeded instance
//!     with a new address, tags and metadata; 2 the registration of short-lived instance
//!     `tmp-{op/4}` in some seeded service; 3 the deregistration of `tmp-{op/4 - ephemeral}`.
//!     So `ephemeral` short-lived instances are alive at any time and the registry stays at
//!     services × per + ephemeral. PUT must answer 200 and DELETE 204; anything else, a
//!     timeout (5 s) or a broken connection is an error.
//!   - watchers: `watchers` clients, each long-polling one service with
//!     `GET /v1/services/soak-N?index=I&wait={wait in ms}ms` in a loop, I from the previous
//!     answer's `X-Signpost-Index`; each closes its connection and opens a new one every 3 to 6
//!     polls. A return earlier than the wait is `woken` (the service changed).
//!   - one-shot clients: `oneshot` per second, each on a new connection: GET `/healthz` or a
//!     service and read the answer; or send `GET /v1/services` and close without reading; or
//!     send half a request head and close.
//!   - every `sample` seconds (and once before the load, and once at the end after the
//!     queries in flight expired) one row: the server's VmRSS, VmHWM, Threads (from
//!     `/proc/<pid>/status`), open files (entries of `/proc/<pid>/fd`), CPU % of one core
//!     over the interval (`/proc/<pid>/stat`), the data dir's size in bytes (as `du -sb`),
//!     and the interval's counts; then a `total` line. If the server is gone, the row says
//!     so and the run ends there.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

#[path = "support/load.rs"]
mod load;
use load::{Conn, Reply, address, arg};

/// Writes taking longer than this are errors (the server is expected to answer in ms).
const WRITE_TIMEOUT: Duration = load::EXCHANGE_TIMEOUT;
/// Only so many error messages go to stderr; the counts carry the rest.
const MAX_ERROR_LINES: u64 = 20;
static ERROR_LINES: AtomicU64 = AtomicU64::new(0);

fn log_error(msg: impl FnOnce() -> String) {
    let n = ERROR_LINES.fetch_add(1, Ordering::Relaxed);
    if n < MAX_ERROR_LINES {
        eprintln!("soak_load: {}", msg());
    } else if n == MAX_ERROR_LINES {
        eprintln!("soak_load: further errors are only counted");
    }
}

// --- counters ------------------------------------------------------------------------------------

/// Per-interval counters; the sampler takes (and zeroes) them at every row.
#[derive(Clone, Copy)]
enum C {
    DnsSent,
    DnsAnswered,
    DnsLost,
    DnsUnexpected,
    DnsTruncated,
    DnsLate,
    DnsSkipped,
    WritesOk,
    WriteErrors,
    WritesSkipped,
    Polls,
    PollsWoken,
    PollErrors,
    Reconnects,
    OneshotOk,
    OneshotErrors,
}
const NAMES: [&str; 16] = [
    "dns_sent",
    "dns_answered",
    "dns_lost",
    "dns_unexpected",
    "dns_truncated",
    "dns_late",
    "dns_skipped",
    "writes_ok",
    "write_errors",
    "writes_skipped",
    "polls",
    "polls_woken",
    "poll_errors",
    "reconnects",
    "oneshot_ok",
    "oneshot_errors",
];

/// Latency histogram in µs, buckets 10 % wide: enough for a p99 per interval without keeping
/// every sample of a run that lasts minutes.
struct Hist(Vec<AtomicU64>);
const BUCKETS: usize = 200;
const STEP: f64 = 1.1;

impl Hist {
    fn new() -> Self {
        Self((0..BUCKETS).map(|_| AtomicU64::new(0)).collect())
    }
    fn record(&self, d: Duration) {
        let us = d.as_micros() as f64;
        let i = ((us + 1.0).ln() / STEP.ln()) as usize;
        self.0[i.min(BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
    }
    fn take(&self) -> Vec<u64> {
        self.0
            .iter()
            .map(|c| c.swap(0, Ordering::Relaxed))
            .collect()
    }
}

/// The upper bound (µs) of the bucket holding the `p`th percentile; None without samples.
fn hist_pct(counts: &[u64], p: f64) -> Option<u64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((p / 100.0) * total as f64).ceil().max(1.0) as u64;
    let mut acc = 0;
    for (i, c) in counts.iter().enumerate() {
        acc += c;
        if acc >= rank {
            return Some((STEP.powi(i as i32 + 1) - 1.0).ceil() as u64);
        }
    }
    None
}

struct Stats {
    c: [AtomicU64; NAMES.len()],
    dns_lat: Hist,
    write_lat: Hist,
}

impl Stats {
    fn add(&self, c: C, n: u64) {
        self.c[c as usize].fetch_add(n, Ordering::Relaxed);
    }
}

// --- helpers -------------------------------------------------------------------------------------

/// A cheap deterministic mix (splitmix64), so a write or query number picks its target the
/// same way in every run.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn service(s: u64) -> String {
    format!("soak-{s:04}")
}

const TAGS: [&str; 5] = ["v1", "v2", "canary", "blue", "green"];

/// A registration body; `generation` varies the address, tags and metadata between
/// re-registrations.
fn instance_body(generation: u64, port: u64) -> String {
    let h = mix(generation);
    let tags: Vec<String> = (0..=(h % 3))
        .map(|j| {
            format!(
                "\"{}\"",
                TAGS[((h >> 8) as usize + j as usize) % TAGS.len()]
            )
        })
        .collect();
    format!(
        r#"{{"address":"{}","port":{},"tags":[{}],"meta":{{"version":"1.{}"}}}}"#,
        address(h >> 20),
        port,
        tags.join(","),
        generation % 1000
    )
}

/// Elapsed time since `start` in ns, plus one: 0 marks a free DNS slot.
fn stamp(start: Instant) -> u64 {
    start.elapsed().as_nanos() as u64 + 1
}

// --- DNS -----------------------------------------------------------------------------------------

const EXPECT_RECORDS: u8 = 1;
const EXPECT_NXDOMAIN: u8 = 2;

/// One UDP socket's queries in flight: a slot per 16-bit id holding the send time (0 when
/// answered or expired) and what the answer must be. Ids are the low bits of a sequence
/// number, so a slot is reused only after 65,536 queries, far longer than `dns-timeout`.
struct Lane {
    sock: UdpSocket,
    sent_at: Vec<AtomicU64>,
    expect: Vec<AtomicU8>,
    sent: AtomicU64,
}

fn dns_query(buf: &mut Vec<u8>, id: u16, name: &str, qtype: u16) {
    buf.clear();
    buf.extend_from_slice(&id.to_be_bytes());
    buf.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 1]); // no RD; one question, one OPT
    for label in name.split('.') {
        buf.push(label.len() as u8);
        buf.extend_from_slice(label.as_bytes());
    }
    buf.push(0);
    buf.extend_from_slice(&qtype.to_be_bytes());
    buf.extend_from_slice(&[0, 1]); // IN
    // OPT: root owner, type 41, payload 1232, no extended flags, no options
    buf.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
}

/// The query number `seq` of a lane: its name, type and expected answer.
fn pick_query(seq: u64, services: u64, per: u64, domain: &str) -> (String, u16, u8) {
    let h = mix(seq);
    let s = service((h >> 8) % services);
    match h % 10 {
        0..=3 => (format!("{s}.service.{domain}"), 1, EXPECT_RECORDS),
        4..=5 => (format!("{s}.service.{domain}"), 33, EXPECT_RECORDS),
        6 => (format!("_{s}._tcp.service.{domain}"), 33, EXPECT_RECORDS),
        7..=8 => (
            format!("i{}.{s}.instance.{domain}", (h >> 40) % per),
            1,
            EXPECT_RECORDS,
        ),
        _ => (
            format!("nope-{}.service.{domain}", (h >> 8) % 100_000),
            1,
            EXPECT_NXDOMAIN,
        ),
    }
}

struct DnsCfg {
    rate: f64,
    services: u64,
    per: u64,
    domain: String,
}

/// Sends at a steady rate (open loop: answers do not pace it). When this task falls more than
/// 100 ms behind (its CPU taken), the backlog is skipped and counted rather than burst out.
async fn dns_sender(
    lane: Arc<Lane>,
    cfg: Arc<DnsCfg>,
    stats: Arc<Stats>,
    start: Instant,
    deadline: Instant,
) {
    let t0 = Instant::now();
    let mut n = 0u64;
    let slack = (cfg.rate * 0.1) as u64 + 1;
    let mut buf = Vec::with_capacity(128);
    loop {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        let due = ((now - t0).as_secs_f64() * cfg.rate) as u64;
        if due > n + slack {
            stats.add(C::DnsSkipped, due - n);
            n = due;
        }
        while n < due {
            let seq = lane.sent.load(Ordering::Relaxed);
            let (name, qtype, expect) = pick_query(seq, cfg.services, cfg.per, &cfg.domain);
            dns_query(&mut buf, seq as u16, &name, qtype);
            let slot = (seq & 0xffff) as usize;
            lane.expect[slot].store(expect, Ordering::Relaxed);
            lane.sent_at[slot].store(stamp(start), Ordering::Release);
            lane.sent.store(seq + 1, Ordering::Release);
            n += 1;
            stats.add(C::DnsSent, 1);
            if let Err(e) = lane.sock.send(&buf).await {
                // unsent: left in its slot, it expires as lost, as the client would see it
                log_error(|| format!("DNS send: {e}"));
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn dns_receiver(lane: Arc<Lane>, stats: Arc<Stats>, start: Instant) {
    let mut buf = [0u8; 4096];
    loop {
        let n = match lane.sock.recv(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                // a refused port (ICMP) while the server is down: its queries expire as lost
                log_error(|| format!("DNS receive: {e}"));
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if n < 12 {
            stats.add(C::DnsUnexpected, 1);
            continue;
        }
        let slot = u16::from_be_bytes([buf[0], buf[1]]) as usize;
        let sent = lane.sent_at[slot].swap(0, Ordering::AcqRel);
        if sent == 0 {
            stats.add(C::DnsLate, 1); // already counted lost
            continue;
        }
        stats
            .dns_lat
            .record(Duration::from_nanos(stamp(start).saturating_sub(sent)));
        stats.add(C::DnsAnswered, 1);
        let tc = buf[2] & 0x02 != 0;
        let rcode = buf[3] & 0x0f;
        let ancount = u16::from_be_bytes([buf[6], buf[7]]);
        let ok = match lane.expect[slot].load(Ordering::Relaxed) {
            EXPECT_NXDOMAIN => rcode == 3,
            _ => rcode == 0 && (ancount > 0 || tc),
        };
        if tc {
            stats.add(C::DnsTruncated, 1);
        }
        if !ok {
            stats.add(C::DnsUnexpected, 1);
            log_error(|| format!("DNS answer id {slot}: rcode {rcode}, {ancount} answers"));
        }
    }
}

/// Walks the slots in send order and counts those older than `timeout` as lost, so losses
/// land in the interval in which they expire rather than when an id is reused.
async fn dns_sweeper(lane: Arc<Lane>, stats: Arc<Stats>, start: Instant, timeout: Duration) {
    let timeout = timeout.as_nanos() as u64;
    let mut cursor = 0u64;
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let sent = lane.sent.load(Ordering::Acquire);
        cursor = cursor.max(sent.saturating_sub(0x10000));
        let now = stamp(start);
        while cursor < sent {
            let slot = &lane.sent_at[(cursor & 0xffff) as usize];
            let t = slot.load(Ordering::Acquire);
            if t != 0 {
                if now.saturating_sub(t) < timeout {
                    break;
                }
                if slot
                    .compare_exchange(t, 0, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    stats.add(C::DnsLost, 1);
                }
            }
            cursor += 1;
        }
    }
}

// --- churn ---------------------------------------------------------------------------------------

struct ChurnCfg {
    http: SocketAddr,
    rate: f64,
    conns: u64,
    services: u64,
    per: u64,
    ephemeral: u64,
}

/// Write number `op`: method, path, body and the status it must answer (see the header).
fn churn_op(op: u64, cfg: &ChurnCfg) -> (&'static str, String, String, u16) {
    let e = op / 4;
    let ephemeral = |e: u64| {
        let s = service(mix(e ^ 0x5eed) % cfg.services);
        format!("/v1/services/{s}/instances/tmp-{e}")
    };
    match op % 4 {
        2 => ("PUT", ephemeral(e), instance_body(op, 9000), 200),
        3 if e >= cfg.ephemeral => ("DELETE", ephemeral(e - cfg.ephemeral), String::new(), 204),
        _ => {
            let h = mix(op ^ 0xc0ffee);
            let (s, k) = ((h >> 8) % cfg.services, (h >> 40) % cfg.per);
            let path = format!("/v1/services/{}/instances/i{k}", service(s));
            ("PUT", path, instance_body(op, 8000 + k), 200)
        }
    }
}

/// One keep-alive connection taking writes `c`, `c + conns`, ... at `rate / conns` per second.
/// More than a second behind (the server stalled), the backlog is skipped and counted.
async fn churn_conn(c: u64, cfg: Arc<ChurnCfg>, stats: Arc<Stats>, deadline: Instant) {
    let rate = cfg.rate / cfg.conns as f64;
    let t0 = Instant::now();
    let mut k = 0u64;
    let mut conn: Option<Conn> = None;
    loop {
        let due = t0 + Duration::from_secs_f64(k as f64 / rate);
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        if due > now {
            tokio::time::sleep_until(due.min(deadline).into()).await;
            continue;
        }
        if now - due > Duration::from_secs(1) {
            let behind = ((now - due).as_secs_f64() * rate) as u64;
            stats.add(C::WritesSkipped, behind);
            k += behind;
        }
        let op = k * cfg.conns + c;
        k += 1;
        let (method, path, body, want) = churn_op(op, &cfg);
        if conn.is_none() {
            match Conn::connect(cfg.http).await {
                Ok(cn) => conn = Some(cn),
                Err(e) => {
                    stats.add(C::WriteErrors, 1);
                    log_error(|| format!("connect for {method} {path}: {e}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let Some(cn) = conn.as_mut() else { continue };
        let t = Instant::now();
        match cn.call(method, &path, &body, WRITE_TIMEOUT).await {
            Ok(r) if r.status == want => {
                stats.write_lat.record(t.elapsed());
                stats.add(C::WritesOk, 1);
            }
            Ok(r) => {
                stats.add(C::WriteErrors, 1);
                log_error(|| format!("{method} {path}: HTTP {}", r.status));
            }
            Err(e) => {
                stats.add(C::WriteErrors, 1);
                log_error(|| format!("{method} {path}: {e}"));
                conn = None; // its state is unknown: start over on a new connection
            }
        }
    }
}

// --- watchers and one-shot clients ---------------------------------------------------------------

/// Long-polls one service, reconnecting every 3 to 6 polls. Polls cut by the end of the run
/// are not counted.
async fn watcher(
    w: u64,
    http: SocketAddr,
    svc: String,
    wait: Duration,
    stats: Arc<Stats>,
    deadline: Instant,
) {
    // spread the watchers' phases over the first wait
    let delay = wait.mul_f64((mix(w) % 1000) as f64 / 1000.0);
    tokio::time::sleep(delay).await;
    let limit = wait + WRITE_TIMEOUT;
    let mut index: Option<u64> = None;
    let mut round = 0u64;
    while Instant::now() < deadline {
        round += 1;
        let work = async {
            let mut conn = match Conn::connect(http).await {
                Ok(c) => c,
                Err(e) => {
                    stats.add(C::PollErrors, 1);
                    log_error(|| format!("watcher {w}: connect: {e}"));
                    return false;
                }
            };
            stats.add(C::Reconnects, 1);
            for _ in 0..(3 + mix(w ^ (round << 20)) % 4) {
                let path = match index {
                    Some(i) => format!("/v1/services/{svc}?index={i}&wait={}ms", wait.as_millis()),
                    None => format!("/v1/services/{svc}"),
                };
                let t = Instant::now();
                match conn.call("GET", &path, "", limit).await {
                    Ok(Reply {
                        status: 200,
                        index: Some(i),
                    }) => {
                        if index.is_some() {
                            stats.add(C::Polls, 1);
                            if t.elapsed() + Duration::from_millis(100) < wait {
                                stats.add(C::PollsWoken, 1);
                            }
                        }
                        index = Some(i);
                    }
                    Ok(r) => {
                        stats.add(C::PollErrors, 1);
                        log_error(|| {
                            format!(
                                "watcher {w}: GET {path}: HTTP {} index {:?}",
                                r.status, r.index
                            )
                        });
                        return false;
                    }
                    Err(e) => {
                        stats.add(C::PollErrors, 1);
                        log_error(|| format!("watcher {w}: GET {path}: {e}"));
                        return false;
                    }
                }
            }
            true
        };
        match tokio::time::timeout_at(deadline.into(), work).await {
            Ok(true) => {}
            Ok(false) => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(_) => return,
        }
    }
}

/// One client that connects, does one thing and leaves (kinds in the header).
async fn oneshot(n: u64, http: SocketAddr, services: u64, stats: Arc<Stats>) {
    let work = async {
        let mut conn = Conn::connect(http).await?;
        match n % 4 {
            0 => conn.send("GET", "/healthz", "").await?,
            1 => {
                let path = format!("/v1/services/{}", service(mix(n) % services));
                conn.send("GET", &path, "").await?
            }
            2 => return conn.send("GET", "/v1/services", "").await.map(|()| true),
            _ => {
                conn.send_raw(b"GET /healthz HTTP/1.1\r\nHo").await?;
                return Ok(true);
            }
        }
        Ok::<_, io::Error>(conn.reply().await?.status == 200)
    };
    match tokio::time::timeout(WRITE_TIMEOUT, work).await {
        Ok(Ok(true)) => stats.add(C::OneshotOk, 1),
        Ok(Ok(false)) => {
            stats.add(C::OneshotErrors, 1);
            log_error(|| format!("one-shot client {n}: not 200"));
        }
        Ok(Err(e)) => {
            stats.add(C::OneshotErrors, 1);
            log_error(|| format!("one-shot client {n}: {e}"));
        }
        Err(_) => {
            stats.add(C::OneshotErrors, 1);
            log_error(|| format!("one-shot client {n}: no answer in time"));
        }
    }
}

// --- sampling ------------------------------------------------------------------------------------

struct Proc {
    rss_kb: u64,
    hwm_kb: u64,
    threads: u64,
    fds: u64,
    cpu_ticks: u64,
}

/// The server's figures, or None once it has exited (gone, or a zombie).
fn read_proc(pid: u32) -> Option<Proc> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
    };
    if matches!(field("State:").as_deref(), Some("Z" | "X") | None) {
        return None;
    }
    let num = |k: &str| field(k).and_then(|v| v.parse().ok()).unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // fields after the command's closing parenthesis start at field 3 (state); utime and
    // stime are fields 14 and 15
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let tick = |i: usize| rest.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Some(Proc {
        rss_kb: num("VmRSS:"),
        hwm_kb: num("VmHWM:"),
        threads: num("Threads:"),
        fds,
        cpu_ticks: tick(11) + tick(12),
    })
}

/// Apparent size of everything under `p`, as `du -sb`; files removed during the walk (log
/// segments the store retires) are skipped.
fn dir_bytes(p: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(p) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    let Ok(entries) = std::fs::read_dir(p) else {
        return meta.len();
    };
    meta.len() + entries.flatten().map(|e| dir_bytes(&e.path())).sum::<u64>()
}

struct Sampler {
    pid: u32,
    data: PathBuf,
    stats: Arc<Stats>,
    start: Instant,
    last_at: f64,
    last_ticks: Option<u64>,
    clk_tck: f64,
    totals: [u64; NAMES.len()],
    dns_all: Vec<u64>,
    write_all: Vec<u64>,
    rows: u64,
}

impl Sampler {
    /// Prints one row (JSON on stdout, a short line on stderr); false when the server is gone.
    /// `last`: the row after the load, every client gone.
    fn row(&mut self, last: bool) -> bool {
        let at = self.start.elapsed().as_secs_f64();
        let counts: Vec<u64> = self
            .stats
            .c
            .iter()
            .map(|c| c.swap(0, Ordering::Relaxed))
            .collect();
        let (dns, write) = (self.stats.dns_lat.take(), self.stats.write_lat.take());
        for (t, c) in self.totals.iter_mut().zip(&counts) {
            *t += c;
        }
        for (t, c) in self.dns_all.iter_mut().zip(&dns) {
            *t += c;
        }
        for (t, c) in self.write_all.iter_mut().zip(&write) {
            *t += c;
        }
        let proc_ = read_proc(self.pid);
        let data_bytes = dir_bytes(&self.data);
        let show = |v: Option<u64>| v.map_or("null".to_string(), |x| x.to_string());
        let mut fields = vec![format!(
            r#""mode":"sample","at_s":{at:.2},"after_load":{last}"#
        )];
        match &proc_ {
            Some(p) => {
                let cpu = self.last_ticks.map_or("null".to_string(), |l| {
                    let secs = (at - self.last_at).max(1e-3);
                    format!(
                        "{:.1}",
                        100.0 * p.cpu_ticks.saturating_sub(l) as f64 / self.clk_tck / secs
                    )
                });
                fields.push(format!(
                    r#""rss_kb":{},"hwm_kb":{},"threads":{},"fds":{},"cpu_pct":{cpu}"#,
                    p.rss_kb, p.hwm_kb, p.threads, p.fds
                ));
                self.last_ticks = Some(p.cpu_ticks);
            }
            None => fields.push(r#""server_gone":true"#.to_string()),
        }
        fields.push(format!(r#""data_bytes":{data_bytes}"#));
        for (name, c) in NAMES.iter().zip(&counts) {
            fields.push(format!(r#""{name}":{c}"#));
        }
        fields.push(format!(
            r#""dns_p99_us":{},"write_p99_us":{}"#,
            show(hist_pct(&dns, 99.0)),
            show(hist_pct(&write, 99.0))
        ));
        println!("{{{}}}", fields.join(","));
        let c = |k: C| counts[k as usize];
        match &proc_ {
            Some(p) => eprintln!(
                "[soak_load {at:6.1}s] RSS {:.1} MB, {} fds, {} threads, data {:.1} MB | DNS {} sent {} answered {} lost | writes {} ok {} errors | polls {} ({} woken)",
                p.rss_kb as f64 / 1024.0,
                p.fds,
                p.threads,
                data_bytes as f64 / 1e6,
                c(C::DnsSent),
                c(C::DnsAnswered),
                c(C::DnsLost),
                c(C::WritesOk),
                c(C::WriteErrors),
                c(C::Polls),
                c(C::PollsWoken)
            ),
            None => eprintln!(
                "[soak_load {at:6.1}s] the server (pid {}) is gone",
                self.pid
            ),
        }
        self.last_at = at;
        self.rows += 1;
        proc_.is_some()
    }

    fn total(&self) {
        let mut fields = vec![format!(
            r#""mode":"total","seconds":{:.2},"rows":{}"#,
            self.start.elapsed().as_secs_f64(),
            self.rows
        )];
        for (name, c) in NAMES.iter().zip(&self.totals) {
            fields.push(format!(r#""{name}":{c}"#));
        }
        let show = |v: Option<u64>| v.map_or("null".to_string(), |x| x.to_string());
        for (label, h) in [("dns", &self.dns_all), ("write", &self.write_all)] {
            fields.push(format!(
                r#""{label}_p50_us":{},"{label}_p99_us":{},"{label}_p999_us":{}"#,
                show(hist_pct(h, 50.0)),
                show(hist_pct(h, 99.0)),
                show(hist_pct(h, 99.9))
            ));
        }
        println!("{{{}}}", fields.join(","));
    }
}

// --- modes ---------------------------------------------------------------------------------------

async fn ready(args: &[String]) {
    let http: SocketAddr = arg(args, "--http", None);
    let dns: SocketAddr = arg(args, "--dns", None);
    let timeout: f64 = arg(args, "--timeout", Some(30.0));
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(timeout);
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind UDP");
    sock.connect(dns).await.expect("connect UDP");
    let (mut http_ok, mut dns_ok) = (false, false);
    let mut buf = Vec::new();
    let mut answer = [0u8; 4096];
    while !(http_ok && dns_ok) && Instant::now() < end {
        if !http_ok && let Ok(mut c) = Conn::connect(http).await {
            http_ok = matches!(
                c.call("GET", "/healthz", "", Duration::from_secs(1)).await,
                Ok(Reply { status: 200, .. })
            );
        }
        if !dns_ok {
            dns_query(&mut buf, 1, "soak-0000.service.internal", 1);
            dns_ok = sock.send(&buf).await.is_ok()
                && matches!(
                    tokio::time::timeout(Duration::from_millis(50), sock.recv(&mut answer)).await,
                    Ok(Ok(n)) if n >= 12
                );
        }
        if !(http_ok && dns_ok) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    println!(
        r#"{{"mode":"ready","http":{http_ok},"dns":{dns_ok},"ms":{}}}"#,
        t0.elapsed().as_millis()
    );
    if !(http_ok && dns_ok) {
        std::process::exit(1);
    }
}

async fn seed(args: &[String]) {
    let http: SocketAddr = arg(args, "--http", None);
    let services: u64 = arg(args, "--services", Some(1000));
    let per: u64 = arg(args, "--per-service", Some(3));
    let conns: u64 = arg(args, "--conns", Some(8));
    let total = services * per;
    let next = Arc::new(AtomicU64::new(0));
    let (ok, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (next, ok, errors) = (next.clone(), ok.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn: Option<Conn> = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return;
                }
                let (s, k) = (i / per, i % per);
                let path = format!("/v1/services/{}/instances/i{k}", service(s));
                if conn.is_none() {
                    conn = Conn::connect(http).await.ok();
                }
                let Some(c) = conn.as_mut() else {
                    errors.fetch_add(1, Ordering::Relaxed);
                    log_error(|| format!("seed: cannot connect to {http}"));
                    continue;
                };
                match c
                    .call("PUT", &path, &instance_body(i, 8000 + k), WRITE_TIMEOUT)
                    .await
                {
                    Ok(Reply { status: 200, .. }) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    r => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        log_error(|| format!("seed PUT {path}: {:?}", r.map(|r| r.status)));
                        conn = None;
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let ok = ok.load(Ordering::Relaxed);
    println!(
        r#"{{"mode":"seed","services":{services},"per_service":{per},"registered":{ok},"errors":{},"seconds":{secs:.3},"per_second":{:.0}}}"#,
        errors.load(Ordering::Relaxed),
        ok as f64 / secs
    );
    if ok < total {
        std::process::exit(1);
    }
}

async fn run(args: &[String]) {
    let http: SocketAddr = arg(args, "--http", None);
    let dns: SocketAddr = arg(args, "--dns", None);
    let pid: u32 = arg(args, "--pid", None);
    let data: PathBuf = arg(args, "--data-dir", None);
    let seconds: f64 = arg(args, "--seconds", Some(600.0));
    let sample: f64 = arg(args, "--sample", Some(10.0));
    let services: u64 = arg(args, "--services", Some(1000));
    let per: u64 = arg(args, "--per-service", Some(3));
    let qps: f64 = arg(args, "--qps", Some(5000.0));
    let sockets: u64 = arg(args, "--dns-sockets", Some(2));
    let dns_timeout: f64 = arg(args, "--dns-timeout", Some(1.0));
    let churn: f64 = arg(args, "--churn", Some(200.0));
    let churn_conns: u64 = arg(args, "--churn-conns", Some(8));
    let ephemeral: u64 = arg(args, "--ephemeral", Some(250));
    let watchers: u64 = arg(args, "--watchers", Some(100));
    let wait: f64 = arg(args, "--wait", Some(2.0));
    let oneshot_rate: f64 = arg(args, "--oneshot", Some(5.0));
    let domain: String = arg(args, "--domain", Some("internal".to_string()));
    let domain = domain.trim_end_matches('.').to_string();
    assert!(sample > 0.0 && seconds > 0.0 && sockets > 0 && churn_conns > 0);
    // SAFETY: sysconf only reads a constant of the C library.
    let clk_tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;

    let stats = Arc::new(Stats {
        c: std::array::from_fn(|_| AtomicU64::new(0)),
        dns_lat: Hist::new(),
        write_lat: Hist::new(),
    });
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    let mut sampler = Sampler {
        pid,
        data,
        stats: stats.clone(),
        start,
        last_at: 0.0,
        last_ticks: None,
        clk_tck,
        totals: [0; NAMES.len()],
        dns_all: vec![0; BUCKETS],
        write_all: vec![0; BUCKETS],
        rows: 0,
    };
    // the row before any load: the baseline of every trend
    if !sampler.row(false) {
        sampler.total();
        std::process::exit(1);
    }

    if qps > 0.0 {
        let cfg = Arc::new(DnsCfg {
            rate: qps / sockets as f64,
            services,
            per,
            domain,
        });
        for _ in 0..sockets {
            let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind UDP");
            sock.connect(dns).await.expect("connect UDP");
            let lane = Arc::new(Lane {
                sock,
                sent_at: (0..0x10000).map(|_| AtomicU64::new(0)).collect(),
                expect: (0..0x10000).map(|_| AtomicU8::new(0)).collect(),
                sent: AtomicU64::new(0),
            });
            tokio::spawn(dns_receiver(lane.clone(), stats.clone(), start));
            tokio::spawn(dns_sweeper(
                lane.clone(),
                stats.clone(),
                start,
                Duration::from_secs_f64(dns_timeout),
            ));
            tokio::spawn(dns_sender(
                lane,
                cfg.clone(),
                stats.clone(),
                start,
                deadline,
            ));
        }
    }
    if churn > 0.0 {
        let cfg = Arc::new(ChurnCfg {
            http,
            rate: churn,
            conns: churn_conns,
            services,
            per,
            ephemeral,
        });
        for c in 0..churn_conns {
            tokio::spawn(churn_conn(c, cfg.clone(), stats.clone(), deadline));
        }
    }
    let wait = Duration::from_secs_f64(wait);
    for w in 0..watchers {
        let svc = service(mix(w ^ 0xa11) % services);
        tokio::spawn(watcher(w, http, svc, wait, stats.clone(), deadline));
    }
    if oneshot_rate > 0.0 {
        let stats = stats.clone();
        tokio::spawn(async move {
            let t0 = Instant::now();
            for n in 0u64.. {
                let due = t0 + Duration::from_secs_f64(n as f64 / oneshot_rate);
                if due >= deadline {
                    return;
                }
                tokio::time::sleep_until(due.into()).await;
                tokio::spawn(oneshot(n, http, services, stats.clone()));
            }
        });
    }

    // Rows come from a thread of their own so they keep their period when the runtime's one
    // CPU is busy; `end` tells it the run is over (or asks whether the server is gone).
    let (end_tx, end_rx) = mpsc::channel::<()>();
    let server_gone = Arc::new(AtomicBool::new(false));
    let gone = server_gone.clone();
    let period = Duration::from_secs_f64(sample);
    let rows = std::thread::spawn(move || {
        let mut k = 1u32;
        loop {
            let next = start + period * k;
            let timed_out = next < deadline
                && matches!(
                    end_rx.recv_timeout(next.saturating_duration_since(Instant::now())),
                    Err(mpsc::RecvTimeoutError::Timeout)
                );
            if timed_out {
                k += 1;
                if sampler.row(false) {
                    continue;
                }
                gone.store(true, Ordering::Relaxed);
                let _ = end_rx.recv();
                break;
            }
            if next >= deadline {
                let _ = end_rx.recv();
            }
            // the last row, once the queries sent before the deadline were answered or expired
            sampler.row(true);
            break;
        }
        sampler.total();
    });
    while Instant::now() < deadline && !server_gone.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !server_gone.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_secs_f64(dns_timeout + 0.3)).await;
    }
    let _ = end_tx.send(());
    let _ = rows.join();
    // tasks still waiting on the server are dropped with the process
    std::process::exit(if server_gone.load(Ordering::Relaxed) {
        1
    } else {
        0
    });
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ready") => ready(&args).await,
        Some("seed") => seed(&args).await,
        Some("run") => run(&args).await,
        _ => {
            eprintln!("usage: soak_load ready|seed|run [options] (see the source header)");
            std::process::exit(2);
        }
    }
}
