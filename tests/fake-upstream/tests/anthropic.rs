//! The fake's Anthropic Messages API over real HTTP: as strict as the real
//! one about headers and `max_tokens`, and its answers in the real shapes.

use std::time::Duration;

use fake_upstream::{FakeConfig, FakeUpstream, Mode, Provider};
use serde_json::{json, Value};

const KEY: &str = "ant-test-key";

async fn start() -> FakeUpstream {
    FakeUpstream::start(FakeConfig {
        api_key: Some(KEY.into()),
        provider: Provider::Anthropic {
            version: "2023-06-01".into(),
        },
        cached_tokens: 4,
        cache_creation_tokens: 2,
        ..FakeConfig::default()
    })
    .await
    .unwrap()
}

async fn post(up: &FakeUpstream, path: &str, body: &Value, auth: bool) -> reqwest::Response {
    let mut req = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
        .post(format!("{}{path}", up.url()))
        .json(body);
    if auth {
        req = req
            .header("x-api-key", KEY)
            .header("anthropic-version", "2023-06-01");
    }
    req.send().await.unwrap()
}

fn message(stream: bool) -> Value {
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "system": [{"type": "text", "text": "Be terse.", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Say hello please"}]}],
        "stream": stream,
    })
}

/// 2 system words + 3 + 3 message words.
const PROMPT: u64 = 2 + 3 + 3;

/// (event name, data) of an Anthropic stream.
async fn events(resp: reqwest::Response) -> Vec<(String, Value)> {
    let text = resp.text().await.unwrap();
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (name, data) = e.split_once('\n').unwrap();
            (
                name.strip_prefix("event: ").unwrap().to_owned(),
                serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn refuses_like_anthropic() {
    let up = start().await;
    let resp = post(&up, "/v1/messages", &message(false), false).await;
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "authentication_error");

    let mut body = message(false);
    body.as_object_mut().unwrap().remove("max_tokens");
    let resp = post(&up, "/v1/messages", &body, true).await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        v,
        json!({"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"}})
    );

    up.set_mode(Mode::RateLimited {
        retry_after_secs: 7,
    });
    let resp = post(&up, "/v1/messages", &message(false), true).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "7");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error");
    up.set_mode(Mode::Fail(529));
    let v: Value = post(&up, "/v1/messages", &message(false), true)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["error"]["type"], "overloaded_error");

    // An OpenAI fake has no Messages API.
    let openai = FakeUpstream::start(FakeConfig::default()).await.unwrap();
    assert_eq!(
        post(&openai, "/v1/messages", &message(false), true)
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn answers_a_message_with_cache_usage() {
    let up = start().await;
    let resp = post(&up, "/v1/messages", &message(false), true).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(
        v["content"],
        json!([{"type": "text", "text": "Hello from the fake upstream"}])
    );
    assert_eq!(v["stop_reason"], "end_turn");
    let u = &v["usage"];
    assert_eq!(
        (
            &u["input_tokens"],
            &u["cache_read_input_tokens"],
            &u["cache_creation_input_tokens"],
            &u["output_tokens"]
        ),
        (&json!(PROMPT - 6), &json!(4), &json!(2), &json!(5))
    );

    let resp = post(
        &up,
        "/v1/messages/count_tokens",
        &json!({"model": "claude-sonnet-4-5", "messages": message(false)["messages"], "system": "Be terse."}),
        true,
    )
    .await;
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"input_tokens": PROMPT})
    );
}

#[tokio::test]
async fn streams_the_real_event_sequence() {
    let up = start().await;
    let mut body = message(true);
    body["max_tokens"] = json!(3);
    let resp = post(&up, "/v1/messages", &body, true).await;
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let ev = events(resp).await;
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    for (name, data) in &ev {
        assert_eq!(data["type"], name.as_str());
    }
    assert_eq!(ev[0].1["message"]["usage"]["output_tokens"], 1);
    let end = &ev[7].1;
    assert_eq!(end["delta"]["stop_reason"], "max_tokens");
    assert_eq!(end["usage"]["output_tokens"], 3);
    assert_eq!(end["usage"]["cache_read_input_tokens"], 4);
    assert_eq!(up.completed_streams(), 1);
}

#[tokio::test]
async fn calls_a_tool_when_asked() {
    let up = start().await;
    let mut body = message(true);
    body["tools"] = json!([{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]);
    body["messages"] = json!([{"role": "user", "content": "get_weather for Paris"}]);
    let ev = events(post(&up, "/v1/messages", &body, true).await).await;
    assert_eq!(ev[1].1["content_block"]["type"], "tool_use");
    assert_eq!(ev[1].1["content_block"]["name"], "get_weather");
    let input: String = ev
        .iter()
        .filter(|(_, d)| d["delta"]["type"] == "input_json_delta")
        .map(|(_, d)| d["delta"]["partial_json"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&input).unwrap(),
        json!({"city": "fake-city"})
    );
    let end = &ev[ev.len() - 2].1;
    assert_eq!(end["delta"]["stop_reason"], "tool_use");
    assert_eq!(end["usage"]["output_tokens"], 2);

    body["stream"] = json!(false);
    let v: Value = post(&up, "/v1/messages", &body, true)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["content"][0]["type"], "tool_use");
    assert_eq!(v["content"][0]["input"], json!({"city": "fake-city"}));
}
