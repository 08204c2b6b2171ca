//! A Creem webhook body as the side app reads it: the signature check, the
//! event and what it means for billing. Never panics.
#![no_main]

use bluesminds::billing::creem::{ref_id, rfc3339_ms, verify_signature, WebhookEvent};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (sig, body) = data.split_at(data.len().min(64));
    let _ = verify_signature(b"whsec_fuzz", body, &String::from_utf8_lossy(sig));
    if let Ok(text) = std::str::from_utf8(body) {
        let _ = rfc3339_ms(text);
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        let _ = ref_id(&v);
    }
    if let Ok(event) = serde_json::from_slice::<WebhookEvent>(body) {
        let _ = event.meaning(1_767_225_600_000);
    }
});
