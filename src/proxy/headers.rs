//! Which headers cross the gateway, by allow-list in each direction. A client
//! must not choose what a shared upstream account bills or sees
//! (`OpenAI-Organization`, `OpenAI-Project`, cookies, LiteLLM's control
//! headers, a forged `X-Forwarded-For`), and a client must not see what the
//! upstream tells the operator (LiteLLM's `x-litellm-response-cost`,
//! `x-litellm-key-spend`, `x-litellm-model-api-base`, `llm_provider-*` with
//! provider org ids, the upstream's own rate limits). Pools add names with
//! `forward_headers` / `expose_headers`.

use bytes::{BufMut, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::HeaderMap;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::{Error, ErrorType, Result};

use super::ctx::Ctx;
use crate::limits::put_openai_duration;

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

/// Room left in an edited header map for what the gateway adds after the
/// allow-list: the forwarding, host, key and request-id headers going up, the
/// rate-limit and request-id headers coming back.
const ROOM: usize = 12;

/// Keeps the headers `allowed` lets through, in a new map with `ROOM` to spare:
/// copying the few allowed ones costs less than removing the rest one by one,
/// and what the gateway adds then goes in without the map growing.
fn keep_only(headers: &mut HeaderMap, allowed: impl Fn(&HeaderName) -> bool) {
    let room = HeaderMap::with_capacity(headers.len() + ROOM);
    let all = std::mem::replace(headers, room);
    // The name comes with a name's first value only.
    let mut name: Option<HeaderName> = None;
    for (next, value) in all {
        if let Some(next) = next {
            name = allowed(&next).then_some(next);
        }
        if let Some(name) = &name {
            headers.append(name.clone(), value);
        }
    }
}

/// Client headers an Anthropic backend also gets: the API version and beta
/// features the client's SDK (or Claude Code) chose.
static ANTHROPIC_REQUEST: [HeaderName; 2] = [
    HeaderName::from_static("anthropic-version"),
    HeaderName::from_static("anthropic-beta"),
];

/// Leaves only allowed client headers on the upstream request.
pub fn filter_request(headers: &mut HeaderMap, extra: &[HeaderName], anthropic: bool) {
    let protocol: &[HeaderName] = if anthropic { &ANTHROPIC_REQUEST } else { &[] };
    keep_only(headers, |n| {
        REQUEST.contains(n) || extra.contains(n) || protocol.contains(n)
    });
}

/// Leaves only allowed upstream headers on the response to the client.
pub fn filter_response(headers: &mut HeaderMap, extra: &[HeaderName]) {
    keep_only(headers, |n| RESPONSE.contains(n) || extra.contains(n));
}

// Pingora's header API (`insert_header`, `remove_header`) parses every name
// it is given, allocating it anew, and keeps a second map of each name's
// original case that every insert and removal also updates: ~1.9k
// instructions per header on the proxy's thread (benches/README.md,
// "Instructions per request"). The gateway edits what it sends on as a plain
// `http` map instead, with names prepared once. On the wire Pingora then
// writes the common standard names in their usual case (`Content-Type`) and
// the others in lowercase, as OpenAI's own answers (HTTP/2) have them all;
// HTTP header names are case-insensitive.

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Where Anthropic's SDKs read the request id.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("request-id");

/// The upstream request as plain `http` parts, to edit and put back with
/// [`RequestHeader::from`].
pub fn request_parts(req: &mut RequestHeader) -> http::request::Parts {
    // Left in its place meanwhile; `build_no_case` would parse a path for it.
    let empty = RequestHeader::from(http::Request::new(()).into_parts().0);
    std::mem::replace(req, empty).into()
}

/// The answer's header as plain `http` parts, to edit and put back with
/// [`ResponseHeader::from`].
pub fn response_parts(resp: &mut ResponseHeader) -> http::response::Parts {
    let empty = ResponseHeader::from(http::Response::new(()).into_parts().0);
    std::mem::replace(resp, empty).into()
}

/// OpenAI's rate-limit headers: limit, remaining and reset, for requests then
/// for tokens.
const RATE_LIMIT: [[HeaderName; 3]; 2] = [
    [
        HeaderName::from_static("x-ratelimit-limit-requests"),
        HeaderName::from_static("x-ratelimit-remaining-requests"),
        HeaderName::from_static("x-ratelimit-reset-requests"),
    ],
    [
        HeaderName::from_static("x-ratelimit-limit-tokens"),
        HeaderName::from_static("x-ratelimit-remaining-tokens"),
        HeaderName::from_static("x-ratelimit-reset-tokens"),
    ],
];

/// What the gateway adds to every answer, proxied or its own: the
/// `x-ratelimit-*` headers, and the request id where OpenAI's SDKs
/// (`x-request-id`) and, on Anthropic's endpoints, Anthropic's read it.
pub fn add_own(out: &mut HeaderMap, ctx: &Ctx) -> Result<()> {
    // Every value is a slice of one buffer: one allocation for all of them,
    // not one each (`HeaderValue::from(u64)` cost ~400 instructions a number).
    let mut text = BytesMut::with_capacity(128);
    let mut digits = itoa::Buffer::new();
    if let Some(info) = &ctx.admission.rate_info {
        for (names, bucket) in RATE_LIMIT.iter().zip([&info.requests, &info.tokens]) {
            let Some(b) = bucket else { continue };
            text.put_slice(digits.format(b.limit).as_bytes());
            out.insert(names[0].clone(), written(&mut text)?);
            text.put_slice(digits.format(b.remaining).as_bytes());
            out.insert(names[1].clone(), written(&mut text)?);
            put_openai_duration(&mut text, b.reset);
            out.insert(names[2].clone(), written(&mut text)?);
        }
    }
    text.put_slice(ctx.request_id.as_bytes());
    let id = written(&mut text)?;
    if ctx.protocol() == crate::protocols::Protocol::Anthropic {
        out.insert(REQUEST_ID, id.clone());
    }
    out.insert(X_REQUEST_ID, id);
    Ok(())
}

/// What was written into `text` since the last call, as a header value
/// sharing `text`'s allocation.
fn written(text: &mut BytesMut) -> Result<HeaderValue> {
    HeaderValue::from_maybe_shared(text.split().freeze()).map_err(|_| invalid_value())
}

fn invalid_value() -> Box<Error> {
    Error::explain(ErrorType::InvalidHTTPHeader, "invalid header value")
}

/// A header value from text that may hold anything (a client address chain,
/// a scheme a proxy forwarded), refused as Pingora refuses one.
pub fn value(text: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(text).map_err(|_| invalid_value())
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
        let mut to_anthropic = request_parts(&mut req.clone()).headers;
        let mut req = request_parts(&mut req).headers;
        filter_request(&mut req, &[HeaderName::from_static("openai-beta")], false);
        let mut left: Vec<&str> = req.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["content-type", "openai-beta"]);
        // An Anthropic backend gets the client's API version and betas, never its key.
        filter_request(&mut to_anthropic, &[], true);
        let mut left: Vec<&str> = to_anthropic.keys().map(|k| k.as_str()).collect();
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
        let mut resp = response_parts(&mut resp).headers;
        filter_response(&mut resp, &[]);
        let mut left: Vec<&str> = resp.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["content-type", "openai-processing-ms"]);
    }

    #[test]
    fn edited_as_plain_parts_a_header_keeps_every_value_and_its_status() {
        let mut resp = ResponseHeader::build(429, None).unwrap();
        resp.append_header("Content-Type", "application/json")
            .unwrap();
        resp.append_header("Vary", "Origin").unwrap();
        resp.append_header("Vary", "Accept-Encoding").unwrap();
        let mut parts = response_parts(&mut resp);
        parts.headers.insert(X_REQUEST_ID, value("req_1").unwrap());
        let resp = ResponseHeader::from(parts);
        assert_eq!(resp.status, http::StatusCode::TOO_MANY_REQUESTS);
        let mut wire = Vec::new();
        resp.header_to_h1_wire(&mut wire);
        let wire = String::from_utf8(wire).unwrap();
        for line in [
            "Content-Type: application/json\r\n",
            "vary: Origin\r\n",
            "vary: Accept-Encoding\r\n",
            "x-request-id: req_1\r\n",
        ] {
            assert!(wire.contains(line), "{line:?} missing from {wire:?}");
        }
        assert!(value("a\r\nb").is_err(), "a value cannot smuggle a header");
    }
}
