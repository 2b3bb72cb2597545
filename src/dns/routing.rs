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
//! its own counter). The client's zone is looked up only when an answered set depends on it
//! (a linear scan of the few networks, skipped when the thread's last lookup was for the
//! same address); with `dns.locality` empty no set carries zone orders and nothing is looked
//! up.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

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

/// `dns.locality`, ready for lookups: each network (its prefix) with its zone's number, by
/// family, and the zone names by number. Cheap to clone (it sits in every table's settings,
/// one pointer from the networks a query scans).
#[derive(Debug, Default, Clone)]
pub(crate) struct Locality {
    /// Which `dns.locality` this is, for the placements a thread remembers (`LAST`): unique
    /// per `new`, shared by clones; 0 for the empty default, which places nothing.
    id: u64,
    v4: Arc<[Net<u32>]>,
    v6: Arc<[Net<u128>]>,
    zones: Arc<[Box<str>]>,
}

/// The source of `Locality::id`.
static LOCALITY_IDS: AtomicU64 = AtomicU64::new(1);

/// No zone, in a placement's scan (`dns.locality` holds at most 32).
const NO_ZONE: u8 = u8::MAX;

/// One network as plain integers, so matching an address is a few word operations: its
/// address's bits, the mask of its prefix, the prefix's length and its zone. An IPv4
/// network is 12 bytes and its scan is 32-bit arithmetic without a branch per network.
#[derive(Debug)]
struct Net<B> {
    bits: B,
    mask: B,
    len: u8,
    zone: u8,
}

/// The address bits of one family: what a network scan needs of them.
trait Bits: Copy + Eq + std::ops::BitXor<Output = Self> + std::ops::BitAnd<Output = Self> {
    const ZERO: Self;
    /// The mask of a prefix of `len` bits (up to the width).
    fn mask(len: u8) -> Self;
    fn leading_zeros(self) -> u32;
}

macro_rules! bits {
    ($t:ty) => {
        impl Bits for $t {
            const ZERO: Self = 0;
            fn mask(len: u8) -> Self {
                <$t>::MAX
                    .checked_shl(<$t>::BITS - u32::from(len))
                    .unwrap_or(0)
            }
            fn leading_zeros(self) -> u32 {
                <$t>::leading_zeros(self)
            }
        }
    };
}
bits!(u32);
bits!(u128);

/// The zone of `bits` among `networks` (one family's): that of the longest network holding
/// it, and the scope (`Locality::place_bits`).
fn scan<B: Bits>(networks: &[Net<B>], bits: B) -> Placement {
    // The longest holding network's length + 1 (0: none holds it), and its zone.
    let (mut best, mut zone) = (0u8, NO_ZONE);
    let mut scope = 0u8;
    for net in networks {
        let differ = bits ^ net.bits;
        let inside = differ & net.mask == B::ZERO;
        // Inside it, the scope must not reach out of it; outside, it must be long enough to
        // leave it out (the bits shared are fewer than its length).
        let reach = if inside {
            net.len
        } else {
            differ.leading_zeros() as u8 + 1
        };
        scope = scope.max(reach);
        if inside && net.len >= best {
            (best, zone) = (net.len + 1, net.zone);
        }
    }
    Placement { zone, scope }
}

/// A placement a thread remembers: for which `Locality` (its id, shifted, the low bit set
/// for IPv6) and address bits (an IPv4 address in the low 32). Plain integers, so checking
/// it is two comparisons.
#[derive(Clone, Copy)]
struct Remembered {
    key: u64,
    bits: u128,
    placed: Placement,
}

thread_local! {
    /// The last placement this thread made: a server's clients are mostly a few resolvers,
    /// so most queries repeat the last one's client and skip the scan (BENCHMARKS.md,
    /// "Routing's cost").
    static LAST: std::cell::Cell<Remembered> = const {
        // What the empty default `Locality` (id 0) makes of 0.0.0.0, rightly: nowhere.
        std::cell::Cell::new(Remembered { key: 0, bits: 0, placed: Placement::NOWHERE })
    };
}

/// The client's zone, and the prefix length around its address within which every address
/// is in the same zone (the ECS scope of an answer that depends on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placement {
    /// The zone's number; `NO_ZONE` outside every network (above any zone a set has).
    pub zone: u8,
    pub scope: u8,
}

impl Placement {
    /// A client that is not placed: no zone, and an answer the same for every address.
    const NOWHERE: Self = Self {
        zone: NO_ZONE,
        scope: 0,
    };
}

impl Locality {
    /// From the validated config (zones named once, networks without host bits).
    pub(crate) fn new(config: &[LocalityConfig]) -> Self {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for (z, entry) in config.iter().enumerate() {
            // `dns.locality` holds at most `config::MAX_LOCALITY_ZONES` (32) zones.
            let zone = u8::try_from(z).unwrap_or(NO_ZONE - 1);
            for n in &entry.networks {
                match n.0.trunc() {
                    IpNet::V4(net) => v4.push(Net {
                        bits: net.addr().to_bits(),
                        mask: u32::mask(net.prefix_len()),
                        len: net.prefix_len(),
                        zone,
                    }),
                    IpNet::V6(net) => v6.push(Net {
                        bits: net.addr().to_bits(),
                        mask: u128::mask(net.prefix_len()),
                        len: net.prefix_len(),
                        zone,
                    }),
                }
            }
        }
        Self {
            id: LOCALITY_IDS.fetch_add(1, Ordering::Relaxed),
            v4: v4.into(),
            v6: v6.into(),
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

    /// `place_bits` for an `IpAddr`.
    #[cfg(test)]
    fn place(&self, addr: IpAddr) -> Placement {
        let (family, bits) = family_bits(addr);
        self.place_bits(family, bits)
    }

    /// The zone of an address (as `family_bits` gives it): that of the longest network
    /// holding it (none outside them all). The scope is the shortest prefix around the
    /// address that neither reaches out of a network holding it nor into one that does not,
    /// so the zone is the same for every address in it: the answer a resolver caches for
    /// that prefix is right for all of its clients. An IPv4-mapped IPv6 address is matched
    /// as IPv6 (the caller maps a peer's address to IPv4 first; an ECS address keeps its
    /// family, which its scope is counted in).
    fn place_bits(&self, family: u64, bits: u128) -> Placement {
        if family == 0 {
            scan(&self.v4, bits as u32)
        } else {
            scan(&self.v6, bits)
        }
    }

    /// `place_bits`, remembered per thread for the last address.
    #[inline]
    fn place_remembered(&self, family: u64, bits: u128) -> Placement {
        let key = self.id << 1 | family;
        let last = LAST.get();
        if last.key == key && last.bits == bits {
            return last.placed;
        }
        let placed = self.place_bits(family, bits);
        LAST.set(Remembered { key, bits, placed });
        placed
    }
}

/// An address as its family (0: IPv4, 1: IPv6) and its bits (IPv4's in the low 32).
fn family_bits(addr: IpAddr) -> (u64, u128) {
    match addr {
        IpAddr::V4(a) => (0, u128::from(a.to_bits())),
        IpAddr::V6(a) => (1, a.to_bits()),
    }
}

/// What a client is, as far as an answer's order may depend on it: its address (ECS's, or
/// the packet's source), and whether an answer used its placement (then a reply's ECS scope
/// is the placement's, else 0).
#[derive(Debug)]
pub(crate) struct Client {
    /// The address as `family_bits` gives it, worked out once per query; `None` when its
    /// location must not be used.
    addr: Option<(u64, u128)>,
    /// The ECS scope of the answer: the placement's once the answer depended on it, else 0.
    scope: u8,
    pub(crate) depended: bool,
}

impl Client {
    /// A client at `addr`; `None` when its location must not be used (ECS source prefix 0).
    pub(crate) fn new(addr: Option<IpAddr>) -> Self {
        Self {
            addr: addr.map(family_bits),
            scope: 0,
            depended: false,
        }
    }

    /// The ECS scope of the answer: the placement's when the answer depended on it, else 0.
    pub(crate) fn scope(&self) -> u8 {
        self.scope
    }

    /// The client's placement (the thread remembers the last one), noting that the answer
    /// depends on it.
    #[inline]
    pub(crate) fn placement(&mut self, locality: &Locality) -> Placement {
        let placed = match self.addr {
            Some((family, bits)) => locality.place_remembered(family, bits),
            None => Placement::NOWHERE,
        };
        self.depended = true;
        self.scope = placed.scope;
        placed
    }
}

/// How a set's records are ordered beyond plain rotation: the weighted schedule, and the
/// order of each zone's clients. Only built when one of them is needed.
///
/// All of it is one allocation of 32-bit words behind a thin pointer (`ThinVec`: the set
/// pays 8 bytes, as a `Box` did), and the two numbers needed to find a word in it, the
/// schedule's length and the number of zone slots, are kept in the set itself (`Shape`):
/// an answer goes from its set straight to the word it needs, never through a header
/// first (BENCHMARKS.md, "Routing's cost"). The words, by offset:
///
/// - `0..L`: the weighted schedule (first positions, indexed by the set's rotation counter
///   modulo L; L = 0: plain rotation), first, at an offset the set alone gives.
/// - `L..L + Z`: each zone's block's offset (Z: the `dns.locality` zones, 0 when no record
///   is in one), 0 when none of the records is in that zone.
/// - a zone's block: its own rotation counter (each zone's clients see exact rotation),
///   `local` (how many records are in the zone), the lengths of the locals' and the rest's
///   schedules, the period of its answers and where they start (0, 0: not written out),
///   then the `n` record indexes (the locals, then the rest), then the locals' schedule and
///   the rest's (positions within each part, never empty: equal weights are 0, 1, ... and
///   no rest is a single 0), then, when period × `n` is at most `MAX_ZONE_ANSWERS`, every
///   answer's record indexes, one period of them (the answer for counter c is the (c mod
///   period)-th); read right after its offset, in the same line or the next.
///
/// Every word is an `AtomicU32` so the counters can live among them; the others are written
/// once, before the set is published, and read with relaxed loads (plain loads).
#[derive(Debug)]
pub(crate) struct Routing(ThinVec<AtomicU32>);

/// The weighted schedule's length and the number of zone slots of a set's `Routing`, kept
/// beside it in the set. Packed into 5 bytes, so they fill the set's padding and a set
/// stays 64 bytes (RSS at 100,000 instances, BENCHMARKS.md); its fields are only copied out,
/// never borrowed.
#[repr(C, packed)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Shape {
    schedule: u32,
    zones: u8,
}

/// Offsets of a zone block's fixed words.
const ZONE_COUNTER: usize = 0;
const ZONE_LOCAL: usize = 1;
const ZONE_LOCAL_LEN: usize = 2;
const ZONE_REST_LEN: usize = 3;
const ZONE_PERIOD: usize = 4;
const ZONE_ANSWERS: usize = 5;
const ZONE_HEADER: usize = 6;

/// The most words a zone's answers written out (`period` × records) may take; above it, a
/// zone's client's order is worked out per answer from the two schedules instead.
const MAX_ZONE_ANSWERS: usize = 1024;

fn pick(schedule: &[AtomicU32], counter: u32, n: usize) -> usize {
    if schedule.is_empty() {
        counter as usize % n
    } else {
        schedule[counter as usize % schedule.len()].load(Ordering::Relaxed) as usize
    }
}

impl Routing {
    /// The routing of a set whose records have `weights` and zones (numbers of `dns.locality`
    /// zones) `zones`, out of `nzones`, with its shape; `None` when plain rotation does
    /// (equal weights, no record in a zone).
    pub(crate) fn new(
        weights: &[u32],
        zones: &[Option<usize>],
        nzones: usize,
    ) -> Option<(Self, Shape)> {
        Self::build(weights, zones, nzones, MAX_ZONE_ANSWERS)
    }

    /// `new`, writing a zone's answers out when they take at most `max_answers` words.
    fn build(
        weights: &[u32],
        zones: &[Option<usize>],
        nzones: usize,
        max_answers: usize,
    ) -> Option<(Self, Shape)> {
        let first = schedule(weights);
        let zoned = zones.iter().any(Option::is_some);
        if first.is_empty() && !zoned {
            return None;
        }
        // `dns.locality` holds at most `config::MAX_LOCALITY_ZONES` (32) zones.
        let slots = if zoned {
            nzones.min(usize::from(u8::MAX))
        } else {
            0
        };
        let shape = Shape {
            schedule: first.len() as u32,
            zones: slots as u8,
        };
        let mut words: Vec<u32> = first.into_vec();
        let offsets = words.len();
        words.resize(offsets + slots, 0);
        for z in 0..slots {
            let (local, rest): (Vec<u32>, Vec<u32>) =
                (0..weights.len() as u32).partition(|&i| zones[i as usize] == Some(z));
            if local.is_empty() {
                continue;
            }
            let of = |ix: &[u32]| -> Vec<u32> { ix.iter().map(|&i| weights[i as usize]).collect() };
            // Each part's schedule, never empty, so an answer picks from it without a branch:
            // equal weights rotate (0, 1, ... in turn), and no rest is one position, 0.
            let never_empty = |part: &[u32]| -> Vec<u32> {
                let s = schedule(&of(part));
                if !s.is_empty() {
                    s.into_vec()
                } else {
                    (0..part.len().max(1) as u32).collect()
                }
            };
            let (local_schedule, rest_schedule) = (never_empty(&local), never_empty(&rest));
            // Every answer a zone's client can get, written out when they are few: the
            // pair of starts repeats every lcm(local_len, rest_len) answers, and an answer
            // then reads its records' indexes in a row (no wrapping per record).
            let (local_len, rest_len) = (local_schedule.len(), rest_schedule.len());
            let period = local_len / gcd(local_len as u64, rest_len as u64) as usize * rest_len;
            let listed = period * weights.len() <= max_answers;
            let at = words.len();
            words[offsets + z] = at as u32;
            words.extend([
                0,
                local.len() as u32,
                local_len as u32,
                rest_len as u32,
                if listed { period as u32 } else { 0 },
                0,
            ]);
            let order: Vec<u32> = local.iter().chain(&rest).copied().collect();
            words.extend(&order);
            words.extend(&local_schedule);
            words.extend(&rest_schedule);
            if listed {
                words[at + ZONE_ANSWERS] = (words.len() - at) as u32;
                for p in 0..period {
                    let (ls, rs) = (
                        local_schedule[p % local_len] as usize,
                        rest_schedule[p % rest_len] as usize,
                    );
                    let n = order.len();
                    words.extend((0..n).map(|k| order[zoned_position(k, local.len(), n, ls, rs)]));
                }
            }
        }
        // Exactly as long as it must be: collecting would leave the growth's spare capacity.
        let mut all = ThinVec::with_capacity(words.len());
        all.extend(words.into_iter().map(AtomicU32::new));
        Some((Self(all), shape))
    }

    /// The order of this answer, advancing the set's counter (`rotation`) or, for a client in
    /// a zone with records here, that zone's. `shape` is the one `new` gave with this routing.
    ///
    /// Inlined into the answer's loop: a call would cost a routed answer the saving and
    /// restoring of six registers and its result through memory.
    #[inline(always)]
    pub(crate) fn order(
        &self,
        shape: Shape,
        rotation: &AtomicU32,
        n: usize,
        client: &mut Client,
        locality: &Locality,
    ) -> Order<'_> {
        let schedule_len = shape.schedule as usize;
        if shape.zones != 0
            && let Some(order) = self.zoned(shape, n, client, locality)
        {
            return order;
        }
        let c = rotation.fetch_add(1, Ordering::Relaxed);
        Order::Rotate {
            start: pick(&self.0[..schedule_len], c, n),
            n,
        }
    }

    /// The order of this answer for a client in a zone with records here, advancing that
    /// zone's counter; `None` for any other client.
    #[inline(always)]
    fn zoned(
        &self,
        shape: Shape,
        n: usize,
        client: &mut Client,
        locality: &Locality,
    ) -> Option<Order<'_>> {
        // `NO_ZONE` is above every zone a set has.
        let z = usize::from(client.placement(locality).zone);
        if z >= usize::from(shape.zones) {
            return None;
        }
        let at = self.0[shape.schedule as usize + z].load(Ordering::Relaxed) as usize;
        if at == 0 {
            return None;
        }
        let block = &self.0[at..];
        // The block's words before its counter's add: the add orders the reads after it,
        // so these would wait for it.
        let period = block[ZONE_PERIOD].load(Ordering::Relaxed) as usize;
        let answers = block[ZONE_ANSWERS].load(Ordering::Relaxed) as usize;
        let c = block[ZONE_COUNTER].fetch_add(1, Ordering::Relaxed) as usize;
        if period != 0 {
            let from = answers + c % period * n;
            return Some(Order::Listed(&block[from..from + n]));
        }
        let local = block[ZONE_LOCAL].load(Ordering::Relaxed) as usize;
        let local_len = block[ZONE_LOCAL_LEN].load(Ordering::Relaxed) as usize;
        let rest_len = block[ZONE_REST_LEN].load(Ordering::Relaxed) as usize;
        let (order, schedules) = block[ZONE_HEADER..].split_at(n);
        let (local_schedule, rest_schedule) = schedules.split_at(local_len);
        Some(Order::Zoned {
            order,
            local,
            local_start: local_schedule[c % local_len].load(Ordering::Relaxed) as usize,
            rest_start: rest_schedule[c % rest_len].load(Ordering::Relaxed) as usize,
        })
    }
}

/// The order of one answer's records: `at(k)` is the index of its k-th record.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Order<'a> {
    /// From `start`, cyclically.
    Rotate { start: usize, n: usize },
    /// The record indexes in a row, as written out for a zone's client.
    Listed(&'a [AtomicU32]),
    /// A zone's records from `local_start` cyclically, then the others from `rest_start`.
    Zoned {
        order: &'a [AtomicU32],
        local: usize,
        local_start: usize,
        rest_start: usize,
    },
}

/// `i` modulo `n`, for an `i` below `2 n`.
#[inline]
fn wrap(i: usize, n: usize) -> usize {
    debug_assert!(i < 2 * n, "{i} wraps once around {n}");
    if i >= n { i - n } else { i }
}

/// Where the `k`-th record of a zone's client's answer is in its order of `n` record
/// indexes (the `local` ones of the zone first): the locals from `local_start`, cyclically,
/// then the rest from `rest_start`. Both answers written out and answers worked out go
/// through it, so they cannot differ.
#[inline]
fn zoned_position(
    k: usize,
    local: usize,
    n: usize,
    local_start: usize,
    rest_start: usize,
) -> usize {
    if k < local {
        wrap(local_start + k, local)
    } else {
        local + wrap(rest_start + k - local, n - local)
    }
}

impl Order<'_> {
    /// The record index of the `k`-th record of the answer (`k` below the set's size).
    #[inline]
    pub(crate) fn at(&self, k: usize) -> usize {
        match *self {
            // `start` and `k` are below `n` (and the parts' likewise): one subtraction wraps,
            // where a division would cost tens of cycles per record.
            Order::Rotate { start, n } => wrap(start + k, n),
            Order::Listed(order) => order[k].load(Ordering::Relaxed) as usize,
            Order::Zoned {
                order,
                local,
                local_start,
                rest_start,
            } => order[zoned_position(k, local, order.len(), local_start, rest_start)]
                .load(Ordering::Relaxed) as usize,
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
        assert_eq!(at("10.1.0.7"), Placement { zone: 0, scope: 23 });
        assert_eq!(at("10.1.128.7"), Placement { zone: 0, scope: 17 });
        assert_eq!(at("10.1.2.9"), Placement { zone: 1, scope: 24 });
        assert_eq!(at("10.2.3.4"), Placement { zone: 2, scope: 16 });
        // Outside all: no zone, a scope that reaches none of them.
        assert_eq!(
            at("10.3.0.1"),
            Placement {
                zone: NO_ZONE,
                scope: 16
            }
        );
        assert_eq!(
            at("192.0.2.1"),
            Placement {
                zone: NO_ZONE,
                scope: 1
            }
        );
        assert_eq!(at("fd00:1::5").zone, 0);
        assert_eq!(
            at("::ffff:10.2.0.1").zone,
            NO_ZONE,
            "IPv6, as its family says"
        );
        assert_eq!(
            at("2001:db8::1"),
            Placement {
                zone: NO_ZONE,
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
        assert_eq!(at("198.51.100.1").zone, 0);
        assert_eq!(at("2001:db8::8").zone, 0);
        assert_eq!(at("192.0.2.7"), Placement { zone: 1, scope: 32 });
        assert_eq!(
            at("2001:db8::7"),
            Placement {
                zone: 1,
                scope: 128
            }
        );
        // Beside the host: the scope must leave 192.0.2.7 out (192.0.2.6 shares 31 bits).
        assert_eq!(at("192.0.2.6"), Placement { zone: 0, scope: 32 });
    }

    #[test]
    fn zone_orders_put_the_zone_first_and_rotate_each_part() {
        let l = locality();
        // Records 0 and 2 in zone 0 (eu), 1 and 3 elsewhere.
        let (r, shape) =
            Routing::new(&[1, 1, 1, 1], &[Some(0), None, Some(0), Some(2)], 3).unwrap();
        let counter = AtomicU32::new(0);
        let mut firsts = Vec::new();
        for _ in 0..4 {
            let mut c = Client::new(Some("10.1.200.1".parse().unwrap()));
            let o = r.order(shape, &counter, 4, &mut c, &l);
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
        let o = r.order(shape, &counter, 4, &mut c, &l);
        assert_eq!((0..4).map(|k| o.at(k)).collect::<Vec<_>>(), [0, 1, 2, 3]);
        assert!(
            c.depended,
            "the answer still depends on where the client is"
        );
        // Equal weights and no zone: plain rotation needs nothing.
        assert!(Routing::new(&[2, 2], &[None, None], 3).is_none());
    }

    #[test]
    fn zone_orders_weigh_each_part() {
        let l = locality();
        // Zone 0 (eu) holds records 0 (weight 1) and 1 (weight 3); 2 (weight 96) and 3
        // (weight 4) are elsewhere. Over 4 answers each local comes first its weight's
        // times; over 100 the rest's first comes first by weight (96:4), after the locals.
        let (r, shape) = Routing::new(&[1, 3, 96, 4], &[Some(0), Some(0), None, None], 3).unwrap();
        let counter = AtomicU32::new(0);
        let (mut firsts, mut rest_firsts) = ([0; 4], [0; 4]);
        for _ in 0..100 {
            let mut c = Client::new(Some("10.1.200.1".parse().unwrap()));
            let o = r.order(shape, &counter, 4, &mut c, &l);
            firsts[o.at(0)] += 1;
            rest_firsts[o.at(2)] += 1;
            assert!(o.at(1) < 2 && o.at(3) >= 2);
        }
        assert_eq!(firsts, [25, 75, 0, 0]);
        assert_eq!(rest_firsts, [0, 0, 96, 4]);
        assert_eq!(
            counter.into_inner(),
            0,
            "the set's own counter is the others'"
        );
        // A zone with every record: no rest.
        let (r, shape) = Routing::new(&[1, 2], &[Some(2), Some(2)], 3).unwrap();
        let counter = AtomicU32::new(0);
        let mut firsts = [0; 2];
        for _ in 0..3 {
            let mut c = Client::new(Some("10.2.0.1".parse().unwrap()));
            let o = r.order(shape, &counter, 2, &mut c, &l);
            firsts[o.at(0)] += 1;
        }
        assert_eq!(firsts, [1, 2]);
    }

    #[test]
    fn a_remembered_placement_is_that_of_its_own_locality_and_address() {
        let eu = locality();
        let other: Vec<LocalityConfig> =
            toml::from_str::<std::collections::BTreeMap<String, Vec<LocalityConfig>>>(
                "l = [{networks = [\"10.0.0.0/8\"], zone = \"all\"}]",
            )
            .unwrap()
            .remove("l")
            .unwrap();
        let other = Locality::new(&other);
        let a: IpAddr = "10.1.0.7".parse().unwrap();
        let b: IpAddr = "10.2.3.4".parse().unwrap();
        // In turn, so each lookup follows one the thread remembered for something else.
        for _ in 0..3 {
            for (l, addr) in [(&eu, a), (&other, a), (&eu, b), (&eu, b), (&other, b)] {
                assert_eq!(
                    {
                        let (f, b) = family_bits(addr);
                        l.place_remembered(f, b)
                    },
                    l.place(addr),
                    "{addr}"
                );
            }
        }
        assert_eq!(
            {
                let (f, b) = family_bits(a);
                eu.clone().place_remembered(f, b)
            },
            eu.place(a),
            "a clone is the same"
        );
    }

    #[test]
    fn written_out_zone_answers_are_the_worked_out_ones() {
        let l = locality();
        let cases: &[(&[u32], &[Option<usize>])] = &[
            (&[1, 3, 96], &[Some(0), Some(0), None]),
            (&[1, 1, 1, 1], &[Some(0), None, Some(0), Some(2)]),
            (&[5, 1, 1, 2, 7], &[None, Some(0), Some(0), None, None]),
            (&[1, 2], &[Some(0), Some(0)]),
            (&[3, 3, 1], &[Some(0), None, None]),
        ];
        for &(weights, zones) in cases {
            let n = weights.len();
            let (listed, listed_shape) = Routing::new(weights, zones, 3).unwrap();
            let (worked, worked_shape) = Routing::build(weights, zones, 3, 0).unwrap();
            let (a, b) = (AtomicU32::new(0), AtomicU32::new(0));
            for q in 0..200 {
                let mut c = Client::new(Some("10.1.0.9".parse().unwrap()));
                let o = listed.order(listed_shape, &a, n, &mut c, &l);
                assert!(matches!(o, Order::Listed(_)), "{weights:?}");
                let mut d = Client::new(Some("10.1.0.9".parse().unwrap()));
                let p = worked.order(worked_shape, &b, n, &mut d, &l);
                assert!(matches!(p, Order::Zoned { .. }), "{weights:?}");
                let (x, y): (Vec<usize>, Vec<usize>) = (0..n).map(|k| (o.at(k), p.at(k))).unzip();
                assert_eq!(x, y, "{weights:?} {zones:?}, answer {q}");
            }
        }
        // Too many to write out: 1:1000 in the zone, 1:2 outside, lcm(1001, 3) x 4 words.
        let (r, shape) =
            Routing::new(&[1, 1000, 1, 2], &[Some(0), Some(0), None, None], 3).unwrap();
        let counter = AtomicU32::new(0);
        let (mut firsts, mut rest_firsts) = ([0; 4], [0; 4]);
        for _ in 0..3003 {
            let mut c = Client::new(Some("10.1.0.9".parse().unwrap()));
            let o = r.order(shape, &counter, 4, &mut c, &l);
            assert!(matches!(o, Order::Zoned { .. }));
            firsts[o.at(0)] += 1;
            rest_firsts[o.at(2)] += 1;
        }
        assert_eq!(firsts, [3, 3000, 0, 0]);
        assert_eq!(rest_firsts, [0, 0, 1001, 2002]);
    }
}
