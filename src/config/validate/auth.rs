//! `[[auth]]`: pinned algorithms, exactly one key source (a secret from the environment, a PEM
//! public key or a JWKS file, both read now, relative to the config file), the claim checks,
//! where the token is, and what a request without a good one gets.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use toml::Spanned;

use super::check::{Check, Issue};
use super::validator::Validator;
use crate::auth::jwt::{Checks, Verifier};
use crate::auth::{Authenticator, KeySource, TokenSource};
use crate::config::file::{self, EnvString};

/// Leeway beyond this hides real expiry problems.
const MAX_LEEWAY: Duration = Duration::from_secs(300);

impl Validator<'_> {
    pub(super) fn auths(
        &mut self,
        list: &[Spanned<file::Auth>],
    ) -> Vec<Option<Arc<Authenticator>>> {
        list.iter().map(|a| self.auth(a).map(Arc::new)).collect()
    }

    fn auth(&mut self, spanned: &Spanned<file::Auth>) -> Option<Authenticator> {
        let a = spanned.get_ref();
        let algorithms = self.take(algorithms(&a.algorithms));
        let source = self.take(self.key_source(spanned));
        let issuer = self.optional_text(a.issuer.as_ref());
        let audience = self.optional_text(a.audience.as_ref());
        let leeway = self.take(leeway(a.leeway.as_ref()));
        let token = match &a.token {
            None => Some(TokenSource::Bearer),
            Some(t) => self.take(TokenSource::parse(t.get_ref()).map_err(|m| Issue::at(t, m))),
        };
        // Keys are read only once the rest of the section is valid.
        let (algorithms, source, token) = (algorithms?, source?, token?);
        let checks = Checks {
            issuer: issuer?,
            audience: audience?,
            leeway_s: leeway?.as_secs(),
        };
        // A key that cannot be read or used is reported at the key's own line.
        let key_at = key_span(a);
        let verifier = Verifier::load(algorithms, checks, source)
            .map_err(|e| Issue::at(&key_at, e.to_string()));
        let verifier = self.take(verifier)?;
        Some(Authenticator {
            name: Arc::from(a.name.get_ref().as_str()),
            token,
            verifier,
            on_invalid: a.on_invalid.unwrap_or(file::DEFAULT_ON_INVALID),
            required: a.required.unwrap_or(file::DEFAULT_AUTH_REQUIRED),
            counters: Default::default(),
        })
    }

    fn key_source(&self, spanned: &Spanned<file::Auth>) -> Check<KeySource> {
        let a = spanned.get_ref();
        match (&a.secret, &a.public_key, &a.jwks_file) {
            (Some(secret), None, None) => {
                // A secret written in the file ends up in backups, diffs and `check` output.
                if !secret.get_ref().contains("${") {
                    return Err(Issue::at(
                        secret,
                        "the secret must come from the environment: write `secret = \"${NAME}\"`",
                    ));
                }
                let text = self.non_empty(secret)?;
                Ok(KeySource::Secret(text.into_bytes().into_boxed_slice()))
            }
            (None, Some(pem), None) => Ok(KeySource::PublicKey(self.relative(pem)?)),
            (None, None, Some(jwks)) => Ok(KeySource::Jwks(self.relative(jwks)?)),
            (None, None, None) => Err(Issue::at(
                spanned,
                "an [[auth]] needs its keys: `secret` (HS*), `public_key` or `jwks_file`",
            )),
            _ => {
                let spans = [
                    a.secret.as_ref().map(Spanned::span),
                    a.public_key.as_ref().map(Spanned::span),
                    a.jwks_file.as_ref().map(Spanned::span),
                ];
                let second = spans
                    .into_iter()
                    .flatten()
                    .max_by_key(|s| s.start)
                    .unwrap_or_default();
                Err(Issue::at(
                    &Spanned::new(second, ()),
                    "`secret`, `public_key` and `jwks_file` are mutually exclusive: give one",
                ))
            }
        }
    }

    /// A file named relative to the config file.
    fn relative(&self, value: &EnvString) -> Check<PathBuf> {
        let name = self.non_empty(value)?;
        Ok(match self.path.parent() {
            Some(dir) if Path::new(&name).is_relative() => dir.join(name),
            _ => PathBuf::from(name),
        })
    }

    fn optional_text(&mut self, value: Option<&EnvString>) -> Option<Option<String>> {
        match value {
            None => Some(None),
            Some(v) => self.take(self.non_empty(v)).map(Some),
        }
    }
}

/// Where an unusable key is reported: the key source's line.
fn key_span(a: &file::Auth) -> Spanned<()> {
    let span = a
        .secret
        .as_ref()
        .or(a.public_key.as_ref())
        .or(a.jwks_file.as_ref())
        .map_or(a.algorithms.span(), Spanned::span);
    Spanned::new(span, ())
}

fn algorithms(list: &Spanned<Vec<Spanned<String>>>) -> Check<Vec<Algorithm>> {
    if list.get_ref().is_empty() {
        return Err(Issue::at(
            list,
            "must name at least one algorithm, e.g. [\"RS256\"]",
        ));
    }
    let mut out = Vec::with_capacity(list.get_ref().len());
    for item in list.get_ref() {
        let alg: Algorithm = item.get_ref().parse().map_err(|_| {
            Issue::at(
                item,
                format!(
                    "unknown JWT algorithm `{}`; expected one of HS256, HS384, HS512, RS256, \
                     RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA",
                    item.get_ref()
                ),
            )
        })?;
        if out.contains(&alg) {
            return Err(Issue::at(
                item,
                format!("`{}` is listed twice", item.get_ref()),
            ));
        }
        out.push(alg);
    }
    let hmac = out
        .iter()
        .filter(|a| a.family() == jsonwebtoken::AlgorithmFamily::Hmac)
        .count();
    if hmac != 0 && hmac != out.len() {
        // The classic confusion: a public key's bytes used as an HMAC secret.
        return Err(Issue::at(
            list,
            "HS* algorithms cannot share an [[auth]] with public-key algorithms; use two sections",
        ));
    }
    Ok(out)
}

fn leeway(value: Option<&Spanned<crate::config::duration::Any>>) -> Check<Duration> {
    let Some(value) = value else {
        return Ok(file::DEFAULT_AUTH_LEEWAY);
    };
    let d = value.get_ref().0;
    if d > MAX_LEEWAY || d.subsec_nanos() != 0 {
        return Err(Issue::at(value, "must be whole seconds, at most 5m"));
    }
    Ok(d)
}
