//! Client identity (docs/operations.md section 3, "Trusted proxies and client identity").
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

use std::net::IpAddr;

use http::header::HeaderName;
use http::HeaderMap;

use crate::net::{self, CidrSet};

/// At most this many X-Forwarded-For entries are considered (bounded work per request). A chain
/// longer than that ends the walk as if it met garbage.
pub(crate) const MAX_XFF_ENTRIES: usize = 64;

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
}

/// The X-Forwarded-For reader on arbitrary header bytes: no panic, and nothing a client writes
/// left of the first untrusted hop can change its identity.
#[cfg(test)]
mod properties {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    fn lan() -> CidrSet {
        CidrSet::new(vec![
            "10.0.0.0/8".parse().expect("net"),
            "fd00::/8".parse().expect("net"),
        ])
    }

    /// Bytes a header value may hold (visible ASCII, space, tab, obs-text).
    fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![
            3 => prop::sample::select(b",. :[]0123456789abcdefABCDEF;xunknown%".to_vec()),
            1 => 0x20u8..=0x7E,
            1 => 0x80u8..=0xFF,
            1 => Just(b'\t'),
        ];
        prop::collection::vec(byte, 0..80)
    }

    fn entry() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<std::net::Ipv4Addr>().prop_map(|ip| ip.to_string()),
            any::<std::net::Ipv6Addr>().prop_map(|ip| ip.to_string()),
            any::<std::net::Ipv6Addr>().prop_map(|ip| format!("[{ip}]")),
            (0u8..=255).prop_map(|b| format!("10.0.0.{b}")),
            prop::sample::select(vec![
                "unknown",
                "",
                " ",
                "1.2.3.4:80",
                "0x7f.1",
                "010.1.1.1"
            ])
            .prop_map(str::to_owned),
            "[ -~]{0,20}",
        ]
    }

    fn headers(lines: &[Vec<u8>]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            if let Ok(v) = HeaderValue::from_bytes(l) {
                h.append("x-forwarded-for", v);
            }
        }
        h
    }

    fn ip_strategy() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<std::net::Ipv4Addr>().prop_map(IpAddr::V4),
            any::<std::net::Ipv6Addr>().prop_map(IpAddr::V6),
            (0u8..=255).prop_map(|b| IpAddr::from([10, 1, 2, b])),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Whatever the header holds, the answer is the peer, a trusted hop, or an address
        /// that is literally one of the entries.
        #[test]
        fn never_panics_and_answers_from_the_header(
            peer in ip_strategy(),
            lines in prop::collection::vec(header_bytes(), 0..4),
        ) {
            let h = headers(&lines);
            let got = resolve(peer, &h, &lan());
            if !lan().contains(peer) {
                prop_assert_eq!(got, peer.to_canonical());
            } else if got != peer.to_canonical() {
                let named = h.get_all("x-forwarded-for").iter().any(|v| {
                    v.as_bytes()
                        .split(|&b| b == b',')
                        .any(|e| parse_entry(e) == Some(got))
                });
                prop_assert!(named, "{got} is not an entry of {h:?}");
            }
            // The key of any answer is well-formed and bounded.
            let key = net::client_key(got, 64);
            prop_assert!(!key.is_empty() && key.len() <= 48, "{key}");
        }

        /// The client writes everything left of the rightmost untrusted entry: whatever that is
        /// (entries, garbage, extra lines), the identity is that entry.
        #[test]
        fn client_prefix_cannot_change_identity(
            prefix in prop::collection::vec(entry(), 0..6),
            client in any::<std::net::Ipv4Addr>()
                .prop_filter("untrusted", |ip| ip.octets()[0] != 10),
            hops in prop::collection::vec(0u8..=255, 0..4),
            split_lines in any::<bool>(),
        ) {
            let mut right = vec![client.to_string()];
            right.extend(hops.iter().map(|b| format!("10.9.9.{b}")));
            let left = prefix.join(",");
            let mut h = HeaderMap::new();
            let right = right.join(", ");
            let lines = if split_lines {
                vec![left, right]
            } else if left.is_empty() {
                vec![right]
            } else {
                vec![format!("{left},{right}")]
            };
            for l in lines {
                if let Ok(v) = HeaderValue::from_str(&l) {
                    h.append("x-forwarded-for", v);
                }
            }
            prop_assert_eq!(
                resolve(IpAddr::from([10, 0, 0, 1]), &h, &lan()),
                IpAddr::V4(client)
            );
        }

        /// Address parsing from the network: no panic; what it accepts is canonical and reads
        /// back as itself.
        #[test]
        fn parse_client_ip_is_canonical(
            text in prop_oneof![entry(), ip_strategy().prop_map(|ip| format!(" {ip} "))],
        ) {
            if let Some(ip) = net::parse_client_ip(&text) {
                prop_assert_eq!(ip, ip.to_canonical());
                prop_assert_eq!(net::parse_client_ip(&ip.to_string()), Some(ip));
            }
        }
    }
}
