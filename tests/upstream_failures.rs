//! The failures real providers answer with: a rate limit (429 with
//! `retry-after`), `x-should-retry`, and a revoked key (401). The real binary,
//! fake upstreams answering as OpenAI (and Azure, for `retry-after`) do.

mod common;

use common::{chat_body, error_of, gateway, get_json, header, Backend, User};
use fake_upstream::{FakeConfig, FakeUpstream, Mode};
use serde_json::Value;

const ADMIN_TOKEN: &str = "admin-token-for-failure-tests-0123456789";

async fn fake_with(cfg: FakeConfig) -> FakeUpstream {
    FakeUpstream::start(cfg).await.unwrap()
}

fn at(url: String, priority: u32) -> Backend<'static> {
    Backend {
        priority,
        ..Backend::new(url)
    }
}

/// `/api/admin/health`'s entry for the backend with this URL.
async fn backend_health(side: &str, url: &str) -> Value {
    let health = get_json(&format!("{side}/api/admin/health"), ADMIN_TOKEN).await;
    health["data"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["url"] == url)
        .unwrap_or_else(|| panic!("no backend {url} in {health}"))
        .clone()
}

#[tokio::test]
async fn a_rate_limited_backend_fails_over_and_sits_out_its_retry_after() {
    let limited = fake_with(FakeConfig::default()).await;
    let spare = fake_with(FakeConfig::default()).await;
    limited.set_mode(Mode::RateLimited {
        retry_after_secs: 120,
    });
    let gw = gateway()
        .backend(Backend::new(limited.url()))
        .backend(Backend::new(spare.url()))
        .env("BM_ADMIN_TOKEN", ADMIN_TOKEN)
        .yaml("admin:\n  token_env: BM_ADMIN_TOKEN\n")
        .start()
        .await;
    let key = gw.create_key("limits", &[]);
    for _ in 0..6 {
        let resp = gw.chat(&key, &chat_body("gpt-4o-mini", false)).await;
        assert_eq!(resp.status(), 200);
    }
    // Round robin sent one request to the limited backend; its 429 went to the
    // spare, and its retry-after (120 s) kept it out of every later request.
    assert_eq!(limited.request_count(), 1);
    assert_eq!(spare.request_count(), 6);
    let health = backend_health(&gw.side, &limited.url()).await;
    assert_eq!(health["ejected"], true, "{health}");

    // Every backend rate limited: the last 429 reaches the client as the
    // provider sent it, with its backoff hint.
    spare.set_mode(Mode::RateLimited {
        retry_after_secs: 30,
    });
    let resp = gw.chat(&key, &chat_body("gpt-4o-mini", false)).await;
    let retry_after = header(&resp, "retry-after");
    let e = error_of(resp).await;
    assert_eq!(e.status_and_code(), (429, "rate_limit_exceeded"), "{e:?}");
    assert!(
        retry_after == Some("120".into()) || retry_after == Some("30".into()),
        "{retry_after:?}"
    );
}

#[tokio::test]
async fn x_should_retry_false_keeps_the_answer_and_true_fails_over() {
    // Priority 0 is tried first; priority 1 is the fallback.
    let final_error = fake_with(FakeConfig {
        response_headers: vec![("x-should-retry".into(), "false".into())],
        ..FakeConfig::default()
    })
    .await;
    final_error.set_mode(Mode::Fail(503));
    let fallback = fake_with(FakeConfig::default()).await;
    let gw = gateway()
        .backend(at(final_error.url(), 0))
        .backend(at(fallback.url(), 1))
        .start()
        .await;
    let key = gw.create_key("retry", &[]);
    let resp = gw.chat(&key, &chat_body("gpt-4o-mini", false)).await;
    assert_eq!(header(&resp, "x-should-retry").as_deref(), Some("false"));
    let e = error_of(resp).await;
    assert_eq!(e.status, 503, "{e:?}");
    assert_eq!(e.kind(), "server_error");
    assert_eq!(
        fallback.request_count(),
        0,
        "the upstream said not to retry"
    );
    drop(gw);

    let retry_me = fake_with(FakeConfig {
        response_headers: vec![("x-should-retry".into(), "true".into())],
        ..FakeConfig::default()
    })
    .await;
    retry_me.set_mode(Mode::Fail(400));
    let fallback = fake_with(FakeConfig::default()).await;
    let gw = gateway()
        .backend(at(retry_me.url(), 0))
        .backend(at(fallback.url(), 1))
        .start()
        .await;
    let key = gw.create_key("retry", &[]);
    let resp = gw.chat(&key, &chat_body("gpt-4o-mini", false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!((retry_me.request_count(), fallback.request_count()), (1, 1));
}

#[tokio::test]
async fn a_backend_whose_key_is_revoked_is_marked_and_its_requests_go_elsewhere() {
    let provider = fake_with(FakeConfig {
        api_key: Some("sk-current".into()),
        ..FakeConfig::default()
    })
    .await;
    let fallback = fake_with(FakeConfig::default()).await;
    let gw = gateway()
        .backend(Backend {
            api_key_env: Some("BM_REVOKED_KEY"),
            ..at(provider.url(), 0)
        })
        .backend(at(fallback.url(), 1))
        .env("BM_REVOKED_KEY", "sk-revoked")
        .env("BM_ADMIN_TOKEN", ADMIN_TOKEN)
        .yaml("admin:\n  token_env: BM_ADMIN_TOKEN\n")
        .start()
        .await;
    let key = gw.create_key("revoked", &[]);
    for _ in 0..3 {
        let resp = gw.chat(&key, &chat_body("gpt-4o-mini", false)).await;
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(
        provider.request_count(),
        1,
        "skipped once its key was refused"
    );
    assert_eq!(fallback.request_count(), 3);

    let health = backend_health(&gw.side, &provider.url()).await;
    assert_eq!(health["state"], "key_refused", "{health}");
    assert_eq!(health["key_refused_status"], 401);
    let fine = backend_health(&gw.side, &fallback.url()).await;
    assert_eq!(fine["state"], "healthy", "{fine}");
    assert!(fine.get("key_refused_status").is_none(), "{fine}");
    let boss = User::signup_admin(&gw, "boss@example.com").await;
    let page = boss.get("/admin/servers").await.text().await.unwrap();
    assert!(page.contains("Key refused by the provider"), "{page}");
    assert!(gw.log().contains("refuses this backend's key"));
}

#[tokio::test]
async fn a_refused_key_on_the_only_backend_is_a_502_not_the_clients_401() {
    let provider = fake_with(FakeConfig {
        api_key: Some("sk-current".into()),
        ..FakeConfig::default()
    })
    .await;
    let gw = gateway()
        .backend(Backend {
            api_key_env: Some("BM_REVOKED_KEY"),
            ..Backend::new(provider.url())
        })
        .env("BM_REVOKED_KEY", "sk-revoked")
        .start()
        .await;
    let key = gw.create_key("revoked", &[]);
    let e = error_of(gw.chat(&key, &chat_body("gpt-4o-mini", false)).await).await;
    assert_eq!(e.status_and_code(), (502, "upstream_auth_error"), "{e:?}");
    assert!(e.message().contains("not your API key"), "{e:?}");
    let rows = gw.wait_usage_rows(1).await;
    assert_eq!(rows[0].status, 502);
    assert_eq!(rows[0].error_code.as_deref(), Some("upstream_auth_error"));
}
