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
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    cfg.dns.zones_dir = dir.path().join("zones");
    let routing = std::env::var("ROUTING").unwrap_or_default();
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
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = Embedded::open(dir.path()).unwrap();
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
    let queries: Vec<Vec<u8>> = (0..1000)
        .map(|s| match kind.as_str() {
            "srv" => query(&format!("svc-{s:04}.service.internal."), 33),
            "nx" => query(&format!("nosuch-{s:04}.service.internal."), 1),
            "inst" => query(&format!("i1.svc-{s:04}.instance.internal."), 1),
            _ => query(&format!("svc-{s:04}.service.internal."), 1),
        })
        .collect();
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
