//! Browser sessions: a random cookie whose SHA-256 is stored, and a CSRF token per
//! session that state-changing requests made with the cookie must echo in the
//! `x-csrf-token` header (a cross-site form cannot set headers).

use rand::RngCore;
use sha2::{Digest, Sha256};

pub const COOKIE_NAME: &str = "bm_session";
/// The name of the Secure cookie: browsers accept a `__Host-` cookie only
/// from HTTPS, with `Path=/` and no `Domain`, so a sibling subdomain or a
/// plain-HTTP page cannot plant one (session fixation by cookie tossing).
pub const SECURE_COOKIE_NAME: &str = "__Host-bm_session";

pub fn cookie_name(secure: bool) -> &'static str {
    if secure {
        SECURE_COOKIE_NAME
    } else {
        COOKIE_NAME
    }
}
pub const SESSION_DAYS: i64 = 7;

pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

pub fn hash_session(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The session cookie's value from a `Cookie` header, if any: over HTTPS only
/// the `__Host-` one counts.
pub fn session_cookie(cookie_header: &str, secure: bool) -> Option<&str> {
    let name = cookie_name(secure);
    cookie::Cookie::split_parse(cookie_header)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .and_then(|c| c.value_raw())
        .filter(|v| !v.is_empty())
}

// Built by hand, not with the `cookie` crate: its fixed attribute order (Secure
// before Path and Max-Age) would change the bytes of a header clients already see.

/// `Set-Cookie` for a new session (HttpOnly, SameSite=Lax; Secure behind TLS).
pub fn set_cookie(token: &str, secure: bool) -> String {
    format!(
        "{}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{}",
        cookie_name(secure),
        SESSION_DAYS * 86_400,
        if secure { "; Secure" } else { "" }
    )
}

pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{}",
        cookie_name(secure),
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies() {
        assert_eq!(
            session_cookie("a=1; bm_session=abc ; b=2", false),
            Some("abc")
        );
        assert_eq!(session_cookie("a=1", false), None);
        assert_eq!(session_cookie("bm_session=", false), None);
        // Over HTTPS a plain-named cookie (planted over HTTP) is not a session.
        assert_eq!(session_cookie("bm_session=abc", true), None);
        assert_eq!(session_cookie("__Host-bm_session=abc", true), Some("abc"));
        let c = set_cookie("t", true);
        assert!(c.starts_with("__Host-bm_session=t; Path=/;"), "{c}");
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Lax") && c.ends_with("Secure"));
        assert!(!set_cookie("t", false).contains("Secure"));
        assert_ne!(random_token(), random_token());
        assert_eq!(hash_session("x").len(), 64);
    }
}
