//! The registry: the one writer of registrations and health.
//!
//! Every change is a command to the writer task (`writer`), which takes whatever commands
//! are waiting (up to a batch), applies them in order to a copy of the current `Snapshot`,
//! commits the batch's durable changes through the store `Backend` (one fsync for many
//! registrations) and takes the index the store assigned, hands the new snapshot to every
//! `View` (the DNS name table, the checker), and only then publishes it, bumps the index and
//! answers each caller. So once a write returns, the very next DNS answer and HTTP read see
//! it, and a failed write changes nothing. Changes committed elsewhere (another replica,
//! through a shared store) enter the same writer and are published the same way. The writer
//! keeps the TTL and `deregister_after` deadlines (`policy`) and fires them.
//!
//! Ownership: handles (`Registry`) hold the command sender and the published state; the
//! writer holds the receiver and the published state, never a handle, so it ends when the
//! last handle is dropped.

pub(crate) mod policy;
mod snapshot;
mod writer;

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot, watch};

use crate::model::{CheckSpec, Instance, InstanceKey, InvalidField, Maintenance, Status};
use crate::store::{Backend, StoreError};

pub(crate) use snapshot::ServiceInstances;
pub use snapshot::{Entry, Snapshot};
pub use writer::Writer;

/// A failed registry operation; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No instance is registered under this key.
    #[error("instance {0} is not registered")]
    NotFound(InstanceKey),
    /// A health report for an instance without a TTL check; the text says where its health
    /// comes from instead.
    #[error("instance {0} has no ttl check: its health comes from {1}")]
    NoTtlCheck(InstanceKey, &'static str),
    /// A value in the request breaks a registration rule.
    #[error(transparent)]
    Invalid(#[from] InvalidField),
    /// The store did not take the write.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The writer task has stopped (shutdown, or it panicked).
    #[error("the registry is shutting down")]
    Stopped,
}

/// What a published snapshot changed.
#[derive(Debug, Clone, Copy)]
pub enum Changed<'a> {
    /// Everything (the first snapshot, loaded from the store).
    All,
    /// These instances: registered, replaced, deregistered, or their health or maintenance.
    Some(&'a [InstanceKey]),
}

/// Something rebuilt from every new snapshot before it is published (the DNS name table,
/// the checker). Its methods run on the writer's task, so they must not block.
///
/// A batch's snapshot is first offered to `prepare` while the batch's commit is still on its
/// way to the store: work done there is hidden from readers until `publish`, and overlaps the
/// commit instead of following it. Then exactly one of `publish` (the commit succeeded;
/// the same changes, with the snapshot's index now the one the store assigned) or `discard`
/// (it failed; `committed` is the registry as it still is) is called. `publish` alone, without
/// `prepare`, must do the whole job (start-up, `All`, changes from elsewhere).
pub trait View: Send + Sync + 'static {
    /// Prepares for `snapshot` while its commit is in flight, hidden from readers.
    fn prepare(&self, _snapshot: &Snapshot, _changed: Changed<'_>) {}
    /// Drops what `prepare` did: the commit failed and `committed` still stands.
    fn discard(&self, _committed: &Snapshot, _changed: Changed<'_>) {}
    /// Makes `snapshot` what readers see.
    fn publish(&self, snapshot: &Snapshot, changed: Changed<'_>);
}

/// One change asked of the writer.
#[derive(Debug)]
pub(crate) enum Op {
    Register(Box<Instance>),
    Deregister(InstanceKey),
    Report(InstanceKey, Status, String),
    CheckResult(InstanceKey, Box<CheckSpec>, Status, String),
    Maintenance(InstanceKey, Option<Maintenance>),
}

type Reply = oneshot::Sender<Result<Option<Arc<Entry>>, RegistryError>>;

pub(crate) enum Command {
    Op(Op, Reply),
    /// Make everything durable and stop the writer (shutdown, after the servers drained).
    Flush(oneshot::Sender<Result<(), StoreError>>),
}

/// Commands waiting for the writer; past this, callers wait to enqueue (backpressure on
/// HTTP writes and check results rather than unbounded memory).
const QUEUE: usize = 8192;

/// What the writer publishes and everyone reads.
pub(crate) struct Published {
    /// The published snapshot. Stored only by the writer; read lock-free by anyone.
    current: ArcSwap<Snapshot>,
    /// The index of `current`, for long-polls to wait on. Sent after `current` is stored.
    index: watch::Sender<u64>,
}

impl Published {
    /// Publishes `snap` (writer only).
    fn publish(&self, snap: Snapshot) {
        let index = snap.index;
        self.current.store(Arc::new(snap));
        self.index.send_replace(index);
    }
}

/// The handle everyone shares: reads are lock-free, writes go to the writer task.
pub struct Registry {
    published: Arc<Published>,
    commands: mpsc::Sender<Command>,
    /// The store, asked only whether it can take writes (`ready`); the writer writes to it.
    store: Arc<dyn Backend>,
}

impl Registry {
    /// Loads every registration from `backend`, hands the first snapshot to `views`, and
    /// returns the handle and the writer, which the caller runs (`Writer::run`).
    /// Health is not stored: instances with a check start critical until it passes.
    pub async fn open(
        backend: Arc<dyn Backend>,
        views: Vec<Arc<dyn View>>,
    ) -> Result<(Arc<Self>, Writer), StoreError> {
        let started = std::time::Instant::now();
        let loaded = backend.clone().load().await?;
        let load_ms = started.elapsed().as_millis();
        let (tx, rx) = mpsc::channel(QUEUE);
        let remote = backend.clone().changes(loaded.index);
        let (writer, first) = Writer::new(backend.clone(), loaded, views, rx, remote);
        tracing::info!(
            load_ms,
            build_ms = started.elapsed().as_millis() - load_ms,
            "registry loaded from the store and its views built"
        );
        let (index, _) = watch::channel(first.index);
        let published = Arc::new(Published {
            current: ArcSwap::from_pointee(first),
            index,
        });
        let registry = Arc::new(Self {
            published: published.clone(),
            commands: tx,
            store: backend,
        });
        Ok((registry, writer.publishing_to(published)))
    }

    /// The current snapshot; never blocks.
    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.published.current.load_full()
    }

    /// A receiver of the index, to wait for changes (long-poll).
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.published.index.subscribe()
    }

    /// How the connection to a shared store stands (`None` with the embedded store).
    pub(crate) fn store_link(&self) -> Option<crate::store::Link> {
        self.store.link()
    }

    /// `Ok` while the store can take writes (a store whose failure has passed is repaired
    /// here).
    pub(crate) async fn ready(&self) -> Result<(), StoreError> {
        self.store.clone().ready().await
    }

    async fn ask(&self, op: Op) -> Result<Option<Arc<Entry>>, RegistryError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Op(op, tx))
            .await
            .map_err(|_| RegistryError::Stopped)?;
        rx.await.map_err(|_| RegistryError::Stopped)?
    }

    async fn ask_entry(&self, op: Op) -> Result<Arc<Entry>, RegistryError> {
        self.ask(op).await?.ok_or(RegistryError::Stopped) // every entry-returning op answers with one
    }

    /// Registers or replaces an instance. A replacement keeps its maintenance mode, and keeps
    /// its health when its check did not change.
    pub async fn register(&self, inst: Instance) -> Result<Arc<Entry>, RegistryError> {
        self.ask_entry(Op::Register(Box::new(inst))).await
    }

    /// Removes an instance; `NotFound` when it is not registered.
    pub(crate) async fn deregister(&self, key: &InstanceKey) -> Result<(), RegistryError> {
        self.ask(Op::Deregister(key.clone())).await.map(|_| ())
    }

    /// A health report for a TTL check: sets the status and restarts the TTL.
    pub(crate) async fn report(
        &self,
        key: &InstanceKey,
        status: Status,
        output: String,
    ) -> Result<Arc<Entry>, RegistryError> {
        self.ask_entry(Op::Report(key.clone(), status, output))
            .await
    }

    /// A status change found by the checker running `spec` for `key`. Ignored when the
    /// instance is gone or now has another check (a late result of a replaced check).
    pub(crate) async fn check_result(
        &self,
        key: &InstanceKey,
        spec: &CheckSpec,
        status: Status,
        output: String,
    ) {
        let op = Op::CheckResult(key.clone(), Box::new(spec.clone()), status, output);
        if let Err(e) = self.ask(op).await {
            tracing::debug!(instance = %key, error = %e, "check result not applied");
        }
    }

    /// Turns maintenance mode on (with a reason) or off; persisted.
    pub(crate) async fn set_maintenance(
        &self,
        key: &InstanceKey,
        reason: Option<String>,
    ) -> Result<Arc<Entry>, RegistryError> {
        let maintenance = reason
            .map(|r| Maintenance::new(r, std::time::SystemTime::now()))
            .transpose()?;
        self.ask_entry(Op::Maintenance(key.clone(), maintenance))
            .await
    }

    /// Makes everything durable and stops the writer; called once at shutdown after the
    /// servers stopped. Later writes fail with `Stopped`.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Flush(tx)).await.is_err() {
            return Ok(()); // the writer is gone: nothing pending
        }
        rx.await.unwrap_or(Ok(()))
    }
}

#[cfg(test)]
mod tests;
