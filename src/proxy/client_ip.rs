//! Client identity (SPEC section 3).
//!
//! The client is the TCP peer unless the peer is a trusted proxy. Then X-Forwarded-For is read
//! right to left: each trusted proxy appended the address it saw, so the entries right of the
//! first untrusted one were written by proxies we trust, and everything left of it was written
//! by the client itself and proves nothing. The leftmost entry is never believed by position.
//!
//! Garbage (ports, `unknown`, octal/hex forms, empty entries, non-UTF-8) stops the walk: the
//! entry was written by the last trusted hop we passed, which could not name its peer, and
//! everything further left is attacker-controlled. The answer is then that trusted hop, so such
//! requests share its counter rather than letting a client pick its own key.

use std::fmt::Write as _;
use std::net::IpAddr;

use http::header::HeaderName;
use http::HeaderMap;

use crate::net::{self, CidrSet};

/// At most this many X-Forwarded-For entries are considered (bounded work per request). A chain
/// longer than that ends the walk as if it met garbage.
pub const MAX_XFF_ENTRIES: usize = 64;

/// An entry longer than this cannot be an address (`parse_client_ip` caps at 45 plus brackets
/// and whitespace); it is garbage without being decoded.
const MAX_ENTRY_BYTES: usize = 64;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The client address: the peer, unless the peer is trusted; then X-Forwarded-For (all lines,
/// in order) walked right to left skipping trusted hops.
pub fn resolve(peer: IpAddr, headers: &HeaderMap, trusted: &CidrSet) -> IpAddr {
    // Dual-stack listeners report `::ffff:a.b.c.d`.
    let peer = peer.to_canonical();
    if trusted.is_empty() || !trusted.contains(peer) {
        return peer;
    }
    // Lines last to first, entries right to left: the same as walking the joined list.
    let mut last_trusted = peer;
    let mut seen = 0usize;
    for line in headers.get_all(&X_FORWARDED_FOR).iter().rev() {
        for entry in line.as_bytes().rsplit(|&b| b == b',') {
            seen += 1;
            if seen > MAX_XFF_ENTRIES {
                return last_trusted;
            }
            match parse_entry(entry) {
                Some(ip) if trusted.contains(ip) => last_trusted = ip,
                Some(ip) => return ip,
                None => return last_trusted,
            }
        }
    }
    // Every entry was a trusted hop (or there were none): the leftmost one is the best we know.
    last_trusted
}

/// One X-Forwarded-For entry, or `None` for garbage.
fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    if entry.len() > MAX_ENTRY_BYTES {
        return None;
    }
    let s = std::str::from_utf8(entry).ok()?;
    net::parse_client_ip(s)
}

/// The client's key string: IPv4 dotted quad, or the IPv6 prefix as `addr/len` (a plain address
/// when the prefix is 128).
pub fn client_key(ip: IpAddr, ipv6_prefix: u8) -> String {
    let prefix = ipv6_prefix.min(128);
    let addr = net::key_addr(ip, prefix);
    // "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128" is 43 bytes: one allocation, no regrowth.
    let mut key = String::with_capacity(48);
    // Writing to a String cannot fail.
    let _ = match addr {
        IpAddr::V4(v4) => {
            // The common case, without `fmt` (see `net::ipv4_text`).
            let (text, len) = net::ipv4_text(v4);
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
    use http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn trusted(nets: &[&str]) -> CidrSet {
        CidrSet::new(nets.iter().map(|n| n.parse().expect("test net")).collect())
    }

    fn xff(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(
                "x-forwarded-for",
                HeaderValue::from_str(l).expect("test value"),
            );
        }
        h
    }

    fn lan() -> CidrSet {
        trusted(&["10.0.0.0/8", "fd00::/8"])
    }

    #[test]
    fn untrusted_peer_ignores_xff() {
        let h = xff(&["1.1.1.1"]);
        assert_eq!(resolve(ip("203.0.113.9"), &h, &lan()), ip("203.0.113.9"));
        // No trusted proxies configured at all.
        assert_eq!(
            resolve(ip("10.0.0.1"), &h, &CidrSet::default()),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn untrusted_peer_is_unmapped() {
        let h = HeaderMap::new();
        assert_eq!(
            resolve(ip("::ffff:198.51.100.7"), &h, &lan()),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn trusted_peer_without_xff_is_the_client() {
        assert_eq!(
            resolve(ip("10.0.0.1"), &HeaderMap::new(), &lan()),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn trusted_mapped_peer_is_trusted() {
        let h = xff(&["198.51.100.7"]);
        assert_eq!(
            resolve(ip("::ffff:10.0.0.1"), &h, &lan()),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn rightmost_untrusted_wins_over_leftmost_spoof() {
        // The client sent "6.6.6.6"; our proxy appended the real peer 198.51.100.7.
        let h = xff(&["6.6.6.6, 198.51.100.7"]);
        assert_eq!(resolve(ip("10.0.0.1"), &h, &lan()), ip("198.51.100.7"));
    }

    #[test]
    fn skips_trusted_hops() {
        let h = xff(&["6.6.6.6, 198.51.100.7, 10.1.1.1, 10.2.2.2"]);
        assert_eq!(resolve(ip("10.0.0.1"), &h, &lan()), ip("198.51.100.7"));
    }

    #[test]
    fn client_cannot_pose_as_trusted_hop_to_go_further_left() {
        // A client can write a trusted-looking address, but the proxy's own entry is right of it.
        let h = xff(&["6.6.6.6, 10.9.9.9, 198.51.100.7"]);
        assert_eq!(resolve(ip("10.0.0.1"), &h, &lan()), ip("198.51.100.7"));
    }

    #[test]
    fn multiple_lines_join_in_order() {
        let h = xff(&["6.6.6.6", "198.51.100.7, 10.1.1.1", "10.2.2.2"]);
        assert_eq!(resolve(ip("10.0.0.1"), &h, &lan()), ip("198.51.100.7"));
        let h = xff(&["198.51.100.7", "6.6.6.6"]);
        assert_eq!(resolve(ip("10.0.0.1"), &h, &lan()), ip("6.6.6.6"));
    }

    #[test]
    fn all_trusted_returns_leftmost() {
        let h = xff(&["10.3.3.3, 10.2.2.2", "10.1.1.1"]);
        assert_eq!(resolve(ip("10.0.0.1"), &h, &lan()), ip("10.3.3.3"));
    }

    #[test]
    fn garbage_stops_the_walk_at_the_last_trusted_hop() {
        let peer = ip("10.0.0.1");
        for (line, want) in [
            ("1.2.3.4:80", "10.0.0.1"),
            ("unknown", "10.0.0.1"),
            ("0x7f.0.0.1", "10.0.0.1"),
            ("0177.0.0.1", "10.0.0.1"),
            ("127.1", "10.0.0.1"),
            ("2130706433", "10.0.0.1"),
            ("", "10.0.0.1"),
            ("   ", "10.0.0.1"),
            ("1.2.3.4 5.6.7.8", "10.0.0.1"),
            ("[2001:db8::1]:443", "10.0.0.1"),
            ("fe80::1%eth0", "10.0.0.1"),
            ("_hidden", "10.0.0.1"),
            // Garbage in the middle: nothing left of it is believed.
            ("6.6.6.6, unknown, 10.1.1.1", "10.1.1.1"),
            // The hop nearest the garbage (10.1.1.1) wrote it: that hop is the answer.
            ("6.6.6.6, 1.2.3.4:80, 10.1.1.1, 10.2.2.2", "10.1.1.1"),
            ("6.6.6.6,,10.1.1.1", "10.1.1.1"),
            // Trailing comma: the rightmost entry is empty.
            ("198.51.100.7,", "10.0.0.1"),
            // Garbage left of the real client does not matter.
            ("unknown, 198.51.100.7", "198.51.100.7"),
        ] {
            let h = xff(&[line]);
            assert_eq!(resolve(peer, &h, &lan()), ip(want), "{line:?}");
        }
    }

    #[test]
    fn garbage_line_stops_across_lines() {
        let h = xff(&["6.6.6.6", "", "10.1.1.1"]);
        assert_eq!(resolve(ip("10.0.0.1"), &h, &lan()), ip("10.1.1.1"));
    }

    #[test]
    fn non_utf8_entry_is_garbage() {
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"6.6.6.6, 1.2.3.\xff").expect("obs-text is a valid value"),
        );
        assert_eq!(resolve(ip("10.0.0.1"), &h, &lan()), ip("10.0.0.1"));
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"\xc3\xa9, 198.51.100.7").expect("obs-text is a valid value"),
        );
        assert_eq!(resolve(ip("10.0.0.1"), &h, &lan()), ip("198.51.100.7"));
    }

    #[test]
    fn whitespace_around_entries_is_ignored() {
        let h = xff(&["6.6.6.6 ,\t198.51.100.7\t, 10.1.1.1 "]);
        assert_eq!(resolve(ip("10.0.0.1"), &h, &lan()), ip("198.51.100.7"));
    }

    #[test]
    fn ipv6_entries() {
        let h = xff(&["2001:db8::7, fd00::2"]);
        assert_eq!(resolve(ip("fd00::1"), &h, &lan()), ip("2001:db8::7"));
        let h = xff(&["[2001:db8::7]"]);
        assert_eq!(resolve(ip("10.0.0.1"), &h, &lan()), ip("2001:db8::7"));
        // A mapped entry is unmapped, and a mapped trusted entry is skipped.
        let h = xff(&["::ffff:198.51.100.7, ::ffff:10.1.1.1"]);
        assert_eq!(resolve(ip("10.0.0.1"), &h, &lan()), ip("198.51.100.7"));
    }

    #[test]
    fn walk_is_bounded() {
        // 100 trusted hops then a client: the client is beyond the bound.
        let mut line = String::from("198.51.100.7");
        for _ in 0..100 {
            line.push_str(", 10.1.1.1");
        }
        let h = xff(&[&line]);
        assert_eq!(resolve(ip("10.0.0.1"), &h, &lan()), ip("10.1.1.1"));
        // Within the bound it is found.
        let mut line = String::from("198.51.100.7");
        for _ in 0..(MAX_XFF_ENTRIES - 1) {
            line.push_str(", 10.1.1.1");
        }
        let h = xff(&[&line]);
        assert_eq!(resolve(ip("10.0.0.1"), &h, &lan()), ip("198.51.100.7"));
        // Entries on separate lines count towards the bound too.
        let mut h = xff(&["198.51.100.7"]);
        for _ in 0..100 {
            h.append("x-forwarded-for", HeaderValue::from_static("10.1.1.1"));
        }
        assert_eq!(resolve(ip("10.0.0.1"), &h, &lan()), ip("10.1.1.1"));
    }

    #[test]
    fn huge_entry_is_garbage() {
        let big = format!("198.51.100.7, {}", "1".repeat(10_000));
        let h = xff(&[&big]);
        assert_eq!(resolve(ip("10.0.0.1"), &h, &lan()), ip("10.0.0.1"));
    }

    #[test]
    fn other_headers_are_ignored() {
        let mut h = HeaderMap::new();
        h.insert("x-real-ip", HeaderValue::from_static("6.6.6.6"));
        h.insert("forwarded", HeaderValue::from_static("for=6.6.6.6"));
        assert_eq!(resolve(ip("10.0.0.1"), &h, &lan()), ip("10.0.0.1"));
    }

    #[test]
    fn keys() {
        assert_eq!(client_key(ip("198.51.100.7"), 64), "198.51.100.7");
        assert_eq!(client_key(ip("::ffff:198.51.100.7"), 64), "198.51.100.7");
        assert_eq!(
            client_key(ip("2001:db8:1:2:3:4:5:6"), 64),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            client_key(ip("2001:db8:1:2:3:4:5:6"), 48),
            "2001:db8:1::/48"
        );
        assert_eq!(
            client_key(ip("2001:db8:1:2:3:4:5:6"), 128),
            "2001:db8:1:2:3:4:5:6"
        );
        assert_eq!(client_key(ip("2001:db8::1"), 200), "2001:db8::1");
        assert_eq!(client_key(ip("2001:db8::1"), 0), "::/0");
        // Rotating inside one /64 gives one key.
        assert_eq!(
            client_key(ip("2001:db8:1:2::1"), 64),
            client_key(ip("2001:db8:1:2:ffff::9"), 64)
        );
    }
}
