//! The write-ahead log: the file an acknowledged write is durable in before redb has it.
//!
//! A redb commit with fsync dirties several B-tree pages at scattered offsets (~1 ms at
//! 100,000 instances); appending one record to a preallocated file and `fdatasync`ing it
//! flushes one or two data pages. So `apply` appends here and returns, and the checkpointer
//! (`checkpoint.rs`) copies the same records into redb in large batches later.
//!
//! Files: `signpost.log.<first index, 20 digits>` in the data dir, one per segment, named by
//! the registry index of the segment's first record; sorting the names sorts the log. Each
//! record is a 12-byte header `[u32 LE payload length][u32 LE CRC-32 of the payload][u32 LE
//! CRC-32 of the header's first 8 bytes]` and the payload `[u64 LE index][u64 LE index of the
//! record before][u32 LE change count]` followed by each change: `1, key, value` for a put
//! (value: the stored form of a `record::Record`, exactly what redb stores) or `2, key` for a
//! delete, where key and value are each `[u32 LE length][bytes]` and key is `record::key_of`.
//!
//! Damage is told apart from a torn last write, so that no acknowledged write is dropped
//! silently. The header has its own checksum, so a damaged length is never followed into the
//! data; each record names the one before it, so a missing record or segment breaks the
//! chain; and a segment always ends with a zero header (its preallocated rest), so a file
//! cut short is seen. Only the last record of the last segment may be bad, and only when no
//! valid record follows it anywhere in the file: that is the one write that was never
//! acknowledged (a crash in its `fdatasync`). Anything else is an error naming the file and
//! the byte offset, and nothing is removed.
//!
//! A segment is preallocated by writing zeros (and `sync_all` once per extension), so the
//! per-record `fdatasync` flushes data only, never the file size. A zero-filled spare
//! (`signpost.log.spare`, a segment's size plus one step; made at open and again by the
//! checkpointer after each use) is what a new segment is renamed from, so a rotation costs a
//! rename and a directory fsync, not the write of megabytes of zeros.
//!
//! A failed write or `fdatasync` leaves the file in an unknown state (a failed fsync may have
//! dropped the dirty pages), so the record is not acknowledged and the region it may have
//! reached is overwritten with zeros and synced before anything else is appended: writes
//! resume by themselves once the cause (a full disk, too many open files) is gone. A segment
//! or data dir removed while running is a failure that does not heal: the writes after it
//! would be lost at the next start. It is noticed by the segment's link count, checked at
//! most `VERIFY_EVERY` (100 ms) apart.
//!
//! Segments written by earlier versions (`signpost.wal.<index>`, an 8-byte header without its
//! own checksum and no link to the record before) are still read, with the rule those versions
//! had: a bad record is tolerated only at the very end.
//!
//! The log is a plain struct (`&mut self`): `Embedded` keeps it behind a mutex so that records
//! reach the file, and the checkpointer, in index order.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::record::{self, key_of};
use super::{Change, StoreError};

/// Segment file names: this prefix, then the first index zero-padded to 20 digits.
pub(crate) const PREFIX: &str = "signpost.log.";
/// Segments of earlier versions (read, never written).
const LEGACY_PREFIX: &str = "signpost.wal.";

const HEADER: usize = 12;
/// How often an append checks that its segment is still linked in the data dir (a removed
/// data dir or segment takes writes that the next start would not find). Not on every append:
/// the `fstat` on every write measured ~0.08 ms of registration-to-DNS visibility at p50 in an
/// A/B of eight alternations (BENCHMARKS.md); at most this long after a removal, writes are
/// refused.
const VERIFY_EVERY: std::time::Duration = std::time::Duration::from_millis(100);
const LEGACY_HEADER: usize = 8;
/// Where the index and the index before it sit in a payload.
const INDEX_AT: usize = 0;
const PREV_AT: usize = 8;
const TAG_PUT: u8 = 1;
const TAG_DELETE: u8 = 2;

/// Sizes of segments and of their preallocation steps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    /// A record appended when the current segment holds at least this much starts a new one.
    pub segment_bytes: u64,
    /// Zeros are written ahead of the records in steps of this much.
    pub prealloc_bytes: u64,
}

struct Segment {
    first: u64,
    path: PathBuf,
}

/// Why the log takes no writes now.
struct Failure {
    message: String,
    /// Bytes of the current segment a failed append may have reached: zeroed before the next.
    region: Option<(u64, u64)>,
    /// The length of the record room was being made for, when that is what failed.
    room: Option<u64>,
    /// The segment or the data dir was removed: nothing written from now on would be found at
    /// the next start, so the log never takes a write again.
    permanent: bool,
}

/// The open log: its segments (oldest first), the last one open for appending.
pub(crate) struct Wal {
    dir: PathBuf,
    /// The data dir itself, held open: once it is removed its link count is 0.
    dir_handle: Option<File>,
    sizes: Sizes,
    segments: VecDeque<Segment>,
    file: Option<File>,
    /// Where the next record goes in the current segment.
    offset: u64,
    /// How much of the current segment is preallocated (and its size synced).
    allocated: u64,
    /// The index of the last record appended.
    last_index: u64,
    failed: Option<Failure>,
    /// When the current segment was last seen still linked in the data dir (`VERIFY_EVERY`).
    verified: Option<std::time::Instant>,
    /// Faults to inject into the file operations (tests only).
    #[cfg(test)]
    pub faults: faults::Plan,
}

/// One change read back from a record; borrowed from the record's bytes.
pub(crate) enum Op<'a> {
    Put { key: &'a str, value: &'a [u8] },
    Delete { key: &'a str },
}

impl Wal {
    /// A log with no segments yet in `dir` (recovery has removed the old ones); the first
    /// append creates one. `last_index` is the index of the last record stored anywhere.
    pub(crate) fn new(dir: &Path, sizes: Sizes, last_index: u64) -> Self {
        Wal {
            dir: dir.to_path_buf(),
            dir_handle: File::open(dir).ok(),
            sizes,
            segments: VecDeque::new(),
            file: None,
            offset: 0,
            allocated: 0,
            last_index,
            failed: None,
            verified: None,
            #[cfg(test)]
            faults: faults::Plan::default(),
        }
    }

    /// A file operation about to run: `Err` when a test planned a fault for it.
    #[cfg(test)]
    fn io(&mut self, op: faults::Io) -> std::io::Result<()> {
        self.faults.next(op)
    }
    #[cfg(not(test))]
    #[inline(always)]
    fn io(&mut self, _op: Io) -> std::io::Result<()> {
        Ok(())
    }

    /// Appends one record (a frame from `encode`), stamping it with its index (`at_least`, or
    /// one above the last record's if that is higher) and the index before it, and
    /// `fdatasync`s it; returns the index. When this returns `Ok` the record survives a crash;
    /// when it returns an error the record is not in the log.
    pub(crate) fn append(&mut self, frame: &mut [u8], at_least: u64) -> Result<u64, StoreError> {
        self.heal()?;
        let index = at_least.max(self.last_index + 1);
        stamp(frame, index, self.last_index);
        let mut region = None;
        match self.append_inner(frame, index, &mut region) {
            Ok(()) => {
                self.last_index = index;
                Ok(index)
            }
            Err(message) => {
                let removed = self.removed();
                let permanent = removed.is_some();
                let message = removed.unwrap_or(message);
                self.failed = Some(Failure {
                    message: message.clone(),
                    room: region.is_none().then_some(frame.len() as u64),
                    region,
                    permanent,
                });
                Err(StoreError::Unavailable(message))
            }
        }
    }

    /// `Ok` when the log can take a write: a failure whose cause is gone is repaired here
    /// (the region a failed append may have reached is zeroed and synced).
    pub(crate) fn heal(&mut self) -> Result<(), StoreError> {
        let Some(f) = &self.failed else {
            return Ok(());
        };
        if f.permanent {
            return Err(StoreError::Unavailable(f.message.clone()));
        }
        let (region, room) = (f.region, f.room);
        if let Some(why) = self.removed() {
            self.failed = Some(Failure {
                message: why.clone(),
                region: None,
                room: None,
                permanent: true,
            });
            return Err(StoreError::Unavailable(why));
        }
        if let Some((at, len)) = region {
            let zeros = vec![0u8; len as usize];
            let cleared = self.io(Io::Write).and_then(|()| {
                let file = self.file.as_ref().ok_or(std::io::ErrorKind::NotFound)?;
                file.write_all_at(&zeros, at)?;
                Ok(())
            });
            let cleared = cleared.and_then(|()| self.io(Io::Sync)).and_then(|()| {
                let file = self.file.as_ref().ok_or(std::io::ErrorKind::NotFound)?;
                file.sync_data()
            });
            if let Err(e) = cleared {
                return Err(StoreError::Unavailable(format!(
                    "{}: cannot clear a failed write: {e}",
                    self.current_path().display()
                )));
            }
        }
        if let Some(len) = room {
            // What failed was making room (a new segment, more zeros): try it again, so that
            // "ready" means a write would find its place. The segment is named by the next
            // index at the least; names only need to sort.
            let next = self.last_index + 1;
            self.make_room(len, next)
                .map_err(|e| StoreError::Unavailable(self.removed().unwrap_or(e)))?;
        }
        if let Some(f) = self.failed.take() {
            tracing::info!(earlier = %f.message, "the write-ahead log takes writes again");
        }
        Ok(())
    }

    /// Why the log can never take a write again, if the data dir or the current segment was
    /// removed while running.
    fn removed(&self) -> Option<String> {
        let gone = |f: &Option<File>| {
            f.as_ref()
                .and_then(|f| f.metadata().ok())
                .is_some_and(|m| m.nlink() == 0)
        };
        if gone(&self.dir_handle) {
            return Some(format!(
                "the data dir {} was removed while running; restart to take writes",
                self.dir.display()
            ));
        }
        gone(&self.file).then(|| {
            format!(
                "the log segment {} was removed while running; restart to take writes",
                self.current_path().display()
            )
        })
    }

    fn append_inner(
        &mut self,
        frame: &[u8],
        index: u64,
        region: &mut Option<(u64, u64)>,
    ) -> Result<(), String> {
        let len = frame.len() as u64;
        self.make_room(len, index)?;
        let path = self.current_path();
        *region = Some((self.offset, len));
        let at = self.offset;
        let verify = self.verified.is_none_or(|t| t.elapsed() >= VERIFY_EVERY);
        let written = self.io(Io::Write).and_then(|()| {
            let file = self.file.as_ref().ok_or(std::io::ErrorKind::NotFound)?;
            if verify && file.metadata()?.nlink() == 0 {
                return Err(std::io::Error::other("segment removed"));
            }
            file.write_all_at(frame, at)
        });
        if verify && written.is_ok() {
            self.verified = Some(std::time::Instant::now());
        }
        #[cfg(test)]
        if written.is_err() && self.faults.torn {
            // A write that failed half-way: the region holds part of the record.
            if let Some(file) = &self.file {
                let _ = file.write_all_at(&frame[..frame.len() / 2], at);
            }
        }
        written
            .and_then(|()| self.io(Io::Sync))
            .and_then(|()| {
                let file = self.file.as_ref().ok_or(std::io::ErrorKind::NotFound)?;
                file.sync_data()
            })
            .map_err(|e| format!("{}: {e}", path.display()))?;
        self.offset += len;
        Ok(())
    }

    /// Makes sure the current segment has room for a record of `len` bytes with index
    /// `index`: a new segment when there is none or it is full, more zeros when needed.
    fn make_room(&mut self, len: u64, index: u64) -> Result<(), String> {
        if self.file.is_none() || self.offset >= self.sizes.segment_bytes {
            self.start_segment(index)?;
        }
        // A zero header always follows the last record: a segment cut short is then seen.
        let need = self.offset + len + HEADER as u64;
        if need > self.allocated {
            let step = self.sizes.prealloc_bytes.max(need - self.allocated);
            self.preallocate(self.allocated + step)?;
        }
        Ok(())
    }

    fn current_path(&self) -> PathBuf {
        self.segments
            .back()
            .map(|s| s.path.clone())
            .unwrap_or_default()
    }

    /// Creates the segment whose first record has index `first`, preallocated, its name made
    /// durable in the directory before any record in it is acknowledged. The spare (see
    /// `make_spare`) is taken when there is one, so that the write of the zeros is not on this
    /// record's path. Nothing changes unless it all succeeds.
    fn start_segment(&mut self, first: u64) -> Result<(), String> {
        let path = self.dir.join(format!("{PREFIX}{first:020}"));
        let spare =
            self.io(Io::Rename).is_ok() && std::fs::rename(self.dir.join(SPARE), &path).is_ok();
        let opened = self.io(Io::Open).and_then(|()| {
            // A leftover file of this name can only hold records already in redb (its
            // removal failed after a checkpoint): truncating it loses nothing.
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(!spare)
                .open(&path)?;
            let allocated = if spare {
                file.metadata()?.len()
            } else {
                write_zeros(&file, 0, self.sizes.prealloc_bytes)?;
                self.sizes.prealloc_bytes
            };
            File::open(&self.dir)?.sync_all()?;
            Ok::<_, std::io::Error>((file, allocated))
        });
        let (file, allocated) = opened.map_err(|e| {
            // It holds no record: removed so that a full disk gets its space back.
            let _ = std::fs::remove_file(&path);
            format!("{}: {e}", path.display())
        })?;
        self.file = Some(file);
        self.segments.push_back(Segment { first, path });
        self.offset = 0;
        self.allocated = allocated;
        Ok(())
    }

    /// Writes zeros up to `end` and syncs the file with its new size.
    fn preallocate(&mut self, end: u64) -> Result<(), String> {
        let path = self.current_path();
        self.io(Io::Write)
            .and_then(|()| {
                let file = self.file.as_ref().ok_or(std::io::ErrorKind::NotFound)?;
                write_zeros(file, self.allocated, end - self.allocated)
            })
            .map_err(|e| format!("{}: {e}", path.display()))?;
        self.allocated = end;
        Ok(())
    }

    /// Removes the segments whose every record is at most `durable` (in redb for good). The
    /// current segment stays: it takes the next records.
    pub(crate) fn remove_through(&mut self, durable: u64) {
        while self.segments.len() > 1 && self.segments[1].first <= durable.saturating_add(1) {
            if let Some(s) = self.segments.pop_front() {
                remove(&s.path);
            }
        }
    }

    /// Removes every segment when every record appended is at most `durable`; the next
    /// append starts a fresh segment.
    pub(crate) fn remove_all_through(&mut self, durable: u64) {
        if self.last_index > durable {
            return;
        }
        self.file = None;
        for s in self.segments.drain(..) {
            remove(&s.path);
        }
    }

    #[cfg(test)]
    pub(crate) fn segment_count(&self) -> usize {
        self.segments.len()
    }
}

/// Writes `len` zeros at `at` and syncs the file with its size.
fn write_zeros(file: &File, at: u64, len: u64) -> std::io::Result<()> {
    let chunk = vec![0u8; len.min(1 << 20) as usize];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(chunk.len() as u64) as usize;
        file.write_all_at(&chunk[..n], at + done)?;
        done += n as u64;
    }
    file.sync_all()
}

/// A zero-filled, synced file in the data dir that the next new segment is renamed from. Not a
/// segment name (no index), so a reader ignores it.
pub(crate) const SPARE: &str = "signpost.log.spare";

/// Makes the spare in `dir` unless there is one: zeros for a whole segment plus one
/// preallocation step, synced, then renamed into place, so the log only ever takes a complete
/// one. The checkpointer calls this, off the write path; without a spare the log preallocates
/// a new segment itself.
pub(crate) fn make_spare(dir: &Path, sizes: Sizes) -> Result<(), String> {
    let spare = dir.join(SPARE);
    if spare.exists() {
        return Ok(());
    }
    let tmp = dir.join(format!("{SPARE}.tmp"));
    let io = |e: std::io::Error| format!("{}: {e}", tmp.display());
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io)?;
    if let Err(e) = write_zeros(&file, 0, sizes.segment_bytes + sizes.prealloc_bytes) {
        // A half-written spare would hold space a full disk needs back.
        drop(file);
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    std::fs::rename(&tmp, &spare).map_err(io)
}

/// A segment left behind is harmless (its records are skipped by index at the next start),
/// so a failed removal is logged, not returned.
fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!(file = %path.display(), error = %e, "cannot remove a checkpointed log segment");
    }
}

/// Encodes `changes` as one framed record, ready for `Wal::append` (which stamps its index,
/// the index before it and the checksums).
pub(crate) fn encode(changes: &[Change]) -> Result<Vec<u8>, String> {
    let mut buf = Vec::with_capacity(HEADER + 20 + changes.len() * 512);
    buf.extend_from_slice(&[0; HEADER]);
    buf.extend_from_slice(&[0; 16]); // index, index before
    // Health is not kept by the embedded store (`Backend::shares_health` is false).
    let stored = changes
        .iter()
        .filter(|c| !matches!(c, Change::Health(_)))
        .count();
    buf.extend_from_slice(&(stored as u32).to_le_bytes());
    let field = |buf: &mut Vec<u8>, bytes: &[u8]| {
        buf.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        buf.extend_from_slice(bytes);
    };
    for c in changes {
        match c {
            Change::Put(inst) => {
                buf.push(TAG_PUT);
                field(&mut buf, key_of(inst.key()).as_bytes());
                // Written in place after a length placeholder: no second copy of the record.
                let at = buf.len();
                buf.extend_from_slice(&[0; 4]);
                record::encode_into(&mut buf, inst)?;
                let n = (buf.len() - at - 4) as u32;
                buf[at..at + 4].copy_from_slice(&n.to_le_bytes());
            }
            Change::Delete(key) | Change::Reap(key) => {
                buf.push(TAG_DELETE);
                field(&mut buf, key_of(key).as_bytes());
            }
            Change::Health(_) => {}
        }
    }
    u32::try_from(buf.len() - HEADER).map_err(|_| "record too large")?;
    Ok(buf)
}

/// Writes `index` and `prev` into an encoded frame and its checksums over the result.
fn stamp(frame: &mut [u8], index: u64, prev: u64) {
    let p = HEADER;
    frame[p + INDEX_AT..p + INDEX_AT + 8].copy_from_slice(&index.to_le_bytes());
    frame[p + PREV_AT..p + PREV_AT + 8].copy_from_slice(&prev.to_le_bytes());
    let len = (frame.len() - HEADER) as u32;
    let crc = crc32fast::hash(&frame[HEADER..]);
    frame[0..4].copy_from_slice(&len.to_le_bytes());
    frame[4..8].copy_from_slice(&crc.to_le_bytes());
    let header_crc = crc32fast::hash(&frame[0..8]);
    frame[8..12].copy_from_slice(&header_crc.to_le_bytes());
}

/// The payload of a framed record from `encode`.
pub(crate) fn payload(frame: &[u8]) -> &[u8] {
    frame.get(HEADER..).unwrap_or_default()
}

/// A record read back: its index, the index of the record before it (`None` in segments of
/// earlier versions) and its changes in order.
pub(crate) struct Decoded<'a> {
    pub index: u64,
    pub prev: Option<u64>,
    pub ops: Vec<Op<'a>>,
}

/// Reads a payload (of the current format) back.
pub(crate) fn decode(payload: &[u8]) -> Result<Decoded<'_>, String> {
    decode_as(payload, true)
}

fn decode_as(payload: &[u8], linked: bool) -> Result<Decoded<'_>, String> {
    let mut r = Reader(payload);
    let index = u64::from_le_bytes(r.array()?);
    let prev = if linked {
        Some(u64::from_le_bytes(r.array()?))
    } else {
        None
    };
    let count = u32::from_le_bytes(r.array()?) as usize;
    let mut ops = Vec::with_capacity(count.min(4096));
    for _ in 0..count {
        let [tag] = r.array()?;
        let key = std::str::from_utf8(r.field()?).map_err(|e| format!("key: {e}"))?;
        ops.push(match tag {
            TAG_PUT => Op::Put {
                key,
                value: r.field()?,
            },
            TAG_DELETE => Op::Delete { key },
            t => return Err(format!("unknown change tag {t}")),
        });
    }
    if !r.0.is_empty() {
        return Err(format!("{} bytes after the last change", r.0.len()));
    }
    Ok(Decoded { index, prev, ops })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("record ends early".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn field(&mut self) -> Result<&'a [u8], String> {
        let n = u32::from_le_bytes(self.array()?) as usize;
        self.take(n)
    }
}

/// The segment files in `dir`, oldest first (those of earlier versions before the others:
/// they can only be older, since a start replays and removes every segment it finds).
pub(crate) fn segments(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let open_err = |e: std::io::Error| StoreError::Open {
        path: dir.to_path_buf(),
        message: e.to_string(),
    };
    let mut legacy = Vec::new();
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(open_err)? {
        let entry = entry.map_err(open_err)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        let (digits, into) = if let Some(d) = name.strip_prefix(PREFIX) {
            (d, &mut found)
        } else if let Some(d) = name.strip_prefix(LEGACY_PREFIX) {
            (d, &mut legacy)
        } else {
            continue;
        };
        if digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()) {
            into.push(entry.path());
        }
    }
    // Zero-padded: name order is index order.
    legacy.sort();
    found.sort();
    legacy.extend(found);
    Ok(legacy)
}

/// Files of the log that are not segments and may be removed at start-up: the spare of
/// earlier versions.
pub(crate) fn leftovers(dir: &Path) -> Vec<PathBuf> {
    [
        format!("{LEGACY_PREFIX}spare"),
        format!("{LEGACY_PREFIX}spare.tmp"),
    ]
    .into_iter()
    .map(|n| dir.join(n))
    .filter(|p| p.exists())
    .collect()
}

/// Reads the segment `files` (`segments`, oldest first) and hands every record, in order, to
/// `each` with the file it came from. `held` is the index redb holds: the first record's
/// predecessor must be at most that (nothing missing in between). Damage is an error naming
/// the file and byte offset; only a torn last write (see the module's notes) is dropped.
pub(crate) fn replay(
    files: &[PathBuf],
    held: u64,
    mut each: impl FnMut(&Path, Decoded<'_>) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut last: Option<u64> = None;
    for (n, path) in files.iter().enumerate() {
        let bytes = std::fs::read(path).map_err(|e| StoreError::Open {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let legacy = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(LEGACY_PREFIX));
        let segment = SegmentReader {
            path,
            bytes: &bytes,
            last_segment: n + 1 == files.len(),
            legacy,
        };
        segment.read(|at, d| {
            let corrupt = |message: String| StoreError::Corrupt {
                path: path.clone(),
                key: String::new(),
                message: format!("log record at byte {at}: {message}"),
            };
            match (d.prev, last) {
                (Some(prev), Some(l)) if prev != l => {
                    return Err(corrupt(format!(
                        "it follows index {prev}, but the record before it has index {l}: \
                         records are missing"
                    )));
                }
                (Some(prev), None) if prev > held => {
                    return Err(corrupt(format!(
                        "it follows index {prev}, but the database holds only through {held}: \
                         records are missing"
                    )));
                }
                _ => {}
            }
            if d.prev.is_some_and(|p| d.index <= p) || last.is_some_and(|l| d.index <= l) {
                return Err(corrupt(format!("index {} does not grow", d.index)));
            }
            last = Some(d.index);
            each(path, d)
        })?;
    }
    Ok(())
}

/// One segment file's bytes, read record by record.
struct SegmentReader<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    last_segment: bool,
    legacy: bool,
}

enum Header {
    /// All zeros: the preallocated rest of the segment.
    Zero,
    Bad(&'static str),
    Ok {
        len: usize,
        crc: u32,
    },
}

impl<'a> SegmentReader<'a> {
    fn corrupt(&self, at: usize, why: &str) -> StoreError {
        StoreError::Corrupt {
            path: self.path.to_path_buf(),
            key: String::new(),
            message: format!("log record at byte {at}: {why}"),
        }
    }

    fn header_len(&self) -> usize {
        if self.legacy { LEGACY_HEADER } else { HEADER }
    }

    fn header(&self, h: &[u8]) -> Header {
        let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        if h.iter().all(|&b| b == 0) {
            return Header::Zero;
        }
        if self.legacy {
            return match word(0) {
                0 => Header::Zero,
                len => Header::Ok {
                    len: len as usize,
                    crc: word(4),
                },
            };
        }
        if crc32fast::hash(&h[0..8]) != word(8) {
            return Header::Bad("its header fails its checksum");
        }
        match word(0) {
            0 => Header::Bad("its header claims an empty record"),
            len => Header::Ok {
                len: len as usize,
                crc: word(4),
            },
        }
    }

    /// The valid record at `at`, if there is one.
    fn valid_at(&self, at: usize) -> Option<&'a [u8]> {
        let h = self.bytes.get(at..at + self.header_len())?;
        let Header::Ok { len, crc } = self.header(h) else {
            return None;
        };
        let p = self.bytes.get(at + h.len()..at + h.len() + len)?;
        (crc32fast::hash(p) == crc).then_some(p)
    }

    /// Whether a valid record starts anywhere at or after `from`: then the bad one before it
    /// was not the last write, and acknowledged data was damaged. Only read on damage.
    fn valid_after(&self, from: usize) -> bool {
        (from..self.bytes.len()).any(|at| self.valid_at(at).is_some())
    }

    /// Hands each record (its offset and contents) to `each`; stops at the segment's end.
    fn read(
        &self,
        mut each: impl FnMut(usize, Decoded<'a>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let hl = self.header_len();
        let mut at = 0;
        loop {
            let Some(h) = self.bytes.get(at..at + hl) else {
                // A segment whose start was cut short holds zeros only, and no record.
                if self.legacy || (at == 0 && self.bytes.iter().all(|&b| b == 0)) {
                    return Ok(());
                }
                return Err(self.corrupt(at, "the segment ends without its end marker: cut short"));
            };
            let why = match self.header(h) {
                Header::Zero => {
                    if self.legacy || self.bytes[at..].iter().all(|&b| b == 0) {
                        return Ok(());
                    }
                    "a zero header with data after it"
                }
                Header::Bad(why) => why,
                Header::Ok { len, crc } => {
                    let Some(p) = self.bytes.get(at + hl..at + hl + len) else {
                        if self.legacy && self.last_segment && !self.valid_after(at + 1) {
                            self.torn(at, "cut off");
                            return Ok(());
                        }
                        // A record never straddles the preallocated end.
                        return Err(self.corrupt(at, "its length runs past the end of the file"));
                    };
                    if crc32fast::hash(p) == crc {
                        let d = decode_as(p, !self.legacy).map_err(|e| self.corrupt(at, &e))?;
                        each(at, d)?;
                        at += hl + len;
                        continue;
                    }
                    "its payload fails its checksum"
                }
            };
            if self.last_segment && !self.valid_after(at + 1) {
                self.torn(at, why);
                return Ok(());
            }
            return Err(self.corrupt(at, why));
        }
    }

    fn torn(&self, at: usize, why: &str) {
        tracing::warn!(
            file = %self.path.display(),
            offset = at,
            why,
            "the log's last record was torn (a write never acknowledged); dropped"
        );
    }
}

#[cfg(test)]
use faults::Io;
#[cfg(not(test))]
use faults_off::Io;

#[cfg(not(test))]
mod faults_off {
    /// The log's file operations (fault injection exists in tests only).
    #[derive(Debug, Clone, Copy)]
    pub(crate) enum Io {
        Write,
        Sync,
        Rename,
        Open,
    }
}

/// Fault injection for tests: the log's file operations fail as planned, the way a full disk,
/// a failing device or too many open files make them fail.
#[cfg(test)]
pub(crate) mod faults {
    /// The log's file operations: a write (of a record, of zeros, or the clearing of a failed
    /// write), an `fdatasync` of a record, the rename of the spare, the open of a new segment.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Io {
        Write,
        Sync,
        Rename,
        Open,
    }

    /// Which calls fail: `(operation, how many more calls of it succeed first, how many fail)`.
    #[derive(Debug, Default)]
    pub(crate) struct Plan {
        pub fail: Vec<(Io, u32, u32)>,
        /// A failing record write still writes its first half.
        pub torn: bool,
    }

    impl Plan {
        pub(crate) fn next(&mut self, op: Io) -> std::io::Result<()> {
            for (o, skip, count) in &mut self.fail {
                if *o != op || *count == 0 {
                    continue;
                }
                if *skip > 0 {
                    *skip -= 1;
                    continue;
                }
                *count -= 1;
                return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes() -> Sizes {
        Sizes {
            segment_bytes: 256,
            prealloc_bytes: 128,
        }
    }

    fn del(id: &str) -> Change {
        Change::Delete(crate::model::InstanceKey {
            service: crate::model::ServiceName::parse("web").unwrap(),
            id: crate::model::InstanceId::parse(id).unwrap(),
        })
    }

    /// Every record's index, read as a start-up would with a database holding `held`.
    fn read_all(dir: &Path, held: u64) -> Result<Vec<u64>, StoreError> {
        let mut got = Vec::new();
        replay(&segments(dir)?, held, |_, d| {
            got.push(d.index);
            Ok(())
        })?;
        Ok(got)
    }

    #[test]
    fn records_come_back_in_order_across_rotated_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::new(dir.path(), sizes(), 0);
        for i in 1..=40 {
            wal.append(&mut encode(&[del(&format!("i{i}"))]).unwrap(), i)
                .unwrap();
        }
        assert!(wal.segment_count() > 3, "{}", wal.segment_count());
        assert_eq!(
            read_all(dir.path(), 0).unwrap(),
            (1..=40).collect::<Vec<_>>()
        );
        // Preallocated: files are larger than their records.
        let first = &segments(dir.path()).unwrap()[0];
        assert!(first.to_string_lossy().ends_with(&format!("{:020}", 1)));
        wal.remove_through(20);
        let left = read_all(dir.path(), 20).unwrap();
        assert!(left[0] > 1 && left[0] <= 21, "{left:?}");
        assert_eq!(*left.last().unwrap(), 40);
        wal.remove_all_through(39);
        assert_eq!(read_all(dir.path(), 20).unwrap().last(), Some(&40));
        wal.remove_all_through(40);
        assert!(segments(dir.path()).unwrap().is_empty());
        wal.append(&mut encode(&[del("x")]).unwrap(), 41).unwrap();
        assert_eq!(read_all(dir.path(), 40).unwrap(), vec![41]);
    }

    #[test]
    fn a_new_segment_takes_the_spare() {
        let dir = tempfile::tempdir().unwrap();
        make_spare(dir.path(), sizes()).unwrap();
        let mut wal = Wal::new(dir.path(), sizes(), 0);
        for i in 1..=3 {
            wal.append(&mut encode(&[del(&format!("i{i}"))]).unwrap(), i)
                .unwrap();
        }
        assert!(!dir.path().join(SPARE).exists(), "taken");
        let seg = &segments(dir.path()).unwrap()[0];
        let len = std::fs::metadata(seg).unwrap().len();
        assert_eq!(len, sizes().segment_bytes + sizes().prealloc_bytes);
        assert_eq!(read_all(dir.path(), 0).unwrap(), vec![1, 2, 3]);
    }

    #[test]
    fn decode_reads_back_what_encode_wrote() {
        let mut f = encode(&[del("a"), del("b")]).unwrap();
        stamp(&mut f, 7, 5);
        let d = decode(payload(&f)).unwrap();
        assert_eq!((d.index, d.prev), (7, Some(5)));
        let keys: Vec<&str> = d
            .ops
            .iter()
            .map(|o| match o {
                Op::Delete { key } => *key,
                Op::Put { key, .. } => key,
            })
            .collect();
        assert_eq!(keys, ["web/a", "web/b"]);
    }
}
