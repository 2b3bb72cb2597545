//! Load generator for `bench/replicas.sh`: three signpost replicas on one etcd cluster,
//! measured against raw etcd writes of the same size, for registration throughput,
//! write-to-DNS visibility across replicas and check failover after a replica is killed. It
//! speaks raw HTTP/1.1 and DNS over tokio sockets and talks to etcd with the `etcd-client`
//! crate directly; it does not use signpost's library.
//!
//!     cargo build --release --features etcd --example replica_load
//!     replica_load register --http A,B,C --to 10000 --per-service 4 --conns 64 --service-prefix rb1
//!     replica_load etcd-put --endpoints URL,URL,URL --like /signpost/instances/rb1-00000/i0 \
//!         --key-prefix /rawbench/ --service-prefix rb1 --to 10000 --per-service 4 --conns 64
//!     replica_load visibility --http A --dns B --samples 500
//!     replica_load failover --http A --target-port P --checks 60 --pids P1,P2,P3 --victim 2
//!
//! Each mode prints one JSON object on stdout.
//! - `register`: instances `0..to`; instance `i` is `i{i % per}` of service
//!   `{service-prefix}-{i / per:05}`, address 10.x.y.z from `i`. `conns` keep-alive connections,
//!   dealt round-robin over the replicas' HTTP addresses, each keep one PUT in flight (answered
//!   200: committed in etcd and in that replica's DNS). Stops at `deadline` seconds.
//! - `etcd-put`: the same keys under `key-prefix` (`{key-prefix}instances/{service}/{id}`),
//!   each value the bytes of the key `like` (a registration record signpost wrote), written
//!   with plain etcd puts by `conns` tasks (one put in flight each) over `clients` etcd
//!   clients (one gRPC channel each, like one per replica), each connected to every endpoint.
//! - `visibility`: `samples` times, one after the other: PUT a new service `vis-N` on `http`,
//!   then ask `vis-N.service.internal` A of `dns` (another replica) over UDP in a loop, one
//!   query outstanding, until an answer has records; latency = that answer's arrival minus the
//!   time the PUT was written.
//! - `failover`: serves a tiny HTTP target on `target-port` that records every probe (path,
//!   time, and which replica's process holds the probing connection, found through
//!   `/proc/net/tcp` and `/proc/<pid>/fd`); registers `checks` instances of service `fo` on
//!   `http` with HTTP checks (`interval`) against it; waits until every check has been probed
//!   by a live replica; sends SIGKILL to `pids[victim]`; watches `observe` seconds. A check
//!   moved when its last probe before the kill came from the victim; its failover time is its
//!   first probe after the kill by another replica. `--dump FILE` writes every probe (path,
//!   ms from the kill, replica index or -1 when not found) to FILE.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

#[path = "support/load.rs"]
mod load;
use load::*;

/// The service and instance id of registration `i`.
fn names(prefix: &str, per: u64, i: u64) -> (String, String) {
    (format!("{prefix}-{:05}", i / per), format!("i{}", i % per))
}

/// What a throughput run reports: successes, errors, per-request latencies (µs), seconds.
struct Run {
    ok: u64,
    errors: u64,
    lat: Vec<u64>,
    secs: f64,
}

/// CPU time (user + system) this process has used, in seconds: the script subtracts it, with
/// the servers', from the machine's busy time to show how much other work ran meanwhile.
fn self_cpu() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

impl Run {
    fn json(mut self, mode: &str, extra: &str) -> String {
        self.lat.sort_unstable();
        format!(
            r#"{{"mode":"{mode}","done":{},"errors":{},"seconds":{:.3},"per_second":{:.0},"p50_us":{},"p99_us":{},"max_us":{},"load_cpu_s":{:.3}{extra}}}"#,
            self.ok,
            self.errors,
            self.secs,
            self.ok as f64 / self.secs,
            pct(&self.lat, 50.0),
            pct(&self.lat, 99.0),
            self.lat.last().copied().unwrap_or(0),
            self_cpu(),
        )
    }
}

async fn register(args: &[String]) {
    let http: Vec<SocketAddr> = list(args, "--http");
    let to: u64 = arg(args, "--to", Some(10_000));
    let per: u64 = arg(args, "--per-service", Some(4));
    let conns: usize = arg(args, "--conns", Some(64));
    let deadline_s: f64 = arg(args, "--deadline", Some(120.0));
    let prefix: String = arg(args, "--service-prefix", None);

    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(deadline_s);
    let mut tasks = Vec::new();
    for c in 0..conns {
        let addr = http[c % http.len()];
        let (next, errors, prefix) = (next.clone(), errors.clone(), prefix.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let Ok(mut conn) = Conn::connect(addr).await else {
                eprintln!("connect {addr} failed");
                errors.fetch_add(1, Ordering::Relaxed);
                return lat;
            };
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= to {
                    break;
                }
                let (svc, id) = names(&prefix, per, i);
                let path = format!("/v1/services/{svc}/instances/{id}");
                match put_instance(&mut conn, addr, &path, (i, per), &errors).await {
                    Some(Some(us)) => lat.push(us),
                    Some(None) => {}
                    None => break,
                }
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap_or_default());
    }
    let run = Run {
        ok: lat.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        lat,
        secs: start.elapsed().as_secs_f64(),
    };
    println!(
        "{}",
        run.json(
            "register",
            &format!(r#","conns":{conns},"replicas":{}"#, http.len())
        )
    );
}

async fn etcd_put(args: &[String]) {
    let endpoints: Vec<String> = list(args, "--endpoints");
    let like: String = arg(args, "--like", None);
    let key_prefix: String = arg(args, "--key-prefix", None);
    let svc_prefix: String = arg(args, "--service-prefix", None);
    let to: u64 = arg(args, "--to", Some(10_000));
    let per: u64 = arg(args, "--per-service", Some(4));
    let conns: usize = arg(args, "--conns", Some(64));
    let clients: usize = arg(args, "--clients", Some(3));
    let deadline_s: f64 = arg(args, "--deadline", Some(120.0));

    let connect = || async {
        etcd_client::Client::connect(&endpoints, None)
            .await
            .expect("connect to etcd")
    };
    let mut first = connect().await;
    let got = first.get(like.as_str(), None).await.expect("read --like");
    let value = got
        .kvs()
        .first()
        .unwrap_or_else(|| panic!("no key {like} in etcd"))
        .value()
        .to_vec();
    let mut pool = vec![first];
    while pool.len() < clients {
        pool.push(connect().await);
    }
    let value = Arc::new(value);
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(deadline_s);
    let mut tasks = Vec::new();
    for c in 0..conns {
        let mut client = pool[c % pool.len()].kv_client();
        let (next, errors, value) = (next.clone(), errors.clone(), value.clone());
        let (kp, sp) = (key_prefix.clone(), svc_prefix.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= to {
                    break;
                }
                let (svc, id) = names(&sp, per, i);
                let key = format!("{kp}instances/{svc}/{id}");
                let t = Instant::now();
                match client.put(key, value.as_slice(), None).await {
                    Ok(_) => lat.push(t.elapsed().as_micros() as u64),
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 5 {
                            eprintln!("etcd put: {e}");
                        }
                    }
                }
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap_or_default());
    }
    let run = Run {
        ok: lat.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        lat,
        secs: start.elapsed().as_secs_f64(),
    };
    let (svc, id) = names(&svc_prefix, per, 0);
    let key_len = format!("{key_prefix}instances/{svc}/{id}").len();
    println!(
        "{}",
        run.json(
            "etcd_put",
            &format!(
                r#","conns":{conns},"clients":{clients},"key_bytes":{key_len},"like_key_bytes":{},"value_bytes":{}"#,
                like.len(),
                value.len()
            )
        )
    );
}

async fn visibility(args: &[String]) {
    let http: SocketAddr = arg(args, "--http", None);
    let dns: SocketAddr = arg(args, "--dns", None);
    let samples: u64 = arg(args, "--samples", Some(500));
    let mut conn = Conn::connect(http).await.expect("connect to the HTTP API");
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind UDP");
    sock.connect(dns).await.expect("connect UDP");
    let (mut vis, mut put, mut failed) = (Vec::new(), Vec::new(), 0u64);
    let mut id: u16 = 1;
    for i in 0..samples {
        let name = format!("vis-{i:05}.service.internal");
        let path = format!("/v1/services/vis-{i:05}/instances/i0");
        let body = format!(r#"{{"address":"{}","port":9000}}"#, address(200_000 + i));
        let (status, put_t, dns_t) =
            visibility_sample(&mut conn, &sock, &mut id, (&path, &body, &name)).await;
        match (status, dns_t) {
            (Ok(200), Some(d)) => {
                vis.push(d.as_micros() as u64);
                put.push(put_t.as_micros() as u64);
            }
            (s, _) => {
                failed += 1;
                if failed < 5 {
                    eprintln!("sample {i}: PUT {s:?}, visible {}", dns_t.is_some());
                }
            }
        }
    }
    vis.sort_unstable();
    put.sort_unstable();
    println!(
        r#"{{"mode":"visibility","samples":{},"ok":{},"failed":{},"visible_p50_us":{},"visible_p99_us":{},"visible_max_us":{},"put_p50_us":{},"put_p99_us":{}}}"#,
        samples,
        vis.len(),
        failed,
        pct(&vis, 50.0),
        pct(&vis, 99.0),
        vis.last().copied().unwrap_or(0),
        pct(&put, 50.0),
        pct(&put, 99.0),
    );
}

/// One probe the target saw: when, and the process (index into the replica PIDs) that holds
/// the connection it came over (`None`: not found, e.g. gone before the lookup).
type Probes = Arc<Mutex<HashMap<String, Vec<(Instant, Option<usize>)>>>>;

/// The inode of the TCP socket from 127.0.0.1:`peer` to 127.0.0.1:`local` (the client's side,
/// as `/proc/net/tcp` lists both ends of a loopback connection).
fn client_inode(peer: u16, local: u16) -> Option<u64> {
    let tcp = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let want_l = format!("0100007F:{peer:04X}");
    let want_r = format!("0100007F:{local:04X}");
    tcp.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 9 && f[1] == want_l && f[2] == want_r)
            .then(|| f[9].parse().ok())
            .flatten()
    })
}

/// Which of `pids` has the socket `inode` open.
fn holder(pids: &[u32], inode: u64) -> Option<usize> {
    let want = format!("socket:[{inode}]");
    pids.iter().position(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| {
                d.flatten().any(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|l| l.as_os_str().to_string_lossy() == want)
                })
            })
            .unwrap_or(false)
    })
}

/// A keep-alive HTTP/1.1 target answering every GET with 200 and recording it.
async fn target(listener: TcpListener, pids: Arc<Vec<u32>>, probes: Probes) {
    let local = listener.local_addr().expect("local address").port();
    loop {
        let Ok((mut s, peer)) = listener.accept().await else {
            return;
        };
        let (pids, probes) = (pids.clone(), probes.clone());
        tokio::spawn(async move {
            // /proc/net/tcp is read in pages while sockets come and go, so a lookup can miss
            // a line on a busy machine: one that failed is tried again on the next request.
            let find = || client_inode(peer.port(), local).and_then(|i| holder(&pids, i));
            let mut who = find();
            let mut buf = Vec::new();
            let mut tmp = [0u8; 4096];
            loop {
                while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    buf.drain(..end + 4);
                    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                    if who.is_none() {
                        who = find();
                    }
                    probes
                        .lock()
                        .unwrap()
                        .entry(path)
                        .or_default()
                        .push((Instant::now(), who));
                    if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                match s.read(&mut tmp).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&tmp[..n]),
                }
            }
        });
    }
}

async fn failover(args: &[String]) {
    let http: SocketAddr = arg(args, "--http", None);
    let port: u16 = arg(args, "--target-port", None);
    let checks: usize = arg(args, "--checks", Some(60));
    let pids: Vec<u32> = list(args, "--pids");
    let victim: usize = arg(args, "--victim", None);
    let interval: String = arg(args, "--interval", Some("1s".to_string()));
    let observe: f64 = arg(args, "--observe", Some(8.0));
    let settle: f64 = arg(args, "--settle", Some(30.0));
    let dump: Option<String> = args
        .iter()
        .position(|a| a == "--dump")
        .and_then(|i| args.get(i + 1).cloned());
    assert!(victim < pids.len(), "--victim is an index into --pids");

    let probes: Probes = Arc::default();
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind the target port");
    tokio::spawn(target(listener, Arc::new(pids.clone()), probes.clone()));

    let mut conn = Conn::connect(http).await.expect("connect to the HTTP API");
    for k in 0..checks {
        let body = format!(
            r#"{{"address":"10.250.0.1","port":80,"check":{{"http":"http://127.0.0.1:{port}/c{k}","interval":"{interval}","timeout":"500ms"}}}}"#
        );
        conn.send("PUT", &format!("/v1/services/fo/instances/c{k}"), &body)
            .await
            .expect("send PUT");
        let status = conn.response().await.expect("PUT answered");
        assert_eq!(status, 200, "registration of check c{k}");
    }
    // Settled: every check probed at least twice since now, by a known replica, and the two
    // last probes from the same one (its owner, not one handing it over).
    let since = Instant::now();
    let until = since + Duration::from_secs_f64(settle);
    let settled = loop {
        let ok = {
            let p = probes.lock().unwrap();
            (0..checks).all(|k| {
                p.get(&format!("/c{k}")).is_some_and(|v| {
                    let recent: Vec<_> = v.iter().filter(|(t, _)| *t >= since).collect();
                    recent.len() >= 2 && {
                        let (a, b) = (recent[recent.len() - 2].1, recent[recent.len() - 1].1);
                        a.is_some() && a == b
                    }
                })
            })
        };
        if ok {
            break true;
        }
        if Instant::now() >= until {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // One more interval, so every owner's phase is in the record.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let owner_before: Vec<Option<usize>> = {
        let p = probes.lock().unwrap();
        (0..checks)
            .map(|k| {
                p.get(&format!("/c{k}"))
                    .and_then(|v| v.last())
                    .and_then(|x| x.1)
            })
            .collect()
    };
    // SIGKILL by the PID the script passed (a replica it started).
    // SAFETY: kill(2) takes plain integers.
    let rc = unsafe { libc::kill(pids[victim] as i32, libc::SIGKILL) };
    let killed = Instant::now();
    assert_eq!(rc, 0, "kill -9 {}", pids[victim]);
    tokio::time::sleep(Duration::from_secs_f64(observe)).await;

    let p = probes.lock().unwrap().clone();
    if let Some(path) = &dump {
        // Every probe: path, ms from the kill (negative: before), replica index or -1.
        let mut out = String::new();
        for (path, v) in &p {
            for (t, w) in v {
                let ms = if *t >= killed {
                    t.duration_since(killed).as_secs_f64() * 1e3
                } else {
                    -(killed.duration_since(*t).as_secs_f64() * 1e3)
                };
                out.push_str(&format!(
                    "{path}\t{ms:.1}\t{}\n",
                    w.map_or(-1, |w| w as i64)
                ));
            }
        }
        std::fs::write(path, out).expect("write --dump");
    }
    let (mut moved, mut stayed_gap, mut never) = (Vec::new(), Vec::new(), 0u64);
    let mut by_replica = vec![0u64; pids.len()];
    let mut unknown_owner = 0u64;
    let mut late_victim_probes = 0u64;
    for (k, before) in owner_before.iter().enumerate() {
        let v = p.get(&format!("/c{k}")).cloned().unwrap_or_default();
        let after: Vec<_> = v.iter().filter(|(t, _)| *t > killed).collect();
        // A probe the victim sent just before the kill can be read a little after it (the
        // target is one more task on a busy machine): it still counts as the victim's.
        let late = after.iter().filter(|(_, w)| *w == Some(victim)).count() as u64;
        late_victim_probes += late;
        let owner = if late > 0 { Some(victim) } else { *before };
        let first = after
            .iter()
            .find(|(_, w)| *w != Some(victim))
            .map(|(t, _)| t.duration_since(killed));
        match owner {
            Some(o) => by_replica[o] += 1,
            None => unknown_owner += 1,
        }
        match (owner, first) {
            (Some(o), Some(d)) if o == victim => moved.push(d.as_millis() as u64),
            (Some(o), None) if o == victim => never += 1,
            (_, Some(d)) => stayed_gap.push(d.as_millis() as u64),
            (_, None) => never += 1,
        }
    }
    moved.sort_unstable();
    stayed_gap.sort_unstable();
    let ms = |v: &[u64]| {
        format!(
            "[{}]",
            v.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    println!(
        r#"{{"mode":"failover","checks":{checks},"settled":{settled},"victim":{victim},"owned_before":{},"unknown_owner":{unknown_owner},"moved":{},"moved_p50_ms":{},"moved_max_ms":{},"moved_ms":{},"never_probed_after":{never},"others_first_probe_max_ms":{},"victim_probes_after_kill":{late_victim_probes}}}"#,
        ms(&by_replica),
        moved.len(),
        pct(&moved, 50.0),
        moved.last().copied().unwrap_or(0),
        ms(&moved),
        stayed_gap.last().copied().unwrap_or(0),
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("register") => register(&args).await,
        Some("etcd-put") => etcd_put(&args).await,
        Some("visibility") => visibility(&args).await,
        Some("failover") => failover(&args).await,
        _ => {
            eprintln!(
                "usage: replica_load register|etcd-put|visibility|failover [options] (see the source header)"
            );
            std::process::exit(2);
        }
    }
}
