//! Database access through sqlx's `Any` driver: SQLite by default (a file created on
//! first run), PostgreSQL for production. Queries are written once in SQL both
//! accept; migrations are kept per backend because their DDL differs.
//!
//! Nothing here runs on the proxy's hot path except a key lookup on a cache miss.

use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use crate::usage::UsageRecord;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot create the database directory {0}: {1}")]
    CreateDir(String, std::io::Error),
    #[error("{0}")]
    NotFound(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

/// A key as stored (never the key itself).
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    pub id: i64,
    pub name: String,
    pub key_prefix: String,
    pub key_last4: String,
    pub user_id: Option<i64>,
    pub models: Option<Vec<String>>,
    pub rpm: Option<i64>,
    pub tpm: Option<i64>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

pub struct NewKey<'a> {
    pub name: &'a str,
    pub key_hash: &'a str,
    pub key_prefix: &'a str,
    pub key_last4: &'a str,
    pub user_id: Option<i64>,
    pub models: Option<&'a [String]>,
    pub expires_at: Option<i64>,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

const KEY_COLUMNS: &str = "id, name, key_prefix, key_last4, user_id, models, rpm, tpm, created_at, expires_at, revoked_at";

impl Store {
    /// Connects (creating a SQLite file and its directory when missing) and migrates.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let (backend, url) = if url.starts_with("sqlite:") {
            (Backend::Sqlite, prepare_sqlite_url(url)?)
        } else {
            (Backend::Postgres, url.to_string())
        };
        let mut options = AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(5));
        if backend == Backend::Sqlite {
            options = options.after_connect(|conn, _| {
                Box::pin(async move {
                    // WAL lets key lookups read while the usage writer writes.
                    sqlx::query("PRAGMA journal_mode = WAL")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA synchronous = NORMAL")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA busy_timeout = 5000")
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            });
        }
        let pool = options.connect(&url).await?;
        match backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&pool).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&pool).await?,
        }
        Ok(Self { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn find_key_by_hash(&self, key_hash: &str) -> Result<Option<KeyRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = $1"
        ))
        .bind(key_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| key_from_row(&r)).transpose()
    }

    pub async fn create_key(&self, new: NewKey<'_>) -> Result<KeyRecord, StoreError> {
        let models = new
            .models
            .map(|m| serde_json::to_string(m).expect("strings serialize"));
        let row = sqlx::query(&format!(
            "INSERT INTO api_keys (name, key_hash, key_prefix, key_last4, user_id, models, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {KEY_COLUMNS}"
        ))
        .bind(new.name)
        .bind(new.key_hash)
        .bind(new.key_prefix)
        .bind(new.key_last4)
        .bind(new.user_id)
        .bind(models)
        .bind(now_ms())
        .bind(new.expires_at)
        .fetch_one(&self.pool)
        .await?;
        key_from_row(&row)
    }

    pub async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY id"))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(key_from_row)
            .collect()
    }

    /// Revokes by id; returns the key's hash so caches can drop it.
    pub async fn revoke_key(&self, id: i64) -> Result<String, StoreError> {
        let row = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL RETURNING key_hash",
        )
        .bind(now_ms())
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("no active key with id {id}")))?;
        Ok(row.try_get::<String, _>(0)?)
    }

    /// Writes a batch in one transaction. A request id already present is skipped,
    /// so a batch retried after an unclear failure never duplicates rows.
    pub async fn insert_usage(&self, records: &[UsageRecord]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for r in records {
            sqlx::query(
                "INSERT INTO usage_records (request_id, created_at, key_id, user_id, endpoint, model, backend, \
                 status, stream, prompt_tokens, completion_tokens, usage_source, cost_nanousd, latency_ms, ttfb_ms, error_code) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
                 ON CONFLICT (request_id) DO NOTHING",
            )
            .bind(&r.request_id)
            .bind(r.created_at)
            .bind(r.key_id)
            .bind(r.user_id)
            .bind(r.endpoint)
            .bind(r.model.as_deref())
            .bind(r.backend.as_deref())
            .bind(r.status as i32)
            .bind(i32::from(r.stream))
            .bind(r.prompt_tokens as i64)
            .bind(r.completion_tokens as i64)
            .bind(r.usage_source.as_str())
            .bind(r.cost_nanousd)
            .bind(r.latency_ms as i64)
            .bind(r.ttfb_ms.map(|v| v as i64))
            .bind(r.error_code.as_deref())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

fn key_from_row(r: &AnyRow) -> Result<KeyRecord, StoreError> {
    let models: Option<String> = r.try_get("models")?;
    Ok(KeyRecord {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        key_prefix: r.try_get("key_prefix")?,
        key_last4: r.try_get("key_last4")?,
        user_id: r.try_get("user_id")?,
        models: models.and_then(|m| serde_json::from_str(&m).ok()),
        rpm: r.try_get("rpm")?,
        tpm: r.try_get("tpm")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

/// `sqlite://data/x.db` -> creates `data/` and asks SQLite to create the file.
fn prepare_sqlite_url(url: &str) -> Result<String, StoreError> {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path != ":memory:" && !path.is_empty() {
        if let Some(dir) = std::path::Path::new(path).parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StoreError::CreateDir(dir.display().to_string(), e))?;
            }
        }
    }
    Ok(if query.contains("mode=") {
        url.to_string()
    } else if query.is_empty() {
        format!("sqlite://{path}?mode=rwc")
    } else {
        format!("sqlite://{path}?{query}&mode=rwc")
    })
}
