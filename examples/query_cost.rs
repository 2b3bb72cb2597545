//! The DNS answer path in isolation, for instruction counts under callgrind: builds the name
//! table for 1,000 services × 3 instances (through the real registry and store), then answers
//! `N` queries of one kind with `dns::handler::handle`, no sockets involved.
//!
//!     cargo build --release --example query_cost
//!     valgrind --tool=callgrind target/release/examples/query_cost a 0      # set-up only
//!     valgrind --tool=callgrind target/release/examples/query_cost a 100000 # set-up + queries
//!
//! (difference of the two totals) / N = instructions per query. Kinds: a, srv, nx, inst.
//! `ROUTING=weights` registers weights 1:3:96 (a weighted schedule per service set);
//! `ROUTING=locality` also gives the instances `zone` metadata and a `dns.locality` holding
//! the client (127.0.0.0/8), so every service answer places the client and takes its zone's
//! order; unset: equal weights, no locality (plain rotation).
//!
//!     COLD=1 ROUTING=locality target/release/examples/query_cost a 200000
//!
//! times `handle` alone, in nanoseconds, as it runs in the server: each query arrives
//! through a loopback UDP socket and its answer goes back through it, so the kernel's work
//! has taken the caches and branch predictors before every answer, as it does in
//! `signpost serve`; a plain registry answers in turn with the routed one, so the two
//! figures share the machine's state. It shows what cold caches do to the answer path, but
//! its ratio moves by a few per cent from one process to the next (BENCHMARKS.md,
//! "Routing's cost"): to rank two builds, count instructions (`bench/dns_cost.sh`) or time
//! the server (`bench/dns_ab.sh`).

use std::sync::Arc;

use signpost::config::Config;
use signpost::dns::DnsView;
use signpost::dns::handler::{Transport, handle};
use signpost::model::{Instance, InstanceId, InstanceKey, Registration, ServiceName};
use signpost::registry::Registry;
use signpost::store::Embedded;
use tokio_util::sync::CancellationToken;

fn query(name: &str, qtype: u16) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0x00, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    // OPT: EDNS(0), payload 1232, as dnsperf and resolvers send.
    q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
    q
}

fn main() {
    let mut args = std::env::args().skip(1);
    let kind = args.next().unwrap_or_else(|| "a".into());
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let routing = std::env::var("ROUTING").unwrap_or_default();
    let dir = tempfile::tempdir().unwrap();
    let view = build(dir.path(), &routing);
    let queries: Vec<Vec<u8>> = (0..1000)
        .map(|s| match kind.as_str() {
            "srv" => query(&format!("svc-{s:04}.service.internal."), 33),
            "nx" => query(&format!("nosuch-{s:04}.service.internal."), 1),
            "inst" => query(&format!("i1.svc-{s:04}.instance.internal."), 1),
            _ => query(&format!("svc-{s:04}.service.internal."), 1),
        })
        .collect();
    if std::env::var_os("COLD").is_some() {
        cold(dir.path(), &view, &queries, n, &kind, &routing);
        return;
    }
    let mut out = Vec::with_capacity(4096);
    let mut bytes = 0usize;
    for k in 0..n {
        let table = view.table();
        handle(
            &table,
            &queries[k % 1000],
            Transport::Udp,
            false,
            std::net::Ipv4Addr::LOCALHOST.into(),
            &mut out,
        );
        bytes += out.len();
    }
    println!("{kind} ({routing:?}): {n} queries, {bytes} bytes answered");
}

/// `COLD=1`: the answer path as it runs in the server, after the kernel's work has taken the
/// caches and branch predictors, with neither the kernel's time nor its noise. A second,
/// plain registry (equal weights, no locality) is built beside `view`, and the two answer in
/// turn (plain then routed, then routed then plain, ...), each query arriving through a
/// loopback UDP socket and its answer sent back, as the server's loop does; only `handle`
/// is timed. Prints, for each, the mean and median nanoseconds per answer, and the routed
/// one's difference.
fn cold(
    dir: &std::path::Path,
    view: &DnsView,
    queries: &[Vec<u8>],
    n: usize,
    kind: &str,
    routing: &str,
) {
    let plain_dir = dir.join("plain");
    std::fs::create_dir_all(&plain_dir).unwrap();
    let plain = build(&plain_dir, "");
    // WARM=1: no round trip, for the same figures with the caches warm.
    let warm = std::env::var_os("WARM").is_some();
    // EVICT=KiB: instead of the round trip, a read of that many KiB between answers, which
    // takes the data caches (and, where the L2 holds the L1's lines, code from the L2 too);
    // under callgrind's cache simulation it flushes the data side only.
    let evict: Vec<u64> = std::env::var("EVICT")
        .ok()
        .and_then(|k| k.parse::<usize>().ok())
        .map_or_else(Vec::new, |k| (0..k * 128).map(|i| i as u64).collect());
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let me = socket.local_addr().unwrap();
    let mut buf = vec![0u8; 4096];
    let mut out = Vec::with_capacity(4096);
    let mut ns = [Vec::with_capacity(n), Vec::with_capacity(n)];
    for k in 0..2 * n {
        // 0: plain, 1: routed; the order swaps every pair so neither always goes first.
        let side = (k ^ (k >> 1)) & 1;
        let v = if side == 0 { &plain } else { view };
        let q = &queries[(k / 2) % queries.len()];
        if !evict.is_empty() {
            // Every line of `evict` once.
            let mut sum = 0u64;
            for line in evict.chunks(8) {
                sum = sum.wrapping_add(line[0]);
            }
            std::hint::black_box(sum);
        }
        let (len, peer) = if warm || !evict.is_empty() {
            buf[..q.len()].copy_from_slice(q);
            (q.len(), me)
        } else {
            socket.send_to(q, me).unwrap();
            socket.recv_from(&mut buf).unwrap()
        };
        let t = std::time::Instant::now();
        let table = v.table();
        handle(
            &table,
            &buf[..len],
            Transport::Udp,
            false,
            peer.ip(),
            &mut out,
        );
        drop(table);
        ns[side].push(t.elapsed().as_nanos() as u64);
        if !warm && evict.is_empty() {
            socket.send_to(&out, me).unwrap();
            socket.recv_from(&mut buf).unwrap();
        }
    }
    let mut figures = [(0.0, 0u64); 2];
    for (side, ns) in ns.iter_mut().enumerate() {
        let mean = ns.iter().sum::<u64>() as f64 / ns.len() as f64;
        ns.sort_unstable();
        figures[side] = (mean, ns[ns.len() / 2]);
    }
    let [(pm, pmed), (rm, rmed)] = figures;
    println!(
        "{kind} cold, {n} answers each: plain mean {pm:.0} ns median {pmed} ns; \
         {routing:?} mean {rm:.0} ns median {rmed} ns; difference mean {:+.0} ns median {:+} ns",
        rm - pm,
        rmed as i64 - pmed as i64
    );
}

/// The name table of 1,000 services × 3 instances registered through a real registry and
/// store under `dir`, with `routing` ("", "weights" or "locality") as the module says.
fn build(dir: &std::path::Path, routing: &str) -> Arc<DnsView> {
    let mut cfg = Config::default();
    cfg.dns.zones_dir = dir.join("zones");
    let weighted = routing == "weights" || routing == "locality";
    let zoned = routing == "locality";
    if zoned {
        for (net, zone) in [("127.0.0.0/8", "a"), ("10.0.0.0/8", "b")] {
            cfg.dns.locality.push(signpost::config::LocalityConfig {
                networks: vec![signpost::config::Network::parse(net).unwrap()],
                zone: zone.into(),
            });
        }
    }
    let view = DnsView::new(&cfg).unwrap();
    // One thread: the registrations land in one order, so a table is laid out alike every run.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Embedded::open(dir).unwrap();
        let (registry, writer) = Registry::open(Arc::new(store), vec![view.clone()])
            .await
            .unwrap();
        let stop = CancellationToken::new();
        let w = tokio::spawn(writer.run(stop.clone()));
        let mut tasks = Vec::new();
        for s in 0..1000 {
            for i in 0..3 {
                let r = registry.clone();
                tasks.push(tokio::spawn(async move {
                    let key = InstanceKey {
                        service: ServiceName::parse(&format!("svc-{s:04}")).unwrap(),
                        id: InstanceId::parse(&format!("i{i}")).unwrap(),
                    };
                    let registration = Registration {
                        address: format!("10.{}.{}.{}", s / 250, s % 250, i + 1),
                        port: 8000 + i as u16,
                        weight: weighted.then_some([1, 3, 96][i]),
                        meta: if zoned {
                            [("zone".into(), if i < 2 { "a" } else { "b" }.into())].into()
                        } else {
                            Default::default()
                        },
                        ..Registration::default()
                    };
                    r.register(Instance::new(key, registration).unwrap())
                        .await
                        .unwrap()
                }));
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
        stop.cancel();
        registry.flush().await.unwrap();
        w.await.unwrap();
    });
    view
}
