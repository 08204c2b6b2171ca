//! `/api/auth/*`: sign up, log in, log out, who am I.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::caller::{secure_cookies, ApiJson, Client, SessionUser};
use super::error::SideError;
use crate::auth::passwords::{self, MAX_PASSWORD_LEN, MIN_PASSWORD_LEN};
use crate::auth::sessions::{clear_cookie, hash_session, random_token, set_cookie, SESSION_DAYS};
use crate::state::AppState;
use crate::store::{now_ms, UserRecord};

#[derive(Deserialize)]
pub struct Credentials {
    email: String,
    password: String,
}

#[derive(Serialize)]
pub struct Me {
    id: i64,
    email: String,
    plan: String,
    is_admin: bool,
    /// Echo this in `x-csrf-token` on every state-changing call made with the cookie.
    csrf_token: String,
}

fn normalize_email(email: &str) -> Result<String, SideError> {
    let email = email.trim().to_ascii_lowercase();
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.')
        })
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if valid {
        Ok(email)
    } else {
        Err(SideError::invalid(
            "`email` is not a valid email address",
            Some("email"),
        ))
    }
}

/// Starts a session for `user` and answers with its cookie and `Me`.
async fn start_session(
    state: &AppState,
    client: Client,
    user: UserRecord,
    status: StatusCode,
) -> Result<Response, SideError> {
    let token = random_token();
    let csrf = random_token();
    state
        .store
        .create_session(
            &hash_session(&token),
            user.id,
            &csrf,
            now_ms() + SESSION_DAYS * 86_400_000,
        )
        .await?;
    let me = Me {
        is_admin: user.is_admin,
        id: user.id,
        email: user.email,
        plan: user.plan,
        csrf_token: csrf,
    };
    Ok((
        status,
        [(
            header::SET_COOKIE,
            set_cookie(&token, secure_cookies(state, client)),
        )],
        Json(me),
    )
        .into_response())
}

/// `POST /api/auth/signup` `{email, password}` -> 201 with a session. For an
/// email that has an account it is a login (200, or the login's 401 and
/// throttle), so the answer never says "this address has an account".
pub async fn signup(
    State(state): State<Arc<AppState>>,
    client: Client,
    ApiJson(c): ApiJson<Credentials>,
) -> Result<Response, SideError> {
    // One snapshot for the whole sign-up (a reload mid-request changes nothing).
    let snapshot = state.snapshot();
    if !snapshot.config.accounts.allow_signup {
        return Err(SideError::PermissionDenied(
            "sign-up is closed on this gateway".into(),
        ));
    }
    let email = normalize_email(&c.email)?;
    let len = c.password.chars().count();
    if !(MIN_PASSWORD_LEN..=MAX_PASSWORD_LEN).contains(&len) {
        return Err(SideError::invalid(
            format!("`password` must have {MIN_PASSWORD_LEN} to {MAX_PASSWORD_LEN} characters"),
            Some("password"),
        ));
    }
    state
        .login_throttle
        .begin_signup(client.ip, snapshot.config.accounts.signups_per_ip_per_hour)
        .await
        .map_err(|retry_after| SideError::TooManySignups { retry_after })?;
    if state.store.find_user_by_email(&email).await?.is_some() {
        return log_in(&state, client, &email, c.password).await;
    }
    let plan = snapshot
        .config
        .default_plan
        .clone()
        .unwrap_or_else(|| "free".to_string());
    let hash = passwords::hash(c.password.clone())
        .await
        .map_err(|_| SideError::Busy)?;
    let Some(user) = state.store.create_account(&email, &hash, &plan).await? else {
        // Created meanwhile by a parallel sign-up: the same as above.
        return log_in(&state, client, &email, c.password).await;
    };
    tracing::info!(user_id = user.id, "account created");
    start_session(&state, client, user, StatusCode::CREATED).await
}

/// `POST /api/auth/login` `{email, password}` -> 200 with a session.
pub async fn login(
    State(state): State<Arc<AppState>>,
    client: Client,
    ApiJson(c): ApiJson<Credentials>,
) -> Result<Response, SideError> {
    let email = c.email.trim().to_ascii_lowercase();
    log_in(&state, client, &email, c.password).await
}

/// Counts the attempt (refused during a backoff), then verifies the password.
async fn log_in(
    state: &AppState,
    client: Client,
    email: &str,
    password: String,
) -> Result<Response, SideError> {
    let throttle = &state.login_throttle;
    throttle
        .begin_login(email, client.ip)
        .await
        .map_err(|retry_after| SideError::TooManyLogins { retry_after })?;
    let found = state.store.user_with_password(email).await?;
    let (user, stored) = match found {
        Some((user, Some(hash))) if !user.disabled => (Some(user), hash),
        // Same work for unknown accounts: no timing difference to probe emails with.
        _ => (None, passwords::decoy_hash().to_string()),
    };
    let verified = passwords::verify(password, stored).await;
    match user.filter(|_| matches!(verified, Ok(true))) {
        Some(user) => {
            throttle.succeeded(email, client.ip).await;
            start_session(state, client, user, StatusCode::OK).await
        }
        None => {
            throttle.failed(email, client.ip).await;
            Err(match verified {
                Err(_) => SideError::Busy,
                Ok(_) => SideError::InvalidCredentials,
            })
        }
    }
}

/// `POST /api/auth/logout`: ends the session (CSRF-checked) and clears the cookie.
pub async fn logout(
    State(state): State<Arc<AppState>>,
    s: SessionUser,
    client: Client,
) -> Result<Response, SideError> {
    state.store.delete_session(&s.id_hash).await?;
    Ok((
        StatusCode::NO_CONTENT,
        [(
            header::SET_COOKIE,
            clear_cookie(secure_cookies(&state, client)),
        )],
    )
        .into_response())
}

/// `GET /api/auth/me`: the signed-in user and the session's CSRF token.
pub async fn me(s: SessionUser) -> Json<Me> {
    Json(Me {
        id: s.user.id,
        email: s.user.email,
        plan: s.user.plan,
        is_admin: s.is_admin,
        csrf_token: s.csrf_token,
    })
}
