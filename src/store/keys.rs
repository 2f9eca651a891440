//! Counter key material: escaping and bounding of key components.
//!
//! A counter key is the policy name followed by one component per key part, joined with [`SEP`]:
//!
//! ```text
//! key       = name ( "|" component )*
//! name      = escaped policy name, or "#" sha256-hex when the escaped name exceeds 64 bytes
//! component = tag ":" escaped-value          (escaped value at most 64 bytes)
//!           | tag "#" sha256-hex(raw value)   (longer values)
//!           | "g"                             (the global component: no value)
//! ```
//!
//! Escaping is percent-style over bytes: everything except ASCII letters, digits and `-._~/:@`
//! becomes `%XX`. So `|`, `#`, `%`, `{`, `}` (Redis hash-tag braces), spaces, control bytes and
//! non-ASCII bytes never appear raw in a key: a client-supplied value can neither fake a separator
//! nor a hash tag, escaping is injective, and a raw value can never equal a hashed one (`:` versus
//! `#` after the tag). Tags are typed, so an IP-derived identity and a header value that happens to
//! spell the same IP are different identities.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

/// Separator between the policy name and the components.
pub(crate) const SEP: char = '|';

/// Escaped values longer than this are replaced by their SHA-256.
pub(crate) const MAX_RAW_LEN: usize = 64;

/// The type of a key component; the tag keeps identities of different kinds apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tag {
    /// The client key (IP or IPv6 prefix), whether from an `ip` part or a header fallback.
    Ip,
    /// A header value.
    Header,
    Path,
    Method,
    Route,
    /// A named segment of the route's path (`param:NAME`).
    Param,
    /// A query parameter's value (`query:NAME`).
    Query,
    /// A verified token's `sub`.
    JwtSub,
    /// A verified token's claim (the policy's key says which).
    JwtClaim,
    /// A verified client certificate's subject.
    TlsSubject,
    /// A verified client certificate's SHA-256.
    TlsFingerprint,
    /// A revoked token's `jti` (only in the Redis store's revocation keys, never in a counter).
    Jti,
}

impl Tag {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Tag::Ip => "i",
            Tag::Header => "h",
            Tag::Path => "p",
            Tag::Method => "m",
            Tag::Route => "r",
            Tag::Param => "s",
            Tag::Query => "q",
            Tag::JwtSub => "u",
            Tag::JwtClaim => "c",
            Tag::TlsSubject => "t",
            Tag::TlsFingerprint => "f",
            Tag::Jti => "j",
        }
    }
}

/// Bytes that stay as they are. Everything else is `%XX`.
fn is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/' | b':' | b'@')
}

/// Length of `raw` once escaped.
pub(crate) fn escaped_len(raw: &[u8]) -> usize {
    raw.iter().map(|&b| if is_plain(b) { 1 } else { 3 }).sum()
}

/// Append `raw` percent-escaped.
pub(crate) fn push_escaped(out: &mut String, raw: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in raw {
        if is_plain(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
}

/// Append the lowercase hex SHA-256 of `raw`.
pub(crate) fn push_sha256(out: &mut String, raw: &[u8]) {
    let digest = Sha256::digest(raw);
    for b in digest {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
}

/// Append `raw` escaped, or `#` and its hash when the escaped form exceeds [`MAX_RAW_LEN`].
fn push_bounded(out: &mut String, raw: &[u8], raw_marker: Option<char>) {
    if escaped_len(raw) > MAX_RAW_LEN {
        out.push('#');
        push_sha256(out, raw);
    } else {
        if let Some(m) = raw_marker {
            out.push(m);
        }
        push_escaped(out, raw);
    }
}

/// Append the escaped (and bounded) policy name that starts every counter key.
pub(crate) fn push_name(out: &mut String, name: &str) {
    push_bounded(out, name.as_bytes(), None);
}

/// Append `|tag:value` (or `|tag#hash` for long values).
pub(crate) fn push_component(out: &mut String, tag: Tag, raw: &[u8]) {
    out.push(SEP);
    push_identity(out, tag, raw);
}

/// Append `tag:value` (or `tag#hash`): a component without its separator, as the Redis store
/// also uses it for the hash tag of a client's keys (so that tag equals the client's component
/// in a counter key).
pub(crate) fn push_identity(out: &mut String, tag: Tag, raw: &[u8]) {
    out.push_str(tag.as_str());
    push_bounded(out, raw, Some(':'));
}

/// The client component (`i:...` or `i#...`) of a counter key, if the key is keyed by the
/// client (an `ip` part, or a header part that fell back to the client). Components never hold
/// a raw separator, so splitting on it is exact.
pub(crate) fn client_component(key: &str) -> Option<&str> {
    key.split(SEP)
        .skip(1)
        .find(|c| c.starts_with("i:") || c.starts_with("i#"))
}

/// The identity a counter key's Redis hash tag names: its client component, else its first
/// verified-subject component (`u:...` or `u#...`), which the subject's revocation entry shares
/// (so a route keyed by `jwt:sub` reads the revocation in the slot of its counters).
pub(crate) fn identity_component(key: &str) -> Option<&str> {
    client_component(key).or_else(|| {
        key.split(SEP)
            .skip(1)
            .find(|c| c.starts_with("u:") || c.starts_with("u#"))
    })
}

/// Append the constant component of a `global` key part.
pub(crate) fn push_global(out: &mut String) {
    out.push(SEP);
    out.push('g');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comp(tag: Tag, raw: &[u8]) -> String {
        let mut s = String::new();
        push_component(&mut s, tag, raw);
        s
    }

    #[test]
    fn structure_chars_are_escaped() {
        let k = comp(Tag::Header, b"a|b{c}%d#e f\n\xff");
        assert_eq!(k, "|h:a%7Cb%7Bc%7D%25d%23e%20f%0A%FF");
        assert!(!k[1..].contains(['|', '{', '}', '#', ' ']));
    }

    #[test]
    fn ipv6_prefix_stays_readable() {
        assert_eq!(comp(Tag::Ip, b"2001:db8::/64"), "|i:2001:db8::/64");
    }

    #[test]
    fn typed_components_differ() {
        assert_ne!(comp(Tag::Ip, b"1.2.3.4"), comp(Tag::Header, b"1.2.3.4"));
    }

    #[test]
    fn long_values_are_hashed_and_distinct_from_raw() {
        let long = vec![b'a'; 65];
        let k = comp(Tag::Path, &long);
        assert_eq!(k.len(), 3 + 64);
        assert!(k.starts_with("|p#"));
        // Exactly 64 plain bytes stay raw.
        assert_eq!(comp(Tag::Path, &long[..64]).len(), 3 + 64);
        assert!(comp(Tag::Path, &long[..64]).starts_with("|p:"));
        // Escaping counts towards the bound.
        assert!(comp(Tag::Path, &[b' '; 22]).starts_with("|p#"));
        assert!(comp(Tag::Path, &[b' '; 21]).starts_with("|p:"));
        // A raw value spelling a hash is still escaped differently from the hash form.
        let mut hashed_text = String::new();
        push_sha256(&mut hashed_text, &long);
        assert_ne!(comp(Tag::Path, hashed_text.as_bytes()), k);
    }

    #[test]
    fn client_component_is_found_after_the_name_only() {
        let mut k = String::new();
        push_name(&mut k, "i:x");
        push_component(&mut k, Tag::Path, b"/a");
        assert_eq!(client_component(&k), None);
        push_component(&mut k, Tag::Ip, b"1.2.3.4");
        assert_eq!(client_component(&k), Some("i:1.2.3.4"));
        let mut tag = String::new();
        push_identity(&mut tag, Tag::Ip, b"1.2.3.4");
        assert_eq!(client_component(&k), Some(tag.as_str()));
        assert_eq!(client_component("auth|g"), None);
    }

    #[test]
    fn escaping_is_injective_on_samples() {
        let samples: [&[u8]; 6] = [b"%41", b"A", b"a|h:b", b"a", b"%", b"%25"];
        let mut seen = std::collections::HashSet::new();
        for s in samples {
            assert!(seen.insert(comp(Tag::Header, s)), "{s:?}");
        }
    }
}
