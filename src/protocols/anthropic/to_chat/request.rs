//! A Messages request (<https://docs.anthropic.com/en/api/messages>) rewritten
//! as a Chat Completions request
//! (<https://platform.openai.com/docs/api-reference/chat/create>).
//!
//! What has no Chat Completions equivalent is either dropped because it only
//! tunes Anthropic's servers (`cache_control`, `context_management`,
//! `service_tier`, `top_k`, earlier turns' `thinking` blocks), or refused with
//! a 400 naming the field (server tools, document sources other than base64
//! PDFs and plain text, `mcp_servers`, `container`): a request is never
//! forwarded with part of its meaning silently missing.

use serde::Serialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::error::GatewayError;

/// What the translated body is for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    /// `POST /v1/messages`: `max_tokens` is required.
    Create,
    /// `POST /v1/messages/count_tokens`: the same body without `max_tokens`.
    CountTokens,
}

/// Top-level fields of the Chat request, in the order OpenAI documents them
/// (a readable body in logs and fixtures).
#[derive(Serialize)]
pub(super) struct ChatRequest {
    model: Value,
    pub(super) messages: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) tools: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_effort: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<Value>,
}

fn invalid(message: String, param: &'static str) -> GatewayError {
    GatewayError::invalid(message, Some(param))
}

/// Top-level fields whose meaning an OpenAI-compatible backend cannot honour.
const REFUSED_FIELDS: &[(&str, &str)] = &[
    (
        "mcp_servers",
        "MCP connectors run on Anthropic's servers; this model is served by an OpenAI-compatible backend",
    ),
    (
        "container",
        "containers (code execution, skills) run on Anthropic's servers; this model is served by an OpenAI-compatible backend",
    ),
];

pub(super) fn translate(body: &[u8], purpose: Purpose) -> Result<ChatRequest, GatewayError> {
    let root: Value = serde_json::from_slice(body).map_err(|e| {
        GatewayError::invalid(format!("The request body is not valid JSON: {e}"), None)
    })?;
    let Value::Object(req) = root else {
        return Err(GatewayError::invalid(
            "The request body must be a JSON object.",
            None,
        ));
    };
    for (field, why) in REFUSED_FIELDS {
        if req.get(*field).is_some_and(|v| !v.is_null()) {
            return Err(invalid(format!("{field}: {why}."), field));
        }
    }
    let model = match req.get("model") {
        Some(m @ Value::String(s)) if !s.is_empty() => m.clone(),
        _ => return Err(invalid("model: Field required".into(), "model")),
    };
    let max_tokens = match (req.get("max_tokens"), purpose) {
        (Some(v), _) if !v.is_null() => match v.as_u64() {
            Some(n) if n >= 1 => Some(n),
            _ => {
                return Err(invalid(
                    "max_tokens: Input should be a positive integer".into(),
                    "max_tokens",
                ))
            }
        },
        (_, Purpose::Create) => {
            return Err(invalid("max_tokens: Field required".into(), "max_tokens"))
        }
        (_, Purpose::CountTokens) => None,
    };

    let mut messages = Vec::new();
    if let Some(system) = system_text(req.get("system"))? {
        messages.push(json!({"role": "system", "content": system}));
    }
    let Some(Value::Array(turns)) = req.get("messages") else {
        return Err(invalid("messages: Field required".into(), "messages"));
    };
    for (i, turn) in turns.iter().enumerate() {
        push_turn(&mut messages, i, turn)?;
    }

    let tools = match req.get("tools") {
        None | Some(Value::Null) => None,
        Some(Value::Array(t)) if t.is_empty() => None,
        Some(Value::Array(t)) => Some(
            t.iter()
                .enumerate()
                .map(|(i, t)| tool(i, t))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => {
            return Err(invalid(
                "tools: Input should be a valid list".into(),
                "tools",
            ))
        }
    };
    let (tool_choice, parallel_tool_calls) = match (&tools, req.get("tool_choice")) {
        // Chat Completions refuses `tool_choice` without tools.
        (None, _) | (_, None | Some(Value::Null)) => (None, None),
        (Some(_), Some(choice)) => tool_choice(choice)?,
    };

    let stop = match req.get("stop_sequences") {
        None | Some(Value::Null) => None,
        Some(Value::Array(s)) if s.is_empty() => None,
        Some(Value::Array(s)) => Some(
            s.iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    invalid(
                        "stop_sequences: Input should be a list of strings".into(),
                        "stop_sequences",
                    )
                })?,
        ),
        Some(_) => {
            return Err(invalid(
                "stop_sequences: Input should be a valid list".into(),
                "stop_sequences",
            ))
        }
    };

    let stream = req.get("stream").and_then(Value::as_bool) == Some(true);
    Ok(ChatRequest {
        model,
        messages,
        max_tokens,
        temperature: number(&req, "temperature")?,
        top_p: number(&req, "top_p")?,
        stop,
        tools,
        tool_choice,
        parallel_tool_calls,
        reasoning_effort: reasoning_effort(req.get("thinking"))?,
        user: req
            .get("metadata")
            .and_then(|m| m.get("user_id"))
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty())
            .map(openai_user),
        stream: stream.then_some(true),
        // The usage chunk is what bills a translated stream and fills the
        // client's `message_delta.usage`.
        stream_options: stream.then(|| json!({"include_usage": true})),
    })
}

/// `metadata.user_id` as Chat's `user`. OpenAI refuses a `user` over 64
/// characters (OpenRouter over 128), and Claude Code's ids are longer (~150,
/// or a JSON object in newer versions): a longer id is sent as its SHA-256,
/// which still tells one user from another.
fn openai_user(id: &str) -> String {
    if id.len() <= 64 {
        id.to_owned()
    } else {
        hex::encode(Sha256::digest(id.as_bytes()))
    }
}

fn number(req: &Map<String, Value>, field: &'static str) -> Result<Option<Value>, GatewayError> {
    match req.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Number(_)) => Ok(Some(v.clone())),
        Some(_) => Err(invalid(
            format!("{field}: Input should be a valid number"),
            field,
        )),
    }
}

const BILLING_HEADER: &str = "x-anthropic-billing-header:";

/// `system`: a string or a list of text blocks (their `cache_control` only
/// steers Anthropic's prompt cache), joined into one system message.
fn system_text(system: Option<&Value>) -> Result<Option<String>, GatewayError> {
    match system {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Array(blocks)) => {
            let mut texts = Vec::with_capacity(blocks.len());
            for (i, b) in blocks.iter().enumerate() {
                match (block_type(b), b.get("text").and_then(Value::as_str)) {
                    // Claude Code's first system block is metadata for
                    // Anthropic's billing that changes with every request
                    // (`cch=`); left in, it would start every prompt with
                    // new text and defeat the backend's prefix cache.
                    ("text", Some(t)) if t.starts_with(BILLING_HEADER) => {}
                    ("text", Some(t)) => texts.push(t),
                    ("text", None) => {
                        return Err(invalid(
                            format!("system.{i}.text: Field required"),
                            "system",
                        ))
                    }
                    (other, _) => {
                        return Err(invalid(
                            format!("system.{i}.type: only `text` blocks can be a system prompt, not `{other}`"),
                            "system",
                        ))
                    }
                }
            }
            Ok((!texts.is_empty()).then(|| texts.join("\n")))
        }
        Some(_) => Err(invalid(
            "system: Input should be a string or a list of text blocks".into(),
            "system",
        )),
    }
}

fn block_type(b: &Value) -> &str {
    b.get("type").and_then(Value::as_str).unwrap_or("")
}

/// One Messages turn as one or more Chat messages.
fn push_turn(out: &mut Vec<Value>, i: usize, turn: &Value) -> Result<(), GatewayError> {
    let role = turn.get("role").and_then(Value::as_str).unwrap_or("");
    let content = turn.get("content");
    match (role, content) {
        ("user" | "assistant", Some(Value::String(text))) => {
            out.push(json!({"role": role, "content": text}));
            Ok(())
        }
        ("user", Some(Value::Array(blocks))) => push_user(out, i, blocks),
        ("assistant", Some(Value::Array(blocks))) => push_assistant(out, i, blocks),
        ("user" | "assistant", _) => Err(invalid(
            format!("messages.{i}.content: Input should be a string or a list of content blocks"),
            "messages",
        )),
        _ => Err(invalid(
            format!("messages.{i}.role: Input should be 'user' or 'assistant'"),
            "messages",
        )),
    }
}

fn unsupported_block(i: usize, j: usize, kind: &str) -> GatewayError {
    invalid(
        format!(
            "messages.{i}.content.{j}.type: content blocks of type `{kind}` cannot be sent to this model (it is served by an OpenAI-compatible backend)"
        ),
        "messages",
    )
}

/// A user turn: `tool_result` blocks become `role: tool` messages, which Chat
/// Completions wants right after the assistant's `tool_calls`, so they go
/// first; text, images and documents follow as one user message.
fn push_user(out: &mut Vec<Value>, i: usize, blocks: &[Value]) -> Result<(), GatewayError> {
    let mut parts = Vec::new();
    let mut tool_images = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        match block_type(b) {
            "text" => parts.push(text_part(i, j, b)?),
            "image" => parts.push(image_part(i, j, b)?),
            "document" => parts.push(document_part(i, j, b)?),
            "tool_result" => out.push(tool_message(i, j, b, &mut tool_images)?),
            other => return Err(unsupported_block(i, j, other)),
        }
    }
    // A tool message can only hold text: images a tool returned reach the
    // model in the user message that follows its result.
    parts.extend(tool_images);
    if parts.is_empty() && out.last().is_some_and(|m| m["role"] == "tool") {
        return Ok(());
    }
    let content = match parts.as_slice() {
        [only] if only["type"] == "text" => only["text"].clone(),
        _ => Value::Array(parts),
    };
    out.push(json!({"role": "user", "content": content}));
    Ok(())
}

fn text_part(i: usize, j: usize, b: &Value) -> Result<Value, GatewayError> {
    match b.get("text").and_then(Value::as_str) {
        Some(t) => Ok(json!({"type": "text", "text": t})),
        None => Err(invalid(
            format!("messages.{i}.content.{j}.text: Field required"),
            "messages",
        )),
    }
}

/// `image` with a base64 or URL source, as OpenAI's `image_url` part (a data
/// URL for base64).
fn image_part(i: usize, j: usize, b: &Value) -> Result<Value, GatewayError> {
    let source = b.get("source");
    let kind = source
        .and_then(|s| s.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let str_field = |name: &str| source.and_then(|s| s.get(name)).and_then(Value::as_str);
    let url = match kind {
        "base64" => match (str_field("media_type"), str_field("data")) {
            (Some(media), Some(data)) => format!("data:{media};base64,{data}"),
            _ => {
                return Err(invalid(
                    format!("messages.{i}.content.{j}.source: a base64 image needs `media_type` and `data`"),
                    "messages",
                ))
            }
        },
        "url" => match str_field("url") {
            Some(u) => u.to_owned(),
            None => {
                return Err(invalid(
                    format!("messages.{i}.content.{j}.source.url: Field required"),
                    "messages",
                ))
            }
        },
        other => {
            return Err(invalid(
                format!("messages.{i}.content.{j}.source.type: image sources of type `{other}` cannot be sent to this model (only `base64` and `url`)"),
                "messages",
            ))
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// `document`: a base64 PDF becomes OpenAI's `file` part, plain text a text
/// part; other sources (URLs, Files API ids) have no Chat equivalent.
fn document_part(i: usize, j: usize, b: &Value) -> Result<Value, GatewayError> {
    let source = b.get("source");
    let field = |name: &str| source.and_then(|s| s.get(name)).and_then(Value::as_str);
    match (field("type"), field("media_type"), field("data")) {
        (Some("base64"), Some(media @ "application/pdf"), Some(data)) => {
            let filename = b
                .get("title")
                .and_then(Value::as_str)
                .unwrap_or("document.pdf");
            Ok(json!({"type": "file", "file": {
                "filename": filename,
                "file_data": format!("data:{media};base64,{data}"),
            }}))
        }
        (Some("text"), _, Some(text)) => Ok(json!({"type": "text", "text": text})),
        (kind, _, _) => Err(invalid(
            format!(
                "messages.{i}.content.{j}.source: documents of source type `{}` cannot be sent to this model (only base64 PDFs and plain text)",
                kind.unwrap_or("")
            ),
            "messages",
        )),
    }
}

/// `tool_result` as a `role: tool` message. Chat has no error flag, so an
/// error result says so in its text.
fn tool_message(
    i: usize,
    j: usize,
    b: &Value,
    images: &mut Vec<Value>,
) -> Result<Value, GatewayError> {
    let Some(id) = b.get("tool_use_id").and_then(Value::as_str) else {
        return Err(invalid(
            format!("messages.{i}.content.{j}.tool_use_id: Field required"),
            "messages",
        ));
    };
    let mut text = match b.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(inner)) => {
            let mut texts = Vec::new();
            for (k, c) in inner.iter().enumerate() {
                match block_type(c) {
                    "text" => texts.push(c.get("text").and_then(Value::as_str).unwrap_or("")),
                    "image" => images.push(image_part(i, j, c)?),
                    other => {
                        return Err(invalid(
                            format!("messages.{i}.content.{j}.content.{k}.type: tool results of type `{other}` cannot be sent to this model"),
                            "messages",
                        ))
                    }
                }
            }
            texts.join("\n")
        }
        Some(_) => {
            return Err(invalid(
                format!("messages.{i}.content.{j}.content: Input should be a string or a list of content blocks"),
                "messages",
            ))
        }
    };
    if b.get("is_error").and_then(Value::as_bool) == Some(true) {
        text.insert_str(0, "Error: ");
    }
    Ok(json!({"role": "tool", "tool_call_id": id, "content": text}))
}

/// An assistant turn: text blocks joined, `tool_use` blocks as `tool_calls`
/// (arguments as a JSON string). `thinking` blocks are dropped: OpenAI-style
/// backends take no reasoning back in the history.
fn push_assistant(out: &mut Vec<Value>, i: usize, blocks: &[Value]) -> Result<(), GatewayError> {
    let mut text = String::new();
    let mut calls = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        match block_type(b) {
            "text" => {
                if let Value::String(t) = text_part(i, j, b)?["text"].take() {
                    text.push_str(&t);
                }
            }
            "tool_use" => {
                let (Some(id), Some(name)) = (
                    b.get("id").and_then(Value::as_str),
                    b.get("name").and_then(Value::as_str),
                ) else {
                    return Err(invalid(
                        format!("messages.{i}.content.{j}: a tool_use block needs `id` and `name`"),
                        "messages",
                    ));
                };
                let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({
                    "id": id,
                    "type": "function",
                    "function": {"name": name, "arguments": input.to_string()},
                }));
            }
            "thinking" | "redacted_thinking" => {}
            other => return Err(unsupported_block(i, j, other)),
        }
    }
    let mut msg = json!({"role": "assistant", "content": text});
    if !calls.is_empty() {
        if text.is_empty() {
            msg["content"] = Value::Null;
        }
        msg["tool_calls"] = Value::Array(calls);
    }
    out.push(msg);
    Ok(())
}

/// A custom tool as a Chat function. Anthropic's versioned tools
/// (`web_search_20250305`, `bash_20250124`, ...) run on its servers or follow
/// its own schemas, so they are refused rather than half-served.
fn tool(i: usize, t: &Value) -> Result<Value, GatewayError> {
    match t.get("type").and_then(Value::as_str) {
        None | Some("custom") => {}
        Some(other) => {
            return Err(invalid(
                format!("tools.{i}.type: tools of type `{other}` are Anthropic-defined and cannot be used with this model (it is served by an OpenAI-compatible backend)"),
                "tools",
            ))
        }
    }
    let Some(name) = t.get("name").and_then(Value::as_str) else {
        return Err(invalid(format!("tools.{i}.name: Field required"), "tools"));
    };
    let Some(schema) = t.get("input_schema").filter(|s| s.is_object()) else {
        return Err(invalid(
            format!("tools.{i}.input_schema: Field required"),
            "tools",
        ));
    };
    let mut function = json!({"name": name, "parameters": schema});
    if let Some(d) = t.get("description").and_then(Value::as_str) {
        function["description"] = d.into();
    }
    if let Some(strict) = t.get("strict").and_then(Value::as_bool) {
        function["strict"] = strict.into();
    }
    Ok(json!({"type": "function", "function": function}))
}

/// `tool_choice` and its `disable_parallel_tool_use`.
fn tool_choice(choice: &Value) -> Result<(Option<Value>, Option<bool>), GatewayError> {
    let kind = choice.get("type").and_then(Value::as_str).unwrap_or("");
    let mapped = match kind {
        "auto" => json!("auto"),
        "any" => json!("required"),
        "none" => return Ok((Some(json!("none")), None)),
        "tool" => match choice.get("name").and_then(Value::as_str) {
            Some(name) => json!({"type": "function", "function": {"name": name}}),
            None => {
                return Err(invalid(
                    "tool_choice.name: Field required".into(),
                    "tool_choice",
                ))
            }
        },
        other => {
            return Err(invalid(
                format!(
                "tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none', not `{other}`"
            ),
                "tool_choice",
            ))
        }
    };
    let parallel = (choice
        .get("disable_parallel_tool_use")
        .and_then(Value::as_bool)
        == Some(true))
    .then_some(false);
    Ok((Some(mapped), parallel))
}

/// `thinking: {type: enabled, budget_tokens}` as OpenAI's `reasoning_effort`.
/// Anthropic's smallest budget (1024) is "low"; Claude Code's "think" (4k)
/// is "medium", its "think hard" (10k) and "ultrathink" (~32k) "high".
fn reasoning_effort(thinking: Option<&Value>) -> Result<Option<&'static str>, GatewayError> {
    let Some(t) = thinking.filter(|t| !t.is_null()) else {
        return Ok(None);
    };
    match t.get("type").and_then(Value::as_str) {
        Some("enabled") => {
            let budget = t
                .get("budget_tokens")
                .and_then(Value::as_u64)
                .ok_or_else(|| {
                    invalid("thinking.budget_tokens: Field required".into(), "thinking")
                })?;
            Ok(Some(match budget {
                0..=2047 => "low",
                2048..=8191 => "medium",
                _ => "high",
            }))
        }
        // `adaptive` leaves the depth to the model, as a reasoning model
        // without `reasoning_effort` does.
        Some("disabled" | "adaptive") => Ok(None),
        _ => Err(invalid(
            "thinking.type: Input should be 'enabled', 'disabled' or 'adaptive'".into(),
            "thinking",
        )),
    }
}
