//! The Responses API's objects as the translation writes them: the response,
//! its output items, usage and error.
//!
//! Reference: <https://platform.openai.com/docs/api-reference/responses/object>.
//! The request's own settings (instructions, tools, temperature...) are not
//! echoed: the answer translator never sees the request, so those fields
//! carry the API's defaults, as the SDKs' models allow.

use serde::Serialize;
use serde_json::Value;

/// An output item (`output[i]`).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputItem {
    Message {
        id: String,
        status: &'static str,
        role: &'static str,
        content: Vec<OutputText>,
    },
    FunctionCall {
        id: String,
        status: &'static str,
        arguments: String,
        call_id: String,
        name: String,
    },
    /// What a reasoning model thought before answering, as open models
    /// served by vLLM and others send it (`reasoning_content`): OpenAI's
    /// `reasoning_text` content (there is no summary to give).
    Reasoning {
        id: String,
        status: &'static str,
        summary: [(); 0],
        content: Vec<ReasoningText>,
    },
}

/// A `reasoning_text` content part.
#[derive(Debug, Clone, Serialize)]
pub struct ReasoningText {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub text: String,
}

impl ReasoningText {
    pub fn new(text: String) -> Self {
        Self {
            kind: "reasoning_text",
            text,
        }
    }
}

impl OutputItem {
    pub fn message(id: String) -> Self {
        Self::Message {
            id,
            status: "in_progress",
            role: "assistant",
            content: Vec::new(),
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Self::Message { id, .. }
            | Self::FunctionCall { id, .. }
            | Self::Reasoning { id, .. } => id,
        }
    }

    pub fn set_status(&mut self, s: &'static str) {
        match self {
            Self::Message { status, .. }
            | Self::FunctionCall { status, .. }
            | Self::Reasoning { status, .. } => *status = s,
        }
    }
}

/// An `output_text` content part.
#[derive(Debug, Clone, Serialize)]
pub struct OutputText {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub annotations: [(); 0],
    pub logprobs: [(); 0],
    pub text: String,
}

impl OutputText {
    pub fn new(text: String) -> Self {
        Self {
            kind: "output_text",
            annotations: [],
            logprobs: [],
            text,
        }
    }
}

/// `usage` in the Responses API's words.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub input_tokens_details: InputDetails,
    pub output_tokens: u64,
    pub output_tokens_details: OutputDetails,
    pub total_tokens: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct InputDetails {
    pub cached_tokens: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OutputDetails {
    pub reasoning_tokens: u64,
}

impl Usage {
    /// From a chat `usage` object: `prompt_tokens` (cached ones included,
    /// as in `input_tokens`), `completion_tokens` (reasoning included, as in
    /// `output_tokens`) and their details. `None` when it has neither count.
    pub fn from_chat(u: &Value) -> Option<Self> {
        let n = |v: Option<&Value>| v.and_then(Value::as_u64);
        let input = n(u.get("prompt_tokens"));
        let output = n(u.get("completion_tokens"));
        if input.is_none() && output.is_none() {
            return None;
        }
        let (input, output) = (input.unwrap_or(0), output.unwrap_or(0));
        Some(Self {
            input_tokens: input,
            input_tokens_details: InputDetails {
                cached_tokens: n(u.pointer("/prompt_tokens_details/cached_tokens")).unwrap_or(0),
            },
            output_tokens: output,
            output_tokens_details: OutputDetails {
                reasoning_tokens: n(u.pointer("/completion_tokens_details/reasoning_tokens"))
                    .unwrap_or(0),
            },
            total_tokens: n(u.get("total_tokens")).unwrap_or(input + output),
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ErrorObject {
    pub code: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Incomplete {
    pub reason: &'static str,
}

/// The response object, in the order OpenAI writes its fields.
#[derive(Debug, Serialize)]
pub struct ResponseObject<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created_at: u64,
    pub status: &'static str,
    pub background: bool,
    pub error: Option<&'a ErrorObject>,
    pub incomplete_details: Option<Incomplete>,
    pub instructions: Option<()>,
    pub max_output_tokens: Option<()>,
    pub model: &'a str,
    pub output: &'a [OutputItem],
    pub parallel_tool_calls: bool,
    pub previous_response_id: Option<()>,
    pub reasoning: Reasoning,
    pub store: bool,
    pub temperature: Option<()>,
    pub text: Text,
    pub tool_choice: &'static str,
    pub tools: [(); 0],
    pub top_p: Option<()>,
    pub truncation: &'static str,
    pub usage: Option<Usage>,
    pub user: Option<()>,
    pub metadata: Metadata,
}

#[derive(Debug, Default, Serialize)]
pub struct Reasoning {
    pub effort: Option<()>,
    pub summary: Option<()>,
}

#[derive(Debug, Serialize)]
pub struct Text {
    pub format: TextFormat,
}

#[derive(Debug, Serialize)]
pub struct TextFormat {
    #[serde(rename = "type")]
    pub kind: &'static str,
}

#[derive(Debug, Default, Serialize)]
pub struct Metadata {}

impl<'a> ResponseObject<'a> {
    pub fn new(id: &'a str, model: &'a str, created_at: u64, output: &'a [OutputItem]) -> Self {
        Self {
            id,
            object: "response",
            created_at,
            status: "in_progress",
            background: false,
            error: None,
            incomplete_details: None,
            instructions: None,
            max_output_tokens: None,
            model,
            output,
            parallel_tool_calls: true,
            previous_response_id: None,
            reasoning: Reasoning::default(),
            // Nothing is stored (see the module doc of `to_chat`).
            store: false,
            temperature: None,
            text: Text {
                format: TextFormat { kind: "text" },
            },
            tool_choice: "auto",
            tools: [],
            top_p: None,
            truncation: "disabled",
            usage: None,
            user: None,
            metadata: Metadata::default(),
        }
    }
}

/// How a chat `finish_reason` ends a response: its status and, when
/// incomplete, why (`length` is OpenAI's `max_output_tokens`).
pub fn ending(finish_reason: Option<&str>) -> (&'static str, Option<Incomplete>) {
    match finish_reason {
        Some("length") => (
            "incomplete",
            Some(Incomplete {
                reason: "max_output_tokens",
            }),
        ),
        Some("content_filter") => (
            "incomplete",
            Some(Incomplete {
                reason: "content_filter",
            }),
        ),
        _ => ("completed", None),
    }
}
