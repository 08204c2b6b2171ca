//! Creem's HTTP API and webhooks, as documented at https://docs.creem.io.
//! (Longer than most files: one provider's whole wire format, request and
//! webhook side, kept together so it can be checked against its reference.)
//!
//! Every request carries the API key in `x-api-key`; the base URL is
//! `https://test-api.creem.io` in test mode and `https://api.creem.io` live
//! (https://docs.creem.io/skills/creem-api/Skill). Failures come back as
//! `{"trace_id","status","error","message":[...],"timestamp"}`, a missing or
//! wrong key as 403 (https://docs.creem.io/api-reference/error-codes).
//!
//! Webhooks are `{"id","eventType","created_at","object"}` (created_at in unix
//! milliseconds), signed with HMAC-SHA256 of the raw body under the webhook
//! secret, hex-encoded in the `creem-signature` header
//! (https://docs.creem.io/learn/webhooks/verify-webhook-requests, payloads:
//! https://docs.creem.io/learn/webhooks/event-types).

use std::sync::OnceLock;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;

use super::{Intent, SubscriptionEvent, USER_ID_METADATA};

/// The header Creem puts the webhook signature in.
pub const SIGNATURE_HEADER: &str = "creem-signature";

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CreemError {
    #[error("cannot reach Creem: {0}")]
    Transport(String),
    #[error("Creem answered {status} {error}{}{}", fmt_messages(.messages), fmt_trace(.trace_id))]
    Api {
        status: u16,
        error: String,
        messages: Vec<String>,
        trace_id: Option<String>,
    },
    #[error("unexpected answer from Creem: {0}")]
    Decode(String),
}

fn fmt_messages(m: &[String]) -> String {
    if m.is_empty() {
        String::new()
    } else {
        format!(": {}", m.join("; "))
    }
}

fn fmt_trace(t: &Option<String>) -> String {
    t.as_ref()
        .map(|t| format!(" (trace_id {t})"))
        .unwrap_or_default()
}

/// `POST /v1/checkouts` body (https://docs.creem.io/api-reference/endpoint/create-checkout).
#[derive(Debug, Clone, Serialize)]
pub struct CheckoutRequest<'a> {
    pub product_id: &'a str,
    /// Our id for this checkout attempt, echoed back in the checkout object.
    pub request_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success_url: Option<&'a str>,
    pub customer: CheckoutCustomer<'a>,
    /// Key-value pairs that Creem carries to the checkout and subscription webhooks.
    pub metadata: Value,
}

/// Prefills the checkout: an existing Creem customer by id, else by email.
#[derive(Debug, Clone, Serialize)]
pub struct CheckoutCustomer<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<&'a str>,
}

/// The part of Creem's checkout object we use.
#[derive(Debug, Clone, Deserialize)]
pub struct Checkout {
    pub id: String,
    /// Where to send the customer to pay.
    pub checkout_url: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub request_id: Option<String>,
}

/// Creem's subscription object (https://docs.creem.io/api-reference/endpoint/get-subscription).
/// `product` and `customer` are expanded objects here, bare ids in some webhooks.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Subscription {
    pub id: String,
    pub status: String,
    #[serde(default)]
    pub product: Value,
    #[serde(default)]
    pub customer: Value,
    #[serde(default)]
    pub current_period_start_date: Option<String>,
    #[serde(default)]
    pub current_period_end_date: Option<String>,
    #[serde(default)]
    pub canceled_at: Option<String>,
    #[serde(default)]
    pub metadata: Value,
}

impl Subscription {
    pub fn product_id(&self) -> Option<String> {
        ref_id(&self.product)
    }
    pub fn customer_id(&self) -> Option<String> {
        ref_id(&self.customer)
    }
    pub fn current_period_end_ms(&self) -> Option<i64> {
        self.current_period_end_date.as_deref().and_then(rfc3339_ms)
    }
}

/// How `cancel_subscription` ends a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CancelMode {
    /// Ends now.
    Immediate,
    /// Ends at the end of the paid period.
    Scheduled,
}

fn http() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(20))
            .user_agent(concat!("bluesminds/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("TLS backend initializes")
    })
}

#[derive(Clone)]
pub struct CreemClient {
    base: String,
    api_key: String,
}

impl std::fmt::Debug for CreemClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("CreemClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl CreemClient {
    /// `base` is the API origin (`https://test-api.creem.io`).
    pub fn new(base: &str, api_key: impl Into<String>) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            api_key: api_key.into(),
        }
    }

    async fn send<T: for<'de> Deserialize<'de>>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, CreemError> {
        let resp = req
            .header("x-api-key", &self.api_key)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| CreemError::Transport(without_url(&e)))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| CreemError::Transport(without_url(&e)))?;
        if !status.is_success() {
            return Err(api_error(status, &body));
        }
        serde_json::from_slice(&body).map_err(|e| CreemError::Decode(e.to_string()))
    }

    /// Creates a checkout session and returns it (`checkout_url` is where the
    /// customer pays).
    pub async fn create_checkout(&self, req: &CheckoutRequest<'_>) -> Result<Checkout, CreemError> {
        // POST /v1/checkouts: https://docs.creem.io/api-reference/endpoint/create-checkout
        self.send(http().post(format!("{}/v1/checkouts", self.base)).json(req))
            .await
    }

    /// A link to Creem's customer portal, where the customer manages their
    /// subscription, payment method and invoices.
    pub async fn customer_portal_link(&self, customer_id: &str) -> Result<String, CreemError> {
        #[derive(Deserialize)]
        struct Links {
            customer_portal_link: String,
        }
        // POST /v1/customers/billing: https://docs.creem.io/api-reference/endpoint/create-customer-billing
        let links: Links = self
            .send(
                http()
                    .post(format!("{}/v1/customers/billing", self.base))
                    .json(&serde_json::json!({ "customer_id": customer_id })),
            )
            .await?;
        Ok(links.customer_portal_link)
    }

    pub async fn subscription(&self, subscription_id: &str) -> Result<Subscription, CreemError> {
        // GET /v1/subscriptions?subscription_id=: https://docs.creem.io/api-reference/endpoint/get-subscription
        self.send(
            http()
                .get(format!("{}/v1/subscriptions", self.base))
                .query(&[("subscription_id", subscription_id)]),
        )
        .await
    }

    pub async fn cancel_subscription(
        &self,
        subscription_id: &str,
        mode: CancelMode,
    ) -> Result<Subscription, CreemError> {
        // POST /v1/subscriptions/{id}/cancel with {"mode": "immediate"|"scheduled"}:
        // https://docs.creem.io/api-reference/endpoint/cancel-subscription
        let id: String = url_path_segment(subscription_id);
        self.send(
            http()
                .post(format!("{}/v1/subscriptions/{id}/cancel", self.base))
                .json(&serde_json::json!({ "mode": mode })),
        )
        .await
    }
}

/// reqwest's errors name the URL; ours never show query strings (nor anything else
/// a caller put there).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

fn api_error(status: reqwest::StatusCode, body: &[u8]) -> CreemError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let messages = match &v["message"] {
        Value::Array(a) => a
            .iter()
            .filter_map(|m| m.as_str().map(str::to_string))
            .collect(),
        Value::String(s) => vec![s.clone()],
        _ => Vec::new(),
    };
    CreemError::Api {
        status: status.as_u16(),
        error: v["error"]
            .as_str()
            .map(str::to_string)
            .or_else(|| status.canonical_reason().map(str::to_string))
            .unwrap_or_default(),
        messages,
        trace_id: v["trace_id"].as_str().map(str::to_string),
    }
}

/// RFC 3986's unreserved characters stay; everything else is encoded.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes anything but unreserved characters (ids are `sub_...`, but a
/// stored value must never change the path).
fn url_path_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, PATH_SEGMENT).to_string()
}

/// Whether `signature` (the `creem-signature` header) is the hex HMAC-SHA256 of
/// `body` under `secret`. Compared in constant time by the `hmac` crate.
pub fn verify_signature(secret: &[u8], body: &[u8], signature: &str) -> bool {
    let Ok(sig) = hex::decode(signature.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// A webhook delivery: `{"id","eventType","created_at","object"}`.
#[derive(Debug, Clone, Deserialize)]
pub struct WebhookEvent {
    pub id: String,
    #[serde(rename = "eventType")]
    pub event_type: String,
    /// Unix milliseconds.
    #[serde(default)]
    pub created_at: Option<i64>,
    #[serde(default)]
    pub object: Value,
}

/// What a webhook is about, for billing.
#[derive(Debug, Clone, PartialEq)]
pub enum EventMeaning {
    Subscription(SubscriptionEvent),
    /// A known event that does not concern a subscription (say, a one-time order).
    NotApplicable(String),
    /// An event type we do not handle.
    Unknown,
}

/// An object field that is a bare id (`"prod_..."`) or an expanded object with `id`.
pub fn ref_id(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Object(o) => o
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        _ => None,
    }
}

/// Our user id in a metadata object (a string or a number).
fn metadata_user(metadata: &Value) -> Option<i64> {
    match metadata.get(USER_ID_METADATA)? {
        Value::String(s) => s.trim().parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

/// `2024-11-12T11:58:38.000Z` -> unix milliseconds.
pub fn rfc3339_ms(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

fn str_field(v: &Value, name: &str) -> Option<String> {
    v.get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

impl WebhookEvent {
    /// Reads the payload of the event types billing acts on.
    pub fn meaning(&self, received_at: i64) -> EventMeaning {
        let at = self.created_at.unwrap_or(received_at);
        let o = &self.object;
        match self.event_type.as_str() {
            "checkout.completed" => {
                // The checkout object: `product` and `customer` expanded,
                // `subscription` expanded with product/customer as ids, `order`
                // with ids, `metadata` as given at creation.
                let sub = &o["subscription"];
                let Some(subscription_id) = ref_id(sub) else {
                    return EventMeaning::NotApplicable(
                        "checkout without a subscription (a one-time purchase)".into(),
                    );
                };
                EventMeaning::Subscription(SubscriptionEvent {
                    intent: Intent::Sync,
                    user_id: metadata_user(&o["metadata"])
                        .or_else(|| metadata_user(&sub["metadata"])),
                    customer_id: ref_id(&o["customer"])
                        .or_else(|| ref_id(&o["order"]["customer"]))
                        .or_else(|| ref_id(&sub["customer"])),
                    subscription_id: Some(subscription_id),
                    product_id: ref_id(&o["product"])
                        .or_else(|| ref_id(&sub["product"]))
                        .or_else(|| ref_id(&o["order"]["product"])),
                    // A completed checkout is paid.
                    status: str_field(sub, "status").unwrap_or_else(|| "active".into()),
                    period_end: str_field(sub, "current_period_end_date")
                        .as_deref()
                        .and_then(rfc3339_ms),
                    at,
                })
            }
            t @ ("subscription.active"
            | "subscription.paid"
            | "subscription.update"
            | "subscription.trialing"
            | "subscription.scheduled_cancel"
            | "subscription.canceled"
            | "subscription.expired"
            | "subscription.paused") => {
                // The subscription object, `product` and `customer` expanded.
                let word = t.trim_start_matches("subscription.");
                let (intent, status) = match word {
                    "canceled" | "expired" | "paused" => (Intent::End, word.to_string()),
                    _ => (
                        Intent::Sync,
                        str_field(o, "status").unwrap_or_else(|| match word {
                            "paid" => "active".into(),
                            other => other.to_string(),
                        }),
                    ),
                };
                EventMeaning::Subscription(SubscriptionEvent {
                    intent,
                    user_id: metadata_user(&o["metadata"]),
                    customer_id: ref_id(&o["customer"]),
                    subscription_id: str_field(o, "id"),
                    product_id: ref_id(&o["product"]),
                    status,
                    period_end: str_field(o, "current_period_end_date")
                        .as_deref()
                        .and_then(rfc3339_ms),
                    at,
                })
            }
            t @ ("refund.created" | "dispute.created") => {
                // The refund (or dispute) object: `transaction` (with `status`,
                // `amount_paid`, `refunded_amount`), `subscription` and
                // `checkout` (with its metadata), `customer`.
                let dispute = t == "dispute.created";
                let sub = &o["subscription"];
                let tx = &o["transaction"];
                let subscription_id = ref_id(sub).or_else(|| str_field(tx, "subscription"));
                let Some(subscription_id) = subscription_id else {
                    return EventMeaning::NotApplicable(format!(
                        "{} of a payment that is not a subscription's",
                        if dispute { "dispute" } else { "refund" }
                    ));
                };
                let full = match tx {
                    Value::Object(_) => {
                        let refunded = tx["refunded_amount"]
                            .as_i64()
                            .or_else(|| o["refund_amount"].as_i64())
                            .unwrap_or(0);
                        tx["status"].as_str() == Some("refunded")
                            || tx["amount_paid"]
                                .as_i64()
                                .is_some_and(|paid| refunded >= paid)
                    }
                    // Without the transaction we cannot tell a partial refund.
                    _ => true,
                };
                EventMeaning::Subscription(SubscriptionEvent {
                    intent: if dispute {
                        Intent::Dispute
                    } else {
                        Intent::Refund { full }
                    },
                    user_id: metadata_user(&o["checkout"]["metadata"])
                        .or_else(|| metadata_user(&sub["metadata"])),
                    customer_id: ref_id(&o["customer"]).or_else(|| ref_id(&sub["customer"])),
                    subscription_id: Some(subscription_id),
                    product_id: ref_id(&sub["product"]),
                    status: if dispute { "disputed" } else { "refunded" }.into(),
                    period_end: None,
                    at,
                })
            }
            _ => EventMeaning::Unknown,
        }
    }
}

#[cfg(test)]
mod tests;
