//! Verified identities: JWTs checked against an `[[auth]]` section's pinned algorithms and keys
//! (`jwt`, with the keys loaded and the JWKS file refreshed by `keys`, and tokens verified before
//! remembered by `cache`), the token found where the section says (`token`), and client
//! certificates described by `peer`. Nothing here knows
//! the config file or the request path: `config` builds [`Authenticator`]s, `proxy` asks them.

mod cache;
pub(crate) mod jwt;
pub(crate) mod keys;
pub(crate) mod peer;
mod token;

use std::sync::{Arc, OnceLock};

use http::HeaderMap;

pub(crate) use jwt::{Claims, Invalid};
pub(crate) use keys::{KeyError, KeySource};
pub(crate) use peer::PeerCert;
pub(crate) use token::TokenSource;

/// What a request whose token fails verification gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnInvalid {
    /// 401, before any store call.
    Reject,
    /// Keyed as if it had no token (by address).
    Anonymous,
}

impl OnInvalid {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            OnInvalid::Reject => "reject",
            OnInvalid::Anonymous => "anonymous",
        }
    }
}

/// One `[[auth]]` section, compiled: where the token is, how it is verified, and what a request
/// without a good one gets.
#[derive(Debug)]
pub struct Authenticator {
    pub name: Arc<str>,
    pub(crate) token: TokenSource,
    pub(crate) verifier: jwt::Verifier,
    pub(crate) on_invalid: OnInvalid,
    /// A request without a token is refused (401) rather than keyed by address.
    pub(crate) required: bool,
    /// `rategate_auth_total` handles of this section, resolved on first use (see
    /// [`Outcome::slot`]): a request never hashes label values.
    pub(crate) counters: [OnceLock<prometheus::IntCounter>; Outcome::SLOTS],
}

/// The result of authenticating one request.
#[derive(Debug)]
pub(crate) enum Outcome {
    Verified(Arc<Claims>),
    /// No usable identity; the request is keyed by address. `None`: it had no token.
    Anonymous(Option<Invalid>),
    /// 401. `None`: it had no token (and one is required).
    Refused(Option<Invalid>),
}

impl Outcome {
    pub(crate) const SLOTS: usize = 3 + 2 * Invalid::ALL.len();

    /// The metric labels (result, reason) of this outcome and its handle slot.
    pub(crate) fn labels(&self) -> (&'static str, &'static str, usize) {
        let (result, invalid, base) = match self {
            Outcome::Verified(_) => return ("verified", "none", 0),
            Outcome::Anonymous(invalid) => ("anonymous", invalid, 1),
            Outcome::Refused(invalid) => ("rejected", invalid, 2),
        };
        match invalid {
            None => (result, "missing", base),
            Some(i) => {
                let index = Invalid::ALL.iter().position(|x| x == i).unwrap_or(0);
                let offset = if base == 1 { 3 } else { 3 + Invalid::ALL.len() };
                (result, i.as_str(), offset + index)
            }
        }
    }
}

impl Authenticator {
    pub(crate) fn authenticate(&self, headers: &HeaderMap) -> Outcome {
        let token = match self.token.find(headers) {
            Ok(Some(token)) => token,
            Ok(None) if self.required => return Outcome::Refused(None),
            Ok(None) => return Outcome::Anonymous(None),
            Err(invalid) => return self.invalid(invalid),
        };
        match self.verifier.verify(token) {
            Ok(claims) => Outcome::Verified(claims),
            Err(invalid) => self.invalid(invalid),
        }
    }

    fn invalid(&self, invalid: Invalid) -> Outcome {
        match self.on_invalid {
            OnInvalid::Reject => Outcome::Refused(Some(invalid)),
            OnInvalid::Anonymous => Outcome::Anonymous(Some(invalid)),
        }
    }

    /// One line for `rategate check`.
    pub(crate) fn describe(&self) -> String {
        format!(
            "jwt {} from {}, token {}, on_invalid {}, required {}",
            self.verifier.describe_algorithms(),
            self.verifier.source().describe(),
            self.token,
            self.on_invalid.as_str(),
            self.required
        )
    }
}

/// The verified identities a request carries, for key components.
#[derive(Debug, Clone, Copy, Default)]
pub struct Identity<'a> {
    /// The claims of a verified token (`None`: the route has no `auth`, or the request is
    /// anonymous).
    pub(crate) claims: Option<&'a Claims>,
    /// The client certificate verified during the TLS handshake.
    pub(crate) peer: Option<&'a PeerCert>,
}
