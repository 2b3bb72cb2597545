//! Answers that route (CONTRACT §2 "Routing"): which record of a service set comes first,
//! by weight and by the client's zone, decided once when the set is built and looked up per
//! query.
//!
//! Weights: a set whose records' weights differ carries a *schedule*, the first position of
//! each of W consecutive answers (W the sum of the weights, reduced by their gcd), made once
//! by nginx's smooth weighted round-robin, so each record comes first exactly its weight's
//! times in every W answers, spread evenly; a query reads one entry, indexed by the set's
//! rotation counter modulo W. Equal weights need no schedule: the counter modulo N, as
//! before. W is bounded (`MAX_SCHEDULE`): above it, weights are scaled down in proportion.
//!
//! Locality: `dns.locality` maps client networks to zones (`Locality`); a set holding any
//! record of a configured zone carries, per zone with records in it, the order a client of
//! that zone gets (that zone's records first, then the rest, each part rotating by weight on
//! its own counter). The client's zone is looked up at most once per query (a linear scan of
//! the few networks), and only when an answered set depends on it; with `dns.locality` empty
//! no set carries zone orders and nothing is looked up.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use ipnet::IpNet;
use thin_vec::ThinVec;

use crate::config::LocalityConfig;

/// The longest weighted schedule (first positions) a set keeps. Above it the weights are
/// scaled to sum to about this (each non-zero weight staying at least 1), so a schedule
/// costs at most 4 bytes × (`MAX_SCHEDULE` + records); the ratios hold to within 1/1024 of
/// the total.
pub(crate) const MAX_SCHEDULE: u64 = 1024;

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The first positions of `weights.len()` records over one round of smooth weighted
/// round-robin (nginx's: each round every record's current value grows by its weight, the
/// largest, first on a tie, is chosen and loses the total). Empty when the weights are equal
/// (plain rotation does the same for free). A record of weight 0 never comes first, unless
/// every weight is 0 (then they are equal).
pub(crate) fn schedule(weights: &[u32]) -> Box<[u32]> {
    let Some(&w0) = weights.first() else {
        return Box::new([]);
    };
    if weights.iter().all(|&w| w == w0) {
        return Box::new([]);
    }
    let mut w: Vec<u64> = weights.iter().map(|&w| u64::from(w)).collect();
    let mut total: u64 = w.iter().sum();
    if total > MAX_SCHEDULE {
        for x in w.iter_mut().filter(|x| **x > 0) {
            *x = (*x * MAX_SCHEDULE / total).max(1);
        }
    }
    let g = w.iter().fold(0, |g, &x| gcd(g, x));
    for x in &mut w {
        *x /= g;
    }
    total = w.iter().sum();
    if w.iter().all(|&x| x == w[0]) {
        return Box::new([]);
    }
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, c) in current.iter_mut().enumerate() {
            *c += w[i] as i64;
        }
        for i in 1..w.len() {
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total as i64;
        out.push(best as u32);
    }
    out.into_boxed_slice()
}

/// `dns.locality`, ready for lookups: each network (its prefix) with its zone's number, and
/// the zone names by number. Cheap to clone (it sits in every table's settings, one pointer
/// from the networks a query scans).
#[derive(Debug, Default, Clone)]
pub(crate) struct Locality {
    networks: Arc<[Net]>,
    zones: Arc<[Box<str>]>,
}

/// One network as plain integers, so matching an address is a few word operations (through
/// `ipnet` it was a third of a placement's instructions): its address's bits, left-aligned in
/// a `u128` (an IPv4 network in the top 32 bits), its prefix length, its family and its
/// zone. 32 bytes, so the few networks of a typical `dns.locality` take a line or two.
#[derive(Debug)]
struct Net {
    bits: u128,
    len: u8,
    v4: bool,
    zone: u16,
}

impl Net {
    /// The mask of the prefix (computed rather than stored: a stored one made a network 48
    /// bytes).
    fn mask(&self) -> u128 {
        u128::MAX
            .checked_shl(128 - u32::from(self.len))
            .unwrap_or(0)
    }
}

/// An address's bits left-aligned in a `u128`, and whether it is IPv4.
fn aligned(addr: IpAddr) -> (u128, bool) {
    match addr {
        IpAddr::V4(a) => (u128::from(a.to_bits()) << 96, true),
        IpAddr::V6(a) => (a.to_bits(), false),
    }
}

/// The client's zone, and the prefix length around its address within which every address
/// is in the same zone (the ECS scope of an answer that depends on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placement {
    pub zone: Option<usize>,
    pub scope: u8,
}

impl Locality {
    /// From the validated config (zones named once, networks without host bits).
    pub(crate) fn new(config: &[LocalityConfig]) -> Self {
        let mut networks = Vec::new();
        for (z, entry) in config.iter().enumerate() {
            for n in &entry.networks {
                let net: IpNet = n.0.trunc();
                let (bits, v4) = aligned(net.addr());
                networks.push(Net {
                    bits,
                    len: net.prefix_len(),
                    v4,
                    // `dns.locality` holds at most `config::MAX_LOCALITY_ZONES` (32) zones.
                    zone: u16::try_from(z).unwrap_or(u16::MAX),
                });
            }
        }
        Self {
            networks: networks.into(),
            zones: config.iter().map(|e| e.zone.as_str().into()).collect(),
        }
    }

    /// No zones: answers never depend on the client's address.
    pub(crate) fn is_empty(&self) -> bool {
        self.zones.is_empty()
    }

    /// How many zones there are.
    pub(crate) fn zones(&self) -> usize {
        self.zones.len()
    }

    /// The number of the zone named `name` (an instance's `zone` metadata).
    pub(crate) fn zone_named(&self, name: &str) -> Option<usize> {
        self.zones.iter().position(|z| **z == *name)
    }

    /// The zone of `addr`: that of the longest network holding it (none outside them all).
    /// The scope is the shortest prefix around `addr` that neither reaches out of a network
    /// holding it nor into one that does not, so the zone is the same for every address in
    /// it: the answer a resolver caches for that prefix is right for all of its clients.
    /// An IPv4-mapped IPv6 address is matched as IPv6 (the caller maps a peer's address to
    /// IPv4 first; an ECS address keeps its family, which its scope is counted in).
    pub(crate) fn place(&self, addr: IpAddr) -> Placement {
        let (bits, v4) = aligned(addr);
        let mut best: Option<(u8, usize)> = None;
        let mut scope = 0u8;
        for net in self.networks.iter() {
            if net.v4 != v4 {
                continue;
            }
            let differ = bits ^ net.bits;
            if differ & net.mask() == 0 {
                scope = scope.max(net.len);
                if best.is_none_or(|(l, _)| net.len > l) {
                    best = Some((net.len, usize::from(net.zone)));
                }
            } else {
                // Outside it: the prefix must be long enough to leave it out (the bits
                // shared are fewer than its length, since it does not hold the address).
                scope = scope.max(differ.leading_zeros() as u8 + 1);
            }
        }
        Placement {
            zone: best.map(|(_, z)| z),
            scope,
        }
    }
}

/// What a client is, as far as an answer's order may depend on it: its address (ECS's, or
/// the packet's source), placed at most once per query, and whether an answer used the
/// placement (then a reply's ECS scope is the placement's, else 0).
#[derive(Debug)]
pub(crate) struct Client {
    addr: Option<IpAddr>,
    placed: Option<Placement>,
    pub(crate) depended: bool,
}

impl Client {
    /// A client at `addr`; `None` when its location must not be used (ECS source prefix 0).
    pub(crate) fn new(addr: Option<IpAddr>) -> Self {
        Self {
            addr,
            placed: None,
            depended: false,
        }
    }

    /// The ECS scope of the answer: the placement's when the answer depended on it, else 0.
    pub(crate) fn scope(&self) -> u8 {
        match self.placed {
            Some(p) if self.depended => p.scope,
            _ => 0,
        }
    }

    /// The client's placement (looked up the first time), noting that the answer depends on
    /// it.
    pub(crate) fn placement(&mut self, locality: &Locality) -> Placement {
        self.depended = true;
        let addr = self.addr;
        *self.placed.get_or_insert_with(|| match addr {
            Some(a) => locality.place(a),
            None => Placement {
                zone: None,
                scope: 0,
            },
        })
    }
}

/// How a set's records are ordered beyond plain rotation: the weighted schedule, and the
/// order of each zone's clients. Only built when one of them is needed.
///
/// All of it is one allocation of 32-bit words behind a thin pointer (`ThinVec`: the set
/// pays 8 bytes, as a `Box` did): an answer follows one pointer from its set to the line or
/// two it reads, and a set with zones costs one allocation, not two plus one per zone. (It
/// did not measurably change CPU per query: BENCHMARKS.md, "Where the locality cost is
/// not".) The words, by offset:
///
/// - `0`: Z, the number of zone slots (the `dns.locality` zones; 0 when no record is in
///   one); `1`, `2`: where the weighted schedule starts and its length (0: plain rotation).
/// - `3..3 + Z`: each zone's block's offset, 0 when none of the records is in that zone.
/// - a zone's block: its own rotation counter (each zone's clients see exact rotation),
///   `local` (how many records are in the zone), the lengths of the locals' and the rest's
///   schedules, then the `n` record indexes (the locals, then the rest), then the locals'
///   schedule and the rest's.
/// - the weighted schedule (first positions, indexed by the set's rotation counter modulo
///   its length), last: it can be long, and a zone's clients never read it.
///
/// Every word is an `AtomicU32` so the counters can live among them; the others are written
/// once, before the set is published, and read with relaxed loads (plain loads).
#[derive(Debug)]
pub(crate) struct Routing(ThinVec<AtomicU32>);

/// Offsets of `Routing`'s fixed words and of a zone block's.
const ZONE_SLOTS: usize = 0;
const SCHEDULE_AT: usize = 1;
const SCHEDULE_LEN: usize = 2;
const HEADER: usize = 3;
const ZONE_COUNTER: usize = 0;
const ZONE_LOCAL: usize = 1;
const ZONE_LOCAL_W: usize = 2;
const ZONE_REST_W: usize = 3;
const ZONE_HEADER: usize = 4;

fn pick(schedule: &[AtomicU32], counter: u32, n: usize) -> usize {
    if schedule.is_empty() {
        counter as usize % n
    } else {
        schedule[counter as usize % schedule.len()].load(Ordering::Relaxed) as usize
    }
}

impl Routing {
    /// The routing of a set whose records have `weights` and zones (numbers of `dns.locality`
    /// zones) `zones`, out of `nzones`; `None` when plain rotation does (equal weights, no
    /// record in a zone).
    pub(crate) fn new(weights: &[u32], zones: &[Option<usize>], nzones: usize) -> Option<Self> {
        let first = schedule(weights);
        let zoned = zones.iter().any(Option::is_some);
        if first.is_empty() && !zoned {
            return None;
        }
        let slots = if zoned { nzones } else { 0 };
        let mut words: Vec<u32> = vec![slots as u32, 0, first.len() as u32];
        words.resize(HEADER + slots, 0);
        for z in 0..slots {
            let (local, rest): (Vec<u32>, Vec<u32>) =
                (0..weights.len() as u32).partition(|&i| zones[i as usize] == Some(z));
            if local.is_empty() {
                continue;
            }
            let of = |ix: &[u32]| -> Vec<u32> { ix.iter().map(|&i| weights[i as usize]).collect() };
            let (local_schedule, rest_schedule) = (schedule(&of(&local)), schedule(&of(&rest)));
            words[HEADER + z] = words.len() as u32;
            words.extend([
                0,
                local.len() as u32,
                local_schedule.len() as u32,
                rest_schedule.len() as u32,
            ]);
            words.extend(local.into_iter().chain(rest));
            words.extend(local_schedule);
            words.extend(rest_schedule);
        }
        words[SCHEDULE_AT] = words.len() as u32;
        words.extend(first);
        // Exactly as long as it must be: collecting would leave the growth's spare capacity.
        let mut all = ThinVec::with_capacity(words.len());
        all.extend(words.into_iter().map(AtomicU32::new));
        Some(Self(all))
    }

    fn word(&self, at: usize) -> usize {
        self.0[at].load(Ordering::Relaxed) as usize
    }

    /// Where zone `z`'s block starts, if any record is in it.
    fn zone_block(&self, z: usize) -> Option<usize> {
        if z >= self.word(ZONE_SLOTS) {
            return None;
        }
        Some(self.word(HEADER + z)).filter(|&at| at != 0)
    }

    /// The order of this answer, advancing the set's counter (`rotation`) or, for a client in
    /// a zone with records here, that zone's.
    pub(crate) fn order(
        &self,
        rotation: &AtomicU32,
        n: usize,
        client: &mut Client,
        locality: &Locality,
    ) -> Order<'_> {
        if self.word(ZONE_SLOTS) != 0
            && let Some(z) = client.placement(locality).zone
            && let Some(at) = self.zone_block(z)
        {
            let block = &self.0[at..];
            let c = block[ZONE_COUNTER].fetch_add(1, Ordering::Relaxed);
            let local = block[ZONE_LOCAL].load(Ordering::Relaxed) as usize;
            let local_w = block[ZONE_LOCAL_W].load(Ordering::Relaxed) as usize;
            let rest_w = block[ZONE_REST_W].load(Ordering::Relaxed) as usize;
            let (order, schedules) = block[ZONE_HEADER..].split_at(n);
            let (local_schedule, rest_schedule) = schedules[..local_w + rest_w].split_at(local_w);
            let rest = n - local;
            return Order::Zoned {
                order,
                local,
                local_start: pick(local_schedule, c, local),
                rest_start: if rest == 0 {
                    0
                } else {
                    pick(rest_schedule, c, rest)
                },
            };
        }
        let c = rotation.fetch_add(1, Ordering::Relaxed);
        let at = self.word(SCHEDULE_AT);
        let schedule = &self.0[at..at + self.word(SCHEDULE_LEN)];
        Order::Rotate {
            start: pick(schedule, c, n),
            n,
        }
    }
}

/// The order of one answer's records: `at(k)` is the index of its k-th record.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Order<'a> {
    /// From `start`, cyclically.
    Rotate { start: usize, n: usize },
    /// A zone's records from `local_start` cyclically, then the others from `rest_start`.
    Zoned {
        order: &'a [AtomicU32],
        local: usize,
        local_start: usize,
        rest_start: usize,
    },
}

impl Order<'_> {
    /// The record index of the `k`-th record of the answer (`k` below the set's size).
    #[inline]
    pub(crate) fn at(&self, k: usize) -> usize {
        match *self {
            Order::Rotate { start, n } => (start + k) % n,
            Order::Zoned {
                order,
                local,
                local_start,
                rest_start,
            } => {
                let pos = if k < local {
                    (local_start + k) % local
                } else {
                    local + (rest_start + k - local) % (order.len() - local)
                };
                order[pos].load(Ordering::Relaxed) as usize
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// First positions over one round: each index `weight` times (after the gcd).
    fn counts(s: &[u32], n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for &i in s {
            c[i as usize] += 1;
        }
        c
    }

    #[test]
    fn schedules_put_each_first_by_weight_spread_evenly() {
        assert!(schedule(&[1, 1, 1]).is_empty());
        assert!(schedule(&[7, 7]).is_empty());
        assert!(schedule(&[]).is_empty());
        let s = schedule(&[1, 99]);
        assert_eq!(counts(&s, 2), [1, 99]);
        let s = schedule(&[3, 1, 2]);
        assert_eq!(counts(&s, 3), [3, 1, 2]);
        // nginx's sequence for 5:1:1 is a a b a c a a: never three of one in a row here.
        assert_eq!(&*schedule(&[5, 1, 1]), &[0, 0, 1, 0, 2, 0, 0]);
        // Reduced by the gcd: 30:10:20 is 3:1:2.
        assert_eq!(schedule(&[30, 10, 20]), schedule(&[3, 1, 2]));
        // Weight 0 never first.
        assert_eq!(counts(&schedule(&[0, 2, 1]), 3), [0, 2, 1]);
        assert!(schedule(&[0, 0]).is_empty());
    }

    #[test]
    fn schedules_are_bounded() {
        let s = schedule(&[65535, 1, 30000]);
        assert!(s.len() as u64 <= MAX_SCHEDULE + 3, "{}", s.len());
        let c = counts(&s, 3);
        assert!(c[1] >= 1, "a non-zero weight still comes first: {c:?}");
        let many: Vec<u32> = (1..=2000).collect();
        let s = schedule(&many);
        assert!(s.len() as u64 <= MAX_SCHEDULE + 2000);
    }

    fn locality() -> Locality {
        let cfg: Vec<LocalityConfig> = toml::from_str::<std::collections::BTreeMap<String, Vec<LocalityConfig>>>(
            "l = [{networks = [\"10.1.0.0/16\", \"fd00:1::/32\"], zone = \"eu\"}, {networks = [\"10.1.2.0/24\"], zone = \"lab\"}, {networks = [\"10.2.0.0/16\"], zone = \"us\"}]",
        )
        .unwrap()
        .remove("l")
        .unwrap();
        Locality::new(&cfg)
    }

    #[test]
    fn placement_takes_the_longest_network_and_a_scope_valid_for_all_of_it() {
        let l = locality();
        let at = |a: &str| l.place(a.parse().unwrap());
        // In the /16, outside the /24 inside it: the /16's zone; the scope must leave the
        // /24 out (10.1.0.0/23 shares 22 bits with 10.1.2.0, so /23).
        assert_eq!(
            at("10.1.0.7"),
            Placement {
                zone: Some(0),
                scope: 23
            }
        );
        assert_eq!(
            at("10.1.128.7"),
            Placement {
                zone: Some(0),
                scope: 17
            }
        );
        assert_eq!(
            at("10.1.2.9"),
            Placement {
                zone: Some(1),
                scope: 24
            }
        );
        assert_eq!(
            at("10.2.3.4"),
            Placement {
                zone: Some(2),
                scope: 16
            }
        );
        // Outside all: no zone, a scope that reaches none of them.
        assert_eq!(
            at("10.3.0.1"),
            Placement {
                zone: None,
                scope: 16
            }
        );
        assert_eq!(
            at("192.0.2.1"),
            Placement {
                zone: None,
                scope: 1
            }
        );
        assert_eq!(at("fd00:1::5").zone, Some(0));
        assert_eq!(at("::ffff:10.2.0.1").zone, None, "IPv6, as its family says");
        assert_eq!(
            at("2001:db8::1"),
            Placement {
                zone: None,
                scope: 1
            }
        );
        assert_eq!(l.zone_named("us"), Some(2));
        assert_eq!(l.zone_named("mars"), None);
    }

    #[test]
    fn whole_and_host_networks_match_as_their_prefixes_say() {
        let cfg: Vec<LocalityConfig> = toml::from_str::<std::collections::BTreeMap<String, Vec<LocalityConfig>>>(
            "l = [{networks = [\"0.0.0.0/0\", \"::/0\"], zone = \"any\"}, {networks = [\"192.0.2.7/32\", \"2001:db8::7/128\"], zone = \"host\"}]",
        )
        .unwrap()
        .remove("l")
        .unwrap();
        let l = Locality::new(&cfg);
        let at = |a: &str| l.place(a.parse().unwrap());
        // /0 holds every address of its family; the /32 and /128 only their own.
        assert_eq!(at("198.51.100.1").zone, Some(0));
        assert_eq!(at("2001:db8::8").zone, Some(0));
        assert_eq!(
            at("192.0.2.7"),
            Placement {
                zone: Some(1),
                scope: 32
            }
        );
        assert_eq!(
            at("2001:db8::7"),
            Placement {
                zone: Some(1),
                scope: 128
            }
        );
        // Beside the host: the scope must leave 192.0.2.7 out (192.0.2.6 shares 31 bits).
        assert_eq!(
            at("192.0.2.6"),
            Placement {
                zone: Some(0),
                scope: 32
            }
        );
    }

    #[test]
    fn zone_orders_put_the_zone_first_and_rotate_each_part() {
        let l = locality();
        // Records 0 and 2 in zone 0 (eu), 1 and 3 elsewhere.
        let r = Routing::new(&[1, 1, 1, 1], &[Some(0), None, Some(0), Some(2)], 3).unwrap();
        let counter = AtomicU32::new(0);
        let mut firsts = Vec::new();
        for _ in 0..4 {
            let mut c = Client::new(Some("10.1.200.1".parse().unwrap()));
            let o = r.order(&counter, 4, &mut c, &l);
            let all: Vec<usize> = (0..4).map(|k| o.at(k)).collect();
            assert!(matches!(all[..2], [0, 2] | [2, 0]), "{all:?}");
            let mut sorted = all.clone();
            sorted.sort();
            assert_eq!(sorted, [0, 1, 2, 3]);
            assert!(c.depended);
            firsts.push(all[0]);
        }
        assert_eq!(firsts, [0, 2, 0, 2]);
        // A client outside every zone: the plain rotation over all four.
        let mut c = Client::new(Some("192.0.2.1".parse().unwrap()));
        let o = r.order(&counter, 4, &mut c, &l);
        assert_eq!((0..4).map(|k| o.at(k)).collect::<Vec<_>>(), [0, 1, 2, 3]);
        assert!(
            c.depended,
            "the answer still depends on where the client is"
        );
        // Equal weights and no zone: plain rotation needs nothing.
        assert!(Routing::new(&[2, 2], &[None, None], 3).is_none());
    }
}
