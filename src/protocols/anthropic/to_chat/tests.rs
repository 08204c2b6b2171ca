//! Golden tests over tests/fixtures/anthropic/ (see its README): requests in
//! both shapes, and answers fed in every split a network could make.
//! `BLESS=1 cargo test --lib protocols::anthropic` rewrites the expected
//! files after a deliberate change; review the diff.

use std::path::PathBuf;

use bytes::Bytes;
use serde_json::{json, Value};

use super::*;
use crate::protocols::AnswerTranslator;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/anthropic")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Compares with the expected file, or writes it under `BLESS=1`.
fn golden(name: &str, actual: &[u8]) {
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(fixture(name), actual).unwrap();
        return;
    }
    let expected = read(name);
    assert!(
        expected == actual,
        "{name} differs (BLESS=1 rewrites it):\n--- expected\n{}\n--- actual\n{}",
        String::from_utf8_lossy(&expected),
        String::from_utf8_lossy(actual)
    );
}

fn pretty(v: &[u8]) -> Vec<u8> {
    let v: Value = serde_json::from_slice(v).unwrap();
    let mut out = serde_json::to_vec_pretty(&v).unwrap();
    out.push(b'\n');
    out
}

const MSG_ID: &str = "msg_0192f0c45a7e7cc39b1e3f2f0d7b8a11";

/// The whole answer through `Answer`, the upstream's body cut at `cuts`.
fn translate(
    status: u16,
    content_type: &str,
    stream: bool,
    body: &[u8],
    cuts: &[usize],
) -> Vec<u8> {
    let mut a = Answer::new("claude-sonnet-4-5-20250929", stream, MSG_ID);
    a.on_header(status, Some(content_type));
    let mut out = Vec::new();
    let mut from = 0;
    for &to in cuts.iter().chain(std::iter::once(&body.len())) {
        let mut chunk = Some(Bytes::copy_from_slice(&body[from..to]));
        a.on_body(&mut chunk, to == body.len());
        out.extend(chunk.unwrap_or_default());
        from = to;
    }
    out
}

fn stream_golden(input: &str, expected: &str) {
    let body = read(input);
    let whole = translate(200, "text/event-stream", true, &body, &[]);
    golden(expected, &whole);
    // A byte at a time, and every split in two: the same events.
    let bytewise: Vec<usize> = (1..body.len()).collect();
    assert_eq!(
        translate(200, "text/event-stream", true, &body, &bytewise),
        whole
    );
    for cut in 0..=body.len() {
        assert_eq!(
            translate(200, "text/event-stream", true, &body, &[cut]),
            whole,
            "{input} cut at byte {cut}"
        );
    }
}

/// The stream, parsed into (event name, data) pairs.
fn events(sse: &[u8]) -> Vec<(String, Value)> {
    String::from_utf8(sse.to_vec())
        .unwrap()
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (name, data) = e.split_once('\n').unwrap();
            let name = name.strip_prefix("event: ").unwrap().to_owned();
            let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(
                data["type"],
                name.as_str(),
                "event name and data type agree"
            );
            (name, data)
        })
        .collect()
}

#[test]
fn claude_code_request_becomes_a_chat_request() {
    let chat = request(&read("claude_code.request.json")).unwrap();
    golden("claude_code.request.chat.json", &pretty(&chat));
    let v: Value = serde_json::from_slice(&chat).unwrap();
    // The system blocks are one system message; cache_control is gone, and
    // so is the per-request billing line that would defeat prefix caching.
    assert_eq!(v["messages"][0]["role"], "system");
    let system = v["messages"][0]["content"].as_str().unwrap();
    assert!(system.starts_with("You are Claude Code, Anthropic's official CLI for Claude.\n"));
    assert!(!String::from_utf8_lossy(&chat).contains("cache_control"));
    assert_eq!(v["stream_options"], json!({"include_usage": true}));
    assert_eq!(v["reasoning_effort"], "high");
    assert_eq!(v["tools"].as_array().unwrap().len(), 3);
    assert!(v.get("context_management").is_none());
    // Claude Code's 150-character user id, hashed to fit OpenAI's 64.
    assert_eq!(v["user"].as_str().unwrap().len(), 64);
}

/// The request the real Claude Code 2.1.37 sent (`claude -p`), captured at
/// an Anthropic fake behind the gateway (long texts shortened).
#[test]
fn captured_claude_code_request_becomes_a_chat_request() {
    let chat = request(&read("claude_code_2.1.37.captured.request.json")).unwrap();
    golden(
        "claude_code_2.1.37.captured.request.chat.json",
        &pretty(&chat),
    );
    let v: Value = serde_json::from_slice(&chat).unwrap();
    assert_eq!(v["tools"].as_array().unwrap().len(), 17);
    assert!(!String::from_utf8_lossy(&chat).contains("cache_control"));
    assert!(!String::from_utf8_lossy(&chat).contains("x-anthropic-billing-header"));
    assert_eq!(v["user"].as_str().unwrap().len(), 64);
    assert_eq!(
        (&v["max_tokens"], &v["temperature"]),
        (&json!(32000), &json!(1))
    );
}

#[test]
fn conversation_with_tools_images_and_results() {
    let chat = request(&read("conversation.request.json")).unwrap();
    golden("conversation.request.chat.json", &pretty(&chat));
    let v: Value = serde_json::from_slice(&chat).unwrap();
    let roles: Vec<&str> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    // Tool results go right after the calls, the user's text after them.
    assert_eq!(
        roles,
        [
            "system",
            "user",
            "assistant",
            "tool",
            "tool",
            "user",
            "assistant",
            "tool"
        ]
    );
    assert_eq!(v["tool_choice"], "required");
    assert_eq!(v["parallel_tool_calls"], false);
    assert!(v.get("top_k").is_none());
    assert_eq!(v["user"], "user-42");
}

#[test]
fn claude_code_answer_stream() {
    stream_golden("claude_code.chat.sse", "claude_code.anthropic.sse");
    let ev = events(&read("claude_code.anthropic.sse"));
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        &names[..3],
        ["message_start", "ping", "content_block_start"]
    );
    assert_eq!(&names[names.len() - 2..], ["message_delta", "message_stop"]);
    let (_, delta) = &ev[ev.len() - 2];
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    // 2450 prompt tokens of which 1920 cached: Anthropic counts them apart.
    assert_eq!(
        delta["usage"],
        json!({"input_tokens": 530, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 1920, "output_tokens": 61})
    );
    // Each tool's arguments, put back together, are its input.
    let mut inputs = std::collections::BTreeMap::<u64, String>::new();
    for (_, d) in &ev {
        if d["delta"]["type"] == "input_json_delta" {
            inputs
                .entry(d["index"].as_u64().unwrap())
                .or_default()
                .push_str(d["delta"]["partial_json"].as_str().unwrap());
        }
    }
    let parsed: Vec<Value> = inputs
        .values()
        .map(|s| serde_json::from_str(s).unwrap())
        .collect();
    assert_eq!(
        parsed,
        [
            json!({"pattern": "src/**/*.rs"}),
            json!({"command": "ls src", "description": "List src"})
        ]
    );
}

#[test]
fn reasoning_becomes_a_thinking_block() {
    stream_golden("reasoning.chat.sse", "reasoning.anthropic.sse");
    let ev = events(&read("reasoning.anthropic.sse"));
    let starts: Vec<&Value> = ev
        .iter()
        .filter(|(n, _)| n == "content_block_start")
        .map(|(_, d)| &d["content_block"]["type"])
        .collect();
    assert_eq!(starts, ["thinking", "text"]);
    let (_, delta) = &ev[ev.len() - 2];
    assert_eq!(delta["delta"]["stop_reason"], "max_tokens");
    assert_eq!(delta["usage"]["output_tokens"], 40);
}

#[test]
fn stream_cut_mid_tool_call_ends_with_an_error_event() {
    stream_golden("cut_tool_call.chat.sse", "cut_tool_call.anthropic.sse");
    let ev = events(&read("cut_tool_call.anthropic.sse"));
    let (last, data) = ev.last().unwrap();
    assert_eq!(last, "error");
    assert_eq!(data["error"]["type"], "api_error");
    assert!(!ev
        .iter()
        .any(|(n, _)| n == "message_stop" || n == "message_delta"));
}

#[test]
fn error_inside_a_stream_becomes_an_error_event() {
    stream_golden("midstream_error.chat.sse", "midstream_error.anthropic.sse");
    let ev = events(&read("midstream_error.anthropic.sse"));
    let (last, data) = ev.last().unwrap();
    assert_eq!(last, "error");
    assert_eq!(data["error"]["type"], "rate_limit_error");
}

#[test]
fn json_answer_becomes_a_message_or_a_stream() {
    let body = read("tools.chat.json");
    let msg = translate(200, "application/json", false, &body, &[100]);
    golden("tools.message.json", &pretty(&msg));
    let v: Value = serde_json::from_slice(&msg).unwrap();
    assert_eq!(v["id"], MSG_ID);
    assert_eq!(v["stop_reason"], "tool_use");
    assert_eq!(
        v["content"][1]["input"],
        json!({"city": "Paris", "unit": "celsius"})
    );
    // Broken arguments: an empty input (see message::tool_input).
    assert_eq!(v["content"][2]["input"], json!({}));
    assert_eq!(
        v["usage"],
        json!({"input_tokens": 56, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 64, "output_tokens": 30})
    );
    // A client that asked to stream, from a backend that did not.
    let sse = translate(200, "application/json; charset=utf-8", true, &body, &[]);
    golden("tools.anthropic.sse", &sse);
    let ev = events(&sse);
    assert_eq!(ev.last().unwrap().0, "message_stop");
}

#[test]
fn upstream_errors_take_anthropic_shape() {
    let body = br#"{"error":{"message":"The model `gpt-x` does not exist","type":"invalid_request_error","param":null,"code":"model_not_found"}}"#;
    for stream in [false, true] {
        let mut a = Answer::new("claude-x", stream, MSG_ID);
        assert_eq!(
            a.on_header(404, Some("application/json")),
            "application/json"
        );
        let out = translate(404, "application/json", stream, body, &[10, 50]);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            json!({"type": "error", "error": {"type": "not_found_error", "message": "The model `gpt-x` does not exist"}})
        );
    }
}

#[test]
fn an_error_object_in_a_200_answer_is_no_empty_message() {
    let body = br#"{"error":{"message":"litellm.APIError: upstream failed","type":null,"param":null,"code":"500"}}"#;
    let v: Value =
        serde_json::from_slice(&translate(200, "application/json", false, body, &[])).unwrap();
    assert_eq!(
        v,
        json!({"type": "error", "error": {"type": "api_error", "message": "litellm.APIError: upstream failed"}})
    );
    let ev = events(&translate(200, "application/json", true, body, &[]));
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].0, "error");
    let v: Value =
        serde_json::from_slice(&translate(200, "application/json", false, b"<html>", &[])).unwrap();
    assert_eq!(v["error"]["type"], "api_error");
}

#[test]
fn content_types_follow_the_client() {
    let mut a = Answer::new("m", true, MSG_ID);
    assert_eq!(
        a.on_header(200, Some("text/event-stream")),
        "text/event-stream"
    );
    let mut a = Answer::new("m", false, MSG_ID);
    assert_eq!(
        a.on_header(200, Some("application/json")),
        "application/json"
    );
    let mut a = Answer::new("m", true, MSG_ID);
    assert_eq!(
        a.on_header(200, Some("application/json")),
        "text/event-stream"
    );
    assert_eq!(a.on_header(429, None), "application/json");
}

fn refused(body: Value) -> (String, Option<&'static str>) {
    match request(body.to_string().as_bytes()) {
        Err(GatewayError::InvalidRequest { message, param }) => (message, param),
        other => panic!("expected a 400, got {other:?}"),
    }
}

fn base() -> Value {
    json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]})
}

#[test]
fn untranslatable_requests_are_refused_naming_the_field() {
    let mut b = base();
    b.as_object_mut().unwrap().remove("max_tokens");
    assert_eq!(
        refused(b),
        ("max_tokens: Field required".into(), Some("max_tokens"))
    );

    let mut b = base();
    b["messages"][0]["content"] =
        json!([{"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}]);
    let (msg, param) = refused(b);
    assert_eq!(param, Some("messages"));
    assert!(msg.starts_with("messages.0.content.0.type:"), "{msg}");
    assert!(msg.contains("server_tool_use"), "{msg}");

    let mut b = base();
    b["tools"] = json!([{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}]);
    let (msg, param) = refused(b);
    assert_eq!(param, Some("tools"));
    assert!(msg.contains("web_search_20250305"), "{msg}");

    let mut b = base();
    b["messages"][0]["content"] =
        json!([{"type": "image", "source": {"type": "file", "file_id": "file_1"}}]);
    let (msg, _) = refused(b);
    assert!(
        msg.starts_with("messages.0.content.0.source.type:"),
        "{msg}"
    );

    let mut b = base();
    b["mcp_servers"] = json!([{"type": "url", "url": "https://mcp.example.com", "name": "x"}]);
    assert_eq!(refused(b).1, Some("mcp_servers"));

    let mut b = base();
    b["messages"][0]["role"] = json!("system");
    assert_eq!(refused(b).1, Some("messages"));
}

#[test]
fn tool_choice_and_thinking_variants() {
    let tools = json!([{"name": "f", "input_schema": {"type": "object"}}]);
    for (choice, expected) in [
        (json!({"type": "auto"}), json!("auto")),
        (json!({"type": "none"}), json!("none")),
        (
            json!({"type": "tool", "name": "f"}),
            json!({"type": "function", "function": {"name": "f"}}),
        ),
    ] {
        let mut b = base();
        b["tools"] = tools.clone();
        b["tool_choice"] = choice;
        let v: Value = serde_json::from_slice(&request(b.to_string().as_bytes()).unwrap()).unwrap();
        assert_eq!(v["tool_choice"], expected);
        assert!(v.get("parallel_tool_calls").is_none());
    }
    // Claude Code's side requests send `tools: []`, which Chat refuses.
    let mut b = base();
    b["tools"] = json!([]);
    b["tool_choice"] = json!({"type": "auto"});
    let v: Value = serde_json::from_slice(&request(b.to_string().as_bytes()).unwrap()).unwrap();
    assert!(v.get("tools").is_none() && v.get("tool_choice").is_none());

    for (budget, effort) in [(1024, "low"), (4000, "medium"), (10000, "high")] {
        let mut b = base();
        b["thinking"] = json!({"type": "enabled", "budget_tokens": budget});
        let v: Value = serde_json::from_slice(&request(b.to_string().as_bytes()).unwrap()).unwrap();
        assert_eq!(v["reasoning_effort"], effort, "{budget}");
    }
    let mut b = base();
    b["thinking"] = json!({"type": "disabled"});
    let v: Value = serde_json::from_slice(&request(b.to_string().as_bytes()).unwrap()).unwrap();
    assert!(v.get("reasoning_effort").is_none());
    assert!(v.get("stream").is_none() && v.get("stream_options").is_none());
}

#[test]
fn count_tokens_counts_system_messages_and_tools() {
    let plain = json!({"model": "m", "messages": [{"role": "user", "content": "Hello world"}]});
    let n = count_tokens("gpt-4o-mini", plain.to_string().as_bytes()).unwrap();
    // Counted as the chat prompt it becomes: 3 + (3 + 2).
    assert_eq!(n, 8);
    let mut with_system = plain.clone();
    with_system["system"] =
        json!([{"type": "text", "text": "Hello world", "cache_control": {"type": "ephemeral"}}]);
    assert_eq!(
        count_tokens("gpt-4o-mini", with_system.to_string().as_bytes()).unwrap(),
        13
    );
    let mut with_tools = plain.clone();
    with_tools["tools"] = json!([{"name": "get_weather", "description": "Weather for a city", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]);
    assert!(count_tokens("gpt-4o-mini", with_tools.to_string().as_bytes()).unwrap() > n + 15);
    // A history with a tool call and its result counts both.
    let history = json!({"model": "m", "messages": [
        {"role": "user", "content": "Hello world"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "sunny"}]}
    ]});
    assert!(count_tokens("gpt-4o-mini", history.to_string().as_bytes()).unwrap() > n + 6);
    assert!(count_tokens("m", b"{}").is_err());
}
