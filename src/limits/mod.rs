//! Rate limits on the hot path, all in memory: per key and per user, a requests
//! bucket, a tokens bucket and a cap on requests in flight. A request is admitted
//! only if every bucket that applies to it has room, and then all are debited
//! together under their locks, so N requests against a limit of L admit exactly L.
//!
//! Tokens are unknown before the answer: admission debits an estimate (prompt
//! bytes / 4 + max_tokens) and `Permit::reconcile` settles the difference.

pub mod bucket;
pub mod cluster;
pub mod quota;
mod sync;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::sync::Cache;

pub use bucket::TokenBucket;
pub use quota::{QuotaLedger, QuotaLimits};

use crate::config::LimitSettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subject {
    Key(i64),
    User(i64),
}

impl Subject {
    /// Name in shared storage (Redis).
    pub fn tag(&self) -> String {
        match self {
            Self::Key(id) => format!("k{id}"),
            Self::User(id) => format!("u{id}"),
        }
    }
}

/// The two bucket kinds, as indexes into the per-kind arrays below.
pub const REQUESTS: usize = 0;
pub const TOKENS: usize = 1;

#[derive(Debug)]
struct Buckets {
    requests: Option<TokenBucket>,
    tokens: Option<TokenBucket>,
    /// Cluster mode: what this instance took (or gave back) since the last sync.
    unsynced: [f64; 2],
    /// Cluster mode: what this instance took since the last sync, for the share check.
    spent: [f64; 2],
    /// Cluster mode: how much this instance may take until the next sync (its share
    /// of what the cluster has left); `None` outside a cluster.
    share: [Option<f64>; 2],
}

impl Buckets {
    fn bucket(&mut self, kind: usize) -> Option<&mut TokenBucket> {
        if kind == REQUESTS {
            self.requests.as_mut()
        } else {
            self.tokens.as_mut()
        }
    }

    /// Within this instance's share: the first take of an interval always is,
    /// later ones only while they fit.
    fn share_allows(&self, kind: usize, n: u64) -> bool {
        self.share[kind]
            .is_none_or(|cap| self.spent[kind] == 0.0 || self.spent[kind] + n as f64 <= cap)
    }

    fn took(&mut self, kind: usize, n: f64) {
        self.unsynced[kind] += n;
        self.spent[kind] += n.max(0.0);
    }
}

#[derive(Debug)]
struct SubjectState {
    buckets: Mutex<Buckets>,
    open: AtomicU64,
    /// Cluster mode: set once this instance has read the subject's cluster-wide
    /// levels (on first sight, before its first request is admitted).
    primed: tokio::sync::OnceCell<()>,
}

impl SubjectState {
    fn new(clustered: bool) -> Self {
        // In a cluster a new subject may take one request until the first sync
        // tells it its share: no burst of N full buckets at once.
        let share = if clustered { Some(0.0) } else { None };
        Self {
            buckets: Mutex::new(Buckets {
                requests: None,
                tokens: None,
                unsynced: [0.0; 2],
                spent: [0.0; 2],
                share: [share; 2],
            }),
            open: AtomicU64::new(0),
            primed: tokio::sync::OnceCell::new(),
        }
    }
}

/// What `x-ratelimit-*` headers report: the tightest bucket of each kind.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RateInfo {
    pub requests: Option<BucketInfo>,
    pub tokens: Option<BucketInfo>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketInfo {
    pub limit: u64,
    pub remaining: u64,
    pub reset: Duration,
}

/// OpenAI's duration format (`20ms`, `2s`, `6m0s`), as text.
pub fn openai_duration(d: Duration) -> String {
    let mut text = Vec::with_capacity(8);
    put_openai_duration(&mut text, d);
    String::from_utf8(text).expect("digits and units are ASCII")
}

/// OpenAI's duration format written into `out`: the `x-ratelimit-reset-*`
/// value of every answer, written without `fmt` (callgrind: its
/// `format!` cost more than the header insert).
pub fn put_openai_duration(out: &mut impl bytes::BufMut, d: Duration) {
    let mut digits = itoa::Buffer::new();
    let ms = d.as_millis();
    if ms < 1000 {
        out.put_slice(digits.format(ms).as_bytes());
        out.put_slice(b"ms");
        return;
    }
    let secs = d.as_secs_f64().ceil() as u64;
    if secs >= 60 {
        out.put_slice(digits.format(secs / 60).as_bytes());
        out.put_slice(b"m");
    }
    out.put_slice(digits.format(secs % 60).as_bytes());
    out.put_slice(b"s");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    Requests,
    Tokens,
    Concurrency,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Denied {
    pub kind: LimitKind,
    pub limit: u64,
    /// When retrying can succeed; `None` when it never can (request larger than the TPM limit).
    pub retry_after: Option<Duration>,
    pub info: RateInfo,
}

/// An admitted request: holds its concurrency slots until dropped and settles
/// its token estimate once the real count is known.
#[derive(Debug)]
pub struct Permit {
    held: Vec<Arc<SubjectState>>,
    estimate: u64,
    pub info: RateInfo,
}

impl Permit {
    /// Second step of admission, once the body is read: debits the token
    /// estimate from every tokens bucket the permit's subjects have. The
    /// request slot stays taken whatever this says (it was used).
    pub fn take_tokens(&mut self, tokens: u64) -> Result<(), Denied> {
        let now = Instant::now();
        let mut guards: Vec<_> = self
            .held
            .iter()
            .map(|s| s.buckets.lock().expect("bucket lock"))
            .collect();
        let mut denial = None;
        for b in guards.iter_mut() {
            let share = b.share_allows(TOKENS, tokens);
            if let Some(t) = b.tokens.as_mut() {
                if tokens > t.limit() {
                    denial = Some((t.limit(), None));
                } else if !t.has(tokens, now) {
                    denial = Some((t.limit(), Some(t.wait_for(tokens))));
                } else if !share {
                    denial = Some((t.limit(), Some(Duration::from_millis(100))));
                }
            }
            if denial.is_some() {
                break;
            }
        }
        if denial.is_none() {
            for b in guards.iter_mut() {
                if let Some(t) = b.tokens.as_mut() {
                    t.take(tokens);
                    b.took(TOKENS, tokens as f64);
                }
            }
            self.estimate += tokens;
        }
        // The requests part stays what admission reported for this request
        // (other requests may have taken slots since); tokens are as of now.
        self.info.tokens = rate_info(&guards).tokens;
        match denial {
            Some((limit, retry_after)) => Err(Denied {
                kind: LimitKind::Tokens,
                limit,
                retry_after,
                info: self.info.clone(),
            }),
            None => Ok(()),
        }
    }

    pub fn reconcile(&self, actual_tokens: u64) {
        if actual_tokens == self.estimate {
            return;
        }
        let delta = self.estimate as f64 - actual_tokens as f64;
        let now = Instant::now();
        for state in &self.held {
            let mut b = state.buckets.lock().expect("bucket lock");
            if let Some(t) = b.tokens.as_mut() {
                t.adjust(delta, now);
                b.unsynced[TOKENS] -= delta;
            }
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        for state in &self.held {
            state.open.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The limits that apply to one request.
pub struct Ask {
    pub key_id: i64,
    pub key: LimitSettings,
    pub user: Option<(i64, LimitSettings)>,
    pub tokens: u64,
}

pub struct Limiter {
    subjects: Cache<Subject, Arc<SubjectState>, foldhash::fast::RandomState>,
    clustered: bool,
    /// Where cluster-wide levels are read on a subject's first sight.
    cluster: std::sync::OnceLock<Arc<cluster::Cluster>>,
}

/// One bucket's part in a cluster sync: what this instance used since the last one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SyncItem {
    pub subject: Subject,
    pub kind: usize,
    /// The bucket's limit per minute, which the cluster-wide bucket refills by.
    pub limit: u64,
    pub delta: f64,
}

impl Default for Limiter {
    fn default() -> Self {
        Self::new()
    }
}

impl Limiter {
    /// A limiter for one instance alone.
    pub fn new() -> Self {
        Self::with_cluster(false)
    }

    /// `clustered`: several instances share the limits (see `cluster`).
    pub fn with_cluster(clustered: bool) -> Self {
        Self {
            clustered,
            cluster: std::sync::OnceLock::new(),
            // Idle subjects are forgotten; after an hour of silence their buckets
            // would be full anyway.
            subjects: Cache::builder()
                .max_capacity(1_000_000)
                .time_to_idle(Duration::from_secs(3600))
                .build_with_hasher(Default::default()),
        }
    }

    fn state(&self, s: Subject) -> Arc<SubjectState> {
        self.subjects
            .get_with(s, || Arc::new(SubjectState::new(self.clustered)))
    }

    /// Cluster mode: levels of subjects new to this instance are read from this
    /// cluster before their first request is admitted.
    pub fn attach(&self, cluster: Arc<cluster::Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    fn subjects(&self, ask: &Ask) -> Vec<(Subject, Arc<SubjectState>, LimitSettings)> {
        let mut subjects = Vec::with_capacity(2);
        let key = Subject::Key(ask.key_id);
        subjects.push((key, self.state(key), ask.key));
        if let Some((user_id, limits)) = ask.user {
            let user = Subject::User(user_id);
            subjects.push((user, self.state(user), limits));
        }
        subjects
    }

    /// `admit`, for the proxy: in a cluster, a subject this instance has not seen
    /// yet first reads its cluster-wide levels (one Redis round trip per subject
    /// per instance, shared by the requests that arrive meanwhile), so a fresh
    /// instance neither refuses a burst the key's limit allows nor ignores what
    /// the other instances used.
    pub async fn admit_in_cluster(&self, ask: &Ask) -> Result<Permit, Denied> {
        let subjects = self.subjects(ask);
        if let Some(cluster) = self.cluster.get() {
            for (subject, state, limits) in &subjects {
                if !state.primed.initialized() {
                    state
                        .primed
                        .get_or_init(|| sync::prime(cluster, *subject, state, *limits))
                        .await;
                }
            }
        }
        self.admit_subjects(subjects, ask)
    }

    pub fn admit(&self, ask: &Ask) -> Result<Permit, Denied> {
        self.admit_subjects(self.subjects(ask), ask)
    }

    fn admit_subjects(
        &self,
        subjects: Vec<(Subject, Arc<SubjectState>, LimitSettings)>,
        ask: &Ask,
    ) -> Result<Permit, Denied> {
        let now = Instant::now();
        // Locks are always taken key first, then user: no deadlock.
        let mut guards: Vec<_> = subjects
            .iter()
            .map(|(_, s, _)| s.buckets.lock().expect("bucket lock"))
            .collect();
        let mut denial: Option<(LimitKind, u64, Option<Duration>)> = None;
        for ((_, state, limits), buckets) in subjects.iter().zip(guards.iter_mut()) {
            sync_bucket(&mut buckets.requests, limits.rpm, now);
            sync_bucket(&mut buckets.tokens, limits.tpm, now);
            if denial.is_some() {
                continue;
            }
            if let Some(max) = limits.concurrency {
                if state.open.load(Ordering::Acquire) >= max {
                    denial = Some((LimitKind::Concurrency, max, Some(Duration::from_secs(1))));
                    continue;
                }
            }
            // A bucket with room may still be over this instance's cluster share:
            // then the next sync (a few ms away) is worth waiting for.
            let share_wait = Some(Duration::from_millis(100));
            let requests_share = buckets.share_allows(REQUESTS, 1);
            if let Some(b) = buckets.requests.as_mut() {
                if !b.has(1, now) {
                    denial = Some((LimitKind::Requests, b.limit(), Some(b.wait_for(1))));
                    continue;
                }
                if !requests_share {
                    denial = Some((LimitKind::Requests, b.limit(), share_wait));
                    continue;
                }
            }
            let tokens_share = buckets.share_allows(TOKENS, ask.tokens);
            if let Some(b) = buckets.tokens.as_mut() {
                if ask.tokens > b.limit() {
                    denial = Some((LimitKind::Tokens, b.limit(), None));
                } else if !b.has(ask.tokens, now) {
                    denial = Some((LimitKind::Tokens, b.limit(), Some(b.wait_for(ask.tokens))));
                } else if !tokens_share {
                    denial = Some((LimitKind::Tokens, b.limit(), share_wait));
                }
            }
        }
        if denial.is_none() {
            for ((_, state, _), buckets) in subjects.iter().zip(guards.iter_mut()) {
                if let Some(b) = buckets.requests.as_mut() {
                    b.take(1);
                    buckets.took(REQUESTS, 1.0);
                }
                if let Some(b) = buckets.tokens.as_mut() {
                    b.take(ask.tokens);
                    buckets.took(TOKENS, ask.tokens as f64);
                }
                state.open.fetch_add(1, Ordering::AcqRel);
            }
        }
        let info = rate_info(&guards);
        drop(guards);
        match denial {
            Some((kind, limit, retry_after)) => Err(Denied {
                kind,
                limit,
                retry_after,
                info,
            }),
            None => Ok(Permit {
                held: subjects.into_iter().map(|(_, s, _)| s).collect(),
                estimate: ask.tokens,
                info,
            }),
        }
    }
}

fn sync_bucket(bucket: &mut Option<TokenBucket>, limit: Option<u64>, now: Instant) {
    match (bucket.as_mut(), limit) {
        (Some(b), Some(l)) => b.set_limit(l, now),
        (None, Some(l)) => *bucket = Some(TokenBucket::per_minute(l, now)),
        (_, None) => *bucket = None,
    }
}

fn rate_info(guards: &[std::sync::MutexGuard<'_, Buckets>]) -> RateInfo {
    let tightest = |pick: fn(&Buckets) -> Option<&TokenBucket>| {
        guards
            .iter()
            .filter_map(|g| pick(g))
            .min_by_key(|b| b.remaining())
            .map(|b| BucketInfo {
                limit: b.limit(),
                remaining: b.remaining(),
                reset: b.until_full(),
            })
    };
    RateInfo {
        requests: tightest(|b| b.requests.as_ref()),
        tokens: tightest(|b| b.tokens.as_ref()),
    }
}

/// A cheap pre-answer token estimate: ~4 bytes of prompt per token plus the
/// completion budget the client asked for.
pub fn estimate_tokens(body_len: usize, max_tokens: Option<u64>) -> u64 {
    (body_len as u64).div_ceil(4) + max_tokens.unwrap_or(0)
}

#[cfg(test)]
mod tests;
