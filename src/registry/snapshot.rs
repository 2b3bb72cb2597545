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
    /// The instance as registered (durable), with its maintenance mode.
    pub instance: Instance,
    /// Its current health (not stored: kept by the registry).
    pub health: Health,
}

impl Entry {
    /// Whether DNS hands this instance out: healthy enough and not in maintenance.
    pub fn in_service(&self, include_warning: bool) -> bool {
        self.instance.maintenance().is_none()
            && match self.health.status {
                Status::Passing => true,
                Status::Warning => include_warning,
                Status::Critical => false,
            }
    }
}

/// The instances of one service, ordered by id, each id once (the id is the entry's own,
/// not stored beside it), and the registry index of the service's last change: a long-poll
/// on the service waits for that, not for every change anywhere.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ServiceInstances {
    entries: Vec<Arc<Entry>>,
    changed: u64,
}

type Iter<'a> = std::iter::Map<
    std::slice::Iter<'a, Arc<Entry>>,
    fn(&'a Arc<Entry>) -> (&'a InstanceId, &'a Arc<Entry>),
>;

fn id_of(e: &Arc<Entry>) -> &InstanceId {
    &e.instance.key().id
}

impl ServiceInstances {
    /// Where `id` is, or where it would go.
    fn find(&self, id: &InstanceId) -> Result<usize, usize> {
        self.entries.binary_search_by(|e| id_of(e).cmp(id))
    }

    pub(crate) fn get(&self, id: &InstanceId) -> Option<&Arc<Entry>> {
        self.find(id).ok().map(|at| &self.entries[at])
    }

    /// Sets the entry of its instance's id; the entry it replaced, if any.
    pub(crate) fn insert(&mut self, entry: Arc<Entry>) -> Option<Arc<Entry>> {
        match self.find(id_of(&entry)) {
            Ok(at) => Some(std::mem::replace(&mut self.entries[at], entry)),
            Err(at) => {
                self.entries.insert(at, entry);
                None
            }
        }
    }

    pub(crate) fn remove(&mut self, id: &InstanceId) -> Option<Arc<Entry>> {
        self.find(id).ok().map(|at| self.entries.remove(at))
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `(id, entry)` in id order.
    pub(crate) fn iter(&self) -> Iter<'_> {
        self.entries.iter().map(|e| (id_of(e), e))
    }

    /// Entries in id order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &Arc<Entry>> {
        self.entries.iter()
    }

    /// Frees spare capacity and stamps the index (after a bulk load).
    pub(super) fn loaded(&mut self, index: u64) {
        self.entries.shrink_to_fit();
        self.changed = index;
    }
}

impl<'a> IntoIterator for &'a ServiceInstances {
    type Item = (&'a InstanceId, &'a Arc<Entry>);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// The registry at one index: every instance with its health, by service. Immutable once
/// published; views rebuild from it and readers share it.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The registry index this snapshot reflects.
    pub(crate) index: u64,
    pub(crate) services: imbl::OrdMap<ServiceName, Arc<ServiceInstances>>,
    /// The index at which a service last disappeared (its last instance removed): what a
    /// long-poll on a service that is not there waits past. One number for all, not a
    /// tombstone per name: such a watch wakes on any service's removal, a rare event.
    removed: u64,
}

impl Snapshot {
    pub(crate) fn get(&self, key: &InstanceKey) -> Option<&Arc<Entry>> {
        self.services.get(&key.service)?.get(&key.id)
    }

    /// The index of the last change of `service`'s instances (or of the last removal of a
    /// whole service, when it has none): a long-poll's result changed iff this passed its
    /// index.
    pub(crate) fn service_index(&self, service: &ServiceName) -> u64 {
        self.services
            .get(service)
            .map_or(self.removed, |s| s.changed)
    }

    /// Gives the changes of this batch, made at the indexes counted while it was applied,
    /// the index the store assigned it instead (`before`: the index the batch started from).
    pub(super) fn reindex(&mut self, keys: &[InstanceKey], before: u64, index: u64) {
        for key in keys {
            if let Some(s) = self.services.get_mut(&key.service)
                && s.changed > before
                && s.changed != index
            {
                Arc::make_mut(s).changed = index;
            }
        }
        if self.removed > before {
            self.removed = index;
        }
        self.index = index;
    }

    /// Every entry, ordered by service then id.
    pub(crate) fn entries(&self) -> impl Iterator<Item = &Arc<Entry>> {
        self.services.values().flat_map(|s| s.values())
    }

    /// Replaces (or with `None` removes) one entry.
    pub(super) fn set(&mut self, key: &InstanceKey, entry: Option<Arc<Entry>>) {
        // A copy with room for one more, so an insert does not double the capacity.
        let mut svc = match self.services.get(&key.service) {
            Some(s) => {
                let mut v = Vec::with_capacity(s.len() + 1);
                v.extend(s.entries.iter().cloned());
                ServiceInstances {
                    entries: v,
                    changed: self.index,
                }
            }
            None => ServiceInstances {
                entries: Vec::new(),
                changed: self.index,
            },
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
            if self.services.remove(&key.service).is_some() {
                self.removed = self.index;
            }
        } else {
            self.services.insert(key.service.clone(), Arc::new(svc));
        }
    }
}
