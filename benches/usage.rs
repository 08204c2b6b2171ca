//! Per-response usage work on the hot path: the SSE/JSON usage parser
//! (`ResponseCounter`, run on every body chunk) and handing the usage record to
//! the ledger (`Ledger::append`, once per request: a copy into the mapped
//! segment file plus the in-memory copy the writer takes).
//!
//! And, off the hot path, the writer's batches into SQLite (`Store::insert_usage`)
//! by batch size and by how many keys the rows spread over.
//!
//! `cargo bench --bench usage` (see benches/README.md).

use std::hint::black_box;
use std::time::{Duration, Instant};

use bluesminds::config::UsageConfig;
use bluesminds::metrics::Metrics;
use bluesminds::store::Store;
use bluesminds::usage::{Ledger, ResponseCounter, UsageRecord, UsageSource};
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

/// Content events per benchmarked stream (plus role, finish, usage and `[DONE]`).
const CONTENT_EVENTS: usize = 100;

const WORDS: &[&str] = &[
    " The",
    " gateway",
    " forwards",
    " each",
    " chunk",
    " as",
    " it",
    " arrives",
    ",",
    " and",
    " counts",
    " tokens",
    " on",
    " the",
    " way",
    ".",
    " Don't",
    " \\\"quote\\\"",
    " me",
    "\\n",
];

/// One `chat.completion.chunk` event as OpenAI sends it. `usage_null` is true
/// when the request had `stream_options.include_usage` (OpenAI then puts
/// `"usage":null` on every chunk but the last).
fn chunk_event(choice: &str, usage_null: bool) -> Bytes {
    let usage = if usage_null { ",\"usage\":null" } else { "" };
    Bytes::from(format!(
        "data: {{\"id\":\"chatcmpl-AX7bq2Kf9JtY3nLw0pQe5RsT1uVz\",\"object\":\"chat.completion.chunk\",\"created\":1732550000,\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_0ba0d124f1\",\"choices\":[{choice}]{usage}}}\n\n"
    ))
}

/// A realistic stream, one event per body chunk (what upstreams send): role,
/// content, finish, optionally the usage-only chunk, then `[DONE]`.
fn sse_stream(with_usage: bool) -> Vec<Bytes> {
    let mut events = vec![chunk_event(
        r#"{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}"#,
        with_usage,
    )];
    for i in 0..CONTENT_EVENTS {
        let choice = format!(
            r#"{{"index":0,"delta":{{"content":"{}"}},"logprobs":null,"finish_reason":null}}"#,
            WORDS[i % WORDS.len()]
        );
        events.push(chunk_event(&choice, with_usage));
    }
    events.push(chunk_event(
        r#"{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}"#,
        with_usage,
    ));
    if with_usage {
        events.push(Bytes::from(
            "data: {\"id\":\"chatcmpl-AX7bq2Kf9JtY3nLw0pQe5RsT1uVz\",\"object\":\"chat.completion.chunk\",\"created\":1732550000,\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_0ba0d124f1\",\"choices\":[],\"usage\":{\"prompt_tokens\":27,\"completion_tokens\":100,\"total_tokens\":127,\"prompt_tokens_details\":{\"cached_tokens\":0,\"audio_tokens\":0},\"completion_tokens_details\":{\"reasoning_tokens\":0,\"audio_tokens\":0,\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}}}\n\n",
        ));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    events
}

/// A non-streaming chat completion body as OpenAI sends it.
fn json_body() -> Bytes {
    Bytes::from(
        r#"{"id":"chatcmpl-AX7bq2Kf9JtY3nLw0pQe5RsT1uVz","object":"chat.completion","created":1732550000,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! The gateway forwards each chunk as it arrives, and counts tokens on the way. Is there anything else I can help you with today?","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":27,"completion_tokens":29,"total_tokens":56,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"service_tier":"default","system_fingerprint":"fp_0ba0d124f1"}"#,
    )
}

/// Feeds every chunk as Pingora's `response_body_filter` would.
fn feed(counter: &mut ResponseCounter, chunks: &[Bytes]) -> usize {
    let mut out = 0;
    for (i, chunk) in chunks.iter().enumerate() {
        let mut body = Some(chunk.clone());
        counter.on_body(&mut body, i + 1 == chunks.len());
        out += body.map_or(0, |b| b.len());
    }
    out
}

fn response_counter(c: &mut Criterion) {
    let mut g = c.benchmark_group("response_counter");

    // The client asked for usage itself (or not at all): bytes pass untouched,
    // every event is still parsed.
    let passthrough = sse_stream(true);
    g.throughput(Throughput::Elements(passthrough.len() as u64));
    g.bench_function("sse_passthrough_per_stream", |b| {
        b.iter_batched_ref(
            || ResponseCounter::new(Some("text/event-stream; charset=utf-8"), false),
            |counter| {
                let out = feed(counter, &passthrough);
                black_box((out, counter.usage()))
            },
            BatchSize::SmallInput,
        )
    });

    // The gateway injected `stream_options.include_usage`: whole events are
    // re-assembled and the usage-only chunk is removed.
    g.bench_function("sse_strip_usage_per_stream", |b| {
        b.iter_batched_ref(
            || ResponseCounter::new(Some("text/event-stream"), true),
            |counter| {
                let out = feed(counter, &passthrough);
                black_box((out, counter.usage()))
            },
            BatchSize::SmallInput,
        )
    });

    // An upstream that sends no `usage` at all (the tokenizer fallback's input
    // is gathered here; the tokenizer itself runs off the proxy threads).
    let no_usage = sse_stream(false);
    g.throughput(Throughput::Elements(no_usage.len() as u64));
    g.bench_function("sse_no_usage_per_stream", |b| {
        b.iter_batched_ref(
            || ResponseCounter::new(Some("text/event-stream"), false),
            |counter| {
                let out = feed(counter, &no_usage);
                black_box((out, counter.reply_text().len()))
            },
            BatchSize::SmallInput,
        )
    });

    // One content event on a counter that is already mid-stream.
    let one = passthrough[1].clone();
    g.throughput(Throughput::Elements(1));
    g.bench_function("sse_one_content_event", |b| {
        b.iter_batched_ref(
            || ResponseCounter::new(Some("text/event-stream"), false),
            |counter| {
                let mut body = Some(one.clone());
                counter.on_body(&mut body, false);
                black_box(body)
            },
            BatchSize::SmallInput,
        )
    });

    // Non-streaming chat answer: buffered, `usage` read from the tail.
    let json = json_body();
    g.throughput(Throughput::Bytes(json.len() as u64));
    g.bench_function("json_chat_completion", |b| {
        b.iter_batched_ref(
            || ResponseCounter::new(Some("application/json"), false),
            |counter| {
                feed(counter, std::slice::from_ref(&json));
                black_box(counter.usage())
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn record() -> UsageRecord {
    UsageRecord {
        request_id: "req_0193655d2f6a7c3e9b1f2a4c5d6e7f80".into(),
        created_at: 1_732_550_000_000,
        key_id: Some(1),
        user_id: None,
        endpoint: "chat.completions".into(),
        model: Some("gpt-4o-mini".into()),
        model_raw: None,
        backend: Some("http://127.0.0.1:9000".into()),
        status: 200,
        stream: true,
        prompt_tokens: 27,
        completion_tokens: 100,
        cached_tokens: 0,
        cache_write_tokens: 0,
        reasoning_tokens: 0,
        served_model: None,
        usage_source: UsageSource::Upstream,
        cost_nanousd: 64_050,
        latency_ms: 1_203,
        ttfb_ms: Some(212),
        error_code: None,
    }
}

fn usage_ledger(c: &mut Criterion) {
    let mut g = c.benchmark_group("usage_ledger");
    g.throughput(Throughput::Elements(1));
    let metrics = Metrics::new();
    let template = record();
    // Only `append` is timed: records are built before and taken (as the
    // writer does, then committed) after each timed batch.
    g.bench_function("append", |b| {
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().expect("temp dir");
            let cfg = UsageConfig {
                ledger_dir: dir.path().display().to_string(),
                ..UsageConfig::default()
            };
            let ledger = Ledger::open(&cfg, metrics.clone()).expect("ledger");
            let mut drained = Vec::with_capacity(4096);
            let mut timed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(4096);
                let batch: Vec<UsageRecord> = (0..n).map(|_| template.clone()).collect();
                let start = Instant::now();
                for r in batch {
                    ledger.append(r);
                }
                timed += start.elapsed();
                while let Some(taken) = ledger.take(usize::MAX, &mut drained) {
                    ledger.commit(taken.end);
                }
                drained.clear();
                metrics.usage_queue_depth.set(0);
                left -= n;
            }
            timed
        })
    });
    g.finish();
}

/// Rows already in the table when a batch bench starts: the indexes' shape
/// (how many leaf pages each key's rows span) is what costs, not the row count.
const PREFILL_ROWS: usize = 200_000;

/// A record of one of `keys` keys (each of its own user), the `n`-th of a run:
/// request ids and times rise as a gateway's do.
fn spread_record(template: &UsageRecord, n: u64, keys: u64) -> UsageRecord {
    let key = (n.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 17) % keys + 1;
    UsageRecord {
        request_id: format!("0193655d-{n:012x}-7abc-8def"),
        created_at: template.created_at + n as i64,
        key_id: Some(key as i64),
        user_id: Some(key as i64),
        ..template.clone()
    }
}

/// `Store::insert_usage` per row, in fresh batches of `batch` rows spread over
/// `keys` keys: each key's rows end in a leaf page of their own in the
/// `(key_id, id)` and `(user_id, id)` indexes, so with many keys a batch
/// touches (reads, dirties and writes to the WAL) up to two pages per row,
/// and a larger batch shares each page among more of its rows.
fn usage_batches(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut g = c.benchmark_group("usage_batch");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    let template = record();
    for keys in [1u64, 1_000] {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}/bench.db", dir.path().display());
        let store = rt.block_on(Store::connect(&url, 2)).expect("store");
        let mut n = 0u64;
        let mut rows = Vec::with_capacity(4096);
        while (n as usize) < PREFILL_ROWS {
            rows.extend((0..4096).map(|i| spread_record(&template, n + i, keys)));
            n += 4096;
            rt.block_on(store.insert_usage(&mut rows, true))
                .expect("prefill");
            rows.clear();
        }
        for batch in [512usize, 2048, 4096] {
            g.bench_function(format!("{keys}_keys/{batch}_rows"), |b| {
                b.iter_custom(|iters| {
                    let mut timed = Duration::ZERO;
                    let mut left = iters;
                    while left > 0 {
                        let take = left.min(batch as u64);
                        rows.extend((0..take).map(|i| spread_record(&template, n + i, keys)));
                        n += take;
                        let start = Instant::now();
                        rt.block_on(store.insert_usage(&mut rows, true))
                            .expect("batch");
                        timed += start.elapsed();
                        rows.clear();
                        left -= take;
                    }
                    timed
                })
            });
        }
        drop(store);
    }
    g.finish();
}

criterion_group!(benches, response_counter, usage_ledger, usage_batches);
criterion_main!(benches);
