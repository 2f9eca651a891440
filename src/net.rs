//! Address helpers shared by identity, access lists and keys.

use std::net::{IpAddr, Ipv6Addr};

use ipnet::IpNet;

/// A set of CIDR ranges. Lookups canonicalize IPv4-mapped IPv6 first, so `::ffff:10.1.2.3`
/// matches `10.0.0.0/8`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CidrSet {
    nets: Vec<IpNet>,
}

impl CidrSet {
    pub fn new(nets: Vec<IpNet>) -> Self {
        let mut nets: Vec<IpNet> = nets.into_iter().map(|n| n.trunc()).collect();
        nets = IpNet::aggregate(&nets);
        CidrSet { nets }
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

/// Parse an address as the gateway accepts it from the network: canonical dotted-quad IPv4 (no
/// octal, hex or shortened forms, which `std` already refuses) or IPv6, with IPv4-mapped IPv6
/// unmapped. `[v6]` brackets are accepted; ports, zones and anything else are not.
pub fn parse_client_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    let s = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    if s.is_empty() || s.len() > 45 {
        return None;
    }
    s.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

/// The part of a client address that identifies it for limiting: IPv4 as is, IPv6 truncated to
/// `ipv6_prefix` bits so that rotating addresses inside one allocation share a key.
pub fn key_addr(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let prefix = u32::from(ipv6_prefix.min(128));
            let mask = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - prefix)
            };
            IpAddr::V6(Ipv6Addr::from(bits & mask))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_v4_matches_v4_range() {
        let set = CidrSet::new(vec!["10.0.0.0/8".parse().unwrap()]);
        assert!(set.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!set.contains("11.0.0.1".parse().unwrap()));
    }

    #[test]
    fn rejects_garbage_forms() {
        for bad in [
            "unknown",
            "1.2.3.4:80",
            "0x7f.0.0.1",
            "0177.0.0.1",
            "127.1",
            "",
            "01.2.3.4",
            "fe80::1%eth0",
            "1.2.3.4 5",
        ] {
            assert_eq!(parse_client_ip(bad), None, "{bad}");
        }
        assert_eq!(
            parse_client_ip(" ::ffff:1.2.3.4 "),
            Some("1.2.3.4".parse().unwrap())
        );
        assert_eq!(
            parse_client_ip("[2001:db8::1]"),
            Some("2001:db8::1".parse().unwrap())
        );
    }

    #[test]
    fn v6_keyed_by_prefix() {
        let a = key_addr("2001:db8:1:2:3:4:5:6".parse().unwrap(), 64);
        assert_eq!(a, "2001:db8:1:2::".parse::<IpAddr>().unwrap());
        let v4 = key_addr("::ffff:9.9.9.9".parse().unwrap(), 64);
        assert_eq!(v4, "9.9.9.9".parse::<IpAddr>().unwrap());
        assert_eq!(
            key_addr("2001:db8::1".parse().unwrap(), 0),
            "::".parse::<IpAddr>().unwrap()
        );
    }
}
