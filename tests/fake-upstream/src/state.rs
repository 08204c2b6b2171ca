//! State shared by every connection of one fake upstream: the knobs tests
//! flip at run time, the request log, and everything precomputed from the
//! [`FakeConfig`] so the hot path only copies bytes.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;

use crate::{FakeConfig, Mode, Provider, RecordedRequest};

/// Per-request header overriding the chunk delay, in milliseconds.
pub const CHUNK_DELAY_HEADER: &str = "x-fake-chunk-delay-ms";

/// One content chunk of the reply, in every shape it is sent.
#[derive(Debug)]
pub struct Piece {
    /// The raw text.
    pub text: String,
    /// `choices[0]` of a chat stream chunk carrying this text.
    pub chat_choice: String,
    /// `choices[0]` of a legacy completion stream chunk carrying this text.
    pub text_choice: String,
}

pub struct Shared {
    /// The reply, pre-split into `cfg.chunks` pieces.
    pub pieces: Box<[Piece]>,
    /// Concatenation of all pieces (the non-truncated non-stream content).
    pub full_text: String,
    /// `"Bearer <key>"`, when auth is required.
    pub expected_auth: Option<Box<[u8]>>,
    /// Added to every `/v1/*` response (see `FakeConfig::response_headers`).
    pub response_headers: Vec<(axum::http::HeaderName, axum::http::HeaderValue)>,
    /// See the `FakeConfig` fields of the same names.
    pub cached_tokens: usize,
    pub reasoning_tokens: usize,
    pub served_model: Option<String>,
    pub strict_request_id: bool,
    pub provider: Provider,
    /// The key, for providers other than OpenAI.
    pub provider_key: Option<String>,
    mode: Mutex<Mode>,
    health_ok: AtomicBool,
    chunk_delay_ns: AtomicU64,
    /// While `true`, streams wait before each content chunk.
    held: tokio::sync::watch::Sender<bool>,
    recording: AtomicBool,
    request_count: AtomicUsize,
    /// Streams sent to their last event (see `FakeUpstream::completed_streams`).
    pub completed_streams: AtomicUsize,
    connections: AtomicUsize,
    requests: Mutex<Vec<RecordedRequest>>,
    next_id: AtomicU64,
    /// Ids of `/v1/responses` answers stored (`store` not false), which a
    /// later `previous_response_id` may name. Bounded: the oldest go first.
    stored_responses: Mutex<std::collections::VecDeque<String>>,
}

/// Stored response ids kept (OpenAI keeps them 30 days; a test needs few).
const STORED_RESPONSES: usize = 4096;

/// How much of the reply one request gets, and how fast.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Number of content chunks (= completion tokens).
    pub chunks: usize,
    /// `"stop"`, or `"length"` when `max_tokens` truncated the reply.
    pub finish_reason: &'static str,
    /// Sleep before each content chunk.
    pub delay: Duration,
}

/// Locks a mutex, ignoring poisoning: a panicking test thread must not take
/// the fake down with it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub fn new(cfg: &FakeConfig) -> Self {
        let pieces: Box<[Piece]> = split_reply(&cfg.reply, cfg.chunks)
            .into_iter()
            .map(|text| {
                let json = serde_json::to_string(&text).expect("strings serialize");
                Piece {
                    chat_choice: format!(
                        r#"{{"index":0,"delta":{{"content":{json}}},"finish_reason":null,"logprobs":null}}"#
                    ),
                    text_choice: format!(
                        r#"{{"index":0,"text":{json},"finish_reason":null,"logprobs":null}}"#
                    ),
                    text,
                }
            })
            .collect();
        let full_text = pieces.iter().map(|p| p.text.as_str()).collect();
        Shared {
            pieces,
            full_text,
            expected_auth: cfg
                .api_key
                .as_ref()
                .filter(|_| cfg.provider == Provider::OpenAi)
                .map(|k| format!("Bearer {k}").into_bytes().into_boxed_slice()),
            provider: cfg.provider.clone(),
            provider_key: cfg.api_key.clone(),
            response_headers: cfg
                .response_headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.parse().expect("a header name"),
                        v.parse().expect("a header value"),
                    )
                })
                .collect(),
            cached_tokens: cfg.cached_tokens,
            reasoning_tokens: cfg.reasoning_tokens,
            served_model: cfg.served_model.clone(),
            strict_request_id: cfg.strict_request_id,
            mode: Mutex::new(Mode::Normal),
            health_ok: AtomicBool::new(true),
            chunk_delay_ns: AtomicU64::new(duration_to_ns(cfg.chunk_delay)),
            held: tokio::sync::watch::channel(false).0,
            recording: AtomicBool::new(true),
            request_count: AtomicUsize::new(0),
            completed_streams: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            stored_responses: Mutex::new(std::collections::VecDeque::new()),
        }
    }

    pub fn mode(&self) -> Mode {
        *lock(&self.mode)
    }
    pub fn set_mode(&self, m: Mode) {
        *lock(&self.mode) = m;
    }

    pub fn health_ok(&self) -> bool {
        self.health_ok.load(Ordering::Relaxed)
    }
    pub fn set_health_ok(&self, ok: bool) {
        self.health_ok.store(ok, Ordering::Relaxed);
    }

    pub fn chunk_delay(&self) -> Duration {
        Duration::from_nanos(self.chunk_delay_ns.load(Ordering::Relaxed))
    }
    pub fn set_chunk_delay(&self, d: Duration) {
        self.chunk_delay_ns
            .store(duration_to_ns(d), Ordering::Relaxed);
    }

    pub fn set_held(&self, held: bool) {
        self.held.send_replace(held);
    }
    /// Returns once streams are not held.
    pub async fn wait_unheld(&self) {
        if !*self.held.borrow() {
            return;
        }
        let mut rx = self.held.subscribe();
        let _ = rx.wait_for(|held| !*held).await;
    }

    pub fn set_recording(&self, on: bool) {
        self.recording.store(on, Ordering::Relaxed);
    }

    /// Counts a `/v1/*` request and, when recording is on, stores it.
    /// `make` is only called when recording, so the benchmark binary (which
    /// turns recording off) does not pay for copying headers and bodies.
    pub fn record(&self, make: impl FnOnce() -> RecordedRequest) {
        self.request_count.fetch_add(1, Ordering::Relaxed);
        if self.recording.load(Ordering::Relaxed) {
            let r = make();
            lock(&self.requests).push(r);
        }
    }
    /// Counts an accepted connection; returns its number (from 1).
    pub fn count_connection(&self) -> usize {
        self.connections.fetch_add(1, Ordering::Relaxed) + 1
    }
    pub fn connections_accepted(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.requests).clone()
    }
    pub fn request_count(&self) -> usize {
        self.request_count.load(Ordering::Relaxed)
    }
    pub fn clear_requests(&self) {
        let mut reqs = lock(&self.requests);
        reqs.clear();
        self.request_count.store(0, Ordering::Relaxed);
    }

    /// A fresh response id number (unique per server).
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn store_response(&self, id: &str) {
        let mut stored = lock(&self.stored_responses);
        if stored.len() == STORED_RESPONSES {
            stored.pop_front();
        }
        stored.push_back(id.to_owned());
    }

    pub fn response_stored(&self, id: &str) -> bool {
        lock(&self.stored_responses).iter().any(|s| s == id)
    }

    /// Decides chunk count, finish reason and delay for one request.
    pub fn plan(&self, max_tokens: Option<u64>, headers: &HeaderMap) -> Plan {
        let configured = self.pieces.len();
        let (chunks, finish_reason) = match max_tokens {
            Some(max) if max < configured as u64 => (max as usize, "length"),
            _ => (configured, "stop"),
        };
        let delay = headers
            .get(CHUNK_DELAY_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_millis)
            .unwrap_or_else(|| self.chunk_delay());
        Plan {
            chunks,
            finish_reason,
            delay,
        }
    }

    /// The completion text for the first `chunks` pieces.
    pub fn content(&self, chunks: usize) -> std::borrow::Cow<'_, str> {
        if chunks >= self.pieces.len() {
            self.full_text.as_str().into()
        } else {
            self.pieces[..chunks]
                .iter()
                .map(|p| p.text.as_str())
                .collect::<String>()
                .into()
        }
    }
}

fn duration_to_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Unix time in seconds, for `created`.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Splits `reply` into exactly `n` pieces whose concatenation is the reply
/// (with whitespace normalised to single spaces).
///
/// * `n <= words`: words are spread evenly over the pieces; every piece but
///   the last ends with a space (`"Hello "`, `"from "`, ..., `"upstream"`).
/// * `n > words`: the words are cycled round-robin, one per piece, so a
///   benchmark asking for 1000 chunks gets 1000 non-empty chunks and a
///   proportionally longer reply.
/// * An empty reply yields `n` empty pieces.
pub fn split_reply(reply: &str, n: usize) -> Vec<String> {
    let words: Vec<&str> = reply.split_whitespace().collect();
    if words.is_empty() {
        return vec![String::new(); n];
    }
    let last = n.saturating_sub(1);
    (0..n)
        .map(|i| {
            let mut piece = if n <= words.len() {
                words[i * words.len() / n..(i + 1) * words.len() / n].join(" ")
            } else {
                words[i % words.len()].to_owned()
            };
            if i != last {
                piece.push(' ');
            }
            piece
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::split_reply;

    #[test]
    fn split_even() {
        assert_eq!(
            split_reply("Hello from the fake upstream", 5),
            ["Hello ", "from ", "the ", "fake ", "upstream"]
        );
        assert_eq!(
            split_reply("Hello from the fake upstream", 2),
            ["Hello from ", "the fake upstream"]
        );
    }

    #[test]
    fn split_round_robin() {
        assert_eq!(split_reply("a b", 5), ["a ", "b ", "a ", "b ", "a"]);
    }

    #[test]
    fn split_edge_cases() {
        assert!(split_reply("a b", 0).is_empty());
        assert_eq!(split_reply("", 2), ["", ""]);
        assert_eq!(split_reply("  a   b ", 1), ["a b"]);
    }
}
