//! The official `anthropic` Python SDK drives the real gateway (see
//! tests/python/test_anthropic_sdk.py), in front of an Anthropic-speaking
//! backend (passthrough) and an OpenAI-speaking one (translation); the usage
//! rows the gateway stored must say what the answers said. Also: Claude
//! Code's captured request (tests/fixtures/anthropic/) through the gateway.

mod common;

use common::python::run_pytest;
use common::{gateway, Backend, Gateway, UsageRow};
use fake_upstream::{FakeConfig, FakeUpstream, Provider};
use serde_json::Value;

const MODEL: &str = "claude-sonnet-4-5";

/// The `anthropic-version` the pinned SDK (tests/python/requirements.txt)
/// sends; the fake, like Anthropic, refuses a version it does not know.
const SDK_API_VERSION: &str = "2026-10-21";

/// What both fakes report as cached: read 4 (and, Anthropic only, 2 written).
const CACHED: usize = 4;
const CACHE_WRITTEN: usize = 2;

async fn anthropic_fake() -> FakeUpstream {
    FakeUpstream::start(FakeConfig {
        api_key: Some("ant-upstream-key".into()),
        provider: Provider::Anthropic {
            version: SDK_API_VERSION.into(),
        },
        cached_tokens: CACHED,
        cache_creation_tokens: CACHE_WRITTEN,
        ..FakeConfig::default()
    })
    .await
    .unwrap()
}

async fn openai_fake() -> FakeUpstream {
    FakeUpstream::start(FakeConfig {
        cached_tokens: CACHED,
        ..FakeConfig::default()
    })
    .await
    .unwrap()
}

async fn start(up: &FakeUpstream, anthropic: bool) -> Gateway {
    let mut b = gateway().models(&[MODEL]);
    if anthropic {
        b = b
            .pool("protocol: anthropic")
            .env("ANT_KEY", "ant-upstream-key");
    }
    let backend = Backend {
        api_key_env: anthropic.then_some("ANT_KEY"),
        ..Backend::new(up.url())
    };
    b.backend(backend).start().await
}

async fn run_sdk(gw: &Gateway, up: &FakeUpstream, cache_write: usize, count: u64) -> String {
    let key = gw.create_key("sdk", &[]);
    let limited = gw.create_key("sdk-limited", &["--rpm", "1"]);
    let (ok, out) = run_pytest(
        "test_anthropic_sdk.py",
        &[
            ("BM_BASE_URL", &gw.url("")),
            ("BM_API_KEY", &key),
            ("BM_LIMITED_KEY", &limited),
            ("BM_MODEL", MODEL),
            ("BM_CACHE_READ", &CACHED.to_string()),
            ("BM_CACHE_WRITE", &cache_write.to_string()),
            ("BM_COUNT_TOKENS", &count.to_string()),
            ("BM_UPSTREAM_URL", &up.url()),
        ],
    )
    .await;
    assert!(
        ok,
        "the Anthropic SDK tests failed:\n{out}\ngateway log:\n{}",
        gw.log()
    );
    assert!(out.contains("11 passed"), "{out}");
    out
}

/// The successful `messages` rows, in order: (stream, prompt, cached,
/// cache-written, completion).
fn answered(rows: &[UsageRow]) -> Vec<(bool, i64, i64, i64, i64)> {
    rows.iter()
        .filter(|r| r.endpoint == "messages" && r.status == 200)
        .map(|r| {
            (
                r.stream,
                r.prompt_tokens,
                r.cached_tokens,
                r.cache_write_tokens,
                r.completion_tokens,
            )
        })
        .collect()
}

/// Requests the SDK file makes: create, stream, max_tokens, two for the tool
/// round trip, count_tokens, wrong key, bearer, unknown model, bad request,
/// two rate-limited, the cut stream.
const SDK_REQUESTS: i64 = 13;

#[tokio::test]
async fn anthropic_sdk_through_to_an_anthropic_backend() {
    let up = anthropic_fake().await;
    let gw = start(&up, true).await;
    // The fake counts count_tokens' prompt as it counts messages'.
    run_sdk(&gw, &up, CACHE_WRITTEN, 8).await;
    let rows = gw.wait_usage_rows(SDK_REQUESTS).await;
    let (c, w) = (CACHED as i64, CACHE_WRITTEN as i64);
    let ok = answered(&rows);
    // create, stream, max_tokens 2, the tool call (stream), its answer, bearer,
    // the rate-limited key's first request.
    assert_eq!(ok[0], (false, 8, c, w, 5), "{rows:?}");
    assert_eq!(ok[1], (true, 8, c, w, 5), "{rows:?}");
    assert_eq!(ok[2], (false, 8, c, w, 2), "{rows:?}");
    assert_eq!((ok[3].0, ok[3].4), (true, 2), "a tool call: {rows:?}");
    assert!(ok.iter().all(|r| r.2 == c && r.3 == w), "{rows:?}");
    // Every request reached the Anthropic fake with its key and version.
    for r in up.requests() {
        assert_eq!(r.header("x-api-key"), Some("ant-upstream-key"));
        assert_eq!(r.header("anthropic-version"), Some(SDK_API_VERSION));
        assert!(r.path.starts_with("/v1/messages"), "{}", r.path);
    }
}

#[tokio::test]
async fn anthropic_sdk_translated_to_an_openai_backend() {
    let up = openai_fake().await;
    let gw = start(&up, false).await;
    let count = bluesminds::protocols::anthropic::to_chat::count_tokens(
        MODEL,
        br#"{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"Say hello to the tests"}]}"#,
    )
    .unwrap();
    run_sdk(&gw, &up, 0, count).await;
    let rows = gw.wait_usage_rows(SDK_REQUESTS).await;
    let c = CACHED as i64;
    let ok = answered(&rows);
    assert_eq!(ok[0], (false, 8, c, 0, 5), "{rows:?}");
    assert_eq!(ok[1], (true, 8, c, 0, 5), "{rows:?}");
    assert_eq!(ok[2], (false, 8, c, 0, 2), "{rows:?}");
    assert_eq!((ok[3].0, ok[3].4), (true, 2), "a tool call: {rows:?}");
    // Only Chat Completions reached the backend, and never the client's key.
    for r in up.requests() {
        assert_eq!(r.path, "/v1/chat/completions");
        assert_eq!(
            r.query, "",
            "Claude Code's ?beta=true stays with the gateway"
        );
        assert!(r.header("x-api-key").is_none());
    }
    let counted: Vec<&UsageRow> = rows
        .iter()
        .filter(|r| r.endpoint == "messages.count_tokens")
        .collect();
    assert_eq!(counted.len(), 1);
    assert_eq!(counted[0].status, 200);
}

fn claude_code_fixture() -> (Vec<(String, String)>, Vec<u8>) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/anthropic");
    let text = std::fs::read_to_string(dir.join("claude_code.headers.txt")).unwrap();
    let headers = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("POST "))
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    (
        headers,
        std::fs::read(dir.join("claude_code.request.json")).unwrap(),
    )
}

/// What Claude Code sends (`?beta=true`, its betas, system blocks with
/// cache_control, tools, metadata, thinking, a stream) reaches an
/// OpenAI-compatible backend as the Chat request of the golden fixture, and
/// comes back as Anthropic's stream.
#[tokio::test]
async fn claude_codes_request_goes_through_to_an_openai_backend() {
    let up = openai_fake().await;
    let gw = gateway()
        .models(&["claude-sonnet-4-5-20250929"])
        .backend(Backend::new(up.url()))
        .start()
        .await;
    let key = gw.create_key("claude-code", &[]);
    let (headers, body) = claude_code_fixture();
    let mut req = common::client()
        .post(gw.url("/v1/messages?beta=true"))
        .header("x-api-key", &key)
        .body(body);
    for (k, v) in &headers {
        req = req.header(k, v);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200, "{}", gw.log());
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let text = resp.text().await.unwrap();
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(
        &names[..3],
        ["message_start", "ping", "content_block_start"]
    );
    assert_eq!(
        &names[names.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"],
        "{text}"
    );

    let sent = &up.requests()[0];
    assert_eq!(sent.path, "/v1/chat/completions");
    let expected: Value = serde_json::from_slice(
        &std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/anthropic/claude_code.request.chat.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(sent.json().unwrap(), expected);
    // Anthropic's headers stay with the gateway.
    for h in ["anthropic-beta", "anthropic-version", "x-api-key", "x-app"] {
        assert!(sent.header(h).is_none(), "{h} reached the OpenAI backend");
    }
    let rows = gw.wait_usage_rows(1).await;
    assert_eq!((rows[0].status, rows[0].stream), (200, true));
    assert!(rows[0].prompt_tokens > 20, "{:?}", rows[0]);
}

/// An OpenAI backend that dies mid-answer: what reaches the client never
/// ends as a whole Message, whether the gateway gets to send its `error`
/// event or the connection is cut.
#[tokio::test]
async fn a_translated_stream_cut_by_the_backend_never_completes() {
    use futures_util::StreamExt;
    let up = openai_fake().await;
    up.set_mode(fake_upstream::Mode::DieMidStream { after_chunks: 2 });
    let gw = start(&up, false).await;
    let key = gw.create_key("cut", &[]);
    let resp = common::client()
        .post(gw.url("/v1/messages"))
        .header("x-api-key", &key)
        .header("anthropic-version", "2023-06-01")
        .json(&serde_json::json!({
            "model": MODEL, "max_tokens": 100, "stream": true,
            "messages": [{"role": "user", "content": "Say hello to the tests"}],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = Vec::new();
    let mut chunks = resp.bytes_stream();
    while let Some(Ok(chunk)) = chunks.next().await {
        body.extend_from_slice(&chunk);
    }
    let text = String::from_utf8_lossy(&body);
    println!("{text}");
    assert!(text.contains("\"text\":\"from \""), "{text}");
    assert!(!text.contains("message_stop"), "{text}");
    assert!(!text.contains("message_delta"), "{text}");
}

/// The real Claude Code CLI: `BLUESMINDS_CLAUDE_CODE`, else the one `.ci/run`
/// installs (`npm install --prefix target/claude-code-cli
/// @anthropic-ai/claude-code@2.1.37`, the last version that runs on Node 20).
fn claude_code_cli() -> Option<std::path::PathBuf> {
    common::npm_cli("BLUESMINDS_CLAUDE_CODE", "claude-code-cli", "claude")
}

#[tokio::test]
async fn claude_code_cli_through_the_gateway_to_an_openai_backend() {
    claude_code_print(false).await;
}

#[tokio::test]
async fn claude_code_cli_through_the_gateway_to_an_anthropic_backend() {
    claude_code_print(true).await;
}

/// `claude -p` with the environment of the README against the gateway, in a
/// fresh home (no login); every model tier named as the pool's model.
async fn claude_code_print(anthropic: bool) {
    let Some(claude) = claude_code_cli() else {
        eprintln!("no Claude Code CLI (BLUESMINDS_CLAUDE_CODE, target/claude-code-cli): skipped");
        return;
    };
    let up = if anthropic {
        FakeUpstream::start(FakeConfig {
            api_key: Some("ant-upstream-key".into()),
            provider: Provider::Anthropic {
                version: "2023-06-01".into(),
            },
            ..FakeConfig::default()
        })
        .await
        .unwrap()
    } else {
        openai_fake().await
    };
    let gw = start(&up, anthropic).await;
    let key = gw.create_key("claude-code", &[]);
    let home = gw.dir.path().join("home");
    let work = gw.dir.path().join("work");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let base = gw.url("");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(claude)
            // Naming a tool makes the fakes call it (see their docs): Claude
            // Code runs Glob and sends its result back, a whole round trip.
            .args([
                "-p",
                "Use Glob to find the files, then say hello",
                "--model",
                MODEL,
            ])
            .current_dir(&work)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &home)
            .env("ANTHROPIC_BASE_URL", base)
            .env("ANTHROPIC_AUTH_TOKEN", &key)
            .env("ANTHROPIC_DEFAULT_OPUS_MODEL", MODEL)
            .env("ANTHROPIC_DEFAULT_SONNET_MODEL", MODEL)
            .env("ANTHROPIC_DEFAULT_HAIKU_MODEL", MODEL)
            .env("ANTHROPIC_SMALL_FAST_MODEL", MODEL)
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .env("DISABLE_AUTOUPDATER", "1")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let sent = up.requests();
    for r in &sent {
        println!(
            "{} {}?{}\n{:?}\n{}",
            r.method,
            r.path,
            r.query,
            r.headers,
            String::from_utf8_lossy(&r.body)
        );
    }
    assert!(
        out.status.success() && stdout.contains("Hello from the fake upstream"),
        "claude -p failed ({}):\n{stdout}\n{stderr}\ngateway log:\n{}",
        out.status,
        gw.log()
    );
    let want = if anthropic {
        "/v1/messages"
    } else {
        "/v1/chat/completions"
    };
    assert!(sent.len() >= 2 && sent.iter().all(|r| r.path == want));
    // The tool call went to Claude Code and its result came back.
    let last = String::from_utf8_lossy(&sent.last().unwrap().body).into_owned();
    let result = if anthropic {
        "\"tool_result\""
    } else {
        "\"role\":\"tool\""
    };
    assert!(last.contains(result), "{last}");
    let rows = gw.wait_usage_rows(sent.len() as i64).await;
    assert!(
        rows.iter()
            .all(|r| r.status == 200 && r.completion_tokens > 0),
        "{rows:?}"
    );
}
