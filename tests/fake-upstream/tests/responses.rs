//! The fake's `POST /v1/responses` over real HTTP: the rules its module doc
//! promises (OpenAI's shapes, events and errors; deterministic usage).

use std::time::Duration;

use fake_upstream::{FakeConfig, FakeUpstream, Mode};
use serde_json::{json, Value};

async fn post(up: &FakeUpstream, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/v1/responses", up.url()))
        .timeout(Duration::from_secs(10))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// (event name, data) of each event; `Err` when the body failed.
async fn events(resp: reqwest::Response) -> Result<Vec<(String, Value)>, Vec<(String, Value)>> {
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = Vec::new();
    let mut resp = resp;
    let mut failed = false;
    loop {
        match resp.chunk().await {
            Ok(Some(b)) => body.extend_from_slice(&b),
            Ok(None) => break,
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    let text = String::from_utf8(body).unwrap();
    let ev: Vec<(String, Value)> = text
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (name, data) = e.split_once('\n').unwrap();
            let name = name.strip_prefix("event: ").unwrap().to_owned();
            let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(data["type"], json!(name));
            (name, data)
        })
        .collect();
    for (i, (_, d)) in ev.iter().enumerate() {
        assert_eq!(d["sequence_number"], json!(i));
    }
    if failed {
        Err(ev)
    } else {
        Ok(ev)
    }
}

fn names(ev: &[(String, Value)]) -> Vec<&str> {
    ev.iter().map(|(n, _)| n.as_str()).collect()
}

#[tokio::test]
async fn json_answer_with_usage() {
    let up = FakeUpstream::start(FakeConfig {
        cached_tokens: 4,
        reasoning_tokens: 3,
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let resp = post(
        &up,
        json!({"model": "gpt-5", "instructions": "Be brief", "input": "Say hello please"}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let r: Value = resp.json().await.unwrap();
    assert_eq!(r["object"], "response");
    assert_eq!(r["status"], "completed");
    assert_eq!(r["store"], true);
    assert_eq!(r["instructions"], "Be brief");
    assert_eq!(r["output"][0]["type"], "reasoning");
    assert_eq!(
        r["output"][1]["content"][0]["text"],
        "Hello from the fake upstream"
    );
    // (2 + 3) instructions + (3 + 3) input; 5 chunks + 3 reasoning.
    assert_eq!(
        r["usage"],
        json!({"input_tokens": 11, "input_tokens_details": {"cached_tokens": 4}, "output_tokens": 8, "output_tokens_details": {"reasoning_tokens": 3}, "total_tokens": 19})
    );
}

#[tokio::test]
async fn stream_has_the_real_event_sequence() {
    let up = FakeUpstream::start(FakeConfig::default()).await.unwrap();
    let ev = events(post(&up, json!({"model": "gpt-5", "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi there"}]}], "stream": true})).await)
        .await
        .unwrap();
    let mut want = vec![
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ];
    want.extend(["response.output_text.delta"; 5]);
    want.extend([
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]);
    assert_eq!(names(&ev), want);
    let deltas: String = ev.iter().filter_map(|(_, d)| d["delta"].as_str()).collect();
    let fin = &ev.last().unwrap().1["response"];
    assert_eq!(fin["output"][0]["content"][0]["text"], json!(deltas));
    assert_eq!(fin["usage"]["input_tokens"], 5);
    assert_eq!(fin["usage"]["output_tokens"], 5);
}

#[tokio::test]
async fn max_output_tokens_makes_it_incomplete() {
    let up = FakeUpstream::start(FakeConfig::default()).await.unwrap();
    let r: Value = post(
        &up,
        json!({"model": "m", "input": "hi", "max_output_tokens": 2}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(r["status"], "incomplete");
    assert_eq!(
        r["incomplete_details"],
        json!({"reason": "max_output_tokens"})
    );
    assert_eq!(r["output"][0]["status"], "incomplete");
    assert_eq!(r["usage"]["output_tokens"], 2);
    let ev = events(
        post(
            &up,
            json!({"model": "m", "input": "hi", "max_output_tokens": 2, "stream": true}),
        )
        .await,
    )
    .await
    .unwrap();
    assert_eq!(ev.last().unwrap().0, "response.incomplete");
}

#[tokio::test]
async fn function_call_when_asked_then_text_after_its_output() {
    let up = FakeUpstream::start(FakeConfig::default()).await.unwrap();
    let tools = json!([{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]);
    let r: Value = post(
        &up,
        json!({"model": "m", "input": "get_weather in Paris", "tools": tools}),
    )
    .await
    .json()
    .await
    .unwrap();
    let call = &r["output"][0];
    assert_eq!(call["type"], "function_call");
    assert_eq!(call["name"], "get_weather");
    assert_eq!(call["arguments"], r#"{"city":"fake-city"}"#);
    assert_eq!(r["usage"]["output_tokens"], 2);
    let ev = events(
        post(
            &up,
            json!({"model": "m", "input": "get_weather in Paris", "tools": tools, "stream": true}),
        )
        .await,
    )
    .await
    .unwrap();
    assert_eq!(
        names(&ev),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    let r: Value = post(&up, json!({"model": "m", "tools": tools, "input": [
        {"role": "user", "content": "get_weather in Paris"},
        {"type": "function_call", "call_id": call["call_id"], "name": "get_weather", "arguments": call["arguments"]},
        {"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"},
    ]}))
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(r["output"][0]["type"], "message");
}

#[tokio::test]
async fn refuses_what_openai_refuses() {
    let up = FakeUpstream::start(FakeConfig::default()).await.unwrap();
    for (body, param) in [
        (json!({"input": "hi"}), "model"),
        (json!({"model": "m"}), "input"),
        (
            json!({"model": "m", "input": "hi", "previous_response_id": "resp_unknown"}),
            "previous_response_id",
        ),
        (
            json!({"model": "m", "input": "hi", "max_tokens": 5}),
            "max_tokens",
        ),
        (json!({"model": "m", "messages": []}), "messages"),
    ] {
        let resp = post(&up, body).await;
        assert_eq!(resp.status(), 400);
        let e: Value = resp.json().await.unwrap();
        assert_eq!(e["error"]["type"], "invalid_request_error");
        assert_eq!(e["error"]["param"], param);
    }
    // An id it issued (stored by default) is known; one with store: false is not.
    let stored: Value = post(&up, json!({"model": "m", "input": "hi"}))
        .await
        .json()
        .await
        .unwrap();
    let resp = post(
        &up,
        json!({"model": "m", "input": "again", "previous_response_id": stored["id"]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let unstored: Value = post(&up, json!({"model": "m", "input": "hi", "store": false}))
        .await
        .json()
        .await
        .unwrap();
    let resp = post(
        &up,
        json!({"model": "m", "input": "again", "previous_response_id": unstored["id"]}),
    )
    .await;
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn die_mid_stream_cuts_after_n_deltas() {
    let up = FakeUpstream::start(FakeConfig::default()).await.unwrap();
    up.set_mode(Mode::DieMidStream { after_chunks: 2 });
    let ev = events(post(&up, json!({"model": "m", "input": "hi", "stream": true})).await)
        .await
        .unwrap_err();
    assert_eq!(
        ev.iter()
            .filter(|(n, _)| n == "response.output_text.delta")
            .count(),
        2
    );
    assert!(!names(&ev).contains(&"response.completed"));
}

#[tokio::test]
async fn chat_answers_a_tool_call_too() {
    let up = FakeUpstream::start(FakeConfig::default()).await.unwrap();
    let client = reqwest::Client::new();
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "call get_weather"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "required": ["city"]}}}]});
    let r: Value = client
        .post(format!("{}/v1/chat/completions", up.url()))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        r["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
        r#"{"city":"fake-city"}"#
    );
    assert_eq!(r["usage"]["completion_tokens"], 2);
    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    sbody["stream_options"] = json!({"include_usage": true});
    let text = client
        .post(format!("{}/v1/chat/completions", up.url()))
        .json(&sbody)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let args: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|c| {
            c.pointer("/choices/0/delta/tool_calls/0/function/arguments")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(args, r#"{"city":"fake-city"}"#);
    assert!(
        text.contains("\"finish_reason\":\"tool_calls\"") && text.ends_with("data: [DONE]\n\n")
    );
}
