//! The dashboard: server-rendered pages (askama templates in `admin/templates`)
//! over the same store calls as the JSON API, plus the stylesheet and script
//! they load. Pages only read; every change goes through the JSON API from
//! `admin/static/app.js`, with the session's CSRF token (from the page's
//! `<meta name="csrf-token">`).
//!
//! Pages send a strict Content-Security-Policy: no inline script or style, so
//! all behaviour lives in app.js and all styling in app.css (the inline SVG
//! chart uses classes and presentation attributes only).

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use askama::Template;
use axum::extract::{FromRequestParts, OptionalFromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use time::{Duration, OffsetDateTime};

use super::caller::SessionUser;
use super::error::SideError;
use crate::auth::passwords::MIN_PASSWORD_LEN;
use crate::limits::quota::period_start;
use crate::state::AppState;
use crate::store::{now_ms, KeyRecord, UsageFilter, UsageTotals};

mod chart;
mod format;

use chart::Chart;

pub const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'";

const APP_CSS: &str = include_str!("../../admin/static/app.css");
const APP_JS: &str = include_str!("../../admin/static/app.js");

/// Days the overview's chart and 30-day totals cover (today included).
const CHART_DAYS: u16 = 30;

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
            signup_open: state.config.admin.allow_signup,
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

struct Stat {
    label: &'static str,
    value: String,
    sub: String,
}

struct Quota {
    label: &'static str,
    used: String,
    limit: String,
    /// For `<progress>`: 0-1000 of the quota used.
    permille: i64,
    warn: bool,
}

struct ModelRow {
    model: String,
    requests: String,
    prompt_tokens: String,
    completion_tokens: String,
    cost: String,
    share: i64,
}

struct RequestView {
    time: String,
    time_full: String,
    key: String,
    model: String,
    endpoint: String,
    status: i64,
    status_class: &'static str,
    error: String,
    tokens: String,
    latency: String,
    cost: String,
    stream: bool,
}

#[derive(Template)]
#[template(path = "dashboard.html", config = "admin/askama.toml")]
struct Dashboard {
    chrome: Chrome,
    stats: Vec<Stat>,
    quotas: Vec<Quota>,
    chart: Chart,
    models: Vec<ModelRow>,
    requests: Vec<RequestView>,
}

fn sum(rows: &[UsageTotals]) -> (i64, i64, i64) {
    rows.iter().fold((0, 0, 0), |(r, t, c), row| {
        (
            r + row.requests,
            t + row.prompt_tokens + row.completion_tokens,
            c + row.cost_nanousd,
        )
    })
}

fn plural(n: i64, one: &str, many: &str) -> String {
    format!("{} {}", format::int(n), if n == 1 { one } else { many })
}

/// `GET /dashboard`: the overview.
pub async fn dashboard(State(state): State<Arc<AppState>>, PageUser(s): PageUser) -> Response {
    let now = now_ms();
    let today = OffsetDateTime::now_utc().date();
    let from = today - Duration::days(i64::from(CHART_DAYS) - 1);
    let last_30 = UsageFilter {
        from_day: from.to_string(),
        to_day: today.to_string(),
        key_id: None,
        user_id: Some(s.user.id),
    };
    let this_month = UsageFilter {
        from_day: period_start(now).to_string(),
        ..last_30.clone()
    };
    let store = &state.store;
    let (daily, by_model, month, recent, keys) = match tokio::try_join!(
        store.usage_totals(&last_30, false),
        store.usage_totals(&last_30, true),
        store.usage_totals(&this_month, false),
        store.recent_requests(None, Some(s.user.id), None, 20),
        store.keys_of_user(s.user.id),
    ) {
        Ok(v) => v,
        Err(e) => return unavailable(e),
    };
    let (requests_30, tokens_30, cost_30) = sum(&daily);
    let (requests_month, tokens_month, cost_month) = sum(&month);
    let prompt_30: i64 = daily.iter().map(|r| r.prompt_tokens).sum();
    let active_keys = keys.iter().filter(|k| k.status(now) == "active").count() as i64;
    let stats = vec![
        Stat {
            label: "Requests",
            value: format::int(requests_30),
            sub: format!("last 30 days · {} this month", format::int(requests_month)),
        },
        Stat {
            label: "Tokens",
            value: format::int(tokens_30),
            sub: format!(
                "{} prompt · {} completion",
                format::compact(prompt_30 as f64),
                format::compact((tokens_30 - prompt_30) as f64)
            ),
        },
        Stat {
            label: "Spend this month",
            value: format::usd(cost_month),
            sub: format!("{} over the last 30 days", format::usd(cost_30)),
        },
        Stat {
            label: "Active keys",
            value: format::int(active_keys),
            sub: plural(keys.len() as i64, "key in total", "keys in total"),
        },
    ];

    let mut quotas = Vec::new();
    let plans = &state.config.plans;
    let plan = plans.get(&s.user.plan).or_else(|| {
        state
            .config
            .default_plan
            .as_deref()
            .and_then(|p| plans.get(p))
    });
    if let Some(plan) = plan {
        if let Some(limit) = plan.monthly_tokens.filter(|l| *l > 0) {
            let permille = (tokens_month as f64 / limit as f64 * 1000.0).clamp(0.0, 1000.0) as i64;
            quotas.push(Quota {
                label: "Monthly tokens",
                used: format::int(tokens_month),
                limit: format::int(limit as i64),
                permille,
                warn: permille >= 800,
            });
        }
        if let Some(limit) = plan.monthly_credits_usd.filter(|l| *l > 0.0) {
            let permille = (cost_month as f64 / 1e9 / limit * 1000.0).clamp(0.0, 1000.0) as i64;
            quotas.push(Quota {
                label: "Monthly spend",
                used: format::usd(cost_month),
                limit: format::usd_f(limit),
                permille,
                warn: permille >= 800,
            });
        }
    }

    let max_model_tokens = by_model
        .iter()
        .map(|m| m.prompt_tokens + m.completion_tokens)
        .max()
        .unwrap_or(0)
        .max(1);
    let mut by_model = by_model;
    by_model.sort_by_key(|m| std::cmp::Reverse(m.prompt_tokens + m.completion_tokens));
    let models = by_model
        .iter()
        .map(|m| ModelRow {
            model: if m.group.is_empty() {
                "(none)".into()
            } else {
                m.group.clone()
            },
            requests: format::int(m.requests),
            prompt_tokens: format::int(m.prompt_tokens),
            completion_tokens: format::int(m.completion_tokens),
            cost: format::usd(m.cost_nanousd),
            share: (m.prompt_tokens + m.completion_tokens) * 100 / max_model_tokens,
        })
        .collect();
    let requests = recent
        .into_iter()
        .map(|r| RequestView {
            time: format::short_time(r.created_at),
            time_full: format!("{} · {}", format::datetime(r.created_at), r.request_id),
            key: r.key_name.unwrap_or_else(|| "-".into()),
            model: r.model.unwrap_or_else(|| "-".into()),
            endpoint: r.endpoint,
            status: r.status,
            status_class: match r.status {
                200..=299 => "ok",
                400..=499 => "warn",
                _ => "bad",
            },
            error: r.error_code.unwrap_or_default(),
            tokens: format::int(r.prompt_tokens + r.completion_tokens),
            latency: format!("{} ms", format::int(r.latency_ms)),
            cost: format::usd(r.cost_nanousd),
            stream: r.stream,
        })
        .collect();
    page(
        StatusCode::OK,
        &Dashboard {
            chrome: Chrome::new(&s, "dashboard"),
            stats,
            quotas,
            chart: chart::build(&daily, from, CHART_DAYS),
            models,
            requests,
        },
    )
}

struct KeyRow {
    id: i64,
    name: String,
    display: String,
    status: &'static str,
    active: bool,
    created: String,
    created_full: String,
    expires: String,
    expires_full: String,
    limits: String,
    models: String,
}

#[derive(Template)]
#[template(path = "keys.html", config = "admin/askama.toml")]
struct KeysPage {
    chrome: Chrome,
    keys: Vec<KeyRow>,
    active: usize,
    /// How long a rotated key keeps working, in words (for the confirm text).
    grace: String,
}

/// `3600` -> `1 hour`, `90` -> `90 seconds`.
fn duration_words(secs: u64) -> String {
    let (n, unit) = if secs >= 86_400 && secs.is_multiple_of(86_400) {
        (secs / 86_400, "day")
    } else if secs >= 3600 && secs.is_multiple_of(3600) {
        (secs / 3600, "hour")
    } else if secs >= 60 && secs.is_multiple_of(60) {
        (secs / 60, "minute")
    } else {
        (secs, "second")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

fn key_limits(k: &KeyRecord) -> String {
    let parts: Vec<String> = [
        k.rpm.map(|v| format!("{} rpm", format::int(v))),
        k.tpm.map(|v| format!("{} tpm", format::compact(v as f64))),
        k.concurrency
            .map(|v| format!("{} concurrent", format::int(v))),
    ]
    .into_iter()
    .flatten()
    .collect();
    if parts.is_empty() {
        "Plan defaults".into()
    } else {
        parts.join(" · ")
    }
}

/// `GET /keys`
pub async fn keys(State(state): State<Arc<AppState>>, PageUser(s): PageUser) -> Response {
    let records = match state.store.keys_of_user(s.user.id).await {
        Ok(k) => k,
        Err(e) => return unavailable(e),
    };
    let now = now_ms();
    // Newest first; revoked and expired keys after the working ones.
    let mut keys: Vec<KeyRow> = records
        .iter()
        .rev()
        .map(|k| {
            let status = k.status(now);
            KeyRow {
                id: k.id,
                name: k.name.clone(),
                display: format!("{}...{}", k.key_prefix, k.key_last4),
                status,
                active: status == "active",
                created: format::date(k.created_at),
                created_full: format::datetime(k.created_at),
                expires: k.expires_at.map_or_else(|| "Never".into(), format::date),
                expires_full: k.expires_at.map(format::datetime).unwrap_or_default(),
                limits: key_limits(k),
                models: k
                    .models
                    .as_ref()
                    .map_or_else(|| "All models".into(), |m| m.join(", ")),
            }
        })
        .collect();
    keys.sort_by_key(|k| !k.active);
    page(
        StatusCode::OK,
        &KeysPage {
            chrome: Chrome::new(&s, "keys"),
            active: keys.iter().filter(|k| k.active).count(),
            keys,
            grace: duration_words(state.config.admin.key_rotation_grace_secs),
        },
    )
}

struct PlanView {
    name: String,
    current: bool,
    rpm: String,
    tpm: String,
    concurrency: String,
    monthly_tokens: String,
    monthly_spend: String,
}

#[derive(Template)]
#[template(path = "billing.html", config = "admin/askama.toml")]
struct BillingPage {
    chrome: Chrome,
    billing_enabled: bool,
    plans: Vec<PlanView>,
    /// The plan that applies to the user (theirs, or the default when theirs is not configured).
    effective_plan: Option<String>,
    plan_known: bool,
}

/// `GET /billing`
pub async fn billing(State(state): State<Arc<AppState>>, PageUser(s): PageUser) -> Response {
    let plans = &state.config.plans;
    let plan_known = plans.contains_key(&s.user.plan);
    let effective_plan = if plan_known {
        Some(s.user.plan.clone())
    } else {
        state
            .config
            .default_plan
            .clone()
            .filter(|p| plans.contains_key(p))
    };
    let views = plans
        .iter()
        .map(|(name, p)| PlanView {
            name: name.clone(),
            current: effective_plan.as_deref() == Some(name.as_str()),
            rpm: format::limit(p.rpm, " / min"),
            tpm: format::limit(p.tpm, " / min"),
            concurrency: format::limit(p.concurrency, ""),
            monthly_tokens: format::limit(p.monthly_tokens, ""),
            monthly_spend: p
                .monthly_credits_usd
                .map_or_else(|| "Unlimited".into(), format::usd_f),
        })
        .collect();
    page(
        StatusCode::OK,
        &BillingPage {
            chrome: Chrome::new(&s, "billing"),
            billing_enabled: state.live.load().billing.is_some(),
            plans: views,
            effective_plan,
            plan_known,
        },
    )
}

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
    let upstreams = state.upstreams.load_full();
    let pools = upstreams
        .pools()
        .iter()
        .map(|p| {
            let mut models: BTreeSet<String> = state
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
                    let (state, state_label) = if !p.is_healthy(b) {
                        ("down", "Down")
                    } else if p.is_ejected(b) {
                        ("ejected", "Ejected")
                    } else {
                        ("healthy", "Healthy")
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
                is_admin: state.config.is_admin_email(&u.email),
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

#[cfg(test)]
mod tests {
    #[test]
    fn durations_in_words() {
        assert_eq!(super::duration_words(3600), "1 hour");
        assert_eq!(super::duration_words(7200), "2 hours");
        assert_eq!(super::duration_words(86_400), "1 day");
        assert_eq!(super::duration_words(90), "90 seconds");
        assert_eq!(super::duration_words(0), "0 seconds");
    }
}
