//! The map of the registry's DNS names (`DynamicNames`): owner name → node, each entry
//! keeping its name's hash.
//!
//! The builder (`dynamic.rs`) keeps two copies of this map and replays every change into the
//! second; while the registry grows, the maps also double again and again. With the hash
//! stored beside the name, neither the replay nor a growth step hashes a name again: at
//! 100,000 instances those rehashes were ~6 % of a registration's CPU (profiled). The cost
//! is 8 bytes per entry. Every map and change log uses the one process-wide hasher
//! (`hash_name`), so a hash computed once is good for both copies.
//!
//! Queries look names up with `get`: one hash of the name asked and a probe, as before.

use std::hash::BuildHasher;
use std::sync::{Arc, LazyLock};

use super::table::Node;

/// The names' hasher: foldhash, seeded per process. Names are hashed on every query; SipHash
/// was a fifth of a miss's instructions. Clients choose the names looked up but not the
/// names stored, so they cannot build long collision chains.
static HASHER: LazyLock<foldhash::fast::RandomState> = LazyLock::new(Default::default);

/// The hash every `DynamicNames` files `name` under.
pub(crate) fn hash_name(name: &[u8]) -> u64 {
    HASHER.hash_one(name)
}

#[derive(Clone)]
struct Slot {
    hash: u64,
    name: Arc<[u8]>,
    node: Arc<Node>,
}

/// Owner name (lower-case wire form) → node. Keys and nodes are reference-counted: the
/// builder's two copies of the map and its change log share them.
#[derive(Clone, Default)]
pub(crate) struct DynamicNames {
    slots: hashbrown::HashTable<Slot>,
}

impl DynamicNames {
    pub(crate) fn get(&self, name: &[u8]) -> Option<&Arc<Node>> {
        let hash = hash_name(name);
        self.slots
            .find(hash, |s| s.hash == hash && *s.name == *name)
            .map(|s| &s.node)
    }

    pub(crate) fn contains_key(&self, name: &[u8]) -> bool {
        self.get(name).is_some()
    }

    /// Sets `name` (whose hash is `hash`) to `node`.
    pub(crate) fn insert_hashed(&mut self, hash: u64, name: Arc<[u8]>, node: Arc<Node>) {
        match self
            .slots
            .find_mut(hash, |s| s.hash == hash && *s.name == *name)
        {
            Some(s) => s.node = node,
            None => {
                self.slots
                    .insert_unique(hash, Slot { hash, name, node }, |s| s.hash);
            }
        }
    }

    /// Removes `name` (whose hash is `hash`); the stored name, if it was there.
    pub(crate) fn remove_hashed(&mut self, hash: u64, name: &[u8]) -> Option<Arc<[u8]>> {
        let entry = self
            .slots
            .find_entry(hash, |s| s.hash == hash && *s.name == *name)
            .ok()?;
        Some(entry.remove().0.name)
    }

    pub(crate) fn reserve(&mut self, additional: usize) {
        self.slots.reserve(additional, |s| s.hash);
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Arc<[u8]>, &Arc<Node>)> {
        self.slots.iter().map(|s| (&s.name, &s.node))
    }
}

impl std::fmt::Debug for DynamicNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(k, v)| (super::names::to_dotted(k), v)))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::table::RRSets;

    fn node(zone: usize) -> Arc<Node> {
        Arc::new(Node {
            zone,
            rrsets: RRSets::new(),
        })
    }

    #[test]
    fn set_replace_remove_and_grow() {
        let mut m = DynamicNames::default();
        let names: Vec<Arc<[u8]>> = (0..5000)
            .map(|i| Arc::from(format!("\x05n{i:04}\x00").into_bytes()))
            .collect();
        for (i, n) in names.iter().enumerate() {
            m.insert_hashed(hash_name(n), n.clone(), node(i));
        }
        assert_eq!(m.len(), 5000);
        // Replacing keeps one entry per name.
        m.insert_hashed(hash_name(&names[7]), names[7].clone(), node(99_999));
        assert_eq!(m.len(), 5000);
        assert_eq!(m.get(&names[7]).unwrap().zone, 99_999);
        // A copy looks up the same (one hasher for every map).
        let copy = m.clone();
        for (i, n) in names.iter().enumerate().skip(8) {
            assert_eq!(copy.get(n).unwrap().zone, i);
        }
        for n in &names[..2500] {
            assert_eq!(m.remove_hashed(hash_name(n), n).as_deref(), Some(&**n));
            assert_eq!(m.remove_hashed(hash_name(n), n), None);
        }
        assert_eq!(m.len(), 2500);
        assert!(!m.contains_key(&names[0]) && m.contains_key(&names[2500]));
        assert!(m.get(b"\x07missing\x00").is_none());
        assert_eq!(m.iter().count(), 2500);
    }
}
