//! `Snapshot`: one immutable, complete view of the registry at one index.
//!
//! Readers (HTTP handlers, the DNS view builder) hold an `Arc<Snapshot>` and never lock.
//! The services are a persistent `imbl` map: a copy is O(1) and a change copies only the path
//! to the service it touched, so the writer's cost per change does not grow with the
//! registry. Each service's instances are a sorted vector, copied whole on a change: that
//! grows with the service, as rebuilding its DNS answers does anyway, and at 25,000 small
//! services a vector took a quarter of the memory of a persistent map's first node.

use std::sync::Arc;

use crate::model::{Health, Instance, InstanceId, InstanceKey, ServiceName, Status};

/// An instance with its current health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub instance: Instance,
    pub health: Health,
}

impl Entry {
    /// Whether DNS hands this instance out: healthy enough and not in maintenance.
    pub fn in_service(&self, include_warning: bool) -> bool {
        self.instance.maintenance.is_none()
            && match self.health.status {
                Status::Passing => true,
                Status::Warning => include_warning,
                Status::Critical => false,
            }
    }
}

/// The instances of one service, ordered by id, each id once. The id is the entry's own
/// (`entry.instance.key.id`), not stored beside it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceInstances(Vec<Arc<Entry>>);

type Iter<'a> = std::iter::Map<
    std::slice::Iter<'a, Arc<Entry>>,
    fn(&'a Arc<Entry>) -> (&'a InstanceId, &'a Arc<Entry>),
>;

fn id_of(e: &Arc<Entry>) -> &InstanceId {
    &e.instance.key.id
}

impl ServiceInstances {
    /// Where `id` is, or where it would go.
    fn find(&self, id: &InstanceId) -> Result<usize, usize> {
        self.0.binary_search_by(|e| id_of(e).cmp(id))
    }

    pub fn get(&self, id: &InstanceId) -> Option<&Arc<Entry>> {
        self.find(id).ok().map(|at| &self.0[at])
    }

    /// Sets the entry of its instance's id; the entry it replaced, if any.
    pub fn insert(&mut self, entry: Arc<Entry>) -> Option<Arc<Entry>> {
        match self.find(id_of(&entry)) {
            Ok(at) => Some(std::mem::replace(&mut self.0[at], entry)),
            Err(at) => {
                self.0.insert(at, entry);
                None
            }
        }
    }

    pub fn remove(&mut self, id: &InstanceId) -> Option<Arc<Entry>> {
        self.find(id).ok().map(|at| self.0.remove(at))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `(id, entry)` in id order.
    pub fn iter(&self) -> Iter<'_> {
        self.0.iter().map(|e| (id_of(e), e))
    }

    /// Entries in id order.
    pub fn values(&self) -> impl Iterator<Item = &Arc<Entry>> {
        self.0.iter()
    }

    /// Frees spare capacity (after a bulk load).
    pub(super) fn shrink_to_fit(&mut self) {
        self.0.shrink_to_fit();
    }
}

impl<'a> IntoIterator for &'a ServiceInstances {
    type Item = (&'a InstanceId, &'a Arc<Entry>);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The registry index this snapshot reflects.
    pub index: u64,
    pub services: imbl::OrdMap<ServiceName, Arc<ServiceInstances>>,
}

impl Snapshot {
    pub fn get(&self, key: &InstanceKey) -> Option<&Arc<Entry>> {
        self.services.get(&key.service)?.get(&key.id)
    }

    /// Every entry, ordered by service then id.
    pub fn entries(&self) -> impl Iterator<Item = &Arc<Entry>> {
        self.services.values().flat_map(|s| s.values())
    }

    /// Replaces (or with `None` removes) one entry.
    pub(super) fn set(&mut self, key: &InstanceKey, entry: Option<Arc<Entry>>) {
        // A copy with room for one more, so an insert does not double the capacity.
        let mut svc = match self.services.get(&key.service) {
            Some(s) => {
                let mut v = Vec::with_capacity(s.len() + 1);
                v.extend(s.0.iter().cloned());
                ServiceInstances(v)
            }
            None => ServiceInstances::default(),
        };
        match entry {
            Some(e) => {
                svc.insert(e);
            }
            None => {
                svc.remove(&key.id);
            }
        }
        if svc.is_empty() {
            self.services.remove(&key.service);
        } else {
            self.services.insert(key.service.clone(), Arc::new(svc));
        }
    }
}
