//! Backend host names: resolved in the background and followed when they
//! change. The real binary asks a DNS server on loopback (`dns.nameservers`)
//! whose records the test changes; fake upstreams on two loopback addresses
//! stand for a provider before and after its addresses move.

mod common;

use std::time::Duration;

use common::dns::FakeDns;
use common::{chat_body, fake, gateway, get_json, sample, Backend, Poll, SseReader};
use fake_upstream::{FakeConfig, FakeUpstream};
use serde_json::Value;

const ADMIN_TOKEN: &str = "admin-token-for-dns-tests-0123456789";

fn dns_yaml(dns: &FakeDns) -> String {
    format!(
        "admin:\n  token_env: BM_ADMIN_TOKEN\ndns:\n  nameservers: [\"{}\"]\n",
        dns.nameserver()
    )
}

/// `/api/admin/health`'s entry for the backend with this URL.
async fn backend_health(side: &str, url: &str) -> Value {
    let health = get_json(&format!("{side}/api/admin/health"), ADMIN_TOKEN).await;
    health["data"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["backends"].as_array().unwrap().iter())
        .find(|b| b["url"] == url)
        .unwrap_or_else(|| panic!("no backend {url} in {health}"))
        .clone()
}

#[tokio::test]
async fn a_backend_whose_name_does_not_resolve_stays_out_and_the_gateway_serves() {
    let dns = FakeDns::start().await;
    let good = fake().await;
    // `.invalid` never resolves (the resolver answers it without asking anyone).
    let missing = "http://not-deployed-yet.invalid:4000";
    // Not in DNS yet: a service created after the gateway started.
    let later = format!("http://later.provider.test:{}", good.addr().port());
    let gw = gateway()
        .backend(Backend::new(missing.into()))
        .backend(Backend::new(later.clone()))
        .backend(Backend::new(good.url()))
        .env("BM_ADMIN_TOKEN", ADMIN_TOKEN)
        .yaml(&dns_yaml(&dns))
        .start()
        .await;
    // The gateway is up (start() waited for it); every request is served by the good one.
    let key = gw.create_key("dns", &[]);
    for _ in 0..4 {
        let resp = gw.chat(&key, &chat_body("gpt-4o-mini", false)).await;
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(good.request_count(), 4);

    for url in [missing, later.as_str()] {
        let bad = backend_health(&gw.side, url).await;
        assert_eq!(bad["state"], "unresolved", "{bad}");
        assert_eq!(bad["healthy"], false);
        assert_eq!(bad["addresses"], serde_json::json!([]));
        let host = url.trim_start_matches("http://").split(':').next().unwrap();
        assert!(bad["dns_error"].as_str().unwrap().contains(host), "{bad}");
    }
    let ok = backend_health(&gw.side, &good.url()).await;
    assert_eq!(ok["state"], "healthy", "{ok}");

    let labels = [("pool", "main"), ("backend", missing)];
    Poll::default()
        .until("the metrics show the backend without addresses", || async {
            let text = gw.metrics().await;
            sample(&text, "bluesminds_backend_addresses", &labels) == Some(0.0)
                && sample(&text, "bluesminds_backend_up", &labels) == Some(0.0)
        })
        .await;
    assert!(gw.log().contains("does not resolve"), "{}", gw.log());

    // check-config says so, as a warning: the config is valid.
    let out = gw.command().args(["check-config"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for (i, host) in [(0, "not-deployed-yet.invalid"), (1, "later.provider.test")] {
        let warning = format!("warning: pools[0].backends[{i}].url: cannot resolve `{host}`");
        assert!(stderr.contains(&warning), "{stderr}");
    }

    // The service appears: its backend joins without a reload and serves.
    dns.set("later.provider.test", &["127.0.0.1"]);
    Poll::default()
        .until(
            "the new name resolves and its backend is healthy",
            || async { backend_health(&gw.side, &later).await["state"] == "healthy" },
        )
        .await;
    good.clear_requests();
    for _ in 0..4 {
        let resp = gw.chat(&key, &chat_body("gpt-4o-mini", false)).await;
        assert_eq!(resp.status(), 200);
    }
    let hosts: Vec<String> = good
        .requests()
        .iter()
        .filter_map(|r| r.header("host").map(String::from))
        .collect();
    assert!(
        hosts.iter().any(|h| h.starts_with("later.provider.test:")),
        "the new backend (its own Host header) took requests: {hosts:?}"
    );
}

#[tokio::test]
async fn a_moved_backend_is_followed_without_dropping_the_open_stream() {
    let dns = FakeDns::start().await;
    let before = fake().await;
    let port = before.addr().port();
    // The provider's new address: same port, another loopback address.
    let after = FakeUpstream::start_on(
        format!("127.0.0.2:{port}").parse().unwrap(),
        FakeConfig::default(),
    )
    .await
    .expect("127.0.0.2 is loopback on Linux");
    dns.set("api.provider.test", &["127.0.0.1"]);
    let url = format!("http://api.provider.test:{port}");
    let gw = gateway()
        .backend(Backend::new(url.clone()))
        .env("BM_ADMIN_TOKEN", ADMIN_TOKEN)
        .yaml(&dns_yaml(&dns))
        .start()
        .await;
    let key = gw.create_key("dns", &[]);
    assert_eq!(
        backend_health(&gw.side, &url).await["addresses"],
        serde_json::json!([format!("127.0.0.1:{port}")])
    );

    // A stream is open to the old address, held before its first content chunk.
    before.hold_streams(true);
    let resp = gw.chat(&key, &chat_body("gpt-4o-mini", true)).await;
    assert_eq!(resp.status(), 200);
    let mut stream = SseReader::new(resp);
    let first = stream.next().await.expect("the role chunk");
    assert!(first.contains("\"role\":\"assistant\""), "{first}");

    // The provider moves; new requests follow once the record's TTL (1 s) runs out.
    dns.set("api.provider.test", &["127.0.0.2"]);
    Poll::within(Duration::from_secs(30))
        .every(Duration::from_millis(200))
        .until("a request reaches the new address", || async {
            let resp = gw.chat(&key, &chat_body("gpt-4o-mini", false)).await;
            assert_eq!(resp.status(), 200);
            after.request_count() > 0
        })
        .await;
    let health = backend_health(&gw.side, &url).await;
    assert_eq!(
        health["addresses"],
        serde_json::json!([format!("127.0.0.2:{port}")]),
        "{health}"
    );
    assert_eq!(health["state"], "healthy");
    let old_count = before.request_count();
    for _ in 0..3 {
        let resp = gw.chat(&key, &chat_body("gpt-4o-mini", false)).await;
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(
        before.request_count(),
        old_count,
        "nothing new goes to the old address"
    );

    // The stream opened before the move was never dropped: it completes in full.
    before.hold_streams(false);
    let mut events = vec![first];
    events.extend(stream.collect().await);
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    let text: String = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(String::from)
        })
        .collect();
    assert_eq!(text, "Hello from the fake upstream");
}

#[tokio::test]
async fn an_admin_added_server_whose_name_moves_to_a_metadata_address_is_taken_out() {
    let dns = FakeDns::start().await;
    let main = fake().await;
    let added = fake().await;
    let port = added.addr().port();
    dns.set("models.internal.test", &["127.0.0.1"]);
    let gw = gateway()
        .backend(Backend::new(main.url()))
        .env("BM_ADMIN_TOKEN", ADMIN_TOKEN)
        .yaml(&format!(
            "{}admin_servers:\n  allow_private: true\n",
            dns_yaml(&dns)
        ))
        .start()
        .await;
    let url = format!("http://models.internal.test:{port}");
    let created = reqwest::Client::new()
        .post(format!("{}/api/admin/servers", gw.side))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"pool": "internal", "url": url, "models": ["internal-model"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let key = gw.create_key("dns", &[]);
    let resp = gw.chat(&key, &chat_body("internal-model", false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(added.request_count(), 1);

    // The name is pointed at the cloud's metadata service: checked on the
    // next lookup, the server leaves rotation and is never dialled there.
    dns.set("models.internal.test", &["127.0.0.1", "169.254.169.254"]);
    Poll::default()
        .until("the server is refused", || async {
            backend_health(&gw.side, &url).await["state"] == "address_refused"
        })
        .await;
    let health = backend_health(&gw.side, &url).await;
    assert_eq!(health["addresses"], serde_json::json!([]), "{health}");
    assert!(
        health["dns_error"]
            .as_str()
            .unwrap()
            .contains("169.254.169.254"),
        "{health}"
    );
    let e = common::error_of(gw.chat(&key, &chat_body("internal-model", false)).await).await;
    assert_eq!(e.status_and_code(), (503, "upstream_unavailable"), "{e:?}");
    assert_eq!(added.request_count(), 1);
}
