//! The side app (axum, its own listener): health, readiness and metrics for now;
//! the dashboard, accounts, keys, billing and admin API grow here.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::state::AppState;

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
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
