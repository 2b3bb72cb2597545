//! Health-check benchmark: N instances with HTTP checks against local targets, run against
//! the real `signpost` binary. Method and figures: `BENCHMARKS.md`; wrapper: `bench/health.sh`.
//!
//! What it does, in order:
//!
//! 1. Starts N HTTP targets, each its own `TcpListener` on `127.0.0.1:0` (a real fleet has
//!    one host:port per instance), served by axum. Each target records the arrival time of
//!    every probe and answers 200 or 503 as told. The targets live in one or more child
//!    processes of this example (`--targets`, one tokio runtime each) because every target
//!    costs two file descriptors (its listener and the checker's connection) and the open-file
//!    limit of one process may be below 2 N.
//! 2. Starts `signpost serve` on ephemeral ports (JSON logs, temp data dir, temp working dir)
//!    and reads the `signpost ready` line for its addresses.
//! 3. Registers N instances (`svc-0000`… with 100 each, each with a distinct 10.x.y.z address)
//!    over HTTP with an HTTP check on their target, and waits until all are passing. With
//!    `--preload` it instead writes the N registrations into the data dir directly (through
//!    `signpost::store`, one commit), because N HTTP registrations cost O(N²) (see
//!    BENCHMARKS.md).
//! 4. Restarts signpost (SIGTERM, same data dir), or starts it on the preloaded data dir:
//!    every check starts over, so the first probe of each instance after the start shows the
//!    start-up jitter (no thundering herd). Waits until all are passing again.
//! 5. Steady state over `--measure`: signpost's CPU time (utime+stime of `/proc/<pid>/stat`)
//!    per wall second and per probe, its RSS, probes achieved vs N/interval, per-target gaps
//!    between probes, and the spread of probe arrival times modulo the interval (10 buckets).
//! 6. Failure detection, `--rounds` times: flips `--fail` random targets to 503 at once and
//!    polls DNS (UDP A queries with EDNS 4096 for each affected service, every `--poll`) until
//!    each failed instance's address is gone; then flips them back and waits until they
//!    return. Reports p50/p99/max of (gone − flip) against interval × failures + timeout.
//!
//! Every wait is bounded; all traffic goes to 127.0.0.1; signpost and the target processes are
//! killed when this program exits (Drop guards).
//!
//! Usage: `health_bench [--count 10000] [--interval 1s] [--timeout 500ms] [--failures 1]
//! [--measure 20] [--bin target/release/signpost] [--fail 50] [--rounds 3] [--poll 5ms]
//! [--seed 1] [--targets 0 (auto)] [--setup-timeout 900s] [--preload]`

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::error::Error;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::StatusCode;
use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use serde_json::{Value, json};

type Res<T> = Result<T, Box<dyn Error>>;

/// Instances per service (`svc-0000` holds instances 0..99, and so on).
const PER_SERVICE: usize = 100;
/// Arrivals kept per target process between two `take`s; more are counted as dropped.
const MAX_ARRIVALS: usize = 8_000_000;
/// File descriptors budgeted per target (listener, checker connection, slack for a reconnect).
const FDS_PER_TARGET: usize = 3;
/// Concurrent registration requests.
const REGISTER_CONCURRENCY: usize = 32;

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("--target-process") {
        let count = argv.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        if let Err(e) = target_process(count) {
            eprintln!("target process: {e}");
            std::process::exit(1);
        }
        std::process::exit(0);
    }
    let args = match Args::parse(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("health_bench: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("health_bench: FAILED: {e}");
        std::process::exit(1);
    }
}

const USAGE: &str = "usage: health_bench [--count N] [--interval D] [--timeout D] [--failures K] \
[--measure SECS] [--bin PATH] [--fail N] [--rounds N] [--poll D] [--seed N] [--targets PROCS] \
[--setup-timeout D] [--preload]";

// ---------------------------------------------------------------------------------------------
// Arguments

struct Args {
    count: usize,
    interval: Duration,
    timeout: Duration,
    failures: u32,
    measure: Duration,
    bin: PathBuf,
    fail: usize,
    rounds: usize,
    poll: Duration,
    seed: u64,
    /// Target processes; 0 picks the fewest the open-file limit allows.
    targets: usize,
    setup_timeout: Duration,
    /// Write the registrations into the store directly instead of over HTTP (see `preload`).
    preload: bool,
}

fn duration(s: &str) -> Res<Duration> {
    if let Ok(secs) = s.parse::<f64>() {
        return Ok(Duration::from_secs_f64(secs));
    }
    Ok(humantime::parse_duration(s)?)
}

impl Args {
    fn parse(argv: &[String]) -> Res<Args> {
        let exe = std::env::current_exe()?;
        // target/release/examples/health_bench → target/release/signpost
        let default_bin = exe
            .parent()
            .and_then(Path::parent)
            .map(|d| d.join("signpost"))
            .unwrap_or_else(|| PathBuf::from("target/release/signpost"));
        let mut a = Args {
            count: 10_000,
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            failures: 1,
            measure: Duration::from_secs(20),
            bin: default_bin,
            fail: 50,
            rounds: 3,
            poll: Duration::from_millis(5),
            seed: 1,
            targets: 0,
            setup_timeout: Duration::from_secs(900),
            preload: false,
        };
        let mut it = argv.iter();
        while let Some(flag) = it.next() {
            if flag == "-h" || flag == "--help" {
                println!("{USAGE}");
                std::process::exit(0);
            }
            if flag == "--preload" {
                a.preload = true;
                continue;
            }
            let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--count" => a.count = v.parse()?,
                "--interval" => a.interval = duration(v)?,
                "--timeout" => a.timeout = duration(v)?,
                "--failures" => a.failures = v.parse()?,
                "--measure" => a.measure = duration(v)?,
                "--bin" => a.bin = PathBuf::from(v),
                "--fail" => a.fail = v.parse()?,
                "--rounds" => a.rounds = v.parse()?,
                "--poll" => a.poll = duration(v)?,
                "--seed" => a.seed = v.parse()?,
                "--targets" => a.targets = v.parse()?,
                "--setup-timeout" => a.setup_timeout = duration(v)?,
                _ => return Err(format!("unknown flag {flag}").into()),
            }
        }
        if a.count == 0 || a.count > 60_000 {
            return Err("--count must be 1..=60000".into());
        }
        if a.interval < Duration::from_millis(10) || a.timeout.is_zero() {
            return Err("--interval must be at least 10ms and --timeout above 0".into());
        }
        if !(1..=100).contains(&a.failures) {
            return Err("--failures must be 1..=100".into());
        }
        // The child runs in a temp dir, so a relative path must be made absolute here.
        a.bin = a
            .bin
            .canonicalize()
            .map_err(|e| format!("signpost binary {}: {e}", a.bin.display()))?;
        a.fail = a.fail.min(a.count);
        a.poll = a.poll.max(Duration::from_millis(1));
        Ok(a)
    }

    /// What the contract promises: the last failing probe starts at most
    /// interval × failures after the flip and ends within its timeout.
    fn bound(&self) -> Duration {
        self.interval * self.failures + self.timeout
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// splitmix64: a reproducible choice of targets without a rand dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// `k` distinct values below `n`.
    fn choose(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut picked = HashSet::new();
        let mut out = Vec::with_capacity(k);
        while out.len() < k.min(n) {
            let i = (self.next() % n as u64) as usize;
            if picked.insert(i) {
                out.push(i);
            }
        }
        out
    }
}

/// The soft open-file limit of this process, from `/proc/self/limits`.
fn open_file_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn clk_tck() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// utime + stime of a process (all its threads), in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After "pid (comm) ": state is field 3, utime field 14, stime field 15.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// A `Vm*` or `Threads` line of `/proc/<pid>/status`, in its own unit (kB for Vm*).
fn status_field(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `/proc/loadavg`: the machine is shared, so other work shows here.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

// ---------------------------------------------------------------------------------------------
// Target process: `count` HTTP targets on one tokio runtime, driven over stdin/stdout.
//
// Protocol (one line each): stdout starts with `ports P0 P1 …`. Commands on stdin:
// `set CODE I J …` → `ok NS` (the time the codes were set); `take` → `N` then N lines
// `I NS` (every arrival since the last take), then `dropped D`; `quit` or end of input exits.

struct Fleet {
    codes: Vec<AtomicU16>,
    arrivals: Mutex<Vec<(u32, u64)>>,
    dropped: AtomicU64,
}

#[derive(Clone)]
struct Target {
    fleet: Arc<Fleet>,
    idx: u32,
}

async fn answer(State(t): State<Target>) -> StatusCode {
    let at = now_ns();
    {
        let mut a = t.fleet.arrivals.lock().expect("arrivals lock");
        if a.len() < MAX_ARRIVALS {
            a.push((t.idx, at));
        } else {
            t.fleet.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
    let code = t.fleet.codes[t.idx as usize].load(Ordering::Relaxed);
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn target_process(count: usize) -> Res<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let fleet = Arc::new(Fleet {
        codes: (0..count).map(|_| AtomicU16::new(200)).collect(),
        arrivals: Mutex::new(Vec::with_capacity(1 << 20)),
        dropped: AtomicU64::new(0),
    });
    let ports = rt.block_on(async {
        let mut ports = Vec::with_capacity(count);
        for i in 0..count {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            ports.push(listener.local_addr()?.port());
            let app = axum::Router::new()
                .route("/health", axum::routing::get(answer))
                .with_state(Target {
                    fleet: fleet.clone(),
                    idx: i as u32,
                });
            tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
        }
        Ok::<_, std::io::Error>(ports)
    })?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
    writeln!(out, "ports {}", list.join(" "))?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let mut words = line.split_whitespace();
        match words.next() {
            Some("set") => {
                let code: u16 = words.next().ok_or("set: no code")?.parse()?;
                for w in words {
                    let i: usize = w.parse()?;
                    fleet
                        .codes
                        .get(i)
                        .ok_or("set: bad index")?
                        .store(code, Ordering::SeqCst);
                }
                writeln!(out, "ok {}", now_ns())?;
            }
            Some("take") => {
                let taken = std::mem::take(&mut *fleet.arrivals.lock().expect("arrivals lock"));
                writeln!(out, "{}", taken.len())?;
                for (i, t) in &taken {
                    writeln!(out, "{i} {t}")?;
                }
                writeln!(out, "dropped {}", fleet.dropped.swap(0, Ordering::Relaxed))?;
            }
            Some("quit") | None => break,
            Some(other) => return Err(format!("unknown command {other}").into()),
        }
        out.flush()?;
    }
    Ok(())
}

/// A target process as the orchestrator sees it; killed when dropped.
struct Targets {
    child: Child,
    stdin: ChildStdin,
    out: BufReader<ChildStdout>,
    /// Global index of its first target.
    base: usize,
    count: usize,
}

impl Targets {
    /// Starts a process with `count` targets; returns it and its ports.
    fn spawn(base: usize, count: usize) -> Res<(Targets, Vec<u16>)> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["--target-process", &count.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let out = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut t = Targets {
            child,
            stdin,
            out,
            base,
            count,
        };
        let line = t.line()?;
        let ports: Vec<u16> = line
            .strip_prefix("ports ")
            .ok_or_else(|| format!("target process said {line:?}"))?
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        if ports.len() != count {
            return Err(format!("target process bound {} of {count} ports", ports.len()).into());
        }
        Ok((t, ports))
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// One line of output; end of output (the process died) is an error.
    fn line(&mut self) -> Res<String> {
        let mut s = String::new();
        if self.out.read_line(&mut s)? == 0 {
            return Err(format!(
                "target process {} exited: {:?}",
                self.child.id(),
                self.child.try_wait()
            )
            .into());
        }
        Ok(s.trim_end().to_string())
    }

    /// Sets the answer of targets (global indexes); returns when it took effect (ns).
    fn set(&mut self, code: u16, global: &[usize]) -> Res<u64> {
        let idx: Vec<String> = global.iter().map(|g| (g - self.base).to_string()).collect();
        writeln!(self.stdin, "set {code} {}", idx.join(" "))?;
        self.stdin.flush()?;
        let line = self.line()?;
        Ok(line
            .strip_prefix("ok ")
            .ok_or_else(|| format!("set: {line:?}"))?
            .parse()?)
    }

    /// Every arrival since the last take, as (global index, ns), and how many were dropped.
    fn take(&mut self) -> Res<(Vec<(usize, u64)>, u64)> {
        writeln!(self.stdin, "take")?;
        self.stdin.flush()?;
        let n: usize = self.line()?.parse()?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let line = self.line()?;
            let (i, t) = line.split_once(' ').ok_or("take: bad line")?;
            v.push((self.base + i.parse::<usize>()?, t.parse()?));
        }
        let line = self.line()?;
        let dropped = line
            .strip_prefix("dropped ")
            .ok_or("take: no dropped line")?
            .parse()?;
        Ok((v, dropped))
    }
}

impl Drop for Targets {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// All target processes.
struct Fleets {
    procs: Vec<Targets>,
    ports: Vec<u16>,
}

impl Fleets {
    fn start(count: usize, procs: usize) -> Res<Fleets> {
        let per = count.div_ceil(procs);
        let mut out = Fleets {
            procs: Vec::new(),
            ports: Vec::with_capacity(count),
        };
        let mut base = 0;
        while base < count {
            let n = per.min(count - base);
            let (t, ports) = Targets::spawn(base, n)?;
            out.ports.extend(ports);
            out.procs.push(t);
            base += n;
        }
        Ok(out)
    }

    /// Every arrival since the last take, sorted by time; errors if any were dropped.
    fn take(&mut self) -> Res<Vec<(usize, u64)>> {
        let mut all = Vec::new();
        for p in &mut self.procs {
            let (v, dropped) = p.take()?;
            if dropped > 0 {
                return Err(format!("{dropped} arrivals dropped (over {MAX_ARRIVALS})").into());
            }
            all.extend(v);
        }
        all.sort_unstable_by_key(|&(_, t)| t);
        Ok(all)
    }

    /// Sets `code` on the targets `global`; returns each one's flip time (ns).
    fn set(&mut self, code: u16, global: &[usize]) -> Res<HashMap<usize, u64>> {
        let mut at = HashMap::new();
        for p in &mut self.procs {
            let mine: Vec<usize> = global
                .iter()
                .copied()
                .filter(|g| (p.base..p.base + p.count).contains(g))
                .collect();
            if mine.is_empty() {
                continue;
            }
            let t = p.set(code, &mine)?;
            at.extend(mine.into_iter().map(|g| (g, t)));
        }
        Ok(at)
    }

    fn cpu_ticks(&self) -> u64 {
        self.procs.iter().filter_map(|p| cpu_ticks(p.pid())).sum()
    }
}

// ---------------------------------------------------------------------------------------------
// The signpost child process

/// `signpost serve` as a child; killed (SIGKILL) and reaped when dropped.
struct Signpost {
    child: Child,
    dns: SocketAddr,
    http: SocketAddr,
    /// When its `signpost ready` line was read (ns).
    ready_ns: u64,
    /// The last lines of its stderr, for error messages.
    tail: Arc<Mutex<VecDeque<String>>>,
}

impl Signpost {
    fn start(bin: &Path, cwd: &Path, data: &Path) -> Res<Signpost> {
        let mut child = Command::new(bin)
            .current_dir(cwd)
            .env("RUST_LOG", "info")
            .args([
                "serve",
                "--dns-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
                "--log-format",
                "json",
            ])
            .arg("--data-dir")
            .arg(data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let err = BufReader::new(child.stderr.take().ok_or("no stderr")?);
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = mpsc::channel();
        let keep = tail.clone();
        // Drains stderr for the life of the process, so it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in err.lines() {
                let Ok(line) = line else { break };
                {
                    let mut t = keep.lock().expect("tail lock");
                    if t.len() == 20 {
                        t.pop_front();
                    }
                    t.push_back(line.clone());
                }
                let _ = tx.send(line);
            }
        });
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(line) => line,
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let t: Vec<String> = tail.lock().expect("tail lock").iter().cloned().collect();
                    return Err(format!(
                        "no `signpost ready` line ({e}); stderr:\n{}",
                        t.join("\n")
                    )
                    .into());
                }
            };
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if v["fields"]["message"] != "signpost ready" {
                continue;
            }
            let f = &v["fields"];
            let dns = f["dns"].as_str().ok_or("ready: no dns")?;
            let dns = dns.split(',').next().unwrap_or(dns).parse()?;
            let http = f["http"].as_str().ok_or("ready: no http")?.parse()?;
            return Ok(Signpost {
                child,
                dns,
                http,
                ready_ns: now_ns(),
                tail,
            });
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits (at most a minute) for it to exit; returns how long it took.
    fn stop(mut self) -> Res<Duration> {
        let t0 = Instant::now();
        Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()?;
        while t0.elapsed() < Duration::from_secs(60) {
            if let Some(st) = self.child.try_wait()? {
                if !st.success() {
                    return Err(
                        format!("signpost exited with {st}; stderr:\n{}", self.tail()).into(),
                    );
                }
                return Ok(t0.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err("signpost did not exit within 60 s of SIGTERM".into())
    }

    fn tail(&self) -> String {
        let t = self.tail.lock().expect("tail lock");
        t.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    fn alive(&mut self) -> Res<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(st) => Err(format!("signpost exited: {st}; stderr:\n{}", self.tail()).into()),
        }
    }
}

impl Drop for Signpost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP API: registration and waiting for health

struct Instance {
    service: String,
    id: String,
    address: Ipv4Addr,
    body: Value,
}

fn instances(args: &Args, ports: &[u16]) -> Vec<Instance> {
    let check = json!({
        "interval": humantime::format_duration(args.interval).to_string(),
        "timeout": humantime::format_duration(args.timeout).to_string(),
        "failures_before_critical": args.failures,
    });
    ports
        .iter()
        .enumerate()
        .map(|(g, &port)| {
            // A distinct (never contacted) address per instance, so DNS shows each one.
            let address = Ipv4Addr::from(0x0A00_0000u32 + g as u32 + 1);
            let mut c = check.clone();
            c["http"] = json!(format!("http://127.0.0.1:{port}/health"));
            Instance {
                service: format!("svc-{:04}", g / PER_SERVICE),
                id: format!("i{g}"),
                address,
                body: json!({"address": address.to_string(), "port": port, "check": c}),
            }
        })
        .collect()
}

/// An error and its sources, `a: b: c`.
fn chain(e: &(dyn Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn http_client() -> Res<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .no_proxy()
        .build()?)
}

async fn register_all(http: SocketAddr, insts: Arc<Vec<Instance>>) -> Res<()> {
    let client = http_client()?;
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..REGISTER_CONCURRENCY {
        let (client, next, insts) = (client.clone(), next.clone(), insts.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(inst) = insts.get(i) else {
                    return Ok::<_, String>(());
                };
                let url = format!(
                    "http://{http}/v1/services/{}/instances/{}",
                    inst.service, inst.id
                );
                let r = client
                    .put(&url)
                    .json(&inst.body)
                    .send()
                    .await
                    .map_err(|e| format!("PUT {url}: {}", chain(&e)))?;
                if r.status() != 200 {
                    let code = r.status();
                    let text = r.text().await.unwrap_or_default();
                    return Err(format!("PUT {url}: {code} {text}"));
                }
            }
        });
    }
    let progress = {
        let (next, total) = (next.clone(), insts.len());
        tokio::spawn(async move {
            let t0 = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let done = next.load(Ordering::Relaxed).min(total);
                eprintln!(
                    "  … registering: {done}/{total} after {:.0} s",
                    t0.elapsed().as_secs_f64()
                );
            }
        })
    };
    let result = async {
        while let Some(r) = tasks.join_next().await {
            r??;
        }
        Ok(())
    }
    .await;
    progress.abort();
    result
}

/// Passing instances summed over the `svc-` services, and the registry index.
async fn passing(client: &reqwest::Client, http: SocketAddr) -> Res<(usize, u64)> {
    let r = client
        .get(format!("http://{http}/v1/services"))
        .send()
        .await?;
    let index = r
        .headers()
        .get("x-signpost-index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let v: Value = r.json().await?;
    let p = v["services"]
        .as_array()
        .ok_or("no services array")?
        .iter()
        .filter(|s| s["name"].as_str().is_some_and(|n| n.starts_with("svc-")))
        .filter_map(|s| s["passing"].as_u64())
        .sum::<u64>() as usize;
    Ok((p, index))
}

/// Waits until `n` instances pass; returns how long that took. Bounded by `limit`; prints
/// progress (passing, and status changes per second from the index) every 10 s.
async fn wait_passing(http: SocketAddr, n: usize, limit: Duration, what: &str) -> Res<Duration> {
    let client = http_client()?;
    let t0 = Instant::now();
    let mut said = (Instant::now(), passing(&client, http).await?.1);
    loop {
        let (p, index) = passing(&client, http).await?;
        if p >= n {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > limit {
            return Err(format!("{what}: {p} of {n} passing after {limit:?}").into());
        }
        if said.0.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  … {what}: {p}/{n} passing after {:.0} s; {:.1} registry changes/s",
                t0.elapsed().as_secs_f64(),
                index.saturating_sub(said.1) as f64 / said.0.elapsed().as_secs_f64()
            );
            said = (Instant::now(), index);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Prints what the instances that are not passing say (their check output), to explain a
/// setup that did not converge.
async fn diagnose(http: SocketAddr) -> Res<()> {
    let client = http_client()?;
    let v: Value = client
        .get(format!("http://{http}/v1/services"))
        .send()
        .await?
        .json()
        .await?;
    let mut outputs: BTreeMap<String, usize> = BTreeMap::new();
    let (mut total, mut pass) = (0, 0);
    for svc in v["services"].as_array().ok_or("no services array")? {
        let (i, p) = (
            svc["instances"].as_u64().unwrap_or(0),
            svc["passing"].as_u64().unwrap_or(0),
        );
        total += i;
        pass += p;
        if p == i {
            continue;
        }
        let name = svc["name"].as_str().unwrap_or_default();
        let d: Value = client
            .get(format!("http://{http}/v1/services/{name}"))
            .send()
            .await?
            .json()
            .await?;
        for inst in d["instances"].as_array().into_iter().flatten() {
            if inst["health"]["status"] != "passing" {
                let out = inst["health"]["output"].as_str().unwrap_or_default();
                *outputs.entry(out.to_string()).or_default() += 1;
            }
        }
    }
    println!("  diagnosis: {pass} of {total} registered instances passing; the others say:");
    for (out, k) in &outputs {
        println!("    {k:>6} × {out}");
    }
    Ok(())
}

/// Median latency of registering and deregistering a check-less instance (service
/// `bench-write`) now: an fsync plus a rebuild of the DNS table.
async fn write_latency(http: SocketAddr, samples: usize) -> Res<(f64, f64)> {
    let client = http_client()?;
    let (mut put, mut del) = (Vec::new(), Vec::new());
    for k in 0..samples {
        let url = format!("http://{http}/v1/services/bench-write/instances/w{k}");
        let t = Instant::now();
        let r = client
            .put(&url)
            .json(&json!({"address": "192.0.2.1", "port": 80}))
            .send()
            .await?;
        put.push(t.elapsed().as_secs_f64() * 1e3);
        if r.status() != 200 {
            return Err(format!("PUT {url}: {}", r.status()).into());
        }
        let t = Instant::now();
        let r = client.delete(&url).send().await?;
        del.push(t.elapsed().as_secs_f64() * 1e3);
        if r.status() != 204 {
            return Err(format!("DELETE {url}: {}", r.status()).into());
        }
    }
    put.sort_by(f64::total_cmp);
    del.sort_by(f64::total_cmp);
    Ok((pct(&put, 50.0), pct(&del, 50.0)))
}

/// Writes the registrations straight into the store (one commit), as a restart with them
/// registered finds them: what `--preload` uses instead of N HTTP registrations, whose cost
/// grows with N² (each write rebuilds the whole DNS table).
fn preload(data: &Path, args: &Args, insts: &[Instance], ports: &[u16]) -> Res<()> {
    use signpost::model::ServiceName;
    use signpost::model::{
        CheckKind, CheckSpec, Instance as Model, InstanceId, InstanceKey, Registration,
    };
    use signpost::store::{Change, Embedded};
    let bad = |e: signpost::model::InvalidField| format!("{e:?}");
    let mut changes = Vec::with_capacity(insts.len());
    for (inst, &port) in insts.iter().zip(ports) {
        let key = InstanceKey {
            service: ServiceName::parse(&inst.service).map_err(bad)?,
            id: InstanceId::parse(&inst.id).map_err(bad)?,
        };
        let check = CheckSpec::new(
            CheckKind::Http(format!("http://127.0.0.1:{port}/health")),
            Some(args.interval),
            Some(args.timeout),
            None,
            Some(args.failures),
        )
        .map_err(bad)?;
        let registration = Registration {
            address: inst.address.to_string(),
            port,
            check: Some(check),
            ..Registration::default()
        };
        changes.push(Change::Put(Box::new(
            Model::new(key, registration).map_err(bad)?,
        )));
    }
    std::fs::create_dir_all(data)?;
    let store = Embedded::open(data)?;
    store.apply(&changes, changes.len() as u64)?;
    store.flush()?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// DNS

struct Dns {
    sock: UdpSocket,
    server: SocketAddr,
    id: u16,
    buf: Vec<u8>,
}

impl Dns {
    fn new(server: SocketAddr) -> Res<Dns> {
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;
        Ok(Dns {
            sock,
            server,
            id: 1,
            buf: vec![0; 65535],
        })
    }

    /// The A addresses of `<service>.service.internal.` (empty on NXDOMAIN); `None` if no
    /// reply came within 200 ms.
    fn a(&mut self, service: &str) -> Res<Option<HashSet<Ipv4Addr>>> {
        self.id = self.id.wrapping_add(1);
        let mut m = Message::query();
        m.metadata.id = self.id;
        m.metadata.recursion_desired = false;
        m.add_query(Query::query(
            Name::from_ascii(format!("{service}.service.internal."))?,
            RecordType::A,
        ));
        let mut e = Edns::new();
        e.set_max_payload(4096);
        m.set_edns(e);
        self.sock.send_to(&m.to_vec()?, self.server)?;
        loop {
            let n = match self.sock.recv(&mut self.buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            };
            let reply = Message::from_vec(&self.buf[..n])?;
            if reply.metadata.id != self.id {
                continue; // a late reply to an earlier query
            }
            if reply.metadata.truncation {
                return Err(format!("{service}: truncated UDP answer").into());
            }
            return Ok(Some(
                reply
                    .answers
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::A(a) => Some(a.0),
                        _ => None,
                    })
                    .collect(),
            ));
        }
    }
}

/// What `watch` saw: (instance index, delay ns) for each instance that changed as awaited,
/// and the round-trip time of every query (ms; `None`: no reply within 200 ms).
type Watched = (Vec<(usize, u64)>, Vec<Option<f64>>);

/// Polls DNS every `poll` until each instance in `pending` (index → flip time, ns) is absent
/// (`present = false`) or present again (`present = true`). Returns (index, delay ns) for
/// those seen, and the round-trip time of every query (ms; `None`: no reply within 200 ms);
/// gives up at `limit`.
fn watch(
    dns: &mut Dns,
    insts: &[Instance],
    pending: &HashMap<usize, u64>,
    present: bool,
    poll: Duration,
    limit: Duration,
) -> Res<Watched> {
    let mut by_service: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for &g in pending.keys() {
        by_service.entry(&insts[g].service).or_default().push(g);
    }
    let mut seen = Vec::new();
    let mut rtts = Vec::new();
    let t0 = Instant::now();
    while !by_service.is_empty() && t0.elapsed() < limit {
        let round = Instant::now();
        for (svc, left) in by_service.iter_mut() {
            let sent = Instant::now();
            let reply = dns.a(svc)?;
            rtts.push(reply.is_some().then(|| sent.elapsed().as_secs_f64() * 1e3));
            let Some(addrs) = reply else { continue };
            let at = now_ns();
            left.retain(|&g| {
                if addrs.contains(&insts[g].address) == present {
                    seen.push((g, at.saturating_sub(pending[&g])));
                    false
                } else {
                    true
                }
            });
        }
        by_service.retain(|_, left| !left.is_empty());
        std::thread::sleep(poll.saturating_sub(round.elapsed()));
    }
    Ok((seen, rtts))
}

// ---------------------------------------------------------------------------------------------
// Analysis

/// Share of `times` in each of `buckets` equal parts of the interval (time modulo interval).
fn phase_histogram(times: &[u64], interval: Duration, buckets: usize) -> Vec<usize> {
    let iv = interval.as_nanos() as u64;
    let mut h = vec![0; buckets];
    for &t in times {
        let b = ((t % iv) as u128 * buckets as u128 / iv as u128) as usize;
        h[b.min(buckets - 1)] += 1;
    }
    h
}

fn show_histogram(label: &str, h: &[usize]) -> f64 {
    let total: usize = h.iter().sum();
    let shares: Vec<String> = h
        .iter()
        .map(|&c| format!("{:.1}", 100.0 * c as f64 / total.max(1) as f64))
        .collect();
    let (max, min) = (*h.iter().max().unwrap_or(&0), *h.iter().min().unwrap_or(&0));
    let ratio = if min == 0 {
        f64::INFINITY
    } else {
        max as f64 / min as f64
    };
    println!("  {label}: [{}] %, max/min {ratio:.2}", shares.join(" "));
    ratio
}

fn show_delays(label: &str, delays: &[u64], expected: usize, bound: Duration) {
    let mut v: Vec<f64> = delays.iter().map(|&d| ms(d)).collect();
    v.sort_by(f64::total_cmp);
    let over = v.iter().filter(|&&d| d > bound.as_secs_f64() * 1e3).count();
    println!(
        "  {label}: n={} of {expected}, min {:.0} ms, p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; \
         bound {:.0} ms, over bound: {over}",
        v.len(),
        pct(&v, 0.0),
        pct(&v, 50.0),
        pct(&v, 99.0),
        pct(&v, 100.0),
        bound.as_secs_f64() * 1e3,
    );
}

// ---------------------------------------------------------------------------------------------
// The run

fn run(args: &Args) -> Res<()> {
    let n = args.count;
    let tck = clk_tck();
    let iv_ns = args.interval.as_nanos() as u64;
    if !args.bin.is_file() {
        return Err(format!("no signpost binary at {}", args.bin.display()).into());
    }
    let limit = open_file_limit().unwrap_or(1024);
    let procs = if args.targets > 0 {
        args.targets
    } else {
        (n * FDS_PER_TARGET).div_ceil(limit.saturating_sub(256).max(1))
    };
    println!("# health_bench");
    println!(
        "  count {n}, interval {}, timeout {}, failures_before_critical {}, measure {:.0} s",
        humantime::format_duration(args.interval),
        humantime::format_duration(args.timeout),
        args.failures,
        args.measure.as_secs_f64()
    );
    println!(
        "  open-file limit {limit}; targets in {procs} process(es); signpost {}",
        args.bin.display()
    );
    println!("  load average at start: {}", loadavg());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    let t = Instant::now();
    let mut fleets = Fleets::start(n, procs)?;
    println!(
        "  {n} targets listening in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let insts = Arc::new(instances(args, &fleets.ports));

    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    println!("\n## setup");
    if args.preload {
        let t = Instant::now();
        preload(&data, args, &insts, &fleets.ports)?;
        println!(
            "  wrote {n} registrations into the store directly in {:.1} s (--preload)",
            t.elapsed().as_secs_f64()
        );
    } else {
        // Register over HTTP, wait for every check to pass, then stop: the restart below is
        // the start-up measured.
        let sp = Signpost::start(&args.bin, tmp.path(), &data)?;
        println!(
            "  signpost pid {} dns {} http {}",
            sp.pid(),
            sp.dns,
            sp.http
        );
        let t = Instant::now();
        let c0 = cpu_ticks(sp.pid()).unwrap_or(0);
        if let Err(e) = rt.block_on(register_all(sp.http, insts.clone())) {
            println!(
                "  registration failed after {:.0} s: {e}",
                t.elapsed().as_secs_f64()
            );
            let _ = rt.block_on(diagnose(sp.http));
            return Err(e);
        }
        let reg = t.elapsed();
        println!(
            "  registered {n} over HTTP in {:.1} s ({:.0}/s)",
            reg.as_secs_f64(),
            n as f64 / reg.as_secs_f64()
        );
        match rt.block_on(wait_passing(
            sp.http,
            n,
            args.setup_timeout,
            "after registration",
        )) {
            Ok(pass) => println!(
                "  all {n} passing {:.1} s after the last registration; signpost CPU {:.0} s \
                 so far",
                pass.as_secs_f64(),
                (cpu_ticks(sp.pid()).unwrap_or(0) - c0) as f64 / tck as f64
            ),
            Err(e) => {
                let _ = rt.block_on(diagnose(sp.http));
                return Err(e);
            }
        }
        let down = sp.stop()?;
        println!("  stopped (SIGTERM) in {:.2} s", down.as_secs_f64());
    }

    // Start-up: every check starts from its jitter and the instance is critical until its
    // first probe passes.
    fleets.take()?; // arrivals before this start
    let spawn_ns = now_ns();
    let mut sp = Signpost::start(&args.bin, tmp.path(), &data)?;
    let ready_ns = sp.ready_ns;
    let start_ticks = cpu_ticks(sp.pid()).unwrap_or(0);
    println!(
        "  started signpost pid {} (dns {} http {}) on the {n} registrations: ready {:.0} ms \
         after spawn",
        sp.pid(),
        sp.dns,
        sp.http,
        ms(ready_ns - spawn_ns)
    );
    let waited = rt.block_on(wait_passing(sp.http, n, args.setup_timeout, "after start"));
    let all_passing_ns = now_ns();
    let start_cpu = (cpu_ticks(sp.pid()).unwrap_or(0) - start_ticks) as f64 / tck as f64;
    let restart_arrivals = fleets.take()?;
    match &waited {
        Ok(pass) => println!(
            "  all {n} passing {:.1} s after ready; signpost CPU meanwhile {start_cpu:.1} s",
            pass.as_secs_f64()
        ),
        Err(e) => println!("  NOT all passing: {e}; signpost CPU meanwhile {start_cpu:.1} s"),
    }

    println!("\n## start-up spread (first probe of each instance after the restart)");
    let mut first: HashMap<usize, u64> = HashMap::new();
    for &(g, t) in &restart_arrivals {
        first.entry(g).or_insert(t);
    }
    let mut before = 0;
    let mut late = 0;
    let mut buckets = vec![0usize; 10];
    for &t in first.values() {
        if t < ready_ns {
            before += 1;
            buckets[0] += 1;
        } else if t - ready_ns >= iv_ns {
            late += 1;
        } else {
            buckets[((t - ready_ns) * 10 / iv_ns) as usize] += 1;
        }
    }
    let last_first = first.values().max().copied().unwrap_or(ready_ns);
    println!(
        "  {} of {n} instances probed; last first probe {:.0} ms after ready; {before} before \
         the ready line (counted in bucket 1), {late} later than one interval",
        first.len(),
        ms(last_first.saturating_sub(ready_ns))
    );
    let startup_ratio = show_histogram(
        "first probes by tenth of the interval after ready",
        &buckets,
    );
    // Probes per interval while the checks report their first results.
    let windows = ((all_passing_ns.saturating_sub(ready_ns)) / iv_ns + 1).min(30) as usize;
    let mut per = vec![0usize; windows];
    for &(_, t) in &restart_arrivals {
        if t >= ready_ns {
            let w = ((t - ready_ns) / iv_ns) as usize;
            if w < windows {
                per[w] += 1;
            }
        }
    }
    println!(
        "  probes per interval after ready, first 30 intervals at most (expected {n} each): {:?}",
        per
    );
    if let Err(e) = waited {
        let _ = rt.block_on(diagnose(sp.http));
        return Err(e);
    }

    // Steady state.
    println!("\n## steady state");
    std::thread::sleep(args.interval * 3);
    sp.alive()?;
    fleets.take()?;
    let api = http_client()?;
    let (_, index0) = rt.block_on(passing(&api, sp.http))?;
    let pid = sp.pid();
    let (c0, f0, w0, t0) = (
        cpu_ticks(pid).ok_or("no /proc stat")?,
        fleets.cpu_ticks(),
        Instant::now(),
        now_ns(),
    );
    let bench0 = cpu_ticks(std::process::id()).unwrap_or(0);
    std::thread::sleep(args.measure);
    let (c1, f1, wall, t1) = (
        cpu_ticks(pid).ok_or("no /proc stat")?,
        fleets.cpu_ticks(),
        w0.elapsed(),
        now_ns(),
    );
    let bench1 = cpu_ticks(std::process::id()).unwrap_or(0);
    let (passing1, index1) = rt.block_on(passing(&api, sp.http))?;
    let rss = status_field(pid, "VmRSS:").unwrap_or(0);
    let hwm = status_field(pid, "VmHWM:").unwrap_or(0);
    let threads = status_field(pid, "Threads:").unwrap_or(0);
    let fds = open_fds(pid).unwrap_or(0);
    let arrivals: Vec<(usize, u64)> = fleets
        .take()?
        .into_iter()
        .filter(|&(_, t)| (t0..t1).contains(&t))
        .collect();
    let secs = wall.as_secs_f64();
    let cpu = (c1 - c0) as f64 / tck as f64;
    let probes = arrivals.len();
    let expected = n as f64 * (t1 - t0) as f64 / iv_ns as f64;
    println!(
        "  window {secs:.1} s; probes {probes} = {:.0}/s, expected {:.0}/s ({:.1}%)",
        probes as f64 / secs,
        n as f64 / args.interval.as_secs_f64(),
        100.0 * probes as f64 / expected
    );
    println!(
        "  signpost CPU {:.2} s per s ({:.1}% of one core), {:.1} µs per probe; RSS {:.0} MiB \
         (peak {:.0} MiB), {threads} threads, {fds} open fds",
        cpu / secs,
        100.0 * cpu / secs,
        1e6 * cpu / probes.max(1) as f64,
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    println!(
        "  for context: targets CPU {:.2} s per s, this orchestrator {:.2} s per s (clock ticks \
         {tck}/s)",
        (f1 - f0) as f64 / tck as f64 / secs,
        (bench1 - bench0) as f64 / tck as f64 / secs
    );
    println!(
        "  registry changes during the window: {} (status flaps; 0 expected), passing at the \
         end {passing1} of {n}",
        index1.saturating_sub(index0)
    );
    let times: Vec<u64> = arrivals.iter().map(|&(_, t)| t).collect();
    let steady_ratio = show_histogram(
        "probes by tenth of the interval (time mod interval)",
        &phase_histogram(&times, args.interval, 10),
    );
    let fine = phase_histogram(&times, args.interval, 100);
    println!(
        "  in 100 buckets: max {} min {} (mean {:.0}) probes per bucket",
        fine.iter().max().unwrap_or(&0),
        fine.iter().min().unwrap_or(&0),
        probes as f64 / 100.0
    );
    let mut last: HashMap<usize, u64> = HashMap::new();
    let mut gaps = Vec::with_capacity(probes);
    for &(g, t) in &arrivals {
        if let Some(prev) = last.insert(g, t) {
            gaps.push(ms(t - prev));
        }
    }
    gaps.sort_by(f64::total_cmp);
    println!(
        "  gap between probes of one target: p1 {:.1} ms, p50 {:.1} ms, p99 {:.1} ms, max {:.1} \
         ms; targets probed {} of {n}",
        pct(&gaps, 1.0),
        pct(&gaps, 50.0),
        pct(&gaps, 99.0),
        pct(&gaps, 100.0),
        last.len()
    );

    let (put_ms, del_ms) = rt.block_on(write_latency(sp.http, 5))?;
    println!(
        "  one registry write now (check-less instance, median of 5): PUT {put_ms:.1} ms, \
         DELETE {del_ms:.1} ms"
    );

    // Failure detection.
    println!(
        "\n## failure detection ({} rounds of {} targets flipped to 503 at once)",
        args.rounds, args.fail
    );
    let mut dns = Dns::new(sp.dns)?;
    let mut rng = Rng(args.seed);
    let mut down_delays = Vec::new();
    let mut up_delays = Vec::new();
    let mut to_probe = Vec::new();
    let mut probe_to_gone = Vec::new();
    let mut rtts: Vec<Option<f64>> = Vec::new();
    let give_up = args.bound() * 4 + Duration::from_secs(10);
    for round in 0..args.rounds {
        let picked = rng.choose(n, args.fail);
        // Each must be in DNS before the flip.
        let services: HashSet<&str> = picked.iter().map(|&g| &insts[g].service[..]).collect();
        for s in &services {
            let addrs = dns.a(s)?.ok_or("no DNS reply")?;
            for &g in picked.iter().filter(|&&g| insts[g].service == *s) {
                if !addrs.contains(&insts[g].address) {
                    return Err(format!("{} not in DNS before the flip", insts[g].id).into());
                }
            }
        }
        fleets.take()?; // only arrivals after the flip count below
        let flipped = fleets.set(503, &picked)?;
        let (seen, q) = watch(&mut dns, &insts, &flipped, false, args.poll, give_up)?;
        rtts.extend(q);
        // Split each delay at the first probe the target saw after its flip: before it is
        // the wait for the check's next turn, after it signpost's own reaction time.
        let arrivals = fleets.take()?;
        for &(g, d) in &seen {
            let flip = flipped[&g];
            if let Some(&(_, at)) = arrivals.iter().find(|&&(i, t)| i == g && t >= flip) {
                to_probe.push(at - flip);
                probe_to_gone.push((flip + d).saturating_sub(at));
            }
        }
        let mut round_delays: Vec<u64> = seen.iter().map(|&(_, d)| d).collect();
        round_delays.sort_unstable();
        println!(
            "  round {}: {} services, {} of {} gone, max {:.0} ms",
            round + 1,
            services.len(),
            seen.len(),
            picked.len(),
            ms(round_delays.last().copied().unwrap_or(0))
        );
        down_delays.extend(round_delays);
        let back = fleets.set(200, &picked)?;
        let (seen, q) = watch(&mut dns, &insts, &back, true, args.poll, give_up)?;
        rtts.extend(q);
        up_delays.extend(seen.iter().map(|&(_, d)| d));
        std::thread::sleep(args.interval * 2);
    }
    sp.alive()?;
    show_delays(
        "flip to 503 → address gone from DNS",
        &down_delays,
        args.rounds * args.fail,
        args.bound(),
    );
    show_delays(
        "  of which flip → first probe of it after the flip",
        &to_probe,
        args.rounds * args.fail,
        args.interval,
    );
    show_delays(
        "  of which that probe → address gone from DNS",
        &probe_to_gone,
        args.rounds * args.fail,
        args.timeout,
    );
    show_delays(
        "flip back to 200 → address back in DNS",
        &up_delays,
        args.rounds * args.fail,
        args.interval + args.timeout,
    );
    let lost = rtts.iter().filter(|r| r.is_none()).count();
    let mut rtt: Vec<f64> = rtts.iter().flatten().copied().collect();
    rtt.sort_by(f64::total_cmp);
    println!(
        "  DNS polled every {} ms per affected service: {} queries, {lost} unanswered within \
         200 ms; reply time p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms",
        args.poll.as_millis(),
        rtts.len(),
        pct(&rtt, 50.0),
        pct(&rtt, 99.0),
        pct(&rtt, 100.0)
    );

    let stop = sp.stop()?;
    println!("  load average at the end: {}", loadavg());
    println!("\n## summary");
    println!(
        "  count={n} cpu_per_s={:.3} cpu_us_per_probe={:.1} rss_mib={:.0} probe_rate={:.0} \
         expected_rate={:.0} spread_max_min={steady_ratio:.2} startup_max_min={startup_ratio:.2} \
         detect_p50_ms={:.0} detect_p99_ms={:.0} detect_max_ms={:.0} bound_ms={:.0} \
         put_ms={put_ms:.1} startup_all_passing_s={:.1} shutdown_s={:.2}",
        cpu / secs,
        1e6 * cpu / probes.max(1) as f64,
        rss as f64 / 1024.0,
        probes as f64 / secs,
        n as f64 / args.interval.as_secs_f64(),
        {
            let mut v: Vec<f64> = down_delays.iter().map(|&d| ms(d)).collect();
            v.sort_by(f64::total_cmp);
            pct(&v, 50.0)
        },
        {
            let mut v: Vec<f64> = down_delays.iter().map(|&d| ms(d)).collect();
            v.sort_by(f64::total_cmp);
            pct(&v, 99.0)
        },
        down_delays.iter().max().map_or(f64::NAN, |&d| ms(d)),
        args.bound().as_secs_f64() * 1e3,
        ms(all_passing_ns - ready_ns) / 1e3,
        stop.as_secs_f64()
    );
    if down_delays.len() < args.rounds * args.fail {
        return Err(format!(
            "{} failed instances never left DNS within {give_up:?}",
            args.rounds * args.fail - down_delays.len()
        )
        .into());
    }
    Ok(())
}
