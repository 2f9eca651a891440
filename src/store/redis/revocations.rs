//! Revocations in Redis: each one an entry next to the identity it revokes (`layout`:
//! `{u:<sub>}:r`, `{j:<jti>}:r`, read by the check script with the request's other keys), and a
//! bounded index `{rg}:revocations` for the admin listing. The index is written first, so a full
//! index refuses a revocation before anything is enforced, and the listing verifies every index
//! entry against its revocation entry (authoritative), so a half-finished change never lists a
//! revocation that is not enforced.
//!
//! Every change is also published on the invalidation channel, so that each instance's mirror
//! (`SharedRevocations`, enforced by the fallback store while Redis fails) stays current; the
//! mirror is reloaded whole whenever the subscriber (re)connects, since messages sent while it
//! was away are lost.

use std::sync::{Arc, Weak};
use std::time::Duration;

use fred::types::Value;

use super::activity::{Kind, Record};
use super::args::int;
use super::layout::RevocationId;
use super::{to_u64, Inner, RedisStore};
use crate::clock::{Clock, SystemClock};
use crate::millis;
use crate::store::revocations::{sort_entries, Change, SharedRevocations};
use crate::store::{RevocationEntry, Revoked, StoreError, REVOCATIONS_MAX};

/// A failed reload of the mirror is tried again after this long.
const RELOAD_RETRY: Duration = Duration::from_secs(1);

/// The pub/sub text of a change (beside `Invalidation`'s, whose kinds are other letters): the
/// id last, so that it may hold any character.
pub(super) fn encode(change: &Change) -> String {
    match change {
        Change::Revoke {
            revoked: Revoked::Jti(id),
            ttl_ms,
        } => format!("v:j:{ttl_ms}:{id}"),
        Change::Revoke {
            revoked: Revoked::Sub { sub, before },
            ttl_ms,
        } => format!("v:s:{ttl_ms}:{before}:{sub}"),
        Change::Unrevoke { kind, id } => format!("x:{}:{id}", &kind[..1]),
    }
}

/// The change `msg` carries, if it is one.
pub(super) fn decode(msg: &str) -> Option<Change> {
    let (what, rest) = msg.split_once(':')?;
    let (kind, rest) = rest.split_once(':')?;
    match (what, kind) {
        ("v", "j") => {
            let (ttl, id) = rest.split_once(':')?;
            Some(Change::Revoke {
                revoked: Revoked::Jti(id.to_owned()),
                ttl_ms: ttl.parse().ok()?,
            })
        }
        ("v", "s") => {
            let (ttl, rest) = rest.split_once(':')?;
            let (before, sub) = rest.split_once(':')?;
            Some(Change::Revoke {
                revoked: Revoked::Sub {
                    sub: sub.to_owned(),
                    before: before.parse().ok()?,
                },
                ttl_ms: ttl.parse().ok()?,
            })
        }
        ("x", "j") => Some(Change::Unrevoke {
            kind: "jti",
            id: rest.to_owned(),
        }),
        ("x", "s") => Some(Change::Unrevoke {
            kind: "sub",
            id: rest.to_owned(),
        }),
        _ => None,
    }
}

/// Reload `mirror` from Redis's listing, retrying until it succeeds or the store is gone.
pub(super) fn spawn_reload(inner: Weak<Inner>, mirror: Arc<SharedRevocations>) {
    tokio::spawn(async move {
        loop {
            let Some(inner) = inner.upgrade() else { return };
            mirror.begin_reload();
            let store = RedisStore::handle(inner);
            let listed = store.revocation_entries().await;
            // Not kept across the wait: the store may be dropped meanwhile.
            drop(store);
            match listed {
                Ok(entries) => {
                    let count = entries.len();
                    if mirror.finish_reload(entries, SystemClock.now_ms()) {
                        tracing::debug!(count, "revocation mirror loaded");
                        return;
                    }
                }
                Err(e) => {
                    mirror.abort_reload();
                    tracing::warn!(error = %e, "cannot load revocations for the fallback store; retrying");
                    tokio::time::sleep(RELOAD_RETRY).await;
                }
            }
        }
    });
}

fn id_of<'a>(kind: &str, id: &'a str) -> Option<RevocationId<'a>> {
    match kind {
        "jti" => Some(RevocationId::Jti(id)),
        "sub" => Some(RevocationId::Sub(id)),
        _ => None,
    }
}

impl RedisStore {
    /// One `rindex` operation on the shared index; false when the index is full.
    async fn index_revocation(&self, member: String, until: Value) -> Result<bool, StoreError> {
        let args = vec![
            self.now_arg(),
            Value::String("rindex".into()),
            Value::String(member.into()),
            until,
            int(REVOCATIONS_MAX as u64),
        ];
        let reply: Vec<i64> = self
            .admin(vec![self.inner.layout.events_key()], args)
            .await?;
        Ok(reply.first() == Some(&1))
    }

    /// One admin-script operation on one revocation entry; its `{value, now}` reply.
    async fn revocation_op(
        &self,
        key: String,
        mut args: Vec<Value>,
    ) -> Result<(u64, u64), StoreError> {
        args.insert(0, self.now_arg());
        let reply: Vec<i64> = self.admin(vec![key], args).await?;
        match reply.as_slice() {
            [v, n] => Ok((to_u64(*v), to_u64(*n))),
            _ => Err(StoreError::Protocol("unexpected revocation reply".into())),
        }
    }

    pub(super) async fn revoke_entry(
        &self,
        revoked: &Revoked,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let ms = millis::ceil(ttl).max(1);
        let (id, before) = match revoked {
            Revoked::Jti(id) => (RevocationId::Jti(id), String::new()),
            Revoked::Sub { sub, before } => (RevocationId::Sub(sub), before.to_string()),
        };
        let key = self.inner.layout.revocation_key(id);
        let member = format!("{}:{}", revoked.kind(), revoked.id());
        let (until, now) = self
            .revocation_op(
                key.clone(),
                vec![
                    Value::String("revoke".into()),
                    int(ms),
                    Value::String(before.into()),
                ],
            )
            .await?;
        // Written after the entry (the index needs its end, on the server's clock): a full
        // index takes the entry back, so nothing is enforced that the listing does not show.
        if !self.index_revocation(member.clone(), int(until)).await? {
            self.revocation_op(key, vec![Value::String("unrevoke".into())])
                .await?;
            return Err(StoreError::Capacity);
        }
        self.announce(Change::Revoke {
            revoked: revoked.clone(),
            ttl_ms: ms,
        })
        .await;
        self.record([Record {
            reason: match revoked {
                Revoked::Jti(_) => String::new(),
                Revoked::Sub { before, .. } => format!("iat before {before}"),
            },
            value: ms,
            ..Record::new(Kind::Revoked, now, &member)
        }]);
        self.flush_now().await;
        Ok(())
    }

    pub(super) async fn unrevoke_entry(&self, kind: &str, id: &str) -> Result<bool, StoreError> {
        let Some(rid) = id_of(kind, id) else {
            return Ok(false);
        };
        let member = format!("{kind}:{id}");
        let (removed, now) = self
            .revocation_op(
                self.inner.layout.revocation_key(rid),
                vec![Value::String("unrevoke".into())],
            )
            .await?;
        self.index_revocation(member.clone(), int(0)).await?;
        if removed == 1 {
            self.announce(Change::Unrevoke {
                kind: if kind == "jti" { "jti" } else { "sub" },
                id: id.to_owned(),
            })
            .await;
            self.record([Record::new(Kind::Unrevoked, now, &member)]);
            self.flush_now().await;
        }
        Ok(removed == 1)
    }

    /// Tell every instance's mirror of `change` (this one's at once, whatever the network). A
    /// lost message leaves another instance's fallback store behind until its next reload; the
    /// revocation itself is enforced by Redis either way.
    async fn announce(&self, change: Change) {
        if let Some(mirror) = &self.mirror {
            mirror.apply(change.clone(), SystemClock.now_ms());
        }
        if let Err(e) = self.publish_text(encode(&change)).await {
            tracing::warn!(error = %e, "revocation not announced to the other instances");
        }
    }

    /// The index's members, each verified against its entry (one call per slot).
    pub(super) async fn revocation_entries(&self) -> Result<Vec<RevocationEntry>, StoreError> {
        let args = vec![self.now_arg(), Value::String("rlist".into())];
        let rows: Vec<Value> = self
            .admin(vec![self.inner.layout.events_key()], args)
            .await?;
        let listed: Vec<(String, String)> = rows
            .chunks_exact(2)
            .filter_map(|row| {
                let member = row[0].as_str()?;
                let (kind, id) = member.split_once(':')?;
                id_of(kind, id)?;
                Some((kind.to_owned(), id.to_owned()))
            })
            .collect();
        let keys: Vec<String> = listed
            .iter()
            .filter_map(|(kind, id)| id_of(kind, id))
            .map(|rid| self.inner.layout.revocation_key(rid))
            .collect();
        let rows = self.entry_rows(&keys, "rget").await?;
        let mut out = Vec::with_capacity(listed.len());
        // An index entry without an active revocation entry is stale: left out.
        for ((kind, id), (ttl, before)) in listed.into_iter().zip(rows) {
            let Some(ttl_ms) = ttl else { continue };
            let revoked = if kind == "jti" {
                Revoked::Jti(id)
            } else {
                Revoked::Sub {
                    sub: id,
                    before: before.parse().unwrap_or(0),
                }
            };
            out.push(RevocationEntry { revoked, ttl_ms });
        }
        sort_entries(&mut out);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_survive_the_channel_whatever_their_ids_hold() {
        let changes = [
            Change::Revoke {
                revoked: Revoked::Jti("a:b:c".into()),
                ttl_ms: 5_000,
            },
            Change::Revoke {
                revoked: Revoked::Sub {
                    sub: "user:42 é".into(),
                    before: 1_700_000_000,
                },
                ttl_ms: 1,
            },
            Change::Unrevoke {
                kind: "jti",
                id: "x:".into(),
            },
            Change::Unrevoke {
                kind: "sub",
                id: "42".into(),
            },
        ];
        for change in changes {
            assert_eq!(decode(&encode(&change)), Some(change));
        }
        // Invalidations and garbage are not changes.
        for msg in [
            "u:1.2.3.4",
            "r:k",
            "a:",
            "v:j:notanumber:x",
            "v:q:1:x",
            "x:",
        ] {
            assert_eq!(decode(msg), None, "{msg}");
        }
    }
}
