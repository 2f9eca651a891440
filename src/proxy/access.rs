//! Static access lists. Stub: replaced by the real implementation.

use std::net::IpAddr;

use crate::config::compiled::Access;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessDecision {
    /// In `access.deny`: 403 (deny wins over allow).
    Deny,
    /// In `access.allow`: never limited, never blocked.
    Bypass,
    Normal,
}

pub fn check(access: &Access, client: IpAddr) -> AccessDecision {
    todo!("{access:?}{client}")
}
