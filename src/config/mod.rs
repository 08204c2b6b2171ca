//! Typed gateway configuration, read from YAML and validated once at start.
//!
//! Every struct denies unknown fields so a typo fails loudly instead of being
//! silently ignored; errors name the field path and, for syntax and type errors,
//! the line in the file.

mod backend_shape;
mod backend_url;
mod checks;
mod split;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

pub use crate::protocols::{Protocol, ResponsesApi};

pub use backend_shape::{BackendAuth, HeaderSource};
pub use backend_url::{BackendUrl, MODEL_PLACEHOLDER};
pub use split::{AccountSettings, BootConfig, LiveConfig, ProxySettings, SideListenerSettings};

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
    /// How backend host names are resolved.
    #[serde(default)]
    pub dns: DnsConfig,
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
    /// No longer grants anything: sign-up does not verify emails, so anyone
    /// could have claimed a listed address. Admin is a stored role
    /// (`bluesminds users grant-admin`); a non-empty list only logs a warning,
    /// so old configs still load.
    #[serde(default)]
    pub admin_emails: Vec<String>,
    /// Subscription billing through Creem; without it plans are assigned by an admin.
    #[serde(default)]
    pub billing: Option<crate::billing::BillingConfig>,
    /// What upstream servers added through the admin API may be.
    #[serde(default)]
    pub admin_servers: AdminServersConfig,
    /// Several instances: cluster-wide limits and cache invalidation through Redis.
    #[serde(default)]
    pub redis: Option<RedisConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:6379/0`.
    #[serde(deserialize_with = "checks::redis_url")]
    pub url: String,
    /// Prefix of every key and channel, so several gateways can share one Redis.
    #[serde(default = "default_redis_prefix")]
    pub prefix: String,
    /// How often local limit buckets are reconciled with the other instances.
    #[serde(default = "default_sync_ms", deserialize_with = "checks::sync_ms")]
    pub sync_ms: u64,
}

fn default_redis_prefix() -> String {
    "bluesminds:".into()
}

fn default_sync_ms() -> u64 {
    100
}

/// The address and secret policy for upstream servers that admins add through
/// the API: an admin account must not be able to send a gateway secret
/// (the database password, the Creem key, the admin token) to a URL of its
/// choice, or make the gateway call its cloud's metadata service.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminServersConfig {
    /// A server's `api_key_env` must start with this prefix...
    pub key_env_prefix: String,
    /// ...or be one of these names.
    pub key_envs: Vec<String>,
    /// Allow loopback, private (RFC 1918, CGNAT) and unique-local addresses.
    /// Link-local and metadata addresses are refused whatever this says.
    pub allow_private: bool,
    /// Allow a key to go over plain http:// to a host that is not loopback.
    pub allow_plain_http: bool,
}

impl Default for AdminServersConfig {
    fn default() -> Self {
        Self {
            key_env_prefix: "BLUESMINDS_UPSTREAM_".into(),
            key_envs: Vec::new(),
            allow_private: false,
            allow_plain_http: false,
        }
    }
}

/// Per-minute buckets and a cap on requests in flight; `None` means unlimited.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Requests per minute.
    #[serde(deserialize_with = "checks::limit")]
    pub rpm: Option<u64>,
    /// Tokens (prompt + completion) per minute.
    #[serde(deserialize_with = "checks::limit")]
    pub tpm: Option<u64>,
    /// Requests open at the same time (streams included).
    #[serde(deserialize_with = "checks::limit")]
    pub concurrency: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PlanConfig {
    #[serde(default, deserialize_with = "checks::limit")]
    pub rpm: Option<u64>,
    #[serde(default, deserialize_with = "checks::limit")]
    pub tpm: Option<u64>,
    #[serde(default, deserialize_with = "checks::limit")]
    pub concurrency: Option<u64>,
    /// Tokens per calendar month (UTC) for all of a user's keys together.
    #[serde(default, deserialize_with = "checks::limit")]
    pub monthly_tokens: Option<u64>,
    /// Spend per calendar month in USD, priced with `prices`.
    #[serde(default, deserialize_with = "checks::credits")]
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
    #[serde(deserialize_with = "checks::token_env_var")]
    pub token_env: Option<String>,
    /// Whether anyone may create an account on the dashboard.
    pub allow_signup: bool,
    /// After a key is rotated, the old one keeps working this long.
    pub key_rotation_grace_secs: u64,
    /// Mark session cookies `Secure` (also done when `x-forwarded-proto: https`).
    pub secure_cookies: bool,
    /// Accounts one client IP may create per hour.
    #[serde(deserialize_with = "checks::at_least_one_u32")]
    pub signups_per_ip_per_hour: u32,
    /// The longest grace a caller may ask for when rotating a key (a leaked
    /// key must not be kept alive for a year by whoever holds the session).
    pub max_key_rotation_grace_secs: u64,
    /// A session unused this long ends (and is deleted), whatever its age.
    #[serde(deserialize_with = "checks::at_least_one_u64")]
    pub session_idle_secs: u64,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            token_env: None,
            allow_signup: true,
            key_rotation_grace_secs: 3600,
            secure_cookies: false,
            signups_per_ip_per_hour: 10,
            max_key_rotation_grace_secs: 7 * 86_400,
            session_idle_secs: 86_400,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The OpenAI-compatible proxy (Pingora).
    pub proxy_listen: SocketAddr,
    /// The side app: dashboard, admin API, billing, health, readiness, metrics.
    pub admin_listen: SocketAddr,
    /// Proxy worker threads; 0 means one per CPU core.
    pub threads: usize,
    #[serde(deserialize_with = "checks::body_limit")]
    pub max_body_bytes: usize,
    /// Request bodies being read at once, in bytes, over all clients; past it
    /// new bodies get 503 (bounds memory against many slow uploads).
    #[serde(deserialize_with = "checks::at_least_one")]
    pub max_body_bytes_in_flight: usize,
    /// The whole request body must arrive within this time (else 408).
    #[serde(deserialize_with = "checks::at_least_one_u64")]
    pub body_timeout_secs: u64,
    pub connect_timeout_ms: u64,
    /// Longest silence allowed while reading an upstream response (slow streams).
    pub read_timeout_secs: u64,
    /// How long a graceful shutdown (SIGTERM) lets open streams finish.
    pub grace_period_secs: u64,
    /// Reload this file when it changes (checked every 2 s); SIGHUP always reloads.
    pub watch_config: bool,
    /// HTTPS on both listeners (the proxy and the side app); absent means
    /// plain HTTP. Needs a restart to turn on or off; the certificate files'
    /// contents reload (SIGHUP, or when they change).
    pub tls: Option<TlsConfig>,
    /// A listener of its own for `/metrics` (plain HTTP); the side app then no
    /// longer serves it. Absent: `/metrics` stays on the side app.
    pub metrics_listen: Option<SocketAddr>,
    /// Side app: a client must finish its TLS handshake, and send a request's
    /// headers, within this time; a connection with no request in progress
    /// is closed after it too.
    #[serde(deserialize_with = "checks::at_least_one_u64")]
    pub side_header_timeout_secs: u64,
    /// Side app: a whole request, its body included, must be answered within
    /// this time, else 408 `request_timeout`.
    #[serde(deserialize_with = "checks::at_least_one_u64")]
    pub side_request_timeout_secs: u64,
    /// Side app connections open at once; past it new connections wait in
    /// the kernel's listen queue until one closes.
    #[serde(deserialize_with = "checks::at_least_one")]
    pub side_max_connections: usize,
    /// Load balancers and ingresses in front of the gateway (CIDRs or
    /// addresses). Only through them is `X-Forwarded-For` read for the client's
    /// address (throttles, the upstream's `X-Forwarded-For`) and
    /// `X-Forwarded-Proto` for its scheme; empty: the TCP peer is the client.
    #[serde(deserialize_with = "checks::trusted_proxies")]
    pub trusted_proxies: crate::client_ip::TrustedProxies,
}

/// The certificate (chain) and private key of both listeners, PEM files.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server certificate first, then any intermediates.
    pub cert_file: std::path::PathBuf,
    /// PKCS#8, PKCS#1 (RSA) or SEC1 (EC), unencrypted.
    pub key_file: std::path::PathBuf,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            proxy_listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            admin_listen: SocketAddr::from(([0, 0, 0, 0], 8081)),
            threads: 0,
            max_body_bytes: 4 * 1024 * 1024,
            max_body_bytes_in_flight: 256 * 1024 * 1024,
            body_timeout_secs: 30,
            connect_timeout_ms: 3000,
            read_timeout_secs: 600,
            grace_period_secs: 10,
            watch_config: true,
            tls: None,
            trusted_proxies: Default::default(),
            metrics_listen: None,
            side_header_timeout_secs: 10,
            side_request_timeout_secs: 30,
            side_max_connections: 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://path/to/file.db` (created on first run) or `postgres://...`.
    #[serde(deserialize_with = "checks::database_url")]
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
    /// Records the writer takes from memory; beyond this it reads them back
    /// from the ledger's segments (memory stays bounded while the database is down).
    #[serde(deserialize_with = "checks::at_least_one")]
    pub queue_capacity: usize,
    #[serde(deserialize_with = "checks::at_least_one")]
    pub batch_size: usize,
    /// Directory of the usage ledger: every record is in a segment file here
    /// before its request ends, until the database has it.
    pub ledger_dir: String,
    /// Size of one segment file.
    #[serde(deserialize_with = "checks::at_least_one_u64")]
    pub ledger_segment_mib: u64,
    /// Disk the ledger may use while the database is down (see `ledger_full`).
    #[serde(deserialize_with = "checks::at_least_one_u64")]
    pub ledger_max_mib: u64,
    /// What happens past `ledger_max_mib`.
    pub ledger_full: LedgerFull,
    /// How often the ledger is synced to the disk: what a power cut can lose.
    #[serde(deserialize_with = "checks::millis_50_to_60000")]
    pub ledger_sync_ms: u64,
    /// The spill file of earlier versions: records found there at start are
    /// moved into the ledger.
    pub spill_path: String,
    /// How often monthly quotas catch up with what other instances wrote to
    /// the shared database.
    #[serde(deserialize_with = "checks::millis_50_to_60000")]
    pub quota_refresh_ms: u64,
    /// After a client leaves mid-answer, the upstream is still read, for at
    /// most this long, so its usage report arrives (0: stop reading at once).
    pub abandoned_read_secs: u64,
    /// ... and for at most this many bytes of answer after the client left.
    #[serde(deserialize_with = "checks::at_least_one_u64")]
    pub abandoned_read_mib: u64,
}

/// The ledger's policy once the database has been down long enough to fill
/// `usage.ledger_max_mib`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LedgerFull {
    /// New requests get 503 `usage_ledger_full` until the ledger drains: no
    /// request goes unrecorded.
    Refuse,
    /// Requests are served and their records dropped (counted in
    /// `bluesminds_usage_shed_total`).
    Shed,
}

impl Default for UsageConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 65_536,
            batch_size: 512,
            ledger_dir: "data/usage-ledger".into(),
            ledger_segment_mib: 8,
            ledger_max_mib: 1024,
            ledger_full: LedgerFull::Refuse,
            ledger_sync_ms: 1000,
            abandoned_read_secs: 60,
            abandoned_read_mib: 8,
            spill_path: "data/usage-spill.jsonl".into(),
            quota_refresh_ms: 2000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheckConfig {
    pub enabled: bool,
    #[serde(deserialize_with = "checks::at_least_one_u64")]
    pub interval_secs: u64,
    pub timeout_ms: u64,
    /// Path probed with GET on every backend (relative to the host, not the base URL).
    #[serde(deserialize_with = "checks::absolute_path")]
    pub path: String,
    /// Consecutive failed probes before a backend is taken out of rotation.
    pub unhealthy_threshold: usize,
    /// Consecutive good probes before it comes back.
    pub healthy_threshold: usize,
    /// After a connect error, a 5xx or a 429 without `retry-after`, skip the
    /// backend for this long (passive ejection).
    pub eject_secs: u64,
    /// The longest an upstream's `retry-after` ejects a backend, and how long
    /// one whose key the provider refuses (401/403) is skipped.
    #[serde(deserialize_with = "checks::at_least_one_u64")]
    pub max_eject_secs: u64,
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
            max_eject_secs: 300,
        }
    }
}

/// Backend host names are resolved in the background (all A and AAAA records)
/// and again every `refresh_secs`, or sooner when a record's TTL runs out: a
/// provider that moves its addresses is followed without a reload. A name that
/// does not resolve keeps only its backend out of rotation.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    #[serde(deserialize_with = "checks::at_least_one_u64")]
    pub refresh_secs: u64,
    /// A lookup that takes longer counts as failed (and is tried again soon).
    #[serde(deserialize_with = "checks::millis_50_to_60000")]
    pub timeout_ms: u64,
    /// Name servers to ask instead of `/etc/resolv.conf`'s: `10.96.0.10` or
    /// `127.0.0.1:5353` (UDP, TCP for long answers). `/etc/hosts` still applies.
    #[serde(deserialize_with = "checks::name_servers")]
    pub nameservers: Vec<SocketAddr>,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            refresh_secs: 30,
            timeout_ms: 2000,
            nameservers: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    #[serde(deserialize_with = "checks::name")]
    pub name: String,
    /// Model names served by this pool. `prefix*` matches by prefix, `*` matches any model.
    #[serde(deserialize_with = "checks::model_names")]
    pub models: Vec<String>,
    #[serde(deserialize_with = "checks::non_empty")]
    pub backends: Vec<BackendConfig>,
    /// Overrides the global health-check path for this pool (e.g. `/health/liveliness` for LiteLLM).
    #[serde(default)]
    pub health_path: Option<String>,
    /// Client request headers passed to this pool's backends beyond the
    /// default few (e.g. `openai-beta`, `anthropic-version`).
    #[serde(default, deserialize_with = "checks::header_names")]
    pub forward_headers: Vec<String>,
    /// Backend response headers passed back to clients beyond the default few.
    #[serde(default, deserialize_with = "checks::header_names")]
    pub expose_headers: Vec<String>,
    /// Pass request fields that make the backend pick another model or account
    /// (`models`, `route`, `fallbacks`, `user_config`, `api_base`...; see
    /// `proxy::request::ROUTING_FIELDS`). Off: they are removed, since the
    /// request is allowed and priced by the model it names.
    #[serde(default)]
    pub allow_routing_fields: bool,
    /// The header that carries the request id to this pool's backends, as a
    /// UUID (servers such as llama-cpp-python refuse any other form); `null`
    /// sends none.
    #[serde(
        default = "default_request_id_header",
        deserialize_with = "checks::optional_header_name"
    )]
    pub request_id_header: Option<String>,
    /// What the pool's backends speak unless a backend says otherwise:
    /// `openai` (default) or `anthropic` (the Messages API).
    #[serde(default)]
    pub protocol: Option<Protocol>,
}

fn default_request_id_header() -> Option<String> {
    Some("x-request-id".into())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// Base URL as an OpenAI SDK would take it, e.g. `https://api.openai.com/v1` or
    /// `http://litellm:4000`. The client's `/v1` prefix is replaced by this URL's path
    /// (no path means `/v1`).
    pub url: BackendUrl,
    #[serde(default = "default_weight", deserialize_with = "checks::at_least_one")]
    pub weight: usize,
    /// Lower numbers are tried first; higher ones only when every lower one is down.
    #[serde(default)]
    pub priority: u32,
    /// Name of the environment variable holding this backend's API key.
    #[serde(default, deserialize_with = "checks::set_env_var")]
    pub api_key_env: Option<String>,
    /// The header that carries the key: `Authorization: Bearer` (default),
    /// `api-key` (Azure OpenAI), `x-api-key` (Anthropic; the default of an
    /// `anthropic` backend), or none. See `BackendConfig::auth`.
    #[serde(default, rename = "auth")]
    pub auth_mode: Option<BackendAuth>,
    /// What this backend speaks (else its pool's `protocol`, else `openai`).
    #[serde(default)]
    pub protocol: Option<Protocol>,
    /// Whether this OpenAI backend serves `/v1/responses` itself (`native`)
    /// or gets it translated to Chat Completions (`translate`, the default).
    #[serde(default)]
    pub responses_api: ResponsesApi,
    /// Headers sent with every request (`anthropic-version`, a gateway's
    /// own header...): a literal, or `{env: NAME}` for a secret. A client
    /// header of the same name that the pool forwards wins.
    #[serde(default, deserialize_with = "backend_shape::static_headers")]
    pub headers: BTreeMap<String, HeaderSource>,
    /// Query parameters added to every request (Azure's `api-version`),
    /// replacing a client's parameter of the same name.
    #[serde(default, deserialize_with = "backend_shape::query_params")]
    pub query: BTreeMap<String, String>,
    /// The backend's own name for a model the pool serves: the request's
    /// `model` (and `{model}` in the URL's path) becomes it, and answers
    /// name the public model again.
    #[serde(default, deserialize_with = "backend_shape::model_map")]
    pub models: BTreeMap<String, String>,
    /// Added through the admin API (so `admin_servers` applies), not the YAML.
    #[serde(skip)]
    pub from_admin_api: bool,
    /// How an `https://` backend is verified and whom the gateway shows itself
    /// as; absent: the system's roots, no client certificate.
    #[serde(default)]
    pub tls: Option<UpstreamTlsConfig>,
    /// Whether requests to this backend use HTTP/2.
    #[serde(default)]
    pub http2: Http2Mode,
}

impl BackendConfig {
    /// The key header mode: as configured, else by protocol (Anthropic's API
    /// takes `x-api-key`).
    pub fn auth(&self) -> BackendAuth {
        self.auth_mode.unwrap_or(match self.protocol {
            Some(Protocol::Anthropic) if self.api_key_env.is_some() => BackendAuth::XApiKey,
            _ => BackendAuth::Bearer,
        })
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol.unwrap_or_default()
    }
}

fn default_weight() -> usize {
    1
}

/// `pools[].backends[].tls`: verification of an `https://` backend and the
/// gateway's client certificate for it (PEM files, read when the pools are
/// built; a bad file is an error naming its field).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamTlsConfig {
    /// CA certificates the backend's certificate must chain to, instead of
    /// the system's roots (a private PKI).
    pub ca_file: Option<std::path::PathBuf>,
    /// A client certificate (chain, leaf first) for backends that require
    /// mutual TLS; needs `client_key_file`.
    pub client_cert_file: Option<std::path::PathBuf>,
    /// PKCS#8, PKCS#1 (RSA) or SEC1 (EC), unencrypted.
    pub client_key_file: Option<std::path::PathBuf>,
    /// `false` accepts any certificate: traffic and the backend's key can then
    /// be read by anyone on the path. Warned about at every load.
    pub verify: bool,
}

impl Default for UpstreamTlsConfig {
    fn default() -> Self {
        Self {
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            verify: true,
        }
    }
}

/// `pools[].backends[].http2`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Http2Mode {
    /// Over TLS, offer `h2` and `http/1.1` by ALPN and use what the backend
    /// picks; plain `http://` stays HTTP/1.1 (it has no negotiation).
    #[default]
    Auto,
    /// Offer only `h2` over TLS; plain `http://` speaks HTTP/2 with prior
    /// knowledge (h2c), as vLLM or a sidecar behind a mesh may want.
    Always,
    /// HTTP/1.1 only.
    Never,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// USD per 1M prompt tokens.
    #[serde(deserialize_with = "checks::price")]
    pub input_per_1m: f64,
    /// USD per 1M completion tokens (reasoning tokens included).
    #[serde(deserialize_with = "checks::price")]
    pub output_per_1m: f64,
    /// USD per 1M prompt tokens read from the provider's cache (default: `input_per_1m`).
    #[serde(default, deserialize_with = "checks::optional_price")]
    pub input_cached_per_1m: Option<f64>,
    /// USD per 1M prompt tokens written to the provider's cache (default: `input_per_1m`).
    #[serde(default, deserialize_with = "checks::optional_price")]
    pub cache_write_per_1m: Option<f64>,
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

impl Config {
    /// Reads, parses and validates the config, and checks the files it names
    /// (`server.tls`: readable, parse, the key matches the certificate).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let (cfg, text) = Self::read(path)?;
        cfg.check_files(&text, &path.display().to_string())?;
        Ok(cfg)
    }

    /// `load` for a reload: the listeners' TLS files are not judged, as
    /// `server.tls` only changes with a restart and the certificate's own
    /// reload (`crate::tls`) keeps the old one when the new files are bad; a
    /// certificate being replaced must not hold up a change of pools. The
    /// backends' files are, as the pools they belong to are being replaced.
    pub fn load_for_reload(path: &Path) -> Result<Self, ConfigError> {
        let (cfg, text) = Self::read(path)?;
        cfg.check_backend_files(&text, &path.display().to_string())?;
        Ok(cfg)
    }

    fn read(path: &Path) -> Result<(Self, String), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let cfg = Self::from_yaml(&text, &path.display().to_string())?;
        Ok((cfg, text))
    }

    /// Checks the files the config names; `file` names the config in errors.
    pub fn check_files(&self, text: &str, file: &str) -> Result<(), ConfigError> {
        if let Some(tls) = &self.server.tls {
            crate::tls::load_certified_key(tls)
                .map_err(|e| invalid_at(text, file, e.field.to_string(), e.message))?;
        }
        self.check_backend_files(text, file)
    }

    /// The backends' TLS files (`pools[].backends[].tls`): they belong to
    /// the pools, so a reload judges them too.
    fn check_backend_files(&self, text: &str, file: &str) -> Result<(), ConfigError> {
        for (i, pool) in self.pools.iter().enumerate() {
            for (j, b) in pool.backends.iter().enumerate() {
                crate::upstream::Transport::load(b).map_err(|e| {
                    let field = format!("pools[{i}].backends[{j}].{}", e.field);
                    invalid_at(text, file, field, e.message)
                })?;
            }
        }
        Ok(())
    }

    /// What loads but deserves a loud word: logged at start and printed by
    /// `check-config`.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, pool) in self.pools.iter().enumerate() {
            for (j, b) in pool.backends.iter().enumerate() {
                if b.tls.as_ref().is_some_and(|t| !t.verify) {
                    out.push(format!(
                        "pools[{i}].backends[{j}].tls.verify is false: the certificate of `{}` is not checked, so anyone on the path can read the prompts and its API key",
                        b.url
                    ));
                }
            }
        }
        out
    }

    /// Parses and validates; `file` only names the source in error messages.
    pub fn from_yaml(text: &str, file: &str) -> Result<Self, ConfigError> {
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            let inner = e.into_inner();
            let mut message = inner.to_string();
            // serde_yaml_ng ends its message with its own position, which for a
            // check that runs after its value was read is the enclosing
            // mapping's; the walk down the field's path finds the field itself.
            if let Some(loc) = inner.location() {
                let suffix = format!(" at line {} column {}", loc.line(), loc.column());
                if let Some(stripped) = message.strip_suffix(&suffix) {
                    message = stripped.to_string();
                }
            }
            // It also starts with its own path, a prefix of `field`.
            if let Some((path, rest)) = message.split_once(": ") {
                if field.starts_with(path) {
                    message = rest.to_string();
                }
            }
            if !message.contains(" at line ") {
                let line = checks::line_of(text, &field)
                    .filter(|_| !field.is_empty())
                    .or(inner.location().map(|l| l.line()));
                if let Some(line) = line {
                    message = format!("{message} (line {line})");
                }
            }
            ConfigError::Parse {
                file: file.to_string(),
                field,
                message,
            }
        })?;
        let mut cfg = cfg;
        for pool in &mut cfg.pools {
            // A backend speaks its pool's protocol unless it says otherwise.
            for b in &mut pool.backends {
                b.protocol = b.protocol.or(pool.protocol);
            }
        }
        cfg.validate()
            .map_err(|(field, message)| invalid_at(text, file, field, message))?;
        Ok(cfg)
    }

    /// What no single field can tell (the fields checked themselves while
    /// they were read; see `checks`).
    fn validate(&self) -> Result<(), (String, String)> {
        let err = |f: String, m: String| Err((f, m));
        if let Some(m) = self.server.metrics_listen {
            if m == self.server.admin_listen || m == self.server.proxy_listen {
                return err(
                    "server.metrics_listen".into(),
                    format!("{m} is already the address of another listener"),
                );
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, pool) in self.pools.iter().enumerate() {
            if !names.insert(&pool.name) {
                return err(
                    format!("pools[{i}].name"),
                    format!("pool `{}` is defined twice", pool.name),
                );
            }
            let mut seen = std::collections::HashSet::new();
            for (j, b) in pool.backends.iter().enumerate() {
                if let Some(tls) = &b.tls {
                    let field = |f: &str| format!("pools[{i}].backends[{j}].tls{f}");
                    if !b.url.tls {
                        return err(
                            field(""),
                            format!(
                                "`{}` is plain http://; `tls` applies to https:// backends only",
                                b.url
                            ),
                        );
                    }
                    match (&tls.client_cert_file, &tls.client_key_file) {
                        (Some(_), None) => {
                            return err(
                                field(".client_cert_file"),
                                "needs `client_key_file` beside it".into(),
                            )
                        }
                        (None, Some(_)) => {
                            return err(
                                field(".client_key_file"),
                                "needs `client_cert_file` beside it".into(),
                            )
                        }
                        _ => {}
                    }
                }
                // The same server under another key (a second provider account)
                // is a backend of its own; the same one twice is a typo.
                let field = |name: &str| format!("pools[{i}].backends[{j}].{name}");
                match (b.auth(), &b.api_key_env) {
                    (BackendAuth::None, Some(_)) => {
                        return err(
                            field("auth"),
                            "`none` sends no key, but `api_key_env` names one".into(),
                        )
                    }
                    (BackendAuth::ApiKey | BackendAuth::XApiKey, None) => {
                        return err(field("auth"), "needs `api_key_env`, the key to send".into())
                    }
                    _ => {}
                }
                if b.protocol() == Protocol::Anthropic && b.responses_api == ResponsesApi::Native {
                    return err(
                        field("responses_api"),
                        "an `anthropic` backend does not serve the Responses API".into(),
                    );
                }
                let key_header = b.api_key_env.as_ref().and(b.auth().header_name());
                if let Some(name) = key_header.filter(|n| b.headers.contains_key(*n)) {
                    return err(
                        field("headers"),
                        format!("`{name}` carries the key (`auth`); it cannot be set here too"),
                    );
                }
                if !seen.insert((&b.url, &b.api_key_env, b.priority)) {
                    return err(
                        format!("pools[{i}].backends[{j}].url"),
                        format!(
                            "`{}` appears twice at the same priority with the same key",
                            b.url
                        ),
                    );
                }
            }
        }
        if let Some(plan) = &self.default_plan {
            if !self.plans.contains_key(plan) {
                return err(
                    "default_plan".into(),
                    format!("plan `{plan}` is not defined in `plans`"),
                );
            }
        }
        if let Some(billing) = &self.billing {
            billing.validate(&self.plans, self.default_plan.as_deref())?;
        }
        Ok(())
    }
}

/// An error at `field`, with the field's line in `text` when it is found.
fn invalid_at(text: &str, file: &str, field: String, message: String) -> ConfigError {
    let message = match checks::line_of(text, &field) {
        Some(line) => format!("{message} (line {line})"),
        None => message,
    };
    ConfigError::Invalid {
        file: file.to_string(),
        field,
        message,
    }
}

#[cfg(test)]
mod tests;
