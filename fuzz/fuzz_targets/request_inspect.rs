//! `proxy::request::inspect` on any body: never panics, and a body it rewrote
//! (to ask for usage) reads back as the same request, asking for usage; a body
//! with routing fields, once they are stripped, is the same request without
//! them.
#![no_main]

use bluesminds::proxy::request::{inspect, strip_routing_fields, Endpoint};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let endpoint = match pick % 3 {
        0 => Endpoint::ChatCompletions,
        1 => Endpoint::Completions,
        _ => Endpoint::Embeddings,
    };
    let original = bytes::Bytes::copy_from_slice(body);
    let Ok(seen) = inspect(&endpoint, original.clone()) else {
        return;
    };
    if seen.body != original {
        // The rewritten body is JSON the gateway itself reads back to the same
        // request, now asking for usage (no second rewrite). Not re-parsed as a
        // `serde_json::Value`: that refuses numbers outside f64 (`1e400`),
        // which are valid JSON the gateway rightly passes on.
        let again = inspect(&endpoint, seen.body.clone()).expect("a rewritten body is JSON");
        assert_eq!(again.model, seen.model);
        assert_eq!(again.stream, seen.stream);
        assert!(!again.injected_usage, "usage asked for twice");
        assert_eq!(again.body, seen.body);
    }
    if seen.routing {
        // Refused (400) when the rest of the body cannot be rewritten.
        let Ok(stripped) = strip_routing_fields(&seen.body) else {
            return;
        };
        let after = inspect(&endpoint, stripped).expect("a stripped body is JSON");
        assert!(!after.routing, "a routing field survived");
        assert_eq!(after.model, seen.model);
        assert_eq!(after.stream, seen.stream);
        assert_eq!(after.max_tokens, seen.max_tokens);
    }
});
