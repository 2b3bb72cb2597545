//! The writer task: the only code that changes the registry.
//!
//! It waits for a command, a batch of changes committed elsewhere, or the next deadline, then
//! takes every command already queued (up to `MAX_BATCH`) and applies them in order to a
//! working copy of the snapshot. The commit is one straight line:
//!
//! 1. the batch's durable changes go to the store, which starts committing them at once;
//! 2. meanwhile the views `prepare` their share, out of readers' sight (a batch of at most
//!    `HERE_MAX` instances, when the store can commit on this thread, prepares first and is
//!    then committed here: see `CommitHere`);
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
use crate::store::{Backend, Change, HealthChange, Loaded, Owners, Remote, StoreError};

/// Most commands applied and committed together. Bounds the latency a batch adds and the
/// size of one store transaction.
const MAX_BATCH: usize = 1024;

/// How long a batch committed to a shared store waits for the store's stream to deliver the
/// changes other replicas committed before it (`Writer::after_others`); normally a
/// millisecond, this bound only matters while the stream is down.
const OWN_COMMIT_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Largest batch committed on the writer's own thread when the store can (`CommitHere`);
/// a larger one is handed to the store's thread so that the views' share, which grows with
/// the batch, overlaps the disk's.
const HERE_MAX: usize = 16;

/// Whether this task may block its thread (`block_in_place`): only on a multi-threaded
/// runtime, whose other workers go on with everything else meanwhile.
fn can_block_here() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// The instance a change is about.
fn change_key(c: &Change) -> &InstanceKey {
    match c {
        Change::Put(inst) => inst.key(),
        Change::Delete(key) | Change::Reap(key) => key,
        Change::Health(h) => &h.key,
    }
}

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
    /// The store keeps health, shared between replicas: every status change is a store
    /// change, and deadlines fire only on the instance's owner.
    shared: bool,
    /// Which instances' deadlines this replica fires.
    owners: Arc<Owners>,
    /// Instances this replica committed, with the store's index of that commit. A change
    /// from elsewhere at or below it is older than what this replica holds (its own commit
    /// coming back, or a write it superseded) and is skipped. Entries go once the stream
    /// from elsewhere has passed their index.
    own: std::collections::HashMap<InstanceKey, u64>,
    /// Most commands (and deadlines) in one batch: `MAX_BATCH`, or less when the store's
    /// transactions are bounded (`Backend::max_batch`).
    max_batch: usize,
    /// Changes from elsewhere already taken from the stream but above an index this replica
    /// was publishing (`after_others`): applied first in the next turn.
    pending: std::collections::VecDeque<Remote>,
    /// Times each store commit (`signpost_store_commit_duration_seconds`).
    commit_timing: crate::metrics::CommitTiming,
}

/// Where a status comes from, which decides how a shared store writes it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    /// A client's report (or a registration resetting it): always written.
    Client,
    /// This replica as the check's owner (a probe, a TTL that ran out): written only while
    /// this replica is a live member.
    Owner,
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
        let shared = backend.shares_health();
        let max_batch = MAX_BATCH.min(backend.max_batch()).max(1);
        let owners = backend.owners();
        let mut snapshot = Snapshot::default();
        snapshot.index = loaded.index;
        let mut statuses: std::collections::HashMap<InstanceKey, HealthChange> = loaded
            .health
            .into_iter()
            .map(|h| (h.key.clone(), h))
            .collect();
        let mut timers = Timers::default();
        let (start, wall) = (Instant::now(), now());
        // Built service by service and published whole: inserting one by one through
        // `Snapshot::set` would copy a service's map for every instance.
        let mut services: std::collections::HashMap<ServiceName, ServiceInstances> =
            std::collections::HashMap::new();
        for inst in loaded.instances {
            let health = match statuses.remove(inst.key()) {
                Some(h) if h.check.as_ref() == inst.check() => h.health,
                _ => policy::initial_health(&inst, wall),
            };
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
            shared,
            owners,
            own: std::collections::HashMap::new(),
            max_batch,
            pending: std::collections::VecDeque::new(),
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
            if let Some(remote) = self.pending.pop_front() {
                self.apply_remote(remote).await;
                continue;
            }
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
            while queued.len() < self.max_batch {
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
            if !shutdown.is_cancelled() && !self.shared {
                self.fire_deadlines(&mut batch, Instant::now());
            }
            self.commit(batch).await;
            if !shutdown.is_cancelled() && self.shared {
                // Alone in their batch: a shared store may refuse a removal someone else's
                // write overtook (`Conflict`), and that must not fail the clients' writes.
                let mut batch = self.batch();
                self.fire_deadlines(&mut batch, Instant::now());
                self.commit(batch).await;
            }
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

    /// Sets a registration (to be stored by the caller when `stored`, or stored already
    /// elsewhere): its health is kept when its check did not change, and starts over (with
    /// its deadlines) when it did.
    fn set_instance(&mut self, batch: &mut Batch, inst: Instance, stored: bool) -> Arc<Entry> {
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
        if self.shared && check_changed && stored {
            // Stored with the registration: every replica then shows the same starting health
            // (its `since` is this replica's clock, not each one's own), and a status stored
            // for an old check does not outlive it.
            batch.changes.push(Change::Health(Box::new(HealthChange {
                key: inst.key().clone(),
                health: health.clone(),
                check: inst.check().cloned(),
                fenced: false,
            })));
        }
        let key = inst.key().clone();
        let entry = Arc::new(Entry {
            instance: inst,
            health,
        });
        self.put(batch, &key, Some(entry.clone()));
        entry
    }

    /// A new health for `old`. Only a change of status or output is a change; a shared store
    /// is handed each change (and every client report, which restarts the TTL on the owner).
    fn set_health(
        &mut self,
        batch: &mut Batch,
        old: &Arc<Entry>,
        status: Status,
        output: String,
        source: Source,
    ) -> Arc<Entry> {
        if old.health.status == status && old.health.output == output {
            if self.shared && source == Source::Client {
                batch.changes.push(Change::Health(Box::new(HealthChange {
                    key: old.instance.key().clone(),
                    health: old.health.clone(),
                    check: old.instance.check().cloned(),
                    fenced: false,
                })));
            }
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
        if self.shared {
            batch.changes.push(Change::Health(Box::new(HealthChange {
                key: old.instance.key().clone(),
                health: entry.health.clone(),
                check: old.instance.check().cloned(),
                fenced: source == Source::Owner,
            })));
        }
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
                Ok(Some(self.set_instance(batch, inst, true)))
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
                Ok(Some(self.set_health(
                    batch,
                    &old,
                    status,
                    output,
                    Source::Client,
                )))
            }
            Op::CheckResult(key, spec, status, output) => {
                match batch.snap.get(&key).cloned() {
                    Some(old) if old.instance.check() == Some(&*spec) => Ok(Some(self.set_health(
                        batch,
                        &old,
                        status,
                        output,
                        Source::Owner,
                    ))),
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
    /// With a shared store, only the instance's owner fires; another replica asks again a
    /// moment later (the owner's write normally arrives first and settles it).
    fn fire_deadlines(&mut self, batch: &mut Batch, at: Instant) {
        let mut deferred = Vec::new();
        // At most a batch's worth; the rest stay due and fire in the next batch at once.
        let mut room = self.max_batch;
        while room > 0
            && let Some(key) = self.timers.pop_expired(at)
        {
            room -= 1;
            let Some(old) = batch.snap.get(&key).cloned() else {
                continue;
            };
            if self.shared && !self.owners.owns(&key) {
                deferred.push((key, false));
                continue;
            }
            let ttl = policy::ttl_of(&old.instance).unwrap_or_default();
            let output = policy::ttl_expired(ttl);
            self.set_health(batch, &old, Status::Critical, output, Source::Owner);
        }
        while room > 0
            && let Some(key) = self.timers.pop_removal(at)
        {
            room -= 1;
            if batch.snap.get(&key).is_none() {
                continue;
            }
            if self.shared && !self.owners.owns(&key) {
                deferred.push((key, true));
                continue;
            }
            tracing::info!(instance = %key, "deregistering: critical for its deregister_after");
            batch.changes.push(Change::Reap(key.clone()));
            self.put(batch, &key, None);
        }
        let later = at + policy::NOT_OWNER_RETRY;
        for (key, removal) in deferred {
            if removal {
                self.timers.defer_removal(key, later);
            } else {
                self.timers.defer_expiry(key, later);
            }
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
        // A batch of health changes alone has no record to store, but its index is stored
        // all the same (an empty record): the index is the DNS SOA serial, which must never go
        // back, not even after a crash (`kill -9`) that follows health changes. A shared store
        // stores every health change anyway.
        let index_only = changes.is_empty() && !keys.is_empty() && !self.shared;
        if !changes.is_empty() || index_only {
            let started = std::time::Instant::now();
            let committed = match self.backend.here() {
                // A small batch is committed on this thread, after the views' share: the
                // share is a few microseconds, and waiting here for the disk saves the
                // wake-up of this task that handing the commit to another thread costs.
                Some(here) if keys.len() <= HERE_MAX && can_block_here() => {
                    if !keys.is_empty() {
                        for v in &self.views {
                            v.prepare(&snap, Changed::Some(&keys));
                        }
                    }
                    tokio::task::block_in_place(|| here.commit_here(&changes, snap.index))
                }
                _ => {
                    // Started now: the store's work overlaps the views' share below.
                    let committed = self.backend.clone().commit(changes, snap.index);
                    if !keys.is_empty() {
                        for v in &self.views {
                            v.prepare(&snap, Changed::Some(&keys));
                        }
                    }
                    committed.await
                }
            };
            self.commit_timing.observe(started.elapsed());
            match committed {
                Ok(index) => {
                    if index != snap.index {
                        snap.reindex(&keys, self.snapshot.index, index);
                    }
                    if self.shared {
                        for key in &keys {
                            self.own.insert(key.clone(), index);
                        }
                        snap = self.after_others(snap, &keys, index).await;
                    }
                }
                Err(e) => {
                    match &e {
                        StoreError::Conflict(_) => {
                            tracing::info!(error = %e, "write not applied: overtaken by another replica's")
                        }
                        _ => {
                            tracing::error!(error = %e, "store commit failed; the batch was not applied")
                        }
                    }
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

    /// With a shared store, this replica's batch committed at `index` is published only after
    /// every change other replicas committed below it, each with its own revision, so that
    /// every replica shows the same registry at the same index (and a long-poll woken by one
    /// index on one replica means the same on another). Waits for the store's stream to
    /// deliver `index` itself, bounded: a stream that is down does not hold writes back.
    /// Returns the batch's snapshot, rebuilt on top of those changes when there were any.
    async fn after_others(&mut self, snap: Snapshot, keys: &[InstanceKey], index: u64) -> Snapshot {
        let mut earlier = Vec::new();
        let mut later = Vec::new();
        if let Some(rx) = &mut self.remote {
            let until = Instant::now() + OWN_COMMIT_WAIT;
            loop {
                let Ok(Some(remote)) = tokio::time::timeout_at(until, rx.recv()).await else {
                    break;
                };
                let done = remote.index >= index;
                let (below, above): (Vec<_>, Vec<_>) =
                    remote.changes.into_iter().partition(|(i, _)| *i <= index);
                if !below.is_empty() {
                    earlier.push(Remote {
                        index: remote.index.min(index),
                        changes: below,
                    });
                }
                if !above.is_empty() {
                    later.push(Remote {
                        index: remote.index,
                        changes: above,
                    });
                }
                if done {
                    break;
                }
            }
        }
        let others = earlier
            .iter()
            .flat_map(|r| &r.changes)
            .any(|(i, c)| self.own.get(change_key(c)).is_none_or(|own| own < i));
        let snap = if others {
            // The views prepared the batch on the registry without those changes: drop that,
            // publish the others' changes first, then the batch's entries on top.
            for v in &self.views {
                v.discard(&self.snapshot, Changed::Some(keys));
            }
            for r in earlier {
                self.apply_remote(r).await;
            }
            let mut rebuilt = self.snapshot.clone();
            rebuilt.index = index;
            for key in keys {
                rebuilt.set(key, snap.get(key).cloned());
            }
            rebuilt
        } else {
            snap
        };
        // Changes above the batch's index wait for it: they go first in the writer's next turn.
        self.pending.extend(later);
        snap
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
        for (index, change) in remote.changes {
            let key = change_key(&change);
            if self.own.get(key).is_some_and(|&own| own >= index) {
                continue; // this replica's own commit coming back, or older than it
            }
            match change {
                Change::Put(inst) => {
                    self.set_instance(&mut batch, *inst, false);
                }
                Change::Delete(key) | Change::Reap(key) => {
                    if batch.snap.get(&key).is_some() {
                        self.put(&mut batch, &key, None);
                    }
                }
                Change::Health(h) => self.remote_health(&mut batch, *h),
            }
        }
        if !self.own.is_empty() {
            self.own.retain(|_, own| *own > remote.index);
        }
        let Batch { mut snap, keys, .. } = batch;
        let index = self.snapshot.index.max(remote.index);
        snap.reindex(&keys, self.snapshot.index, index);
        self.publish(snap, &keys);
    }

    /// A status another replica stored: taken as stored when it is for the instance's
    /// current check; a report restarts the TTL here too (its owner may be this replica).
    fn remote_health(&mut self, batch: &mut Batch, h: HealthChange) {
        let Some(old) = batch.snap.get(&h.key).cloned() else {
            return;
        };
        if old.instance.check() != h.check.as_ref() {
            return; // stored for a check the instance no longer has
        }
        if let Some(ttl) = policy::ttl_of(&old.instance) {
            self.timers.reported(&h.key, ttl, Instant::now());
        }
        if old.health == h.health {
            return;
        }
        let entry = Arc::new(Entry {
            instance: old.instance.clone(),
            health: h.health,
        });
        self.put(batch, &h.key, Some(entry));
    }
}
