//! `proxy::request::inspect` on any body: never panics, and a body it rewrote
//! (to ask for usage) is still JSON with the same model and stream flag.
#![no_main]

use bluesminds::proxy::request::{inspect, Endpoint};
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
        let v: serde_json::Value =
            serde_json::from_slice(&seen.body).expect("a rewritten body is JSON");
        assert_eq!(v["model"].as_str(), Some(seen.model.as_str()));
        assert_eq!(v["stream"].as_bool().unwrap_or(false), seen.stream);
        assert_eq!(
            v["stream_options"]["include_usage"],
            serde_json::json!(true)
        );
    }
});
