//! The usage queue and the batch writer that drains it into the store.
//!
//! The request path only pushes onto a bounded in-memory queue (never waits). The
//! writer takes whatever has queued up since its last write, so batches grow on
//! their own under load and stay small when idle. When the database fails, the
//! writer keeps its batch and retries; the queue fills; once full, its oldest half
//! goes to the spill file (on a thread of its own) and is replayed after recovery.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::spill::{spawn_spill_thread, Spill};
use super::UsageRecord;
use crate::metrics::Metrics;
use crate::store::Store;

/// How long the writer waits for more records once one has arrived.
const LINGER: Duration = Duration::from_millis(50);

struct Shared {
    queue: Mutex<VecDeque<UsageRecord>>,
    capacity: usize,
    ready: Notify,
    closed: AtomicBool,
    spill: Arc<Spill>,
    to_spill: Mutex<mpsc::Sender<Vec<UsageRecord>>>,
    metrics: Metrics,
}

#[derive(Clone)]
pub struct UsageQueue {
    shared: Arc<Shared>,
}

impl UsageQueue {
    pub fn new(capacity: usize, spill_path: &std::path::Path, metrics: Metrics) -> Self {
        let spill = Spill::open(spill_path, metrics.clone());
        let to_spill = spawn_spill_thread(spill.clone());
        Self {
            shared: Arc::new(Shared {
                queue: Mutex::new(VecDeque::with_capacity(capacity.min(4096))),
                capacity: capacity.max(2),
                ready: Notify::new(),
                closed: AtomicBool::new(false),
                spill,
                to_spill: Mutex::new(to_spill),
                metrics,
            }),
        }
    }

    pub fn submit(&self, record: UsageRecord) {
        let s = &self.shared;
        let overflow = {
            let mut q = s.queue.lock().expect("usage queue lock");
            let overflow = (q.len() >= s.capacity).then(|| {
                let half = q.len() / 2;
                q.drain(..half).collect::<Vec<_>>()
            });
            q.push_back(record);
            s.metrics.usage_queue_depth.set(q.len() as i64);
            overflow
        };
        if let Some(oldest) = overflow {
            let sent = s.to_spill.lock().expect("spill sender lock").send(oldest);
            if let Err(mpsc::SendError(lost)) = sent {
                s.metrics.usage_shed.inc_by(lost.len() as u64);
                tracing::error!(
                    records = lost.len(),
                    "spill thread gone: usage records lost"
                );
            }
        }
        s.ready.notify_one();
    }

    /// Moves up to `max` of the oldest queued records into `into`.
    pub fn drain(&self, max: usize, into: &mut Vec<UsageRecord>) {
        let mut q = self.shared.queue.lock().expect("usage queue lock");
        let n = max.min(q.len());
        into.extend(q.drain(..n));
        self.shared.metrics.usage_queue_depth.set(q.len() as i64);
    }

    /// Stops the writer once everything queued so far is written.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.ready.notify_one();
    }
}

/// Writes `batch`, retrying while the database fails. While closing, a batch that
/// still fails after a few tries goes to the spill file instead (replayed at next start).
/// `fresh`: straight from the queue, never sent to the database before; a retry
/// may follow a failure that committed after all, so it checks for every row.
async fn write_batch(store: &Store, queue: &UsageQueue, batch: &mut Vec<UsageRecord>, fresh: bool) {
    let metrics = &queue.shared.metrics;
    let mut backoff = Duration::from_millis(50);
    let mut attempts = 0;
    loop {
        match store.insert_usage(batch, fresh && attempts == 0).await {
            Ok(()) => {
                metrics.usage_written.inc_by(batch.len() as u64);
                if let Some(oldest) = batch.iter().map(|r| r.created_at).min() {
                    let lag_ms = crate::store::now_ms().saturating_sub(oldest).max(0);
                    metrics.usage_writer_lag.set(lag_ms as f64 / 1000.0);
                }
                batch.clear();
                return;
            }
            Err(e) => {
                attempts += 1;
                metrics.usage_write_errors.inc();
                tracing::error!(error = %e, records = batch.len(), attempts, "usage write failed; retrying");
                if queue.shared.closed.load(Ordering::Acquire) && attempts >= 5 {
                    let spill = queue.shared.spill.clone();
                    let records = std::mem::take(batch);
                    let _ = tokio::task::spawn_blocking(move || spill.append(&records)).await;
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Runs until `UsageQueue::close` and the queue is empty.
pub fn spawn_writer(store: Store, queue: UsageQueue, batch_size: usize) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(batch_size);
        let spill = queue.shared.spill.clone();
        loop {
            queue.drain(batch_size, &mut batch);
            if !batch.is_empty()
                && batch.len() < batch_size
                && !queue.shared.closed.load(Ordering::Acquire)
            {
                // Linger briefly so a busy gateway writes hundreds of rows per
                // transaction instead of one or two (the load benchmark's profile
                // showed ~1.5 rows per commit without this).
                tokio::time::sleep(LINGER).await;
                queue.drain(batch_size - batch.len(), &mut batch);
            }
            if batch.is_empty() {
                let closing = queue.shared.closed.load(Ordering::Acquire);
                // Not while closing: a database that is still down would bounce the
                // records between the file and the writer forever.
                if spill.has_records() && !closing {
                    let s = spill.clone();
                    let replay = tokio::task::spawn_blocking(move || s.take_all())
                        .await
                        .unwrap_or_default();
                    if !replay.is_empty() {
                        tracing::info!(records = replay.len(), "replaying spilled usage records");
                    }
                    for mut chunk in replay.chunks(batch_size).map(<[UsageRecord]>::to_vec) {
                        write_batch(&store, &queue, &mut chunk, false).await;
                    }
                    continue;
                }
                if closing {
                    break;
                }
                queue.shared.ready.notified().await;
                continue;
            }
            write_batch(&store, &queue, &mut batch, true).await;
        }
        tracing::info!("usage writer drained and stopped");
    })
}
