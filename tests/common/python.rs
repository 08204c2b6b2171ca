//! The official `openai` Python SDK for the tests that drive the gateway with
//! it (tests/python/): a virtualenv under target/ created on first use from
//! tests/python/requirements.txt (set BLUESMINDS_PYTHON to use another
//! interpreter that already has the packages), and a pytest runner.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The interpreter, set up once per test binary (its tests run in parallel).
pub fn python() -> PathBuf {
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
