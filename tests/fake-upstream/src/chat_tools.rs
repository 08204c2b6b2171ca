//! A chat completion that is a function call (`tool_calls`), JSON or
//! streamed, as OpenAI sends one
//! (<https://platform.openai.com/docs/api-reference/chat/object>,
//! <https://platform.openai.com/docs/api-reference/chat-streaming>): content
//! `null`, `finish_reason` `"tool_calls"`; streamed, the first call chunk
//! carries `index`, `id`, `type` and the name with empty arguments, the
//! arguments follow in two pieces. When the fake answers with one: see
//! [`crate::tools`].

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use crate::state::{Plan, Shared};
use crate::tools::{self, Call};
use crate::wire::{json_value, ChatRequest, ChatUsage, SYSTEM_FINGERPRINT};

/// The call this request is answered with, if any.
pub fn call_for(req: &ChatRequest<'_>, body: &[u8]) -> Option<Call> {
    let tools = req.tools.as_ref()?;
    // Parsed again, only for requests with tools: the fast path stays lean.
    let v: Value = serde_json::from_slice(body).ok()?;
    let last = v.get("messages")?.as_array()?.last()?;
    let user = last.get("role").and_then(Value::as_str) == Some("user");
    let text = user.then(|| tools::text_of(last.get("content")));
    tools::pick(Some(tools), req.tool_choice.as_ref(), text.as_deref())
}

fn call_id(id: &str) -> String {
    format!("call_{}", id.trim_start_matches("chatcmpl-"))
}

pub fn json(id: &str, created: u64, model: &str, call: Call, usage: Option<ChatUsage>) -> Response {
    let mut body = json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [{
            "index": 0,
            "message": {
                "role": "assistant",
                "content": null,
                "refusal": null,
                "tool_calls": [{
                    "id": call_id(id),
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }],
            },
            "finish_reason": "tool_calls",
            "logprobs": null,
        }],
    });
    if let Some(u) = usage {
        body["usage"] = serde_json::to_value(u).unwrap_or_default();
    }
    json_value(StatusCode::OK, &body)
}

pub fn stream(
    s: Arc<Shared>,
    id: &str,
    created: u64,
    model: &str,
    call: Call,
    usage: Option<ChatUsage>,
    plan: Plan,
) -> Response {
    let head = json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
    });
    let with_usage = usage.is_some();
    let chunk = move |choices: Value| {
        let mut c = head.clone();
        c["choices"] = choices;
        if with_usage {
            c["usage"] = Value::Null;
        }
        Bytes::from(format!("data: {c}\n\n"))
    };
    let delta = |d: Value, finish: Value| json!([{"index": 0, "delta": d, "finish_reason": finish, "logprobs": null}]);
    let call_id = call_id(id);
    let head2 = json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [],
    });
    let events = async_stream::stream! {
        yield Ok::<_, std::io::Error>(chunk(delta(json!({"role": "assistant", "content": null, "refusal": null}), Value::Null)));
        yield Ok(chunk(delta(json!({"tool_calls": [{"index": 0, "id": call_id, "type": "function", "function": {"name": call.name, "arguments": ""}}]}), Value::Null)));
        let (a, b) = call.pieces();
        for piece in [a, b] {
            if !plan.delay.is_zero() {
                tokio::time::sleep(plan.delay).await;
            }
            s.wait_unheld().await;
            yield Ok(chunk(delta(json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}), Value::Null)));
        }
        yield Ok(chunk(delta(json!({}), json!("tool_calls"))));
        if let Some(u) = usage {
            let mut c = head2;
            c["usage"] = serde_json::to_value(u).unwrap_or_default();
            yield Ok(Bytes::from(format!("data: {c}\n\n")));
        }
        yield Ok(Bytes::from_static(b"data: [DONE]\n\n"));
        s.completed_streams.fetch_add(1, Ordering::Relaxed);
    };
    let mut resp = Response::new(Body::from_stream(events));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}
