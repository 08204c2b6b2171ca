//! What a request is counted and billed for when the upstream does not say:
//! the gateway's own tokenizer for answers without usage, streams the upstream
//! cuts, and streams the client abandons (billed for what was generated, not
//! for the whole answer). Durability of the records is in `usage_records.rs`.

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

#[tokio::test]
async fn a_stream_the_client_abandons_is_billed_for_what_was_generated() {
    let up = fake().await;
    let gw = gateway().backend(Backend::new(up.url())).start().await;
    let key = gw.create_key("abort", &[]);
    let resp = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .header(CHUNK_DELAY_HEADER, "300")
        .json(&chat_body("gpt-4o-mini", true))
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

    let rows = gw.wait_usage_rows(1).await;
    let r = &rows[0];
    assert_eq!(r.error_code.as_deref(), Some("client_closed_request"));
    assert_eq!(r.usage_source, "tokenizer", "the usage chunk never came");
    assert_eq!(r.prompt_tokens, 11);
    // At least what the client got; at most what the upstream sent before the
    // gateway noticed the client was gone (never the whole 5-token reply).
    let got = bluesminds::usage::tokenizer::count_text("gpt-4o-mini", &received) as i64;
    assert!(
        r.completion_tokens >= got && r.completion_tokens < 5,
        "{r:?}"
    );
    assert!(r.cost_nanousd > 0);
}
