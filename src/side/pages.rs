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
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use tower_http::set_header::SetResponseHeaderLayer;

use super::caller::SessionUser;
use super::error::SideError;
use crate::auth::passwords::MIN_PASSWORD_LEN;
use crate::state::AppState;

mod account;
mod admin;
mod chart;
mod dashboard;
mod format;

use account::{billing, keys};
use admin::{admin_servers, admin_users};
use dashboard::dashboard;

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
        ],
        body,
    )
        .into_response()
}

/// The dashboard's pages and assets, with the headers every page carries: a
/// strict CSP (no inline script or style), no framing, no referrer to other
/// sites, and no caching (pages show account data and a CSRF token; assets set
/// their own cache header, which is kept).
pub fn routes() -> Router<Arc<AppState>> {
    let always = |name: HeaderName, value: &'static str| {
        SetResponseHeaderLayer::overriding(name, HeaderValue::from_static(value))
    };
    Router::new()
        .route("/", get(index))
        .route("/login", get(login))
        .route("/signup", get(signup))
        .route("/dashboard", get(dashboard))
        .route("/keys", get(keys))
        .route("/billing", get(billing))
        .route("/admin/servers", get(admin_servers))
        .route("/admin/users", get(admin_users))
        .route("/static/app.css", get(app_css))
        .route("/static/app.js", get(app_js))
        .layer(always(header::CONTENT_SECURITY_POLICY, CSP))
        .layer(always(header::X_FRAME_OPTIONS, "DENY"))
        .layer(always(header::REFERRER_POLICY, "same-origin"))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
}

/// `GET /static/app.css`
async fn app_css() -> Response {
    asset(APP_CSS, "text/css; charset=utf-8")
}

/// `GET /static/app.js`
async fn app_js() -> Response {
    asset(APP_JS, "text/javascript; charset=utf-8")
}

/// A rendered page (the security headers come from `routes`).
fn page(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(body) => {
            let mut resp = (status, body).into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
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
