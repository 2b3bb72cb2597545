//! `Etcd`: the registry kept in an etcd v3 cluster that several replicas share
//! (`registry.backend = "etcd"`, CONTRACT §4 "Replicas on etcd").
//!
//! Each replica keeps a local copy of everything under the prefix (`reflector`: one ranged
//! read, then a watch from the next revision) and feeds it to its registry writer as changes
//! made elsewhere, so DNS answers from memory and never waits on etcd. A write is one etcd
//! transaction; its revision is the registry index, so every replica stamps the same change
//! with the same index. Membership (`membership`) is a key on this replica's own lease; the
//! live members decide who owns which check (`store::Owners`). Writes a check's owner makes
//! (a status, a removal for `deregister_after`) are fenced on that membership, and a removal
//! also on nobody having changed the instance since.
//!
//! etcd unreachable: the copy keeps serving, writes fail at once with
//! `StoreError::Unavailable` (HTTP 503 + `Retry-After`) and nothing is queued; the watch and
//! the lease are re-established with jittered backoff, resuming from the last revision seen
//! (or reloading everything when etcd compacted past it).

mod layout;
mod membership;
mod reflector;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::layout::{HealthRecord, Layout};
use super::{Backend, Change, Loaded, Owners, Remote, StoreError, StoreFuture};
use crate::config::EtcdConfig;

/// Most registry commands in one transaction: etcd refuses a transaction of more than
/// `--max-txn-ops` operations (128 by default), and a command makes at most two (a
/// registration that replaces a check resets its status; a removal deletes the status too).
pub(crate) const MAX_CHANGES: usize = 64;

/// The etcd backend. Cheap to share: the client is a handle on one gRPC channel.
pub struct Etcd {
    client: Client,
    layout: Layout,
    /// Per request (`registry.etcd.timeout`).
    timeout: Duration,
    /// This replica's member name.
    name: String,
    member_ttl: Duration,
    /// The lease this replica's membership key is on; 0 while it has none (lost, being
    /// renewed). Written by the membership task, read by fenced writes and `ready`.
    lease: AtomicI64,
    owners: Arc<Owners>,
    /// Every key under the prefix as the watch last delivered it: value and mod revision.
    /// Written by the reflector only; read by commits (a removal's expected revision).
    cache: Mutex<reflector::Kvs>,
    /// Whether the last request or watch message reached etcd (`signpost_etcd_up`).
    up: AtomicBool,
    /// When the watch last confirmed the copy current (any watch response: events or
    /// progress), in milliseconds since `started` (`signpost_registry_staleness_seconds`).
    current_ms: AtomicU64,
    started: std::time::Instant,
    /// Stops the watch and the lease keeper.
    stop: CancellationToken,
    /// Writes are conditional on this replica's copy (a member; not `export`/`import`, which
    /// keep no copy).
    conditional: bool,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("prefix", &self.layout.prefix())
            .field("name", &self.name)
            .finish()
    }
}

fn unreachable(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("etcd {what} failed: {e}"))
}

impl Etcd {
    /// Connects to the cluster and, when `member`, joins it as member `name` (a key on a new
    /// lease of `member_ttl`) and keeps that membership alive until `stop`. Fails when etcd
    /// cannot be reached within the configured timeout: a replica starts only from a registry
    /// it has read. Without `member` (`export`, `import`) it reads and writes the registry
    /// only: it owns no check.
    pub async fn connect(
        cfg: &EtcdConfig,
        name: String,
        member: bool,
        stop: CancellationToken,
    ) -> Result<Arc<Self>, StoreError> {
        let open = |e: String| StoreError::Open {
            path: cfg.endpoints.join(",").into(),
            message: e,
        };
        // No per-request timeout on the channel: it would also end the long-lived watch and
        // keep-alive streams. Unary requests are bounded one by one (`Etcd::bounded`).
        let options = ConnectOptions::new()
            .with_connect_timeout(cfg.timeout)
            .with_keep_alive(cfg.timeout, cfg.timeout)
            .with_keep_alive_while_idle(true)
            // A member cut off from its cluster's leader refuses instead of serving stale
            // reads, and ends watches (the reflector then moves to another endpoint).
            .with_require_leader(true);
        let client = tokio::time::timeout(
            cfg.timeout,
            Client::connect(cfg.endpoints.clone(), Some(options)),
        )
        .await
        .map_err(|_| open(format!("etcd did not answer within {:?}", cfg.timeout)))?
        .map_err(|e| open(format!("cannot connect to etcd: {e}")))?;
        let etcd = Arc::new(Self {
            client,
            layout: Layout::new(&cfg.prefix),
            timeout: cfg.timeout,
            owners: Owners::member(name.clone()),
            name,
            member_ttl: cfg.member_ttl,
            lease: AtomicI64::new(0),
            cache: Mutex::new(HashMap::new()),
            up: AtomicBool::new(true),
            current_ms: AtomicU64::new(0),
            started: std::time::Instant::now(),
            stop,
            conditional: member,
        });
        if member {
            etcd.join()
                .await
                .map_err(|e| open(format!("cannot join as member {:?}: {e}", etcd.name)))?;
            tokio::spawn(etcd.clone().keep_membership());
        }
        Ok(etcd)
    }

    /// Whether etcd answered the last request or watch message.
    fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// How long since the watch last confirmed this replica's copy current: about a second
    /// while etcd is reachable (progress is asked every second), growing while it is not.
    fn staleness(&self) -> std::time::Duration {
        let now = self.started.elapsed().as_millis() as u64;
        let at = self.current_ms.load(Ordering::Relaxed);
        std::time::Duration::from_millis(now.saturating_sub(at))
    }

    /// The watch just confirmed the copy current.
    fn mark_current(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.current_ms.store(now, Ordering::Relaxed);
    }

    /// Runs one request against etcd within the timeout, recording whether it got through.
    async fn bounded<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, StoreError> {
        let r = match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(unreachable(what, e)),
            Err(_) => Err(StoreError::Unavailable(format!(
                "etcd {what}: no answer within {:?}",
                self.timeout
            ))),
        };
        self.up.store(r.is_ok(), Ordering::Relaxed);
        r
    }

    /// The transaction for a batch: each etcd key once (its last operation in the batch;
    /// etcd refuses a key twice), registrations before statuses, fenced on this replica's
    /// membership when an owner's write is in it.
    fn transaction(&self, changes: &[Change]) -> Result<Txn, StoreError> {
        let mut ops: Vec<(String, Option<Vec<u8>>)> = Vec::new();
        let mut at: HashMap<String, usize> = HashMap::new();
        let mut set = |key: String, value: Option<Vec<u8>>| match at.get(&key) {
            Some(&i) => ops[i].1 = value,
            None => {
                at.insert(key.clone(), ops.len());
                ops.push((key, value));
            }
        };
        let mut compares = Vec::new();
        let mut fenced = false;
        // Instances put by this transaction (a status for one rides in its value).
        let mut put_here: HashMap<crate::model::InstanceKey, &crate::model::Instance> =
            HashMap::new();
        let cache = self.cache.lock().expect("cache lock");
        // A registration, replacement or removal applies only to the instance as this
        // replica last saw it (the revision of its key in the copy, or no key): a write
        // another replica made meanwhile fails the transaction (`Conflict`, retried by the
        // client once the copy has it), so a replacement never drops a maintenance mode set
        // elsewhere and a removal never removes a registration it has not seen. Once per key.
        let mut expected = std::collections::HashSet::new();
        let mut expect = |compares: &mut Vec<Compare>,
                          key: &crate::model::InstanceKey,
                          must_exist: bool| {
            if !self.conditional || !expected.insert(key.clone()) {
                return Ok(());
            }
            let k = self.layout.instance(key);
            match cache.get(k.as_bytes()) {
                Some((_, rev)) => compares.push(Compare::mod_revision(k, CompareOp::Equal, *rev)),
                None if must_exist => {
                    return Err(StoreError::Conflict(format!(
                        "instance {key} is not in etcd any more"
                    )));
                }
                None => compares.push(Compare::version(k, CompareOp::Equal, 0)),
            }
            Ok(())
        };
        for c in changes {
            match c {
                Change::Put(inst) => {
                    expect(&mut compares, inst.key(), false)?;
                    put_here.insert(inst.key().clone(), &**inst);
                    set(
                        self.layout.instance(inst.key()),
                        Some(layout::encode_instance(inst, None)),
                    );
                }
                Change::Delete(key) | Change::Reap(key) => {
                    let reap = matches!(c, Change::Reap(_));
                    // A removal for deregister_after needs the registration this replica saw
                    // critical; a re-registration since wins.
                    expect(&mut compares, key, reap)?;
                    fenced |= reap;
                    put_here.remove(key);
                    set(self.layout.instance(key), None);
                    set(self.layout.health(key), None);
                }
                Change::Health(h) => match put_here.get(&h.key) {
                    // The health a registration starts with goes inside its value; a health
                    // key from before (another check's) goes.
                    Some(inst) if !h.fenced => {
                        let start = Some((&h.health, h.check.as_ref()));
                        set(
                            self.layout.instance(&h.key),
                            Some(layout::encode_instance(inst, start)),
                        );
                        set(self.layout.health(&h.key), None);
                    }
                    put => {
                        if put.is_none() {
                            // A status never outlives (or re-creates) its instance.
                            compares.push(Compare::version(
                                self.layout.instance(&h.key),
                                CompareOp::Greater,
                                0,
                            ));
                        }
                        fenced |= h.fenced;
                        set(
                            self.layout.health(&h.key),
                            Some(HealthRecord::encode(&h.health, h.check.as_ref())),
                        );
                    }
                },
            }
        }
        drop(cache);
        if fenced {
            let lease = self.lease.load(Ordering::Relaxed);
            if lease == 0 {
                return Err(StoreError::Unavailable(
                    "this replica's etcd membership lapsed and is being renewed".into(),
                ));
            }
            compares.push(Compare::lease(
                self.layout.member(&self.name),
                CompareOp::Equal,
                lease,
            ));
        }
        let health = self.layout.health_prefix();
        // Registrations first: a watcher reads a status against the instance before it.
        ops.sort_by_key(|(k, _)| k.starts_with(&health));
        let ops: Vec<TxnOp> = ops
            .into_iter()
            .map(|(k, v)| match v {
                Some(v) => TxnOp::put(k, v, None),
                None => TxnOp::delete(k, None),
            })
            .collect();
        Ok(Txn::new().when(compares).and_then(ops))
    }

    async fn commit_now(self: Arc<Self>, changes: Vec<Change>) -> Result<u64, StoreError> {
        let txn = self.transaction(&changes)?;
        let mut client = self.client.clone();
        let resp = self.bounded("write", client.txn(txn)).await?;
        if !resp.succeeded() {
            return Err(StoreError::Conflict(
                "the instance changed meanwhile, or this replica's membership lapsed; \
                 nothing was written"
                    .into(),
            ));
        }
        let rev = resp.header().map(|h| h.revision()).unwrap_or_default();
        Ok(rev.max(0) as u64)
    }
}

impl Backend for Etcd {
    fn load(self: Arc<Self>) -> StoreFuture<Loaded> {
        Box::pin(async move { self.list().await.map(|(loaded, _)| loaded) })
    }

    fn commit(self: Arc<Self>, changes: Vec<Change>, _at_least: u64) -> StoreFuture<u64> {
        // Started now (spawned), so the registry's views prepare while etcd commits.
        let task = tokio::spawn(self.commit_now(changes));
        Box::pin(async move {
            task.await
                .unwrap_or_else(|e| Err(StoreError::Write(format!("etcd write task: {e}"))))
        })
    }

    fn changes(self: Arc<Self>, from: u64) -> mpsc::Receiver<Remote> {
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(self.reflect(from as i64, tx));
        rx
    }

    fn flush(self: Arc<Self>) -> StoreFuture<()> {
        // Every write is durable in etcd once answered. Leaving now hands this replica's
        // checks to the others at once instead of after its lease runs out.
        Box::pin(async move {
            self.leave().await;
            Ok(())
        })
    }

    fn ready(self: Arc<Self>) -> StoreFuture<()> {
        Box::pin(async move {
            if self.lease.load(Ordering::Relaxed) == 0 {
                return Err(StoreError::Unavailable(
                    "this replica's etcd membership lapsed and is being renewed".into(),
                ));
            }
            let mut client = self.client.clone();
            let key = self.layout.member(&self.name);
            let opts = GetOptions::new().with_keys_only();
            let resp = self.bounded("read", client.get(key, Some(opts))).await?;
            if resp.kvs().is_empty() {
                return Err(StoreError::Unavailable(
                    "this replica's etcd membership key is gone; it is being renewed".into(),
                ));
            }
            Ok(())
        })
    }

    fn shares_health(&self) -> bool {
        true
    }

    fn owners(&self) -> Arc<Owners> {
        self.owners.clone()
    }

    fn max_batch(&self) -> usize {
        MAX_CHANGES
    }

    fn link(&self) -> Option<super::Link> {
        Some(super::Link {
            up: self.is_up(),
            staleness: self.staleness(),
        })
    }
}

#[cfg(test)]
mod tests {
    //! With a real etcd (Debian's `etcd-server`) started here on loopback ports: the copy is
    //! seeded by `list` and, with no watch running, kept stale on purpose, as a replica's is
    //! for the moment before its watch delivers another replica's write.

    use super::*;
    use crate::model::testing;

    /// An etcd process, its data dir (removed with it) and its client URL.
    struct Server {
        child: std::process::Child,
        _dir: tempfile::TempDir,
        url: String,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn port() -> u16 {
        loop {
            let seed = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos();
            let p = 20000 + (seed.wrapping_mul(2654435761) % 12000) as u16;
            if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
                return p;
            }
        }
    }

    fn etcd() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let (c, p) = (port(), port());
        let client = format!("http://127.0.0.1:{c}");
        let peer = format!("http://127.0.0.1:{p}");
        let child = std::process::Command::new("etcd")
            .args(["--name", "u", "--data-dir"])
            .arg(dir.path().join("d"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args([
                "--initial-cluster",
                &format!("u={peer}"),
                "--log-level",
                "error",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("etcd starts (Debian: apt-get install -y etcd-server)");
        Server {
            child,
            _dir: dir,
            url: client,
        }
    }

    async fn connect(server: &Server, member: bool) -> Arc<Etcd> {
        let cfg = EtcdConfig {
            endpoints: vec![server.url.clone()],
            ..EtcdConfig::default()
        };
        let start = std::time::Instant::now();
        loop {
            match Etcd::connect(&cfg, "t".into(), member, CancellationToken::new()).await {
                Ok(e) => return e,
                Err(e) if start.elapsed() > Duration::from_secs(20) => panic!("{e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    #[tokio::test]
    async fn writes_apply_only_to_the_instance_as_this_replica_saw_it() {
        let server = etcd();
        let replica = connect(&server, true).await;
        let elsewhere = connect(&server, false).await;
        replica.list().await.unwrap();
        let a = testing::instance("web", "a").build();
        // Another replica registers it (with maintenance on) after this one's copy was read.
        let set_elsewhere = a.clone().with_maintenance(Some(
            crate::model::Maintenance::new("swap".into(), std::time::UNIX_EPOCH).unwrap(),
        ));
        elsewhere
            .clone()
            .commit(vec![Change::Put(Box::new(set_elsewhere))], 0)
            .await
            .unwrap();
        // This replica's replacement, computed on its stale copy, is refused...
        let e = replica
            .clone()
            .commit(vec![Change::Put(Box::new(a.clone()))], 0)
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Conflict(_)), "{e}");
        // ...and so is a removal of what it has not seen.
        let e = replica
            .clone()
            .commit(vec![Change::Delete(a.key().clone())], 0)
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Conflict(_)), "{e}");
        // Once its copy has the other write, both go through.
        let (loaded, _) = replica.list().await.unwrap();
        assert!(loaded.instances[0].maintenance().is_some());
        replica
            .clone()
            .commit(vec![Change::Put(Box::new(loaded.instances[0].clone()))], 0)
            .await
            .unwrap();
        replica.list().await.unwrap();
        replica
            .clone()
            .commit(vec![Change::Delete(a.key().clone())], 0)
            .await
            .unwrap();
        // Import (no copy, not a member) writes unconditionally.
        elsewhere
            .clone()
            .commit(vec![Change::Put(Box::new(a))], 0)
            .await
            .unwrap();
    }
}
