//! Login and sign-up throttling, per account and per client IP, in fixed
//! windows that start at the first counted attempt (the cache entry's time to
//! live).
//!
//! A login attempt is counted *before* its password is verified, atomically
//! (compare-and-add below the limit), so parallel guesses cannot all pass the
//! check while the slow verifications run: at most `MAX_PER_ACCOUNT` are ever
//! verified per window. A successful login clears its account's count and
//! gives its IP attempt back.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;

pub const WINDOW: Duration = Duration::from_secs(15 * 60);
pub const MAX_PER_ACCOUNT: u32 = 5;
pub const MAX_PER_IP: u32 = 20;
/// Sign-ups are counted per IP over an hour.
pub const SIGNUP_WINDOW: Duration = Duration::from_secs(3600);

#[derive(Clone)]
pub struct LoginThrottle {
    accounts: Cache<String, Arc<AtomicU32>>,
    ips: Cache<IpAddr, Arc<AtomicU32>>,
    signups: Cache<IpAddr, Arc<AtomicU32>>,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self::new()
    }
}

fn window(ttl: Duration) -> Cache<IpAddr, Arc<AtomicU32>> {
    Cache::builder()
        .max_capacity(100_000)
        .time_to_live(ttl)
        .build()
}

/// Adds one to `n` if that keeps it at or below `max`.
fn take(n: &AtomicU32, max: u32) -> bool {
    n.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
        (v < max).then_some(v + 1)
    })
    .is_ok()
}

impl LoginThrottle {
    pub fn new() -> Self {
        Self {
            accounts: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(WINDOW)
                .build(),
            ips: window(WINDOW),
            signups: window(SIGNUP_WINDOW),
        }
    }

    /// Counts a login attempt if both the account and the IP have room; `false`
    /// means refuse it without verifying anything.
    pub fn begin_login(&self, email: &str, ip: IpAddr) -> bool {
        let account = self
            .accounts
            .get_with(email.to_ascii_lowercase(), Default::default);
        if !take(&account, MAX_PER_ACCOUNT) {
            return false;
        }
        if !take(&self.ips.get_with(ip, Default::default), MAX_PER_IP) {
            account.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    pub fn succeeded(&self, email: &str, ip: IpAddr) {
        self.accounts.invalidate(&email.to_ascii_lowercase());
        if let Some(n) = self.ips.get(&ip) {
            let _ = n.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| v.checked_sub(1));
        }
    }

    /// Counts a sign-up from `ip` if it is within `per_hour`.
    pub fn begin_signup(&self, ip: IpAddr, per_hour: u32) -> bool {
        take(&self.signups.get_with(ip, Default::default), per_hour)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_attempts_lock_the_account_but_not_others() {
        let t = LoginThrottle::new();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..MAX_PER_ACCOUNT {
            assert!(t.begin_login("A@x.io", ip));
        }
        assert!(!t.begin_login("a@x.io", ip));
        assert!(t.begin_login("b@x.io", ip));
        t.succeeded("a@x.io", ip);
        assert!(t.begin_login("a@x.io", ip));
    }

    #[test]
    fn parallel_attempts_never_pass_the_limit() {
        let t = LoginThrottle::new();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let passed: u32 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..50)
                .map(|_| s.spawn(|| u32::from(t.begin_login("a@x.io", ip))))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(passed, MAX_PER_ACCOUNT);
    }
}
