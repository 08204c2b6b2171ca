//! Key checks on the hot path: the SHA-256 of the bearer token and the moka
//! cache lookup behind `KeyCache::authenticate` (a hit never touches the
//! database; misses are not benchmarked, they cost a SQLite query).
//!
//! `cargo bench --bench auth` (see benches/README.md). The rate-limit check
//! that follows `authenticate` on every request is in `benches/limits.rs`.

use std::hint::black_box;

use bluesminds::auth::{generate_key, hash_key, KeyCache};
use bluesminds::store::{NewKey, Store};
use criterion::{criterion_group, criterion_main, Criterion};

fn bench_hash(c: &mut Criterion) {
    let secret = generate_key().secret;
    c.bench_function("auth/hash_key", |b| b.iter(|| hash_key(black_box(&secret))));
}

fn bench_cache(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    // The gateway runs database work on a separate 2-thread control runtime.
    let control = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("control runtime");
    // The proxy side: one Pingora-like worker runtime.
    let proxy = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("proxy runtime");

    let url = format!("sqlite://{}/bench.db", dir.path().display());
    let store = control
        .block_on(Store::connect(&url, 1))
        .expect("sqlite store");
    let key = generate_key();
    control
        .block_on(store.create_key(NewKey {
            name: "bench",
            key_hash: &key.hash,
            key_prefix: &key.prefix,
            key_last4: &key.last4,
            user_id: None,
            models: None,
            expires_at: None,
            rpm: None,
            tpm: None,
            concurrency: None,
        }))
        .expect("create key");
    let cache = KeyCache::new(store, control.handle().clone());
    // Warm: the first lookup is the miss that fills the cache.
    proxy
        .block_on(cache.authenticate(&key.secret, None))
        .expect("valid key");
    let unknown = generate_key().secret;
    let _ = proxy.block_on(cache.authenticate(&unknown, None));

    let mut g = c.benchmark_group("key_cache");
    g.bench_function("authenticate_hit", |b| {
        b.to_async(&proxy).iter(|| async {
            black_box(
                cache
                    .authenticate(black_box(&key.secret), None)
                    .await
                    .is_ok(),
            )
        })
    });
    // A well-formed but unknown key: answered from the negative cache.
    g.bench_function("authenticate_unknown_cached", |b| {
        b.to_async(&proxy).iter(|| async {
            black_box(cache.authenticate(black_box(&unknown), None).await.is_err())
        })
    });
    g.finish();
}

criterion_group!(benches, bench_hash, bench_cache);
criterion_main!(benches);
