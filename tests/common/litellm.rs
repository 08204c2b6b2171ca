//! A real LiteLLM proxy (`litellm --config`, from the virtualenv that
//! `python::litellm` makes) on a free loopback port, with the config of
//! tests/litellm/litellm.yaml: it starts offline (the model cost map and the
//! other files LiteLLM would download are read from the package), without a
//! database, and with a master key.
//!
//! LiteLLM takes seconds to start (it is Python, importing a large package), so
//! a test binary shares one ([`shared`]) and starts another only to kill it.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use fake_upstream::{FakeConfig, FakeUpstream};

use super::{free_port, Poll};

/// LiteLLM's master key (`general_settings.master_key`): what the gateway
/// must send as the backend key.
pub const MASTER_KEY: &str = "sk-litellm-master-key-for-tests";
/// The key LiteLLM sends on to the provider behind its `fake-gpt` model.
pub const PROVIDER_KEY: &str = "sk-provider-key-for-tests";

pub struct LiteLlm {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    dir: tempfile::TempDir,
}

impl LiteLlm {
    /// Starts LiteLLM with its `fake-gpt` model served by `provider_base`
    /// (an OpenAI base URL, `http://127.0.0.1:PORT/v1`, that takes
    /// [`PROVIDER_KEY`]), and waits until `/health/liveliness` answers.
    pub async fn start(provider_base: &str) -> LiteLlm {
        let litellm = tokio::task::spawn_blocking(super::python::litellm)
            .await
            .unwrap();
        let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/litellm/litellm.yaml");
        let mut dir = tempfile::tempdir().unwrap();
        // A port taken between free_port() and LiteLLM's bind: try another.
        for _ in 0..5 {
            let port = free_port();
            let log = std::fs::File::create(dir.path().join("litellm.log")).unwrap();
            let mut cmd = Command::new(&litellm);
            cmd.arg("--config")
                .arg(&config)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--num_workers", "1"])
                .current_dir(dir.path())
                .env("LITELLM_MASTER_KEY", MASTER_KEY)
                .env("PROVIDER_API_BASE", provider_base)
                .env("PROVIDER_API_KEY", PROVIDER_KEY)
                // Offline: LiteLLM fetches its model cost map and a few other
                // files from GitHub at start unless told to use the copies in
                // the package.
                .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
                .env("LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS", "True")
                .env("LITELLM_LOCAL_BLOG_POSTS", "True")
                .env("LITELLM_LOCAL_POLICY_TEMPLATES", "True")
                .env("LITELLM_LOCAL_AUTOROUTER_PRESETS", "True")
                .env("LITELLM_LOG", "ERROR")
                .env("NO_PROXY", "127.0.0.1,localhost")
                // A DATABASE_URL in the environment would make LiteLLM use it.
                .env_remove("DATABASE_URL")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log);
            // SAFETY: prctl is async-signal-safe. LiteLLM dies with the thread
            // that started it, also when the test binary ends without dropping
            // it (the shared instance lives in a static).
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let started = Instant::now();
            let mut me = LiteLlm {
                child: Some(cmd.spawn().expect("start litellm")),
                url: format!("http://127.0.0.1:{port}"),
                dir,
            };
            if me.wait_until_up().await {
                eprintln!(
                    "LiteLLM at {} answered {:.1} s after it was started",
                    me.url,
                    started.elapsed().as_secs_f64()
                );
                return me;
            }
            dir = std::mem::replace(&mut me.dir, tempfile::tempdir().unwrap());
        }
        panic!("no free port for LiteLLM after 5 tries");
    }

    /// `true` once it answers; `false` when it exited because the port was taken.
    async fn wait_until_up(&mut self) -> bool {
        let health = format!("{}/health/liveliness", self.url);
        let http = reqwest::Client::new();
        let log_path = self.dir.path().join("litellm.log");
        let child = self.child.as_mut().unwrap();
        // Generous: importing LiteLLM takes seconds, more on a loaded CI machine.
        let up = Poll::within(Duration::from_secs(180))
            .every(Duration::from_millis(100))
            .try_until(|| {
                let exited = child.try_wait().unwrap();
                let (http, health) = (&http, &health);
                async move {
                    if let Some(status) = exited {
                        return Ok(Some(status));
                    }
                    match http.get(health).send().await {
                        Ok(r) if r.status().is_success() => Ok(None),
                        _ => Err(()),
                    }
                }
            })
            .await;
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        match up {
            Ok(None) => true,
            Ok(Some(_)) if log.contains("address already in use") => {
                self.child = None;
                false
            }
            Ok(Some(status)) => panic!("LiteLLM exited with {status}; log:\n{log}"),
            Err(()) => panic!("LiteLLM did not answer within 180 s; log:\n{log}"),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("litellm.log")).unwrap_or_default()
    }

    /// SIGKILL, as when its container is killed.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for LiteLlm {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The LiteLLM a test binary's tests share, and the fake provider behind its
/// `fake-gpt` model (it requires [`PROVIDER_KEY`]). Both run on a thread of
/// their own that lives as long as the binary: a test's runtime ends with the
/// test, and LiteLLM would die with the thread that started it.
pub struct Shared {
    pub litellm: LiteLlm,
    pub provider: FakeUpstream,
}

pub fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let provider = FakeUpstream::start(FakeConfig {
                    api_key: Some(PROVIDER_KEY.into()),
                    ..FakeConfig::default()
                })
                .await
                .unwrap();
                let litellm = LiteLlm::start(&format!("{}/v1", provider.url())).await;
                tx.send(Shared { litellm, provider }).unwrap();
                std::future::pending::<()>().await;
            });
        });
        rx.recv()
            .expect("the shared LiteLLM did not start (see above)")
    })
}
