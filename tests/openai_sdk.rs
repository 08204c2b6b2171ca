//! The official `openai` Python SDK drives the real gateway (see tests/python/).
//!
//! The SDK lives in a virtualenv under target/ that this test creates on first use
//! from tests/python/requirements.txt (set BLUESMINDS_PYTHON to use another
//! interpreter that already has the packages).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{fake, gateway, Backend};

/// The interpreter, set up once per test run (tests in this file run in parallel).
fn python() -> PathBuf {
    static PYTHON: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PYTHON.get_or_init(setup_python).clone()
}

fn setup_python() -> PathBuf {
    if let Ok(p) = std::env::var("BLUESMINDS_PYTHON") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = root.join("target/py-sdk-venv");
    let py = venv.join("bin/python");
    let requirements = root.join("tests/python/requirements.txt");
    let stamp = venv.join("requirements.installed");
    let wanted = std::fs::read_to_string(&requirements).unwrap();
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 is needed for the SDK tests")
            .success();
        assert!(ok, "python3 -m venv failed");
        let ok = Command::new(&py)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&requirements)
            .status()
            .unwrap()
            .success();
        assert!(ok, "pip install -r tests/python/requirements.txt failed");
        std::fs::write(&stamp, wanted).unwrap();
    }
    py
}

/// Runs one pytest file against the gateway with `key`; returns pytest's output.
async fn run_pytest(file: &str, base_url: String, key: String) -> (bool, String) {
    let py = tokio::task::spawn_blocking(python).await.unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(file);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(py)
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
            .arg(script)
            .env("BM_BASE_URL", base_url)
            .env("BM_API_KEY", key)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    (out.status.success(), text)
}

#[tokio::test]
async fn official_openai_python_sdk() {
    let up = fake().await;
    let gw = gateway().backend(Backend::new(up.url())).start().await;
    let key = gw.create_key("sdk", &[]);
    let (ok, out) = run_pytest("test_openai_sdk.py", gw.url("/v1"), key).await;
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
    let (ok, out) = run_pytest("test_rate_limits.py", gw.url("/v1"), key).await;
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
