//! The registry's part of the name table, kept up to date one service at a time.
//!
//! A change of one instance rebuilds only its service's names (service, tags, RFC 2782,
//! instance names) and the reverse names of the addresses involved. Empty non-terminals
//! (`web.instance.D`, `_blue.service.D`) are kept by counting the names below them.
//!
//! The names live in two copies of one hash map (double buffering, as `left-right` does):
//! queries read the published copy while the writer changes the other one in place, logging
//! each change; a publish swaps them, and the copy it takes back is brought up to date by
//! replaying the log once the queries still reading it are done (they hold it for one
//! answer). A change therefore costs two hash-map writes whatever the registry's size. A
//! persistent map (`imbl`'s HAMT), used before, copied its path to every changed name, and
//! each copied node cloned up to 32 reference-counted entries: a quarter of a registration's
//! CPU at 100,000 instances, plus as much again freeing the copies.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use super::stats::FailOpen;
use super::table::{
    self, DynamicNames, Member, Node, RRSet, RRSets, Rec, Statics, Table, addr_rec, addr_type,
    port_node, service_node, srv_rec, srv_rec_on,
};
use super::wire::{PTR, TXT};
use super::{name_map, names};
use crate::model::{Instance, InstanceId, ServiceName};
use crate::registry::{Entry, ServiceInstances, Snapshot};

/// The builder's own maps: keys are names and addresses it made itself, so a fast hash
/// (not SipHash, which was a visible share of start-up) is safe.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// One instance's own names (its instance name, and its address's PTR), and what they were
/// built from, so a change that leaves them alone (a health change) does not rebuild them.
struct Built {
    entry: Arc<Entry>,
    /// Its instance name; the same allocation keys the table and its address's PTR set.
    name: Arc<[u8]>,
    /// Its address record and SRV record, shared by the service-level answers.
    addr: Rec,
    srv: Rec,
}

impl Built {
    fn id(&self) -> &InstanceId {
        &self.entry.instance.key().id
    }
}

/// Whether the SRV record built from `a` still holds for `b` (same instance name).
fn same_srv(a: &Instance, b: &Instance) -> bool {
    a.port() == b.port() && a.priority() == b.priority() && a.weight() == b.weight()
}

/// What one service put into the table, so its next change can take out only what changed.
#[derive(Default)]
struct Produced {
    /// The TTL every name of the service was built with.
    ttl: u32,
    /// By id, in id order (the order of `ServiceInstances`). A sorted vector rather than a
    /// map: services are small, and a map per service cost ~1 KiB each at 25,000 services.
    instances: Vec<Built>,
    /// Service-level owner names (service, RFC 2782, tag forms, named ports), present while
    /// any instance is in service (or served failing open).
    names: Vec<Arc<[u8]>>,
    /// The names were built from every instance not in maintenance, none being in service
    /// (fail-open).
    failing_open: bool,
}

/// What a publish changed: the names whose node changed, with the node before and after
/// (`None`: no such name), or everything (a rebuild).
pub(crate) enum Published {
    Changed(Vec<NameChange>),
    Rebuilt,
}

/// One changed name: its owner, its node before and after.
pub(crate) type NameChange = (Arc<[u8]>, Option<Arc<Node>>, Option<Arc<Node>>);

/// One change of the names: set (`Some`) or remove (`None`), with the name's hash so that
/// replaying it does not hash the name again.
type Op = (u64, Arc<[u8]>, Option<Arc<Node>>);

/// The mutable side of the dynamic names; only the registry writer touches it (through
/// `DnsView`'s `View` methods), and each publish hands readers an immutable `Table`.
pub(crate) struct Builder {
    /// The names as of every change so far; readers do not see it until `publish`. `None`
    /// between a publish and the next change, while it is `spare`.
    working: Option<DynamicNames>,
    /// Changes made to `working` since it was last published.
    log: Vec<Op>,
    /// The table readers used before the last publish, and the changes it lacks.
    spare: Option<Arc<Table>>,
    lag: Vec<Op>,
    /// A whole rebuild is under way (`set_all`): changes are not logged, and `publish`
    /// copies the map for the next working copy.
    bulk: bool,
    /// For each name above a registry name (up to the base domain): how many registry names
    /// lie below it. While positive, the name exists (as an empty non-terminal if nothing
    /// else is there).
    below: HashMap<Box<[u8]>, usize>,
    produced: HashMap<ServiceName, Produced>,
    /// Instance names per registered address, across services: sorted, without repeats (the
    /// PTR order). Usually one name, so a vector rather than a set.
    reverse: HashMap<IpAddr, Vec<Arc<[u8]>>>,
    /// Fail-open episodes and the services failing open now, for `/metrics`.
    fail_open: Arc<FailOpen>,
}

fn empty_non_terminal() -> Arc<Node> {
    Arc::new(Node {
        zone: 0,
        rrsets: RRSets::new(),
    })
}

/// Whether an instance's own names (A/AAAA and TXT at its instance name, its PTR) are the
/// same for `a` and `b`, given the same TTL.
fn same_own_names(a: &Arc<Entry>, b: &Arc<Entry>) -> bool {
    Arc::ptr_eq(a, b)
        || (a.instance.address() == b.instance.address() && a.instance.meta() == b.instance.meta())
}

/// Whether the service-level answers built from `a` and from `b` are the same.
fn same_service_view(a: &Arc<Entry>, b: &Arc<Entry>) -> bool {
    let (x, y) = (&a.instance, &b.instance);
    Arc::ptr_eq(a, b)
        || (x.key().id == y.key().id
            && x.address() == y.address()
            && x.port() == y.port()
            && x.priority() == y.priority()
            && x.weight() == y.weight()
            && x.tags() == y.tags()
            && x.ports() == y.ports()
            && x.fail_open() == y.fail_open()
            && x.meta().get(ZONE_KEY) == y.meta().get(ZONE_KEY))
}

/// The metadata key naming an instance's zone (`dns.locality`).
pub(crate) const ZONE_KEY: &str = "zone";

/// The entries a service's names answer with: those in service; or, when there are none
/// and the service fails open, every one not in maintenance (then `true`).
fn served<'e, T>(
    entries: impl Iterator<Item = &'e T> + Clone,
    entry: impl Fn(&T) -> &Arc<Entry>,
    include_warning: bool,
    fail_open: bool,
) -> (Vec<&'e T>, bool)
where
    T: 'e,
{
    let in_service: Vec<&T> = entries
        .clone()
        .filter(|b| entry(b).in_service(include_warning))
        .collect();
    if !in_service.is_empty() || !fail_open {
        return (in_service, false);
    }
    let open: Vec<&T> = entries
        .filter(|b| entry(b).instance.maintenance().is_none())
        .collect();
    let failing = !open.is_empty();
    (open, failing)
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            working: Some(DynamicNames::default()),
            log: Vec::new(),
            spare: None,
            lag: Vec::new(),
            bulk: false,
            below: HashMap::default(),
            produced: HashMap::default(),
            reverse: HashMap::default(),
            fail_open: Arc::default(),
        }
    }
}

/// How often `take_back` yields to the queries still reading a swapped-out table before it
/// copies the table instead. They hold it for one answer, so the first few yields suffice.
const WAIT_FOR_READERS: usize = 1000;

/// Sole ownership of `t`, once the queries reading it are done; a copy if they take too long
/// (a reader thread descheduled mid-answer), so the writer never waits long.
fn take_back(mut t: Arc<Table>) -> DynamicNames {
    for _ in 0..WAIT_FOR_READERS {
        match Arc::try_unwrap(t) {
            Ok(t) => return t.dynamic,
            Err(shared) => t = shared,
        }
        std::thread::yield_now();
    }
    t.dynamic.clone()
}

fn apply(map: &mut DynamicNames, (hash, name, node): Op) {
    match node {
        Some(n) => map.insert_hashed(hash, name, n),
        None => {
            map.remove_hashed(hash, &name);
        }
    }
}

impl Builder {
    /// A builder counting fail-open episodes into `fail_open`.
    pub(crate) fn counting(fail_open: Arc<FailOpen>) -> Self {
        Self {
            fail_open,
            ..Self::default()
        }
    }

    /// The working copy, brought up to date first if the last publish took it away.
    fn names(&mut self) -> &mut DynamicNames {
        if self.working.is_none() {
            let mut map = self.spare.take().map(take_back).unwrap_or_default();
            for op in self.lag.drain(..) {
                apply(&mut map, op);
            }
            self.working = Some(map);
        }
        self.working.as_mut().expect("just set")
    }

    /// Hands readers a table with every change so far: `swap` stores it and returns the
    /// table readers had, which becomes the next working copy. Nothing when nothing changed.
    /// Says what changed, name by name, for the zone-transfer history.
    pub(crate) fn publish(
        &mut self,
        statics: &Statics,
        swap: impl FnOnce(Arc<Table>) -> Arc<Table>,
    ) -> Published {
        if self.log.is_empty() && !self.bulk {
            return Published::Changed(Vec::new());
        }
        let Some(map) = self.working.take() else {
            return Published::Changed(Vec::new());
        };
        let log = std::mem::take(&mut self.log);
        let bulk = std::mem::take(&mut self.bulk);
        // After a rebuild (start-up) or many changes, copying the map is cheaper than
        // replaying them.
        let copy = (bulk || log.len() > map.len() / 2).then(|| map.clone());
        let old = swap(Arc::new(Self::table_of(statics, map)));
        let published = if bulk {
            Published::Rebuilt
        } else {
            // Each changed name once, with its node before (in the table readers had) and
            // after (its last change).
            let mut last: HashMap<&[u8], &Option<Arc<Node>>> = HashMap::default();
            for (_, name, node) in &log {
                last.insert(&name[..], node);
            }
            Published::Changed(
                last.into_iter()
                    .map(|(name, new)| {
                        let before = old.dynamic.get(name).cloned();
                        (name.into(), before, new.clone())
                    })
                    .collect(),
            )
        };
        match copy {
            Some(map) => {
                self.working = Some(map);
                self.spare = None;
                self.lag = Vec::new();
            }
            None => {
                self.spare = Some(old);
                self.lag = log;
            }
        }
        published
    }

    /// An empty table: what readers see before the first publish.
    pub(crate) fn empty_table(statics: &Statics) -> Table {
        Self::table_of(statics, DynamicNames::default())
    }

    fn table_of(statics: &Statics, dynamic: DynamicNames) -> Table {
        Table {
            settings: statics.settings.clone(),
            zones: statics.zones.clone(),
            apexes: statics.apexes.clone(),
            statics: statics.names.clone(),
            dynamic,
            index: statics.index.clone(),
            soa_ttls: statics.soa_ttls.clone(),
        }
    }

    fn set(&mut self, name: Arc<[u8]>, node: Arc<Node>) {
        let hash = name_map::hash_name(&name);
        if self.bulk {
            self.names().insert_hashed(hash, name, node);
        } else {
            self.names().insert_hashed(hash, name.clone(), node.clone());
            self.log.push((hash, name, Some(node)));
        }
    }

    fn unset(&mut self, name: &[u8]) {
        let hash = name_map::hash_name(name);
        if let Some(name) = self.names().remove_hashed(hash, name)
            && !self.bulk
        {
            self.log.push((hash, name, None));
        }
    }

    /// Brings the table in line with the whole snapshot (start-up).
    pub(crate) fn set_all(&mut self, statics: &Statics, snap: &Snapshot) {
        let gone: Vec<ServiceName> = self
            .produced
            .keys()
            .filter(|s| !snap.services.contains_key(*s))
            .cloned()
            .collect();
        for svc in gone {
            self.set_service(statics, &svc, None);
        }
        // Sized up front: at 100,000 instances, growing the maps step by step was a tenth of
        // start-up. Per instance: its name and PTR; per service: its three names and the
        // empty non-terminal above its instances.
        let services = snap.services.len();
        let instances: usize = snap.services.values().map(|s| s.len()).sum();
        self.names().reserve(2 * instances + 4 * services);
        self.below.reserve(2 * services);
        self.produced.reserve(services);
        self.reverse.reserve(instances);
        // Nothing is logged for a whole rebuild: `publish` copies the map instead.
        self.bulk = true;
        for (svc, instances) in &snap.services {
            self.set_service(statics, svc, Some(instances));
        }
    }

    /// Replaces what `svc` contributes with what `instances` (none: deregistered) make. Only
    /// the names whose inputs changed are rebuilt: a health change rebuilds the service-level
    /// answers, and only when the set of in-service instances changed.
    pub(crate) fn set_service(
        &mut self,
        statics: &Statics,
        svc: &ServiceName,
        instances: Option<&ServiceInstances>,
    ) {
        let s = &statics.settings;
        let instances = instances.filter(|i| !i.is_empty());
        let mut old = self.produced.remove(svc).unwrap_or_default();
        // The instances `old.names` were built from.
        let old_healthy: Vec<Arc<Entry>> = if old.failing_open {
            old.instances
                .iter()
                .filter(|b| b.entry.instance.maintenance().is_none())
                .map(|b| b.entry.clone())
                .collect()
        } else {
            old.instances
                .iter()
                .filter(|b| b.entry.in_service(s.include_warning))
                .map(|b| b.entry.clone())
                .collect()
        };
        let ttl = instances.map_or(s.ttl, |i| service_ttl(s, i));
        let rebuild_all = ttl != old.ttl;
        let mut touched: BTreeSet<IpAddr> = BTreeSet::new();
        let mut produced = Produced {
            ttl,
            instances: Vec::with_capacity(instances.map_or(0, |i| i.len())),
            ..Produced::default()
        };

        // Each instance's own names: a merge of the old and new lists, both in id order.
        let mut previous = std::mem::take(&mut old.instances).into_iter().peekable();
        for (id, e) in instances.into_iter().flatten() {
            while let Some(b) = previous.next_if(|b| b.id() < id) {
                self.remove_instance(statics, b, &mut touched);
            }
            let prev = previous.next_if(|b| b.id() == id);
            let built = match prev {
                Some(mut b) if !rebuild_all && same_own_names(&b.entry, e) => {
                    if !same_srv(&b.entry.instance, &e.instance) {
                        b.srv = srv_rec(svc.as_str(), &s.domain, &e.instance, &b.addr);
                    }
                    b.entry = e.clone();
                    b
                }
                prev => {
                    if let Some(b) = prev {
                        self.remove_instance(statics, b, &mut touched);
                    }
                    self.add_instance(statics, svc.as_str(), e, ttl, &mut touched)
                }
            };
            produced.instances.push(built);
        }
        for b in previous {
            self.remove_instance(statics, b, &mut touched);
        }

        // The service-level names: of the instances in service, or failing open.
        let fail_open = s.fail_open
            || produced
                .instances
                .iter()
                .any(|b| b.entry.instance.fail_open());
        let (healthy, failing_open) = served(
            produced.instances.iter(),
            |b: &Built| &b.entry,
            s.include_warning,
            fail_open,
        );
        self.note_fail_open(svc, old.failing_open, failing_open, healthy.len());
        produced.failing_open = failing_open;
        let unchanged = !rebuild_all
            && failing_open == old.failing_open
            && healthy.len() == old_healthy.len()
            && healthy
                .iter()
                .zip(&old_healthy)
                .all(|(a, b)| same_service_view(&a.entry, b));
        let mut service_names = Vec::new();
        if unchanged {
            service_names = std::mem::take(&mut old.names);
        } else {
            let locality = &s.locality;
            let members: Vec<Member<'_>> = healthy
                .iter()
                .map(|b| Member {
                    instance: &b.entry.instance,
                    addr: &b.addr,
                    srv: &b.srv,
                    zone: if locality.is_empty() {
                        None
                    } else {
                        b.entry
                            .instance
                            .meta()
                            .get(ZONE_KEY)
                            .and_then(|z| locality.zone_named(z))
                    },
                })
                .collect();
            let built = build_service_names(s, svc.as_str(), &members, ttl);
            // A name the service keeps is overwritten in place (its ancestors' counts do not
            // change); only names it loses or gains are removed or inserted with them.
            for name in &old.names {
                if !built.iter().any(|(n, _)| **n == **name) {
                    self.remove_name(statics, name);
                }
            }
            for (name, node) in built {
                match old.names.iter().find(|o| ***o == *name) {
                    Some(kept) => {
                        self.set(kept.clone(), Arc::new(node));
                        service_names.push(kept.clone());
                    }
                    None => {
                        let name: Arc<[u8]> = name.into();
                        self.insert_name(statics, name.clone(), node);
                        service_names.push(name);
                    }
                }
            }
        }
        produced.names = service_names;

        for addr in touched {
            self.refresh_reverse(statics, addr);
        }
        if !produced.instances.is_empty() {
            self.produced.insert(svc.clone(), produced);
        }
    }

    /// Logs and counts a service entering or leaving fail-open: once per episode.
    fn note_fail_open(&self, svc: &ServiceName, was: bool, is: bool, served: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        if is && !was {
            self.fail_open.entered.fetch_add(1, Relaxed);
            self.fail_open.services.fetch_add(1, Relaxed);
            tracing::warn!(
                service = %svc,
                instances = served,
                "no instance in service: failing open, answering with every instance not in maintenance"
            );
        } else if was && !is {
            self.fail_open.services.fetch_sub(1, Relaxed);
            tracing::info!(service = %svc, "no longer failing open");
        }
    }

    /// Adds an instance's own name and its address's PTR target.
    fn add_instance(
        &mut self,
        statics: &Statics,
        svc: &str,
        e: &Arc<Entry>,
        ttl: u32,
        touched: &mut BTreeSet<IpAddr>,
    ) -> Built {
        let d = &statics.settings.domain;
        let addr_rec = addr_rec(e.instance.address());
        let srv = srv_rec(svc, d, &e.instance, &addr_rec);
        let (name, node) = instance_node(d, svc, &e.instance, ttl, &addr_rec);
        let name: Arc<[u8]> = name.into();
        self.insert_name(statics, name.clone(), node);
        let addr = e.instance.address();
        let set = self.reverse.entry(addr).or_default();
        if let Err(at) = set.binary_search(&name) {
            set.insert(at, name.clone());
        }
        touched.insert(addr);
        Built {
            entry: e.clone(),
            name,
            addr: addr_rec,
            srv,
        }
    }

    /// Takes out what `add_instance` put in.
    fn remove_instance(&mut self, statics: &Statics, b: Built, touched: &mut BTreeSet<IpAddr>) {
        self.remove_name(statics, &b.name);
        let addr = b.entry.instance.address();
        if let Some(set) = self.reverse.get_mut(&addr)
            && let Ok(at) = set.binary_search(&b.name)
        {
            set.remove(at);
        }
        touched.insert(addr);
    }

    /// The names strictly between `name` and the base domain.
    fn ancestors<'n>(statics: &Statics, name: &'n [u8]) -> impl Iterator<Item = &'n [u8]> {
        let d = statics.settings.domain.len();
        names::suffixes(name)
            .skip(1)
            .take_while(move |s| s.len() > d)
    }

    fn insert_name(&mut self, statics: &Statics, name: Arc<[u8]>, node: Node) {
        self.set(name.clone(), Arc::new(node));
        if !names::is_within(&name, &statics.settings.domain) {
            return;
        }
        for anc in Self::ancestors(statics, &name) {
            if let Some(count) = self.below.get_mut(anc) {
                *count += 1;
                continue;
            }
            self.below.insert(anc.into(), 1);
            if !self.names().contains_key(anc) && !statics.names.contains_key(anc) {
                self.set(anc.into(), empty_non_terminal());
            }
        }
    }

    fn remove_name(&mut self, statics: &Statics, name: &[u8]) {
        self.unset(name);
        if !names::is_within(name, &statics.settings.domain) {
            return;
        }
        if self.below.get(name).is_some_and(|c| *c > 0) && !statics.names.contains_key(name) {
            // Still has names below: it stays, as an empty non-terminal.
            self.set(name.into(), empty_non_terminal());
        }
        for anc in Self::ancestors(statics, name) {
            let Some(count) = self.below.get_mut(anc) else {
                continue;
            };
            *count -= 1;
            if *count == 0 {
                self.below.remove(anc);
                if self.names().get(anc).is_some_and(|n| n.rrsets.is_empty()) {
                    self.unset(anc);
                }
            }
        }
    }

    /// Rebuilds (or removes) the PTR node of `addr`.
    fn refresh_reverse(&mut self, statics: &Statics, addr: IpAddr) {
        let mut buf = [0; names::MAX_REVERSE];
        let n = names::reverse_into(addr, &mut buf);
        let key = &buf[..n];
        match self.reverse.get(&addr) {
            Some(targets) if !targets.is_empty() => {
                let recs: Vec<Rec> = targets
                    .iter()
                    .map(|t| Rec {
                        rdata: t.clone(),
                        glue: None,
                    })
                    .collect();
                let node = Node {
                    zone: statics.reverse_zone_of(key),
                    rrsets: smallvec::smallvec![RRSet::fixed(PTR, statics.settings.ttl, recs)],
                };
                self.set(key.into(), Arc::new(node));
            }
            _ => {
                self.reverse.remove(&addr);
                self.unset(key);
            }
        }
    }
}

/// The TTL of every answer of a service: the smallest any of its instances asks for.
fn service_ttl(s: &table::Settings, instances: &ServiceInstances) -> u32 {
    instances
        .values()
        .filter_map(|e| e.instance.ttl())
        .min()
        .unwrap_or(s.ttl)
}

/// An instance's own name and node: its address (`addr`, shared with the service-level
/// answers), and its metadata as TXT.
fn instance_node(d: &[u8], svc: &str, i: &Instance, ttl: u32, addr: &Rec) -> (Box<[u8]>, Node) {
    let target = names::instance(i.key().id.as_str(), svc, d);
    let mut rrsets: RRSets =
        smallvec::smallvec![RRSet::fixed(addr_type(i.address()), ttl, [addr.clone()])];
    if !i.meta().is_empty() {
        let recs: Vec<Rec> = i
            .meta()
            .iter()
            .map(|(k, v)| {
                let kv = format!("{k}={v}");
                let mut r = Vec::with_capacity(kv.len() + 1);
                r.push(kv.len() as u8); // validated to fit 255 bytes
                r.extend_from_slice(kv.as_bytes());
                Rec {
                    rdata: r.into(),
                    glue: None,
                }
            })
            .collect();
        rrsets.push(RRSet::fixed(TXT, ttl, recs));
    }
    (target, Node { zone: 0, rrsets })
}

/// The service-level names of a service whose in-service instances are `healthy`: the
/// service name, its RFC 2782 forms, and per tag the tagged forms. None when none is healthy.
fn build_service_names(
    s: &table::Settings,
    svc: &str,
    healthy: &[Member<'_>],
    ttl: u32,
) -> Vec<(Box<[u8]>, Node)> {
    let d = &s.domain[..];
    let mut nodes = Vec::new();
    if healthy.is_empty() {
        return nodes;
    }
    let l = &s.locality;
    let all: Vec<&Member<'_>> = healthy.iter().collect();
    nodes.push((names::service(svc, d), service_node(&all, ttl, true, l)));
    for proto in ["tcp", "udp"] {
        nodes.push((
            names::rfc2782(svc, proto, d),
            service_node(&all, ttl, false, l),
        ));
    }
    // Named ports: `_<name>._tcp.<service>.service.D`, the members registering that name.
    let ports: BTreeSet<&str> = healthy
        .iter()
        .flat_map(|m| m.instance.ports().iter().map(|(n, _)| n.as_str()))
        .collect();
    for port in ports {
        let members: Vec<(&Member<'_>, Rec)> = healthy
            .iter()
            .filter_map(|m| {
                let (_, p) = m
                    .instance
                    .ports()
                    .iter()
                    .find(|(n, _)| n.as_str() == port)?;
                Some((m, srv_rec_on(svc, d, m.instance, *p, m.addr)))
            })
            .collect();
        nodes.push((names::named_port(port, svc, d), port_node(&members, ttl, l)));
    }
    // Only tags that are DNS labels name a filter; others (the Consul API's `a=b` tags) are
    // kept for the HTTP APIs alone.
    let tags: BTreeSet<&str> = healthy
        .iter()
        .flat_map(|m| m.instance.tags().iter())
        .filter(|t| t.is_label())
        .map(|t| t.as_str())
        .collect();
    for tag in tags {
        let subset: Vec<&Member<'_>> = healthy
            .iter()
            .filter(|m| m.instance.tags().iter().any(|t| t.as_str() == tag))
            .collect();
        nodes.push((
            names::tagged_service(tag, svc, d),
            service_node(&subset, ttl, true, l),
        ));
        // `_svc._tcp` and `_svc._udp` are the protocol forms, never a tag filter.
        if tag != "tcp" && tag != "udp" {
            nodes.push((
                names::rfc2782(svc, tag, d),
                service_node(&subset, ttl, false, l),
            ));
        }
    }
    nodes
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::SystemTime;

    use super::*;
    use crate::dns::table::Settings;
    use crate::model::{Health, Status, testing};

    fn statics() -> Statics {
        let settings = Settings {
            domain: names::from_dotted("internal.").unwrap(),
            ttl: 5,
            negative_ttl: 5,
            include_warning: false,
            max_answers: 0,
            max_udp_payload: 1232,
            locality: Default::default(),
            fail_open: false,
        };
        Statics::new(settings, &[], 1)
    }

    fn entry_of(draft: testing::Draft, status: Status) -> Arc<Entry> {
        Arc::new(Entry {
            instance: draft.build(),
            health: Health::new(status, "", SystemTime::UNIX_EPOCH),
        })
    }

    /// Names and, per name, its record sets (type and RDATA), in a comparable form.
    type Contents = BTreeMap<String, Vec<(u16, u32, Vec<Vec<u8>>, String)>>;

    fn contents(t: &DynamicNames) -> Contents {
        t.iter()
            .map(|(k, n)| {
                let sets = n
                    .rrsets
                    .iter()
                    .map(|s| {
                        (
                            s.rtype,
                            s.ttl,
                            s.records.iter().map(|r| r.rdata.to_vec()).collect(),
                            s.routing_text(),
                        )
                    })
                    .collect();
                (names::to_dotted(k), sets)
            })
            .collect()
    }

    /// A small deterministic pseudo-random sequence (xorshift), so the test is repeatable.
    fn rng(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    #[test]
    fn incremental_updates_match_a_fresh_build() {
        let st = statics();
        let mut b = Builder::default();
        let mut published = Arc::new(Builder::empty_table(&st));
        let mut reader: Option<Arc<Table>> = None;
        let mut snap = Snapshot::default();
        let services = ["web", "api", "db"];
        let tags = ["blue", "green", "tcp"];
        let mut seed = 0x5eed_u64;
        for step in 0..1000u32 {
            let svc = services[(rng(&mut seed) % 3) as usize];
            let id = format!("i{}", rng(&mut seed) % 4);
            // Addresses repeat across services, so PTR sets are shared.
            let addr = format!("10.0.0.{}", rng(&mut seed) % 5);
            let name = ServiceName::parse(svc).unwrap();
            let mut insts: ServiceInstances = snap
                .services
                .get(&name)
                .map(|s| (**s).clone())
                .unwrap_or_default();
            if rng(&mut seed).is_multiple_of(3) {
                insts.remove(&InstanceId::parse(&id).unwrap());
            } else {
                let t: Vec<&str> = tags
                    .iter()
                    .copied()
                    .filter(|_| rng(&mut seed).is_multiple_of(2))
                    .collect();
                let status = if rng(&mut seed).is_multiple_of(4) {
                    Status::Critical
                } else {
                    Status::Passing
                };
                // Vary every input of the names too: port, TTL, metadata.
                let mut d = testing::instance(svc, &id)
                    .address(&addr)
                    .tags(&t)
                    .port(8000 + (rng(&mut seed) % 2) as u16);
                if rng(&mut seed).is_multiple_of(5) {
                    d = d.ttl(5);
                }
                if rng(&mut seed).is_multiple_of(3) {
                    d = d.meta("v", &(rng(&mut seed) % 2).to_string());
                }
                // And the routing inputs: weight, named ports, fail-open.
                d = d.weight(1 + (rng(&mut seed) % 3) as u16);
                if rng(&mut seed).is_multiple_of(3) {
                    d = d.port_named("grpc", 9000 + (rng(&mut seed) % 2) as u16);
                }
                if rng(&mut seed).is_multiple_of(4) {
                    d = d.fail_open();
                }
                insts.insert(entry_of(d, status));
            }
            if insts.is_empty() {
                snap.services.remove(&name);
            } else {
                snap.services.insert(name.clone(), Arc::new(insts));
            }
            b.set_service(&st, &name, snap.services.get(&name).map(|s| &**s));
            let mut fresh = Builder::default();
            fresh.set_all(&st, &snap);
            let want = contents(fresh.names());
            // Publish after most steps (several changes pile up otherwise); now and then a
            // reader still holds the table being swapped out when it is taken back.
            if !step.is_multiple_of(4) {
                if step % 7 == 1 {
                    reader = Some(published.clone());
                } else if step % 7 == 3 {
                    reader = None;
                }
                b.publish(&st, |t| std::mem::replace(&mut published, t));
                assert_eq!(
                    contents(&published.dynamic),
                    want,
                    "step {step}: published table differs from a fresh build"
                );
            }
            assert_eq!(
                contents(b.names()),
                want,
                "step {step}: incremental table differs from a fresh build"
            );
        }
        drop(reader);
        // Everything removed: nothing dynamic remains.
        for svc in services {
            let name = ServiceName::parse(svc).unwrap();
            snap.services.remove(&name);
            b.set_service(&st, &name, None);
        }
        assert!(contents(b.names()).is_empty());
        assert!(b.below.is_empty() && b.reverse.is_empty());
        assert_eq!(
            b.fail_open
                .services
                .load(std::sync::atomic::Ordering::Relaxed),
            0,
            "every fail-open episode ended"
        );
    }
}
