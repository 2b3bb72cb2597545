//! redb's one home: the database file `signpost.redb`, its tables, and the writing of log
//! records into them.
//!
//! Both start-up (`embedded::recover`, which replays the log) and the checkpointer write log
//! records here, through `write_records`; `load` reads the registry back. The `Database`
//! sits behind a mutex so that it can be reopened: after an I/O error redb refuses every
//! later operation of that `Database` (`PreviousIo`), and the checkpointer recovers from a
//! full disk by closing it and opening it again.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, Table, TableDefinition};

use super::record::{self, key_of};
use super::wal::{self, Op};
use super::{Loaded, StoreError};

/// `service/id` → a `record::Record` (`record::encode_into`).
const INSTANCES: TableDefinition<&str, &[u8]> = TableDefinition::new("instances");
/// `"index"` → the registry index of the last committed change.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// File name of the database inside the data dir.
pub(crate) const FILE: &str = "signpost.redb";

/// redb's page cache. Its default (1 GiB) keeps every page read at start-up (the whole file,
/// ~40 MB at 100,000 instances) in memory for good, though the registry never reads the
/// store after loading it. Only the checkpointer writes, in large sorted batches, and the
/// pages on their B-tree paths that are not here the kernel's page cache serves.
const CACHE_BYTES: usize = 4 << 20;

/// The database file, open (or closed after a failure, until it is reopened).
pub(crate) struct Db {
    path: PathBuf,
    db: Mutex<Option<Database>>,
}

impl Db {
    /// Opens (or creates) the database in `dir`, with its tables. A file that is not a
    /// readable database is an error naming it.
    pub(crate) fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(FILE);
        let db = open_file(&path).map_err(|message| StoreError::Open {
            path: path.clone(),
            message,
        })?;
        Ok(Db {
            path,
            db: Mutex::new(Some(db)),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the open database, opening it first if a failure closed it.
    fn with<R>(&self, f: impl FnOnce(&Database) -> Result<R, String>) -> Result<R, String> {
        let mut guard = self
            .db
            .lock()
            .map_err(|_| "the database lock is poisoned".to_string())?;
        if guard.is_none() {
            *guard = Some(open_file(&self.path)?);
            tracing::info!(file = %self.path.display(), "database reopened");
        }
        match &*guard {
            Some(db) => f(db),
            None => Err("database not open".into()),
        }
    }

    /// Closes the database after a failure; the next use opens it again (redb recovers to its
    /// last durable commit).
    pub(crate) fn close(&self) {
        if let Ok(mut guard) = self.db.lock() {
            *guard = None;
        }
    }

    /// The index of the last change the database holds durably.
    pub(crate) fn index(&self) -> Result<u64, String> {
        self.with(|db| {
            let tx = db.begin_read().map_err(|e| e.to_string())?;
            let meta = tx.open_table(META).map_err(|e| e.to_string())?;
            Ok(meta
                .get("index")
                .map_err(|e| e.to_string())?
                .map(|g| g.value())
                .unwrap_or(0))
        })
    }

    /// Reads every stored registration back, re-validated; a record that cannot be read is
    /// an error naming it.
    pub(crate) fn load(&self) -> Result<Loaded, StoreError> {
        let read_err = |message: String| StoreError::Open {
            path: self.path.clone(),
            message,
        };
        let mut bad = None;
        let loaded = self
            .with(|db| {
                let tx = db.begin_read().map_err(|e| e.to_string())?;
                let table = tx.open_table(INSTANCES).map_err(|e| e.to_string())?;
                let mut instances = Vec::new();
                for row in table.iter().map_err(|e| e.to_string())? {
                    let (k, v) = row.map_err(|e| e.to_string())?;
                    let key = k.value().to_string();
                    let checked = record::decode(v.value()).and_then(|inst| {
                        if key_of(inst.key()) == key {
                            Ok(inst)
                        } else {
                            Err(format!("holds instance {}", inst.key()))
                        }
                    });
                    match checked {
                        Ok(inst) => instances.push(inst),
                        Err(message) => {
                            bad = Some((key, message));
                            return Err(String::new());
                        }
                    }
                }
                let meta = tx.open_table(META).map_err(|e| e.to_string())?;
                let index = meta
                    .get("index")
                    .map_err(|e| e.to_string())?
                    .map(|g| g.value())
                    .unwrap_or(0);
                Ok(Loaded {
                    instances,
                    index,
                    health: Vec::new(),
                })
            })
            .map_err(read_err);
        match bad {
            Some((key, message)) => Err(StoreError::Corrupt {
                path: self.path.clone(),
                key,
                message,
            }),
            None => loaded,
        }
    }

    /// Commits framed log `records` (each at most one above the other, in order; those at
    /// or below `applied` are skipped) in one transaction, durably or not, stamped with the
    /// last one's index. Returns the index the database then holds.
    pub(crate) fn commit(
        &self,
        records: &[Vec<u8>],
        applied: u64,
        durability: Durability,
    ) -> Result<u64, String> {
        self.with(|db| {
            let mut tx = db.begin_write().map_err(|e| e.to_string())?;
            tx.set_durability(durability).map_err(|e| e.to_string())?;
            let mut last = applied;
            {
                let mut instances = tx.open_table(INSTANCES).map_err(|e| e.to_string())?;
                for r in records {
                    let d = wal::decode(wal::payload(r))?;
                    if d.index <= last {
                        continue;
                    }
                    write_ops(&mut instances, &d.ops).map_err(|e| e.to_string())?;
                    last = d.index;
                }
            }
            // With no records this still rewrites the index: an `Immediate` commit that makes
            // the earlier `None` commits durable.
            let mut meta = tx.open_table(META).map_err(|e| e.to_string())?;
            meta.insert("index", last).map_err(|e| e.to_string())?;
            drop(meta);
            tx.commit().map_err(|e| e.to_string())?;
            Ok(last)
        })
    }

    /// Replays a log into the database in one durable commit: `each_record` is handed a
    /// function that writes one record's changes. Returns the index then held.
    pub(crate) fn replay(
        &self,
        each_record: impl FnOnce(
            &mut dyn FnMut(u64, &[Op<'_>]) -> Result<(), String>,
        ) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        let open_err = |message: String| StoreError::Open {
            path: self.path.clone(),
            message,
        };
        let mut outcome = Ok(());
        let last = self
            .with(|db| {
                let tx = db.begin_write().map_err(|e| e.to_string())?;
                let mut last = {
                    let meta = tx.open_table(META).map_err(|e| e.to_string())?;
                    meta.get("index")
                        .map_err(|e| e.to_string())?
                        .map(|g| g.value())
                        .unwrap_or(0)
                };
                {
                    let mut instances = tx.open_table(INSTANCES).map_err(|e| e.to_string())?;
                    outcome = each_record(&mut |index, ops| {
                        write_ops(&mut instances, ops).map_err(|e| e.to_string())?;
                        last = index;
                        Ok(())
                    });
                }
                if outcome.is_err() {
                    return Ok(last); // dropped: nothing committed
                }
                let mut meta = tx.open_table(META).map_err(|e| e.to_string())?;
                meta.insert("index", last).map_err(|e| e.to_string())?;
                drop(meta);
                tx.commit().map_err(|e| e.to_string())?;
                Ok(last)
            })
            .map_err(open_err)?;
        outcome.map(|()| last)
    }

    /// A read of the instance table's size, for tests.
    #[cfg(test)]
    pub(crate) fn count(&self) -> usize {
        use redb::ReadableTableMetadata;
        self.with(|db| {
            let tx = db.begin_read().map_err(|e| e.to_string())?;
            let t = tx.open_table(INSTANCES).map_err(|e| e.to_string())?;
            Ok(t.len().map_err(|e| e.to_string())? as usize)
        })
        .unwrap()
    }
}

fn open_file(path: &Path) -> Result<Database, String> {
    let db = redb::Builder::new()
        .set_cache_size(CACHE_BYTES)
        .create(path)
        .map_err(|e| e.to_string())?;
    // Create the tables up front so that a fresh store reads as empty, not as missing.
    let tx = db.begin_write().map_err(|e| e.to_string())?;
    tx.open_table(INSTANCES).map_err(|e| e.to_string())?;
    tx.open_table(META).map_err(|e| e.to_string())?;
    tx.commit().map_err(|e| e.to_string())?;
    Ok(db)
}

/// Writes the changes of one log record, in order.
fn write_ops(instances: &mut Table<&str, &[u8]>, ops: &[Op<'_>]) -> Result<(), redb::StorageError> {
    for op in ops {
        match op {
            Op::Put { key, value } => instances.insert(*key, *value).map(drop)?,
            Op::Delete { key } => instances.remove(*key).map(drop)?,
        }
    }
    Ok(())
}
