//! Database access through sqlx's `Any` driver: SQLite by default (a file created on
//! first run), PostgreSQL for production. Queries are written once in SQL both
//! accept; migrations are kept per backend because their DDL differs.
//!
//! One module per entity; this one holds what they share. Nothing here runs on
//! the proxy's hot path except a key lookup on a cache miss.
//!
//! Row mapping: `#[derive(sqlx::FromRow)]` where every column decodes directly.
//! Flags stored as 0/1 integers (portable DDL) and JSON text columns are mapped
//! by hand, because the `Any` driver decodes `bool` only from a real boolean.

use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;

mod billing;
mod keys;
mod servers;
mod sqlite_usage;
mod usage;
mod users;

pub use billing::EventOutcome;
pub use keys::{KeyRecord, NewKey};
pub use servers::{NewServer, ServerRecord};
pub use sqlite_usage::SqliteError;
pub use usage::{
    recent_requests_sql, GroupTotals, RequestRow, UsageFilter, UsageTotals, UserOverview,
};
pub use users::{SessionRecord, UserRecord};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// From the usage batches SQLite is given directly (`sqlite_usage`).
    #[error("database error: {0}")]
    Sqlite(SqliteError),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot create the database directory {0}: {1}")]
    CreateDir(String, std::io::Error),
    #[error("{0}")]
    NotFound(String),
    #[error("`{0}` is not a file: the gateway keeps its usage records in a SQLite file (e.g. sqlite://data/bluesminds.db) or in PostgreSQL")]
    InMemory(String),
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
    /// SQLite's connection for the usage batches (`None` on PostgreSQL).
    usage_conn: Option<std::sync::Arc<sqlite_usage::UsageConnection>>,
}

/// The UTC day (`YYYY-MM-DD`) of a unix-milliseconds time.
pub fn day_of(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .date()
        .to_string()
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Store {
    /// `connect` with an owned URL, for a spawned task.
    pub async fn connect_owned(url: String, max_connections: u32) -> Result<Self, StoreError> {
        Self::connect(&url, max_connections).await
    }

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
                    // Statement journals of the usage batches in memory: on
                    // files, every batch created, wrote and unlinked a temp
                    // file (strace of the writer thread, benches/README.md).
                    sqlx::query("PRAGMA temp_store = MEMORY")
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            });
        }
        let pool = options.connect(&url).await?;
        let usage_conn = match backend {
            Backend::Sqlite => {
                SQLITE_MIGRATIONS.run(&pool).await?;
                Some(std::sync::Arc::new(
                    sqlite_usage::UsageConnection::open(&url).await?,
                ))
            }
            Backend::Postgres => {
                POSTGRES_MIGRATIONS.run(&pool).await?;
                None
            }
        };
        Ok(Self {
            pool,
            backend,
            usage_conn,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A read-only transaction whose queries all see the database as of its
    /// first read, whatever commits meanwhile. SQLite's deferred transaction
    /// already does (WAL); PostgreSQL's default level takes a new snapshot for
    /// each statement.
    async fn read_snapshot(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *tx)
                .await?;
        }
        Ok(tx)
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// `sqlite://data/x.db` -> creates `data/` and asks SQLite to create the file.
/// An in-memory database is refused: it would lose every usage record at
/// exit, and the usage writer's own connection would not even see it.
fn prepare_sqlite_url(url: &str) -> Result<String, StoreError> {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() || path.contains(":memory:") || query.split('&').any(|p| p == "mode=memory")
    {
        return Err(StoreError::InMemory(url.to_string()));
    }
    if let Some(dir) = std::path::Path::new(path).parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::CreateDir(dir.display().to_string(), e))?;
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
