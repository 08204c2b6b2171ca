//! How the gateway reaches one backend: which certificates it trusts for an
//! `https://` backend (the system's roots, or `tls.ca_file`), the client
//! certificate it shows (`tls.client_cert_file`), and whether it speaks
//! HTTP/2 (`http2`). Loaded once when the pools are built (a bad file is a
//! config error naming its field), then put on every Pingora peer of the
//! backend, requests and health probes alike.
//!
//! Pingora's rustls connector does the rest: SNI is the peer's `sni` (the
//! URL's host), verification is webpki against the peer's CA list or else
//! the roots its connector loaded at start (`rustls-native-certs`, which
//! honours `SSL_CERT_FILE` and `SSL_CERT_DIR`).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;
use std::sync::Arc;

use pingora::protocols::tls::CaType;
use pingora::protocols::ALPN;
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::{CertKey, WrappedX509};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::config::{BackendConfig, Http2Mode};

/// Streams one HTTP/2 connection may carry at once (Pingora's default is 1,
/// which would open a connection per concurrent request); the backend's own
/// SETTINGS lower it further.
const H2_STREAMS: usize = 100;

/// Connection settings of one backend, ready to put on its peers.
#[derive(Debug)]
pub struct Transport {
    tls: Option<PeerTls>,
    alpn: ALPN,
    /// Goes into Pingora's connection-pool key, which leaves out the CA list
    /// and the ALPN choice: two backends at one address must not share a
    /// connection that was verified against another CA or speaks another
    /// protocol.
    group_key: u64,
}

#[derive(Debug)]
struct PeerTls {
    /// `None`: the system's roots.
    ca: Option<Arc<CaType>>,
    client: Option<Arc<CertKey>>,
    verify: bool,
}

/// A backend's TLS file that cannot be used; `field` is relative to the
/// backend (`tls.ca_file`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct TransportError {
    pub field: &'static str,
    pub message: String,
}

const CA: &str = "tls.ca_file";
const CLIENT_CERT: &str = "tls.client_cert_file";
const CLIENT_KEY: &str = "tls.client_key_file";

impl Transport {
    /// Reads and checks the backend's TLS files (the same checks at start, in
    /// `check-config`, on reload and when the pools are built).
    pub fn load(b: &BackendConfig) -> Result<Self, TransportError> {
        let mut group = DefaultHasher::new();
        let tls = match (b.url.tls, &b.tls) {
            (false, _) => None,
            (true, None) => Some(PeerTls {
                ca: None,
                client: None,
                verify: true,
            }),
            (true, Some(cfg)) => {
                let ca = match &cfg.ca_file {
                    Some(path) => {
                        let ca = load_ca(path)?;
                        for c in ca.iter() {
                            c.borrow_raw_cert().hash(&mut group);
                        }
                        Some(ca)
                    }
                    None => None,
                };
                let client = match (&cfg.client_cert_file, &cfg.client_key_file) {
                    (Some(cert), Some(key)) => Some(load_client(cert, key)?),
                    // `Config::validate` refuses one without the other.
                    _ => None,
                };
                Some(PeerTls {
                    ca,
                    client,
                    verify: cfg.verify,
                })
            }
        };
        let alpn = match (b.http2, tls.is_some()) {
            (Http2Mode::Never, _) | (Http2Mode::Auto, false) => ALPN::H1,
            (Http2Mode::Auto, true) => ALPN::H2H1,
            // Over plain TCP Pingora then speaks h2c with prior knowledge.
            (Http2Mode::Always, _) => ALPN::H2,
        };
        alpn.hash(&mut group);
        Ok(Self {
            tls,
            alpn,
            group_key: group.finish(),
        })
    }

    /// Puts these settings on a peer of this backend (its address, scheme
    /// and SNI are already set).
    pub fn apply(&self, peer: &mut HttpPeer) {
        if let Some(tls) = &self.tls {
            peer.options.ca = tls.ca.clone();
            peer.client_cert_key = tls.client.clone();
            peer.options.verify_cert = tls.verify;
            peer.options.verify_hostname = tls.verify;
        }
        if self.alpn != ALPN::H1 {
            peer.options.max_h2_streams = H2_STREAMS;
        }
        peer.options.alpn = self.alpn.clone();
        peer.group_key = self.group_key;
    }

    /// Whether the backend's certificate is checked (always for plain http,
    /// which has none).
    pub fn verifies(&self) -> bool {
        self.tls.as_ref().is_none_or(|t| t.verify)
    }
}

/// Every certificate in the file: each must parse for rustls (it becomes a
/// root) and for x509-parser (Pingora's `WrappedX509` panics on what that
/// refuses).
fn load_ca(path: &Path) -> Result<Arc<CaType>, TransportError> {
    let err = |message: String| TransportError { field: CA, message };
    let pem = std::fs::read(path)
        .map_err(|e| err(format!("cannot read the CA file {}: {e}", path.display())))?;
    let ders = pem_certificates(&pem, path).map_err(err)?;
    let mut roots = rustls::RootCertStore::empty();
    let mut out = Vec::with_capacity(ders.len());
    for (n, der) in ders.into_iter().enumerate() {
        roots.add(der.clone()).map_err(|e| {
            err(format!(
                "certificate {} in {} cannot be a CA: {e}",
                n + 1,
                path.display()
            ))
        })?;
        out.push(wrap(der.to_vec()).ok_or_else(|| {
            err(format!(
                "certificate {} in {} does not parse as X.509",
                n + 1,
                path.display()
            ))
        })?);
    }
    Ok(out.into())
}

/// The client certificate chain and its key, checked to belong together.
fn load_client(cert: &Path, key: &Path) -> Result<Arc<CertKey>, TransportError> {
    let pair =
        crate::tls::load_pair(cert, key, CLIENT_CERT, CLIENT_KEY).map_err(|e| TransportError {
            field: e.field,
            message: e.message,
        })?;
    let chain: Vec<Vec<u8>> = pair.certified.cert.iter().map(|c| c.to_vec()).collect();
    if chain.iter().any(|c| wrap(c.clone()).is_none()) {
        return Err(TransportError {
            field: CLIENT_CERT,
            message: format!(
                "{} holds a certificate that does not parse as X.509",
                cert.display()
            ),
        });
    }
    let key_der = pair.key_der.secret_der().to_vec();
    // Pingora turns the key back into a `PrivateKeyDer` by its DER shape, and
    // panics when it cannot tell.
    if PrivateKeyDer::try_from(&key_der[..]).is_err() {
        return Err(TransportError {
            field: CLIENT_KEY,
            message: format!(
                "the private key in {} is not PKCS#8, PKCS#1 or SEC1",
                key.display()
            ),
        });
    }
    Ok(Arc::new(CertKey::new(chain, key_der)))
}

fn pem_certificates(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let ders = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not a PEM certificate file: {e}", path.display()))?;
    if ders.is_empty() {
        return Err(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(ders)
}

fn wrap(der: Vec<u8>) -> Option<WrappedX509> {
    WrappedX509::try_new(der, |raw| {
        X509Certificate::from_der(raw).map(|(_, cert)| cert)
    })
    .ok()
}

/// Why a TLS connection to a backend failed, in words an operator can act on
/// followed by rustls' own; `None` when `e` is not a TLS failure.
pub fn tls_reason(e: &pingora::Error) -> Option<String> {
    let detail = match e.etype() {
        pingora::ErrorType::TLSHandshakeFailure | pingora::ErrorType::InvalidCert => {
            match &e.context {
                Some(c) => c.as_str().to_string(),
                None => e.root_cause().to_string(),
            }
        }
        // TLS 1.3 ends the client's handshake before the server has judged the
        // client certificate; a refusal then arrives as an alert on the first read.
        _ => {
            let cause = e.root_cause().to_string();
            if !cause.contains("received fatal alert") {
                return None;
            }
            cause
        }
    };
    // Pingora's wording around rustls' error.
    let detail = detail
        .strip_prefix("TLS connect() failed: ")
        .unwrap_or(&detail);
    let detail = detail.split(", SNI: ").next().unwrap_or(detail).trim();
    let hint = if detail.contains("UnknownIssuer") {
        "its certificate is not signed by a CA the gateway trusts (a private CA goes in tls.ca_file)"
    } else if detail.contains("certificate expired") || detail.contains("Expired") {
        "its certificate has expired"
    } else if detail.contains("not valid yet") || detail.contains("NotValidYet") {
        "its certificate is not valid yet"
    } else if detail.contains("not valid for name") || detail.contains("NotValidForName") {
        "its certificate is not valid for the host name in its URL"
    } else if detail.contains("CertificateRequired") {
        "it requires a client certificate (tls.client_cert_file and tls.client_key_file)"
    } else if detail.contains("received fatal alert") {
        "it refused the handshake"
    } else {
        "the handshake failed"
    };
    Some(format!("{hint}: {detail}"))
}
