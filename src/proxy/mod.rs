//! The request path: identity, route, access lists, limiter, headers, forward or answer.

pub mod access;
pub mod body;
pub mod client_ip;
pub mod cost;
pub mod handler;
pub mod headers;
pub mod host;
pub mod response;
pub mod route;
pub mod stats;
pub mod upstream;
