//! Replicas on etcd as separate `signpost` processes (the built binary) on a real etcd
//! started by the test: a replica killed with SIGKILL mid-burst loses no acknowledged write
//! and its checks move to the others within `member_ttl` plus an interval; a replica paused
//! while etcd compacts past its revision reloads and catches up; `export` and `import` move a
//! registry from the embedded store to etcd and back.
#![cfg(feature = "etcd")]

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use common::etcd::Cluster;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_signpost");

/// A `signpost serve` process, killed by PID when dropped.
struct Replica {
    child: Child,
    http: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

/// A config file for a replica of `cluster`.
fn etcd_config(dir: &Path, cluster: &Cluster) -> std::path::PathBuf {
    let endpoints = cluster
        .endpoints()
        .iter()
        .map(|e| format!("{e:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let path = dir.join("signpost.toml");
    std::fs::write(
        &path,
        format!(
            "[dns]\nlisten = [\"127.0.0.1:0\"]\nzones_dir = {zones:?}\n\
             [http]\nlisten = \"127.0.0.1:0\"\n\
             [registry]\nbackend = \"etcd\"\n\
             [registry.etcd]\nendpoints = [{endpoints}]\nmember_ttl = \"3s\"\ntimeout = \"2s\"\n",
            zones = dir.join("zones"),
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("zones")).unwrap();
    path
}

impl Replica {
    fn start(config: &Path, name: &str) -> Replica {
        Self::serve(&[
            "--config".as_ref(),
            config.as_os_str(),
            "--node-name".as_ref(),
            name.as_ref(),
        ])
    }

    /// `signpost serve ARGS`, once ready.
    fn serve(args: &[&std::ffi::OsStr]) -> Replica {
        let name = format!("{args:?}");
        let mut child = Command::new(BIN)
            .arg("serve")
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("signpost starts");
        let (tx, rx) = mpsc::channel();
        let stderr = Arc::new(Mutex::new(String::new()));
        let buf = stderr.clone();
        let err = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in err.lines() {
                let Ok(line) = line else { break };
                buf.lock().unwrap().push_str(&line);
                buf.lock().unwrap().push('\n');
                let _ = tx.send(line);
            }
        });
        let until = Instant::now() + Duration::from_secs(30);
        let http = loop {
            let left = until.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|e| {
                panic!("{name} not ready ({e:?}):\n{}", stderr.lock().unwrap())
            });
            if line.contains("signpost ready") {
                let word = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("http="))
                    .expect("http= in the ready line");
                let word: String = word.chars().filter(|c| !c.is_control()).collect();
                let word = word.trim_end_matches("\u{1b}[0m").trim_end_matches("[0m");
                break word
                    .parse()
                    .unwrap_or_else(|_| panic!("address in {line:?}"));
            }
        };
        Replica {
            child,
            http,
            stderr,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `signpost ARGS` (export, import) run to the end: its stdout, after asserting success.
fn run(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "signpost {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn ids(c: &reqwest::Client, r: &Replica, service: &str) -> BTreeSet<String> {
    let body: Value = c
        .get(r.url(&format!("/v1/services/{service}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["instances"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| i["id"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

async fn until_ids(c: &reqwest::Client, r: &Replica, service: &str, want: &BTreeSet<String>) {
    let start = Instant::now();
    loop {
        let got = ids(c, r, service).await;
        if &got == want {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{service}: {got:?}, want {want:?}\n{}",
            r.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn put(c: &reqwest::Client, r: &Replica, service: &str, id: &str, body: Value) -> u16 {
    match c
        .put(r.url(&format!("/v1/services/{service}/instances/{id}")))
        .json(&body)
        .send()
        .await
    {
        Ok(resp) => resp.status().as_u16(),
        Err(_) => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_burst_loses_nothing_acknowledged_and_its_checks_move() {
    let _serial = common::etcd::SERIAL.lock().await;
    let cluster = Cluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let cfg = etcd_config(dir.path(), &cluster);
    let mut a = Replica::start(&cfg, "a");
    let b = Replica::start(&cfg, "b");
    let c = client();

    // Checks spread over both replicas.
    let (addr, hits) = common::probes::target().await;
    let n = 10;
    for i in 0..n {
        let body = json!({"address": "10.7.0.1", "port": 80,
            "check": {"http": format!("http://{addr}/k{i}"), "interval": "1s", "timeout": "500ms"}});
        assert_eq!(put(&c, &b, "chk", &format!("k{i}"), body).await, 200);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    // A burst against a, killed part-way.
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let burst = {
        let (c, url, acked) = (c.clone(), a.url(""), acked.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            for i in 0..2000 {
                if started.elapsed() > Duration::from_secs(15) {
                    break;
                }
                let r = c
                    .put(format!("{url}/v1/services/burst/instances/i{i}"))
                    .json(&json!({"address": "10.7.1.1", "port": 80}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        acked.lock().unwrap().insert(format!("i{i}"));
                    }
                    Ok(_) => {}
                    Err(_) => break, // a is gone
                }
            }
        })
    };
    while acked.lock().unwrap().len() < 100 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.kill9();
    let killed = Instant::now();
    burst.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    let held = ids(&c, &b, "burst").await;
    let start = Instant::now();
    let mut held = held;
    while !acked.is_subset(&held) && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        held = ids(&c, &b, "burst").await;
    }
    let lost: Vec<_> = acked.difference(&held).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");

    // Every check is probed again within member_ttl (3s) plus one interval (1s) of the kill,
    // and goes on being probed (two seconds of slack for a loaded machine).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let hits = hits.lock().unwrap().clone();
    for i in 0..n {
        let p = format!("/k{i}");
        let after: Vec<_> = hits[&p].iter().filter(|t| **t > killed).collect();
        let first = after.first().map(|t| t.duration_since(killed));
        assert!(
            // member_ttl (3 s; etcd checks lease expiry every 500 ms) and a probe at once by
            // the new owner, with slack for a loaded machine (bench/replicas.sh measures it).
            first.is_some_and(|d| d <= Duration::from_millis(5000)),
            "{p}: first probe after the kill at {first:?}"
        );
        let last = after.last().unwrap().duration_since(killed);
        assert!(
            last >= Duration::from_secs(4),
            "{p} still probed after the move"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_paused_while_etcd_compacts_reloads_and_catches_up() {
    let _serial = common::etcd::SERIAL.lock().await;
    let mut cluster = Cluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let cfg = etcd_config(dir.path(), &cluster);
    let a = Replica::start(&cfg, "a");
    let b = Replica::start(&cfg, "b");
    let c = client();
    for id in ["x1", "x2", "x3"] {
        assert_eq!(
            put(
                &c,
                &a,
                "cmp",
                id,
                json!({"address": "10.8.0.1", "port": 80})
            )
            .await,
            200
        );
    }
    let set = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    until_ids(&c, &b, "cmp", &set(&["x1", "x2", "x3"])).await;

    b.signal("-STOP");
    // While b sleeps: etcd restarts (b's watch connection is gone, so it must open a new
    // watch from its old revision), then changes, then etcd compacts past b's revision.
    cluster.kill(0);
    cluster.restart(0);
    cluster.wait_healthy(Duration::from_secs(20));
    let start = Instant::now();
    while put(
        &c,
        &a,
        "cmp",
        "x4",
        json!({"address": "10.8.0.4", "port": 80}),
    )
    .await
        != 200
    {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "a's writes did not resume"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = c
        .delete(a.url("/v1/services/cmp/instances/x1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let status: Value =
        serde_json::from_str(&cluster.ctl(&["get", "/signpost/none", "-w", "json"])).unwrap();
    let rev = status["header"]["revision"].as_u64().unwrap().to_string();
    cluster.ctl(&["compact", &rev]);
    b.signal("-CONT");

    until_ids(&c, &b, "cmp", &set(&["x2", "x3", "x4"])).await;
    assert!(b.log().contains("reloading"), "{}", b.log());
    // And it goes on following the watch.
    assert_eq!(
        put(
            &c,
            &a,
            "cmp",
            "x5",
            json!({"address": "10.8.0.5", "port": 80})
        )
        .await,
        200
    );
    until_ids(&c, &b, "cmp", &set(&["x2", "x3", "x4", "x5"])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_and_import_move_a_registry_to_etcd_and_back() {
    let _serial = common::etcd::SERIAL.lock().await;
    let cluster = Cluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let cfg = etcd_config(dir.path(), &cluster);
    let c = client();

    // An embedded registry with a few instances.
    let data = dir.path().join("data");
    {
        let embedded = dir.path().join("embedded.toml");
        std::fs::write(
            &embedded,
            "[dns]\nlisten = [\"127.0.0.1:0\"]\n[http]\nlisten = \"127.0.0.1:0\"\n",
        )
        .unwrap();
        let mut e = Replica::serve(&[
            "--config".as_ref(),
            embedded.as_os_str(),
            "--data-dir".as_ref(),
            data.as_os_str(),
        ]);
        for (id, body) in [
            (
                "e1",
                json!({"address": "10.9.0.1", "port": 80, "tags": ["v2"]}),
            ),
            (
                "e2",
                json!({"address": "10.9.0.2", "port": 81, "check": {"ttl": "30s"}}),
            ),
            (
                "e3",
                json!({"address": "fd00::3", "port": 82, "meta": {"zone": "eu-1"}}),
            ),
        ] {
            assert_eq!(put(&c, &e, "mv", id, body).await, 200);
        }
        e.signal("-TERM");
        assert!(e.child.wait().unwrap().success(), "{}", e.log());
    }
    let from_embedded = run(&["export".as_ref(), "--data-dir".as_ref(), data.as_os_str()]);
    assert_eq!(from_embedded.lines().count(), 3);
    let file = dir.path().join("registry.jsonl");
    std::fs::write(&file, &from_embedded).unwrap();
    run(&[
        "import".as_ref(),
        file.as_os_str(),
        "--config".as_ref(),
        cfg.as_os_str(),
    ]);

    // A replica on etcd serves them; export from etcd gives the same lines.
    let a = Replica::start(&cfg, "a");
    let set = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    until_ids(&c, &a, "mv", &set(&["e1", "e2", "e3"])).await;
    let from_etcd = run(&["export".as_ref(), "--config".as_ref(), cfg.as_os_str()]);
    assert_eq!(from_etcd, from_embedded);

    // And back: into a new embedded store.
    let back = dir.path().join("back");
    let file2 = dir.path().join("from-etcd.jsonl");
    std::fs::write(&file2, &from_etcd).unwrap();
    run(&[
        "import".as_ref(),
        file2.as_os_str(),
        "--data-dir".as_ref(),
        back.as_os_str(),
    ]);
    let back_out = run(&["export".as_ref(), "--data-dir".as_ref(), back.as_os_str()]);
    assert_eq!(back_out, from_etcd);
}

/// A registry bigger than one read (2,000 keys a page) and than the etcd client's 4 MiB
/// message limit loads whole, on a replica's start and in `export`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_larger_than_one_read_loads_whole() {
    let _serial = common::etcd::SERIAL.lock().await;
    let cluster = Cluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let cfg = etcd_config(dir.path(), &cluster);
    let n = 4500;
    // About 1 KiB of metadata each (a pair is at most 255 bytes).
    let pad = (0..5)
        .map(|k| format!("\"p{k}\":\"{}\"", "x".repeat(200)))
        .collect::<Vec<_>>()
        .join(",");
    let lines: String = (0..n)
        .map(|i| {
            format!(
                "{{\"v\":1,\"service\":\"big{}\",\"id\":\"i{i}\",\"address\":\"10.{}.{}.{}\",\"port\":80,\"tags\":[],\"meta\":{{{pad}}},\"weight\":1,\"priority\":0,\"ttl\":null,\"check\":null,\"deregister_after_ms\":null,\"maintenance\":null}}\n",
                i % 10,
                i / 65536,
                (i / 256) % 256,
                i % 256
            )
        })
        .collect();
    let file = dir.path().join("big.jsonl");
    std::fs::write(&file, &lines).unwrap();
    run(&[
        "import".as_ref(),
        file.as_os_str(),
        "--config".as_ref(),
        cfg.as_os_str(),
    ]);

    let a = Replica::start(&cfg, "a");
    let c = client();
    let body: Value = c
        .get(a.url("/v1/services"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let total: u64 = body["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["instances"].as_u64().unwrap())
        .sum();
    assert_eq!(total, n, "{}", a.log());
    let out = run(&["export".as_ref(), "--config".as_ref(), cfg.as_os_str()]);
    assert_eq!(out.lines().count(), n as usize);
}
