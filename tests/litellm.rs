//! BluesMinds in front of a real LiteLLM proxy (`litellm[proxy]` from PyPI,
//! see `common::litellm`), configured as the README's "LiteLLM behind
//! BluesMinds" says (tests/litellm/): a client talks to the gateway, the
//! gateway to LiteLLM with LiteLLM's master key, and LiteLLM answers from its
//! `mock_response` models or passes on to a fake OpenAI provider.

mod common;

use std::path::Path;
use std::time::Duration;

use common::litellm::{self, LiteLlm, MASTER_KEY, PROVIDER_KEY};
use common::{gateway, Backend, Gateway, Poll, SseReader};
use serde_json::{json, Value};

const ADMIN_TOKEN: &str = "admin-token-for-litellm-tests-0123";

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// A gateway whose pools are tests/litellm/gateway.yaml with its backend at
/// `litellm`, the master key in the variable the file names, and `extra`
/// backends appended to the pool.
async fn gateway_for(litellm: &LiteLlm, extra: Vec<Backend<'static>>) -> Gateway {
    let pools =
        repo_file("tests/litellm/gateway.yaml").replace("http://127.0.0.1:4000", &litellm.url);
    let mut b = gateway()
        .pools(&pools)
        .env("LITELLM_MASTER_KEY", MASTER_KEY)
        .env("BM_ADMIN_TOKEN", ADMIN_TOKEN)
        .yaml("admin:\n  token_env: BM_ADMIN_TOKEN\n");
    for backend in extra {
        b = b.backend(backend);
    }
    b.start().await
}

async fn post(gw: &Gateway, key: &str, path: &str, body: Value) -> reqwest::Response {
    gw.post_json(key, path, &body).await
}

async fn json_of(resp: reqwest::Response) -> Value {
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// `(prompt_tokens, completion_tokens)` of a `usage` object.
fn tokens(usage: &Value) -> (i64, i64) {
    (
        usage["prompt_tokens"].as_i64().unwrap(),
        usage["completion_tokens"].as_i64().unwrap(),
    )
}

fn messages(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

#[tokio::test]
async fn chat_completions_and_embeddings_from_litellm_are_answered_and_recorded() {
    let shared = litellm::shared();
    let gw = gateway_for(&shared.litellm, Vec::new()).await;
    let key = gw.create_key("litellm", &[]);

    let resp = post(
        &gw,
        &key,
        "/v1/chat/completions",
        json!({"model": "mock-chat", "messages": messages("Say hello")}),
    )
    .await;
    assert!(resp.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .starts_with("req_"));
    // LiteLLM's spend and routing headers stay at the gateway.
    assert!(
        !resp
            .headers()
            .keys()
            .any(|h| h.as_str().starts_with("x-litellm")),
        "{:?}",
        resp.headers()
    );
    let chat = json_of(resp).await;
    assert_eq!(
        chat["choices"][0]["message"]["content"],
        "Hello from LiteLLM"
    );
    assert_eq!(chat["model"], "mock-chat");

    let completion = json_of(
        post(
            &gw,
            &key,
            "/v1/completions",
            json!({"model": "mock-chat", "prompt": "Say hello"}),
        )
        .await,
    )
    .await;
    assert_eq!(completion["choices"][0]["text"], "Hello from LiteLLM");

    let embedding = json_of(
        post(
            &gw,
            &key,
            "/v1/embeddings",
            json!({"model": "mock-embed", "input": "hello world"}),
        )
        .await,
    )
    .await;
    assert_eq!(embedding["data"][0]["embedding"], json!([0.25, -0.5, 0.75]));

    // One record each, with the tokens LiteLLM reported and LiteLLM as backend.
    let rows = gw.wait_usage_rows(3).await;
    let seen: Vec<(&str, &str, (i64, i64))> = rows
        .iter()
        .map(|r| {
            assert_eq!(
                (r.status, r.usage_source.as_str()),
                (200, "upstream"),
                "{r:?}"
            );
            assert_eq!(r.backend.as_deref(), Some(shared.litellm.url.as_str()));
            (
                r.endpoint.as_str(),
                r.model.as_deref().unwrap(),
                (r.prompt_tokens, r.completion_tokens),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("chat.completions", "mock-chat", tokens(&chat["usage"])),
            ("completions", "mock-chat", tokens(&completion["usage"])),
            (
                "embeddings",
                "mock-embed",
                (embedding["usage"]["prompt_tokens"].as_i64().unwrap(), 0)
            ),
        ]
    );
    // The key sees the same in the usage API.
    let models = common::get_json(&format!("{}/api/usage/models", gw.side), &key).await;
    let mut by_model: Vec<(String, i64)> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["group"].as_str().unwrap().to_string(),
                m["requests"].as_i64().unwrap(),
            )
        })
        .collect();
    by_model.sort();
    assert_eq!(
        by_model,
        [("mock-chat".to_string(), 2), ("mock-embed".to_string(), 1)]
    );
}

#[tokio::test]
async fn streams_from_litellm_are_counted_from_its_usage_chunk() {
    let shared = litellm::shared();
    let gw = gateway_for(&shared.litellm, Vec::new()).await;
    let key = gw.create_key("litellm-stream", &[]);
    let stream = |include_usage: bool| {
        let mut body =
            json!({"model": "mock-chat", "stream": true, "messages": messages("Say hello")});
        if include_usage {
            body["stream_options"] = json!({"include_usage": true});
        }
        post(&gw, &key, "/v1/chat/completions", body)
    };

    // The client did not ask for usage: the gateway asks LiteLLM for it, counts
    // it, and the client gets the stream it asked for, without the usage chunk.
    let resp = stream(false).await;
    assert_eq!(resp.status(), 200);
    let events = SseReader::new(resp).collect().await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let mut text = String::new();
    for e in &events[..events.len() - 1] {
        let chunk: Value = serde_json::from_str(e).unwrap();
        assert!(chunk.get("usage").is_none_or(Value::is_null), "{e}");
        text.push_str(
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or(""),
        );
    }
    assert_eq!(text, "Hello from LiteLLM");

    // Asked for: the client sees LiteLLM's usage chunk.
    let events = SseReader::new(stream(true).await).collect().await;
    let usage_chunk: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    let reported = tokens(&usage_chunk["usage"]);
    assert!(reported.1 > 0, "{usage_chunk}");

    // Both are recorded with LiteLLM's count (the same request twice).
    let rows = gw.wait_usage_rows(2).await;
    for r in &rows {
        assert!(r.stream);
        assert_eq!(
            (r.status, r.usage_source.as_str()),
            (200, "upstream"),
            "{r:?}"
        );
        assert_eq!((r.prompt_tokens, r.completion_tokens), reported, "{r:?}");
    }
}

/// LiteLLM's `openai/` provider with an `api_base`: the request goes client ->
/// gateway -> LiteLLM -> an OpenAI-compatible server, each hop with its own key.
#[tokio::test]
async fn litellm_passes_requests_on_to_its_provider() {
    let shared = litellm::shared();
    let gw = gateway_for(&shared.litellm, Vec::new()).await;
    let key = gw.create_key("litellm-provider", &[]);
    // The provider is shared by this binary's tests: find this test's requests
    // by their text. Its usage: one token per word, plus 3 per message.
    let words = "relay this through two proxies please";
    let prompt_tokens = 6 + 3;
    for stream in [false, true] {
        let resp = post(
            &gw,
            &key,
            "/v1/chat/completions",
            json!({"model": "fake-gpt", "stream": stream, "messages": messages(words)}),
        )
        .await;
        assert_eq!(resp.status(), 200);
        let text = if stream {
            let events = SseReader::new(resp).collect().await;
            events
                .iter()
                .filter_map(|e| serde_json::from_str::<Value>(e).ok())
                .filter_map(|c| {
                    c["choices"][0]["delta"]["content"]
                        .as_str()
                        .map(String::from)
                })
                .collect::<String>()
        } else {
            let v: Value = resp.json().await.unwrap();
            v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(text, "Hello from the fake upstream");
    }
    let ours: Vec<_> = shared
        .provider
        .requests()
        .into_iter()
        .filter(|r| String::from_utf8_lossy(&r.body).contains(words))
        .collect();
    assert_eq!(ours.len(), 2);
    for r in &ours {
        assert_eq!(r.path, "/v1/chat/completions");
        // LiteLLM's own provider key, neither the master key nor the client's.
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {PROVIDER_KEY}").as_str())
        );
    }
    let rows = gw.wait_usage_rows(2).await;
    for r in &rows {
        assert_eq!(r.model.as_deref(), Some("fake-gpt"));
        assert_eq!(
            (r.status, r.usage_source.as_str()),
            (200, "upstream"),
            "{r:?}"
        );
        assert_eq!(
            (r.prompt_tokens, r.completion_tokens),
            (prompt_tokens, 5),
            "{r:?}"
        );
    }
}

/// The backend key is LiteLLM's master key: without it LiteLLM refuses with
/// 401, which the client gets as 502 `upstream_auth_error` (the gateway's key
/// was refused, not the client's).
#[tokio::test]
async fn litellm_refuses_a_gateway_without_its_master_key() {
    let shared = litellm::shared();
    let pools = repo_file("tests/litellm/gateway.yaml")
        .replace("http://127.0.0.1:4000", &shared.litellm.url)
        .replace("        api_key_env: LITELLM_MASTER_KEY\n", "");
    let gw = gateway().pools(&pools).start().await;
    let key = gw.create_key("no-master-key", &[]);
    let resp = post(
        &gw,
        &key,
        "/v1/chat/completions",
        json!({"model": "mock-chat", "messages": messages("Say hello")}),
    )
    .await;
    let e = common::error_of(resp).await;
    assert_eq!(e.status_and_code(), (502, "upstream_auth_error"), "{e:?}");
    let rows = gw.wait_usage_rows(1).await;
    assert_eq!(rows[0].status, 502);
    assert_eq!(rows[0].error_code.as_deref(), Some("upstream_auth_error"));
}

/// Two LiteLLM replicas; one is killed. No request fails, the health checks
/// on `/health/liveliness` take the dead one out and keep the live one in.
#[tokio::test]
async fn failover_from_a_dead_litellm_to_a_live_one() {
    let shared = litellm::shared();
    let mut doomed = LiteLlm::start(&format!("{}/v1", shared.provider.url())).await;
    let gw = gateway_for(
        &shared.litellm,
        vec![Backend {
            api_key_env: Some("LITELLM_MASTER_KEY"),
            ..Backend::new(doomed.url.clone())
        }],
    )
    .await;
    let key = gw.create_key("litellm-failover", &[]);
    let chat = || async {
        let resp = post(
            &gw,
            &key,
            "/v1/chat/completions",
            json!({"model": "mock-chat", "messages": messages("Say hello")}),
        )
        .await;
        let v = json_of(resp).await;
        assert_eq!(v["choices"][0]["message"]["content"], "Hello from LiteLLM");
    };
    for _ in 0..4 {
        chat().await;
    }
    let rows = gw.wait_usage_rows(4).await;
    let served_by = |url: &str| {
        rows.iter()
            .filter(|r| r.backend.as_deref() == Some(url))
            .count()
    };
    assert!(
        served_by(&shared.litellm.url) > 0 && served_by(&doomed.url) > 0,
        "{rows:#?}"
    );

    doomed.kill();
    for _ in 0..6 {
        chat().await;
    }
    let rows = gw.wait_usage_rows(10).await;
    for r in &rows[4..] {
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(
            r.backend.as_deref(),
            Some(shared.litellm.url.as_str()),
            "{r:?}"
        );
    }

    let health_url = format!("{}/api/admin/health", gw.side);
    Poll::within(Duration::from_secs(30))
        .every(Duration::from_millis(200))
        .until(
            "the dead LiteLLM to be unhealthy and the live one healthy",
            || async {
                let health = common::get_json(&health_url, ADMIN_TOKEN).await;
                let backends = health["data"][0]["backends"].as_array().unwrap().clone();
                let healthy = |url: &str| {
                    backends
                        .iter()
                        .find(|b| b["url"] == url)
                        .map(|b| b["healthy"].as_bool().unwrap())
                };
                healthy(&shared.litellm.url) == Some(true) && healthy(&doomed.url) == Some(false)
            },
        )
        .await;
}

/// The README shows the configs these tests use, verbatim.
#[test]
fn the_readme_shows_the_configs_the_tests_use() {
    let readme = repo_file("README.md");
    for file in ["tests/litellm/litellm.yaml", "tests/litellm/gateway.yaml"] {
        let text = repo_file(file);
        assert!(
            readme.contains(&text),
            "README.md's \"LiteLLM behind BluesMinds\" must show {file} as it is:\n{text}"
        );
    }
}
