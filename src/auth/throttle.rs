//! Login throttling: failed attempts are counted per account and per client IP
//! in a fixed window that starts at the first failure (the cache entry's time
//! to live); past the limit, logins are refused until that window ends.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;

pub const WINDOW: Duration = Duration::from_secs(15 * 60);
pub const MAX_PER_ACCOUNT: u32 = 5;
pub const MAX_PER_IP: u32 = 20;

#[derive(Clone)]
pub struct LoginThrottle {
    accounts: Cache<String, Arc<AtomicU32>>,
    ips: Cache<IpAddr, Arc<AtomicU32>>,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self::new()
    }
}

impl LoginThrottle {
    pub fn new() -> Self {
        Self {
            accounts: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(WINDOW)
                .build(),
            ips: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(WINDOW)
                .build(),
        }
    }

    /// Whether another attempt is allowed now.
    pub fn allowed(&self, email: &str, ip: IpAddr) -> bool {
        let count = |c: Option<Arc<AtomicU32>>| c.map_or(0, |n| n.load(Ordering::Relaxed));
        count(self.accounts.get(&email.to_ascii_lowercase())) < MAX_PER_ACCOUNT
            && count(self.ips.get(&ip)) < MAX_PER_IP
    }

    pub fn failed(&self, email: &str, ip: IpAddr) {
        self.accounts
            .get_with(email.to_ascii_lowercase(), Default::default)
            .fetch_add(1, Ordering::Relaxed);
        self.ips
            .get_with(ip, Default::default)
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn succeeded(&self, email: &str) {
        self.accounts.invalidate(&email.to_ascii_lowercase());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_failures_lock_the_account_but_not_others() {
        let t = LoginThrottle::new();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..MAX_PER_ACCOUNT {
            assert!(t.allowed("a@x.io", ip));
            t.failed("A@x.io", ip);
        }
        assert!(!t.allowed("a@x.io", ip));
        assert!(t.allowed("b@x.io", ip));
        t.succeeded("a@x.io");
        assert!(t.allowed("a@x.io", ip));
    }
}
