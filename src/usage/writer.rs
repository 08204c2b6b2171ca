//! The batch writer: moves records from the ledger into the store.
//!
//! It takes whatever has arrived since its last write, so batches grow on
//! their own under load and stay small when idle. A batch the database cannot
//! take because it is down is retried whole (the records wait in the ledger);
//! a batch it refuses for its data is split until the refused row is alone,
//! that row is quarantined, and the rest is written.

use std::time::Duration;

use tokio::task::JoinHandle;

use super::ledger::Ledger;
use super::UsageRecord;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// How long the writer waits for more records once one has arrived. Not
/// longer while busy: records held 200 ms cost 4-8 MiB more at 10,000
/// requests a second (benches/README.md, "Batches and keys"); batches grow
/// up to `usage.batch_size` only once the writer falls behind.
const LINGER: Duration = Duration::from_millis(50);
/// Tries of a lone refused row before it is quarantined (a refusal is data,
/// but one retry rules out a coincidence with something transient).
const LONE_ROW_TRIES: u32 = 2;

/// Writes `batch` (then empties it). Returns once every row is in the database
/// or quarantined; while the database is down it keeps retrying, unless the
/// gateway is closing (the records stay in the ledger for the next start).
async fn write_batch(
    store: &Store,
    ledger: &Ledger,
    metrics: &Metrics,
    batch: &mut Vec<UsageRecord>,
    fresh: bool,
) -> bool {
    let mut backoff = Duration::from_millis(50);
    // Sub-batches still to write, with whether they may skip the conflict check.
    let mut pending: Vec<(Vec<UsageRecord>, bool, u32)> = vec![(std::mem::take(batch), fresh, 0)];
    while let Some((mut rows, known_new, tries)) = pending.pop() {
        match store.insert_usage(&mut rows, known_new).await {
            Ok(()) => {
                metrics.usage_batch_rows.observe(rows.len() as f64);
                metrics.usage_written.inc_by(rows.len() as u64);
                if let Some(oldest) = rows.iter().map(|r| r.created_at).min() {
                    let lag_ms = crate::store::now_ms().saturating_sub(oldest).max(0);
                    metrics.usage_writer_lag.set(lag_ms as f64 / 1000.0);
                }
                backoff = Duration::from_millis(50);
            }
            Err(e) if e.is_data_error() => {
                metrics.usage_write_errors.inc();
                if rows.len() == 1 && tries + 1 >= LONE_ROW_TRIES {
                    ledger.quarantine(&rows[0], &e.to_string());
                    continue;
                }
                if rows.len() == 1 {
                    pending.push((rows, false, tries + 1));
                    continue;
                }
                tracing::warn!(error = %e, records = rows.len(), "the database refused a usage batch; splitting it to find the row");
                let mut left = rows;
                let right = left.split_off(left.len() / 2);
                // A row may exist after all (a retry): check conflicts from now on.
                pending.push((right, false, 0));
                pending.push((left, false, 0));
            }
            Err(e) => {
                metrics.usage_write_errors.inc();
                tracing::error!(error = %e, records = rows.len(), "usage write failed; retrying");
                if ledger.closing() {
                    // Left in the ledger, uncommitted: written at the next start.
                    return false;
                }
                pending.push((rows, false, tries));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
    true
}

/// Runs until `Ledger::close` and everything appended before it is written.
pub fn spawn_writer(
    store: Store,
    ledger: Ledger,
    metrics: Metrics,
    batch_size: usize,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(batch_size);
        loop {
            let Some(taken) = ledger.take(batch_size, &mut batch) else {
                if ledger.closing() && ledger.drained() {
                    break;
                }
                ledger.wait().await;
                continue;
            };
            let mut end = taken.end;
            let mut fresh = taken.fresh;
            if taken.fresh && batch.len() < batch_size && !ledger.closing() {
                // Linger briefly so a busy gateway writes hundreds of rows per
                // transaction instead of one or two (the load benchmark's profile
                // showed ~1.5 rows per commit without this).
                tokio::time::sleep(LINGER).await;
                if let Some(more) = ledger.take(batch_size - batch.len(), &mut batch) {
                    end = more.end;
                    // Records read back from the segments may be in the database.
                    fresh &= more.fresh;
                }
            }
            if !write_batch(&store, &ledger, &metrics, &mut batch, fresh).await {
                break;
            }
            ledger.commit(end);
        }
        ledger.sync();
        tracing::info!("usage writer stopped");
    })
}

impl StoreError {
    /// The database refused the rows themselves (a value it cannot store, a
    /// constraint), not the connection or the schema: splitting the batch
    /// finds the row, and retrying it as it is would fail forever.
    pub fn is_data_error(&self) -> bool {
        let db = match self {
            StoreError::Db(sqlx::Error::Database(db)) => db,
            StoreError::Sqlite(e) => return sqlite_data_error(e.code),
            _ => return false,
        };
        use sqlx::error::ErrorKind;
        if !matches!(db.kind(), ErrorKind::Other) {
            return true; // unique, foreign key, not null, check
        }
        let code = db.code().unwrap_or_default();
        // PostgreSQL SQLSTATE classes 22 (data exception: NUL bytes, invalid
        // encodings, values out of range), 23 (integrity constraint) and 54000
        // (program limit: an index entry too long).
        if code.len() == 5 && (code.starts_with("22") || code.starts_with("23") || code == "54000")
        {
            return true;
        }
        code.parse::<i32>().is_ok_and(sqlite_data_error)
    }
}

/// SQLite result codes (extended codes keep the primary in the low byte):
/// TOOBIG, CONSTRAINT, MISMATCH.
fn sqlite_data_error(code: i32) -> bool {
    matches!(code & 0xff, 18..=20)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UsageConfig;
    use crate::usage::ledger::tests::record;
    use prometheus::core::Metric as _;

    /// The batch histogram's buckets: (rows, transactions of at most that many).
    fn buckets(metrics: &Metrics) -> Vec<(f64, u64)> {
        let m = metrics.usage_batch_rows.metric();
        let buckets = m.get_histogram().get_bucket();
        buckets
            .iter()
            .map(|b| (b.upper_bound(), b.cumulative_count()))
            .collect()
    }

    /// Transactions of more than `rows` rows so far.
    fn batches_above(metrics: &Metrics, rows: f64) -> u64 {
        let at_most = buckets(metrics)
            .into_iter()
            .find(|&(upper, _)| upper >= rows)
            .map_or(0, |(_, count)| count);
        metrics.usage_batch_rows.get_sample_count() - at_most
    }

    /// Waits until `n` records are written; a writer that stops short fails
    /// the test instead of hanging it.
    async fn written(metrics: &Metrics, n: u64) {
        let waiting = async {
            while metrics.usage_written.get() < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(60), waiting)
            .await
            .is_err()
        {
            panic!(
                "{} of {n} records written after 60 s",
                metrics.usage_written.get()
            );
        }
    }

    /// A lone record is written alone, after one short wait; records that
    /// queued while the database was busy (here another writer held its lock)
    /// go in batches of up to `usage.batch_size`, which cost the database
    /// less per row, and none is lost or written twice.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lone_record_goes_alone_and_a_backlog_in_large_batches() {
        use sqlx::{Connection, Executor};
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}/usage.db", dir.path().display());
        let store = Store::connect(&url, 2).await.expect("store");
        let metrics = Metrics::new();
        let cfg = UsageConfig {
            ledger_dir: dir.path().join("ledger").display().to_string(),
            ..UsageConfig::default()
        };
        let ledger = Ledger::open(&cfg, metrics.clone()).expect("ledger");
        let writer = spawn_writer(store, ledger.clone(), metrics.clone(), 4096);

        ledger.append(record(0));
        written(&metrics, 1).await;
        assert_eq!(metrics.usage_batch_rows.get_sample_count(), 1);
        assert_eq!(
            batches_above(&metrics, 1.0),
            0,
            "the lone record waited for company"
        );

        let mut other = sqlx::SqliteConnection::connect(&url).await.expect("other");
        other.execute("BEGIN IMMEDIATE").await.expect("lock");
        let backlog = 3_000;
        for i in 1..=backlog {
            ledger.append(record(i));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        other.execute("COMMIT").await.expect("unlock");
        written(&metrics, backlog as u64 + 1).await;
        assert!(
            batches_above(&metrics, 1024.0) >= 1,
            "no batch above 1,024 rows in {} batches (rows, batches at most that many): {:?}",
            metrics.usage_batch_rows.get_sample_count(),
            buckets(&metrics)
        );
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM usage_records")
            .fetch_one(&mut other)
            .await
            .expect("count");
        assert_eq!(rows, backlog as i64 + 1);

        ledger.close();
        writer.await.expect("writer");
    }
}
