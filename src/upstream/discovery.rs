//! Where each backend is: its host name resolved in the background (every A
//! and AAAA record), again every `dns.refresh_secs` or when the records' TTL
//! runs out, whichever is sooner.
//!
//! The load balancer never sees an address (it holds identities, see
//! `backend::identity_of`); a refresh swaps the address list a backend dials
//! for its next connections, so connections and streams already open are left
//! alone. Each priority group's `ServiceDiscovery` re-resolves its members and
//! reports the ones without a usable address as disabled, so a name that does
//! not resolve keeps that backend out of rotation rather than stopping the
//! gateway.

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::Backend;

use super::backend::BackendMeta;
use super::policy;
use crate::config::{AdminServersConfig, BackendUrl, DnsConfig};

/// The addresses of one name and until when they may be used without asking again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    pub ips: Vec<IpAddr>,
    /// From the records' TTL, when the resolver exposes it.
    pub valid_until: Option<Instant>,
}

/// A name resolver; the gateway's is DNS (`Dns`), tests pass their own.
#[async_trait]
pub trait Resolve: Send + Sync {
    async fn lookup(&self, host: &str) -> Result<Lookup, String>;
}

/// hickory's resolver: unlike the system's `getaddrinfo` it is asynchronous
/// and tells the TTL of what it found, and it can ask name servers other than
/// `/etc/resolv.conf`'s. It still reads `/etc/hosts`, and resolv.conf's
/// `search` and `ndots` (Kubernetes service names).
pub struct Dns(hickory_resolver::TokioResolver);

impl Dns {
    pub fn new(cfg: &DnsConfig) -> Result<Self, String> {
        use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig};
        use hickory_resolver::net::runtime::TokioRuntimeProvider;
        let provider = TokioRuntimeProvider::default();
        let mut builder = if cfg.nameservers.is_empty() {
            hickory_resolver::TokioResolver::builder(provider)
                .map_err(|e| format!("cannot read the system's resolver configuration: {e}"))?
        } else {
            let servers = cfg
                .nameservers
                .iter()
                .map(|addr| {
                    let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                    for c in &mut ns.connections {
                        c.port = addr.port();
                    }
                    ns
                })
                .collect();
            hickory_resolver::TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                provider,
            )
        };
        let opts = builder.options_mut();
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        opts.timeout = Duration::from_millis(cfg.timeout_ms);
        opts.attempts = 1;
        builder
            .build()
            .map(Self)
            .map_err(|e| format!("cannot start the resolver: {e}"))
    }
}

#[async_trait]
impl Resolve for Dns {
    async fn lookup(&self, host: &str) -> Result<Lookup, String> {
        let found = self.0.lookup_ip(host).await.map_err(|e| e.to_string())?;
        Ok(Lookup {
            ips: found.iter().collect(),
            valid_until: Some(found.valid_until()),
        })
    }
}

/// The system's resolver (`getaddrinfo`, on a blocking thread), for when
/// hickory cannot read the system's configuration. It tells no TTL.
pub struct System;

#[async_trait]
impl Resolve for System {
    async fn lookup(&self, host: &str) -> Result<Lookup, String> {
        let found = tokio::net::lookup_host((host, 0))
            .await
            .map_err(|e| e.to_string())?;
        let mut ips: Vec<IpAddr> = Vec::new();
        for a in found {
            if !ips.contains(&a.ip()) {
                ips.push(a.ip());
            }
        }
        Ok(Lookup {
            ips,
            valid_until: None,
        })
    }
}

/// The resolver the config asks for.
pub fn resolver(cfg: &DnsConfig) -> Arc<dyn Resolve> {
    match Dns::new(cfg) {
        Ok(dns) => Arc::new(dns),
        Err(e) => {
            tracing::warn!(error = %e, "using the system's getaddrinfo for backend names (no TTLs)");
            Arc::new(System)
        }
    }
}

/// Where a backend's name stands now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressState {
    /// Not looked up yet (the first lookup runs while the pools are built).
    Pending,
    Resolved,
    /// The last lookup failed but an earlier one succeeded: its addresses are
    /// kept (a DNS server's hiccup must not take working backends out).
    Stale(String),
    /// No lookup has succeeded: nothing to dial.
    Unresolved(String),
    /// An admin-added server resolved to an address `admin_servers` forbids.
    Refused(String),
}

/// What a backend dials; swapped whole on each lookup.
#[derive(Debug, Clone)]
pub struct Addresses {
    pub addrs: Vec<SocketAddr>,
    pub state: AddressState,
    /// When to look the name up again.
    pub(super) refresh_at: Instant,
}

impl Addresses {
    /// Before the first lookup. An IP literal is its own address, never
    /// looked up, unless it is an admin-added server's (which `admin_servers`
    /// checks on the lookup).
    pub(super) fn initial(url: &BackendUrl, admin_policy: &Option<AdminServersConfig>) -> Self {
        match url.host.parse::<IpAddr>() {
            Ok(ip) if admin_policy.is_none() => Self {
                addrs: vec![SocketAddr::new(ip, url.port)],
                state: AddressState::Resolved,
                refresh_at: far_future(),
            },
            _ => Self {
                addrs: Vec::new(),
                state: AddressState::Pending,
                refresh_at: Instant::now(),
            },
        }
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

/// How lookups are made and how often they are repeated.
#[derive(Clone)]
pub struct Lookups {
    pub resolver: Arc<dyn Resolve>,
    pub refresh: Duration,
    pub timeout: Duration,
}

impl Lookups {
    pub fn new(cfg: &DnsConfig) -> Self {
        Self {
            resolver: resolver(cfg),
            refresh: Duration::from_secs(cfg.refresh_secs),
            timeout: Duration::from_millis(cfg.timeout_ms),
        }
    }

    /// A failed name is asked again sooner than a good one is refreshed: a
    /// backend that is being deployed should join as soon as it has a name.
    fn retry_after_failure(&self) -> Duration {
        self.refresh.min(Duration::from_secs(5))
    }

    /// Looks the backend's name up if it is due, and swaps its addresses.
    pub(super) async fn refresh(&self, m: &BackendMeta) {
        let now = Instant::now();
        let current = m.addresses.load_full();
        if current.refresh_at > now {
            return;
        }
        let host = &m.url.host;
        let found = match tokio::time::timeout(self.timeout, self.resolver.lookup(host)).await {
            Ok(found) => found,
            Err(_) => Err(format!("no answer within {} ms", self.timeout.as_millis())),
        };
        let next = match found {
            Ok(found) if found.ips.is_empty() => self.failed(m, "no A or AAAA record".into()),
            Ok(found) => {
                let addrs: Vec<SocketAddr> = found
                    .ips
                    .iter()
                    .map(|ip| SocketAddr::new(*ip, m.url.port))
                    .collect();
                // TTL 0 or a resolver clock skew must not turn into a busy loop.
                let ttl_at = found
                    .valid_until
                    .map(|t| t.max(now + Duration::from_secs(1)));
                let refresh_at = ttl_at.map_or(now + self.refresh, |t| t.min(now + self.refresh));
                let resolved = |addrs| Addresses {
                    addrs,
                    state: AddressState::Resolved,
                    refresh_at,
                };
                match &m.admin_policy {
                    Some(p) => {
                        match policy::check_addresses(p, &m.url, &addrs, m.shape.auth.is_some()) {
                            Ok(()) => resolved(addrs),
                            Err(refused) => {
                                if current.state != AddressState::Refused(refused.message.clone()) {
                                    tracing::error!(backend = %m.display, pool = %m.pool, reason = %refused.message, "admin-added server now resolves to an address admin_servers refuses; out of rotation");
                                }
                                Addresses {
                                    addrs: Vec::new(),
                                    state: AddressState::Refused(refused.message),
                                    refresh_at,
                                }
                            }
                        }
                    }
                    None => resolved(addrs),
                }
            }
            Err(e) => self.failed(m, format!("cannot resolve `{host}`: {e}")),
        };
        if next.addrs != current.addrs && !next.addrs.is_empty() && !current.addrs.is_empty() {
            tracing::info!(backend = %m.display, pool = %m.pool, from = ?current.addrs, to = ?next.addrs, "backend addresses changed");
        }
        if !matches!(
            current.state,
            AddressState::Resolved | AddressState::Stale(_)
        ) && next.state == AddressState::Resolved
        {
            tracing::info!(backend = %m.display, pool = %m.pool, addrs = ?next.addrs, "backend host name resolves");
        }
        m.addresses.store(Arc::new(next));
    }

    fn failed(&self, m: &BackendMeta, reason: String) -> Addresses {
        let was = m.addresses.load();
        let refresh_at = Instant::now() + self.retry_after_failure();
        if !was.addrs.is_empty()
            && matches!(was.state, AddressState::Resolved | AddressState::Stale(_))
        {
            if was.state == AddressState::Resolved {
                tracing::warn!(backend = %m.display, pool = %m.pool, %reason, addrs = ?was.addrs, "backend host name lookup failed; keeping its last addresses");
            }
            return Addresses {
                addrs: was.addrs.clone(),
                state: AddressState::Stale(reason),
                refresh_at,
            };
        }
        if was.state != AddressState::Unresolved(reason.clone()) {
            tracing::warn!(backend = %m.display, pool = %m.pool, %reason, "backend host name does not resolve; out of rotation until it does");
        }
        Addresses {
            addrs: Vec::new(),
            state: AddressState::Unresolved(reason),
            refresh_at,
        }
    }
}

/// A priority group's members for Pingora's `Backends::update`: always the same
/// identities, enabled while they have an address to dial.
pub(super) struct GroupDiscovery {
    pub(super) members: Vec<Arc<BackendMeta>>,
    pub(super) lookups: Lookups,
}

/// The key Pingora's enablement map uses for a backend (`Backend::hash_key`,
/// which is not public).
fn enablement_key(b: &Backend) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    b.hash(&mut h);
    h.finish()
}

#[async_trait]
impl ServiceDiscovery for GroupDiscovery {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        futures_util::future::join_all(self.members.iter().map(|m| self.lookups.refresh(m))).await;
        let identities = self.members.iter().map(|m| m.identity.clone()).collect();
        let enabled = self
            .members
            .iter()
            .map(|m| (enablement_key(&m.identity), m.current_addr().is_some()))
            .collect();
        Ok((identities, enabled))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::config::Config;
    use crate::store::ServerRecord;
    use crate::upstream::{BackendState, Upstreams};

    /// Answers from a table the test changes, as a DNS server whose records change.
    #[derive(Default)]
    struct FakeDns(Mutex<HashMap<String, Vec<IpAddr>>>);

    impl FakeDns {
        fn set(&self, host: &str, ips: &[&str]) {
            let ips = ips.iter().map(|ip| ip.parse().unwrap()).collect();
            self.0.lock().unwrap().insert(host.into(), ips);
        }
        fn remove(&self, host: &str) {
            self.0.lock().unwrap().remove(host);
        }
    }

    #[async_trait]
    impl Resolve for FakeDns {
        async fn lookup(&self, host: &str) -> Result<Lookup, String> {
            match self.0.lock().unwrap().get(host) {
                Some(ips) => Ok(Lookup {
                    ips: ips.clone(),
                    valid_until: None,
                }),
                None => Err("NXDomain".into()),
            }
        }
    }

    async fn upstreams(yaml: &str, servers: &[ServerRecord], dns: &Arc<FakeDns>) -> Upstreams {
        let yaml = format!("health_check:\n  enabled: false\n{yaml}");
        let (_, live) = Config::from_yaml(&yaml, "t.yaml").unwrap().split();
        let lookups = Lookups {
            resolver: dns.clone(),
            refresh: Duration::from_secs(30),
            timeout: Duration::from_secs(1),
        };
        Upstreams::build_with(&live, servers, lookups)
            .await
            .unwrap()
    }

    /// What the refresh loop does once the TTL or `refresh_secs` ran out.
    async fn refresh_now(u: &Upstreams) {
        for b in u.pools().iter().flat_map(|p| p.backends()) {
            let mut due = Addresses::clone(&b.addresses.load());
            if due.refresh_at < far_future() - Duration::from_secs(86_400) {
                due.refresh_at = Instant::now();
            }
            b.addresses.store(Arc::new(due));
        }
        u.refresh_addresses().await.unwrap();
    }

    fn addr(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    #[tokio::test]
    async fn every_address_is_kept_and_a_changed_one_is_dialled_after_the_refresh() {
        let dns = Arc::new(FakeDns::default());
        dns.set("api.test", &["10.0.0.1", "2001:db8::1"]);
        let u = upstreams(
            "pools:\n  - name: p\n    models: [m]\n    backends:\n      - url: http://api.test:9000\n",
            &[],
            &dns,
        )
        .await;
        let pool = u.pool_for("m").unwrap();
        let (before, _) = pool.select(&[]).unwrap();
        assert_eq!(
            before.addresses().addrs,
            vec![
                addr("10.0.0.1:9000").unwrap(),
                addr("[2001:db8::1]:9000").unwrap()
            ]
        );
        assert_eq!(before.current_addr(), addr("10.0.0.1:9000"));
        // A failed connection moves new ones to the next address.
        before.address_failed(addr("10.0.0.1:9000").unwrap());
        assert_eq!(before.current_addr(), addr("[2001:db8::1]:9000"));

        dns.set("api.test", &["10.0.0.2"]);
        refresh_now(&u).await;
        let (after, healthy) = pool.select(&[]).unwrap();
        assert!(healthy);
        // The same backend (a request in flight holds this very object, and
        // its connection is not touched), now dialling the new address.
        assert!(Arc::ptr_eq(&before, &after));
        assert_eq!(after.current_addr(), addr("10.0.0.2:9000"));
        assert_eq!(before.current_addr(), addr("10.0.0.2:9000"));
    }

    #[tokio::test]
    async fn a_name_that_does_not_resolve_is_out_of_rotation_until_it_does() {
        let dns = Arc::new(FakeDns::default());
        let u = upstreams(
            "pools:\n  - name: p\n    models: [m]\n    backends:\n      - url: http://later.test:9000\n      - url: http://10.0.0.9:9000\n  - name: q\n    models: [n]\n    backends:\n      - url: http://later.test:9001\n",
            &[],
            &dns,
        )
        .await;
        let pool = u.pool_for("m").unwrap();
        let later = pool.backends().next().unwrap().clone();
        assert_eq!(pool.state(&later), BackendState::Unresolved);
        assert!(!pool.is_healthy(&later));
        for _ in 0..4 {
            let (b, _) = pool.select(&[]).unwrap();
            assert_eq!(b.current_addr(), addr("10.0.0.9:9000"));
        }
        // Failing over from the good one finds nothing to dial.
        let literal = pool.backends().nth(1).unwrap().id;
        assert!(pool.select(&[literal]).is_none());
        assert!(!pool.has_untried(&[literal]));
        // A pool whose only backend does not resolve has nothing to try, even in panic mode.
        assert!(u.pool_for("n").unwrap().select(&[]).is_none());

        dns.set("later.test", &["10.0.0.7"]);
        refresh_now(&u).await;
        assert_eq!(pool.state(&later), BackendState::Healthy);
        let (b, healthy) = pool.select(&[literal]).unwrap();
        assert!(healthy);
        assert_eq!(b.current_addr(), addr("10.0.0.7:9000"));

        // A failed lookup after a good one keeps the last addresses: a DNS
        // server's hiccup does not take a working backend out.
        dns.remove("later.test");
        refresh_now(&u).await;
        assert_eq!(pool.state(&later), BackendState::Healthy);
        assert!(matches!(later.addresses().state, AddressState::Stale(_)));
        assert_eq!(later.current_addr(), addr("10.0.0.7:9000"));
    }

    #[tokio::test]
    async fn an_admin_added_server_is_checked_against_every_address_on_each_lookup() {
        let dns = Arc::new(FakeDns::default());
        dns.set("svc.test", &["10.0.0.5"]);
        let server = ServerRecord {
            id: 1,
            pool: "added".into(),
            url: "http://svc.test:9000".into(),
            models: vec!["a".into()],
            weight: 1,
            priority: 0,
            api_key_env: None,
            created_at: 0,
        };
        let u = upstreams(
            "admin_servers:\n  allow_private: true\npools:\n  - name: p\n    models: [m]\n    backends:\n      - url: http://127.0.0.1:9000\n",
            &[server],
            &dns,
        )
        .await;
        let pool = u.pool_for("a").unwrap();
        let (b, _) = pool.select(&[]).unwrap();
        assert_eq!(b.current_addr(), addr("10.0.0.5:9000"));

        // The name moves (or is made to point) at the cloud's metadata service.
        dns.set("svc.test", &["10.0.0.5", "169.254.169.254"]);
        refresh_now(&u).await;
        assert_eq!(pool.state(&b), BackendState::AddressRefused);
        assert_eq!(b.current_addr(), None);
        assert!(pool.select(&[]).is_none());
        match &b.addresses().state {
            AddressState::Refused(why) => assert!(why.contains("169.254.169.254"), "{why}"),
            other => panic!("{other:?}"),
        }

        dns.set("svc.test", &["10.0.0.6"]);
        refresh_now(&u).await;
        assert_eq!(
            pool.select(&[]).unwrap().0.current_addr(),
            addr("10.0.0.6:9000")
        );
    }
}
