//! HTTPS on the gateway's own listeners (`server.tls`): one certificate store
//! that both the proxy (Pingora's rustls listener) and the side app
//! (tokio-rustls) ask for the certificate of every handshake, so a reloaded
//! certificate serves new connections at once while open ones keep theirs.
//!
//! The files are read at start (a bad pair is a config error naming the
//! file), on SIGHUP and when either file's modification time or size changes
//! (polled, like the config file). A new pair that does not load or match
//! keeps the old certificate and logs an error.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::TlsConfig;
use crate::metrics::Metrics;

/// What both listeners offer by ALPN: HTTP/2 first, HTTP/1.1 for the rest.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// A certificate pair that cannot be used; `field` is its config path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct TlsError {
    pub field: &'static str,
    pub message: String,
}

const CERT: &str = "server.tls.cert_file";
const KEY: &str = "server.tls.key_file";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads both files, parses them and checks that the key is the
/// certificate's: the same checks at start, in `check-config` and on reload.
pub fn load_certified_key(cfg: &TlsConfig) -> Result<CertifiedKey, TlsError> {
    load_pair(&cfg.cert_file, &cfg.key_file, CERT, KEY).map(|p| p.certified)
}

/// A certificate chain and the private key that belongs to it.
pub struct Pair {
    pub certified: CertifiedKey,
    /// The key as read, for TLS stacks that take it as DER (Pingora's
    /// upstream client certificates).
    pub key_der: PrivateKeyDer<'static>,
}

/// Reads a certificate chain and a private key from PEM files and checks
/// that the key is the certificate's; errors name `cert_field` or
/// `key_field`. Used for the listeners' certificate and for the client
/// certificates the gateway shows upstreams (`tls.client_cert_file`).
pub fn load_pair(
    cert_file: &Path,
    key_file: &Path,
    cert_field: &'static str,
    key_field: &'static str,
) -> Result<Pair, TlsError> {
    let read = |path: &Path, field: &'static str, what: &str| {
        std::fs::read(path).map_err(|e| TlsError {
            field,
            message: format!("cannot read the {what} file {}: {e}", path.display()),
        })
    };
    let cert_pem = read(cert_file, cert_field, "certificate")?;
    let key_pem = read(key_file, key_field, "private key")?;
    let cert_err = |message: String| TlsError {
        field: cert_field,
        message,
    };
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            cert_err(format!(
                "{} is not a PEM certificate file: {e}",
                cert_file.display()
            ))
        })?;
    if chain.is_empty() {
        return Err(cert_err(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            cert_file.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError {
        field: key_field,
        message: format!(
            "{} holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1, unencrypted): {e}",
            key_file.display()
        ),
    })?;
    let signing_key = provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| TlsError {
            field: key_field,
            message: format!(
                "the private key in {} cannot be used: {e}",
                key_file.display()
            ),
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(Pair {
            certified,
            key_der: key,
        }),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TlsError {
                field: key_field,
                message: format!(
                    "the private key in {} does not belong to the certificate in {}",
                    key_file.display(),
                    cert_file.display()
                ),
            })
        }
        // A key type whose public half rustls cannot derive: nothing to compare.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(Pair {
            certified,
            key_der: key,
        }),
        Err(e) => Err(cert_err(format!(
            "the certificate in {} does not parse: {e}",
            cert_file.display()
        ))),
    }
}

type Stamp = Option<(Option<SystemTime>, u64)>;

fn stamp(p: &Path) -> Stamp {
    std::fs::metadata(p)
        .ok()
        .map(|m| (m.modified().ok(), m.len()))
}

/// The certificate in force, swapped whole on a good reload.
#[derive(Debug)]
pub struct CertStore {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: ArcSwap<CertifiedKey>,
}

impl CertStore {
    pub fn load(cfg: &TlsConfig) -> Result<Arc<Self>, TlsError> {
        let key = load_certified_key(cfg)?;
        Ok(Arc::new(Self {
            cert_file: cfg.cert_file.clone(),
            key_file: cfg.key_file.clone(),
            current: ArcSwap::from_pointee(key),
        }))
    }

    fn files(&self) -> TlsConfig {
        TlsConfig {
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
        }
    }

    /// Re-reads the files; a pair that does not load keeps the current one.
    pub fn reload(&self, metrics: &Metrics) -> Result<(), TlsError> {
        match load_certified_key(&self.files()) {
            Ok(key) => {
                self.current.store(Arc::new(key));
                metrics.tls_reloads.with_label_values(&["ok"]).inc();
                tracing::info!(cert = %self.cert_file.display(), "TLS certificate reloaded");
                Ok(())
            }
            Err(e) => {
                metrics.tls_reloads.with_label_values(&["rejected"]).inc();
                tracing::error!(error = %e, "TLS certificate reload rejected; the previous certificate keeps serving");
                Err(e)
            }
        }
    }

    /// Reloads whenever either file's modification time or size changes.
    /// A replacement written as two steps (certificate, then key) may be seen
    /// half done: that attempt is rejected and the next change loads the pair.
    pub fn spawn_watcher(self: &Arc<Self>, rt: &tokio::runtime::Handle, metrics: Metrics) {
        let store = self.clone();
        rt.spawn(async move {
            let both = |s: &CertStore| (stamp(&s.cert_file), stamp(&s.key_file));
            let mut last = both(&store);
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let now = both(&store);
                if now != last && now.0.is_some() && now.1.is_some() {
                    last = now;
                    tracing::info!(cert = %store.cert_file.display(), "TLS files changed: reloading");
                    let _ = store.reload(&metrics);
                }
            }
        });
    }

    /// The side app's rustls config: TLS 1.2 and 1.3, h2 and http/1.1 by
    /// ALPN, the certificate from this store.
    pub fn server_config(self: &Arc<Self>) -> Arc<rustls::ServerConfig> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
            .expect("ring supports TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str) -> TlsConfig {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let files = TlsConfig {
            cert_file: dir.join(format!("{name}.crt")),
            key_file: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert_file, cert.cert.pem()).unwrap();
        std::fs::write(&files.key_file, cert.signing_key.serialize_pem()).unwrap();
        files
    }

    #[test]
    fn a_matching_pair_loads() {
        let dir = tempfile::tempdir().unwrap();
        let files = pair(dir.path(), "a");
        assert!(load_certified_key(&files).is_ok());
    }

    #[test]
    fn each_bad_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let a = pair(dir.path(), "a");
        let b = pair(dir.path(), "b");

        let missing = TlsConfig {
            cert_file: dir.path().join("nope.crt"),
            ..a.clone()
        };
        let e = load_certified_key(&missing).unwrap_err();
        assert_eq!(e.field, CERT);
        assert!(e.message.contains("nope.crt"), "{e}");

        let mismatched = TlsConfig {
            key_file: b.key_file.clone(),
            ..a.clone()
        };
        let e = load_certified_key(&mismatched).unwrap_err();
        assert_eq!(e.field, KEY);
        assert!(
            e.message.contains("b.key") && e.message.contains("does not belong"),
            "{e}"
        );

        // A key where the certificate belongs, and the other way round.
        let swapped = TlsConfig {
            cert_file: a.key_file.clone(),
            key_file: a.cert_file.clone(),
        };
        let e = load_certified_key(&swapped).unwrap_err();
        assert_eq!(e.field, CERT);
        assert!(e.message.contains("a.key"), "{e}");

        std::fs::write(dir.path().join("junk.key"), "not a key").unwrap();
        let junk = TlsConfig {
            key_file: dir.path().join("junk.key"),
            ..a
        };
        let e = load_certified_key(&junk).unwrap_err();
        assert_eq!(e.field, KEY);
        assert!(e.message.contains("junk.key"), "{e}");
    }

    #[test]
    fn a_bad_reload_keeps_the_certificate_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let a = pair(dir.path(), "a");
        let store = CertStore::load(&a).unwrap();
        let before = store.current.load_full();
        std::fs::write(&a.key_file, "garbage").unwrap();
        let metrics = Metrics::new();
        assert!(store.reload(&metrics).is_err());
        assert!(Arc::ptr_eq(&before, &store.current.load_full()));

        let b = pair(dir.path(), "b");
        std::fs::copy(&b.cert_file, &a.cert_file).unwrap();
        std::fs::copy(&b.key_file, &a.key_file).unwrap();
        store.reload(&metrics).unwrap();
        assert_ne!(before.cert, store.current.load_full().cert);
    }
}
