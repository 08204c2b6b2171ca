//! `POST /v1/responses`: OpenAI's Responses API, as strict as OpenAI about
//! what it needs and as deterministic as the rest of the fake.
//!
//! References: the request and the response object
//! <https://platform.openai.com/docs/api-reference/responses>, the events
//! <https://platform.openai.com/docs/api-reference/responses-streaming>.
//!
//! * 400 in OpenAI's error envelope for a body without `model` or `input`
//!   (`missing_required_parameter`, `param` named), for Chat Completions'
//!   `max_tokens` or `messages` (`unsupported_parameter`), for a function tool
//!   without a name, and for a `previous_response_id` this fake did not
//!   issue with `store` on (`previous_response_not_found`, as OpenAI answers
//!   an unknown or expired id). Responses are stored (their ids
//!   remembered) unless `store: false`, like OpenAI's default.
//! * The answer is the configured reply (text), or a function call (see
//!   [`crate::tools`] for when), after a `reasoning` item when the fake is
//!   configured with reasoning tokens, as o-series models answer.
//! * `usage`: `input_tokens` = words of `instructions` (+3 when present) +
//!   for each input item, 3 + the words of its `content` text,
//!   `arguments` and `output` (a string `input` is one item);
//!   `input_tokens_details.cached_tokens` = the configured cached tokens (at
//!   most the input); `output_tokens` = reply chunks sent (at most
//!   `max_output_tokens`; a function call counts 2) + the configured
//!   reasoning tokens, which `output_tokens_details.reasoning_tokens` repeats.
//! * `max_output_tokens` below the reply's chunks: `status: "incomplete"`,
//!   `incomplete_details.reason: "max_output_tokens"`, the message item
//!   `incomplete`; streamed, the last event is `response.incomplete`.
//! * Streamed (`stream: true`): `response.created`, `response.in_progress`,
//!   per item `response.output_item.added`, for the message
//!   `response.content_part.added`, one `response.output_text.delta` per
//!   chunk, `response.output_text.done`, `response.content_part.done`, for a
//!   call `response.function_call_arguments.delta` (two) and `.done`, then
//!   `response.output_item.done`, last `response.completed` (or
//!   `.incomplete`) with the whole response and its usage; `sequence_number`
//!   from 0. `Mode::DieMidStream` cuts it after N text deltas,
//!   `Mode::NoUsage` sends `usage: null`.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde_json::{json, Value};

use crate::state::{unix_now, Shared};
use crate::tools::{self, Call, CALL_TOKENS};
use crate::wire::{count_words, json_value, ApiError, PER_MESSAGE_OVERHEAD};
use crate::Mode;

pub async fn create(
    State(s): State<Arc<Shared>>,
    Extension(mode): Extension<Mode>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            return ApiError::invalid_request("The request body must be a JSON object.")
                .into_response()
        }
        Err(e) => return ApiError::bad_json(&e).into_response(),
    };
    // Chat Completions' names, which OpenAI refuses here with a pointer to
    // the Responses API's.
    for (old, new) in [("max_tokens", "max_output_tokens"), ("messages", "input")] {
        if req.get(old).is_some() {
            return ApiError {
                param: Some(old),
                code: Some("unsupported_parameter"),
                ..ApiError::invalid_request(format!(
                    "Unsupported parameter: '{old}'. In the Responses API, this parameter has moved to '{new}'. Try again with the new parameter. See the API documentation for more information: https://platform.openai.com/docs/api-reference/responses/create."
                ))
            }
            .into_response();
        }
    }
    let model = match req.get("model").and_then(Value::as_str) {
        Some(m) if !m.is_empty() => m,
        _ => return ApiError::missing_param("model").into_response(),
    };
    let Some(input) = req.get("input").filter(|v| !v.is_null()) else {
        return ApiError::missing_param("input").into_response();
    };
    if let Some(tools) = req.get("tools").and_then(Value::as_array) {
        for (i, tool) in tools.iter().enumerate() {
            if tool.get("type").and_then(Value::as_str) == Some("function")
                && tool.get("name").and_then(Value::as_str).is_none()
            {
                return ApiError {
                    param: Some("tools"),
                    code: Some("missing_required_parameter"),
                    ..ApiError::invalid_request(format!(
                        "Missing required parameter: 'tools[{i}].name'."
                    ))
                }
                .into_response();
            }
        }
    }
    if let Some(prev) = req.get("previous_response_id").and_then(Value::as_str) {
        if !s.response_stored(prev) {
            return ApiError {
                param: Some("previous_response_id"),
                code: Some("previous_response_not_found"),
                ..ApiError::invalid_request(format!(
                    "Previous response with id '{prev}' not found."
                ))
            }
            .into_response();
        }
    }

    let max_output = req.get("max_output_tokens").and_then(Value::as_u64);
    let plan = s.plan(max_output, &headers);
    let call = tools::pick(
        req.get("tools"),
        req.get("tool_choice"),
        last_user_text(input).as_deref(),
    );
    let n = s.next_id();
    let id = format!("resp_fake{n:08}");
    let store = req.get("store") != Some(&Value::Bool(false));
    if store {
        s.store_response(&id);
    }
    let input_tokens = input_tokens(req.get("instructions"), input);
    let answer_tokens = if call.is_some() {
        CALL_TOKENS
    } else {
        plan.chunks
    };
    let truncated = call.is_none() && plan.finish_reason == "length";
    let usage = (mode != Mode::NoUsage).then(|| {
        let output = answer_tokens + s.reasoning_tokens;
        json!({
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": s.cached_tokens.min(input_tokens)},
            "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": s.reasoning_tokens},
            "total_tokens": input_tokens + output,
        })
    });
    let served = s.served_model.clone().unwrap_or_else(|| model.to_owned());
    let skeleton = skeleton(&req, &id, &served, unix_now());
    let answer = Answer {
        n,
        reasoning: s.reasoning_tokens > 0,
        call,
        truncated,
    };

    if req.get("stream") == Some(&Value::Bool(true)) {
        return stream(s, skeleton, answer, usage, plan, mode);
    }
    let delay = plan
        .delay
        .saturating_mul(u32::try_from(plan.chunks).unwrap_or(u32::MAX));
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let text = s.content(plan.chunks);
    let mut r = skeleton;
    r["output"] = Value::Array(answer.items(&text, "completed"));
    finish(&mut r, truncated, usage);
    json_value(StatusCode::OK, &r)
}

/// What one request is answered with.
struct Answer {
    n: u64,
    reasoning: bool,
    call: Option<Call>,
    truncated: bool,
}

impl Answer {
    fn reasoning_item(&self) -> Value {
        json!({"id": format!("rs_fake{:08}", self.n), "type": "reasoning", "summary": []})
    }

    fn message_item(&self, text: &str, status: &str) -> Value {
        json!({
            "id": format!("msg_fake{:08}", self.n),
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": if status == "in_progress" { json!([]) } else { json!([output_text(text)]) },
        })
    }

    fn call_item(&self, call: &Call, arguments: &str, status: &str) -> Value {
        json!({
            "id": format!("fc_fake{:08}", self.n),
            "type": "function_call",
            "status": status,
            "arguments": arguments,
            "call_id": format!("call_fake{:08}", self.n),
            "name": call.name,
        })
    }

    /// The output items, finished (`status` of the last item: `completed`,
    /// or `incomplete` when the reply was cut by `max_output_tokens`).
    fn items(&self, text: &str, status: &str) -> Vec<Value> {
        let mut out = Vec::new();
        if self.reasoning {
            out.push(self.reasoning_item());
        }
        match &self.call {
            Some(call) => out.push(self.call_item(call, &call.arguments, status)),
            None => out
                .push(self.message_item(text, if self.truncated { "incomplete" } else { status })),
        }
        out
    }
}

fn output_text(text: &str) -> Value {
    json!({"type": "output_text", "annotations": [], "logprobs": [], "text": text})
}

/// The response object before its output: the request's settings echoed
/// with OpenAI's defaults, as the API reference lists them.
fn skeleton(req: &Value, id: &str, model: &str, created_at: u64) -> Value {
    let or = |key: &str, default: Value| {
        req.get(key)
            .filter(|v| !v.is_null())
            .cloned()
            .unwrap_or(default)
    };
    json!({
        "id": id,
        "object": "response",
        "created_at": created_at,
        "status": "in_progress",
        "background": or("background", json!(false)),
        "error": null,
        "incomplete_details": null,
        "instructions": or("instructions", Value::Null),
        "max_output_tokens": or("max_output_tokens", Value::Null),
        "model": model,
        "output": [],
        "parallel_tool_calls": or("parallel_tool_calls", json!(true)),
        "previous_response_id": or("previous_response_id", Value::Null),
        "reasoning": or("reasoning", json!({"effort": null, "summary": null})),
        "store": or("store", json!(true)),
        "temperature": or("temperature", json!(1.0)),
        "text": or("text", json!({"format": {"type": "text"}})),
        "tool_choice": or("tool_choice", json!("auto")),
        "tools": or("tools", json!([])),
        "top_p": or("top_p", json!(1.0)),
        "truncation": or("truncation", json!("disabled")),
        "usage": null,
        "user": or("user", Value::Null),
        "metadata": or("metadata", json!({})),
    })
}

fn finish(r: &mut Value, truncated: bool, usage: Option<Value>) {
    if truncated {
        r["status"] = "incomplete".into();
        r["incomplete_details"] = json!({"reason": "max_output_tokens"});
    } else {
        r["status"] = "completed".into();
    }
    r["usage"] = usage.unwrap_or(Value::Null);
}

/// See the module doc for the rule.
fn input_tokens(instructions: Option<&Value>, input: &Value) -> usize {
    let instructions = match instructions.and_then(Value::as_str) {
        Some(s) if !s.is_empty() => count_words(s) + PER_MESSAGE_OVERHEAD,
        _ => 0,
    };
    let items = match input {
        Value::String(s) => count_words(s) + PER_MESSAGE_OVERHEAD,
        Value::Array(items) => items
            .iter()
            .map(|item| {
                let words = count_words(&tools::text_of(item.get("content")))
                    + item
                        .get("arguments")
                        .and_then(Value::as_str)
                        .map_or(0, count_words)
                    + count_words(&tools::text_of(item.get("output")));
                words + PER_MESSAGE_OVERHEAD
            })
            .sum(),
        _ => 0,
    };
    instructions + items
}

/// The text of the last input item when it is a user message.
fn last_user_text(input: &Value) -> Option<String> {
    match input {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => {
            let last = items.last()?;
            let is_message = matches!(
                last.get("type").and_then(Value::as_str),
                None | Some("message")
            );
            (is_message && last.get("role").and_then(Value::as_str) == Some("user"))
                .then(|| tools::text_of(last.get("content")))
        }
        _ => None,
    }
}

/// `event: <type>` + `data: {...}` with the next sequence number.
struct Events {
    seq: u64,
}

impl Events {
    fn event(&mut self, kind: &str, mut data: Value) -> Bytes {
        data["type"] = kind.into();
        data["sequence_number"] = self.seq.into();
        self.seq += 1;
        Bytes::from(format!("event: {kind}\ndata: {data}\n\n"))
    }
}

fn stream(
    s: Arc<Shared>,
    skeleton: Value,
    answer: Answer,
    usage: Option<Value>,
    plan: crate::state::Plan,
    mode: Mode,
) -> Response {
    let die_after = match mode {
        Mode::DieMidStream { after_chunks } => Some(after_chunks),
        _ => None,
    };
    let events = async_stream::stream! {
        let mut ev = Events { seq: 0 };
        yield Ok(ev.event("response.created", json!({"response": skeleton})));
        yield Ok(ev.event("response.in_progress", json!({"response": skeleton})));
        let mut index = 0;
        if answer.reasoning {
            let item = answer.reasoning_item();
            yield Ok(ev.event("response.output_item.added", json!({"output_index": index, "item": item})));
            yield Ok(ev.event("response.output_item.done", json!({"output_index": index, "item": item})));
            index += 1;
        }
        let last = match &answer.call {
            Some(call) => {
                let item_id = format!("fc_fake{:08}", answer.n);
                yield Ok(ev.event("response.output_item.added", json!({"output_index": index, "item": answer.call_item(call, "", "in_progress")})));
                let (a, b) = call.pieces();
                for piece in [a, b] {
                    if !plan.delay.is_zero() {
                        tokio::time::sleep(plan.delay).await;
                    }
                    s.wait_unheld().await;
                    yield Ok(ev.event("response.function_call_arguments.delta", json!({"item_id": item_id, "output_index": index, "delta": piece})));
                }
                yield Ok(ev.event("response.function_call_arguments.done", json!({"item_id": item_id, "output_index": index, "name": call.name, "arguments": call.arguments})));
                let item = answer.call_item(call, &call.arguments, "completed");
                yield Ok(ev.event("response.output_item.done", json!({"output_index": index, "item": item})));
                item
            }
            None => {
                let item_id = format!("msg_fake{:08}", answer.n);
                yield Ok(ev.event("response.output_item.added", json!({"output_index": index, "item": answer.message_item("", "in_progress")})));
                yield Ok(ev.event("response.content_part.added", json!({"item_id": item_id, "output_index": index, "content_index": 0, "part": output_text("")})));
                for i in 0..plan.chunks {
                    if die_after == Some(i) {
                        break;
                    }
                    if !plan.delay.is_zero() {
                        tokio::time::sleep(plan.delay).await;
                    }
                    s.wait_unheld().await;
                    yield Ok(ev.event("response.output_text.delta", json!({"item_id": item_id, "output_index": index, "content_index": 0, "delta": s.pieces[i].text, "logprobs": []})));
                }
                if die_after.is_some() {
                    // As the chat stream does: flush, then drop the connection.
                    tokio::task::yield_now().await;
                    yield Err(io::Error::new(io::ErrorKind::ConnectionAborted, "fake-upstream: DieMidStream"));
                    return;
                }
                let text = s.content(plan.chunks).into_owned();
                yield Ok(ev.event("response.output_text.done", json!({"item_id": item_id, "output_index": index, "content_index": 0, "text": text, "logprobs": []})));
                yield Ok(ev.event("response.content_part.done", json!({"item_id": item_id, "output_index": index, "content_index": 0, "part": output_text(&text)})));
                let item = answer.message_item(&text, if answer.truncated { "incomplete" } else { "completed" });
                yield Ok(ev.event("response.output_item.done", json!({"output_index": index, "item": item})));
                item
            }
        };
        let mut r = skeleton;
        let mut output = Vec::new();
        if answer.reasoning {
            output.push(answer.reasoning_item());
        }
        output.push(last);
        r["output"] = Value::Array(output);
        finish(&mut r, answer.truncated, usage);
        let kind = if answer.truncated { "response.incomplete" } else { "response.completed" };
        yield Ok(ev.event(kind, json!({"response": r})));
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
