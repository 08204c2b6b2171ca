//! Several gateway instances, one set of limits, through Redis, with a Redis
//! round trip only the first time an instance sees a key (or user).
//!
//! Each limited bucket also lives in Redis as a cluster-wide token bucket (a
//! level and the time it was computed, refilled by Redis's own clock in a Lua
//! script, so instance clocks never matter). Every `sync_ms` each instance takes
//! what it used since the last sync from those buckets (one pipelined round trip
//! for all of them), waits a third of an interval for the other instances to do
//! the same (all sync on the same wall-clock ticks), then reads the levels. Its
//! local buckets take those levels, and until the next sync it may use only its
//! share of each (level / live instances). The first take of an interval is
//! always allowed, so a request never starves.
//!
//! First sight: before an instance admits the first request of a key it has
//! not seen, it reads that key's levels and the live instances once (shared by
//! the requests that arrive meanwhile; bounded by `first_read_timeout`) and
//! starts from its share, so a fresh instance admits what the key allows at
//! once and never more than its share of what the others left.
//!
//! Error bound: in one interval the instances together take at most
//! max(level, N) requests from a bucket at `level`, so the cluster admits at
//! most N - 1 requests (or N - 1 requests' tokens) beyond a limit, where N is the
//! number of instances, plus what refills meanwhile. That holds while every sync
//! finishes within its third of an interval; an instance that falls behind (a
//! stalled process, a slow Redis) can add up to one share per late interval.
//! The first-sight read keeps that bound: it is a sync without a take.
//! tests/cluster.rs measures it with 3 instances.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;

use super::{Limiter, SyncItem, REQUESTS};
use crate::config::RedisConfig;

/// How long an instance counts as live after its last heartbeat.
const LIVE_MS: u64 = 3000;

/// KEYS[1]: a cluster-wide bucket; ARGV[1]: its limit per minute; ARGV[2]: what
/// to take (negative gives back). Returns the level after the take. A bucket
/// untouched for 3 minutes expires, which is the same as full.
const TAKE: &str = r"
local limit = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local v = redis.call('HMGET', KEYS[1], 'level', 'at')
local level = tonumber(v[1]) or limit
local at = tonumber(v[2]) or now
level = math.min(limit, level + math.max(0, now - at) * limit / 60000)
level = math.min(limit, level - tonumber(ARGV[2]))
local out = string.format('%.17g', level)
redis.call('HSET', KEYS[1], 'level', out, 'at', string.format('%.17g', now))
redis.call('PEXPIRE', KEYS[1], 180000)
return out
";

pub struct Cluster {
    take: redis::Script,
    conn: ConnectionManager,
    prefix: String,
    instance: String,
    every: Duration,
}

impl Cluster {
    pub async fn connect(cfg: &RedisConfig) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(cfg.url.as_str())?;
        let conn = ConnectionManager::new(client).await?;
        Ok(Self {
            take: redis::Script::new(TAKE),
            conn,
            prefix: cfg.prefix.clone(),
            instance: uuid::Uuid::new_v4().simple().to_string(),
            every: Duration::from_millis(cfg.sync_ms),
        })
    }

    fn bucket_key(&self, item: &SyncItem) -> String {
        let kind = if item.kind == REQUESTS { "r" } else { "t" };
        format!("{}rlb:{}:{kind}", self.prefix, item.subject.tag())
    }

    /// One sync: take this instance's use from the cluster-wide buckets, wait for
    /// the other instances to take theirs (every instance syncs on the same
    /// wall-clock ticks), then read the levels, heartbeat and apply. Returns the
    /// live instances.
    async fn sync_once(&self, limiter: &Limiter) -> Result<usize, redis::RedisError> {
        let items = limiter.sync_collect();
        let mut conn = self.conn.clone();
        let mut take = redis::pipe();
        take.load_script(&self.take).ignore();
        let used: Vec<_> = items.iter().filter(|i| i.delta != 0.0).collect();
        for item in &used {
            take.invoke_script(&self.invocation(item, item.delta))
                .ignore();
        }
        if !used.is_empty() {
            if let Err(e) = take.query_async::<()>(&mut conn).await {
                limiter.sync_failed(&items, true);
                return Err(e);
            }
        }
        tokio::time::sleep(self.every / 3).await;
        match self.levels(&items).await {
            Ok((instances, levels)) => {
                for (item, level) in items.iter().zip(levels) {
                    limiter.sync_apply(item, level, instances);
                }
                Ok(instances)
            }
            Err(e) => {
                limiter.sync_failed(&items, false);
                Err(e)
            }
        }
    }

    fn invocation(&self, item: &SyncItem, take: f64) -> redis::ScriptInvocation<'_> {
        let mut inv = self.take.prepare_invoke();
        inv.key(self.bucket_key(item)).arg(item.limit).arg(take);
        inv
    }

    /// How long a request on a key new to this instance waits for its levels.
    pub fn first_read_timeout(&self) -> Duration {
        self.every
            .clamp(Duration::from_millis(50), Duration::from_millis(500))
    }

    /// Heartbeat, live instances and the level of every bucket.
    pub async fn levels(&self, items: &[SyncItem]) -> Result<(usize, Vec<f64>), redis::RedisError> {
        let mut conn = self.conn.clone();
        let now_ms = wall_ms();
        let members = format!("{}instances", self.prefix);
        let mut read = redis::pipe();
        read.load_script(&self.take).ignore();
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
            read.invoke_script(&self.invocation(item, 0.0));
        }
        let values: Vec<redis::Value> = read.query_async(&mut conn).await?;
        let mut it = values.into_iter();
        let instances: usize = redis::from_redis_value(&it.next().unwrap_or(redis::Value::Nil))?;
        let levels = it
            .map(|v| redis::from_redis_value::<f64>(&v))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((instances, levels))
    }

    /// Runs the sync loop forever (on the control runtime).
    pub fn spawn_sync(self: &Arc<Self>, limiter: Arc<Limiter>) {
        let me = self.clone();
        tokio::spawn(async move {
            let every = me.every.as_millis().max(1) as u64;
            let mut failing = false;
            loop {
                // Ticks on wall-clock multiples of the interval, the same on every instance.
                let wait = every - wall_ms() % every;
                tokio::time::sleep(Duration::from_millis(wait)).await;
                match me.sync_once(&limiter).await {
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
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
