//! The registry writer: deadlines under paused tokio time (TTL checks go critical exactly when
//! overdue, `deregister_after` removes an instance durably exactly that long after it went
//! critical, woken at the deadline, not on a sweep), and batching (concurrent writes share
//! commits, each answered only once durable and visible).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::*;
use crate::model::{CheckKind, CheckSpec, Instance, Status, testing};
use crate::store::{Backend, Change, Embedded, Loaded, Remote, StoreError, StoreFuture};

/// `batch/<id>` with a TTL check of `ttl` seconds (interval 10 s, timeout 1 s).
fn draft(id: &str, ttl: u64, deregister_after: Option<u64>) -> testing::Draft {
    let check = CheckSpec::new(
        CheckKind::Ttl(Duration::from_secs(ttl)),
        Some(Duration::from_secs(10)),
        Some(Duration::from_secs(1)),
        None,
        None,
    )
    .unwrap();
    let d = testing::instance("batch", id).check(check);
    match deregister_after {
        Some(s) => d.deregister_after(Duration::from_secs(s)),
        None => d,
    }
}

fn inst(id: &str, ttl: u64, deregister_after: Option<u64>) -> Instance {
    draft(id, ttl, deregister_after).build()
}

async fn settle() {
    // Let the writer fire what is due without moving the clock. A removal waits for a
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
    let key = inst(id, 1, None).key().clone();
    r.snapshot().get(&key).map(|e| e.health.status)
}

#[tokio::test(start_paused = true)]
async fn ttl_goes_critical_exactly_when_overdue() {
    let dir = tempfile::tempdir().unwrap();
    let (r, writer) = Registry::open(Arc::new(Embedded::open(dir.path()).unwrap()), vec![])
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let _writer = tokio::spawn(writer.run(stop.clone()));
    let i = inst("b1", 15, None);
    r.register(i.clone()).await.unwrap();
    assert_eq!(
        status_of(&r, "b1"),
        Some(Status::Critical),
        "critical until reported"
    );
    r.report(i.key(), Status::Passing, String::new())
        .await
        .unwrap();
    step(Duration::from_millis(14_900)).await;
    assert_eq!(status_of(&r, "b1"), Some(Status::Passing));
    // A report restarts the TTL.
    r.report(i.key(), Status::Passing, String::new())
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
    let (r, writer) = Registry::open(Arc::new(Embedded::open(dir.path()).unwrap()), vec![])
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let writer = tokio::spawn(writer.run(stop.clone()));
    // Never reports: critical from registration; removed 10 s later.
    r.register(inst("b1", 5, Some(10))).await.unwrap();
    // Reports once, then goes quiet: critical at 5 s, removed at 5 + 10 s.
    let b2 = inst("b2", 5, Some(10));
    r.register(b2.clone()).await.unwrap();
    r.report(b2.key(), Status::Passing, String::new())
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
    r.flush().await.unwrap();
    writer.await.unwrap();
    drop(r);
    let stored = Embedded::open(dir.path()).unwrap().load().unwrap();
    assert!(stored.instances.is_empty(), "removal is durable");
}

#[tokio::test(start_paused = true)]
async fn recovery_cancels_deregistration() {
    let dir = tempfile::tempdir().unwrap();
    let (r, writer) = Registry::open(Arc::new(Embedded::open(dir.path()).unwrap()), vec![])
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let _writer = tokio::spawn(writer.run(stop.clone()));
    let b1 = inst("b1", 60, Some(10));
    r.register(b1.clone()).await.unwrap();
    step(Duration::from_secs(5)).await;
    r.report(b1.key(), Status::Passing, String::new())
        .await
        .unwrap();
    step(Duration::from_secs(30)).await;
    assert_eq!(status_of(&r, "b1"), Some(Status::Passing));
    stop.cancel();
}

/// The real store, counting commits, failing them on demand (a full disk cannot be made to
/// happen on cue), and with a stream of changes "made elsewhere" that a test feeds.
struct Counting {
    inner: Arc<Embedded>,
    commits: std::sync::atomic::AtomicUsize,
    fail: std::sync::atomic::AtomicBool,
    remote: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<Remote>>>,
    /// Whether it offers the embedded store's commit on the caller's thread (`CommitHere`),
    /// as the embedded store does, or only the asynchronous one, as etcd.
    here: bool,
    /// Commits made on the caller's thread.
    commits_here: std::sync::atomic::AtomicUsize,
}

impl Counting {
    fn new(inner: Embedded) -> (Arc<Self>, tokio::sync::mpsc::Sender<Remote>) {
        Self::with_here(inner, false)
    }

    fn with_here(inner: Embedded, here: bool) -> (Arc<Self>, tokio::sync::mpsc::Sender<Remote>) {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let c = Counting {
            inner: Arc::new(inner),
            commits: Default::default(),
            fail: Default::default(),
            remote: std::sync::Mutex::new(Some(rx)),
            here,
            commits_here: Default::default(),
        };
        (Arc::new(c), tx)
    }

    /// Counts a commit, or fails it when asked to.
    fn count(&self) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering::SeqCst;
        if self.fail.load(SeqCst) {
            return Err(StoreError::Write("disk full".into()));
        }
        self.commits.fetch_add(1, SeqCst);
        Ok(())
    }
}

impl crate::store::CommitHere for Counting {
    fn commit_here(&self, changes: &[Change], at_least: u64) -> Result<u64, StoreError> {
        self.count()?;
        self.commits_here
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.commit_here(changes, at_least)
    }
}

impl Backend for Counting {
    fn load(self: Arc<Self>) -> StoreFuture<Loaded> {
        self.inner.clone().load()
    }
    fn commit(self: Arc<Self>, changes: Vec<Change>, at_least: u64) -> StoreFuture<u64> {
        if let Err(e) = self.count() {
            return Box::pin(async { Err(e) });
        }
        self.inner.clone().commit(changes, at_least)
    }
    fn here(&self) -> Option<&dyn crate::store::CommitHere> {
        self.here.then_some(self as _)
    }
    fn changes(self: Arc<Self>, _from: u64) -> tokio::sync::mpsc::Receiver<Remote> {
        self.remote.lock().unwrap().take().expect("asked once")
    }
    fn flush(self: Arc<Self>) -> StoreFuture<()> {
        self.inner.clone().flush()
    }
    fn ready(self: Arc<Self>) -> StoreFuture<()> {
        self.inner.clone().ready()
    }
}

/// A DNS view with the default config and an empty zones folder in `dir`.
fn dns_view(dir: &std::path::Path) -> Arc<crate::dns::DnsView> {
    let mut config = crate::config::Config::default();
    config.dns.zones_dir = dir.join("zones");
    std::fs::create_dir(&config.dns.zones_dir).unwrap();
    crate::dns::DnsView::new(&config).unwrap()
}

/// Whether DNS has the name `<id>.<service>.instance.internal.` (`id_service` is
/// `"<id>.<service>"`).
fn has_instance(dns: &crate::dns::DnsView, id_service: &str) -> bool {
    let name = crate::dns::names::from_dotted(&format!("{id_service}.instance.internal."));
    matches!(
        dns.table().lookup(&name.unwrap()),
        crate::dns::table::Lookup::Found(..)
    )
}

fn plain(id: usize) -> Instance {
    testing::instance("batch", &format!("p{id}")).build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_commits_and_all_land() {
    // Small batches are committed on the writer's thread when the store can, larger ones on
    // the store's: both ways.
    for here in [true, false] {
        concurrent_writes(here).await;
    }
}

async fn concurrent_writes(here: bool) {
    use std::sync::atomic::Ordering::SeqCst;
    let dir = tempfile::tempdir().unwrap();
    let (backend, _remote) = Counting::with_here(Embedded::open(dir.path()).unwrap(), here);
    let (r, writer) = Registry::open(backend.clone(), vec![]).await.unwrap();
    let stop = CancellationToken::new();
    let writer = tokio::spawn(writer.run(stop.clone()));
    let n = 400;
    // One alone first: a batch of one, committed on the writer's thread when the store can.
    r.register(plain(0)).await.unwrap();
    let tasks: Vec<_> = (1..n)
        .map(|i| {
            let r = r.clone();
            tokio::spawn(async move { r.register(plain(i)).await })
        })
        .collect();
    for t in tasks {
        let e = t.await.unwrap().unwrap();
        // Answered only once visible.
        assert!(r.snapshot().get(e.instance.key()).is_some());
    }
    assert_eq!(r.snapshot().index, n as u64);
    let commits = backend.commits.load(SeqCst);
    assert!(
        commits < n,
        "{commits} commits for {n} writes, {} of them concurrent: no batching",
        n - 1
    );
    assert_eq!(backend.commits_here.load(SeqCst) > 0, here);
    r.flush().await.unwrap();
    writer.await.unwrap();
    let stored = Embedded::open(dir.path());
    assert!(stored.is_err(), "still open by the registry");
    drop(r);
    drop(backend);
    let stored = Embedded::open(dir.path()).unwrap().load().unwrap();
    assert_eq!((stored.instances.len(), stored.index), (n, n as u64));
}

#[tokio::test]
async fn a_failed_commit_changes_nothing() {
    a_failed_commit(false).await;
}

/// The same on a multi-threaded runtime with a store that commits on the writer's thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_on_the_writers_thread_changes_nothing() {
    a_failed_commit(true).await;
}

async fn a_failed_commit(here: bool) {
    use std::sync::atomic::Ordering::SeqCst;
    let dir = tempfile::tempdir().unwrap();
    let (backend, _remote) = Counting::with_here(Embedded::open(dir.path()).unwrap(), here);
    let dns = dns_view(dir.path());
    // Whether DNS has the instance name of plain(id) (the view prepares a batch's names while
    // its commit is on the disk: a failed commit must leave none of it behind).
    let in_dns = |id: usize| {
        let svc = if id == 9 { "other" } else { "batch" };
        has_instance(&dns, &format!("p{id}.{svc}"))
    };
    let (r, writer) = Registry::open(backend.clone(), vec![dns.clone()])
        .await
        .unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(writer.run(stop.clone()));
    r.register(plain(1)).await.unwrap();
    assert!(in_dns(1));
    backend.fail.store(true, SeqCst);
    let err = r.register(plain(2)).await.unwrap_err();
    assert!(err.to_string().contains("disk full"), "{err}");
    let err = r.deregister(plain(1).key()).await.unwrap_err();
    assert!(matches!(err, RegistryError::Store(_)), "{err}");
    let other = testing::instance("other", "p9").build();
    r.register(other).await.unwrap_err();
    let snap = r.snapshot();
    assert_eq!(snap.index, 1);
    assert!(snap.get(plain(1).key()).is_some() && snap.get(plain(2).key()).is_none());
    assert!(in_dns(1) && !in_dns(2) && !in_dns(9));
    backend.fail.store(false, SeqCst);
    r.register(plain(2)).await.unwrap();
    assert_eq!(r.snapshot().index, 2);
    assert!(in_dns(1) && in_dns(2) && !in_dns(9));
    // A later change of the same service publishes what the registry holds, not what the
    // failed batches had prepared.
    r.register(plain(3)).await.unwrap();
    assert!(in_dns(1) && in_dns(2) && in_dns(3) && !in_dns(9));
    stop.cancel();
}

#[tokio::test]
async fn changes_made_elsewhere_are_published_like_local_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, remote) = Counting::new(Embedded::open(dir.path()).unwrap());
    let dns = dns_view(dir.path());
    let in_dns = |id: &str| has_instance(&dns, &format!("{id}.batch"));
    let (r, writer) = Registry::open(backend.clone(), vec![dns.clone()])
        .await
        .unwrap();
    let writer = tokio::spawn(writer.run(CancellationToken::new()));
    r.register(plain(1)).await.unwrap();
    let mut index = r.subscribe();
    let elsewhere = testing::instance("batch", "p7")
        .maintenance("kept as stored", std::time::SystemTime::UNIX_EPOCH)
        .build();
    remote
        .send(Remote {
            index: 40,
            changes: vec![
                (39, Change::Put(Box::new(elsewhere.clone()))),
                (40, Change::Delete(plain(1).key().clone())),
            ],
        })
        .await
        .unwrap();
    index.wait_for(|i| *i == 40).await.unwrap();
    let snap = r.snapshot();
    assert_eq!(snap.index, 40, "the store's index, not a local count");
    let batch = crate::model::ServiceName::parse("batch").unwrap();
    assert_eq!(
        snap.service_index(&batch),
        40,
        "its service's last change too"
    );
    assert!(snap.get(plain(1).key()).is_none());
    let e = snap.get(elsewhere.key()).unwrap();
    assert_eq!(e.instance, elsewhere, "taken as stored (maintenance too)");
    assert!(in_dns("p7") && !in_dns("p1"));
    assert_eq!(
        backend.commits.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "not stored again"
    );
    // A local write after them continues above their index.
    let e = r.register(plain(2)).await.unwrap();
    assert!(r.snapshot().index > 40, "{}", r.snapshot().index);
    assert!(r.snapshot().get(e.instance.key()).is_some());
    // The writer ends when the last handle is gone (no cycle keeps it alive).
    drop(r);
    tokio::time::timeout(Duration::from_secs(5), writer)
        .await
        .expect("the writer ended with its last handle")
        .unwrap();
}
