//! An upstream's error (OpenAI's `{"error":{"message",...}}`, vLLM's
//! `{"object":"error","message"}`, FastAPI's `{"detail"}`) in Anthropic's
//! shape, typed by status as <https://docs.anthropic.com/en/api/errors>
//! lists them, so the SDKs raise the matching exception class.

use bytes::Bytes;
use serde_json::Value;

use super::wire::{ErrorBody, ErrorObject};
use crate::protocols::anthropic::error_type;

/// The message of an upstream error body, whatever its dialect.
pub(super) fn upstream_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
    v.get("error")
        .and_then(|e| e.get("message").and_then(text).or_else(|| text(e)))
        .or_else(|| v.get("message").and_then(text))
        .or_else(|| v.get("detail").and_then(text))
        .or_else(|| v.get("detail").map(Value::to_string))
}

pub(super) fn error_json(kind: &str, message: &str) -> Bytes {
    let body = ErrorBody {
        kind: "error",
        error: ErrorObject { kind, message },
    };
    Bytes::from(serde_json::to_vec(&body).expect("error bodies serialize"))
}

/// The Anthropic error body for an upstream error answer.
pub(super) fn translate(status: u16, body: &[u8]) -> Bytes {
    let message = upstream_message(body).unwrap_or_else(|| {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        if text.is_empty() {
            format!("The upstream answered with status {status}.")
        } else {
            // A proxy's HTML error page can be long; its start says enough.
            text.chars().take(500).collect()
        }
    });
    error_json(error_type(status), &message)
}

/// The `error` object of an error reported inside a Chat stream, as an
/// Anthropic error type and message. LiteLLM puts the status in `code`.
pub(super) fn stream_error(error: &Value) -> (&'static str, String) {
    let status = error
        .get("code")
        .and_then(|c| {
            c.as_u64()
                .or_else(|| c.as_str().and_then(|s| s.parse().ok()))
        })
        .and_then(|c| u16::try_from(c).ok())
        .unwrap_or(500);
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| error.to_string());
    (error_type(status), message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_anthropic_types() {
        for (status, kind) in [
            (400, "invalid_request_error"),
            (401, "authentication_error"),
            (403, "permission_error"),
            (404, "not_found_error"),
            (413, "request_too_large"),
            (422, "invalid_request_error"),
            (429, "rate_limit_error"),
            (500, "api_error"),
            (502, "api_error"),
            (503, "overloaded_error"),
            (504, "timeout_error"),
            (529, "overloaded_error"),
        ] {
            assert_eq!(error_type(status), kind, "{status}");
        }
    }

    #[test]
    fn upstream_dialects_keep_their_message() {
        let openai = br#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
        let v: Value = serde_json::from_slice(&translate(429, openai)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"error","error":{"type":"rate_limit_error","message":"Rate limit reached"}})
        );
        let vllm =
            br#"{"object":"error","message":"model not found","type":"NotFoundError","code":404}"#;
        assert_eq!(upstream_message(vllm).unwrap(), "model not found");
        assert_eq!(
            upstream_message(br#"{"detail":"Not Found"}"#).unwrap(),
            "Not Found"
        );
        let v: Value =
            serde_json::from_slice(&translate(502, b"<html>Bad gateway</html>")).unwrap();
        assert_eq!(v["error"]["type"], "api_error");
        assert_eq!(v["error"]["message"], "<html>Bad gateway</html>");
        let (kind, msg) = stream_error(&serde_json::json!({"message":"boom","code":"429"}));
        assert_eq!((kind, msg.as_str()), ("rate_limit_error", "boom"));
    }
}
