//! The protocols clients speak and backends serve: OpenAI's (chat,
//! completions, embeddings, the Responses API...) and Anthropic's Messages API.
//!
//! Each endpoint knows its protocol (`proxy::request::Endpoint::protocol`):
//! where the model and the stream flag are in its request, its error shape
//! (`anthropic::error_json` or `crate::error::error_json`), where usage
//! appears in its answers (`usage::counter::Dialect`). Each backend declares
//! what it speaks (`protocol:`, `responses_api:`); `serving` decides whether
//! a request goes to it as it is, translated, or not at all.

pub mod anthropic;
pub mod responses;

use bytes::Bytes;
use serde::Deserialize;

use crate::error::GatewayError;

/// What a client speaks on an endpoint, and what a backend serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// OpenAI's API and the servers that copy it (LiteLLM, vLLM, llama.cpp...).
    #[default]
    OpenAi,
    /// Anthropic's Messages API (`/v1/messages`).
    Anthropic,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
        }
    }
}

/// Whether an OpenAI backend serves `/v1/responses` itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResponsesApi {
    /// Requests are translated to Chat Completions (any chat server works).
    #[default]
    Translate,
    /// Requests pass through (OpenAI, LiteLLM, recent vLLM).
    Native,
}

/// A request the backend takes in another protocol than the client's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Translation {
    /// Anthropic Messages -> OpenAI Chat Completions, and the answer back.
    MessagesToChat,
    /// OpenAI Responses -> Chat Completions, and the answer back.
    ResponsesToChat,
}

impl Translation {
    /// The body the backend gets (the client's model name is kept: backends
    /// with their own names rename it afterwards like any request).
    pub fn request(self, body: &[u8]) -> Result<Bytes, GatewayError> {
        match self {
            Self::MessagesToChat => anthropic::to_chat::request(body),
            Self::ResponsesToChat => responses::to_chat::request(body),
        }
    }

    /// The backend's path, after its base path (which stands for `/v1`).
    pub fn upstream_path(self) -> &'static str {
        "/chat/completions"
    }

    pub fn answer(
        self,
        client_model: &str,
        stream: bool,
        request_id: &str,
    ) -> Box<dyn AnswerTranslator> {
        // The answer's own id, derived from the request's (`req_<hex>`).
        let hex = request_id.strip_prefix("req_").unwrap_or(request_id);
        match self {
            Self::MessagesToChat => Box::new(anthropic::to_chat::Answer::new(
                client_model,
                stream,
                &format!("msg_{hex}"),
            )),
            Self::ResponsesToChat => Box::new(responses::to_chat::Answer::new(
                client_model,
                stream,
                &format!("resp_{hex}"),
            )),
        }
    }
}

/// Turns an upstream's answer (Chat Completions) into the protocol the client
/// speaks, chunk by chunk. The gateway counts usage on the upstream's bytes
/// before they reach the translator, so the translator never has to.
pub trait AnswerTranslator: Send + Sync {
    /// The upstream's status and content type; returns the content type the
    /// client gets (the gateway drops content-length and sends chunked).
    fn on_header(&mut self, status: u16, content_type: Option<&str>) -> &'static str;
    /// One body chunk of the upstream's answer, replaced by the translated
    /// bytes (None or empty: nothing to send yet). A stream is never buffered
    /// whole; a JSON answer may be (the gateway bounds it). An error answer
    /// (status >= 400, OpenAI's error JSON) becomes the client protocol's
    /// error shape.
    fn on_body(&mut self, body: &mut Option<Bytes>, end_of_stream: bool);
}

/// How a backend that speaks `backend` serves a request in `client`'s
/// protocol on an endpoint (`responses`: the Responses API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serving {
    AsIs,
    Translated(Translation),
    /// It cannot: the request goes to another backend of the pool.
    No,
}

pub fn serving(
    client: Protocol,
    responses: bool,
    backend: Protocol,
    responses_api: ResponsesApi,
) -> Serving {
    match (client, backend) {
        (Protocol::Anthropic, Protocol::Anthropic) => Serving::AsIs,
        (Protocol::Anthropic, Protocol::OpenAi) => Serving::Translated(Translation::MessagesToChat),
        (Protocol::OpenAi, Protocol::OpenAi) if responses => match responses_api {
            ResponsesApi::Native => Serving::AsIs,
            ResponsesApi::Translate => Serving::Translated(Translation::ResponsesToChat),
        },
        (Protocol::OpenAi, Protocol::OpenAi) => Serving::AsIs,
        // Chat to an Anthropic backend would need the reverse translation.
        (Protocol::OpenAi, Protocol::Anthropic) => Serving::No,
    }
}
