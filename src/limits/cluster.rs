//! Several gateway instances, one set of limits, through Redis, and never a Redis
//! round trip on a request.
//!
//! Every `sync_ms` each instance adds what it took from each bucket since the last
//! sync to a cluster-wide running total in Redis (one pipelined round trip for all
//! buckets) and gets the new total back. What the other instances took is then
//! charged to the local bucket, and until the next sync the instance may take only
//! its share of what is left (left / live instances). The first take of an interval
//! is always allowed, so a request never starves.
//!
//! Every instance syncs on the same wall-clock ticks: it adds its deltas, waits a
//! third of an interval for the others to add theirs, then reads the totals.
//!
//! Error bound: in one interval the instances together take at most
//! max(left, N) requests from a bucket that had `left`, so the cluster admits at
//! most N - 1 requests (or N - 1 requests' tokens) beyond a limit, where N is the
//! number of instances, plus what refills meanwhile. That holds while every sync
//! finishes within its third of an interval; an instance that falls behind (a
//! stalled process, a slow Redis) can add up to one share per late interval.
//! tests/cluster.rs measures it with 3 instances: 32 admitted against 30 RPM on
//! an idle machine (bound 32 plus refill), up to 36 with the machine under load.
//! Without the sync the three would admit 90.
//!
//! Key revocations, rotations and plan changes are published on a channel; every
//! instance drops the key from its cache on receipt (well within a second).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use tokio::sync::mpsc;

use super::{Limiter, SyncItem, REQUESTS};
use crate::config::RedisConfig;
use crate::state::AppState;

/// How long an instance counts as live after its last heartbeat.
const LIVE_MS: u64 = 3000;

pub struct Cluster {
    client: redis::Client,
    conn: ConnectionManager,
    prefix: String,
    instance: String,
    every: Duration,
}

impl Cluster {
    pub async fn connect(cfg: &RedisConfig) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(cfg.url.as_str())?;
        let conn = ConnectionManager::new(client.clone()).await?;
        Ok(Self {
            client,
            conn,
            prefix: cfg.prefix.clone(),
            instance: uuid::Uuid::new_v4().simple().to_string(),
            every: Duration::from_millis(cfg.sync_ms),
        })
    }

    fn channel(&self) -> String {
        format!("{}keys:invalidate", self.prefix)
    }

    fn bucket_key(&self, item: &SyncItem) -> String {
        let kind = if item.kind == REQUESTS { "r" } else { "t" };
        format!("{}rl:{}:{kind}", self.prefix, item.subject.tag())
    }

    /// One sync: add this instance's deltas, wait for the other instances to add
    /// theirs (every instance syncs on the same wall-clock ticks), then read the
    /// totals, heartbeat and apply. Returns the live instances.
    async fn sync_once(&self, limiter: &Limiter) -> Result<usize, redis::RedisError> {
        let items = limiter.sync_collect();
        let result = self.exchange(&items).await;
        match result {
            Ok((instances, totals)) => {
                for (item, total) in items.iter().zip(totals) {
                    limiter.sync_apply(item, total, instances);
                }
                Ok(instances)
            }
            Err(e) => {
                limiter.sync_failed(&items);
                Err(e)
            }
        }
    }

    async fn exchange(&self, items: &[SyncItem]) -> Result<(usize, Vec<f64>), redis::RedisError> {
        let mut conn = self.conn.clone();
        let mut add = redis::pipe();
        for item in items.iter().filter(|i| i.delta != 0.0) {
            let key = self.bucket_key(item);
            add.cmd("INCRBYFLOAT").arg(&key).arg(item.delta).ignore();
            // A bucket nobody touched for a while is full again anyway.
            add.cmd("EXPIRE").arg(&key).arg(180).ignore();
        }
        add.query_async::<()>(&mut conn).await?;
        // The others add theirs on the same tick; a third of an interval later the
        // totals include them.
        tokio::time::sleep(self.every / 3).await;
        let now_ms = wall_ms();
        let members = format!("{}instances", self.prefix);
        let mut read = redis::pipe();
        read.cmd("ZADD")
            .arg(&members)
            .arg(now_ms)
            .arg(&self.instance)
            .ignore();
        read.cmd("ZREMRANGEBYSCORE")
            .arg(&members)
            .arg("-inf")
            .arg(now_ms.saturating_sub(LIVE_MS))
            .ignore();
        read.cmd("ZCARD").arg(&members);
        for item in items {
            read.cmd("INCRBYFLOAT").arg(self.bucket_key(item)).arg(0);
        }
        let values: Vec<redis::Value> = read.query_async(&mut conn).await?;
        let mut it = values.into_iter();
        let instances: usize = redis::from_redis_value(&it.next().unwrap_or(redis::Value::Nil))?;
        let totals = it
            .map(|v| redis::from_redis_value::<f64>(&v))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((instances, totals))
    }

    /// Runs the sync loop forever (on the control runtime).
    pub fn spawn_sync(self: &Arc<Self>, state: Arc<AppState>) {
        let me = self.clone();
        tokio::spawn(async move {
            let every = me.every.as_millis().max(1) as u64;
            let mut failing = false;
            loop {
                // Ticks on wall-clock multiples of the interval, the same on every instance.
                let wait = every - wall_ms() % every;
                tokio::time::sleep(Duration::from_millis(wait)).await;
                match me.sync_once(&state.limiter).await {
                    Ok(_) if failing => {
                        failing = false;
                        tracing::info!("cluster limit sync works again");
                    }
                    Ok(_) => {}
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "cluster limit sync failed: limits are per instance until Redis answers");
                    }
                    Err(_) => {}
                }
            }
        });
    }

    /// Publishes one invalidation and waits for Redis to take it (the CLI's path).
    pub async fn publish_now(&self, hex_hash: &str) -> Result<(), redis::RedisError> {
        let mut conn = self.conn.clone();
        redis::cmd("PUBLISH")
            .arg(self.channel())
            .arg(hex_hash)
            .query_async::<i64>(&mut conn)
            .await
            .map(|_| ())
    }

    /// A sender whose key hashes are published to every instance (including this one).
    pub fn spawn_publisher(self: &Arc<Self>) -> mpsc::UnboundedSender<String> {
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let me = self.clone();
        tokio::spawn(async move {
            let channel = me.channel();
            while let Some(hash) = rx.recv().await {
                let mut conn = me.conn.clone();
                let sent: Result<i64, _> = redis::cmd("PUBLISH")
                    .arg(&channel)
                    .arg(&hash)
                    .query_async(&mut conn)
                    .await;
                if let Err(e) = sent {
                    tracing::warn!(error = %e, "cannot publish a key invalidation");
                }
            }
        });
        tx
    }

    /// Calls `on_key` for every key hash another instance invalidates; resubscribes
    /// after a lost connection.
    pub fn spawn_subscriber(self: &Arc<Self>, on_key: impl Fn(String) + Send + Sync + 'static) {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                match me.client.get_async_pubsub().await {
                    Ok(mut pubsub) => {
                        if let Err(e) = pubsub.subscribe(me.channel()).await {
                            tracing::warn!(error = %e, "cannot subscribe to key invalidations");
                        } else {
                            let mut messages = pubsub.on_message();
                            while let Some(msg) = messages.next().await {
                                if let Ok(hash) = msg.get_payload::<String>() {
                                    on_key(hash);
                                }
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot reach Redis for key invalidations")
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
