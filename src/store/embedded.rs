//! The embedded backend: a redb database file, `signpost.redb`, behind a write-ahead log, in
//! the data dir.
//!
//! `apply` appends one record to the log (`wal.rs`) and `fdatasync`s it: that is the
//! contract's "a write answered 2xx is never lost", at the cost of flushing one data page. The
//! checkpointer thread (`checkpoint.rs`) then copies the records into redb in large
//! transactions and commits redb durably about once a second; the log segments redb holds
//! are removed. `open` replays whatever the log holds beyond redb's index into redb (one
//! durable commit) and removes the log, so `load` reads redb alone, exactly as a store that
//! never had a log. redb's file lock, taken first, is also what keeps a second process off
//! the log.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// redb's page cache. Its default (1 GiB) keeps every page read at start-up (the whole file,
/// ~40 MB at 100,000 instances) in memory for good, though the registry never reads the
/// store after loading it. Only the checkpointer writes, in large sorted batches, and the
/// pages on their B-tree paths that are not here the kernel's page cache serves.
const CACHE_BYTES: usize = 4 << 20;

use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction};

use super::checkpoint::{Checkpointer, Every};
use super::record::{self, key_of};
use super::wal::{self, Op, Wal};
use super::{Backend, Change, Loaded, StoreError};

/// `service/id` → a `record::Record` (`record::encode_into`).
const INSTANCES: TableDefinition<&str, &[u8]> = TableDefinition::new("instances");
/// `"index"` → the registry index of the last committed change.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// File name of the database inside the data dir.
pub const FILE: &str = "signpost.redb";

/// Log and checkpoint sizes; tests shrink them.
#[derive(Debug, Clone, Copy)]
struct Tuning {
    sizes: wal::Sizes,
    /// `None`: no checkpointer, records stay in the log only (a test's crash before any
    /// checkpoint).
    checkpoint: Option<Every>,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            // Big enough that rotation and preallocation (a 4 MiB write and `sync_all`) are
            // rare; small enough that a start-up replays in milliseconds.
            sizes: wal::Sizes {
                segment_bytes: 8 << 20,
                prealloc_bytes: 4 << 20,
            },
            checkpoint: Some(Every {
                every: Duration::from_secs(1),
                bytes: 8 << 20,
            }),
        }
    }
}

pub struct Embedded {
    db: Arc<Database>,
    path: PathBuf,
    /// The log's lock also orders the hand-off to the checkpointer, so redb receives the
    /// records in log order; the checkpointer itself never takes it.
    log: Mutex<Wal>,
    checkpointer: Option<Checkpointer>,
}

impl Embedded {
    /// Opens (or creates) the database in `dir`, creating `dir` if needed, and replays the
    /// log into it. A file that is not a readable database or log is an error naming it.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_tuned(dir, Tuning::default())
    }

    fn open_tuned(dir: &Path, tuning: Tuning) -> Result<Self, StoreError> {
        let open_err = |path: &Path, message: String| StoreError::Open {
            path: path.to_path_buf(),
            message,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(dir, e.to_string()))?;
        let path = dir.join(FILE);
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| open_err(&path, e.to_string()))?;
        // Create the tables up front so that a fresh store reads as empty, not as missing.
        let tx = db
            .begin_write()
            .map_err(|e| open_err(&path, e.to_string()))?;
        {
            tx.open_table(INSTANCES)
                .map_err(|e| open_err(&path, e.to_string()))?;
            tx.open_table(META)
                .map_err(|e| open_err(&path, e.to_string()))?;
        }
        tx.commit().map_err(|e| open_err(&path, e.to_string()))?;
        let index = recover(&db, dir, &path)?;
        let db = Arc::new(db);
        let checkpointer = match tuning.checkpoint {
            Some(every) => {
                // The spare is made here, before the first write can need it, rather than
                // left to the checkpointer thread: otherwise the first registration after
                // a fresh start zero-fills its own segment (tens of milliseconds). It stays
                // on disk, so only a new data dir pays this, once.
                if let Err(e) = wal::make_spare(dir, tuning.sizes) {
                    tracing::warn!(error = %e, "cannot prepare a spare log segment");
                }
                let c = Checkpointer::start(db.clone(), index, every, dir, tuning.sizes);
                Some(c.map_err(|e| open_err(dir, e))?)
            }
            None => None,
        };
        Ok(Self {
            db,
            path,
            log: Mutex::new(Wal::new(dir, tuning.sizes, index)),
            checkpointer,
        })
    }
}

/// Replays the log in `dir` into `db`: every record above the index redb holds, in order, in
/// one durable commit; then removes the log. Returns the index redb now holds.
fn recover(db: &Database, dir: &Path, path: &Path) -> Result<u64, StoreError> {
    let open_err = |message: String| StoreError::Open {
        path: path.to_path_buf(),
        message,
    };
    let held = {
        let tx = db.begin_read().map_err(|e| open_err(e.to_string()))?;
        let meta = tx.open_table(META).map_err(|e| open_err(e.to_string()))?;
        meta.get("index")
            .map_err(|e| open_err(e.to_string()))?
            .map(|g| g.value())
            .unwrap_or(0)
    };
    let files = wal::segments(dir)?;
    if files.is_empty() {
        return Ok(held);
    }
    let tx = db.begin_write().map_err(|e| open_err(e.to_string()))?;
    let mut last = held;
    {
        let mut instances = tx
            .open_table(INSTANCES)
            .map_err(|e| open_err(e.to_string()))?;
        wal::replay(&files, |file, payload| {
            let corrupt = |message: String| StoreError::Corrupt {
                path: file.to_path_buf(),
                key: String::new(),
                message,
            };
            let (index, ops) = wal::decode(payload).map_err(corrupt)?;
            if index <= held {
                return Ok(());
            }
            write_ops(&mut instances, &ops).map_err(|e| open_err(e.to_string()))?;
            last = index;
            Ok(())
        })?;
        write_index(&tx, last).map_err(open_err)?;
    }
    tx.commit().map_err(|e| open_err(e.to_string()))?;
    for f in files {
        std::fs::remove_file(&f).map_err(|e| StoreError::Open {
            path: f.clone(),
            message: e.to_string(),
        })?;
    }
    Ok(last)
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

/// Copies framed log records into `tx`, in order, and stamps it with the last one's index
/// (`applied` when there are none). Returns that index.
pub(super) fn write_records(
    tx: &WriteTransaction,
    records: &[Vec<u8>],
    applied: u64,
) -> Result<u64, String> {
    let mut last = applied;
    {
        let mut instances = tx.open_table(INSTANCES).map_err(|e| e.to_string())?;
        for r in records {
            let (index, ops) = wal::decode(wal::payload(r))?;
            write_ops(&mut instances, &ops).map_err(|e| e.to_string())?;
            last = index;
        }
    }
    write_index(tx, last)?;
    Ok(last)
}

fn write_index(tx: &WriteTransaction, index: u64) -> Result<(), String> {
    let mut meta = tx.open_table(META).map_err(|e| e.to_string())?;
    meta.insert("index", index).map_err(|e| e.to_string())?;
    Ok(())
}

impl Backend for Embedded {
    fn load(&self) -> Result<Loaded, StoreError> {
        let read_err = |message: String| StoreError::Open {
            path: self.path.clone(),
            message,
        };
        let tx = self.db.begin_read().map_err(|e| read_err(e.to_string()))?;
        let table = tx
            .open_table(INSTANCES)
            .map_err(|e| read_err(e.to_string()))?;
        let mut instances = Vec::new();
        for row in table.iter().map_err(|e| read_err(e.to_string()))? {
            let (k, v) = row.map_err(|e| read_err(e.to_string()))?;
            let key = k.value().to_string();
            let corrupt = |message: String| StoreError::Corrupt {
                path: self.path.clone(),
                key: key.clone(),
                message,
            };
            let inst = record::decode(v.value()).map_err(corrupt)?;
            if key_of(&inst.key) != key {
                return Err(corrupt(format!("holds instance {}", inst.key)));
            }
            instances.push(inst);
        }
        let meta = tx.open_table(META).map_err(|e| read_err(e.to_string()))?;
        let index = meta
            .get("index")
            .map_err(|e| read_err(e.to_string()))?
            .map(|g| g.value())
            .unwrap_or(0);
        Ok(Loaded { instances, index })
    }

    fn apply(&self, changes: &[Change], index: u64) -> Result<(), StoreError> {
        let frame = wal::encode(changes, index).map_err(StoreError::Write)?;
        let mut log = self
            .log
            .lock()
            .map_err(|_| StoreError::Write("the log lock is poisoned".into()))?;
        log.append(&frame, index)?;
        if let Some(c) = &self.checkpointer {
            // Read before the hand-off: what redb held durably before this record.
            let durable = c.durable();
            c.send(frame);
            log.remove_through(durable);
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        let Some(c) = &self.checkpointer else {
            return Ok(());
        };
        // Held across the wait so that no record is appended between the checkpoint and the
        // removal of the log.
        let mut log = self
            .log
            .lock()
            .map_err(|_| StoreError::Write("the log lock is poisoned".into()))?;
        let durable = c.flush().map_err(StoreError::Write)?;
        log.remove_all_through(durable);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;
    use redb::ReadableTableMetadata;

    fn inst(id: &str) -> Instance {
        Instance {
            key: InstanceKey {
                service: ServiceName::parse("web").unwrap(),
                id: InstanceId::parse(id).unwrap(),
            },
            address: "10.0.0.1".parse().unwrap(),
            port: 80,
            tags: vec![Tag::parse("v2").unwrap()],
            meta: [("k".to_string(), "v".to_string())].into(),
            weight: 1,
            priority: 0,
            ttl: Some(7),
            check: Some(CheckSpec {
                kind: CheckKind::Ttl(std::time::Duration::from_secs(15)),
                interval: DEFAULT_CHECK_INTERVAL,
                timeout: DEFAULT_CHECK_TIMEOUT,
                success_before_passing: 1,
                failures_before_critical: 1,
            }),
            deregister_after: Some(std::time::Duration::from_secs(600)),
            maintenance: None,
        }
    }

    #[test]
    fn round_trip_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Embedded::open(dir.path()).unwrap();
            assert_eq!(s.load().unwrap().instances.len(), 0);
            s.apply(
                &[
                    Change::Put(Box::new(inst("a"))),
                    Change::Put(Box::new(inst("b"))),
                ],
                2,
            )
            .unwrap();
            s.apply(&[Change::Delete(inst("a").key)], 3).unwrap();
        }
        let s = Embedded::open(dir.path()).unwrap();
        let l = s.load().unwrap();
        assert_eq!(l.index, 3);
        assert_eq!(l.instances, vec![inst("b")]);
    }

    fn put(id: &str) -> Change {
        Change::Put(Box::new(inst(id)))
    }

    fn ids(l: &Loaded) -> Vec<String> {
        let mut v: Vec<String> = l.instances.iter().map(|i| i.key.id.to_string()).collect();
        v.sort();
        v
    }

    /// No checkpointer: redb never receives the records, as after a crash before the first
    /// checkpoint.
    fn log_only(sizes: wal::Sizes) -> Tuning {
        Tuning {
            sizes,
            checkpoint: None,
        }
    }

    fn small() -> wal::Sizes {
        wal::Sizes {
            segment_bytes: 1024,
            prealloc_bytes: 512,
        }
    }

    /// What the database file alone holds, read without the log.
    fn redb_alone(dir: &Path) -> usize {
        let db = Database::create(dir.join(FILE)).unwrap();
        let tx = db.begin_read().unwrap();
        tx.open_table(INSTANCES).unwrap().len().unwrap() as usize
    }

    /// Offsets of the records in a segment file.
    fn record_offsets(bytes: &[u8]) -> Vec<usize> {
        let mut at = 0;
        let mut v = Vec::new();
        while at + 8 <= bytes.len() {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            if len == 0 {
                break;
            }
            v.push(at);
            at += 8 + len;
        }
        v
    }

    #[test]
    fn the_log_alone_restores_every_write_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Embedded::open_tuned(dir.path(), log_only(Tuning::default().sizes)).unwrap();
            s.apply(&[put("a"), put("b")], 2).unwrap();
            s.apply(&[Change::Delete(inst("a").key)], 3).unwrap();
            s.apply(&[put("c")], 4).unwrap();
        }
        assert_eq!(redb_alone(dir.path()), 0, "redb was not to get the writes");
        assert_eq!(wal::segments(dir.path()).unwrap().len(), 1);
        let s = Embedded::open(dir.path()).unwrap();
        let l = s.load().unwrap();
        assert_eq!((ids(&l), l.index), (vec!["b".into(), "c".into()], 4));
        assert!(
            wal::segments(dir.path()).unwrap().is_empty(),
            "replayed log removed"
        );
        drop(s);
        assert_eq!(redb_alone(dir.path()), 2, "the replay was committed");
    }

    #[test]
    fn writes_after_a_checkpoint_replay_on_top_of_it() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Embedded::open(dir.path()).unwrap();
            s.apply(&[put("a")], 1).unwrap();
            s.apply(&[put("b")], 2).unwrap();
            s.flush().unwrap();
        }
        {
            let s = Embedded::open_tuned(dir.path(), log_only(Tuning::default().sizes)).unwrap();
            s.apply(&[Change::Delete(inst("a").key)], 3).unwrap();
            let mut c = inst("c");
            c.port = 99;
            s.apply(&[put("c"), Change::Put(Box::new(c))], 5).unwrap();
        }
        assert_eq!(redb_alone(dir.path()), 2);
        let l = Embedded::open(dir.path()).unwrap().load().unwrap();
        assert_eq!((ids(&l), l.index), (vec!["b".into(), "c".into()], 5));
        let c = l.instances.iter().find(|i| i.key.id.to_string() == "c");
        assert_eq!(c.map(|c| c.port), Some(99), "the later put of a key wins");
    }

    #[test]
    fn a_torn_last_record_loses_only_itself() {
        // A garbled payload (checksum) and a length running past the file's end.
        for garble_length in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            {
                let s = Embedded::open_tuned(dir.path(), log_only(small())).unwrap();
                for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
                    s.apply(&[put(id)], i as u64 + 1).unwrap();
                }
            }
            let segs = wal::segments(dir.path()).unwrap();
            let last = segs.last().unwrap();
            let mut bytes = std::fs::read(last).unwrap();
            let at = *record_offsets(&bytes).last().unwrap();
            if garble_length {
                bytes[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
            } else {
                bytes[at + 20] ^= 0xff;
            }
            std::fs::write(last, &bytes).unwrap();
            let l = Embedded::open(dir.path()).unwrap().load().unwrap();
            assert_eq!((ids(&l), l.index), (vec!["a".into(), "b".into()], 2));
        }
    }

    #[test]
    fn a_damaged_record_before_later_ones_is_an_error_naming_the_file() {
        // Damage in an earlier segment, and damage followed by a valid record in the last.
        for in_last in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            {
                let s = Embedded::open_tuned(dir.path(), log_only(small())).unwrap();
                for i in 1..=40u64 {
                    s.apply(&[put(&format!("i{i}"))], i).unwrap();
                }
            }
            let segs = wal::segments(dir.path()).unwrap();
            assert!(segs.len() > 2, "rotated: {segs:?}");
            let file = if in_last { segs.last() } else { segs.first() }.unwrap();
            let mut bytes = std::fs::read(file).unwrap();
            assert!(record_offsets(&bytes).len() > 1 || !in_last);
            bytes[20] ^= 0xff;
            std::fs::write(file, &bytes).unwrap();
            let e = Embedded::open(dir.path()).err().expect("must fail");
            let name = file.file_name().unwrap().to_string_lossy().to_string();
            assert!(e.to_string().contains(&name), "{e}");
            assert!(wal::segments(dir.path()).unwrap().len() == segs.len());
        }
    }

    #[test]
    fn checkpointed_segments_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let tuning = Tuning {
            sizes: small(),
            checkpoint: Some(Every {
                every: Duration::from_millis(10),
                bytes: 1024,
            }),
        };
        {
            let s = Embedded::open_tuned(dir.path(), tuning).unwrap();
            for i in 1..=40u64 {
                s.apply(&[put(&format!("i{i}"))], i).unwrap();
            }
            let c = s.checkpointer.as_ref().unwrap();
            let t = std::time::Instant::now();
            while c.durable() < 40 {
                assert!(t.elapsed() < Duration::from_secs(10), "no checkpoint");
                std::thread::sleep(Duration::from_millis(5));
            }
            assert_eq!(redb_alone_shared(&s), 40);
            s.apply(&[put("last")], 41).unwrap();
            let segs = wal::segments(dir.path()).unwrap();
            assert_eq!(s.log.lock().unwrap().segment_count(), segs.len());
            assert_eq!(segs.len(), 1, "{segs:?}");
            let name = segs[0].file_name().unwrap().to_string_lossy().to_string();
            assert_ne!(name, format!("{}{:020}", wal::PREFIX, 1), "rotated");
        }
        let l = Embedded::open(dir.path()).unwrap().load().unwrap();
        assert_eq!((l.instances.len(), l.index), (41, 41));
    }

    fn redb_alone_shared(s: &Embedded) -> usize {
        let tx = s.db.begin_read().unwrap();
        tx.open_table(INSTANCES).unwrap().len().unwrap() as usize
    }

    #[test]
    fn flush_leaves_no_log_and_reopens_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let before = {
            let s = Embedded::open(dir.path()).unwrap();
            for i in 1..=5u64 {
                s.apply(&[put(&format!("i{i}"))], i).unwrap();
            }
            s.apply(&[Change::Delete(inst("i3").key)], 6).unwrap();
            s.flush().unwrap();
            assert!(wal::segments(dir.path()).unwrap().is_empty());
            // Writes after a flush still land.
            s.apply(&[put("i7")], 7).unwrap();
            s.flush().unwrap();
            assert!(wal::segments(dir.path()).unwrap().is_empty());
            s.load().unwrap()
        };
        assert_eq!(redb_alone(dir.path()), 5);
        let after = Embedded::open(dir.path()).unwrap().load().unwrap();
        assert_eq!((ids(&after), after.index), (ids(&before), 7));
        assert_eq!(after.instances, before.instances);
    }

    #[test]
    fn garbage_file_is_an_error_not_an_empty_registry() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), vec![0x5a; 8192]).unwrap();
        let e = Embedded::open(dir.path()).err().expect("must fail");
        assert!(e.to_string().contains(FILE), "{e}");
    }
}
