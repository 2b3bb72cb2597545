//! The writer task: the only code that changes the registry.
//!
//! It waits for a command, a batch of changes committed elsewhere, or the next deadline, then
//! takes every command already queued (up to `MAX_BATCH`) and applies them in order to a
//! working copy of the snapshot. The commit is one straight line:
//!
//! 1. the batch's durable changes go to the store, which starts committing them at once;
//! 2. meanwhile the views `prepare` their share, out of readers' sight;
//! 3. the store returns the index it assigned (its log's counter, or a shared store's
//!    revision), which becomes the snapshot's;
//! 4. the views `publish`, on this task; then the snapshot is published and the index bumped;
//! 5. every caller is answered.
//!
//! A failed commit answers every caller of the batch with the error, has the views discard
//! what they prepared, and leaves the registry as it was. Changes from elsewhere skip the
//! store (it holds them already) and are published the same way, with their index.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::policy::{self, Timers};
use super::{
    Changed, Command, Entry, Op, Published, RegistryError, Reply, ServiceInstances, Snapshot, View,
};
use crate::model::{CheckKind, Health, Instance, InstanceKey, ServiceName, Status};
use crate::store::{Backend, Change, Loaded, Remote};

/// Most commands applied and committed together. Bounds the latency a batch adds and the
/// size of one store transaction.
const MAX_BATCH: usize = 1024;

fn now() -> SystemTime {
    SystemTime::now()
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

/// The registry's one writer: applies commands in batches, commits each to the store,
/// then publishes the new snapshot to the views. Run it with `Writer::run`.
pub struct Writer {
    backend: Arc<dyn Backend>,
    /// The registry as last committed; equal to the published snapshot between batches.
    snapshot: Snapshot,
    /// TTL expiries and `deregister_after` removals.
    timers: Timers,
    views: Vec<Arc<dyn View>>,
    commands: mpsc::Receiver<Command>,
    /// Changes committed elsewhere; `None` once the store's stream ended.
    remote: Option<mpsc::Receiver<Remote>>,
    published: Option<Arc<Published>>,
    /// Times each store commit (`signpost_store_commit_duration_seconds`).
    commit_timing: crate::metrics::CommitTiming,
}

impl Writer {
    /// Builds the first snapshot from what the store holds and hands it to the views.
    pub(super) fn new(
        backend: Arc<dyn Backend>,
        loaded: Loaded,
        views: Vec<Arc<dyn View>>,
        commands: mpsc::Receiver<Command>,
        remote: mpsc::Receiver<Remote>,
    ) -> (Self, Snapshot) {
        let mut snapshot = Snapshot::default();
        snapshot.index = loaded.index;
        let mut timers = Timers::default();
        let (start, wall) = (Instant::now(), now());
        // Built service by service and published whole: inserting one by one through
        // `Snapshot::set` would copy a service's map for every instance.
        let mut services: std::collections::HashMap<ServiceName, ServiceInstances> =
            std::collections::HashMap::new();
        for inst in loaded.instances {
            let health = policy::initial_health(&inst, wall);
            let service = inst.key().service.clone();
            let entry = Entry {
                instance: inst,
                health,
            };
            timers.loaded(&entry, start, wall);
            services.entry(service).or_default().insert(Arc::new(entry));
        }
        snapshot.services = services
            .into_iter()
            .map(|(name, mut instances)| {
                instances.loaded(loaded.index);
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
            timers,
            views,
            commands,
            remote: Some(remote),
            published: None,
            commit_timing: Default::default(),
        };
        (w, first)
    }

    pub(super) fn publishing_to(mut self, published: Arc<Published>) -> Self {
        self.published = Some(published);
        self
    }

    /// Times every store commit into `timing` (the server's metrics).
    pub(crate) fn timing_commits(mut self, timing: crate::metrics::CommitTiming) -> Self {
        self.commit_timing = timing;
        self
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.timers.next()
    }

    fn batch(&self) -> Batch {
        Batch {
            snap: self.snapshot.clone(),
            changes: Vec::new(),
            keys: Vec::new(),
            replies: Vec::new(),
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
                    // Every handle is gone: nothing can ask for anything any more.
                    None => return,
                },
                r = async {
                    match &mut self.remote {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    match r {
                        Some(remote) => self.apply_remote(remote).await,
                        None => self.remote = None,
                    }
                    continue;
                },
                _ = async {
                    match next {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => None,
                _ = shutdown.cancelled(), if next.is_some() => continue,
            };
            let mut batch = self.batch();
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
                let _ = reply.send(self.backend.clone().flush().await);
                return;
            }
        }
    }

    /// Sets `entry` (or removes `key`) in the batch, one index step.
    fn put(&mut self, batch: &mut Batch, key: &InstanceKey, entry: Option<Arc<Entry>>) {
        match &entry {
            Some(e) => self.timers.changed(e, Instant::now(), now()),
            None => self.timers.removed(key),
        }
        batch.snap.index += 1;
        batch.snap.set(key, entry);
        batch.keys.push(key.clone());
    }

    /// Sets a registration (stored or to be stored by the caller): its health is kept when
    /// its check did not change, and starts over (with its deadlines) when it did.
    fn set_instance(&mut self, batch: &mut Batch, inst: Instance) -> Arc<Entry> {
        let old = batch.snap.get(inst.key()).cloned();
        let check_changed = old
            .as_ref()
            .is_none_or(|o| o.instance.check() != inst.check());
        let health = match &old {
            Some(o) if !check_changed => o.health.clone(),
            _ => policy::initial_health(&inst, now()),
        };
        if check_changed {
            // A changed check starts over, deregister_after included.
            self.timers.check_replaced(&inst, Instant::now());
        }
        let key = inst.key().clone();
        let entry = Arc::new(Entry {
            instance: inst,
            health,
        });
        self.put(batch, &key, Some(entry.clone()));
        entry
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
        self.put(batch, old.instance.key(), Some(entry.clone()));
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
                if let Some(old) = batch.snap.get(inst.key()) {
                    inst = inst.with_maintenance(old.instance.maintenance().cloned());
                }
                batch.changes.push(Change::Put(Box::new(inst.clone())));
                Ok(Some(self.set_instance(batch, inst)))
            }
            Op::Deregister(key) => {
                Self::existing(batch, &key)?;
                batch.changes.push(Change::Delete(key.clone()));
                self.put(batch, &key, None);
                Ok(None)
            }
            Op::Report(key, status, output) => {
                let old = Self::existing(batch, &key)?;
                let Some(ttl) = policy::ttl_of(&old.instance) else {
                    let from = match old.instance.check().map(|c| c.kind()) {
                        Some(CheckKind::Http(_)) => "its http check",
                        Some(CheckKind::Tcp(_)) => "its tcp check",
                        _ => "its registration (no check: passing while registered)",
                    };
                    return Err(RegistryError::NoTtlCheck(key, from));
                };
                self.timers.reported(&key, ttl, Instant::now());
                Ok(Some(self.set_health(batch, &old, status, output)))
            }
            Op::CheckResult(key, spec, status, output) => {
                match batch.snap.get(&key).cloned() {
                    Some(old) if old.instance.check() == Some(&*spec) => {
                        Ok(Some(self.set_health(batch, &old, status, output)))
                    }
                    // Gone, or a late result of a replaced check.
                    _ => Ok(None),
                }
            }
            Op::Maintenance(key, maintenance) => {
                let old = Self::existing(batch, &key)?;
                // Turning it on again keeps the original start time.
                let maintenance = maintenance.map(|m| match old.instance.maintenance() {
                    Some(was) => m.started(was.since()),
                    None => m,
                });
                if old.instance.maintenance() == maintenance.as_ref() {
                    return Ok(Some(old));
                }
                let inst = old.instance.clone().with_maintenance(maintenance);
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
        while let Some(key) = self.timers.pop_expired(at) {
            let Some(old) = batch.snap.get(&key).cloned() else {
                continue;
            };
            let ttl = policy::ttl_of(&old.instance).unwrap_or_default();
            self.set_health(batch, &old, Status::Critical, policy::ttl_expired(ttl));
        }
        while let Some(key) = self.timers.pop_removal(at) {
            if batch.snap.get(&key).is_none() {
                continue;
            }
            tracing::info!(instance = %key, "deregistering: critical for its deregister_after");
            batch.changes.push(Change::Delete(key.clone()));
            self.put(batch, &key, None);
        }
    }

    /// The commit line: the store commits the batch's durable changes while the views
    /// prepare; then, with the index the store assigned, the views publish, the snapshot is
    /// published, and every caller is answered.
    async fn commit(&mut self, batch: Batch) {
        let Batch {
            mut snap,
            changes,
            keys,
            replies,
        } = batch;
        if !changes.is_empty() {
            // Started now: the store's work overlaps the views' share below.
            let started = std::time::Instant::now();
            let committed = self.backend.clone().commit(changes, snap.index);
            if !keys.is_empty() {
                for v in &self.views {
                    v.prepare(&snap, Changed::Some(&keys));
                }
            }
            let committed = committed.await;
            self.commit_timing.observe(started.elapsed());
            match committed {
                Ok(index) if index != snap.index => {
                    snap.reindex(&keys, self.snapshot.index, index);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "store commit failed; the batch was not applied");
                    for v in &self.views {
                        v.discard(&self.snapshot, Changed::Some(&keys));
                    }
                    for (reply, _) in replies {
                        let _ = reply.send(Err(RegistryError::Store(e.clone())));
                    }
                    let (at, wall) = (Instant::now(), now());
                    for key in &keys {
                        let entry = self.snapshot.get(key).cloned();
                        self.timers.resync(key, entry.as_deref(), at, wall);
                    }
                    return;
                }
            }
        }
        self.publish(snap, &keys);
        for (reply, entry) in replies {
            let _ = reply.send(Ok(entry));
        }
    }

    /// Makes `snap` the registry: the views first, then the snapshot and its index.
    fn publish(&mut self, snap: Snapshot, keys: &[InstanceKey]) {
        if keys.is_empty() {
            return;
        }
        for v in &self.views {
            v.publish(&snap, Changed::Some(keys));
        }
        self.snapshot = snap;
        if let Some(p) = &self.published {
            p.publish(self.snapshot.clone());
        }
    }

    /// Changes committed elsewhere: applied like registrations and removals, without the
    /// store (it holds them), and published with the index the store gave them.
    async fn apply_remote(&mut self, remote: Remote) {
        let mut batch = self.batch();
        for change in remote.changes {
            match change {
                Change::Put(inst) => {
                    self.set_instance(&mut batch, *inst);
                }
                Change::Delete(key) => {
                    if batch.snap.get(&key).is_some() {
                        self.put(&mut batch, &key, None);
                    }
                }
            }
        }
        let Batch { mut snap, keys, .. } = batch;
        let index = snap.index.max(remote.index);
        snap.reindex(&keys, self.snapshot.index, index);
        self.publish(snap, &keys);
    }
}
