//! Active health checks: each backend is probed with its own request.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::connectors::http::Connector;
use pingora::connectors::ConnectorOptions;
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck};
use pingora::lb::Backend;
use pingora::protocols::l4::socket::SocketAddr as InetOrUnix;

use super::backend::{id_of, BackendMeta};

/// A backend's probe. Each probe has a connector of its own, and Pingora's
/// default one keeps a pool sized for 128 idle connections for each HTTP
/// version; a probe dials afresh every time (`reuse_connection` is off), so
/// one slot is all it could use.
pub(super) fn probe(host: &str, tls: bool) -> HttpHealthCheck {
    HttpHealthCheck::new_custom(host, tls, Connector::new(Some(ConnectorOptions::new(1))))
}

/// Probes each backend with its own request (host, TLS, path and key differ per backend).
pub(super) struct PerBackendCheck {
    pub(super) members: Vec<Arc<BackendMeta>>,
    pub(super) healthy_threshold: usize,
    pub(super) unhealthy_threshold: usize,
}

impl PerBackendCheck {
    fn member(&self, target: &Backend) -> Option<&Arc<BackendMeta>> {
        let id = id_of(target)?;
        self.members.iter().find(|m| m.id == id)
    }
}

#[async_trait]
impl HealthCheck for PerBackendCheck {
    async fn check(&self, target: &Backend) -> pingora::Result<()> {
        let Some(m) = self.member(target) else {
            return Ok(());
        };
        // Probed where requests go now; a backend with no address is out of
        // rotation through discovery already, and fails here too.
        let Some(addr) = m.current_addr() else {
            return pingora::Error::e_explain(
                pingora::ErrorType::ConnectNoRoute,
                "the backend's host name does not resolve",
            );
        };
        let probe = Backend {
            addr: InetOrUnix::Inet(addr),
            weight: target.weight,
            ext: Default::default(),
        };
        let result = m.health_check.check(&probe).await;
        match &result {
            Ok(()) => m.clear_tls_failure(),
            Err(e) => {
                if let Some(reason) = super::tls_reason(e) {
                    m.note_tls_failure(&reason);
                }
            }
        }
        result
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        if let Some(m) = self.member(target) {
            if healthy {
                tracing::info!(backend = %m.display, pool = %m.pool, "backend is healthy again");
            } else {
                tracing::warn!(backend = %m.display, pool = %m.pool, "backend failed its health check; out of rotation");
            }
        }
    }

    fn health_threshold(&self, success: bool) -> usize {
        if success {
            self.healthy_threshold
        } else {
            self.unhealthy_threshold
        }
    }
}

#[cfg(test)]
mod tests {
    use pingora::connectors::{ConnectorOptions, TransportConnector};

    /// Every backend's probe has connectors of its own (one per HTTP
    /// version), so the platform's trust roots must be read once and shared,
    /// not parsed and copied for each (~400 KiB and 9-12 ms per backend,
    /// benches/README.md "Trust roots once per process").
    #[test]
    fn connectors_share_one_copy_of_the_platform_trust_roots() {
        let proxy = TransportConnector::new(None);
        let first = TransportConnector::new(Some(ConnectorOptions::new(1)));
        let second = TransportConnector::new(Some(ConnectorOptions::new(1)));
        assert!(
            proxy.shares_trust_roots_with(&first) && first.shares_trust_roots_with(&second),
            "each connector read and kept the platform's trust roots for itself"
        );
    }
}
