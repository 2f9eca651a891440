//! Route matching. Stub: replaced by the real implementation.

use http::Method;

use crate::config::compiled::Route;

/// First route (file order) matching the normalized path, method and host (port ignored,
/// case-insensitive).
pub fn find<'c>(routes: &'c [Route], method: &Method, host: Option<&str>, path: &str) -> Option<&'c Route> {
    todo!("{routes:?}{method}{host:?}{path}")
}

/// The path the upstream receives: `path` with the route prefix removed when `strip_prefix`.
pub fn forward_path<'p>(route: &Route, path: &'p str) -> &'p str {
    todo!("{route:?}{path}")
}
