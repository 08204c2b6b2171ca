//! Usage accounting: count tokens from what the upstream sends, price them, and
//! put one record per request into the ledger, which the batch writer moves into
//! the database.

mod codec;
pub mod cost;
pub mod counter;
pub mod ledger;
pub mod tokenizer;
pub mod verify;
pub mod writer;

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

pub use cost::PriceTable;
pub use counter::{ResponseCounter, Usage};
pub use ledger::Ledger;
pub use writer::spawn_writer;

/// Where a record's token counts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UsageSource {
    /// The upstream's own `usage` object.
    Upstream,
    /// Counted locally with a tokenizer because the upstream sent no usage.
    Tokenizer,
    /// The admission estimate: the client left, and the upstream's report did
    /// not come within `usage.abandoned_read_*` (and exceeded the tokenizer's count).
    Estimate,
    /// Nothing to count (the request never reached an upstream).
    None,
}

impl UsageSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Upstream => "upstream",
            Self::Tokenizer => "tokenizer",
            Self::Estimate => "estimate",
            Self::None => "none",
        }
    }
}

/// One proxied request, as stored in `usage_records` (and in the ledger until
/// the database has it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    pub request_id: String,
    pub created_at: i64,
    pub key_id: Option<i64>,
    pub user_id: Option<i64>,
    pub endpoint: Cow<'static, str>,
    /// The model asked for when a pool lists it or it has a price, else `other`
    /// (client-chosen text never becomes a key of the daily totals).
    pub model: Option<String>,
    /// What the client asked for when `model` is `other`: at most
    /// `MODEL_RAW_MAX` characters, control characters removed.
    #[serde(default)]
    pub model_raw: Option<String>,
    pub backend: Option<String>,
    pub status: u16,
    pub stream: bool,
    /// All input tokens, the cached ones and those written to a cache included.
    pub prompt_tokens: u64,
    /// All output tokens, the reasoning ones included.
    pub completion_tokens: u64,
    /// Of `prompt_tokens`: read from the provider's prompt cache.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cached_tokens: u64,
    /// Of `prompt_tokens`: written to the provider's prompt cache (Anthropic).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_write_tokens: u64,
    /// Of `completion_tokens`: reasoning.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reasoning_tokens: u64,
    /// The model the upstream says answered, when it differs from `model`
    /// (bounded like `model_raw`).
    #[serde(default)]
    pub served_model: Option<String>,
    pub usage_source: UsageSource,
    pub cost_nanousd: i64,
    pub latency_ms: u64,
    pub ttfb_ms: Option<u64>,
    pub error_code: Option<String>,
}

/// The stored model of requests for a model no pool lists and no price names.
pub const OTHER_MODEL: &str = "other";
/// Characters kept of an unknown model name.
pub const MODEL_RAW_MAX: usize = 200;

/// `text` without control characters, cut to `MODEL_RAW_MAX` characters: safe
/// for every database (no NUL) and for an index.
fn bounded_text(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(MODEL_RAW_MAX)
        .collect()
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A request's tokens and where the numbers came from. `cached`,
/// `cache_write` are parts of `prompt`, `reasoning` of `completion`.
#[derive(Debug, Clone, Copy)]
pub struct Counted {
    pub prompt: u64,
    pub completion: u64,
    pub cached: u64,
    pub cache_write: u64,
    pub reasoning: u64,
    pub source: UsageSource,
}

impl Counted {
    pub const NOTHING: Counted = Counted {
        prompt: 0,
        completion: 0,
        cached: 0,
        cache_write: 0,
        reasoning: 0,
        source: UsageSource::None,
    };

    pub fn from_upstream(u: Usage) -> Self {
        Self {
            prompt: u.prompt_tokens,
            completion: u.completion_tokens,
            cached: u.cached_tokens(),
            cache_write: u.cache_write_tokens(),
            reasoning: u.reasoning_tokens(),
            source: UsageSource::Upstream,
        }
    }

    pub fn from_tokenizer(prompt: u64, completion: u64) -> Self {
        Self {
            prompt,
            completion,
            source: UsageSource::Tokenizer,
            ..Self::NOTHING
        }
    }

    pub fn total(&self) -> u64 {
        self.prompt + self.completion
    }

    /// At least `estimate` tokens in all: the rest of it counts as output.
    pub fn at_least(self, estimate: u64) -> Self {
        if self.total() >= estimate {
            return self;
        }
        Self {
            completion: estimate - self.prompt,
            source: UsageSource::Estimate,
            ..self
        }
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
    /// Whether a pool lists `model` or it has a price.
    pub model_known: bool,
    pub backend: Option<String>,
    /// The `model` of the upstream's answer.
    pub served_model: Option<&'a str>,
    pub status: u16,
    pub stream: bool,
    pub counted: Counted,
    pub prices: &'a PriceTable,
    pub error_code: Option<&'static str>,
}

impl UsageRecord {
    /// The record of a finished request, priced with the request's price table.
    pub fn finished(f: Finished<'_>) -> Self {
        let counted = f.counted;
        let cost = f
            .model
            .as_deref()
            .map_or(0, |m| f.prices.cost_nanousd(m, &counted));
        let served_model = f
            .served_model
            .filter(|s| Some(*s) != f.model.as_deref())
            .map(bounded_text);
        let (model, model_raw) = match f.model {
            Some(m) if !f.model_known => (Some(OTHER_MODEL.to_string()), Some(bounded_text(&m))),
            m => (m, None),
        };
        UsageRecord {
            request_id: f.request_id,
            created_at: crate::store::now_ms(),
            key_id: f.key.map(|k| k.id),
            user_id: f.key.and_then(|k| k.user_id),
            endpoint: f.endpoint.unwrap_or("unknown").into(),
            model,
            model_raw,
            backend: f.backend,
            status: f.status,
            stream: f.stream,
            prompt_tokens: counted.prompt,
            completion_tokens: counted.completion,
            cached_tokens: counted.cached,
            cache_write_tokens: counted.cache_write,
            reasoning_tokens: counted.reasoning,
            served_model,
            usage_source: counted.source,
            cost_nanousd: cost,
            latency_ms: f.started.elapsed().as_millis() as u64,
            ttfb_ms: f
                .first_byte
                .map(|t| t.duration_since(f.started).as_millis() as u64),
            error_code: f.error_code.map(str::to_string),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_model_names_are_kept_bounded_and_printable() {
        let long = format!("a\u{0}b\u{7f}\n{}", "x".repeat(5000));
        let kept = bounded_text(&long);
        assert_eq!(kept.chars().count(), MODEL_RAW_MAX);
        assert!(kept.starts_with("abx"));
        assert!(!kept.chars().any(char::is_control));
    }
}
