//! Token revocation through the real binary: `/admin/revocations` on the memory store and on
//! Redis across three instances, refused inside the request's one store call (a route without
//! policies included), `sub` + `before` revoking older tokens only, removal, expiry, and the
//! admin API's validation.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::redis::{have_redis, RedisCluster, RedisServer};
use common::{client, config_with, poll, Gateway, TestConfig};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{json, Value};

const SECRET: &str = "an-hs256-secret-of-forty-bytes-exactly!!";
const ADMIN_TOKEN: &str = "t0ken-for-tests";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An HS256 token for `sub` valid for the next hour, with `extra` claims (a `null` removes one).
fn token(sub: &str, extra: Value) -> String {
    let mut c = json!({ "sub": sub, "aud": "api", "iat": now(), "exp": now() + 3600 });
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    let key = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &c, &key).unwrap()
}

/// `/api` limited per `sub` (100 an hour), `/open` with the same auth and no policies.
fn config() -> TestConfig {
    config_with(
        "http://127.0.0.1:9",
        r#"
[admin]
token = "t0ken-for-tests"

[[auth]]
name = "users"
algorithms = ["HS256"]
secret = "${JWT_SECRET}"
audience = "api"

[[policy]]
name = "per-sub"
algorithm = "fixed_window"
limit = 100
window = "1h"
key = ["jwt:sub"]

[[route]]
name = "api"
path_prefix = "/api"
respond = { status = 200, body = "ok" }
auth = "users"
policies = ["per-sub"]

[[route]]
name = "open"
path_prefix = "/open"
respond = { status = 200, body = "ok" }
auth = "users"
policies = []
"#,
    )
}

fn gateway(config: &TestConfig) -> Gateway {
    Gateway::builder(config).env("JWT_SECRET", SECRET).start()
}

/// `(status, body)` of a GET of `path` with `token`.
fn get(gw: &Gateway, path: &str, token: &str) -> (u16, Value) {
    let resp = client()
        .get(gw.url(path))
        .bearer_auth(token)
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json::<Value>().unwrap_or(Value::Null))
}

fn status(gw: &Gateway, path: &str, token: &str) -> u16 {
    get(gw, path, token).0
}

fn admin(
    gw: &Gateway,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let mut rb = client()
        .request(method, gw.admin_url(path))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        rb = rb.json(body);
    }
    let resp = rb.send().unwrap();
    let status = resp.status();
    let text = resp.text().unwrap();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("not JSON ({e}), status {status}: {text}"));
    (status, body)
}

fn revoke(gw: &Gateway, body: Value) -> (StatusCode, Value) {
    admin(gw, reqwest::Method::POST, "/admin/revocations", Some(&body))
}

fn list(gw: &Gateway) -> Value {
    let (status, body) = admin(gw, reqwest::Method::GET, "/admin/revocations", None);
    assert_eq!(status, StatusCode::OK);
    body
}

fn unrevoke(gw: &Gateway, query: &str) -> (StatusCode, Value) {
    let path = format!("/admin/revocations?{query}");
    admin(gw, reqwest::Method::DELETE, &path, None)
}

fn revoked_metric(gw: &Gateway) -> f64 {
    gw.metric(r#"rategate_auth_total{auth="users",reason="revoked",result="rejected"}"#)
        .unwrap_or(0.0)
}

#[test]
fn a_revoked_jti_is_refused_at_once_everywhere_and_delete_restores_it() {
    let gw = gateway(&config());
    let (t1, t2) = (
        token("alice", json!({"jti": "t-1"})),
        token("alice", json!({"jti": "t-2"})),
    );
    assert_eq!(status(&gw, "/api", &t1), 200);

    let (code, body) = revoke(&gw, json!({"jti": "t-1", "ttl": "1h"}));
    assert_eq!(code, StatusCode::CREATED, "{body}");
    assert_eq!(body, json!({"jti": "t-1", "ttl": 3600}));

    let resp = client()
        .get(gw.url("/api"))
        .bearer_auth(&t1)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(
        resp.headers()["www-authenticate"],
        r#"Bearer realm="users", error="invalid_token""#
    );
    let body: Value = resp.json().unwrap();
    assert_eq!(body["error"], "invalid_token");
    assert_eq!(body["detail"], "The token has been revoked.");
    // A route without policies checks revocations too; the same subject's other token passes.
    assert_eq!(status(&gw, "/open", &t1), 401);
    assert_eq!(status(&gw, "/api", &t2), 200);
    assert_eq!(status(&gw, "/open", &t2), 200);
    assert_eq!(revoked_metric(&gw), 2.0);

    let listed = list(&gw);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["jti"], "t-1");
    assert!(listed[0]["ttl"].as_u64().unwrap() > 3500);
    let (_, events) = admin(&gw, reqwest::Method::GET, "/admin/events", None);
    assert_eq!(events[0]["kind"], "revoked");
    assert_eq!(events[0]["client"], "jti:t-1");

    let (code, body) = unrevoke(&gw, "jti=t-1");
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"jti": "t-1", "revoked": false}));
    assert_eq!(status(&gw, "/api", &t1), 200);
    assert_eq!(status(&gw, "/open", &t1), 200);
    assert_eq!(list(&gw), json!([]));
    let (code, _) = unrevoke(&gw, "jti=t-1");
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (_, events) = admin(&gw, reqwest::Method::GET, "/admin/events", None);
    assert_eq!(events[0]["kind"], "unrevoked");
    // The revoked request was not charged: this is alice's 4th admitted request on /api.
    let resp = client()
        .get(gw.url("/api"))
        .bearer_auth(&t2)
        .send()
        .unwrap();
    assert_eq!(resp.headers()["x-ratelimit-remaining"], "96");
    assert_eq!(revoked_metric(&gw), 2.0);
}

#[test]
fn a_subject_revoked_before_a_time_loses_its_older_tokens_only() {
    let gw = gateway(&config());
    let t = now();
    let old = token("bob", json!({"iat": t - 600}));
    let fresh = token("bob", json!({"iat": t}));
    let undated = token("bob", json!({"iat": null}));
    let other = token("carol", json!({"iat": t - 600}));
    let (code, body) = revoke(&gw, json!({"sub": "bob", "before": t - 60}));
    assert_eq!(code, StatusCode::CREATED, "{body}");
    // No ttl: the documented default of 24 hours.
    assert_eq!(body, json!({"sub": "bob", "before": t - 60, "ttl": 86400}));

    for path in ["/api", "/open"] {
        assert_eq!(status(&gw, path, &old), 401, "{path}");
        assert_eq!(status(&gw, path, &undated), 401, "{path}");
        assert_eq!(status(&gw, path, &fresh), 200, "{path}");
        assert_eq!(status(&gw, path, &other), 200, "{path}");
    }
    let (code, _) = unrevoke(&gw, "sub=bob");
    assert_eq!(code, StatusCode::OK);
    assert_eq!(status(&gw, "/api", &old), 200);
}

#[test]
fn number_claims_are_revoked_by_their_number_or_its_spelling() {
    let gw = gateway(&config());
    let user42 = token("placeholder", json!({"sub": 42, "iat": now() - 600}));
    let token7 = token("ivan", json!({"jti": 7}));
    assert_eq!(status(&gw, "/api", &user42), 200);
    assert_eq!(status(&gw, "/api", &token7), 200);
    let (code, body) = revoke(&gw, json!({"sub": 42, "before": now() - 60}));
    assert_eq!(code, StatusCode::CREATED, "{body}");
    assert_eq!(body["sub"], "42");
    let (code, _) = revoke(&gw, json!({"jti": "7"}));
    assert_eq!(code, StatusCode::CREATED);
    assert_eq!(status(&gw, "/api", &user42), 401);
    assert_eq!(status(&gw, "/open", &token7), 401);
    let (code, _) = unrevoke(&gw, "sub=42");
    assert_eq!(code, StatusCode::OK);
    assert_eq!(status(&gw, "/api", &user42), 200);
}

#[test]
fn an_allow_listed_client_is_not_limited_but_its_revoked_token_is_refused() {
    let gw = gateway(&config().with("[access]\nallow = [\"127.0.0.1\"]\n"));
    let t = token("lena", json!({"jti": "al-1"}));
    let other = token("lena", json!({"jti": "al-2"}));
    let (code, _) = revoke(&gw, json!({"jti": "al-1"}));
    assert_eq!(code, StatusCode::CREATED);
    for path in ["/api", "/open"] {
        assert_eq!(status(&gw, path, &t), 401, "{path}");
        assert_eq!(status(&gw, path, &other), 200, "{path}");
    }
    // Still never limited: no rate-limit headers, nothing counted.
    let resp = client()
        .get(gw.url("/api"))
        .bearer_auth(&other)
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().get("x-ratelimit-limit").is_none());
    assert_eq!(revoked_metric(&gw), 2.0);
}

#[test]
fn a_revocation_ends_with_its_ttl() {
    let gw = gateway(&config());
    let t = token("dave", json!({"jti": "short"}));
    let (code, _) = revoke(&gw, json!({"jti": "short", "ttl": "1s"}));
    assert_eq!(code, StatusCode::CREATED);
    assert_eq!(status(&gw, "/api", &t), 401);
    poll("the revocation to expire", Duration::from_secs(10))
        .until(|| status(&gw, "/api", &t) == 200);
    assert_eq!(list(&gw), json!([]));
}

#[test]
fn admin_validation_errors_name_the_field() {
    let gw = gateway(&config());
    let long = "x".repeat(257);
    for (body, field) in [
        (json!({}), "jti, sub"),
        (json!({"jti": "a", "sub": "b", "before": 1}), "jti, sub"),
        (json!({"jti": ""}), "jti:"),
        (json!({"jti": long}), "jti:"),
        (json!({"jti": "a\nb"}), "jti:"),
        (json!({"jti": true}), "jti:"),
        (json!({"sub": ["b"], "before": 1}), "sub:"),
        (json!({"jti": "a", "before": 5}), "before:"),
        (json!({"sub": "b"}), "before:"),
        (json!({"sub": "b", "before": 0}), "before:"),
        (
            json!({"sub": "b", "before": now() + 400 * 86400}),
            "before:",
        ),
        (json!({"jti": "a", "ttl": "soon"}), "ttl:"),
        (json!({"jti": "a", "ttl": "0s"}), "ttl:"),
        (json!({"jti": "a", "ttl": "400d"}), "ttl:"),
        (json!({"jti": "a", "reason": "x"}), "unknown field"),
    ] {
        let (code, answer) = revoke(&gw, body.clone());
        assert_eq!(code, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["error"], "bad_request", "{body}");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(field), "{body}: {message}");
    }
    for query in ["", "jti=a&sub=b", "who=a", "jti="] {
        let (code, answer) = unrevoke(&gw, query);
        assert_eq!(code, StatusCode::BAD_REQUEST, "{query}: {answer}");
    }
    let (code, _) = admin(&gw, reqwest::Method::PUT, "/admin/revocations", None);
    assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
    let resp = client()
        .post(gw.admin_url("/admin/revocations"))
        .body(r#"{"jti":"a"}"#)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let resp = client()
        .get(gw.admin_url("/admin/revocations"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(list(&gw), json!([]));
}

#[test]
fn on_redis_every_instance_refuses_a_revoked_token_in_its_one_check_call() {
    if !have_redis() {
        eprintln!("SKIP: redis-server not installed");
        return;
    }
    let redis = RedisServer::start();
    let cfg = config()
        .redis_store(&redis.url())
        .set("store.on_error", "deny")
        .set("store.timeout", "5s");
    let gws = [gateway(&cfg), gateway(&cfg), gateway(&cfg)];
    let t1 = token("erin", json!({"jti": "r-1", "iat": now() - 600}));
    let t2 = token("erin", json!({"jti": "r-2"}));
    for gw in &gws {
        assert_eq!(status(gw, "/api", &t1), 200);
    }
    let (code, body) = revoke(&gws[0], json!({"jti": "r-1"}));
    assert_eq!(code, StatusCode::CREATED, "{body}");

    // Sequential requests: each is one EVALSHA of its own, revoked or not, with or without
    // policies on the route.
    let evalsha = redis.script_calls();
    for gw in &gws {
        assert_eq!(status(gw, "/api", &t1), 401);
        assert_eq!(status(gw, "/open", &t1), 401);
        assert_eq!(status(gw, "/api", &t2), 200);
    }
    assert_eq!(redis.script_calls() - evalsha, 9);
    // Limits still count exactly (erin's 7th admitted request), in the subject's slot, next to
    // its revocation entry.
    let resp = client()
        .get(gws[0].url("/api"))
        .bearer_auth(&t2)
        .send()
        .unwrap();
    assert_eq!(resp.headers()["x-ratelimit-remaining"], "93");
    assert!(!redis.cli(&["KEYS", "rategate:{u:erin}:v:*"]).is_empty());
    for gw in &gws {
        assert_eq!(revoked_metric(gw), 2.0);
    }
    // Every instance lists it, and its event.
    for gw in &gws {
        let listed = list(gw);
        assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
        assert_eq!(listed[0]["jti"], "r-1");
    }
    poll(
        "the revocation event on another instance",
        Duration::from_secs(10),
    )
    .until(|| {
        let (_, events) = admin(&gws[2], reqwest::Method::GET, "/admin/events", None);
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "revoked" && e["client"] == "jti:r-1")
    });

    // A subject revoked on one instance, removed on another.
    let (code, _) = revoke(
        &gws[1],
        json!({"sub": "erin", "before": now() - 60, "ttl": "5m"}),
    );
    assert_eq!(code, StatusCode::CREATED);
    let (code, _) = unrevoke(&gws[0], "jti=r-1");
    assert_eq!(code, StatusCode::OK);

    for gw in &gws {
        assert_eq!(status(gw, "/api", &t1), 401);
        assert_eq!(status(gw, "/api", &t2), 200);
    }
    assert_eq!(list(&gws[2])[0]["sub"], "erin");
    let (code, _) = unrevoke(&gws[2], "sub=erin");
    assert_eq!(code, StatusCode::OK);
    for gw in &gws {
        assert_eq!(status(gw, "/api", &t1), 200);
        assert_eq!(status(gw, "/open", &t1), 200);
    }
    assert_eq!(list(&gws[1]), json!([]));
}

#[test]
fn with_on_error_deny_a_token_on_a_route_without_policies_is_refused_while_the_store_fails() {
    // Nothing listens on this port: every store call fails.
    let url = format!("redis://127.0.0.1:{}/0", common::redis::free_port());
    let cfg = config()
        .redis_store(&url)
        .set("store.on_error", "deny")
        .set("store.timeout", "200ms")
        .set("auth.required", false);
    let gw = gateway(&cfg);
    let t = token("frank", json!({}));
    // Its revocation cannot be checked: refused like a limited route's request.
    assert_eq!(status(&gw, "/open", &t), 503);
    assert_eq!(status(&gw, "/api", &t), 503);
    // Without a token there is nothing to check: it passes, as before.
    let resp = client().get(gw.url("/open")).send().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}

#[test]
fn with_on_error_fallback_revoked_tokens_stay_refused_while_redis_is_down() {
    if !have_redis() {
        eprintln!("SKIP: redis-server not installed");
        return;
    }
    let mut redis = RedisServer::start();
    let cfg = config()
        .redis_store(&redis.url())
        .set("store.on_error", "fallback")
        .set("store.timeout", "300ms");
    let a = gateway(&cfg);
    let b = gateway(&cfg);
    let by_jti = token("gina", json!({"jti": "f-1"}));
    let restored = token("gina", json!({"jti": "f-2"}));
    let numeric = token("gina", json!({"jti": 4711}));
    let older = token("hank", json!({"iat": now() - 600}));
    let newer = token("hank", json!({"jti": "h-2"}));
    for body in [
        json!({"jti": "f-1"}),
        json!({"jti": "f-2"}),
        json!({"jti": 4711}),
        json!({"sub": "hank", "before": now() - 60}),
    ] {
        let (code, reply) = revoke(&a, body);
        assert_eq!(code, StatusCode::CREATED, "{reply}");
    }
    let (code, _) = unrevoke(&b, "jti=f-2");
    assert_eq!(code, StatusCode::OK);
    // The number claim is revoked by its number; the admin API lists it by its spelling.
    assert_eq!(status(&a, "/api", &numeric), 401);
    assert!(list(&b)
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["jti"] == "4711"));

    // `b` heard of every change over pub/sub; an instance started now loads them at start.
    let c = gateway(&cfg);
    for gw in [&a, &b, &c] {
        poll(
            "three revocations held for the fallback store",
            Duration::from_secs(10),
        )
        .until(|| gw.metric("rategate_store_fallback_revocations") == Some(3.0));
    }

    redis.kill();
    for gw in [&a, &b, &c] {
        // The fallback decides now (the breaker opens after the first failures).
        poll("the fallback store deciding", Duration::from_secs(10))
            .until(|| gw.metric("rategate_store_fallback_active") == Some(1.0));
        for path in ["/api", "/open"] {
            assert_eq!(status(gw, path, &by_jti), 401, "{path}");
            assert_eq!(status(gw, path, &numeric), 401, "{path}");
            assert_eq!(status(gw, path, &older), 401, "{path}");
            assert_eq!(status(gw, path, &restored), 200, "{path}");
            assert_eq!(status(gw, path, &newer), 200, "{path}");
        }
    }
}

#[test]
fn on_a_cluster_a_tokens_jti_adds_no_call_and_a_revoked_jti_is_refused_everywhere() {
    if !have_redis() {
        eprintln!("SKIP: redis-server not installed");
        return;
    }
    let cluster = RedisCluster::start();
    let cfg = config()
        .redis_store(&cluster.url())
        .set("store.on_error", "deny")
        .set("store.timeout", "5s");
    let gws = [gateway(&cfg), gateway(&cfg), gateway(&cfg)];
    let t1 = token("kate", json!({"jti": "c-1"}));
    let t2 = token("kate", json!({"jti": "c-2"}));
    for gw in &gws {
        // The first calls load the scripts on every master.
        poll("the cluster answering", Duration::from_secs(15))
            .until(|| status(gw, "/api", &t2) == 200 && status(gw, "/open", &t2) == 200);
    }
    // Two calls a request: the client's block entry in the client's slot, and `kate`'s slot
    // (her counter and her revocation entry; on `/open` her revocation entry alone). The
    // token's `jti` adds no call of its own in a third slot.
    let calls = cluster.script_calls();
    for gw in &gws {
        assert_eq!(status(gw, "/api", &t1), 200);
        assert_eq!(status(gw, "/open", &t1), 200);
    }
    assert_eq!(cluster.script_calls() - calls, 12);

    let (code, body) = revoke(&gws[0], json!({"jti": "c-1"}));
    assert_eq!(code, StatusCode::CREATED, "{body}");
    for gw in &gws {
        poll("the revoked jti refused", Duration::from_secs(10))
            .until(|| status(gw, "/api", &t1) == 401);
    }
    // Refused without a call; the other token's requests as before.
    let calls = cluster.script_calls();
    for gw in &gws {
        assert_eq!(status(gw, "/api", &t1), 401);
        assert_eq!(status(gw, "/open", &t1), 401);
        assert_eq!(status(gw, "/api", &t2), 200);
    }
    assert_eq!(cluster.script_calls() - calls, 6);
    // A subject's revocation is read in the call, in the subject's slot: at once everywhere.
    let (code, _) = revoke(&gws[1], json!({"sub": "kate", "before": now() + 60}));
    assert_eq!(code, StatusCode::CREATED);
    for gw in &gws {
        assert_eq!(status(gw, "/api", &t2), 401);
    }
    // Removing the `jti` revocation readmits its token on every instance.
    let (code, _) = unrevoke(&gws[2], "sub=kate");
    assert_eq!(code, StatusCode::OK);
    let (code, _) = unrevoke(&gws[2], "jti=c-1");
    assert_eq!(code, StatusCode::OK);
    for gw in &gws {
        poll("the restored jti admitted", Duration::from_secs(10))
            .until(|| status(gw, "/api", &t1) == 200);
    }
}

#[test]
fn with_on_error_fallback_an_instance_that_never_loaded_the_revocations_refuses_tokens() {
    // Nothing listens on this port: the instance starts, and stays, without Redis, so its
    // copy of the revocations was never loaded.
    let url = format!("redis://127.0.0.1:{}/0", common::redis::free_port());
    let cfg = config()
        .redis_store(&url)
        .set("store.on_error", "fallback")
        .set("store.timeout", "200ms")
        .set("auth.required", false);
    let gw = gateway(&cfg);
    let t = token("olga", json!({"jti": "never-seen"}));
    // A token whose revocation nothing can judge is refused like under `deny`...
    assert_eq!(status(&gw, "/api", &t), 503);
    assert_eq!(status(&gw, "/open", &t), 503);
    // ...while requests without one are limited by the fallback as before.
    for path in ["/api", "/open"] {
        let resp = client().get(gw.url(path)).send().unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{path}");
    }
    assert_eq!(gw.metric("rategate_store_fallback_revocations"), Some(0.0));
}
