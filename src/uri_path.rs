//! Path normalization (docs/operations.md section 3a, "Paths").
//!
//! Routes match the normalized path and the upstream receives exactly that path, so no request
//! reaches an upstream path that matching did not see. The output is a strict RFC 3986 path:
//! only unreserved characters, sub-delims, `:`, `@`, `/` as a separator and upper-case
//! `%XX` escapes. That makes it a valid `PathAndQuery` by construction.
//!
//! First, the operator's [`PathRules`] settle what upstreams disagree on (see `apply_rules`):
//! - `;` path parameters (`server.path_semicolons`): "reject" refuses a raw `;` and `%3B`
//!   anywhere; "strip" removes every `;params` up to the end of its segment, as Tomcat, Jetty and
//!   Spring do before matching, and refuses `%3B` (servers disagree on whether it starts a
//!   parameter, so no guess is safe); "keep" leaves both as data.
//! - Encoded separators (`server.escaped_slashes`): "keep" leaves `%2F` and `%5C` encoded;
//!   "reject" refuses both; "decode" turns `%2F` into `/` before dot segments are resolved and
//!   refuses `%5C`, because the `\` it decodes to is refused raw as well.
//!
//! Then, in the order they apply:
//! - The path must start with `/` (`*` and absolute-form are the caller's business).
//! - Escapes of unreserved characters (ALPHA DIGIT `-` `.` `_` `~`) are decoded; every other
//!   escape stays encoded with upper-case hex. `%2F` (unless decoded above), `%5C`, `%00` and
//!   `%25` are therefore never turned into separators, NULs or new escapes. An invalid escape is
//!   malformed.
//! - Raw control bytes, space, DEL, `\`, `#` and `?` are malformed. A raw `\` is a separator
//!   for some upstreams (IIS, some frameworks), so accepting it would let `/a\..\b` mean different
//!   things here and there.
//! - Printable characters that RFC 3986 wants escaped but clients send anyway (`"{}[]^|<>` and
//!   backtick) and non-ASCII bytes are percent-encoded: they cannot act as separators, and
//!   encoding them keeps the output strictly valid.
//! - `//` is merged; `.` and `..` are resolved after decoding (`/%2e%2e/` is `..`); climbing
//!   above `/` is an error (400), not clamped, because no honest client sends it.
//! - Segments that a lenient upstream would still treat as a dot segment are malformed:
//!   `..;x` / `.;x` (Tomcat strips `;` path parameters, the classic `/public/..;/admin` bypass;
//!   only reachable with "keep") and dot pieces next to an encoded separator (`..%2F`, `%5C..`),
//!   which upstreams that decode `%2F`/`%5C` before resolving dot segments would climb with.
//! - A trailing slash is kept (`/api/` stays `/api/`); a trailing `.` or `..` leaves one
//!   (`/a/b/..` is `/a/`), as in RFC 3986 section 5.2.4.
//!
//! Normalizing is idempotent under every combination of rules: its output never holds what the
//! rules act on (except what "keep" keeps), so a second pass changes nothing.

use std::borrow::Cow;

use serde::Deserialize;

/// `server.path_semicolons` and `server.escaped_slashes`: what [`normalize`] does with the parts
/// of a path that upstreams disagree on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PathRules {
    pub semicolons: Semicolons,
    pub escaped_slashes: EscapedSlashes,
}

/// `server.path_semicolons`: Tomcat, Jetty and Spring cut `;params` off every segment before
/// matching, most other servers keep them as data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Semicolons {
    /// 400 for a raw `;` or `%3B` anywhere in the path (Spring's strict firewall).
    #[default]
    Reject,
    /// Remove `;params` from every segment before matching and forwarding; `%3B` is a 400.
    Strip,
    /// Leave `;` as data (`..;` dot segments stay refused).
    Keep,
}

impl Semicolons {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Semicolons::Reject => "reject",
            Semicolons::Strip => "strip",
            Semicolons::Keep => "keep",
        }
    }
}

/// `server.escaped_slashes` (Envoy's `path_with_escaped_slashes_action`): `%2F` and `%5C`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EscapedSlashes {
    /// Forwarded encoded, one segment (dot pieces next to them stay refused).
    #[default]
    Keep,
    /// 400 for `%2F` or `%5C`.
    Reject,
    /// `%2F` becomes `/` before dot segments are resolved; `%5C` is a 400, like a raw `\`.
    Decode,
}

impl EscapedSlashes {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EscapedSlashes::Keep => "keep",
            EscapedSlashes::Reject => "reject",
            EscapedSlashes::Decode => "decode",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path climbs above the root")]
    AboveRoot,
    #[error("malformed path")]
    Malformed,
    #[error("path holds a `;` parameter")]
    Semicolon,
    #[error("path holds an encoded slash or backslash")]
    EscapedSlash,
}

/// Normalize a request path (without query) under `rules`: settle `;` parameters and encoded
/// separators, resolve `.`/`..`, merge `//`, decode percent-escapes of unreserved characters,
/// upper-case remaining escapes.
///
/// Returns `Cow::Borrowed` when the path is already normal, which is the common case and does not
/// allocate.
pub fn normalize(raw: &str, rules: PathRules) -> Result<Cow<'_, str>, PathError> {
    match apply_rules(raw, rules)? {
        Cow::Borrowed(path) => normalize_plain(path),
        Cow::Owned(path) => normalize_plain(&path).map(|p| Cow::Owned(p.into_owned())),
    }
}

/// The normalization proper, once the rules have been applied.
fn normalize_plain(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if is_normal(raw.as_bytes()) {
        Ok(Cow::Borrowed(raw))
    } else {
        rewrite(raw).map(Cow::Owned)
    }
}

/// Apply `server.path_semicolons` and `server.escaped_slashes` to the raw path. Borrows unless
/// something is stripped or decoded. Escapes are read in step (so `%253B` is `%25` + `3B`, never
/// a semicolon), and an invalid escape is malformed here already: stripping and decoding must not
/// be able to turn one into a valid escape.
fn apply_rules(raw: &str, rules: PathRules) -> Result<Cow<'_, str>, PathError> {
    let b = raw.as_bytes();
    let keep_all =
        rules.semicolons == Semicolons::Keep && rules.escaped_slashes == EscapedSlashes::Keep;
    if keep_all || !b.iter().any(|&c| c == b';' || c == b'%') {
        return Ok(Cow::Borrowed(raw));
    }
    // `out` holds the rewritten path up to `done`; it exists only once something changed.
    let mut out: Option<Vec<u8>> = None;
    let mut done = 0;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b';' => match rules.semicolons {
                Semicolons::Keep => i += 1,
                Semicolons::Reject => return Err(PathError::Semicolon),
                Semicolons::Strip => {
                    // The parameter runs to the end of its segment, `%3B`s and all.
                    let end = b[i..]
                        .iter()
                        .position(|&c| c == b'/')
                        .map_or(b.len(), |n| i + n);
                    out.get_or_insert_with(|| Vec::with_capacity(b.len()))
                        .extend_from_slice(&b[done..i]);
                    i = end;
                    done = end;
                }
            },
            b'%' => {
                let (Some(hv), Some(lv)) = (
                    b.get(i + 1).copied().and_then(hex_val),
                    b.get(i + 2).copied().and_then(hex_val),
                ) else {
                    return Err(PathError::Malformed);
                };
                match hv << 4 | lv {
                    b';' if rules.semicolons != Semicolons::Keep => {
                        return Err(PathError::Semicolon)
                    }
                    b'/' if rules.escaped_slashes == EscapedSlashes::Decode => {
                        let o = out.get_or_insert_with(|| Vec::with_capacity(b.len()));
                        o.extend_from_slice(&b[done..i]);
                        o.push(b'/');
                        done = i + 3;
                    }
                    b'/' | b'\\' if rules.escaped_slashes != EscapedSlashes::Keep => {
                        return Err(PathError::EscapedSlash)
                    }
                    _ => {}
                }
                i += 3;
            }
            _ => i += 1,
        }
    }
    match out {
        None => Ok(Cow::Borrowed(raw)),
        Some(mut o) => {
            o.extend_from_slice(&b[done..]);
            // Only whole ASCII runs were cut or replaced by ASCII, so this stays UTF-8.
            String::from_utf8(o)
                .map(Cow::Owned)
                .map_err(|_| PathError::Malformed)
        }
    }
}

/// How a raw byte is treated outside of an escape.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Kept as is: unreserved, sub-delims, `:`, `@`.
    Keep,
    /// The segment separator.
    Slash,
    /// Start of a percent-escape.
    Percent,
    /// Harmless but not allowed raw by RFC 3986: percent-encoded on output.
    Encode,
    /// Rejected: controls, space, DEL, `\`, `#`, `?`.
    Reject,
}

const fn build_classes() -> [Class; 256] {
    let mut t = [Class::Encode; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => Class::Keep,
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' => {
                Class::Keep
            }
            b':' | b'@' => Class::Keep,
            b'/' => Class::Slash,
            b'%' => Class::Percent,
            0x00..=0x20 | 0x7F | b'\\' | b'#' | b'?' => Class::Reject,
            // `"{}[]^|<>` backtick and every byte >= 0x80.
            _ => Class::Encode,
        };
        i += 1;
    }
    t
}

static CLASSES: [Class; 256] = build_classes();

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// What a (decoded) segment means for dot-segment resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seg {
    Empty,
    Dot,
    DotDot,
    /// A dot segment in disguise for some upstream: rejected.
    Disguised,
    Normal,
}

/// Classify one piece without encoded separators: `.`, `..`, or `.`/`..` followed by a `;`
/// path parameter (raw or as `%3B`).
fn dot_kind(piece: &[u8]) -> Seg {
    let dots = piece.iter().take_while(|&&b| b == b'.').count();
    if dots == 0 || dots > 2 {
        return Seg::Normal;
    }
    let rest = &piece[dots..];
    if rest.is_empty() {
        return if dots == 1 { Seg::Dot } else { Seg::DotDot };
    }
    let param = rest[0] == b';' || (rest.len() >= 3 && rest[..3].eq_ignore_ascii_case(b"%3B"));
    if param {
        Seg::Disguised
    } else {
        Seg::Normal
    }
}

/// True when `seg[i..]` starts with an encoded `/` or `\`.
fn encoded_separator_at(seg: &[u8], i: usize) -> bool {
    seg.len() >= i + 3
        && seg[i] == b'%'
        && (seg[i + 1..i + 3].eq_ignore_ascii_case(b"2F")
            || seg[i + 1..i + 3].eq_ignore_ascii_case(b"5C"))
}

/// Classify a decoded segment (escapes of unreserved characters already decoded).
fn classify(seg: &[u8]) -> Seg {
    if seg.is_empty() {
        return Seg::Empty;
    }
    let whole = dot_kind(seg);
    if whole != Seg::Normal || !seg.contains(&b'%') {
        return whole;
    }
    // Split on encoded separators and look at every piece: `a%2F..%2Fb` is harmless here but
    // climbs on an upstream that decodes `%2F` before resolving dot segments.
    let mut start = 0;
    let mut i = 0;
    let mut split = false;
    while i < seg.len() {
        if encoded_separator_at(seg, i) {
            if split_piece_is_dot(&seg[start..i]) {
                return Seg::Disguised;
            }
            split = true;
            i += 3;
            start = i;
        } else {
            i += 1;
        }
    }
    if split && split_piece_is_dot(&seg[start..]) {
        return Seg::Disguised;
    }
    Seg::Normal
}

fn split_piece_is_dot(piece: &[u8]) -> bool {
    matches!(dot_kind(piece), Seg::Dot | Seg::DotDot | Seg::Disguised)
}

/// Fast check: true only when `rewrite` would return the input unchanged (so the caller can
/// borrow). Any doubt returns false and lets `rewrite` decide, including on errors.
fn is_normal(b: &[u8]) -> bool {
    if b.first() != Some(&b'/') {
        return false;
    }
    let mut seg_start = 1;
    let mut i = 1;
    while i < b.len() {
        match CLASSES[usize::from(b[i])] {
            Class::Keep => i += 1,
            Class::Slash => {
                // An empty segment before a `/` is a `//` to merge.
                if classify(&b[seg_start..i]) != Seg::Normal {
                    return false;
                }
                i += 1;
                seg_start = i;
            }
            Class::Percent => {
                let (Some(&h), Some(&l)) = (b.get(i + 1), b.get(i + 2)) else {
                    return false;
                };
                // Lower-case hex must be upper-cased.
                let (Some(hv), Some(lv)) = (upper_hex_val(h), upper_hex_val(l)) else {
                    return false;
                };
                if is_unreserved(hv << 4 | lv) {
                    return false;
                }
                i += 3;
            }
            Class::Encode | Class::Reject => return false,
        }
    }
    // The last segment may be empty (trailing slash, or the root itself).
    matches!(classify(&b[seg_start..]), Seg::Normal | Seg::Empty)
}

fn upper_hex_val(b: u8) -> Option<u8> {
    if b.is_ascii_lowercase() {
        None
    } else {
        hex_val(b)
    }
}

/// The full normalization into a new string.
fn rewrite(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::Malformed);
    }
    // Output is ASCII; encoding can grow it, dot resolution shrinks it.
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len() + 8);
    out.push(b'/');
    // Whether the output should end with `/`: a trailing slash, `.` or `..`, or the root.
    let mut ends_dir = true;
    for seg in bytes[1..].split(|&b| b == b'/') {
        let start = out.len();
        push_segment(seg, &mut out)?;
        match classify(&out[start..]) {
            Seg::Empty => ends_dir = true,
            Seg::Dot => {
                out.truncate(start);
                ends_dir = true;
            }
            Seg::DotDot => {
                out.truncate(start);
                if start == 1 {
                    return Err(PathError::AboveRoot);
                }
                // `out` is `/.../prev/`: drop `prev/`. Raw `/` only ever appears as a separator
                // in `out` (`%2F` stays encoded), so the previous `/` bounds the last segment.
                let prev = out[..start - 1]
                    .iter()
                    .rposition(|&b| b == b'/')
                    .map_or(1, |p| p + 1);
                out.truncate(prev);
                ends_dir = true;
            }
            Seg::Disguised => return Err(PathError::Malformed),
            Seg::Normal => {
                out.push(b'/');
                ends_dir = false;
            }
        }
    }
    if !ends_dir && out.len() > 1 {
        out.pop();
    }
    // Only ASCII was pushed; the error arm is unreachable but costs nothing.
    String::from_utf8(out).map_err(|_| PathError::Malformed)
}

/// Decode/encode one raw segment (no `/` inside) onto `out`.
fn push_segment(seg: &[u8], out: &mut Vec<u8>) -> Result<(), PathError> {
    let mut i = 0;
    while i < seg.len() {
        let b = seg[i];
        match CLASSES[usize::from(b)] {
            Class::Keep => {
                out.push(b);
                i += 1;
            }
            Class::Percent => {
                let (Some(hv), Some(lv)) = (
                    seg.get(i + 1).copied().and_then(hex_val),
                    seg.get(i + 2).copied().and_then(hex_val),
                ) else {
                    return Err(PathError::Malformed);
                };
                let v = hv << 4 | lv;
                if is_unreserved(v) {
                    out.push(v);
                } else {
                    push_escape(out, v);
                }
                i += 3;
            }
            Class::Encode => {
                push_escape(out, b);
                i += 1;
            }
            // `/` cannot occur inside a segment; treat it like any other rejected byte.
            Class::Slash | Class::Reject => return Err(PathError::Malformed),
        }
    }
    Ok(())
}

fn push_escape(out: &mut Vec<u8>, v: u8) {
    out.push(b'%');
    out.push(HEX_UPPER[usize::from(v >> 4)]);
    out.push(HEX_UPPER[usize::from(v & 0x0F)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Today's behaviour: these tests are about the normalization proper.
    const KEEP: PathRules = PathRules {
        semicolons: Semicolons::Keep,
        escaped_slashes: EscapedSlashes::Keep,
    };

    fn normalize(s: &str) -> Result<Cow<'_, str>, PathError> {
        super::normalize(s, KEEP)
    }

    fn norm(s: &str) -> Result<String, PathError> {
        normalize(s).map(Cow::into_owned)
    }

    fn ok(s: &str) -> String {
        match normalize(s) {
            Ok(c) => c.into_owned(),
            Err(e) => panic!("{s:?} -> {e}"),
        }
    }

    #[test]
    fn spec_examples_match_api_auth() {
        for p in [
            "/api//auth",
            "/api/./auth",
            "/api/x/../auth",
            "/api/%61uth",
            "/api/auth",
        ] {
            assert_eq!(ok(p), "/api/auth", "{p}");
        }
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for p in [
            "/",
            "/api",
            "/api/",
            "/api/auth",
            "/api/v1/users/42",
            "/.well-known/acme-challenge/x",
            "/a/..b/c..",
            "/a/...",
            "/files/a%2Fb",
            "/x%20y",
            "/%00",
            "/%25",
            "/a;b=c/d",
            "/a:b@c!$&'()*+,=",
        ] {
            assert!(
                matches!(normalize(p), Ok(Cow::Borrowed(x)) if x == p),
                "{p}"
            );
        }
    }

    #[test]
    fn rewritten_paths_are_owned() {
        assert!(matches!(normalize("/a//b"), Ok(Cow::Owned(_))));
        assert!(matches!(normalize("/%2f"), Ok(Cow::Owned(_))));
    }

    #[test]
    fn must_start_with_slash() {
        for p in ["", "api", "*", "http://x/y", "%2F", ".."] {
            assert_eq!(norm(p), Err(PathError::Malformed), "{p}");
        }
    }

    #[test]
    fn decodes_unreserved_only() {
        assert_eq!(ok("/%41%5a%61%7A%30%39%2D%2E%5F%7E"), "/AZaz09-._~");
        // Reserved and other bytes stay encoded, hex upper-cased.
        assert_eq!(ok("/a%2fb"), "/a%2Fb");
        assert_eq!(ok("/a%5cb"), "/a%5Cb");
        assert_eq!(ok("/a%00b"), "/a%00b");
        assert_eq!(ok("/%3f%23%20%25%3b"), "/%3F%23%20%25%3B");
        assert_eq!(ok("/%c3%a9"), "/%C3%A9");
    }

    #[test]
    fn no_double_decoding() {
        // `%2561` is `%25` + `61`: it must stay `%2561`, never become `%61` or `a`.
        assert_eq!(ok("/%2561uth"), "/%2561uth");
        assert_eq!(ok("/%252e%252e/x"), "/%252e%252e/x");
        // `%252F` stays an encoded percent followed by `2F`.
        assert_eq!(ok("/a%252Fb"), "/a%252Fb");
    }

    #[test]
    fn invalid_escapes_are_malformed() {
        for p in [
            "/%", "/%4", "/a%zz", "/%g0", "/%0g", "/x/%2", "/%%41", "/%-1", "/% 1",
        ] {
            assert_eq!(norm(p), Err(PathError::Malformed), "{p}");
        }
    }

    #[test]
    fn raw_bad_bytes_are_malformed() {
        for p in [
            "/a b",
            "/a\tb",
            "/a\nb",
            "/a\rb",
            "/a\0b",
            "/a\x7fb",
            "/a\\b",
            "/a\\..\\admin",
            "/a#b",
            "/a?b",
        ] {
            assert_eq!(norm(p), Err(PathError::Malformed), "{p:?}");
        }
    }

    #[test]
    fn lenient_printables_and_utf8_are_encoded() {
        assert_eq!(ok("/{\"a\":[1]}"), "/%7B%22a%22:%5B1%5D%7D");
        assert_eq!(ok("/a|b^c`d<e>"), "/a%7Cb%5Ec%60d%3Ce%3E");
        assert_eq!(ok("/caf\u{e9}"), "/caf%C3%A9");
        // The encoded form and the raw form are one path.
        assert_eq!(ok("/caf\u{e9}"), ok("/caf%c3%a9"));
    }

    #[test]
    fn merges_slashes() {
        assert_eq!(ok("//"), "/");
        assert_eq!(ok("///"), "/");
        assert_eq!(ok("//api"), "/api");
        assert_eq!(ok("/api//"), "/api/");
        assert_eq!(ok("/a///b////c"), "/a/b/c");
    }

    #[test]
    fn resolves_dot_segments() {
        assert_eq!(ok("/."), "/");
        assert_eq!(ok("/./"), "/");
        assert_eq!(ok("/a/."), "/a/");
        assert_eq!(ok("/a/./b"), "/a/b");
        assert_eq!(ok("/a/.."), "/");
        assert_eq!(ok("/a/../"), "/");
        assert_eq!(ok("/a/b/.."), "/a/");
        assert_eq!(ok("/a/b/../c"), "/a/c");
        assert_eq!(ok("/a/b/../../c"), "/c");
        assert_eq!(ok("/a/./b/./../c/."), "/a/c/");
        assert_eq!(ok("/a//../b"), "/b");
        // Only exact `.`/`..` segments are special.
        assert_eq!(ok("/a/.../b"), "/a/.../b");
        assert_eq!(ok("/a/..b/c"), "/a/..b/c");
        assert_eq!(ok("/a/b../c"), "/a/b../c");
    }

    #[test]
    fn encoded_dots_resolve_after_decoding() {
        assert_eq!(ok("/api/x/%2e%2e/auth"), "/api/auth");
        assert_eq!(ok("/api/x/%2E%2E/auth"), "/api/auth");
        assert_eq!(ok("/api/x/.%2e/auth"), "/api/auth");
        assert_eq!(ok("/api/%2e/auth"), "/api/auth");
        assert_eq!(ok("/public/%2e%2e/admin"), "/admin");
    }

    #[test]
    fn climbing_above_root_is_rejected() {
        for p in [
            "/..",
            "/../",
            "/../etc/passwd",
            "/a/../..",
            "/a/../../b",
            "/%2e%2e",
            "/%2E%2E/x",
            "/./..",
            "//..",
            "/a/./../..",
        ] {
            assert_eq!(norm(p), Err(PathError::AboveRoot), "{p}");
        }
    }

    #[test]
    fn disguised_dot_segments_are_rejected() {
        for p in [
            // Tomcat path parameters.
            "/public/..;/admin",
            "/public/..;x=1/admin",
            "/public/.;/admin",
            "/public/%2e%2e;/admin",
            "/public/..%3b/admin",
            "/public/..%3B/admin",
            // Dot pieces around encoded separators.
            "/public/..%2fadmin",
            "/public/..%2Fadmin",
            "/public/a%2F..%2F..%2Fadmin",
            "/public/%2F..",
            "/public/..%5Cadmin",
            "/public/a%5c.%5cb",
            "/public/%2e%2e%2fadmin",
        ] {
            assert_eq!(norm(p), Err(PathError::Malformed), "{p}");
        }
        // Encoded separators next to ordinary names are fine.
        assert_eq!(ok("/files/a.b%2Fc.d"), "/files/a.b%2Fc.d");
        assert_eq!(ok("/files/...%2F"), "/files/...%2F");
        assert_eq!(ok("/a;b/..c;d"), "/a;b/..c;d");
    }

    #[test]
    fn keeps_encoded_separators_as_one_segment() {
        // `%2F` never splits: `..` climbs over the whole `a%2Fb` segment.
        assert_eq!(ok("/x/a%2Fb/../c"), "/x/c");
        assert_eq!(ok("/x/a%2fb/c"), "/x/a%2Fb/c");
    }

    #[test]
    fn trailing_slash_is_preserved() {
        assert_eq!(ok("/api/"), "/api/");
        assert_eq!(ok("/api/%61uth/"), "/api/auth/");
        assert_eq!(ok("/api"), "/api");
    }

    /// Deterministic pseudo-random inputs over a hostile alphabet: no panics, idempotent output,
    /// output always strictly valid, and the borrow fast path agrees with the full rewrite.
    #[test]
    fn fuzz_invariants() {
        const ALPHABET: &[&str] = &[
            "/", "/", "/", ".", ".", "%", "2", "e", "E", "f", "F", "5", "c", "C", "a", ";", "3",
            "b", "B", "%2e", "%2E", "%2f", "%2F", "%5c", "%41", "%25", "..", "~", " ", "\\",
            "\u{e9}", "{", "%3B", "%00", "x",
        ];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut borrowed, mut owned, mut failed) = (0u32, 0u32, 0u32);
        for _ in 0..200_000 {
            let len = (next() % 12) as usize;
            let mut s = String::from("/");
            for _ in 0..len {
                s.push_str(ALPHABET[(next() % ALPHABET.len() as u64) as usize]);
            }
            let full = rewrite(&s);
            match normalize(&s) {
                Ok(Cow::Borrowed(b)) => {
                    borrowed += 1;
                    assert_eq!(b, s);
                    assert_eq!(
                        full.as_deref(),
                        Ok(s.as_str()),
                        "fast path disagrees on {s:?}"
                    );
                }
                Ok(Cow::Owned(o)) => {
                    owned += 1;
                    assert_eq!(full.as_deref(), Ok(o.as_str()));
                    assert_output_is_normal(&o);
                }
                Err(e) => {
                    failed += 1;
                    assert_eq!(full, Err(e), "{s:?}");
                }
            }
        }
        // The generator must exercise all three outcomes for the test to mean anything.
        assert!(
            borrowed > 1000 && owned > 1000 && failed > 1000,
            "{borrowed} {owned} {failed}"
        );
    }

    fn assert_output_is_normal(o: &str) {
        assert!(o.starts_with('/'), "{o:?}");
        assert!(!o.contains("//"), "{o:?}");
        for seg in o.split('/') {
            assert!(seg != "." && seg != "..", "{o:?}");
        }
        assert!(o.parse::<http::uri::PathAndQuery>().is_ok(), "{o:?}");
        assert!(
            o.bytes()
                .all(|b| b == b'%' || b == b'/' || CLASSES[usize::from(b)] == Class::Keep),
            "{o:?}"
        );
        // Idempotent, and the fast path recognizes its own output.
        assert!(
            matches!(normalize(o), Ok(Cow::Borrowed(x)) if x == o),
            "{o:?}"
        );
    }
}

#[cfg(test)]
mod rules_tests {
    use super::*;

    fn with(semicolons: Semicolons, escaped_slashes: EscapedSlashes) -> PathRules {
        PathRules {
            semicolons,
            escaped_slashes,
        }
    }

    fn run(raw: &str, rules: PathRules) -> Result<String, PathError> {
        normalize(raw, rules).map(Cow::into_owned)
    }

    #[test]
    fn defaults_reject_semicolons_and_keep_slashes() {
        assert_eq!(
            PathRules::default(),
            with(Semicolons::Reject, EscapedSlashes::Keep)
        );
    }

    #[test]
    fn reject_refuses_raw_and_encoded_semicolons() {
        let rules = PathRules::default();
        for p in [
            "/api/auth;jsessionid=0123/login",
            "/api/auth;/login",
            "/api/auth%3B/login",
            "/api/auth%3b/login",
            "/;",
            "/a/b;",
            "/public/..;/admin",
        ] {
            assert_eq!(run(p, rules), Err(PathError::Semicolon), "{p}");
        }
        // `%253B` is an encoded `%` followed by `3B`: data, not a semicolon.
        assert_eq!(run("/a%253B", rules).as_deref(), Ok("/a%253B"));
    }

    #[test]
    fn strip_removes_parameters_from_every_segment() {
        let rules = with(Semicolons::Strip, EscapedSlashes::Keep);
        for (raw, want) in [
            ("/api/auth;jsessionid=0123/login", "/api/auth/login"),
            ("/api/auth;/login", "/api/auth/login"),
            ("/api;a=1/auth;b=2/login;c=3", "/api/auth/login"),
            ("/api/auth/;x", "/api/auth/"),
            ("/;x", "/"),
            ("/a/;x/b", "/a/b"),
            // The parameter is cut before dot segments are resolved, as Tomcat does.
            ("/public/..;/admin", "/admin"),
            ("/public/%2e%2e;x=1/admin", "/admin"),
            // Everything up to the next `/` is the parameter, encoded semicolons included.
            ("/a;p%3Bq%zz/b", "/a/b"),
        ] {
            assert_eq!(run(raw, rules).as_deref(), Ok(want), "{raw}");
        }
        assert_eq!(run("/..;/x", rules), Err(PathError::AboveRoot));
        // An encoded semicolon outside a parameter is ambiguous: refused.
        assert_eq!(run("/api/auth%3B/login", rules), Err(PathError::Semicolon));
    }

    #[test]
    fn keep_leaves_semicolons_as_data() {
        let rules = with(Semicolons::Keep, EscapedSlashes::Keep);
        assert_eq!(
            run("/api/auth;jsessionid=0123/login", rules).as_deref(),
            Ok("/api/auth;jsessionid=0123/login")
        );
        assert_eq!(
            run("/api/auth%3b/login", rules).as_deref(),
            Ok("/api/auth%3B/login")
        );
        assert_eq!(run("/public/..;/admin", rules), Err(PathError::Malformed));
    }

    #[test]
    fn escaped_slashes_reject() {
        let rules = with(Semicolons::Reject, EscapedSlashes::Reject);
        for p in ["/a%2Fb", "/a%2fb", "/a%5Cb", "/a%5cb", "/%2F"] {
            assert_eq!(run(p, rules), Err(PathError::EscapedSlash), "{p}");
        }
        assert_eq!(run("/a%252Fb", rules).as_deref(), Ok("/a%252Fb"));
    }

    #[test]
    fn escaped_slashes_decode_then_resolve() {
        let rules = with(Semicolons::Reject, EscapedSlashes::Decode);
        for (raw, want) in [
            ("/api%2Fauth/login", "/api/auth/login"),
            ("/api%2fauth%2Flogin", "/api/auth/login"),
            ("/a%2F..%2Fapi/auth", "/api/auth"),
            ("/a%2F%2Fb", "/a/b"),
            ("/a/b%2F", "/a/b/"),
            // Decoded once: `%252F` is an encoded `%` followed by `2F`.
            ("/a%252Fb", "/a%252Fb"),
        ] {
            assert_eq!(run(raw, rules).as_deref(), Ok(want), "{raw}");
        }
        for p in ["/%2F..", "/a%2F..%2F..%2Fetc", "/..%2Fx"] {
            assert_eq!(run(p, rules), Err(PathError::AboveRoot), "{p}");
        }
        // `%5C` would decode to a raw backslash, which is refused raw as well.
        assert_eq!(run("/a%5Cb", rules), Err(PathError::EscapedSlash));
    }

    #[test]
    fn rules_do_not_rescue_invalid_escapes() {
        for semicolons in [Semicolons::Reject, Semicolons::Strip, Semicolons::Keep] {
            for slashes in [
                EscapedSlashes::Keep,
                EscapedSlashes::Reject,
                EscapedSlashes::Decode,
            ] {
                let rules = with(semicolons, slashes);
                for p in ["/%", "/%2", "/%%2F2F", "/%2%2F", "/a%zz"] {
                    assert_eq!(run(p, rules), Err(PathError::Malformed), "{p} {rules:?}");
                }
            }
        }
    }

    #[test]
    fn common_paths_still_borrow() {
        let rules = PathRules::default();
        for p in ["/", "/api/auth/login", "/files/a%20b", "/a%2Fb"] {
            assert!(
                matches!(normalize(p, rules), Ok(Cow::Borrowed(x)) if x == p),
                "{p}"
            );
        }
    }
}

/// Properties over arbitrary input, in every combination of rules: no panic, idempotence, and
/// output that holds nothing the rules refuse or rewrite.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    const ALL_RULES: [PathRules; 9] = {
        let s = [Semicolons::Reject, Semicolons::Strip, Semicolons::Keep];
        let e = [
            EscapedSlashes::Keep,
            EscapedSlashes::Reject,
            EscapedSlashes::Decode,
        ];
        let mut out = [PathRules {
            semicolons: Semicolons::Reject,
            escaped_slashes: EscapedSlashes::Keep,
        }; 9];
        let mut i = 0;
        while i < 9 {
            out[i] = PathRules {
                semicolons: s[i / 3],
                escaped_slashes: e[i % 3],
            };
            i += 1;
        }
        out
    };

    /// Pieces that exercise every rule: separators, dots, escapes of all kinds, parameters.
    fn piece() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => prop::sample::select(vec![
                "/", "/", "/", ".", "..", ";", ";x=1", "%2F", "%2f", "%5C", "%5c", "%3B", "%3b",
                "%2e", "%2E%2e", "%25", "%252F", "%41", "%61", "%", "%z", "a", "B", "api", "AUTH",
                "~", "\\", " ", "?", "#", "{", "\u{e9}", "%C3%A9", "%00",
            ])
            .prop_map(str::to_owned),
            1 => any::<char>().prop_map(String::from),
        ]
    }

    fn hostile_path() -> impl Strategy<Value = String> {
        (any::<bool>(), prop::collection::vec(piece(), 0..14)).prop_map(|(slash, pieces)| {
            let mut s = if slash { "/".to_owned() } else { String::new() };
            s.extend(pieces);
            s
        })
    }

    fn assert_normal_output(out: &str, rules: PathRules) -> Result<(), TestCaseError> {
        prop_assert!(out.starts_with('/'), "{out:?}");
        prop_assert!(!out.contains("//"), "{out:?}");
        prop_assert!(out.split('/').all(|s| s != "." && s != ".."), "{out:?}");
        prop_assert!(out.parse::<http::uri::PathAndQuery>().is_ok(), "{out:?}");
        let upper = out.to_ascii_uppercase();
        if rules.semicolons != Semicolons::Keep {
            prop_assert!(!out.contains(';') && !upper.contains("%3B"), "{out:?}");
        }
        if rules.escaped_slashes != EscapedSlashes::Keep {
            prop_assert!(!upper.contains("%2F") && !upper.contains("%5C"), "{out:?}");
        }
        Ok(())
    }

    fn check(raw: &str) -> Result<(), TestCaseError> {
        for rules in ALL_RULES {
            if let Ok(out) = normalize(raw, rules) {
                assert_normal_output(&out, rules)?;
                // Idempotent, and the fast path recognizes its own output (no allocation).
                let again = normalize(&out, rules);
                prop_assert!(
                    matches!(&again, Ok(Cow::Borrowed(x)) if *x == out),
                    "{raw:?} -> {out:?} -> {again:?} under {rules:?}"
                );
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn hostile_paths(raw in hostile_path()) {
            check(&raw)?;
        }

        #[test]
        fn any_string(raw in any::<String>()) {
            check(&raw)?;
            check(&format!("/{raw}"))?;
        }

        #[test]
        fn any_bytes(raw in prop::collection::vec(any::<u8>(), 0..64)) {
            let text = String::from_utf8_lossy(&raw);
            check(&text)?;
            check(&format!("/{text}"))?;
        }

        /// "strip" cuts exactly what Tomcat cuts: the path with parameters and the path without
        /// them normalize alike.
        #[test]
        fn strip_equals_no_parameters(
            segments in prop::collection::vec("[a-zA-Z0-9.]{0,4}", 1..6),
            params in prop::collection::vec(prop::option::of("[a-z0-9=;,]{0,5}"), 1..6),
        ) {
            let rules = PathRules { semicolons: Semicolons::Strip, ..PathRules::default() };
            let mut plain = String::new();
            let mut with = String::new();
            for (i, seg) in segments.iter().enumerate() {
                plain.push('/');
                plain.push_str(seg);
                with.push('/');
                with.push_str(seg);
                if let Some(Some(p)) = params.get(i) {
                    with.push(';');
                    with.push_str(p);
                }
            }
            prop_assert_eq!(normalize(&with, rules), normalize(&plain, rules));
        }

        /// "decode" makes `%2F` a separator: the encoded and the plain path are one path.
        #[test]
        fn decode_equals_plain_slashes(
            segments in prop::collection::vec("[a-zA-Z0-9.]{0,4}", 1..6),
            encode in prop::collection::vec(any::<bool>(), 6),
        ) {
            let rules = PathRules {
                escaped_slashes: EscapedSlashes::Decode,
                ..PathRules::default()
            };
            let plain: String = segments.iter().map(|s| format!("/{s}")).collect();
            let mut encoded = String::new();
            for (i, seg) in segments.iter().enumerate() {
                encoded.push_str(if i > 0 && encode[i] { "%2F" } else { "/" });
                encoded.push_str(seg);
            }
            prop_assert_eq!(normalize(&encoded, rules), normalize(&plain, rules));
        }
    }
}
