//! One backend as the proxy sees it, and the identity Pingora's load balancer
//! holds for it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use pingora::lb::health_check::HttpHealthCheck;
use pingora::lb::Backend;
use pingora::protocols::l4::socket::SocketAddr as InetOrUnix;
use pingora::upstreams::peer::HttpPeer;

use super::discovery::Addresses;
use super::transport::Transport;
use crate::config::{AdminServersConfig, BackendUrl};

/// How long an idle upstream connection stays in Pingora's pool.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// One upstream server as the proxy sees it.
pub struct BackendMeta {
    /// Unique across all pools; used to remember which backends a request tried.
    pub id: usize,
    pub pool: String,
    /// The configured URL, for logs and usage records (never holds the API key).
    pub display: String,
    pub url: BackendUrl,
    /// What the host name resolves to now (see `discovery`).
    pub(super) addresses: ArcSwap<Addresses>,
    /// Which of the addresses new connections go to; moves on when one fails.
    pub(super) addr_cursor: AtomicUsize,
    /// Admin-added servers: the policy every address they resolve to must pass.
    pub(super) admin_policy: Option<AdminServersConfig>,
    /// `Host` of its requests, made once: not copied and checked per request.
    pub host_header: http::HeaderValue,
    /// Its key header, static headers, query, path template and model names.
    pub shape: super::shape::Shape,
    pub priority: u32,
    /// What it speaks (`protocol:`), and whether it serves `/v1/responses`.
    pub protocol: crate::protocols::Protocol,
    pub responses_api: crate::protocols::ResponsesApi,
    /// TLS verification, client certificate and HTTP version.
    pub(super) transport: Transport,
    /// Why its last TLS handshake failed, until one succeeds (a probe or a
    /// request that got an answer).
    pub(super) tls_failure: ArcSwapOption<String>,
    /// The status (401/403) with which the provider last refused the
    /// backend's key; 0 once an answer was not an error.
    pub(super) key_refused: AtomicU16,
    /// Passive ejection: monotonic milliseconds until which the backend is skipped.
    pub(super) ejected_until_ms: AtomicU64,
    pub(super) health_check: HttpHealthCheck,
    /// What Pingora's load balancer holds for this backend (see `identity_of`).
    pub(super) identity: Backend,
}

impl BackendMeta {
    pub fn note_tls_failure(&self, reason: &str) {
        self.tls_failure.store(Some(Arc::new(reason.to_string())));
    }

    /// A load on the hot path; a store only when a failure was recorded.
    pub fn clear_tls_failure(&self) {
        if self.tls_failure.load().is_some() {
            self.tls_failure.store(None);
        }
    }

    pub fn tls_failure(&self) -> Option<Arc<String>> {
        self.tls_failure.load_full()
    }

    pub(super) fn is_ejected(&self, now_ms: u64) -> bool {
        self.ejected_until_ms.load(Ordering::Relaxed) > now_ms
    }

    /// The address new connections go to; `None` while the name does not
    /// resolve (or resolves only to refused addresses).
    pub fn current_addr(&self) -> Option<SocketAddr> {
        let a = self.addresses.load();
        let n = a.addrs.len();
        (n > 0).then(|| a.addrs[self.addr_cursor.load(Ordering::Relaxed) % n])
    }

    /// The provider refused this backend's key (revoked, expired, no access).
    pub fn set_key_refused(&self, status: u16) {
        if self.key_refused.swap(status, Ordering::Relaxed) == 0 {
            tracing::error!(backend = %self.display, pool = %self.pool, status, "the provider refuses this backend's key; out of rotation until it answers again");
        }
    }

    /// An answer that is not an error: the key works (again).
    pub fn key_accepted(&self) {
        if self.key_refused.load(Ordering::Relaxed) != 0 {
            self.key_refused.store(0, Ordering::Relaxed);
            tracing::info!(backend = %self.display, pool = %self.pool, "the provider accepts this backend's key again");
        }
    }

    /// The status with which the provider last refused the key, if it did.
    pub fn key_refused(&self) -> Option<u16> {
        match self.key_refused.load(Ordering::Relaxed) {
            0 => None,
            status => Some(status),
        }
    }

    /// Every address and the state of the name, for the admin API.
    pub fn addresses(&self) -> Arc<Addresses> {
        self.addresses.load_full()
    }

    /// A connection to `addr` failed: the next one tries the backend's next
    /// address (a name with a dead IPv6 address, or one CDN node down).
    pub fn address_failed(&self, addr: SocketAddr) {
        if self.current_addr() == Some(addr) {
            self.addr_cursor.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn peer(
        &self,
        addr: SocketAddr,
        connect_timeout: Duration,
        read_timeout: Duration,
    ) -> HttpPeer {
        let sni = if self.url.tls {
            self.url.host.clone()
        } else {
            String::new()
        };
        let mut peer = HttpPeer::new(addr, self.url.tls, sni);
        peer.options.connection_timeout = Some(connect_timeout);
        peer.options.total_connection_timeout = Some(connect_timeout * 2);
        peer.options.read_timeout = Some(read_timeout);
        peer.options.idle_timeout = Some(POOL_IDLE_TIMEOUT);
        // Header and body in one send (vendor/README.md): a send less per
        // request for the upstream to wake up for.
        peer.options.send_request_header_with_body = true;
        self.transport.apply(&mut peer);
        peer
    }
}

/// Pingora identifies a `Backend` by address and weight only (its `ext` is
/// ignored by equality, ordering and health state), so two backends whose names
/// resolve to one IP:port (providers behind one CDN, or one server under two
/// keys) would merge into one, and the second's Host header and key would never
/// be used. The load balancer therefore holds an address that stands for the
/// backend's id: one in 100::/64, the IPv6 discard-only prefix (RFC 6666), which
/// is never dialled; connections use `BackendMeta::addr`. Decoding the id from
/// the address also keeps selection free of the allocation that cloning a
/// non-empty `ext` costs on every pick.
pub(super) fn identity_of(id: usize, weight: usize) -> Backend {
    let id = id as u64;
    let ip = std::net::Ipv6Addr::new(
        0x100,
        0,
        0,
        0,
        (id >> 48) as u16,
        (id >> 32) as u16,
        (id >> 16) as u16,
        id as u16,
    );
    Backend {
        addr: InetOrUnix::Inet(SocketAddr::new(ip.into(), 0)),
        weight,
        ext: Default::default(),
    }
}

pub(super) fn id_of(b: &Backend) -> Option<usize> {
    let SocketAddr::V6(v6) = b.addr.as_inet()? else {
        return None;
    };
    let s = v6.ip().segments();
    (s[0] == 0x100).then(|| {
        (u64::from(s[4]) << 48 | u64::from(s[5]) << 32 | u64::from(s[6]) << 16 | u64::from(s[7]))
            as usize
    })
}

#[cfg(test)]
mod tests {
    use std::io::{ErrorKind, Read};
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    use pingora::connectors::http::v1::Connector;
    use pingora::http::RequestHeader;
    use pingora::protocols::http::v1::client::HttpSession;

    use crate::config::Config;
    use crate::upstream::Upstreams;

    /// A session to a loopback listener, made the way the proxy makes it: the
    /// peer from `BackendMeta::peer`, the session from Pingora's connector.
    async fn session_to(listener: &TcpListener) -> (HttpSession, TcpStream) {
        let addr = listener.local_addr().unwrap();
        let yaml = format!(
            "health_check:\n  enabled: false\npools:\n  - name: p\n    models: [m]\n    backends:\n      - url: http://{addr}\n"
        );
        let (_, live) = Config::from_yaml(&yaml, "t.yaml").unwrap().split();
        let upstreams = Upstreams::build(&live, &[]).await.unwrap();
        let (backend, _) = upstreams.pool_for("m").unwrap().select(&[]).unwrap();
        let peer = backend.peer(addr, Duration::from_secs(2), Duration::from_secs(2));
        let (session, _) = Connector::new(None).get_http_session(&peer).await.unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        (session, server)
    }

    fn post(body_len: usize, extra: Option<(&'static str, &'static str)>) -> Box<RequestHeader> {
        let mut req = RequestHeader::build("POST", b"/v1/chat/completions", None).unwrap();
        req.insert_header("host", "upstream").unwrap();
        req.insert_header("content-length", body_len.to_string())
            .unwrap();
        if let Some((name, value)) = extra {
            req.insert_header(name, value).unwrap();
        }
        Box::new(req)
    }

    /// What one `recv` on the upstream's side gets now, without waiting
    /// (loopback delivers a send before the send returns).
    fn one_read(server: &mut TcpStream) -> Vec<u8> {
        let mut buf = vec![0; 64 << 10];
        match server.read(&mut buf) {
            Ok(n) => buf[..n].to_vec(),
            Err(e) if e.kind() == ErrorKind::WouldBlock => Vec::new(),
            Err(e) => panic!("{e}"),
        }
    }

    #[tokio::test]
    async fn a_request_header_leaves_with_its_body_in_one_send() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let (mut session, mut server) = session_to(&listener).await;
        let body = br#"{"model":"m","messages":[]}"#;
        session
            .write_request_header(post(body.len(), None))
            .await
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&one_read(&mut server)),
            "",
            "the header went out alone, before its body"
        );
        session.write_body(body).await.unwrap();
        session.finish_body().await.unwrap();
        let got = one_read(&mut server);
        assert!(
            got.starts_with(b"POST /v1/chat/completions HTTP/1.1\r\n") && got.ends_with(body),
            "one recv got {:?}",
            String::from_utf8_lossy(&got)
        );
    }

    /// Without a body, and where the server may answer the header alone
    /// (`Expect: 100-continue`, an upgrade), the header goes at once.
    #[tokio::test]
    async fn a_header_the_server_may_answer_alone_goes_at_once() {
        for req in [
            post(0, None),
            post(10, Some(("expect", "100-continue"))),
            post(10, Some(("upgrade", "websocket"))),
        ] {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let (mut session, mut server) = session_to(&listener).await;
            session.write_request_header(req).await.unwrap();
            let got = one_read(&mut server);
            assert!(
                got.ends_with(b"\r\n\r\n"),
                "got {:?}",
                String::from_utf8_lossy(&got)
            );
        }
    }

    /// A body far larger than the socket's buffers: the vectored write is cut
    /// short, and the rest of the body follows in order.
    #[tokio::test]
    async fn a_large_body_arrives_whole_after_its_header() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let (mut session, server) = session_to(&listener).await;
        let body: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
        let expected_body = body.clone();
        let reader = std::thread::spawn(move || {
            let mut server = server;
            server.set_nonblocking(false).unwrap();
            let mut all = Vec::new();
            let mut buf = vec![0; 64 << 10];
            while all.len() < expected_body.len() + 64
                || !all.ends_with(&expected_body[expected_body.len() - 16..])
            {
                let n = server.read(&mut buf).unwrap();
                assert!(n > 0, "closed after {} bytes", all.len());
                all.extend_from_slice(&buf[..n]);
            }
            all
        });
        session
            .write_request_header(post(body.len(), None))
            .await
            .unwrap();
        session.write_body(&body).await.unwrap();
        session.finish_body().await.unwrap();
        let all = reader.join().unwrap();
        let head_end = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert!(all.starts_with(b"POST /v1/chat/completions HTTP/1.1\r\n"));
        assert_eq!(all.len() - head_end, body.len());
        assert!(all[head_end..] == body[..], "the body arrived changed");
    }
}
