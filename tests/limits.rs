//! Limits and quotas on the proxy, end to end: requests and tokens per minute
//! (with OpenAI's `x-ratelimit-*` and `retry-after` headers), concurrency,
//! per-user plan limits across keys, monthly quotas, also across two instances
//! on one database. The real binary, fake upstreams, a real HTTP client.
//! (Limits across instances through Redis: `cluster.rs`.)

mod common;

use common::{chat_body, fake, gateway, header, Backend, SseReader};
use fake_upstream::CHUNK_DELAY_HEADER;
use serde_json::{json, Value};

#[tokio::test]
async fn n_requests_against_an_rpm_limit_admit_exactly_the_limit() {
    let up = fake().await;
    let gw = gateway().backend(Backend::new(up.url())).start().await;
    let key = gw.create_key("limited", &["--rpm", "5"]);
    let body = chat_body("gpt-4o-mini", false);
    let responses = futures_util::future::join_all((0..20).map(|_| gw.chat(&key, &body))).await;
    let ok: Vec<&reqwest::Response> = responses.iter().filter(|r| r.status() == 200).collect();
    let limited: Vec<&reqwest::Response> = responses.iter().filter(|r| r.status() == 429).collect();
    assert_eq!((ok.len(), limited.len()), (5, 15));
    assert_eq!(
        up.request_count(),
        5,
        "refused requests never reach the upstream"
    );

    let mut remaining: Vec<u64> = ok
        .iter()
        .map(|r| {
            header(r, "x-ratelimit-remaining-requests")
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    remaining.sort();
    assert_eq!(remaining, [0, 1, 2, 3, 4]);
    for r in &responses {
        assert_eq!(
            header(r, "x-ratelimit-limit-requests").as_deref(),
            Some("5")
        );
        assert!(header(r, "x-ratelimit-reset-requests").is_some());
    }
    for r in &limited {
        // One request comes back every 12 s at 5 RPM.
        let after: u64 = header(r, "retry-after").unwrap().parse().unwrap();
        assert!((1..=12).contains(&after), "retry-after {after}");
        assert!(header(r, "retry-after-ms").is_some());
        assert_eq!(
            header(r, "x-ratelimit-remaining-requests").as_deref(),
            Some("0")
        );
    }
    let body: Value = responses
        .into_iter()
        .find(|r| r.status() == 429)
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(body["error"]["type"], "requests");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Limit 5"));

    let rows = gw.wait_usage_rows(20).await;
    assert_eq!(rows.iter().filter(|r| r.status == 429).count(), 15);
    assert!(rows
        .iter()
        .filter(|r| r.status == 429)
        .all(|r| r.error_code.as_deref() == Some("rate_limit_exceeded") && r.prompt_tokens == 0));
}

#[tokio::test]
async fn tpm_is_estimated_up_front_and_settled_with_the_real_count() {
    let up = fake().await;
    let gw = gateway().backend(Backend::new(up.url())).start().await;
    let key = gw.create_key("tpm", &["--tpm", "200"]);
    // ~30 tokens of body plus a budget of 100: each request reserves ~130 of 200.
    let mut body = chat_body("gpt-4o-mini", false);
    body["max_tokens"] = json!(100);

    let first = gw.chat(&key, &body).await;
    assert_eq!(first.status(), 200);
    assert_eq!(
        header(&first, "x-ratelimit-limit-tokens").as_deref(),
        Some("200")
    );
    let left: u64 = header(&first, "x-ratelimit-remaining-tokens")
        .unwrap()
        .parse()
        .unwrap();
    assert!(left < 100, "the estimate was debited: {left} left");
    first.bytes().await.unwrap();
    // Once the first request is accounted for (13 real tokens, not ~130), the
    // second fits: without reconciliation it would be refused.
    gw.wait_usage_rows(1).await;
    let second = gw.chat(&key, &body).await;
    assert_eq!(
        second.status(),
        200,
        "reconciliation gave the unused estimate back"
    );

    // A request that can never fit is refused for good, not "retry later".
    body["max_tokens"] = json!(5000);
    let big = gw.chat(&key, &body).await;
    assert_eq!(big.status(), 429);
    assert_eq!(header(&big, "x-should-retry").as_deref(), Some("false"));
    assert!(header(&big, "retry-after").is_none());
    let e: Value = big.json().await.unwrap();
    assert_eq!(e["error"]["type"], "tokens");
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("too large"));
}

#[tokio::test]
async fn concurrency_limit_counts_open_streams() {
    let up = fake().await;
    let gw = gateway().backend(Backend::new(up.url())).start().await;
    let key = gw.create_key("one-at-a-time", &["--concurrency", "1"]);
    let slow = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .header(CHUNK_DELAY_HEADER, "400")
        .json(&chat_body("gpt-4o-mini", true))
        .send()
        .await
        .unwrap();
    assert_eq!(slow.status(), 200);
    let mut sse = SseReader::new(slow);
    assert!(sse.next().await.is_some(), "the stream is open");

    let second = gw.chat(&key, &chat_body("gpt-4o-mini", false)).await;
    assert_eq!(second.status(), 429);
    let e: Value = second.json().await.unwrap();
    assert_eq!(e["error"]["code"], "concurrency_limit_exceeded");

    // The slot comes back when the stream ends.
    while sse.next().await.is_some() {}
    gw.wait_usage_rows(2).await;
    assert_eq!(
        gw.chat(&key, &chat_body("gpt-4o-mini", false))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn user_plan_limits_span_all_of_a_users_keys() {
    let up = fake().await;
    let gw = gateway()
        .backend(Backend::new(up.url()))
        .yaml("plans:\n  starter: { rpm: 3 }\n")
        .start()
        .await;
    gw.cli(&[
        "users",
        "create",
        "--email",
        "ann@example.com",
        "--plan",
        "starter",
    ]);
    let k1 = gw.create_key("ann-1", &["--user", "ann@example.com"]);
    let k2 = gw.create_key("ann-2", &["--user", "ann@example.com", "--rpm", "100"]);
    let body = chat_body("gpt-4o-mini", false);
    let mut statuses = Vec::new();
    for key in [&k1, &k2, &k1, &k2, &k1, &k2] {
        statuses.push(gw.chat(key, &body).await.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);
}

#[tokio::test]
async fn an_exhausted_monthly_quota_is_insufficient_quota_and_not_retried() {
    let up = fake().await;
    let gw = gateway()
        .backend(Backend::new(up.url()))
        .yaml("plans:\n  tiny: { monthly_tokens: 20 }\n")
        .start()
        .await;
    gw.cli(&[
        "users",
        "create",
        "--email",
        "bo@example.com",
        "--plan",
        "tiny",
    ]);
    let key = gw.create_key("bo", &["--user", "bo@example.com"]);
    let body = chat_body("gpt-4o-mini", false);
    // Each request uses 13 tokens: the first two fit (the second ends past 20).
    for n in 1..=2 {
        assert_eq!(gw.chat(&key, &body).await.status(), 200);
        gw.wait_usage_rows(n).await;
    }
    let spent = gw.chat(&key, &body).await;
    assert_eq!(spent.status(), 429);
    assert_eq!(header(&spent, "x-should-retry").as_deref(), Some("false"));
    let e: Value = spent.json().await.unwrap();
    assert_eq!(e["error"]["code"], "insufficient_quota");
    assert_eq!(e["error"]["type"], "insufficient_quota");
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("resets on"));
    assert_eq!(up.request_count(), 2);
}

#[tokio::test]
async fn a_quota_spent_on_one_instance_is_refused_on_another() {
    let up = fake().await;
    let plan = "plans:\n  tiny: { monthly_tokens: 30 }\n";
    let a = gateway()
        .backend(Backend::new(up.url()))
        .yaml(plan)
        .start()
        .await;
    let b = gateway()
        .db_url(&a.db.url)
        .backend(Backend::new(up.url()))
        .usage("quota_refresh_ms: 100")
        .yaml(plan)
        .start()
        .await;
    a.cli(&[
        "users",
        "create",
        "--email",
        "cy@example.com",
        "--plan",
        "tiny",
    ]);
    let key = a.create_key("cy", &["--user", "cy@example.com"]);
    let body = chat_body("gpt-4o-mini", false);
    // B loads the user's month first (13 tokens used, written before A starts).
    assert_eq!(b.chat(&key, &body).await.status(), 200);
    b.wait_usage_rows(1).await;
    // A starts from those 13 and spends the rest: 13 + 13 + 13 >= 30.
    for n in 2..=3 {
        assert_eq!(a.chat(&key, &body).await.status(), 200);
        a.wait_usage_rows(n).await;
    }
    assert_eq!(a.chat(&key, &body).await.status(), 429);
    // B's own count is still 13, which would admit the user; after a refresh
    // interval (100 ms here, waited five times over for a loaded machine) it
    // has read A's usage from the database and refuses at once.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let resp = b.chat(&key, &body).await;
    assert_eq!(resp.status(), 429, "instance B still admits the user");
    let e: Value = resp.json().await.unwrap();
    assert_eq!(e["error"]["code"], "insufficient_quota");
    assert_eq!(up.request_count(), 3);
}

/// A model without a price cost 0, so behind a pool that serves any model a
/// plan limited in credits never ran out. Such a plan now takes only priced
/// models (or all of them once a `*` default price is set).
#[tokio::test]
async fn a_plan_in_credits_cannot_spend_nothing_on_an_unpriced_model() {
    let up = fake().await;
    let plan = "plans:\n  paid: { monthly_credits_usd: 5 }\n";
    let gw = gateway()
        .backend(Backend::new(up.url()))
        .yaml(plan)
        .start()
        .await;
    gw.cli(&[
        "users",
        "create",
        "--email",
        "di@example.com",
        "--plan",
        "paid",
    ]);
    let key = gw.create_key("di", &["--user", "di@example.com"]);
    let free_key = gw.create_key("operator", &[]);
    let unpriced = chat_body("gpt-3.5-turbo-instruct", false);
    let resp = gw.chat(&key, &unpriced).await;
    assert_eq!(resp.status(), 403);
    let e: Value = resp.json().await.unwrap();
    assert_eq!(e["error"]["code"], "model_not_priced");
    assert_eq!(e["error"]["param"], "model");
    assert_eq!(up.request_count(), 0);
    // Priced models, and keys without a credit plan, are served as before.
    assert_eq!(
        gw.chat(&key, &chat_body("gpt-4o-mini", false))
            .await
            .status(),
        200
    );
    assert_eq!(gw.chat(&free_key, &unpriced).await.status(), 200);

    let gw = gateway()
        .backend(Backend::new(up.url()))
        .yaml(plan)
        .prices("prices:\n  \"*\": { input_per_1m: 1, output_per_1m: 2 }\n")
        .start()
        .await;
    gw.cli(&[
        "users",
        "create",
        "--email",
        "di@example.com",
        "--plan",
        "paid",
    ]);
    let key = gw.create_key("di", &["--user", "di@example.com"]);
    assert_eq!(gw.chat(&key, &unpriced).await.status(), 200);
    let rows = gw.wait_usage_rows(1).await;
    let r = &rows[0];
    assert_eq!(
        r.cost_nanousd,
        r.prompt_tokens * 1000 + r.completion_tokens * 2000,
        "priced at the default: {r:?}"
    );
    assert!(r.cost_nanousd > 0);
}
