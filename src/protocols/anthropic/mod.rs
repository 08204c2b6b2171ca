//! Anthropic's Messages API: its error shape, and the translation to and from
//! OpenAI's Chat Completions for backends that speak only that.
//!
//! Errors: <https://docs.anthropic.com/en/api/errors>.

pub mod to_chat;

use bytes::Bytes;
use serde::Serialize;

use crate::error::ErrorFacts;

/// Anthropic's error `type` for a status, as its API uses them (the SDKs map
/// the status to their exception classes: 400 BadRequestError, 401
/// AuthenticationError, 403 PermissionDeniedError, 404 NotFoundError, 413,
/// 429 RateLimitError, >= 500 InternalServerError).
pub fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 | 503 => "overloaded_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: ErrorObject<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: &'a str,
}

/// `{"type":"error","error":{"type","message"},"request_id"}`: the one
/// renderer of Anthropic's error JSON.
pub fn error_json(message: &str, facts: &ErrorFacts, request_id: Option<&str>) -> Bytes {
    let body = ErrorBody {
        kind: "error",
        error: ErrorObject {
            kind: error_type(facts.status),
            message,
        },
        request_id,
    };
    Bytes::from(serde_json::to_vec(&body).expect("error body serializes"))
}
