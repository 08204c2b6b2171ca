//! Chat Completions chunks in, Responses streaming events out, as they come.
//!
//! Events and their fields follow
//! <https://platform.openai.com/docs/api-reference/responses-streaming>:
//! `response.created`, `response.in_progress`, then per output item
//! `response.output_item.added`, for a message `response.content_part.added`,
//! `response.output_text.delta`..., `response.output_text.done`,
//! `response.content_part.done`, for a reasoning item (the chat delta's
//! `reasoning_content` or `reasoning`) the same with `reasoning_text`, for a
//! function call
//! `response.function_call_arguments.delta`..., `.done`, then
//! `response.output_item.done`; last `response.completed` (or
//! `response.incomplete` when the answer hit `max_output_tokens` or a content
//! filter) with the whole response and its usage. Every event has a
//! `sequence_number`, from 0 up.
//!
//! An upstream stream that ends without a `finish_reason` and without
//! `[DONE]` was cut (the backend died, a proxy timed out): it ends with
//! `response.failed` (`error.code` `server_error`), the items so far in its
//! output marked `incomplete`. Not `response.incomplete`: that status means
//! the model stopped for a reason the request controls, and clients (Codex
//! among them) retry a failed response but accept an incomplete one.
//!
//! The same machine serves a client that did not ask for a stream
//! (`emit: false`): it only accumulates, and [`Machine::finish`] gives the
//! final object.

use std::io::Write as _;

use serde::Serialize;
use serde_json::Value;

use super::object::{
    ending, ErrorObject, OutputItem, OutputText, ReasoningText, ResponseObject, Usage,
};

pub struct Machine {
    id: String,
    /// `resp_<hex>` without its prefix, for the item ids.
    base: String,
    model: String,
    /// Write events (a streaming client) or only accumulate.
    emit: bool,
    seq: u64,
    created_at: Option<u64>,
    output: Vec<OutputItem>,
    /// The message item receiving text, as an index in `output`.
    text: Option<usize>,
    /// The reasoning item receiving reasoning text.
    reasoning: Option<usize>,
    /// Open function calls: (chat `tool_calls[].index`, index in `output`).
    calls: Vec<(u64, usize)>,
    finish_reason: Option<String>,
    usage: Option<Usage>,
    error: Option<ErrorObject>,
    /// A terminal event was written.
    ended: bool,
    /// The status items get when they are closed: `incomplete` for those
    /// still open when the answer hit its limit.
    close_as: &'static str,
}

/// What to say when an upstream stream stops short.
pub const CUT: &str =
    "The model's backend ended the stream before the answer was complete; retry the request.";

impl Machine {
    pub fn new(id: &str, model: &str, emit: bool) -> Self {
        let base = id.strip_prefix("resp_").unwrap_or(id).to_owned();
        Self {
            id: id.to_owned(),
            base,
            model: model.to_owned(),
            emit,
            seq: 0,
            created_at: None,
            output: Vec::new(),
            text: None,
            reasoning: None,
            calls: Vec::new(),
            finish_reason: None,
            usage: None,
            error: None,
            ended: false,
            close_as: "completed",
        }
    }

    pub fn ended(&self) -> bool {
        self.ended
    }

    /// One chat chunk (`chat.completion.chunk`), or a chunk synthesized from
    /// a whole `chat.completion`.
    pub fn chunk(&mut self, chunk: &Value, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        self.start(chunk.get("created").and_then(Value::as_u64), out);
        if let Some(err) = chunk.get("error").filter(|e| !e.is_null()) {
            // vLLM and LiteLLM report a failure mid-stream as a data event.
            let message = err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("The model's backend failed while answering.");
            self.fail(message.to_owned(), out);
            return;
        }
        if let Some(u) = chunk.get("usage").filter(|u| !u.is_null()) {
            self.usage = Usage::from_chat(u);
        }
        let Some(choice) = chunk
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| c.first())
        else {
            return;
        };
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        // vLLM, DeepSeek and SGLang say `reasoning_content`, OpenRouter and
        // newer vLLM `reasoning`.
        for key in ["reasoning_content", "reasoning"] {
            if let Some(text) = delta.get(key).and_then(Value::as_str) {
                if !text.is_empty() {
                    self.reasoning_delta(text, out);
                }
            }
        }
        // A refusal is what the model said, so it is kept as its text
        // (chat's `refusal` has no separate part here).
        for key in ["content", "refusal"] {
            if let Some(text) = delta.get(key).and_then(Value::as_str) {
                if !text.is_empty() {
                    self.text_delta(text, out);
                }
            }
        }
        if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
            for (pos, call) in calls.iter().enumerate() {
                self.call_delta(pos as u64, call, out);
            }
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_owned());
        }
    }

    /// The answer is over (`data: [DONE]`, or the body ended after a
    /// `finish_reason`): open items close, and the last event says how it ended.
    pub fn end(&mut self, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        self.start(None, out);
        let (status, incomplete) = ending(self.finish_reason.as_deref());
        let kind = if status == "completed" {
            "response.completed"
        } else {
            self.close_as = "incomplete";
            "response.incomplete"
        };
        self.close_open(out);
        let mut r = ResponseObject::new(&self.id, &self.model, self.created(), &self.output);
        r.status = status;
        r.incomplete_details = incomplete;
        r.usage = self.usage;
        if self.emit {
            Event::begin(out, kind, &mut self.seq)
                .field("response", &r)
                .end();
        } else {
            serde_json::to_writer(&mut *out, &r).expect("serializes");
        }
        self.ended = true;
    }

    /// Ends the stream as `response.failed`, keeping what was said.
    pub fn fail(&mut self, message: String, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        self.start(None, out);
        let open = self.text.iter().chain(&self.reasoning);
        for &i in open.chain(self.calls.iter().map(|(_, i)| i)) {
            self.output[i].set_status("incomplete");
        }
        self.error = Some(ErrorObject {
            code: "server_error",
            message,
        });
        let mut r = ResponseObject::new(&self.id, &self.model, self.created(), &self.output);
        r.status = "failed";
        r.error = self.error.as_ref();
        r.usage = self.usage;
        if self.emit {
            Event::begin(out, "response.failed", &mut self.seq)
                .field("response", &r)
                .end();
        } else {
            serde_json::to_writer(&mut *out, &r).expect("serializes");
        }
        self.ended = true;
    }

    /// Whether the upstream said the answer was over.
    pub fn finished(&self) -> bool {
        self.finish_reason.is_some()
    }

    fn created(&self) -> u64 {
        self.created_at.unwrap_or(0)
    }

    /// `response.created` and `response.in_progress`, once, with the first
    /// chunk's `created` (the answer's own clock; now when it has none).
    fn start(&mut self, created: Option<u64>, out: &mut Vec<u8>) {
        if self.created_at.is_some() {
            return;
        }
        let created = created.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });
        self.created_at = Some(created);
        if !self.emit {
            return;
        }
        let r = ResponseObject::new(&self.id, &self.model, created, &[]);
        Event::begin(out, "response.created", &mut self.seq)
            .field("response", &r)
            .end();
        Event::begin(out, "response.in_progress", &mut self.seq)
            .field("response", &r)
            .end();
    }

    fn text_delta(&mut self, text: &str, out: &mut Vec<u8>) {
        let index = match self.text {
            Some(i) => i,
            None => {
                // Text after function calls is a new message item.
                self.close_reasoning(out);
                self.close_calls(out);
                let i = self.output.len();
                let item = OutputItem::message(format!("msg_{}_{i}", self.base));
                self.added(i, &item, out);
                if self.emit {
                    Event::begin(out, "response.content_part.added", &mut self.seq)
                        .field("item_id", item.id())
                        .field("output_index", &i)
                        .field("content_index", &0)
                        .field("part", &OutputText::new(String::new()))
                        .end();
                }
                self.output.push(item);
                self.text = Some(i);
                i
            }
        };
        let OutputItem::Message { id, content, .. } = &mut self.output[index] else {
            unreachable!("text goes to a message item");
        };
        match content.first_mut() {
            Some(part) => part.text.push_str(text),
            None => content.push(OutputText::new(text.to_owned())),
        }
        if self.emit {
            Event::begin(out, "response.output_text.delta", &mut self.seq)
                .field("item_id", id)
                .field("output_index", &index)
                .field("content_index", &0)
                .field("delta", text)
                .field("logprobs", &[(); 0])
                .end();
        }
    }

    fn call_delta(&mut self, pos: u64, call: &Value, out: &mut Vec<u8>) {
        // Servers that omit `index` send one call per entry, in order.
        let chat_index = call.get("index").and_then(Value::as_u64).unwrap_or(pos);
        let name = call.pointer("/function/name").and_then(Value::as_str);
        let args = call
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .unwrap_or("");
        let open = self
            .calls
            .iter()
            .find(|(c, _)| *c == chat_index)
            .map(|&(_, i)| i);
        let index = match open {
            Some(i) => i,
            None => {
                // A new call: the text before it, and the call before it
                // (chat sends calls one after the other), are complete.
                self.close_reasoning(out);
                self.close_text(out);
                self.close_calls(out);
                let i = self.output.len();
                let call_id = call
                    .get("id")
                    .and_then(Value::as_str)
                    .map_or_else(|| format!("call_{}_{i}", self.base), str::to_owned);
                let item = OutputItem::FunctionCall {
                    id: format!("fc_{}_{i}", self.base),
                    status: "in_progress",
                    arguments: String::new(),
                    call_id,
                    name: name.unwrap_or_default().to_owned(),
                };
                self.added(i, &item, out);
                self.output.push(item);
                self.calls.push((chat_index, i));
                i
            }
        };
        let OutputItem::FunctionCall {
            id,
            arguments,
            name: item_name,
            ..
        } = &mut self.output[index]
        else {
            unreachable!("arguments go to a function call item");
        };
        if item_name.is_empty() {
            if let Some(n) = name {
                item_name.push_str(n);
            }
        }
        if args.is_empty() {
            return;
        }
        arguments.push_str(args);
        if self.emit {
            Event::begin(out, "response.function_call_arguments.delta", &mut self.seq)
                .field("item_id", id)
                .field("output_index", &index)
                .field("delta", args)
                .end();
        }
    }

    fn added(&mut self, index: usize, item: &OutputItem, out: &mut Vec<u8>) {
        if self.emit {
            Event::begin(out, "response.output_item.added", &mut self.seq)
                .field("output_index", &index)
                .field("item", item)
                .end();
        }
    }

    fn reasoning_delta(&mut self, text: &str, out: &mut Vec<u8>) {
        let index = match self.reasoning {
            Some(i) => i,
            None => {
                self.close_text(out);
                self.close_calls(out);
                let i = self.output.len();
                let item = OutputItem::Reasoning {
                    id: format!("rs_{}_{i}", self.base),
                    status: "in_progress",
                    summary: [],
                    content: Vec::new(),
                };
                self.added(i, &item, out);
                if self.emit {
                    Event::begin(out, "response.content_part.added", &mut self.seq)
                        .field("item_id", item.id())
                        .field("output_index", &i)
                        .field("content_index", &0)
                        .field("part", &ReasoningText::new(String::new()))
                        .end();
                }
                self.output.push(item);
                self.reasoning = Some(i);
                i
            }
        };
        let OutputItem::Reasoning { id, content, .. } = &mut self.output[index] else {
            unreachable!("reasoning goes to a reasoning item");
        };
        match content.first_mut() {
            Some(part) => part.text.push_str(text),
            None => content.push(ReasoningText::new(text.to_owned())),
        }
        if self.emit {
            Event::begin(out, "response.reasoning_text.delta", &mut self.seq)
                .field("item_id", id)
                .field("output_index", &index)
                .field("content_index", &0)
                .field("delta", text)
                .end();
        }
    }

    fn close_reasoning(&mut self, out: &mut Vec<u8>) {
        let Some(index) = self.reasoning.take() else {
            return;
        };
        let item = &mut self.output[index];
        // Thinking that was cut by the token limit is still whole as far
        // as it went; only the answer is incomplete.
        item.set_status("completed");
        if !self.emit {
            return;
        }
        let OutputItem::Reasoning { id, content, .. } = &*item else {
            unreachable!("reasoning goes to a reasoning item");
        };
        let part = content
            .first()
            .cloned()
            .unwrap_or_else(|| ReasoningText::new(String::new()));
        Event::begin(out, "response.reasoning_text.done", &mut self.seq)
            .field("item_id", id)
            .field("output_index", &index)
            .field("content_index", &0)
            .field("text", &part.text)
            .end();
        Event::begin(out, "response.content_part.done", &mut self.seq)
            .field("item_id", id)
            .field("output_index", &index)
            .field("content_index", &0)
            .field("part", &part)
            .end();
        Event::begin(out, "response.output_item.done", &mut self.seq)
            .field("output_index", &index)
            .field("item", item)
            .end();
    }

    fn close_open(&mut self, out: &mut Vec<u8>) {
        self.close_reasoning(out);
        self.close_text(out);
        self.close_calls(out);
    }

    fn close_text(&mut self, out: &mut Vec<u8>) {
        let Some(index) = self.text.take() else {
            return;
        };
        let item = &mut self.output[index];
        item.set_status(self.close_as);
        if !self.emit {
            return;
        }
        let OutputItem::Message { id, content, .. } = &*item else {
            unreachable!("text goes to a message item");
        };
        let part = content
            .first()
            .cloned()
            .unwrap_or_else(|| OutputText::new(String::new()));
        Event::begin(out, "response.output_text.done", &mut self.seq)
            .field("item_id", id)
            .field("output_index", &index)
            .field("content_index", &0)
            .field("text", &part.text)
            .field("logprobs", &[(); 0])
            .end();
        Event::begin(out, "response.content_part.done", &mut self.seq)
            .field("item_id", id)
            .field("output_index", &index)
            .field("content_index", &0)
            .field("part", &part)
            .end();
        Event::begin(out, "response.output_item.done", &mut self.seq)
            .field("output_index", &index)
            .field("item", item)
            .end();
    }

    fn close_calls(&mut self, out: &mut Vec<u8>) {
        for (_, index) in std::mem::take(&mut self.calls) {
            let item = &mut self.output[index];
            item.set_status(self.close_as);
            if !self.emit {
                continue;
            }
            let OutputItem::FunctionCall {
                id,
                arguments,
                name,
                ..
            } = &*item
            else {
                unreachable!("arguments go to a function call item");
            };
            Event::begin(out, "response.function_call_arguments.done", &mut self.seq)
                .field("item_id", id)
                .field("output_index", &index)
                .field("name", name)
                .field("arguments", arguments)
                .end();
            Event::begin(out, "response.output_item.done", &mut self.seq)
                .field("output_index", &index)
                .field("item", item)
                .end();
        }
    }
}

/// One SSE event, `event: <type>` and `data: {"type":..,"sequence_number":..,...}`,
/// fields in the order written.
struct Event<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> Event<'a> {
    fn begin(out: &'a mut Vec<u8>, kind: &str, seq: &mut u64) -> Self {
        let _ = write!(
            out,
            "event: {kind}\ndata: {{\"type\":\"{kind}\",\"sequence_number\":{seq}"
        );
        *seq += 1;
        Self { out }
    }

    fn field<T: Serialize + ?Sized>(self, key: &str, value: &T) -> Self {
        let _ = write!(self.out, ",\"{key}\":");
        serde_json::to_writer(&mut *self.out, value).expect("event fields serialize");
        self
    }

    fn end(self) {
        self.out.extend_from_slice(b"}\n\n");
    }
}
