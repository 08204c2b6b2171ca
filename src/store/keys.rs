//! API keys: stored as SHA-256 hashes with enough of the key to recognise it.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{now_ms, Store, StoreError};

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
    pub concurrency: Option<i64>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// The owner's plan and state, when the key belongs to a user.
    pub user_plan: Option<String>,
    pub user_disabled: bool,
}

impl KeyRecord {
    /// `active`, `revoked` or `expired` at `now_ms`.
    pub fn status(&self, now_ms: i64) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.expires_at.is_some_and(|t| t <= now_ms) {
            "expired"
        } else {
            "active"
        }
    }
}

pub struct NewKey<'a> {
    pub name: &'a str,
    pub key_hash: &'a str,
    pub key_prefix: &'a str,
    pub key_last4: &'a str,
    pub user_id: Option<i64>,
    pub models: Option<&'a [String]>,
    pub expires_at: Option<i64>,
    pub rpm: Option<i64>,
    pub tpm: Option<i64>,
    pub concurrency: Option<i64>,
}

/// Every query of keys selects this, `key_hash` included for the callers that
/// need it to drop the key from caches.
const KEY_SELECT: &str = "SELECT k.id, k.name, k.key_prefix, k.key_last4, k.user_id, k.models, k.rpm, k.tpm, \
     k.concurrency, k.created_at, k.expires_at, k.revoked_at, u.plan AS user_plan, u.disabled AS user_disabled, \
     k.key_hash FROM api_keys k LEFT JOIN users u ON u.id = k.user_id";

/// By hand: `models` is JSON text and `user_disabled` a 0/1 integer (see `store`).
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
        concurrency: r.try_get("concurrency")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        revoked_at: r.try_get("revoked_at")?,
        user_plan: r.try_get("user_plan")?,
        user_disabled: r.try_get::<Option<i64>, _>("user_disabled")?.unwrap_or(0) != 0,
    })
}

impl Store {
    pub async fn find_key_by_hash(&self, key_hash: &str) -> Result<Option<KeyRecord>, StoreError> {
        let row = sqlx::query(&format!("{KEY_SELECT} WHERE k.key_hash = $1"))
            .bind(key_hash)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| key_from_row(&r)).transpose()
    }

    pub async fn create_key(&self, new: NewKey<'_>) -> Result<KeyRecord, StoreError> {
        let models = new
            .models
            .map(|m| serde_json::to_string(m).expect("strings serialize"));
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO api_keys (name, key_hash, key_prefix, key_last4, user_id, models, created_at, expires_at, rpm, tpm, concurrency) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
        )
        .bind(new.name)
        .bind(new.key_hash)
        .bind(new.key_prefix)
        .bind(new.key_last4)
        .bind(new.user_id)
        .bind(models)
        .bind(now_ms())
        .bind(new.expires_at)
        .bind(new.rpm)
        .bind(new.tpm)
        .bind(new.concurrency)
        .fetch_one(&self.pool)
        .await?;
        let row = sqlx::query(&format!("{KEY_SELECT} WHERE k.id = $1"))
            .bind(id)
            .fetch_one(&self.pool)
            .await?;
        key_from_row(&row)
    }

    pub async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        sqlx::query(&format!("{KEY_SELECT} ORDER BY k.id"))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(key_from_row)
            .collect()
    }

    pub async fn keys_of_user(&self, user_id: i64) -> Result<Vec<KeyRecord>, StoreError> {
        sqlx::query(&format!("{KEY_SELECT} WHERE k.user_id = $1 ORDER BY k.id"))
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(key_from_row)
            .collect()
    }

    /// A key with its hash, if `user_id` owns it.
    pub async fn key_of_user(
        &self,
        key_id: i64,
        user_id: i64,
    ) -> Result<Option<(KeyRecord, String)>, StoreError> {
        let row = sqlx::query(&format!("{KEY_SELECT} WHERE k.id = $1 AND k.user_id = $2"))
            .bind(key_id)
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((key_from_row(&r)?, r.try_get("key_hash")?)))
            .transpose()
    }

    /// Stored hashes of a user's keys, to drop them from caches.
    pub async fn key_hashes_of_user(&self, user_id: i64) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT key_hash FROM api_keys WHERE user_id = $1")
                .bind(user_id)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Revokes by id; returns the key's hash so caches can drop it.
    pub async fn revoke_key(&self, id: i64) -> Result<String, StoreError> {
        sqlx::query_scalar(
            "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL RETURNING key_hash",
        )
        .bind(now_ms())
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("no active key with id {id}")))
    }

    /// Sets when a key stops working (rotation grace); never extends a key.
    pub async fn expire_key(&self, key_id: i64, at: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE api_keys SET expires_at = $1 WHERE id = $2 AND (expires_at IS NULL OR expires_at > $3)",
        )
        .bind(at)
        .bind(key_id)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
