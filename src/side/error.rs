//! The side app's error boundary: every failure a dashboard, billing or admin
//! client can see is a `SideError`, answered in the same OpenAI error JSON as the
//! proxy's errors (rendered by `crate::error::error_json`).

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::error::{error_json, ErrorFacts, INVALID, SERVER};
use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SideError {
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<&'static str>,
    },
    #[error("Unknown request URL: {method} {path}.")]
    UnknownUrl { method: String, path: String },
    /// A bearer token that is neither the admin token nor a working API key.
    #[error("Incorrect API key provided: {0}.")]
    InvalidApiKey(String),
    #[error("You are not signed in.")]
    NotSignedIn,
    #[error("Wrong email or password.")]
    InvalidCredentials,
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("Too many failed sign-in attempts; try again later.")]
    TooManyLogins { retry_after: Duration },
    #[error("Too many accounts were created from this address; try again later.")]
    TooManySignups { retry_after: Duration },
    #[error("Too many unknown API keys were presented from this address; try again later.")]
    TooManyInvalidKeys { retry_after: Duration },
    #[error("The gateway is busy checking passwords; retry in a few seconds.")]
    Busy,
    #[error("Billing is not enabled on this gateway: plans are assigned by an administrator.")]
    BillingDisabled,
    #[error("The webhook signature is missing or does not match the body.")]
    InvalidSignature,
    #[error("The payment provider could not complete the request: {0}")]
    BillingProvider(String),
    #[error("The database is unavailable right now; retry shortly.")]
    DatabaseUnavailable,
    #[error("The request did not complete within {0} seconds.")]
    RequestTimeout(u64),
    #[error("Internal gateway error.")]
    Internal,
}

impl SideError {
    pub fn facts(&self) -> ErrorFacts {
        let f = ErrorFacts::new;
        match self {
            Self::InvalidRequest { param, .. } => {
                f(400, INVALID, "invalid_request_error").with_param(*param)
            }
            Self::UnknownUrl { .. } => f(404, INVALID, "unknown_url"),
            Self::InvalidApiKey(_) => f(401, INVALID, "invalid_api_key"),
            Self::NotSignedIn => f(401, INVALID, "not_signed_in"),
            Self::InvalidCredentials => f(401, INVALID, "invalid_credentials"),
            Self::PermissionDenied(_) => f(403, INVALID, "permission_denied"),
            Self::Conflict(_) => f(409, INVALID, "conflict"),
            Self::NotFound(_) => f(404, INVALID, "not_found"),
            Self::TooManyLogins { .. } => f(429, INVALID, "too_many_attempts"),
            Self::TooManySignups { .. } => f(429, INVALID, "too_many_signups"),
            Self::TooManyInvalidKeys { .. } => f(429, INVALID, "too_many_invalid_keys"),
            Self::Busy => f(503, SERVER, "busy"),
            Self::BillingDisabled => f(404, INVALID, "billing_disabled"),
            Self::InvalidSignature => f(401, INVALID, "invalid_signature"),
            Self::BillingProvider(_) => f(502, SERVER, "billing_provider_error"),
            // The code clients have always seen for a database failure.
            Self::DatabaseUnavailable => f(503, SERVER, "service_unavailable"),
            Self::RequestTimeout(_) => f(408, INVALID, "request_timeout"),
            Self::Internal => ErrorFacts {
                status: 500,
                kind: SERVER,
                code: None,
                param: None,
            },
        }
    }

    pub fn invalid(message: impl Into<String>, param: Option<&'static str>) -> Self {
        Self::InvalidRequest {
            message: message.into(),
            param,
        }
    }
}

/// Only `NotFound` says something to the client; every other store failure is
/// logged here and answered with a 503 that names no internals.
impl From<StoreError> for SideError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => Self::NotFound(m),
            other => {
                tracing::error!(error = %other, "side app database error");
                Self::DatabaseUnavailable
            }
        }
    }
}

impl IntoResponse for SideError {
    fn into_response(self) -> Response {
        let facts = self.facts();
        let status =
            StatusCode::from_u16(facts.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            error_json(&self.to_string(), &facts),
        )
            .into_response();
        let retry_after = match self {
            // Rounded up: a client that waits what it is told is let in.
            Self::TooManyLogins { retry_after }
            | Self::TooManySignups { retry_after }
            | Self::TooManyInvalidKeys { retry_after } => {
                Some(retry_after.as_millis().div_ceil(1000).max(1) as u64)
            }
            Self::Busy => Some(2),
            _ => None,
        };
        if let Some(secs) = retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn database_failures_say_so_and_keep_their_code() {
        let resp = SideError::from(StoreError::Db(sqlx::Error::PoolTimedOut)).into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(resp.into_body(), 4096).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "service_unavailable");
        assert_eq!(v["error"]["type"], "server_error");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("database is unavailable"));
        assert_eq!(
            SideError::from(StoreError::NotFound("no server with id 3".into())),
            SideError::NotFound("no server with id 3".into())
        );
    }

    #[test]
    fn a_throttled_login_says_when_to_retry() {
        let resp = SideError::TooManyLogins {
            retry_after: Duration::from_secs(900),
        }
        .into_response();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "900");
    }
}
