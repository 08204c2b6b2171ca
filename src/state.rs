//! What the proxy and the side app share.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::auth::{ApiKey, KeyCache};
use crate::config::{BootConfig, Config, LimitSettings, LiveConfig, PlanConfig};
use crate::limits::{Limiter, QuotaLedger};
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};
use crate::upstream::{UpstreamError, Upstreams};
use crate::usage::{Ledger, PriceTable};

/// Everything a reload replaces, swapped as one: a request takes one snapshot at
/// admission and uses it to its end, so a reload mid-request never mixes the
/// pools of one config with the prices or limits of another.
pub struct Snapshot {
    pub config: Arc<LiveConfig>,
    pub upstreams: Arc<Upstreams>,
    pub prices: Arc<PriceTable>,
}

impl Snapshot {
    /// The plan of a key's owner; keys without an owner have no plan.
    pub fn plan_of(&self, key: &ApiKey) -> Option<&PlanConfig> {
        key.user_id?;
        self.config.plan(key.plan.as_deref()).map(|(_, plan)| plan)
    }

    /// A key's effective limits: its own, else its plan's, else the config defaults.
    pub fn key_limits(&self, key: &ApiKey, plan: Option<&PlanConfig>) -> LimitSettings {
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

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("no config file to reload")]
    NoConfigFile,
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot read the admin-added servers: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Upstreams(#[from] UpstreamError),
}

pub struct AppState {
    /// What the process started with and keeps until it restarts.
    pub boot: BootConfig,
    live: ArcSwap<Snapshot>,
    /// Serializes the two rebuilders of `live` (a config reload and a change of
    /// admin-added servers), so neither overwrites the other's result.
    rebuilding: tokio::sync::Mutex<()>,
    /// Where the config came from, for reloads.
    pub config_path: Option<std::path::PathBuf>,
    pub keys: KeyCache,
    pub usage: Ledger,
    pub limiter: Arc<Limiter>,
    /// Bytes of request bodies being read or held now (`server.max_body_bytes_in_flight`).
    pub body_budget: Arc<tokio::sync::Semaphore>,
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

/// The parts of `AppState` that `server::run` builds before the state itself.
pub struct Parts {
    pub boot: BootConfig,
    pub live: LiveConfig,
    pub upstreams: Upstreams,
    pub config_path: Option<std::path::PathBuf>,
    pub keys: KeyCache,
    pub usage: Ledger,
    pub limiter: Arc<Limiter>,
    pub quotas: QuotaLedger,
    pub metrics: Metrics,
    pub store: Store,
    pub login_throttle: crate::auth::LoginThrottle,
}

impl AppState {
    pub fn new(p: Parts) -> Self {
        let admin_token = p
            .boot
            .admin_token_env
            .as_ref()
            .and_then(|var| std::env::var(var).ok());
        Self {
            live: ArcSwap::from_pointee(Snapshot {
                prices: Arc::new(PriceTable::new(&p.live.prices)),
                config: Arc::new(p.live),
                upstreams: Arc::new(p.upstreams),
            }),
            body_budget: Arc::new(tokio::sync::Semaphore::new(p.boot.max_body_bytes_in_flight)),
            boot: p.boot,
            rebuilding: tokio::sync::Mutex::new(()),
            config_path: p.config_path,
            keys: p.keys,
            usage: p.usage,
            limiter: p.limiter,
            login_throttle: p.login_throttle,
            quotas: p.quotas,
            metrics: p.metrics,
            store: p.store,
            admin_token,
            started_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            draining: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The reloadable config, pools and prices in force now. Take it once per
    /// request or page and read everything from it.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.live.load_full()
    }

    /// Rebuilds the pools from the config in force and the stored servers.
    pub async fn reload_upstreams(&self) -> Result<(), ReloadError> {
        let _one_at_a_time = self.rebuilding.lock().await;
        let servers = self.store.list_servers().await?;
        let current = self.snapshot();
        let upstreams = Upstreams::build(&current.config, &servers).await?;
        self.live.store(Arc::new(Snapshot {
            config: current.config.clone(),
            upstreams: Arc::new(upstreams),
            prices: current.prices.clone(),
        }));
        tracing::info!(admin_servers = servers.len(), "upstream pools rebuilt");
        Ok(())
    }

    /// Re-reads the config file: a valid one replaces pools, prices, limits and
    /// plans at once (requests in flight keep what they started with); an invalid
    /// one is rejected with a log line and the current config keeps serving.
    pub async fn reload_config(&self) -> Result<(), ReloadError> {
        let path = self.config_path.as_ref().ok_or(ReloadError::NoConfigFile)?;
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

    async fn try_reload(&self, path: &std::path::Path) -> Result<(), ReloadError> {
        let (boot, live) = Config::load_for_reload(path)?.split_reloaded(&self.boot);
        for field in boot.changed_fields(&self.boot) {
            tracing::warn!(field, "config change needs a restart to take effect");
        }
        let _one_at_a_time = self.rebuilding.lock().await;
        let servers = self.store.list_servers().await?;
        let upstreams = Upstreams::build(&live, &servers).await?;
        self.live.store(Arc::new(Snapshot {
            prices: Arc::new(PriceTable::new(&live.prices)),
            config: Arc::new(live),
            upstreams: Arc::new(upstreams),
        }));
        Ok(())
    }
}
