//! The in-process store's revocations: at most [`REVOCATIONS_MAX`], one per `jti` and one per
//! `sub`, each until its expiry (store clock). Never evicted: a full table refuses a new
//! revocation instead of forgetting one, which could let a revoked token through.

use std::collections::HashMap;

use super::{RevocationEntry, Revoked, StoreError, TokenRef, REVOCATIONS_MAX};

#[derive(Debug, Default)]
pub(crate) struct RevocationTable {
    /// `jti` -> expiry (ms, store clock).
    jti: HashMap<String, u64>,
    /// `sub` -> (`before`, expiry).
    sub: HashMap<String, (u64, u64)>,
}

impl RevocationTable {
    fn len(&self) -> usize {
        self.jti.len() + self.sub.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn sweep(&mut self, now: u64) {
        self.jti.retain(|_, until| *until > now);
        self.sub.retain(|_, (_, until)| *until > now);
    }

    /// Whether `token` is revoked at `now`. Two map lookups; nothing allocated.
    pub(crate) fn refuses(&self, token: &TokenRef<'_>, now: u64) -> bool {
        let by_jti = token
            .jti
            .and_then(|jti| self.jti.get(jti))
            .is_some_and(|until| *until > now);
        by_jti
            || token
                .sub
                .and_then(|sub| self.sub.get(sub))
                .is_some_and(|&(before, until)| {
                    until > now && token.iat.is_none_or(|iat| iat < before)
                })
    }

    /// Record `revoked` until `until`; a revocation of the same `jti` or `sub` is replaced.
    pub(crate) fn insert(
        &mut self,
        revoked: &Revoked,
        until: u64,
        now: u64,
    ) -> Result<(), StoreError> {
        let present = match revoked {
            Revoked::Jti(id) => self.jti.contains_key(id),
            Revoked::Sub { sub, .. } => self.sub.contains_key(sub),
        };
        if !present && self.len() >= REVOCATIONS_MAX {
            self.sweep(now);
            if self.len() >= REVOCATIONS_MAX {
                return Err(StoreError::Capacity);
            }
        }
        match revoked {
            Revoked::Jti(id) => {
                self.jti.insert(id.clone(), until);
            }
            Revoked::Sub { sub, before } => {
                self.sub.insert(sub.clone(), (*before, until));
            }
        }
        Ok(())
    }

    /// Remove the revocation of `kind` and `id`; returns whether it was active at `now`.
    pub(crate) fn remove(&mut self, kind: &str, id: &str, now: u64) -> bool {
        let until = match kind {
            "jti" => self.jti.remove(id),
            "sub" => self.sub.remove(id).map(|(_, until)| until),
            _ => None,
        };
        until.is_some_and(|until| until > now)
    }

    /// Active revocations, longest remaining first (then by kind and id).
    pub(crate) fn list(&mut self, now: u64) -> Vec<RevocationEntry> {
        self.sweep(now);
        let jti = self.jti.iter().map(|(id, until)| RevocationEntry {
            revoked: Revoked::Jti(id.clone()),
            ttl_ms: until - now,
        });
        let sub = self
            .sub
            .iter()
            .map(|(sub, (before, until))| RevocationEntry {
                revoked: Revoked::Sub {
                    sub: sub.clone(),
                    before: *before,
                },
                ttl_ms: until - now,
            });
        let mut out: Vec<RevocationEntry> = jti.chain(sub).collect();
        sort_entries(&mut out);
        out
    }
}

/// The listing order every store answers in.
pub(crate) fn sort_entries(entries: &mut [RevocationEntry]) {
    entries.sort_by(|a, b| {
        b.ttl_ms
            .cmp(&a.ttl_ms)
            .then_with(|| a.revoked.kind().cmp(b.revoked.kind()))
            .then_with(|| a.revoked.id().cmp(b.revoked.id()))
    });
}
