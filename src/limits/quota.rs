//! Monthly quotas per user (tokens and/or spend), kept in memory and seeded from
//! the daily totals in the database the first time a user is seen in a period.
//! Periods are calendar months in UTC; a new month starts from zero.
//!
//! Several instances share one database: every `usage.quota_refresh_ms` each instance raises
//! its users' counts to the database's totals, which hold what every instance
//! has written. The local count stays when it is higher (it includes this
//! instance's records still queued), so nothing is counted twice; what the
//! cluster can overspend is what the other instances used since their last
//! write plus one refresh interval.

use std::sync::{Arc, Mutex};

use moka::future::Cache;
use time::{Date, OffsetDateTime};
use tokio::runtime::Handle;

use crate::config::PlanConfig;
use crate::store::Store;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct QuotaLimits {
    pub tokens: Option<u64>,
    pub cost_nanousd: Option<i64>,
}

impl QuotaLimits {
    pub fn from_plan(plan: &PlanConfig) -> Self {
        Self {
            tokens: plan.monthly_tokens,
            cost_nanousd: plan
                .monthly_credits_usd
                .map(|usd| (usd * 1_000_000_000.0).round() as i64),
        }
    }

    pub fn is_unlimited(&self) -> bool {
        self.tokens.is_none() && self.cost_nanousd.is_none()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct QuotaExhausted {
    pub what: &'static str,
    /// First day of the next period (UTC), when the quota resets.
    pub resets_on: Date,
}

#[derive(Debug)]
struct Period {
    start: Date,
    tokens: u64,
    cost_nanousd: i64,
}

/// The first day of the month `ms` (unix milliseconds, UTC) falls in.
pub fn period_start(ms: i64) -> Date {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    t.date().replace_day(1).expect("day 1 exists")
}

pub fn next_period_start(start: Date) -> Date {
    let (y, m) = (start.year(), start.month());
    let (y, m) = if m == time::Month::December {
        (y + 1, time::Month::January)
    } else {
        (y, m.next())
    };
    Date::from_calendar_date(y, m, 1).expect("day 1 exists")
}

#[derive(Clone)]
pub struct QuotaLedger {
    users: Cache<i64, Arc<Mutex<Period>>, foldhash::fast::RandomState>,
    store: Store,
    db_runtime: Handle,
}

/// The database could not tell a user's usage this month.
#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("quota lookup failed: {0}")]
    Lookup(String),
}

impl QuotaLedger {
    pub fn new(store: Store, db_runtime: Handle) -> Self {
        Self {
            users: Cache::builder()
                .max_capacity(1_000_000)
                .build_with_hasher(Default::default()),
            store,
            db_runtime,
        }
    }

    async fn period(&self, user_id: i64, now_ms: i64) -> Result<Arc<Mutex<Period>>, QuotaError> {
        let start = period_start(now_ms);
        let store = self.store.clone();
        let db = self.db_runtime.clone();
        let entry = self
            .users
            .try_get_with(user_id, async move {
                let since = start.to_string();
                let (tokens, cost) = db
                    .spawn(async move { store.user_usage_since(user_id, &since).await })
                    .await
                    .map_err(|e| QuotaError::Lookup(e.to_string()))??;
                Ok::<_, QuotaError>(Arc::new(Mutex::new(Period {
                    start,
                    tokens,
                    cost_nanousd: cost,
                })))
            })
            .await
            .map_err(|e| QuotaError::Lookup(e.to_string()))?;
        {
            let mut p = entry.lock().expect("quota lock");
            if p.start != start {
                // A new month: the previous one's usage no longer counts.
                *p = Period {
                    start,
                    tokens: 0,
                    cost_nanousd: 0,
                };
            }
        }
        Ok(entry)
    }

    /// Refuses once the period's usage has reached the quota. A request already
    /// admitted may end past it; the next one is refused.
    pub async fn check(
        &self,
        user_id: i64,
        limits: QuotaLimits,
        now_ms: i64,
    ) -> Result<Result<(), QuotaExhausted>, QuotaError> {
        if limits.is_unlimited() {
            return Ok(Ok(()));
        }
        let period = self.period(user_id, now_ms).await?;
        let p = period.lock().expect("quota lock");
        let resets_on = next_period_start(p.start);
        if limits.tokens.is_some_and(|max| p.tokens >= max) {
            return Ok(Err(QuotaExhausted {
                what: "tokens",
                resets_on,
            }));
        }
        if limits.cost_nanousd.is_some_and(|max| p.cost_nanousd >= max) {
            return Ok(Err(QuotaExhausted {
                what: "credits",
                resets_on,
            }));
        }
        Ok(Ok(()))
    }

    /// Adds a finished request's usage (only to a period already loaded: a user
    /// never checked has no quota to keep).
    pub fn add(&self, user_id: i64, tokens: u64, cost_nanousd: i64, now_ms: i64) {
        if let Some(period) = self.users.get(&user_id).now_or_never_value() {
            let mut p = period.lock().expect("quota lock");
            if p.start == period_start(now_ms) {
                p.tokens += tokens;
                p.cost_nanousd += cost_nanousd;
            }
        }
    }

    /// Raises every loaded user's count to the database's total for the period
    /// (see the module comment). Returns how many users it read.
    pub async fn refresh_from_store(&self, now_ms: i64) -> Result<usize, QuotaError> {
        let start = period_start(now_ms);
        let rows = self.store.users_usage_since(&start.to_string()).await?;
        for (user_id, tokens, cost) in &rows {
            if let Some(period) = self.users.get(user_id).await {
                let mut p = period.lock().expect("quota lock");
                if p.start == start {
                    p.tokens = p.tokens.max(*tokens);
                    p.cost_nanousd = p.cost_nanousd.max(*cost);
                }
            }
        }
        Ok(rows.len())
    }

    /// Forgets a user's period so the next check re-reads the database.
    pub async fn forget(&self, user_id: i64) {
        self.users.invalidate(&user_id).await;
    }
}

/// moka's future cache `get` is async but never waits on I/O; this takes its
/// value synchronously so `add` can run from non-async code.
trait NowOrNever<T> {
    fn now_or_never_value(self) -> Option<T>;
}

impl<F, T> NowOrNever<T> for F
where
    F: std::future::Future<Output = Option<T>>,
{
    fn now_or_never_value(self) -> Option<T> {
        futures_util::FutureExt::now_or_never(self).flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_utc_calendar_months() {
        // 2026-11-25T19:33:00Z
        let ms = 1_795_635_180_000;
        assert_eq!(period_start(ms).to_string(), "2026-11-01");
        assert_eq!(
            next_period_start(period_start(ms)).to_string(),
            "2026-12-01"
        );
        let dec = Date::from_calendar_date(2026, time::Month::December, 1).unwrap();
        assert_eq!(next_period_start(dec).to_string(), "2027-01-01");
    }

    #[tokio::test]
    async fn quota_exhausts_and_resets_with_the_month() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!("sqlite://{}/q.db", dir.path().display()), 1)
            .await
            .unwrap();
        let ledger = QuotaLedger::new(store, Handle::current());
        let limits = QuotaLimits {
            tokens: Some(100),
            cost_nanousd: None,
        };
        let nov = 1_795_635_180_000; // 2026-11-25
        assert_eq!(ledger.check(1, limits, nov).await.unwrap(), Ok(()));
        ledger.add(1, 60, 0, nov);
        assert_eq!(ledger.check(1, limits, nov).await.unwrap(), Ok(()));
        ledger.add(1, 60, 0, nov);
        let e = ledger.check(1, limits, nov).await.unwrap().unwrap_err();
        assert_eq!(
            (e.what, e.resets_on.to_string().as_str()),
            ("tokens", "2026-12-01")
        );
        // Another user is unaffected; December starts from zero.
        assert_eq!(ledger.check(2, limits, nov).await.unwrap(), Ok(()));
        let dec = nov + 7 * 86_400_000;
        assert_eq!(ledger.check(1, limits, dec).await.unwrap(), Ok(()));
    }
}
