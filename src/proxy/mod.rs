//! The request path: identity, route, access lists, limiter, headers, forward or answer.

pub(crate) mod access;
pub(crate) mod body;
pub(crate) mod client_body;
pub mod client_ip;
pub(crate) mod cost;
pub(crate) mod extended_connect;
pub(crate) mod forward_headers;
pub(crate) mod grpc;
pub(crate) mod handler;
pub(crate) mod host;
pub(crate) mod pool;
pub mod rate_headers;
pub mod response;
pub mod route;
pub(crate) mod stats;
#[cfg(test)]
mod test_headers;
pub(crate) mod tunnel;
pub(crate) mod upstream;
pub(crate) mod upstream_ceiling;
pub(crate) mod upstream_client;
