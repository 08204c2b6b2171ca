//! Answers the gateway writes itself (models, errors).

use bytes::Bytes;
use http::header;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

use super::ctx::Ctx;
use crate::limits::RateInfo;

/// Answers with a JSON body the gateway made itself, with the request id, the
/// rate-limit headers and whatever `extra` headers apply.
pub async fn write_json(
    session: &mut Session,
    ctx: &Ctx,
    status: u16,
    body: Bytes,
    extra: &[(&'static str, String)],
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(8))?;
    resp.insert_header(header::CONTENT_TYPE, "application/json")?;
    resp.insert_header(header::CONTENT_LENGTH, body.len())?;
    resp.insert_header("x-request-id", ctx.request_id.as_str())?;
    if ctx.protocol() == crate::protocols::Protocol::Anthropic {
        resp.insert_header("request-id", ctx.request_id.as_str())?;
    }
    for (name, value) in ctx
        .admission
        .rate_info
        .iter()
        .flat_map(RateInfo::headers)
        .chain(extra.iter().cloned())
    {
        resp.insert_header(name, value)?;
    }
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}
