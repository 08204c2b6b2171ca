//! The two wire formats the answer is translated between: Chat Completions'
//! answer as read (<https://platform.openai.com/docs/api-reference/chat/object>,
//! `.../chat/streaming`), and Anthropic's Message and stream events as written
//! (<https://docs.anthropic.com/en/api/messages>,
//! <https://docs.anthropic.com/en/api/messages-streaming>).

use std::borrow::Cow;

use bytes::{BufMut, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::Value;

// ---------------------------------------------------------------------------
// Chat Completions, read
// ---------------------------------------------------------------------------

/// `usage` of a Chat answer. `prompt_tokens` includes the cached ones.
/// LiteLLM in front of Anthropic adds Anthropic's own cache fields, which are
/// then the better source.
#[derive(Debug, Default, Deserialize)]
pub(super) struct ChatUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

/// One `tool_calls` entry, whole (JSON answers) or a fragment (streams).
#[derive(Debug, Deserialize)]
pub(super) struct ChatToolCall<'a> {
    #[serde(default)]
    pub index: Option<usize>,
    #[serde(default, borrow)]
    pub id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub function: Option<ChatFunction<'a>>,
}

#[derive(Debug, Deserialize)]
pub(super) struct ChatFunction<'a> {
    #[serde(default, borrow)]
    pub name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub arguments: Option<Cow<'a, str>>,
}

/// A choice's `message` (JSON) or `delta` (stream). Reasoning arrives as
/// `reasoning_content` (DeepSeek, vLLM, LiteLLM) or `reasoning` (OpenRouter,
/// newer vLLM).
#[derive(Debug, Default, Deserialize)]
pub(super) struct ChatDelta<'a> {
    #[serde(default, borrow)]
    pub content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub reasoning_content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub reasoning: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub refusal: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub tool_calls: Option<Vec<ChatToolCall<'a>>>,
}

impl ChatDelta<'_> {
    pub fn reasoning(&self) -> Option<&str> {
        self.reasoning_content
            .as_deref()
            .or(self.reasoning.as_deref())
            .filter(|r| !r.is_empty())
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct ChatChoice<'a> {
    #[serde(default)]
    pub index: u32,
    #[serde(default, borrow)]
    pub message: Option<ChatDelta<'a>>,
    #[serde(default, borrow)]
    pub delta: Option<ChatDelta<'a>>,
    #[serde(default, borrow)]
    pub finish_reason: Option<Cow<'a, str>>,
    /// vLLM: the stop string that ended the answer (or a token id).
    #[serde(default)]
    pub stop_reason: Option<Value>,
}

/// A Chat answer or stream chunk. An `error` here is an upstream failure
/// reported inside a 200 stream (vLLM, LiteLLM).
#[derive(Debug, Deserialize)]
pub(super) struct ChatAnswer<'a> {
    #[serde(default, borrow)]
    pub choices: Vec<ChatChoice<'a>>,
    #[serde(default)]
    pub usage: Option<ChatUsage>,
    #[serde(default)]
    pub error: Option<Value>,
}

impl<'a> ChatAnswer<'a> {
    /// The first choice (Messages has exactly one answer).
    pub fn first(&self) -> Option<&ChatChoice<'a>> {
        self.choices.iter().find(|c| c.index == 0)
    }
}

// ---------------------------------------------------------------------------
// Anthropic, written
// ---------------------------------------------------------------------------

/// Anthropic's `usage`. `input_tokens` excludes the cached tokens, which are
/// reported apart (the three add up to the prompt).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub(super) struct Usage {
    pub input_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub output_tokens: u64,
}

impl From<&ChatUsage> for Usage {
    fn from(u: &ChatUsage) -> Self {
        let prompt = u.prompt_tokens.unwrap_or(0);
        let read = u
            .cache_read_input_tokens
            .or(u
                .prompt_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens))
            .unwrap_or(0)
            .min(prompt);
        let written = u
            .cache_creation_input_tokens
            .unwrap_or(0)
            .min(prompt - read);
        Usage {
            input_tokens: prompt - read - written,
            cache_creation_input_tokens: written,
            cache_read_input_tokens: read,
            output_tokens: u.completion_tokens.unwrap_or(0),
        }
    }
}

/// Anthropic's `stop_reason` for a Chat `finish_reason`. A backend that
/// called tools but says `stop` (older vLLM, Ollama) still gets `tool_use`,
/// which is what makes a client run them.
pub(super) fn stop_reason(
    finish: &str,
    called_tools: bool,
    vllm_stop: Option<&Value>,
) -> (&'static str, Option<String>) {
    match finish {
        "length" => ("max_tokens", None),
        "tool_calls" | "function_call" => ("tool_use", None),
        "content_filter" => ("refusal", None),
        _ if called_tools => ("tool_use", None),
        _ => match vllm_stop.and_then(Value::as_str) {
            Some(s) => ("stop_sequence", Some(s.to_owned())),
            None => ("end_turn", None),
        },
    }
}

/// One content block of a Message, as in `content` and `content_block_start`.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum Block<'a> {
    Text {
        text: &'a str,
    },
    /// Chat backends sign nothing; the field is there because clients
    /// expect it on every thinking block.
    Thinking {
        thinking: &'a str,
        signature: &'a str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: &'a Value,
    },
}

#[derive(Serialize)]
pub(super) struct Message<'a> {
    pub id: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub role: &'static str,
    pub model: &'a str,
    pub content: &'a [Block<'a>],
    pub stop_reason: Option<&'a str>,
    pub stop_sequence: Option<&'a str>,
    pub usage: Usage,
}

/// A `content_block_delta`'s `delta` (`type`: `text_delta`, ...).
#[derive(Serialize)]
#[serde(tag = "type")]
pub(super) enum Delta<'a> {
    #[serde(rename = "text_delta")]
    Text { text: &'a str },
    #[serde(rename = "thinking_delta")]
    Thinking { thinking: &'a str },
    #[serde(rename = "input_json_delta")]
    InputJson { partial_json: &'a str },
}

#[derive(Serialize)]
pub(super) struct StopDelta<'a> {
    pub stop_reason: &'a str,
    pub stop_sequence: Option<&'a str>,
}

/// The stream events, each written as `event: <type>` + `data: <json>`.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum Event<'a> {
    MessageStart {
        message: Message<'a>,
    },
    Ping,
    ContentBlockStart {
        index: usize,
        content_block: Block<'a>,
    },
    ContentBlockDelta {
        index: usize,
        delta: Delta<'a>,
    },
    ContentBlockStop {
        index: usize,
    },
    MessageDelta {
        delta: StopDelta<'a>,
        usage: Usage,
    },
    MessageStop,
    Error {
        error: ErrorObject<'a>,
    },
}

impl Event<'_> {
    fn name(&self) -> &'static str {
        match self {
            Event::MessageStart { .. } => "message_start",
            Event::Ping => "ping",
            Event::ContentBlockStart { .. } => "content_block_start",
            Event::ContentBlockDelta { .. } => "content_block_delta",
            Event::ContentBlockStop { .. } => "content_block_stop",
            Event::MessageDelta { .. } => "message_delta",
            Event::MessageStop => "message_stop",
            Event::Error { .. } => "error",
        }
    }

    /// Appends the event in Anthropic's framing. The `event:` line matters:
    /// the SDKs skip data without an event name.
    pub fn write(&self, out: &mut BytesMut) {
        out.put_slice(b"event: ");
        out.put_slice(self.name().as_bytes());
        out.put_slice(b"\ndata: ");
        serde_json::to_writer((&mut *out).writer(), self).expect("events serialize");
        out.put_slice(b"\n\n");
    }
}

#[derive(Serialize)]
pub(super) struct ErrorObject<'a> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub message: &'a str,
}

/// Anthropic's error body: `{"type":"error","error":{"type","message"}}`.
#[derive(Serialize)]
pub(super) struct ErrorBody<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub error: ErrorObject<'a>,
}
