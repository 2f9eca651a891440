//! The `Validator`: the state every section's checks share (the config text for positions, the
//! environment for `${NAME}`) and the issues they record. Each section adds its own methods in its
//! own file; `finish` reports the first issue in file order.

use std::path::Path;

use super::check::{Check, Issue};
use crate::config::compiled::Config;
use crate::config::env::{self, Lookup};
use crate::config::file::EnvString;
use crate::config::locate::Source;
use crate::config::ConfigError;

pub(super) struct Validator<'a> {
    pub(super) source: &'a Source<'a>,
    /// The config file (relative `overrides_file` paths start from its directory).
    pub(super) path: &'a Path,
    pub(super) env: Lookup<'a>,
    pub(super) issues: Vec<Issue>,
}

impl Validator<'_> {
    /// Record a failed check; `None` then means "already reported".
    pub(super) fn take<T>(&mut self, check: Check<T>) -> Option<T> {
        check.map_err(|issue| self.issues.push(issue)).ok()
    }

    /// Check every item, reporting each failure; `Some` only when all passed.
    pub(super) fn each<S, T>(
        &mut self,
        items: &[S],
        mut check: impl FnMut(&S) -> Check<T>,
    ) -> Option<Vec<T>> {
        let checked: Vec<Option<T>> = items.iter().map(|item| self.take(check(item))).collect();
        checked.into_iter().collect()
    }

    pub(super) fn finish(self, config: Option<Config>) -> Result<Config, ConfigError> {
        let first = self
            .issues
            .into_iter()
            .min_by_key(|issue| issue.span.as_ref().map_or(usize::MAX, |s| s.start));
        match (config, first) {
            (Some(config), None) => Ok(config),
            (
                _,
                Some(Issue {
                    external: Some(error),
                    ..
                }),
            ) => Err(*error),
            (_, Some(issue)) => Err(self.source.error(issue.span, issue.key, issue.message)),
            // Unreachable by construction (every `None` comes from a recorded issue), but an
            // error beats a panic if that ever stops being true.
            (None, None) => Err(self
                .source
                .error(None, None, "invalid configuration".into())),
        }
    }

    pub(super) fn expand(&self, value: &EnvString) -> Check<String> {
        env::expand(value.get_ref(), self.env).map_err(|e| Issue::at(value, e.to_string()))
    }

    /// Expand a value that must not end up empty (paths, tokens).
    pub(super) fn non_empty(&self, value: &EnvString) -> Check<String> {
        let text = self.expand(value)?;
        if text.is_empty() {
            return Err(Issue::at(value, "must not be empty"));
        }
        Ok(text)
    }
}
