//! Path normalization (SPEC section 3). Stub: replaced by the real implementation.

use std::borrow::Cow;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path climbs above the root")]
    AboveRoot,
    #[error("malformed path")]
    Malformed,
}

/// Normalize a request path (without query): resolve `.`/`..`, merge `//`, decode percent-escapes
/// of unreserved characters, upper-case remaining escapes; `%2F`, `%5C`, `%00` stay encoded.
pub fn normalize(raw: &str) -> Result<Cow<'_, str>, PathError> {
    todo!("{raw}")
}
