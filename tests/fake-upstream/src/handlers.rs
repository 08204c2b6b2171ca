//! HTTP routes: the OpenAI endpoints, `/health`, and the `/_control/*`
//! endpoints that let out-of-process tests and benchmarks flip modes.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Extension, Router};
use base64::Engine as _;
use bytes::{BufMut, BytesMut};
use serde::{Deserialize, Serialize};

use crate::state::{unix_now, Plan, Shared};
use crate::surface;
use crate::wire::{
    json_response, json_value, ApiError, ChatRequest, ChatUsage, CompletionRequest,
    CompletionUsage, EmbeddingRequest, EmbeddingUsage, EncodingFormat, InputDigest, StreamFlag,
    StreamOptions, SYSTEM_FINGERPRINT,
};
use crate::{ConnId, ConnKill, Mode, Provider, RecordedRequest, EMBEDDING_DIMENSIONS};

/// Largest request body we buffer. Far above anything a test sends; the
/// point is that the *gateway's* limits are what tests exercise, not ours.
const MAX_BODY: usize = 64 << 20;

/// Upper bound on `dimensions`, matching OpenAI's largest embedding model.
const MAX_DIMENSIONS: usize = 3072;

type AppState = State<Arc<Shared>>;

/// Builds the router. `Mode` snapshots are taken once per request by
/// [`v1_gate`] and handed to handlers as an extension, so a mode switch
/// mid-request cannot make one response half normal, half failed.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/v1/models", openai(get(models)))
        .route("/v1/chat/completions", openai(post(chat_completions)))
        .route("/v1/completions", openai(post(completions)))
        .route("/v1/embeddings", openai(post(embeddings)))
        .route("/v1/messages", openai(post(crate::anthropic::messages)))
        .route(
            "/v1/messages/count_tokens",
            openai(post(crate::anthropic::count_tokens)),
        )
        .route("/v1/responses", openai(post(crate::responses::create)))
        .route("/v1/images/generations", openai(post(surface::images)))
        .route("/v1/audio/speech", openai(post(surface::speech)))
        .route(
            "/v1/audio/transcriptions",
            openai(post(surface::transcriptions)),
        )
        .route(
            "/v1/audio/translations",
            openai(post(surface::translations)),
        )
        .route("/v1/moderations", openai(post(surface::moderations)))
        .route("/v1/rerank", openai(post(surface::rerank)))
        // Azure OpenAI's paths; `v1_gate` lets them through only in that mode.
        .route(
            "/openai/deployments/{deployment}/chat/completions",
            openai(post(chat_completions)),
        )
        .route(
            "/openai/deployments/{deployment}/completions",
            openai(post(completions)),
        )
        .route(
            "/openai/deployments/{deployment}/embeddings",
            openai(post(embeddings)),
        )
        .route("/_control/mode", post(control_mode))
        .route("/_control/health", post(control_health))
        .route("/_control/chunk_delay", post(control_chunk_delay))
        .route("/_control/stats", get(control_stats))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(shared.clone(), v1_gate))
        // The gate buffers bodies itself (up to MAX_BODY).
        .layer(DefaultBodyLimit::disable())
        .with_state(shared)
}

/// Wrong method on a known path: OpenAI-shaped 405 instead of axum's empty one.
fn openai(route: MethodRouter<Arc<Shared>>) -> MethodRouter<Arc<Shared>> {
    route.fallback(|method: Method, uri: Uri| async move {
        ApiError::method_not_allowed(method.as_str(), uri.path())
    })
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(method.as_str(), uri.path())
}

// ---------------------------------------------------------------------------
// The /v1 gate: record, authenticate, apply the failure mode
// ---------------------------------------------------------------------------

/// Runs in front of every request; only `/v1/*` is affected.
///
/// Order matters: requests are recorded *before* auth and failure injection,
/// so tests can assert on what the gateway sent (including retries against a
/// failing upstream and the `Authorization` header of rejected requests).
async fn v1_gate(State(s): AppState, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let azure_path = path.starts_with("/openai/");
    if !(path.starts_with("/v1/") || azure_path) {
        return next.run(req).await;
    }
    if azure_path && !matches!(s.provider, Provider::Azure { .. }) {
        return ApiError::not_found(req.method().as_str(), path).into_response();
    }
    let (mut parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                ..ApiError::invalid_request("request body too large or unreadable")
            }
            .into_response()
        }
    };
    s.record(|| RecordedRequest {
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.clone(),
        version: format!("{:?}", parts.version),
        connection: parts.extensions.get::<ConnId>().map_or(0, |c| c.0),
    });

    if s.strict_request_id {
        let id = parts.headers.get("x-request-id").map(|v| v.as_bytes());
        if id.is_some_and(|id| !python_accepts_uuid(id)) {
            return StatusCode::BAD_REQUEST.into_response();
        }
    }
    if let Some(expected) = &s.expected_auth {
        match parts.headers.get(header::AUTHORIZATION) {
            Some(v) if v.as_bytes() == &expected[..] => {}
            other => return ApiError::unauthorized(other.is_some()).into_response(),
        }
    }
    let mut body = body;
    match &s.provider {
        Provider::OpenAi => {}
        Provider::Azure {
            api_version,
            deployments,
        } => match azure_gate(&s, &parts, api_version, deployments) {
            Ok(model) => body = with_model(&body, model),
            Err(refused) => return *refused,
        },
        Provider::Anthropic { version } => {
            if let Some(refused) = anthropic_gate(&s, &parts.headers, version) {
                return refused;
            }
        }
    }

    let mode = s.mode();
    // An Anthropic fake fails in Anthropic's shape.
    let anthropic = matches!(s.provider, Provider::Anthropic { .. });
    match mode {
        Mode::Normal | Mode::NoUsage => {}
        Mode::Fail(status) if anthropic => {
            return with_configured_headers(&s, crate::anthropic::injected(status))
        }
        Mode::RateLimited { retry_after_secs } if anthropic => {
            return with_configured_headers(&s, crate::anthropic::rate_limited(retry_after_secs))
        }
        Mode::Fail(status) => {
            return with_configured_headers(&s, ApiError::injected(status).into_response())
        }
        Mode::RateLimited { retry_after_secs } => {
            let mut resp = ApiError::rate_limited(retry_after_secs).into_response();
            let h = resp.headers_mut();
            h.insert("retry-after", retry_after_secs.into());
            h.insert(
                "retry-after-ms",
                (u64::from(retry_after_secs) * 1000).into(),
            );
            h.insert("x-ratelimit-remaining-requests", 0.into());
            return with_configured_headers(&s, resp);
        }
        // Never answer; the connection task is aborted on shutdown (or the
        // client gives up).
        Mode::Hang => std::future::pending().await,
        Mode::DieMidStream { .. } => {
            // Streaming requests die inside the handler after N chunks; all
            // others lose their connection before any response byte.
            let streaming = serde_json::from_slice::<StreamFlag>(&body)
                .ok()
                .and_then(|f| f.stream)
                .unwrap_or(false);
            if !streaming {
                return kill_connection(parts.extensions.get::<ConnKill>()).await;
            }
        }
    }
    parts.extensions.insert(mode);
    let resp = next.run(Request::from_parts(parts, Body::from(body))).await;
    with_configured_headers(&s, resp)
}

/// `FakeConfig::response_headers`, on answers and injected errors alike.
fn with_configured_headers(s: &Shared, mut resp: Response) -> Response {
    for (name, value) in &s.response_headers {
        resp.headers_mut().append(name.clone(), value.clone());
    }
    resp
}

/// Azure OpenAI's checks, in its order: the key, the path, the version, the
/// deployment. Gives the model the deployment answers as.
fn azure_gate<'a>(
    s: &Shared,
    parts: &axum::http::request::Parts,
    api_version: &str,
    deployments: &'a [(String, String)],
) -> Result<&'a str, Box<Response>> {
    let azure_error = |status: StatusCode, code: &str, message: &str| {
        json_response(
            status,
            serde_json::json!({"error": {"code": code, "message": message}}).to_string(),
        )
    };
    let key = parts.headers.get("api-key").map(|v| v.as_bytes());
    if key.is_none() || key != s.provider_key.as_deref().map(str::as_bytes) {
        return Err(Box::new(azure_error(StatusCode::UNAUTHORIZED, "401", "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.")));
    }
    let not_found = || azure_error(StatusCode::NOT_FOUND, "404", "Resource not found");
    let rest = parts.uri.path().strip_prefix("/openai/deployments/");
    let Some((deployment, op)) = rest.and_then(|r| r.split_once('/')) else {
        return Err(Box::new(not_found()));
    };
    if !["chat/completions", "completions", "embeddings"].contains(&op) {
        return Err(Box::new(not_found()));
    }
    let version = parts
        .uri
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|p| p.strip_prefix("api-version="));
    match version {
        None => return Err(Box::new(not_found())),
        Some(v) if v != api_version => {
            return Err(Box::new(azure_error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "API version not supported",
            )))
        }
        Some(_) => {}
    }
    let deployment = percent_encoding_decode(deployment);
    match deployments.iter().find(|(d, _)| *d == deployment) {
        Some((_, model)) => Ok(model),
        None => Err(Box::new(azure_error(StatusCode::NOT_FOUND, "DeploymentNotFound", "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again."))),
    }
}

/// Anthropic's checks: the key in `x-api-key`, then `anthropic-version`.
fn anthropic_gate(s: &Shared, headers: &HeaderMap, version: &str) -> Option<Response> {
    let anthropic_error = |status: StatusCode, kind: &str, message: &str| {
        json_response(
            status,
            serde_json::json!({"type": "error", "error": {"type": kind, "message": message}})
                .to_string(),
        )
    };
    let key = headers.get("x-api-key").map(|v| v.as_bytes());
    if key.is_none() || key != s.provider_key.as_deref().map(str::as_bytes) {
        return Some(anthropic_error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid x-api-key",
        ));
    }
    match headers.get("anthropic-version") {
        None => Some(anthropic_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "anthropic-version: header is required",
        )),
        Some(v) if v.as_bytes() != version.as_bytes() => Some(anthropic_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            &format!("anthropic-version: unsupported version {:?}", v),
        )),
        Some(_) => None,
    }
}

/// `%XX` escapes decoded (deployment names in paths).
fn percent_encoding_decode(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The body with `model` set, as the deployment answers as that model.
fn with_model(body: &Bytes, model: &str) -> Bytes {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(mut m)) => {
            m.insert("model".into(), model.into());
            Bytes::from(serde_json::to_vec(&m).expect("JSON serializes"))
        }
        _ => body.clone(),
    }
}

/// Asks the connection task to drop the TCP connection, then never answers.
async fn kill_connection(kill: Option<&ConnKill>) -> Response {
    if let Some(k) = kill {
        k.0.notify_one();
    }
    std::future::pending().await
}

// ---------------------------------------------------------------------------
// Static endpoints
// ---------------------------------------------------------------------------

const HEALTH_OK: &[u8] = br#"{"status":"ok"}"#;
const HEALTH_DOWN: &[u8] = br#"{"status":"unavailable"}"#;
const MODELS: &[u8] = br#"{"object":"list","data":[{"id":"gpt-4o-mini","object":"model","created":1700000000,"owned_by":"fake"},{"id":"text-embedding-3-small","object":"model","created":1700000000,"owned_by":"fake"}]}"#;

async fn health(State(s): AppState) -> Response {
    if s.health_ok() {
        json_response(StatusCode::OK, Bytes::from_static(HEALTH_OK))
    } else {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            Bytes::from_static(HEALTH_DOWN),
        )
    }
}

async fn models() -> Response {
    json_response(StatusCode::OK, Bytes::from_static(MODELS))
}

// ---------------------------------------------------------------------------
// Chat completions
// ---------------------------------------------------------------------------

#[derive(Serialize)]
struct ChatCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    choices: [ChatChoice<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<ChatUsage>,
}

#[derive(Serialize)]
struct ChatChoice<'a> {
    index: u32,
    message: AssistantMessage<'a>,
    finish_reason: &'static str,
    logprobs: Option<()>,
}

#[derive(Serialize)]
struct AssistantMessage<'a> {
    role: &'static str,
    content: &'a str,
    refusal: Option<()>,
}

const CHAT_ROLE_CHOICE: &str = r#"{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"finish_reason":null,"logprobs":null}"#;

fn chat_finish_choice(reason: &'static str) -> &'static str {
    match reason {
        "length" => r#"{"index":0,"delta":{},"finish_reason":"length","logprobs":null}"#,
        _ => r#"{"index":0,"delta":{},"finish_reason":"stop","logprobs":null}"#,
    }
}

async fn chat_completions(
    State(s): AppState,
    Extension(mode): Extension<Mode>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req: ChatRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return ApiError::bad_json(&e).into_response(),
    };
    if req.model.is_empty() {
        return ApiError::missing_model().into_response();
    }
    let Some(messages) = req.messages else {
        return ApiError::missing_param("messages").into_response();
    };
    if messages.count == 0 {
        return ApiError {
            param: Some("messages"),
            ..ApiError::invalid_request("[] is too short - 'messages'")
        }
        .into_response();
    }
    let plan = s.plan(req.max_tokens.or(req.max_completion_tokens), &headers);
    let id = format!("chatcmpl-fake-{}", s.next_id());
    let created = unix_now();
    let usage = ChatUsage::detailed(
        messages.prompt_tokens(),
        plan.chunks,
        s.cached_tokens,
        s.reasoning_tokens,
    );
    let model = s
        .served_model
        .clone()
        .unwrap_or_else(|| req.model.to_string());
    if let Some(call) = crate::chat_tools::call_for(&req, &body) {
        let usage = ChatUsage::detailed(
            messages.prompt_tokens(),
            crate::tools::CALL_TOKENS,
            s.cached_tokens,
            s.reasoning_tokens,
        );
        let usage = (mode != Mode::NoUsage).then_some(usage);
        return if req.stream == Some(true) {
            let usage = usage.filter(|_| wants_usage(req.stream_options.as_ref(), mode));
            crate::chat_tools::stream(s, &id, created, &model, call, usage, plan)
        } else {
            crate::chat_tools::json(&id, created, &model, call, usage)
        };
    }

    if req.stream == Some(true) {
        let spec = StreamSpec {
            object: "chat.completion.chunk",
            kind: ChoiceKind::Chat,
            role_choice: Some(CHAT_ROLE_CHOICE),
            finish_choice: chat_finish_choice(plan.finish_reason),
            usage_json: wants_usage(req.stream_options.as_ref(), mode)
                .then(|| serde_json::to_string(&usage).unwrap_or_default()),
        };
        return stream_response(s, spec, &id, created, &model, plan, mode);
    }

    sleep_for_chunks(plan).await;
    let content = s.content(plan.chunks);
    json_value(
        StatusCode::OK,
        &ChatCompletion {
            id: &id,
            object: "chat.completion",
            created,
            model: &model,
            system_fingerprint: SYSTEM_FINGERPRINT,
            choices: [ChatChoice {
                index: 0,
                message: AssistantMessage {
                    role: "assistant",
                    content: &content,
                    refusal: None,
                },
                finish_reason: plan.finish_reason,
                logprobs: None,
            }],
            usage: (mode != Mode::NoUsage).then_some(usage),
        },
    )
}

/// Whether a stream ends with a usage chunk: only when the client asked for
/// it (as with OpenAI) and the mode does not suppress usage.
fn wants_usage(opts: Option<&StreamOptions>, mode: Mode) -> bool {
    mode != Mode::NoUsage && opts.and_then(|o| o.include_usage) == Some(true)
}

/// A non-stream response takes as long as the stream would have: one delay
/// per content chunk (slept in one go — same total, fewer timer wakeups).
pub(crate) async fn sleep_for_chunks(plan: Plan) {
    let total = plan
        .delay
        .saturating_mul(u32::try_from(plan.chunks).unwrap_or(u32::MAX));
    if !total.is_zero() {
        tokio::time::sleep(total).await;
    }
}

// ---------------------------------------------------------------------------
// Legacy completions
// ---------------------------------------------------------------------------

#[derive(Serialize)]
struct TextCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    choices: [TextChoice<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<CompletionUsage>,
}

#[derive(Serialize)]
struct TextChoice<'a> {
    text: &'a str,
    index: u32,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

fn text_finish_choice(reason: &'static str) -> &'static str {
    match reason {
        "length" => r#"{"index":0,"text":"","finish_reason":"length","logprobs":null}"#,
        _ => r#"{"index":0,"text":"","finish_reason":"stop","logprobs":null}"#,
    }
}

async fn completions(
    State(s): AppState,
    Extension(mode): Extension<Mode>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req: CompletionRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return ApiError::bad_json(&e).into_response(),
    };
    if req.model.is_empty() {
        return ApiError::missing_model().into_response();
    }
    let Some(prompt) = req.prompt else {
        return ApiError::missing_param("prompt").into_response();
    };
    let plan = s.plan(req.max_tokens, &headers);
    let id = format!("cmpl-fake-{}", s.next_id());
    let created = unix_now();
    let usage = CompletionUsage::new(prompt.0, plan.chunks);

    if req.stream == Some(true) {
        let spec = StreamSpec {
            object: "text_completion",
            kind: ChoiceKind::Text,
            role_choice: None,
            finish_choice: text_finish_choice(plan.finish_reason),
            usage_json: wants_usage(req.stream_options.as_ref(), mode)
                .then(|| serde_json::to_string(&usage).unwrap_or_default()),
        };
        return stream_response(s, spec, &id, created, &req.model, plan, mode);
    }

    sleep_for_chunks(plan).await;
    let text = s.content(plan.chunks);
    json_value(
        StatusCode::OK,
        &TextCompletion {
            id: &id,
            object: "text_completion",
            created,
            model: &req.model,
            system_fingerprint: SYSTEM_FINGERPRINT,
            choices: [TextChoice {
                text: &text,
                index: 0,
                logprobs: None,
                finish_reason: plan.finish_reason,
            }],
            usage: (mode != Mode::NoUsage).then_some(usage),
        },
    )
}

// ---------------------------------------------------------------------------
// Streaming (shared by chat and legacy completions)
// ---------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum ChoiceKind {
    Chat,
    Text,
}

struct StreamSpec {
    /// `object` of every chunk.
    object: &'static str,
    kind: ChoiceKind,
    /// Chat streams open with a role-only delta; legacy streams do not.
    role_choice: Option<&'static str>,
    finish_choice: &'static str,
    /// Serialized `usage` for the final usage chunk, if one is sent.
    usage_json: Option<String>,
}

/// Everything of a chunk except its `choices` entry, so each event is three
/// `memcpy`s into one exactly-sized buffer.
struct ChunkFrame {
    /// `data: {"id":..,"object":..,"created":..,"model":..,..,"choices":[`
    head: String,
    /// `]}` + blank line, or `],"usage":null}` + blank line when usage was
    /// requested: OpenAI then puts `"usage":null` on every chunk but the last.
    tail: &'static str,
}

impl ChunkFrame {
    fn event(&self, choice: &str) -> Bytes {
        let mut b = BytesMut::with_capacity(self.head.len() + choice.len() + self.tail.len());
        b.put_slice(self.head.as_bytes());
        b.put_slice(choice.as_bytes());
        b.put_slice(self.tail.as_bytes());
        b.freeze()
    }

    /// The trailing usage chunk: `"choices":[]` plus the usage object.
    fn usage_event(&self, usage_json: &str) -> Bytes {
        const MID: &str = r#"],"usage":"#;
        const END: &str = "}\n\n";
        let mut b =
            BytesMut::with_capacity(self.head.len() + MID.len() + usage_json.len() + END.len());
        b.put_slice(self.head.as_bytes());
        b.put_slice(MID.as_bytes());
        b.put_slice(usage_json.as_bytes());
        b.put_slice(END.as_bytes());
        b.freeze()
    }
}

const DONE_EVENT: &[u8] = b"data: [DONE]\n\n";

fn stream_response(
    s: Arc<Shared>,
    spec: StreamSpec,
    id: &str,
    created: u64,
    model: &str,
    plan: Plan,
    mode: Mode,
) -> Response {
    let model_json = serde_json::to_string(model).unwrap_or_default();
    let frame = ChunkFrame {
        head: format!(
            r#"data: {{"id":"{id}","object":"{}","created":{created},"model":{model_json},"system_fingerprint":"{SYSTEM_FINGERPRINT}","choices":["#,
            spec.object
        ),
        tail: if spec.usage_json.is_some() {
            "],\"usage\":null}\n\n"
        } else {
            "]}\n\n"
        },
    };
    let die_after = match mode {
        Mode::DieMidStream { after_chunks } => Some(after_chunks),
        _ => None,
    };

    let events = async_stream::stream! {
        if let Some(role) = spec.role_choice {
            yield Ok(frame.event(role));
        }
        for i in 0..plan.chunks {
            if die_after == Some(i) {
                break;
            }
            if !plan.delay.is_zero() {
                tokio::time::sleep(plan.delay).await;
            }
            s.wait_unheld().await;
            let piece = &s.pieces[i];
            yield Ok(frame.event(match spec.kind {
                ChoiceKind::Chat => &piece.chat_choice,
                ChoiceKind::Text => &piece.text_choice,
            }));
        }
        if die_after.is_some() {
            // Give hyper one turn to flush what was already yielded: a body
            // error makes it drop the connection at once, discarding anything
            // still buffered. The client then sees a chunked body that ends
            // without its terminating chunk — an aborted upstream.
            tokio::task::yield_now().await;
            yield Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "fake-upstream: DieMidStream",
            ));
            return;
        }
        yield Ok(frame.event(spec.finish_choice));
        if let Some(usage) = &spec.usage_json {
            yield Ok(frame.usage_event(usage));
        }
        yield Ok(Bytes::from_static(DONE_EVENT));
        // Polled again only once the last event went out: the reader took the
        // whole stream (a reader that hung up makes the server drop it first).
        s.completed_streams.fetch_add(1, Ordering::Relaxed);
    };

    let mut resp = Response::new(Body::from_stream(events));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

// ---------------------------------------------------------------------------
// Embeddings
// ---------------------------------------------------------------------------

#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<EmbeddingItem>,
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<EmbeddingUsage>,
}

#[derive(Serialize)]
struct EmbeddingItem {
    object: &'static str,
    index: usize,
    embedding: EmbeddingData,
}

#[derive(Serialize)]
#[serde(untagged)]
enum EmbeddingData {
    Float(Vec<f32>),
    /// Little-endian f32s, standard base64 — what OpenAI returns for
    /// `encoding_format: "base64"` (the Python SDK's default).
    Base64(String),
}

async fn embeddings(Extension(mode): Extension<Mode>, body: Bytes) -> Response {
    let req: EmbeddingRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return ApiError::bad_json(&e).into_response(),
    };
    if req.model.is_empty() {
        return ApiError::missing_model().into_response();
    }
    let Some(inputs) = req.input else {
        return ApiError::missing_param("input").into_response();
    };
    if inputs.0.is_empty() {
        return ApiError {
            param: Some("input"),
            ..ApiError::invalid_request("'$.input' is invalid: it must not be empty.")
        }
        .into_response();
    }
    let dims = req.dimensions.unwrap_or(EMBEDDING_DIMENSIONS);
    if dims == 0 || dims > MAX_DIMENSIONS {
        return ApiError {
            param: Some("dimensions"),
            ..ApiError::invalid_request(format!(
                "dimensions must be between 1 and {MAX_DIMENSIONS}"
            ))
        }
        .into_response();
    }
    let base64 = req.encoding_format == Some(EncodingFormat::Base64);
    let tokens: usize = inputs.0.iter().map(|d| d.tokens).sum();
    let data = inputs
        .0
        .iter()
        .enumerate()
        .map(|(index, d)| {
            let v = embedding_vector(d, dims);
            EmbeddingItem {
                object: "embedding",
                index,
                embedding: if base64 {
                    let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                    EmbeddingData::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
                } else {
                    EmbeddingData::Float(v)
                },
            }
        })
        .collect();
    json_value(
        StatusCode::OK,
        &EmbeddingList {
            object: "list",
            data,
            model: &req.model,
            usage: (mode != Mode::NoUsage).then_some(EmbeddingUsage {
                prompt_tokens: tokens,
                total_tokens: tokens,
            }),
        },
    )
}

/// A deterministic unit-length vector derived from the input's hash (equal
/// inputs give equal vectors; different inputs almost surely differ).
pub fn embedding_vector(d: &InputDigest, dims: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..dims as u64)
        .map(|i| {
            let h = splitmix64(d.hash ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            // Top 24 bits -> [-1, 1).
            ((h >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

// ---------------------------------------------------------------------------
// Control endpoints (not recorded, not authenticated, unaffected by Mode)
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
struct ModeBody {
    mode: String,
    #[serde(default = "default_fail_status")]
    status: u16,
    #[serde(default)]
    after_chunks: usize,
    #[serde(default)]
    retry_after_secs: u32,
}

fn default_fail_status() -> u16 {
    500
}

/// `POST /_control/mode` `{"mode":"normal"|"fail"|"rate_limited"|"hang"|"no_usage"|"die_mid_stream","status":500,"retry_after_secs":20,"after_chunks":2}`
async fn control_mode(State(s): AppState, body: Bytes) -> Response {
    let b: ModeBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return ApiError::bad_json(&e).into_response(),
    };
    let mode = match b.mode.as_str() {
        "normal" => Mode::Normal,
        "fail" => Mode::Fail(b.status),
        "rate_limited" => Mode::RateLimited {
            retry_after_secs: b.retry_after_secs,
        },
        "hang" => Mode::Hang,
        "no_usage" => Mode::NoUsage,
        "die_mid_stream" => Mode::DieMidStream {
            after_chunks: b.after_chunks,
        },
        other => {
            return ApiError::invalid_request(format!(
                "unknown mode {other:?}; expected normal, fail, rate_limited, hang, no_usage or die_mid_stream"
            ))
            .into_response()
        }
    };
    s.set_mode(mode);
    control_stats(State(s)).await
}

#[derive(Deserialize)]
struct HealthBody {
    ok: bool,
}

/// `POST /_control/health` `{"ok":false}`
async fn control_health(State(s): AppState, body: Bytes) -> Response {
    match serde_json::from_slice::<HealthBody>(&body) {
        Ok(b) => {
            s.set_health_ok(b.ok);
            control_stats(State(s)).await
        }
        Err(e) => ApiError::bad_json(&e).into_response(),
    }
}

#[derive(Deserialize)]
struct DelayBody {
    ms: u64,
}

/// `POST /_control/chunk_delay` `{"ms":20}`
async fn control_chunk_delay(State(s): AppState, body: Bytes) -> Response {
    match serde_json::from_slice::<DelayBody>(&body) {
        Ok(b) => {
            s.set_chunk_delay(Duration::from_millis(b.ms));
            control_stats(State(s)).await
        }
        Err(e) => ApiError::bad_json(&e).into_response(),
    }
}

/// `GET /_control/stats`: the current knobs, the `/v1/*` request count and
/// the TCP connections accepted (how many a proxy opened: its pool's churn),
/// e.g. `{"mode":"fail","status":503,"health_ok":true,"chunk_delay_ms":0,"requests":7,"connections":2}`.
async fn control_stats(State(s): AppState) -> Response {
    let mut stats = serde_json::json!({
        "health_ok": s.health_ok(),
        "chunk_delay_ms": u64::try_from(s.chunk_delay().as_millis()).unwrap_or(u64::MAX),
        "requests": s.request_count(),
        "connections": s.connections_accepted(),
    });
    let (name, extra) = match s.mode() {
        Mode::Normal => ("normal", None),
        Mode::Fail(status) => ("fail", Some(("status", u64::from(status)))),
        Mode::RateLimited { retry_after_secs } => (
            "rate_limited",
            Some(("retry_after_secs", u64::from(retry_after_secs))),
        ),
        Mode::Hang => ("hang", None),
        Mode::NoUsage => ("no_usage", None),
        Mode::DieMidStream { after_chunks } => (
            "die_mid_stream",
            Some(("after_chunks", after_chunks as u64)),
        ),
    };
    stats["mode"] = name.into();
    if let Some((k, v)) = extra {
        stats[k] = v.into();
    }
    json_value(StatusCode::OK, &stats)
}

/// What Python's `uuid.UUID(value)` accepts: an optional `urn:` and `uuid:`
/// prefix, optional braces, and 32 hex digits once hyphens are removed.
fn python_accepts_uuid(value: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(value) else {
        return false;
    };
    let text = text.strip_prefix("urn:").unwrap_or(text);
    let text = text.strip_prefix("uuid:").unwrap_or(text);
    let text = text.trim_matches(|c| c == '{' || c == '}');
    let hex: Vec<char> = text.chars().filter(|&c| c != '-').collect();
    hex.len() == 32 && hex.iter().all(char::is_ascii_hexdigit)
}

#[cfg(test)]
mod uuid_tests {
    use super::python_accepts_uuid;

    #[test]
    fn accepts_what_python_accepts() {
        for ok in [
            "0192f0c4-5a7e-7cc3-9b1e-3f2f0d7b8a11",
            "0192f0c45a7e7cc39b1e3f2f0d7b8a11",
            "{0192f0c4-5a7e-7cc3-9b1e-3f2f0d7b8a11}",
            "urn:uuid:0192f0c4-5a7e-7cc3-9b1e-3f2f0d7b8a11",
        ] {
            assert!(python_accepts_uuid(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "req_0192f0c45a7e7cc39b1e3f2f0d7b8a11",
            "abc",
            "",
            "0192f0c4-5a7e-7cc3-9b1e-3f2f0d7b8a1g",
        ] {
            assert!(!python_accepts_uuid(bad.as_bytes()), "{bad}");
        }
    }
}
