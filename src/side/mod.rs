//! The side app (axum, its own listener): health, readiness, metrics and the usage
//! API; the dashboard, accounts, keys, billing and admin API grow here.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::error::GatewayError;
use crate::state::AppState;

mod caller;
mod usage;

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/usage/daily", get(usage::daily))
        .route("/api/usage/models", get(usage::by_model))
        .route("/api/usage/requests", get(usage::requests))
        .fallback(not_found)
        .with_state(state)
}

async fn not_found(method: axum::http::Method, uri: axum::http::Uri) -> GatewayError {
    GatewayError::UnknownUrl {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
}

/// Liveness: the process answers.
async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: the database answers and at least one backend is in rotation.
async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    if let Err(e) = state.store.ping().await {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("database: {e}"));
    }
    let upstreams = &state.upstreams;
    let any_healthy = upstreams
        .pools()
        .iter()
        .flat_map(|p| p.backends())
        .any(|b| upstreams.is_healthy(b));
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
