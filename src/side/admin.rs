//! `/api/admin/*`: upstream servers (stored, merged with the YAML pools and
//! applied without a restart), backend health, users. Admin session or token.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::caller::{Admin, ApiJson};
use super::error::SideError;
use crate::config::BackendUrl;
use crate::limits::quota::period_start;
use crate::state::AppState;
use crate::store::{now_ms, NewServer, ServerRecord, UserRecord};
use crate::upstream::discovery::AddressState;
use crate::upstream::policy;

#[derive(Serialize)]
pub struct List<T> {
    object: &'static str,
    data: Vec<T>,
}

fn list<T>(data: Vec<T>) -> Json<List<T>> {
    Json(List {
        object: "list",
        data,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerRequest {
    pool: String,
    url: String,
    models: Vec<String>,
    #[serde(default = "one")]
    weight: i64,
    #[serde(default)]
    priority: i64,
    #[serde(default)]
    api_key_env: Option<String>,
}

fn one() -> i64 {
    1
}

fn validate_server(r: &ServerRequest) -> Result<(), SideError> {
    if r.pool.trim().is_empty() {
        return Err(SideError::invalid("`pool` must not be empty", Some("pool")));
    }
    BackendUrl::parse(&r.url).map_err(|m| SideError::invalid(m, Some("url")))?;
    if r.models.is_empty() || r.models.iter().any(|m| m.trim().is_empty()) {
        return Err(SideError::invalid(
            "`models` must list at least one model",
            Some("models"),
        ));
    }
    if !(1..=1000).contains(&r.weight) {
        return Err(SideError::invalid(
            "`weight` must be between 1 and 1000",
            Some("weight"),
        ));
    }
    if !(0..=1000).contains(&r.priority) {
        return Err(SideError::invalid(
            "`priority` must be between 0 and 1000",
            Some("priority"),
        ));
    }
    if let Some(var) = &r.api_key_env {
        if std::env::var(var).map(|v| v.is_empty()).unwrap_or(true) {
            return Err(SideError::invalid(
                format!("environment variable `{var}` is not set on the gateway"),
                Some("api_key_env"),
            ));
        }
    }
    Ok(())
}

/// `admin_servers` (see `upstream::policy`): which key variable the server may
/// name and which addresses its host may resolve to.
async fn check_policy(state: &AppState, r: &ServerRequest) -> Result<(), SideError> {
    let snapshot = state.snapshot();
    let policy = &snapshot.config.admin_servers;
    let url = BackendUrl::parse(r.url.trim()).map_err(|m| SideError::invalid(m, Some("url")))?;
    // The resolver the proxy dials with, so the addresses checked are the ones used.
    let resolver = snapshot.upstreams.resolver();
    let lookup = resolver.lookup(&url.host);
    let addrs: Vec<std::net::SocketAddr> =
        match tokio::time::timeout(std::time::Duration::from_secs(5), lookup).await {
            Ok(Ok(found)) => found
                .ips
                .iter()
                .map(|ip| std::net::SocketAddr::new(*ip, url.port))
                .collect(),
            Ok(Err(e)) => {
                return Err(SideError::invalid(
                    format!("cannot resolve `{}`: {e}", url.host),
                    Some("url"),
                ))
            }
            Err(_) => {
                return Err(SideError::invalid(
                    format!("resolving `{}` timed out", url.host),
                    Some("url"),
                ))
            }
        };
    policy::check_server(policy, &url, r.api_key_env.as_deref(), &addrs)
        .map_err(|refused| SideError::invalid(refused.message, Some(refused.param)))
}

impl<'a> From<&'a ServerRequest> for NewServer<'a> {
    fn from(r: &'a ServerRequest) -> Self {
        NewServer {
            pool: r.pool.trim(),
            url: r.url.trim(),
            models: &r.models,
            weight: r.weight,
            priority: r.priority,
            api_key_env: r.api_key_env.as_deref(),
        }
    }
}

/// Applies the stored servers; when the new pools cannot be built (say, a host
/// that does not resolve) `undo` restores the previous row and the error is returned.
async fn apply<F, Fut>(state: &AppState, undo: F) -> Result<(), SideError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    if let Err(e) = state.reload_upstreams().await {
        undo().await;
        return Err(SideError::invalid(
            format!("the server cannot be used: {e}"),
            Some("url"),
        ));
    }
    Ok(())
}

/// `GET /api/admin/servers`: servers added through this API (YAML pools are in the config).
pub async fn servers(
    State(state): State<Arc<AppState>>,
    _: Admin,
) -> Result<Json<List<ServerRecord>>, SideError> {
    Ok(list(state.store.list_servers().await?))
}

/// `POST /api/admin/servers` -> 201; takes effect on the proxy at once.
pub async fn add_server(
    State(state): State<Arc<AppState>>,
    _: Admin,
    ApiJson(req): ApiJson<ServerRequest>,
) -> Result<(StatusCode, Json<ServerRecord>), SideError> {
    validate_server(&req)?;
    check_policy(&state, &req).await?;
    let created = state.store.insert_server(&(&req).into()).await?;
    let id = created.id;
    apply(&state, || async {
        let _ = state.store.delete_server(id).await;
    })
    .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// `PUT /api/admin/servers/{id}`
pub async fn update_server(
    State(state): State<Arc<AppState>>,
    Path(id): Path<i64>,
    _: Admin,
    ApiJson(req): ApiJson<ServerRequest>,
) -> Result<Json<ServerRecord>, SideError> {
    validate_server(&req)?;
    check_policy(&state, &req).await?;
    let before = state
        .store
        .list_servers()
        .await?
        .into_iter()
        .find(|s| s.id == id)
        .ok_or_else(|| SideError::NotFound(format!("no server with id {id}")))?;
    let updated = state.store.update_server(id, &(&req).into()).await?;
    apply(&state, || async {
        let restore = NewServer {
            pool: &before.pool,
            url: &before.url,
            models: &before.models,
            weight: before.weight,
            priority: before.priority,
            api_key_env: before.api_key_env.as_deref(),
        };
        let _ = state.store.update_server(id, &restore).await;
    })
    .await?;
    Ok(Json(updated))
}

/// `DELETE /api/admin/servers/{id}` -> 204
pub async fn delete_server(
    State(state): State<Arc<AppState>>,
    Path(id): Path<i64>,
    _: Admin,
) -> Result<StatusCode, SideError> {
    state.store.delete_server(id).await?;
    state
        .reload_upstreams()
        .await
        .map_err(|e| SideError::invalid(format!("cannot rebuild the pools: {e}"), None))?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize)]
pub struct BackendHealth {
    url: String,
    priority: u32,
    healthy: bool,
    ejected: bool,
    /// `healthy`, `unhealthy`, `resolving`, `unresolved`, `address_refused` or `key_refused`.
    state: crate::upstream::BackendState,
    /// With `key_refused`: the provider's status (401 or 403).
    #[serde(skip_serializing_if = "Option::is_none")]
    key_refused_status: Option<u16>,
    /// What the host name resolves to now (new connections go to these).
    addresses: Vec<String>,
    /// Why the last lookup of the host name failed (or was refused).
    #[serde(skip_serializing_if = "Option::is_none")]
    dns_error: Option<String>,
}

#[derive(Serialize)]
pub struct PoolHealth {
    name: String,
    backends: Vec<BackendHealth>,
}

/// `GET /api/admin/health`: every backend of every pool, as the proxy sees it now.
pub async fn health(
    State(state): State<Arc<AppState>>,
    _: Admin,
) -> Result<Json<List<PoolHealth>>, SideError> {
    let upstreams = state.snapshot().upstreams.clone();
    Ok(list(
        upstreams
            .pools()
            .iter()
            .map(|p| PoolHealth {
                name: p.name.clone(),
                backends: p
                    .backends()
                    .map(|b| {
                        let addresses = b.addresses();
                        BackendHealth {
                            url: b.display.clone(),
                            priority: b.priority,
                            healthy: p.is_healthy(b),
                            ejected: p.is_ejected(b),
                            state: p.state(b),
                            key_refused_status: b.key_refused(),
                            addresses: addresses.addrs.iter().map(|a| a.to_string()).collect(),
                            dns_error: match &addresses.state {
                                AddressState::Unresolved(e)
                                | AddressState::Stale(e)
                                | AddressState::Refused(e) => Some(e.clone()),
                                _ => None,
                            },
                        }
                    })
                    .collect(),
            })
            .collect(),
    ))
}

#[derive(Serialize)]
pub struct UserView {
    #[serde(flatten)]
    user: UserRecord,
    is_admin: bool,
    month_tokens: u64,
    month_cost_usd: f64,
}

impl Serialize for UserRecord {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("UserRecord", 5)?;
        st.serialize_field("id", &self.id)?;
        st.serialize_field("email", &self.email)?;
        st.serialize_field("plan", &self.plan)?;
        st.serialize_field("disabled", &self.disabled)?;
        st.serialize_field("created_at", &self.created_at)?;
        st.end()
    }
}

/// `GET /api/admin/users`: with plan and this month's usage.
pub async fn users(
    State(state): State<Arc<AppState>>,
    _: Admin,
) -> Result<Json<List<UserView>>, SideError> {
    let users = state.store.list_users().await?;
    let since = period_start(now_ms()).to_string();
    let usage = state.store.users_usage_since(&since).await?;
    Ok(list(
        users
            .into_iter()
            .map(|u| {
                let (tokens, cost) = usage
                    .iter()
                    .find(|(id, _, _)| *id == u.id)
                    .map_or((0, 0), |(_, t, c)| (*t, *c));
                UserView {
                    is_admin: u.is_admin,
                    user: u,
                    month_tokens: tokens,
                    month_cost_usd: cost as f64 / 1e9,
                }
            })
            .collect(),
    ))
}

async fn set_disabled(state: &AppState, id: i64, disabled: bool) -> Result<StatusCode, SideError> {
    state.store.set_user_disabled(id, disabled).await?;
    // The proxy must see the change now, not when its cache expires.
    for hash in state.store.key_hashes_of_user(id).await? {
        state.keys.invalidate_hex(&hash).await;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/admin/users/{id}/disable`: their keys and sessions stop working at once.
pub async fn disable_user(
    State(state): State<Arc<AppState>>,
    Path(id): Path<i64>,
    _: Admin,
) -> Result<StatusCode, SideError> {
    set_disabled(&state, id, true).await
}

/// `POST /api/admin/users/{id}/enable`
pub async fn enable_user(
    State(state): State<Arc<AppState>>,
    Path(id): Path<i64>,
    _: Admin,
) -> Result<StatusCode, SideError> {
    set_disabled(&state, id, false).await
}
