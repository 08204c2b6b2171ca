//! The official `openai` Python SDK's Responses API (`client.responses`)
//! through the real gateway (tests/python/test_openai_responses.py), against
//! a backend that serves `/v1/responses` itself (`responses_api: native`:
//! bytes pass through) and against a chat-only one (the gateway translates);
//! plus a Codex CLI request, captured from the shape Codex sends, through the
//! translation. Usage rows must say what the answers said, cached and
//! reasoning tokens included.

mod common;

use common::python::run_pytest;
use common::{gateway, Backend};
use fake_upstream::{FakeConfig, FakeUpstream, Mode};
use serde_json::Value;

/// Requests test_openai_responses.py makes, the refused one last.
const REQUESTS: usize = 8;

async fn fake() -> FakeUpstream {
    FakeUpstream::start(FakeConfig {
        cached_tokens: 3,
        reasoning_tokens: 2,
        ..FakeConfig::default()
    })
    .await
    .unwrap()
}

async fn sdk_against(native: bool) {
    let up = fake().await;
    let lines: &[&str] = if native {
        &["responses_api: native"]
    } else {
        &[]
    };
    let gw = gateway()
        .backend_with(Backend::new(up.url()), lines)
        .start()
        .await;
    let key = gw.create_key("responses", &[]);
    let usage_out = gw.dir.path().join("usage.jsonl");
    let (ok, out) = run_pytest(
        "test_openai_responses.py",
        &[
            ("BM_BASE_URL", &gw.url("/v1")),
            ("BM_API_KEY", &key),
            ("BM_USAGE_OUT", usage_out.to_str().unwrap()),
        ],
    )
    .await;
    assert!(
        ok,
        "the SDK tests failed:\n{out}\ngateway log:\n{}",
        gw.log()
    );
    assert!(out.contains("7 passed"), "{out}");

    // The requests took the path the backend's setting says.
    let want_path = if native {
        "/v1/responses"
    } else {
        "/v1/chat/completions"
    };
    let seen = up.requests();
    assert!(
        seen.iter().all(|r| r.path == want_path),
        "{:?}",
        seen.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
    // The refused previous_response_id reaches a native backend (which
    // refuses it itself); the translation refuses it before any backend.
    assert_eq!(seen.len(), if native { REQUESTS } else { REQUESTS - 1 });

    let answers: Vec<Value> = std::fs::read_to_string(&usage_out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), REQUESTS);
    let rows = gw.wait_usage_rows(REQUESTS as i64).await;
    for (row, answer) in rows.iter().zip(&answers) {
        let id = &row.request_id;
        assert_eq!(row.endpoint, "responses");
        if answer.is_null() {
            assert_eq!(row.status, 400, "{id}");
            continue;
        }
        assert_eq!(row.status, 200, "{id}");
        let n = |k: &str| answer[k].as_i64().unwrap();
        assert_eq!(
            (
                row.prompt_tokens,
                row.completion_tokens,
                row.cached_tokens,
                row.reasoning_tokens
            ),
            (
                n("input_tokens"),
                n("output_tokens"),
                n("cached_tokens"),
                n("reasoning_tokens")
            ),
            "row {id} against the answer {answer}"
        );
        assert_eq!(
            row.cached_tokens, 3,
            "the fake's cached tokens reached the row"
        );
        assert_eq!(
            row.reasoning_tokens, 2,
            "the fake's reasoning tokens reached the row"
        );
    }
}

#[tokio::test]
async fn sdk_responses_passthrough_to_a_native_backend() {
    sdk_against(true).await;
}

#[tokio::test]
async fn sdk_responses_translated_for_a_chat_backend() {
    sdk_against(false).await;
}

/// What the Codex CLI sends (tests/fixtures/responses/codex.request.json:
/// instructions, developer and user messages, a reasoning item, a function
/// call and its output, function tools, `store: false`, `include`,
/// `prompt_cache_key`...) goes through to a chat-only backend, and the
/// events come back as Codex reads them.
#[tokio::test]
async fn codex_request_through_the_translation() {
    let up = fake().await;
    let gw = gateway()
        .backend(Backend::new(up.url()))
        .models(&["gpt-5-codex"])
        .start()
        .await;
    let key = gw.create_key("codex", &[]);
    let body = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/responses/codex.request.json"),
    )
    .unwrap();
    let resp = reqwest::Client::new()
        .post(gw.url("/v1/responses"))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", gw.log());
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let text = resp.text().await.unwrap();
    let events: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types.first(), Some(&"response.created"));
    assert_eq!(types.last(), Some(&"response.completed"));
    let fin = &events.last().unwrap()["response"];
    assert_eq!(fin["model"], "gpt-5-codex");
    assert_eq!(
        fin["output"][0]["content"][0]["text"],
        "Hello from the fake upstream"
    );
    assert_eq!(fin["usage"]["input_tokens_details"]["cached_tokens"], 3);

    // The backend got the chat request of the golden fixture, with the
    // gateway's own headers.
    let sent = up.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].path, "/v1/chat/completions");
    let want: Value = serde_json::from_slice(
        &std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/responses/codex.chat.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(sent[0].json().unwrap(), want);
    let rows = gw.wait_usage_rows(1).await;
    assert_eq!(rows[0].endpoint, "responses");
    assert_eq!(
        (rows[0].prompt_tokens, rows[0].completion_tokens),
        (
            fin["usage"]["input_tokens"].as_i64().unwrap(),
            fin["usage"]["output_tokens"].as_i64().unwrap()
        )
    );
}

/// A chat stream the backend cuts mid-answer ends, for the Responses client,
/// with `response.failed` (retryable), not with a silent end; the record
/// keeps the tokens sent so far.
#[tokio::test]
async fn cut_stream_ends_with_response_failed() {
    let up = fake().await;
    up.set_mode(Mode::DieMidStream { after_chunks: 2 });
    let gw = gateway().backend(Backend::new(up.url())).start().await;
    let key = gw.create_key("cut", &[]);
    let resp = reqwest::Client::new()
        .post(gw.url("/v1/responses"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"model": "gpt-4o-mini", "input": "hi", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The body ends cleanly after the last event: the client can read it
    // like any other answer.
    let mut body = Vec::new();
    let mut resp = resp;
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(e) => panic!(
                "the body failed after {:?}: {e}",
                String::from_utf8_lossy(&body)
            ),
        }
    }
    let text = String::from_utf8_lossy(&body);
    let types: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        types
            .iter()
            .filter(|t| *t == "response.output_text.delta")
            .count(),
        2,
        "{text}"
    );
    assert_eq!(
        types.last().map(String::as_str),
        Some("response.failed"),
        "{text}\n{}",
        gw.log()
    );
    let rows = gw.wait_usage_rows(1).await;
    assert!(rows[0].completion_tokens > 0, "{:?}", rows[0]);
}

/// A chat backend's error stays OpenAI's error JSON (the Responses API's
/// error shape too), status and body as the backend sent them.
#[tokio::test]
async fn backend_errors_reach_the_client_as_openai_errors() {
    let up = fake().await;
    up.set_mode(Mode::Fail(400));
    let gw = gateway().backend(Backend::new(up.url())).start().await;
    let key = gw.create_key("errors", &[]);
    for stream in [false, true] {
        let resp = reqwest::Client::new()
            .post(gw.url("/v1/responses"))
            .bearer_auth(&key)
            .json(&serde_json::json!({"model": "gpt-4o-mini", "input": "hi", "stream": stream}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
        assert_eq!(resp.headers()["content-type"], "application/json");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["type"], "server_error", "{body}");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("The server had an error"));
    }
}

/// The real Codex CLI: `BLUESMINDS_CODEX`, else the one `.ci/run` installs
/// (`npm install --prefix target/codex-cli @openai/codex@0.169.0`); `None`
/// where neither is there (the tests that need it then say so and pass).
fn codex_cli() -> Option<std::path::PathBuf> {
    if let Some(path) = std::env::var_os("BLUESMINDS_CODEX") {
        return Some(path.into());
    }
    let installed = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/codex-cli/node_modules/.bin/codex");
    installed.exists().then_some(installed)
}

#[tokio::test]
async fn codex_cli_through_the_gateway_to_a_chat_backend() {
    codex_exec(false).await;
}

#[tokio::test]
async fn codex_cli_through_the_gateway_to_a_responses_backend() {
    codex_exec(true).await;
}

/// `codex exec` with the config.toml of the README against the gateway;
/// `native`: the backend serves `/v1/responses` itself (and the request
/// Codex sent is printed as the backend received it).
async fn codex_exec(native: bool) {
    let Some(codex) = codex_cli() else {
        eprintln!("no Codex CLI (BLUESMINDS_CODEX, target/codex-cli): skipped");
        return;
    };
    let up = fake().await;
    let lines: &[&str] = if native {
        &["responses_api: native"]
    } else {
        &[]
    };
    let gw = gateway()
        .backend_with(Backend::new(up.url()), lines)
        .models(&["qwen3-coder"])
        .start()
        .await;
    let key = gw.create_key("codex-cli", &[]);
    let home = gw.dir.path().join("codex-home");
    let work = gw.dir.path().join("work");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(
        home.join("config.toml"),
        format!(
            "model = \"qwen3-coder\"\nmodel_provider = \"bluesminds\"\nweb_search = \"disabled\"\n\n[model_providers.bluesminds]\nname = \"BluesMinds\"\nbase_url = \"{}\"\nenv_key = \"BLUESMINDS_API_KEY\"\nwire_api = \"responses\"\n",
            gw.url("/v1")
        ),
    )
    .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(codex)
            .args(["exec", "--skip-git-repo-check", "Say hello"])
            .current_dir(&work)
            .env("CODEX_HOME", &home)
            .env("BLUESMINDS_API_KEY", &key)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let sent = up.requests();
    if native {
        for r in &sent {
            println!(
                "{} {}\n{}",
                r.method,
                r.path,
                String::from_utf8_lossy(&r.body)
            );
        }
    }
    assert!(
        out.status.success() && stdout.contains("Hello from the fake upstream"),
        "codex exec failed ({}):\n{stdout}\n{stderr}\ngateway log:\n{}",
        out.status,
        gw.log()
    );
    let want = if native {
        "/v1/responses"
    } else {
        "/v1/chat/completions"
    };
    assert!(!sent.is_empty() && sent.iter().all(|r| r.path == want));
    let rows = gw.wait_usage_rows(sent.len() as i64).await;
    assert!(rows
        .iter()
        .all(|r| r.status == 200 && r.completion_tokens > 0));
}
