//! What the header tests share: a value from a literal, and the lines of one header.

use http::{HeaderMap, HeaderValue};

pub(crate) fn hv(s: &'static str) -> HeaderValue {
    HeaderValue::from_static(s)
}

/// Every line of header `name`, as text.
pub(crate) fn get<'h>(h: &'h HeaderMap, name: &str) -> Vec<&'h str> {
    h.get_all(name)
        .iter()
        .map(|v| v.to_str().expect("ascii test value"))
        .collect()
}

/// The only line of header `name`, if any (more than one fails the test).
pub(crate) fn one<'h>(h: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let all = get(h, name);
    assert!(all.len() <= 1, "{name}: {all:?}");
    all.first().copied()
}
