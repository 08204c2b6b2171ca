//! Who may call a side-app handler, as extractors: a handler's signature says it.
//! `SessionUser` is a dashboard user (session cookie), `Admin` the admin token or
//! an admin's session, `Caller` anyone with a session, a key or the admin token.
//! State-changing calls made with a cookie must carry the session's CSRF token in
//! `x-csrf-token` (a cross-site form cannot set headers).

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{
    ConnectInfo, FromRequest, FromRequestParts, OptionalFromRequestParts, Request,
};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::SideError;
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

/// A live dashboard session; extracting it checks CSRF on state-changing methods.
/// As `Option<SessionUser>`, a request without a live session gives `None`.
pub struct SessionUser {
    pub user: UserRecord,
    pub csrf_token: String,
    pub id_hash: String,
    pub is_admin: bool,
}

/// The admin token, or an admin's session (CSRF-checked like any session).
pub struct Admin;

/// Where the request comes from, as `server.trusted_proxies` reads it: the
/// client's address and whether it reached the gateway (or the trusted proxy
/// in front) over HTTPS.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    pub ip: std::net::IpAddr,
    pub https: bool,
}

/// Whether session cookies are `Secure` (and `__Host-` named) for `client`.
pub fn secure_cookies(state: &AppState, client: Client) -> bool {
    client.https || state.snapshot().config.accounts.secure_cookies
}

impl Client {
    pub fn of(state: &AppState, parts: &Parts) -> Self {
        let peer = parts
            .extensions
            .get::<ConnectInfo<std::net::SocketAddr>>()
            .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
        let trusted = &state.boot.trusted_proxies;
        let own = if state.boot.tls.is_some() {
            "https"
        } else {
            "http"
        };
        Self {
            ip: trusted.client_ip(peer, &parts.headers),
            https: trusted
                .forwarded_proto(peer, &parts.headers, own)
                .eq_ignore_ascii_case("https"),
        }
    }
}

impl FromRequestParts<Arc<AppState>> for Client {
    type Rejection = SideError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, SideError> {
        Ok(Self::of(state, parts))
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
}

/// Compares secrets without leaking, through timing, how much of a guess was right.
fn secrets_match(a: &[u8], b: &[u8]) -> bool {
    // Equal-length digests keep the comparison independent of the lengths too.
    bool::from(Sha256::digest(a).ct_eq(&Sha256::digest(b)))
}

/// The session behind the request's cookie, if it is live; no CSRF check.
async fn live_session(state: &AppState, parts: &Parts) -> Result<Option<SessionUser>, SideError> {
    let secure = secure_cookies(state, Client::of(state, parts));
    let Some(token) = parts
        .headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|c| session_cookie(c, secure))
    else {
        return Ok(None);
    };
    let id_hash = hash_session(token);
    let idle = state.snapshot().config.accounts.session_idle;
    let found = state.store.find_session(&id_hash, idle).await?;
    Ok(found.map(|s| SessionUser {
        is_admin: s.user.is_admin,
        user: s.user,
        csrf_token: s.csrf_token,
        id_hash,
    }))
}

fn check_csrf(s: &SessionUser, parts: &Parts) -> Result<(), SideError> {
    if parts.method == Method::GET || parts.method == Method::HEAD {
        return Ok(());
    }
    let sent = parts
        .headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if secrets_match(sent.as_bytes(), s.csrf_token.as_bytes()) {
        Ok(())
    } else {
        Err(SideError::PermissionDenied(
            "missing or wrong x-csrf-token header (GET /api/auth/me returns it)".into(),
        ))
    }
}

/// The caller before any CSRF check: `Admin` decides whether a session may act
/// before it looks at the token, so a non-admin is told that first.
async fn identify(state: &AppState, parts: &Parts) -> Result<Caller, SideError> {
    if let Some(token) = bearer(&parts.headers) {
        if let Some(admin) = &state.admin_token {
            if secrets_match(admin.as_bytes(), token.as_bytes()) {
                return Ok(Caller::Admin);
            }
        }
        return match state
            .keys
            .authenticate(token, Some(Client::of(state, parts).ip))
            .await
        {
            Ok(key) => Ok(Caller::Key(key)),
            Err(GatewayError::InvalidApiKey(shown)) => Err(SideError::InvalidApiKey(shown)),
            Err(GatewayError::TooManyInvalidKeys { retry_after }) => {
                Err(SideError::TooManyInvalidKeys { retry_after })
            }
            // `authenticate` has logged the cause.
            Err(GatewayError::KeyStoreUnavailable) => Err(SideError::DatabaseUnavailable),
            Err(other) => {
                tracing::error!(error = %other, "unexpected key check failure");
                Err(SideError::Internal)
            }
        };
    }
    match live_session(state, parts).await? {
        Some(s) => Ok(Caller::Session(s)),
        None => Err(SideError::NotSignedIn),
    }
}

impl OptionalFromRequestParts<Arc<AppState>> for SessionUser {
    type Rejection = SideError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Option<Self>, SideError> {
        let found = live_session(state, parts).await?;
        if let Some(s) = &found {
            check_csrf(s, parts)?;
        }
        Ok(found)
    }
}

impl FromRequestParts<Arc<AppState>> for SessionUser {
    type Rejection = SideError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, SideError> {
        <Self as OptionalFromRequestParts<_>>::from_request_parts(parts, state)
            .await?
            .ok_or(SideError::NotSignedIn)
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = SideError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, SideError> {
        let caller = identify(state, parts).await?;
        if let Caller::Session(s) = &caller {
            check_csrf(s, parts)?;
        }
        Ok(caller)
    }
}

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = SideError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, SideError> {
        match identify(state, parts).await? {
            Caller::Admin => Ok(Admin),
            Caller::Session(s) if s.is_admin => check_csrf(&s, parts).map(|()| Admin),
            _ => Err(SideError::PermissionDenied(
                "this needs an admin (an account the operator made admin, or the admin token)"
                    .into(),
            )),
        }
    }
}

/// `axum::Json`, with its rejections in OpenAI's error shape.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    axum::Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = SideError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        axum::Json::<T>::from_request(req, state)
            .await
            .map(|axum::Json(v)| ApiJson(v))
            .map_err(|e| SideError::invalid(e.body_text(), None))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_match_only_when_equal() {
        assert!(super::secrets_match(b"abc", b"abc"));
        assert!(!super::secrets_match(b"abc", b"abd"));
        assert!(!super::secrets_match(b"abc", b"abcd"));
        assert!(!super::secrets_match(b"", b"a"));
    }
}
