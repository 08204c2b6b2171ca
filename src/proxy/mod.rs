//! The hot path: one Pingora `ProxyHttp` implementation.
//!
//! request_filter (`admit`): route, authenticate (key cache), take the limit
//! slots, read the bounded body, pick the pool for its model -> upstream_peer:
//! healthy backend not yet tried -> upstream_request_filter: swap the client's
//! key for the backend's, rewrite path and host -> response filters: stream
//! bytes to the client while counting tokens -> logging: one usage record into
//! the queue. No step waits on the database except a key-cache miss.

mod admit;
mod ctx;
mod form;
mod headers;
mod rename;
pub mod request;
mod respond;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use pingora::http::ResponseHeader;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::{HttpPeer, Peer};
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::metrics::Ended;
use crate::protocols::Serving;
use crate::state::AppState;
use crate::upstream::failure;
use crate::usage::counter::Dialect;
use crate::usage::{tokenizer, Counted, Finished, ResponseCounter, UsageRecord, UsageSource};
use admit::{admit, Admitted};
pub use ctx::Ctx;
use ctx::Streamed;
use request::Endpoint;
use respond::write_json;

pub struct Gateway {
    state: Arc<AppState>,
}

impl Gateway {
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    // Boxed: Pingora keeps the context inline in each request's future, in
    // more than one of its states, so a ~1 KiB `Ctx` made every open
    // request's future ~2.8 KiB larger (heaptrack, benches/README.md "Memory
    // per stream"); one allocation per request is cheaper than the copies.
    type CTX = Box<Ctx>;

    fn new_ctx(&self) -> Box<Ctx> {
        Box::new(Ctx::new(self.state.snapshot()))
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Box<Ctx>) -> Result<bool> {
        match admit(&self.state, session, ctx).await {
            Ok(Admitted::Proxy) => {
                // A client that leaves mid-answer must not cut off the usage
                // report that comes at its end (see response_body_filter).
                let secs = self.state.boot.usage.abandoned_read_secs;
                if secs > 0 {
                    session.set_finish_after_client_leaves(Some(Duration::from_secs(secs)));
                }
                Ok(false)
            }
            Ok(Admitted::Answered) => Ok(true),
            Err(e) => {
                if !session.is_body_done() {
                    // An unread body would corrupt the next request on this connection.
                    session.set_keepalive(None);
                }
                let body = e.render(ctx.protocol(), &ctx.request_id);
                let _ = write_json(session, ctx, e.status(), body, &e.headers()).await;
                ctx.refused = Some(e);
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Box<Ctx>,
    ) -> Result<Box<HttpPeer>> {
        let Some(route) = &ctx.route else {
            return Error::e_explain(ErrorType::InternalError, "no route after admission");
        };
        let attempt = &mut ctx.attempt;
        let (backend, addr) = loop {
            let Some((backend, healthy)) = route.pool.select(&attempt.tried) else {
                attempt.exhausted = true;
                return Error::e_explain(ErrorType::ConnectNoRoute, "no usable backend");
            };
            attempt.tried.push(backend.id);
            // A lookup may have just taken its address away.
            if let Some(addr) = backend.current_addr() {
                attempt.tried_healthy |= healthy;
                break (backend, addr);
            }
        };
        attempt.failover = false;
        let proxy = &ctx.snapshot.config.proxy;
        let peer = backend.peer(addr, proxy.connect_timeout, proxy.read_timeout);
        attempt.backend = Some(backend);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut pingora::http::RequestHeader,
        ctx: &mut Box<Ctx>,
    ) -> Result<()> {
        let (Some(backend), Some(route)) = (&ctx.attempt.backend, &ctx.route) else {
            return Error::e_explain(ErrorType::InternalError, "no backend chosen");
        };
        let uri = &session.req_header().uri;
        let path = uri.path();
        let rest = path.strip_prefix("/v1").unwrap_or(path);
        let shape = &backend.shape;
        let model = ctx.admission.model.as_deref().unwrap_or_default();
        let upstream_model = shape.upstream_model(model);
        // Per attempt: the next backend may speak another protocol, or name
        // the model another way.
        let translates = ctx
            .admission
            .endpoint
            .as_ref()
            .is_some_and(|e| matches!(admit::serving(e, backend), Serving::Translated(_)));
        let translated = route.translated.as_ref().filter(|_| translates);
        ctx.attempt.translation = translated.map(|(t, _)| *t);
        let body = translated.map_or(&route.body, |(_, b)| b);
        ctx.attempt.body = match upstream_model {
            Some(m) => Some(match &route.form_model {
                Some(span) => rename::in_form(body, span.clone(), m),
                None => rename::with_model(body, m).unwrap_or_else(|| body.clone()),
            }),
            None => translated.map(|(_, b)| b.clone()),
        };
        // A translated answer names the client's model itself.
        ctx.attempt.rename = upstream_model
            .filter(|_| translated.is_none())
            .map(|m| rename::ModelRename::new(m, model));
        let (rest, query) = match ctx.attempt.translation {
            // The client's query (`?beta=true` from Claude Code) is its protocol's.
            Some(t) => (t.upstream_path(), None),
            None => (rest, uri.query()),
        };
        let target = shape.target(
            &backend.url.base_path,
            rest,
            query,
            upstream_model.unwrap_or(model),
        );
        upstream_request.set_uri(target.parse().map_err(|_| {
            Error::explain(ErrorType::InvalidHTTPHeader, "cannot build upstream path")
        })?);
        // Only allowed client headers go on (the client's key is not one).
        let to_anthropic = backend.protocol == crate::protocols::Protocol::Anthropic;
        let mut parts = headers::request_parts(upstream_request);
        let out = &mut parts.headers;
        // What is inserted below: the forwarding pair, host, accept-encoding,
        // content-length, the backend's key and headers, the request id.
        let room = 5
            + usize::from(shape.auth.is_some())
            + shape.headers.len()
            + usize::from(route.pool.request_id_header.is_some());
        headers::filter_request(out, &route.pool.forward_headers, to_anthropic, room);
        let sized = out.capacity();
        let own = if self.state.boot.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let trusted = &self.state.boot.trusted_proxies;
        let client_headers = &session.req_header().headers;
        let (forwarded_for, proto) = match session.client_addr().and_then(|a| a.as_inet()) {
            Some(peer) => (
                Some(trusted.forwarded_for(peer.ip(), client_headers)),
                trusted.forwarded_proto(peer.ip(), client_headers, own),
            ),
            None => (None, own),
        };
        if let Some(chain) = forwarded_for {
            out.insert(headers::X_FORWARDED_FOR, headers::value(&chain)?);
        }
        let proto = match proto {
            "https" => HeaderValue::from_static("https"),
            "http" => HeaderValue::from_static("http"),
            other => headers::value(other)?,
        };
        out.insert(headers::X_FORWARDED_PROTO, proto);
        if let Some((name, value)) = &shape.auth {
            out.insert(name.clone(), value.clone());
        }
        for (name, value) in &shape.headers {
            // A client header the pool forwards (anthropic-version...) wins.
            if !out.contains_key(name) {
                out.insert(name.clone(), value.clone());
            }
        }
        out.insert(header::HOST, backend.host_header.clone());
        // Token counting needs the plain body.
        out.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        if let Some(name) = &route.pool.request_id_header {
            let mut buf = uuid::Uuid::encode_buffer();
            let id = ctx.request_uuid.hyphenated().encode_lower(&mut buf);
            out.insert(name.clone(), headers::value(id)?);
        }
        if ctx
            .admission
            .endpoint
            .as_ref()
            .is_some_and(Endpoint::has_body)
        {
            let body = ctx.attempt.body.as_ref().unwrap_or(&route.body);
            out.remove(header::TRANSFER_ENCODING);
            out.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        }
        debug_assert_eq!(out.capacity(), sized, "`room` misses a header added here");
        *upstream_request = pingora::http::RequestHeader::from(parts);
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Box<Ctx>,
    ) -> Result<()> {
        // Every attempt replays the pre-read body once, at its end: send ours instead
        // (it may carry the added stream_options).
        let ours = ctx.attempt.body.clone();
        *body = end_of_stream
            .then(|| ours.or_else(|| ctx.route.as_ref().map(|r| r.body.clone())))
            .flatten();
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Box<Ctx>,
    ) -> Result<()> {
        if let Some(backend) = &ctx.attempt.backend {
            // An answer came over its TLS connection: whatever failed before is fixed.
            backend.clear_tls_failure();
        }
        let (Some(backend), Some(route)) = (&ctx.attempt.backend, &ctx.route) else {
            return Ok(());
        };
        let status = upstream_response.status.as_u16();
        let judged = failure::judge(
            status,
            &upstream_response.headers,
            route.pool.ejection(),
            std::time::SystemTime::now(),
        );
        let Some(judged) = judged else {
            backend.key_accepted();
            return Ok(());
        };
        if let Some(how_long) = judged.eject_for {
            route
                .pool
                .eject_for(backend, how_long, &format!("answering {status}"));
        }
        if judged.key_refused {
            backend.set_key_refused(status);
            ctx.attempt.keys_refused += 1;
        }
        // Nothing reached the client yet: another backend may still answer.
        if judged.retry && route.pool.has_untried(&ctx.attempt.tried) {
            ctx.attempt.failover = true;
            return Error::e_explain(
                ErrorType::HTTPStatus(status),
                "upstream answered an error worth retrying; trying the next backend",
            );
        }
        if judged.key_refused {
            // The client's key is fine; the provider refused the gateway's.
            // Its 401 must not reach the client as if it were about theirs.
            ctx.attempt.key_refused_last = true;
            return Error::e_explain(
                ErrorType::HTTPStatus(status),
                "the upstream refused the backend's key",
            );
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Box<Ctx>,
    ) -> Result<()> {
        let content_type = upstream_response
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let injected_usage = ctx.route.as_ref().is_some_and(|r| r.injected_usage);
        let status = upstream_response.status.as_u16();
        // A translated answer is counted as the backend sent it.
        let dialect = match (ctx.attempt.translation, &ctx.admission.endpoint) {
            (None, Some(Endpoint::Messages)) => Dialect::Messages,
            (None, Some(Endpoint::Responses)) => Dialect::Responses,
            _ => Dialect::Chat,
        };
        let counter = ResponseCounter::new(content_type, injected_usage).with_dialect(dialect);
        let translator = ctx.attempt.translation.map(|t| {
            let mut translator = t.answer(ctx.model(), ctx.admission.stream, &ctx.request_id);
            (translator.on_header(status, content_type), translator)
        });
        if !counter.reads_body() {
            // Audio and other binary answers go through untouched.
            ctx.attempt.rename = None;
        }
        let mut parts = headers::response_parts(upstream_response);
        let out = &mut parts.headers;
        let translator = match translator {
            Some((content_type, translator)) => {
                out.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
                Some(translator)
            }
            None => None,
        };
        if counter.rewrites_body() || ctx.attempt.rename.is_some() || translator.is_some() {
            out.remove(header::CONTENT_LENGTH);
            if !session.is_http2() {
                out.insert(
                    header::TRANSFER_ENCODING,
                    HeaderValue::from_static("chunked"),
                );
            }
        }
        ctx.response = Some(Streamed {
            status,
            counter,
            first_byte: None,
            completed: false,
            abandoned_bytes: None,
            translator,
        });
        let expose = ctx
            .route
            .as_ref()
            .map_or(&[][..], |r| &r.pool.expose_headers[..]);
        headers::filter_response(out, expose, headers::own_count(ctx));
        headers::add_own(out, ctx)?;
        *upstream_response = ResponseHeader::from(parts);
        Ok(())
    }

    fn response_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Box<Ctx>,
    ) -> Result<Option<Duration>> {
        let mut reported = None;
        if let Some(r) = ctx.response.as_mut() {
            if session.client_left() {
                // Pingora ends the read when abandoned_read_secs are up; the
                // bytes are bounded here.
                let bytes = r.abandoned_bytes.get_or_insert(0);
                *bytes += body.as_ref().map_or(0, |b| b.len() as u64);
                if *bytes > self.state.boot.usage.abandoned_read_mib << 20 {
                    return Error::e_explain(
                        ErrorType::ReadError,
                        "the client left and the answer outlasted usage.abandoned_read_mib",
                    )
                    .map_err(|e| e.into_down());
                }
            }
            if r.first_byte.is_none() && body.as_ref().is_some_and(|b| !b.is_empty()) {
                r.first_byte = Some(Instant::now());
            }
            r.counter.on_body(body, end_of_stream);
            if let Some(rename) = ctx.attempt.rename.as_mut() {
                rename.on_body(body, end_of_stream);
            }
            if let Some(translator) = r.translator.as_mut() {
                translator.on_body(body, end_of_stream);
            }
            r.completed |= end_of_stream;
            if end_of_stream {
                reported = r.counter.usage();
            }
        }
        if let Some(u) = reported {
            // Recorded before the last bytes go out: a client that has the whole
            // answer has its record in the ledger, even if the process dies now.
            self.record(session, None, ctx, Counted::from_upstream(u));
        }
        Ok(None)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut Box<Ctx>,
        mut e: Box<Error>,
    ) -> Box<Error> {
        ctx.note_failure(&e);
        let mut more = false;
        if let Some(route) = &ctx.route {
            if let Some(backend) = &ctx.attempt.backend {
                route.pool.eject(backend);
                if let Some(addr) = peer.address().as_inet() {
                    backend.address_failed(*addr);
                }
            }
            more = route.pool.has_untried(&ctx.attempt.tried);
        }
        e.set_retry(more);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Box<Ctx>,
        client_reused: bool,
    ) -> Box<Error> {
        ctx.note_failure(&e);
        let mut e = e.more_context(format!("Peer: {peer}"));
        if ctx.attempt.failover {
            e.set_retry(true);
        } else if ctx.attempt.key_refused_last {
            e.set_retry(false);
        } else if ctx.response.is_some() || session.as_ref().retry_buffer_truncated() {
            // Bytes already reached the client: a retry would corrupt the response.
            e.set_retry(false);
        } else {
            // A stale pooled connection is safe to retry; the request never arrived.
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Box<Ctx>,
    ) -> FailToProxy {
        let err = ctx
            .settle(Some(e))
            .cloned()
            .unwrap_or(crate::error::GatewayError::Internal);
        let status = err.status();
        let client_gone = e.esource() == &ErrorSource::Downstream;
        if !client_gone && session.response_written().is_none() {
            if let Err(write_err) = write_json(
                session,
                ctx,
                status,
                err.render(ctx.protocol(), &ctx.request_id),
                &err.headers(),
            )
            .await
            {
                tracing::debug!(error = %write_err, "could not send the error response");
            }
        } else if !client_gone {
            // The upstream failed after the answer's header went out. A
            // translated answer still ends in its protocol's terms (the
            // Responses API: `response.failed`, which clients retry) rather
            // than stopping mid-stream; the translator knows it was cut
            // because it never saw the upstream's end.
            let tail = ctx
                .response
                .as_mut()
                .filter(|r| !r.completed)
                .and_then(|r| r.translator.as_mut())
                .and_then(|t| {
                    let mut body = None;
                    t.on_body(&mut body, true);
                    body
                });
            if let Some(tail) = tail {
                if let Err(write_err) = session.write_response_body(Some(tail), true).await {
                    tracing::debug!(error = %write_err, "could not end the translated answer");
                }
            }
        }
        FailToProxy {
            error_code: if client_gone { 0 } else { status },
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &Box<Ctx>, _error: &Error) -> bool {
        // Answers the gateway chose (no healthy backend...) are logged by us, not as proxy errors.
        ctx.attempt.exhausted && !ctx.attempt.tried_healthy
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Box<Ctx>) {
        if ctx.recorded {
            return;
        }
        let mut counted = Counted::NOTHING;
        let model = ctx.model().to_string();
        let prompt_body = ctx.route.as_ref().map(|r| r.body.clone());
        if let Some(r) = ctx.response.as_mut() {
            if e.is_some() || !r.completed {
                r.counter.on_abort();
            }
            let status_ok = session
                .response_written()
                .is_some_and(|r| r.status.is_success());
            if let Some(u) = r.counter.usage() {
                counted = Counted::from_upstream(u);
            } else if status_ok
                && ctx
                    .admission
                    .endpoint
                    .as_ref()
                    .is_some_and(Endpoint::counts_text_tokens)
            {
                // No usage from the upstream: count locally, off the async threads.
                let body = prompt_body.unwrap_or_default();
                let text = r.counter.reply_text().to_string();
                let local = tokio::task::spawn_blocking(move || {
                    (
                        tokenizer::count_prompt(&model, &body),
                        tokenizer::count_text(&model, &text),
                    )
                })
                .await;
                if let Ok((prompt, completion)) = local {
                    counted = Counted::from_tokenizer(prompt, completion);
                }
            }
            if session.client_left() && counted.source != UsageSource::Upstream {
                // The client left and the upstream's report never came within
                // the bounds: at least what admission estimated.
                counted = counted.at_least(ctx.admission.estimate);
            }
        }
        self.record(session, e, ctx, counted);
    }
}

impl Gateway {
    /// Settles the request: its record into the ledger, its quota, its permit
    /// and its metrics. Once per request (see `Ctx::recorded`).
    fn record(&self, session: &Session, e: Option<&Error>, ctx: &mut Ctx, counted: Counted) {
        if std::mem::replace(&mut ctx.recorded, true) {
            return;
        }
        ctx.settle(e);
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .or_else(|| ctx.response.as_ref().map(|r| r.status))
            .or_else(|| ctx.error.as_ref().map(|e| e.status()))
            // Nothing was sent: the client went away first (nginx's 499).
            .unwrap_or(499);
        let record =
            UsageRecord::finished(Finished {
                request_id: std::mem::take(&mut ctx.request_id),
                started: ctx.started,
                first_byte: ctx.response.as_ref().and_then(|r| r.first_byte),
                key: ctx.admission.key.as_deref(),
                endpoint: ctx.admission.endpoint.as_ref().map(Endpoint::as_str),
                model_known: ctx.admission.model.as_deref().is_some_and(|m| {
                    ctx.snapshot.upstreams.is_listed(m) || ctx.snapshot.prices.has(m)
                }),
                model: ctx.admission.model.clone(),
                backend: ctx.attempt.backend.as_ref().map(|b| b.display.clone()),
                served_model: ctx.response.as_ref().and_then(|r| r.counter.served_model()),
                status,
                stream: ctx.admission.stream,
                counted,
                prices: &ctx.snapshot.prices,
                error_code: ctx.error.as_ref().and_then(|e| e.code()),
            });
        if let Some(permit) = ctx.admission.permit.take() {
            // Settle the token estimate; dropping the permit frees its concurrency slot.
            permit.reconcile(counted.total());
        }
        if let Some(user_id) = record.user_id {
            self.state.quotas.add(
                user_id,
                counted.total(),
                record.cost_nanousd,
                record.created_at,
            );
        }
        self.state.metrics.observe(Ended {
            record: &record,
            routed: ctx.route.is_some(),
            reached_upstream: ctx.attempt.backend.is_some(),
            upstreams: &ctx.snapshot.upstreams,
            error: ctx.error.as_ref(),
        });
        if ctx.error != Some(crate::error::GatewayError::UsageLedgerFull) {
            self.state.usage.append(record);
        }
    }
}
