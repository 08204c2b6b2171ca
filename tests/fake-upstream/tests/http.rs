//! End-to-end tests of the fake upstream over real HTTP (reqwest).

use std::time::{Duration, Instant};

use base64::Engine as _;
use fake_upstream::{FakeConfig, FakeUpstream, Mode};
use futures_util::StreamExt;
use serde_json::{json, Value};

async fn start() -> FakeUpstream {
    FakeUpstream::start(FakeConfig::default()).await.unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn chat_body(stream: bool, include_usage: bool) -> Value {
    let mut body = json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [{"type": "text", "text": "Say hello please"}]}
        ],
        "stream": stream,
    });
    if include_usage {
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

/// 3 + 3 words, plus 3 tokens per message.
const CHAT_PROMPT_TOKENS: u64 = 6 + 2 * 3;

/// Reads an SSE body into its `data:` payloads; `Err` carries the payloads
/// seen before the body failed.
async fn sse_events(resp: reqwest::Response) -> Result<Vec<String>, Vec<String>> {
    let mut buf = String::new();
    let mut events = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => buf.push_str(std::str::from_utf8(&bytes).unwrap()),
            Err(_) => {
                drain_events(&mut buf, &mut events);
                return Err(events);
            }
        }
        drain_events(&mut buf, &mut events);
    }
    assert!(buf.is_empty(), "trailing partial event: {buf:?}");
    Ok(events)
}

fn drain_events(buf: &mut String, events: &mut Vec<String>) {
    while let Some(end) = buf.find("\n\n") {
        let event: String = buf.drain(..end + 2).collect();
        let data = event
            .trim_end()
            .strip_prefix("data: ")
            .expect("every event is a data line");
        events.push(data.to_owned());
    }
}

fn parse(events: &[String]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

#[tokio::test]
async fn non_stream_chat_shape_and_usage() {
    let up = start().await;
    let resp = client()
        .post(format!("{}/v1/chat/completions", up.url()))
        .json(&chat_body(false, false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let v: Value = resp.json().await.unwrap();
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-fake-"));
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "gpt-4o-mini");
    assert!(v["created"].as_u64().unwrap() > 1_700_000_000);
    let choice = &v["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], "Hello from the fake upstream");
    assert_eq!(choice["finish_reason"], "stop");
    assert!(choice["logprobs"].is_null());
    assert_eq!(v["usage"]["prompt_tokens"], CHAT_PROMPT_TOKENS);
    assert_eq!(v["usage"]["completion_tokens"], 5);
    assert_eq!(v["usage"]["total_tokens"], CHAT_PROMPT_TOKENS + 5);

    // The request was recorded as sent.
    let reqs = up.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[0].path, "/v1/chat/completions");
    assert_eq!(reqs[0].header("Content-Type"), Some("application/json"));
    assert_eq!(reqs[0].json().unwrap()["model"], "gpt-4o-mini");
    assert_eq!(up.request_count(), 1);
    up.clear_requests();
    assert_eq!(up.request_count(), 0);
}

#[tokio::test]
async fn max_tokens_truncates_with_length() {
    let up = start().await;
    let mut body = chat_body(false, false);
    body["max_tokens"] = json!(2);
    let v: Value = client()
        .post(format!("{}/v1/chat/completions", up.url()))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from ");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 2);
}

#[tokio::test]
async fn stream_with_include_usage() {
    let up = start().await;
    let resp = client()
        .post(format!("{}/v1/chat/completions", up.url()))
        .json(&chat_body(true, true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let events = sse_events(resp).await.unwrap();
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks = parse(&events);
    // role + 5 content + finish + usage
    assert_eq!(chunks.len(), 8);
    let id = chunks[0]["id"].as_str().unwrap();
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], id);
        assert_eq!(c["model"], "gpt-4o-mini");
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks[1..6]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, "Hello from the fake upstream");
    // Every non-final chunk carries "usage": null, as OpenAI sends it.
    for c in &chunks[..7] {
        assert!(c.as_object().unwrap()["usage"].is_null());
        assert_eq!(c["choices"].as_array().unwrap().len(), 1);
    }
    assert_eq!(chunks[6]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[6]["choices"][0]["delta"], json!({}));
    let usage_chunk = &chunks[7];
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["prompt_tokens"], CHAT_PROMPT_TOKENS);
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 5);
    assert_eq!(usage_chunk["usage"]["total_tokens"], CHAT_PROMPT_TOKENS + 5);
}

#[tokio::test]
async fn stream_without_include_usage() {
    let up = start().await;
    let resp = client()
        .post(format!("{}/v1/chat/completions", up.url()))
        .json(&chat_body(true, false))
        .send()
        .await
        .unwrap();
    let events = sse_events(resp).await.unwrap();
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks = parse(&events);
    assert_eq!(chunks.len(), 7);
    for c in &chunks {
        assert!(c.get("usage").is_none(), "unexpected usage key in {c}");
    }
    assert_eq!(chunks[6]["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn no_usage_mode_suppresses_usage_even_when_asked() {
    let up = start().await;
    up.set_mode(Mode::NoUsage);
    let resp = client()
        .post(format!("{}/v1/chat/completions", up.url()))
        .json(&chat_body(true, true))
        .send()
        .await
        .unwrap();
    let events = sse_events(resp).await.unwrap();
    assert!(events.iter().all(|e| !e.contains("usage")));
    assert_eq!(events.last().unwrap(), "[DONE]");

    let v: Value = client()
        .post(format!("{}/v1/chat/completions", up.url()))
        .json(&chat_body(false, false))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(v.get("usage").is_none());
}

#[tokio::test]
async fn chunk_delay_spreads_events() {
    let delay = Duration::from_millis(40);
    let up = FakeUpstream::start(FakeConfig {
        chunks: 3,
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let started = Instant::now();
    let resp = client()
        .post(format!("{}/v1/chat/completions", up.url()))
        .header(fake_upstream::CHUNK_DELAY_HEADER, "40")
        .json(&chat_body(true, false))
        .send()
        .await
        .unwrap();
    // Record when each event arrives; only lower bounds are asserted, which
    // the server's sleeps guarantee regardless of machine load.
    let mut arrivals = Vec::new();
    let mut buf = String::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        buf.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        let mut events = Vec::new();
        drain_events(&mut buf, &mut events);
        arrivals.extend(events.into_iter().map(|e| (e, started.elapsed())));
    }
    // role, 3 content chunks, finish, [DONE] — in order.
    assert_eq!(arrivals.len(), 6);
    assert_eq!(arrivals[5].0, "[DONE]");
    let contents: Vec<String> = arrivals[1..4]
        .iter()
        .map(|(e, _)| {
            let v: Value = serde_json::from_str(e).unwrap();
            v["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(contents, ["Hello ", "from the ", "fake upstream"]);
    for (i, (_, at)) in arrivals[1..4].iter().enumerate() {
        assert!(*at >= delay * (i as u32 + 1), "chunk {i} arrived at {at:?}");
    }

    // Non-stream responses take chunks * delay too (set_chunk_delay path).
    up.set_chunk_delay(delay);
    let started = Instant::now();
    let resp = client()
        .post(format!("{}/v1/chat/completions", up.url()))
        .json(&chat_body(false, false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(started.elapsed() >= delay * 3);
}

#[tokio::test]
async fn fail_mode_returns_openai_error() {
    let up = start().await;
    up.set_mode(Mode::Fail(503));
    let resp = client()
        .post(format!("{}/v1/chat/completions", up.url()))
        .json(&chat_body(false, false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "server_error");
    assert!(v["error"]["message"].is_string());
    assert!(v["error"]["param"].is_null());
    assert!(v["error"]["code"].is_null());
    // Failed attempts are still recorded; /health is unaffected.
    assert_eq!(up.request_count(), 1);
    let health = client()
        .get(format!("{}/health", up.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(up.request_count(), 1);

    up.set_mode(Mode::Normal);
    up.set_health_ok(false);
    let health = client()
        .get(format!("{}/health", up.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 503);
}

#[tokio::test]
async fn die_mid_stream_aborts_before_done() {
    let up = start().await;
    up.set_mode(Mode::DieMidStream { after_chunks: 2 });
    let resp = client()
        .post(format!("{}/v1/chat/completions", up.url()))
        .json(&chat_body(true, true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = sse_events(resp)
        .await
        .expect_err("body must fail, not end cleanly");
    assert!(!seen.iter().any(|e| e == "[DONE]"));
    // role chunk + exactly 2 content chunks made it through.
    let chunks = parse(&seen);
    assert_eq!(chunks.len(), 3, "{seen:?}");
    assert_eq!(chunks[2]["choices"][0]["delta"]["content"], "from ");

    // Non-streaming: the connection closes without any response.
    let err = client()
        .post(format!("{}/v1/chat/completions", up.url()))
        .json(&chat_body(false, false))
        .send()
        .await
        .expect_err("no response expected");
    assert!(!err.is_timeout(), "{err}");
}

#[tokio::test]
async fn shutdown_kills_connections_and_closes_port() {
    let up = start().await;
    let addr = up.addr();
    up.set_mode(Mode::Hang);
    let url = format!("{}/v1/chat/completions", up.url());
    let hanging = tokio::spawn(async move {
        client()
            .post(url)
            .json(&chat_body(false, false))
            .send()
            .await
    });
    // Wait until the hanging request has reached the server.
    let deadline = Instant::now() + Duration::from_secs(5);
    while up.request_count() == 0 {
        assert!(Instant::now() < deadline, "request never arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    up.shutdown().await;
    let res = tokio::time::timeout(Duration::from_secs(5), hanging)
        .await
        .expect("in-flight request must end at shutdown")
        .unwrap();
    let err = res.expect_err("in-flight request must fail");
    assert!(!err.is_timeout(), "{err}");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    up.shutdown().await; // idempotent

    // "Restart" the backend on the same port.
    let again = FakeUpstream::start_on(addr, FakeConfig::default())
        .await
        .unwrap();
    let health = client()
        .get(format!("{}/health", again.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    again.shutdown().await;
}

#[tokio::test]
async fn embeddings_float_and_base64() {
    let up = start().await;
    let req = |format: Option<&str>| {
        let mut body = json!({
            "model": "text-embedding-3-small",
            "input": ["hello world", "one two three"],
        });
        if let Some(f) = format {
            body["encoding_format"] = json!(f);
        }
        client()
            .post(format!("{}/v1/embeddings", up.url()))
            .json(&body)
            .send()
    };
    let floats: Value = req(None).await.unwrap().json().await.unwrap();
    assert_eq!(floats["object"], "list");
    assert_eq!(floats["model"], "text-embedding-3-small");
    assert_eq!(floats["usage"]["prompt_tokens"], 5);
    assert_eq!(floats["usage"]["total_tokens"], 5);
    let data = floats["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[1]["index"], 1);
    assert_eq!(data[0]["object"], "embedding");
    let v0: Vec<f32> = data[0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(v0.len(), fake_upstream::EMBEDDING_DIMENSIONS);

    let b64: Value = req(Some("base64")).await.unwrap().json().await.unwrap();
    let encoded = b64["data"][0]["embedding"].as_str().unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    // Same vector either way (JSON floats round-trip exactly for f32).
    assert_eq!(decoded, v0);
}

#[tokio::test]
async fn legacy_completions_and_errors() {
    let up = FakeUpstream::start(FakeConfig {
        api_key: Some("sk-test".into()),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let c = client();

    // Auth.
    let resp = c
        .post(format!("{}/v1/completions", up.url()))
        .json(&json!({"model": "m", "prompt": "a b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");

    let v: Value = c
        .post(format!("{}/v1/completions", up.url()))
        .bearer_auth("sk-test")
        .json(&json!({"model": "m", "prompt": ["a b", "c"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], "Hello from the fake upstream");
    assert_eq!(v["usage"]["prompt_tokens"], 3);

    let resp = c
        .post(format!("{}/v1/completions", up.url()))
        .bearer_auth("sk-test")
        .json(&json!({"model": "m", "prompt": "x", "stream": true,
                      "stream_options": {"include_usage": true}}))
        .send()
        .await
        .unwrap();
    let events = sse_events(resp).await.unwrap();
    let chunks = parse(&events);
    assert_eq!(chunks.len(), 7); // 5 text + finish + usage
    assert_eq!(chunks[0]["object"], "text_completion");
    assert_eq!(chunks[0]["choices"][0]["text"], "Hello ");
    assert_eq!(chunks[6]["usage"]["completion_tokens"], 5);

    // Malformed body / missing fields -> 400; unknown path -> 404.
    for (body, status) in [
        ("{not json", 400),
        (r#"{"messages":[{"role":"user","content":"hi"}]}"#, 400),
        (r#"{"model":"m"}"#, 400),
    ] {
        let resp = c
            .post(format!("{}/v1/chat/completions", up.url()))
            .bearer_auth("sk-test")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{body}");
        let v: Value = resp.json().await.unwrap();
        assert!(v["error"]["message"].is_string());
    }
    let resp = c
        .get(format!("{}/v1/nope", up.url()))
        .bearer_auth("sk-test")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["message"], "Invalid URL (GET /v1/nope)");

    let models: Value = c
        .get(format!("{}/v1/models", up.url()))
        .bearer_auth("sk-test")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], "gpt-4o-mini");
}

#[tokio::test]
async fn control_endpoints_switch_modes() {
    let up = start().await;
    let c = client();
    let resp = c
        .post(format!("{}/_control/mode", up.url()))
        .json(&json!({"mode": "fail", "status": 429}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(up.mode(), Mode::Fail(429));
    let resp = c
        .post(format!("{}/v1/chat/completions", up.url()))
        .json(&chat_body(false, false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);

    c.post(format!("{}/_control/mode", up.url()))
        .json(&json!({"mode": "die_mid_stream", "after_chunks": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(up.mode(), Mode::DieMidStream { after_chunks: 2 });

    c.post(format!("{}/_control/health", up.url()))
        .json(&json!({"ok": false}))
        .send()
        .await
        .unwrap();
    let resp = c.get(format!("{}/health", up.url())).send().await.unwrap();
    assert_eq!(resp.status(), 503);

    let stats: Value = c
        .get(format!("{}/_control/stats", up.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["mode"], "die_mid_stream");
    assert_eq!(stats["after_chunks"], 2);
    assert_eq!(stats["requests"], 1);
}

/// The surface endpoints refuse what OpenAI refuses, with its error shape:
/// the gateway's tests rely on a form without its file or model failing.
#[tokio::test]
async fn surface_endpoints_are_as_strict_as_openai() {
    let up = start().await;
    let c = client();
    let url = |p: &str| format!("{}{p}", up.url());
    let form = |parts: &[(&str, &str)]| {
        let mut body = String::new();
        for (disposition, value) in parts {
            body.push_str(&format!(
                "--b\r\nContent-Disposition: form-data; {disposition}\r\n\r\n{value}\r\n"
            ));
        }
        body.push_str("--b--\r\n");
        body
    };
    let post_form = |body: String| {
        c.post(url("/v1/audio/transcriptions"))
            .header("content-type", "multipart/form-data; boundary=b")
            .body(body)
            .send()
    };
    for (parts, param) in [
        (vec![("name=\"model\"", "whisper-1")], "file"),
        (vec![("name=\"file\"; filename=\"a.mp3\"", "x")], "model"),
    ] {
        let resp = post_form(form(&parts)).await.unwrap();
        assert_eq!(resp.status(), 400);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["param"], param, "{v}");
    }
    let ok = form(&[
        ("name=\"file\"; filename=\"a.mp3\"", "x"),
        ("name=\"model\"", "gpt-4o-transcribe"),
    ]);
    let v: Value = post_form(ok).await.unwrap().json().await.unwrap();
    assert_eq!(v["text"], "Hello from the transcribed audio.");
    assert_eq!(v["usage"]["type"], "tokens");

    let resp = c
        .post(url("/v1/images/generations"))
        .json(&json!({"model": "dall-e-3"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = c
        .post(url("/v1/audio/speech"))
        .json(&json!({"model": "tts-1", "input": "hi", "voice": "alloy", "response_format": "wav"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "audio/wav");
    assert_eq!(
        &resp.bytes().await.unwrap()[..],
        &fake_upstream::surface::speech_bytes("tts-1", "hi")[..]
    );
    let resp = c
        .post(url("/v1/rerank"))
        .json(&json!({"model": "rerank-english-v3.0", "query": "q"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["param"],
        "documents"
    );
}
