//! Anthropic's Messages API served by an OpenAI-compatible backend (LiteLLM,
//! vLLM, OpenAI): the request as Chat Completions ([`request`]), the answer
//! back as a Message or Anthropic's stream ([`Answer`]), and
//! `count_tokens` answered here ([`count_tokens`]).
//!
//! Decisions a client can see, in one place:
//! - Tool arguments a model wrote as broken JSON become `input: {}` in a JSON
//!   answer (see `message::tool_input`); in a stream they are forwarded as the
//!   `input_json_delta`s they were, as Anthropic's own streams do.
//! - A stream the upstream cuts before its `finish_reason` ends with an
//!   `error` event (see `stream`), so the client raises instead of taking a
//!   partial answer for a whole one.
//! - `message_start.usage` is zero and `message_delta.usage` holds the totals
//!   (Chat reports usage only at the end).
//! - Thinking blocks come from `reasoning_content` without a signature, and
//!   earlier turns' thinking blocks are not sent back to the backend.

mod errors;
mod message;
mod request;
mod sse;
mod stream;
mod wire;

#[cfg(test)]
mod tests;

use bytes::{Bytes, BytesMut};

use crate::error::GatewayError;
use crate::protocols::AnswerTranslator;
use crate::usage::tokenizer;

/// The Chat Completions body for a Messages request body (the model name is
/// kept; the gateway renames it for the backend). A stream asks for usage.
pub fn request(body: &[u8]) -> Result<Bytes, GatewayError> {
    let chat = request::translate(body, request::Purpose::Create)?;
    Ok(Bytes::from(
        serde_json::to_vec(&chat).expect("chat requests serialize"),
    ))
}

/// `POST /v1/messages/count_tokens` for a backend that cannot count: the
/// request's system prompt, messages and tools counted with the gateway's
/// tokenizer, the way chat prompts are counted when a backend reports none.
pub fn count_tokens(model: &str, body: &[u8]) -> Result<u64, GatewayError> {
    let chat = request::translate(body, request::Purpose::CountTokens)?;
    let chat = serde_json::to_vec(&chat).expect("chat requests serialize");
    Ok(tokenizer::count_prompt(model, &chat))
}

/// Largest non-stream answer (or error body) buffered for translation; the
/// gateway bounds bodies itself, this keeps a misbehaving upstream from
/// growing one without end.
const MAX_BUFFERED: usize = 64 << 20;

enum Mode {
    /// A Chat stream, translated as it arrives.
    Stream(Box<stream::ChatStream>),
    /// A whole Chat completion, translated at its end (to a Message, or to a
    /// stream when the client asked for one and the backend did not stream).
    Json,
    /// An error answer, translated at its end.
    Error(u16),
}

/// Translates one Chat answer into what the Messages client asked for.
pub struct Answer {
    model: String,
    message_id: String,
    stream: bool,
    mode: Mode,
    buf: BytesMut,
}

impl Answer {
    pub fn new(client_model: &str, stream: bool, message_id: &str) -> Answer {
        Answer {
            model: client_model.to_owned(),
            message_id: message_id.to_owned(),
            stream,
            mode: Mode::Json,
            buf: BytesMut::new(),
        }
    }

    fn buffer(&mut self, body: &mut Option<Bytes>) {
        if let Some(b) = body.take() {
            if self.buf.len() + b.len() <= MAX_BUFFERED {
                self.buf.extend_from_slice(&b);
            }
        }
    }

    fn translate_json(&self) -> Bytes {
        match message::translate(&self.buf, &self.message_id) {
            Ok(m) if self.stream => {
                let mut out = BytesMut::new();
                m.to_events(&self.message_id, &self.model, &mut out);
                out.freeze()
            }
            Ok(m) => Bytes::from(m.to_json(&self.message_id, &self.model)),
            Err((kind, message)) if self.stream => {
                let mut out = BytesMut::new();
                wire::Event::Error {
                    error: wire::ErrorObject {
                        kind,
                        message: &message,
                    },
                }
                .write(&mut out);
                out.freeze()
            }
            Err((kind, message)) => errors::error_json(kind, &message),
        }
    }
}

impl AnswerTranslator for Answer {
    fn on_header(&mut self, status: u16, content_type: Option<&str>) -> &'static str {
        let sse = content_type.is_some_and(|c| c.contains("text/event-stream"));
        self.mode = if status >= 400 {
            Mode::Error(status)
        } else if sse {
            Mode::Stream(Box::new(stream::ChatStream::new(
                &self.model,
                &self.message_id,
            )))
        } else {
            Mode::Json
        };
        match self.mode {
            Mode::Error(_) => "application/json",
            Mode::Stream(_) => "text/event-stream",
            Mode::Json if self.stream => "text/event-stream",
            Mode::Json => "application/json",
        }
    }

    fn on_body(&mut self, body: &mut Option<Bytes>, end_of_stream: bool) {
        match &mut self.mode {
            Mode::Stream(s) => {
                let mut out = BytesMut::new();
                if let Some(b) = body.take() {
                    s.push(&b, &mut out);
                }
                if end_of_stream {
                    s.finish(&mut out);
                }
                *body = (!out.is_empty()).then(|| out.freeze());
            }
            Mode::Json => {
                self.buffer(body);
                if end_of_stream {
                    *body = Some(self.translate_json());
                }
            }
            Mode::Error(status) => {
                let status = *status;
                self.buffer(body);
                if end_of_stream {
                    *body = Some(errors::translate(status, &self.buf));
                }
            }
        }
    }
}
