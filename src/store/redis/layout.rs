//! Redis key names. A key's hash tag is the identity it counts (see the key map in `redis.rs`):
//! a client's block entry, offences and every counter keyed by that client share the tag
//! `{i:<client>}`; a verified subject's revocation entry and every counter keyed by that subject
//! (and not by the client) share `{u:<sub>}`; a revoked `jti` is tagged `{j:<jti>}`; any other
//! counter is tagged with its own counter key; only what the admin API lists across clients (the
//! block index, the revocation index, events, suspects) lives under `{rg}`. Tags are built
//! from escaped key material (`store::keys`), so client bytes never form or break a tag, and the
//! tag always comes first after the operator's prefix (validated to hold no braces).

use crate::config::compiled::Algorithm;
use crate::store::algorithm::Params;
use crate::store::keys::{self, Tag};
use crate::store::PolicyCheck;

use super::algorithm_code;

/// Which revocation entry (see [`Layout::revocation_key`]).
#[derive(Debug, Clone, Copy)]
pub(super) enum RevocationId<'a> {
    Jti(&'a str),
    Sub(&'a str),
}

/// The tag of what is kept across clients.
const SHARED_TAG: &str = "{rg}";

#[derive(Debug, Clone)]
pub(super) struct Layout {
    prefix: String,
    /// `<prefix>{rg}:` (block index, events, suspects).
    shared: String,
}

impl Layout {
    pub(super) fn new(prefix: &str) -> Self {
        Layout {
            prefix: prefix.to_owned(),
            shared: format!("{prefix}{SHARED_TAG}:"),
        }
    }

    /// `<prefix>{i:<client>}:b`: the client's block entry (`<until>:<reason>`, TTL = the block).
    /// The client's offences are `<prefix>{i:<client>}:o:<policy>` (named by the scripts).
    pub(super) fn block_key(&self, client: &str) -> String {
        let mut out = String::with_capacity(self.prefix.len() + 8 + client.len());
        out.push_str(&self.prefix);
        out.push('{');
        keys::push_identity(&mut out, Tag::Ip, client.as_bytes());
        out.push_str("}:b");
        out
    }

    /// `<prefix>{u:<sub>}:r` for a subject, `<prefix>{j:<jti>}:r` for a token id: a revocation
    /// entry (`<until>:<before>`, `before` empty for a `jti`; TTL = the revocation).
    pub(super) fn revocation_key(&self, revoked: RevocationId<'_>) -> String {
        let (tag, id) = match revoked {
            RevocationId::Jti(id) => (Tag::Jti, id),
            RevocationId::Sub(id) => (Tag::JwtSub, id),
        };
        let mut out = String::with_capacity(self.prefix.len() + 8 + id.len());
        out.push_str(&self.prefix);
        out.push('{');
        keys::push_identity(&mut out, tag, id.as_bytes());
        out.push_str("}:r");
        out
    }

    /// The full key of a counter: `<prefix>{<identity component>}:<kind>:<params>:<key>` when the
    /// counter key names the client or a verified subject (`keys::identity_component`), else
    /// `<prefix>{<key>}:<kind>:<params>`. `<kind>` is `v` for
    /// the string counters (fixed and sliding window, token bucket) and `c` for the sorted sets
    /// (sliding log, concurrency): the string counters were hashes under `c` before, and a new
    /// name keeps an upgrade from reading an old hash as a string. `<params>` names the
    /// algorithm, limit, window and burst (the check's, possibly a tier's), so a policy changed
    /// by a reload, or another tier, gets a fresh counter.
    pub(super) fn counter_key(&self, check: &PolicyCheck<'_>) -> String {
        let key = check.key;
        let mut out = String::with_capacity(self.prefix.len() + 32 + 2 * key.len());
        out.push_str(&self.prefix);
        out.push('{');
        let client = keys::identity_component(key);
        out.push_str(client.unwrap_or(key));
        let p = Params::of_check(check);
        out.push_str(match p.algorithm {
            Algorithm::SlidingLog | Algorithm::Concurrency => "}:c:",
            _ => "}:v:",
        });
        // itoa, not `write!`: this runs for every policy of every request.
        let mut digits = itoa::Buffer::new();
        out.push_str(algorithm_code(p.algorithm));
        out.push_str(digits.format(p.limit));
        out.push('.');
        out.push_str(digits.format(p.window_ms));
        out.push('.');
        out.push_str(digits.format(p.burst));
        if client.is_some() {
            out.push(':');
            out.push_str(key);
        }
        out
    }

    /// `<prefix>{rg}:events`: the recent events list; the scripts name the other shared keys
    /// from it (`blocks`, the block index: client -> until, written only when a block starts or
    /// is removed; `revocations`, the revocation index: `jti:<id>` / `sub:<id>` -> until;
    /// `evrep:`, `suspects:`). Also the name of the pub/sub channel.
    pub(super) fn events_key(&self) -> String {
        format!("{}events", self.shared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::compiled::{Algorithm, Policy};
    use std::time::Duration;

    fn policy() -> Policy {
        Policy::new("p", Algorithm::FixedWindow, 5, Duration::from_secs(1))
    }

    #[test]
    fn client_counters_share_the_block_tag() {
        let l = Layout::new("rl:");
        let p = policy();
        let k = l.counter_key(&PolicyCheck::new(&p, "p|i:1.2.3.4|p:/a"));
        assert_eq!(k, "rl:{i:1.2.3.4}:v:f5.1000.5:p|i:1.2.3.4|p:/a");
        assert_eq!(l.block_key("1.2.3.4"), "rl:{i:1.2.3.4}:b");
        assert_eq!(
            fred::util::redis_keyslot(k.as_bytes()),
            fred::util::redis_keyslot(l.block_key("1.2.3.4").as_bytes())
        );
    }

    #[test]
    fn other_counters_are_tagged_with_their_own_key() {
        let l = Layout::new("rl:");
        let p = policy();
        assert_eq!(
            l.counter_key(&PolicyCheck::new(&p, "p|g")),
            "rl:{p|g}:v:f5.1000.5"
        );
        assert_eq!(
            l.counter_key(&PolicyCheck::new(&p, "p|h:key%7B1%7D")),
            "rl:{p|h:key%7B1%7D}:v:f5.1000.5"
        );
        let log = Policy::new("p", Algorithm::SlidingLog, 5, Duration::from_secs(1));
        assert_eq!(
            l.counter_key(&PolicyCheck::new(&log, "p|g")),
            "rl:{p|g}:c:l5.1000.5"
        );
    }

    #[test]
    fn subject_counters_share_the_revocation_tag() {
        let l = Layout::new("rl:");
        let p = policy();
        let k = l.counter_key(&PolicyCheck::new(&p, "p|u:alice|p:/a"));
        assert_eq!(k, "rl:{u:alice}:v:f5.1000.5:p|u:alice|p:/a");
        let r = l.revocation_key(RevocationId::Sub("alice"));
        assert_eq!(r, "rl:{u:alice}:r");
        assert_eq!(
            fred::util::redis_keyslot(k.as_bytes()),
            fred::util::redis_keyslot(r.as_bytes())
        );
        // The client still comes first: such a counter stays with the block entry.
        let both = l.counter_key(&PolicyCheck::new(&p, "p|u:alice|i:1.2.3.4"));
        assert!(both.starts_with("rl:{i:1.2.3.4}:"));
        assert_eq!(l.revocation_key(RevocationId::Jti("a}b")), "rl:{j:a%7Db}:r");
    }

    #[test]
    fn client_bytes_never_make_a_tag() {
        let l = Layout::new("rl:");
        let k = l.block_key("a}b{c");
        assert_eq!(k, "rl:{i:a%7Db%7Bc}:b");
        let long = "x".repeat(100);
        assert!(l.block_key(&long).starts_with("rl:{i#"));
    }
}
