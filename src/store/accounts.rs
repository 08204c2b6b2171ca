//! Accounts, sessions, keys by owner and admin-managed upstream servers.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{
    key_from_row, now_ms, user_from_row, KeyRecord, Store, StoreError, UserRecord, KEY_SELECT,
};

const USER_COLUMNS: &str = "id, email, plan, disabled, created_at";

/// A session joined with its user.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub user: UserRecord,
    pub csrf_token: String,
    pub expires_at: i64,
}

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

impl Store {
    /// Creates a dashboard account; `Ok(None)` when the email is taken.
    pub async fn create_account(
        &self,
        email: &str,
        password_hash: &str,
        plan: &str,
    ) -> Result<Option<UserRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "INSERT INTO users (email, plan, created_at, password_hash) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (email) DO NOTHING RETURNING {USER_COLUMNS}"
        ))
        .bind(email)
        .bind(plan)
        .bind(now_ms())
        .bind(password_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| user_from_row(&r)).transpose()
    }

    /// The user and their password hash, for login.
    pub async fn user_with_password(
        &self,
        email: &str,
    ) -> Result<Option<(UserRecord, Option<String>)>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS}, password_hash FROM users WHERE email = $1"
        ))
        .bind(email)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((user_from_row(&r)?, r.try_get("password_hash")?)))
            .transpose()
    }

    pub async fn user_by_id(&self, id: i64) -> Result<Option<UserRecord>, StoreError> {
        sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| user_from_row(&r))
            .transpose()
    }

    pub async fn set_user_disabled(&self, id: i64, disabled: bool) -> Result<(), StoreError> {
        let n = sqlx::query("UPDATE users SET disabled = $1 WHERE id = $2")
            .bind(i64::from(disabled))
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound(format!("no user with id {id}")));
        }
        if disabled {
            sqlx::query("DELETE FROM sessions WHERE user_id = $1")
                .bind(id)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Stored hashes of a user's keys, to drop them from caches.
    pub async fn key_hashes_of_user(&self, user_id: i64) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query("SELECT key_hash FROM api_keys WHERE user_id = $1")
                .bind(user_id)
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| r.try_get::<String, _>(0))
                .collect::<Result<_, _>>()?,
        )
    }

    pub async fn create_session(
        &self,
        id_hash: &str,
        user_id: i64,
        csrf_token: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sessions (id_hash, user_id, csrf_token, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id_hash)
        .bind(user_id)
        .bind(csrf_token)
        .bind(now_ms())
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A live session (not expired, user not disabled).
    pub async fn find_session(&self, id_hash: &str) -> Result<Option<SessionRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT u.id, u.email, u.plan, u.disabled, u.created_at, s.csrf_token, s.expires_at \
             FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.id_hash = $1 AND s.expires_at > $2 AND u.disabled = 0",
        )
        .bind(id_hash)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(SessionRecord {
                user: user_from_row(&r)?,
                csrf_token: r.try_get("csrf_token")?,
                expires_at: r.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    pub async fn delete_session(&self, id_hash: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
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
        let row = sqlx::query(&format!(
            "{KEY_SELECT_WITH_HASH} WHERE k.id = $1 AND k.user_id = $2"
        ))
        .bind(key_id)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((key_from_row(&r)?, r.try_get("key_hash")?)))
            .transpose()
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

    pub async fn list_servers(&self) -> Result<Vec<ServerRecord>, StoreError> {
        sqlx::query("SELECT id, pool, url, models, weight, priority, api_key_env, created_at FROM upstream_servers ORDER BY id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(server_from_row)
            .collect()
    }

    pub async fn insert_server(&self, s: &NewServer<'_>) -> Result<ServerRecord, StoreError> {
        let row = sqlx::query(
            "INSERT INTO upstream_servers (pool, url, models, weight, priority, api_key_env, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             RETURNING id, pool, url, models, weight, priority, api_key_env, created_at",
        )
        .bind(s.pool)
        .bind(s.url)
        .bind(serde_json::to_string(s.models).expect("strings serialize"))
        .bind(s.weight)
        .bind(s.priority)
        .bind(s.api_key_env)
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
        let row = sqlx::query(
            "UPDATE upstream_servers SET pool = $1, url = $2, models = $3, weight = $4, priority = $5, api_key_env = $6 \
             WHERE id = $7 RETURNING id, pool, url, models, weight, priority, api_key_env, created_at",
        )
        .bind(s.pool)
        .bind(s.url)
        .bind(serde_json::to_string(s.models).expect("strings serialize"))
        .bind(s.weight)
        .bind(s.priority)
        .bind(s.api_key_env)
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

    /// Per user: tokens and cost since `since_day`, for the admin's user list.
    pub async fn usage_by_user_since(
        &self,
        since_day: &str,
    ) -> Result<Vec<(i64, i64, i64)>, StoreError> {
        sqlx::query(
            "SELECT user_id, CAST(SUM(prompt_tokens + completion_tokens) AS BIGINT) AS tokens, \
             CAST(SUM(cost_nanousd) AS BIGINT) AS cost FROM usage_daily WHERE day >= $1 AND user_id <> 0 GROUP BY user_id",
        )
        .bind(since_day)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get("user_id")?, r.try_get("tokens")?, r.try_get("cost")?)))
        .collect()
    }
}

const KEY_SELECT_WITH_HASH: &str = "SELECT k.id, k.name, k.key_prefix, k.key_last4, k.user_id, k.models, k.rpm, k.tpm, \
     k.concurrency, k.created_at, k.expires_at, k.revoked_at, u.plan AS user_plan, u.disabled AS user_disabled, k.key_hash \
     FROM api_keys k LEFT JOIN users u ON u.id = k.user_id";
