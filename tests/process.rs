//! The `signpost` binary as an operator runs it (CONTRACT §1 and §4): `serve` started as a
//! child process on `127.0.0.1:0`, its addresses read from the `signpost ready` log line;
//! SIGTERM and SIGINT end it with status 0 after draining; a `kill -9` in the middle of a
//! burst of registrations loses none that were answered 200; a corrupt store or a taken port
//! stops it at once with one clear line; `check-config` accepts the shipped config and
//! names what is wrong in a bad one; and an HTTP flood under a small open-file limit leaves
//! DNS over TCP and writes working. Every child is killed when its test fails.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_signpost");

/// A child process, killed (SIGKILL) and reaped when dropped, so a failing test leaves
/// nothing running. Its stdout and stderr are drained by threads into buffers; stderr lines
/// are also sent on `lines` as they come.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(cmd: &mut Command) -> Proc {
        // `info` unless the test chose a level.
        if !cmd.get_envs().any(|(k, _)| k == "RUST_LOG") {
            cmd.env("RUST_LOG", "info");
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn signpost");
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut out = child.stdout.take().unwrap();
        let buf = stdout.clone();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            buf.lock().unwrap().push_str(&s);
        });
        let (tx, lines) = mpsc::channel();
        let err = BufReader::new(child.stderr.take().unwrap());
        let buf = stderr.clone();
        std::thread::spawn(move || {
            for line in err.lines() {
                let Ok(line) = line else { break };
                buf.lock().unwrap().push_str(&line);
                buf.lock().unwrap().push('\n');
                let _ = tx.send(line);
            }
        });
        Proc {
            child,
            lines,
            stdout,
            stderr,
        }
    }

    /// A child whose output the test reads itself.
    fn from_child(child: Child) -> Proc {
        Proc {
            child,
            lines: mpsc::channel().1,
            stdout: Arc::default(),
            stderr: Arc::default(),
        }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Sends a signal with the `kill` command (`TERM`, `INT`, `KILL`).
    fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([format!("-{sig}"), self.pid()])
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -{sig} failed");
    }

    /// The exit status, waiting at most `limit` (blocking the thread).
    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let until = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < until,
                "still running after {limit:?}; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Like `wait_exit`, without blocking the async runtime.
    async fn exited(&mut self, limit: Duration) -> ExitStatus {
        let until = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < until,
                "still running after {limit:?}; stderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything written to stderr so far (all of it once the process exited and the
    /// reader caught up).
    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Stderr after exit: waits briefly for the reader threads to reach end of file.
    fn final_output(&self) -> (String, String) {
        let until = Instant::now() + Duration::from_secs(2);
        // The reader threads hold the channel's sender until EOF.
        while Instant::now() < until {
            match self.lines.recv_timeout(Duration::from_millis(50)) {
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                _ => continue,
            }
        }
        std::thread::sleep(Duration::from_millis(20));
        (self.stdout(), self.stderr())
    }

    /// Waits for the `signpost ready` line; returns the DNS and HTTP addresses.
    fn ready(&mut self) -> (SocketAddr, SocketAddr) {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addrs) = parse_ready(&line) {
                        return addrs;
                    }
                }
                Err(e) => panic!(
                    "no `signpost ready` line ({e:?}); exit {:?}; stderr:\n{}",
                    self.child.try_wait(),
                    self.stderr()
                ),
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Removes ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The DNS (first of the list) and HTTP addresses of a ready line, human or JSON.
fn parse_ready(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let line = strip_ansi(line);
    if !line.contains("signpost ready") {
        return None;
    }
    let (dns, http) = if line.trim_start().starts_with('{') {
        let v: Value = serde_json::from_str(&line).expect("a JSON log line");
        let f = &v["fields"];
        (
            f["dns"].as_str().expect("dns field").to_string(),
            f["http"].as_str().expect("http field").to_string(),
        )
    } else {
        let field = |key: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .unwrap_or_else(|| panic!("no {key} in {line:?}"))
                .to_string()
        };
        (field("dns="), field("http="))
    };
    let dns = dns.split(',').next().unwrap().parse().expect("dns address");
    Some((dns, http.parse().expect("http address")))
}

/// `signpost serve` on ephemeral ports with `data` as its store, run from `cwd` (so that
/// no `config/` is found and the defaults apply).
fn serve(cwd: &Path, data: &Path, extra: &[&str]) -> Proc {
    Proc::spawn(
        Command::new(BIN)
            .current_dir(cwd)
            .args([
                "serve",
                "--dns-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(data)
            .args(extra),
    )
}

/// A server started and ready.
struct Server {
    proc: Proc,
    dns: SocketAddr,
    http: SocketAddr,
}

fn start(cwd: &Path, data: &Path, extra: &[&str]) -> Server {
    let mut proc = serve(cwd, data, extra);
    let (dns, http) = proc.ready();
    assert!(dns.ip().is_loopback() && http.ip().is_loopback());
    Server { proc, dns, http }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn register(c: &reqwest::Client, http: SocketAddr, svc: &str, id: &str, addr: &str) {
    let r = c
        .put(format!("http://{http}/v1/services/{svc}/instances/{id}"))
        .json(&json!({"address": addr, "port": 80}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// `id` → address of every instance of `svc`.
async fn instances(c: &reqwest::Client, http: SocketAddr, svc: &str) -> HashMap<String, String> {
    let r = c
        .get(format!("http://{http}/v1/services/{svc}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap().to_string(),
                i["address"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The A records answering `name`, over UDP; panics on no reply or a non-NOERROR code.
fn resolve_a(dns: SocketAddr, name: &str) -> Vec<IpAddr> {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    sock.send_to(&common::query(name, RecordType::A, Some(1232)), dns)
        .unwrap();
    let mut buf = vec![0u8; 65535];
    let n = sock.recv(&mut buf).expect("a DNS reply within 2 s");
    let m = Message::from_vec(&buf[..n]).expect("reply parses");
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect()
}

/// Registers, stops the server with `sig`, expects exit 0, and finds the registration
/// again after a restart on the same data dir.
async fn stops_cleanly_on(sig: &str, log_args: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut s = start(tmp.path(), &data, log_args);
    let c = client();
    register(&c, s.http, "web", "web-1", "10.0.0.1").await;

    // A long-poll in flight when the signal arrives is answered, not cut off.
    let r = c
        .get(format!("http://{}/v1/services/web", s.http))
        .send()
        .await
        .unwrap();
    let index = r.headers()["x-signpost-index"]
        .to_str()
        .unwrap()
        .to_string();
    let poll = tokio::spawn(
        c.get(format!(
            "http://{}/v1/services/web?index={index}&wait=60s",
            s.http
        ))
        .send(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!poll.is_finished(), "the long-poll should still be waiting");

    let signalled = Instant::now();
    s.proc.signal(sig);
    let st = s.proc.exited(Duration::from_secs(10)).await;
    assert_eq!(
        st.code(),
        Some(0),
        "SIG{sig}: {st:?}; stderr:\n{}",
        s.proc.stderr()
    );
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "took {:?}",
        signalled.elapsed()
    );
    let r = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .expect("the long-poll got its answer")
        .unwrap()
        .expect("the long-poll was answered before exit");
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["instances"][0]["id"], "web-1");
    drop(s);

    let s = start(tmp.path(), &data, &[]);
    let got = instances(&c, s.http, "web").await;
    assert_eq!(got.get("web-1").map(String::as_str), Some("10.0.0.1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_zero() {
    stops_cleanly_on("TERM", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_drains_and_exits_zero_with_json_logs() {
    stops_cleanly_on("INT", &["--log-format", "json"]).await;
}

/// The SOA serial of the registry's domain.
fn soa_serial(dns: SocketAddr) -> u32 {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    sock.send_to(&common::query("internal", RecordType::SOA, Some(1232)), dns)
        .unwrap();
    let mut buf = vec![0u8; 65535];
    let n = sock.recv(&mut buf).expect("a DNS reply within 2 s");
    let m = Message::from_vec(&buf[..n]).expect("reply parses");
    m.answers
        .iter()
        .find_map(|r| match &r.data {
            RData::SOA(soa) => Some(soa.serial),
            _ => None,
        })
        .expect("an SOA answer")
}

/// The SOA serial never goes back, not even after a `kill -9` that follows health changes
/// (which change no registration, but move the serial).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_soa_serial_never_goes_back_after_a_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut s = start(tmp.path(), &data, &[]);
    let c = client();
    let r = c
        .put(format!("http://{}/v1/services/web/instances/w1", s.http))
        .json(&json!({"address": "10.0.0.1", "port": 80, "check": {"ttl": "60s"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for status in ["passing", "warning", "passing", "critical", "passing"] {
        let r = c
            .put(format!(
                "http://{}/v1/services/web/instances/w1/health",
                s.http
            ))
            .json(&json!({"status": status}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let before = soa_serial(s.dns);
    s.proc.signal("KILL");
    let st = s.proc.exited(Duration::from_secs(10)).await;
    assert_eq!(st.signal(), Some(9), "{st:?}");
    let s = start(tmp.path(), &data, &[]);
    let after = soa_serial(s.dns);
    // RFC 1982: `after` is not less than `before`.
    assert!(
        after == before || (after.wrapping_sub(before) as i32) > 0,
        "serial {after} after a restart, {before} before"
    );
}

/// A log collector that went away (stderr closed) costs the log lines, never the server:
/// writes still work and SIGTERM still stops it with status 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stderr_does_not_stop_sigterm_or_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .current_dir(dir.path())
        .args([
            "serve",
            "--dns-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let http = loop {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "no ready line");
        if let Some((_, http)) = parse_ready(&line) {
            break http;
        }
    };
    drop(err); // the reading end closes: every later log line fails to write
    let guard = Proc::from_child(child);
    register(&client(), http, "web", "w1", "10.0.0.1").await;
    guard.signal("TERM");
    let mut guard = guard;
    let status = guard.exited(Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_burst_loses_no_acknowledged_write() {
    const TASKS: usize = 8;
    const PER_TASK: usize = 250;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut s = start(tmp.path(), &data, &[]);
    let c = client();

    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let interrupted = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (c, acked, interrupted, http) = (c.clone(), acked.clone(), interrupted.clone(), s.http);
        tasks.push(tokio::spawn(async move {
            for i in 0..PER_TASK {
                if Instant::now() > deadline {
                    return;
                }
                let id = format!("t{t}-{i}");
                let addr = format!("10.{}.{}.{}", t + 1, i / 200, i % 200 + 1);
                let r = c
                    .put(format!("http://{http}/v1/services/burst/instances/{id}"))
                    .json(&json!({"address": addr, "port": 80}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => acked.lock().unwrap().push((id, addr)),
                    Ok(r) => panic!("{id}: {}", r.status()),
                    Err(_) => {
                        interrupted.store(true, Ordering::SeqCst);
                        return;
                    }
                }
            }
        }));
    }

    // Kill once a good share of the writes were answered, while the rest are in flight.
    let until = Instant::now() + Duration::from_secs(2);
    while acked.lock().unwrap().len() < 600 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    s.proc.signal("KILL");
    let st = s.proc.exited(Duration::from_secs(10)).await;
    assert_eq!(st.signal(), Some(9), "{st:?}");
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(15), t)
            .await
            .expect("burst task ends")
            .unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        !acked.is_empty(),
        "no registration was answered before the kill"
    );
    assert!(
        interrupted.load(Ordering::SeqCst),
        "the kill came after the burst ended ({} acked): not mid-burst",
        acked.len()
    );
    drop(s);

    let s = start(tmp.path(), &data, &[]);
    let got = instances(&c, s.http, "burst").await;
    let lost: Vec<&(String, String)> = acked
        .iter()
        .filter(|(id, addr)| got.get(id) != Some(addr))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged registrations lost, e.g. {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
    let step = (acked.len() / 20).max(1);
    for (id, addr) in acked.iter().step_by(step) {
        let name = format!("{id}.burst.instance.internal.");
        let a = resolve_a(s.dns, &name);
        assert_eq!(a, vec![addr.parse::<IpAddr>().unwrap()], "{name}");
    }
}

#[test]
fn corrupt_data_dir_fails_with_one_line_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let file = data.join("signpost.redb");
    let garbage: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&file, &garbage).unwrap();

    let mut p = serve(tmp.path(), &data, &[]);
    let st = p.wait_exit(Duration::from_secs(15));
    let (_, stderr) = p.final_output();
    assert!(
        !st.success(),
        "started on a corrupt store; stderr:\n{stderr}"
    );
    assert!(st.code().is_some(), "died of a signal: {st:?}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.to_ascii_lowercase().contains("error"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line:\n{stderr}");
    assert!(
        errors[0].contains(&file.display().to_string()),
        "the error names {}: {}",
        file.display(),
        errors[0]
    );
    assert_eq!(
        std::fs::read(&file).unwrap(),
        garbage,
        "the corrupt file was modified"
    );
}

#[test]
fn http_port_in_use_fails_naming_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut p = Proc::spawn(
        Command::new(BIN)
            .current_dir(tmp.path())
            .args(["serve", "--dns-listen", "127.0.0.1:0", "--http-listen"])
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(tmp.path().join("data")),
    );
    let st = p.wait_exit(Duration::from_secs(15));
    let (_, stderr) = p.final_output();
    assert!(!st.success(), "started on a taken port; stderr:\n{stderr}");
    assert!(st.code().is_some(), "died of a signal: {st:?}");
    assert!(
        stderr.contains(&addr.to_string()),
        "stderr names {addr}:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    drop(taken);
}

#[test]
fn dns_port_in_use_fails_naming_the_address() {
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut p = Proc::spawn(
        Command::new(BIN)
            .current_dir(tmp.path())
            .args(["serve", "--http-listen", "127.0.0.1:0", "--dns-listen"])
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(tmp.path().join("data")),
    );
    let st = p.wait_exit(Duration::from_secs(15));
    let (_, stderr) = p.final_output();
    assert!(!st.success(), "started on a taken port; stderr:\n{stderr}");
    assert!(
        stderr.contains(&addr.to_string()),
        "stderr names {addr}:\n{stderr}"
    );
    drop(taken);
}

/// Runs `signpost check-config FILE` from `cwd`; its status, stdout and stderr.
fn check_config(cwd: &Path, file: &Path) -> (ExitStatus, String, String) {
    let mut p = Proc::spawn(
        Command::new(BIN)
            .current_dir(cwd)
            .arg("check-config")
            .arg(file),
    );
    let st = p.wait_exit(Duration::from_secs(15));
    let (out, err) = p.final_output();
    (st, out, err)
}

#[test]
fn check_config_accepts_the_shipped_config() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (st, out, err) = check_config(repo, Path::new("config/signpost.toml"));
    assert!(st.success(), "{st:?}\nstdout: {out}\nstderr: {err}");
}

#[test]
fn check_config_names_the_broken_zone_file() {
    let tmp = tempfile::tempdir().unwrap();
    let zones = tmp.path().join("zones");
    std::fs::create_dir_all(&zones).unwrap();
    std::fs::copy(common::project_zone(), zones.join("internal.zone")).unwrap();
    let cfg = tmp.path().join("signpost.toml");
    std::fs::write(
        &cfg,
        format!("[dns]\nzones_dir = {:?}\n", zones.display().to_string()),
    )
    .unwrap();
    let (st, out, err) = check_config(tmp.path(), &cfg);
    assert!(
        st.success(),
        "a good zone dir: {st:?}\nstdout: {out}\nstderr: {err}"
    );

    std::fs::write(
        zones.join("broken.zone"),
        "$ORIGIN broken.test.\n@ IN SOA ns.broken.test. (\nwww IN A not-an-address\n",
    )
    .unwrap();
    let (st, out, err) = check_config(tmp.path(), &cfg);
    assert!(
        !st.success(),
        "a broken zone passed\nstdout: {out}\nstderr: {err}"
    );
    assert_eq!(st.code(), Some(1), "{st:?}");
    assert!(
        err.contains("broken.zone"),
        "stderr names the zone file:\n{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line:\n{err}");
}

#[test]
fn check_config_names_the_bad_key() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("signpost.toml");
    for (text, key) in [
        ("[dns]\nttl = 100000\n", "dns.ttl"),
        ("[dns]\nbogus = 1\n", "bogus"),
        ("[registry]\nbackend = \"x\"\n", "registry.backend"),
        ("[http]\nmax_body_bytes = 10\n", "http.max_body_bytes"),
    ] {
        std::fs::write(&cfg, text).unwrap();
        let (st, out, err) = check_config(tmp.path(), &cfg);
        assert!(
            !st.success(),
            "{text:?} passed\nstdout: {out}\nstderr: {err}"
        );
        assert!(
            err.contains(key),
            "{text:?}: stderr should name {key}:\n{err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "one line:\n{err}");
    }
    let (st, _, err) = check_config(tmp.path(), &tmp.path().join("missing.toml"));
    assert!(!st.success());
    assert!(err.contains("missing.toml"), "{err}");
}

/// A private mount namespace holding a small tmpfs at `dir`, kept alive by a `sleep` (killed
/// when dropped); processes join it with `nsenter`, and the test reaches its files through
/// `/proc/<pid>/root`. Needs root, as CI has.
struct SmallDisk {
    holder: Proc,
    dir: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(dir).unwrap();
        let script = format!(
            "mount -t tmpfs -o size={size} tmpfs \"$0\" && echo mounted >&2 && exec sleep 300"
        );
        let holder = Proc::spawn(
            Command::new("unshare")
                .args(["-m", "--propagation", "private", "sh", "-c", &script])
                .arg(dir),
        );
        let line = holder
            .lines
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("no tmpfs ({e:?}): {}", holder.stderr()));
        assert_eq!(line, "mounted", "{}", holder.stderr());
        SmallDisk {
            holder,
            dir: dir.to_path_buf(),
        }
    }

    /// `name` inside the tmpfs, as this process reaches it.
    fn path(&self, name: &str) -> std::path::PathBuf {
        let inner = self.dir.join(name);
        Path::new(&format!("/proc/{}/root", self.holder.pid()))
            .join(inner.strip_prefix("/").unwrap())
    }

    /// `signpost serve` inside the namespace, its store in `data` (a directory in the tmpfs).
    fn start(&self, cwd: &Path, data: &str) -> Server {
        let mut proc = Proc::spawn(
            Command::new("nsenter")
                .args(["-t", &self.holder.pid(), "-m", "--"])
                .arg(BIN)
                .current_dir(cwd)
                .args([
                    "serve",
                    "--dns-listen",
                    "127.0.0.1:0",
                    "--http-listen",
                    "127.0.0.1:0",
                ])
                .arg("--data-dir")
                .arg(self.dir.join(data)),
        );
        let (dns, http) = proc.ready();
        Server { proc, dns, http }
    }

    /// Writes a file of zeros into the tmpfs until it is full; returns its size.
    fn fill(&self, name: &str) -> u64 {
        use std::io::Write;
        let mut f = std::fs::File::create(self.path(name)).unwrap();
        let chunk = vec![0u8; 256 << 10];
        let mut n = 0;
        while f.write_all(&chunk).is_ok() {
            n += chunk.len() as u64;
            assert!(n < 1 << 30, "the tmpfs never filled");
        }
        n
    }
}

/// A registration body of ~16 KB (64 metadata pairs of 250 bytes): fills a log segment fast.
fn big_registration(i: usize) -> Value {
    let meta: serde_json::Map<String, Value> = (0..64)
        .map(|k| {
            (
                format!("k{k}"),
                Value::String(format!("{i}-{}", "x".repeat(240))),
            )
        })
        .collect();
    json!({"address": format!("10.9.{}.{}", i / 200, i % 200 + 1), "port": 80, "meta": meta})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_until_freed_then_they_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(&tmp.path().join("disk"), "48m");
    let s = disk.start(tmp.path(), "data");
    let c = client();
    let put = |i: usize| {
        c.put(format!("http://{}/v1/services/big/instances/i{i}", s.http))
            .json(&big_registration(i))
            .send()
    };
    let mut acked = Vec::new();
    for i in 0..20 {
        assert_eq!(put(i).await.unwrap().status(), 200);
        acked.push(i);
    }
    // Full, and without the spare segment the log keeps ready: the next segment the log
    // needs has no room. (The spare is made again in the background after the first write.)
    let until = Instant::now() + Duration::from_secs(10);
    while !disk.path("data/signpost.log.spare").exists() {
        assert!(Instant::now() < until, "no spare segment made");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    disk.fill("filler");
    std::fs::remove_file(disk.path("data/signpost.log.spare")).unwrap();
    disk.fill("filler2");

    // The current segment (8 MiB) takes writes until it is full; the next one fails.
    let mut refused = None;
    for i in 20..2000 {
        let r = put(i).await.unwrap();
        match r.status().as_u16() {
            200 => acked.push(i),
            503 => {
                refused = Some(r);
                break;
            }
            other => panic!("registration {i}: {other}"),
        }
    }
    let r = refused.expect("a write refused on the full disk");
    assert_eq!(r.headers()["retry-after"], "1");
    let body: Value = r.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("store"), "{body}");
    let ready = c
        .get(format!("http://{}/ready", s.http))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("No space"),
        "{body}"
    );
    let healthz = c
        .get(format!("http://{}/healthz", s.http))
        .send()
        .await
        .unwrap();
    assert_eq!(healthz.status(), 200, "reads and DNS still served");
    assert_eq!(put(5000).await.unwrap().status(), 503, "still full");

    // Room again: writes resume by themselves, no restart.
    std::fs::remove_file(disk.path("filler")).unwrap();
    std::fs::remove_file(disk.path("filler2")).unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let r = c
            .get(format!("http://{}/ready", s.http))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            break;
        }
        assert!(Instant::now() < until, "never ready again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 5000..5010 {
        assert_eq!(
            put(i).await.unwrap().status(),
            200,
            "after the disk was freed"
        );
        acked.push(i);
    }
    let got = instances(&c, s.http, "big").await;
    assert_eq!(got.len(), acked.len(), "exactly the acknowledged writes");

    // Nothing acknowledged is lost across a clean restart on the same disk.
    let Server { proc: mut p, .. } = s;
    p.signal("TERM");
    let st = p.exited(Duration::from_secs(20)).await;
    assert!(st.success(), "{st:?}: {}", p.stderr());
    let s = disk.start(tmp.path(), "data");
    let got = instances(&c, s.http, "big").await;
    let mut ids: Vec<usize> = got.keys().map(|k| k[1..].parse().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, acked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_data_dir_refuses_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let s = start(tmp.path(), &data, &[]);
    let c = client();
    register(&c, s.http, "web", "a", "10.0.0.1").await;
    // The checkpointer may be making its spare segment in it meanwhile: try again.
    let mut tries = 0;
    while let Err(e) = std::fs::remove_dir_all(&data) {
        tries += 1;
        assert!(tries < 100, "cannot remove the data dir: {e}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // Writes are refused at most 100 ms after the removal (the log checks its segment at
    // that interval, not on every write).
    tokio::time::sleep(Duration::from_millis(150)).await;
    for id in ["b", "c"] {
        let r = c
            .put(format!("http://{}/v1/services/web/instances/{id}", s.http))
            .json(&json!({"address": "10.0.0.2", "port": 80}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503, "{id}");
        let body: Value = r.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("removed"),
            "{body}"
        );
    }
    let ready = c
        .get(format!("http://{}/ready", s.http))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    // Reads still answer from memory.
    assert_eq!(instances(&c, s.http, "web").await.len(), 1);
}

/// An HTTP flood under a small open-file limit (256, as a default `ulimit -n` of 1024 is to
/// thousands of connections): with `http.max_connections` below the limit, the flood waits
/// in the kernel's backlog instead of taking every file descriptor, so DNS over TCP still
/// answers, `/ready` stays 200 and a registration is served once the header timeout has
/// closed the idle connections ahead of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_flood_under_a_small_file_limit_leaves_dns_and_writes_working() {
    use std::os::unix::process::CommandExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = tmp.path().join("signpost.toml");
    std::fs::write(
        &config,
        "[http]\nmax_connections = 64\nheader_timeout = \"500ms\"\n",
    )
    .unwrap();
    let mut cmd = Command::new(BIN);
    cmd.current_dir(tmp.path())
        .args(["serve", "--dns-listen", "127.0.0.1:0", "--http-listen"])
        .args(["127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .arg("--config")
        .arg(&config);
    // SAFETY: setrlimit is async-signal-safe and touches only the child's own limits.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 256,
                rlim_max: 256,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut proc = Proc::spawn(&mut cmd);
    let (dns, http) = proc.ready();
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    register(&c, http, "web", "web-1", "10.0.0.1").await;

    let mut flood = Vec::new();
    for _ in 0..300 {
        flood.push(tokio::net::TcpStream::connect(http).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // DNS over TCP: one query, its answer within 2 s.
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(dns))
        .await
        .expect("DNS TCP connect")
        .unwrap();
    let q = common::query("web.service.internal.", RecordType::A, None);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    s.write_all(&framed).await.unwrap();
    let mut len = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut len))
        .await
        .expect("a DNS-over-TCP answer within 2 s while HTTP is flooded")
        .unwrap();
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).await.unwrap();
    let m = Message::from_vec(&buf).unwrap();
    assert_eq!(m.answers.len(), 1, "{m:?}");

    // Writes still work, served once slots free up (a new client: a new connection, behind
    // the flood).
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let started = Instant::now();
    let r = c
        .put(format!("http://{http}/v1/services/web/instances/web-2"))
        .json(&json!({"address": "10.0.0.2", "port": 80}))
        .send()
        .await
        .expect("a registration answered while the flood is held");
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert!(started.elapsed() < Duration::from_secs(15));
    let r = c.get(format!("http://{http}/ready")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(resolve_a(dns, "web-2.web.instance.internal.").len(), 1);
    assert!(proc.child.try_wait().unwrap().is_none(), "still running");
    drop(flood);
}

/// VmRSS of a process, in kB.
fn rss_kb(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// A flood of connections that each buffered most of a request body leaves memory resident
/// unless the server hands it back once they are gone.
#[test]
fn memory_is_returned_after_a_connection_flood() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let s = start(tmp.path(), &tmp.path().join("data"), &[]);
    let pid = s.proc.pid();
    let before = rss_kb(&pid);
    let head = format!(
        "PUT /v1/services/web/instances/x HTTP/1.1\r\nHost: {}\r\nContent-Length: 60000\r\n\r\n",
        s.http
    );
    let body = vec![b'x'; 50_000];
    // Below the test process's own 1,024 open files, above `memory::FLOOD`.
    let mut held = Vec::new();
    for _ in 0..800 {
        let mut c = std::net::TcpStream::connect(s.http).unwrap();
        c.write_all(head.as_bytes()).unwrap();
        c.write_all(&body).unwrap();
        held.push(c);
    }
    // Every body buffered by the server (the bodies stall short of their length).
    let until = Instant::now() + Duration::from_secs(20);
    let mut flooded = rss_kb(&pid);
    while flooded < before + 30_000 {
        assert!(
            Instant::now() < until,
            "the flood never showed: {before} -> {flooded} kB"
        );
        std::thread::sleep(Duration::from_millis(100));
        flooded = rss_kb(&pid);
    }
    drop(held);
    let until = Instant::now() + Duration::from_secs(10);
    let mut after = rss_kb(&pid);
    while after > before + 15_000 {
        assert!(
            Instant::now() < until,
            "memory kept after the flood: {before} kB before, {flooded} kB during, {after} kB after"
        );
        std::thread::sleep(Duration::from_millis(100));
        after = rss_kb(&pid);
    }
}

/// `signpost export` then `signpost import` carry a registry to another store unchanged
/// (CONTRACT §4, "Moving"); both refuse a store a running server holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_import_moves_a_registry() {
    let tmp = tempfile::tempdir().unwrap();
    let (from, to) = (tmp.path().join("from"), tmp.path().join("to"));
    let s = start(tmp.path(), &from, &[]);
    let c = client();
    for (id, body) in [
        (
            "a",
            json!({"address": "10.0.0.1", "port": 80, "tags": ["v2"], "meta": {"zone": "eu-1"}}),
        ),
        (
            "b",
            json!({"address": "fd00::7", "port": 8080, "check": {"ttl": "30s"}}),
        ),
    ] {
        let r = c
            .put(format!("http://{}/v1/services/web/instances/{id}", s.http))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = c
        .put(format!(
            "http://{}/v1/services/web/instances/a/maintenance",
            s.http
        ))
        .json(&json!({"enabled": true, "reason": "disk swap"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let before: Value = c
        .get(format!("http://{}/v1/services/web", s.http))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    // A running server holds its store.
    let busy = Command::new(BIN)
        .current_dir(tmp.path())
        .args(["export", "--data-dir"])
        .arg(&from)
        .output()
        .unwrap();
    assert!(!busy.status.success());
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains("stop it first"),
        "{}",
        String::from_utf8_lossy(&busy.stderr)
    );
    let Server { proc: mut p, .. } = s;
    p.signal("TERM");
    assert!(p.exited(Duration::from_secs(20)).await.success());

    let export = Command::new(BIN)
        .current_dir(tmp.path())
        .args(["export", "--data-dir"])
        .arg(&from)
        .output()
        .unwrap();
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let lines = String::from_utf8(export.stdout).unwrap();
    assert_eq!(lines.lines().count(), 2, "{lines}");
    let file = tmp.path().join("registry.jsonl");
    std::fs::write(&file, &lines).unwrap();
    let import = Command::new(BIN)
        .current_dir(tmp.path())
        .arg("import")
        .arg(&file)
        .arg("--data-dir")
        .arg(&to)
        .output()
        .unwrap();
    assert!(
        import.status.success(),
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );
    assert!(String::from_utf8_lossy(&import.stderr).contains("imported 2"));

    let s = start(tmp.path(), &to, &[]);
    let after: Value = c
        .get(format!("http://{}/v1/services/web", s.http))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // The same registrations and maintenance; health starts over, as after a restart.
    let strip = |v: &Value| -> Vec<Value> {
        v["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                let mut i = i.clone();
                i.as_object_mut().unwrap().remove("health");
                i
            })
            .collect()
    };
    assert_eq!(strip(&after), strip(&before));
    assert_eq!(after["instances"][0]["maintenance"]["reason"], "disk swap");

    // A missing store is an error, not an empty export.
    let missing = Command::new(BIN)
        .current_dir(tmp.path())
        .args(["export", "--data-dir"])
        .arg(tmp.path().join("nowhere"))
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(!tmp.path().join("nowhere").exists());
}

/// Tokens are never logged: not at start-up, not on a refused write, not on an accepted one,
/// not at shutdown, even at debug level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_never_logged() {
    const TOKEN: &str = "tok-5e1a9c4b7d";
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("signpost.toml");
    std::fs::write(&cfg, format!("[http]\ntoken = \"{TOKEN}\"\n")).unwrap();
    let mut proc = Proc::spawn(
        Command::new(BIN)
            .current_dir(tmp.path())
            .env("RUST_LOG", "debug")
            .args([
                "serve",
                "--dns-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ])
            .arg("--config")
            .arg(&cfg)
            .arg("--data-dir")
            .arg(tmp.path().join("data")),
    );
    let (_, http) = proc.ready();
    let c = client();
    let url = format!("http://{http}/v1/services/web/instances/a");
    let body = json!({"address": "10.0.0.1", "port": 80});
    let r = c
        .put(&url)
        .bearer_auth("wrong")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .put(&url)
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    proc.signal("TERM");
    assert!(proc.exited(Duration::from_secs(20)).await.success());
    let (out, err) = proc.final_output();
    assert!(err.contains("signpost ready"), "{err}");
    assert!(
        !out.contains(TOKEN) && !err.contains(TOKEN),
        "the token was logged:\n{err}"
    );
}
