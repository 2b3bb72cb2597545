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
//! A failed redb transaction (a full disk, say) stops the copying until a retry a second
//! later: redb is closed and reopened (after an I/O error it refuses everything else), which
//! takes it back to its last durable commit, and every record since then is committed again
//! in order, so redb never claims an index it does not hold. Meanwhile the records stay in
//! the log, which keeps them durable, and a `flush` answers the error.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::Durability;

use super::database::Db;
use super::wal;

/// When the checkpointer makes redb durable.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Every {
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

pub(crate) struct Checkpointer {
    tx: Sender<Msg>,
    durable: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread on `db`, which holds everything through `index` durably.
    /// It keeps a spare log segment ready in `dir` (`wal::make_spare`).
    pub(crate) fn start(
        db: Arc<Db>,
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
            since_durable: Vec::new(),
            since_durable_bytes: 0,
            queue: Vec::new(),
            last_durable: Instant::now(),
            failed: None,
            dir: dir.to_path_buf(),
            sizes,
            spare_failed: None,
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
    pub(crate) fn send(&self, frame: Vec<u8>) {
        if self.tx.send(Msg::Record(frame)).is_err() {
            // The thread is gone (it panicked): the record is safe in the log and `flush`
            // reports the failure.
            tracing::error!("the store checkpoint thread is gone; writes stay in the log");
        }
    }

    /// The index redb holds durably: log records at or below it may be removed.
    pub(crate) fn durable(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// Waits until every record sent is durable in redb; returns the index redb holds.
    pub(crate) fn flush(&self) -> Result<u64, String> {
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
    db: Arc<Db>,
    when: Every,
    durable: Arc<AtomicU64>,
    /// The index of the last record committed to redb (durably or not).
    applied: u64,
    /// Records committed to redb since the last durable commit: redb loses them if it must be
    /// reopened, so they are kept until a durable commit holds them.
    since_durable: Vec<Vec<u8>>,
    /// Their bytes, kept as they are added (summing them per loop grew with the second).
    since_durable_bytes: u64,
    /// Records received and not yet committed to redb (while a failure waits for its retry).
    queue: Vec<Vec<u8>>,
    last_durable: Instant,
    /// The last redb failure and when to try again; nothing is copied until then.
    failed: Option<(String, Instant)>,
    dir: PathBuf,
    sizes: wal::Sizes,
    /// When a spare could not be made (a full disk); retried `RETRY_SPARE` later, and the
    /// log preallocates segments itself meanwhile.
    spare_failed: Option<Instant>,
}

/// How long after a failed spare another is tried.
const RETRY_SPARE: Duration = Duration::from_secs(10);

/// How long a failed checkpoint waits before redb is reopened and the records tried again.
const RETRY: Duration = Duration::from_secs(1);

impl State {
    fn run(mut self, rx: Receiver<Msg>) {
        loop {
            self.spare();
            // A timed wait only while there is something to make durable, or a retry due.
            let behind = self.applied > self.durable.load(Ordering::Acquire);
            let wake = match &self.failed {
                Some((_, retry)) => Some(*retry),
                None if behind => Some(self.last_durable + self.when.every),
                None => None,
            };
            let first = match wake {
                Some(at) => match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
                    Ok(m) => Some(m),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return,
                },
                None => match rx.recv() {
                    Ok(m) => Some(m),
                    Err(_) => return,
                },
            };
            let mut flushes = Vec::new();
            let mut stop = false;
            let mut next = first;
            let mut arrived = 0u64;
            // Records arriving within `GATHER` of the first go into one transaction: a redb
            // transaction per registration would be redone work, and would take the CPU
            // just when the registry answers the client it came from.
            let until = Instant::now() + GATHER;
            while let Some(m) = next {
                match m {
                    Msg::Record(r) => {
                        arrived += r.len() as u64;
                        self.queue.push(r);
                    }
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
            let retry_due = self
                .failed
                .as_ref()
                .is_some_and(|(_, at)| Instant::now() >= *at || !flushes.is_empty() || stop);
            if retry_due {
                self.reopen();
            }
            if self.failed.is_none() {
                let pending = self.since_durable_bytes;
                let durable_due = !flushes.is_empty()
                    || self.last_durable.elapsed() >= self.when.every
                    || pending + arrived >= self.when.bytes;
                if let Err(e) = self.commit(durable_due) {
                    tracing::error!(error = %e, "store checkpoint failed; writes stay in the log, retried in {RETRY:?}");
                    self.db.close();
                    self.failed = Some((e, Instant::now() + RETRY));
                }
            }
            for reply in flushes {
                let _ = reply.send(match &self.failed {
                    Some((e, _)) => Err(format!("a store checkpoint failed: {e}")),
                    None => Ok(self.durable.load(Ordering::Acquire)),
                });
            }
            if stop {
                return;
            }
        }
    }

    fn spare(&mut self) {
        if self.spare_failed.is_some_and(|t| t.elapsed() < RETRY_SPARE) {
            return;
        }
        match wal::make_spare(&self.dir, self.sizes) {
            Ok(()) => self.spare_failed = None,
            Err(e) => {
                if self.spare_failed.is_none() {
                    tracing::warn!(error = %e, "cannot prepare a spare log segment");
                }
                self.spare_failed = Some(Instant::now());
            }
        }
    }

    /// After a failure: opens redb again, which holds what its last durable commit held, and
    /// puts the records committed since then back in front of the queue.
    fn reopen(&mut self) {
        match self.db.index() {
            Ok(held) => {
                let mut queue = std::mem::take(&mut self.since_durable);
                self.since_durable_bytes = 0;
                queue.append(&mut self.queue);
                self.queue = queue;
                self.applied = held;
                self.failed = None;
            }
            Err(e) => {
                self.db.close();
                self.failed = Some((e, Instant::now() + RETRY));
            }
        }
    }

    /// Commits the queued records (possibly none) to redb, durably if `durable_due` and
    /// anything is not yet durable. On failure the queue is kept for the retry.
    fn commit(&mut self, durable_due: bool) -> Result<(), String> {
        let behind = self.applied > self.durable.load(Ordering::Acquire);
        let durable = durable_due && (behind || !self.queue.is_empty());
        if self.queue.is_empty() && !durable {
            return Ok(());
        }
        let durability = if durable {
            Durability::Immediate
        } else {
            Durability::None
        };
        self.applied = self.db.commit(&self.queue, self.applied, durability)?;
        self.since_durable_bytes += self.queue.iter().map(|r| r.len() as u64).sum::<u64>();
        self.since_durable.append(&mut self.queue);
        if durable {
            self.since_durable.clear();
            self.since_durable_bytes = 0;
            self.last_durable = Instant::now();
            self.durable.store(self.applied, Ordering::Release);
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
