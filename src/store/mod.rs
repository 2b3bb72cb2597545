//! Durable storage of registrations behind the `Backend` trait.
//!
//! The registry calls a backend to persist each change *before* it answers 2xx, and to load
//! everything at start-up. `embedded` keeps a redb database file in `--data-dir` behind a
//! write-ahead log (`wal`): a write is durable once its log record is `fdatasync`ed, and the
//! `checkpoint` thread copies the log into redb in large batches. Another backend (etcd)
//! implements the same trait. Only this module knows the disk.

mod checkpoint;
mod database;
mod embedded;
#[cfg(feature = "etcd")]
mod etcd;
mod owners;
mod record;
mod transfer;
mod wal;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::model::{CheckSpec, Health, Instance, InstanceKey};

pub use embedded::Embedded;
#[cfg(feature = "etcd")]
pub use etcd::Etcd;
pub use owners::Owners;
pub use transfer::{export, import};

/// A failure of the store; messages name the file or record involved.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The data dir or a file in it cannot be opened or created.
    #[error("cannot open the data dir {path}: {message}")]
    Open {
        /// The data dir or file at fault.
        path: PathBuf,
        /// Why it could not be opened.
        message: String,
    },
    /// A stored record cannot be read back; start-up stops rather than skip it.
    #[error("data dir {path} holds an unreadable record {key:?}: {message}")]
    Corrupt {
        /// The database or log file holding the record.
        path: PathBuf,
        /// The record's key in the database; empty for a log record (the message gives its
        /// offset).
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// A write failed for a reason not expected to pass (a poisoned lock, a store task
    /// that panicked).
    #[error("store write failed: {0}")]
    Write(String),
    /// A line of an import file that is not a valid registration; nothing was imported.
    #[error("import line {line}: {message} (nothing was imported)")]
    Import {
        /// The line's number, from 1.
        line: usize,
        /// What is wrong with it, naming the field.
        message: String,
    },
    /// The store cannot take writes now (a full disk, too many open files, its data dir
    /// removed); a write may succeed later without a restart unless the message says so.
    #[error("the store cannot take writes: {0}")]
    Unavailable(String),
    /// A conditional write lost a race with another replica's write; nothing was written.
    #[error("another replica changed the registry at the same time: {0}")]
    Conflict(String),
}

/// One change to persist.
#[derive(Debug, Clone)]
pub enum Change {
    /// Register or replace this instance (with its maintenance mode).
    Put(Box<Instance>),
    /// Remove this instance.
    Delete(InstanceKey),
    /// Remove this instance because its `deregister_after` ran out: written only by the
    /// replica that owns it, and only if nobody changed the instance since (a shared store
    /// refuses it otherwise, `StoreError::Conflict`).
    Reap(InstanceKey),
    /// An instance's health, kept only by a store shared between replicas
    /// (`Backend::shares_health`); the embedded store never sees it.
    Health(Box<HealthChange>),
}

/// A health status for a shared store.
#[derive(Debug, Clone)]
pub struct HealthChange {
    /// Whose health.
    pub key: InstanceKey,
    /// The status, its output and since when.
    pub health: Health,
    /// The check the status belongs to: a status stored for another check (the instance was
    /// re-registered with a new one) is ignored.
    pub check: Option<CheckSpec>,
    /// Written by this replica as a check's owner (a probe result, a TTL that ran out):
    /// a shared store writes it only while this replica's membership is alive.
    pub fenced: bool,
}

/// Everything a backend holds, as loaded at start-up.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Every stored instance, with its maintenance mode.
    pub instances: Vec<Instance>,
    /// The registry index of the last persisted change.
    pub index: u64,
    /// Stored health statuses, each for the instance's current check (a shared store only).
    pub health: Vec<HealthChange>,
}

/// Changes another writer of a shared store committed, in the order it committed them,
/// with the index the store assigned them.
#[derive(Debug)]
pub struct Remote {
    /// The store's index once these changes are applied.
    pub index: u64,
    /// The changes, in commit order, each with the index the store assigned it (a change
    /// this replica already holds at a later index is older and is skipped).
    pub changes: Vec<(u64, Change)>,
}

/// A commit done on the calling thread, blocking it: the embedded store's log append and
/// `fdatasync`. The registry's writer commits a small batch this way so that the thread
/// that waited on the disk goes on to publish and answer: handing the commit to another
/// thread and waking the writer afterwards cost one thread wake-up in every registration's
/// latency (BENCHMARKS.md, "Registration to DNS visibility").
pub trait CommitHere: Send + Sync {
    /// As `Backend::commit`, done before it returns.
    fn commit_here(&self, changes: &[Change], at_least: u64) -> Result<u64, StoreError>;
}

/// What a backend's asynchronous methods return.
pub type StoreFuture<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send>>;

/// A durable home for registrations: the embedded store here, a shared one (etcd) for
/// replicas. Every method is asynchronous; a backend whose work blocks (the embedded one
/// fsyncs) runs it off the runtime's workers.
pub trait Backend: Send + Sync + 'static {
    /// Reads every stored registration. A record that cannot be read is an error, never
    /// skipped: a silent partial registry would hand out wrong answers.
    fn load(self: Arc<Self>) -> StoreFuture<Loaded>;
    /// Persists `changes` atomically and durably and returns the index the store assigned
    /// them: at least `at_least`, above every index it assigned before (a log's counter, or a
    /// shared store's revision). When the future returns `Ok`, a crash cannot lose them. The
    /// work starts when this is called, so the caller can do its own share meanwhile.
    fn commit(self: Arc<Self>, changes: Vec<Change>, at_least: u64) -> StoreFuture<u64>;
    /// Changes committed elsewhere after index `from` (another replica's writes), as they
    /// happen. The embedded store's stream ends at once: nothing else writes its data dir.
    fn changes(self: Arc<Self>, from: u64) -> mpsc::Receiver<Remote>;
    /// Makes everything written so far durable; called once at shutdown.
    fn flush(self: Arc<Self>) -> StoreFuture<()>;
    /// `Ok` while the store can take writes; a failure whose cause is gone is repaired here,
    /// so asking is also how writes resume.
    fn ready(self: Arc<Self>) -> StoreFuture<()>;
    /// Whether health statuses are stored (`Change::Health`) so that replicas share them.
    /// The embedded store keeps none: health is re-established by the checks after a restart.
    fn shares_health(&self) -> bool {
        false
    }
    /// Most changes the registry hands to one `commit` (a shared store's transactions are
    /// bounded).
    fn max_batch(&self) -> usize {
        usize::MAX
    }
    /// Which instances' checks and deadlines this replica runs.
    fn owners(&self) -> Arc<Owners> {
        Owners::solo()
    }
    /// How the connection to a shared store stands (`None`: the embedded store has none).
    fn link(&self) -> Option<Link> {
        None
    }
    /// The blocking form of `commit`, for a backend whose commit is short work on the
    /// caller's own thread (`None`: only the asynchronous one, as etcd's).
    fn here(&self) -> Option<&dyn CommitHere> {
        None
    }
}

/// How a replica's connection to its shared store stands (`signpost_etcd_up`,
/// `signpost_registry_staleness_seconds`).
#[derive(Debug, Clone, Copy)]
pub struct Link {
    /// The last request or watch message reached the store.
    pub up: bool,
    /// How long since the store last confirmed this replica's copy current.
    pub staleness: std::time::Duration,
}

/// Runs blocking store work on tokio's blocking pool, starting now.
pub(crate) fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> StoreFuture<T> {
    let task = tokio::task::spawn_blocking(f);
    Box::pin(async move {
        task.await
            .unwrap_or_else(|e| Err(StoreError::Write(format!("store task failed: {e}"))))
    })
}
