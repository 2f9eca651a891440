//! The request path: identity, route, access lists, limiter, headers, forward or answer.

pub mod access;
pub mod body;
pub mod client_ip;
pub mod cost;
pub mod forward_headers;
pub mod handler;
pub mod host;
pub mod rate_headers;
pub mod response;
pub mod route;
pub mod stats;
#[cfg(test)]
mod test_headers;
pub mod upstream;
