//! Active health checking against real targets started by the test: an HTTP server that can
//! be switched between healthy (200), failing (503), overloaded (429), hanging and
//! redirecting (away, home, or to itself for ever), a hand-written HTTP/1.1 server for bodies
//! no framework sends (endless, or cut short of their Content-Length), and a TCP listener that
//! comes and goes. Each test watches the instance leave and rejoin DNS answers and the status,
//! output and thresholds shown by the HTTP API.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hickory_proto::rr::{RData, RecordType};
use serde_json::{Value, json};

use common::TestServer;

/// What the target answers: an HTTP status, or `HANG` (never answers), or a 302 to another
/// host (`REDIRECT_AWAY`), to `/home` on its own host (`REDIRECT_HOME`) or to itself
/// (`REDIRECT_LOOP`).
const HANG: u16 = 0;
const REDIRECT_AWAY: u16 = 1;
const REDIRECT_HOME: u16 = 2;
const REDIRECT_LOOP: u16 = 3;

#[derive(Clone)]
struct Target {
    mode: Arc<AtomicU16>,
    /// Requests served, and how many of them failed since the last `set`.
    hits: Arc<AtomicUsize>,
    failures: Arc<AtomicUsize>,
    addr: SocketAddr,
}

impl Target {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let t = Target {
            mode: Arc::new(AtomicU16::new(200)),
            hits: Arc::default(),
            failures: Arc::default(),
            addr,
        };
        let app = axum::Router::new()
            .route("/health", axum::routing::get(answer))
            .route("/home", axum::routing::get(|| async { "home" }))
            .with_state(t.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        t
    }

    fn set(&self, mode: u16) {
        self.failures.store(0, Ordering::SeqCst);
        self.mode.store(mode, Ordering::SeqCst);
    }

    fn url(&self) -> String {
        format!("http://{}/health", self.addr)
    }
}

async fn answer(State(t): State<Target>) -> (StatusCode, HeaderMap, &'static str) {
    t.hits.fetch_add(1, Ordering::SeqCst);
    let mode = t.mode.load(Ordering::SeqCst);
    let mut h = HeaderMap::new();
    match mode {
        HANG => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            (StatusCode::OK, h, "late")
        }
        REDIRECT_AWAY | REDIRECT_HOME | REDIRECT_LOOP => {
            let (host, path) = match mode {
                REDIRECT_AWAY => ("127.0.0.2", "home"),
                REDIRECT_HOME => ("127.0.0.1", "home"),
                _ => ("127.0.0.1", "health"),
            };
            let loc = format!("http://{host}:{}/{path}", t.addr.port());
            h.insert("location", loc.parse().unwrap());
            (StatusCode::FOUND, h, "")
        }
        code => {
            if !(200..300).contains(&code) {
                t.failures.fetch_add(1, Ordering::SeqCst);
            }
            (StatusCode::from_u16(code).unwrap(), h, "")
        }
    }
}

/// A target writing HTTP/1.1 by hand: to every request, a 200 with `Content-Length:
/// content_length` and then `send` bytes of body, written as fast as the checker takes them;
/// after those it keeps the connection open (`hold`, for up to 30 s) or closes it.
#[derive(Clone)]
struct RawTarget {
    addr: SocketAddr,
    /// Requests answered.
    hits: Arc<AtomicUsize>,
    /// Connections on which a write failed before `send` bytes were out: the checker hung up.
    hung_up: Arc<AtomicUsize>,
    /// The most body bytes written on one connection.
    most_sent: Arc<AtomicUsize>,
}

impl RawTarget {
    async fn start(content_length: u64, send: usize, hold: bool) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let t = RawTarget {
            addr: listener.local_addr().unwrap(),
            hits: Arc::default(),
            hung_up: Arc::default(),
            most_sent: Arc::default(),
        };
        let t2 = t.clone();
        tokio::spawn(async move {
            loop {
                let (sock, _) = listener.accept().await.unwrap();
                tokio::spawn(t2.clone().serve(sock, content_length, send, hold));
            }
        });
        t
    }

    async fn serve(self, mut sock: tokio::net::TcpStream, len: u64, send: usize, hold: bool) {
        // The whole request first: closing on unread bytes would send a reset, not a close.
        let mut req = Vec::new();
        let mut buf = [0u8; 1024];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => req.extend_from_slice(&buf[..n]),
            }
        }
        self.hits.fetch_add(1, Ordering::SeqCst);
        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\n\r\n");
        if sock.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let piece = vec![b'x'; 64 * 1024];
        let mut sent = 0;
        while sent < send {
            let n = piece.len().min(send - sent);
            if sock.write_all(&piece[..n]).await.is_err() {
                self.hung_up.fetch_add(1, Ordering::SeqCst);
                break;
            }
            sent += n;
            self.most_sent.fetch_max(sent, Ordering::SeqCst);
        }
        if hold && sent == send {
            // Neither more body nor a close: only the checker can end this connection.
            let _ = tokio::time::timeout(Duration::from_secs(30), sock.read(&mut buf)).await;
        }
    }

    fn url(&self) -> String {
        format!("http://{}/health", self.addr)
    }
}

async fn instance(s: &TestServer, svc: &str, id: &str) -> Option<Value> {
    let r = s
        .client
        .get(s.url(&format!("/v1/services/{svc}/instances/{id}")))
        .send()
        .await
        .unwrap();
    if r.status() == 404 {
        return None;
    }
    Some(r.json().await.unwrap())
}

async fn status(s: &TestServer, svc: &str, id: &str) -> String {
    instance(s, svc, id).await.expect("registered")["health"]["status"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The A addresses `<svc>.service.internal.` answers now.
async fn in_dns(s: &TestServer, svc: &str) -> Vec<String> {
    let (m, _) = s
        .udp(&format!("{svc}.service.internal."), RecordType::A, None)
        .await;
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

/// Polls `cond` every 20 ms for up to `secs`; panics naming `what` if it never holds.
async fn eventually<F, Fut>(secs: u64, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what}: not reached within {secs}s");
}

fn http_check(url: &str, extra: Value) -> Value {
    let mut c = json!({"http": url, "interval": "100ms", "timeout": "300ms"});
    c.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_check_follows_the_target_in_and_out_of_dns() {
    let s = TestServer::start().await;
    let t = Target::start().await;
    s.register("web", "anchor", json!({"address": "10.1.0.1", "port": 80}))
        .await;
    s.register(
        "web",
        "w1",
        json!({"address": "10.1.0.2", "port": 80, "check": http_check(&t.url(), json!({}))}),
    )
    .await;
    // A new checked instance is critical, and out of DNS, until its first check passes.
    assert_eq!(status(&s, "web", "w1").await, "critical");
    eventually(5, "w1 passing", || async {
        status(&s, "web", "w1").await == "passing"
    })
    .await;
    assert!(in_dns(&s, "web").await.contains(&"10.1.0.2".to_string()));
    let out = instance(&s, "web", "w1").await.unwrap();
    assert_eq!(out["health"]["output"], "HTTP 200 OK");

    t.set(503);
    eventually(5, "w1 critical on 503", || async {
        status(&s, "web", "w1").await == "critical"
    })
    .await;
    assert_eq!(in_dns(&s, "web").await, vec!["10.1.0.1".to_string()]);
    let out = instance(&s, "web", "w1").await.unwrap();
    assert_eq!(out["health"]["output"], "HTTP 503 Service Unavailable");

    t.set(429);
    eventually(5, "w1 warning on 429", || async {
        status(&s, "web", "w1").await == "warning"
    })
    .await;
    assert_eq!(in_dns(&s, "web").await, vec!["10.1.0.1".to_string()]);

    t.set(200);
    eventually(5, "w1 back", || async {
        in_dns(&s, "web").await.len() == 2
    })
    .await;

    t.set(HANG);
    eventually(5, "w1 critical on a hanging target", || async {
        status(&s, "web", "w1").await == "critical"
    })
    .await;
    let out = instance(&s, "web", "w1").await.unwrap();
    let text = out["health"]["output"].as_str().unwrap();
    assert!(text.contains("timed out"), "{text}");
    assert_eq!(in_dns(&s, "web").await, vec!["10.1.0.1".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warning_is_handed_out_with_include_warning() {
    let s = TestServer::start_with(|c| c.dns.include_warning = true).await;
    let t = Target::start().await;
    t.set(429);
    s.register(
        "web",
        "w1",
        json!({"address": "10.1.1.2", "port": 80, "check": http_check(&t.url(), json!({}))}),
    )
    .await;
    eventually(5, "w1 warning and in DNS", || async {
        in_dns(&s, "web").await == vec!["10.1.1.2".to_string()]
    })
    .await;
    assert_eq!(status(&s, "web", "w1").await, "warning");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_before_critical_counts_consecutive_failures() {
    let s = TestServer::start().await;
    let t = Target::start().await;
    let check = http_check(
        &t.url(),
        json!({"interval": "150ms", "failures_before_critical": 3, "success_before_passing": 2}),
    );
    s.register(
        "web",
        "w1",
        json!({"address": "10.1.2.2", "port": 80, "check": check}),
    )
    .await;
    // success_before_passing = 2: passing only once two probes have succeeded.
    let hits_before = t.hits.load(Ordering::SeqCst);
    eventually(5, "w1 passing", || async {
        status(&s, "web", "w1").await == "passing"
    })
    .await;
    assert!(t.hits.load(Ordering::SeqCst) - hits_before >= 2);

    t.set(503);
    let mut saw_passing_while_failing = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "w1 never went critical"
        );
        // Status first, then the count: a change happens only after the 3rd failure is served.
        let st = status(&s, "web", "w1").await;
        let failures = t.failures.load(Ordering::SeqCst);
        if st == "critical" {
            assert!(failures >= 3, "critical after only {failures} failures");
            break;
        }
        if (1..3).contains(&failures) {
            assert_eq!(st, "passing", "status after {failures} failures");
            saw_passing_while_failing = true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        saw_passing_while_failing,
        "never observed the instance passing between failures"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_check_follows_the_listener() {
    let s = TestServer::start().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let check = json!({"tcp": addr.to_string(), "interval": "100ms", "timeout": "300ms"});
    s.register(
        "db",
        "d1",
        json!({"address": "10.2.0.1", "port": 5432, "check": check}),
    )
    .await;
    eventually(5, "d1 passing", || async {
        status(&s, "db", "d1").await == "passing"
    })
    .await;
    assert_eq!(in_dns(&s, "db").await, vec!["10.2.0.1".to_string()]);
    drop(listener);
    eventually(5, "d1 critical once the listener is gone", || async {
        status(&s, "db", "d1").await == "critical"
    })
    .await;
    assert!(in_dns(&s, "db").await.is_empty());
    let _again = std::net::TcpListener::bind(addr).unwrap();
    eventually(5, "d1 passing again", || async {
        status(&s, "db", "d1").await == "passing"
    })
    .await;
    assert_eq!(in_dns(&s, "db").await, vec!["10.2.0.1".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deregister_after_removes_durably() {
    let s = TestServer::start().await;
    // Nothing listens on a port taken and released: the check fails from the start.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let check = json!({"tcp": dead.to_string(), "interval": "100ms", "timeout": "200ms"});
    s.register(
        "gone",
        "g1",
        json!({"address": "10.3.0.1", "port": 1, "check": check, "deregister_after": "1s"}),
    )
    .await;
    s.register("gone", "keep", json!({"address": "10.3.0.2", "port": 1}))
        .await;
    let t0 = std::time::Instant::now();
    eventually(6, "g1 removed", || async {
        instance(&s, "gone", "g1").await.is_none()
    })
    .await;
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "removed too early: {:?}",
        t0.elapsed()
    );
    let cfg_dir = s.stop().await;
    let mut cfg = common::test_config(cfg_dir.path());
    cfg.validate().unwrap();
    let s = TestServer::start_in(cfg_dir, cfg).await;
    assert!(
        instance(&s, "gone", "g1").await.is_none(),
        "g1 back after restart"
    );
    assert!(instance(&s, "gone", "keep").await.is_some());
}

/// Asserts that nothing probes `t` any more: after a settling pause (a probe in flight may
/// still land), its hit count stays put for five check intervals.
async fn assert_stopped(t: &Target, what: &str) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let hits = t.hits.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(t.hits.load(Ordering::SeqCst), hits, "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_or_deregistering_stops_the_old_check() {
    let s = TestServer::start().await;
    let old = Target::start().await;
    let new = Target::start().await;
    s.register(
        "web",
        "w1",
        json!({"address": "10.4.0.1", "port": 80, "check": http_check(&old.url(), json!({}))}),
    )
    .await;
    eventually(5, "w1 passing", || async {
        status(&s, "web", "w1").await == "passing"
    })
    .await;
    s.register(
        "web",
        "w1",
        json!({"address": "10.4.0.1", "port": 80, "check": http_check(&new.url(), json!({}))}),
    )
    .await;
    // A changed check starts over: critical until the new check passes.
    eventually(5, "w1 passing on the new check", || async {
        new.hits.load(Ordering::SeqCst) > 0 && status(&s, "web", "w1").await == "passing"
    })
    .await;
    assert_stopped(&old, "the replaced check still runs").await;

    assert_eq!(s.deregister("web", "w1").await, 204);
    assert_stopped(&new, "a deregistered check still runs").await;

    // Replaced by a registration without a check: its check stops too.
    s.register(
        "web",
        "w2",
        json!({"address": "10.4.0.2", "port": 80, "check": http_check(&old.url(), json!({}))}),
    )
    .await;
    eventually(5, "w2 passing", || async {
        status(&s, "web", "w2").await == "passing"
    })
    .await;
    s.register("web", "w2", json!({"address": "10.4.0.2", "port": 80}))
        .await;
    assert_stopped(&old, "a check removed by a replacement still runs").await;
    assert_eq!(status(&s, "web", "w2").await, "passing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_followed_only_on_the_same_host() {
    let s = TestServer::start().await;
    let home = Target::start().await;
    home.set(REDIRECT_HOME);
    let away = Target::start().await;
    away.set(REDIRECT_AWAY);
    s.register(
        "web",
        "home",
        json!({"address": "10.5.0.1", "port": 80, "check": http_check(&home.url(), json!({}))}),
    )
    .await;
    s.register(
        "web",
        "away",
        json!({"address": "10.5.0.2", "port": 80, "check": http_check(&away.url(), json!({}))}),
    )
    .await;
    eventually(5, "home passing through its redirect", || async {
        status(&s, "web", "home").await == "passing"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let away_out = instance(&s, "web", "away").await.unwrap();
    assert_eq!(away_out["health"]["status"], "critical");
    assert_eq!(
        away_out["health"]["output"],
        "HTTP 302 Found (redirect to another host not followed)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_same_host_redirect_loop_is_reported_as_too_many_redirects() {
    let s = TestServer::start().await;
    let t = Target::start().await;
    t.set(REDIRECT_LOOP);
    s.register(
        "web",
        "loop",
        json!({"address": "10.5.1.1", "port": 80, "check": http_check(&t.url(), json!({}))}),
    )
    .await;
    let output = || async {
        instance(&s, "web", "loop").await.unwrap()["health"]["output"]
            .as_str()
            .unwrap()
            .to_string()
    };
    eventually(5, "the loop probed", || async {
        output().await.starts_with("HTTP 302")
    })
    .await;
    assert_eq!(output().await, "HTTP 302 Found (too many redirects)");
    assert_eq!(status(&s, "web", "loop").await, "critical");
    // The first request and the 5 redirects followed.
    assert!(t.hits.load(Ordering::SeqCst) >= 6);
}

/// Content-Length of the endless body: 1 GiB, far more than the target ever sends.
const GIB: u64 = 1 << 30;
/// What the endless target sends at most on one connection before it stops and waits.
const ENDLESS_CAP: usize = 256 << 20;
/// Body bytes one connection may take from the target when the checker reads only a prefix:
/// what the two loopback socket buffers hold (4 MiB sending plus up to 32 MiB receiving at
/// Linux's tuned maximums, far less at its defaults), with room to spare.
const BUFFERED_AT_MOST: usize = 64 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_body_is_not_read_whole() {
    let s = TestServer::start().await;
    let t = RawTarget::start(GIB, ENDLESS_CAP, true).await;
    // A timeout long enough to take the whole cap over loopback: a checker reading the body
    // whole takes all of it, then waits for the rest of the gibibyte until it times out.
    let check = http_check(&t.url(), json!({"interval": "200ms", "timeout": "2s"}));
    s.register(
        "big",
        "b1",
        json!({"address": "10.8.0.1", "port": 80, "check": check}),
    )
    .await;
    eventually(5, "b1 passing on its 200", || async {
        status(&s, "big", "b1").await == "passing"
    })
    .await;
    let out = instance(&s, "big", "b1").await.unwrap();
    assert_eq!(out["health"]["output"], "HTTP 200 OK");
    assert_eq!(in_dns(&s, "big").await, vec!["10.8.0.1".to_string()]);
    // The checker hung up on the body instead of draining it: the target's writes failed
    // once the socket buffers were full, long before its cap.
    eventually(5, "the checker hanging up or draining", || async {
        t.hung_up.load(Ordering::SeqCst) > 0
            || t.most_sent.load(Ordering::SeqCst) >= BUFFERED_AT_MOST
    })
    .await;
    let most = t.most_sent.load(Ordering::SeqCst);
    assert!(
        most < BUFFERED_AT_MOST,
        "{most} body bytes taken on one connection"
    );
    assert!(t.hung_up.load(Ordering::SeqCst) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cut_short_of_its_length_is_critical() {
    let s = TestServer::start().await;
    let t = RawTarget::start(1000, 10, false).await;
    s.register(
        "cut",
        "c1",
        json!({"address": "10.8.1.1", "port": 80, "check": http_check(&t.url(), json!({}))}),
    )
    .await;
    // Critical from the start; the output shows the probe ran and why it failed.
    let output = || async {
        instance(&s, "cut", "c1").await.unwrap()["health"]["output"]
            .as_str()
            .unwrap()
            .to_string()
    };
    eventually(5, "c1 probed", || async {
        output().await.starts_with("HTTP 200")
    })
    .await;
    let text = output().await;
    assert!(
        text.starts_with("HTTP 200 OK, body read failed: "),
        "{text}"
    );
    // Several probes later it is still critical and out of DNS.
    let hits = t.hits.load(Ordering::SeqCst);
    eventually(5, "more probes", || async {
        t.hits.load(Ordering::SeqCst) >= hits + 3
    })
    .await;
    assert_eq!(status(&s, "cut", "c1").await, "critical");
    assert!(in_dns(&s, "cut").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_checked_instances_wait_for_their_first_pass() {
    let s = TestServer::start().await;
    let t = Target::start().await;
    let check = http_check(&t.url(), json!({"interval": "1s"}));
    s.register(
        "web",
        "w1",
        json!({"address": "10.6.0.1", "port": 80, "check": check}),
    )
    .await;
    eventually(5, "w1 passing", || async {
        status(&s, "web", "w1").await == "passing"
    })
    .await;
    let dir = s.stop().await;
    let mut cfg = common::test_config(dir.path());
    cfg.validate().unwrap();
    let s = TestServer::start_in(dir, cfg).await;
    assert_eq!(status(&s, "web", "w1").await, "critical");
    assert!(
        in_dns(&s, "web").await.is_empty(),
        "handed out before its first check"
    );
    eventually(5, "w1 passing again", || async {
        status(&s, "web", "w1").await == "passing"
    })
    .await;
    assert_eq!(in_dns(&s, "web").await, vec!["10.6.0.1".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_check_expires_and_recovers_in_dns() {
    let s = TestServer::start().await;
    let body = json!({"address": "10.7.0.1", "port": 80, "check": {"ttl": "1s"}});
    s.register("batch", "b1", body).await;
    assert!(in_dns(&s, "batch").await.is_empty());
    s.report("batch", "b1", "passing").await;
    assert_eq!(in_dns(&s, "batch").await, vec!["10.7.0.1".to_string()]);
    eventually(4, "b1 expired", || async {
        in_dns(&s, "batch").await.is_empty()
    })
    .await;
    let out = instance(&s, "batch", "b1").await.unwrap();
    assert!(
        out["health"]["output"]
            .as_str()
            .unwrap()
            .contains("ttl expired")
    );
    s.report("batch", "b1", "passing").await;
    assert_eq!(in_dns(&s, "batch").await, vec!["10.7.0.1".to_string()]);
}
