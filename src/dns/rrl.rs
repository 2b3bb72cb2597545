//! Response-rate limiting (RRL) of UDP answers, as Knot and NSD have it: the token buckets,
//! the classification of a response into the bucket it draws on, and the decision to send it,
//! slip it or drop it.
//!
//! A UDP query's source address can be forged, so a server that answers every datagram can
//! be aimed at a victim, and a signpost SRV answer is tens of times the size of its query.
//! Every response a UDP worker is about to send is counted against the bucket of its *flow*:
//! the client's prefix (`dns.rate_limit_ipv4_prefix`, `dns.rate_limit_ipv6_prefix`), the
//! response's class and the name that class is counted by. A flow gets `dns.rate_limit`
//! responses a second; past that, every `dns.rate_limit_slip`th response is *slipped* (sent
//! truncated: TC, the question, no records, which costs the victim no more than the query did
//! and sends a real client to TCP) and the others are dropped. TCP is never limited (a
//! connection proves its address), nor are clients in `dns.rate_limit_exempt` (loopback by
//! default: local tools and tests send bursts, and a loopback source cannot be forged from
//! outside the host). Replies relayed from a forwarding upstream are not counted: only
//! clients of `dns.forward.allow` get them, and at most the forwarder's in-flight limit.
//!
//! Classes, after Knot's (`rrl_clsid`) and NSD's: a positive answer counts per question name;
//! NODATA (Knot's "empty") per question name; NXDOMAIN per zone, so a flood of random names
//! under one zone shares one bucket; every other RCODE (REFUSED, FORMERR, NOTIMP, BADVERS)
//! per client prefix alone. Large answers are counted by size rather than put in a class of
//! their own: a response costs one token per started KiB (Knot's "large" threshold), so a
//! flow's bytes are bounded, not only its packets.
//!
//! Off (`dns.rate_limit = 0`, the default) there is no `Limiter`, and the query path pays
//! one branch on an `Option`.

use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use super::answer;
use super::names::{MAX_NAME, key_of_question};
use super::wire::{HEADER_LEN, MAX_POINTER, NOERROR, NXDOMAIN, POINTER};
use crate::config::DnsConfig;

/// Slots in the bucket table: 2 MiB of `AtomicU64`, allocated only when RRL is on. A slot
/// serves every flow that hashes to it (see `Limiter`), so the table is sized for collisions
/// to be rare while thousands of flows are over their rate at once (Knot's default table
/// held 393,241 buckets).
const SLOTS: usize = 1 << 18;

/// Bytes of response per token: a response costs one token per started KiB.
const TOKEN_BYTES: usize = 1024;

/// Token amounts are counted in thousandths, so a bucket refills by exactly `rate` units per
/// millisecond of the clock.
const MILLI: u32 = 1000;

/// How far a bucket's time may be ahead of a worker's clock reading and count as the same
/// moment: workers read the clock at slightly different instants.
const MAX_SKEW_MS: u32 = 1000;

/// The response classes, each a separate bucket for the same client prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Class {
    /// NOERROR with answer records; counted per question name.
    Positive = 1,
    /// NOERROR without answer records (NODATA); counted per question name.
    NoData = 2,
    /// NXDOMAIN; counted per zone.
    NxDomain = 3,
    /// Any other RCODE; counted per client prefix alone.
    Error = 4,
}

/// The limiter of one server: settings, the bucket table, and the counts of what it held
/// back.
///
/// One table shared by every UDP worker, each slot an `AtomicU64` changed by compare-and-swap
/// (relaxed: a slot is a value of its own, nothing else is published through it). Per-worker
/// tables would need no atomics, but SO_REUSEPORT spreads one client's datagrams over the
/// workers by source port, so a flood from many ports, which is what a forged one looks like,
/// would get up to workers × rate: 64 times the configured limit on 64 cores. With one table
/// the rate is the rate. The price is a cache line that moves between cores only when two
/// workers answer the same flow at the same moment, i.e. a flow busy enough to be limited;
/// unrelated flows share a line only by chance (8 slots per 64 bytes, 2^18 slots).
///
/// No key is stored in a slot: a slot is the bucket of every flow hashing to it, so two flows
/// that collide share one rate (neither gets more than `rate`; the quieter one may be slipped,
/// and retries over TCP). A slot untouched for a second is full again whatever it last held,
/// so it needs no owner to be reused. The hash is seeded per process, so a client cannot aim
/// at another flow's slot.
pub(crate) struct Limiter {
    /// Responses per second per flow (> 0); also the burst a full bucket holds.
    rate: u32,
    /// Every `slip`th limited response is slipped; 0 never, 1 always.
    slip: u32,
    v4_mask: u32,
    v6_mask: u128,
    exempt: Vec<ipnet::IpNet>,
    hasher: foldhash::fast::RandomState,
    slots: Box<[AtomicU64]>,
    /// Responses dropped by the limit (Knot's `dropped`). Only counted for now: a later
    /// metrics endpoint reads them.
    pub dropped: AtomicU64,
    /// Responses sent in their slipped form instead (Knot's `slipped`).
    pub slipped: AtomicU64,
}

/// A worker's count of the responses it held back, which picks the ones to slip. Kept per
/// worker so that counting takes no shared cache line; over all workers it is still every
/// `slip`th, give or take one per worker.
#[derive(Debug, Default)]
pub(crate) struct Slips(u32);

impl Slips {
    /// Whether the next limited response is the one to slip.
    fn next(&mut self, every: u32) -> bool {
        if every == 0 {
            return false;
        }
        self.0 = (self.0 + 1) % every;
        self.0 == 0
    }
}

impl Limiter {
    /// The limiter `dns` asks for; `None` when `dns.rate_limit` is 0 (off). The config is
    /// validated: the exempt networks parse and the prefixes are in range.
    pub(crate) fn new(dns: &DnsConfig) -> Option<Self> {
        if dns.rate_limit == 0 {
            return None;
        }
        let v4 = u32::from(dns.rate_limit_ipv4_prefix.min(32));
        let v6 = u32::from(dns.rate_limit_ipv6_prefix.min(128));
        Some(Self {
            rate: dns.rate_limit.min(crate::config::MAX_RATE_LIMIT),
            slip: dns.rate_limit_slip,
            v4_mask: u32::MAX.checked_shl(32 - v4).unwrap_or(0),
            v6_mask: u128::MAX.checked_shl(128 - v6).unwrap_or(0),
            exempt: dns.rate_limit_exempt.iter().map(|n| n.0).collect(),
            hasher: Default::default(),
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            dropped: AtomicU64::new(0),
            slipped: AtomicU64::new(0),
        })
    }

    /// Decides the fate of `response` (`rcode`, from `handler::handle`) to `client` over UDP:
    /// true to send it, as it is or, when the flow is over its rate and this one is to slip,
    /// rewritten in place to its slipped form; false to drop it.
    pub(crate) fn admit(
        &self,
        client: IpAddr,
        rcode: u16,
        response: &mut Vec<u8>,
        slips: &mut Slips,
    ) -> bool {
        let client = client.to_canonical();
        if self.exempt.iter().any(|n| n.contains(&client)) {
            return true;
        }
        if self.take(client, rcode, response, now_ms()) {
            return true;
        }
        if slips.next(self.slip) && answer::truncate(response) {
            self.slipped.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Charges `response` to its flow's bucket at `now` (ms); false when the bucket is short.
    fn take(&self, client: IpAddr, rcode: u16, response: &[u8], now: u32) -> bool {
        let mut key = [0u8; MAX_NAME];
        let (class, name) = classify(rcode, response, &mut key);
        let (family, source) = match client {
            IpAddr::V4(a) => (4u8, u128::from(u32::from(a) & self.v4_mask)),
            IpAddr::V6(a) => (6u8, u128::from(a) & self.v6_mask),
        };
        let mut h = self.hasher.build_hasher();
        h.write_u8(family);
        h.write_u8(class as u8);
        h.write_u128(source);
        h.write(name);
        let slot = &self.slots[h.finish() as usize & (SLOTS - 1)];
        let cost = cost(response.len(), self.rate);
        let mut current = slot.load(Ordering::Relaxed);
        loop {
            let (next, admitted) = Bucket::unpack(current).take(now, self.rate, cost);
            let next = next.pack();
            if next == current {
                return admitted;
            }
            match slot.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return admitted,
                Err(seen) => current = seen,
            }
        }
    }
}

/// The class of a response signpost wrote and the name it is counted by (lowercase wire
/// form, folded into `key`; empty for "the prefix alone").
fn classify<'k>(rcode: u16, response: &[u8], key: &'k mut [u8; MAX_NAME]) -> (Class, &'k [u8]) {
    if response.len() < HEADER_LEN {
        return (Class::Error, &[]);
    }
    let count = |at: usize| u16::from_be_bytes([response[at], response[at + 1]]);
    let class = if rcode == u16::from(NOERROR) && count(6) > 0 {
        Class::Positive
    } else if rcode == u16::from(NOERROR) {
        Class::NoData
    } else if rcode == u16::from(NXDOMAIN) {
        Class::NxDomain
    } else {
        return (Class::Error, &[]);
    };
    // NOERROR and NXDOMAIN responses always echo the question.
    let Some(qlen) = key_of_question(response, key) else {
        return (class, &[]);
    };
    if class != Class::NxDomain {
        return (class, &key[..qlen]);
    }
    // The zone: a negative answer's SOA is owned by the apex, written as a pointer into the
    // question (the name table's invariant: an apex ends each of its names).
    let soa = HEADER_LEN + qlen + 4;
    if count(8) > 0 && response.len() >= soa + 2 {
        let owner = count(soa);
        let at = usize::from(owner) & MAX_POINTER;
        if owner & POINTER == POINTER && (HEADER_LEN..HEADER_LEN + qlen).contains(&at) {
            return (class, &key[at - HEADER_LEN..qlen]);
        }
    }
    // No SOA (it did not fit): every NXDOMAIN of this prefix shares a bucket, the safe side.
    (class, &[])
}

/// What a response of `len` bytes costs in thousandths of a token: one token per started KiB,
/// at most a full bucket's worth, so that any response can be sent from a full bucket.
fn cost(len: usize, rate: u32) -> u32 {
    let tokens = len.div_ceil(TOKEN_BYTES).max(1);
    u32::try_from(tokens).unwrap_or(u32::MAX).min(rate) * MILLI
}

/// One token bucket, packed into a slot's 64 bits: when it was last counted (ms, wrapping)
/// and how much of it is spent (thousandths of a token). Counting the spent part rather than
/// the tokens left makes the all-zero slot a full bucket, so the table needs no initial fill.
///
/// The bucket holds `rate` tokens, one second's worth: that is the burst a quiet flow may
/// send at once, and it refills continuously at `rate` tokens a second. Over any window of
/// T seconds a flow gets at most rate × (1 + T) responses: within its first second, at most
/// twice the rate. (Knot banked up to four seconds; one keeps an idle attacker's reserve
/// small.) A response the bucket cannot pay for takes nothing, as in Knot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bucket {
    at: u32,
    spent: u32,
}

impl Bucket {
    fn unpack(slot: u64) -> Self {
        Self {
            at: (slot >> 32) as u32,
            spent: slot as u32,
        }
    }

    fn pack(self) -> u64 {
        (u64::from(self.at) << 32) | u64::from(self.spent)
    }

    /// Refills for the time since `at`, then takes `cost` if it fits. Returns the bucket
    /// after, and whether the response may go. `rate` ≤ `MAX_RATE_LIMIT`, `cost` ≤ a full
    /// bucket, so no sum here overflows.
    fn take(self, now: u32, rate: u32, cost: u32) -> (Self, bool) {
        // Another worker may have stored a time a tick later than the `now` read here: that
        // is no time passed, not 49 days. Any other difference is time passed (modulo the
        // clock's 49-day wrap, which at worst withholds one refill).
        let (at, elapsed) = if self.at.wrapping_sub(now) < MAX_SKEW_MS {
            (self.at, 0)
        } else {
            (now, now.wrapping_sub(self.at))
        };
        let refill = u64::from(elapsed) * u64::from(rate);
        let spent = u64::from(self.spent).saturating_sub(refill) as u32;
        if spent + cost <= rate * MILLI {
            (
                Self {
                    at,
                    spent: spent + cost,
                },
                true,
            )
        } else {
            (Self { at, spent }, false)
        }
    }
}

/// Milliseconds on a coarse monotonic clock (wrapping). On Linux, CLOCK_MONOTONIC_COARSE: the
/// vDSO reads the time the kernel stores at each tick (1 to 4 ms), with no system call and no
/// hardware clock read, so reading it per response costs about as much as a cached value
/// would, without a thread to keep one fresh. Milliseconds are all a bucket needs.
fn now_ms() -> u32 {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes the timespec it is given and nothing else.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
        (ts.tv_sec as u64)
            .wrapping_mul(1000)
            .wrapping_add(ts.tv_nsec as u64 / 1_000_000) as u32
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        static START: std::sync::LazyLock<std::time::Instant> =
            std::sync::LazyLock::new(std::time::Instant::now);
        START.elapsed().as_millis() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::answer::{Owner, Response};
    use crate::dns::wire::{AA, FORMERR, REFUSED, SOA, TC};

    const RATE: u32 = 10;

    fn limiter(f: impl FnOnce(&mut DnsConfig)) -> Limiter {
        let mut dns = DnsConfig {
            rate_limit: RATE,
            rate_limit_exempt: Vec::new(),
            ..DnsConfig::default()
        };
        f(&mut dns);
        Limiter::new(&dns).expect("rate_limit > 0")
    }

    /// A response as the handler writes it: `name` asked, `answers` A records, and for
    /// NXDOMAIN an SOA owned by the last `apex_labels` labels of the name.
    fn response(name: &[u8], rcode: u8, answers: usize, apex_at: Option<usize>) -> Vec<u8> {
        let mut q = name.to_vec();
        q.extend_from_slice(&[0, 1, 0, 1]);
        let mut buf = Vec::new();
        let mut r = Response::new(&mut buf, 1, AA, &q, 4096, false);
        for i in 0..answers {
            r.answer(1, 5, &[10, 0, 0, i as u8]).unwrap();
        }
        if let Some(at) = apex_at {
            r.authority(Owner::Pointer(HEADER_LEN + at), SOA, 5, &[0; 22]);
        }
        r.finish(u16::from(rcode));
        buf
    }

    const WEB: &[u8] = b"\x03Web\x07service\x08internal\x00";

    #[test]
    fn a_full_bucket_pays_the_burst_then_refills_at_the_rate() {
        let mut b = Bucket::unpack(0);
        let one = MILLI;
        // A zeroed slot is a full bucket: `rate` responses at once, then nothing.
        for i in 0..RATE {
            let (next, ok) = b.take(5_000, RATE, one);
            assert!(ok, "response {i} of the burst");
            b = next;
        }
        let (next, ok) = b.take(5_000, RATE, one);
        assert!(!ok, "past the burst");
        assert_eq!(next, b, "a refused response takes nothing");
        // 10 per second: one token per 100 ms, counted by the millisecond.
        assert!(!b.take(5_099, RATE, one).1);
        let (b2, ok) = b.take(5_100, RATE, one);
        assert!(ok);
        assert!(!b2.take(5_100, RATE, one).1);
        // Half a second refills five; a second or more refills the whole bucket, no more.
        let (mut b5, _) = b.take(5_500, RATE, 0);
        let mut n = 0;
        while let (next, true) = b5.take(5_500, RATE, one) {
            b5 = next;
            n += 1;
        }
        assert_eq!(n, 5);
        for later in [6_000, 7_000, 100_000] {
            let (full, _) = b.take(later, RATE, 0);
            assert_eq!(full.spent, 0, "full after {later} ms");
        }
    }

    #[test]
    fn at_most_rate_plus_burst_in_any_first_second() {
        // One response per millisecond for a second from a fresh bucket.
        let mut b = Bucket::unpack(0);
        let mut sent = 0;
        for now in 1_000..2_000 {
            let (next, ok) = b.take(now, RATE, MILLI);
            b = next;
            sent += u32::from(ok);
        }
        assert!((RATE..=2 * RATE).contains(&sent), "{sent}");
    }

    #[test]
    fn a_clock_a_tick_behind_is_no_time_and_the_clock_may_wrap() {
        let b = Bucket {
            at: 1_000,
            spent: RATE * MILLI,
        };
        let (after, ok) = b.take(996, RATE, MILLI);
        assert!(!ok);
        assert_eq!(after, b, "neither refilled nor moved back");
        let b = Bucket {
            at: u32::MAX - 50,
            spent: RATE * MILLI,
        };
        let (after, ok) = b.take(49, RATE, MILLI);
        assert!(ok, "100 ms across the wrap refill one token");
        assert_eq!(after.at, 49);
        // Untouched for 30 days (more than half the wrap): full again, not stuck.
        let b = Bucket {
            at: 7,
            spent: RATE * MILLI,
        };
        let (after, _) = b.take(7 + 30 * 86_400_000, RATE, 0);
        assert_eq!(after.spent, 0);
    }

    #[test]
    fn large_responses_cost_by_size() {
        assert_eq!(cost(60, RATE), MILLI);
        assert_eq!(cost(1024, RATE), MILLI);
        assert_eq!(cost(1025, RATE), 2 * MILLI);
        assert_eq!(cost(4096, RATE), 4 * MILLI);
        assert_eq!(cost(4096, 2), 2 * MILLI, "never more than a full bucket");
        let rrl = limiter(|_| {});
        let big = {
            let mut r = response(WEB, NOERROR, 1, None);
            r.resize(1500, 0); // the size is all `take` reads past the header
            r
        };
        let client = "192.0.2.1".parse().unwrap();
        let sent = (0..RATE)
            .filter(|_| rrl.take(client, 0, &big, 1_000))
            .count();
        assert_eq!(sent as u32, RATE / 2, "two tokens each");
    }

    #[test]
    fn classes_and_the_names_they_count_by() {
        let mut key = [0u8; MAX_NAME];
        let positive = response(WEB, NOERROR, 2, None);
        assert_eq!(
            classify(0, &positive, &mut key),
            (Class::Positive, &b"\x03web\x07service\x08internal\x00"[..])
        );
        let nodata = response(WEB, NOERROR, 0, Some(12));
        assert_eq!(classify(0, &nodata, &mut key).0, Class::NoData);
        // NXDOMAIN counts by the zone: the SOA owner, a pointer to `internal.`.
        let nx = response(WEB, NXDOMAIN, 0, Some(12));
        assert_eq!(
            classify(3, &nx, &mut key),
            (Class::NxDomain, &b"\x08internal\x00"[..])
        );
        let nx_no_soa = response(WEB, NXDOMAIN, 0, None);
        assert_eq!(
            classify(3, &nx_no_soa, &mut key),
            (Class::NxDomain, &[][..])
        );
        for rcode in [REFUSED, FORMERR] {
            let e = response(WEB, rcode, 0, None);
            assert_eq!(
                classify(u16::from(rcode), &e, &mut key),
                (Class::Error, &[][..])
            );
        }
        let mut bare = Vec::new();
        Response::new(&mut bare, 1, 0, &[], 512, false).finish(u16::from(FORMERR));
        assert_eq!(
            classify(u16::from(FORMERR), &bare, &mut key),
            (Class::Error, &[][..])
        );
    }

    #[test]
    fn flows_are_prefix_class_and_name() {
        let rrl = limiter(|d| d.rate_limit_ipv4_prefix = 24);
        let web = response(WEB, NOERROR, 1, None);
        let db = response(b"\x02db\x07service\x08internal\x00", NOERROR, 1, None);
        let nx_a = response(b"\x01a\x08internal\x00", NXDOMAIN, 0, Some(2));
        let nx_b = response(b"\x01b\x08internal\x00", NXDOMAIN, 0, Some(2));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let same_24: IpAddr = "192.0.2.200".parse().unwrap();
        let other_24: IpAddr = "192.0.3.1".parse().unwrap();
        for _ in 0..RATE {
            assert!(rrl.take(a, 0, &web, 7));
        }
        assert!(!rrl.take(a, 0, &web, 7), "over the rate");
        assert!(
            !rrl.take(same_24, 0, &web, 7),
            "the same /24 is the same flow"
        );
        assert!(rrl.take(other_24, 0, &web, 7), "another /24");
        assert!(rrl.take(a, 0, &db, 7), "another name");
        for _ in 0..RATE {
            assert!(rrl.take(a, 3, &nx_a, 7));
        }
        assert!(
            !rrl.take(a, 3, &nx_b, 7),
            "NXDOMAIN counts by zone, not name"
        );
        let v6 = limiter(|d| d.rate_limit_ipv6_prefix = 56);
        let x: IpAddr = "2001:db8:0:100::1".parse().unwrap();
        let same_56: IpAddr = "2001:db8:0:1ff::2".parse().unwrap();
        let other_56: IpAddr = "2001:db8:0:200::1".parse().unwrap();
        for _ in 0..RATE {
            assert!(v6.take(x, 0, &web, 7));
        }
        assert!(!v6.take(same_56, 0, &web, 7));
        assert!(v6.take(other_56, 0, &web, 7));
    }

    #[test]
    fn slip_every_nth_limited_response_and_count_the_rest_dropped() {
        for (slip, slipped) in [(0u32, 0u32), (1, 20), (2, 10), (3, 6)] {
            let rrl = limiter(|d| d.rate_limit_slip = slip);
            let mut slips = Slips::default();
            let client = "198.51.100.7".parse().unwrap();
            let mut full = 0u32;
            let mut tc = 0u32;
            for _ in 0..RATE + 20 {
                let mut r = response(WEB, NOERROR, 3, None);
                if rrl.admit(client, 0, &mut r, &mut slips) {
                    if r[2] & (TC >> 8) as u8 != 0 {
                        assert_eq!(&r[6..8], &[0, 0], "a slipped answer has no records");
                        tc += 1;
                    } else {
                        full += 1;
                    }
                }
            }
            // Real time passes here: a refill of a token or two is possible.
            assert!((RATE..=RATE + 2).contains(&full), "slip {slip}: {full}");
            let limited = RATE + 20 - full;
            assert!(tc.abs_diff(slipped) <= 1, "slip {slip}: {tc} of {limited}");
            assert_eq!(rrl.slipped.load(Ordering::Relaxed), u64::from(tc));
            assert_eq!(rrl.dropped.load(Ordering::Relaxed), u64::from(limited - tc));
        }
    }

    #[test]
    fn exempt_networks_and_off() {
        let rrl = limiter(|d| {
            d.rate_limit_exempt = vec![crate::config::Network::parse("192.0.2.0/24").unwrap()]
        });
        let mut slips = Slips::default();
        let exempt: IpAddr = "192.0.2.9".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.9".parse().unwrap();
        for _ in 0..3 * RATE {
            let mut r = response(WEB, NOERROR, 1, None);
            assert!(rrl.admit(exempt, 0, &mut r, &mut slips));
            assert!(rrl.admit(mapped, 0, &mut r, &mut slips));
            assert_eq!(r[2] & (TC >> 8) as u8, 0);
        }
        assert_eq!(rrl.dropped.load(Ordering::Relaxed), 0);
        let off = DnsConfig::default();
        assert_eq!(off.rate_limit, 0);
        assert!(Limiter::new(&off).is_none(), "off by default");
    }
}
