//! A Chat Completions stream rewritten, chunk by chunk, as Anthropic's stream
//! (<https://docs.anthropic.com/en/api/messages-streaming>):
//!
//! `message_start`, `ping`, then one block at a time — `thinking` (from
//! `reasoning_content`), `text`, each tool call as `tool_use` with its
//! arguments as `input_json_delta`s — each opened by `content_block_start`
//! and closed by `content_block_stop` before the next opens, then
//! `message_delta` (`stop_reason`, usage) and `message_stop`.
//!
//! Usage: Chat sends it last (`stream_options.include_usage`), so
//! `message_start` carries zeros and `message_delta` the totals — input,
//! cached and output tokens, which the SDKs take from `message_delta` too.
//!
//! An upstream that stops without `finish_reason` or `[DONE]` (a dropped
//! connection, a crashed server) gets an `error` event, as Anthropic sends
//! when a stream fails after its 200: the SDKs raise it, where closing the
//! blocks would hand a cut-off answer (a half-written tool call) to the
//! client as if it were complete.

use bytes::BytesMut;
use serde_json::json;

use super::errors::stream_error;
use super::message::generated_tool_id;
use super::sse::SseReader;
use super::wire::{
    stop_reason, Block, ChatAnswer, ChatToolCall, Delta, ErrorObject, Event, Message, StopDelta,
    Usage,
};

/// The block being written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    Text(usize),
    Thinking(usize),
    /// Block index, position in `tools`.
    Tool(usize, usize),
}

impl Open {
    fn index(self) -> usize {
        match self {
            Open::Text(i) | Open::Thinking(i) | Open::Tool(i, _) => i,
        }
    }
}

/// One tool call of the answer, by its Chat `index`.
struct Tool {
    chat_index: usize,
    id: Option<String>,
    name: Option<String>,
    /// Arguments that arrived before the name (the block cannot start
    /// without it).
    pending: String,
    block: Option<usize>,
}

pub(super) struct ChatStream {
    model: String,
    message_id: String,
    sse: SseReader,
    started: bool,
    open: Option<Open>,
    next_block: usize,
    tools: Vec<Tool>,
    stop: Option<(&'static str, Option<String>)>,
    refusal: bool,
    usage: Option<Usage>,
    /// `message_stop` or an `error` went out: nothing more is sent.
    ended: bool,
}

impl ChatStream {
    pub(super) fn new(model: &str, message_id: &str) -> Self {
        ChatStream {
            model: model.to_owned(),
            message_id: message_id.to_owned(),
            sse: SseReader::default(),
            started: false,
            open: None,
            next_block: 0,
            tools: Vec::new(),
            stop: None,
            refusal: false,
            usage: None,
            ended: false,
        }
    }

    /// One chunk of the upstream's body; the events it completes go to `out`.
    pub(super) fn push(&mut self, bytes: &[u8], out: &mut BytesMut) {
        self.sse.push(bytes);
        while let Some(data) = self.sse.next_event() {
            self.on_data(&data, out);
        }
    }

    /// The upstream's body ended.
    pub(super) fn finish(&mut self, out: &mut BytesMut) {
        if let Some(data) = self.sse.finish() {
            self.on_data(&data, out);
        }
        if self.ended {
            return;
        }
        if self.stop.is_some() {
            // Some servers end without `[DONE]`; the answer was complete.
            self.end_message(out);
        } else {
            self.fail(
                "api_error",
                "The upstream ended the stream before the answer was complete (no finish_reason); the answer is incomplete.",
                out,
            );
        }
    }

    fn on_data(&mut self, data: &[u8], out: &mut BytesMut) {
        if self.ended {
            return;
        }
        if data.trim_ascii() == b"[DONE]" {
            if self.stop.is_some() {
                self.end_message(out);
            }
            // `[DONE]` without a finish_reason: `finish` reports the cut.
            return;
        }
        let Ok(chunk) = serde_json::from_slice::<ChatAnswer>(data) else {
            // Not a Chat chunk (a proxy's comment, a keep-alive payload).
            return;
        };
        if let Some(error) = &chunk.error {
            let (kind, message) = stream_error(error);
            self.fail(kind, &message, out);
            return;
        }
        self.start(out);
        if let Some(u) = &chunk.usage {
            self.usage = Some(Usage::from(u));
        }
        if let Some(choice) = chunk.first() {
            if let Some(delta) = &choice.delta {
                if let Some(r) = delta.reasoning() {
                    self.write_thinking(r, out);
                }
                if let Some(t) = delta.content.as_deref().filter(|t| !t.is_empty()) {
                    self.write_text(t, out);
                }
                if let Some(r) = delta.refusal.as_deref().filter(|r| !r.is_empty()) {
                    self.refusal = true;
                    self.write_text(r, out);
                }
                for call in delta.tool_calls.iter().flatten() {
                    self.write_tool(call, out);
                }
            }
            if let Some(finish) = choice.finish_reason.as_deref() {
                self.close(out);
                let (reason, seq) =
                    stop_reason(finish, !self.tools.is_empty(), choice.stop_reason.as_ref());
                self.stop = Some((if self.refusal { "refusal" } else { reason }, seq));
            }
        } else if chunk.usage.is_some() && self.stop.is_some() {
            // The include_usage chunk: the last one before `[DONE]`.
            self.end_message(out);
        }
    }

    fn start(&mut self, out: &mut BytesMut) {
        if self.started {
            return;
        }
        self.started = true;
        Event::MessageStart {
            message: Message {
                id: &self.message_id,
                kind: "message",
                role: "assistant",
                model: &self.model,
                content: &[],
                stop_reason: None,
                stop_sequence: None,
                usage: Usage::default(),
            },
        }
        .write(out);
        Event::Ping.write(out);
    }

    fn close(&mut self, out: &mut BytesMut) {
        if let Some(open) = self.open.take() {
            Event::ContentBlockStop {
                index: open.index(),
            }
            .write(out);
        }
    }

    /// Opens a new block (closing the one before).
    fn open(&mut self, block: Block<'_>, out: &mut BytesMut) -> usize {
        self.close(out);
        let index = self.next_block;
        self.next_block += 1;
        Event::ContentBlockStart {
            index,
            content_block: block,
        }
        .write(out);
        index
    }

    fn write_text(&mut self, text: &str, out: &mut BytesMut) {
        let index = match self.open {
            Some(Open::Text(i)) => i,
            _ => {
                let i = self.open(Block::Text { text: "" }, out);
                self.open = Some(Open::Text(i));
                i
            }
        };
        Event::ContentBlockDelta {
            index,
            delta: Delta::Text { text },
        }
        .write(out);
    }

    fn write_thinking(&mut self, thinking: &str, out: &mut BytesMut) {
        let index = match self.open {
            Some(Open::Thinking(i)) => i,
            _ => {
                let i = self.open(
                    Block::Thinking {
                        thinking: "",
                        signature: "",
                    },
                    out,
                );
                self.open = Some(Open::Thinking(i));
                i
            }
        };
        Event::ContentBlockDelta {
            index,
            delta: Delta::Thinking { thinking },
        }
        .write(out);
    }

    /// A tool call fragment: the first one of a call names it (and opens its
    /// block), the rest carry pieces of its arguments.
    fn write_tool(&mut self, call: &ChatToolCall<'_>, out: &mut BytesMut) {
        let pos = match call.index {
            Some(ix) => self.tools.iter().position(|t| t.chat_index == ix),
            // No index (a few servers): a new id is a new call, else the last.
            None => match call.id.as_deref().filter(|i| !i.is_empty()) {
                Some(id) => self.tools.iter().position(|t| t.id.as_deref() == Some(id)),
                None => self.tools.len().checked_sub(1),
            },
        };
        let pos = pos.unwrap_or_else(|| {
            self.tools.push(Tool {
                chat_index: call.index.unwrap_or(self.tools.len()),
                id: None,
                name: None,
                pending: String::new(),
                block: None,
            });
            self.tools.len() - 1
        });
        let function = call.function.as_ref();
        let tool = &mut self.tools[pos];
        if let Some(id) = call.id.as_deref().filter(|i| !i.is_empty()) {
            tool.id.get_or_insert_with(|| id.to_owned());
        }
        if let Some(name) = function
            .and_then(|f| f.name.as_deref())
            .filter(|n| !n.is_empty())
        {
            tool.name.get_or_insert_with(|| name.to_owned());
        }
        let arguments = function.and_then(|f| f.arguments.as_deref()).unwrap_or("");
        let Some(index) = self.tool_block(pos, out) else {
            self.tools[pos].pending.push_str(arguments);
            return;
        };
        if !arguments.is_empty() {
            // A fragment for a call whose block was already closed (servers
            // that interleave parallel calls) still goes to its own index,
            // where the SDKs accumulate it.
            Event::ContentBlockDelta {
                index,
                delta: Delta::InputJson {
                    partial_json: arguments,
                },
            }
            .write(out);
        }
    }

    /// The block of tool `pos`, opened once its name is known.
    fn tool_block(&mut self, pos: usize, out: &mut BytesMut) -> Option<usize> {
        if let Some(index) = self.tools[pos].block {
            return Some(index);
        }
        let name = self.tools[pos].name.clone()?;
        let id = self.tools[pos]
            .id
            .clone()
            .unwrap_or_else(|| generated_tool_id(&self.message_id, pos));
        let empty = json!({});
        let index = self.open(
            Block::ToolUse {
                id: &id,
                name: &name,
                input: &empty,
            },
            out,
        );
        self.open = Some(Open::Tool(index, pos));
        let tool = &mut self.tools[pos];
        tool.block = Some(index);
        let pending = std::mem::take(&mut tool.pending);
        if !pending.is_empty() {
            Event::ContentBlockDelta {
                index,
                delta: Delta::InputJson {
                    partial_json: &pending,
                },
            }
            .write(out);
        }
        Some(index)
    }

    fn end_message(&mut self, out: &mut BytesMut) {
        self.start(out);
        self.close(out);
        let (reason, seq) = self.stop.take().unwrap_or(("end_turn", None));
        Event::MessageDelta {
            delta: StopDelta {
                stop_reason: reason,
                stop_sequence: seq.as_deref(),
            },
            usage: self.usage.unwrap_or_default(),
        }
        .write(out);
        Event::MessageStop.write(out);
        self.ended = true;
    }

    fn fail(&mut self, kind: &str, message: &str, out: &mut BytesMut) {
        Event::Error {
            error: ErrorObject { kind, message },
        }
        .write(out);
        self.ended = true;
    }
}
