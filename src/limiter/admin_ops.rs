//! The admin API's pass-throughs to the store: blocks, one counter's status and reset, events
//! and suspicious clients. What the limiter adds on the way: counters addressed by client key
//! (with the client's tier), and unblocks and resets that also reach the in-process fallback
//! and the local deny cache, so nothing this instance remembers outlives them.

use std::time::Duration;

use crate::config::compiled::{KeyPart, Policy};
use crate::store::redis::Invalidation;
use crate::store::{
    BlockEntry, Event, LimitStatus, PolicyCheck, RevocationEntry, Revoked, Store, StoreError,
    Suspect,
};

use super::policy::{self, UnaddressableKey};
use super::Limiter;

/// Errors of the admin pass-throughs.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LimiterError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] UnaddressableKey),
}

impl Limiter {
    /// Block `client` (admin).
    pub(crate) async fn block(
        &self,
        client: &str,
        ttl: Duration,
        reason: &str,
    ) -> Result<(), StoreError> {
        self.failover.store().block(client, ttl, reason).await
    }

    /// Remove a block from the store and from the fallback (which may have started one while the
    /// store was failing). Returns whether either had one.
    pub async fn unblock(&self, client: &str) -> Result<bool, StoreError> {
        let local = self
            .failover
            .fallback()
            .unblock(client)
            .await
            .unwrap_or(false);
        // Redis publishes the unblock to every instance; this one forgets at once regardless.
        if let Some(cache) = &self.cache {
            cache.invalidate(&Invalidation::Unblock(client.to_string()));
        }
        Ok(self.failover.store().unblock(client).await? || local)
    }

    /// Active blocks in the store, longest remaining first.
    pub(crate) async fn blocks(&self) -> Result<Vec<BlockEntry>, StoreError> {
        self.failover.store().blocks().await
    }

    /// The counter of `policy` for client key `client` (see `policy::build_client_key`). The caller
    /// resolves the policy by name in its config snapshot.
    pub(crate) async fn limit_status(
        &self,
        policy: &Policy,
        client: &str,
    ) -> Result<LimitStatus, LimiterError> {
        let mut key = String::new();
        policy::build_client_key(&mut key, policy, client)?;
        let check = PolicyCheck::new(policy, &key).with_limit(client_tier(policy, client));
        Ok(self.failover.store().limit_status(&check).await?)
    }

    /// Recent events recorded by the store, newest first.
    /// Revoke tokens in the store (no local cache holds revocations: the store is asked on
    /// every request with a token).
    pub(crate) async fn revoke(&self, revoked: &Revoked, ttl: Duration) -> Result<(), StoreError> {
        self.failover.store().revoke(revoked, ttl).await
    }

    pub(crate) async fn unrevoke(&self, kind: &str, id: &str) -> Result<bool, StoreError> {
        self.failover.store().unrevoke(kind, id).await
    }

    pub(crate) async fn revocations(&self) -> Result<Vec<RevocationEntry>, StoreError> {
        self.failover.store().revocations().await
    }

    pub(crate) async fn events(&self, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.failover.store().events(limit).await
    }

    /// The clients the store rejected most often recently.
    pub(crate) async fn suspicious(&self, limit: usize) -> Result<Vec<Suspect>, StoreError> {
        self.failover.store().suspicious(limit).await
    }

    /// Reset the counter of `policy` for client key `client`; returns whether it existed.
    pub(crate) async fn reset_limit(
        &self,
        policy: &Policy,
        client: &str,
    ) -> Result<bool, LimiterError> {
        let mut key = String::new();
        policy::build_client_key(&mut key, policy, client)?;
        let check = PolicyCheck::new(policy, &key).with_limit(client_tier(policy, client));
        let local = self
            .failover
            .fallback()
            .reset_limit(&check)
            .await
            .unwrap_or(false);
        if let Some(cache) = &self.cache {
            cache.invalidate(&Invalidation::Reset(key.clone()));
        }
        Ok(self.failover.store().reset_limit(&check).await? || local)
    }
}

/// The tier of client key `client` on an IP-keyed policy (the admin API addresses counters by
/// client).
fn client_tier(policy: &Policy, client: &str) -> Option<u64> {
    match policy.key.as_slice() {
        [KeyPart::Ip] => policy.overrides.get(client),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::compiled::{Algorithm, Mode, OnError};
    use crate::limiter::fixture::*;
    use crate::limiter::Verdict;

    #[tokio::test]
    async fn admin_pass_throughs() {
        let f = fixture(100, OnError::Deny);
        let p = policy("one", 2, Mode::Enforce, None);
        let r = route(vec![p.clone()]);
        check(&f, &r, "1.1.1.1").await;
        let s = f.limiter.limit_status(&p, "1.1.1.1").await.unwrap();
        assert_eq!((s.count, s.remaining, s.limit), (1, 1, 2));
        assert!(f.limiter.reset_limit(&p, "1.1.1.1").await.unwrap());
        assert_eq!(
            f.limiter.limit_status(&p, "1.1.1.1").await.unwrap().count,
            0
        );

        f.limiter
            .block("3.3.3.3", Duration::from_millis(1500), "manual")
            .await
            .unwrap();
        let blocks = f.limiter.blocks().await.unwrap();
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].reason, "manual");
        assert!(matches!(
            check(&f, &r, "3.3.3.3").await,
            Verdict::Blocked { retry_after_s: 2 }
        ));
        let by_path = Policy {
            key: vec![KeyPart::Path],
            index: 1,
            ..Policy::new("by_path", Algorithm::FixedWindow, 1, Duration::from_secs(1))
        };
        assert!(matches!(
            f.limiter.limit_status(&by_path, "1.1.1.1").await,
            Err(LimiterError::Key(_))
        ));
    }
}
