//! Stand-in until the translation lands (issue 14): refuses the request.

use bytes::Bytes;

use crate::error::GatewayError;
use crate::protocols::AnswerTranslator;

pub fn request(_body: &[u8]) -> Result<Bytes, GatewayError> {
    Err(GatewayError::invalid(
        "This model's backends do not speak this API, and the gateway cannot translate it yet.",
        None,
    ))
}

pub struct Answer;

impl Answer {
    pub fn new(_client_model: &str, _stream: bool, _id: &str) -> Self {
        Self
    }
}

impl AnswerTranslator for Answer {
    fn on_header(&mut self, _status: u16, _content_type: Option<&str>) -> &'static str {
        "application/json"
    }

    fn on_body(&mut self, _body: &mut Option<Bytes>, _end_of_stream: bool) {}
}

pub fn count_tokens(model: &str, body: &[u8]) -> Result<u64, GatewayError> {
    Ok(crate::usage::tokenizer::count_prompt(model, body))
}
