//! OpenAI wire format: request parsing, deterministic token accounting and
//! the response/error bodies.
//!
//! Token counts are *not* real BPE counts. They are a deterministic stand-in
//! that tests can compute by hand:
//!
//! * a string counts one token per whitespace-separated word;
//! * an integer (pre-tokenized input) counts one token;
//! * an array counts the sum of its elements;
//! * an object (a chat content part such as `{"type":"text","text":"..."}`)
//!   counts its `text` field only, so image parts count zero;
//! * a chat request adds [`PER_MESSAGE_OVERHEAD`] tokens per message, like the
//!   per-message framing OpenAI bills.
//!
//! Parsing uses hand-written serde visitors so that counting never allocates
//! (request bodies are walked in place), which keeps the fake cheap enough to
//! serve as the benchmark baseline.

use std::borrow::Cow;
use std::fmt;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

/// Tokens added per chat message on top of its content words.
pub const PER_MESSAGE_OVERHEAD: usize = 3;

/// The `system_fingerprint` every completion carries (OpenAI sends one too,
/// and some clients expect the key to exist).
pub const SYSTEM_FINGERPRINT: &str = "fp_fake";

/// Number of whitespace-separated words in `s` — our unit of "token".
pub fn count_words(s: &str) -> usize {
    s.split_whitespace().count()
}

// ---------------------------------------------------------------------------
// Token tally over arbitrary JSON
// ---------------------------------------------------------------------------

/// Token count of an arbitrary JSON value, computed while deserializing
/// (see the module docs for the rules).
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally(pub usize);

impl<'de> Deserialize<'de> for Tally {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TallyVisitor)
    }
}

struct TallyVisitor;

impl<'de> Visitor<'de> for TallyVisitor {
    type Value = Tally;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string, an array of content parts or an array of tokens")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Tally, E> {
        Ok(Tally(count_words(v)))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Tally, E> {
        Ok(Tally(1))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Tally, E> {
        Ok(Tally(1))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Tally, E> {
        Ok(Tally(0))
    }
    fn visit_none<E: de::Error>(self) -> Result<Tally, E> {
        Ok(Tally(0))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Tally, D::Error> {
        Tally::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Tally, A::Error> {
        let mut n = 0;
        while let Some(Tally(t)) = seq.next_element()? {
            n += t;
        }
        Ok(Tally(n))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tally, A::Error> {
        // A content part: only its "text" counts.
        let mut n = 0;
        while let Some(key) = map.next_key::<PartKey>()? {
            match key {
                PartKey::Text => n += map.next_value::<Tally>()?.0,
                PartKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Tally(n))
    }
}

/// Object key classifier for content parts, matched without allocating.
enum PartKey {
    Text,
    Other,
}

impl<'de> Deserialize<'de> for PartKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = PartKey;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PartKey, E> {
                Ok(if v == "text" {
                    PartKey::Text
                } else {
                    PartKey::Other
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

/// `stream_options` of a streaming request.
#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// The fields of `POST /v1/chat/completions` the fake cares about; everything
/// else (tools, temperature, ...) is accepted and ignored.
#[derive(Debug, Deserialize)]
pub struct ChatRequest<'a> {
    /// Empty when absent, which we report like OpenAI does.
    #[serde(default, borrow)]
    pub model: Cow<'a, str>,
    #[serde(default)]
    pub messages: Option<Messages>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    #[serde(default)]
    pub max_completion_tokens: Option<u64>,
    /// Only read when present (see `crate::tools`), so requests without
    /// tools stay allocation-free.
    #[serde(default)]
    pub tools: Option<serde_json::Value>,
    #[serde(default)]
    pub tool_choice: Option<serde_json::Value>,
}

/// `messages`, reduced to a message count and a content word count.
#[derive(Debug, Default, Clone, Copy)]
pub struct Messages {
    pub count: usize,
    pub words: usize,
}

impl Messages {
    pub fn prompt_tokens(&self) -> usize {
        self.words + PER_MESSAGE_OVERHEAD * self.count
    }
}

impl<'de> Deserialize<'de> for Messages {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Message {
            #[serde(default)]
            content: Option<Tally>,
        }

        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Messages;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of messages")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Messages, A::Error> {
                let mut m = Messages::default();
                while let Some(msg) = seq.next_element::<Message>()? {
                    m.count += 1;
                    m.words += msg.content.unwrap_or_default().0;
                }
                Ok(m)
            }
        }
        d.deserialize_seq(V)
    }
}

/// The fields of legacy `POST /v1/completions` the fake cares about.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest<'a> {
    #[serde(default, borrow)]
    pub model: Cow<'a, str>,
    /// String, array of strings, token array or array of token arrays.
    #[serde(default)]
    pub prompt: Option<Tally>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub max_tokens: Option<u64>,
}

/// The fields of `POST /v1/embeddings` the fake cares about.
#[derive(Debug, Deserialize)]
pub struct EmbeddingRequest<'a> {
    #[serde(default, borrow)]
    pub model: Cow<'a, str>,
    #[serde(default)]
    pub input: Option<EmbeddingInputs>,
    #[serde(default)]
    pub encoding_format: Option<EncodingFormat>,
    /// OpenAI's `text-embedding-3-*` models accept a target dimension; we do
    /// too, defaulting to [`crate::EMBEDDING_DIMENSIONS`].
    #[serde(default)]
    pub dimensions: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    Float,
    Base64,
}

/// One embedding input, reduced to what the response needs: a stable hash
/// (the vector is derived from it) and its token count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputDigest {
    pub hash: u64,
    pub tokens: usize,
}

/// `input`: a string, an array of strings, one token array or an array of
/// token arrays — exactly the shapes OpenAI accepts.
#[derive(Debug, Default)]
pub struct EmbeddingInputs(pub Vec<InputDigest>);

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

impl InputDigest {
    fn text(s: &str) -> Self {
        InputDigest {
            hash: fnv1a(FNV_OFFSET, s.as_bytes()),
            tokens: count_words(s),
        }
    }
}

/// Incrementally hashes a token array.
struct TokenHasher {
    hash: u64,
    tokens: usize,
}

impl TokenHasher {
    fn new() -> Self {
        // A different seed than text so `[1,2]` and "\x01..." never collide
        // by construction.
        TokenHasher {
            hash: fnv1a(FNV_OFFSET, b"tokens:"),
            tokens: 0,
        }
    }
    fn push(&mut self, t: i64) {
        self.hash = fnv1a(self.hash, &t.to_le_bytes());
        self.tokens += 1;
    }
    fn finish(self) -> InputDigest {
        InputDigest {
            hash: self.hash,
            tokens: self.tokens,
        }
    }
}

/// An element of an `input` array.
enum InputElem {
    Text(InputDigest),
    Token(i64),
    Tokens(InputDigest),
}

impl<'de> Deserialize<'de> for InputElem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = InputElem;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, a token or an array of tokens")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<InputElem, E> {
                Ok(InputElem::Text(InputDigest::text(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<InputElem, E> {
                i64::try_from(v)
                    .map(InputElem::Token)
                    .map_err(|_| E::custom("token id out of range"))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<InputElem, E> {
                Ok(InputElem::Token(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<InputElem, A::Error> {
                let mut h = TokenHasher::new();
                while let Some(t) = seq.next_element::<i64>()? {
                    h.push(t);
                }
                Ok(InputElem::Tokens(h.finish()))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for EmbeddingInputs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = EmbeddingInputs;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, an array of strings or an array of token arrays")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<EmbeddingInputs, E> {
                Ok(EmbeddingInputs(vec![InputDigest::text(v)]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<EmbeddingInputs, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(1));
                // Set when the array is a single flat token array.
                let mut flat: Option<TokenHasher> = None;
                while let Some(elem) = seq.next_element::<InputElem>()? {
                    match (elem, &mut flat) {
                        (InputElem::Token(t), Some(h)) => h.push(t),
                        (InputElem::Token(t), None) if out.is_empty() => {
                            let mut h = TokenHasher::new();
                            h.push(t);
                            flat = Some(h);
                        }
                        (InputElem::Text(d) | InputElem::Tokens(d), None) => out.push(d),
                        _ => {
                            return Err(de::Error::custom(
                                "input mixes token ids with strings or token arrays",
                            ))
                        }
                    }
                }
                if let Some(h) = flat {
                    out.push(h.finish());
                }
                Ok(EmbeddingInputs(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// Just the `stream` flag, used to decide how `DieMidStream` behaves before a
/// handler runs.
#[derive(Debug, Default, Deserialize)]
pub struct StreamFlag {
    #[serde(default)]
    pub stream: Option<bool>,
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

/// `usage` of a chat completion, with the detail objects current OpenAI
/// models send (zeros), so gateways that parse them are exercised.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ChatUsage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    pub prompt_tokens_details: PromptTokensDetails,
    pub completion_tokens_details: CompletionTokensDetails,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct PromptTokensDetails {
    pub cached_tokens: usize,
    pub audio_tokens: usize,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CompletionTokensDetails {
    pub reasoning_tokens: usize,
    pub audio_tokens: usize,
    pub accepted_prediction_tokens: usize,
    pub rejected_prediction_tokens: usize,
}

impl ChatUsage {
    /// With `cached` of the prompt from the cache and `reasoning` tokens
    /// before the `answer` tokens.
    pub fn detailed(prompt_tokens: usize, answer: usize, cached: usize, reasoning: usize) -> Self {
        let mut u = Self::new(prompt_tokens, answer + reasoning);
        u.prompt_tokens_details.cached_tokens = cached.min(prompt_tokens);
        u.completion_tokens_details.reasoning_tokens = reasoning;
        u
    }

    pub fn new(prompt_tokens: usize, completion_tokens: usize) -> Self {
        ChatUsage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            prompt_tokens_details: PromptTokensDetails::default(),
            completion_tokens_details: CompletionTokensDetails::default(),
        }
    }
}

/// `usage` of a legacy text completion (no detail objects there).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CompletionUsage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

impl CompletionUsage {
    pub fn new(prompt_tokens: usize, completion_tokens: usize) -> Self {
        CompletionUsage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// `usage` of an embeddings response.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct EmbeddingUsage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
}

/// A `200`-ish JSON response from pre-serialized bytes.
pub fn json_response(status: StatusCode, body: impl Into<axum::body::Body>) -> Response {
    let mut resp = Response::new(body.into());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Serializes `value` into a JSON response.
pub fn json_value<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(v) => json_response(status, v),
        // Our own types always serialize; keep the failure visible anyway.
        Err(e) => ApiError::server(format!("fake-upstream serialization bug: {e}")).into_response(),
    }
}

/// An error in OpenAI's envelope:
/// `{"error":{"message","type","param","code"}}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<&'static str>,
    pub code: Option<&'static str>,
}

impl ApiError {
    pub fn invalid_request(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: None,
            code: None,
        }
    }

    /// What OpenAI answers when the body is not the JSON it expects.
    pub fn bad_json(e: &serde_json::Error) -> Self {
        Self::invalid_request(format!(
            "We could not parse the JSON body of your request. (HINT: This likely means you \
             aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, \
             but what was sent was not valid JSON or did not match the expected schema: {e}.)"
        ))
    }

    pub fn missing_model() -> Self {
        Self::invalid_request("you must provide a model parameter")
    }

    pub fn missing_param(param: &'static str) -> Self {
        ApiError {
            param: Some(param),
            code: Some("missing_required_parameter"),
            ..Self::invalid_request(format!("Missing required parameter: '{param}'."))
        }
    }

    pub fn server(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: None,
        }
    }

    /// The error `Mode::Fail(status)` answers with (OpenAI's real wording).
    pub fn injected(status: u16) -> Self {
        ApiError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            ..Self::server(
                "The server had an error while processing your request. Sorry about that!",
            )
        }
    }

    /// What OpenAI answers when an organization's request rate is reached.
    pub fn rate_limited(retry_after_secs: u32) -> Self {
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: format!(
                "Rate limit reached for requests per min (RPM): Limit 3, Used 3, Requested 1. \
                 Please try again in {retry_after_secs}s. Visit \
                 https://platform.openai.com/account/rate-limits to learn more."
            ),
            kind: "requests",
            param: None,
            code: Some("rate_limit_exceeded"),
        }
    }

    pub fn not_found(method: &str, path: &str) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            ..Self::invalid_request(format!("Invalid URL ({method} {path})"))
        }
    }

    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        ApiError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            ..Self::invalid_request(format!("Method not allowed ({method} {path})"))
        }
    }

    pub fn unauthorized(provided: bool) -> Self {
        let (message, code) = if provided {
            ("Incorrect API key provided.", Some("invalid_api_key"))
        } else {
            (
                "You didn't provide an API key. You need to provide your API key in an \
                 Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                None,
            )
        };
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            code,
            ..Self::invalid_request(message)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Envelope<'a> {
            error: Inner<'a>,
        }
        #[derive(Serialize)]
        struct Inner<'a> {
            message: &'a str,
            #[serde(rename = "type")]
            kind: &'a str,
            param: Option<&'a str>,
            code: Option<&'a str>,
        }
        let body = Envelope {
            error: Inner {
                message: &self.message,
                kind: self.kind,
                param: self.param,
                code: self.code,
            },
        };
        // Serializing plain strings cannot fail.
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        json_response(self.status, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_count_words_and_parts() {
        let body = br#"{"model":"m","messages":[
            {"role":"system","content":"be  brief"},
            {"role":"user","content":[{"type":"text","text":"one two three"},{"type":"image_url","image_url":{"url":"x y"}}]},
            {"role":"assistant","content":null,"tool_calls":[]}
        ]}"#;
        let req: ChatRequest = serde_json::from_slice(body).unwrap();
        let m = req.messages.unwrap();
        assert_eq!((m.count, m.words), (3, 5));
        assert_eq!(m.prompt_tokens(), 5 + 9);
    }

    #[test]
    fn prompt_shapes() {
        for (json, want) in [
            (r#""a b c""#, 3),
            (r#"["a b", "c"]"#, 3),
            (r#"[1, 2, 3, 4]"#, 4),
            (r#"[[1, 2], [3]]"#, 3),
        ] {
            let t: Tally = serde_json::from_str(json).unwrap();
            assert_eq!(t.0, want, "{json}");
        }
    }

    #[test]
    fn embedding_input_shapes() {
        let one: EmbeddingInputs = serde_json::from_str(r#""hello world""#).unwrap();
        assert_eq!(one.0.len(), 1);
        assert_eq!(one.0[0].tokens, 2);

        let many: EmbeddingInputs = serde_json::from_str(r#"["a", "b c"]"#).unwrap();
        assert_eq!(many.0.iter().map(|d| d.tokens).collect::<Vec<_>>(), [1, 2]);

        let flat: EmbeddingInputs = serde_json::from_str("[1, 2, 3]").unwrap();
        assert_eq!(flat.0.len(), 1);
        assert_eq!(flat.0[0].tokens, 3);

        let nested: EmbeddingInputs = serde_json::from_str("[[1, 2], [3]]").unwrap();
        assert_eq!(nested.0.len(), 2);

        assert!(serde_json::from_str::<EmbeddingInputs>(r#"[1, "a"]"#).is_err());
        assert!(serde_json::from_str::<EmbeddingInputs>(r#"["a", 1]"#).is_err());
        // Same text, same digest: embeddings are deterministic.
        assert_eq!(
            many.0[0],
            serde_json::from_str::<EmbeddingInputs>(r#""a""#).unwrap().0[0]
        );
    }
}
