//! Subscription billing through Creem (creem.io): the `billing:` config section,
//! the HTTP client (`creem`), and what a webhook event means for a user's plan.
//!
//! Billing is optional. Without a `billing` section users stay on the plans an
//! administrator gives them and nothing is sold.
//!
//! The rules a webhook follows (see `decide`):
//! - the user comes from the checkout's metadata (our user id), else from the
//!   Creem subscription or customer id already stored for them;
//! - the plan comes from the product id, through `billing.products`;
//! - an event older than the last one applied to the user (by the event's
//!   `created_at`) changes nothing, so late or out-of-order deliveries never
//!   undo a newer state;
//! - an old subscription's end (canceled, expired, refunded) does not take
//!   away the plan of a newer, active subscription;
//! - canceled, expired, paused and fully refunded subscriptions put the user
//!   back on `default_plan` (or `free`).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config::PlanConfig;

pub mod creem;

/// Creem's test-mode API; live mode is `https://api.creem.io`.
pub const TEST_API_BASE: &str = "https://test-api.creem.io";
pub const LIVE_API_BASE: &str = "https://api.creem.io";

/// The checkout metadata key that carries our user id through to every webhook
/// of the subscription.
pub const USER_ID_METADATA: &str = "bluesminds_user_id";

/// Plan of users without a paid subscription when `default_plan` is not set.
pub const FALLBACK_PLAN: &str = "free";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillingConfig {
    /// Creem's API: `https://test-api.creem.io` (test mode, the default) or
    /// `https://api.creem.io` (live).
    #[serde(default = "default_api_base")]
    pub api_base: String,
    /// Environment variable holding the Creem API key (sent as `x-api-key`).
    #[serde(default = "default_api_key_env")]
    pub api_key_env: String,
    /// Environment variable holding the webhook signing secret.
    #[serde(default = "default_webhook_secret_env")]
    pub webhook_secret_env: String,
    /// Where Creem sends the customer after paying (else the product's own
    /// default success URL).
    #[serde(default)]
    pub success_url: Option<String>,
    /// Plan name -> Creem product id (`prod_...`) that sells it.
    #[serde(default)]
    pub products: BTreeMap<String, String>,
}

fn default_api_base() -> String {
    TEST_API_BASE.into()
}

fn default_api_key_env() -> String {
    "CREEM_API_KEY".into()
}

fn default_webhook_secret_env() -> String {
    "CREEM_WEBHOOK_SECRET".into()
}

fn http_url(url: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") if uri.host().is_some() => Ok(uri),
        _ => Err(format!("`{url}` must be an http:// or https:// URL")),
    }
}

fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn env_set(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| !v.trim().is_empty())
}

impl BillingConfig {
    /// Checks the section against the configured plans and `default_plan`; errors
    /// name the field (`billing.products.pro`) and say what is wrong, as
    /// `Config::validate` does.
    pub fn validate(
        &self,
        plans: &BTreeMap<String, PlanConfig>,
        default_plan: Option<&str>,
    ) -> Result<(), (String, String)> {
        let err = |f: &str, m: String| Err((format!("billing.{f}"), m));
        let base = http_url(&self.api_base).map_err(|m| ("billing.api_base".to_string(), m))?;
        // The API key goes to this origin with every call: never in clear over
        // a network (plain http only to this machine, as the tests' fake Creem).
        if base.scheme_str() == Some("http") && !is_loopback_host(base.host().unwrap_or("")) {
            return err(
                "api_base",
                format!(
                    "`{}` is plain http: the Creem API key would cross the network in clear; use https (plain http is only for a loopback address)",
                    self.api_base
                ),
            );
        }
        if base.query().is_some() || !matches!(base.path(), "" | "/") {
            return err(
                "api_base",
                format!(
                    "`{}` must be the API's origin only, like {TEST_API_BASE}",
                    self.api_base
                ),
            );
        }
        for (field, var) in [
            ("api_key_env", &self.api_key_env),
            ("webhook_secret_env", &self.webhook_secret_env),
        ] {
            if var.trim().is_empty() {
                return err(field, "must name an environment variable".into());
            }
            if !env_set(var) {
                return err(field, format!("environment variable `{var}` is not set"));
            }
        }
        if let Some(url) = &self.success_url {
            http_url(url).map_err(|m| ("billing.success_url".to_string(), m))?;
        }
        if self.products.is_empty() {
            return err(
                "products",
                "list at least one plan and the Creem product id that sells it".into(),
            );
        }
        // Users whose subscription ends go there: it must exist, or they would be
        // left with no plan limits at all.
        let fallback = fallback_plan(default_plan);
        if !plans.contains_key(&fallback) {
            return err(
                "products",
                format!(
                    "users whose subscription ends go back to plan `{fallback}` (`default_plan`, else `free`), which is not defined in `plans`"
                ),
            );
        }
        if self.products.contains_key(&fallback) {
            return err(
                &format!("products.{fallback}"),
                format!(
                    "`{fallback}` is the plan of users without a subscription; it cannot be sold"
                ),
            );
        }
        let mut seen = std::collections::HashMap::new();
        for (plan, product) in &self.products {
            let at = format!("products.{plan}");
            if !plans.contains_key(plan) {
                return err(&at, format!("plan `{plan}` is not defined in `plans`"));
            }
            let product = product.trim();
            if product.is_empty() || product.chars().any(char::is_whitespace) {
                return err(&at, format!("`{product}` is not a Creem product id"));
            }
            if let Some(other) = seen.insert(product, plan) {
                return err(
                    &at,
                    format!("product `{product}` already sells plan `{other}`"),
                );
            }
        }
        Ok(())
    }

    /// The API origin without a trailing slash.
    pub fn base(&self) -> &str {
        self.api_base.trim_end_matches('/')
    }

    /// The plan a Creem product sells.
    pub fn plan_of_product(&self, product_id: &str) -> Option<&str> {
        self.products
            .iter()
            .find(|(_, p)| p.trim() == product_id)
            .map(|(plan, _)| plan.as_str())
    }

    pub fn product_of_plan(&self, plan: &str) -> Option<&str> {
        self.products.get(plan).map(|p| p.trim())
    }

    pub fn api_key(&self) -> Option<String> {
        std::env::var(&self.api_key_env)
            .ok()
            .filter(|v| !v.trim().is_empty())
    }

    pub fn webhook_secret(&self) -> Option<String> {
        std::env::var(&self.webhook_secret_env)
            .ok()
            .filter(|v| !v.is_empty())
    }
}

/// The plan users fall back to without a paid subscription.
pub fn fallback_plan(default_plan: Option<&str>) -> String {
    default_plan.unwrap_or(FALLBACK_PLAN).to_string()
}

/// Subscription statuses (Creem's) under which the customer has paid access.
pub fn status_grants_access(status: &str) -> bool {
    matches!(status, "active" | "trialing" | "scheduled_cancel")
}

/// The subscription as we last stored it for a user.
#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow)]
pub struct SubscriptionRecord {
    pub user_id: i64,
    pub creem_customer_id: Option<String>,
    pub creem_subscription_id: Option<String>,
    pub product_id: Option<String>,
    pub plan: String,
    pub status: String,
    /// Unix milliseconds.
    pub current_period_end: Option<i64>,
    pub updated_at: i64,
    /// `created_at` of the newest Creem event applied (unix milliseconds).
    pub last_event_at: i64,
}

/// What an event asks for, once read from Creem's payload.
#[derive(Debug, Clone, PartialEq)]
pub enum Intent {
    /// Paid access to the product's plan, or a status/period update
    /// (`checkout.completed`, `subscription.active|paid|update|trialing|...`):
    /// the plan follows the subscription's status.
    Sync,
    /// The subscription ended (`subscription.canceled|expired|paused`).
    End,
    /// A refund (`refund.created`); only a full refund ends access.
    Refund { full: bool },
    /// A chargeback (`dispute.created`): the money is being taken back, so
    /// access ends at once, as for a full refund.
    Dispute,
}

/// The facts of a subscription event, whichever Creem object carried them.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionEvent {
    pub intent: Intent,
    /// Our user id, from the checkout or subscription metadata.
    pub user_id: Option<i64>,
    pub customer_id: Option<String>,
    pub subscription_id: Option<String>,
    pub product_id: Option<String>,
    /// The status the event reports (Creem's words), or the one its type implies.
    pub status: String,
    pub period_end: Option<i64>,
    /// The event's `created_at` (unix milliseconds).
    pub at: i64,
}

/// The row to store and the plan the user ends up on.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub user_id: i64,
    pub customer_id: Option<String>,
    pub subscription_id: Option<String>,
    pub product_id: Option<String>,
    pub plan: String,
    pub status: String,
    pub period_end: Option<i64>,
    pub at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Apply(Change),
    /// Recorded as seen, changes nothing.
    Ignore(String),
}

/// What `ev` does to a user whose stored subscription is `current`.
pub fn decide(
    billing: &BillingConfig,
    default_plan: Option<&str>,
    user_id: i64,
    user_plan: &str,
    current: Option<&SubscriptionRecord>,
    ev: &SubscriptionEvent,
) -> Decision {
    if let Some(cur) = current {
        if ev.at < cur.last_event_at {
            return Decision::Ignore(format!(
                "stale: created at {} but an event of {} was already applied",
                ev.at, cur.last_event_at
            ));
        }
    }
    let other_subscription = match (current, &ev.subscription_id) {
        (Some(cur), Some(id)) => cur
            .creem_subscription_id
            .as_ref()
            .is_some_and(|stored| stored != id),
        _ => false,
    };
    let current_active = current.is_some_and(|c| status_grants_access(&c.status));
    let fallback = fallback_plan(default_plan);
    let product_plan = ev
        .product_id
        .as_deref()
        .and_then(|p| billing.plan_of_product(p))
        .map(str::to_string);
    let (plan, status) = match &ev.intent {
        Intent::Sync => {
            if status_grants_access(&ev.status) {
                match product_plan {
                    Some(plan) => (plan, ev.status.clone()),
                    None => {
                        return Decision::Ignore(format!(
                            "product {:?} is not in billing.products",
                            ev.product_id
                        ))
                    }
                }
            } else if matches!(ev.status.as_str(), "canceled" | "expired" | "paused") {
                if other_subscription && current_active {
                    return Decision::Ignore(
                        "an older subscription ended; a newer one is active".into(),
                    );
                }
                (fallback, ev.status.clone())
            } else {
                // `unpaid` and statuses we do not know: Creem is still retrying
                // the payment; the plan stays until the subscription ends.
                let keep = current.map_or_else(|| user_plan.to_string(), |c| c.plan.clone());
                (keep, ev.status.clone())
            }
        }
        Intent::End => {
            if other_subscription && current_active {
                return Decision::Ignore(
                    "an older subscription ended; a newer one is active".into(),
                );
            }
            (fallback, ev.status.clone())
        }
        Intent::Refund { full } => {
            if !full {
                return Decision::Ignore("partial refund: the plan stays".into());
            }
            if other_subscription && current_active {
                return Decision::Ignore(
                    "refund of an older subscription; a newer one is active".into(),
                );
            }
            (fallback, "refunded".to_string())
        }
        Intent::Dispute => (fallback, "disputed".to_string()),
    };
    Decision::Apply(Change {
        user_id,
        customer_id: ev.customer_id.clone(),
        subscription_id: ev.subscription_id.clone(),
        product_id: ev.product_id.clone(),
        plan,
        status,
        period_end: ev.period_end,
        at: ev.at,
    })
}

#[cfg(test)]
mod tests;
