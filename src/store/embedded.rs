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

use std::path::Path;
#[cfg(test)]
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::checkpoint::{Checkpointer, Every};
use super::database::Db;
use super::wal::{self, Wal};
use tokio::sync::mpsc;

use super::{Backend, Change, Loaded, Remote, StoreError, StoreFuture};

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

/// The embedded store: a redb database in the data dir, written through an `fdatasync`ed
/// log that a checkpointer folds into the database.
pub struct Embedded {
    db: Arc<Db>,
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
        // redb's file lock, taken here first, also keeps a second process off the log.
        let db = Db::open(dir)?;
        let index = recover(&db, dir)?;
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
            log: Mutex::new(Wal::new(dir, tuning.sizes, index)),
            checkpointer,
        })
    }

    fn log(&self) -> Result<std::sync::MutexGuard<'_, Wal>, StoreError> {
        self.log
            .lock()
            .map_err(|_| StoreError::Write("the log lock is poisoned".into()))
    }
}

/// Replays the log in `dir` into `db`: every record above the index redb holds, in order, in
/// one durable commit; then removes the log. Returns the index redb now holds. Damage in the
/// log is an error naming the file and offset, and then nothing is removed.
fn recover(db: &Db, dir: &Path) -> Result<u64, StoreError> {
    let open_err = |message: String| StoreError::Open {
        path: db.path().to_path_buf(),
        message,
    };
    let held = db.index().map_err(open_err)?;
    for f in wal::leftovers(dir) {
        let _ = std::fs::remove_file(f);
    }
    let files = wal::segments(dir)?;
    if files.is_empty() {
        return Ok(held);
    }
    let last = db.replay(|write| {
        wal::replay(&files, held, |file, d| {
            if d.index <= held {
                return Ok(());
            }
            write(d.index, &d.ops).map_err(|message| StoreError::Open {
                path: file.to_path_buf(),
                message,
            })
        })
    })?;
    for f in files {
        std::fs::remove_file(&f).map_err(|e| StoreError::Open {
            path: f.clone(),
            message: e.to_string(),
        })?;
    }
    Ok(last)
}

impl Embedded {
    /// Reads every stored registration (blocking).
    pub fn load(&self) -> Result<Loaded, StoreError> {
        self.db.load()
    }

    /// Appends `changes` as one log record and `fdatasync`s it (blocking); returns the index
    /// the record was given: `at_least`, or one above the last record's if that is higher.
    pub fn apply(&self, changes: &[Change], at_least: u64) -> Result<u64, StoreError> {
        let mut frame = wal::encode(changes).map_err(StoreError::Write)?;
        let mut log = self.log()?;
        let index = log.append(&mut frame, at_least)?;
        if let Some(c) = &self.checkpointer {
            // Read before the hand-off: what redb held durably before this record.
            let durable = c.durable();
            c.send(frame);
            log.remove_through(durable);
        }
        Ok(index)
    }

    /// Makes everything written durable in redb and removes the log (blocking).
    pub fn flush(&self) -> Result<(), StoreError> {
        let Some(c) = &self.checkpointer else {
            return Ok(());
        };
        // Held across the wait so that no record is appended between the checkpoint and the
        // removal of the log.
        let mut log = self.log()?;
        let durable = c.flush().map_err(StoreError::Write)?;
        log.remove_all_through(durable);
        Ok(())
    }

    /// `Ok` while the log can take a write, repairing a failure whose cause is gone
    /// (blocking).
    pub fn ready(&self) -> Result<(), StoreError> {
        self.log()?.heal()
    }
}

impl Backend for Embedded {
    fn load(self: Arc<Self>) -> StoreFuture<Loaded> {
        super::blocking(move || Embedded::load(&self))
    }

    fn commit(self: Arc<Self>, changes: Vec<Change>, at_least: u64) -> StoreFuture<u64> {
        super::blocking(move || Embedded::apply(&self, &changes, at_least))
    }

    fn changes(self: Arc<Self>, _from: u64) -> mpsc::Receiver<Remote> {
        // Nothing else writes this data dir: the stream ends at once.
        mpsc::channel(1).1
    }

    fn flush(self: Arc<Self>) -> StoreFuture<()> {
        super::blocking(move || Embedded::flush(&self))
    }

    fn ready(self: Arc<Self>) -> StoreFuture<()> {
        super::blocking(move || Embedded::ready(&self))
    }

    fn here(&self) -> Option<&dyn super::CommitHere> {
        Some(self)
    }
}

impl super::CommitHere for Embedded {
    fn commit_here(&self, changes: &[Change], at_least: u64) -> Result<u64, StoreError> {
        self.apply(changes, at_least)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    fn draft(id: &str) -> testing::Draft {
        testing::instance("web", id)
            .tags(&["v2"])
            .meta("k", "v")
            .ttl(7)
            .ttl_check(std::time::Duration::from_secs(15))
            .deregister_after(std::time::Duration::from_secs(600))
    }

    fn inst(id: &str) -> Instance {
        draft(id).build()
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
            s.apply(&[Change::Delete(inst("a").key().clone())], 3)
                .unwrap();
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
        let mut v: Vec<String> = l.instances.iter().map(|i| i.key().id.to_string()).collect();
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
        Db::open(dir).unwrap().count()
    }

    /// Offsets of the records in a segment file (12-byte headers).
    fn record_offsets(bytes: &[u8]) -> Vec<usize> {
        let mut at = 0;
        let mut v = Vec::new();
        while at + 12 <= bytes.len() {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            if len == 0 {
                break;
            }
            v.push(at);
            at += 12 + len;
        }
        v
    }

    #[test]
    fn the_log_alone_restores_every_write_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Embedded::open_tuned(dir.path(), log_only(Tuning::default().sizes)).unwrap();
            s.apply(&[put("a"), put("b")], 2).unwrap();
            s.apply(&[Change::Delete(inst("a").key().clone())], 3)
                .unwrap();
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
            s.apply(&[Change::Delete(inst("a").key().clone())], 3)
                .unwrap();
            let c = draft("c").port(99).build();
            s.apply(&[put("c"), Change::Put(Box::new(c))], 5).unwrap();
        }
        assert_eq!(redb_alone(dir.path()), 2);
        let l = Embedded::open(dir.path()).unwrap().load().unwrap();
        assert_eq!((ids(&l), l.index), (vec!["b".into(), "c".into()], 5));
        let c = l.instances.iter().find(|i| i.key().id.to_string() == "c");
        assert_eq!(c.map(|c| c.port()), Some(99), "the later put of a key wins");
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
        s.db.count()
    }

    #[test]
    fn flush_leaves_no_log_and_reopens_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let before = {
            let s = Embedded::open(dir.path()).unwrap();
            for i in 1..=5u64 {
                s.apply(&[put(&format!("i{i}"))], i).unwrap();
            }
            s.apply(&[Change::Delete(inst("i3").key().clone())], 6)
                .unwrap();
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
        let file = super::super::database::FILE;
        std::fs::write(dir.path().join(file), vec![0x5a; 8192]).unwrap();
        let e = Embedded::open(dir.path()).err().expect("must fail");
        assert!(e.to_string().contains(file), "{e}");
    }

    /// One segment of 100 records (large enough not to rotate), written without a
    /// checkpointer: the data dir, the segment's path and its record offsets.
    fn hundred_records() -> (tempfile::TempDir, PathBuf, Vec<usize>) {
        let dir = tempfile::tempdir().unwrap();
        let sizes = wal::Sizes {
            segment_bytes: 1 << 20,
            prealloc_bytes: 64 << 10,
        };
        {
            let s = Embedded::open_tuned(dir.path(), log_only(sizes)).unwrap();
            for i in 1..=100u64 {
                s.apply(&[put(&format!("i{i}"))], i).unwrap();
            }
        }
        let segs = wal::segments(dir.path()).unwrap();
        assert_eq!(segs.len(), 1);
        let offsets = record_offsets(&std::fs::read(&segs[0]).unwrap());
        assert_eq!(offsets.len(), 100);
        (dir, segs[0].clone(), offsets)
    }

    #[test]
    fn damage_before_the_last_record_is_an_error_naming_file_and_offset() {
        type Damage = fn(&mut Vec<u8>, usize);
        let cases: [(&str, Damage); 6] = [
            ("zeroed length", |b, at| b[at..at + 4].fill(0)),
            ("bit-flipped length", |b, at| b[at + 1] ^= 0x01),
            ("zeroed 4 KiB page", |b, at| {
                let page = at / 4096 * 4096;
                b[page..page + 4096].fill(0)
            }),
            ("bit-flipped payload", |b, at| b[at + 30] ^= 0x10),
            ("truncated at a record", |b, at| b.truncate(at)),
            ("truncated inside a record", |b, at| b.truncate(at + 20)),
        ];
        for (what, damage) in cases {
            let (dir, seg, offsets) = hundred_records();
            // 40 records before the end.
            let at = offsets[60];
            let mut bytes = std::fs::read(&seg).unwrap();
            damage(&mut bytes, at);
            std::fs::write(&seg, &bytes).unwrap();
            let e = Embedded::open(dir.path()).err();
            let e = e.unwrap_or_else(|| panic!("{what}: opened over a damaged log"));
            let name = seg.file_name().unwrap().to_string_lossy().to_string();
            let text = e.to_string();
            assert!(text.contains(&name), "{what}: {text}");
            assert!(text.contains("at byte "), "{what}: {text}");
            assert!(matches!(e, StoreError::Corrupt { .. }), "{what}: {e:?}");
            // Nothing removed or rewritten: the damage is there to be seen and repaired.
            assert_eq!(std::fs::read(&seg).unwrap(), bytes, "{what}");
            assert_eq!(redb_alone(dir.path()), 0, "{what}: nothing replayed");
        }
    }

    #[test]
    fn damage_in_the_last_record_drops_only_it() {
        // The one write never acknowledged looks like this after a crash in its fdatasync.
        let (dir, seg, offsets) = hundred_records();
        let mut bytes = std::fs::read(&seg).unwrap();
        let at = offsets[99];
        bytes[at + 40..at + 60].fill(0);
        std::fs::write(&seg, &bytes).unwrap();
        let l = Embedded::open(dir.path()).unwrap().load().unwrap();
        assert_eq!((l.instances.len(), l.index), (99, 99));
    }

    #[test]
    fn a_missing_segment_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Embedded::open_tuned(dir.path(), log_only(small())).unwrap();
            for i in 1..=40u64 {
                s.apply(&[put(&format!("i{i}"))], i).unwrap();
            }
        }
        let segs = wal::segments(dir.path()).unwrap();
        assert!(segs.len() > 3);
        std::fs::remove_file(&segs[1]).unwrap();
        let e = Embedded::open(dir.path()).err().expect("must fail");
        assert!(e.to_string().contains("records are missing"), "{e}");
        assert_eq!(wal::segments(dir.path()).unwrap().len(), segs.len() - 1);
    }

    fn plan(s: &Embedded, op: wal::faults::Io, skip: u32, count: u32, torn: bool) {
        let mut log = s.log.lock().unwrap();
        log.faults.fail = vec![(op, skip, count)];
        log.faults.torn = torn;
    }

    /// Applies `put(i)` for `range`, returning the indexes acknowledged.
    fn apply_all(s: &Embedded, range: std::ops::RangeInclusive<u64>) -> Vec<u64> {
        range
            .filter(|i| s.apply(&[put(&format!("i{i}"))], *i).is_ok())
            .collect()
    }

    #[test]
    fn a_failed_log_write_is_not_acknowledged_and_writes_resume() {
        use wal::faults::Io;
        let tuning = Tuning {
            sizes: small(),
            checkpoint: Some(Every {
                every: Duration::from_millis(5),
                bytes: 2048,
            }),
        };
        for (op, skip) in [(Io::Write, 5), (Io::Sync, 5), (Io::Open, 1), (Io::Write, 0)] {
            for torn in [false, true] {
                let dir = tempfile::tempdir().unwrap();
                let acked = {
                    let s = Embedded::open_tuned(dir.path(), tuning).unwrap();
                    let mut acked = apply_all(&s, 1..=10);
                    plan(&s, op, skip, 1, torn);
                    acked.extend(apply_all(&s, 11..=30));
                    assert_eq!(acked.len(), 29, "{op:?}/{skip}: one write failed");
                    // The failure is over: the store says so, and took the writes after it.
                    s.ready().unwrap();
                    acked.extend(apply_all(&s, 31..=40));
                    s.flush().unwrap();
                    acked
                };
                let l = Embedded::open(dir.path()).unwrap().load().unwrap();
                let mut got: Vec<u64> = l
                    .instances
                    .iter()
                    .map(|i| i.key().id.to_string()[1..].parse().unwrap())
                    .collect();
                got.sort();
                assert_eq!(got, acked, "{op:?}/{skip}/torn {torn}");
            }
        }
    }

    #[test]
    fn a_lasting_fault_keeps_the_store_unready_until_it_clears() {
        use wal::faults::Io;
        let dir = tempfile::tempdir().unwrap();
        let s = Embedded::open_tuned(dir.path(), log_only(small())).unwrap();
        apply_all(&s, 1..=3);
        plan(&s, Io::Sync, 0, u32::MAX, true);
        assert!(matches!(
            s.apply(&[put("x")], 4),
            Err(StoreError::Unavailable(_))
        ));
        for _ in 0..3 {
            assert!(s.ready().is_err(), "still failing");
            assert!(s.apply(&[put("x")], 4).is_err());
        }
        plan(&s, Io::Sync, 0, 0, false);
        s.ready().unwrap();
        s.apply(&[put("x")], 4).unwrap();
        drop(s);
        let l = Embedded::open(dir.path()).unwrap().load().unwrap();
        assert_eq!((l.instances.len(), l.index), (4, 4));
    }

    #[test]
    fn a_removed_data_dir_refuses_writes_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let s = Embedded::open(&data).unwrap();
        s.apply(&[put("a")], 1).unwrap();
        // The checkpointer may be making its spare segment in it meanwhile: try again.
        let mut tries = 0;
        while let Err(e) = std::fs::remove_dir_all(&data) {
            tries += 1;
            assert!(tries < 100, "cannot remove the data dir: {e}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // Noticed at the next append that checks the segment (at most `VERIFY_EVERY` apart).
        std::thread::sleep(std::time::Duration::from_millis(150));
        let e = s.apply(&[put("b")], 2).unwrap_err();
        assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
        assert!(e.to_string().contains("removed"), "{e}");
        // Recreating the directory does not make the store whole again.
        std::fs::create_dir_all(&data).unwrap();
        assert!(s.ready().is_err());
        assert!(s.apply(&[put("c")], 3).is_err());
    }
}
