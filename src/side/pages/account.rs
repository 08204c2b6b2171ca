//! The signed-in user's own pages: `GET /keys` and `GET /billing`.

use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::{format, page, unavailable, Chrome, PageUser};
use crate::state::AppState;
use crate::store::{now_ms, KeyRecord};

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
            grace: duration_words(state.snapshot().config.accounts.key_rotation_grace_secs),
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
    let snapshot = state.snapshot();
    let plans = &snapshot.config.plans;
    let plan_known = plans.contains_key(&s.user.plan);
    let effective_plan = snapshot
        .config
        .plan(Some(&s.user.plan))
        .map(|(name, _)| name.to_string());
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
            billing_enabled: snapshot.config.billing.is_some(),
            plans: views,
            effective_plan,
            plan_known,
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
