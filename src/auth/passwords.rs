//! Password hashing with argon2id. The crate's defaults are OWASP's recommended
//! parameters (19 MiB of memory, 2 iterations, 1 lane); hashing runs on a
//! blocking thread because it is deliberately slow.
//!
//! Sign-up and login are open to anyone, so at most one hash per core runs at
//! once (19 MiB each): a flood waits for a slot a little, then gets `Busy`
//! (503 with retry-after) instead of taking hundreds of blocking threads and
//! gigabytes of memory.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

pub const MIN_PASSWORD_LEN: usize = 10;
pub const MAX_PASSWORD_LEN: usize = 1024;

/// No hashing slot came free in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// How long a request waits for a hashing slot before `Busy`.
const SLOT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

fn slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        tokio::sync::Semaphore::new(cores)
    })
}

async fn slot() -> Result<tokio::sync::SemaphorePermit<'static>, Busy> {
    match tokio::time::timeout(SLOT_WAIT, slots().acquire()).await {
        Ok(Ok(permit)) => Ok(permit),
        _ => Err(Busy),
    }
}

/// Runs `work` on a blocking thread, then hands that thread's freed memory
/// back to the system. The allocator (mimalloc) keeps a thread's freed pages
/// for a while, and a hash frees 19 MiB on whichever of tokio's blocking
/// threads ran it: a burst of sign-ups then held one hash's worth more than
/// the hashes running (62 against 43 MiB of peak growth in
/// `security::fifty_parallel_signups_keep_memory_bounded_and_the_proxy_answering`,
/// about one run in six).
async fn hashing<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(move || {
        let done = work();
        // SAFETY: only frees this thread's unused pages; no pointer is involved.
        unsafe { libmimalloc_sys::mi_collect(true) };
        done
    })
    .await
    .ok()
}

pub async fn hash(password: String) -> Result<String, Busy> {
    let _slot = slot().await?;
    Ok(hashing(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .expect("argon2 with default parameters hashes any input")
            .to_string()
    })
    .await
    .expect("hashing thread"))
}

pub async fn verify(password: String, stored: String) -> Result<bool, Busy> {
    let _slot = slot().await?;
    Ok(hashing(move || {
        PasswordHash::new(&stored)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false))
}

/// A hash of a password nobody has, verified when an email is unknown so that
/// a login takes as long for unknown accounts as for known ones.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(b"decoy password for timing", &salt)
            .expect("argon2 hashes")
            .to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_are_argon2id_with_owasp_parameters() {
        let h = hash("correct horse battery".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert_eq!(
            verify("correct horse battery".into(), h.clone()).await,
            Ok(true)
        );
        assert_eq!(verify("wrong".into(), h).await, Ok(false));
        assert_eq!(verify("x".into(), "not a hash".into()).await, Ok(false));
    }
}
