//! rategate: a reverse-proxy rate-limiting gateway.
//!
//! Modules follow the path a request takes: `server` accepts, `config` supplies the compiled
//! snapshot, `proxy` identifies the client and matches the route, `limiter` asks the `store`,
//! and `proxy` forwards or answers.

pub(crate) mod admin;
pub(crate) mod alerts;
pub mod app;
pub(crate) mod auth;
pub(crate) mod body;
pub(crate) mod ceiling;
pub mod cli;
pub mod clock;
pub mod config;
pub(crate) mod inflight;
pub mod limiter;
pub(crate) mod lru;
pub mod metrics;
pub(crate) mod millis;
pub mod net;
pub mod proxy;
pub(crate) mod server;
pub mod store;
pub mod telemetry;
pub mod uri_path;
