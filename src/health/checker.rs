//! The checker: runs every HTTP and TCP check, each in its own task, and reports status
//! changes to the registry.
//!
//! The `Supervisor` is a registry `View`: each published change records the instance's
//! current check (or its loss) in a pending map and wakes the supervisor task, which
//! starts, replaces or stops that instance's check task. Each task sleeps a jitter derived
//! from the instance's key (the same after a restart, spread evenly over the interval), then
//! probes once per interval under the shared concurrency limit, each probe bounded by its
//! timeout, so a hanging target delays only its own check.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::state::CheckState;
use super::{http, tcp};
use crate::metrics::{ProbeKind, Probes};
use crate::model::{CheckKind, CheckSpec, InstanceKey, Status};
use crate::registry::{Changed, Registry, Snapshot, View, policy};
use crate::store::Owners;

/// What the supervisor must reconcile: instance → the check it should run now (`None`: no
/// active check, because it has none, has a TTL check, or was deregistered).
type Changes = HashMap<InstanceKey, Option<CheckSpec>>;

#[derive(Default)]
struct Pending {
    changes: Changes,
    /// The instances whose latest recorded check is active. A change of an instance that is
    /// not here and still has no active check needs nothing from the supervisor, so it is
    /// not recorded: most registrations carry no check, and recording a `None` for each (and
    /// waking the supervisor) was ~2 % of a registration's CPU.
    active: HashSet<InstanceKey>,
}

impl Pending {
    fn record(&mut self, key: &InstanceKey, want: Option<CheckSpec>) {
        match want {
            Some(spec) => {
                self.active.insert(key.clone());
                self.changes.insert(key.clone(), Some(spec));
            }
            None => {
                if self.active.remove(key) {
                    self.changes.insert(key.clone(), None);
                }
            }
        }
    }
}

/// Registry view that tells the supervisor task which checks changed.
pub(crate) struct Supervisor {
    /// Written by the registry writer in `publish`, drained by the supervisor task. A std
    /// mutex: both sides hold it only to move a map.
    pending: Mutex<Pending>,
    wake: Notify,
    /// Which checks this replica runs (all of them without replicas).
    owners: Arc<Owners>,
}

/// The check the checker runs for `spec`: HTTP and TCP only (TTL checks are reports).
fn active(spec: Option<&CheckSpec>) -> Option<CheckSpec> {
    spec.filter(|c| !matches!(c.kind(), CheckKind::Ttl(_)))
        .cloned()
}

impl View for Supervisor {
    fn publish(&self, snapshot: &Snapshot, changed: Changed<'_>) {
        let mut p = self.pending.lock().expect("pending map lock");
        match changed {
            // The first snapshot: nothing runs yet, so only instances with an active check
            // need a task (a `None` for every other instance was a transient map as big as
            // the registry).
            Changed::All => {
                let before = std::mem::take(&mut p.active);
                for e in snapshot.entries() {
                    if let Some(spec) = active(e.instance.check()) {
                        p.record(e.instance.key(), Some(spec));
                    }
                }
                for key in before {
                    if !p.active.contains(&key) {
                        p.changes.insert(key, None);
                    }
                }
            }
            Changed::Some(keys) => {
                for key in keys {
                    let spec = snapshot.get(key).and_then(|e| active(e.instance.check()));
                    p.record(key, spec);
                }
            }
        }
        let wake = !p.changes.is_empty();
        drop(p);
        if wake {
            self.wake.notify_one();
        }
    }
}

/// The delay before an instance's first probe: a hash of its key spread over the interval,
/// so start-up does not probe everything at once and a restart keeps each check's phase.
pub(crate) fn jitter(key: &InstanceKey, interval: Duration) -> Duration {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    let ms = interval.as_millis().max(1) as u64;
    Duration::from_millis(h.finish() % ms)
}

impl Supervisor {
    /// A supervisor running the checks `owners` gives this replica.
    pub(crate) fn new(owners: Arc<Owners>) -> Self {
        Self {
            pending: Mutex::new(Pending::default()),
            wake: Notify::new(),
            owners,
        }
    }

    /// Reconciles running checks with the registry until `shutdown`; check tasks join
    /// `tracker` and stop between probes, and count each probe in `probes`.
    pub(crate) async fn run(
        self: Arc<Self>,
        registry: Arc<Registry>,
        max_concurrent: usize,
        probes: Probes,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) {
        let client = http::client();
        let slots = Arc::new(Semaphore::new(max_concurrent));
        // Every active check in the registry, and the ones this replica runs (those it owns).
        let mut wanted: HashMap<InstanceKey, CheckSpec> = HashMap::new();
        let mut running: HashMap<InstanceKey, (CheckSpec, CancellationToken)> = HashMap::new();
        let mut members = self.owners.subscribe();
        let mut redeal = false;
        loop {
            let pending =
                std::mem::take(&mut self.pending.lock().expect("pending map lock").changes);
            let mut touched: Vec<InstanceKey> = Vec::with_capacity(pending.len());
            for (key, want) in pending {
                match want {
                    Some(spec) => wanted.insert(key.clone(), spec),
                    None => wanted.remove(&key),
                };
                touched.push(key);
            }
            // The live members changed: every check may have moved. One this replica takes
            // over is probed at once, not after its jitter: its previous owner is gone, and
            // the status it stored is as old as the owner's last probe.
            let takeover = std::mem::take(&mut redeal);
            if takeover {
                touched = wanted.keys().chain(running.keys()).cloned().collect();
            }
            for key in touched {
                let want = wanted.get(&key).filter(|_| self.owners.owns(&key));
                if running.get(&key).map(|(spec, _)| spec) == want {
                    continue;
                }
                if let Some((_, stop)) = running.remove(&key) {
                    stop.cancel();
                }
                if let Some(spec) = want {
                    let stop = shutdown.child_token();
                    let first = if takeover {
                        Duration::ZERO
                    } else {
                        jitter(&key, spec.interval())
                    };
                    tracker.spawn(run_check(
                        key.clone(),
                        spec.clone(),
                        first,
                        registry.clone(),
                        client.clone(),
                        probes.clone(),
                        slots.clone(),
                        stop.clone(),
                    ));
                    running.insert(key, (spec.clone(), stop));
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
                r = members.changed() => match r {
                    Ok(()) => redeal = true,
                    // The store's owners are gone (never, while the store lives).
                    Err(_) => members = watch::channel(0).1,
                },
            }
        }
    }
}

/// One probe of `spec`, counted in `probes`.
async fn probe(spec: &CheckSpec, client: &reqwest::Client, probes: &Probes) -> (Status, String) {
    let (kind, result) = match &spec.kind() {
        CheckKind::Http(url) => (
            ProbeKind::Http,
            http::probe(client, url, spec.timeout()).await,
        ),
        CheckKind::Tcp(target) => (ProbeKind::Tcp, tcp::probe(target, spec.timeout()).await),
        CheckKind::Ttl(_) => unreachable!("ttl checks are not probed"),
    };
    probes.count(kind, result.0);
    result
}

/// Probes `spec` every interval, the first probe `first` from now, until `stop`, reporting
/// status changes for `key`.
// Each argument is one piece the check task owns or shares; bundling them would only rename
// them.
#[allow(clippy::too_many_arguments)]
async fn run_check(
    key: InstanceKey,
    spec: CheckSpec,
    first: Duration,
    registry: Arc<Registry>,
    client: reqwest::Client,
    probes: Probes,
    slots: Arc<Semaphore>,
    stop: CancellationToken,
) {
    // A check taken over from another replica starts from the status it stored; a new
    // check from critical, awaiting its first result.
    let stored = registry.snapshot().get(&key).map(|e| e.health.clone());
    let mut state = match &stored {
        Some(h) if !policy::is_initial(h) => CheckState::resume(
            h.status,
            spec.success_before_passing(),
            spec.failures_before_critical(),
        ),
        _ => CheckState::new(
            spec.success_before_passing(),
            spec.failures_before_critical(),
        ),
    };
    let mut ticks = tokio::time::interval_at(Instant::now() + first, spec.interval());
    // A probe that ran long (waiting for a slot) is not followed by a burst of catch-up probes.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut first = true;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            r = async {
                let _permit = slots.acquire().await.expect("the semaphore is never closed");
                probe(&spec, &client, &probes).await
            } => r,
        };
        let (status, output) = result;
        if let Some(new) = state.observe(status) {
            tracing::debug!(instance = %key, status = new.as_str(), %output, "check changed");
            registry.check_result(&key, &spec, new, output).await;
        } else if first
            || registry
                .snapshot()
                .get(&key)
                .is_some_and(|e| e.health.status != state.status())
        {
            // The first result replaces "awaiting first check" even when the status stays
            // critical, so a check that never passes says why. Later, a registry that
            // disagrees with this check (a status write that failed while the store was
            // away) is told again.
            registry
                .check_result(&key, &spec, state.status(), output)
                .await;
        }
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{InstanceId, ServiceName};

    #[test]
    fn jitter_is_stable_and_spread() {
        let interval = Duration::from_secs(10);
        let keys: Vec<InstanceKey> = (0..1000)
            .map(|i| InstanceKey {
                service: ServiceName::parse("web").unwrap(),
                id: InstanceId::parse(&format!("i{i}")).unwrap(),
            })
            .collect();
        let mut buckets = [0usize; 10];
        for k in &keys {
            let j = jitter(k, interval);
            assert_eq!(j, jitter(k, interval), "same key, same phase");
            assert!(j < interval);
            buckets[(j.as_secs()) as usize] += 1;
        }
        // 1000 keys over 10 one-second buckets: each holds roughly 100.
        assert!(
            buckets.iter().all(|&b| (50..=150).contains(&b)),
            "{buckets:?}"
        );
    }
}
