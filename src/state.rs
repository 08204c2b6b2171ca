//! What the proxy and the side app share.

use std::sync::Arc;

use crate::auth::KeyCache;
use crate::config::{Config, LimitSettings, PlanConfig};
use crate::limits::{Limiter, QuotaLedger};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::upstream::Upstreams;
use crate::usage::{PriceTable, UsageQueue};

pub struct AppState {
    pub config: Arc<Config>,
    pub keys: KeyCache,
    pub upstreams: Arc<Upstreams>,
    pub prices: PriceTable,
    pub usage: UsageQueue,
    pub limiter: Limiter,
    pub quotas: QuotaLedger,
    pub metrics: Metrics,
    pub store: Store,
    /// Bearer token of the admin API (from the env var `admin.token_env` names).
    pub admin_token: Option<String>,
    /// Unix seconds at start, shown as `created` in the models list.
    pub started_at: u64,
}

impl AppState {
    /// The plan of a key's owner: theirs if it is configured, else `default_plan`.
    /// Keys without an owner have no plan.
    pub fn plan_of(&self, key: &crate::auth::ApiKey) -> Option<&PlanConfig> {
        key.user_id?;
        let plans = &self.config.plans;
        key.plan.as_deref().and_then(|p| plans.get(p)).or_else(|| {
            self.config
                .default_plan
                .as_deref()
                .and_then(|p| plans.get(p))
        })
    }

    /// A key's effective limits: its own, else its plan's, else the config defaults.
    pub fn key_limits(
        &self,
        key: &crate::auth::ApiKey,
        plan: Option<&PlanConfig>,
    ) -> LimitSettings {
        let defaults = self.config.limits;
        let pick = |own: Option<u64>, from_plan: Option<u64>, default: Option<u64>| {
            own.or(from_plan).or(default)
        };
        LimitSettings {
            rpm: pick(key.limits.rpm, plan.and_then(|p| p.rpm), defaults.rpm),
            tpm: pick(key.limits.tpm, plan.and_then(|p| p.tpm), defaults.tpm),
            concurrency: pick(
                key.limits.concurrency,
                plan.and_then(|p| p.concurrency),
                defaults.concurrency,
            ),
        }
    }
}
