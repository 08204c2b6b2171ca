//! Users (dashboard accounts) and their browser sessions.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{now_ms, Store, StoreError};

#[derive(Debug, Clone, PartialEq)]
pub struct UserRecord {
    pub id: i64,
    pub email: String,
    pub plan: String,
    pub disabled: bool,
    /// Granted by the operator only (`bluesminds users grant-admin`).
    pub is_admin: bool,
    pub created_at: i64,
}

/// A session joined with its user.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub user: UserRecord,
    pub csrf_token: String,
    pub expires_at: i64,
}

const USER_COLUMNS: &str = "id, email, plan, disabled, is_admin, created_at";

/// How every email is stored and looked up: trimmed and lowercase, so letter
/// case never makes a second account or misses the first.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// By hand: `disabled` and `is_admin` are 0/1 integers (see `store`).
fn user_from_row(r: &AnyRow) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        id: r.try_get("id")?,
        email: r.try_get("email")?,
        plan: r.try_get("plan")?,
        disabled: r.try_get::<i64, _>("disabled")? != 0,
        is_admin: r.try_get::<i64, _>("is_admin")? != 0,
        created_at: r.try_get("created_at")?,
    })
}

impl Store {
    /// Grants or takes back the admin role; `Ok(false)` when no user has that email.
    pub async fn set_user_admin(&self, email: &str, admin: bool) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE users SET is_admin = $1 WHERE email = $2")
            .bind(i64::from(admin))
            .bind(normalize_email(email))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn create_user(&self, email: &str, plan: &str) -> Result<UserRecord, StoreError> {
        let row = sqlx::query(&format!(
            "INSERT INTO users (email, plan, created_at) VALUES ($1, $2, $3) RETURNING {USER_COLUMNS}"
        ))
        .bind(normalize_email(email))
        .bind(plan)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await?;
        user_from_row(&row)
    }

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
        .bind(normalize_email(email))
        .bind(plan)
        .bind(now_ms())
        .bind(password_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| user_from_row(&r)).transpose()
    }

    pub async fn find_user_by_email(&self, email: &str) -> Result<Option<UserRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE email = $1"
        ))
        .bind(normalize_email(email))
        .fetch_optional(&self.pool)
        .await?
        .map(|r| user_from_row(&r))
        .transpose()
    }

    /// The user and their password hash, for login.
    pub async fn user_with_password(
        &self,
        email: &str,
    ) -> Result<Option<(UserRecord, Option<String>)>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS}, password_hash FROM users WHERE email = $1"
        ))
        .bind(normalize_email(email))
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

    pub async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY id"))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(user_from_row)
            .collect()
    }

    pub async fn set_user_plan(&self, user_id: i64, plan: &str) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE users SET plan = $1 WHERE id = $2")
            .bind(plan)
            .bind(user_id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if done == 0 {
            return Err(StoreError::NotFound(format!("no user with id {user_id}")));
        }
        Ok(())
    }

    /// Disabling also ends the user's sessions.
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

    pub async fn create_session(
        &self,
        id_hash: &str,
        user_id: i64,
        csrf_token: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sessions (id_hash, user_id, csrf_token, created_at, expires_at, last_seen_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id_hash)
        .bind(user_id)
        .bind(csrf_token)
        .bind(now_ms())
        .bind(expires_at)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A live session (not expired, used within `idle`, user not disabled);
    /// finding it marks it used (written at most every `idle / 4`, or minute).
    pub async fn find_session(
        &self,
        id_hash: &str,
        idle: std::time::Duration,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let now = now_ms();
        let idle_ms = i64::try_from(idle.as_millis()).unwrap_or(i64::MAX);
        let row = sqlx::query(
            "SELECT u.id, u.email, u.plan, u.disabled, u.is_admin, u.created_at, s.csrf_token, s.expires_at, \
             s.last_seen_at FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.id_hash = $1 AND s.expires_at > $2 AND s.last_seen_at > $3 AND u.disabled = 0",
        )
        .bind(id_hash)
        .bind(now)
        .bind(now.saturating_sub(idle_ms))
        .fetch_optional(&self.pool)
        .await?;
        if let Some(r) = &row {
            let seen: i64 = r.try_get("last_seen_at")?;
            if now - seen > (idle_ms / 4).min(60_000) {
                sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE id_hash = $2")
                    .bind(now)
                    .bind(id_hash)
                    .execute(&self.pool)
                    .await?;
            }
        }
        row.map(|r| {
            Ok(SessionRecord {
                user: user_from_row(&r)?,
                csrf_token: r.try_get("csrf_token")?,
                expires_at: r.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    /// Deletes sessions that expired or went unused for `idle`; how many.
    pub async fn delete_stale_sessions(
        &self,
        idle: std::time::Duration,
    ) -> Result<u64, StoreError> {
        let now = now_ms();
        let idle_ms = i64::try_from(idle.as_millis()).unwrap_or(i64::MAX);
        let done = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1 OR last_seen_at <= $2")
            .bind(now)
            .bind(now.saturating_sub(idle_ms))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    pub async fn delete_session(&self, id_hash: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
