//! Waiting for a condition instead of sleeping for a guessed time: poll a check
//! until it holds, fail the test (naming what it waited for) when it never does.

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

/// How long to keep polling, and how often. `Poll::default()` is 15 s, every 20 ms.
#[derive(Clone, Copy, Debug)]
pub struct Poll {
    timeout: Duration,
    every: Duration,
}

impl Default for Poll {
    fn default() -> Self {
        Self::within(Duration::from_secs(15))
    }
}

impl Poll {
    /// Gives up `timeout` after the first check (polling every 20 ms).
    pub const fn within(timeout: Duration) -> Self {
        Self {
            timeout,
            every: Duration::from_millis(20),
        }
    }

    /// Waits `every` between two checks. A check that sends requests sends one
    /// round per interval, so this sets the pace of those requests too.
    pub const fn every(self, every: Duration) -> Self {
        Self { every, ..self }
    }

    /// Runs `check` until it returns `Ok`, or until the timeout has passed: then
    /// returns its last `Err`, for the caller to report (with whatever context
    /// that failure needs, gathered only then).
    pub async fn try_until<T, E, F, Fut>(self, mut check: F) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let deadline = Instant::now() + self.timeout;
        loop {
            match check().await {
                Ok(value) => return Ok(value),
                Err(last) if Instant::now() >= deadline => return Err(last),
                Err(_) => tokio::time::sleep(self.every).await,
            }
        }
    }

    /// Waits until `check` holds; fails the test naming `what` on timeout.
    pub async fn until<F, Fut>(self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let held = self
            .try_until(|| {
                let done = check();
                async move {
                    if done.await {
                        Ok(())
                    } else {
                        Err(())
                    }
                }
            })
            .await;
        assert!(held.is_ok(), "still waiting for: {what}");
    }

    /// Waits until `check` returns `Some`, and returns its value.
    pub async fn until_some<T, F, Fut>(self, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        self.try_until(|| {
            let found = check();
            async move { found.await.ok_or(()) }
        })
        .await
        .unwrap_or_else(|()| panic!("still waiting for: {what}"))
    }

    /// Waits until `check` returns `Ok`, and returns its value; on timeout the
    /// test fails with `what` and the last `Err` (what was seen instead).
    pub async fn until_ok<T, E, F, Fut>(self, what: &str, check: F) -> T
    where
        E: Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.try_until(check)
            .await
            .unwrap_or_else(|last| panic!("still waiting for: {what} (last seen: {last})"))
    }
}

/// Waits until `check` holds, polling every 20 ms; fails the test after 15 s,
/// naming what it waited for. No test asserts on how long that took.
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    Poll::default().until(what, check).await
}

/// Like [`eventually`], for a check that finds something: returns what it found.
pub async fn eventually_some<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    Poll::default().until_some(what, check).await
}
