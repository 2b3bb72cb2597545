//! `Snapshot`: one immutable, complete view of the registry at one index.
//!
//! Readers (HTTP handlers, the DNS view builder) hold an `Arc<Snapshot>` and never lock.
//! Both levels (services, and each service's instances) are persistent `imbl` maps: a copy
//! is O(1) and a change copies only the path to what it touched, so the writer's cost per
//! change does not grow with the registry.

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

/// The instances of one service, ordered by id.
pub type ServiceInstances = imbl::OrdMap<InstanceId, Arc<Entry>>;

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
        let mut svc: ServiceInstances = self
            .services
            .get(&key.service)
            .map(|s| (**s).clone())
            .unwrap_or_default();
        match entry {
            Some(e) => {
                svc.insert(key.id.clone(), e);
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
