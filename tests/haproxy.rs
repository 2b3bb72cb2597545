//! HAProxy as a client (CONTRACT §2, SRV answers with the targets' addresses as additional
//! records): a real `haproxy` (Debian package `haproxy`, 2.6) runs as a child process and
//! load-balances HTTP over backends it finds only through signpost's DNS, configured as a user
//! would configure it:
//!
//! ```text
//! resolvers sp
//!     nameserver sp 127.0.0.1:<signpost DNS port>
//!     accepted_payload_size 8192
//!     resolve_retries 3
//!     timeout resolve 1s
//!     timeout retry 1s
//!     hold valid 1s
//!     hold obsolete 1s
//!
//! backend web
//!     balance roundrobin
//!     server-template web 4 _web._tcp.service.internal resolvers sp init-addr none check inter 500ms
//! ```
//!
//! HAProxy takes each server's port from the SRV record and its address from the additional
//! A record. The backends are small axum servers on 127.0.0.1 that answer with their own
//! name, registered in an in-process signpost as service `web`. The tests check that traffic
//! reaches every registered instance, that a deregistered one stops getting traffic within
//! seconds, that a newly registered one starts getting it, and that an instance whose signpost
//! HTTP check fails (its `/health` turns 503 while `/` still answers, so HAProxy's own TCP
//! check keeps it up) leaves HAProxy's rotation because it leaves DNS, and comes back when the
//! check passes again. Every wait is bounded; HAProxy is killed when a test ends or fails.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use serde_json::{Value, json};

use common::TestServer;

/// How long any one expected change may take to show in HAProxy's traffic.
const CONVERGE: Duration = Duration::from_secs(15);
/// Requests per traffic sample.
const SAMPLE: usize = 12;

/// A child process, killed (SIGKILL) and reaped when dropped, so a failing test leaves
/// nothing running. Its stdout and stderr are collected by threads.
struct Proc {
    child: Child,
    output: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e} (is the `haproxy` package installed?)"));
        let output = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        for stream in [Box::new(out) as Box<dyn Read + Send>, Box::new(err)] {
            let buf = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    let mut b = buf.lock().unwrap();
                    b.push_str(&line);
                    b.push('\n');
                }
            });
        }
        Proc { child, output }
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Panics with the output when the process has exited.
    fn assert_running(&mut self, what: &str) {
        if let Some(st) = self.child.try_wait().unwrap() {
            std::thread::sleep(Duration::from_millis(100));
            panic!("{what} exited ({st}); output:\n{}", self.output());
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tiny HTTP backend on 127.0.0.1: `/` answers its name, `/health` 200 or 503 as set.
struct Backend {
    name: &'static str,
    port: u16,
    healthy: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    async fn start(name: &'static str) -> Backend {
        let healthy = Arc::new(AtomicBool::new(true));
        let h = healthy.clone();
        let app = Router::new()
            .route("/", get(move || async move { name }))
            .route(
                "/health",
                get(move || {
                    let h = h.clone();
                    async move {
                        if h.load(Ordering::SeqCst) {
                            (StatusCode::OK, "ok")
                        } else {
                            (StatusCode::SERVICE_UNAVAILABLE, "failing")
                        }
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Backend {
            name,
            port,
            healthy,
            task,
        }
    }

    /// The registration of this backend as an instance of `web`.
    fn registration(&self) -> Value {
        json!({"address": "127.0.0.1", "port": self.port})
    }

    fn set_healthy(&self, up: bool) {
        self.healthy.store(up, Ordering::SeqCst);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A port on 127.0.0.1 for HAProxy's frontend that was free a moment ago. Candidates come
/// from below the kernel's ephemeral range (so that outgoing connections, which take
/// ephemeral ports, do not hold them) starting at a per-process random offset, and each is
/// handed out once per process, so that the tests of this file never pick the same one.
fn free_port() -> u16 {
    use std::sync::atomic::AtomicU32;
    const LOW: u32 = 20000;
    const SPAN: u32 = 12000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let seed = std::process::id().wrapping_mul(2_654_435_761)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
    let _ = NEXT.compare_exchange(u32::MAX, seed % SPAN, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..200 {
        let port = (LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 127.0.0.1:{LOW}..{}", LOW + SPAN);
}

/// The HAProxy configuration under test, with signpost's DNS at `dns`.
fn haproxy_config(dns: SocketAddr, front: SocketAddr, sock: &std::path::Path) -> String {
    format!(
        "\
global
    stats socket {sock} mode 600 level admin
    # Test-only: without SO_REUSEPORT, a port taken by anyone else fails the start (and the
    # test retries on another port) instead of silently sharing the connections.
    noreuseport

defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s

resolvers sp
    nameserver sp {dns}
    accepted_payload_size 8192
    resolve_retries 3
    timeout resolve 1s
    timeout retry 1s
    hold valid 1s
    hold obsolete 1s

frontend fe
    bind {front}
    default_backend web

backend web
    balance roundrobin
    server-template web 4 _web._tcp.service.internal resolvers sp init-addr none check inter 500ms
",
        sock = sock.display()
    )
}

/// One command on HAProxy's stats socket; its whole answer.
fn stats(sock: &std::path::Path, command: &str) -> std::io::Result<String> {
    let mut s = UnixStream::connect(sock)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(format!("{command}\n").as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// A running `haproxy -f cfg -db`.
struct Haproxy {
    proc: Proc,
    front: SocketAddr,
    sock: PathBuf,
    dns: SocketAddr,
    client: reqwest::Client,
    started: Instant,
    history: Vec<(Duration, BTreeMap<String, usize>)>,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    /// Starts HAProxy on a free port, retrying on another port when the one picked was
    /// taken meanwhile; returns once its stats socket answers (so the frontend that accepts
    /// connections is this HAProxy's).
    fn start(dns: SocketAddr) -> Haproxy {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("admin.sock");
        let cfg = dir.path().join("haproxy.cfg");
        let mut attempt = 0;
        let (proc, front) = loop {
            attempt += 1;
            let front: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            std::fs::write(&cfg, haproxy_config(dns, front, &sock)).unwrap();
            let _ = std::fs::remove_file(&sock);
            let mut proc = Proc::spawn(Command::new("haproxy").arg("-f").arg(&cfg).arg("-db"));
            let until = Instant::now() + Duration::from_secs(10);
            let up = loop {
                if let Some(st) = proc.child.try_wait().unwrap() {
                    std::thread::sleep(Duration::from_millis(100));
                    break Err(format!("haproxy exited ({st}); output:\n{}", proc.output()));
                }
                if stats(&sock, "show info").is_ok_and(|i| i.contains("Pid:"))
                    && TcpStream::connect_timeout(&front, Duration::from_millis(200)).is_ok()
                {
                    break Ok(());
                }
                if Instant::now() > until {
                    break Err(format!(
                        "haproxy not ready on {front} after 10 s; output:\n{}",
                        proc.output()
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            match up {
                Ok(()) => break (proc, front),
                Err(e) if e.contains("Address already in use") && attempt < 5 => {
                    eprintln!("retrying on another port: {e}");
                }
                Err(e) => panic!("{e}"),
            }
        };
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(3))
            .build()
            .unwrap();
        Haproxy {
            proc,
            front,
            sock,
            dns,
            client,
            started: Instant::now(),
            history: Vec::new(),
            _dir: dir,
        }
    }

    /// `show servers state web` from the stats socket: each slot's address, port and state.
    fn servers_state(&self) -> String {
        stats(&self.sock, "show servers state web")
            .unwrap_or_else(|e| format!("(stats socket: {e})"))
    }

    /// The filled server slots as (SRV target, address:port), sorted.
    fn slots(&self) -> Vec<(String, String)> {
        let state = self.servers_state();
        let mut slots: Vec<(String, String)> = state
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|f| f.len() > 18 && f[4] != "-")
            .map(|f| (f[17].to_string(), format!("{}:{}", f[4], f[18])))
            .collect();
        slots.sort();
        slots
    }

    /// signpost's SRV answer for the backend's name, as HAProxy asks for it (EDNS 8192).
    fn dns_answer(&self) -> String {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let q = common::query("_web._tcp.service.internal.", RecordType::SRV, Some(8192));
        sock.send_to(&q, self.dns).unwrap();
        let mut buf = vec![0u8; 65535];
        match sock.recv(&mut buf) {
            Ok(n) => match Message::from_vec(&buf[..n]) {
                Ok(m) => m.to_string(),
                Err(e) => format!("(unparsable reply: {e})"),
            },
            Err(e) => format!("(no reply: {e})"),
        }
    }

    /// What a failed expectation reports: recent samples, HAProxy's slots, signpost's
    /// answer and HAProxy's log.
    fn diagnosis(&self) -> String {
        let history = self.history.iter().rev().take(20).rev();
        let history: Vec<String> = history.map(|(t, s)| format!("  {t:>8.3?} {s:?}")).collect();
        format!(
            "recent samples (time since start):\n{}\nservers state:\n{}\nsignpost SRV answer:\n{}\nhaproxy output:\n{}",
            history.join("\n"),
            self.servers_state(),
            self.dns_answer(),
            self.proc.output()
        )
    }

    /// `SAMPLE` requests through the frontend: how many each backend answered (errors and
    /// non-200 statuses are counted under their own `<...>` key).
    async fn sample(&mut self) -> BTreeMap<String, usize> {
        let mut got = BTreeMap::new();
        for _ in 0..SAMPLE {
            let key = match self
                .client
                .get(format!("http://{}/", self.front))
                .send()
                .await
            {
                Ok(r) if r.status() == 200 => r.text().await.unwrap_or_else(|e| format!("<{e}>")),
                Ok(r) => format!("<HTTP {}>", r.status().as_u16()),
                Err(e) => format!("<{e}>"),
            };
            *got.entry(key).or_insert(0) += 1;
        }
        self.history.push((self.started.elapsed(), got.clone()));
        got
    }

    /// Samples until the set of backends answering is exactly `want` (nothing else, no
    /// errors), for at most `CONVERGE`. Returns how long it took.
    async fn converge(&mut self, what: &str, want: &[&Backend]) -> Duration {
        let want: Vec<&str> = want.iter().map(|b| b.name).collect();
        let start = Instant::now();
        loop {
            self.proc.assert_running("haproxy");
            let got = self.sample().await;
            let names: Vec<&str> = got.keys().map(String::as_str).collect();
            if names == want {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < CONVERGE,
                "{what}: HAProxy did not converge on {want:?} within {CONVERGE:?}\n{}",
                self.diagnosis()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// After `converge`: a further sample still reaches exactly `want`.
    async fn stays(&mut self, what: &str, want: &[&Backend]) {
        let want: Vec<&str> = want.iter().map(|b| b.name).collect();
        for _ in 0..2 {
            let got = self.sample().await;
            let names: Vec<&str> = got.keys().map(String::as_str).collect();
            assert_eq!(names, want, "{what}: {got:?}\n{}", self.diagnosis());
        }
    }
}

async fn start_signpost() -> TestServer {
    TestServer::start_with(|_| {}).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_template_follows_registrations() {
    let sp = start_signpost().await;
    let a = Backend::start("alpha").await;
    let b = Backend::start("bravo").await;
    sp.register("web", "web-a", a.registration()).await;
    sp.register("web", "web-b", b.registration()).await;

    let mut hap = Haproxy::start(sp.dns);
    let t = hap.converge("two registered", &[&a, &b]).await;
    eprintln!("both backends reached after {t:?}");
    hap.stays("two registered", &[&a, &b]).await;
    // Each filled slot holds the SRV target's name, its address from the additional record
    // and the SRV port.
    assert_eq!(
        hap.slots(),
        vec![
            (
                "web-a.web.instance.internal".to_string(),
                format!("127.0.0.1:{}", a.port)
            ),
            (
                "web-b.web.instance.internal".to_string(),
                format!("127.0.0.1:{}", b.port)
            ),
        ],
        "{}",
        hap.servers_state()
    );

    // Deregistered: leaves the SRV answer, HAProxy drops the slot, traffic goes to the other.
    assert_eq!(sp.deregister("web", "web-a").await, 204);
    let t = hap.converge("web-a deregistered", &[&b]).await;
    eprintln!("web-a out of rotation after {t:?}");
    hap.stays("web-a deregistered", &[&b]).await;

    // A third instance registered: HAProxy fills a free slot and sends it traffic.
    let c = Backend::start("charlie").await;
    sp.register("web", "web-c", c.registration()).await;
    let t = hap.converge("web-c registered", &[&b, &c]).await;
    eprintln!("web-c in rotation after {t:?}");
    hap.stays("web-c registered", &[&b, &c]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_http_check_takes_an_instance_out_of_haproxy() {
    let sp = start_signpost().await;
    let a = Backend::start("alpha").await;
    let b = Backend::start("bravo").await;
    let mut checked = a.registration();
    checked["check"] = json!({
        "http": format!("http://127.0.0.1:{}/health", a.port),
        "interval": "200ms",
        "timeout": "200ms",
    });
    sp.register("web", "web-a", checked).await;
    sp.register("web", "web-b", b.registration()).await;

    let mut hap = Haproxy::start(sp.dns);
    hap.converge("both passing", &[&a, &b]).await;
    hap.stays("both passing", &[&a, &b]).await;

    // /health fails (503) while / still answers: HAProxy's own TCP check would keep the
    // server; only signpost's DNS answer can take it out.
    a.set_healthy(false);
    let t = hap.converge("web-a /health 503", &[&b]).await;
    eprintln!("web-a out of rotation {t:?} after its check began failing");
    hap.stays("web-a /health 503", &[&b]).await;
    let r = sp
        .client
        .get(sp.url("/v1/services/web/instances/web-a"))
        .send()
        .await
        .unwrap();
    let inst: Value = r.json().await.unwrap();
    assert_eq!(inst["health"]["status"], "critical", "{inst}");
    assert!(
        inst["health"]["output"]
            .as_str()
            .unwrap_or("")
            .contains("503"),
        "{inst}"
    );

    // The check passes again: back in DNS, back in HAProxy's rotation.
    a.set_healthy(true);
    let t = hap.converge("web-a /health 200 again", &[&a, &b]).await;
    eprintln!("web-a back in rotation after {t:?}");
    hap.stays("web-a /health 200 again", &[&a, &b]).await;
}
