//! Start-up and shutdown: the control runtime (database, usage writer, health
//! checks, side app) and Pingora's proxy service beside it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};

use crate::auth::invalidation::KeyInvalidations;
use crate::auth::{KeyCache, LoginThrottle};
use crate::config::Config;
use crate::limits::cluster::Cluster;
use crate::limits::{Limiter, QuotaLedger};
use crate::metrics::Metrics;
use crate::proxy::Gateway;
use crate::state::{AppState, Parts};
use crate::store::Store;
use crate::upstream::Upstreams;
use crate::usage::{spawn_writer, Ledger};

/// The runtime for everything that is not the proxy's hot path.
pub fn control_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bm-control")
        .on_thread_start(crate::background::lower_this_thread)
        .enable_all()
        .build()
        .context("cannot start the control runtime")
}

/// Timeouts longer than this wait on Tokio's timer instead of Pingora's fast
/// one. Pingora's keeps a timer per 10 ms deadline and worker thread until
/// that deadline, even once nothing waits on it: with the upstream read
/// timeout (600 s by default) and the pool's idle timeout (60 s) armed for
/// every request, a worker under steady traffic held 1.6 MiB of such timers
/// after 60 s at 1,000 requests a second, and gains more until the read
/// timeout's first deadline, ten minutes in (benches/README.md, "Timers kept
/// until their deadline"). Tokio's timer
/// frees a timer when its wait ends, at the same CPU cost per request here.
/// Connect timeouts (3 s by default) stay on Pingora's.
const FAST_TIMEOUT_MAX_SECS: u64 = 10;

/// Pingora's settings for the proxy's worker threads.
fn server_conf(threads: usize, grace_period_secs: u64) -> ServerConf {
    ServerConf {
        threads,
        grace_period_seconds: Some(grace_period_secs),
        graceful_shutdown_timeout_seconds: Some(5),
        // Pingora applies it to its process-wide timer when the server runs.
        fast_timeout_to_tokio_threshold_seconds: Some(FAST_TIMEOUT_MAX_SECS),
        ..ServerConf::default()
    }
}

pub fn run(cfg: Config, config_path: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    if !cfg.admin_emails.is_empty() {
        tracing::warn!("`admin_emails` no longer makes anyone an admin (sign-up does not verify emails); grant the role with `bluesminds users grant-admin --email EMAIL`");
    }
    let (boot, live) = cfg.split();
    let control = control_runtime()?;
    let metrics = Metrics::new();

    // Connected from a control thread, not this one: SQLite's worker threads
    // start there and inherit its lower priority (crate::background).
    let store = control
        .block_on(control.spawn(Store::connect_owned(
            boot.database.url.clone(),
            boot.database.max_connections,
        )))
        .context("the database connection task failed")?
        .with_context(|| format!("cannot open the database {}", boot.database.url))?;
    let servers = {
        // From a control thread too: a connection the pool opens for it
        // keeps its SQLite worker thread for the life of the process.
        let store = store.clone();
        control
            .block_on(control.spawn(async move { store.list_servers().await }))
            .context("the database task failed")?
            .context("cannot read the upstream servers")?
    };
    let upstreams = control
        .block_on(Upstreams::build(&live, &servers))
        .context("cannot build upstream pools")?;
    let usage = Ledger::open(&boot.usage, metrics.clone())
        .with_context(|| format!("cannot open the usage ledger in {}", boot.usage.ledger_dir))?;
    usage.import_spill_file(std::path::Path::new(&boot.usage.spill_path));
    usage.spawn_sync_thread(Duration::from_millis(boot.usage.ledger_sync_ms));
    let writer = {
        let _guard = control.enter();
        spawn_writer(
            store.clone(),
            usage.clone(),
            metrics.clone(),
            boot.usage.batch_size,
        )
    };

    let (cluster, invalidations, login_throttle) = match &boot.redis {
        Some(redis) => {
            let connected = control.block_on(async {
                Ok::<_, redis::RedisError>((
                    Cluster::connect(redis).await?,
                    KeyInvalidations::connect(redis).await?,
                    LoginThrottle::shared(redis).await?,
                ))
            });
            let (c, i, t) =
                connected.with_context(|| format!("cannot connect to Redis at {}", redis.url))?;
            (Some(Arc::new(c)), Some(Arc::new(i)), t)
        }
        None => (None, None, LoginThrottle::new()),
    };
    let mut keys = KeyCache::new(store.clone(), control.handle().clone());
    if let Some(i) = &invalidations {
        let _guard = control.enter();
        keys = keys.with_publisher(i.spawn_publisher());
    }
    let limiter = Arc::new(Limiter::with_cluster(cluster.is_some()));
    if let Some(c) = &cluster {
        limiter.attach(c.clone());
    }
    let pools = live.pools.len();
    let state = Arc::new(AppState::new(Parts {
        boot,
        live,
        upstreams,
        config_path: config_path.clone(),
        keys,
        usage: usage.clone(),
        limiter,
        quotas: QuotaLedger::new(store.clone(), control.handle().clone()),
        metrics,
        store,
        login_throttle,
    }));

    {
        let state = state.clone();
        control.spawn(async move {
            loop {
                // The pools and settings in force now (a reload may have swapped them).
                let now = state.snapshot();
                let hc = &now.config.health_check;
                if hc.enabled {
                    now.upstreams.check_health().await;
                    now.upstreams.report_health(&state.metrics);
                }
                tokio::time::sleep(Duration::from_secs(hc.interval_secs)).await;
            }
        });
    }

    {
        // Each backend's host name is looked up again when its TTL or
        // `dns.refresh_secs` runs out; checking every second costs nothing
        // when none is due, and follows the pools a reload swapped in.
        let state = state.clone();
        control.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let now = state.snapshot();
                if let Err((pool, e)) = now.upstreams.refresh_addresses().await {
                    tracing::warn!(pool, error = %e, "cannot update the pool's backends");
                }
                now.upstreams.report_health(&state.metrics);
            }
        });
    }

    // One certificate for both listeners, reloaded on SIGHUP and file change.
    let certs = match &state.boot.tls {
        Some(tls) => {
            let certs = crate::tls::CertStore::load(tls)?;
            certs.spawn_watcher(control.handle(), state.metrics.clone());
            Some(certs)
        }
        None => None,
    };
    spawn_reloaders(&control, &state, certs.clone())?;
    {
        let state = state.clone();
        control.spawn(async move {
            let every = Duration::from_millis(state.boot.usage.quota_refresh_ms);
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = state
                    .quotas
                    .refresh_from_store(crate::store::now_ms())
                    .await
                {
                    tracing::warn!(error = %e, "cannot refresh quotas from the database");
                }
            }
        });
    }
    {
        // Expired and idle sessions are deleted, not only refused.
        let state = state.clone();
        control.spawn(async move {
            loop {
                let idle = state.snapshot().config.accounts.session_idle;
                match state.store.delete_stale_sessions(idle).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(sessions = n, "ended sessions deleted"),
                    Err(e) => tracing::warn!(error = %e, "cannot delete ended sessions"),
                }
                let every = (idle / 2).clamp(Duration::from_secs(1), Duration::from_secs(600));
                tokio::time::sleep(every).await;
            }
        });
    }
    spawn_drain_flag(&control, &state)?;
    if let (Some(c), Some(i)) = (&cluster, &invalidations) {
        let _guard = control.enter();
        c.spawn_sync(state.limiter.clone());
        let keys = state.keys.clone();
        let rt = control.handle().clone();
        i.spawn_subscriber(move |hash| {
            let keys = keys.clone();
            rt.spawn(async move { keys.invalidate_local_hex(&hash).await });
        });
        tracing::info!("cluster mode: limits and key invalidations shared through Redis");
    }

    let bind = |addr: std::net::SocketAddr| {
        control
            .block_on(tokio::net::TcpListener::bind(addr))
            .with_context(|| format!("cannot listen on {addr}"))
    };
    let side_settings = state.boot.side;
    let listen = |name, tls| crate::side::serve::Listen {
        name,
        header_timeout: side_settings.header_timeout,
        max_connections: side_settings.max_connections,
        tls,
    };
    let side = bind(state.boot.admin_listen)?;
    let side_tls = certs
        .as_ref()
        .map(|c| tokio_rustls::TlsAcceptor::from(c.server_config()));
    control.spawn(crate::side::serve::serve(
        side,
        crate::side::router(state.clone()),
        listen("side app", side_tls),
    ));
    if let Some(addr) = state.boot.metrics_listen {
        let metrics = bind(addr)?;
        control.spawn(crate::side::serve::serve(
            metrics,
            crate::side::metrics_router(state.clone()),
            listen("metrics", None),
        ));
    }

    let boot = state.boot.clone();
    let threads = match boot.threads {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    let mut server =
        Server::new_with_opt_and_conf(Opt::default(), server_conf(threads, boot.grace_period_secs));
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, Gateway::new(state));
    let listener = ListenerConfig::tcp(boot.proxy_listen.to_string());
    match &certs {
        Some(certs) => {
            // The resolver replaces the files Pingora would read once.
            let mut tls = pingora::listeners::tls::TlsSettings::intermediate("", "")
                .context("cannot set up TLS for the proxy")?;
            tls.set_cert_resolver(certs.clone());
            tls.enable_h2();
            // TLS reads records through the L4 buffer: Pingora's default stays.
            proxy.add_listener(listener.tls(tls));
        }
        // Pingora's 64 KiB read buffer per client connection sits in front of
        // the HTTP/1 parser's own buffers, which read the socket directly as
        // well: without it an open stream holds ~8 KiB less (benches/README.md,
        // "Memory per stream"), and a request needs no more read calls.
        None => proxy.add_listener(listener.l4_buffer(L4BufferSettings::default().read(0))),
    }
    server.add_service(proxy);
    tracing::info!(
        proxy = %boot.proxy_listen,
        side = %boot.admin_listen,
        metrics = ?boot.metrics_listen,
        tls = certs.is_some(),
        pools,
        "BluesMinds Gateway started"
    );
    #[cfg(target_os = "linux")]
    control.spawn(async {
        // Pingora's services start below, within milliseconds; start-up is over then.
        tokio::time::sleep(Duration::from_secs(3)).await;
        match tokio::task::spawn_blocking(crate::startup_pages::release).await {
            Ok(Ok(bytes)) => tracing::debug!(kib = bytes >> 10, "start-up's pages released"),
            Ok(Err(e)) => tracing::warn!(error = %e, "start-up's pages not released"),
            Err(_) => {}
        }
    });
    // Returns after SIGTERM (graceful: open streams get the grace period) or SIGINT.
    server.run(RunArgs::default());

    tracing::info!("proxy stopped; flushing usage records");
    usage.close();
    match control.block_on(async { tokio::time::timeout(Duration::from_secs(30), writer).await }) {
        Ok(_) => tracing::info!("usage records flushed"),
        Err(_) => tracing::error!("usage writer did not finish within 30s"),
    }
    control.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

/// Pingora handles SIGTERM itself (open streams get the grace period); this
/// listener only marks the instance as draining, for /readyz.
fn spawn_drain_flag(
    control: &tokio::runtime::Runtime,
    state: &Arc<AppState>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let _guard = control.enter();
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let state = state.clone();
    control.spawn(async move {
        if term.recv().await.is_some() {
            state
                .draining
                .store(true, std::sync::atomic::Ordering::Release);
            tracing::info!("SIGTERM: draining; /readyz now answers 503");
        }
    });
    Ok(())
}

/// Reloads the config (and the TLS certificate) on SIGHUP and, when
/// `server.watch_config` is on, the config when its file changes (its
/// modification time or size; polled, so it also works on volumes where
/// inotify does not, like Kubernetes ConfigMaps). The certificate files have
/// a watcher of their own (`CertStore::spawn_watcher`).
fn spawn_reloaders(
    control: &tokio::runtime::Runtime,
    state: &Arc<AppState>,
    certs: Option<Arc<crate::tls::CertStore>>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let _guard = control.enter();
    // Installed before Pingora starts: SIGHUP would otherwise end the process.
    let mut hup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let s = state.clone();
    control.spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the config");
            if let Some(certs) = &certs {
                let _ = certs.reload(&s.metrics);
            }
            let _ = s.reload_config().await;
        }
    });
    let Some(path) = state.config_path.clone() else {
        return Ok(());
    };
    if !state.boot.watch_config {
        return Ok(());
    }
    let s = state.clone();
    control.spawn(async move {
        let stamp = |p: &std::path::Path| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.modified().ok(), m.len()))
        };
        let mut last = stamp(&path);
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tick.tick().await;
            let now = stamp(&path);
            if now.is_some() && now != last {
                last = now;
                tracing::info!(path = %path.display(), "config file changed: reloading");
                let _ = s.reload_config().await;
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeouts_armed_for_every_request_leave_pingoras_fast_timer() {
        let threshold = server_conf(1, 10)
            .fast_timeout_to_tokio_threshold_seconds
            .expect("a threshold is set");
        let proxy = crate::config::ServerConfig::default();
        // Pingora's timer takes a timeout when its seconds are at most the threshold.
        for (what, secs) in [
            ("upstream read", proxy.read_timeout_secs),
            ("pool idle", crate::upstream::POOL_IDLE_TIMEOUT.as_secs()),
            ("request body", proxy.body_timeout_secs),
        ] {
            assert!(
                secs > threshold,
                "the {what} timeout ({secs} s) stays on Pingora's timer"
            );
        }
        assert!(proxy.connect_timeout_ms / 1000 <= threshold);
    }
}
