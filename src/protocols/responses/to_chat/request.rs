//! A Responses request as a Chat Completions request.
//!
//! Mapped: `instructions` (a leading system message), `input` (a string or
//! items: messages with `input_text` / `input_image` / `input_file` /
//! `output_text` / `refusal` parts, `function_call` and
//! `function_call_output`; `reasoning` items are dropped, chat has no place
//! for them), `tools` (function tools, also inside a `namespace`),
//! `tool_choice`,
//! `parallel_tool_calls`, `max_output_tokens` (as `max_completion_tokens`,
//! which OpenAI, vLLM and LiteLLM take and OpenAI's reasoning models require
//! instead of `max_tokens`), `temperature`, `top_p`, `reasoning.effort`
//! (`reasoning_effort`), `text.format` (`response_format`), `user`, `stream`
//! (with `stream_options.include_usage`, so the answer can carry usage).
//!
//! Ignored, since only OpenAI's own service gives them a meaning: `include`,
//! `prompt_cache_key`, `prompt_cache_retention`, `service_tier`, `metadata`,
//! `safety_identifier`, `stream_options`, `max_tool_calls`, `top_logprobs`,
//! `text.verbosity`, `reasoning.summary`, `store: false`, `background:
//! false`, `truncation: "disabled"`, and fields this version does not know
//! (a newer client must not break on them).

use bytes::Bytes;
use serde_json::{json, Map, Value};

use crate::error::GatewayError;

type Obj = Map<String, Value>;

fn bad(field: &'static str, message: impl Into<String>) -> GatewayError {
    GatewayError::invalid(message, Some(field))
}

/// The chat request for a Responses request `body`; the model name is kept
/// as the client sent it.
pub fn request(body: &[u8]) -> Result<Bytes, GatewayError> {
    let req: Obj = serde_json::from_slice(body).map_err(|e| {
        GatewayError::invalid(
            format!("We could not parse the JSON body of your request as an object: {e}."),
            None,
        )
    })?;
    refuse_stateful(&req)?;

    let mut chat = Obj::new();
    match req.get("model") {
        Some(Value::String(m)) if !m.is_empty() => {
            chat.insert("model".into(), m.clone().into());
        }
        _ => return Err(bad("model", "you must provide a model parameter")),
    }

    let mut messages = Messages::default();
    match req.get("instructions") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.is_empty() => {}
        Some(Value::String(s)) => messages.push(json!({"role": "system", "content": s})),
        // The API echoes prompt-template instructions as items; accept them too.
        Some(Value::Array(items)) => messages.items(items, "instructions")?,
        Some(_) => return Err(bad("instructions", "instructions must be a string")),
    }
    match req.get("input") {
        Some(Value::String(s)) => messages.push(json!({"role": "user", "content": s})),
        Some(Value::Array(items)) => messages.items(items, "input")?,
        None | Some(Value::Null) => {
            return Err(bad("input", "Missing required parameter: 'input'."));
        }
        Some(_) => {
            return Err(bad(
                "input",
                "input must be a string or an array of input items",
            ))
        }
    }
    if messages.0.is_empty() {
        return Err(bad("input", "input must not be empty"));
    }
    chat.insert("messages".into(), Value::Array(messages.0));

    if let Some(tools) = req.get("tools").filter(|t| !t.is_null()) {
        let tools = tools
            .as_array()
            .ok_or_else(|| bad("tools", "tools must be an array"))?;
        let mut functions = Vec::with_capacity(tools.len());
        for (i, tool) in tools.iter().enumerate() {
            if tool.get("type").and_then(Value::as_str) == Some("namespace") {
                // A group of the client's own functions (Codex sends its
                // sub-agent tools so): each is a chat function of its own.
                let Some(inner) = tool.get("tools").and_then(Value::as_array) else {
                    return Err(bad("tools", format!("tools[{i}].tools must be an array")));
                };
                for t in inner {
                    functions.push(function_tool(i, t)?);
                }
            } else {
                functions.push(function_tool(i, tool)?);
            }
        }
        if !functions.is_empty() {
            chat.insert("tools".into(), Value::Array(functions));
        }
    }
    if let Some(choice) = req.get("tool_choice").filter(|t| !t.is_null()) {
        let choice = tool_choice(choice)?;
        // OpenAI's chat refuses tool settings without tools; the Responses
        // API takes them (a client's defaults), so they go only with tools.
        if chat.contains_key("tools") {
            chat.insert("tool_choice".into(), choice);
        }
    }
    if let Some(p) = req.get("parallel_tool_calls").filter(|v| !v.is_null()) {
        if chat.contains_key("tools") {
            chat.insert("parallel_tool_calls".into(), p.clone());
        }
    }
    for key in ["temperature", "top_p", "user"] {
        if let Some(v) = req.get(key).filter(|v| !v.is_null()) {
            chat.insert(key.into(), v.clone());
        }
    }
    if let Some(max) = req.get("max_output_tokens").filter(|v| !v.is_null()) {
        chat.insert("max_completion_tokens".into(), max.clone());
    }
    if let Some(effort) = req
        .get("reasoning")
        .and_then(|r| r.get("effort"))
        .filter(|v| !v.is_null())
    {
        chat.insert("reasoning_effort".into(), effort.clone());
    }
    if let Some(format) = req
        .get("text")
        .and_then(|t| t.get("format"))
        .filter(|v| !v.is_null())
    {
        if let Some(rf) = response_format(format)? {
            chat.insert("response_format".into(), rf);
        }
    }
    if req.get("stream") == Some(&Value::Bool(true)) {
        chat.insert("stream".into(), true.into());
        chat.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(Bytes::from(
        serde_json::to_vec(&Value::Object(chat)).expect("JSON values serialize"),
    ))
}

/// Features that need OpenAI to keep state between requests.
fn refuse_stateful(req: &Obj) -> Result<(), GatewayError> {
    let set = |k: &str| req.get(k).is_some_and(|v| !v.is_null());
    const NO_STATE: &str =
        "this model's backends serve Chat Completions and the gateway stores no responses";
    if set("previous_response_id") {
        return Err(bad(
            "previous_response_id",
            format!("previous_response_id is not supported: {NO_STATE}; send the whole conversation in `input` instead."),
        ));
    }
    if set("conversation") {
        return Err(bad(
            "conversation",
            format!("conversation is not supported: {NO_STATE}; send the whole conversation in `input` instead."),
        ));
    }
    if req.get("store") == Some(&Value::Bool(true)) {
        return Err(bad(
            "store",
            format!(
                "store: true is not supported: {NO_STATE}; send `store: false` or leave it out."
            ),
        ));
    }
    if req.get("background") == Some(&Value::Bool(true)) {
        return Err(bad(
            "background",
            format!("background: true is not supported: {NO_STATE}, so a background response could never be retrieved."),
        ));
    }
    if set("prompt") {
        return Err(bad(
            "prompt",
            "prompt (a reusable prompt stored at OpenAI) is not supported on this model: its backends serve Chat Completions; send instructions and input instead.",
        ));
    }
    if req.get("truncation").and_then(Value::as_str) == Some("auto") {
        return Err(bad(
            "truncation",
            "truncation: \"auto\" is not supported on this model: its backends serve Chat Completions, which cannot drop earlier turns for you; leave it out.",
        ));
    }
    Ok(())
}

/// Chat messages built from Responses items, in order.
#[derive(Default)]
struct Messages(Vec<Value>);

impl Messages {
    fn push(&mut self, m: Value) {
        self.0.push(m);
    }

    fn items(&mut self, items: &[Value], field: &'static str) -> Result<(), GatewayError> {
        for (i, item) in items.iter().enumerate() {
            let at = || format!("{field}[{i}]");
            let obj = item
                .as_object()
                .ok_or_else(|| bad(field, format!("{} must be an object", at())))?;
            let kind = obj.get("type").and_then(Value::as_str);
            match kind {
                // An "easy" input message has no type.
                None | Some("message") => self.message(obj, field, &at())?,
                Some("function_call") => {
                    let call_id = string(obj, "call_id", field, &at())?;
                    let name = string(obj, "name", field, &at())?;
                    let arguments = string(obj, "arguments", field, &at())?;
                    self.tool_call(json!({
                        "id": call_id,
                        "type": "function",
                        "function": {"name": name, "arguments": arguments},
                    }));
                }
                Some("function_call_output") => {
                    let call_id = string(obj, "call_id", field, &at())?;
                    let content = match obj.get("output") {
                        Some(Value::String(s)) => s.clone(),
                        Some(Value::Array(parts)) => {
                            tool_output_text(parts, field, &format!("{}.output", at()))?
                        }
                        _ => {
                            return Err(bad(
                                field,
                                format!("{}.output must be a string or an array of content parts", at()),
                            ))
                        }
                    };
                    self.push(json!({"role": "tool", "tool_call_id": call_id, "content": content}));
                }
                // Chat has no place for a model's reasoning from earlier turns
                // (and its encrypted content means something to OpenAI only).
                Some("reasoning") => {}
                Some("item_reference") => {
                    return Err(bad(
                        field,
                        format!("{}: item_reference is not supported: the gateway stores no items; send the item itself.", at()),
                    ))
                }
                Some(other) => {
                    return Err(bad(
                        field,
                        format!("{}.type `{other}` is not supported on this model: its backends serve Chat Completions, which know messages, function calls and their outputs only.", at()),
                    ))
                }
            }
        }
        Ok(())
    }

    fn message(&mut self, obj: &Obj, field: &'static str, at: &str) -> Result<(), GatewayError> {
        // Chat templates of open models know system, user, assistant and
        // tool; OpenAI's chat treats system as developer for models that
        // have the distinction, so nothing is lost.
        let role = match obj.get("role").and_then(Value::as_str) {
            Some("developer") | Some("system") => "system",
            Some("user") => "user",
            Some("assistant") => "assistant",
            Some(other) => {
                return Err(bad(
                    field,
                    format!("{at}.role `{other}` is not one of user, assistant, system, developer"),
                ))
            }
            None => return Err(bad(field, format!("{at}.role is required"))),
        };
        let content = match obj.get("content") {
            Some(Value::String(s)) => Value::String(s.clone()),
            Some(Value::Array(parts)) => {
                content_parts(parts, role == "user", field, &format!("{at}.content"))?
            }
            _ => {
                return Err(bad(
                    field,
                    format!("{at}.content must be a string or an array of content parts"),
                ))
            }
        };
        self.push(json!({"role": role, "content": content}));
        Ok(())
    }

    /// Function calls of one turn are one assistant message with several
    /// `tool_calls`, after the text the model said before them, if any.
    fn tool_call(&mut self, call: Value) {
        if let Some(Value::Object(last)) = self.0.last_mut() {
            if last.get("role").and_then(Value::as_str) == Some("assistant") {
                match last.get_mut("tool_calls") {
                    Some(Value::Array(calls)) => calls.push(call),
                    _ => {
                        last.insert("tool_calls".into(), Value::Array(vec![call]));
                    }
                }
                return;
            }
        }
        self.push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
    }
}

fn string(obj: &Obj, key: &str, field: &'static str, at: &str) -> Result<String, GatewayError> {
    match obj.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(bad(field, format!("{at}.{key} must be a string"))),
    }
}

/// A message's parts. User messages keep their parts (text, images, files);
/// the others become one string, which every chat template takes.
fn content_parts(
    parts: &[Value],
    user: bool,
    field: &'static str,
    at: &str,
) -> Result<Value, GatewayError> {
    let mut out = Vec::with_capacity(parts.len());
    let mut all_text = true;
    for (j, part) in parts.iter().enumerate() {
        let at = format!("{at}[{j}]");
        let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
        let text = |key: &str| {
            part.get(key)
                .and_then(Value::as_str)
                .map(|t| json!({"type": "text", "text": t}))
                .ok_or_else(|| bad(field, format!("{at}.{key} must be a string")))
        };
        let converted = match kind {
            "input_text" | "output_text" => text("text")?,
            "refusal" => text("refusal")?,
            "input_image" if user => {
                all_text = false;
                image(part, field, &at)?
            }
            "input_file" if user => {
                all_text = false;
                file(part, field, &at)?
            }
            "input_image" | "input_file" => {
                return Err(bad(
                    field,
                    format!("{at}: `{kind}` is only supported in user messages on this model (its backends serve Chat Completions)"),
                ))
            }
            other => {
                return Err(bad(
                    field,
                    format!("{at}.type `{other}` is not a content part this model's backends (Chat Completions) can take"),
                ))
            }
        };
        out.push(converted);
    }
    if !user || (all_text && out.len() == 1) {
        let texts: Vec<&str> = out
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect();
        return Ok(Value::String(texts.join("\n")));
    }
    Ok(Value::Array(out))
}

fn image(part: &Value, field: &'static str, at: &str) -> Result<Value, GatewayError> {
    let Some(url) = part.get("image_url").and_then(Value::as_str) else {
        return Err(bad(
            field,
            format!("{at}: an image by file_id is not supported (the gateway stores no files); send image_url (a URL or a data: URL)"),
        ));
    };
    let mut image_url = json!({"url": url});
    if let Some(detail) = part.get("detail").filter(|d| !d.is_null()) {
        image_url["detail"] = detail.clone();
    }
    Ok(json!({"type": "image_url", "image_url": image_url}))
}

fn file(part: &Value, field: &'static str, at: &str) -> Result<Value, GatewayError> {
    let Some(data) = part.get("file_data").and_then(Value::as_str) else {
        return Err(bad(
            field,
            format!("{at}: a file by file_id or file_url is not supported on this model (its backends serve Chat Completions); send file_data"),
        ));
    };
    let mut file = json!({"file_data": data});
    if let Some(name) = part.get("filename").and_then(Value::as_str) {
        file["filename"] = name.into();
    }
    Ok(json!({"type": "file", "file": file}))
}

/// A function's output as chat's tool message text (chat tool messages carry
/// text only).
fn tool_output_text(
    parts: &[Value],
    field: &'static str,
    at: &str,
) -> Result<String, GatewayError> {
    let mut texts = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        match part.get("type").and_then(Value::as_str) {
            Some("input_text") | Some("output_text") => match part.get("text") {
                Some(Value::String(t)) => texts.push(t.as_str()),
                _ => return Err(bad(field, format!("{at}[{j}].text must be a string"))),
            },
            other => {
                return Err(bad(
                    field,
                    format!("{at}[{j}].type `{}` is not supported on this model: Chat Completions tool messages carry text only", other.unwrap_or("")),
                ))
            }
        }
    }
    Ok(texts.join("\n"))
}

/// Responses' flat function tool as chat's nested one.
fn function_tool(i: usize, tool: &Value) -> Result<Value, GatewayError> {
    let kind = tool.get("type").and_then(Value::as_str).unwrap_or("");
    if kind != "function" {
        return Err(bad(
            "tools",
            format!("tools[{i}].type `{kind}` is not supported on this model: its backends serve Chat Completions, where the only tools are functions the client runs (web search, file search and the other hosted tools exist only at OpenAI)."),
        ));
    }
    let Some(name) = tool.get("name").and_then(Value::as_str) else {
        return Err(bad("tools", format!("tools[{i}].name must be a string")));
    };
    let mut function = json!({"name": name});
    for key in ["description", "parameters", "strict"] {
        if let Some(v) = tool.get(key).filter(|v| !v.is_null()) {
            function[key] = v.clone();
        }
    }
    Ok(json!({"type": "function", "function": function}))
}

fn tool_choice(choice: &Value) -> Result<Value, GatewayError> {
    let refused = |what: &str| {
        bad(
            "tool_choice",
            format!("tool_choice {what} is not supported on this model: its backends serve Chat Completions (auto, none, required, a function, or allowed_tools of functions)"),
        )
    };
    let function = |t: &Value| -> Result<Value, GatewayError> {
        match (
            t.get("type").and_then(Value::as_str),
            t.get("name").and_then(Value::as_str),
        ) {
            (Some("function"), Some(name)) => {
                Ok(json!({"type": "function", "function": {"name": name}}))
            }
            (kind, _) => Err(refused(&format!("of type `{}`", kind.unwrap_or("")))),
        }
    };
    match choice {
        Value::String(s) if ["auto", "none", "required"].contains(&s.as_str()) => {
            Ok(choice.clone())
        }
        Value::String(s) => Err(refused(&format!("`{s}`"))),
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("allowed_tools") => {
            let tools = o
                .get("tools")
                .and_then(Value::as_array)
                .ok_or_else(|| refused("allowed_tools without a tools array"))?
                .iter()
                .map(function)
                .collect::<Result<Vec<_>, _>>()?;
            let mode = o.get("mode").cloned().unwrap_or_else(|| "auto".into());
            Ok(json!({"type": "allowed_tools", "allowed_tools": {"mode": mode, "tools": tools}}))
        }
        Value::Object(_) => function(choice),
        _ => Err(refused("of this shape")),
    }
}

/// `text.format` as chat's `response_format` (`None`: plain text, the default).
fn response_format(format: &Value) -> Result<Option<Value>, GatewayError> {
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let mut schema = Obj::new();
            for key in ["name", "schema", "strict", "description"] {
                if let Some(v) = format.get(key).filter(|v| !v.is_null()) {
                    schema.insert(key.into(), v.clone());
                }
            }
            if !schema.contains_key("name") {
                return Err(bad("text", "text.format.name is required for json_schema"));
            }
            Ok(Some(json!({"type": "json_schema", "json_schema": schema})))
        }
        other => Err(bad(
            "text",
            format!(
                "text.format.type `{}` is not one of text, json_object, json_schema",
                other.unwrap_or("")
            ),
        )),
    }
}
