//! Deadlines: when a TTL check goes critical unless reported, and when a critical instance is
//! removed (`deregister_after`). `Deadlines` is the pure set, ordered by time; the registry's
//! writer sleeps until its earliest entry (not a coarse sweep) and fires what is due.

use std::collections::{BTreeSet, HashMap};

use tokio::time::Instant;

use crate::model::InstanceKey;

/// When each TTL-checked instance goes critical unless it reports first.
#[derive(Debug, Default)]
pub struct Deadlines {
    by_key: HashMap<InstanceKey, Instant>,
    by_time: BTreeSet<(Instant, InstanceKey)>,
}

impl Deadlines {
    /// Sets (or moves) the deadline of `key`.
    pub fn set(&mut self, key: InstanceKey, at: Instant) {
        if let Some(old) = self.by_key.insert(key.clone(), at) {
            self.by_time.remove(&(old, key.clone()));
        }
        self.by_time.insert((at, key));
    }

    pub fn contains(&self, key: &InstanceKey) -> bool {
        self.by_key.contains_key(key)
    }

    pub fn remove(&mut self, key: &InstanceKey) {
        if let Some(old) = self.by_key.remove(key) {
            self.by_time.remove(&(old, key.clone()));
        }
    }

    /// The earliest pending deadline.
    pub fn next(&self) -> Option<Instant> {
        self.by_time.first().map(|(t, _)| *t)
    }

    /// Removes and returns one key whose deadline is at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<InstanceKey> {
        let (t, _) = self.by_time.first()?;
        if *t > now {
            return None;
        }
        let (_, key) = self.by_time.pop_first()?;
        self.by_key.remove(&key);
        Some(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{InstanceId, ServiceName};
    use std::time::Duration;

    fn key(id: &str) -> InstanceKey {
        InstanceKey {
            service: ServiceName::parse("web").unwrap(),
            id: InstanceId::parse(id).unwrap(),
        }
    }

    #[test]
    fn earliest_first_and_moves_replace() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        d.set(key("a"), t0 + Duration::from_secs(10));
        d.set(key("b"), t0 + Duration::from_secs(5));
        assert_eq!(d.next(), Some(t0 + Duration::from_secs(5)));
        d.set(key("b"), t0 + Duration::from_secs(20)); // a report pushes b back
        assert_eq!(d.next(), Some(t0 + Duration::from_secs(10)));
        assert_eq!(d.pop_due(t0 + Duration::from_secs(9)), None);
        assert_eq!(d.pop_due(t0 + Duration::from_secs(10)), Some(key("a")));
        d.remove(&key("b"));
        assert_eq!(d.next(), None);
        assert_eq!(d.pop_due(t0 + Duration::from_secs(100)), None);
    }
}
