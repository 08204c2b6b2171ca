//! The official `openai` Python SDK drives the real gateway (see tests/python/).
//!
//! The SDK lives in a virtualenv under target/ that the harness creates on first
//! use (`common::python`).

mod common;

use common::python::run_pytest;
use common::{fake, gateway, Backend};

async fn sdk_tests(file: &str, base_url: String, key: String) -> (bool, String) {
    run_pytest(file, &[("BM_BASE_URL", &base_url), ("BM_API_KEY", &key)]).await
}

#[tokio::test]
async fn official_openai_python_sdk() {
    let up = fake().await;
    let gw = gateway().backend(Backend::new(up.url())).start().await;
    let key = gw.create_key("sdk", &[]);
    let (ok, out) = sdk_tests("test_openai_sdk.py", gw.url("/v1"), key).await;
    assert!(
        ok,
        "the SDK tests failed:\n{out}\ngateway log:\n{}",
        gw.log()
    );
    assert!(out.contains("8 passed"), "{out}");
    // Every SDK call was recorded once: 9 requests, the last 3 refused.
    let rows = gw.wait_usage_rows(9).await;
    let statuses: Vec<i64> = rows.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 200, 401, 404, 400]);
}

#[tokio::test]
async fn official_openai_python_sdk_and_rate_limits() {
    let up = fake().await;
    let gw = gateway().backend(Backend::new(up.url())).start().await;
    let key = gw.create_key("sdk-limited", &["--rpm", "30"]);
    let (ok, out) = sdk_tests("test_rate_limits.py", gw.url("/v1"), key).await;
    assert!(
        ok,
        "the SDK rate-limit tests failed:\n{out}\ngateway log:\n{}",
        gw.log()
    );
    assert!(out.contains("1 passed"), "{out}");
    // 30 admitted, then two refusals (no-retry client, first try of the retrying
    // one) and the successful retry.
    let rows = gw.wait_usage_rows(33).await;
    let refused = rows.iter().filter(|r| r.status == 429).count();
    assert_eq!(refused, 2);
    assert_eq!(rows.last().unwrap().status, 200);
}
