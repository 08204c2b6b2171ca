//! Usage: the per-request records, the daily totals kept beside them, and the
//! queries of both. The insert path is tuned with benchmarks (see `insert_usage`).

use sqlx::{AnyConnection, Row};

use super::{day_of, Backend, Store, StoreError};
use crate::usage::UsageRecord;

/// Usage totals for one group (a day or a model).
#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow)]
pub struct UsageTotals {
    #[sqlx(rename = "grp")]
    pub group: String,
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    /// Parts of `prompt_tokens` and `completion_tokens` (see `UsageRecord`).
    pub cached_tokens: i64,
    pub cache_write_tokens: i64,
    pub reasoning_tokens: i64,
    pub cost_nanousd: i64,
}

/// Usage of one (day, key, model): what `usage_daily` keys its totals by.
/// `key_id` 0 and `model` "" stand for none, as in `usage_daily`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, sqlx::FromRow)]
pub struct GroupTotals {
    pub day: String,
    pub key_id: i64,
    pub model: String,
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
    pub cache_write_tokens: i64,
    pub reasoning_tokens: i64,
    pub cost_nanousd: i64,
}

/// The sums `usage_daily` keeps, over the table the totals come from.
const GROUP_SUMS: &str = "CAST(SUM(prompt_tokens) AS BIGINT) AS prompt_tokens, \
     CAST(SUM(completion_tokens) AS BIGINT) AS completion_tokens, CAST(SUM(cached_tokens) AS BIGINT) AS cached_tokens, \
     CAST(SUM(cache_write_tokens) AS BIGINT) AS cache_write_tokens, CAST(SUM(reasoning_tokens) AS BIGINT) AS reasoning_tokens, \
     CAST(SUM(cost_nanousd) AS BIGINT) AS cost_nanousd";

/// Which usage a query covers: a day range (inclusive, `YYYY-MM-DD`) and
/// optionally one key or one user.
#[derive(Debug, Clone, Default)]
pub struct UsageFilter {
    pub from_day: String,
    pub to_day: String,
    pub key_id: Option<i64>,
    pub user_id: Option<i64>,
}

/// Mapped by hand: `stream` is a 0/1 integer (see `store`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RequestRow {
    pub id: i64,
    pub request_id: String,
    pub created_at: i64,
    pub key_id: Option<i64>,
    /// The key's name (absent once the key row is gone).
    pub key_name: Option<String>,
    pub endpoint: String,
    pub model: Option<String>,
    /// What the client asked for when `model` is `other`.
    pub model_raw: Option<String>,
    pub status: i64,
    pub stream: bool,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
    pub cache_write_tokens: i64,
    pub reasoning_tokens: i64,
    /// The model the upstream says answered, when not `model`.
    pub served_model: Option<String>,
    pub cost_nanousd: i64,
    pub latency_ms: i64,
    pub ttfb_ms: Option<i64>,
    pub error_code: Option<String>,
}

/// Columns of one usage row, in `USAGE_COLUMN_LIST`'s order.
pub(super) const USAGE_COLUMNS: usize = 21;
pub(super) const USAGE_COLUMN_LIST: &str =
    "usage_records (request_id, created_at, key_id, user_id, endpoint, model, model_raw, backend, \
     status, stream, prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens, reasoning_tokens, \
     served_model, usage_source, cost_nanousd, latency_ms, ttfb_ms, error_code)";

/// Adds a batch's totals to `usage_daily`: $1-$4 the day, key, model and
/// user, $5-$11 the sums in `UsageTotals`' order.
pub(super) const DAILY_UPSERT_SQL: &str =
    "INSERT INTO usage_daily (day, key_id, model, user_id, requests, prompt_tokens, completion_tokens, \
     cached_tokens, cache_write_tokens, reasoning_tokens, cost_nanousd) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
     ON CONFLICT (day, key_id, model) DO UPDATE SET \
     requests = usage_daily.requests + excluded.requests, \
     prompt_tokens = usage_daily.prompt_tokens + excluded.prompt_tokens, \
     completion_tokens = usage_daily.completion_tokens + excluded.completion_tokens, \
     cached_tokens = usage_daily.cached_tokens + excluded.cached_tokens, \
     cache_write_tokens = usage_daily.cache_write_tokens + excluded.cache_write_tokens, \
     reasoning_tokens = usage_daily.reasoning_tokens + excluded.reasoning_tokens, \
     cost_nanousd = usage_daily.cost_nanousd + excluded.cost_nanousd, \
     user_id = excluded.user_id";

/// What a batch adds to `usage_daily`, by (day, key, model), with the user
/// of the last record counted there.
#[derive(Default)]
pub(super) struct DailyAdds(std::collections::BTreeMap<(String, i64, String), (i64, UsageTotals)>);

impl DailyAdds {
    pub fn add(&mut self, r: &UsageRecord) {
        let key = (
            day_of(r.created_at),
            r.key_id.unwrap_or(0),
            r.model.clone().unwrap_or_default(),
        );
        let (user, t) = self.0.entry(key).or_insert_with(|| {
            (
                r.user_id.unwrap_or(0),
                UsageTotals {
                    group: String::new(),
                    requests: 0,
                    prompt_tokens: 0,
                    completion_tokens: 0,
                    cached_tokens: 0,
                    cache_write_tokens: 0,
                    reasoning_tokens: 0,
                    cost_nanousd: 0,
                },
            )
        });
        *user = r.user_id.unwrap_or(*user);
        t.requests += 1;
        t.prompt_tokens += r.prompt_tokens as i64;
        t.completion_tokens += r.completion_tokens as i64;
        t.cached_tokens += r.cached_tokens as i64;
        t.cache_write_tokens += r.cache_write_tokens as i64;
        t.reasoning_tokens += r.reasoning_tokens as i64;
        t.cost_nanousd += r.cost_nanousd;
    }

    pub fn iter(&self) -> impl Iterator<Item = (&(String, i64, String), &(i64, UsageTotals))> {
        self.0.iter()
    }
}

/// Rows per usage INSERT, on both backends: a batch is cut into statements
/// of these sizes only (largest first), so the few distinct statements stay
/// prepared instead of being parsed again for every batch size. Each run of
/// a statement costs ~14k instructions beyond its rows in SQLite (callgrind:
/// cursors on the table and its four indexes, the program's start), so a
/// busy gateway's ~800-row batch takes 14. Not larger: a prepared statement
/// holds its program and a value slot per parameter for good, and one of 256
/// rows held ~0.5 MiB in SQLite (smaps), for ~160 instructions a row saved.
pub(super) const USAGE_INSERT_SIZES: [usize; 4] = [64, 16, 4, 1];

/// `records` cut into chunks of `USAGE_INSERT_SIZES`.
pub(super) fn usage_chunks(mut records: &[UsageRecord]) -> impl Iterator<Item = &[UsageRecord]> {
    std::iter::from_fn(move || {
        let size = USAGE_INSERT_SIZES
            .into_iter()
            .find(|&n| n <= records.len())?;
        let (chunk, rest) = records.split_at(size);
        records = rest;
        Some(chunk)
    })
}

/// Where a chunk of `rows` rows is in `USAGE_INSERT_SIZES`: the slot of its
/// prepared statement.
pub(super) fn size_slot(rows: usize) -> usize {
    USAGE_INSERT_SIZES
        .iter()
        .position(|&n| n == rows)
        .expect("batches are cut into USAGE_INSERT_SIZES")
}

/// PostgreSQL's multi-row usage INSERT for `rows` rows; `known_new` leaves
/// out the conflict handling (see `insert_usage`).
fn usage_insert_sql(rows: usize, known_new: bool) -> String {
    let mut sql = String::with_capacity(300 + rows * USAGE_COLUMNS * 6);
    sql.push_str("INSERT INTO ");
    sql.push_str(USAGE_COLUMN_LIST);
    sql.push_str(" VALUES ");
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for col in 0..USAGE_COLUMNS {
            if col > 0 {
                sql.push_str(", ");
            }
            sql.push('$');
            sql.push_str(&(row * USAGE_COLUMNS + col + 1).to_string());
        }
        sql.push(')');
    }
    if !known_new {
        sql.push_str(" ON CONFLICT (request_id) DO NOTHING RETURNING request_id");
    }
    sql
}

/// `usage_insert_sql`, built once per statement shape: building it anew for
/// every batch cost ~450 instructions per record at the small batches of a
/// lightly loaded gateway (callgrind).
fn cached_usage_insert_sql(rows: usize, known_new: bool) -> &'static str {
    static SQL: [[std::sync::OnceLock<String>; 2]; USAGE_INSERT_SIZES.len()] =
        [const { [const { std::sync::OnceLock::new() }; 2] }; USAGE_INSERT_SIZES.len()];
    SQL[size_slot(rows)][usize::from(known_new)].get_or_init(|| usage_insert_sql(rows, known_new))
}

impl Store {
    /// Writes a batch in one transaction, with the daily totals of the records it
    /// adds. A request id already present is skipped (and not counted again), so a
    /// batch retried after an unclear failure or replayed from the spill file never
    /// duplicates anything.
    ///
    /// `known_new`: the batch was never sent before (fresh request ids from the
    /// queue), so the per-row conflict check and RETURNING are left out, which
    /// roughly halves the database's work per row. Should a row exist after all, the
    /// whole transaction fails and the caller retries with `known_new` false.
    ///
    /// `records` is the same on return, written or not: on SQLite the batch
    /// goes to its writing thread and back (`sqlite_usage`).
    pub async fn insert_usage(
        &self,
        records: &mut Vec<UsageRecord>,
        known_new: bool,
    ) -> Result<(), StoreError> {
        if let Some(conn) = &self.usage_conn {
            return conn.insert(records, known_new).await;
        }
        let records = &records[..];
        let mut tx = self.pool.begin().await?;
        let mut daily = DailyAdds::default();
        // Many rows per statement: one statement per record made the writer the
        // gateway's largest cost under load (benches/, callgrind).
        for chunk in usage_chunks(records) {
            let mut query = sqlx::query(cached_usage_insert_sql(chunk.len(), known_new));
            for r in chunk {
                query = query
                    .bind(r.request_id.as_str())
                    .bind(r.created_at)
                    .bind(r.key_id)
                    .bind(r.user_id)
                    .bind(r.endpoint.as_ref())
                    .bind(r.model.as_deref())
                    .bind(r.model_raw.as_deref())
                    .bind(r.backend.as_deref())
                    .bind(i32::from(r.status))
                    .bind(i32::from(r.stream))
                    .bind(r.prompt_tokens as i64)
                    .bind(r.completion_tokens as i64)
                    .bind(r.cached_tokens as i64)
                    .bind(r.cache_write_tokens as i64)
                    .bind(r.reasoning_tokens as i64)
                    .bind(r.served_model.as_deref())
                    .bind(r.usage_source.as_str())
                    .bind(r.cost_nanousd)
                    .bind(r.latency_ms as i64)
                    .bind(r.ttfb_ms.map(|v| v as i64))
                    .bind(r.error_code.as_deref());
            }
            // Only rows actually inserted count toward the totals (replays do not).
            if known_new {
                query.execute(&mut *tx).await?;
                chunk.iter().for_each(|r| daily.add(r));
            } else {
                let inserted = query
                    .fetch_all(&mut *tx)
                    .await?
                    .iter()
                    .map(|row| row.try_get::<String, _>(0))
                    .collect::<Result<std::collections::HashSet<String>, _>>()?;
                for r in chunk.iter().filter(|r| inserted.contains(&r.request_id)) {
                    daily.add(r);
                }
            }
        }
        for ((day, key_id, model), (user_id, t)) in daily.iter() {
            sqlx::query(DAILY_UPSERT_SQL)
                .bind(day.as_str())
                .bind(*key_id)
                .bind(model.as_str())
                .bind(*user_id)
                .bind(t.requests)
                .bind(t.prompt_tokens)
                .bind(t.completion_tokens)
                .bind(t.cached_tokens)
                .bind(t.cache_write_tokens)
                .bind(t.reasoning_tokens)
                .bind(t.cost_nanousd)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Tokens and cost a user used since `since_day` (for quotas).
    pub async fn user_usage_since(
        &self,
        user_id: i64,
        since_day: &str,
    ) -> Result<(u64, i64), StoreError> {
        let (tokens, cost): (i64, i64) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(prompt_tokens + completion_tokens), 0) AS BIGINT) AS tokens, \
             CAST(COALESCE(SUM(cost_nanousd), 0) AS BIGINT) AS cost \
             FROM usage_daily WHERE user_id = $1 AND day >= $2",
        )
        .bind(user_id)
        .bind(since_day)
        .fetch_one(&self.pool)
        .await?;
        Ok((tokens.max(0) as u64, cost))
    }

    /// Tokens and cost of every user with usage since `since_day`: for keeping
    /// quotas in step with other instances, and for the admin's user list.
    pub async fn users_usage_since(
        &self,
        since_day: &str,
    ) -> Result<Vec<(i64, u64, i64)>, StoreError> {
        let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
            "SELECT user_id, CAST(SUM(prompt_tokens + completion_tokens) AS BIGINT) AS tokens, \
             CAST(SUM(cost_nanousd) AS BIGINT) AS cost \
             FROM usage_daily WHERE day >= $1 AND user_id <> 0 GROUP BY user_id",
        )
        .bind(since_day)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(user, tokens, cost)| (user, tokens.max(0) as u64, cost))
            .collect())
    }

    /// Totals grouped by day or by model over a filter.
    pub async fn usage_totals(
        &self,
        filter: &UsageFilter,
        by_model: bool,
    ) -> Result<Vec<UsageTotals>, StoreError> {
        totals(&mut *self.pool.acquire().await?, filter, by_model).await
    }

    /// What the overview shows of a user's usage: the daily totals of `last_30`,
    /// its totals by model, the daily totals of `month`, and the `recent`
    /// newest requests. Read in one snapshot, so the parts agree with each
    /// other while the usage writer commits.
    pub async fn user_overview(
        &self,
        last_30: &UsageFilter,
        month: &UsageFilter,
        recent: i64,
    ) -> Result<UserOverview, StoreError> {
        let mut tx = self.read_snapshot().await?;
        let overview = UserOverview {
            daily: totals(&mut tx, last_30, false).await?,
            by_model: totals(&mut tx, last_30, true).await?,
            month: totals(&mut tx, month, false).await?,
            recent: requests(&mut tx, last_30.key_id, last_30.user_id, None, recent).await?,
        };
        tx.commit().await?;
        Ok(overview)
    }

    /// For reconciliation, per (day, key, model) over the days `from_day` to
    /// `to_day` (inclusive): the totals recomputed from `usage_records`, and
    /// the totals `usage_daily` holds. Each list is sorted.
    pub async fn group_totals(
        &self,
        from: time::Date,
        to: time::Date,
    ) -> Result<(Vec<GroupTotals>, Vec<GroupTotals>), StoreError> {
        let ms = |d: time::Date| d.midnight().assume_utc().unix_timestamp() * 1000;
        let (from_ms, until_ms) = (ms(from), ms(to.next_day().unwrap_or(to)));
        let (from_day, to_day) = (from.to_string(), to.to_string());
        let day = match self.backend {
            Backend::Sqlite => "strftime('%Y-%m-%d', created_at / 1000, 'unixepoch')",
            Backend::Postgres => {
                "to_char(to_timestamp(created_at / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
            }
        };
        let from_records = format!(
            "SELECT day, key_id, model, CAST(COUNT(*) AS BIGINT) AS requests, {GROUP_SUMS} FROM \
             (SELECT {day} AS day, COALESCE(key_id, 0) AS key_id, COALESCE(model, '') AS model, prompt_tokens, \
             completion_tokens, cached_tokens, cache_write_tokens, reasoning_tokens, cost_nanousd FROM usage_records \
             WHERE created_at >= $1 AND created_at < $2) r \
             GROUP BY day, key_id, model ORDER BY day, key_id, model"
        );
        let records = sqlx::query_as(&from_records)
            .bind(from_ms)
            .bind(until_ms)
            .fetch_all(&self.pool)
            .await?;
        let from_daily = format!(
            "SELECT day, key_id, model, CAST(SUM(requests) AS BIGINT) AS requests, {GROUP_SUMS} FROM usage_daily \
             WHERE day >= $1 AND day <= $2 GROUP BY day, key_id, model ORDER BY day, key_id, model"
        );
        let daily = sqlx::query_as(&from_daily)
            .bind(&from_day)
            .bind(&to_day)
            .fetch_all(&self.pool)
            .await?;
        Ok((records, daily))
    }

    /// Most recent requests first; `before_id` pages backwards. A user's or a
    /// key's page is an index range scan (`usage_records (user_id, id)`,
    /// `(key_id, id)`), however many rows the others have.
    pub async fn recent_requests(
        &self,
        key_id: Option<i64>,
        user_id: Option<i64>,
        before_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<RequestRow>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        requests(&mut conn, key_id, user_id, before_id, limit).await
    }
}

/// `Store::user_overview`.
#[derive(Debug, Clone)]
pub struct UserOverview {
    pub daily: Vec<UsageTotals>,
    pub by_model: Vec<UsageTotals>,
    pub month: Vec<UsageTotals>,
    pub recent: Vec<RequestRow>,
}

/// `Store::usage_totals`, on a given connection or transaction.
async fn totals(
    conn: &mut AnyConnection,
    filter: &UsageFilter,
    by_model: bool,
) -> Result<Vec<UsageTotals>, StoreError> {
    let group = if by_model { "model" } else { "day" };
    let sql = format!(
        "SELECT {group} AS grp, CAST(SUM(requests) AS BIGINT) AS requests, \
         CAST(SUM(prompt_tokens) AS BIGINT) AS prompt_tokens, CAST(SUM(completion_tokens) AS BIGINT) AS completion_tokens, \
         CAST(SUM(cached_tokens) AS BIGINT) AS cached_tokens, CAST(SUM(cache_write_tokens) AS BIGINT) AS cache_write_tokens, \
         CAST(SUM(reasoning_tokens) AS BIGINT) AS reasoning_tokens, \
         CAST(SUM(cost_nanousd) AS BIGINT) AS cost_nanousd FROM usage_daily \
         WHERE day >= $1 AND day <= $2 AND ($3 = 0 OR key_id = $4) AND ($5 = 0 OR user_id = $6) \
         GROUP BY {group} ORDER BY {group}"
    );
    let key = filter.key_id.unwrap_or(0);
    let user = filter.user_id.unwrap_or(0);
    Ok(sqlx::query_as(&sql)
        .bind(&filter.from_day)
        .bind(&filter.to_day)
        .bind(key)
        .bind(key)
        .bind(user)
        .bind(user)
        .fetch_all(&mut *conn)
        .await?)
}

/// `Store::recent_requests`, on a given connection or transaction.
async fn requests(
    conn: &mut AnyConnection,
    key_id: Option<i64>,
    user_id: Option<i64>,
    before_id: Option<i64>,
    limit: i64,
) -> Result<Vec<RequestRow>, StoreError> {
    let sql = recent_requests_sql(key_id.is_some(), user_id.is_some());
    let mut query = sqlx::query(&sql);
    for id in key_id.into_iter().chain(user_id) {
        query = query.bind(id);
    }
    query
        .bind(before_id.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| {
            Ok(RequestRow {
                id: r.try_get("id")?,
                request_id: r.try_get("request_id")?,
                created_at: r.try_get("created_at")?,
                key_id: r.try_get("key_id")?,
                key_name: r.try_get("key_name")?,
                endpoint: r.try_get("endpoint")?,
                model: r.try_get("model")?,
                model_raw: r.try_get("model_raw")?,
                status: r.try_get("status")?,
                stream: r.try_get::<i64, _>("stream")? != 0,
                prompt_tokens: r.try_get("prompt_tokens")?,
                completion_tokens: r.try_get("completion_tokens")?,
                cached_tokens: r.try_get("cached_tokens")?,
                cache_write_tokens: r.try_get("cache_write_tokens")?,
                reasoning_tokens: r.try_get("reasoning_tokens")?,
                served_model: r.try_get("served_model")?,
                cost_nanousd: r.try_get("cost_nanousd")?,
                latency_ms: r.try_get("latency_ms")?,
                ttfb_ms: r.try_get("ttfb_ms")?,
                error_code: r.try_get("error_code")?,
            })
        })
        .collect()
}

/// The query behind `recent_requests`: binds the key id (if `by_key`), the
/// user id (if `by_user`), then `before_id` and the limit. Each filter is a
/// plain predicate (`($1 = 0 OR key_id = $2)` keeps a planner off the index).
pub fn recent_requests_sql(by_key: bool, by_user: bool) -> String {
    let mut filters = Vec::new();
    let mut n = 0;
    let mut param = || {
        n += 1;
        format!("${n}")
    };
    if by_key {
        filters.push(format!("r.key_id = {}", param()));
    }
    if by_user {
        filters.push(format!("r.user_id = {}", param()));
    }
    filters.push(format!("r.id < {}", param()));
    let limit = param();
    format!(
        "SELECT r.id, r.request_id, r.created_at, r.key_id, k.name AS key_name, r.endpoint, r.model, r.model_raw, \
         CAST(r.status AS BIGINT) AS status, CAST(r.stream AS BIGINT) AS stream, r.prompt_tokens, \
         r.completion_tokens, r.cached_tokens, r.cache_write_tokens, r.reasoning_tokens, r.served_model, \
         r.cost_nanousd, r.latency_ms, r.ttfb_ms, r.error_code \
         FROM usage_records r LEFT JOIN api_keys k ON k.id = r.key_id \
         WHERE {} ORDER BY r.id DESC LIMIT {limit}",
        filters.join(" AND ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: usize) -> UsageRecord {
        UsageRecord {
            request_id: format!("req_{i}"),
            created_at: 0,
            key_id: Some(1),
            user_id: None,
            endpoint: "chat".into(),
            model: None,
            model_raw: None,
            backend: None,
            status: 200,
            stream: false,
            prompt_tokens: 0,
            completion_tokens: 0,
            cached_tokens: 0,
            cache_write_tokens: 0,
            reasoning_tokens: 0,
            served_model: None,
            usage_source: crate::usage::UsageSource::None,
            cost_nanousd: 0,
            latency_ms: 0,
            ttfb_ms: None,
            error_code: None,
        }
    }

    #[test]
    fn batches_are_cut_into_the_few_cached_statement_sizes() {
        let records: Vec<_> = (0..150).map(record).collect();
        let sizes: Vec<usize> = usage_chunks(&records).map(<[_]>::len).collect();
        assert_eq!(sizes, [64, 64, 16, 4, 1, 1]);
        let ids: Vec<&str> = usage_chunks(&records)
            .flatten()
            .map(|r| r.request_id.as_str())
            .collect();
        assert_eq!(ids.len(), 150);
        assert_eq!((ids[0], ids[149]), ("req_0", "req_149"));
        assert_eq!(usage_chunks(&[]).count(), 0);
        let sql = usage_insert_sql(2, false);
        assert_eq!(sql.matches('$').count(), 2 * USAGE_COLUMNS);
        assert!(sql.starts_with("INSERT INTO") && sql.ends_with("DO NOTHING RETURNING request_id"));
        assert!(usage_insert_sql(2, true).ends_with("$42)"));
    }

    #[tokio::test]
    async fn a_fresh_batch_that_meets_a_stored_row_fails_and_the_careful_retry_counts_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!("sqlite://{}/u.db", dir.path().display()), 1)
            .await
            .unwrap();
        let mut first: Vec<_> = (0..3).map(record).collect();
        store.insert_usage(&mut first, true).await.unwrap();
        // req_2 is stored already, third of an eight-row statement: the fast
        // path must not skip it silently, nor keep the two rows before it...
        let mut again: Vec<_> = [10, 11, 2, 12, 13, 14, 15, 16]
            .into_iter()
            .map(record)
            .collect();
        assert!(store.insert_usage(&mut again, true).await.is_err());
        let stored = store.recent_requests(Some(1), None, None, 100).await;
        assert_eq!(stored.unwrap().len(), 3, "a refused batch left rows behind");
        // ...and the writer's retry (careful) adds only the seven new ones.
        store.insert_usage(&mut again, false).await.unwrap();
        let totals = store
            .usage_totals(
                &UsageFilter {
                    from_day: "1970-01-01".into(),
                    to_day: "1970-01-01".into(),
                    key_id: Some(1),
                    user_id: None,
                },
                false,
            )
            .await
            .unwrap();
        assert_eq!(totals.len(), 1);
        assert_eq!(totals[0].requests, 10);
        let rows = store
            .recent_requests(Some(1), None, None, 100)
            .await
            .unwrap();
        assert_eq!(rows.len(), 10);
    }
}
