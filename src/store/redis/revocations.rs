//! Revocations in Redis: each one an entry next to the identity it revokes (`layout`:
//! `{u:<sub>}:r`, `{j:<jti>}:r`, read by the check script with the request's other keys), and a
//! bounded index `{rg}:revocations` for the admin listing. The index is written first, so a full
//! index refuses a revocation before anything is enforced, and the listing verifies every index
//! entry against its revocation entry (authoritative), so a half-finished change never lists a
//! revocation that is not enforced.

use std::time::Duration;

use fred::types::Value;

use super::activity::{Kind, Record};
use super::args::int;
use super::layout::RevocationId;
use super::{to_u64, RedisStore};
use crate::millis;
use crate::store::revocations::sort_entries;
use crate::store::{RevocationEntry, Revoked, StoreError, REVOCATIONS_MAX};

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
            self.record([Record::new(Kind::Unrevoked, now, &member)]);
            self.flush_now().await;
        }
        Ok(removed == 1)
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
