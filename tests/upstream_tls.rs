//! HTTPS to upstreams: verification against the system's roots or a
//! backend's own CA (`tls.ca_file`), mutual TLS (`tls.client_cert_file`),
//! HTTP/2 by ALPN (`http2`), connection reuse, and the 502
//! `upstream_tls_error` a bad certificate earns. The real binary against an
//! in-process HTTPS fake upstream whose certificates are made here (rcgen).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{chat_body, error_of, gateway, ApiError, Backend, Gateway, Poll, SseReader};
use fake_upstream::{FakeConfig, FakeTls, FakeUpstream};

/// A certificate authority made for one test, its certificate in `ca.pem`.
struct Ca {
    path: PathBuf,
    pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

/// Validity of a certificate a `Ca` issues.
#[derive(Clone, Copy, PartialEq)]
enum Validity {
    Current,
    Expired,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let path = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&path, cert.pem()).unwrap();
        Ca {
            path,
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A certificate and key (PEM) for `names`, for a server or a client.
    fn issue(
        &self,
        names: &[&str],
        purpose: rcgen::ExtendedKeyUsagePurpose,
        validity: Validity,
    ) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names.clone()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0].clone());
        params.extended_key_usages = vec![purpose];
        if validity == Validity::Expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// What an HTTPS fake upstream needs to serve as `names`.
    fn server(&self, names: &[&str], validity: Validity) -> FakeTls {
        let (cert_chain_pem, key_pem) =
            self.issue(names, rcgen::ExtendedKeyUsagePurpose::ServerAuth, validity);
        FakeTls {
            cert_chain_pem,
            key_pem,
            client_ca_pem: None,
            http2: true,
        }
    }

    /// A client certificate and its key, as files in `dir`.
    fn client_files(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = self.issue(
            &[name],
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            Validity::Current,
        );
        let files = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&files.0, cert).unwrap();
        std::fs::write(&files.1, key).unwrap();
        files
    }
}

/// The names the fake upstream's certificate is usually for.
const LOOPBACK: &[&str] = &["127.0.0.1", "localhost"];

async fn https_fake(tls: FakeTls) -> FakeUpstream {
    FakeUpstream::start_tls(FakeConfig::default(), tls)
        .await
        .unwrap()
}

fn ca_file(ca: &Ca) -> String {
    format!("tls: {{ ca_file: \"{}\" }}", ca.path.display())
}

/// Sends one chat request and returns the error it must end with.
async fn chat_error(gw: &Gateway) -> ApiError {
    let key = gw.create_key("test", &[]);
    error_of(gw.chat(&key, &chat_body("gpt-4o-mini", false)).await).await
}

#[tokio::test]
async fn a_private_ca_verifies_the_upstream_and_http2_is_used_when_offered() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "private");
    let up = https_fake(ca.server(LOOPBACK, Validity::Current)).await;
    let gw = gateway()
        .backend_with(Backend::new(up.url()), &[&ca_file(&ca)])
        .start()
        .await;
    let key = gw.create_key("test", &[]);

    let resp = gw.chat(&key, &chat_body("gpt-4o-mini", false)).await;
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Hello from the fake upstream"
    );
    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].version, "HTTP/2.0", "h2 was offered by ALPN");
    assert_eq!(seen[0].path, "/v1/chat/completions");
    let rows = gw.wait_usage_rows(1).await;
    assert_eq!(rows[0].backend.as_deref(), Some(up.url().as_str()));
    assert_eq!((rows[0].prompt_tokens, rows[0].completion_tokens), (8, 5));
}

#[tokio::test]
async fn the_system_roots_are_trusted_by_default() {
    // rustls-native-certs reads the system's roots from SSL_CERT_FILE when
    // it is set: here a bundle that holds only the test CA.
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "system");
    let up = https_fake(ca.server(LOOPBACK, Validity::Current)).await;
    let gw = gateway()
        .backend(Backend::new(up.url()))
        .env("SSL_CERT_FILE", ca.path.to_str().unwrap())
        .start()
        .await;
    let key = gw.create_key("test", &[]);
    let resp = gw.chat(&key, &chat_body("gpt-4o-mini", false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(up.request_count(), 1);
}

/// A gateway with one HTTPS backend whose certificate is `tls`, trusting `ca`
/// (`None`: the system's roots, which do not hold any test CA), and the
/// error a chat request through it gets.
async fn refused(tls: FakeTls, ca: Option<&Ca>) -> (FakeUpstream, ApiError, Gateway) {
    let up = https_fake(tls).await;
    let lines = ca.map(ca_file);
    let gw = gateway()
        .backend_with(
            Backend {
                api_key_env: Some("UPSTREAM_KEY"),
                ..Backend::new(up.url())
            },
            &lines.iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .env("UPSTREAM_KEY", "sk-upstream-secret-tls")
        .start()
        .await;
    let e = chat_error(&gw).await;
    (up, e, gw)
}

fn assert_tls_error(e: &ApiError, up: &FakeUpstream, reason: &str) {
    assert_eq!(e.status_and_code(), (502, "upstream_tls_error"), "{e:?}");
    assert_eq!(e.kind(), "server_error");
    let m = e.message();
    assert!(
        m.contains(&format!("`{}`", up.url())),
        "names the backend: {m}"
    );
    assert!(m.contains(reason), "gives the reason ({reason}): {m}");
    assert!(!m.contains("sk-upstream-secret-tls"), "never the key: {m}");
}

#[tokio::test]
async fn a_bad_upstream_certificate_is_a_502_upstream_tls_error_naming_backend_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "trusted");
    let stranger = Ca::new(dir.path(), "stranger");

    let ((untrusted, e1, gw1), (wrong_name, e2, _gw2), (expired, e3, _gw3)) = tokio::join!(
        // Signed by a CA the gateway was not told about.
        refused(stranger.server(LOOPBACK, Validity::Current), None),
        // The right CA, but for another host.
        refused(ca.server(&["llm.internal"], Validity::Current), Some(&ca)),
        refused(ca.server(LOOPBACK, Validity::Expired), Some(&ca)),
    );
    assert_tls_error(&e1, &untrusted, "not signed by a CA the gateway trusts");
    assert!(e1.message().contains("tls.ca_file"), "{}", e1.message());
    assert_tls_error(&e2, &wrong_name, "not valid for the host name");
    assert_tls_error(&e3, &expired, "has expired");
    // No request got through the handshake.
    for up in [&untrusted, &wrong_name, &expired] {
        assert_eq!(up.request_count(), 0);
    }
    let rows = gw1.wait_usage_rows(1).await;
    assert_eq!(
        (rows[0].status, rows[0].error_code.as_deref()),
        (502, Some("upstream_tls_error"))
    );
}

#[tokio::test]
async fn failover_goes_past_a_tls_failure_and_the_last_answer_keeps_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "trusted");
    let stranger = Ca::new(dir.path(), "stranger");
    let bad = https_fake(stranger.server(LOOPBACK, Validity::Current)).await;
    let good = https_fake(ca.server(LOOPBACK, Validity::Current)).await;
    let token = "admin-token-for-tls-failover-tests";
    let gw = gateway()
        .backend_with(Backend::new(bad.url()), &[&ca_file(&ca)])
        .backend_with(Backend::new(good.url()), &[&ca_file(&ca)])
        .env("BM_ADMIN_TOKEN", token)
        .yaml("admin:\n  token_env: BM_ADMIN_TOKEN\n")
        .start()
        .await;
    let key = gw.create_key("test", &[]);
    for _ in 0..4 {
        let resp = gw.chat(&key, &chat_body("gpt-4o-mini", false)).await;
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(good.request_count(), 4);

    // The good one gone, and out of rotation (else a request may race its
    // closing listener and end on a reset that is not worth a retry): the
    // answer says what is wrong with the other.
    good.shutdown().await;
    let health_url = format!("{}/api/admin/health", gw.side);
    Poll::within(Duration::from_secs(30))
        .every(Duration::from_millis(200))
        .until("the stopped backend to be out of rotation", || async {
            let health = common::get_json(&health_url, token).await;
            health["data"][0]["backends"]
                .as_array()
                .unwrap()
                .iter()
                .any(|b| b["url"] == good.url() && b["healthy"] == false)
        })
        .await;
    let e = error_of(gw.chat(&key, &chat_body("gpt-4o-mini", false)).await).await;
    assert_tls_error(&e, &bad, "not signed by a CA the gateway trusts");
}

#[tokio::test]
async fn mutual_tls_works_with_the_client_certificate_and_fails_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "server");
    let clients = Ca::new(dir.path(), "clients");
    let (cert, key_file) = clients.client_files(dir.path(), "gateway");
    let strict = || FakeTls {
        client_ca_pem: Some(clients.pem.clone()),
        ..ca.server(LOOPBACK, Validity::Current)
    };
    let with_cert = https_fake(strict()).await;
    let gw = gateway()
        .backend_with(
            Backend::new(with_cert.url()),
            &[
                "tls:",
                &format!("  ca_file: \"{}\"", ca.path.display()),
                &format!("  client_cert_file: \"{}\"", cert.display()),
                &format!("  client_key_file: \"{}\"", key_file.display()),
            ],
        )
        .start()
        .await;
    let key = gw.create_key("test", &[]);
    let resp = gw.chat(&key, &chat_body("gpt-4o-mini", false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(with_cert.request_count(), 1);

    let without = https_fake(strict()).await;
    let gw = gateway()
        .backend_with(Backend::new(without.url()), &[&ca_file(&ca)])
        .start()
        .await;
    // TLS 1.3 finishes the client's side of the handshake before the server
    // judges the client certificate; its refusal (an alert, then the close)
    // races with the request being written, so the gateway sees either the
    // alert or only a closed connection.
    let e = chat_error(&gw).await;
    if e.code() == "upstream_tls_error" {
        assert_tls_error(&e, &without, "requires a client certificate");
    } else {
        assert_eq!(e.status_and_code(), (502, "upstream_error"), "{e:?}");
    }
    assert_eq!(without.request_count(), 0);
}

#[tokio::test]
async fn http2_never_and_a_backend_without_h2_stay_on_http1() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "private");
    let offers_h2 = https_fake(ca.server(LOOPBACK, Validity::Current)).await;
    let h1_only = https_fake(FakeTls {
        http2: false,
        ..ca.server(LOOPBACK, Validity::Current)
    })
    .await;
    let gw = gateway()
        .backend_with(
            Backend::new(offers_h2.url()),
            &[&ca_file(&ca), "http2: never"],
        )
        .backend_with(Backend::new(h1_only.url()), &[&ca_file(&ca)])
        .start()
        .await;
    let key = gw.create_key("test", &[]);
    for _ in 0..4 {
        let resp = gw.chat(&key, &chat_body("gpt-4o-mini", false)).await;
        assert_eq!(resp.status(), 200);
    }
    for up in [&offers_h2, &h1_only] {
        let seen = up.requests();
        assert!(!seen.is_empty(), "round robin reaches both");
        assert!(seen.iter().all(|r| r.version == "HTTP/1.1"), "{seen:?}");
    }
}

#[tokio::test]
async fn a_hundred_sequential_requests_reuse_their_upstream_connections() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "private");
    let h2 = https_fake(ca.server(LOOPBACK, Validity::Current)).await;
    let h1 = https_fake(ca.server(LOOPBACK, Validity::Current)).await;
    let gw = gateway()
        .backend_with(Backend::new(h2.url()), &[&ca_file(&ca)])
        .backend_with(Backend::new(h1.url()), &[&ca_file(&ca), "http2: never"])
        .start()
        .await;
    let key = gw.create_key("test", &[]);
    let client = common::client();
    for i in 0..100 {
        let resp = client
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&chat_body("gpt-4o-mini", i % 2 == 0))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
    }
    for (up, version) in [(&h2, "HTTP/2.0"), (&h1, "HTTP/1.1")] {
        let seen = up.requests();
        assert!(seen.len() >= 40, "round robin: {}", seen.len());
        assert!(seen.iter().all(|r| r.version == version));
        let mut connections: Vec<usize> = seen.iter().map(|r| r.connection).collect();
        connections.sort();
        connections.dedup();
        // One client, one request at a time: one connection, two at most
        // should the gateway's two worker threads each keep one.
        assert!(
            connections.len() <= 2,
            "{} requests came on {} connections ({version})",
            seen.len(),
            connections.len()
        );
    }
}

#[tokio::test]
async fn streaming_through_an_https_h2_upstream_counts_usage() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "private");
    let up = https_fake(ca.server(LOOPBACK, Validity::Current)).await;
    let gw = gateway()
        .backend_with(Backend::new(up.url()), &[&ca_file(&ca)])
        .start()
        .await;
    let key = gw.create_key("test", &[]);
    let resp = gw.chat(&key, &chat_body("gpt-4o-mini", true)).await;
    assert_eq!(resp.status(), 200);
    let events = SseReader::new(resp).collect().await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let text: String = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<serde_json::Value>(e).unwrap())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(String::from)
        })
        .collect();
    assert_eq!(text, "Hello from the fake upstream");
    assert_eq!(up.requests()[0].version, "HTTP/2.0");
    let rows = gw.wait_usage_rows(1).await;
    let r = &rows[0];
    assert!(r.stream);
    assert_eq!((r.prompt_tokens, r.completion_tokens), (8, 5));
    assert_eq!(r.usage_source, "upstream");
}

#[tokio::test]
async fn verify_false_accepts_any_certificate_and_says_so_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let stranger = Ca::new(dir.path(), "stranger");
    let up = https_fake(stranger.server(&["llm.internal"], Validity::Expired)).await;
    let gw = gateway()
        .backend_with(Backend::new(up.url()), &["tls: { verify: false }"])
        .start()
        .await;
    let key = gw.create_key("test", &[]);
    let resp = gw.chat(&key, &chat_body("gpt-4o-mini", false)).await;
    assert_eq!(resp.status(), 200);
    let warning = "tls.verify is false";
    assert!(gw.log().contains(warning), "{}", gw.log());

    let out = gw.command().arg("check-config").output().unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("warning: pools[0].backends[0].{warning}"))
            && stderr.contains(&up.url()),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_bad_tls_file_stops_the_start_naming_its_field() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway()
        .backend(Backend::new("http://127.0.0.1:9".into()))
        .start()
        .await;
    let yaml = std::fs::read_to_string(&gw.config_path).unwrap();
    let missing = dir.path().join("missing-ca.pem");
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    for (file, says) in [(&missing, "cannot read"), (&not_pem, "no PEM certificate")] {
        let broken = yaml.replace(
            "      - url: http://127.0.0.1:9\n",
            &format!(
                "      - url: https://127.0.0.1:9\n        tls:\n          ca_file: \"{}\"\n",
                file.display()
            ),
        );
        let path = dir.path().join("broken.yaml");
        std::fs::write(&path, broken).unwrap();
        let out = std::process::Command::new(common::bin())
            .arg("--config")
            .arg(&path)
            .arg("check-config")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("pools[0].backends[0].tls.ca_file")
                && stderr.contains(says)
                && stderr.contains(&file.display().to_string()),
            "{stderr}"
        );
    }
}
