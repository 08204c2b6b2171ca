//! Anthropic's Messages API, as strict as the real one where a gateway could
//! get it wrong, served when the fake is started with [`Provider::Anthropic`]
//! (anything else answers these paths 404, as OpenAI does):
//!
//! * `POST /v1/messages` (<https://docs.anthropic.com/en/api/messages>): a
//!   Message, or with `stream: true` its event stream
//!   (<https://docs.anthropic.com/en/api/messages-streaming>): `message_start`
//!   (usage with `output_tokens: 1`, as the API sends), `content_block_start`,
//!   `ping`, `content_block_delta`s, `content_block_stop`, `message_delta`
//!   (the cumulative usage) and `message_stop`, each as `event:` + `data:`;
//! * `POST /v1/messages/count_tokens`
//!   (<https://docs.anthropic.com/en/api/messages-count-tokens>):
//!   `{"input_tokens": N}`.
//!
//! Both sit behind the gate's `x-api-key` and `anthropic-version` checks;
//! errors are `{"type":"error","error":{"type","message"}}` with the status
//! and `type` of <https://docs.anthropic.com/en/api/errors> (a missing
//! `max_tokens` is `400 invalid_request_error` "max_tokens: Field required").
//!
//! Deterministic accounting, so tests can assert exact numbers:
//!
//! * prompt = words (see [`crate::wire::count_words`]) of the `system` text,
//!   plus for each message 3 + the words of its text: strings, `text` blocks,
//!   and the text of `tool_result` blocks;
//! * of the prompt, `cache_read_input_tokens` = min(`cached_tokens`, prompt)
//!   and `cache_creation_input_tokens` = min(`cache_creation_tokens`, the
//!   rest) (see [`crate::FakeConfig`]); `input_tokens` is what remains, so
//!   the three add up to the prompt as with the real API;
//! * `output_tokens` = text chunks sent = min(`chunks`, `max_tokens`)
//!   (`stop_reason` `max_tokens` when that cut the reply, else `end_turn`),
//!   or 2 for a tool call;
//! * `count_tokens` answers the prompt count (tools add nothing).
//!
//! Tool calls follow the chat fake's rule: with `tools`, a `tool_choice` of
//! `any` or `tool` (that one), or `auto` when the last message is the user's
//! text naming a tool, the answer is one `tool_use` block (id `toolu_fake_N`,
//! each `required` parameter set to `"fake-<name>"`), `stop_reason`
//! `tool_use`; streamed, its input arrives as an empty `input_json_delta`
//! and then two halves. A `tool_result` as the last turn gets text.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde_json::{json, Map, Value};

use crate::state::{Plan, Shared};
use crate::wire::{count_words, json_response};
use crate::{Mode, Provider};

/// Output tokens of a `tool_use` answer: those of the chat fake's calls.
pub const TOOL_USE_TOKENS: usize = crate::tools::CALL_TOKENS;

/// `{"type":"error","error":{"type","message"}}` with its status.
pub fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    json_response(
        status,
        json!({"type": "error", "error": {"type": kind, "message": message}}).to_string(),
    )
}

/// The error `type` Anthropic gives a status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    }
}

/// What `Mode::Fail(status)` answers on an Anthropic fake (the API's own
/// wording for 500 and 529).
pub fn injected(status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let message = match status.as_u16() {
        529 => "Overloaded",
        _ => "Internal server error",
    };
    error(status, error_type(status.as_u16()), message)
}

/// What `Mode::RateLimited` answers on an Anthropic fake: 429 with
/// `retry-after` and the `anthropic-ratelimit-*` headers at zero
/// (<https://docs.anthropic.com/en/api/rate-limits#response-headers>).
pub fn rate_limited(retry_after_secs: u32) -> Response {
    let mut resp = error(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit_error",
        "This request would exceed the rate limit for your organization of 50 requests per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits.",
    );
    let h = resp.headers_mut();
    h.insert("retry-after", retry_after_secs.into());
    h.insert("anthropic-ratelimit-requests-limit", 50.into());
    h.insert("anthropic-ratelimit-requests-remaining", 0.into());
    resp
}

fn invalid(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, "invalid_request_error", message)
}

fn served(s: &Shared) -> bool {
    matches!(s.provider, Provider::Anthropic { .. })
}

fn openai_not_found(path: &str) -> Response {
    crate::wire::ApiError::not_found("POST", path).into_response()
}

/// The request, checked as the API checks it.
fn parse(body: &[u8], count_only: bool) -> Result<Map<String, Value>, Box<Response>> {
    let refuse = |message: &str| Err(Box::new(invalid(message)));
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return refuse(&format!("There was an error parsing the body: {e}")),
    };
    let Value::Object(req) = v else {
        return refuse("Input should be a valid dictionary");
    };
    if !req.get("model").is_some_and(Value::is_string) {
        return refuse("model: Field required");
    }
    if !count_only && !req.get("max_tokens").is_some_and(Value::is_u64) {
        return refuse("max_tokens: Field required");
    }
    match req.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => Ok(req),
        Some(Value::Array(_)) => refuse("messages: at least one message is required"),
        _ => refuse("messages: Field required"),
    }
}

fn text_words(content: Option<&Value>) -> usize {
    match content {
        Some(Value::String(s)) => count_words(s),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .map(|b| match b.get("type").and_then(Value::as_str) {
                Some("text") => b.get("text").and_then(Value::as_str).map_or(0, count_words),
                Some("tool_result") => text_words(b.get("content")),
                _ => 0,
            })
            .sum(),
        _ => 0,
    }
}

/// The prompt's tokens (see the module docs).
pub fn prompt_tokens(req: &Map<String, Value>) -> usize {
    let system = text_words(req.get("system"));
    let messages = req.get("messages").and_then(Value::as_array);
    system
        + messages
            .into_iter()
            .flatten()
            .map(|m| 3 + text_words(m.get("content")))
            .sum::<usize>()
}

/// The tool call the request is answered with, if any: (name, input).
fn tool_call(req: &Map<String, Value>) -> Option<(String, Value)> {
    let tools = req.get("tools")?.as_array()?;
    let choice = req.get("tool_choice");
    let kind = choice.and_then(|c| c.get("type")).and_then(Value::as_str);
    let named = |name: &str| {
        tools
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some(name))
    };
    let tool = match kind {
        Some("none") => None,
        Some("any") => tools.first(),
        Some("tool") => named(choice?.get("name")?.as_str()?),
        _ => {
            let last = req.get("messages")?.as_array()?.last()?;
            if last.get("role").and_then(Value::as_str) != Some("user") {
                return None;
            }
            let text = match last.get("content") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(blocks)) => {
                    if blocks
                        .iter()
                        .any(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
                    {
                        return None;
                    }
                    blocks
                        .iter()
                        .filter_map(|b| b.get("text").and_then(Value::as_str))
                        .collect::<Vec<_>>()
                        .join(" ")
                }
                _ => return None,
            };
            tools.iter().find(|t| {
                t.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| text.contains(n))
            })
        }
    }?;
    let mut input = Map::new();
    let required = tool
        .get("input_schema")
        .and_then(|s| s.get("required"))
        .and_then(Value::as_array);
    for name in required.into_iter().flatten().filter_map(Value::as_str) {
        input.insert(name.to_owned(), Value::String(format!("fake-{name}")));
    }
    Some((tool.get("name")?.as_str()?.to_owned(), Value::Object(input)))
}

/// Anthropic's `usage` for a prompt and an output.
fn usage(s: &Shared, prompt: usize, output: usize) -> Value {
    let read = s.cached_tokens.min(prompt);
    let written = s.cache_creation_tokens.min(prompt - read);
    json!({
        "input_tokens": prompt - read - written,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": read,
        "cache_creation": {"ephemeral_5m_input_tokens": written, "ephemeral_1h_input_tokens": 0},
        "output_tokens": output,
        "service_tier": "standard",
    })
}

/// `POST /v1/messages/count_tokens`.
pub async fn count_tokens(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    if !served(&s) {
        return openai_not_found("/v1/messages/count_tokens");
    }
    match parse(&body, true) {
        Ok(req) => json_response(
            StatusCode::OK,
            json!({"input_tokens": prompt_tokens(&req)}).to_string(),
        ),
        Err(refused) => *refused,
    }
}

/// `POST /v1/messages`.
pub async fn messages(
    State(s): State<Arc<Shared>>,
    Extension(mode): Extension<Mode>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !served(&s) {
        return openai_not_found("/v1/messages");
    }
    let req = match parse(&body, false) {
        Ok(r) => r,
        Err(refused) => return *refused,
    };
    let model = req["model"].as_str().unwrap_or_default().to_owned();
    let plan = s.plan(req["max_tokens"].as_u64(), &headers);
    let prompt = prompt_tokens(&req);
    let id = format!("msg_fake_{}", s.next_id());
    let call = tool_call(&req);
    let (stop_reason, output) = match (&call, plan.finish_reason) {
        (Some(_), _) => ("tool_use", TOOL_USE_TOKENS),
        (None, "length") => ("max_tokens", plan.chunks),
        (None, _) => ("end_turn", plan.chunks),
    };
    if req.get("stream").and_then(Value::as_bool) == Some(true) {
        let answer = StreamAnswer {
            id,
            model,
            call,
            stop_reason,
            start_usage: usage(&s, prompt, 1),
            end_usage: usage(&s, prompt, output),
        };
        return stream(s, answer, plan, mode);
    }
    crate::handlers::sleep_for_chunks(plan).await;
    let content = match &call {
        Some((name, input)) => json!([{
            "type": "tool_use", "id": format!("toolu_fake_{}", s.next_id()), "name": name, "input": input,
        }]),
        None => json!([{"type": "text", "text": s.content(plan.chunks)}]),
    };
    json_response(
        StatusCode::OK,
        json!({
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": null,
            "usage": usage(&s, prompt, output),
        })
        .to_string(),
    )
}

struct StreamAnswer {
    id: String,
    model: String,
    call: Option<(String, Value)>,
    stop_reason: &'static str,
    start_usage: Value,
    end_usage: Value,
}

fn event(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

fn delta(index: usize, delta: Value) -> Bytes {
    event(
        "content_block_delta",
        &json!({"type": "content_block_delta", "index": index, "delta": delta}),
    )
}

/// The event stream. `Mode::DieMidStream` drops the connection after
/// `after_chunks` text deltas, as a failing server would.
fn stream(s: Arc<Shared>, a: StreamAnswer, plan: Plan, mode: Mode) -> Response {
    let die_after = match mode {
        Mode::DieMidStream { after_chunks } => Some(after_chunks),
        _ => None,
    };
    let events = async_stream::stream! {
        yield Ok::<_, io::Error>(event("message_start", &json!({
            "type": "message_start",
            "message": {
                "id": a.id, "type": "message", "role": "assistant", "model": a.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": a.start_usage,
            },
        })));
        let block = match &a.call {
            Some((name, _)) => json!({"type": "tool_use", "id": format!("toolu_fake_{}", s.next_id()), "name": name, "input": {}}),
            None => json!({"type": "text", "text": ""}),
        };
        yield Ok(event("content_block_start", &json!({"type": "content_block_start", "index": 0, "content_block": block})));
        yield Ok(event("ping", &json!({"type": "ping"})));
        match &a.call {
            Some((_, input)) => {
                let json = input.to_string();
                let mid = json.len() / 2;
                let mid = (mid..=json.len()).find(|&i| json.is_char_boundary(i)).unwrap_or(json.len());
                for piece in ["", &json[..mid], &json[mid..]] {
                    s.wait_unheld().await;
                    yield Ok(delta(0, json!({"type": "input_json_delta", "partial_json": piece})));
                }
            }
            None => {
                for i in 0..plan.chunks {
                    if die_after == Some(i) {
                        tokio::task::yield_now().await;
                        yield Err(io::Error::new(io::ErrorKind::ConnectionAborted, "fake-upstream: DieMidStream"));
                        return;
                    }
                    if !plan.delay.is_zero() {
                        tokio::time::sleep(plan.delay).await;
                    }
                    s.wait_unheld().await;
                    yield Ok(delta(0, json!({"type": "text_delta", "text": s.pieces[i].text})));
                }
            }
        }
        yield Ok(event("content_block_stop", &json!({"type": "content_block_stop", "index": 0})));
        yield Ok(event("message_delta", &json!({
            "type": "message_delta",
            "delta": {"stop_reason": a.stop_reason, "stop_sequence": null},
            "usage": {
                "input_tokens": a.end_usage["input_tokens"],
                "cache_creation_input_tokens": a.end_usage["cache_creation_input_tokens"],
                "cache_read_input_tokens": a.end_usage["cache_read_input_tokens"],
                "output_tokens": a.end_usage["output_tokens"],
            },
        })));
        yield Ok(event("message_stop", &json!({"type": "message_stop"})));
        s.completed_streams.fetch_add(1, Ordering::Relaxed);
    };
    let mut resp = Response::new(Body::from_stream(events));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn prompt_counts_system_text_and_tool_results() {
        let r = req(json!({
            "system": [{"type": "text", "text": "be brief"}],
            "messages": [
                {"role": "user", "content": "one two three"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "four five"}]}]}
            ]
        }));
        assert_eq!(prompt_tokens(&r), 2 + (3 + 3) + 3 + (3 + 2));
    }

    #[test]
    fn tools_are_called_by_name_or_choice() {
        let tools = json!([{"name": "get_weather", "input_schema": {"type": "object", "required": ["city"]}}]);
        let asked = req(
            json!({"tools": tools, "messages": [{"role": "user", "content": "get_weather please"}]}),
        );
        assert_eq!(
            tool_call(&asked),
            Some(("get_weather".into(), json!({"city": "fake-city"})))
        );
        let chat = req(json!({"tools": tools, "messages": [{"role": "user", "content": "hello"}]}));
        assert_eq!(tool_call(&chat), None);
        let any = req(
            json!({"tools": tools, "tool_choice": {"type": "any"}, "messages": [{"role": "user", "content": "hello"}]}),
        );
        assert!(tool_call(&any).is_some());
        let answered = req(
            json!({"tools": tools, "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "sunny get_weather"}]}]}),
        );
        assert_eq!(tool_call(&answered), None);
    }
}
