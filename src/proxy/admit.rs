//! Admission: the endpoint, the key, the quota and rate-limit slots, the bounded
//! body and the pool for its model, or the answer the gateway gives itself
//! (the models list).

use bytes::Bytes;
use http::header;
use pingora::proxy::Session;

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::ctx::{Admission, Ctx, Route};
use super::request::{inspect, inspect_form, strip_routing_fields, Endpoint};
use super::respond::write_json;
use crate::auth::ApiKey;
use crate::error::GatewayError;
use crate::limits::{estimate_tokens, Ask, QuotaLimits};
use crate::protocols::anthropic::to_chat;
use crate::protocols::{Protocol, Serving};
use crate::state::AppState;
use crate::store::now_ms;
use crate::upstream::BackendMeta;
use crate::upstream::Upstreams;

pub enum Admitted {
    /// Go on to the upstream.
    Proxy,
    /// The gateway answered by itself (e.g. the models list).
    Answered,
}

/// The client's key: `Authorization: Bearer`, or on Anthropic's endpoints
/// also `x-api-key` (what the Anthropic SDKs and Claude Code send).
fn api_key(session: &Session, protocol: Protocol) -> Option<&str> {
    let headers = &session.req_header().headers;
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .and_then(|(scheme, token)| scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()));
    if protocol != Protocol::Anthropic {
        return bearer;
    }
    bearer.or_else(|| {
        headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    })
}

pub async fn admit(
    state: &AppState,
    session: &mut Session,
    ctx: &mut Ctx,
) -> Result<Admitted, GatewayError> {
    let req = session.req_header();
    let endpoint = Endpoint::route(req.method.as_str(), req.uri.path())?;
    ctx.admission.endpoint = Some(endpoint.clone());
    if !state.usage.accepting() {
        // Every answered request must have its record; none could be kept now.
        return Err(GatewayError::UsageLedgerFull);
    }

    let token = api_key(session, endpoint.protocol()).ok_or(GatewayError::MissingApiKey)?;
    let client = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| state.boot.trusted_proxies.client_ip(a.ip(), &req.headers));
    let key = state.keys.authenticate(token, client).await?;
    ctx.admission.key = Some(key.clone());

    // From here on the request counts against the key's limits whatever comes
    // next (an unknown model, a bad body), and its request and concurrency
    // slots are taken before any body byte is read.
    limit(state, ctx, &key).await?;

    let upstreams = ctx.snapshot.upstreams.clone();
    let answer = match &endpoint {
        Endpoint::ListModels => Some(models_list(state, &upstreams, &key)),
        Endpoint::GetModel(id) => {
            ctx.admission.model = Some(id.clone());
            if !upstreams.listed_models().contains(&id.as_str()) || !key.allows_model(id) {
                return Err(GatewayError::ModelNotFound(id.clone()));
            }
            Some(to_bytes(&model_value(state, &upstreams, id)))
        }
        _ => None,
    };
    if let Some(body) = answer {
        write_json(session, ctx, 200, body, &[])
            .await
            .map_err(|_| GatewayError::Internal)?;
        return Ok(Admitted::Answered);
    }

    let proxy = ctx.snapshot.config.proxy;
    let reading = read_body(
        session,
        proxy.max_body_bytes,
        &state.body_budget,
        &mut ctx.admission,
    );
    // Pingora's timeout arms no timer for a body that is already in (the
    // usual case): tokio's registered and cancelled one per request.
    let body = match pingora::time::timeout(proxy.body_timeout, reading).await {
        Ok(Err(too_large @ GatewayError::BodyTooLarge { .. })) => {
            linger(session).await;
            return Err(too_large);
        }
        Ok(body) => body?,
        Err(_) => return Err(GatewayError::BodyTimeout(proxy.body_timeout.as_secs())),
    };
    let (inspected, form_routing_field) = if endpoint.is_form() {
        let content_type = session
            .req_header()
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        inspect_form(content_type, body)?
    } else {
        (inspect(&endpoint, body)?, None)
    };
    ctx.admission.model = Some(inspected.model.clone());
    ctx.admission.stream = inspected.stream;

    if !key.allows_model(&inspected.model) {
        return Err(GatewayError::ModelNotFound(inspected.model));
    }
    let pool = upstreams
        .pool_for(&inspected.model)
        .cloned()
        .ok_or_else(|| GatewayError::ModelNotFound(inspected.model.clone()))?;
    // Backends that cannot serve this endpoint count as tried already.
    let unserved: Vec<usize> = pool
        .backends()
        .filter(|b| serving(&endpoint, b) == Serving::No)
        .map(|b| b.id)
        .collect();
    if unserved.len() == pool.backends().count() {
        if endpoint == Endpoint::MessagesCountTokens {
            // No backend counts tokens itself: the gateway's tokenizer does (free, like Anthropic's).
            let tokens = to_chat::count_tokens(&inspected.model, &inspected.body)?;
            let body = to_bytes(&serde_json::json!({ "input_tokens": tokens }));
            write_json(session, ctx, 200, body, &[])
                .await
                .map_err(|_| GatewayError::Internal)?;
            return Ok(Admitted::Answered);
        }
        return Err(GatewayError::ProtocolNotServed {
            model: inspected.model,
            endpoint: endpoint.path(),
        });
    }
    ctx.attempt.unserved = unserved.len();
    ctx.attempt.tried = unserved;
    let in_credits = ctx
        .snapshot
        .plan_of(&key)
        .is_some_and(|p| p.monthly_credits_usd.is_some());
    if in_credits && !ctx.snapshot.prices.is_priced(&inspected.model) {
        return Err(GatewayError::ModelNotPriced(inspected.model));
    }
    let estimate = if endpoint.counts_text_tokens() {
        estimate_tokens(inspected.body.len(), inspected.max_tokens)
    } else {
        0
    };
    ctx.admission.estimate = estimate;
    take_tokens(ctx, estimate)?;
    let body = if inspected.routing && !pool.allow_routing_fields {
        if let Some(field) = form_routing_field {
            // Removing a part would mean rewriting the upload; refusing is plain.
            return Err(GatewayError::invalid(
                format!("The form field `{field}` would make the upstream route or bill this request other than by its `model`; this gateway does not accept it."),
                Some(field),
            ));
        }
        strip_routing_fields(&inspected.body)?
    } else {
        inspected.body
    };
    // Translated once, here, when a backend of the pool needs it: a request
    // the translation refuses is answered now, in the client's protocol.
    let translation = pool.backends().find_map(|b| match serving(&endpoint, b) {
        Serving::Translated(t) => Some(t),
        _ => None,
    });
    let translated = match translation {
        Some(t) => Some((t, t.request(&body)?)),
        None => None,
    };
    ctx.route = Some(Route {
        pool,
        body,
        injected_usage: inspected.injected_usage,
        form_model: inspected.form_model,
        translated,
    });
    Ok(Admitted::Proxy)
}

/// How `backend` serves a request on `endpoint`. Anthropic's token count
/// goes only to Anthropic backends (the gateway answers it for the others).
pub fn serving(endpoint: &Endpoint, backend: &BackendMeta) -> Serving {
    if *endpoint == Endpoint::MessagesCountTokens && backend.protocol != Protocol::Anthropic {
        return Serving::No;
    }
    crate::protocols::serving(
        endpoint.protocol(),
        *endpoint == Endpoint::Responses,
        backend.protocol,
        backend.responses_api,
    )
}

/// Quota first (a spent month is final), then the request and concurrency
/// slots. On success the request holds a permit until it ends.
async fn limit(state: &AppState, ctx: &mut Ctx, key: &ApiKey) -> Result<(), GatewayError> {
    let snapshot = ctx.snapshot.clone();
    let plan = snapshot.plan_of(key);
    if let (Some(user_id), Some(plan)) = (key.user_id, plan) {
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
        key: snapshot.key_limits(key, plan),
        user: key.user_id.zip(plan.map(|p| p.limits())),
        tokens: 0,
    };
    match state.limiter.admit_in_cluster(&ask).await {
        Ok(permit) => {
            ctx.admission.rate_info = Some(permit.info.clone());
            ctx.admission.permit = Some(permit);
            Ok(())
        }
        Err(denied) => {
            ctx.admission.rate_info = Some(denied.info);
            Err(GatewayError::RateLimited {
                kind: denied.kind,
                limit: denied.limit,
                retry_after: denied.retry_after,
                needed: 0,
            })
        }
    }
}

/// Once the body tells the token estimate: the tokens buckets.
fn take_tokens(ctx: &mut Ctx, tokens: u64) -> Result<(), GatewayError> {
    let Some(permit) = ctx.admission.permit.as_mut() else {
        return Ok(());
    };
    let taken = permit.take_tokens(tokens);
    ctx.admission.rate_info = Some(permit.info.clone());
    taken.map_err(|denied| GatewayError::RateLimited {
        kind: denied.kind,
        limit: denied.limit,
        retry_after: denied.retry_after,
        needed: tokens,
    })
}

/// Reads the whole body, refusing more than `limit` bytes. The body is held
/// once, in Pingora's retry buffer (which is also how it reaches the upstream,
/// replayed at each attempt); what is returned shares that buffer
/// (vendor/README.md says why the buffer is joined only once).
async fn read_body(
    session: &mut Session,
    limit: usize,
    budget: &Arc<Semaphore>,
    admission: &mut Admission,
) -> Result<Bytes, GatewayError> {
    let declared = session
        .req_header()
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(GatewayError::BodyTooLarge { limit });
    }
    // Bytes held for bodies, over all requests: what is declared up front,
    // else chunk by chunk; given back when the request ends.
    let reserve = |n: usize, admission: &mut Admission| -> Result<(), GatewayError> {
        let n = u32::try_from(n).map_err(|_| GatewayError::BodiesInFlight)?;
        let permit = budget
            .clone()
            .try_acquire_many_owned(n)
            .map_err(|_| GatewayError::BodiesInFlight)?;
        match admission.body_budget.as_mut() {
            Some(held) => held.merge(permit),
            None => admission.body_budget = Some(permit),
        }
        Ok(())
    };
    let declared = declared.unwrap_or(0);
    reserve(declared, admission)?;
    session.enable_retry_buffering();
    let mut read = 0;
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                read += chunk.len();
                if read > limit {
                    return Err(GatewayError::BodyTooLarge { limit });
                }
                if read > declared {
                    reserve(chunk.len().min(read - declared), admission)?;
                }
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
    match session.get_retry_buffer() {
        Some(body) if body.len() == read => Ok(body),
        None if read == 0 => Ok(Bytes::new()),
        // The buffer holds up to config::MAX_BODY_LIMIT, which bounds `limit`.
        _ => Err(GatewayError::Internal),
    }
}

/// How long the rest of a refused body is read and dropped, in all and between
/// two reads (nginx's `lingering_time` and `lingering_timeout` defaults).
const LINGER_TOTAL: std::time::Duration = std::time::Duration::from_secs(30);
const LINGER_IDLE: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads and drops the rest of a refused body before the answer is written: a
/// client still writing its body (most write it all before reading) would
/// otherwise get a broken pipe instead of the error. Bounded by time, not by
/// bytes, since nothing read is kept: Pingora's retry buffer drops its
/// contents once past its capacity (vendor/README.md). Past the time the
/// connection is closed after the answer.
async fn linger(session: &mut Session) {
    let deadline = tokio::time::Instant::now() + LINGER_TOTAL;
    loop {
        let idle = tokio::time::Instant::now() + LINGER_IDLE;
        let read = tokio::time::timeout_at(idle.min(deadline), session.read_request_body());
        match read.await {
            Ok(Ok(Some(_))) => continue,
            _ => break,
        }
    }
}

fn models_list(state: &AppState, upstreams: &Upstreams, key: &ApiKey) -> Bytes {
    let data: Vec<serde_json::Value> = upstreams
        .listed_models()
        .into_iter()
        .filter(|m| key.allows_model(m))
        .map(|m| model_value(state, upstreams, m))
        .collect();
    to_bytes(&serde_json::json!({"object": "list", "data": data}))
}

fn model_value(state: &AppState, upstreams: &Upstreams, id: &str) -> serde_json::Value {
    let owner = upstreams
        .pool_for(id)
        .map_or("bluesminds", |p| p.name.as_str());
    serde_json::json!({
        "id": id,
        "object": "model",
        "created": state.started_at,
        "owned_by": owner,
    })
}

fn to_bytes(v: &serde_json::Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).expect("a JSON value serializes"))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use pingora::protocols::http::body_buffer::FixedBuffer;

    /// `read_body` relies on the vendored retry buffer holding a body once:
    /// joined on the first take, shared by every later take (each failover
    /// attempt replays it).
    #[test]
    fn the_retry_buffer_is_joined_once_and_then_shared() {
        let mut buffer = FixedBuffer::new(16);
        for part in [&b"{\"model\":"[..], b"\"m\"", b"}"] {
            buffer.write_to_buffer(&Bytes::copy_from_slice(part));
        }
        let first = buffer.get_buffer().unwrap();
        assert_eq!(first, Bytes::from_static(b"{\"model\":\"m\"}"));
        let replay = buffer.get_buffer().unwrap();
        assert_eq!(first.as_ptr(), replay.as_ptr(), "a replay copied the body");
    }
}
