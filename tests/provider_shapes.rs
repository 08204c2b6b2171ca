//! Backends that want their requests their own way (`backends[].auth`,
//! `headers`, `query`, `{model}` in the URL, `models`): an Azure-shaped and an
//! Anthropic-shaped fake upstream, each as strict as the real provider about
//! its key header, version and path, and model names that differ per backend.

mod common;

use common::{gateway, Gateway, SseReader};
use fake_upstream::{FakeConfig, FakeUpstream, Mode, Provider, RecordedRequest};
use serde_json::{json, Value};

async fn start(cfg: FakeConfig) -> FakeUpstream {
    FakeUpstream::start(cfg).await.unwrap()
}

async fn chat(gw: &Gateway, key: &str, model: &str, stream: bool) -> reqwest::Response {
    gw.chat(key, &common::chat_body(model, stream)).await
}

fn body_model(r: &RecordedRequest) -> String {
    r.json().unwrap()["model"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn an_azure_shaped_backend_gets_its_key_version_and_deployment_path() {
    let azure = start(FakeConfig {
        api_key: Some("azure-key-123".into()),
        provider: Provider::Azure {
            api_version: "2024-10-21".into(),
            deployments: vec![
                ("prod-4o".into(), "gpt-4o-2024-08-06".into()),
                ("prod-embed".into(), "text-embedding-3-small".into()),
            ],
        },
        ..FakeConfig::default()
    })
    .await;
    let url = format!("{}/openai/deployments/{{model}}", azure.url());
    // The right shape, and two wrong ones: a bearer key, no api-version.
    let pools = format!(
        "pools:
  - name: azure
    models: [gpt-4o, text-embedding-3-small]
    backends:
      - url: {url}
        api_key_env: AZURE_OPENAI_KEY
        auth: api-key
        query: {{api-version: \"2024-10-21\"}}
        models: {{gpt-4o: prod-4o, text-embedding-3-small: prod-embed}}
  - name: azure-bearer
    models: [bearer-4o]
    backends:
      - url: {url}
        api_key_env: AZURE_OPENAI_KEY
        query: {{api-version: \"2024-10-21\"}}
        models: {{bearer-4o: prod-4o}}
  - name: azure-unversioned
    models: [unversioned-4o]
    backends:
      - url: {url}
        api_key_env: AZURE_OPENAI_KEY
        auth: api-key
        models: {{unversioned-4o: prod-4o}}
"
    );
    let gw = gateway()
        .pools(&pools)
        .env("AZURE_OPENAI_KEY", "azure-key-123")
        .start()
        .await;
    let key = gw.create_key("azure", &[]);

    let resp = chat(&gw, &key, "gpt-4o", false).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Hello from the fake upstream"
    );
    // Azure answers with the model the deployment runs, as OpenAI answers
    // with a dated snapshot: that passes; only the deployment name would not.
    assert_eq!(v["model"], "gpt-4o-2024-08-06");
    let events = SseReader::new(chat(&gw, &key, "gpt-4o", true).await)
        .collect()
        .await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let emb = gw_post(
        &gw,
        &key,
        "/v1/embeddings",
        json!({"model": "text-embedding-3-small", "input": "one two"}),
    )
    .await;
    assert_eq!(emb.status(), 200);

    let seen = azure.requests();
    let paths: Vec<(&str, &str)> = seen
        .iter()
        .map(|r| (r.path.as_str(), r.query.as_str()))
        .collect();
    assert_eq!(
        paths,
        [
            (
                "/openai/deployments/prod-4o/chat/completions",
                "api-version=2024-10-21"
            ),
            (
                "/openai/deployments/prod-4o/chat/completions",
                "api-version=2024-10-21"
            ),
            (
                "/openai/deployments/prod-embed/embeddings",
                "api-version=2024-10-21"
            ),
        ]
    );
    for r in &seen {
        assert_eq!(r.header("api-key"), Some("azure-key-123"));
        assert_eq!(r.header("authorization"), None);
    }
    assert_eq!(body_model(&seen[0]), "prod-4o");

    // Azure refuses a key in the wrong header with 401: the gateway's key was
    // refused, not the client's (502 upstream_auth_error, see
    // upstream_failures.rs). Its 404 for a missing api-version reaches the
    // client as Azure said it.
    let refused = chat(&gw, &key, "bearer-4o", false).await;
    let e = common::error_of(refused).await;
    assert_eq!(e.status_and_code(), (502, "upstream_auth_error"), "{e:?}");
    let refused = chat(&gw, &key, "unversioned-4o", false).await;
    assert_eq!(refused.status(), 404);
    let v: Value = refused.json().await.unwrap();
    assert_eq!(v["error"]["message"], "Resource not found");

    let rows = gw.wait_usage_rows(5).await;
    let models: Vec<(&str, i64)> = rows
        .iter()
        .map(|r| (r.model.as_deref().unwrap(), r.status))
        .collect();
    assert_eq!(
        models,
        [
            ("gpt-4o", 200),
            ("gpt-4o", 200),
            ("text-embedding-3-small", 200),
            ("bearer-4o", 502),
            ("unversioned-4o", 404),
        ]
    );
    assert_eq!((rows[0].prompt_tokens, rows[0].completion_tokens), (8, 5));
}

async fn gw_post(gw: &Gateway, key: &str, path: &str, body: Value) -> reqwest::Response {
    gw.post_json(key, path, &body).await
}

#[tokio::test]
async fn an_anthropic_shaped_backend_gets_x_api_key_and_anthropic_version() {
    let anthropic = start(FakeConfig {
        api_key: Some("ant-key-456".into()),
        provider: Provider::Anthropic {
            version: "2023-06-01".into(),
        },
        ..FakeConfig::default()
    })
    .await;
    let url = format!("{}/v1", anthropic.url());
    let pools = format!(
        "pools:
  - name: anthropic
    models: [claude-x]
    forward_headers: [anthropic-version]
    backends:
      - url: {url}
        api_key_env: ANTHROPIC_KEY
        auth: x-api-key
        headers: {{anthropic-version: \"2023-06-01\", x-team: {{env: TEAM_HEADER}}}}
  - name: anthropic-unversioned
    models: [claude-unversioned]
    backends:
      - url: {url}
        api_key_env: ANTHROPIC_KEY
        auth: x-api-key
"
    );
    let gw = gateway()
        .pools(&pools)
        .env("ANTHROPIC_KEY", "ant-key-456")
        .env("TEAM_HEADER", "team-from-env")
        .start()
        .await;
    let key = gw.create_key("anthropic", &[]);

    let resp = chat(&gw, &key, "claude-x", false).await;
    assert_eq!(resp.status(), 200);
    let r = &anthropic.requests()[0];
    assert_eq!(r.header("x-api-key"), Some("ant-key-456"));
    assert_eq!(r.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(r.header("x-team"), Some("team-from-env"));
    assert_eq!(r.header("authorization"), None);

    // A client's own anthropic-version, forwarded by the pool, wins over the
    // configured one (here one the provider does not know: its 400 comes back).
    let resp = common::client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .header("anthropic-version", "2099-01-01")
        .json(&common::chat_body("claude-x", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        anthropic.requests()[1].header("anthropic-version"),
        Some("2099-01-01")
    );

    // Without the version header Anthropic refuses, in its own error shape.
    let resp = chat(&gw, &key, "claude-unversioned", false).await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(
        v["error"]["message"],
        "anthropic-version: header is required"
    );
    // The values never reach the log.
    let log = gw.log();
    assert!(!log.contains("ant-key-456") && !log.contains("team-from-env"));
}

/// One public name, two backends that call the model differently: each gets
/// its own name in the body, and the client sees the name it asked for in
/// JSON answers and in every stream chunk, whichever backend answered.
#[tokio::test]
async fn model_names_differ_per_backend_and_the_client_sees_its_own() {
    let renamed = start(FakeConfig::default()).await;
    let plain = start(FakeConfig::default()).await;
    let pools = format!(
        "pools:
  - name: main
    models: [gpt-4o-mini]
    backends:
      - url: {}
        models: {{gpt-4o-mini: vendor/mini-2024}}
      - url: {}
        priority: 1
",
        renamed.url(),
        plain.url()
    );
    let gw = gateway().pools(&pools).start().await;
    let key = gw.create_key("names", &[]);

    let resp = chat(&gw, &key, "gpt-4o-mini", false).await;
    assert!(resp.headers().get("content-length").is_none());
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["model"], "gpt-4o-mini");
    for include_usage in [false, true] {
        let mut body = common::chat_body("gpt-4o-mini", true);
        if include_usage {
            body["stream_options"] = json!({"include_usage": true});
        }
        let events = SseReader::new(gw.chat(&key, &body).await).collect().await;
        let chunks: Vec<Value> = events
            .iter()
            .filter(|e| *e != "[DONE]")
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        assert!(chunks.len() > 5, "{events:?}");
        assert!(
            chunks.iter().all(|c| c["model"] == "gpt-4o-mini"),
            "{events:?}"
        );
        assert_eq!(chunks.iter().any(|c| c["usage"].is_object()), include_usage);
    }
    let sent: Vec<String> = renamed.requests().iter().map(body_model).collect();
    assert_eq!(sent, ["vendor/mini-2024"; 3]);

    // The renamed backend fails: the next one gets the public name.
    renamed.set_mode(Mode::Fail(500));
    let v: Value = chat(&gw, &key, "gpt-4o-mini", false)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["model"], "gpt-4o-mini");
    assert_eq!(body_model(&plain.requests()[0]), "gpt-4o-mini");

    let rows = gw.wait_usage_rows(4).await;
    for r in &rows {
        assert_eq!((r.status, r.model.as_deref()), (200, Some("gpt-4o-mini")));
        assert_eq!((r.prompt_tokens, r.completion_tokens), (8, 5), "{r:?}");
    }
}
