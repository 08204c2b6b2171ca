//! The dashboard: server-rendered pages (askama templates in `admin/templates`)
//! over the same store calls as the JSON API, plus the stylesheet and script
//! they load. Pages only read; every change goes through the JSON API from
//! `admin/static/app.js`, with the session's CSRF token (from the page's
//! `<meta name="csrf-token">`).
//!
//! This module holds what every page shares (layout chrome, security headers,
//! who is signed in); the pages themselves are in `dashboard`, `account`
//! (keys, billing) and `admin`.
//!
//! Pages send a strict Content-Security-Policy: no inline script or style, so
//! all behaviour lives in app.js and all styling in app.css (the inline SVG
//! chart uses classes and presentation attributes only).

use std::sync::{Arc, OnceLock};

use askama::Template;
use axum::extract::{FromRequestParts, OptionalFromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use super::caller::SessionUser;
use super::error::SideError;
use crate::auth::passwords::MIN_PASSWORD_LEN;
use crate::state::AppState;

mod account;
mod admin;
mod chart;
mod dashboard;
mod format;

pub use account::{billing, keys};
pub use admin::{admin_servers, admin_users};
pub use dashboard::dashboard;

pub const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'";

const APP_CSS: &str = include_str!("../../admin/static/app.css");
const APP_JS: &str = include_str!("../../admin/static/app.js");

/// A short hash of the assets, appended to their URLs so a new build is fetched
/// at once despite the cache header.
fn asset_version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        use sha2::{Digest, Sha256};
        let digest = Sha256::new()
            .chain_update(APP_CSS)
            .chain_update(APP_JS)
            .finalize();
        hex::encode(&digest[..6])
    })
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=86400"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// `GET /static/app.css`
pub async fn app_css() -> Response {
    asset(APP_CSS, "text/css; charset=utf-8")
}

/// `GET /static/app.js`
pub async fn app_js() -> Response {
    asset(APP_JS, "text/javascript; charset=utf-8")
}

/// A rendered page with the security headers every page carries.
fn page(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(body) => {
            let mut resp = (status, body).into_response();
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            );
            h.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
            h.insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("same-origin"),
            );
            // Pages show account data and a CSRF token: never cache them.
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        Err(e) => {
            tracing::error!(error = %e, "page template failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "page rendering failed").into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "error.html", config = "admin/askama.toml")]
struct ErrorPage {
    version: &'static str,
    status: u16,
    title: &'static str,
    message: String,
}

fn error_page(status: StatusCode, title: &'static str, message: impl Into<String>) -> Response {
    page(
        status,
        &ErrorPage {
            version: asset_version(),
            status: status.as_u16(),
            title,
            message: message.into(),
        },
    )
}

/// A failure as a page; the store's errors were logged when they became `SideError`s.
fn unavailable(e: impl Into<SideError>) -> Response {
    match e.into() {
        SideError::DatabaseUnavailable => error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Temporarily unavailable",
            "The gateway's database did not answer. Try again in a moment.",
        ),
        other => other.into_response(),
    }
}

fn initial(email: &str) -> String {
    email
        .chars()
        .next()
        .map(|c| c.to_uppercase().to_string())
        .unwrap_or_default()
}

/// What the layout shows on every signed-in page.
struct Chrome {
    email: String,
    plan: String,
    initial: String,
    is_admin: bool,
    csrf: String,
    /// Which sidebar link is current.
    nav: &'static str,
    version: &'static str,
}

impl Chrome {
    fn new(s: &SessionUser, nav: &'static str) -> Self {
        Self {
            email: s.user.email.clone(),
            plan: s.user.plan.clone(),
            initial: initial(&s.user.email),
            is_admin: s.is_admin,
            csrf: s.csrf_token.clone(),
            nav,
            version: asset_version(),
        }
    }
}

/// A page's signed-in user; signed out, the browser is sent to /login.
pub struct PageUser(SessionUser);

impl FromRequestParts<Arc<AppState>> for PageUser {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Response> {
        match <SessionUser as OptionalFromRequestParts<_>>::from_request_parts(parts, state).await {
            Ok(Some(s)) => Ok(Self(s)),
            Ok(None) => Err(Redirect::to("/login").into_response()),
            Err(e) => Err(unavailable(e)),
        }
    }
}

#[derive(Template)]
#[template(path = "forbidden.html", config = "admin/askama.toml")]
struct Forbidden {
    chrome: Chrome,
}

/// A signed-in admin; other users get a 403 page, the signed-out /login.
pub struct PageAdmin(SessionUser);

impl FromRequestParts<Arc<AppState>> for PageAdmin {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Response> {
        let PageUser(s) = PageUser::from_request_parts(parts, state).await?;
        if s.is_admin {
            Ok(Self(s))
        } else {
            // The sidebar marks the current admin page only for admins, so the
            // 403 page needs no `nav`.
            let chrome = Chrome::new(&s, "");
            Err(page(StatusCode::FORBIDDEN, &Forbidden { chrome }))
        }
    }
}

/// `GET /`
pub async fn index(_: PageUser) -> Redirect {
    Redirect::to("/dashboard")
}

#[derive(Template)]
#[template(path = "auth.html", config = "admin/askama.toml")]
struct AuthPage {
    version: &'static str,
    signup: bool,
    signup_open: bool,
    min_password: usize,
}

/// `signed_in`: the request's session, if any (a database failure shows the form).
fn auth_page(
    state: &AppState,
    signed_in: Result<Option<SessionUser>, SideError>,
    signup: bool,
) -> Response {
    // Already signed in: nothing to do here.
    if let Ok(Some(_)) = signed_in {
        return Redirect::to("/dashboard").into_response();
    }
    page(
        StatusCode::OK,
        &AuthPage {
            version: asset_version(),
            signup,
            signup_open: state.snapshot().config.accounts.allow_signup,
            min_password: MIN_PASSWORD_LEN,
        },
    )
}

/// `GET /login`
pub async fn login(
    State(state): State<Arc<AppState>>,
    signed_in: Result<Option<SessionUser>, SideError>,
) -> Response {
    auth_page(&state, signed_in, false)
}

/// `GET /signup`
pub async fn signup(
    State(state): State<Arc<AppState>>,
    signed_in: Result<Option<SessionUser>, SideError>,
) -> Response {
    auth_page(&state, signed_in, true)
}
