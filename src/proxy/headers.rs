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
use crate::limits::{put_openai_duration, RateInfo};

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

/// Keeps the headers `allowed` lets through, in a new map with room for
/// `room` more: copying the few allowed ones costs less than removing the
/// rest one by one. The room is what the caller adds next, counted exactly:
/// an `http` map holds three quarters of a power of two, so one header more
/// than it holds doubles it, and both maps live as long as the request (a
/// map sized for 16 more headers held ~2.4 KiB, one sized to fit ~1.2 KiB;
/// heaptrack at 1,000 open streams, benches/README.md).
fn keep_only(headers: &mut HeaderMap, room: usize, allowed: impl Fn(&HeaderName) -> bool) {
    let kept = headers.iter().filter(|(name, _)| allowed(name)).count();
    let all = std::mem::replace(headers, HeaderMap::with_capacity(kept + room));
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

/// Leaves only allowed client headers on the upstream request, with room for
/// `room` the gateway adds.
pub fn filter_request(headers: &mut HeaderMap, extra: &[HeaderName], anthropic: bool, room: usize) {
    let protocol: &[HeaderName] = if anthropic { &ANTHROPIC_REQUEST } else { &[] };
    keep_only(headers, room, |n| {
        REQUEST.contains(n) || extra.contains(n) || protocol.contains(n)
    });
}

/// Leaves only allowed upstream headers on the response to the client, with
/// room for `room` the gateway adds.
pub fn filter_response(headers: &mut HeaderMap, extra: &[HeaderName], room: usize) {
    keep_only(headers, room, |n| RESPONSE.contains(n) || extra.contains(n));
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
    put_own(
        out,
        ctx.admission.rate_info.as_ref(),
        &ctx.request_id,
        anthropic(ctx),
    )
}

/// How many headers `add_own` adds for `ctx`.
pub fn own_count(ctx: &Ctx) -> usize {
    count_own(ctx.admission.rate_info.as_ref(), anthropic(ctx))
}

fn anthropic(ctx: &Ctx) -> bool {
    ctx.protocol() == crate::protocols::Protocol::Anthropic
}

fn count_own(info: Option<&RateInfo>, anthropic: bool) -> usize {
    let buckets = info.map_or(0, |i| {
        usize::from(i.requests.is_some()) + usize::from(i.tokens.is_some())
    });
    3 * buckets + 1 + usize::from(anthropic)
}

fn put_own(
    out: &mut HeaderMap,
    info: Option<&RateInfo>,
    request_id: &str,
    anthropic: bool,
) -> Result<()> {
    // Every value is a slice of one buffer: one allocation for all of them,
    // not one each (`HeaderValue::from(u64)` cost ~400 instructions a number).
    let mut text = BytesMut::with_capacity(128);
    let mut digits = itoa::Buffer::new();
    if let Some(info) = info {
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
    text.put_slice(request_id.as_bytes());
    let id = written(&mut text)?;
    if anthropic {
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

    /// A 200 answer's headers as the gateway edits them.
    fn upstream_answer(headers: &[(&'static str, &str)]) -> HeaderMap {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        for &(k, v) in headers {
            resp.insert_header(k, v).unwrap();
        }
        response_parts(&mut resp).headers
    }

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
        filter_request(
            &mut req,
            &[HeaderName::from_static("openai-beta")],
            false,
            0,
        );
        let mut left: Vec<&str> = req.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["content-type", "openai-beta"]);
        // An Anthropic backend gets the client's API version and betas, never its key.
        filter_request(&mut to_anthropic, &[], true, 0);
        let mut left: Vec<&str> = to_anthropic.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["anthropic-beta", "content-type"]);

        let mut resp = upstream_answer(&[
            ("content-type", "application/json"),
            ("x-litellm-response-cost", "0.0042"),
            ("llm_provider-openai-organization", "org-123"),
            ("openai-processing-ms", "12"),
        ]);
        filter_response(&mut resp, &[], 0);
        let mut left: Vec<&str> = resp.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["content-type", "openai-processing-ms"]);
    }

    #[test]
    fn the_gateways_own_headers_fit_the_room_left_for_them() {
        use crate::limits::BucketInfo;
        let bucket = BucketInfo {
            limit: 600,
            remaining: 599,
            reset: std::time::Duration::from_millis(100),
        };
        let infos = [
            None,
            Some(RateInfo {
                requests: Some(bucket),
                tokens: None,
            }),
            Some(RateInfo {
                requests: Some(bucket),
                tokens: Some(bucket),
            }),
        ];
        for info in &infos {
            for anthropic in [false, true] {
                let mut out = upstream_answer(&[
                    ("content-type", "text/event-stream"),
                    ("transfer-encoding", "chunked"),
                    ("cache-control", "no-cache"),
                    ("x-litellm-response-cost", "0.0042"),
                ]);
                let count = count_own(info.as_ref(), anthropic);
                filter_response(&mut out, &[], count);
                let (kept, room) = (out.len(), out.capacity());
                put_own(&mut out, info.as_ref(), "req_1", anthropic).unwrap();
                assert_eq!(out.len(), kept + count, "{info:?} {anthropic}");
                // Added in place: the map did not have to grow.
                assert_eq!(out.capacity(), room, "{info:?} {anthropic}");
                // And it is not the larger map a fixed spare room gave.
                assert!(room < 24, "room for {room}");
            }
        }
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
