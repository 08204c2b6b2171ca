//! The side app's API end to end: accounts, sessions and CSRF, API keys (with
//! revocation and rotation seen by the proxy at once), and the admin API.

mod common;

use common::{chat_body, error_of, fake, gateway, Backend, Gateway, User};
use fake_upstream::FakeUpstream;
use reqwest::StatusCode;
use serde_json::{json, Value};

const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789";

async fn start(up: &FakeUpstream) -> Gateway {
    gateway()
        .backend(Backend::new(up.url()))
        .env("BM_ADMIN_TOKEN", ADMIN_TOKEN)
        .yaml("admin:\n  token_env: BM_ADMIN_TOKEN\nadmin_servers:\n  allow_private: true\nplans:\n  free: { rpm: 1000 }\ndefault_plan: free\n")
        .start()
        .await
}

#[tokio::test]
async fn accounts_sessions_and_csrf() {
    let up = fake().await;
    let gw = start(&up).await;
    let ann = User::signup(&gw, "Ann@Example.com").await;
    let me: Value = ann.get("/api/auth/me").await.json().await.unwrap();
    assert_eq!(me["email"], "ann@example.com");
    assert_eq!(me["plan"], "free");
    assert_eq!(me["is_admin"], false);

    let http = reqwest::Client::new();
    let signup = |email: &str, password: &str| {
        http.post(format!("{}/api/auth/signup", gw.side))
            .json(&json!({"email": email, "password": password}))
            .send()
    };
    // A taken email is a login attempt, which this wrong password fails.
    assert_eq!(
        error_of(
            signup("ann@example.com", "another long password")
                .await
                .unwrap()
        )
        .await
        .status_and_code(),
        (401, "invalid_credentials")
    );
    assert_eq!(
        error_of(
            signup("not-an-email", "a long enough password")
                .await
                .unwrap()
        )
        .await
        .status,
        400
    );
    assert_eq!(
        error_of(signup("bob@example.com", "short").await.unwrap())
            .await
            .status,
        400
    );
    let malformed = http
        .post(format!("{}/api/auth/signup", gw.side))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(malformed).await.status, 400);

    // A state-changing call with the cookie but without the CSRF token is refused.
    let forged = ann
        .http
        .post(format!("{}/api/auth/logout", gw.side))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(forged).await.status_and_code(),
        (403, "permission_denied")
    );
    let out = ann.post("/api/auth/logout", json!({})).await;
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        error_of(ann.get("/api/auth/me").await)
            .await
            .status_and_code(),
        (401, "not_signed_in")
    );

    // Log back in; wrong passwords are throttled per account.
    let login = |password: &str| {
        ann.http
            .post(format!("{}/api/auth/login", gw.side))
            .json(&json!({"email": "ann@example.com", "password": password}))
            .send()
    };
    assert_eq!(
        login("a long enough password").await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(ann.get("/api/auth/me").await.status(), StatusCode::OK);
    for _ in 0..5 {
        assert_eq!(
            error_of(login("wrong password!").await.unwrap())
                .await
                .status_and_code(),
            (401, "invalid_credentials")
        );
    }
    let locked = login("a long enough password").await.unwrap();
    assert!(locked.headers().contains_key("retry-after"));
    assert_eq!(
        error_of(locked).await.status_and_code(),
        (429, "too_many_attempts")
    );
    // Unknown accounts answer like wrong passwords.
    let unknown = http
        .post(format!("{}/api/auth/login", gw.side))
        .json(&json!({"email": "nobody@example.com", "password": "whatever password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(unknown).await.status_and_code(),
        (401, "invalid_credentials")
    );
}

#[tokio::test]
async fn keys_are_private_and_revocation_and_rotation_reach_the_proxy_at_once() {
    let up = fake().await;
    let gw = start(&up).await;
    let ann = User::signup(&gw, "ann@example.com").await;
    let bob = User::signup(&gw, "bob@example.com").await;

    let forged = ann
        .http
        .post(format!("{}/api/keys", gw.side))
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        error_of(ann.post("/api/keys", json!({"name": ""})).await)
            .await
            .status,
        400
    );
    assert_eq!(
        error_of(ann.post("/api/keys", json!({"name": "x", "rpm": 0})).await)
            .await
            .status,
        400
    );

    let (id, secret) = ann.new_key("laptop").await;
    let listed: Value = ann.get("/api/keys").await.json().await.unwrap();
    let listed_text = listed.to_string();
    assert!(
        !listed_text.contains(&secret),
        "the secret is shown only once"
    );
    assert_eq!(
        listed["data"][0]["display"],
        format!("{}...{}", &secret[..7], &secret[secret.len() - 4..])
    );
    assert_eq!(listed["data"][0]["status"], "active");

    // Bob sees none of Ann's keys and cannot touch them.
    let bobs: Value = bob.get("/api/keys").await.json().await.unwrap();
    assert_eq!(bobs["data"], json!([]));
    assert_eq!(
        bob.send(reqwest::Method::DELETE, &format!("/api/keys/{id}"), None)
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        bob.post(&format!("/api/keys/{id}/rotate"), json!({}))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );

    // The key works on the proxy (and is now cached there).
    assert_eq!(
        gw.chat(&secret, &chat_body("gpt-4o-mini", false))
            .await
            .status(),
        StatusCode::OK
    );

    // Rotation: the new key works; the old one keeps working for the grace period.
    let rotated = ann
        .post(
            &format!("/api/keys/{id}/rotate"),
            json!({"grace_seconds": 600}),
        )
        .await;
    assert_eq!(rotated.status(), StatusCode::CREATED);
    let rotated: Value = rotated.json().await.unwrap();
    let new_secret = rotated["key"].as_str().unwrap().to_string();
    let new_id = rotated["id"].as_i64().unwrap();
    assert_ne!(new_secret, secret);
    assert_eq!(
        gw.chat(&new_secret, &chat_body("gpt-4o-mini", false))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        gw.chat(&secret, &chat_body("gpt-4o-mini", false))
            .await
            .status(),
        StatusCode::OK
    );
    // Rotating with no grace retires the old key at once.
    let again = ann
        .post(
            &format!("/api/keys/{new_id}/rotate"),
            json!({"grace_seconds": 0}),
        )
        .await;
    let newest: Value = again.json().await.unwrap();
    assert_eq!(
        gw.chat(&new_secret, &chat_body("gpt-4o-mini", false))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );

    // Revocation: refused on the very next request, no cache delay.
    let newest_id = newest["id"].as_i64().unwrap();
    let newest_secret = newest["key"].as_str().unwrap();
    assert_eq!(
        gw.chat(newest_secret, &chat_body("gpt-4o-mini", false))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        ann.send(
            reqwest::Method::DELETE,
            &format!("/api/keys/{newest_id}"),
            None
        )
        .await
        .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        gw.chat(newest_secret, &chat_body("gpt-4o-mini", false))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        ann.send(
            reqwest::Method::DELETE,
            &format!("/api/keys/{newest_id}"),
            None
        )
        .await
        .status(),
        StatusCode::NOT_FOUND
    );

    // The user's usage API sees the user's own requests.
    // 6 proxied requests: 4 admitted with Ann's keys, 2 refused (unknown to the gateway).
    gw.wait_usage_rows(6).await;
    let usage: Value = ann.get("/api/usage/daily").await.json().await.unwrap();
    assert_eq!(usage["data"][0]["requests"], 4);
    let bob_usage: Value = bob.get("/api/usage/daily").await.json().await.unwrap();
    assert_eq!(bob_usage["data"], json!([]));
}

#[tokio::test]
async fn admin_api_needs_an_admin_and_manages_servers_and_users() {
    let up = fake().await;
    let extra = fake().await;
    let gw = start(&up).await;
    let ann = User::signup(&gw, "ann@example.com").await;
    let boss = User::signup_admin(&gw, "boss@example.com").await;
    let (_, ann_key) = ann.new_key("k").await;

    for path in [
        "/api/admin/users",
        "/api/admin/health",
        "/api/admin/servers",
    ] {
        assert_eq!(
            error_of(ann.get(path).await).await.status_and_code(),
            (403, "permission_denied"),
            "{path}"
        );
        let anonymous = reqwest::get(format!("{}{path}", gw.side)).await.unwrap();
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    // An API key is not an admin either.
    let by_key = reqwest::Client::new()
        .get(format!("{}/api/admin/users", gw.side))
        .bearer_auth(&ann_key)
        .send()
        .await
        .unwrap();
    assert_eq!(by_key.status(), StatusCode::FORBIDDEN);

    // A server added through the API serves its model at once, no restart.
    assert_eq!(
        gw.chat(&ann_key, &chat_body("extra-model", false))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    let bad = boss
        .post(
            "/api/admin/servers",
            json!({"pool": "extra", "url": "ftp://x", "models": ["extra-model"]}),
        )
        .await;
    assert_eq!(error_of(bad).await.status, 400);
    let bad = boss.post("/api/admin/servers", json!({"pool": "extra", "url": extra.url(), "models": ["extra-model"], "api_key_env": "SURELY_NOT_SET_ANYWHERE"})).await;
    assert_eq!(error_of(bad).await.status, 400);
    let added = boss
        .post(
            "/api/admin/servers",
            json!({"pool": "extra", "url": extra.url(), "models": ["extra-model"]}),
        )
        .await;
    assert_eq!(added.status(), StatusCode::CREATED);
    let server_id = added.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    assert_eq!(
        gw.chat(&ann_key, &chat_body("extra-model", false))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(extra.request_count(), 1);

    let health: Value = boss.get("/api/admin/health").await.json().await.unwrap();
    let pools: Vec<&str> = health["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(pools, ["main", "extra"]);
    assert_eq!(health["data"][1]["backends"][0]["healthy"], true);

    // The admin token works too; deleting the server takes the model away again.
    let admin = reqwest::Client::new();
    let listed = common::get_json(&format!("{}/api/admin/servers", gw.side), ADMIN_TOKEN).await;
    assert_eq!(listed["data"][0]["url"], extra.url());
    let deleted = admin
        .delete(format!("{}/api/admin/servers/{server_id}", gw.side))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        gw.chat(&ann_key, &chat_body("extra-model", false))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );

    // Users, with plan and this month's usage; disabling one stops their keys at once.
    gw.wait_usage_rows(3).await;
    let users: Value = boss.get("/api/admin/users").await.json().await.unwrap();
    let ann_row = users["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == "ann@example.com")
        .unwrap()
        .clone();
    assert_eq!(ann_row["plan"], "free");
    assert_eq!(ann_row["month_tokens"], 13);
    assert_eq!(
        users["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["email"] == "boss@example.com")
            .unwrap()["is_admin"],
        true
    );
    assert_eq!(
        gw.chat(&ann_key, &chat_body("gpt-4o-mini", false))
            .await
            .status(),
        StatusCode::OK
    );
    let disabled = boss
        .post(&format!("/api/admin/users/{}/disable", ann.id), json!({}))
        .await;
    assert_eq!(disabled.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        gw.chat(&ann_key, &chat_body("gpt-4o-mini", false))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        ann.get("/api/auth/me").await.status(),
        StatusCode::UNAUTHORIZED,
        "sessions end too"
    );
    let enabled = boss
        .post(&format!("/api/admin/users/{}/enable", ann.id), json!({}))
        .await;
    assert_eq!(enabled.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        gw.chat(&ann_key, &chat_body("gpt-4o-mini", false))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        boss.post("/api/admin/users/9999/disable", json!({}))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
}
