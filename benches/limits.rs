//! Rate limits on the hot path: the token bucket itself and `Limiter::admit`,
//! which every proxied request passes right after the key check (and whose
//! `Permit` it holds until the answer is done).
//!
//! `cargo bench --bench limits` (see benches/README.md).

use std::hint::black_box;
use std::time::{Duration, Instant};

use bluesminds::config::LimitSettings;
use bluesminds::limits::{Ask, Limiter, TokenBucket};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// Limits far above what a benchmark can spend in a minute: never denied, so
/// every iteration takes the full admit-and-debit path.
const HUGE: LimitSettings = LimitSettings {
    rpm: Some(1_000_000_000_000),
    tpm: Some(1_000_000_000_000),
    concurrency: Some(1_000_000),
};

fn bench_bucket(c: &mut Criterion) {
    let mut bucket = TokenBucket::per_minute(1_000_000_000_000, Instant::now());
    c.bench_function("token_bucket/has_take", |b| {
        b.iter(|| {
            let now = Instant::now();
            if bucket.has(black_box(1), now) {
                bucket.take(1);
            }
        })
    });
}

fn bench_admit(c: &mut Criterion) {
    let mut g = c.benchmark_group("limiter");
    g.throughput(Throughput::Elements(1));
    let limiter = Limiter::new();
    // A key without limits (the default): still one cache lookup and a permit.
    let none = Ask {
        key_id: 1,
        key: LimitSettings::default(),
        user: None,
        tokens: 300,
    };
    g.bench_function("admit_no_limits", |b| {
        b.iter(|| {
            let permit = limiter.admit(black_box(&none)).expect("admitted");
            permit.reconcile(black_box(280));
        })
    });
    // rpm + tpm + concurrency on the key; the estimate is settled afterwards.
    let key = Ask {
        key_id: 2,
        key: HUGE,
        user: None,
        tokens: 300,
    };
    g.bench_function("admit_key_limits", |b| {
        b.iter(|| {
            let permit = limiter.admit(black_box(&key)).expect("admitted");
            permit.reconcile(black_box(280));
        })
    });
    // The same on the key and on its user (a plan): two subjects, two locks.
    let both = Ask {
        key_id: 3,
        key: HUGE,
        user: Some((1, HUGE)),
        tokens: 300,
    };
    g.bench_function("admit_key_and_user_limits", |b| {
        b.iter(|| {
            let permit = limiter.admit(black_box(&both)).expect("admitted");
            permit.reconcile(black_box(280));
        })
    });
    // Two threads admitting on the same key (2 cores here): lock contention.
    g.bench_function("admit_key_limits_2_threads_same_key", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..2 {
                    s.spawn(|| {
                        for _ in 0..iters.div_ceil(2) {
                            let permit = limiter.admit(&key).expect("admitted");
                            permit.reconcile(280);
                        }
                    });
                }
            });
            // Wall time per request of the pair: throughput of both threads.
            start.elapsed().max(Duration::from_nanos(1))
        })
    });
    g.finish();
}

criterion_group!(benches, bench_bucket, bench_admit);
criterion_main!(benches);
