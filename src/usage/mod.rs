//! Usage accounting: count tokens from what the upstream sends, price them, and hand
//! one record per request to the batch writer without waiting for the database.

pub mod cost;
pub mod counter;
pub mod spill;
pub mod tokenizer;
pub mod writer;

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

pub use cost::PriceTable;
pub use counter::{ResponseCounter, Usage};
pub use writer::{spawn_writer, UsageQueue};

/// Where a record's token counts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UsageSource {
    /// The upstream's own `usage` object.
    Upstream,
    /// Counted locally with a tokenizer because the upstream sent no usage.
    Tokenizer,
    /// Nothing to count (the request never reached an upstream).
    None,
}

impl UsageSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Upstream => "upstream",
            Self::Tokenizer => "tokenizer",
            Self::None => "none",
        }
    }
}

/// One proxied request, as stored in `usage_records` (and, while the database is
/// unavailable, as a JSON line in the spill file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    pub request_id: String,
    pub created_at: i64,
    pub key_id: Option<i64>,
    pub user_id: Option<i64>,
    pub endpoint: Cow<'static, str>,
    pub model: Option<String>,
    pub backend: Option<String>,
    pub status: u16,
    pub stream: bool,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub usage_source: UsageSource,
    pub cost_nanousd: i64,
    pub latency_ms: u64,
    pub ttfb_ms: Option<u64>,
    pub error_code: Option<String>,
}

/// A request's tokens and where the numbers came from.
#[derive(Debug, Clone, Copy)]
pub struct Counted {
    pub prompt: u64,
    pub completion: u64,
    pub source: UsageSource,
}

impl Counted {
    pub const NOTHING: Counted = Counted {
        prompt: 0,
        completion: 0,
        source: UsageSource::None,
    };

    pub fn total(&self) -> u64 {
        self.prompt + self.completion
    }
}

/// What the proxy knows when a request ends, for its record.
pub struct Finished<'a> {
    pub request_id: String,
    pub started: std::time::Instant,
    pub first_byte: Option<std::time::Instant>,
    pub key: Option<&'a crate::auth::ApiKey>,
    pub endpoint: Option<&'static str>,
    pub model: Option<String>,
    pub backend: Option<String>,
    pub status: u16,
    pub stream: bool,
    pub counted: Counted,
    pub prices: &'a PriceTable,
    pub error_code: Option<&'static str>,
}

impl UsageRecord {
    /// The record of a finished request, priced with the request's price table.
    pub fn finished(f: Finished<'_>) -> Self {
        let Counted {
            prompt,
            completion,
            source,
        } = f.counted;
        let cost = f
            .model
            .as_deref()
            .map_or(0, |m| f.prices.cost_nanousd(m, prompt, completion));
        UsageRecord {
            request_id: f.request_id,
            created_at: crate::store::now_ms(),
            key_id: f.key.map(|k| k.id),
            user_id: f.key.and_then(|k| k.user_id),
            endpoint: f.endpoint.unwrap_or("unknown").into(),
            model: f.model,
            backend: f.backend,
            status: f.status,
            stream: f.stream,
            prompt_tokens: prompt,
            completion_tokens: completion,
            usage_source: source,
            cost_nanousd: cost,
            latency_ms: f.started.elapsed().as_millis() as u64,
            ttfb_ms: f
                .first_byte
                .map(|t| t.duration_since(f.started).as_millis() as u64),
            error_code: f.error_code.map(str::to_string),
        }
    }
}
