//! Registry deadlines under paused tokio time: TTL checks go critical exactly when overdue,
//! and `deregister_after` removes an instance (durably) exactly that long after it went
//! critical — woken at the deadline, not on a sweep.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::*;
use crate::model::{CheckSpec, InstanceId, ServiceName};
use crate::store::Embedded;

fn inst(id: &str, ttl: u64, deregister_after: Option<u64>) -> Instance {
    Instance {
        key: InstanceKey {
            service: ServiceName::parse("batch").unwrap(),
            id: InstanceId::parse(id).unwrap(),
        },
        address: "10.0.0.1".parse().unwrap(),
        port: 80,
        tags: vec![],
        meta: Default::default(),
        weight: 1,
        priority: 0,
        ttl: None,
        check: Some(CheckSpec {
            kind: CheckKind::Ttl(Duration::from_secs(ttl)),
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
            success_before_passing: 1,
            failures_before_critical: 1,
        }),
        deregister_after: deregister_after.map(Duration::from_secs),
        maintenance: None,
    }
}

async fn settle() {
    // Let the timers task run what is due without moving the clock. A removal waits for a
    // store commit on the blocking pool, which takes real time: give it some between yields.
    for _ in 0..15 {
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Moves the clock by `d` in 100 ms steps, letting due timers fire at each, as real time would.
async fn step(d: Duration) {
    let tick = Duration::from_millis(100);
    let mut left = d;
    while !left.is_zero() {
        let t = left.min(tick);
        tokio::time::advance(t).await;
        settle().await;
        left -= t;
    }
}

/// Waits (in real time, the paused clock standing still) until `id` is gone: a removal
/// commits to the store on the blocking pool, which takes real time. False after 5 s.
async fn gone(r: &Registry, id: &str) -> bool {
    for _ in 0..5000 {
        if status_of(r, id).is_none() {
            return true;
        }
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

fn status_of(r: &Registry, id: &str) -> Option<Status> {
    let key = inst(id, 1, None).key;
    r.snapshot().get(&key).map(|e| e.health.status)
}

#[tokio::test(start_paused = true)]
async fn ttl_goes_critical_exactly_when_overdue() {
    let dir = tempfile::tempdir().unwrap();
    let r = Registry::open(Arc::new(Embedded::open(dir.path()).unwrap()), vec![]).unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(crate::health::timers::run(r.clone(), stop.clone()));
    let i = inst("b1", 15, None);
    r.register(i.clone()).await.unwrap();
    assert_eq!(
        status_of(&r, "b1"),
        Some(Status::Critical),
        "critical until reported"
    );
    r.report(&i.key, Status::Passing, String::new())
        .await
        .unwrap();
    step(Duration::from_millis(14_900)).await;
    assert_eq!(status_of(&r, "b1"), Some(Status::Passing));
    // A report restarts the TTL.
    r.report(&i.key, Status::Passing, String::new())
        .await
        .unwrap();
    step(Duration::from_millis(14_900)).await;
    assert_eq!(status_of(&r, "b1"), Some(Status::Passing));
    let index = r.snapshot().index;
    step(Duration::from_millis(200)).await;
    assert_eq!(status_of(&r, "b1"), Some(Status::Critical));
    assert_eq!(r.snapshot().index, index + 1, "expiry is one change");
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn deregister_after_removes_at_the_deadline_durably() {
    let dir = tempfile::tempdir().unwrap();
    let r = Registry::open(Arc::new(Embedded::open(dir.path()).unwrap()), vec![]).unwrap();
    let stop = CancellationToken::new();
    let timers = tokio::spawn(crate::health::timers::run(r.clone(), stop.clone()));
    // Never reports: critical from registration; removed 10 s later.
    r.register(inst("b1", 5, Some(10))).await.unwrap();
    // Reports once, then goes quiet: critical at 5 s, removed at 5 + 10 s.
    let b2 = inst("b2", 5, Some(10));
    r.register(b2.clone()).await.unwrap();
    r.report(&b2.key, Status::Passing, String::new())
        .await
        .unwrap();
    step(Duration::from_millis(9_900)).await;
    assert!(status_of(&r, "b1").is_some());
    step(Duration::from_millis(200)).await;
    assert!(gone(&r, "b1").await, "b1 removed at 10 s");
    assert_eq!(status_of(&r, "b2"), Some(Status::Critical));
    step(Duration::from_millis(4_700)).await;
    assert!(status_of(&r, "b2").is_some(), "b2 critical only since 5 s");
    step(Duration::from_millis(400)).await;
    assert!(gone(&r, "b2").await, "b2 removed at 15 s");
    stop.cancel();
    timers.await.unwrap();
    drop(r);
    let stored = Embedded::open(dir.path()).unwrap().load().unwrap();
    assert!(stored.instances.is_empty(), "removal is durable");
}

#[tokio::test(start_paused = true)]
async fn recovery_cancels_deregistration() {
    let dir = tempfile::tempdir().unwrap();
    let r = Registry::open(Arc::new(Embedded::open(dir.path()).unwrap()), vec![]).unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(crate::health::timers::run(r.clone(), stop.clone()));
    let b1 = inst("b1", 60, Some(10));
    r.register(b1.clone()).await.unwrap();
    step(Duration::from_secs(5)).await;
    r.report(&b1.key, Status::Passing, String::new())
        .await
        .unwrap();
    step(Duration::from_secs(30)).await;
    assert_eq!(status_of(&r, "b1"), Some(Status::Passing));
    stop.cancel();
}
