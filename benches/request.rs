//! Request inspection on the hot path: routing by method and path, and the one
//! borrowed JSON parse of the body that finds `model` and `stream` (and splices
//! `stream_options.include_usage` into streaming requests).
//!
//! `cargo bench --bench request` (see benches/README.md).

use std::hint::black_box;

use bluesminds::proxy::request::{inspect, Endpoint};
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// A typical chat request as the OpenAI SDKs send it (a short conversation).
fn typical_chat(stream: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"messages":[{{"role":"system","content":"You are a helpful assistant. Answer briefly and cite sources when you can."}},{{"role":"user","content":"What is the capital of Australia?"}},{{"role":"assistant","content":"The capital of Australia is Canberra."}},{{"role":"user","content":"And how many people live there, roughly? Give me a one-line answer."}}],"model":"gpt-4o-mini","max_tokens":256,"temperature":0.7,"top_p":1,"user":"user-1234"{stream}}}"#
    ))
}

/// About 100 KiB: a long document pasted into the prompt (escapes included, as
/// real text has them).
fn long_chat(stream: &str) -> Bytes {
    let paragraph = r#"The proxy reads the body once to learn the model, then forwards it byte for byte. \"Quoted\" words, tabs\tand new lines\n appear in real documents, so the parser must unescape them. "#;
    let mut doc = String::with_capacity(110 * 1024);
    while doc.len() < 100 * 1024 {
        doc.push_str(paragraph);
    }
    Bytes::from(format!(
        r#"{{"model":"gpt-4o-mini","messages":[{{"role":"system","content":"Summarize the document."}},{{"role":"user","content":"{doc}"}}],"temperature":0.2{stream}}}"#
    ))
}

fn bench_inspect(c: &mut Criterion) {
    let mut g = c.benchmark_group("inspect");
    let cases = [
        // Non-streaming: parse only, the body goes upstream as it came.
        ("chat_typical", typical_chat("")),
        // Streaming without stream_options: parse + splice (one copy of the body).
        ("chat_typical_stream", typical_chat(r#","stream":true"#)),
        // Streaming that asks for usage itself: parse only.
        (
            "chat_typical_stream_with_usage",
            typical_chat(r#","stream":true,"stream_options":{"include_usage":true}"#),
        ),
        // stream_options present without include_usage: the rare full re-serialization.
        (
            "chat_typical_stream_options_rewrite",
            typical_chat(r#","stream":true,"stream_options":{}"#),
        ),
        ("chat_100k", long_chat("")),
        ("chat_100k_stream", long_chat(r#","stream":true"#)),
    ];
    for (name, body) in cases {
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let i = inspect(&Endpoint::ChatCompletions, black_box(body.clone()))
                    .expect("valid body");
                black_box(i)
            })
        });
    }
    g.finish();
}

fn bench_route(c: &mut Criterion) {
    c.bench_function("route/chat_completions", |b| {
        b.iter(|| Endpoint::route(black_box("POST"), black_box("/v1/chat/completions")))
    });
}

criterion_group!(benches, bench_inspect, bench_route);
criterion_main!(benches);
