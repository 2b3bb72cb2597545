//! The local copy of etcd: one ranged read of the prefix, then a watch from the next
//! revision, each watch response handed to the registry writer as one batch of changes made
//! elsewhere (`Remote`), with each change's revision.
//!
//! The client crate does not resume a watch by itself. A broken watch (a transport error, the
//! stream ending) is opened again from the last revision seen, progress notifications
//! included, after a jittered backoff. A watch etcd cancels (it compacted past that revision,
//! or lost its leader) is not trusted to resume: everything is read again and only the
//! difference from the copy is handed on. The
//! member keys are not registry changes: they set the live members (`Owners`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use etcd_client::{EventType, GetOptions, KeyValue, WatchOptions};
use tokio::sync::mpsc;

use super::Etcd;
use super::layout::{HealthRecord, Key, decode_instance};
use super::membership::Backoff;
use crate::model::Instance;
use crate::store::{Change, HealthChange, Loaded, Remote, StoreError};

/// Keys per page of a full read.
const PAGE: i64 = 2000;

/// The first key after every key starting with `prefix` (etcd's range end for a prefix).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // every key
}

/// How often the watch is asked for progress.
const PROBE: Duration = Duration::from_secs(1);

/// Key → (value, mod revision): the copy.
pub(super) type Kvs = HashMap<Vec<u8>, (Vec<u8>, i64)>;

impl Etcd {
    /// Reads everything under the prefix at one revision: the registry, the statuses for
    /// each instance's current check, and the members. Seeds the copy the watch continues.
    /// A record that breaks a registration rule is an error naming its key.
    pub(super) async fn list(&self) -> Result<(Loaded, i64), StoreError> {
        let (kvs, rev) = self.read_all().await?;
        let mut instances = HashMap::new();
        let mut health = HashMap::new();
        for (k, (v, _)) in &kvs {
            if let Some(Key::Instance(key)) = self.layout.parse(k) {
                let (inst, start) = decode_instance(v).map_err(|message| StoreError::Corrupt {
                    path: self.layout.prefix().into(),
                    key: String::from_utf8_lossy(k).into_owned(),
                    message,
                })?;
                if let Some(h) = start.and_then(|r| self.read_health(k, Ok(r), &inst)) {
                    health.insert(key.clone(), h);
                }
                instances.insert(key, inst);
            }
        }
        // A health key is newer than the health inside its instance's value.
        for (k, (v, _)) in &kvs {
            if let Some(Key::Health(key)) = self.layout.parse(k)
                && let Some(inst) = instances.get(&key)
                && let Some(h) = self.decode_health(k, v, inst)
            {
                health.insert(key, h);
            }
        }
        self.set_members(&kvs);
        *self.cache.lock().expect("cache lock") = kvs;
        let loaded = Loaded {
            instances: instances.into_values().collect(),
            index: rev.max(0) as u64,
            health: health.into_values().collect(),
        };
        Ok((loaded, rev))
    }

    /// Everything under the prefix at one revision, read in pages of `PAGE` keys: one
    /// response for the whole registry would pass the client's 4 MiB message limit at about
    /// 17,000 instances, and would make etcd build it in one piece.
    async fn read_all(&self) -> Result<(Kvs, i64), StoreError> {
        let prefix = self.layout.prefix().as_bytes().to_vec();
        let end = prefix_end(&prefix);
        let mut kvs = Kvs::new();
        let mut from = prefix;
        let mut rev = 0;
        loop {
            let mut opts = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            if rev > 0 {
                // Every page at the first page's revision: one consistent registry.
                opts = opts.with_revision(rev);
            }
            let mut client = self.client.clone();
            let resp = self
                .bounded("read", client.get(from.clone(), Some(opts)))
                .await?;
            if rev == 0 {
                rev = resp.header().map(|h| h.revision()).unwrap_or_default();
            }
            let page = resp.kvs();
            for kv in page {
                kvs.insert(kv.key().to_vec(), (kv.value().to_vec(), kv.mod_revision()));
            }
            match page.last() {
                Some(last) if resp.more() => {
                    from = last.key().to_vec();
                    from.push(0); // the next key after it
                }
                _ => break,
            }
        }
        Ok((kvs, rev))
    }

    /// A stored status, if it is for `inst`'s current check; a status that cannot be read is
    /// logged (naming its key) and skipped: the check's owner writes it again.
    fn decode_health(&self, k: &[u8], v: &[u8], inst: &Instance) -> Option<HealthChange> {
        self.read_health(k, HealthRecord::decode(v), inst)
    }

    /// A status read from key `k` (a health key, or an instance's value), if it is for
    /// `inst`'s current check.
    fn read_health(
        &self,
        k: &[u8],
        rec: Result<HealthRecord, String>,
        inst: &Instance,
    ) -> Option<HealthChange> {
        match rec.and_then(|r| r.health_for(inst.check())) {
            Ok(Some(health)) => Some(HealthChange {
                key: inst.key().clone(),
                health,
                check: inst.check().cloned(),
                fenced: false,
            }),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(key = %String::from_utf8_lossy(k), error = %e, "unreadable status skipped");
                None
            }
        }
    }

    fn set_members(&self, kvs: &Kvs) {
        let members = kvs
            .keys()
            .filter_map(|k| match self.layout.parse(k) {
                Some(Key::Member(name)) => Some(name),
                _ => None,
            })
            .collect();
        self.owners.set_members(members);
    }

    /// Watches from `from + 1` until stopped, handing every change to `tx`.
    pub(super) async fn reflect(self: Arc<Self>, from: i64, tx: mpsc::Sender<Remote>) {
        let mut rev = from;
        let mut backoff = Backoff::new();
        let mut broken = false;
        while !self.stop.is_cancelled() {
            if broken && self.pause(backoff.next()).await {
                return;
            }
            broken = true;
            let opts = WatchOptions::new()
                .with_prefix()
                .with_start_revision(rev + 1)
                .with_progress_notify();
            let mut client = self.client.clone();
            let mut stream = match self
                .bounded("watch", client.watch(self.layout.prefix(), Some(opts)))
                .await
            {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, revision = rev, "watch not opened; retrying");
                    continue;
                }
            };
            // Progress is asked every `PROBE`: the answer says the copy is current up to its
            // revision (`staleness`), and a watch that stops answering (an etcd member cut
            // off in a way the connection does not show) is opened again elsewhere.
            let mut probe = tokio::time::interval(PROBE);
            probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut heard = Instant::now();
            loop {
                let msg = tokio::select! {
                    _ = self.stop.cancelled() => return,
                    m = stream.message() => m,
                    _ = probe.tick() => {
                        if heard.elapsed() > PROBE + self.timeout * 2 {
                            self.up.store(false, Ordering::Relaxed);
                            tracing::warn!(revision = rev, "watch silent; opening it again");
                            break;
                        }
                        let _ = stream.request_progress().await;
                        continue;
                    }
                };
                let resp = match msg {
                    Ok(Some(r)) => r,
                    Ok(None) => {
                        tracing::warn!(revision = rev, "watch ended; resuming");
                        break;
                    }
                    Err(e) => {
                        self.up.store(false, Ordering::Relaxed);
                        tracing::warn!(error = %e, revision = rev, "watch failed; resuming");
                        break;
                    }
                };
                self.up.store(true, Ordering::Relaxed);
                heard = Instant::now();
                self.mark_current();
                backoff.reset();
                if resp.canceled() {
                    // Compacted past this replica's revision, or canceled by etcd for another
                    // reason (no leader, a server limit): either way the watch cannot be
                    // trusted to continue, so everything is read again and only the
                    // difference is applied.
                    tracing::warn!(
                        revision = rev,
                        compacted = resp.compact_revision(),
                        reason = resp.cancel_reason(),
                        "watch canceled by etcd; reloading"
                    );
                    match self.reload(&tx).await {
                        Ok(Some(r)) => {
                            rev = r;
                            broken = false;
                        }
                        Ok(None) => return,
                        Err(e) => tracing::warn!(error = %e, "reload failed; retrying"),
                    }
                    break;
                }
                if resp.events().is_empty() {
                    // A progress notification: everything up to its revision was delivered.
                    if !resp.created()
                        && let Some(h) = resp.header()
                    {
                        rev = rev.max(h.revision());
                    }
                    continue;
                }
                let mut changes = Vec::new();
                let mut members_changed = false;
                {
                    let mut cache = self.cache.lock().expect("cache lock");
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        rev = rev.max(kv.mod_revision());
                        let put = ev.event_type() == EventType::Put;
                        let at = kv.mod_revision() as u64;
                        match self.change(&cache, kv, put) {
                            Some(Item::Change(c)) => changes.push((at, c)),
                            Some(Item::Registration(inst, health)) => {
                                changes.push((at, Change::Put(inst)));
                                if let Some(h) = health {
                                    changes.push((at, Change::Health(Box::new(h))));
                                }
                            }
                            Some(Item::Member) => members_changed = true,
                            None => {}
                        }
                        if put {
                            cache.insert(
                                kv.key().to_vec(),
                                (kv.value().to_vec(), kv.mod_revision()),
                            );
                        } else {
                            cache.remove(kv.key());
                        }
                    }
                    if members_changed {
                        self.set_members(&cache);
                    }
                }
                if !changes.is_empty() {
                    let remote = Remote {
                        index: rev.max(0) as u64,
                        changes,
                    };
                    if tx.send(remote).await.is_err() {
                        return; // the registry is gone
                    }
                }
            }
        }
    }

    /// What one watched event means for the registry (`cache`: the copy before it).
    fn change(&self, cache: &Kvs, kv: &KeyValue, put: bool) -> Option<Item> {
        let key = self.layout.parse(kv.key())?;
        match key {
            Key::Member(_) => Some(Item::Member),
            Key::Instance(k) if !put => Some(Item::Change(Change::Delete(k))),
            Key::Instance(_) => match decode_instance(kv.value()) {
                Ok((inst, start)) => {
                    let health = start.and_then(|r| self.read_health(kv.key(), Ok(r), &inst));
                    Some(Item::Registration(Box::new(inst), health))
                }
                Err(e) => {
                    tracing::error!(key = %String::from_utf8_lossy(kv.key()), error = %e, "a record in etcd breaks a registration rule; skipped");
                    None
                }
            },
            // A status removed goes with its instance, or is replaced in the same write.
            Key::Health(_) if !put => None,
            Key::Health(k) => {
                let inst_key = self.layout.instance(&k);
                let (v, _) = cache.get(inst_key.as_bytes())?;
                let (inst, _) = decode_instance(v).ok()?;
                self.decode_health(kv.key(), kv.value(), &inst)
                    .map(|h| Item::Change(Change::Health(Box::new(h))))
            }
        }
    }

    /// Reads everything again (after a compaction) and hands on only what differs from the
    /// copy. `None` when the registry is gone.
    async fn reload(&self, tx: &mpsc::Sender<Remote>) -> Result<Option<i64>, StoreError> {
        let (kvs, rev) = self.read_all().await?;
        let mut changes = Vec::new();
        {
            let cache = self.cache.lock().expect("cache lock");
            // Registrations first, then statuses (read against the new registrations).
            for (k, (v, mod_rev)) in &kvs {
                if let Some(Key::Instance(_)) = self.layout.parse(k)
                    && cache.get(k).map(|(old, _)| old) != Some(v)
                {
                    match decode_instance(v) {
                        Ok((inst, start)) => {
                            let at = *mod_rev as u64;
                            let separate =
                                kvs.contains_key(self.layout.health(inst.key()).as_bytes());
                            let health = start
                                .filter(|_| !separate) // a health key is newer
                                .and_then(|r| self.read_health(k, Ok(r), &inst));
                            changes.push((at, Change::Put(Box::new(inst))));
                            if let Some(h) = health {
                                changes.push((at, Change::Health(Box::new(h))));
                            }
                        }
                        Err(e) => {
                            tracing::error!(key = %String::from_utf8_lossy(k), error = %e, "a record in etcd breaks a registration rule; skipped")
                        }
                    }
                }
            }
            for k in cache.keys() {
                if let Some(Key::Instance(key)) = self.layout.parse(k)
                    && !kvs.contains_key(k)
                {
                    changes.push((rev as u64, Change::Delete(key)));
                }
            }
            for (k, (v, mod_rev)) in &kvs {
                if let Some(Key::Health(key)) = self.layout.parse(k)
                    && cache.get(k).map(|(old, _)| old) != Some(v)
                    && let Some((iv, _)) = kvs.get(self.layout.instance(&key).as_bytes())
                    && let Ok((inst, _)) = decode_instance(iv)
                    && let Some(h) = self.decode_health(k, v, &inst)
                {
                    changes.push((*mod_rev as u64, Change::Health(Box::new(h))));
                }
            }
        }
        self.set_members(&kvs);
        *self.cache.lock().expect("cache lock") = kvs;
        tracing::info!(
            revision = rev,
            changes = changes.len(),
            "reloaded from etcd"
        );
        let remote = Remote {
            index: rev.max(0) as u64,
            changes,
        };
        if tx.send(remote).await.is_err() {
            return Ok(None);
        }
        Ok(Some(rev))
    }
}

/// One watched event, as the registry sees it.
enum Item {
    Change(Change),
    /// A registration, with the health it starts with when written together.
    Registration(Box<Instance>, Option<HealthChange>),
    /// A member joined or left.
    Member,
}
