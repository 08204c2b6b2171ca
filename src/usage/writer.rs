//! Bounded usage queue and the batch writer that drains it into the store.
//!
//! The proxy only ever calls `try_send`: a full queue sheds the record and counts
//! it (never blocks a request). The writer takes whatever has queued up since its
//! last write, so batches grow on their own under load and stay small when idle.

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::UsageRecord;
use crate::metrics::Metrics;
use crate::store::Store;

#[derive(Clone)]
pub struct UsageQueue {
    tx: mpsc::Sender<UsageRecord>,
    metrics: Metrics,
}

impl UsageQueue {
    pub fn new(capacity: usize, metrics: Metrics) -> (Self, mpsc::Receiver<UsageRecord>) {
        let (tx, rx) = mpsc::channel(capacity);
        (Self { tx, metrics }, rx)
    }

    pub fn submit(&self, record: UsageRecord) {
        match self.tx.try_send(record) {
            Ok(()) => self.metrics.usage_queue_depth.inc(),
            Err(e) => {
                self.metrics.usage_shed.inc();
                let r = e.into_inner();
                tracing::warn!(request_id = %r.request_id, "usage queue full or closed: record shed");
            }
        }
    }
}

/// Runs until `shutdown` fires and everything queued before it is written.
pub fn spawn_writer(
    store: Store,
    mut rx: mpsc::Receiver<UsageRecord>,
    batch_size: usize,
    metrics: Metrics,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(batch_size);
        let mut closing = false;
        loop {
            let received = if closing {
                rx.recv_many(&mut batch, batch_size).await
            } else {
                tokio::select! {
                    n = rx.recv_many(&mut batch, batch_size) => n,
                    _ = shutdown.changed() => {
                        // Refuse new records but keep draining the ones already queued.
                        rx.close();
                        closing = true;
                        continue;
                    }
                }
            };
            if received == 0 {
                break;
            }
            metrics.usage_queue_depth.sub(batch.len() as i64);
            let mut backoff = Duration::from_millis(50);
            // A failed write keeps its batch and retries: records wait, they are not dropped.
            while let Err(e) = store.insert_usage(&batch).await {
                metrics.usage_write_errors.inc();
                tracing::error!(error = %e, records = batch.len(), "usage write failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            metrics.usage_written.inc_by(batch.len() as u64);
            batch.clear();
        }
        tracing::info!("usage writer drained and stopped");
    })
}
