//! Health timing, in one pure place: the health an instance starts with, when a TTL check
//! goes critical unless reported, and when a critical instance is removed
//! (`deregister_after`). `Timers` holds both deadline sets; the writer tells it what changed and
//! asks it what is due, sleeps until its earliest deadline (not a coarse sweep) and fires it.
//! Nothing here reads a clock: the writer passes the time in.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::Entry;
use crate::model::{CheckKind, Health, Instance, InstanceKey, Status};

/// The health a newly registered (or re-checked) instance starts with: passing without a
/// check, critical until its first result with one.
pub(crate) fn initial_health(inst: &Instance, wall: SystemTime) -> Health {
    match &inst.check() {
        None => Health::new(Status::Passing, "registered without a check", wall),
        Some(c) => match c.kind() {
            CheckKind::Ttl(_) => Health::new(Status::Critical, AWAITING_REPORT, wall),
            _ => Health::new(Status::Critical, AWAITING_CHECK, wall),
        },
    }
}

/// The output of a checked instance before its check's first result.
const AWAITING_CHECK: &str = "awaiting first check";
/// The output of a TTL-checked instance before its first report.
const AWAITING_REPORT: &str = "awaiting first ttl report";

/// Whether `health` is a starting health (no check result or report yet), not a result.
pub(crate) fn is_initial(health: &Health) -> bool {
    health.output == AWAITING_CHECK || health.output == AWAITING_REPORT
}

/// The TTL of an instance's TTL check, if it has one.
pub(crate) fn ttl_of(inst: &Instance) -> Option<Duration> {
    match inst.check()?.kind() {
        CheckKind::Ttl(d) => Some(*d),
        _ => None,
    }
}

/// The output of a TTL check that went critical for want of a report.
pub(crate) fn ttl_expired(ttl: Duration) -> String {
    format!(
        "ttl expired: no report within {}",
        humantime::format_duration(ttl)
    )
}

/// Both deadline sets of the registry.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    /// When each TTL-checked instance goes critical unless it reports.
    ttl: Deadlines,
    /// When each critical instance with `deregister_after` is removed.
    reap: Deadlines,
}

impl Timers {
    /// An instance as loaded at start-up (`now`): its TTL runs from the start, and one that
    /// is critical with `deregister_after` is due for removal.
    pub(crate) fn loaded(&mut self, entry: &Entry, now: Instant, wall: SystemTime) {
        if let Some(d) = ttl_of(&entry.instance) {
            self.ttl.set(entry.instance.key().clone(), now + d);
        }
        self.changed(entry, now, wall);
    }

    /// A registration whose check changed (or a new one): the TTL starts over, and so does
    /// `deregister_after`.
    pub(crate) fn check_replaced(&mut self, inst: &Instance, now: Instant) {
        self.reap.remove(inst.key());
        match ttl_of(inst) {
            Some(d) => self.ttl.set(inst.key().clone(), now + d),
            None => self.ttl.remove(inst.key()),
        }
    }

    /// A health report for a TTL check: the TTL starts over.
    pub(crate) fn reported(&mut self, key: &InstanceKey, ttl: Duration, now: Instant) {
        self.ttl.set(key.clone(), now + ttl);
    }

    /// Keeps `deregister_after` in step with `entry`: a critical instance with it, not in
    /// maintenance, is removed that long after it went critical. A deadline already set stays
    /// put while the instance stays critical.
    pub(crate) fn changed(&mut self, entry: &Entry, now: Instant, wall: SystemTime) {
        let key = entry.instance.key();
        let rule = entry.instance.deregister_after().filter(|_| {
            entry.health.status == Status::Critical && entry.instance.maintenance().is_none()
        });
        match rule {
            Some(_) if self.reap.contains(key) => {}
            Some(after) => {
                let critical_for = wall.duration_since(entry.health.since).unwrap_or_default();
                self.reap
                    .set(key.clone(), now + after.saturating_sub(critical_for));
            }
            None => self.reap.remove(key),
        }
    }

    /// An instance removed: no deadline of its stays.
    pub(crate) fn removed(&mut self, key: &InstanceKey) {
        self.ttl.remove(key);
        self.reap.remove(key);
    }

    /// After a failed commit: the deadlines of `key` follow `entry`, the registry as it still
    /// is (a TTL already running keeps running).
    pub(crate) fn resync(
        &mut self,
        key: &InstanceKey,
        entry: Option<&Entry>,
        now: Instant,
        wall: SystemTime,
    ) {
        let Some(e) = entry else {
            self.removed(key);
            return;
        };
        match ttl_of(&e.instance) {
            Some(d) if !self.ttl.contains(key) => self.ttl.set(key.clone(), now + d),
            Some(_) => {}
            None => self.ttl.remove(key),
        }
        self.reap.remove(key);
        self.changed(e, now, wall);
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        match (self.ttl.next(), self.reap.next()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// One instance whose TTL ran out at or before `now`.
    pub(crate) fn pop_expired(&mut self, now: Instant) -> Option<InstanceKey> {
        self.ttl.pop_due(now)
    }

    /// One instance due for removal at or before `now`.
    pub(crate) fn pop_removal(&mut self, now: Instant) -> Option<InstanceKey> {
        self.reap.pop_due(now)
    }

    /// A TTL that ran out on a replica that does not own the instance: asked again at
    /// `until`. Its owner's status write (which restarts it here) normally comes first; if
    /// the owner died, this replica may own it by then.
    pub(crate) fn defer_expiry(&mut self, key: InstanceKey, until: Instant) {
        self.ttl.set(key, until);
    }

    /// A removal due on a replica that does not own the instance: asked again at `until`.
    pub(crate) fn defer_removal(&mut self, key: InstanceKey, until: Instant) {
        self.reap.set(key, until);
    }
}

/// How long a replica that does not own a due deadline waits before asking again: short, so
/// a dead owner's deadlines fire soon after its checks move (a duplicate firing, while the
/// members disagree, is a second write of the same status).
pub(crate) const NOT_OWNER_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Keys ordered by their deadline.
#[derive(Debug, Default)]
pub(crate) struct Deadlines {
    by_key: HashMap<InstanceKey, Instant>,
    by_time: BTreeSet<(Instant, InstanceKey)>,
}

impl Deadlines {
    /// Sets (or moves) the deadline of `key`.
    pub(crate) fn set(&mut self, key: InstanceKey, at: Instant) {
        if let Some(old) = self.by_key.insert(key.clone(), at) {
            self.by_time.remove(&(old, key.clone()));
        }
        self.by_time.insert((at, key));
    }

    pub(crate) fn contains(&self, key: &InstanceKey) -> bool {
        self.by_key.contains_key(key)
    }

    pub(crate) fn remove(&mut self, key: &InstanceKey) {
        if let Some(old) = self.by_key.remove(key) {
            self.by_time.remove(&(old, key.clone()));
        }
    }

    /// The earliest pending deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.by_time.first().map(|(t, _)| *t)
    }

    /// Removes and returns one key whose deadline is at or before `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<InstanceKey> {
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
