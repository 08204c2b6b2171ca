//! Typed gateway configuration, read from YAML and validated once at start.
//!
//! Every struct denies unknown fields so a typo fails loudly instead of being
//! silently ignored; errors name the field path and, for syntax and type errors,
//! the line in the file.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;

use serde::Deserialize;

/// Largest request body the gateway can accept: the vendored Pingora retry buffer
/// (see vendor/README.md) must hold a whole pre-read body.
pub const MAX_BODY_LIMIT: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub usage: UsageConfig,
    #[serde(default)]
    pub health_check: HealthCheckConfig,
    #[serde(default)]
    pub pools: Vec<PoolConfig>,
    /// Model name -> price in USD per 1M tokens.
    #[serde(default)]
    pub prices: HashMap<String, Price>,
    /// Limits for keys that have none of their own and no user plan.
    #[serde(default)]
    pub limits: LimitSettings,
    /// Plan name -> limits and monthly quota of the users on it.
    #[serde(default)]
    pub plans: BTreeMap<String, PlanConfig>,
    /// Plan of users whose plan is not (or no longer) in `plans`.
    #[serde(default)]
    pub default_plan: Option<String>,
    #[serde(default)]
    pub admin: AdminConfig,
    /// Users with these emails are admins of the dashboard and admin API.
    #[serde(default)]
    pub admin_emails: Vec<String>,
    /// Subscription billing through Creem; without it plans are assigned by an admin.
    #[serde(default)]
    pub billing: Option<crate::billing::BillingConfig>,
    /// Several instances: cluster-wide limits and cache invalidation through Redis.
    #[serde(default)]
    pub redis: Option<RedisConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:6379/0`.
    pub url: String,
    /// Prefix of every key and channel, so several gateways can share one Redis.
    #[serde(default = "default_redis_prefix")]
    pub prefix: String,
    /// How often local limit buckets are reconciled with the other instances.
    #[serde(default = "default_sync_ms")]
    pub sync_ms: u64,
}

fn default_redis_prefix() -> String {
    "bluesminds:".into()
}

fn default_sync_ms() -> u64 {
    100
}

/// The part of the config that takes effect only at start: listeners, threads,
/// database, usage queue, admin token and Redis. A reload that changes it is
/// logged and otherwise ignored, so nothing reads it from a reloaded file.
#[derive(Debug, Clone, PartialEq)]
pub struct BootConfig {
    pub proxy_listen: String,
    pub admin_listen: String,
    pub threads: usize,
    pub grace_period_secs: u64,
    pub watch_config: bool,
    pub database: DatabaseConfig,
    pub usage: UsageConfig,
    pub admin_token_env: Option<String>,
    pub redis: Option<RedisConfig>,
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
            ("database", self.database != other.database),
            ("usage", self.usage != other.usage),
            (
                "admin.token_env",
                self.admin_token_env != other.admin_token_env,
            ),
            ("redis", self.redis != other.redis),
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
    pub pools: Vec<PoolConfig>,
    pub prices: HashMap<String, Price>,
    pub limits: LimitSettings,
    pub plans: BTreeMap<String, PlanConfig>,
    pub default_plan: Option<String>,
    pub accounts: AccountSettings,
    pub billing: Option<crate::billing::BillingConfig>,
}

/// The proxy's reloadable settings (from `server:`).
#[derive(Debug, Clone, Copy)]
pub struct ProxySettings {
    pub max_body_bytes: usize,
    pub connect_timeout: std::time::Duration,
    pub read_timeout: std::time::Duration,
}

/// Dashboard accounts (from `admin:` and `admin_emails`).
#[derive(Debug, Clone)]
pub struct AccountSettings {
    pub allow_signup: bool,
    pub key_rotation_grace_secs: u64,
    pub secure_cookies: bool,
    pub admin_emails: Vec<String>,
}

impl AccountSettings {
    pub fn is_admin_email(&self, email: &str) -> bool {
        self.admin_emails
            .iter()
            .any(|a| a.eq_ignore_ascii_case(email))
    }
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
    /// Separates what needs a restart from what a reload replaces.
    pub fn split(self) -> (BootConfig, LiveConfig) {
        let server = self.server;
        let boot = BootConfig {
            proxy_listen: server.proxy_listen,
            admin_listen: server.admin_listen,
            threads: server.threads,
            grace_period_secs: server.grace_period_secs,
            watch_config: server.watch_config,
            database: self.database,
            usage: self.usage,
            admin_token_env: self.admin.token_env,
            redis: self.redis,
        };
        let live = LiveConfig {
            proxy: ProxySettings {
                max_body_bytes: server.max_body_bytes,
                connect_timeout: std::time::Duration::from_millis(server.connect_timeout_ms),
                read_timeout: std::time::Duration::from_secs(server.read_timeout_secs),
            },
            health_check: self.health_check,
            pools: self.pools,
            prices: self.prices,
            limits: self.limits,
            plans: self.plans,
            default_plan: self.default_plan,
            accounts: AccountSettings {
                allow_signup: self.admin.allow_signup,
                key_rotation_grace_secs: self.admin.key_rotation_grace_secs,
                secure_cookies: self.admin.secure_cookies,
                admin_emails: self.admin_emails,
            },
            billing: self.billing,
        };
        (boot, live)
    }
}

/// Per-minute buckets and a cap on requests in flight; `None` means unlimited.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Requests per minute.
    pub rpm: Option<u64>,
    /// Tokens (prompt + completion) per minute.
    pub tpm: Option<u64>,
    /// Requests open at the same time (streams included).
    pub concurrency: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PlanConfig {
    #[serde(default)]
    pub rpm: Option<u64>,
    #[serde(default)]
    pub tpm: Option<u64>,
    #[serde(default)]
    pub concurrency: Option<u64>,
    /// Tokens per calendar month (UTC) for all of a user's keys together.
    #[serde(default)]
    pub monthly_tokens: Option<u64>,
    /// Spend per calendar month in USD, priced with `prices`.
    #[serde(default)]
    pub monthly_credits_usd: Option<f64>,
}

impl PlanConfig {
    pub fn limits(&self) -> LimitSettings {
        LimitSettings {
            rpm: self.rpm,
            tpm: self.tpm,
            concurrency: self.concurrency,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Environment variable holding the admin API token (`Authorization: Bearer ...`).
    pub token_env: Option<String>,
    /// Whether anyone may create an account on the dashboard.
    pub allow_signup: bool,
    /// After a key is rotated, the old one keeps working this long.
    pub key_rotation_grace_secs: u64,
    /// Mark session cookies `Secure` (also done when `x-forwarded-proto: https`).
    pub secure_cookies: bool,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            token_env: None,
            allow_signup: true,
            key_rotation_grace_secs: 3600,
            secure_cookies: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The OpenAI-compatible proxy (Pingora).
    pub proxy_listen: String,
    /// The side app: dashboard, admin API, billing, health, readiness, metrics.
    pub admin_listen: String,
    /// Proxy worker threads; 0 means one per CPU core.
    pub threads: usize,
    pub max_body_bytes: usize,
    pub connect_timeout_ms: u64,
    /// Longest silence allowed while reading an upstream response (slow streams).
    pub read_timeout_secs: u64,
    /// How long a graceful shutdown (SIGTERM) lets open streams finish.
    pub grace_period_secs: u64,
    /// Reload this file when it changes (checked every 2 s); SIGHUP always reloads.
    pub watch_config: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            proxy_listen: "0.0.0.0:8080".into(),
            admin_listen: "0.0.0.0:8081".into(),
            threads: 0,
            max_body_bytes: 4 * 1024 * 1024,
            connect_timeout_ms: 3000,
            read_timeout_secs: 600,
            grace_period_secs: 10,
            watch_config: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://path/to/file.db` (created on first run) or `postgres://...`.
    pub url: String,
    pub max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://data/bluesminds.db".into(),
            max_connections: 8,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UsageConfig {
    /// Records waiting for the batch writer; beyond this a record is shed and counted.
    pub queue_capacity: usize,
    pub batch_size: usize,
    /// Where records go when the queue is full (the database is down or slow);
    /// they are replayed from there once the database takes writes again.
    pub spill_path: String,
    /// How often monthly quotas catch up with what other instances wrote to
    /// the shared database.
    pub quota_refresh_ms: u64,
}

impl Default for UsageConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 65_536,
            batch_size: 512,
            spill_path: "data/usage-spill.jsonl".into(),
            quota_refresh_ms: 2000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheckConfig {
    pub enabled: bool,
    pub interval_secs: u64,
    pub timeout_ms: u64,
    /// Path probed with GET on every backend (relative to the host, not the base URL).
    pub path: String,
    /// Consecutive failed probes before a backend is taken out of rotation.
    pub unhealthy_threshold: usize,
    /// Consecutive good probes before it comes back.
    pub healthy_threshold: usize,
    /// After a connect error or 5xx, skip the backend for this long (passive ejection).
    pub eject_secs: u64,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_secs: 5,
            timeout_ms: 1000,
            path: "/health".into(),
            unhealthy_threshold: 2,
            healthy_threshold: 1,
            eject_secs: 10,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    pub name: String,
    /// Model names served by this pool. `prefix*` matches by prefix, `*` matches any model.
    pub models: Vec<String>,
    pub backends: Vec<BackendConfig>,
    /// Overrides the global health-check path for this pool (e.g. `/health/liveliness` for LiteLLM).
    #[serde(default)]
    pub health_path: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// Base URL as an OpenAI SDK would take it, e.g. `https://api.openai.com/v1` or
    /// `http://litellm:4000`. The client's `/v1` prefix is replaced by this URL's path
    /// (no path means `/v1`).
    pub url: String,
    #[serde(default = "default_weight")]
    pub weight: usize,
    /// Lower numbers are tried first; higher ones only when every lower one is down.
    #[serde(default)]
    pub priority: u32,
    /// Name of the environment variable holding this backend's API key.
    #[serde(default)]
    pub api_key_env: Option<String>,
}

fn default_weight() -> usize {
    1
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// USD per 1M prompt tokens.
    pub input_per_1m: f64,
    /// USD per 1M completion tokens.
    pub output_per_1m: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{file}: invalid config at `{field}`: {message}")]
    Parse {
        file: String,
        field: String,
        message: String,
    },
    #[error("{file}: invalid config at `{field}`: {message}")]
    Invalid {
        file: String,
        field: String,
        message: String,
    },
}

/// A backend URL taken apart once at load time.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Replaces the client's `/v1`; never ends with `/`.
    pub base_path: String,
}

impl BackendUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(format!("`{url}` must start with http:// or https://")),
        };
        let host = uri
            .host()
            .ok_or_else(|| format!("`{url}` has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        if uri.query().is_some() {
            return Err(format!("`{url}` must not have a query string"));
        }
        let path = uri.path().trim_end_matches('/');
        let base_path = if path.is_empty() {
            "/v1".to_string()
        } else {
            path.to_string()
        };
        Ok(Self {
            tls,
            host,
            port,
            base_path,
        })
    }

    /// The Host header value an upstream expects (port only when not the default).
    pub fn host_header(&self) -> String {
        let default_port = if self.tls { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default_port {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    pub fn resolve(&self) -> Result<SocketAddr, String> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve `{}`: {e}", self.host))?
            .next()
            .ok_or_else(|| format!("`{}` resolves to no address", self.host))
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text, &path.display().to_string())
    }

    /// Parses and validates; `file` only names the source in error messages.
    pub fn from_yaml(text: &str, file: &str) -> Result<Self, ConfigError> {
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            let inner = e.into_inner();
            let message = match inner.location() {
                Some(loc) => format!("{inner} (line {}, column {})", loc.line(), loc.column()),
                None => inner.to_string(),
            };
            ConfigError::Parse {
                file: file.to_string(),
                field,
                message,
            }
        })?;
        cfg.validate().map_err(|(field, message)| {
            let message = match line_of(text, &field) {
                Some(line) => format!("{message} (line {line})"),
                None => message,
            };
            ConfigError::Invalid {
                file: file.to_string(),
                field,
                message,
            }
        })?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let err = |f: &str, m: String| Err((f.to_string(), m));
        for (field, addr) in [
            ("server.proxy_listen", &self.server.proxy_listen),
            ("server.admin_listen", &self.server.admin_listen),
        ] {
            if addr.parse::<SocketAddr>().is_err() {
                return err(
                    field,
                    format!("`{addr}` is not a socket address like 0.0.0.0:8080"),
                );
            }
        }
        if self.server.max_body_bytes == 0 || self.server.max_body_bytes > MAX_BODY_LIMIT {
            return err(
                "server.max_body_bytes",
                format!("must be between 1 and {MAX_BODY_LIMIT}"),
            );
        }
        if !(self.database.url.starts_with("sqlite:")
            || self.database.url.starts_with("postgres://")
            || self.database.url.starts_with("postgresql://"))
        {
            return err(
                "database.url",
                "must start with sqlite:, postgres:// or postgresql://".into(),
            );
        }
        if self.usage.queue_capacity == 0 || self.usage.batch_size == 0 {
            return err(
                "usage.queue_capacity",
                "queue_capacity and batch_size must be positive".into(),
            );
        }
        if !(50..=60_000).contains(&self.usage.quota_refresh_ms) {
            return err(
                "usage.quota_refresh_ms",
                "must be between 50 and 60000".into(),
            );
        }
        if self.health_check.interval_secs == 0 {
            return err("health_check.interval_secs", "must be at least 1".into());
        }
        if !self.health_check.path.starts_with('/') {
            return err("health_check.path", "must start with /".into());
        }
        let mut names = std::collections::HashSet::new();
        for (i, pool) in self.pools.iter().enumerate() {
            let at = |f: &str| format!("pools[{i}].{f}");
            if pool.name.trim().is_empty() {
                return err(&at("name"), "must not be empty".into());
            }
            if !names.insert(&pool.name) {
                return err(
                    &at("name"),
                    format!("pool `{}` is defined twice", pool.name),
                );
            }
            if pool.models.is_empty() {
                return err(&at("models"), "a pool must serve at least one model".into());
            }
            if let Some(m) = pool.models.iter().find(|m| m.trim().is_empty()) {
                return err(&at("models"), format!("invalid model name `{m}`"));
            }
            if pool.backends.is_empty() {
                return err(&at("backends"), "a pool needs at least one backend".into());
            }
            let mut seen = std::collections::HashSet::new();
            for (j, b) in pool.backends.iter().enumerate() {
                let bat = |f: &str| format!("pools[{i}].backends[{j}].{f}");
                let url = BackendUrl::parse(&b.url).map_err(|m| (bat("url"), m))?;
                // The same server under another key (a second provider account)
                // is a backend of its own; the same one twice is a typo.
                if !seen.insert((url, b.api_key_env.clone(), b.priority)) {
                    return err(
                        &bat("url"),
                        format!(
                            "`{}` appears twice at the same priority with the same key",
                            b.url
                        ),
                    );
                }
                if b.weight == 0 {
                    return err(&bat("weight"), "must be at least 1".into());
                }
                if let Some(var) = &b.api_key_env {
                    if std::env::var(var).map(|v| v.is_empty()).unwrap_or(true) {
                        return err(
                            &bat("api_key_env"),
                            format!("environment variable `{var}` is not set"),
                        );
                    }
                }
            }
        }
        if let Some(plan) = &self.default_plan {
            if !self.plans.contains_key(plan) {
                return err(
                    "default_plan",
                    format!("plan `{plan}` is not defined in `plans`"),
                );
            }
        }
        for (name, plan) in &self.plans {
            let limits = [plan.rpm, plan.tpm, plan.concurrency, plan.monthly_tokens];
            if limits.contains(&Some(0)) {
                return err(
                    &format!("plans.{name}"),
                    "a limit of 0 would refuse everything; leave it out for unlimited".into(),
                );
            }
            if plan
                .monthly_credits_usd
                .is_some_and(|c| !(c.is_finite() && c > 0.0))
            {
                return err(
                    &format!("plans.{name}.monthly_credits_usd"),
                    "must be a positive amount".into(),
                );
            }
        }
        if let Some(billing) = &self.billing {
            billing.validate(&self.plans, self.default_plan.as_deref())?;
        }
        if let Some(r) = &self.redis {
            if !(r.url.starts_with("redis://") || r.url.starts_with("rediss://")) {
                return err("redis.url", "must start with redis:// or rediss://".into());
            }
            if !(10..=5000).contains(&r.sync_ms) {
                return err("redis.sync_ms", "must be between 10 and 5000".into());
            }
        }
        let l = &self.limits;
        if [l.rpm, l.tpm, l.concurrency].contains(&Some(0)) {
            return err(
                "limits",
                "a limit of 0 would refuse everything; leave it out for unlimited".into(),
            );
        }
        if let Some(var) = &self.admin.token_env {
            if std::env::var(var).map(|v| v.len() < 16).unwrap_or(true) {
                return err(
                    "admin.token_env",
                    format!(
                        "environment variable `{var}` must hold a token of at least 16 characters"
                    ),
                );
            }
        }
        for (model, price) in &self.prices {
            let valid = |p: f64| p.is_finite() && p >= 0.0;
            if !valid(price.input_per_1m) || !valid(price.output_per_1m) {
                return err(
                    &format!("prices.{model}"),
                    "prices must be finite and not negative".into(),
                );
            }
        }
        Ok(())
    }
}

/// Best effort: the line of the key a field path names (`pools[0].backends[1].weight`),
/// so a semantic error points at the file line as a parse error does.
fn line_of(text: &str, field: &str) -> Option<usize> {
    let mut pos = 0;
    for part in field.split('.') {
        let (name, index) = match part.split_once('[') {
            Some((n, i)) => (n, i.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        if !name.is_empty() {
            pos += text[pos..].find(&format!("{name}:"))?;
        }
        if let Some(index) = index {
            // The list's items are the lines after the key that start with "- " at
            // the indentation of the first item.
            let first_len = text[pos..].split_inclusive('\n').next()?.len();
            let mut offset = pos + first_len;
            let mut indent = None;
            let mut seen = 0;
            let mut found = None;
            for line in text[pos..].split_inclusive('\n').skip(1) {
                let trimmed = line.trim_start();
                let this_indent = line.len() - trimmed.len();
                if trimmed.starts_with("- ") && indent.is_none_or(|i| i == this_indent) {
                    indent = Some(this_indent);
                    if seen == index {
                        found = Some(offset);
                        break;
                    }
                    seen += 1;
                }
                offset += line.len();
            }
            pos = found?;
        }
    }
    Some(text[..pos].matches('\n').count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
pools:
  - name: main
    models: [gpt-4o-mini, "text-embedding-*"]
    backends:
      - url: http://127.0.0.1:9000
      - url: https://api.example.com/v1
        weight: 2
        priority: 1
prices:
  gpt-4o-mini: { input_per_1m: 0.15, output_per_1m: 0.6 }
"#;

    #[test]
    fn parses_and_fills_defaults() {
        let c = Config::from_yaml(GOOD, "t.yaml").unwrap();
        assert_eq!(c.server.proxy_listen, "0.0.0.0:8080");
        assert_eq!(c.pools[0].backends[1].weight, 2);
        assert_eq!(c.prices["gpt-4o-mini"].output_per_1m, 0.6);
    }

    #[test]
    fn unknown_field_names_path_and_line() {
        let bad = GOOD.replace("weight: 2", "wieght: 2");
        let e = Config::from_yaml(&bad, "t.yaml").unwrap_err().to_string();
        assert!(e.contains("pools[0].backends[1]"), "{e}");
        assert!(e.contains("wieght"), "{e}");
        assert!(e.contains("line 8"), "{e}");
    }

    #[test]
    fn type_error_names_field() {
        let bad = GOOD.replace("weight: 2", "weight: heavy");
        let e = Config::from_yaml(&bad, "t.yaml").unwrap_err().to_string();
        assert!(e.contains("pools[0].backends[1].weight"), "{e}");
    }

    #[test]
    fn semantic_errors_name_field_and_line() {
        let bad = GOOD.replace("weight: 2", "weight: 0");
        let e = Config::from_yaml(&bad, "t.yaml").unwrap_err().to_string();
        assert!(e.contains("pools[0].backends[1].weight"), "{e}");
        assert!(e.contains("line 8"), "{e}");

        let bad = GOOD.replace("http://127.0.0.1:9000", "ftp://x");
        let e = Config::from_yaml(&bad, "t.yaml").unwrap_err().to_string();
        assert!(e.contains("pools[0].backends[0].url"), "{e}");

        let bad = GOOD.replace(
            "      - url: https://api.example.com/v1\n",
            "      - url: https://api.example.com/v1\n        api_key_env: BM_SURELY_UNSET_VAR\n",
        );
        let e = Config::from_yaml(&bad, "t.yaml").unwrap_err().to_string();
        assert!(e.contains("BM_SURELY_UNSET_VAR"), "{e}");
    }

    #[test]
    fn backend_url_paths() {
        let u = BackendUrl::parse("http://127.0.0.1:4000").unwrap();
        assert_eq!((u.tls, u.port, u.base_path.as_str()), (false, 4000, "/v1"));
        let u = BackendUrl::parse("https://openrouter.ai/api/v1/").unwrap();
        assert_eq!(
            (u.tls, u.port, u.base_path.as_str()),
            (true, 443, "/api/v1")
        );
        assert_eq!(u.host_header(), "openrouter.ai");
        assert!(BackendUrl::parse("localhost:80").is_err());
    }
}
