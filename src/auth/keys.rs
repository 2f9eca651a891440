//! The keys of an `[[auth]]` section: an HMAC secret (from the environment), one PEM public key,
//! or a JWKS file. Each key carries the pinned algorithms of its own family only, so a key can
//! never verify a token of another family.

use std::fmt;
use std::path::PathBuf;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};

use super::jwt::Checks;

/// More keys than this in a JWKS file is refused: a token without `kid` is tried against every
/// key of its family.
pub(crate) const MAX_JWKS_KEYS: usize = 32;

/// HMAC secrets shorter than the SHA-256 output are refused (RFC 7518 3.2).
pub(crate) const MIN_SECRET_LEN: usize = 32;

#[derive(Clone)]
pub(crate) enum KeySource {
    Secret(Box<[u8]>),
    PublicKey(PathBuf),
    Jwks(PathBuf),
}

/// The secret is never printed.
impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl KeySource {
    pub(crate) fn describe(&self) -> String {
        match self {
            KeySource::Secret(_) => "secret (environment)".to_owned(),
            KeySource::PublicKey(path) => format!("public_key {}", path.display()),
            KeySource::Jwks(path) => format!("jwks_file {}", path.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum KeyError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{0}")]
    Invalid(String),
}

pub(crate) struct Key {
    pub(crate) kid: Option<String>,
    pub(crate) key: DecodingKey,
    /// With this key's algorithms: the pinned ones of its family.
    pub(crate) validation: Validation,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("algorithms", &self.validation.algorithms)
            .finish()
    }
}

#[derive(Debug)]
pub(crate) struct KeySet {
    keys: Vec<Key>,
}

impl KeySet {
    /// The keys of `source`, and the JWKS bytes they came from (empty for other sources).
    pub(crate) fn load(
        source: &KeySource,
        algorithms: &[Algorithm],
        checks: &Checks,
    ) -> Result<(KeySet, Vec<u8>), KeyError> {
        match source {
            KeySource::Secret(secret) => {
                if secret.len() < MIN_SECRET_LEN {
                    return Err(KeyError::Invalid(format!(
                        "the secret has {} bytes; HMAC secrets need at least {MIN_SECRET_LEN}",
                        secret.len()
                    )));
                }
                let key = DecodingKey::from_secret(secret)
                    .map_err(|e| KeyError::Invalid(e.to_string()))?;
                let set = KeySet::single(key, AlgorithmFamily::Hmac, algorithms, checks)?;
                Ok((set, Vec::new()))
            }
            KeySource::PublicKey(path) => {
                let pem = read(path)?;
                let family = one_family(algorithms)?;
                let key = match family {
                    AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(&pem),
                    AlgorithmFamily::Ec => DecodingKey::from_ec_pem(&pem),
                    AlgorithmFamily::Ed => DecodingKey::from_ed_pem(&pem),
                    AlgorithmFamily::Hmac => {
                        return Err(KeyError::Invalid(
                            "HS* algorithms take a `secret`, not a `public_key`".into(),
                        ))
                    }
                }
                .map_err(|e| {
                    KeyError::Invalid(format!(
                        "{} is not a {family:?} public key in PEM: {e}",
                        path.display()
                    ))
                })?;
                Ok((KeySet::single(key, family, algorithms, checks)?, Vec::new()))
            }
            KeySource::Jwks(path) => {
                let bytes = read(path)?;
                let set = KeySet::from_jwks(&bytes, algorithms, checks).map_err(|e| match e {
                    KeyError::Invalid(m) => KeyError::Invalid(format!("{}: {m}", path.display())),
                    other => other,
                })?;
                Ok((set, bytes))
            }
        }
    }

    fn single(
        key: DecodingKey,
        family: AlgorithmFamily,
        algorithms: &[Algorithm],
        checks: &Checks,
    ) -> Result<KeySet, KeyError> {
        let algs = of_family(algorithms, family);
        if algs.len() != algorithms.len() {
            return Err(KeyError::Invalid(format!(
                "`algorithms` must all be of the key's family ({family:?})"
            )));
        }
        Ok(KeySet {
            keys: vec![Key {
                kid: None,
                key,
                validation: checks.validation(algs),
            }],
        })
    }

    /// The keys of a JWKS document that verify at least one pinned algorithm. Keys of other
    /// families, or whose own `alg` is not pinned, are left out; none left is an error.
    pub(crate) fn from_jwks(
        bytes: &[u8],
        algorithms: &[Algorithm],
        checks: &Checks,
    ) -> Result<KeySet, KeyError> {
        let set: JwkSet = serde_json::from_slice(bytes)
            .map_err(|e| KeyError::Invalid(format!("not a JWKS document: {e}")))?;
        if set.keys.len() > MAX_JWKS_KEYS {
            return Err(KeyError::Invalid(format!(
                "{} keys; at most {MAX_JWKS_KEYS} are accepted",
                set.keys.len()
            )));
        }
        let mut keys = Vec::with_capacity(set.keys.len());
        for jwk in &set.keys {
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            let mut algs = of_family(algorithms, key.family());
            if let Some(own) = jwk
                .common
                .key_algorithm
                .and_then(|a| serde_json::to_value(a).ok())
                .and_then(|v| v.as_str().and_then(|s| s.parse::<Algorithm>().ok()))
            {
                algs.retain(|a| *a == own);
            }
            if algs.is_empty() {
                continue;
            }
            keys.push(Key {
                kid: jwk.common.key_id.clone(),
                key,
                validation: checks.validation(algs),
            });
        }
        if keys.is_empty() {
            return Err(KeyError::Invalid(
                "no key in the JWKS document verifies any of the section's `algorithms`".into(),
            ));
        }
        Ok(KeySet { keys })
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// The keys a token with this `kid` and `alg` may have been signed with: the keys with that
    /// id when it names one (none: an unknown key); without one, the keys of the algorithm that
    /// have no id either (configured PEM keys, a rotation's old and new), or the algorithm's
    /// only key. A token without `kid` is never tried against every key of a JWKS: each try is
    /// a signature check, and a junk token would cost one per key.
    pub(crate) fn candidates<'s>(
        &'s self,
        kid: Option<&'s str>,
        alg: Algorithm,
    ) -> impl Iterator<Item = &'s Key> + 's {
        let of_alg = move |k: &&'s Key| k.validation.algorithms.contains(&alg);
        let only_one = kid.is_none() && self.keys.iter().filter(of_alg).nth(1).is_none();
        self.keys.iter().filter(of_alg).filter(move |k| {
            match (kid, k.kid.as_deref()) {
                (Some(want), Some(have)) => want == have,
                // A token naming a key id only matches keys that have one.
                (Some(_), None) => self.keys.iter().all(|k| k.kid.is_none()),
                (None, None) => true,
                (None, Some(_)) => only_one,
            }
        })
    }
}

fn read(path: &PathBuf) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|e| KeyError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

fn of_family(algorithms: &[Algorithm], family: AlgorithmFamily) -> Vec<Algorithm> {
    algorithms
        .iter()
        .copied()
        .filter(|a| a.family() == family)
        .collect()
}

/// The one family of `algorithms` (a single key verifies one family).
fn one_family(algorithms: &[Algorithm]) -> Result<AlgorithmFamily, KeyError> {
    let first = algorithms
        .first()
        .map(|a| a.family())
        .ok_or_else(|| KeyError::Invalid("`algorithms` is empty".into()))?;
    if algorithms.iter().any(|a| a.family() != first) {
        return Err(KeyError::Invalid(
            "a `public_key` verifies one family of algorithms; list only RS*/PS*, ES* or EdDSA"
                .into(),
        ));
    }
    Ok(first)
}
