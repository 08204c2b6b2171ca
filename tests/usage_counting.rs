//! What a request is counted and billed for when the upstream does not say:
//! the gateway's own tokenizer for answers without usage, streams the upstream
//! cuts, and streams the client abandons (read to their end for the
//! upstream's usage, within bounds, else billed the admission estimate). Durability of the records is in `usage_records.rs`.

mod common;

use common::{chat_body, fake, gateway, Backend, SseReader};
use fake_upstream::{Mode, CHUNK_DELAY_HEADER};
use serde_json::Value;

#[tokio::test]
async fn without_upstream_usage_tokens_are_counted_locally() {
    let up = fake().await;
    up.set_mode(Mode::NoUsage);
    let gw = gateway().backend(Backend::new(up.url())).start().await;
    let key = gw.create_key("test", &[]);
    for stream in [false, true] {
        let resp = gw.chat(&key, &chat_body("gpt-4o-mini", stream)).await;
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
    }
    let rows = gw.wait_usage_rows(2).await;
    for r in rows {
        assert_eq!(r.usage_source, "tokenizer");
        // "Hello from the fake upstream" is 5 tokens in o200k; the prompt is
        // 3 + (3 + "Say hello to the tests" = 5) = 11.
        assert_eq!((r.prompt_tokens, r.completion_tokens), (11, 5), "{r:?}");
    }
}

#[tokio::test]
async fn a_stream_cut_by_the_upstream_is_recorded_with_its_partial_tokens() {
    let up = fake().await;
    up.set_mode(Mode::DieMidStream { after_chunks: 2 });
    let gw = gateway().backend(Backend::new(up.url())).start().await;
    let key = gw.create_key("test", &[]);
    let resp = gw.chat(&key, &chat_body("gpt-4o-mini", true)).await;
    assert_eq!(resp.status(), 200);
    let events = SseReader::new(resp).collect().await;
    assert_ne!(events.last().map(String::as_str), Some("[DONE]"));
    let rows = gw.wait_usage_rows(1).await;
    assert_eq!(rows[0].usage_source, "tokenizer");
    // Two chunks arrived ("Hello ", "from "): counted with the same tokenizer.
    let expected = bluesminds::usage::tokenizer::count_text("gpt-4o-mini", "Hello from ") as i64;
    assert_eq!(rows[0].completion_tokens, expected, "{:?}", rows[0]);
    assert_eq!(rows[0].error_code.as_deref(), Some("upstream_error"));
}

/// Reads a stream until "Hello from " has arrived, then drops the connection.
async fn leave_after_two_chunks(gw: &common::Gateway, key: &str, body: &Value, delay_ms: &str) {
    let resp = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(key)
        .header(CHUNK_DELAY_HEADER, delay_ms)
        .json(body)
        .send()
        .await
        .unwrap();
    let mut sse = SseReader::new(resp);
    let mut received = String::new();
    while let Some(event) = sse.next().await {
        let chunk: Value = serde_json::from_str(&event).unwrap();
        received.push_str(
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or(""),
        );
        if received.len() >= "Hello from ".len() {
            break;
        }
    }
    assert_eq!(received, "Hello from ");
    drop(sse);
}

#[tokio::test]
async fn a_stream_the_client_abandons_is_billed_with_the_upstreams_own_usage() {
    let up = fake().await;
    let gw = gateway().backend(Backend::new(up.url())).start().await;
    let key = gw.create_key("abort", &[]);
    leave_after_two_chunks(&gw, &key, &chat_body("gpt-4o-mini", true), "300").await;

    // The gateway read the rest of the answer without the client, so the
    // upstream generated all of it and its usage chunk arrived.
    let rows = gw.wait_usage_rows(1).await;
    let r = &rows[0];
    assert_eq!(r.error_code.as_deref(), Some("client_closed_request"));
    assert_eq!(r.usage_source, "upstream", "{r:?}");
    // The fake counts the prompt its own way (8); the tokenizer would say 11.
    assert_eq!((r.prompt_tokens, r.completion_tokens), (8, 5), "{r:?}");
    assert!(r.cost_nanousd > 0);
    // And the upstream saw the whole answer go out, not a reset mid-stream.
    assert_eq!(up.completed_streams(), 1);
}

#[tokio::test]
async fn an_abandoned_stream_whose_usage_does_not_come_in_time_is_billed_the_estimate() {
    let up = fake().await;
    let gw = gateway()
        .backend(Backend::new(up.url()))
        .usage("abandoned_read_secs: 1")
        .start()
        .await;
    let key = gw.create_key("abort", &[]);
    let mut body = chat_body("gpt-4o-mini", true);
    body["max_tokens"] = 1000.into();
    // 700 ms between chunks: the answer's end is more than a second after the
    // client left, past the bound.
    leave_after_two_chunks(&gw, &key, &body, "700").await;

    let rows = gw.wait_usage_rows(1).await;
    let r = &rows[0];
    assert_eq!(r.error_code.as_deref(), Some("client_closed_request"));
    assert_eq!(r.usage_source, "estimate", "{r:?}");
    assert_eq!(r.prompt_tokens, 11, "{r:?}");
    // Admission's estimate: a quarter of the body's bytes (the gateway adds
    // `stream_options` to the client's, at most 64 bytes) plus max_tokens.
    let sent = serde_json::to_vec(&body).unwrap().len();
    let billed = (r.prompt_tokens + r.completion_tokens) as usize;
    assert!(
        (sent.div_ceil(4) + 1000..=(sent + 64).div_ceil(4) + 1000).contains(&billed),
        "{r:?}, client body {sent} bytes"
    );
}

#[tokio::test]
async fn with_abandoned_reads_off_a_stream_is_billed_for_what_was_generated() {
    let up = fake().await;
    let gw = gateway()
        .backend(Backend::new(up.url()))
        .usage("abandoned_read_secs: 0")
        .start()
        .await;
    let key = gw.create_key("abort", &[]);
    leave_after_two_chunks(&gw, &key, &chat_body("gpt-4o-mini", true), "300").await;

    let rows = gw.wait_usage_rows(1).await;
    let r = &rows[0];
    assert_eq!(r.error_code.as_deref(), Some("client_closed_request"));
    assert_eq!(r.usage_source, "tokenizer", "the usage chunk never came");
    assert_eq!(r.prompt_tokens, 11);
    // At least what the client got; at most what the upstream sent before the
    // gateway noticed the client was gone (never the whole 5-token reply).
    let got = bluesminds::usage::tokenizer::count_text("gpt-4o-mini", "Hello from ") as i64;
    assert!(
        r.completion_tokens >= got && r.completion_tokens < 5,
        "{r:?}"
    );
}
