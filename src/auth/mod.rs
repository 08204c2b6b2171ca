//! Who is calling: API keys for the proxy (passwords and sessions come with the side app).

pub mod keys;

pub use keys::{generate_key, hash_key, ApiKey, GeneratedKey, KeyCache};
