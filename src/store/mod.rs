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
mod record;
mod wal;

use std::path::PathBuf;

use crate::model::{Instance, InstanceKey};

pub use embedded::Embedded;

/// A failure of the store; messages name the file or record involved.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the data dir {path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error("data dir {path} holds an unreadable record {key:?}: {message}")]
    Corrupt {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("store write failed: {0}")]
    Write(String),
    /// The store cannot take writes now (a full disk, too many open files, its data dir
    /// removed); a write may succeed later without a restart unless the message says so.
    #[error("the store cannot take writes: {0}")]
    Unavailable(String),
}

/// One change to persist.
#[derive(Debug, Clone)]
pub enum Change {
    /// Register or replace this instance (with its maintenance mode).
    Put(Box<Instance>),
    /// Remove this instance.
    Delete(InstanceKey),
}

/// Everything a backend holds, as loaded at start-up.
#[derive(Debug, Default)]
pub struct Loaded {
    pub instances: Vec<Instance>,
    /// The registry index of the last persisted change.
    pub index: u64,
}

/// A durable home for registrations.
///
/// Methods block (they fsync); the registry calls them off the async runtime's workers.
pub trait Backend: Send + Sync + 'static {
    /// Reads every stored registration. A record that cannot be read is an error, never
    /// skipped: a silent partial registry would hand out wrong answers.
    fn load(&self) -> Result<Loaded, StoreError>;
    /// Persists `changes` atomically and durably, stamped with the registry `index` they
    /// produce. When this returns `Ok`, a crash cannot lose them.
    fn apply(&self, changes: &[Change], index: u64) -> Result<(), StoreError>;
    /// Makes everything written so far durable; called once at shutdown.
    fn flush(&self) -> Result<(), StoreError>;
    /// `Ok` while the store can take writes; a failure whose cause is gone is repaired here,
    /// so asking is also how writes resume. Blocks (it may write).
    fn ready(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
