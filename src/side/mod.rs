//! The side app (axum, its own listener): the dashboard pages, accounts, keys,
//! usage, billing (and Creem's webhook) and admin APIs, health, readiness and
//! metrics (or, with `server.metrics_listen`, metrics on a listener of their
//! own). `serve` is the connection loop of both.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{delete, get, post, put};
use axum::Router;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::state::AppState;
use error::SideError;

mod accounts;
mod admin;
mod billing;
mod caller;
pub mod error;
mod keys;
mod pages;
pub mod serve;
mod usage;

pub fn router(state: Arc<AppState>) -> Router {
    let mut app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    if state.boot.metrics_listen.is_none() {
        app = app.route("/metrics", get(metrics));
    }
    let app = app
        .route("/api/usage/daily", get(usage::daily))
        .route("/api/usage/models", get(usage::by_model))
        .route("/api/usage/requests", get(usage::requests))
        .route("/api/auth/signup", post(accounts::signup))
        .route("/api/auth/login", post(accounts::login))
        .route("/api/auth/logout", post(accounts::logout))
        .route("/api/auth/me", get(accounts::me))
        .route("/api/keys", get(keys::list).post(keys::create))
        .route("/api/keys/{id}", delete(keys::revoke))
        .route("/api/keys/{id}/rotate", post(keys::rotate))
        .route(
            "/api/admin/servers",
            get(admin::servers).post(admin::add_server),
        )
        .route(
            "/api/admin/servers/{id}",
            put(admin::update_server).delete(admin::delete_server),
        )
        .route("/api/admin/health", get(admin::health))
        .route("/api/admin/users", get(admin::users))
        .route("/api/admin/users/{id}/disable", post(admin::disable_user))
        .route("/api/admin/users/{id}/enable", post(admin::enable_user))
        .merge(pages::routes())
        .merge(billing::routes())
        .fallback(not_found);
    let tls = state.boot.tls.is_some();
    with_common_layers(app, &state, tls).with_state(state)
}

/// `/metrics` alone, for `server.metrics_listen`.
pub fn metrics_router(state: Arc<AppState>) -> Router {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .fallback(not_found);
    // Plain HTTP: no HSTS there.
    with_common_layers(app, &state, false).with_state(state)
}

fn with_common_layers(
    app: Router<Arc<AppState>>,
    state: &AppState,
    tls: bool,
) -> Router<Arc<AppState>> {
    let mut app = app
        .layer(axum::middleware::from_fn_with_state(
            state.boot.side.request_timeout,
            deadline,
        ))
        // Every answer, JSON or HTML, is what its content type says.
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ));
    if tls {
        // Browsers that saw this once refuse plain HTTP to the host for a year.
        app = app.layer(SetResponseHeaderLayer::overriding(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        ));
    }
    app
}

/// The whole request, its body included, gets `server.side_request_timeout_secs`.
async fn deadline(
    State(limit): State<std::time::Duration>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => SideError::RequestTimeout(limit.as_secs()).into_response(),
    }
}

async fn not_found(method: axum::http::Method, uri: axum::http::Uri) -> SideError {
    SideError::UnknownUrl {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
}

/// Liveness: the process answers.
async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: not shutting down, the database answers and at least one backend
/// is in rotation.
/// Readiness is public (load balancers probe it): the raw error, which can
/// name hosts, users and databases, goes to the log only.
fn database_unready(e: &crate::store::StoreError) -> (StatusCode, String) {
    tracing::warn!(error = %e, "readiness: the database does not answer");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "database unavailable".to_string(),
    )
}

async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    if state.draining.load(std::sync::atomic::Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down".to_string());
    }
    if let Err(e) = state.store.ping().await {
        return database_unready(&e);
    }
    let upstreams = state.snapshot().upstreams.clone();
    let any_healthy = upstreams
        .pools()
        .iter()
        .any(|p| p.backends().any(|b| p.is_healthy(b)));
    if !upstreams.pools().is_empty() && !any_healthy {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "no healthy upstream backend".to_string(),
        );
    }
    (StatusCode::OK, "ready".to_string())
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn readiness_does_not_show_the_database_error() {
        let e = crate::store::StoreError::NotFound(
            "error connecting to postgres://gw:hunter2@db.internal:5432/gateway".into(),
        );
        let (status, body) = super::database_unready(&e);
        assert_eq!(status, 503);
        assert_eq!(body, "database unavailable");
    }
}
