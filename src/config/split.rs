//! The config as the running gateway holds it: what needs a restart
//! (`BootConfig`) apart from what a reload replaces (`LiveConfig`), as two
//! types, so code cannot read a start-up value where a reloaded one applies.

use std::collections::{BTreeMap, HashMap};

use super::*;

/// The part of the config that takes effect only at start: listeners (and
/// whether they speak TLS), threads, database, usage queue, admin token and
/// Redis. A reload that changes it is
/// logged and otherwise ignored, so nothing reads it from a reloaded file.
#[derive(Debug, Clone, PartialEq)]
pub struct BootConfig {
    pub proxy_listen: std::net::SocketAddr,
    pub admin_listen: std::net::SocketAddr,
    pub threads: usize,
    pub grace_period_secs: u64,
    pub watch_config: bool,
    pub max_body_bytes_in_flight: usize,
    pub database: DatabaseConfig,
    pub usage: UsageConfig,
    pub admin_token_env: Option<String>,
    pub redis: Option<RedisConfig>,
    /// Which certificate files both listeners serve; the files' contents
    /// reload, the setting does not.
    pub tls: Option<TlsConfig>,
    pub metrics_listen: Option<std::net::SocketAddr>,
    pub side: SideListenerSettings,
    pub trusted_proxies: crate::client_ip::TrustedProxies,
}

/// How the side app's listener (and the metrics listener) serve connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SideListenerSettings {
    pub header_timeout: std::time::Duration,
    pub request_timeout: std::time::Duration,
    pub max_connections: usize,
}

impl BootConfig {
    /// The config fields that differ from `other`'s, by their YAML names.
    pub fn changed_fields(&self, other: &BootConfig) -> Vec<&'static str> {
        [
            (
                "server.proxy_listen",
                self.proxy_listen != other.proxy_listen,
            ),
            (
                "server.admin_listen",
                self.admin_listen != other.admin_listen,
            ),
            ("server.threads", self.threads != other.threads),
            (
                "server.grace_period_secs",
                self.grace_period_secs != other.grace_period_secs,
            ),
            (
                "server.watch_config",
                self.watch_config != other.watch_config,
            ),
            (
                "server.max_body_bytes_in_flight",
                self.max_body_bytes_in_flight != other.max_body_bytes_in_flight,
            ),
            ("database", self.database != other.database),
            ("usage", self.usage != other.usage),
            (
                "admin.token_env",
                self.admin_token_env != other.admin_token_env,
            ),
            ("redis", self.redis != other.redis),
            ("server.tls", self.tls != other.tls),
            (
                "server.trusted_proxies",
                self.trusted_proxies != other.trusted_proxies,
            ),
            (
                "server.metrics_listen",
                self.metrics_listen != other.metrics_listen,
            ),
            (
                "server.side_header_timeout_secs",
                self.side.header_timeout != other.side.header_timeout,
            ),
            (
                "server.side_request_timeout_secs",
                self.side.request_timeout != other.side.request_timeout,
            ),
            (
                "server.side_max_connections",
                self.side.max_connections != other.side.max_connections,
            ),
        ]
        .into_iter()
        .filter_map(|(name, changed)| changed.then_some(name))
        .collect()
    }
}

/// The part of the config a reload replaces as a whole. It is only read
/// through a `state::Snapshot`, which a request takes once at admission.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    pub proxy: ProxySettings,
    pub health_check: HealthCheckConfig,
    pub dns: DnsConfig,
    pub pools: Vec<PoolConfig>,
    pub prices: HashMap<String, Price>,
    pub limits: LimitSettings,
    pub plans: BTreeMap<String, PlanConfig>,
    pub default_plan: Option<String>,
    pub accounts: AccountSettings,
    pub billing: Option<crate::billing::BillingConfig>,
    pub admin_servers: AdminServersConfig,
}

/// The proxy's reloadable settings (from `server:`).
#[derive(Debug, Clone, Copy)]
pub struct ProxySettings {
    pub max_body_bytes: usize,
    pub body_timeout: std::time::Duration,
    pub connect_timeout: std::time::Duration,
    pub read_timeout: std::time::Duration,
}

/// Dashboard accounts (from `admin:` and `admin_emails`).
#[derive(Debug, Clone)]
pub struct AccountSettings {
    pub allow_signup: bool,
    pub key_rotation_grace_secs: u64,
    pub secure_cookies: bool,
    pub signups_per_ip_per_hour: u32,
    pub max_key_rotation_grace_secs: u64,
    pub session_idle: std::time::Duration,
}

impl LiveConfig {
    /// The plan a user (or a key's owner) is on: the assigned one while it is
    /// configured, else `default_plan`. The proxy's limits and the dashboard's
    /// pages both resolve plans here.
    pub fn plan(&self, assigned: Option<&str>) -> Option<(&str, &PlanConfig)> {
        let named = |name: &str| self.plans.get_key_value(name);
        assigned
            .and_then(named)
            .or_else(|| self.default_plan.as_deref().and_then(named))
            .map(|(name, plan)| (name.as_str(), plan))
    }
}

impl Config {
    /// `split` for a config re-read by a running gateway: `server.tls` takes
    /// effect only at a restart, so the cookies' `Secure` keeps following the
    /// TLS in force (`running`), not the file's.
    pub fn split_reloaded(self, running: &BootConfig) -> (BootConfig, LiveConfig) {
        let explicit = self.admin.secure_cookies;
        let (boot, mut live) = self.split();
        live.accounts.secure_cookies = explicit || running.tls.is_some();
        (boot, live)
    }

    /// Separates what needs a restart from what a reload replaces.
    pub fn split(self) -> (BootConfig, LiveConfig) {
        let server = self.server;
        let boot = BootConfig {
            proxy_listen: server.proxy_listen,
            admin_listen: server.admin_listen,
            threads: server.threads,
            grace_period_secs: server.grace_period_secs,
            watch_config: server.watch_config,
            max_body_bytes_in_flight: server.max_body_bytes_in_flight,
            database: self.database,
            usage: self.usage,
            admin_token_env: self.admin.token_env,
            redis: self.redis,
            tls: server.tls.clone(),
            metrics_listen: server.metrics_listen,
            side: SideListenerSettings {
                header_timeout: std::time::Duration::from_secs(server.side_header_timeout_secs),
                request_timeout: std::time::Duration::from_secs(server.side_request_timeout_secs),
                max_connections: server.side_max_connections,
            },
            trusted_proxies: server.trusted_proxies.clone(),
        };
        let live = LiveConfig {
            proxy: ProxySettings {
                max_body_bytes: server.max_body_bytes,
                body_timeout: std::time::Duration::from_secs(server.body_timeout_secs),
                connect_timeout: std::time::Duration::from_millis(server.connect_timeout_ms),
                read_timeout: std::time::Duration::from_secs(server.read_timeout_secs),
            },
            health_check: self.health_check,
            dns: self.dns,
            pools: self.pools,
            prices: self.prices,
            limits: self.limits,
            plans: self.plans,
            default_plan: self.default_plan,
            accounts: AccountSettings {
                allow_signup: self.admin.allow_signup,
                key_rotation_grace_secs: self.admin.key_rotation_grace_secs,
                // Over HTTPS a session cookie must never go out in clear.
                secure_cookies: self.admin.secure_cookies || server.tls.is_some(),
                signups_per_ip_per_hour: self.admin.signups_per_ip_per_hour,
                max_key_rotation_grace_secs: self.admin.max_key_rotation_grace_secs,
                session_idle: std::time::Duration::from_secs(self.admin.session_idle_secs),
            },
            billing: self.billing,
            admin_servers: self.admin_servers,
        };
        (boot, live)
    }
}
