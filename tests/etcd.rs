//! Replicas on etcd (CONTRACT §4), with a real etcd cluster started by each test on loopback
//! ports and signpost replicas started in-process: a write on one is in every replica's DNS
//! with the same index; long-polls (native and Consul) carry across replicas; checks run
//! once; etcd stopped leaves DNS answering and writes 503 until it is back, without a
//! restart.
#![cfg(feature = "etcd")]

mod common;

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::TestServer;
use common::etcd::Cluster;
use hickory_proto::rr::{RData, RecordType};
use serde_json::json;

/// A replica named `name` on `cluster`, with a short membership TTL.
async fn replica(cluster: &Cluster, name: &str) -> TestServer {
    let endpoints = cluster.endpoints();
    let name = name.to_string();
    TestServer::start_with(move |c| {
        c.registry.backend = signpost::config::Backend::Etcd;
        c.registry.etcd.endpoints = endpoints;
        c.registry.etcd.name = Some(name);
        c.registry.etcd.member_ttl = Duration::from_secs(3);
        c.registry.etcd.timeout = Duration::from_secs(2);
    })
    .await
}

/// One test at a time (`SERIAL`: each starts its own cluster), a cluster of `members`, and
/// replicas `a` and `b` on it. Bind in this order, so the replicas stop before the cluster.
async fn setup(
    members: usize,
) -> (
    tokio::sync::MutexGuard<'static, ()>,
    Cluster,
    TestServer,
    TestServer,
) {
    let serial = common::etcd::SERIAL.lock().await;
    let cluster = Cluster::start(members);
    let a = replica(&cluster, "a").await;
    let b = replica(&cluster, "b").await;
    (serial, cluster, a, b)
}

/// A registration at `address` with an HTTP check of `url` every second.
fn checked(address: &str, url: &str) -> serde_json::Value {
    json!({"address": address, "port": 80,
        "check": {"http": url, "interval": "1s", "timeout": "500ms"}})
}

async fn addresses(s: &TestServer, name: &str) -> HashSet<IpAddr> {
    let (m, _) = s.udp(name, RecordType::A, None).await;
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect()
}

/// Waits (bounded) until `name` resolves on `s` to exactly `want`.
async fn until_resolves(s: &TestServer, name: &str, want: &[impl AsRef<str>]) {
    let want: HashSet<IpAddr> = want.iter().map(|a| a.as_ref().parse().unwrap()).collect();
    let start = Instant::now();
    loop {
        let got = addresses(s, name).await;
        if got == want {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{name} on {}: {got:?}, want {want:?}",
            s.dns
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn get(s: &TestServer, path: &str) -> (u16, Option<u64>, serde_json::Value) {
    let r = s.client.get(s.url(path)).send().await.unwrap();
    let status = r.status().as_u16();
    let index = r
        .headers()
        .get("x-signpost-index")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (
        status,
        index,
        r.json().await.unwrap_or(serde_json::Value::Null),
    )
}

async fn metrics(s: &TestServer) -> String {
    s.client
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of an unlabelled sample in a metrics page.
fn sample(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{page}"))
}

fn reg(addr: &str) -> serde_json::Value {
    json!({"address": addr, "port": 80})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_replica_is_in_every_replica_with_the_same_index() {
    let (_serial, cluster, a, b) = setup(1).await;
    a.register("web", "w1", reg("10.1.0.1")).await;
    // In the answering replica's DNS before its 2xx.
    assert_eq!(
        addresses(&a, "web.service.internal").await,
        HashSet::from(["10.1.0.1".parse().unwrap()])
    );
    until_resolves(&b, "web.service.internal", &["10.1.0.1"]).await;
    b.register("web", "w2", reg("10.1.0.2")).await;
    until_resolves(&a, "web.service.internal", &["10.1.0.1", "10.1.0.2"]).await;
    let (_, ia, body_a) = get(&a, "/v1/services/web").await;
    let (_, ib, body_b) = get(&b, "/v1/services/web").await;
    assert_eq!(ia, ib, "the same index on both replicas");
    assert_eq!(body_a, body_b, "the same body on both replicas");
    // The index is etcd's revision.
    let rev: serde_json::Value =
        serde_json::from_str(&cluster.ctl(&["get", "/signpost/x", "-w", "json"])).unwrap();
    assert_eq!(ia.unwrap(), rev["header"]["revision"].as_u64().unwrap());

    // A long-poll on b with the index a gave returns when a writes.
    let index = ia.unwrap();
    let poll = {
        let url = b.url(&format!("/v1/services/web?index={index}&wait=10s"));
        let c = b.client.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let r = c.get(url).send().await.unwrap();
            let i: u64 = r.headers()["x-signpost-index"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            (
                i,
                started.elapsed(),
                r.json::<serde_json::Value>().await.unwrap(),
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.register("web", "w3", reg("10.1.0.3")).await;
    let (i, took, body) = poll.await.unwrap();
    assert!(i > index, "{i} > {index}");
    assert!(
        took < Duration::from_secs(9),
        "woken by the write, not the wait: {took:?}"
    );
    assert_eq!(body["instances"].as_array().unwrap().len(), 3);

    // Deregistration on b leaves a's DNS.
    assert_eq!(b.deregister("web", "w1").await, 204);
    until_resolves(&a, "web.service.internal", &["10.1.0.2", "10.1.0.3"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_check_is_probed_by_one_replica_and_statuses_are_shared() {
    let (_serial, cluster, a, b) = setup(1).await;
    let (addr, hits) = common::probes::target().await;
    let n = 12;
    let all: Vec<String> = (0..n).map(|i| format!("10.2.0.{}", i + 1)).collect();
    for (i, address) in all.iter().enumerate() {
        let body = checked(address, &format!("http://{addr}/i{i}"));
        let s = if i % 2 == 0 { &a } else { &b };
        s.register("chk", &format!("i{i}"), body).await;
    }
    // Every instance passes on both replicas (each status written once, by its owner).
    until_resolves(&a, "chk.service.internal", &all).await;
    until_resolves(&b, "chk.service.internal", &all).await;
    // Over a few intervals, each check is probed about once per interval in total: twice
    // that would mean both replicas probe it.
    let before: usize = common::probes::counts(&hits).values().sum();
    let window = Duration::from_secs(4);
    tokio::time::sleep(window).await;
    let probes: usize = common::probes::counts(&hits).values().sum::<usize>() - before;
    let once = n * window.as_secs() as usize;
    assert!(
        probes >= once - n && probes <= once + n,
        "{probes} probes in {window:?} for {n} checks at 1s: once each is {once}"
    );
    // Both replicas run a share.
    let owners = cluster.ctl(&["get", "/signpost/members/", "--prefix", "--keys-only"]);
    assert!(
        owners.contains("members/a") && owners.contains("members/b"),
        "{owners}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_replicas_checks_move_to_the_others() {
    let (_serial, _cluster, a, b) = setup(1).await;
    let (addr, hits) = common::probes::target().await;
    let n = 8;
    let all: Vec<String> = (0..n).map(|i| format!("10.3.0.{}", i + 1)).collect();
    for (i, address) in all.iter().enumerate() {
        let body = checked(address, &format!("http://{addr}/m{i}"));
        a.register("mv", &format!("m{i}"), body).await;
    }
    until_resolves(&b, "mv.service.internal", &all).await;
    // a leaves (a clean stop revokes its membership): b probes every check from now on.
    a.stop().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = common::probes::counts(&hits);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = common::probes::counts(&hits);
    for i in 0..n {
        let p = format!("/m{i}");
        let moved = after.get(&p).copied().unwrap_or(0) - before.get(&p).copied().unwrap_or(0);
        assert!(
            moved >= 2,
            "check {p} probed {moved} times in 3s after its owner left"
        );
    }
    // Statuses stayed passing through the move (a new owner starts from the stored one).
    until_resolves(&b, "mv.service.internal", &all).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ttl_runs_out_once_across_replicas() {
    let (_serial, cluster, a, b) = setup(1).await;
    a.register(
        "ttl",
        "t1",
        json!({"address": "10.4.0.1", "port": 80, "check": {"ttl": "2s"}}),
    )
    .await;
    b.report("ttl", "t1", "passing").await;
    until_resolves(&a, "ttl.service.internal", &["10.4.0.1"]).await;
    // No report: critical on both within the TTL and a moment, written once (version 2: the
    // report, then the expiry by the owner alone; the starting health rides in the
    // registration's own value).
    until_resolves(&a, "ttl.service.internal", &[] as &[&str]).await;
    until_resolves(&b, "ttl.service.internal", &[] as &[&str]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kv: serde_json::Value =
        serde_json::from_str(&cluster.ctl(&["get", "/signpost/health/ttl/t1", "-w", "json"]))
            .unwrap();
    assert_eq!(kv["kvs"][0]["version"], 2, "{kv}");
    let (_, _, inst) = get(&b, "/v1/services/ttl/instances/t1").await;
    assert!(
        inst["health"]["output"]
            .as_str()
            .unwrap()
            .contains("ttl expired"),
        "{inst}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_stopped_keeps_dns_answering_and_writes_503_until_it_returns() {
    let (_serial, mut cluster, a, b) = setup(1).await;
    a.register("out", "o1", reg("10.5.0.1")).await;
    until_resolves(&b, "out.service.internal", &["10.5.0.1"]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // a progress answer or two
    let m = metrics(&a).await;
    assert_eq!(sample(&m, "signpost_etcd_up"), 1.0, "{m}");
    assert!(
        sample(&m, "signpost_registry_staleness_seconds") < 3.0,
        "{m}"
    );

    cluster.kill(0);
    // DNS keeps the last state; reads too.
    assert_eq!(addresses(&a, "out.service.internal").await.len(), 1);
    assert_eq!(addresses(&b, "out.service.internal").await.len(), 1);
    let (status, _, _) = get(&b, "/v1/services/out").await;
    assert_eq!(status, 200);
    // Writes: 503, Retry-After, an error naming etcd; nothing changed.
    let r = a
        .client
        .put(a.url("/v1/services/out/instances/o2"))
        .json(&reg("10.5.0.2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let e: serde_json::Value = r.json().await.unwrap();
    assert!(e["error"].as_str().unwrap().contains("etcd"), "{e}");
    assert_eq!(addresses(&a, "out.service.internal").await.len(), 1);
    let ready = a.client.get(a.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let healthz = a.client.get(a.url("/healthz")).send().await.unwrap();
    assert_eq!(healthz.status(), 200);
    // The metrics say so: etcd down, the copy growing stale.
    let start = Instant::now();
    loop {
        let m = metrics(&b).await;
        if sample(&m, "signpost_etcd_up") == 0.0
            && sample(&m, "signpost_registry_staleness_seconds") >= 3.0
        {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "{m}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // etcd back: writes succeed without a restart and reach the other replica.
    cluster.restart(0);
    cluster.wait_healthy(Duration::from_secs(20));
    let start = Instant::now();
    loop {
        let r = a
            .client
            .put(a.url("/v1/services/out/instances/o2"))
            .json(&reg("10.5.0.2"))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "writes did not resume"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    until_resolves(&b, "out.service.internal", &["10.5.0.1", "10.5.0.2"]).await;
    let start = Instant::now();
    while a.client.get(a.url("/ready")).send().await.unwrap().status() != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "/ready stayed 503"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_etcd_leader_killed_during_writes_loses_nothing_acknowledged() {
    let (_serial, mut cluster, a, b) = setup(3).await;
    let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let attempts = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (c, url, acked, attempts) =
            (a.client.clone(), a.url(""), acked.clone(), attempts.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            for i in 0..400 {
                if started.elapsed() > Duration::from_secs(20) {
                    break;
                }
                attempts.fetch_add(1, Ordering::Relaxed);
                let r = c
                    .put(format!("{url}/v1/services/burst/instances/b{i}"))
                    .json(&json!({"address": "10.6.0.1", "port": 80}))
                    .send()
                    .await;
                if let Ok(r) = r
                    && r.status() == 200
                {
                    acked.lock().unwrap().push(format!("b{i}"));
                }
            }
        })
    };
    while attempts.load(Ordering::Relaxed) < 50 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let leader = cluster.leader();
    cluster.kill(leader);
    writer.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 100,
        "writes went on after the leader died: {}",
        acked.len()
    );
    // Every acknowledged write is in etcd and in the other replica.
    let keys = cluster.ctl(&[
        "get",
        "/signpost/instances/burst/",
        "--prefix",
        "--keys-only",
    ]);
    let start = Instant::now();
    loop {
        let (_, _, body) = get(&b, "/v1/services/burst").await;
        let ids: HashSet<String> = body["instances"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|i| i["id"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default();
        if acked.iter().all(|id| ids.contains(id)) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "b lacks acknowledged writes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for id in &acked {
        assert!(
            keys.contains(&format!("/signpost/instances/burst/{id}\n")),
            "{id} not in etcd"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deregister_after_removes_an_instance_once_for_every_replica() {
    let (_serial, cluster, a, b) = setup(1).await;
    let c = replica(&cluster, "c").await;
    a.register(
        "gone",
        "g1",
        json!({"address": "10.4.1.1", "port": 80, "check": {"ttl": "1s"}, "deregister_after": "2s"}),
    )
    .await;
    b.report("gone", "g1", "passing").await;
    until_resolves(&c, "gone.service.internal", &["10.4.1.1"]).await;
    // No more reports: critical after 1s, removed 2s later, from every replica and etcd.
    let start = Instant::now();
    for s in [&a, &b, &c] {
        loop {
            let (status, _, _) = get(s, "/v1/services/gone/instances/g1").await;
            if status == 404 {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "g1 never removed"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let left = cluster.ctl(&["get", "/signpost/", "--prefix", "--keys-only"]);
    assert!(!left.contains("gone/g1"), "{left}");
    // Once: etcd's history of its keys holds one registration (its starting health inside),
    // one report, one expiry and one removal, whatever the number of replicas.
    let history = std::process::Command::new("timeout")
        .args(["3", "etcdctl", "--endpoints"])
        .arg(cluster.endpoints().join(","))
        .args(["watch", "--prefix", "--rev", "1", "/signpost/"])
        .env("ETCDCTL_API", "3")
        .output()
        .unwrap();
    let history = String::from_utf8_lossy(&history.stdout).to_string();
    let lines: Vec<&str> = history.lines().collect();
    let events = |kind: &str, key: &str| {
        lines
            .windows(2)
            .filter(|w| w[0] == kind && w[1] == key)
            .count()
    };
    assert_eq!(events("PUT", "/signpost/instances/gone/g1"), 1, "{history}");
    assert_eq!(
        events("DELETE", "/signpost/instances/gone/g1"),
        1,
        "{history}"
    );
    assert_eq!(events("PUT", "/signpost/health/gone/g1"), 2, "{history}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_through_two_replicas_give_both_the_same_indexes_and_bodies() {
    let (_serial, cluster, a, b) = setup(1).await;
    let burst = |s: &TestServer, service: &'static str| {
        let (c, url) = (s.client.clone(), s.url(""));
        tokio::spawn(async move {
            let mut tasks = Vec::new();
            for t in 0..4 {
                let (c, url) = (c.clone(), url.clone());
                tasks.push(tokio::spawn(async move {
                    for i in 0..25 {
                        let r = c
                            .put(format!("{url}/v1/services/{service}/instances/i{t}-{i}"))
                            .json(&json!({"address": format!("10.6.{t}.{}", i + 1), "port": 80}))
                            .send()
                            .await
                            .unwrap();
                        let status = r.status();
                        assert_eq!(status, 200, "{}", r.text().await.unwrap());
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        })
    };
    let (x, y) = (burst(&a, "left"), burst(&b, "right"));
    x.await.unwrap();
    y.await.unwrap();
    // Once both have everything, every read is the same on both: the same index per service
    // (its last change's revision) and the same body.
    let start = Instant::now();
    loop {
        let (_, ia, _) = get(&a, "/v1/services").await;
        let (_, ib, _) = get(&b, "/v1/services").await;
        if ia == ib {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{ia:?} vs {ib:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for service in ["left", "right"] {
        let path = format!("/v1/services/{service}");
        let (_, ia, body_a) = get(&a, &path).await;
        let (_, ib, body_b) = get(&b, &path).await;
        assert_eq!(body_a["instances"].as_array().unwrap().len(), 100);
        assert_eq!(ia, ib, "{service}: the same index on both replicas");
        assert_eq!(body_a, body_b, "{service}: the same body on both replicas");
        // Its last change is at the revision etcd gave it, on both replicas: a long-poll from
        // just below returns at once, one from that revision waits (a replica that stamped
        // another replica's change with a later index of its own would return at once).
        let kvs: serde_json::Value = serde_json::from_str(&cluster.ctl(&[
            "get",
            &format!("/signpost/instances/{service}/"),
            "--prefix",
            "-w",
            "json",
        ]))
        .unwrap();
        let last = kvs["kvs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|kv| kv["mod_revision"].as_u64().unwrap())
            .max()
            .unwrap();
        for s in [&a, &b] {
            let at_once = |index: u64| {
                let url = s.url(&format!("{path}?index={index}&wait=3s"));
                let c = s.client.clone();
                async move {
                    let t = Instant::now();
                    c.get(url).send().await.unwrap();
                    t.elapsed() < Duration::from_millis(1500)
                }
            };
            assert!(
                at_once(last - 1).await,
                "{service} on {}: changed at {last}",
                s.http
            );
            assert!(
                !at_once(last).await,
                "{service} on {}: unchanged since {last}",
                s.http
            );
        }
    }
}

/// The Consul API on replicas (CONTRACT §5): every replica gives a result the same
/// `X-Consul-Index` (derived from etcd's revision) and body, and a blocking read on one
/// replica with the index another gave wakes on that service's change made through the
/// other, not on another service's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consul_api_gives_every_replica_the_same_index_and_blocks_across_them() {
    let (_serial, _cluster, a, b) = setup(1).await;
    let consul_register = |s: &TestServer, body: serde_json::Value| {
        let (c, url) = (s.client.clone(), s.url("/v1/agent/service/register"));
        async move {
            let r = c.put(url).body(body.to_string()).send().await.unwrap();
            assert_eq!(r.status(), 200);
        }
    };
    let health = |s: &TestServer| {
        let (c, url) = (s.client.clone(), s.url("/v1/health/service/web"));
        async move {
            let r = c.get(url).send().await.unwrap();
            let i: u64 = r.headers()["x-consul-index"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            (i, r.json::<serde_json::Value>().await.unwrap())
        }
    };
    consul_register(
        &a,
        json!({"Name": "web", "ID": "w1", "Address": "10.2.0.1", "Port": 80}),
    )
    .await;
    until_resolves(&b, "web.service.internal", &["10.2.0.1"]).await;
    let (ia, body_a) = health(&a).await;
    let (ib, body_b) = health(&b).await;
    assert_eq!(ia, ib, "the same X-Consul-Index on both replicas");
    assert_eq!(body_a, body_b, "the same body on both replicas");
    let (_, native, _) = get(&a, "/v1/services/web").await;
    assert_eq!(
        ia,
        native.unwrap() + 1,
        "signpost's index (etcd's revision) plus one"
    );

    let watch = {
        let (c, url) = (
            b.client.clone(),
            b.url(&format!("/v1/health/service/web?index={ia}&wait=20s")),
        );
        tokio::spawn(async move {
            let r = c.get(url).send().await.unwrap();
            let i: u64 = r.headers()["x-consul-index"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            (i, r.json::<serde_json::Value>().await.unwrap())
        })
    };
    consul_register(
        &a,
        json!({"Name": "api", "Address": "10.2.0.9", "Port": 80}),
    )
    .await;
    until_resolves(&b, "api.service.internal", &["10.2.0.9"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!watch.is_finished(), "api's change woke a watch on web");
    consul_register(
        &a,
        json!({"Name": "web", "ID": "w2", "Address": "10.2.0.2", "Port": 80}),
    )
    .await;
    let (i, body) = tokio::time::timeout(Duration::from_secs(10), watch)
        .await
        .expect("web's change through a wakes the watch on b")
        .unwrap();
    assert!(i > ia, "{i} > {ia}");
    assert_eq!(body.as_array().unwrap().len(), 2);
    assert_eq!(health(&a).await.0, i, "and a shows the same index");
}

/// Routing fields (CONTRACT §2 "Routing") reach every replica: a registration with named
/// ports and fail-open, written through one replica, is served by the other: the named port's
/// SRV, answered failing open (its only instance is critical until its TTL check passes),
/// and the same instance JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_ports_and_fail_open_reach_every_replica() {
    let (_serial, _cluster, a, b) = setup(1).await;
    a.register(
        "api",
        "a1",
        json!({"address": "10.1.0.9", "port": 80, "ports": {"grpc": 9090},
               "fail_open": true, "check": {"ttl": "60s"}}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (m, _) = b
            .udp(
                "_grpc._tcp.api.service.internal.",
                RecordType::SRV,
                Some(1232),
            )
            .await;
        let srv: Vec<(u16, String)> = m
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(s) => Some((s.port, s.target.to_ascii())),
                _ => None,
            })
            .collect();
        if srv == [(9090, "a1.api.instance.internal.".to_string())] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "b never served the named port: {m}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, _, on_a) = get(&a, "/v1/services/api/instances/a1").await;
    let (_, _, on_b) = get(&b, "/v1/services/api/instances/a1").await;
    assert_eq!(on_b["ports"], json!({"grpc": 9090}));
    assert_eq!(on_b["fail_open"], true);
    assert_eq!(on_a["ports"], on_b["ports"]);
}
