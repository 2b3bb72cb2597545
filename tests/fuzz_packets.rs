//! Random packets through the query reader and handler (CONTRACT §2: nothing a client sends
//! can stop the server): 100,000 mutations of well-formed queries, from a fixed seed so a
//! failure repeats, each asked over UDP and TCP, as a client allowed to forward and not. No
//! panic; every reply parses with hickory-proto, keeps the query's ID, and a UDP reply stays
//! within its size limit (512 bytes without an OPT in the reply, `dns.max_udp_payload`
//! with one). `fuzz/` runs the same target under libFuzzer for longer.

mod fixture;

use fixture::{query, view};
use hickory_proto::op::Message;
use signpost::dns::handler::{Outcome, Transport, handle};

/// xorshift64*: small, fast, and the same sequence from the same seed everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One mutation of `seed` (with `other` for splices): flipped bits, random bytes, cuts,
/// insertions, counts set to extremes, compression pointers, or a splice of two queries.
fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut p = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(p.len());
        match rng.below(8) {
            0 => p[at] ^= 1 << rng.below(8),
            1 => p[at] = rng.next() as u8,
            2 => p.truncate(at),
            3 => p.insert(at, rng.next() as u8),
            4 if p.len() >= 12 => {
                // A section count: 0, 1, 2 or 0xffff.
                let c = 4 + 2 * rng.below(4);
                let v = [0u16, 1, 2, 0xffff][rng.below(4)];
                p[c..c + 2].copy_from_slice(&v.to_be_bytes());
            }
            5 if at + 1 < p.len() => {
                // A compression pointer anywhere, to anywhere.
                p[at] = 0xc0 | (rng.next() as u8 & 0x3f);
                p[at + 1] = rng.next() as u8;
            }
            6 => {
                let cut = rng.below(other.len());
                p.truncate(at);
                p.extend_from_slice(&other[cut..]);
            }
            _ => {
                let n = rng.below(16);
                p.extend((0..n).map(|_| rng.next() as u8));
            }
        }
        if p.is_empty() {
            break;
        }
    }
    p
}

#[test]
fn a_hundred_thousand_mutated_packets() {
    let dir = tempfile::tempdir().unwrap();
    let view = view(dir.path());
    let table = view.table();
    let names = [
        "web.service.internal.",
        "v2.web.service.internal.",
        "_web._tcp.service.internal.",
        "w1.web.instance.internal.",
        "1.0.0.10.in-addr.arpa.",
        "internal.",
        "nope.internal.",
        "www.example.test.",
        "alias.example.test.",
        "example.com.",
    ];
    let types = [1u16, 2, 5, 6, 12, 16, 28, 33, 41, 250, 251, 252, 255];
    let options: [&[u8]; 3] = [
        &[],
        &[0, 8, 0, 7, 0, 1, 24, 10, 0, 0],
        &[0xfd, 0xe9, 0, 1, 9],
    ];
    let mut seeds = Vec::new();
    for (i, name) in names.iter().enumerate() {
        for (j, t) in types.iter().enumerate() {
            let edns = (i + j) % 3;
            seeds.push(query(
                (i * 31 + j) as u16,
                name,
                *t,
                (edns > 0).then(|| options[edns]),
            ));
        }
    }
    let mut rng = Rng(0x5157_0a57_dead_beef);
    let mut out = Vec::new();
    let mut answered = 0usize;
    for n in 0..100_000 {
        let seed = &seeds[rng.below(seeds.len())];
        let other = &seeds[rng.below(seeds.len())];
        let packet = mutate(&mut rng, seed, other);
        for transport in [Transport::Udp, Transport::Tcp] {
            let recursion = n % 2 == 0;
            let outcome = handle(
                &table,
                &packet,
                transport,
                recursion,
                std::net::Ipv4Addr::LOCALHOST.into(),
                &mut out,
            );
            match outcome {
                Outcome::Answered { .. } | Outcome::Signed { .. } => {}
                Outcome::Dropped | Outcome::Forward { .. } => continue,
            }
            answered += 1;
            let what = format!("packet {n} {packet:02x?} over {transport:?}");
            let m = Message::from_vec(&out)
                .unwrap_or_else(|e| panic!("{what}: reply {out:02x?} does not parse: {e}"));
            assert_eq!(&out[..2], &packet[..2], "{what}: ID");
            if transport == Transport::Udp {
                let limit = if m.edns.is_some() { 1232 } else { 512 };
                assert!(out.len() <= limit, "{what}: {} bytes > {limit}", out.len());
            }
        }
    }
    assert!(answered > 50_000, "most packets are answered: {answered}");
}
