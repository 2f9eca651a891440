//! Tokens already verified, so a client sending the same token request after request pays for
//! one signature check, not one per request. Keyed by the SHA-256 of the whole token (a token
//! differing in any byte is verified afresh); an entry holds the claims and the times between
//! which they are valid (`nbf` and `exp` with the leeway), checked on every hit. Bounded: a few
//! shards of at most [`SHARD_ENTRIES`] each, the least recently used entry dropped first, and
//! cleared whenever the key set changes (a key removed from a JWKS stops its tokens at once).

use std::fmt::Write as _;
use std::sync::Arc;

use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use super::jwt::Claims;
use crate::lru::Lru;

const SHARDS: usize = 8;
/// Entries per shard: 8 x 1024 tokens, a few MB at most.
pub(crate) const SHARD_ENTRIES: usize = 1024;
const TAG: u8 = 0;

#[derive(Debug)]
struct Entry {
    claims: Arc<Claims>,
    /// Unix seconds from which (inclusive) and until which (exclusive) the token is accepted.
    from_s: u64,
    until_s: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Verified {
    shards: [Mutex<Lru<Entry>>; SHARDS],
}

/// The cache key of a token: its SHA-256 in hex.
pub(crate) struct TokenKey(String);

impl TokenKey {
    pub(crate) fn of(token: &str) -> TokenKey {
        let digest = Sha256::digest(token.as_bytes());
        let mut hex = String::with_capacity(64);
        for b in digest {
            // Writing to a String cannot fail.
            let _ = write!(hex, "{b:02x}");
        }
        TokenKey(hex)
    }

    fn shard(&self) -> usize {
        // Hex digits of a uniform hash: the first one picks the shard.
        usize::from(self.0.as_bytes()[0] % SHARDS as u8)
    }
}

impl Verified {
    /// The claims of a token verified before and still valid at `now_s`.
    pub(crate) fn get(&self, key: &TokenKey, now_s: u64) -> Option<Arc<Claims>> {
        let mut shard = self.shards[key.shard()].lock();
        let slot = shard.find(TAG, &key.0)?;
        let entry = shard.get(slot)?;
        if now_s < entry.from_s || now_s >= entry.until_s {
            // Not yet or no longer valid: verified afresh (and refused) from now on.
            shard.remove(slot);
            return None;
        }
        let claims = entry.claims.clone();
        shard.touch(slot);
        Some(claims)
    }

    pub(crate) fn insert(&self, key: &TokenKey, claims: Arc<Claims>, from_s: u64, until_s: u64) {
        let mut shard = self.shards[key.shard()].lock();
        if shard.find(TAG, &key.0).is_none() && shard.len() >= SHARD_ENTRIES {
            if let Some(oldest) = shard.oldest() {
                shard.remove(oldest);
            }
        }
        shard.insert(
            TAG,
            &key.0,
            Entry {
                claims,
                from_s,
                until_s,
            },
        );
    }

    pub(crate) fn clear(&self) {
        for shard in &self.shards {
            shard.lock().clear();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn hits_only_within_the_validity_and_stays_bounded() {
        let cache = Verified::default();
        let claims = Arc::new(Claims::from_json(json!({"sub": "a"})));
        let key = TokenKey::of("a.b.c");
        cache.insert(&key, claims.clone(), 100, 200);
        assert!(cache.get(&key, 99).is_none());
        // The early miss dropped it.
        assert!(cache.get(&key, 150).is_none());
        cache.insert(&key, claims.clone(), 100, 200);
        assert_eq!(cache.get(&key, 150).as_deref(), Some(&*claims));
        assert!(cache.get(&TokenKey::of("a.b.d"), 150).is_none());
        assert!(cache.get(&key, 200).is_none());

        for i in 0..(SHARDS * SHARD_ENTRIES * 2) {
            cache.insert(&TokenKey::of(&i.to_string()), claims.clone(), 0, u64::MAX);
        }
        assert!(cache.len() <= SHARDS * SHARD_ENTRIES);
        cache.clear();
        assert_eq!(cache.len(), 0);
    }
}
