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
//! - the names other parsers read as NAME are copies of it too: `NAME[]`, `NAME[0]`, `NAME[x]`
//!   (qs in Express and PHP make NAME an array or object of them), and PHP's mangled spellings,
//!   which turn `.`, ` ` and `[` in a name into `_` and drop leading spaces (`api.key` and
//!   `api key` are `api_key`). So `?tenant=<fresh>&tenant[]=acme` is ambiguous (the address),
//!   not a fresh counter per request; such a copy alone is keyed by its value;
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
        match seen_as(raw_name, name.as_bytes()) {
            Seen::Other => continue,
            // A case variant of the name: ambiguous.
            Seen::CaseVariant => return None,
            // A second copy: ambiguous.
            Seen::Copy if found.is_some() => return None,
            Seen::Copy => found = Some(raw_value),
        }
    }
    let raw = found?;
    let value: Cow<'q, [u8]> = if raw.iter().any(|&b| b == b'%' || b == b'+') {
        Cow::Owned(decoded(raw).collect())
    } else {
        Cow::Borrowed(raw)
    };
    (!value.is_empty() && std::str::from_utf8(&value).is_ok()).then_some(value)
}

/// Every decoded value of `name` in `query`, from each copy or case variant of it: for a check
/// that must hold whichever copy a framework reads.
pub(crate) fn all_values<'q>(query: &'q str, name: &'q str) -> impl Iterator<Item = Vec<u8>> + 'q {
    query
        .as_bytes()
        .split(|&b| b == b'&' || b == b';')
        .filter_map(move |pair| {
            let (raw_name, raw_value) = match pair.iter().position(|&b| b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &pair[pair.len()..]),
            };
            match seen_as(raw_name, name.as_bytes()) {
                Seen::Other => None,
                Seen::Copy | Seen::CaseVariant => Some(decoded(raw_value).collect()),
            }
        })
}

/// What a raw parameter name is to a parser looking for `name`.
enum Seen {
    /// Another parameter.
    Other,
    /// `name` itself, or a spelling some parser reads as it (an array/object form, PHP's
    /// mangling).
    Copy,
    /// `name` with other letter case (possibly also in one of those spellings).
    CaseVariant,
}

/// Compare the decoded `raw_name` with `name` without allocating: leading spaces are skipped
/// (PHP drops them), a `.`, ` ` or `[` stands for a `_` of `name` (PHP's mangling), and `[...`
/// may follow (`name[]`, `name[0]`, `name[x][y]`).
fn seen_as(raw_name: &[u8], name: &[u8]) -> Seen {
    let mut got = decoded(raw_name).skip_while(|&b| b == b' ');
    let mut case_differs = false;
    for &want in name {
        match got.next() {
            Some(b) if b == want => {}
            Some(b) if b.eq_ignore_ascii_case(&want) => case_differs = true,
            Some(b'.' | b' ' | b'[') if want == b'_' => {}
            _ => return Seen::Other,
        }
    }
    match got.next() {
        None | Some(b'[') if case_differs => Seen::CaseVariant,
        None | Some(b'[') => Seen::Copy,
        Some(_) => Seen::Other,
    }
}

/// The bytes of `raw` percent-decoded, `+` as a space.
fn decoded(raw: &[u8]) -> Decoded<'_> {
    Decoded {
        raw,
        plus_is_space: true,
    }
}

/// A path segment percent-decoded (`+` is itself in a path), borrowed when it holds no escape:
/// the `param:NAME` identity, the id the upstream decodes (`a%40b` and `a@b` are one id). An
/// invalid escape is kept as written, as for a query.
pub(crate) fn segment_decoded(raw: &str) -> Cow<'_, [u8]> {
    if raw.contains('%') {
        Cow::Owned(
            Decoded {
                raw: raw.as_bytes(),
                plus_is_space: false,
            }
            .collect(),
        )
    } else {
        Cow::Borrowed(raw.as_bytes())
    }
}

struct Decoded<'a> {
    raw: &'a [u8],
    plus_is_space: bool,
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
            (b'+', _) if self.plus_is_space => {
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

    #[test]
    fn segments_decode_without_plus() {
        let d = |s| segment_decoded(s).into_owned();
        assert_eq!(d("a%40b"), b"a@b");
        assert_eq!(d("a@b"), b"a@b");
        assert_eq!(d("a+b"), b"a+b");
        assert_eq!(d("a%2Fb"), b"a/b");
        assert_eq!(d("%C3%A9"), "\u{e9}".as_bytes());
        assert_eq!(d("%zz%4"), b"%zz%4");
        assert!(matches!(segment_decoded("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn array_forms_are_copies_of_the_name() {
        for q in [
            "tenant=r1&tenant[]=acme",
            "tenant[]=acme&tenant=r1",
            "tenant=r1&tenant[0]=acme",
            "tenant=r1&tenant[x]=acme",
            "tenant=r1&tenant%5B%5D=acme",
            "tenant=r1&tenant[a][b]=acme",
            "tenant[]=a&tenant[]=b",
            "tenant=r1&%20tenant=acme",
            "tenant=r1&TENANT[]=acme",
        ] {
            assert_eq!(v(q, "tenant"), None, "{q}");
        }
        // Alone, such a copy is keyed by its value, like the plain name.
        assert_eq!(v("tenant[]=acme", "tenant"), Some(b"acme".to_vec()));
        assert_eq!(v("tenant[x]=acme", "tenant"), Some(b"acme".to_vec()));
        assert_eq!(v("+tenant=acme", "tenant"), Some(b"acme".to_vec()));
        // Not the name: longer names, a suffix that is no bracket, PHP's `_` only where the
        // name has one.
        for q in [
            "tenantx=1",
            "tenant]=1",
            "tenant.=1",
            "tenan=1",
            "ten[ant=1",
        ] {
            assert_eq!(
                v(&format!("tenant=acme&{q}"), "tenant"),
                Some(b"acme".to_vec()),
                "{q}"
            );
        }
        assert_eq!(v("tenant_=acme", "tenant"), None);
    }

    #[test]
    fn php_mangled_names_are_copies_of_the_name() {
        for q in [
            "api_key=r1&api.key=k1",
            "api_key=r1&api+key=k1",
            "api_key=r1&api%20key=k1",
            "api_key=r1&api[key=k1",
            "api_key=r1&api.key[]=k1",
            "api_key=r1&api%2Ekey=k1",
        ] {
            assert_eq!(v(q, "api_key"), None, "{q}");
        }
        assert_eq!(v("api.key=k1", "api_key"), Some(b"k1".to_vec()));
        // `api[key]` is the array `api` to PHP, not `api_key`.
        assert_eq!(v("api_key=k1&api[key]=x", "api_key"), Some(b"k1".to_vec()));
        assert_eq!(v("api_key=k1&apixkey=x", "api_key"), Some(b"k1".to_vec()));
    }
}
