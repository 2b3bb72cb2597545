//! The checkpointer: one thread that copies write-ahead log records into redb.
//!
//! `Embedded::apply` sends each record here once it is durable in the log. The thread drains
//! everything queued into one redb transaction committed with `Durability::None` (in memory
//! only: redb persists it with the next `Immediate` commit, or when the database closes), and
//! makes a durable commit once `every` has passed since the last one with work pending, or
//! `bytes` of records arrived since. Only then does it publish "durable through index I"
//! (an atomic), and the log's owner removes the segments that holds entirely. So redb does one
//! scattered-page fsync per second, not one per batch of registrations.
//!
//! A failed redb transaction stops the copying for good (a later batch on top of a missing one
//! would make redb claim an index it does not hold): the records stay in the log, which the
//! next start replays, and the error comes out of the next `flush`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{Database, Durability};

use super::embedded::write_records;
use super::wal;

/// When the checkpointer makes redb durable.
#[derive(Debug, Clone, Copy)]
pub struct Every {
    /// At most this long after the first change not yet durable in redb.
    pub every: Duration,
    /// Or as soon as this many bytes of log records are not yet durable in redb.
    pub bytes: u64,
}

/// How long records are gathered into one redb transaction.
const GATHER: Duration = Duration::from_millis(20);

enum Msg {
    /// One framed log record (`wal::encode`), already durable in the log.
    Record(Vec<u8>),
    /// Make everything received so far durable in redb; answer the index it holds.
    Flush(Sender<Result<u64, String>>),
    Stop,
}

pub struct Checkpointer {
    tx: Sender<Msg>,
    durable: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread on `db`, which holds everything through `index` durably.
    /// It keeps a spare log segment ready in `dir` (`wal::make_spare`).
    pub fn start(
        db: Arc<Database>,
        index: u64,
        when: Every,
        dir: &Path,
        sizes: wal::Sizes,
    ) -> Result<Self, String> {
        let (tx, rx) = mpsc::channel();
        let durable = Arc::new(AtomicU64::new(index));
        let state = State {
            db,
            when,
            durable: durable.clone(),
            applied: index,
            pending_bytes: 0,
            last_durable: Instant::now(),
            failed: None,
            dir: dir.to_path_buf(),
            sizes,
            spare_failed: false,
        };
        let thread = std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || {
                lower_priority();
                state.run(rx)
            })
            .map_err(|e| format!("cannot start the checkpoint thread: {e}"))?;
        Ok(Checkpointer {
            tx,
            durable,
            thread: Some(thread),
        })
    }

    /// Queues a record that is durable in the log. Called under the log's lock, so records
    /// arrive in log order.
    pub fn send(&self, frame: Vec<u8>) {
        if self.tx.send(Msg::Record(frame)).is_err() {
            // The thread is gone (it panicked): the record is safe in the log and `flush`
            // reports the failure.
            tracing::error!("the store checkpoint thread is gone; writes stay in the log");
        }
    }

    /// The index redb holds durably: log records at or below it may be removed.
    pub fn durable(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// Waits until every record sent is durable in redb; returns the index redb holds.
    pub fn flush(&self) -> Result<u64, String> {
        let (tx, rx) = mpsc::channel();
        self.tx
            .send(Msg::Flush(tx))
            .map_err(|_| "the store checkpoint thread is gone".to_string())?;
        rx.recv()
            .map_err(|_| "the store checkpoint thread is gone".to_string())?
    }
}

impl Drop for Checkpointer {
    /// Stops the thread after it has copied what is queued (redb persists it on close; the
    /// log holds it anyway), so that the database file is closed when the store is dropped.
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct State {
    db: Arc<Database>,
    when: Every,
    durable: Arc<AtomicU64>,
    /// The index of the last record committed to redb (durably or not).
    applied: u64,
    /// Bytes of records committed to redb since the last durable commit.
    pending_bytes: u64,
    last_durable: Instant,
    /// The first redb failure; once set nothing more is copied.
    failed: Option<String>,
    dir: PathBuf,
    sizes: wal::Sizes,
    /// A failed spare was logged once; the log then preallocates segments itself.
    spare_failed: bool,
}

impl State {
    fn run(mut self, rx: Receiver<Msg>) {
        loop {
            self.spare();
            // A timed wait only while there is something to make durable (and a failed
            // checkpointer has nothing it may make durable).
            let behind = self.applied > self.durable.load(Ordering::Acquire);
            let first = if behind && self.failed.is_none() {
                let wait =
                    (self.last_durable + self.when.every).saturating_duration_since(Instant::now());
                match rx.recv_timeout(wait) {
                    Ok(m) => Some(m),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            } else {
                match rx.recv() {
                    Ok(m) => Some(m),
                    Err(_) => return,
                }
            };
            let mut records = Vec::new();
            let mut flushes = Vec::new();
            let mut stop = false;
            let mut next = first;
            // Records arriving within `GATHER` of the first go into one transaction: a redb
            // transaction per registration would be redone work, and would take the CPU
            // just when the registry answers the client it came from.
            let until = Instant::now() + GATHER;
            while let Some(m) = next {
                match m {
                    Msg::Record(r) => records.push(r),
                    Msg::Flush(reply) => flushes.push(reply),
                    Msg::Stop => {
                        stop = true;
                        break;
                    }
                }
                next = if flushes.is_empty() {
                    rx.recv_timeout(until.saturating_duration_since(Instant::now()))
                        .ok()
                } else {
                    rx.try_recv().ok()
                };
            }
            let durable_due = !flushes.is_empty()
                || self.last_durable.elapsed() >= self.when.every
                || self.pending_bytes + records.iter().map(|r| r.len() as u64).sum::<u64>()
                    >= self.when.bytes;
            if let Err(e) = self.commit(&records, durable_due) {
                tracing::error!(error = %e, "store checkpoint failed; writes stay in the log");
                self.failed.get_or_insert(e);
            }
            for reply in flushes {
                let _ = reply.send(match &self.failed {
                    Some(e) => Err(format!("a store checkpoint failed earlier: {e}")),
                    None => Ok(self.durable.load(Ordering::Acquire)),
                });
            }
            if stop {
                return;
            }
        }
    }

    fn spare(&mut self) {
        if self.spare_failed {
            return;
        }
        if let Err(e) = wal::make_spare(&self.dir, self.sizes) {
            tracing::warn!(error = %e, "cannot prepare a spare log segment");
            self.spare_failed = true;
        }
    }

    /// Commits `records` (possibly none) to redb, durably if `durable_due` and anything is
    /// not yet durable.
    fn commit(&mut self, records: &[Vec<u8>], durable_due: bool) -> Result<(), String> {
        if self.failed.is_some() {
            return Ok(());
        }
        let behind = self.applied > self.durable.load(Ordering::Acquire);
        let durable = durable_due && (behind || !records.is_empty());
        if records.is_empty() && !durable {
            return Ok(());
        }
        let mut tx = self.db.begin_write().map_err(|e| e.to_string())?;
        tx.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        })
        .map_err(|e| e.to_string())?;
        // With no records this still rewrites the index: an `Immediate` commit that makes the
        // earlier `None` commits durable.
        let applied = write_records(&tx, records, self.applied)?;
        tx.commit().map_err(|e| e.to_string())?;
        self.applied = applied;
        self.pending_bytes += records.iter().map(|r| r.len() as u64).sum::<u64>();
        if durable {
            self.pending_bytes = 0;
            self.last_durable = Instant::now();
            self.durable.store(applied, Ordering::Release);
        }
        Ok(())
    }
}

/// Runs the calling thread (the checkpointer) at nice 10. Checkpoints are background work:
/// writes are durable in the log already, so the thread that copies them into redb should
/// take the CPU only when requests leave it (it needs ~5 % at full write load, and nice 10
/// still gets ~10 % against one busy request thread, so it never falls behind for long).
/// On Linux the nice value is per thread. A failure (not expected: lowering needs no
/// privilege) leaves the priority as it was.
fn lower_priority() {
    // SAFETY: setpriority only reads its arguments; `0` names the calling thread.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "checkpointer priority unchanged");
    }
}
