//! Address helpers shared by identity, access lists and keys.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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

    pub(crate) fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    pub(crate) fn nets(&self) -> &[IpNet] {
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
pub(crate) fn parse_client_ip(s: &str) -> Option<IpAddr> {
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
pub(crate) fn key_addr(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
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

/// The dotted-quad text of `v4` in a stack buffer: `(bytes, len)`. Client keys and
/// X-Forwarded-For are built for every request, and `fmt` machinery (`write!("{v4}")`) costs more
/// than the rest of that work together.
pub(crate) fn ipv4_text(v4: Ipv4Addr) -> ([u8; 15], usize) {
    let mut out = [0u8; 15];
    let mut n = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out[n] = b'.';
            n += 1;
        }
        if octet >= 100 {
            out[n] = b'0' + octet / 100;
            n += 1;
        }
        if octet >= 10 {
            out[n] = b'0' + octet / 10 % 10;
            n += 1;
        }
        out[n] = b'0' + octet % 10;
        n += 1;
    }
    (out, n)
}

/// Append the canonical text of `ip` (as `Display` writes it) to `out`.
pub(crate) fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let (text, len) = ipv4_text(v4);
            out.extend_from_slice(&text[..len]);
        }
        IpAddr::V6(v6) => {
            // Writing to a Vec cannot fail.
            let _ = write!(out, "{v6}");
        }
    }
}

/// The client's key string: IPv4 dotted quad, or the IPv6 prefix as `addr/len` (a plain address
/// when the prefix is 128).
pub fn client_key(ip: IpAddr, ipv6_prefix: u8) -> String {
    let prefix = ipv6_prefix.min(128);
    let addr = key_addr(ip, prefix);
    // "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128" is 43 bytes: one allocation, no regrowth.
    let mut key = String::with_capacity(48);
    // Writing to a String cannot fail.
    let _ = match addr {
        IpAddr::V4(v4) => {
            // The common case, without `fmt` (see `ipv4_text`).
            let (text, len) = ipv4_text(v4);
            key.push_str(std::str::from_utf8(&text[..len]).unwrap_or_default());
            Ok(())
        }
        IpAddr::V6(v6) if prefix == 128 => write!(key, "{v6}"),
        IpAddr::V6(v6) => write!(key, "{v6}/{prefix}"),
    };
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_text_matches_display() {
        let samples = [
            "0.0.0.0",
            "1.2.3.4",
            "9.10.99.100",
            "255.255.255.255",
            "10.0.0.1",
            "192.168.100.7",
            "2001:db8::1",
            "::",
        ];
        for s in samples {
            let ip: IpAddr = s.parse().unwrap();
            let mut out = Vec::new();
            push_ip(&mut out, ip);
            assert_eq!(out, ip.to_string().into_bytes(), "{s}");
        }
        for i in (0..=u32::MAX).step_by(65_521) {
            let v4 = Ipv4Addr::from(i);
            let (text, len) = ipv4_text(v4);
            assert_eq!(&text[..len], v4.to_string().as_bytes());
        }
    }

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

    #[test]
    fn keys() {
        let ip_of = |s: &str| s.parse::<IpAddr>().expect("test address");
        assert_eq!(client_key(ip_of("198.51.100.7"), 64), "198.51.100.7");
        assert_eq!(client_key(ip_of("::ffff:198.51.100.7"), 64), "198.51.100.7");
        assert_eq!(
            client_key(ip_of("2001:db8:1:2:3:4:5:6"), 64),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            client_key(ip_of("2001:db8:1:2:3:4:5:6"), 48),
            "2001:db8:1::/48"
        );
        assert_eq!(
            client_key(ip_of("2001:db8:1:2:3:4:5:6"), 128),
            "2001:db8:1:2:3:4:5:6"
        );
        assert_eq!(client_key(ip_of("2001:db8::1"), 200), "2001:db8::1");
        assert_eq!(client_key(ip_of("2001:db8::1"), 0), "::/0");
        // Rotating inside one /64 gives one key.
        assert_eq!(
            client_key(ip_of("2001:db8:1:2::1"), 64),
            client_key(ip_of("2001:db8:1:2:ffff::9"), 64)
        );
    }
}
