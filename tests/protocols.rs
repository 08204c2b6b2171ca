//! The protocol layer: each endpoint authenticates, refuses and routes in its
//! own protocol's terms (Anthropic's Messages API beside OpenAI's).

mod common;

use common::{client, fake, gateway, Backend};
use serde_json::{json, Value};

async fn post(
    gw: &common::Gateway,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = client().post(gw.url(path)).json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("the gateway answers");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.json().await.expect("a JSON answer");
    (status, headers, body)
}

fn message(model: &str) -> Value {
    json!({
        "model": model,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "Say hi in three words"}]
    })
}

/// Anthropic's SDKs send the key in `x-api-key` and map errors by status and
/// `error.type` (<https://docs.anthropic.com/en/api/errors>).
#[tokio::test]
async fn anthropic_paths_take_x_api_key_and_refuse_in_anthropics_shape() {
    let up = fake().await;
    let gw = gateway().backend(Backend::new(up.url())).start().await;
    let key = gw.create_key("anthropic", &[]);
    let version = ("anthropic-version", "2023-06-01");

    let (status, headers, body) =
        post(&gw, "/v1/messages", &[version], &message("gpt-4o-mini")).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "authentication_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("x-api-key"),
        "{body}"
    );
    let request_id = headers["request-id"].to_str().unwrap();
    assert_eq!(body["request_id"], request_id);

    let wrong = "bm_0000000000000000000000000000000000000000000";
    let (status, _, body) = post(
        &gw,
        "/v1/messages",
        &[("x-api-key", wrong), version],
        &message("gpt-4o-mini"),
    )
    .await;
    assert_eq!(
        (status, body["error"]["type"].as_str()),
        (401, Some("authentication_error")),
        "{body}"
    );

    let (status, _, body) = post(
        &gw,
        "/v1/messages",
        &[("x-api-key", &key), version],
        &message("no-such-model"),
    )
    .await;
    assert_eq!(
        (status, body["error"]["type"].as_str()),
        (404, Some("not_found_error")),
        "{body}"
    );
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no-such-model"));

    // The same key by `Authorization: Bearer` works too (Claude Code's ANTHROPIC_AUTH_TOKEN).
    let bearer = format!("Bearer {key}");
    let (status, _, body) = post(
        &gw,
        "/v1/messages",
        &[("authorization", &bearer), version],
        &message("no-such-model"),
    )
    .await;
    assert_eq!(status, 404, "{body}");

    // OpenAI's paths keep OpenAI's shape, and its way of sending the key.
    let (status, _, body) = post(
        &gw,
        "/v1/chat/completions",
        &[("x-api-key", &key)],
        &common::chat_body("gpt-4o-mini", false),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "invalid_api_key");

    // Every request has its record, refusals included.
    let rows = gw.wait_usage_rows(5).await;
    let seen: Vec<(&str, i64)> = rows
        .iter()
        .map(|r| (r.endpoint.as_str(), r.status))
        .collect();
    assert_eq!(
        seen,
        [
            ("messages", 401),
            ("messages", 401),
            ("messages", 404),
            ("messages", 404),
            ("chat.completions", 401)
        ]
    );
}

/// A pool of OpenAI backends has no Anthropic server to count tokens: the
/// gateway answers `count_tokens` itself, free, as Anthropic does.
#[tokio::test]
async fn count_tokens_is_answered_by_the_gateway_when_no_backend_speaks_anthropic() {
    let up = fake().await;
    let gw = gateway().backend(Backend::new(up.url())).start().await;
    let key = gw.create_key("count", &[]);
    let (status, _, body) = post(
        &gw,
        "/v1/messages/count_tokens",
        &[("x-api-key", &key), ("anthropic-version", "2023-06-01")],
        &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "one two three four five"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let tokens = body["input_tokens"].as_u64().expect("input_tokens");
    assert!((5..40).contains(&tokens), "{body}");
    assert_eq!(up.request_count(), 0, "nothing went upstream");
    let rows = gw.wait_usage_rows(1).await;
    assert_eq!(rows[0].endpoint, "messages.count_tokens");
    assert_eq!(
        (rows[0].status, rows[0].prompt_tokens, rows[0].cost_nanousd),
        (200, 0, 0)
    );
}

/// Chat Completions cannot go to a backend that speaks only Anthropic's API:
/// the client is told where the model is served instead of a backend's 404.
#[tokio::test]
async fn a_model_behind_anthropic_backends_is_refused_on_openai_paths() {
    let up = fake().await;
    let gw = gateway()
        .pool("protocol: anthropic")
        .backend(Backend::new(up.url()))
        .start()
        .await;
    let key = gw.create_key("chat", &[]);
    for path in ["/v1/chat/completions", "/v1/responses"] {
        let (status, _, body) = post(
            &gw,
            path,
            &[("authorization", &format!("Bearer {key}"))],
            &json!({"model": "gpt-4o-mini", "messages": [], "input": "hi"}),
        )
        .await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["code"], "unsupported_endpoint", "{path}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(path) && message.contains("/v1/messages"),
            "{message}"
        );
    }
    assert_eq!(up.request_count(), 0);
}
