//! The rest of the OpenAI surface through the real binary: images, audio
//! (speech, transcriptions, translations), moderations and rerank go to the
//! pool of their model on their own path, count as requests with the tokens
//! only an answer reports, and obey a key's model list like chat.

mod common;

use common::{fake, gateway, Backend, Gateway};
use serde_json::{json, Value};

const MODELS: &[&str] = &[
    "gpt-4o-mini",
    "gpt-image-1",
    "dall-e-3",
    "tts-1",
    "whisper-1",
    "gpt-4o-transcribe",
    "omni-moderation-latest",
    "rerank-english-v3.0",
];

const BOUNDARY: &str = "----bm-test-7f3a";

/// A `multipart/form-data` body as the openai SDK sends it: a file part with
/// bytes that are not text, then the text fields.
fn form(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(
        format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"hello.mp3\"\r\nContent-Type: audio/mpeg\r\n\r\n").as_bytes(),
    );
    out.extend_from_slice(b"\xff\xfb\x90\x64\x00\r\n--not-the-boundary\r\n\x01\x02");
    out.extend_from_slice(&[0x80; 3000]);
    for (name, value) in fields {
        out.extend_from_slice(
            format!("\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}").as_bytes(),
        );
    }
    out.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    out
}

async fn post_form(gw: &Gateway, key: &str, path: &str, body: Vec<u8>) -> reqwest::Response {
    reqwest::Client::new()
        .post(gw.url(path))
        .bearer_auth(key)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn every_endpoint_reaches_its_upstream_path_and_is_recorded() {
    let up = fake().await;
    let gw = gateway()
        .backend(Backend::new(up.url()))
        .models(MODELS)
        .start()
        .await;
    let key = gw.create_key("surface", &[]);

    // Images: gpt-image-1 reports its tokens; DALL·E reports none.
    let image = json!({"model": "gpt-image-1", "prompt": "a blue whale in a teacup"});
    let resp = gw.post_json(&key, "/v1/images/generations", &image).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert!(v["data"][0]["b64_json"].is_string(), "{v}");
    assert_eq!(v["usage"]["input_tokens"], 6);
    let dalle = json!({"model": "dall-e-3", "prompt": "a whale", "response_format": "url"});
    let resp = gw.post_json(&key, "/v1/images/generations", &dalle).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert!(v["data"][0]["url"].is_string(), "{v}");

    // Transcriptions: gpt-4o-transcribe reports tokens; whisper-1 as text.
    let resp = post_form(
        &gw,
        &key,
        "/v1/audio/transcriptions",
        form(&[("model", "gpt-4o-transcribe"), ("language", "en")]),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["text"], "Hello from the transcribed audio.");
    let resp = post_form(
        &gw,
        &key,
        "/v1/audio/transcriptions",
        form(&[("model", "whisper-1"), ("response_format", "text")]),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.text().await.unwrap(),
        "Hello from the transcribed audio.\n"
    );
    let sent = form(&[("model", "whisper-1")]);
    let resp = post_form(&gw, &key, "/v1/audio/translations", sent.clone()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["text"],
        "Hello from the translated audio."
    );

    let moderation =
        json!({"model": "omni-moderation-latest", "input": ["hello", "I will kill it"]});
    let resp = gw.post_json(&key, "/v1/moderations", &moderation).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["results"][0]["flagged"], false);
    assert_eq!(v["results"][1]["flagged"], true);
    assert_eq!(v["model"], "omni-moderation-latest");

    let rerank = json!({
        "model": "rerank-english-v3.0",
        "query": "blue whale",
        "documents": ["a red fox", "the blue whale sings", "whale"],
        "top_n": 2,
    });
    let resp = gw.post_json(&key, "/v1/rerank", &rerank).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    let order: Vec<u64> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert_eq!(order, [1, 2]);

    // Each went to its own path, with the client's body or form as sent.
    let paths: Vec<String> = up.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        [
            "/v1/images/generations",
            "/v1/images/generations",
            "/v1/audio/transcriptions",
            "/v1/audio/transcriptions",
            "/v1/audio/translations",
            "/v1/moderations",
            "/v1/rerank",
        ]
    );
    let translation = &up.requests()[4];
    assert_eq!(
        &translation.body[..],
        &sent[..],
        "the form went byte for byte"
    );
    assert_eq!(
        translation.header("content-type"),
        Some(format!("multipart/form-data; boundary={BOUNDARY}").as_str())
    );
    assert_eq!(up.requests()[6].json().unwrap(), rerank);

    // One record per request, named for its endpoint; tokens only where the
    // answer reported them. (Records are written as requests end, not
    // necessarily in order.)
    let rows = gw.wait_usage_rows(7).await;
    let mut seen: Vec<(&str, &str, i64, i64, &str)> = rows
        .iter()
        .map(|r| {
            (
                r.endpoint.as_str(),
                r.model.as_deref().unwrap(),
                r.prompt_tokens,
                r.completion_tokens,
                r.usage_source.as_str(),
            )
        })
        .collect();
    seen.sort();
    let transcribed = (
        "audio.transcriptions",
        "gpt-4o-transcribe",
        4,
        5,
        "upstream",
    );
    let image = ("images.generations", "gpt-image-1", 6, 272, "upstream");
    assert_eq!(
        seen,
        [
            transcribed,
            ("audio.transcriptions", "whisper-1", 0, 0, "none"),
            ("audio.translations", "whisper-1", 0, 0, "none"),
            ("images.generations", "dall-e-3", 0, 0, "none"),
            image,
            ("moderations", "omni-moderation-latest", 0, 0, "none"),
            ("rerank", "rerank-english-v3.0", 0, 0, "none"),
        ]
    );
    assert!(rows.iter().all(|r| r.status == 200 && r.key_id.is_some()));
}

/// The audio crosses untouched, even from a backend with its own name for
/// the model (whose JSON answers get the public name back) and with bytes
/// that look like a usage report.
#[tokio::test]
async fn speech_arrives_byte_for_byte() {
    let up = fake().await;
    let gw = gateway()
        .backend_with(Backend::new(up.url()), &["models: {tts-1: tts-1-hd}"])
        .models(MODELS)
        .start()
        .await;
    let key = gw.create_key("speech", &[]);
    let input = "The quick brown fox";
    let body = json!({"model": "tts-1", "input": input, "voice": "alloy"});
    let resp = gw.post_json(&key, "/v1/audio/speech", &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "audio/mpeg");
    let audio = resp.bytes().await.unwrap();
    let expected = fake_upstream::surface::speech_bytes("tts-1-hd", input);
    assert!(expected.len() > 64 * 1024, "spans many reads");
    assert!(
        audio[..] == expected[..],
        "the audio changed on the way ({} bytes, {} expected)",
        audio.len(),
        expected.len()
    );
    assert_eq!(up.requests()[0].path, "/v1/audio/speech");
    assert_eq!(up.requests()[0].json().unwrap()["model"], "tts-1-hd");
    let rows = gw.wait_usage_rows(1).await;
    assert_eq!(rows[0].endpoint, "audio.speech");
    assert_eq!(rows[0].model.as_deref(), Some("tts-1"));
    assert_eq!((rows[0].prompt_tokens, rows[0].completion_tokens), (0, 0));
    assert_eq!(rows[0].usage_source, "none");
}

#[tokio::test]
async fn a_form_routes_by_its_model_field_and_a_missing_one_is_refused() {
    let whisper = fake().await;
    let other = fake().await;
    // Two pools: the form's model picks the upstream, and the backend's own
    // name for the model goes into the form.
    let gw = gateway()
        .pools(&format!(
            "pools:\n  - name: audio\n    models: [whisper-1]\n    backends:\n      - url: \"{}\"\n        models: {{whisper-1: whisper-large-v3}}\n  - name: chat\n    models: [gpt-4o-mini, gpt-4o-transcribe]\n    backends:\n      - url: \"{}\"\n",
            whisper.url(),
            other.url()
        ))
        .start()
        .await;
    let key = gw.create_key("audio", &[]);

    let resp = post_form(
        &gw,
        &key,
        "/v1/audio/transcriptions",
        form(&[("model", "whisper-1")]),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(whisper.request_count(), 1);
    assert_eq!(other.request_count(), 0);
    let sent = &whisper.requests()[0].body;
    assert_eq!(&sent[..], &form(&[("model", "whisper-large-v3")])[..]);

    let resp = post_form(
        &gw,
        &key,
        "/v1/audio/transcriptions",
        form(&[("model", "gpt-4o-transcribe")]),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(other.request_count(), 1);

    for body in [
        form(&[("language", "en")]),
        form(&[("model", "")]),
        form(&[("model", "whisper-1"), ("model", "gpt-4o-transcribe")]),
    ] {
        let resp = post_form(&gw, &key, "/v1/audio/translations", body).await;
        assert_eq!(resp.status(), 400);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        assert_eq!(v["error"]["param"], "model", "{v}");
    }
    // JSON to a form endpoint is not a form.
    let resp = gw
        .post_json(
            &key,
            "/v1/audio/transcriptions",
            &json!({"model": "whisper-1"}),
        )
        .await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("multipart/form-data"),
        "{v}"
    );
    // A field that would make LiteLLM route elsewhere is refused, naming it.
    let resp = post_form(
        &gw,
        &key,
        "/v1/audio/transcriptions",
        form(&[("model", "whisper-1"), ("api_base", "http://elsewhere")]),
    )
    .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["param"],
        "api_base"
    );
    assert_eq!(whisper.request_count() + other.request_count(), 2);
}

#[tokio::test]
async fn a_key_limited_to_other_models_is_refused_on_every_endpoint() {
    let up = fake().await;
    let gw = gateway()
        .backend(Backend::new(up.url()))
        .models(MODELS)
        .start()
        .await;
    let key = gw.create_key("chat-only", &["--models", "gpt-4o-mini"]);
    let json_calls = [
        (
            "/v1/images/generations",
            json!({"model": "gpt-image-1", "prompt": "x"}),
        ),
        (
            "/v1/audio/speech",
            json!({"model": "tts-1", "input": "x", "voice": "alloy"}),
        ),
        (
            "/v1/moderations",
            json!({"model": "omni-moderation-latest", "input": "x"}),
        ),
        (
            "/v1/rerank",
            json!({"model": "rerank-english-v3.0", "query": "x", "documents": ["x"]}),
        ),
    ];
    for (path, body) in &json_calls {
        let resp = gw.post_json(&key, path, body).await;
        assert_eq!(resp.status(), 404, "{path}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "model_not_found", "{path}: {v}");
    }
    for path in ["/v1/audio/transcriptions", "/v1/audio/translations"] {
        let resp = post_form(&gw, &key, path, form(&[("model", "whisper-1")])).await;
        assert_eq!(resp.status(), 404, "{path}");
    }
    assert_eq!(up.request_count(), 0, "nothing reached the upstream");
    let rows = gw.wait_usage_rows(6).await;
    assert!(rows.iter().all(|r| r.status == 404));
    let mut endpoints: Vec<&str> = rows.iter().map(|r| r.endpoint.as_str()).collect();
    endpoints.sort();
    assert_eq!(
        endpoints,
        [
            "audio.speech",
            "audio.transcriptions",
            "audio.translations",
            "images.generations",
            "moderations",
            "rerank"
        ]
    );
}

/// The official openai SDK (tests/python/test_openai_surface.py): its
/// multipart uploads, binary speech answers and typed results.
#[tokio::test]
async fn the_official_openai_sdk_uses_every_endpoint() {
    let up = fake().await;
    let gw = gateway()
        .backend(Backend::new(up.url()))
        .models(MODELS)
        .start()
        .await;
    let key = gw.create_key("sdk", &[]);
    let (ok, out) = common::python::run_pytest(
        "test_openai_surface.py",
        &[("BM_BASE_URL", &gw.url("/v1")), ("BM_API_KEY", &key)],
    )
    .await;
    assert!(
        ok,
        "the SDK tests failed:\n{out}\ngateway log:\n{}",
        gw.log()
    );
    assert!(out.contains("5 passed"), "{out}");
    let rows = gw.wait_usage_rows(6).await;
    let mut endpoints: Vec<(&str, i64)> = rows
        .iter()
        .map(|r| (r.endpoint.as_str(), r.status))
        .collect();
    endpoints.sort();
    assert_eq!(
        endpoints,
        [
            ("audio.speech", 200),
            ("audio.transcriptions", 200),
            ("audio.transcriptions", 404),
            ("audio.translations", 200),
            ("images.generations", 200),
            ("moderations", 200),
        ]
    );
}
