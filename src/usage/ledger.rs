//! The usage ledger: every usage record is copied into a memory-mapped,
//! append-only segment file before the request's logging phase returns, and
//! the batch writer moves records from there into the database.
//!
//! Why a memory map: a record copied into a shared file mapping belongs to the
//! kernel's page cache at once, so it survives the process being killed
//! (SIGKILL, OOM killer, a panic that aborts) without a syscall or an fsync on
//! the request path. Power loss is covered by a background sync every
//! `usage.ledger_sync_ms`: that interval is what a power cut can lose.
//!
//! Each segment starts with a header holding its commit mark, the offset up to
//! which the database has the records. After a crash, start-up reads every
//! segment from its mark; a crash between a database commit and the mark only
//! replays records the database already has, and their request ids (unique in
//! `usage_records`) keep them from counting twice.
//!
//! The writer normally takes records from an in-memory copy (no decoding); when
//! that copy overflows (the database is slow or down) or after a restart, it
//! reads them back from the segments instead, so the queue's size bounds memory
//! and the configured disk budget (`usage.ledger_max_mib`) bounds the rest.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use memmap2::MmapRaw;
use tokio::sync::Notify;

use super::{codec, UsageRecord};
use crate::config::{LedgerFull, UsageConfig};
use crate::metrics::Metrics;

/// Segments of this version hold records in `codec`'s encoding.
const MAGIC: &[u8; 8] = b"BMLEDG02";
/// Segments written before it hold JSON records; still read after an upgrade.
const MAGIC_JSON: &[u8; 8] = b"BMLEDG01";
/// Magic (8 bytes), then the commit mark (u64, little-endian), then reserved.
const HEADER: usize = 64;
const MARK_AT: usize = 8;
/// Records the in-memory queue keeps room for after a backlog drains: more
/// than a busy gateway queues between two batches (the writer lingers 50 ms),
/// ~1.2 MiB.
const QUEUE_KEEP: usize = 4096;
/// Per record: payload length (u32) and checksum of the payload (u32).
const FRAME: usize = 8;
/// The checksum of JSON segments: CRC-32C with slice-by-16 tables (16 KiB).
const CRC_JSON: crc::Crc<u32, crc::Table<16>> =
    crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISCSI);

/// The checksum of current segments: CRC-32 (IEEE) by crc32fast, which uses
/// the CPU's carry-less multiply where it has one: ~880 instructions per
/// record with the tables above, a fraction of that with it.
fn checksum(payload: &[u8]) -> u32 {
    crc32fast::hash(payload)
}

/// A place in the ledger: segment sequence number and byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    seq: u64,
    off: usize,
}

struct Segment {
    seq: u64,
    path: PathBuf,
    /// Kept open to drop released pages from the page cache too.
    file: File,
    map: MmapRaw,
    len: usize,
    /// Bytes of records written (appends happen under the ledger's lock).
    written: AtomicUsize,
    /// Bytes known to be on stable storage (the sync thread's progress).
    synced: AtomicUsize,
    /// Pages below this offset are out of the process's memory (`release`).
    released: AtomicUsize,
    /// The file and its directory entry still need an fsync.
    new: AtomicBool,
    /// Records are JSON (a segment from before `codec`).
    json: bool,
}

impl Segment {
    fn file_name(seq: u64) -> String {
        format!("segment-{seq:016}.ledger")
    }

    fn create(dir: &Path, seq: u64, len: usize) -> std::io::Result<Self> {
        let path = dir.join(Self::file_name(seq));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        // Blocks reserved now: writing into a hole of a full disk through a
        // mapping would kill the process with SIGBUS instead of failing here.
        reserve(&file, len)?;
        let map = MmapRaw::map_raw(&file)?;
        let seg = Self {
            seq,
            path,
            file,
            map,
            len,
            written: AtomicUsize::new(HEADER),
            synced: AtomicUsize::new(0),
            released: AtomicUsize::new(0),
            new: AtomicBool::new(true),
            json: false,
        };
        seg.bytes_mut(0, MAGIC.len()).copy_from_slice(MAGIC);
        seg.set_mark(HEADER);
        Ok(seg)
    }

    /// A segment left by an earlier run; `None` if it is not a ledger segment.
    fn open(path: &Path, seq: u64) -> std::io::Result<Option<Self>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let len = file.metadata()?.len() as usize;
        if len < HEADER {
            return Ok(None);
        }
        let map = MmapRaw::map_raw(&file)?;
        let mut seg = Self {
            seq,
            path: path.to_path_buf(),
            file,
            map,
            len,
            written: AtomicUsize::new(len),
            synced: AtomicUsize::new(len),
            released: AtomicUsize::new(0),
            new: AtomicBool::new(false),
            json: false,
        };
        let magic: [u8; 8] = seg.bytes(0, MAGIC.len()).try_into().expect("8 bytes");
        seg.json = &magic == MAGIC_JSON;
        Ok((&magic == MAGIC || seg.json).then_some(seg))
    }

    fn bytes(&self, at: usize, n: usize) -> &[u8] {
        assert!(at + n <= self.len);
        // SAFETY: in bounds of the mapping, which lives as long as `self`. Bytes
        // below `written` are never written again; the writer reads only those.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(at), n) }
    }

    #[allow(clippy::mut_from_ref)]
    fn bytes_mut(&self, at: usize, n: usize) -> &mut [u8] {
        assert!(at + n <= self.len);
        // SAFETY: in bounds; callers write only above `written`, under the
        // ledger's lock, so no one else reads or writes these bytes meanwhile.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr().add(at), n) }
    }

    /// Takes the synced, whole pages below `upto` out of memory: out of the
    /// process's mapping and out of the page cache. Records are only ever
    /// appended, so a busy gateway would otherwise keep every page of the
    /// current segment it has written (up to `ledger_segment_mib`) in its RSS
    /// until the segment is deleted, and the page cache (which a container's
    /// memory limit counts) after that. Called after the `msync` that made
    /// them clean. The first page stays: it holds the commit mark, written on
    /// every commit.
    fn release(&self, upto: usize) {
        let page = page_size();
        let end = upto / page * page;
        let start = self.released.load(Ordering::Relaxed).max(page);
        if end <= start {
            return;
        }
        // SAFETY: a shared file mapping, where MADV_DONTNEED only unmaps the
        // pages from this process: their contents stay in the file's page
        // cache (a dirty page stays dirty and is still written back), and a
        // later read (replay after an overflow) faults them in from there.
        // Bytes below `written` are never written again.
        let advised = unsafe {
            self.map
                .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
        };
        match advised {
            Ok(()) => {
                self.released.store(end, Ordering::Relaxed);
                drop_cached(&self.file, start, end - start);
            }
            Err(e) => {
                tracing::debug!(error = %e, path = %self.path.display(), "cannot release synced ledger pages")
            }
        }
    }

    fn mark(&self) -> &AtomicU64 {
        // SAFETY: the mapping is page-aligned, so offset 8 is 8-byte aligned.
        unsafe { &*(self.map.as_mut_ptr().add(MARK_AT) as *const AtomicU64) }
    }

    fn set_mark(&self, off: usize) {
        self.mark().store((off as u64).to_le(), Ordering::Release);
    }

    fn committed(&self) -> usize {
        u64::from_le(self.mark().load(Ordering::Acquire)) as usize
    }

    /// The record whose frame starts at `off`, if a whole one is there.
    fn frame_at(&self, off: usize, limit: usize) -> Frame<'_> {
        if off + FRAME > limit {
            return Frame::End;
        }
        let head = self.bytes(off, FRAME);
        let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
        if len == 0 {
            return Frame::End;
        }
        if off + FRAME + len > limit {
            return Frame::Torn;
        }
        let payload = self.bytes(off + FRAME, len);
        let sum = if self.json {
            CRC_JSON.checksum(payload)
        } else {
            checksum(payload)
        };
        if sum != crc {
            return Frame::Torn;
        }
        Frame::Record(payload, off + FRAME + len)
    }
}

enum Frame<'a> {
    Record(&'a [u8], usize),
    End,
    /// Cut short by a crash mid-copy (or damaged): nothing more to read here.
    Torn,
}

fn lock_dir(dir: &Path) -> std::io::Result<File> {
    use std::os::fd::AsRawFd;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))?;
    // SAFETY: a valid descriptor; the lock goes with the file when it closes.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(std::io::Error::other(format!(
            "another process uses the usage ledger in {} (each gateway needs its own usage.ledger_dir)",
            dir.display()
        )));
    }
    Ok(file)
}

/// Drops clean cached pages of `file` (advice: a page still dirty or mapped
/// somewhere stays, and a replay reads them back from the disk).
#[cfg(target_os = "linux")]
fn drop_cached(file: &File, at: usize, len: usize) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid descriptor; posix_fadvise returns an errno, not -1.
    let e = unsafe {
        libc::posix_fadvise(
            file.as_raw_fd(),
            at as libc::off_t,
            len as libc::off_t,
            libc::POSIX_FADV_DONTNEED,
        )
    };
    if e != 0 {
        tracing::debug!(
            errno = e,
            "cannot drop synced ledger pages from the page cache"
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn drop_cached(_file: &File, _at: usize, _len: usize) {}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as usize,
        _ => 4096,
    }
}

#[cfg(target_os = "linux")]
fn reserve(file: &File, len: usize) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid descriptor; posix_fallocate returns an errno, not -1.
    match unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len as libc::off_t) } {
        0 => Ok(()),
        e => Err(std::io::Error::from_raw_os_error(e)),
    }
}

#[cfg(not(target_os = "linux"))]
fn reserve(file: &File, len: usize) -> std::io::Result<()> {
    file.set_len(len as u64)
}

struct Queued {
    record: UsageRecord,
    end: Pos,
}

struct Inner {
    /// Oldest first; the last one takes appends.
    segments: VecDeque<Arc<Segment>>,
    next_seq: u64,
    queue: VecDeque<Queued>,
    /// The in-memory copy overflowed (or records remain from an earlier run):
    /// the writer reads the segments until it has caught up.
    behind: bool,
    /// Where the writer reads next.
    cursor: Pos,
    disk_bytes: u64,
    shed_logged_ms: i64,
    /// The next segment (sequence number `next_seq`), made ahead by the sync
    /// thread: a rotation on the request path then only swaps it in, instead
    /// of creating a file and reserving its blocks (ext4 journal work that
    /// can wait on a commit) while every request behind it waits.
    spare: Option<Arc<Segment>>,
    /// The sync thread is making `spare`: a rotation waits for it rather than
    /// create a segment of the same number.
    spare_pending: bool,
}

struct Shared {
    /// Held (flock) while this process owns the directory: a second gateway
    /// on it would replay segments the first is still writing.
    _lock: File,
    dir: PathBuf,
    segment_bytes: usize,
    max_bytes: u64,
    policy: LedgerFull,
    queue_capacity: usize,
    inner: Mutex<Inner>,
    /// Signalled when `Inner::spare_pending` clears.
    spare_made: Condvar,
    ready: Notify,
    closed: AtomicBool,
    /// New requests are refused (`usage.ledger_full: refuse` and over budget).
    full: AtomicBool,
    metrics: Metrics,
}

/// Handle to the ledger, shared by the proxy (appends) and the writer (reads).
#[derive(Clone)]
pub struct Ledger {
    shared: Arc<Shared>,
}

/// A batch the writer took, and where the ledger continues after it.
pub struct Taken {
    pub end: Pos,
    /// From the in-memory copy: never sent to the database before.
    pub fresh: bool,
}

impl Ledger {
    /// Opens the ledger directory, keeping what earlier runs left uncommitted
    /// for the writer, and starts a new segment for this run.
    pub fn open(cfg: &UsageConfig, metrics: Metrics) -> std::io::Result<Self> {
        let dir = PathBuf::from(&cfg.ledger_dir);
        std::fs::create_dir_all(&dir)?;
        let lock = lock_dir(&dir)?;
        let segment_bytes = (cfg.ledger_segment_mib as usize) << 20;
        let mut segments = VecDeque::new();
        let mut leftover = false;
        let mut names: Vec<(u64, PathBuf)> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let seq = name
                    .strip_prefix("segment-")?
                    .strip_suffix(".ledger")?
                    .parse()
                    .ok()?;
                Some((seq, e.path()))
            })
            .collect();
        names.sort();
        for (seq, path) in names {
            match Segment::open(&path, seq)? {
                Some(seg) => {
                    let from = seg.committed().max(HEADER);
                    if matches!(seg.frame_at(from, seg.len), Frame::Record(..)) {
                        leftover = true;
                        segments.push_back(Arc::new(seg));
                    } else {
                        drop(seg);
                        std::fs::remove_file(&path)?;
                    }
                }
                None => {
                    tracing::warn!(path = %path.display(), "not a usage ledger segment; left alone")
                }
            }
        }
        if leftover {
            tracing::info!(
                segments = segments.len(),
                dir = %dir.display(),
                "usage records from an earlier run are in the ledger; writing them to the database"
            );
        }
        let next_seq = segments.back().map_or(1, |s| s.seq + 1);
        let cursor = segments.front().map_or(
            Pos {
                seq: next_seq,
                off: HEADER,
            },
            |s| Pos {
                seq: s.seq,
                off: s.committed().max(HEADER),
            },
        );
        let active = Segment::create(&dir, next_seq, segment_bytes)?;
        segments.push_back(Arc::new(active));
        let disk_bytes = segments.iter().map(|s| s.len as u64).sum();
        metrics.usage_ledger_bytes.set(disk_bytes as i64);
        let ledger = Self {
            shared: Arc::new(Shared {
                _lock: lock,
                dir,
                segment_bytes,
                max_bytes: cfg.ledger_max_mib << 20,
                policy: cfg.ledger_full,
                queue_capacity: cfg.queue_capacity.max(1),
                inner: Mutex::new(Inner {
                    segments,
                    next_seq: next_seq + 1,
                    queue: VecDeque::with_capacity(cfg.queue_capacity.min(4096)),
                    behind: leftover,
                    cursor,
                    disk_bytes,
                    shed_logged_ms: 0,
                    spare: None,
                    spare_pending: false,
                }),
                spare_made: Condvar::new(),
                ready: Notify::new(),
                closed: AtomicBool::new(false),
                full: AtomicBool::new(false),
                metrics,
            }),
        };
        ledger.update_full(&ledger.lock());
        Ok(ledger)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.shared.inner.lock().expect("usage ledger lock")
    }

    /// Whether new requests may start: false while the ledger is over its disk
    /// budget under the `refuse` policy.
    pub fn accepting(&self) -> bool {
        !self.shared.full.load(Ordering::Relaxed)
    }

    /// Appends a record. On return it survives the process; only a power cut
    /// within the sync interval can lose it.
    pub fn append(&self, record: UsageRecord) {
        let s = &self.shared;
        let len = codec::encoded_len(&record);
        let frame = FRAME + len;
        if HEADER + frame > s.segment_bytes {
            return self.shed(1, "record larger than a ledger segment");
        }
        let mut inner = self.lock();
        let mut active = inner.segments.back().expect("an active segment").clone();
        let mut off = active.written.load(Ordering::Relaxed);
        if off + frame > active.len {
            if inner.spare_pending {
                inner = s
                    .spare_made
                    .wait_while(inner, |i| i.spare_pending)
                    .expect("usage ledger lock");
            }
            match self.rotate(&mut inner) {
                Ok(seg) => {
                    active = seg;
                    off = HEADER;
                }
                Err(reason) => {
                    drop(inner);
                    return self.shed(1, &reason);
                }
            }
        }
        // Encoded in place; length last: a copy cut short by the process
        // dying reads as the end.
        let payload = active.bytes_mut(off + FRAME, len);
        codec::encode(&record, payload);
        let crc = checksum(payload);
        active
            .bytes_mut(off + 4, 4)
            .copy_from_slice(&crc.to_le_bytes());
        active
            .bytes_mut(off, 4)
            .copy_from_slice(&(len as u32).to_le_bytes());
        let end = Pos {
            seq: active.seq,
            off: off + frame,
        };
        active.written.store(end.off, Ordering::Release);
        if !inner.behind && inner.queue.len() < s.queue_capacity {
            inner.queue.push_back(Queued { record, end });
        } else {
            // The writer reads the rest back from the segments.
            inner.behind = true;
        }
        s.metrics.usage_queue_depth.set(inner.queue.len() as i64);
        drop(inner);
        s.ready.notify_one();
    }

    /// Seals the active segment and starts the next one, within the disk budget.
    /// The most disk the segments may take after a rotation.
    fn rotation_cap(&self) -> u64 {
        let s = &self.shared;
        match s.policy {
            LedgerFull::Shed => s.max_bytes,
            // Requests admitted before the ledger filled still get their records.
            LedgerFull::Refuse => s.max_bytes + (2 * s.segment_bytes as u64).max(s.max_bytes / 20),
        }
    }

    fn rotate(&self, inner: &mut Inner) -> Result<Arc<Segment>, String> {
        let s = &self.shared;
        if inner.disk_bytes + s.segment_bytes as u64 > self.rotation_cap() {
            return Err(format!(
                "usage ledger over its budget ({} MiB in {})",
                inner.disk_bytes >> 20,
                s.dir.display()
            ));
        }
        let seg = match inner.spare.take() {
            Some(seg) => seg,
            None => Arc::new(
                Segment::create(&s.dir, inner.next_seq, s.segment_bytes).map_err(|e| {
                    format!("cannot create a ledger segment in {}: {e}", s.dir.display())
                })?,
            ),
        };
        debug_assert_eq!(seg.seq, inner.next_seq);
        inner.next_seq += 1;
        inner.disk_bytes += seg.len as u64;
        inner.segments.push_back(seg.clone());
        s.metrics.usage_ledger_bytes.set(inner.disk_bytes as i64);
        self.update_full(inner);
        Ok(seg)
    }

    fn update_full(&self, inner: &Inner) {
        let s = &self.shared;
        // Full when the next segment would not fit in the budget.
        let full = s.policy == LedgerFull::Refuse
            && inner.disk_bytes + s.segment_bytes as u64 > s.max_bytes;
        if s.full.swap(full, Ordering::Relaxed) != full {
            s.metrics.usage_ledger_full.set(i64::from(full));
            if full {
                tracing::error!(
                    mib = inner.disk_bytes >> 20,
                    budget_mib = s.max_bytes >> 20,
                    dir = %s.dir.display(),
                    "usage ledger full (the database has not taken writes for a while): refusing new requests with 503 until it drains"
                );
            } else {
                tracing::info!("usage ledger below its budget again: accepting requests");
            }
        }
    }

    fn shed(&self, n: u64, reason: &str) {
        let s = &self.shared;
        s.metrics.usage_shed.inc_by(n);
        let now = crate::store::now_ms();
        let mut inner = self.lock();
        // One line per ten seconds, not one per request.
        if now - inner.shed_logged_ms >= 10_000 {
            inner.shed_logged_ms = now;
            drop(inner);
            tracing::error!(
                reason,
                "usage record lost (counted in bluesminds_usage_shed_total)"
            );
        }
    }

    /// Moves up to `max` records, oldest first, into `into`.
    pub fn take(&self, max: usize, into: &mut Vec<UsageRecord>) -> Option<Taken> {
        let mut inner = self.lock();
        if !inner.queue.is_empty() {
            let n = max.min(inner.queue.len());
            let mut end = inner.cursor;
            into.extend(inner.queue.drain(..n).map(|q| {
                end = q.end;
                q.record
            }));
            inner.cursor = end;
            // A backlog (the database slow or down) grew the queue up to
            // `queue_capacity` records; once it has drained, its buffer goes
            // back instead of staying with the process for good. Only when
            // little is left to move, as this holds the lock appends take.
            if inner.queue.capacity() > 2 * QUEUE_KEEP && inner.queue.len() <= QUEUE_KEEP / 2 {
                inner.queue.shrink_to(QUEUE_KEEP);
            }
            self.shared
                .metrics
                .usage_queue_depth
                .set(inner.queue.len() as i64);
            return Some(Taken { end, fresh: true });
        }
        if !inner.behind {
            return None;
        }
        let segments: Vec<Arc<Segment>> = inner
            .segments
            .iter()
            .filter(|s| s.seq >= inner.cursor.seq)
            .cloned()
            .collect();
        let start = inner.cursor;
        drop(inner);
        let end = self.read(&segments, start, max, into);
        let mut inner = self.lock();
        inner.cursor = end;
        let last = inner.segments.back().expect("an active segment");
        if end.seq == last.seq && end.off == last.written.load(Ordering::Acquire) {
            // Caught up: what arrives next is in the queue again.
            inner.behind = false;
        }
        (end != start).then_some(Taken { end, fresh: false })
    }

    /// Decodes records from the segments starting at `from`.
    fn read(
        &self,
        segments: &[Arc<Segment>],
        mut from: Pos,
        max: usize,
        into: &mut Vec<UsageRecord>,
    ) -> Pos {
        let metrics = &self.shared.metrics;
        let before = into.len();
        for (i, seg) in segments.iter().enumerate() {
            if seg.seq < from.seq {
                continue;
            }
            let is_last = i + 1 == segments.len();
            let limit = seg.written.load(Ordering::Acquire);
            let mut off = if seg.seq == from.seq {
                from.off
            } else {
                HEADER
            };
            loop {
                if into.len() - before >= max {
                    metrics.usage_replayed.inc_by((into.len() - before) as u64);
                    return Pos { seq: seg.seq, off };
                }
                match seg.frame_at(off, limit) {
                    Frame::Record(payload, next) => {
                        let record = if seg.json {
                            serde_json::from_slice::<UsageRecord>(payload)
                                .map_err(|e| e.to_string())
                        } else {
                            codec::decode(payload)
                        };
                        match record {
                            Ok(r) => into.push(r),
                            Err(e) => self.quarantine_raw(payload, &e),
                        }
                        off = next;
                    }
                    Frame::End => break,
                    Frame::Torn => {
                        if !is_last {
                            tracing::warn!(segment = %seg.path.display(), offset = off, "usage ledger segment ends in a torn record (a crash mid-copy); skipping to the next segment");
                        }
                        break;
                    }
                }
            }
            from = Pos { seq: seg.seq, off };
            if is_last {
                break;
            }
        }
        metrics.usage_replayed.inc_by((into.len() - before) as u64);
        from
    }

    /// The database has every record before `end`: marks it and deletes the
    /// segments wholly behind it.
    pub fn commit(&self, end: Pos) {
        let mut inner = self.lock();
        let mut removed = Vec::new();
        while inner.segments.len() > 1 && inner.segments.front().is_some_and(|s| s.seq < end.seq) {
            let seg = inner.segments.pop_front().expect("checked");
            inner.disk_bytes -= seg.len as u64;
            removed.push(seg);
        }
        if let Some(seg) = inner.segments.iter().find(|s| s.seq == end.seq) {
            seg.set_mark(end.off);
        }
        self.shared
            .metrics
            .usage_ledger_bytes
            .set(inner.disk_bytes as i64);
        self.update_full(&inner);
        drop(inner);
        for seg in removed {
            if let Err(e) = std::fs::remove_file(&seg.path) {
                tracing::warn!(error = %e, path = %seg.path.display(), "cannot delete a committed ledger segment");
            }
        }
    }

    /// Keeps a record the database refuses (and a record the ledger cannot
    /// decode) in `quarantine.jsonl` beside the segments, with the reason.
    pub fn quarantine(&self, record: &UsageRecord, error: &str) {
        let line = serde_json::json!({ "error": error, "record": record });
        self.write_quarantine(&line);
    }

    fn quarantine_raw(&self, payload: &[u8], error: &str) {
        let line = serde_json::json!({
            "error": format!("undecodable ledger record: {error}"),
            "raw_hex": hex::encode(payload),
        });
        self.write_quarantine(&line);
    }

    fn write_quarantine(&self, line: &serde_json::Value) {
        let s = &self.shared;
        s.metrics.usage_quarantined.inc();
        let path = s.dir.join("quarantine.jsonl");
        tracing::error!(path = %path.display(), %line, "usage record quarantined: the database refuses it");
        let written = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| {
                let mut buf = line.to_string().into_bytes();
                buf.push(b'\n');
                f.write_all(&buf)?;
                f.sync_data()
            });
        if let Err(e) = written {
            tracing::error!(error = %e, path = %path.display(), "cannot write the quarantine file");
        }
    }

    /// Waits until something may be ready to take.
    pub async fn wait(&self) {
        let notified = self.shared.ready.notified();
        {
            let inner = self.lock();
            if !inner.queue.is_empty() || inner.behind || self.closing() {
                return;
            }
        }
        notified.await;
    }

    /// Whether every record appended so far was taken by the writer.
    pub fn drained(&self) -> bool {
        let inner = self.lock();
        inner.queue.is_empty() && !inner.behind
    }

    pub fn closing(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Lets the writer stop once everything taken so far is written.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.ready.notify_one();
    }

    /// Syncs written records to stable storage; returns whether there was work.
    pub fn sync(&self) -> bool {
        let (segments, dir) = {
            let inner = self.lock();
            (
                inner.segments.iter().cloned().collect::<Vec<_>>(),
                self.shared.dir.clone(),
            )
        };
        let mut synced_any = false;
        let mut new_files = false;
        for seg in segments {
            let written = seg.written.load(Ordering::Acquire);
            if seg.new.swap(false, Ordering::AcqRel) {
                new_files = true;
            }
            if written > seg.synced.load(Ordering::Relaxed) {
                // msync(MS_SYNC) writes the dirty pages and the file's size and
                // block map (fdatasync's guarantee) before returning.
                match seg.map.flush() {
                    Ok(()) => {
                        seg.synced.store(written, Ordering::Relaxed);
                        seg.release(written);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, path = %seg.path.display(), "cannot sync the usage ledger")
                    }
                }
                synced_any = true;
            }
        }
        if new_files {
            // A new segment's directory entry must reach the disk too.
            if let Err(e) = File::open(&dir).and_then(|d| d.sync_all()) {
                tracing::error!(error = %e, dir = %dir.display(), "cannot sync the usage ledger directory");
            }
        }
        synced_any
    }

    /// Makes the next segment ahead of its rotation, if there is none yet and
    /// the disk budget would let the rotation make it. Returns whether it did.
    pub fn prepare_spare(&self) -> bool {
        let s = &self.shared;
        let seq = {
            let mut inner = self.lock();
            if inner.spare.is_some()
                || inner.spare_pending
                || inner.disk_bytes + s.segment_bytes as u64 > self.rotation_cap()
            {
                return false;
            }
            inner.spare_pending = true;
            inner.next_seq
        };
        // Outside the lock: appends go on meanwhile; only a rotation waits.
        let made = Segment::create(&s.dir, seq, s.segment_bytes);
        let mut inner = self.lock();
        inner.spare_pending = false;
        let ok = match made {
            Ok(seg) => {
                inner.spare = Some(Arc::new(seg));
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, dir = %s.dir.display(), "cannot make the next usage ledger segment ahead; the rotation will try");
                false
            }
        };
        drop(inner);
        s.spare_made.notify_all();
        ok
    }

    /// A thread that syncs the ledger every `every` (the power-loss window)
    /// and keeps the next segment ready.
    pub fn spawn_sync_thread(&self, every: Duration) {
        let ledger = self.clone();
        std::thread::Builder::new()
            .name("bm-ledger-sync".into())
            .spawn(move || {
                crate::background::lower_this_thread();
                ledger.prepare_spare();
                loop {
                    std::thread::sleep(every);
                    ledger.sync();
                    ledger.prepare_spare();
                }
            })
            .expect("spawn the ledger sync thread");
    }

    /// Records an older version left in its JSON-lines spill file become
    /// ledger records (then the file goes).
    pub fn import_spill_file(&self, path: &Path) {
        let Ok(text) = std::fs::read_to_string(path) else {
            return;
        };
        let mut n = 0;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match serde_json::from_str::<UsageRecord>(line) {
                Ok(r) => {
                    self.append(r);
                    n += 1;
                }
                Err(e) => tracing::warn!(error = %e, "skipping a damaged spill line"),
            }
        }
        self.sync();
        match std::fs::remove_file(path) {
            Ok(()) => {
                tracing::info!(records = n, path = %path.display(), "imported the old spill file into the usage ledger")
            }
            Err(e) => {
                tracing::error!(error = %e, path = %path.display(), "cannot remove the imported spill file")
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::usage::UsageSource;

    fn config(dir: &Path, queue: usize) -> UsageConfig {
        UsageConfig {
            ledger_dir: dir.display().to_string(),
            ledger_segment_mib: 1,
            queue_capacity: queue,
            ..UsageConfig::default()
        }
    }

    /// The `i`-th record of a test: its request id and prompt tokens tell it apart.
    pub(crate) fn record(i: usize) -> UsageRecord {
        UsageRecord {
            request_id: format!("req_{i:06}"),
            created_at: 1,
            key_id: Some(1),
            user_id: None,
            endpoint: "chat.completions".into(),
            model: Some("gpt-4o-mini".into()),
            model_raw: None,
            backend: None,
            status: 200,
            stream: false,
            prompt_tokens: i as u64,
            completion_tokens: 1,
            cached_tokens: 0,
            cache_write_tokens: 0,
            reasoning_tokens: 0,
            served_model: None,
            usage_source: UsageSource::Upstream,
            cost_nanousd: 0,
            latency_ms: 0,
            ttfb_ms: None,
            error_code: None,
        }
    }

    fn take_all(ledger: &Ledger) -> (Vec<UsageRecord>, Option<Pos>) {
        let mut all = Vec::new();
        let mut end = None;
        while let Some(t) = ledger.take(100, &mut all) {
            end = Some(t.end);
        }
        (all, end)
    }

    fn ids(records: &[UsageRecord]) -> Vec<String> {
        records.iter().map(|r| r.request_id.clone()).collect()
    }

    #[test]
    fn the_checksums_are_the_standard_ones() {
        // The standard check values: JSON segments keep verifying, and the
        // current ones can be checked by any CRC-32 tool.
        assert_eq!(CRC_JSON.checksum(b"123456789"), 0xE306_9283);
        assert_eq!(checksum(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn records_come_out_in_order_from_memory_and_from_the_segments() {
        let dir = tempfile::tempdir().unwrap();
        // A queue of 10: the rest is read back from the segments, across
        // several segments (1 MiB each, ~180 bytes per record).
        let ledger = Ledger::open(&config(dir.path(), 10), Metrics::new()).unwrap();
        for i in 0..20_000 {
            ledger.append(record(i));
        }
        assert!(ledger.lock().segments.len() >= 3);
        let (all, end) = take_all(&ledger);
        assert_eq!(ids(&all), ids(&(0..20_000).map(record).collect::<Vec<_>>()));
        assert!(ledger.drained());
        ledger.commit(end.unwrap());
        let segments = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "ledger")
            })
            .count();
        assert_eq!(segments, 1, "committed segments are deleted");
        // Caught up: new records are taken from memory again.
        ledger.append(record(30_000));
        let mut next = Vec::new();
        assert!(ledger.take(10, &mut next).unwrap().fresh);
        assert_eq!(ids(&next), ["req_030000"]);
    }

    #[test]
    fn the_queue_gives_its_room_back_once_a_backlog_drains() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&config(dir.path(), 65_536), Metrics::new()).unwrap();
        // A database outage's worth of records, all held in memory.
        for i in 0..50_000 {
            ledger.append(record(i));
        }
        let grown = ledger.lock().queue.capacity();
        assert!(grown >= 50_000);
        let (all, _) = take_all(&ledger);
        assert_eq!(all.len(), 50_000);
        let kept = ledger.lock().queue.capacity();
        assert!(
            kept <= QUEUE_KEEP,
            "{kept} records of room kept after the backlog drained (was {grown}, {} bytes each)",
            std::mem::size_of::<Queued>()
        );
        // And the queue still takes records in order.
        ledger.append(record(60_000));
        let mut next = Vec::new();
        assert!(ledger.take(10, &mut next).unwrap().fresh);
        assert_eq!(ids(&next), ["req_060000"]);
    }

    /// Resident KiB of this process's mappings of `path` (from /proc/self/smaps).
    #[cfg(target_os = "linux")]
    fn resident_kib(path: &Path) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let name = path.display().to_string();
        let mut inside = false;
        let mut kib = 0;
        for line in smaps.lines() {
            let first = line.split_whitespace().next().unwrap_or("");
            if first.contains('-') && !first.ends_with(':') {
                inside = line.ends_with(&name);
            } else if inside && first == "Rss:" {
                kib += line
                    .split_whitespace()
                    .nth(1)
                    .unwrap()
                    .parse::<u64>()
                    .unwrap();
            }
        }
        kib
    }

    /// KiB of the first `upto` bytes of `path` in the page cache (mincore
    /// over a mapping of it).
    #[cfg(target_os = "linux")]
    fn cached_kib(path: &Path, upto: usize) -> u64 {
        let file = File::open(path).unwrap();
        // SAFETY: read-only, only its residency is asked.
        let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
        let page = page_size();
        let mut resident = vec![0u8; map.len().div_ceil(page)];
        // SAFETY: the vector has one byte per page of the mapping.
        let rc = unsafe {
            libc::mincore(
                map.as_ptr() as *mut libc::c_void,
                map.len(),
                resident.as_mut_ptr(),
            )
        };
        assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
        resident[..upto.div_ceil(page)]
            .iter()
            .filter(|b| *b & 1 == 1)
            .count() as u64
            * page as u64
            / 1024
    }

    #[cfg(target_os = "linux")]
    fn on_tmpfs(dir: &Path) -> bool {
        let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path and a zeroed statfs to fill.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
        rc == 0 && st.f_type == libc::TMPFS_MAGIC
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn synced_pages_leave_the_process_memory_and_still_replay() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = UsageConfig {
            ledger_segment_mib: 8,
            ..config(dir.path(), 10)
        };
        let ledger = Ledger::open(&cfg, Metrics::new()).unwrap();
        // ~4 MiB of records in one 8 MiB segment.
        for i in 0..25_000 {
            ledger.append(record(i));
        }
        let path = ledger.lock().segments.back().unwrap().path.clone();
        assert_eq!(ledger.lock().segments.len(), 1);
        let before = resident_kib(&path);
        assert!(
            before > 2048,
            "the records' pages are resident: {before} KiB"
        );
        assert!(ledger.sync());
        let after = resident_kib(&path);
        assert!(
            after <= 8,
            "after the sync only the first and the partial last page stay: {after} KiB"
        );
        // Out of the page cache too (tmpfs has no other copy to drop to); the
        // segment's unwritten rest may be cached (fallocate), so only the
        // written part is counted.
        if !on_tmpfs(dir.path()) {
            let written = ledger
                .lock()
                .segments
                .back()
                .unwrap()
                .written
                .load(Ordering::Relaxed);
            let cached = cached_kib(&path, written);
            assert!(
                cached <= 8,
                "after the sync the released pages leave the page cache: {cached} KiB"
            );
        }
        // The released pages still hold the records: read back from the segment.
        let (all, _) = take_all(&ledger);
        assert_eq!(ids(&all), ids(&(0..25_000).map(record).collect::<Vec<_>>()));
        // Appends go on into the partial page, and a restart replays them all.
        ledger.append(record(25_000));
        drop(ledger);
        let again = Ledger::open(&cfg, Metrics::new()).unwrap();
        let (replayed, _) = take_all(&again);
        assert_eq!(replayed.len(), 25_001);
        assert_eq!(replayed.last().unwrap().request_id, "req_025000");
    }

    #[test]
    fn a_segment_made_ahead_is_the_next_one_and_a_restart_drops_an_unused_one() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&config(dir.path(), 10), Metrics::new()).unwrap();
        assert!(ledger.prepare_spare());
        assert!(!ledger.prepare_spare(), "one spare at a time");
        let spare = ledger.lock().spare.clone().unwrap();
        // Fill past the first segment: the rotation takes the spare.
        for i in 0..8_000 {
            ledger.append(record(i));
        }
        {
            let inner = ledger.lock();
            let seqs: Vec<u64> = inner.segments.iter().map(|s| s.seq).collect();
            assert_eq!(seqs[..2], [1, 2]);
            assert!(Arc::ptr_eq(&inner.segments[1], &spare));
            assert!(inner.spare.is_none());
        }
        // Later rotations without a spare make their own, in order.
        for i in 8_000..20_000 {
            ledger.append(record(i));
        }
        let seqs: Vec<u64> = ledger.lock().segments.iter().map(|s| s.seq).collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
        let (all, _) = take_all(&ledger);
        assert_eq!(ids(&all), ids(&(0..20_000).map(record).collect::<Vec<_>>()));
        // A spare left at exit holds no record: the next start deletes it.
        assert!(ledger.prepare_spare());
        let spare_path = ledger.lock().spare.as_ref().unwrap().path.clone();
        drop(spare);
        drop(ledger);
        assert!(spare_path.exists());
        let again = Ledger::open(&config(dir.path(), 10), Metrics::new()).unwrap();
        assert!(!spare_path.exists() || again.lock().segments.back().unwrap().path == spare_path);
        let (replayed, _) = take_all(&again);
        assert_eq!(replayed.len(), 20_000, "nothing was committed");
    }

    #[test]
    fn json_segments_of_the_previous_version_are_still_replayed() {
        let dir = tempfile::tempdir().unwrap();
        // A segment as the JSON-encoding version left it after a crash: its
        // first record committed, the other two not.
        let mut bytes = vec![0u8; 1 << 16];
        bytes[..8].copy_from_slice(MAGIC_JSON);
        let mut off = HEADER;
        for i in 0..3 {
            let payload = serde_json::to_vec(&record(i)).unwrap();
            bytes[off..off + 4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
            bytes[off + 4..off + 8].copy_from_slice(&CRC_JSON.checksum(&payload).to_le_bytes());
            bytes[off + FRAME..off + FRAME + payload.len()].copy_from_slice(&payload);
            off += FRAME + payload.len();
            if i == 0 {
                bytes[MARK_AT..MARK_AT + 8].copy_from_slice(&(off as u64).to_le_bytes());
            }
        }
        std::fs::write(dir.path().join(Segment::file_name(7)), bytes).unwrap();

        let ledger = Ledger::open(&config(dir.path(), 1000), Metrics::new()).unwrap();
        let (replayed, _) = take_all(&ledger);
        assert_eq!(ids(&replayed), ["req_000001", "req_000002"]);
        assert_eq!(replayed[1], record(2));
        // New records go to a segment of the current version after it.
        ledger.append(record(3));
        let active = ledger.lock().segments.back().unwrap().clone();
        assert_eq!((active.seq, active.bytes(0, 8)), (8, &MAGIC[..]));
    }

    #[test]
    fn a_restart_replays_what_was_not_committed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&config(dir.path(), 1000), Metrics::new()).unwrap();
        for i in 0..10 {
            ledger.append(record(i));
        }
        let mut first = Vec::new();
        let taken = ledger.take(4, &mut first).unwrap();
        ledger.commit(taken.end);
        // The process dies here: no close, no sync (the mapping is the page cache).
        drop(ledger);

        let again = Ledger::open(&config(dir.path(), 1000), Metrics::new()).unwrap();
        let (replayed, _) = take_all(&again);
        assert_eq!(
            ids(&replayed),
            ids(&(4..10).map(record).collect::<Vec<_>>())
        );
    }

    #[test]
    fn a_record_cut_short_by_a_crash_reads_as_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&config(dir.path(), 1000), Metrics::new()).unwrap();
        ledger.append(record(0));
        ledger.append(record(1));
        let path = ledger.lock().segments.back().unwrap().path.clone();
        drop(ledger);
        // Damage the second record's payload (a torn copy).
        let mut bytes = std::fs::read(&path).unwrap();
        let first_len = u32::from_le_bytes(bytes[HEADER..HEADER + 4].try_into().unwrap()) as usize;
        let second = HEADER + FRAME + first_len;
        bytes[second + FRAME + 3] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();

        let again = Ledger::open(&config(dir.path(), 1000), Metrics::new()).unwrap();
        let (replayed, _) = take_all(&again);
        assert_eq!(ids(&replayed), ["req_000000"]);
    }

    #[test]
    fn a_second_process_cannot_take_the_same_directory() {
        let dir = tempfile::tempdir().unwrap();
        let first = Ledger::open(&config(dir.path(), 10), Metrics::new()).unwrap();
        let second = Ledger::open(&config(dir.path(), 10), Metrics::new());
        assert!(second
            .err()
            .unwrap()
            .to_string()
            .contains("another process"));
        drop(first);
        assert!(Ledger::open(&config(dir.path(), 10), Metrics::new()).is_ok());
    }

    #[test]
    fn over_its_budget_the_ledger_refuses_then_sheds() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = UsageConfig {
            ledger_max_mib: 2,
            ..config(dir.path(), 10)
        };
        let metrics = Metrics::new();
        let ledger = Ledger::open(&cfg, metrics.clone()).unwrap();
        let mut i = 0;
        while ledger.accepting() {
            ledger.append(record(i));
            i += 1;
            assert!(i < 100_000, "never full");
        }
        assert_eq!(metrics.usage_ledger_full.get(), 1);
        assert_eq!(metrics.usage_shed.get(), 0, "refusing, not shedding yet");
        // Requests admitted before keep their records up to the hard cap.
        for _ in 0..20_000 {
            ledger.append(record(i));
            i += 1;
        }
        assert!(metrics.usage_shed.get() > 0);
        // The database takes them: the ledger drains and accepts again.
        let (all, end) = take_all(&ledger);
        ledger.commit(end.unwrap());
        assert!(ledger.accepting());
        assert_eq!(all.len() as u64 + metrics.usage_shed.get(), i as u64);
    }
}
