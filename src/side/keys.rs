//! `/api/keys`: a signed-in user's API keys. The secret is returned once, at
//! creation or rotation; lists show only its prefix and last 4 characters.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::caller::{ApiJson, SessionUser};
use super::error::SideError;
use crate::auth::keys::{issue, KeySpec};
use crate::config::LimitSettings;
use crate::state::AppState;
use crate::store::{now_ms, KeyRecord};

#[derive(Serialize)]
pub struct KeyView {
    id: i64,
    name: String,
    /// `bm_AbCd...WxYz`: enough to recognise a key, useless to use it.
    display: String,
    models: Option<Vec<String>>,
    rpm: Option<i64>,
    tpm: Option<i64>,
    concurrency: Option<i64>,
    created_at: i64,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
    status: &'static str,
}

impl From<KeyRecord> for KeyView {
    fn from(k: KeyRecord) -> Self {
        let status = k.status(now_ms());
        Self {
            id: k.id,
            display: format!("{}...{}", k.key_prefix, k.key_last4),
            name: k.name,
            models: k.models,
            rpm: k.rpm,
            tpm: k.tpm,
            concurrency: k.concurrency,
            created_at: k.created_at,
            expires_at: k.expires_at,
            revoked_at: k.revoked_at,
            status,
        }
    }
}

#[derive(Serialize)]
pub struct CreatedKey {
    /// The secret: shown this once, never stored.
    key: String,
    #[serde(flatten)]
    info: KeyView,
}

#[derive(Serialize)]
pub struct KeyList {
    object: &'static str,
    data: Vec<KeyView>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKeyRequest {
    name: String,
    #[serde(default)]
    expires_in_days: Option<u32>,
    #[serde(default)]
    models: Option<Vec<String>>,
    #[serde(default)]
    rpm: Option<u64>,
    #[serde(default)]
    tpm: Option<u64>,
    #[serde(default)]
    concurrency: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    /// How long the old key keeps working (default `admin.key_rotation_grace_secs`).
    #[serde(default)]
    grace_seconds: Option<u64>,
}

/// `GET /api/keys`
pub async fn list(
    State(state): State<Arc<AppState>>,
    s: SessionUser,
) -> Result<Json<KeyList>, SideError> {
    let keys = state.store.keys_of_user(s.user.id).await?;
    Ok(Json(KeyList {
        object: "list",
        data: keys.into_iter().map(KeyView::from).collect(),
    }))
}

fn validate(req: &NewKeyRequest) -> Result<(), SideError> {
    let name = req.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(SideError::invalid(
            "`name` must have 1 to 100 characters",
            Some("name"),
        ));
    }
    if req.expires_in_days == Some(0) {
        return Err(SideError::invalid(
            "`expires_in_days` must be at least 1",
            Some("expires_in_days"),
        ));
    }
    if let Some(models) = &req.models {
        if models.is_empty() || models.iter().any(|m| m.trim().is_empty()) {
            return Err(SideError::invalid(
                "`models` must list model names (leave it out to allow every model)",
                Some("models"),
            ));
        }
    }
    for (value, param) in [
        (req.rpm, "rpm"),
        (req.tpm, "tpm"),
        (req.concurrency, "concurrency"),
    ] {
        if value == Some(0) {
            return Err(SideError::invalid(
                format!("`{param}` must be at least 1 (leave it out for the plan's limit)"),
                Some(param),
            ));
        }
    }
    Ok(())
}

/// `POST /api/keys` -> 201 with the secret.
pub async fn create(
    State(state): State<Arc<AppState>>,
    s: SessionUser,
    ApiJson(req): ApiJson<NewKeyRequest>,
) -> Result<(StatusCode, Json<CreatedKey>), SideError> {
    validate(&req)?;
    let (secret, record) = issue(
        &state.store,
        KeySpec {
            name: req.name.trim(),
            user_id: Some(s.user.id),
            models: req.models.as_deref(),
            expires_at: req
                .expires_in_days
                .map(|d| now_ms() + i64::from(d) * 86_400_000),
            limits: LimitSettings {
                rpm: req.rpm,
                tpm: req.tpm,
                concurrency: req.concurrency,
            },
        },
    )
    .await?;
    Ok(created(secret, record))
}

/// The one answer that shows a key's secret.
fn created(secret: String, record: KeyRecord) -> (StatusCode, Json<CreatedKey>) {
    (
        StatusCode::CREATED,
        Json(CreatedKey {
            key: secret,
            info: record.into(),
        }),
    )
}

/// `POST /api/keys/{id}/rotate`: a new key with the same settings; the old one
/// keeps working for the grace period, then expires.
pub async fn rotate(
    State(state): State<Arc<AppState>>,
    Path(id): Path<i64>,
    s: SessionUser,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<CreatedKey>), SideError> {
    // The body is optional: no body means the default grace period.
    let req: RotateRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RotateRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| SideError::invalid(format!("bad JSON body: {e}"), None))?
    };
    let (old, old_hash) = state
        .store
        .key_of_user(id, s.user.id)
        .await?
        .filter(|(k, _)| k.revoked_at.is_none())
        .ok_or_else(|| SideError::NotFound(format!("no active key with id {id}")))?;
    let accounts = &state.snapshot().config.accounts;
    let max = accounts.max_key_rotation_grace_secs;
    let grace = req
        .grace_seconds
        .unwrap_or(accounts.key_rotation_grace_secs.min(max));
    if grace > max {
        return Err(SideError::invalid(
            format!("`grace_seconds` may be at most {max} on this gateway"),
            Some("grace_seconds"),
        ));
    }
    let positive = |v: Option<i64>| v.map(|n| n as u64);
    let (secret, record) = issue(
        &state.store,
        KeySpec {
            name: &old.name,
            user_id: Some(s.user.id),
            models: old.models.as_deref(),
            expires_at: old.expires_at,
            limits: LimitSettings {
                rpm: positive(old.rpm),
                tpm: positive(old.tpm),
                concurrency: positive(old.concurrency),
            },
        },
    )
    .await?;
    let until =
        now_ms().saturating_add(i64::try_from(grace.saturating_mul(1000)).unwrap_or(i64::MAX));
    state.store.expire_key(id, until).await?;
    // The cached copy still has the old expiry.
    state.keys.invalidate_hex(&old_hash).await;
    Ok(created(secret, record))
}

/// `DELETE /api/keys/{id}`: revoked at once, on the proxy too.
pub async fn revoke(
    State(state): State<Arc<AppState>>,
    Path(id): Path<i64>,
    s: SessionUser,
) -> Result<StatusCode, SideError> {
    let found = state.store.key_of_user(id, s.user.id).await?;
    if found.as_ref().is_none_or(|(k, _)| k.revoked_at.is_some()) {
        return Err(SideError::NotFound(format!("no active key with id {id}")));
    }
    let hash = state.store.revoke_key(id).await?;
    state.keys.invalidate_hex(&hash).await;
    Ok(StatusCode::NO_CONTENT)
}
