//! The proxy's error boundary: every failure a proxy client can see is a
//! `GatewayError`. The side app has its own enum (`side::error::SideError`); both
//! are rendered by `error_json`, the one place that writes OpenAI's error JSON.

use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

use crate::limits::{openai_duration, LimitKind};
use crate::protocols::Protocol;

fn rate_limit_message(
    kind: LimitKind,
    limit: u64,
    retry_after: Option<Duration>,
    needed: u64,
) -> String {
    let what = match kind {
        LimitKind::Requests => "requests per min (RPM)",
        LimitKind::Tokens => "tokens per min (TPM)",
        LimitKind::Concurrency => "concurrent requests",
    };
    match retry_after {
        Some(wait) => format!(
            "Rate limit reached for {what}: Limit {limit}. Please try again in {}.",
            openai_duration(wait)
        ),
        None => format!(
            "Request too large for {what}: Limit {limit}, Requested {needed}. Send a smaller request (or a lower max_tokens)."
        ),
    }
}

/// What a client learns about an error besides its message: the HTTP status and
/// OpenAI's `type`, `code` and `param`, which SDKs map to exception classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorFacts {
    pub status: u16,
    pub kind: &'static str,
    pub code: Option<&'static str>,
    pub param: Option<&'static str>,
}

impl ErrorFacts {
    pub const fn new(status: u16, kind: &'static str, code: &'static str) -> Self {
        Self {
            status,
            kind,
            code: Some(code),
            param: None,
        }
    }

    pub const fn with_param(mut self, param: Option<&'static str>) -> Self {
        self.param = param;
        self
    }
}

/// OpenAI's error body: `{"error":{"message","type","param","code"}}`.
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorObject<'a>,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

/// The one renderer of OpenAI's error JSON, for the proxy and the side app alike.
pub fn error_json(message: &str, facts: &ErrorFacts) -> Bytes {
    let body = ErrorBody {
        error: ErrorObject {
            message,
            kind: facts.kind,
            param: facts.param,
            code: facts.code,
        },
    };
    Bytes::from(serde_json::to_vec(&body).expect("error body serializes"))
}

/// OpenAI's two `type`s besides the rate-limit ones.
pub const INVALID: &str = "invalid_request_error";
pub const SERVER: &str = "server_error";

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GatewayError {
    #[error("You didn't provide an API key. Send it as `Authorization: Bearer bm_...`.")]
    MissingApiKey,
    #[error("Incorrect API key provided: {0}.")]
    InvalidApiKey(String),
    #[error("Unknown request URL: {method} {path}.")]
    UnknownUrl { method: String, path: String },
    #[error("Method {method} is not allowed on {path}.")]
    MethodNotAllowed { method: String, path: String },
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<&'static str>,
    },
    #[error("Request body is larger than the limit of {limit} bytes.")]
    BodyTooLarge { limit: usize },
    #[error("The request body did not arrive within {0} seconds.")]
    BodyTimeout(u64),
    #[error("The gateway is reading too many request bodies at once; retry shortly.")]
    BodiesInFlight,
    #[error("Too many invalid API keys from this address; retry later.")]
    TooManyInvalidKeys { retry_after: std::time::Duration },
    #[error("The model `{0}` does not exist or you do not have access to it.")]
    ModelNotFound(String),
    #[error("The model `{0}` has no price, and your plan is limited in credits; ask the operator to price it, or use a priced model.")]
    ModelNotPriced(String),
    #[error("The model `{model}` is not available on `{endpoint}`: its backends speak another API (a model served by Anthropic-speaking backends is available on /v1/messages only).")]
    ProtocolNotServed {
        model: String,
        endpoint: &'static str,
    },
    #[error("No healthy upstream is available for model `{0}`; every backend of its pool is down. Retry later.")]
    NoHealthyUpstream(String),
    #[error("The upstream for model `{0}` could not be reached or failed before answering.")]
    UpstreamFailed(String),
    #[error("The upstream for model `{0}` did not answer in time.")]
    UpstreamTimeout(String),
    /// `backend` is the configured URL (never holds a key).
    #[error("The TLS connection to upstream `{backend}` failed: {reason}.")]
    UpstreamTls { backend: String, reason: String },
    #[error("The upstream provider for model `{0}` refused the gateway's own credentials (not your API key); the operator must renew the backend's key.")]
    UpstreamKeyRefused(String),
    #[error("The gateway could not check the API key right now; retry shortly.")]
    KeyStoreUnavailable,
    #[error("The gateway cannot record usage right now (its database has been unavailable for a while); retry later.")]
    UsageLedgerFull,
    #[error("{}", rate_limit_message(*kind, *limit, *retry_after, *needed))]
    RateLimited {
        kind: LimitKind,
        limit: u64,
        retry_after: Option<Duration>,
        needed: u64,
    },
    #[error("You exceeded your current quota ({what} for this month); it resets on {resets_on}. Upgrade your plan for more.")]
    QuotaExceeded {
        what: &'static str,
        resets_on: String,
    },
    #[error("The client closed the connection before the response was complete.")]
    ClientClosedRequest,
    #[error("Internal gateway error.")]
    Internal,
}

impl GatewayError {
    pub fn facts(&self) -> ErrorFacts {
        let f = ErrorFacts::new;
        match self {
            Self::MissingApiKey | Self::InvalidApiKey(_) => f(401, INVALID, "invalid_api_key"),
            Self::UnknownUrl { .. } => f(404, INVALID, "unknown_url"),
            Self::MethodNotAllowed { .. } => f(405, INVALID, "method_not_allowed"),
            Self::InvalidRequest { param, .. } => {
                f(400, INVALID, "invalid_request_error").with_param(*param)
            }
            Self::BodyTooLarge { .. } => f(413, INVALID, "request_too_large"),
            Self::BodyTimeout(_) => f(408, INVALID, "request_timeout"),
            Self::BodiesInFlight => f(503, SERVER, "server_overloaded"),
            Self::TooManyInvalidKeys { .. } => f(429, INVALID, "too_many_invalid_keys"),
            Self::ModelNotFound(_) => f(404, INVALID, "model_not_found").with_param(Some("model")),
            // 403 like a model the key may not use: retrying cannot help.
            Self::ModelNotPriced(_) => {
                f(403, INVALID, "model_not_priced").with_param(Some("model"))
            }
            Self::ProtocolNotServed { .. } => {
                f(400, INVALID, "unsupported_endpoint").with_param(Some("model"))
            }
            Self::NoHealthyUpstream(_) => f(503, SERVER, "upstream_unavailable"),
            Self::UpstreamFailed(_) => f(502, SERVER, "upstream_error"),
            Self::UpstreamTimeout(_) => f(504, SERVER, "upstream_timeout"),
            Self::UpstreamTls { .. } => f(502, SERVER, "upstream_tls_error"),
            Self::UpstreamKeyRefused(_) => f(502, SERVER, "upstream_auth_error"),
            Self::KeyStoreUnavailable => f(503, SERVER, "service_unavailable"),
            Self::UsageLedgerFull => f(503, SERVER, "usage_ledger_full"),
            // OpenAI's `type` names the exhausted limit.
            Self::RateLimited { kind, .. } => f(
                429,
                if *kind == LimitKind::Tokens {
                    "tokens"
                } else {
                    "requests"
                },
                if *kind == LimitKind::Concurrency {
                    "concurrency_limit_exceeded"
                } else {
                    "rate_limit_exceeded"
                },
            ),
            // 429, not 402: OpenAI answers an exhausted quota with 429 and
            // `insufficient_quota`, and SDKs map exactly that to RateLimitError.
            Self::QuotaExceeded { .. } => f(429, "insufficient_quota", "insufficient_quota"),
            // nginx's convention; only ever recorded, the client is gone.
            Self::ClientClosedRequest => f(499, SERVER, "client_closed_request"),
            Self::Internal => ErrorFacts {
                status: 500,
                kind: SERVER,
                code: None,
                param: None,
            },
        }
    }

    pub fn status(&self) -> u16 {
        self.facts().status
    }

    pub fn code(&self) -> Option<&'static str> {
        self.facts().code
    }

    pub fn invalid(message: impl Into<String>, param: Option<&'static str>) -> Self {
        Self::InvalidRequest {
            message: message.into(),
            param,
        }
    }

    /// Headers that go with this error: when (and whether) to retry. OpenAI SDKs
    /// honour `retry-after-ms`, `retry-after` and `x-should-retry`.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::RateLimited {
                retry_after: Some(wait),
                ..
            } => vec![
                (
                    "retry-after",
                    wait.as_secs_f64().ceil().max(1.0).to_string(),
                ),
                ("retry-after-ms", wait.as_millis().max(1).to_string()),
            ],
            // Waiting cannot help: a request larger than the limit, or a spent quota.
            Self::RateLimited {
                retry_after: None, ..
            }
            | Self::QuotaExceeded { .. } => vec![("x-should-retry", "false".into())],
            Self::UsageLedgerFull => vec![("retry-after", "5".into())],
            Self::TooManyInvalidKeys { retry_after } => {
                vec![("retry-after", retry_after.as_secs().max(1).to_string())]
            }
            _ => Vec::new(),
        }
    }

    pub fn to_json(&self) -> Bytes {
        error_json(&self.to_string(), &self.facts())
    }

    /// The error as `protocol` shapes it: OpenAI's JSON, or Anthropic's
    /// (which carries the request id in the body too).
    pub fn render(&self, protocol: Protocol, request_id: &str) -> Bytes {
        match protocol {
            Protocol::OpenAi => self.to_json(),
            Protocol::Anthropic => crate::protocols::anthropic::error_json(
                &self.anthropic_message(),
                &self.facts(),
                Some(request_id),
            ),
        }
    }

    /// Anthropic's SDKs and Claude Code send the key in `x-api-key`; the
    /// message says so where OpenAI's says `Authorization`.
    fn anthropic_message(&self) -> String {
        match self {
            Self::MissingApiKey => {
                "x-api-key header is required (or `Authorization: Bearer bm_...`).".into()
            }
            other => other.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_matches_openai() {
        let v: serde_json::Value =
            serde_json::from_slice(&GatewayError::ModelNotFound("x".into()).to_json()).unwrap();
        let e = &v["error"];
        assert_eq!(e["type"], "invalid_request_error");
        assert_eq!(e["code"], "model_not_found");
        assert_eq!(e["param"], "model");
        assert!(e["message"].as_str().unwrap().contains("`x`"));
        let v: serde_json::Value =
            serde_json::from_slice(&GatewayError::Internal.to_json()).unwrap();
        assert!(v["error"]["code"].is_null());
        assert!(v["error"]["param"].is_null());
    }

    /// Anthropic's shape and types (<https://docs.anthropic.com/en/api/errors>),
    /// which its SDKs map to exception classes by status.
    #[test]
    fn anthropic_paths_get_anthropics_shape() {
        let cases = [
            (GatewayError::MissingApiKey, 401, "authentication_error"),
            (
                GatewayError::ModelNotFound("x".into()),
                404,
                "not_found_error",
            ),
            (
                GatewayError::invalid("bad", Some("messages")),
                400,
                "invalid_request_error",
            ),
            (
                GatewayError::BodyTooLarge { limit: 1 },
                413,
                "request_too_large",
            ),
            (
                GatewayError::QuotaExceeded {
                    what: "tokens",
                    resets_on: "2027-01-01".into(),
                },
                429,
                "rate_limit_error",
            ),
            (
                GatewayError::NoHealthyUpstream("x".into()),
                503,
                "overloaded_error",
            ),
            (GatewayError::UpstreamFailed("x".into()), 502, "api_error"),
            (
                GatewayError::UpstreamTimeout("x".into()),
                504,
                "timeout_error",
            ),
        ];
        for (e, status, kind) in cases {
            assert_eq!(e.status(), status, "{e:?}");
            let v: serde_json::Value =
                serde_json::from_slice(&e.render(Protocol::Anthropic, "req_1")).unwrap();
            assert_eq!(v["type"], "error", "{e:?}");
            assert_eq!(v["error"]["type"], kind, "{e:?}");
            assert!(v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()));
            assert_eq!(v["request_id"], "req_1");
        }
        let openai: serde_json::Value =
            serde_json::from_slice(&GatewayError::MissingApiKey.render(Protocol::OpenAi, "req_1"))
                .unwrap();
        assert_eq!(openai["error"]["code"], "invalid_api_key");
    }
}
