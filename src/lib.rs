//! BluesMinds Gateway: an OpenAI-compatible AI gateway on Pingora.
//! The modules follow one request's path; see DESIGN.md in the shared folder and README.md.

pub mod auth;
pub mod billing;
pub mod cli;
pub mod config;
pub mod error;
pub mod limits;
pub mod metrics;
pub mod proxy;
pub mod server;
pub mod side;
pub mod state;
pub mod store;
pub mod upstream;
pub mod usage;
