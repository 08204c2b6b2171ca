//! Prometheus metrics shared by the proxy and the side app (served on `/metrics`).

use std::sync::{Arc, OnceLock, RwLock};

use prometheus::core::Collector;
use prometheus::{
    Counter, CounterVec, Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// By model, backend and status.
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    pub ttfb: HistogramVec,
    pub tokens: IntCounterVec,
    pub cost_usd: CounterVec,
    /// Refusals by limit: requests, tokens, concurrency, quota.
    pub rate_limited: IntCounterVec,
    /// The per-request series above, by model label, resolved once.
    series: Arc<RwLock<foldhash::HashMap<Box<str>, Arc<ModelSeries>>>>,
    /// 1 when a backend is in rotation, by pool and backend.
    pub backend_up: IntGaugeVec,
    /// Addresses a backend's host name resolves to now (0: it does not), by pool and backend.
    pub backend_addresses: IntGaugeVec,
    pub usage_queue_depth: IntGauge,
    pub usage_shed: IntCounter,
    /// Records the writer read back from the ledger's segments (after the
    /// in-memory copy overflowed, or left by an earlier run).
    pub usage_replayed: IntCounter,
    /// Records the database refused, kept in the ledger's quarantine file.
    pub usage_quarantined: IntCounter,
    pub usage_ledger_bytes: IntGauge,
    /// 1 while the ledger is over its budget and new requests are refused.
    pub usage_ledger_full: IntGauge,
    pub usage_written: IntCounter,
    pub usage_write_errors: IntCounter,
    /// Age of the oldest record in the last batch written: how far the database trails.
    pub usage_writer_lag: Gauge,
    /// Rows per usage write transaction: small while idle, thousands when busy.
    pub usage_batch_rows: Histogram,
    pub config_reloads: IntCounterVec,
    /// Reloads of the listeners' certificate (`server.tls`) by result.
    pub tls_reloads: IntCounterVec,
}

const SECONDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

fn register<C: Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric names");
    c
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        let opts = Opts::new;
        let histogram = |name: &str, help: &str| {
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(SECONDS.to_vec()),
                &["model"],
            )
            .expect("metric")
        };
        Self {
            requests: register(
                &r,
                IntCounterVec::new(
                    opts(
                        "bluesminds_requests_total",
                        "Requests by model, backend and status",
                    ),
                    &["model", "backend", "status"],
                )
                .expect("metric"),
            ),
            latency: register(
                &r,
                histogram(
                    "bluesminds_request_duration_seconds",
                    "Time from request to the last response byte",
                ),
            ),
            ttfb: register(
                &r,
                histogram(
                    "bluesminds_time_to_first_byte_seconds",
                    "Time from request to the first response body byte (first token when streaming)",
                ),
            ),
            tokens: register(
                &r,
                IntCounterVec::new(
                    opts("bluesminds_tokens_total", "Tokens by model and direction"),
                    &["model", "direction"],
                )
                .expect("metric"),
            ),
            cost_usd: register(
                &r,
                CounterVec::new(
                    opts("bluesminds_cost_usd_total", "Spend in USD by model, from the price table"),
                    &["model"],
                )
                .expect("metric"),
            ),
            rate_limited: register(
                &r,
                IntCounterVec::new(
                    opts(
                        "bluesminds_rate_limited_total",
                        "Requests refused by a limit (requests, tokens, concurrency, quota)",
                    ),
                    &["limit"],
                )
                .expect("metric"),
            ),
            backend_up: register(
                &r,
                IntGaugeVec::new(
                    opts(
                        "bluesminds_backend_up",
                        "1 when the backend passes its health checks, else 0",
                    ),
                    &["pool", "backend"],
                )
                .expect("metric"),
            ),
            backend_addresses: register(
                &r,
                IntGaugeVec::new(
                    opts(
                        "bluesminds_backend_addresses",
                        "Addresses the backend's host name resolves to now; 0: it does not resolve (or, for a server added through the admin API, only to addresses admin_servers refuses) and the backend is out of rotation",
                    ),
                    &["pool", "backend"],
                )
                .expect("metric"),
            ),
            usage_queue_depth: register(
                &r,
                IntGauge::new(
                    "bluesminds_usage_queue_depth",
                    "Usage records waiting for the batch writer in memory",
                )
                .expect("metric"),
            ),
            usage_shed: register(
                &r,
                IntCounter::new(
                    "bluesminds_usage_shed_total",
                    "Usage records lost (the ledger could not take them: over budget under ledger_full: shed, or the disk failed)",
                )
                .expect("metric"),
            ),
            usage_replayed: register(
                &r,
                IntCounter::new(
                    "bluesminds_usage_replayed_total",
                    "Usage records read back from the ledger's segments (the in-memory queue was full, or an earlier run left them)",
                )
                .expect("metric"),
            ),
            usage_quarantined: register(
                &r,
                IntCounter::new(
                    "bluesminds_usage_quarantined_total",
                    "Usage records the database refused, kept in the ledger's quarantine.jsonl",
                )
                .expect("metric"),
            ),
            usage_ledger_bytes: register(
                &r,
                IntGauge::new(
                    "bluesminds_usage_ledger_bytes",
                    "Disk used by the usage ledger's segment files",
                )
                .expect("metric"),
            ),
            usage_ledger_full: register(
                &r,
                IntGauge::new(
                    "bluesminds_usage_ledger_full",
                    "1 while the usage ledger is over usage.ledger_max_mib and new requests are refused",
                )
                .expect("metric"),
            ),
            usage_written: register(
                &r,
                IntCounter::new(
                    "bluesminds_usage_written_total",
                    "Usage records written to the database",
                )
                .expect("metric"),
            ),
            usage_write_errors: register(
                &r,
                IntCounter::new(
                    "bluesminds_usage_write_errors_total",
                    "Failed usage batch writes (each is retried)",
                )
                .expect("metric"),
            ),
            usage_writer_lag: register(
                &r,
                Gauge::new(
                    "bluesminds_usage_writer_lag_seconds",
                    "Age of the oldest record in the last batch written to the database",
                )
                .expect("metric"),
            ),
            usage_batch_rows: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "bluesminds_usage_batch_rows",
                        "Usage records per database transaction",
                    )
                    .buckets(vec![
                        1.0, 4.0, 16.0, 64.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
                    ]),
                )
                .expect("metric"),
            ),
            config_reloads: register(
                &r,
                IntCounterVec::new(
                    opts(
                        "bluesminds_config_reloads_total",
                        "Config reloads by result (ok, rejected)",
                    ),
                    &["result"],
                )
                .expect("metric"),
            ),
            tls_reloads: register(
                &r,
                IntCounterVec::new(
                    opts(
                        "bluesminds_tls_reloads_total",
                        "Reloads of the listeners' TLS certificate by result (ok, rejected)",
                    ),
                    &["result"],
                )
                .expect("metric"),
            ),
            series: Arc::default(),
            registry: r,
        }
    }

    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding never fails");
        String::from_utf8(out).expect("prometheus text is utf-8")
    }
}

/// One model label's series, each made on its first use as `with_label_values`
/// would make it (a series appears on `/metrics` once it is touched). Looking
/// them up by label on every request hashed each label with SipHash under the
/// vector's lock, six times a request (perf: ~0.4 µs of ~43 µs).
#[derive(Default)]
struct ModelSeries {
    latency: OnceLock<Histogram>,
    ttfb: OnceLock<Histogram>,
    tokens_in: OnceLock<IntCounter>,
    tokens_out: OnceLock<IntCounter>,
    cost: OnceLock<Counter>,
    /// By backend and status: a few per model, so a list.
    requests: RwLock<Vec<(Box<str>, u16, IntCounter)>>,
}

/// `slot`'s series of `vec`, made with `labels` the first time.
fn labeled<'a, B: prometheus::core::MetricVecBuilder>(
    slot: &'a OnceLock<B::M>,
    vec: &prometheus::core::MetricVec<B>,
    labels: &[&str],
) -> &'a B::M {
    slot.get_or_init(|| vec.with_label_values(labels))
}

impl ModelSeries {
    fn requests(&self, vec: &IntCounterVec, model: &str, backend: &str, status: u16) -> IntCounter {
        let find = |list: &[(Box<str>, u16, IntCounter)]| {
            list.iter()
                .find(|(b, s, _)| *s == status && **b == *backend)
                .map(|(_, _, c)| c.clone())
        };
        if let Some(c) = find(&self.requests.read().expect("series lock")) {
            return c;
        }
        let mut list = self.requests.write().expect("series lock");
        if let Some(c) = find(&list) {
            return c;
        }
        let c = vec.with_label_values(&[model, backend, &status.to_string()]);
        list.push((backend.into(), status, c.clone()));
        c
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// How one request ended, for the request metrics.
pub struct Ended<'a> {
    pub record: &'a crate::usage::UsageRecord,
    /// Whether admission routed it to a pool (else its model label is "none").
    pub routed: bool,
    /// Whether a backend was picked (latency is only observed then).
    pub reached_upstream: bool,
    pub upstreams: &'a crate::upstream::Upstreams,
    pub error: Option<&'a crate::error::GatewayError>,
}

impl Metrics {
    /// Metrics for one finished request.
    pub fn observe(&self, ended: Ended<'_>) {
        use crate::error::GatewayError;
        use crate::limits::LimitKind;
        let record = ended.record;
        // Only models named in the config become label values: clients must not
        // create unbounded metric series with made-up names (a `*` pool routes any).
        let model = match record.model.as_deref() {
            Some(m) if ended.routed && ended.upstreams.is_listed(m) => m,
            Some(_) if ended.routed => "other",
            _ => "none",
        };
        let backend = record.backend.as_deref().unwrap_or("none");
        let series = self.model_series(model);
        series
            .requests(&self.requests, model, backend, record.status)
            .inc();
        if ended.reached_upstream {
            labeled(&series.latency, &self.latency, &[model])
                .observe(record.latency_ms as f64 / 1000.0);
            if let Some(ttfb) = record.ttfb_ms {
                labeled(&series.ttfb, &self.ttfb, &[model]).observe(ttfb as f64 / 1000.0);
            }
        }
        let (prompt, completion) = (record.prompt_tokens, record.completion_tokens);
        if prompt + completion > 0 {
            labeled(&series.tokens_in, &self.tokens, &[model, "in"]).inc_by(prompt);
            labeled(&series.tokens_out, &self.tokens, &[model, "out"]).inc_by(completion);
        }
        if record.cost_nanousd > 0 {
            labeled(&series.cost, &self.cost_usd, &[model])
                .inc_by(record.cost_nanousd as f64 / 1e9);
        }
        let limit = match ended.error {
            Some(GatewayError::RateLimited { kind, .. }) => Some(match kind {
                LimitKind::Requests => "requests",
                LimitKind::Tokens => "tokens",
                LimitKind::Concurrency => "concurrency",
            }),
            Some(GatewayError::QuotaExceeded { .. }) => Some("quota"),
            _ => None,
        };
        if let Some(limit) = limit {
            self.rate_limited.with_label_values(&[limit]).inc();
        }
    }

    fn model_series(&self, model: &str) -> Arc<ModelSeries> {
        if let Some(s) = self.series.read().expect("series lock").get(model) {
            return s.clone();
        }
        // Model labels are bounded (configured names, `other`, `none`).
        let mut all = self.series.write().expect("series lock");
        all.entry(model.into()).or_default().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolved_series_count_apart_and_appear_only_once_used() {
        let m = Metrics::new();
        let shared = m.clone();
        let s = m.model_series("gpt");
        assert!(Arc::ptr_eq(&s, &shared.model_series("gpt")));
        for (backend, status) in [("b1", 200), ("b1", 200), ("b2", 200), ("b1", 500)] {
            s.requests(&m.requests, "gpt", backend, status).inc();
        }
        let count = |b: &str, st: &str| m.requests.with_label_values(&["gpt", b, st]).get();
        assert_eq!(
            (count("b1", "200"), count("b2", "200"), count("b1", "500")),
            (2, 1, 1)
        );
        // Untouched series stay off /metrics, as with_label_values leaves them.
        assert!(!m.render().contains("bluesminds_tokens_total{"));
        labeled(&s.tokens_in, &m.tokens, &["gpt", "in"]).inc_by(3);
        labeled(&s.tokens_in, &m.tokens, &["gpt", "in"]).inc_by(4);
        assert_eq!(m.tokens.with_label_values(&["gpt", "in"]).get(), 7);
        assert!(!m.render().contains("direction=\"out\""));
    }
}
