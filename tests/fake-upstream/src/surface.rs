//! The rest of the OpenAI surface: images, audio, moderations, and the rerank
//! endpoint LiteLLM serves. Shapes from OpenAI's public API reference
//! (https://platform.openai.com/docs/api-reference/images/create,
//! .../audio/createSpeech, .../audio/createTranscription,
//! .../audio/createTranslation, .../moderations/create) and, for rerank, from
//! Cohere's (https://docs.cohere.com/reference/rerank), whose shape LiteLLM's
//! `/v1/rerank` answers in (https://docs.litellm.ai/docs/rerank).

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::state::unix_now;
use crate::wire::{count_words, json_value, ApiError};

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| Box::new(ApiError::bad_json(&e).into_response()))
}

#[derive(Deserialize)]
struct ImageRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    n: Option<u32>,
    #[serde(default)]
    response_format: Option<String>,
}

/// `POST /v1/images/generations`: `{"created", "data": [...]}`; gpt-image-1
/// always answers `b64_json` and reports `usage` in input/output tokens,
/// the DALL·E models answer `url` unless `response_format` says `b64_json`.
pub async fn images(body: Bytes) -> Response {
    let req: ImageRequest = match parse(&body) {
        Ok(r) => r,
        Err(e) => return *e,
    };
    let Some(prompt) = req.prompt.filter(|p| !p.is_empty()) else {
        return ApiError::missing_param("prompt").into_response();
    };
    let model = req.model.unwrap_or_else(|| "dall-e-2".into());
    let n = req.n.unwrap_or(1);
    if !(1..=10).contains(&n) {
        return ApiError {
            param: Some("n"),
            ..ApiError::invalid_request(format!("{n} is not a valid value for 'n'"))
        }
        .into_response();
    }
    let gpt_image = model.starts_with("gpt-image");
    let b64 = gpt_image || req.response_format.as_deref() == Some("b64_json");
    let data: Vec<Value> = (0..n)
        .map(|i| {
            if b64 {
                // A PNG signature and the prompt: enough to tell images apart.
                let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
                png.extend_from_slice(format!("{i}:{prompt}").as_bytes());
                json!({"b64_json": base64::engine::general_purpose::STANDARD.encode(png)})
            } else {
                json!({"url": format!("https://fake-upstream.invalid/images/{i}.png"), "revised_prompt": prompt})
            }
        })
        .collect();
    let mut answer = json!({"created": unix_now(), "data": data});
    if gpt_image {
        let input = count_words(&prompt) as u64;
        let output = 272 * u64::from(n);
        answer["usage"] = json!({
            "total_tokens": input + output,
            "input_tokens": input,
            "output_tokens": output,
            "input_tokens_details": {"text_tokens": input, "image_tokens": 0}
        });
    }
    json_value(StatusCode::OK, &answer)
}

#[derive(Deserialize)]
struct SpeechRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    input: Option<String>,
    #[serde(default)]
    voice: Option<String>,
    #[serde(default)]
    response_format: Option<String>,
}

/// The bytes `/v1/audio/speech` answers for `model` and `input`: an MP3 frame
/// header, then every byte value (so a gateway that treats them as text breaks
/// them), then text that looks like JSON and SSE naming the model, repeated
/// past one read buffer.
pub fn speech_bytes(model: &str, input: &str) -> Vec<u8> {
    let mut out = b"\xff\xfb\x90\x64".to_vec();
    for round in 0..200u32 {
        out.extend((0..=255u8).map(|b| b.wrapping_add(round as u8)));
        out.extend_from_slice(
            format!("data: {{\"model\":\"{model}\",\"usage\":{{\"prompt_tokens\":9}}}}\n\n")
                .as_bytes(),
        );
        out.extend_from_slice(input.as_bytes());
    }
    out
}

/// `POST /v1/audio/speech`: the audio file's bytes, chunked, with the format's
/// content type (`mp3` by default).
pub async fn speech(body: Bytes) -> Response {
    let req: SpeechRequest = match parse(&body) {
        Ok(r) => r,
        Err(e) => return *e,
    };
    let Some(model) = req.model.filter(|m| !m.is_empty()) else {
        return ApiError::missing_param("model").into_response();
    };
    let Some(input) = req.input else {
        return ApiError::missing_param("input").into_response();
    };
    if req.voice.is_none() {
        return ApiError::missing_param("voice").into_response();
    }
    let content_type = match req.response_format.as_deref().unwrap_or("mp3") {
        "mp3" => "audio/mpeg",
        "opus" => "audio/opus",
        "aac" => "audio/aac",
        "flac" => "audio/flac",
        "wav" => "audio/wav",
        "pcm" => "audio/pcm",
        other => {
            return ApiError {
                param: Some("response_format"),
                ..ApiError::invalid_request(format!("Invalid response_format: '{other}'"))
            }
            .into_response()
        }
    };
    let audio = Bytes::from(speech_bytes(&model, &input));
    let chunks: Vec<Result<Bytes, std::io::Error>> = audio
        .chunks(7000)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let mut resp = Response::new(Body::from_stream(futures_util::stream::iter(chunks)));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// The text parts of a `multipart/form-data` body, by name, and whether it
/// has a `file` part. Strict like OpenAI's: CRLF framing, a boundary from the
/// content type, a closing delimiter.
type Fields = (Vec<(String, String)>, bool);

fn form_fields(headers: &HeaderMap, body: &[u8]) -> Result<Fields, Box<Response>> {
    let bad = |why: &str| Box::new(ApiError::invalid_request(why.to_string()).into_response());
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !ct.to_ascii_lowercase().starts_with("multipart/form-data") {
        return Err(bad(
            "Invalid Content-Type header, expected multipart/form-data",
        ));
    }
    let boundary = ct
        .split(';')
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| k.eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim_matches('"').to_string())
        .ok_or_else(|| bad("multipart body has no boundary"))?;
    let delimiter = format!("--{boundary}");
    let text = String::from_utf8_lossy(body);
    let Some(rest) = text.strip_prefix(&delimiter) else {
        return Err(bad("multipart body does not start with its boundary"));
    };
    if !rest.trim_end().ends_with(&format!("\r\n{delimiter}--")) {
        return Err(bad("multipart body has no closing boundary"));
    }
    let mut fields = Vec::new();
    let mut file = false;
    for part in rest.split(&format!("\r\n{delimiter}")) {
        let Some(part) = part.strip_prefix("\r\n") else {
            continue; // the closing `--`
        };
        let Some((head, value)) = part.split_once("\r\n\r\n") else {
            return Err(bad("multipart part has no header end"));
        };
        let disposition = head
            .split("\r\n")
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(k, _)| k.trim().eq_ignore_ascii_case("content-disposition"))
            })
            .map(|(_, v)| v.to_string())
            .ok_or_else(|| bad("multipart part has no Content-Disposition"))?;
        let param = |name: &str| {
            disposition.split(';').find_map(|p| {
                let (k, v) = p.trim().split_once('=')?;
                (k == name).then(|| v.trim_matches('"').to_string())
            })
        };
        let name = param("name").ok_or_else(|| bad("multipart part has no name"))?;
        if name == "file" && param("filename").is_some() {
            file = true;
        } else {
            fields.push((name, value.to_string()));
        }
    }
    Ok((fields, file))
}

/// `POST /v1/audio/transcriptions` and `/v1/audio/translations`: a form with
/// `file` and `model`. `json` answers `{"text"}` (gpt-4o-transcribe with its
/// token `usage`, whisper-1 with a `duration` one), `text` the bare text.
async fn audio_text(headers: HeaderMap, body: Bytes, translate: bool) -> Response {
    let (fields, file) = match form_fields(&headers, &body) {
        Ok(f) => f,
        Err(e) => return *e,
    };
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let Some(model) = field("model").filter(|m| !m.is_empty()) else {
        return ApiError::missing_param("model").into_response();
    };
    if !file {
        return ApiError::missing_param("file").into_response();
    }
    let text = if translate {
        "Hello from the translated audio."
    } else {
        "Hello from the transcribed audio."
    };
    match field("response_format").unwrap_or("json") {
        "text" => {
            let mut resp = Response::new(Body::from(format!("{text}\n")));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            resp
        }
        "json" => {
            let mut answer = json!({"text": text});
            if model.starts_with("gpt-4o") && !translate {
                let audio = (body.len() / 1000) as u64 + 1;
                let output = count_words(text) as u64;
                answer["usage"] = json!({
                    "type": "tokens",
                    "input_tokens": audio,
                    "input_token_details": {"text_tokens": 0, "audio_tokens": audio},
                    "output_tokens": output,
                    "total_tokens": audio + output
                });
            } else if !translate {
                answer["usage"] = json!({"type": "duration", "seconds": 3});
            }
            json_value(StatusCode::OK, &answer)
        }
        other => ApiError {
            param: Some("response_format"),
            ..ApiError::invalid_request(format!("Invalid response_format: '{other}'"))
        }
        .into_response(),
    }
}

pub async fn transcriptions(headers: HeaderMap, body: Bytes) -> Response {
    audio_text(headers, body, false).await
}

pub async fn translations(headers: HeaderMap, body: Bytes) -> Response {
    audio_text(headers, body, true).await
}

#[derive(Deserialize)]
struct ModerationRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    input: Option<Value>,
}

const CATEGORIES: [&str; 4] = ["harassment", "hate", "self-harm", "violence"];

/// `POST /v1/moderations`: one result per input; nothing is flagged unless
/// it says `kill`.
pub async fn moderations(body: Bytes) -> Response {
    let req: ModerationRequest = match parse(&body) {
        Ok(r) => r,
        Err(e) => return *e,
    };
    let inputs: Vec<String> = match req.input {
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => s.clone(),
                other => other["text"].as_str().unwrap_or_default().to_string(),
            })
            .collect(),
        _ => return ApiError::missing_param("input").into_response(),
    };
    let results: Vec<Value> = inputs
        .iter()
        .map(|text| {
            let violent = text.contains("kill");
            let categories: serde_json::Map<String, Value> = CATEGORIES
                .iter()
                .map(|c| (c.to_string(), json!(violent && *c == "violence")))
                .collect();
            let scores: serde_json::Map<String, Value> = CATEGORIES
                .iter()
                .map(|c| {
                    let score = if violent && *c == "violence" {
                        0.97
                    } else {
                        0.0001
                    };
                    (c.to_string(), json!(score))
                })
                .collect();
            json!({"flagged": violent, "categories": categories, "category_scores": scores})
        })
        .collect();
    json_value(
        StatusCode::OK,
        &json!({
            "id": format!("modr-{}", unix_now()),
            "model": req.model.unwrap_or_else(|| "omni-moderation-latest".into()),
            "results": results,
        }),
    )
}

#[derive(Deserialize)]
struct RerankRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    documents: Option<Vec<Value>>,
    #[serde(default)]
    top_n: Option<usize>,
    #[serde(default)]
    return_documents: Option<bool>,
}

/// `POST /v1/rerank`: documents ordered by the words they share with the
/// query; `meta.billed_units.search_units` as Cohere reports it.
pub async fn rerank(body: Bytes) -> Response {
    let req: RerankRequest = match parse(&body) {
        Ok(r) => r,
        Err(e) => return *e,
    };
    if req.model.as_deref().is_none_or(str::is_empty) {
        return ApiError::missing_param("model").into_response();
    }
    let Some(query) = req.query else {
        return ApiError::missing_param("query").into_response();
    };
    let Some(documents) = req.documents else {
        return ApiError::missing_param("documents").into_response();
    };
    let text = |d: &Value| {
        d.as_str()
            .or_else(|| d["text"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    let words: Vec<&str> = query.split_whitespace().collect();
    let mut scored: Vec<(usize, f64, String)> = documents
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let t = text(d);
            let shared = t.split_whitespace().filter(|w| words.contains(w)).count();
            (i, shared as f64 / (words.len().max(1) as f64), t)
        })
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.truncate(req.top_n.unwrap_or(documents.len()));
    let results: Vec<Value> = scored
        .into_iter()
        .map(|(index, score, t)| {
            let mut r = json!({"index": index, "relevance_score": score});
            if req.return_documents.unwrap_or(false) {
                r["document"] = json!({"text": t});
            }
            r
        })
        .collect();
    json_value(
        StatusCode::OK,
        &json!({
            "id": format!("rerank-{}", unix_now()),
            "results": results,
            "meta": {"billed_units": {"search_units": 1}},
        }),
    )
}
