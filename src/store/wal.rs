//! The write-ahead log: the file an acknowledged write is durable in before redb has it.
//!
//! A redb commit with fsync dirties several B-tree pages at scattered offsets (~1 ms at
//! 100,000 instances); appending one record to a preallocated file and `fdatasync`ing it
//! flushes one or two data pages. So `apply` appends here and returns, and the checkpointer
//! (`checkpoint.rs`) copies the same records into redb in large batches later.
//!
//! Files: `signpost.wal.<first index, 20 digits>` in the data dir, one per segment, named by
//! the registry index of the segment's first record; sorting the names sorts the log. Each
//! record is `[u32 LE payload length][u32 LE CRC-32 (IEEE) of the payload][payload]`, and the
//! payload is `[u64 LE index][u32 LE change count]` followed by each change: `1, key, value`
//! for a put (value: the stored form of a `record::Record`, exactly what redb stores) or
//! `2, key` for a delete, where key and value are each `[u32 LE length][bytes]` and key is
//! `record::key_of`.
//!
//! A segment is preallocated by writing zeros (and `sync_all` once per extension), so the
//! per-record `fdatasync` flushes data only, never the file size; a record never straddles
//! the preallocated end. A zero-filled spare (`signpost.wal.spare`, a segment's size plus one
//! step; made at open and again by the checkpointer after each use) is what a new segment is
//! renamed from, so a rotation costs a rename and a directory fsync, not the write of
//! megabytes of zeros. A length of 0 ends a segment. A record that is cut off or fails its
//! CRC can only be the last record of the last segment (a write that was never acknowledged);
//! anywhere else it is corruption, reported with the file's name.
//!
//! The log is a plain struct (`&mut self`): `Embedded` keeps it behind a mutex so that records
//! reach the file, and the checkpointer, in index order.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::record::{self, key_of};
use super::{Change, StoreError};

/// Segment file names: this prefix, then the first index zero-padded to 20 digits.
pub const PREFIX: &str = "signpost.wal.";

const HEADER: usize = 8;
const TAG_PUT: u8 = 1;
const TAG_DELETE: u8 = 2;

/// Sizes of segments and of their preallocation steps.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// A record appended when the current segment holds at least this much starts a new one.
    pub segment_bytes: u64,
    /// Zeros are written ahead of the records in steps of this much.
    pub prealloc_bytes: u64,
}

struct Segment {
    first: u64,
    path: PathBuf,
}

/// The open log: its segments (oldest first), the last one open for appending.
pub struct Wal {
    dir: PathBuf,
    sizes: Sizes,
    segments: VecDeque<Segment>,
    file: Option<File>,
    /// Where the next record goes in the current segment.
    offset: u64,
    /// How much of the current segment is preallocated (and its size synced).
    allocated: u64,
    /// The index of the last record appended.
    last_index: u64,
    /// A failed write or fsync: the file's state is unknown (a failed fsync may have dropped
    /// the dirty pages and a retry would wrongly succeed), so nothing more is acknowledged.
    failed: Option<String>,
}

/// One change read back from a record; borrowed from the record's bytes.
pub enum Op<'a> {
    Put { key: &'a str, value: &'a [u8] },
    Delete { key: &'a str },
}

impl Wal {
    /// A log with no segments yet in `dir` (recovery has removed the old ones); the first
    /// append creates one.
    pub fn new(dir: &Path, sizes: Sizes, last_index: u64) -> Self {
        Wal {
            dir: dir.to_path_buf(),
            sizes,
            segments: VecDeque::new(),
            file: None,
            offset: 0,
            allocated: 0,
            last_index,
            failed: None,
        }
    }

    /// Appends one record (from `encode`) with registry index `index` and `fdatasync`s it.
    /// When this returns `Ok` the record survives a crash.
    pub fn append(&mut self, frame: &[u8], index: u64) -> Result<(), StoreError> {
        if let Some(e) = &self.failed {
            return Err(StoreError::Write(format!(
                "the write-ahead log failed earlier and takes no more writes: {e}"
            )));
        }
        match self.append_inner(frame, index) {
            Ok(()) => {
                self.last_index = index;
                Ok(())
            }
            Err(e) => {
                self.failed = Some(e.clone());
                Err(StoreError::Write(e))
            }
        }
    }

    fn append_inner(&mut self, frame: &[u8], index: u64) -> Result<(), String> {
        let len = frame.len() as u64;
        if self.file.is_none() || self.offset >= self.sizes.segment_bytes {
            self.start_segment(index)?;
        }
        if self.offset + len > self.allocated {
            let step = self.sizes.prealloc_bytes.max(len);
            self.preallocate(self.allocated + step)?;
        }
        let Some(file) = &self.file else {
            return Err("no open segment".into());
        };
        let path = self.current_path();
        file.write_all_at(frame, self.offset)
            .and_then(|()| file.sync_data())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        self.offset += len;
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
    /// record's path.
    fn start_segment(&mut self, first: u64) -> Result<(), String> {
        let path = self.dir.join(format!("{PREFIX}{first:020}"));
        let io = |e: std::io::Error| format!("{}: {e}", path.display());
        let spare = std::fs::rename(self.dir.join(SPARE), &path).is_ok();
        // A leftover file of this name can only hold records already in redb (its removal
        // failed after a checkpoint): truncating it loses nothing.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(!spare)
            .open(&path)
            .map_err(io)?;
        let allocated = if spare {
            file.metadata().map_err(io)?.len()
        } else {
            0
        };
        self.file = Some(file);
        self.segments.push_back(Segment {
            first,
            path: path.clone(),
        });
        self.offset = 0;
        self.allocated = allocated;
        if !spare {
            self.preallocate(self.sizes.prealloc_bytes)?;
        }
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| format!("{}: {e}", self.dir.display()))
    }

    /// Writes zeros up to `end` and syncs the file with its new size.
    fn preallocate(&mut self, end: u64) -> Result<(), String> {
        let path = self.current_path();
        let Some(file) = &self.file else {
            return Err("no open segment".into());
        };
        let zeros = vec![0u8; (end - self.allocated) as usize];
        file.write_all_at(&zeros, self.allocated)
            .and_then(|()| file.sync_all())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        self.allocated = end;
        Ok(())
    }

    /// Removes the segments whose every record is at most `durable` (in redb for good). The
    /// current segment stays: it takes the next records.
    pub fn remove_through(&mut self, durable: u64) {
        while self.segments.len() > 1 && self.segments[1].first <= durable.saturating_add(1) {
            if let Some(s) = self.segments.pop_front() {
                remove(&s.path);
            }
        }
    }

    /// Removes every segment when every record appended is at most `durable`; the next
    /// append starts a fresh segment.
    pub fn remove_all_through(&mut self, durable: u64) {
        if self.last_index > durable {
            return;
        }
        self.file = None;
        for s in self.segments.drain(..) {
            remove(&s.path);
        }
    }

    #[cfg(test)]
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
}

/// A zero-filled, synced file in the data dir that the next new segment is renamed from. Not a
/// segment name (no index), so a reader ignores it.
pub const SPARE: &str = "signpost.wal.spare";

/// Makes the spare in `dir` unless there is one: zeros for a whole segment plus one
/// preallocation step, synced, then renamed into place, so the log only ever takes a complete
/// one. The checkpointer calls this, off the write path; without a spare the log preallocates
/// a new segment itself.
pub fn make_spare(dir: &Path, sizes: Sizes) -> Result<(), String> {
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
    let total = sizes.segment_bytes + sizes.prealloc_bytes;
    let chunk = vec![0u8; total.min(1 << 20) as usize];
    let mut at = 0;
    while at < total {
        let n = (total - at).min(chunk.len() as u64) as usize;
        file.write_all_at(&chunk[..n], at).map_err(io)?;
        at += n as u64;
    }
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, &spare).map_err(io)
}

/// A segment left behind is harmless (its records are skipped by index at the next start),
/// so a failed removal is logged, not returned.
fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!(file = %path.display(), error = %e, "cannot remove a checkpointed log segment");
    }
}

/// Encodes `changes` stamped with `index` as one framed record, ready for `Wal::append`.
pub fn encode(changes: &[Change], index: u64) -> Result<Vec<u8>, String> {
    let mut buf = Vec::with_capacity(HEADER + 12 + changes.len() * 512);
    buf.extend_from_slice(&[0; HEADER]);
    buf.extend_from_slice(&index.to_le_bytes());
    buf.extend_from_slice(&(changes.len() as u32).to_le_bytes());
    let field = |buf: &mut Vec<u8>, bytes: &[u8]| {
        buf.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        buf.extend_from_slice(bytes);
    };
    for c in changes {
        match c {
            Change::Put(inst) => {
                buf.push(TAG_PUT);
                field(&mut buf, key_of(&inst.key).as_bytes());
                // Written in place after a length placeholder: no second copy of the record.
                let at = buf.len();
                buf.extend_from_slice(&[0; 4]);
                record::encode_into(&mut buf, inst)?;
                let n = (buf.len() - at - 4) as u32;
                buf[at..at + 4].copy_from_slice(&n.to_le_bytes());
            }
            Change::Delete(key) => {
                buf.push(TAG_DELETE);
                field(&mut buf, key_of(key).as_bytes());
            }
        }
    }
    let payload_len = u32::try_from(buf.len() - HEADER).map_err(|_| "record too large")?;
    let crc = crc32fast::hash(&buf[HEADER..]);
    buf[0..4].copy_from_slice(&payload_len.to_le_bytes());
    buf[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(buf)
}

/// The payload of a framed record from `encode`.
pub fn payload(frame: &[u8]) -> &[u8] {
    frame.get(HEADER..).unwrap_or_default()
}

/// Reads a payload back: its index and its changes in order.
pub fn decode(payload: &[u8]) -> Result<(u64, Vec<Op<'_>>), String> {
    let mut r = Reader(payload);
    let index = u64::from_le_bytes(r.array()?);
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
    Ok((index, ops))
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

/// The segment files in `dir`, oldest first.
pub fn segments(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let open_err = |e: std::io::Error| StoreError::Open {
        path: dir.to_path_buf(),
        message: e.to_string(),
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(open_err)? {
        let entry = entry.map_err(open_err)?;
        let name = entry.file_name();
        let Some(digits) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            continue;
        };
        if digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()) {
            found.push(entry.path());
        }
    }
    // Zero-padded: name order is index order.
    found.sort();
    Ok(found)
}

/// Reads the segment `files` (`segments`, oldest first) and hands every record's payload, in
/// order, to `each` with the file it came from.
pub fn replay(
    files: &[PathBuf],
    mut each: impl FnMut(&Path, &[u8]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    for (n, path) in files.iter().enumerate() {
        let corrupt = |message: String| StoreError::Corrupt {
            path: path.clone(),
            key: String::new(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| StoreError::Open {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let last = n + 1 == files.len();
        let mut at = 0;
        while let Some(frame) = frame_at(&bytes, at) {
            match frame {
                Frame::End => break,
                Frame::Record(p) => {
                    each(path, p)?;
                    at += HEADER + p.len();
                }
                Frame::Bad(why) => {
                    // Only the very last write may be torn: one that was never acknowledged.
                    // A valid record after it, or a later segment, means acknowledged data
                    // was damaged.
                    let next = bad_len(&bytes, at).map(|n| at + HEADER + n);
                    let followed = next
                        .and_then(|next| frame_at(&bytes, next))
                        .is_some_and(|f| matches!(f, Frame::Record(_)));
                    if !last || followed {
                        return Err(corrupt(format!("log record at byte {at}: {why}")));
                    }
                    break;
                }
            }
        }
    }
    Ok(())
}

enum Frame<'a> {
    Record(&'a [u8]),
    /// Zeros: the preallocated rest of the segment.
    End,
    Bad(&'static str),
}

fn frame_at(bytes: &[u8], at: usize) -> Option<Frame<'_>> {
    let header = bytes.get(at..at + HEADER)?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len == 0 {
        return Some(Frame::End);
    }
    let Some(p) = bytes.get(at + HEADER..at + HEADER + len) else {
        return Some(Frame::Bad("its length runs past the end of the file"));
    };
    if crc32fast::hash(p) != crc {
        return Some(Frame::Bad("checksum mismatch"));
    }
    Some(Frame::Record(p))
}

/// The length a bad record claims, when it lies within the file.
fn bad_len(bytes: &[u8], at: usize) -> Option<usize> {
    let h = bytes.get(at..at + 4)?;
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
    (at + HEADER + len <= bytes.len()).then_some(len)
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

    fn read_all(dir: &Path) -> Result<Vec<u64>, StoreError> {
        let mut got = Vec::new();
        replay(&segments(dir)?, |_, p| {
            got.push(decode(p).unwrap().0);
            Ok(())
        })?;
        Ok(got)
    }

    #[test]
    fn records_come_back_in_order_across_rotated_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::new(dir.path(), sizes(), 0);
        for i in 1..=40 {
            wal.append(&encode(&[del(&format!("i{i}"))], i).unwrap(), i)
                .unwrap();
        }
        assert!(wal.segment_count() > 3, "{}", wal.segment_count());
        assert_eq!(read_all(dir.path()).unwrap(), (1..=40).collect::<Vec<_>>());
        // Preallocated: files are larger than their records.
        let first = &segments(dir.path()).unwrap()[0];
        assert!(first.to_string_lossy().ends_with(&format!("{:020}", 1)));
        wal.remove_through(20);
        let left = read_all(dir.path()).unwrap();
        assert!(left[0] > 1 && left[0] <= 21, "{left:?}");
        assert_eq!(*left.last().unwrap(), 40);
        wal.remove_all_through(39);
        assert_eq!(read_all(dir.path()).unwrap().last(), Some(&40));
        wal.remove_all_through(40);
        assert!(segments(dir.path()).unwrap().is_empty());
        wal.append(&encode(&[del("x")], 41).unwrap(), 41).unwrap();
        assert_eq!(read_all(dir.path()).unwrap(), vec![41]);
    }

    #[test]
    fn a_new_segment_takes_the_spare() {
        let dir = tempfile::tempdir().unwrap();
        make_spare(dir.path(), sizes()).unwrap();
        let mut wal = Wal::new(dir.path(), sizes(), 0);
        for i in 1..=3 {
            wal.append(&encode(&[del(&format!("i{i}"))], i).unwrap(), i)
                .unwrap();
        }
        assert!(!dir.path().join(SPARE).exists(), "taken");
        let seg = &segments(dir.path()).unwrap()[0];
        let len = std::fs::metadata(seg).unwrap().len();
        assert_eq!(len, sizes().segment_bytes + sizes().prealloc_bytes);
        assert_eq!(read_all(dir.path()).unwrap(), vec![1, 2, 3]);
    }

    #[test]
    fn decode_reads_back_what_encode_wrote() {
        let f = encode(&[del("a"), del("b")], 7).unwrap();
        let (index, ops) = decode(payload(&f)).unwrap();
        assert_eq!(index, 7);
        let keys: Vec<&str> = ops
            .iter()
            .map(|o| match o {
                Op::Delete { key } => *key,
                Op::Put { key, .. } => key,
            })
            .collect();
        assert_eq!(keys, ["web/a", "web/b"]);
    }
}
