//! Counter keys for a policy. Stub: replaced by the real implementation.

use crate::config::compiled::{Policy, Route};

use super::{ClientId, RequestView};

/// Append the counter key of `policy` for this request to `out`: the policy name and every key
/// component, escaped so that distinct identities never share a key, long values hashed.
pub fn build_key(out: &mut String, policy: &Policy, route: &Route, client: &ClientId, req: RequestView<'_>) {
    todo!("{out}{policy:?}{route:?}{client:?}{req:?}")
}
