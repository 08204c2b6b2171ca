//! Login and sign-up throttling, per account and client address, per client
//! address, and shared by every instance through Redis when it is configured.
//!
//! - An attempt is counted *before* its password is verified, atomically, so
//!   parallel guesses cannot all pass while the slow verifications run.
//! - Per account and client address: `FREE_ATTEMPTS` attempts in a row pass
//!   at once; from the last of them on, one attempt at a time is verified and,
//!   once it has failed, the next must wait a backoff that doubles from
//!   `BACKOFF_BASE` up to `BACKOFF_MAX`. There is no lock: the right password
//!   after the backoff works, and another address (the real owner's) is not
//!   slowed by an attacker's failures. A success clears it.
//! - Per client address: `MAX_PER_IP` attempts over all accounts in `WINDOW`,
//!   and `signups_per_ip_per_hour` sign-ups an hour (fixed windows from the
//!   first attempt). A successful login gives its address attempt back.
//!
//! The client address is what `server.trusted_proxies` makes of the request
//! (`client_ip`), so behind an ingress each user has their own counts.
//! Without Redis (or while it does not answer) the counts are this
//! instance's own.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::sync::Cache;
use redis::aio::ConnectionManager;
use sha2::{Digest, Sha256};

pub const WINDOW: Duration = Duration::from_secs(15 * 60);
pub const FREE_ATTEMPTS: u32 = 5;
pub const BACKOFF_BASE: Duration = Duration::from_secs(2);
pub const BACKOFF_MAX: Duration = Duration::from_secs(15 * 60);
pub const MAX_PER_IP: u32 = 20;
/// Sign-ups are counted per IP over an hour.
pub const SIGNUP_WINDOW: Duration = Duration::from_secs(3600);
/// How long an account's failures are remembered after the last attempt.
const FAILURES_KEPT: Duration = Duration::from_secs(3600);

/// The wait before the next attempt after `n` counted attempts in a row.
fn backoff(n: u32) -> Option<Duration> {
    let over = n.checked_sub(FREE_ATTEMPTS)?;
    let factor = 1u32.checked_shl(over.min(20)).unwrap_or(u32::MAX);
    Some(BACKOFF_BASE.saturating_mul(factor).min(BACKOFF_MAX))
}

/// An attempt being verified holds its account-and-address this long at most
/// (a process that dies mid-verification frees it then).
const IN_FLIGHT: Duration = Duration::from_secs(30);

/// KEYS[1]: an account-and-address hash {n, nb: not before, busy: an attempt
/// past the free ones is being verified until}; ARGV: free attempts, base of
/// the backoff (ms), in-flight bound (ms), how long to keep it (ms). 0:
/// counted, go on; otherwise the milliseconds to wait.
const BEGIN_ATTEMPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local v = redis.call('HMGET', KEYS[1], 'n', 'nb', 'busy')
local n = tonumber(v[1]) or 0
local nb = tonumber(v[2]) or 0
local busy = tonumber(v[3]) or 0
if now < nb then return nb - now end
if now < busy then return tonumber(ARGV[2]) end
n = n + 1
if n >= tonumber(ARGV[1]) then busy = now + tonumber(ARGV[3]) end
redis.call('HSET', KEYS[1], 'n', n, 'nb', nb, 'busy', busy)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 0
";

/// KEYS[1] as above; ARGV: free attempts, base and cap of the backoff (ms),
/// how long to keep it (ms). The attempt failed: the backoff starts now.
const FAILED_ATTEMPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = tonumber(redis.call('HGET', KEYS[1], 'n') or '0')
local free = tonumber(ARGV[1])
local nb = 0
if n >= free then
  nb = now + math.min(tonumber(ARGV[3]), tonumber(ARGV[2]) * 2 ^ math.min(n - free, 20))
end
redis.call('HSET', KEYS[1], 'nb', nb, 'busy', 0)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 0
";

/// KEYS[1]: a fixed-window counter; ARGV: its limit, the window (ms). 0:
/// counted; otherwise the milliseconds until the window ends.
const TAKE_IN_WINDOW: &str = r"
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n >= tonumber(ARGV[1]) then
  local left = redis.call('PTTL', KEYS[1])
  if left > 0 then return left end
  return tonumber(ARGV[2])
end
if redis.call('INCR', KEYS[1]) == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
";

const GIVE_BACK: &str = r"
if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then redis.call('DECR', KEYS[1]) end
return 0
";

#[derive(Default)]
struct Attempts {
    n: u32,
    not_before: Option<Instant>,
    /// An attempt past the free ones is being verified (until then at most).
    busy_until: Option<Instant>,
}

struct Window {
    started: Instant,
    n: u32,
}

struct Shared {
    conn: ConnectionManager,
    prefix: String,
    begin: redis::Script,
    failed: redis::Script,
    take: redis::Script,
    give_back: redis::Script,
}

#[derive(Clone)]
pub struct LoginThrottle {
    accounts: Cache<(String, IpAddr), Arc<Mutex<Attempts>>>,
    ips: Cache<IpAddr, Arc<Mutex<Window>>>,
    signups: Cache<IpAddr, Arc<Mutex<Window>>>,
    shared: Option<Arc<Shared>>,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self::new()
    }
}

fn windows(ttl: Duration) -> Cache<IpAddr, Arc<Mutex<Window>>> {
    Cache::builder()
        .max_capacity(100_000)
        .time_to_live(ttl)
        .build()
}

/// Counts one in the window if it has room; else the time until it ends.
fn take_local(
    cache: &Cache<IpAddr, Arc<Mutex<Window>>>,
    ip: IpAddr,
    max: u32,
    len: Duration,
) -> Result<(), Duration> {
    let w = cache.get_with(ip, || {
        Arc::new(Mutex::new(Window {
            started: Instant::now(),
            n: 0,
        }))
    });
    let mut w = w.lock().expect("throttle lock");
    if w.n >= max {
        return Err(len
            .saturating_sub(w.started.elapsed())
            .max(Duration::from_secs(1)));
    }
    w.n += 1;
    Ok(())
}

fn millis(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

impl LoginThrottle {
    pub fn new() -> Self {
        Self {
            accounts: Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(FAILURES_KEPT)
                .build(),
            ips: windows(WINDOW),
            signups: windows(SIGNUP_WINDOW),
            shared: None,
        }
    }

    /// Counts through Redis, shared by every instance with the same prefix.
    pub async fn shared(cfg: &crate::config::RedisConfig) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(cfg.url.as_str())?;
        let conn = ConnectionManager::new(client).await?;
        Ok(Self {
            shared: Some(Arc::new(Shared {
                conn,
                prefix: cfg.prefix.clone(),
                begin: redis::Script::new(BEGIN_ATTEMPT),
                failed: redis::Script::new(FAILED_ATTEMPT),
                take: redis::Script::new(TAKE_IN_WINDOW),
                give_back: redis::Script::new(GIVE_BACK),
            })),
            ..Self::new()
        })
    }

    /// Counts a login attempt for `email` from `ip`; `Err` is how long to wait
    /// (refused without verifying anything).
    pub async fn begin_login(&self, email: &str, ip: IpAddr) -> Result<(), Duration> {
        let email = email.trim().to_ascii_lowercase();
        if let Some(s) = &self.shared {
            match s.begin_login(&email, ip).await {
                Ok(r) => return r,
                Err(e) => {
                    tracing::warn!(error = %e, "login throttle: Redis did not answer; counting locally")
                }
            }
        }
        take_local(&self.ips, ip, MAX_PER_IP, WINDOW)?;
        let account = self.accounts.get_with((email, ip), Default::default);
        let mut a = account.lock().expect("throttle lock");
        let now = Instant::now();
        let wait = match (a.not_before, a.busy_until) {
            (Some(t), _) if t > now => Some(t - now),
            (_, Some(t)) if t > now => Some(BACKOFF_BASE),
            _ => None,
        };
        if let Some(wait) = wait {
            drop(a);
            self.give_back_local(ip);
            return Err(wait);
        }
        a.n += 1;
        if a.n >= FREE_ATTEMPTS {
            a.busy_until = Some(now + IN_FLIGHT);
        }
        Ok(())
    }

    /// The password was wrong (or could not be checked): past the free
    /// attempts the backoff starts now.
    pub async fn failed(&self, email: &str, ip: IpAddr) {
        let email = email.trim().to_ascii_lowercase();
        if let Some(s) = &self.shared {
            if let Err(e) = s.failed(&email, ip).await {
                tracing::warn!(error = %e, "login throttle: Redis did not answer");
            }
        }
        if let Some(account) = self.accounts.get(&(email, ip)) {
            let mut a = account.lock().expect("throttle lock");
            a.busy_until = None;
            a.not_before = backoff(a.n).map(|wait| Instant::now() + wait);
        }
    }

    fn give_back_local(&self, ip: IpAddr) {
        if let Some(w) = self.ips.get(&ip) {
            let mut w = w.lock().expect("throttle lock");
            w.n = w.n.saturating_sub(1);
        }
    }

    /// The password was right: the account's failures from `ip` are forgotten
    /// and the address gets its attempt back.
    pub async fn succeeded(&self, email: &str, ip: IpAddr) {
        let email = email.trim().to_ascii_lowercase();
        if let Some(s) = &self.shared {
            if let Err(e) = s.succeeded(&email, ip).await {
                tracing::warn!(error = %e, "login throttle: Redis did not answer");
            }
        }
        self.accounts.invalidate(&(email, ip));
        self.give_back_local(ip);
    }

    /// Counts a sign-up from `ip` if it is within `per_hour`; `Err` is how long
    /// to wait.
    pub async fn begin_signup(&self, ip: IpAddr, per_hour: u32) -> Result<(), Duration> {
        if let Some(s) = &self.shared {
            let key = format!("{}:signup-ip:{ip}", s.prefix);
            match s.take_in_window(&key, per_hour, SIGNUP_WINDOW).await {
                Ok(r) => return r,
                Err(e) => {
                    tracing::warn!(error = %e, "sign-up throttle: Redis did not answer; counting locally")
                }
            }
        }
        take_local(&self.signups, ip, per_hour, SIGNUP_WINDOW)
    }
}

impl Shared {
    /// The account is named by a digest: Redis need not hold users' emails.
    fn account_key(&self, email: &str, ip: IpAddr) -> String {
        let digest = Sha256::digest(email.as_bytes());
        format!("{}:login:{}:{ip}", self.prefix, hex::encode(&digest[..12]))
    }

    fn ip_key(&self, ip: IpAddr) -> String {
        format!("{}:login-ip:{ip}", self.prefix)
    }

    async fn take_in_window(
        &self,
        key: &str,
        max: u32,
        len: Duration,
    ) -> redis::RedisResult<Result<(), Duration>> {
        let mut conn = self.conn.clone();
        let wait: u64 = self
            .take
            .key(key)
            .arg(max)
            .arg(millis(len))
            .invoke_async(&mut conn)
            .await?;
        Ok(match wait {
            0 => Ok(()),
            ms => Err(Duration::from_millis(ms)),
        })
    }

    async fn begin_login(
        &self,
        email: &str,
        ip: IpAddr,
    ) -> redis::RedisResult<Result<(), Duration>> {
        let ip_key = self.ip_key(ip);
        if let Err(wait) = self.take_in_window(&ip_key, MAX_PER_IP, WINDOW).await? {
            return Ok(Err(wait));
        }
        let mut conn = self.conn.clone();
        let wait: u64 = self
            .begin
            .key(self.account_key(email, ip))
            .arg(FREE_ATTEMPTS)
            .arg(millis(BACKOFF_BASE))
            .arg(millis(IN_FLIGHT))
            .arg(millis(FAILURES_KEPT))
            .invoke_async(&mut conn)
            .await?;
        if wait == 0 {
            return Ok(Ok(()));
        }
        let _: i64 = self.give_back.key(ip_key).invoke_async(&mut conn).await?;
        Ok(Err(Duration::from_millis(wait)))
    }

    async fn failed(&self, email: &str, ip: IpAddr) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .failed
            .key(self.account_key(email, ip))
            .arg(FREE_ATTEMPTS)
            .arg(millis(BACKOFF_BASE))
            .arg(millis(BACKOFF_MAX))
            .arg(millis(FAILURES_KEPT))
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn succeeded(&self, email: &str, ip: IpAddr) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        let _: i64 = redis::cmd("DEL")
            .arg(self.account_key(email, ip))
            .query_async(&mut conn)
            .await?;
        let _: i64 = self
            .give_back
            .key(self.ip_key(ip))
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_backoff_doubles_from_the_fifth_attempt_up_to_its_cap() {
        assert_eq!(backoff(4), None);
        assert_eq!(backoff(5), Some(BACKOFF_BASE));
        assert_eq!(backoff(6), Some(BACKOFF_BASE * 2));
        assert_eq!(backoff(40), Some(BACKOFF_MAX));
        assert_eq!(backoff(u32::MAX), Some(BACKOFF_MAX));
    }

    #[tokio::test]
    async fn failures_slow_one_account_from_one_address_only() {
        let t = LoginThrottle::new();
        let a = ip("198.51.100.1");
        for _ in 0..FREE_ATTEMPTS {
            assert!(t.begin_login("A@x.io", a).await.is_ok());
            t.failed("a@x.io", a).await;
        }
        let wait = t.begin_login("a@x.io", a).await.unwrap_err();
        assert!(wait <= BACKOFF_BASE && wait > Duration::ZERO, "{wait:?}");
        assert!(t.begin_login("b@x.io", a).await.is_ok());
        assert!(t.begin_login("a@x.io", ip("198.51.100.2")).await.is_ok());
        t.succeeded("a@x.io", a).await;
        assert!(t.begin_login("a@x.io", a).await.is_ok());
    }

    #[tokio::test]
    async fn parallel_attempts_never_pass_the_free_ones() {
        let t = LoginThrottle::new();
        let a = ip("127.0.0.1");
        // The fifth is being verified: the others wait for its outcome.
        let attempts = (0..50).map(|_| t.begin_login("a@x.io", a));
        let passed = futures_util::future::join_all(attempts)
            .await
            .iter()
            .filter(|r| r.is_ok())
            .count();
        assert_eq!(passed, FREE_ATTEMPTS as usize);
    }

    #[tokio::test]
    async fn one_address_has_a_budget_over_all_accounts() {
        let t = LoginThrottle::new();
        let a = ip("198.51.100.1");
        for i in 0..MAX_PER_IP {
            assert!(t.begin_login(&format!("u{i}@x.io"), a).await.is_ok());
        }
        assert!(t.begin_login("another@x.io", a).await.is_err());
        assert!(t
            .begin_login("another@x.io", ip("198.51.100.2"))
            .await
            .is_ok());
    }
}
