//! The writer task: the only code that changes the registry.
//!
//! It waits for a command or the next deadline, then takes every command already queued (up
//! to `MAX_BATCH`) and applies them in order to a working copy of the snapshot. Durable
//! changes of the whole batch go to the store in one commit; only when that succeeded does the
//! working copy become the registry: views are published (they prepare their share while the
//! commit is on the disk, out of readers' sight, and are published by the store's thread as
//! soon as the commit is durable), the snapshot published, the index bumped, and every caller
//! answered. A failed commit answers every caller of the batch with the
//! error, has the views discard what they prepared, and leaves the registry as it was.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    Changed, Command, Entry, Op, Registry, RegistryError, Reply, ServiceInstances, Snapshot, View,
};
use crate::health::timers::Deadlines;
use crate::model::{CheckKind, Health, Instance, InstanceKey, Maintenance, ServiceName, Status};
use crate::store::{Backend, Change, Loaded, StoreError};

/// Most commands applied and committed together. Bounds the latency a batch adds and the
/// size of one store transaction.
const MAX_BATCH: usize = 1024;

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
/// put while the instance stays critical.
fn sync_reap(reap: &mut Deadlines, entry: &Entry) {
    let key = &entry.instance.key;
    let rule = entry.instance.deregister_after.filter(|_| {
        entry.health.status == Status::Critical && entry.instance.maintenance.is_none()
    });
    match rule {
        Some(_) if reap.contains(key) => {}
        Some(after) => {
            let critical_for = now().duration_since(entry.health.since).unwrap_or_default();
            reap.set(
                key.clone(),
                Instant::now() + after.saturating_sub(critical_for),
            );
        }
        None => reap.remove(key),
    }
}

/// One batch being applied: the working snapshot and what must happen on commit.
struct Batch {
    snap: Snapshot,
    /// Durable changes, in order.
    changes: Vec<Change>,
    /// Instances whose entry changed (views rebuild these).
    keys: Vec<InstanceKey>,
    /// Callers to answer once committed.
    replies: Vec<(Reply, Option<Arc<Entry>>)>,
}

pub struct Writer {
    backend: Arc<dyn Backend>,
    /// The registry as last committed; equal to the published snapshot between batches.
    snapshot: Snapshot,
    /// When each TTL-checked instance goes critical unless it reports.
    ttl: Deadlines,
    /// When each critical instance with `deregister_after` is removed.
    reap: Deadlines,
    views: Vec<Arc<dyn View>>,
    commands: mpsc::Receiver<Command>,
    registry: Option<Arc<Registry>>,
}

impl Writer {
    /// Builds the first snapshot from what the store holds and hands it to the views.
    pub(super) fn new(
        backend: Arc<dyn Backend>,
        loaded: Loaded,
        views: Vec<Arc<dyn View>>,
        commands: mpsc::Receiver<Command>,
    ) -> (Self, Snapshot) {
        let mut snapshot = Snapshot {
            index: loaded.index,
            ..Snapshot::default()
        };
        let mut ttl = Deadlines::default();
        let mut reap = Deadlines::default();
        let start = Instant::now();
        // Built service by service and published whole: inserting one by one through
        // `Snapshot::set` would copy a service's map for every instance.
        let mut services: std::collections::HashMap<ServiceName, ServiceInstances> =
            std::collections::HashMap::new();
        for inst in loaded.instances {
            if let Some(d) = ttl_of(&inst) {
                ttl.set(inst.key.clone(), start + d);
            }
            let health = initial_health(&inst);
            let service = inst.key.service.clone();
            let entry = Entry {
                instance: inst,
                health,
            };
            sync_reap(&mut reap, &entry);
            services.entry(service).or_default().insert(Arc::new(entry));
        }
        snapshot.services = services
            .into_iter()
            .map(|(name, mut instances)| {
                instances.shrink_to_fit();
                (name, Arc::new(instances))
            })
            .collect();
        for v in &views {
            v.publish(&snapshot, Changed::All);
        }
        let first = snapshot.clone();
        let w = Self {
            backend,
            snapshot,
            ttl,
            reap,
            views,
            commands,
            registry: None,
        };
        (w, first)
    }

    pub(super) fn with_registry(mut self, registry: Arc<Registry>) -> Self {
        self.registry = Some(registry);
        self
    }

    fn next_deadline(&self) -> Option<Instant> {
        match (self.ttl.next(), self.reap.next()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Serves commands until a `Flush`. Deadlines fire until `shutdown` (a server shutting
    /// down does not deregister anything); commands are served until the flush, so requests
    /// in flight at shutdown still complete.
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let next = if shutdown.is_cancelled() {
                None
            } else {
                self.next_deadline()
            };
            let first = tokio::select! {
                c = self.commands.recv() => match c {
                    Some(c) => Some(c),
                    None => return,
                },
                _ = async {
                    match next {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => None,
                _ = shutdown.cancelled(), if next.is_some() => continue,
            };
            let mut batch = Batch {
                snap: self.snapshot.clone(),
                changes: Vec::new(),
                keys: Vec::new(),
                replies: Vec::new(),
            };
            let mut flush = None;
            let mut queued = first.into_iter().collect::<Vec<_>>();
            while queued.len() < MAX_BATCH {
                match self.commands.try_recv() {
                    Ok(c) => queued.push(c),
                    Err(_) => break,
                }
            }
            for c in queued {
                match c {
                    Command::Op(op, reply) => match self.apply(&mut batch, op) {
                        Ok(entry) => batch.replies.push((reply, entry)),
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    },
                    // Later commands (if any) are dropped: their callers see `Stopped`.
                    Command::Flush(reply) => {
                        flush = Some(reply);
                        break;
                    }
                }
            }
            if !shutdown.is_cancelled() {
                self.fire_deadlines(&mut batch, Instant::now());
            }
            self.commit(batch).await;
            if let Some(reply) = flush {
                let backend = self.backend.clone();
                let r = tokio::task::spawn_blocking(move || backend.flush())
                    .await
                    .unwrap_or_else(|e| Err(StoreError::Write(format!("store task failed: {e}"))));
                let _ = reply.send(r);
                return;
            }
        }
    }

    /// Sets `entry` (or removes `key`) in the batch, one index step.
    fn put(&mut self, batch: &mut Batch, key: &InstanceKey, entry: Option<Arc<Entry>>) {
        if let Some(e) = &entry {
            sync_reap(&mut self.reap, e);
        } else {
            self.reap.remove(key);
            self.ttl.remove(key);
        }
        batch.snap.index += 1;
        batch.snap.set(key, entry);
        batch.keys.push(key.clone());
    }

    /// A new health for `old` (not stored). Only a change of status or output is a change.
    fn set_health(
        &mut self,
        batch: &mut Batch,
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
                output: output.into(),
                since,
            },
        });
        self.put(batch, &old.instance.key, Some(entry.clone()));
        entry
    }

    fn existing(batch: &Batch, key: &InstanceKey) -> Result<Arc<Entry>, RegistryError> {
        batch
            .snap
            .get(key)
            .cloned()
            .ok_or_else(|| RegistryError::NotFound(key.clone()))
    }

    /// Applies one op to the batch; the entry to answer with (if any), or an error that
    /// changed nothing.
    fn apply(&mut self, batch: &mut Batch, op: Op) -> Result<Option<Arc<Entry>>, RegistryError> {
        match op {
            Op::Register(inst) => {
                let mut inst = *inst;
                let old = batch.snap.get(&inst.key).cloned();
                if let Some(old) = &old {
                    inst.maintenance = old.instance.maintenance.clone();
                }
                let check_changed = old.as_ref().is_none_or(|o| o.instance.check != inst.check);
                let health = match &old {
                    Some(o) if !check_changed => o.health.clone(),
                    _ => initial_health(&inst),
                };
                if check_changed {
                    // A changed check starts over, deregister_after included.
                    self.reap.remove(&inst.key);
                    match ttl_of(&inst) {
                        Some(d) => self.ttl.set(inst.key.clone(), Instant::now() + d),
                        None => self.ttl.remove(&inst.key),
                    }
                }
                batch.changes.push(Change::Put(Box::new(inst.clone())));
                let key = inst.key.clone();
                let entry = Arc::new(Entry {
                    instance: inst,
                    health,
                });
                self.put(batch, &key, Some(entry.clone()));
                Ok(Some(entry))
            }
            Op::Deregister(key) => {
                Self::existing(batch, &key)?;
                batch.changes.push(Change::Delete(key.clone()));
                self.put(batch, &key, None);
                Ok(None)
            }
            Op::Report(key, status, output) => {
                let old = Self::existing(batch, &key)?;
                let Some(ttl) = ttl_of(&old.instance) else {
                    let from = match old.instance.check.as_ref().map(|c| &c.kind) {
                        Some(CheckKind::Http(_)) => "its http check",
                        Some(CheckKind::Tcp(_)) => "its tcp check",
                        _ => "its registration (no check: passing while registered)",
                    };
                    return Err(RegistryError::NoTtlCheck(key, from));
                };
                self.ttl.set(key.clone(), Instant::now() + ttl);
                Ok(Some(self.set_health(batch, &old, status, output)))
            }
            Op::CheckResult(key, spec, status, output) => {
                match batch.snap.get(&key).cloned() {
                    Some(old) if old.instance.check.as_ref() == Some(&*spec) => {
                        Ok(Some(self.set_health(batch, &old, status, output)))
                    }
                    // Gone, or a late result of a replaced check.
                    _ => Ok(None),
                }
            }
            Op::Maintenance(key, reason) => {
                let old = Self::existing(batch, &key)?;
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
                    return Ok(Some(old));
                }
                let mut inst = old.instance.clone();
                inst.maintenance = maintenance;
                batch.changes.push(Change::Put(Box::new(inst.clone())));
                let entry = Arc::new(Entry {
                    instance: inst,
                    health: old.health.clone(),
                });
                self.put(batch, &key, Some(entry.clone()));
                Ok(Some(entry))
            }
        }
    }

    /// Fires every deadline at or before `at` into the batch: overdue TTL checks go critical;
    /// instances critical for their `deregister_after` are removed.
    fn fire_deadlines(&mut self, batch: &mut Batch, at: Instant) {
        while let Some(key) = self.ttl.pop_due(at) {
            let Some(old) = batch.snap.get(&key).cloned() else {
                continue;
            };
            let ttl = ttl_of(&old.instance).unwrap_or_default();
            let output = format!(
                "ttl expired: no report within {}",
                humantime::format_duration(ttl)
            );
            self.set_health(batch, &old, Status::Critical, output);
        }
        while let Some(key) = self.reap.pop_due(at) {
            if batch.snap.get(&key).is_none() {
                continue;
            }
            tracing::info!(instance = %key, "deregistering: critical for its deregister_after");
            batch.changes.push(Change::Delete(key.clone()));
            self.put(batch, &key, None);
        }
    }

    /// Persists the batch's changes in one commit, then publishes and answers.
    async fn commit(&mut self, batch: Batch) {
        let Batch {
            mut snap,
            changes,
            mut keys,
            replies,
        } = batch;
        // Whether the views were published by the store's thread (see below).
        let mut published = false;
        if !changes.is_empty() {
            let backend = self.backend.clone();
            let index = snap.index;
            let shared = Arc::new((snap, keys));
            let on_store = shared.clone();
            let views = (!shared.1.is_empty()).then(|| self.views.clone());
            let (ready, prepared) = std::sync::mpsc::channel::<()>();
            let task = tokio::task::spawn_blocking(move || {
                let result = backend.apply(&changes, index);
                // The views are published here, the moment the batch is durable, rather than
                // after this thread has woken the writer: DNS shows the change one thread
                // hand-off sooner. Only once the writer has prepared them (it does so while
                // this thread waits on the disk); if it never does, the writer publishes.
                // A publish that panics is not taken for a failed commit (the batch is
                // durable): the writer publishes again, and meets the same panic as before.
                let published = result.is_ok()
                    && views.is_some_and(|views| {
                        prepared.recv().is_ok()
                            && std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                for v in &views {
                                    v.publish(&on_store.0, Changed::Some(&on_store.1));
                                }
                            }))
                            .is_ok()
                    });
                drop(on_store);
                (result, published)
            });
            // The views' share of the batch is done while the disk syncs the log.
            if !shared.1.is_empty() {
                for v in &self.views {
                    v.prepare(&shared.0, Changed::Some(&shared.1));
                }
            }
            let _ = ready.send(());
            let (result, on_store) = task.await.unwrap_or_else(|e| {
                (
                    Err(StoreError::Write(format!("store task failed: {e}"))),
                    false,
                )
            });
            published = on_store;
            (snap, keys) = Arc::try_unwrap(shared).unwrap_or_else(|s| (s.0.clone(), s.1.clone()));
            if let Err(e) = result {
                tracing::error!(error = %e, "store commit failed; the batch was not applied");
                for v in &self.views {
                    v.discard(&self.snapshot, Changed::Some(&keys));
                }
                for (reply, _) in replies {
                    let _ = reply.send(Err(RegistryError::Store(e.clone())));
                }
                self.resync_deadlines(&keys);
                return;
            }
        }
        if !keys.is_empty() {
            self.snapshot = snap;
            if !published {
                for v in &self.views {
                    v.publish(&self.snapshot, Changed::Some(&keys));
                }
            }
            if let Some(r) = &self.registry {
                r.publish(self.snapshot.clone());
            }
        }
        for (reply, entry) in replies {
            let _ = reply.send(Ok(entry));
        }
    }

    /// After a failed commit: deadlines of `keys` follow the registry as it still is.
    fn resync_deadlines(&mut self, keys: &[InstanceKey]) {
        for key in keys {
            match self.snapshot.get(key).cloned() {
                Some(e) => {
                    match ttl_of(&e.instance) {
                        Some(d) if !self.ttl.contains(key) => {
                            self.ttl.set(key.clone(), Instant::now() + d)
                        }
                        Some(_) => {}
                        None => self.ttl.remove(key),
                    }
                    self.reap.remove(key);
                    sync_reap(&mut self.reap, &e);
                }
                None => {
                    self.ttl.remove(key);
                    self.reap.remove(key);
                }
            }
        }
    }
}
