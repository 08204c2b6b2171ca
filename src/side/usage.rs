//! Usage API: totals by day and by model over a day range, and recent requests
//! (paged). An admin sees everything and may filter by key or user; a dashboard
//! user sees their own keys; an API key sees its own usage only.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use time::macros::format_description;
use time::{Date, Duration as Days};

use super::caller::Caller;
use super::error::SideError;
use crate::state::AppState;
use crate::store::{day_of, now_ms, RequestRow, UsageFilter, UsageTotals};

#[derive(Deserialize)]
pub struct RangeQuery {
    from: Option<String>,
    to: Option<String>,
    key_id: Option<i64>,
    user_id: Option<i64>,
}

#[derive(Serialize)]
pub struct TotalsRow {
    #[serde(flatten)]
    totals: UsageTotals,
    cost_usd: f64,
}

#[derive(Serialize)]
pub struct TotalsResponse {
    object: &'static str,
    from: String,
    to: String,
    data: Vec<TotalsRow>,
}

fn parse_day(value: &str, param: &'static str) -> Result<Date, SideError> {
    Date::parse(value, format_description!("[year]-[month]-[day]")).map_err(|_| {
        SideError::invalid(
            format!("`{param}` must be a date like 2026-11-25, not `{value}`"),
            Some(param),
        )
    })
}

fn filter_for(caller: &Caller, q: &RangeQuery) -> Result<UsageFilter, SideError> {
    let to = match &q.to {
        Some(v) => parse_day(v, "to")?,
        None => parse_day(&day_of(now_ms()), "to")?,
    };
    let from = match &q.from {
        Some(v) => parse_day(v, "from")?,
        None => to - Days::days(29),
    };
    if from > to {
        return Err(SideError::invalid("`from` is after `to`", Some("from")));
    }
    if to - from > Days::days(366) {
        return Err(SideError::invalid(
            "a range covers at most 366 days",
            Some("from"),
        ));
    }
    let (key_id, user_id) = scope(caller, q.key_id, q.user_id)?;
    Ok(UsageFilter {
        from_day: from.to_string(),
        to_day: to.to_string(),
        key_id,
        user_id,
    })
}

/// Admins choose what to look at; a key sees itself and nothing else.
fn scope(
    caller: &Caller,
    key_id: Option<i64>,
    user_id: Option<i64>,
) -> Result<(Option<i64>, Option<i64>), SideError> {
    match caller {
        Caller::Admin => Ok((key_id, user_id)),
        Caller::Session(s) if s.is_admin => Ok((key_id, user_id)),
        // A user sees their own usage; a key filter narrows it (another user's
        // key matches nothing, since the user filter stays).
        Caller::Session(s) => {
            if user_id.is_some_and(|u| u != s.user.id) {
                return Err(SideError::PermissionDenied(
                    "you can only read your own usage".into(),
                ));
            }
            Ok((key_id, Some(s.user.id)))
        }
        Caller::Key(key) => {
            if key_id.is_some_and(|k| k != key.id) || user_id.is_some() {
                return Err(SideError::PermissionDenied(
                    "an API key can only read its own usage".into(),
                ));
            }
            Ok((Some(key.id), None))
        }
    }
}

fn totals_response(filter: UsageFilter, rows: Vec<UsageTotals>) -> Json<TotalsResponse> {
    Json(TotalsResponse {
        object: "list",
        from: filter.from_day,
        to: filter.to_day,
        data: rows
            .into_iter()
            .map(|t| TotalsRow {
                cost_usd: t.cost_nanousd as f64 / 1e9,
                totals: t,
            })
            .collect(),
    })
}

async fn totals(
    state: Arc<AppState>,
    caller: Caller,
    q: RangeQuery,
    by_model: bool,
) -> Result<Json<TotalsResponse>, SideError> {
    let filter = filter_for(&caller, &q)?;
    let rows = state.store.usage_totals(&filter, by_model).await?;
    Ok(totals_response(filter, rows))
}

/// `GET /api/usage/daily`: one row per UTC day with traffic.
pub async fn daily(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(q): Query<RangeQuery>,
) -> Result<Json<TotalsResponse>, SideError> {
    totals(state, caller, q, false).await
}

/// `GET /api/usage/models`: one row per model over the range.
pub async fn by_model(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(q): Query<RangeQuery>,
) -> Result<Json<TotalsResponse>, SideError> {
    totals(state, caller, q, true).await
}

#[derive(Deserialize)]
pub struct RequestsQuery {
    limit: Option<i64>,
    before: Option<i64>,
    key_id: Option<i64>,
    user_id: Option<i64>,
}

#[derive(Serialize)]
pub struct RequestsResponse {
    object: &'static str,
    data: Vec<RequestRow>,
    /// Pass as `before` for the next (older) page; null on the last page.
    next_before: Option<i64>,
}

/// `GET /api/usage/requests`: newest first, `limit` (1-500, default 50) per page.
pub async fn requests(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(q): Query<RequestsQuery>,
) -> Result<Json<RequestsResponse>, SideError> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(SideError::invalid(
            "`limit` must be between 1 and 500",
            Some("limit"),
        ));
    }
    let (key_id, user_id) = scope(&caller, q.key_id, q.user_id)?;
    let data = state
        .store
        .recent_requests(key_id, user_id, q.before, limit)
        .await?;
    let next_before = (data.len() as i64 == limit)
        .then(|| data.last().map(|r| r.id))
        .flatten();
    Ok(Json(RequestsResponse {
        object: "list",
        data,
        next_before,
    }))
}
