//! libFuzzer target: any bytes through the query reader and handler, as a UDP and a TCP
//! query, from a client allowed to forward and one not, over a table with a zone file and a
//! few registered services (`tests/fixture`). It must never panic; every reply must keep the
//! query's ID and, over UDP, its size limit (512 bytes without EDNS, `dns.max_udp_payload`
//! with it).
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use signpost::dns::DnsView;
use signpost::dns::handler::{Outcome, Transport, handle};

#[path = "../../tests/fixture/mod.rs"]
#[allow(dead_code)]
mod fixture;

/// The table, built once per fuzzing process; its folder lives as long as the process.
fn view() -> &'static Arc<DnsView> {
    static VIEW: OnceLock<(tempfile::TempDir, Arc<DnsView>)> = OnceLock::new();
    &VIEW
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("a temporary folder");
            let view = fixture::view(dir.path());
            (dir, view)
        })
        .1
}

fuzz_target!(|data: &[u8]| {
    let table = view().table();
    let mut out = Vec::new();
    for transport in [Transport::Udp, Transport::Tcp] {
        for recursion in [false, true] {
            match handle(&table, data, transport, recursion, std::net::Ipv4Addr::LOCALHOST.into(), &mut out) {
                Outcome::Answered { .. } | Outcome::Signed { .. } => {
                    assert_eq!(&out[..2], &data[..2], "the query's ID");
                    if transport == Transport::Udp {
                        // An OPT, when there is one, is the reply's last record.
                        let n = out.len();
                        let edns = n >= 23 && out[n - 11..n - 8] == [0, 0, 41];
                        assert!(out.len() <= if edns { 1232 } else { 512 }, "UDP size");
                    }
                }
                Outcome::Dropped | Outcome::Forward { .. } => {}
            }
        }
    }
});
