//! The usage API (`/api/usage/*`): totals per model and per day and pages of
//! recent requests, for the admin token and for API keys (which see only
//! themselves); bad input and missing credentials answer OpenAI-shaped errors.

mod common;

use common::{chat_body, fake, gateway, Backend};
use serde_json::{json, Value};

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

/// Any key or user could page `/api/usage/requests`, and each page scanned
/// every user's records (`($1 = 0 OR key_id = $2)` on an unindexed column).
/// The planner now answers a key's or a user's page from an index range.
#[tokio::test]
async fn a_page_of_one_users_requests_does_not_scan_everyones() {
    use sqlx::Row;
    let up = fake().await;
    let gw = gateway().backend(Backend::new(up.url())).start().await;
    let pool = gw.db.pool().await;
    let postgres = gw.db.url.starts_with("postgres");
    if postgres {
        // The tables are tiny here; make the planner show what it would do with
        // many rows rather than read them all because it is cheap today.
        sqlx::query("SET enable_seqscan = off")
            .execute(&pool)
            .await
            .unwrap();
    }
    for (by_key, by_user, index) in [
        (true, false, "usage_records_key_page"),
        (false, true, "usage_records_user_page"),
    ] {
        let sql = bluesminds::store::recent_requests_sql(by_key, by_user);
        let explain = if postgres {
            "EXPLAIN "
        } else {
            "EXPLAIN QUERY PLAN "
        };
        let rows = sqlx::query(&format!("{explain}{sql}"))
            .bind(7_i64)
            .bind(1000_i64)
            .bind(20_i64)
            .fetch_all(&pool)
            .await
            .unwrap();
        let plan: Vec<String> = rows
            .iter()
            .map(|r| r.try_get::<String, _>(r.len() - 1).unwrap())
            .collect();
        let plan = plan.join("\n");
        assert!(plan.contains(index), "not through {index}:\n{plan}");
    }
}

/// Prompt-cache reads and reasoning were folded into plain prompt and
/// completion tokens: a cached prompt was billed at the full input price and
/// neither part could be seen. Each is now stored per record, priced at its
/// own rate, summed per day, and the model the upstream says served the
/// request is kept beside the one asked for.
#[tokio::test]
async fn cached_and_reasoning_tokens_are_stored_priced_and_totalled() {
    let up = fake_upstream::FakeUpstream::start(fake_upstream::FakeConfig {
        cached_tokens: 5,
        reasoning_tokens: 3,
        served_model: Some("gpt-4o-mini-2024-07-18".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let gw = gateway()
        .backend(Backend::new(up.url()))
        .env("BM_ADMIN_TOKEN", "admin-token-for-tests-0123456789")
        .yaml("admin:\n  token_env: BM_ADMIN_TOKEN\n")
        .prices("prices:\n  gpt-4o-mini: { input_per_1m: 0.15, input_cached_per_1m: 0.075, output_per_1m: 0.60 }\n")
        .start()
        .await;
    let key = gw.create_key("k", &[]);
    for stream in [false, true] {
        let resp = gw.chat(&key, &chat_body("gpt-4o-mini", stream)).await;
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
    }
    gw.wait_usage_rows(2).await;
    let admin = "admin-token-for-tests-0123456789";
    let get = |path: &str| {
        let req = reqwest::Client::new()
            .get(format!("{}{}", gw.side, path))
            .bearer_auth(admin);
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    // 8 prompt tokens (5 cached), 5 answer + 3 reasoning completion tokens.
    let cost = 3 * 150 + 5 * 75 + 8 * 600;
    let requests = get("/api/usage/requests").await;
    for r in requests["data"].as_array().unwrap() {
        assert_eq!(
            (
                &r["prompt_tokens"],
                &r["cached_tokens"],
                &r["completion_tokens"],
                &r["reasoning_tokens"]
            ),
            (&json!(8), &json!(5), &json!(8), &json!(3)),
            "{r}"
        );
        assert_eq!(r["model"], "gpt-4o-mini");
        assert_eq!(r["served_model"], "gpt-4o-mini-2024-07-18");
        assert_eq!(r["cost_nanousd"], cost, "{r}");
    }
    let days = get("/api/usage/daily").await;
    let day = &days["data"][0];
    assert_eq!(day["cached_tokens"], 10);
    assert_eq!(day["reasoning_tokens"], 6);
    assert_eq!(day["cache_write_tokens"], 0);
    assert_eq!(day["cost_nanousd"], 2 * cost);
}
