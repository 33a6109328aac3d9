//! The write-ahead log behind the on-disk sending queue (`sending_queue.storage`, opened with
//! [`Wal::open`]) and the pipeline log (`service.pipelines.<id>.storage`, opened with
//! [`Wal::open_log`]): the encoded OTLP requests accepted, so that a crash or a restart loses
//! nothing that reached the log. A queue hands its records out again with [`Wal::next`]; a
//! pipeline log keeps the records it has already handed on in memory and reads back only what an
//! earlier run left ([`Wal::next_left_by_last_run`]).
//!
//! Layout, in `<storage>/<exporter id>/` (or `<storage>/pipeline-<pipeline id>/`):
//! - `seg-<seq>.wal`: records appended in order, each `len u32 | crc32 u32 | signal u8 |
//!   items u32 | payload` (little endian; the checksum covers signal, items and payload). A new
//!   segment starts when the current one reaches the segment size, and at every start.
//! - `seg-<seq>.ack`: the offsets of the segment's records that were delivered (or given up on),
//!   each `offset u32 | crc32(offset) u32`, so a restart does not send them again.
//! - `LOCK`: held (an OS file lock) while a process uses the directory.
//!
//! A segment is deleted once every record in it has been acknowledged. Writes go to the page
//! cache at once (so `kill -9` loses nothing written) and are fsynced on an interval. On start,
//! every segment is checked: a record that is cut short or fails its checksum ends the segment;
//! the file is truncated there and a warning says how many bytes were skipped. Delivery is at
//! least once: a request being sent when the process died is sent again.

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use crate::signal::Signal;

const HEADER: u64 = 13;
const ACK: usize = 8;

/// Why the log could not take or give a record.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("the log is full ({used} of {max} bytes)")]
    Full { used: u64, max: u64 },
    #[error("a request of {0} bytes is larger than the whole log (storage_max_mib)")]
    TooLarge(u64),
    /// The device is full (or a quota reached): retry once acknowledged records made room.
    #[error("no space left: {0}")]
    NoSpace(String),
    #[error("{0}")]
    Io(String),
}

impl WalError {
    /// A full log or a full device: wait for room (or refuse retryably), nothing is wrong.
    pub fn is_full(&self) -> bool {
        matches!(self, WalError::Full { .. } | WalError::NoSpace(_))
    }
}

fn io(what: &str, path: &Path, e: std::io::Error) -> WalError {
    let message = format!("{what} {}: {e}", path.display());
    if matches!(
        e.kind(),
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded | ErrorKind::FileTooLarge
    ) {
        WalError::NoSpace(message)
    } else {
        WalError::Io(message)
    }
}

/// Where a record lives: its segment and offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordId {
    seq: u64,
    offset: u32,
}

/// A record read back for sending.
#[derive(Debug)]
pub struct Record {
    pub id: RecordId,
    pub signal: Signal,
    pub items: usize,
    pub payload: Bytes,
}

/// What a start found on disk.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Requests left undelivered by the previous run, to be sent now.
    pub requests: usize,
    pub bytes: u64,
    /// Damaged tails cut off, and their bytes.
    pub corrupted: usize,
    pub corrupted_bytes: u64,
}

struct Segment {
    path: PathBuf,
    file: Arc<File>,
    len: u64,
    /// Records written or found and not yet acknowledged.
    unacked: usize,
    /// Offsets acknowledged by an earlier run (read from the ack file at start).
    acked_before: HashSet<u32>,
    ack_file: Option<Arc<File>>,
}

struct Inner {
    segments: BTreeMap<u64, Segment>,
    write_seq: u64,
    read_seq: u64,
    read_offset: u64,
    total_bytes: u64,
    unacked: usize,
    /// Files written since the last fsync.
    dirty: Vec<Arc<File>>,
    dir_dirty: bool,
    /// The device was full at the last append: start a new segment at the next one, so the
    /// current one can be deleted once acknowledged and give its space back.
    rotate_next: bool,
    /// Writing acknowledgements fails (one log line per episode, not one per record).
    ack_failing: bool,
}

/// One write-ahead log: an exporter's on-disk queue or a pipeline's log.
pub struct Wal {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    /// What the log lines call it.
    what: &'static str,
    /// A queue reads back what it writes ([`Wal::next`]); a pipeline log does not, so its
    /// segment being written is emptied once all of it is acknowledged, read or not.
    reads_new: bool,
    /// The first segment this run writes; older ones were left by an earlier run.
    first_new_seq: u64,
    inner: Mutex<Inner>,
    _lock: File,
}

fn segment_path(dir: &Path, seq: u64, ext: &str) -> PathBuf {
    dir.join(format!("seg-{seq:020}.{ext}"))
}

fn checksum(signal: u8, items: u32, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&[signal]);
    h.update(&items.to_le_bytes());
    h.update(payload);
    h.finalize()
}

fn signal_code(s: Signal) -> u8 {
    match s {
        Signal::Traces => 0,
        Signal::Metrics => 1,
        Signal::Logs => 2,
    }
}

fn signal_of(code: u8) -> Option<Signal> {
    match code {
        0 => Some(Signal::Traces),
        1 => Some(Signal::Metrics),
        2 => Some(Signal::Logs),
        _ => None,
    }
}

/// A record's header and payload at `offset` of `buf`, if whole and intact.
fn parse_record(buf: &[u8], offset: usize) -> Option<(Signal, u32, &[u8])> {
    let head = buf.get(offset..offset + HEADER as usize)?;
    let len = u32::from_le_bytes(head[0..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(head[4..8].try_into().ok()?);
    let signal = head[8];
    let items = u32::from_le_bytes(head[9..13].try_into().ok()?);
    let start = offset + HEADER as usize;
    let payload = buf.get(start..start.checked_add(len)?)?;
    if checksum(signal, items, payload) != crc {
        return None;
    }
    Some((signal_of(signal)?, items, payload))
}

fn read_acks(path: &Path) -> Result<HashSet<u32>, WalError> {
    let buf = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(HashSet::new()),
        Err(e) => return Err(io("cannot read", path, e)),
    };
    // A torn or damaged entry is ignored: its record is sent again, never lost.
    Ok(buf
        .chunks_exact(ACK)
        .filter_map(|c| {
            let off: [u8; 4] = c[0..4].try_into().ok()?;
            let crc = u32::from_le_bytes(c[4..8].try_into().ok()?);
            (crc32fast::hash(&off) == crc).then_some(u32::from_le_bytes(off))
        })
        .collect())
}

fn seq_of(name: &str) -> Option<u64> {
    name.strip_prefix("seg-")?
        .strip_suffix(".wal")?
        .parse()
        .ok()
}

impl Wal {
    /// Open (or create) an exporter's on-disk queue in `dir`, take its lock, check what an
    /// earlier run left and start a new segment.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<(Wal, Recovered), WalError> {
        Wal::open_as(dir, max_bytes, "on-disk queue", true)
    }

    /// Open (or create) a pipeline's log in `dir`: as [`Wal::open`], for a writer that reads
    /// back only what an earlier run left.
    pub fn open_log(dir: &Path, max_bytes: u64) -> Result<(Wal, Recovered), WalError> {
        Wal::open_as(dir, max_bytes, "pipeline log", false)
    }

    fn open_as(
        dir: &Path,
        max_bytes: u64,
        what: &'static str,
        reads_new: bool,
    ) -> Result<(Wal, Recovered), WalError> {
        std::fs::create_dir_all(dir).map_err(|e| io("cannot create", dir, e))?;
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io("cannot open", &lock_path, e))?;
        lock.try_lock().map_err(|_| {
            WalError::Io(format!(
                "{} is in use by another process (only one ragwatch may use a storage directory)",
                dir.display()
            ))
        })?;
        let mut seqs: Vec<u64> = std::fs::read_dir(dir)
            .map_err(|e| io("cannot list", dir, e))?
            .filter_map(|e| e.ok())
            .filter_map(|e| seq_of(&e.file_name().to_string_lossy()))
            .collect();
        seqs.sort_unstable();
        let mut rec = Recovered::default();
        let mut segments = BTreeMap::new();
        let mut total_bytes = 0;
        let mut unacked = 0;
        for &seq in &seqs {
            let path = segment_path(dir, seq, "wal");
            let ack_path = segment_path(dir, seq, "ack");
            let buf = std::fs::read(&path).map_err(|e| io("cannot read", &path, e))?;
            let acked = read_acks(&ack_path)?;
            let (mut offset, mut pending, mut pending_bytes) = (0usize, 0usize, 0u64);
            while offset < buf.len() {
                let Some((_, _, payload)) = parse_record(&buf, offset) else {
                    break;
                };
                let size = HEADER as usize + payload.len();
                if u32::try_from(offset).map_or(true, |o| !acked.contains(&o)) {
                    pending += 1;
                    pending_bytes += size as u64;
                }
                offset += size;
            }
            if offset < buf.len() {
                let skipped = (buf.len() - offset) as u64;
                tracing::warn!(
                    file = %path.display(),
                    offset,
                    skipped_bytes = skipped,
                    "{what}: a damaged or cut-short record ends this segment; skipped the rest of it"
                );
                rec.corrupted += 1;
                rec.corrupted_bytes += skipped;
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| io("cannot open", &path, e))?;
                f.set_len(offset as u64)
                    .map_err(|e| io("cannot truncate", &path, e))?;
            }
            if pending == 0 {
                remove(&path);
                remove(&ack_path);
                continue;
            }
            rec.requests += pending;
            rec.bytes += pending_bytes;
            total_bytes += offset as u64;
            unacked += pending;
            let file = File::open(&path).map_err(|e| io("cannot open", &path, e))?;
            segments.insert(
                seq,
                Segment {
                    path,
                    file: Arc::new(file),
                    len: offset as u64,
                    unacked: pending,
                    acked_before: acked,
                    ack_file: None,
                },
            );
        }
        let write_seq = seqs.last().map_or(0, |s| s + 1);
        let read_seq = segments.keys().next().copied().unwrap_or(write_seq);
        let mut inner = Inner {
            segments,
            write_seq,
            read_seq,
            read_offset: 0,
            total_bytes,
            unacked,
            dirty: Vec::new(),
            dir_dirty: false,
            rotate_next: false,
            ack_failing: false,
        };
        // Segments hold at most 2^32 bytes of offsets; a few per queue keeps deletion prompt.
        let segment_bytes = (max_bytes / 8).clamp(64 * 1024, 64 * 1024 * 1024);
        new_segment(dir, &mut inner)?;
        let wal = Wal {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes,
            what,
            reads_new,
            first_new_seq: write_seq,
            inner: Mutex::new(inner),
            _lock: lock,
        };
        Ok((wal, rec))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the state as consistent as the files: go on.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes the log takes on disk, and its limit.
    pub fn usage(&self) -> (u64, u64) {
        (self.lock().total_bytes, self.max_bytes)
    }

    /// Requests written and not yet acknowledged.
    pub fn pending(&self) -> usize {
        self.lock().unacked
    }

    /// Append one request. The bytes are in the page cache when this returns (they survive the
    /// process being killed) and on the device after the next [`Wal::sync`].
    pub fn append(
        &self,
        signal: Signal,
        items: usize,
        payload: &[u8],
    ) -> Result<RecordId, WalError> {
        let size = HEADER + payload.len() as u64;
        if size > self.max_bytes || payload.len() > u32::MAX as usize / 2 {
            return Err(WalError::TooLarge(size));
        }
        let mut inner = self.lock();
        if inner.total_bytes + size > self.max_bytes {
            return Err(WalError::Full {
                used: inner.total_bytes,
                max: self.max_bytes,
            });
        }
        let current = inner.write_seq;
        let len = inner.segments.get(&current).map_or(0, |s| s.len);
        if len > 0 && (len + size > self.segment_bytes || inner.rotate_next) {
            self.rotate(&mut inner)?;
        }
        inner.rotate_next = false;
        let items = u32::try_from(items).unwrap_or(u32::MAX);
        let code = signal_code(signal);
        let mut head = [0u8; HEADER as usize];
        head[0..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        head[4..8].copy_from_slice(&checksum(code, items, payload).to_le_bytes());
        head[8] = code;
        head[9..13].copy_from_slice(&items.to_le_bytes());
        let seq = inner.write_seq;
        let seg = inner
            .segments
            .get_mut(&seq)
            .ok_or_else(|| WalError::Io("the current segment is missing".into()))?;
        let at = seg.len;
        if let Err(e) = seg
            .file
            .write_all_at(&head, at)
            .and_then(|_| seg.file.write_all_at(payload, at + HEADER))
        {
            // Cut off whatever part was written, so that a restart does not see a torn record.
            let _ = seg.file.set_len(at);
            let e = io("cannot write", &seg.path, e);
            inner.rotate_next = matches!(e, WalError::NoSpace(_));
            return Err(e);
        }
        seg.len += size;
        seg.unacked += 1;
        let file = seg.file.clone();
        inner.total_bytes += size;
        inner.unacked += 1;
        mark_dirty(&mut inner.dirty, file);
        let offset = u32::try_from(at)
            .map_err(|_| WalError::Io(format!("{}: offset too large", self.dir.display())))?;
        Ok(RecordId { seq, offset })
    }

    fn rotate(&self, inner: &mut Inner) -> Result<(), WalError> {
        let old = inner.write_seq;
        inner.write_seq += 1;
        new_segment(&self.dir, inner)?;
        // The old segment may already be fully acknowledged.
        self.delete_if_done(inner, old);
        Ok(())
    }

    /// The next request to send, in order; None when everything written has been handed out.
    pub fn next(&self) -> Result<Option<Record>, WalError> {
        self.next_below(u64::MAX)
    }

    /// The next record an earlier run left (of a pipeline log: to replay it through the
    /// pipeline), in order; None once they have all been handed out.
    pub fn next_left_by_last_run(&self) -> Result<Option<Record>, WalError> {
        self.next_below(self.first_new_seq)
    }

    fn next_below(&self, limit: u64) -> Result<Option<Record>, WalError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        loop {
            let (rs, ro) = (inner.read_seq, inner.read_offset);
            if rs >= limit {
                return Ok(None);
            }
            let seg = match inner.segments.get(&rs) {
                Some(seg) if ro < seg.len => seg,
                // The segment being written, read to its end.
                Some(_) if rs >= inner.write_seq => return Ok(None),
                // Read to its end, or deleted (all acknowledged): on to the next one.
                _ => match inner.segments.range(rs + 1..).next() {
                    Some((&s, _)) => {
                        inner.read_seq = s;
                        inner.read_offset = 0;
                        continue;
                    }
                    None => return Ok(None),
                },
            };
            let mut head = [0u8; HEADER as usize];
            seg.file
                .read_exact_at(&mut head, ro)
                .map_err(|e| io("cannot read", &seg.path, e))?;
            let len = u64::from(u32::from_le_bytes([head[0], head[1], head[2], head[3]]));
            let mut buf = vec![0u8; (HEADER + len) as usize];
            buf[..HEADER as usize].copy_from_slice(&head);
            seg.file
                .read_exact_at(&mut buf[HEADER as usize..], ro + HEADER)
                .map_err(|e| io("cannot read", &seg.path, e))?;
            let offset = u32::try_from(ro)
                .map_err(|_| WalError::Io(format!("{}: offset too large", seg.path.display())))?;
            let skip = seg.acked_before.contains(&offset);
            let parsed = parse_record(&buf, 0).map(|(s, i, _)| (s, i));
            let path = seg.path.clone();
            inner.read_offset = ro + HEADER + len;
            if skip {
                continue;
            }
            let Some((signal, items)) = parsed else {
                // Only possible if the file changed under us: the bytes were checked at start or
                // written by this process. Skip the record rather than stop the queue.
                tracing::error!(file = %path.display(), offset, "{}: a record failed its checksum; skipped", self.what);
                self.ack_locked(inner, RecordId { seq: rs, offset });
                continue;
            };
            let mut payload = Bytes::from(buf);
            let payload = payload.split_off(HEADER as usize);
            return Ok(Some(Record {
                id: RecordId { seq: rs, offset },
                signal,
                items: items as usize,
                payload,
            }));
        }
    }

    /// The record was delivered or given up on: never send it again.
    #[cfg(test)]
    pub fn ack(&self, id: RecordId) {
        let mut inner = self.lock();
        self.ack_locked(&mut inner, id);
    }

    /// [`Wal::ack`] for several records at once (one lock; called off the async threads).
    pub fn ack_many(&self, ids: &[RecordId]) {
        let mut inner = self.lock();
        for &id in ids {
            self.ack_locked(&mut inner, id);
        }
    }

    fn ack_locked(&self, inner: &mut Inner, id: RecordId) {
        let Some(seg) = inner.segments.get_mut(&id.seq) else {
            return;
        };
        seg.unacked = seg.unacked.saturating_sub(1);
        inner.unacked = inner.unacked.saturating_sub(1);
        if seg.unacked == 0 {
            if id.seq != inner.write_seq {
                self.delete_if_done(inner, id.seq);
                return;
            }
            let read =
                !self.reads_new || (inner.read_seq == id.seq && inner.read_offset >= seg.len);
            if read {
                // The segment being written is all delivered: empty it in place.
                match seg.file.set_len(0) {
                    Ok(()) => {
                        inner.total_bytes = inner.total_bytes.saturating_sub(seg.len);
                        seg.len = 0;
                        inner.read_offset = 0;
                        seg.acked_before.clear();
                        if let Some(a) = seg.ack_file.take() {
                            inner.dirty.retain(|f| !Arc::ptr_eq(f, &a));
                        }
                        remove(&segment_path(&self.dir, id.seq, "ack"));
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(file = %seg.path.display(), error = %e, "{}: cannot empty a delivered segment", self.what);
                    }
                }
            }
        }
        let ack_path = segment_path(&self.dir, id.seq, "ack");
        if seg.ack_file.is_none() {
            match OpenOptions::new().create(true).append(true).open(&ack_path) {
                Ok(f) => seg.ack_file = Some(Arc::new(f)),
                Err(e) => {
                    // The record will be sent again after a restart: a duplicate, not a loss.
                    warn_ack_failed(self.what, &mut inner.ack_failing, &ack_path, &e);
                    return;
                }
            }
        }
        if let Some(f) = &seg.ack_file {
            let off = id.offset.to_le_bytes();
            let mut entry = [0u8; ACK];
            entry[0..4].copy_from_slice(&off);
            entry[4..8].copy_from_slice(&crc32fast::hash(&off).to_le_bytes());
            let mut w: &File = f;
            let f = f.clone();
            match w.write_all(&entry) {
                Err(e) => warn_ack_failed(self.what, &mut inner.ack_failing, &ack_path, &e),
                Ok(()) => {
                    if std::mem::take(&mut inner.ack_failing) {
                        tracing::info!(dir = %self.dir.display(), "{}: acknowledgements are written again", self.what);
                    }
                }
            }
            mark_dirty(&mut inner.dirty, f);
        }
    }

    fn delete_if_done(&self, inner: &mut Inner, seq: u64) {
        let done = inner
            .segments
            .get(&seq)
            .is_some_and(|s| s.unacked == 0 && seq != inner.write_seq);
        if !done {
            return;
        }
        if let Some(seg) = inner.segments.remove(&seq) {
            inner.total_bytes = inner.total_bytes.saturating_sub(seg.len);
            inner.dirty.retain(|f| {
                !Arc::ptr_eq(f, &seg.file)
                    && !seg.ack_file.as_ref().is_some_and(|a| Arc::ptr_eq(f, a))
            });
            remove(&seg.path);
            remove(&segment_path(&self.dir, seq, "ack"));
            inner.dir_dirty = true;
        }
    }

    /// Flush what was written since the last call to the device. Called on an interval (at most
    /// `storage_sync_interval`) and at shutdown.
    pub fn sync(&self) -> Result<(), WalError> {
        let (files, dir) = {
            let mut inner = self.lock();
            let dir = std::mem::take(&mut inner.dir_dirty);
            (std::mem::take(&mut inner.dirty), dir)
        };
        for f in files {
            f.sync_data()
                .map_err(|e| io("cannot fsync a file in", &self.dir, e))?;
        }
        if dir {
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io("cannot fsync", &self.dir, e))?;
        }
        Ok(())
    }
}

/// Write acknowledgements off the async threads, in batches, until every sender is gone;
/// `after` runs after each batch (room was made).
pub async fn ack_loop(
    wal: Arc<Wal>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<RecordId>,
    mut after: impl FnMut() + Send,
) {
    let mut batch = Vec::new();
    while let Some(id) = rx.recv().await {
        batch.push(id);
        while batch.len() < 8192 {
            match rx.try_recv() {
                Ok(id) => batch.push(id),
                Err(_) => break,
            }
        }
        let w = wal.clone();
        let ids = std::mem::take(&mut batch);
        match tokio::task::spawn_blocking(move || {
            w.ack_many(&ids);
            ids
        })
        .await
        {
            Ok(mut ids) => {
                ids.clear();
                batch = ids;
            }
            Err(e) => {
                // Sent again after a restart: a duplicate, not a loss.
                tracing::error!(dir = %wal.dir.display(), error = %e, "{}: the acknowledgement writer failed", wal.what);
            }
        }
        after();
    }
}

fn new_segment(dir: &Path, inner: &mut Inner) -> Result<(), WalError> {
    let seq = inner.write_seq;
    let path = segment_path(dir, seq, "wal");
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| io("cannot create", &path, e))?;
    inner.segments.insert(
        seq,
        Segment {
            path,
            file: Arc::new(file),
            len: 0,
            unacked: 0,
            acked_before: HashSet::new(),
            ack_file: None,
        },
    );
    inner.dir_dirty = true;
    Ok(())
}

/// The record will be sent again after a restart (a duplicate, not a loss); said once per
/// episode (a full disk fails every acknowledgement).
fn warn_ack_failed(what: &str, failing: &mut bool, path: &Path, e: &std::io::Error) {
    if !std::mem::replace(failing, true) {
        tracing::warn!(file = %path.display(), error = %e, "{what}: cannot record deliveries; what was delivered may be sent again after a restart");
    }
}

fn mark_dirty(dirty: &mut Vec<Arc<File>>, f: Arc<File>) {
    if !dirty.iter().any(|d| Arc::ptr_eq(d, &f)) {
        dirty.push(f);
    }
}

fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != ErrorKind::NotFound
    {
        tracing::warn!(file = %path.display(), error = %e, "storage: cannot delete a finished file");
    }
}

#[cfg(test)]
mod tests;
