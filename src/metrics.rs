//! Prometheus metrics shared by the proxy and the side app (served on `/metrics`).

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    pub tokens: IntCounterVec,
    pub usage_queue_depth: IntGauge,
    pub usage_shed: IntCounter,
    pub usage_spilled: IntCounter,
    pub usage_written: IntCounter,
    pub usage_write_errors: IntCounter,
    pub config_reloads: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "bluesminds_requests_total",
                "Proxied requests by model and status",
            ),
            &["model", "status"],
        )
        .expect("metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "bluesminds_request_duration_seconds",
                "Time from request to the last response byte",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
            ]),
            &["model"],
        )
        .expect("metric");
        let tokens = IntCounterVec::new(
            Opts::new("bluesminds_tokens_total", "Tokens by model and direction"),
            &["model", "direction"],
        )
        .expect("metric");
        let usage_queue_depth = IntGauge::new(
            "bluesminds_usage_queue_depth",
            "Usage records waiting for the batch writer",
        )
        .expect("metric");
        let usage_shed = IntCounter::new(
            "bluesminds_usage_shed_total",
            "Usage records lost (the spill file could not be written)",
        )
        .expect("metric");
        let usage_spilled = IntCounter::new(
            "bluesminds_usage_spilled_total",
            "Usage records written to the spill file because the queue was full",
        )
        .expect("metric");
        let usage_written = IntCounter::new(
            "bluesminds_usage_written_total",
            "Usage records written to the database",
        )
        .expect("metric");
        let usage_write_errors = IntCounter::new(
            "bluesminds_usage_write_errors_total",
            "Failed usage batch writes (each is retried)",
        )
        .expect("metric");
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "bluesminds_config_reloads_total",
                "Config reloads by result (ok, rejected)",
            ),
            &["result"],
        )
        .expect("metric");
        for c in [
            Box::new(config_reloads.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(requests.clone()),
            Box::new(latency.clone()),
            Box::new(tokens.clone()),
            Box::new(usage_queue_depth.clone()),
            Box::new(usage_shed.clone()),
            Box::new(usage_spilled.clone()),
            Box::new(usage_written.clone()),
            Box::new(usage_write_errors.clone()),
        ] {
            registry.register(c).expect("unique metric names");
        }
        Self {
            registry,
            requests,
            latency,
            tokens,
            usage_queue_depth,
            usage_shed,
            usage_spilled,
            usage_written,
            usage_write_errors,
            config_reloads,
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

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
