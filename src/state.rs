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
    /// The config the process started with: listeners, database, usage queue and
    /// admin settings, which need a restart to change.
    pub config: Arc<Config>,
    /// The latest valid config (hot-reloaded): pools, prices, limits, plans, timeouts.
    pub live: ArcSwap<Config>,
    /// Where the config came from, for reloads.
    pub config_path: Option<std::path::PathBuf>,
    pub keys: KeyCache,
    /// Swapped whole when admin-managed servers change; a request keeps the pool it started with.
    pub upstreams: ArcSwap<Upstreams>,
    pub prices: ArcSwap<PriceTable>,
    pub usage: UsageQueue,
    pub limiter: Arc<Limiter>,
    pub login_throttle: crate::auth::LoginThrottle,
    pub quotas: QuotaLedger,
    pub metrics: Metrics,
    pub store: Store,
    /// Bearer token of the admin API (from the env var `admin.token_env` names).
    pub admin_token: Option<String>,
    /// Unix seconds at start, shown as `created` in the models list.
    pub started_at: u64,
    /// Set on SIGTERM: /readyz answers 503 so load balancers stop sending new
    /// requests while open streams finish.
    pub draining: std::sync::atomic::AtomicBool,
}

impl AppState {
    /// Rebuilds the pools from config and the stored servers and swaps them in.
    pub async fn reload_upstreams(&self) -> Result<(), String> {
        let servers = self.store.list_servers().await.map_err(|e| e.to_string())?;
        let built = Upstreams::build(&self.live.load(), &servers).await?;
        self.upstreams.store(Arc::new(built));
        tracing::info!(admin_servers = servers.len(), "upstream pools rebuilt");
        Ok(())
    }

    /// The plan of a key's owner: theirs if it is configured, else `default_plan`.
    /// Keys without an owner have no plan.
    pub fn plan_of(&self, key: &crate::auth::ApiKey) -> Option<PlanConfig> {
        key.user_id?;
        let live = self.live.load();
        let plans = &live.plans;
        key.plan
            .as_deref()
            .and_then(|p| plans.get(p))
            .or_else(|| live.default_plan.as_deref().and_then(|p| plans.get(p)))
            .cloned()
    }

    /// Re-reads the config file: a valid one replaces pools, prices, limits and
    /// plans at once (requests in flight keep what they started with); an invalid
    /// one is rejected with a log line and the current config keeps serving.
    pub async fn reload_config(&self) -> Result<(), String> {
        let path = self
            .config_path
            .as_ref()
            .ok_or("no config file to reload")?;
        let result = self.try_reload(path).await;
        match &result {
            Ok(()) => {
                self.metrics.config_reloads.with_label_values(&["ok"]).inc();
                tracing::info!(path = %path.display(), "config reloaded");
            }
            Err(e) => {
                self.metrics
                    .config_reloads
                    .with_label_values(&["rejected"])
                    .inc();
                tracing::error!(path = %path.display(), error = %e, "config reload rejected; the previous config keeps serving");
            }
        }
        result
    }

    async fn try_reload(&self, path: &std::path::Path) -> Result<(), String> {
        let new = Config::load(path).map_err(|e| e.to_string())?;
        let started = &self.config;
        for (what, changed) in [
            (
                "server.proxy_listen",
                new.server.proxy_listen != started.server.proxy_listen,
            ),
            (
                "server.admin_listen",
                new.server.admin_listen != started.server.admin_listen,
            ),
            (
                "server.threads",
                new.server.threads != started.server.threads,
            ),
            ("database", new.database.url != started.database.url),
            (
                "usage",
                new.usage.spill_path != started.usage.spill_path
                    || new.usage.queue_capacity != started.usage.queue_capacity,
            ),
            (
                "admin.token_env",
                new.admin.token_env != started.admin.token_env,
            ),
        ] {
            if changed {
                tracing::warn!(field = what, "config change needs a restart to take effect");
            }
        }
        let servers = self.store.list_servers().await.map_err(|e| e.to_string())?;
        let upstreams = Upstreams::build(&new, &servers).await?;
        self.prices.store(Arc::new(PriceTable::new(&new.prices)));
        self.upstreams.store(Arc::new(upstreams));
        self.live.store(Arc::new(new));
        Ok(())
    }

    /// A key's effective limits: its own, else its plan's, else the config defaults.
    pub fn key_limits(
        &self,
        key: &crate::auth::ApiKey,
        plan: Option<&PlanConfig>,
    ) -> LimitSettings {
        let defaults = self.live.load().limits;
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
