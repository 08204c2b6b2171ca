//! Who is calling the side app's API: the admin (token from config) or the owner
//! of an API key. Dashboard sessions join here later.

use std::sync::Arc;

use axum::http::{header, HeaderMap};

use crate::auth::ApiKey;
use crate::error::GatewayError;
use crate::state::AppState;

pub enum Caller {
    Admin,
    Key(Arc<ApiKey>),
}

pub async fn caller(state: &AppState, headers: &HeaderMap) -> Result<Caller, GatewayError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .ok_or(GatewayError::MissingApiKey)?;
    if let Some(admin) = &state.admin_token {
        if constant_time_eq(admin.as_bytes(), token.as_bytes()) {
            return Ok(Caller::Admin);
        }
    }
    Ok(Caller::Key(state.keys.authenticate(token).await?))
}

/// Compares secrets without leaking, through timing, how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    // Equal-length digests make the comparison length-independent too.
    let (da, db) = (Sha256::digest(a), Sha256::digest(b));
    da.iter()
        .zip(db.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}
