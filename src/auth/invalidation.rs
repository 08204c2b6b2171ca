//! Key revocations, rotations and plan changes reach every instance through a
//! Redis channel: each drops the key from its cache on receipt (well within a
//! second), instead of waiting for the cached entry to expire.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use tokio::sync::mpsc;

use crate::config::RedisConfig;

pub struct KeyInvalidations {
    client: redis::Client,
    conn: ConnectionManager,
    channel: String,
}

impl KeyInvalidations {
    pub async fn connect(cfg: &RedisConfig) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(cfg.url.as_str())?;
        let conn = ConnectionManager::new(client.clone()).await?;
        Ok(Self {
            client,
            conn,
            channel: format!("{}keys:invalidate", cfg.prefix),
        })
    }

    fn channel(&self) -> String {
        self.channel.clone()
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
