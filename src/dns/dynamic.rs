//! The registry's part of the name table, kept up to date one service at a time.
//!
//! A change of one instance rebuilds only its service's names (service, tags, RFC 2782,
//! instance names) and the reverse names of the addresses involved, then updates a persistent
//! (`imbl`) map: the new table shares every untouched node with the previous one, so the cost
//! of a change grows with the size of its service, not of the registry. Empty non-terminals
//! (`web.instance.D`, `_blue.service.D`) are kept by counting the names below them.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use super::names;
use super::table::{
    self, DynamicNames, Node, PTR, RRSet, Rec, Statics, TXT, Table, addr_rec, addr_type,
    service_node,
};
use crate::model::ServiceName;
use crate::registry::{Entry, ServiceInstances, Snapshot};

/// What one service put into the table, so its next change can take it out.
#[derive(Default)]
struct Produced {
    /// Owner names under the base domain.
    names: Vec<Box<[u8]>>,
    /// (address, instance name) pairs behind the PTR answers.
    addresses: Vec<(IpAddr, Box<[u8]>)>,
}

/// The mutable side of the dynamic names; only the registry writer touches it (through
/// `DnsView::publish`), and each publish hands readers an immutable `Table`.
#[derive(Default)]
pub struct Builder {
    dynamic: DynamicNames,
    /// For each name above a registry name (up to the base domain): how many registry names
    /// lie below it. While positive, the name exists (as an empty non-terminal if nothing
    /// else is there).
    below: HashMap<Box<[u8]>, usize>,
    produced: HashMap<ServiceName, Produced>,
    /// Instance names per registered address, across services.
    reverse: HashMap<IpAddr, BTreeSet<Box<[u8]>>>,
}

fn empty_non_terminal() -> Arc<Node> {
    Arc::new(Node {
        zone: 0,
        rrsets: Vec::new(),
    })
}

impl Builder {
    /// Brings the table in line with the whole snapshot (start-up).
    pub fn set_all(&mut self, statics: &Statics, snap: &Snapshot) {
        let gone: Vec<ServiceName> = self
            .produced
            .keys()
            .filter(|s| !snap.services.contains_key(*s))
            .cloned()
            .collect();
        for svc in gone {
            self.set_service(statics, &svc, None);
        }
        for (svc, instances) in &snap.services {
            self.set_service(statics, svc, Some(instances));
        }
    }

    /// Replaces everything `svc` contributes with what `instances` (none: deregistered) make.
    pub fn set_service(
        &mut self,
        statics: &Statics,
        svc: &ServiceName,
        instances: Option<&ServiceInstances>,
    ) {
        let mut touched: BTreeSet<IpAddr> = BTreeSet::new();
        if let Some(old) = self.produced.remove(svc) {
            for name in &old.names {
                self.remove_name(statics, name);
            }
            for (addr, target) in old.addresses {
                if let Some(set) = self.reverse.get_mut(&addr) {
                    set.remove(&target);
                }
                touched.insert(addr);
            }
        }
        if let Some(instances) = instances.filter(|i| !i.is_empty()) {
            let (nodes, addresses) = build_service(&statics.settings, svc.as_str(), instances);
            let mut produced = Produced {
                names: Vec::with_capacity(nodes.len()),
                addresses,
            };
            for (name, node) in nodes {
                self.insert_name(statics, name.clone(), node);
                produced.names.push(name);
            }
            for (addr, target) in &produced.addresses {
                self.reverse
                    .entry(*addr)
                    .or_default()
                    .insert(target.clone());
                touched.insert(*addr);
            }
            self.produced.insert(svc.clone(), produced);
        }
        for addr in touched {
            self.refresh_reverse(statics, addr);
        }
    }

    /// The table readers get: statics plus the current dynamic map (shared, not copied).
    pub fn table(&self, statics: &Statics) -> Table {
        Table {
            settings: statics.settings.clone(),
            zones: statics.zones.clone(),
            apexes: statics.apexes.clone(),
            statics: statics.names.clone(),
            dynamic: self.dynamic.clone(),
        }
    }

    /// The names strictly between `name` and the base domain.
    fn ancestors<'n>(statics: &Statics, name: &'n [u8]) -> impl Iterator<Item = &'n [u8]> {
        let d = statics.settings.domain.len();
        names::suffixes(name)
            .skip(1)
            .take_while(move |s| s.len() > d)
    }

    fn insert_name(&mut self, statics: &Statics, name: Box<[u8]>, node: Node) {
        let within = names::is_within(&name, &statics.settings.domain);
        self.dynamic.insert(name.clone(), Arc::new(node));
        if !within {
            return;
        }
        for anc in Self::ancestors(statics, &name) {
            let count = self.below.entry(anc.into()).or_insert(0);
            *count += 1;
            if *count == 1 && !self.dynamic.contains_key(anc) && !statics.names.contains_key(anc) {
                self.dynamic.insert(anc.into(), empty_non_terminal());
            }
        }
    }

    fn remove_name(&mut self, statics: &Statics, name: &[u8]) {
        self.dynamic.remove(name);
        if !names::is_within(name, &statics.settings.domain) {
            return;
        }
        if self.below.get(name).is_some_and(|c| *c > 0) && !statics.names.contains_key(name) {
            // Still has names below: it stays, as an empty non-terminal.
            self.dynamic.insert(name.into(), empty_non_terminal());
        }
        for anc in Self::ancestors(statics, name) {
            let Some(count) = self.below.get_mut(anc) else {
                continue;
            };
            *count -= 1;
            if *count == 0 {
                self.below.remove(anc);
                if self.dynamic.get(anc).is_some_and(|n| n.rrsets.is_empty()) {
                    self.dynamic.remove(anc);
                }
            }
        }
    }

    /// Rebuilds (or removes) the PTR node of `addr`.
    fn refresh_reverse(&mut self, statics: &Statics, addr: IpAddr) {
        let key = names::reverse(addr);
        match self.reverse.get(&addr) {
            Some(targets) if !targets.is_empty() => {
                let recs = targets
                    .iter()
                    .map(|t| Rec {
                        rdata: t.clone(),
                        glue: None,
                    })
                    .collect();
                let node = Node {
                    zone: statics.reverse_zones[usize::from(addr.is_ipv6())],
                    rrsets: vec![RRSet::fixed(PTR, statics.settings.ttl, recs)],
                };
                self.dynamic.insert(key, Arc::new(node));
            }
            _ => {
                self.reverse.remove(&addr);
                self.dynamic.remove(&key);
            }
        }
    }
}

/// Every name one service answers for, and its (address, instance name) pairs.
#[allow(clippy::type_complexity)]
fn build_service(
    s: &table::Settings,
    svc: &str,
    instances: &ServiceInstances,
) -> (Vec<(Box<[u8]>, Node)>, Vec<(IpAddr, Box<[u8]>)>) {
    let d = &s.domain[..];
    let ttl = instances
        .values()
        .filter_map(|e| e.instance.ttl)
        .min()
        .unwrap_or(s.ttl);
    let mut nodes = Vec::with_capacity(instances.len() + 4);
    let mut addresses = Vec::with_capacity(instances.len());
    for e in instances.values() {
        let i = &e.instance;
        let target = names::instance(i.key.id.as_str(), svc, d);
        let mut rrsets = vec![RRSet::fixed(
            addr_type(i.address),
            ttl,
            vec![addr_rec(i.address)],
        )];
        if !i.meta.is_empty() {
            let recs = i
                .meta
                .iter()
                .map(|(k, v)| {
                    let kv = format!("{k}={v}");
                    let mut r = Vec::with_capacity(kv.len() + 1);
                    r.push(kv.len() as u8); // validated to fit 255 bytes
                    r.extend_from_slice(kv.as_bytes());
                    Rec {
                        rdata: r.into_boxed_slice(),
                        glue: None,
                    }
                })
                .collect();
            rrsets.push(RRSet::fixed(TXT, ttl, recs));
        }
        addresses.push((i.address, target.clone()));
        nodes.push((target, Node { zone: 0, rrsets }));
    }
    let healthy: Vec<&Entry> = instances
        .values()
        .map(|e| &**e)
        .filter(|e| e.in_service(s.include_warning))
        .collect();
    if healthy.is_empty() {
        return (nodes, addresses);
    }
    nodes.push((
        names::service(svc, d),
        service_node(svc, d, &healthy, ttl, true),
    ));
    for proto in ["tcp", "udp"] {
        nodes.push((
            names::rfc2782(svc, proto, d),
            service_node(svc, d, &healthy, ttl, false),
        ));
    }
    let tags: BTreeSet<&str> = healthy
        .iter()
        .flat_map(|e| e.instance.tags.iter().map(|t| t.as_str()))
        .collect();
    for tag in tags {
        let subset: Vec<&Entry> = healthy
            .iter()
            .copied()
            .filter(|e| e.instance.tags.iter().any(|t| t.as_str() == tag))
            .collect();
        nodes.push((
            names::tagged_service(tag, svc, d),
            service_node(svc, d, &subset, ttl, true),
        ));
        // `_svc._tcp` and `_svc._udp` are the protocol forms, never a tag filter.
        if tag != "tcp" && tag != "udp" {
            nodes.push((
                names::rfc2782(svc, tag, d),
                service_node(svc, d, &subset, ttl, false),
            ));
        }
    }
    (nodes, addresses)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::SystemTime;

    use super::*;
    use crate::dns::table::Settings;
    use crate::model::{Health, Instance, InstanceId, InstanceKey, Status, Tag};

    fn statics() -> Statics {
        let settings = Settings {
            domain: names::from_dotted("internal.").unwrap(),
            ttl: 5,
            negative_ttl: 5,
            include_warning: false,
            max_answers: 0,
        };
        Statics::new(settings, &[], 1)
    }

    fn entry(svc: &str, id: &str, addr: &str, tags: &[&str], status: Status) -> Arc<Entry> {
        Arc::new(Entry {
            instance: Instance {
                key: InstanceKey {
                    service: ServiceName::parse(svc).unwrap(),
                    id: InstanceId::parse(id).unwrap(),
                },
                address: addr.parse().unwrap(),
                port: 80,
                tags: tags.iter().map(|t| Tag::parse(t).unwrap()).collect(),
                meta: BTreeMap::new(),
                weight: 1,
                priority: 0,
                ttl: None,
                check: None,
                deregister_after: None,
                maintenance: None,
            },
            health: Health::new(status, "", SystemTime::UNIX_EPOCH),
        })
    }

    /// Names and, per name, its record sets (type and RDATA), in a comparable form.
    type Contents = BTreeMap<String, Vec<(u16, Vec<Vec<u8>>)>>;

    fn contents(t: &Table) -> Contents {
        t.dynamic
            .iter()
            .map(|(k, n)| {
                let sets = n
                    .rrsets
                    .iter()
                    .map(|s| {
                        (
                            s.rtype,
                            s.records.iter().map(|r| r.rdata.to_vec()).collect(),
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
        let mut snap = Snapshot::default();
        let services = ["web", "api", "db"];
        let tags = ["blue", "green", "tcp"];
        let mut seed = 0x5eed_u64;
        for step in 0..400 {
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
                insts.insert(
                    InstanceId::parse(&id).unwrap(),
                    entry(svc, &id, &addr, &t, status),
                );
            }
            if insts.is_empty() {
                snap.services.remove(&name);
            } else {
                snap.services.insert(name.clone(), Arc::new(insts));
            }
            b.set_service(&st, &name, snap.services.get(&name).map(|s| &**s));
            let mut fresh = Builder::default();
            fresh.set_all(&st, &snap);
            assert_eq!(
                contents(&b.table(&st)),
                contents(&fresh.table(&st)),
                "step {step}: incremental table differs from a fresh build"
            );
        }
        // Everything removed: nothing dynamic remains.
        for svc in services {
            let name = ServiceName::parse(svc).unwrap();
            snap.services.remove(&name);
            b.set_service(&st, &name, None);
        }
        assert!(contents(&b.table(&st)).is_empty());
        assert!(b.below.is_empty() && b.reverse.is_empty());
    }
}
