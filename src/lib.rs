//! BluesMinds Gateway: an OpenAI-compatible AI gateway on Pingora.
//!
//! The modules follow one proxied request: `config` (what the YAML says, split
//! into what needs a restart and what reloads) -> `state` (the snapshot a
//! request takes) -> `proxy` (admission: `auth` keys, `limits`; then
//! `upstream` selection, response streaming) -> `usage` (counting, the record,
//! the batch writer) -> `store` (the database). Beside it, `side` serves the
//! dashboard and APIs, `billing` moves users between plans, `metrics` is for
//! operators, `tls` holds the listeners' certificate. README.md's "Layout"
//! section maps every file.

pub mod allocator;
pub mod auth;
pub mod background;
pub mod billing;
pub mod cli;
pub mod client_ip;
pub mod config;
pub mod error;
pub mod json;
pub mod limits;
pub mod metrics;
pub mod protocols;
pub mod proxy;
pub mod server;
pub mod side;
#[cfg(target_os = "linux")]
pub mod startup_pages;
pub mod state;
pub mod store;
pub mod tls;
pub mod upstream;
pub mod usage;
