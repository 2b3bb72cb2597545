//! The name table: every owner name signpost answers for, mapped to its pre-encoded record
//! sets, rebuilt from each registry `Snapshot` and read lock-free by the query path.
//!
//! Static zones are parsed once into a shared map (`Statics`); the registry's names (service,
//! tag, RFC 2782, instance, reverse) live in a hash map (`name_map.rs`) that
//! `dynamic::Builder` keeps in two copies, one read by queries and one it writes, swapped on
//! every publish. A query is one hash lookup in each; a miss walks the name's suffixes
//! against the few zone apexes to choose NXDOMAIN or REFUSED, so a miss costs no more than a
//! hit whatever the registry's size.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use smallvec::SmallVec;

use super::names;
use super::routing::{Client, Locality, Order, Routing, Shape};
use super::wire::{A, AAAA, NS, SOA, SRV, SRV_TARGET};
use super::zonefile::StaticZone;

/// One record's RDATA, and for an SRV record the address of its target (the glue).
#[derive(Debug, Clone)]
pub(crate) struct Rec {
    pub rdata: Arc<[u8]>,
    /// The address bytes of the SRV target, which is `rdata[SRV_TARGET..]`: 4 for A, 16 for AAAA
    /// (the type is not stored: a record is 32 bytes rather than 40, and there are several
    /// per instance).
    pub glue: Option<Arc<[u8]>>,
}

impl Rec {
    /// The record type of glue `addr`.
    pub(crate) fn glue_type(addr: &[u8]) -> u16 {
        if addr.len() == 4 { A } else { AAAA }
    }
}

/// The records of one set. Most sets of registry names hold one record (an instance's
/// address, a PTR): kept inline, they cost no allocation of their own.
pub(crate) type Recs = SmallVec<[Rec; 1]>;
/// The record sets of one name; most names have one, kept inline likewise.
pub(crate) type RRSets = SmallVec<[RRSet; 1]>;

/// All records of one type at one name.
#[derive(Debug)]
pub(crate) struct RRSet {
    pub rtype: u16,
    /// Whether answers rotate (service answers: A, AAAA, SRV) or keep a fixed order.
    pub rotating: bool,
    pub ttl: u32,
    pub records: Recs,
    /// Round-robin position when `rotating`: incremented by every query that reads the
    /// set; wraps harmlessly.
    rotation: AtomicU32,
    /// Weights and locality (`routing.rs`), when the set needs more than plain rotation;
    /// one thin pointer, so the common set pays 8 bytes.
    routing: Option<Routing>,
    /// Where to find a word in `routing` without reading it first.
    shape: Shape,
}

impl RRSet {
    pub(crate) fn fixed(rtype: u16, ttl: u32, records: impl IntoIterator<Item = Rec>) -> Self {
        Self {
            rtype,
            rotating: false,
            ttl,
            records: records.into_iter().collect(),
            rotation: AtomicU32::new(0),
            routing: None,
            shape: Shape::default(),
        }
    }

    fn rotating(rtype: u16, ttl: u32, records: impl IntoIterator<Item = Rec>) -> Self {
        Self {
            rotating: true,
            ..Self::fixed(rtype, ttl, records)
        }
    }

    /// The set's routing as text, for tests comparing two builds.
    #[cfg(test)]
    pub(crate) fn routing_text(&self) -> String {
        format!("{:?} {:?}", self.routing, self.shape)
    }

    /// The order of this answer's records: the next round-robin position, by weight and
    /// the client's zone when the set routes.
    #[inline]
    pub(crate) fn order(&self, client: &mut Client, locality: &Locality) -> Order<'_> {
        let n = self.records.len();
        if !self.rotating || n == 0 {
            return Order::Rotate { start: 0, n };
        }
        match &self.routing {
            None => Order::Rotate {
                start: self.rotation.fetch_add(1, Ordering::Relaxed) as usize % n,
                n,
            },
            Some(r) => r.order(self.shape, &self.rotation, n, client, locality),
        }
    }
}

/// What a name holds; no record sets means an empty non-terminal (NODATA, not NXDOMAIN).
#[derive(Debug, Default)]
pub(crate) struct Node {
    /// Index into `Table::zones`.
    pub zone: usize,
    pub rrsets: RRSets,
}

impl Node {
    pub(crate) fn get(&self, rtype: u16) -> Option<&RRSet> {
        self.rrsets.iter().find(|s| s.rtype == rtype)
    }
}

/// The hasher of the static names: foldhash, seeded per process. Names are hashed on every
/// query; SipHash was a fifth of a miss's instructions. Clients choose the names looked up
/// but not the names stored, so they cannot build long collision chains.
pub(crate) type NameHasher = foldhash::fast::RandomState;
/// Static names: built once, never changed.
pub(crate) type StaticNames = HashMap<Box<[u8]>, Node, NameHasher>;
/// The registry's names (`name_map.rs`).
pub(crate) use super::name_map::DynamicNames;

/// A zone signpost is authoritative for.
#[derive(Debug)]
pub(crate) struct Zone {
    /// Lowercase wire format.
    pub apex: Box<[u8]>,
    /// SOA RDATA, minimum already the negative TTL for the base domain.
    pub soa: Box<[u8]>,
    /// TTL of the SOA in negative answers (RFC 2308: the lesser of its TTL and minimum).
    pub negative_ttl: u32,
    /// For the SOA's MNAME and RNAME: where each lies in `soa` and, when it ends with the
    /// apex, how many bytes precede the apex (so a negative answer can point the rest at
    /// the apex already in the question, as Knot and NSD compress it).
    pub soa_names: [SoaName; 2],
    /// A host zone: the zone of a registered address's reverse name outside every zone file,
    /// whose apex is that name itself (there is one such `Zone`, shared by all of them). It
    /// has the base domain's SOA and NS, is answered at its apex (SOA, NS, PTR), and a name
    /// below it is NXDOMAIN; a reverse name of no registered address is outside it.
    pub host: bool,
    /// Its SOA serial follows the registry: `serial_base` plus the registry index
    /// (`Table::index`). The base domain's zone, the host zones, and zone files of reverse
    /// zones (under `arpa.`), which registered addresses' PTRs join.
    pub follows_registry: bool,
    /// The serial of its SOA as loaded (the zone file's; 0 when synthesised).
    pub serial_base: u32,
}

/// One domain name inside SOA RDATA (see `Zone::soa_names`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SoaName {
    pub start: usize,
    pub len: usize,
    /// Bytes before the apex suffix, if the name ends with the apex.
    pub before_apex: Option<usize>,
}

impl Zone {
    pub(crate) fn new(apex: Box<[u8]>, soa: Box<[u8]>, negative_ttl: u32) -> Self {
        let mut soa_names = [SoaName {
            start: 0,
            len: 0,
            before_apex: None,
        }; 2];
        let mut at = 0;
        for n in &mut soa_names {
            let start = at;
            // Uncompressed wire labels up to the root label (zone-file and synthesized SOAs).
            while at < soa.len() && soa[at] != 0 {
                at += 1 + soa[at] as usize;
            }
            at = (at + 1).min(soa.len());
            let name = &soa[start..at];
            let before_apex = names::is_within(&name.to_ascii_lowercase(), &apex)
                .then(|| name.len() - apex.len());
            *n = SoaName {
                start,
                len: name.len(),
                before_apex,
            };
        }
        Self {
            apex,
            soa,
            negative_ttl,
            soa_names,
            host: false,
            follows_registry: false,
            serial_base: 0,
        }
    }

    /// Marks the zone as following the registry, from the serial its SOA has now.
    fn following_registry(mut self) -> Self {
        let at = self.soa_numbers();
        self.serial_base = u32::from_be_bytes(self.soa[at..at + 4].try_into().expect("4 bytes"));
        self.follows_registry = true;
        self
    }

    /// Its SOA serial at registry index `index`: the base plus the index, in serial number
    /// arithmetic (RFC 1982: the sum wraps, and a step below 2^31 reads as an increase), so
    /// it grows with every published change and is the same on every replica sharing the
    /// registry's index. Fixed for a zone that does not follow the registry.
    pub(crate) fn serial(&self, index: u64) -> u32 {
        if self.follows_registry {
            self.serial_base.wrapping_add(index as u32)
        } else {
            let at = self.soa_numbers();
            u32::from_be_bytes(self.soa[at..at + 4].try_into().expect("4 bytes"))
        }
    }

    /// Where the SOA RDATA's numbers (serial first) start, after MNAME and RNAME.
    pub(crate) fn soa_numbers(&self) -> usize {
        self.soa_names[1].start + self.soa_names[1].len
    }

    /// The SOA RDATA at registry index `index`, as written.
    pub(crate) fn soa_rdata(&self, index: u64) -> SmallVec<[u8; 128]> {
        let mut rdata: SmallVec<[u8; 128]> = SmallVec::from_slice(&self.soa);
        let at = self.soa_numbers();
        rdata[at..at + 4].copy_from_slice(&self.serial(index).to_be_bytes());
        rdata
    }

    /// The host zone (`host`), with the base domain's SOA RDATA `soa`.
    fn host(soa: Box<[u8]>, negative_ttl: u32) -> Self {
        let mut z = Self::new(Box::new([]), soa, negative_ttl).following_registry();
        // Its apex is the question's name, never a suffix the SOA's names could share.
        for n in &mut z.soa_names {
            n.before_apex = None;
        }
        z.host = true;
        z
    }
}

/// Answer settings from `[dns]`.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// `dns.domain` in lowercase wire format.
    pub domain: Box<[u8]>,
    pub ttl: u32,
    pub negative_ttl: u32,
    pub include_warning: bool,
    pub max_answers: usize,
    /// `dns.max_udp_payload`: the largest UDP answer, and what replies' OPT advertises.
    pub max_udp_payload: u16,
    /// `dns.locality`: client networks by zone.
    pub locality: Locality,
    /// `dns.fail_open`: every service fails open.
    pub fail_open: bool,
}

/// The parts of a table that do not change with the registry.
#[derive(Debug)]
pub(crate) struct Statics {
    pub(crate) settings: Settings,
    pub zones: Arc<Vec<Zone>>,
    /// Apex → zone index.
    pub(super) apexes: Arc<Vec<(Box<[u8]>, usize)>>,
    pub(super) names: Arc<StaticNames>,
    /// The host zone (`Zone::host`): where a registered address's reverse name lives when
    /// no zone file holds it.
    pub(super) host_zone: usize,
    /// The registry index the tables answer for, shared by every table (`Table::index`).
    pub(super) index: Arc<AtomicU64>,
    /// Each zone's SOA TTL (positive answers and transfers), by zone index.
    pub(super) soa_ttls: Arc<Vec<u32>>,
}

impl Statics {
    /// The zone a reverse name of a registered address belongs to: the zone file whose zone
    /// holds it, or else its own host zone.
    pub(crate) fn reverse_zone_of(&self, key: &[u8]) -> usize {
        names::suffixes(key)
            .find_map(|s| self.apexes.iter().find(|(a, _)| **a == *s).map(|(_, z)| *z))
            .unwrap_or(self.host_zone)
    }
}

/// Where a query name falls. The `usize` is the length of the zone's apex, a suffix of the
/// name (for a host zone, the name of its node).
pub(crate) enum Lookup<'a> {
    Found(&'a Node, &'a Zone, usize),
    /// Inside a zone, but no such name.
    NxDomain(&'a Zone, usize),
    /// Outside every zone signpost serves.
    Outside,
}

/// One immutable table, answering for one snapshot.
#[derive(Debug, Clone)]
pub struct Table {
    pub(crate) settings: Settings,
    pub(super) zones: Arc<Vec<Zone>>,
    pub(super) apexes: Arc<Vec<(Box<[u8]>, usize)>>,
    pub(super) statics: Arc<StaticNames>,
    /// The registry's names (`dynamic::Builder`).
    pub(super) dynamic: DynamicNames,
    /// The registry index of the names published last, which the serial of every zone that
    /// follows the registry adds to its base: `DnsView::publish` stores it after it swaps in
    /// the table of a new index, so a serial is never seen with older names than its own.
    pub(super) index: Arc<AtomicU64>,
    /// Each zone's SOA TTL (`Statics::soa_ttls`).
    pub(super) soa_ttls: Arc<Vec<u32>>,
}

impl Table {
    #[inline]
    pub(crate) fn lookup(&self, key: &[u8]) -> Lookup<'_> {
        if let Some(n) = self.node(key) {
            let zone = &self.zones[n.zone];
            let apex = if zone.host {
                key.len()
            } else {
                zone.apex.len()
            };
            return Lookup::Found(n, zone, apex);
        }
        // Only a reverse name can lie below a host zone's apex (a registered reverse name).
        let reverse = key.ends_with(b"\x04arpa\x00");
        for s in names::suffixes(key) {
            // A handful of apexes: comparing bytes beats hashing every suffix.
            if let Some((_, z)) = self.apexes.iter().find(|(a, _)| **a == *s) {
                return Lookup::NxDomain(&self.zones[*z], s.len());
            }
            if reverse
                && let Some(n) = self.dynamic.get(s)
                && self.zones[n.zone].host
            {
                return Lookup::NxDomain(&self.zones[n.zone], s.len());
            }
        }
        Lookup::Outside
    }

    /// The registry index the serials follow now.
    pub(crate) fn index(&self) -> u64 {
        self.index.load(Ordering::Acquire)
    }

    /// The SOA TTL of zone `zone`.
    pub(crate) fn soa_ttl(&self, zone: usize) -> u32 {
        self.soa_ttls
            .get(zone)
            .copied()
            .unwrap_or(self.settings.ttl)
    }

    /// Every record of zone `zone` but its SOA, as a transfer sends them: the registry's
    /// names (which shadow a static name of the same owner) and the zone file's, each set in
    /// its stored order (no rotation counter is touched).
    pub(crate) fn zone_records(&self, zone: usize, out: &mut Vec<super::transfer::Rr>) {
        use super::transfer::Rr;
        let mut push = |owner: &Arc<[u8]>, node: &Node| {
            for set in node.rrsets.iter().filter(|s| s.rtype != SOA) {
                for rec in &set.records {
                    out.push(Rr {
                        owner: owner.clone(),
                        rtype: set.rtype,
                        rdata: rec.rdata.clone(),
                        ttl: set.ttl,
                    });
                }
            }
        };
        for (name, node) in self.dynamic.iter() {
            if node.zone == zone {
                push(name, node);
            }
        }
        for (name, node) in self.statics.iter() {
            if node.zone == zone && !self.dynamic.contains_key(name) {
                push(&Arc::from(&name[..]), node);
            }
        }
    }

    /// The node of `key` (lowercase wire format), registry names first.
    pub(crate) fn node(&self, key: &[u8]) -> Option<&Node> {
        self.dynamic
            .get(key)
            .map(|n| &**n)
            .or_else(|| self.statics.get(key))
    }

    /// The base domain's NS record set (the host zones' NS too).
    pub(crate) fn domain_ns(&self) -> Option<&RRSet> {
        self.statics.get(&self.zones[0].apex)?.get(NS)
    }
}

/// A static record before grouping: zone index, owner, type, TTL, RDATA.
type Loose = (usize, Box<[u8]>, u16, u32, Box<[u8]>);
/// A static record set being grouped: zone index, TTL, records.
type Grouped = (usize, u32, Vec<Rec>);

/// The SOA RDATA signpost makes up for the base domain when no zone file provides one.
fn synthesized_soa(domain: &[u8], serial: u32, minimum: u32) -> Box<[u8]> {
    let mut r = Vec::new();
    r.extend_from_slice(&names::wire(&["ns"], domain));
    r.extend_from_slice(&names::wire(&["hostmaster"], domain));
    for v in [serial, 3600, 600, 86400, minimum] {
        r.extend_from_slice(&v.to_be_bytes());
    }
    r.into_boxed_slice()
}

fn soa_minimum(rdata: &[u8]) -> u32 {
    let n = rdata.len();
    u32::from_be_bytes([rdata[n - 4], rdata[n - 3], rdata[n - 2], rdata[n - 1]])
}

impl Statics {
    /// Builds the static part: the base domain's zone (from its zone file, or made up) and
    /// every other zone file. The SOA serial of D starts at its zone file's (0 for the
    /// synthesised SOA) plus `index`, the registry's.
    pub(crate) fn new(settings: Settings, files: &[StaticZone], index: u64) -> Self {
        let mut zones = Vec::new();
        let mut apexes = Vec::new();
        let mut names = StaticNames::default();
        // Zone 0 is always the base domain.
        let own = files.iter().find(|z| z.apex == settings.domain);
        let (soa, soa_ttl) = match own {
            Some(z) => {
                let s = z.soa();
                let mut rdata = s.rdata.to_vec();
                let n = rdata.len();
                rdata[n - 4..].copy_from_slice(&settings.negative_ttl.to_be_bytes());
                (rdata.into_boxed_slice(), s.ttl)
            }
            None => (
                synthesized_soa(&settings.domain, 0, settings.negative_ttl),
                settings.ttl,
            ),
        };
        zones.push(
            Zone::new(settings.domain.clone(), soa.clone(), settings.negative_ttl)
                .following_registry(),
        );
        let mut soa_ttls = vec![soa_ttl];
        apexes.push((settings.domain.clone(), 0));
        let mut records: Vec<Loose> = Vec::new();
        if own.is_none() {
            let d = settings.domain.clone();
            records.push((0, d.clone(), SOA, soa_ttl, soa));
            records.push((0, d.clone(), NS, soa_ttl, names::wire(&["ns"], &d)));
        }
        for z in files {
            let zi = if z.apex == settings.domain {
                0
            } else {
                let s = z.soa();
                let zone = Zone::new(
                    z.apex.clone(),
                    s.rdata.clone(),
                    s.ttl.min(soa_minimum(&s.rdata)),
                );
                // A reverse zone's names change with the registry (registered addresses'
                // PTRs join it), so its serial follows the registry too.
                let arpa = names::from_dotted("arpa.").expect("a valid name");
                zones.push(if names::is_within(&z.apex, &arpa) {
                    zone.following_registry()
                } else {
                    zone
                });
                soa_ttls.push(s.ttl);
                apexes.push((z.apex.clone(), zones.len() - 1));
                zones.len() - 1
            };
            for r in &z.records {
                let rdata = if zi == 0 && r.rtype == SOA {
                    zones[0].soa.clone()
                } else {
                    r.rdata.clone()
                };
                records.push((zi, r.name.clone(), r.rtype, r.ttl, rdata));
            }
        }
        zones.push(Zone::host(zones[0].soa.clone(), settings.negative_ttl));
        soa_ttls.push(settings.ttl);
        let host_zone = zones.len() - 1;
        // Group into record sets, in file order within a set.
        let mut grouped: BTreeMap<(Box<[u8]>, u16), Grouped> = BTreeMap::new();
        for (zi, name, rtype, ttl, rdata) in records {
            let e = grouped
                .entry((name, rtype))
                .or_insert_with(|| (zi, ttl, Vec::new()));
            e.1 = e.1.min(ttl);
            e.2.push(Rec {
                rdata: rdata.into(),
                glue: None,
            });
        }
        for ((name, rtype), (zi, ttl, recs)) in grouped {
            names
                .entry(name)
                .or_insert_with(|| Node {
                    zone: zi,
                    rrsets: RRSets::new(),
                })
                .rrsets
                .push(RRSet::fixed(rtype, ttl, recs));
        }
        let keys: Vec<(Box<[u8]>, usize)> =
            names.iter().map(|(k, n)| (k.clone(), n.zone)).collect();
        for (k, zi) in keys {
            add_ancestors(&mut names, &k, &zones[zi].apex, zi);
        }
        // The structural names of the base domain exist even with an empty registry.
        let d = settings.domain.clone();
        for fixed in [
            names::wire(&["service"], &d),
            names::wire(&["instance"], &d),
        ] {
            names.entry(fixed).or_insert_with(|| Node {
                zone: 0,
                rrsets: RRSets::new(),
            });
        }
        Self {
            settings,
            zones: Arc::new(zones),
            apexes: Arc::new(apexes),
            names: Arc::new(names),
            host_zone,
            index: Arc::new(AtomicU64::new(index)),
            soa_ttls: Arc::new(soa_ttls),
        }
    }
}

/// Inserts an empty node for every name strictly between `key` and `apex` that is missing,
/// so those names answer NODATA rather than NXDOMAIN.
fn add_ancestors(map: &mut StaticNames, key: &[u8], apex: &[u8], zone: usize) {
    for s in names::suffixes(key).skip(1) {
        if s.len() <= apex.len() {
            break;
        }
        if map.contains_key(s) {
            continue;
        }
        map.insert(
            s.into(),
            Node {
                zone,
                rrsets: RRSets::new(),
            },
        );
    }
}

pub(crate) fn addr_type(a: IpAddr) -> u16 {
    match a {
        IpAddr::V4(_) => A,
        IpAddr::V6(_) => AAAA,
    }
}

pub(crate) fn addr_rec(a: IpAddr) -> Rec {
    let rdata: Arc<[u8]> = match a {
        IpAddr::V4(v) => Arc::new(v.octets()),
        IpAddr::V6(v) => Arc::new(v.octets()),
    };
    Rec { rdata, glue: None }
}

/// An in-service instance as the service-level answers use it: its address record and its
/// SRV record (target = its instance name, glue = its address), built once per registration
/// so a health change only clones (reference-counts) them; its zone's number in
/// `dns.locality`.
pub(crate) struct Member<'a> {
    pub instance: &'a crate::model::Instance,
    pub addr: &'a Rec,
    pub srv: &'a Rec,
    pub zone: Option<usize>,
}

/// The SRV record of an instance of `svc` on `port`: its priority and weight, its instance
/// name as target, its address as glue.
pub(crate) fn srv_rec_on(
    svc: &str,
    d: &[u8],
    i: &crate::model::Instance,
    port: u16,
    addr: &Rec,
) -> Rec {
    let mut r = Vec::with_capacity(SRV_TARGET + 64);
    r.extend_from_slice(&i.priority().to_be_bytes());
    r.extend_from_slice(&i.weight().to_be_bytes());
    r.extend_from_slice(&port.to_be_bytes());
    r.extend_from_slice(&names::instance(i.key().id.as_str(), svc, d));
    Rec {
        rdata: r.into(),
        glue: Some(addr.rdata.clone()),
    }
}

/// The SRV record of an instance of `svc`: its priority, weight and port, its instance name
/// as target, its address as glue.
pub(crate) fn srv_rec(svc: &str, d: &[u8], i: &crate::model::Instance, addr: &Rec) -> Rec {
    srv_rec_on(svc, d, i, i.port(), addr)
}

/// A rotating set of `records`, each with its weight and zone, routing when they need it.
fn routed(
    rtype: u16,
    ttl: u32,
    records: Vec<(Rec, u32, Option<usize>)>,
    locality: &Locality,
) -> RRSet {
    let weights: Vec<u32> = records.iter().map(|r| r.1).collect();
    let zones: Vec<Option<usize>> = records.iter().map(|r| r.2).collect();
    let (routing, shape) = match Routing::new(&weights, &zones, locality.zones()) {
        Some((r, shape)) => (Some(r), shape),
        None => (None, Shape::default()),
    };
    RRSet {
        routing,
        shape,
        ..RRSet::rotating(rtype, ttl, records.into_iter().map(|r| r.0))
    }
}

/// A service-level node: the members' A/AAAA (once per address, when `with_addresses`: an
/// address shared by several members weighs their sum) and SRV records, all rotating and
/// routing by weight and zone.
pub(crate) fn service_node(
    members: &[&Member<'_>],
    ttl: u32,
    with_addresses: bool,
    locality: &Locality,
) -> Node {
    let mut rrsets = RRSets::new();
    if with_addresses {
        for rtype in [A, AAAA] {
            let mut recs: Vec<(Rec, u32, Option<usize>)> = Vec::new();
            // Address → its record's position in `recs`.
            let mut seen: BTreeMap<IpAddr, usize> = BTreeMap::new();
            for m in members {
                let a = m.instance.address();
                if addr_type(a) != rtype {
                    continue;
                }
                let w = u32::from(m.instance.weight());
                match seen.get(&a) {
                    Some(&at) => recs[at].1 += w,
                    None => {
                        seen.insert(a, recs.len());
                        recs.push((m.addr.clone(), w, m.zone));
                    }
                }
            }
            if !recs.is_empty() {
                rrsets.push(routed(rtype, ttl, recs, locality));
            }
        }
    }
    let srv = members
        .iter()
        .map(|m| (m.srv.clone(), u32::from(m.instance.weight()), m.zone))
        .collect();
    rrsets.push(routed(SRV, ttl, srv, locality));
    Node { zone: 0, rrsets }
}

/// The node of a named port: each member's SRV record on that port (`recs`, by member),
/// rotating and routing like the service's own SRV.
pub(crate) fn port_node(members: &[(&Member<'_>, Rec)], ttl: u32, locality: &Locality) -> Node {
    let srv = members
        .iter()
        .map(|(m, r)| (r.clone(), u32::from(m.instance.weight()), m.zone))
        .collect();
    Node {
        zone: 0,
        rrsets: smallvec::smallvec![routed(SRV, ttl, srv, locality)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_stays_one_line() {
        // Its routing's shape sits in what was padding: routing costs a set no more than the
        // thin pointer (RSS at 100,000 instances, BENCHMARKS.md).
        assert_eq!(std::mem::size_of::<RRSet>(), 64);
    }
}
