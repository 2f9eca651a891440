//! Admin inputs, validated before anything reaches the store: client keys (one client, never a
//! pattern), query parameters, `limit`, and size-limited JSON bodies.

use std::net::IpAddr;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::Request;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;

use super::reply::ApiError;
use crate::net;

/// Largest request body the admin API reads.
pub(crate) const MAX_BODY_BYTES: usize = 16 * 1024;
/// Longest client text looked at (an IPv6 prefix with brackets is well under this).
const MAX_CLIENT_LEN: usize = 64;

/// The client key the gateway uses for `text`: an IPv4 address, or an IPv6 address or prefix
/// keyed by its `ipv6_prefix` bits (`2001:db8::/64`). Exactly one client: patterns, ranges that
/// the gateway never keys by, and anything else are refused with a message saying what to give.
pub(crate) fn client_key(text: &str, ipv6_prefix: u8) -> Result<String, ApiError> {
    let text = text.trim();
    let expected = || {
        format!(
            "expected one client: an IP address such as 192.0.2.7 or 2001:db8::1, or an IPv6 \
             /{ipv6_prefix} prefix such as 2001:db8::/{ipv6_prefix} (IPv6 clients are keyed by \
             server.ipv6_prefix = {ipv6_prefix})"
        )
    };
    if text.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "client is empty; {}",
            expected()
        )));
    }
    let shown: String = text.chars().take(MAX_CLIENT_LEN).collect();
    if text.len() > MAX_CLIENT_LEN {
        return Err(ApiError::BadRequest(format!(
            "client `{shown}...` is too long; {}",
            expected()
        )));
    }
    if text.contains(['*', '?', '[', ']', ',', ' ']) && net::parse_client_ip(text).is_none() {
        return Err(ApiError::BadRequest(format!(
            "client `{shown}` is a pattern or a list; patterns are never accepted, name one \
             client; {}",
            expected()
        )));
    }
    let Some((addr, len)) = text.split_once('/') else {
        let ip = net::parse_client_ip(text).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "client `{shown}` is not an IP address; {}",
                expected()
            ))
        })?;
        return Ok(net::client_key(ip, ipv6_prefix));
    };
    let ip = net::parse_client_ip(addr).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "client `{shown}` is not an IP address or prefix; {}",
            expected()
        ))
    })?;
    let len: u8 = len.parse().map_err(|_| {
        ApiError::BadRequest(format!(
            "client `{shown}` has an invalid prefix length; {}",
            expected()
        ))
    })?;
    match ip {
        IpAddr::V4(_) if len == 32 => Ok(net::client_key(ip, ipv6_prefix)),
        IpAddr::V4(_) => Err(ApiError::BadRequest(format!(
            "client `{shown}`: IPv4 clients are keyed by their full address, so a /{len} range \
             matches no client here; give one address (ranges belong in access.deny)"
        ))),
        IpAddr::V6(_) if len == ipv6_prefix => Ok(net::client_key(ip, ipv6_prefix)),
        IpAddr::V6(_) => Err(ApiError::BadRequest(format!(
            "client `{shown}`: IPv6 clients are keyed by their /{ipv6_prefix} prefix \
             (server.ipv6_prefix), so a /{len} prefix matches no client here; give an address or \
             a /{ipv6_prefix} prefix"
        ))),
    }
}

/// Query parameters, each allowed name at most once; unknown names are refused so a typo is not
/// silently ignored.
pub(crate) fn query<'a>(
    req: &Request<Incoming>,
    allowed: &[&'a str],
) -> Result<Vec<(&'a str, String)>, ApiError> {
    let mut out: Vec<(&'a str, String)> = Vec::new();
    let Some(q) = req.uri().query() else {
        return Ok(out);
    };
    for (name, value) in form_urlencoded::parse(q.as_bytes()) {
        let Some(&known) = allowed.iter().find(|a| **a == name) else {
            return Err(ApiError::BadRequest(format!(
                "unknown query parameter `{}`; expected {}",
                name.chars().take(32).collect::<String>(),
                allowed.join(", ")
            )));
        };
        if out.iter().any(|(n, _)| *n == known) {
            return Err(ApiError::BadRequest(format!(
                "query parameter `{known}` given twice"
            )));
        }
        out.push((known, value.into_owned()));
    }
    Ok(out)
}

pub(crate) fn param<'q>(params: &'q [(&str, String)], name: &str) -> Option<&'q str> {
    params
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.as_str())
}

pub(crate) fn required<'q>(params: &'q [(&str, String)], name: &str) -> Result<&'q str, ApiError> {
    param(params, name)
        .ok_or_else(|| ApiError::BadRequest(format!("missing query parameter `{name}`")))
}

/// `limit` between 1 and `max`, `default` when absent.
pub(crate) fn limit(
    params: &[(&str, String)],
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    let Some(text) = param(params, "limit") else {
        return Ok(default);
    };
    match text.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::BadRequest(format!(
            "limit must be a whole number between 1 and {max}"
        ))),
    }
}

/// Read a JSON body of at most [`MAX_BODY_BYTES`]. The `application/json` content type is
/// required: besides saying what the body is, it makes a browser send a CORS preflight (which is
/// never granted) before any cross-site POST, so a web page cannot drive the admin API.
pub(crate) async fn json_body<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, ApiError> {
    let is_json = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    let bytes = body(req).await?;
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

/// The whole body, refused early by its declared length and in any case past the limit.
pub(crate) async fn body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(ApiError::PayloadTooLarge(MAX_BODY_BYTES));
    }
    match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::PayloadTooLarge(MAX_BODY_BYTES))
        }
        Err(e) => Err(ApiError::BadRequest(format!(
            "cannot read the request body: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> Result<String, String> {
        client_key(text, 64).map_err(|e| e.to_string())
    }

    #[test]
    fn clients_are_keyed_like_the_gateway() {
        assert_eq!(key("192.0.2.7").as_deref(), Ok("192.0.2.7"));
        assert_eq!(key(" 192.0.2.7 ").as_deref(), Ok("192.0.2.7"));
        assert_eq!(key("192.0.2.7/32").as_deref(), Ok("192.0.2.7"));
        assert_eq!(key("::ffff:192.0.2.7").as_deref(), Ok("192.0.2.7"));
        assert_eq!(key("2001:db8::1").as_deref(), Ok("2001:db8::/64"));
        assert_eq!(key("[2001:db8::1]").as_deref(), Ok("2001:db8::/64"));
        assert_eq!(key("2001:db8::/64").as_deref(), Ok("2001:db8::/64"));
        assert_eq!(
            key("2001:db8:0:0:ffff::/64").as_deref(),
            Ok("2001:db8::/64")
        );
        assert_eq!(
            client_key("2001:db8::1", 128).ok().as_deref(),
            Some("2001:db8::1")
        );
    }

    #[test]
    fn patterns_and_garbage_are_refused() {
        for (text, needle) in [
            ("*", "pattern"),
            ("", "empty"),
            ("   ", "empty"),
            ("10.*", "pattern"),
            ("1.2.3.4,5.6.7.8", "pattern"),
            ("garbage", "not an IP address"),
            ("010.0.0.1", "not an IP address"),
            ("1.2.3.4:80", "not an IP address"),
            ("1.2.3.0/24", "IPv4 clients are keyed by their full address"),
            ("2001:db8::/48", "keyed by their /64 prefix"),
            ("2001:db8::/x", "invalid prefix length"),
            (&"1".repeat(100), "too long"),
        ] {
            let err = key(text).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }
}
