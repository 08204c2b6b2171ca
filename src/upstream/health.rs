//! Active health checks: each backend is probed with its own request.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::lb::health_check::HealthCheck;
use pingora::lb::Backend;
use pingora::protocols::l4::socket::SocketAddr as InetOrUnix;

use super::backend::{id_of, BackendMeta};

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
