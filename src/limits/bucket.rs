//! A token bucket refilled continuously: `capacity` per minute, starting full.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    tokens: f64,
    per_sec: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn per_minute(limit: u64, now: Instant) -> Self {
        Self {
            capacity: limit as f64,
            tokens: limit as f64,
            per_sec: limit as f64 / 60.0,
            last: now,
        }
    }

    pub fn limit(&self) -> u64 {
        self.capacity as u64
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.capacity);
        self.last = now;
    }

    /// Follows a changed limit (key settings or plan) without resetting what was used.
    pub fn set_limit(&mut self, limit: u64, now: Instant) {
        if self.limit() != limit {
            self.refill(now);
            let used = self.capacity - self.tokens;
            self.capacity = limit as f64;
            self.per_sec = limit as f64 / 60.0;
            self.tokens = (self.capacity - used).min(self.capacity);
        }
    }

    pub fn has(&mut self, n: u64, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= n as f64
    }

    pub fn take(&mut self, n: u64) {
        self.tokens -= n as f64;
    }

    /// Gives back (positive) or charges more (negative) after the fact; a bucket
    /// may go into debt, which later requests then wait out.
    pub fn adjust(&mut self, delta: f64, now: Instant) {
        self.refill(now);
        self.tokens = (self.tokens + delta).min(self.capacity);
    }

    /// Takes the level another source of truth has for this bucket now (the
    /// cluster-wide bucket in Redis).
    pub fn set_available(&mut self, tokens: f64, now: Instant) {
        self.refill(now);
        self.tokens = tokens.min(self.capacity);
    }

    /// Tokens there now (negative while in debt).
    pub fn available(&mut self, now: Instant) -> f64 {
        self.refill(now);
        self.tokens
    }

    pub fn remaining(&self) -> u64 {
        self.tokens.max(0.0).floor() as u64
    }

    /// How long until `n` tokens are there (zero if they are).
    pub fn wait_for(&self, n: u64) -> Duration {
        let missing = n as f64 - self.tokens;
        if missing <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(missing / self.per_sec)
        }
    }

    /// How long until the bucket is full again (OpenAI's `x-ratelimit-reset-*`).
    pub fn until_full(&self) -> Duration {
        self.wait_for(self.capacity as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_burst_then_steady_refill() {
        let t0 = Instant::now();
        let mut b = TokenBucket::per_minute(60, t0);
        let passed = (0..100)
            .filter(|_| {
                let ok = b.has(1, t0);
                if ok {
                    b.take(1);
                }
                ok
            })
            .count();
        assert_eq!(passed, 60);
        assert_eq!(b.wait_for(1), Duration::from_secs(1));
        assert!(!b.has(1, t0 + Duration::from_millis(999)));
        assert!(b.has(1, t0 + Duration::from_secs(1)));
        assert_eq!(
            b.until_full(),
            Duration::from_secs(60) - Duration::from_secs(1)
        );
    }

    #[test]
    fn debt_and_limit_changes() {
        let t0 = Instant::now();
        let mut b = TokenBucket::per_minute(600, t0);
        b.take(100);
        b.adjust(-600.0, t0); // the answer was much longer than estimated
        assert_eq!(b.remaining(), 0);
        assert_eq!(b.wait_for(1), Duration::from_secs_f64(101.0 / 10.0));
        b.adjust(1_000.0, t0);
        assert_eq!(b.remaining(), 600, "never above capacity");
        b.take(100);
        b.set_limit(300, t0);
        assert_eq!((b.limit(), b.remaining()), (300, 200));
    }
}
