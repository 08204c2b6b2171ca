//! Which headers cross the gateway, by allow-list in each direction. A client
//! must not choose what a shared upstream account bills or sees
//! (`OpenAI-Organization`, `OpenAI-Project`, cookies, LiteLLM's control
//! headers, a forged `X-Forwarded-For`), and a client must not see what the
//! upstream tells the operator (LiteLLM's `x-litellm-response-cost`,
//! `x-litellm-key-spend`, `x-litellm-model-api-base`, `llm_provider-*` with
//! provider org ids, the upstream's own rate limits). Pools add names with
//! `forward_headers` / `expose_headers`.

use http::header::{self, HeaderName};
use pingora::http::{RequestHeader, ResponseHeader};

/// Client headers every backend gets. The gateway sets `authorization`,
/// `host`, `accept-encoding`, `content-length`, `x-request-id` and the
/// `x-forwarded-*` pair itself.
static REQUEST: [HeaderName; 5] = [
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::ACCEPT,
    header::USER_AGENT,
];

/// Upstream headers every client gets: framing, type and caching, the
/// backoff hints (the OpenAI SDK reads `x-should-retry` before the status),
/// and what OpenAI itself reports about the request.
static RESPONSE: [HeaderName; 11] = [
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::CONNECTION,
    header::CACHE_CONTROL,
    header::DATE,
    header::RETRY_AFTER,
    HeaderName::from_static("x-should-retry"),
    header::VARY,
    HeaderName::from_static("openai-processing-ms"),
    HeaderName::from_static("openai-version"),
];

fn disallowed<'a>(
    names: impl Iterator<Item = &'a HeaderName>,
    defaults: &[HeaderName],
    extra: &[HeaderName],
) -> Vec<HeaderName> {
    names
        .filter(|n| !defaults.contains(n) && !extra.contains(n))
        .cloned()
        .collect()
}

/// Leaves only allowed client headers on the upstream request.
/// Client headers an Anthropic backend also gets: the API version and beta
/// features the client's SDK (or Claude Code) chose.
static ANTHROPIC_REQUEST: [HeaderName; 2] = [
    HeaderName::from_static("anthropic-version"),
    HeaderName::from_static("anthropic-beta"),
];

pub fn filter_request(req: &mut RequestHeader, extra: &[HeaderName], anthropic: bool) {
    let protocol: &[HeaderName] = if anthropic { &ANTHROPIC_REQUEST } else { &[] };
    for name in disallowed(req.headers.keys(), &REQUEST, extra) {
        if !protocol.contains(&name) {
            req.remove_header(&name);
        }
    }
}

/// Leaves only allowed upstream headers on the response to the client.
pub fn filter_response(resp: &mut ResponseHeader, extra: &[HeaderName]) {
    for name in disallowed(resp.headers.keys(), &RESPONSE, extra) {
        resp.remove_header(&name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowed_headers_cross_in_each_direction() {
        let mut req = RequestHeader::build("POST", b"/v1/chat/completions", None).unwrap();
        for (k, v) in [
            ("Content-Type", "application/json"),
            ("OpenAI-Organization", "org-attacker"),
            ("Cookie", "session=1"),
            ("X-Forwarded-For", "6.6.6.6"),
            ("OpenAI-Beta", "assistants=v2"),
            ("x-litellm-api-key", "sk-other"),
            ("x-api-key", "bm_client_key"),
            ("anthropic-beta", "prompt-caching-2024-07-31"),
        ] {
            req.insert_header(k, v).unwrap();
        }
        let mut to_anthropic = req.clone();
        filter_request(&mut req, &[HeaderName::from_static("openai-beta")], false);
        let mut left: Vec<&str> = req.headers.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["content-type", "openai-beta"]);
        // An Anthropic backend gets the client's API version and betas, never its key.
        filter_request(&mut to_anthropic, &[], true);
        let mut left: Vec<&str> = to_anthropic.headers.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["anthropic-beta", "content-type"]);

        let mut resp = ResponseHeader::build(200, None).unwrap();
        for (k, v) in [
            ("content-type", "application/json"),
            ("x-litellm-response-cost", "0.0042"),
            ("llm_provider-openai-organization", "org-123"),
            ("openai-processing-ms", "12"),
        ] {
            resp.insert_header(k, v).unwrap();
        }
        filter_response(&mut resp, &[]);
        let mut left: Vec<&str> = resp.headers.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["content-type", "openai-processing-ms"]);
    }
}
