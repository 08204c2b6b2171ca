//! Answers the gateway writes itself (models, errors).

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

use super::ctx::Ctx;
use super::headers;

/// Answers with a JSON body the gateway made itself, with the request id, the
/// rate-limit headers and whatever `extra` headers apply.
pub async fn write_json(
    session: &mut Session,
    ctx: &Ctx,
    status: u16,
    body: Bytes,
    extra: &[(&'static str, String)],
) -> Result<()> {
    let mut parts = http::Response::new(()).into_parts().0;
    parts.status = http::StatusCode::from_u16(status)
        .map_err(|_| pingora::Error::explain(pingora::ErrorType::InternalError, "bad status"))?;
    parts.headers = http::HeaderMap::with_capacity(2 + headers::own_count(ctx) + extra.len());
    let out = &mut parts.headers;
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    headers::add_own(out, ctx)?;
    for (name, value) in extra {
        out.insert(HeaderName::from_static(name), headers::value(value)?);
    }
    let resp = ResponseHeader::from(parts);
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}
