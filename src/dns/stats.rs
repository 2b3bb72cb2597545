//! DNS counters, kept the way Knot's mod-stats keeps them: each UDP worker thread owns one
//! block of plain counters and latency buckets, written only by that thread; TCP connections
//! and forwarded answers (async tasks on any runtime thread) share one more block. A scrape
//! sums the blocks (`Stats::totals`); `metrics` encodes the sums.
//!
//! Why not the metrics crate here: its counters are looked up by label set (a lock and a
//! hash per increment). A query instead costs a few increments of counters indexed by small
//! numbers (transport, address family, question type, RCODE, latency bucket), in a block
//! that sits on cache lines of its own, so no two workers ever write the same line. An
//! owner's increment is a relaxed load and store (no locked instruction), the shared block's
//! a relaxed `fetch_add`. Nothing here allocates, hashes or takes a lock, and this module
//! imports no metrics crate (ARCHITECTURE.md, "Invariants").

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use super::wire::{
    A, AAAA, ANCOUNT_AT, ANY, AXFR, BADVERS, CNAME, DNSKEY, DS, HEADER_LEN, HTTPS, IXFR, MX, NS,
    NSEC, NSEC3, PTR, RCODE, RRSIG, SOA, SRV, TC, TXT,
};

/// The question types counted by name, CoreDNS's list (its `monitorType`); any other type is
/// counted as `other`.
pub(crate) const TYPE_NAMES: [&str; TYPES] = [
    "A", "AAAA", "CNAME", "DNSKEY", "DS", "MX", "NSEC3", "NSEC", "NS", "PTR", "RRSIG", "SOA",
    "SRV", "TXT", "HTTPS", "IXFR", "AXFR", "ANY", "other",
];
/// Slots of the question-type dimension: the named types and `other`.
pub(crate) const TYPES: usize = 19;

/// The slot of a question type in `TYPE_NAMES`.
fn type_slot(qtype: u16) -> usize {
    match qtype {
        A => 0,
        AAAA => 1,
        CNAME => 2,
        DNSKEY => 3,
        DS => 4,
        MX => 5,
        NSEC3 => 6,
        NSEC => 7,
        NS => 8,
        PTR => 9,
        RRSIG => 10,
        SOA => 11,
        SRV => 12,
        TXT => 13,
        HTTPS => 14,
        IXFR => 15,
        AXFR => 16,
        ANY => 17,
        _ => 18,
    }
}

/// The RCODE label of each response slot: the header's sixteen codes by their RFC names
/// (unassigned ones by number, as CoreDNS prints them), BADVERS, NODATA (NOERROR with an
/// empty answer section, counted apart as Knot does), and `other` extended RCODEs.
pub(crate) const RCODE_NAMES: [&str; RCODES] = [
    "NOERROR",
    "FORMERR",
    "SERVFAIL",
    "NXDOMAIN",
    "NOTIMP",
    "REFUSED",
    "YXDOMAIN",
    "YXRRSET",
    "NXRRSET",
    "NOTAUTH",
    "NOTZONE",
    "DSOTYPENI",
    "12",
    "13",
    "14",
    "15",
    "BADVERS",
    "NODATA",
    "other",
];
/// Slots of the RCODE dimension.
pub(crate) const RCODES: usize = 19;
const NODATA_SLOT: u8 = 17;
const OTHER_RCODE_SLOT: u8 = 18;

/// Upper bounds of the latency buckets, in nanoseconds: 5 µs to 5 s (a forwarded query may
/// wait for several upstreams). A last bucket (+Inf) follows.
pub(crate) const BUCKET_BOUNDS_NS: [u64; BUCKETS] = [
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
];
/// Finite latency buckets.
pub(crate) const BUCKETS: usize = 19;

/// How a query arrived: the `proto` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proto {
    Udp = 0,
    Tcp = 1,
}

/// The `proto` label of each `Proto`.
pub(crate) const PROTO_NAMES: [&str; 2] = ["udp", "tcp"];
/// The `family` label of each family slot: CoreDNS's 1 (IPv4) and 2 (IPv6).
pub(crate) const FAMILY_NAMES: [&str; 2] = ["1", "2"];

/// The family slot of a client address; an IPv4 client on an IPv6 socket counts as IPv4.
pub(crate) fn family(peer: std::net::IpAddr) -> usize {
    usize::from(!peer.to_canonical().is_ipv4())
}

/// What a response says, read from its header once it is written: its RCODE slot and TC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Answer {
    slot: u8,
    truncated: bool,
}

impl Answer {
    /// Classifies `response` (a whole message, header included) answered with `rcode`.
    pub(crate) fn of(rcode: u16, response: &[u8]) -> Self {
        let (flags, ancount) = match response.get(..HEADER_LEN) {
            Some(h) => (
                u16::from_be_bytes([h[2], h[3]]),
                u16::from_be_bytes([h[ANCOUNT_AT], h[ANCOUNT_AT + 1]]),
            ),
            None => (0, 0),
        };
        let slot = match rcode {
            0 if ancount == 0 => NODATA_SLOT,
            0..=15 => rcode as u8,
            BADVERS => 16,
            _ => OTHER_RCODE_SLOT,
        };
        Self {
            slot,
            truncated: flags & TC != 0,
        }
    }

    /// A relayed reply: its RCODE is the header's (an upstream's extended bits are not read).
    pub(crate) fn relayed(reply: &[u8]) -> Self {
        let rcode = reply.get(3).map_or(0, |b| u16::from(*b) & RCODE);
        Self::of(rcode, reply)
    }
}

/// One writer's counters. Aligned to 128 bytes (two cache lines, which adjacent-line
/// prefetching pairs), so two blocks never share a line.
#[derive(Default)]
#[repr(align(128))]
pub(crate) struct Block {
    /// [proto][family][type]
    requests: [[[AtomicU64; TYPES]; 2]; 2],
    responses: [AtomicU64; RCODES],
    /// Forwarded queries by the RCODE their client got.
    forwarded: [AtomicU64; RCODES],
    truncated: AtomicU64,
    /// Latency buckets (not cumulative); the last is +Inf.
    latency: [AtomicU64; BUCKETS + 1],
    latency_sum_ns: AtomicU64,
}

/// Adds `n`: a plain load and store when only this thread writes the counter (`OWNED`), an
/// atomic add when several do.
#[inline(always)]
fn add<const OWNED: bool>(c: &AtomicU64, n: u64) {
    if OWNED {
        c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
    } else {
        c.fetch_add(n, Relaxed);
    }
}

/// Writes one block: `Recorder<true>` for the one thread that owns it, `Recorder<false>` for
/// the shared block.
#[derive(Clone, Copy)]
pub(crate) struct Recorder<'a, const OWNED: bool>(&'a Block);

impl<const OWNED: bool> Recorder<'_, OWNED> {
    /// A query with a question of `qtype` from a client of `family` arrived over `proto`.
    #[inline]
    pub(crate) fn request(&self, proto: Proto, family: usize, qtype: u16) {
        add::<OWNED>(
            &self.0.requests[proto as usize][family & 1][type_slot(qtype)],
            1,
        );
    }

    /// A response was sent (or dropped by the rate limiter) for a query received at
    /// `started`.
    #[inline]
    pub(crate) fn response(&self, answer: Answer, started: Instant) {
        let b = self.0;
        add::<OWNED>(&b.responses[usize::from(answer.slot)], 1);
        if answer.truncated {
            add::<OWNED>(&b.truncated, 1);
        }
        let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let bucket = BUCKET_BOUNDS_NS
            .iter()
            .position(|&bound| ns <= bound)
            .unwrap_or(BUCKETS);
        add::<OWNED>(&b.latency[bucket], 1);
        add::<OWNED>(&b.latency_sum_ns, ns);
    }

    /// A forwarded query's client got `answer` (an upstream's reply, or SERVFAIL).
    #[inline]
    pub(crate) fn forwarded(&self, answer: Answer) {
        add::<OWNED>(&self.0.forwarded[usize::from(answer.slot)], 1);
    }
}

/// Fail-open (CONTRACT §2 "Routing"), counted by the name builder on the registry writer,
/// never on the query path: how many times a service started failing open, and how many do
/// now.
#[derive(Debug, Default)]
pub(crate) struct FailOpen {
    pub entered: AtomicU64,
    pub services: AtomicU64,
}

/// Every block: one per UDP worker and the shared one.
pub(crate) struct Stats {
    workers: Box<[Block]>,
    shared: Block,
    /// The builder's fail-open counts (`DnsView::fail_open`).
    fail_open: std::sync::Arc<FailOpen>,
}

impl Stats {
    /// Blocks for `workers` UDP worker threads and the shared block.
    pub(crate) fn new(workers: usize) -> Self {
        Self {
            workers: (0..workers).map(|_| Block::default()).collect(),
            shared: Block::default(),
            fail_open: Default::default(),
        }
    }

    /// Reports the fail-open counts of `fail_open` (the `DnsView`'s) with the rest.
    pub(crate) fn with_fail_open(mut self, fail_open: std::sync::Arc<FailOpen>) -> Self {
        self.fail_open = fail_open;
        self
    }

    /// The block of UDP worker `i`, which only that worker's thread may write (a second
    /// writer would lose counts, never corrupt anything); `None` past the last block.
    pub(crate) fn worker(&self, i: usize) -> Option<Recorder<'_, true>> {
        self.workers.get(i).map(Recorder)
    }

    /// The number of worker blocks.
    pub(crate) fn workers(&self) -> usize {
        self.workers.len()
    }

    /// The block TCP connections and forwarded answers share.
    pub(crate) fn shared(&self) -> Recorder<'_, false> {
        Recorder(&self.shared)
    }

    /// The sums over every block, for a scrape.
    pub(crate) fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for b in self.workers.iter().chain(std::iter::once(&self.shared)) {
            for (p, families) in b.requests.iter().enumerate() {
                for (f, types) in families.iter().enumerate() {
                    for (k, c) in types.iter().enumerate() {
                        t.requests[p][f][k] += c.load(Relaxed);
                    }
                }
            }
            for (k, c) in b.responses.iter().enumerate() {
                t.responses[k] += c.load(Relaxed);
            }
            for (k, c) in b.forwarded.iter().enumerate() {
                t.forwarded[k] += c.load(Relaxed);
            }
            t.truncated += b.truncated.load(Relaxed);
            for (k, c) in b.latency.iter().enumerate() {
                t.latency[k] += c.load(Relaxed);
            }
            t.latency_sum_ns += b.latency_sum_ns.load(Relaxed);
        }
        t.fail_open_entered = self.fail_open.entered.load(Relaxed);
        t.fail_open_services = self.fail_open.services.load(Relaxed);
        t
    }
}

/// Counts summed over every block; indexed like `Block` and the label tables above.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Totals {
    pub requests: [[[u64; TYPES]; 2]; 2],
    pub responses: [u64; RCODES],
    pub forwarded: [u64; RCODES],
    pub truncated: u64,
    /// Per bucket, not cumulative; the last is +Inf.
    pub latency: [u64; BUCKETS + 1],
    pub latency_sum_ns: u64,
    /// Times a service started failing open.
    pub fail_open_entered: u64,
    /// Services failing open now.
    pub fail_open_services: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::wire::{NOERROR, NXDOMAIN};

    fn header(flags: u16, ancount: u16) -> Vec<u8> {
        let mut h = vec![0u8; HEADER_LEN];
        h[2..4].copy_from_slice(&flags.to_be_bytes());
        h[ANCOUNT_AT..ANCOUNT_AT + 2].copy_from_slice(&ancount.to_be_bytes());
        h
    }

    #[test]
    fn blocks_do_not_share_cache_lines() {
        assert_eq!(std::mem::align_of::<Block>(), 128);
        assert_eq!(std::mem::size_of::<Block>() % 128, 0);
    }

    #[test]
    fn labels_cover_every_slot() {
        assert_eq!(TYPE_NAMES[type_slot(A)], "A");
        assert_eq!(TYPE_NAMES[type_slot(SRV)], "SRV");
        assert_eq!(TYPE_NAMES[type_slot(HTTPS)], "HTTPS");
        assert_eq!(TYPE_NAMES[type_slot(0)], "other");
        assert_eq!(TYPE_NAMES[type_slot(99)], "other");
        assert!(BUCKET_BOUNDS_NS.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(BUCKET_BOUNDS_NS[0], 5_000, "buckets start at 5 µs");
    }

    #[test]
    fn answers_are_classified_from_their_header() {
        let a = |rcode: u16, flags, an| {
            RCODE_NAMES[usize::from(Answer::of(rcode, &header(flags, an)).slot)]
        };
        assert_eq!(a(u16::from(NOERROR), 0, 1), "NOERROR");
        assert_eq!(a(u16::from(NOERROR), 0, 0), "NODATA");
        assert_eq!(a(u16::from(NXDOMAIN), 0, 0), "NXDOMAIN");
        assert_eq!(a(BADVERS, 0, 0), "BADVERS");
        assert_eq!(a(23, 0, 0), "other");
        assert!(Answer::of(0, &header(TC, 1)).truncated);
        assert!(!Answer::of(0, &header(0, 1)).truncated);
        let relayed = Answer::relayed(&header(0x8183, 0));
        assert_eq!(RCODE_NAMES[usize::from(relayed.slot)], "NXDOMAIN");
    }

    #[test]
    fn a_scrape_sums_owned_and_shared_blocks() {
        let stats = Stats::new(2);
        let started = Instant::now();
        for i in 0..2 {
            let w = stats.worker(i).unwrap();
            w.request(Proto::Udp, 0, A);
            w.response(Answer::of(0, &header(0, 1)), started);
        }
        assert!(stats.worker(2).is_none());
        let s = stats.shared();
        s.request(Proto::Tcp, 1, SRV);
        s.response(Answer::of(0, &header(TC, 0)), started);
        s.forwarded(Answer::relayed(&header(0x8182, 0)));
        let t = stats.totals();
        assert_eq!(t.requests[0][0][type_slot(A)], 2);
        assert_eq!(t.requests[1][1][type_slot(SRV)], 1);
        assert_eq!(t.responses[0], 2);
        assert_eq!(t.responses[usize::from(NODATA_SLOT)], 1);
        assert_eq!(t.truncated, 1);
        assert_eq!(t.forwarded[2], 1, "SERVFAIL");
        assert_eq!(t.latency.iter().sum::<u64>(), 3);
    }
}
