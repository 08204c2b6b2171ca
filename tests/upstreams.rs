//! Which backend serves a request, and as whom: failover when a backend dies
//! or answers 5xx, active health checks taking a backend out and back in,
//! priority groups, backend identity (Host headers and keys of backends that
//! share an address). The real binary, fake upstreams, a real HTTP client.

mod common;

use std::time::Duration;

use common::{chat_body, error_of, fake, gateway, Backend, Gateway, Poll};
use fake_upstream::{FakeUpstream, Mode};

/// A gateway whose pool has two fake backends at one priority.
async fn two_backends() -> (FakeUpstream, FakeUpstream, Gateway) {
    let a = fake().await;
    let b = fake().await;
    let gw = gateway()
        .backend(Backend::new(a.url()))
        .backend(Backend::new(b.url()))
        .start()
        .await;
    (a, b, gw)
}

#[tokio::test]
async fn failover_when_a_backend_dies_or_answers_5xx() {
    let (a, b, gw) = two_backends().await;
    let key = gw.create_key("test", &[]);
    let body = chat_body("gpt-4o-mini", false);
    let send = || gw.chat(&key, &body);

    // Both serve while healthy (weighted round robin).
    for _ in 0..4 {
        assert_eq!(send().await.status(), 200);
    }
    assert!(a.request_count() > 0 && b.request_count() > 0);

    // A answers 500: every request still succeeds, through B.
    a.set_mode(Mode::Fail(500));
    for _ in 0..6 {
        assert_eq!(send().await.status(), 200);
    }

    // A is killed outright: still no failed request.
    a.set_mode(Mode::Normal);
    a.shutdown().await;
    b.clear_requests();
    for _ in 0..6 {
        let resp = send().await;
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(b.request_count(), 6);

    // Every backend down: a clear 5xx in OpenAI's shape.
    b.shutdown().await;
    let e = error_of(send().await).await;
    assert!(e.status == 502 || e.status == 503, "{e:?}");
    assert_eq!(e.kind(), "server_error");
    let rows = gw.wait_usage_rows(17).await;
    assert!(rows[..16].iter().all(|r| r.status == 200));
    assert!(rows[16].status >= 500);
}

#[tokio::test]
async fn health_checks_take_a_backend_out_and_bring_it_back() {
    let (a, _b, gw) = two_backends().await;
    let key = gw.create_key("test", &[]);
    // Rounds of 4 requests, 100 ms apart, the first 100 ms after the change;
    // for about 10 s (it used to be 100 rounds).
    let pace = Duration::from_millis(100);
    let rounds = Poll::within(Duration::from_secs(10)).every(pace);
    a.set_health_ok(false);
    // Wait for a failed probe (interval 1 s in tests), then A gets no traffic:
    // every request still succeeds, and none of a round's reaches A.
    tokio::time::sleep(pace).await;
    rounds
        .until(
            "an unhealthy backend to stop receiving requests",
            || async {
                a.clear_requests();
                for _ in 0..4 {
                    let r = gw.chat(&key, &chat_body("gpt-4o-mini", false)).await;
                    assert_eq!(r.status(), 200);
                }
                a.request_count() == 0
            },
        )
        .await;
    a.set_health_ok(true);
    tokio::time::sleep(pace).await;
    rounds
        .until("a recovered backend to come back into rotation", || async {
            for _ in 0..4 {
                gw.chat(&key, &chat_body("gpt-4o-mini", false)).await;
            }
            a.request_count() > 0
        })
        .await;
}

#[tokio::test]
async fn priority_groups_are_used_in_order() {
    let primary = fake().await;
    let standby = fake().await;
    let gw = gateway()
        .backend(Backend::new(primary.url()))
        .backend(Backend {
            priority: 1,
            ..Backend::new(standby.url())
        })
        .start()
        .await;
    let key = gw.create_key("test", &[]);
    for _ in 0..5 {
        let r = gw.chat(&key, &chat_body("gpt-4o-mini", false)).await;
        assert_eq!(r.status(), 200);
    }
    assert_eq!((primary.request_count(), standby.request_count()), (5, 0));
    primary.shutdown().await;
    for _ in 0..3 {
        let r = gw.chat(&key, &chat_body("gpt-4o-mini", false)).await;
        assert_eq!(r.status(), 200);
    }
    assert_eq!(standby.request_count(), 3);
}

/// Two backends whose names resolve to one IP:port (providers behind one CDN,
/// or one server reached under two names) are two backends: each request goes
/// out with the Host header and the key of the backend that was picked, and
/// equal weights share the load. Before backends had their own identity the
/// load balancer merged them, and every request carried the first one's Host
/// and key.
#[tokio::test]
async fn two_backends_on_one_address_keep_their_own_host_and_key() {
    let up = fake().await;
    let port = up.addr().port();
    let gw = gateway()
        .backend(Backend {
            api_key_env: Some("KEY_A"),
            ..Backend::new(format!("http://127.0.0.1:{port}"))
        })
        .backend(Backend {
            api_key_env: Some("KEY_B"),
            ..Backend::new(format!("http://localhost:{port}"))
        })
        .env("KEY_A", "sk-account-a")
        .env("KEY_B", "sk-account-b")
        .start()
        .await;
    let key = gw.create_key("test", &[]);
    for _ in 0..10 {
        let r = gw.chat(&key, &chat_body("gpt-4o-mini", false)).await;
        assert_eq!(r.status(), 200);
    }
    let seen: Vec<(String, String)> = up
        .requests()
        .iter()
        .map(|r| {
            (
                r.header("host").unwrap_or_default().to_string(),
                r.header("authorization").unwrap_or_default().to_string(),
            )
        })
        .collect();
    let a = (
        format!("127.0.0.1:{port}"),
        "Bearer sk-account-a".to_string(),
    );
    let b = (
        format!("localhost:{port}"),
        "Bearer sk-account-b".to_string(),
    );
    assert!(
        seen.iter().all(|s| s == &a || s == &b),
        "a Host header went out with the other backend's key: {seen:?}"
    );
    let to_a = seen.iter().filter(|s| *s == &a).count();
    assert_eq!((to_a, seen.len() - to_a), (5, 5), "equal weights: {seen:?}");
}

/// The same server under two keys (two provider accounts, to spread their
/// rate limits) is allowed at one priority, and both keys are used.
#[tokio::test]
async fn one_url_under_two_keys_uses_both() {
    let up = fake().await;
    let gw = gateway()
        .backend(Backend {
            api_key_env: Some("KEY_A"),
            ..Backend::new(up.url())
        })
        .backend(Backend {
            api_key_env: Some("KEY_B"),
            ..Backend::new(up.url())
        })
        .env("KEY_A", "sk-account-a")
        .env("KEY_B", "sk-account-b")
        .start()
        .await;
    let key = gw.create_key("test", &[]);
    for _ in 0..4 {
        let r = gw.chat(&key, &chat_body("gpt-4o-mini", false)).await;
        assert_eq!(r.status(), 200);
    }
    let mut keys: Vec<String> = up
        .requests()
        .iter()
        .map(|r| r.header("authorization").unwrap_or_default().to_string())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "Bearer sk-account-a",
            "Bearer sk-account-a",
            "Bearer sk-account-b",
            "Bearer sk-account-b"
        ]
    );
}

/// llama-cpp-python's server (starlette-context's request-id plugin) answers
/// an empty 400 to any `x-request-id` that is not a UUID, and the gateway sent
/// `req_<hex>`: every chat and embeddings request failed. Backends now get the
/// same id as a canonical UUID (clients still see OpenAI's `req_` form), under
/// a header the pool may rename or turn off.
#[tokio::test]
async fn a_server_that_wants_a_uuid_request_id_accepts_the_gateways() {
    let strict = FakeUpstream::start(fake_upstream::FakeConfig {
        strict_request_id: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let gw = gateway().backend(Backend::new(strict.url())).start().await;
    let key = gw.create_key("k", &[]);
    let resp = gw.chat(&key, &chat_body("gpt-4o-mini", false)).await;
    assert_eq!(resp.status(), 200);
    let client_id = common::header(&resp, "x-request-id").unwrap();
    let emb = reqwest::Client::new()
        .post(gw.url("/v1/embeddings"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"model": "text-embedding-3-small", "input": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(emb.status(), 200);
    let sent = strict.requests()[0]
        .header("x-request-id")
        .unwrap()
        .to_string();
    let uuid = uuid::Uuid::parse_str(&sent).unwrap();
    assert_eq!(sent, uuid.hyphenated().to_string(), "canonical form");
    assert_eq!(
        client_id,
        format!("req_{}", uuid.simple()),
        "one id, two spellings"
    );
    let rows = gw.wait_usage_rows(2).await;
    assert_eq!(rows[0].request_id, client_id);

    // The fake is as strict as the real server: OpenAI's form is refused.
    let refused = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", strict.url()))
        .header("x-request-id", client_id)
        .json(&chat_body("gpt-4o-mini", false))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert!(refused.bytes().await.unwrap().is_empty());

    // Renamed, or not sent at all.
    let plain = fake().await;
    let gw = gateway()
        .backend(Backend::new(plain.url()))
        .pool("request_id_header: x-correlation-id")
        .start()
        .await;
    let key = gw.create_key("k", &[]);
    assert_eq!(
        gw.chat(&key, &chat_body("gpt-4o-mini", false))
            .await
            .status(),
        200
    );
    let seen = &plain.requests()[0];
    assert!(seen.header("x-request-id").is_none());
    assert!(uuid::Uuid::parse_str(seen.header("x-correlation-id").unwrap()).is_ok());
    let gw = gateway()
        .backend(Backend::new(plain.url()))
        .pool("request_id_header: null")
        .start()
        .await;
    let key = gw.create_key("k", &[]);
    assert_eq!(
        gw.chat(&key, &chat_body("gpt-4o-mini", false))
            .await
            .status(),
        200
    );
    let seen = &plain.requests()[1];
    assert!(seen.header("x-request-id").is_none() && seen.header("x-correlation-id").is_none());
}
