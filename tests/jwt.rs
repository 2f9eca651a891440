//! Verified JWT identities through the real binary: tokens minted here with real keys (openssl
//! generates them; `jsonwebtoken` signs), each bad kind with its documented answer, limits per
//! `sub` and per claim (in process and across three instances on Redis), tiers from a claim,
//! JWKS rotation, and where the token is read from.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::redis::{have_redis, RedisServer};
use common::{client, config_with, poll, raw, raw_status, Gateway, TestConfig};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// A 40-byte HS256 secret (the gateway refuses secrets under 32 bytes).
const SECRET: &str = "an-hs256-secret-of-forty-bytes-exactly!!";

/// Key pairs generated once per test binary: `<name>.pem` (private, PKCS#8) and
/// `<name>.pub.pem`.
fn keys() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        for (name, args) in [
            (
                "rs",
                &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"][..],
            ),
            (
                "rs2",
                &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"][..],
            ),
            (
                "es",
                &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"][..],
            ),
            ("ed", &["-algorithm", "ED25519"][..]),
        ] {
            let private = dir.path().join(format!("{name}.pem"));
            let public = dir.path().join(format!("{name}.pub.pem"));
            openssl(&[&["genpkey"], args, &["-out", private.to_str().unwrap()]].concat());
            openssl(&[
                "pkey",
                "-in",
                private.to_str().unwrap(),
                "-pubout",
                "-out",
                public.to_str().unwrap(),
            ]);
        }
        dir
    })
    .path()
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

fn key_path(name: &str) -> PathBuf {
    keys().join(name)
}

fn encoding_key(alg: Algorithm, name: &str) -> EncodingKey {
    let pem = std::fs::read(key_path(&format!("{name}.pem"))).unwrap();
    match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem).unwrap(),
        other => panic!("no key for {other:?}"),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims valid for the next hour from the test issuer to the test audience, plus `extra`.
fn claims(sub: &str, extra: Value) -> Value {
    let mut c = json!({
        "sub": sub,
        "iss": "https://id.test",
        "aud": "api",
        "iat": now(),
        "exp": now() + 3600,
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn sign(alg: Algorithm, key_name: &str, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    let key = match alg {
        Algorithm::HS256 => EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        _ => encoding_key(alg, key_name),
    };
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

fn rs256(sub: &str) -> String {
    sign(Algorithm::RS256, "rs", None, &claims(sub, json!({})))
}

/// Base64url without padding (RFC 7515 2), for hand-built tokens.
fn b64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// `(status, WWW-Authenticate, content type, body)` of a GET with `headers`.
fn get(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> (u16, String, String, Value) {
    let mut req = client().get(gw.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().unwrap();
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let (challenge, content_type) = (header("www-authenticate"), header("content-type"));
    let body = resp.json::<Value>().unwrap_or(Value::Null);
    (status, challenge, content_type, body)
}

fn bearer(gw: &Gateway, path: &str, token: &str) -> u16 {
    get(gw, path, &[("authorization", &format!("Bearer {token}"))]).0
}

/// An `[[auth]]` named `name` with RS256 from the test's public key, the test issuer and
/// audience, and `rest` (extra keys as TOML).
fn rs_auth(name: &str, rest: &str) -> String {
    format!(
        r#"
[[auth]]
name = "{name}"
algorithms = ["RS256"]
public_key = "{}"
issuer = "https://id.test"
audience = "api"
{rest}
"#,
        key_path("rs.pub.pem").display()
    )
}

fn routes(list: &[(&str, &str, &str)]) -> String {
    list.iter()
        .map(|(name, auth, policies)| {
            format!(
                r#"
[[route]]
name = "{name}"
path_prefix = "/{name}"
respond = {{ status = 200, body = "ok" }}
auth = "{auth}"
policies = [{policies}]
"#
            )
        })
        .collect()
}

fn per_sub_policy(limit: u64) -> String {
    format!(
        r#"
[[policy]]
name = "per-sub"
algorithm = "fixed_window"
limit = {limit}
window = "1h"
key = ["jwt:sub"]
"#
    )
}

fn gateway(config: TestConfig) -> Gateway {
    Gateway::builder(&config).env("JWT_SECRET", SECRET).start()
}

#[test]
fn every_bad_token_gets_its_documented_answer_and_no_store_call() {
    // One request per address in the policy: a refused token must not spend it.
    let ip_once = r#"
[[policy]]
name = "once"
algorithm = "fixed_window"
limit = 1
window = "1h"
"#;
    let cfg = config_with("http://127.0.0.1:9", ip_once)
        .with(&rs_auth("users", ""))
        .with(&routes(&[("rs", "users", "\"once\"")]));
    let gw = gateway(cfg);

    // No token: 401 with the bare challenge (RFC 6750 3.1: no error code without a token).
    let (status, challenge, content_type, body) = get(&gw, "/rs", &[]);
    assert_eq!(status, 401);
    assert_eq!(challenge, r#"Bearer realm="users""#);
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(body["status"], 401);
    assert_eq!(body["error"], "missing_token");

    let public_pem = std::fs::read(key_path("rs.pub.pem")).unwrap();
    let valid = rs256("alice");
    let mut tampered: Vec<&str> = valid.split('.').collect();
    let forged_payload = b64(claims("mallory", json!({})).to_string().as_bytes());
    tampered[1] = &forged_payload;
    let alg_none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims("alice", json!({})).to_string().as_bytes())
    );
    let hs_with_public_key = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims("alice", json!({})),
        &EncodingKey::from_secret(&public_pem).unwrap(),
    )
    .unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            rs256_with(json!({"exp": now() - 120})),
            "The token has expired.",
        ),
        (
            "not_yet_valid",
            rs256_with(json!({"nbf": now() + 120})),
            "The token is not valid yet.",
        ),
        (
            "audience",
            rs256_with(json!({"aud": "other"})),
            "The token is not meant for this audience.",
        ),
        (
            "issuer",
            rs256_with(json!({"iss": "https://evil.test"})),
            "The token is not from an accepted issuer.",
        ),
        (
            "signature",
            tampered.join("."),
            "The token's signature is not valid.",
        ),
        ("malformed", alg_none, "The token is not a well-formed JWT."),
        (
            "algorithm",
            hs_with_public_key,
            "The token's algorithm is not accepted here.",
        ),
        (
            "claims",
            sign(
                Algorithm::RS256,
                "rs",
                None,
                &json!({"sub": "a", "iss": "https://id.test", "aud": "api"}),
            ),
            "The token lacks a required claim.",
        ),
        (
            "signature",
            sign(Algorithm::RS256, "rs2", None, &claims("alice", json!({}))),
            "The token's signature is not valid.",
        ),
    ];
    for (reason, token, detail) in &cases {
        let auth = format!("Bearer {token}");
        let (status, challenge, content_type, body) = get(&gw, "/rs", &[("authorization", &auth)]);
        assert_eq!(status, 401, "{reason}");
        assert_eq!(
            challenge, r#"Bearer realm="users", error="invalid_token""#,
            "{reason}"
        );
        assert_eq!(content_type, "application/problem+json", "{reason}");
        assert_eq!(body["error"], "invalid_token", "{reason}");
        assert_eq!(body["detail"], *detail, "{reason}");
    }
    // Within the leeway (30 s by default), an expired token still passes, and none of the
    // refusals above spent the address's one request.
    assert_eq!(
        bearer(&gw, "/rs", &rs256_with(json!({"exp": now() - 5}))),
        200
    );
    assert_eq!(bearer(&gw, "/rs", &valid), 429);

    let metric = |result: &str, reason: &str| {
        gw.metric(&format!(
            r#"rategate_auth_total{{auth="users",reason="{reason}",result="{result}"}}"#
        ))
        .unwrap_or(0.0)
    };
    assert_eq!(metric("rejected", "missing"), 1.0);
    assert_eq!(metric("rejected", "expired"), 1.0);
    assert_eq!(metric("rejected", "signature"), 2.0);
    assert_eq!(metric("rejected", "algorithm"), 1.0);
    assert_eq!(metric("verified", "none"), 2.0);
    let unauthorized = gw
        .metric(r#"rategate_requests_total{decision="unauthorized",route="rs"}"#)
        .unwrap();
    assert_eq!(unauthorized, 1.0 + cases.len() as f64);
}

fn rs256_with(extra: Value) -> String {
    sign(Algorithm::RS256, "rs", None, &claims("alice", extra))
}

#[test]
fn hs256_es256_and_eddsa_each_accept_their_own_tokens_only() {
    let auths = format!(
        r#"
[[auth]]
name = "hs"
algorithms = ["HS256"]
secret = "${{JWT_SECRET}}"
audience = "api"

[[auth]]
name = "es"
algorithms = ["ES256"]
public_key = "{}"

[[auth]]
name = "ed"
algorithms = ["EdDSA"]
public_key = "{}"
"#,
        key_path("es.pub.pem").display(),
        key_path("ed.pub.pem").display()
    );
    let cfg = config_with("http://127.0.0.1:9", &auths).with(&routes(&[
        ("hs", "hs", ""),
        ("es", "es", ""),
        ("ed", "ed", ""),
    ]));
    let gw = gateway(cfg);
    let c = claims("alice", json!({}));
    let tokens = [
        ("hs", sign(Algorithm::HS256, "", None, &c)),
        ("es", sign(Algorithm::ES256, "es", None, &c)),
        ("ed", sign(Algorithm::EdDSA, "ed", None, &c)),
    ];
    for (route, _) in &tokens {
        for (kind, token) in &tokens {
            let want = if route == kind { 200 } else { 401 };
            assert_eq!(
                bearer(&gw, &format!("/{route}"), token),
                want,
                "{kind} on /{route}"
            );
        }
    }
}

#[test]
fn limits_per_sub_are_exact_and_anonymous_requests_share_the_address() {
    let anonymous = r#"
on_invalid = "anonymous"
required = false
"#;
    let cfg = config_with("http://127.0.0.1:9", &per_sub_policy(3))
        .with(&rs_auth("strict", ""))
        .with(&rs_auth("lenient", anonymous))
        .with(&routes(&[
            ("strict", "strict", "\"per-sub\""),
            ("lenient", "lenient", "\"per-sub\""),
        ]));
    let gw = gateway(cfg);
    let (alice, bob) = (rs256("alice"), rs256("bob"));
    for _ in 0..3 {
        assert_eq!(bearer(&gw, "/strict", &alice), 200);
    }
    // The counter is alice's wherever she goes, not the address's: bob still has his.
    assert_eq!(bearer(&gw, "/strict", &alice), 429);
    assert_eq!(bearer(&gw, "/lenient", &alice), 429);
    assert_eq!(bearer(&gw, "/strict", &bob), 200);

    // Without a token, or with a bad one, a lenient route keys by address: one counter.
    assert_eq!(get(&gw, "/lenient", &[]).0, 200);
    assert_eq!(bearer(&gw, "/lenient", "not-a-jwt"), 200);
    assert_eq!(bearer(&gw, "/lenient", &rs256_with(json!({"exp": 1}))), 200);
    assert_eq!(get(&gw, "/lenient", &[]).0, 429);
    // ... which is not bob's.
    assert_eq!(bearer(&gw, "/lenient", &bob), 200);
    let anonymous_expired = gw
        .metric(r#"rategate_auth_total{auth="lenient",reason="expired",result="anonymous"}"#)
        .unwrap();
    assert_eq!(anonymous_expired, 1.0);
}

#[test]
fn claims_key_counters_and_a_plan_claim_picks_the_tier() {
    let policies = r#"
[[policy]]
name = "per-org"
algorithm = "fixed_window"
limit = 2
window = "1h"
key = ["jwt:claim:org"]
overrides_from = "jwt:claim:plan"
overrides = { gold = 4 }
"#;
    let cfg = config_with("http://127.0.0.1:9", policies)
        .with(&rs_auth("users", ""))
        .with(&routes(&[("api", "users", "\"per-org\"")]));
    let gw = gateway(cfg);
    let token = |sub: &str, extra: Value| sign(Algorithm::RS256, "rs", None, &claims(sub, extra));
    // Two members of org 42 (a number claim) share its counter; plan "free" has no tier.
    let a = token("a", json!({"org": 42, "plan": "free"}));
    let b = token("b", json!({"org": 42, "plan": "free"}));
    assert_eq!(bearer(&gw, "/api", &a), 200);
    assert_eq!(bearer(&gw, "/api", &b), 200);
    assert_eq!(bearer(&gw, "/api", &a), 429);
    // A claim is keyed by its text: the string "42" is the number 42's counter.
    let s = token("s", json!({"org": "42"}));
    assert_eq!(bearer(&gw, "/api", &s), 429);
    // A gold org gets 4.
    let gold = token("g", json!({"org": "acme", "plan": "gold"}));
    let statuses: Vec<u16> = (0..5).map(|_| bearer(&gw, "/api", &gold)).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 429]);
}

/// A gateway whose `/api` route needs an RS256 token verified by the keys of `jwks_path`.
fn jwks_gateway(jwks_path: &std::path::Path) -> Gateway {
    let auth = format!(
        r#"
[[auth]]
name = "users"
algorithms = ["RS256"]
jwks_file = "{}"
"#,
        jwks_path.display()
    );
    gateway(config_with("http://127.0.0.1:9", &auth).with(&routes(&[("api", "users", "")])))
}

/// Write a JWKS of RS256 keys `(key file name, kid)` to `path`: beside it, then renamed over, as
/// deployment tools do.
fn write_jwks(path: &std::path::Path, entries: &[(&str, &str)]) {
    let keys = entries
        .iter()
        .map(|(name, kid)| {
            let mut jwk =
                Jwk::from_encoding_key(&encoding_key(Algorithm::RS256, name), Algorithm::RS256)
                    .unwrap();
            jwk.common.key_id = Some((*kid).to_owned());
            jwk
        })
        .collect();
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(&JwkSet { keys }).unwrap()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn a_rotated_jwks_file_is_picked_up_without_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let jwks_path = dir.path().join("jwks.json");
    let write_jwks = |entries: &[(&str, &str)]| write_jwks(&jwks_path, entries);
    write_jwks(&[("rs", "k1")]);
    let gw = jwks_gateway(&jwks_path);
    let c = claims("alice", json!({}));
    let old = sign(Algorithm::RS256, "rs", Some("k1"), &c);
    let new = sign(Algorithm::RS256, "rs2", Some("k2"), &c);
    let unknown_kid = sign(Algorithm::RS256, "rs", Some("k9"), &c);
    assert_eq!(bearer(&gw, "/api", &old), 200);
    assert_eq!(bearer(&gw, "/api", &new), 401);
    assert_eq!(bearer(&gw, "/api", &unknown_kid), 401);

    write_jwks(&[("rs2", "k2")]);
    poll("the rotated key accepted", Duration::from_secs(10))
        .showing(|| gw.logs())
        .until(|| bearer(&gw, "/api", &new) == 200);
    assert_eq!(bearer(&gw, "/api", &old), 401);

    // A broken file keeps the keys in use.
    std::fs::write(&jwks_path, b"{ not json").unwrap();
    gw.wait_log(
        "JWKS file changed but cannot be used",
        1,
        Duration::from_secs(10),
    );
    assert_eq!(bearer(&gw, "/api", &new), 200);
}

#[test]
fn a_token_without_kid_is_not_tried_against_every_jwks_key() {
    let dir = tempfile::tempdir().unwrap();
    let jwks_path = dir.path().join("jwks.json");
    let write_jwks = |entries: &[(&str, &str)]| write_jwks(&jwks_path, entries);
    // The key that signs comes second: trying every key would find it.
    write_jwks(&[("rs", "k1"), ("rs2", "k2")]);
    let gw = jwks_gateway(&jwks_path);
    let c = claims("alice", json!({}));
    let named = sign(Algorithm::RS256, "rs2", Some("k2"), &c);
    let anonymous = sign(Algorithm::RS256, "rs2", None, &c);
    assert_eq!(bearer(&gw, "/api", &named), 200);
    assert_eq!(bearer(&gw, "/api", &anonymous), 401);
    let unknown = gw
        .metric(r#"rategate_auth_total{auth="users",reason="unknown_key",result="rejected"}"#)
        .unwrap_or(0.0);
    assert_eq!(unknown, 1.0);

    // With one key of the algorithm, a token without `kid` is checked against it.
    write_jwks(&[("rs2", "k2")]);
    poll("the one-key JWKS in use", Duration::from_secs(10))
        .until(|| bearer(&gw, "/api", &anonymous) == 200);
}

#[test]
fn a_token_verified_before_still_expires() {
    let cfg = config_with("http://127.0.0.1:9", "")
        .with(&rs_auth("users", r#"leeway = "0s""#))
        .with(&routes(&[("api", "users", "")]));
    let gw = gateway(cfg);
    // Verified once, then answered from the verified-token cache until it expires.
    let token = rs256_with(json!({"exp": now() + 5}));
    assert_eq!(bearer(&gw, "/api", &token), 200);
    assert_eq!(bearer(&gw, "/api", &token), 200);
    poll(
        "the cached token refused once expired",
        Duration::from_secs(20),
    )
    .until(|| bearer(&gw, "/api", &token) == 401);
    let expired = gw
        .metric(r#"rategate_auth_total{auth="users",reason="expired",result="rejected"}"#)
        .unwrap();
    assert!(expired >= 1.0);
}

#[test]
fn tokens_from_a_named_header_or_cookie() {
    let cfg = config_with("http://127.0.0.1:9", "")
        .with(&rs_auth("by-header", r#"token = "header:X-Token""#))
        .with(&rs_auth("by-cookie", r#"token = "cookie:session""#))
        .with(&routes(&[("h", "by-header", ""), ("c", "by-cookie", "")]));
    let gw = gateway(cfg);
    let token = rs256("alice");
    assert_eq!(get(&gw, "/h", &[("x-token", &token)]).0, 200);
    // The bearer header means nothing to a header-token section.
    assert_eq!(bearer(&gw, "/h", &token), 401);
    let cookie = format!("theme=dark; session={token}");
    assert_eq!(get(&gw, "/c", &[("cookie", &cookie)]).0, 200);
    assert_eq!(get(&gw, "/c", &[("cookie", "session=junk")]).0, 401);
    assert_eq!(get(&gw, "/c", &[]).0, 401);
    // A second copy hidden in a cookie header that is not text (where an upstream may read it
    // first) or under a percent-encoded name: ambiguous, refused.
    let mut smuggled = b"GET /c HTTP/1.1\r\nHost: t\r\nCookie: session=forged; z=\xe9\r\n".to_vec();
    smuggled.extend_from_slice(
        format!("Cookie: session={token}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert_eq!(raw_status(&raw(gw.addr, &smuggled)), 401);
    let encoded = format!("sess%69on=forged; session={token}");
    assert_eq!(get(&gw, "/c", &[("cookie", &encoded)]).0, 401);
}

#[test]
fn check_prints_which_routes_are_authenticated_and_by_what() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rategate.toml");
    let cfg = config_with("http://127.0.0.1:9", &per_sub_policy(10))
        .with(&rs_auth("users", r#"on_invalid = "anonymous""#))
        .with(&routes(&[("api", "users", "\"per-sub\"")]));
    std::fs::write(&path, cfg.to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rategate"))
        .args(["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let line = text
        .lines()
        .find(|l| l.contains("api: path_prefix"))
        .unwrap();
    assert!(
        line.contains(&format!(
            "auth users (jwt RS256 from public_key {}, token bearer, on_invalid anonymous, \
             required true)",
            key_path("rs.pub.pem").display()
        )),
        "{line}"
    );
    assert!(text.contains("key [jwt:sub]"), "{text}");
}

#[test]
fn per_sub_limits_are_exact_across_three_instances_on_redis() {
    if !have_redis() {
        eprintln!("SKIP: redis-server not installed");
        return;
    }
    let redis = RedisServer::start();
    let cfg = config_with("http://127.0.0.1:9", &per_sub_policy(20))
        .redis_store(&redis.url())
        .set("store.on_error", "deny")
        .set("store.timeout", "5s")
        .with(&rs_auth("users", ""))
        .with(&routes(&[("api", "users", "\"per-sub\"")]));
    let gws = [gateway(cfg.clone()), gateway(cfg.clone()), gateway(cfg)];
    let (alice, bob) = (rs256("alice"), rs256("bob"));
    let mut counts = [[0u32; 2]; 2];
    std::thread::scope(|s| {
        let handles: Vec<_> = gws
            .iter()
            .flat_map(|gw| [(gw, &alice, 0), (gw, &bob, 1)])
            .map(|(gw, token, who)| {
                s.spawn(move || {
                    let mut c = [0u32; 2];
                    for _ in 0..15 {
                        match bearer(gw, "/api", token) {
                            200 => c[0] += 1,
                            429 => c[1] += 1,
                            other => panic!("status {other}"),
                        }
                    }
                    (who, c)
                })
            })
            .collect();
        for h in handles {
            let (who, c) = h.join().unwrap();
            counts[who][0] += c[0];
            counts[who][1] += c[1];
        }
    });
    // 45 requests each from one address: exactly 20 admitted per subject.
    assert_eq!(counts, [[20, 25], [20, 25]]);
}
