//! The proxy's client-facing behaviour, end to end: requests and streams pass
//! through with the backend's key, embeddings/completions/models, per-key model
//! lists, OpenAI-shaped errors for bad requests, large bodies and upstream
//! timeouts. The real binary, fake upstreams, a real HTTP client.
//!
//! Elsewhere: which backend serves (failover, health checks, priorities) in
//! `upstreams.rs`; start-up, config errors and SIGTERM in `lifecycle.rs`; how
//! tokens are counted without upstream usage in `usage_counting.rs`.

mod common;

use std::time::Duration;

use common::{chat_body, client, error_of, fake, gateway, Backend, SseReader};
use fake_upstream::{FakeConfig, FakeUpstream, Mode};
use serde_json::{json, Value};

#[tokio::test]
async fn chat_is_proxied_with_the_upstream_key_and_usage_recorded() {
    let up = FakeUpstream::start(FakeConfig {
        api_key: Some("sk-upstream-secret".into()),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let gw = gateway()
        .backend(Backend {
            api_key_env: Some("UPSTREAM_KEY"),
            ..Backend::new(up.url())
        })
        .env("UPSTREAM_KEY", "sk-upstream-secret")
        .start()
        .await;
    let key = gw.create_key("test", &[]);

    let resp = gw.chat(&key, &chat_body("gpt-4o-mini", false)).await;
    assert_eq!(resp.status(), 200);
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Hello from the fake upstream"
    );
    assert_eq!(body["usage"]["prompt_tokens"], 8);
    assert_eq!(body["usage"]["completion_tokens"], 5);

    // The upstream saw its own key, never the client's, on the path it expects.
    let seen = &up.requests()[0];
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(
        seen.header("authorization"),
        Some("Bearer sk-upstream-secret")
    );
    assert!(seen.headers.iter().all(|(_, v)| !v.contains(&key)));
    assert_eq!(seen.json().unwrap(), chat_body("gpt-4o-mini", false));

    let rows = gw.wait_usage_rows(1).await;
    let r = &rows[0];
    assert_eq!(r.request_id, request_id);
    assert_eq!(r.endpoint, "chat.completions");
    assert_eq!(r.model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(r.backend.as_deref(), Some(up.url().as_str()));
    assert_eq!((r.status, r.stream), (200, false));
    assert_eq!((r.prompt_tokens, r.completion_tokens), (8, 5));
    assert_eq!(r.usage_source, "upstream");
    // 8 * 0.15 + 5 * 0.60 USD per 1M tokens, in nano-USD.
    assert_eq!(r.cost_nanousd, 8 * 150 + 5 * 600);
    assert!(r.key_id.is_some());
    assert!(r.ttfb_ms.is_some());
}

#[tokio::test]
async fn streaming_adds_include_usage_upstream_but_hides_its_chunk() {
    let up = fake().await;
    let gw = gateway().backend(Backend::new(up.url())).start().await;
    let key = gw.create_key("test", &[]);

    let resp = gw.chat(&key, &chat_body("gpt-4o-mini", true)).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let events = SseReader::new(resp).collect().await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    // role chunk, 5 content chunks, finish chunk; no usage-only chunk.
    assert_eq!(chunks.len(), 7, "{events:#?}");
    assert!(chunks
        .iter()
        .all(|c| !c["choices"].as_array().unwrap().is_empty()));
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello from the fake upstream");

    let sent = up.requests()[0].json().unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true);

    let rows = gw.wait_usage_rows(1).await;
    assert_eq!((rows[0].prompt_tokens, rows[0].completion_tokens), (8, 5));
    assert!(rows[0].stream);
    assert_eq!(rows[0].usage_source, "upstream");
}

#[tokio::test]
async fn a_client_asking_for_usage_gets_the_usage_chunk() {
    let up = fake().await;
    let gw = gateway().backend(Backend::new(up.url())).start().await;
    let key = gw.create_key("test", &[]);
    let mut body = chat_body("gpt-4o-mini", true);
    body["stream_options"] = json!({"include_usage": true});
    let resp = gw.chat(&key, &body).await;
    let events = SseReader::new(resp).collect().await;
    let usage_chunk: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 5);
    // The client's body went upstream byte for byte.
    assert_eq!(up.requests()[0].json().unwrap(), body);
}

#[tokio::test]
async fn stream_chunks_reach_the_client_as_they_are_produced() {
    let up = FakeUpstream::start(FakeConfig {
        chunks: 3,
        // Each content chunk comes 20 s after the previous one: a gateway that
        // buffered the response would hold even the first event for a minute.
        chunk_delay: Duration::from_secs(20),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    // After the client leaves the gateway reads on for the usage report, for
    // a second here: far less than the upstream's 20 s of silence.
    let gw = gateway()
        .backend(Backend::new(up.url()))
        .usage("abandoned_read_secs: 1")
        .start()
        .await;
    let key = gw.create_key("test", &[]);
    let resp = gw.chat(&key, &chat_body("gpt-4o-mini", true)).await;
    assert_eq!(resp.status(), 200);
    let mut sse = SseReader::new(resp);
    let first = tokio::time::timeout(Duration::from_secs(10), sse.next())
        .await
        .expect("the first event must arrive long before the upstream finishes")
        .unwrap();
    let first: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    // The client gives up mid-stream: the request is still recorded once.
    drop(sse);
    let rows = gw.wait_usage_rows(1).await;
    assert_eq!(rows[0].status, 200);
    assert!(rows[0].stream);
    assert_eq!(rows[0].error_code.as_deref(), Some("client_closed_request"));
    // Cut a second after the client left, before the next chunk: the
    // estimate (no max_tokens: the body's bytes / 4) is billed.
    assert_eq!(rows[0].usage_source, "estimate", "{:?}", rows[0]);
    assert!(rows[0].latency_ms < 15_000, "{:?}", rows[0]);
}

#[tokio::test]
async fn embeddings_completions_and_models() {
    let up = fake().await;
    let gw = gateway().backend(Backend::new(up.url())).start().await;
    let key = gw.create_key("test", &[]);
    let c = client();

    let resp = c
        .post(gw.url("/v1/embeddings"))
        .bearer_auth(&key)
        .json(&json!({"model": "text-embedding-3-small", "input": ["one two", "three"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    assert_eq!(body["usage"]["prompt_tokens"], 3);

    let resp = c
        .post(gw.url("/v1/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Once upon a time"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "text_completion");

    let resp = c
        .get(gw.url("/v1/models"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "gpt-4o-mini",
            "text-embedding-3-small",
            "gpt-3.5-turbo-instruct"
        ]
    );

    let resp = c
        .get(gw.url("/v1/models/gpt-4o-mini"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        (body["id"].as_str(), body["object"].as_str()),
        (Some("gpt-4o-mini"), Some("model"))
    );

    let rows = gw.wait_usage_rows(4).await;
    let endpoints: Vec<&str> = rows.iter().map(|r| r.endpoint.as_str()).collect();
    assert_eq!(
        endpoints,
        [
            "embeddings",
            "completions",
            "models.list",
            "models.retrieve"
        ]
    );
    assert_eq!(rows[0].prompt_tokens, 3);
    // 3 tokens at $0.02 per 1M.
    assert_eq!(rows[0].cost_nanousd, 60);
}

#[tokio::test]
async fn a_key_with_a_model_allow_list_sees_only_those_models() {
    let up = fake().await;
    let gw = gateway().backend(Backend::new(up.url())).start().await;
    let key = gw.create_key("limited", &["--models", "gpt-4o-mini"]);
    let c = client();
    let body: Value = c
        .get(gw.url("/v1/models"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["data"].as_array().unwrap().len(), 1);
    let resp = c
        .post(gw.url("/v1/embeddings"))
        .bearer_auth(&key)
        .json(&json!({"model": "text-embedding-3-small", "input": "x"}))
        .send()
        .await
        .unwrap();
    let e = error_of(resp).await;
    assert_eq!(e.status_and_code(), (404, "model_not_found"));
    assert_eq!(up.request_count(), 0);
}

#[tokio::test]
async fn bad_requests_get_openai_errors_and_never_reach_the_upstream() {
    let up = fake().await;
    let gw = gateway()
        .backend(Backend::new(up.url()))
        .yaml("") // defaults
        .start()
        .await;
    let key = gw.create_key("test", &[]);
    let c = client();
    let chat = gw.url("/v1/chat/completions");

    let e = error_of(
        c.post(&chat)
            .json(&chat_body("gpt-4o-mini", false))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(e.status_and_code(), (401, "invalid_api_key"));

    let wrong = format!("bm_{}", "x".repeat(43));
    let e = error_of(
        c.post(&chat)
            .bearer_auth(&wrong)
            .json(&chat_body("gpt-4o-mini", false))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(e.status_and_code(), (401, "invalid_api_key"));
    assert!(!e.message().contains(&wrong), "the key is redacted");

    let e = error_of(
        c.post(&chat)
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body("{\"model\": ")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((e.status, e.kind()), (400, "invalid_request_error"));

    let e = error_of(
        c.post(&chat)
            .bearer_auth(&key)
            .json(&json!({"messages": []}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((e.status, e.param()), (400, Some("model")));

    let e = error_of(
        c.post(&chat)
            .bearer_auth(&key)
            .json(&chat_body("no-such-model", false))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(e.status_and_code(), (404, "model_not_found"));

    let huge = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x".repeat(5 * 1024 * 1024)}]});
    let e = error_of(
        c.post(&chat)
            .bearer_auth(&key)
            .json(&huge)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(e.status_and_code(), (413, "request_too_large"));

    let e = error_of(
        c.post(gw.url("/v1/nothing"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(e.status_and_code(), (404, "unknown_url"));

    let e = error_of(c.get(&chat).bearer_auth(&key).send().await.unwrap()).await;
    assert_eq!(e.status, 405);

    assert_eq!(up.request_count(), 0, "no bad request reached the upstream");
    let rows = gw.wait_usage_rows(8).await;
    let statuses: Vec<i64> = rows.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [401, 401, 400, 400, 404, 413, 404, 405]);
    assert!(rows
        .iter()
        .all(|r| r.error_code.is_some() && r.prompt_tokens == 0));
}

#[tokio::test]
async fn bodies_larger_than_pingoras_retry_buffer_arrive_intact() {
    let up = fake().await;
    let gw = gateway().backend(Backend::new(up.url())).start().await;
    let key = gw.create_key("test", &[]);
    // 1 MiB of prompt, far past Pingora's stock 64 KiB replay buffer.
    let words = "lorem ipsum ".repeat(87_382);
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": words}]});
    let resp = gw.chat(&key, &body).await;
    assert_eq!(resp.status(), 200);
    let got: Value = resp.json().await.unwrap();
    assert_eq!(got["usage"]["prompt_tokens"], 87_382 * 2 + 3);
    assert_eq!(up.requests()[0].json().unwrap(), body);
}

#[tokio::test]
async fn a_hanging_upstream_times_out_with_504() {
    let up = fake().await;
    up.set_mode(Mode::Hang);
    let gw = gateway()
        .server("read_timeout_secs: 1")
        .backend(Backend::new(up.url()))
        .start()
        .await;
    let key = gw.create_key("test", &[]);
    let resp = gw.chat(&key, &chat_body("gpt-4o-mini", false)).await;
    let e = error_of(resp).await;
    assert_eq!(e.status_and_code(), (504, "upstream_timeout"));
    let rows = gw.wait_usage_rows(1).await;
    assert_eq!(rows[0].status, 504);
}
