//! The proxy's error boundary: every failure a client can see is a `GatewayError`,
//! and this is the one place that turns it into OpenAI's error JSON.

use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

use crate::limits::{openai_duration, LimitKind};

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
    #[error("The model `{0}` does not exist or you do not have access to it.")]
    ModelNotFound(String),
    #[error("No healthy upstream is available for model `{0}`; every backend of its pool is down. Retry later.")]
    NoHealthyUpstream(String),
    #[error("The upstream for model `{0}` could not be reached or failed before answering.")]
    UpstreamFailed(String),
    #[error("The upstream for model `{0}` did not answer in time.")]
    UpstreamTimeout(String),
    #[error("The gateway could not check the API key right now; retry shortly.")]
    KeyStoreUnavailable,
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
    #[error("{0}")]
    PermissionDenied(String),
    #[error("You are not signed in.")]
    NotSignedIn,
    #[error("Wrong email or password.")]
    InvalidCredentials,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("Too many failed sign-in attempts; try again later.")]
    TooManyLogins { retry_after: Duration },
    #[error("The client closed the connection before the response was complete.")]
    ClientClosedRequest,
    #[error("Billing is not enabled on this gateway: plans are assigned by an administrator.")]
    BillingDisabled,
    #[error("The webhook signature is missing or does not match the body.")]
    InvalidSignature,
    #[error("The payment provider could not complete the request: {0}")]
    BillingProvider(String),
    #[error("Internal gateway error.")]
    Internal,
}

/// OpenAI's error body: `{"error":{"message","type","param","code"}}`.
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorObject<'a>,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    message: String,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl GatewayError {
    pub fn status(&self) -> u16 {
        match self {
            Self::MissingApiKey | Self::InvalidApiKey(_) => 401,
            Self::PermissionDenied(_) => 403,
            Self::NotSignedIn | Self::InvalidCredentials => 401,
            Self::Conflict(_) => 409,
            Self::NotFound(_) | Self::BillingDisabled => 404,
            Self::InvalidSignature => 401,
            Self::BillingProvider(_) => 502,
            Self::TooManyLogins { .. } => 429,
            Self::UnknownUrl { .. } | Self::ModelNotFound(_) => 404,
            Self::MethodNotAllowed { .. } => 405,
            Self::InvalidRequest { .. } => 400,
            Self::BodyTooLarge { .. } => 413,
            // 429, not 402: OpenAI answers an exhausted quota with 429 and
            // `insufficient_quota`, and SDKs map exactly that to RateLimitError.
            Self::RateLimited { .. } | Self::QuotaExceeded { .. } => 429,
            Self::NoHealthyUpstream(_) | Self::KeyStoreUnavailable => 503,
            Self::UpstreamFailed(_) => 502,
            Self::UpstreamTimeout(_) => 504,
            Self::Internal => 500,
            // nginx's convention; only ever recorded, the client is gone.
            Self::ClientClosedRequest => 499,
        }
    }

    /// OpenAI's `type`, which SDKs map to exception classes together with the status.
    fn kind(&self) -> &'static str {
        match self {
            Self::MissingApiKey | Self::InvalidApiKey(_) => "invalid_request_error",
            Self::UnknownUrl { .. }
            | Self::MethodNotAllowed { .. }
            | Self::InvalidRequest { .. }
            | Self::BodyTooLarge { .. }
            | Self::ModelNotFound(_)
            | Self::PermissionDenied(_)
            | Self::NotSignedIn
            | Self::InvalidCredentials
            | Self::Conflict(_)
            | Self::NotFound(_)
            | Self::BillingDisabled
            | Self::InvalidSignature
            | Self::TooManyLogins { .. } => "invalid_request_error",
            Self::RateLimited {
                kind: LimitKind::Tokens,
                ..
            } => "tokens",
            Self::RateLimited { .. } => "requests",
            Self::QuotaExceeded { .. } => "insufficient_quota",
            Self::NoHealthyUpstream(_)
            | Self::UpstreamFailed(_)
            | Self::UpstreamTimeout(_)
            | Self::BillingProvider(_)
            | Self::KeyStoreUnavailable
            | Self::ClientClosedRequest
            | Self::Internal => "server_error",
        }
    }

    pub fn code(&self) -> Option<&'static str> {
        Some(match self {
            Self::MissingApiKey | Self::InvalidApiKey(_) => "invalid_api_key",
            Self::UnknownUrl { .. } => "unknown_url",
            Self::PermissionDenied(_) => "permission_denied",
            Self::NotSignedIn => "not_signed_in",
            Self::InvalidCredentials => "invalid_credentials",
            Self::Conflict(_) => "conflict",
            Self::NotFound(_) => "not_found",
            Self::BillingDisabled => "billing_disabled",
            Self::InvalidSignature => "invalid_signature",
            Self::BillingProvider(_) => "billing_provider_error",
            Self::TooManyLogins { .. } => "too_many_attempts",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::InvalidRequest { .. } => "invalid_request_error",
            Self::BodyTooLarge { .. } => "request_too_large",
            Self::RateLimited {
                kind: LimitKind::Concurrency,
                ..
            } => "concurrency_limit_exceeded",
            Self::RateLimited { .. } => "rate_limit_exceeded",
            Self::QuotaExceeded { .. } => "insufficient_quota",
            Self::ModelNotFound(_) => "model_not_found",
            Self::NoHealthyUpstream(_) => "upstream_unavailable",
            Self::UpstreamFailed(_) => "upstream_error",
            Self::UpstreamTimeout(_) => "upstream_timeout",
            Self::KeyStoreUnavailable => "service_unavailable",
            Self::ClientClosedRequest => "client_closed_request",
            Self::Internal => return None,
        })
    }

    fn param(&self) -> Option<&'static str> {
        match self {
            Self::InvalidRequest { param, .. } => *param,
            Self::ModelNotFound(_) => Some("model"),
            _ => None,
        }
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
            Self::TooManyLogins { retry_after } => {
                vec![("retry-after", retry_after.as_secs().max(1).to_string())]
            }
            // Waiting cannot help: a request larger than the limit, or a spent quota.
            Self::RateLimited {
                retry_after: None, ..
            }
            | Self::QuotaExceeded { .. } => vec![("x-should-retry", "false".into())],
            _ => Vec::new(),
        }
    }

    pub fn to_json(&self) -> Bytes {
        let body = ErrorBody {
            error: ErrorObject {
                message: self.to_string(),
                kind: self.kind(),
                param: self.param(),
                code: self.code(),
            },
        };
        Bytes::from(serde_json::to_vec(&body).expect("error body serializes"))
    }
}

/// The side app (axum) answers with the same error JSON as the proxy.
impl axum::response::IntoResponse for GatewayError {
    fn into_response(self) -> axum::response::Response {
        let status = axum::http::StatusCode::from_u16(self.status())
            .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (
            status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            self.to_json(),
        )
            .into_response();
        for (name, value) in self.headers() {
            if let Ok(v) = axum::http::HeaderValue::from_str(&value) {
                resp.headers_mut().insert(name, v);
            }
        }
        resp
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
}
