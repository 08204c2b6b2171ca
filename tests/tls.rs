//! HTTPS on the gateway's own listeners (`server.tls`): a CA made at test time
//! signs a certificate for 127.0.0.1 and localhost; clients trust that CA only.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::python::run_pytest;
use common::{eventually, fake, gateway, host_port, Backend, Gateway, SseReader};
use fake_upstream::{FakeUpstream, CHUNK_DELAY_HEADER};
use reqwest::Version;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A test CA that signs server certificates.
struct Ca {
    pem: String,
    path: PathBuf,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

/// A server certificate and key as files, and the certificate's DER.
struct ServerCert {
    cert: PathBuf,
    key: PathBuf,
    der: Vec<u8>,
}

impl Ca {
    fn new(dir: &Path) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "BluesMinds test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let path = dir.join("ca.pem");
        std::fs::write(&path, cert.pem()).unwrap();
        Ca {
            pem: cert.pem(),
            path,
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A certificate for 127.0.0.1 and localhost, written as `name.crt` and
    /// `name.key` in `dir` (replacing what is there).
    fn server_cert(&self, dir: &Path, name: &str, serial: u64) -> ServerCert {
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .unwrap();
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("gateway {name} {serial}"),
        );
        params.serial_number = Some(rcgen::SerialNumber::from(serial));
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let files = ServerCert {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
            der: cert.der().to_vec(),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }

    /// A reqwest client that trusts this CA only; HTTP/2 when ALPN picks it.
    fn client(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(self.pem.as_bytes()).unwrap())
            .timeout(Duration::from_secs(60))
    }

    /// The certificate a new TLS connection to `addr` is shown (verified
    /// against this CA, for 127.0.0.1).
    async fn peer_certificate(&self, addr: &str) -> Vec<u8> {
        let tls = self.connect(addr, &[]).await;
        tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    }

    /// A TLS connection to `addr` offering `alpn`.
    async fn connect(
        &self,
        addr: &str,
        alpn: &[&[u8]],
    ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.pem.as_bytes()).unwrap())
            .unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut config = config;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        connector.connect(name, tcp).await.unwrap()
    }
}

/// The text of a whole chat stream; panics unless it ended with `[DONE]`.
fn streamed_text(events: &[String]) -> String {
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    events[..events.len() - 1]
        .iter()
        .map(|e| {
            let v: serde_json::Value = serde_json::from_str(e).unwrap();
            v["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

/// A gateway with `server.tls` from `cert` (files in the gateway's own dir
/// would vanish with it, so the test keeps them).
async fn start(up: &FakeUpstream, cert: &ServerCert) -> Gateway {
    gateway()
        .backend(Backend::new(up.url()))
        .tls(&cert.cert, &cert.key)
        .start()
        .await
}

/// (a) The official SDK, streaming and not, over HTTPS; it checks the
/// certificate against the CA it was given.
#[tokio::test]
async fn the_openai_python_sdk_talks_to_the_gateway_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path());
    let cert = ca.server_cert(dir.path(), "server", 1);
    let up = fake().await;
    let gw = start(&up, &cert).await;
    assert!(gw.proxy.starts_with("https://"));
    let key = gw.create_key("sdk", &[]);
    let (ok, out) = run_pytest(
        "test_tls.py",
        &[
            ("BM_BASE_URL", &gw.url("/v1")),
            ("BM_API_KEY", &key),
            ("BM_CA_FILE", ca.path.to_str().unwrap()),
        ],
    )
    .await;
    assert!(
        ok,
        "the SDK tests failed:\n{out}\ngateway log:\n{}",
        gw.log()
    );
    assert!(out.contains("4 passed"), "{out}");
    // The upstream is told the client came over HTTPS.
    let seen = up.requests();
    assert!(
        !seen.is_empty()
            && seen
                .iter()
                .all(|r| r.header("x-forwarded-proto") == Some("https")),
        "{seen:?}"
    );
}

/// (b) ALPN picks HTTP/2 on both listeners for a client that offers it (no
/// prior knowledge), and HTTP/1.1 still works for one that does not.
#[tokio::test]
async fn both_listeners_speak_http2_by_alpn_and_http1() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path());
    let cert = ca.server_cert(dir.path(), "server", 1);
    let up = fake().await;
    let gw = start(&up, &cert).await;
    let key = gw.create_key("h2", &[]);

    let h2 = ca.client().build().unwrap();
    let h1 = ca.client().http1_only().build().unwrap();
    for (client, version) in [(&h2, Version::HTTP_2), (&h1, Version::HTTP_11)] {
        let r = client
            .get(format!("{}/healthz", gw.side))
            .send()
            .await
            .unwrap();
        assert_eq!((r.status().as_u16(), r.version()), (200, version));
        assert_eq!(r.text().await.unwrap(), "ok");

        let r = client
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&common::chat_body("gpt-4o-mini", false))
            .send()
            .await
            .unwrap();
        assert_eq!((r.status().as_u16(), r.version()), (200, version));
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(
            body["choices"][0]["message"]["content"],
            "Hello from the fake upstream"
        );

        let r = client
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&common::chat_body("gpt-4o-mini", true))
            .send()
            .await
            .unwrap();
        assert_eq!((r.status().as_u16(), r.version()), (200, version));
        let events = SseReader::new(r).collect().await;
        assert_eq!(streamed_text(&events), "Hello from the fake upstream");
    }
    // Every one of them was recorded.
    let rows = gw.wait_usage_rows(4).await;
    assert!(rows.iter().all(|r| r.status == 200), "{rows:?}");
}

/// (c) A replaced certificate serves new connections after SIGHUP, and after
/// a file change alone; a stream opened before ends normally; a broken new
/// pair keeps the certificate in force.
#[tokio::test]
async fn a_replaced_certificate_serves_new_connections_while_open_streams_finish() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path());
    let first = ca.server_cert(dir.path(), "server", 1);
    let up = fake().await;
    let gw = start(&up, &first).await;
    let key = gw.create_key("reload", &[]);
    let (proxy, side) = (host_port(&gw.proxy), host_port(&gw.side));
    assert_eq!(ca.peer_certificate(proxy).await, first.der);
    assert_eq!(ca.peer_certificate(side).await, first.der);

    // A slow stream (HTTP/2) open across the reload.
    let client = ca.client().build().unwrap();
    let resp = client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .header(CHUNK_DELAY_HEADER, "400")
        .json(&common::chat_body("gpt-4o-mini", true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), Version::HTTP_2);
    let mut stream = SseReader::new(resp);
    let mut events = vec![stream.next().await.expect("a first event")];

    // Same file names, new contents: a different key, serial and CN.
    let second = ca.server_cert(dir.path(), "server", 2);
    assert_ne!(second.der, first.der);
    gw.signal("HUP");
    for addr in [proxy, side] {
        eventually("new connections get the new certificate", || async {
            ca.peer_certificate(addr).await == second.der
        })
        .await;
    }
    assert!(gw.log().contains("SIGHUP"), "{}", gw.log());
    events.extend(stream.collect().await);
    assert_eq!(
        streamed_text(&events),
        "Hello from the fake upstream",
        "the stream opened before the reload was cut"
    );

    // A broken key: the error is logged, the second certificate stays.
    std::fs::write(&second.key, "-----BEGIN PRIVATE KEY-----\nbroken\n").unwrap();
    gw.signal("HUP");
    eventually("the rejected reload is logged", || async {
        gw.log().contains("TLS certificate reload rejected")
    })
    .await;
    assert_eq!(ca.peer_certificate(proxy).await, second.der);
    let r = client.get(format!("{}/healthz", gw.side)).send().await;
    assert_eq!(r.unwrap().status(), 200);

    // No signal: the changed files are noticed by themselves.
    let third = ca.server_cert(dir.path(), "server", 3);
    for addr in [proxy, side] {
        eventually("a changed file is picked up without a signal", || async {
            ca.peer_certificate(addr).await == third.der
        })
        .await;
    }
    let metrics = client
        .get(format!("{}/metrics", gw.side))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        common::sample(
            &metrics,
            "bluesminds_tls_reloads_total",
            &[("result", "rejected")]
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{metrics}"
    );
}

/// (d) Over HTTPS the side app sends HSTS, and its session cookie is
/// `Secure` without `admin.secure_cookies` being set.
#[tokio::test]
async fn the_side_app_sends_hsts_and_secure_session_cookies() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path());
    let cert = ca.server_cert(dir.path(), "server", 1);
    let up = fake().await;
    let gw = start(&up, &cert).await;
    let client = ca.client().build().unwrap();
    for path in ["/healthz", "/login", "/no-such-page"] {
        let r = client
            .get(format!("{}{path}", gw.side))
            .send()
            .await
            .unwrap();
        assert_eq!(
            common::header(&r, "strict-transport-security").as_deref(),
            Some("max-age=31536000"),
            "{path}"
        );
    }
    let r = client
        .post(format!("{}/api/auth/signup", gw.side))
        .json(&serde_json::json!({"email": "a@example.com", "password": "a long enough password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let cookie = common::header(&r, "set-cookie").unwrap_or_default();
    assert!(
        cookie.starts_with("__Host-bm_session=") && cookie.contains("; Secure"),
        "{cookie}"
    );

    // And without TLS, neither (the default stays as it was).
    let plain = gateway().backend(Backend::new(up.url())).start().await;
    let r = reqwest::get(format!("{}/healthz", plain.side))
        .await
        .unwrap();
    assert!(r.headers().get("strict-transport-security").is_none());
    let r = common::post_signup(&reqwest::Client::new(), &plain, "b@example.com").await;
    let cookie = common::header(&r, "set-cookie").unwrap_or_default();
    assert!(
        cookie.starts_with("bm_session=") && !cookie.contains("Secure"),
        "{cookie}"
    );
}

/// (e) Plain HTTP to either TLS port gets no answer and a closed
/// connection; the gateway keeps serving HTTPS.
#[tokio::test]
async fn plain_http_to_a_tls_port_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path());
    let cert = ca.server_cert(dir.path(), "server", 1);
    let up = fake().await;
    let mut gw = start(&up, &cert).await;
    for base in [gw.proxy.clone(), gw.side.clone()] {
        let addr = host_port(&base);
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        // Ends (EOF or reset) well within the bound; at most a TLS alert comes back.
        let ended = tokio::time::timeout(Duration::from_secs(30), conn.read_to_end(&mut got)).await;
        assert!(ended.is_ok(), "{addr}: the connection stayed open");
        assert!(!got.starts_with(b"HTTP/"), "{addr}: {got:?}");

        let plain = reqwest::get(format!("http://{addr}/healthz")).await;
        assert!(plain.is_err(), "{addr}: {plain:?}");
    }
    let client = ca.client().build().unwrap();
    let r = client
        .get(format!("{}/healthz", gw.side))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client.get(gw.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(gw.child.as_mut().unwrap().try_wait().unwrap().is_none());
}

/// `check-config` and start-up refuse a key that is not the certificate's,
/// naming the field and the file; a good pair is reported.
#[tokio::test]
async fn a_certificate_and_key_that_do_not_match_are_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path());
    let a = ca.server_cert(dir.path(), "a", 1);
    let b = ca.server_cert(dir.path(), "b", 2);
    let write = |cert: &Path, key: &Path| {
        let path = dir.path().join("gateway.yaml");
        std::fs::write(
            &path,
            format!(
                "server:\n  tls:\n    cert_file: {}\n    key_file: {}\ndatabase:\n  url: sqlite://{}\npools:\n  - name: main\n    models: [\"*\"]\n    backends:\n      - url: http://127.0.0.1:9\n",
                cert.display(),
                key.display(),
                dir.path().join("gw.db").display()
            ),
        )
        .unwrap();
        path
    };
    let run = |config: &Path, cmd: &str| {
        std::process::Command::new(common::bin())
            .arg("--config")
            .arg(config)
            .arg(cmd)
            .output()
            .unwrap()
    };
    let good = write(&a.cert, &a.key);
    let out = run(&good, "check-config");
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("TLS"),
        "{out:?}"
    );

    let bad = write(&a.cert, &b.key);
    for cmd in ["check-config", "serve"] {
        let out = run(&bad, cmd);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{cmd}: {out:?}");
        assert!(
            err.contains("server.tls.key_file")
                && err.contains(&b.key.display().to_string())
                && err.contains("line 4"),
            "{cmd}: {err}"
        );
    }
}

/// Reads until the server closes the connection; whether it did within 30 s.
async fn closed_by_the_server<S: tokio::io::AsyncRead + Unpin>(conn: &mut S) -> bool {
    let mut sink = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), conn.read_to_end(&mut sink))
        .await
        .is_ok()
}

/// The side app's header timeout also bounds the TLS handshake, and an
/// HTTP/2 connection with no request in progress: neither a client that
/// never says hello nor one that opens HTTP/2 and sends nothing holds a
/// connection slot for ever.
#[tokio::test]
async fn silent_clients_are_cut_off_during_and_after_the_tls_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path());
    let cert = ca.server_cert(dir.path(), "server", 1);
    let up = fake().await;
    let gw = gateway()
        .backend(Backend::new(up.url()))
        .tls(&cert.cert, &cert.key)
        .server("side_header_timeout_secs: 1")
        .start()
        .await;
    let side = host_port(&gw.side);
    let mut silent = tokio::net::TcpStream::connect(side).await.unwrap();
    assert!(
        closed_by_the_server(&mut silent).await,
        "a connection without a TLS handshake stayed open"
    );

    // An HTTP/2 client that answers the server's pings, as browsers do, and
    // sends one request, then nothing.
    let tls = ca.connect(side, &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (send, connection) = h2::client::handshake(tls).await.unwrap();
    let connection = tokio::spawn(connection);
    let mut send = send.ready().await.unwrap();
    let request = http::Request::get(format!("{}/healthz", gw.side))
        .body(())
        .unwrap();
    let (answer, _) = send.send_request(request, true).unwrap();
    assert_eq!(answer.await.unwrap().status(), 200);
    let ended = tokio::time::timeout(Duration::from_secs(30), connection).await;
    assert!(ended.is_ok(), "an idle HTTP/2 connection stayed open");
    let r = ca
        .client()
        .build()
        .unwrap()
        .get(format!("{}/healthz", gw.side))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
