//! A whole Chat completion as an Anthropic Message, and a Message as the
//! event sequence of a stream (for a client that asked to stream from a
//! backend that answered in one piece).

use bytes::BytesMut;
use serde_json::{json, Value};

use super::errors::stream_error;
use super::wire::{stop_reason, Block, ChatAnswer, Delta, Event, Message, StopDelta, Usage};

/// The parts of a Message, owned.
pub(super) struct Translated {
    thinking: Option<String>,
    text: String,
    tools: Vec<(String, String, Value)>,
    stop_reason: &'static str,
    stop_sequence: Option<String>,
    usage: Usage,
}

/// Tool arguments as the `input` object. Arguments that are not a JSON
/// object (a model that wrote broken JSON) become `{}`: the client's tool
/// runner then reports the missing parameters back to the model, which can
/// retry — better than a client-side parse failure that ends the turn.
fn tool_input(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({}),
    }
}

/// The Message for a Chat answer, or the error (type, message) it is: a body
/// that is no Chat answer, or an error object a proxy answered with a 200
/// (LiteLLM does), which must not pass for an empty reply.
pub(super) fn translate(
    body: &[u8],
    message_id: &str,
) -> Result<Translated, (&'static str, String)> {
    let not_chat = || {
        (
            "api_error",
            "The upstream's answer was not a Chat Completions answer.".to_owned(),
        )
    };
    let answer: ChatAnswer = serde_json::from_slice(body).map_err(|_| not_chat())?;
    if let Some(error) = &answer.error {
        return Err(stream_error(error));
    }
    if answer.choices.is_empty() {
        return Err(not_chat());
    }
    let choice = answer.first();
    let msg = choice.and_then(|c| c.message.as_ref());
    let mut tools = Vec::new();
    for (n, call) in msg
        .and_then(|m| m.tool_calls.as_ref())
        .into_iter()
        .flatten()
        .enumerate()
    {
        let f = call.function.as_ref();
        let id = call
            .id
            .as_deref()
            .filter(|i| !i.is_empty())
            .map_or_else(|| generated_tool_id(message_id, n), str::to_owned);
        tools.push((
            id,
            f.and_then(|f| f.name.as_deref()).unwrap_or("").to_owned(),
            tool_input(f.and_then(|f| f.arguments.as_deref()).unwrap_or("")),
        ));
    }
    let mut text = msg
        .and_then(|m| m.content.as_deref())
        .unwrap_or("")
        .to_owned();
    let refusal = msg
        .and_then(|m| m.refusal.as_deref())
        .filter(|r| !r.is_empty());
    if let Some(r) = refusal {
        text.push_str(r);
    }
    let finish = choice
        .and_then(|c| c.finish_reason.as_deref())
        .unwrap_or("stop");
    let (mut stop, stop_sequence) = stop_reason(
        finish,
        !tools.is_empty(),
        choice.and_then(|c| c.stop_reason.as_ref()),
    );
    if refusal.is_some() {
        stop = "refusal";
    }
    Ok(Translated {
        thinking: msg.and_then(|m| m.reasoning()).map(str::to_owned),
        text,
        tools,
        stop_reason: stop,
        stop_sequence,
        usage: answer.usage.as_ref().map(Usage::from).unwrap_or_default(),
    })
}

/// A tool call id for a backend that sent none (the client needs one to
/// answer with a `tool_result`).
pub(super) fn generated_tool_id(message_id: &str, n: usize) -> String {
    let base = message_id.strip_prefix("msg_").unwrap_or(message_id);
    format!("toolu_{base}_{n}")
}

impl Translated {
    fn blocks(&self) -> Vec<Block<'_>> {
        let mut blocks = Vec::with_capacity(2 + self.tools.len());
        if let Some(t) = &self.thinking {
            blocks.push(Block::Thinking {
                thinking: t,
                signature: "",
            });
        }
        if !self.text.is_empty() {
            blocks.push(Block::Text { text: &self.text });
        }
        for (id, name, input) in &self.tools {
            blocks.push(Block::ToolUse { id, name, input });
        }
        blocks
    }

    pub(super) fn to_json(&self, message_id: &str, model: &str) -> Vec<u8> {
        let blocks = self.blocks();
        let msg = Message {
            id: message_id,
            kind: "message",
            role: "assistant",
            model,
            content: &blocks,
            stop_reason: Some(self.stop_reason),
            stop_sequence: self.stop_sequence.as_deref(),
            usage: self.usage,
        };
        serde_json::to_vec(&msg).expect("messages serialize")
    }

    /// The whole stream a Message would have been sent as.
    pub(super) fn to_events(&self, message_id: &str, model: &str, out: &mut BytesMut) {
        Event::MessageStart {
            message: Message {
                id: message_id,
                kind: "message",
                role: "assistant",
                model,
                content: &[],
                stop_reason: None,
                stop_sequence: None,
                usage: Usage::default(),
            },
        }
        .write(out);
        Event::Ping.write(out);
        let empty = json!({});
        for (index, block) in self.blocks().into_iter().enumerate() {
            let arguments;
            let (start, delta) = match block {
                Block::Text { text } => (Block::Text { text: "" }, Delta::Text { text }),
                Block::Thinking { thinking, .. } => (
                    Block::Thinking {
                        thinking: "",
                        signature: "",
                    },
                    Delta::Thinking { thinking },
                ),
                Block::ToolUse { id, name, input } => {
                    arguments = input.to_string();
                    (
                        Block::ToolUse {
                            id,
                            name,
                            input: &empty,
                        },
                        Delta::InputJson {
                            partial_json: &arguments,
                        },
                    )
                }
            };
            Event::ContentBlockStart {
                index,
                content_block: start,
            }
            .write(out);
            Event::ContentBlockDelta { index, delta }.write(out);
            Event::ContentBlockStop { index }.write(out);
        }
        Event::MessageDelta {
            delta: StopDelta {
                stop_reason: self.stop_reason,
                stop_sequence: self.stop_sequence.as_deref(),
            },
            usage: self.usage,
        }
        .write(out);
        Event::MessageStop.write(out);
    }
}
