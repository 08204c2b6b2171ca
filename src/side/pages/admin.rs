//! Admin pages: `GET /admin/servers` and `GET /admin/users`.

use std::collections::BTreeSet;
use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::{format, initial, page, unavailable, Chrome, PageAdmin};
use crate::limits::quota::period_start;
use crate::state::AppState;
use crate::store::now_ms;
use crate::upstream::BackendState;

struct BackendView {
    url: String,
    priority: u32,
    state: &'static str,
    state_label: &'static str,
    source: &'static str,
}

struct PoolView {
    name: String,
    models: Vec<String>,
    backends: Vec<BackendView>,
    healthy: usize,
}

struct ServerView {
    id: i64,
    pool: String,
    url: String,
    models: String,
    weight: i64,
    priority: i64,
    api_key_env: String,
    created: String,
}

#[derive(Template)]
#[template(path = "admin_servers.html", config = "admin/askama.toml")]
struct ServersPage {
    chrome: Chrome,
    pools: Vec<PoolView>,
    servers: Vec<ServerView>,
}

/// `GET /admin/servers`: every pool's backends with their health, and the
/// servers added through the admin API.
pub async fn admin_servers(
    State(state): State<Arc<AppState>>,
    PageAdmin(s): PageAdmin,
) -> Response {
    let chrome = Chrome::new(&s, "servers");
    let servers = match state.store.list_servers().await {
        Ok(s) => s,
        Err(e) => return unavailable(e),
    };
    let snapshot = state.snapshot();
    let pools = snapshot
        .upstreams
        .pools()
        .iter()
        .map(|p| {
            let mut models: BTreeSet<String> = snapshot
                .config
                .pools
                .iter()
                .filter(|c| c.name == p.name)
                .flat_map(|c| c.models.iter().cloned())
                .collect();
            models.extend(
                servers
                    .iter()
                    .filter(|s| s.pool == p.name)
                    .flat_map(|s| s.models.iter().cloned()),
            );
            let backends: Vec<BackendView> = p
                .backends()
                .map(|b| {
                    let (state, state_label) = match p.state(b) {
                        BackendState::Healthy if p.is_ejected(b) => ("ejected", "Ejected"),
                        BackendState::Healthy => ("healthy", "Healthy"),
                        BackendState::Unhealthy => ("down", "Down"),
                        BackendState::Resolving => ("down", "Resolving its name"),
                        BackendState::Unresolved => ("down", "Name does not resolve"),
                        BackendState::AddressRefused => ("down", "Address refused"),
                        BackendState::KeyRefused => ("key-refused", "Key refused by the provider"),
                    };
                    let added = servers
                        .iter()
                        .any(|s| s.pool == b.pool && s.url.trim() == b.display);
                    BackendView {
                        url: b.display.clone(),
                        priority: b.priority,
                        state,
                        state_label,
                        source: if added { "Added here" } else { "Config file" },
                    }
                })
                .collect();
            PoolView {
                name: p.name.clone(),
                models: models.into_iter().collect(),
                healthy: backends.iter().filter(|b| b.state == "healthy").count(),
                backends,
            }
        })
        .collect();
    let servers = servers
        .into_iter()
        .map(|s| ServerView {
            id: s.id,
            pool: s.pool,
            url: s.url,
            models: s.models.join(", "),
            weight: s.weight,
            priority: s.priority,
            api_key_env: s.api_key_env.unwrap_or_default(),
            created: format::date(s.created_at),
        })
        .collect();
    page(
        StatusCode::OK,
        &ServersPage {
            chrome,
            pools,
            servers,
        },
    )
}

struct UserRow {
    id: i64,
    email: String,
    initial: String,
    plan: String,
    is_admin: bool,
    disabled: bool,
    is_self: bool,
    month_tokens: String,
    month_cost: String,
    created: String,
}

#[derive(Template)]
#[template(path = "admin_users.html", config = "admin/askama.toml")]
struct UsersPage {
    chrome: Chrome,
    users: Vec<UserRow>,
    month: String,
}

/// `GET /admin/users`: accounts with plan, state and this month's usage.
pub async fn admin_users(State(state): State<Arc<AppState>>, PageAdmin(s): PageAdmin) -> Response {
    let chrome = Chrome::new(&s, "users");
    let since = period_start(now_ms());
    let since_day = since.to_string();
    let (users, usage) = match tokio::try_join!(
        state.store.list_users(),
        state.store.users_usage_since(&since_day),
    ) {
        Ok(v) => v,
        Err(e) => return unavailable(e),
    };
    let users = users
        .into_iter()
        .map(|u| {
            let (tokens, cost) = usage
                .iter()
                .find(|(id, _, _)| *id == u.id)
                .map_or((0, 0), |(_, t, c)| (*t as i64, *c));
            UserRow {
                id: u.id,
                is_admin: u.is_admin,
                is_self: u.email == chrome.email,
                initial: initial(&u.email),
                email: u.email,
                plan: u.plan,
                disabled: u.disabled,
                month_tokens: format::int(tokens),
                month_cost: format::usd(cost),
                created: format::date(u.created_at),
            }
        })
        .collect();
    page(
        StatusCode::OK,
        &UsersPage {
            month: format!("{} {}", since.month(), since.year()),
            chrome,
            users,
        },
    )
}
