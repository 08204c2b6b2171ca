//! The Python programs some tests drive the gateway with, each in a
//! virtualenv under target/ made on first use by tests/python/venv.sh (which
//! .ci/run also runs before the tests): the official `openai` SDK and pytest
//! (tests/python/requirements.txt; set BLUESMINDS_PYTHON to use another
//! interpreter that already has them), and the LiteLLM proxy
//! (tests/python/litellm-requirements.txt; BLUESMINDS_LITELLM names another
//! `litellm` executable).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The interpreter, set up once per test binary (its tests run in parallel).
pub fn python() -> PathBuf {
    static PYTHON: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PYTHON
        .get_or_init(|| match std::env::var("BLUESMINDS_PYTHON") {
            Ok(p) => PathBuf::from(p),
            Err(_) => venv("py-sdk-venv", "requirements.txt").join("bin/python"),
        })
        .clone()
}

/// The `litellm` command (LiteLLM's proxy server), set up once per test binary.
pub fn litellm() -> PathBuf {
    static LITELLM: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    LITELLM
        .get_or_init(|| match std::env::var("BLUESMINDS_LITELLM") {
            Ok(p) => PathBuf::from(p),
            Err(_) => venv("py-litellm-venv", "litellm-requirements.txt").join("bin/litellm"),
        })
        .clone()
}

/// target/NAME, a virtualenv with tests/python/REQUIREMENTS installed.
fn venv(name: &str, requirements: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = root.join("target").join(name);
    let ok = Command::new("bash")
        .arg(root.join("tests/python/venv.sh"))
        .arg(&venv)
        .arg(root.join("tests/python").join(requirements))
        .status()
        .expect("bash and python3 are needed for the Python tests")
        .success();
    assert!(
        ok,
        "bash tests/python/venv.sh target/{name} tests/python/{requirements} failed"
    );
    venv
}

/// Runs one pytest file of tests/python with `envs` (`BM_BASE_URL`,
/// `BM_API_KEY`...); returns whether it passed and pytest's output.
pub async fn run_pytest(file: &str, envs: &[(&str, &str)]) -> (bool, String) {
    let py = tokio::task::spawn_blocking(python).await.unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(file);
    let envs: Vec<(String, String)> = envs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(py)
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
            .arg(script)
            .envs(envs)
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
