//! What an upstream's error answer means for its backend (skip it for a while?
//! is its key refused?) and for the request (try the next backend?), read the
//! way the OpenAI SDK reads it: `x-should-retry` first, then the status.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

/// The verdict on one error answer (status 400 and up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Judged {
    /// Skip the backend this long (passive ejection).
    pub eject_for: Option<Duration>,
    /// 401/403: the provider refused the backend's key (revoked, expired, or
    /// without access), not the client's.
    pub key_refused: bool,
    /// Another backend may take the request (when no byte reached the client yet).
    pub retry: bool,
}

/// How long ejections last: `eject` by default, an upstream's `retry-after`
/// within `max`.
#[derive(Debug, Clone, Copy)]
pub struct Ejection {
    pub eject: Duration,
    pub max: Duration,
}

/// `None` for a status below 400 (nothing to judge).
pub fn judge(
    status: u16,
    headers: &HeaderMap,
    ejection: Ejection,
    now: SystemTime,
) -> Option<Judged> {
    if status < 400 {
        return None;
    }
    let key_refused = status == 401 || status == 403;
    let eject_for = match status {
        // The provider said how long; without it, the usual ejection.
        429 | 500..=599 => Some(retry_after(headers, now).map_or(ejection.eject, |d| {
            d.clamp(Duration::from_secs(1), ejection.max)
        })),
        // A revoked key stays revoked: as long as any ejection may last. The
        // first answer that is not an error clears the state.
        401 | 403 => Some(ejection.max),
        _ => None,
    };
    let retry = match headers.get("x-should-retry").map(|v| v.as_bytes()) {
        Some(b"true") => true,
        Some(b"false") => false,
        // The SDK retries timeouts, lock conflicts, rate limits and server
        // errors; another backend (another key) is the gateway's retry, and
        // it is worth trying when this one's key was refused.
        _ => matches!(status, 408 | 409 | 429 | 500..=599) || key_refused,
    };
    Some(Judged {
        eject_for,
        key_refused,
        retry,
    })
}

/// `retry-after-ms` (OpenAI's, preferred as the SDK does), else `retry-after`
/// in seconds or as an HTTP date.
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        if ms.is_finite() && ms >= 0.0 {
            return Some(Duration::from_secs_f64(ms.min(1e12) / 1000.0));
        }
    }
    let value = text("retry-after")?;
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(1e9)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EJECTION: Ejection = Ejection {
        eject: Duration::from_secs(10),
        max: Duration::from_secs(300),
    };

    fn judged(status: u16, headers: &[(&'static str, &str)]) -> Option<Judged> {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(*k, v.parse().unwrap());
        }
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        judge(status, &map, EJECTION, now)
    }

    fn eject(status: u16, headers: &[(&'static str, &str)]) -> Option<u64> {
        judged(status, headers)
            .unwrap()
            .eject_for
            .map(|d| d.as_secs())
    }

    #[test]
    fn a_rate_limit_ejects_for_the_upstreams_retry_after_within_bounds() {
        assert_eq!(eject(429, &[("retry-after", "42")]), Some(42));
        assert_eq!(
            eject(429, &[("retry-after-ms", "7000"), ("retry-after", "42")]),
            Some(7)
        );
        // 2023-11-14T22:13:20Z is the test's now; a minute later:
        assert_eq!(
            eject(429, &[("retry-after", "Tue, 14 Nov 2023 22:14:20 GMT")]),
            Some(60)
        );
        assert_eq!(eject(429, &[("retry-after", "86400")]), Some(300));
        assert_eq!(eject(429, &[("retry-after", "0")]), Some(1));
        // A date in the past, or nonsense: at least a second, else the default.
        assert_eq!(
            eject(429, &[("retry-after", "Tue, 14 Nov 2023 22:00:00 GMT")]),
            Some(1)
        );
        assert_eq!(eject(429, &[("retry-after", "soon")]), Some(10));
        assert_eq!(eject(429, &[]), Some(10));
        assert_eq!(eject(503, &[("retry-after", "30")]), Some(30));
        assert!(judged(429, &[]).unwrap().retry);
    }

    #[test]
    fn x_should_retry_decides_failover_as_the_openai_sdk_does() {
        assert!(!judged(503, &[("x-should-retry", "false")]).unwrap().retry);
        assert!(!judged(429, &[("x-should-retry", "false")]).unwrap().retry);
        assert!(judged(400, &[("x-should-retry", "true")]).unwrap().retry);
        assert!(!judged(400, &[]).unwrap().retry);
        assert!(!judged(404, &[]).unwrap().retry);
        for status in [408, 409, 429, 500, 502, 503] {
            assert!(judged(status, &[]).unwrap().retry, "{status}");
        }
        assert_eq!(judged(200, &[("x-should-retry", "true")]), None);
        // Ejection follows the status, whatever the header says.
        assert_eq!(
            eject(429, &[("x-should-retry", "false"), ("retry-after", "5")]),
            Some(5)
        );
        assert_eq!(eject(400, &[("x-should-retry", "true")]), None);
    }

    #[test]
    fn a_refused_key_marks_the_backend_and_fails_over() {
        for status in [401, 403] {
            let j = judged(status, &[]).unwrap();
            assert!(j.key_refused && j.retry, "{status}");
            assert_eq!(j.eject_for, Some(Duration::from_secs(300)));
        }
        assert!(!judged(429, &[]).unwrap().key_refused);
    }
}
