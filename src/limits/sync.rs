//! What a cluster sync (see `cluster`) does to this instance's buckets: report
//! what was used, take the cluster-wide levels and this instance's share, and
//! read them on a subject's first sight.

use std::time::Instant;

use super::{cluster, sync_bucket, LimitSettings, Limiter, Subject, SubjectState, SyncItem};
use super::{REQUESTS, TOKENS};

impl Limiter {
    /// Cluster sync, step 1: every limited bucket with what this instance used
    /// since the last sync (buckets with nothing used are included too: the sync
    /// also tells them what the other instances used).
    pub fn sync_collect(&self) -> Vec<SyncItem> {
        let mut items = Vec::new();
        for (subject, state) in self.subjects.iter() {
            let mut b = state.buckets.lock().expect("bucket lock");
            for kind in [REQUESTS, TOKENS] {
                if let Some(limit) = b.bucket(kind).map(|b| b.limit()) {
                    items.push(SyncItem {
                        subject: *subject,
                        kind,
                        limit,
                        delta: b.unsynced[kind],
                    });
                    b.unsynced[kind] = 0.0;
                }
            }
        }
        items
    }

    /// Cluster sync, step 2: `level` is what the cluster-wide bucket holds after
    /// every instance added what it used up to this sync's tick. The local bucket
    /// takes that level, less what this instance used since the tick (not yet in
    /// it), and this instance's share until the next sync becomes the level
    /// divided among the `instances`.
    pub fn sync_apply(&self, item: &SyncItem, level: f64, instances: usize) {
        if let Some(state) = self.subjects.get(&item.subject) {
            apply_level(&state, item.kind, level, instances);
        }
    }

    /// Cluster sync failed. `restore`: the deltas never reached Redis, so they
    /// go into the next try. While the cluster is unreachable each instance
    /// uses its own buckets whole.
    pub fn sync_failed(&self, items: &[SyncItem], restore: bool) {
        for item in items {
            if let Some(state) = self.subjects.get(&item.subject) {
                let mut b = state.buckets.lock().expect("bucket lock");
                if restore {
                    b.unsynced[item.kind] += item.delta;
                }
                b.share[item.kind] = None;
            }
        }
    }
}

fn apply_level(state: &SubjectState, kind: usize, level: f64, instances: usize) {
    let now = Instant::now();
    let mut b = state.buckets.lock().expect("bucket lock");
    let since_tick = b.unsynced[kind];
    if let Some(bucket) = b.bucket(kind) {
        bucket.set_available(level - since_tick, now);
        b.share[kind] = Some(level.max(0.0) / instances.max(1) as f64);
        // The new share covers the interval that began at this sync's tick:
        // what was taken since then already counts against it.
        b.spent[kind] = since_tick.max(0.0);
    }
}

/// First sight of a subject in a cluster: its buckets start from the
/// cluster-wide levels and this instance's share of them. If Redis does not
/// answer in time the buckets are used whole until the next sync, as when a
/// sync fails.
pub(super) async fn prime(
    cluster: &cluster::Cluster,
    subject: Subject,
    state: &SubjectState,
    limits: LimitSettings,
) {
    let items: Vec<SyncItem> = [(REQUESTS, limits.rpm), (TOKENS, limits.tpm)]
        .into_iter()
        .filter_map(|(kind, limit)| {
            limit.map(|limit| SyncItem {
                subject,
                kind,
                limit,
                delta: 0.0,
            })
        })
        .collect();
    if items.is_empty() {
        return;
    }
    {
        let now = Instant::now();
        let mut b = state.buckets.lock().expect("bucket lock");
        sync_bucket(&mut b.requests, limits.rpm, now);
        sync_bucket(&mut b.tokens, limits.tpm, now);
    }
    match tokio::time::timeout(cluster.first_read_timeout(), cluster.levels(&items)).await {
        Ok(Ok((instances, levels))) => {
            for (item, level) in items.iter().zip(levels) {
                apply_level(state, item.kind, level, instances);
            }
        }
        failed => {
            let error = match failed {
                Ok(Err(e)) => e.to_string(),
                _ => "timed out".into(),
            };
            tracing::warn!(subject = %subject.tag(), %error, "cannot read cluster limits of a new key; its limits are per instance until the next sync");
            let mut b = state.buckets.lock().expect("bucket lock");
            b.share = [None; 2];
        }
    }
}
