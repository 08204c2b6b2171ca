//! STAND-IN until the lead's `protocols: foundation` lands on main: only the
//! trait the translators implement. Replaced by main's file at merge.

pub mod responses;

use bytes::Bytes;

/// Turns an upstream's answer (Chat Completions) into the protocol the client
/// speaks, chunk by chunk.
pub trait AnswerTranslator: Send + Sync {
    fn on_header(&mut self, status: u16, content_type: Option<&str>) -> &'static str;
    fn on_body(&mut self, body: &mut Option<Bytes>, end_of_stream: bool);
}
