//! Upstream servers added through the admin API (merged with the YAML pools).

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{now_ms, Store, StoreError};

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ServerRecord {
    pub id: i64,
    pub pool: String,
    pub url: String,
    pub models: Vec<String>,
    pub weight: i64,
    pub priority: i64,
    pub api_key_env: Option<String>,
    pub created_at: i64,
}

pub struct NewServer<'a> {
    pub pool: &'a str,
    pub url: &'a str,
    pub models: &'a [String],
    pub weight: i64,
    pub priority: i64,
    pub api_key_env: Option<&'a str>,
}

const SERVER_COLUMNS: &str = "id, pool, url, models, weight, priority, api_key_env, created_at";

/// By hand: `models` is JSON text.
fn server_from_row(r: &AnyRow) -> Result<ServerRecord, StoreError> {
    let models: String = r.try_get("models")?;
    Ok(ServerRecord {
        id: r.try_get("id")?,
        pool: r.try_get("pool")?,
        url: r.try_get("url")?,
        models: serde_json::from_str(&models).unwrap_or_default(),
        weight: r.try_get("weight")?,
        priority: r.try_get("priority")?,
        api_key_env: r.try_get("api_key_env")?,
        created_at: r.try_get("created_at")?,
    })
}

/// A server's columns as the first six parameters, in `NewServer`'s order.
fn bind_server<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    s: &NewServer<'q>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    q.bind(s.pool)
        .bind(s.url)
        .bind(serde_json::to_string(s.models).expect("strings serialize"))
        .bind(s.weight)
        .bind(s.priority)
        .bind(s.api_key_env)
}

impl Store {
    pub async fn list_servers(&self) -> Result<Vec<ServerRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {SERVER_COLUMNS} FROM upstream_servers ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(server_from_row)
        .collect()
    }

    pub async fn insert_server(&self, s: &NewServer<'_>) -> Result<ServerRecord, StoreError> {
        let sql = format!(
            "INSERT INTO upstream_servers (pool, url, models, weight, priority, api_key_env, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {SERVER_COLUMNS}"
        );
        let row = bind_server(sqlx::query(&sql), s)
            .bind(now_ms())
            .fetch_one(&self.pool)
            .await?;
        server_from_row(&row)
    }

    pub async fn update_server(
        &self,
        id: i64,
        s: &NewServer<'_>,
    ) -> Result<ServerRecord, StoreError> {
        let sql = format!(
            "UPDATE upstream_servers SET pool = $1, url = $2, models = $3, weight = $4, priority = $5, api_key_env = $6 \
             WHERE id = $7 RETURNING {SERVER_COLUMNS}"
        );
        let row = bind_server(sqlx::query(&sql), s)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no server with id {id}")))?;
        server_from_row(&row)
    }

    pub async fn delete_server(&self, id: i64) -> Result<(), StoreError> {
        let n = sqlx::query("DELETE FROM upstream_servers WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound(format!("no server with id {id}")));
        }
        Ok(())
    }
}
