//! The hot path: one Pingora `ProxyHttp` implementation.
//!
//! request_filter: route, authenticate (key cache), read the bounded body, pick the
//! pool for its model -> upstream_peer: healthy backend not yet tried ->
//! upstream_request_filter: swap the client's key for the backend's, rewrite path
//! and host -> response filters: stream bytes to the client while counting tokens ->
//! logging: one usage record into the queue. No step waits on the database except
//! a key-cache miss.

pub mod request;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName};
use pingora::http::ResponseHeader;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::auth::ApiKey;
use crate::error::GatewayError;
use crate::limits::{estimate_tokens, Ask, LimitKind, Permit, QuotaLimits, RateInfo};
use crate::state::AppState;
use crate::store::now_ms;
use crate::upstream::{BackendMeta, Pool, Upstreams};
use crate::usage::{tokenizer, ResponseCounter, UsageRecord, UsageSource};
use request::{inspect, Endpoint};

pub struct Gateway {
    state: Arc<AppState>,
}

/// Upstream response headers the client never sees: account details, and the
/// upstream's own limits (the gateway's replace them). Removing by a ready
/// `HeaderName` skips parsing each name on every response.
static HIDDEN_UPSTREAM_HEADERS: [HeaderName; 9] = [
    header::SET_COOKIE,
    HeaderName::from_static("openai-organization"),
    HeaderName::from_static("openai-project"),
    HeaderName::from_static("x-ratelimit-limit-requests"),
    HeaderName::from_static("x-ratelimit-remaining-requests"),
    HeaderName::from_static("x-ratelimit-reset-requests"),
    HeaderName::from_static("x-ratelimit-limit-tokens"),
    HeaderName::from_static("x-ratelimit-remaining-tokens"),
    HeaderName::from_static("x-ratelimit-reset-tokens"),
];

/// Client headers that may carry a key (OpenAI's, Azure's, Anthropic-style):
/// the client's key never leaves the gateway.
static CLIENT_KEY_HEADERS: [HeaderName; 3] = [
    header::AUTHORIZATION,
    HeaderName::from_static("api-key"),
    HeaderName::from_static("x-api-key"),
];

impl Gateway {
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }
}

/// Per-request state carried across Pingora's phases.
pub struct Ctx {
    request_id: String,
    started: Instant,
    endpoint: Option<Endpoint>,
    key: Option<Arc<ApiKey>>,
    model: Option<String>,
    stream: bool,
    injected_usage: bool,
    /// The body to send upstream; Pingora replays the downstream body through
    /// `request_body_filter`, where it is swapped for this one.
    body: Bytes,
    pool: Option<Arc<Pool>>,
    tried: Vec<usize>,
    /// Whether any backend tried so far passed its health checks.
    tried_healthy: bool,
    backend: Option<Arc<BackendMeta>>,
    /// The error the client was (or will be) answered with.
    error: Option<GatewayError>,
    /// Set when the response header went to the client: no failover after that.
    response_started: bool,
    /// Set by upstream_response_filter when a 5xx should go to the next backend.
    failover: bool,
    first_byte: Option<Instant>,
    counter: Option<ResponseCounter>,
    completed: bool,
    /// Rate-limit slots held by this request (released when it ends).
    permit: Option<Permit>,
    /// What the `x-ratelimit-*` headers say (also on denials).
    rate_info: Option<RateInfo>,
}

enum Admitted {
    /// Go on to the upstream.
    Proxy,
    /// The gateway answered by itself (e.g. the models list).
    Answered,
}

/// Answers with a JSON body the gateway made itself (models, errors), with the
/// request id, the rate-limit headers and whatever `extra` headers apply.
async fn write_json(
    session: &mut Session,
    ctx: &Ctx,
    status: u16,
    body: Bytes,
    extra: &[(&'static str, String)],
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(8))?;
    resp.insert_header(header::CONTENT_TYPE, "application/json")?;
    resp.insert_header(header::CONTENT_LENGTH, body.len())?;
    resp.insert_header("x-request-id", ctx.request_id.as_str())?;
    for (name, value) in ctx
        .rate_info
        .iter()
        .flat_map(RateInfo::headers)
        .chain(extra.iter().cloned())
    {
        resp.insert_header(name, value)?;
    }
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}

fn bearer_token(session: &Session) -> Option<&str> {
    let value = session.req_header().headers.get(header::AUTHORIZATION)?;
    let value = value.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl Gateway {
    async fn admit(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Admitted, GatewayError> {
        let req = session.req_header();
        let endpoint = Endpoint::route(req.method.as_str(), req.uri.path())?;
        ctx.endpoint = Some(endpoint.clone());

        let token = bearer_token(session).ok_or(GatewayError::MissingApiKey)?;
        let key = self.state.keys.authenticate(token).await?;
        ctx.key = Some(key.clone());

        let answer = match &endpoint {
            Endpoint::ListModels => Some(self.models_list(&key)),
            Endpoint::GetModel(id) => {
                ctx.model = Some(id.clone());
                let listed = self.state.upstreams.load();
                let listed = listed.listed_models();
                if !listed.contains(&id.as_str()) || !key.allows_model(id) {
                    return Err(GatewayError::ModelNotFound(id.clone()));
                }
                Some(self.model_object(id))
            }
            _ => None,
        };
        if let Some(body) = answer {
            // Listing models costs no tokens but counts as a request.
            self.limit(ctx, &key, 0).await?;
            write_json(session, ctx, 200, body, &[])
                .await
                .map_err(|_| GatewayError::Internal)?;
            return Ok(Admitted::Answered);
        }

        let body = self.read_body(session).await?;
        let inspected = inspect(&endpoint, body)?;
        ctx.model = Some(inspected.model.clone());
        ctx.stream = inspected.stream;
        ctx.injected_usage = inspected.injected_usage;
        ctx.body = inspected.body;

        if !key.allows_model(&inspected.model) {
            return Err(GatewayError::ModelNotFound(inspected.model));
        }
        let pool = self
            .state
            .upstreams
            .load()
            .pool_for(&inspected.model)
            .cloned()
            .ok_or_else(|| GatewayError::ModelNotFound(inspected.model.clone()))?;
        ctx.pool = Some(pool);
        let estimate = estimate_tokens(ctx.body.len(), inspected.max_tokens);
        self.limit(ctx, &key, estimate).await?;
        Ok(Admitted::Proxy)
    }

    /// Quota first (a spent month is final), then the rate-limit buckets. On
    /// success the request holds a permit until it ends.
    async fn limit(&self, ctx: &mut Ctx, key: &ApiKey, tokens: u64) -> Result<(), GatewayError> {
        let state = &self.state;
        let plan = state.plan_of(key);
        if let (Some(user_id), Some(plan)) = (key.user_id, &plan) {
            let quota = QuotaLimits::from_plan(plan);
            let verdict = state
                .quotas
                .check(user_id, quota, now_ms())
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "quota lookup failed");
                    GatewayError::KeyStoreUnavailable
                })?;
            if let Err(spent) = verdict {
                return Err(GatewayError::QuotaExceeded {
                    what: spent.what,
                    resets_on: spent.resets_on.to_string(),
                });
            }
        }
        let ask = Ask {
            key_id: key.id,
            key: state.key_limits(key, plan.as_ref()),
            user: key.user_id.zip(plan.as_ref().map(|p| p.limits())),
            tokens,
        };
        match state.limiter.admit_in_cluster(&ask).await {
            Ok(permit) => {
                ctx.rate_info = Some(permit.info.clone());
                ctx.permit = Some(permit);
                Ok(())
            }
            Err(denied) => {
                ctx.rate_info = Some(denied.info);
                Err(GatewayError::RateLimited {
                    kind: denied.kind,
                    limit: denied.limit,
                    retry_after: denied.retry_after,
                    needed: tokens,
                })
            }
        }
    }

    /// Reads the whole body, refusing more than `max_body_bytes`. Pingora's retry
    /// buffer keeps a copy, which is how the body reaches the upstream afterwards.
    async fn read_body(&self, session: &mut Session) -> Result<Bytes, GatewayError> {
        let limit = self.state.live.load().server.max_body_bytes;
        let declared = session
            .req_header()
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(self.refuse_large_body(session, 0).await);
        }
        session.enable_retry_buffering();
        let mut buf = BytesMut::with_capacity(declared.unwrap_or(0));
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    if buf.len() + chunk.len() > limit {
                        return Err(self
                            .refuse_large_body(session, buf.len() + chunk.len())
                            .await);
                    }
                    buf.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(GatewayError::invalid(
                        format!("could not read the request body: {e}"),
                        None,
                    ))
                }
            }
        }
        Ok(buf.freeze())
    }

    /// Reads and discards an oversized body (up to a bound) before answering 413:
    /// a client still writing its body would otherwise see a broken pipe instead
    /// of the error. Past the bound the connection is simply closed after the answer.
    async fn refuse_large_body(&self, session: &mut Session, mut read: usize) -> GatewayError {
        let limit = self.state.live.load().server.max_body_bytes;
        let drain_cap = limit.saturating_mul(4).max(16 * 1024 * 1024);
        while read <= drain_cap {
            match session.read_request_body().await {
                Ok(Some(chunk)) => read += chunk.len(),
                _ => break,
            }
        }
        GatewayError::BodyTooLarge { limit }
    }

    fn models_list(&self, key: &ApiKey) -> Bytes {
        let upstreams = self.state.upstreams.load();
        let data: Vec<serde_json::Value> = upstreams
            .listed_models()
            .into_iter()
            .filter(|m| key.allows_model(m))
            .map(|m| self.model_value(&upstreams, m))
            .collect();
        Bytes::from(
            serde_json::to_vec(&serde_json::json!({"object": "list", "data": data})).expect("json"),
        )
    }

    fn model_value(&self, upstreams: &Upstreams, id: &str) -> serde_json::Value {
        let owner = upstreams
            .pool_for(id)
            .map_or("bluesminds", |p| p.name.as_str());
        serde_json::json!({
            "id": id,
            "object": "model",
            "created": self.state.started_at,
            "owned_by": owner,
        })
    }

    fn model_object(&self, id: &str) -> Bytes {
        let upstreams = self.state.upstreams.load();
        Bytes::from(serde_json::to_vec(&self.model_value(&upstreams, id)).expect("json"))
    }

    /// The error for a Pingora failure the gateway did not decide itself.
    fn classify(&self, e: &Error, ctx: &Ctx) -> GatewayError {
        let model = ctx.model.clone().unwrap_or_default();
        if e.esource() == &ErrorSource::Downstream {
            return GatewayError::ClientClosedRequest;
        }
        match e.etype() {
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
                GatewayError::UpstreamTimeout(model)
            }
            _ if e.esource() == &ErrorSource::Upstream || ctx.backend.is_some() => {
                GatewayError::UpstreamFailed(model)
            }
            _ => GatewayError::Internal,
        }
    }

    /// Metrics for one finished request.
    fn observe(&self, ctx: &Ctx, record: &UsageRecord) {
        let metrics = &self.state.metrics;
        // Only models named in the config become label values: clients must not
        // create unbounded metric series with made-up names (a `*` pool routes any).
        let model = match record.model.as_deref() {
            Some(m) if ctx.pool.is_some() && self.state.upstreams.load().is_listed(m) => m,
            Some(_) if ctx.pool.is_some() => "other",
            _ => "none",
        };
        let backend = record.backend.as_deref().unwrap_or("none");
        metrics
            .requests
            .with_label_values(&[model, backend, &record.status.to_string()])
            .inc();
        if ctx.backend.is_some() {
            metrics
                .latency
                .with_label_values(&[model])
                .observe(record.latency_ms as f64 / 1000.0);
            if let Some(ttfb) = record.ttfb_ms {
                metrics
                    .ttfb
                    .with_label_values(&[model])
                    .observe(ttfb as f64 / 1000.0);
            }
        }
        let (prompt, completion) = (record.prompt_tokens, record.completion_tokens);
        if prompt + completion > 0 {
            metrics
                .tokens
                .with_label_values(&[model, "in"])
                .inc_by(prompt);
            metrics
                .tokens
                .with_label_values(&[model, "out"])
                .inc_by(completion);
        }
        if record.cost_nanousd > 0 {
            metrics
                .cost_usd
                .with_label_values(&[model])
                .inc_by(record.cost_nanousd as f64 / 1e9);
        }
        let limit = match &ctx.error {
            Some(GatewayError::RateLimited { kind, .. }) => Some(match kind {
                LimitKind::Requests => "requests",
                LimitKind::Tokens => "tokens",
                LimitKind::Concurrency => "concurrency",
            }),
            Some(GatewayError::QuotaExceeded { .. }) => Some("quota"),
            _ => None,
        };
        if let Some(limit) = limit {
            metrics.rate_limited.with_label_values(&[limit]).inc();
        }
    }

    fn build_record(
        &self,
        session: &Session,
        ctx: &mut Ctx,
        prompt: u64,
        completion: u64,
        source: UsageSource,
    ) -> UsageRecord {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .or_else(|| ctx.error.as_ref().map(|e| e.status()))
            // Nothing was sent: the client went away first (nginx's 499).
            .unwrap_or(499);
        let model = ctx.model.clone();
        let cost = model.as_deref().map_or(0, |m| {
            self.state.prices.load().cost_nanousd(m, prompt, completion)
        });
        UsageRecord {
            request_id: std::mem::take(&mut ctx.request_id),
            created_at: now_ms(),
            key_id: ctx.key.as_ref().map(|k| k.id),
            user_id: ctx.key.as_ref().and_then(|k| k.user_id),
            endpoint: ctx
                .endpoint
                .as_ref()
                .map_or("unknown", |e| e.as_str())
                .into(),
            model,
            backend: ctx.backend.as_ref().map(|b| b.display.clone()),
            status,
            stream: ctx.stream,
            prompt_tokens: prompt,
            completion_tokens: completion,
            usage_source: source,
            cost_nanousd: cost,
            latency_ms: ctx.started.elapsed().as_millis() as u64,
            ttfb_ms: ctx
                .first_byte
                .map(|t| t.duration_since(ctx.started).as_millis() as u64),
            error_code: ctx
                .error
                .as_ref()
                .and_then(|e| e.code())
                .map(str::to_string),
        }
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            request_id: format!("req_{}", uuid::Uuid::now_v7().simple()),
            started: Instant::now(),
            endpoint: None,
            key: None,
            model: None,
            stream: false,
            injected_usage: false,
            body: Bytes::new(),
            pool: None,
            tried: Vec::new(),
            tried_healthy: false,
            backend: None,
            error: None,
            response_started: false,
            failover: false,
            first_byte: None,
            counter: None,
            completed: false,
            permit: None,
            rate_info: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        match self.admit(session, ctx).await {
            Ok(Admitted::Proxy) => Ok(false),
            Ok(Admitted::Answered) => Ok(true),
            Err(e) => {
                if !session.is_body_done() {
                    // An unread body would corrupt the next request on this connection.
                    session.set_keepalive(None);
                }
                let _ = write_json(session, ctx, e.status(), e.to_json(), &e.headers()).await;
                ctx.error = Some(e);
                Ok(true)
            }
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let pool = ctx.pool.clone().expect("request_filter set the pool");
        let Some((backend, healthy)) = pool.select(&ctx.tried) else {
            let model = ctx.model.clone().unwrap_or_default();
            // Every backend failed its health checks and then this request too:
            // the pool is down. Otherwise healthy backends failed it: 502.
            ctx.error = Some(if ctx.tried_healthy {
                GatewayError::UpstreamFailed(model)
            } else {
                GatewayError::NoHealthyUpstream(model)
            });
            return Error::e_explain(ErrorType::ConnectNoRoute, "no usable backend");
        };
        ctx.tried_healthy |= healthy;
        ctx.tried.push(backend.id);
        ctx.failover = false;
        let live = self.state.live.load();
        let server = &live.server;
        let peer = backend.peer(
            Duration::from_millis(server.connect_timeout_ms),
            Duration::from_secs(server.read_timeout_secs),
        );
        ctx.backend = Some(backend);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut pingora::http::RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let backend = ctx.backend.as_ref().expect("upstream_peer chose a backend");
        let uri = &session.req_header().uri;
        let path = uri.path();
        let rest = path.strip_prefix("/v1").unwrap_or(path);
        let mut target = String::with_capacity(backend.url.base_path.len() + rest.len() + 16);
        target.push_str(&backend.url.base_path);
        target.push_str(rest);
        if let Some(q) = uri.query() {
            target.push('?');
            target.push_str(q);
        }
        upstream_request.set_uri(target.parse().map_err(|_| {
            Error::explain(ErrorType::InvalidHTTPHeader, "cannot build upstream path")
        })?);
        // The backend's key replaces the client's.
        for name in &CLIENT_KEY_HEADERS {
            upstream_request.remove_header(name);
        }
        if let Some(auth) = &backend.authorization {
            upstream_request.insert_header(header::AUTHORIZATION, auth.as_str())?;
        }
        upstream_request.insert_header(header::HOST, backend.host_header.as_str())?;
        // Token counting needs the plain body.
        upstream_request.insert_header(header::ACCEPT_ENCODING, "identity")?;
        upstream_request.insert_header("x-request-id", ctx.request_id.as_str())?;
        if ctx.endpoint.as_ref().is_some_and(Endpoint::has_body) {
            upstream_request.remove_header(&header::TRANSFER_ENCODING);
            upstream_request.insert_header(header::CONTENT_LENGTH, ctx.body.len())?;
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // Every attempt replays the pre-read body once, at its end: send ours instead
        // (it may carry the added stream_options).
        *body = end_of_stream.then(|| ctx.body.clone());
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if upstream_response.status.is_server_error() {
            if let (Some(backend), Some(pool)) = (&ctx.backend, &ctx.pool) {
                pool.eject(backend);
                if pool.has_untried(&ctx.tried) {
                    ctx.failover = true;
                    return Error::e_explain(
                        ErrorType::HTTPStatus(upstream_response.status.as_u16()),
                        "upstream answered 5xx; trying the next backend",
                    );
                }
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.response_started = true;
        let content_type = upstream_response
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let counter = ResponseCounter::new(content_type, ctx.injected_usage);
        if counter.rewrites_body() {
            upstream_response.remove_header(&header::CONTENT_LENGTH);
            if !session.is_http2() {
                upstream_response.insert_header(header::TRANSFER_ENCODING, "chunked")?;
            }
        }
        ctx.counter = Some(counter);
        for name in &HIDDEN_UPSTREAM_HEADERS {
            upstream_response.remove_header(name);
        }
        for (name, value) in ctx.rate_info.iter().flat_map(RateInfo::headers) {
            upstream_response.insert_header(name, value)?;
        }
        upstream_response.insert_header("x-request-id", ctx.request_id.as_str())?;
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        if ctx.first_byte.is_none() && body.as_ref().is_some_and(|b| !b.is_empty()) {
            ctx.first_byte = Some(Instant::now());
        }
        if let Some(counter) = ctx.counter.as_mut() {
            counter.on_body(body, end_of_stream);
        }
        if end_of_stream {
            ctx.completed = true;
        }
        Ok(None)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let (Some(backend), Some(pool)) = (&ctx.backend, &ctx.pool) {
            pool.eject(backend);
        }
        let more = ctx.pool.as_ref().is_some_and(|p| p.has_untried(&ctx.tried));
        e.set_retry(more);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        if ctx.failover {
            e.set_retry(true);
        } else if ctx.response_started || session.as_ref().retry_buffer_truncated() {
            // Bytes already reached the client: a retry would corrupt the response.
            e.set_retry(false);
        } else {
            // A stale pooled connection is safe to retry; the request never arrived.
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let err = ctx.error.clone().unwrap_or_else(|| self.classify(e, ctx));
        let status = err.status();
        let client_gone = e.esource() == &ErrorSource::Downstream;
        if !client_gone && session.response_written().is_none() {
            if let Err(write_err) =
                write_json(session, ctx, status, err.to_json(), &err.headers()).await
            {
                tracing::debug!(error = %write_err, "could not send the error response");
            }
        }
        ctx.error = Some(err);
        FailToProxy {
            error_code: if client_gone { 0 } else { status },
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &Ctx, _error: &Error) -> bool {
        // Answers the gateway chose (no healthy backend...) are logged by us, not as proxy errors.
        matches!(ctx.error, Some(GatewayError::NoHealthyUpstream(_)))
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let mut source = UsageSource::None;
        let (mut prompt, mut completion) = (0, 0);
        if let Some(counter) = ctx.counter.as_mut() {
            if e.is_some() || !ctx.completed {
                counter.on_abort();
            }
            let status_ok = session
                .response_written()
                .is_some_and(|r| r.status.is_success());
            if let Some(u) = counter.usage() {
                (prompt, completion, source) =
                    (u.prompt_tokens, u.completion_tokens, UsageSource::Upstream);
            } else if status_ok {
                // No usage from the upstream: count locally, off the async threads.
                let model = ctx.model.clone().unwrap_or_default();
                let body = ctx.body.clone();
                let text = counter.reply_text().to_string();
                let counted = tokio::task::spawn_blocking(move || {
                    (
                        tokenizer::count_prompt(&model, &body),
                        tokenizer::count_text(&model, &text),
                    )
                })
                .await;
                if let Ok((p, c)) = counted {
                    (prompt, completion, source) = (p, c, UsageSource::Tokenizer);
                }
            }
        }
        if let Some(e) = e.filter(|_| ctx.error.is_none() && !ctx.completed) {
            ctx.error = Some(self.classify(e, ctx));
        }
        let record = self.build_record(session, ctx, prompt, completion, source);
        if let Some(permit) = ctx.permit.take() {
            // Settle the token estimate; dropping the permit frees its concurrency slot.
            permit.reconcile(prompt + completion);
        }
        if let Some(user_id) = record.user_id {
            self.state.quotas.add(
                user_id,
                prompt + completion,
                record.cost_nanousd,
                record.created_at,
            );
        }
        self.observe(ctx, &record);
        self.state.usage.submit(record);
    }
}
