//! Test harness: starts the real `bluesminds` binary on free loopback ports with
//! a config written for the test, against fake upstreams running in-process.
//!
//! The database is a fresh SQLite file per test, or, when `BLUESMINDS_TEST_POSTGRES`
//! holds a PostgreSQL URL, a fresh PostgreSQL database per test (dropped on exit).
//!
//! Shared helpers live here too, one of each: HTTP clients and OpenAI error
//! bodies (`http`), waiting for a condition (`wait`), reading `/metrics`
//! (`prometheus`), the Python SDK and pytest (`python`), a real LiteLLM
//! proxy (`litellm`).
#![allow(dead_code)]

pub mod dns;
pub mod http;
pub mod litellm;
pub mod prometheus;
pub mod python;
pub mod wait;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use fake_upstream::{FakeConfig, FakeUpstream};
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row};

// Each test binary uses some of these; the others are not unused code.
#[allow(unused_imports)]
pub use http::{browser_client, client, error_of, get_json, header, ApiError};
#[allow(unused_imports)]
pub use prometheus::sample;
#[allow(unused_imports)]
pub use wait::{eventually, eventually_some, Poll};

/// A fake OpenAI upstream with the default behaviour, on a free port.
pub async fn fake() -> FakeUpstream {
    FakeUpstream::start(FakeConfig::default()).await.unwrap()
}

/// A client CLI from npm for the tests that drive a real one (Codex, Claude
/// Code): the path in `$env`, else the one `.ci/run` installs with
/// `npm install --prefix target/<dir>`; `None` where neither is there.
pub fn npm_cli(env: &str, dir: &str, bin: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        return Some(path.into());
    }
    let installed = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join(dir)
        .join("node_modules/.bin")
        .join(bin);
    installed.exists().then_some(installed)
}

/// A loopback port nothing listens on now, never handed out before in this
/// test process. The kernel gives a released port out again soon (thousands
/// of binds see hundreds of repeats), so without the record two gateways
/// started side by side could be told the same port: one's proxy port the
/// other's side-app port, and the requests meant for one reach the other.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap();
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_bluesminds")
}

/// A database for one test.
pub struct TestDb {
    pub url: String,
    pg_admin: Option<(String, String)>,
}

impl TestDb {
    pub async fn new(dir: &std::path::Path) -> Self {
        match std::env::var("BLUESMINDS_TEST_POSTGRES") {
            Ok(admin_url) if !admin_url.is_empty() => {
                sqlx::any::install_default_drivers();
                let name = format!("bm_test_{}", uuid::Uuid::new_v4().simple());
                let admin = AnyPoolOptions::new()
                    .max_connections(1)
                    .connect(&admin_url)
                    .await
                    .expect("connect to BLUESMINDS_TEST_POSTGRES");
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&admin)
                    .await
                    .unwrap();
                admin.close().await;
                let base = admin_url.rsplit_once('/').unwrap().0;
                Self {
                    url: format!("{base}/{name}"),
                    pg_admin: Some((admin_url, name)),
                }
            }
            _ => Self {
                url: format!("sqlite://{}", dir.join("gateway.db").display()),
                pg_admin: None,
            },
        }
    }

    pub async fn pool(&self) -> AnyPool {
        sqlx::any::install_default_drivers();
        AnyPoolOptions::new()
            .max_connections(2)
            .connect(&self.url)
            .await
            .unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin_url, name)) = self.pg_admin.take() {
            // Best effort, on a fresh thread: Drop may run inside a runtime.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok(admin) = AnyPoolOptions::new()
                        .max_connections(1)
                        .connect(&admin_url)
                        .await
                    {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&admin)
                                .await;
                    }
                });
            })
            .join();
        }
    }
}

pub struct Backend<'a> {
    pub url: String,
    pub weight: usize,
    pub priority: u32,
    pub api_key_env: Option<&'a str>,
}

impl<'a> Backend<'a> {
    pub fn new(url: String) -> Self {
        Self {
            url,
            weight: 1,
            priority: 0,
            api_key_env: None,
        }
    }
}

/// A running gateway process.
pub struct Gateway {
    pub child: Option<Child>,
    /// `http://127.0.0.1:PORT`, or `https://` with `GatewayBuilder::tls`.
    pub proxy: String,
    pub side: String,
    /// The metrics listener's base URL with `GatewayBuilder::metrics_listen`.
    pub metrics_url: Option<String>,
    pub dir: tempfile::TempDir,
    pub db: TestDb,
    pub config_path: PathBuf,
    pub envs: Vec<(String, String)>,
}

pub struct GatewayBuilder<'a> {
    backends: Vec<Backend<'a>>,
    /// More YAML of each backend (`backend_with`), by its index.
    backend_yaml: Vec<String>,
    models: Vec<&'a str>,
    server_yaml: String,
    usage_yaml: String,
    extra_yaml: String,
    prices_yaml: Option<String>,
    forward_headers: Vec<String>,
    expose_headers: Vec<String>,
    pool_yaml: String,
    pools_yaml: Option<String>,
    db_url: Option<String>,
    envs: Vec<(String, String)>,
    tls: Option<(PathBuf, PathBuf)>,
    metrics_listen: bool,
}

pub fn gateway<'a>() -> GatewayBuilder<'a> {
    GatewayBuilder {
        backends: Vec::new(),
        backend_yaml: Vec::new(),
        models: vec![
            "gpt-4o-mini",
            "text-embedding-3-small",
            "gpt-3.5-turbo-instruct",
        ],
        server_yaml: String::new(),
        usage_yaml: String::new(),
        extra_yaml: String::new(),
        prices_yaml: None,
        // The fake upstream's per-request knob must reach it.
        forward_headers: vec![fake_upstream::CHUNK_DELAY_HEADER.to_string()],
        expose_headers: Vec::new(),
        pool_yaml: String::new(),
        pools_yaml: None,
        db_url: None,
        envs: Vec::new(),
        tls: None,
        metrics_listen: false,
    }
}

/// `127.0.0.1:PORT` of a base URL.
pub fn host_port(url: &str) -> &str {
    url.trim_start_matches("http://")
        .trim_start_matches("https://")
}

impl<'a> GatewayBuilder<'a> {
    pub fn backend(self, b: Backend<'a>) -> Self {
        self.backend_with(b, &[])
    }
    /// A backend with more settings, each a YAML line of its own
    /// (`"http2: never"`, `"tls:"`, `"  ca_file: /x.pem"`).
    pub fn backend_with(mut self, b: Backend<'a>, lines: &[&str]) -> Self {
        self.backends.push(b);
        self.backend_yaml
            .push(lines.iter().map(|l| format!("        {l}\n")).collect());
        self
    }
    pub fn models(mut self, models: &[&'a str]) -> Self {
        self.models = models.to_vec();
        self
    }
    /// The whole `prices:` section, instead of the default prices.
    pub fn prices(mut self, yaml: &str) -> Self {
        self.prices_yaml = Some(yaml.to_string());
        self
    }
    /// One `key: value` line added to the generated `server:` section.
    pub fn server(mut self, line: &str) -> Self {
        self.server_yaml.push_str(&format!("  {line}\n"));
        self
    }
    /// One `key: value` line added to the generated `usage:` section.
    pub fn usage(mut self, line: &str) -> Self {
        self.usage_yaml.push_str(&format!("  {line}\n"));
        self
    }
    /// Use this database (another gateway's) instead of a fresh one.
    pub fn db_url(mut self, url: &str) -> Self {
        self.db_url = Some(url.to_string());
        self
    }
    /// A client header the `main` pool passes upstream (`forward_headers`).
    pub fn forward_header(mut self, name: &str) -> Self {
        self.forward_headers.push(name.to_string());
        self
    }
    /// An upstream header the `main` pool passes to clients (`expose_headers`).
    pub fn expose_header(mut self, name: &str) -> Self {
        self.expose_headers.push(name.to_string());
        self
    }
    /// One `key: value` line added to the `main` pool.
    pub fn pool(mut self, line: &str) -> Self {
        self.pool_yaml.push_str(&format!("    {line}\n"));
        self
    }
    /// The whole `pools:` section, instead of the `main` pool made of
    /// `models`, `pool` and the header lists; `backend`s are appended to it
    /// (to its last pool when it ends with that pool's `backends:` list).
    pub fn pools(mut self, yaml: &str) -> Self {
        self.pools_yaml = Some(yaml.to_string());
        self
    }
    /// YAML appended to the generated config (top-level sections).
    pub fn yaml(mut self, extra: &str) -> Self {
        self.extra_yaml.push_str(extra);
        self
    }
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.envs.push((k.into(), v.into()));
        self
    }
    /// HTTPS on both listeners (`server.tls`) with these PEM files.
    pub fn tls(mut self, cert: &std::path::Path, key: &std::path::Path) -> Self {
        self.tls = Some((cert.to_path_buf(), key.to_path_buf()));
        self
    }
    /// `/metrics` on a listener of its own (`server.metrics_listen`).
    pub fn metrics_listen(mut self) -> Self {
        self.metrics_listen = true;
        self
    }

    pub async fn start(self) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let db = match self.db_url.clone() {
            Some(url) => TestDb {
                url,
                pg_admin: None,
            },
            None => TestDb::new(dir.path()).await,
        };
        let proxy_port = free_port();
        let side_port = free_port();
        let mut server_yaml = self.server_yaml.clone();
        if let Some((cert, key)) = &self.tls {
            server_yaml.push_str(&format!(
                "  tls:\n    cert_file: \"{}\"\n    key_file: \"{}\"\n",
                cert.display(),
                key.display()
            ));
        }
        let metrics_port = self.metrics_listen.then(free_port);
        if let Some(port) = metrics_port {
            server_yaml.push_str(&format!("  metrics_listen: \"127.0.0.1:{port}\"\n"));
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let pool_headers = format!(
            "    forward_headers: [{}]\n    expose_headers: [{}]\n{}",
            self.forward_headers.join(", "),
            self.expose_headers.join(", "),
            self.pool_yaml
        );
        let mut yaml = format!(
            "server:\n  proxy_listen: \"127.0.0.1:{proxy_port}\"\n  admin_listen: \"127.0.0.1:{side_port}\"\n  threads: 2\n  grace_period_secs: 1\n{}\
             database:\n  url: \"{}\"\n\
             usage:\n  ledger_dir: \"{}\"\n  spill_path: \"{}\"\n{}\
             health_check:\n  interval_secs: 1\n  timeout_ms: 2000\n  unhealthy_threshold: 2\n  eject_secs: 30\n",
            server_yaml,
            db.url,
            dir.path().join("usage-ledger").display(),
            dir.path().join("usage-spill.jsonl").display(),
            self.usage_yaml,
        );
        if let Some(pools) = &self.pools_yaml {
            yaml.push_str(pools);
        } else {
            yaml.push_str(&format!(
                "pools:\n  - name: main\n    models: [{}]\n{}    backends:\n",
                self.models.join(", "),
                pool_headers
            ));
        }
        for (b, extra) in self.backends.iter().zip(&self.backend_yaml) {
            yaml.push_str(&format!(
                "      - url: {}\n        weight: {}\n        priority: {}\n",
                b.url, b.weight, b.priority
            ));
            if let Some(env) = b.api_key_env {
                yaml.push_str(&format!("        api_key_env: {env}\n"));
            }
            yaml.push_str(extra);
        }
        yaml.push_str(self.prices_yaml.as_deref().unwrap_or(
            "prices:\n  gpt-4o-mini: { input_per_1m: 0.15, output_per_1m: 0.60 }\n  text-embedding-3-small: { input_per_1m: 0.02, output_per_1m: 0 }\n",
        ));
        yaml.push_str(&self.extra_yaml);
        let config_path = dir.path().join("gateway.yaml");
        std::fs::write(&config_path, yaml).unwrap();
        let mut gw = Gateway {
            child: None,
            proxy: format!("{scheme}://127.0.0.1:{proxy_port}"),
            side: format!("{scheme}://127.0.0.1:{side_port}"),
            metrics_url: metrics_port.map(|p| format!("http://127.0.0.1:{p}")),
            dir,
            db,
            config_path,
            envs: self.envs,
        };
        // free_port() can race with another process taking the port before
        // the gateway binds it: then try again with new ports.
        for _ in 0..5 {
            if gw.spawn().await {
                return gw;
            }
            let (old_proxy, old_side) = (gw.proxy.clone(), gw.side.clone());
            gw.proxy = format!("{scheme}://127.0.0.1:{}", free_port());
            gw.side = format!("{scheme}://127.0.0.1:{}", free_port());
            let mut text = std::fs::read_to_string(&gw.config_path)
                .unwrap()
                .replace(host_port(&old_proxy), host_port(&gw.proxy))
                .replace(host_port(&old_side), host_port(&gw.side));
            if let Some(old) = gw.metrics_url.clone() {
                let new = format!("http://127.0.0.1:{}", free_port());
                text = text.replace(host_port(&old), host_port(&new));
                gw.metrics_url = Some(new);
            }
            std::fs::write(&gw.config_path, text).unwrap();
        }
        panic!(
            "no free ports for the gateway after 5 tries; log:\n{}",
            gw.log()
        );
    }
}

impl Gateway {
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(bin());
        cmd.arg("--config").arg(&self.config_path);
        cmd.envs(self.envs.iter().map(|(k, v)| (k, v)));
        cmd.env("RUST_LOG", "info");
        cmd
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("gateway.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts the process and waits until both listeners answer; `false` when
    /// it exited because a listen port was taken meanwhile.
    async fn spawn(&mut self) -> bool {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = self
            .command()
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start bluesminds");
        self.child = Some(child);
        // Only "does it answer": the TLS tests check the certificate themselves.
        let client = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap();
        let healthz = format!("{}/healthz", self.side);
        let proxy_addr = host_port(&self.proxy).to_string();
        let log_path = self.log_path();
        let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        // The child stays in `self` meanwhile, so that a failed start still
        // kills it (Drop).
        let child = self.child.as_mut().unwrap();
        let started = Poll::within(Duration::from_secs(60))
            .every(Duration::from_millis(50))
            .try_until(|| {
                let exited = child.try_wait().unwrap();
                let port_taken = exited.is_some() && log().contains("Address already in use");
                if let (Some(status), false) = (exited, port_taken) {
                    panic!("gateway exited with {status}; log:\n{}", log());
                }
                let (client, healthz, proxy_addr) = (&client, &healthz, &proxy_addr);
                async move {
                    if port_taken {
                        return Ok(());
                    }
                    let side_up = client
                        .get(healthz.as_str())
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    let proxy_up = std::net::TcpStream::connect(proxy_addr.as_str()).is_ok();
                    if side_up && proxy_up {
                        Ok(())
                    } else {
                        Err(())
                    }
                }
            })
            .await;
        assert!(started.is_ok(), "gateway did not start; log:\n{}", log());
        if child.try_wait().unwrap().is_some() {
            // Only a taken port ends the wait with the process gone.
            self.child = None;
            return false;
        }
        true
    }

    /// Creates a key with the CLI, as the README's quick start does.
    pub fn create_key(&self, name: &str, extra: &[&str]) -> String {
        let out = self
            .command()
            .args(["keys", "create", "--name", name])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "keys create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
        assert!(key.starts_with("bm_"), "unexpected key output {key:?}");
        key
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.proxy, path)
    }

    /// Sends a signal (`"HUP"`, `"TERM"`) to the running gateway.
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let sent = Command::new("kill")
            .args([format!("-{name}"), pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{name} {pid}");
    }

    /// SIGKILL: the process dies at once, as under the OOM killer.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Starts the gateway again with the same config, ports and database.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the gateway first");
        assert!(
            self.spawn().await,
            "the gateway's ports were taken meanwhile"
        );
    }

    pub fn is_postgres(&self) -> bool {
        self.db.url.starts_with("postgres")
    }

    /// Graceful stop (SIGTERM), waiting for the process to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("gateway did not stop after SIGTERM; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `usage_records` holds `n` rows (the writer batches asynchronously).
    pub async fn wait_usage_rows(&self, n: i64) -> Vec<UsageRow> {
        let pool = self.db.pool().await;
        // Generous: on a loaded 2-core CI machine a first write can take a while;
        // the wait ends as soon as the rows are there.
        let found = Poll::within(Duration::from_secs(60))
            .every(Duration::from_millis(50))
            .try_until(|| async {
                let rows = usage_rows(&pool).await;
                if rows.len() as i64 >= n {
                    assert_eq!(
                        rows.len() as i64,
                        n,
                        "more usage rows than requests: {rows:#?}"
                    );
                    Ok(rows)
                } else {
                    Err(rows)
                }
            })
            .await;
        let rows = found.unwrap_or_else(|rows| {
            panic!(
                "expected {n} usage rows, found {}: {rows:#?}\nlog:\n{}",
                rows.len(),
                self.log()
            )
        });
        pool.close().await;
        rows
    }

    /// The `/metrics` text (from the metrics listener when there is one).
    pub async fn metrics(&self) -> String {
        let base = self.metrics_url.as_ref().unwrap_or(&self.side);
        reqwest::get(format!("{base}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[derive(Debug, Clone)]
pub struct UsageRow {
    pub request_id: String,
    pub key_id: Option<i64>,
    pub endpoint: String,
    pub model: Option<String>,
    pub backend: Option<String>,
    pub status: i64,
    pub stream: bool,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    /// Of the prompt: read from / written to the provider's cache.
    pub cached_tokens: i64,
    pub cache_write_tokens: i64,
    /// Of the completion: reasoning.
    pub reasoning_tokens: i64,
    pub usage_source: String,
    pub cost_nanousd: i64,
    pub latency_ms: i64,
    pub ttfb_ms: Option<i64>,
    pub error_code: Option<String>,
}

pub async fn usage_rows(pool: &AnyPool) -> Vec<UsageRow> {
    sqlx::query(
        "SELECT request_id, key_id, endpoint, model, backend, CAST(status AS BIGINT) AS status, CAST(stream AS BIGINT) AS stream, prompt_tokens, \
         completion_tokens, cached_tokens, cache_write_tokens, reasoning_tokens, usage_source, cost_nanousd, latency_ms, ttfb_ms, error_code FROM usage_records ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .iter()
    .map(|r| UsageRow {
        request_id: r.get("request_id"),
        key_id: r.get("key_id"),
        endpoint: r.get("endpoint"),
        model: r.get("model"),
        backend: r.get("backend"),
        status: r.get("status"),
        stream: r.get::<i64, _>("stream") == 1,
        prompt_tokens: r.get("prompt_tokens"),
        completion_tokens: r.get("completion_tokens"),
        cached_tokens: r.get("cached_tokens"),
        cache_write_tokens: r.get("cache_write_tokens"),
        reasoning_tokens: r.get("reasoning_tokens"),
        usage_source: r.get("usage_source"),
        cost_nanousd: r.get("cost_nanousd"),
        latency_ms: r.get("latency_ms"),
        ttfb_ms: r.get("ttfb_ms"),
        error_code: r.get("error_code"),
    })
    .collect()
}

/// Reads an SSE response event by event (the `data:` payloads).
pub struct SseReader {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl SseReader {
    pub fn new(resp: reqwest::Response) -> Self {
        Self {
            resp,
            buf: Vec::new(),
        }
    }

    /// The next event's data, or None at the end of the body.
    pub async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = self.buf.drain(..pos + 2).collect();
                let text = String::from_utf8(event).unwrap();
                let data: Vec<&str> = text
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:").map(|d| d.trim_start()))
                    .collect();
                if !data.is_empty() {
                    return Some(data.join("\n"));
                }
                continue;
            }
            match self.resp.chunk().await {
                Ok(Some(c)) => self.buf.extend_from_slice(&c),
                _ => return None,
            }
        }
    }

    pub async fn collect(mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(e) = self.next().await {
            out.push(e);
        }
        out
    }
}

pub fn chat_body(model: &str, stream: bool) -> serde_json::Value {
    serde_json::json!({
        "model": model,
        "stream": stream,
        "messages": [{"role": "user", "content": "Say hello to the tests"}]
    })
}

impl Gateway {
    /// POST /v1/chat/completions with a key, as a client would.
    pub async fn chat(&self, key: &str, body: &serde_json::Value) -> reqwest::Response {
        reqwest::Client::new()
            .post(self.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .expect("the gateway answers")
    }

    /// POST a JSON body to a proxy path with a key, as a client would.
    pub async fn post_json(
        &self,
        key: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        client()
            .post(self.url(path))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .expect("the gateway answers")
    }
}

impl Gateway {
    /// Runs a `bluesminds` subcommand against this gateway's config; panics on failure.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = self.command().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "bluesminds {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

/// A browser-like dashboard user: keeps its session cookie (redirects are not
/// followed, so pages' 303s stay visible) and sends its CSRF token on changes.
pub struct User {
    pub http: reqwest::Client,
    pub side: String,
    pub csrf: String,
    pub id: i64,
}

/// POSTs a sign-up with the tests' password through `http`; the caller judges
/// the answer.
pub async fn post_signup(http: &reqwest::Client, gw: &Gateway, email: &str) -> reqwest::Response {
    http.post(format!("{}/api/auth/signup", gw.side))
        .json(&serde_json::json!({"email": email, "password": "a long enough password"}))
        .send()
        .await
        .unwrap()
}

impl User {
    pub async fn signup(gw: &Gateway, email: &str) -> User {
        let http = browser_client();
        let resp = post_signup(&http, gw, email).await;
        assert_eq!(resp.status(), reqwest::StatusCode::CREATED);
        let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
        assert!(
            cookie.starts_with("bm_session=")
                && cookie.contains("HttpOnly")
                && cookie.contains("SameSite=Lax"),
            "{cookie}"
        );
        let me: serde_json::Value = resp.json().await.unwrap();
        User {
            http,
            side: gw.side.clone(),
            csrf: me["csrf_token"].as_str().unwrap().to_string(),
            id: me["id"].as_i64().unwrap(),
        }
    }

    /// A user who signed up and whom the operator then made an admin with the
    /// CLI (the only way to become one).
    pub async fn signup_admin(gw: &Gateway, email: &str) -> User {
        let user = User::signup(gw, email).await;
        gw.cli(&["users", "grant-admin", "--email", email]);
        user
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.side))
            .send()
            .await
            .unwrap()
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> reqwest::Response {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.side))
            .header("x-csrf-token", &self.csrf);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.unwrap()
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> reqwest::Response {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    /// Creates a key through the API: its id and its secret.
    pub async fn new_key(&self, name: &str) -> (i64, String) {
        let resp = self
            .post("/api/keys", serde_json::json!({"name": name}))
            .await;
        assert_eq!(resp.status(), reqwest::StatusCode::CREATED);
        let v: serde_json::Value = resp.json().await.unwrap();
        (
            v["id"].as_i64().unwrap(),
            v["key"].as_str().unwrap().to_string(),
        )
    }
}
