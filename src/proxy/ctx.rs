//! Per-request state carried across Pingora's phases, grouped by the phase that
//! fills it: what admission decided, the current upstream attempt, and the
//! response being streamed. Later phases read earlier groups; none writes them.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use pingora::{Error, ErrorSource, ErrorType};

use super::rename::ModelRename;
use super::request::Endpoint;
use crate::auth::ApiKey;
use crate::error::GatewayError;
use crate::limits::{Permit, RateInfo};
use crate::protocols::{AnswerTranslator, Protocol, Translation};
use crate::state::Snapshot;
use crate::upstream::{tls_reason, BackendMeta, Pool};
use crate::usage::ResponseCounter;

pub struct Ctx {
    pub request_id: String,
    /// The id as backends get it: the same UUID, in its canonical hyphenated
    /// form (`req_` + hex is OpenAI's form, for clients and records).
    pub request_uuid: uuid::Uuid,
    pub started: Instant,
    /// Config, pools and prices for the whole request.
    pub snapshot: Arc<Snapshot>,
    pub admission: Admission,
    /// Set only when admission sends the request upstream.
    pub route: Option<Route>,
    pub attempt: Attempt,
    /// Set once the response header goes to the client: no failover after that.
    pub response: Option<Streamed>,
    /// Why admission refused the request: the final error when set.
    pub refused: Option<GatewayError>,
    /// The error the client was answered with, decided once by `settle`.
    pub error: Option<GatewayError>,
    /// The usage record is in the ledger (written once, at the end of the
    /// response body when the upstream reported usage, else at logging).
    pub recorded: bool,
}

/// What admission learned, filled as it goes: a refusal after the key was
/// authenticated still records the key and the model.
#[derive(Default)]
pub struct Admission {
    pub endpoint: Option<Endpoint>,
    pub key: Option<Arc<ApiKey>>,
    pub model: Option<String>,
    pub stream: bool,
    /// Rate-limit slots held by this request (released when it ends).
    pub permit: Option<Permit>,
    /// What the `x-ratelimit-*` headers say (also on denials).
    pub rate_info: Option<RateInfo>,
    /// This request's share of `server.max_body_bytes_in_flight`.
    pub body_budget: Option<tokio::sync::OwnedSemaphorePermit>,
    /// Tokens debited before the answer (prompt bytes / 4 + `max_tokens`):
    /// what an abandoned answer that never reported usage is billed at least.
    pub estimate: u64,
}

/// A request admission sends upstream.
pub struct Route {
    pub pool: Arc<Pool>,
    /// The body to send upstream; Pingora replays the downstream body through
    /// `request_body_filter`, where it is swapped for this one.
    pub body: Bytes,
    /// The gateway added `stream_options.include_usage`; the client must not see its chunk.
    pub injected_usage: bool,
    /// Where a form body's `model` value is (a backend's own name goes there).
    pub form_model: Option<std::ops::Range<usize>>,
    /// The body for backends that speak another protocol, translated once at
    /// admission (a bad request is refused then, in the client's protocol).
    pub translated: Option<(Translation, Bytes)>,
}

#[derive(Default)]
pub struct Attempt {
    /// Backend ids tried so far, in order, after those that cannot serve the
    /// endpoint (`unserved` of them, put first by admission).
    pub tried: Vec<usize>,
    pub unserved: usize,
    /// Whether any backend tried so far passed its health checks.
    pub tried_healthy: bool,
    pub backend: Option<Arc<BackendMeta>>,
    /// Set by upstream_response_filter when an error answer should go to the next backend.
    pub failover: bool,
    /// Backends tried that refused their own key (401/403).
    pub keys_refused: usize,
    /// The last backend tried refused its key; the client gets a 502 for it.
    pub key_refused_last: bool,
    /// No backend was left to try.
    pub exhausted: bool,
    /// The last TLS failure of a backend tried: its URL and why. A request
    /// that ends without an answer reports it, even when failover went on to
    /// a backend that failed otherwise: it is the failure an operator can fix.
    pub tls_failure: Option<(String, String)>,
    /// This backend's body, when it names the model its own way
    /// (`backends[].models`); else the route's body goes.
    pub body: Option<Bytes>,
    /// Its answers get the public model name back.
    pub rename: Option<ModelRename>,
    /// This backend gets the request translated (and its answer is translated back).
    pub translation: Option<Translation>,
}

pub struct Streamed {
    /// The status sent to the client (its header may still be buffered when
    /// the record is written at the end of the body).
    pub status: u16,
    pub counter: ResponseCounter,
    pub first_byte: Option<Instant>,
    pub completed: bool,
    /// The client left and the upstream is read on (`usage.abandoned_read_*`):
    /// the bytes of answer since then.
    pub abandoned_bytes: Option<u64>,
    /// Turns the backend's answer into the client's protocol (after counting).
    pub translator: Option<Box<dyn AnswerTranslator>>,
}

/// `req_` and the request's UUID in hex, as OpenAI's ids look (without
/// `format!`, which cost ~800 instructions a request).
fn request_id(uuid: uuid::Uuid) -> String {
    let mut hex = uuid::Uuid::encode_buffer();
    let mut id = String::with_capacity(4 + uuid::fmt::Simple::LENGTH);
    id.push_str("req_");
    id.push_str(uuid.simple().encode_lower(&mut hex));
    id
}

impl Ctx {
    pub fn new(snapshot: Arc<Snapshot>) -> Self {
        let request_uuid = uuid::Uuid::now_v7();
        Self {
            request_uuid,
            request_id: request_id(request_uuid),
            started: Instant::now(),
            snapshot,
            admission: Admission::default(),
            route: None,
            attempt: Attempt::default(),
            response: None,
            refused: None,
            error: None,
            recorded: false,
        }
    }

    /// The protocol the client speaks (OpenAI's for a path the gateway does not know).
    pub fn protocol(&self) -> Protocol {
        self.admission
            .endpoint
            .as_ref()
            .map_or(Protocol::OpenAi, Endpoint::protocol)
    }

    pub fn model(&self) -> &str {
        self.admission.model.as_deref().unwrap_or_default()
    }

    /// The one place the error a request ends with is decided: admission's
    /// refusal, else a pool with no backend left, else Pingora's failure `e`
    /// classified. A stream that completed has no error whatever Pingora says
    /// afterwards.
    pub fn settle(&mut self, e: Option<&Error>) -> Option<&GatewayError> {
        if self.error.is_none() {
            self.error = if let Some(refused) = self.refused.clone() {
                Some(refused)
            } else if let Some(r) = self.response.as_ref().filter(|r| r.completed) {
                // Read to its end without the client: the answer is whole, and
                // the record still says the client left.
                r.abandoned_bytes.map(|_| GatewayError::ClientClosedRequest)
            } else if self.attempt.key_refused_last
                || (self.attempt.exhausted
                    && self.attempt.keys_refused + self.attempt.unserved
                        == self.attempt.tried.len()
                    && self.attempt.keys_refused > 0)
            {
                Some(GatewayError::UpstreamKeyRefused(self.model().to_string()))
            } else if self.attempt.exhausted {
                let model = self.model().to_string();
                // Every backend failed its health checks and then this request too:
                // the pool is down. Otherwise healthy backends failed it: 502.
                // A bad certificate fails the health checks as well, so its
                // reason wins over both.
                Some(if let Some(tls) = self.tls_error(true) {
                    tls
                } else if self.attempt.tried_healthy {
                    GatewayError::UpstreamFailed(model)
                } else {
                    GatewayError::NoHealthyUpstream(model)
                })
            } else {
                e.map(|e| match self.classify(e) {
                    GatewayError::UpstreamFailed(model) => self
                        .tls_error(false)
                        .unwrap_or(GatewayError::UpstreamFailed(model)),
                    other => other,
                })
            };
        }
        self.error.as_ref()
    }

    /// Notes a failure of the current backend (`fail_to_connect`,
    /// `error_while_proxy`): a TLS one is kept for the final answer.
    pub fn note_failure(&mut self, e: &Error) {
        if let (Some(reason), Some(backend)) = (tls_reason(e), &self.attempt.backend) {
            backend.note_tls_failure(&reason);
            self.attempt.tls_failure = Some((backend.display.clone(), reason));
        }
    }

    /// This request's TLS failure, else (when `pool_wide`) the last one of a
    /// backend of its pool: one that fails its TLS handshake is soon out of
    /// rotation, so a later request never tries it, yet that is still why
    /// nothing is left to serve it.
    fn tls_error(&self, pool_wide: bool) -> Option<GatewayError> {
        let (backend, reason) = self.attempt.tls_failure.clone().or_else(|| {
            let pool = &self.route.as_ref().filter(|_| pool_wide)?.pool;
            pool.backends()
                .find_map(|b| Some((b.display.clone(), b.tls_failure()?.to_string())))
        })?;
        Some(GatewayError::UpstreamTls { backend, reason })
    }

    /// The error for a Pingora failure the gateway did not decide itself.
    fn classify(&self, e: &Error) -> GatewayError {
        let model = self.model().to_string();
        if e.esource() == &ErrorSource::Downstream {
            return GatewayError::ClientClosedRequest;
        }
        match e.etype() {
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
                GatewayError::UpstreamTimeout(model)
            }
            _ if e.esource() == &ErrorSource::Upstream || self.attempt.backend.is_some() => {
                GatewayError::UpstreamFailed(model)
            }
            _ => GatewayError::Internal,
        }
    }
}
