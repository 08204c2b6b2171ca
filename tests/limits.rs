//! Limits, quotas and usage accounting, end to end: the real binary, fake
//! upstreams and a real HTTP client.

mod common;

use common::{chat_body, gateway, Backend, SseReader};
use fake_upstream::{FakeConfig, FakeUpstream, CHUNK_DELAY_HEADER};
use serde_json::{json, Value};

async fn fake() -> FakeUpstream {
    FakeUpstream::start(FakeConfig::default()).await.unwrap()
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

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

#[tokio::test]
async fn a_database_outage_under_load_loses_no_usage_record() {
    let up = fake().await;
    // A tiny queue, so the outage overflows it into the spill file.
    let gw = gateway()
        .backend(Backend::new(up.url()))
        .usage("queue_capacity: 8")
        .usage("batch_size: 4")
        .start()
        .await;
    let key = gw.create_key("load", &[]);
    let body = chat_body("gpt-4o-mini", false);
    let pool = gw.db.pool().await;
    for _ in 0..5 {
        assert_eq!(gw.chat(&key, &body).await.status(), 200);
    }
    gw.wait_usage_rows(5).await;

    // The usage table disappears: every write fails until it is back.
    sqlx::query("ALTER TABLE usage_records RENAME TO usage_records_offline")
        .execute(&pool)
        .await
        .unwrap();
    let mut sent = 5;
    for _ in 0..20 {
        let wave = futures_util::future::join_all((0..10).map(|_| gw.chat(&key, &body))).await;
        assert!(
            wave.iter().all(|r| r.status() == 200),
            "the proxy keeps serving"
        );
        sent += 10;
    }
    let spill = gw.dir.path().join("usage-spill.jsonl");
    let metrics = reqwest::get(format!("{}/metrics", gw.side))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metric(&metrics, "bluesminds_usage_write_errors_total") > 0.0);
    assert!(
        metric(&metrics, "bluesminds_usage_spilled_total") > 0.0,
        "{metrics}"
    );
    assert!(std::fs::metadata(&spill).unwrap().len() > 0);

    sqlx::query("ALTER TABLE usage_records_offline RENAME TO usage_records")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let rows = gw.wait_usage_rows(sent).await;
    let mut ids: Vec<&str> = rows.iter().map(|r| r.request_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len() as i64, sent, "every request exactly once");

    let metrics = reqwest::get(format!("{}/metrics", gw.side))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(metric(&metrics, "bluesminds_usage_shed_total"), 0.0);
    // The daily totals count each request once, replays included.
    let pool = gw.db.pool().await;
    let total: i64 = sqlx::query_scalar("SELECT CAST(SUM(requests) AS BIGINT) FROM usage_daily")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(total, sent);
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

#[tokio::test]
async fn usage_api_totals_and_pages_for_admins_and_keys() {
    let up = fake().await;
    let gw = gateway()
        .backend(Backend::new(up.url()))
        .env("BM_ADMIN_TOKEN", "admin-token-for-tests-0123456789")
        .yaml("admin:\n  token_env: BM_ADMIN_TOKEN\n")
        .start()
        .await;
    let a = gw.create_key("a", &[]);
    let b = gw.create_key("b", &[]);
    for _ in 0..3 {
        assert_eq!(
            gw.chat(&a, &chat_body("gpt-4o-mini", false)).await.status(),
            200
        );
    }
    let emb = reqwest::Client::new()
        .post(gw.url("/v1/embeddings"))
        .bearer_auth(&b)
        .json(&json!({"model": "text-embedding-3-small", "input": "one two"}))
        .send()
        .await
        .unwrap();
    assert_eq!(emb.status(), 200);
    gw.wait_usage_rows(4).await;

    let c = reqwest::Client::new();
    let get = |path: &str, token: &str| {
        c.get(format!("{}{}", gw.side, path))
            .bearer_auth(token)
            .send()
    };
    let admin = "admin-token-for-tests-0123456789";

    let v: Value = get("/api/usage/models", admin)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let models: Vec<(&str, i64)> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["group"].as_str().unwrap(),
                r["requests"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(models, [("gpt-4o-mini", 3), ("text-embedding-3-small", 1)]);

    let v: Value = get("/api/usage/daily", admin)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let days = v["data"].as_array().unwrap();
    assert_eq!(days.len(), 1);
    assert_eq!(days[0]["requests"], 4);
    assert_eq!(days[0]["prompt_tokens"], 3 * 8 + 2);
    assert_eq!(days[0]["cost_nanousd"], 3 * (8 * 150 + 5 * 600) + 2 * 20);

    // A key sees only itself, and may not ask for anyone else.
    let v: Value = get("/api/usage/daily", &b)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"][0]["requests"], 1);
    let denied = get("/api/usage/daily?key_id=1", &b).await.unwrap();
    assert_eq!(denied.status(), 403);
    let e: Value = denied.json().await.unwrap();
    assert_eq!(e["error"]["code"], "permission_denied");

    // Pages of recent requests, newest first.
    let v: Value = get("/api/usage/requests?limit=3", admin)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let page: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["endpoint"].as_str().unwrap())
        .collect();
    assert_eq!(page, ["embeddings", "chat.completions", "chat.completions"]);
    assert!(v["data"][0]["key_name"].is_string(), "{v}");
    let before = v["next_before"].as_i64().unwrap();
    let v: Value = get(
        &format!("/api/usage/requests?limit=3&before={before}"),
        admin,
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    assert!(v["next_before"].is_null());

    // Bad input and no credentials: OpenAI-shaped errors.
    let bad = get("/api/usage/daily?from=yesterday", admin).await.unwrap();
    assert_eq!(bad.status(), 400);
    let e: Value = bad.json().await.unwrap();
    assert_eq!(e["error"]["param"], "from");
    let none = c
        .get(format!("{}/api/usage/daily", gw.side))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 401);
    let wrong = get("/api/usage/daily", "not-the-admin-token")
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
}

#[tokio::test]
async fn a_stream_the_client_abandons_is_billed_for_what_was_generated() {
    let up = fake().await;
    let gw = gateway().backend(Backend::new(up.url())).start().await;
    let key = gw.create_key("abort", &[]);
    let resp = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .header(CHUNK_DELAY_HEADER, "300")
        .json(&chat_body("gpt-4o-mini", true))
        .send()
        .await
        .unwrap();
    let mut sse = SseReader::new(resp);
    let mut received = String::new();
    while let Some(event) = sse.next().await {
        let chunk: Value = serde_json::from_str(&event).unwrap();
        received.push_str(
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or(""),
        );
        if received.len() >= "Hello from ".len() {
            break;
        }
    }
    assert_eq!(received, "Hello from ");
    drop(sse);

    let rows = gw.wait_usage_rows(1).await;
    let r = &rows[0];
    assert_eq!(r.error_code.as_deref(), Some("client_closed_request"));
    assert_eq!(r.usage_source, "tokenizer", "the usage chunk never came");
    assert_eq!(r.prompt_tokens, 11);
    // At least what the client got; at most what the upstream sent before the
    // gateway noticed the client was gone (never the whole 5-token reply).
    let got = bluesminds::usage::tokenizer::count_text("gpt-4o-mini", &received) as i64;
    assert!(
        r.completion_tokens >= got && r.completion_tokens < 5,
        "{r:?}"
    );
    assert!(r.cost_nanousd > 0);
}
