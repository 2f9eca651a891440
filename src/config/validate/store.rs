//! `[store]`: which store, where (the Redis URL), and how its keys are named.

use super::check::{
    bounded, Check, Issue, BATCH_IN_FLIGHT_RANGE, BATCH_MAX_RANGE, BATCH_QUEUE_RANGE,
    MAX_MEMORY_KEYS_RANGE,
};
use super::validator::Validator;
use crate::config::compiled::{StoreKind, StoreSettings};
use crate::config::file::{self, EnvString};

const REDIS_SCHEMES: [&str; 4] = [
    "redis://",
    "rediss://",
    "redis-sentinel://",
    "redis-cluster://",
];

impl Validator<'_> {
    pub(super) fn store(&mut self, s: &file::Store) -> Option<StoreSettings> {
        let kind = s.kind.unwrap_or(file::DEFAULT_STORE_KIND);
        let url = self.take(
            s.url
                .as_ref()
                .map_or(Ok(file::DEFAULT_STORE_URL.to_owned()), |u| {
                    self.store_url(u, kind)
                }),
        );
        let key_prefix = self.take(
            s.key_prefix
                .as_ref()
                .map_or(Ok(file::DEFAULT_KEY_PREFIX.to_owned()), |p| {
                    self.key_prefix(p)
                }),
        );
        let max_memory_keys = self.take(
            s.max_memory_keys
                .as_ref()
                .map_or(Ok(file::DEFAULT_MAX_MEMORY_KEYS), |v| {
                    bounded(v, MAX_MEMORY_KEYS_RANGE)
                }),
        );
        let batch_max = self.take(
            s.batch_max
                .as_ref()
                .map_or(Ok(file::DEFAULT_BATCH_MAX), |v| bounded(v, BATCH_MAX_RANGE)),
        );
        let batch_in_flight = self.take(
            s.batch_in_flight
                .as_ref()
                .map_or(Ok(file::DEFAULT_BATCH_IN_FLIGHT), |v| {
                    bounded(v, BATCH_IN_FLIGHT_RANGE)
                }),
        );
        let batch_queue = self.take(
            s.batch_queue
                .as_ref()
                .map_or(Ok(file::DEFAULT_BATCH_QUEUE), |v| {
                    bounded(v, BATCH_QUEUE_RANGE)
                }),
        );
        Some(StoreSettings {
            kind,
            url: url?,
            key_prefix: key_prefix?,
            timeout: s.timeout.map_or(file::DEFAULT_STORE_TIMEOUT, |d| d.0),
            on_error: s.on_error.unwrap_or(file::DEFAULT_ON_ERROR),
            max_memory_keys: max_memory_keys?,
            batch_max: batch_max?,
            batch_in_flight: batch_in_flight?,
            batch_queue: batch_queue?,
        })
    }

    /// The URL may carry a password, so messages show its scheme only.
    fn store_url(&self, url: &EnvString, kind: StoreKind) -> Check<String> {
        let text = self.expand(url)?;
        if kind == StoreKind::Redis && !REDIS_SCHEMES.iter().any(|s| text.starts_with(s)) {
            let scheme = text.split_once("://").map_or("none", |(scheme, _)| scheme);
            return Err(Issue::at(
                url,
                format!(
                    "unsupported URL scheme `{scheme}`; expected {}",
                    REDIS_SCHEMES.join(", ")
                ),
            ));
        }
        Ok(text)
    }

    /// The prefix comes before every key's hash tag (the identity the key counts, see
    /// `store::redis::layout`) and Redis Cluster hashes the first `{...}` of a key, so braces here
    /// would replace that tag: every key in one slot, or a request's keys split across slots.
    fn key_prefix(&self, prefix: &EnvString) -> Check<String> {
        let text = self.expand(prefix)?;
        if text.contains(['{', '}']) {
            return Err(Issue::at(
                prefix,
                "must not contain `{` or `}` (they would replace the hash tag that spreads keys over Redis Cluster slots)",
            ));
        }
        Ok(text)
    }
}
