//! API keys: `bm_` + 43 base62 characters (~256 bits of entropy). Such keys need no
//! slow hash, so the store keeps their SHA-256 and the proxy looks them up through
//! a moka cache; argon2 is only for passwords.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::future::Cache;
use moka::Expiry;
use rand::Rng;
use sha2::{Digest, Sha256};
use tokio::runtime::Handle;

use crate::config::LimitSettings;
use crate::error::GatewayError;
use crate::store::{now_ms, KeyRecord, Store};

pub const KEY_PREFIX: &str = "bm_";
const KEY_RANDOM_CHARS: usize = 43;
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A freshly generated key: `secret` is shown to the user once and never stored.
pub struct GeneratedKey {
    pub secret: String,
    pub hash: String,
    pub prefix: String,
    pub last4: String,
}

pub fn generate_key() -> GeneratedKey {
    let mut rng = rand::rngs::OsRng;
    let random: String = (0..KEY_RANDOM_CHARS)
        .map(|_| BASE62[rng.gen_range(0..BASE62.len())] as char)
        .collect();
    let secret = format!("{KEY_PREFIX}{random}");
    GeneratedKey {
        hash: hex::encode(hash_key(&secret)),
        prefix: secret[..KEY_PREFIX.len() + 4].to_string(),
        last4: secret[secret.len() - 4..].to_string(),
        secret,
    }
}

pub fn hash_key(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// What the proxy needs to know about a valid key.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub id: i64,
    pub name: String,
    pub user_id: Option<i64>,
    /// Model allow-list; `None` allows every model the gateway serves.
    pub models: Option<Vec<String>>,
    pub expires_at: Option<i64>,
    /// The key's own limits (each `None` falls back to the plan, then to config).
    pub limits: LimitSettings,
    /// The owner's plan name, for keys that belong to a user.
    pub plan: Option<String>,
}

impl ApiKey {
    pub fn allows_model(&self, model: &str) -> bool {
        self.models
            .as_ref()
            .is_none_or(|m| m.iter().any(|allowed| allowed == model))
    }

    fn from_record(r: KeyRecord) -> Option<Self> {
        if r.revoked_at.is_some() || r.user_disabled {
            return None;
        }
        let positive = |v: Option<i64>| v.filter(|&n| n > 0).map(|n| n as u64);
        Some(Self {
            id: r.id,
            name: r.name,
            user_id: r.user_id,
            models: r.models,
            expires_at: r.expires_at,
            limits: LimitSettings {
                rpm: positive(r.rpm),
                tpm: positive(r.tpm),
                concurrency: positive(r.concurrency),
            },
            plan: r.user_plan,
        })
    }
}

/// Unknown keys are remembered briefly so a client hammering with a bad key does
/// not reach the database on every request; known keys stay longer and are
/// dropped explicitly when revoked.
struct KeyExpiry {
    valid_ttl: Duration,
    invalid_ttl: Duration,
}

impl Expiry<[u8; 32], Option<Arc<ApiKey>>> for KeyExpiry {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Option<Arc<ApiKey>>,
        _now: Instant,
    ) -> Option<Duration> {
        Some(if value.is_some() {
            self.valid_ttl
        } else {
            self.invalid_ttl
        })
    }
}

#[derive(Clone)]
pub struct KeyCache {
    cache: Cache<[u8; 32], Option<Arc<ApiKey>>>,
    store: Store,
    /// Database work runs on the control runtime, whatever runtime asks for it.
    db_runtime: Handle,
}

impl KeyCache {
    pub fn new(store: Store, db_runtime: Handle) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(100_000)
                .expire_after(KeyExpiry {
                    valid_ttl: Duration::from_secs(60),
                    invalid_ttl: Duration::from_secs(5),
                })
                .build(),
            store,
            db_runtime,
        }
    }

    /// Checks a bearer token; a cache hit costs one SHA-256 and one map lookup.
    pub async fn authenticate(&self, token: &str) -> Result<Arc<ApiKey>, GatewayError> {
        let invalid = || GatewayError::InvalidApiKey(redact(token));
        if !token.starts_with(KEY_PREFIX) || token.len() > 256 {
            return Err(invalid());
        }
        let hash = hash_key(token);
        let store = self.store.clone();
        let db = self.db_runtime.clone();
        let found = self
            .cache
            .try_get_with(hash, async move {
                let hex_hash = hex::encode(hash);
                let record = db
                    .spawn(async move { store.find_key_by_hash(&hex_hash).await })
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(record.and_then(ApiKey::from_record).map(Arc::new))
            })
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "key lookup failed");
                GatewayError::KeyStoreUnavailable
            })?;
        match found {
            Some(key) if key.expires_at.is_none_or(|t| t > now_ms()) => Ok(key),
            _ => Err(invalid()),
        }
    }

    /// Drops a key (by its stored hex hash) so the next request re-reads the store.
    pub async fn invalidate_hex(&self, hex_hash: &str) {
        if let Ok(bytes) = hex::decode(hex_hash) {
            if let Ok(hash) = <[u8; 32]>::try_from(bytes.as_slice()) {
                self.cache.invalidate(&hash).await;
            }
        }
    }
}

/// OpenAI shows only the ends of a wrong key; so do we, and never the whole secret.
fn redact(token: &str) -> String {
    if token.len() <= 12 || !token.is_char_boundary(6) || !token.is_char_boundary(token.len() - 4) {
        return "***".into();
    }
    format!("{}***{}", &token[..6], &token[token.len() - 4..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_look_right_and_differ() {
        let a = generate_key();
        let b = generate_key();
        assert!(a.secret.starts_with("bm_"));
        assert_eq!(a.secret.len(), 3 + KEY_RANDOM_CHARS);
        assert!(a.secret[3..].bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a.secret, b.secret);
        assert_eq!(a.hash, hex::encode(hash_key(&a.secret)));
        assert_eq!(a.prefix, &a.secret[..7]);
        assert!(a.secret.ends_with(&a.last4));
    }

    #[test]
    fn redaction_hides_the_middle() {
        let k = generate_key().secret;
        let r = redact(&k);
        assert!(r.starts_with("bm_") && r.contains("***"));
        assert!(!r.contains(&k[8..20]));
        assert_eq!(redact("short"), "***");
    }
}
