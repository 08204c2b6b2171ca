//! `/api/billing/*`: plans, Creem checkout and customer portal, the user's
//! subscription, and Creem's webhook, which moves users between plans.
//!
//! A plan change reaches the proxy at once: the user's cached keys are dropped
//! (they carry the plan) and their quota period is re-read.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::caller::{ApiJson, SessionUser};
use super::error::SideError;
use crate::billing::creem::{
    verify_signature, CheckoutCustomer, CheckoutRequest, CreemClient, CreemError, EventMeaning,
    WebhookEvent, SIGNATURE_HEADER,
};
use crate::billing::{
    decide, status_grants_access, BillingConfig, SubscriptionEvent, SubscriptionRecord,
    USER_ID_METADATA,
};
use crate::state::AppState;
use crate::store::{now_ms, EventOutcome};

/// The billing routes, to merge into the side app's router.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/billing/plans", get(plans))
        .route("/api/billing/checkout", post(checkout))
        .route("/api/billing/portal", post(portal))
        .route("/api/billing/subscription", get(subscription))
        .route("/api/billing/webhook", post(webhook))
}

fn provider_error(e: CreemError) -> SideError {
    tracing::error!(error = %e, "Creem request failed");
    SideError::BillingProvider(e.to_string())
}

fn client(billing: &BillingConfig) -> Result<CreemClient, SideError> {
    let key = billing.api_key().ok_or_else(|| {
        tracing::error!(
            var = %billing.api_key_env,
            "billing.api_key_env names an environment variable that is not set"
        );
        SideError::Internal
    })?;
    Ok(CreemClient::new(billing.base(), key))
}

#[derive(Serialize)]
struct PlanView {
    name: String,
    rpm: Option<u64>,
    tpm: Option<u64>,
    concurrency: Option<u64>,
    monthly_tokens: Option<u64>,
    monthly_credits_usd: Option<f64>,
    /// The Creem product that sells this plan.
    product_id: Option<String>,
    /// Whether `POST /api/billing/checkout` can sell it.
    purchasable: bool,
    /// The plan of users without a paid subscription.
    is_default: bool,
}

#[derive(Serialize)]
struct PlanList {
    object: &'static str,
    billing_enabled: bool,
    default_plan: String,
    data: Vec<PlanView>,
}

/// `GET /api/billing/plans`: every plan, its limits and the product selling it.
async fn plans(State(state): State<Arc<AppState>>) -> Json<PlanList> {
    let snapshot = state.snapshot();
    let live = &snapshot.config;
    let billing = live.billing.as_ref();
    let default_plan = crate::billing::fallback_plan(live.default_plan.as_deref());
    Json(PlanList {
        object: "list",
        billing_enabled: billing.is_some(),
        data: live
            .plans
            .iter()
            .map(|(name, p)| {
                let product_id = billing
                    .and_then(|b| b.product_of_plan(name))
                    .map(str::to_string);
                PlanView {
                    name: name.clone(),
                    rpm: p.rpm,
                    tpm: p.tpm,
                    concurrency: p.concurrency,
                    monthly_tokens: p.monthly_tokens,
                    monthly_credits_usd: p.monthly_credits_usd,
                    purchasable: product_id.is_some(),
                    product_id,
                    is_default: *name == default_plan,
                }
            })
            .collect(),
        default_plan,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckoutBody {
    plan: String,
}

/// `POST /api/billing/checkout` `{plan}` -> `{"url"}`: a Creem checkout for the
/// product of that plan; the plan changes when Creem's webhook says it is paid.
async fn checkout(
    State(state): State<Arc<AppState>>,
    s: SessionUser,
    ApiJson(body): ApiJson<CheckoutBody>,
) -> Result<Json<Value>, SideError> {
    let snapshot = state.snapshot();
    let live = &snapshot.config;
    let billing = live.billing.as_ref().ok_or(SideError::BillingDisabled)?;
    let plan = body.plan.trim();
    if !live.plans.contains_key(plan) {
        return Err(SideError::invalid(
            format!("there is no plan named `{plan}`"),
            Some("plan"),
        ));
    }
    let Some(product_id) = billing.product_of_plan(plan) else {
        return Err(SideError::invalid(
            format!("the plan `{plan}` is not sold here"),
            Some("plan"),
        ));
    };
    let current = state.store.subscription_of_user(s.user.id).await?;
    if let Some(sub) = current
        .as_ref()
        .filter(|c| status_grants_access(&c.status) && c.creem_subscription_id.is_some())
    {
        return Err(SideError::Conflict(format!(
            "you already have a subscription to the `{}` plan; change or cancel it in the customer portal (POST /api/billing/portal)",
            sub.plan
        )));
    }
    let request_id = format!("bm_{}_{}", s.user.id, uuid::Uuid::new_v4().simple());
    let customer_id = current
        .as_ref()
        .and_then(|c| c.creem_customer_id.as_deref());
    let created = client(billing)?
        .create_checkout(&CheckoutRequest {
            product_id,
            request_id: &request_id,
            success_url: billing.success_url.as_deref(),
            customer: CheckoutCustomer {
                id: customer_id,
                email: if customer_id.is_some() {
                    None
                } else {
                    Some(&s.user.email)
                },
            },
            metadata: json!({ USER_ID_METADATA: s.user.id.to_string(), "plan": plan }),
        })
        .await
        .map_err(provider_error)?;
    tracing::info!(
        user_id = s.user.id,
        plan,
        checkout_id = %created.id,
        "Creem checkout created"
    );
    Ok(Json(
        json!({ "url": created.checkout_url, "id": created.id }),
    ))
}

/// `POST /api/billing/portal` -> `{"url"}`: Creem's customer portal, where the
/// user changes or cancels their subscription and payment method.
async fn portal(
    State(state): State<Arc<AppState>>,
    s: SessionUser,
) -> Result<Json<Value>, SideError> {
    let snapshot = state.snapshot();
    let live = &snapshot.config;
    let billing = live.billing.as_ref().ok_or(SideError::BillingDisabled)?;
    let customer = state
        .store
        .subscription_of_user(s.user.id)
        .await
        ?
        .and_then(|sub| sub.creem_customer_id)
        .ok_or_else(|| {
            SideError::NotFound(
                "you have no billing account yet: subscribe to a plan first (POST /api/billing/checkout)"
                    .into(),
            )
        })?;
    let url = client(billing)?
        .customer_portal_link(&customer)
        .await
        .map_err(provider_error)?;
    Ok(Json(json!({ "url": url })))
}

#[derive(Serialize)]
struct SubscriptionView {
    object: &'static str,
    plan: String,
    status: String,
    product_id: Option<String>,
    creem_subscription_id: Option<String>,
    /// Unix milliseconds.
    current_period_end: Option<i64>,
    updated_at: i64,
}

impl From<SubscriptionRecord> for SubscriptionView {
    fn from(s: SubscriptionRecord) -> Self {
        Self {
            object: "subscription",
            plan: s.plan,
            status: s.status,
            product_id: s.product_id,
            creem_subscription_id: s.creem_subscription_id,
            current_period_end: s.current_period_end,
            updated_at: s.updated_at,
        }
    }
}

/// `GET /api/billing/subscription` -> `{"plan", "billing_enabled", "subscription"}`,
/// `subscription` being null for users who never subscribed.
async fn subscription(
    State(state): State<Arc<AppState>>,
    s: SessionUser,
) -> Result<Json<Value>, SideError> {
    let sub = state
        .store
        .subscription_of_user(s.user.id)
        .await?
        .map(SubscriptionView::from);
    Ok(Json(json!({
        "plan": s.user.plan,
        "billing_enabled": state.snapshot().config.billing.is_some(),
        "subscription": sub,
    })))
}

/// The user an event is about: our id from the metadata, else the one whose
/// stored Creem subscription or customer it names.
async fn resolve_user(state: &AppState, ev: &SubscriptionEvent) -> Result<Option<i64>, SideError> {
    if let Some(id) = ev.user_id {
        if state.store.user_by_id(id).await?.is_some() {
            return Ok(Some(id));
        }
        tracing::warn!(user_id = id, "Creem event names a user that does not exist");
    }
    if let Some(sub) = &ev.subscription_id {
        if let Some(id) = state.store.user_of_creem_subscription(sub).await? {
            return Ok(Some(id));
        }
    }
    if let Some(customer) = &ev.customer_id {
        return Ok(state.store.user_of_creem_customer(customer).await?);
    }
    Ok(None)
}

fn answer(outcome: &str) -> Json<Value> {
    Json(json!({ "received": true, "outcome": outcome }))
}

/// `POST /api/billing/webhook`: Creem's events. The signature is checked on the
/// raw body before anything else; an event id is handled once.
async fn webhook(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, SideError> {
    let snapshot = state.snapshot();
    let live = &snapshot.config;
    let billing = live.billing.as_ref().ok_or(SideError::BillingDisabled)?;
    let secret = billing.webhook_secret().ok_or_else(|| {
        tracing::error!(
            var = %billing.webhook_secret_env,
            "billing.webhook_secret_env names an environment variable that is not set"
        );
        SideError::Internal
    })?;
    let signed = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|sig| verify_signature(secret.as_bytes(), &body, sig));
    if !signed {
        tracing::warn!(
            has_header = headers.contains_key(SIGNATURE_HEADER),
            "Creem webhook refused: bad or missing signature"
        );
        return Err(SideError::InvalidSignature);
    }
    let event: WebhookEvent = serde_json::from_slice(&body)
        .map_err(|e| SideError::invalid(format!("not a Creem event: {e}"), None))?;
    if event.id.trim().is_empty() {
        return Err(SideError::invalid("the event has no id", None));
    }
    let (id, kind) = (event.id.as_str(), event.event_type.as_str());
    let ev = match event.meaning(now_ms()) {
        EventMeaning::Unknown => {
            state.store.record_billing_event(id, kind).await?;
            tracing::info!(
                event_id = id,
                event_type = kind,
                "unhandled Creem event type; acknowledged and ignored"
            );
            return Ok(answer("unhandled"));
        }
        EventMeaning::NotApplicable(why) => {
            state.store.record_billing_event(id, kind).await?;
            tracing::info!(event_id = id, event_type = kind, reason = %why, "Creem event ignored");
            return Ok(answer("ignored"));
        }
        EventMeaning::Subscription(ev) => ev,
    };
    let Some(user_id) = resolve_user(&state, &ev).await? else {
        // Not recorded: a later delivery (or a resend from Creem's dashboard) may
        // find the user once the checkout that names them has arrived.
        tracing::warn!(
            event_id = id,
            event_type = kind,
            subscription = ?ev.subscription_id,
            customer = ?ev.customer_id,
            "Creem event for no known user; acknowledged and ignored"
        );
        return Ok(answer("ignored"));
    };
    let outcome = state
        .store
        .apply_billing_event(id, kind, user_id, |current, user_plan| {
            decide(
                billing,
                live.default_plan.as_deref(),
                user_id,
                user_plan,
                current,
                &ev,
            )
        })
        .await?;
    Ok(match outcome {
        EventOutcome::Duplicate => {
            tracing::info!(
                event_id = id,
                event_type = kind,
                "Creem event already handled"
            );
            answer("duplicate")
        }
        EventOutcome::Ignored(reason) => {
            tracing::info!(event_id = id, event_type = kind, user_id, reason = %reason, "Creem event changes nothing");
            answer("ignored")
        }
        EventOutcome::Applied {
            change,
            plan_changed,
        } => {
            if plan_changed {
                // The proxy must see the new plan now: cached keys carry the old
                // one, and the quota period is re-read under the new plan.
                match state.store.key_hashes_of_user(user_id).await {
                    Ok(hashes) => {
                        for hash in hashes {
                            state.keys.invalidate_hex(&hash).await;
                        }
                    }
                    // The plan is stored; the cache catches up when its entries expire.
                    Err(e) => {
                        tracing::error!(error = %e, user_id, "cannot drop the user's cached keys")
                    }
                }
                state.quotas.forget(user_id).await;
            }
            tracing::info!(
                event_id = id,
                event_type = kind,
                user_id,
                plan = %change.plan,
                status = %change.status,
                plan_changed,
                "Creem event applied"
            );
            answer("applied")
        }
    })
}
