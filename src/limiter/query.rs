//! The value of one query parameter for a `query:NAME` key component.
//!
//! Query strings are parsed differently by different servers, so only a value every common
//! parser agrees on identifies a client; anything ambiguous returns `None` and the key falls back
//! to the client's address (which the client cannot vary):
//! - pairs are separated by `&` and also by `;` (older parsers split on both), names and values
//!   percent-decoded with `+` as a space (HTML forms), an invalid escape kept as it is;
//! - a name sent twice is ambiguous (frameworks take the first, the last or both), and so is a
//!   copy differing only in ASCII case (`API_KEY` next to `api_key`: some frameworks fold case);
//!   `%61pi_key` is `api_key`;
//! - an empty value, or one that does not decode to UTF-8 (servers map invalid bytes to U+FFFD,
//!   which would let many spellings reach one identity), counts as absent.

use std::borrow::Cow;

/// The decoded value of the parameter `name` in `query` (the raw query, without `?`), if it
/// appears exactly once with a non-empty UTF-8 value.
pub(crate) fn value<'q>(query: Option<&'q str>, name: &str) -> Option<Cow<'q, [u8]>> {
    let mut found: Option<&'q [u8]> = None;
    for pair in query?.as_bytes().split(|&b| b == b'&' || b == b';') {
        let (raw_name, raw_value) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &pair[pair.len()..]),
        };
        if !decoded(raw_name).eq_ignore_case(name.as_bytes()) {
            continue;
        }
        if found.is_some() || !decoded(raw_name).eq(name.bytes()) {
            // A second copy, or a case variant of the name: ambiguous.
            return None;
        }
        found = Some(raw_value);
    }
    let raw = found?;
    let value: Cow<'q, [u8]> = if raw.iter().any(|&b| b == b'%' || b == b'+') {
        Cow::Owned(decoded(raw).collect())
    } else {
        Cow::Borrowed(raw)
    };
    (!value.is_empty() && std::str::from_utf8(&value).is_ok()).then_some(value)
}

/// The bytes of `raw` percent-decoded, `+` as a space.
fn decoded(raw: &[u8]) -> Decoded<'_> {
    Decoded { raw }
}

struct Decoded<'a> {
    raw: &'a [u8],
}

impl Decoded<'_> {
    fn eq_ignore_case(self, other: &[u8]) -> bool {
        self.map(|b| b.to_ascii_lowercase())
            .eq(other.iter().map(u8::to_ascii_lowercase))
    }
}

impl Iterator for Decoded<'_> {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        let (&b, rest) = self.raw.split_first()?;
        match (b, rest) {
            (b'%', [h, l, tail @ ..]) => match (hex(*h), hex(*l)) {
                (Some(h), Some(l)) => {
                    self.raw = tail;
                    Some(h << 4 | l)
                }
                _ => {
                    self.raw = rest;
                    Some(b'%')
                }
            },
            (b'+', _) => {
                self.raw = rest;
                Some(b' ')
            }
            _ => {
                self.raw = rest;
                Some(b)
            }
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(query: &str, name: &str) -> Option<Vec<u8>> {
        value(Some(query), name).map(Cow::into_owned)
    }

    #[test]
    fn finds_one_decoded_value() {
        assert_eq!(v("a=1&key=abc&b=2", "key"), Some(b"abc".to_vec()));
        assert_eq!(v("key=a%20b+c", "key"), Some(b"a b c".to_vec()));
        assert_eq!(v("%6Bey=x", "key"), Some(b"x".to_vec()));
        assert_eq!(v("key=%zz", "key"), Some(b"%zz".to_vec()));
        assert_eq!(v("key=%C3%A9", "key"), Some("\u{e9}".as_bytes().to_vec()));
        assert_eq!(v("keyx=1&xkey=2&key=3", "key"), Some(b"3".to_vec()));
    }

    #[test]
    fn ambiguous_or_empty_is_absent() {
        for q in [
            "",
            "other=1",
            "key",
            "key=",
            "key=1&key=2",
            "key=1&key=1",
            "key=1;key=2",
            "key=1&%6Bey=2",
            "key=1&KEY=2",
            "key=%FF",
        ] {
            assert_eq!(v(q, "key"), None, "{q}");
        }
        assert_eq!(value(None, "key"), None);
    }
}
