//! Real secondaries of signpost's zone (CONTRACT §2, zone transfers and NOTIFY): Knot
//! (`knotd`) and NSD (`nsd`), each started by the test on a free 127.0.0.1 port with its own
//! temporary config and state folder, running as the test's user (no user to drop to), and
//! killed by PID at the end. Each transfers D from signpost with the TSIG key, is sent a
//! NOTIFY on every change, and must then answer a registration and a deregistration within
//! 3 s; what it holds after its incremental transfers equals a fresh AXFR from signpost; a
//! secondary holding the wrong secret never gets the zone.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::TestServer;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use serde_json::json;
use signpost::config::{Network, Secret, TsigConfig};

/// The TSIG key signpost and the secondaries share (base64 of 32 bytes).
const SECRET: &str = "c2lnbnBvc3Qtc2Vjb25kYXJ5LXRlc3Qta2V5LTMyYnk=";
/// Another secret under the same key name.
const WRONG: &str = "d3JvbmctdGhlLXNlY29uZGFyeS10ZXN0LWtleS0zMmI=";

/// How long a secondary may take to show a change once signpost has published it (the
/// NOTIFY goes out at once: `dns.notify_interval` is 200 ms here).
const PICK_UP: Duration = Duration::from_secs(3);

/// A port free on 127.0.0.1 for both UDP and TCP when asked.
fn free_port() -> u16 {
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A secondary process; killed (by its PID, through its `Child`) when dropped.
struct Secondary {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    log: &'static str,
}

impl Drop for Secondary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Secondary {
    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(self.log)).unwrap_or_default()
    }
}

fn spawn(program: &str, args: &[&str], dir: &Path) -> Child {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} starts (scripts/test installs it): {e}"))
}

/// Knot as a secondary of `internal.` from `primary`, on `port`, with `secret`.
fn knot(primary: SocketAddr, port: u16, secret: &str) -> Secondary {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let conf = format!(
        "server:\n    listen: 127.0.0.1@{port}\n    rundir: {d}\n    pidfile: {d}/knot.pid\n\
         log:\n  - target: {d}/knot.log\n    any: info\n\
         database:\n    storage: {d}\n\
         control:\n    listen: {d}/knot.sock\n\
         key:\n  - id: transfer\n    algorithm: hmac-sha256\n    secret: {secret}\n\
         remote:\n  - id: primary\n    address: {}@{}\n    key: transfer\n\
         acl:\n  - id: notify\n    address: 127.0.0.1\n    action: notify\n\
         \x20 - id: transfer\n    address: 127.0.0.1\n    action: transfer\n\
         template:\n  - id: default\n    storage: {d}\n    zonefile-sync: -1\n\
         \x20   zonefile-load: none\n    journal-content: all\n\
         zone:\n  - domain: internal.\n    master: primary\n    acl: [notify, transfer]\n",
        primary.ip(),
        primary.port()
    );
    std::fs::write(dir.path().join("knot.conf"), conf).unwrap();
    let child = spawn("knotd", &["-c", "knot.conf"], dir.path());
    Secondary {
        child,
        port,
        dir,
        log: "knot.log",
    }
}

/// NSD as a secondary of `internal.` from `primary`, on `port`, with `secret`; it runs in
/// the foreground (`-d`), without chroot or a user to drop to.
fn nsd(primary: SocketAddr, port: u16, secret: &str) -> Secondary {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let conf = format!(
        "server:\n    ip-address: 127.0.0.1@{port}\n    port: {port}\n    username: \"\"\n\
         \x20   chroot: \"\"\n    zonesdir: \"{d}\"\n    pidfile: \"{d}/nsd.pid\"\n\
         \x20   xfrdfile: \"{d}/xfrd.state\"\n    xfrdir: \"{d}\"\n\
         \x20   zonelistfile: \"{d}/zone.list\"\n    database: \"\"\n\
         \x20   logfile: \"{d}/nsd.log\"\n    verbosity: 2\n    server-count: 1\n\
         \x20   zonefiles-write: 0\n\
         remote-control:\n    control-enable: no\n\
         key:\n    name: \"transfer\"\n    algorithm: hmac-sha256\n    secret: \"{secret}\"\n\
         zone:\n    name: \"internal.\"\n    zonefile: \"internal.zone\"\n\
         \x20   allow-notify: 127.0.0.1 NOKEY\n    request-xfr: {}@{} transfer\n\
         \x20   provide-xfr: 127.0.0.1 NOKEY\n",
        primary.ip(),
        primary.port()
    );
    std::fs::write(dir.path().join("nsd.conf"), conf).unwrap();
    let child = spawn("nsd", &["-d", "-c", "nsd.conf"], dir.path());
    Secondary {
        child,
        port,
        dir,
        log: "nsd.log",
    }
}

/// signpost as the primary: transfers for loopback, signed with the key, NOTIFY to `port`.
async fn primary(port: u16) -> TestServer {
    TestServer::start_with(|c| {
        c.dns.transfer.allow = vec![Network::parse("127.0.0.0/8").unwrap()];
        c.dns.transfer.tsig = Some(TsigConfig {
            name: "transfer.".into(),
            algorithm: "hmac-sha256".into(),
            secret: Secret(SECRET.into()),
        });
        c.dns.notify = vec![SocketAddr::from(([127, 0, 0, 1], port))];
        c.dns.notify_interval = Duration::from_millis(200);
    })
    .await
}

/// The addresses `server` answers for `name` (empty for any failure or negative answer).
async fn addresses(server: SocketAddr, name: &str) -> BTreeSet<String> {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let wire = common::query(name, RecordType::A, None);
    if sock.send_to(&wire, server).await.is_err() {
        return BTreeSet::new();
    }
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(Duration::from_millis(500), sock.recv(&mut buf)).await {
        Ok(Ok(n)) => match Message::from_vec(&buf[..n]) {
            Ok(m) if m.metadata.response_code == ResponseCode::NoError => m
                .answers
                .iter()
                .filter_map(|r| match &r.data {
                    RData::A(a) => Some(a.0.to_string()),
                    _ => None,
                })
                .collect(),
            _ => BTreeSet::new(),
        },
        _ => BTreeSet::new(),
    }
}

/// Waits up to `bound` for `server` to answer exactly `want` for `name`.
async fn answers_within(server: SocketAddr, name: &str, want: &[&str], bound: Duration) -> bool {
    let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        if addresses(server, name).await == want {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The zone `internal.` as `server` transfers it, through `kdig` (signed when `key`), as a
/// set of normalised record lines.
fn axfr(server: SocketAddr, key: Option<&str>) -> BTreeSet<String> {
    let mut args = vec![
        format!("@{}", server.ip()),
        "-p".into(),
        server.port().to_string(),
        "internal.".into(),
        "AXFR".into(),
        "+nocomments".into(),
        "+nostats".into(),
        "+noheader".into(),
    ];
    if let Some(k) = key {
        args.push("-y".into());
        args.push(format!("hmac-sha256:transfer:{k}"));
    }
    let out = Command::new("kdig")
        .args(&args)
        .output()
        .expect("kdig runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty() && !l.contains("TSIG"))
        .map(|l| {
            l.split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .to_lowercase()
        })
        .collect()
}

async fn follows_signpost(kind: &str) {
    let port = free_port();
    let s = primary(port).await;
    s.register("web", "w1", json!({"address": "10.0.0.1", "port": 80}))
        .await;
    let secondary = match kind {
        "knot" => knot(s.dns, port, SECRET),
        _ => nsd(s.dns, port, SECRET),
    };
    let web = "web.service.internal.";
    assert!(
        answers_within(
            secondary.addr(),
            web,
            &["10.0.0.1"],
            Duration::from_secs(15)
        )
        .await,
        "{kind}: the first transfer\n{}",
        secondary.log()
    );
    // A registration, then a deregistration: each at the secondary within 3 s.
    s.register("web", "w2", json!({"address": "10.0.0.2", "port": 80}))
        .await;
    assert!(
        answers_within(secondary.addr(), web, &["10.0.0.1", "10.0.0.2"], PICK_UP).await,
        "{kind}: a registration within {PICK_UP:?}\n{}",
        secondary.log()
    );
    assert_eq!(s.deregister("web", "w1").await, 204);
    assert!(
        answers_within(secondary.addr(), web, &["10.0.0.2"], PICK_UP).await,
        "{kind}: a deregistration within {PICK_UP:?}\n{}",
        secondary.log()
    );
    // A few more changes of every kind, then: what the secondary holds after applying them
    // incrementally equals a fresh AXFR from signpost.
    s.register(
        "api",
        "a1",
        json!({"address": "10.0.1.1", "port": 9000, "tags": ["v2"], "check": {"ttl": "60s"}}),
    )
    .await;
    s.report("api", "a1", "passing").await;
    assert!(
        answers_within(
            secondary.addr(),
            "api.service.internal.",
            &["10.0.1.1"],
            PICK_UP
        )
        .await,
        "{kind}: a health change within {PICK_UP:?}\n{}",
        secondary.log()
    );
    let fresh = axfr(s.dns, Some(SECRET));
    assert!(fresh.len() > 5, "signpost's AXFR: {fresh:#?}");
    let held = axfr(secondary.addr(), None);
    assert_eq!(
        held,
        fresh,
        "{kind}: the secondary's zone\n{}",
        secondary.log()
    );
    if kind == "knot" {
        assert!(
            secondary.log().contains("IXFR, incoming"),
            "knot took the changes as IXFR\n{}",
            secondary.log()
        );
    }
    // The transfer needs the key: unsigned or wrongly signed, nothing comes.
    assert!(axfr(s.dns, None).is_empty(), "unsigned AXFR refused");
    assert!(
        axfr(s.dns, Some(WRONG)).is_empty(),
        "wrongly signed AXFR refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knot_follows_signpost() {
    follows_signpost("knot").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nsd_follows_signpost() {
    follows_signpost("nsd").await;
}

/// A secondary with the wrong secret never gets the zone: signpost refuses its SOA query and
/// its transfer (NOTAUTH, BADSIG), and it has nothing to answer with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secondary_with_the_wrong_key_gets_nothing() {
    let port = free_port();
    let s = primary(port).await;
    s.register("web", "w1", json!({"address": "10.0.0.1", "port": 80}))
        .await;
    let secondary = knot(s.dns, port, WRONG);
    // Waiting out the bound is the point: the zone must not arrive within it.
    assert!(
        !answers_within(
            secondary.addr(),
            "web.service.internal.",
            &["10.0.0.1"],
            PICK_UP
        )
        .await,
        "the zone reached a secondary with the wrong key\n{}",
        secondary.log()
    );
    assert!(
        secondary.log().contains("BADSIG") || secondary.log().contains("failed"),
        "knot reports the refused refresh\n{}",
        secondary.log()
    );
}
