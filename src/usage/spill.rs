//! The spill file: an append-only JSON-lines file that takes usage records when
//! the in-memory queue is full (the database is down or too slow), so none is
//! lost; the writer replays it once the database takes writes again, and at start
//! after a crash. Replays are idempotent: a record's request id is unique in the
//! database, so a line written twice is stored once.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use super::UsageRecord;
use crate::metrics::Metrics;

pub struct Spill {
    path: PathBuf,
    /// Serializes appends (the spill thread) with replays (the writer).
    file_lock: Mutex<()>,
    has_records: AtomicBool,
    metrics: Metrics,
}

impl Spill {
    pub fn open(path: &Path, metrics: Metrics) -> Arc<Self> {
        let has_records = std::fs::metadata(path).is_ok_and(|m| m.len() > 0);
        Arc::new(Self {
            path: path.to_path_buf(),
            file_lock: Mutex::new(()),
            has_records: AtomicBool::new(has_records),
            metrics,
        })
    }

    pub fn has_records(&self) -> bool {
        self.has_records.load(Ordering::Acquire)
    }

    /// Appends records and syncs them to disk. Records that cannot be written
    /// are the only ones ever lost, and each is counted as shed.
    pub fn append(&self, records: &[UsageRecord]) {
        let _guard = self.file_lock.lock().expect("spill lock");
        let result = (|| -> std::io::Result<()> {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            let mut buf = Vec::with_capacity(records.len() * 320);
            for r in records {
                serde_json::to_writer(&mut buf, r).map_err(std::io::Error::other)?;
                buf.push(b'\n');
            }
            file.write_all(&buf)?;
            file.sync_data()
        })();
        match result {
            Ok(()) => {
                self.has_records.store(true, Ordering::Release);
                self.metrics.usage_spilled.inc_by(records.len() as u64);
                tracing::warn!(records = records.len(), path = %self.path.display(), "usage queue full: records spilled to disk");
            }
            Err(e) => {
                self.metrics.usage_shed.inc_by(records.len() as u64);
                tracing::error!(error = %e, records = records.len(), path = %self.path.display(), "cannot write the spill file: usage records lost");
            }
        }
    }

    /// Takes every spilled record out of the file (the caller writes them to the
    /// database, or appends them back if that fails).
    pub fn take_all(&self) -> Vec<UsageRecord> {
        let _guard = self.file_lock.lock().expect("spill lock");
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(_) => {
                self.has_records.store(false, Ordering::Release);
                return Vec::new();
            }
        };
        let mut records = Vec::new();
        for (n, line) in BufReader::new(file).lines().enumerate() {
            match line.map(|l| serde_json::from_str::<UsageRecord>(&l)) {
                Ok(Ok(r)) => records.push(r),
                // A torn last line from a crash mid-append: nothing to recover.
                Ok(Err(e)) => {
                    tracing::warn!(line = n + 1, error = %e, "skipping a damaged spill line")
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the spill file; leaving it for later");
                    return records;
                }
            }
        }
        if let Err(e) = File::create(&self.path) {
            tracing::error!(error = %e, "cannot truncate the spill file");
        }
        self.has_records.store(false, Ordering::Release);
        records
    }
}

/// A thread that owns disk writes, so the request path only hands records over.
pub fn spawn_spill_thread(spill: Arc<Spill>) -> mpsc::Sender<Vec<UsageRecord>> {
    let (tx, rx) = mpsc::channel::<Vec<UsageRecord>>();
    std::thread::Builder::new()
        .name("bm-usage-spill".into())
        .spawn(move || {
            for batch in rx {
                spill.append(&batch);
            }
        })
        .expect("spawn the spill thread");
    tx
}
