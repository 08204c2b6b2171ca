//! Counts tokens in an upstream response while its bytes go to the client.
//!
//! JSON bodies: the `usage` object is read at the end. SSE streams: events are
//! parsed as they pass; the usage chunk is taken from the stream and, when the
//! gateway itself asked for it (`stream_options.include_usage`), removed so the
//! client sees exactly the stream it asked for. Without stripping, bytes are
//! forwarded untouched; with it, only whole events are forwarded (upstreams send
//! whole events per chunk, so this adds no delay in practice).
//!
//! Longer than most files on purpose: the SSE scanner, its deferred-payload
//! buffer and the JSON tail reader are one hot-path state machine whose parts
//! share invariants (measured in benches/README.md); splitting it would
//! scatter them.
//!
//! SSE is split by hand rather than with an SSE crate because stripping needs the
//! byte span of each event, which stream-oriented SSE crates do not expose.

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};
use serde::de::IgnoredAny;
use serde::Deserialize;

use crate::json::JsonStr;

/// Full JSON bodies up to this size are kept to find `usage` and the reply text;
/// beyond it only the tail is kept (OpenAI puts `usage` last).
const JSON_KEEP: usize = 4 * 1024 * 1024;
const JSON_TAIL: usize = 64 * 1024;
/// Reply text kept for the tokenizer fallback.
const TEXT_KEEP: usize = 4 * 1024 * 1024;
/// The key searched for; it cannot match inside a JSON string, where quotes are escaped.
const USAGE_KEY: &[u8] = b"\"usage\"";
/// The head of a JSON body searched for the served `model`.
const MODEL_HEAD: usize = 4096;
/// SSE payloads kept unparsed per stream (see `ResponseCounter::raw`): it
/// bounds the memory an open stream holds. A chat chunk kept from its
/// `choices` on is ~100 bytes for one token, so this holds ~80 of them, more
/// than 16 KiB of whole OpenAI chunks did.
const RAW_KEEP: usize = 8 * 1024;

/// A `usage` object in any protocol's words, normalized: `prompt_tokens`
/// include the cached ones and those written to a cache, `completion_tokens`
/// the reasoning ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "UsageWire")]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    cached: u64,
    cache_write: u64,
    reasoning: u64,
}

/// `usage` as it arrives. Chat Completions: `prompt_tokens`,
/// `completion_tokens` and their `*_details`. The Responses API, gpt-image-1
/// and gpt-4o-transcribe: `input_tokens` (the cached ones included),
/// `output_tokens` and their `*_details`. Anthropic: `input_tokens` *without*
/// the `cache_creation_input_tokens` and `cache_read_input_tokens` beside it
/// (<https://docs.anthropic.com/en/api/messages>), which LiteLLM also adds to
/// chat usage, where `prompt_tokens` already counts them. Separate fields, not
/// serde aliases: an answer that had both names would fail as a duplicate.
#[derive(Deserialize)]
struct UsageWire {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<Details>,
    #[serde(default)]
    completion_tokens_details: Option<Details>,
    #[serde(default)]
    input_tokens_details: Option<Details>,
    #[serde(default)]
    output_tokens_details: Option<Details>,
}

/// The parts of `*_tokens_details` the gateway stores (`null` members are
/// as good as absent).
#[derive(Debug, Clone, Copy, Default, Deserialize)]
struct Details {
    #[serde(default)]
    cached_tokens: Option<u64>,
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

impl From<UsageWire> for Usage {
    fn from(w: UsageWire) -> Self {
        let cache_write = w.cache_creation_input_tokens.unwrap_or(0);
        let cache_read = w.cache_read_input_tokens.unwrap_or(0);
        let prompt = match (w.prompt_tokens, w.input_tokens) {
            (Some(p), _) => p,
            // Anthropic's `input_tokens` leave out what the cache served or stored.
            (None, Some(i))
                if w.cache_creation_input_tokens.is_some()
                    || w.cache_read_input_tokens.is_some() =>
            {
                i.saturating_add(cache_write).saturating_add(cache_read)
            }
            (None, i) => i.unwrap_or(0),
        };
        let completion = w.completion_tokens.or(w.output_tokens).unwrap_or(0);
        let detail = |a: Option<Details>, b: Option<Details>, f: fn(Details) -> Option<u64>| {
            a.and_then(f).or_else(|| b.and_then(f))
        };
        let cached = detail(w.prompt_tokens_details, w.input_tokens_details, |d| {
            d.cached_tokens
        })
        .unwrap_or(cache_read);
        let reasoning = detail(w.completion_tokens_details, w.output_tokens_details, |d| {
            d.reasoning_tokens
        })
        .unwrap_or(0);
        Self {
            prompt_tokens: prompt,
            completion_tokens: completion,
            cached: cached.min(prompt),
            cache_write: cache_write.min(prompt.saturating_sub(cached.min(prompt))),
            reasoning: reasoning.min(completion),
        }
    }
}

impl Usage {
    /// Of `prompt_tokens`: read from the provider's prompt cache.
    pub fn cached_tokens(&self) -> u64 {
        self.cached
    }

    /// Of `prompt_tokens`: written to the provider's prompt cache (Anthropic).
    pub fn cache_write_tokens(&self) -> u64 {
        self.cache_write
    }

    /// Of `completion_tokens`: reasoning.
    pub fn reasoning_tokens(&self) -> u64 {
        self.reasoning
    }

    /// A later report of the same answer on top of an earlier one: Anthropic
    /// streams the input side in `message_start` and the cumulative output in
    /// each `message_delta` (which may repeat the input side too).
    fn merge(self, later: Usage) -> Usage {
        if later.prompt_tokens > 0 {
            return later;
        }
        Usage {
            completion_tokens: later.completion_tokens,
            reasoning: later.reasoning,
            ..self
        }
    }
}

/// Where a protocol puts usage in its answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Dialect {
    /// OpenAI's Chat Completions (and completions, embeddings...): `usage`
    /// at the top of the body or of a stream chunk.
    #[default]
    Chat,
    /// Anthropic's Messages: `usage` at the top of a message, in
    /// `message_start`'s `message`, and in `message_delta` (cumulative).
    Messages,
    /// OpenAI's Responses: `usage` in the response object, which streams
    /// carry in `response.completed`, `response.incomplete` and `response.failed`.
    Responses,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Json,
    Sse,
    Other,
}

pub struct ResponseCounter {
    kind: Kind,
    dialect: Dialect,
    strip_usage_event: bool,
    /// JSON: the body (or its tail once past JSON_KEEP). SSE: bytes not yet split into events.
    buf: BytesMut,
    json_truncated: bool,
    usage: Option<Usage>,
    text: String,
    /// SSE: event payloads without a usage object, not parsed yet, each ended by
    /// a NUL (which valid JSON never contains). The reply text is needed only
    /// when no usage arrives, so parsing every content chunk up front was wasted
    /// work (callgrind: ~7.5k instructions per event, 60 % of the gateway's own
    /// cost on a stream). When RAW_KEEP is reached the kept ones become text
    /// (a few bytes per event) and keeping starts over, so a long stream holds
    /// its text and at most RAW_KEEP of payloads, and the last ones, usage
    /// included, are never parsed. Chat chunks are kept from their
    /// `choices` on (see `envelope_end`).
    raw: Vec<u8>,
    /// A payload kept whole in `raw` names the `model`, so those after it may
    /// be kept without theirs (see `envelope_end`).
    raw_has_model: bool,
    bytes_seen: usize,
    /// The `model` the upstream says answered (it may differ from the one
    /// asked for: an alias, a dated version, or a router's choice).
    served_model: Option<String>,
    /// JSON: the head of the body was searched for `model` already.
    model_looked: bool,
}

#[derive(Deserialize)]
struct ChunkView<'a> {
    #[serde(borrow, default)]
    model: Option<JsonStr<'a>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(borrow, default)]
    choices: Option<Vec<ChoiceView<'a>>>,
}

/// What one event or body says, in any dialect.
struct Payload {
    model: Option<String>,
    usage: Option<Usage>,
    /// False for the usage-only chunk the gateway asked for itself.
    keep: bool,
}

/// An Anthropic stream event (<https://docs.anthropic.com/en/api/messages-streaming>):
/// `message_start` has the `message` with the input side of `usage`;
/// `content_block_delta` a `delta` with `text`, `partial_json` (tool input)
/// or `thinking`; `message_delta` the cumulative `usage`.
#[derive(Deserialize)]
struct MessagesEvent<'a> {
    #[serde(borrow, default)]
    message: Option<Envelope<'a>>,
    #[serde(borrow, default)]
    delta: Option<BlockDelta<'a>>,
    #[serde(default)]
    usage: Option<Usage>,
}

/// Anthropic's `message` or the Responses API's `response` object.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    model: Option<JsonStr<'a>>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct BlockDelta<'a> {
    #[serde(borrow, default)]
    text: Option<JsonStr<'a>>,
    #[serde(borrow, default)]
    partial_json: Option<JsonStr<'a>>,
    #[serde(borrow, default)]
    thinking: Option<JsonStr<'a>>,
}

/// A Responses stream event
/// (<https://platform.openai.com/docs/api-reference/responses-streaming>):
/// text and function arguments arrive as `delta` strings, the usage in the
/// `response` of `response.completed` / `.incomplete` / `.failed`.
#[derive(Deserialize)]
struct ResponsesEvent<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<JsonStr<'a>>,
    #[serde(borrow, default)]
    delta: Option<JsonStr<'a>>,
    #[serde(borrow, default)]
    response: Option<Envelope<'a>>,
}

#[derive(Deserialize)]
struct ChoiceView<'a> {
    #[serde(borrow, default)]
    delta: Option<TextView<'a>>,
    #[serde(borrow, default)]
    message: Option<TextView<'a>>,
    #[serde(borrow, default)]
    text: Option<JsonStr<'a>>,
    #[serde(default)]
    finish_reason: Option<IgnoredAny>,
}

/// Everything in a message (or delta) the model generated and the upstream
/// bills as output: text, a refusal, reasoning (`reasoning_content` from vLLM
/// and DeepSeek, `reasoning` from OpenRouter and Groq) and tool calls. Counting
/// only `content` let an answer made of tool calls or reasoning go unbilled.
#[derive(Deserialize)]
struct TextView<'a> {
    #[serde(borrow, default)]
    content: Option<JsonStr<'a>>,
    #[serde(borrow, default)]
    refusal: Option<JsonStr<'a>>,
    #[serde(borrow, default)]
    reasoning_content: Option<JsonStr<'a>>,
    #[serde(borrow, default)]
    reasoning: Option<JsonStr<'a>>,
    #[serde(borrow, default)]
    tool_calls: Option<Vec<ToolCallView<'a>>>,
    /// The legacy single function call.
    #[serde(borrow, default)]
    function_call: Option<FunctionView<'a>>,
}

/// A tool call in an answer (or in a prompt's history, see `tokenizer`).
#[derive(Deserialize)]
pub(crate) struct ToolCallView<'a> {
    #[serde(borrow, default)]
    pub function: Option<FunctionView<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct FunctionView<'a> {
    #[serde(borrow, default)]
    pub name: Option<JsonStr<'a>>,
    #[serde(borrow, default)]
    pub arguments: Option<JsonStr<'a>>,
}

impl TextView<'_> {
    fn pieces(&self) -> impl Iterator<Item = &str> {
        let calls = self
            .tool_calls
            .iter()
            .flatten()
            .filter_map(|c| c.function.as_ref())
            .chain(self.function_call.as_ref())
            .flat_map(|f| [f.name.as_deref(), f.arguments.as_deref()]);
        [
            self.reasoning_content.as_deref(),
            self.reasoning.as_deref(),
            self.content.as_deref(),
            self.refusal.as_deref(),
        ]
        .into_iter()
        .chain(calls)
        .flatten()
    }
}

impl ResponseCounter {
    pub fn new(content_type: Option<&str>, strip_usage_event: bool) -> Self {
        let ct = content_type.unwrap_or("").to_ascii_lowercase();
        let kind = if ct.starts_with("text/event-stream") {
            Kind::Sse
        } else if ct.contains("json") {
            Kind::Json
        } else {
            Kind::Other
        };
        Self {
            kind,
            dialect: Dialect::Chat,
            strip_usage_event: strip_usage_event && kind == Kind::Sse,
            buf: BytesMut::new(),
            json_truncated: false,
            usage: None,
            text: String::new(),
            raw: Vec::new(),
            raw_has_model: false,
            bytes_seen: 0,
            served_model: None,
            model_looked: false,
        }
    }

    /// Reads usage where `dialect` puts it (Chat Completions' by default).
    pub fn with_dialect(mut self, dialect: Dialect) -> Self {
        self.dialect = dialect;
        self
    }

    /// Whether the body is JSON or SSE, read as it passes (other bodies, such
    /// as audio, are not looked at).
    pub fn reads_body(&self) -> bool {
        self.kind != Kind::Other
    }

    /// True when the response framing may change (so `content-length` must go).
    pub fn rewrites_body(&self) -> bool {
        self.strip_usage_event
    }

    /// Sees one body chunk; may replace it when stripping the injected usage event.
    pub fn on_body(&mut self, body: &mut Option<Bytes>, end_of_stream: bool) {
        let chunk = body.as_ref().map(|b| b.as_ref()).unwrap_or_default();
        self.bytes_seen += chunk.len();
        match self.kind {
            Kind::Other => {}
            Kind::Json => self.keep_json(chunk),
            Kind::Sse => {
                self.buf.extend_from_slice(chunk);
                let forwarded = self.drain_events();
                if self.strip_usage_event {
                    let mut out = forwarded;
                    if end_of_stream && !self.buf.is_empty() {
                        // An unterminated last event goes out as it came.
                        out.extend_from_slice(&self.buf.split());
                    }
                    *body = Some(out.freeze());
                }
            }
        }
        if end_of_stream {
            self.finish_body();
        }
    }

    fn keep_json(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
        if !self.model_looked && self.buf.len() >= MODEL_HEAD {
            self.look_for_model();
        }
        if self.buf.len() > JSON_KEEP {
            self.json_truncated = true;
        }
        if self.json_truncated && self.buf.len() > JSON_TAIL * 2 {
            let cut = self.buf.len() - JSON_TAIL;
            let _ = self.buf.split_to(cut);
        }
    }

    /// OpenAI puts `model` at the top of a body, before anything large.
    fn look_for_model(&mut self) {
        self.model_looked = true;
        let head = &self.buf[..self.buf.len().min(MODEL_HEAD)];
        self.served_model = model_in_head(head);
    }

    /// Splits complete events off `buf`, records what they carry and returns the
    /// bytes to forward (used only when stripping).
    fn drain_events(&mut self) -> BytesMut {
        let mut out = BytesMut::new();
        while let Some((event_end, sep_len)) = find_event_end(&self.buf) {
            let event = self.buf.split_to(event_end + sep_len);
            let keep = self.on_event(&event[..event_end]);
            if self.strip_usage_event && keep {
                out.extend_from_slice(&event);
            }
        }
        out
    }

    /// Returns false for the usage-only chunk the gateway asked for itself.
    fn on_event(&mut self, event: &[u8]) -> bool {
        let mut data: Cow<'_, [u8]> = Cow::Borrowed(&[]);
        let mut start = 0;
        let ends = memchr::memchr_iter(b'\n', event).chain(std::iter::once(event.len()));
        for end in ends {
            let line = &event[start..end];
            start = end + 1;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some(rest) = line.strip_prefix(b"data:") {
                let rest = rest.strip_prefix(b" ").unwrap_or(rest);
                data = if data.is_empty() {
                    Cow::Borrowed(rest)
                } else {
                    let mut joined = data.into_owned();
                    joined.push(b'\n');
                    joined.extend_from_slice(rest);
                    Cow::Owned(joined)
                };
            }
        }
        if data.is_empty() || data.as_ref() == b"[DONE]" {
            return true;
        }
        if !carries_usage(&data) {
            if self.raw.len() + data.len() >= RAW_KEEP {
                // In order: the kept ones first.
                self.parse_raw();
            }
            if data.len() < RAW_KEEP {
                if self.raw.capacity() == 0 {
                    self.raw.reserve(1024);
                }
                let kept = match self.envelope_end(&data) {
                    Some(at) => {
                        self.raw.push(b'{');
                        &data[at..]
                    }
                    None => &data[..],
                };
                self.raw.extend_from_slice(kept);
                self.raw.push(0);
                return true;
            }
        }
        let Some(event) = self.read_payload(&data) else {
            return true;
        };
        match event.usage {
            Some(u) => {
                self.usage = Some(match self.usage {
                    Some(earlier) if self.dialect == Dialect::Messages => earlier.merge(u),
                    _ => u,
                });
                if let Some(m) = event.model {
                    self.served_model = Some(m);
                }
                event.keep
            }
            None => {
                if self.served_model.is_none() {
                    self.served_model = event.model;
                }
                true
            }
        }
    }

    /// One event's payload in this counter's dialect: its generated text goes
    /// into `text`; its model and usage are returned (None: not JSON).
    fn read_payload(&mut self, data: &[u8]) -> Option<Payload> {
        let text = &mut self.text;
        match self.dialect {
            Dialect::Chat => {
                let chunk = serde_json::from_slice::<ChunkView<'_>>(data).ok()?;
                push_choice_text(text, chunk.choices.as_deref());
                Some(Payload {
                    // The usage chunk the gateway asked for carries nothing else.
                    keep: chunk.usage.is_none()
                        || !chunk.choices.as_deref().is_some_and(carry_nothing),
                    usage: chunk.usage,
                    model: chunk.model.map(JsonStr::into_owned),
                })
            }
            Dialect::Messages => {
                let event = serde_json::from_slice::<MessagesEvent<'_>>(data).ok()?;
                if let Some(d) = &event.delta {
                    for piece in [&d.text, &d.partial_json, &d.thinking]
                        .into_iter()
                        .flatten()
                    {
                        push_text(text, piece);
                    }
                }
                let (model, inner_usage) = event.message.map_or((None, None), |m| {
                    (m.model.map(JsonStr::into_owned), m.usage)
                });
                Some(Payload {
                    keep: true,
                    usage: event.usage.or(inner_usage),
                    model,
                })
            }
            Dialect::Responses => {
                let event = serde_json::from_slice::<ResponsesEvent<'_>>(data).ok()?;
                let counted_delta = event.kind.as_deref().is_some_and(|k| {
                    [
                        "output_text.delta",
                        "function_call_arguments.delta",
                        "refusal.delta",
                        "reasoning_text.delta",
                        "reasoning_summary_text.delta",
                    ]
                    .iter()
                    .any(|suffix| k.ends_with(suffix))
                });
                if let Some(d) = event.delta.as_deref().filter(|_| counted_delta) {
                    push_text(text, d);
                }
                let (model, usage) = event.response.map_or((None, None), |r| {
                    (r.model.map(JsonStr::into_owned), r.usage)
                });
                Some(Payload {
                    keep: true,
                    usage,
                    model,
                })
            }
        }
    }

    /// Where a Chat Completions chunk's top-level `choices` begins, when what
    /// comes before it (`id`, `object`, `created`, `model`,
    /// `system_fingerprint`: two thirds of an OpenAI chunk) may be left out of
    /// `raw`: the reply text is only ever read from `choices`, and the served
    /// model from the first payload that names one. Until the served model is
    /// known, a payload naming it is kept whole, and `raw_has_model` records
    /// that one was. Kept payloads become text less often and parse faster
    /// without the envelope.
    fn envelope_end(&mut self, data: &[u8]) -> Option<usize> {
        if self.dialect != Dialect::Chat {
            return None;
        }
        let at = top_level_choices(data)?;
        if self.served_model.is_none() && !self.raw_has_model {
            self.raw_has_model = model_key(&data[..at]).is_some();
            return None;
        }
        Some(at)
    }

    /// Parses the payloads kept raw into the reply text.
    /// The buffer is emptied and keeps its capacity for the next ones.
    fn parse_raw(&mut self) {
        self.raw_has_model = false;
        let mut raw = std::mem::take(&mut self.raw);
        // memchr, not `split`: the byte-wise split cost ~4 instructions a
        // byte, ~350 a payload (callgrind, a 400-chunk stream).
        let mut start = 0;
        for end in memchr::memchr_iter(0, &raw) {
            let data = &raw[start..end];
            start = end + 1;
            if data.is_empty() {
                continue;
            }
            if let Some(event) = self.read_payload(data) {
                if self.served_model.is_none() {
                    self.served_model = event.model;
                }
            }
        }
        raw.clear();
        self.raw = raw;
    }

    /// The stream is over: the kept payloads are parsed only if no usage came.
    fn settle_text(&mut self) {
        if self.usage.is_none() {
            self.parse_raw();
        }
        self.raw = Vec::new();
    }

    fn finish_body(&mut self) {
        match self.kind {
            Kind::Sse => {
                // A stream cut without a final blank line still may hold an event.
                if !self.buf.is_empty() {
                    let rest = self.buf.split();
                    self.on_event(&rest);
                }
                self.settle_text();
            }
            Kind::Json => {
                if !self.model_looked {
                    self.look_for_model();
                }
                let body = self.buf.split().freeze();
                // `usage` sits at the end: finding it there skips parsing the whole
                // body (an embeddings answer can be megabytes of numbers).
                self.usage = usage_from_tail(&body);
                if self.usage.is_none() && !self.json_truncated {
                    // No usage: keep the reply text for the tokenizer.
                    if let Ok(view) = serde_json::from_slice::<ChunkView<'_>>(&body) {
                        push_choice_text(&mut self.text, view.choices.as_deref());
                    }
                }
            }
            Kind::Other => {}
        }
    }

    /// The upstream's usage, if it sent one.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// Reply text, for counting when no usage arrived: complete once the body
    /// ended or `on_abort` ran (a stream that carried usage keeps none).
    pub fn reply_text(&self) -> &str {
        &self.text
    }

    /// The model the upstream named in its answer (unbounded upstream text).
    pub fn served_model(&self) -> Option<&str> {
        self.served_model.as_deref()
    }

    pub fn bytes_seen(&self) -> usize {
        self.bytes_seen
    }

    /// Streams cut off early still yield what was parsed so far.
    pub fn on_abort(&mut self) {
        if self.kind == Kind::Sse {
            if !self.buf.is_empty() {
                let rest = self.buf.split();
                self.on_event(&rest);
            }
            self.settle_text();
        }
    }
}

/// Whether choices hold nothing for the client: none at all (OpenAI's usage
/// chunk has `"choices": []`), or only empty deltas without a `finish_reason`
/// (LiteLLM's usage chunk has `[{"index": 0, "delta": {}}]`). Such a usage
/// chunk is the one the gateway asked for; one that also ends a choice or
/// carries text stays.
fn carry_nothing(choices: &[ChoiceView<'_>]) -> bool {
    choices.iter().all(|c| {
        let message = c.delta.as_ref().or(c.message.as_ref());
        c.finish_reason.is_none()
            && c.text.as_deref().unwrap_or_default().is_empty()
            && message.is_none_or(|m| m.pieces().all(str::is_empty))
    })
}

fn push_text(text: &mut String, piece: &str) {
    if text.len() + piece.len() <= TEXT_KEEP {
        text.push_str(piece);
    }
}

/// Appends the generated text of each choice: the `delta` of chat chunks, the
/// `message` of chat bodies, `text` in legacy completions.
fn push_choice_text(text: &mut String, choices: Option<&[ChoiceView<'_>]>) {
    for c in choices.unwrap_or_default() {
        let message = c.delta.as_ref().or(c.message.as_ref());
        let pieces = message
            .into_iter()
            .flat_map(TextView::pieces)
            .chain(c.text.as_deref());
        for p in pieces {
            push_text(text, p);
        }
    }
}

/// Position of the end of the first complete event and its separator's length.
fn find_event_end(buf: &[u8]) -> Option<(usize, usize)> {
    for i in memchr::memchr_iter(b'\n', buf) {
        match buf.get(i + 1) {
            Some(b'\n') => return Some((i, 2)),
            Some(b'\r') if buf.get(i + 2) == Some(&b'\n') => return Some((i, 3)),
            Some(_) => {}
            None => return None,
        }
    }
    None
}

/// Where the first key `"model"` in `json` ends (see `model_in_head`).
fn model_key(json: &[u8]) -> Option<usize> {
    static MODEL: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"model\""));
    MODEL
        .find_iter(json)
        .map(|at| at + 7)
        .find(|&end| json[end..].trim_ascii_start().first() == Some(&b':'))
}

/// Where the key `"choices"` of a JSON object's top level begins, when it
/// holds the object's first array and something comes before it. Nothing
/// before it may open an object or an array, or close one, even inside a
/// string (such a payload is simply kept whole): so the key is at the top
/// level, and, preceded by a comma, its opening quote is not an escaped one.
fn top_level_choices(data: &[u8]) -> Option<usize> {
    let inside = data.trim_ascii_start().strip_prefix(b"{")?;
    let open = memchr::memchr3(b'{', b'[', b'}', inside)?;
    let key = inside[..open]
        .trim_ascii_end()
        .strip_suffix(b":")?
        .trim_ascii_end()
        .strip_suffix(b"\"choices\"")?;
    let first = inside[open] == b'[' && key.trim_ascii_end().ends_with(b",");
    first.then(|| data.len() - inside.len() + key.len())
}

/// Whether an SSE payload has `"usage": {` (not `null`, which OpenAI sends on
/// every chunk once usage is asked for). Like `usage_from_tail`, the needle
/// cannot match inside a JSON string.
fn carries_usage(data: &[u8]) -> bool {
    static USAGE: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(USAGE_KEY));
    USAGE.find_iter(data).any(|at| {
        let rest = data[at + USAGE_KEY.len()..].trim_ascii_start();
        rest.first() == Some(&b':') && rest[1..].trim_ascii_start().first() == Some(&b'{')
    })
}

/// The first `"model": "..."` in the head of a JSON body. Like `USAGE_KEY`
/// the needle cannot match inside a string, and a string value `"model"` is
/// never followed by a colon.
fn model_in_head(head: &[u8]) -> Option<String> {
    let rest = head[model_key(head)?..].trim_ascii_start();
    let mut values = serde_json::Deserializer::from_slice(&rest[1..]).into_iter::<String>();
    values.next()?.ok()
}

/// Finds the last `"usage": {...}` in a (possibly cut) JSON body. The needle cannot
/// match inside a JSON string, where quotes are escaped.
fn usage_from_tail(body: &[u8]) -> Option<Usage> {
    static USAGE: std::sync::LazyLock<memchr::memmem::FinderRev<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::FinderRev::new(USAGE_KEY));
    let pos = USAGE.rfind(body)?;
    let rest = &body[pos + USAGE_KEY.len()..];
    let colon = rest.iter().position(|&b| b == b':')?;
    let mut de = serde_json::Deserializer::from_slice(&rest[colon + 1..]).into_iter::<Usage>();
    de.next()?.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(c: &mut ResponseCounter, chunks: &[&str]) -> String {
        let mut out = String::new();
        for (i, ch) in chunks.iter().enumerate() {
            let mut b = Some(Bytes::copy_from_slice(ch.as_bytes()));
            c.on_body(&mut b, i + 1 == chunks.len());
            out.push_str(std::str::from_utf8(b.as_deref().unwrap_or_default()).unwrap());
        }
        out
    }

    const STREAM: &[&str] = &[
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}],\"usage\":null}\n\ndata: {\"choices\":[{\"index\":0,\"del",
        "ta\":{\"content\":\"lo\"}}],\"usage\":null}\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2,\"total_tokens\":9}}\n\n",
        "data: [DONE]\n\n",
    ];

    /// An OpenAI chunk's envelope (`id`, `object`, `created`, `model`,
    /// `system_fingerprint`) before `choices`.
    fn openai_chunk(model: &str, content: &str) -> String {
        format!(
            "data: {{\"id\":\"chatcmpl-AX7bq2Kf9JtY3nLw0pQe5RsT1uVz\",\"object\":\"chat.completion.chunk\",\"created\":1732550000,\"model\":\"{model}\",\"system_fingerprint\":\"fp_0ba0d124f1\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":{content}}},\"logprobs\":null,\"finish_reason\":null}}],\"usage\":null}}\n\n"
        )
    }

    #[test]
    fn kept_chunks_lose_their_envelope_but_not_their_text_or_model() {
        let mut events = vec![openai_chunk("gpt-4o-mini-2024-07-18", "\"\"")];
        let words: Vec<String> = (0..40).map(|i| format!("w{i} \\\"q\\\" ")).collect();
        for w in &words {
            events.push(openai_chunk("gpt-4o-mini-2024-07-18", &format!("\"{w}\"")));
        }
        let refs: Vec<&str> = events.iter().map(String::as_str).collect();
        let mut c = ResponseCounter::new(Some("text/event-stream"), false);
        let sent: usize = refs.iter().map(|e| e.len()).sum();
        for e in &refs {
            c.on_body(&mut Some(Bytes::copy_from_slice(e.as_bytes())), false);
        }
        // The first payload is whole (it names the model); the rest are not.
        assert!(c.raw.len() * 2 < sent, "{} of {sent}", c.raw.len());
        c.on_body(&mut None, true);
        let said: String = words.iter().map(|w| w.replace('\\', "")).collect();
        assert_eq!(c.reply_text(), said);
        assert_eq!(c.served_model(), Some("gpt-4o-mini-2024-07-18"));

        // A first chunk without a model leaves the next one whole, which has it.
        let mut c = ResponseCounter::new(Some("text/event-stream"), false);
        let first =
            "data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n";
        feed(
            &mut c,
            &[
                first,
                &openai_chunk("served-2", "\"b\""),
                &openai_chunk("other", "\"c\""),
                "",
            ],
        );
        assert_eq!(c.reply_text(), "abc");
        assert_eq!(c.served_model(), Some("served-2"));
    }

    #[test]
    fn only_a_top_level_choices_key_ends_the_envelope() {
        let at = |s: &str| top_level_choices(s.as_bytes());
        assert_eq!(at(r#"{"id":"x","choices":[]}"#), Some(10));
        assert_eq!(at(r#" { "id" : 1 , "choices" : []}"#), Some(14));
        // Nothing before it, or not a key, or inside something nested.
        assert_eq!(at(r#"{"choices":[]}"#), None);
        assert_eq!(at(r#"{"id":"choices","x":1}"#), None);
        assert_eq!(at(r#"{"a":{"choices":[1]},"choices":[]}"#), None);
        assert_eq!(at(r#"{"a":["x"],"choices":[]}"#), None);
        assert_eq!(at(r#"{"a":"}{","choices":[]}"#), None);
        assert_eq!(at(r#"{"a":"\"choices\":","choices":[]}"#), Some(20));
        assert_eq!(at(r#"["choices"]"#), None);
        // Payloads like these are kept whole and still counted.
        let mut c = ResponseCounter::new(Some("text/event-stream"), false);
        feed(
            &mut c,
            &[
                "data: {\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"1\"}}]}\n\n",
                "data: {\"p\":{\"choices\":[{\"delta\":{\"content\":\"no\"}}]},\"choices\":[{\"delta\":{\"content\":\"2\"}}]}\n\n",
                "data: {\"p\":[1],\"choices\":[{\"delta\":{\"content\":\"3\"}}]}\n\n",
                "",
            ],
        );
        assert_eq!(c.reply_text(), "123");
    }

    /// Images and audio name their tokens `input_tokens`/`output_tokens`; an
    /// answer with both namings keeps the chat ones (and is not refused as
    /// a duplicate field).
    #[test]
    fn input_and_output_tokens_are_read() {
        let mut c = ResponseCounter::new(Some("application/json"), false);
        feed(
            &mut c,
            &[
                r#"{"text":"hi","usage":{"type":"tokens","input_tokens":14,"input_token_details":{"audio_tokens":14},"output_tokens":3,"total_tokens":17}}"#,
            ],
        );
        assert_eq!(
            (
                c.usage().unwrap().prompt_tokens,
                c.usage().unwrap().completion_tokens
            ),
            (14, 3)
        );
        let mut c = ResponseCounter::new(Some("application/json"), false);
        feed(
            &mut c,
            &[
                r#"{"usage":{"prompt_tokens":5,"completion_tokens":2,"input_tokens":9,"output_tokens":9}}"#,
            ],
        );
        assert_eq!(
            (
                c.usage().unwrap().prompt_tokens,
                c.usage().unwrap().completion_tokens
            ),
            (5, 2)
        );
    }

    #[test]
    fn sse_passthrough_is_untouched_and_counts() {
        let mut c = ResponseCounter::new(Some("text/event-stream; charset=utf-8"), false);
        let out = feed(&mut c, STREAM);
        assert_eq!(out, STREAM.concat());
        assert_eq!(
            c.usage(),
            Some(Usage {
                prompt_tokens: 7,
                completion_tokens: 2,
                ..Default::default()
            })
        );
        // The upstream's usage counts; the content chunks were never parsed.
        assert_eq!(c.reply_text(), "");

        // Without the usage event the reply text is there for the tokenizer.
        let mut c = ResponseCounter::new(Some("text/event-stream"), false);
        feed(&mut c, &[STREAM[0], STREAM[1], STREAM[2], STREAM[4]]);
        assert_eq!(c.usage(), None);
        assert_eq!(c.reply_text(), "Hello");
    }

    #[test]
    fn a_long_stream_without_usage_keeps_all_its_text() {
        // Far past RAW_KEEP of payloads: they become text in turns, in order.
        let words: Vec<String> = (0..2000).map(|i| format!("w{i} ")).collect();
        let events: Vec<String> = words
            .iter()
            .map(|w| format!("data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{w}\"}}}}],\"usage\":null}}\n\n"))
            .collect();
        let mut c = ResponseCounter::new(Some("text/event-stream"), false);
        let refs: Vec<&str> = events.iter().map(String::as_str).collect();
        for e in &refs {
            c.on_body(&mut Some(Bytes::copy_from_slice(e.as_bytes())), false);
            // An open stream holds its text and a bounded buffer, however long.
            assert!(c.raw.capacity() <= RAW_KEEP, "{}", c.raw.capacity());
        }
        c.on_body(&mut None, true);
        assert_eq!(c.reply_text(), words.concat());
        // Cut off midway: what arrived counts.
        let mut c = ResponseCounter::new(Some("text/event-stream"), false);
        for e in &refs[..3] {
            c.on_body(&mut Some(Bytes::copy_from_slice(e.as_bytes())), false);
        }
        c.on_abort();
        assert_eq!(c.reply_text(), "w0 w1 w2 ");
    }

    #[test]
    fn only_a_usage_object_is_usage() {
        assert!(carries_usage(
            br#"{"choices":[],"usage":{"prompt_tokens":1}}"#
        ));
        assert!(carries_usage(br#"{"usage" : {"prompt_tokens":1}}"#));
        assert!(!carries_usage(br#"{"choices":[],"usage":null}"#));
        assert!(!carries_usage(br#"{"delta":{"content":"\"usage\":{"}}"#));
    }

    #[test]
    fn sse_strip_removes_only_the_usage_event() {
        let mut c = ResponseCounter::new(Some("text/event-stream"), true);
        let out = feed(&mut c, STREAM);
        let expected: String = STREAM.concat().replace(
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2,\"total_tokens\":9}}\n\n",
            "",
        );
        assert_eq!(out, expected);
        assert_eq!(c.usage().unwrap().completion_tokens, 2);
    }

    /// LiteLLM's usage chunk keeps one choice with an empty delta; a client
    /// that did not ask for usage got it before.
    #[test]
    fn sse_strip_removes_a_usage_event_with_empty_choices() {
        let litellm_usage = "data: {\"model\":\"m\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{}}],\"usage\":{\"completion_tokens\":5,\"prompt_tokens\":9,\"total_tokens\":14}}\n\n";
        let stream = [STREAM[0], STREAM[1], STREAM[2], litellm_usage, STREAM[4]];
        let mut c = ResponseCounter::new(Some("text/event-stream"), true);
        let out = feed(&mut c, &stream);
        assert_eq!(out, stream.concat().replace(litellm_usage, ""));
        assert_eq!(c.usage().unwrap().completion_tokens, 5);

        // Usage in the chunk that ends the choice or carries text: kept.
        for last in [
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":9}}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"!\"}}],\"usage\":{\"prompt_tokens\":9}}\n\n",
        ] {
            let stream = [STREAM[0], last, STREAM[4]];
            let mut c = ResponseCounter::new(Some("text/event-stream"), true);
            assert_eq!(feed(&mut c, &stream), stream.concat());
        }
    }

    #[test]
    fn sse_crlf_and_cut_stream() {
        let mut c = ResponseCounter::new(Some("text/event-stream"), false);
        feed(
            &mut c,
            &["data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\r\n\r\ndata: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}"],
        );
        assert_eq!(c.reply_text(), "ab");
        assert_eq!(c.usage(), None);
    }

    #[test]
    fn json_usage_and_text() {
        let mut c = ResponseCounter::new(Some("application/json"), true);
        let body = r#"{"choices":[{"message":{"role":"assistant","content":"Hi there"}}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;
        let out = feed(&mut c, &[&body[..20], &body[20..]]);
        assert_eq!(out, body, "JSON bodies are never rewritten");
        assert_eq!(c.usage().unwrap().prompt_tokens, 3);

        let mut c = ResponseCounter::new(Some("application/json"), false);
        feed(
            &mut c,
            &[r#"{"choices":[{"message":{"content":"Hi \"usage\": 1"}}]}"#],
        );
        assert_eq!(c.usage(), None);
        assert_eq!(c.reply_text(), "Hi \"usage\": 1");
    }

    #[test]
    fn tool_calls_refusals_and_reasoning_are_counted_as_output() {
        // A streamed answer made only of reasoning and a tool call.
        let mut c = ResponseCounter::new(Some("text/event-stream"), false);
        feed(
            &mut c,
            &[
                "data: {\"choices\":[{\"delta\":{\"reasoning_content\":\"think \"}}]}\n\n",
                "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]}}]}\n\n",
                "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}}]}}]}\n\n",
                "data: [DONE]\n\n",
            ],
        );
        assert_eq!(c.reply_text(), "think get_weather{\"city\":\"Paris\"}");

        let mut c = ResponseCounter::new(Some("application/json"), false);
        feed(
            &mut c,
            &[
                r#"{"choices":[{"message":{"content":null,"refusal":"I can't help with that.","reasoning":"policy","function_call":{"name":"f","arguments":"{}"}}}]}"#,
            ],
        );
        assert_eq!(c.reply_text(), "policyI can't help with that.f{}");
    }

    #[test]
    fn cached_and_reasoning_tokens_and_the_served_model_are_read() {
        let mut c = ResponseCounter::new(Some("application/json"), false);
        let body = r#"{"id":"c","object":"chat.completion","model":"gpt-4o-mini-2024-07-18","choices":[{"message":{"content":"{\"model\": \"x\"}"}}],"usage":{"prompt_tokens":2006,"completion_tokens":300,"total_tokens":2306,"prompt_tokens_details":{"cached_tokens":1920,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":256,"audio_tokens":null}}}"#;
        feed(&mut c, &[&body[..30], &body[30..]]);
        let u = c.usage().unwrap();
        assert_eq!((u.cached_tokens(), u.reasoning_tokens()), (1920, 256));
        assert_eq!(c.served_model(), Some("gpt-4o-mini-2024-07-18"));

        // Details that are null, or claim more than the total, count as at most the total.
        let mut c = ResponseCounter::new(Some("application/json"), false);
        feed(
            &mut c,
            &[
                r#"{"model" : "m","usage":{"prompt_tokens":5,"completion_tokens":1,"prompt_tokens_details":null,"completion_tokens_details":{"reasoning_tokens":9}}}"#,
            ],
        );
        let u = c.usage().unwrap();
        assert_eq!((u.cached_tokens(), u.reasoning_tokens()), (0, 1));
        assert_eq!(c.served_model(), Some("m"));

        // Streams name it in every chunk; the usage chunk's is kept.
        let mut c = ResponseCounter::new(Some("text/event-stream"), true);
        feed(
            &mut c,
            &[
                "data: {\"model\":\"served-1\",\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n",
                "data: {\"model\":\"served-1\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,\"prompt_tokens_details\":{\"cached_tokens\":2}}}\n\n",
            ],
        );
        assert_eq!(c.usage().unwrap().cached_tokens(), 2);
        assert_eq!(c.served_model(), Some("served-1"));
    }

    #[test]
    fn huge_json_keeps_tail_usage() {
        let mut c = ResponseCounter::new(Some("application/json"), false);
        let big = "x".repeat(JSON_KEEP + 10);
        let body =
            format!(r#"{{"data":"{big}","usage":{{"prompt_tokens":11,"total_tokens":11}}}}"#);
        let chunks: Vec<&str> = body
            .as_bytes()
            .chunks(100_000)
            .map(|b| std::str::from_utf8(b).unwrap())
            .collect();
        feed(&mut c, &chunks);
        assert_eq!(c.usage().unwrap().prompt_tokens, 11);
    }

    /// Anthropic's stream (<https://docs.anthropic.com/en/api/messages-streaming>):
    /// the input side in `message_start`, the cumulative output in
    /// `message_delta`; `input_tokens` leave out the cache's tokens.
    #[test]
    fn anthropic_streams_are_counted_with_their_cache_tokens() {
        let mut c =
            ResponseCounter::new(Some("text/event-stream"), false).with_dialect(Dialect::Messages);
        let out = feed(
            &mut c,
            &[
                "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5-20250929\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":25,\"cache_creation_input_tokens\":100,\"cache_read_input_tokens\":2000,\"output_tokens\":1}}}\n\n",
                "event: ping\ndata: {\"type\": \"ping\"}\n\n",
                "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
                "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n",
                "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
            ],
        );
        assert!(out.contains("message_stop"), "bytes pass through");
        let u = c.usage().unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (2125, 15));
        assert_eq!((u.cached_tokens(), u.cache_write_tokens()), (2000, 100));
        assert_eq!(c.served_model(), Some("claude-sonnet-4-5-20250929"));
    }

    #[test]
    fn an_anthropic_message_is_counted_from_its_usage() {
        let mut c =
            ResponseCounter::new(Some("application/json"), false).with_dialect(Dialect::Messages);
        let body = r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-haiku-4-5","content":[{"type":"text","text":"Hi"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":0,"cache_read_input_tokens":8,"output_tokens":6}}"#;
        feed(&mut c, &[body]);
        let u = c.usage().unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.cached_tokens()),
            (20, 6, 8)
        );
    }

    /// The Responses API reports usage in the final event's `response`, with
    /// `input_tokens` including the cached ones.
    #[test]
    fn responses_streams_are_counted_from_their_final_event() {
        for last in [
            "response.completed",
            "response.incomplete",
            "response.failed",
        ] {
            let mut c = ResponseCounter::new(Some("text/event-stream"), false)
                .with_dialect(Dialect::Responses);
            let done = format!("event: {last}\ndata: {{\"type\":\"{last}\",\"sequence_number\":5,\"response\":{{\"id\":\"resp_1\",\"object\":\"response\",\"model\":\"gpt-5-2025-08-07\",\"usage\":{{\"input_tokens\":300,\"input_tokens_details\":{{\"cached_tokens\":256}},\"output_tokens\":40,\"output_tokens_details\":{{\"reasoning_tokens\":32}},\"total_tokens\":340}}}}}}\n\n");
            feed(
                &mut c,
                &[
                    "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"model\":\"gpt-5\",\"usage\":null}}\n\n",
                    "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":3,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"Hi\"}\n\n",
                    &done,
                ],
            );
            let u = c.usage().unwrap_or_else(|| panic!("{last}: no usage"));
            assert_eq!((u.prompt_tokens, u.completion_tokens), (300, 40), "{last}");
            assert_eq!(
                (u.cached_tokens(), u.reasoning_tokens()),
                (256, 32),
                "{last}"
            );
            assert_eq!(c.served_model(), Some("gpt-5-2025-08-07"));
        }
    }

    /// Without a usage report the text of each dialect is kept for the tokenizer.
    #[test]
    fn the_text_of_each_dialect_is_kept_when_no_usage_comes() {
        let mut c =
            ResponseCounter::new(Some("text/event-stream"), false).with_dialect(Dialect::Messages);
        feed(&mut c, &[
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"hmm \"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\":1}\"}}\n\n",
        ]);
        assert_eq!(c.reply_text(), "hmm {\"a\":1}");
        let mut c =
            ResponseCounter::new(Some("text/event-stream"), false).with_dialect(Dialect::Responses);
        feed(
            &mut c,
            &[
                "data: {\"type\":\"response.output_text.delta\",\"delta\":\"Hel\"}\n\n",
                "data: {\"type\":\"response.function_call_arguments.delta\",\"delta\":\"{}\"}\n\n",
                "data: {\"type\":\"response.audio.delta\",\"delta\":\"AAAA\"}\n\n",
            ],
        );
        assert_eq!(c.reply_text(), "Hel{}");
    }

    /// LiteLLM puts Anthropic's cache fields beside `prompt_tokens`, which
    /// counts them already: they are not added twice.
    #[test]
    fn litellms_cache_fields_in_chat_usage_are_not_added_twice() {
        let mut c = ResponseCounter::new(Some("application/json"), false);
        feed(
            &mut c,
            &[
                r#"{"choices":[],"usage":{"prompt_tokens":2100,"completion_tokens":5,"cache_creation_input_tokens":100,"cache_read_input_tokens":1900,"prompt_tokens_details":{"cached_tokens":1900}}}"#,
            ],
        );
        let u = c.usage().unwrap();
        assert_eq!(
            (u.prompt_tokens, u.cached_tokens(), u.cache_write_tokens()),
            (2100, 1900, 100)
        );
    }
}
