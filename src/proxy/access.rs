//! Static access lists.

use std::net::IpAddr;

use crate::config::compiled::Access;

/// Which static access list a client address is on, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListMatch {
    /// In `access.deny`: 403 (deny wins over allow).
    Deny,
    /// In `access.allow`: never limited, never blocked.
    Bypass,
    /// On neither list: the route's limits apply.
    Normal,
}

/// Deny is checked first so that an address in both lists is denied (docs/operations.md
/// section 3: deny wins over allow).
/// `CidrSet::contains` unmaps IPv4-mapped IPv6, so `::ffff:a.b.c.d` cannot dodge an IPv4 entry.
pub(crate) fn check(access: &Access, client: IpAddr) -> ListMatch {
    if access.deny.contains(client) {
        ListMatch::Deny
    } else if access.allow.contains(client) {
        ListMatch::Bypass
    } else {
        ListMatch::Normal
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::CidrSet;

    fn set(nets: &[&str]) -> CidrSet {
        CidrSet::new(nets.iter().map(|n| n.parse().expect("test net")).collect())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn access() -> Access {
        Access {
            allow: set(&["127.0.0.1/32", "10.0.0.0/8", "2001:db8:a::/48"]),
            deny: set(&["203.0.113.0/24", "10.6.6.0/24", "2001:db8:bad::/48"]),
        }
    }

    #[test]
    fn decisions() {
        let a = access();
        assert_eq!(check(&a, ip("127.0.0.1")), ListMatch::Bypass);
        assert_eq!(check(&a, ip("10.1.2.3")), ListMatch::Bypass);
        assert_eq!(check(&a, ip("203.0.113.9")), ListMatch::Deny);
        assert_eq!(check(&a, ip("198.51.100.1")), ListMatch::Normal);
        assert_eq!(check(&a, ip("2001:db8:a::1")), ListMatch::Bypass);
        assert_eq!(check(&a, ip("2001:db8:bad:1::1")), ListMatch::Deny);
        assert_eq!(check(&a, ip("2001:db8:c::1")), ListMatch::Normal);
    }

    #[test]
    fn deny_wins_over_allow() {
        // 10.6.6.0/24 is inside the allowed 10.0.0.0/8.
        assert_eq!(check(&access(), ip("10.6.6.6")), ListMatch::Deny);
    }

    #[test]
    fn mapped_addresses_do_not_dodge_lists() {
        let a = access();
        assert_eq!(check(&a, ip("::ffff:203.0.113.9")), ListMatch::Deny);
        assert_eq!(check(&a, ip("::ffff:127.0.0.1")), ListMatch::Bypass);
    }

    #[test]
    fn empty_lists() {
        assert_eq!(check(&Access::default(), ip("1.2.3.4")), ListMatch::Normal);
    }
}
