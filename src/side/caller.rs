//! Who is calling the side app: the admin (token from config), the owner of an
//! API key (bearer), or a dashboard user (session cookie). State-changing calls
//! made with a cookie must carry the session's CSRF token in `x-csrf-token`.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, Method};

use crate::auth::sessions::{hash_session, session_cookie};
use crate::auth::ApiKey;
use crate::error::GatewayError;
use crate::state::AppState;
use crate::store::UserRecord;

pub enum Caller {
    Admin,
    Key(Arc<ApiKey>),
    Session(SessionUser),
}

pub struct SessionUser {
    pub user: UserRecord,
    pub csrf_token: String,
    pub id_hash: String,
    pub is_admin: bool,
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
}

fn db_error(e: impl std::fmt::Display) -> GatewayError {
    tracing::error!(error = %e, "side app database error");
    GatewayError::KeyStoreUnavailable
}

/// The dashboard session behind the request's cookie, if it is live.
pub async fn session(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<SessionUser>, GatewayError> {
    let Some(token) = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(session_cookie)
    else {
        return Ok(None);
    };
    let id_hash = hash_session(token);
    let found = state.store.find_session(&id_hash).await.map_err(db_error)?;
    Ok(found.map(|s| SessionUser {
        is_admin: state
            .snapshot()
            .config
            .accounts
            .is_admin_email(&s.user.email),
        user: s.user,
        csrf_token: s.csrf_token,
        id_hash,
    }))
}

pub async fn caller(state: &AppState, headers: &HeaderMap) -> Result<Caller, GatewayError> {
    if let Some(token) = bearer(headers) {
        if let Some(admin) = &state.admin_token {
            if constant_time_eq(admin.as_bytes(), token.as_bytes()) {
                return Ok(Caller::Admin);
            }
        }
        return Ok(Caller::Key(state.keys.authenticate(token).await?));
    }
    match session(state, headers).await? {
        Some(s) => Ok(Caller::Session(s)),
        None => Err(GatewayError::NotSignedIn),
    }
}

/// A signed-in dashboard user; for anything but GET the CSRF token must match.
pub async fn require_session(
    state: &AppState,
    headers: &HeaderMap,
    method: &Method,
) -> Result<SessionUser, GatewayError> {
    let s = session(state, headers)
        .await?
        .ok_or(GatewayError::NotSignedIn)?;
    check_csrf(&s, headers, method)?;
    Ok(s)
}

/// The admin token, or an admin's session (with its CSRF token for changes).
pub async fn require_admin(
    state: &AppState,
    headers: &HeaderMap,
    method: &Method,
) -> Result<(), GatewayError> {
    match caller(state, headers).await? {
        Caller::Admin => Ok(()),
        Caller::Session(s) if s.is_admin => check_csrf(&s, headers, method),
        _ => Err(GatewayError::PermissionDenied(
            "this needs an admin (an email listed in admin_emails, or the admin token)".into(),
        )),
    }
}

fn check_csrf(s: &SessionUser, headers: &HeaderMap, method: &Method) -> Result<(), GatewayError> {
    if method == Method::GET || method == Method::HEAD {
        return Ok(());
    }
    let sent = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if constant_time_eq(sent.as_bytes(), s.csrf_token.as_bytes()) {
        Ok(())
    } else {
        Err(GatewayError::PermissionDenied(
            "missing or wrong x-csrf-token header (GET /api/auth/me returns it)".into(),
        ))
    }
}

/// Compares secrets without leaking, through timing, how much of a guess was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    // Equal-length digests make the comparison length-independent too.
    let (da, db) = (Sha256::digest(a), Sha256::digest(b));
    da.iter()
        .zip(db.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// `axum::Json`, with its rejections in OpenAI's error shape.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    axum::Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = GatewayError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        axum::Json::<T>::from_request(req, state)
            .await
            .map(|axum::Json(v)| ApiJson(v))
            .map_err(|e| GatewayError::invalid(e.body_text(), None))
    }
}
