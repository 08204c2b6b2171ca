//! Browser sessions: a random cookie whose SHA-256 is stored, and a CSRF token per
//! session that state-changing requests made with the cookie must echo in the
//! `x-csrf-token` header (a cross-site form cannot set headers).

use rand::RngCore;
use sha2::{Digest, Sha256};

pub const COOKIE_NAME: &str = "bm_session";
pub const SESSION_DAYS: i64 = 7;

pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

pub fn hash_session(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The session cookie's value from a `Cookie` header, if any.
pub fn session_cookie(cookie_header: &str) -> Option<&str> {
    cookie::Cookie::split_parse(cookie_header)
        .filter_map(Result::ok)
        .find(|c| c.name() == COOKIE_NAME)
        .and_then(|c| c.value_raw())
        .filter(|v| !v.is_empty())
}

// Built by hand, not with the `cookie` crate: its fixed attribute order (Secure
// before Path and Max-Age) would change the bytes of a header clients already see.

/// `Set-Cookie` for a new session (HttpOnly, SameSite=Lax; Secure behind TLS).
pub fn set_cookie(token: &str, secure: bool) -> String {
    format!(
        "{COOKIE_NAME}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{}",
        SESSION_DAYS * 86_400,
        if secure { "; Secure" } else { "" }
    )
}

pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE_NAME}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies() {
        assert_eq!(session_cookie("a=1; bm_session=abc ; b=2"), Some("abc"));
        assert_eq!(session_cookie("a=1"), None);
        assert_eq!(session_cookie("bm_session="), None);
        let c = set_cookie("t", true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Lax") && c.ends_with("Secure"));
        assert!(!set_cookie("t", false).contains("Secure"));
        assert_ne!(random_token(), random_token());
        assert_eq!(hash_session("x").len(), 64);
    }
}
