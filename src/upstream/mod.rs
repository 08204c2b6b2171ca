//! Upstream pools: which backends serve a model, which of them are healthy, and
//! which one takes the next request.
//!
//! Each pool splits its backends into priority groups; each group is a Pingora
//! `LoadBalancer` (weighted round robin) with active HTTP health checks, whose
//! service discovery keeps the members' host names resolved (`discovery`). A group is
//! used only when every lower-numbered group has no usable backend. On top of the
//! active checks, a backend that fails a request is ejected for a while (passive
//! ejection), and a request never goes to the same backend twice when failing over.

use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, Backends, LoadBalancer};

mod backend;
pub mod discovery;
pub mod failure;
mod health;
pub mod policy;
mod shape;
mod transport;

use backend::{id_of, identity_of};
pub use backend::{BackendMeta, POOL_IDLE_TIMEOUT};
use discovery::{AddressState, Addresses, GroupDiscovery, Lookups};
use health::PerBackendCheck;
pub use transport::{tls_reason, Transport, TransportError};

use crate::config::{BackendConfig, BackendUrl, LiveConfig, PoolConfig};
use crate::store::ServerRecord;

struct PriorityGroup {
    lb: LoadBalancer<RoundRobin>,
    members: Vec<Arc<BackendMeta>>,
}

impl PriorityGroup {
    fn member(&self, b: &Backend) -> Option<&Arc<BackendMeta>> {
        let id = id_of(b)?;
        self.members.iter().find(|m| m.id == id)
    }
}

pub struct Pool {
    pub name: String,
    /// Client headers passed upstream beyond `proxy::headers`' defaults.
    pub forward_headers: Vec<http::HeaderName>,
    /// Upstream headers passed to the client beyond the defaults.
    pub expose_headers: Vec<http::HeaderName>,
    pub allow_routing_fields: bool,
    /// Where backends get the request id (a UUID); `None`: not sent.
    pub request_id_header: Option<http::HeaderName>,
    groups: Vec<PriorityGroup>,
    clock: Clock,
    ejection: failure::Ejection,
}

impl Pool {
    /// Next backend for a request that already tried `tried` (by backend id), and
    /// whether it passes its health checks.
    ///
    /// Backends that failed recently are skipped while any other is usable; when
    /// every healthy one is ejected they are tried anyway (an ejection is a guess).
    /// When no backend of the pool passes its health checks at all, they are all
    /// tried as if healthy ("panic mode", as Envoy does): a wrong health path
    /// must not turn into a total outage, and a backend that is really down fails
    /// fast on connect.
    pub fn select(&self, tried: &[usize]) -> Option<(Arc<BackendMeta>, bool)> {
        let now = self.clock.now_ms();
        for respect_ejection in [true, false] {
            for group in &self.groups {
                let accept = |b: &Backend, healthy: bool| {
                    healthy
                        && group.member(b).is_some_and(|m| {
                            let skip_ejected = respect_ejection && m.is_ejected(now);
                            !tried.contains(&m.id) && !skip_ejected
                        })
                };
                if let Some(b) = group.lb.select_with(b"", 256, accept) {
                    return group.member(&b).map(|m| (m.clone(), true));
                }
            }
        }
        if self.backends().any(|b| self.is_healthy(b)) {
            return None;
        }
        self.groups.iter().find_map(|group| {
            // Even in panic mode a backend needs an address to be dialled.
            let accept = |b: &Backend, _healthy: bool| {
                group
                    .member(b)
                    .is_some_and(|m| !tried.contains(&m.id) && m.current_addr().is_some())
            };
            let b = group.lb.select_with(b"", 256, accept)?;
            group.member(&b).map(|m| (m.clone(), false))
        })
    }

    /// Whether any backend besides those tried could take the request.
    pub fn has_untried(&self, tried: &[usize]) -> bool {
        self.groups
            .iter()
            .flat_map(|g| g.members.iter())
            .any(|m| !tried.contains(&m.id) && m.current_addr().is_some())
    }

    pub fn backends(&self) -> impl Iterator<Item = &Arc<BackendMeta>> {
        self.groups.iter().flat_map(|g| g.members.iter())
    }

    /// Skips a backend for a while after a connect error.
    pub fn eject(&self, backend: &BackendMeta) {
        self.eject_for(backend, self.ejection.eject, "a failure");
    }

    /// Skips a backend for `how_long` (never shortening an ejection in force).
    pub fn eject_for(&self, backend: &BackendMeta, how_long: Duration, after: &str) {
        let until = self.clock.now_ms() + how_long.as_millis() as u64;
        backend.ejected_until_ms.fetch_max(until, Ordering::Relaxed);
        tracing::warn!(backend = %backend.display, pool = %backend.pool, secs = how_long.as_secs_f64(), "backend ejected after {after}");
    }

    /// How long error answers eject a backend (`health_check.eject_secs`, `max_eject_secs`).
    pub fn ejection(&self) -> failure::Ejection {
        self.ejection
    }

    pub fn is_ejected(&self, backend: &BackendMeta) -> bool {
        backend.is_ejected(self.clock.now_ms())
    }

    /// What the admin API shows: why a backend is out of rotation, if it is.
    pub fn state(&self, backend: &BackendMeta) -> BackendState {
        match backend.addresses.load().state {
            AddressState::Pending => BackendState::Resolving,
            AddressState::Unresolved(_) => BackendState::Unresolved,
            AddressState::Refused(_) => BackendState::AddressRefused,
            _ if backend.key_refused().is_some() => BackendState::KeyRefused,
            AddressState::Resolved | AddressState::Stale(_) if self.is_healthy(backend) => {
                BackendState::Healthy
            }
            AddressState::Resolved | AddressState::Stale(_) => BackendState::Unhealthy,
        }
    }

    /// Whether the backend is in rotation (health-checked and enabled).
    pub fn is_healthy(&self, backend: &BackendMeta) -> bool {
        self.groups.iter().any(|g| {
            g.members.iter().any(|m| m.id == backend.id) && g.lb.backends().ready(&backend.identity)
        })
    }
}

/// A backend's state as the admin API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendState {
    Healthy,
    /// Fails its health checks.
    Unhealthy,
    /// Its host name has not been looked up yet.
    Resolving,
    /// Its host name does not resolve.
    Unresolved,
    /// An admin-added server whose name resolves to an address `admin_servers` refuses.
    AddressRefused,
    /// The provider answered 401 or 403: the backend's key is revoked,
    /// expired or without access. Skipped for `health_check.max_eject_secs`;
    /// cleared by its next answer that is not an error.
    KeyRefused,
}

/// Milliseconds since the gateway started; monotonic, cheap to share.
#[derive(Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    pub fn new() -> Self {
        Self(Instant::now())
    }
    pub fn now_ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

enum ModelMatch {
    Exact(String),
    Prefix(String),
    Any,
}

/// Every pool, and the model -> pool routing table.
pub struct Upstreams {
    pools: Vec<Arc<Pool>>,
    routes: Vec<(ModelMatch, usize)>,
    exact: foldhash::HashMap<String, usize>,
    lookups: Lookups,
}

/// Why the pools could not be built (a reload is then rejected as a whole).
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("backend `{url}` of pool `{pool}`: {reason}")]
    Backend {
        pool: String,
        url: String,
        reason: String,
    },
    #[error("pool `{pool}`: the load balancer could not start: {reason}")]
    Balancer { pool: String, reason: String },
}

impl Upstreams {
    /// Builds the pools from config plus the servers added through the admin API,
    /// and looks every backend's host name up once (in parallel, each bounded by
    /// `dns.timeout_ms`); a name that does not resolve leaves its backend out of
    /// rotation until a later lookup finds it (`refresh_addresses`).
    pub async fn build(cfg: &LiveConfig, servers: &[ServerRecord]) -> Result<Self, UpstreamError> {
        Self::build_with(cfg, servers, Lookups::new(&cfg.dns)).await
    }

    pub async fn build_with(
        cfg: &LiveConfig,
        servers: &[ServerRecord],
        lookups: Lookups,
    ) -> Result<Self, UpstreamError> {
        let hc = &cfg.health_check;
        let clock = Clock::new();
        let pool_configs = merged_pools(&cfg.pools, servers);
        let mut pools = Vec::new();
        let mut routes = Vec::new();
        let mut exact = foldhash::HashMap::default();
        let mut next_id = 0;
        for (pool_index, pc) in pool_configs.iter().enumerate() {
            let mut by_priority: std::collections::BTreeMap<u32, Vec<Arc<BackendMeta>>> =
                Default::default();
            for b in &pc.backends {
                let failed = |reason: String| UpstreamError::Backend {
                    pool: pc.name.clone(),
                    url: b.url.to_string(),
                    reason,
                };
                let url = b.url.clone();
                if b.from_admin_api {
                    // Stored before the policy, or the policy tightened since. Its
                    // addresses are checked on every lookup (`discovery`).
                    if let Some(var) = b.api_key_env.as_deref() {
                        if let Err(refused) = policy::check_key_env(&cfg.admin_servers, var) {
                            tracing::error!(backend = %b.url, pool = %pc.name, reason = %refused.message, "admin-added server refused by admin_servers; it is left out");
                            continue;
                        }
                    }
                }
                let shape = shape::Shape::build(b).map_err(failed)?;
                let transport = Transport::load(b).map_err(|e| failed(e.to_string()))?;
                if !transport.verifies() {
                    tracing::warn!(backend = %b.url, pool = %pc.name, "tls.verify is false: this backend's certificate is not checked, so anyone on the path can read the prompts and its API key");
                }
                let host_header = url.host_header();
                let path = pc.health_path.as_deref().unwrap_or(&hc.path);
                let mut check = health::probe(&host_header, url.tls);
                if url.tls {
                    check.peer_template.sni = url.host.clone();
                }
                transport.apply(&mut check.peer_template);
                let timeout = Duration::from_millis(hc.timeout_ms);
                check.peer_template.options.connection_timeout = Some(timeout);
                check.peer_template.options.read_timeout = Some(timeout);
                check.req.set_uri(
                    path.parse()
                        .map_err(|e| failed(format!("bad health path {path}: {e}")))?,
                );
                // Probes carry the key and static headers too: a provider may
                // refuse its health path without them.
                for (name, value) in shape.auth.iter().chain(&shape.headers) {
                    check
                        .req
                        .insert_header(name.clone(), value.clone())
                        .map_err(|e| failed(e.to_string()))?;
                }
                let admin_policy = b.from_admin_api.then(|| cfg.admin_servers.clone());
                let meta = Arc::new(BackendMeta {
                    id: next_id,
                    pool: pc.name.clone(),
                    display: b.url.to_string(),
                    addresses: ArcSwap::from_pointee(Addresses::initial(&url, &admin_policy)),
                    addr_cursor: AtomicUsize::new(0),
                    admin_policy,
                    host_header: http::HeaderValue::try_from(&host_header)
                        .map_err(|e| failed(format!("bad host {host_header}: {e}")))?,
                    url,
                    shape,
                    priority: b.priority,
                    protocol: b.protocol(),
                    responses_api: b.responses_api,
                    transport,
                    tls_failure: Default::default(),
                    key_refused: AtomicU16::new(0),
                    ejected_until_ms: AtomicU64::new(0),
                    health_check: check,
                    identity: identity_of(next_id, b.weight),
                });
                next_id += 1;
                by_priority.entry(b.priority).or_default().push(meta);
            }
            let mut groups = Vec::new();
            for (_, members) in by_priority {
                let mut lb = LoadBalancer::<RoundRobin>::from_backends(Backends::new(Box::new(
                    GroupDiscovery {
                        members: members.clone(),
                        lookups: lookups.clone(),
                    },
                )));
                if hc.enabled {
                    lb.set_health_check(Box::new(PerBackendCheck {
                        members: members.clone(),
                        healthy_threshold: hc.healthy_threshold.max(1),
                        unhealthy_threshold: hc.unhealthy_threshold.max(1),
                    }));
                }
                groups.push(PriorityGroup { lb, members });
            }
            for m in &pc.models {
                let matcher = if m == "*" {
                    ModelMatch::Any
                } else if let Some(prefix) = m.strip_suffix('*') {
                    ModelMatch::Prefix(prefix.to_string())
                } else {
                    exact.entry(m.clone()).or_insert(pool_index);
                    ModelMatch::Exact(m.clone())
                };
                routes.push((matcher, pool_index));
            }
            let names = |list: &[String]| {
                list.iter()
                    .filter_map(|n| http::HeaderName::from_bytes(n.as_bytes()).ok())
                    .collect()
            };
            pools.push(Arc::new(Pool {
                name: pc.name.clone(),
                forward_headers: names(&pc.forward_headers),
                expose_headers: names(&pc.expose_headers),
                allow_routing_fields: pc.allow_routing_fields,
                request_id_header: pc
                    .request_id_header
                    .as_deref()
                    .and_then(|n| http::HeaderName::from_bytes(n.as_bytes()).ok()),
                groups,
                clock,
                ejection: failure::Ejection {
                    eject: Duration::from_secs(hc.eject_secs),
                    max: Duration::from_secs(hc.max_eject_secs.max(hc.eject_secs)),
                },
            }));
        }
        let upstreams = Self {
            pools,
            routes,
            exact,
            lookups,
        };
        upstreams
            .refresh_addresses()
            .await
            .map_err(|(pool, e)| UpstreamError::Balancer {
                pool,
                reason: e.to_string(),
            })?;
        Ok(upstreams)
    }

    /// Looks up again every host name that is due (its TTL or `dns.refresh_secs`
    /// ran out, or it failed last time), all in parallel. Backends keep their
    /// identity: only where their next connections go changes.
    pub async fn refresh_addresses(&self) -> Result<(), (String, pingora::BError)> {
        let updates = self.pools.iter().flat_map(|p| {
            p.groups
                .iter()
                .map(move |g| async move { g.lb.update().await.map_err(|e| (p.name.clone(), e)) })
        });
        futures_util::future::join_all(updates)
            .await
            .into_iter()
            .collect()
    }

    /// The resolver backends are looked up with (the admin API checks a new
    /// server's addresses with it too).
    pub fn resolver(&self) -> Arc<dyn discovery::Resolve> {
        self.lookups.resolver.clone()
    }

    /// The pool serving `model`: an exact name wins, then the first matching pattern
    /// in file order.
    pub fn pool_for(&self, model: &str) -> Option<&Arc<Pool>> {
        if let Some(&i) = self.exact.get(model) {
            return self.pools.get(i);
        }
        self.routes.iter().find_map(|(m, i)| match m {
            ModelMatch::Prefix(p) if model.starts_with(p.as_str()) => self.pools.get(*i),
            ModelMatch::Any => self.pools.get(*i),
            _ => None,
        })
    }

    /// Whether a pool names this model exactly (not only through a pattern).
    pub fn is_listed(&self, model: &str) -> bool {
        self.exact.contains_key(model)
    }

    /// Model names that can be listed (patterns cannot), in config order.
    pub fn listed_models(&self) -> Vec<&str> {
        let mut seen = std::collections::HashSet::new();
        self.routes
            .iter()
            .filter_map(|(m, _)| match m {
                ModelMatch::Exact(name) if seen.insert(name.as_str()) => Some(name.as_str()),
                _ => None,
            })
            .collect()
    }

    pub fn pools(&self) -> &[Arc<Pool>] {
        &self.pools
    }

    /// Publishes each backend's state as `bluesminds_backend_up` and
    /// `bluesminds_backend_addresses`.
    pub fn report_health(&self, metrics: &crate::metrics::Metrics) {
        metrics.backend_up.reset();
        metrics.backend_addresses.reset();
        for p in &self.pools {
            for b in p.backends() {
                let labels = [p.name.as_str(), b.display.as_str()];
                metrics
                    .backend_up
                    .with_label_values(&labels)
                    .set(i64::from(p.is_healthy(b)));
                metrics
                    .backend_addresses
                    .with_label_values(&labels)
                    .set(b.addresses.load().addrs.len() as i64);
            }
        }
    }

    /// One round of active health checks over every group, all in parallel.
    pub async fn check_health(&self) {
        let checks = self
            .pools
            .iter()
            .flat_map(|p| p.groups.iter())
            .map(|g| g.lb.backends().run_health_check(true));
        futures_util::future::join_all(checks).await;
    }
}

/// YAML pools plus admin-added servers: a server joins the pool of its name
/// (adding its models), or forms a new pool when no such pool exists.
fn merged_pools(yaml: &[PoolConfig], servers: &[ServerRecord]) -> Vec<PoolConfig> {
    let mut pools = yaml.to_vec();
    for s in servers {
        // The admin API checked the URL when it was stored.
        let url = match BackendUrl::parse(&s.url) {
            Ok(url) => url,
            Err(reason) => {
                tracing::error!(server = s.id, %reason, "skipping a stored server with a bad URL");
                continue;
            }
        };
        let backend = BackendConfig {
            url,
            weight: s.weight.max(1) as usize,
            priority: s.priority.max(0) as u32,
            api_key_env: s.api_key_env.clone(),
            auth_mode: None,
            protocol: None,
            responses_api: Default::default(),
            headers: Default::default(),
            query: Default::default(),
            models: Default::default(),
            from_admin_api: true,
            // Admin-added servers verify against the system's roots.
            tls: None,
            http2: Default::default(),
        };
        match pools.iter_mut().find(|p| p.name == s.pool) {
            Some(p) => {
                for m in &s.models {
                    if !p.models.contains(m) {
                        p.models.push(m.clone());
                    }
                }
                let mut backend = backend;
                backend.protocol = p.protocol;
                p.backends.push(backend);
            }
            None => pools.push(PoolConfig {
                name: s.pool.clone(),
                models: s.models.clone(),
                backends: vec![backend],
                health_path: None,
                forward_headers: Vec::new(),
                expose_headers: Vec::new(),
                allow_routing_fields: false,
                request_id_header: Some("x-request-id".into()),
                protocol: None,
            }),
        }
    }
    pools
}
