//! Prices per model, kept in nano-USD per token so costs add up exactly as integers.

use std::collections::HashMap;

use crate::config::Price;
use crate::usage::Counted;

/// The price entry that applies to every model without one of its own.
const DEFAULT: &str = "*";

#[derive(Debug, Clone, Copy, PartialEq)]
struct NanoPrice {
    input: f64,
    output: f64,
    cached: f64,
    cache_write: f64,
}

#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    prices: foldhash::HashMap<String, NanoPrice>,
}

impl PriceTable {
    pub fn new(prices: &HashMap<String, Price>) -> Self {
        Self {
            prices: prices
                .iter()
                .map(|(model, p)| {
                    // USD per 1M tokens -> nano-USD per token: * 1e9 / 1e6.
                    let nano = NanoPrice {
                        input: p.input_per_1m * 1_000.0,
                        output: p.output_per_1m * 1_000.0,
                        cached: p.input_cached_per_1m.unwrap_or(p.input_per_1m) * 1_000.0,
                        cache_write: p.cache_write_per_1m.unwrap_or(p.input_per_1m) * 1_000.0,
                    };
                    (model.clone(), nano)
                })
                .collect(),
        }
    }

    /// Whether the model has a price of its own (not only the `*` default).
    pub fn has(&self, model: &str) -> bool {
        self.prices.contains_key(model)
    }

    /// Whether a request for the model is priced at all: its own price or the
    /// default listed as `*`. Plans limited in credits take only these, or a
    /// `*` pool would serve them for free.
    pub fn is_priced(&self, model: &str) -> bool {
        self.price(model).is_some()
    }

    fn price(&self, model: &str) -> Option<&NanoPrice> {
        self.prices.get(model).or_else(|| self.prices.get(DEFAULT))
    }

    /// Cost in nano-USD; a model without a price (nor a `*` default) costs 0
    /// and is still recorded.
    /// Cached and cache-write tokens, parts of the prompt, at their own prices.
    pub fn cost_nanousd(&self, model: &str, counted: &Counted) -> i64 {
        self.price(model).map_or(0, |p| {
            let special = counted.cached.saturating_add(counted.cache_write);
            let plain = counted.prompt.saturating_sub(special);
            (plain as f64 * p.input
                + counted.cached as f64 * p.cached
                + counted.cache_write as f64 * p.cache_write
                + counted.completion as f64 * p.output)
                .round() as i64
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(prompt: u64, completion: u64) -> Counted {
        Counted::from_tokenizer(prompt, completion)
    }

    fn price(input: f64, output: f64) -> Price {
        Price {
            input_per_1m: input,
            output_per_1m: output,
            input_cached_per_1m: None,
            cache_write_per_1m: None,
        }
    }

    #[test]
    fn cached_and_cache_write_tokens_have_their_own_prices() {
        let mut m = HashMap::new();
        m.insert(
            "claude".to_string(),
            Price {
                input_cached_per_1m: Some(0.3),
                cache_write_per_1m: Some(3.75),
                ..price(3.0, 15.0)
            },
        );
        m.insert("plain".to_string(), price(3.0, 15.0));
        let t = PriceTable::new(&m);
        let counted = Counted {
            cached: 600,
            cache_write: 300,
            reasoning: 50,
            ..tokens(1000, 100)
        };
        // 100 plain at 3000, 600 cached at 300, 300 written at 3750, 100 out at 15000.
        assert_eq!(
            t.cost_nanousd("claude", &counted),
            100 * 3000 + 600 * 300 + 300 * 3750 + 100 * 15000
        );
        // Without cache prices every prompt token costs the input price.
        assert_eq!(t.cost_nanousd("plain", &counted), 1000 * 3000 + 100 * 15000);
    }

    #[test]
    fn prices_per_million_tokens() {
        let mut m = HashMap::new();
        m.insert("gpt-4o-mini".to_string(), price(0.15, 0.6));
        let t = PriceTable::new(&m);
        // 1M prompt tokens cost $0.15 = 150_000_000 nano-USD.
        assert_eq!(
            t.cost_nanousd("gpt-4o-mini", &tokens(1_000_000, 0)),
            150_000_000
        );
        assert_eq!(
            t.cost_nanousd("gpt-4o-mini", &tokens(10, 20)),
            10 * 150 + 20 * 600
        );
        assert_eq!(t.cost_nanousd("unknown", &tokens(10, 20)), 0);
        assert!(!t.is_priced("unknown"));

        m.insert("*".to_string(), price(1.0, 2.0));
        let t = PriceTable::new(&m);
        assert!(t.is_priced("unknown") && !t.has("unknown"));
        assert_eq!(
            t.cost_nanousd("unknown", &tokens(10, 20)),
            10 * 1000 + 20 * 2000
        );
        assert_eq!(
            t.cost_nanousd("gpt-4o-mini", &tokens(10, 20)),
            10 * 150 + 20 * 600
        );
    }
}
