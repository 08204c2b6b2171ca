//! `GET /dashboard`: the overview of the signed-in user's usage, quotas and keys.

use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use time::{Duration, OffsetDateTime};

use super::chart::{self, Chart};
use super::{format, page, unavailable, Chrome, PageUser};
use crate::limits::quota::period_start;
use crate::state::AppState;
use crate::store::{now_ms, UsageFilter, UsageTotals, UserOverview};

/// Days the overview's chart and 30-day totals cover (today included).
const CHART_DAYS: u16 = 30;

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
    /// The parts priced apart, shown under the totals when there are any.
    prompt_detail: Option<String>,
    completion_detail: Option<String>,
    cost: String,
    share: i64,
}

/// "1,920 cached · 300 cache writes" for the parts of a total that are not 0.
fn detail(parts: &[(i64, &str)]) -> Option<String> {
    let shown: Vec<String> = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{} {what}", format::int(*n)))
        .collect();
    (!shown.is_empty()).then(|| shown.join(" · "))
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
    // The usage figures come from one snapshot, so they agree with each other.
    let (overview, keys) = match tokio::try_join!(
        store.user_overview(&last_30, &this_month, 20),
        store.keys_of_user(s.user.id),
    ) {
        Ok(v) => v,
        Err(e) => return unavailable(e),
    };
    let UserOverview {
        daily,
        by_model,
        month,
        recent,
    } = overview;
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
    let snapshot = state.snapshot();
    if let Some((_, plan)) = snapshot.config.plan(Some(&s.user.plan)) {
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
            prompt_detail: detail(&[
                (m.cached_tokens, "cached"),
                (m.cache_write_tokens, "cache writes"),
            ]),
            completion_detail: detail(&[(m.reasoning_tokens, "reasoning")]),
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

#[cfg(test)]
mod tests {
    use super::detail;

    #[test]
    fn only_the_parts_that_are_there_are_shown() {
        assert_eq!(detail(&[(0, "cached"), (0, "cache writes")]), None);
        assert_eq!(
            detail(&[(1920, "cached"), (0, "cache writes")]).as_deref(),
            Some("1,920 cached")
        );
        assert_eq!(
            detail(&[(5, "cached"), (3, "cache writes")]).as_deref(),
            Some("5 cached · 3 cache writes")
        );
    }
}
