//! JWT verification with `jsonwebtoken` (RustCrypto backend): the header's `alg` must be one of
//! the section's pinned algorithms and match the family of the key it is checked with, so
//! `alg: none` (not an algorithm the crate knows) and an HS256 token "signed" with an RSA public
//! key (no HMAC key exists unless the section is an HS* one) are refused. Every field of the
//! crate's `Validation` is set here, none left to its lenient defaults.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;

use arc_swap::ArcSwap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::cache::{TokenKey, Verified};
use super::keys::{KeySet, KeySource};

/// Why a token was not accepted (the `reason` label of the auth metric, and the problem's
/// detail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Invalid {
    /// Not a JWT: bad shape, base64 or JSON, or too long.
    Malformed,
    /// The token was sent more than once (two headers, two cookies).
    Ambiguous,
    /// `alg` is not one of the section's algorithms.
    Algorithm,
    /// No key of the section has the token's `kid` (or fits its `alg`).
    UnknownKey,
    Signature,
    Expired,
    NotYetValid,
    Audience,
    Issuer,
    /// `exp` (or `iss`/`aud` when configured) is absent, or a time claim is not a number.
    Claims,
    /// Verified, but revoked through the admin API (found by the store's check).
    Revoked,
}

impl Invalid {
    pub(crate) const ALL: [Invalid; 11] = [
        Invalid::Malformed,
        Invalid::Ambiguous,
        Invalid::Algorithm,
        Invalid::UnknownKey,
        Invalid::Signature,
        Invalid::Expired,
        Invalid::NotYetValid,
        Invalid::Audience,
        Invalid::Issuer,
        Invalid::Claims,
        Invalid::Revoked,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Invalid::Malformed => "malformed",
            Invalid::Ambiguous => "ambiguous",
            Invalid::Algorithm => "algorithm",
            Invalid::UnknownKey => "unknown_key",
            Invalid::Signature => "signature",
            Invalid::Expired => "expired",
            Invalid::NotYetValid => "not_yet_valid",
            Invalid::Audience => "audience",
            Invalid::Issuer => "issuer",
            Invalid::Claims => "claims",
            Invalid::Revoked => "revoked",
        }
    }

    /// The problem's detail.
    pub(crate) fn message(self) -> &'static str {
        match self {
            Invalid::Malformed => "The token is not a well-formed JWT.",
            Invalid::Ambiguous => "The token was sent more than once.",
            Invalid::Algorithm => "The token's algorithm is not accepted here.",
            Invalid::UnknownKey => "The token was not signed with a known key.",
            Invalid::Signature => "The token's signature is not valid.",
            Invalid::Expired => "The token has expired.",
            Invalid::NotYetValid => "The token is not valid yet.",
            Invalid::Audience => "The token is not meant for this audience.",
            Invalid::Issuer => "The token is not from an accepted issuer.",
            Invalid::Claims => "The token lacks a required claim.",
            Invalid::Revoked => "The token has been revoked.",
        }
    }

    fn of(kind: &ErrorKind) -> Invalid {
        match kind {
            ErrorKind::InvalidSignature => Invalid::Signature,
            ErrorKind::ExpiredSignature => Invalid::Expired,
            ErrorKind::ImmatureSignature => Invalid::NotYetValid,
            ErrorKind::InvalidAudience => Invalid::Audience,
            ErrorKind::InvalidIssuer => Invalid::Issuer,
            ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => Invalid::Algorithm,
            ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) => {
                Invalid::Claims
            }
            // Key errors are a key that does not fit the token's algorithm (an ES384 token
            // against a P-256 key): the token was not signed by it.
            ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidEddsaKey
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidKeyFormat => Invalid::UnknownKey,
            _ => Invalid::Malformed,
        }
    }
}

/// The claim checks of one `[[auth]]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Checks {
    pub(crate) issuer: Option<String>,
    pub(crate) audience: Option<String>,
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    pub(crate) leeway_s: u64,
}

impl Checks {
    /// The crate's validation for a key that verifies `algorithms` (all of one family).
    pub(crate) fn validation(&self, algorithms: Vec<Algorithm>) -> Validation {
        let mut required: HashSet<String> = HashSet::from(["exp".to_owned()]);
        if self.issuer.is_some() {
            required.insert("iss".to_owned());
        }
        if self.audience.is_some() {
            required.insert("aud".to_owned());
        }
        Validation {
            required_spec_claims: required,
            leeway: self.leeway_s,
            reject_tokens_expiring_in_less_than: 0,
            validate_exp: true,
            validate_nbf: true,
            // Without a configured audience a token's `aud` is not checked (documented).
            validate_aud: self.audience.is_some(),
            aud: self.audience.as_ref().map(|a| HashSet::from([a.clone()])),
            iss: self.issuer.as_ref().map(|i| HashSet::from([i.clone()])),
            sub: None,
            algorithms,
        }
    }
}

/// The verified claims of a token.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Claims(Map<String, Value>);

impl Claims {
    /// Verified claims. A number `jti` or `sub` is kept in its JSON spelling as a string, the
    /// way key components read it (`text`), so that revocations (by string) name it too.
    fn verified(mut map: Map<String, Value>) -> Self {
        for name in ["jti", "sub"] {
            if let Some(v @ Value::Number(_)) = map.get_mut(name) {
                *v = Value::String(v.to_string());
            }
        }
        Claims(map)
    }

    /// A claim usable as a key component: a string, or a number in its JSON spelling. Other
    /// types (and an absent claim) identify no one.
    pub(crate) fn text(&self, name: &str) -> Option<Cow<'_, str>> {
        match self.0.get(name)? {
            Value::String(s) if !s.is_empty() => Some(Cow::Borrowed(s)),
            Value::Number(n) => Some(Cow::Owned(n.to_string())),
            _ => None,
        }
    }

    /// A non-empty string claim (`jti`, `sub` for revocations).
    pub(crate) fn string(&self, name: &str) -> Option<&str> {
        self.0.get(name)?.as_str().filter(|s| !s.is_empty())
    }

    /// A whole number of seconds (`exp`, `nbf`, `iat`), if the claim is one.
    pub(crate) fn seconds(&self, name: &str) -> Option<u64> {
        self.0.get(name)?.as_u64()
    }

    #[cfg(test)]
    pub(crate) fn from_json(value: Value) -> Self {
        match value {
            Value::Object(map) => Claims::verified(map),
            _ => Claims(Map::new()),
        }
    }
}

/// The keys and checks of one `[[auth]]` section.
#[derive(Debug)]
pub(crate) struct Verifier {
    /// Pinned: a token with any other `alg` is refused before a key is looked at.
    algorithms: Vec<Algorithm>,
    checks: Checks,
    source: KeySource,
    keys: ArcSwap<KeySet>,
    /// Tokens verified before, until they expire.
    verified: Verified,
    /// The JWKS file's bytes the current keys were read from (or last failed to read), so the
    /// refresh only re-parses a changed file and warns once per bad version.
    jwks_seen: parking_lot::Mutex<Vec<u8>>,
}

impl Verifier {
    /// Load the keys now (config load and reload read the key files afresh).
    pub(crate) fn load(
        algorithms: Vec<Algorithm>,
        checks: Checks,
        source: KeySource,
    ) -> Result<Self, super::KeyError> {
        let (keys, bytes) = KeySet::load(&source, &algorithms, &checks)?;
        Ok(Verifier {
            algorithms,
            checks,
            source,
            keys: ArcSwap::from_pointee(keys),
            verified: Verified::default(),
            jwks_seen: parking_lot::Mutex::new(bytes),
        })
    }

    pub(crate) fn source(&self) -> &KeySource {
        &self.source
    }

    pub(crate) fn describe_algorithms(&self) -> String {
        let names: Vec<String> = self.algorithms.iter().map(|a| format!("{a:?}")).collect();
        names.join("/")
    }

    /// The claims of a valid token: from the cache of tokens verified before, or verified now
    /// (and remembered until it expires).
    pub(crate) fn verify(&self, token: &str) -> Result<Arc<Claims>, Invalid> {
        let now_s = jsonwebtoken::get_current_timestamp();
        let key = TokenKey::of(token);
        if let Some(claims) = self.verified.get(&key, now_s) {
            return Ok(claims);
        }
        let claims = Arc::new(self.verify_signed(token)?);
        // The window the crate's checks accept: exp and nbf, each with the leeway.
        let leeway = self.checks.leeway_s;
        if let Some(exp) = claims.seconds("exp") {
            let from = claims
                .seconds("nbf")
                .map_or(0, |nbf| nbf.saturating_sub(leeway));
            let until = exp.saturating_add(leeway).saturating_add(1);
            self.verified.insert(&key, claims.clone(), from, until);
        }
        Ok(claims)
    }

    fn verify_signed(&self, token: &str) -> Result<Claims, Invalid> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Invalid::Malformed)?;
        if !self.algorithms.contains(&header.alg) {
            return Err(Invalid::Algorithm);
        }
        let keys = self.keys.load();
        let mut last = Invalid::UnknownKey;
        for key in keys.candidates(header.kid.as_deref(), header.alg) {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &key.validation) {
                Ok(data) => return Ok(Claims::verified(data.claims)),
                Err(e) => {
                    last = Invalid::of(e.kind());
                    // A claim failure is the token's, whichever key verified the signature.
                    if !matches!(last, Invalid::Signature | Invalid::UnknownKey) {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }

    /// Re-read a JWKS file and swap its keys in when its contents changed (a bad file keeps
    /// the current keys, with a warning). No-op for other key sources.
    pub(crate) async fn refresh(&self, auth: &str) {
        let KeySource::Jwks(path) = &self.source else {
            return;
        };
        let bytes = match tokio::fs::read(path).await {
            Ok(bytes) => bytes,
            Err(err) => {
                tracing::debug!(auth, file = %path.display(), error = %err, "JWKS file not readable; keeping the current keys");
                return;
            }
        };
        if *self.jwks_seen.lock() == bytes {
            return;
        }
        match KeySet::from_jwks(&bytes, &self.algorithms, &self.checks) {
            Ok(keys) => {
                tracing::info!(auth, file = %path.display(), keys = keys.len(), "JWKS file reloaded");
                self.keys.store(Arc::new(keys));
                // A token of a key that left must not pass from the cache.
                self.verified.clear();
            }
            Err(err) => {
                tracing::warn!(auth, file = %path.display(), error = %err, "JWKS file changed but cannot be used; keeping the current keys");
            }
        }
        *self.jwks_seen.lock() = bytes;
    }
}
