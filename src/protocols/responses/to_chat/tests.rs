//! Golden tests against `tests/fixtures/responses/` (`BLESS=1` rewrites the
//! expected answers; requests' expected chat bodies are written by hand), and
//! the rules a Responses stream must keep whatever the fixture: sequence
//! numbers from 0 up, every delta adding up to its `.done` and to the final
//! response, items opened before they get deltas and closed once.

use std::collections::HashMap;
use std::path::PathBuf;

use bytes::Bytes;
use serde_json::{json, Value};

use super::{request, Answer};
use crate::error::GatewayError;
use crate::protocols::AnswerTranslator;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/responses")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn bless() -> bool {
    std::env::var_os("BLESS").is_some()
}

fn translate(body: &[u8]) -> Result<Value, GatewayError> {
    request(body).map(|b| serde_json::from_slice(&b).expect("the translation is JSON"))
}

fn refused(body: Value) -> (String, Option<&'static str>) {
    match request(body.to_string().as_bytes()) {
        Err(GatewayError::InvalidRequest { message, param }) => (message, param),
        other => panic!("expected a 400, got {other:?}"),
    }
}

/// The upstream answer fed in `pieces`, as the client gets it.
fn answer(
    status: u16,
    content_type: &str,
    stream: bool,
    pieces: &[&[u8]],
) -> (&'static str, Vec<u8>) {
    let mut a = Answer::new(
        "gpt-5-codex",
        stream,
        "resp_0192f0c45a7e7cc39b1e3f2f0d7b8a11",
    );
    let ct = a.on_header(status, Some(content_type));
    let mut out = Vec::new();
    for (i, p) in pieces.iter().enumerate() {
        let mut body = Some(Bytes::copy_from_slice(p));
        a.on_body(&mut body, i + 1 == pieces.len());
        out.extend_from_slice(body.as_deref().unwrap_or_default());
    }
    if pieces.is_empty() {
        let mut body = None;
        a.on_body(&mut body, true);
        out.extend_from_slice(body.as_deref().unwrap_or_default());
    }
    (ct, out)
}

/// `event:` name and parsed `data:` of each SSE event.
fn events(sse: &[u8]) -> Vec<(String, Value)> {
    let text = std::str::from_utf8(sse).expect("UTF-8");
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut name = None;
            let mut data = None;
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_owned());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str(d).expect("data is JSON"));
                }
            }
            (name.expect("event name"), data.expect("event data"))
        })
        .collect()
}

fn golden_stream(upstream: &str, expected: &str) -> Vec<(String, Value)> {
    let input = read(upstream);
    let (ct, whole) = answer(200, "text/event-stream", true, &[&input]);
    assert_eq!(ct, "text/event-stream");
    // Byte by byte gives the same events: chunk boundaries do not matter.
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    let (_, split) = answer(200, "text/event-stream; charset=utf-8", true, &bytes);
    assert_eq!(
        events(&whole),
        events(&split),
        "{upstream} split byte by byte"
    );
    if bless() {
        std::fs::write(fixture(expected), &whole).unwrap();
    }
    let want = events(&read(expected));
    let got = events(&whole);
    assert_eq!(got, want, "{upstream} -> {expected}");
    check_stream(&got);
    got
}

/// The invariants of a Responses event stream.
fn check_stream(ev: &[(String, Value)]) {
    for (i, (name, data)) in ev.iter().enumerate() {
        assert_eq!(data["type"], json!(name), "event name and type agree");
        assert_eq!(
            data["sequence_number"],
            json!(i),
            "sequence numbers from 0 up"
        );
    }
    assert_eq!(ev[0].0, "response.created");
    assert_eq!(ev[1].0, "response.in_progress");
    let (last, fin) = ev.last().unwrap();
    assert!(
        [
            "response.completed",
            "response.incomplete",
            "response.failed"
        ]
        .contains(&last.as_str()),
        "{last}"
    );
    let response = &fin["response"];
    assert_eq!(response["object"], "response");
    assert_eq!(response["id"], ev[0].1["response"]["id"]);
    let mut text: HashMap<String, String> = HashMap::new();
    let mut args: HashMap<String, String> = HashMap::new();
    let mut thought: HashMap<String, String> = HashMap::new();
    let mut open: Vec<String> = Vec::new();
    let mut done: Vec<String> = Vec::new();
    for (name, d) in &ev[2..ev.len() - 1] {
        let item_id = d["item_id"].as_str().map(str::to_owned);
        match name.as_str() {
            "response.output_item.added" => {
                let id = d["item"]["id"].as_str().unwrap().to_owned();
                assert_eq!(d["item"]["status"], "in_progress");
                assert_eq!(
                    response["output"][d["output_index"].as_u64().unwrap() as usize]["id"],
                    json!(id),
                    "output_index points at the item in the final output"
                );
                open.push(id);
            }
            "response.output_text.delta" => {
                let id = item_id.unwrap();
                assert!(open.contains(&id), "delta of an open item");
                text.entry(id)
                    .or_default()
                    .push_str(d["delta"].as_str().unwrap());
            }
            "response.function_call_arguments.delta" => {
                let id = item_id.unwrap();
                assert!(open.contains(&id), "delta of an open item");
                args.entry(id)
                    .or_default()
                    .push_str(d["delta"].as_str().unwrap());
            }
            "response.reasoning_text.delta" => {
                let id = item_id.unwrap();
                assert!(open.contains(&id), "delta of an open item");
                thought
                    .entry(id)
                    .or_default()
                    .push_str(d["delta"].as_str().unwrap());
            }
            "response.reasoning_text.done" => {
                let id = item_id.unwrap();
                assert_eq!(
                    d["text"],
                    json!(thought.get(&id).cloned().unwrap_or_default())
                );
            }
            "response.output_text.done" => {
                let id = item_id.unwrap();
                assert_eq!(d["text"], json!(text.get(&id).cloned().unwrap_or_default()));
            }
            "response.function_call_arguments.done" => {
                let id = item_id.unwrap();
                assert_eq!(
                    d["arguments"],
                    json!(args.get(&id).cloned().unwrap_or_default())
                );
            }
            "response.output_item.done" => {
                let id = d["item"]["id"].as_str().unwrap().to_owned();
                assert!(open.contains(&id) && !done.contains(&id), "closed once");
                done.push(id);
            }
            "response.content_part.added" | "response.content_part.done" => {
                assert!(open.contains(&item_id.unwrap()));
            }
            other => panic!("unexpected event {other}"),
        }
    }
    // The final output says what the deltas said.
    for item in response["output"].as_array().unwrap() {
        let id = item["id"].as_str().unwrap();
        match item["type"].as_str().unwrap() {
            "message" => assert_eq!(
                item["content"][0]["text"],
                json!(text.get(id).cloned().unwrap_or_default())
            ),
            "function_call" => assert_eq!(
                item["arguments"],
                json!(args.get(id).cloned().unwrap_or_default())
            ),
            "reasoning" => assert_eq!(
                item["content"][0]["text"],
                json!(thought.get(id).cloned().unwrap_or_default())
            ),
            other => panic!("unexpected item {other}"),
        }
        if last != "response.failed" {
            assert!(done.iter().any(|d| d == id), "{id} closed before the end");
        }
    }
}

#[test]
fn codex_request_translates() {
    let got = translate(&read("codex.request.json")).unwrap();
    let want: Value = serde_json::from_slice(&read("codex.chat.json")).unwrap();
    assert_eq!(got, want);
}

#[test]
fn sdk_request_translates() {
    let got = translate(&read("sdk.request.json")).unwrap();
    let want: Value = serde_json::from_slice(&read("sdk.chat.json")).unwrap();
    assert_eq!(got, want);
}

#[test]
fn string_input_and_stream_flag() {
    let got = translate(br#"{"model":"m","input":"hi","stream":true}"#).unwrap();
    assert_eq!(
        got,
        json!({"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}})
    );
    // Tool settings without tools (which OpenAI's chat refuses) stay out.
    let got = translate(
        br#"{"model":"m","input":"hi","tool_choice":"auto","parallel_tool_calls":false}"#,
    )
    .unwrap();
    assert!(got.get("tool_choice").is_none() && got.get("parallel_tool_calls").is_none());
    // store absent or false: fine, nothing is stored anyway.
    let got = translate(br#"{"model":"m","input":"hi","store":false,"background":false,"previous_response_id":null}"#).unwrap();
    assert_eq!(got["messages"], json!([{"role":"user","content":"hi"}]));
}

#[test]
fn function_calls_of_one_turn_share_an_assistant_message() {
    let got = translate(
        json!({"model":"m","input":[
            {"role":"user","content":"go"},
            {"type":"message","role":"assistant","content":[{"type":"output_text","text":"Two calls."}]},
            {"type":"function_call","call_id":"c1","name":"a","arguments":"{}"},
            {"type":"function_call","call_id":"c2","name":"b","arguments":"{\"x\":1}"},
            {"type":"function_call_output","call_id":"c1","output":"one"},
            {"type":"function_call_output","call_id":"c2","output":[{"type":"input_text","text":"two"}]}
        ]})
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(
        got["messages"],
        json!([
            {"role":"user","content":"go"},
            {"role":"assistant","content":"Two calls.","tool_calls":[
                {"id":"c1","type":"function","function":{"name":"a","arguments":"{}"}},
                {"id":"c2","type":"function","function":{"name":"b","arguments":"{\"x\":1}"}}
            ]},
            {"role":"tool","tool_call_id":"c1","content":"one"},
            {"role":"tool","tool_call_id":"c2","content":"two"}
        ])
    );
}

#[test]
fn stateful_features_are_refused_naming_the_field() {
    for (field, value) in [
        ("previous_response_id", json!("resp_123")),
        ("conversation", json!("conv_123")),
        ("store", json!(true)),
        ("background", json!(true)),
        ("prompt", json!({"id": "pmpt_1"})),
        ("truncation", json!("auto")),
    ] {
        let mut body = json!({"model": "m", "input": "hi"});
        body[field] = value;
        let (message, param) = refused(body);
        assert_eq!(param, Some(field), "{message}");
        assert!(message.contains(field), "{message}");
    }
    let (message, param) =
        refused(json!({"model":"m","input":[{"type":"item_reference","id":"msg_1"}]}));
    assert_eq!(param, Some("input"));
    assert!(
        message.contains("input[0]") && message.contains("item_reference"),
        "{message}"
    );
}

#[test]
fn hosted_tools_and_bad_shapes_are_refused() {
    let (message, param) = refused(json!({"model":"m","input":"hi","tools":[
        {"type":"function","name":"f"},{"type":"web_search"}]}));
    assert_eq!(param, Some("tools"));
    assert!(message.contains("tools[1].type `web_search`"), "{message}");
    let (_, param) =
        refused(json!({"model":"m","input":"hi","tool_choice":{"type":"file_search"}}));
    assert_eq!(param, Some("tool_choice"));
    let (_, param) = refused(json!({"model":"m"}));
    assert_eq!(param, Some("input"));
    let (_, param) = refused(json!({"model":"m","input":[]}));
    assert_eq!(param, Some("input"));
    let (message, param) = refused(json!({"model":"m","input":[{"type":"computer_call"}]}));
    assert_eq!(param, Some("input"));
    assert!(message.contains("computer_call"), "{message}");
    let (_, param) = refused(
        json!({"model":"m","input":[{"role":"user","content":[{"type":"input_image","file_id":"file_1"}]}]}),
    );
    assert_eq!(param, Some("input"));
    let (_, param) = refused(json!({"model":"m","input":"hi","text":{"format":{"type":"xml"}}}));
    assert_eq!(param, Some("text"));
}

#[test]
fn text_stream() {
    let ev = golden_stream("text.chat.sse", "text.responses.sse");
    let fin = &ev.last().unwrap().1["response"];
    assert_eq!(ev.last().unwrap().0, "response.completed");
    assert_eq!(fin["status"], "completed");
    assert_eq!(fin["output"][0]["content"][0]["text"], "Hello from Qwen ✓");
    assert_eq!(
        fin["usage"],
        json!({"input_tokens":42,"input_tokens_details":{"cached_tokens":32},"output_tokens":9,"output_tokens_details":{"reasoning_tokens":4},"total_tokens":51})
    );
    assert_eq!(fin["created_at"], 1765000000);
    assert_eq!(fin["model"], "gpt-5-codex", "the client's model name");
}

#[test]
fn tool_call_stream() {
    let ev = golden_stream("tool_call.chat.sse", "tool_call.responses.sse");
    let fin = &ev.last().unwrap().1["response"];
    assert_eq!(fin["status"], "completed");
    let out = fin["output"].as_array().unwrap();
    assert_eq!(out.len(), 3);
    assert_eq!(out[0]["type"], "message");
    assert_eq!(
        (
            &out[1]["type"],
            &out[1]["call_id"],
            &out[1]["name"],
            &out[1]["arguments"]
        ),
        (
            &json!("function_call"),
            &json!("call_a1"),
            &json!("shell_command"),
            &json!("{\"command\":\"cat Cargo.toml\"}")
        )
    );
    assert_eq!(
        (&out[2]["call_id"], &out[2]["name"]),
        (&json!("call_b2"), &json!("update_plan"))
    );
    assert_eq!(fin["usage"]["input_tokens_details"]["cached_tokens"], 1024);
}

#[test]
fn stream_cut_mid_function_call_fails() {
    let ev = golden_stream("cut_mid_call.chat.sse", "cut_mid_call.responses.sse");
    let (name, data) = ev.last().unwrap();
    assert_eq!(name, "response.failed");
    let r = &data["response"];
    assert_eq!(r["status"], "failed");
    assert_eq!(r["error"]["code"], "server_error");
    assert_eq!(r["output"][0]["status"], "incomplete");
    assert_eq!(r["output"][0]["arguments"], "{\"command\":\"car");
    assert!(
        !ev.iter()
            .any(|(n, _)| n == "response.function_call_arguments.done"),
        "a cut call is never reported done"
    );
}

#[test]
fn length_stream_is_incomplete() {
    let ev = golden_stream("length.chat.sse", "length.responses.sse");
    let (name, data) = ev.last().unwrap();
    assert_eq!(name, "response.incomplete");
    assert_eq!(
        data["response"]["incomplete_details"],
        json!({"reason":"max_output_tokens"})
    );
    assert_eq!(data["response"]["output"][0]["status"], "incomplete");
}

#[test]
fn events_leave_as_chunks_arrive() {
    let input = read("text.chat.sse");
    let text = std::str::from_utf8(&input).unwrap();
    let first_two: usize = text.split_inclusive("\n\n").take(2).map(str::len).sum();
    let mut a = Answer::new("m", true, "resp_1");
    a.on_header(200, Some("text/event-stream"));
    let mut body = Some(Bytes::copy_from_slice(&input[..first_two]));
    a.on_body(&mut body, false);
    let ev = events(body.as_deref().unwrap());
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta"
        ]
    );
    assert_eq!(ev[4].1["delta"], "Hello");
}

#[test]
fn json_answer() {
    let input = read("tool_call.chat.json");
    let (ct, out) = answer(200, "application/json", false, &[&input]);
    assert_eq!(ct, "application/json");
    if bless() {
        let pretty: Value = serde_json::from_slice(&out).unwrap();
        std::fs::write(
            fixture("tool_call.response.json"),
            serde_json::to_string_pretty(&pretty).unwrap() + "\n",
        )
        .unwrap();
    }
    let got: Value = serde_json::from_slice(&out).unwrap();
    let want: Value = serde_json::from_slice(&read("tool_call.response.json")).unwrap();
    assert_eq!(got, want);
    assert_eq!(
        got["usage"]["output_tokens_details"]["reasoning_tokens"],
        12
    );
}

#[test]
fn json_answer_to_a_streaming_client_becomes_events() {
    let input = read("tool_call.chat.json");
    let (ct, out) = answer(200, "application/json", true, &[&input[..10], &input[10..]]);
    assert_eq!(ct, "text/event-stream");
    let ev = events(&out);
    check_stream(&ev);
    let fin = &ev.last().unwrap().1["response"];
    let json: Value =
        serde_json::from_slice(&answer(200, "application/json", false, &[&input]).1).unwrap();
    assert_eq!(fin, &json, "the same response either way");
}

#[test]
fn stream_to_a_json_client_becomes_the_final_object() {
    let input = read("tool_call.chat.sse");
    let (ct, out) = answer(200, "text/event-stream", false, &[&input]);
    assert_eq!(ct, "application/json");
    let got: Value = serde_json::from_slice(&out).unwrap();
    let streamed = golden_stream("tool_call.chat.sse", "tool_call.responses.sse");
    assert_eq!(&got, &streamed.last().unwrap().1["response"]);
}

#[test]
fn errors_pass_through() {
    let err = br#"{"error":{"message":"bad","type":"invalid_request_error","param":"messages","code":null}}"#;
    let (ct, out) = answer(400, "application/json", true, &[err]);
    assert_eq!((ct, out.as_slice()), ("application/json", &err[..]));
}

#[test]
fn error_event_mid_stream_fails_the_response() {
    let sse = b"data: {\"created\":1,\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\ndata: {\"error\":{\"message\":\"CUDA out of memory\",\"type\":\"server_error\"}}\n\n";
    let (_, out) = answer(200, "text/event-stream", true, &[sse]);
    let ev = events(&out);
    check_stream(&ev);
    let (name, data) = ev.last().unwrap();
    assert_eq!(name, "response.failed");
    assert_eq!(data["response"]["error"]["message"], "CUDA out of memory");
}

#[test]
fn garbage_json_answer_fails() {
    let (_, out) = answer(200, "application/json", false, &[b"<html>"]);
    let got: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(got["status"], "failed");
    assert_eq!(got["error"]["code"], "server_error");
    let (_, out) = answer(
        200,
        "application/json",
        false,
        &[br#"{"error":{"message":"model overloaded"}}"#],
    );
    let got: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        (&got["status"], &got["error"]["message"]),
        (&json!("failed"), &json!("model overloaded"))
    );
}

#[test]
fn reasoning_stream() {
    let ev = golden_stream("reasoning.chat.sse", "reasoning.responses.sse");
    let fin = &ev.last().unwrap().1["response"];
    assert_eq!(fin["status"], "completed");
    let out = fin["output"].as_array().unwrap();
    assert_eq!(out[0]["type"], "reasoning");
    assert_eq!(
        out[0]["content"][0],
        json!({"type":"reasoning_text","text":"The user greets. Greet back."})
    );
    assert_eq!(out[1]["content"][0]["text"], "Hi!");
    assert_eq!(fin["usage"]["output_tokens_details"]["reasoning_tokens"], 7);
}

#[test]
fn reasoning_in_a_json_answer() {
    let body = br#"{"created":1,"choices":[{"index":0,"message":{"role":"assistant","content":"Hi!","reasoning_content":"Greet back."},"finish_reason":"stop"}]}"#;
    let (_, out) = answer(200, "application/json", false, &[body]);
    let got: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(got["output"][0]["type"], "reasoning");
    assert_eq!(got["output"][0]["content"][0]["text"], "Greet back.");
    assert_eq!(got["output"][1]["content"][0]["text"], "Hi!");
}

#[test]
fn namespaced_functions_become_chat_functions() {
    let got = translate(
        json!({"model":"m","input":"hi","tools":[
            {"type":"function","name":"exec_command","parameters":{"type":"object"}},
            {"type":"namespace","name":"multi_agent_v1","description":"Sub-agents","tools":[
                {"type":"function","name":"close_agent","description":"Close one","strict":false,"parameters":{"type":"object"}}
            ]}
        ]})
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let names: Vec<&str> = got["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["exec_command", "close_agent"]);
    assert_eq!(got["tools"][1]["function"]["description"], "Close one");
}

/// A request the Codex CLI 0.169.0 really sent (`codex exec`, captured by
/// the fake backend in `tests/openai_responses.rs`; Codex's long prose is
/// left out of the file). No `instructions` (its prompt is a developer
/// message), `client_metadata`, a `namespace` of sub-agent functions, and
/// by default OpenAI's hosted `web_search`.
#[test]
fn codex_cli_capture() {
    let captured: Value = serde_json::from_slice(&read("codex-cli.request.json")).unwrap();
    let (message, param) = refused(captured.clone());
    assert_eq!(param, Some("tools"));
    assert!(message.contains("`web_search`"), "{message}");

    // `web_search = "disabled"` in Codex's config.toml leaves the tool out.
    let mut body = captured;
    body["tools"]
        .as_array_mut()
        .unwrap()
        .retain(|t| t["type"] != "web_search");
    let got = translate(body.to_string().as_bytes()).unwrap();
    if bless() {
        std::fs::write(
            fixture("codex-cli.chat.json"),
            serde_json::to_string_pretty(&got).unwrap() + "\n",
        )
        .unwrap();
    }
    let want: Value = serde_json::from_slice(&read("codex-cli.chat.json")).unwrap();
    assert_eq!(got, want);
    let roles: Vec<&str> = got["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "system", "user", "user"]);
    assert_eq!(got["messages"][3]["content"], "Say hello");
    let flat = body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tools"].as_array().map_or(1, Vec::len))
        .sum::<usize>();
    assert_eq!(got["tools"].as_array().unwrap().len(), flat);
    assert!(got.get("client_metadata").is_none() && got.get("include").is_none());
    assert_eq!(got["stream_options"], json!({"include_usage": true}));
}

/// Chat servers differ from OpenAI in small ways the translation must take:
/// CRLF lines, `data:` without a space, tool calls without `index` or sent
/// whole in one chunk, text after the calls, no `[DONE]` after the finish.
#[test]
fn chat_stream_variants() {
    let sse = concat!(
        "data:{\"created\":5,\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}\r\n\r\n",
        ": keep-alive\r\n\r\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"a\",\"arguments\":\"{\\\"x\\\":1}\"}}]}}]}\r\n\r\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"c2\",\"function\":{\"name\":\"b\",\"arguments\":\"{}\"}}]}}]}\r\n\r\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Done.\"}}]}\r\n\r\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\r\n\r\n",
    );
    let (_, out) = answer(200, "text/event-stream", true, &[sse.as_bytes()]);
    let ev = events(&out);
    check_stream(&ev);
    let (name, fin) = ev.last().unwrap();
    assert_eq!(name, "response.completed");
    let output = fin["response"]["output"].as_array().unwrap();
    let kinds: Vec<&str> = output.iter().map(|o| o["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["function_call", "function_call", "message"]);
    assert_eq!(
        (&output[0]["call_id"], &output[0]["arguments"]),
        (&json!("c1"), &json!("{\"x\":1}"))
    );
    assert_eq!(
        (&output[1]["call_id"], &output[1]["name"]),
        (&json!("c2"), &json!("b"))
    );
    assert_eq!(output[2]["content"][0]["text"], "Done.");
    assert_eq!(fin["response"]["created_at"], 5);
    assert_eq!(
        fin["response"]["usage"],
        Value::Null,
        "the backend sent none"
    );
}
