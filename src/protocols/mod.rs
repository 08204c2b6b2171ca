//! STAND-IN until the lead's `protocols: foundation` lands on main (then this
//! file is replaced by main's).

use bytes::Bytes;

pub mod anthropic;

/// Turns an upstream's answer (Chat Completions) into the protocol the client
/// speaks, chunk by chunk. The gateway counts usage on the upstream's bytes
/// *before* they reach the translator, so the translator never has to.
pub trait AnswerTranslator: Send + Sync {
    /// The upstream's status and content type; returns the content type the
    /// client gets (the gateway drops content-length and sends chunked).
    fn on_header(&mut self, status: u16, content_type: Option<&str>) -> &'static str;
    /// One body chunk of the upstream's answer, replaced by the translated
    /// bytes (None or empty: nothing to send yet). A stream must not be
    /// buffered whole; a JSON answer may be (it is bounded by the gateway).
    /// An error answer (status >= 400, OpenAI's error JSON) becomes the
    /// client protocol's error shape.
    fn on_body(&mut self, body: &mut Option<Bytes>, end_of_stream: bool);
}
