//! SQLite's usage batches, written through SQLite's own C API on a connection
//! and a thread kept for them.
//!
//! Why: through sqlx's `Any` driver each of a row's 21 values was converted
//! into an `Any` value, moved to SQLite's worker thread, converted again and
//! copied once more by SQLite (`SQLITE_TRANSIENT`): ~9k instructions per row
//! (binding, clearing, the writer task) beside SQLite's own ~11.6k, on the
//! cores the proxy shares (callgrind, benches/README.md). Here the values are
//! bound where they lie in the records (`SQLITE_STATIC`) into statements
//! prepared once. sqlx still opens, configures and closes the connection; its
//! handle is lent (`lock_handle`) to one thread, `bm-usage-sqlite`, for the
//! connection's life, so only that thread ever uses it (sqlx's own worker
//! thread for it just waits), and SQLite's allocations for it stay in that
//! thread's malloc arena. The batches cross to it and back by channel.

use std::ffi::{c_int, CStr, CString};
use std::ptr::NonNull;
use std::str::FromStr;
use std::time::Duration;

use libsqlite3_sys as ffi;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use sqlx::ConnectOptions;

use super::usage::{
    size_slot, usage_chunks, DailyAdds, DAILY_UPSERT_SQL, USAGE_COLUMNS, USAGE_COLUMN_LIST,
    USAGE_INSERT_SIZES,
};
use super::StoreError;
use crate::usage::UsageRecord;

/// The way to the `bm-usage-sqlite` thread. Dropping the last one ends the
/// thread, which finalizes its statements and then lets sqlx close the
/// connection.
pub(super) struct UsageConnection {
    jobs: std::sync::mpsc::Sender<Job>,
}

/// What the thread is sent.
enum Job {
    /// A batch, given back with the outcome.
    Write {
        records: Vec<UsageRecord>,
        known_new: bool,
        done: tokio::sync::oneshot::Sender<(Vec<UsageRecord>, Result<(), SqliteError>)>,
    },
    /// The bytes of the connection's page cache (`SQLITE_DBSTATUS_CACHE_USED`).
    #[cfg(test)]
    CacheUsed(tokio::sync::oneshot::Sender<c_int>),
}

/// The statements of the thread's connection, prepared on first use.
#[derive(Default)]
struct Prepared {
    /// `INSERT OR FAIL` of `USAGE_INSERT_SIZES[i]` rows.
    fast: [Option<Stmt>; USAGE_INSERT_SIZES.len()],
    /// One row, skipped when its request id is stored already.
    careful: Option<Stmt>,
    daily: Option<Stmt>,
}

impl UsageConnection {
    /// Opens the database at `url` (a file: see `Store::connect`) with the
    /// pool's settings and starts its thread. The thread inherits the calling
    /// thread's priority (the control runtime's: `crate::background`).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let conn = SqliteConnectOptions::from_str(url)?
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .pragma("temp_store", "MEMORY")
            // SQLite keeps every page it read or wrote until its cache is
            // full (2 MiB by default), resident beside the page cache's copy
            // of the same file. One key's batches touch a few dozen pages (the
            // right edges of the table and its indexes); 1,000 keys' touch
            // more than either size holds and read the rest back from the
            // page cache. 512 KiB wrote rows as fast as 2 MiB in both cases
            // (benches/README.md, "SQLite's page cache").
            .pragma("cache_size", "-512")
            // Statements here are SQLite's, not sqlx's cache.
            .statement_cache_capacity(0)
            .disable_statement_logging()
            .connect()
            .await?;
        let (jobs, queue) = std::sync::mpsc::channel();
        let (ready, started) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Handle::current();
        std::thread::Builder::new()
            .name("bm-usage-sqlite".into())
            .spawn(move || serve(conn, &runtime, queue, ready))
            .map_err(|e| StoreError::Db(sqlx::Error::Io(e)))?;
        started
            .await
            .map_err(|_| StoreError::Db(sqlx::Error::WorkerCrashed))??;
        Ok(Self { jobs })
    }

    /// Writes `records` and their daily totals in one transaction (see
    /// `Store::insert_usage` for `known_new`). The records go to the thread
    /// and come back into `records`; should this future be dropped before,
    /// they are gone from it (the ledger still holds them).
    pub async fn insert(
        &self,
        records: &mut Vec<UsageRecord>,
        known_new: bool,
    ) -> Result<(), StoreError> {
        let gone = || StoreError::Db(sqlx::Error::WorkerCrashed);
        let (done, answer) = tokio::sync::oneshot::channel();
        let job = Job::Write {
            records: std::mem::take(records),
            known_new,
            done,
        };
        if let Err(std::sync::mpsc::SendError(Job::Write { records: back, .. })) =
            self.jobs.send(job)
        {
            *records = back;
            return Err(gone());
        }
        let (back, written) = answer.await.map_err(|_| gone())?;
        *records = back;
        Ok(written?)
    }
}

/// The thread: holds the connection's handle until the last
/// `UsageConnection` is dropped, and writes each batch it is sent.
fn serve(
    mut conn: SqliteConnection,
    runtime: &tokio::runtime::Handle,
    queue: std::sync::mpsc::Receiver<Job>,
    ready: tokio::sync::oneshot::Sender<Result<(), StoreError>>,
) {
    let mut handle = match runtime.block_on(conn.lock_handle()) {
        Ok(handle) => handle,
        Err(e) => {
            let _ = ready.send(Err(e.into()));
            return;
        }
    };
    let db = Db(handle.as_raw_handle());
    let mut prepared = Prepared::default();
    let _ = ready.send(Ok(()));
    while let Ok(job) = queue.recv() {
        match job {
            Job::Write {
                records,
                known_new,
                done,
            } => {
                let written = batch(&db, &mut prepared, &records, known_new);
                let _ = done.send((records, written));
            }
            #[cfg(test)]
            Job::CacheUsed(answer) => {
                let _ = answer.send(db.cache_used());
            }
        }
    }
    // Finalized while the handle is still lent: sqlx's close fails (and
    // panics on its worker thread) while a statement is left.
    drop(prepared);
    drop(handle);
    drop(conn);
}

/// One batch in one transaction; on any failure nothing of it stays and the
/// connection is left outside a transaction, as sqlx expects it.
fn batch(
    db: &Db,
    prepared: &mut Prepared,
    records: &[UsageRecord],
    known_new: bool,
) -> Result<(), SqliteError> {
    db.exec(c"BEGIN IMMEDIATE")?;
    let written = write(db, prepared, records, known_new).and_then(|()| db.exec(c"COMMIT"));
    if written.is_err() && !db.autocommit() {
        let _ = db.exec(c"ROLLBACK");
    }
    written
}

fn write(
    db: &Db,
    prepared: &mut Prepared,
    records: &[UsageRecord],
    known_new: bool,
) -> Result<(), SqliteError> {
    let Prepared {
        fast,
        careful,
        daily,
    } = prepared;
    let mut adds = DailyAdds::default();
    if known_new {
        for chunk in usage_chunks(records) {
            let stmt = match &mut fast[size_slot(chunk.len())] {
                Some(stmt) => stmt,
                slot => slot.insert(db.prepare(&insert_sql(chunk.len(), true))?),
            };
            for (row, r) in chunk.iter().enumerate() {
                stmt.bind_row(row * USAGE_COLUMNS, r)?;
            }
            stmt.run()?;
            chunk.iter().for_each(|r| adds.add(r));
        }
    } else {
        let stmt = match careful {
            Some(stmt) => stmt,
            slot => slot.insert(db.prepare(&insert_sql(1, false))?),
        };
        for r in records {
            stmt.bind_row(0, r)?;
            stmt.run()?;
            // Only rows actually inserted count toward the totals (replays do not).
            if db.changes() == 1 {
                adds.add(r);
            }
        }
    }
    let stmt = match daily {
        Some(stmt) => stmt,
        slot => slot.insert(db.prepare(DAILY_UPSERT_SQL)?),
    };
    for ((day, key_id, model), (user_id, t)) in adds.iter() {
        stmt.bind(1, Value::Text(day))?;
        stmt.bind(2, Value::Int(*key_id))?;
        stmt.bind(3, Value::Text(model))?;
        stmt.bind(4, Value::Int(*user_id))?;
        let sums = [
            t.requests,
            t.prompt_tokens,
            t.completion_tokens,
            t.cached_tokens,
            t.cache_write_tokens,
            t.reasoning_tokens,
            t.cost_nanousd,
        ];
        for (i, v) in sums.into_iter().enumerate() {
            stmt.bind(5 + i as c_int, Value::Int(v))?;
        }
        stmt.run()?;
    }
    Ok(())
}

/// The usage INSERT of `rows` rows; the fast one (`known_new`) fails at a
/// stored request id, the careful one skips it. Anonymous `?` parameters:
/// SQLite looks a numbered one up in a list as long as the statement's
/// parameters, which made binding quadratic (callgrind: half of all
/// instructions at 200 rows per statement).
///
/// `INSERT OR FAIL`: under the default conflict action (ABORT) SQLite must be
/// able to undo one statement inside the transaction, so it copied every page
/// the statement changed a second time, into a statement journal (callgrind:
/// ~1.1 % of the gateway's instructions). A failing row leaves the rows
/// before it in the transaction, which `insert` then rolls back whole.
fn insert_sql(rows: usize, known_new: bool) -> String {
    let mut sql = String::with_capacity(300 + rows * USAGE_COLUMNS * 3);
    sql.push_str(if known_new {
        "INSERT OR FAIL INTO "
    } else {
        "INSERT INTO "
    });
    sql.push_str(USAGE_COLUMN_LIST);
    sql.push_str(" VALUES ");
    for row in 0..rows {
        sql.push_str(if row == 0 { "(?" } else { ", (?" });
        sql.push_str(&",?".repeat(USAGE_COLUMNS - 1));
        sql.push(')');
    }
    if !known_new {
        sql.push_str(" ON CONFLICT (request_id) DO NOTHING");
    }
    sql
}

/// What SQLite said when it refused: its extended result code and message.
#[derive(Debug)]
pub struct SqliteError {
    pub code: i32,
    pub message: String,
}

impl std::fmt::Display for SqliteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (SQLite code {})", self.message, self.code)
    }
}

impl From<SqliteError> for StoreError {
    fn from(e: SqliteError) -> Self {
        StoreError::Sqlite(e)
    }
}

/// The usage connection's handle, lent by sqlx to `bm-usage-sqlite` (`serve`).
struct Db(NonNull<ffi::sqlite3>);

impl Db {
    fn error(&self, rc: c_int) -> SqliteError {
        // SAFETY: the handle is open; the message is copied before any other call.
        unsafe {
            let message = ffi::sqlite3_errmsg(self.0.as_ptr());
            let message = if message.is_null() {
                CStr::from_ptr(ffi::sqlite3_errstr(rc))
            } else {
                CStr::from_ptr(message)
            };
            SqliteError {
                code: ffi::sqlite3_extended_errcode(self.0.as_ptr()),
                message: message.to_string_lossy().into_owned(),
            }
        }
    }

    fn exec(&self, sql: &CStr) -> Result<(), SqliteError> {
        // SAFETY: the handle is open and `sql` is NUL-terminated.
        let rc = unsafe {
            ffi::sqlite3_exec(
                self.0.as_ptr(),
                sql.as_ptr(),
                None,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        match rc {
            ffi::SQLITE_OK => Ok(()),
            rc => Err(self.error(rc)),
        }
    }

    fn prepare(&self, sql: &str) -> Result<Stmt, SqliteError> {
        let sql = CString::new(sql).expect("the statements have no NUL byte");
        let mut raw = std::ptr::null_mut();
        // SAFETY: the handle is open; `raw` receives a statement or NULL.
        let rc = unsafe {
            ffi::sqlite3_prepare_v3(
                self.0.as_ptr(),
                sql.as_ptr(),
                -1,
                ffi::SQLITE_PREPARE_PERSISTENT,
                &mut raw,
                std::ptr::null_mut(),
            )
        };
        match (rc, NonNull::new(raw)) {
            (ffi::SQLITE_OK, Some(raw)) => Ok(Stmt { raw, db: self.0 }),
            _ => Err(self.error(rc)),
        }
    }

    fn changes(&self) -> i64 {
        // SAFETY: the handle is open.
        unsafe { ffi::sqlite3_changes64(self.0.as_ptr()) }
    }

    #[cfg(test)]
    fn cache_used(&self) -> c_int {
        let (mut used, mut highwater) = (0, 0);
        // SAFETY: the handle is open; both outputs are valid for writes.
        let rc = unsafe {
            ffi::sqlite3_db_status(
                self.0.as_ptr(),
                ffi::SQLITE_DBSTATUS_CACHE_USED,
                &mut used,
                &mut highwater,
                0,
            )
        };
        assert_eq!(rc, ffi::SQLITE_OK);
        used
    }

    fn autocommit(&self) -> bool {
        // SAFETY: the handle is open.
        unsafe { ffi::sqlite3_get_autocommit(self.0.as_ptr()) != 0 }
    }
}

/// A value to bind; text is bound without a copy (`SQLITE_STATIC`), which
/// `Stmt::run` makes sound by stepping and resetting before the borrow ends.
#[derive(Clone, Copy)]
enum Value<'a> {
    Int(i64),
    Text(&'a str),
    Null,
}

impl<'a> From<Option<&'a str>> for Value<'a> {
    fn from(v: Option<&'a str>) -> Self {
        v.map_or(Value::Null, Value::Text)
    }
}

impl From<Option<i64>> for Value<'_> {
    fn from(v: Option<i64>) -> Self {
        v.map_or(Value::Null, Value::Int)
    }
}

/// A prepared statement of that handle, used and finalized on its thread.
struct Stmt {
    raw: NonNull<ffi::sqlite3_stmt>,
    db: NonNull<ffi::sqlite3>,
}

impl Drop for Stmt {
    fn drop(&mut self) {
        // SAFETY: finalized once, here, on the thread that uses it, before
        // the connection is closed (`serve`).
        unsafe { ffi::sqlite3_finalize(self.raw.as_ptr()) };
    }
}

impl Stmt {
    fn db(&self) -> Db {
        Db(self.db)
    }

    /// Binds `value` as parameter `at` (1-based). Text stays borrowed until
    /// the statement is reset: callers bind and `run` within one borrow.
    fn bind(&mut self, at: c_int, value: Value<'_>) -> Result<(), SqliteError> {
        let stmt = self.raw.as_ptr();
        // SAFETY: `stmt` is a live statement; text outlives its binding (above).
        let rc = unsafe {
            match value {
                Value::Int(v) => ffi::sqlite3_bind_int64(stmt, at, v),
                Value::Null => ffi::sqlite3_bind_null(stmt, at),
                Value::Text(s) => ffi::sqlite3_bind_text64(
                    stmt,
                    at,
                    s.as_ptr().cast(),
                    s.len() as u64,
                    ffi::SQLITE_STATIC(),
                    ffi::SQLITE_UTF8 as u8,
                ),
            }
        };
        match rc {
            ffi::SQLITE_OK => Ok(()),
            rc => {
                let e = self.db().error(rc);
                self.forget();
                Err(e)
            }
        }
    }

    /// Binds one usage record's columns after the first `skip` parameters.
    fn bind_row(&mut self, skip: usize, r: &UsageRecord) -> Result<(), SqliteError> {
        let values: [Value<'_>; USAGE_COLUMNS] = [
            Value::Text(&r.request_id),
            Value::Int(r.created_at),
            r.key_id.into(),
            r.user_id.into(),
            Value::Text(&r.endpoint),
            r.model.as_deref().into(),
            r.model_raw.as_deref().into(),
            r.backend.as_deref().into(),
            Value::Int(i64::from(r.status)),
            Value::Int(i64::from(r.stream)),
            Value::Int(r.prompt_tokens as i64),
            Value::Int(r.completion_tokens as i64),
            Value::Int(r.cached_tokens as i64),
            Value::Int(r.cache_write_tokens as i64),
            Value::Int(r.reasoning_tokens as i64),
            r.served_model.as_deref().into(),
            Value::Text(r.usage_source.as_str()),
            Value::Int(r.cost_nanousd),
            Value::Int(r.latency_ms as i64),
            r.ttfb_ms.map(|v| v as i64).into(),
            r.error_code.as_deref().into(),
        ];
        for (col, value) in values.into_iter().enumerate() {
            self.bind((skip + col + 1) as c_int, value)?;
        }
        Ok(())
    }

    /// Steps the statement to its end and resets it, so it holds no borrowed
    /// text afterwards and is ready for the next bind.
    fn run(&mut self) -> Result<(), SqliteError> {
        let stmt = self.raw.as_ptr();
        // SAFETY: `stmt` is a live statement with every parameter bound.
        let rc = unsafe { ffi::sqlite3_step(stmt) };
        let result = match rc {
            ffi::SQLITE_DONE | ffi::SQLITE_ROW => Ok(()),
            rc => Err(self.db().error(rc)),
        };
        self.forget();
        result
    }

    /// Resets the statement and drops its bindings (reset alone keeps them,
    /// and the borrowed text is about to go).
    fn forget(&mut self) {
        // SAFETY: `stmt` is a live statement; reset's return only repeats the
        // last step's error, which `run` has read.
        unsafe {
            ffi::sqlite3_reset(self.raw.as_ptr());
            ffi::sqlite3_clear_bindings(self.raw.as_ptr());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::usage::UsageSource;
    use sqlx::Row;

    #[test]
    fn the_statements_have_a_parameter_per_value() {
        let sql = insert_sql(8, true);
        assert!(sql.starts_with("INSERT OR FAIL INTO usage_records ("));
        assert_eq!(sql.matches('?').count(), 8 * USAGE_COLUMNS);
        let sql = insert_sql(1, false);
        assert_eq!(sql.matches('?').count(), USAGE_COLUMNS);
        assert!(sql.ends_with("(request_id) DO NOTHING"));
    }

    /// Every column set, and text SQLite must keep byte for byte.
    fn record(i: usize) -> UsageRecord {
        UsageRecord {
            request_id: format!("req_{i}"),
            created_at: 1_700_000_000_000 + i as i64,
            key_id: Some(7),
            user_id: i.is_multiple_of(2).then_some(3),
            endpoint: "chat".into(),
            model: Some(format!("m{}", i % 3)),
            model_raw: Some(format!("raw\0{i}\u{1F600}'); DROP TABLE usage_records; --")),
            backend: Some("http://b:1".into()),
            status: 200 + (i % 3) as u16,
            stream: i % 2 == 1,
            prompt_tokens: i as u64,
            completion_tokens: 2 * i as u64,
            cached_tokens: 1,
            cache_write_tokens: 2,
            reasoning_tokens: 3,
            served_model: None,
            usage_source: UsageSource::Upstream,
            cost_nanousd: 5_000_000_000 + i as i64,
            latency_ms: 10,
            ttfb_ms: i.is_multiple_of(2).then_some(4),
            error_code: (i == 5).then(|| "upstream_error".to_string()),
        }
    }

    async fn store(dir: &std::path::Path) -> Store {
        Store::connect(&format!("sqlite://{}/u.db", dir.display()), 1)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn batches_of_every_size_come_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path()).await;
        // 64 x 5 + 16 + 4 + 4 + 1, then a one-row batch.
        let mut records: Vec<_> = (0..345).map(record).collect();
        store.insert_usage(&mut records, true).await.unwrap();
        assert_eq!(records.len(), 345, "the records come back");
        store
            .insert_usage(&mut vec![record(345)], true)
            .await
            .unwrap();
        let rows = sqlx::query(
            "SELECT request_id, created_at, key_id, user_id, endpoint, model, model_raw, backend, status, \
             stream, prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens, reasoning_tokens, \
             served_model, usage_source, cost_nanousd, latency_ms, ttfb_ms, error_code FROM usage_records ORDER BY id",
        )
        .fetch_all(&store.pool)
        .await
        .unwrap();
        assert_eq!(rows.len(), 346);
        for (i, row) in rows.iter().enumerate() {
            let r = record(i);
            let text = |c: usize| row.try_get::<Option<String>, _>(c).unwrap();
            let int = |c: usize| row.try_get::<Option<i64>, _>(c).unwrap();
            assert_eq!(text(0).as_deref(), Some(r.request_id.as_str()));
            assert_eq!(int(1), Some(r.created_at));
            assert_eq!((int(2), int(3)), (r.key_id, r.user_id));
            assert_eq!(text(4).as_deref(), Some("chat"));
            assert_eq!(
                (text(5), text(6), text(7)),
                (r.model, r.model_raw, r.backend)
            );
            assert_eq!(
                (int(8), int(9)),
                (Some(i64::from(r.status)), Some(i64::from(r.stream)))
            );
            let tokens: Vec<_> = (10..15).map(int).collect();
            let expected = [r.prompt_tokens, r.completion_tokens, 1, 2, 3];
            assert_eq!(tokens, expected.map(|t| Some(t as i64)));
            assert_eq!((text(15), text(16).as_deref()), (None, Some("upstream")));
            assert_eq!((int(17), int(18)), (Some(r.cost_nanousd), Some(10)));
            assert_eq!(
                (int(19), text(20)),
                (r.ttfb_ms.map(|t| t as i64), r.error_code)
            );
        }
        let daily: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT model, requests, CAST(prompt_tokens AS BIGINT) FROM usage_daily ORDER BY model",
        )
        .fetch_all(&store.pool)
        .await
        .unwrap();
        let expected: Vec<_> = (0..3)
            .map(|m| {
                let of_model = (0..346).filter(|i| i % 3 == m);
                (
                    format!("m{m}"),
                    of_model.clone().count() as i64,
                    of_model.sum::<usize>() as i64,
                )
            })
            .collect();
        assert_eq!(daily, expected);
    }

    #[tokio::test]
    async fn a_refused_row_is_a_data_error_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path()).await;
        sqlx::query(
            "CREATE TRIGGER refuse BEFORE INSERT ON usage_records WHEN NEW.request_id = 'req_70' \
             BEGIN SELECT RAISE(ABORT, 'refused by a check'); END",
        )
        .execute(&store.pool)
        .await
        .unwrap();
        let mut records: Vec<_> = (0..75).map(record).collect();
        for known_new in [true, false] {
            let e = store
                .insert_usage(&mut records, known_new)
                .await
                .unwrap_err();
            assert!(e.is_data_error(), "{e}");
            assert!(e.to_string().contains("refused by a check"), "{e}");
        }
        let count = |sql: &'static str| {
            let pool = store.pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>(sql)
                    .fetch_one(&pool)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(count("SELECT COUNT(*) FROM usage_records").await, 0);
        assert_eq!(count("SELECT COUNT(*) FROM usage_daily").await, 0);
        // The connection is out of the failed transaction and goes on.
        records.truncate(70);
        store.insert_usage(&mut records, true).await.unwrap();
        assert_eq!(count("SELECT COUNT(*) FROM usage_records").await, 70);
    }

    #[tokio::test]
    async fn the_usage_connections_page_cache_stays_small_as_the_table_grows() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path()).await;
        // 40,960 rows: many more pages than SQLite's default cache keeps (2 MiB).
        for batch in 0..80 {
            let mut records: Vec<_> = (batch * 512..(batch + 1) * 512).map(record).collect();
            store.insert_usage(&mut records, true).await.unwrap();
        }
        let conn = store.usage_conn.as_ref().unwrap();
        let (answer, used) = tokio::sync::oneshot::channel();
        conn.jobs.send(Job::CacheUsed(answer)).ok().unwrap();
        let used = used.await.unwrap();
        assert!(
            used <= 1 << 20,
            "the usage connection's page cache holds {} KiB",
            used >> 10
        );
    }

    #[tokio::test]
    async fn an_in_memory_database_is_refused_with_the_reason() {
        for url in ["sqlite::memory:", "sqlite://file.db?mode=memory", "sqlite:"] {
            let e = Store::connect(url, 1).await.err().expect(url);
            assert!(e.to_string().contains("is not a file"), "{url}: {e}");
        }
    }
}
