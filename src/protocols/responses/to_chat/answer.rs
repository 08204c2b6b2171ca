//! The upstream's Chat Completions answer, read as it arrives and written as
//! the Responses API answer the client asked for.
//!
//! What the client gets depends on whether it asked for a stream, not on
//! what the upstream sent: a server that answers a streaming request with
//! one JSON object still gives the client events, and a stream given to a
//! client that wanted JSON becomes one response object. An error answer
//! (status >= 400) is OpenAI's error JSON in both APIs and passes untouched.

use bytes::Bytes;
use serde_json::Value;

use super::stream::{Machine, CUT};
use crate::protocols::AnswerTranslator;

pub struct Answer {
    machine: Machine,
    stream: bool,
    upstream: Upstream,
}

enum Upstream {
    /// Before the header.
    Unknown,
    /// An error answer, passed through.
    Error,
    /// SSE: the bytes of the line being read, and the `data:` of the event
    /// being read.
    Sse { line: Vec<u8>, data: Vec<u8> },
    /// A JSON body, kept until its end (the gateway bounds it).
    Json(Vec<u8>),
}

impl Answer {
    /// `response_id`: `resp_...`, also the root of the output items' ids.
    pub fn new(client_model: &str, stream: bool, response_id: &str) -> Self {
        Self {
            machine: Machine::new(response_id, client_model, stream),
            stream,
            upstream: Upstream::Unknown,
        }
    }
}

impl AnswerTranslator for Answer {
    fn on_header(&mut self, status: u16, content_type: Option<&str>) -> &'static str {
        if status >= 400 {
            self.upstream = Upstream::Error;
            return "application/json";
        }
        let sse = content_type.is_some_and(|c| {
            c.trim_start()
                .get(..17)
                .is_some_and(|t| t.eq_ignore_ascii_case("text/event-stream"))
        });
        self.upstream = if sse {
            Upstream::Sse {
                line: Vec::new(),
                data: Vec::new(),
            }
        } else {
            Upstream::Json(Vec::new())
        };
        if self.stream {
            "text/event-stream"
        } else {
            "application/json"
        }
    }

    fn on_body(&mut self, body: &mut Option<Bytes>, end_of_stream: bool) {
        let mut out = Vec::new();
        match &mut self.upstream {
            Upstream::Unknown | Upstream::Error => return,
            Upstream::Sse { line, data } => {
                if let Some(b) = body.as_deref() {
                    sse(&mut self.machine, line, data, b, &mut out);
                }
                if end_of_stream {
                    // A last line without its newline, and a last event
                    // without its blank line, still count.
                    if !line.is_empty() {
                        let rest = std::mem::take(line);
                        sse_line(&mut self.machine, data, &rest, &mut out);
                    }
                    dispatch(&mut self.machine, data, &mut out);
                }
            }
            Upstream::Json(buf) => {
                if let Some(b) = body.as_deref() {
                    buf.extend_from_slice(b);
                }
                if end_of_stream {
                    let buf = std::mem::take(buf);
                    completion(&mut self.machine, &buf, &mut out);
                }
            }
        }
        if end_of_stream && !self.machine.ended() {
            if self.machine.finished() {
                self.machine.end(&mut out);
            } else {
                self.machine.fail(CUT.to_owned(), &mut out);
            }
        }
        *body = (!out.is_empty()).then(|| Bytes::from(out));
    }
}

fn sse(m: &mut Machine, line: &mut Vec<u8>, data: &mut Vec<u8>, bytes: &[u8], out: &mut Vec<u8>) {
    let mut rest = bytes;
    while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
        if line.is_empty() {
            sse_line(m, data, &rest[..nl], out);
        } else {
            line.extend_from_slice(&rest[..nl]);
            let whole = std::mem::take(line);
            sse_line(m, data, &whole, out);
        }
        rest = &rest[nl + 1..];
    }
    line.extend_from_slice(rest);
}

fn sse_line(m: &mut Machine, data: &mut Vec<u8>, line: &[u8], out: &mut Vec<u8>) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        dispatch(m, data, out);
    } else if let Some(payload) = line.strip_prefix(b"data:") {
        let payload = payload.strip_prefix(b" ").unwrap_or(payload);
        if !data.is_empty() {
            data.push(b'\n');
        }
        data.extend_from_slice(payload);
    }
    // `event:`, `id:`, `retry:` and `:` comments carry nothing chat uses.
}

fn dispatch(m: &mut Machine, data: &mut Vec<u8>, out: &mut Vec<u8>) {
    if data.is_empty() {
        return;
    }
    if data.as_slice() == b"[DONE]" {
        m.end(out);
    } else if let Ok(chunk) = serde_json::from_slice::<Value>(data) {
        m.chunk(&chunk, out);
    }
    // A chunk that is not JSON says nothing we could pass on; the rest of
    // the stream still does.
    data.clear();
}

/// A whole `chat.completion`, as the one chunk that would have streamed it.
fn completion(m: &mut Machine, body: &[u8], out: &mut Vec<u8>) {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    if let Some(message) = parsed
        .as_ref()
        .and_then(|p| p.pointer("/error/message"))
        .and_then(Value::as_str)
    {
        // Some servers report a failure in a 200 answer.
        m.fail(message.to_owned(), out);
        return;
    }
    let Some(c) = parsed.filter(|c| c.get("choices").is_some_and(Value::is_array)) else {
        m.fail(
            "The model's backend answered with something other than a Chat Completions object."
                .to_owned(),
            out,
        );
        return;
    };
    let choice = c.pointer("/choices/0").unwrap_or(&Value::Null);
    let message = choice.get("message").unwrap_or(&Value::Null);
    let mut delta = serde_json::Map::new();
    let content = match message.get("content") {
        Some(Value::String(s)) => Some(s.clone()),
        // Some servers answer content parts even outside streams.
        Some(Value::Array(parts)) => Some(
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect(),
        ),
        _ => None,
    };
    if let Some(text) = content {
        delta.insert("content".into(), text.into());
    }
    if let Some(r) = message.get("refusal").filter(|r| r.is_string()) {
        delta.insert("refusal".into(), r.clone());
    }
    for key in ["reasoning_content", "reasoning"] {
        if let Some(r) = message.get(key).filter(|r| r.is_string()) {
            delta.insert(key.into(), r.clone());
        }
    }
    if let Some(Value::Array(calls)) = message.get("tool_calls") {
        let calls = calls
            .iter()
            .enumerate()
            .map(|(i, call)| {
                let mut call = call.clone();
                if let Value::Object(o) = &mut call {
                    o.insert("index".into(), i.into());
                }
                call
            })
            .collect();
        delta.insert("tool_calls".into(), Value::Array(calls));
    }
    let chunk = serde_json::json!({
        "created": c.get("created"),
        "choices": [{
            "index": 0,
            "delta": delta,
            // A JSON answer is whole: without a reason it still ended.
            "finish_reason": choice.get("finish_reason").and_then(Value::as_str).unwrap_or("stop"),
        }],
        "usage": c.get("usage"),
    });
    m.chunk(&chunk, out);
    m.end(out);
}
