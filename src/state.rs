//! What the proxy and the side app share.

use std::sync::Arc;

use arc_swap::ArcSwap;

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
    /// Swapped whole when admin-managed servers change; a request keeps the pool it started with.
    pub upstreams: ArcSwap<Upstreams>,
    pub prices: PriceTable,
    pub usage: UsageQueue,
    pub limiter: Limiter,
    pub login_throttle: crate::auth::LoginThrottle,
    pub quotas: QuotaLedger,
    pub metrics: Metrics,
    pub store: Store,
    /// Bearer token of the admin API (from the env var `admin.token_env` names).
    pub admin_token: Option<String>,
    /// Unix seconds at start, shown as `created` in the models list.
    pub started_at: u64,
}

impl AppState {
    /// Rebuilds the pools from config and the stored servers and swaps them in.
    pub async fn reload_upstreams(&self) -> Result<(), String> {
        let servers = self.store.list_servers().await.map_err(|e| e.to_string())?;
        let built = Upstreams::build(&self.config, &servers).await?;
        self.upstreams.store(Arc::new(built));
        tracing::info!(admin_servers = servers.len(), "upstream pools rebuilt");
        Ok(())
    }

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
