//! The registry: the one writer of registrations and health.
//!
//! Every change goes through `Registry`: it is validated against the current state, persisted
//! through the store `Backend` (durable before the caller sees success), applied to a copy of
//! the current `Snapshot`, handed to every `View` (the DNS name table) and only then published
//! and announced by bumping the index. So once a write returns, the very next DNS answer and
//! HTTP read see it, and a failed write changes nothing.

mod snapshot;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::{Mutex, Notify, watch};
use tokio::time::Instant;

use crate::health::timers::Deadlines;
use crate::model::{CheckKind, CheckSpec, Health, Instance, InstanceKey, Maintenance, Status};
use crate::store::{Backend, Change, StoreError};

pub use snapshot::{Entry, ServiceInstances, Snapshot};

/// A failed registry operation; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("instance {0} is not registered")]
    NotFound(InstanceKey),
    #[error("instance {0} has no ttl check: its health comes from {1}")]
    NoTtlCheck(InstanceKey, &'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a published snapshot changed.
#[derive(Debug, Clone, Copy)]
pub enum Changed<'a> {
    /// Everything (the first snapshot, loaded from the store).
    All,
    /// One instance: registered, replaced, deregistered, or its health or maintenance.
    One(&'a InstanceKey),
}

/// Something rebuilt from every new snapshot before it is published (the DNS name table,
/// the checker). `publish` runs on the writer's path, so it must not block.
pub trait View: Send + Sync + 'static {
    fn publish(&self, snapshot: &Snapshot, changed: Changed<'_>);
}

/// State only the writer touches, behind the writer lock.
struct Writer {
    backend: Arc<dyn Backend>,
    /// The snapshot being built on; equal to `Registry::current` between writes.
    snapshot: Snapshot,
    /// When each TTL-checked instance goes critical unless it reports.
    ttl: Deadlines,
    /// When each critical instance with `deregister_after` is removed.
    reap: Deadlines,
}

pub struct Registry {
    /// The writer lock: held across persist + apply + publish so changes are totally ordered.
    writer: Mutex<Writer>,
    /// The published snapshot. Written only under the writer lock; read lock-free by anyone.
    current: ArcSwap<Snapshot>,
    /// The index of `current`, for long-polls to wait on. Sent after `current` is stored.
    index: watch::Sender<u64>,
    /// Rebuilt from each snapshot before it is published.
    views: Vec<Arc<dyn View>>,
    /// Woken when the earliest deadline may have moved earlier (the timers task sleeps on it).
    deadlines_changed: Notify,
}

fn now() -> SystemTime {
    SystemTime::now()
}

/// The health a newly registered (or changed) instance starts with.
fn initial_health(inst: &Instance) -> Health {
    match &inst.check {
        None => Health::new(Status::Passing, "registered without a check", now()),
        Some(c) => match c.kind {
            CheckKind::Ttl(_) => Health::new(Status::Critical, "awaiting first ttl report", now()),
            _ => Health::new(Status::Critical, "awaiting first check", now()),
        },
    }
}

fn ttl_of(inst: &Instance) -> Option<Duration> {
    match inst.check.as_ref()?.kind {
        CheckKind::Ttl(d) => Some(d),
        _ => None,
    }
}

/// Keeps `reap` in step with `entry`: a critical instance with `deregister_after`, not in
/// maintenance, is removed that long after it went critical. A deadline already set stays
/// put while the instance stays critical. Returns whether a deadline is set.
fn sync_reap(reap: &mut Deadlines, entry: &Entry) -> bool {
    let key = &entry.instance.key;
    let rule = entry.instance.deregister_after.filter(|_| {
        entry.health.status == Status::Critical && entry.instance.maintenance.is_none()
    });
    match rule {
        Some(_) if reap.contains(key) => true,
        Some(after) => {
            let critical_for = now().duration_since(entry.health.since).unwrap_or_default();
            reap.set(
                key.clone(),
                Instant::now() + after.saturating_sub(critical_for),
            );
            true
        }
        _ => {
            reap.remove(key);
            false
        }
    }
}

impl Registry {
    /// Loads every registration from `backend` and publishes the first snapshot.
    /// Health is not stored: instances with a check start critical until it passes.
    pub fn open(
        backend: Arc<dyn Backend>,
        views: Vec<Arc<dyn View>>,
    ) -> Result<Arc<Self>, StoreError> {
        let loaded = backend.load()?;
        let mut snapshot = Snapshot {
            index: loaded.index,
            ..Snapshot::default()
        };
        let mut ttl = Deadlines::default();
        let mut reap = Deadlines::default();
        let start = Instant::now();
        for inst in loaded.instances {
            if let Some(d) = ttl_of(&inst) {
                ttl.set(inst.key.clone(), start + d);
            }
            let health = initial_health(&inst);
            let key = inst.key.clone();
            let entry = Entry {
                instance: inst,
                health,
            };
            sync_reap(&mut reap, &entry);
            snapshot.set(&key, Some(Arc::new(entry)));
        }
        for v in &views {
            v.publish(&snapshot, Changed::All);
        }
        let (index, _) = watch::channel(snapshot.index);
        Ok(Arc::new(Self {
            current: ArcSwap::from_pointee(snapshot.clone()),
            writer: Mutex::new(Writer {
                backend,
                snapshot,
                ttl,
                reap,
            }),
            index,
            views,
            deadlines_changed: Notify::new(),
        }))
    }

    /// The current snapshot; never blocks.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// A receiver of the index, to wait for changes (long-poll).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.index.subscribe()
    }

    /// Rebuilds views and publishes `w.snapshot` (its index already bumped) after a change of
    /// `key`. Caller holds the lock.
    fn publish(&self, w: &mut Writer, key: &InstanceKey) {
        for v in &self.views {
            v.publish(&w.snapshot, Changed::One(key));
        }
        let index = w.snapshot.index;
        self.current.store(Arc::new(w.snapshot.clone()));
        self.index.send_replace(index);
    }

    /// Stores `entry` at the next index (already persisted, or health which is not stored),
    /// keeps its deadlines in step, and publishes.
    fn apply(&self, w: &mut Writer, entry: Arc<Entry>) {
        if sync_reap(&mut w.reap, &entry) {
            self.deadlines_changed.notify_one();
        }
        w.snapshot.index += 1;
        let key = entry.instance.key.clone();
        w.snapshot.set(&key, Some(entry));
        self.publish(w, &key);
    }

    /// Persists `change` at the next index. Blocking I/O runs on the blocking pool so the
    /// async workers keep serving DNS and HTTP.
    async fn persist(w: &Writer, change: Change) -> Result<(), StoreError> {
        let backend = w.backend.clone();
        let index = w.snapshot.index + 1;
        tokio::task::spawn_blocking(move || backend.apply(&[change], index))
            .await
            .map_err(|e| StoreError::Write(format!("store task failed: {e}")))?
    }

    /// Registers or replaces an instance. A replacement keeps its maintenance mode, and keeps
    /// its health when its check did not change.
    pub async fn register(&self, mut inst: Instance) -> Result<Arc<Entry>, RegistryError> {
        let mut w = self.writer.lock().await;
        let old = w.snapshot.get(&inst.key).cloned();
        if let Some(old) = &old {
            inst.maintenance = old.instance.maintenance.clone();
        }
        let check_changed = old.as_ref().is_none_or(|o| o.instance.check != inst.check);
        let health = match &old {
            Some(o) if !check_changed => o.health.clone(),
            _ => initial_health(&inst),
        };
        Self::persist(&w, Change::Put(Box::new(inst.clone()))).await?;
        if check_changed {
            match ttl_of(&inst) {
                Some(d) => {
                    w.ttl.set(inst.key.clone(), Instant::now() + d);
                    self.deadlines_changed.notify_one();
                }
                None => w.ttl.remove(&inst.key),
            }
        }
        let entry = Arc::new(Entry {
            instance: inst,
            health,
        });
        self.apply(&mut w, entry.clone());
        Ok(entry)
    }

    /// Removes an instance; `NotFound` when it is not registered.
    pub async fn deregister(&self, key: &InstanceKey) -> Result<(), RegistryError> {
        let mut w = self.writer.lock().await;
        if w.snapshot.get(key).is_none() {
            return Err(RegistryError::NotFound(key.clone()));
        }
        self.remove(&mut w, key).await
    }

    /// Deletes `key` durably and publishes. Caller holds the lock.
    async fn remove(&self, w: &mut Writer, key: &InstanceKey) -> Result<(), RegistryError> {
        Self::persist(w, Change::Delete(key.clone())).await?;
        w.ttl.remove(key);
        w.reap.remove(key);
        w.snapshot.index += 1;
        w.snapshot.set(key, None);
        self.publish(w, key);
        Ok(())
    }

    /// A health report for a TTL check: sets the status and restarts the TTL.
    pub async fn report(
        &self,
        key: &InstanceKey,
        status: Status,
        output: String,
    ) -> Result<Arc<Entry>, RegistryError> {
        let mut w = self.writer.lock().await;
        let old = w
            .snapshot
            .get(key)
            .cloned()
            .ok_or_else(|| RegistryError::NotFound(key.clone()))?;
        let Some(ttl) = ttl_of(&old.instance) else {
            let from = match old.instance.check.as_ref().map(|c| &c.kind) {
                Some(CheckKind::Http(_)) => "its http check",
                Some(CheckKind::Tcp(_)) => "its tcp check",
                _ => "its registration (no check: passing while registered)",
            };
            return Err(RegistryError::NoTtlCheck(key.clone(), from));
        };
        w.ttl.set(key.clone(), Instant::now() + ttl);
        self.deadlines_changed.notify_one();
        Ok(self.set_health(&mut w, &old, status, output))
    }

    /// A status change found by the checker running `spec` for `key`. Ignored when the
    /// instance is gone or now has another check (a late result of a replaced check).
    pub async fn check_result(
        &self,
        key: &InstanceKey,
        spec: &CheckSpec,
        status: Status,
        output: String,
    ) {
        let mut w = self.writer.lock().await;
        let Some(old) = w.snapshot.get(key).cloned() else {
            return;
        };
        if old.instance.check.as_ref() != Some(spec) {
            return;
        }
        self.set_health(&mut w, &old, status, output);
    }

    /// Applies a health result to `old` in memory (health is not stored). Only a change of
    /// status or output bumps the index and publishes.
    fn set_health(
        &self,
        w: &mut Writer,
        old: &Arc<Entry>,
        status: Status,
        output: String,
    ) -> Arc<Entry> {
        if old.health.status == status && old.health.output == output {
            return old.clone();
        }
        let since = if old.health.status == status {
            old.health.since
        } else {
            now()
        };
        let entry = Arc::new(Entry {
            instance: old.instance.clone(),
            health: Health {
                status,
                output,
                since,
            },
        });
        self.apply(w, entry.clone());
        entry
    }

    /// Turns maintenance mode on (with a reason) or off; persisted.
    pub async fn set_maintenance(
        &self,
        key: &InstanceKey,
        reason: Option<String>,
    ) -> Result<Arc<Entry>, RegistryError> {
        let mut w = self.writer.lock().await;
        let old = w
            .snapshot
            .get(key)
            .cloned()
            .ok_or_else(|| RegistryError::NotFound(key.clone()))?;
        // Turning it on again keeps the original start time.
        let maintenance = reason.map(|reason| Maintenance {
            since: old
                .instance
                .maintenance
                .as_ref()
                .map(|m| m.since)
                .unwrap_or_else(now),
            reason,
        });
        if old.instance.maintenance == maintenance {
            return Ok(old);
        }
        let mut inst = old.instance.clone();
        inst.maintenance = maintenance;
        Self::persist(&w, Change::Put(Box::new(inst.clone()))).await?;
        let entry = Arc::new(Entry {
            instance: inst,
            health: old.health.clone(),
        });
        self.apply(&mut w, entry.clone());
        Ok(entry)
    }

    /// Fires every deadline at or before `at`: overdue TTL checks go critical, instances
    /// critical for their `deregister_after` are removed (durably). Returns the next
    /// deadline still pending.
    pub async fn run_deadlines(&self, at: Instant) -> Option<Instant> {
        let mut w = self.writer.lock().await;
        while let Some(key) = w.ttl.pop_due(at) {
            let Some(old) = w.snapshot.get(&key).cloned() else {
                continue;
            };
            let ttl = ttl_of(&old.instance).unwrap_or_default();
            let output = format!(
                "ttl expired: no report within {}",
                humantime::format_duration(ttl)
            );
            self.set_health(&mut w, &old, Status::Critical, output);
        }
        while let Some(key) = w.reap.pop_due(at) {
            if w.snapshot.get(&key).is_none() {
                continue;
            }
            match self.remove(&mut w, &key).await {
                Ok(()) => {
                    tracing::info!(instance = %key, "deregistered: critical for its deregister_after")
                }
                Err(e) => {
                    // Keep the rule and retry shortly: a store hiccup must not drop it.
                    tracing::error!(instance = %key, error = %e, "deregister_after failed; retrying");
                    w.reap.set(key, at + Duration::from_secs(1));
                    break;
                }
            }
        }
        match (w.ttl.next(), w.reap.next()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Resolves when a deadline may have moved earlier.
    pub async fn deadlines_changed(&self) {
        self.deadlines_changed.notified().await
    }

    /// Makes everything durable; called once at shutdown after the servers stopped.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let w = self.writer.lock().await;
        let backend = w.backend.clone();
        tokio::task::spawn_blocking(move || backend.flush())
            .await
            .map_err(|e| StoreError::Write(format!("store task failed: {e}")))?
    }
}

#[cfg(test)]
mod tests;
