//! Prices per model, kept in nano-USD per token so costs add up exactly as integers.

use std::collections::HashMap;

use crate::config::Price;

/// The price entry that applies to every model without one of its own.
const DEFAULT: &str = "*";

#[derive(Debug, Clone, Copy, PartialEq)]
struct NanoPrice {
    input: f64,
    output: f64,
}

#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    prices: HashMap<String, NanoPrice>,
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
    pub fn cost_nanousd(&self, model: &str, prompt_tokens: u64, completion_tokens: u64) -> i64 {
        self.price(model).map_or(0, |p| {
            (prompt_tokens as f64 * p.input + completion_tokens as f64 * p.output).round() as i64
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_per_million_tokens() {
        let mut m = HashMap::new();
        m.insert(
            "gpt-4o-mini".to_string(),
            Price {
                input_per_1m: 0.15,
                output_per_1m: 0.6,
            },
        );
        let t = PriceTable::new(&m);
        // 1M prompt tokens cost $0.15 = 150_000_000 nano-USD.
        assert_eq!(t.cost_nanousd("gpt-4o-mini", 1_000_000, 0), 150_000_000);
        assert_eq!(t.cost_nanousd("gpt-4o-mini", 10, 20), 10 * 150 + 20 * 600);
        assert_eq!(t.cost_nanousd("unknown", 10, 20), 0);
        assert!(!t.is_priced("unknown"));

        m.insert(
            "*".to_string(),
            Price {
                input_per_1m: 1.0,
                output_per_1m: 2.0,
            },
        );
        let t = PriceTable::new(&m);
        assert!(t.is_priced("unknown") && !t.has("unknown"));
        assert_eq!(t.cost_nanousd("unknown", 10, 20), 10 * 1000 + 20 * 2000);
        assert_eq!(t.cost_nanousd("gpt-4o-mini", 10, 20), 10 * 150 + 20 * 600);
    }
}
