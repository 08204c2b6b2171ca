//! Who is calling: API keys for the proxy; passwords, sessions and login
//! throttling for the dashboard.

pub mod invalidation;
pub mod keys;
pub mod passwords;
pub mod sessions;
pub mod throttle;

pub use keys::{generate_key, hash_key, ApiKey, GeneratedKey, KeyCache};
pub use throttle::LoginThrottle;
