//! Client identity (SPEC section 3). Stub: replaced by the real implementation.

use std::net::IpAddr;

use http::HeaderMap;

use crate::net::CidrSet;

/// The client address: the peer, unless the peer is trusted; then X-Forwarded-For (all lines,
/// in order) walked right to left skipping trusted hops.
pub fn resolve(peer: IpAddr, headers: &HeaderMap, trusted: &CidrSet) -> IpAddr {
    todo!("{peer}{headers:?}{trusted:?}")
}

/// The client's key string: IPv4 dotted quad, or the IPv6 prefix as `addr/len`.
pub fn client_key(ip: IpAddr, ipv6_prefix: u8) -> String {
    todo!("{ip}{ipv6_prefix}")
}
