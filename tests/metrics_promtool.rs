//! The side app's `/metrics` is a clean Prometheus exposition: `promtool check
//! metrics` (from the `prometheus` Debian package) parses and lints it, and the
//! families the README documents are there with sane values.
//!
//! Lint problems (a counter without `_total`, a `_count` suffix on a gauge, a
//! camelCase name...) fail the test just like parse errors: a clean exposition is
//! the bar, since dashboards and alerts are written against these names.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{chat_body, fake, gateway, sample, Backend, Poll};
use fake_upstream::FakeConfig;

/// Runs `promtool check metrics` on `text`; panics with promtool's report when it
/// finds a parse error or any lint problem.
fn promtool_check(text: &str, when: &str) {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "promtool is not on PATH; this test needs it (Debian: `apt-get install \
             --no-install-recommends prometheus`, which .ci/run does)"
        ),
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // promtool exits 1 on a parse error and 3 on lint problems, printing each
    // problem as `<metric> <problem>`; a clean exposition prints nothing.
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics ({when}) exited with {}:\n{report}\n--- /metrics:\n{text}",
        out.status
    );
}

fn assert_family(text: &str, name: &str, kind: &str) {
    assert!(
        text.lines()
            .any(|l| l.starts_with(&format!("# HELP {name} "))),
        "no HELP for {name}:\n{text}"
    );
    assert!(
        text.lines().any(|l| l == format!("# TYPE {name} {kind}")),
        "{name} is not a {kind}:\n{text}"
    );
}

async fn fetch_metrics(side: &str) -> String {
    let resp = reqwest::get(format!("{side}/metrics")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        content_type.starts_with("text/plain") && content_type.contains("version=0.0.4"),
        "Prometheus text format 0.0.4 expected, got content-type {content_type}"
    );
    resp.text().await.unwrap()
}

#[tokio::test]
async fn metrics_pass_promtool_and_count_requests() {
    let up = fake().await;
    let gw = gateway().backend(Backend::new(up.url())).start().await;

    // Before any request: only the unlabelled families, still clean.
    promtool_check(&fetch_metrics(&gw.side).await, "at start");

    let key = gw.create_key("t", &[]);
    for _ in 0..2 {
        let resp = gw.chat(&key, &chat_body("gpt-4o-mini", false)).await;
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
    }
    let resp = gw.chat(&key, &chat_body("gpt-4o-mini", true)).await;
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    // A refusal, so that an error status (and its labels) is exposed too.
    let resp = gw
        .chat("bm_not_a_key", &chat_body("gpt-4o-mini", false))
        .await;
    assert_eq!(resp.status(), 401);
    resp.bytes().await.unwrap();

    // The usage writer batches asynchronously: wait until all four records are in.
    let polled = Poll::within(Duration::from_secs(10))
        .every(Duration::from_millis(100))
        .try_until(|| async {
            let text = fetch_metrics(&gw.side).await;
            if sample(&text, "bluesminds_usage_written_total", &[]).unwrap_or(0.0) >= 4.0 {
                Ok(text)
            } else {
                Err(text)
            }
        })
        .await;
    let text = polled.unwrap_or_else(|text| {
        panic!(
            "bluesminds_usage_written_total did not reach 4 within 10 s:\n{text}\nlog:\n{}",
            gw.log()
        )
    });

    promtool_check(&text, "after requests");

    assert_family(&text, "bluesminds_requests_total", "counter");
    assert_family(&text, "bluesminds_request_duration_seconds", "histogram");
    assert_family(&text, "bluesminds_tokens_total", "counter");
    assert_family(&text, "bluesminds_usage_queue_depth", "gauge");
    for counter in [
        "bluesminds_usage_written_total",
        "bluesminds_usage_replayed_total",
        "bluesminds_usage_quarantined_total",
        "bluesminds_usage_shed_total",
        "bluesminds_usage_write_errors_total",
    ] {
        assert_family(&text, counter, "counter");
    }

    let ok = sample(
        &text,
        "bluesminds_requests_total",
        &[("model", "gpt-4o-mini"), ("status", "200")],
    );
    assert_eq!(ok, Some(3.0), "{text}");
    let unauthorized = sample(&text, "bluesminds_requests_total", &[("status", "401")]);
    assert_eq!(unauthorized, Some(1.0), "{text}");
    // Refused before routing: no model or backend label value beyond `none`.
    let unrouted = sample(
        &text,
        "bluesminds_requests_total",
        &[("model", "none"), ("backend", "none"), ("status", "401")],
    );
    assert_eq!(unrouted, Some(1.0), "{text}");
    assert_family(&text, "bluesminds_time_to_first_byte_seconds", "histogram");
    assert_family(&text, "bluesminds_cost_usd_total", "counter");
    assert_family(&text, "bluesminds_usage_writer_lag_seconds", "gauge");
    let spent = sample(
        &text,
        "bluesminds_cost_usd_total",
        &[("model", "gpt-4o-mini")],
    );
    assert!(spent.is_some_and(|usd| usd > 0.0), "{text}");

    let observed = sample(
        &text,
        "bluesminds_request_duration_seconds_count",
        &[("model", "gpt-4o-mini")],
    )
    .expect("latency histogram for gpt-4o-mini");
    assert!(observed >= 3.0, "{text}");
    let inf_bucket = sample(
        &text,
        "bluesminds_request_duration_seconds_bucket",
        &[("model", "gpt-4o-mini"), ("le", "+Inf")],
    );
    assert_eq!(
        inf_bucket,
        Some(observed),
        "+Inf bucket equals _count: {text}"
    );

    let tokens_out = sample(
        &text,
        "bluesminds_tokens_total",
        &[("model", "gpt-4o-mini"), ("direction", "out")],
    )
    .unwrap_or(0.0);
    // The fake upstream streams 5 content chunks (= completion tokens) per answer.
    assert_eq!(
        tokens_out,
        3.0 * FakeConfig::default().chunks as f64,
        "{text}"
    );
    let tokens_in = sample(
        &text,
        "bluesminds_tokens_total",
        &[("model", "gpt-4o-mini"), ("direction", "in")],
    )
    .unwrap_or(0.0);
    assert!(tokens_in > 0.0, "{text}");

    assert_eq!(
        sample(&text, "bluesminds_usage_queue_depth", &[]),
        Some(0.0)
    );
    assert_family(&text, "bluesminds_usage_ledger_bytes", "gauge");
    assert_eq!(
        sample(&text, "bluesminds_usage_ledger_full", &[]),
        Some(0.0)
    );
    for lost in [
        "bluesminds_usage_replayed_total",
        "bluesminds_usage_quarantined_total",
        "bluesminds_usage_shed_total",
        "bluesminds_usage_write_errors_total",
    ] {
        assert_eq!(sample(&text, lost, &[]), Some(0.0), "{lost}: {text}");
    }
}
